"""What train.compact_vocab saves on a large vocabulary: the default model with XLM-R's 250,002-row token table.

    python bench/large_vocab.py      # 2,000 rotten_tomatoes texts, 1 epoch, compact_vocab on and off, 3 rounds

Multilingual encoders spend most of their parameters on the token table (XLM-R base: 192 M of 278 M), and
a dataset in one language uses a few percent of its rows. The offline model has 30,522 rows, so this grows
all-MiniLM-L6-v2's table to --vocab rows (the new rows drawn as BERT initialises them, N(0, 0.02)); the
texts still go through MiniLM's tokenizer, so they use the rows they use in the default job, and the rest
of the table is what a large vocabulary adds. Each run is a fresh process, so its peak RSS is its own; the
two settings alternate for --rounds rounds. Reported per setting: the median training seconds (taskembed's
clock) and peak RSS, the rows trained, test accuracy.

Writes docs/benchmarks/large-vocab.json and docs/benchmarks/large-vocab.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.ablations import write_report  # noqa: E402
from bench.train_bench import peak_rss_mb  # noqa: E402


def make_model(source: str, vocab: int, dest: Path) -> None:
    """`source` with its token table grown to `vocab` rows, saved with its tokenizer."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from taskembed.modeling import resolve_model

    path = resolve_model(source)
    torch.manual_seed(0)
    model = AutoModel.from_pretrained(path, dtype=torch.float32)
    model.resize_token_embeddings(vocab, mean_resizing=False)  # new rows from the model's own initialiser
    model.save_pretrained(dest)
    AutoTokenizer.from_pretrained(path).save_pretrained(dest)


def make_data(folder: Path, n_train: int, n_test: int) -> dict[str, Path]:
    from taskembed.config import DataConfig
    from taskembed.data import load_raw

    raw, _ = load_raw(DataConfig(source="rotten_tomatoes"))
    paths = {}
    for split, n in (("train", n_train), ("test", n_test)):
        paths[split] = folder / f"{split}.csv"
        raw[split].sample(n=min(n, len(raw[split])), random_state=0)[["text", "label"]].to_csv(paths[split], index=False)
    return paths


def worker(spec: dict) -> dict:
    """One training run in this process; what it measured."""
    import taskembed
    import taskembed.api as api

    # The process's high-water mark before and after `fit`: loading the model and saving it have peaks of their own.
    real_fit, marks = api.fit, {}

    def fit(*a, **kw):
        marks["before_fit"] = peak_rss_mb()
        out = real_fit(*a, **kw)
        marks["after_fit"] = peak_rss_mb()
        return out

    api.fit = fit
    r = taskembed.train(None, {
        "model.name": spec["model"], "data.source": spec["train"], "data.test": spec["test"], "data.validation_fraction": 0.0,
        "data.test_fraction": 0.0, "train.epochs": spec["epochs"], "train.compact_vocab": spec["compact_vocab"],
        "output.dir": spec["out"], "output.baselines": False, "output.embedding_report": False, "train.keep_checkpoints": 0,
    }, progress=False, echo=lambda _m: None)
    run = json.loads((Path(r.output_dir) / "run.json").read_text())
    return {"compact_vocab": spec["compact_vocab"], "train_seconds": r.train_seconds, "token_rows_trained": run["token_rows_trained"],
            "peak_rss_mb": peak_rss_mb(), **{f"peak_rss_{k}_mb": v for k, v in marks.items()}, "accuracy": r.metrics["test"]["accuracy"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    p.add_argument("--vocab", type=int, default=250_002, help="rows of the grown token table (XLM-R's vocabulary)")
    p.add_argument("--train", type=int, default=2000, help="rotten_tomatoes training texts")
    p.add_argument("--test", type=int, default=500, help="rotten_tomatoes test texts")
    p.add_argument("--epochs", type=float, default=1)
    p.add_argument("--rounds", type=int, default=3, help="runs of each setting, alternating")
    p.add_argument("--out-dir", default=str(ROOT / "docs" / "benchmarks"), help="where the .md and .json go")
    p.add_argument("--name", default="large-vocab", help="output name under --out-dir")
    p.add_argument("--worker", help=argparse.SUPPRESS)  # a JSON spec: train once in this process, print the result
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0

    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        make_model(args.model, args.vocab, Path(tmp) / "model")
        data = make_data(Path(tmp), args.train, args.test)
        for on in [True, False] * args.rounds:
            spec = {"model": f"{tmp}/model", "train": str(data["train"]), "test": str(data["test"]), "epochs": args.epochs,
                    "compact_vocab": on, "out": f"{tmp}/out-{on}-{len(runs)}"}
            done = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True, text=True, cwd=ROOT)
            if done.returncode != 0:
                sys.exit(f"large_vocab: the run with compact_vocab {on} failed:\n{done.stderr[-2000:]}")
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
            r = runs[-1]
            print(f"compact_vocab {on}: {r['train_seconds']:.1f} s, peak RSS {r['peak_rss_mb']:,.0f} MB, rows {r['token_rows_trained']}", flush=True)
    command = ("python bench/large_vocab.py " + " ".join(argv if argv is not None else sys.argv[1:])).strip()
    meta = {"command": command, "machine": platform.processor() or platform.machine(), **vars(args)}
    median = {on: {k: statistics.median(r[k] for r in runs if r["compact_vocab"] is on) for k in ("train_seconds", "peak_rss_mb")}
              for on in (True, False)}
    lines = [f"# Large vocabulary ({args.name})", "", "Generated by `bench/large_vocab.py`; do not edit by hand.", "", f"Command: `{command}`", "",
             f"{args.model} with its token table grown to {args.vocab:,} rows; {args.train:,} rotten_tomatoes training texts, "
             f"{args.epochs:g} epoch(s), default config otherwise; a process per run, the settings alternating, {args.rounds} round(s).", "",
             "| train.compact_vocab | token rows trained | train s (median; each run) | peak RSS (median; each run) | test accuracy (each run) |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for on in (True, False):
        rs = [r for r in runs if r["compact_vocab"] is on]
        rows = rs[0]["token_rows_trained"]
        trained = f"{rows[0]:,} of {rows[1]:,}" if rows else f"all {args.vocab:,}"
        seconds = ", ".join(f"{r['train_seconds']:.1f}" for r in rs)
        rss = ", ".join(f"{r['peak_rss_mb']:,.0f}" for r in rs)
        accuracy = ", ".join(f"{100 * r['accuracy']:.2f}" for r in rs)
        lines.append(f"| {str(on).lower()} | {trained} | {median[on]['train_seconds']:.1f} ({seconds}) "
                     f"| {median[on]['peak_rss_mb']:,.0f} MB ({rss}) | {accuracy} |")
    lines += ["", f"compact_vocab true: {median[False]['train_seconds'] / median[True]['train_seconds']:.2f}x faster, "
              f"{median[False]['peak_rss_mb'] - median[True]['peak_rss_mb']:,.0f} MB less peak memory (medians)."]
    write_report(Path(args.out_dir), args.name, meta, runs, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
