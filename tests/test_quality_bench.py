"""The quality benchmarks (ablations, imbalance, long texts, few-shot) and the large-vocabulary one run end to end on the tiny model.

What they measure needs the real model and minutes of CPU; here each runs on the tiny model and tiny
data, and the check is that the runs happen with the overrides they claim and the reports hold them.
"""

from __future__ import annotations

import json

import pytest

from bench import ablations, fewshot, imbalance, large_vocab, long_texts

TINY = ["train.bf16=off", "train.epochs=1", "train.batch_size=16", "data.max_length=32", "output.embedding_report=false"]


@pytest.mark.slow
def test_ablations_smoke(tiny_model_dir, tmp_path, monkeypatch):
    seen = []
    real = ablations.run_one

    def spy(config, variant, size, seed, model, extra):
        seen.append((variant, size, seed))
        return real(config, variant, size, seed, model, extra)

    monkeypatch.setattr(ablations, "run_one", spy)
    out, js = tmp_path / "abl.md", tmp_path / "abl.json"
    argv = ["--sizes", "40", "--seeds", "0,1", "--variants", "decay,unfreeze,contrastive", "--model", str(tiny_model_dir),
            "--json", str(js), "--out", str(out), *[x for s in TINY for x in ("--set", s)]]
    assert ablations.main(argv) == 0
    runs = json.loads(js.read_text())["runs"]
    assert {(r["variant"], r["seed"]) for r in runs} == {(v, s) for v in ("decay", "unfreeze", "contrastive") for s in (0, 1)}
    text = out.read_text()
    assert "decay + gradual unfreezing minus decay 0.8, same seeds" in text and "| 2 |" in text
    # a second invocation resumes: nothing is run again
    seen.clear()
    assert ablations.main(argv) == 0 and seen == []


@pytest.mark.slow
def test_ablations_masked_lm_variants_read_all_training_texts(tiny_model_dir, tmp_path):
    out, js = tmp_path / "abl.md", tmp_path / "abl.json"
    # A tenth of an epoch: the stage over all of rotten_tomatoes' 10,207 training texts would take minutes even here.
    argv = ["--sizes", "40", "--seeds", "0", "--variants", "flat_mlm1,flat_mlm1_all_texts", "--model", str(tiny_model_dir),
            "--json", str(js), "--out", str(out), *[x for s in TINY for x in ("--set", s)], "--set", "train.mlm_epochs=0.1"]
    assert ablations.main(argv) == 0
    runs = json.loads(js.read_text())["runs"]
    assert [r["variant"] for r in runs] == ["flat_mlm1", "flat_mlm1_all_texts"]
    # The labelled subset alone, then every text of the source's training split (the subset among them).
    assert runs[0]["mlm"]["texts"] == 40 and runs[1]["mlm"]["texts"] > 10_000
    text = out.read_text()
    assert f"from {js}" in text and "| flat rate after 1 masked-LM epoch over all training texts (the unlabelled rest too) | 1 |" in text


@pytest.mark.slow
def test_imbalance_smoke(tiny_model_dir, tmp_path):
    argv = ["--seeds", "0", "--variants", "none,weights", "--model", str(tiny_model_dir), "--out-dir", str(tmp_path), "--name", "imb",
            *[x for s in TINY for x in ("--set", s)]]
    assert imbalance.main(argv) == 0
    data = json.loads((tmp_path / "imb.json").read_text())
    assert len(data["meta"]["minority"]) == 19 and min(data["meta"]["train_counts"].values()) >= 2
    assert [r["variant"] for r in data["runs"]] == ["none", "weights"]
    assert "| weights |" in (tmp_path / "imb.md").read_text()


@pytest.mark.slow
def test_long_texts_smoke(tiny_model_dir, tmp_path):
    argv = ["--per-text", "3", "--max-length", "24", "--stride", "4", "--train", "40", "--test", "20", "--epochs", "1", "--seeds", "0",
            "--model", str(tiny_model_dir), "--out-dir", str(tmp_path), "--name", "lt"]
    assert long_texts.main(argv) == 0
    runs = json.loads((tmp_path / "lt.json").read_text())["runs"]
    assert [r["mode"] for r in runs] == ["truncate", "window"]
    assert runs[0]["truncated_test"] > 0 and runs[1]["windowed_test"] == runs[0]["truncated_test"]


@pytest.mark.slow
def test_large_vocab_smoke(tiny_model_dir, tmp_path):
    argv = ["--model", str(tiny_model_dir), "--vocab", "700", "--train", "40", "--test", "20", "--rounds", "1", "--out-dir", str(tmp_path), "--name", "lv"]
    assert large_vocab.main(argv) == 0
    on, off = json.loads((tmp_path / "lv.json").read_text())["runs"]
    assert (on["compact_vocab"], off["compact_vocab"]) == (True, False)
    assert on["token_rows_trained"][1] == 700 and on["token_rows_trained"][0] < 200 and off["token_rows_trained"] is None
    assert on["accuracy"] == off["accuracy"]  # the same weights: the same predictions
    assert "| true | " in (tmp_path / "lv.md").read_text()



def test_fewshot_smoke(tiny_model_dir, tmp_path):
    # Every recipe on one draw of 4 reviews per label: the draw is the benchmark's (configs/fewshot.yaml's own
    # data.max_train_per_label must not cut it), and the steps are what training plans for it.
    argv = ["--datasets", "rotten_tomatoes", "--sizes", "4", "--seeds", "0", "--model", str(tiny_model_dir), "--max-test", "40",
            "--out", str(tmp_path), "--name", "fs", "--set", "train.epochs=2", "--set", "train.bf16=off", "--set", "data.max_length=32"]
    assert fewshot.main(argv) == 0
    runs = json.loads((tmp_path / "fs.json").read_text())["runs"]
    assert [r["recipe"] for r in runs] == ["default", "fewshot", "frozen"] and all(r["train_texts"] == 8 for r in runs)
    few = next(r for r in runs if r["recipe"] == "fewshot")
    assert few["steps"] == 2  # 8 texts in one batch of 8, 2 epochs: no validation carved from them
    assert all(0 <= r["accuracy"] <= 1 for r in runs)
    assert "| rotten_tomatoes | 4 | fewshot | 2 |" in (tmp_path / "fs.md").read_text()
    import pandas as pd

    drawn = fewshot.draw(pd.DataFrame({"text": list("abcdefg"), "label": list("xxxxyyy")}), 2, 0)
    assert drawn.groupby("label").size().tolist() == [2, 2] and drawn.equals(fewshot.draw(pd.DataFrame(
        {"text": list("abcdefg"), "label": list("xxxxyyy")}), 2, 0))  # seeded
