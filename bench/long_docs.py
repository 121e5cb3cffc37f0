"""Long documents: what cutting a text before tokenizing saves when only its first max_length tokens are read.

    python bench/long_docs.py        # docs/benchmarks/long-docs.{md,json}
    python bench/long_docs.py --sizes 2000,20000,100000 --docs 64 --rounds 3

A document of N characters is rotten_tomatoes sentences joined with spaces until it is N long (a RAG corpus of
articles, reviews or pages). For each size, the same process embeds the same documents with all-MiniLM-L6-v2
(mean pooling, normalised, max_length 256: the packaged model's own limit) two ways, alternating for
`--rounds` rounds:

- cut:   taskembed as shipped: a text longer than `CUT_CHARS_PER_TOKEN * max_length` characters is cut at a
         space before tokenizing, when more than max_length tokens come before the cut (`taskembed.data.encode`);
- whole: the same code with the cut off (`CUT_CHARS_PER_TOKEN` set out of reach), as before: the tokenizer
         reads every character, and a truncated text a second time to count it as truncated.

It reports the tokenization alone (`taskembed.data.encode`) and the whole `Embedder.encode` (tokenization and
the model), as documents per second (the median round), and checks that both ways give the same token ids, the
same count of truncated texts and the same vectors (max absolute difference).

    python bench/long_docs.py --predict runs/sentiment --sizes 100000 --docs 32 --name long-docs-predict

With --predict FOLDER (a trained classifier, `make run`'s runs/sentiment), each size is classified instead: `taskembed.
load(FOLDER).predict` against `transformers.pipeline("text-classification")` with truncation at the run's
max_length and batch size 8 (its best on short texts, docs/benchmarks.md), alternating for `--rounds` rounds, with
the labels compared and the largest score difference.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.train_bench import hardware, machine_info, versions  # noqa: E402

MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def documents(n_docs: int, chars: int) -> list[str]:
    """n_docs texts of about `chars` characters each, from rotten_tomatoes sentences in turn (each document starts
    elsewhere, so no two are the same)."""
    from taskembed.config import DataConfig
    from taskembed.data import load_raw

    raw, _ = load_raw(DataConfig(source="rotten_tomatoes"))
    sentences = [t for split in raw.values() for t in split["text"].tolist()]
    docs, at = [], 0
    for _ in range(n_docs):
        parts, size = [], 0
        while size < chars:
            s = sentences[at % len(sentences)]
            parts.append(s)
            size += len(s) + 1
            at += 1
        docs.append(" ".join(parts)[:chars])
    return docs


def timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def run(sizes: list[int], n_docs: int, rounds: int) -> dict:
    import numpy as np

    import taskembed.data as data
    from taskembed.embed import Embedder

    emb = Embedder.load(MODEL, pooling="mean", normalize=True)
    shipped = data.CUT_CHARS_PER_TOKEN
    emb.encode(documents(8, 2000))  # warm-up: thread pools, oneDNN's kernels
    rows = []
    for chars in sizes:
        docs = documents(n_docs, chars)
        times = {"cut": {"encode": [], "embed": []}, "whole": {"encode": [], "embed": []}}
        results = {}
        for _ in range(rounds):
            for way in ("whole", "cut"):
                data.CUT_CHARS_PER_TOKEN = shipped if way == "cut" else 10**12
                dt, enc = timed(lambda: data.encode(emb.tokenizer, docs, max_length=emb.max_length))
                times[way]["encode"].append(dt)
                dt, vectors = timed(lambda: emb.encode(docs))
                times[way]["embed"].append(dt)
                results[way] = (enc, vectors)
        data.CUT_CHARS_PER_TOKEN = shipped
        (enc_c, vec_c), (enc_w, vec_w) = results["cut"], results["whole"]
        row = {"chars": chars, "docs": n_docs, "max_length": emb.max_length,
               "truncated": enc_c.truncated, "same_ids": enc_c.input_ids == enc_w.input_ids, "same_truncated": enc_c.truncated == enc_w.truncated,
               "max_abs_diff": float(np.abs(vec_c - vec_w).max())}
        for way in ("cut", "whole"):
            for part in ("encode", "embed"):
                row[f"{way}_{part}_docs_per_s"] = n_docs / statistics.median(times[way][part])
                row[f"{way}_{part}_s"] = times[way][part]
        row["encode_speedup"] = row["cut_encode_docs_per_s"] / row["whole_encode_docs_per_s"]
        row["embed_speedup"] = row["cut_embed_docs_per_s"] / row["whole_embed_docs_per_s"]
        rows.append(row)
        print(f"long_docs: {chars:>7,} chars  tokenize {row['whole_encode_docs_per_s']:8.1f} -> {row['cut_encode_docs_per_s']:8.1f} docs/s "
              f"({row['encode_speedup']:.2f}x)  embed {row['whole_embed_docs_per_s']:6.1f} -> {row['cut_embed_docs_per_s']:6.1f} docs/s "
              f"({row['embed_speedup']:.2f}x)  same ids {row['same_ids']}  max |diff| {row['max_abs_diff']:.1e}", flush=True)
    return {"model": MODEL, "cut_chars_per_token": shipped, "rows": rows}


def run_predict(folder: str, sizes: list[int], n_docs: int, rounds: int) -> dict:
    from transformers import pipeline

    import taskembed
    from taskembed.data import CUT_CHARS_PER_TOKEN

    clf = taskembed.load(folder)
    max_length = json.loads((Path(folder) / "training_config.json").read_text())["data"]["max_length"]
    pipe = pipeline("text-classification", model=folder, device="cpu")
    warm = documents(4, 2000)
    clf.predict(warm)
    pipe(warm, truncation=True, max_length=max_length)
    rows = []
    for chars in sizes:
        docs = documents(n_docs, chars)
        times: dict[str, list[float]] = {"taskembed": [], "pipeline": []}
        for _ in range(rounds):
            dt, ours = timed(lambda: clf.predict(docs))
            times["taskembed"].append(dt)
            dt, theirs = timed(lambda: pipe(docs, truncation=True, max_length=max_length, batch_size=8))
            times["pipeline"].append(dt)
        row = {"chars": chars, "docs": n_docs, "max_length": max_length,
               "same_labels": sum(a["label"] == b["label"] for a, b in zip(ours, theirs)),
               "max_score_diff": max(abs(a["score"] - b["score"]) for a, b in zip(ours, theirs)),
               **{f"{k}_docs_per_s": n_docs / statistics.median(v) for k, v in times.items()}, "times": times}
        row["speedup"] = row["taskembed_docs_per_s"] / row["pipeline_docs_per_s"]
        rows.append(row)
        print(f"long_docs: {chars:>7,} chars  predict {row['taskembed_docs_per_s']:6.1f} docs/s, pipeline {row['pipeline_docs_per_s']:6.1f} "
              f"({row['speedup']:.2f}x)  same labels {row['same_labels']}/{n_docs}  max score diff {row['max_score_diff']:.1e}", flush=True)
    return {"model": folder, "predict": True, "cut_chars_per_token": CUT_CHARS_PER_TOKEN, "rows": rows}


def _heading(title: str, report: dict) -> list[str]:
    return [f"# {title}", "", f"Command: `{report['command']}`  ", f"Machine: {report['machine']}  ",
            f"Versions: {', '.join(f'{k} {v}' for k, v in report['versions'].items())}", ""]


def render_predict(report: dict) -> str:
    lines = _heading("Long documents: predict against pipeline", report) + [
        f"The classifier in `{report['model']}`, max_length {report['rows'][0]['max_length']}; documents per second, the median of "
        f"{report['rounds']} alternating rounds in one process. `pipeline` truncates at the same max_length, batch size 8.",
        "",
        "| characters per document | documents | `predict` | `pipeline` | speed-up | same labels | max score diff |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in report["rows"]:
        lines.append(f"| {r['chars']:,} | {r['docs']} | {r['taskembed_docs_per_s']:,.1f} | {r['pipeline_docs_per_s']:,.1f} | "
                     f"{r['speedup']:.2f}x | {r['same_labels']} of {r['docs']} | {r['max_score_diff']:.1e} |")
    return "\n".join(lines) + "\n"


def render(report: dict) -> str:
    lines = _heading("Long documents: cut before tokenizing", report) + [
        f"{report['model']}, mean pooling, normalised, max_length {report['rows'][0]['max_length']}; documents per second, the median of "
        f"{report['rounds']} alternating rounds in one process. A text longer than {report['cut_chars_per_token']} characters per token "
        "of max_length is cut at a space before tokenizing ('cut', as shipped) or read whole ('whole', as before).",
        "",
        "| characters per document | documents | tokenize, whole | tokenize, cut | speed-up | embed, whole | embed, cut | speed-up | same token ids | same truncated count | max abs vector diff |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | ---: |",
    ]
    for r in report["rows"]:
        lines.append(f"| {r['chars']:,} | {r['docs']} | {r['whole_encode_docs_per_s']:,.1f} | {r['cut_encode_docs_per_s']:,.1f} | "
                     f"{r['encode_speedup']:.2f}x | {r['whole_embed_docs_per_s']:,.1f} | {r['cut_embed_docs_per_s']:,.1f} | "
                     f"{r['embed_speedup']:.2f}x | {r['same_ids']} | {r['same_truncated']} | {r['max_abs_diff']:.1e} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="1000,4000,20000,100000", help="characters per document (comma-separated)")
    p.add_argument("--docs", type=int, default=64, help="documents per size")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", default=str(ROOT / "docs" / "benchmarks"), help="folder for long-docs.md and long-docs.json")
    p.add_argument("--name", default="long-docs")
    p.add_argument("--predict", metavar="FOLDER", help="classify with this trained folder against pipeline, instead of embedding")
    args = p.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    report = run_predict(args.predict, sizes, args.docs, args.rounds) if args.predict else run(sizes, args.docs, args.rounds)
    report.update(command="python bench/long_docs.py " + " ".join(argv if argv is not None else sys.argv[1:]), rounds=args.rounds,
                  machine=hardware(machine_info()), versions=versions())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (out / f"{args.name}.md").write_text(render_predict(report) if args.predict else render(report), encoding="utf-8")
    print(f"long_docs: wrote {out / (args.name + '.md')}")
    if args.predict:
        return 0 if all(r["same_labels"] == r["docs"] for r in report["rows"]) else 1
    return 0 if all(r["same_ids"] and r["same_truncated"] for r in report["rows"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
