"""Scores, baselines and the plots a person would rather look at than read.

Numbers come from scikit-learn, which needs no network (`evaluate.load` would
fetch metric scripts from the Hub). Baselines are scored on the same splits as
the model so the report shows what fine-tuning bought.
"""

from __future__ import annotations

import warnings
from typing import Any, Sequence

import numpy as np


def classification_metrics(y_true: Sequence[int], y_pred: Sequence[int], labels: list[str]) -> dict[str, Any]:
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    ids = list(range(len(labels)))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=ids, zero_division=0)
    predicted = np.bincount(np.asarray(y_pred, dtype=np.int64), minlength=len(ids))
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        # Over the labels in the truth or the predictions, as scikit-learn's default (and so the Trainer's examples)
        # averages: a label absent from both, say from a file of two of three classes, is not a 0 in the mean.
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "n": len(y_true),
        "per_class": {
            name: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i]), "predicted": int(predicted[i])}
            for i, name in enumerate(labels)
        },
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=ids).tolist(),
    }


def per_class_cells(v: dict[str, Any]) -> str:
    """One class's "precision | recall | F1 | support" for a Markdown table, in percent. A measure without a defined value
    is "–", not scikit-learn's 0.0, which reads as a class the model always gets wrong: recall and F1 of a class the data
    has no example of, precision of a class never predicted."""
    undefined_precision = v.get("predicted") == 0
    cells = ("–" if undefined_precision else f"{100 * v['precision']:.1f}",
             *(("–", "–") if v["support"] == 0 else (f"{100 * v['recall']:.1f}", f"{100 * v['f1']:.1f}")), str(v["support"]))
    return " | ".join(cells)


def metrics_from_logits(logits, y: Sequence[int] | Sequence[Sequence[int]], labels: list[str]) -> dict[str, Any]:
    """Classification metrics plus the mean cross-entropy of float32 logits.

    Multi-hot targets (one 0/1 list per example) are scored as multi-label at the fixed 0.5 threshold.
    """
    import torch
    import torch.nn.functional as F

    y = list(y)
    if y and isinstance(y[0], (list, tuple)):
        return multi_label_metrics(logits, y, labels)
    m = classification_metrics(list(y), logits.argmax(-1).tolist(), labels)
    m["loss"] = float(F.cross_entropy(logits.float(), torch.as_tensor(list(y))))
    return m


# --- multi-label ------------------------------------------------------------------------------------

THRESHOLDS_FILE = "thresholds.json"
DEFAULT_THRESHOLD = 0.5
# Candidate decision thresholds, 0.01 to 0.99 in steps of 0.01 (0.5 included exactly).
THRESHOLD_GRID = np.round(np.arange(1, 100) / 100, 2)


def multi_label_metrics(logits, y: Sequence[Sequence[int]], labels: list[str], thresholds: Sequence[float] | None = None) -> dict[str, Any]:
    """Multi-label scores of float32 logits against multi-hot targets: a label is predicted when sigmoid(logit) >= its threshold.

    "accuracy" is subset accuracy (the predicted set equals the true set), so the loop's validation
    metrics (accuracy, macro_f1, loss) mean the same for both kinds of task; loss is the mean binary
    cross-entropy. Thresholds default to 0.5 for every label.
    """
    import torch
    import torch.nn.functional as F

    target = np.asarray(y, dtype=np.int64).reshape(len(y), len(labels))
    logits = torch.as_tensor(logits).float()
    pred = predict_sets(torch.sigmoid(logits).numpy(), thresholds)
    m = multi_label_scores(target, pred, labels)
    m["loss"] = float(F.binary_cross_entropy_with_logits(logits, torch.as_tensor(target, dtype=torch.float32)))
    return m


def predict_sets(probs: np.ndarray, thresholds: Sequence[float] | None = None) -> np.ndarray:
    """0/1 decisions: probability >= the label's threshold (0.5 when none are given)."""
    probs = np.asarray(probs)
    thr = np.full(probs.shape[1], DEFAULT_THRESHOLD) if thresholds is None else np.asarray(thresholds, dtype=np.float64)
    return (probs >= thr[None, :]).astype(np.int64)


