"""Before/after report: how fine-tuning changed the embedding space of labelled texts.

For the base encoder (mean pooling, as a sentence encoder is used) and the tuned
model (by default the vector its head reads), on at most `max_texts` texts (a
seeded sample):

- k-NN accuracy: 10 nearest neighbours by cosine (fewer when classes have fewer texts to vote), majority vote,
  stratified 5-fold CV;
- linear-probe accuracy: standardised features, logistic regression, the same folds;
- silhouette score of the labels under cosine distance;
- the share of the variance along the first principal component, which uses no labels: a classifier's head vector
  often puts nearly all of it on one direction (the label), and a search over such vectors ranks by label, not topic;
- cosine shift per class: 1 - mean cosine between a text's base and tuned vectors
  (only when both have the same dimension, which holds for BERT's pooler);
- the nearest neighbours of a few sample texts before and after;
- a 2-D PCA projection of both spaces side by side, coloured by label.

`compare` writes `embedding_report.json` and `embedding_projection.png` and returns
the report; `report_markdown` turns it into a paragraph and table for a model card.
"""

from __future__ import annotations

import numbers
import os
import random
import shutil
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from taskembed.errors import UserError, option, raise_write_error
from taskembed.metrics import save_figure

REPORT_JSON = "embedding_report.json"
REPORT_PNG = "embedding_projection.png"
SHIFT_CLASSES_SHOWN = 10
"""The report lists every class's cosine shift up to this many classes; with more, the five that moved most and least."""


