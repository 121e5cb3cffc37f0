"""`taskembed` console entry point. Each subcommand is a plain function that tests call directly.

User mistakes (UserError) print one line to stderr and exit with 2; bugs keep their traceback.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path
from typing import Sequence

from taskembed.errors import UserError


def cmd_train(config: str | None, overrides: Sequence[str] = (), dry_run: bool = False, progress: bool = True) -> int:
    from taskembed import api
    from taskembed.config import dump_config, load_config, parse_overrides
    from taskembed.artifacts import metrics_table

    cfg = load_config(config, parse_overrides(list(overrides)))
    if dry_run:
        print(dump_config(cfg))
        print(api.plan(cfg).table())
        return 0
    print("config:\n" + "\n".join("  " + line for line in dump_config(cfg).splitlines()))
    result = api.train(cfg, progress=progress)
    if int(os.environ.get("RANK", "0")) == 0:
        print()
        print(metrics_table(result.metrics, result.baselines))
        print(f"\nsaved to {result.output_dir}/ (training took {result.train_seconds:.0f} s)")
        print(f"try it:   taskembed predict {result.output_dir} \"a text to classify\"")
        print(f"demo:     taskembed demo {result.output_dir}")
    return 0


def cmd_plan(config: str | None, overrides: Sequence[str] = (), as_json: bool = False) -> int:
    from taskembed import api
    from taskembed.config import load_config, parse_overrides

    p = api.plan(load_config(config, parse_overrides(list(overrides))))
    print(json.dumps(p.to_json(), indent=2) if as_json else p.table())
    return 0


def cmd_evaluate(model: str, data: str, split: str = "test", out: str | None = None) -> int:
    from taskembed import api

    m = api.evaluate(model, data, split)
    print(f"accuracy {100 * m['accuracy']:.2f}  macro-F1 {100 * m['macro_f1']:.2f}  loss {m['loss']:.4f}  n {m['n']}  truncated {m['truncated']}")
    print("| label | precision | recall | F1 | support |\n| --- | ---: | ---: | ---: | ---: |")
    for name, v in m["per_class"].items():
        print(f"| {name} | {100 * v['precision']:.1f} | {100 * v['recall']:.1f} | {100 * v['f1']:.1f} | {v['support']} |")
    if out:
        Path(out).write_text(json.dumps(m, indent=2) + "\n", encoding="utf-8")
        print(f"written to {out}")
    return 0


def cmd_predict(model: str, texts: Sequence[str] = (), file: str | None = None, out: str | None = None, text_column: str = "text") -> int:
    from taskembed import api
    from taskembed.data import texts_from_file

    if bool(texts) == bool(file):
        raise UserError("give texts as arguments or --file FILE (one of them)")
    inputs = list(texts) if texts else texts_from_file(file, text_column)
    if out and Path(out).suffix.lower() not in (".csv", ".jsonl"):
        raise UserError(f"--out {out}: use a .csv or .jsonl file name")
    clf = api.load(model)
    preds = clf.predict(inputs)
    if out:
        tmp = Path(out).with_name(Path(out).name + ".partial")
        with tmp.open("w", encoding="utf-8", newline="") as fh:
            if out.lower().endswith(".jsonl"):
                for t, p in zip(inputs, preds):
                    fh.write(json.dumps({"text": t, **p}, ensure_ascii=False) + "\n")
            else:
                w = csv.writer(fh)
                w.writerow(["text", "label", "score", *[f"score_{x}" for x in clf.labels]])
                for t, p in zip(inputs, preds):
                    w.writerow([t, p["label"], f"{p['score']:.6f}", *[f"{p['scores'][x]:.6f}" for x in clf.labels]])
        tmp.replace(out)
        print(f"{len(preds)} predictions written to {out}")
    else:
        for t, p in zip(inputs, preds):
            print(f"{p['label']}\t{p['score']:.4f}\t{t}")
    return 0


def cmd_datasets() -> int:
    from taskembed.builtin import describe_builtins

    for d in describe_builtins():
        print(f"{d['name']}: {d['description']}")
        print(f"  source: {d['source']}")
        if d.get("splits") is None:
            print(f"  unavailable: {d.get('error')}")
            continue
        print("  splits: " + ", ".join(f"{s} {n:,}" for s, n in d["splits"].items()))
        classes = sorted(d["classes"].items(), key=lambda kv: -kv[1])
        shown = ", ".join(f"{k} {v}" for k, v in classes[:10])
        print(f"  {len(classes)} classes (train): {shown}{' ...' if len(classes) > 10 else ''}")
    return 0


def cmd_demo(models: Sequence[str], host: str = "127.0.0.1", port: int | None = None, share: bool = False) -> int:
    demo_app = Path(__file__).resolve().parent.parent / "demo" / "app.py"
    if not demo_app.exists():
        raise UserError("the demo needs the repository's demo/ folder; run it from a source checkout")
    import runpy

    sys.argv = [str(demo_app), *models, "--host", host, *(["--port", str(port)] if port else []), *(["--share"] if share else [])]
    runpy.run_path(str(demo_app), run_name="__main__")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="taskembed", description="Fine-tune a transformer classifier with discriminative learning rates.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a classifier from a YAML config (overrides: --section.key value)")
    t.add_argument("config", nargs="?", help="YAML config (default: built-in defaults = configs/sentiment.yaml)")
    t.add_argument("--dry-run", action="store_true", help="print the resolved config and lr plan, train nothing")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")

    pl = sub.add_parser("plan", help="print the learning-rate plan of a config without training")
    pl.add_argument("config", nargs="?")
    pl.add_argument("--json", action="store_true", help="print the plan as JSON")

    e = sub.add_parser("evaluate", help="score a trained model on labelled data")
    e.add_argument("model")
    e.add_argument("data", help="a file, a save_to_disk folder or a built-in dataset name")
    e.add_argument("--split", default="test", help="split of a folder or built-in dataset (default: test)")
    e.add_argument("--out", help="write the metrics as JSON here")

    pr = sub.add_parser("predict", help="predict labels for texts")
    pr.add_argument("model")
    pr.add_argument("texts", nargs="*")
    pr.add_argument("--file", help="texts from a .txt (one per line) or a table file")
    pr.add_argument("--text-column", default="text")
    pr.add_argument("--out", help="write predictions to .csv or .jsonl")

    sub.add_parser("datasets", help="list the built-in offline datasets with sizes and classes")

    d = sub.add_parser("demo", help="open the Gradio demo for one or more model folders")
    d.add_argument("models", nargs="+")
    d.add_argument("--host", default="127.0.0.1")
    d.add_argument("--port", type=int)
    d.add_argument("--share", action="store_true")
    return p


def _split_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
    """For train/plan: the subcommand, its optional config path and flags go to argparse; `--x.y value` pairs are overrides."""
    if not argv or argv[0] not in ("train", "plan"):
        return argv, []
    own = {"--dry-run", "--no-progress", "--json", "-h", "--help"}
    head, rest = argv[:1], argv[1:]
    if rest and not rest[0].startswith("-"):
        head.append(rest.pop(0))
    overrides = []
    for tok in rest:
        (head if tok in own else overrides).append(tok)
    return head, overrides


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    known, extra = _split_overrides(argv)
    args = parser.parse_args(known)
    try:
        if args.command == "train":
            return cmd_train(args.config, extra, dry_run=args.dry_run, progress=not args.no_progress)
        if args.command == "plan":
            return cmd_plan(args.config, extra, as_json=args.json)
        if args.command == "evaluate":
            return cmd_evaluate(args.model, args.data, args.split, args.out)
        if args.command == "predict":
            return cmd_predict(args.model, args.texts, args.file, args.out, args.text_column)
        if args.command == "datasets":
            return cmd_datasets()
        if args.command == "demo":
            return cmd_demo(args.models, args.host, args.port, args.share)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 1


if __name__ == "__main__":
    sys.exit(main())
