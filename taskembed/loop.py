"""The training loop: one function, read top to bottom.

`TrainState` is exactly the run's progress: optimizer step, epoch, position in
the epoch, the best validation score so far and the metrics log. Together with
the model, optimizer and scheduler state and the RNG streams it is what a
checkpoint holds (see checkpoint.py); the batch order is not state because it
is a pure function of (seed, epoch), so a resumed run continues exactly where
the stopped one was, batch for batch and dropout mask for dropout mask.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import math
import os
import random
import re
import signal
import threading
import time
import warnings
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from taskembed import checkpoint, cudagraphs
from taskembed.checkpoint import Checkpointing
from taskembed.config import TrainConfig
from taskembed.data import Encoded, collate, epoch_batches
from taskembed.dropout import fast_dropout
from taskembed.token_table import CompactVocab, EmbeddingRows
from taskembed.errors import UserError, again, on_command_line, setting
from taskembed.losses import classification_loss, step_shares, supervised_contrastive
from taskembed.metrics import metrics_from_logits
from taskembed.modeling import head_reads, head_vector, native_bf16, process_device, top_layer_reads_head
from taskembed.lrplan import LrPlan, unfreeze_steps
from taskembed.inference import pool_windows, predict_logits
from taskembed.progress import progress_bar


class TrainingDiverged(UserError):
    """A non-finite loss or gradient: training stops instead of stepping on garbage."""


class TrainingInterrupted(UserError):
    """SIGINT or SIGTERM: the step in flight was finished and checkpointed, then training stopped."""

    def __init__(self, signum: int, step: int, saved: Path):
        # Only raised with checkpoints on: without them fit leaves SIGINT and SIGTERM to Python's defaults.
        self.signal_name = signal.Signals(signum).name
        self.exit_code = 128 + signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM
        self.step, self.saved = step, saved
        # The command line prints its own line, with the run's actual config and overrides (cli.cmd_train).
        super().__init__(self.message("taskembed train CONFIG --resume" if on_command_line() else "taskembed.train(..., resume=True)"))

    def message(self, resume_command: str) -> str:
        return f"interrupted by {self.signal_name} after step {self.step}; checkpoint saved to {self.saved}; continue with: {resume_command}"


@dataclass
class TrainState:
    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best_metric: float | None = None
    """The value gains are measured from (early_stopping_min_delta): the metric at the last improvement."""
    best_score: float | None = None
    """The validation metric of the kept weights: at least best_metric, more where a tie replaced them."""
    best_step: int = 0
    best_loss: float | None = None
    """The validation loss of the kept weights, which breaks a tie on the metric."""
    evals_since_best: int = 0
    stopped_early: bool = False
    samples_seen: int = 0
    tokens_seen: int = 0
    window_loss: float = 0.0
    """Sum of the step losses since the last train log entry, and their count."""
    window_n: int = 0
    batch_digest: str = ""
    """A running hash of every batch's example indices: equal values mean the same batches in the same order."""
    train_seconds: float = 0.0
    """Training time of the sessions up to the last checkpoint (evaluation and checkpoint writes excluded)."""
    eval_seconds: float = 0.0
    micro_splits: int = 1
    """Each batch runs as this many micro-batches (doubled by train.auto_batch after an out-of-memory error)."""
    loss_scale: float = 0.0
    """train.fp16: the factor the loss is multiplied by before backward (0 without fp16)."""
    scale_good_steps: int = 0
    """train.fp16: steps since the scale last changed without overflowing; at SCALE_GROWTH_STEPS it doubles."""
    overflow_steps: int = 0
    """train.fp16: steps skipped because the scaled gradient overflowed float16."""
    log: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class FitResult:
    state: TrainState
    """Where training ended; its train_seconds, eval_seconds and stopped_early are the run's."""
    checkpoint_seconds: float = 0.0
    token_rows: list[int] | None = None
    """[rows of the input token table trained, rows in it] under train.compact_vocab; None when it did not apply."""
    cuda_graphs: int | None = None
    """Batch shapes captured as CUDA graphs under train.cuda_graphs; None when it did not apply."""


class StopSignals:
    """Turns SIGINT/SIGTERM into a request that the loop honours after the step in flight.

    A second signal gets the previous handler (KeyboardInterrupt, or termination): a stuck run
    can still be stopped, and a checkpoint being written then is discarded, never half-used.
    """

    def __init__(self) -> None:
        self.signum = 0
        self.enabled = False

    def _handle(self, signum, _frame) -> None:
        self.signum = signum
        signal.signal(signum, self._previous[signum])

    @contextmanager
    def installed(self, enabled: bool) -> Iterator["StopSignals"]:
        self.enabled = enabled
        # Handlers can only be set from the main thread (a notebook or server thread keeps Python's defaults).
        if not enabled or threading.current_thread() is not threading.main_thread():
            yield self
            return
        self._previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        for s in self._previous:
            signal.signal(s, self._handle)
        try:
            yield self
        finally:
            for s, handler in self._previous.items():
                signal.signal(s, handler)

    def requested(self, world: int, device: torch.device) -> int:
        """The signal to stop on (0 for none), agreed by every rank so that all stop after the same step."""
        if world == 1 or not self.enabled:
            return self.signum
        flag = torch.tensor([self.signum], device=device if torch.distributed.get_backend() == "nccl" else "cpu")
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return int(flag)


