"""Kill a training run again and again, resume it each time, and check it ends exactly where an uninterrupted run ends.

    python bench/fault_injection.py                 # 10 kill points, seed 0, a tiny model trained on the fly
    python bench/fault_injection.py --kills 20 --seed 3 --workdir /tmp/fi

Each launch is `python -m taskembed.cli train ... --resume` in its own process. A kill point is one of:

- sigkill:    SIGKILL a random 0-150 ms after the launch's k-th new checkpoint is complete (mid-step,
              mid-evaluation or in the middle of the next checkpoint's write, wherever it lands);
- mid-write:  SIGKILL while a checkpoint is being written, deterministically: the launch runs with the
              test-only hook TASKEMBED_TEST_SLOW_CHECKPOINT, which sleeps after the files and before the
              COMPLETE.json marker, and the kill comes once the files are in the temporary folder;
- sigterm / sigint: the graceful stop: the run finishes its step, checkpoints and exits 143 / 130 with
              one line saying how to resume.

After the last kill the run is resumed to the end, and its output folder is compared with an
uninterrupted run's (which writes no checkpoints at all): every tensor of model.safetensors (torch.equal), log.jsonl (losses, rates,
gradient norms, validation scores and the running hash of the batches, step by step) and metrics.json.
tests/test_resume.py runs the same driver with three kill points.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

# Checkpoint every 3 steps; the slow hook paces each checkpoint so a kill always lands before the run ends.
PACE_S = "0.25"


def build_tiny_model(folder: Path) -> Path:
    """A 2-layer BERT (hidden 32) with a WordPiece tokenizer trained on the fly, like tests/conftest.py."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator([r["text"] for r in make_rows(400, seed=123)],
                            trainers.WordPieceTrainer(vocab_size=200, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]))
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                                                       special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
    BertTokenizerFast(tokenizer_object=tok, model_max_length=64).save_pretrained(folder)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=37, max_position_embeddings=64)).save_pretrained(folder)
    return folder


def make_rows(n: int, seed: int) -> list[dict[str, str]]:
    good, bad = "great wonderful superb moving charming".split(), "dull awful boring tedious clumsy".split()
    filler = "film movie story plot actor scene the a and it is".split()
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        words = good if i % 2 else bad
        text = " ".join(rng.choice(words) if rng.random() < 0.4 else rng.choice(filler) for _ in range(rng.randint(3, 12)))
        rows.append({"text": f"{text} {rng.choice(words)}", "label": "pos" if i % 2 else "neg"})
    return rows


def write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def overrides(model: Path, data: Path, test: Path, out: Path, epochs: int = 3, validation: bool = False) -> dict[str, Any]:
    """A small run: epochs of 33 steps (batch 8, 264 rows), a checkpoint every 3 steps, one thread, dropout on."""
    return {
        "data.source": str(data), "data.test": str(test), "data.max_length": 32, "data.validation_fraction": 0.1 if validation else 0.0,
        "model.name": str(model), "model.dropout": 0.1,
        "train.epochs": epochs, "train.batch_size": 8, "train.lr": 3e-3, "train.head_lr": 5e-3, "train.bf16": "off",
        "train.num_threads": 1, "train.checkpoint_every": 3, "train.keep_checkpoints": 2,
        "output.dir": str(out), "output.baselines": False, "output.embedding_report": False,
    }


def command(opts: dict[str, Any], resume: bool) -> list[str]:
    args = [sys.executable, "-m", "taskembed.cli", "train", "--no-progress"]
    for k, v in opts.items():
        args += [f"--{k}", str(v)]
    return args + (["--resume"] if resume else [])


def complete_checkpoints(root: Path) -> set[str]:
    if not root.is_dir():
        return set()
    return {p.name for p in root.iterdir() if p.name.startswith("step-") and (p / "COMPLETE.json").is_file()}


