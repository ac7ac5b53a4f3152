"""Tangent spaces over time: the local basis (top right singular vectors of the Jacobian of
x_t -> h) of each sample at each timestep of its DDIM path, the basis vectors as images, their
radial power spectra (coarse directions early, fine late: Park et al.), and how far the basis is
from the other samples' bases at the same t and from its own basis at other timesteps.

:class:`TangentState` computes and caches (one local basis per sample and timestep, ever);
:func:`tangent_dashboard` is the ipywidgets front end (timestep slider, sample picker).

>>> import diffgeo
>>> state = TangentState(diffgeo.load("shapes"), n=2, steps=4, k=2)
>>> state.timesteps
[750, 500, 250, 0]
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch

from diffgeo.geometry.subspaces import grassmann_distance, radial_power_spectrum
from diffgeo.sampling.ddim import ddim_timesteps
from diffgeo.viz.draw import draw_curves, draw_images, draw_scatter, draw_spectra
from diffgeo.widgets._core import Memo, SampledPath, Stages, figure_png, meta_mismatch, same_tensor, state_for
from diffgeo.widgets._diskcache import cached_basis
from diffgeo.widgets._reference import random_subspace_distance
from diffgeo.widgets._ui import Dashboard, slider, widgets

__all__ = ["TangentState", "TangentView", "tangent_dashboard", "draw_tangent"]

Report = Callable[[int, int, str], None]


@dataclass(frozen=True)
class TangentView:
    """t, sample; v (k, *x_shape) the basis vectors; s (k,) their singular values; freqs (R,)
    and power (k, R) their radial power spectra; x0 (1, *x_shape) the sample's clean end;
    to_samples {j: Grassmann distance to sample j's basis at t}; over_t {t': distance to this
    sample's basis at t'} (both empty when not compared)."""

    t: int
    sample: int
    v: torch.Tensor
    s: torch.Tensor
    freqs: torch.Tensor
    power: torch.Tensor
    x0: torch.Tensor
    to_samples: dict[int, float]
    over_t: dict[int, float]


class TangentState(SampledPath):
    """n samples from ``seed`` on a ``steps``-step DDIM path, k basis vectors per local basis;
    ``prompt`` / ``guidance_scale`` for text models (the basis is taken on the prompt's branch);
    ``tol``: the local-basis tolerance (looser is faster); ``cache``: a folder that keeps the bases
    across sessions (:func:`diffgeo.widgets._diskcache.cached_basis`; None: memory only)."""

    def __init__(self, model: Any, *, n: int = 4, seed: int = 0, steps: int = 10, k: int = 4,
                 prompt: str | None = None, guidance_scale: float | None = None, basis_seed: int = 0, tol: float = 1e-3,
                 cache: Any = None):

        for name, value in (("n", n), ("steps", steps), ("k", k)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.model, self.n, self.seed, self.steps, self.k = model, n, seed, steps, k
        self.prompt, self.guidance_scale, self.basis_seed, self.tol = prompt, guidance_scale, basis_seed, tol
        self.cache = cache
        self.memo = Memo(1024)
        self.timesteps: list[int] = [int(t) for t in ddim_timesteps(model, steps)]

    def basis(self, t: int, sample: int) -> Any:

        x = self.x_t(t, sample)
        return self.memo.get(("basis", t, sample), lambda: cached_basis(
            self.model, x, t, self.k, prompt=self.prompt, seed=self.basis_seed, tol=self.tol, cache=self.cache))

    def adopt_basis(self, basis: Any, *, t: int, sample: int) -> None:
        """Use a local basis computed elsewhere (a notebook's plain ``diffgeo.local_basis`` call)
        as this state's basis of ``sample`` at ``t``. It must be the one :meth:`basis` would
        compute: of exactly this x_t (so adopt the trajectory first), with this k, tolerance, seed
        and prompt; anything else is a ValueError and leaves the state as it was."""
        want = {"t": t, "k": self.k, "tol": self.tol, "seed": self.basis_seed, "prompt": self.prompt}
        wrong = meta_mismatch(getattr(basis, "meta", None), want)
        if not same_tensor(getattr(basis, "x", None), self.x_t(t, sample)):
            wrong["x"] = "another x_t"
        if wrong:
            raise ValueError(f"this basis is not the dashboard's basis of sample {sample} at t={t} ({want}): it has "
                             f"{wrong}; compute it with diffgeo.local_basis on state.x_t({t}, {sample}) and the "
                             "state's k, tol and seed, or let the dashboard compute its own")
        self.memo.get(("basis", t, sample), lambda: basis)

    def _bases(self, keys: list[tuple[int, int]], progress: Report | None) -> list[Any]:
        todo = [key for key in keys if ("basis", *key) not in self.memo]
        stages = Stages(progress, len(todo))
        out = []
        for key in keys:
            if key in todo:
                stages.step(f"basis t={key[0]}")
            out.append(self.basis(*key))
        return out

    def view(self, *, t: int, sample: int, compare: bool = True, progress: Report | None = None) -> TangentView:
        """The basis of ``sample`` at ``t`` with its spectra; with ``compare`` also the distances
        to every other sample at t and to the same sample at every other timestep (bases that
        are not cached yet are computed, with progress reports)."""

        b = self._bases([(t, sample)], progress)[0]
        freqs, power = radial_power_spectrum(b)
        to_samples: dict[int, float] = {}
        over_t: dict[int, float] = {}
        if compare:
            others = [(t, j) for j in range(self.n) if j != sample]
            times = [(u, sample) for u in self.timesteps if u != t]
            bases = self._bases(others + times, progress)
            to_samples = {j: grassmann_distance(b, o) for (_, j), o in zip(others, bases)}
            over_t = {u: grassmann_distance(b, o) for (u, _), o in zip(times, bases[len(others):])}
            over_t[t] = 0.0
        return TangentView(t, sample, b.v, b.s, freqs, power, self.trajectory().result[sample:sample + 1],
                           to_samples, dict(sorted(over_t.items(), reverse=True)))


def draw_tangent(fig: Any, view: TangentView, part: str) -> None:
    """Draw one part of a view: ``"basis"`` (the sample and its basis vectors, each scaled to its
    largest entry), ``"spectra"`` or ``"distances"``, with the ``draw_*`` functions of
    :mod:`diffgeo.viz.draw`.

    >>> import diffgeo
    >>> from matplotlib.figure import Figure
    >>> state = TangentState(diffgeo.load("shapes"), n=1, steps=4, k=2)
    >>> fig = Figure()
    >>> draw_tangent(fig, state.view(t=500, sample=0, compare=False), "basis")
    >>> len(fig.axes)
    1
    """

    k = view.v.shape[0]
    if part == "basis":
        v = view.v / view.v.flatten(1).abs().amax(1).clamp_min(1e-12).view(-1, *[1] * (view.v.dim() - 1))
        images = torch.cat([view.x0.to(v), v])
        draw_images(fig.subplots(), images, nrow=k + 1,
                    captions=["sample"] + [f"v{i + 1} s={float(s):.2g}" for i, s in enumerate(view.s)],
                    title=f"sample {view.sample}: local basis at t={view.t} (grey = 0)")
    elif part == "spectra":
        draw_spectra(fig.subplots(), view.freqs, view.power, labels=[f"v{i + 1}" for i in range(k)],
                     title=f"radial power spectra at t={view.t}")
    elif part == "distances":
        a, b = fig.subplots(1, 2)
        if view.over_t:
            draw_curves(a, list(view.over_t), {"this sample": list(view.over_t.values())}, xlabel="t'",
                        ylabel=f"Grassmann distance (k={k})", title=f"to its basis at other t (now t={view.t})",
                        reverse_x=True, highlight=view.t)
        if view.to_samples:
            draw_scatter(b, list(view.to_samples), list(view.to_samples.values()),
                         labels=[f"#{j}" for j in view.to_samples], xlabel="other sample",
                         ylabel="Grassmann distance", title=f"to other samples at t={view.t}")
    else:
        raise ValueError(f"part must be 'basis', 'spectra' or 'distances', got {part!r}")


def tangent_dashboard(model: Any = None, *, state: TangentState | None = None, compare: bool = True,
                      **state_kwargs: Any) -> Any:
    """Timestep slider, sample picker and a 'compare' switch (initial value ``compare``: the
    distances to other samples and timesteps, which need all their bases) over a
    :class:`TangentState` (``model`` default: embedded ``shapes``).

    >>> import diffgeo
    >>> dash = tangent_dashboard(diffgeo.load("shapes"), n=2, steps=4, k=2, compare=False)
    >>> dash.last_ok, sorted(dash.controls), sorted(dash.figures)
    (True, ['compare', 'sample', 't'], ['basis', 'distances', 'notice', 'spectra'])
    """

    state = state_for(TangentState, model, state, state_kwargs)

    class TangentDashboard(Dashboard):
        title = "Tangent spaces over time"

        def frames(self, v: dict[str, Any]):
            self.view = state.view(t=v["t"], sample=v["sample"], compare=v["compare"], progress=self.report)
            k = state.k
            ref = random_subspace_distance(math.prod(state.model.x_shape), k)
            yield {"notice": ("<b>What to notice:</b> early (large t) basis vectors are smooth blobs, late ones fine "
                              "detail (their spectra move right); bases of different samples are closer at large t. "
                              f"<b>Reference:</b> random {k}-dimensional subspaces of x's space are {ref:.2f} apart "
                              f"(ceiling {math.sqrt(k) * math.pi / 2:.2f})."),
                   "basis": figure_png(lambda f: draw_tangent(f, self.view, "basis"), size=(1.2 * (k + 1) + 0.6, 1.9)),
                   "spectra": figure_png(lambda f: draw_tangent(f, self.view, "spectra"), size=(4.2, 3.0)),
                   "distances": figure_png(lambda f: draw_tangent(f, self.view, "distances"), size=(7.5, 3.0))}

    dash = TangentDashboard()
    dash.state = state
    w = widgets()
    dash.controls = {
        "t": slider("select", options=state.timesteps, value=state.timesteps[len(state.timesteps) // 2],
                    description="timestep t"),
        "sample": w.Dropdown(options=[(f"sample {i}", i) for i in range(state.n)], value=0, description="sample"),
        "compare": w.Checkbox(value=compare, description="distances to other samples and timesteps"),
    }
    c = dash.controls
    dash.figures["notice"] = w.HTML()
    dash.assemble([w.HBox([c["t"], c["sample"], c["compare"]])],
                  figures=[dash.image("basis"), w.HBox([dash.image("spectra"), dash.image("distances")]),
                           dash.figures["notice"]])
    return dash
