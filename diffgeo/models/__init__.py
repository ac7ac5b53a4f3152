"""Models: loading by name, folder or hub id, the :class:`Model`, conditioning, the text encoder, h hooks, the zoo and the training recipes."""

from diffgeo.models.loading import load, list_models, EMBEDDED_DIR
from diffgeo.models.model import Model, default_device
from diffgeo.models.conditioning import BRANCHES, Cond, PromptEncoder, as_cond, resolve_cond, default_guidance, normalise_prompts, load_packaged_encoder, PACKAGED_ENCODER, REF_FILE
from diffgeo.models.zoo import Entry, entry, ENTRIES, GENERIC, text_models

__all__ = ['load', 'list_models', 'EMBEDDED_DIR', 'Model', 'default_device', 'BRANCHES', 'Cond', 'PromptEncoder', 'as_cond', 'resolve_cond', 'default_guidance', 'normalise_prompts', 'load_packaged_encoder', 'PACKAGED_ENCODER', 'REF_FILE', 'Entry', 'entry', 'ENTRIES', 'GENERIC', 'text_models']
