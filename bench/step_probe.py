"""Time one plain training step of all-MiniLM-L6-v2 under a few switches, outside taskembed's loop.

    python bench/step_probe.py                 # bf16 autocast, eager
    python bench/step_probe.py --compile       # the same step under torch.compile(dynamic=True)
    python bench/step_probe.py --no-dropout    # what dropout costs
    python bench/step_probe.py --fp32
    python bench/step_probe.py --attn eager    # transformers' attention implementation (default sdpa)

A probe for deciding what is worth building, not a benchmark of taskembed: batches of 32 consecutive
rotten_tomatoes training texts padded to their longest, cross-entropy, gradient clipping, fused AdamW.
It prints the time of the first steps (where torch.compile compiles) and the mean of the rest.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--no-dropout", action="store_true")
    p.add_argument("--fp32", action="store_true")
    p.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"])
    p.add_argument("--steps", type=int, default=12, help="steps in all; the first 3 warm up")
    args = p.parse_args(argv)

    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from taskembed.config import DataConfig
    from taskembed.data import load_splits
    from taskembed.modeling import resolve_model

    hf_logging.set_verbosity_error()
    torch.manual_seed(0)
    path = resolve_model(args.model)
    tok = AutoTokenizer.from_pretrained(path)
    extra = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0} if args.no_dropout else {}
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2, dtype=torch.float32,
                                                               attn_implementation=args.attn, **extra)
    texts = list(load_splits(DataConfig(source="rotten_tomatoes")).frames["train"]["text"])[: 32 * args.steps]
    batches = [tok(texts[i:i + 32], padding=True, truncation=True, max_length=128, return_tensors="pt") for i in range(0, len(texts), 32)]
    labels = torch.randint(0, 2, (32,))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    model.train()
    fwd = torch.compile(model, dynamic=True) if args.compile else model

    def step(batch) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=not args.fp32):
            loss = fwd(**batch, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    t0 = time.perf_counter()
    for b in batches[:3]:
        step(b)
    warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    for b in batches[3:]:
        step(b)
    per_step = (time.perf_counter() - t0) / len(batches[3:])
    tokens = sum(int(b["attention_mask"].numel()) for b in batches[3:]) / len(batches[3:])
    print(f"{'compile' if args.compile else 'eager'}, {'fp32' if args.fp32 else 'bf16 autocast'}"
          f"{', no dropout' if args.no_dropout else ''}, {args.attn} attention: first 3 steps {warm:.1f} s, then {1000 * per_step:.0f} ms/step "
          f"({tokens:.0f} padded tokens per batch, {torch.get_num_threads()} threads)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
