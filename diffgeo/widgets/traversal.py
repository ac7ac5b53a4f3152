"""Attribute traversals, live: x-space editing (Park et al.: move x_t along a direction at one timestep
t_edit, then denoise) beside h-space editing with the asymmetric reverse process (Asyrp, Kwon et al.),
for several samples (or inverted real images) at once, each image captioned by what the model's reader sees.

:class:`TraversalState` holds the computation and its caches and knows nothing of widgets: the trajectory
of each source (sampled, or the inversion of real scenes) is computed once; the local basis of each image
at each t_edit once; each edited result once per parameter set. A strength move therefore costs one x-space
edit (:func:`diffgeo.editing.xspace.edit_x`, DDIM from t_edit) and one Asyrp run (:func:`diffgeo.editing.hspace.asyrp`);
the coarse preview (the x0 predicted right after the x-space edit, one forward pass) is shown first.
:func:`traversal_dashboard` is the ipywidgets front end.

>>> import diffgeo
>>> state = TraversalState(diffgeo.load("shapes"), n=1, steps=4, k=2)
>>> state.timesteps, [name for name in state.direction_names() if not name.startswith("named: ")][:3]
([750, 500, 250, 0], ['local basis v1', 'local basis v2', 'mean difference: red -> blue'])
"""

from __future__ import annotations

from typing import Any, Callable

import torch

import diffgeo.editing as editing
import diffgeo.editing.directions as directions
from diffgeo.editing.named import load_named, named_edit, named_info
from diffgeo.sampling.ddim import ddim_timesteps, denoise, sample
from diffgeo.sampling.inversion import invert
from diffgeo.widgets._core import Memo, Stages, check_trajectory, figure_png, state_for
from diffgeo.widgets._diskcache import cached_basis
from diffgeo.widgets._directions import group_direction, menu, named_name, named_summary
from diffgeo.widgets._readout import readout
from diffgeo.widgets._traversal_view import TraversalView, draw_traversal, figure_size, notice
from diffgeo.widgets._ui import Dashboard, slider, widgets
from diffgeo.widgets._units import (OLD_REAL, REAL, SAMPLES, boost_options, h_norms, path_anchors, real_images,
                                     relative_h, sources_for, x_scale)

__all__ = ["TraversalState", "TraversalView", "traversal_dashboard", "SOURCES", "draw_traversal"]

SOURCES = (SAMPLES, REAL)
Report = Callable[[int, int, str], None]


class _HOnly(Exception):
    """The direction lives in h only (no x-space edit along it)."""


class _FirstStep(Exception):
    """Stops a denoise call after its first step (the preview needs only that step's x0)."""


