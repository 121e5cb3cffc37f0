"""The training loop: one function, read top to bottom.

`TrainState` is exactly the run's progress: optimizer step, epoch, position in
the epoch, the best validation score so far and the metrics log. Together with
the model and optimizer/scheduler state dicts it is what a checkpoint holds;
the batch order is not state because it is a pure function of (seed, epoch).
"""

from __future__ import annotations

import math
import os
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from taskembed.config import TrainConfig
from taskembed.data import Encoded, collate, eval_batches, train_batches
from taskembed.errors import UserError
from taskembed.metrics import classification_metrics
from taskembed.plan import LrPlan


class TrainingDiverged(UserError):
    """A non-finite loss or gradient: training stops instead of stepping on garbage."""


@dataclass
class TrainState:
    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best_metric: float | None = None
    best_step: int = 0
    evals_since_best: int = 0
    samples_seen: int = 0
    tokens_seen: int = 0
    log: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class FitResult:
    state: TrainState
    seconds: float
    stopped_early: bool


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def use_bf16(setting: str, device: torch.device) -> bool:
    """bf16 autocast where the hardware runs it natively; 'on'/'off' force it."""
    if setting != "auto":
        return setting == "on"
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    # CPUs with AVX512-BF16 or AMX run bf16 matmuls natively; elsewhere autocast is emulated and slower.
    return device.type == "cpu" and bool(getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)())


