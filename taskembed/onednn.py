"""Float32 linear layers through oneDNN when nothing records gradients (evaluation, predict, embeddings).

PyTorch computes a float32 `nn.Linear` on the CPU with MKL's sgemm. MKL picks its code path by CPU
vendor, and on AMD processors it runs its AVX2 kernels even where the CPU has AVX-512: on the 2-core
AMD EPYC (Zen 5) of docs/benchmarks.md that is about 215 GFLOP/s at all-MiniLM-L6-v2's shapes, where
oneDNN, which PyTorch also ships and which picks its kernels by instruction set, reaches about 500 on
the same float32 arithmetic. Prediction spent 85% of its time in these products; on oneDNN it runs about
1.6x faster (docs/benchmarks.md, "Inference").

The results are float32 products summed in a different order: they differ from MKL's by float32
rounding (measured against a float64 reference, both are within a few 1e-6), as two BLAS libraries do.
The switch is the operator inductor itself uses for CPU linear layers; `available()` checks once per
process that it exists and agrees with `torch.nn.functional.linear`, and otherwise nothing changes.

`onednn_linear(model)` switches the model's `nn.Linear` modules within a block, in the calling thread,
for float32 CPU inputs when gradients are off and autocast is not on; everything else takes the module's
own forward. TASKEMBED_ONEDNN_LINEAR=0 in the environment turns it off.
"""

from __future__ import annotations

import contextvars
import functools
import os
import types
from contextlib import contextmanager
from typing import Iterator

import torch

_ACTIVE: contextvars.ContextVar[bool] = contextvars.ContextVar("taskembed_onednn_linear", default=False)


def _op():
    return torch.ops.mkldnn._linear_pointwise


@functools.cache
def available() -> bool:
    """Whether the oneDNN operator is there and gives F.linear's products (to float32 rounding) on a probe."""
    if os.environ.get("TASKEMBED_ONEDNN_LINEAR", "1").strip().lower() in ("0", "false", "off", "no"):
        return False
    try:
        if not torch.backends.mkldnn.is_available():
            return False
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(3, 5, 64, generator=gen)
        w = torch.randn(48, 64, generator=gen)
        b = torch.randn(48, generator=gen)
        with torch.no_grad():
            got = _op()(x, w, b, "none", [], "")
            want = torch.nn.functional.linear(x, w, b)
        return got.shape == want.shape and got.dtype == torch.float32 and torch.allclose(got, want, rtol=1e-5, atol=1e-5)
    except Exception:  # an old or foreign build without the operator: MKL it is
        return False


def _linear_forward(self, x: torch.Tensor) -> torch.Tensor:
    """nn.Linear.forward through oneDNN inside `onednn_linear` for float32 CPU inference; the module's own forward elsewhere."""
    if (_ACTIVE.get() and x.dtype == torch.float32 and self.weight.dtype == torch.float32 and x.device.type == "cpu"
            and not torch.is_grad_enabled() and not torch.is_autocast_enabled("cpu")):
        return _op()(x, self.weight, self.bias, "none", [], "")
    return type(self).forward(self, x)


def _install(model) -> None:
    for m in model.modules():
        if type(m) is torch.nn.Linear and "forward" not in vars(m):
            m.forward = types.MethodType(_linear_forward, m)


@contextmanager
def onednn_linear(model, enabled: bool = True) -> Iterator[bool]:
    """Within this block, in this thread, the model's float32 linear layers run on oneDNN when no gradient is
    recorded (see the module docstring). Yields whether they can."""
    if not enabled or next(model.parameters()).device.type != "cpu" or not available():
        yield False
        return
    _install(model)
    token = _ACTIVE.set(True)
    try:
        yield True
    finally:
        _ACTIVE.reset(token)