def launch(opts: dict[str, Any], resume: bool, kill: tuple[str, int] | None, rng: random.Random, env: dict[str, str],
           timeout: float = 300) -> dict[str, Any]:
    """Run one training process; apply `kill` to it; return what happened."""
    root = Path(str(opts["output.dir"]) + ".checkpoints")
    kind, k = kill if kill else ("none", 0)
    env = {**env, "TASKEMBED_TEST_SLOW_CHECKPOINT": "30" if kind == "mid-write" else PACE_S}
    before = complete_checkpoints(root)
    stale = set(root.glob(".tmp-step-*")) if root.is_dir() else set()  # left by the previous launch's kill; removed at start
    proc = subprocess.Popen(command(opts, resume), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    sent = None
    while proc.poll() is None and time.monotonic() < deadline and sent is None:
        if kind == "mid-write":
            writing = [p for p in root.glob(".tmp-step-*") if p not in stale and (p / "state.json").is_file()] if root.is_dir() else []
            if writing:
                proc.send_signal(signal.SIGKILL)
                sent = ("SIGKILL", writing[0].name[len(".tmp-"):].rsplit("-", 1)[0])
        elif kind in ("sigkill", "sigterm", "sigint"):
            seen |= complete_checkpoints(root) - before
            if len(seen) >= k:
                time.sleep(rng.uniform(0, 0.15) if kind == "sigkill" else 0)
                sig = {"sigkill": signal.SIGKILL, "sigterm": signal.SIGTERM, "sigint": signal.SIGINT}[kind]
                proc.send_signal(sig)
                sent = (sig.name, max(seen))
        time.sleep(0.01)
    try:
        out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    resumed = re.search(r"resuming from \S+ \(step (\d+) of", out)
    return {"kind": kind, "k": k, "signal": sent[0] if sent else None, "after": sent[1] if sent else None, "rc": proc.returncode,
            "resumed_from": int(resumed.group(1)) if resumed else None, "stdout": out, "stderr": err,
            "latest_complete": max(complete_checkpoints(root), default=None)}


def compare(ref: Path, out: Path) -> dict[str, Any]:
    import torch
    from safetensors.torch import load_file

    a, b = load_file(str(ref / "model.safetensors")), load_file(str(out / "model.safetensors"))
    log_a, log_b = (ref / "log.jsonl").read_text().splitlines(), (out / "log.jsonl").read_text().splitlines()
    digests = [json.loads(x)["batches"] for x in log_a if json.loads(x)["kind"] == "train"]
    return {
        "tensors": len(a),
        "weights_identical": a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a),
        "log_identical": log_a == log_b,
        "log_entries": len(log_a),
        "final_batch_digest": digests[-1] if digests else None,
        "metrics_identical": json.loads((ref / "metrics.json").read_text()) == json.loads((out / "metrics.json").read_text()),
    }


