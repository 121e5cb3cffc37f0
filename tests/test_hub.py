"""Offline first with Hub ids: the Hub's reachability is probed once, then the local cache answers at once."""

from __future__ import annotations

import shutil
import socket

import pytest

from taskembed import hub
from taskembed.config import DataConfig, ModelConfig
from taskembed.data import load_splits
from taskembed.errors import UserError
from taskembed.modeling import load_classifier, resolve_model


@pytest.fixture
def online_env(monkeypatch):
    """No offline or proxy variable (the suite sets the offline ones) and no probe remembered."""
    for name in (*hub.OFFLINE_VARIABLES, *hub.PROXY_VARIABLES):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(hub, "_verdict", {})


def test_unreachable_names_the_reason_and_probes_once(online_env, monkeypatch):
    calls = []

    def refuse(address, timeout):
        calls.append((address, timeout))
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(socket, "create_connection", refuse)
    assert hub.unreachable() == "no connection to huggingface.co: Name or service not known"
    assert hub.unreachable() is not None and calls == [(("huggingface.co", 443), hub.TIMEOUT)]
    # another endpoint is probed on its own
    monkeypatch.setenv("HF_ENDPOINT", "http://mirror.example:8080")
    assert hub.unreachable() == "no connection to mirror.example: Name or service not known"
    assert calls[-1] == (("mirror.example", 8080), hub.TIMEOUT)


def test_offline_variable_and_proxy_are_decided_without_a_probe(online_env, monkeypatch):
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: pytest.fail("probed"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub.unreachable() == "HF_HUB_OFFLINE is set"
    monkeypatch.delenv("HF_HUB_OFFLINE")
    # behind a proxy a direct connection says nothing about the Hub: the libraries are left to try
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    assert hub.unreachable() is None


def fake_cache(root, repo: str, source) -> str:
    """A Hugging Face cache holding `repo` at main, as snapshot_download leaves it."""
    folder = root / f"models--{repo.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(source, folder / "snapshots" / commit)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(commit)
    return str(folder / "snapshots" / commit)


def test_an_id_in_the_local_cache_loads_from_it_when_the_hub_is_unreachable(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "cache"))
    snapshot = fake_cache(tmp_path / "cache", "someorg/tiny-bert", tiny_model_dir)
    assert resolve_model("someorg/tiny-bert") == snapshot
    model, tokenizer = load_classifier(ModelConfig(name="someorg/tiny-bert"), ["neg", "pos"])
    assert model.config.num_labels == 2 and tokenizer("a film")["input_ids"]


def test_an_id_neither_local_nor_cached_fails_at_once_saying_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(UserError) as exc:
        resolve_model("someorg/not-there")
    assert str(exc.value) == (
        "model 'someorg/not-there' is not a local folder, and the Hugging Face Hub cannot be reached (HF_HUB_OFFLINE is set) "
        "and the local cache does not have it; give a local model folder, or run once with the Hub reachable")
    with pytest.raises(UserError, match=r"data.source 'someorg/not-there': .* the Hugging Face Hub cannot be reached "
                                        r"\(HF_HUB_OFFLINE is set\) and the local cache does not have it .*give a local file"):
        load_splits(DataConfig(source="someorg/not-there"))


def test_offline_block_restores_the_libraries_switches():
    import datasets
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE
    with hub.offline():
        assert constants.HF_HUB_OFFLINE and datasets.config.HF_HUB_OFFLINE
    assert (constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE) == before
