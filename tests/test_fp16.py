"""train.fp16: float16 autocast with a dynamic loss scale.

On the CPU float16 is emulated (slowly), but the scaling, the skipped steps, the stop and the checkpointed scale are
the same code on a GPU; tiny models keep it fast. No GPU ran it here: none was available."""

from __future__ import annotations

import json
import shutil
import signal
import warnings
from pathlib import Path

import pytest
import torch

import taskembed
from bench import fault_injection as fi
from taskembed import checkpoint, loop
from taskembed.config import load_config
from taskembed.errors import UserError
from taskembed.loop import TrainingDiverged, TrainingInterrupted
from taskembed.token_table import CompactVocab
from tests.conftest import make_rows
from tests.test_resume import interrupt_after, quiet, same_weights

pytestmark = pytest.mark.usefixtures("keep_threads")  # tests/conftest.py


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("fp16-data")
    return fi.write_csv(root / "train.csv", make_rows(96, seed=4)), fi.write_csv(root / "test.csv", make_rows(40, seed=5))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """bench/fault_injection.py's tiny BERT (hidden 32), which learns the easy task in these 36 steps."""
    return fi.build_tiny_model(tmp_path_factory.mktemp("fp16-model"))


def options(model: Path, data, out: Path, **extra) -> dict:
    train, test = data
    return {**fi.overrides(model, train, test, out, epochs=3), "train.fp16": True, **extra}  # 12 steps an epoch