def multi_label_scores(target: np.ndarray, pred: np.ndarray, labels: list[str]) -> dict[str, Any]:
    from sklearn.metrics import accuracy_score, f1_score, hamming_loss, precision_recall_fscore_support

    p, r, f, s = precision_recall_fscore_support(target, pred, average=None, labels=list(range(len(labels))), zero_division=0)
    # As the single-label macro-F1 averages (classification_metrics): over the labels in the truth or the predictions.
    # scikit-learn's multi-label average takes every column, so a label neither in a file nor predicted counted as a 0.
    present = np.flatnonzero(target.any(axis=0) | pred.any(axis=0)).tolist() or list(range(len(labels)))
    return {
        "accuracy": float(accuracy_score(target, pred)),  # subset accuracy on multi-hot input
        "micro_f1": float(f1_score(target, pred, average="micro", zero_division=0)),
        "macro_f1": float(f1_score(target, pred, average="macro", labels=present, zero_division=0)),
        "samples_f1": float(f1_score(target, pred, average="samples", zero_division=0)),
        "hamming_loss": float(hamming_loss(target, pred)),
        "n": int(len(target)),
        "per_class": {
            name: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
            for i, name in enumerate(labels)
        },
    }


def tune_thresholds(probs, y: Sequence[Sequence[int]], labels: list[str], grid: Sequence[float] = THRESHOLD_GRID,
                    min_positives: int = 1) -> dict[str, dict[str, Any]]:
    """Per label, the threshold on `grid` that maximises that label's F1 on these (validation) probabilities.

    Ties go to the candidate closest to 0.5 (the lower one when two are equally close), so a
    threshold moves only when it buys F1; a label with fewer than `min_positives` positive examples
    here keeps 0.5, since a maximum over so few is noise (with none there is nothing to tune on).
    Returns {label: {threshold, f1_at_0.5, f1_tuned, positives}}.
    """
    probs = np.asarray(probs, dtype=np.float64)
    target = np.asarray(y, dtype=bool).reshape(len(probs), len(labels))
    grid = np.asarray(grid, dtype=np.float64)
    out = {}
    for j, name in enumerate(labels):
        pos = int(target[:, j].sum())
        f1 = _f1_by_threshold(probs[:, j], target[:, j], grid)
        default = float(_f1_by_threshold(probs[:, j], target[:, j], np.array([DEFAULT_THRESHOLD]))[0])
        if pos < max(1, min_positives):
            threshold, best = DEFAULT_THRESHOLD, default
        else:
            best = float(f1.max())
            ties = grid[f1 == f1.max()]
            # Rounded before comparing: in floating point 0.58 is nearer to 0.5 than 0.42, and the lower must win a tie.
            threshold = float(ties[np.argmin(np.round(np.abs(ties - DEFAULT_THRESHOLD), 9))])
        out[name] = {"threshold": threshold, "f1_at_0.5": default, "f1_tuned": best, "positives": pos}
    return out


def _f1_by_threshold(p: np.ndarray, t: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """F1 of one label at every threshold at once (0 where it is undefined, as sklearn's zero_division=0)."""
    pred = p[:, None] >= grid[None, :]
    tp = (pred & t[:, None]).sum(0)
    fp = (pred & ~t[:, None]).sum(0)
    fn = int(t.sum()) - tp
    denom = 2 * tp + fp + fn
    return np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)


