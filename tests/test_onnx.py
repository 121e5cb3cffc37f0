"""ONNX export (taskembed export --format onnx): the graph gives PyTorch's logits, int8 is checked on data, nothing
half-written is left, and what cannot be exported is refused in one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import taskembed
# onnx, onnxscript and onnxruntime come with the dev extra (make test installs it), so these tests run, never skip.
from bench.fault_injection import write_csv as write
from taskembed.cli import main
from tests.conftest import make_rows

from taskembed.embed import Embedder, embed
from taskembed.onnx_export import ONNX_FILE, export_onnx, export_onnx_embeddings, onnx_outputs, session_for

NEW_TEXTS = ["a truly wonderful film", "dull and boring", "not bad at all, really quite good, i liked it a lot", "x"]


def quiet(_message: str) -> None:
    pass


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("onnx")
    train, test = write(root / "train.csv", make_rows(240, seed=1)), write(root / "test.csv", make_rows(80, seed=2))
    overrides = {"data.source": str(train), "data.test": str(test), "data.max_length": 32, "model.name": str(tiny_model_dir),
                 "output.dir": str(root / "model"), "train.epochs": 6, "train.batch_size": 16, "train.lr": 3e-3,
                 "train.head_lr": 5e-3, "train.bf16": "off", "output.embedding_report": False}
    folder = taskembed.train(None, overrides, progress=False, echo=quiet).output_dir
    return root, folder, test


def test_float32_export_gives_pytorchs_logits_on_new_texts(trained, tmp_path):
    _, folder, test = trained
    meta = export_onnx(folder, tmp_path / "onnx", check=str(test))
    out = tmp_path / "onnx"
    assert {ONNX_FILE, "config.json", "tokenizer.json", "taskembed_onnx.json"} <= {p.name for p in out.iterdir()}
    assert not list(tmp_path.glob(".onnx.tmp-*"))
    clf = taskembed.load(folder)
    recorded = json.loads((out / "taskembed_onnx.json").read_text())
    assert recorded["labels"] == clf.labels == meta["labels"] and recorded["weights"] == "float32"
    assert json.loads((out / "config.json").read_text())["id2label"] == {str(i): x for i, x in enumerate(clf.labels)}
    assert meta["max_abs_logit_difference_on_probe_texts"] < 1e-4
    # What a user of the folder does: its own tokenizer, onnxruntime, texts the export never saw, any batch size.
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(out)
    for batch_size in (1, 3):
        mine = onnx_outputs(session_for(out / ONNX_FILE), tok, meta["inputs"], NEW_TEXTS, None, meta["max_length"], batch_size)
        np.testing.assert_allclose(mine, clf.logits(NEW_TEXTS).numpy(), atol=1e-4)
    check = meta["check"]
    expected = taskembed.evaluate(folder, str(test))["accuracy"]
    assert check["examples"] == 80 and check["accuracy_pytorch"] == pytest.approx(100 * expected)
    for batch in ("batch_1", "batch_32"):
        assert check[batch]["same_prediction"] == 100.0 and check[batch]["accuracy_onnx"] == check["accuracy_pytorch"]
    # The saved tokenizer states the run's limit and pads on the right, as taskembed reads texts.
    assert tok.model_max_length == meta["max_length"] == 32 and tok.padding_side == "right"
    with pytest.raises(taskembed.UserError, match="an ONNX export .*run it with onnxruntime"):
        taskembed.load(out)  # not "the folder is incomplete"


def test_int8_is_smaller_and_says_how_far_it_moved(trained, tmp_path):
    _, folder, test = trained
    full = export_onnx(folder, tmp_path / "f32")
    small = export_onnx(folder, tmp_path / "i8", int8=True, check=str(test))
    assert small["weights"].startswith("int8") and full["check"] is None
    # Only the linear layers' weights shrink (4x); on this tiny model the token table is most of the file.
    assert (tmp_path / "i8" / ONNX_FILE).stat().st_size < (tmp_path / "f32" / ONNX_FILE).stat().st_size
    # Quantised weights change the logits; the record says by how much rather than claiming equality.
    assert small["max_abs_logit_difference_on_probe_texts"] > full["max_abs_logit_difference_on_probe_texts"]
    check = small["check"]
    assert check["examples"] == 80
    session = session_for(tmp_path / "i8" / ONNX_FILE)
    clf = taskembed.load(folder)
    rows = taskembed.evaluate(folder, str(test), predictions=True)["predictions"]
    for batch_size in (1, 32):
        logits = onnx_outputs(session, clf.tokenizer, small["inputs"], [r["text"] for r in rows], None, clf.max_length, batch_size)
        agree = np.mean([clf.labels[i] == r["predicted"] for i, r in zip(logits.argmax(1), rows)])
        right = np.mean([clf.labels[i] == r["label"] for i, r in zip(logits.argmax(1), rows)])
        assert check[f"batch_{batch_size}"] == {"same_prediction": pytest.approx(100 * agree), "accuracy_onnx": pytest.approx(100 * right)}


def test_sentence_pair_and_multi_label_models(tmp_path, tiny_model_dir):
    pairs = [{"premise": r["text"], "hypothesis": r["text"][::-1], "label": r["label"]} for r in make_rows(120, seed=4)]
    base = {"model.name": str(tiny_model_dir), "train.epochs": 1, "train.batch_size": 16, "data.max_length": 32, "train.bf16": "off",
            "output.embedding_report": False, "data.validation_fraction": 0.25}
    folder = taskembed.train(None, {**base, "data.source": str(write(tmp_path / "pairs.csv", pairs)), "data.text_column": "premise",
                                    "data.text_pair_column": "hypothesis", "output.dir": str(tmp_path / "pair")},
                             progress=False, echo=quiet).output_dir
    meta = export_onnx(folder, tmp_path / "pair-onnx")
    assert meta["text_pair"] and "token_type_ids" in meta["inputs"]
    clf = taskembed.load(folder)
    second = ["the other text", "and one more", "a third", "four"]
    mine = onnx_outputs(session_for(tmp_path / "pair-onnx" / ONNX_FILE), clf.tokenizer, meta["inputs"], NEW_TEXTS, second, 32)
    np.testing.assert_allclose(mine, clf.logits(NEW_TEXTS, second).numpy(), atol=1e-4)
    # Its vectors too: each text read with its second text, as the model was trained.
    vectors = export_onnx_embeddings(folder, tmp_path / "pair-vectors")
    assert vectors["text_pair"] and "token_type_ids" in vectors["inputs"]
    np.testing.assert_allclose(_vectors(tmp_path / "pair-vectors", NEW_TEXTS, 2, second),
                               Embedder.load(folder).encode(NEW_TEXTS, pairs=second), atol=1e-5)

    tags = [{"text": r["text"], "tags": r["label"] + ("|extra" if i % 3 == 0 else "")} for i, r in enumerate(make_rows(120, seed=5))]
    data = write(tmp_path / "tags.csv", tags)
    folder = taskembed.train(None, {**base, "data.source": str(data), "data.label_column": "tags", "data.multi_label": True,
                                    "data.label_delimiter": "|", "output.dir": str(tmp_path / "multi")}, progress=False, echo=quiet).output_dir
    meta = export_onnx(folder, tmp_path / "multi-onnx", check=str(data))
    assert meta["scores"].startswith("a sigmoid per label; a label is predicted at or over its threshold in thresholds.json") and (tmp_path / "multi-onnx" / "thresholds.json").is_file()
    assert json.loads((tmp_path / "multi-onnx" / "config.json").read_text())["problem_type"] == "multi_label_classification"
    assert meta["check"]["batch_1"]["same_prediction"] == meta["check"]["batch_32"]["same_prediction"] == 100.0
    assert meta["check"]["examples"] == 120


@pytest.mark.parametrize("kind", ["roberta", "distilbert"])
def test_other_families_export_exactly(kind, tmp_path, tiny_model_dir):
    # RoBERTa numbers its positions from input_ids != pad id; DistilBERT has no token types and no pooler.
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(tiny_model_dir)
    sizes = (dict(dim=16, n_layers=2, n_heads=2, hidden_dim=20) if kind == "distilbert" else
             dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=20, pad_token_id=tok.pad_token_id))
    config_class, model_class = {"roberta": (transformers.RobertaConfig, transformers.RobertaForSequenceClassification),
                                 "distilbert": (transformers.DistilBertConfig, transformers.DistilBertForSequenceClassification)}[kind]
    torch.manual_seed(0)
    model = model_class(config_class(vocab_size=len(tok), max_position_embeddings=80, num_labels=3,
                                     id2label={0: "a", 1: "b", 2: "c"}, label2id={"a": 0, "b": 1, "c": 2}, **sizes))
    folder = tmp_path / kind
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    meta = export_onnx(folder, tmp_path / "onnx")
    assert meta["max_abs_logit_difference_on_probe_texts"] < 1e-4
    clf = taskembed.load(folder)
    mine = onnx_outputs(session_for(tmp_path / "onnx" / ONNX_FILE), clf.tokenizer, meta["inputs"], NEW_TEXTS, None, 64)
    np.testing.assert_allclose(mine, clf.logits(NEW_TEXTS).numpy(), atol=1e-4)


def test_the_cli_prints_the_check_and_refuses_in_one_line(trained, tmp_path, capsys):
    _, folder, test = trained
    out = tmp_path / "onnx"
    assert main(["export", str(folder), str(out), "--format", "onnx", "--int8", "--check", str(test)]) == 0
    printed = capsys.readouterr().out
    assert f"ONNX folder written to {out}" in printed and "int8" in printed and "80 examples" in printed
    assert "one text at a time" in printed and "in batches of 32" in printed
    renamed = write(tmp_path / "renamed.csv", [{"review": r["text"], "sentiment": r["label"]} for r in make_rows(20, seed=6)])
    assert main(["export", str(folder), str(tmp_path / "y"), "--format", "onnx", "--check", str(renamed), "--text-column", "review",
                 "--label-column", "sentiment"]) == 0
    assert "20 examples" in capsys.readouterr().out
    cases = [
        (["export", str(folder), str(out), "--format", "onnx"], "already exists; pass --overwrite"),
        (["export", str(folder), str(folder), "--format", "onnx", "--overwrite"], "is the model folder itself"),
        (["export", str(folder), str(tmp_path / "x"), "--format", "onnx", "--pooling", "mean"], "--pooling is for --format sentence-transformers"),
        (["export", str(folder), str(tmp_path / "x"), "--int8"], "--int8 is for --format onnx"),
        (["export", str(folder), str(tmp_path / "x"), "--split", "test"], "--split is for --format onnx"),
        (["export", str(folder), str(tmp_path / "x"), "--format", "onnx", "--split", "test"], "--split goes with --check"),
        (["export", str(folder), str(tmp_path / "x"), "--format", "onnx", "--label-column", "y"], "--label-column goes with --check"),
        # The check data is read before the export runs: its mistake costs no export.
        (["export", str(folder), str(tmp_path / "x"), "--format", "onnx", "--check", str(renamed)], "review"),
    ]
    for argv, message in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and message in err and "\n" not in err, err
    assert not (tmp_path / "x").exists()


def test_a_failed_export_leaves_nothing(trained, tmp_path, monkeypatch, capsys):
    _, folder, _ = trained

    def broken(*_args, **_kwargs):
        raise RuntimeError("Unsupported operator aten::something\nand a long trace")

    monkeypatch.setattr(torch.onnx, "export", broken)
    assert main(["export", str(folder), str(tmp_path / "onnx"), "--format", "onnx"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("error: torch.onnx.export could not trace this BertForSequenceClassification: Unsupported operator aten::something")
    assert list(tmp_path.iterdir()) == []


def test_a_wrong_graph_is_refused_not_written(trained, tmp_path, monkeypatch):
    from taskembed import onnx_export

    monkeypatch.setattr(onnx_export, "_compare_on_probe_texts", lambda *_a: 0.5)  # what a mistranslated operator gives
    for int8 in (False, True):  # int8 too: its float32 graph is compared before it is quantised
        with pytest.raises(taskembed.UserError, match="differ from PyTorch's by 0.5"):
            export_onnx(trained[1], tmp_path / "onnx", int8=int8)
        assert list(tmp_path.iterdir()) == []


def test_missing_packages_and_window_models_are_refused(trained, tmp_path, monkeypatch):
    from taskembed import onnx_export

    folder = trained[1]
    real = onnx_export.importlib.util.find_spec
    monkeypatch.setattr(onnx_export.importlib.util, "find_spec", lambda name: None if name == "onnxscript" else real(name))
    with pytest.raises(taskembed.UserError, match=r"needs onnxscript: pip install 'taskembed\[onnx\]'"):
        export_onnx(folder, tmp_path / "onnx")
    monkeypatch.undo()
    windowed = tmp_path / "windowed"
    import shutil

    shutil.copytree(folder, windowed)
    config = json.loads((windowed / "training_config.json").read_text())
    config["data"].update(long_texts="window", window_stride=8)
    (windowed / "training_config.json").write_text(json.dumps(config))
    with pytest.raises(taskembed.UserError, match="sliding windows"):
        export_onnx(windowed, tmp_path / "onnx")
    assert not (tmp_path / "onnx").exists()


def test_the_readmes_snippet_gives_predicts_probabilities(trained, tmp_path):
    from pathlib import Path

    section = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8").split("\n## ONNX export\n", 1)[1].split("\n## ", 1)[0]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    folder = trained[1]
    export_onnx(folder, tmp_path / "onnx")
    placed = code.replace('folder = "runs/sentiment-onnx"', f"folder = {str(tmp_path / 'onnx')!r}")
    assert placed != code
    scope: dict = {}
    exec(placed, scope)  # noqa: S102 - the README's own code, run as a user would
    expected = taskembed.load(folder).predict_proba(["a gripping, beautifully shot film"]).numpy()
    np.testing.assert_allclose(scope["probabilities"], expected, atol=1e-5)


def test_the_onnx_benchmark_runs_on_the_tiny_model(trained, tmp_path):
    from bench import onnx_bench

    _, folder, test = trained
    assert onnx_bench.main(["--model", str(folder), "--data", str(test), "--rounds", "1", "--batch-sizes", "8,16",
                            "--out", str(tmp_path), "--name", "tiny"]) == 0
    report = json.loads((tmp_path / "tiny.json").read_text())
    results = report["results"]
    assert report["texts"] == 80 and {"taskembed_float32", "onnx_float32@8", "onnx_int8@16"} <= set(results)
    assert results["onnx_float32@8"]["same_prediction_as_float32"] == 100.0
    assert results["onnx_float32@8"]["accuracy"] == results["taskembed_float32"]["accuracy"]
    assert report["best_batch"]["onnx_int8"] in ("onnx_int8@8", "onnx_int8@16")
    assert "| taskembed_float32 |" in (tmp_path / "tiny.md").read_text() and "| onnx_int8 | 16 |" in (tmp_path / "tiny.md").read_text()


# --- the encoder with its pooling (export --format onnx-embeddings) ---------------------------------------------------


def _vectors(folder, texts, batch_size, pairs=None):
    """What a user of an embedding export computes: the folder's own tokenizer and onnxruntime."""
    from transformers import AutoTokenizer

    meta = json.loads((folder / "taskembed_onnx.json").read_text())
    return onnx_outputs(session_for(folder / ONNX_FILE), AutoTokenizer.from_pretrained(folder), meta["inputs"], texts, pairs,
                        meta["max_length"], batch_size, output="embeddings")