def _one_blas_thread():
    """numpy's BLAS on one thread, for the report's small fits: OpenBLAS spreading a 600 x 384 product over the cores
    made a 38-class probe 10x slower (77 s against 7.4 s on this 2-core machine; a walk-through's run spent 86 of its 104 s
    there), and one thread makes the figures the same whatever the machine's core count. torch's threads are untouched."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1, user_api="blas")


def _cv_scores(x: np.ndarray, y: np.ndarray, k: int, folds: int, seed: int) -> dict[str, Any]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    _, counts = np.unique(y, return_counts=True)
    n_splits = int(min(folds, counts.max(), len(y)))
    if n_splits < 2:
        return {"knn_accuracy": None, "linear_probe_accuracy": None, "folds": 0}
    # A class rarer than the number of folds only triggers a warning; the folds stay valid.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        splits = list(StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed).split(x, y))
    knn_correct = probe_correct = 0
    # k beyond the texts a class typically has to vote measures k, not the space: with 3 texts of each of 5 classes in
    # a fold and k = 10, 7 votes come from other classes and ties decide. So k is at most a fold's median class count.
    # The median, not the minimum: one rare class (an intent with 2 validation texts) must not make it 1-NN for all.
    used_k = max(1, min(k, *(int(np.median(np.unique(y[train], return_counts=True)[1])) for train, _ in splits)))
    for train, test in splits:
        neighbours = used_k
        knn = KNeighborsClassifier(n_neighbors=neighbours, metric="cosine", algorithm="brute")
        knn_correct += int((knn.fit(x[train], y[train]).predict(x[test]) == y[test]).sum())
        if len(np.unique(y[train])) < 2:
            probe_correct += int((y[test] == y[train][0]).sum())
            continue
        probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence warnings on tiny or separable data say nothing useful here
            probe_correct += int((probe.fit(x[train], y[train]).predict(x[test]) == y[test]).sum())
    return {"knn_accuracy": knn_correct / len(y), "linear_probe_accuracy": probe_correct / len(y), "folds": n_splits, "k": used_k}


def _top_component_share(x: np.ndarray) -> float | None:
    """The share of the variance along the first principal component (0 to 1), or None for fewer than two texts."""
    if len(x) < 2:
        return None
    centred = x.astype(np.float64) - x.mean(axis=0, dtype=np.float64)
    power = np.linalg.svd(centred, compute_uv=False) ** 2
    return float(power[0] / power.sum()) if power.sum() > 0 else None


def _silhouette(x: np.ndarray, y: np.ndarray) -> float | None:
    from sklearn.metrics import silhouette_score

    if not 2 <= len(np.unique(y)) <= len(y) - 1:
        return None
    return float(silhouette_score(x, y, metric="cosine"))


def _unit(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _neighbours(x: np.ndarray, texts: list[str], labels: list[str], queries: list[int], n: int) -> list[list[dict[str, Any]]]:
    u = _unit(x)
    out = []
    for i in queries:
        sims = u @ u[i]
        sims[i] = -np.inf
        top = np.argsort(-sims)[: min(n, len(sims) - 1)]  # never the text itself, however few there are
        out.append([{"text": texts[j], "label": labels[j], "score": round(float(sims[j]), 4)} for j in top])
    return out


def _plot(spaces: list[tuple[str, np.ndarray]], labels: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA

    names = sorted(set(labels))
    cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    color = {name: cmap(i % cmap.N) for i, name in enumerate(names)}
    fig, axes = plt.subplots(1, len(spaces), figsize=(6 * len(spaces), 5.2), squeeze=False)
    for ax, (title, x) in zip(axes[0], spaces):
        if x.shape[0] >= 2 and x.shape[1] >= 2:
            pca = PCA(n_components=2, random_state=0)
            xy = pca.fit_transform(_unit(x))
            explained = pca.explained_variance_ratio_.sum()
        else:
            xy, explained = np.zeros((x.shape[0], 2)), 0.0
        for name in names:
            idx = [i for i, label in enumerate(labels) if label == name]
            ax.scatter(xy[idx, 0], xy[idx, 1], s=8, alpha=0.7, color=color[name], label=name)
        ax.set_title(f"{title}\n(PCA of unit vectors, {100 * explained:.0f}% of variance)", fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    if len(names) <= 20:
        axes[0][-1].legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, markerscale=2, frameon=False)
    save_figure(fig, path)
    plt.close(fig)


def _check_out_dir(out_dir: str | Path | None) -> None:
    from taskembed.artifacts import check_writable

    # The report is written into the folder: an existing one must be writable itself (its parent need not be, as for
    # --out-dir ~), a new one is made in the nearest folder above that exists.
    if out_dir is None:
        return
    folder = Path(out_dir)
    if folder.is_dir():
        if not os.access(folder, os.W_OK):
            raise UserError(f"--out-dir {out_dir} is not writable; choose another folder for the report")
    elif folder.exists():
        raise UserError(f"{out_dir} is a file; choose a folder for the report (--out-dir)")
    else:
        check_writable(folder, "--out-dir")


def _sample_every_class(labels: list[str], n: int, seed: int) -> list[int]:
    """Sorted indices of a seeded sample of n texts (all of them when there are no more) that holds every class n
    leaves room for. Where the plain sample already does, it is kept (the reports measured with it stay as they
    were); otherwise one random text of each missing class replaces one of the class the sample holds most of. A
    sample of one class would say nothing of how classes separate, and the training's report samples its validation."""
    if len(labels) <= n:
        return list(range(len(labels)))
    rng = random.Random(seed)
    keep = rng.sample(range(len(labels)), n)
    counts = Counter(labels[i] for i in keep)
    for name in sorted(set(labels) - set(counts))[: max(n - len(counts), 0)]:
        most = counts.most_common(1)[0][0]
        keep.remove(next(i for i in reversed(keep) if labels[i] == most))
        keep.append(rng.choice([i for i, x in enumerate(labels) if x == name]))
        counts[most] -= 1
        counts[name] += 1
    return sorted(keep)