def chain_digest(previous: str, group: list[list[int]]) -> str:
    return hashlib.sha256(f"{previous}|{group}".encode()).hexdigest()[:16]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def use_bf16(setting: str, device: torch.device) -> bool:
    """bf16 autocast where the hardware runs it natively; 'on'/'off' force it."""
    if setting != "auto":
        return setting == "on"
    return native_bf16(device)


PRECISION_WORDS = {torch.bfloat16: "bf16 autocast", torch.float16: "fp16 autocast and loss scaling"}
"""How training and its dry run name autocast_dtype's answer."""


def autocast_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """Training's autocast type: float16 under train.fp16, else bfloat16 where train.bf16 picks it, else None (float32)."""
    if cfg.fp16:
        return torch.float16
    return torch.bfloat16 if use_bf16(cfg.bf16, device) else None


# train.fp16's dynamic loss scale: it starts and grows as torch's GradScaler's does (the Trainer's fp16 uses that), and
# is capped where a float32 gradient norm of the scaled loss still has room.
SCALE_START = 2.0**16
SCALE_GROWTH_STEPS = 2000
SCALE_MAX = 2.0**24


def lr_lambda(cfg: TrainConfig, total_steps: int, start: int = 0) -> Callable[[int], float]:
    """The rate multiplier at each optimizer step: warmup, then the schedule's decay.

    A group unfrozen at step `start` > 0 (gradual unfreezing) follows the same decay but warms up
    again from `start` over the same number of steps, and over at least one when there is no warmup (its
    first step then takes half the rate): fresh Adam moments on weights that have not moved yet would
    otherwise take full-size steps at once. Before `start` its factor is 0.
    """
    warmup = int(round(cfg.warmup_ratio * total_steps))
    if start > 0:
        base = lr_lambda(cfg, total_steps)
        return lambda step: 0.0 if step < start else base(step) * min(1.0, (step - start + 1) / (max(warmup, 1) + 1))

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


@contextmanager
def forward_outputs(module: torch.nn.Module, on: bool) -> Iterator[list[Any]]:
    """While on, each training-mode forward of `module` appends its output to the yielded list (evaluation's are not
    kept: nothing reads them); the hook goes when the block ends."""
    outputs: list[Any] = []
    handle = module.register_forward_hook(lambda m, _i, out: outputs.append(out) if m.training else None) if on else None
    try:
        yield outputs
    finally:
        if handle is not None:
            handle.remove()


def clip_in_step(optimizer: torch.optim.Optimizer, params: list[torch.nn.Parameter], max_norm: float,
                 rows: EmbeddingRows | None = None, loss_scale: float = 1.0) -> torch.Tensor:
    """The gradients' total norm; with max_norm > 0 they are clipped to it inside the optimizer step.

    Same result as `clip_grad_norm_` without its separate pass multiplying every gradient: the fused
    AdamW divides each gradient by `grad_scale` as it reads it (the input GradScaler uses to unscale).
    With `rows`, the embedding table's gradient is read at its touched rows only (the same sum of squares).
    Gradients of a loss multiplied by `loss_scale` (train.fp16) are divided by it in the same way, and the norm
    returned is theirs divided by it.
    """
    grads = [p.grad for p in params if p.grad is not None]
    norm = torch.nn.utils.get_total_norm([rows.norm_view(g) for g in grads] if rows is not None else grads)
    if loss_scale != 1.0:
        norm = norm / loss_scale
    if max_norm > 0:
        # clip_grad_norm_ multiplies by min(max_norm / (norm + 1e-6), 1); dividing by the inverse is the same.
        optimizer.grad_scale = torch.clamp((norm + 1e-6) / max_norm, min=1.0) * loss_scale
    elif loss_scale != 1.0:
        optimizer.grad_scale = torch.full((), loss_scale, device=norm.device)
    return norm


def rates_summary(groups: list[dict[str, Any]]) -> str:
    """The optimizer's rates in a line: one a group (its biases and norms, "/no_decay", share it), and with more than five
    groups the bottom and the top two only (a line of 16 rates hid the advice after it)."""
    named: dict[str, float] = {}
    for g in groups:
        named.setdefault(g["name"].split("/")[0], g["lr"])
    shown = [f"{name}={lr:.3g}" for name, lr in named.items()]
    if len(shown) > 5:  # at five, "(2 more)" would hide two rates to save one
        shown = [shown[0], f"({len(shown) - 3} more)", *shown[-2:]]
    return ", ".join(shown)


def world_size() -> int:
    """The number of processes torchrun / accelerate launch started (1 without them), without joining their group."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def distributed(gpu: bool | None = None) -> tuple[int, int]:
    """(rank, world size) under torchrun / accelerate launch, joining the process group (NCCL for processes on GPUs,
    which `gpu` says, by default whether torch has one; gloo on the CPU); (0, 1) otherwise."""
    world = world_size()
    if world > 1 and not torch.distributed.is_initialized():
        gpu = torch.cuda.is_available() if gpu is None else gpu
        torch.distributed.init_process_group("nccl" if gpu else "gloo")
    return (torch.distributed.get_rank(), world) if world > 1 else (0, 1)


def training_device(setting: str = "auto") -> torch.device:
    """train.device as this process's torch device (modeling.process_device)."""
    return process_device(setting, "train.device")


