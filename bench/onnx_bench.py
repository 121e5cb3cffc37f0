"""Prediction through an ONNX export (onnxruntime, float32 and int8) against taskembed's own `predict`, same folder;
with --embeddings, the embedding export's vectors against `embed`'s.

    make run                                   # runs/sentiment, the default model (or name any folder with --model)
    python bench/onnx_bench.py --name onnx-cpu # docs/benchmarks/onnx-cpu.{md,json}
    python bench/onnx_bench.py --embeddings --name onnx-embed-cpu

With --embeddings, each system's vectors are compared with float32 `embed`'s: the cosine between a text's two vectors
(least and mean) and how many of each text's 10 nearest neighbours in the scored texts (by cosine) stay the same.

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
    p.add_argument("--embeddings", action="store_true", help="the embedding export (--format onnx-embeddings) against embed")
    p.add_argument("--pooling", help="with --embeddings: the pooling (default: what the head reads)")
    p.add_argument("--name", default="onnx-cpu", help="report name under --out")
    p.add_argument("--out", default=str(ROOT / "docs" / "benchmarks"))
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    import taskembed
    from taskembed.embed import as_embedder
    from taskembed.modeling import native_bf16
    from taskembed.onnx_export import ONNX_FILE, export_onnx, export_onnx_embeddings, model_bytes, onnx_outputs, session_for

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

    if args.embeddings:
        options = {"pooling": args.pooling} if args.pooling else {}
        emb = as_embedder(clf, dict(options))
        report["pooling"] = emb.describe()["pooling_detail"] + (", L2-normalised" if emb.normalize else "")

        def export(out: Path, int8: bool) -> dict[str, Any]:
            meta = export_onnx_embeddings(clf, out, int8=int8, **options)
            return {"max_abs_difference_on_probe_texts": meta["max_abs_difference_on_probe_texts"],
                    "min_cosine_on_probe_texts": meta["min_cosine_on_probe_texts"]}

        output, ours = "embeddings", {"taskembed_float32": lambda: emb.encode(texts)}
        if native_bf16(clf.device):
            emb16 = as_embedder(clf, {**options, "bf16": True})
            ours["taskembed_bf16"] = lambda: emb16.encode(texts)
    else:
        def export(out: Path, int8: bool) -> dict[str, Any]:
            meta = export_onnx(folder, out, int8=int8)
            return {"max_abs_logit_difference_on_probe_texts": meta["max_abs_logit_difference_on_probe_texts"]}

        output, ours = "logits", {"taskembed_float32": lambda: clf.logits(texts).numpy()}
        if native_bf16(clf.device):  # as load(bf16=True) requires
            clf16 = taskembed.load(folder, bf16=True)
            ours["taskembed_bf16"] = lambda: clf16.logits(texts).numpy()

    with tempfile.TemporaryDirectory() as work:
        exports = {}
        for name, int8 in (("onnx_float32", False), ("onnx_int8", True)):
            start = time.perf_counter()
            checked = export(Path(work) / name, int8)
            exports[name] = {"export_s": time.perf_counter() - start, "mb": model_bytes(Path(work) / name) / 1e6, **checked}
        sessions = {name: session_for(Path(work) / name / ONNX_FILE, threads=torch.get_num_threads()) for name in exports}
        inputs = [i.name for i in next(iter(sessions.values())).get_inputs()]
        systems = dict(ours)
        for name, session in sessions.items():
            for bs in (int(b) for b in args.batch_sizes.split(",")):
                systems[f"{name}@{bs}"] = (lambda s=session, b=bs: onnx_outputs(s, clf.tokenizer, inputs, texts, None, clf.max_length, b,
                                                                                 output=output))
        for run in systems.values():  # warm-up: kernels created, caches filled
            run()
        seconds: dict[str, list[float]] = {name: [] for name in systems}
        outputs: dict[str, Any] = {}
        for _ in range(args.rounds):
            for name, run in systems.items():
                start = time.perf_counter()
                outputs[name] = run()
                seconds[name].append(time.perf_counter() - start)

    results = vector_results(outputs, seconds, len(texts)) if args.embeddings else prediction_results(outputs, seconds, clf, truth)
    best = {}
    for name in exports:
        best[name] = max((k for k in results if k.startswith(name + "@")), key=lambda k: results[k]["texts_per_s"])
    report.update(exports=exports, results=results, best_batch=best)
    render = render_vectors if args.embeddings else render_markdown
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / f"{args.name}.md").write_text(render(report))
    print(render(report))
    return 0


def prediction_results(outputs: dict[str, Any], seconds: dict[str, list[float]], clf, truth: list[str]) -> dict[str, Any]:
    import numpy as np

    reference = outputs["taskembed_float32"].argmax(1)
    results: dict[str, Any] = {}
    for name, logits in outputs.items():
        predicted = logits.argmax(1)
        results[name] = {
            "texts_per_s": len(truth) / statistics.median(seconds[name]),
            "seconds": seconds[name],
            "accuracy": 100 * float(np.mean([clf.labels[i] == t for i, t in zip(predicted, truth)])),
            "same_prediction_as_float32": 100 * float(np.mean(predicted == reference)),
            "max_abs_logit_difference": float(np.abs(logits - outputs["taskembed_float32"]).max()),
        }
    return results


def vector_results(outputs: dict[str, Any], seconds: dict[str, list[float]], n: int, k: int = 10) -> dict[str, Any]:
    """Speed, and closeness to float32 embed's vectors: per-text cosine, and how many of each text's k nearest
    neighbours among the scored texts stay the same (the text itself left out)."""
    import numpy as np

    def unit(v):
        return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)

    def neighbours(v):
        sims = unit(v) @ unit(v).T
        np.fill_diagonal(sims, -np.inf)
        return np.argpartition(-sims, k, axis=1)[:, :k]

    reference = outputs["taskembed_float32"]
    near = neighbours(reference)
    results: dict[str, Any] = {}
    for name, vectors in outputs.items():
        cosine = (unit(vectors) * unit(reference)).sum(1)
        same = [len(set(a) & set(b)) / k for a, b in zip(neighbours(vectors), near)]
        results[name] = {"texts_per_s": n / statistics.median(seconds[name]), "seconds": seconds[name],
                         "min_cosine": float(cosine.min()), "mean_cosine": float(cosine.mean()),
                         f"same_{k}_neighbours": 100 * float(np.mean(same)),
                         "max_abs_difference": float(np.abs(vectors - reference).max())}
    return results


def render_markdown(report: dict[str, Any]) -> str:
    return _render(
        report, "ONNX export against taskembed's predict", "", "taskembed",
        [("accuracy", lambda r: f"{r['accuracy']:.2f}"), ("same prediction as float32", lambda r: f"{r['same_prediction_as_float32']:.2f}%"),
         ("max abs logit difference", lambda r: f"{r['max_abs_logit_difference']:.2g}")],
        "onnxruntime at each batch size tried (int8's answers depend on the batch: dynamic quantisation scales each batch's "
        "activations together):",
        lambda e: f"logits at most {e['max_abs_logit_difference_on_probe_texts']:.2g} from PyTorch's on the export's probe texts.")


def render_vectors(report: dict[str, Any]) -> str:
    least, same = ("cosine to float32, least", lambda r: f"{r['min_cosine']:.5f}"), \
        ("same 10 nearest neighbours", lambda r: f"{r['same_10_neighbours']:.2f}%")
    return _render(
        report, "ONNX embedding export against taskembed's embed", f", vectors: {report.get('pooling')}", "embed",
        [least, ("mean", lambda r: f"{r['mean_cosine']:.5f}"), same], "onnxruntime at each batch size tried:",
        lambda e: (f"on the export's probe texts, at most {e['max_abs_difference_on_probe_texts']:.2g} from PyTorch's vectors, "
                   f"cosine {e['min_cosine_on_probe_texts']:.4f} at the least."),
        batch_columns=[least, same])


def _render(report: dict[str, Any], title: str, model_detail: str, ours: str, columns: list, batch_note: str, checked,
            batch_columns: list | None = None) -> str:
    """The report's Markdown: the best batch of each export beside taskembed's own rows, every batch size tried, and the
    exports' sizes and checks. `columns` (and `batch_columns`, default all but the last) are (header, cell of a result)."""
    batch_columns = columns[:-1] if batch_columns is None else batch_columns
    res, base = report["results"], report["results"]["taskembed_float32"]

    def header(first: list[str], cols: list) -> list[str]:
        return ["| " + " | ".join(first + [h for h, _ in cols]) + " |", "| --- |" + " ---: |" * (len(first) - 1 + len(cols))]

    lines = [f"# {title}: {report['data']}, {report['texts']:,} texts", "", f"`{report['command']}`", "",
             f"Model `{report['model']}`{model_detail}; {hardware(report['machine'])}; {report['threads']} threads; "
             f"torch {report['versions'].get('torch')}, transformers {report['versions'].get('transformers')}.", "",
             *header(["system", "texts/s (median)", f"vs {ours} float32"], columns)]
    shown = ["taskembed_float32", "taskembed_bf16", *report["best_batch"].values()]
    for name in (n for n in shown if n in res):
        r = res[name]
        lines.append(f"| {name.replace('@', ', batch ')} | {r['texts_per_s']:,.1f} | {r['texts_per_s'] / base['texts_per_s']:.2f}x | "
                     + " | ".join(cell(r) for _, cell in columns) + " |")
    lines += ["", batch_note, "", *header(["system", "batch", "texts/s"], batch_columns)]
    lines += [f"| {n.split('@')[0]} | {n.split('@')[1]} | {r['texts_per_s']:,.1f} | " + " | ".join(cell(r) for _, cell in batch_columns) + " |"
              for n, r in res.items() if "@" in n]
    lines.append("")
    for name, e in report["exports"].items():
        lines.append(f"- `{name}`: {e['mb']:,.1f} MB, exported and checked in {e['export_s']:.1f} s; {checked(e)}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