@pytest.mark.parametrize("options", [{}, {"pooling": "mean", "normalize": True}, {"pooling": "max", "max_length": 8}])
def test_embedding_export_gives_embeds_vectors(trained, tmp_path, options):
    _, folder, _ = trained
    meta = export_onnx_embeddings(folder, tmp_path / "vectors", **options)
    expected = embed(folder, NEW_TEXTS, **options)
    assert meta["output"] == "embeddings" and meta["kind"] == "embeddings" and meta["dim"] == expected.shape[1] == 32
    assert meta["pooling"] == options.get("pooling", "head") and meta["normalize"] == bool(options.get("normalize"))
    assert meta["max_length"] == options.get("max_length", 32) and meta["max_abs_difference_on_probe_texts"] < 1e-4
    # The head's vector is the top layer's [CLS] row through the pooler: traced for that row alone, as embed computes it.
    assert meta["top_layer_for_head_row_only"] == (meta["pooling"] == "head")
    for batch_size in (1, 3):
        np.testing.assert_allclose(_vectors(tmp_path / "vectors", NEW_TEXTS, batch_size), expected, atol=1e-5)
    if options.get("normalize"):
        np.testing.assert_allclose(np.linalg.norm(expected, axis=1), 1.0, atol=1e-6)


def test_base_encoders_without_token_types_export_their_pooling(tmp_path, tiny_model_dir):
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(tiny_model_dir)
    torch.manual_seed(0)
    model = transformers.DistilBertModel(transformers.DistilBertConfig(vocab_size=len(tok), max_position_embeddings=80, dim=16,
                                                                       n_layers=2, n_heads=2, hidden_dim=20))
    model.save_pretrained(tmp_path / "distil")
    tok.save_pretrained(tmp_path / "distil")
    for source in (tiny_model_dir, tmp_path / "distil"):
        out = tmp_path / f"{source.name}-onnx"
        meta = export_onnx_embeddings(source, out, pooling="mean")
        assert meta["model"]["classifier"] is False and meta["top_layer_for_head_row_only"] is False
        assert ("token_type_ids" in meta["inputs"]) == (source == tiny_model_dir)
        np.testing.assert_allclose(_vectors(out, NEW_TEXTS, 2), embed(source, NEW_TEXTS, pooling="mean"), atol=1e-5)


