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
# # Attribute traversals, live
#
# Two ways to edit an image with a diffusion model, side by side, on several images at once:
#
# - **x-space** (Park et al., `diffgeo.editing.xspace.edit_x`): at one timestep t_edit move x_t along a
#   direction by `strength`, then denoise to the end;
# - **h-space** with the asymmetric reverse process (Asyrp, Kwon et al., `diffgeo.editing.hspace.asyrp`):
#   add the direction to h in the x0 prediction of every step from the start down to t_edit,
#   denoise plainly below, and optionally add noise again (quality boosting, eta = 1) below t_boost.
#
# The **direction** menu (`diffgeo.editing.directions`): a local basis vector (x-space: each image's own
# v_i at t_edit; h-space: u_i of the first image's basis), the mean difference of h between two
# groups of scenes that differ in one factor (red -> blue, circle -> square), or a principal
# component of h over samples. The last two live in h only, so only the Asyrp side moves.
#
# Under each image, the model's reader's reading (for `shapes`: colour and shape, by the attribute
# probe); a red frame when the probe cannot re-render the image (not a clean scene). Switch **images** to real scenes: they
# are inverted first, then edited the same way. The preview (the x0 the model predicts right
# after the edit, one forward pass) shows first, the full result after.

# %% tags=["parameters"]
import os

FAST = os.environ.get("DIFFGEO_FAST") == "1"
N, STEPS, K = (2, 4, 2) if FAST else (4, 20, 6)
TOL = 1e-2 if FAST else 1e-3   # local-basis tolerance: looser is faster

# %%
import torch

import diffgeo
from diffgeo.widgets import traversal_dashboard

torch.set_num_threads(1)
model = diffgeo.load("shapes")
dash = traversal_dashboard(model, n=N, steps=STEPS, k=K, tol=TOL)
dash

# %% [markdown]
# A static copy of what the dashboard shows at strength 10 (for readers without a kernel):

# %%
from IPython.display import Image, display

dash.controls["strength"].value = 10.0
display(Image(dash.figures["x"].value), Image(dash.figures["h"].value))
dash.controls["strength"].value = 0.0
