"""Geometry of x_t -> h: pullback maps, local bases, subspace distances, curvedness and h statistics."""

from diffgeo.geometry.basis import DEFAULT_TOL, LocalBasis, exact_basis, local_basis
from diffgeo.geometry.curvedness import Curvedness, curvedness
from diffgeo.geometry.hstats import HStatistics, h_along, h_statistics, trajectory_cond
from diffgeo.geometry.pullback import HMap, forward_ad_ready, h_map, jvp, vjp
from diffgeo.geometry.subspaces import (distance_matrix, grassmann_distance, principal_angles, projection_distance,
                                        radial_power_spectrum, spectral_centroid, transport, transport_agreement)

__all__ = ['HMap', 'LocalBasis', 'h_map', 'jvp', 'vjp', 'local_basis', 'exact_basis', 'forward_ad_ready', 'DEFAULT_TOL', 'principal_angles', 'grassmann_distance', 'projection_distance', 'distance_matrix', 'radial_power_spectrum', 'spectral_centroid', 'transport', 'transport_agreement', 'Curvedness', 'curvedness', 'HStatistics', 'h_along', 'h_statistics', 'trajectory_cond']
