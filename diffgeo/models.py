"""Loading diffusion models: embedded short names, local diffusers folders and hub ids.

One code path for all three: an embedded name resolves to a folder inside the package in
diffusers' ``save_pretrained`` layout, and every folder or hub id then goes through diffusers'
``from_pretrained`` (safetensors only, no remote code). Stable Diffusion 1.x/2.x pipelines
(``model_index.json`` with ``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``)
load the same way; for them x_t is the VAE latent, :meth:`Model.decode` maps x0 to images and
prompts select the conditioning (see :mod:`diffgeo.text` for the branches).

>>> import diffgeo
>>> model = diffgeo.load("shapes")
>>> model.x_shape, model.h_shape
((3, 32, 32), (128, 8, 8))
>>> x = torch.randn(2, *model.x_shape)
>>> model.eps(x, 500).shape, model.h(x, 500).shape
(torch.Size([2, 3, 32, 32]), torch.Size([2, 128, 8, 8]))
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from .hooks import DEFAULT_MODULE, get_module, run_until
from .text import REF_FILE, Cond, PromptEncoder, _check_branch, as_cond, normalise_prompts

__all__ = ["Model", "load", "list_models", "EMBEDDED_DIR"]

log = logging.getLogger(__name__)

EMBEDDED_DIR = Path(__file__).parent / "embedded"
_UNET_CLASSES = ("UNet2DModel", "UNet2DConditionModel")
_PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth", ".pkl")

TimestepLike = int | torch.Tensor | Sequence[int]
PromptLike = str | Sequence[str]
CondLike = Cond | dict | None
# Pipeline components diffgeo uses; other entries of model_index.json are ignored (with a note).
_COMPONENTS = ("unet", "scheduler", "vae", "text_encoder", "tokenizer")


def list_models() -> list[str]:
    """Names of the models embedded in the package.

    >>> "shapes" in list_models()
    True
    """
    if not EMBEDDED_DIR.is_dir():
        return []
    return sorted(p.name for p in EMBEDDED_DIR.iterdir() if (p / "provenance.json").is_file())


def _is_supported_unet(unet: nn.Module) -> bool:
    import diffusers

    return isinstance(unet, tuple(getattr(diffusers, n) for n in _UNET_CLASSES))


def default_device() -> torch.device:
    """CUDA when present, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Model:
    """A diffusion U-Net with its noise schedule, seen through eps and h.

    Attributes: ``unet`` and ``scheduler`` (the diffusers objects), ``name``, ``device``,
    ``dtype``, ``x_shape`` (C, H, W) of x_t, ``h_shape`` of h, ``alphas_cumprod`` (T,) float64
    on the CPU, ``num_train_timesteps`` T, ``h_module`` (the module whose output is h),
    ``provenance`` (dict from the folder's provenance.json, else empty), ``prediction_type``; for
    latent models ``vae`` (else None), for text models ``text`` (a
    :class:`~diffgeo.text.PromptEncoder`, or None when the folder has no text encoder: then only
    explicit :class:`~diffgeo.text.Cond` works).

    Input checks (shape, dtype, finiteness, t on the schedule, prompts) happen in :meth:`eps`
    and :meth:`h`. :meth:`eps_fn` and :meth:`h_fn` are the same maps without checks, for use
    inside ``torch.func`` transforms; their third argument is a :class:`~diffgeo.text.Cond`
    (from :meth:`conditioning`), a dict ``{"encoder_hidden_states": e}``, or None.
    """

    def __init__(self, unet: nn.Module, scheduler: Any, *, name: str, h_module: str = DEFAULT_MODULE,
                 provenance: dict | None = None, vae: nn.Module | None = None, text: PromptEncoder | None = None,
                 prompt_error: str | None = None):
        from diffusers import DDIMScheduler

        if not _is_supported_unet(unet):
            raise TypeError(f"unsupported U-Net class {type(unet).__name__}; diffgeo takes {', '.join(_UNET_CLASSES)}")
        self.unet = unet.eval().requires_grad_(False)
        # Sampling here is DDIM whatever the training scheduler was: same betas, DDIM steps.
        self.scheduler = scheduler if isinstance(scheduler, DDIMScheduler) else DDIMScheduler.from_config(scheduler.config)
        self.name = name
        self.h_module = h_module
        get_module(self.unet, h_module)  # fail early on a bad name
        self.provenance = provenance or {}
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
        self.unet.to(device=device, dtype=dtype)
        if self.vae is not None:
            self.vae.to(device=device, dtype=dtype)
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
        if x_t.dim() != len(self.x_shape) + 1 or tuple(x_t.shape[1:]) != self.x_shape:
            raise ValueError(f"{what} has shape {tuple(x_t.shape)}; {self.name} expects (B, "
                             f"{', '.join(map(str, self.x_shape))}) (add a batch dimension with x[None] if needed)")
        if x_t.dtype != self.dtype:
            raise TypeError(f"{what} has dtype {x_t.dtype}; {self.name} runs in {self.dtype}: pass {what}.to({self.dtype})")
        if not torch.isfinite(x_t).all():
            raise ValueError(f"{what} contains NaN or infinite values; check the computation that produced it")
        return x_t.to(self.device)

    def check_t(self, t: TimestepLike) -> None:
        """Validate timesteps: integers in [0, T-1]."""
        tt = torch.as_tensor(t)
        if tt.is_floating_point() or tt.is_complex():
            raise TypeError(f"t must be an integer scheduler timestep in [0, {self.num_train_timesteps - 1}], got {t!r}")
        if tt.numel() == 0 or int(tt.min()) < 0 or int(tt.max()) >= self.num_train_timesteps:
            raise ValueError(f"t={t!r} is outside the schedule: timesteps are integers in "
                             f"[0, {self.num_train_timesteps - 1}]")

    def timesteps_tensor(self, t: TimestepLike, batch: int) -> torch.Tensor:
        """t as a (B,) int64 tensor on the model's device (a scalar is broadcast)."""
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
        return Cond(cond=torch.zeros(1, 1, int(dim), device=self.device, dtype=self.dtype))

    def encode_prompt(self, prompts: PromptLike) -> torch.Tensor:
        """Token embeddings of prompts for the U-Net's cross-attention: (N, L, D), no gradient.

        Prompts longer than the tokenizer limit are refused (see :mod:`diffgeo.text`).
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
        if need:
            raise ValueError(f"{self.name}: this U-Net also needs {'; '.join(need)}, which diffgeo does not build "
                             "from a prompt (unsupported for prompts); pass cond=Cond(cond=e, uncond=e0, "
                             "cond_kwargs={...}, uncond_kwargs={...}) with them")
        return self.text(normalise_prompts(prompts)).to(device=self.device, dtype=self.dtype)

    def conditioning(self, prompt: PromptLike | None = None, *, negative_prompt: PromptLike | None = None,
                     branch: str = "cond", guidance_scale: float | None = None,
                     batch: int | None = None) -> Cond | None:
        """The :class:`~diffgeo.text.Cond` for ``eps_fn``/``h_fn`` (None for unconditional models).

        prompt: a string or one per sample (None: the empty prompt ``""``); negative_prompt:
        the unconditional branch's prompt (None: ``""``); branch: ``"cond"``, ``"uncond"`` or
        ``"cfg"``; guidance_scale: required for (and only for) ``"cfg"``; batch: B to check
        prompt lists against (a single prompt gives embeddings of batch 1, broadcast later).
        """
        _check_branch(branch)
        if branch == "cfg" and guidance_scale is None:
            raise ValueError("branch='cfg' needs guidance_scale= (e.g. 7.5): the combination is "
                             "q_uncond + w (q_cond - q_uncond)")
        if branch != "cfg" and guidance_scale not in (None, 1, 1.0):
            raise ValueError(f"guidance_scale={guidance_scale} only applies to branch='cfg' (got branch={branch!r}); "
                             "pass branch='cfg' to guide")
        if not self.is_conditional:
            if prompt is not None or negative_prompt is not None:
                raise ValueError(f"{self.name} is unconditional ({type(self.unet).__name__}): it takes no prompt; "
                                 "drop prompt=/negative_prompt= (or load a text-conditioned model)")
            if branch != "cond" or guidance_scale not in (None, 1, 1.0):
                raise ValueError(f"{self.name} is unconditional: it has no conditional/unconditional branches to "
                                 f"guide between (branch={branch!r}, guidance_scale={guidance_scale}); use "
                                 "guidance_scale=1 and the default branch")
            return None
        if branch != "cond" and not self.guidance_ok:
            raise ValueError(f"{self.name} was trained without caption dropout (provenance: caption_dropout=0), so "
                             f"it has no unconditional branch: branch={branch!r} / guidance is meaningless; use "
                             "branch='cond' and guidance_scale=1")
        single = isinstance(prompt, str) or prompt is None
        prompts = normalise_prompts("" if prompt is None else prompt, None if single else batch)
        if batch is not None and not single and len(prompts) != batch:
            raise ValueError(f"prompt has {len(prompts)} entries for a batch of {batch}")
        cond = self.encode_prompt(prompts) if branch != "uncond" else None
        uncond = None
        negatives = None
        if branch != "cond":
            neg_single = isinstance(negative_prompt, str) or negative_prompt is None
            negatives = normalise_prompts("" if negative_prompt is None else negative_prompt,
                                          None if neg_single else batch, "negative_prompt")
            uncond = self.encode_prompt(negatives)
            if cond is None:
                cond = uncond  # placeholder: the uncond branch never reads it
        return Cond(cond=cond, uncond=uncond, branch=branch, guidance_scale=float(guidance_scale or 1.0),
                    prompt=prompts, negative_prompt=negatives)

    def _check_cond(self, cond: CondLike) -> Cond | None:
        """Validate an explicit conditioning against this U-Net (None is fine only when unconditional)."""
        c = as_cond(cond)
        if c is None:
            if self.is_conditional:
                raise ValueError(f"{self.name} is text-conditioned: pass prompt= (or cond=Cond(...)); "
                                 "prompt='' is the unconditional prompt")
            return None
        if not self.is_conditional:
            raise ValueError(f"{self.name} is unconditional and takes no conditioning; drop prompt/cond")
        kwargs = c.cond_kwargs if c.branch == "cond" else c.uncond_kwargs
        missing = [n for n in self._extra_inputs() if n.split(" ")[0] not in kwargs]
        if missing:
            raise ValueError(f"{self.name}: this U-Net needs {'; '.join(missing)} in cond_kwargs/uncond_kwargs of "
                             "the Cond: diffgeo supports it only when that extra conditioning is supplied")
        if c.branch != "cond" and not self.guidance_ok:
            raise ValueError(f"{self.name} has no unconditional branch (trained without caption dropout): "
                             f"branch={c.branch!r} is refused")
        return c

    def _resolve_cond(self, prompt: PromptLike | None, negative_prompt: PromptLike | None, branch: str,
                      guidance_scale: float | None, cond: CondLike, batch: int) -> Cond | None:
        if cond is not None:
            if prompt is not None or negative_prompt is not None:
                raise ValueError("pass either prompt=/negative_prompt= or cond=, not both")
            c = as_cond(cond)
            if c is not None and branch != "cond" and branch != c.branch:
                c = c.with_branch(branch, guidance_scale)  # an explicit branch= overrides the Cond's
            elif c is not None and guidance_scale is not None:
                c = c.with_branch(c.branch, guidance_scale)
            return self._check_cond(c)
        return self.conditioning(prompt, negative_prompt=negative_prompt, branch=branch,
                                 guidance_scale=guidance_scale, batch=batch)

    # -- the maps ----------------------------------------------------------------------------
    def _to_eps(self, out: torch.Tensor, x_t: torch.Tensor, t_b: torch.Tensor) -> torch.Tensor:
        if self.prediction_type == "epsilon":
            return out
        a = self.alphas_cumprod.to(self.device)[t_b].to(x_t.dtype).view(-1, *([1] * (x_t.dim() - 1)))
        if self.prediction_type == "v_prediction":  # v = sqrt(a) eps - sqrt(1-a) x0
            return a.sqrt() * out + (1 - a).sqrt() * x_t
        return (x_t - a.sqrt() * out) / (1 - a).sqrt()  # "sample": out is x0

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

        ``cond``: a :class:`~diffgeo.text.Cond` (its branch decides cond / uncond / cfg), a dict
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
            negative_prompt: PromptLike | None = None, branch: str = "cond", guidance_scale: float | None = None,
            cond: CondLike = None) -> torch.Tensor:
        """Predicted noise eps(x_t, t): x_t (B, *x_shape), t int or (B,); returns (B, *x_shape).

        v- and x0-predicting models are converted to eps with the schedule. Text models: ``prompt``
        (str or one per sample; None = ``""``), ``branch`` ``"cond"`` (default), ``"uncond"``
        (the ``negative_prompt``, default ``""``) or ``"cfg"`` (needs ``guidance_scale``); or an
        explicit ``cond``.
        """
        x_t = self.check_x(x_t)
        self.check_t(t)
        c = self._resolve_cond(prompt, negative_prompt, branch, guidance_scale, cond, x_t.shape[0])
        return self.eps_fn(x_t, self.timesteps_tensor(t, x_t.shape[0]), c)

    def h(self, x_t: torch.Tensor, t: TimestepLike, *, prompt: PromptLike | None = None,
          negative_prompt: PromptLike | None = None, branch: str = "cond", guidance_scale: float | None = None,
          cond: CondLike = None) -> torch.Tensor:
        """h(x_t, t): the output of ``h_module`` (default the mid block), (B, *h_shape).

        Only the encoder half of the U-Net runs (conv_in, time embedding, down blocks, mid block).
        Prompt keywords as in :meth:`eps`; the reference code's Jacobian setup is
        ``branch="cond"`` with the edit prompt.
        """
        x_t = self.check_x(x_t)
        self.check_t(t)
        c = self._resolve_cond(prompt, negative_prompt, branch, guidance_scale, cond, x_t.shape[0])
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

    def encode_image(self, images: torch.Tensor, *, sample: bool = False,
                     generator: torch.Generator | None = None) -> torch.Tensor:
        """x0 (B, *x_shape) from images (B, *image_shape) in [-1, 1]; identity for pixel models.

        Latent models use the VAE posterior mean (``sample=True`` draws from it instead), times
        ``scaling_factor``, as Stable Diffusion's training does.
        """
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or tuple(images.shape[1:]) != self.image_shape:
            raise ValueError(f"images must be a tensor (B, {', '.join(map(str, self.image_shape))}) in [-1, 1], got "
                             f"{getattr(images, 'shape', type(images).__name__)}")
        if images.min() < -1.01 or images.max() > 1.01:
            raise ValueError("images must be in [-1, 1] (map [0, 1] images with 2 * x - 1)")
        if self.vae is None:
            return images.to(self.device, self.dtype)
        cfg = self.vae.config
        dist = self.vae.encode(images.to(self.device, self.vae.dtype)).latent_dist
        z = dist.sample(generator) if sample else dist.mean
        if getattr(cfg, "shift_factor", None):
            z = z - cfg.shift_factor
        return (z * cfg.scaling_factor).to(self.dtype)


# -- loading ---------------------------------------------------------------------------------
def _resolve(name_or_path: str | Path) -> tuple[str, str, dict | None, bool]:
    """(source for from_pretrained, display name, provenance or None, is_local_folder)."""
    name = str(name_or_path)
    embedded = EMBEDDED_DIR / name
    if "/" not in name and "\\" not in name and (embedded / "provenance.json").is_file():
        return str(embedded), name, json.loads((embedded / "provenance.json").read_text()), True
    path = Path(name).expanduser()
    if path.is_dir():  # a copy of an embedded model or a `diffgeo.train` export keeps its provenance
        prov = path / "provenance.json"
        return str(path), path.name, json.loads(prov.read_text()) if prov.is_file() else None, True
    if path.exists():
        raise ValueError(f"{name} is a file; pass the folder that holds unet/ and scheduler/ (diffusers' "
                         "save_pretrained layout)")
    if name.count("/") == 1 and not name.startswith((".", "/", "~")):
        return name, name, None, False  # a hub id: diffusers resolves it (needs network or a local HF cache)
    known = ", ".join(list_models()) or "(none)"
    raise ValueError(f"unknown model {name!r}: not an embedded name (known: {known}), not an existing "
                     "folder, and not a hub id of the form 'owner/name'. Pass a local folder in diffusers' "
                     "save_pretrained layout (unet/, scheduler/) or a hub id such as 'google/ddpm-cifar10-32'.")


def _model_index(source: str, local: bool) -> dict[str, Any] | None:
    """The pipeline's components from model_index.json ({name: [library, class] or [None, None]})."""
    if local:
        f = Path(source) / "model_index.json"
        if not f.is_file():
            return None
        raw = json.loads(f.read_text())
    else:
        from diffusers import DiffusionPipeline

        try:
            raw = DiffusionPipeline.load_config(source)
        except (OSError, ValueError):
            return None
    return {k: v for k, v in raw.items() if not k.startswith("_") and isinstance(v, (list, tuple)) and len(v) == 2}


