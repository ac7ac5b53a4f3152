"""Package folders from training runs: ``export`` (the EMA weights of a checkpoint) and ``average``
(a weight average of exports), each with its provenance, written atomically.

>>> import tempfile, pathlib
>>> with _new_folder(pathlib.Path(tempfile.mkdtemp()) / "out") as tmp:
...     _ = (tmp / "a.txt").write_text("a")
>>> (tmp.parent / "out" / "a.txt").read_text()
'a'
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors.torch import load_file

from diffgeo.core.io import load_tensors_json
from diffgeo.models.loading import EMBEDDED_DIR
from diffgeo.models.text_encoder import REF_FILE, encoder_reference
from diffgeo.training.data import _make_unet, get_recipe
from diffgeo.training.losses import HELD_OUT_SEED, held_out_loss

__all__ = ["export", "average"]

log = logging.getLogger(__name__)

# provenance keys that describe the recipe, not a run: an average keeps them once, at its top level
_RECIPE_KEYS = ("name", "dataset", "factors", "loss_history", "parameters", "torch", "text_encoder", "caption_dropout")


def _command(name: str, meta: dict) -> str:
    cmd = f"python -m diffgeo train {name} --steps {meta['step']} --seed {meta['seed']}"
    if meta.get("warm_start"):
        cmd += f" --init <the {meta['warm_start']['steps']}-step export>"
    if meta.get("loss_weight", "eps") != "eps":
        cmd += f" --loss-weight {meta['loss_weight']} --weight-cap {meta['weight_cap']:g}"
    if meta.get("lr_decay"):
        cmd += " --lr-decay"
    if meta.get("prediction", "epsilon") != "epsilon":
        cmd += f" --prediction {meta['prediction']}"
    recipe = get_recipe(name)
    for key in ("ema_decay", "batch_size"):
        if meta.get(key, getattr(recipe, key)) != getattr(recipe, key):
            cmd += f" --{key.replace('_', '-')} {meta[key]:g}"
    if not meta.get("ema_warmup", True):
        cmd += " --no-ema-warmup"
    return cmd


def _schedule_meta(meta: dict) -> dict:
    """Provenance of the options beyond the recipe (absent for a plain run from scratch)."""
    out = {}
    if meta.get("warm_start"):
        ws = meta["warm_start"]
        out["warm_start"] = ws
        out["wall_seconds_note"] = ("this run only; wall_seconds_total adds the chain of warm starts "
                                    "(warm_start, nested)")
        earlier = ws.get("wall_seconds_total", ws.get("wall_seconds"))
        if earlier is not None:
            out["wall_seconds_total"] = round(meta["wall_seconds"] + earlier, 1)
    if meta.get("prediction", "epsilon") != "epsilon":
        out["prediction_type"] = meta["prediction"]
    if not meta.get("ema_warmup", True):
        out["ema_schedule"] = "the full decay from the first step (no ramp; the EMA starts from the init's weights)"
    if meta.get("loss_weight", "eps") != "eps" or meta.get("lr_decay"):
        out["loss_weight"] = meta.get("loss_weight", "eps")
        out["weight_cap"] = meta.get("weight_cap")
        out["lr_schedule"] = "cosine to 0 over the run after warm-up" if meta.get("lr_decay") else "constant"
        out["loss_history_note"] = "loss_history is the plain epsilon MSE (unweighted; of the implied eps for a v model) in every run"
    return out


def export(name: str, *, run_dir: Path, dest: Path | None = None, command: str = "") -> Path:
    """Write the EMA weights of the latest checkpoint of ``run_dir`` as a diffusers folder with its
    provenance (default: inside the package, ``diffgeo/embedded/NAME``; atomic replace).

    >>> import tempfile, pathlib, diffgeo
    >>> from diffgeo.training.loop import train
    >>> run = pathlib.Path(tempfile.mkdtemp())
    >>> _ = train("shapes", run_dir=run, steps=1, threads=1, progress=False)
    >>> folder = export("shapes", run_dir=run, dest=run / "shapes-1step")
    >>> diffgeo.load(folder, device="cpu").provenance["steps"]
    1
    """
    from diffusers import DDPMScheduler

    recipe = get_recipe(name)
    tensors, meta = load_tensors_json(run_dir / "checkpoint.safetensors")
    unet = _make_unet(recipe)
    unet.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})

    dest = dest or EMBEDDED_DIR / name
    with _new_folder(dest) as tmp:
        unet.save_pretrained(tmp / "unet", safe_serialization=True)
        DDPMScheduler(**{**recipe.scheduler, "prediction_type": meta.get("prediction", "epsilon")}
                      ).save_pretrained(tmp / "scheduler")
        text_meta = {}
        if recipe.conditional:

            ref = encoder_reference(recipe.text_max_length)
            (tmp / REF_FILE).write_text(json.dumps(ref, indent=1))
            text_meta = {"text_encoder": ref, "caption_dropout": recipe.caption_dropout}
        last = meta["history"][-5:]
        provenance = {
            "name": name,
            "dataset": recipe.dataset,
            "factors": recipe.factors,
            # A run is deterministic per step; with a constant learning rate after warm-up the
            # checkpoint at step N is what `--steps N` reproduces (with --lr-decay, only the full run).
            "training_command": command or _command(name, meta),
            "steps": meta["step"],
            "batch_size": meta.get("batch_size", recipe.batch_size),
            "lr": recipe.lr,
            "ema_decay": meta.get("ema_decay", recipe.ema_decay),
            "seed": meta["seed"],
            "wall_seconds": round(meta["wall_seconds"], 1),
            **_schedule_meta(meta),
            "final_loss": round(sum(v for _, v in last) / max(len(last), 1), 5),
            "loss_history": meta["history"],
            "parameters": sum(p.numel() for p in unet.parameters()),
            "torch": torch.__version__,
            **text_meta,
        }
        (tmp / "provenance.json").write_text(json.dumps(provenance, indent=1))
    return dest


@contextmanager
def _new_folder(dest: Path) -> Iterator[Path]:
    """``with _new_folder(dest) as tmp:`` fill the hidden folder ``tmp`` beside ``dest``; on success it
    replaces ``dest`` in one rename, on any error it is removed and ``dest`` is left as it was."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    tmp.chmod(0o755)
    try:
        yield tmp
        old = dest.with_name(f".{dest.name}.old")
        if dest.exists():
            os.replace(dest, old)
        os.replace(tmp, dest)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _runs(record: dict) -> dict[tuple, float]:
    """Wall seconds of every run behind a provenance (or warm-start) record, keyed by (command, steps,
    wall seconds): a run that two averaged branches share appears once."""
    own = record.get("training_command", record.get("from"))
    runs = {(own, record.get("steps"), record.get("wall_seconds")): record.get("wall_seconds") or 0.0}
    for sub in [record.get("warm_start"), *record.get("averaged", [])]:
        if sub:
            runs.update(_runs(sub))
    return runs


