"""`taskembed sweep`: a grid trained over seeds, ranked on validation, written as JSON and Markdown, continued after a stop."""

from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path

import pytest

from taskembed import api
from taskembed.cli import main
from taskembed.errors import UserError
from taskembed.loop import TrainingInterrupted
from taskembed.sweep import as_arg, parse_grid, sweep
from tests.conftest import make_rows
from tests.test_resume import interrupt_after, same_weights


pytestmark = pytest.mark.usefixtures("keep_threads")  # tests/conftest.py


@pytest.fixture
def base(tiny_overrides, write_csv, tmp_path):
    return {**tiny_overrides, "data.source": str(write_csv(make_rows(96, seed=6))), "data.validation_fraction": 0.25,
            "data.test_fraction": 0.2, "train.epochs": 1, "train.num_threads": 1, "output.dir": str(tmp_path / "sweep"),
            "output.embedding_report": False, "output.baselines": False}


def test_every_setting_trains_on_every_seed_and_is_ranked_by_mean_validation(base, tmp_path, monkeypatch):
    grid = {"train.lr": [1e-5, 3e-3], "train.head_lr": [3e-3]}
    real = api.train

    def noted(*a, **k):  # a note of the data, which every trial reads: said once, not once a trial
        k["echo"]("note: 3 of the 24 validation examples are also in the training data")
        out = real(*a, **k)
        k["echo"]("note: the model scores no better than always answering the most common class")  # a trial's own
        return out

    monkeypatch.setattr(api, "train", noted)
    said: list[str] = []
    result = sweep(None, base, grid=grid, seeds=[0, 1], keep="all", echo=said.append)
    assert said.count("  note: 3 of the 24 validation examples are also in the training data") == 1
    own = [m for m in said if m.endswith(": note: the model scores no better than always answering the most common class")]
    assert [m.split(":")[0].strip() for m in own] == [t["folder"] for t in result["trials"]]  # each trial's, named
    root = tmp_path / "sweep"
    assert len(result["trials"]) == 4 and result["kept"] == sorted(t["folder"] for t in result["trials"])
    for row in result["ranking"]:
        # The mean is over the trials' own validation scores, as their folders recorded them.
        scores = [json.loads((root / t["folder"] / "metrics.json").read_text())["validation"]["accuracy"]
                  for t in result["trials"] if t["setting"] == row["setting"]]
        assert len(scores) == 2 and row["validation"][0] == pytest.approx(statistics.fmean(scores))
        training = [json.loads((root / t["folder"] / "training_config.json").read_text())["train"] for t in result["trials"]
                    if t["setting"] == row["setting"]]
        assert sorted(c["seed"] for c in training) == [0, 1] and {c["lr"] for c in training} == {row["setting"]["train.lr"]}
    means = [row["validation"][0] for row in result["ranking"]]
    assert means == sorted(means, reverse=True)
    table = (root / "sweep.md").read_text()
    assert "| train.lr | train.head_lr | validation accuracy | test accuracy | train s |" in table
    assert json.loads((root / "sweep.json").read_text())["ranking"][0]["setting"] == result["ranking"][0]["setting"]


def test_loss_ranks_lowest_first_and_keep_best_keeps_one_folder(base, tmp_path):
    result = sweep(None, {**base, "train.metric": "loss"}, grid={"train.lr": [1e-5, 3e-3]}, seeds=[0], echo=lambda _m: None)
    losses = [row["validation"][0] for row in result["ranking"]]
    assert losses == sorted(losses) and losses[0] < losses[1]
    folders = sorted(p.name for p in (tmp_path / "sweep").iterdir() if p.is_dir())
    assert folders == [result["ranking"][0]["best_trial"]] == result["kept"]
    assert f"| {losses[0]:.4f} |" in (tmp_path / "sweep" / "sweep.md").read_text()  # to 4 places; one seed shows no spread
    # Read back after --keep none, no folder is there to keep: none is claimed.
    shutil.rmtree(tmp_path / "sweep" / folders[0])
    again = sweep(None, {**base, "train.metric": "loss"}, grid={"train.lr": [1e-5, 3e-3]}, seeds=[0], echo=lambda _m: None)
    assert again["kept"] == []


