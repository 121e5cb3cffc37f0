"""The same `taskembed train` command under torchrun with 2 CPU processes (gloo) trains correctly."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import make_rows


@pytest.mark.slow
def test_torchrun_two_processes_on_cpu(tiny_model_dir, write_csv, tmp_path):
    train = write_csv(make_rows(192, seed=11), "train.csv")
    out = tmp_path / "ddp"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "taskembed.cli", "train", "--no-progress",
        "--data.source", str(train), "--data.max_length", "32", "--model.name", str(tiny_model_dir),
        "--train.epochs", "8", "--train.batch_size", "8", "--train.lr", "3e-3", "--train.head_lr", "5e-3",
        "--train.bf16", "off", "--output.dir", str(out), "--output.baselines", "false",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.getcwd()}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = json.loads((out / "run.json").read_text())
    assert run["world_size"] == 2
    # Each optimizer step consumed one batch per process: 8 epochs over 173 training rows.
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    steps = max(e["step"] for e in log)
    assert steps == 8 * ((173 + 7) // 8 // 2)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["validation"]["accuracy"] >= 0.9
    # Only rank 0 printed the results and wrote the folder; exactly one folder, no temporary leftovers.
    assert proc.stdout.count("saved to") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp", "train.csv"]


LATE_SIGNAL = '''
import os, signal, sys
from taskembed import checkpoint
from taskembed.cli import main

real = checkpoint.capture_rng


def capture(world, device):
    # Every rank takes part in writing a checkpoint; rank 1 alone gets a SIGINT while the last one is written,
    # after the loop last asked the ranks whether to stop.
    if os.environ["RANK"] == "1":
        os.kill(os.getpid(), signal.SIGINT)
    return real(world, device)


checkpoint.capture_rng = capture
sys.exit(main(sys.argv[1:]))
'''


@pytest.mark.slow
def test_a_late_signal_on_one_rank_stops_every_rank(tiny_model_dir, write_csv, tmp_path):
    """A signal on one rank during the last checkpoint stops all ranks with the resume line; none goes on to save
    alone (which would leave it waiting for the stopped rank, and a folder written by half the run)."""
    train = write_csv(make_rows(96, seed=12), "train.csv")
    out = tmp_path / "ddp"
    launch = tmp_path / "launch.py"
    launch.write_text(LATE_SIGNAL)
    args = ["train", "--no-progress", "--data.source", str(train), "--data.max_length", "32", "--model.name", str(tiny_model_dir),
            "--train.epochs", "1", "--train.batch_size", "8", "--train.bf16", "off", "--train.checkpoint_every", "0",
            "--output.dir", str(out), "--output.baselines", "false", "--output.embedding_report", "false"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.getcwd()}
    proc = subprocess.run([*torchrun, str(launch), *args], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode != 0 and "interrupted by SIGINT after step 5; checkpoint saved to" in proc.stderr, proc.stderr[-2000:]
    assert not out.exists()
    # the checkpoint is the complete run: resumed (without the signal), it goes straight to evaluating and saving
    proc = subprocess.run([*torchrun, "-m", "taskembed.cli", *args, "--resume"], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "(step 5 of 5, training complete)" in proc.stdout and (out / "model.safetensors").is_file()