def threshold_report(logits: dict[str, Any], targets: dict[str, Sequence[Sequence[int]]], labels: list[str],
                     min_positives: int = 1) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """Tune thresholds on validation and score every split at them and at 0.5.

    Returns (thresholds.json content, or None without a validation split; metrics per split). Each
    split's top-level metrics are at the thresholds a saved folder predicts with (the tuned ones, or
    0.5 without validation); "at_0.5" holds the same metrics at the fixed 0.5, so the gain is visible.
    """
    import torch

    info = None
    thresholds = None
    if "validation" in logits:
        min_positives = max(1, min_positives)
        probs = torch.sigmoid(torch.as_tensor(logits["validation"]).float()).numpy()
        tuned = tune_thresholds(probs, targets["validation"], labels, min_positives=min_positives)
        thresholds = [tuned[name]["threshold"] for name in labels]
        info = {
            "rule": "a label is predicted when its sigmoid probability >= its threshold",
            "tuned_on": "validation",
            "objective": f"each label's own F1; ties go to the threshold closest to 0.5; labels with fewer than {min_positives} "
                         "validation positives keep 0.5",
            "min_positives": min_positives,
            "grid": {"start": float(THRESHOLD_GRID[0]), "stop": float(THRESHOLD_GRID[-1]), "step": 0.01},
            "default": DEFAULT_THRESHOLD,
            "labels": {name: {"threshold": v["threshold"], "validation_f1_at_0.5": v["f1_at_0.5"], "validation_f1_tuned": v["f1_tuned"],
                              "validation_positives": v["positives"]} for name, v in tuned.items()},
        }
    metrics = {}
    for split in logits:
        m = multi_label_metrics(logits[split], targets[split], labels, thresholds)
        m["thresholds"] = dict(zip(labels, thresholds if thresholds is not None else [DEFAULT_THRESHOLD] * len(labels)))
        m["thresholds_tuned"] = thresholds is not None  # False: no validation split to tune on, so 0.5 throughout
        m["at_0.5"] = multi_label_metrics(logits[split], targets[split], labels)
        metrics[split] = m
    return info, metrics


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


CHARACTER_FEATURES = "character 1-3-grams: no training text has a word of two letters or digits"
"""The TF-IDF baseline's "features" where it falls back from words to characters (texts of emoticons, emoji or
one-letter answers), which scikit-learn's word tokenizer finds empty and refuses with "empty vocabulary"."""


def _tfidf_features(train_texts: list[str]):
    """Word 1-2-grams, or character 1-3-grams where no training text has a word for them (see CHARACTER_FEATURES): an
    error there came after training, and cost the run its model folder."""
    import re

    from sklearn.feature_extraction.text import TfidfVectorizer

    words = re.compile(r"(?u)\b\w\w+\b")  # TfidfVectorizer's own token_pattern
    if any(words.search(t) for t in train_texts):
        return TfidfVectorizer(ngram_range=(1, 2), min_df=1, sublinear_tf=True), None
    return TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 3), min_df=1, sublinear_tf=True), CHARACTER_FEATURES


