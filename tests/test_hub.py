"""Offline first with Hub ids: the Hub's reachability is probed once, then the local cache answers at once."""

from __future__ import annotations

import json
import shutil
import socket

import pytest

from taskembed import hub
from taskembed.config import DataConfig, ModelConfig
from taskembed.data import load_splits
from taskembed.errors import UserError
from taskembed.modeling import load_classifier, resolve_model


PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy")


@pytest.fixture
def online_env(monkeypatch):
    """No offline or proxy variable (the suite sets the offline ones) and no probe remembered."""
    for name in (*hub.MODEL_OFFLINE, hub.DATASETS_OFFLINE, *PROXY_VARIABLES):
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


def test_offline_variables_proxy_and_bad_endpoints_are_decided_without_a_probe(online_env, monkeypatch):
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: pytest.fail("probed"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub.unreachable("model") == hub.unreachable("dataset") == "HF_HUB_OFFLINE is set"
    # datasets' own variable decides for datasets when set, either way, as the datasets library reads it; not for models
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "0")
    assert hub.unreachable("model") == "HF_HUB_OFFLINE is set"
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    assert hub.unreachable("dataset") == "HF_DATASETS_OFFLINE is set"
    # set to false, a variable says the Hub is reachable: no probe (a slow connection would otherwise count as none)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "0")
    assert hub.unreachable("dataset") is None
    monkeypatch.delenv("HF_DATASETS_OFFLINE")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert hub.unreachable("model") is hub.unreachable("dataset") is None
    monkeypatch.delenv("HF_HUB_OFFLINE")
    # behind a proxy a direct connection says nothing about the Hub: the libraries are left to try
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    assert hub.unreachable() is None
    monkeypatch.delenv("HTTPS_PROXY")
    # a malformed endpoint is the libraries' to report (no traceback from the probe)
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.example:99999")
    assert hub.unreachable() is None


def test_a_host_the_proxy_does_not_cover_is_probed(online_env, monkeypatch):
    calls = []
    monkeypatch.setattr(socket, "create_connection", lambda address, timeout: calls.append(address) or FakeSocket())
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "localhost,.huggingface.co")
    assert hub.unreachable() is None and calls == [("huggingface.co", 443)]
    # NO_PROXY alone, with no proxy: probed as without it
    monkeypatch.delenv("HTTPS_PROXY")
    monkeypatch.setenv("NO_PROXY", "localhost")
    monkeypatch.setattr(hub, "_verdict", {})
    assert hub.unreachable() is None and calls == [("huggingface.co", 443)] * 2


def test_an_endpoint_without_a_scheme_is_probed_at_its_own_host(online_env, monkeypatch):
    calls = []
    monkeypatch.setattr(socket, "create_connection", lambda address, timeout: calls.append(address) or FakeSocket())
    monkeypatch.setenv("HF_ENDPOINT", "hf-mirror.example")
    assert hub.unreachable() is None and calls == [("hf-mirror.example", 443)]


class FakeSocket:
    def close(self) -> None:
        pass


COMMIT = "0123456789abcdef0123456789abcdef01234567"


def fake_cache(root, repo: str, source, listed: tuple[str, ...] = ()) -> str:
    """A Hugging Face cache holding `repo` at main, as a download leaves it. `listed`: files of the repository that
    huggingface_hub's file list names but the snapshot lacks, as after transformers downloaded only what it loads."""
    from huggingface_hub._tree_cache import TREE_CACHE_FORMAT_VERSION

    folder = root / f"models--{repo.replace('/', '--')}"
    snapshot = folder / "snapshots" / COMMIT
    shutil.copytree(source, snapshot)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(COMMIT)
    if listed:
        files = {p.name: {"size": 1, "blob_id": "0" * 40} for p in snapshot.iterdir()} | {n: {"size": 1, "blob_id": "0" * 40} for n in listed}
        (folder / "trees").mkdir()
        (folder / "trees" / f"{COMMIT}.json").write_text(json.dumps({"format_version": TREE_CACHE_FORMAT_VERSION, "files": files}))
    return str(snapshot)


