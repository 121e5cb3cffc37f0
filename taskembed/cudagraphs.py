"""CUDA graphs for the training forward and backward (`train.cuda_graphs`).

On a GPU a training step of a small encoder costs the time it takes to launch its few hundred kernels,
one Python call at a time, not their arithmetic: ../shared/DESIGN.md measured about 21 ms per optimizer
step on an H200 for all-MiniLM-L6-v2 whatever the batch size, the Trainer and a plain loop alike. A CUDA
graph records a forward (or a backward) once and launches it whole afterwards.

A graph replays fixed shapes on fixed buffers, so:

- Each batch is padded to a static shape (`pad`): its length up to a multiple of BUCKET tokens (never
  past the run's max_length), its rows up to the micro-batch size with dummy rows. A dummy row is the
  padding id with its first token attended (a row attending to nothing would be NaN through the
  softmax); its logits are cut off before the loss. Every weight's gradient is a sum over rows and
  tokens, and a dummy row or a padded token contributes zeros to it (its logits get no gradient; padded
  keys get none through the masked attention), so the gradient is the eager one up to the order in which
  floats are added.
- There is one graph per shape, captured the first time that shape comes
  (`torch.cuda.make_graphed_callables`), all in one memory pool. The capture's warm-up passes draw
  dropout masks; the CUDA generator is put back afterwards, so a run draws the same masks whenever its
  graphs were captured (a resumed run captures them again).
- The weights' gradients come out of the backward graph in its static buffers, which its next replay
  overwrites. Autograd may keep such a buffer as `.grad` itself, so after the first micro-batch of a step
  that has more, the loop copies the gradients out (`keep_grads`); the later ones add into the copies.
- Memory: each shape's graph keeps its own float32 gradient buffers for every trainable weight (about 65 MB
  for MiniLM with its compact token table, so about 0.5 GB over 8 shapes; about 3.5 GB for a BERT-base),
  and the pool holds one shape's activations. `release` frees them all when training ends.

Only the model's forward and backward are graphed: the loss, the clipping and the fused optimizer run as
before, a handful of launches. `train.cuda_graphs` is refused (taskembed/config.py) with options that change
shapes or what the step reads: gradual unfreezing, automatic batch splitting, windowed long texts and the
contrastive term; and under torchrun (loop.py).

What a CPU can check, tests/test_cudagraphs.py does: padding changes no gradient; the model's forward and
backward make no host read (which a capture refuses; run on the meta device, where any data-dependent
operation fails); and the loop's side of the contract (one capture per shape, the gradients handed back in
buffers that the next replay overwrites) ends at the eager weights, through a stand-in that reruns the
module eagerly. What only a real capture fixes (weight addresses, the dropout stream, what runs at capture
time) needs a GPU to check.
"""

from __future__ import annotations

import gc
import math
from typing import Callable

import torch

from taskembed.errors import UserError

BUCKET = 16
"""Padded lengths are multiples of this: about 8 graphs for texts of up to 128 tokens."""


def available(device: torch.device) -> bool:
    return device.type == "cuda"


def static_length(width: int, max_length: int) -> int:
    """The bucket a batch of `width` tokens is padded to: the next multiple of BUCKET, at most max_length (never below width)."""
    return max(width, min(BUCKET * math.ceil(width / BUCKET), max_length))


def pad_batch(batch: dict[str, torch.Tensor], rows: int, length: int, pad_id: int) -> dict[str, torch.Tensor]:
    """`batch` (input_ids, attention_mask, token_type_ids; labels untouched) padded to rows x length; dummy rows attend to their first token."""
    n, width = batch["input_ids"].shape
    out = {}
    for key, value in batch.items():
        if key == "labels":
            out[key] = value
            continue
        full = value.new_full((rows, length), pad_id if key == "input_ids" else 0)
        full[:n, :width] = value
        out[key] = full
    out["attention_mask"][n:, 0] = 1
    return out


class _Logits(torch.nn.Module):
    """What a graph captures: the model's logits from its inputs given in a fixed order (graphs take tensors only)."""

    def __init__(self, model: torch.nn.Module, keys: tuple[str, ...]):
        super().__init__()
        self.model, self.keys = model, keys

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.model(**dict(zip(self.keys, inputs))).logits


def capture(module: torch.nn.Module, sample: tuple[torch.Tensor, ...], pool) -> Callable[..., torch.Tensor]:
    """The module's forward and backward as CUDA graphs, captured on `sample`'s shapes (and values, for the warm-up)."""
    device = sample[0].device
    rng = torch.cuda.get_rng_state(device)
    try:
        # allow_unused_input: a weight the forward never reads (a model's spare layer) gets no gradient, as in eager.
        graphed = torch.cuda.make_graphed_callables(module, sample, num_warmup_iters=3, allow_unused_input=True, pool=pool)
    except torch.OutOfMemoryError:
        raise  # the loop's own out-of-memory advice
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"train.cuda_graphs: this model's training step could not be captured as a CUDA graph ({first}); "
                        "set train.cuda_graphs false") from exc
    torch.cuda.set_rng_state(rng, device)
    return graphed


class GraphedTraining:
    """The training forward through one CUDA graph per padded batch shape."""

    def __init__(self, model: torch.nn.Module, rows: int, max_length: int, pad_id: int):
        self.model, self.rows, self.max_length, self.pad_id = model, rows, max_length, pad_id
        self.graphs: dict[tuple, Callable[..., torch.Tensor]] = {}
        self.captured = 0  # shapes captured, kept after `release` for the run's record
        self.pool = torch.cuda.graph_pool_handle() if torch.cuda.is_available() else None

    def pad(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A collated batch (on the host, before its copy to the device) padded to its static shape."""
        n, width = batch["input_ids"].shape
        return pad_batch(batch, max(n, self.rows), static_length(width, self.max_length), self.pad_id)

    def logits(self, batch: dict[str, torch.Tensor], n: int) -> torch.Tensor:
        """The logits of the batch's first `n` rows (its real ones), through the graph of its shape."""
        keys = tuple(k for k in batch if k != "labels")
        inputs = tuple(batch[k] for k in keys)
        shape = (keys, tuple(inputs[0].shape))
        run = self.graphs.get(shape)
        if run is None:
            # The warm-up passes before the capture run eagerly, where transformers drops a mask of all ones to reach a
            # faster attention kernel, while the capture keeps the mask: one padded position in the sample (a copy: the
            # graph's own input buffers) sends the warm-up down the captured path too.
            sample = tuple(t.clone() for t in inputs)
            mask = sample[keys.index("attention_mask")]
            if mask.shape[1] > 1:
                mask[-1, -1] = 0
            run = self.graphs[shape] = capture(_Logits(self.model, keys), sample, self.pool)
            self.captured += 1
        return run(*inputs)[:n]

    @staticmethod
    def keep_grads(params: list[torch.nn.Parameter]) -> None:
        """Copy each gradient out of the graph's buffers, which the next replay overwrites (between micro-batches of a step)."""
        for p in params:
            if p.grad is not None:
                p.grad = p.grad.clone()

    def release(self) -> None:
        """Free the graphs and their memory pool: the graphed wrappers refer to themselves, so only the cyclic
        collector frees them, which would otherwise leave them through evaluation and saving."""
        self.graphs.clear()
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