def compare(base, tuned, texts: Sequence[str], labels: Sequence[str], out_dir: str | Path | None = None, *,
            max_texts: int = 2000, seed: int = 0, k: int = 10, folds: int = 5, examples: int = 3, neighbours: int = 5,
            base_options: dict[str, Any] | None = None, tuned_options: dict[str, Any] | None = None,
            data: dict[str, Any] | None = None, progress: bool = False, pairs: Sequence[str] | None = None) -> dict[str, Any]:
    """Embed the same labelled texts with `base` and `tuned` and measure how the space changed.

    `pairs`: a second text for each text, for a sentence-pair model; both sides read each text with it, as the model
    does (the report shows them as "text [SEP] second text").

    base / tuned: anything `taskembed.embed.embed` accepts (folder or id, Classifier, Embedder).
    base_options default to mean pooling (a sentence encoder); tuned_options to the model default
    (the head's representation for a classifier). With `out_dir`, writes embedding_report.json and
    embedding_projection.png there. `data` (a description of where the texts came from) goes into the report.
    """
    from taskembed import artifacts
    from taskembed.data import check_texts, is_null
    from taskembed.embed import Embedder, as_embedder

    _check_out_dir(out_dir)
    texts = check_texts(texts, "embed")
    if labels is None or isinstance(labels, (str, dict)) or not isinstance(labels, Iterable):
        raise UserError(f"compare: give the labels as a list or a column (df['label']), one per text, not {type(labels).__name__}")
    labels = list(labels)
    given = len(texts)
    if len(labels) != len(texts):
        raise UserError(f"compare: {len(texts)} texts but {len(labels)} labels; give one label per text")
    if any(isinstance(x, (list, tuple, set, np.ndarray)) for x in labels):
        raise UserError("compare scores one label per text (k-NN and linear-probe accuracy); these texts have sets of labels")
    blank = next((i for i, x in enumerate(labels) if is_null(x) or not str(x).strip()), None)
    if blank is not None:  # None or a pandas gap (NaN) would become a class named "None" or "nan"
        raise UserError(f"compare: label {blank + 1} is missing; every text needs a label")
    labels = [str(x) for x in labels]
    if len(set(labels)) < 2:
        raise UserError(f"compare needs labelled texts of at least two classes; every one has the label '{labels[0]}'")
    if isinstance(max_texts, bool) or not isinstance(max_texts, numbers.Integral) or max_texts < 2:
        raise UserError(f"{option('--max-texts', max_texts)}: give a whole number of texts, at least 2")
    if pairs is not None:
        pairs = check_texts([pairs] if isinstance(pairs, str) else pairs, "embed", "second text")
        if len(pairs) != given:
            raise UserError(f"compare: {given} texts but {len(pairs)} second texts; give one second text per text")
    keep = _sample_every_class(labels, max_texts, seed)
    texts = [texts[i] for i in keep]
    labels = [labels[i] for i in keep]
    pairs = [pairs[i] for i in keep] if pairs is not None else None
    shown = texts if pairs is None else [f"{a} [SEP] {b}" for a, b in zip(texts, pairs)]  # the neighbours' texts
    y = np.array(labels)

    for name, side, options in (("base_options", base, base_options), ("tuned_options", tuned, tuned_options)):
        asked = [k for k, v in (options or {}).items() if v is not None]
        if isinstance(side, Embedder) and asked:  # they were dropped, and the report described another space
            raise UserError(f"{name} ({', '.join(asked)}): that side is an Embedder, which has its own options; build it with "
                            "them (Embedder.load(folder, pooling=...)) or give the folder")
    # Both sides unnormalised unless asked (a sentence-transformers folder would otherwise be normalised on one side only).
    base_emb = base if isinstance(base, Embedder) else as_embedder(base, {"pooling": "mean", "normalize": False, **(base_options or {})})
    tuned_emb = tuned if isinstance(tuned, Embedder) else as_embedder(tuned, {"normalize": False, **(tuned_options or {})})
    # The tuned model's labels would be read as one class per combination. The base is only an encoder here: a
    # multi-label model's encoder (one a single-label run started from, say) gives vectors like any other.
    if getattr(tuned_emb.model.config, "problem_type", None) == "multi_label_classification":
        raise UserError(f"{tuned_emb.name} is a multi-label model; compare scores one label per text (k-NN and linear-probe "
                        "accuracy), which is why training leaves this report out for such models too")
    # Before and after on the same text: the base model would otherwise read up to its own limit (256 tokens for
    # MiniLM) and the fine-tuned one up to what it was trained with (data.max_length, 128 by default). A side whose
    # length was given (its options, or an Embedder built by the caller) keeps it.
    if not isinstance(base, Embedder) and "max_length" not in (base_options or {}):
        base_emb.max_length = min(base_emb.max_length, tuned_emb.max_length)
    if not isinstance(tuned, Embedder) and "max_length" not in (tuned_options or {}):
        tuned_emb.max_length = min(tuned_emb.max_length, base_emb.max_length)
    spaces = {}
    for role, emb in (("base", base_emb), ("tuned", tuned_emb)):
        x = emb.encode(texts, progress=progress, pairs=pairs).astype(np.float32)
        spaces[role] = (emb, x)

    rng = random.Random(seed)
    queries = sorted(rng.sample(range(len(texts)), min(examples, len(texts))))
    report: dict[str, Any] = {
        "n": len(texts),
        "n_given": given,
        "seed": seed,
        "data": data,
        "classes": {name: int((y == name).sum()) for name in sorted(set(labels))},
        "settings": {"k": k, "folds": folds, "metric": "cosine", "probe": "standardised features + logistic regression",
                     "max_texts": max_texts},
    }
    for role, (emb, x) in spaces.items():
        desc = emb.describe()
        with _one_blas_thread():
            scores = {**_cv_scores(x, y, k, folds, seed), "silhouette": _silhouette(x, y), "top_component_share": _top_component_share(x)}
        report[role] = {
            "model": desc["model"]["name"],
            "fingerprint": (desc["model"]["fingerprint"] or {}).get("sha256"),
            "pooling": desc["pooling"],
            "pooling_detail": desc["pooling_detail"],
            "normalize": desc["normalize"],
            "max_length": desc["max_length"],
            "dim": int(x.shape[1]),
            **scores,
        }
    xb, xt = spaces["base"][1], spaces["tuned"][1]
    if xb.shape[1] == xt.shape[1]:
        # A text's two vectors compare only when read out the same way: the base's mean pooling against the head's vector
        # measured two spaces (1 - cosine came out about 1 for every class). So the tuned model is read once more with
        # the base's pooling, and the shift is what training did to the encoder.
        moved, how = xt, None
        if report["base"]["pooling_detail"] != report["tuned"]["pooling_detail"]:
            b = base_emb.options()
            # The base's last layer is the tuned model's last (a deeper model's layer 6 is in its middle); another layer
            # means the same only in a model of the same depth.
            layer = -1 if b["layer"] == base_emb.num_layers else b["layer"]
            same = {**tuned_emb.options(), "pooling": b["pooling"], "layer": layer, "mean_last": b["mean_last"]}
            how = "the two sides pool differently, so part of the shift is the pooling, not the training"
            if layer == -1 or base_emb.num_layers == tuned_emb.num_layers:
                try:
                    moved = Embedder.from_model(tuned_emb.model, tuned_emb.tokenizer, name=tuned_emb.name, **same).encode(
                        texts, pairs=pairs).astype(np.float32)
                    how = f"both sides read with the base's pooling ({report['base']['pooling_detail']})"
                except UserError:  # a readout the tuned model lacks (the head of a base classifier, say)
                    pass
        cos = (_unit(xb) * _unit(moved)).sum(1)
        report["cosine_shift"] = {
            "overall": float(1 - cos.mean()),
            "per_class": {name: float(1 - cos[y == name].mean()) for name in report["classes"]},
        }
        if how:
            report["cosine_shift"]["note"] = how
    else:
        report["cosine_shift"] = None
        report["cosine_shift_note"] = f"dimensions differ ({xb.shape[1]} vs {xt.shape[1]}), so a text's two vectors cannot be compared"
    before = _neighbours(xb, shown, labels, queries, neighbours)
    after = _neighbours(xt, shown, labels, queries, neighbours)
    report["neighbours"] = [{"text": shown[i], "label": labels[i], "before": b, "after": a} for i, b, a in zip(queries, before, after)]
    if out_dir is not None:
        out = Path(out_dir)
        made = not out.exists()
        out.mkdir(parents=True, exist_ok=True)
        titles = [f"before: {_short(report['base']['model'])} ({_pooling_name(report['base'])})",
                  f"after: {_short(report['tuned']['model'])} ({_pooling_name(report['tuned'])})"]
        report["files"] = {"report": REPORT_JSON, "plot": REPORT_PNG}
        # Both files are written beside their names and renamed together at the end: a failure (a full disk) leaves
        # the folder as it was, an earlier report whole or, when this call made the folder, no folder.
        staged = {name: out / f".partial-{name}" for name in (REPORT_PNG, REPORT_JSON)}  # savefig reads the suffix
        try:
            _plot([(titles[0], xb), (titles[1], xt)], labels, staged[REPORT_PNG])
            artifacts.write_json(staged[REPORT_JSON], report)
            for name, tmp in staged.items():
                os.replace(tmp, out / name)
        except BaseException as exc:
            for tmp in staged.values():
                tmp.unlink(missing_ok=True)
            if made:
                shutil.rmtree(out, ignore_errors=True)
            raise_write_error(exc, out, out)
    return report