def defer_host_reads(device: torch.device) -> bool:
    """Whether fit reads losses back every few steps (on a GPU, see fit) rather than after every step."""
    return device.type == "cuda"


def text_rows(enc: Encoded) -> list[list[int]] | None:
    """Window mode: the rows (windows) of each text, in order; None when each row is a text."""
    if enc.doc_ids is None:
        return None
    rows: list[list[int]] = [[] for _ in range(enc.n_texts)]
    for r, d in enumerate(enc.doc_ids):
        rows[d].append(r)
    return rows


def evaluate_encoded(model, enc: Encoded, labels: list[str], pad_id: int, device: torch.device, aggregate: str = "mean") -> dict[str, Any]:
    return metrics_from_logits(predict_logits(model, enc, pad_id, device, aggregate), enc.targets, labels)


def planned_steps(cfg: TrainConfig, n_texts: int, world: int = 1) -> tuple[int, int]:
    """(optimizer steps per epoch, in all) for n_texts training texts over `world` processes (in window mode a batch
    holds texts too, each with all its windows)."""
    batches_per_epoch = math.ceil(n_texts / cfg.batch_size) // world
    steps_per_epoch = max(1, math.ceil(batches_per_epoch / cfg.grad_accum))  # an epoch's last step takes the batches left over
    return steps_per_epoch, max(1, math.ceil(steps_per_epoch * cfg.epochs))


SHORT_RUN_STEPS = 50
"""Fewer optimizer steps than this, over fewer than 10 epochs, gets the short-run note."""


