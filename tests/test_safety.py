"""Guards: divergence never leaves a bad checkpoint, nothing is ever unpickled, damaged checkpoints are skipped.

The planted files are real pickles whose payload creates a marker file when unpickled; every test
that feeds one to taskembed checks both the refusal (a UserError, exit 2) and that the marker was
never created.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import taskembed
from bench import fault_injection as fi
from taskembed import checkpoint
from taskembed.artifacts import check_output_dir
from taskembed.cli import main
from taskembed.config import load_config
from taskembed.errors import UserError
from taskembed.loop import TrainingDiverged
from tests.conftest import make_rows


class _Plant:
    """Unpickling this creates the marker file: proof that something ran pickle on it."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def planted_pickle(marker: Path) -> bytes:
    return pickle.dumps(_Plant(marker))


pytestmark = pytest.mark.usefixtures("keep_threads")  # tests/conftest.py


def quiet(_msg: str) -> None:
    pass


@pytest.fixture(scope="module")
def diverged(tiny_model_dir, tmp_path_factory):
    """A run whose loss turns NaN at optimizer step 3, checkpointing every step: (overrides, error, checkpoint folder)."""
    root = tmp_path_factory.mktemp("diverged")
    opts = {**fi.overrides(tiny_model_dir, fi.write_csv(root / "train.csv", make_rows(96, seed=8)),
                           fi.write_csv(root / "test.csv", make_rows(20, seed=9)), root / "out", epochs=1),
            "train.checkpoint_every": 1}
    mp = pytest.MonkeyPatch()
    mp.setattr(F, "cross_entropy", nan_on_call(3))
    threads = torch.get_num_threads()
    try:
        with pytest.raises(TrainingDiverged) as info:
            taskembed.train(None, opts, progress=False, echo=quiet)
    finally:
        mp.undo()
        torch.set_num_threads(threads)
    return opts, info.value, checkpoint.folder_for(root / "out")


def copy_run(opts, root: Path, tmp_path: Path) -> dict:
    """The checkpoints under a new output.dir, so a test can change or resume them without touching the fixture."""
    out = tmp_path / "out"
    shutil.copytree(root, checkpoint.folder_for(out))
    return {**opts, "output.dir": str(out)}


def cli_args(opts) -> list[str]:
    return ["train", "--no-progress"] + [f"--{k}={v}" for k, v in opts.items()]


def test_nan_at_step_3_stops_before_any_checkpoint_of_it(diverged):
    opts, error, root = diverged
    assert str(error).startswith("step 3: loss is not finite (nan)")
    # The way on: lower rates into the same output.dir must start afresh over the kept checkpoints.
    assert str(error).endswith(f"lower train.lr / train.head_lr or check the data, and call it again with overrides={{'output.overwrite': True}} "
                               f"(the checkpoints before it stay in {root} until then)")
    assert not Path(opts["output.dir"]).exists()
    # Steps 1 and 2 were checkpointed (keep 2); nothing of step 3, not even a temporary folder.
    assert sorted(p.name for p in root.iterdir()) == ["step-000001", "step-000002"]
    folder, skipped = checkpoint.latest(root)
    assert folder.name == "step-000002" and skipped == []
    state = json.loads((folder / "state.json").read_text())
    assert state["step"] == 2 and state["batch_in_epoch"] == 2


def nan_on_call(n: int):
    """F.cross_entropy whose n-th call returns NaN."""
    real, calls = F.cross_entropy, {"n": 0}

    def patched(*args, **kwargs):
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return loss * float("nan") if calls["n"] == n else loss

    return patched


def spy_optimizer_steps(monkeypatch) -> list[dict]:
    """Every AdamW.step: the found_inf it was given and whether any parameter moved."""
    real, seen = torch.optim.AdamW.step, []

    def step(self, *args, **kwargs):
        params = [p for g in self.param_groups for p in g["params"]]
        before = [p.detach().clone() for p in params]
        out = real(self, *args, **kwargs)
        flag = getattr(self, "found_inf", None)
        seen.append({"found_inf": None if flag is None else float(flag), "moved": any(not torch.equal(a, p) for a, p in zip(before, params))})
        return out

    monkeypatch.setattr(torch.optim.AdamW, "step", step)
    return seen