def _check_weights(folder: Path, what: str) -> None:
    files = [p.name for p in folder.iterdir()]
    if any(f.endswith(".safetensors") for f in files):
        return
    pickled = [f for f in files if f.endswith(_PICKLE_SUFFIXES)]
    if pickled:
        raise ValueError(f"{folder} has only pickled weights ({', '.join(sorted(pickled))}); diffgeo loads "
                         f"safetensors only. Convert the {what} once in a trusted environment with "
                         "from_pretrained(folder).save_pretrained(folder, safe_serialization=True)")
    raise FileNotFoundError(f"{folder} has no weights (no .safetensors file) for the {what}")


def _check_folder(path: Path, index: dict[str, Any] | None) -> None:
    """Every component the pipeline needs is there, with safetensors weights; name what is missing."""
    listed = {k for k, v in (index or {}).items() if v[0] is not None}
    for comp in ("unet", "scheduler"):
        if index is not None and comp not in listed:
            raise FileNotFoundError(f"{path}/model_index.json lists no {comp!r} component; diffgeo needs unet/ and "
                                    "scheduler/")
    unet_dir = path / "unet"
    if not (unet_dir / "config.json").is_file():
        raise FileNotFoundError(f"{path} has no U-Net (missing the pipeline component 'unet'): expected "
                                f"{unet_dir}/config.json "
                                "(diffusers' save_pretrained layout: unet/, scheduler/)")
    _check_weights(unet_dir, "U-Net")
    if not (path / "scheduler" / "scheduler_config.json").is_file():
        raise FileNotFoundError(f"{path} is missing the pipeline component 'scheduler': expected "
                                f"{path}/scheduler/scheduler_config.json")
    for comp in ("vae", "text_encoder", "tokenizer"):
        if comp in listed and not (path / comp).is_dir():
            raise FileNotFoundError(f"{path} is missing the pipeline component {comp!r}: model_index.json lists it "
                                    f"but {path / comp}/ does not exist; restore that folder (or save the whole "
                                    "pipeline again with save_pretrained)")
        if comp in listed and comp != "tokenizer":
            if not (path / comp / "config.json").is_file():
                raise FileNotFoundError(f"{path} is missing the pipeline component {comp!r}: {path / comp}/config.json "
                                        "does not exist")
            _check_weights(path / comp, comp)


