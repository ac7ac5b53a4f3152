# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Tangent spaces over time
#
# At every timestep t of a sampling path, the Jacobian of x_t -> h has top right singular
# vectors: the *local basis*, the directions of x_t that move h most. Park et al. (NeurIPS 2023)
# observed that these directions are coarse (low frequency) early in sampling and fine late,
# and that bases of different samples become alike at large t. The dashboard below lets you
# check that on the embedded `shapes` model:
#
# - **timestep t** and **sample**: the basis vectors as images and their radial power spectra;
# - the Grassmann distance (root sum of squared principal angles) from this basis to the same
#   sample's basis at every other timestep, and to the other samples' bases at the same t.
#
# Each basis is computed once and cached; the first view computes all those it needs (a progress
# bar shows it), later moves are quick.

# %% tags=["parameters"]
import os

FAST = os.environ.get("DIFFGEO_FAST") == "1"
N, STEPS, K = (2, 3, 2) if FAST else (4, 10, 6)
TOL = 1e-2 if FAST else 1e-3   # local-basis tolerance: looser is faster

# %% [markdown]
# ## The calls
# `diffgeo.local_basis` of one sample at two timesteps, and `diffgeo.grassmann_distance`
# between them, against random subspaces of the same size (nothing in common).

# %%
import math

import torch

import diffgeo
from diffgeo.widgets import TangentState, notebook_cache, random_subspace_distance, tangent_dashboard

torch.set_num_threads(1)
model = diffgeo.load("shapes")
with torch.no_grad():
    traj = diffgeo.sample(model, N, steps=STEPS, seed=0, progress=False)   # the dashboard's N samples
t_early, t_late = int(traj.timesteps[0]), int(traj.timesteps[-2])
b_early = diffgeo.local_basis(model, traj.xs[0][:1], t_early, K, seed=0, tol=TOL, progress=False)
b_late = diffgeo.local_basis(model, traj.xs[-2][:1], t_late, K, seed=0, tol=TOL, progress=False)
print(f"distance between the bases at t={t_early} and t={t_late}: {diffgeo.grassmann_distance(b_early, b_late):.2f} rad; "
      f"random {K}-dim subspaces of R^{math.prod(model.x_shape)}: "
      f"{random_subspace_distance(math.prod(model.x_shape), K):.2f}; ceiling {math.sqrt(K) * math.pi / 2:.2f}")

# %% [markdown]
# ## The dashboard
# Its state adopts the samples and the two bases above (each checked to be what it would
# compute), so they are not computed again; the bases it computes itself are kept on disk
# (`~/.cache/diffgeo/notebooks`, or `$DIFFGEO_CACHE`) for the next session.

# %%
state = TangentState(model, n=N, steps=STEPS, k=K, tol=TOL, cache=notebook_cache("bases"))  # kept on disk
state.adopt_trajectory(traj)
state.adopt_basis(b_early, t=t_early, sample=0)
state.adopt_basis(b_late, t=t_late, sample=0)
dash = tangent_dashboard(state=state, compare=FAST)  # tick "distances" to compare
dash

# %% [markdown]
# ## Coarse to fine, as numbers
# The spectral centroid (power-weighted mean spatial frequency) of the top basis vector of
# sample 0 at four timesteps: the two of the calls above, the dashboard's first one and one more
# (all cached in the dashboard's state).

# %%
import matplotlib.pyplot as plt

from diffgeo.viz.draw import draw_curves

grid = state.timesteps
ts = [grid[i] for i in sorted({0, len(grid) // 4, len(grid) // 2, len(grid) - 1})]
centroid = [float(diffgeo.spectral_centroid(state.basis(t, 0))[0]) for t in ts]
fig, ax = plt.subplots(figsize=(5, 3))
draw_curves(ax, ts, {"v1 of sample 0": centroid}, xlabel="t", ylabel="spectral centroid (cycles/pixel)",
            reverse_x=True, title="coarse (early) to fine (late)?")
plt.show()