def baselines(train_texts: list[str], train_y: list[int], eval_sets: dict[str, tuple[list[str], list[int]]], labels: list[str], seed: int = 0) -> dict[str, dict[str, dict[str, float]]]:
    """Majority class and TF-IDF (word 1-2 grams; characters where there are no words) + logistic regression, fitted on
    train only."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    if train_y and isinstance(train_y[0], (list, tuple)):
        return _multi_label_baselines(train_texts, train_y, eval_sets, labels, seed)

    vectorizer, features = _tfidf_features(train_texts)
    tfidf = make_pipeline(vectorizer, LogisticRegression(C=10.0, max_iter=2000, random_state=seed)).fit(train_texts, train_y)
    majority = majority_scores(train_y, {split: y for split, (_, y) in eval_sets.items()}, labels)
    out: dict[str, dict[str, dict[str, float]]] = {}
    for split, (texts, y) in eval_sets.items():
        m = classification_metrics(y, tfidf.predict(texts).tolist(), labels)
        out[split] = {"majority": majority[split], "tfidf_logreg": {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"],
                                                                    **({"features": features} if features else {})}}
    return out


def majority_scores(train_y: list[int], eval_y: dict[str, list[int]], labels: list[str]) -> dict[str, dict[str, float]]:
    """Accuracy and macro-F1 of always answering the training split's most common class, per split (single-label).

    Where several classes share the largest count (a few-shot draw of N per label ties them all), which one argmax picks
    is arbitrary, and so would the baseline be: it is then the mean over the tied classes, with "tied": their number and
    "best_accuracy" / "best_macro_f1": the best of them, which the "learnt nothing" note compares with. Closed form: one
    constant answer c is right on the n_c texts of c, and its F1 is 2 n_c / (n + n_c), averaged as scikit-learn's macro
    average is, over the labels in the truth or the predictions (a confusion matrix per tied class cost seconds)."""
    counts = np.bincount(np.asarray(train_y), minlength=len(labels))
    tied = np.flatnonzero(counts == counts.max()).tolist()
    out = {}
    for split, y in eval_y.items():
        truth = np.bincount(np.asarray(y, dtype=np.int64), minlength=len(labels))
        n, present = len(y), set(np.flatnonzero(truth).tolist())
        acc = [truth[c] / n if n else 0.0 for c in tied]
        f1 = [(2 * truth[c] / (n + truth[c]) if truth[c] else 0.0) / len(present | {c}) for c in tied]
        out[split] = {"accuracy": float(np.mean(acc)), "macro_f1": float(np.mean(f1))}
        if len(tied) > 1:
            out[split].update(tied=len(tied), best_accuracy=float(max(acc)), best_macro_f1=float(max(f1)))
    return out


def _multi_label_baselines(train_texts, train_y, eval_sets, labels, seed) -> dict[str, dict[str, dict[str, float]]]:
    """Multi-label: per-label majority (a label is predicted when most training examples carry it, so
    usually the empty set) and TF-IDF + one-vs-rest logistic regression at 0.5, fitted on train only."""
    import warnings

    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.pipeline import make_pipeline

    target = np.asarray(train_y, dtype=np.int64)
    majority = (target.mean(axis=0) > 0.5).astype(np.int64)
    vectorizer, features = _tfidf_features(train_texts)
    tfidf = make_pipeline(vectorizer, OneVsRestClassifier(LogisticRegression(C=10.0, max_iter=2000, random_state=seed)))
    with warnings.catch_warnings():
        # A label present in every training example gets a constant predictor; sklearn warns, the result is right.
        warnings.filterwarnings("ignore", message="Label .* is present in all training examples")
        tfidf.fit(train_texts, target)
    out: dict[str, dict[str, dict[str, float]]] = {}
    for split, (texts, y) in eval_sets.items():
        y = np.asarray(y, dtype=np.int64)
        out[split] = {}
        for name, pred in (("majority", np.tile(majority, (len(y), 1))), ("tfidf_logreg", np.asarray(tfidf.predict(texts)))):
            m = multi_label_scores(y, pred, labels)
            out[split][name] = {"accuracy": m["accuracy"], "micro_f1": m["micro_f1"], "macro_f1": m["macro_f1"],
                                **({"features": features} if features and name == "tfidf_logreg" else {})}
    return out


def save_figure(fig, path, dpi: int = 110) -> None:
    """Lay out and write a figure. Labels in a script the font lacks (emoji) are drawn as boxes, without matplotlib's
    warning per glyph."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Glyph .* missing from")
        fig.tight_layout()
        fig.savefig(path, dpi=dpi)


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
    # Upright names only where each fits its column (about 0.08 inch a character at size 10, a column 0.6 of the
    # figure's width over n): long ones ran into each other.
    upright = n <= 6 and max(len(str(name)) for name in labels) * 0.08 <= 0.6 * size / n
    ax.set_xticks(range(n), labels, rotation=0 if upright else 90, fontsize=8 if n > 12 else 10)
    ax.set_yticks(range(n), labels, fontsize=8 if n > 12 else 10)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=8, color="white" if norm[i, j] > 0.5 else "black")
    save_figure(fig, path)
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
        other = "accuracy" if metric == "loss" else "loss"  # the chosen metric, and beside it the loss (or, for loss, accuracy)
        ax[1].plot([r["step"] for r in evals], [r[metric] for r in evals], marker="o", label=f"validation {metric}")
        ax[1].plot([r["step"] for r in evals], [r[other] for r in evals], marker="x", label=f"validation {other}")
        ax[1].legend()
    ax[1].set_xlabel("optimizer step")
    ax[1].set_title("validation")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
