"""End to end on the tiny model: train, save, reload, predict like `pipeline`, evaluate, CLI."""

from __future__ import annotations

import csv
import json
import random
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import taskembed
from taskembed.cli import main
from taskembed.errors import UserError
from bench.fault_injection import write_csv
from tests.conftest import make_rows

EXPECTED_FILES = {
    "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "training_config.json", "lr_plan.json",
    "metrics.json", "run.json", "log.jsonl", "README.md", "confusion_matrix_validation.png", "confusion_matrix_test.png",
    "learning_curves.png", "calibration.json", "reliability.png", "embedding_report.json", "embedding_projection.png",
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_dir):
    """One tiny training run shared by the read-only tests of this module."""
    root = tmp_path_factory.mktemp("trained")
    noisy = make_rows(240, seed=1)
    for row in noisy[::12]:  # a few wrong labels, so that validation (carved from the file) has mistakes to calibrate on
        row["label"] = {"neg": "pos", "pos": "neg"}[row["label"]]
    for name, rows in (("train.csv", noisy), ("test.csv", make_rows(60, seed=2))):
        write_csv(root / name, rows)
    overrides = {
        "data.source": str(root / "train.csv"), "data.test": str(root / "test.csv"), "data.max_length": 32,
        "model.name": str(tiny_model_dir), "output.dir": str(root / "model"),
        "train.epochs": 8, "train.batch_size": 16, "train.lr": 3e-3, "train.head_lr": 5e-3, "train.bf16": "off",
    }
    result = taskembed.train(None, overrides, progress=False, echo=lambda _m: None)
    return root, result


def test_output_folder_contract(trained):
    root, result = trained
    folder = result.output_dir
    assert EXPECTED_FILES <= {p.name for p in folder.iterdir()}
    # No pickle anywhere: only safetensors weights, JSON/PNG/Markdown metadata, tokenizer text files.
    assert not [p for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".pkl", ".ckpt")]
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["id2label"] == {"0": "neg", "1": "pos"} and cfg["label2id"] == {"neg": 0, "pos": 1}
    run = json.loads((folder / "run.json").read_text())
    assert len(run["data"]["fingerprint"]) == 64 and run["seed"] == 0 and "torch" in run["versions"]
    # The whole run's time is taken when run.json is written, after the weights and the embedding report.
    assert 0 < run["report_seconds"] < run["total_seconds"]
    assert run["train_seconds"] + run["eval_seconds"] + run["report_seconds"] <= run["total_seconds"]
    plan = json.loads((folder / "lr_plan.json").read_text())
    assert [g["name"] for g in plan["groups"]] == ["embeddings", "layer.1", "layer.2", "head"]
    card = (folder / "README.md").read_text()
    assert "| test | **fine-tuned** |" in card and card.count("## Embeddings before and after fine-tuning") == 1
    assert "tokens were truncated: 0 of train, 0 of validation, 0 of test." in card  # counts in words, not a dict
    # A local base model is no Hub id: the header leaves base_model out (the Hub refuses a path there on push).
    assert card.startswith("---\nlibrary_name: transformers\n") and "base_model:" not in card.split("---")[1]
    from taskembed.artifacts import _base_model_line

    assert _base_model_line("sentence-transformers/all-MiniLM-L6-v2") == "base_model: sentence-transformers/all-MiniLM-L6-v2\n"
    log = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]
    assert {e["kind"] for e in log} == {"train", "eval"} and all(e["loss"] == e["loss"] for e in log)
    # no stray temporary folder beside the output
    assert [p.name for p in folder.parent.iterdir() if p.name.startswith(".")] == []


def test_it_learns_the_easy_task(trained):
    _, result = trained
    assert result.metrics["test"]["accuracy"] >= 0.9
    assert result.metrics["test"]["accuracy"] > result.baselines["test"]["majority"]["accuracy"]


def test_pipeline_gives_the_same_labels_and_scores(trained):
    from transformers import pipeline

    _, result = trained
    texts = ["superb charming film", "dull boring plot", "the actor", "great " * 40]
    ours = taskembed.load(result.output_dir).predict(texts)
    pipe = pipeline("text-classification", model=str(result.output_dir), top_k=None)
    for mine, theirs in zip(ours, pipe(texts, truncation=True, max_length=32)):
        ref = {d["label"]: d["score"] for d in theirs}
        assert set(ref) == {"neg", "pos"}
        assert mine["label"] == max(ref, key=ref.get)
        for label, score in ref.items():
            assert mine["scores"][label] == pytest.approx(score, abs=1e-5)


def test_the_model_cards_pipeline_example_runs_and_gives_taskembeds_scores(trained):
    import re

    _, result = trained
    card = (result.output_dir / "README.md").read_text()
    code = re.search(r"## Use\n\n```python\n(.*?)```", card, re.S).group(1).replace("path/to/this/folder", str(result.output_dir))
    assert "truncation=True, max_length=32" in code  # the run's data.max_length
    scope: dict = {}
    exec(code.replace('"some text"', '"great " * 40'), scope)  # a text over the limit: read as training read it
    got = {d["label"]: d["score"] for d in [scope["clf"]("great " * 40, truncation=True, max_length=32, top_k=None)][0]}
    mine = taskembed.load(result.output_dir).predict(["great " * 40])[0]["scores"]
    assert got.keys() == mine.keys() and all(got[k] == pytest.approx(mine[k], abs=1e-5) for k in got)


def test_the_model_card_says_how_pair_and_window_models_predict():
    from taskembed.artifacts import _use_section

    base = {"max_length": 64, "text_column": "premise", "long_texts": "truncate", "window_stride": 16, "window_aggregate": "mean"}
    pair = _use_section({**base, "text_pair_column": "hypothesis"})
    assert 'clf({"text": "first text", "text_pair": "second text"}, truncation=True, max_length=64)' in pair
    assert "--file pairs.csv   # columns 'premise' and 'hypothesis'" in pair
    window = _use_section({**base, "long_texts": "window"})
    assert "reads only the first 64 tokens of a longer text" in window and "reads every window" in window
    assert "so its scores are taskembed's" in _use_section(base) and "so its scores are taskembed's" not in window