def average(name: str, folders: list[Path], *, dest: Path | None = None, command: str = "",
            progress: bool | None = None) -> Path:
    """Write the parameter-wise mean of the U-Nets in ``folders`` (exports of recipe ``name`` with the same
    architecture and prediction, typically fine-tunes from one init: a "model soup", Wortsman et al. 2022)
    as a package folder (default ``diffgeo/embedded/NAME``; atomic replace, nothing written on error).

    Its provenance lists each input's record under ``averaged`` (their warm-start chains included);
    ``wall_seconds_total`` counts every run behind them once, so a shared init is not counted twice.
    The held-out epsilon MSE (:func:`held_out_loss`) of the average and of each input is recorded;
    averages of models from different basins can be far worse than either, which it would show (and
    a warning is logged when the average is worse than every input).

    >>> import tempfile, pathlib, diffgeo
    >>> from diffgeo.training.loop import train
    >>> tmp = pathlib.Path(tempfile.mkdtemp())
    >>> a, b = (export("shapes", run_dir=train("shapes", run_dir=tmp / r, steps=1, seed=s, threads=1,
    ...                                         progress=False).parent, dest=tmp / f"out{r}")
    ...         for s, r in ((0, "a"), (1, "b")))
    >>> soup = average("shapes", [a, b], dest=tmp / "soup", progress=False)
    >>> [d["seed"] for d in diffgeo.load(soup, device="cpu").provenance["averaged"]]
    [0, 1]
    """
    t0 = time.time()
    folders = [Path(f) for f in folders]
    if len(folders) < 2:
        raise ValueError(f"an average needs at least two folders, got {len(folders)}")
    recipe = get_recipe(name)

    def config(folder: Path, part: str) -> dict:
        path = folder / part
        if not path.is_file():
            raise ValueError(f"{folder} has no {part}: give folders written by diffgeo.training (an export or "
                             f"an average)")
        return {k: v for k, v in json.loads(path.read_text()).items() if not k.startswith("_")}

    provs = [config(f, "provenance.json") for f in folders]
    parts = ("unet/config.json", "scheduler/scheduler_config.json") + ((REF_FILE,) if recipe.conditional else ())
    for folder, prov in zip(folders, provs):
        if prov.get("name") != name:
            raise ValueError(f"{folder} holds a {prov.get('name')!r} model, not {name!r}")
        for part in parts:
            if config(folder, part) != config(folders[0], part):
                raise ValueError(f"{folder}/{part} differs from {folders[0]}/{part}: only models with the same "
                                 f"architecture, schedule, prediction and text encoder can be averaged")
    prediction = config(folders[0], "scheduler/scheduler_config.json").get("prediction_type", "epsilon")
    unets = []
    for folder in folders:
        unet = _make_unet(recipe)
        # refuses missing, extra or misshaped tensors, naming them
        unet.load_state_dict(load_file(str(folder / "unet" / "diffusion_pytorch_model.safetensors")))
        unets.append(unet.eval())
    states = [u.state_dict() for u in unets]
    soup = _make_unet(recipe).eval()
    soup.load_state_dict({k: torch.stack([s[k].double() for s in states]).mean(0).to(v.dtype)
                          for k, v in states[0].items()})
    losses = held_out_loss(name, [soup, *unets], prediction, progress=progress)
    if losses[0] > max(losses[1:]):
        log.warning("the average's held-out epsilon MSE %.5f is above every input's (%s): the inputs may not "
                    "share a basin", losses[0], ", ".join(f"{v:.5f}" for v in losses[1:]))
    inputs = [{"folder": str(f), **{k: v for k, v in prov.items() if k not in _RECIPE_KEYS},
               "held_out_eps_mse": round(loss, 5)} for f, prov, loss in zip(folders, provs, losses[1:])]
    dest = dest or EMBEDDED_DIR / name
    with _new_folder(dest) as tmp:
        soup.save_pretrained(tmp / "unet", safe_serialization=True)
        shutil.copytree(folders[0] / "scheduler", tmp / "scheduler")
        text_meta = {}
        if recipe.conditional:
            shutil.copy2(folders[0] / REF_FILE, tmp / REF_FILE)
            text_meta = {k: provs[0][k] for k in ("text_encoder", "caption_dropout") if k in provs[0]}
        provenance = {
            "name": name,
            "dataset": recipe.dataset,
            "factors": recipe.factors,
            "training_command": command or f"python -m diffgeo train {name} --average "
                                           + " ".join(str(f) for f in folders),
            "steps": max(p["steps"] for p in provs),
            "averaged": inputs,
            "prediction_type": prediction,
            "wall_seconds": round(time.time() - t0, 1),
            "wall_seconds_note": "this average only; wall_seconds_total counts every run behind its inputs once",
            "final_loss": round(losses[0], 5),
            "final_loss_note": (f"held-out epsilon MSE ({held_out_loss.__name__}: data seed {HELD_OUT_SEED}), "
                                "not a training loss; each input's is under averaged"),
            "parameters": sum(p.numel() for p in soup.parameters()),
            "torch": torch.__version__,
            **text_meta,
        }
        provenance["wall_seconds_total"] = round(sum(_runs(provenance).values()), 1)
        (tmp / "provenance.json").write_text(json.dumps(provenance, indent=1))
    return dest