def test_int8_embeddings_record_how_far_they_moved(trained, tmp_path):
    from transformers import AutoTokenizer

    from taskembed.onnx_export import _probe_texts

    _, folder, _ = trained
    # Mean pooling: the head's vector goes through the pooler's tanh, which can saturate on a tiny model and leave int8
    # with nothing measurable to move (it did with this fixture's weights, min cosine 0.99999994).
    full = export_onnx_embeddings(folder, tmp_path / "f32", pooling="mean")
    small = export_onnx_embeddings(folder, tmp_path / "i8", int8=True, pooling="mean")
    assert small["weights"].startswith("int8") and not (tmp_path / "i8" / "float32").exists()
    assert (tmp_path / "i8" / ONNX_FILE).stat().st_size < (tmp_path / "f32" / ONNX_FILE).stat().st_size
    assert small["max_abs_difference_on_probe_texts"] > full["max_abs_difference_on_probe_texts"]
    # The recorded cosine is the int8 graph's against PyTorch on the probe texts, recomputed here.
    texts = _probe_texts(AutoTokenizer.from_pretrained(tmp_path / "i8"))
    mine, theirs = _vectors(tmp_path / "i8", texts, 8), embed(folder, texts, pooling="mean")
    cosines = (mine * theirs).sum(1) / (np.linalg.norm(mine, axis=1) * np.linalg.norm(theirs, axis=1))
    assert small["min_cosine_on_probe_texts"] == pytest.approx(cosines.min(), abs=1e-6) and cosines.min() < 1 - 1e-6
    assert full["min_cosine_on_probe_texts"] == pytest.approx(1.0, abs=1e-6)


