"""The protocol every analysis of the report follows: ``run(context) -> AnalysisResult``.

An analysis is any object with a ``name`` (its key in :data:`diffgeo.analyses.ANALYSES` and on the
command line), a ``title`` (one line, shown by ``--help``) and ``run(context)``. :class:`Analysis`
is the plain implementation every module uses. ``run`` gets a :class:`Context` (the models, the
preset, the output folder, the sweep cache and how to run sweeps) and returns an
:class:`AnalysisResult`: its claims, its figures (name -> :class:`FigureSpec`, drawn and saved by
the report as ``<name>.png``) and notes for the report's notes list. Adding an analysis is one new
module exposing one ``ANALYSIS`` object and one line in the registry.

Work shared between analyses (the bases along the primary model's trajectories, read by 1, 2 and
4) is computed once per report through :meth:`Context.bases` and :meth:`Context.memo`.

>>> from diffgeo.analyses._common import PRESETS
>>> ctx = Context(["toy"], PRESETS["tiny"], Path("."))
>>> hello = Analysis("hello", "0. says hello", lambda c: AnalysisResult(notes=[f"hello {c.primary}"]))
>>> hello.run(ctx).notes
['hello toy']
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, NamedTuple

from diffgeo.analyses._common import Claim, Preset
from diffgeo.analyses.bases import TrajectoryBases, collect_bases

__all__ = ["Analysis", "AnalysisResult", "Context", "FigureSpec"]


class FigureSpec(NamedTuple):
    """One figure of a result: ``draw(ax, data)`` onto one axes of a figure of ``size`` inches."""

    draw: Callable[[Any, Any], None]
    data: Any
    size: tuple[float, float] = (5.0, 3.6)


@dataclass
class AnalysisResult:
    """What one analysis found: claims (in table order), figures (name -> :class:`FigureSpec`, in page
    order; a later analysis giving a figure of the same name redraws it in place) and notes."""

    claims: list[Claim] = field(default_factory=list)
    figures: dict[str, FigureSpec] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass
class Context:
    """What an analysis runs on. models: names, folders or hub ids (the first is the primary model);
    preset: the sizes; out: the report's folder; caches: model -> its sweep cache folder (None: no
    cache); client / seed / progress: passed to every sweep; timings: label -> wall / CPU seconds."""

    models: list[str]
    preset: Preset
    out: Path
    caches: dict[str, Path | None] = field(default_factory=dict)
    client: Any = None
    seed: int = 0
    progress: bool | None = None
    timings: dict[str, dict[str, float]] = field(default_factory=dict)
    trajectory_bases: dict[str, TrajectoryBases] = field(default_factory=dict)
    _memo: dict[Any, Any] = field(default_factory=dict, repr=False)

    @property
    def primary(self) -> str:
        """The model most analyses run on: the first one.

        >>> from diffgeo.analyses._common import PRESETS
        >>> Context(["a", "b"], PRESETS["tiny"], Path(".")).primary
        'a'
        """
        return self.models[0]

    @property
    def sweep_kwargs(self) -> dict[str, Any]:
        """client, seed and progress, the keywords every sweep of the report takes.

        >>> from diffgeo.analyses._common import PRESETS
        >>> sorted(Context(["a"], PRESETS["tiny"], Path(".")).sweep_kwargs)
        ['client', 'progress', 'seed']
        """
        return {"client": self.client, "seed": self.seed, "progress": self.progress}

    def cache(self, model: str) -> Path | None:
        """The sweep cache folder of ``model`` (None: none).

        >>> from diffgeo.analyses._common import PRESETS
        >>> Context(["a"], PRESETS["tiny"], Path("."), caches={"a": Path("c/a")}).cache("a")
        PosixPath('c/a')
        """
        return self.caches.get(model)

    def timed(self, label: str, fn: Callable[[], Any]) -> Any:
        """``fn()``, its wall and CPU seconds added to ``timings[label]``.

        >>> from diffgeo.analyses._common import PRESETS
        >>> ctx = Context(["a"], PRESETS["tiny"], Path("."))
        >>> ctx.timed("sum", lambda: 1 + 1), sorted(ctx.timings["sum"])
        (2, ['cpu_s', 'wall_s'])
        """
        w0, c0 = time.perf_counter(), time.process_time()
        try:
            return fn()
        finally:
            t = self.timings.setdefault(label, {"wall_s": 0.0, "cpu_s": 0.0})
            t["wall_s"] += time.perf_counter() - w0
            t["cpu_s"] += time.process_time() - c0

    def memo(self, key: Any, fn: Callable[[], Any]) -> Any:
        """``fn()`` computed once per report under ``key`` (work shared between analyses).

        >>> from diffgeo.analyses._common import PRESETS
        >>> ctx = Context(["a"], PRESETS["tiny"], Path("."))
        >>> ctx.memo("x", lambda: [1]) is ctx.memo("x", lambda: [2])
        True
        """
        if key not in self._memo:
            self._memo[key] = fn()
        return self._memo[key]

    def bases(self, model: str) -> TrajectoryBases:
        """The bases along ``model``'s trajectories (:func:`~diffgeo.analyses.bases.collect_bases` with the
        preset, unprompted), computed once per report and timed as "bases along trajectories"; the
        report lists every model's in its notes.

        >>> from diffgeo.analyses.bases import toy_bases
        >>> from diffgeo.analyses._common import PRESETS
        >>> ctx = Context(["toy"], PRESETS["tiny"], Path("."), trajectory_bases={"toy": toy_bases()})
        >>> ctx.bases("toy").ts
        [900, 500, 100]
        """
        if model not in self.trajectory_bases:
            self.trajectory_bases[model] = self.timed("bases along trajectories", lambda: collect_bases(
                model, self.preset, cache=self.cache(model), **self.sweep_kwargs))
        return self.trajectory_bases[model]


@dataclass(frozen=True)
class Analysis:
    """One analysis of the report: ``run(context)`` returns its :class:`AnalysisResult`.

    >>> a = Analysis("nothing", "0. finds nothing", lambda context: AnalysisResult())
    >>> a.name, a.run(None).claims
    ('nothing', [])
    """

    name: str
    title: str
    run: Callable[[Context], AnalysisResult]