def test_deferred_reads_train_the_same_and_skip_a_nan_step_on_the_device(tiny_model_dir, tmp_path, monkeypatch):
    # What a GPU run does (losses read every few steps, non-finite steps skipped by the fused optimizer), forced on the CPU.
    import taskembed.loop as loop
    from safetensors.torch import load_file

    train, test = fi.write_csv(tmp_path / "train.csv", make_rows(264, seed=8)), fi.write_csv(tmp_path / "test.csv", make_rows(20, seed=9))
    opts = {**fi.overrides(tiny_model_dir, train, test, tmp_path / "out", epochs=1), "train.keep_checkpoints": 0, "train.checkpoint_every": 0}
    every = taskembed.train(None, {**opts, "output.dir": str(tmp_path / "every")}, progress=False, echo=quiet)
    monkeypatch.setattr(loop, "defer_host_reads", lambda device: True)
    seen = spy_optimizer_steps(monkeypatch)
    deferred = taskembed.train(None, {**opts, "output.dir": str(tmp_path / "deferred")}, progress=False, echo=quiet)
    # 33 steps, logged every 3: the steps between two reads ran with a device-side flag, and nothing changed.
    assert [s["found_inf"] for s in seen[:4]] == [0.0, 0.0, None, 0.0] and all(s["moved"] for s in seen)
    a, b = load_file(str(every.output_dir / "model.safetensors")), load_file(str(deferred.output_dir / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (every.output_dir / "log.jsonl").read_text() == (deferred.output_dir / "log.jsonl").read_text()

    # A NaN loss at step 4, between two reads: the device skips that update, and the next read (step 6) stops the run
    # naming step 4, before a checkpoint or output folder of anything after step 3 exists.
    seen.clear()
    monkeypatch.setattr(F, "cross_entropy", nan_on_call(4))
    out = tmp_path / "nan"
    with pytest.raises(TrainingDiverged, match=r"^step 4: loss is not finite \(nan\)"):
        taskembed.train(None, {**opts, "output.dir": str(out), "train.keep_checkpoints": 2, "train.checkpoint_every": 3},
                        progress=False, echo=quiet)
    assert seen[3] == {"found_inf": 1.0, "moved": False} and len(seen) == 5  # steps 5 ran; step 6 stopped before its update
    assert not out.exists()
    assert [p.name for p in checkpoint.folder_for(out).iterdir()] == ["step-000003"]


def test_the_last_good_checkpoint_loads_and_resumes(diverged, tmp_path):
    from safetensors.torch import load_file

    opts, _, root = diverged
    opts = copy_run(opts, root, tmp_path)
    weights = load_file(str(checkpoint.folder_for(Path(opts["output.dir"])) / "step-000002" / "model.safetensors"))
    assert all(torch.isfinite(t).all() for t in weights.values() if t.is_floating_point())
    res = taskembed.train(None, opts, progress=False, echo=quiet, resume=True)  # the NaN was injected; without it the run completes
    log = [json.loads(x) for x in (res.output_dir / "log.jsonl").read_text().splitlines()]
    # Steps 1-2 come from the checkpoint's log, 3-12 from the resumed run; every loss finite.
    assert [e["step"] for e in log if e["kind"] == "train"] == list(range(1, 13)) and all(e["loss"] == e["loss"] for e in log)


def test_planted_pickle_in_a_checkpoint_folder_is_refused_unread(diverged, tmp_path, capsys):
    opts, _, root = diverged
    opts = copy_run(opts, root, tmp_path)
    marker = tmp_path / "PWNED"
    newest = checkpoint.folder_for(Path(opts["output.dir"])) / "step-000002"
    (newest / "optimizer.pt").write_bytes(planted_pickle(marker))
    assert main(cli_args(opts) + ["--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert "optimizer.pt" in err and "refusing to read it" in err
    assert "\n" not in err and not marker.exists()
    # A folder of pickles named like a checkpoint, with no marker, is just as unusable.
    fake = checkpoint.folder_for(Path(opts["output.dir"])) / "step-000099"
    fake.mkdir()
    (fake / "model.safetensors").write_bytes(planted_pickle(marker))
    (newest / "optimizer.pt").unlink()
    assert main(cli_args(opts) + ["--resume"]) == 0  # step-000099 is skipped as incomplete; step-000002 is resumed
    assert "skipping checkpoint step-000099: incomplete" in capsys.readouterr().out
    assert not marker.exists()


def test_pickle_disguised_as_safetensors_with_valid_checksums_is_refused(diverged, tmp_path, capsys):
    opts, _, root = diverged
    opts = copy_run(opts, root, tmp_path)
    marker = tmp_path / "PWNED"
    newest = checkpoint.folder_for(Path(opts["output.dir"])) / "step-000002"
    (newest / "model.safetensors").write_bytes(planted_pickle(marker))
    complete = json.loads((newest / "COMPLETE.json").read_text())
    complete["files"]["model.safetensors"] = {"sha256": checkpoint.file_sha256(newest / "model.safetensors"),
                                              "bytes": (newest / "model.safetensors").stat().st_size}
    (newest / "COMPLETE.json").write_text(json.dumps(complete))
    assert main(cli_args(opts) + ["--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert "model.safetensors: cannot load it" in err and "never unpickles" in err and "\n" not in err
    assert not marker.exists()


def test_a_damaged_newest_checkpoint_is_skipped_for_the_one_before(diverged, tmp_path):
    opts, _, root = diverged
    opts = copy_run(opts, root, tmp_path)
    ckpts = checkpoint.folder_for(Path(opts["output.dir"]))
    weights = ckpts / "step-000002" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # one flipped bit in a weight: only the checksum can tell
    weights.write_bytes(bytes(data))
    folder, skipped = checkpoint.latest(ckpts)
    assert folder.name == "step-000001"
    assert skipped == ["step-000002: model.safetensors does not match its checksum"]


def test_load_refuses_a_pickle_only_model_folder_without_unpickling(tmp_path):
    marker = tmp_path / "PWNED"
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architectures": ["BertForSequenceClassification"], "model_type": "bert"}))
    (folder / "pytorch_model.bin").write_bytes(planted_pickle(marker))
    with pytest.raises(UserError, match="only pickle weights"):
        taskembed.load(folder)
    assert main(["predict", str(folder), "some text"]) == 2
    assert not marker.exists()


def test_a_folder_that_names_its_own_code_is_refused_without_running_it(tiny_model_dir, tmp_path, monkeypatch, capsys):
    """config.json's auto_map points at a module in the folder. transformers' default (trust_remote_code None) asks on
    the terminal and runs the code on a "y": every reader of a trained folder must refuse it unasked, with "y" waiting."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from taskembed.embed import Embedder

    folder = tmp_path / "remote"
    BertForSequenceClassification(BertConfig.from_pretrained(tiny_model_dir, num_labels=2)).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(folder)
    marker = tmp_path / "PWNED"
    (folder / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="evilbert", architectures=["EvilForSequenceClassification"],
                  auto_map={"AutoConfig": "evil.EvilConfig", "AutoModelForSequenceClassification": "evil.EvilForSequenceClassification"})
    (folder / "config.json").write_text(json.dumps(config))
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO("y\n" * 10))  # the answer that would run it
    with pytest.raises(UserError, match="never runs a model's own code"):
        taskembed.load(folder)
    with pytest.raises(UserError, match="never runs a model's own code"):
        Embedder.load(folder)
    assert main(["predict", str(folder), "some text"]) == 2
    assert "never runs a model's own code" in capsys.readouterr().err
    assert not marker.exists()


def test_load_refuses_a_checkpoint_folder(diverged):
    _, _, root = diverged
    with pytest.raises(UserError, match="no config.json"):
        taskembed.load(root / "step-000002")


def test_optimizer_state_round_trips_without_pickle():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    groups = [{"params": [model[0].weight], "lr": 1e-2, "name": "a"}, {"params": [model[0].bias, *model[1].parameters()], "lr": 1e-3,
                                                                        "weight_decay": 0.0, "name": "b"}]
    opt = torch.optim.AdamW(groups, fused=True)
    for _ in range(2):
        model(torch.randn(5, 4)).sum().backward()
        opt.step()
        opt.zero_grad()
    tensors: dict[str, torch.Tensor] = {}
    data = checkpoint.flatten(opt.state_dict(), "opt", tensors)
    json.dumps(data)  # plain JSON
    back = checkpoint.unflatten(json.loads(json.dumps(data)), tensors)
    sd = opt.state_dict()
    assert back["param_groups"] == sd["param_groups"]  # betas come back as a tuple, int keys as ints
    assert back["state"].keys() == sd["state"].keys()
    assert all(torch.equal(back["state"][i][k], v) for i, s in sd["state"].items() for k, v in s.items())
    with pytest.raises(TypeError, match="without pickle"):
        checkpoint.flatten({"x": object()}, "x", {})


def test_config_checks_for_checkpoint_options():
    with pytest.raises(UserError) as info:
        load_config(None, {"train.checkpoint_every": -1, "train.keep_checkpoints": -2})
    assert "train.checkpoint_every must be >= 0" in str(info.value) and "train.keep_checkpoints must be >= 0" in str(info.value)
    with pytest.raises(UserError, match="keep_checkpoints is 0"):
        load_config(None, {"train.checkpoint_every": 5, "train.keep_checkpoints": 0})


def test_unwritable_output_fails_before_training(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root can write anywhere")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(UserError, match="is not writable"):
            check_output_dir(locked / "out", overwrite=False)
    finally:
        locked.chmod(0o700)


def test_too_little_disk_for_the_checkpoints_fails_before_training(tmp_path, monkeypatch):
    model = torch.nn.Linear(1000, 1000)  # 4 MB of weights: 16 MB a checkpoint with moments and best weights
    monkeypatch.setattr(shutil, "disk_usage", lambda _p: shutil._ntuple_diskusage(10**9, 10**9 - 10**6, 10**6))
    with pytest.raises(UserError, match=r"checkpoints need about 48 MB \(2 kept \+ one being written\) but .* 1 MB free; lower train.keep_checkpoints"):
        checkpoint.check_disk_space(tmp_path / "out.checkpoints", model, keep=2, has_validation=True)
    # Under a megabyte in kB: 400 kB read "0 MB free", as if nothing were left.
    monkeypatch.setattr(shutil, "disk_usage", lambda _p: shutil._ntuple_diskusage(10**9, 10**9 - 4 * 10**5, 4 * 10**5))
    with pytest.raises(UserError, match=r"but .* has 400 kB free"):
        checkpoint.check_disk_space(tmp_path / "out.checkpoints", model, keep=2, has_validation=True)


def test_no_shipped_code_calls_a_loader_that_can_unpickle():
    # The runtime tests above plant pickles where taskembed reads; this covers the paths they cannot reach
    # (a multi-process gather, a numpy reader). Each call must say it refuses pickles, or not be made.
    import re

    root = Path(__file__).resolve().parent.parent
    risky = {
        r"\bpickle\.loads?\(|\bjoblib\.|\bimport (cloud)?pickle|\bimport dill|\bdill\.": "unpickles",
        r"(all_gather_object|broadcast_object_list|gather_object|scatter_object_list)\(": "pickles what it sends",
        r"torch\.load\((?![^)]*weights_only=True)": "without weights_only=True",
        r"np\.load\((?![^)]*allow_pickle=False)": "without allow_pickle=False",
    }
    found = []
    for path in sorted([*root.glob("taskembed/*.py"), *root.glob("demo/*.py"), *root.glob("bench/*.py")]):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("#", 1)[0]
            found += [f"{path.relative_to(root)}:{number} {why}" for pattern, why in risky.items() if re.search(pattern, code)]
    assert not found, found


def test_a_checkpoint_path_that_is_a_file_fails_before_training(tmp_path, tiny_model_dir, write_csv, capsys):
    from taskembed.cli import main
    from tests.conftest import make_rows

    (tmp_path / "out.checkpoints").write_text("not a folder")
    argv = ["train", "--data.source", str(write_csv(make_rows(40))), "--model.name", str(tiny_model_dir),
            "--output.dir", str(tmp_path / "out"), "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "out.checkpoints: is a file" in err and "train.keep_checkpoints 0" in err and len(err.strip().splitlines()) == 1, err
