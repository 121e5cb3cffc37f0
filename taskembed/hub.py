"""The Hugging Face Hub, offline first: know at once when it cannot be reached, and then use the local cache.

Offline, `from_pretrained("org/name")` and `load_dataset("org/name")` do not fail at once: huggingface_hub
retries each file with back-off, about 27 s here before the error (measured with a mistyped id on a machine
without network). One connection attempt answers the question in milliseconds when the name does not
resolve, and in at most `TIMEOUT` seconds otherwise; then a model comes from the local cache, or the error
says what to do, without the wait.
"""

from __future__ import annotations

import os
import socket
from contextlib import contextmanager
from typing import Iterator
from urllib.parse import urlparse

TIMEOUT = 3.0
"""Seconds to wait for the Hub's host to accept a connection before calling it unreachable."""

PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")
OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")

_verdict: dict[str, str | None] = {}  # endpoint -> why it is unreachable (None: reachable); one probe per process


def unreachable() -> str | None:
    """Why the Hub cannot be reached from here, or None when it may be.

    An offline variable set by the user counts as unreachable. Behind a proxy nothing is probed: a direct
    connection would fail although the proxy reaches the Hub, so the libraries are left to try.
    """
    offline = next((v for v in OFFLINE_VARIABLES if os.environ.get(v, "").strip().upper() in ("1", "ON", "YES", "TRUE")), None)
    if offline:
        return f"{offline} is set"
    if any(os.environ.get(v) for v in PROXY_VARIABLES):
        return None
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    if endpoint not in _verdict:
        url = urlparse(endpoint)
        host, port = url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)
        try:
            socket.create_connection((host, port), timeout=TIMEOUT).close()
            _verdict[endpoint] = None
        except OSError as exc:
            _verdict[endpoint] = f"no connection to {host}: {getattr(exc, 'strerror', None) or exc or type(exc).__name__}"
    return _verdict[endpoint]


def cached_model(name: str, revision: str | None = None) -> str | None:
    """The folder of `name` in the local Hugging Face cache, or None when it is not there."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return snapshot_download(name, revision=revision, local_files_only=True)
    except (LocalEntryNotFoundError, OSError, ValueError):
        return None


@contextmanager
def offline() -> Iterator[None]:
    """Within this block huggingface_hub and datasets read their local cache only and make no request.

    Their offline switches are module constants read when they are imported; the environment variable
    would come too late for a library already imported, so the constants are set for the block.
    """
    import datasets
    from huggingface_hub import constants

    saved = constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = datasets.config.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE = saved
