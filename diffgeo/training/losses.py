"""Training losses: the U-Net's target, the per-sample loss weightings and the held-out loss.

>>> loss_weights(torch.tensor([0.5]), "min-snr", 5.0).tolist()
[1.0]
"""

from __future__ import annotations

import torch

from diffgeo.core.progress import progress_bar
from diffgeo.models.text_encoder import load_packaged_encoder
from diffgeo.training.data import _batch, _EmbeddingCache, get_recipe

__all__ = ["LOSS_WEIGHTS", "DEFAULT_CAP", "PREDICTIONS", "HELD_OUT_SEED", "training_target", "loss_weights",
           "held_out_loss"]

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


#: Data seed of the held-out batches: no training run uses it (``--seed`` is a small integer).
HELD_OUT_SEED = 1_000_000


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
        for b in progress_bar(range(batches), desc="held-out loss", progress=progress):
            x0, captions = _batch(name, b, batch_size, HELD_OUT_SEED)
            noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(HELD_OUT_SEED + b))
            cond = {} if embed is None else {"encoder_hidden_states": embed(captions)}
            for i, unet in enumerate(unets):
                err = _target_error(unet, x0, noise, t, abar, prediction, cond)
                totals[i] += _as_eps_error(err, abar[t], prediction).mean().item()
    return [v / batches for v in totals]