def test_model_folders_of_an_earlier_sweep_that_this_one_does_not_rank_are_said(base, tmp_path):
    old = tmp_path / "sweep" / "lr=0.0003-seed0"  # an earlier sweep's kept trial, of a value this grid lacks
    old.mkdir(parents=True)
    (old / "training_config.json").write_text("{}", encoding="utf-8")
    said: list[str] = []
    result = sweep(None, base, grid={"train.lr": [1e-3]}, seeds=[0], keep="all", echo=said.append)
    assert said[-1] == (f"note: {tmp_path / 'sweep'} also holds lr=0.0003-seed0, trained by an earlier sweep with other values; this "
                        "sweep's report does not rank them (move them away to keep the folder to this sweep)")
    assert old.is_dir() and [t["folder"] for t in result["trials"]] == ["lr=0.001-seed0"]  # left where it is
    said.clear()
    shutil.rmtree(old)
    sweep(None, base, grid={"train.lr": [1e-3]}, seeds=[0], keep="all", echo=said.append)  # read back: this sweep's own folder only
    assert not any("earlier sweep" in m for m in said)


def test_values_that_only_a_folder_name_confuses_get_folders_of_their_own(base, tiny_model_dir, tmp_path):
    (tmp_path / "m").mkdir()
    shutil.copytree(tiny_model_dir, tmp_path / "m" / "a")
    shutil.copytree(tiny_model_dir, tmp_path / "m_a")
    result = sweep(None, base, grid={"model.name": [str(tmp_path / "m" / "a"), str(tmp_path / "m_a")]}, seeds=[0], keep="all",
                   echo=lambda _m: None)
    folders = [t["folder"] for t in result["trials"]]
    assert len(set(folders)) == 2 and all((tmp_path / "sweep" / f / "model.safetensors").is_file() for f in folders)
    recorded = {json.loads((tmp_path / "sweep" / f / "training_config.json").read_text())["model"]["name"] for f in folders}
    assert recorded == {str(tmp_path / "m" / "a"), str(tmp_path / "m_a")}


def test_a_checkpoint_of_other_settings_in_a_trial_s_place_is_trained_afresh(base, monkeypatch):
    # Stopped in its first trial, then run with another override: the old checkpoint cannot resume, and the sweep
    # (which wrote it) starts the trial afresh instead of refusing with advice it cannot take.
    with monkeypatch.context() as m:
        interrupt_after(m, 1)
        with pytest.raises(TrainingInterrupted):
            sweep(None, {**base, "train.checkpoint_every": 2}, grid={"train.lr": [1e-3]}, seeds=[0], echo=lambda _m: None)
    said: list[str] = []
    result = sweep(None, {**base, "train.checkpoint_every": 2, "train.label_smoothing": 0.1}, grid={"train.lr": [1e-3]}, seeds=[0],
                   echo=said.append)
    assert any("has a checkpoint of other settings" in m and "training it afresh" in m for m in said)
    assert result["trials"][0]["config"]["train"]["label_smoothing"] == 0.1 and result["trials"][0]["validation"] is not None


def test_a_rerun_reads_finished_trials_back_instead_of_training_them(base, monkeypatch):
    # The grid as the command line gives it (1e-4 reads as text in YAML, `lr` is short for train.lr): recorded as the config reads it.
    grid = parse_grid(["lr=1e-4,1e-3"])
    first = sweep(None, base, grid=grid, seeds=[0], keep="none", echo=lambda _m: None)
    assert {json.dumps(t["setting"]) for t in first["trials"]} == {'{"train.lr": 0.0001}', '{"train.lr": 0.001}'}
    monkeypatch.setattr(api, "train", lambda *a, **k: pytest.fail("a finished trial was trained again"))
    said: list[str] = []
    again = sweep(None, base, grid=grid, seeds=[0], keep="none", echo=said.append)
    assert again["ranking"] == first["ranking"] and sum("done before, read back" in m for m in said) == 2


