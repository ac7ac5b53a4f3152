"""Text conditions: what a prompt does to the tangent space of a text-conditioned model.

One x_T, sampled under the first prompt with a guidance scale; at a chosen timestep the local
basis of x_t (on each prompt's conditional branch) under every prompt; the Grassmann distances
between those bases against how similar the prompts are to the U-Net (cosine similarity of their
conditioning embeddings, ``Model.encode_prompt``, flattened); the distance between the first
prompt's basis and the unconditional one (the empty prompt) over all timesteps; and the samples
every prompt gives from the same x_T.

:class:`TextState` computes and caches; :func:`text_dashboard` adds prompt boxes with presets,
a timestep slider and a guidance slider.

>>> import diffgeo
>>> state = TextState(diffgeo.load("shapes-text"), steps=3, k=2)
>>> sim = state.similarity(["a red circle", "a red circle", "a blue square"])
>>> round(float(sim[0, 1]), 4), bool(sim[0, 2] < 1)
(1.0, True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Callable, Sequence

import torch

from diffgeo.geometry.subspaces import distance_matrix, grassmann_distance
from diffgeo.models.conditioning import default_guidance
from diffgeo.models.zoo import entry
from diffgeo.sampling.ddim import ddim_timesteps, sample
from diffgeo.viz.draw import draw_curves, draw_images, draw_matrix, draw_scatter
from diffgeo.widgets._core import Memo, Stages, figure_png, meta_mismatch, same_tensor, state_for
from diffgeo.widgets._diskcache import cached_basis
from diffgeo.widgets._reference import GUIDANCE_MAX, random_subspace_distance, sampler_settings
from diffgeo.widgets._ui import Dashboard, slider, widgets

__all__ = ["TextState", "TextView", "text_dashboard", "draw_text_view", "PRESETS", "presets_for"]

Report = Callable[[int, int, str], None]

#: Preset prompt sets of the shapes text model (the first prompt drives the trajectory).
PRESETS: dict[str, list[str]] = {
    "paraphrases": ["a red circle", "a crimson disk", "a red round shape"],
    "colours": ["a red circle", "a blue circle", "a green circle"],
    "shapes": ["a red circle", "a red square", "a red triangle"],
    "partial captions": ["a small yellow triangle on the left", "a yellow triangle", "a triangle"],
}
#: Preset prompt sets of the digits model.
DIGIT_PRESETS: dict[str, list[str]] = {
    "digits": ["a handwritten 3", "a handwritten 8", "a handwritten 1"],
    "phrasings": ["a handwritten 3", "the digit 3", "the number three"],
}


def presets_for(model: Any) -> dict[str, list[str]]:
    """The preset prompt sets that apply to ``model``: the shapes presets for models read by the
    shapes reader, the digit presets for ``digits``, else triples of the registry's analysis
    prompts (:mod:`diffgeo.models.zoo`).

    >>> list(presets_for("digits")), list(presets_for("shapes-text"))[:2]
    (['digits', 'phrasings'], ['paraphrases', 'colours'])
    """
    e = entry(model)
    if e.reader == "shapes":
        return dict(PRESETS)
    if e.reader == "digits":
        return dict(DIGIT_PRESETS)
    p = list(e.analysis_prompts or ())
    return {f"prompts {i // 3 + 1}": p[i:i + 3] for i in range(0, len(p) - 2, 3)}


@dataclass(frozen=True)
class TextView:
    """prompts (P,), t, guidance_scale; distances (P, P) Grassmann distances between the prompts'
    bases at t; similarity (P, P) cosine similarity of the prompts' embeddings; cond_vs_uncond
    {t': distance between the first prompt's basis and the unconditional one at t'}; samples
    (P, *x_shape): each prompt's sample from the shared x_T; k: basis size; random_distance: the
    mean distance between random k-dimensional subspaces of x's space (the "nothing in common" reference)."""

    prompts: list[str]
    t: int
    guidance_scale: float
    distances: torch.Tensor
    similarity: torch.Tensor
    cond_vs_uncond: dict[int, float]
    samples: torch.Tensor
    k: int = 1
    random_distance: float = float("nan")


class TextState:
    """A text model, the ``seed`` of the shared x_T, ``steps`` DDIM steps, k basis vectors, the
    local-basis tolerance ``tol`` (looser is faster); ``cache``: a folder that keeps the bases
    across sessions (:func:`diffgeo.widgets._diskcache.cached_basis`; None: memory only)."""

    def __init__(self, model: Any, *, seed: int = 3, steps: int = 10, k: int = 4, basis_seed: int = 0,
                 tol: float = 1e-3, cache: Any = None):

        if not getattr(model, "is_conditional", False):
            raise ValueError(f"model {getattr(model, 'name', model)!r} takes no prompts: use a text model such as "
                             "load('shapes-text')")
        for name, value in (("steps", steps), ("k", k)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.model, self.seed, self.steps, self.k, self.basis_seed, self.tol = model, seed, steps, k, basis_seed, tol
        self.cache = cache
        self.memo = Memo(1024)
        self.timesteps: list[int] = [int(t) for t in ddim_timesteps(model, steps) if t > 0]

    def noise(self) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed)
        return torch.randn(1, *self.model.x_shape, generator=g).to(self.model.device, self.model.dtype)

    def trajectory(self, prompt: str, guidance_scale: float) -> Any:

        def compute() -> Any:
            with torch.no_grad():
                return sample(self.model, noise=self.noise(), prompt=prompt, guidance_scale=guidance_scale,
                              steps=self.steps, progress=False, **sampler_settings(self.model))

        return self.memo.get(("trajectory", prompt, float(guidance_scale)), compute)

    def basis(self, path_prompt: str, guidance_scale: float, t: int, prompt: str) -> Any:
        """Local basis, on ``prompt``'s branch, of x_t of the path sampled under ``path_prompt``."""

        def compute() -> Any:
            traj = self.trajectory(path_prompt, guidance_scale)
            x = traj.xs[traj.timesteps.tolist().index(t)]
            return cached_basis(self.model, x, t, self.k, prompt=prompt, seed=self.basis_seed, tol=self.tol,
                                cache=self.cache)

        return self.memo.get(("basis", path_prompt, float(guidance_scale), t, prompt), compute)

    def adopt(self, trajectory: Any, *, index: int = 0, bases: Sequence[Any] = ()) -> None:
        """Use what a notebook's plain calls computed instead of computing it again: sample
        ``index`` of ``trajectory`` becomes the path of its prompt and guidance scale, and each of
        ``bases`` (local bases of that path's x_t, on any prompt's branch) its basis. Checked: the
        sample starts from this state's x_T (bit for bit) with this state's steps and sampler
        settings (:func:`sampler_settings`), and each basis is of that path's x_t at a grid
        timestep with this state's k, tol and seed; anything else is a ValueError and leaves the
        state as it was."""

        def one(p: Any, i: int) -> Any:
            if isinstance(p, (list, tuple)):
                return p[i] if len(p) > i else p[0]
            return p

        meta = dict(getattr(trajectory, "meta", None) or {})
        xs = trajectory.xs[:, index:index + 1]
        path, w = one(meta.get("prompt"), index), meta.get("guidance_scale")
        want = {"model": self.model.name, "direction": "sample", "steps": self.steps, "eta": 0.0,
                "branch": "cfg", **sampler_settings(self.model)}
        wrong = meta_mismatch(meta, want)
        if not isinstance(path, str) or w is None:
            wrong["prompt"] = meta.get("prompt")
        if xs.shape[1] != 1 or not torch.equal(xs[0].to(self.model.device, self.model.dtype), self.noise()):
            wrong["x_T"] = "another x_T"
        found = []
        grid = [int(t) for t in trajectory.timesteps.tolist()]
        for b in bases:
            t = int(b.meta.get("t", -1))
            if t not in self.timesteps or t not in grid:
                wrong["basis t"] = t
                continue
            bad = meta_mismatch(b.meta, {"k": self.k, "tol": self.tol, "seed": self.basis_seed})
            if bad or not same_tensor(b.x, xs[grid.index(t)]):
                wrong[f"basis at t={t}"] = bad or "another x_t"
            found.append((t, one(b.meta.get("prompt"), 0) or "", b))
        if wrong:
            raise ValueError(f"these results are not the text dashboard's ({want}, x_T of seed {self.seed}, "
                             f"k={self.k}, tol={self.tol}): they have {wrong}; compute them as the notebook's calls do "
                             "or let the dashboard compute its own")
        w = float(w)
        self.memo.get(("trajectory", path, w), lambda: replace(trajectory, xs=xs, x0_preds=trajectory.x0_preds[
            :, index:index + 1], meta={**meta, "prompt": [path]}))
        for t, prompt, b in found:
            self.memo.get(("basis", path, w, t, prompt), lambda b=b: b)

    def curve_timesteps(self, t: int, points: int = 6) -> list[int]:
        """The timesteps of the conditional-vs-unconditional curve: ``points`` evenly spread over
        the grid, and t (a coarse curve: each point costs two local bases)."""
        idx = torch.linspace(0, len(self.timesteps) - 1, min(points, len(self.timesteps))).round().long().tolist()
        return sorted({self.timesteps[i] for i in idx} | {t}, reverse=True)

    def similarity(self, prompts: Sequence[str]) -> torch.Tensor:
        """Cosine similarity (P, P) of the prompts' conditioning embeddings, flattened."""
        e = self.model.encode_prompt(list(prompts)).flatten(1).double()
        e = e / e.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return (e @ e.T).cpu()

    def view(self, *, prompts: Sequence[str], t: int, guidance_scale: float, over_t: bool = True,
             progress: Report | None = None) -> TextView:
        """Everything the dashboard shows; ``over_t=False`` skips the conditional-vs-unconditional
        curve (two bases per point: the longest part of a first view)."""

        if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
            raise TypeError(f"prompts must be a list of strings, e.g. ['a red circle', 'a blue circle'], got {prompts!r}")
        prompts = list(prompts)
        if len(prompts) < 2:
            raise ValueError(f"give at least two prompts, got {prompts!r}")
        if t not in self.timesteps:
            raise ValueError(f"t must be one of {self.timesteps}, got {t!r}")
        p0, w = prompts[0], float(guidance_scale)
        curve = self.curve_timesteps(t) if over_t else []
        wanted = [(t, p) for p in prompts] + [(u, q) for u in curve for q in (p0, "")]
        todo = [key for key in dict.fromkeys(wanted) if ("basis", p0, w, *key) not in self.memo]
        stages = Stages(progress, len(todo) + 1)
        bases = {}
        for key in dict.fromkeys(wanted):
            if key in todo:
                stages.step(f"basis t={key[0]}")
            bases[key] = self.basis(p0, w, *key)
        stages.step("samples")
        dist = distance_matrix([bases[t, p] for p in prompts])
        cond = {u: grassmann_distance(bases[u, p0], bases[u, ""]) for u in curve}

        def samples() -> torch.Tensor:
            with torch.no_grad():
                return sample(self.model, noise=self.noise().expand(len(prompts), *self.model.x_shape),
                              prompt=prompts, guidance_scale=w, steps=self.steps, progress=False,
                              **sampler_settings(self.model)).result

        imgs = self.memo.get(("samples", tuple(prompts), w), samples)
        dim = math.prod(self.model.x_shape)
        return TextView(prompts, t, w, dist, self.similarity(prompts), cond, imgs, self.k,
                        random_subspace_distance(dim, self.k))


def notice(view: TextView) -> str:
    """The "what to notice" line under the text dashboard's figures (HTML).

    >>> import torch
    >>> v = TextView(["a", "b"], 500, 1.5, torch.zeros(2, 2), torch.eye(2), {500: 1.0}, torch.zeros(2, 3, 4, 4), 6, 3.85)
    >>> "3.85" in notice(v)
    True
    """
    iu = torch.triu_indices(len(view.prompts), len(view.prompts), 1)
    d = view.distances[iu[0], iu[1]]
    return (f"<b>What to notice:</b> similar prompts (similarity near 1) should give nearby bases; the bases here "
            f"are {float(d.min()):.2f}-{float(d.max()):.2f} rad apart. <b>Reference:</b> random {view.k}-dimensional "
            f"subspaces of the same space are {view.random_distance:.2f} apart (dashed line), the ceiling is "
            f"{math.sqrt(view.k) * math.pi / 2:.2f}. Samples keep the prompted colour up to guidance "
            f"{GUIDANCE_MAX:g} (clipped eps in the DDIM step).")


def draw_text_view(fig: Any, view: TextView, part: str) -> None:
    """``"samples"``: each prompt's sample; ``"distances"``: the distance matrix, distance vs
    similarity, and conditional vs unconditional over t.

    >>> import diffgeo
    >>> from matplotlib.figure import Figure
    >>> state = TextState(diffgeo.load("shapes-text"), steps=3, k=2)
    >>> view = state.view(prompts=["a red circle", "a blue square"], t=state.timesteps[0], guidance_scale=2.0)
    >>> fig = Figure()
    >>> draw_text_view(fig, view, "distances")
    >>> len(fig.axes)   # three panels and the matrix's colour bar
    4
    """

    short = [p if len(p) <= 22 else p[:20] + ".." for p in view.prompts]
    if part == "samples":
        draw_images(fig.subplots(), view.samples, nrow=len(view.prompts), captions=short,
                    title=f"one x_T, guidance {view.guidance_scale:g}")
    elif part == "distances":
        a, b, c = fig.subplots(1, 3)
        ceiling = math.sqrt(view.k) * math.pi / 2
        draw_matrix(a, view.distances, short, title=f"Grassmann distance at t={view.t}", vmin=0.0, vmax=ceiling,
                    colorbar="distance (rad)")
        iu = torch.triu_indices(len(view.prompts), len(view.prompts), 1)
        draw_scatter(b, view.similarity[iu[0], iu[1]].tolist(), view.distances[iu[0], iu[1]].tolist(),
                     labels=[f"{i + 1}-{j + 1}" for i, j in iu.T.tolist()], xlabel="prompt similarity (cosine)",
                     ylabel="basis distance (rad)", title="distance vs similarity")
        b.set_xlim(min(0.0, float(view.similarity.min()) - 0.05), 1.02)
        b.set_ylim(0.0, ceiling * 1.05)
        b.axhline(view.random_distance, color="grey", ls="--", lw=0.8)
        b.text(0.02, view.random_distance, " random subspaces", fontsize=6, va="bottom", color="grey",
               transform=b.get_yaxis_transform())
        if view.cond_vs_uncond:
            draw_curves(c, list(view.cond_vs_uncond), {"cond vs uncond": list(view.cond_vs_uncond.values())},
                        xlabel="t", ylabel="Grassmann distance (rad)", title=f'"{short[0]}" vs ""', reverse_x=True,
                        highlight=view.t)
            c.set_ylim(0.0, ceiling * 1.05)
        else:
            c.set_axis_off()
            c.text(0.5, 0.5, "tick 'cond vs uncond over t'\nto compute this curve", ha="center", va="center", fontsize=8)
    else:
        raise ValueError(f"part must be 'samples' or 'distances', got {part!r}")


def text_dashboard(model: Any = None, *, state: TextState | None = None, presets: dict[str, list[str]] | None = None,
                   over_t: bool = True, **state_kwargs: Any) -> Any:
    """Prompt boxes (three, with the presets that fit the model), a timestep slider, a guidance
    slider (1 to GUIDANCE_MAX) and a 'cond vs uncond over t' switch (initial value ``over_t``) over a
    :class:`TextState` (``model`` default: embedded ``shapes-text``).

    >>> import diffgeo
    >>> dash = text_dashboard(diffgeo.load("shapes-text"), steps=3, k=2)
    >>> dash.last_ok, sorted(dash.figures), [dash.controls[f"prompt{i}"].value != "" for i in (1, 2, 3)]
    (True, ['distances', 'notice', 'samples'], [True, True, True])
    """

    state = state_for(TextState, model, state, state_kwargs, "shapes-text")
    presets = dict(presets or presets_for(state.model))
    w = widgets()

    class TextDashboard(Dashboard):
        title = "Text conditions and the tangent space"
        _preset = None

        def frames(self, v: dict[str, Any]):
            if v["preset"] != self._preset:  # a new preset fills the boxes (their own events are ignored)
                self._preset = v["preset"]
                for box, p in zip(boxes, presets[v["preset"]]):
                    box.value = p
            prompts = [box.value for box in boxes]
            self.view = state.view(prompts=prompts, t=v["t"], guidance_scale=v["guidance"], over_t=v["over_t"],
                                   progress=self.report)
            yield {"samples": figure_png(lambda f: draw_text_view(f, self.view, "samples"),
                                         size=(1.3 * len(prompts) + 0.6, 2.0)),
                   "distances": figure_png(lambda f: draw_text_view(f, self.view, "distances"), size=(12.0, 3.6)),
                   "notice": notice(self.view)}

    dash = TextDashboard()
    dash.state = state
    first = next(iter(presets))
    boxes = [w.Text(value=p, description=f"prompt {i + 1}", continuous_update=False)
             for i, p in enumerate(presets[first])]
    dash.controls = {"preset": w.Dropdown(options=list(presets), value=first, description="preset"),
                     **{f"prompt{i + 1}": box for i, box in enumerate(boxes)},
                     "t": slider("select", options=state.timesteps, value=state.timesteps[len(state.timesteps) // 2],
                                 description="timestep t"),
                     "guidance": slider("float", min=1.0, max=GUIDANCE_MAX, step=0.5,
                                        value=float(min(GUIDANCE_MAX, default_guidance(state.model))),
                                        description=f"guidance (1-{GUIDANCE_MAX:g}: keeps the prompted colour)",
                                        layout=w.Layout(width="480px")),
                     "over_t": w.Checkbox(value=over_t, description="cond vs uncond over t")}
    c = dash.controls
    dash.figures["notice"] = w.HTML()
    dash.assemble([w.HBox([c["preset"], c["t"], c["guidance"]]), w.HBox([*boxes, c["over_t"]])],
                  figures=[dash.image("samples"), dash.image("distances"), dash.figures["notice"]])
    return dash
