"""Geometry of x_t -> h: pullback maps, local bases, subspace distances, curvedness and h statistics."""

from diffgeo.geometry.basis import DEFAULT_TOL, LocalBasis, exact_basis, local_basis
from diffgeo.geometry.batched import local_bases
from diffgeo.geometry.curvedness import Curvedness, curvedness
from diffgeo.geometry.hstats import HStatistics, h_along, h_statistics, trajectory_cond
from diffgeo.geometry.pullback import HMap, forward_ad_ready, h_map, jvp, vjp
from diffgeo.geometry.subspaces import (
                                        distance_matrix,
                                        grassmann_distance,
                                        principal_angles,
                                        projection_distance,
                                        radial_power_spectrum,
                                        spectral_centroid,
                                        transport,
                                        transport_agreement,
)

__all__ = ['DEFAULT_TOL', 'Curvedness', 'HMap', 'HStatistics', 'LocalBasis', 'curvedness', 'distance_matrix', 'exact_basis', 'forward_ad_ready', 'grassmann_distance', 'h_along', 'h_map', 'h_statistics', 'jvp', 'local_bases', 'local_basis', 'principal_angles', 'projection_distance', 'radial_power_spectrum', 'spectral_centroid', 'trajectory_cond', 'transport', 'transport_agreement', 'vjp']
