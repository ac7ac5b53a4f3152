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
# - **x-space** (Park et al., `diffgeo.edit_x`): at one timestep t_edit move x_t along a
#   direction, then denoise to the end;
# - **h-space** with the asymmetric reverse process (Asyrp, Kwon et al., `diffgeo.asyrp`):
#   add the direction to h in the x0 prediction of every step from the start down to t_edit,
#   denoise plainly below, and optionally add noise again (quality boosting) below t_boost.
#
# First the plain calls, on one image; then the dashboard that wraps them.

# %% tags=["parameters"]
import os

FAST = os.environ.get("DIFFGEO_FAST") == "1"
N, STEPS, K = (2, 4, 2) if FAST else (4, 20, 6)
TOL = 1e-2 if FAST else 1e-3   # local-basis tolerance: looser is faster

# %%
import matplotlib.pyplot as plt
import torch

import diffgeo
from diffgeo.editing.directions import tangent
from diffgeo.viz.draw import draw_images

torch.set_num_threads(1)
model = diffgeo.load("shapes")

# %% [markdown]
# ## The calls
# Sample (the dashboard's N images), take the local basis of the first one's x_t at t_edit, and
# edit it along the first basis vector both ways.
# Strength is relative: 0.25 moves x_t by a quarter of its own norm (x-space), or h by a
# quarter of its norm (Asyrp), so the two sides are comparable.

# %%
S = 0.25
with torch.no_grad():
    traj = diffgeo.sample(model, N, steps=STEPS, seed=0, progress=False)
t_edit = int(traj.timesteps[len(traj.timesteps) // 2])
x_t = traj.xs[len(traj.timesteps) // 2][:1]
basis = diffgeo.local_basis(model, x_t, t_edit, K, seed=0, tol=TOL, progress=False)
with torch.no_grad():
    edited_x = diffgeo.edit_x(model, x_t, t_edit, basis.v[0], strength=S * float(x_t.norm()), steps=STEPS,
                              progress=False).result
    h_norm = float(model.h(x_t, t_edit).norm())
    edited_h = diffgeo.asyrp(model, traj.xs[0][:1], tangent(basis, 0, space="h"), strength=S * h_norm, t_edit=t_edit,
                             t_boost=0, steps=STEPS, seed=0, progress=False).result
fig, ax = plt.subplots(figsize=(4.2, 1.9))
draw_images(ax, torch.cat([traj.result[:1], edited_x, edited_h]), nrow=3,
            captions=["original", f"edit_x, v1 {S:+g}", f"asyrp, u1 {S:+g}"], title=f"t_edit = {t_edit}")
plt.show()

# %% [markdown]
# *What to notice:* both edits start from the same noise as the original, so whatever differs
# is the edit. Reference: at strength 0 both calls reproduce the original exactly
# (tests/test_editing.py checks it bit for bit).
#
# Real images are edited the same way after `diffgeo.invert` turns them into their x_T; the
# inversion's own error (regenerating without an edit) is the floor any edit sits on. A red line
# above the figure saying that a step "did not converge" is the inversion telling you where its
# fixed point stalled (usually the step next to the clean image); the regeneration error under the
# figure says what that cost (below 0.02, the target of `invert`, is invisible at this size):

# %%
from diffgeo.models.zoo import entry

real = entry(model).real_images(1, 10_000)                # one scene: its inversion costs ~150 U-Net calls
with torch.no_grad():                                     # (at most 20 per step; the dashboard allows 50)
    inv = diffgeo.invert(model, real, steps=STEPS, max_iter=20, progress=False)
    top = int(inv.timesteps.argmax())                     # the inversion's x_T, at the grid's largest t
    again = diffgeo.denoise(model, inv.xs[top], int(inv.timesteps[top]), steps=STEPS, progress=False).result
err = float((again - real).pow(2).mean().sqrt())
fig, ax = plt.subplots(figsize=(3.2, 1.9))
draw_images(ax, torch.cat([real, again]), nrow=2, captions=["real", f"regenerated, err {err:.3f}"],
            title="a real scene and its regeneration from its inversion")
plt.show()

# %% [markdown]
# ## The dashboard
# The **direction** menu: first the named directions shipped with the model (each the best
# method of the edit-quality table for its factor, applied as its row says; the line under the
# images names the method and its measured success and preservation), then a local basis vector
# (x-space: each image's own v_i at t_edit; h-space: u_i of the first image's basis), the mean
# difference of h between two groups of scenes that differ in one factor, or a principal
# component of h. The last two live in h only, so only the Asyrp side moves.
# It opens on `size:large` at its shipped strength (0.25) and t_edit: Asyrp's learned f_t, each
# image's dh computed from its own h (Asyrp adds it at every step down to t_edit, so the
# dashboard's 20 steps take half the per-step strength of the table's 10). On these four images
# the medium and the small shape grow to large, the two large ones stay large, and colour, shape
# and position are kept; from about 0.4 an already-large shape grows past the largest trained size.
# Under each image the attribute probe's reading; a red frame when the probe cannot re-render the
# image. **images** switches to real scenes (inverted first).
# t_boost offers only values below t_edit. Its state adopts the samples of the calls above (checked
# to be what it would sample) and keeps the local bases it computes on disk for the next session.

# %%
from diffgeo.widgets import TraversalState, notebook_cache, traversal_dashboard

state = TraversalState(model, n=N, steps=STEPS, k=K, tol=TOL, cache=notebook_cache("bases"))
state.adopt_samples(traj)
dash = traversal_dashboard(state=state, direction="named: size:large")
dash
