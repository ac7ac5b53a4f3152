"""The machinery every dashboard shares, none of it tied to ipywidgets.

- :class:`Memo`: a bounded least-recently-used cache keyed by the parameters a value depends on,
  with hit and miss counts (so a test can check that a slider move recomputed only what changed).
- :func:`torch_threads`: run a block with a given number of torch threads and restore the old
  setting. ``DASHBOARD_THREADS`` is the measured choice for dashboards (see
  benchmarks/bench_widgets.py): one thread. On the 2-core machine next to other busy processes a
  strength move of notebook 05's dashboard took a median 643 ms to the preview and 7.1 s to the
  full result with one thread, 5.3 s and 81 s with two (8x and 11x slower).
- :func:`figure_png`: draw with the library's ``draw_*`` functions on a fresh matplotlib
  ``Figure`` (:func:`diffgeo.viz.figures.figure`; no pyplot, so the notebook's backend is never
  touched) and return its PNG bytes (:func:`diffgeo.viz.figures.figure_bytes`).

>>> memo = Memo(maxsize=2)
>>> memo.get(("a", 1), lambda: 10), memo.get(("a", 1), lambda: 11), (memo.hits, memo.misses)
(10, 10, (1, 1))
"""

from __future__ import annotations

from collections import OrderedDict
from contextlib import contextmanager
from typing import Any, Callable, Hashable, Iterator

import torch

from diffgeo.models.conditioning import default_guidance
from diffgeo.models.loading import load
from diffgeo.sampling.ddim import sample
from diffgeo.viz.figures import figure, figure_bytes

__all__ = ["Memo", "torch_threads", "figure_png", "DASHBOARD_THREADS", "Stages", "check_trajectory", "meta_mismatch",
           "same_tensor"]

#: Torch threads for dashboard callbacks, chosen by measurement (benchmarks/bench_widgets.py):
#: with other work on the machine two threads were 8-11x slower than one.
DASHBOARD_THREADS = 1


