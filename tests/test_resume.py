"""Checkpoint and resume: a run stopped anywhere and resumed ends bit-identical to one never stopped.

The key test kills `taskembed train` in a subprocess three times (SIGTERM after a checkpoint, SIGKILL in
the middle of a checkpoint write, SIGKILL after a checkpoint), resumes it each time with --resume and
compares the result with an uninterrupted run: every weight tensor (torch.equal) and the whole log,
whose train entries carry a running hash of the batches. bench/fault_injection.py does the same with
ten or more seeded kill points.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import shutil
import signal
from pathlib import Path

import pytest
import torch

import taskembed
from bench import fault_injection as fi
from taskembed import checkpoint
from taskembed.cli import main
from taskembed.errors import UserError
from taskembed.loop import TrainingInterrupted
from tests.conftest import make_rows


pytestmark = pytest.mark.usefixtures("keep_threads")  # tests/conftest.py


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume-data")
    return fi.write_csv(root / "train.csv", make_rows(176, seed=4)), fi.write_csv(root / "test.csv", make_rows(40, seed=5))


def quiet(_msg: str) -> None:
    pass


def interrupt_after(monkeypatch, n: int, signum: int = signal.SIGINT) -> None:
    """Send `signum` to this process right after the n-th checkpoint is written, as a user pressing Ctrl-C would."""
    real = checkpoint.save_checkpoint
    count = {"n": 0}

    def wrapped(*args, **kwargs):
        out = real(*args, **kwargs)
        count["n"] += 1
        if count["n"] == n:
            os.kill(os.getpid(), signum)
        return out

    monkeypatch.setattr(checkpoint, "save_checkpoint", wrapped)


def same_weights(a, b) -> bool:
    from safetensors.torch import load_file

    x, y = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


@pytest.mark.slow
def test_killed_and_resumed_subprocess_matches_uninterrupted_run(tiny_model_dir, data, tmp_path):
    train, test = data
    # The reference writes no checkpoints at all: checkpointing must not change a run, only make it resumable.
    ref_opts = {**fi.overrides(tiny_model_dir, train, test, tmp_path / "reference", epochs=3),
                "train.checkpoint_every": 0, "train.keep_checkpoints": 0}
    ref = taskembed.train(None, ref_opts, progress=False, echo=quiet)

    opts = fi.overrides(tiny_model_dir, train, test, tmp_path / "chain", epochs=3)
    kills = [("sigterm", 1), ("mid-write", 0), ("sigkill", 1)]
    records = fi.run_chain(kills, opts, seed=0)
    assert [r["rc"] for r in records] == [143, -9, -9, 0], [r["stderr"][-800:] for r in records]

    # SIGTERM: one line on stderr saying how to resume, and no output folder.
    last_line = records[0]["stderr"].strip().splitlines()[-1]
    assert last_line.startswith("interrupted by SIGTERM after step ") and last_line.endswith("--resume")
    assert "taskembed train --data.source" in last_line and "checkpoint saved to" in last_line
    assert not any(r["output_exists"] for r in records[:-1])
    # The mid-write kill left a temporary folder, never a step folder without its marker; the next launch removed it.
    assert records[1]["temporaries"] and not set(records[1]["temporaries"]) & set(records[2]["temporaries"])
    # Each launch continued from the newest checkpoint complete when the previous one died.
    for before, after in zip(records, records[1:]):
        assert after["resumed_from"] == int(before["latest_complete"].split("-")[1])

    result = fi.compare(ref.output_dir, tmp_path / "chain")
    assert result["weights_identical"], "final weights differ from the uninterrupted run"
    assert result["log_identical"], "the sequence of batches, losses or rates differs from the uninterrupted run"
    assert result["metrics_identical"]
    assert not (tmp_path / "chain.checkpoints").exists()  # deleted once the output folder is complete


def test_sigint_in_process_then_resume_with_validation_and_no_unpickling(tiny_model_dir, data, tmp_path, monkeypatch):
    train, test = data
    opts = {**fi.overrides(tiny_model_dir, train, test, tmp_path / "out", epochs=3, validation=True), "train.eval_every": 4,
            "train.checkpoint_every": 5}
    ref = taskembed.train(None, {**opts, "output.dir": str(tmp_path / "ref")}, progress=False, echo=quiet)

    before = signal.getsignal(signal.SIGINT)  # default_int_handler, or SIG_IGN when pytest runs as a background job
    interrupt_after(monkeypatch, 2)
    with pytest.raises(TrainingInterrupted) as info:
        taskembed.train(None, opts, progress=False, echo=quiet)
    # The signal came after the checkpoint at step 10; the step in flight (11) finished and was checkpointed.
    assert info.value.exit_code == 130 and info.value.step == 11 and info.value.saved.name == "step-000011"
    assert str(info.value).endswith("continue with: taskembed.train(..., resume=True)")  # a Python caller's way on
    assert not (tmp_path / "out").exists()
    assert signal.getsignal(signal.SIGINT) is before  # handlers restored
    root = tmp_path / "out.checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["step-000010", "step-000011"]
    assert {p.suffix for p in (root / "step-000011").iterdir()} == {".json", ".safetensors"}
    state = json.loads((root / "step-000011" / "state.json").read_text())
    assert state["step"] == 11 and state["best_step"] in (4, 8) and len(state["log"]) > 0

    monkeypatch.undo()

    def forbidden(*_a, **_k):
        raise AssertionError("resume must not unpickle anything")

    monkeypatch.setattr(torch, "load", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    res = taskembed.train(None, opts, progress=False, echo=quiet, resume=True)
    assert same_weights(ref.output_dir, res.output_dir)
    assert (ref.output_dir / "log.jsonl").read_text() == (res.output_dir / "log.jsonl").read_text()
    assert res.metrics == ref.metrics


@pytest.fixture(scope="module")
def stopped(tiny_model_dir, data, tmp_path_factory):
    """A run stopped by SIGTERM after its first checkpoint: (overrides, checkpoint folder). Read-only: copy before resuming."""
    train, test = data
    out = tmp_path_factory.mktemp("stopped") / "out"
    opts = fi.overrides(tiny_model_dir, train, test, out, epochs=2)
    mp = pytest.MonkeyPatch()
    interrupt_after(mp, 1, signal.SIGTERM)
    threads = torch.get_num_threads()
    try:
        with pytest.raises(TrainingInterrupted) as info:
            taskembed.train(None, opts, progress=False, echo=quiet)
    finally:
        mp.undo()
        torch.set_num_threads(threads)
    assert info.value.exit_code == 143
    return opts, checkpoint.folder_for(out)


def cli_args(opts) -> list[str]:
    return ["train", "--no-progress"] + [f"--{k}={v}" for k, v in opts.items()]


def test_a_run_on_data_given_in_python_says_how_to_resume_in_python(tiny_model_dir, data, tmp_path, monkeypatch):
    import pandas as pd

    train, test = data
    opts = {**fi.overrides(tiny_model_dir, train, test, tmp_path / "out", epochs=1), "train.checkpoint_every": 3}
    del opts["data.source"]
    frame = pd.read_csv(train)
    interrupt_after(monkeypatch, 1)
    with pytest.raises(taskembed.TrainingInterrupted) as info:
        taskembed.train(None, opts, data=frame, progress=False, echo=quiet)
    assert str(info.value).endswith("continue with: taskembed.train(the same config, data=the same data, resume=True)")
    monkeypatch.undo()
    # Without the data, the refusal says to give it again; with it, the run continues to the end.
    with pytest.raises(UserError, match=r"the data: the checkpoint was trained on data given in Python \(taskembed.train\(data=...\)\); "
                                        "pass the same data= again"):
        taskembed.train(None, {**opts, "data.source": str(train)}, progress=False, echo=quiet, resume=True)
    assert taskembed.train(None, opts, data=frame, progress=False, echo=quiet, resume=True).output_dir.is_dir()


def test_resume_without_checkpoint_is_an_error_and_auto_starts_afresh(tiny_model_dir, data, tmp_path, capsys):
    train, test = data
    opts = {**fi.overrides(tiny_model_dir, train, test, tmp_path / "out", epochs=1), "train.checkpoint_every": 0}
    assert main(cli_args(opts) + ["--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no complete checkpoint in ") and "run without --resume" in err and "\n" not in err
    assert main(cli_args(opts) + ["--resume", "auto"]) == 0
    assert (tmp_path / "out" / "model.safetensors").is_file() and not (tmp_path / "out.checkpoints").exists()
    # Run again on the finished folder: nothing to resume, said as such (not "already exists; pass --output.overwrite",
    # which would train again from step 1), and the finished model is left as it was.
    before = (tmp_path / "out" / "model.safetensors").read_bytes()
    for how in (["--resume"], ["--resume", "auto"]):
        assert main(cli_args(opts) + how) == 2
        err = capsys.readouterr().err.strip()
        assert "holds a finished run, so there is nothing to resume" in err and "without --resume" in err and "\n" not in err
    assert (tmp_path / "out" / "model.safetensors").read_bytes() == before
    # With checkpoints off there is nothing to resume: --resume is refused, auto (which a script may always pass) starts afresh.
    off = {**opts, "train.keep_checkpoints": 0, "output.overwrite": True}
    assert main(cli_args(off) + ["--resume"]) == 2
    assert "keep_checkpoints is 0" in capsys.readouterr().err
    assert main(cli_args(off) + ["--resume", "auto"]) == 0
    assert "nothing to resume: starting afresh" in capsys.readouterr().out


def test_starting_afresh_over_checkpoints_needs_overwrite(stopped, capsys):
    opts, root = stopped
    assert main(cli_args(opts)) == 2
    err = capsys.readouterr().err
    assert "holds checkpoints of an earlier run" in err and "--resume" in err and "--output.overwrite true" in err


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"train.batch_size": 16}, "train.batch_size 8 -> 16 (changes the schedule)"),
        ({"train.epochs": 3}, "train.epochs 2.0 -> 3.0 (changes the schedule)"),
        ({"train.lr": 1e-3}, "train.lr 0.003 -> 0.001 (changes the lr plan"),
        ({"train.freeze_layers": 1}, "train.freeze_layers 0 -> 1 (changes the lr plan"),
    ],
)
def test_a_changed_config_names_what_changed(stopped, change, named, capsys):
    opts, root = stopped
    assert main(cli_args({**opts, **change}) + ["--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot resume from" in err and named in err and "\n" not in err


def test_changed_parameters_are_named_instead_of_a_group_size_mismatch(stopped, tmp_path):
    """A model whose parameters differ from the checkpoint's (same config) gets a UserError, not PyTorch's message."""
    from taskembed.config import ModelConfig
    from taskembed.errors import UserError
    from taskembed.modeling import load_classifier
    from taskembed.lrplan import build_plan

    opts, root = stopped
    folder, _ = checkpoint.latest(root)
    model, _ = load_classifier(ModelConfig(name=opts["model.name"]), ["neg", "pos", "extra"])  # a 3-way head
    plan = build_plan(model, lr=3e-3, decay=0.9, head_lr=5e-3)
    opt = torch.optim.AdamW(plan.optimizer_groups(model))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    with pytest.raises(UserError, match=r"group 'head' had parameter shapes \[2, 32\], now \[3, 32\]"):
        checkpoint.load_checkpoint(folder, model, opt, sched, rank=0, device=torch.device("cpu"))


def test_resume_cli_continues_the_stopped_run(stopped, tmp_path, capsys):
    opts, root = stopped
    out = tmp_path / "moved"
    shutil.copytree(root, checkpoint.folder_for(out))  # a run folder moved elsewhere resumes too
    assert main(cli_args({**opts, "output.dir": out}) + ["--resume"]) == 0
    assert "resuming from" in capsys.readouterr().out
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log if e["kind"] == "train"] == list(range(2, 2 * 22 + 1, 2))
    assert not checkpoint.folder_for(out).exists()


def test_report_options_may_change_and_other_library_versions_are_noted(stopped, tmp_path, capsys, monkeypatch):
    from taskembed.config import OutputConfig

    # every output.* option shapes only what is written after training, so none may block a resume
    assert {f"output.{f.name}" for f in dataclasses.fields(OutputConfig)} <= checkpoint.MAY_CHANGE_ON_RESUME
    opts, root = stopped
    out = tmp_path / "moved"
    shutil.copytree(root, checkpoint.folder_for(out))
    real = checkpoint.library_versions
    monkeypatch.setattr(checkpoint, "library_versions", lambda: {**real(), "torch": "9.9.9"})
    changed = {**opts, "output.dir": out, "output.calibrate": False, "output.error_analysis": False}
    assert main(cli_args(changed) + ["--resume"]) == 0
    said = capsys.readouterr().out
    assert f"written with torch {real()['torch']}" in said and "this run has torch 9.9.9" in said and "not necessarily bit for bit" in said
    assert not (out / "calibration.json").exists()


def test_a_crash_while_writing_the_output_resumes_without_retraining(stopped, tmp_path, monkeypatch, capsys):
    """The last step is checkpointed too: a failure in evaluation, reports or the final save costs no training."""
    from taskembed import artifacts

    opts, root = stopped
    opts = {**opts, "output.dir": str(tmp_path / "out"), "train.epochs": 1}
    real = artifacts.save

    def broken(*_a, **_k):
        raise OSError("disk full")

    monkeypatch.setattr(artifacts, "save", broken)
    with pytest.raises(OSError, match="disk full"):
        taskembed.train(None, opts, progress=False, echo=quiet)
    assert not (tmp_path / "out").exists() and checkpoint.latest(tmp_path / "out.checkpoints")[0].name == "step-000022"
    monkeypatch.setattr(artifacts, "save", real)
    capsys.readouterr()
    said: list[str] = []
    res = taskembed.train(None, opts, progress=False, echo=said.append, resume=True)
    assert any("(step 22 of 22, training complete)" in m for m in said)  # nothing left to train: straight to evaluation and saving
    assert (res.output_dir / "model.safetensors").is_file() and not (tmp_path / "out.checkpoints").exists()


def test_a_full_disk_at_the_final_save_says_how_to_save_without_training_again(stopped, tmp_path, monkeypatch):
    import errno

    from taskembed import artifacts

    opts, root = stopped
    out = tmp_path / "out"
    opts = {**opts, "output.dir": str(out), "train.epochs": 1}

    def full(*_a, **_k):
        raise OSError(errno.ENOSPC, "No space left on device", str(out))

    monkeypatch.setattr(artifacts, "save", full)
    with pytest.raises(taskembed.UserError) as info:
        taskembed.train(None, opts, progress=False, echo=quiet)
    assert str(info.value) == (f"No space left on device: {out}; training is complete and checkpointed in {tmp_path / 'out.checkpoints'}: "
                               "free some space (or fix the permission) and call it again with resume=True to save it without training again")
    assert checkpoint.latest(tmp_path / "out.checkpoints")[0].name == "step-000022"


def test_an_output_folder_that_appeared_while_training_says_how_to_save_without_training_again(stopped, tmp_path, monkeypatch, capsys):
    # The bare "pass --output.overwrite true" deleted the finished checkpoint and trained again from step 1.
    from taskembed import artifacts

    opts, _ = stopped
    out = tmp_path / "out"
    opts = {**opts, "output.dir": str(out), "train.epochs": 1}
    real = artifacts.save

    def appeared(*a, **k):
        out.mkdir()
        (out / "training_config.json").write_text("{}")  # another run's folder
        return real(*a, **k)

    monkeypatch.setattr(artifacts, "save", appeared)
    with pytest.raises(taskembed.UserError) as info:
        taskembed.train(None, opts, progress=False, echo=quiet)
    assert str(info.value) == (f"output.dir {out} was written by something else while this run trained; training is complete and "
                               f"checkpointed in {tmp_path / 'out.checkpoints'}: call it again with resume=True, overrides={{'output.overwrite': True}} "
                               "to replace that folder, or move it away and call it again with resume=True, to save without training again")
    monkeypatch.setattr(artifacts, "save", real)
    capsys.readouterr()
    said: list[str] = []
    res = taskembed.train(None, {**opts, "output.overwrite": True}, progress=False, echo=said.append, resume=True)
    assert any("(step 22 of 22, training complete)" in m for m in said)
    assert (res.output_dir / "model.safetensors").is_file() and not (tmp_path / "out.checkpoints").exists()


def test_a_signal_while_the_last_checkpoint_is_written_stops_with_the_resume_line(tiny_model_dir, data, tmp_path, monkeypatch, capsys):
    """Ctrl-C after the loop last asked (during the final checkpoint) is not lost: the run stops as for any signal,
    the last step checkpointed, and --resume goes straight to evaluating and saving."""
    train, test = data
    opts = {**fi.overrides(tiny_model_dir, train, test, tmp_path / "out", epochs=1), "train.checkpoint_every": 0}
    real_save = checkpoint.save_checkpoint
    total = {}

    def save(root, model, optimizer, scheduler, state, **kw):
        if state["step"] == kw["meta"]["total_steps"]:
            total["steps"] = state["step"]
            os.kill(os.getpid(), signal.SIGINT)  # the loop has already asked for this step
        return real_save(root, model, optimizer, scheduler, state, **kw)

    monkeypatch.setattr(checkpoint, "save_checkpoint", save)
    exe = tmp_path / "venv" / "bin" / "taskembed"  # not on PATH: the resume line must name it as it was typed
    monkeypatch.setattr("sys.argv", [str(exe)])
    assert main(cli_args(opts)) == 130
    err = capsys.readouterr().err.strip()
    assert f"interrupted by SIGINT after step {total['steps']}; checkpoint saved to" in err and err.endswith("--resume")
    assert f": {exe} train --" in err, err
    assert not (tmp_path / "out").exists()
    monkeypatch.undo()
    assert main(cli_args(opts) + ["--resume"]) == 0
    assert (tmp_path / "out" / "model.safetensors").is_file()


def test_a_checkpoint_planned_for_another_step_count_is_refused(stopped, tmp_path, capsys):
    opts, root = stopped
    moved = checkpoint.folder_for(tmp_path / "moved")
    shutil.copytree(root, moved)
    folder, _ = checkpoint.latest(moved)
    # as an earlier taskembed would have planned it; rewritten with its checksum so the checkpoint still verifies
    meta = json.loads((folder / "meta.json").read_text())
    meta["total_steps"] -= 1
    (folder / "meta.json").write_text(json.dumps(meta))
    complete = json.loads((folder / "COMPLETE.json").read_text())
    complete["files"]["meta.json"] = {"sha256": checkpoint.file_sha256(folder / "meta.json"), "bytes": (folder / "meta.json").stat().st_size}
    (folder / "COMPLETE.json").write_text(json.dumps(complete))
    assert main(cli_args({**opts, "output.dir": tmp_path / "moved"}) + ["--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert f"it was planned for {meta['total_steps']} optimizer steps and this run plans {meta['total_steps'] + 1}" in err


def _rewrite_meta(folder, change) -> None:
    """Change a checkpoint's meta.json and its checksum, so that the checkpoint still verifies."""
    meta = json.loads((folder / "meta.json").read_text())
    change(meta)
    (folder / "meta.json").write_text(json.dumps(meta))
    complete = json.loads((folder / "COMPLETE.json").read_text())
    complete["files"]["meta.json"] = {"sha256": checkpoint.file_sha256(folder / "meta.json"), "bytes": (folder / "meta.json").stat().st_size}
    (folder / "COMPLETE.json").write_text(json.dumps(complete))


