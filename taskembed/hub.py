"""The Hugging Face Hub, offline first: know at once when it cannot be reached, and then use the local cache.

Offline, `from_pretrained("org/name")` and `load_dataset("org/name")` do not fail at once: huggingface_hub
retries each file with back-off, about 27 s here before the error (measured with a mistyped id on a machine
without network). One connection attempt answers the question in milliseconds when the name does not
resolve, and otherwise within `PROBE_LIMIT` seconds; then a model comes from the local cache, or the error
says what to do, without the wait.
"""

from __future__ import annotations

import os
import socket
import threading
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator
from urllib.parse import urlparse

TIMEOUT = 3.0
"""Seconds to wait for the Hub's host to accept a connection (per address it resolves to) before calling it unreachable."""

PROBE_LIMIT = 5.0
"""Seconds the whole probe may take, the name lookup included, before the Hub counts as unreachable."""

TRUE = ("1", "ON", "YES", "TRUE")
# Which variables switch the libraries to their cache, as they read them: transformers and huggingface_hub either of
# MODEL_OFFLINE; datasets DATASETS_OFFLINE when it is set (to anything), else as huggingface_hub.
MODEL_OFFLINE = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
DATASETS_OFFLINE = "HF_DATASETS_OFFLINE"

_verdict: dict[str, str | None] = {}  # endpoint -> why it is unreachable (None: reachable); one probe per process
_switch = threading.Lock()
_depth = 0  # open `offline` blocks
_saved: tuple[bool, bool] = (False, False)


def _says_offline(variable: str) -> bool:
    return os.environ.get(variable, "").strip().upper() in TRUE


def _offline_setting(kind: str) -> tuple[str, bool] | None:
    """(variable, whether it says offline) of the offline variable that decides for `kind` ("model" or "dataset"), or
    None when none is set. A model is offline when either model variable says so; a dataset as its own variable says
    when that is set, else as a model."""
    if kind == "dataset" and os.environ.get(DATASETS_OFFLINE, "").strip():
        return DATASETS_OFFLINE, _says_offline(DATASETS_OFFLINE)
    given = [v for v in MODEL_OFFLINE if os.environ.get(v, "").strip()]
    on = [v for v in given if _says_offline(v)]
    return (on[0], True) if on else (given[0], False) if given else None


def unreachable(kind: str = "model") -> str | None:
    """Why the Hub cannot be reached from here for a model or dataset id, or None when it may be.

    An offline variable set to true counts as unreachable; set to false (HF_HUB_OFFLINE=0), as reachable, without a
    probe. Behind a proxy (one NO_PROXY does not bypass for the Hub's host) nothing is probed either: a direct
    connection would fail although the proxy reaches the Hub, so the libraries are left to try. So is a malformed
    HF_ENDPOINT, which the libraries report themselves.
    """
    setting = _offline_setting(kind)
    if setting is not None:
        # Set to a true value: offline, as the libraries take it. Set to a false one (HF_HUB_OFFLINE=0): the user says
        # the Hub is reachable, so it is not probed (a slow connection would otherwise count as none).
        return f"{setting[0]} is set" if setting[1] else None
    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    if endpoint not in _verdict:
        url = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
        try:
            host, port = url.hostname, url.port or (80 if url.scheme == "http" else 443)
        except ValueError:  # a port out of range
            return None
        # The proxy variables as the libraries' HTTP client reads them (NO_PROXY included).
        proxies = urllib.request.getproxies_environment()
        if not host or (any(scheme != "no" for scheme in proxies) and not urllib.request.proxy_bypass_environment(host, proxies)):
            return None
        _verdict[endpoint] = _probe(host, port)
    return _verdict[endpoint]


def _probe(host: str, port: int) -> str | None:
    """Connect once; why that failed, or None. In a daemon thread, so that the name lookup (which the socket's
    timeout does not cover, and which a resolver that never answers can stretch to tens of seconds) is bounded too."""
    outcome: list[str | None] = []

    def attempt() -> None:
        try:
            socket.create_connection((host, port), timeout=TIMEOUT).close()
            outcome.append(None)
        except Exception as exc:  # noqa: BLE001 - any failure to connect answers the question; none may leave it waiting
            outcome.append(f"no connection to {host}: {getattr(exc, 'strerror', None) or str(exc) or type(exc).__name__}")

    thread = threading.Thread(target=attempt, name="taskembed-hub-probe", daemon=True)
    thread.start()
    thread.join(PROBE_LIMIT)
    return outcome[0] if outcome else f"no answer from {host} within {PROBE_LIMIT:g} s"


def cached_model(name: str, revision: str | None = None) -> str | None:
    """The folder of `name` in the local Hugging Face cache (its snapshot holding config.json), or None.

    Found through its config.json alone: the snapshot need not hold every file of the repository (transformers
    downloads only the weights it loads), and whether its weights will do is check_folder's question.
    """
    from huggingface_hub import try_to_load_from_cache

    try:
        config = try_to_load_from_cache(name, "config.json", revision=revision)
    except ValueError:  # not a valid repository id
        return None
    return str(Path(config).parent) if isinstance(config, str) else None


@contextmanager
def offline() -> Iterator[None]:
    """Within this block huggingface_hub and datasets read their local cache only and make no request.

    Their offline switches are module constants read when they are imported; the environment variable
    would come too late for a library already imported, so the constants are set for the block (for the
    whole process while it lasts: blocks may nest or overlap in threads, and the last to end restores them).
    """
    global _depth, _saved
    import datasets
    from huggingface_hub import constants

    with _switch:
        if _depth == 0:
            _saved = constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE
            constants.HF_HUB_OFFLINE = datasets.config.HF_HUB_OFFLINE = True
        _depth += 1
    try:
        yield
    finally:
        with _switch:
            _depth -= 1
            if _depth == 0:
                constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE = _saved
