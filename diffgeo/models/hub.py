"""Hub ids without network: fail at once, with what to do, instead of retrying and blaming a missing file.

A hub id (``owner/name``) loads from the local Hugging Face cache when the hub is offline
(``HF_HUB_OFFLINE=1``, read now as well as at import) or unreachable (one HEAD request to the hub,
no retries, a few seconds at most, instead of huggingface_hub's five retries); a model that is
not cached then fails at once, saying so and how to fix it (download it once, or pass a folder).
Used by :func:`diffgeo.models.loading.load` and the command line's model argument.
"""

from __future__ import annotations

import logging
import os
from typing import Any

__all__: list[str] = []

log = logging.getLogger(__name__)

_PROBE_TIMEOUT_S = 3.0  # how long a hub id's network check waits before calling the hub unreachable


def _offline() -> bool:
    """HF_HUB_OFFLINE as huggingface_hub read it at import, or as the environment says now."""
    from huggingface_hub import constants

    now = os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")
    return bool(getattr(constants, "HF_HUB_OFFLINE", False)) or now


def _hub_reachable(repo_id: str) -> bool:
    """Whether the hub answers one HEAD request for ``repo_id`` within a few seconds, with no retries, through
    huggingface_hub's own session (its proxies and certificates). Any HTTP answer counts; a refused or timed-out
    connection or a failed TLS handshake (a firewall or an intercepting proxy) does not."""
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    try:
        get_session().head(f"{constants.ENDPOINT}/api/models/{repo_id}", timeout=_PROBE_TIMEOUT_S)
        return True
    except Exception:  # noqa: BLE001 -- DNS failure, refused, timed out, TLS failure, or a sandbox that forbids sockets
        return False


def _hub_kwargs(repo_id: str) -> dict[str, Any]:
    """Keywords for from_pretrained on a hub id, checked before any download: the cached files only when the hub
    is offline or unreachable (then the model must be in the local cache), else nothing."""
    from huggingface_hub import try_to_load_from_cache

    cached = isinstance(try_to_load_from_cache(repo_id, "unet/config.json"), str)
    if _offline():
        if not cached:
            raise FileNotFoundError(f"{repo_id}: this model is not in the local Hugging Face cache and the network is "
                                    "off (HF_HUB_OFFLINE=1); download it once with network access (unset "
                                    "HF_HUB_OFFLINE, or `hf download` it), or pass a local folder in diffusers' "
                                    "save_pretrained layout")
        return {"local_files_only": True}
    if _hub_reachable(repo_id):
        return {}
    if not cached:
        from huggingface_hub import constants

        raise FileNotFoundError(f"{repo_id}: this model is not in the local Hugging Face cache and the hub "
                                f"({constants.ENDPOINT}) cannot be reached (no network?); download it once on a "
                                "machine with network access (into HF_HOME), or pass a local folder in diffusers' "
                                "save_pretrained layout")
    log.warning("%s: the hub is unreachable; loading the cached copy", repo_id)
    return {"local_files_only": True}


def _hub_error(source: str, err: Exception) -> Exception:
    if _offline():
        return FileNotFoundError(f"{source}: the hub is offline (HF_HUB_OFFLINE=1) and this model is not cached "
                                 "locally; download it once with network access, or pass a local folder")
    return FileNotFoundError(f"{source}: could not load it from the hub ({err})")
