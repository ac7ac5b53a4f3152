"""Loading diffusion models: embedded short names, local diffusers folders and hub ids.

One code path for all three: an embedded name resolves to a folder inside the package in
diffusers' ``save_pretrained`` layout, and every folder or hub id then goes through diffusers'
``from_pretrained`` (safetensors only, no remote code). Each folder is checked first (every
component there, safetensors weights only), so a broken folder fails with the component it
lacks. Stable Diffusion 1.x/2.x pipelines (``model_index.json`` with ``unet/``, ``vae/``,
``text_encoder/``, ``tokenizer/``, ``scheduler/``) load the same way, and Stable Diffusion XL
pipelines with their second encoder (``text_encoder_2/``, ``tokenizer_2/``) as one
:class:`~diffgeo.models.text_encoder.DualPromptEncoder`. ``dtype=torch.float16`` / ``bfloat16``
loads half-precision weights (``accelerate`` keeps the load low in memory; a VAE marked
``force_upcast`` stays float32 under float16, as diffusers' pipelines decode). A hub id that is not
in the local Hugging Face cache fails at once when the hub is offline or unreachable.

>>> model = load("shapes")
>>> model.x_shape, model.h_shape
((3, 32, 32), (128, 8, 8))
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from diffgeo.core.checks import check_dtype, check_str
from diffgeo.models.hooks import DEFAULT_MODULE
from diffgeo.models.hub import _hub_error, _hub_kwargs
from diffgeo.models.model import _UNET_CLASSES, Model, default_device
from diffgeo.models.text_encoder import REF_FILE, DualPromptEncoder, PromptEncoder, load_reference
from diffgeo.models.zoo import entry

__all__ = ["load", "list_models", "EMBEDDED_DIR"]

log = logging.getLogger(__name__)

EMBEDDED_DIR = Path(__file__).parent.parent / "embedded"
_PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth", ".pkl")
# Pipeline components diffgeo uses; other entries of model_index.json are ignored (with a note).
_COMPONENTS = ("unet", "scheduler", "vae", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2")
_TEXT = ("text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2")


def list_models() -> list[str]:
    """Names of the models embedded in the package.

    >>> "shapes" in list_models()
    True
    """
    if not EMBEDDED_DIR.is_dir():
        return []
    return sorted(p.name for p in EMBEDDED_DIR.iterdir() if (p / "provenance.json").is_file())


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; a file that is not valid JSON or not an object is named in the error."""
    try:
        raw = json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}); restore the file (e.g. save the model again)") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path} holds a JSON {type(raw).__name__}, not an object {{...}}; restore the file")
    return raw


def _check_kernels(dtype: torch.dtype, device: torch.device) -> None:
    """Refuse a dtype the device cannot run a U-Net in (e.g. float16 convolutions on some CPU builds), before
    loading: one tiny convolution, group norm, linear map and attention in that dtype."""
    if dtype not in (torch.float16, torch.bfloat16):
        return
    x = torch.zeros(1, 8, 4, 4, dtype=dtype, device=device)
    try:
        y = torch.nn.functional.conv2d(x, torch.zeros(8, 8, 3, 3, dtype=dtype, device=device), padding=1)
        y = torch.nn.functional.group_norm(y, 4).flatten(2).transpose(1, 2)  # (1, 16, 8) tokens
        v = torch.nn.functional.linear(y, torch.zeros(8, 8, dtype=dtype, device=device))
        torch.nn.functional.scaled_dot_product_attention(y, y, v)
    except (RuntimeError, NotImplementedError) as err:
        raise ValueError(f"dtype={dtype} does not run on {device} with this torch build ({str(err)[:160]}); load with "
                         "dtype=torch.bfloat16 or torch.float32 on this device, or use a GPU") from None


