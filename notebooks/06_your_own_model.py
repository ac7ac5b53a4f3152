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
# # Your own model
#
# Everything above works on any diffusers U-Net that `diffgeo.load` takes: a hub id (e.g.
# `google/ddpm-cifar10-32`) or a local folder in `save_pretrained` layout. Set `MODEL` below (or
# the environment variable `DIFFGEO_MODEL`); with no model given this runs on the embedded
# `digits` model. Large models want a GPU: a local basis needs k forward and backward products
# per iteration; on a CPU keep k small.
#
# Downloading a hub model needs the network (and `HF_HUB_OFFLINE` unset); the embedded models
# never download anything.

# %% tags=["parameters"]
import os

FAST = os.environ.get("DIFFGEO_FAST") == "1"
MODEL = os.environ.get("DIFFGEO_MODEL") or None   # hub id or folder; None: the embedded `digits`
N, STEPS, K = (2, 3, 2) if FAST else (4, 20, 4)
TOL = 1e-2 if FAST else 1e-3   # local-basis tolerance: looser is faster

# %%
import matplotlib.pyplot as plt
import torch
from IPython.display import Image, display

import diffgeo
from diffgeo.viz.draw import draw_images

model = diffgeo.load(MODEL or "digits")
print(model.name, "x:", model.x_shape, "h:", model.h_shape, "device:", model.device,
      "text:", model.is_conditional)

# %% [markdown]
# ## Samples

# %%
prompt = "a handwritten 3" if model.is_conditional else None
with torch.no_grad():
    traj = diffgeo.sample(model, N, steps=STEPS, seed=0, prompt=prompt, progress=False)
fig, ax = plt.subplots(figsize=(2 * N, 2))
draw_images(ax, model.decode(traj.result) if model.is_latent else traj.result, nrow=N,
            title=f"{model.name}: {STEPS} DDIM steps" + (f', "{prompt}"' if prompt else ""))
plt.show()

# %% [markdown]
# ## Tangent spaces over time and a traversal on this model
# The same dashboards as notebooks 02 and 05.

# %%
from diffgeo.widgets import tangent_dashboard, traversal_dashboard

tangent = tangent_dashboard(model, n=N, steps=STEPS, k=K, prompt=prompt, compare=not FAST, tol=TOL)  # tick "distances" to compare
tangent

# %%
traversal = traversal_dashboard(model, n=N, steps=STEPS, k=K, prompt=prompt, tol=TOL)
traversal

# %%
display(Image(tangent.figures["basis"].value), Image(traversal.figures["x"].value))
