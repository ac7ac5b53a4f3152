"""``python -m diffgeo edit image FILE --model shapes --direction colour:blue --strength S --out DIR``.

Invert an image file (PNG/JPEG of the model's size; :func:`diffgeo.invert`), edit it along a named
direction (:func:`diffgeo.editing.named.list_named`) or a saved one (a Direction ``.safetensors``), and
save ``DIR/edited.png``, ``DIR/before_after.png`` (original, reconstruction, edit) and ``DIR/edit.json``
(the direction's row, the strength, the inversion error and, where the model has a reader, the
factors read before and after). Bad arguments: one ``error:`` line, exit status 2, before loading.

>>> main(["no-such-file.png", "--direction", "colour:blue", "--out", "x"])   # "error: FILE ..."
Traceback (most recent call last):
...
SystemExit: 2
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from diffgeo.cli._args import ArgumentParser, check_model_arg, finite_float, positive_int, preflight
from diffgeo.core.checks import check_output_folder
from diffgeo.core.io import atomic_path
from diffgeo.editing.directions import Direction
from diffgeo.editing.named import list_named, named_edit, named_info
from diffgeo.models.loading import load
from diffgeo.models.zoo import entry
from diffgeo.readers import get_reader
from diffgeo.sampling.inversion import invert
from diffgeo.viz.figures import save_image_grid

__all__ = ["main", "read_image", "write_image"]

logger = logging.getLogger(__name__)


def read_image(path: str | Path, channels: int | None = None) -> torch.Tensor:
    """An image file as a tensor (1, C, H, W) in [-1, 1] (C: 3 for RGB, 1 for grey; ``channels``
    converts).

    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "a.png"
    >>> _ = write_image(torch.zeros(1, 3, 4, 4), p)
    >>> read_image(p).shape, read_image(p, 1).shape
    (torch.Size([1, 3, 4, 4]), torch.Size([1, 1, 4, 4]))
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"FILE {path}: no such file")
    try:
        img = Image.open(path)
        img.load()
    except OSError as err:
        raise ValueError(f"FILE {path}: not an image PIL can read ({err})") from None
    mode = {1: "L", 3: "RGB"}.get(channels or (1 if img.mode in ("L", "I", "1") else 3))
    arr = np.asarray(img.convert(mode), dtype=np.float32) / 127.5 - 1.0
    x = torch.from_numpy(arr)
    x = x[None] if x.dim() == 2 else x.permute(2, 0, 1)
    return x[None].contiguous()


def write_image(x: torch.Tensor, path: str | Path) -> Path:
    """Save one image (1, C, H, W) or (C, H, W) in [-1, 1] as a PNG (atomic).

    >>> import tempfile
    >>> write_image(torch.zeros(3, 2, 2), Path(tempfile.mkdtemp()) / "b.png").suffix
    '.png'
    """
    x = x[0] if x.dim() == 4 else x
    arr = ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().byte()
    arr = arr[0].numpy() if arr.shape[0] == 1 else arr.permute(1, 2, 0).numpy()
    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(arr).save(tmp, format="PNG")
    return path


def _direction_arg(model: str, text: str) -> tuple[str | Direction, dict | None]:
    """A named direction of ``model`` or the path of a saved Direction (checked, nothing loaded but the file)."""
    p = Path(text)
    if p.suffix == ".safetensors" or p.exists():
        if not p.is_file():
            raise ValueError(f"--direction {text}: no such file")
        d = Direction.load(p)
        if d.model != model:
            raise ValueError(f"--direction {text} was made for model {d.model!r}, not {model!r}")
        return d, None
    known = list_named(model)
    if text not in known:
        raise ValueError(f"--direction {text!r}: not a named direction of {model} (known: {', '.join(known) or 'none'}) "
                         "nor a saved Direction file (.safetensors)")
    return text, named_info(model, text)


def main(argv: Sequence[str] | None = None) -> int:
    """Edit an image file along a named or saved direction (see the module docstring).

    >>> main(["scene.png", "--out", "x"])   # refused by the parser: --direction is required
    Traceback (most recent call last):
    ...
    SystemExit: 2
    """
    p = ArgumentParser(prog="diffgeo edit image", description=__doc__.partition(">>>")[0])
    p.add_argument("file", metavar="FILE")
    p.add_argument("--model", default="shapes")
    p.add_argument("--direction", required=True, help="a named direction (e.g. colour:blue) or a .safetensors file")
    p.add_argument("--strength", type=finite_float, default=None, help="default: the named direction's")
    p.add_argument("--steps", type=positive_int, default=None, help="DDIM steps (default: the direction's, else 10)")
    p.add_argument("--t-edit", type=positive_int, default=500, help="t_edit of a saved direction (named: its own)")
    p.add_argument("--out", required=True, help="output folder")
    args = p.parse_args(sys.argv[1:] if argv is None else list(argv))
    image, (direction, info), out = preflight(
        p, lambda: read_image(args.file), lambda: _direction_arg(check_model_arg(args.model), args.direction),
        lambda: check_output_folder(args.out, "--out"))
    if info is None:
        if args.strength is None:
            p.error("--strength is required with a saved direction (a named one brings its own)")
        info = {"name": Path(args.direction).name, "space": direction.space, "t_edit": args.t_edit,
                "steps": args.steps or 10, "strength": args.strength, "prompt": ""}
    model = load(args.model)
    image = image if image.shape[1] == model.x_shape[0] else read_image(args.file, model.x_shape[0])
    if tuple(image.shape[1:]) != tuple(model.x_shape):
        p.error(f"FILE {args.file} is {tuple(image.shape[1:])} (C, H, W); {model.name} takes {tuple(model.x_shape)}")
    steps = args.steps or int(info["steps"])
    kw = {"prompt": info.get("prompt", "")} if model.is_conditional else {}
    with torch.no_grad():
        inv = invert(model, image.to(model.device, model.dtype), steps=steps, progress=False, **kw)
    before, after = named_edit(model, inv.result, direction, info=info if isinstance(direction, Direction) else None,
                               strength=args.strength, steps=steps)
    rmse = float((before.cpu() - image).pow(2).mean().sqrt())
    report: dict[str, Any] = {"file": str(args.file), "model": model.name, "direction": str(args.direction),
                              "strength": args.strength if args.strength is not None else info["strength"],
                              "steps": steps, "row": {k: v for k, v in info.items() if k != "meta"},
                              "inversion_rmse": rmse}
    reader = entry(model).reader
    if reader is not None:
        r = get_reader(reader)
        reads = [r.read(x.cpu()) for x in (image, after)]
        report["read"] = {k: {f: (str(r.classes[f][int(v[0])]) if f in r.classes else bool(v[0])) for f, v in rd.items()}
                          for k, rd in zip(("before", "after"), reads)}
        if "valid" in reads[1] and not bool(reads[1]["valid"][0]):
            logger.warning("the edited image is not a valid scene (the reader rejects it): try a smaller --strength")
    out = Path(args.out)
    write_image(after, out / "edited.png")
    save_image_grid(torch.cat([image, before.cpu(), after.cpu()]), out / "before_after.png", nrow=3,
                    title=f"original | reconstruction | {args.direction}")
    with atomic_path(out / "edit.json") as tmp:
        tmp.write_text(json.dumps(report, indent=1, default=str))
    sys.stdout.write(json.dumps({"out": str(out), "inversion_rmse": rmse, **report.get("read", {})}) + "\n")
    return 0
