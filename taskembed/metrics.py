"""Scores, baselines and the plots a person would rather look at than read.

Numbers come from scikit-learn, which needs no network (`evaluate.load` would
fetch metric scripts from the Hub). Baselines are scored on the same splits as
the model so the report shows what fine-tuning bought.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def classification_metrics(y_true: Sequence[int], y_pred: Sequence[int], labels: list[str]) -> dict[str, Any]:
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    ids = list(range(len(labels)))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=ids, zero_division=0)
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=ids, average="macro", zero_division=0)),
        "n": len(y_true),
        "per_class": {
            name: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
            for i, name in enumerate(labels)
        },
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=ids).tolist(),
    }


def metrics_from_logits(logits, y: Sequence[int], labels: list[str]) -> dict[str, Any]:
    """Classification metrics plus the mean cross-entropy of float32 logits."""
    import torch
    import torch.nn.functional as F

    m = classification_metrics(list(y), logits.argmax(-1).tolist(), labels)
    m["loss"] = float(F.cross_entropy(logits.float(), torch.as_tensor(list(y))))
    return m


def error_analysis(logits, y: Sequence[int], texts: Sequence[str], labels: list[str], pairs: int = 10, examples: int = 20) -> dict[str, Any]:
    """The most confused label pairs and the examples the model gets most confidently wrong (highest loss)."""
    import torch

    y_t = torch.as_tensor(list(y))
    probs = logits.float().softmax(-1)
    pred = probs.argmax(-1)
    p_true = probs[torch.arange(len(y_t)), y_t]
    confusion: dict[tuple[int, int], int] = {}
    for t, q in zip(y_t.tolist(), pred.tolist()):
        if t != q:
            confusion[(t, q)] = confusion.get((t, q), 0) + 1
    top_pairs = sorted(confusion.items(), key=lambda kv: (-kv[1], kv[0]))[:pairs]
    order = torch.argsort(-(-p_true.clamp_min(1e-12).log()), stable=True).tolist()
    worst = [i for i in order if pred[i] != y_t[i]][:examples]
    return {
        "confused_pairs": [{"true": labels[t], "predicted": labels[q], "count": n} for (t, q), n in top_pairs],
        "top_loss": [
            {"text": texts[i] if len(texts[i]) <= 300 else texts[i][:297] + "...", "label": labels[int(y_t[i])],
             "predicted": labels[int(pred[i])], "p_label": float(p_true[i]), "p_predicted": float(probs[i, pred[i]])}
            for i in worst
        ],
    }


def baselines(train_texts: list[str], train_y: list[int], eval_sets: dict[str, tuple[list[str], list[int]]], labels: list[str], seed: int = 0) -> dict[str, dict[str, dict[str, float]]]:
    """Majority class and TF-IDF (word 1-2 grams) + logistic regression, fitted on train only."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    majority = int(np.bincount(np.asarray(train_y), minlength=len(labels)).argmax())
    tfidf = make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), min_df=1, sublinear_tf=True),
        LogisticRegression(C=10.0, max_iter=2000, random_state=seed),
    ).fit(train_texts, train_y)
    out: dict[str, dict[str, dict[str, float]]] = {}
    for split, (texts, y) in eval_sets.items():
        out[split] = {}
        for name, pred in (("majority", [majority] * len(y)), ("tfidf_logreg", tfidf.predict(texts).tolist())):
            m = classification_metrics(y, pred, labels)
            out[split][name] = {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"]}
    return out


def plot_confusion(matrix: list[list[int]], labels: list[str], path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = np.asarray(matrix)
    n = len(labels)
    size = min(4 + 0.35 * n, 20)
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    # Row-normalised colours (recall per true class) so small classes are as visible as large ones.
    norm = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), labels, rotation=90 if n > 6 else 0, fontsize=8 if n > 12 else 10)
    ax.set_yticks(range(n), labels, fontsize=8 if n > 12 else 10)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=8, color="white" if norm[i, j] > 0.5 else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_curves(log: list[dict[str, Any]], path, metric: str) -> None:
    """Training loss per logged step and the validation metric per evaluation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [r for r in log if r.get("kind") == "train"]
    evals = [r for r in log if r.get("kind") == "eval"]
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    ax[0].plot([r["step"] for r in train], [r["loss"] for r in train], lw=1)
    ax[0].set_xlabel("optimizer step")
    ax[0].set_ylabel("training loss")
    ax[0].set_title("loss")
    if evals:
        ax[1].plot([r["step"] for r in evals], [r[metric] for r in evals], marker="o", label=f"validation {metric}")
        ax[1].plot([r["step"] for r in evals], [r["loss"] for r in evals], marker="x", label="validation loss")
        ax[1].legend()
    ax[1].set_xlabel("optimizer step")
    ax[1].set_title("validation")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
