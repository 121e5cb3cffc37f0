"""The learning-rate range test on the tiny model: the sweep, the stopping rule, the suggestion, the files, the CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch

import taskembed
from taskembed import lrfind
from taskembed.cli import main
from tests.conftest import make_rows


@pytest.fixture
def setup(write_csv, tiny_overrides):
    # A decaying plan, so the sweep's per-group ratios are visible (the shipped default is a flat encoder rate).
    return {**tiny_overrides, "data.source": str(write_csv(make_rows(120))), "train.layer_decay": 0.8}


def test_sweep_scales_every_group_together_and_writes_two_files(setup, tmp_path, monkeypatch):
    seen: list[dict[str, float]] = []

    class Recording(torch.optim.AdamW):
        def step(self, *args, **kwargs):
            seen.append({g["name"]: g["lr"] for g in self.param_groups})
            return super().step(*args, **kwargs)

    monkeypatch.setattr(lrfind.torch.optim, "AdamW", Recording)
    result = taskembed.lr_find(None, setup, steps=25, start=1e-5, end=10.0, progress=False, echo=lambda _m: None)

    lrs = [p["lr"] for p in result.curve]
    assert len(lrs) >= 3 and all(b > a for a, b in zip(lrs, lrs[1:]))
    assert lrs[0] == pytest.approx(1e-5)
    # The top layer (layer.2 of 2) runs at the swept rate, the head at head_lr / lr = 3x it, layer.1 at the decay below it.
    decay = taskembed.load_config(None, setup).train.layer_decay
    for step, rates in enumerate(seen):
        assert rates["layer.2"] == pytest.approx(lrs[step])
        assert rates["head"] == pytest.approx(3 * lrs[step])
        assert rates["layer.1"] == pytest.approx(decay * lrs[step])
        assert rates["layer.1/no_decay"] == rates["layer.1"]
    s = result.suggestion
    assert lrs[0] <= s["lr"] <= lrs[-1] and math.isfinite(s["lr"])
    assert result.train_overrides == {"train.lr": s["lr"], "train.head_lr": pytest.approx(3 * s["lr"], rel=0.05)}

    # Default folder: beside output.dir; nothing else written (no model folder, no checkpoints).
    out = tmp_path / "out.lr_find"
    assert result.folder == out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.csv", "out.lr_find"]
    assert sorted(p.name for p in out.iterdir()) == ["lr_find.json", "lr_find.png"]
    report = json.loads((out / "lr_find.json").read_text())
    assert report["curve"] == result.curve and report["suggestion"]["lr"] == s["lr"]
    assert report["ratios"]["head"] == pytest.approx(3.0) and report["stopped"] == result.stopped
    from PIL import Image

    with Image.open(out / "lr_find.png") as img:
        assert img.format == "PNG" and img.size[0] > 300


def test_a_huge_end_stops_early_with_a_finite_suggestion(setup, tmp_path):
    result = taskembed.lr_find(None, setup, steps=60, start=1e-6, end=1e6, out=tmp_path / "lf", progress=False, echo=lambda _m: None)
    assert result.stopped in ("diverged", "not finite")
    assert 3 <= len(result.curve) < 60
    smoothed = [p["smoothed"] for p in result.curve]
    if result.stopped == "diverged":
        assert smoothed[-1] > lrfind.DIVERGE_FACTOR * min(smoothed[:-1])
    assert all(math.isfinite(v) for v in smoothed)
    s = result.suggestion
    assert math.isfinite(s["lr"]) and result.curve[0]["lr"] <= s["lr"] <= result.curve[-1]["lr"]
    assert s["lr"] < 1.0  # well below where it blew up


def _curve(lrs, losses):
    return [{"step": i + 1, "lr": lr, "loss": v, "smoothed": v} for i, (lr, v) in enumerate(zip(lrs, losses))]


def test_suggestion_rules_on_a_known_curve():
    lrs = [10 ** (-6 + 6 * i / 60) for i in range(61)]  # 1e-6 .. 1, ten points a decade
    # flat until 1e-4, falling fastest around 1e-3, lowest at 1e-2, then rising
    losses = [0.7 - 0.5 / (1 + math.exp(-4 * (math.log10(lr) + 3))) + (3 * (math.log10(lr) + 2) ** 2 if lr > 1e-2 else 0) for lr in lrs]
    s = lrfind.suggest(_curve(lrs, losses))
    assert s["minimum"] == pytest.approx(1e-2, rel=0.01)
    assert s["lr"] == pytest.approx(1e-3, rel=0.01) and s["rule"] == "minimum / 10"
    assert s["steepest"] == pytest.approx(1e-3, rel=0.3)
    assert not s["still_falling"]
    # The lowest loss in the first decade: minimum / 10 would lie outside the range, so the steepest point is used.
    s = lrfind.suggest(_curve(lrs[:8], [0.7 - 0.01 * i for i in range(5)] + [0.4, 0.5, 2.0]))
    assert "steepest" in s["rule"] and s["lr"] == pytest.approx(lrs[4], rel=0.01)
    with pytest.raises(taskembed.UserError, match="lower the start rate"):
        lrfind.suggest(_curve(lrs[:2], [0.7, 9.0]))


def test_cli_prints_the_suggestion_and_the_train_command(setup, tmp_path, capsys):
    # 30 steps from 1e-4: a curve with its minimum well inside the range on the tiny model (measured over seeds 0-4;
    # 20 steps from 1e-5 put the noisy flat start lowest on some seeds).
    args = ["lr-find", "--steps", "30", "--start", "1e-4", "--end", "10", "--out", str(tmp_path / "lf"), "--no-progress",
            "--train.trim_top_layer", "false"]
    setup = {**setup, "output.dir": str(tmp_path / "runs" / "own")}
    (tmp_path / "runs" / "own").mkdir(parents=True)  # a run is there already, which train would refuse to replace
    (tmp_path / "runs" / "own" / "training_config.json").write_text("{}")
    for key, value in setup.items():
        args += [f"--{key}", str(value)]
    assert main(args) == 0
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "lf" / "lr_find.json").read_text())
    lr, head = report["train_overrides"]["train.lr"], report["train_overrides"]["train.head_lr"]
    assert f"suggested train.lr {lr:.2g}" in out and f"<- nearest the suggested {lr:.2g}" in out
    assert f"plot:     {tmp_path / 'lf' / 'lr_find.png'}" in out
    train_line = next(line for line in out.splitlines() if line.startswith("train:"))
    # The user's other overrides are kept, the rates replaced by the suggestion.
    assert f"--model.name {setup['model.name']}" in train_line and "--train.epochs 2" in train_line
    # The printed command runs as it is: the config's folder exists, so the model goes to a folder named for the rate.
    assert train_line.endswith(f"--output.dir={tmp_path / 'runs' / 'own'}-lr{lr:.2g} --train.lr {lr:.2g} --train.head_lr {head:.2g}")
    assert train_line.count("--output.dir") == 1
    assert train_line.count("--train.lr") == 1 and train_line.count("--train.head_lr") == 1


def test_a_sparse_curve_is_said_to_place_the_minimum_coarsely(setup, tmp_path, capsys):
    # 5 points over 7 decades: a walk-through's suggestion was 12x the one 30 steps gave, said as confidently.
    said = {}
    for name, range_ in (("sparse", ["--steps", "5"]), ("dense", ["--steps", "12", "--start", "1e-4", "--end", "1e-2"])):
        args = ["lr-find", *range_, "--out", str(tmp_path / name), "--no-progress"]
        for key, value in setup.items():
            args += [f"--{key}", str(value)]
        assert main(args) == 0
        said[name] = capsys.readouterr().out
    assert "note: 5 points over 7 decades of rates place the minimum coarsely; rerun with --steps 70 or more" in said["sparse"]
    assert "coarsely" not in said["dense"]  # 12 points over 2 decades


@pytest.mark.parametrize(
    "extra, piece",
    [
        (["no/such/config.yaml"], "config file not found"),
        (["--steps", "2"], "steps must be an integer >= 5"),
        (["--start", "1", "--end", "0.1"], "must be below end"),
        (["--train.lr", "-1"], "train.lr must be > 0"),
    ],
)
def test_bad_input_exits_2_with_one_line(extra, piece, setup, tmp_path, capsys):
    args = ["lr-find", *extra, "--out", str(tmp_path / "lf"), "--no-progress", "--data.source", setup["data.source"],
            "--model.name", setup["model.name"]]
    code = main(args)
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    assert piece in err
    assert not (tmp_path / "lf").exists()


def test_refuses_a_folder_holding_other_files(setup, tmp_path):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("keep me")
    with pytest.raises(taskembed.UserError, match="holds other files"):
        taskembed.lr_find(None, setup, steps=5, out=busy, progress=False, echo=lambda _m: None)
    assert (busy / "notes.txt").read_text() == "keep me"


def test_an_option_the_sweep_does_not_reproduce_is_refused(setup, monkeypatch):
    # Stands in for a training option added later: taken out of HANDLED, a non-default value must stop the sweep.
    monkeypatch.setitem(lrfind.HANDLED, "train", lrfind.HANDLED["train"] - {"label_smoothing"})
    with pytest.raises(taskembed.UserError, match="does not reproduce train.label_smoothing"):
        taskembed.lr_find(None, {**setup, "train.label_smoothing": 0.1}, steps=5, progress=False, echo=lambda _m: None)
    lrfind._check_handled(taskembed.load_config(None, setup))  # at its default the option passes


def test_options_that_do_nothing_in_the_config_are_not_refused(setup):
    # The window settings without window mode, a multi-label setting on single-label data: no effect on any curve.
    inert = {"data.window_aggregate": "max", "data.window_stride": 8, "data.threshold_min_positives": 3}
    lrfind._check_handled(taskembed.load_config(None, {**setup, **inert}))
    with pytest.raises(taskembed.UserError, match="does not reproduce data.long_texts, data.window_stride, data.window_aggregate"):
        lrfind._check_handled(taskembed.load_config(None, {**setup, **inert, "data.long_texts": "window"}))


def test_the_sweep_sees_the_batches_training_sees_with_the_balanced_sampler(setup, tmp_path, monkeypatch):
    from taskembed import data, loop

    seen: dict[str, list[list[int]]] = {"lrfind": [], "train": []}
    for name, module in (("lrfind", lrfind), ("train", loop)):
        def recording(enc, idx, *args, _name=name, **kwargs):
            seen[_name].append(list(idx))
            return data.collate(enc, idx, *args, **kwargs)
        monkeypatch.setattr(module, "collate", recording)
    opts = {**setup, "train.sampler": "balanced", "train.epochs": 1}
    try:
        taskembed.lr_find(None, opts, steps=25, start=1e-5, end=10.0, progress=False, echo=lambda _m: None)
    except taskembed.UserError:
        pass  # on this tiny model the curve may give no suggestion; the batches it saw are what is checked
    taskembed.train(None, opts, progress=False, echo=lambda _m: None)
    k = min(len(seen["lrfind"]), len(seen["train"]))  # the sweep may stop early; training here runs one epoch
    assert k >= 5 and seen["lrfind"][:k] == seen["train"][:k]
    balanced = data.epoch_batches([10] * 8, 4, 0, 0, balanced=[0, 0, 0, 0, 0, 0, 1, 1])
    assert sorted(i for b in balanced for i in b) != list(range(8))  # drawn with replacement: not every example once


def test_a_curve_that_only_rises_says_what_helps():
    # A loss that never falls: with a short sweep the smoothing has not settled, and more steps (not a lower start) help.
    def rising(n):
        return [{"lr": 1e-7 * 10 ** (i * 7 / n), "loss": 1.0 + i, "smoothed": 1.0 + i} for i in range(n)]

    with pytest.raises(taskembed.UserError, match=r"of 20 steps; give more steps \(--steps 100 or more\)"):
        lrfind.suggest(rising(20))
    with pytest.raises(taskembed.UserError, match=r"of 150 steps; lower the start rate \(--start\)"):
        lrfind.suggest(rising(150))


def test_data_given_in_python_sweeps_as_the_same_rows_in_a_file_do(setup, tmp_path):
    import pandas as pd

    frame = pd.read_csv(setup["data.source"])
    run = dict(steps=12, start=1e-5, end=1.0, progress=False, echo=None)
    from_file = taskembed.lr_find(None, setup, out=tmp_path / "file", **run)
    from_frame = taskembed.lr_find(None, {k: v for k, v in setup.items() if k != "data.source"}, data=frame, out=tmp_path / "frame", **run)
    assert [p["loss"] for p in from_frame.curve] == [p["loss"] for p in from_file.curve]
