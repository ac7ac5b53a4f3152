"""Loading diffusion models: embedded short names, local diffusers folders and hub ids.

One code path for all three: an embedded name resolves to a folder inside the package in
diffusers' ``save_pretrained`` layout, and every folder or hub id then goes through diffusers'
``from_pretrained`` (safetensors only, no remote code). Each folder is checked first (every
component there, safetensors weights only), so a broken folder fails with the component it
lacks. Stable Diffusion 1.x/2.x pipelines (``model_index.json`` with ``unet/``, ``vae/``,
``text_encoder/``, ``tokenizer/``, ``scheduler/``) load the same way.

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
from diffgeo.models.model import _UNET_CLASSES, Model, default_device
from diffgeo.models.text_encoder import REF_FILE, PromptEncoder, load_reference
from diffgeo.models.zoo import entry

__all__ = ["load", "list_models", "EMBEDDED_DIR"]

log = logging.getLogger(__name__)

EMBEDDED_DIR = Path(__file__).parent.parent / "embedded"
_PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth", ".pkl")
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


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; a file that is not valid JSON or not an object is named in the error."""
    try:
        raw = json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}); restore the file (e.g. save the model again)") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path} holds a JSON {type(raw).__name__}, not an object {{...}}; restore the file")
    return raw


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(getattr(constants, "HF_HUB_OFFLINE", False))


def _hub_error(source: str, err: Exception) -> Exception:
    if _offline():
        return FileNotFoundError(f"{source}: the hub is offline (HF_HUB_OFFLINE=1) and this model is not cached "
                                 "locally; download it once with network access, or pass a local folder")
    return FileNotFoundError(f"{source}: could not load it from the hub ({err})")


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


def _model_index(source: str, local: bool) -> dict[str, Any] | None:
    """The pipeline's components from model_index.json ({name: [library, class] or [None, None]})."""
    if local:
        f = Path(source) / "model_index.json"
        if not f.is_file():
            return None
        raw = _read_json(f)
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
    index = _model_index(source, local)
    if local:
        _check_folder(Path(source), index)
    if local:
        unet_cfg = _read_json(Path(source) / "unet" / "config.json")
        _read_json(Path(source) / "scheduler" / "scheduler_config.json")
    else:
        try:
            unet_cfg = diffusers.UNet2DModel.load_config(source, subfolder="unet")
        except (OSError, ValueError) as err:
            raise _hub_error(source, err) from None
    cls_name = unet_cfg.get("_class_name")
    if cls_name not in _UNET_CLASSES:
        raise ValueError(f"{display}: unet/ holds a {cls_name}; diffgeo supports {', '.join(_UNET_CLASSES)}")
    dtype = dtype or torch.float32
    try:
        unet = getattr(diffusers, cls_name).from_pretrained(source, subfolder="unet", use_safetensors=True,
                                                            torch_dtype=dtype)
    except (OSError, ValueError, RuntimeError) as err:
        if not local:
            raise _hub_error(source, err) from None
        weights = sorted(str(p) for p in (Path(source) / "unet").glob("*.safetensors"))
        why = ("they belong to another model (tensor shapes differ from unet/config.json)" if "shape" in str(err)
               else "the file is truncated or not a valid safetensors file")
        raise ValueError(f"{display}: cannot load the U-Net weights {', '.join(weights)}: {why} "
                         f"({str(err)[:300]})") from None
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

            text = load_reference(Path(source) / REF_FILE)
        elif {"text_encoder", "tokenizer"} & listed:
            missing = ({"text_encoder", "tokenizer"} - listed).pop()
            raise FileNotFoundError(f"{display} is missing the pipeline component {missing!r}: a text encoder needs "
                                    "both tokenizer/ and text_encoder/")
        else:
            log.info("%s: no text encoder; pass cond=Cond(...) with precomputed embeddings", display)
    device = device or default_device()
    model = Model(unet, scheduler, name=display, h_module=h_module, provenance=provenance, vae=vae, text=text,
                  guidance=entry((provenance or {}).get("name", display)).guidance,
                  prompt_error=prompt_error)
    return model.to(device)
