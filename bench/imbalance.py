"""Imbalanced intents: do balanced class weights (or the balanced sampler) raise macro-F1?

    python bench/imbalance.py            # home_intents, half the intents cut to 10% of their training examples, seeds 0,1,2

The built-in home_intents set (38 intents) is made imbalanced on purpose: every second intent in
sorted order keeps a seeded 10% of its training examples (at least 2). Validation and test splits are
left as they are, so every intent is scored on its full test set. Each variant trains
configs/imbalanced.yaml with only the imbalance handling changed:

- none      train.class_weights none, train.sampler random
- weights   train.class_weights balanced
- sampler   train.sampler balanced, no weights (the config's setting)

Writes docs/benchmarks/imbalance.json and docs/benchmarks/imbalance.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.ablations import mean_sd, write_report  # noqa: E402

VARIANTS = {
    "none": {"train.class_weights": "none", "train.sampler": "random"},
    "weights": {"train.class_weights": "balanced", "train.sampler": "random"},
    "sampler": {"train.class_weights": "none", "train.sampler": "balanced"},
}


def make_data(folder: Path, fraction: float, seed: int = 0) -> tuple[dict[str, Path], list[str], dict[str, int]]:
    """Write train/validation/test CSVs with the minority intents cut; return the paths, the minority and the train counts."""
    from taskembed.config import DataConfig
    from taskembed.data import load_raw

    raw, _ = load_raw(DataConfig(source="home_intents"))
    labels = sorted(set(raw["train"]["label"]))
    minority = labels[1::2]
    parts = []
    for label, df in raw["train"].groupby("label", sort=True):
        if label in minority:
            df = df.sample(n=max(2, round(fraction * len(df))), random_state=seed)
        parts.append(df)
    import pandas as pd

    train = pd.concat(parts).sample(frac=1.0, random_state=seed)
    paths = {}
    for split, df in (("train", train), ("validation", raw["validation"]), ("test", raw["test"])):
        paths[split] = folder / f"{split}.csv"
        df[["text", "label"]].to_csv(paths[split], index=False)
    return paths, minority, train["label"].value_counts().to_dict()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="configs/imbalanced.yaml")
    p.add_argument("--fraction", type=float, default=0.1)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--model", help="another model (a test's tiny folder for a smoke run)")
    p.add_argument("--out-dir", default=str(ROOT / "docs" / "benchmarks"), help="where the .md and .json go")
    p.add_argument("--name", default="imbalance", help="output name under docs/benchmarks/")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="an extra override for every run")
    args = p.parse_args(argv)

    import yaml

    import taskembed

    extra = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)}
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        paths, minority, counts = make_data(Path(tmp), args.fraction)
        for variant in args.variants.split(","):
            for seed in map(int, args.seeds.split(",")):
                overrides = {**VARIANTS[variant], "data.source": str(paths["train"]), "data.validation": str(paths["validation"]),
                             "data.test": str(paths["test"]), "train.seed": seed, "output.dir": f"{tmp}/{variant}-{seed}",
                             "output.embedding_report": False, "train.keep_checkpoints": 0, **extra}
                if args.model:
                    overrides["model.name"] = args.model
                r = taskembed.train(args.config, overrides, progress=False, echo=lambda _m: None)
                test = r.metrics["test"]
                f1 = {k: v["f1"] for k, v in test["per_class"].items()}
                runs.append({"variant": variant, "seed": seed, "accuracy": test["accuracy"], "macro_f1": test["macro_f1"],
                             "minority_f1": statistics.mean(f1[x] for x in minority),
                             "majority_f1": statistics.mean(v for k, v in f1.items() if k not in minority),
                             "train_seconds": r.train_seconds})
                print(f"{variant} seed {seed}: macro-F1 {100 * test['macro_f1']:.2f}, minority F1 {100 * runs[-1]['minority_f1']:.2f}", flush=True)
    command = "python bench/imbalance.py " + " ".join(argv if argv is not None else sys.argv[1:])
    out = Path(args.out_dir)
    meta = {"command": command.strip(), "fraction": args.fraction, "minority": minority, "train_counts": counts, "config": args.config}
    lines = [f"# Imbalanced intents ({args.name})", "", "Generated by `bench/imbalance.py`; do not edit by hand.", "",
             f"Command: `{meta['command']}`", "",
             f"home_intents with {len(minority)} of 38 intents cut to {100 * args.fraction:g}% of their training examples "
             f"({sum(counts.values()):,} training examples; the smallest intent has {min(counts.values())}, the largest "
             f"{max(counts.values())}). Validation and test untouched (721 each). Config `{args.config}`; mean ± standard "
             f"deviation over seeds {args.seeds}.", "",
             "| variant | test macro-F1 | test accuracy | F1 of the cut intents | F1 of the others |", "| --- | ---: | ---: | ---: | ---: |"]
    for variant in dict.fromkeys(r["variant"] for r in runs):
        rs = [r for r in runs if r["variant"] == variant]
        lines.append(f"| {variant} | {mean_sd([r['macro_f1'] for r in rs])} | {mean_sd([r['accuracy'] for r in rs])} "
                     f"| {mean_sd([r['minority_f1'] for r in rs])} | {mean_sd([r['majority_f1'] for r in rs])} |")
    write_report(out, args.name, meta, runs, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