def schedule_notes(cfg: TrainConfig, steps_per_epoch: int, total_steps: int, validation: bool = True) -> list[str]:
    """Settings that this run's length leaves without effect, which the config alone cannot tell (said by training and the
    dry run): an evaluation interval or a checkpoint interval past the last step, a patience that can never run out, and
    a run of few epochs too short to train much."""
    notes = []
    eval_every = cfg.eval_every or steps_per_epoch
    evaluations = total_steps // eval_every + (total_steps % eval_every > 0)  # at every multiple, and at the last step
    if not validation and (idle := [f"train.{key}" for key in ("eval_every", "metric", "early_stopping_min_delta")
                                    if getattr(cfg, key) != getattr(TrainConfig(), key)]):
        # Without validation the last weights are kept; patience without validation is refused before this (api.py).
        notes.append(f"note: {' and '.join(idle)} {'is set but has' if len(idle) == 1 else 'are set but have'} no effect without a validation "
                     "split: the last weights are kept (data.validation_fraction or data.validation gives one)")
    if validation and cfg.eval_every >= total_steps:
        notes.append(f"note: train.eval_every {cfg.eval_every} is not less than this run's {total_steps} optimizer steps, so validation "
                     "runs once, at the end")
    # Stopping takes `patience` evaluations without a gain after the first, and the last evaluation is at the last step
    # anyway: only a run with at least patience + 2 evaluations can stop before its end.
    if validation and cfg.early_stopping_patience and evaluations <= cfg.early_stopping_patience + 1:
        notes.append(f"note: train.early_stopping_patience {cfg.early_stopping_patience} cannot stop this run early: it evaluates "
                     f"{evaluations} time(s), the last at its last step, and stopping takes {cfg.early_stopping_patience} "
                     "evaluation(s) without a gain after the best one; evaluate more often (train.eval_every, in optimizer steps "
                     f"of the {total_steps}) or train longer")
    # A short run of few epochs: the default recipe on a few examples per label gets a handful of steps, one of them
    # warm-up, and scored below a frozen encoder with logistic regression (docs/benchmarks/fewshot.md). Said, as the
    # Trainer does not; a run of many epochs that is short anyway (the few-shot recipe) is what was asked for.
    if total_steps < SHORT_RUN_STEPS and cfg.epochs < 10:
        notes.append(f"note: this run takes {total_steps} optimizer step(s) ({steps_per_epoch} an epoch), too few to train much; "
                     "on a few examples per label more epochs at a smaller batch train further (configs/fewshot.yaml: 10 epochs "
                     "of batches of 8, no validation split; docs/benchmarks/fewshot.md)")
    if cfg.checkpoint_every >= total_steps:
        notes.append(f"note: train.checkpoint_every {cfg.checkpoint_every} is not less than this run's {total_steps} optimizer steps, "
                     "so checkpoints are written at epoch ends only")
    return notes


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
    checkpoints: Checkpointing | None = None,
    class_weights: torch.Tensor | None = None,
    aggregate: str = "mean",
    say: Callable[[str], None] = print,
) -> FitResult:
    """Train `model` in place with the plan's rates; restore the best validation weights at the end.

    With `checkpoints`, the run is checkpointed every `checkpoints.every` steps, at each epoch end, at
    the last step and when SIGINT/SIGTERM asks it to stop (then it raises TrainingInterrupted), and it
    continues from `checkpoints.resume_from` exactly as the stopped run would have gone on.
    """
    device = device or training_device(cfg.device)
    rank, world = distributed(gpu=device.type == "cuda")
    seed_everything(cfg.seed)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    model.to(device)
    if class_weights is not None:
        class_weights = class_weights.to(device)
    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    if cfg.auto_batch and world > 1:
        # One rank retrying alone would leave the others waiting in an all-reduce.
        raise UserError("train.auto_batch works with a single process; under torchrun lower train.batch_size instead")
    if plan.gradual and world > 1:
        # DDP registers its gradient hooks once, on the parameters that need a gradient at wrap time.
        raise UserError("train.gradual_unfreezing works with a single process; under torchrun use train.freeze_layers instead")
    micro = cfg.batch_size
    batches_per_epoch = math.ceil(train.n_texts / micro) // world
    # Fewer micro-batches than train.grad_accum make an epoch of one step that takes them all, as an epoch's last step
    # takes those left over (accumulate averages over the examples the step has); only no batch at all cannot train.
    if batches_per_epoch < 1:
        raise UserError(f"only {train.n_texts} training examples for {world} processes of batch {micro}: fewer batches than "
                        "processes; lower train.batch_size or run fewer processes")
    steps_per_epoch, total_steps = planned_steps(cfg, train.n_texts, world)
    fused = device.type in ("cuda", "cpu")
    optimizer = torch.optim.AdamW(plan.optimizer_groups(model), fused=fused)
    # Gradual unfreezing: every group is in the optimizer and the schedule from the start (a group added
    # later would miss the scheduler, transformers #20029); a frozen group has no gradient, which AdamW
    # skips, and its own schedule holds its rate at 0 until its stage begins.
    stage_start = unfreeze_steps(plan, cfg.gradual_unfreezing, cfg.unfreeze_every, steps_per_epoch) if plan.gradual else [0]
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, [lr_lambda(cfg, total_steps, stage_start[g["unfreeze_stage"]]) for g in optimizer.param_groups])
    never = sum(start >= total_steps for start in stage_start) if plan.gradual else 0
    if plan.gradual and rank == 0 and (progress or never):  # stages that never start are said even without progress output
        fix = "more epochs, or gradual_unfreezing steps" if cfg.gradual_unfreezing == "epoch" else \
            f"train.unfreeze_every {max(1, (total_steps - 1) // plan.stages)} or less, or 0 to spread the stages over the first epoch"
        say(f"gradual unfreezing: stages 0..{plan.stages} start at optimizer steps {', '.join(map(str, stage_start))} of {total_steps}"
            + (f"; the last {never} stage(s) never start, so those groups stay frozen ({fix})" if never else ""))
    graphs = None
    if cfg.cuda_graphs and not cudagraphs.available(device):
        if rank == 0:
            say(f"train.cuda_graphs: no CUDA device ({device.type}), so the steps run without graphs")
    elif cfg.cuda_graphs:
        if world > 1:  # the rest that graphs cannot go with, the config refuses (taskembed/config.py)
            raise UserError("train.cuda_graphs works with a single process; under torchrun set it to false")
        graphs = cudagraphs.GraphedTraining(model, micro, max(train.lengths), pad_id)
    # A graph must not capture autocast's cache of cast weights (make_graphed_callables refuses it): each
    # replay casts them again, as eager autocast does once per forward anyway.
    half = autocast_dtype(cfg, device)
    autocast = torch.autocast(device.type, dtype=half, cache_enabled=graphs is None) if half else nullcontext()
    trainable = [p for g in optimizer.param_groups for p in g["params"]]

    def set_trainable(step: int) -> None:
        """requires_grad from the stage schedule, so a frozen group costs no backward work (also right after a resume)."""
        for g in optimizer.param_groups:
            on = stage_start[g["unfreeze_stage"]] <= step
            for p in g["params"]:
                p.requires_grad_(on)

    # The contrastive term needs the vector the head reads: a hook (forward_outputs, in the training block below)
    # keeps the encoder's output of each training forward.
    contrastive = cfg.contrastive_weight > 0
    kind = head_reads(model.config)
    if contrastive and kind is None:
        raise UserError(f"train.contrastive_weight needs a supported architecture; {model.config.model_type} is not one")
    eval_every = cfg.eval_every or steps_per_epoch
    log_every = cfg.log_every or max(1, min(50, steps_per_epoch // 10))
    if rank == 0:
        for note in schedule_notes(cfg, steps_per_epoch, total_steps, validation is not None):
            say(note)

    state = TrainState(loss_scale=SCALE_START if cfg.fp16 else 0.0)
    best_weights: dict[str, torch.Tensor] | None = None
    if checkpoints is not None and checkpoints.resume_from is not None:
        planned = checkpoint.read_meta(checkpoints.resume_from).get("total_steps", total_steps)
        if planned != total_steps:  # the schedule is a function of it: continuing would follow another one
            raise UserError(f"cannot resume from {checkpoints.resume_from}: it was planned for {planned} optimizer steps and this "
                            f"run plans {total_steps} (an earlier taskembed dropped each epoch's leftover "
                            f"micro-batches under train.grad_accum and planned fewer); start afresh with {setting({'output.overwrite': True})}")
        # Weights, optimizer, scheduler, RNG streams and progress: the next step is the one the stopped run would have taken.
        saved, best_weights = checkpoint.load_checkpoint(checkpoints.resume_from, model, optimizer, scheduler, rank=rank, device=device)
        state = TrainState(**saved)
        if rank == 0:
            where = "training complete" if state.step >= total_steps or state.stopped_early else f"epoch {state.epoch + 1}"
            say(f"resuming from {checkpoints.resume_from} (step {state.step} of {total_steps}, {where})")
    bar = progress_bar(total_steps, "train", "step", initial=state.step) if progress and rank == 0 else None

    compact: CompactVocab | None = None  # set inside the training block below

    def whole_table():
        """Evaluation and checkpoints read the whole token table, not the compact rows training updates."""
        return compact.whole() if compact is not None else nullcontext()

    def record(entry: dict[str, Any]) -> None:
        state.log.append(entry)
        if on_log and rank == 0:
            on_log(entry)

    def diverged(what: str, step: int | None = None) -> TrainingDiverged:
        rates = rates_summary(optimizer.param_groups)
        # The checkpoints before it are kept (the last good state), so a run with lower rates into the same
        # output.dir must say it starts afresh over them.
        kept = checkpoints is not None and checkpoint.step_folders(checkpoints.root)
        afresh = (f", and {again(same=False)} with {setting({'output.overwrite': True})} (the checkpoints before it stay in "
                  f"{checkpoints.root} until then)") if kept else ""
        return TrainingDiverged(f"step {state.step if step is None else step}: {what}; rates were {rates}; "
                                f"lower train.lr / train.head_lr or check the data{afresh}")

    def check_weights() -> None:
        """Before anything reads the weights to keep them: an update can overflow them even when the loss and the
        gradient it came from were finite, and after the last step no later loss would show it."""
        if not bool(torch.stack([torch.isfinite(p).all() for p in trainable]).all()):
            raise diverged("the weights are not finite after its update")

    def run_eval() -> bool:
        """Score validation, keep the best weights; True when early stopping says stop."""
        nonlocal best_weights
        if validation is None:
            return False
        with whole_table():  # the best weights are copied from it too
            m = evaluate_encoded(model, validation, labels, pad_id, device, aggregate)
            model.train()
            if not math.isfinite(m["loss"]):
                raise diverged(f"the validation loss is not finite ({m['loss']})")
            record({"kind": "eval", "step": state.step, "epoch": state.epoch, "loss": m["loss"], "accuracy": m["accuracy"], "macro_f1": m["macro_f1"]})
            score = m[cfg.metric]
            # As Keras's min_delta: a gain of at most min_delta is no improvement, for the kept weights as for the patience.
            gain = (state.best_metric - score if cfg.metric == "loss" else score - state.best_metric) if state.best_metric is not None else None
            # A tie on accuracy or macro-F1 (no loss, no gain beyond min_delta) goes to the lower validation loss. On a few
            # validation texts the metric moves in coarse steps and can tie for several evaluations while the model still
            # learns: keeping the first of them kept a few-shot model after its warm-up step, its scores near uniform.
            # "No loss" is against the kept weights' own score, which a tie may have raised above the value gains count
            # from: measured from that value, weights scoring less than the kept ones replaced them. (A checkpoint of
            # a version before best_score has it as None: its kept weights scored best_metric or, after a tie, more.)
            kept = state.best_score if state.best_score is not None else state.best_metric
            tie = (gain is not None and gain <= cfg.early_stopping_min_delta and cfg.metric != "loss" and score >= kept
                   and state.best_loss is not None and m["loss"] < state.best_loss)
            if gain is None or gain > cfg.early_stopping_min_delta or tie:
                if not tie:  # a tie keeps the weights only: the patience, and the value gains count from, stay
                    state.evals_since_best, state.best_metric = -1, score
                state.best_step, state.best_loss, state.best_score = state.step, m["loss"], score
                # On the host: a second copy of the weights must not take accelerator memory.
                best_weights = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            state.evals_since_best += 1
        if rank == 0:
            best = state.best_score if state.best_score is not None else state.best_metric
            line = (f"step {state.step}: validation {cfg.metric} {score:.4f} (best {best:.4f} at step {state.best_step}"
                    f"{': a tie, kept for its lower validation loss' if tie else ''})")
            # Through `say` (the caller's echo: None silences it, a logger gets it), with tqdm's bar cleared around it
            # where one is drawn; bar.write printed past the echo.
            if bar is not None and hasattr(type(bar), "external_write_mode"):
                with type(bar).external_write_mode():
                    say(line)
            else:
                say(line)
        return cfg.early_stopping_patience > 0 and state.evals_since_best >= cfg.early_stopping_patience

    # Batches are drawn over texts. In window mode a text is all its windows: they run in the same batch and
    # the loss is on their aggregated logits, exactly what evaluation and prediction score.
    windows = text_rows(train)
    lengths = [sum(len(train.input_ids[r]) for r in rows) for rows in windows] if windows else train.lengths
    targets = train.targets
    started = time.perf_counter()
    eval_seconds = ckpt_seconds = 0.0
    earlier_train, earlier_eval = state.train_seconds, state.eval_seconds  # sessions before a resume

    def clock() -> None:
        state.train_seconds = earlier_train + time.perf_counter() - started - eval_seconds - ckpt_seconds
        state.eval_seconds = earlier_eval + eval_seconds

    # On a GPU, reading a step's loss back to the host stalls the host until the device has caught up, so
    # the next step's kernels cannot queue up while this one runs. There the losses and gradient norms are
    # read in one transfer every log_every steps and before every evaluation, checkpoint and the end; a step
    # whose loss or gradient norm is not finite in between is skipped on the device by the fused optimizer
    # (its found_inf input, the mechanism GradScaler uses) and the run stops with that step's number at the
    # next read, before anything of it is saved. On a CPU there is no queue to keep full: every step is read
    # at once and a non-finite one stops before its update.
    # train.fp16 reads each step's gradient norm at once: whether it overflowed decides that step and the next scale.
    deferred = defer_host_reads(device) and not cfg.fp16
    pin = device.type == "cuda"
    pending: list[tuple[int, torch.Tensor, torch.Tensor]] = []  # (step number, loss, grad norm), still on the device
    overflowed: set[int] = set()  # train.fp16: pending steps skipped for an overflowing scaled gradient
    last = {"loss": math.nan, "grad_norm": math.nan}
    # The bar's rate is the top encoder layer's, train.lr as scheduled, which is what a user reads "lr" as. With no
    # numbered layer in training, or while gradual unfreezing holds the top one at 0, the head is what trains: its rate
    # (the last group's), named as such.
    layers = [g for g in optimizer.param_groups if re.fullmatch(r"layer\.\d+", g["name"])]
    top = max(layers, key=lambda g: int(g["name"].split(".")[1])) if layers else None
    head = optimizer.param_groups[-1]
    head_name = f"{head['name'].split('/')[0]}_lr"

    def settle() -> None:
        """Read the pending steps' losses and gradient norms; stop at the first that is not finite."""
        if not pending:
            return
        values = torch.stack([torch.stack([loss.float(), norm.float()]) for _, loss, norm in pending]).tolist()
        steps = [n for n, _, _ in pending]
        pending.clear()
        for step, (loss_value, norm) in zip(steps, values):
            if step in overflowed:  # train.fp16 skipped it for its scaled gradient; its loss was finite
                overflowed.discard(step)
                state.window_loss, state.window_n = state.window_loss + loss_value, state.window_n + 1
                last.update(loss=loss_value)
                continue
            if not (math.isfinite(loss_value) and math.isfinite(norm)):
                # Raised before the step is taken (or, deferred, after the device skipped it) and before any
                # checkpoint of it: the last checkpoint stays the last good state.
                what = "loss" if not math.isfinite(loss_value) else "gradient norm"
                raise diverged(f"{what} is not finite ({loss_value if what == 'loss' else norm})", step)
            state.window_loss, state.window_n = state.window_loss + loss_value, state.window_n + 1
            last.update(loss=loss_value, grad_norm=norm)
        if bar is not None:
            group, name = (top, "lr") if top is not None and top["lr"] > 0 else (head, head_name)
            bar.set_postfix(loss=f"{last['loss']:.4f}", **{name: f"{group['lr']:.2e}"}, refresh=False)

    def write_checkpoint() -> Path:
        nonlocal ckpt_seconds
        settle()  # a stop signal can ask for a checkpoint between two reads
        check_weights()
        t0 = time.perf_counter()
        clock()
        rng = checkpoint.capture_rng(world, device)  # a collective under DDP: every rank takes part
        saved = checkpoints.root  # what the other ranks report; rank 0 names the folder
        if rank == 0:
            with whole_table():
                saved = checkpoint.save_checkpoint(
                    checkpoints.root, model, optimizer, scheduler, dataclasses.asdict(state), best_weights=best_weights, rng=rng,
                    plan=plan.to_json(), config=checkpoints.config, meta={"world_size": world, "data_fingerprint": checkpoints.fingerprint,
                                                                          "labels": list(labels), "total_steps": total_steps, "device": device.type},
                )
            checkpoint.prune(checkpoints.root, checkpoints.keep, state.step)
        ckpt_seconds += time.perf_counter() - t0
        return saved

    host_weights = None if class_weights is None else class_weights.tolist()  # once: step_shares reads them every step

    def accumulate(group: list[list[int]], n_examples: int) -> torch.Tensor:
        """Forward and backward over one optimizer step's examples; the summed loss, each piece by its share (with
        class weights, of the step's weight; the contrastive term, computed within each piece, by its examples)."""
        pieces = [idx[k::state.micro_splits] for idx in group for k in range(state.micro_splits) if idx[k::state.micro_splits]]
        shares = step_shares(pieces, targets, host_weights)
        step_loss = torch.zeros((), device=device)
        for i, idx in enumerate(pieces):
            segments = None
            if windows is None:
                batch = collate(train, idx, pad_id)
            else:  # every window of every text in idx; segments[j] = which text of idx row j belongs to
                batch = collate(train, [r for d in idx for r in windows[d]], pad_id)
                segments = torch.tensor([k for k, d in enumerate(idx) for _ in windows[d]], device=device)
                batch["labels"] = batch["labels"][[0, *itertools.accumulate(len(windows[d]) for d in idx[:-1])]]  # one per text
            # From page-locked memory a copy to the GPU is truly asynchronous; from ordinary memory it makes the
            # host wait, which would undo the deferred reads below.
            if graphs is not None:
                batch = graphs.pad(batch)
            batch = {k: (v.pin_memory() if pin else v).to(device, non_blocking=True) for k, v in batch.items()}
            y = batch.pop("labels")
            sync = world == 1 or i == len(pieces) - 1
            encoder_out.clear()  # nothing left over from a forward that ran out of memory
            with (nullcontext() if sync else net.no_sync()), autocast:
                logits = graphs.logits(batch, len(y)) if graphs is not None else net(**batch).logits
                if segments is not None:
                    logits = pool_windows(logits, segments, len(idx), aggregate)
                loss = classification_loss(logits, y, class_weights=class_weights, label_smoothing=cfg.label_smoothing)
                loss = loss * shares[i]
                if contrastive:
                    z = head_vector(model, kind, encoder_out.pop(), batch["attention_mask"])
                    if segments is not None:
                        z = pool_windows(z, segments, len(idx), "mean")
                    con = supervised_contrastive(z, y, cfg.contrastive_temperature)
                    loss = loss + cfg.contrastive_weight * con * (len(idx) / n_examples)
            (loss * state.loss_scale if cfg.fp16 else loss).backward()
            if graphs is not None and i == 0 and len(pieces) > 1:  # later pieces add into these copies
                graphs.keep_grads(trainable)
            step_loss += loss.detach()
        return step_loss

    model.train()
    order_epoch, order = -1, []
    saved: Path | None = None
    # Around the whole loop, backward included: a recomputing backward must see the forward it recomputes.
    # DDP reduces dense gradients only, so the embedding rows are for a single process.
    # Whatever ends the loop (the last step, a non-finite step, a stop signal, running out of memory), the
    # model leaves fit with no hook of ours, its whole token table and every planned group trainable.
    try:
        with (StopSignals().installed(checkpoints is not None) as stop,
              top_layer_reads_head(model, cfg.trim_top_layer),
              fast_dropout(model, cfg.fast_dropout),
              CompactVocab.of(model, optimizer, train, pad_id, cfg.compact_vocab and world == 1) as compact,
              EmbeddingRows.of(model, cfg.embedding_grad_rows and world == 1 and graphs is None) as rows,  # sparse: no graph
              forward_outputs(model.base_model, contrastive) as encoder_out):
            while state.step < total_steps and not state.stopped_early:
                if order_epoch != state.epoch:
                    order = epoch_batches(lengths, micro, cfg.seed, state.epoch, targets if cfg.sampler == "balanced" else None)
                    # Every rank sees the same order and takes its own slice; equal counts keep DDP in lockstep.
                    order = order[rank : batches_per_epoch * world : world]
                    order_epoch = state.epoch
                group = order[state.batch_in_epoch : state.batch_in_epoch + cfg.grad_accum]
                n_examples = sum(len(b) for b in group)
                if plan.gradual:
                    set_trainable(state.step)
                while True:
                    try:
                        step_loss = accumulate(group, n_examples)
                        break
                    except torch.OutOfMemoryError:
                        # Same examples, same effective batch, smaller pieces; a retry starts from clean gradients.
                        optimizer.zero_grad(set_to_none=True)
                        if not cfg.auto_batch or max(len(b) for b in group) <= state.micro_splits:
                            raise UserError(f"step {state.step + 1}: out of memory with micro-batches of about "
                                            f"{math.ceil(cfg.batch_size / state.micro_splits)}; lower train.batch_size "
                                            "(raise train.grad_accum to keep the effective batch) or set train.auto_batch true") from None
                        state.micro_splits *= 2
                        if device.type == "cuda":
                            torch.cuda.empty_cache()
                        if rank == 0:
                            say(f"out of memory at step {state.step + 1}: retrying with each batch split in {state.micro_splits} "
                                  f"(micro-batch about {math.ceil(cfg.batch_size / state.micro_splits)})")
                state.tokens_seen += sum(lengths[j] for b in group for j in b)  # from the host: no device sync
                if rows is not None:
                    rows.densify()
                scale = state.loss_scale if cfg.fp16 else 1.0
                if fused:
                    grad_norm = clip_in_step(optimizer, trainable, cfg.max_grad_norm, rows, scale)
                else:
                    if scale != 1.0:
                        torch._foreach_mul_([p.grad for p in trainable if p.grad is not None], 1.0 / scale)
                    grad_norm = torch.nn.utils.clip_grad_norm_(trainable, cfg.max_grad_norm if cfg.max_grad_norm > 0 else float("inf"))
                step = state.step + 1
                skip = False
                if cfg.fp16:  # one read for both
                    loss_value, norm_value = torch.stack([step_loss.float(), grad_norm.float()]).tolist()
                    skip = math.isfinite(loss_value) and not math.isfinite(norm_value)
                if skip:
                    # The scaled gradient overflowed float16: no update this step, and half the scale from the next. A
                    # gradient that is not finite even unscaled is no overflow but a fault, and stops the run.
                    state.loss_scale /= 2
                    state.scale_good_steps, state.overflow_steps = 0, state.overflow_steps + 1
                    if state.loss_scale < 1:
                        raise diverged("the gradient is not finite even at loss scale 1 (it overflowed float16 "
                                       f"{state.overflow_steps} times); set train.fp16 false", step)
                    overflowed.add(step)
                elif cfg.fp16:
                    state.scale_good_steps += 1
                    if state.scale_good_steps == SCALE_GROWTH_STEPS:
                        state.loss_scale, state.scale_good_steps = min(state.loss_scale * 2, SCALE_MAX), 0
                epoch_end = state.batch_in_epoch + len(group) >= len(order)
                pending.append((step, step_loss, grad_norm))
                boundary = (step % log_every == 0 or step % eval_every == 0 or step == total_steps or epoch_end
                            or (checkpoints is not None and checkpoints.every and step % checkpoints.every == 0))
                if not deferred or boundary:
                    settle()
                    optimizer.found_inf = None
                else:
                    optimizer.found_inf = (~(torch.isfinite(step_loss) & torch.isfinite(grad_norm))).float()
                if skip:
                    # No update, but the schedule counts every step, skipped or not, so that warm-up and decay end where
                    # the plan puts them (the Trainer's fp16 instead holds its schedule back a step for each one skipped).
                    # A skipped first step has no optimizer.step() before this one, which torch warns of.
                    with warnings.catch_warnings():
                        warnings.filterwarnings("ignore", message=re.escape("Detected call of `lr_scheduler.step()` before"))
                        scheduler.step()
                else:
                    optimizer.step()
                    if compact is not None:
                        compact.decay()
                    scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                state.step += 1
                state.batch_in_epoch += len(group)
                state.samples_seen += n_examples * world
                state.batch_digest = chain_digest(state.batch_digest, group)
                if bar is not None:
                    bar.update(1)
                if state.step % log_every == 0:  # a boundary: settled above
                    record({"kind": "train", "step": state.step, "epoch": state.epoch, "loss": state.window_loss / state.window_n,
                            "lr": {g["name"]: g["lr"] for g in optimizer.param_groups},
                            # None until a step's norm is read: under train.fp16 the first steps can all overflow.
                            "grad_norm": last["grad_norm"] if math.isfinite(last["grad_norm"]) else None,
                            "batches": state.batch_digest,
                            **({"loss_scale": state.loss_scale, "overflow_steps": state.overflow_steps} if cfg.fp16 else {})})
                    state.window_loss, state.window_n = 0.0, 0
                if state.step % eval_every == 0 or state.step == total_steps:
                    t0 = time.perf_counter()
                    state.stopped_early = run_eval()
                    eval_seconds += time.perf_counter() - t0
                if epoch_end:
                    state.epoch += 1
                    state.batch_in_epoch = 0
                # Under torchrun on GPUs, agreeing on a signal is a collective read back to the host: only at boundaries,
                # where the step is read anyway, so a signal waits at most log_every steps.
                stop_signal = stop.requested(world, device) if world == 1 or not deferred or boundary else 0
                if checkpoints is not None and (epoch_end or stop_signal or state.stopped_early or state.step == total_steps
                                                or (checkpoints.every and state.step % checkpoints.every == 0)):
                    saved = write_checkpoint()
                if stop_signal:
                    if world > 1:
                        torch.distributed.barrier()  # no rank exits (and makes torchrun kill the rest) before rank 0 has saved
                    raise TrainingInterrupted(stop_signal, state.step, saved)
        settle()  # the last step is a boundary and so settles itself; this is a guard, not a path
        check_weights()
        # A signal that came while the last checkpoint was written, after the loop last asked: training is complete and
        # checkpointed, so stop here as for any other signal (a resume goes straight to evaluating and saving). Asked
        # of every rank (a collective under torchrun), so that no rank stops alone while the others go on to save.
        late = stop.requested(world, device)
        if late:
            raise TrainingInterrupted(late, state.step, saved or checkpoints.resume_from)
    finally:
        optimizer.found_inf = optimizer.grad_scale = None
        if graphs is not None:
            graphs.release()
        if bar is not None:
            bar.close()
        if plan.gradual:
            set_trainable(total_steps)  # every planned group trainable again, as after a normal run
    clock()
    if best_weights is not None:
        model.load_state_dict(best_weights)
    if state.stopped_early and rank == 0:
        say(f"early stopping: no improvement in {cfg.early_stopping_patience} evaluations; best weights from step {state.best_step}")
    return FitResult(state=state, checkpoint_seconds=ckpt_seconds, token_rows=None if compact is None else [len(compact.used), compact.size],
                     cuda_graphs=None if graphs is None else graphs.captured)
