"""Dropout on the CPU without PyTorch's per-element Bernoulli draws.

On a CPU that is not Intel's, `torch.nn.functional.dropout` draws one double-precision Bernoulli
number per element, serially, on one core, from the Mersenne Twister: for all-MiniLM-L6-v2 that is
about 30 ms of a 160 ms training step (measured, docs/benchmarks.md). Attention dropout costs more:
with a dropout probability PyTorch's `scaled_dot_product_attention` leaves its fused CPU kernel for a
composite "math" path that also checks every row for being fully masked.

Here a mask is drawn four elements to one 64-bit number: each element gets a 16-bit lane, uniform
over [-32768, 32767], and is kept when its lane is at least round(p * 65536) - 32768. The drop
probability is therefore p rounded to a multiple of 1/65,536 (0.1 becomes 0.1000061), and the kept
values are scaled by 65536 / (65536 - round(p * 65536)), so the expected output still equals the
input exactly. The draws come from torch's default CPU generator, so the seed fixes them and a
checkpoint's RNG state resumes them.

`fast_dropout(model)` switches a model to this within a block and in the calling thread only: its
`nn.Dropout` modules draw lane masks, and its attention (through transformers' attention interface)
is computed as matmul, additive padding mask, softmax, lane dropout, matmul. Forwards without
gradients (evaluation, prediction) and other threads keep the library's own SDPA path.
"""

from __future__ import annotations

import contextvars
import math
import types
from contextlib import contextmanager
from typing import Iterator

import torch

ATTENTION = "taskembed_lanes"
"""The name under which the attention and its mask are registered with transformers."""

_ACTIVE: contextvars.ContextVar[bool] = contextvars.ContextVar("taskembed_fast_dropout", default=False)


def _lanes(shape: torch.Size, device: torch.device) -> torch.Tensor:
    """Uniform int16 values of `shape`: the 64-bit draws of the default generator, read as four 16-bit lanes each."""
    n = math.prod(shape)
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=device).random_(-(2**63), None)  # every bit random
    return words.view(torch.int16)[:n].view(shape)


def keep_scale(p: float) -> tuple[int, float]:
    """(threshold on a lane, scale of the kept values) for drop probability p."""
    dropped = round(p * 65536)
    return dropped - 32768, 65536 / (65536 - dropped)


class _LaneDropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, p: float) -> torch.Tensor:
        threshold, scale = keep_scale(p)
        keep = _keep(_lanes(x.shape, x.device), threshold)
        mask = keep.to(x.dtype)
        # Backward keeps the 0/1 mask in x's dtype when that takes two bytes (converting it again there would cost
        # a pass), and as int16 when it would take four.
        ctx.save_for_backward(mask if x.element_size() <= 2 else keep)
        ctx.scale = scale
        return _scaled(x, mask, scale)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (mask,) = ctx.saved_tensors
        return _scaled(grad, mask.to(grad.dtype), ctx.scale), None  # .to is free when the dtypes match


def _keep(lanes: torch.Tensor, threshold: int) -> torch.Tensor:
    """1 where a lane is at least the threshold, else 0, as int16, computed in place over the lanes.

    Clamped to [threshold - 1, threshold] and shifted to [0, 1]: the same values as `lanes >= threshold`, three
    times as fast with the conversion that follows (46 against 146 us to a bf16 mask for 32 texts of 28 tokens at
    width 384, ad-hoc microbenchmark). PyTorch's comparison writes booleans, and its kernels for a boolean
    operand (conversion, a mixed multiply, masked_fill) are slow paths on the CPU.
    """
    return lanes.clamp_(threshold - 1, threshold).sub_(threshold - 1)


def _scaled(x: torch.Tensor, mask: torch.Tensor, scale: float) -> torch.Tensor:
    """x * mask * scale in one pass: addcmul computes 0 + scale * x * mask in float32 and rounds once, as
    `x.mul(mask).mul_(scale)` does (multiplying by 0 or 1 is exact), without its second pass: about 100 us less
    a call, forward and backward together, at the size above (ad-hoc microbenchmark)."""
    return torch.addcmul(x.new_zeros(()), x, mask, value=scale)


def lane_dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """Dropout with lane masks (see the module docstring); the identity outside training or at p 0.

    p is rounded to a multiple of 1/65,536 first: under 1/131,072 it drops nothing, and within that of 1 it drops all.
    """
    dropped = round(p * 65536)
    if not training or dropped <= 0:
        return x
    if dropped >= 65536:
        return x * 0.0
    return _LaneDropout.apply(x, p)