def _resolve(name_or_path: str | Path) -> tuple[str, str, dict | None, bool]:
    """(source for from_pretrained, display name, provenance or None, is_local_folder)."""
    name = str(name_or_path)
    embedded = EMBEDDED_DIR / name
    if "/" not in name and "\\" not in name and (embedded / "provenance.json").is_file():
        return str(embedded), name, _read_json(embedded / "provenance.json"), True
    path = Path(name).expanduser()
    if path.is_dir():  # a copy of an embedded model or a `diffgeo.training` export keeps its provenance
        prov = path / "provenance.json"
        return str(path), path.name, _read_json(prov) if prov.is_file() else None, True
    if path.exists():
        raise ValueError(f"{name} is a file; pass the folder that holds unet/ and scheduler/ (diffusers' "
                         "save_pretrained layout)")
    if name.count("/") == 1 and not name.startswith((".", "/", "~")):
        return name, name, None, False  # a hub id: diffusers resolves it (needs network or a local HF cache)
    known = ", ".join(list_models()) or "(none)"
    raise ValueError(f"unknown model {name!r}: not an embedded name (known: {known}), not an existing "
                     "folder, and not a hub id of the form 'owner/name'. Pass a local folder in diffusers' "
                     "save_pretrained layout (unet/, scheduler/) or a hub id such as 'google/ddpm-cifar10-32'.")


