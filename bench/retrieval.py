"""Retrieval with a fine-tuned intent classifier's vectors, against the base encoder's: what a RAG user gets.

    python bench/retrieval.py                       # BANKING77 from ../shared/data/banking77, 4,000 training texts, 3 epochs
    python bench/retrieval.py --max-train 1000 --epochs 1 --name retrieval-smoke

The BANKING77 training split is shuffled (seed 0) and cut in two: the first --max-train texts train a classifier with
the intent config's defaults (the discriminative rates, validation carved from them), and the rest are the corpus, texts
the model never saw. The test split's texts are the queries, and a hit is a corpus text of the query's intent. Each
representation is L2-normalised and ranked by cosine:

- base mean     the base all-MiniLM-L6-v2, mean pooling (what it was trained for)
- tuned head    the fine-tuned model's head vector, `taskembed embed`'s default
- tuned mean    the fine-tuned model's last layer, mean pooling (`--pooling mean`)

Reported: P@1, P@5 (the share of the top 5 of the query's intent), hit@5 (any of the top 5), and how well a score
threshold keeps off-topic queries out: the top-1 score of ten queries no bank customer would send, against the
in-domain queries' top-1 scores (the share of in-domain queries scoring above the highest off-topic one).

Writes docs/benchmarks/<name>.json and .md. BANKING77 is for benchmarks only: without it the script says so and stops.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.ablations import write_report  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "banking77"
BASE = "sentence-transformers/all-MiniLM-L6-v2"
OFF_TOPIC = [
    "what is the weather in Paris tomorrow",
    "recipe for chocolate cake",
    "who won the football match last night",
    "write me a poem about the sea",
    "how tall is Mount Everest",
    "recommend a good science fiction novel",
    "how do I fix a flat bicycle tyre",
    "what time does the cinema open",
    "translate good morning into Spanish",
    "best way to learn to play the guitar",
]


def rank_metrics(queries, corpus, q_labels, c_labels, k: int = 5) -> dict:
    import numpy as np

    sims = queries @ corpus.T
    top = np.argsort(-sims, axis=1)[:, :k]
    same = np.asarray(c_labels)[top] == np.asarray(q_labels)[:, None]
    return {"p_at_1": float(same[:, 0].mean()), "p_at_5": float(same.mean()), "hit_at_5": float(same.any(axis=1).mean()),
            "top1_scores": sims.max(axis=1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--max-train", type=int, default=4000, help="training texts (the rest of the split is the corpus)")
    p.add_argument("--epochs", type=float, default=3.0)
    p.add_argument("--name", default="retrieval-banking77")
    p.add_argument("--out", default=str(ROOT / "docs" / "benchmarks"))
    args = p.parse_args(argv)
    if not (DATA / "train.csv").is_file():
        print(f"BANKING77 is not at {DATA}: nothing to measure")
        return 1

    import numpy as np
    import pandas as pd

    import taskembed
    from taskembed.embed import Embedder

    train = pd.read_csv(DATA / "train.csv").sample(frac=1.0, random_state=0).reset_index(drop=True)
    test = pd.read_csv(DATA / "test.csv")
    fit_rows, corpus = train.iloc[: args.max_train], train.iloc[args.max_train:]
    with tempfile.TemporaryDirectory(prefix="taskembed-retrieval-") as tmp:
        source = Path(tmp) / "train.csv"
        fit_rows.to_csv(source, index=False)
        started = time.perf_counter()
        result = taskembed.train(str(ROOT / "configs" / "intent.yaml"), {"data.source": str(source), "data.label_column": "category",
                                                         "train.epochs": args.epochs, "output.dir": str(Path(tmp) / "model"),
                                                         "output.embedding_report": False},
                                 progress=False, echo=None)
        train_s = time.perf_counter() - started
        accuracy = result.metrics.get("validation", {}).get("accuracy")
        sides = {"base mean": Embedder.load(BASE, pooling="mean", normalize=True),
                 "tuned head": Embedder.load(result.output_dir, normalize=True),
                 "tuned mean": Embedder.load(result.output_dir, pooling="mean", normalize=True)}
        runs = []
        for name, emb in sides.items():
            c, q, off = (emb.encode(list(x)) for x in (corpus["text"], test["text"], OFF_TOPIC))
            m = rank_metrics(q, c, list(test["category"]), list(corpus["category"]))
            off_top = (off @ c.T).max(axis=1)
            top1 = m.pop("top1_scores")
            runs.append({"vectors": name, **m, "in_domain_top1_median": float(np.median(top1)),
                         "off_topic_top1_median": float(np.median(off_top)), "off_topic_top1_max": float(off_top.max()),
                         "in_domain_above_off_topic_max": float((top1 > off_top.max()).mean())})
            print(json.dumps(runs[-1]))
    meta = {"command": shlex.join(["python", "bench/retrieval.py", *(argv if argv is not None else sys.argv[1:])]),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": f"{platform.processor() or platform.machine()}",
            "model": BASE, "train_texts": len(fit_rows), "corpus_texts": len(corpus), "queries": len(test),
            "epochs": args.epochs, "train_seconds": train_s, "validation_accuracy": accuracy, "off_topic_queries": OFF_TOPIC}
    lines = [
        "# Retrieval with a fine-tuned intent classifier's vectors (BANKING77)",
        "",
        f"Produced by `{meta['command']}` on {meta['created']}.",
        "",
        f"A classifier trained on {len(fit_rows):,} BANKING77 training texts ({args.epochs:g} epochs, configs/intent.yaml, "
        f"validation accuracy {100 * accuracy:.2f}) against the base {BASE}. Corpus: the other {len(corpus):,} training "
        f"texts (never trained on); queries: the {len(test):,} test texts; a hit is a corpus text of the query's intent. "
        "Cosine over L2-normalised vectors.",
        "",
        "| vectors | P@1 | P@5 | hit@5 | in-domain top-1 score, median | off-topic top-1 score, median / max | in-domain queries above the off-topic max |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        *[f"| {r['vectors']} | {100 * r['p_at_1']:.1f} | {100 * r['p_at_5']:.1f} | {100 * r['hit_at_5']:.1f} | "
          f"{r['in_domain_top1_median']:.3f} | {r['off_topic_top1_median']:.3f} / {r['off_topic_top1_max']:.3f} | "
          f"{100 * r['in_domain_above_off_topic_max']:.1f}% |" for r in runs],
        "",
        "Off-topic queries: " + "; ".join(f"\"{q}\"" for q in OFF_TOPIC) + ".",
    ]
    write_report(Path(args.out), args.name, meta, runs, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
