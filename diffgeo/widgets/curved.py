"""Curvedness between two samples: the straight segment x_a -> x_b at one timestep, what its
points denoise to, how much the tangent space (local basis of x_t -> h) turns along it, and the
three curvedness values of :func:`curvedness` against a *flat floor*.

The flat floor is what a flat map would read with the same k and tolerance: the Grassmann
distance between two local bases of the same point computed from different random starts (the
solver's own noise). A segment's step-to-step rotation at the floor is indistinguishable from
flat; its rotation per unit length is compared with ``(n_points - 1) * floor / chord``.

>>> import diffgeo
>>> state = CurvednessState(diffgeo.load("shapes"), n=2, steps=4, k=2, n_points=3)
>>> state.timesteps
[750, 500, 250]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from diffgeo.geometry.curvedness import curvedness
from diffgeo.geometry.subspaces import grassmann_distance
from diffgeo.sampling.ddim import ddim_timesteps, denoise
from diffgeo.viz.draw import draw_curves, draw_images
from diffgeo.widgets._core import Memo, SampledPath, figure_png, meta_mismatch, state_for
from diffgeo.widgets._diskcache import cached_basis
from diffgeo.widgets._ui import Dashboard, slider, widgets

__all__ = ["CurvednessState", "CurvednessView", "curvedness_dashboard", "draw_curvedness_view"]

Report = Callable[[int, int, str], None]


@dataclass(frozen=True)
class CurvednessView:
    """a, b, t; curvedness (a :class:`Curvedness`); segment (P, *x_shape): the clean
    images the P points of the segment denoise to; floor: the per-step flat floor (radians);
    floor_rotation: the rotation per unit length a flat map would read."""

    a: int
    b: int
    t: int
    curvedness: Any
    segment: torch.Tensor
    floor: float
    floor_rotation: float


class CurvednessState(SampledPath):
    """n samples from ``seed`` (``steps`` DDIM steps); tangent spaces of dimension k at
    n_points points of each segment (``tol`` the local-basis tolerance); ``cache``: a folder that
    keeps the flat floor's bases across sessions (:func:`diffgeo.widgets._diskcache.cached_basis`)."""

    def __init__(self, model: Any, *, n: int = 4, seed: int = 0, steps: int = 10, k: int = 4, n_points: int = 5,
                 tol: float = 1e-4, cache: Any = None):

        for name, value in (("n", n), ("steps", steps), ("k", k)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if n < 2:
            raise ValueError(f"n must be at least 2 (a segment needs two samples), got {n}")
        self.model, self.n, self.seed, self.steps, self.k, self.n_points, self.tol = model, n, seed, steps, k, n_points, tol
        self.memo, self.cache = Memo(256), cache
        self.timesteps: list[int] = [int(t) for t in ddim_timesteps(model, steps) if t > 0]

    def floor(self, t: int, i: int) -> float:
        """Grassmann distance between two local bases of sample i at t from different starts."""

        def compute() -> float:
            x = self.x_t(t, i)
            b0, b1 = (cached_basis(self.model, x, t, self.k, tol=self.tol, seed=s, cache=self.cache) for s in (0, 1))
            return grassmann_distance(b0, b1)

        return self.memo.get(("floor", t, i), compute)

    def adopt_curvedness(self, c: Any, *, a: int, b: int, t: int) -> None:
        """Use a :func:`curvedness` computed elsewhere (a notebook's plain call) as this state's
        value for the segment from sample ``a`` to sample ``b`` at ``t``. It must be the one
        :meth:`view` would compute: this t, k, n_points and tolerance, seed 0, and the same segment
        (its length ``chord_x`` equals ||x_t(b) - x_t(a)||: adopt the trajectory first); anything
        else is a ValueError and leaves the state as it was."""
        chord = float((self.x_t(t, b) - self.x_t(t, a)).double().norm())
        want = {"t": t, "k": self.k, "n_points": self.n_points, "tol": self.tol, "seed": 0, "method": "local"}
        wrong = meta_mismatch(getattr(c, "meta", None), want)
        if not abs(float(getattr(c, "chord_x", float("nan"))) - chord) <= 1e-6 * chord or chord == 0:  # NaN: wrong
            wrong["chord_x"] = getattr(c, "chord_x", None)
        if wrong:
            raise ValueError(f"this curvedness is not the dashboard's segment {a} -> {b} at t={t} ({want}, chord "
                             f"{chord:.6g}): it has {wrong}; compute it on state.x_t({t}, {a}) and "
                             f"state.x_t({t}, {b}) with the state's k, n_points and tol, or let the dashboard "
                             "compute its own")
        self.memo.get(("curvedness", a, b, t), lambda: c)

    def view(self, *, a: int, b: int, t: int, progress: Report | None = None) -> CurvednessView:

        if a == b:
            raise ValueError(f"pick two different samples (a and b are both {a})")
        xa, xb = self.x_t(t, a), self.x_t(t, b)
        if progress:
            progress(0, 3, "curvedness")
        c = self.memo.get(("curvedness", a, b, t), lambda: curvedness(
            self.model, xa, xb, t, k=self.k, n_points=self.n_points, tol=self.tol, progress=False))
        if progress:
            progress(1, 3, "flat floor")
        floor = self.floor(t, a)
        if progress:
            progress(2, 3, "segment images")

        def segment() -> torch.Tensor:
            s = torch.linspace(0, 1, self.n_points).view(-1, *[1] * (xa.dim() - 1)).to(xa)
            with torch.no_grad():
                return denoise(self.model, xa + s * (xb - xa), t, steps=self.steps, progress=False).result

        seg = self.memo.get(("segment", a, b, t), segment)
        return CurvednessView(a, b, t, c, seg, floor, (self.n_points - 1) * floor / c.chord_x)


def draw_curvedness_view(fig: Any, view: CurvednessView, part: str) -> None:
    """``"segment"``: the denoised points of the segment; ``"profile"``: the rotation between
    consecutive tangent spaces along the segment against the flat floor, and the three values.

    >>> import diffgeo
    >>> from matplotlib.figure import Figure
    >>> state = CurvednessState(diffgeo.load("shapes"), n=2, steps=4, k=2, n_points=3)
    >>> fig = Figure()
    >>> draw_curvedness_view(fig, state.view(a=0, b=1, t=500), "profile")
    >>> len(fig.axes)
    1
    """

    c = view.curvedness
    if part == "segment":
        p = view.segment.shape[0]
        draw_images(fig.subplots(), view.segment, nrow=p, captions=[f"s={i / (p - 1):.2f}" for i in range(p)],
                    title=f"segment from sample {view.a} to sample {view.b} at t={view.t}, denoised")
    elif part == "profile":
        ax = fig.subplots()
        p = len(c.steps) + 1
        mids = [(i + 0.5) / (p - 1) for i in range(p - 1)]
        draw_curves(ax, mids, {"tangent-space rotation per step": c.steps.tolist(),
                               "flat floor (solver noise)": [view.floor] * len(mids)},
                    xlabel="position s along the segment", ylabel="Grassmann distance (rad)",
                    title=(f"rotation per step: mean {float(c.steps.mean()):.2f} rad (flat floor {view.floor:.2f} rad)\n"
                           f"= {c.rotation:.3g} rad per unit of ||x|| (flat: {view.floor_rotation:.3g}); "
                           f"off-tangent {c.off_tangent:.2f}, excess length {c.excess_length:.3f}"))
        ax.set_ylim(0.0, max(float(c.steps.max()), view.floor) * 1.15 + 1e-6)
    else:
        raise ValueError(f"part must be 'segment' or 'profile', got {part!r}")


def curvedness_dashboard(model: Any = None, *, state: CurvednessState | None = None, t: int | None = None,
                         **state_kwargs: Any) -> Any:
    """Two sample pickers and a timestep slider over a :class:`CurvednessState` (``model``
    default: embedded ``shapes``); ``t``: the slider's initial timestep (default: the middle one).

    >>> import diffgeo
    >>> dash = curvedness_dashboard(diffgeo.load("shapes"), n=2, steps=4, k=2, n_points=3)
    >>> dash.last_ok, sorted(dash.controls), sorted(dash.figures)
    (True, ['a', 'b', 't'], ['notice', 'profile', 'segment'])
    """

    state = state_for(CurvednessState, model, state, state_kwargs)

    class CurvednessDashboard(Dashboard):
        title = "Curvedness between two samples"

        def refresh(self, change: Any = None) -> bool:
            # "to" never offers the sample picked in "from" (a segment needs two samples)
            a, b = self.controls.get("a"), self.controls.get("b")
            if a is not None and b is not None and not self._busy:
                options = [(f"sample {i}", i) for i in range(state.n) if i != a.value]
                if [o[1] for o in b.options] != [o[1] for o in options]:
                    self._busy = True
                    try:
                        value = b.value if b.value != a.value else options[0][1]
                        b.options = options
                        b.value = value
                    finally:
                        self._busy = False
            return super().refresh(change)

        def frames(self, v: dict[str, Any]):
            self.view = state.view(a=v["a"], b=v["b"], t=v["t"], progress=self.report)
            yield {"segment": figure_png(lambda f: draw_curvedness_view(f, self.view, "segment"),
                                         size=(1.1 * state.n_points + 0.5, 1.9)),
                   "profile": figure_png(lambda f: draw_curvedness_view(f, self.view, "profile"), size=(6.5, 3.4)),
                   "notice": ("<b>What to notice:</b> where the rotation per step rises above the flat floor, the "
                              "tangent space turns along the segment (the map x_t -> h bends there); the segment's "
                              "images show which change of the scene goes with it. <b>Reference:</b> the flat floor "
                              f"({self.view.floor:.2f} rad per step) is what a flat map reads with the same solver.")}

    first_t = state.timesteps[len(state.timesteps) // 2] if t is None else t
    if first_t not in state.timesteps:
        raise ValueError(f"t must be one of the dashboard's timesteps {state.timesteps}, got {t!r}")
    dash = CurvednessDashboard()
    dash.state = state
    w = widgets()
    options = [(f"sample {i}", i) for i in range(state.n)]
    dash.controls = {"a": w.Dropdown(options=options, value=0, description="from"),
                     "b": w.Dropdown(options=options[1:], value=1, description="to"),
                     "t": slider("select", options=state.timesteps, value=first_t, description="timestep t")}
    c = dash.controls
    dash.figures["notice"] = w.HTML()
    dash.assemble([w.HBox([c["a"], c["b"], c["t"]])],
                  figures=[dash.image("segment"), dash.image("profile"), dash.figures["notice"]])
    return dash