def test_embedding_export_of_a_loaded_classifier_leaves_it_as_it_was(trained, tmp_path):
    _, folder, _ = trained
    clf = taskembed.load(folder)
    clf.tokenizer.padding_side = "left"  # as a user might have set it for their own use
    before = clf.tokenizer.model_max_length, clf.predict_proba(NEW_TEXTS)
    meta = export_onnx_embeddings(clf, tmp_path / "vectors", max_length=16)
    assert meta["max_length"] == 16 and json.loads((tmp_path / "vectors" / "tokenizer_config.json").read_text())["model_max_length"] == 16
    assert clf.tokenizer.padding_side == "left" and clf.tokenizer.model_max_length == before[0]
    torch.testing.assert_close(clf.predict_proba(NEW_TEXTS), before[1])


def test_embedding_export_cli_and_refusals(trained, tmp_path, capsys, monkeypatch, tiny_model_dir):
    _, folder, _ = trained
    out = tmp_path / "vectors"
    assert main(["export", str(folder), str(out), "--format", "onnx-embeddings", "--pooling", "mean", "--normalize", "--int8"]) == 0
    printed = capsys.readouterr().out
    assert f"ONNX folder written to {out}" in printed and "int8" in printed and "output embeddings, 32 wide" in printed
    assert "L2-normalised" in printed and "cosine" in printed
    cases = [
        (["export", str(folder), str(out), "--format", "onnx-embeddings"], "already exists; pass --overwrite"),
        (["export", str(folder), str(folder), "--format", "onnx-embeddings", "--overwrite"], "is the model folder itself"),
        (["export", str(folder), str(folder)], "is the model folder itself"),  # sentence-transformers: said the same way
        (["export", str(folder), str(tmp_path / "x"), "--format", "onnx-embeddings", "--check", "data.csv"], "--check is for --format onnx;"),
        (["export", str(folder), str(tmp_path / "x"), "--int8"], "--int8 is for --format onnx or --format onnx-embeddings"),
        (["export", str(folder), str(tmp_path / "x"), "--format", "onnx-embeddings", "--pooling", "avg"], "avg"),
        # An encoder without a head has no logits to export, but has vectors.
        (["export", str(tiny_model_dir), str(tmp_path / "x"), "--format", "onnx"], "or export its vectors with --format onnx-embeddings"),
    ]
    for argv, message in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and message in err and "\n" not in err, err
    assert not (tmp_path / "x").exists()

    from taskembed import onnx_export

    monkeypatch.setattr(onnx_export, "_vector_drift", lambda *_a: (0.5, 0.2))  # what a mistranslated operator gives
    with pytest.raises(taskembed.UserError, match="vectors differ from PyTorch's by 0.5"):
        export_onnx_embeddings(folder, tmp_path / "wrong")
    assert not (tmp_path / "wrong").exists() and not list(tmp_path.glob(".wrong*"))


