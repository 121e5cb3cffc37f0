"""Learning-rate range test (Smith 2015, fastai's `lr_find`) under the discriminative plan.

The rates rise exponentially over a few optimizer steps on training batches while the loss is
recorded; the loss stays flat while the rates are too small to matter, falls once they bite,
and blows up once they are too large. The suggestion is read off that curve.

What scales: the test sweeps the top encoder layer's rate (`train.lr`) from `start` to `end`,
both absolute rates, and every other group keeps its ratio to it from the config's plan (layer
decay, head_lr / lr, an explicit embedding_lr / lr). So the curve answers the question a user
can act on: which `--train.lr` to pass, with `--train.head_lr` following at the same ratio.

Everything else is as training would do it: the same data loading and splits, model and plan,
length-grouped batches of `train.batch_size` x `train.grad_accum`, loss (class weights, label
smoothing), gradient clipping, bf16 setting and AdamW. Warmup and the schedule are replaced by
the sweep. The model and the data are thrown away: only `lr_find.json` and `lr_find.png` are
written, into a folder that appears complete or not at all.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from taskembed.api import make_plan, with_data
from taskembed.artifacts import check_writable, staged_folder, write_json
from taskembed.config import Config, as_config
from taskembed.data import collate, encode_split, epoch_batches, load_splits
from taskembed.errors import UserError, setting
from taskembed.loop import seed_everything, training_device, use_bf16, world_size
from taskembed.modeling import load_classifier, top_layer_reads_head
from taskembed.losses import class_weights, classification_loss, step_shares
from taskembed.lrplan import apply_freezing
from taskembed.progress import progress_bar

JSON_FILE = "lr_find.json"
PNG_FILE = "lr_find.png"
DIVERGE_FACTOR = 4.0
"""Stop once the smoothed loss exceeds this multiple of the best smoothed loss (fastai's rule)."""

# Options the sweep reproduces, or that only shape a whole run (epochs, schedule, evaluation, checkpoints)
# and so do not apply to it. Any other data or train option set away from its default is refused: an
# option added to training later (a new loss term, a sampler) would otherwise be left out silently and
# the curve would no longer be the one training sees. The model section goes to load_classifier whole.
HANDLED = {
    "data": {"source", "validation", "test", "text_column", "text_columns", "text_pair_column", "label_column", "validation_fraction",
             "test_fraction", "split_seed", "max_length", "max_train_samples", "max_train_per_label", "max_eval_samples", "subset"},
    "train": {"lr", "layer_decay", "head_lr", "embedding_lr", "weight_decay", "freeze_embeddings", "freeze_layers", "batch_size",
              "grad_accum", "max_grad_norm", "label_smoothing", "class_weights", "seed", "bf16", "num_threads",
              "epochs", "warmup_ratio", "schedule", "eval_every", "metric", "early_stopping_patience", "early_stopping_min_delta", "auto_batch",
              "checkpoint_every", "keep_checkpoints", "lr_batch_size", "trim_top_layer", "sampler", "device", "log_every",
              # The sweep runs without float16 (in bf16 where train.bf16 picks it, else float32): training's loss scaling
              # hands the optimizer the same gradients, so the rate it suggests is the optimizer's either way.
              "fp16",
              # Speed only: the sweep keeps PyTorch's dropout (same drop rate), the dense embedding gradient, the
              # whole token table (both the same numbers) and launches its kernels one by one.
              "fast_dropout", "embedding_grad_rows", "compact_vocab", "cuda_graphs"},  # lr_scaling: its own error below
}


@dataclass
class LrFindResult:
    folder: Path
    """Where lr_find.json and lr_find.png were written."""
    suggestion: dict[str, Any]
    """{"lr", "head_lr", ("embedding_lr"), "rule", "steepest", "minimum", "minimum_over_10", "still_falling"}."""
    curve: list[dict[str, float]]
    """One entry per optimizer step: {"step", "lr" (top layer), "loss" (raw), "smoothed"}."""
    stopped: str
    """Why the sweep ended: "end of range", "diverged" or "not finite"."""
    seconds: float
    train_overrides: dict[str, float]
    """The overrides that train at the suggestion, e.g. {"train.lr": 2e-4, "train.head_lr": 1.3e-3}."""


def folder_for(out: Path | str) -> Path:
    """The default lr-find folder of an output folder: a sibling, so it never enters a trained model's folder."""
    out = Path(out)
    return out.with_name(out.name + ".lr_find")


def lr_find(
    config: Config | dict[str, Any] | str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    *,
    steps: int = 100,
    start: float = 1e-7,
    end: float = 1.0,
    out: str | Path | None = None,
    smoothing: float = 0.98,
    progress: bool = True,
    echo: Callable[[str], None] = print,
    data: Any = None,
) -> LrFindResult:
    """Sweep the top rate from `start` to `end` over `steps` optimizer steps and suggest one.

    `start` and `end` are values of `train.lr` (the top encoder layer); every group's rate moves with
    it at its ratio from the plan. Writes lr_find.json and lr_find.png into `out` (default
    `<output.dir>.lr_find`) and returns the curve and the suggestion. No model or checkpoint is saved. `data`: data
    given in Python, as `taskembed.train` takes it.
    """
    started = time.perf_counter()
    echo = echo or (lambda _msg: None)
    cfg, given = with_data(as_config(config, overrides), data, echo)
    _check_sweep(steps, start, end, smoothing)
    if cfg.train.lr_scaling != "none":
        # The sweep measures rates at train.batch_size itself; scaling its suggestion again in training would be wrong.
        raise UserError(f"lr-find measures train.lr at batch {cfg.train.batch_size} as given; run it with "
                        f"{setting({'train.lr_scaling': 'none'})} "
                        "and train with the suggested rate and lr_scaling none")
    _check_handled(cfg)
    if world_size() > 1:
        raise UserError("lr-find runs as a single process; start it without torchrun / accelerate launch")
    folder = Path(out) if out is not None else folder_for(cfg.output.dir)
    _check_folder(folder)
    t = cfg.train
    device = training_device(t.device)  # before the data is read: a GPU that is not there is said at once

    splits = load_splits(cfg.data, given)
    if getattr(splits, "multi_label", False):
        raise UserError("lr-find handles single-label data only; this data is multi-label")
    echo(splits.describe())
    seed_everything(t.seed)  # the head's initialisation, as in training
    model, tokenizer = load_classifier(cfg.model, splits.labels, max_length=cfg.data.max_length)
    plan = make_plan(cfg, model)
    apply_freezing(model, plan)
    train = encode_split(tokenizer, splits.frames["train"], splits.label2id, cfg.data.max_length)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    batches_per_epoch = math.ceil(len(train) / t.batch_size)
    if batches_per_epoch < t.grad_accum:
        raise UserError(f"only {len(train)} training examples for batch {t.batch_size} x {t.grad_accum} accumulated; "
                        "lower train.batch_size or train.grad_accum")

    if t.num_threads:
        torch.set_num_threads(t.num_threads)
    model.to(device).train()  # dropout on: the curve is of training steps
    weights = class_weights(cfg.train.class_weights, train.targets, splits.labels)
    host_weights = None if weights is None else weights.tolist()
    weights = weights.to(device) if weights is not None else None
    bf16 = use_bf16(t.bf16, device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()
    optimizer = torch.optim.AdamW(plan.optimizer_groups(model), fused=device.type in ("cuda", "cpu"))
    # Each group's rate as a multiple of the top layer's; the top layer's group has ratio 1 exactly.
    ratios = [g["lr"] / t.lr for g in optimizer.param_groups]
    trainable = [p for p in model.parameters() if p.requires_grad]
    rates = [start * (end / start) ** (i / (steps - 1)) for i in range(steps)]
    scaled = ", ".join(f"{name} {r:.3g}x" for name, r in ratios_by_name(plan, t.lr).items() if name in ("embeddings", "head"))
    per_step = min(t.batch_size, len(train)) * t.grad_accum  # a batch holds at most the texts there are
    passes = steps * per_step / len(train)
    # The curve of a few-shot set is many passes over the same texts: said, as training's length is said.
    over = f" (the {len(train):,} training texts {passes:.0f} times over)" if passes >= 2 else ""
    echo(f"lr range test: train.lr {start:.1e} -> {end:.1e} over {steps} steps of {per_step} examples{over} on {device}; "
         f"every group keeps its ratio to the top rate ({scaled})")

    bar = progress_bar(steps, "lr-find", "step") if progress else None
    curve: list[dict[str, float]] = []
    stopped, avg, best = "end of range", 0.0, math.inf
    epoch, order, position = 0, [], 0
    for i, lr in enumerate(rates):
        if position + t.grad_accum > len(order):
            # The batches training would see, in its order (an epoch's last batches too few for a step are left out).
            order = epoch_batches(train.lengths, t.batch_size, t.seed, epoch, train.targets if t.sampler == "balanced" else None)
            epoch, position = epoch + 1, 0
        group = order[position : position + t.grad_accum]
        position += t.grad_accum
        shares = step_shares(group, train.targets, host_weights)  # as in loop.fit: the loss of the step taken at once
        step_loss = torch.zeros((), device=device)
        for idx, share in zip(group, shares):
            batch = {k: v.to(device, non_blocking=True) for k, v in collate(train, idx, pad_id).items()}
            y = batch.pop("labels")
            with autocast, top_layer_reads_head(model, t.trim_top_layer):
                logits = model(**batch).logits
                loss = classification_loss(logits, y, class_weights=weights, label_smoothing=t.label_smoothing) * share
            loss.backward()
            step_loss += loss.detach()
        grad_norm = torch.nn.utils.clip_grad_norm_(trainable, t.max_grad_norm if t.max_grad_norm > 0 else float("inf"))
        value = float(step_loss)
        if not (math.isfinite(value) and math.isfinite(float(grad_norm))):
            # Unlike training, a non-finite loss is an expected end of the sweep, not an error: these rates are too high.
            stopped = "not finite"
            break
        avg = smoothing * avg + (1 - smoothing) * value
        smoothed = avg / (1 - smoothing ** (i + 1))  # bias correction: the first points are not pulled towards 0
        curve.append({"step": i + 1, "lr": lr, "loss": value, "smoothed": smoothed})
        best = min(best, smoothed)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{smoothed:.4f}", lr=f"{lr:.2e}", refresh=False)
        if smoothed > DIVERGE_FACTOR * best:
            stopped = "diverged"
            break
        # The rate of step i is set only now: the loss recorded at rate r is the loss before a step at r.
        for g, ratio in zip(optimizer.param_groups, ratios):
            g["lr"] = lr * ratio
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    if bar is not None:
        bar.close()

    suggestion = suggest(curve)
    overrides_out = _train_overrides(cfg, suggestion["lr"])
    suggestion.update({k.split(".", 1)[1]: v for k, v in overrides_out.items()})
    seconds = time.perf_counter() - started
    report = {
        "suggestion": suggestion,
        "train_overrides": overrides_out,
        "stopped": stopped,
        "steps_requested": steps,
        "steps_run": len(curve),
        "start": start,
        "end": end,
        "smoothing": smoothing,
        "diverge_factor": DIVERGE_FACTOR,
        "config_rates": {"lr": t.lr, "head_lr": t.head_lr, "embedding_lr": t.embedding_lr, "layer_decay": t.layer_decay},
        "ratios": ratios_by_name(plan, t.lr),
        "batch": {"batch_size": t.batch_size, "grad_accum": t.grad_accum},
        "device": device.type,
        "bf16": bf16,
        "seconds": seconds,
        "curve": curve,
    }
    with staged_folder(folder, overwrite=True) as tmp:
        write_json(tmp / JSON_FILE, report)
        plot(curve, suggestion, t.lr, tmp / PNG_FILE)
    return LrFindResult(folder=folder, suggestion=suggestion, curve=curve, stopped=stopped, seconds=seconds,
                        train_overrides=overrides_out)


def suggest(curve: list[dict[str, float]]) -> dict[str, Any]:
    """Two classic readings of the smoothed curve, and the one to use.

    - steepest: the rate where the smoothed loss falls fastest per decade (most negative slope in
      log-lr), searched between the first tenth of the curve (bias-corrected early points are still
      noisy) and the minimum (beyond it, falling stretches are noise on the way up).
    - minimum / 10: one decade below the rate of the lowest smoothed loss.

    The suggestion is minimum / 10. The minimum is where the curve turns, a sharp and stable feature
    even with single-batch losses; the steepest slope is the argmin of a derivative of a noisy curve
    and can move by a decade between seeds. A decade below the minimum keeps a margin from the rates
    that start to diverge, which a full run needs: it spends thousands of steps near its peak rate,
    not one. (This is also fastai's long-standing `lr_min` advice.) When minimum / 10 falls below the
    tested range, the range started too high to tell, and the steepest point is used instead.
    """
    if len(curve) < 3:
        raise UserError(f"the loss diverged after {len(curve)} step(s), too soon to read a curve; lower the start rate (--start)")
    lrs = np.array([p["lr"] for p in curve])
    smoothed = np.array([p["smoothed"] for p in curve])
    low = int(np.argmin(smoothed))
    minimum = float(lrs[low])
    slope = np.gradient(smoothed, np.log10(lrs))
    first = max(1, len(curve) // 10)
    steepest = float(lrs[first + int(np.argmin(slope[first : low + 1]))]) if low >= first else None
    over_10 = minimum / 10
    if over_10 >= lrs[0]:
        lr, rule = over_10, "minimum / 10"
    elif steepest is not None:
        lr, rule = steepest, "steepest (minimum / 10 lies below the tested range)"
    else:
        # With few steps the smoothed loss (0.98 a step) has not settled before the rates are already high, so a lower
        # start alone finds the same: more steps are what resolve the curve.
        fix = "give more steps (--steps 100 or more)" if len(curve) < 100 else "lower the start rate (--start)"
        raise UserError(f"the lowest loss came at the start of the range ({lrs[0]:.1e}) of {len(curve)} steps; {fix}")
    return {"lr": float(f"{lr:.2g}"), "rule": rule, "steepest": steepest, "minimum": minimum, "minimum_over_10": over_10,
            "still_falling": low == len(curve) - 1}


def ratios_by_name(plan, top_lr: float) -> dict[str, float]:
    """Each plan group's rate as a multiple of the top layer's (frozen groups included, for the record)."""
    return {g.name: g.lr / top_lr for g in plan.groups}


def _train_overrides(cfg: Config, lr: float) -> dict[str, float]:
    """`--train.*` values that train at top rate `lr` with the config's ratios, at two significant digits."""
    t = cfg.train
    out = {"train.lr": lr, "train.head_lr": float(f"{lr * t.head_lr / t.lr:.2g}")}
    if t.embedding_lr is not None:
        # An explicit embedding rate does not follow train.lr by itself; scale it too or the ratio breaks.
        out["train.embedding_lr"] = float(f"{lr * t.embedding_lr / t.lr:.2g}")
    return out


def _check_sweep(steps: int, start: float, end: float, smoothing: float) -> None:
    problems = []
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 5:
        problems.append(f"steps must be an integer >= 5 (got {steps!r})")
    for name, v in (("start", start), ("end", end)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and v > 0):
            problems.append(f"{name} must be a positive finite rate (got {v!r})")
    if not problems and start >= end:
        problems.append(f"start ({start:g}) must be below end ({end:g})")
    if not (isinstance(smoothing, (int, float)) and 0 <= smoothing < 1):
        problems.append(f"smoothing must be in [0, 1) (got {smoothing!r})")
    if problems:
        raise UserError("lr-find: " + "; ".join(problems))


def _check_handled(cfg: Config) -> None:
    default = Config()
    # Options that do nothing in this config change no curve: the window settings without window mode, the
    # threshold setting of multi-label on single-label data.
    inert = {"data": ({"window_stride", "window_aggregate"} if cfg.data.long_texts == "truncate" else set())
             | (set() if cfg.data.multi_label else {"threshold_min_positives"})}
    unhandled = [f"{section}.{name}" for section in HANDLED for name, value in vars(getattr(cfg, section)).items()
                 if name not in HANDLED[section] | inert.get(section, set()) and value != getattr(getattr(default, section), name)]
    if unhandled:
        raise UserError(f"lr-find does not reproduce {', '.join(unhandled)} yet; run it with the default value "
                        "(the suggested rate still applies as a first guess)")


def _check_folder(folder: Path) -> None:
    """The folder is replaced as a whole, so it may hold only an earlier lr-find's files: never wipe anything else."""
    if folder.exists() and not folder.is_dir():
        raise UserError(f"lr-find output {folder} is a file; choose a folder with --out")
    if folder.is_dir():
        other = sorted(p.name for p in folder.iterdir() if p.name not in (JSON_FILE, PNG_FILE))
        if other:
            raise UserError(f"lr-find output {folder} holds other files ({', '.join(other[:3])}); choose an empty or new folder with --out")
    check_writable(folder, "--out")


def plot(curve: list[dict[str, float]], suggestion: dict[str, Any], config_lr: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lrs = [p["lr"] for p in curve]
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    ax.plot(lrs, [p["loss"] for p in curve], lw=0.8, alpha=0.35, color="tab:blue", label="loss (per step)")
    ax.plot(lrs, [p["smoothed"] for p in curve], lw=1.8, color="tab:blue", label="smoothed loss")
    ax.axvline(suggestion["lr"], color="tab:red", lw=1.5, label=f"suggested {suggestion['lr']:.2g} ({suggestion['rule'].split(' (')[0]})")
    if suggestion.get("steepest") and "steepest" not in suggestion["rule"]:
        ax.axvline(suggestion["steepest"], color="tab:orange", lw=1, ls="--", label=f"steepest {suggestion['steepest']:.2g}")
    ax.axvline(config_lr, color="gray", lw=1, ls=":", label=f"config train.lr {config_lr:.2g}")
    ax.set_xscale("log")
    # Diverging losses dwarf the rest; show the curve up to a little above where it started.
    smoothed = [p["smoothed"] for p in curve]
    low = min(p["loss"] for p in curve) * 0.9
    ax.set_ylim(low, max(smoothed[0] * 1.6, low + 1e-3))
    ax.set_xlabel("top encoder layer rate (train.lr); every group scales with it")
    ax.set_ylabel("training loss")
    ax.set_title("learning-rate range test")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def curve_table(curve: list[dict[str, float]], suggested: float, rows: int = 12) -> str:
    """A few points of the curve, evenly spaced in log-lr, with the row nearest the suggestion marked."""
    if not curve:
        return ""
    picks = sorted({round(i * (len(curve) - 1) / max(1, rows - 1)) for i in range(rows)})
    near = min(range(len(curve)), key=lambda i: abs(math.log(curve[i]["lr"] / suggested)))
    if near not in picks:
        picks = sorted({*picks, near})
    lines = ["     lr   smoothed loss", "-------   -------------"]
    for i in picks:
        p = curve[i]
        lines.append(f"{p['lr']:7.1e}   {p['smoothed']:13.4f}" + (f"   <- nearest the suggested {suggested:.2g}" if i == near else ""))
    return "\n".join(lines)