def _load_text(source: str, index: dict[str, Any], local: bool, display: str) -> PromptEncoder:
    import transformers
    from transformers.utils import logging as hf_logging

    def cls(comp: str, fallback: str):
        name = index[comp][1]
        obj = getattr(transformers, name, None) if index[comp][0] == "transformers" else None
        return obj or getattr(transformers, fallback)

    def where(comp: str) -> dict:
        return {"pretrained_model_name_or_path": str(Path(source) / comp)} if local else \
            {"pretrained_model_name_or_path": source, "subfolder": comp}

    hf_logging.disable_progress_bar()
    try:
        tokenizer = cls("tokenizer", "AutoTokenizer").from_pretrained(**where("tokenizer"))
        encoder = cls("text_encoder", "AutoModel").from_pretrained(**where("text_encoder"), use_safetensors=True)
    except (OSError, ValueError) as err:
        raise ValueError(f"{display}: could not load the tokenizer/text encoder ({err}); check the pipeline's "
                         "tokenizer/ and text_encoder/ folders") from err
    finally:
        hf_logging.enable_progress_bar()
    return PromptEncoder(tokenizer, encoder, source=f"{display}/text_encoder")


def load(name_or_path: str | Path, *, device: str | torch.device | None = None,
         dtype: torch.dtype | None = None, h_module: str = DEFAULT_MODULE) -> Model:
    """Load a model by embedded name (see :func:`list_models`), local folder or hub id.

    Folders and hub ids use diffusers' layout: ``unet/`` (``UNet2DModel`` or
    ``UNet2DConditionModel``) and ``scheduler/``; Stable Diffusion 1.x/2.x pipelines also
    ``vae/``, ``text_encoder/`` and ``tokenizer/`` (listed in ``model_index.json``). The
    embedded text models hold a ``text_encoder.json`` reference to the packaged MiniLM encoder.
    Weights load from safetensors only. Device defaults to CUDA when present, else CPU; dtype
    defaults to float32. ``h_module``: any named module of the U-Net (dotted path) serves as h.

    >>> load("shapes").x_shape
    (3, 32, 32)
    """
    import diffusers

    source, display, provenance, local = _resolve(name_or_path)
    index = _model_index(source, local)
    if local:
        _check_folder(Path(source), index)
    unet_cfg = diffusers.UNet2DModel.load_config(source, subfolder="unet")
    cls_name = unet_cfg.get("_class_name")
    if cls_name not in _UNET_CLASSES:
        raise ValueError(f"{display}: unet/ holds a {cls_name}; diffgeo supports {', '.join(_UNET_CLASSES)}")
    dtype = dtype or torch.float32
    unet = getattr(diffusers, cls_name).from_pretrained(source, subfolder="unet", use_safetensors=True,
                                                        torch_dtype=dtype)
    scheduler = diffusers.DDIMScheduler.from_pretrained(source, subfolder="scheduler")
    listed = {k for k, v in (index or {}).items() if v[0] is not None}
    ignored = sorted(listed - set(_COMPONENTS) - {"safety_checker", "feature_extractor"})
    prompt_error = None
    if ignored:
        log.warning("%s: ignoring pipeline components %s (diffgeo uses %s)", display, ", ".join(ignored),
                    ", ".join(_COMPONENTS))
        if any(c.startswith(("text_encoder_", "tokenizer_")) for c in ignored):
            prompt_error = (f"{display} has several text encoders ({', '.join(ignored)}), e.g. SDXL; diffgeo builds "
                            "prompt embeddings from one text encoder only, so prompts are unsupported here: pass "
                            "cond=Cond(cond=e, uncond=e0, cond_kwargs={'added_cond_kwargs': {...}}, ...) built with "
                            "the original pipeline's encode_prompt")
    vae = None
    if "vae" in listed:
        vae = diffusers.AutoencoderKL.from_pretrained(source, subfolder="vae", use_safetensors=True, torch_dtype=dtype)
    text = None
    if cls_name == "UNet2DConditionModel" and prompt_error is None:
        if {"text_encoder", "tokenizer"} <= listed:
            text = _load_text(source, index, local, display)
        elif local and (Path(source) / REF_FILE).is_file():
            from .text import load_reference

            text = load_reference(Path(source) / REF_FILE)
        elif {"text_encoder", "tokenizer"} & listed:
            missing = ({"text_encoder", "tokenizer"} - listed).pop()
            raise FileNotFoundError(f"{display} is missing the pipeline component {missing!r}: a text encoder needs "
                                    "both tokenizer/ and text_encoder/")
        else:
            log.info("%s: no text encoder; pass cond=Cond(...) with precomputed embeddings", display)
    device = device or default_device()
    model = Model(unet, scheduler, name=display, h_module=h_module, provenance=provenance, vae=vae, text=text,
                  prompt_error=prompt_error)
    return model.to(device)
