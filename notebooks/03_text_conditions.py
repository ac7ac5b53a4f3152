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
# # What a prompt does to the tangent space
#
# `shapes-text` is the text-conditioned twin of `shapes`: the same scenes, captioned from their
# factors in many phrasings ("a red circle", "a small crimson disk on the left", "a square") and
# encoded by a frozen MiniLM sentence encoder. This notebook shows
#
# 1. the plain calls: one x_T sampled under two prompts, and the local basis of x_t under each;
# 2. the dashboard: type prompts (or pick a preset) and see the bases' distances against how
#    similar the prompts are, conditional vs unconditional over t, and what guidance changes;
# 3. how often the samples show what the prompt says (measured on demand below the dashboard,
#    cached on disk).
#
# Samples use the clipped eps in the DDIM step: with the raw eps, guidance of 2.5 or more turns
# the prompted colour into its complement ("a red circle" -> cyan); with the clipped eps the
# colour holds over the whole guidance slider (tests/test_controls.py checks it on fresh seeds).

# %% tags=["parameters"]
import os

FAST = os.environ.get("DIFFGEO_FAST") == "1"
STEPS, N_ALIGN, K = (4, 6, 2) if FAST else (10, 256, 6)   # 10 steps: as tests/test_controls.py checks guidance
TOL = 1e-2 if FAST else 1e-3   # local-basis tolerance: looser is faster

# %%
import matplotlib.pyplot as plt
import torch

import diffgeo
from diffgeo.models.conditioning import default_guidance
from diffgeo.viz.draw import draw_images
from diffgeo.widgets import (TextState, alignment_panel, notebook_cache, random_subspace_distance, sampler_settings,
                             text_dashboard)

torch.set_num_threads(1)
model = diffgeo.load("shapes-text")
W = default_guidance(model)

# %% [markdown]
# ## The calls
# One x_T, two prompts; the local basis of x_t at the middle timestep (of the first prompt's
# path) on each prompt's branch.

# %%
prompts = ["a red circle", "a blue square"]
noise = torch.randn(1, *model.x_shape, generator=torch.Generator().manual_seed(3)).expand(2, -1, -1, -1)
with torch.no_grad():
    traj = diffgeo.sample(model, noise=noise, prompt=prompts, guidance_scale=W, steps=STEPS, progress=False,
                          **sampler_settings(model))
t = int(traj.timesteps[(STEPS - 1) // 2])                 # the middle of the grid's t > 0
mid = traj.timesteps.tolist().index(t)
bases = [diffgeo.local_basis(model, traj.xs[mid][:1], t, K, prompt=p, seed=0, tol=TOL, progress=False)
         for p in prompts]
fig, ax = plt.subplots(figsize=(3, 1.9))
draw_images(ax, traj.result, nrow=2, captions=prompts, title=f"one x_T, guidance {W:g}")
plt.show()
print(f"bases at t={t} under the two prompts: {diffgeo.grassmann_distance(*bases):.2f} rad apart; "
      f"random {K}-dim subspaces: {random_subspace_distance(3 * 32 * 32, K):.2f}")

# %% [markdown]
# ## The dashboard
# The first prompt drives the trajectory (one x_T, the guidance of the slider); the bases are
# taken on each prompt's conditional branch; the empty prompt is the unconditional one. Its state
# adopts the path of "a red circle" and its basis from the calls above (checked to be what it would
# compute) and keeps the bases it computes on disk for the next session.

# %%
state = TextState(model, steps=STEPS, k=K, tol=TOL, cache=notebook_cache("bases"))
state.adopt(traj, index=0, bases=bases)
dash = text_dashboard(state=state, over_t=FAST)  # tick the switch for the curve over t
dash

# %% [markdown]
# ## Does the picture say what the prompt says?
# The attribute probe reads shape and colour back from each sample. The measurement takes a few
# minutes on a laptop CPU the first time (its progress shows beside the button) and is cached
# on disk (`~/.cache/diffgeo/notebooks`, or `$DIFFGEO_CACHE`): the next session reads it back.

# %%
alignment_panel(model, n=N_ALIGN, chunks=2 if FAST else 8, steps=STEPS, autorun=FAST)
