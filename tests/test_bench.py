"""The benchmark script (bench/train_bench.py) end to end on the tiny model, and its report arithmetic.

Nothing here asserts a speed: timings on a shared CI machine mean nothing. What is checked is that
every system runs in its own process on the same data, and that the report has the fields the docs use.
"""

from __future__ import annotations

import csv
import json

import pytest

from bench import train_bench
from tests.conftest import make_rows

RUN_FIELDS = {"system", "dataset", "seed", "ok", "train_s", "process_wall_s", "samples_per_s", "tokens_per_s", "peak_rss_mb",
              "gpu_peak_mb", "accuracy", "macro_f1", "steps", "bf16", "optim", "padding", "threads", "device"}


@pytest.fixture
def data_folder(tmp_path):
    """A BANKING77-shaped folder (train.csv, test.csv with text and category) of generated reviews."""
    folder = tmp_path / "reviews"
    folder.mkdir()
    for name, rows in (("train.csv", make_rows(80, seed=1)), ("test.csv", make_rows(24, seed=2))):
        with (folder / name).open("w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=["text", "category"])
            w.writeheader()
            w.writerows({"text": r["text"], "category": r["label"]} for r in rows)
    return folder


@pytest.mark.slow
def test_quick_bench_end_to_end_on_the_tiny_model(tiny_model_dir, data_folder, tmp_path):
    out = tmp_path / "docs"
    argv = ["--mode", "quick", "--model", str(tiny_model_dir), "--datasets", str(data_folder), "--max-train", "48",
            "--max-length", "32", "--batch-size", "16", "--lr", "1e-3", "--systems", "taskembed,taskembed_untrimmed,taskembed_plain,b0,b1",
            "--infer-batch-sizes", "1,8", "--threads", "1", "--out-dir", str(out), "--name", "tiny"]
    assert train_bench.main(argv) == 0

    report = json.loads((out / "tiny.json").read_text())
    assert {"mode", "command", "machine", "threads", "versions", "settings", "datasets", "runs", "summary", "comparisons",
            "inference", "embedding", "notes"} <= set(report)
    assert report["mode"] == "quick" and report["threads"] == 1
    assert report["machine"]["device"] in ("cpu", "cuda") and report["machine"]["logical_cores"] >= 1
    if report["machine"]["device"] == "cpu":  # the day's product rates, measured before the runs
        assert set(report["machine"]["product_gflops"]) == {"bfloat16", "float32"}
        assert all(rate > 0 for rate in report["machine"]["product_gflops"].values())
    assert {"torch", "transformers", "taskembed"} <= set(report["versions"])

    ds = report["datasets"]["reviews"]
    assert ds["train"] == 48 and ds["test"] == 24 and ds["labels"] == ["neg", "pos"] and ds["real_tokens_train"] > 48

    runs = {r["system"]: r for r in report["runs"]}
    assert set(runs) == {"taskembed", "taskembed_untrimmed", "taskembed_plain", "b0", "b1"}
    assert runs["taskembed"]["trim_top_layer"] is True and runs["taskembed_untrimmed"]["trim_top_layer"] is False
    cpu = report["machine"]["device"] == "cpu"
    assert runs["taskembed"]["fast_dropout"] is cpu and runs["taskembed_plain"]["fast_dropout"] is False
    for r in runs.values():
        assert r["ok"], r.get("error")
        assert RUN_FIELDS <= set(r)
        assert r["train_s"] > 0 and r["samples_per_s"] > 0 and r["tokens_per_s"] > 0 and r["peak_rss_mb"] > 0
        # the arithmetic done, one count per dataset: the full model's, or with the top layer for one row per text
        done = ds["train_flops_per_epoch_trimmed" if r.get("trim_top_layer") else "train_flops_per_epoch"]
        assert r["model_tflops"] * r["train_s"] == pytest.approx(done / 1e12)
        assert r["process_wall_s"] >= r["train_s"]
        assert 0 <= r["accuracy"] <= 1 and 0 <= r["macro_f1"] <= 1
        assert r["threads"] == 1
    # One epoch of 48 examples in batches of 16, for everyone.
    assert {r["steps"] for r in runs.values()} == {3}
    assert runs["b0"]["padding"] == "max_length (32)" and runs["b0"]["bf16"] is False
    assert runs["b1"]["optim"] == "adamw_torch_fused"
    # taskembed scored by the shared evaluation agrees with its own evaluation of the same weights.
    assert runs["taskembed"]["accuracy"] == pytest.approx(runs["taskembed"]["self_reported_accuracy"])
    # The same real tokens for everyone: taskembed's own count matches the shared one.
    assert runs["taskembed"]["taskembed_tokens_seen"] == ds["real_tokens_train"]

    assert ds["train_flops_per_epoch_trimmed"] < ds["train_flops_per_epoch"]
    assert set(report["summary"]["reviews"]) == {"taskembed", "taskembed_untrimmed", "taskembed_plain", "b0", "b1"}
    assert {(c["system"], c["baseline"]) for c in report["comparisons"]["reviews"]} == {
        (ours, base) for ours in ("taskembed", "taskembed_untrimmed", "taskembed_plain") for base in ("b0", "b1")}
    for c in report["comparisons"]["reviews"]:
        assert {"train_time_ratio", "speedup", "accuracy_delta_pts", "macro_f1_delta_pts", "counts"} <= set(c)
        assert c["counts"] is False  # one seed never makes a claim

    inf = report["inference"]["reviews"]
    assert inf["ok"], inf.get("error")
    assert inf["texts"] == 24 and set(inf["pipeline"]["by_batch_size"]) == {"1", "8"}
    assert inf["outputs_match"]["ok"] and inf["outputs_match"]["labels_equal"] and inf["repeats"] == 3
    b16 = inf["taskembed_bf16"]  # measured where the CPU has bfloat16 units, a note where it has not
    assert "skipped" in b16 or (b16["texts_per_s"] > 0 and 0 <= b16["labels_differing_from_float32"] <= 24)
    emb = report["embedding"]
    assert "skipped" in emb or emb["cosine_ok"]

    md = (out / "tiny.md").read_text()
    assert report["command"] in md and "B0: Trainer" in md and "| taskembed | b1 |" in md and "model TFLOP/s" in md


@pytest.mark.slow
def test_large_batch_systems_and_a_folder_with_its_own_validation(tiny_model_dir, data_folder, tmp_path):
    with (data_folder / "validation.csv").open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=["text", "category"])
        w.writeheader()
        w.writerows({"text": r["text"], "category": r["label"]} for r in make_rows(10, seed=3))
    out = tmp_path / "docs"
    large = train_bench.LARGE_BATCH
    argv = ["--mode", "quick", "--model", str(tiny_model_dir), "--datasets", str(data_folder), "--max-length", "32",
            "--batch-size", "16", "--lr", "1e-3", "--systems", "taskembed_large,b1_large", "--no-inference", "--threads", "1",
            "--out-dir", str(out), "--name", "large"]
    assert train_bench.main(argv) == 0
    report = json.loads((out / "large.json").read_text())
    # validation.csv is used as it is: all 80 training rows stay training rows (none carved off)
    assert report["datasets"]["reviews"]["train"] == 80 and report["datasets"]["reviews"]["validation_unused"] == 10
    runs = {r["system"]: r for r in report["runs"]}
    assert all(r["ok"] for r in runs.values()), [r.get("error") for r in runs.values()]
    # one step per epoch at batch 256 for both, and both at the same square-root-scaled top rate
    assert runs["taskembed_large"]["batch_size"] == runs["b1_large"]["batch_size"] == large
    assert {r["steps"] for r in runs.values()} == {1}
    scaled = 1e-3 * (large / 16) ** 0.5
    assert runs["b1_large"]["lr"] == pytest.approx(scaled)
    assert runs["taskembed_large"]["lr_groups"]["layer.2"] == pytest.approx(scaled)
    assert ("taskembed_large", "b1_large") in {(c["system"], c["baseline"]) for c in report["comparisons"]["reviews"]}


