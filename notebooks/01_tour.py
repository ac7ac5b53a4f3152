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
# # A first look inside a diffusion model
#
# This notebook loads the embedded `shapes` model (a small U-Net trained on procedural scenes
# whose factors we know exactly), draws samples with DDIM, checks them with the attribute probe,
# and looks at **h-space**, the output of the U-Net's middle block, along the sampling path.
#
# Set `DIFFGEO_FAST=1` to run a quick version (the test suite does).

# %%
import os

import matplotlib.pyplot as plt
import torch

import diffgeo
from diffgeo.hspace import h_statistics
from diffgeo.plotting import image_grid
from diffgeo.probe import validity

FAST = os.environ.get("DIFFGEO_FAST") == "1"
N, STEPS = (8, 10) if FAST else (32, 50)

model = diffgeo.load("shapes")
model

# %% [markdown]
# x_t is an image-shaped tensor; h is much smaller, and spatial.

# %%
print("x_t:", model.x_shape, " h:", model.h_shape)
print(model.provenance["training_command"], "-", model.provenance["steps"], "steps")

# %% [markdown]
# ## Samples
# `diffgeo.sample` returns the whole trajectory; `.result` is the clean end. Samples the probe
# cannot re-render (invalid) get a red frame.

# %%
with torch.no_grad():
    traj = diffgeo.sample(model, N, steps=STEPS, seed=0)
check = validity(traj.result)
plt.figure(figsize=(8, 8 * ((N + 7) // 8) / 8))
plt.imshow(image_grid(traj.result, nrow=8, marks=(~check.valid).tolist()))
plt.axis("off")
plt.title(f"valid: {check.rate:.0%}")
plt.show()

# %% [markdown]
# ## From noise to image
# The predicted x0 at a few steps along the way: coarse layout first, details last.

# %%
picks = torch.linspace(0, len(traj.x0_preds) - 1, 6).long()
plt.figure(figsize=(10, 2))
plt.imshow(image_grid(traj.x0_preds[picks, 0], nrow=6))
plt.axis("off")
plt.title("x0 predicted at t = " + ", ".join(str(int(traj.timesteps[i])) for i in picks))
plt.show()

# %% [markdown]
# ## h along the path
# How large h is, how similar it is across samples, and how fast it changes, over timesteps.

# %%
with torch.no_grad():
    stats = h_statistics(model, traj)
fig, axes = plt.subplots(1, 2, figsize=(10, 3))
axes[0].plot(stats.timesteps, stats.norm)
axes[0].set(title="mean ||h||", xlabel="t")
axes[1].plot(stats.timesteps, stats.cross_sample_cosine)
axes[1].set(title="cosine of h between samples", xlabel="t")
for ax in axes:
    ax.invert_xaxis()
plt.show()
