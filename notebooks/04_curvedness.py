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
# # How curved is the map from x_t to h?
#
# Park et al. (arXiv 2302.12469) ask whether x_t -> h is close to linear between two samples.
# `diffgeo.curvedness` measures a straight segment x_a -> x_b at one timestep three ways:
# (a) how much the tangent space (the local basis) rotates along it, per unit length;
# (b) how far the segment leaves the tangent spaces at its ends; (c) how much longer the image
# of the segment in h is than the straight chord between its ends.
#
# The dashboard compares the rotation with a **flat floor**: what a flat map would read with the
# same k and tolerance (two bases of one point from different random starts). Pick two samples
# and a timestep.

# %% tags=["parameters"]
import os

FAST = os.environ.get("DIFFGEO_FAST") == "1"
N, STEPS, K, POINTS = (2, 3, 2, 3) if FAST else (6, 10, 6, 7)
TOL = 1e-2 if FAST else 1e-4   # local-basis tolerance: looser is faster

# %%
from IPython.display import Image, display

import diffgeo
from diffgeo.widgets import curvedness_dashboard

model = diffgeo.load("shapes")
dash = curvedness_dashboard(model, n=N, steps=STEPS, k=K, n_points=POINTS, tol=TOL)
dash

# %%
for name in ("segment", "profile"):
    display(Image(dash.figures[name].value))
c = dash.view.curvedness
print(f"rotation {c.rotation:.3g} rad per unit length (flat floor {dash.view.floor_rotation:.3g}); "
      f"off-tangent {c.off_tangent:.3f}; excess length {c.excess_length:.3f}")
