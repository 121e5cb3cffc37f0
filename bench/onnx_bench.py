"""Prediction through an ONNX export (onnxruntime, float32 and int8) against taskembed's own `predict`, same folder.

    make run                                   # runs/sentiment, the default model (or name any folder with --model)
    python bench/onnx_bench.py --name onnx-cpu # docs/benchmarks/onnx-cpu.{md,json}

On the test split of the data the model was trained on (a built-in name or --data DATA): each system's texts/s (the
median of --rounds rounds, the systems taking turns within a round, in this one process with torch's and onnxruntime's
threads both at the core count), its accuracy, and how often it predicts what PyTorch's float32 predicts. onnxruntime runs
at its best batch size of --batch-sizes (texts sorted by length, as taskembed batches them); taskembed by its own token
budget. The export's own time is recorded too. Nothing is asserted: the figures are what this machine gave.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.train_bench import hardware, machine_info, versions  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(ROOT / "runs" / "sentiment"), help="a trained folder (default runs/sentiment)")
    p.add_argument("--data", help="labelled data to score (default: the data the model was trained on), its test split")
    p.add_argument("--split", help="the split of a dataset folder or built-in (default test; a file is scored whole)")
    p.add_argument("--limit", type=int, help="score only the first N texts")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch-sizes", default="1,16,32,64", help="onnxruntime batch sizes to try (texts)")
    p.add_argument("--name", default="onnx-cpu", help="report name under --out")
    p.add_argument("--out", default=str(ROOT / "docs" / "benchmarks"))
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import numpy as np
    import torch

    import taskembed
    from taskembed.modeling import native_bf16
    from taskembed.onnx_export import ONNX_FILE, export_onnx, model_bytes, onnx_logits, session_for

    folder = Path(args.model)
    data = args.data or json.loads((folder / "training_config.json").read_text())["data"]["source"]
    report: dict[str, Any] = {"command": "python bench/onnx_bench.py " + " ".join(sys.argv[1:] if argv is None else argv),
                              "machine": machine_info(), "versions": versions(), "model": str(folder),
                              "data": str(data) if Path(data).is_file() else f"{data} [{args.split or 'test'}]",
                              "threads": torch.get_num_threads()}
    clf = taskembed.load(folder)
    rows = taskembed.evaluate(folder, data, args.split, predictions=True)["predictions"][: args.limit]
    texts, truth = [r["text"] for r in rows], [r["label"] for r in rows]
    if clf.multi_label or clf.text_pair_column:
        raise SystemExit("bench/onnx_bench.py measures single-text, single-label models")
    report["texts"] = len(texts)

    with tempfile.TemporaryDirectory() as work:
        exports = {}
        for name, int8 in (("onnx_float32", False), ("onnx_int8", True)):
            start = time.perf_counter()
            meta = export_onnx(folder, Path(work) / name, int8=int8)
            exports[name] = {"export_s": time.perf_counter() - start, "mb": model_bytes(Path(work) / name) / 1e6,
                             "max_abs_logit_difference_on_probe_texts": meta["max_abs_logit_difference_on_probe_texts"]}
        sessions = {name: session_for(Path(work) / name / ONNX_FILE, threads=torch.get_num_threads()) for name in exports}
        inputs = meta["inputs"]
        systems = {"taskembed_float32": lambda: clf.logits(texts).numpy()}
        if native_bf16(clf.device):  # as load(bf16=True) requires
            clf16 = taskembed.load(folder, bf16=True)
            systems["taskembed_bf16"] = lambda: clf16.logits(texts).numpy()
        for name, session in sessions.items():
            for bs in (int(b) for b in args.batch_sizes.split(",")):
                systems[f"{name}@{bs}"] = (lambda s=session, b=bs: onnx_logits(s, clf.tokenizer, inputs, texts, None, clf.max_length, b))
        for run in systems.values():  # warm-up: kernels created, caches filled
            run()
        seconds: dict[str, list[float]] = {name: [] for name in systems}
        outputs: dict[str, Any] = {}
        for _ in range(args.rounds):
            for name, run in systems.items():
                start = time.perf_counter()
                outputs[name] = run()
                seconds[name].append(time.perf_counter() - start)

    reference = outputs["taskembed_float32"].argmax(1)
    results: dict[str, Any] = {}
    for name, logits in outputs.items():
        predicted = logits.argmax(1)
        results[name] = {
            "texts_per_s": len(texts) / statistics.median(seconds[name]),
            "seconds": seconds[name],
            "accuracy": 100 * float(np.mean([clf.labels[i] == t for i, t in zip(predicted, truth)])),
            "same_prediction_as_float32": 100 * float(np.mean(predicted == reference)),
            "max_abs_logit_difference": float(np.abs(logits - outputs["taskembed_float32"]).max()),
        }
    best = {}
    for name in exports:
        best[name] = max((k for k in results if k.startswith(name + "@")), key=lambda k: results[k]["texts_per_s"])
    report.update(exports=exports, results=results, best_batch=best)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / f"{args.name}.md").write_text(render_markdown(report))
    print(render_markdown(report))
    return 0


def render_markdown(report: dict[str, Any]) -> str:
    res, base = report["results"], report["results"]["taskembed_float32"]
    lines = [f"# ONNX export against taskembed's predict: {report['data']}, {report['texts']:,} texts", "",
             f"`{report['command']}`", "", f"Model `{report['model']}`; {hardware(report['machine'])}; {report['threads']} threads; "
             f"torch {report['versions'].get('torch')}, transformers {report['versions'].get('transformers')}.", "",
             "| system | texts/s (median) | vs taskembed float32 | accuracy | same prediction as float32 | max abs logit difference |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    shown = ["taskembed_float32", "taskembed_bf16", *report["best_batch"].values()]
    for name in (n for n in shown if n in res):
        r = res[name]
        label = name.replace("@", ", batch ")
        lines.append(f"| {label} | {r['texts_per_s']:,.1f} | {r['texts_per_s'] / base['texts_per_s']:.2f}x | {r['accuracy']:.2f} | "
                     f"{r['same_prediction_as_float32']:.2f}% | {r['max_abs_logit_difference']:.2g} |")
    lines += ["", "onnxruntime at each batch size tried (int8's answers depend on the batch: dynamic quantisation scales each "
              "batch's activations together):", "", "| system | batch | texts/s | accuracy | same prediction as float32 |",
              "| --- | ---: | ---: | ---: | ---: |"]
    lines += [f"| {n.split('@')[0]} | {n.split('@')[1]} | {r['texts_per_s']:,.1f} | {r['accuracy']:.2f} | {r['same_prediction_as_float32']:.2f}% |"
              for n, r in res.items() if "@" in n]
    lines.append("")
    for name, e in report["exports"].items():
        lines.append(f"- `{name}`: {e['mb']:,.1f} MB, exported and checked in {e['export_s']:.1f} s; logits at most "
                     f"{e['max_abs_logit_difference_on_probe_texts']:.2g} from PyTorch's on the export's probe texts.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
