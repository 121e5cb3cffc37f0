"""Few-shot: what taskembed's recipes give on 8, 16 or 32 labelled examples per label, against a frozen encoder.

    python bench/fewshot.py                                   # rotten_tomatoes and home_intents, 8/16/32 per label, seeds 0,1,2
    python bench/fewshot.py --datasets rotten_tomatoes --sizes 8 --seeds 0 --recipes fewshot   # one cell

A few-shot user has a handful of labelled texts and no large validation split, so every run here sees only its draw:
N training examples of each label, drawn from the built-in training split with the run's seed, given as data in
Python (`taskembed.train(..., data={"train": few, "test": test})`); the dataset's own validation split is not used. The
test split is scored whole. Each recipe trains the same draw:

- default   the dataset's config as it is (configs/sentiment.yaml or configs/intent.yaml): 3 epochs at batch 32, with
            validation carved from the draw (10%), as a user who points the default at a small file gets.
- fewshot   configs/fewshot.yaml: no validation (the last weights), a small batch and more epochs.
- frozen    the base all-MiniLM-L6-v2 frozen, mean pooling, L2-normalised, and scikit-learn's logistic regression on
            the draw: SetFit's classifier without its contrastive fine-tuning of the encoder.

Writes docs/benchmarks/fewshot.json and docs/benchmarks/fewshot.md.
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

from bench.ablations import mean_sd, write_report  # noqa: E402

CONFIGS = {"rotten_tomatoes": "configs/sentiment.yaml", "home_intents": "configs/intent.yaml"}
BASE = "sentence-transformers/all-MiniLM-L6-v2"


def draw(train, per_label: int, seed: int):
    """N examples of each label (all of a label that has fewer), seeded, in a seeded order."""
    import pandas as pd

    few = pd.concat([g.sample(n=min(per_label, len(g)), random_state=seed) for _, g in train.groupby("label", sort=True)])
    return few.sample(frac=1.0, random_state=seed).reset_index(drop=True)[["text", "label"]]


def recipe_config(recipe: str, dataset: str, seed: int, out: str, extra: dict | None = None, model: str = BASE) -> tuple[Path, dict]:
    """(config file, overrides) of a recipe's run."""
    config = ROOT / ("configs/fewshot.yaml" if recipe == "fewshot" else CONFIGS[dataset])
    # The draw is the benchmark's: a config's own data.max_train_per_label (configs/fewshot.yaml has 16) must not cut it.
    overrides = {"output.dir": out, "output.overwrite": True, "output.baselines": False, "output.embedding_report": False,
                 "train.seed": seed, "data.split_seed": seed, "train.keep_checkpoints": 0, "data.max_train_per_label": None,
                 "model.name": model}
    if recipe == "fewshot" and dataset == "home_intents":
        overrides["data.max_length"] = 48  # as configs/intent.yaml reads these short commands
    if recipe == "fewshot":
        overrides.update(extra or {})
    return config, overrides


def planned(recipe: str, dataset: str, few, test, seed: int, extra: dict | None = None, model: str = BASE) -> int:
    """The run's optimizer steps, from the splits training reads (after any validation carved from the draw)."""
    from taskembed.api import with_data
    from taskembed.config import as_config
    from taskembed.data import load_splits
    from taskembed.loop import planned_steps

    cfg = as_config(*recipe_config(recipe, dataset, seed, "unused", extra, model))
    cfg, given = with_data(cfg, {"train": few, "test": test}, lambda _m: None)
    return planned_steps(cfg.train, len(load_splits(cfg.data, given).frames["train"]))[1]


def run_recipe(recipe: str, dataset: str, few, test, seed: int, folder: Path, extra: dict | None = None, model: str = BASE) -> dict:
    import taskembed

    config, overrides = recipe_config(recipe, dataset, seed, str(folder / f"{recipe}-{dataset}-{len(few)}-{seed}"), extra, model)
    t0 = time.perf_counter()
    res = taskembed.train(config, overrides, data={"train": few, "test": test}, progress=False, echo=lambda _m: None)
    test_m = res.metrics["test"]
    steps = planned(recipe, dataset, few, test, seed, extra, model)
    return {"accuracy": test_m["accuracy"], "macro_f1": test_m["macro_f1"], "seconds": time.perf_counter() - t0, "steps": steps}


def frozen(few, test_vectors, test_labels, seed: int, model: str = BASE) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score

    from taskembed.embed import embed

    x = embed(model, few["text"].tolist(), pooling="mean", normalize=True)
    clf = LogisticRegression(max_iter=2000, random_state=seed).fit(x, few["label"].tolist())
    pred = clf.predict(test_vectors)
    return {"accuracy": accuracy_score(test_labels, pred), "macro_f1": f1_score(test_labels, pred, average="macro"), "seconds": None,
            "steps": None}


