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

# %%
import torch
from IPython.display import Image, display

import diffgeo
from diffgeo.widgets import tangent_dashboard

model = diffgeo.load("shapes")
dash = tangent_dashboard(model, n=N, steps=STEPS, k=K, tol=TOL)
dash

# %% [markdown]
# A static copy of the figures (what the dashboard shows now), for readers without a kernel:

# %%
for name in ("basis", "spectra", "distances"):
    display(Image(dash.figures[name].value))

# %% [markdown]
# ## Coarse to fine, as numbers
# The spectral centroid (power-weighted mean spatial frequency) of the top basis vector of
# sample 0 at each timestep, from the same cached bases.

# %%
import matplotlib.pyplot as plt

from diffgeo.viz.draw import draw_curves

state = dash.state
ts = [t for t in state.timesteps]
centroid = [float(diffgeo.spectral_centroid(state.basis(t, 0))[0]) for t in ts]
fig, ax = plt.subplots(figsize=(5, 3))
draw_curves(ax, ts, {"v1 of sample 0": centroid}, xlabel="t", ylabel="spectral centroid (cycles/pixel)",
            reverse_x=True, title="coarse (early) to fine (late)?")
plt.show()
