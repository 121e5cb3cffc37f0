"""Forward passes over encoded texts, shared by training (evaluation, calibration) and prediction.

Here, below both the loop and `predict`, so that training never imports the user-facing predictor.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch

from taskembed.data import Encoded, collate, eval_batches
from taskembed.modeling import top_layer_reads_head
from taskembed.onednn import onednn_linear


@torch.inference_mode()
def predict_logits(model, enc: Encoded, pad_id: int, device: torch.device, aggregate: str = "mean", bf16: bool = False) -> torch.Tensor:
    """Logits for every text in the original order, float32, batched by a token budget.

    In window mode (enc.doc_ids) each window is classified and a text's logits are the mean (or the
    elementwise max) of its windows' logits. bf16 autocasts the matmuls (opt-in: faster where the
    hardware has bfloat16 units, but scores then differ from float32 in the third decimal).
    """
    model.eval()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()
    out = torch.empty((len(enc), model.config.num_labels), dtype=torch.float32)
    # Both exact to float32 rounding, so always on for scoring. oneDNN's float32 products: about 2.3x MKL's on
    # AMD CPUs (taskembed/onednn.py).
    with autocast, top_layer_reads_head(model), onednn_linear(model):
        # Smaller batches run faster per token on CPUs (measured: 2,048 tokens 317 texts/s, 8,192 tokens 241 on
        # the 2-core development machine); GPUs want big ones.
        for idx in eval_batches(enc.lengths, max_tokens=2048 if device.type == "cpu" else 8192):
            batch = collate(enc, idx, pad_id)
            batch.pop("labels", None)
            logits = model(**{k: v.to(device) for k, v in batch.items()}).logits
            out[idx] = logits.float().cpu()
    if enc.doc_ids is None:
        return out
    return pool_windows(out, torch.tensor(enc.doc_ids), enc.n_texts, aggregate)


def pool_windows(x: torch.Tensor, segments: torch.Tensor, n: int, how: str) -> torch.Tensor:
    """Rows of x grouped by segments (0..n-1) into n rows: their mean, or elementwise max. Differentiable."""
    index = segments.unsqueeze(1).expand_as(x)
    return x.new_zeros((n, x.shape[1])).scatter_reduce(0, index, x, reduce="amax" if how == "max" else "mean", include_self=False)