def run_chain(kills: list[tuple[str, int]], opts: dict[str, Any], seed: int = 0, env: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Launch, kill at each point in turn (resuming after the first), then resume to the end. Returns one record per launch."""
    rng = random.Random(seed)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
    records = []
    for i, kill in enumerate([*kills, None]):
        rec = launch(opts, resume=i > 0, kill=kill, rng=rng, env=env)
        rec["output_exists"] = Path(opts["output.dir"]).exists()
        root = Path(str(opts["output.dir"]) + ".checkpoints")
        rec["temporaries"] = sorted(p.name for p in root.glob(".tmp-*")) if root.is_dir() else []
        records.append(rec)
        if kill is None or rec["rc"] == 0:
            break
    return records


def random_kills(n: int, seed: int) -> list[tuple[str, int]]:
    """n seeded kill points: mostly SIGKILL after 1-2 checkpoints, some mid-write, a few graceful stops."""
    rng = random.Random(seed)
    kinds = ["sigkill"] * 5 + ["mid-write"] * 2 + ["sigterm", "sigint"]
    out = [("sigkill", 1)]  # the first launch has nothing to resume from: let it write a checkpoint first
    while len(out) < n:
        kind = rng.choice(kinds)
        out.append((kind, 0 if kind == "mid-write" else rng.randint(1, 2)))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kills", type=int, default=10, help="kill points (default 10)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the kill points and delays")
    ap.add_argument("--workdir", default=None, help="scratch folder (default: a new temporary one)")
    args = ap.parse_args(argv)
    import tempfile

    work = Path(args.workdir or tempfile.mkdtemp(prefix="taskembed-fi-"))
    work.mkdir(parents=True, exist_ok=True)
    model = build_tiny_model(work / "tiny-bert")
    data = write_csv(work / "train.csv", make_rows(264, seed=1))
    test = write_csv(work / "test.csv", make_rows(40, seed=2))
    # A launch advances at most 2 checkpoints (6 steps) before its kill: leave room for every kill before the end (33 steps an epoch).
    epochs = max(3, -(-(6 * args.kills + 12) // 33))
    # The reference writes no checkpoints at all: checkpointing must not change a run, only make it resumable.
    ref_opts = {**overrides(model, data, test, work / "reference", epochs), "train.checkpoint_every": 0, "train.keep_checkpoints": 0}
    kills = random_kills(args.kills, args.seed)
    print(f"workdir {work}; {len(kills)} kill points (seed {args.seed}); {epochs} epochs, checkpoint every 3 steps")
    t0 = time.perf_counter()
    ref = launch(ref_opts, resume=False, kill=None, rng=random.Random(0), env={**os.environ, "OMP_NUM_THREADS": "1"})
    if ref["rc"] != 0:
        print(ref["stderr"][-2000:])
        return 1
    records = run_chain(kills, overrides(model, data, test, work / "chain", epochs), seed=args.seed)
    print("\n| launch | started at step | kill point | signal sent | exit code |")
    print("| ---: | ---: | --- | --- | ---: |")
    ok = True
    for i, rec in enumerate(records):
        point = {"sigkill": f"SIGKILL {rec['k']} new checkpoint(s) in, + 0-150 ms", "mid-write": "SIGKILL mid-write",
                 "sigterm": f"SIGTERM after {rec['k']} checkpoint(s)", "sigint": f"SIGINT after {rec['k']} checkpoint(s)",
                 "none": "(none: runs to the end)"}[rec["kind"]]
        expected_rc = {"sigkill": -9, "mid-write": -9, "sigterm": 143, "sigint": 130, "none": 0}[rec["kind"]]
        good = rec["rc"] == expected_rc and not (rec["kind"] != "none" and rec["output_exists"])
        if rec["kind"] in ("sigterm", "sigint"):
            good = good and "--resume" in rec["stderr"].strip().splitlines()[-1]
        ok = ok and good
        started_at = rec["resumed_from"] if rec["resumed_from"] is not None else 0
        sent = f"{rec['signal']} {'while writing' if rec['kind'] == 'mid-write' else 'after'} {rec['after']}" if rec["signal"] else "-"
        print(f"| {i + 1} | {started_at} | {point} | {sent} | {rec['rc']} |{'' if good else ' UNEXPECTED'}")
    last = records[-1]
    if last["rc"] != 0:
        print(last["stderr"][-2000:])
        return 1
    result = compare(work / "reference", work / "chain")
    leftovers = sorted(p.name for p in work.iterdir() if p.name.startswith(("chain.", "reference.", ".")))
    print(f"\nkills survived: {sum(r['kind'] != 'none' for r in records)}; launches: {len(records)}; "
          f"wall {time.perf_counter() - t0:.0f} s")
    print(f"final weights identical to the uninterrupted run: {result['weights_identical']} ({result['tensors']} tensors, torch.equal)")
    print(f"log.jsonl identical (losses, rates, grad norms, batch hashes, step by step): {result['log_identical']} "
          f"({result['log_entries']} entries; final batch hash {result['final_batch_digest']})")
    print(f"metrics.json identical: {result['metrics_identical']}")
    print(f"checkpoint folders left after success: {leftovers or 'none'}")
    return 0 if ok and result["weights_identical"] and result["log_identical"] and not leftovers else 1


if __name__ == "__main__":
    sys.exit(main())