def updates(monkeypatch) -> list[torch.Tensor]:
    """The optimizer's updates: for each, every gradient as the fused AdamW applies it (divided by its grad_scale)."""
    real, calls = torch.optim.AdamW.step, []

    def step(self, *args, **kwargs):
        scale = getattr(self, "grad_scale", None)
        grads = [p.grad / scale if scale is not None else p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
        calls.append(torch.cat([x.flatten() for x in grads]))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", step)
    return calls


def test_the_settings_it_cannot_go_with_are_refused():
    with pytest.raises(UserError, match="train.fp16 and train.bf16 on ask for two half-precision types; set one of them"):
        load_config(None, {"train.fp16": True, "train.bf16": "on"})
    with pytest.raises(UserError, match=r"train.cuda_graphs cannot be combined with train.fp16"):
        load_config(None, {"train.fp16": True, "train.cuda_graphs": True})


def test_it_trains_in_float16_at_the_starting_scale_and_records_it(tiny, data, tmp_path, monkeypatch):
    seen, real = set(), torch.nn.Linear.forward

    def spy(self, x):
        y = real(self, x)
        if torch.is_grad_enabled() and torch.is_autocast_enabled("cpu"):  # training's products (a probe runs outside)
            seen.add(y.dtype)
        return y

    monkeypatch.setattr(torch.nn.Linear, "forward", spy)
    calls, lines, filters = updates(monkeypatch), [], list(warnings.filters)
    result = taskembed.train(None, options(tiny, data, tmp_path / "out"), progress=False, echo=lines.append)
    assert warnings.filters == filters  # the caller's warning filters, as they were
    assert seen == {torch.float16}  # every training product, in float16
    assert any(line.startswith("training on cpu with fp16 autocast and loss scaling") for line in lines), lines
    assert any(line.startswith("note: train.fp16 on the CPU: float16 arithmetic is emulated here") for line in lines)
    assert len(calls) == 36 and not any(line.startswith("fp16:") for line in lines)  # no step overflowed: none said
    run = json.loads((result.output_dir / "run.json").read_text())
    assert run["fp16"] == {"overflow_steps": 0, "loss_scale": loop.SCALE_START} and run["bf16"] is False
    log = [json.loads(x) for x in (result.output_dir / "log.jsonl").read_text().splitlines()]
    assert {(e["loss_scale"], e["overflow_steps"]) for e in log if e["kind"] == "train"} == {(loop.SCALE_START, 0)}
    # The same run in float32 (loss scaling aside, the same arithmetic in other rounding): the same steps, nearly. AdamW
    # barely sees a gradient's scale, so the gradient it is handed is compared too: unscaled, and clipped, as float32's.
    scaled = calls[0]
    calls.clear()
    full = taskembed.train(None, options(tiny, data, tmp_path / "fp32", **{"train.fp16": False}), progress=False, echo=quiet)
    assert torch.linalg.vector_norm(scaled) == pytest.approx(float(torch.linalg.vector_norm(calls[0])), rel=0.01)
    assert float(torch.nn.functional.cosine_similarity(scaled, calls[0], dim=0)) > 0.999
    norms = [[e["grad_norm"] for e in json.loads(f"[{','.join((r.output_dir / 'log.jsonl').read_text().splitlines())}]")]
             for r in (result, full)]
    assert norms[0] == pytest.approx(norms[1], rel=0.02) and norms[0] != norms[1]
    assert result.metrics["test"]["accuracy"] >= 0.9 and full.metrics["test"]["accuracy"] >= 0.9  # the easy task, learnt


def test_an_overflowing_step_makes_no_update_and_halves_the_scale(tiny, data, tmp_path, monkeypatch):
    # At 2**30 the loss's gradient overflows float16's largest value (65,504) from the first backward.
    monkeypatch.setattr(loop, "SCALE_START", 2.0**30)
    calls, lines, decays = updates(monkeypatch), [], []
    real_decay = CompactVocab.decay  # the token rows no text uses decay with each update, and only then
    monkeypatch.setattr(CompactVocab, "decay", lambda self: decays.append(1) or real_decay(self))
    filters = list(warnings.filters)
    result = taskembed.train(None, options(tiny, data, tmp_path / "out"), progress=False, echo=lines.append)
    assert warnings.filters == filters
    run = json.loads((result.output_dir / "run.json").read_text())
    skipped = run["fp16"]["overflow_steps"]
    assert 1 <= skipped < 36 and len(calls) == len(decays) == 36 - skipped
    # Skipped or not, every step moves the schedule: the rates are the float32 run's, step by step.
    full = taskembed.train(None, options(tiny, data, tmp_path / "fp32", **{"train.fp16": False}), progress=False, echo=quiet)
    rates = [[e["lr"] for e in json.loads(f"[{','.join((r.output_dir / 'log.jsonl').read_text().splitlines())}]")]
             for r in (result, full)]
    assert rates[0] == rates[1] and len(rates[0]) == 36
    assert run["fp16"]["loss_scale"] == 2.0 ** (30 - skipped)
    assert f"fp16: {skipped} of 36 optimizer steps made no update, their scaled gradient having overflowed float16 " \
           f"(the loss scale halves after each; it ended at {2.0 ** (30 - skipped):g})" in lines
    log = [json.loads(x) for x in (result.output_dir / "log.jsonl").read_text().splitlines() if '"train"' in x]
    assert log[-1]["overflow_steps"] == skipped and all(e["grad_norm"] is None or e["grad_norm"] >= 0 for e in log)


def test_the_scale_grows_after_steps_without_overflow_up_to_its_cap(tiny, data, tmp_path, monkeypatch):
    monkeypatch.setattr(loop, "SCALE_GROWTH_STEPS", 10)
    monkeypatch.setattr(loop, "SCALE_MAX", 2.0**17)  # (at 2**18 this tiny model's gradient overflows by step 24)
    result = taskembed.train(None, options(tiny, data, tmp_path / "out"), progress=False, echo=quiet)
    log = [json.loads(x) for x in (result.output_dir / "log.jsonl").read_text().splitlines()]
    assert [e["loss_scale"] for e in log] == [2.0**16] * 9 + [2.0**17] * 27  # logged every step here
    assert json.loads((result.output_dir / "run.json").read_text())["fp16"] == {"overflow_steps": 0, "loss_scale": 2.0**17}


class _NanGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * float("nan")


def test_a_gradient_that_is_not_finite_even_unscaled_stops_the_run(tiny, data, tmp_path, monkeypatch):
    """A fault, not an overflow: the scale falls to below 1 in 17 halvings from 2**16, and the run stops there."""
    real = torch.nn.Linear.forward
    monkeypatch.setattr(torch.nn.Linear, "forward", lambda self, x: _NanGradient.apply(real(self, x)))
    opts = options(tiny, data, tmp_path / "out", **{"train.keep_checkpoints": 0, "train.checkpoint_every": 0})
    with pytest.raises(TrainingDiverged) as info:
        taskembed.train(None, opts, progress=False, echo=quiet)
    assert str(info.value).startswith("step 17: the gradient is not finite even at loss scale 1 (it overflowed float16 17 "
                                      "times); set train.fp16 false")
    assert not (tmp_path / "out").exists()


def test_a_stopped_fp16_run_resumes_with_its_scale(tiny, data, tmp_path, monkeypatch):
    monkeypatch.setattr(loop, "SCALE_START", 2.0**30)  # overflows early on, so the scale moves before the stop
    ref = taskembed.train(None, options(tiny, data, tmp_path / "ref"), progress=False, echo=quiet)
    opts = options(tiny, data, tmp_path / "out")
    interrupt_after(monkeypatch, 2, signal.SIGTERM)
    with pytest.raises(TrainingInterrupted):
        taskembed.train(None, opts, progress=False, echo=quiet)
    monkeypatch.setattr(loop, "SCALE_START", 1.0)  # the resumed run must take the checkpoint's scale, not a fresh one
    done = taskembed.train(None, opts, progress=False, echo=quiet, resume=True)
    assert same_weights(ref.output_dir, done.output_dir)
    first, second = (json.loads((r.output_dir / "run.json").read_text())["fp16"] for r in (ref, done))
    assert first == second and first["overflow_steps"] >= 1


def test_an_older_checkpoint_resumes_as_the_run_it_was(tiny, data, tmp_path, monkeypatch, capsys):
    """A checkpoint from before train.fp16 and train.device existed ran without fp16: resuming it with fp16 is refused, as
    any change that alters the run is; with the defaults it resumes. A checkpoint from another device resumes, said."""
    opts = options(tiny, data, tmp_path / "out", **{"train.fp16": False})
    interrupt_after(monkeypatch, 2, signal.SIGTERM)
    with pytest.raises(TrainingInterrupted) as info:
        taskembed.train(None, opts, progress=False, echo=quiet)
    folder = info.value.saved
    for other in folder.parent.iterdir():  # this checkpoint alone: no earlier one to fall back on
        if other != folder:
            shutil.rmtree(other)

    def rewrite(name: str, change) -> None:  # the file as an older taskembed (or a GPU) wrote it, with its checksum
        path = folder / name
        path.write_text(json.dumps(change(json.loads(path.read_text()))))
        marker = json.loads((folder / checkpoint.MARKER).read_text())
        marker["files"][name] = {"sha256": checkpoint.file_sha256(path), "bytes": path.stat().st_size}
        (folder / checkpoint.MARKER).write_text(json.dumps(marker))

    rewrite("training_config.json", lambda c: {**c, "train": {k: v for k, v in c["train"].items() if k not in ("fp16", "device")}})
    rewrite("meta.json", lambda m: {**m, "device": "cuda"})
    with pytest.raises(UserError, match=r"train.fp16 False -> True"):
        taskembed.train(None, {**opts, "train.fp16": True}, progress=False, echo=quiet, resume=True)
    lines = []
    done = taskembed.train(None, opts, progress=False, echo=lines.append, resume=True)
    assert f"note: {folder} was written on cuda and this run continues on cpu: the same run, but its dropout draws and " \
           "arithmetic differ from there on, so not bit for bit" in lines
    assert json.loads((done.output_dir / "run.json").read_text())["fp16"] is None