def compare_data(base, tuned, data: str | Path, out_dir: str | Path | None = None, *, split: str | None = None,
                 text_column: str = "text", label_column: str = "label", text_columns: Sequence[str] | None = None,
                 **kwargs) -> dict[str, Any]:
    """`compare` on labelled DATA (any source `embed` reads). A multi-split source uses its test split,
    else validation, else train, unless `split` says otherwise. `text_columns`: columns joined into the text, as a
    model trained with data.text_columns reads it."""
    from taskembed.artifacts import MODEL_MARKER
    from taskembed.data import SPLITS
    from taskembed.embed import open_texts

    # Training writes its own report into the model's folder (compare, above), which the model card quotes: a report
    # on other data must not replace it.
    if out_dir is not None and (Path(out_dir) / MODEL_MARKER).is_file():
        raise UserError(f"--out-dir {out_dir} is a trained model's folder, whose {REPORT_JSON} training wrote and its model card "
                        "quotes; choose another folder for the report")
    _check_out_dir(out_dir)  # before reading any data
    source = open_texts(data, text_column, label_column, split, text_columns)
    splits = source.description.get("splits")
    if split is None and splits and len(splits) > 1:
        split = next(s for s in ("test", "validation", "train", *SPLITS) if s in splits)
        source = open_texts(data, text_column, label_column, split, text_columns)
    if not source.has_labels:
        raise UserError(f"{data}: no label column '{label_column}'; compare needs labelled texts (pass --label-column)")
    texts: list[str] = []
    labels: list[str] = []
    for chunk in source.chunks(10_000):
        for i, t, label in zip(chunk["id"], chunk["text"], chunk["label"]):
            if not label:  # a missing cell (None) or a blank one (''): neither is a class, and dropping it would be silent
                where = f"{data} [{split}]" if split else str(data)
                raise UserError(f"{where}: row {i + 1}: no label in column '{label_column}'; compare needs a label for every text: "
                                "label the row or drop it")
            texts.append(t)
            labels.append(label)
    if len(set(labels)) < 2:
        where = f"{data} [{split}]" if split else str(data)
        raise UserError(f"{where}: every text has the label '{labels[0]}' in column '{label_column}'; compare needs at least two classes")
    return compare(base, tuned, texts, labels, out_dir, data=source.description, **kwargs)


