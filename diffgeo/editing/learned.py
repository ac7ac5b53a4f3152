"""Learned Asyrp directions: a small network f_t(h, t) -> dh trained for one attribute.

Asyrp (Kwon et al., ICLR 2023) edits h with the output of a per-attribute network ("implicit"
f_t: a 1x1 convolution, plus a time embedding, GroupNorm, SiLU, a 1x1 convolution) trained so
that the edited x0 prediction ``P_t(eps(x_t | h + f_t(h, t)))`` shows the attribute while staying
close to the unedited ``P_t(eps(x_t))`` (an L1 term). Here:

- :class:`DeltaNet`: f_t; its last convolution starts at zero, so training starts from dh = 0.
- Objectives (the directional signal, ``(x_edit, x_orig) -> (B,)``, in :mod:`diffgeo.editing.objectives`): :func:`~diffgeo.editing.objectives.probe_objective`,
  cross-entropy of the model's attribute reader (:mod:`diffgeo.readers`, the shapes probe) on the
  edited x0 prediction towards a target class of one factor; :func:`~diffgeo.editing.objectives.clip_objective`, the paper's
  directional CLIP loss ``1 - cos(E_img(x_edit) - E_img(x_orig), E_txt(target) - E_txt(source))``
  with E the unit-normalised CLIP embeddings (as in StyleGAN-NADA, where the loss comes from), for
  a user's transformers ``CLIPModel`` (given, or loaded from a hub id or folder; never fetched in tests).
- :func:`train_direction`: training on forward-noised images at timesteps drawn uniformly from
  the edit interval [t_edit, T) (Asyrp edits there); dh enters through
  :func:`diffgeo.models.hooks.add_to_output` on the model's h module, the hook ``diffgeo.asyrp`` uses.
  Adam, one seeded batch per step (a function of the seed and the step index only), a tqdm bar,
  checkpoints (safetensors + JSON, atomic) every ``save_every`` steps; rerunning with the same
  ``out`` resumes from the checkpoint (optimizer state included): the run an uninterrupted one gives.
- :meth:`LearnedDirection.to_direction`: the project's one direction type. f_t depends on h, a
  :class:`~diffgeo.editing.directions.Direction` holds one vector per timestep; we store, at each grid
  timestep of the edit interval, the mean of f_t(h_i, t) over n forward-noised images (the
  constant dh closest in L2 to the per-sample edits). ``meta["spread"]`` records, per timestep,
  the mean relative distance of the per-sample f_t(h_i, t) from that mean: how much is lost.
  The result goes unchanged through :func:`diffgeo.asyrp` and
  :func:`diffgeo.editing.properties.edit_properties` (timestep consistency included).

>>> import torch
>>> f = DeltaNet(8, time_dim=16)
>>> f(torch.randn(2, 8, 4, 4), torch.tensor([100, 900])).abs().max().item()   # starts at dh = 0
0.0
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

import diffgeo.models.hooks as hooks
from diffgeo.core.checks import check_float, check_int
from diffgeo.core.io import content_record, load_tensors_json, result_path, save_tensors_json
from diffgeo.core.progress import progress_bar
from diffgeo.editing.directions import Direction
from diffgeo.editing.interval import default_interval
from diffgeo.editing.objectives import probe_objective
from diffgeo.models.conditioning import resolve_cond
from diffgeo.models.zoo import entry
from diffgeo.sampling.ddim import ddim_timesteps

__all__ = ["DeltaNet", "LearnedDirection", "train_direction", "edit_losses", "timestep_embedding"]

logger = logging.getLogger(__name__)

KIND = "LearnedDirection"


# -- the network ------------------------------------------------------------------------------------
def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embedding (B, dim) of timesteps t (B,): ``[cos(t w_k), sin(t w_k)]``,
    ``w_k = max_period^(-k / (dim / 2))``.

    >>> timestep_embedding(torch.tensor([0]), 4).tolist()
    [[1.0, 1.0, 0.0, 0.0]]
    """
    half = dim // 2
    w = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    a = t.float()[:, None] * w[None]
    return torch.cat([torch.cos(a), torch.sin(a)], 1)


