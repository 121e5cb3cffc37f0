"""The demo's About tab shows the error analysis training wrote into metrics.json: confused pairs and top-loss examples."""

from __future__ import annotations

import json
import shutil

import pytest

import taskembed
from bench.fault_injection import write_csv
from tests.conftest import make_rows
from tests.test_demo import demo, free_port

gradio_client = pytest.importorskip("gradio_client")

FLIPPED = 8  # test rows whose label is swapped: a model that learned the task gets them wrong, so there are errors to show


@pytest.fixture(scope="module")
def folders(tmp_path_factory, tiny_model_dir):
    """A trained tiny classifier whose test split has mistakes, and a copy whose metrics.json has no error analysis."""
    root = tmp_path_factory.mktemp("demo-about")
    test_rows = make_rows(60, seed=2)
    for r in test_rows[:FLIPPED]:
        r["label"] = "pos" if r["label"] == "neg" else "neg"
    for name, rows in (("train.csv", make_rows(240, seed=1)), ("test.csv", test_rows)):
        write_csv(root / name, rows)
    overrides = {
        "data.source": str(root / "train.csv"), "data.test": str(root / "test.csv"), "data.max_length": 32,
        "model.name": str(tiny_model_dir), "output.dir": str(root / "tiny-errors"), "train.epochs": 8, "train.batch_size": 16,
        "train.lr": 3e-3, "train.head_lr": 5e-3, "train.bf16": "off", "output.embedding_report": False, "output.baselines": False,
    }
    folder = taskembed.train(None, overrides, progress=False, echo=lambda _m: None).output_dir
    bare = root / "tiny-no-errors"
    shutil.copytree(folder, bare)
    metrics = json.loads((bare / "metrics.json").read_text())
    metrics["errors"] = None  # as written by a run with output.error_analysis false
    (bare / "metrics.json").write_text(json.dumps(metrics))
    return folder, bare


def _component(app, elem_id: str) -> dict:
    return next(c for c in app.config["components"] if (c.get("props") or {}).get("elem_id") == elem_id)


def test_about_tab_renders_confused_pairs_and_top_loss_examples(folders):
    folder, _ = folders
    errors = json.loads((folder / "metrics.json").read_text())["errors"]
    assert errors["split"] == "test" and errors["confused_pairs"] and errors["top_loss"]

    app = demo.build_app([folder])
    pairs = _component(app, "about-confused-pairs")["props"]
    examples = _component(app, "about-top-loss")["props"]
    note = _component(app, "about-errors")["props"]["value"]
    assert pairs["visible"] and examples["visible"]
    assert pairs["value"]["data"] == [[p["true"], p["predicted"], p["count"]] for p in errors["confused_pairs"]]
    assert examples["value"]["data"] == [[e["text"], e["label"], f"{100 * e['p_label']:.2f}", e["predicted"], f"{100 * e['p_predicted']:.2f}"]
                                         for e in errors["top_loss"]]
    assert examples["value"]["headers"] == ["text", "true", "true label (%)", "predicted", "predicted label (%)"]
    # Ranked by loss: the true label's probability rises down the table, whatever the predicted label's does.
    shown = [float(row[2]) for row in examples["value"]["data"]]
    assert shown == sorted(shown)
    assert "test split" in note
    # The model card lists the same rows, each label with its probability.
    card = (folder / "README.md").read_text()
    first = errors["top_loss"][0]
    assert "The mistakes with the highest loss" in card
    assert f"| {first['label']} ({100 * first['p_label']:.0f}%) | {first['predicted']} ({100 * first['p_predicted']:.0f}%) |" in card
    # The flipped rows are the mistakes a model that learned the task makes most confidently.
    flipped = {r["text"] for r in make_rows(60, seed=2)[:FLIPPED]}
    assert {row[0] for row in examples["value"]["data"]} & flipped


def test_switching_models_updates_the_errors_and_hides_empty_tables(folders):
    folder, bare = folders
    errors = json.loads((folder / "metrics.json").read_text())["errors"]
    app = demo.build_app([folder, bare])
    _, url, _ = demo.launch(app, port=free_port(), prevent_thread_lock=True, quiet=True)
    try:
        client = gradio_client.Client(url, verbose=False, download_files=str(app.taskembed_tmp))
        out = client.predict("tiny-errors", api_name="/about")
        note, pairs, examples = out[9:12]  # after the nine outputs the About tab had before (see test_demo.py)
        assert "test split" in note and pairs["visible"] and examples["visible"]
        assert pairs["value"]["data"] == [[p["true"], p["predicted"], p["count"]] for p in errors["confused_pairs"]]
        assert [[row[0], row[1], row[3]] for row in examples["value"]["data"]] == [[e["text"], e["label"], e["predicted"]]
                                                                                  for e in errors["top_loss"]]
        note, pairs, examples = client.predict("tiny-no-errors", api_name="/about")[9:12]
        assert "No error analysis" in note
        assert not pairs["visible"] and not examples["visible"] and pairs["value"]["data"] == examples["value"]["data"] == []
    finally:
        app.close()


def test_a_model_without_mistakes_says_so():
    note, pairs, examples = demo.error_values({"errors": {"split": "validation", "confused_pairs": [], "top_loss": []}})
    assert note == "No mistakes on the validation split." and pairs == examples == []


def test_the_embedding_summary_states_the_k_that_was_used():
    # settings hold the k asked for (10); with few texts per class compare votes with fewer, as the card says.
    report = {"n": 12, "settings": {"k": 10}, "base": {"model": "base", "pooling": "mean", "dim": 32, "knn_accuracy": 0.5, "k": 3},
              "tuned": {"model": "tuned", "pooling": "head", "dim": 32, "knn_accuracy": 0.75, "k": 3}}
    text = demo.embedding_markdown(report)
    assert "k-NN accuracy (k=3)" in text and "k=10" not in text


def test_the_summary_gives_the_rates_trained_with(folders, tmp_path):
    # Under train.lr_scaling the summary gave the configured rates while the plan table beside it gave the trained ones.
    folder, _ = folders
    line = next(x for x in demo.summary_markdown(demo.load_models([folder])[0]).splitlines() if "**rates**" in x)
    assert line.startswith("- **rates**: top 0.003, layer decay") and "head 0.005;" in line and "scaled" not in line
    scaled = tmp_path / "scaled"
    shutil.copytree(folder, scaled)
    plan = json.loads((scaled / "lr_plan.json").read_text())
    for group in plan["groups"]:  # what linear scaling from batch 16 to 32 gives
        group["lr"] *= 2
    (scaled / "lr_plan.json").write_text(json.dumps(plan))
    config = json.loads((scaled / "training_config.json").read_text())
    config["train"]["lr_scaling"] = "linear"
    (scaled / "training_config.json").write_text(json.dumps(config))
    line = next(x for x in demo.summary_markdown(demo.load_models([scaled])[0]).splitlines() if "**rates**" in x)
    assert "top 0.006" in line and "head 0.01 (train.lr 0.003 and head_lr 0.005 scaled by train.lr_scaling linear)" in line, line
