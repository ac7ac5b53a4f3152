"""The :class:`Model`: a diffusers U-Net and its schedule seen through the maps eps and h.

Loading (embedded names, local folders, hub ids) is in :mod:`diffgeo.models.loading`; conditioning
(prompts, branches, guidance) in :mod:`diffgeo.models.conditioning`. For latent models (Stable Diffusion 1.x/2.x)
x_t is the VAE latent and :meth:`Model.decode` maps x0 to images.

>>> import diffgeo
>>> model = diffgeo.load("shapes")
>>> model.x_shape, model.h_shape
((3, 32, 32), (128, 8, 8))
>>> x = torch.randn(2, *model.x_shape)
>>> model.eps(x, 500).shape, model.h(x, 500).shape
(torch.Size([2, 3, 32, 32]), torch.Size([2, 128, 8, 8]))
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from diffgeo.core.checks import check_dtype, check_str, check_tensor, check_timesteps
from diffgeo.core.device import default_device as _core_default_device
from diffgeo.models.conditioning import Cond, as_cond, normalise_prompts, resolve_cond
from diffgeo.models.hooks import DEFAULT_MODULE, get_module, run_until
from diffgeo.models.text_encoder import PromptEncoder

__all__ = ["Model", "default_device"]

_UNET_CLASSES = ("UNet2DModel", "UNet2DConditionModel")

TimestepLike = int | torch.Tensor | Sequence[int]
PromptLike = str | Sequence[str]
CondLike = Cond | dict | None


def _is_supported_unet(unet: nn.Module) -> bool:
    import diffusers

    return isinstance(unet, tuple(getattr(diffusers, n) for n in _UNET_CLASSES))


def default_device() -> torch.device:
    """The device models load onto: ``$DIFFGEO_DEVICE`` when set, else CUDA when present, else CPU
    (:func:`diffgeo.core.device.default_device`, the one place that decides).

    >>> default_device().type in ("cuda", "cpu", "mps")
    True
    """
    return _core_default_device()


class Model:
    """A diffusion U-Net with its noise schedule, seen through eps and h.

    Attributes: ``unet`` and ``scheduler`` (the diffusers objects), ``name``, ``device``,
    ``dtype``, ``x_shape`` (C, H, W) of x_t, ``h_shape`` of h, ``alphas_cumprod`` (T,) float64
    on the CPU, ``num_train_timesteps`` T, ``h_module`` (the module whose output is h),
    ``provenance`` (dict from the folder's provenance.json, else empty), ``prediction_type``,
    ``guidance`` (the scale ``guidance_scale=None`` stands for when generating; ``load`` takes it
    from the model's entry in :mod:`diffgeo.models.zoo`, 1.0 otherwise), ``clipped_eps`` (what
    ``use_clipped_model_output=None`` stands for in sampling, inversion and editing: from the zoo
    entry like ``guidance``, False otherwise, diffusers' default); for
    latent models ``vae`` (else None), for text models ``text`` (a
    :class:`~diffgeo.models.text_encoder.PromptEncoder`, or None when the folder has no text encoder: then only
    explicit :class:`~diffgeo.models.conditioning.Cond` works).

    Input checks (shape, dtype, finiteness, t on the schedule, prompts) happen in :meth:`eps`
    and :meth:`h`. :meth:`eps_fn` and :meth:`h_fn` are the same maps without checks, for use
    inside ``torch.func`` transforms; their third argument is a :class:`~diffgeo.models.conditioning.Cond`
    (from :meth:`conditioning`), a dict ``{"encoder_hidden_states": e}``, or None.
    """

    def __init__(self, unet: nn.Module, scheduler: Any, *, name: str, h_module: str = DEFAULT_MODULE,
                 provenance: dict | None = None, vae: nn.Module | None = None, text: PromptEncoder | None = None,
                 prompt_error: str | None = None, guidance: float = 1.0, clipped_eps: bool = False):
        from diffusers import DDIMScheduler

        if not _is_supported_unet(unet):
            raise TypeError(f"unsupported U-Net class {type(unet).__name__}; diffgeo takes {', '.join(_UNET_CLASSES)}")
        self.unet = unet.eval().requires_grad_(False)
        # Sampling here is DDIM whatever the training scheduler was: same betas, DDIM steps.
        self.scheduler = scheduler if isinstance(scheduler, DDIMScheduler) else DDIMScheduler.from_config(scheduler.config)
        self.name = name
        self.h_module = check_str(h_module, "h_module")
        get_module(self.unet, h_module, what="h_module")  # fail early on a bad name
        self.provenance = provenance or {}
        self.guidance = float(guidance)  # the default scale of generation (load takes it from diffgeo.models.zoo)
        # the default of use_clipped_model_output=None (load takes it from diffgeo.models.zoo, as guidance)
        self.clipped_eps = bool(clipped_eps)
        self.prediction_type = self.scheduler.config.prediction_type
        if self.prediction_type not in ("epsilon", "v_prediction", "sample"):
            raise ValueError(f"unsupported prediction_type {self.prediction_type!r}")
        self.alphas_cumprod = self.scheduler.alphas_cumprod.double().cpu()
        self.num_train_timesteps = int(self.scheduler.config.num_train_timesteps)
        cfg = self.unet.config
        size = cfg.sample_size
        hw = (size, size) if isinstance(size, int) else tuple(size)
        self.x_shape: tuple[int, ...] = (int(cfg.in_channels), int(hw[0]), int(hw[1]))
        self._h_shape: tuple[int, ...] | None = None
        self.vae = vae.eval().requires_grad_(False) if vae is not None else None
        self.text = text
        self._prompt_error = prompt_error
        if text is not None:
            if not self.is_conditional:
                raise ValueError(f"{name}: a text encoder was given but the U-Net ({type(unet).__name__}) takes no "
                                 "text conditioning")
            dim = cfg.cross_attention_dim
            dims = {int(d) for d in (dim if isinstance(dim, (list, tuple)) else [dim])}
            if getattr(cfg, "encoder_hid_dim", None):
                dims = {int(cfg.encoder_hid_dim)}
            if dims != {text.hidden_size}:
                raise ValueError(f"{name}: tokenizer/encoder mismatch: the text encoder ({text.source}) gives "
                                 f"{text.hidden_size}-d token embeddings but the U-Net's cross-attention takes "
                                 f"{sorted(dims)}; load the text encoder the U-Net was trained with")

    # -- basic properties -------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    @property
    def is_conditional(self) -> bool:
        from diffusers import UNet2DConditionModel

        return isinstance(self.unet, UNet2DConditionModel)

    @property
    def h_shape(self) -> tuple[int, ...]:
        """Shape of h for one sample (found with one truncated forward on first use)."""
        if self._h_shape is None:
            with torch.no_grad():
                x = torch.zeros(1, *self.x_shape, device=self.device, dtype=self.dtype)
                self._h_shape = tuple(self.h_fn(x, self.timesteps_tensor(0, 1), self._probe_cond()).shape[1:])
        return self._h_shape

    @property
    def is_latent(self) -> bool:
        """True when x_t lives in a VAE's latent space."""
        return self.vae is not None

    @property
    def image_shape(self) -> tuple[int, ...]:
        """Shape (C, H, W) of one decoded image (``x_shape`` for pixel models)."""
        if self.vae is None:
            return self.x_shape
        f = 2 ** (len(self.vae.config.block_out_channels) - 1)
        return (int(self.vae.config.in_channels), self.x_shape[1] * f, self.x_shape[2] * f)

    @property
    def guidance_ok(self) -> bool:
        """False when the model is known to have no unconditional branch (trained without caption
        dropout, from its provenance); True otherwise for text models."""
        return self.is_conditional and self.provenance.get("caption_dropout", None) != 0

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> "Model":
        """Move the U-Net, VAE and text encoder (in place) and return self."""
        # dtype only when given: diffusers warns about fp32 modules whenever a dtype keyword is present
        dtype = check_dtype(dtype)
        kw = {"device": device} if dtype is None else {"device": device, "dtype": dtype}
        self.unet.to(**kw)
        if self.vae is not None:
            self.vae.to(**kw)
        if self.text is not None:
            self.text.to(device=device)
        return self

    def __repr__(self) -> str:
        return (f"Model({self.name!r}, unet={type(self.unet).__name__}, x_shape={self.x_shape}, "
                f"device={self.device}, dtype={self.dtype})")

    # -- checks -----------------------------------------------------------------------------
    def check_x(self, x_t: torch.Tensor, what: str = "x_t") -> torch.Tensor:
        """Validate a batch (B, *x_shape): tensor, shape, dtype, finite. Returns it on the model's device."""
        if not isinstance(x_t, torch.Tensor):
            raise TypeError(f"{what} must be a torch.Tensor of shape (B, {', '.join(map(str, self.x_shape))}), "
                            f"got {type(x_t).__name__}")
        check_tensor(x_t, what, floating=False, finite=False)  # real, not on the meta device, batch B >= 1
        if x_t.dim() != len(self.x_shape) + 1 or tuple(x_t.shape[1:]) != self.x_shape:
            raise ValueError(f"{what} has shape {tuple(x_t.shape)}; {self.name} expects (B, "
                             f"{', '.join(map(str, self.x_shape))}) (add a batch dimension with x[None] if needed)")
        if x_t.dtype != self.dtype:
            raise TypeError(f"{what} has dtype {x_t.dtype}; {self.name} runs in {self.dtype}: pass {what}.to({self.dtype})")
        if not torch.isfinite(x_t).all():
            raise ValueError(f"{what} contains NaN or infinite values; check the computation that produced it")
        return x_t.to(self.device)

    def check_t(self, t: TimestepLike) -> None:
        """Validate timesteps: an integer or (B,) integers in [0, T-1] (:func:`diffgeo.core.checks.check_timesteps`)."""
        check_timesteps(t, self.num_train_timesteps)

    def timesteps_tensor(self, t: TimestepLike, batch: int) -> torch.Tensor:
        """t as a (B,) int64 tensor on the model's device (a scalar is broadcast)."""
        if isinstance(t, int):  # a fill on the device: no host-to-device copy, so no wait on the device
            return torch.full((batch,), t, dtype=torch.long, device=self.device)
        tt = torch.as_tensor(t, dtype=torch.long, device=self.device)
        if tt.dim() == 0:
            tt = tt.expand(batch)
        if tt.shape != (batch,):
            raise ValueError(f"t must be a scalar or have shape ({batch},), got shape {tuple(tt.shape)}")
        return tt

    # -- conditioning -------------------------------------------------------------------------
    def _extra_inputs(self) -> list[str]:
        """U-Net keywords beyond encoder_hidden_states that this U-Net cannot run without."""
        cfg, need = self.unet.config, []
        if getattr(cfg, "addition_embed_type", None):
            need.append(f"added_cond_kwargs (addition_embed_type={cfg.addition_embed_type!r}, e.g. SDXL's "
                        "text_embeds and time_ids)")
        if getattr(cfg, "class_embed_type", None) or getattr(cfg, "num_class_embeds", None):
            need.append("class_labels")
        return need

    def _probe_cond(self) -> Cond | None:
        if not self.is_conditional:
            return None
        dim = self.unet.config.encoder_hid_dim or self.unet.config.cross_attention_dim
        dim = dim[0] if isinstance(dim, (list, tuple)) else dim
        kw = {}
        if self.unet.config.addition_embed_type == "text_time":  # SDXL: zero pooled text and time ids, (1, P), (1, 6)
            pooled = self.unet.add_embedding.linear_1.in_features - 6 * self.unet.config.addition_time_embed_dim
            kw = {"added_cond_kwargs": {"text_embeds": torch.zeros(1, pooled, device=self.device, dtype=self.dtype),
                                        "time_ids": torch.zeros(1, 6, device=self.device, dtype=self.dtype)}}
        return Cond(cond=torch.zeros(1, 1, int(dim), device=self.device, dtype=self.dtype), cond_kwargs=kw)

    def encode_prompt(self, prompts: PromptLike) -> torch.Tensor:
        """Token embeddings of prompts for the U-Net's cross-attention: (N, L, D), no gradient.

        Prompts longer than the tokenizer limit are refused (see :mod:`diffgeo.models.conditioning`).
        """
        if not self.is_conditional:
            raise ValueError(f"{self.name} is unconditional ({type(self.unet).__name__}): it takes no prompt; "
                             "drop prompt=/negative_prompt=")
        if self._prompt_error:
            raise ValueError(self._prompt_error)
        if self.text is None:
            raise ValueError(f"{self.name} has no text encoder/tokenizer: pass cond=Cond(cond=embeddings, ...) with "
                             "embeddings (B, L, D) computed elsewhere")
        need = self._extra_inputs()
        if need and not (getattr(self.text, "pooled", None) and self.unet.config.addition_embed_type == "text_time"):
            raise ValueError(f"{self.name}: this U-Net also needs {'; '.join(need)}, which diffgeo does not build "
                             "from a prompt (unsupported for prompts); pass cond=Cond(cond=e, uncond=e0, "
                             "cond_kwargs={...}, uncond_kwargs={...}) with them")
        return self.text(normalise_prompts(prompts)).to(device=self.device, dtype=self.dtype)

    def conditioning(self, prompt: PromptLike | None = None, *, negative_prompt: PromptLike | None = None,
                     branch: str | None = None, guidance_scale: float | None = None, cond: CondLike = None,
                     batch: int | None = None) -> Cond | None:
        """The :class:`~diffgeo.models.conditioning.Cond` for ``eps_fn``/``h_fn`` (None for unconditional models).

        :func:`diffgeo.models.conditioning.resolve_cond` with the geometry default: ``branch`` ``"cond"``
        (default; or the branch of a given ``cond``), ``"uncond"`` (the ``negative_prompt``,
        default ``""``) or ``"cfg"`` (needs ``guidance_scale``).

        >>> import diffgeo
        >>> diffgeo.load("digits").conditioning("a 3", branch="cfg", guidance_scale=2.0).meta()["branch"]
        'cfg'
        """
        return resolve_cond(self, prompt, negative_prompt=negative_prompt, branch=branch,
                            guidance_scale=guidance_scale, cond=cond, batch=batch, default_branch="cond")

    # -- the maps ----------------------------------------------------------------------------
    def _to_eps(self, out: torch.Tensor, x_t: torch.Tensor, t_b: torch.Tensor) -> torch.Tensor:
        if self.prediction_type == "epsilon":
            return out
        a = self._abar_on(t_b.device)[t_b].to(x_t.dtype).view(-1, *([1] * (x_t.dim() - 1)))
        if self.prediction_type == "v_prediction":  # v = sqrt(a) eps - sqrt(1-a) x0
            return a.sqrt() * out + (1 - a).sqrt() * x_t
        return (x_t - a.sqrt() * out) / (1 - a).sqrt()  # "sample": out is x0

    def _abar_on(self, device: torch.device) -> torch.Tensor:
        """alphas_cumprod (T,) on ``device``, copied once per device (a copy per call would make every
        step of a v-prediction model wait for the device)."""
        cached = getattr(self, "_abar_cache", None)
        if cached is None or cached.device != device:
            cached = self._abar_cache = self.alphas_cumprod.to(device)
        return cached

    def _branches(self, fn, x_t: torch.Tensor, t_b: torch.Tensor, cond: CondLike) -> torch.Tensor:
        """Run ``fn(x, t, **unet_kwargs)`` on the branch of ``cond``; cfg runs both as one batch of 2B
        (unconditional first) and returns ``q_u + w (q_c - q_u)``."""
        c = as_cond(cond)
        if c is None:
            return fn(x_t, t_b)
        b = x_t.shape[0]
        kw = {"encoder_hidden_states": c.embeddings(b), **c.unet_kwargs(b)}
        if c.branch != "cfg":
            return fn(x_t, t_b, **kw)
        q_u, q_c = fn(torch.cat([x_t, x_t]), torch.cat([t_b, t_b]), **kw).chunk(2)
        return q_u + c.guidance_scale * (q_c - q_u)

    def eps_fn(self, x_t: torch.Tensor, t_b: torch.Tensor, cond: CondLike = None) -> torch.Tensor:
        """eps(x_t, t) without checks: x_t (B, *x_shape), t_b (B,) long; returns (B, *x_shape).

        ``cond``: a :class:`~diffgeo.models.conditioning.Cond` (its branch decides cond / uncond / cfg), a dict
        ``{"encoder_hidden_states": (B or 1, L, D)}`` (conditional branch), or None.
        """
        def fn(x, t, **kw):
            return self._to_eps(self.unet(x, t, **kw).sample, x, t)

        return self._branches(fn, x_t, t_b, cond)

    def h_fn(self, x_t: torch.Tensor, t_b: torch.Tensor, cond: CondLike = None) -> torch.Tensor:
        """h(x_t, t) without checks, running the U-Net only as far as ``h_module``.

        ``cond`` as in :meth:`eps_fn`; on ``"cfg"`` h is the same combination h_u + w (h_c - h_u).
        """
        def fn(x, t, **kw):
            return run_until(self.unet, self.h_module, x, t, **kw)

        return self._branches(fn, x_t, t_b, cond)

    def eps(self, x_t: torch.Tensor, t: TimestepLike, *, prompt: PromptLike | None = None,
            negative_prompt: PromptLike | None = None, branch: str | None = None,
            guidance_scale: float | None = None, cond: CondLike = None) -> torch.Tensor:
        """Predicted noise eps(x_t, t): x_t (B, *x_shape), t int or (B,); returns (B, *x_shape).

        v- and x0-predicting models are converted to eps with the schedule. Text models: ``prompt``
        (str or one per sample; None = ``""``), ``branch`` ``"cond"`` (default, or the branch of
        a given ``cond``), ``"uncond"`` (the ``negative_prompt``, default ``""``) or ``"cfg"``
        (needs ``guidance_scale``); or an explicit ``cond``. See :meth:`conditioning`.

        >>> import diffgeo
        >>> model = diffgeo.load("shapes")
        >>> model.eps(torch.zeros(2, *model.x_shape), 500).shape
        torch.Size([2, 3, 32, 32])
        """
        x_t = self.check_x(x_t)
        self.check_t(t)
        c = self.conditioning(prompt, negative_prompt=negative_prompt, branch=branch, guidance_scale=guidance_scale,
                              cond=cond, batch=x_t.shape[0])
        return self.eps_fn(x_t, self.timesteps_tensor(t, x_t.shape[0]), c)

    def h(self, x_t: torch.Tensor, t: TimestepLike, *, prompt: PromptLike | None = None,
          negative_prompt: PromptLike | None = None, branch: str | None = None,
          guidance_scale: float | None = None, cond: CondLike = None) -> torch.Tensor:
        """h(x_t, t): the output of ``h_module`` (default the mid block), (B, *h_shape).

        Only the encoder half of the U-Net runs (conv_in, time embedding, down blocks, mid block).
        Prompt keywords as in :meth:`eps`; the reference code's Jacobian setup is
        ``branch="cond"`` with the edit prompt.
        """
        x_t = self.check_x(x_t)
        self.check_t(t)
        c = self.conditioning(prompt, negative_prompt=negative_prompt, branch=branch, guidance_scale=guidance_scale,
                              cond=cond, batch=x_t.shape[0])
        return self.h_fn(x_t, self.timesteps_tensor(t, x_t.shape[0]), c)

    # -- pixels <-> x ---------------------------------------------------------------------------
    def decode(self, x0: torch.Tensor) -> torch.Tensor:
        """Images (B, *image_shape) in [-1, 1] from x0 (B, *x_shape); identity for pixel models.

        Latent models: ``vae.decode(x0 / scaling_factor (+ shift_factor))``, clamped to [-1, 1].
        """
        if self.vae is None:
            return x0
        x0 = self.check_x(x0, "x0")
        cfg = self.vae.config
        z = x0.to(self.vae.dtype) / cfg.scaling_factor
        if getattr(cfg, "shift_factor", None):
            z = z + cfg.shift_factor
        return self.vae.decode(z).sample.clamp(-1, 1)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """x0 (B, *x_shape) from images (B, *image_shape) in [-1, 1]; identity for pixel models.

        Latent models use the VAE posterior mean times ``scaling_factor``, as Stable Diffusion's
        training does.

        >>> import diffgeo
        >>> model = diffgeo.load("shapes")
        >>> images = torch.zeros(2, *model.image_shape)
        >>> bool((model.decode(model.encode_image(images)) == images).all())   # pixel model: identity
        True
        """
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or tuple(images.shape[1:]) != self.image_shape:
            raise ValueError(f"images must be a tensor (B, {', '.join(map(str, self.image_shape))}) in [-1, 1], got "
                             f"{getattr(images, 'shape', type(images).__name__)}")
        check_tensor(images, "images")  # real, finite (NaN would pass the range test below), not empty
        if images.min() < -1.01 or images.max() > 1.01:
            raise ValueError("images must be in [-1, 1] (map [0, 1] images with 2 * x - 1)")
        if self.vae is None:
            return images.to(self.device, self.dtype)
        cfg = self.vae.config
        dist = self.vae.encode(images.to(self.device, self.vae.dtype)).latent_dist
        z = dist.mean
        if getattr(cfg, "shift_factor", None):
            z = z - cfg.shift_factor
        return (z * cfg.scaling_factor).to(self.dtype)