def test_a_rerun_on_edited_data_trains_again(base, monkeypatch):
    # The same command after the data file changed (here every label flipped): the records name the same config, but
    # their scores are of the old data, and reading them back reported the old ranking and kept the old models.
    grid = {"train.lr": [1e-3]}
    sweep(None, base, grid=grid, seeds=[0], keep="none", echo=lambda _m: None)
    import pandas as pd

    frame = pd.read_csv(base["data.source"])
    assert set(frame["label"]) == {"pos", "neg"}
    frame["label"] = frame["label"].map({"pos": "neg", "neg": "pos"})
    frame.to_csv(base["data.source"], index=False)
    trained = []
    real = api.train
    monkeypatch.setattr(api, "train", lambda *a, **k: trained.append(1) or real(*a, **k))
    said: list[str] = []
    sweep(None, base, grid=grid, seeds=[0], keep="none", echo=said.append)
    assert trained == [1] and not any("read back" in m for m in said)
    assert any("was trained on other data (the files changed since); training it again" in m for m in said), said


def test_a_stopped_sweep_continues_and_ends_where_an_unstopped_one_does(base, tmp_path, monkeypatch, capsys):
    opts = [f"--{k}={v}" for k, v in base.items() if k != "output.dir"] + ["--train.checkpoint_every=2"]
    args = ["sweep", "--grid", "train.lr=1e-4,1e-3", "--seeds", "0", "--keep", "all", "--no-progress", *opts]
    assert main(args + [f"--output.dir={tmp_path / 'whole'}"]) == 0
    out = capsys.readouterr().out
    # The model goes beside the sweep's folder (without a folder, train would use the config's default one).
    assert out.splitlines()[-2].startswith("train it: ") and out.splitlines()[-2].endswith(f"--output.dir={tmp_path / 'whole'}-best")
    # Ctrl-C in the second trial, right after its first checkpoint; then the same command again.
    real, calls = api.train, {"n": 0}
    with monkeypatch.context() as m:
        def second_stops(*a, **k):
            calls["n"] += 1
            if calls["n"] == 2:
                interrupt_after(m, 1)
            return real(*a, **k)

        m.setattr(api, "train", second_stops)
        code = main(args + [f"--output.dir={tmp_path / 'sweep'}"])
    err = capsys.readouterr().err
    assert code == 130 and "sweep stopped" in err and "continue with" in err and "--grid=train.lr=1e-4,1e-3" in err
    assert main(args + [f"--output.dir={tmp_path / 'sweep'}"]) == 0
    out = capsys.readouterr().out
    assert "lr=0.0001-seed0: done before, read back" in out, out
    whole = json.loads((tmp_path / "whole" / "sweep.json").read_text())
    again = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    timeless = [[{k: v for k, v in row.items() if k != "train_seconds"} for row in r["ranking"]] for r in (whole, again)]
    assert timeless[0] == timeless[1]
    for trial in whole["trials"]:
        assert same_weights(tmp_path / "whole" / trial["folder"], tmp_path / "sweep" / trial["folder"])