def test_an_id_in_the_local_cache_loads_from_it_when_the_hub_is_unreachable(tiny_model_dir, tmp_path, online_env, monkeypatch):
    # unreachable by the probe itself, not by the suite's offline variables
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: (_ for _ in ()).throw(socket.gaierror(-2, "Name or service not known")))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "cache"))
    snapshot = fake_cache(tmp_path / "cache", "someorg/tiny-bert", tiny_model_dir, listed=("pytorch_model.bin", "onnx/model.onnx"))
    assert resolve_model("someorg/tiny-bert") == snapshot
    assert resolve_model("someorg/tiny-bert", revision=COMMIT) == snapshot
    model, tokenizer = load_classifier(ModelConfig(name="someorg/tiny-bert"), ["neg", "pos"])
    assert model.config.num_labels == 2 and tokenizer("a film")["input_ids"]
    # the cache is no way around pinning the revision of code that runs
    with pytest.raises(UserError, match="trust_remote_code needs model.revision pinned"):
        load_classifier(ModelConfig(name="someorg/tiny-bert", trust_remote_code=True), ["neg", "pos"])
    with pytest.raises(UserError, match="the local cache does not have it"):
        resolve_model("someorg/tiny-bert", revision="v9")


def test_an_id_neither_local_nor_cached_fails_at_once_saying_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(UserError) as exc:
        resolve_model("someorg/not-there")
    assert str(exc.value) == (
        "model 'someorg/not-there' is not a local folder, and the Hugging Face Hub cannot be reached (HF_HUB_OFFLINE is set) "
        "and the local cache does not have it; give a local model folder, or run once with the Hub reachable")
    with pytest.raises(UserError, match=r"data.source 'someorg/not-there': .* the Hugging Face Hub cannot be reached "
                                        r"\(HF_DATASETS_OFFLINE is set\), so only the local cache was read, which failed .*give a local file"):
        load_splits(DataConfig(source="someorg/not-there"))


def test_a_hub_dataset_with_several_configurations_takes_data_subset(monkeypatch):
    # A stand-in for datasets.load_dataset that behaves as a GLUE-like builder (its messages are datasets' own).
    import datasets

    configs = {"sst2": {"sentence": ["a fine film", "a dull plot"] * 10, "label": [1, 0] * 10}}
    calls = []

    def load_dataset(name, subset=None):
        calls.append((name, subset))
        if subset is None:
            raise ValueError(f"Config name is missing.\nPlease pick one among the available configs: {list(configs) + ['cola']}"
                             f"\nExample of usage:\n\t`load_dataset('{name}', 'sst2')`")
        if subset not in configs:
            raise ValueError(f"BuilderConfig '{subset}' not found. Available: {list(configs) + ['cola']}")
        features = datasets.Features({"sentence": datasets.Value("string"), "label": datasets.ClassLabel(names=["negative", "positive"])})
        return datasets.DatasetDict({"train": datasets.Dataset.from_dict(configs[subset], features=features)})

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    with pytest.raises(UserError) as exc:
        load_splits(DataConfig(source="someorg/glue", text_column="sentence"))
    assert str(exc.value) == "data.source 'someorg/glue' has several configurations; name one with data.subset (['sst2', 'cola'])"
    with pytest.raises(UserError, match=r"'sst-2' is not one of them; name one with data.subset \(\['sst2', 'cola'\]\)"):
        load_splits(DataConfig(source="someorg/glue", subset="sst-2", text_column="sentence"))
    splits = load_splits(DataConfig(source="someorg/glue", subset="sst2", text_column="sentence"))
    assert calls[-1] == ("someorg/glue", "sst2") and splits.labels == ["negative", "positive"]
    # Only a Hub dataset has configurations: a built-in or a file with one is a mistake, said before anything is read,
    # by the dry run too.
    with pytest.raises(UserError, match="data.source rotten_tomatoes is a built-in dataset; drop data.subset"):
        load_splits(DataConfig(source="rotten_tomatoes", subset="sst2"))
    from taskembed.data import check_paths, load_raw

    with pytest.raises(UserError, match="drop data.subset"):
        check_paths(DataConfig(source="rotten_tomatoes", subset="sst2"))
    from taskembed.config import load_config

    with pytest.raises(UserError, match="data.subset is empty"):
        load_config(None, {"data.subset": " "})
    # evaluate, embed and compare name no configuration: they are told how to give such data
    with pytest.raises(UserError, match=r"'someorg/glue' has several configurations \(\['sst2', 'cola'\]\); save the one you want "
                                        r"with datasets \(load_dataset\('someorg/glue', CONFIG\).save_to_disk\(FOLDER\)\) and give FOLDER"):
        load_raw(DataConfig(source="someorg/glue", text_column="sentence"), training=False)


