"""Multi-label end to end: the three label formats, bad input, thresholds, training, predict, pipeline, the built-in."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import taskembed
from taskembed.cli import main
from taskembed.config import DataConfig, load_config
from taskembed.data import collate, encode_split, label_targets, load_splits
from taskembed.metrics import THRESHOLD_GRID, multi_label_metrics, tune_thresholds
from tests.conftest import NEGATIVE, NEUTRAL, POSITIVE, make_rows

ROOT = Path(__file__).parent.parent

# --- a generated multi-label task -----------------------------------------------------------------

# Each label has its own cue words (words the tiny tokenizer knows). `cue` is how often a positive
# example shows one, `noise` how often a negative one does. For "rare", negatives with the cue
# outnumber positives (0.1 * 0.9 vs 0.9 * 0.12), so even a perfectly calibrated model gives a cued
# text about 0.45 and never reaches 0.5: only a threshold below 0.5 finds that label at all.
TASK = {
    # label: (prevalence, cue words, cue, noise)
    "common": (0.5, POSITIVE[:3], 0.95, 0.02),
    "medium": (0.3, NEGATIVE[:3], 0.85, 0.03),
    "rare": (0.1, POSITIVE[5:8], 0.9, 0.12),
}


def make_multi_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        words = [rng.choice(NEUTRAL) for _ in range(rng.randint(4, 9))]
        labels = []
        for name, (prevalence, cues, cue, noise) in TASK.items():
            positive = rng.random() < prevalence
            if positive:
                labels.append(name)
            if rng.random() < (cue if positive else noise):
                words.insert(rng.randrange(len(words) + 1), rng.choice(cues))
        rows.append({"text": " ".join(words), "label": labels})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# --- the three label formats ---------------------------------------------------------------------

EXPECTED_SETS = [("a", "b"), (), ("c",), ("a",), ("a", "c")]
TEXTS = ["great film", "dull plot", "superb cast", "awful script", "funny scene"]


def test_list_column_from_jsonl_and_parquet(tmp_path):
    rows = [{"text": t, "label": list(s)} for t, s in zip(TEXTS, EXPECTED_SETS)]
    write_jsonl(tmp_path / "d.jsonl", rows)
    pd.DataFrame(rows).to_parquet(tmp_path / "d.parquet")  # a Parquet list column reads back as numpy arrays
    for name in ("d.jsonl", "d.parquet"):
        splits = load_splits(DataConfig(source=str(tmp_path / name), multi_label=True, validation_fraction=0))
        assert splits.multi_label and splits.labels == ["a", "b", "c"]
        assert splits.frames["train"]["label"].tolist() == EXPECTED_SETS
        assert label_targets(splits.frames["train"]["label"], splits.label2id) == [[1, 1, 0], [0, 0, 0], [0, 0, 1], [1, 0, 0], [1, 0, 1]]
        assert splits.summary()["train"] == {"rows": 5, "classes": {"a": 3, "b": 1, "c": 2}, "no_label": 1}


def test_delimited_string_column(write_csv):
    # An empty cell is an example with no label; spaces around the delimiter do not count.
    rows = [{"text": t, "tags": " | ".join(s)} for t, s in zip(TEXTS, EXPECTED_SETS)]
    path = write_csv(rows)
    splits = load_splits(DataConfig(source=str(path), label_column="tags", multi_label=True, label_delimiter="|", validation_fraction=0))
    assert splits.frames["train"]["label"].tolist() == EXPECTED_SETS


def test_zero_one_columns_keep_their_order_and_collate_to_float(write_csv, tiny_model_dir):
    rows = [{"text": t, "c": int("c" in s), "a": int("a" in s), "b": int("b" in s)} for t, s in zip(TEXTS, EXPECTED_SETS)]
    path = write_csv(rows)
    # The command line form `--data.label_columns c,a,b` arrives as a string and becomes a list.
    cfg = load_config(None, {"data.source": str(path), "data.multi_label": True, "data.label_columns": "c, a,b",
                             "data.validation_fraction": 0})
    assert cfg.data.label_columns == ["c", "a", "b"]
    splits = load_splits(cfg.data)
    assert splits.labels == ["c", "a", "b"]
    from transformers import AutoTokenizer

    enc = encode_split(AutoTokenizer.from_pretrained(tiny_model_dir), splits.frames["train"], splits.label2id, 16)
    batch = collate(enc, [0, 1, 4], pad_id=0)
    assert batch["labels"].dtype == torch.float32
    assert batch["labels"].tolist() == [[0, 1, 1], [0, 0, 0], [1, 1, 0]]


def test_carved_validation_keeps_every_label_in_training(tmp_path):
    rows = make_multi_rows(200, seed=5)
    rows.append({"text": "only once", "label": ["single"]})
    splits = load_splits(DataConfig(source=str(write_jsonl(tmp_path / "d.jsonl", rows)), multi_label=True, validation_fraction=0.2))
    assert "single" in splits.labels
    assert 35 <= len(splits.frames["validation"]) <= 45
    assert {x for row in splits.frames["validation"]["label"] for x in row} <= set(splits.labels)


# --- bad input through the real command line ---------------------------------------------------------

# (file name, content, extra options, piece the one-line message must hold)
BAD = [
    ("null.jsonl", '{"text": "a", "label": ["x"]}\n{"text": "b", "label": null}\n', [],
     "row 2: label column 'label' is empty (null); give the example's labels ([] for none)"),
    ("text_label.jsonl", '{"text": "a", "label": ["x"]}\n{"text": "b", "label": "x|y"}\n', [],
     "row 2: label 'x|y' is text, not a list; set data.label_delimiter"),
    ("twice.csv", "text,label\na,x|y\nb,y|y\n", ["--data.label_delimiter", "|"], "row 2: label 'y' appears twice"),
    ("gap.csv", "text,label\na,x||y\nb,y\n", ["--data.label_delimiter", "|"], "row 1: an empty label in 'x||y'"),
    ("nested.jsonl", '{"text": "a", "label": ["x", ["y"]]}\n', [], "row 1: label ['y'] in column 'label' is not a class name"),
    ("flags.csv", "text,x,y\na,1,0\nb,2,1\n", ["--data.label_columns", "x,y"], "row 2: label column 'x' holds '2'; label columns take 0 or 1"),
    ("blank_flag.csv", "text,x,y\na,1,0\nb,,1\n", ["--data.label_columns", "x,y"], "row 2: label column 'x' holds ''"),
    ("missing_col.csv", "text,x,y\na,1,0\n", ["--data.label_columns", "x,z"], "no column 'z' (columns: text, x, y)"),
    ("never.csv", "text,x,y\na,1,0\nb,1,0\n", ["--data.label_columns", "x,y"], "label column 'y' is 0 in every training row"),
]


@pytest.mark.parametrize("name, content, options, piece", BAD, ids=[b[0] for b in BAD])
def test_bad_multi_label_data_is_one_line_through_the_cli(name, content, options, piece, tiny_model_dir, tmp_path, capsys):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    out = tmp_path / "out"
    code, _, err = run_cli(["train", "--data.source", str(path), "--data.multi_label", "true", "--data.validation_fraction", "0",
                            "--model.name", str(tiny_model_dir), "--output.dir", str(out), *options], capsys)
    assert code == 2 and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert str(path) in err and piece in err, err
    assert not out.exists()


def test_label_unseen_in_training_names_the_validation_row(tmp_path, tiny_model_dir, capsys):
    train = write_jsonl(tmp_path / "train.jsonl", [{"text": "a", "label": ["x"]}, {"text": "b", "label": ["y"]}])
    val = write_jsonl(tmp_path / "val.jsonl", [{"text": "c", "label": ["x"]}, {"text": "d", "label": ["y", "z"]}])
    code, _, err = run_cli(["train", "--data.source", str(train), "--data.validation", str(val), "--data.multi_label", "true",
                            "--model.name", str(tiny_model_dir), "--output.dir", str(tmp_path / "out")], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"{val}: row 2: label 'z' never occurs in training" in err


@pytest.mark.parametrize("options, piece", [
    (["--data.label_columns", "x,y"], "data.label_columns is set but data.multi_label is false"),
    (["--data.multi_label", "true", "--train.class_weights", "balanced"], "train.class_weights is not supported for multi-label"),
    (["--data.multi_label", "true", "--train.contrastive_weight", "0.5"], "train.contrastive_weight > 0 is not supported for multi-label"),
    (["--data.multi_label", "true", "--data.label_columns", "x,y", "--data.label_delimiter", "|"], "exclude each other"),
    (["--data.source", "home_intents_multi"], "home_intents_multi is a multi-label dataset (labels joined by '|')"),
])
def test_contradicting_options_are_one_line(options, piece, tmp_path, capsys):
    code, _, err = run_cli(["train", "--output.dir", str(tmp_path / "out"), *options], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and piece in err, err


# --- thresholds ----------------------------------------------------------------------------------


def test_threshold_moves_to_where_the_label_f1_is_best():
    # "low": positives at 0.30-0.40, negatives at most 0.20: every threshold in (0.20, 0.30] separates them,
    # and of those the one closest to 0.5 is 0.30. "clear": any of 0.21..0.80 separates; 0.5 stays.
    # "absent": no positive in validation, so there is nothing to tune and it keeps 0.5 despite scores of 0.6.
    probs = np.array([[0.30, 0.9, 0.6], [0.40, 0.8, 0.1], [0.35, 0.2, 0.6], [0.10, 0.1, 0.2], [0.20, 0.15, 0.3]])
    y = [[1, 1, 0], [1, 1, 0], [1, 0, 0], [0, 0, 0], [0, 0, 0]]
    got = tune_thresholds(probs, y, ["low", "clear", "absent"])
    assert got["low"] == {"threshold": 0.3, "f1_at_0.5": 0.0, "f1_tuned": 1.0, "positives": 3}
    assert got["clear"]["threshold"] == 0.5 and got["clear"]["f1_tuned"] == 1.0
    assert got["absent"]["threshold"] == 0.5 and got["absent"]["positives"] == 0


def test_labels_with_few_validation_positives_keep_0_5():
    # "low" is separable below 0.5 on 3 positives: tuned with the default minimum of 1, held at 0.5 with a minimum of 4.
    probs = np.array([[0.35], [0.30], [0.40], [0.10], [0.20], [0.05]])
    y = np.array([[1], [1], [1], [0], [0], [0]])
    assert tune_thresholds(probs, y, ["low"])["low"]["threshold"] == 0.3
    held = tune_thresholds(probs, y, ["low"], min_positives=4)["low"]
    assert held["threshold"] == 0.5 and held["f1_tuned"] == held["f1_at_0.5"] == 0.0 and held["positives"] == 3


def test_tuned_f1_is_sklearns_f1_at_that_threshold_and_never_below_0_5():
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(0)
    y = (rng.random((300, 5)) < [0.5, 0.3, 0.1, 0.05, 0.02]).astype(int)
    # Noisy scores squeezed towards 0 by different amounts, as an under-trained sigmoid head gives them.
    probs = np.clip((0.6 * y + rng.normal(0.2, 0.2, y.shape)) * [1.0, 0.7, 0.5, 0.3, 0.8], 0, 1)
    got = tune_thresholds(probs, y, list("abcde"))
    for j, name in enumerate("abcde"):
        t = got[name]["threshold"]
        assert t in THRESHOLD_GRID
        assert got[name]["f1_tuned"] == pytest.approx(f1_score(y[:, j], probs[:, j] >= t, zero_division=0))
        assert got[name]["f1_at_0.5"] == pytest.approx(f1_score(y[:, j], probs[:, j] >= 0.5, zero_division=0))
        assert got[name]["f1_tuned"] >= got[name]["f1_at_0.5"]
    assert any(got[n]["f1_tuned"] > got[n]["f1_at_0.5"] for n in "abcde")


def test_a_threshold_tie_goes_to_the_lower_candidate():
    # F1 is 2/3 at every threshold up to 0.42 and from 0.58 to 0.60 (1/2 between): 0.42 and 0.58 tie, equally far from 0.5.
    from taskembed.metrics import tune_thresholds

    got = tune_thresholds(np.array([[0.6], [0.42], [0.57], [0.42]]), [[1], [1], [0], [0]], ["a"])
    assert got["a"]["threshold"] == 0.42


def test_multi_label_metrics_by_hand():
    logits = torch.logit(torch.tensor([[0.9, 0.2, 0.6], [0.7, 0.7, 0.1], [0.1, 0.4, 0.3]]))
    y = [[1, 0, 1], [1, 0, 0], [0, 0, 0]]
    m = multi_label_metrics(logits, y, ["a", "b", "c"])
    # Predicted sets at 0.5: {a, c}, {a, b}, {}: rows 1 and 3 exact -> subset accuracy 2/3.
    assert m["accuracy"] == pytest.approx(2 / 3)
    # tp a=2, c=1; fp b=1 -> micro F1 = 2*3 / (2*3 + 1) ; macro over a (1), b (0), c (1).
    assert m["micro_f1"] == pytest.approx(6 / 7)
    assert m["macro_f1"] == pytest.approx(2 / 3)
    assert m["per_class"]["b"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.tensor(y, dtype=torch.float32))
    assert m["loss"] == pytest.approx(float(expected))
    lowered = multi_label_metrics(logits, y, ["a", "b", "c"], thresholds=[0.5, 0.8, 0.65])
    # Now row 1 loses c (0.6 < 0.65) and row 2 loses b (0.7 < 0.8): rows 2 and 3 exact; tp a=2, fn c=1.
    assert lowered["accuracy"] == pytest.approx(2 / 3)
    # b is now neither true nor predicted anywhere, so the macro mean leaves it out (as the single-label one does):
    # over a (1) and c (0), not a 0 for b as well.
    assert lowered["micro_f1"] == pytest.approx(4 / 5) and lowered["macro_f1"] == pytest.approx(1 / 2)


# --- end to end on the tiny model ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_dir):
    """One multi-label training run (list labels in JSONL) shared by the read-only tests below."""
    root = tmp_path_factory.mktemp("multilabel")
    files = {name: write_jsonl(root / f"{name}.jsonl", make_multi_rows(n, seed)) for name, n, seed in
             (("train", 480, 1), ("validation", 240, 2), ("test", 240, 3))}
    overrides = {
        "data.source": str(files["train"]), "data.validation": str(files["validation"]), "data.test": str(files["test"]),
        "data.multi_label": True, "data.max_length": 24, "model.name": str(tiny_model_dir), "output.dir": str(root / "model"),
        "train.epochs": 10, "train.batch_size": 16, "train.lr": 3e-3, "train.head_lr": 1e-2, "train.bf16": "off",
        # One evaluation, at the end: the final weights are kept, not an early epoch where a label happened to cross 0.5.
        "train.metric": "macro_f1", "train.eval_every": 10_000, "train.keep_checkpoints": 0,
    }
    messages = []
    result = taskembed.train(None, overrides, progress=False, echo=messages.append)
    return root, result, files, messages


def test_tuned_thresholds_beat_0_5_on_validation(trained):
    _, result, _, messages = trained
    folder = result.output_dir
    val = json.loads((folder / "metrics.json").read_text())["validation"]
    assert val["macro_f1"] > val["at_0.5"]["macro_f1"]
    th = json.loads((folder / "thresholds.json").read_text())
    assert set(th["labels"]) == set(TASK)
    # Tuning never loses on the split it was tuned on, and a label whose threshold moved gained from it.
    # (Which labels a 2-layer random-init model learns varies with the seed, so the test does not name
    # one; "rare" cannot pass 0.5 by construction of the data, which is why some label always gains.)
    per = th["labels"]
    assert all(v["validation_f1_tuned"] >= v["validation_f1_at_0.5"] for v in per.values())
    moved = [name for name, v in per.items() if v["threshold"] != 0.5]
    assert moved and all(per[name]["validation_f1_tuned"] > per[name]["validation_f1_at_0.5"] for name in moved)
    assert val["thresholds"] == {name: v["threshold"] for name, v in th["labels"].items()} and val["thresholds_tuned"]
    assert any("skipped calibration, error analysis, embedding report" in m for m in messages)


def test_folder_contract_and_card(trained):
    _, result, _, _ = trained
    folder = result.output_dir
    names = {p.name for p in folder.iterdir()}
    assert {"thresholds.json", "metrics.json", "README.md", "model.safetensors", "learning_curves.png"} <= names
    # Calibration, the confusion matrix and the embedding report are single-label reports.
    assert not names & {"calibration.json", "confusion_matrix_test.png", "embedding_report.json"}
    assert json.loads((folder / "config.json").read_text())["problem_type"] == "multi_label_classification"
    card = (folder / "README.md").read_text()
    assert "### Multi-label" in card and "| test | 0.5 |" in card and "| test | **tuned** |" in card
    assert "| rare | " in card and "Not written for multi-label:" in card
    base = json.loads((folder / "metrics.json").read_text())["baselines"]["test"]
    assert set(base) == {"majority", "tfidf_logreg"} and set(base["tfidf_logreg"]) == {"accuracy", "micro_f1", "macro_f1"}


def test_predict_returns_label_lists_over_the_thresholds(trained):
    _, result, files, _ = trained
    clf = taskembed.load(result.output_dir)
    assert clf.multi_label
    texts = [json.loads(line)["text"] for line in files["test"].read_text().splitlines()[:40]]
    preds = clf.predict(texts)
    for p in preds:
        assert set(p["scores"]) == set(TASK)
        assert p["labels"] == sorted((x for x, s in p["scores"].items() if s >= clf.thresholds[x]), key=lambda x: -p["scores"][x])
        assert p["label"] == max(p["scores"], key=p["scores"].get)
    assert len({tuple(p["labels"]) for p in preds}) >= 2  # the texts do not all get one answer
    # The two ends of the rule, whatever the model learned: no label over a threshold gives an empty
    # list (not the top label), every label over its threshold gives them all, best first.
    clf.thresholds = dict.fromkeys(TASK, 1.01)  # above any probability (a saturated float32 sigmoid is exactly 1.0)
    assert all(p["labels"] == [] and p["label"] in TASK for p in clf.predict(texts[:5]))
    clf.thresholds = dict.fromkeys(TASK, 0.0)
    assert all(p["labels"] == sorted(TASK, key=lambda x: -p["scores"][x]) for p in clf.predict(texts[:5]))


def test_pipeline_gives_the_same_sigmoid_scores(trained):
    from transformers import pipeline

    _, result, files, _ = trained
    texts = [json.loads(line)["text"] for line in files["test"].read_text().splitlines()[:20]]
    ours = taskembed.load(result.output_dir).predict(texts)
    theirs = pipeline("text-classification", model=str(result.output_dir), top_k=None, device="cpu")(texts)
    for p, q in zip(ours, theirs):
        assert {d["label"]: d["score"] for d in q} == pytest.approx(p["scores"], abs=1e-5)
    # Sigmoids, not a softmax: the scores of one text need not sum to 1.
    assert any(abs(sum(p["scores"].values()) - 1) > 0.05 for p in ours)


def test_evaluate_matches_training_metrics_and_the_cli_prints_both(trained, capsys, tmp_path):
    _, result, files, _ = trained
    m = taskembed.evaluate(result.output_dir, str(files["test"]))
    saved = json.loads((result.output_dir / "metrics.json").read_text())["test"]
    for key in ("accuracy", "micro_f1", "macro_f1"):
        assert m[key] == pytest.approx(saved[key]) and m["at_0.5"][key] == pytest.approx(saved["at_0.5"][key])
    code, out, _ = run_cli(["evaluate", str(result.output_dir), str(files["test"])], capsys)
    assert code == 0 and "tuned thresholds: subset accuracy" in out and "at 0.5: subset accuracy" in out
    assert "| rare | " in out
    # Per-example rows: label sets as lists, decided at the folder's thresholds as the headline metrics are.
    rows = taskembed.evaluate(result.output_dir, str(files["test"]), predictions=True)["predictions"]
    truth = [json.loads(x)["label"] for x in files["test"].read_text().splitlines()]
    assert [sorted(r["labels"]) for r in rows] == [sorted(t) for t in truth]
    assert sum(r["correct"] for r in rows) / len(rows) == pytest.approx(m["accuracy"])
    said = taskembed.load(result.output_dir).predict([r["text"] for r in rows])
    assert [r["predicted"] for r in rows] == [p["labels"] for p in said]
    rows_csv = tmp_path / "rows.csv"
    code, out, _ = run_cli(["evaluate", str(result.output_dir), str(files["test"]), "--predictions", str(rows_csv)], capsys)
    header, first_row = rows_csv.read_text().splitlines()[:2]
    assert code == 0 and header.split(",")[:4] == ["text", "labels", "predicted", "correct"] and "most confused" not in out
    assert first_row.split(",")[1] == "|".join(rows[0]["labels"])
    # How labels are read is the model's: evaluate's hints name no training option it does not have.
    first = json.loads(files["test"].read_text().splitlines()[0])
    csv = tmp_path / "joined.csv"
    csv.write_text(f"text,label\n{first['text']},{'|'.join(first['label']) or 'x'}\n", encoding="utf-8")
    with pytest.raises(taskembed.UserError, match=r"row 1: label .* is text, not a list; the model was trained on labels given "
                                                   r"as lists, so give them as lists \(a JSON list in JSONL or Parquet\)$"):
        taskembed.evaluate(result.output_dir, str(csv))
    code, out, _ = run_cli(["predict", str(result.output_dir), "great wonderful film", "the a and it is"], capsys)
    assert code == 0 and len(out.strip().splitlines()) == 2
    csv_out = tmp_path / "p.csv"
    code, _, _ = run_cli(["predict", str(result.output_dir), "great film", "--out", str(csv_out)], capsys)
    header = csv_out.read_text().splitlines()[0].split(",")
    assert code == 0 and header[:4] == ["text", "labels", "label", "score"]


def test_demo_predict_and_batch_show_the_label_list(trained):
    pytest.importorskip("gradio")
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("taskembed_demo_app_multilabel", ROOT / "demo" / "app.py")
    demo = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = demo  # dataclasses look their module up there
    spec.loader.exec_module(demo)
    _, result, _, _ = trained
    app = demo.build_app([result.output_dir])
    fns = {f.api_name: f.fn for f in app.fns.values()}  # the event handlers, called without a server
    clf = taskembed.load(result.output_dir)
    text = "great wonderful dull awful film"
    expected = clf.predict([text])[0]
    _, confidence, details, _ = fns["predict"](None, text)
    assert details["labels"] == expected["labels"]
    assert (confidence.startswith("Predicted labels: ") and all(f"**{x}**" in confidence for x in expected["labels"])
            or not expected["labels"] and confidence.startswith("**No label**"))
    table, csv_path, _ = fns["batch"](None, f"{text}\nthe a it is", None)
    assert list(table.columns[:3]) == ["text", "labels", "label"]
    assert table["labels"].tolist()[0] == "|".join(expected["labels"])
    assert Path(csv_path).read_text().splitlines()[0].startswith("text,labels,label,score")


# --- the built-in multi-label set --------------------------------------------------------------------


def test_home_intents_multi_is_derived_without_leaks():
    from taskembed import builtin

    base = builtin.load_builtin("home_intents")
    parts = builtin._home_intents_multi_parts()
    public = builtin.load_builtin("home_intents_multi")
    intent_of = {t: label for df in base.values() for t, label in zip(df["text"], df["label"])}
    used = {}
    for split, df in parts.items():
        pd.testing.assert_frame_equal(public[split], df[["text", "label"]])
        own = set(base[split]["text"])
        for text, labels, pieces in zip(df["text"], df["label"], df["parts"]):
            assert 1 <= len(pieces) <= 3 and set(pieces) <= own, split  # built from its own split only
            assert labels == "|".join(sorted(intent_of[p] for p in pieces))
            assert len(set(labels.split("|"))) == len(pieces)  # different intents
            assert text.startswith(pieces[0]) and text.endswith(pieces[-1])
            for p in pieces:
                assert used.setdefault(p, split) == split and p  # no command in two splits (or twice)
        assert sum(len(p) for p in df["parts"]) == len(base[split])  # every command used exactly once
    sizes = pd.Series([len(p) for df in parts.values() for p in df["parts"]]).value_counts()
    assert set(sizes.index) == {1, 2, 3} and sizes[2] > sizes[1] > sizes[3]


def test_multilabel_config_loads_the_builtin_offline():
    cfg = load_config(ROOT / "configs" / "multilabel.yaml")
    assert cfg.data.source == "home_intents_multi" and cfg.data.multi_label
    splits = load_splits(cfg.data)
    assert splits.multi_label and len(splits.labels) >= 25
    every = {x for df in splits.frames.values() for row in df["label"] for x in row}
    assert every == set(splits.labels)
    assert all(len(row) >= 1 for df in splits.frames.values() for row in df["label"])
    if cfg.data.max_train_samples:
        assert len(splits.frames["train"]) == cfg.data.max_train_samples


def test_evaluate_refuses_a_label_column_for_a_model_of_0_1_columns(tiny_overrides, tmp_path):
    # Such a model reads its labels from the columns it was trained on; --label-column was silently ignored.
    path = tmp_path / "flags.csv"
    rows = make_rows(40, seed=3)
    path.write_text("text,x,y\n" + "".join(f"{r['text']},{int(r['label'] == 'pos')},{int(i % 3 == 0)}\n" for i, r in enumerate(rows)),
                    encoding="utf-8")
    overrides = {**tiny_overrides, "data.source": str(path), "data.multi_label": True, "data.label_columns": "x,y",
                 "train.epochs": 1, "output.baselines": False}
    folder = taskembed.train(None, overrides, progress=False, echo=lambda _m: None).output_dir
    with pytest.raises(taskembed.UserError, match=r"^label_column='stars': .* reads its labels from the 0/1 columns x, y"):
        taskembed.evaluate(folder, str(path), label_column="stars")
    assert taskembed.evaluate(folder, str(path))["n"] == 40
    short = tmp_path / "no-y.csv"
    short.write_text("text,x\n" + "".join(f"{r['text']},1\n" for r in rows[:5]), encoding="utf-8")
    with pytest.raises(taskembed.UserError, match=r"no column 'y' .*; the model reads its labels from the 0/1 columns x, y: "
                                                   r"the data needs each of them$"):
        taskembed.evaluate(folder, str(short))


def test_a_single_label_run_can_start_from_a_multi_label_model(trained, tiny_overrides, tmp_path):
    # The embedding report's base is the starting encoder; it refused a multi-label one after all the training, and
    # the save's advice (--resume) could never get past it.
    _, result, _, _ = trained
    data = tmp_path / "single.csv"
    data.write_text("text,label\n" + "".join(f"{r['text']},{r['label']}\n" for r in make_rows(80, seed=7)), encoding="utf-8")
    messages: list[str] = []
    out = taskembed.train(None, {**tiny_overrides, "model.name": str(result.output_dir), "data.source": str(data), "train.epochs": 1},
                          progress=False, echo=messages.append).output_dir
    report = json.loads((out / "embedding_report.json").read_text())
    assert report["base"]["model"] == str(result.output_dir) and report["tuned"]["knn_accuracy"] is not None
    assert not any("left out" in m for m in messages)
    # Said before the probes run (they can take a minute after the last progress line).
    assert any(m.startswith("embedding report: ") and "validation texts through the base and the tuned encoder" in m for m in messages)


def test_what_stops_the_embedding_report_does_not_cost_the_model(tiny_overrides, tmp_path, monkeypatch):
    from taskembed import compare as compare_module

    def refuse(*_args, **_kwargs):
        raise taskembed.UserError("compare needs labelled texts of at least two classes")

    monkeypatch.setattr(compare_module, "compare", refuse)
    data = tmp_path / "single.csv"
    data.write_text("text,label\n" + "".join(f"{r['text']},{r['label']}\n" for r in make_rows(60, seed=8)), encoding="utf-8")
    messages: list[str] = []
    out = taskembed.train(None, {**tiny_overrides, "data.source": str(data), "train.epochs": 1}, progress=False,
                          echo=messages.append).output_dir
    assert (out / "model.safetensors").is_file() and not (out / "embedding_report.json").exists()
    assert "embedding report left out: compare needs labelled texts of at least two classes" in messages
    assert "Left out: compare needs labelled texts of at least two classes" in (out / "README.md").read_text()


def test_compare_refuses_a_multi_label_model_and_label_sets(trained, tiny_model_dir):
    # Each combination of labels was scored as a class of its own ("['book flight', 'check balance']"), with figures
    # that meant nothing; training leaves the report out for multi-label models, and compare now says why.
    from taskembed.compare import compare

    _, result, _, _ = trained
    texts = ["great wonderful film", "the a and it is", "dull boring", "warm fine story"]
    with pytest.raises(taskembed.UserError, match="is a multi-label model; compare scores one label per text"):
        compare(tiny_model_dir, result.output_dir, texts, ["x", "y", "x", "y"])
    with pytest.raises(taskembed.UserError, match="these texts have sets of labels"):
        compare(tiny_model_dir, tiny_model_dir, texts, [["x"], ["y"], ["x", "y"], []])


def test_the_cli_says_the_tuned_rows_are_tuned_on_validation(trained, tiny_model_dir, tmp_path, capsys):
    _, _, files, _ = trained
    argv = ["train", "--data.source", str(files["train"]), "--data.validation", str(files["validation"]), "--data.multi_label", "true",
            "--model.name", str(tiny_model_dir), "--data.max_length", "24", "--train.epochs", "1", "--train.bf16", "off",
            "--output.dir", str(tmp_path / "out"), "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "out" / "thresholds.json").is_file()
    assert "(the fine-tuned model at the thresholds tuned on validation, so its validation row flatters it" in out
    assert out.index("flatters it") < out.index("multi-label (accuracy = subset accuracy), at 0.5 and at the thresholds saved")
