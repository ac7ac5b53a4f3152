"""The module paths of diffgeo 0.1, kept for one release as deprecated aliases of their new homes.

``import diffgeo.pullback`` still works and warns; the alias forwards attribute access to the new
module (e.g. :mod:`diffgeo.geometry`), which holds the same public names.

>>> import sys, warnings
>>> _ = sys.modules.pop("diffgeo.zoo", None)  # a fresh import, so that it warns here
>>> with warnings.catch_warnings(record=True) as caught:
...     warnings.simplefilter("always")
...     from diffgeo.zoo import entry
>>> entry("digits").guidance, caught[0].category.__name__
(2.0, 'DeprecationWarning')
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
import warnings

__all__ = ["MOVED", "install"]

#: old module path -> the module that now holds its public names
MOVED: dict[str, str] = {
    "diffgeo.checks": "diffgeo.core.checks",
    "diffgeo.io": "diffgeo.core.io",
    "diffgeo.sweep": "diffgeo.core.sweep",
    "diffgeo.prompts": "diffgeo.data.prompts",
    "diffgeo.loading": "diffgeo.models.loading",
    "diffgeo.text": "diffgeo.models",
    "diffgeo.hooks": "diffgeo.models.hooks",
    "diffgeo.zoo": "diffgeo.models.zoo",
    "diffgeo.generation": "diffgeo.sampling.generation",
    "diffgeo.pullback": "diffgeo.geometry",
    "diffgeo.hspace": "diffgeo.geometry.hstats",
    "diffgeo.probe": "diffgeo.readers.probe",
    "diffgeo.evaluate": "diffgeo.evaluation",
    "diffgeo.alignment": "diffgeo.evaluation.alignment",
    "diffgeo.directions": "diffgeo.editing.directions",
    "diffgeo.edit_properties": "diffgeo.editing",
    "diffgeo.learned_direction": "diffgeo.editing",
    "diffgeo.transfer": "diffgeo.editing.transfer",
    "diffgeo.plotting": "diffgeo.viz",
    "diffgeo.report": "diffgeo.analyses.report",
    "diffgeo.tour": "diffgeo.analyses.tour",
    "diffgeo.train": "diffgeo.training",
}


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds the old paths; each loads as a thin module forwarding to its new home."""

    def find_spec(self, fullname: str, path: object = None, target: object = None):
        if fullname in MOVED:
            return importlib.machinery.ModuleSpec(fullname, self)
        return None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return None

    def exec_module(self, module: types.ModuleType) -> None:
        new = MOVED[module.__name__]
        warnings.warn(f"{module.__name__} moved to {new}; the old path will be removed in the next release",
                      DeprecationWarning, stacklevel=2)
        target = importlib.import_module(new)
        module.__getattr__ = lambda name: getattr(target, name)  # type: ignore[method-assign]
        module.__all__ = list(getattr(target, "__all__", []))
        module.__doc__ = f"Deprecated alias of :mod:`{new}`."


def install() -> None:
    """Put the alias finder on ``sys.meta_path`` (once).

    >>> install(); install()
    >>> sum(isinstance(f, _Alias) for f in sys.meta_path)
    1
    """
    if not any(isinstance(f, _Alias) for f in sys.meta_path):
        sys.meta_path.append(_Alias())
