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

# %% [markdown]
# ## The call
# N samples (the dashboard's), two of them at one timestep, and `diffgeo.curvedness` on the
# segment between them.

# %%
import matplotlib.pyplot as plt
import torch

import diffgeo
from diffgeo.viz.draw import draw_curves

torch.set_num_threads(1)
model = diffgeo.load("shapes")
with torch.no_grad():
    traj = diffgeo.sample(model, N, steps=STEPS, seed=0, progress=False)
t = int(traj.timesteps[(STEPS - 1) // 2])                 # the middle of the grid's t > 0
mid = traj.timesteps.tolist().index(t)
xa, xb = traj.xs[mid][:1], traj.xs[mid][1:2]
c = diffgeo.curvedness(model, xa, xb, t, k=K, n_points=POINTS, tol=TOL, progress=False)
fig, ax = plt.subplots(figsize=(5, 3))
draw_curves(ax, [(i + 0.5) / (POINTS - 1) for i in range(POINTS - 1)], {"rotation per step": c.steps.tolist()},
            xlabel="position s along the segment", ylabel="Grassmann distance (rad)",
            title=f"t={t}: mean {float(c.steps.mean()):.2f} rad per step")
ax.set_ylim(0, None)
plt.show()
print(f"rotation {c.rotation:.3g} rad per unit of ||x||; off-tangent {c.off_tangent:.3f}; "
      f"excess length {c.excess_length:.3f}")

# %% [markdown]
# *What to notice:* a rotation per step well above the flat floor (the dashboard draws it) means
# the tangent space turns along the segment. *Reference:* the floor is what a flat map reads.
#
# ## The dashboard
# It starts on the same samples and segment: the state adopts the trajectory and the curvedness
# computed above (each checked to be what the dashboard would compute), so nothing is done twice;
# the flat floor's bases are kept on disk for the next session.

# %%
from diffgeo.widgets import CurvednessState, curvedness_dashboard, notebook_cache

state = CurvednessState(model, n=N, steps=STEPS, k=K, n_points=POINTS, tol=TOL, cache=notebook_cache("bases"))
state.adopt_trajectory(traj)
state.adopt_curvedness(c, a=0, b=1, t=t)
dash = curvedness_dashboard(state=state, t=t)
dash