def _run(system, seed, train_s, acc, dataset="d"):
    return {"system": system, "dataset": dataset, "seed": seed, "ok": True, "train_s": train_s, "process_wall_s": train_s + 5,
            "samples_per_s": 100 / train_s, "tokens_per_s": 1000 / train_s, "peak_rss_mb": 500.0, "gpu_peak_mb": None,
            "accuracy": acc, "macro_f1": acc}


def test_summary_means_spreads_and_ratios():
    runs = [_run("taskembed", s, t, a) for s, t, a in ((0, 10, 0.80), (1, 12, 0.82), (2, 14, 0.84))]
    runs += [_run("b0", s, t, a) for s, t, a in ((0, 40, 0.81), (1, 40, 0.81), (2, 40, 0.81))]
    runs += [_run("b1", s, t, a) for s, t, a in ((0, 20, 0.83), (1, 20, 0.84), (2, 20, 0.85))]
    runs.append({"system": "b1", "dataset": "d", "seed": 3, "ok": False, "error": "exit 1: boom"})  # failures are left out
    summary, comparisons = train_bench.summarize(runs, ["taskembed", "b0", "b1"])
    te = summary["d"]["taskembed"]
    assert te["train_s"]["mean"] == pytest.approx(12) and te["train_s"]["std"] == pytest.approx(2) and te["train_s"]["n"] == 3
    assert te["gpu_peak_mb"] == {"mean": None, "std": None, "n": 0}
    by = {c["baseline"]: c for c in comparisons["d"]}
    assert by["b0"]["speedup"] == pytest.approx(40 / 12) and by["b0"]["train_time_ratio"] == pytest.approx(12 / 40)
    assert by["b0"]["accuracy_delta_pts"] == pytest.approx(1.0) and by["b0"]["counts"] is True
    # Paired by seed; B1's failed seed 3 has no taskembed run to pair with and is left out.
    assert by["b1"]["speedup_per_seed"] == pytest.approx({0: 2.0, 1: 20 / 12, 2: 20 / 14})
    # 2 points below B1: the speed-up does not count (DESIGN.md: equal accuracy within half a point).
    assert by["b1"]["accuracy_delta_pts"] == pytest.approx(-2.0) and by["b1"]["counts"] is False


