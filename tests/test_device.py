"""Choosing the device: train.device, --device on the commands that load a model, and what "auto" picks.

This machine has no GPU (nor does CI), so the tests that ask what happens on one make torch say it has one (or has
none) and check the decision, not a GPU run."""

from __future__ import annotations

import contextlib
import os

import pytest
import torch

import taskembed
from taskembed import api, loop
from taskembed.cli import main
from taskembed.config import load_config
from taskembed.errors import UserError
from taskembed.loop import distributed, training_device
from taskembed.embed import embed_file
from taskembed.modeling import native_bf16, pick_device
from tests.conftest import make_rows


def test_the_setting_is_checked_with_the_values_it_takes():
    assert load_config(None, {"train.device": "cuda:1"}).train.device == "cuda:1"
    with pytest.raises(UserError, match=r"train.device must be auto, cpu, cuda or cuda:N \(got 'gpu'\)"):
        load_config(None, {"train.device": "gpu"})


def test_auto_takes_this_processs_gpu_and_cpu_stays_on_the_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("LOCAL_RANK", "1")  # the second process of a torchrun on this machine
    assert training_device("auto") == torch.device("cuda", 1)
    assert training_device("cuda") == torch.device("cuda", 1)
    assert training_device("cpu") == torch.device("cpu")
    monkeypatch.delenv("LOCAL_RANK")
    assert training_device("cuda:1") == torch.device("cuda", 1)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(UserError, match="names one GPU, but torchrun started 2 processes"):
        training_device("cuda:1")


def test_a_gpu_that_is_not_there_is_said_before_anything_is_read_or_written(monkeypatch, tiny_overrides, write_csv, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert training_device("auto") == torch.device("cpu")
    data = write_csv(make_rows(40))
    args = ["train", "--data.source", str(data), *[x for k, v in tiny_overrides.items() for x in (f"--{k}", str(v))]]
    for command in (args + ["--train.device", "cuda"], args + ["--train.device", "cuda", "--dry-run"]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert err == "error: train.device 'cuda': torch here has no such CUDA GPU (0 found); use cpu\n"
    assert not os.path.exists(tiny_overrides["output.dir"])


def test_processes_on_the_cpu_join_gloo_and_processes_on_gpus_nccl(monkeypatch):
    joined = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.distributed, "init_process_group", joined.append)
    monkeypatch.setattr(torch.distributed, "get_rank", lambda: 1)
    assert distributed(gpu=False) == (1, 2) and distributed(gpu=True) == (1, 2)
    assert joined == ["gloo", "nccl"]


def test_training_and_its_process_group_follow_the_setting(monkeypatch, tiny_overrides, write_csv):
    """On a machine with a GPU (made to seem so: fit, which would use it, is replaced), cpu keeps training on the CPU."""
    class Reached(Exception):
        pass

    seen = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(api, "distributed", lambda gpu=None: seen.append(("gpu", gpu)) or (0, 1))

    def fit(*_args, device=None, **_kwargs):
        seen.append(("device", device))
        raise Reached

    monkeypatch.setattr(api, "fit", fit)
    data = str(write_csv(make_rows(60)))
    for setting, device in (("cpu", torch.device("cpu")), ("auto", torch.device("cuda", 0)), ("cuda", torch.device("cuda", 0))):
        seen.clear()
        with pytest.raises(Reached):
            taskembed.train(None, {**tiny_overrides, "data.source": data, "train.device": setting}, progress=False, echo=None)
        assert seen == [("gpu", device.type == "cuda"), ("device", device)], setting
    # A GPU without bf16 units (a T4) trains in float32 unless told otherwise: said, with the way to its tensor cores.
    monkeypatch.setattr(api, "autocast_dtype", lambda cfg, device: torch.float16 if cfg.fp16 else None)
    for extra, said in (({"train.bf16": "auto"}, True), ({"train.bf16": "auto", "train.fp16": True}, False), ({"train.bf16": "off"}, False)):
        lines = []
        with pytest.raises(Reached):
            taskembed.train(None, {**tiny_overrides, "data.source": data, "train.device": "cuda", **extra}, progress=False,
                            echo=lines.append)
        note = ("note: this GPU has no bf16 units, so training runs in float32; overrides={'train.fp16': True} trains in float16 on its "
                "tensor cores")  # as train() in Python takes it; the command line's --train.fp16 true is errors.setting's other case
        assert any(line.startswith(note) for line in lines) == said, extra


def test_more_processes_than_gpus_and_a_named_gpu_under_torchrun_are_one_line_errors(monkeypatch, tiny_model_dir, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("LOCAL_RANK", "2")
    with pytest.raises(UserError, match=r"^train.device auto: this is process 2 of those torchrun started on this machine, but torch "
                                        r"sees 2 GPU\(s\); start one process per GPU, or set train.device cpu$"):
        training_device("auto")
    with pytest.raises(UserError, match=r"^device 'cuda:3': torch here has no such CUDA GPU \(2 found\); use cpu or cuda:0 to cuda:1$"):
        pick_device("cuda:3")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    texts = tmp_path / "t.txt"
    texts.write_text("one text\nanother\n")
    with pytest.raises(UserError, match=r"^device cuda:1 names one GPU, but torchrun started 2 processes, each on its own GPU"):
        embed_file(tiny_model_dir, texts, tmp_path / "v.npy", progress=False, device="cuda:1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match=r"^device 'cuda': torch here has no such CUDA GPU \(0 found\); use cpu$"):
        embed_file(tiny_model_dir, texts, tmp_path / "v.npy", progress=False, device="cuda")
    assert not (tmp_path / "v.npy").exists()


def test_emulated_bf16_is_not_native(monkeypatch):
    """torch counts a T4's emulated bf16 as supported; "auto" must not pick it there, and must on an A100."""
    monkeypatch.setattr(torch.cuda, "device", lambda _device: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)  # a T4
    assert not native_bf16(torch.device("cuda", 0))
    assert not loop.use_bf16("auto", torch.device("cuda", 0)) and loop.use_bf16("on", torch.device("cuda", 0))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)  # an A100
    assert native_bf16(torch.device("cuda", 0))