class DeltaNet(nn.Module):
    """f_t(h, t) -> dh: h (B, C, H, W), t (B,) or a scalar; returns (B, C, H, W).

    ``conv_in`` (1x1, C -> hidden) + a time embedding (sinusoidal -> Linear -> SiLU -> Linear),
    GroupNorm, SiLU, ``conv_out`` (1x1, hidden -> C, zero-initialised).
    """

    def __init__(self, channels: int, hidden: int | None = None, time_dim: int = 64):
        super().__init__()
        hidden = int(hidden or channels)
        self.channels, self.hidden, self.time_dim = int(channels), hidden, int(time_dim)
        self.conv_in = nn.Conv2d(channels, hidden, 1)
        self.time = nn.Sequential(nn.Linear(time_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.norm = nn.GroupNorm(math.gcd(32, hidden), hidden)
        self.conv_out = nn.Conv2d(hidden, channels, 1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def config(self) -> dict[str, int]:
        return {"channels": self.channels, "hidden": self.hidden, "time_dim": self.time_dim}

    def forward(self, h: torch.Tensor, t: Any) -> torch.Tensor:
        t = torch.as_tensor(t, device=h.device).reshape(-1)
        if len(t) == 1:
            t = t.expand(h.shape[0])
        elif len(t) != h.shape[0]:  # guidance runs both branches as one batch of 2B: (uncond, cond)
            t = t.repeat(h.shape[0] // len(t))
        e = self.time(timestep_embedding(t, self.time_dim).to(h.dtype))
        z = self.conv_in(h) + e[:, :, None, None]
        return self.conv_out(F.silu(self.norm(z)))


# -- the result ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LearnedDirection:
    """A trained f_t for one model. net: the :class:`DeltaNet`; model: the model's name; h_shape;
    train: the training settings (objective included: what a resume must match); step: optimizer
    steps taken; history: (step, 3) per-step [total, directional, L1] losses; optim: the Adam
    state to resume from (flat name -> tensor; empty: none); meta: free-form."""

    net: DeltaNet
    model: str
    h_shape: tuple[int, ...]
    train: dict
    step: int
    history: torch.Tensor
    optim: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    def __call__(self, h: torch.Tensor, t: Any) -> torch.Tensor:
        return self.net(h, t)

    space = "h"  # (not a field) an f_t edits h, as an h-space Direction does

    def h_delta(self, model: Any) -> Callable[[int], Callable[[torch.Tensor], torch.Tensor]]:
        """``t -> (h -> f_t(h, t))`` on ``model``'s device: what :func:`diffgeo.asyrp` adds to each sample's
        own h (B, *h_shape) when given this f_t as its direction (Asyrp's edit; :meth:`to_direction`
        is its one-vector-per-timestep average).

        >>> import diffgeo, torch
        >>> m = diffgeo.load("shapes")
        >>> ld = train_direction(m, probe_objective(m), steps=1, batch_size=2, n_images=2, t_edit=600, progress=False)
        >>> ld.h_delta(m)(700)(torch.zeros(3, *m.h_shape)).shape
        torch.Size([3, 128, 8, 8])
        """
        self.check(model)
        net = self.net.to(model.device, model.dtype)
        return lambda t: (lambda h: net(h, model.timesteps_tensor(t, h.shape[0])))

    def check(self, model: Any, space: str = "h") -> None:
        """Raise a ValueError unless this f_t was trained for ``model`` (name and h shape) and ``space`` is h."""
        if space != "h":
            raise ValueError(f"a learned f_t edits h; it cannot be used as a direction in {space!r}")
        if self.model != model.name:
            raise ValueError(f"this learned direction was trained for model {self.model!r}, not {model.name!r}: "
                             "directions do not carry over between models; train one for this model")
        if tuple(self.h_shape) != tuple(model.h_shape):
            raise ValueError(f"this learned direction takes h of shape {tuple(self.h_shape)}, {model.name}'s h has "
                             f"shape {tuple(model.h_shape)}")

    def save(self, path: str | Path) -> Path:
        """One safetensors file (atomic): network, Adam state, loss history; settings in the JSON."""
        tensors = {f"net.{k}": v for k, v in self.net.state_dict().items()}
        tensors.update({f"optim.{k}": v for k, v in self.optim.items()})
        tensors["history"] = self.history
        return save_tensors_json(path, tensors, {"kind": KIND, "model": self.model, "h_shape": list(self.h_shape),
                                                 "net": self.net.config(), "train": self.train, "step": self.step,
                                                 "meta": self.meta})

    @classmethod
    def load(cls, path: str | Path) -> "LearnedDirection":
        tensors, meta = load_tensors_json(path, kind=KIND)
        net = DeltaNet(**meta["net"])
        net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")})
        optim = {k[6:]: v for k, v in tensors.items() if k.startswith("optim.")}
        return cls(net.eval(), meta["model"], tuple(meta["h_shape"]), meta["train"], int(meta["step"]),
                   tensors["history"], optim, meta.get("meta", {}))

    def to_direction(self, model: Any, images: torch.Tensor | None = None, *, n: int = 16, steps: int = 50,
                     prompt: Any = None, seed: int = 0, batch_size: int = 64) -> Direction:
        """The h-space :class:`~diffgeo.editing.directions.Direction` of this f_t on ``model``: at each timestep
        of the ``steps``-step DDIM grid with t >= t_edit (the interval it was trained on), the mean
        of f_t(h(x_t), t) over ``images`` (N, *x_shape) forward-noised to t (seeded noise; default:
        n images of the model's training data from :mod:`diffgeo.models.zoo`). ``meta["spread"]``: per
        timestep, mean_i ||f_t(h_i) - mean|| / ||mean||. Use it with ``diffgeo.asyrp(...,
        t_edit=self.train["t_edit"])``.

        >>> import diffgeo
        >>> m = diffgeo.load("shapes")
        >>> ld = train_direction(m, probe_objective(m), steps=1, batch_size=2, n_images=2, t_edit=600,
        ...                      progress=False)
        >>> d = ld.to_direction(m, n=2, steps=5)
        >>> d.timesteps.tolist(), d.shape, d.meta["source"]
        ([600, 800], (128, 8, 8), 'learned')
        """
        self.check(model)
        if model.is_conditional and prompt is None:
            raise ValueError(f"{model.name} is text-conditioned: pass prompt= for h (prompt='' is the empty prompt)")
        t_edit = int(self.train["t_edit"])
        ts = sorted(t for t in ddim_timesteps(model, steps).tolist() if t >= t_edit)
        if not ts:
            raise ValueError(f"the {steps}-step grid has no timestep >= t_edit={t_edit}: use more steps")
        x0 = _training_images(model, images, n, seed, "images")
        g = torch.Generator().manual_seed(seed)
        z = torch.randn(x0.shape, generator=g).to(x0)
        vecs, spread = [], []
        net = self.net.to(model.device, model.dtype)
        with torch.no_grad():
            for t in ts:
                a = float(model.alphas_cumprod[t])
                x_t = a**0.5 * x0 + (1 - a) ** 0.5 * z
                dh = []
                for chunk in x_t.split(batch_size):
                    c = resolve_cond(model, prompt, default_branch="cond", batch=len(chunk))
                    tb = model.timesteps_tensor(t, len(chunk))
                    dh.append(net(model.h_fn(chunk, tb, c), tb))
                dh = torch.cat(dh).float()
                mean = dh.mean(0)
                vecs.append(mean.cpu())
                spread.append(float(((dh - mean).flatten(1).norm(dim=1) / mean.norm().clamp_min(1e-12)).mean()))
        return Direction(torch.stack(vecs), torch.tensor(ts), "h", model.name,
                         {"source": "learned", "t_edit": t_edit, "n": len(x0), "seed": seed, "steps": steps,
                          "spread": spread, "train": self.train, "step": self.step})


# -- training -------------------------------------------------------------------------------------------
def _training_images(model: Any, images: torch.Tensor | None, n: int, seed: int, what: str) -> torch.Tensor:
    if images is None:

        data = entry(model).data
        if data is None:
            raise ValueError(f"{model.name} has no training data registered in diffgeo.models.zoo: pass {what}= "
                             f"(N, {', '.join(map(str, model.x_shape))}) in [-1, 1]")
        images = data(seed, check_int(n, "n_images", min=1), 0.0)[0].to(model.dtype)
    images = model.check_x(images, what)
    if float(images.abs().max()) > 1 + 1e-6:
        raise ValueError(f"{what} must be in [-1, 1], got values in [{float(images.min()):.3g}, "
                         f"{float(images.max()):.3g}] (map [0, 1] images with 2 * x - 1)")
    return images


def _x0(x_t: torch.Tensor, eps: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    return (x_t - (1 - a).sqrt() * eps) / a.sqrt()


def _step_batch(model: Any, images: torch.Tensor, step: int, seed: int, batch_size: int,
                t_edit: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The batch of step ``step``: image indices, timesteps in [t_edit, T), noise; a function of
    (seed, step) only, so a resumed run draws what an uninterrupted one would."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    idx = torch.randint(len(images), (batch_size,), generator=g)
    t = torch.randint(t_edit, model.num_train_timesteps, (batch_size,), generator=g)
    z = torch.randn((batch_size, *model.x_shape), generator=g)
    return idx, t, z


def edit_losses(model: Any, f: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], objective: Callable,
                x0: torch.Tensor, t: torch.Tensor, z: torch.Tensor, *, cond: Any = None,
                l1_weight: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, directional, L1) losses, each a scalar, of f on clean images x0 (B, *x_shape)
    noised to t (B,) with noise z: x0 predictions P_t of eps(x_t) and of eps(x_t | h + f(h, t))
    (clipped to [-1, 1] for the objective), ``objective(x_edit, x_orig).mean() + l1_weight *
    mean |x_edit - x_orig|``.

    >>> import diffgeo
    >>> total, d, l1 = edit_losses(diffgeo.load("shapes"), lambda h, t: torch.zeros_like(h),
    ...                            lambda a, b: (a - b).abs().flatten(1).mean(1), torch.zeros(2, 3, 32, 32),
    ...                            torch.tensor([500, 600]), torch.randn(2, 3, 32, 32))
    >>> total.shape, float(l1)   # f = 0 edits nothing
    (torch.Size([]), 0.0)
    """
    x0 = x0.to(model.device)  # inputs on any device: the losses are computed on the model's
    z = z.to(device=model.device, dtype=x0.dtype)
    a = model.alphas_cumprod[t.cpu()].to(model.device, x0.dtype).view(-1, *[1] * (x0.dim() - 1))
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * z
    tb = t.to(model.device)
    with torch.no_grad():
        x_orig = _x0(x_t, model.eps_fn(x_t, tb, cond), a)
    with hooks.add_to_output(model.unet, lambda h: f(h, tb), model.h_module):
        x_edit = _x0(x_t, model.eps_fn(x_t, tb, cond), a)
    d = objective(x_edit.clamp(-1, 1), x_orig.clamp(-1, 1)).mean()
    l1 = (x_edit - x_orig).abs().mean()
    return d + l1_weight * l1, d, l1


def _flat_optim(opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    out = {}
    for i, st in opt.state_dict()["state"].items():
        for k, v in st.items():
            out[f"{i}.{k}"] = torch.as_tensor(v).clone()
    return out


def _load_optim(opt: torch.optim.Optimizer, flat: dict[str, torch.Tensor]) -> None:
    sd = opt.state_dict()
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, v in flat.items():
        i, k = key.split(".", 1)
        state.setdefault(int(i), {})[k] = v
    sd["state"] = state
    opt.load_state_dict(sd)


def train_direction(model: Any, objective: Any = None, *, out: str | Path | None = None, steps: int = 300,
                    batch_size: int = 8, lr: float = 3e-3, l1_weight: float = 3.0, t_edit: int | None = None,
                    images: torch.Tensor | None = None, n_images: int = 100, prompt: Any = None, seed: int = 0,
                    hidden: int | None = None, time_dim: int = 64, save_every: int = 50,
                    progress: bool | None = None) -> LearnedDirection:
    """Train f_t(h, t) -> dh for ``model`` (default objective: :func:`probe_objective`, colour -> blue).

    Each step: ``batch_size`` of the training ``images`` (N, *x_shape) in [-1, 1] (default:
    ``n_images`` of the model's training data, :mod:`diffgeo.models.zoo`), forward-noised to t uniform
    on [t_edit, T) (``t_edit`` None: :func:`diffgeo.editing.interval.default_interval`), loss
    :func:`edit_losses` (objective + ``l1_weight`` x L1), one Adam step (``lr``). ``out``: the
    checkpoint, written every ``save_every`` steps and at the end; if it exists the run resumes from
    it (refused when its model or settings differ) up to ``steps`` in total. Text models need
    ``prompt`` (the conditional branch is used). Returns the :class:`LearnedDirection`.

    >>> import diffgeo
    >>> m = diffgeo.load("shapes")
    >>> ld = train_direction(m, probe_objective(m, "colour", "red"), steps=2, batch_size=2, n_images=4,
    ...                      t_edit=500, progress=False)
    >>> ld.step, tuple(ld.history.shape), ld.train["objective"]["target"]
    (2, (2, 3), 'red')
    """
    steps = check_int(steps, "steps", min=1)
    batch_size = check_int(batch_size, "batch_size", min=1)
    save_every = check_int(save_every, "save_every", min=1)
    lr = check_float(lr, "lr", min=0.0, min_open=True)
    l1_weight = check_float(l1_weight, "l1_weight", min=0.0)
    seed = check_int(seed, "seed")
    if objective is None:
        objective = probe_objective(model)
    if not callable(objective) or not callable(getattr(objective, "describe", None)):
        raise TypeError("objective must be a probe_objective(...) or clip_objective(...) (a callable "
                        f"(x_edit, x_orig) -> (B,) with describe()), got {type(objective).__name__}")
    if model.is_latent:
        raise ValueError(f"{model.name} is a latent model: training learned directions on latent models is not "
                         "supported yet (the objective would need the VAE decoder in the loop)")
    if model.is_conditional and prompt is None:
        raise ValueError(f"{model.name} is text-conditioned: pass prompt= (prompt='' is the empty prompt)")
    if t_edit is None:

        t_edit = default_interval(model).t_edit
    t_edit = check_int(t_edit, "t_edit")
    if not 0 <= t_edit < model.num_train_timesteps:
        raise ValueError(f"t_edit={t_edit} is outside the schedule: timesteps are integers in "
                         f"[0, {model.num_train_timesteps - 1}]")
    given = images is not None
    images = _training_images(model, images, n_images, seed, "images")
    settings = {"objective": objective.describe(), "batch_size": batch_size, "lr": lr, "l1_weight": l1_weight,
                "t_edit": t_edit, "seed": seed, "n_images": len(images),
                "images": content_record({"images": images})["sha256"][:16] if given else "zoo",
                "prompt": prompt, "optimizer": "adam"}
    channels = model.h_shape[0]
    with torch.random.fork_rng(devices=[]):  # seeded initialisation without touching the global RNG
        torch.manual_seed(seed)
        net = DeltaNet(channels, hidden, time_dim).to(model.device, model.dtype)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    start, history = 0, torch.zeros(0, 3)
    path = result_path(out) if out is not None else None
    if path is not None and path.exists():
        done = LearnedDirection.load(path)
        if done.model != model.name:
            raise ValueError(f"{path} holds a direction trained for model {done.model!r}, not {model.name!r}: "
                             "give another out= path")
        diff = {k: (done.train.get(k), v) for k, v in settings.items() if done.train.get(k) != v}
        if diff or done.net.config() != {"channels": channels, "hidden": int(hidden or channels), "time_dim": time_dim}:
            what = "; ".join(f"{k}: saved {a!r}, now {b!r}" for k, (a, b) in diff.items()) or "network size"
            raise ValueError(f"{path} was trained with other settings ({what}): resume with the same settings "
                             "or give another out= path")
        net.load_state_dict(done.net.state_dict())
        if done.optim:
            _load_optim(opt, done.optim)
        start, history = done.step, done.history
        logger.info("resuming %s from step %d", path, start)
    cond = resolve_cond(model, prompt, default_branch="cond", batch=batch_size) if model.is_conditional else None
    params = list(net.parameters())
    rows = [history]

    def result(step: int) -> LearnedDirection:
        return LearnedDirection(net, model.name, tuple(model.h_shape), settings, step, torch.cat(rows),
                                _flat_optim(opt), {"hidden": int(hidden or channels)})

    net.train()
    bar = progress_bar(range(start, steps), desc="train f_t", progress=progress, initial=start, total=steps)
    for step in bar:
        idx, t, z = _step_batch(model, images, step, seed, batch_size, t_edit)
        total, d, l1 = edit_losses(model, net, objective, images[idx], t, z.to(images), cond=cond,
                                   l1_weight=l1_weight)
        # autograd.grad, not backward(): gradients reach only f_t, never the U-Net, probe or CLIP.
        grads = torch.autograd.grad(total, params)
        for p, g in zip(params, grads):
            p.grad = g
        opt.step()
        opt.zero_grad(set_to_none=True)
        rows.append(torch.stack([total, d, l1]).detach().float().cpu()[None])
        bar.set_postfix(loss=f"{total.item():.3f}", direction=f"{d.item():.3f}", l1=f"{l1.item():.3f}")
        if path is not None and ((step + 1) % save_every == 0 or step + 1 == steps):
            result(step + 1).save(path)
    net.eval()
    return result(max(steps, start))
