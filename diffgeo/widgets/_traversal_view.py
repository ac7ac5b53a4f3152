"""What the traversal dashboard shows for one parameter set (:class:`TraversalView`) and how it
is drawn: the originals (and, for real images, their inversion and its error) beside the x-space
edit and the Asyrp edit, each image captioned by the model's reader.

>>> figure_size(4)
(5.2, 2.6)
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

import torch

from diffgeo.viz.draw import draw_images

__all__ = ["TraversalView", "draw_traversal", "figure_size", "notice"]


@dataclass(frozen=True)
class TraversalView:
    """What the dashboard shows for one parameter set.

    x_images: (N, C, H, W) results of the x-space edit (the preview when ``preview``), or None
    (``x_note`` says why: an h-only direction);
    h_images: (N, C, H, W) results of Asyrp, or None (``h_note`` says why);
    captions_x / captions_h and marks_x / marks_h: the reader's readout (None without a reader);
    originals: (N, C, H, W) the unedited images (samples, or the real images) with their readout
    captions_o; inversion: (N, C, H, W) real images' inversion regenerated without an edit, and
    inversion_rmse its per-image RMS error against them (None for samples); warning: what the user
    must know (an inversion that did not converge), or "".
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
    originals: torch.Tensor | None = None
    captions_o: list[str] | None = None
    inversion: torch.Tensor | None = None
    inversion_rmse: list[float] | None = None
    warning: str = ""



def draw_traversal(fig: Any, view: TraversalView, side: str) -> None:
    """Draw one part of a view on a matplotlib figure with :func:`diffgeo.viz.draw.draw_images`:
    ``"original"`` (the unedited images; real images above their inversion, captioned with its
    RMS error), ``"x"`` (the x-space edit) or ``"h"`` (Asyrp).

    >>> import diffgeo
    >>> from matplotlib.figure import Figure
    >>> from diffgeo.widgets.traversal import TraversalState
    >>> state = TraversalState(diffgeo.load("shapes"), n=1, steps=4, k=2)
    >>> fig = Figure()
    >>> draw_traversal(fig, state.view(strength=0.3, t_edit=500, direction="local basis v1"), "x")
    >>> len(fig.axes)
    1
    """
    ax = fig.subplots()
    if side == "original":
        images, captions = view.originals, view.captions_o
        if view.inversion is not None:
            images = torch.cat([view.originals, view.inversion.to(view.originals)])
            captions = [*(captions or [""] * len(view.originals)), *[f"err {e:.3f}" for e in view.inversion_rmse]]
        draw_images(ax, images, nrow=view.originals.shape[0], captions=captions,
                    title="real images / their inversion (RMS error)" if view.inversion is not None else "originals")
    elif side == "x" and view.x_images is None:
        ax.set_axis_off()
        ax.text(0.5, 0.5, view.x_note, ha="center", va="center", fontsize=8, wrap=True)
    elif side == "x":
        what = "x-space (preview)" if view.preview else "x-space"
        draw_images(ax, view.x_images, nrow=view.x_images.shape[0], captions=view.captions_x, marks=view.marks_x,
                    title=f"{what}: {view.direction.replace('local basis ', '')} {view.strength:+.2f}, t={view.t_edit}")
    elif view.h_images is not None:
        draw_images(ax, view.h_images, nrow=view.h_images.shape[0], captions=view.captions_h, marks=view.marks_h,
                    title=f"Asyrp: {view.direction.replace('local basis ', 'u of ')} {view.strength:+.2f}, "
                          f"t_edit={view.t_edit}, t_boost={view.t_boost}")
    else:
        ax.set_axis_off()
        ax.text(0.5, 0.5, view.h_note, ha="center", va="center", fontsize=8, wrap=True)


def figure_size(n: int, rows: int = 1) -> tuple[float, float]:
    """Figure size (inches) of ``rows`` rows of ``n`` traversal images: 1.3 per image (a 32-pixel
    image drawn 4x at the dashboards' 100 dpi, nearest neighbour: no blur), at least 3.6 wide.

    >>> figure_size(1), figure_size(4, rows=2)
    ((3.6, 2.6), (5.2, 3.9))
    """
    return (max(3.6, 1.3 * n), 1.3 + 1.3 * rows)


def notice(view: TraversalView) -> str:
    """The "what to notice" line under the traversal figures (HTML), with its reference: how many
    images the edit changes in the reader's eyes, against none at strength 0.

    >>> import diffgeo
    >>> from diffgeo.widgets.traversal import TraversalState
    >>> state = TraversalState(diffgeo.load("shapes"), n=1, steps=4, k=2)
    >>> "Reference" in notice(state.view(strength=0.0, t_edit=500, direction="local basis v1"))
    True
    """
    parts = []
    for name, caps in (("x-space", view.captions_x), ("Asyrp", view.captions_h)):
        if caps is not None and view.captions_o is not None and not view.preview:
            changed = sum(a != b for a, b in zip(caps, view.captions_o))
            parts.append(f"{name}: the reader reads a different attribute in {changed} of {len(caps)} images")
    inv = ""
    if view.inversion_rmse:
        inv = (f" Inversion error: mean RMS {sum(view.inversion_rmse) / len(view.inversion_rmse):.3f} "
               "(pixel range 2; unconverged inversions regenerate a different image).")
    warn = f'<span style="color:#b00020">&#9888; {html.escape(view.warning)}</span><br>' if view.warning else ""
    return (warn + "<b>What to notice:</b> compare each edit with the image in the same place of the originals panel; "
            "x-space edits every image along its own v; Asyrp adds one h direction (a learned f_t: each image's "
            "own dh) at every step down to t_edit. "
            + "; ".join(parts) + (". " if parts else "")
            + "Reference: at strength 0 both sides reproduce the originals (0 changed)." + inv)
