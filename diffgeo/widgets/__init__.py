"""Interactive dashboards (ipywidgets) over diffgeo's computations, for notebooks and Voila.

Each dashboard is a *state* object that computes and caches (no widgets inside, usable and
testable from plain Python) plus a thin ipywidgets front end that reads the controls, asks the
state for a view and draws it with the ``draw_*`` functions of :mod:`diffgeo.viz.draw`:

- :func:`tangent_dashboard` / :class:`TangentState`: local bases over the timesteps of a
  sampling path: basis vectors as images, their power spectra, distances to other samples' bases
  and to other timesteps;
- :func:`text_dashboard` / :class:`TextState`: tangent spaces under several prompts, their
  distances against the prompts' similarity, conditional vs unconditional over t, guidance;
- :func:`curvedness_dashboard` / :class:`CurvednessState`: the segment between two samples, the
  rotation of the tangent space along it, against the solver's flat floor;
- :func:`traversal_dashboard` / :class:`TraversalState`: x-space editing and Asyrp side by side;
- :func:`alignment_panel`: a text model's prompt alignment, measured on demand and cached on disk;
- :func:`notebook_cache` / :func:`cached_basis`: the notebooks' disk cache, which keeps the local
  bases of the dashboards' views across sessions (pass ``cache=notebook_cache("bases")``).

ipywidgets is imported only when a dashboard is built; callbacks run with
``DASHBOARD_THREADS`` torch threads (one, by measurement: benchmarks/bench_widgets.py), show a
progress bar for long work and an error message (never a dead dashboard) when they fail.

>>> from diffgeo.widgets import Memo
>>> Memo(4).maxsize
4
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from diffgeo.widgets._core import DASHBOARD_THREADS, Memo, figure_png, torch_threads
from diffgeo.widgets._diskcache import cached_basis, notebook_cache
from diffgeo.widgets._reference import GUIDANCE_MAX, random_subspace_distance, sampler_settings

__all__ = ["DASHBOARD_THREADS", "Memo", "figure_png", "torch_threads", "GUIDANCE_MAX", "random_subspace_distance",
           "sampler_settings", "cached_basis", "notebook_cache",
           "TraversalState", "traversal_dashboard", "TangentState", "tangent_dashboard",
           "TextState", "text_dashboard", "CurvednessState", "curvedness_dashboard", "alignment_panel"]

_LAZY = {"TraversalState": "traversal", "traversal_dashboard": "traversal",
         "TangentState": "tangent", "tangent_dashboard": "tangent",
         "TextState": "text", "text_dashboard": "text",
         "CurvednessState": "curved", "curvedness_dashboard": "curved", "alignment_panel": "alignment"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'diffgeo.widgets' has no attribute {name!r}")