class TraversalState:
    """The computation behind the traversal dashboard (see the module docstring).

    model: a :class:`Model`; n: images edited at once; seed: of the samples (and of the real scenes, drawn
    with ``seed + 10_000``, a seed range the training never used); steps: the DDIM grid; k: local basis
    vectors offered as directions; preview: show the coarse preview (the predicted x0 at the edited x_t,
    one forward pass) before the full result; prompt: text models' prompt for sampling, Jacobians and
    edits (default ``""``, the empty one); tol: the local-basis tolerance (looser is faster); cache: a
    folder keeping the local bases across sessions (:func:`diffgeo.widgets._diskcache.cached_basis`).
    """

    def __init__(self, model: Any, *, n: int = 3, seed: int = 0, steps: int = 10, k: int = 4,
                 preview: bool = True, basis_seed: int = 0, prompt: str | None = None, tol: float = 1e-3,
                 memo_size: int = 256, cache: Any = None):
        for name, value in (("n", n), ("steps", steps), ("k", k)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.model, self.n, self.seed, self.steps, self.k = model, n, seed, steps, k
        self.preview, self.basis_seed, self.tol, self.cache = preview, basis_seed, tol, cache
        # text models: one prompt for sampling, the Jacobians and the edits ("": the empty prompt)
        self.prompt = prompt if prompt is not None or not getattr(model, "is_conditional", False) else ""
        self.memo, self.inversion_warning = Memo(memo_size), ""
        self.timesteps: list[int] = [int(t) for t in ddim_timesteps(model, steps)]

    # -- cached pieces -------------------------------------------------------------------------
    def sources(self) -> list[str]:
        """The image sources this model supports (:func:`diffgeo.widgets._units.sources_for`)."""
        return sources_for(self.model)

    def _source(self, source: str) -> str:
        source = REAL if source == OLD_REAL else source
        if source not in self.sources():
            raise ValueError(f"source must be one of {self.sources()} for model {self.model.name!r}, got {source!r}")
        return source

    def anchors(self, source: str = "samples", progress: Report | None = None) -> dict[int, torch.Tensor]:
        """x_t (n, *x_shape) at every grid timestep for ``source``: the DDIM sampling path of the
        samples, or the inversion path of real images of the model's training distribution."""
        source = self._source(source)

        def compute() -> dict[int, torch.Tensor]:
            if progress:
                progress(0, 1, "sampling" if source == SAMPLES else "inverting")
            with torch.no_grad():
                if source == SOURCES[0]:
                    traj = sample(self.model, self.n, steps=self.steps, seed=self.seed, prompt=self.prompt,
                                  progress=False)
                    self.memo.get(("reconstruction", source), lambda: traj.result)  # DDIM from x_T: the samples
                else:
                    images = self.real(source)
                    traj = invert(self.model, images, steps=self.steps, prompt=self.prompt, progress=False)
                    bad = sorted({int(i) for u in traj.meta.get("unconverged", []) for i in u.get("samples", [])})
                    self.inversion_warning = (f"inversion did not converge for image(s) {', '.join(map(str, bad))}: "
                                              "their regeneration can differ from the real image" if bad else "")
            return path_anchors(traj, self.timesteps)

        return self.memo.get(("anchors", source), compute)

    def adopt_samples(self, trajectory: Any) -> None:
        """Use a notebook's plain ``diffgeo.sample`` as the samples' path (checked: :func:`check_trajectory`)."""
        check_trajectory(trajectory, self.model, n=self.n, steps=self.steps, seed=self.seed, prompt=self.prompt)
        self.memo.get(("reconstruction", SAMPLES), lambda: trajectory.result)  # DDIM from x_T: the samples
        self.memo.get(("anchors", SAMPLES), lambda: path_anchors(trajectory, self.timesteps))

    def real(self, source: str = REAL) -> torch.Tensor:
        """The real images (n, *x_shape) that ``source`` inverts (drawn with ``seed + 10_000``)."""
        self._source(source)
        return self.memo.get("real", lambda: real_images(self.model, self.n, self.seed + 10_000).to(
            self.model.device, self.model.dtype))

    def originals(self, source: str = "samples") -> torch.Tensor:
        """What the edits start from (n, *x_shape): the unedited samples (DDIM from the same x_T),
        or the real images."""
        source = self._source(source)
        return self.real(source) if source == REAL else self.reconstruction(source)

    def reconstruction(self, source: str = "samples") -> torch.Tensor:
        """DDIM (n, *x_shape) from the source's x_T without an edit: the samples themselves, or
        real images regenerated from their inversion."""
        source = self._source(source)

        def compute() -> torch.Tensor:
            with torch.no_grad():
                return denoise(self.model, self.anchors(source)[self.timesteps[0]], self.timesteps[0],
                               steps=self.steps, prompt=self.prompt, progress=False).result

        return self.memo.get(("reconstruction", source), compute)

    def h_norms(self, source: str = "samples") -> dict[int, float]:
        """Mean ||h_t|| of the images at every grid timestep: the unit of Asyrp's strength."""
        source = self._source(source)
        return self.memo.get(("h norms", source), lambda: h_norms(self.model, self.anchors(source), self.prompt))

    def basis(self, source: str, t_edit: int, i: int) -> Any:
        """The local basis (k vectors) of image i at t_edit."""

        x = self.anchors(source)[t_edit][i:i + 1]
        return self.memo.get(("basis", source, t_edit, i), lambda: cached_basis(
            self.model, x, t_edit, self.k, prompt=self.prompt, seed=self.basis_seed, tol=self.tol, cache=self.cache))

    def direction_names(self) -> list[str]:
        """The direction menu (:func:`diffgeo.widgets._directions.menu`): the model's shipped named
        directions first, local basis vectors (x: each image's v_j; h: u_j of the first image's
        basis), mean differences of two colour / shape groups (shapes reader), PCA of h."""
        return menu(self.model, self.k)

    def _index(self, direction: str) -> int:
        names = self.direction_names()
        if direction not in names:
            raise ValueError(f"direction must be one of {names}, got {direction!r}")
        if not direction.startswith("local basis v") or named_name(direction):
            raise _HOnly(direction)
        return int(direction.rsplit("v", 1)[1]) - 1

    def x_direction(self, direction: str, t_edit: int, source: str = "samples",
                    progress: Report | None = None) -> torch.Tensor:
        """Unit directions (n, *x_shape) in x at t_edit, one per image (each its own local basis);
        the edits scale them by ``strength * ||x_t||``."""
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
        principal component of h over 8 seeded samples (per timestep), rescaled at each grid
        timestep to the images' mean ||h_t|| (:func:`diffgeo.widgets._units.relative_h`)."""
        return relative_h(self._raw_h_direction(direction, t_edit, source), self.h_norms(source))

    def _raw_h_direction(self, direction: str, t_edit: int, source: str = "samples") -> Any:
        try:
            j = self._index(direction)
        except _HOnly:
            j = None
        if j is not None:
            return directions.tangent(self.basis(source, t_edit, 0), j, space="h", model=self.model.name)

        return self.memo.get(("h direction", direction), lambda: group_direction(
            self.model, direction, seed=self.seed, steps=self.steps, prompt=self.prompt))

    def named(self, strength: float, t_edit: int, direction: str, source: str = "samples") -> tuple[torch.Tensor, str]:
        """A named direction's edit (n, *x_shape) from each image's x_T by ``named_edit`` at this t_edit
        and steps, and its space: strength is relative to the shipped one (``strength / DEFAULT_STRENGTH``
        times it: the default reproduces it; named_edit rescales h edits to the steps)."""
        name = named_name(direction)
        row = {**named_info(self.model.name, name), "t_edit": t_edit}  # its steps: named_edit rescales h edits
        key = ("named", self._source(source), float(strength), t_edit, name)
        x_T = self.anchors(source)[self.timesteps[0]]
        return self.memo.get(key, lambda: named_edit(self.model, x_T, load_named(self.model.name, name), info=row,
                                                     strength=float(row["strength"]) * strength / DEFAULT_STRENGTH,
                                                     steps=self.steps)[1]), row["space"]

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

        source = self._source(source)
        key = ("x", source, float(strength), t_edit, direction, t_boost)

        def compute() -> torch.Tensor:
            x_t = self.anchors(source, progress)[t_edit]
            v = self.x_direction(direction, t_edit, source, progress) * x_scale(x_t)
            with torch.no_grad():
                return editing.edit_x(self.model, x_t, t_edit, v, strength=float(strength), steps=self.steps,
                                      t_boost=t_boost or None, seed=self.seed, prompt=self.prompt,
                                      progress=False).result

        return self.memo.get(key, compute)

    def x_preview(self, strength: float, t_edit: int, direction: str, source: str = "samples", *,
                  progress: Report | None = None) -> torch.Tensor:
        """The coarse preview of :meth:`x_edit`: the x0 that the model predicts at the edited
        x_t, i.e. the first ``x0_pred`` of the same ``denoise`` call (one forward pass)."""
        source = self._source(source)

        def compute() -> torch.Tensor:
            x_t = self.anchors(source, progress)[t_edit]
            v = self.x_direction(direction, t_edit, source, progress) * x_scale(x_t)
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
        source = self._source(source)
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
        x = h = None
        if named_name(direction) and direction in self.direction_names():
            images, space = self.named(strength, t_edit, direction, source)
            x, h = (images, None) if space == "x" else (None, images)
            other = "Asyrp takes an h" if space == "x" else "x-space editing takes an x"
            x_note = note = f"{named_summary(self.model.name, named_name(direction))}\n({other} direction; no t_boost)"
            preview = False
        else:
            try:
                x_note = ""
                x = (self.x_preview(strength, t_edit, direction, source, progress=progress) if preview else
                     self.x_edit(strength, t_edit, direction, source, t_boost=t_boost, progress=progress))
            except _HOnly:
                x_note = f"'{direction}' is a direction in h:\nx-space editing takes a local basis vector"
            h, note = (None, "computing...") if preview else self.h_edit(strength, t_edit, t_boost, direction,
                                                                         source, progress)
        cx, mx = readout(self.model, x) if x is not None else (None, None)
        ch, mh = readout(self.model, h) if h is not None else (None, None)
        originals = self.originals(source)
        inversion = rmse = None
        if self._source(source) == REAL:
            inversion = self.reconstruction(source)
            rmse = ((inversion - originals).flatten(1).pow(2).mean(1).sqrt()).tolist()
        return TraversalView(float(strength), t_edit, t_boost, direction, source, preview, x, h, note, cx, mx, ch, mh,
                             x_note, originals, readout(self.model, originals)[0], inversion, rmse,
                             self.inversion_warning if inversion is not None else "")


#: The default strength (relative units, :mod:`diffgeo.widgets._units`) and its range. Measured on `shapes`
#: (20 steps, t_edit 500, 4 samples): 0.25 changes the reader's reading in 1-4 of 4 images for every
#: direction type (local basis, mean difference) on both sides; 1.0 moves x_t by its whole norm.
DEFAULT_STRENGTH, STRENGTH_RANGE = 0.25, 1.0


def traversal_dashboard(model: Any = None, *, state: TraversalState | None = None,
                        strength_range: float = STRENGTH_RANGE, strength: float = DEFAULT_STRENGTH,
                        direction: str | None = None, **state_kwargs: Any) -> Any:
    """The traversal dashboard (display it, or its ``.widget``). ``model`` (default: embedded
    ``shapes``) and ``state_kwargs`` build a :class:`TraversalState`, or pass ``state``.
    Controls: direction, strength (relative: the edit moves x_t, or h_t, by ``strength`` times
    its own norm; initial value ``strength``), t_edit, t_boost (only values below t_edit are
    offered), images (only the sources this model supports). ``direction``: the initial one
    (default: the first shipped named direction, at its own t_edit; else local basis v1).

    >>> import diffgeo
    >>> dash = traversal_dashboard(diffgeo.load("shapes"), n=1, steps=4, k=2)
    >>> dash.last_ok, sorted(dash.figures), dash.controls["strength"].value
    (True, ['h', 'notice', 'original', 'x'], 0.25)
    """
    if not (isinstance(strength_range, (int, float)) and 0 < strength_range < float("inf")):
        raise ValueError(f"strength_range must be a positive number, got {strength_range!r}")
    if not (isinstance(strength, (int, float)) and abs(strength) <= strength_range):
        raise ValueError(f"strength must be a number within +-strength_range ({strength_range}), got {strength!r}")
    state = state_for(TraversalState, model, state, state_kwargs)

    class TraversalDashboard(Dashboard):
        title = "Attribute traversal: original, x-space edit and Asyrp side by side"

        def frames(self, v: dict[str, Any]):
            kw = dict(strength=v["strength"], t_edit=v["t_edit"], direction=v["direction"], t_boost=v["t_boost"],
                      source=v["source"], progress=self.report)
            rows = 2 if v["source"] != SAMPLES else 1
            size = figure_size(state.n)
            key = ("x", v["source"], float(v["strength"]), v["t_edit"], v["direction"], v["t_boost"])
            if state.preview and not named_name(v["direction"]) and key not in state.memo:
                self.view = state.view(preview=True, **kw)
                yield {"x": figure_png(lambda f: draw_traversal(f, self.view, "x"), size=size)}
            self.view = state.view(**kw)
            yield {"original": figure_png(lambda f: draw_traversal(f, self.view, "original"),
                                          size=figure_size(state.n, rows)),
                   "x": figure_png(lambda f: draw_traversal(f, self.view, "x"), size=size),
                   "h": figure_png(lambda f: draw_traversal(f, self.view, "h"), size=size),
                   "notice": notice(self.view)}

        def refresh(self, change: Any = None) -> bool:
            # t_boost is offered only below t_edit: relink its options before computing
            boost = self.controls.get("t_boost")
            if boost is not None and not self._busy:
                options = boost_options(state.timesteps, self.controls["t_edit"].value)
                if list(boost.options) != options:
                    self._busy = True
                    try:
                        value = boost.value if boost.value in options else 0
                        boost.options = options
                        boost.value = value
                    finally:
                        self._busy = False
            return super().refresh(change)

    dash = TraversalDashboard()
    dash.state = state
    w = widgets()
    names = state.direction_names()
    direction = names[0] if direction is None else direction
    if direction not in names:
        raise ValueError(f"direction must be one of {names}, got {direction!r}")
    middle = state.timesteps[(len(state.timesteps) - 1) // 2]
    if named_name(direction):  # a named direction starts at its own t_edit (the grid's nearest)
        shipped = int(named_info(state.model.name, named_name(direction))["t_edit"])
        middle = min(state.timesteps[:-1] or state.timesteps, key=lambda t: abs(t - shipped))
    dash.controls = {
        "direction": w.Dropdown(options=names, value=direction, description="direction",
                                layout=w.Layout(width="360px")),
        "strength": slider("float", min=-strength_range, max=strength_range, step=strength_range / 20,
                           value=float(strength), description="strength (x ||x_t|| or ||h_t||)",
                           readout_format=".2f", layout=w.Layout(width="440px")),
        "t_edit": slider("select", options=state.timesteps[:-1] or state.timesteps, value=middle,
                         description="t_edit"),
        "t_boost": slider("select", options=boost_options(state.timesteps, middle), value=0,
                          description="t_boost (0: off)"),
        "source": w.ToggleButtons(options=state.sources(), description="images",
                                  style={"button_width": "auto"}),
    }
    c = dash.controls
    notes = w.HTML()
    dash.figures["notice"] = notes
    dash.assemble([w.HBox([c["direction"], c["source"]]), w.HBox([c["strength"], c["t_edit"], c["t_boost"]])],
                  figures=[w.HBox([dash.image("original"), dash.image("x"), dash.image("h")]), notes])
    return dash