def _report(runs, systems, inference=None, notes=()):
    """A minimal report around `runs`, as train_bench's main assembles it, for render_markdown."""
    summary, comparisons = train_bench.summarize(runs, systems)
    return {
        "mode": "quick", "command": "make bench MODE=quick", "created": "now", "threads": 2, "versions": {"torch": "x"},
        "machine": {"device": "cpu", "gpu": None, "gpu_bf16": None, "cpu": "Some CPU", "logical_cores": 2, "cpu_bf16": False},
        "settings": {"model": "m", "epochs": 1.0, "batch_size": 32, "lr": 5e-5, "taskembed_layer_decay": 0.9, "taskembed_head_lr": 1e-3,
                     "warmup_ratio": 0.1, "weight_decay": 0.01, "max_length": 128, "seeds": sorted({r["seed"] for r in runs})},
        "datasets": {"d": {"train": 10, "train_available": 20, "test": 5, "labels": ["a", "b"], "mean_tokens": 9.0, "origin": "here"}},
        "runs": runs, "summary": summary, "comparisons": comparisons, "inference": inference or {}, "notes": list(notes),
    }


def test_markdown_reports_failures_and_skips():
    runs = [_run("taskembed", 0, 10, 0.8), {"system": "b0", "dataset": "d", "seed": 0, "ok": False, "error": "exit 1: Traceback\nValueError: bad"}]
    report = _report(runs, ["taskembed", "b0"], inference={"d": {"ok": False, "error": "exit 1: oops"}},
                     notes=["dataset banking77 skipped: not present"])
    md = train_bench.render_markdown(report)
    assert "`make bench MODE=quick`" in md and "FAILED: b0 seed 0: ValueError: bad" in md
    assert "Inference: FAILED (exit 1: oops)" in md and "banking77 skipped" in md


