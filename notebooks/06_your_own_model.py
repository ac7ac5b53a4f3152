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

import diffgeo
from diffgeo.viz.draw import draw_images

model = diffgeo.load(MODEL or "digits")
print(model.name, "x:", model.x_shape, "h:", model.h_shape, "device:", model.device,
      "text:", model.is_conditional)

# %% [markdown]
# ## Samples, a local basis and an edit: the calls

# %%
from diffgeo.models.zoo import entry

prompt = (entry(model).analysis_prompts or ("",))[0] if model.is_conditional else None
with torch.no_grad():
    traj = diffgeo.sample(model, N, steps=STEPS, seed=0, prompt=prompt, progress=False)
mid = len(traj.timesteps) // 2
t = int(traj.timesteps[mid])
x_t = traj.xs[mid][:1]
basis = diffgeo.local_basis(model, x_t, t, K, prompt=prompt, seed=0, tol=TOL, progress=False)
with torch.no_grad():
    edited = diffgeo.edit_x(model, x_t, t, basis.v[0], strength=0.25 * float(x_t.norm()), steps=STEPS,
                            prompt=prompt, progress=False).result
show = model.decode if model.is_latent else (lambda x: x)
fig, ax = plt.subplots(figsize=(2 * (N + 1), 2))
draw_images(ax, show(torch.cat([traj.result, edited])), nrow=N + 1,
            captions=[f"sample {i}" for i in range(N)] + ["sample 0, edit_x v1 +0.25"],
            title=f"{model.name}: {STEPS} DDIM steps" + (f', "{prompt}"' if prompt else ""))
plt.show()

# %% [markdown]
# *What to notice:* the last image is sample 0 moved along its first local-basis vector at
# the middle timestep by a quarter of ||x_t||. *Reference:* strength 0 gives sample 0 back exactly.
#
# ## Tangent spaces over time and a traversal on this model
# The same dashboards as notebooks 02 and 05 (real images are offered only for models whose
# training images diffgeo knows: the embedded ones).

# %%
from diffgeo.widgets import TangentState, TraversalState, notebook_cache, tangent_dashboard, traversal_dashboard

CACHE = notebook_cache("bases")   # the dashboards' local bases, kept on disk for the next session

tangent_state = TangentState(model, n=N, steps=STEPS, k=K, prompt=prompt, tol=TOL, cache=CACHE)
tangent_state.adopt_trajectory(traj)     # the samples and the basis of the calls above: not computed again
tangent_state.adopt_basis(basis, t=t, sample=0)
tangent = tangent_dashboard(state=tangent_state, compare=False)  # tick "distances" to compare
tangent

# %%
traversal_state = TraversalState(model, n=N, steps=STEPS, k=K, prompt=prompt, tol=TOL, cache=CACHE)
traversal_state.adopt_samples(traj)      # the same samples
traversal = traversal_dashboard(state=traversal_state)
traversal
