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

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from diffgeo.geometry.basis import local_basis
from diffgeo.geometry.subspaces import distance_matrix, grassmann_distance
from diffgeo.sampling.ddim import ddim_timesteps, sample
from diffgeo.viz.draw import draw_curves, draw_images, draw_matrix, draw_scatter
from diffgeo.widgets._core import Memo, Stages, figure_png, state_for
from diffgeo.widgets._ui import Dashboard, slider, widgets

__all__ = ["TextState", "TextView", "text_dashboard", "draw_text_view", "PRESETS"]

Report = Callable[[int, int, str], None]

#: Preset prompt sets (the first prompt drives the trajectory).
PRESETS: dict[str, list[str]] = {
    "paraphrases": ["a red circle", "a crimson disk", "a red round shape"],
    "colours": ["a red circle", "a blue circle", "a green circle"],
    "shapes": ["a red circle", "a red square", "a red triangle"],
    "partial captions": ["a small yellow triangle on the left", "a yellow triangle", "a triangle"],
    "digits": ["a handwritten 3", "a handwritten 8", "a handwritten 1"],
}


@dataclass(frozen=True)
class TextView:
    """prompts (P,), t, guidance_scale; distances (P, P) Grassmann distances between the prompts'
    bases at t; similarity (P, P) cosine similarity of the prompts' embeddings; cond_vs_uncond
    {t': distance between the first prompt's basis and the unconditional one at t'}; samples
    (P, *x_shape): each prompt's sample from the shared x_T."""

    prompts: list[str]
    t: int
    guidance_scale: float
    distances: torch.Tensor
    similarity: torch.Tensor
    cond_vs_uncond: dict[int, float]
    samples: torch.Tensor


class TextState:
    """A text model, the ``seed`` of the shared x_T, ``steps`` DDIM steps, k basis vectors, the
    local-basis tolerance ``tol`` (looser is faster)."""

    def __init__(self, model: Any, *, seed: int = 3, steps: int = 10, k: int = 4, basis_seed: int = 0,
                 tol: float = 1e-3):

        if not getattr(model, "is_conditional", False):
            raise ValueError(f"model {getattr(model, 'name', model)!r} takes no prompts: use a text model such as "
                             "load('shapes-text')")
        for name, value in (("steps", steps), ("k", k)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.model, self.seed, self.steps, self.k, self.basis_seed, self.tol = model, seed, steps, k, basis_seed, tol
        self.memo = Memo(1024)
        self.timesteps: list[int] = [int(t) for t in ddim_timesteps(model, steps) if t > 0]

    def noise(self) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed)
        return torch.randn(1, *self.model.x_shape, generator=g).to(self.model.device, self.model.dtype)

    def trajectory(self, prompt: str, guidance_scale: float) -> Any:

        def compute() -> Any:
            with torch.no_grad():
                return sample(self.model, noise=self.noise(), prompt=prompt, guidance_scale=guidance_scale,
                                      steps=self.steps, progress=False)

        return self.memo.get(("trajectory", prompt, float(guidance_scale)), compute)

    def basis(self, path_prompt: str, guidance_scale: float, t: int, prompt: str) -> Any:
        """Local basis, on ``prompt``'s branch, of x_t of the path sampled under ``path_prompt``."""

        def compute() -> Any:
            traj = self.trajectory(path_prompt, guidance_scale)
            x = traj.xs[traj.timesteps.tolist().index(t)]
            return local_basis(self.model, x, t, self.k, prompt=prompt, seed=self.basis_seed, tol=self.tol,
                                       progress=False)

        return self.memo.get(("basis", path_prompt, float(guidance_scale), t, prompt), compute)

    def similarity(self, prompts: Sequence[str]) -> torch.Tensor:
        """Cosine similarity (P, P) of the prompts' conditioning embeddings, flattened."""
        e = self.model.encode_prompt(list(prompts)).flatten(1).double()
        e = e / e.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return (e @ e.T).cpu()

    def view(self, *, prompts: Sequence[str], t: int, guidance_scale: float,
             progress: Report | None = None) -> TextView:

        prompts = [str(p) for p in prompts]
        if len(prompts) < 2:
            raise ValueError(f"give at least two prompts, got {prompts!r}")
        if t not in self.timesteps:
            raise ValueError(f"t must be one of {self.timesteps}, got {t!r}")
        p0, w = prompts[0], float(guidance_scale)
        wanted = [(t, p) for p in prompts] + [(u, q) for u in self.timesteps for q in (p0, "")]
        todo = [key for key in dict.fromkeys(wanted) if ("basis", p0, w, *key) not in self.memo]
        stages = Stages(progress, len(todo) + 1)
        bases = {}
        for key in dict.fromkeys(wanted):
            if key in todo:
                stages.step(f"basis t={key[0]}")
            bases[key] = self.basis(p0, w, *key)
        stages.step("samples")
        dist = distance_matrix([bases[t, p] for p in prompts])
        over_t = {u: grassmann_distance(bases[u, p0], bases[u, ""]) for u in self.timesteps}

        def samples() -> torch.Tensor:
            with torch.no_grad():
                return sample(self.model, noise=self.noise().expand(len(prompts), *self.model.x_shape),
                                      prompt=prompts, guidance_scale=w, steps=self.steps, progress=False).result

        imgs = self.memo.get(("samples", tuple(prompts), w), samples)
        return TextView(prompts, t, w, dist, self.similarity(prompts), over_t, imgs)