def _short(name: str) -> str:
    """A model id as it is; a long local path cut to its last two parts, for titles and tables."""
    p = Path(name)
    return str(Path(*p.parts[-2:])) if (p.is_absolute() or p.exists()) and len(p.parts) > 2 else name


def _pooling_name(side: dict[str, Any]) -> str:
    return "the head's representation" if side["pooling"] == "head" else f"{side['pooling']} pooling"


def report_markdown(report: dict[str, Any]) -> str:
    """A paragraph and a table for the model card."""

    def pct(v):
        return "n/a" if v is None else f"{100 * v:.1f}"

    def num(v):
        return "n/a" if v is None else f"{v:.3f}"

    def cells(side: dict[str, Any], other: dict[str, Any]) -> list[str]:
        """The side's three figures, each in bold where it beats the other side's (fine-tuning can lower one)."""
        out = []
        for key, show in (("knn_accuracy", pct), ("linear_probe_accuracy", pct), ("silhouette", num)):
            mine, theirs = side[key], other[key]
            out.append(f"**{show(mine)}**" if mine is not None and theirs is not None and mine > theirs else show(mine))
        return out

    b, t = report["base"], report["tuned"]
    folds = t.get("folds") or b.get("folds")
    why = ("no class has two texts" if report["settings"]["folds"] >= 2 else f"folds is {report['settings']['folds']}")
    how = f"accuracies are {folds}-fold cross-validated" if folds else f"{why}, too few to cross-validate, so the accuracies are n/a"
    rows = [
        f"| embedding | k-NN accuracy (k={t.get('k') or b.get('k') or report['settings']['k']}, cosine) | linear probe accuracy | silhouette (cosine) |",
        "| --- | ---: | ---: | ---: |",
        f"| before: `{_short(b['model'])}`, {_pooling_name(b)} ({b['dim']}-d) | " + " | ".join(cells(b, t)) + " |",
        f"| after: `{_short(t['model'])}`, {_pooling_name(t)} ({t['dim']}-d) | " + " | ".join(cells(t, b)) + " |",
    ]
    shift = report.get("cosine_shift")
    if shift:
        classes = shift["per_class"]
        if len(classes) <= SHIFT_CLASSES_SHOWN:
            per = "per class: " + ", ".join(f"{name} {v:.3f}" for name, v in classes.items())
        else:  # 77 intents in one line are read by no one: the ends of the ranking, and where the rest are
            ranked = sorted(classes.items(), key=lambda kv: -kv[1])
            half = SHIFT_CLASSES_SHOWN // 2
            per = (f"most moved of {len(classes)} classes: " + ", ".join(f"{name} {v:.3f}" for name, v in ranked[:half])
                   + "; least moved: " + ", ".join(f"{name} {v:.3f}" for name, v in ranked[-half:])
                   + f" (every class in {REPORT_JSON})")
        shift_line = f"Cosine shift (1 - cosine between a text's vector before and after): {shift['overall']:.3f} overall; {per}."
        if shift.get("note"):
            shift_line += f" Note: {shift['note']}."
    else:
        shift_line = f"Cosine shift: not computed ({report.get('cosine_shift_note', 'dimensions differ')})."
    bt, tt = b.get("top_component_share"), t.get("top_component_share")
    spread = "" if bt is None or tt is None else (
        f" One direction holds {100 * tt:.1f}% of the tuned vectors' variance ({100 * bt:.1f}% of the base's)"
        # Most of it on one axis: the vectors say the label more than anything else about a text.
        + (": they mostly encode the label, so a search over them ranks texts by label more than by topic; for topical "
           "search or clustering, the base encoder's vectors keep more of what the texts are about." if tt >= 0.5 and tt > 2 * bt else "."))
    plot = f"\n\n![embedding projection before and after]({report['files']['plot']})" if report.get("files") else ""
    data = report.get("data") or {}
    name, splits = data.get("data") or data.get("source"), data.get("splits") or ([data["split"]] if data.get("split") else [])
    of = f" of {_short(str(name))}{f' [{splits[0]}]' if len(splits) == 1 else ''}" if name else ""  # which texts, which split
    return (
        "## Embeddings before and after fine-tuning\n\n"
        f"On {report['n']:,} labelled texts{of}"
        + (f" (a seeded sample of {report['n_given']:,}, seed {report['seed']})" if report["n_given"] > report["n"] else "")
        + f", {how}; "
        "the silhouette says how well the labels separate as clusters (-1 to 1). k-NN votes among these same texts: "
        "over a held-out corpus the gain can be far smaller (BANKING77 in taskembed's docs/embeddings.md: P@1 90.5 "
        "for the base, 90.7 for the tuned head)."
        # One text is a point or more of accuracy here: a few-shot split's 100.0 -> 83.3 is one text of six.
        + (f" On {report['n']} texts one text moves an accuracy by {100 / report['n']:.1f} points: read these figures as rough."
           if report["n"] < 100 else "")
        + "\n\n"
        + "\n".join(rows)
        + f"\n\n{shift_line}{spread}{plot}\n"
    )
