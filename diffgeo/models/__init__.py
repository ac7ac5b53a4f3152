"""Models: loading by name, folder or hub id, the :class:`Model`, conditioning, the text encoder, h hooks, the zoo and the training recipes."""

from diffgeo.models.conditioning import (BRANCHES, Cond, as_cond, default_guidance, normalise_prompts, resolve_cond,
                                         text_time_ids)
from diffgeo.models.loading import EMBEDDED_DIR, list_models, load
from diffgeo.models.model import Model, default_device
from diffgeo.models.text_encoder import (PACKAGED_ENCODER, REF_FILE, DualPromptEncoder, PromptEncoder,
                                         encoder_reference, load_packaged_encoder, load_reference,
                                         packaged_encoder_path)
from diffgeo.models.zoo import ENTRIES, GENERIC, Entry, entry, text_models

__all__ = ['load', 'list_models', 'EMBEDDED_DIR', 'Model', 'default_device', 'BRANCHES', 'Cond', 'PromptEncoder', 'DualPromptEncoder', 'text_time_ids', 'as_cond', 'resolve_cond', 'default_guidance', 'normalise_prompts', 'load_packaged_encoder', 'packaged_encoder_path', 'encoder_reference', 'load_reference', 'PACKAGED_ENCODER', 'REF_FILE', 'Entry', 'entry', 'ENTRIES', 'GENERIC', 'text_models']
