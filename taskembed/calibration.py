"""Temperature scaling: probabilities that mean what they say.

Fine-tuned classifiers are usually over-confident. One scalar T, fitted on the
validation logits by minimising the negative log-likelihood, divides the logits
before the softmax (Guo et al., 2017). It never changes which label wins, so
accuracy is untouched; the expected calibration error (ECE) shows the effect.
The raw scores stay what `pipeline("text-classification")` returns; the
calibrated ones are reported beside them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

CALIBRATION_FILE = "calibration.json"
T_MIN, T_MAX = 0.05, 20.0
"""The temperatures searched. A fit that ends at either bound found no minimum: a validation split the model gets
entirely right (or entirely wrong) has its NLL fall all the way to T -> 0 (or infinity), and such a T would make
every calibrated score about 1.0 (or uniform)."""


MIN_TEXTS = 20
"""Fewer validation texts fit a temperature to noise: a review's run fitted T = 0.17 to 2 of them."""


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The T > 0 that minimises NLL(softmax(logits / T)); a bounded 1-D search, deterministic."""
    logits = logits.double()
    labels = labels.long()

    def nll(log_t: float) -> float:
        return float(F.cross_entropy(logits / math.exp(log_t), labels))

    # NLL is unimodal in log T for practical logits; golden-section search over T in [T_MIN, T_MAX].
    lo, hi = math.log(T_MIN), math.log(T_MAX)
    g = (math.sqrt(5) - 1) / 2
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    fa, fb = nll(a), nll(b)
    for _ in range(80):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - g * (hi - lo)
            fa = nll(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = nll(b)
    return math.exp((lo + hi) / 2)


def reliability(probs: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> dict[str, Any]:
    """Expected calibration error of the top-label confidence, and the per-bin table behind it."""
    conf, pred = probs.max(dim=-1)
    correct = (pred == labels).double()
    edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64)
    rows, ece = [], 0.0
    for i in range(bins):
        upper = conf <= edges[i + 1] if i == bins - 1 else conf < edges[i + 1]
        mask = (conf >= edges[i]) & upper
        n = int(mask.sum())
        if n == 0:
            continue
        acc, avg_conf = float(correct[mask].mean()), float(conf[mask].double().mean())
        ece += n / len(labels) * abs(acc - avg_conf)
        rows.append({"low": float(edges[i]), "high": float(edges[i + 1]), "n": n, "accuracy": acc, "confidence": avg_conf})
    return {"ece": ece, "bins": rows}


def calibrate(val_logits: torch.Tensor, val_labels: torch.Tensor,
              others: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> tuple[dict[str, Any] | None, str | None]:
    """Fit T on validation; ECE before and after on validation and every other split given. (None, why) when no
    temperature fits (see T_MIN), the fitted one would not lower the validation ECE, or validation has under MIN_TEXTS texts."""
    if len(val_labels) < MIN_TEXTS:
        return None, (f"{len(val_labels)} validation texts are too few to fit a temperature to ({MIN_TEXTS} at least), so "
                      "calibrated scores would mean nothing; a larger validation split calibrates")
    right = int((val_logits.argmax(-1) == val_labels).sum())
    if right == len(val_labels):
        # With no mistake the likelihood only rises as T falls, and in float64 it reaches exactly 1 once every margin over T
        # passes about 37: the search then stops anywhere on that plateau, above T_MIN (a review's run kept T = 0.07).
        return None, (f"no temperature fits the {len(val_labels)} validation texts (all classified right, so the sharper the "
                      "scores the better they fit, without end), so calibrated scores would mean nothing; a larger validation "
                      "split with some mistakes in it calibrates")
    t = fit_temperature(val_logits, val_labels)
    if t >= T_MAX / 1.01:
        # The fit flattens as far as its range allows for two reasons: scores that say nothing of the labels (a model no
        # better than its most common class: the model is what to look at, not the split), or scores far more confident
        # than the model is right (an overfit model's margins of 80).
        majority = int(torch.bincount(val_labels).max())
        why = (f"the scores say little about the labels ({right} of {len(val_labels)} classified right, no more than always "
               "answering the most common class would); the model learnt little, so train it longer or at another rate "
               "(taskembed lr-find suggests one)" if right <= majority else
               f"the scores are far more confident than the model is right ({right} of {len(val_labels)}), beyond what one "
               "temperature corrects here; fewer epochs or more regularisation (train.weight_decay, model.dropout) would help")
        return None, (f"no temperature fits the {len(val_labels)} validation texts: the fit flattened the scores as far as its range "
                      f"allows (T = {t:.2f}), since {why}")
    if t <= T_MIN * 1.01:
        # Reached with mistakes only (an all-right split returned above): the right answers' margins are too small
        # against the wrong ones' for any sharpening to stop paying.
        return None, (f"no temperature fits the {len(val_labels)} validation texts ({right} classified right; the fit ran to "
                      f"T = {t:.2f}, the sharpest its range allows, as scores far less confident than the model is right "
                      "make it), so calibrated scores would mean nothing; a larger validation split calibrates more reliably")
    # T minimises the likelihood, not the binned ECE the report shows; on a small split the two can disagree (in 349 of
    # 3,000 random draws of 20 to 80 two-class logits). A T that does not lower the ECE of the very texts it was fitted on is not kept.
    raw, scaled = (reliability(x.softmax(-1), val_labels)["ece"] for x in (val_logits, val_logits / t))
    if scaled >= raw and abs(t - 1) <= 0.05 and len(val_labels) >= 200 and raw <= 0.05:
        # T near 1 is the model's own scores: nothing to correct, and a larger split would not change that. On a small
        # split, or with a large error, T near 1 may be noise, which the advice below is for.
        return None, (f"the scores are already calibrated on the {len(val_labels)} validation texts (the best temperature, "
                      f"T = {t:.2f}, changes their expected calibration error from {100 * raw:.1f}% to {100 * scaled:.1f}%), "
                      "so they are kept as they are")
    if scaled >= raw:
        return None, (f"the temperature that fits the {len(val_labels)} validation texts best (T = {t:.2f}) would not lower their "
                      f"expected calibration error ({100 * raw:.1f}% raw, {100 * scaled:.1f}% with it), so it is not kept; a "
                      "larger validation split calibrates more reliably")
    report: dict[str, Any] = {"temperature": t, "fitted_on": "validation", "bins": 15, "splits": {}}
    for split, (logits, labels) in {"validation": (val_logits, val_labels), **others}.items():
        before = reliability(logits.softmax(-1), labels)
        after = reliability((logits / t).softmax(-1), labels)
        report["splits"][split] = {"ece_before": before["ece"], "ece_after": after["ece"], "bins_before": before["bins"], "bins_after": after["bins"]}
    return report, None


def plot_reliability(report: dict[str, Any], split: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = report["splits"][split]
    fig, ax = plt.subplots(figsize=(4.6, 4.4))
    ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--", label="perfect calibration")
    for key, name in (("bins_before", f"raw (ECE {100 * s['ece_before']:.1f}%)"), ("bins_after", f"T = {report['temperature']:.2f} (ECE {100 * s['ece_after']:.1f}%)")):
        bins = s[key]
        ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], marker="o", label=name)
    ax.set_xlabel("confidence of the predicted label")
    ax.set_ylabel("accuracy")
    ax.set_title(f"reliability ({split})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
