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
# encoded by a frozen MiniLM sentence encoder. This notebook
#
# 1. draws a prompt grid (one row per prompt, each column from the same x_T),
# 2. measures how often the attribute probe reads the shape and colour a prompt names, and
# 3. computes the local latent basis of one x_t (the top right singular vectors of the Jacobian of
#    x_t -> h) under different prompts, and how far apart those subspaces are over timesteps.
#
# Set `DIFFGEO_FAST=1` to run a quick version (the test suite does).

# %%
import os

import matplotlib.pyplot as plt
import torch

import diffgeo
from diffgeo.alignment import GUIDANCE, prompt_grid, text_alignment
from diffgeo.plotting import labelled_grid

FAST = os.environ.get("DIFFGEO_FAST") == "1"
STEPS, COLUMNS, N_ALIGN, K = (10, 4, 36, 3) if FAST else (20, 8, 256, 10)
W = GUIDANCE["shapes-text"]

model = diffgeo.load("shapes-text")
print(model.provenance["training_command"], "-", model.provenance["steps"], "steps; guidance", W)

# %% [markdown]
# ## Prompts
# Rows differ by the prompt alone: column j starts from the same noise in every row. The last
# rows use paraphrases and partial captions the encoder has to map onto the same factors.

# %%
prompts = ["a red circle", "a crimson disk", "a blue square", "a square", "a small yellow triangle on the left", ""]
with torch.no_grad():
    grid = prompt_grid(model, prompts, columns=COLUMNS, guidance_scale=W, steps=STEPS, progress=False)
labelled_grid(grid, [p or '"" (unconditional)' for p in prompts], nrow=COLUMNS,
              title=f"guidance {W:g}, {STEPS} DDIM steps")
plt.show()

# %% [markdown]
# ## Does the picture say what the prompt says?
# The attribute probe reads shape and colour back from each sample.

# %%
with torch.no_grad():
    r = text_alignment(model, n=N_ALIGN, guidance_scale=W, steps=STEPS, progress=False)
print({k: round(v, 3) for k, v in r.agreement.items()}, "valid scenes:", round(r.valid_rate, 3))

# %% [markdown]
# ## The local basis under different prompts
# Take one noisy state x_t of a trajectory prompted "a red circle" and compute its local basis on
# the conditional branch for several prompts. The Grassmann distance (root sum of squared
# principal angles) between two bases says how much the prompt turns the directions that move h
# most; the unconditional branch is the empty prompt.

# %%
with torch.no_grad():
    traj = diffgeo.sample(model, noise=torch.randn(1, *model.x_shape, generator=torch.Generator().manual_seed(3)),
                          prompt="a red circle", guidance_scale=W, steps=STEPS, progress=False)
picks = [1, len(traj.timesteps) // 2, len(traj.timesteps) - 3]
basis_prompts = ["a red circle", "a crimson disk", "a blue square", ""]
bases = {}
for i in picks:
    t = int(traj.timesteps[i])
    for p in basis_prompts:
        bases[t, p] = diffgeo.local_basis(model, traj.xs[i], t, K, prompt=p, branch="cond", seed=0, progress=False)
ts = sorted({t for t, _ in bases}, reverse=True)
ref = "a red circle"
plt.figure(figsize=(6, 3))
for p in basis_prompts[1:]:
    plt.plot(ts, [diffgeo.grassmann_distance(bases[t, ref], bases[t, p]) for t in ts], "o-",
             label=f'"{ref}" vs "{p}"' if p else f'"{ref}" vs unconditional')
plt.gca().invert_xaxis()
plt.xlabel("t")
plt.ylabel(f"Grassmann distance (k={K})")
plt.legend(fontsize=8)
plt.show()

# %% [markdown]
# The top singular vectors themselves at the middle timestep, one row per prompt (each scaled to
# its largest entry; grey is zero). A paraphrase should give nearly the same directions.

# %%
t_mid = ts[len(ts) // 2]
rows = torch.cat([bases[t_mid, p].v for p in basis_prompts])
rows = rows / rows.flatten(1).abs().amax(1).view(-1, 1, 1, 1)
labelled_grid(rows, [p or "unconditional" for p in basis_prompts], nrow=K, title=f"top-{K} local basis at t = {t_mid}")
plt.show()