def test_a_checkpoint_that_numbered_the_labels_otherwise_is_refused(stopped, tmp_path, capsys):
    # As a process whose label order had differed would have written it: its head's rows mean other labels.
    opts, root = stopped
    moved = checkpoint.folder_for(tmp_path / "moved")
    shutil.copytree(root, moved)
    folder, _ = checkpoint.latest(moved)
    labels = json.loads((folder / "meta.json").read_text())["labels"]
    _rewrite_meta(folder, lambda m: m.update(labels=list(reversed(labels))))
    assert main(cli_args({**opts, "output.dir": tmp_path / "moved"}) + ["--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert f"the label numbering ({', '.join(reversed(labels))} -> {', '.join(labels)}) with the same data and config" in err
    assert "fingerprint" not in err and "Put the old values back" not in err  # no value of the user's can put it back


def test_a_checkpoint_without_a_label_record_still_resumes(stopped, tmp_path):
    # Checkpoints written before the labels were recorded: the same data, so the same run.
    opts, root = stopped
    moved = checkpoint.folder_for(tmp_path / "moved")
    shutil.copytree(root, moved)
    folder, _ = checkpoint.latest(moved)
    _rewrite_meta(folder, lambda m: m.pop("labels"))
    assert main(cli_args({**opts, "output.dir": tmp_path / "moved"}) + ["--resume"]) == 0


def test_sigterm_while_the_model_folder_is_written_leaves_no_half_folder_and_says_how_to_finish(tiny_model_dir, data, tmp_path, capsys,
                                                                                               monkeypatch):
    import os
    import signal

    from taskembed import artifacts

    train, test = data
    opts = fi.overrides(tiny_model_dir, train, test, tmp_path / "out", epochs=1)
    real = artifacts.write_json

    def killed_midway(path, obj):
        real(path, obj)
        if ".tmp-" in path.parent.name:  # inside the staged output folder
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(artifacts, "write_json", killed_midway)
    assert main(cli_args(opts)) == 143
    err = capsys.readouterr().err
    assert "its checkpoint is kept: finish with taskembed train" in err and err.strip().endswith("terminated"), err
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith((".out", "out"))) == ["out.checkpoints"]
    monkeypatch.undo()
    assert main(cli_args(opts) + ["--resume"]) == 0 and (tmp_path / "out" / "model.safetensors").is_file()


def test_ctrl_c_while_checkpoints_are_deleted_leaves_none_half_deleted(stopped, tmp_path, monkeypatch):
    """A deletion stopped half-way left a step folder without its marker, which --resume took for one being written;
    after the model folder is saved, it made a finished run exit 130."""
    opts, _ = stopped
    out = tmp_path / "out"
    opts = {**opts, "output.dir": str(out), "train.epochs": 1}
    real, real_remove = shutil.rmtree, checkpoint.remove
    calls = {"armed": False, "n": 0}

    def interrupted(path, *a, **k):
        if calls["armed"]:
            calls["n"] += 1
            if calls["n"] == 1:
                (Path(path) / checkpoint.MARKER).unlink(missing_ok=True)  # what rmtree had removed when Ctrl-C came
                raise KeyboardInterrupt
        return real(path, *a, **k)

    def remove(root):
        calls["armed"] = True  # the deletion after the model folder is saved
        return real_remove(root)

    monkeypatch.setattr(checkpoint.shutil, "rmtree", interrupted)
    monkeypatch.setattr(checkpoint, "remove", remove)
    res = taskembed.train(None, opts, progress=False, echo=quiet)  # no KeyboardInterrupt: the run is complete
    assert calls["n"] >= 2 and (res.output_dir / "model.safetensors").is_file() and not (tmp_path / "out.checkpoints").exists()
    # pruning stopped the same way: what is left is an .old- folder, never a step folder without its marker
    root = tmp_path / "pruned"
    for step in (1, 2):
        (root / f"step-00000{step}").mkdir(parents=True)
        (root / f"step-00000{step}" / checkpoint.MARKER).write_text("{}")
    calls["n"] = 0
    with pytest.raises(KeyboardInterrupt):
        checkpoint.prune(root, keep=1)
    assert [p for _, p in checkpoint.step_folders(root)] == [root / "step-000002"]
    assert [p.name.startswith(".old-step-000001-") for p in root.iterdir() if p.name.startswith(".")] == [True]
    checkpoint.prepare(root, fresh=False)  # the next start
    assert sorted(p.name for p in root.iterdir()) == ["step-000002"]


def test_the_same_files_named_another_way_are_no_change(stopped, tmp_path, monkeypatch):
    # A relative path for the absolute one (a project resumed from its own folder), or a trailing slash, was refused
    # as "changes the data" although the data's fingerprint matched.
    _, root = stopped
    folder, _ = checkpoint.latest(root)
    saved = json.loads((folder / "training_config.json").read_text())
    meta = checkpoint.read_meta(folder)
    source = Path(saved["data"]["source"])
    monkeypatch.chdir(source.parent)
    same = {**saved, "data": {**saved["data"], "source": source.name}, "model": {**saved["model"], "name": saved["model"]["name"] + "/"}}
    checkpoint.check_compatible(folder, same, meta["data_fingerprint"], meta["world_size"], labels=meta.get("labels"))
    (tmp_path / "copy.csv").write_bytes(source.read_bytes())  # the same content in another file is still another source
    other = {**saved, "data": {**saved["data"], "source": str(tmp_path / "copy.csv")}}
    with pytest.raises(taskembed.UserError, match="data.source"):
        checkpoint.check_compatible(folder, other, meta["data_fingerprint"], meta["world_size"], labels=meta.get("labels"))


def test_changed_training_data_is_refused_in_one_line(stopped):
    # The data file edited after a stop (same path, same config): the refusal names the data. It raised
    # UnboundLocalError instead, and a sweep, which resumes its trial in flight, could not continue at all.
    _, root = stopped
    folder, _ = checkpoint.latest(root)
    saved = json.loads((folder / "training_config.json").read_text())
    meta = checkpoint.read_meta(folder)
    with pytest.raises(taskembed.UserError, match=r"cannot resume from .*the training data \(its fingerprint differs\)"):
        checkpoint.check_compatible(folder, saved, "0" * 16, meta["world_size"], labels=meta.get("labels"))


def test_pruning_after_a_resume_drops_the_later_steps_it_went_back_past(tmp_path):
    # A resume skipped a broken step-6 and went back to step 4; its next save (step 5) was then pruned with keep 1,
    # since the broken folder, newest by number, kept the only slot: "checkpoint saved to step-000005", and none left.
    root = tmp_path / "ckpt"
    for step in (2, 4, 5, 6):
        folder = root / f"step-00000{step}"
        folder.mkdir(parents=True)
        (folder / checkpoint.MARKER).write_text("{}")
    checkpoint.prune(root, keep=1, saved_step=5)
    assert [p.name for _, p in checkpoint.step_folders(root)] == ["step-000005"]
    checkpoint.prune(root, keep=1)  # without the step saved, as before: the newest complete ones
    assert [p.name for _, p in checkpoint.step_folders(root)] == ["step-000005"]
