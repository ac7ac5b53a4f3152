"""Loading diffusion models: embedded short names, local diffusers folders and hub ids.

One code path for all three: an embedded name resolves to a folder inside the package in
diffusers' ``save_pretrained`` layout, and every folder or hub id then goes through diffusers'
``from_pretrained`` (safetensors only, no remote code).

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

__all__ = ["Model", "load", "list_models", "EMBEDDED_DIR"]

log = logging.getLogger(__name__)

EMBEDDED_DIR = Path(__file__).parent / "embedded"
_UNET_CLASSES = ("UNet2DModel", "UNet2DConditionModel")
_PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth", ".pkl")

TimestepLike = int | torch.Tensor | Sequence[int]


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
    ``provenance`` (dict, embedded models only), ``prediction_type``.

    Input checks (shape, dtype, finiteness, t on the schedule) happen in :meth:`eps` and
    :meth:`h`. :meth:`eps_fn` and :meth:`h_fn` are the same maps without checks, for use
    inside ``torch.func`` transforms.
    """

    def __init__(self, unet: nn.Module, scheduler: Any, *, name: str, h_module: str = DEFAULT_MODULE,
                 provenance: dict | None = None):
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
                self._h_shape = tuple(self.h_fn(x, self.timesteps_tensor(0, 1)).shape[1:])
        return self._h_shape

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> "Model":
        """Move the U-Net (in place) and return self."""
        self.unet.to(device=device, dtype=dtype)
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

    def _check_cond(self, cond: dict | None) -> dict:
        if cond is None:
            if self.is_conditional:
                raise ValueError(f"{self.name} is text-conditioned: pass encoder_hidden_states in cond")
            return {}
        if not self.is_conditional:
            raise ValueError(f"{self.name} is unconditional and takes no conditioning; drop prompt/cond")
        return cond

    # -- the maps ----------------------------------------------------------------------------
    def _to_eps(self, out: torch.Tensor, x_t: torch.Tensor, t_b: torch.Tensor) -> torch.Tensor:
        if self.prediction_type == "epsilon":
            return out
        a = self.alphas_cumprod.to(self.device)[t_b].to(x_t.dtype).view(-1, *([1] * (x_t.dim() - 1)))
        if self.prediction_type == "v_prediction":  # v = sqrt(a) eps - sqrt(1-a) x0
            return a.sqrt() * out + (1 - a).sqrt() * x_t
        return (x_t - a.sqrt() * out) / (1 - a).sqrt()  # "sample": out is x0

    def eps_fn(self, x_t: torch.Tensor, t_b: torch.Tensor, cond: dict | None = None) -> torch.Tensor:
        """eps(x_t, t) without checks: x_t (B, *x_shape), t_b (B,) long; returns (B, *x_shape)."""
        out = self.unet(x_t, t_b, **(cond or {})).sample
        return self._to_eps(out, x_t, t_b)

    def h_fn(self, x_t: torch.Tensor, t_b: torch.Tensor, cond: dict | None = None) -> torch.Tensor:
        """h(x_t, t) without checks, running the U-Net only as far as ``h_module``."""
        return run_until(self.unet, self.h_module, x_t, t_b, **(cond or {}))

    def eps(self, x_t: torch.Tensor, t: TimestepLike, *, cond: dict | None = None) -> torch.Tensor:
        """Predicted noise eps(x_t, t): x_t (B, *x_shape), t int or (B,); returns (B, *x_shape).

        v- and x0-predicting models are converted to eps with the schedule.
        """
        x_t = self.check_x(x_t)
        self.check_t(t)
        return self.eps_fn(x_t, self.timesteps_tensor(t, x_t.shape[0]), self._check_cond(cond))

    def h(self, x_t: torch.Tensor, t: TimestepLike, *, cond: dict | None = None) -> torch.Tensor:
        """h(x_t, t): the output of ``h_module`` (default the mid block), (B, *h_shape).

        Only the encoder half of the U-Net runs (conv_in, time embedding, down blocks, mid block).
        """
        x_t = self.check_x(x_t)
        self.check_t(t)
        return self.h_fn(x_t, self.timesteps_tensor(t, x_t.shape[0]), self._check_cond(cond))

    def decode(self, x0: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] from x0 (identity for pixel models)."""
        return x0


# -- loading ---------------------------------------------------------------------------------
def _resolve(name_or_path: str | Path) -> tuple[str, str, dict | None]:
    """(source for from_pretrained, display name, provenance or None)."""
    name = str(name_or_path)
    embedded = EMBEDDED_DIR / name
    if "/" not in name and "\\" not in name and (embedded / "provenance.json").is_file():
        return str(embedded), name, json.loads((embedded / "provenance.json").read_text())
    path = Path(name).expanduser()
    if path.is_dir():
        _check_folder(path)
        return str(path), path.name, None
    if path.exists():
        raise ValueError(f"{name} is a file; pass the folder that holds unet/ and scheduler/ (diffusers' "
                         "save_pretrained layout)")
    if name.count("/") == 1 and not name.startswith((".", "/", "~")):
        return name, name, None  # a hub id: diffusers resolves it (needs network or a local HF cache)
    known = ", ".join(list_models()) or "(none)"
    raise ValueError(f"unknown model {name!r}: not an embedded name (known: {known}), not an existing "
                     "folder, and not a hub id of the form 'owner/name'. Pass a local folder in diffusers' "
                     "save_pretrained layout (unet/, scheduler/) or a hub id such as 'google/ddpm-cifar10-32'.")


def _check_folder(path: Path) -> None:
    unet_dir = path / "unet"
    if not (unet_dir / "config.json").is_file():
        raise FileNotFoundError(f"{path} has no U-Net: expected {unet_dir}/config.json "
                                "(diffusers' save_pretrained layout: unet/, scheduler/)")
    files = [p.name for p in unet_dir.iterdir()]
    if not any(f.endswith(".safetensors") for f in files):
        pickled = [f for f in files if f.endswith(_PICKLE_SUFFIXES)]
        if pickled:
            raise ValueError(f"{unet_dir} has only pickled weights ({', '.join(sorted(pickled))}); diffgeo loads "
                             "safetensors only. Convert once in a trusted environment: "
                             "UNet2DModel.from_pretrained(folder).save_pretrained(folder, safe_serialization=True)")
        raise FileNotFoundError(f"{unet_dir} has no weights (no .safetensors file)")
    if not (path / "scheduler" / "scheduler_config.json").is_file():
        raise FileNotFoundError(f"{path} has no scheduler: expected {path}/scheduler/scheduler_config.json")


def load(name_or_path: str | Path, *, device: str | torch.device | None = None,
         dtype: torch.dtype | None = None, h_module: str = DEFAULT_MODULE) -> Model:
    """Load a model by embedded name (see :func:`list_models`), local folder or hub id.

    Folders and hub ids use diffusers' layout: ``unet/`` (``UNet2DModel`` or
    ``UNet2DConditionModel``) and ``scheduler/``. Weights load from safetensors only.
    Device defaults to CUDA when present, else CPU; dtype defaults to float32.

    >>> load("shapes").x_shape
    (3, 32, 32)
    """
    import diffusers

    source, display, provenance = _resolve(name_or_path)
    unet_cfg = diffusers.UNet2DModel.load_config(source, subfolder="unet")
    cls_name = unet_cfg.get("_class_name")
    if cls_name not in _UNET_CLASSES:
        raise ValueError(f"{display}: unet/ holds a {cls_name}; diffgeo supports {', '.join(_UNET_CLASSES)}")
    unet = getattr(diffusers, cls_name).from_pretrained(source, subfolder="unet", use_safetensors=True,
                                                        torch_dtype=dtype or torch.float32)
    scheduler = diffusers.DDIMScheduler.from_pretrained(source, subfolder="scheduler")
    unet.to(device=device or default_device())
    return Model(unet, scheduler, name=display, h_module=h_module, provenance=provenance)