@pytest.mark.parametrize("arch", ["mpnet", "albert"])
def test_other_encoder_families_train_save_and_predict_like_pipeline(arch, tiny_model_dir, tmp_path):
    # MPNet (a shared relative-position table) and ALBERT (one group of weights reused by every layer) each needed
    # a rule in the rate plan; the whole run (embedding report included) must then work as it does for BERT.
    import transformers
    from transformers import AutoTokenizer, pipeline

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    common = dict(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                  max_position_embeddings=130, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    base = (transformers.MPNetModel(transformers.MPNetConfig(**common)) if arch == "mpnet"
            else transformers.AlbertModel(transformers.AlbertConfig(embedding_size=16, **common)))
    folder = tmp_path / arch
    base.save_pretrained(folder)
    tok.save_pretrained(folder)
    for name, rows in (("train.csv", make_rows(240, seed=1)), ("test.csv", make_rows(60, seed=2))):
        write_csv(tmp_path / name, rows)
    result = taskembed.train(None, {
        "data.source": str(tmp_path / "train.csv"), "data.test": str(tmp_path / "test.csv"), "data.max_length": 32,
        "model.name": str(folder), "output.dir": str(tmp_path / "out"), "train.epochs": 8, "train.batch_size": 16,
        "train.lr": 3e-3, "train.head_lr": 5e-3}, progress=False, echo=lambda _m: None)
    assert result.metrics["test"]["accuracy"] >= 0.9
    assert (result.output_dir / "embedding_report.json").is_file()
    texts = ["superb charming film", "dull boring plot", "great " * 40]
    ours = taskembed.load(result.output_dir).predict(texts)
    theirs = pipeline("text-classification", model=str(result.output_dir), top_k=None)(texts, truncation=True, max_length=32)
    for mine, ref in zip(ours, theirs):
        assert all(mine["scores"][d["label"]] == pytest.approx(d["score"], abs=1e-5) for d in ref)


def test_a_family_whose_head_input_is_unknown_trains_without_the_embedding_report(tiny_model_dir, tmp_path, monkeypatch):
    # A model the rate plan places but whose head's input taskembed does not know: said before training, and the run
    # completes (the report used to fail with a traceback after training).
    from taskembed import modeling

    monkeypatch.delitem(modeling.HEAD_READS, "bert")
    write_csv(tmp_path / "train.csv", make_rows(120, seed=1))
    said: list[str] = []
    result = taskembed.train(None, {"data.source": str(tmp_path / "train.csv"), "model.name": str(tiny_model_dir), "train.epochs": 1,
                                    "output.dir": str(tmp_path / "out"), "data.max_length": 32}, progress=False, echo=said.append)
    assert "note: no embedding report: taskembed does not know which vector the bert head reads" in said
    assert not (result.output_dir / "embedding_report.json").exists() and (result.output_dir / "model.safetensors").is_file()


def test_data_given_in_python_trains_as_the_same_rows_in_a_file_do(tiny_overrides, tmp_path, write_csv):
    import datasets
    import pandas as pd

    rows = make_rows(96, seed=3)
    test_rows = make_rows(40, seed=4)
    base = {**tiny_overrides, "train.epochs": 1}
    from_file = taskembed.train(None, {**base, "data.source": str(write_csv(rows)), "output.dir": str(tmp_path / "file")},
                                progress=False, echo=lambda _m: None)
    from_frame = taskembed.train(None, {**base, "output.dir": str(tmp_path / "frame")}, data=pd.DataFrame(rows),
                                 progress=False, echo=lambda _m: None)
    # The same rows give the same carved splits, the same fingerprint and the same weights.
    weights = [load_file(str(r.output_dir / "model.safetensors")) for r in (from_file, from_frame)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    runs = [json.loads((r.output_dir / "run.json").read_text()) for r in (from_file, from_frame)]
    assert runs[0]["data"]["fingerprint"] == runs[1]["data"]["fingerprint"]
    assert json.loads((from_frame.output_dir / "training_config.json").read_text())["data"]["source"] == "<in-memory data>"
    # A dict of splits and a DatasetDict work too; evaluate takes a table or one split of them.
    splits = {"train": pd.DataFrame(rows), "test": pd.DataFrame(test_rows)}
    res = taskembed.train(None, {**base, "output.dir": str(tmp_path / "dict")}, data=datasets.DatasetDict(
        {k: datasets.Dataset.from_pandas(v) for k, v in splits.items()}), progress=False, echo=lambda _m: None)
    assert res.metrics["test"]["n"] == 40
    assert taskembed.evaluate(res.output_dir, splits)["accuracy"] == taskembed.evaluate(res.output_dir, pd.DataFrame(test_rows))["accuracy"]
    assert taskembed.evaluate(res.output_dir, pd.DataFrame(test_rows))["n"] == 40
    # Mistakes are named: both a source and data=, a wrong type, an unknown split, and a bad row by its split.
    # data= replaces a source the config names (a recipe's config serves any data), saying so.
    from taskembed.api import with_data

    said: list[str] = []
    cfg, given = with_data(taskembed.load_config("configs/intent.yaml", base), pd.DataFrame(rows), said.append)
    assert cfg.data.source == "<in-memory data>" and len(given["train"]) == len(rows)
    assert said == ["note: training on the data given in Python (data=), not on data.source home_intents"]
    with pytest.raises(UserError, match="give a pandas DataFrame, a dict of split name to DataFrame, or a datasets Dataset or DatasetDict \\(got list\\)"):
        taskembed.train(None, base, data=rows)
    with pytest.raises(UserError, match="split 'eval' is not one of train, validation, test"):
        taskembed.train(None, base, data={"train": pd.DataFrame(rows), "eval": pd.DataFrame(test_rows)})
    assert taskembed.evaluate(res.output_dir, {"dev": pd.DataFrame(test_rows)}, "dev")["n"] == 40  # dev is validation, as in train
    with pytest.raises(UserError, match=r"data\['validation'\] and data.validation \(.*\) both give the validation split"):
        taskembed.train(None, {**base, "data.validation": str(write_csv(test_rows))},
                        data={"train": pd.DataFrame(rows), "validation": pd.DataFrame(test_rows)})
    with pytest.raises(UserError, match="'dev' and 'validation' both name the validation split; give one of them"):
        taskembed.train(None, base, data={"train": pd.DataFrame(rows), "dev": pd.DataFrame(test_rows), "validation": pd.DataFrame(test_rows)})
    # The folder's recorded source is no data to train on again, and the dry run says so as the run would.
    from taskembed.cli import main as cli

    with pytest.raises(UserError, match="is data that was given in Python"):
        taskembed.train(None, {**base, "data.source": "<in-memory data>"})
    assert cli(["train", "--data.source", "<in-memory data>", "--model.name", base["model.name"], "--dry-run"]) == 2
    bad = pd.DataFrame(rows)
    bad.loc[4, "text"] = "  "
    with pytest.raises(UserError, match=r"^data: row 5"):  # a DataFrame alone: named as the argument, not data['train']
        taskembed.train(None, base, data=bad)


def test_what_python_callers_get_wrong_is_named(tiny_overrides, tmp_path):
    import pandas as pd

    from taskembed.data import frames_from_python

    rows = pd.DataFrame(make_rows(40))
    # A table read without a header has integer column names; the config names columns as text, so they match.
    bare = pd.DataFrame(rows.values)
    assert list(frames_from_python(bare)["train"].columns) == ["0", "1"]
    with pytest.raises(UserError, match=r"^data: the column 'text' appears more than once; keep one of them"):
        taskembed.train(None, tiny_overrides, data={"train": pd.concat([rows[["text"]], rows], axis=1)})
    # A column read by nothing may repeat, as it could before.
    extra = pd.concat([rows, pd.DataFrame({"note": ["x"] * len(rows)}), pd.DataFrame({"note": ["y"] * len(rows)})], axis=1)
    assert list(frames_from_python(extra)["train"].columns) == ["text", "label", "note", "note"]
    with pytest.raises(UserError, match=r"resume='yes': give True, False or 'auto'"):
        taskembed.train(None, tiny_overrides, resume="yes")
    with pytest.raises(UserError, match=r"overrides: give a dict of dotted keys to values.*\(got list\)"):
        taskembed.train(None, [("train.epochs", 1)])
    with pytest.raises(UserError, match=r"config: give a YAML file's path, a dict laid out as the YAML is, a Config or None \(got int\)"):
        taskembed.plan(3)
    # A dict laid out as the YAML file is works as the file does.
    rates = lambda plan: [g.lr for g in plan.groups]  # noqa: E731
    model = {"model.name": tiny_overrides["model.name"]}
    from_dict = rates(taskembed.plan({"train": {"lr": 3e-4}}, model))
    assert from_dict == rates(taskembed.plan(None, {**model, "train.lr": 3e-4})) and from_dict != rates(taskembed.plan(None, model))


def test_a_split_without_labels_is_noted_with_what_the_run_does_instead(tiny_overrides, tmp_path):
    import datasets

    rows = make_rows(60)
    names = datasets.ClassLabel(names=["neg", "pos"])
    features = datasets.Features({"text": datasets.Value("string"), "label": names})
    datasets.DatasetDict({
        "train": datasets.Dataset.from_list([{"text": r["text"], "label": names.str2int(r["label"])} for r in rows[:48]], features=features),
        "test": datasets.Dataset.from_list([{"text": r["text"], "label": -1} for r in rows[48:]], features=features),
    }).save_to_disk(str(tmp_path / "ds"))
    for fraction, expected in ((0.0, "this run has no test split (data.test_fraction, e.g. 0.1, carves one from train)"),
                               (0.2, "the test split is carved from train instead")):
        said: list[str] = []
        res = taskembed.train(None, {**tiny_overrides, "data.source": str(tmp_path / "ds"), "data.test_fraction": fraction,
                                     "train.epochs": 1, "output.overwrite": True}, progress=False, echo=said.append)
        assert any("[test] has no labels" in m and expected in m for m in said), said
        assert ("test" in res.metrics) == (fraction > 0)


def test_bf16_predict_is_opt_in_and_close_to_float32(trained, monkeypatch):
    from taskembed import predict as predict_module

    _, result = trained
    texts = ["superb charming film", "dull boring plot", "the actor", "great " * 40]
    exact = taskembed.load(result.output_dir).predict(texts)
    # Where the CPU has no bfloat16 units the option is refused (emulated bf16 is slower than float32) ...
    monkeypatch.setattr(predict_module, "native_bf16", lambda device: False)
    with pytest.raises(UserError, match="no native bfloat16"):
        taskembed.load(result.output_dir, bf16=True)
    # ... and where it has them (forced here, so both branches run on any CPU) scores stay close to float32.
    monkeypatch.setattr(predict_module, "native_bf16", lambda device: True)
    fast = taskembed.load(result.output_dir, bf16=True).predict(texts)
    for a, b in zip(fast, exact):
        assert a["label"] == b["label"] or b["score"] < 0.55  # only a near-tie may flip
        assert max(abs(a["scores"][k] - b["scores"][k]) for k in b["scores"]) < 0.02


def test_evaluate_matches_training_metrics(trained):
    root, result = trained
    m = taskembed.evaluate(result.output_dir, str(root / "test.csv"))
    assert m["accuracy"] == pytest.approx(result.metrics["test"]["accuracy"])
    assert m["n"] == 60


def test_a_saved_datasets_dev_split_is_evaluated_by_either_name(trained, tmp_path):
    """Training reads a dataset's "dev" split as validation; evaluate and embed take either name for it."""
    import datasets
    import pandas as pd

    from taskembed.embed import open_texts

    root, result = trained
    test = pd.read_csv(root / "test.csv")
    datasets.DatasetDict({"train": datasets.Dataset.from_pandas(test[:10]), "dev": datasets.Dataset.from_pandas(test)}).save_to_disk(str(tmp_path / "ds"))
    by_alias = taskembed.evaluate(result.output_dir, str(tmp_path / "ds"), "dev")
    assert by_alias["n"] == 60 and by_alias == taskembed.evaluate(result.output_dir, str(tmp_path / "ds"), "validation")
    assert open_texts(str(tmp_path / "ds"), split="dev").count == 60


def test_evaluate_predictions_line_up_with_the_data_and_agree_with_predict_and_the_metrics(trained, tmp_path, capsys):
    import pandas as pd

    root, result = trained
    test = pd.read_csv(root / "test.csv")
    m = taskembed.evaluate(result.output_dir, str(root / "test.csv"), predictions=True)
    rows = m["predictions"]
    assert [r["text"] for r in rows] == test["text"].tolist() and [r["label"] for r in rows] == test["label"].astype(str).tolist()
    assert sum(r["correct"] for r in rows) / len(rows) == pytest.approx(m["accuracy"])
    assert all(r["correct"] == (r["predicted"] == r["label"]) and r["p_label"] == r["scores"][r["label"]] for r in rows)
    said = taskembed.load(result.output_dir).predict(test["text"].tolist())
    assert [r["predicted"] for r in rows] == [p["label"] for p in said]
    assert max(abs(r["score"] - p["score"]) for r, p in zip(rows, said)) < 1e-5
    # Calibrated as predict gives them (this run calibrated), so a threshold chosen on these rows is one predict applies.
    assert max(abs(r["calibrated_score"] - p["calibrated_score"]) for r, p in zip(rows, said)) < 1e-5
    assert "predictions" not in taskembed.evaluate(result.output_dir, str(root / "test.csv"))
    # a classifier already loaded scores alike, without loading the folder again
    clf = taskembed.load(result.output_dir)
    assert taskembed.evaluate(clf, test, predictions=True)["predictions"] == rows

    # The CLI writes them beside the metrics, prints the most confused pairs, and keeps them out of --out's JSON.
    out_csv, out_json = tmp_path / "rows.csv", tmp_path / "m.json"
    assert main(["evaluate", str(result.output_dir), str(root / "test.csv"), "--predictions", str(out_csv), "--out", str(out_json)]) == 0
    printed = capsys.readouterr().out
    wrong = len(rows) - sum(r["correct"] for r in rows)
    assert f"{len(rows)} predictions ({wrong} wrong) written to {out_csv}" in printed
    assert ("most confused (true -> predicted): " in printed) == (wrong > 0)
    written = pd.read_csv(out_csv, keep_default_na=False)
    assert list(written.columns) == ["text", "label", "predicted", "correct", "score", "p_label", "calibrated_score", "score_neg",
                                     "score_pos", "calibrated_score_neg", "calibrated_score_pos"]
    assert written["calibrated_score_pos"].tolist() == pytest.approx([r["calibrated_scores"]["pos"] for r in rows], abs=1e-6)
    assert written["predicted"].tolist() == [r["predicted"] for r in rows] and written["correct"].tolist() == [r["correct"] for r in rows]
    assert "predictions" not in json.loads(out_json.read_text())
    assert main(["evaluate", str(result.output_dir), str(root / "test.csv"), "--predictions", str(tmp_path / "rows.jsonl")]) == 0
    capsys.readouterr()
    assert [json.loads(x) for x in (tmp_path / "rows.jsonl").read_text().splitlines()] == json.loads(json.dumps(rows))
    assert main(["evaluate", str(result.output_dir), str(root / "test.csv"), "--predictions", str(tmp_path / "rows.txt")]) == 2
    assert f"--predictions {tmp_path / 'rows.txt'}: use a .csv or .jsonl file name" in capsys.readouterr().err
    assert main(["evaluate", str(result.output_dir), str(root / "test.csv"), "--predictions", str(root / "test.csv")]) == 2
    assert "is the input file" in capsys.readouterr().err and (root / "test.csv").read_text().startswith("text,label")


def test_cli_predict_to_csv_and_jsonl(trained, tmp_path, capsys):
    _, result = trained
    src = tmp_path / "in.txt"
    src.write_text("superb charming\n\ndull boring\n")
    assert main(["predict", str(result.output_dir), "--file", str(src), "--out", str(tmp_path / "p.jsonl")]) == 0
    lines = [json.loads(x) for x in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [x["text"] for x in lines] == ["superb charming", "dull boring"]
    assert all(abs(sum(x["scores"].values()) - 1) < 1e-5 for x in lines)
    assert main(["predict", str(result.output_dir), "superb", "--out", str(tmp_path / "p.csv")]) == 0
    header, row = (tmp_path / "p.csv").read_text().splitlines()[:2]
    assert header == "text,label,score,score_neg,score_pos,calibrated_score,calibrated_score_neg,calibrated_score_pos"
    values = [float(x) for x in row.split(",")[2:]]
    assert values[4] + values[5] == pytest.approx(1.0, abs=1e-5) and values[3] == max(values[4:])  # each class, calibrated



def test_cli_predict_keeps_the_tables_columns_and_rows_without_text(trained, tmp_path, capsys):
    # A nightly batch keyed by id: the ids come back beside their predictions, and one blank cell stops nothing.
    _, result = trained
    model = str(result.output_dir)
    src = tmp_path / "in.csv"
    src.write_text('id,text,label,note\n17,superb charming,pos,x\n18,,neg,\n19,"dull, boring",neg,y\n', encoding="utf-8")
    want = taskembed.load(model).predict(["superb charming", "dull, boring"])
    assert main(["predict", model, "--file", str(src), "--out", str(tmp_path / "p.csv")]) == 0
    err = capsys.readouterr().err
    assert f"{src}: row 2: no text in column 'text': it was left without a prediction" in err
    assert "renamed the input's column 'label' to 'input_label'" in err
    got = list(csv.DictReader((tmp_path / "p.csv").open(encoding="utf-8")))
    assert list(got[0])[:5] == ["id", "text", "input_label", "note", "label"]
    assert [g["id"] for g in got] == ["17", "18", "19"] and [g["input_label"] for g in got] == ["pos", "neg", "neg"]
    assert [g["label"] for g in got] == [want[0]["label"], "", want[1]["label"]] and got[1]["score"] == ""
    assert float(got[2]["score"]) == pytest.approx(want[1]["score"], abs=2e-6)
    # JSON Lines keeps the values' types (an integer id stays one); the row without text has null predictions
    src = tmp_path / "in.jsonl"
    src.write_text('{"id": 17, "text": "superb charming"}\n{"id": 18, "text": null}\n{"id": 19, "text": "dull, boring"}\n'
                   '{"text": "dull, boring", "tag": "x"}\n', encoding="utf-8")
    assert main(["predict", model, "--file", str(src), "--out", str(tmp_path / "p.jsonl")]) == 0
    assert capsys.readouterr().out.strip() == f"3 predictions written to {tmp_path / 'p.jsonl'}"
    rows = [json.loads(x) for x in (tmp_path / "p.jsonl").read_text().splitlines()]
    # each record as the file holds it: an id beside a record without one stays an integer, a key stays absent
    assert [r.get("id") for r in rows] == [17, 18, 19, None] and "id" not in rows[3] and "tag" not in rows[0]
    assert rows[1]["label"] is None and rows[1]["scores"] is None
    assert rows[2]["scores"] == pytest.approx(want[1]["scores"], abs=2e-6)
    assert main(["predict", model, "--file", str(src), "--out", str(tmp_path / "p2.csv")]) == 0
    assert [g["id"] for g in csv.DictReader((tmp_path / "p2.csv").open(encoding="utf-8"))] == ["17", "18", "19", ""]
    # a Parquet file's values too: a time to the microsecond
    import pandas as pd

    stamps = pd.to_datetime(["2026-01-02 03:04:05.123456", "2026-01-02 03:04:06.000001"])
    pd.DataFrame({"at": stamps, "text": ["superb charming", "dull, boring"]}).to_parquet(tmp_path / "in.parquet")
    assert main(["predict", model, "--file", str(tmp_path / "in.parquet"), "--out", str(tmp_path / "p3.jsonl")]) == 0
    assert [json.loads(x)["at"] for x in (tmp_path / "p3.jsonl").read_text().splitlines()] == [
        "2026-01-02T03:04:05.123456", "2026-01-02T03:04:06.000001"]
    # Values JSON has no type for: an infinity was written as Infinity (which JSON parsers refuse), and in CSV bytes,
    # decimals and durations got JSON's quotes inside the cell ("x" where a text column gives x).
    import decimal

    pd.DataFrame({"text": ["superb charming", "dull, boring"], "f": [1.5, float("inf")], "b": [b"x", b"y"],
                  "dec": [decimal.Decimal("1.10"), decimal.Decimal("2")], "td": pd.to_timedelta([1, 2], unit="s"),
                  }).to_parquet(tmp_path / "odd.parquet")
    assert main(["predict", model, "--file", str(tmp_path / "odd.parquet"), "--out", str(tmp_path / "odd.jsonl")]) == 0
    strict = [json.loads(x, parse_constant=lambda c: pytest.fail(f"{c} is not JSON")) for x in (tmp_path / "odd.jsonl").read_text().splitlines()]
    assert [(r["f"], r["b"], r["dec"], r["td"]) for r in strict] == [(1.5, "x", "1.10", "0:00:01"), (None, "y", "2.00", "0:00:02")]  # a decimal column has one scale
    assert main(["predict", model, "--file", str(tmp_path / "odd.parquet"), "--out", str(tmp_path / "odd.csv")]) == 0
    cells = [(g["f"], g["b"], g["dec"], g["td"]) for g in csv.DictReader((tmp_path / "odd.csv").open(encoding="utf-8"))]
    assert cells == [("1.5", "x", "1.10", "0:00:01"), ("", "y", "2.00", "0:00:02")]
    # on the screen, row i is still line i
    capsys.readouterr()
    assert main(["predict", model, "--file", str(src)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and lines[1] == "-\t\t(row 2: no text)" and lines[2].startswith(want[1]["label"])
    # a table with no text at all, or a column of numbers, is refused with its row
    (tmp_path / "none.csv").write_text("id,text\n1,\n2, \n", encoding="utf-8")
    assert main(["predict", model, "--file", str(tmp_path / "none.csv")]) == 2
    assert "no row has text in column 'text'; name the column with --text-column" in capsys.readouterr().err
    (tmp_path / "num.jsonl").write_text('{"text": "fine"}\n{"text": 5}\n', encoding="utf-8")
    assert main(["predict", model, "--file", str(tmp_path / "num.jsonl"), "--out", str(tmp_path / "n.csv")]) == 2
    assert "row 2: column 'text' holds 5 (int), not text" in capsys.readouterr().err and not (tmp_path / "n.csv").exists()

def test_cli_errors_are_one_line_with_exit_2(trained, tmp_path, capsys):
    _, result = trained
    assert main(["predict", str(tmp_path / "missing"), "x"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "model folder not found" in err and "\n" not in err
    assert main(["train", "--train.lr", "-1", "--epoch", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert "did you mean 'epochs'" in err and "train.lr must be > 0" in err and "\n" not in err


def test_cli_output_paths_and_columns(trained, tmp_path, capsys):
    root, result = trained
    model = str(result.output_dir)

    def fails(args: list[str], piece: str) -> None:
        assert main(args) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and piece in err and "\n" not in err, err

    # --out in a folder that does not exist yet: made, as embed and evaluate make theirs
    assert main(["predict", model, "superb charming", "--out", str(tmp_path / "new" / "p.csv")]) == 0
    assert (tmp_path / "new" / "p.csv").is_file() and not list((tmp_path / "new").glob("*.partial"))
    assert "replacing" not in capsys.readouterr().out
    assert main(["predict", model, "dull", "--out", str(tmp_path / "new" / "p.csv")]) == 0  # replaced, as `>` would, and said
    assert capsys.readouterr().out.strip() == f"1 predictions written to {tmp_path / 'new' / 'p.csv'} (replacing the file that was there)"
    fails(["evaluate", model, str(root / "test.csv"), "--out", str(tmp_path)], f"--out {tmp_path} is a folder; give a file name ending in .json")
    fails(["predict", model, "x", "--out", str(tmp_path)], "is a folder; give a file name ending in .csv or .jsonl")
    fails(["predict", str(root / "test.csv"), "x"], "is a file, not a model folder")
    fails(["predict", model, "--file", str(tmp_path)], "is a folder; give a .txt")
    # data laid out with other column names: evaluate says which of its own options to pass, and they work
    renamed = tmp_path / "renamed.csv"
    renamed.write_text((root / "test.csv").read_text().replace("text,label", "review,stars", 1))
    fails(["evaluate", model, str(renamed)], "no column 'text' (columns: review, stars); did you mean 'review'? set it with --text-column review")
    assert main(["evaluate", model, str(renamed), "--text-column", "review", "--label-column", "stars", "--out",
                 str(tmp_path / "m" / "metrics.json")]) == 0
    assert json.loads((tmp_path / "m" / "metrics.json").read_text())["n"] == 60
    # predict reads a table file's text column as the model was trained (here: text), so no --text-column is needed
    capsys.readouterr()
    assert main(["predict", model, "--file", str(root / "test.csv")]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 60


@pytest.mark.parametrize("content", ['{"temperature": -1}', '{"temperature": 0}', '{"temperature": null}', "[1.5]", "{not json"])
def test_an_unusable_calibration_file_is_an_error_not_ignored(trained, tmp_path, content):
    import shutil

    _, result = trained
    folder = shutil.copytree(result.output_dir, tmp_path / "model")
    (folder / "calibration.json").write_text(content)
    problem = "not readable JSON" if content == "{not json" else "'temperature' must be a positive number"
    with pytest.raises(UserError, match=f"calibration.json: {problem}"):
        taskembed.load(folder)


def test_existing_output_dir_is_refused_before_training(trained, capsys):
    root, result = trained
    assert main(["train", "--data.source", str(root / "train.csv"), "--output.dir", str(result.output_dir)]) == 2
    out, err = capsys.readouterr()
    assert "already exists" in err
    # the run's header lists what it trains, on what, where to, and what differs from the defaults; not all ~70 settings
    settings = [line.strip() for line in out.splitlines()[1:] if line.startswith("  ")]
    assert settings == [f"data.source: {root / 'train.csv'}", "model.name: sentence-transformers/all-MiniLM-L6-v2",
                        f"output.dir: {result.output_dir}"]


def test_output_dir_rules_empty_is_taken_and_overwrite_replaces_only_a_model_folder(tiny_overrides, write_csv, tmp_path, capsys):
    path = write_csv(make_rows(48, seed=3))
    base = {**tiny_overrides, "data.source": str(path), "train.epochs": 1, "output.baselines": False}
    # an empty folder made beforehand (mkdir -p runs/x) is no conflict, without overwrite
    empty = tmp_path / "made-beforehand"
    empty.mkdir()
    res = taskembed.train(None, {**base, "output.dir": str(empty)}, progress=False, echo=lambda _m: None)
    assert res.output_dir == empty and (empty / "model.safetensors").is_file()
    # overwrite replaces a model folder ...
    res = taskembed.train(None, {**base, "output.dir": str(empty), "output.overwrite": True}, progress=False, echo=lambda _m: None)
    assert (res.output_dir / "training_config.json").is_file()
    # ... but never a folder of other files, which it would delete: refused before training, files untouched
    mine = tmp_path / "project"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    assert main(["train", "--data.source", str(path), "--model.name", base["model.name"], "--output.dir", str(mine),
                 "--output.overwrite", "true"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: output.dir {mine} holds files taskembed did not write (no training_config.json); "
                   "--output.overwrite true replaces only a folder taskembed wrote: choose another --output.dir or empty this one")
    # without the flag, the same advice at once: offering --output.overwrite would only lead to the refusal above
    assert main(["train", "--data.source", str(path), "--model.name", base["model.name"], "--output.dir", str(mine)]) == 2
    assert capsys.readouterr().err.strip() == err
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"] and (mine / "notes.txt").read_text() == "mine"
    # a symbolic link is named as one, before training (an empty folder behind it would otherwise fail at the end)
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert main(["train", "--data.source", str(path), "--model.name", base["model.name"], "--output.dir", str(tmp_path / "link")]) == 2
    assert "is a symbolic link; give the folder it points to" in capsys.readouterr().err


def test_training_is_repeatable_on_cpu(tiny_overrides, write_csv, tmp_path):
    path = write_csv(make_rows(64, seed=5))
    overrides = {**tiny_overrides, "data.source": str(path), "train.epochs": 1, "output.baselines": False}
    weights = []
    for run in ("a", "b"):
        res = taskembed.train(None, {**overrides, "output.dir": str(tmp_path / run)}, progress=False, echo=lambda _m: None)
        weights.append(load_file(res.output_dir / "model.safetensors"))
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_sentence_pairs_and_early_stopping(tiny_overrides, write_csv):
    rows = [{"premise": r["text"], "hypothesis": "the film", "label": r["label"]} for r in make_rows(80, seed=7)]
    path = write_csv(rows)
    overrides = {**tiny_overrides, "data.source": str(path), "data.text_column": "premise", "data.text_pair_column": "hypothesis",
                 "train.epochs": 6, "train.eval_every": 2, "train.early_stopping_patience": 1, "train.lr": 1e-6, "train.head_lr": 1e-6}
    res = taskembed.train(None, overrides, progress=False, echo=lambda _m: None)
    log = [json.loads(x) for x in (res.output_dir / "log.jsonl").read_text().splitlines()]
    evals = [e for e in log if e["kind"] == "eval"]
    run = json.loads((res.output_dir / "run.json").read_text())
    # With rates this small the score cannot improve for long: early stopping must end the run before 6 epochs.
    assert run["stopped_early"] is True
    assert evals[-1]["step"] < 6 * (72 // 16)


def test_the_validation_loss_can_pick_the_weights_and_min_delta_sets_what_counts_as_better(tiny_overrides, write_csv):
    path = write_csv(make_rows(96, seed=5))
    base = {**tiny_overrides, "data.source": str(path), "data.validation_fraction": 0.25, "train.epochs": 4, "train.eval_every": 2}

    def run(name, **extra):
        res = taskembed.train(None, {**base, "output.dir": str(Path(tiny_overrides["output.dir"]).parent / name), **extra},
                              progress=False, echo=lambda _m: None)
        evals = [e for e in map(json.loads, (res.output_dir / "log.jsonl").read_text().splitlines()) if e["kind"] == "eval"]
        return res, evals, json.loads((res.output_dir / "metrics.json").read_text())["best_step"]

    # loss: lower is better, so the kept weights are those of the lowest validation loss (the first such evaluation).
    _, evals, best = run("loss", **{"train.metric": "loss"})
    lowest = min(e["loss"] for e in evals)
    assert best == next(e["step"] for e in evals if e["loss"] == lowest)
    assert len({e["loss"] for e in evals}) > 1  # the choice was a real one
    # A min_delta no gain can beat: the first evaluation stays the best, and with patience 1 the second one ends the run.
    res, evals, best = run("delta", **{"train.early_stopping_min_delta": 1.0, "train.early_stopping_patience": 1})
    assert best == evals[0]["step"] and len(evals) == 2
    assert json.loads((res.output_dir / "run.json").read_text())["stopped_early"] is True
    # The card says where the run stopped, not only where its best weights were.
    card = (res.output_dir / "README.md").read_text()
    assert f"at optimizer step {best}; stopped early at step {evals[1]['step']} (train.early_stopping_patience)" in card


@pytest.mark.parametrize("validation", [0.25, 0.0])
def test_an_update_that_diverges_on_the_last_step_is_not_saved(tiny_overrides, write_csv, capsys, validation):
    # One step: its loss and gradient are finite, the update is not sane, and no later step's loss would show it.
    # With validation the epoch's evaluation sees it; without, the weights or the test logits do.
    path = write_csv(make_rows(48, seed=4))
    args = ["train", "--data.source", str(path), *[f"--{k}={v}" for k, v in tiny_overrides.items()],
            "--train.lr=1e8", "--train.head_lr=1e8", "--train.warmup_ratio=0", "--train.batch_size=64", "--train.epochs=1",
            f"--data.validation_fraction={validation}", "--data.test_fraction=0.25"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "not finite" in err and "lower train.lr" in err and "Traceback" not in err
    assert not __import__("pathlib").Path(tiny_overrides["output.dir"]).exists()


def test_a_validation_split_of_one_class_trains_without_the_embedding_report(tiny_overrides, write_csv):
    # The report measures how classes separate; with one class it cannot, and a run must not fail after training for it.
    train = write_csv(make_rows(48, seed=6), "train.csv")
    val = write_csv([r for r in make_rows(16, seed=9) if r["label"] == "pos"], "val.csv")
    said = []
    overrides = {**tiny_overrides, "data.source": str(train), "data.validation": str(val), "train.epochs": 1}
    res = taskembed.train(None, overrides, progress=False, echo=said.append)
    assert any("no embedding report" in m and "'pos'" in m for m in said)
    assert (res.output_dir / "model.safetensors").is_file() and not (res.output_dir / "embedding_report.json").exists()


def test_test_examples_that_are_also_training_examples_are_counted_and_said(tiny_overrides, write_csv):
    rows, new = make_rows(48, seed=6), make_rows(11, seed=99)
    assert not {r["text"] for r in new} & {r["text"] for r in rows}  # these 11 are new texts
    train = write_csv(rows, "train.csv")
    # 5 texts of the training file, one with spaces around it, and the 11 new ones
    test = write_csv([rows[0], rows[3], rows[7], rows[9], {**rows[11], "text": f"  {rows[11]['text']} "}, *new], "test.csv")
    said = []
    validation = write_csv(new[:6], "validation.csv")  # new texts: nothing to say of them
    overrides = {**tiny_overrides, "data.source": str(train), "data.test": str(test), "data.validation": str(validation), "train.epochs": 1}
    res = taskembed.train(None, overrides, progress=False, echo=said.append)
    assert [m for m in said if "also in the training data" in m] == [
        f"note: 5 of the 16 test examples are also in the training data, so their scores overstate accuracy on new text ({test})"]
    assert json.loads((res.output_dir / "run.json").read_text())["data"]["seen_in_train"] == {"validation": 0, "test": 5}


def test_splits_seen_in_train_are_told_validation_first_whatever_order_they_were_carved_in():
    import pandas as pd

    from taskembed.data import Splits

    frame = pd.DataFrame({"text": ["a", "b"], "label": ["x", "y"]})
    splits = Splits(frames={"train": frame, "test": frame.head(1), "validation": frame}, labels=["x", "y"], origin={})
    assert list(splits.seen_in_train().items()) == [("validation", 2), ("test", 1)]


def test_a_text_with_two_labels_and_a_label_with_one_example_are_said(tiny_overrides):
    # A re-routed ticket exported twice, once in train and once in the carved validation: a note, never a merge.
    import pandas as pd

    from taskembed.api import check_data
    from taskembed.config import load_config
    from taskembed.data import Splits

    train = pd.DataFrame({"text": ["where is my parcel", "reset my password", "refund please", "open"], "label": ["ship", "pw", "refund", "pw"]})
    validation = pd.DataFrame({"text": [" where is my parcel", "refund please"], "label": ["billing", "refund"]})
    splits = Splits(frames={"train": train, "validation": validation}, labels=["billing", "pw", "refund", "ship"],
                    origin={"train": "t.csv", "validation": "t.csv (carved 10% of train, seed 0)"})
    assert splits.conflicting_labels() == [("where is my parcel", ["billing", "ship"], ["train", "validation"])]
    said: list[str] = []
    check_data(load_config(None, tiny_overrides), splits, said.append)
    assert "note: 1 text(s) of the data have two or more labels (such as 'where is my parcel': billing, ship); the model cannot " \
           "learn both, and scores count either against it: fix the labels or drop one of the rows in t.csv" in said
    # and 'ship' and 'refund' have one training example each ('billing' none: validation's is said as never in training)
    assert "note: 2 label(s) have a single training example (refund, ship); the model can hardly learn a class from one: add " \
           "examples, or merge or drop the label" in said
    said.clear()
    for sampled in ({"data.max_train_per_label": 1}, {"data.max_train_samples": 4}):  # few-shot or a sample: by design
        check_data(load_config(None, {**tiny_overrides, **sampled}), splits, said.append)
    assert not any("single training example" in m for m in said)
    # a conflict within a validation file is said with that file's name
    clean = train.assign(text=["a", "b", "c", "d"])
    inside = Splits(frames={"train": clean, "validation": pd.DataFrame({"text": ["ok film", "ok film"], "label": ["pw", "ship"]})},
                    labels=splits.labels, origin={"train": "t.csv", "validation": "v.csv"})
    said.clear()
    check_data(load_config(None, tiny_overrides), inside, said.append)
    assert any(m.startswith("note: 1 text(s) of the data have two or more labels (such as 'ok film': pw, ship)") and m.endswith("in v.csv")
               for m in said), said
    # the same text with a different second text is another example
    pairs = Splits(frames={"train": train.assign(text_pair=["a", "b", "c", "d"]), "validation": validation.assign(text_pair=["x", "c"])},
                   labels=splits.labels, origin={})
    assert pairs.conflicting_labels() == []


def test_labels_that_differ_only_in_case_or_number_format_are_said_and_recorded(tiny_overrides, write_csv):
    rows = make_rows(48, seed=6)
    for r in rows[::3]:
        r["label"] = r["label"].upper()  # 'POS' beside 'pos', 'NEG' beside 'neg'
    for i in (1, 4, 7, 10, 13, 16):
        rows[i]["label"], rows[i + 1]["label"] = "1", "1.0"
    train = write_csv(rows, "train.csv")
    said = []
    res = taskembed.train(None, {**tiny_overrides, "data.source": str(train), "train.epochs": 1}, progress=False, echo=said.append)
    assert [m for m in said if m.startswith("note: labels")] == [
        f"note: labels '1' and '1.0' are one number written differently; they are 2 classes. If they mean one, write them one way in {train}",
        f"note: labels 'NEG' and 'neg' differ only in case; they are 2 classes. If they mean one, write them one way in {train}",
        f"note: labels 'POS' and 'pos' differ only in case; they are 2 classes. If they mean one, write them one way in {train}"]
    run = json.loads((res.output_dir / "run.json").read_text())
    assert run["data"]["lookalike_labels"] == [["1", "1.0"], ["NEG", "neg"], ["POS", "pos"]]
    assert run["labels"] == ["1", "1.0", "NEG", "POS", "neg", "pos"]  # never merged


def test_a_pair_model_predicts_from_both_texts(tiny_overrides, write_csv, tmp_path, capsys):
    # The label is in the second text only: predicting from the first texts alone would answer another question.
    rows = [{"premise": "the film", "hypothesis": r["text"], "label": r["label"]} for r in make_rows(64, seed=8)]
    path = write_csv(rows)
    overrides = {**tiny_overrides, "data.source": str(path), "data.text_column": "premise", "data.text_pair_column": "hypothesis",
                 "train.epochs": 1, "output.baselines": False}
    folder = taskembed.train(None, overrides, progress=False, echo=lambda _m: None).output_dir
    clf = taskembed.load(folder)
    texts, pairs = [r["premise"] for r in rows[:12]], [r["hypothesis"] for r in rows[:12]]
    want = clf.predict(texts, pairs)
    with pytest.raises(UserError, match="trained on text pairs"):
        clf.predict(texts)
    with pytest.raises(UserError, match="12 texts but 11 second texts"):
        clf.predict(texts, pairs[:11])
    sample = write_csv(rows[:12], "sample.csv")
    out = tmp_path / "pred.csv"
    assert main(["predict", str(folder), "--file", str(sample), "--out", str(out)]) == 0
    got = list(csv.DictReader(out.open(encoding="utf-8")))
    assert [g["hypothesis"] for g in got] == pairs  # the table's own columns, then the prediction's
    assert list(got[0])[:3] == ["premise", "hypothesis", "input_label"] and "label" in got[0]
    assert [float(g["score"]) for g in got] == pytest.approx([w["score"] for w in want], abs=2e-6)
    capsys.readouterr()
    assert main(["predict", str(folder), "a text without its second text"]) == 2
    assert "reads text pairs" in capsys.readouterr().err
    (tmp_path / "t.txt").write_text("one\ntwo\n", encoding="utf-8")
    assert main(["predict", str(folder), "--file", str(tmp_path / "t.txt")]) == 2
    assert "a .txt file cannot hold" in capsys.readouterr().err



def test_the_api_gives_back_the_callers_random_state_threads_and_transformers_verbosity(tiny_overrides, write_csv, trained):
    # In a notebook, training (which seeds every global generator) must not leave an unseeded df.sample() repeating itself
    # in every session, nor torch on train.num_threads, nor the user's transformers warnings off.
    import random

    import numpy as np
    from transformers.utils import logging as hf_logging

    path = write_csv(make_rows(48, seed=4))
    threads = torch.get_num_threads()
    hf_logging.set_verbosity_warning()
    hf_logging.enable_progress_bar()

    def draws() -> tuple:
        return random.random(), float(np.random.rand()), float(torch.rand(1))

    try:
        random.seed(123), np.random.seed(123), torch.manual_seed(123)
        want = draws()
        random.seed(123), np.random.seed(123), torch.manual_seed(123)
        taskembed.train(None, {**tiny_overrides, "data.source": str(path), "train.epochs": 1, "train.num_threads": threads + 1,
                               "output.baselines": False}, progress=False, echo=None)
        assert draws() == want
        assert torch.get_num_threads() == threads
        assert hf_logging.get_verbosity() == hf_logging.WARNING and hf_logging.is_progress_bar_enabled()
        random.seed(5), np.random.seed(5), torch.manual_seed(5)
        want = draws()
        random.seed(5), np.random.seed(5), torch.manual_seed(5)
        taskembed.load(trained[1].output_dir).predict(["superb"])
        assert draws() == want and hf_logging.get_verbosity() == hf_logging.WARNING
    finally:
        torch.set_num_threads(threads)


def test_a_tie_on_the_validation_metric_goes_to_the_lower_validation_loss(tiny_overrides, write_csv):
    # Four validation texts: accuracy ties for evaluation after evaluation while the loss still falls. Keeping the first
    # of a tie kept a few-shot model after its warm-up step; the lower loss now takes it, and the patience still counts.
    path = write_csv(make_rows(40, seed=5))
    said: list[str] = []
    res = taskembed.train(None, {**tiny_overrides, "data.source": str(path), "data.validation_fraction": 0.1, "train.eval_every": 1,
                                 "train.epochs": 3, "train.batch_size": 8, "train.lr": 1e-4, "train.head_lr": 1e-3,
                                 "output.baselines": False, "output.embedding_report": False}, progress=False, echo=said.append)
    evals = [e for e in map(json.loads, (res.output_dir / "log.jsonl").read_text().splitlines()) if e["kind"] == "eval"]
    best = None  # the rule, replayed on the log: a higher accuracy, or the same one at a lower loss
    for e in evals:
        if best is None or e["accuracy"] > best["accuracy"] or (e["accuracy"] == best["accuracy"] and e["loss"] < best["loss"]):
            best = e
    assert any(line.startswith("note: the best weights are chosen on 4 validation text(s), where one text is 25 points of accuracy; ")
               for line in said)
    ties = [line for line in said if line.endswith(": a tie, kept for its lower validation loss)")]
    assert ties and best["step"] > evals[0]["step"]  # the case this test is for did happen
    assert json.loads((res.output_dir / "metrics.json").read_text())["best_step"] == best["step"]


def test_a_tie_within_min_delta_keeps_the_weights_but_not_the_value_gains_count_from(tiny_overrides, write_csv, monkeypatch):
    # Validation scores given in turn: 0.805 ties 0.80 (a gain within min_delta 0.01, a lower loss), so its weights are
    # kept; 0.812 is then a gain of 0.012 over 0.80, not a tie with 0.805, and the run goes on to 0.85. Counting gains
    # from the tie's 0.805 made 0.812 a second tie, and patience 2 stopped the run there.
    from taskembed import loop

    given = iter([(0.80, 0.50), (0.805, 0.45), (0.812, 0.44), (0.85, 0.30)])

    def scripted(*_a, **_k):
        acc, loss = next(given)
        return {"accuracy": acc, "macro_f1": acc, "loss": loss}

    monkeypatch.setattr(loop, "evaluate_encoded", scripted)
    path = write_csv(make_rows(40, seed=5))
    res = taskembed.train(None, {**tiny_overrides, "data.source": str(path), "data.validation_fraction": 0.2, "train.eval_every": 1,
                                 "train.epochs": 1, "train.batch_size": 8, "train.early_stopping_patience": 2,
                                 "train.early_stopping_min_delta": 0.01, "output.baselines": False, "output.embedding_report": False},
                          progress=False, echo=None)
    assert json.loads((res.output_dir / "metrics.json").read_text())["best_step"] == 4
    assert next(given, None) is None  # all four evaluations ran: no early stop


def test_a_tie_never_keeps_weights_that_score_below_the_kept_ones(tiny_overrides, write_csv, monkeypatch):
    # 0.84 ties 0.80 within min_delta 0.05 at a lower loss: kept. 0.82 at a lower loss still is within 0.05 of 0.80, but
    # below the kept 0.84: measured from 0.80 alone it replaced them, and the line said "best 0.8000" of weights at 0.84.
    from taskembed import loop

    given = iter([(0.80, 0.50), (0.84, 0.48), (0.82, 0.44), (0.83, 0.46)])

    def scripted(*_a, **_k):
        acc, loss = next(given)
        return {"accuracy": acc, "macro_f1": acc, "loss": loss}

    monkeypatch.setattr(loop, "evaluate_encoded", scripted)
    path = write_csv(make_rows(40, seed=5))
    said: list[str] = []
    res = taskembed.train(None, {**tiny_overrides, "data.source": str(path), "data.validation_fraction": 0.2, "train.eval_every": 1,
                                 "train.epochs": 1, "train.batch_size": 8, "train.early_stopping_min_delta": 0.05,
                                 "output.baselines": False, "output.embedding_report": False}, progress=False, echo=said.append)
    assert json.loads((res.output_dir / "metrics.json").read_text())["best_step"] == 2
    lines = [line for line in said if line.startswith("step ")]
    assert lines == ["step 1: validation accuracy 0.8000 (best 0.8000 at step 1)",
                     "step 2: validation accuracy 0.8400 (best 0.8400 at step 2: a tie, kept for its lower validation loss)",
                     "step 3: validation accuracy 0.8200 (best 0.8400 at step 2)",
                     "step 4: validation accuracy 0.8300 (best 0.8400 at step 2)"]


def test_training_says_how_many_texts_data_max_length_cuts(tiny_overrides, write_csv):
    path = write_csv(make_rows(40, seed=5))
    said: list[str] = []
    res = taskembed.train(None, {**tiny_overrides, "data.source": str(path), "data.max_length": 8, "train.epochs": 1,
                                 "output.baselines": False, "output.embedding_report": False}, progress=False, echo=said.append)
    data = json.loads((res.output_dir / "run.json").read_text())["data"]
    assert data["truncated"]["train"] > 0  # the case this test is for
    counts = ", ".join(f"{n:,} of {data['summary'][s]['rows']:,} {s}" for s, n in data["truncated"].items() if n)
    assert f"note: texts longer than data.max_length 8 tokens are read up to it ({counts}); a longer data.max_length" in " ".join(said)

def test_non_finite_loss_stops_with_the_step(tiny_overrides, write_csv, capsys):
    path = write_csv(make_rows(64, seed=3))
    args = ["train", "--data.source", str(path)] + [f"--{k}={v}" for k, v in tiny_overrides.items()]
    args += ["--train.lr=1e30", "--train.head_lr=1e30", "--train.max_grad_norm=0", "--train.warmup_ratio=0"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "is not finite" in err and "step " in err and "rates were" in err
    # One rate a group (its /no_decay half shares it), the bottom and the top when there are many: the advice stays in sight.
    assert "no_decay" not in err
    assert __import__("re").search(r"rates were embeddings=[\d.e+]+, layer\.1=[\d.e+]+, layer\.2=[\d.e+]+, head=[\d.e+]+; lower train\.lr", err), err
    assert not (tiny_overrides["output.dir"] and __import__("pathlib").Path(tiny_overrides["output.dir"]).exists())


def test_a_model_below_the_tfidf_baseline_is_said_to_be_under_trained(tiny_overrides, write_csv, monkeypatch):
    # A walk-through's 800-text intent run scored 71.43 / 55.00 against TF-IDF's 92.09 / 84.92, its row in bold, unremarked.
    import taskembed.api as api

    real = api.baselines
    level = {"accuracy": 1.0, "macro_f1": 1.0}

    def strong(*args, **kwargs):  # the bag of words at a chosen level, on every split
        return {s: {**b, "tfidf_logreg": dict(level)} for s, b in real(*args, **kwargs).items()}

    monkeypatch.setattr(api, "baselines", strong)
    rows = make_rows(240, seed=1)
    for row in rows[::10] + rows[1::10]:  # some wrong labels of each class, so that the model cannot be right on all of validation
        row["label"] = {"neg": "pos", "pos": "neg"}[row["label"]]
    overrides = {**tiny_overrides, "data.source": str(write_csv(rows)), "train.epochs": 3, "train.lr": 3e-3, "train.head_lr": 5e-3,
                 "output.calibrate": False, "output.embedding_report": False, "output.error_analysis": False}
    said: list[str] = []
    res = taskembed.train(None, overrides, progress=False, echo=said.append)
    v = res.metrics["validation"]
    assert v["accuracy"] < 1.0 and v["accuracy"] > res.baselines["validation"]["majority"]["accuracy"]  # the case holds
    notes = [m for m in said if "below the TF-IDF" in m]
    assert len(notes) == 1 and notes[0].startswith("note: the model scores below the TF-IDF + logistic regression baseline on "
                                                   f"validation ({100 * v['accuracy']:.2f}% against 100.00%")
    level.update(accuracy=0.0, macro_f1=0.0)
    said.clear()
    taskembed.train(None, {**overrides, "output.overwrite": True}, progress=False, echo=said.append)
    assert not [m for m in said if "below the TF-IDF" in m]


def test_a_model_below_the_majority_class_is_said_to_have_learnt_nothing(tiny_overrides, write_csv, monkeypatch):
    # A rate far too high can leave the loss finite but climbing: the folder is saved, with a note, not as a success.
    import taskembed.api as api

    real = api.metrics_from_logits

    def worse(logits, y, labels):
        m = real(logits, y, labels)
        return {**m, **({"accuracy": 0.0, "macro_f1": 0.0} if both else {"accuracy": 0.0})}  # below any majority baseline

    both = True
    said: list[str] = []
    overrides = {**tiny_overrides, "data.source": str(write_csv(make_rows(240, seed=1))), "train.epochs": 3, "train.lr": 3e-3, "train.head_lr": 5e-3,
                 "output.calibrate": False, "output.embedding_report": False, "output.error_analysis": False}
    res = taskembed.train(None, overrides, progress=False, echo=said.append)
    assert res.metrics["validation"]["accuracy"] > res.baselines["validation"]["majority"]["accuracy"]  # it learnt: no note
    assert not [m for m in said if "no better than always answering" in m]
    monkeypatch.setattr(api, "metrics_from_logits", worse)
    taskembed.train(None, {**overrides, "output.overwrite": True}, progress=False, echo=said.append)
    notes = [m for m in said if "no better than always answering" in m]
    assert len(notes) == 1 and notes[0].startswith("note: the model scores no better than always answering the most common class on validation (0.00% against")
    # lower accuracy with a better macro-F1 (what balanced class weights buy for the small classes) is no failure
    both = False
    taskembed.train(None, {**overrides, "output.overwrite": True}, progress=False, echo=said.append)
    assert len([m for m in said if "no better than always answering" in m]) == 1
    # Nor is a validation split of 16 texts, where the comparison is chance (it fired on a split of one text).
    both = True
    small = {**overrides, "data.source": str(write_csv(make_rows(160, seed=1))), "output.overwrite": True}
    assert taskembed.train(None, small, progress=False, echo=said.append).metrics["validation"]["n"] == 16
    assert len([m for m in said if "no better than always answering" in m]) == 1
    # The majority class is the measure with output.baselines off too (the note was said only with the baselines on).
    said.clear()
    write_csv(make_rows(240, seed=1))  # the file the small run replaced
    res = taskembed.train(None, {**overrides, "output.overwrite": True, "output.baselines": False}, progress=False, echo=said.append)
    assert res.baselines is None
    assert len([m for m in said if "no better than always answering" in m]) == 1, said


def test_a_run_without_validation_or_test_says_nothing_was_scored_instead_of_an_empty_table():
    from taskembed.artifacts import metrics_table

    assert metrics_table({}, None).startswith("No validation or test split, so nothing was scored")
    assert metrics_table({"test": {"accuracy": 0.5, "macro_f1": 0.4}}, None).splitlines()[2] == "| test | **fine-tuned** | **50.00** | **40.00** |"


def test_a_trained_folder_as_model_name_gives_its_encoder_and_a_fresh_head(trained, tiny_model_dir, tmp_path, write_csv):
    # Another label count was refused as a damaged folder; the same count silently kept the old run's head.
    from safetensors.torch import load_file

    from taskembed.config import ModelConfig
    from taskembed.modeling import load_classifier

    _, result = trained
    old = load_file(str(result.output_dir / "model.safetensors"))
    torch.manual_seed(0)
    model, _ = load_classifier(ModelConfig(name=str(result.output_dir)), ["neg", "pos"])
    torch.manual_seed(0)
    fresh, _ = load_classifier(ModelConfig(name=str(tiny_model_dir)), ["neg", "pos"])
    assert torch.equal(model.classifier.weight, fresh.classifier.weight)  # the head a base encoder gets from this seed
    assert not torch.equal(model.classifier.weight, old["classifier.weight"])
    assert torch.equal(model.bert.encoder.layer[0].output.dense.weight, old["bert.encoder.layer.0.output.dense.weight"])
    torch.manual_seed(0)  # another label count: loaded (it was refused as damage), its head the one the seed gives
    other = load_classifier(ModelConfig(name=str(result.output_dir)), ["a", "b", "c"])[0].classifier.weight
    torch.manual_seed(0)
    assert torch.equal(other, load_classifier(ModelConfig(name=str(tiny_model_dir)), ["a", "b", "c"])[0].classifier.weight)
    # an encoder tensor of another size is still damage, not a layer to start at random
    from safetensors.torch import save_file

    bad = tmp_path / "bad"
    shutil.copytree(result.output_dir, bad)
    save_file({**old, "bert.encoder.layer.0.output.dense.weight": torch.zeros(32, 3)}, str(bad / "model.safetensors"))
    with pytest.raises(taskembed.UserError, match="its weights do not fit its config.json .bert.encoder.layer.0.output.dense.weight"):
        load_classifier(ModelConfig(name=str(bad)), ["neg", "pos"])
    said: list[str] = []
    rows = make_rows(60, labels=("neg", "pos", "meh"))
    res = taskembed.train(None, {"data.source": str(write_csv(rows)), "model.name": str(result.output_dir), "data.max_length": 32,
                                 "output.dir": str(tmp_path / "again"), "train.epochs": 1, "train.bf16": "off",
                                 "output.embedding_report": False}, progress=False, echo=said.append)
    assert json.loads((res.output_dir / "config.json").read_text())["id2label"] == {"0": "meh", "1": "neg", "2": "pos"}
    assert any(m.startswith(f"note: {result.output_dir} is a trained classifier: training starts from its encoder") for m in said)


def test_several_text_columns_are_joined_alike_in_training_predict_evaluate_and_embed(tiny_overrides, tmp_path, capsys):
    # run_classification.py --text_column_names: a title and a body, say, joined into one text.
    import numpy as np
    import pandas as pd

    from taskembed.config import load_config
    from taskembed.embed import embed, embed_file, load_vectors

    rows = make_rows(120, seed=3)
    table = pd.DataFrame({"title": [r["text"].split(" ", 1)[0] for r in rows], "body": [r["text"].split(" ", 1)[1] for r in rows],
                          "label": [r["label"] for r in rows]})
    table.loc[3, "title"] = None  # an empty cell is left out of the join
    path = tmp_path / "posts.csv"
    table.to_csv(path, index=False)
    joined = [(f"{t} {b}" if isinstance(t, str) else b) for t, b in zip(table["title"], table["body"])]
    res = taskembed.train(None, {**tiny_overrides, "data.source": str(path), "data.text_columns": "title,body", "data.test_fraction": 0.2,
                                 "train.epochs": 1}, progress=False, echo=None)
    clf = taskembed.load(res.output_dir)
    assert main(["predict", str(res.output_dir), "--file", str(path), "--out", str(tmp_path / "p.csv")]) == 0
    capsys.readouterr()
    written = pd.read_csv(tmp_path / "p.csv")
    assert list(written.columns[:3]) == ["title", "body", "input_label"]  # the table's own columns, as they were
    assert written["input_label"].tolist() == table["label"].tolist()
    assert written["score"].tolist() == pytest.approx([p["score"] for p in clf.predict(joined)], abs=1e-5)
    m = taskembed.evaluate(res.output_dir, str(path), predictions=True)
    assert [r["text"] for r in m["predictions"]] == joined and m["n"] == 120
    embed_file(res.output_dir, path, tmp_path / "v.parquet", progress=False)
    vectors, cols = load_vectors(tmp_path / "v.parquet")
    assert cols["text"] == joined and np.allclose(vectors, embed(res.output_dir, joined), atol=1e-5)
    assert "Its text is the columns `title`, `body` joined with a space" in (res.output_dir / "README.md").read_text()
    # A table without one of the columns says which, and how to give joined texts instead.
    table.drop(columns="title").to_csv(tmp_path / "no_title.csv", index=False)
    for call in (lambda: taskembed.evaluate(res.output_dir, str(tmp_path / "no_title.csv")),
                 lambda: embed_file(res.output_dir, tmp_path / "no_title.csv", tmp_path / "w.parquet", progress=False)):
        with pytest.raises(UserError, match="no column 'title'.*the model reads its text from the columns title, body, joined"):
            call()
    table.loc[5, ["title", "body"]] = None
    table.to_csv(tmp_path / "blank.csv", index=False)
    with pytest.raises(UserError, match="row 6: the text columns 'title', 'body' are all empty; fill one or drop the row"):
        taskembed.evaluate(res.output_dir, str(tmp_path / "blank.csv"))
    # lr-find reads the data as training does, joined.
    curve = taskembed.lr_find(None, {**tiny_overrides, "data.source": str(path), "data.text_columns": "title,body"}, steps=5,
                              out=tmp_path / "lf", progress=False, echo=None).curve
    assert len(curve) == 5
    # A pair model's messages name the joined columns, not the unused text_column.
    pairs = table.assign(hyp="a second text")
    pairs.loc[5, ["title", "body"]] = "restored"
    pairs.to_csv(tmp_path / "pairs.csv", index=False)
    assert main(["train", "--data.source", str(tmp_path / "pairs.csv"), "--data.text_columns", "title,body", "--data.text_pair_column",
                 "hyp", *[f"--{k}={v}" for k, v in tiny_overrides.items() if k != "output.dir"], "--output.dir", str(tmp_path / "pm"),
                 "--train.epochs", "1", "--output.embedding_report", "false", "--no-progress"]) == 0
    assert "(columns 'title', 'body' and 'hyp';" in capsys.readouterr().out
    assert "# columns 'title', 'body' and 'hyp'" in (tmp_path / "pm" / "README.md").read_text()
    assert main(["predict", str(tmp_path / "pm"), "a text"]) == 2
    assert "give them in a table file with the columns 'title', 'body' and 'hyp'" in capsys.readouterr().err
    for bad, says in (({"data.text_columns": "title"}, "joins several columns"),
                      ({"data.text_columns": "title,body", "data.text_column": "body"}, "replaces data.text_column"),
                      ({"data.text_columns": "title,label"}, "must not include the second-text or label columns")):
        with pytest.raises(UserError, match=says):
            load_config(None, bad)


def test_on_log_sees_every_log_entry_as_written_and_the_readmes_tensorboard_snippet_works(tiny_overrides, write_csv, monkeypatch):
    import sys
    import types

    written: list[tuple[str, float, int]] = []

    class FakeWriter:  # tensorboard is not a dependency; this records what the README's function hands it
        def __init__(self, folder):
            self.folder = folder

        def add_scalar(self, tag, value, step):
            written.append((tag, value, step))

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=FakeWriter))
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    snippet = readme.split("from torch.utils.tensorboard import SummaryWriter", 1)[1].split('taskembed.train("configs/sentiment.yaml", {"output.dir": "runs/tracked"}, on_log=to_board)')[0]
    scope: dict = {}
    exec("from torch.utils.tensorboard import SummaryWriter" + snippet, scope)  # noqa: S102 - the README's own code
    seen: list[dict] = []

    def both(entry):
        seen.append(json.loads(json.dumps(entry)))  # as log.jsonl stores it
        scope["to_board"](entry)

    overrides = {**tiny_overrides, "data.source": str(write_csv(make_rows(120, seed=3))), "output.embedding_report": False}
    res = taskembed.train(None, overrides, progress=False, echo=lambda _m: None, on_log=both)
    log = [json.loads(x) for x in (res.output_dir / "log.jsonl").read_text().splitlines()]
    assert seen == log and {e["kind"] for e in log} == {"train", "eval"}
    evals = [e for e in log if e["kind"] == "eval"]
    assert [(t, v, s) for t, v, s in written if t == "eval/accuracy"] == [("eval/accuracy", e["accuracy"], e["step"]) for e in evals]
    assert sum(t == "train/loss" for t, _, _ in written) == sum(e["kind"] == "train" for e in log)


def test_the_progress_line_shows_the_top_layers_rate_not_the_heads(tiny_overrides, write_csv, capsys):
    # A constant rate: the top layer trains at train.lr throughout, the head at its own, higher, train.head_lr.
    taskembed.train(None, {**tiny_overrides, "data.source": str(write_csv(make_rows(48, seed=3))), "train.epochs": 1,
                           "train.lr": 3e-3, "train.head_lr": 5e-2, "train.schedule": "constant", "train.warmup_ratio": 0.0,
                           "output.baselines": False, "output.embedding_report": False}, progress=True, echo=lambda _m: None)
    line = next(x for x in capsys.readouterr().err.splitlines() if x.startswith("train: "))
    assert line.endswith(", lr=3.00e-03"), line


def test_the_rates_of_a_diverged_run_fit_in_a_line():
    from taskembed.loop import rates_summary

    groups = [{"name": n, "lr": lr} for n, lr in [("embeddings", 1e-5), ("embeddings/no_decay", 1e-5)]
              + [(f"layer.{i}{half}", 1e-4 * i) for i in range(1, 7) for half in ("", "/no_decay")] + [("head", 1e-3), ("head/no_decay", 1e-3)]]
    assert rates_summary(groups) == "embeddings=1e-05, (5 more), layer.6=0.0006, head=0.001"
    assert rates_summary(groups[:2] + groups[-2:]) == "embeddings=1e-05, head=0.001"


def test_the_commands_that_load_a_model_take_a_device(trained, tmp_path, capsys, monkeypatch):
    root, result = trained
    model, test = str(result.output_dir), str(root / "test.csv")
    assert main(["predict", model, "superb", "--device", "cpu"]) == 0
    assert main(["evaluate", model, test, "--device", "cpu", "--out", str(tmp_path / "m.json")]) == 0
    assert json.loads((tmp_path / "m.json").read_text())["n"] == 60
    assert main(["embed", model, test, "--out", str(tmp_path / "v.npy"), "--device", "cpu", "--no-progress"]) == 0
    assert main(["compare", model, model, test, "--out", str(tmp_path / "cmp"), "--device", "cpu", "--no-progress"]) == 0
    capsys.readouterr()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on this machine, and said the same on one with a GPU
    for command in (["predict", model, "superb"], ["evaluate", model, test],
                    ["embed", model, test, "--out", str(tmp_path / "w.npy")], ["compare", model, model, test, "--out", str(tmp_path / "c2")]):
        assert main([*command, "--device", "cuda:1"]) == 2, command
        assert capsys.readouterr().err == "error: device 'cuda:1': torch here has no such CUDA GPU (0 found); use cpu\n", command
    assert not (tmp_path / "w.npy").exists() and not (tmp_path / "c2").exists()


def test_train_log_every_sets_how_often_the_loss_is_logged(tiny_overrides, write_csv):
    overrides = {**tiny_overrides, "data.source": str(write_csv(make_rows(120, seed=3))), "output.embedding_report": False}
    res = taskembed.train(None, {**overrides, "train.log_every": 4}, progress=False, echo=None)
    log = [json.loads(x) for x in (res.output_dir / "log.jsonl").read_text().splitlines()]
    last = max(e["step"] for e in log if e["kind"] == "eval")  # evaluated at each epoch's end, the last step included
    assert [e["step"] for e in log if e["kind"] == "train"] == list(range(4, last + 1, 4)) and last >= 12
    with pytest.raises(UserError, match=r"train.log_every must be >= 0 \(got -1\)"):
        taskembed.train(None, {**overrides, "train.log_every": -1}, progress=False, echo=None)


def test_texts_without_words_get_a_character_baseline_and_keep_their_model(tiny_overrides, write_csv, tmp_path, capsys):
    # Emoticons alone: the word TF-IDF's vocabulary was empty, scikit-learn raised after training, and the run ended
    # with a traceback and no model folder (resuming hit it again).
    faces = {"pos": [":)", ":-)", ":D", "^_^", "<3"], "neg": [":(", ":-(", ":'(", ">:(", "D:"]}
    rows = [{"text": " ".join(random.Random(i).choices(faces[label], k=3)), "label": label}
            for i, label in enumerate(["pos", "neg"] * 30)]
    opts = {**tiny_overrides, "data.source": str(write_csv(rows)), "train.epochs": 1, "output.embedding_report": False}
    assert main(["train", "--no-progress", *[f"--{k}={v}" for k, v in opts.items()]]) == 0
    assert "note: the TF-IDF baseline reads character 1-3-grams: no training text has a word" in capsys.readouterr().out
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["baselines"]["validation"]["tfidf_logreg"]["features"].startswith("character 1-3-grams")
    assert "TF-IDF + logistic regression (character n-grams)" in (tmp_path / "out" / "README.md").read_text()


def test_card_tables_keep_their_columns_whatever_the_labels_and_texts_hold(tiny_overrides, write_csv, tmp_path):
    # A label 'billing|refund' shifted every figure after it into the wrong column, and a text's own line breaks
    # ended the errors table at its row.
    rows = make_rows(80)
    for i, r in enumerate(rows):
        r["label"] = {"pos": "billing|refund", "neg": "refund"}[r["label"]]
        r["text"] = r["text"].replace(" ", "\n\n", 1) if i % 3 == 0 else r["text"]
    opts = {**tiny_overrides, "data.source": str(write_csv(rows)), "train.epochs": 1, "data.test_fraction": 0.25,
            "output.embedding_report": False, "output.error_analysis": True}
    folder = taskembed.train(None, opts, progress=False, echo=lambda _m: None).output_dir
    card = (folder / "README.md").read_text()
    tables = [block for block in card.split("\n\n") if block.startswith("|")]
    assert tables
    for table in tables:
        lines = table.splitlines()
        widths = {len(re.split(r"(?<!\\)\|", line)) for line in lines}
        assert len(widths) == 1, table  # every row has the header's cells
    assert "| billing\\|refund |" in card


def test_a_run_without_validation_says_why_it_did_not_calibrate(tiny_overrides, write_csv):
    # configs/fewshot.yaml's way (no validation split): calibration was skipped without a word, in the run or the card.
    said: list[str] = []
    opts = {**tiny_overrides, "data.source": str(write_csv(make_rows(60))), "train.epochs": 1, "data.validation_fraction": 0.0,
            "data.test_fraction": 0.25, "output.embedding_report": False}
    folder = taskembed.train(None, opts, progress=False, echo=said.append).output_dir
    assert "calibration skipped: no validation split to fit the temperature on" in "\n".join(said)
    assert "no validation split to fit the temperature on" in (folder / "README.md").read_text()
    assert not (folder / "calibration.json").exists() and taskembed.load(folder).temperature is None


def test_the_validation_lines_reach_echo_with_progress_on(tiny_overrides, write_csv, capsys):
    # With the progress display on (the Python API's default), "step N: validation ..." went to stdout past `echo`:
    # echo=None did not silence it and a caller's logger never got it.
    opts = {**tiny_overrides, "data.source": str(write_csv(make_rows(60))), "train.epochs": 1, "output.embedding_report": False}
    said: list[str] = []
    capsys.readouterr()
    taskembed.train(None, opts, progress=True, echo=said.append)
    assert any(m.startswith("step ") and ": validation accuracy " in m for m in said), said
    assert ": validation accuracy " not in capsys.readouterr().out
    taskembed.train(None, {**opts, "output.overwrite": True}, progress=True, echo=None)
    assert ": validation accuracy " not in capsys.readouterr().out
