"""How close taskembed runs to this machine's matrix-multiply ceiling, and what speed-up that leaves.

    python bench/roofline.py                # all-MiniLM-L6-v2, rotten_tomatoes; about two minutes on 2 cores
    python bench/roofline.py --model tests-tiny-folder --texts 40 --train 64 --out-dir /tmp/r   # a smoke run

An encoder spends nearly all its arithmetic in the four linear layers of each transformer layer. So:

1. Ceiling: the rate of `torch.nn.functional.linear` on this machine at the model's own shapes (hidden x
   hidden, hidden x intermediate and back), at the rows one batch holds, in float32 and in bfloat16, with
   the same threads as the runs. In float32 also oneDNN's kernel (taskembed/onednn.py), which on AMD CPUs
   is about twice MKL's; the ceiling is the faster of the two.
2. Achieved: taskembed's float32 predict, its opt-in bf16 predict and its training (bf16 autocast where the
   hardware has it), each on rotten_tomatoes, counted in model FLOPs: 2 x (weights of the linear layers)
   per token plus attention (4 x length x hidden per token and layer) for a forward pass, 3x that for a
   training step (forward, and a backward that costs two of them). Embedding lookups, norms, softmax,
   GELU and the optimizer are not counted: they are the overhead.
3. The bound: ceiling / achieved is the most any implementation of the same arithmetic could gain on
   this machine. If it is below a target speed-up over a baseline that already does the same arithmetic,
   that target cannot be met without doing less arithmetic (lower precision, fewer tokens, a smaller model).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.ablations import write_report  # noqa: E402


def linear_rate(rows: int, hidden: int, inter: int, dtype, repeats: int, onednn: bool = False) -> float:
    """FLOP/s of one layer's four linear maps (QKV as three, output, FFN up and down) at `rows` tokens;
    onednn: through oneDNN's float32 kernel, as taskembed's float32 inference runs them, instead of F.linear."""
    import torch

    linear = (lambda x, w: torch.ops.mkldnn._linear_pointwise(x, w, None, "none", [], "")) if onednn else torch.nn.functional.linear
    shapes = [(hidden, hidden)] * 4 + [(hidden, inter), (inter, hidden)]  # (in, out)
    xs = {n: torch.randn(rows, n, dtype=dtype) for n in {hidden, inter}}
    ws = [torch.randn(o, i, dtype=dtype) for i, o in shapes]
    flops = sum(2 * rows * i * o for i, o in shapes)
    times = []
    with torch.inference_mode():
        for _ in range(3):  # warm the kernels and the caches
            for (i, _o), w in zip(shapes, ws):
                linear(xs[i], w)
        for _ in range(repeats):
            t0 = time.perf_counter()
            for (i, _o), w in zip(shapes, ws):
                linear(xs[i], w)
            times.append(time.perf_counter() - t0)
    return flops / statistics.median(times)


def forward_flops(tokens: int, attention_tokens_x_len: float, hidden: int, inter: int, layers: int,
                  head_rows: int | None = None) -> float:
    """Model FLOPs of a forward pass over `tokens` tokens; attention_tokens_x_len = sum over tokens of the padded row length.

    head_rows: the top layer trimmed to the row the head reads (train.trim_top_layer), one per text. That
    layer then projects keys and values for every token and does the rest for head_rows rows, each
    attending over its text's keys (`tokens` in all): the FLOPs done, not those of the full model.
    """
    full_linear = 2 * (4 * hidden * hidden + 2 * hidden * inter)
    full_layer = full_linear * tokens + 4 * hidden * attention_tokens_x_len
    if head_rows is None:
        return layers * full_layer
    top = 2 * 2 * hidden * hidden * tokens + (full_linear - 2 * 2 * hidden * hidden) * head_rows + 4 * hidden * tokens
    return (layers - 1) * full_layer + top


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    p.add_argument("--texts", type=int, help="test texts to predict (default: the whole test split)")
    p.add_argument("--train", type=int, default=2000, help="training examples for the training measurement (1 epoch)")
    p.add_argument("--repeats", type=int, default=30, help="timed repetitions per GEMM measurement")
    p.add_argument("--out-dir", default="docs/benchmarks")
    p.add_argument("--name", default="roofline-cpu")
    args = p.parse_args(argv)

    import torch
    import transformers
    from transformers import AutoConfig

    import taskembed
    from taskembed.api import device_name
    from taskembed.config import DataConfig
    from taskembed.data import encode, eval_batches, load_splits
    from taskembed.modeling import can_trim_top_layer, native_bf16, resolve_model
    from taskembed.onednn import available as onednn_available

    device = torch.device("cpu")
    threads = torch.get_num_threads()
    path = resolve_model(args.model)
    mc = AutoConfig.from_pretrained(path)
    hidden, inter, layers = mc.hidden_size, mc.intermediate_size, mc.num_hidden_layers
    bf16 = native_bf16(device)
    splits = load_splits(DataConfig(source="rotten_tomatoes"))
    texts = list(splits.frames["test"]["text"])[: args.texts]

    with tempfile.TemporaryDirectory() as tmp:
        # Training: the default recipe on a subset, no validation pass inside the timed call.
        over = {"data.source": "rotten_tomatoes", "data.validation_fraction": 0.0, "data.max_train_samples": args.train,
                "model.name": args.model, "train.epochs": 1, "data.max_length": min(128, mc.max_position_embeddings), "output.dir": f"{tmp}/model", "output.baselines": False,
                "output.embedding_report": False, "output.calibrate": False, "train.keep_checkpoints": 0}
        result = taskembed.train(None, over, progress=False, echo=lambda _m: None)
        clf = taskembed.load(result.output_dir)
        predict_trimmed = can_trim_top_layer(clf.model)
        enc = encode(clf.tokenizer, texts, max_length=clf.max_length)
        tokens = sum(enc.lengths)
        # each real token attends over its batch's padded width (predict batches hold 2,048 tokens)
        att = sum(enc.lengths[i] * max(enc.lengths[j] for j in b) for b in eval_batches(enc.lengths, 2048) for i in b)
        run = json.loads((result.output_dir / "run.json").read_text())
        train_tps = run["tokens_per_second"]
        train_len = train_tps / run["samples_per_second"]  # real tokens per training example

        def timed(c) -> float:
            c.predict(texts[:16])
            t0 = time.perf_counter()
            c.predict(texts)
            return time.perf_counter() - t0

        pred_fp32_s = timed(clf)
        pred_bf16_s = timed(taskembed.load(result.output_dir, bf16=True)) if bf16 else None

    predict_rows = 2048
    train_rows = int(32 * train_len)
    ceiling = {"float32_predict": linear_rate(predict_rows, hidden, inter, torch.float32, args.repeats),
               "float32_train": linear_rate(train_rows, hidden, inter, torch.float32, args.repeats)}
    by_kernel = {"float32_predict_torch": ceiling["float32_predict"]}
    if onednn_available():
        by_kernel["float32_predict_onednn"] = linear_rate(predict_rows, hidden, inter, torch.float32, args.repeats, onednn=True)
        ceiling["float32_predict"] = max(ceiling["float32_predict"], by_kernel["float32_predict_onednn"])
        ceiling["float32_train"] = max(ceiling["float32_train"],
                                       linear_rate(train_rows, hidden, inter, torch.float32, args.repeats, onednn=True))
    if bf16:
        ceiling["bf16_predict"] = linear_rate(predict_rows, hidden, inter, torch.bfloat16, args.repeats)
        ceiling["bf16_train"] = linear_rate(train_rows, hidden, inter, torch.bfloat16, args.repeats)
    # Prediction, and training by default (run.json says), compute the top layer for the [CLS] row only where
    # the model allows it: count the FLOPs done, one head row per text.
    fwd = forward_flops(tokens, att, hidden, inter, layers, head_rows=len(texts) if predict_trimmed else None)
    # training: per token the forward, plus a backward of twice that; attention at the run's mean length
    train_flop_per_token = 3 * forward_flops(1, train_len, hidden, inter, layers,
                                             head_rows=1 / train_len if run.get("trim_top_layer") else None)
    achieved = {"float32_predict": fwd / pred_fp32_s, "train": train_tps * train_flop_per_token}
    if pred_bf16_s:
        achieved["bf16_predict"] = fwd / pred_bf16_s
    train_key = "bf16_train" if run.get("bf16") else "float32_train"
    rows = [("predict, float32", "float32_predict", "float32_predict", len(texts) / pred_fp32_s),
            ("training step (default recipe)", "train", train_key, run["samples_per_second"])]
    if pred_bf16_s:
        rows.insert(1, ("predict, bf16 (opt-in)", "bf16_predict", "bf16_predict", len(texts) / pred_bf16_s))
    table = []
    for label, a, c, rate in rows:
        table.append({"what": label, "per_s": rate, "achieved_gflops": achieved[a] / 1e9, "ceiling_gflops": ceiling[c] / 1e9,
                      "fraction_of_ceiling": achieved[a] / ceiling[c], "max_speedup_same_arithmetic": ceiling[c] / achieved[a]})

    meta = {"command": ("python bench/roofline.py " + " ".join(argv if argv is not None else sys.argv[1:])).strip(),
            "machine": device_name(device) + f", {platform.system()}", "threads": threads, "torch": torch.__version__,
            "transformers": transformers.__version__, "model": args.model, "hidden": hidden, "intermediate": inter,
            "layers": layers, "test_texts": len(texts), "test_tokens": tokens, "train_examples": args.train,
            "train_mean_tokens": train_len, "train_bf16": bool(run.get("bf16")), "train_trimmed": bool(run.get("trim_top_layer")),
            "predict_trimmed": predict_trimmed, "ceiling_gflops": {k: v / 1e9 for k, v in ceiling.items()},
            "float32_predict_ceiling_by_kernel_gflops": {k: v / 1e9 for k, v in by_kernel.items()},
            "predict_rows": predict_rows, "train_rows": train_rows}
    lines = ["# Roofline: taskembed against this machine's matrix-multiply ceiling", "",
             "Generated by `bench/roofline.py`; do not edit by hand.", "", f"Command: `{meta['command']}`", "",
             f"Machine: {meta['machine']}, {threads} torch threads; torch {meta['torch']}, transformers {meta['transformers']}. "
             f"Model {args.model} ({layers} layers, hidden {hidden}, intermediate {inter}). Predict: the {len(texts):,} "
             f"rotten_tomatoes test texts ({tokens:,} tokens). Training: the default recipe, {args.train:,} examples, one epoch "
             f"({'bf16 autocast' if run.get('bf16') else 'float32'}).", "",
             "Ceiling: `torch.nn.functional.linear` at the model's shapes, at the rows of one batch "
             f"({predict_rows:,} for predict, {train_rows:,} for a training batch of 32), median of {args.repeats}; in float32 the "
             "faster of that and oneDNN's kernel (at predict's rows: "
             + ", ".join(f"{k.rsplit('_', 1)[1]} {v / 1e9:,.1f}" for k, v in by_kernel.items()) + " GFLOP/s). "
             "Achieved: model FLOPs done (linear layers + attention; training 3x forward"
             + ("; the top layer for one row per text, as taskembed computes it" if predict_trimmed else "")
             + ") per second of the real run.", "",
             "| run | texts/s | achieved GFLOP/s | ceiling GFLOP/s | fraction of ceiling | largest possible speed-up, same arithmetic |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in table:
        lines.append(f"| {r['what']} | {r['per_s']:,.1f} | {r['achieved_gflops']:,.1f} | {r['ceiling_gflops']:,.1f} | "
                     f"{100 * r['fraction_of_ceiling']:.0f}% | {r['max_speedup_same_arithmetic']:.2f}x |")
    write_report(Path(args.out_dir), args.name, meta, table, lines)
    for r in table:
        print(f"{r['what']}: {r['achieved_gflops']:.1f} of {r['ceiling_gflops']:.1f} GFLOP/s ({100 * r['fraction_of_ceiling']:.0f}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
