"""Attribute traversals, live: x-space editing (Park et al.: move x_t along a direction at one
timestep t_edit, then denoise) beside h-space editing with the asymmetric reverse process
(Asyrp, Kwon et al.), for several samples (or inverted real images) at once, each image captioned
by what the model's reader sees in it.

:class:`TraversalState` holds the computation and its caches and knows nothing of widgets:
the trajectory of each source (sampled, or the inversion of real scenes) is computed once; the
local basis of each image at each t_edit once; each edited result once per parameter set. A
strength move therefore costs one x-space edit (:func:`diffgeo.editing.xspace.edit_x`, DDIM from
t_edit) and one Asyrp run (:func:`diffgeo.editing.hspace.asyrp`); the coarse preview (the x0 the model
predicts right after the x-space edit, one forward pass) is shown first.
:func:`traversal_dashboard` is the ipywidgets front end.

>>> import diffgeo
>>> state = TraversalState(diffgeo.load("shapes"), n=1, steps=4, k=2)
>>> state.timesteps, state.direction_names()[:3]
([750, 500, 250, 0], ['local basis v1', 'local basis v2', 'mean difference: red -> blue'])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

import diffgeo.editing as editing
import diffgeo.editing.directions as directions
from diffgeo.data.shapes import make_scenes, render, sample_factors
from diffgeo.geometry.basis import local_basis
from diffgeo.models.zoo import entry
from diffgeo.sampling.ddim import ddim_timesteps, denoise, sample
from diffgeo.sampling.inversion import invert
from diffgeo.viz.draw import draw_images
from diffgeo.widgets._core import Memo, Stages, figure_png, state_for
from diffgeo.widgets._readout import readout
from diffgeo.widgets._ui import Dashboard, slider, widgets

__all__ = ["TraversalState", "TraversalView", "traversal_dashboard", "SOURCES", "draw_traversal"]

SOURCES = ("samples", "real scenes (inverted)")
Report = Callable[[int, int, str], None]


@dataclass(frozen=True)
class TraversalView:
    """What the dashboard shows for one parameter set.

    x_images: (N, C, H, W) results of the x-space edit (the preview when ``preview``), or None
    (``x_note`` says why: an h-only direction);
    h_images: (N, C, H, W) results of Asyrp, or None (``h_note`` says why);
    captions_x / captions_h and marks_x / marks_h: the reader's readout (None without a reader).
    """

    strength: float
    t_edit: int
    t_boost: int
    direction: str
    source: str
    preview: bool
    x_images: torch.Tensor | None
    h_images: torch.Tensor | None
    h_note: str
    captions_x: list[str] | None
    marks_x: list[bool] | None
    captions_h: list[str] | None
    marks_h: list[bool] | None
    x_note: str = ""


#: Mean-difference directions offered for models read by the shapes reader:
#: name -> (factor, class index of group a, of group b) in diffgeo.data.shapes' SHAPES / COLOURS.
MEAN_DIFFERENCES = {"mean difference: red -> blue": ("colour", 0, 4),
                    "mean difference: circle -> square": ("shape", 0, 1)}


def _reads_shapes(model: Any) -> bool:

    return entry(model).reader == "shapes"


class _HOnly(Exception):
    """The direction lives in h only (no x-space edit along it)."""


class _FirstStep(Exception):
    """Stops a denoise call after its first step (the preview needs only that step's x0)."""


class TraversalState:
    """The computation behind the traversal dashboard (see the module docstring).

    model: a :class:`Model`; n: images edited at once; seed: of the samples (and of the
    real scenes, drawn with ``seed + 10_000``, a seed range the training never used); steps: the
    DDIM grid; k: local basis vectors offered as directions; preview: show the coarse preview
    (the predicted x0 at the edited x_t, one forward pass) before the full result; prompt: text
    models' prompt for sampling, Jacobians and edits (default ``""``, the empty one); tol: the
    local-basis tolerance (looser is faster). ``memo``
    counts hits and misses of every cached piece.
    """

    def __init__(self, model: Any, *, n: int = 3, seed: int = 0, steps: int = 10, k: int = 4,
                 preview: bool = True, basis_seed: int = 0, prompt: str | None = None, tol: float = 1e-3,
                 memo_size: int = 256):

        for name, value in (("n", n), ("steps", steps), ("k", k)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.model, self.n, self.seed, self.steps, self.k = model, n, seed, steps, k
        self.preview, self.basis_seed, self.tol = preview, basis_seed, tol
        # text models: one prompt for sampling, the Jacobians and the edits ("": the empty prompt)
        self.prompt = prompt if prompt is not None or not getattr(model, "is_conditional", False) else ""
        self.memo = Memo(memo_size)
        self.timesteps: list[int] = [int(t) for t in ddim_timesteps(model, steps)]

    # -- cached pieces -------------------------------------------------------------------------
    def anchors(self, source: str = "samples", progress: Report | None = None) -> dict[int, torch.Tensor]:
        """x_t (n, *x_shape) at every grid timestep for ``source``: the DDIM sampling path of the
        samples, or the inversion path of real scenes."""
        if source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {source!r}")

        def compute() -> dict[int, torch.Tensor]:

            if progress:
                progress(0, 1, "sampling" if source == SOURCES[0] else "inverting")
            with torch.no_grad():
                if source == SOURCES[0]:
                    traj = sample(self.model, self.n, steps=self.steps, seed=self.seed, prompt=self.prompt,
                                          progress=False)
                else:

                    if tuple(self.model.x_shape) != (3, 32, 32):
                        raise ValueError(f"real scenes are 3x32x32 shapes images; model {self.model.name!r} takes "
                                         f"{tuple(self.model.x_shape)}: use source='samples'")
                    images = make_scenes(self.n, seed=self.seed + 10_000).images
                    traj = invert(self.model, images.to(self.model.device, self.model.dtype),
                                          steps=self.steps, prompt=self.prompt, progress=False)
            return {int(t): traj.xs[i] for i, t in enumerate(traj.timesteps.tolist()) if t in self.timesteps}

        return self.memo.get(("anchors", source), compute)

    def basis(self, source: str, t_edit: int, i: int) -> Any:
        """The local basis (k vectors) of image i at t_edit."""

        x = self.anchors(source)[t_edit][i:i + 1]
        return self.memo.get(("basis", source, t_edit, i), lambda: local_basis(
            self.model, x, t_edit, self.k, prompt=self.prompt, seed=self.basis_seed, tol=self.tol, progress=False))

    def direction_names(self) -> list[str]:
        """The direction menu: local basis vectors (x: each image's v_j; h: u_j of the first
        image's basis), and for models with the shapes reader h-space directions from
        :mod:`diffgeo.editing.directions` (mean difference of two colour / shape groups, PCA of h)."""
        names = [f"local basis v{j + 1}" for j in range(self.k)]
        if _reads_shapes(self.model):
            names += list(MEAN_DIFFERENCES)
        names += [f"PCA of h, component {c + 1}" for c in range(2)]
        return names

    def _index(self, direction: str) -> int:
        names = self.direction_names()
        if direction not in names:
            raise ValueError(f"direction must be one of {names}, got {direction!r}")
        if not direction.startswith("local basis v"):
            raise _HOnly(direction)
        return int(direction.rsplit("v", 1)[1]) - 1

    def x_direction(self, direction: str, t_edit: int, source: str = "samples",
                    progress: Report | None = None) -> torch.Tensor:
        """Unit directions (n, *x_shape) in x at t_edit, one per image (each its own local basis)."""
        j = self._index(direction)
        stages = Stages(progress, self.n)
        rows = []
        for i in range(self.n):
            if ("basis", source, t_edit, i) not in self.memo:
                stages.step(f"basis {i + 1}/{self.n}")
            rows.append(self.basis(source, t_edit, i).v[j])
        return torch.stack(rows)

    def h_direction(self, direction: str, t_edit: int, source: str = "samples") -> Any:
        """One :class:`diffgeo.editing.directions.Direction` in h shared by all images: u_j of the first
        image's local basis at t_edit, a mean difference of h between two groups of scenes, or a
        principal component of h over 8 seeded samples (per timestep)."""

        try:
            j = self._index(direction)
        except _HOnly:
            j = None
        if j is not None:
            return directions.tangent(self.basis(source, t_edit, 0), j, space="h", model=self.model.name)

        def compute() -> Any:
            if direction in MEAN_DIFFERENCES:

                factor, a, b = MEAN_DIFFERENCES[direction]
                f = sample_factors(16, seed=self.seed + 20_000)
                base = getattr(f, factor) * 0
                return directions.mean_difference(self.model, render(f.replace(**{factor: base + a})),
                                                  render(f.replace(**{factor: base + b})), steps=self.steps,
                                                  prompt=self.prompt)
            component = int(direction.rsplit(" ", 1)[1]) - 1
            x_T = torch.randn(8, *self.model.x_shape, generator=torch.Generator().manual_seed(self.seed + 30_000))
            return directions.pca(self.model, x_T.to(self.model.device, self.model.dtype), component, steps=self.steps,
                                  prompt=self.prompt)

        return self.memo.get(("h direction", direction), compute)

    def _check(self, t_edit: int, t_boost: int) -> None:
        if t_edit not in self.timesteps:
            raise ValueError(f"t_edit must be a timestep of the {self.steps}-step grid {self.timesteps}, got {t_edit!r}")
        if t_boost and t_boost >= t_edit:
            raise ValueError(f"t_boost ({t_boost}) must be below t_edit ({t_edit}), or 0 for no boosting")

    def x_edit(self, strength: float, t_edit: int, direction: str, source: str = "samples", *,
               t_boost: int = 0, progress: Report | None = None) -> torch.Tensor:
        """Clean images (n, *x_shape) from :func:`diffgeo.editing.xspace.edit_x`: x_t moved by
        ``strength`` along each image's direction at t_edit, then DDIM to the end (quality
        boosting below ``t_boost``, 0: off, noise seeded)."""

        key = ("x", source, float(strength), t_edit, direction, t_boost)

        def compute() -> torch.Tensor:
            x_t = self.anchors(source, progress)[t_edit]
            v = self.x_direction(direction, t_edit, source, progress)
            with torch.no_grad():
                return editing.edit_x(self.model, x_t, t_edit, v, strength=float(strength), steps=self.steps,
                                      t_boost=t_boost or None, seed=self.seed, prompt=self.prompt,
                                      progress=False).result

        return self.memo.get(key, compute)

    def x_preview(self, strength: float, t_edit: int, direction: str, source: str = "samples", *,
                  progress: Report | None = None) -> torch.Tensor:
        """The coarse preview of :meth:`x_edit`: the x0 that the model predicts at the edited
        x_t, i.e. the first ``x0_pred`` of the same ``denoise`` call (one forward pass)."""

        def compute() -> torch.Tensor:
            x_t = self.anchors(source, progress)[t_edit]
            v = self.x_direction(direction, t_edit, source, progress)
            first: list[torch.Tensor] = []

            def stop_after_first(step: dict) -> None:
                first.append(step["x0_pred"])
                raise _FirstStep

            with torch.no_grad():
                try:
                    denoise(self.model, x_t + float(strength) * v.to(x_t), t_edit, steps=self.steps,
                                    prompt=self.prompt, callback=stop_after_first, progress=False)
                except _FirstStep:
                    pass
            return first[0]

        return self.memo.get(("x0", source, float(strength), t_edit, direction), compute)

    def h_edit(self, strength: float, t_edit: int, t_boost: int, direction: str, source: str = "samples",
               progress: Report | None = None) -> tuple[torch.Tensor | None, str]:
        """Asyrp results (n, *x_shape) from each image's x_T, or (None, why not)."""

        key = ("h", source, float(strength), t_edit, t_boost, direction)

        def compute() -> torch.Tensor:
            anchors = self.anchors(source, progress)
            dh = self.h_direction(direction, t_edit, source)
            with torch.no_grad():
                return editing.asyrp(self.model, anchors[self.timesteps[0]], dh, strength=float(strength),
                                     t_edit=t_edit, t_boost=t_boost, steps=self.steps, seed=self.seed,
                                     prompt=self.prompt, progress=False).result

        return self.memo.get(key, compute), ""

    # -- one view ------------------------------------------------------------------------------
    def view(self, *, strength: float, t_edit: int, direction: str, t_boost: int = 0, source: str = "samples",
             preview: bool = False, progress: Report | None = None) -> TraversalView:
        """Everything the dashboard shows for these parameters (``preview``: the coarse x-space
        result only, see :meth:`x_preview`)."""
        self._check(t_edit, t_boost)
        x, x_note = None, ""
        try:
            if preview:
                x = self.x_preview(strength, t_edit, direction, source, progress=progress)
            else:
                x = self.x_edit(strength, t_edit, direction, source, t_boost=t_boost, progress=progress)
        except _HOnly:
            x_note = f"'{direction}' is a direction in h:\nx-space editing takes a local basis vector"
        if preview:
            h, note = None, "computing..."
        else:
            h, note = self.h_edit(strength, t_edit, t_boost, direction, source, progress)
        cx, mx = readout(self.model, x) if x is not None else (None, None)
        ch, mh = readout(self.model, h) if h is not None else (None, None)
        return TraversalView(float(strength), t_edit, t_boost, direction, source, preview, x, h, note, cx, mx, ch, mh,
                             x_note)


def draw_traversal(fig: Any, view: TraversalView, side: str) -> None:
    """Draw one side (``"x"`` or ``"h"``) of a view on a matplotlib figure with
    :func:`diffgeo.viz.draw.draw_images`.

    >>> import diffgeo
    >>> from matplotlib.figure import Figure
    >>> state = TraversalState(diffgeo.load("shapes"), n=1, steps=4, k=2)
    >>> fig = Figure()
    >>> draw_traversal(fig, state.view(strength=5.0, t_edit=500, direction="local basis v1"), "x")
    >>> len(fig.axes)
    1
    """

    ax = fig.subplots()
    if side == "x" and view.x_images is None:
        ax.set_axis_off()
        ax.text(0.5, 0.5, view.x_note, ha="center", va="center", fontsize=8, wrap=True)
    elif side == "x":
        what = "x-space (preview)" if view.preview else "x-space"
        draw_images(ax, view.x_images, nrow=view.x_images.shape[0], captions=view.captions_x, marks=view.marks_x,
                    title=f"{what}: {view.direction.replace('local basis ', '')} {view.strength:+.1f}, t={view.t_edit}")
    elif view.h_images is not None:
        draw_images(ax, view.h_images, nrow=view.h_images.shape[0], captions=view.captions_h, marks=view.marks_h,
                    title=f"Asyrp: {view.direction.replace('local basis ', 'u of ')} {view.strength:+.1f}, "
                          f"t_edit={view.t_edit}, t_boost={view.t_boost}")
    else:
        ax.set_axis_off()
        ax.text(0.5, 0.5, view.h_note, ha="center", va="center", fontsize=8, wrap=True)


def figure_size(n: int) -> tuple[float, float]:
    """Figure size (inches) of a row of ``n`` traversal images: 1.3 per image, at least 3.6 wide.

    >>> figure_size(1), figure_size(4)
    ((3.6, 2.2), (5.2, 2.2))
    """
    return (max(3.6, 1.3 * n), 2.2)


def traversal_dashboard(model: Any = None, *, state: TraversalState | None = None, strength_range: float = 30.0,
                        **state_kwargs: Any) -> Any:
    """The traversal dashboard (display it, or its ``.widget``). ``model`` (default: embedded
    ``shapes``) and ``state_kwargs`` build a :class:`TraversalState`, or pass ``state``.
    Controls: direction, strength (in units of ||v|| = 1 per image), t_edit, t_boost, source.

    >>> import diffgeo
    >>> dash = traversal_dashboard(diffgeo.load("shapes"), n=1, steps=4, k=2)
    >>> dash.last_ok, sorted(dash.figures), dash.controls["strength"].value
    (True, ['h', 'x'], 0.0)
    """

    state = state_for(TraversalState, model, state, state_kwargs)

    class TraversalDashboard(Dashboard):
        title = "Attribute traversal: x-space edit and Asyrp side by side"

        def frames(self, v: dict[str, Any]):
            kw = dict(strength=v["strength"], t_edit=v["t_edit"], direction=v["direction"], t_boost=v["t_boost"],
                      source=v["source"], progress=self.report)
            size = figure_size(state.n)
            if state.preview and ("x", v["source"], float(v["strength"]), v["t_edit"], v["direction"],
                                  v["t_boost"]) not in state.memo:
                self.view = state.view(preview=True, **kw)
                yield {"x": figure_png(lambda f: draw_traversal(f, self.view, "x"), size=size)}
            self.view = state.view(**kw)
            yield {"x": figure_png(lambda f: draw_traversal(f, self.view, "x"), size=size),
                   "h": figure_png(lambda f: draw_traversal(f, self.view, "h"), size=size)}

    dash = TraversalDashboard()
    dash.state = state
    w = widgets()
    middle = state.timesteps[(len(state.timesteps) - 1) // 2]
    dash.controls = {
        "direction": w.Dropdown(options=state.direction_names(), description="direction"),
        "strength": slider("float", min=-strength_range, max=strength_range, step=strength_range / 20, value=0.0,
                           description="strength"),
        "t_edit": slider("select", options=state.timesteps, value=middle, description="t_edit"),
        "t_boost": slider("select", options=[0] + [t for t in state.timesteps[::-1] if t > 0], value=0,
                          description="t_boost (0: off)"),
        "source": w.ToggleButtons(options=list(SOURCES), description="images"),
    }
    c = dash.controls
    x_img, h_img = dash.image("x"), dash.image("h")
    dash.assemble([w.HBox([c["direction"], c["source"]]), w.HBox([c["strength"], c["t_edit"], c["t_boost"]]),
                   w.HBox([x_img, h_img])])
    return dash
