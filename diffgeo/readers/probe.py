"""Attribute probe for the shapes data: read the factors back from an image.

A small CNN, trained on fresh procedural scenes, predicts shape and colour (classes) and size,
x, y and background (regression). :func:`validity` re-renders the scene from the predicted
factors and calls an image *valid* when the re-rendering matches it to within
``VALID_RMSE`` (root-mean-square pixel error on the [-1, 1] scale): a valid image is one
clean scene of the data set's kind, so generated samples can be scored without a human.

Reproduce the shipped weights with ``python -m diffgeo probe`` (about 2 minutes on 2 cores).

>>> from diffgeo.data.shapes import make_scenes
>>> scenes = make_scenes(64, seed=123)
>>> probe = load_probe()
>>> pred = probe.predict(scenes.images)
>>> bool((pred.shape == scenes.factors.shape).float().mean() > 0.95)
True
>>> bool(validity(scenes.images, probe=probe).valid.float().mean() > 0.95)
True
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import diffgeo.data.shapes as shapes
from diffgeo.core.io import load_tensors_json
from diffgeo.core.progress import progress_bar
from diffgeo.data.shapes import CONTINUOUS, RANGES, Factors, make_scenes, render

__all__ = ["ShapesProbe", "Validity", "SceneFit", "load_probe", "validity", "fit_scene", "VALID_RMSE", "PROBE_PATH",
           "train_probe"]

log = logging.getLogger(__name__)

PROBE_PATH = Path(__file__).parent.parent / "embedded" / "probes" / "shapes.safetensors"
#: An image is valid when the RMSE between it and the re-rendering of its predicted factors is
#: at most this. Chosen from held-out real scenes (tests/test_probe.py checks that it accepts them
#: and rejects two-object scenes, blends of two scenes and noisy scenes).
VALID_RMSE = 0.1


class ShapesProbe(nn.Module):
    """CNN: (N, 3, 32, 32) -> shape logits (N, 3), colour logits (N, 6), continuous (N, 4) in [0, 1] units."""

    def __init__(self, width: int = 32):
        super().__init__()
        w = width

        def block(cin: int, cout: int, stride: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.GroupNorm(8, cout), nn.SiLU())

        self.features = nn.Sequential(block(3, w, 2), block(w, 2 * w, 2), block(2 * w, 4 * w, 2))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(4 * w * 16, 256), nn.SiLU(),
                                  nn.Linear(256, len(shapes.SHAPES) + len(shapes.COLOURS) + len(CONTINUOUS)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.head(self.features(x))
        ns, nc = len(shapes.SHAPES), len(shapes.COLOURS)
        return out[:, :ns], out[:, ns:ns + nc], out[:, ns + nc:]

    @torch.no_grad()
    def predict(self, images: torch.Tensor, batch_size: int = 512) -> Factors:
        """Factors read from images (N, 3, 32, 32) in [-1, 1]; continuous ones clipped to their ranges."""
        if images.dim() != 4 or tuple(images.shape[1:]) != (3, shapes.RESOLUTION, shapes.RESOLUTION):
            raise ValueError(f"images must have shape (N, 3, 32, 32), got {tuple(images.shape)}")
        parts = []
        for chunk in images.detach().float().cpu().split(batch_size):
            s, c, r = self(chunk.clamp(-1, 1))
            parts.append((s.argmax(1), c.argmax(1), r))
        s, c, r = (torch.cat(p) for p in zip(*parts))
        cont = {}
        for i, name in enumerate(CONTINUOUS):
            lo, hi = RANGES[name]
            cont[name] = (lo + (hi - lo) * r[:, i]).clamp(lo, hi)
        return Factors(shape=s, colour=c, **cont)


def _targets(f: Factors) -> torch.Tensor:
    return torch.stack([(getattr(f, n) - RANGES[n][0]) / (RANGES[n][1] - RANGES[n][0]) for n in CONTINUOUS], 1)


def train_probe(*, steps: int = 2000, batch_size: int = 128, seed: int = 0, progress: bool | None = None) -> ShapesProbe:
    """Train a probe on fresh scenes (seeded per step), with light pixel noise for robustness.

    >>> train_probe(steps=2, batch_size=8, progress=False).predict(make_scenes(3, seed=0).images).shape.shape
    torch.Size([3])
    """
    torch.manual_seed(seed)
    probe = ShapesProbe()
    opt = torch.optim.AdamW(probe.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps, pct_start=0.1)
    for step in progress_bar(range(steps), desc="train probe", progress=progress):
        scenes = make_scenes(batch_size, seed=10_000_000 + seed * 100_003 + step)
        g = torch.Generator().manual_seed(step)
        sigma = 0.05 * torch.rand(batch_size, 1, 1, 1, generator=g)
        x = scenes.images + sigma * torch.randn(scenes.images.shape, generator=g)
        s, c, r = probe(x)
        loss = (F.cross_entropy(s, scenes.factors.shape) + F.cross_entropy(c, scenes.factors.colour)
                + 20 * F.smooth_l1_loss(r, _targets(scenes.factors), beta=0.02))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return probe.eval()


def evaluate_probe(probe: ShapesProbe, n: int = 2000, seed: int = 999) -> dict[str, float]:
    """Held-out accuracy (classes) and mean absolute error (continuous, in the factor's units).

    >>> metrics = evaluate_probe(load_probe(), n=64)
    >>> metrics["shape_accuracy"] > 0.9, sorted(metrics)[:2]
    (True, ['background_mae', 'colour_accuracy'])
    """
    scenes = make_scenes(n, seed=seed)
    pred, true = probe.predict(scenes.images), scenes.factors
    out = {"shape_accuracy": float((pred.shape == true.shape).float().mean()),
           "colour_accuracy": float((pred.colour == true.colour).float().mean())}
    for name in CONTINUOUS:
        out[f"{name}_mae"] = float((getattr(pred, name) - getattr(true, name)).abs().mean())
    out["valid_rate"] = float(validity(scenes.images, probe=probe).valid.float().mean())
    return out


@lru_cache(maxsize=1)
def load_probe(path: str | None = None) -> ShapesProbe:
    """The shipped probe (cached).

    >>> load_probe() is load_probe(), type(load_probe()).__name__
    (True, 'ShapesProbe')
    """
    tensors, _meta = load_tensors_json(path or PROBE_PATH)
    probe = ShapesProbe()
    probe.load_state_dict(tensors)
    return probe.eval()


@dataclass(frozen=True)
class Validity:
    """valid: (N,) bool; rmse: (N,) re-rendering error; factors: the predicted factors; rerendered: (N, 3, 32, 32)."""

    valid: torch.Tensor
    rmse: torch.Tensor
    factors: Factors
    rerendered: torch.Tensor

    @property
    def rate(self) -> float:
        return float(self.valid.float().mean())


def validity(images: torch.Tensor, *, probe: ShapesProbe | None = None) -> Validity:
    """Score images (N, 3, 32, 32) in [-1, 1]: valid when re-rendering the predicted factors reproduces
    them to within ``VALID_RMSE``. ``probe``: default the shipped one (:func:`load_probe`).

    >>> from diffgeo.data.shapes import make_scenes
    >>> v = validity(make_scenes(8, seed=1).images)
    >>> v.valid.shape, v.rmse.shape, v.rerendered.shape
    (torch.Size([8]), torch.Size([8]), torch.Size([8, 3, 32, 32]))
    """
    probe = probe or load_probe()
    factors = probe.predict(images)
    again = render(factors)
    rmse = (images.detach().float().cpu().clamp(-1, 1) - again).pow(2).mean(dim=(1, 2, 3)).sqrt()
    return Validity(valid=rmse <= VALID_RMSE, rmse=rmse, factors=factors, rerendered=again)


@dataclass(frozen=True)
class SceneFit:
    """factors: the best-fitting scene of each image (N), its continuous factors free of the training
    ranges; rmse: (N,) error of its rendering; out_of_range: (N,) bool, a continuous factor outside
    its training range (``RANGES``)."""

    factors: Factors
    rmse: torch.Tensor
    out_of_range: torch.Tensor


#: Half-width of the first grid of each continuous factor in :func:`fit_scene` (it halves each round).
FIT_SPAN = {"x": 4.0, "y": 4.0, "size": 3.0, "background": 0.2}


def fit_scene(images: torch.Tensor, start: Factors, *, rounds: int = 6, grid: int = 17) -> SceneFit:
    """Fit one scene to each image (N, 3, 32, 32) by rendering: for every shape, coordinate descent over
    size, x, y and background on grids around ``start`` (N factor sets, e.g. the probe's reading; the
    colour is kept), unconstrained by the training ranges; the best shape wins.

    The probe only reads scenes like its training data, so :func:`validity` rejects a clean scene whose
    centre lies a pixel past the position range. This tells such a scene (small ``rmse``,
    ``out_of_range``) from a malformed one (large ``rmse``).

    >>> from diffgeo.data.shapes import sample_factors
    >>> f = sample_factors(2, seed=3).replace(y=torch.tensor([23.0, 15.0]))   # the first one 2 px below the range
    >>> fit = fit_scene(render(f), f.replace(y=torch.tensor([21.0, 16.0])))
    >>> fit.out_of_range.tolist(), [round(v) for v in fit.factors.y.tolist()], bool(fit.rmse.max() < 0.02)
    ([True, False], [23, 15], True)
    """
    if images.dim() != 4 or tuple(images.shape[1:]) != (3, shapes.RESOLUTION, shapes.RESOLUTION):
        raise ValueError(f"images: expected (N, 3, {shapes.RESOLUTION}, {shapes.RESOLUTION}), got {tuple(images.shape)}")
    if len(start) != len(images):
        raise ValueError(f"start holds {len(start)} factor sets for {len(images)} images: give one per image")
    chunk = 32  # each chunk renders chunk x grid scenes at once
    if len(images) > chunk:
        parts = [fit_scene(images[i:i + chunk], start[i:i + chunk], rounds=rounds, grid=grid)
                 for i in range(0, len(images), chunk)]
        return SceneFit(factors=Factors(**{k: torch.cat([getattr(p.factors, k) for p in parts])
                                           for k in parts[0].factors.as_dict()}),
                        rmse=torch.cat([p.rmse for p in parts]),
                        out_of_range=torch.cat([p.out_of_range for p in parts]))
    target = images.detach().float().cpu().clamp(-1, 1)
    start = Factors(**{k: v.detach().cpu() for k, v in start.as_dict().items()})
    n = len(target)
    best_rmse, best = torch.full((n,), float("inf")), None
    for shape_index in range(len(shapes.SHAPES)):
        cur = {k: getattr(start, k).float().clone() for k in CONTINUOUS}
        fixed = {"shape": torch.full((n,), shape_index, dtype=torch.long), "colour": start.colour}
        for r in range(rounds):
            for name in CONTINUOUS:
                offsets = torch.linspace(-1, 1, grid) * FIT_SPAN[name] / 2 ** r
                cand = cur[name][:, None] + offsets[None]  # (N, grid)
                trial = Factors(**{k: v.repeat_interleave(grid) for k, v in {**fixed, **cur}.items()}
                                | {name: cand.flatten()})
                err = (render(trial).view(n, grid, -1) - target.view(n, 1, -1)).pow(2).mean(-1)
                cur[name] = cand[torch.arange(n), err.argmin(1)]
        fit = Factors(**fixed, **cur)
        rmse = (render(fit) - target).pow(2).mean(dim=(1, 2, 3)).sqrt()
        better = rmse < best_rmse
        best_rmse = torch.where(better, rmse, best_rmse)
        best = fit if best is None else Factors(**{k: torch.where(better, getattr(fit, k), getattr(best, k))
                                                   for k in best.as_dict()})
    outside = torch.zeros(n, dtype=torch.bool)
    for name in CONTINUOUS:
        lo, hi = RANGES[name]
        v = getattr(best, name)
        outside |= (v < lo) | (v > hi)
    return SceneFit(factors=best, rmse=best_rmse, out_of_range=outside)
