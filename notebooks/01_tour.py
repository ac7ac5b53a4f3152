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
# looks at **h-space** (the output of the U-Net's middle block) along the sampling path, computes
# a **local basis** (the directions of x_t that move h most) and edits a sample along it.
#
# The next notebooks take each idea further, with live widgets:
# 02 tangent spaces over time, 03 text conditions, 04 curvedness, 05 attribute traversals,
# 06 the same on your own model.

# %% tags=["parameters"]
# Parameters: DIFFGEO_FAST=1 gives the quick version the test suite runs.
import os

FAST = os.environ.get("DIFFGEO_FAST") == "1"
N, STEPS, K = (4, 6, 2) if FAST else (16, 10, 6)   # 10 DDIM steps: 61/64 valid samples (62/64 with 20)
TOL = 1e-2 if FAST else 1e-3   # local-basis tolerance: looser is faster

# %%
import matplotlib.pyplot as plt
import torch

import diffgeo
from diffgeo.geometry.hstats import h_statistics
from diffgeo.readers.probe import validity
from diffgeo.viz.draw import draw_images
from diffgeo.viz.figures import h_statistics_figure

torch.set_num_threads(1)  # one thread: fast and robust next to other work (benchmarks/bench_widgets.py)
model = diffgeo.load("shapes")
print("x_t:", model.x_shape, " h:", model.h_shape)
print(model.provenance["training_command"], "-", model.provenance["steps"], "steps")

# %% [markdown]
# ## Samples
# `diffgeo.sample` returns the whole trajectory; `.result` is the clean end. Samples the probe
# cannot re-render (invalid) get a red frame.

# %%
with torch.no_grad():
    traj = diffgeo.sample(model, N, steps=STEPS, seed=0, progress=False)
check = validity(traj.result)
fig, ax = plt.subplots(figsize=(8, 8 * ((N + 7) // 8) / 8))
draw_images(ax, traj.result, nrow=8, marks=(~check.valid).tolist(), title=f"valid: {check.rate:.0%}")
plt.show()

# %% [markdown]
# ## From noise to image
# The predicted x0 at a few steps along the way: coarse layout first, details last.

# %%
picks = torch.linspace(0, len(traj.x0_preds) - 1, 6).long()
fig, ax = plt.subplots(figsize=(10, 2))
draw_images(ax, traj.x0_preds[picks, 0], nrow=6,
            captions=[f"t={int(traj.timesteps[i])}" for i in picks], title="predicted x0 along the path")
plt.show()

# %% [markdown]
# ## Where h sits
# h is the output of the U-Net's middle block: the most compressed representation of x_t, drawn
# here from the model's own configuration.

# %%
from diffgeo.viz.draw import draw_h_pca, draw_unet

fig, ax = plt.subplots(figsize=(7, 3.2))
draw_unet(ax, dict(model.unet.config), model.h_shape)
plt.show()

# %% [markdown]
# ## h itself
# h of every sample at one timestep, projected on its two principal components, each point in
# the colour the attribute probe reads in the sample's final image and its marker by shape.
# *What to notice:* whether samples of one colour cluster already at this t.
# *Reference:* points of one colour spread over the whole plot would mean h does not know the
# colour yet.

# %%
from diffgeo.data.shapes import COLOURS
from diffgeo.readers import get_reader

mid = len(traj.timesteps) // 2
t_mid = int(traj.timesteps[mid])
with torch.no_grad():
    h = model.h(traj.xs[mid], t_mid)
read = get_reader("shapes").read(traj.result)
fig, ax = plt.subplots(figsize=(4.5, 4))
draw_h_pca(ax, h, [COLOURS[int(c)] for c in read["colour"]], [("o", "s", "^")[int(s)] for s in read["shape"]],
           legend={c: c for c in COLOURS}, title=f"h at t={t_mid}, {N} samples (o circle, s square, ^ triangle)")
plt.show()

# %% [markdown]
# ## h along the path
# How large h is, how similar it is across samples, and how fast it changes, over timesteps.

# %%
with torch.no_grad():
    stats = h_statistics(model, traj)
h_statistics_figure(stats, "h along the DDIM path")

# %% [markdown]
# ## A local basis
# At one noisy state x_t the map x_t -> h has a Jacobian J; its top right singular vectors are
# the directions of x_t that change h most (Park et al., NeurIPS 2023). `diffgeo.local_basis`
# finds them without ever forming J.

# %%
t = t_mid
x_t = traj.xs[mid][:1]                                    # sample 0 at t
basis = diffgeo.local_basis(model, x_t, t, K, seed=0, tol=TOL, progress=False)
v = basis.v / basis.v.flatten(1).abs().amax(1).view(-1, 1, 1, 1)
fig, ax = plt.subplots(figsize=(2 * K, 2))
draw_images(ax, v, nrow=K, captions=[f"v{j + 1} s={float(s):.3g}" for j, s in enumerate(basis.s)],
            title=f"local basis at t={t} (grey = 0)")
plt.show()

# %% [markdown]
# ## Editing along it
# `diffgeo.edit_x` moves x_t along v1 and denoises to the end; strength 0 is the original.
# The strengths are fractions of ||x_t|| (the traversal dashboard of notebook 05 uses the same
# units). *What to notice:* small steps change one attribute, large ones leave the data.

# %%
fractions = [-0.5, -0.25, 0.0, 0.25, 0.5]
with torch.no_grad():
    row = torch.cat([diffgeo.edit_x(model, x_t, t, basis.v[0], strength=f * float(x_t.norm()), steps=STEPS,
                                    progress=False).result for f in fractions])
fig, ax = plt.subplots(figsize=(8, 2))
draw_images(ax, row, nrow=len(fractions), captions=[f"{f:+g} ||x_t||" + (" (original)" if f == 0 else "")
                                                   for f in fractions], title=f"x_t + s v1 at t={t}, denoised")
plt.show()
