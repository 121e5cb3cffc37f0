"""Choosing the device: train.device, --device on the commands that load a model, and what "auto" picks.

This machine has no GPU (nor does CI), so the tests that ask what happens on one make torch say it has one (or has
none) and check the decision, not a GPU run."""

from __future__ import annotations

import contextlib
import json
import os

import pytest
import torch

import taskembed
from taskembed import loop
from taskembed.cli import main
from taskembed.config import load_config
from taskembed.errors import UserError
from taskembed.loop import distributed, training_device
from taskembed.modeling import native_bf16
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


def test_a_cpu_run_trains_on_the_cpu_and_says_so(tiny_overrides, write_csv):
    lines = []
    result = taskembed.train(None, {**tiny_overrides, "data.source": str(write_csv(make_rows(60))), "train.epochs": 1,
                                    "train.device": "cpu"}, progress=False, echo=lines.append)
    assert any(line.startswith(f"{taskembed.api.TRAINING_STARTS}cpu") for line in lines), lines
    saved = json.loads((result.output_dir / "training_config.json").read_text())
    assert saved["train"]["device"] == "cpu"


def test_emulated_bf16_is_not_native(monkeypatch):
    """torch counts a T4's emulated bf16 as supported; "auto" must not pick it there, and must on an A100."""
    monkeypatch.setattr(torch.cuda, "device", lambda _device: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)  # a T4
    assert not native_bf16(torch.device("cuda", 0))
    assert not loop.use_bf16("auto", torch.device("cuda", 0)) and loop.use_bf16("on", torch.device("cuda", 0))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)  # an A100
    assert native_bf16(torch.device("cuda", 0))