def test_mistakes_are_refused_before_any_training(base, write_csv, monkeypatch):
    monkeypatch.setattr(api, "train", lambda *a, **k: pytest.fail("trained despite a mistake"))
    with pytest.raises(UserError, match="^--grid: 1 problem: train.lr must be > 0"):  # the grid's value, not "the Config given"
        sweep(None, base, grid={"train.lr": [1e-4, -1.0]}, seeds=[0])
    with pytest.raises(UserError, match="--grid train.lrr: unknown key 'train.lrr'; did you mean 'train.lr'\\?"):
        sweep(None, base, grid={"train.lrr": [1e-4]})
    with pytest.raises(UserError, match="the sweep sets it for each trial"):
        sweep(None, base, grid={"train.seed": [1, 2]})
    with pytest.raises(UserError, match="a sweep chooses on validation, and this data has none"):
        sweep(None, {**base, "data.validation_fraction": 0.0}, grid={"train.lr": [1e-4]})
    # Settings compared on different validation examples, one setting twice, a model folder as the sweep's folder.
    with pytest.raises(UserError, match="--grid data.max_train_samples: it changes which examples validate.*; max_train_samples and "
                                        "split_seed too where validation is the data's own"):
        sweep(None, base, grid={"data.max_train_samples": [None, 10]})
    with pytest.raises(UserError, match="gives the setting train.lr=0.001 twice"):
        sweep(None, base, grid={"train.lr": [0.001, "1e-3"]})
    model = Path(base["output.dir"]).parent / "model"
    model.mkdir()
    (model / "training_config.json").write_text("{}")
    with pytest.raises(UserError, match="is a trained model's folder; a sweep writes a folder of trials"):
        sweep(None, {**base, "output.dir": str(model)}, grid={"train.lr": [1e-4]})
    assert [as_arg(v) for v in (None, True, 0.001, {"neg": 2.0})] == ["null", "true", "0.001", '{"neg": 2.0}']
    with pytest.raises(UserError, match="write KEY=VALUE,VALUE"):
        parse_grid(["train.lr"])
    with pytest.raises(UserError, match="names train.lr twice"):
        parse_grid(["train.lr=1e-4", "train.lr=2e-4"])
    assert parse_grid(["train.lr=0.0001,3e-4", "--train.epochs=2,3"]) == {"train.lr": [0.0001, "3e-4"], "train.epochs": [2, 3]}


def test_a_tie_at_the_top_and_a_single_seed_are_said_and_tiny_times_are_not_zero():
    from taskembed.sweep import ranking_notes, report_markdown

    def row(lr, acc, seconds=0.4):
        return {"setting": {"train.lr": lr}, "seeds": [0], "validation": (acc, 0.0), "train_seconds": seconds, "best_trial": f"lr{lr}"}

    result = {"metric": "accuracy", "grid": {"train.lr": [5e-5, 1.5e-4, 3e-4]}, "seeds": [0],
              "ranking": [row(5e-5, 1 / 3), row(1.5e-4, 1 / 3), row(3e-4, 0.25, 12.3)]}
    notes = ranking_notes(result)
    assert notes[0].startswith("2 settings tie at the top on mean validation accuracy; the first in grid order is named best")
    assert notes[1].startswith("one seed: this ranks single runs") and len(notes) == 2
    table = report_markdown(result).splitlines()
    assert [line.rsplit("|", 2)[-2].strip() for line in table[4:7]] == ["0.4", "0.4", "12"]
    assert table[-2:] == [f"Note: {notes[0]}.", f"Note: {notes[1]}."]  # in sweep.md too, not only on the terminal
    # Three seeds and a clear winner: nothing to say.
    result = {**result, "seeds": [0, 1, 2], "ranking": [row(5e-5, 0.8), row(1.5e-4, 0.7)]}
    assert ranking_notes(result) == []



def test_a_grid_over_few_shot_draws_is_taken_where_validation_is_the_datas_own(base, write_csv, monkeypatch):
    # With its own validation split (data.validation, or a built-in dataset's), data.split_seed only draws other training
    # examples: several few-shot draws, scored on the same validation texts.
    class Started(Exception):
        pass

    def started(*_a, **_k):
        raise Started

    monkeypatch.setattr(api, "train", started)
    own = {**base, "data.validation": str(write_csv(make_rows(20, seed=8), "val.csv")), "data.max_train_per_label": 4}
    with pytest.raises(Started):
        sweep(None, own, grid={"data.split_seed": [0, 1]}, seeds=[0])
    with pytest.raises(UserError, match="--grid data.split_seed: it changes which examples validate"):
        sweep(None, base, grid={"data.split_seed": [0, 1]}, seeds=[0])