def render(meta: dict, runs: list[dict]) -> list[str]:
    lines = ["# Few-shot: taskembed's recipes against a frozen encoder", "",
             "Generated by `bench/fewshot.py`; do not edit by hand.", "", f"Command: `{meta['command']}`", "",
             f"Machine: {meta['machine']}; torch {meta['torch']}, transformers {meta['transformers']}. Each run trains on its "
             "draw alone (N examples of each label from the built-in training split, drawn with the run's seed) and is scored "
             "on the whole test split; the dataset's own validation split is not used. Mean ± standard deviation over seeds "
             f"{meta['seeds']}, in percent. Optimizer steps are each run's planned total (the default recipe's, after the 10% of "
             "the draw it carves for validation).", "",
             "| dataset | per label | recipe | optimizer steps | test accuracy | test macro-F1 |", "| --- | ---: | --- | ---: | ---: | ---: |"]
    for cell in dict.fromkeys((r["dataset"], r["per_label"], r["recipe"]) for r in runs):
        rs = [r for r in runs if (r["dataset"], r["per_label"], r["recipe"]) == cell]
        steps = sorted({r["steps"] for r in rs if r["steps"] is not None})
        shown = "–" if not steps else ", ".join(map(str, steps))
        lines.append(f"| {cell[0]} | {cell[1]} | {cell[2]} | {shown} | {mean_sd([r['accuracy'] for r in rs])} | "
                     f"{mean_sd([r['macro_f1'] for r in rs])} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="rotten_tomatoes,home_intents")
    ap.add_argument("--sizes", default="8,16,32", help="training examples per label")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--recipes", default="default,fewshot,frozen")
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmarks"))
    ap.add_argument("--name", default="fewshot")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="an override of configs/fewshot.yaml for the fewshot recipe (repeatable), to try another setting")
    ap.add_argument("--model", default=BASE, help="the encoder (default the packaged all-MiniLM-L6-v2); a tiny one for a smoke test")
    ap.add_argument("--max-test", type=int, help="score a seeded sample of at most N test texts (for a quick run)")
    ap.add_argument("--recount-steps", metavar="JSON", help="recompute the optimizer steps of a report's runs (from their draws "
                    "and configs, without training) and write its Markdown again")
    args = ap.parse_args(argv)

    import torch
    import transformers

    from taskembed.builtin import load_builtin
    from taskembed.embed import embed

    extra = dict(item.split("=", 1) for item in args.set)
    if args.recount_steps:
        report = json.loads(Path(args.recount_steps).read_text())
        extra = report["meta"].get("fewshot_overrides", extra)  # the settings the report's runs trained with
        splits = {name: load_builtin(name) for name in dict.fromkeys(r["dataset"] for r in report["runs"])}
        for r in report["runs"]:
            if r["recipe"] != "frozen":
                s = splits[r["dataset"]]
                r["steps"] = planned(r["recipe"], r["dataset"], draw(s["train"], r["per_label"], r["seed"]), s["test"][["text", "label"]],
                                     r["seed"], extra)
        write_report(Path(args.recount_steps).parent, Path(args.recount_steps).stem, report["meta"], report["runs"],
                     render(report["meta"], report["runs"]))
        return 0
    datasets, recipes = args.datasets.split(","), args.recipes.split(",")
    sizes, seeds = [int(x) for x in args.sizes.split(",")], [int(x) for x in args.seeds.split(",")]
    runs = []
    with tempfile.TemporaryDirectory(prefix="taskembed-fewshot-") as tmp:
        for dataset in datasets:
            splits = load_builtin(dataset)
            test = splits["test"][["text", "label"]]
            if args.max_test and len(test) > args.max_test:
                test = test.sample(n=args.max_test, random_state=0).reset_index(drop=True)
            test_vectors = embed(args.model, test["text"].tolist(), pooling="mean", normalize=True) if "frozen" in recipes else None
            for size in sizes:
                for seed in seeds:
                    few = draw(splits["train"], size, seed)
                    for recipe in recipes:
                        if recipe == "frozen":
                            r = frozen(few, test_vectors, test["label"].tolist(), seed, args.model)
                        else:
                            r = run_recipe(recipe, dataset, few, test, seed, Path(tmp), extra, args.model)
                        runs.append({"dataset": dataset, "per_label": size, "train_texts": len(few), "seed": seed, "recipe": recipe, **r})
                        print(f"{dataset} {size}/label seed {seed} {recipe}: accuracy {100 * r['accuracy']:.2f}, macro-F1 "
                              f"{100 * r['macro_f1']:.2f}", flush=True)
    command = "python " + shlex.join(["bench/fewshot.py", *(sys.argv[1:] if argv is None else argv)])
    meta = {"command": command, "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
            "torch": torch.__version__, "transformers": transformers.__version__, "created": time.strftime("%Y-%m-%d"),
            "seeds": args.seeds, "fewshot_overrides": extra}
    write_report(Path(args.out), args.name, meta, runs, render(meta, runs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