def lr_lambda(cfg: TrainConfig, total_steps: int) -> Callable[[int], float]:
    warmup = int(round(cfg.warmup_ratio * total_steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if cfg.schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total_steps - warmup)
        if cfg.schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
        return max(0.0, 1.0 - progress)

    return factor


def distributed() -> tuple[int, int]:
    """(rank, world size) under torchrun / accelerate launch; (0, 1) otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)
    return (torch.distributed.get_rank(), world) if world > 1 else (0, 1)


@torch.inference_mode()
def predict_logits(model, enc: Encoded, pad_id: int, device: torch.device) -> torch.Tensor:
    """Logits for every example in the original order, float32, batched by a token budget."""
    model.eval()
    out = torch.empty((len(enc), model.config.num_labels), dtype=torch.float32)
    for idx in eval_batches(enc.lengths):
        batch = collate(enc, idx, pad_id)
        batch.pop("labels", None)
        logits = model(**{k: v.to(device) for k, v in batch.items()}).logits
        out[idx] = logits.float().cpu()
    return out


def evaluate_encoded(model, enc: Encoded, labels: list[str], pad_id: int, device: torch.device) -> dict[str, Any]:
    logits = predict_logits(model, enc, pad_id, device)
    y = torch.tensor(enc.labels)
    metrics = classification_metrics(enc.labels, logits.argmax(-1).tolist(), labels)
    metrics["loss"] = float(F.cross_entropy(logits, y))
    return metrics


def fit(
    model,
    plan: LrPlan,
    cfg: TrainConfig,
    train: Encoded,
    validation: Encoded | None,
    labels: list[str],
    pad_id: int,
    *,
    device: torch.device | None = None,
    progress: bool = True,
    on_log: Callable[[dict[str, Any]], None] | None = None,
) -> FitResult:
    """Train `model` in place with the plan's rates; restore the best validation weights at the end."""
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rank, world = distributed()
    seed_everything(cfg.seed)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    model.to(device)
    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    micro = cfg.batch_size
    batches_per_epoch = math.ceil(len(train) / micro) // world
    if batches_per_epoch < 1:
        raise UserError(f"only {len(train)} training examples for {world} processes of batch {micro}; lower train.batch_size")
    steps_per_epoch = max(1, batches_per_epoch // cfg.grad_accum)
    total_steps = max(1, math.ceil(steps_per_epoch * cfg.epochs))
    optimizer = torch.optim.AdamW(plan.optimizer_groups(model), fused=device.type in ("cuda", "cpu"))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg, total_steps))
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if use_bf16(cfg.bf16, device) else nullcontext()
    trainable = [p for p in model.parameters() if p.requires_grad]
    eval_every = cfg.eval_every or steps_per_epoch
    log_every = max(1, min(50, steps_per_epoch // 10))

    state = TrainState()
    best_weights: dict[str, torch.Tensor] | None = None
    bar = None
    if progress and rank == 0:
        from tqdm.auto import tqdm

        bar = tqdm(total=total_steps, desc="train", unit="step", dynamic_ncols=True)

    def record(entry: dict[str, Any]) -> None:
        state.log.append(entry)
        if on_log and rank == 0:
            on_log(entry)

    def run_eval() -> bool:
        """Score validation, keep the best weights; True when early stopping says stop."""
        nonlocal best_weights
        if validation is None:
            return False
        m = evaluate_encoded(model, validation, labels, pad_id, device)
        model.train()
        record({"kind": "eval", "step": state.step, "epoch": state.epoch, "loss": m["loss"], "accuracy": m["accuracy"], "macro_f1": m["macro_f1"]})
        score = m[cfg.metric]
        if state.best_metric is None or score > state.best_metric:
            state.best_metric, state.best_step, state.evals_since_best = score, state.step, 0
            best_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            state.evals_since_best += 1
        if rank == 0:
            (bar.write if bar is not None else print)(
                f"step {state.step}: validation {cfg.metric} {score:.4f} (best {state.best_metric:.4f} at step {state.best_step})"
            )
        return cfg.early_stopping_patience > 0 and state.evals_since_best >= cfg.early_stopping_patience

    started = time.perf_counter()
    stopped_early = False
    model.train()
    window_loss, window_n = 0.0, 0
    while state.step < total_steps and not stopped_early:
        order = train_batches(train.lengths, micro, torch.Generator().manual_seed(cfg.seed * 100_003 + state.epoch))
        # Every rank sees the same order and takes its own slice; equal counts keep DDP in lockstep.
        order = order[rank : batches_per_epoch * world : world]
        while state.batch_in_epoch + cfg.grad_accum <= len(order) and state.step < total_steps:
            group = order[state.batch_in_epoch : state.batch_in_epoch + cfg.grad_accum]
            n_examples = sum(len(b) for b in group)
            step_loss = 0.0
            for i, idx in enumerate(group):
                batch = {k: v.to(device, non_blocking=True) for k, v in collate(train, idx, pad_id).items()}
                y = batch.pop("labels")
                sync = world == 1 or i == len(group) - 1
                with (nullcontext() if sync else net.no_sync()), autocast:
                    logits = net(**batch).logits
                    loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing) * (len(idx) / n_examples)
                loss.backward()
                step_loss += loss.detach()
                state.tokens_seen += int(batch["attention_mask"].sum())
            grad_norm = torch.nn.utils.clip_grad_norm_(trainable, cfg.max_grad_norm if cfg.max_grad_norm > 0 else float("inf"))
            loss_value = float(step_loss)
            if not (math.isfinite(loss_value) and math.isfinite(float(grad_norm))):
                rates = ", ".join(f"{g['name']}={g['lr']:.3g}" for g in optimizer.param_groups)
                what = "loss" if not math.isfinite(loss_value) else "gradient norm"
                raise TrainingDiverged(
                    f"step {state.step + 1}: {what} is not finite ({loss_value if what == 'loss' else float(grad_norm)}); "
                    f"rates were {rates}; lower train.lr / train.head_lr or check the data"
                )
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            state.step += 1
            state.batch_in_epoch += len(group)
            state.samples_seen += n_examples * world
            window_loss, window_n = window_loss + loss_value, window_n + 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{optimizer.param_groups[-1]['lr']:.2e}", refresh=False)
            if state.step % log_every == 0:
                record({"kind": "train", "step": state.step, "epoch": state.epoch, "loss": window_loss / window_n,
                        "lr": {g["name"]: g["lr"] for g in optimizer.param_groups}, "grad_norm": float(grad_norm)})
                window_loss, window_n = 0.0, 0
            if state.step % eval_every == 0 or state.step == total_steps:
                stopped_early = run_eval()
                if stopped_early:
                    break
        if state.batch_in_epoch + cfg.grad_accum > len(order):
            state.epoch += 1
            state.batch_in_epoch = 0
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - started
    if best_weights is not None:
        model.load_state_dict(best_weights)
    if stopped_early and rank == 0:
        print(f"early stopping: no improvement in {cfg.early_stopping_patience} evaluations; best weights from step {state.best_step}")
    return FitResult(state=state, seconds=seconds, stopped_early=stopped_early)