def _read_index(source: str, local: bool, hub: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The pipeline's model_index.json as a dict, or None when there is none."""
    if local:
        f = Path(source) / "model_index.json"
        return _read_json(f) if f.is_file() else None
    from diffusers import DiffusionPipeline

    try:
        return DiffusionPipeline.load_config(source, **(hub or {}))
    except (OSError, ValueError):
        return None


def _components(raw: dict[str, Any] | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    return {k: v for k, v in raw.items() if not k.startswith("_") and isinstance(v, (list, tuple)) and len(v) == 2}


def _model_index(source: str, local: bool, hub: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The pipeline's components from model_index.json ({name: [library, class] or [None, None]})."""
    return _components(_read_index(source, local, hub))


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
    for comp in ("vae",) + _TEXT:
        if comp in listed and not (path / comp).is_dir():
            raise FileNotFoundError(f"{path} is missing the pipeline component {comp!r}: model_index.json lists it "
                                    f"but {path / comp}/ does not exist; restore that folder (or save the whole "
                                    "pipeline again with save_pretrained)")
        if comp in listed and not comp.startswith("tokenizer"):
            if not (path / comp / "config.json").is_file():
                raise FileNotFoundError(f"{path} is missing the pipeline component {comp!r}: {path / comp}/config.json "
                                        "does not exist")
            _check_weights(path / comp, comp)


def _load_text(source: str, index: dict[str, Any], local: bool, display: str, suffix: str = "",
               hidden_layer: int = -1, dtype: torch.dtype = torch.float32, hub: dict | None = None) -> PromptEncoder:
    """The tokenizer{suffix}/ and text_encoder{suffix}/ of a pipeline as one PromptEncoder."""
    import transformers
    from transformers.utils import logging as hf_logging

    def cls(comp: str, fallback: str):
        name = index[comp][1]
        obj = getattr(transformers, name, None) if index[comp][0] == "transformers" else None
        return obj or getattr(transformers, fallback)

    def where(comp: str) -> dict:
        return {"pretrained_model_name_or_path": str(Path(source) / comp)} if local else \
            {"pretrained_model_name_or_path": source, "subfolder": comp, **(hub or {})}

    tok, enc = "tokenizer" + suffix, "text_encoder" + suffix
    hf_logging.disable_progress_bar()
    try:
        tokenizer = cls(tok, "AutoTokenizer").from_pretrained(**where(tok))
        encoder = cls(enc, "AutoModel").from_pretrained(**where(enc), use_safetensors=True, dtype=dtype)
    except (OSError, ValueError) as err:
        raise ValueError(f"{display}: could not load the tokenizer/text encoder ({err}); check the pipeline's "
                         f"{tok}/ and {enc}/ folders") from err
    finally:
        hf_logging.enable_progress_bar()
    return PromptEncoder(tokenizer, encoder, source=f"{display}/{enc}", hidden_layer=hidden_layer)


def _check_sdxl(source: str, display: str, index: dict[str, Any] | None, unet_cfg: dict[str, Any]) -> bool:
    """True for a Stable Diffusion XL pipeline with both text encoders; a pipeline with part of the pair names the
    folder and the missing parts (before any weights load). Components listed as null (an SDXL refiner's
    first encoder) are absent on purpose: then prompts are unsupported, not an error."""
    listed = {k for k, v in (index or {}).items() if v[0] is not None}
    sdxl = unet_cfg.get("addition_embed_type") == "text_time" or bool({"text_encoder_2", "tokenizer_2"} & listed)
    if not sdxl or not listed & set(_TEXT):
        return False
    missing = [c for c in _TEXT if c not in listed]
    if missing and all(c in (index or {}) for c in missing):
        log.warning("%s: %s listed as absent in model_index.json (an SDXL refiner?); prompts are unsupported, pass "
                    "cond=Cond(...) built with the original pipeline", display, ", ".join(missing))
        return False
    if missing:
        raise FileNotFoundError(f"{display} ({source}) is a Stable Diffusion XL pipeline (its U-Net takes added "
                                "text/time embeddings) but its model_index.json lacks the component(s) "
                                f"{', '.join(missing)}: SDXL needs both text encoders and both tokenizers "
                                "(text_encoder/, tokenizer/, text_encoder_2/, tokenizer_2/); restore them, or "
                                "save the whole pipeline again with save_pretrained")
    return True


def _text_encoder(source: str, index: dict[str, Any] | None, raw: dict[str, Any], local: bool, display: str,
                  sdxl: bool, dtype: torch.dtype, hub: dict) -> PromptEncoder | DualPromptEncoder | None:
    """The pipeline's text encoder: one (Stable Diffusion), two (SDXL, :func:`_check_sdxl`), the packaged
    reference, or None."""
    listed = {k for k, v in (index or {}).items() if v[0] is not None}
    if sdxl:
        first = _load_text(source, index, local, display, "", hidden_layer=-2, dtype=dtype, hub=hub)
        second = _load_text(source, index, local, display, "_2", hidden_layer=-2, dtype=dtype, hub=hub)
        return DualPromptEncoder(first, second, zero_empty_negative=bool(raw.get("force_zeros_for_empty_prompt", True)),
                                 source=f"{display}/text_encoder+text_encoder_2")
    if {"text_encoder", "tokenizer"} <= listed and not {"text_encoder_2", "tokenizer_2"} & listed:
        return _load_text(source, index, local, display, dtype=dtype, hub=hub)
    if local and (Path(source) / REF_FILE).is_file():
        return load_reference(Path(source) / REF_FILE)
    if {"text_encoder", "tokenizer"} & listed:
        missing = ({"text_encoder", "tokenizer"} - listed).pop()
        raise FileNotFoundError(f"{display} is missing the pipeline component {missing!r}: a text encoder needs "
                                "both tokenizer/ and text_encoder/")
    log.info("%s: no text encoder; pass cond=Cond(...) with precomputed embeddings", display)
    return None


def load(name_or_path: str | Path, *, device: str | torch.device | None = None,
         dtype: torch.dtype | None = None, h_module: str = DEFAULT_MODULE) -> Model:
    """Load a model by embedded name (see :func:`list_models`), local folder or hub id.

    Folders and hub ids use diffusers' layout: ``unet/`` (``UNet2DModel`` or
    ``UNet2DConditionModel``) and ``scheduler/``; Stable Diffusion 1.x/2.x pipelines also
    ``vae/``, ``text_encoder/`` and ``tokenizer/`` (listed in ``model_index.json``), SDXL
    pipelines ``text_encoder_2/`` and ``tokenizer_2/`` too (prompts then give the U-Net SDXL's
    ``added_cond_kwargs``, see :func:`diffgeo.models.conditioning.resolve_cond`). The embedded text
    models hold a ``text_encoder.json`` reference to the packaged MiniLM encoder. Weights load
    from safetensors only. Device defaults to CUDA when present, else CPU; dtype defaults to
    float32 (``torch.float16`` / ``torch.bfloat16`` or their names load half-precision weights;
    the geometry needs float32). A hub id must be in the local Hugging Face cache when the hub is
    offline (``HF_HUB_OFFLINE=1``) or unreachable, else it fails at once saying so.
    ``h_module``: any named module of the U-Net (dotted path) serves as h.

    >>> load("shapes").x_shape
    (3, 32, 32)
    >>> load("shapes", dtype="bfloat16").dtype
    torch.bfloat16
    """
    import diffusers

    if isinstance(name_or_path, bytes) or not isinstance(name_or_path, (str, Path)):
        raise TypeError(f"name_or_path must be a model name, a folder or a hub id (a str or Path), got "
                        f"{type(name_or_path).__name__} {name_or_path!r}")
    if not str(name_or_path).strip():
        raise ValueError(f"name_or_path is empty; give a model name ({', '.join(list_models())}), a folder or a hub id")
    dtype = check_dtype(dtype)
    h_module = check_str(h_module, "h_module")
    if device is not None and not isinstance(device, (str, torch.device)):
        raise TypeError(f"device must be a str such as 'cpu'/'cuda' or a torch.device, got {type(device).__name__}")
    if isinstance(device, str):
        try:
            device = torch.device(device)
        except RuntimeError as err:
            raise ValueError(f"device {device!r} is not a torch device ({err})") from None
    source, display, provenance, local = _resolve(name_or_path)
    hub = {} if local else _hub_kwargs(source)  # fail fast: not cached and no network
    raw_index = _read_index(source, local, hub)
    index = _components(raw_index)
    if local:
        _check_folder(Path(source), index)
    if local:
        unet_cfg = _read_json(Path(source) / "unet" / "config.json")
        _read_json(Path(source) / "scheduler" / "scheduler_config.json")
    else:
        try:
            unet_cfg = diffusers.UNet2DModel.load_config(source, subfolder="unet", **hub)
        except (OSError, ValueError) as err:
            raise _hub_error(source, err) from None
    cls_name = unet_cfg.get("_class_name")
    if cls_name not in _UNET_CLASSES:
        raise ValueError(f"{display}: unet/ holds a {cls_name}; diffgeo supports {', '.join(_UNET_CLASSES)}")
    listed = {k for k, v in (index or {}).items() if v[0] is not None}
    sdxl = _check_sdxl(source, display, index, unet_cfg) if cls_name == "UNet2DConditionModel" else False
    dtype = dtype or torch.float32
    device = device or default_device()
    _check_kernels(dtype, device)
    try:
        unet = getattr(diffusers, cls_name).from_pretrained(source, subfolder="unet", use_safetensors=True,
                                                            torch_dtype=dtype, **hub)
    except (OSError, ValueError, RuntimeError) as err:
        if not local:
            raise _hub_error(source, err) from None
        weights = sorted(str(p) for p in (Path(source) / "unet").glob("*.safetensors"))
        why = ("they belong to another model (tensor shapes differ from unet/config.json)" if "shape" in str(err)
               else "the file is truncated or not a valid safetensors file")
        raise ValueError(f"{display}: cannot load the U-Net weights {', '.join(weights)}: {why} "
                         f"({str(err)[:300]})") from None
    scheduler = diffusers.DDIMScheduler.from_pretrained(source, subfolder="scheduler", **hub)
    ignored = sorted(listed - set(_COMPONENTS) - {"safety_checker", "feature_extractor", "image_encoder"})
    prompt_error = None
    if ignored:
        log.warning("%s: ignoring pipeline components %s (diffgeo uses %s)", display, ", ".join(ignored),
                    ", ".join(_COMPONENTS))
        if any(c.startswith(("text_encoder_", "tokenizer_")) for c in ignored):
            prompt_error = (f"{display} has text encoders diffgeo does not know ({', '.join(ignored)}); prompts are "
                            "unsupported here: pass cond=Cond(cond=e, uncond=e0, cond_kwargs={...}, ...) built with "
                            "the original pipeline's encode_prompt")
    vae = None
    if "vae" in listed:
        vae = diffusers.AutoencoderKL.from_pretrained(source, subfolder="vae", use_safetensors=True, torch_dtype=dtype,
                                                      **hub)
        if dtype == torch.float16 and getattr(vae.config, "force_upcast", False):
            vae.to(torch.float32)  # as diffusers' pipelines decode: SD/SDXL VAEs overflow in float16
    text = None
    if cls_name == "UNet2DConditionModel" and prompt_error is None:
        text = _text_encoder(source, index, raw_index or {}, local, display, sdxl, dtype, hub)
    model = Model(unet, scheduler, name=display, h_module=h_module, provenance=provenance, vae=vae, text=text,
                  guidance=entry((provenance or {}).get("name", display)).guidance,
                  clipped_eps=entry((provenance or {}).get("name", display)).clipped_eps,
                  prompt_error=prompt_error)
    return model.to(device)
