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
# 1. samples from one x_T under several prompts (paraphrases and partial captions included),
# 2. measures how often the attribute probe reads the shape and colour a prompt names, and
# 3. opens a dashboard: type prompts (or pick a preset), and see the local basis of one x_t
#    under each prompt, their distances against how similar the prompts are, the conditional vs
#    unconditional basis over t, and what the guidance scale changes.

# %% tags=["parameters"]
import os

FAST = os.environ.get("DIFFGEO_FAST") == "1"
STEPS, COLUMNS, N_ALIGN, K = (4, 3, 6, 2) if FAST else (20, 8, 256, 6)
TOL = 1e-2 if FAST else 1e-3   # local-basis tolerance: looser is faster

# %%
import matplotlib.pyplot as plt
import torch
from IPython.display import Image, display

import diffgeo
from diffgeo.viz.draw import draw_labelled_grid
from diffgeo.models.conditioning import default_guidance

model = diffgeo.load("shapes-text")
W = default_guidance(model)
print(model.provenance["training_command"], "-", model.provenance["steps"], "steps; default guidance", W)

# %% [markdown]
# ## Prompts
# Rows differ by the prompt alone: column j starts from the same noise in every row.

# %%
prompts = ["a red circle", "a crimson disk", "a blue square", "a square", "a small yellow triangle on the left", ""]
noise = torch.randn(COLUMNS, *model.x_shape, generator=torch.Generator().manual_seed(0))
with torch.no_grad():
    rows = [diffgeo.sample(model, noise=noise, prompt=p, guidance_scale=W, steps=STEPS, progress=False).result
            for p in prompts]
fig, ax = plt.subplots(figsize=(COLUMNS * 0.9 + 2.5, len(prompts) * 0.9))
draw_labelled_grid(ax, torch.cat(rows), [p or '"" (unconditional)' for p in prompts], nrow=COLUMNS,
                   title=f"guidance {W:g}, {STEPS} DDIM steps")
plt.show()

# %% [markdown]
# ## Does the picture say what the prompt says?
# The attribute probe reads shape and colour back from each sample.

# %%
with torch.no_grad():
    r = diffgeo.text_alignment(model, n=N_ALIGN, guidance_scale=W, steps=STEPS, progress=False)
print(r)

# %% [markdown]
# ## The dashboard
# The first prompt drives the trajectory (one x_T, the guidance scale of the slider); the bases
# are taken on each prompt's conditional branch; the empty prompt is the unconditional one.

# %%
from diffgeo.widgets import text_dashboard

dash = text_dashboard(model, steps=STEPS, k=K, tol=TOL)
dash

# %%
for name in ("samples", "distances"):
    display(Image(dash.figures[name].value))
