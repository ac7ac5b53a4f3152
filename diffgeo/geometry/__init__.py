"""Geometry of x_t -> h: pullback maps, local bases, subspace distances, curvedness and h statistics."""

from diffgeo.geometry.pullback import HMap, LocalBasis, h_map, jvp, vjp, local_basis, exact_basis, forward_ad_ready, DEFAULT_TOL
from diffgeo.geometry.subspaces import principal_angles, grassmann_distance, projection_distance, distance_matrix, radial_power_spectrum, spectral_centroid, transport, transport_agreement, Curvedness, curvedness
from diffgeo.geometry.hstats import HStatistics, h_along, h_statistics, trajectory_cond

__all__ = ['HMap', 'LocalBasis', 'h_map', 'jvp', 'vjp', 'local_basis', 'exact_basis', 'forward_ad_ready', 'DEFAULT_TOL', 'principal_angles', 'grassmann_distance', 'projection_distance', 'distance_matrix', 'radial_power_spectrum', 'spectral_centroid', 'transport', 'transport_agreement', 'Curvedness', 'curvedness', 'HStatistics', 'h_along', 'h_statistics', 'trajectory_cond']