def test_push_uploads_a_trained_folder_to_a_private_repository(tmp_path, monkeypatch, capsys):
    from huggingface_hub.errors import HfHubHTTPError

    from taskembed.cli import main

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "training_config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"")
    # Offline (as this suite always is): refused at once, saying why.
    assert main(["push", str(folder), "me/model"]) == 2
    assert "cannot push to the Hugging Face Hub: it cannot be reached (HF_HUB_OFFLINE is set)" in capsys.readouterr().err
    calls = []

    class FakeApi:
        def create_repo(self, repo_id, **kw):
            calls.append(("create_repo", repo_id, kw))
            return f"https://huggingface.co/{repo_id}"

        def upload_folder(self, **kw):
            calls.append(("upload_folder", kw))

    monkeypatch.setattr(hub, "unreachable", lambda kind="model": None)
    monkeypatch.setattr("huggingface_hub.HfApi", FakeApi)
    assert main(["push", str(folder), "me/model"]) == 0
    assert "pushed" in capsys.readouterr().out and calls[0] == ("create_repo", "me/model", {"private": True, "exist_ok": True})
    upload = calls[1][1]
    assert upload["repo_id"] == "me/model" and upload["folder_path"] == folder and ".*" in upload["ignore_patterns"]
    assert main(["push", str(folder), "me/model", "--public"]) == 0 and calls[2][2]["private"] is False
    assert upload["allow_patterns"] is None  # a folder whose run.json lists nothing (an earlier taskembed's) goes whole
    # Only what training wrote: a predictions table of the user's own texts beside it went too (public with --public).
    (folder / "run.json").write_text(json.dumps({"files": ["model.safetensors", "run.json", "training_config.json"]}))
    (folder / "scored.csv").write_text("text,label\nmy own text,pos\n")
    capsys.readouterr()
    assert main(["push", str(folder), "me/model"]) == 0
    assert calls[-1][1]["allow_patterns"] == ["model.safetensors", "run.json", "training_config.json"]
    assert "left out, not written by training: scored.csv" in capsys.readouterr().out
    # Not a taskembed folder, a bad name, and a refusal by the Hub: one line each.
    assert main(["push", str(tmp_path), "me/model"]) == 2 and "not a model folder taskembed wrote" in capsys.readouterr().err
    assert main(["push", str(folder), "model"]) == 2 and "name the repository owner/name" in capsys.readouterr().err

    def invalid(self, repo_id, **kw):  # as huggingface_hub's own name check raises for 'me/a..b'
        from huggingface_hub.utils import validate_repo_id

        validate_repo_id(repo_id)

    monkeypatch.setattr(FakeApi, "create_repo", invalid)
    assert main(["push", str(folder), "me/a..b"]) == 2
    err = capsys.readouterr().err
    assert "me/a..b: not a repository name the Hub takes" in err and len(err.strip().splitlines()) == 1

    class Refused(HfHubHTTPError):  # built without a live response (its constructor wants one)
        def __init__(self, message):
            Exception.__init__(self, message)

    def refused(self, repo_id, **kw):
        raise Refused("401 Client Error: Unauthorized for url: https://huggingface.co/api/repos/create")

    monkeypatch.setattr(FakeApi, "create_repo", refused)
    assert main(["push", str(folder), "me/model"]) == 2
    err = capsys.readouterr().err
    assert "401 Client Error: Unauthorized" in err and "hf auth login" in err and len(err.strip().splitlines()) == 1


def test_offline_blocks_restore_the_libraries_switches_when_the_last_one_ends(monkeypatch):
    import datasets
    from huggingface_hub import constants

    # online before (the suite itself runs with the offline variables set)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    first, second = hub.offline(), hub.offline()
    first.__enter__()
    second.__enter__()  # another thread's block, overlapping
    first.__exit__(None, None, None)
    assert constants.HF_HUB_OFFLINE and datasets.config.HF_HUB_OFFLINE  # still inside the second
    second.__exit__(None, None, None)
    assert (constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE) == (False, False)


def test_a_probe_that_gets_no_answer_is_cut_short(online_env, monkeypatch):
    """A resolver that never answers (the socket timeout does not cover the name lookup) counts as unreachable."""
    import threading

    release = threading.Event()
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: release.wait(30) and FakeSocket())
    monkeypatch.setattr(hub, "PROBE_LIMIT", 0.2)
    try:
        assert hub.unreachable() == "no answer from huggingface.co within 0.2 s"
    finally:
        release.set()


def test_a_model_that_needs_its_own_code_is_named_as_such_and_its_code_never_runs(tiny_model_dir, tmp_path):
    import json
    import shutil

    folder = tmp_path / "custom"
    shutil.copytree(tiny_model_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="taskembed-custom", auto_map={"AutoConfig": "custom.CustomConfig",
                                                           "AutoModelForSequenceClassification": "custom.CustomModel"})
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "custom.py").write_text(f"open({str(tmp_path / 'ran')!r}, 'w').close()\n")
    with pytest.raises(UserError, match="needs its own Python code to load.*set model.trust_remote_code true"):
        load_classifier(ModelConfig(name=str(folder)), ["neg", "pos"])
    assert not (tmp_path / "ran").exists()