class Memo:
    """Least-recently-used cache of at most ``maxsize`` values; ``hits``/``misses`` count lookups."""

    def __init__(self, maxsize: int = 128):
        if not isinstance(maxsize, int) or maxsize < 1:
            raise ValueError(f"maxsize must be a positive integer, got {maxsize!r}")
        self.maxsize = maxsize
        self.hits = 0
        self.misses = 0
        self._data: OrderedDict[Hashable, Any] = OrderedDict()

    def __contains__(self, key: Hashable) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        """The cached value for ``key``, computing (and storing) it with ``compute()`` when absent."""
        if key in self._data:
            self.hits += 1
            self._data.move_to_end(key)
            return self._data[key]
        self.misses += 1
        value = compute()
        self._data[key] = value
        while len(self._data) > self.maxsize:
            self._data.popitem(last=False)
        return value

    def clear(self) -> None:
        self._data.clear()


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads (None: leave as is), then restore.

    >>> with torch_threads(1):
    ...     torch.get_num_threads()
    1
    """
    old = torch.get_num_threads()
    if n is not None and n != old:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        if torch.get_num_threads() != old:
            torch.set_num_threads(old)


def figure_png(draw: Callable[[Any], None], *, size: tuple[float, float] = (6.0, 3.0), dpi: int = 100) -> bytes:
    """PNG bytes of a figure of ``size`` inches drawn by ``draw(fig)``: :func:`diffgeo.viz.figures.figure`
    then :func:`diffgeo.viz.figures.figure_bytes` (Agg canvas, no pyplot, the one save path).

    >>> from diffgeo.viz.draw import draw_curves
    >>> png = figure_png(lambda fig: draw_curves(fig.subplots(), [0, 1], {"a": [0, 1]}, xlabel="x", ylabel="y"))
    >>> png[:4]
    b'\\x89PNG'
    """
    return figure_bytes(figure(draw, size=size, dpi=dpi))


def state_for(state_cls: Callable[..., Any], model: Any, state: Any, kwargs: dict[str, Any],
              default_model: str = "shapes") -> Any:
    """The dashboard's state: ``state`` when given, else ``state_cls(model, **kwargs)`` with
    ``model`` defaulting to the embedded ``default_model``.

    >>> state_for(dict, None, {"given": True}, {})
    {'given': True}
    """
    if state is not None:
        return state
    if model is None:

        model = load(default_model)
    return state_cls(model, **kwargs)


def meta_mismatch(meta: Any, want: dict[str, Any]) -> dict[str, Any]:
    """The entries of ``want`` that a result's ``meta`` (a dict, or None) does not hold, with the
    values ``meta`` has instead; a prompt given once per sample (all equal) reads as that prompt.
    The one check behind every dashboard state's ``adopt_*``.

    >>> meta_mismatch({"t": 1, "prompt": ["a", "a"]}, {"t": 1, "prompt": "a", "k": 2})
    {'k': None}
    """
    m = dict(meta or {})
    if isinstance(m.get("prompt"), (list, tuple)) and len(set(m["prompt"])) == 1:
        m["prompt"] = m["prompt"][0]
    return {k: m.get(k) for k, v in want.items() if m.get(k) != v}


def same_tensor(a: Any, b: torch.Tensor) -> bool:
    """Whether ``a`` holds exactly ``b``'s values (any shape with as many elements, any device / dtype
    that represents them).

    >>> same_tensor(torch.ones(1, 4), torch.ones(4)), same_tensor(torch.ones(3), torch.ones(4))
    (True, False)
    >>> same_tensor(None, torch.ones(1))
    False
    """
    return isinstance(a, torch.Tensor) and a.numel() == b.numel() and torch.equal(a.reshape(b.shape).to(b), b)


def check_trajectory(trajectory: Any, model: Any, *, n: int, steps: int, seed: int, prompt: str | None = None,
                     guidance_scale: float | None = None) -> None:
    """Raise a ValueError unless ``trajectory`` (xs (steps + 1, n, *x_shape)) is what
    ``diffgeo.sample(model, n, steps=steps, seed=seed, prompt=prompt, guidance_scale=guidance_scale)``
    gives: this model, n samples, the steps, seed, eta 0, prompt and guidance (None: the model's
    default) in its ``meta``.

    >>> import diffgeo
    >>> m = diffgeo.load("shapes")
    >>> traj = diffgeo.sample(m, 1, steps=2, seed=0, progress=False)
    >>> check_trajectory(traj, m, n=1, steps=2, seed=0)
    >>> check_trajectory(traj, m, n=1, steps=2, seed=1)
    Traceback (most recent call last):
    ...
    ValueError: this trajectory is not the one the dashboard samples ...
    """
    meta = getattr(trajectory, "meta", None) or {}
    want = {"model": model.name, "direction": "sample", "steps": steps, "seed": seed, "eta": 0.0, "prompt": prompt}
    if meta.get("guidance_scale") is not None or guidance_scale is not None:
        want["guidance_scale"] = float(default_guidance(model) if guidance_scale is None else guidance_scale)
    wrong = meta_mismatch(meta, want)
    xs = getattr(trajectory, "xs", None)
    if xs is None or xs.dim() < 2 or xs.shape[1] != n:
        wrong["samples"] = None if xs is None or xs.dim() < 2 else xs.shape[1]
    if wrong:
        raise ValueError(f"this trajectory is not the one the dashboard samples ({want}, n={n}): it has {wrong}; "
                         f"sample it with diffgeo.sample(model, {n}, steps={steps}, seed={seed}) or let the "
                         "dashboard sample its own")


class SampledPath:
    """Base of the dashboard states that sample ``n`` DDIM trajectories once (memoised in
    ``self.memo``) and read x_t off them. Subclasses set ``model``, ``n``, ``steps``, ``seed``,
    ``timesteps`` (the grid's t > 0), ``memo``, and ``prompt`` / ``guidance_scale`` for text models
    (``guidance_scale=None``: the model's own default, the package's guidance rule)."""

    prompt: str | None = None
    guidance_scale: float | None = None

    def trajectory(self) -> Any:
        """The memoised trajectory: xs (steps + 1, n, *x_shape)."""

        def compute() -> Any:
            with torch.no_grad():
                return sample(self.model, self.n, steps=self.steps, seed=self.seed, prompt=self.prompt,
                                      guidance_scale=self.guidance_scale, progress=False)

        return self.memo.get("trajectory", compute)

    def adopt_trajectory(self, trajectory: Any) -> None:
        """Use a trajectory sampled elsewhere (a notebook's plain ``diffgeo.sample`` call) instead of
        sampling it again; it must be what :meth:`trajectory` would sample (:func:`check_trajectory`)."""
        check_trajectory(trajectory, self.model, n=self.n, steps=self.steps, seed=self.seed, prompt=self.prompt,
                         guidance_scale=self.guidance_scale)
        self.memo.get("trajectory", lambda: trajectory)

    def x_t(self, t: int, sample: int) -> torch.Tensor:
        """x_t of one sample at a grid timestep: (1, *x_shape)."""
        if t not in self.timesteps:
            raise ValueError(f"t must be a timestep of the {self.steps}-step grid {self.timesteps}, got {t!r}")
        if not 0 <= sample < self.n:
            raise ValueError(f"sample must be in 0..{self.n - 1}, got {sample!r}")
        traj = self.trajectory()
        return traj.xs[traj.timesteps.tolist().index(t)][sample:sample + 1]


class Stages:
    """Progress of a computation in ``total`` stages, reported to ``report(done, total, label)``
    before each stage and once at the end (``report=None``: nowhere).

    >>> seen = []
    >>> s = Stages(lambda d, t, l: seen.append((d, t, l)), total=2)
    >>> s.step("basis"); s.step("denoise"); s.finish()
    >>> seen
    [(0, 2, 'basis'), (1, 2, 'denoise'), (2, 2, 'done')]
    """

    def __init__(self, report: Callable[[int, int, str], None] | None, total: int):
        self.report = report
        self.total = max(1, int(total))
        self.done = 0

    def step(self, label: str) -> None:
        """Announce the next stage."""
        if self.report is not None:
            self.report(min(self.done, self.total), self.total, label)
        self.done += 1

    def finish(self) -> None:
        if self.report is not None:
            self.report(self.total, self.total, "done")