def test_markdown_names_the_cpu_generation_and_the_days_product_rates():
    report = _report([_run("taskembed", 0, 10, 0.8)], ["taskembed"])
    assert "- Machine: CPU Some CPU, 2 logical cores; torch threads 2;" in train_bench.render_markdown(report)  # an older report
    report["machine"].update(cpu_family_model="family 25 model 17", product_gflops={"bfloat16": 424.2, "float32": 1890.4})
    assert ("- Machine: CPU Some CPU (family 25 model 17), 2 logical cores; products at the start: bfloat16 424 GFLOP/s, "
            "float32 1,890 GFLOP/s (900 x 384 x 1,536); torch threads 2;") in train_bench.render_markdown(report)


def test_markdown_per_seed_speedups_in_seed_order_and_old_reports():
    runs = [_run("taskembed", s, t, 0.8) for s, t in ((0, 10), (1, 20), (2, 10))]
    runs += [_run("b1", s, t, 0.8) for s, t in ((0, 15), (1, 30), (2, 12))]
    # Through JSON, as --render reads a report: the seeds become string keys, and 10 must still sort after 2.
    report = json.loads(json.dumps(_report(runs, ["taskembed", "b1"])))
    report["comparisons"]["d"][0]["speedup_per_seed"]["10"] = 3.0
    assert "| 1.50x, 1.50x, 1.20x, 3.00x |" in train_bench.render_markdown(report)
    del report["comparisons"]["d"][0]["speedup_per_seed"]  # a report written before the column existed
    assert "x | - | +0.00 |" in train_bench.render_markdown(report)


@pytest.mark.integration
def test_long_docs_bench_cuts_the_long_documents_and_finds_the_same_vectors(tmp_path):
    from bench import long_docs

    assert long_docs.main(["--sizes", "300,5000", "--docs", "3", "--rounds", "1", "--out", str(tmp_path), "--name", "ld"]) == 0
    report = json.loads((tmp_path / "ld.json").read_text())
    short, long = report["rows"]
    assert (short["chars"], long["chars"], long["max_length"]) == (300, 5000, 256)
    assert short["truncated"] == 0 and long["truncated"] == 3  # 5,000 characters: past the cut's 4,096, and truncated
    assert all(r["same_ids"] and r["same_truncated"] and r["max_abs_diff"] == 0.0 for r in report["rows"])
    assert "| 5,000 | 3 |" in (tmp_path / "ld.md").read_text()


def test_long_docs_bench_predict_mode_against_pipeline(tiny_overrides, write_csv, tmp_path):
    import taskembed
    from bench import long_docs
    from tests.conftest import make_rows

    data = write_csv(make_rows(60), "d.csv")
    folder = taskembed.train("configs/sentiment.yaml", {**tiny_overrides, "data.source": str(data), "train.epochs": 1,
                                                        "output.embedding_report": False}).output_dir
    out = tmp_path / "report"
    assert long_docs.main(["--predict", str(folder), "--sizes", "300,3000", "--docs", "3", "--rounds", "1", "--out", str(out),
                           "--name", "ldp"]) == 0
    report = json.loads((out / "ldp.json").read_text())
    assert [r["chars"] for r in report["rows"]] == [300, 3000] and report["rows"][0]["max_length"] == 32
    assert all(r["same_labels"] == 3 and r["max_score_diff"] < 1e-5 for r in report["rows"])  # the same outputs as pipeline
    assert "| 3,000 | 3 |" in (out / "ldp.md").read_text()