def draw_text_view(fig: Any, view: TextView, part: str) -> None:
    """``"samples"``: each prompt's sample; ``"distances"``: the distance matrix, distance vs
    similarity, and conditional vs unconditional over t.

    >>> import diffgeo
    >>> from matplotlib.figure import Figure
    >>> state = TextState(diffgeo.load("shapes-text"), steps=3, k=2)
    >>> view = state.view(prompts=["a red circle", "a blue square"], t=state.timesteps[0], guidance_scale=2.0)
    >>> fig = Figure()
    >>> draw_text_view(fig, view, "distances")
    >>> len(fig.axes)
    3
    """

    short = [p if len(p) <= 22 else p[:20] + ".." for p in view.prompts]
    if part == "samples":
        draw_images(fig.subplots(), view.samples, nrow=len(view.prompts), captions=short,
                    title=f"one x_T, guidance {view.guidance_scale:g}")
    elif part == "distances":
        a, b, c = fig.subplots(1, 3)
        draw_matrix(a, view.distances, short, title=f"Grassmann distance at t={view.t}")
        iu = torch.triu_indices(len(view.prompts), len(view.prompts), 1)
        draw_scatter(b, view.similarity[iu[0], iu[1]].tolist(), view.distances[iu[0], iu[1]].tolist(),
                     labels=[f"{i}-{j}" for i, j in iu.T.tolist()], xlabel="prompt similarity (cosine)",
                     ylabel="basis distance", title="distance vs similarity")
        draw_curves(c, list(view.cond_vs_uncond), {"cond vs uncond": list(view.cond_vs_uncond.values())},
                    xlabel="t", ylabel="Grassmann distance", title=f'"{short[0]}" vs ""', reverse_x=True,
                    highlight=view.t)
    else:
        raise ValueError(f"part must be 'samples' or 'distances', got {part!r}")


def text_dashboard(model: Any = None, *, state: TextState | None = None, presets: dict[str, list[str]] | None = None,
                   **state_kwargs: Any) -> Any:
    """Prompt boxes (three, with presets), a timestep slider and a guidance slider over a
    :class:`TextState` (``model`` default: embedded ``shapes-text``).

    >>> import diffgeo
    >>> dash = text_dashboard(diffgeo.load("shapes-text"), steps=3, k=2)
    >>> dash.last_ok, sorted(dash.figures), [dash.controls[f"prompt{i}"].value != "" for i in (1, 2, 3)]
    (True, ['distances', 'samples'], [True, True, True])
    """

    state = state_for(TextState, model, state, state_kwargs, "shapes-text")
    presets = dict(presets or PRESETS)
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
            self.view = state.view(prompts=prompts, t=v["t"], guidance_scale=v["guidance"], progress=self.report)
            yield {"samples": figure_png(lambda f: draw_text_view(f, self.view, "samples"), size=(1.5 * len(prompts) + 0.5, 2.0)),
                   "distances": figure_png(lambda f: draw_text_view(f, self.view, "distances"), size=(11.0, 3.4))}

    dash = TextDashboard()
    dash.state = state
    first = next(iter(presets))
    boxes = [w.Text(value=p, description=f"prompt {i + 1}", continuous_update=False)
             for i, p in enumerate(presets[first])]
    dash.controls = {"preset": w.Dropdown(options=list(presets), value=first, description="preset"),
                     **{f"prompt{i + 1}": box for i, box in enumerate(boxes)},
                     "t": slider("select", options=state.timesteps, value=state.timesteps[len(state.timesteps) // 2],
                                 description="timestep t"),
                     "guidance": slider("float", min=1.0, max=7.0, step=0.5, value=1.5, description="guidance")}
    c = dash.controls
    dash.assemble([w.HBox([c["preset"], c["t"], c["guidance"]]), w.HBox(boxes), dash.image("samples"),
                   dash.image("distances")])
    return dash