def test_the_readmes_embedding_snippet_gives_embeds_vectors(trained, tmp_path):
    from pathlib import Path

    section = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8").split("\n## ONNX export\n", 1)[1].split("\n## ", 1)[0]
    code = section.split("```python\n")[2].split("```", 1)[0]
    folder = trained[1]
    export_onnx_embeddings(folder, tmp_path / "vectors", pooling="mean", normalize=True)
    placed = code.replace('folder = "runs/sentiment-vectors"', f"folder = {str(tmp_path / 'vectors')!r}")
    assert placed != code
    scope: dict = {}
    exec(placed, scope)  # noqa: S102 - the README's own code, run as a user would
    np.testing.assert_allclose(scope["vectors"], embed(folder, scope["texts"], pooling="mean", normalize=True), atol=1e-5)


def test_the_onnx_benchmark_measures_the_embedding_export(trained, tmp_path):
    from bench import onnx_bench

    _, folder, test = trained
    assert onnx_bench.main(["--model", str(folder), "--data", str(test), "--rounds", "1", "--batch-sizes", "8", "--embeddings",
                            "--pooling", "mean", "--out", str(tmp_path), "--name", "tiny"]) == 0
    report = json.loads((tmp_path / "tiny.json").read_text())
    results = report["results"]
    assert report["texts"] == 80 and report["pooling"].startswith("masked mean") and {"onnx_float32@8", "onnx_int8@8"} <= set(results)
    assert results["taskembed_float32"]["same_10_neighbours"] == 100.0 and results["taskembed_float32"]["min_cosine"] == pytest.approx(1.0)
    assert results["onnx_float32@8"]["min_cosine"] > 0.99999 and results["onnx_float32@8"]["max_abs_difference"] < 1e-4
    assert results["onnx_int8@8"]["max_abs_difference"] > results["onnx_float32@8"]["max_abs_difference"]
    assert "| onnx_int8, batch 8 |" in (tmp_path / "tiny.md").read_text()
