"""The ipywidgets frame of a dashboard: controls, figures as PNG images, a status line and a
progress bar, wrapped around a state object that knows nothing of widgets.

ipywidgets is imported only when a dashboard is built. A callback that raises shows the error in
the status line and leaves every control live (change a control to retry); the traceback goes
to the ``diffgeo.widgets`` logger.
"""

from __future__ import annotations

import html
import logging
import time
from typing import Any, Iterable, Iterator

from diffgeo.widgets._core import DASHBOARD_THREADS, torch_threads

log = logging.getLogger("diffgeo.widgets")

Frames = Iterator[dict[str, bytes]]


def widgets() -> Any:
    """The ipywidgets module (imported lazily), with a clear error when it is missing.

    >>> widgets().__name__
    'ipywidgets'
    """
    try:
        import ipywidgets
    except ImportError as e:  # pragma: no cover - ipywidgets is a core dependency
        raise ImportError("diffgeo's dashboards need ipywidgets: pip install 'ipywidgets>=8'") from e
    return ipywidgets


class Dashboard:
    """Base of the dashboards. Subclasses fill ``controls`` (name -> widget with a ``value``) and
    ``figures`` (name -> ipywidgets.Image) and implement :meth:`frames`, a generator of
    ``{figure name: PNG bytes}`` for the current control values (more than one frame: a coarse
    preview first, then the full result). ``widget`` is what gets displayed.

    ``last_ok`` says whether the last refresh succeeded; ``last_seconds`` how long it took (to the
    last frame) and ``first_frame_seconds`` how long until the first figure changed.
    """

    title = ""

    def __init__(self, *, threads: int | None = DASHBOARD_THREADS):
        w = widgets()
        self.threads = threads
        self.controls: dict[str, Any] = {}
        self.figures: dict[str, Any] = {}
        self.status = w.HTML(value="")
        self.progress = w.IntProgress(value=0, min=0, max=1, description="",
                                      layout=w.Layout(width="300px", visibility="hidden"))
        self.last_ok = True
        self.last_seconds = float("nan")
        self.first_frame_seconds = float("nan")
        self._busy = False
        self.widget: Any = None

    # -- building ----------------------------------------------------------------------------
    def image(self, name: str, width: str = "auto") -> Any:
        """A figure slot: an Image shown at its PNG's own size (not stretched to the row's width),
        never smoothed when the page scales it."""
        img = widgets().Image(format="png", layout=widgets().Layout(width=width, align_self="flex-start",
                                                                     object_fit="contain"))
        img.add_class("diffgeo-pixelated")
        self.figures[name] = img
        return img

    def assemble(self, rows: Iterable[Any], figures: Iterable[Any] = ()) -> None:
        """Lay out the controls' rows, then the progress bar and the status line (right under the
        controls that start the work, in view), then the figures (rows of them wrap on a narrow page);
        wire the callbacks and draw once."""
        w = widgets()
        style = "<style>.diffgeo-pixelated, .diffgeo-pixelated img {image-rendering: pixelated;}</style>"
        header = [w.HTML(style + (f"<b>{html.escape(self.title)}</b>" if self.title else ""))]
        figures = list(figures)
        for row in figures:  # a row of figures wider than the page wraps instead of running off its edge
            if isinstance(row, w.HBox):
                row.layout.flex_flow = "row wrap"
        self.widget = w.VBox([*header, *rows, w.HBox([self.progress, self.status]), *figures])
        for c in self.controls.values():
            c.observe(self.refresh, names="value")
        self.refresh()

    def _ipython_display_(self) -> None:  # pragma: no cover - needs a front end
        from IPython.display import display

        display(self.widget)

    # -- running -----------------------------------------------------------------------------
    def values(self) -> dict[str, Any]:
        return {name: c.value for name, c in self.controls.items()}

    def report(self, done: int, total: int, label: str) -> None:
        """Progress callback for the state objects: shows the bar while work is under way."""
        self.progress.max = max(1, total)
        self.progress.value = min(done, total)
        self.progress.description = label[:18]
        self.progress.layout.visibility = "hidden" if done >= total else "visible"

    def frames(self, values: dict[str, Any]) -> Frames:  # pragma: no cover - abstract
        raise NotImplementedError

    def refresh(self, change: Any = None) -> bool:
        """Recompute and redraw for the current control values; False (and a message in the
        status line) when the computation failed."""
        if self._busy:  # a change made by the dashboard itself while it redraws
            return self.last_ok
        self._busy = True
        start = time.perf_counter()
        self.first_frame_seconds = float("nan")
        try:
            with torch_threads(self.threads):
                for frame in self.frames(self.values()):
                    for name, value in frame.items():  # PNG bytes for images, HTML text for notes
                        self.figures[name].value = value
                    if self.first_frame_seconds != self.first_frame_seconds:
                        self.first_frame_seconds = time.perf_counter() - start
            self.status.value = ""
            self.last_ok = True
        except Exception as e:  # noqa: BLE001 - the dashboard must stay alive
            log.exception("dashboard callback failed")
            self.status.value = ('<span style="color:#b00020">&#9888; ' + html.escape(f"{type(e).__name__}: {e}")
                                 + "</span> &mdash; the dashboard is still live: change a control to try again.")
            self.last_ok = False
        finally:
            self.last_seconds = time.perf_counter() - start
            self.progress.layout.visibility = "hidden"
            self._busy = False
        return self.last_ok


def slider(kind: str, **kwargs: Any) -> Any:
    """An ipywidgets slider that fires only on release (``continuous_update=False``).

    >>> s = slider("int", min=0, max=3, value=1, description="k")
    >>> type(s).__name__, s.value, s.continuous_update
    ('IntSlider', 1, False)
    """
    cls = {"float": widgets().FloatSlider, "int": widgets().IntSlider, "select": widgets().SelectionSlider}[kind]
    return cls(continuous_update=False, style={"description_width": "initial"}, **kwargs)

