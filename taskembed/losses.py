"""The training objective: cross-entropy (or BCE for multi-label) plus an optional contrastive term.

Kept apart from the loop so each term can be read, and tested, on its own.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from taskembed.errors import UserError


def classification_loss(logits: torch.Tensor, y: torch.Tensor, *, class_weights: torch.Tensor | None = None,
                        label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean loss of a batch: cross-entropy for class ids, binary cross-entropy for multi-hot float targets."""
    logits = logits.float()  # under bf16 autocast the softmax and its log stay in float32
    if y.dtype.is_floating_point:
        return F.binary_cross_entropy_with_logits(logits, y)
    return F.cross_entropy(logits, y, weight=class_weights, label_smoothing=label_smoothing)


def check_class_weight_names(spec: str | dict[str, float], labels: list[str]) -> None:
    """A map of class weights names only labels of the data (checked as soon as the labels are known, before any
    model loads or text is tokenized)."""
    if not isinstance(spec, dict):
        return
    import difflib

    unknown = sorted(set(spec) - set(labels))
    if unknown:
        close = [x for x in labels if x.casefold() == unknown[0].casefold()] or difflib.get_close_matches(unknown[0], labels, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise UserError(f"train.class_weights names label '{unknown[0]}', which is not in the data (labels: "
                        f"{', '.join(labels[:12])}{' ...' if len(labels) > 12 else ''}); {hint}fix the name or drop it")


def class_weights(spec: str | dict[str, float], targets: Sequence[int], labels: list[str]) -> torch.Tensor | None:
    """train.class_weights as one weight per class id. 'balanced': each class weighs n / (classes * count), so every
    class adds the same total to the loss; a map {label: weight} sets the named classes' weights, the others stay 1."""
    if spec == "none":
        return None
    if isinstance(spec, dict):
        check_class_weight_names(spec, labels)
        return torch.tensor([float(spec.get(name, 1.0)) for name in labels])
    counts = torch.bincount(torch.tensor(targets), minlength=len(labels)).double()
    return (counts.sum() / (len(labels) * counts)).float()


def step_shares(pieces: Sequence[Sequence[int]], targets: Sequence[int], class_weights: Sequence[float] | None) -> list[float]:
    """Each micro-batch's share of its optimizer step's cross-entropy.

    A piece's mean loss counts by its share of the step's examples, or, with class weights, of the step's weight:
    weighted cross-entropy is sum(w l) / sum(w) over the whole step. Accumulating or splitting a step then gives
    the loss of the step taken at once. `targets[d]` is example d's class id; `class_weights` are host floats
    (read from a GPU tensor every step, they would stall the host on the device).
    """
    sizes = [float(len(p)) if class_weights is None else sum(class_weights[targets[d]] for d in p) for p in pieces]
    total = sum(sizes)
    return [s / total for s in sizes]


def supervised_contrastive(features: torch.Tensor, y: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al. 2020, the L_out form) of one batch.

    Each example is an anchor; the other examples of its class are its positives and every other
    example is in the denominator. Vectors are L2-normalised, so the loss pulls a class together on the
    unit sphere and pushes classes apart, which is what cosine search over the embeddings rewards.
    Anchors without a positive in the batch contribute nothing; a batch with none gives 0 (a tensor
    that still carries the graph, so backward works the same either way). Computed without a branch on
    the data, which on a GPU would wait for the device at every step.
    """
    z = F.normalize(features.float(), dim=-1)
    sim = z @ z.T / temperature
    n = len(y)
    self_mask = torch.eye(n, dtype=torch.bool, device=z.device)
    # An anchor is never its own positive or negative. The lowest float rather than -inf: its exp is 0 all the same,
    # and a batch of one example then gives a finite gradient, not NaN.
    sim = sim.masked_fill(self_mask, torch.finfo(sim.dtype).min)
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    positive = (y.unsqueeze(0) == y.unsqueeze(1)) & ~self_mask
    n_pos = positive.sum(1)
    per_anchor = -log_prob.masked_fill(~positive, 0.0).sum(1) / n_pos.clamp(min=1)
    has = n_pos > 0
    return (per_anchor * has).sum() / has.sum().clamp(min=1)