def _dropout_forward(self, x: torch.Tensor) -> torch.Tensor:
    """nn.Dropout.forward with lane masks inside `fast_dropout`; the module's own forward elsewhere."""
    if _ACTIVE.get() and self.training and not self.inplace and x.device.type == "cpu":
        return lane_dropout(x, self.p)
    return type(self).forward(self, x)


def _attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling: float | None = None, **kwargs):
    """Attention for transformers' interface: the plain form with lane dropout when active and recording
    gradients; SDPA (transformers' own function) otherwise."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    plain = (_ACTIVE.get() and torch.is_grad_enabled() and query.device.type == "cpu"
             and (attention_mask is None or attention_mask.is_floating_point())
             and not getattr(module, "is_causal", False) and not kwargs.get("is_causal") and kwargs.get("position_bias") is None)
    if not plain:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    scores = torch.matmul(query, key.transpose(-1, -2)) * (scaling if scaling is not None else query.shape[-1] ** -0.5)
    if attention_mask is not None:
        # Additive: 0 where a key is read, a huge negative where it is padding. In the scores' dtype, so that under
        # bf16 autocast the whole attention stays bf16 as SDPA's is: a float32 mask would promote the scores,
        # softmax and dropout to float32, twice the memory kept for backward.
        scores = scores + attention_mask.to(scores.dtype)
    weights = _softmax(scores)
    if dropout > 0:
        weights = lane_dropout(weights, dropout, module.training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), None


def _softmax(scores: torch.Tensor) -> torch.Tensor:
    """Softmax over the keys, through float32 where PyTorch's bf16 CPU kernel is slow.

    That kernel handles a row 32 values at a time and the rest of it one value at a time; the float32
    kernel goes 16 at a time. So a row of 16 to 31 keys (mod 32), as in most length-grouped batches of
    short texts, is 3 to 4.7 times faster, forward and backward, converted to float32 and back (measured
    on the AVX-512 CPU of docs/benchmarks.md). The result is the float32 softmax rounded to bf16 once: at
    least as accurate as the bf16 kernel's, which can differ from it by an ulp.
    """
    if scores.dtype == torch.bfloat16 and scores.shape[-1] % 32 >= 16:
        return torch.softmax(scores, dim=-1, dtype=torch.float32).to(torch.bfloat16)
    return torch.softmax(scores, dim=-1)


def _mask(*args, **kwargs):
    """The attention mask: additive float (what `_attention` adds) when it will compute; SDPA's boolean otherwise."""
    from transformers.masking_utils import eager_mask, sdpa_mask

    return (eager_mask if _ACTIVE.get() and torch.is_grad_enabled() else sdpa_mask)(*args, **kwargs)


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(ATTENTION, _attention)
    AttentionMaskInterface.register(ATTENTION, _mask)


def _probe_logits(model) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(5, min(getattr(model.config, "vocab_size", 100), 100), (2, 7), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, 4:] = 0  # the second text has three padding tokens
    return model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device)).logits.float()


def _attention_matches(model) -> bool:
    """Whether the model computes the same logits (eval mode, so no dropout) with the plain attention as with SDPA."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            reference = _probe_logits(model)
        model.config._attn_implementation = ATTENTION
        token = _ACTIVE.set(True)
        try:
            with torch.enable_grad():
                plain = _probe_logits(model)
        finally:
            _ACTIVE.reset(token)
            model.config._attn_implementation = "sdpa"
        return plain.shape == reference.shape and torch.allclose(plain, reference, rtol=1e-4, atol=1e-5)
    except Exception:  # a model whose code does not fit transformers' attention interface keeps its own attention
        return False
    finally:
        model.train(was_training)


def _install(model) -> bool:
    """Lane masks for the model's nn.Dropout modules (once); whether its attention can be switched too."""
    if not hasattr(model, "_taskembed_lane_attention"):
        for m in model.modules():
            if type(m) is torch.nn.Dropout and "forward" not in vars(m):
                m.forward = types.MethodType(_dropout_forward, m)
        _register()
        model._taskembed_lane_attention = model.config._attn_implementation == "sdpa" and _attention_matches(model)
    return model._taskembed_lane_attention


@contextmanager
def fast_dropout(model, enabled: bool = True) -> Iterator[bool]:
    """Within this block, in this thread, the model's dropout draws lane masks (CPU only). Yields whether it does."""
    if not enabled or next(model.parameters()).device.type != "cpu":
        yield False
        return
    switch = _install(model)
    token = _ACTIVE.set(True)
    if switch:
        model.config._attn_implementation = ATTENTION
    try:
        yield True
    finally:
        if switch:
            model.config._attn_implementation = "sdpa"
        _ACTIVE.reset(token)
