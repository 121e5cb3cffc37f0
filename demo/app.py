"""Gradio demo for trained taskembed model folders: predict, batch, embeddings, about.

    python demo/app.py runs/sentiment [runs/other ...] [--host 127.0.0.1] [--port 7860] [--share] [--auth user:pass]
    taskembed demo runs/sentiment

Tabs:
- Predict: one text -> label probabilities (top k), the predicted label and its confidence; with a
  `calibration.json` holding a temperature T in the folder, also the calibrated confidence softmax(logits / T).
  A multi-label folder shows each label's sigmoid and the list of labels over their thresholds (thresholds.json).
  Example texts come from the model's own validation data.
- Batch: many lines (or a small CSV/TXT upload) -> one row per text with per-class scores, downloadable as CSV
  (multi-label: with a `labels` column holding the predicted label list).
- Embeddings: the nearest validation texts to a typed text, with the tuned model (its default pooling) and
  with the base model (mean pooling) side by side, and where the text lands on a 2-D PCA of the validation set.
  The validation texts are embedded on first use, not at start-up.
- About: metrics, baselines, confusion matrix, learning curves, the error analysis (most confused label
  pairs, highest-loss examples), learning-rate plan, training config and the embedding report, all read
  from the folder (nothing is recomputed).

Several folders give a model picker, so two runs can be compared on the same text.

Safe by default: it listens on 127.0.0.1 with no share link unless --host/--share say otherwise (and then
it warns), takes optional basic auth, serves no file from the model folders (images are sent as pixels),
sets no allowed_paths, fetches no URL, refuses the file route's remote-URL proxy, caps every input, and
queues requests with a concurrency limit. The demo uses taskembed's public API only.
"""

from __future__ import annotations

import argparse
import atexit
import csv
import errno
import io
import ipaddress
import json
import os
import random
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

# Before gradio is imported: no usage telemetry or version check over the network (offline first).
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("MPLBACKEND", "Agg")
# The base model of the Embeddings tab is read from a local copy (a package or the Hugging Face cache), never
# downloaded while serving; HF_HUB_OFFLINE=0 in the environment allows it.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import taskembed  # noqa: E402
import taskembed.builtin  # noqa: E402
import taskembed.embed  # noqa: E402

IN_MEMORY = "<in-memory data>"  # what training_config.json records as data.source for data given in Python (taskembed.data)

# Input caps (each can be changed with build_app's arguments or the command line).
MAX_CHARS = 2_000  # characters in one text
MAX_LINES = 1_000  # texts in one batch
MAX_BATCH_CHARS = 200_000  # characters in one batch, all texts together
MAX_UPLOAD_BYTES = 1_000_000  # size of an uploaded CSV/TXT file
MAX_NEIGHBOUR_TEXTS = 2_000  # validation texts embedded for the Embeddings tab
TOP_K = 5  # label probabilities shown
CONCURRENCY = 2  # events run at once (per event listener); the rest wait in the queue
QUEUE_SIZE = 64  # events waiting at most; more are refused with "queue full"
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
EXAMPLE_CHARS = (15, 240)  # validation texts short enough to read at a glance, long enough to say something
TABLE_SUFFIXES = (".csv", ".tsv", ".json", ".jsonl", ".parquet")  # what training reads as data.validation

CSS = """
.te-note {font-size: 0.9em; opacity: 0.8}
"""


class DemoError(taskembed.UserError):
    """A problem with the command line or a model folder, reported as one line before the server starts."""


# --- what the demo knows about each model folder ----------------------------------------------------


@dataclass
class Validation:
    """Labelled validation texts (a seeded sample of at most `cap`), or why there are none."""

    texts: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    where: str = ""
    total: int = 0
    missing: str | None = None


@dataclass
class Space:
    """Unit vectors of the validation texts in one model's space, with a 2-D PCA of them."""

    title: str
    vectors: np.ndarray
    mean: np.ndarray
    components: np.ndarray
    xy: np.ndarray
    explained: float


@dataclass
class Model:
    name: str
    folder: Path
    clf: Any
    config: dict[str, Any]
    reports: dict[str, Any]
    validation: Validation
    examples: list[str]
    temperature: float | None
    lock: threading.Lock = field(default_factory=threading.Lock)  # fast tokenizers must not be used by two threads at once
    index_lock: threading.Lock = field(default_factory=threading.Lock)
    index: dict[str, Space | str] | None = None
    images: dict[str, Any] = field(default_factory=dict)

    @property
    def text_column(self) -> str:
        return (self.config.get("data") or {}).get("text_column") or "text"

    @property
    def text_columns(self) -> list[str] | None:
        """The columns the model joined into its text (data.text_columns), which an upload may hold."""
        return (self.config.get("data") or {}).get("text_columns")

    @property
    def base_name(self) -> str | None:
        return (self.config.get("model") or {}).get("name")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def read_reports(folder: Path) -> dict[str, Any]:
    """The JSON reports training wrote into the folder (absent ones are None)."""
    names = {"metrics": "metrics.json", "plan": "lr_plan.json", "config": "training_config.json", "run": "run.json",
             "embedding": "embedding_report.json", "calibration": "calibration.json"}
    return {key: _read_json(folder / name) for key, name in names.items()}


_validation_cache: dict[tuple, Validation] = {}
_validation_lock = threading.Lock()


def validation_data(config: dict[str, Any], cap: int = MAX_NEIGHBOUR_TEXTS, seed: int = 0) -> Validation:
    """The validation texts a model was trained with, found from its training_config.json.

    A built-in source gives its validation split; a configured validation file is read; a save_to_disk folder
    or Hub dataset gives its validation split. A validation slice carved out of a training file at training
    time cannot be read back through the public API, so it is skipped with a note.
    """
    data = config.get("data") or {}
    source, vfile = data.get("source"), data.get("validation")
    tc, lc = data.get("text_column") or "text", data.get("label_column") or "label"
    joined = tuple(data.get("text_columns") or ()) or None  # read as training joined them
    key = (source, vfile, tc, lc, joined, cap, seed)
    with _validation_lock:
        if key not in _validation_cache:
            _validation_cache[key] = _load_validation(source, vfile, tc, lc, cap, seed, joined)
        return _validation_cache[key]


def _load_validation(source: str | None, vfile: str | None, tc: str, lc: str, cap: int, seed: int,
                     joined: Sequence[str] | None = None) -> Validation:
    texts: list[str] = []
    labels: list[str] = []
    try:
        if vfile:
            if Path(vfile).suffix.lower() not in TABLE_SUFFIXES:
                # Training reads only table files there, so a folder's config naming anything else was not written by a
                # training run; reading it would serve whatever file it names (a .env, a key) as examples to visitors.
                return Validation(missing=f"the validation file {vfile} is not a table file ({', '.join(TABLE_SUFFIXES)}), "
                                          "so the demo does not read it")
            if not Path(vfile).exists():
                return Validation(missing=f"the validation file {vfile} is not there any more")
            where, src = vfile, taskembed.embed.open_texts(vfile, tc, lc, text_columns=joined)
        elif source in taskembed.builtin.BUILTIN_NAMES and not Path(source).exists():
            df = taskembed.builtin.load_builtin(source)["validation"]
            where, src = f"{source} [validation]", None
            texts, labels = df["text"].astype(str).tolist(), df["label"].astype(str).tolist()
        elif source and Path(source).is_file():
            return Validation(missing=f"the validation texts were carved out of {Path(source).name} at training time "
                                      "(no data.validation file), so the demo has none to show")
        elif source and Path(source).is_dir():
            where, src = f"{source} [validation]", taskembed.embed.open_texts(source, tc, lc, split="validation", text_columns=joined)
        elif source and "/" in source and not source.startswith((".", "/", "~")):
            return Validation(missing=f"{source} is a Hub dataset, and the demo downloads nothing")
        elif not source:
            return Validation(missing="the folder has no training_config.json naming its data")
        elif source == IN_MEMORY:
            return Validation(missing="the model was trained on data given in Python (taskembed.train(data=...)), which the folder does not hold")
        else:
            return Validation(missing=f"the training data {source!r} is not there (a relative path is read from the current folder)")
        if src is not None:
            for chunk in src.chunks(10_000):
                texts += chunk["text"]
                labels += [("?" if x is None else str(x)) for x in chunk.get("label", [None] * len(chunk["text"]))]
    except Exception as exc:  # noqa: BLE001 - examples are optional: any failure to read them becomes a note, not a crash
        return Validation(missing=f"could not read the validation data ({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''})")
    keep = [i for i, t in enumerate(texts) if isinstance(t, str) and t.strip()]
    total = len(keep)
    if total > cap:
        keep = sorted(random.Random(seed).sample(keep, cap))
    if not keep:
        return Validation(missing=f"{where}: no validation texts")
    return Validation(texts=[texts[i] for i in keep], labels=[labels[i] for i in keep], where=where, total=total)


def pick_examples(val: Validation, n: int = 8, seed: int = 0) -> list[str]:
    """A few short validation texts, taking the labels in turn."""
    if not val.texts:
        return []
    rng = random.Random(seed)
    by_label: dict[str, list[str]] = {}
    for t, y in zip(val.texts, val.labels):
        if EXAMPLE_CHARS[0] <= len(t) <= EXAMPLE_CHARS[1]:
            by_label.setdefault(y, []).append(t)
    for items in by_label.values():
        rng.shuffle(items)
    out: list[str] = []
    while len(out) < n and any(by_label.values()):
        for y in sorted(by_label):
            if by_label[y] and len(out) < n:
                out.append(by_label[y].pop())
    return out


def load_models(folders: Sequence[str | Path], device: str | None = None, cap: int = MAX_NEIGHBOUR_TEXTS) -> list[Model]:
    """Load every folder, or fail with one clear error before anything starts."""
    if not folders:
        raise DemoError("give at least one model folder")
    models: list[Model] = []
    names: set[str] = set()
    for f in folders:
        folder = Path(f)
        if not folder.is_dir():
            raise DemoError(f"{folder}: model folder not found; train one with `taskembed train` or check the path")
        clf = taskembed.load(folder, device=device)
        reports = read_reports(folder)
        config = reports["config"] or {}
        if (config.get("data") or {}).get("text_pair_column"):
            raise DemoError(f"{folder}: a sentence-pair model (data.text_pair_column is set); the demo takes single texts only")
        name = folder.resolve().name or str(folder)
        i = 2
        while name in names:  # two runs with the same folder name: keep both, tell them apart
            name = f"{folder.resolve().name} ({i})"
            i += 1
        names.add(name)
        val = validation_data(config, cap=cap)
        models.append(Model(name=name, folder=folder, clf=clf, config=config, reports=reports, validation=val,
                            examples=pick_examples(val), temperature=clf.temperature))  # checked by taskembed.load
    return models


# --- inputs -----------------------------------------------------------------------------------------


@dataclass
class Limits:
    max_chars: int = MAX_CHARS
    max_lines: int = MAX_LINES
    max_batch_chars: int = MAX_BATCH_CHARS
    max_upload_bytes: int = MAX_UPLOAD_BYTES


def _error(message: str, title: str = "Error") -> gr.Error:
    """A message for the person using the demo; a mistake in the input, so no traceback in the server log."""
    return gr.Error(message, title=title, print_exception=False)


def check_text(text: str | None, limits: Limits) -> str:
    # Blank is refused, but the text is scored as typed, spaces and all, as `taskembed predict` and `pipeline` score it:
    # a tokenizer that makes tokens of spaces (RoBERTa's, DeBERTa-v3's) gives other scores for a stripped text.
    text = text or ""
    if not text.strip():
        raise _error("Type a text first.", title="No input")
    if len(text) > limits.max_chars:
        raise _error(f"Input too long: {len(text):,} characters; the demo takes at most {limits.max_chars:,} per text. "
                       "Shorten it.", title="Input too long")
    return text


def check_batch(texts: list[str], limits: Limits, unit: str = "line") -> list[str]:
    # Blank lines are dropped, but a message names a line as the user sees it in the input (a CSV's rows count from 1
    # after the header, unit "row", as the command line counts them).
    # A line is scored as it is, as check_text says why.
    lengths = [len(t) if t else 0 for t in texts]
    long = next((i for i, n in enumerate(lengths, start=1) if n > limits.max_chars), None)
    texts = [t for t in texts if t and t.strip()]
    if not texts:
        raise _error("No texts: paste one text per line or upload a CSV with a 'text' column.", title="No input")
    if len(texts) > limits.max_lines:
        raise _error(f"Input too long: {len(texts):,} lines; the demo takes at most {limits.max_lines:,} texts per batch. "
                       "Split the input, or use `taskembed predict MODEL --file FILE` for large files.", title="Input too long")
    if long is not None:
        raise _error(f"Input too long: {unit} {long} has {lengths[long - 1]:,} characters; the demo takes at most "
                       f"{limits.max_chars:,} per text.", title="Input too long")
    total = sum(len(t) for t in texts)
    if total > limits.max_batch_chars:
        raise _error(f"Input too long: {total:,} characters in all; the demo takes at most {limits.max_batch_chars:,} per batch.",
                       title="Input too long")
    return texts


def split_lines(content: str) -> list[str]:
    """Lines as `taskembed predict --file x.txt` reads them: ended by \\n, \\r\\n or \\r only (str.splitlines also breaks at
    U+2028, form feeds and other characters a text may hold)."""
    return content.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def read_upload(path: str, limits: Limits, text_column: str = "text", text_columns: Sequence[str] | None = None) -> list[str]:
    """Texts from an uploaded .txt (one per line) or .csv/.tsv (`text_column`, the one the model was trained on, else
    'text', or the only column; for a model trained on `text_columns`, those joined with a space as training joined
    them, when the file has them all)."""
    p = Path(path)
    size = p.stat().st_size
    if size > limits.max_upload_bytes:
        raise _error(f"File too large: {size:,} bytes; the demo takes files up to {limits.max_upload_bytes:,} bytes.",
                       title="Input too long")
    raw = p.read_bytes()
    try:
        content = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise _error("The file is not UTF-8 text.", title="Unreadable file") from None
    suffix = p.suffix.lower()
    if suffix == ".txt":
        return split_lines(content)
    if suffix not in (".csv", ".tsv"):
        raise _error(f"Upload a .csv, .tsv or .txt file, not {suffix or 'a file without a suffix'}.", title="Unreadable file")
    try:
        # Blank lines carry no record: dropped first, so that rows count as the command line counts them.
        rows = [r for r in csv.reader(io.StringIO(content), delimiter="\t" if suffix == ".tsv" else ",") if r]
    except csv.Error as exc:
        raise _error(f"Could not read the CSV: {exc}", title="Unreadable file") from None
    if not rows:
        return []
    header = [h.strip() for h in rows[0]]
    if text_columns and all(c in header for c in text_columns):
        at = [header.index(c) for c in text_columns]
        return [" ".join(r[i].strip() for i in at if i < len(r) and r[i].strip()) for r in rows[1:]]
    named = next((c for c in (text_column, "text") if c in header), None)
    if named is not None:
        col = header.index(named)
    elif len(header) == 1 and not text_columns:  # a lone 'title' is not the model's joined text
        col = 0
    else:
        wanted = f"columns {', '.join(text_columns)} (joined), nor a '{text_column}' column" if text_columns else f"'{text_column}' column"
        raise _error(f"The CSV has no {wanted} (columns: {', '.join(header[:10])}); name the text column "
                     f"'{text_column}'.", title="Unreadable file")
    return [r[col] if col < len(r) else "" for r in rows[1:]]


# --- inference ----------------------------------------------------------------------------------------


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""What makes a spreadsheet read a CSV cell as a formula (OWASP's list for CSV injection)."""


def spreadsheet_safe(cell: Any) -> Any:
    """A text cell of the downloaded CSV, with an apostrophe in front when a spreadsheet would run it as a formula.

    The download is for opening in a spreadsheet, and its texts (and labels) are whatever was pasted or uploaded,
    so a cell like `=HYPERLINK(...)` would otherwise run when the file is opened. Spreadsheets show the apostrophe's
    cell as text. The table on screen keeps the texts as they are, as does `taskembed predict --out`, whose files are
    for programs. Numbers are left alone, and so is text that reads as a number ("-1", a common class name), which a
    spreadsheet takes as a number and not as a formula.
    """
    if not isinstance(cell, str) or not cell.startswith(FORMULA_STARTS):
        return cell
    try:
        float(cell)
        return cell
    except ValueError:
        return "'" + cell


def predict_one(model: Model, text: str) -> dict[str, Any]:
    with model.lock:
        pred = model.clf.predict([text])[0]  # with a temperature, its calibrated_score(s) too: one forward pass
    return {"model": model.name, **pred, **({"temperature": model.temperature} if model.temperature else {})}


def predict_many(model: Model, texts: list[str]) -> list[dict[str, Any]]:
    with model.lock:
        return model.clf.predict(texts)  # tokenized once, batched by length, under inference_mode


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _space(title: str, vectors: np.ndarray) -> Space:
    from sklearn.decomposition import PCA

    u = _unit(vectors)
    if u.shape[0] >= 2 and u.shape[1] >= 2:
        pca = PCA(n_components=2, random_state=0).fit(u)
        return Space(title, u, pca.mean_.astype(np.float32), pca.components_.astype(np.float32), pca.transform(u),
                     float(pca.explained_variance_ratio_.sum()))
    return Space(title, u, u.mean(0), np.zeros((2, u.shape[1]), np.float32), np.zeros((u.shape[0], 2)), 0.0)


_base_embedders: dict[tuple[str, int, str], Any] = {}
_base_lock = threading.Lock()


def _base_embedder(name: str, max_length: int, device: Any):
    """The base encoder (mean pooling), loaded once and shared by the models that started from it with the same
    max_length, on the device their classifiers run on."""
    key = (name, max_length, str(device))
    with _base_lock:
        if key not in _base_embedders:
            try:
                _base_embedders[key] = (taskembed.embed.Embedder.load(name, pooling="mean", max_length=max_length, device=str(device)),
                                        threading.Lock())
            except Exception as exc:  # noqa: BLE001 - an unavailable base model only disables one column
                _base_embedders[key] = f"the base model {name} could not be loaded ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
        return _base_embedders[key]


def _embed_tuned(model: Model, texts: list[str], chunk: int = 256) -> np.ndarray:
    # In chunks, so that predictions from other users get the model in between.
    parts = []
    for i in range(0, len(texts), chunk):
        with model.lock:
            parts.append(model.clf.embed(texts[i : i + chunk], normalize=True))
    return np.concatenate(parts).astype(np.float32)


def _embed_base(base, texts: list[str]) -> np.ndarray:
    emb, lock = base
    with lock:
        return emb.encode(texts).astype(np.float32)


def neighbour_index(model: Model) -> dict[str, Space | str]:
    """Validation texts embedded by the tuned and the base model, built on first use."""
    if model.index is not None:
        return model.index
    with model.index_lock:
        if model.index is None:
            val = model.validation
            if not val.texts:
                raise _error(f"No validation texts for this model: {val.missing}.", title="Embeddings unavailable")
            index: dict[str, Space | str] = {"tuned": _space("after: tuned model (the head's representation)", _embed_tuned(model, val.texts))}
            base = _base_embedder(model.base_name, model.clf.max_length, model.clf.device) if model.base_name else "training_config.json names no base model"
            if isinstance(base, str):
                index["base"] = base
            else:
                index["base"] = _space(f"before: base model {_short(model.base_name)} (mean pooling)", _embed_base(base, val.texts))
            model.index = index
    return model.index


def _short(name: str) -> str:
    p = Path(name)
    return p.name if p.is_absolute() else name


def neighbours(model: Model, text: str, k: int) -> tuple[list[list[Any]], list[list[Any]] | str, Any]:
    index = neighbour_index(model)
    val = model.validation
    spaces = {}
    tables: dict[str, Any] = {}
    tuned = index["tuned"]
    with model.lock:
        q = _unit(model.clf.embed([text], normalize=True))[0]
    spaces["tuned"] = (tuned, q)
    base = index["base"]
    if isinstance(base, Space):
        qb = _unit(_embed_base(_base_embedder(model.base_name, model.clf.max_length, model.clf.device), [text]))[0]
        spaces["base"] = (base, qb)
        tables["base"] = None
    else:
        tables["base"] = base
    hits = {}
    for role, (space, qv) in spaces.items():
        sims = space.vectors @ qv
        top = np.argsort(-sims)[:k]
        hits[role] = top
        tables[role] = [[r + 1, round(float(sims[j]), 4), val.labels[j], val.texts[j]] for r, j in enumerate(top)]
    fig = projection_figure(spaces, val.labels, hits)
    return tables["tuned"], tables["base"], fig


def projection_figure(spaces: dict[str, tuple[Space, np.ndarray]], labels: list[str], hits: dict[str, np.ndarray]):
    from matplotlib.figure import Figure

    order = [r for r in ("base", "tuned") if r in spaces]
    names = sorted(set(labels))
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if len(names) <= 10 else "tab20"]
    color = {name: cmap(i % cmap.N) for i, name in enumerate(names)}
    fig = Figure(figsize=(5.2 * len(order) + 1.2, 4.6), dpi=100)
    axes = fig.subplots(1, len(order), squeeze=False)[0]
    lab = np.array(labels)
    for ax, role in zip(axes, order):
        space, q = spaces[role]
        for name in names:
            idx = np.flatnonzero(lab == name)
            ax.scatter(space.xy[idx, 0], space.xy[idx, 1], s=7, alpha=0.55, color=color[name], label=name, linewidths=0)
        near = hits[role]
        ax.scatter(space.xy[near, 0], space.xy[near, 1], s=40, facecolors="none", edgecolors="black", linewidths=0.8,
                   label="nearest")
        qxy = (q - space.mean) @ space.components.T
        ax.scatter([qxy[0]], [qxy[1]], marker="*", s=260, color="black", edgecolors="white", linewidths=0.8, label="your text",
                   zorder=5)
        ax.set_title(f"{space.title}\nPCA of the validation set, {100 * space.explained:.0f}% of variance", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    if len(names) <= 20:
        axes[-1].legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, markerscale=1.5, frameon=False)
    fig.tight_layout()
    return fig


# --- the About tab: read from the folder, never recomputed ------------------------------------------


def _pct(v: Any) -> str:
    return "" if v is None else f"{100 * v:.2f}"


def metrics_rows(metrics: dict[str, Any] | None) -> list[list[Any]]:
    rows = []
    names = {"majority": "majority class", "tfidf_logreg": "TF-IDF + logistic regression"}
    for split in ("validation", "test"):
        m = (metrics or {}).get(split)
        if not m:
            continue
        rows.append([split, "fine-tuned", _pct(m.get("accuracy")), _pct(m.get("macro_f1")), m.get("n")])
        for name, b in ((metrics or {}).get("baselines") or {}).get(split, {}).items():
            tied = f" ({b['tied']} tied for most common: their mean)" if b.get("tied") else ""
            tied += " (character n-grams)" if b.get("features") else ""
            rows.append([split, names.get(name, name) + tied, _pct(b.get("accuracy")), _pct(b.get("macro_f1")), m.get("n")])
    return rows


def per_class_rows(metrics: dict[str, Any] | None) -> tuple[str, list[list[Any]]]:
    metrics = metrics or {}
    split = "test" if metrics.get("test") else "validation"
    per = (metrics.get(split) or {}).get("per_class") or {}
    return split, [[name, _pct(v["precision"]), _pct(v["recall"]), _pct(v["f1"]), v["support"]] for name, v in per.items()]


def plan_rows(plan: dict[str, Any] | None) -> list[list[Any]]:
    rows = []
    for g in (plan or {}).get("groups", []):
        rows.append([g.get("name"), g.get("depth"), f"{g.get('n_params', 0):,}",
                     f"{g['lr']:.3g}" if g.get("trainable", True) else "frozen", g.get("weight_decay"), ", ".join(g.get("modules", [])[:4])])
    return rows


def summary_markdown(model: Model) -> str:
    cfg, run = model.config, model.reports.get("run") or {}
    data, mcfg, train = cfg.get("data") or {}, cfg.get("model") or {}, cfg.get("train") or {}
    lines = [f"### {model.name}", ""]
    lines.append(f"- **labels** ({len(model.clf.labels)}): " + ", ".join(f"`{x}`" for x in model.clf.labels[:40])
                 + (" ..." if len(model.clf.labels) > 40 else ""))
    if mcfg.get("name"):
        lines.append(f"- **base model**: `{_short(mcfg['name'])}`")
    if data.get("source"):
        lines.append(f"- **data**: `{_short(str(data['source']))}`, max length {data.get('max_length')} tokens")
    if train:
        # The rates trained with are the plan's: train.lr_scaling multiplies the configured ones for the batch size.
        groups = {g.get("name"): g.get("lr") for g in (model.reports.get("plan") or {}).get("groups") or [] if isinstance(g, dict)}
        top = next((lr for name, lr in reversed(groups.items()) if name not in ("head", "embeddings")), None)
        top, head = (top, groups["head"]) if top is not None and groups.get("head") is not None else (train.get("lr"), train.get("head_lr"))
        scaled = (f" (train.lr {train.get('lr'):g} and head_lr {train.get('head_lr'):g} scaled by train.lr_scaling "
                  f"{train.get('lr_scaling')})" if (top, head) != (train.get("lr"), train.get("head_lr")) else "")
        lines.append(f"- **rates**: top {top:g}, layer decay {train.get('layer_decay'):g}, head {head:g}{scaled}; "
                     f"{train.get('epochs'):g} epochs, batch {train.get('batch_size')}, seed {train.get('seed')}")
    if run:
        lines.append(f"- **trained on** {run.get('device', '?')} in {run.get('train_seconds', 0):.0f} s"
                     + (" (stopped early)" if run.get("stopped_early") else ""))
    best = (model.reports.get("metrics") or {}).get("best_step")
    if best is not None:
        lines.append(f"- **best checkpoint**: optimizer step {best}")
    if model.temperature:
        lines.append(f"- **calibration**: temperature {model.temperature:.3g} (from calibration.json)")
    val = model.validation
    lines.append(f"- **validation texts**: {val.total:,} from `{_short(val.where)}`" + (f", {len(val.texts):,} used for neighbours" if val.total > len(val.texts) else "")
                 if val.texts else f"- **validation texts**: none ({val.missing})")
    return "\n".join(lines)


def embedding_markdown(report: dict[str, Any] | None, multi_label: bool = False) -> str:
    if not report and multi_label:
        return "Multi-label models have no embedding report (training writes one for single-label models)."
    if not report:
        return "No embedding report in this folder (train with `output.embedding_report: true` and a validation split)."

    def row(side: str, r: dict[str, Any]) -> str:
        sil = "n/a" if r.get("silhouette") is None else f"{r['silhouette']:.3f}"
        return (f"| {side}: `{_short(str(r.get('model')))}`, {r.get('pooling')} ({r.get('dim')}-d) | {_pct(r.get('knn_accuracy')) or 'n/a'} "
                f"| {_pct(r.get('linear_probe_accuracy')) or 'n/a'} | {sil} |")

    # The k used (fewer than asked when a class has few texts to vote), as the card states it; settings hold the k asked.
    k = (report.get("tuned") or {}).get("k") or (report.get("base") or {}).get("k") or (report.get("settings") or {}).get("k", 10)
    lines = [f"On {report.get('n', 0):,} validation texts, cross-validated:", "",
             f"| embedding | k-NN accuracy (k={k}) | linear probe accuracy | silhouette (cosine) |", "| --- | ---: | ---: | ---: |",
             row("before", report.get("base") or {}), row("after", report.get("tuned") or {})]
    shift = report.get("cosine_shift")
    if shift:
        lines += ["", f"Cosine shift (1 - cosine of a text's vectors before and after): {shift['overall']:.3f} overall."]
    return "\n".join(lines)


def _image(model: Model, name: str):
    """A PNG of the folder as pixels (PIL), so no file of the model folder is ever served over HTTP."""
    if name not in model.images:
        from PIL import Image

        path = model.folder / name
        img = None
        if path.is_file():
            try:
                with Image.open(path) as im:
                    im.thumbnail((1400, 1400))
                    img = im.convert("RGB")
            except OSError:
                img = None
        model.images[name] = img
    return model.images[name]


def error_values(metrics: dict[str, Any] | None, multi_label: bool = False) -> tuple[str, list[list[Any]], list[list[Any]]]:
    """The error analysis training wrote into metrics.json ("errors"): a note, the most confused pairs, the highest-loss examples.

    Texts go into table cells as plain strings, never into Markdown: they are the data's text, not the demo's.
    """
    errors = (metrics or {}).get("errors")
    if not isinstance(errors, dict) and multi_label:
        return "Multi-label models have no error analysis (training writes one for single-label models).", [], []
    if not isinstance(errors, dict):
        return "No error analysis in this folder (training writes one with `output.error_analysis: true` and a test or validation split).", [], []
    split = errors.get("split") or "evaluation"
    pairs = [[p.get("true"), p.get("predicted"), p.get("count")] for p in errors.get("confused_pairs") or []]
    # Ranked by loss, so by the true label's probability; the predicted label's is beside it (not in order with more classes).
    examples = [[e.get("text"), e.get("label"), _pct(e.get("p_label")), e.get("predicted"), _pct(e.get("p_predicted"))]
                for e in errors.get("top_loss") or []]
    if not pairs:
        return f"No mistakes on the {split} split.", [], []
    return (f"On the {split} split: the label pairs the model confuses most (true -> predicted), and the mistakes with the "
            "highest loss (the true label given the least probability), with the probability of each label."), pairs, examples


def about_values(model: Model) -> dict[str, Any]:
    """Everything the About tab shows, read from the folder."""
    metrics = model.reports.get("metrics")
    split, per_class = per_class_rows(metrics)
    cm_name = _cm_name(model)
    errors_note, confused_pairs, top_loss = error_values(metrics, model.clf.multi_label)
    return {
        "summary": summary_markdown(model),
        "metrics": metrics_rows(metrics),
        "per_class_split": split,
        "per_class": per_class,
        "errors_note": errors_note,
        "confused_pairs": confused_pairs,
        "top_loss": top_loss,
        "cm_name": cm_name,
        "cm": _image(model, cm_name),
        "curves": _image(model, "learning_curves.png"),
        "plan": plan_rows(model.reports.get("plan")),
        "config": model.config,
        "embedding": embedding_markdown(model.reports.get("embedding"), model.clf.multi_label),
        "projection": _image(model, "embedding_projection.png"),
    }


def _cm_name(model: Model) -> str:
    return "confusion_matrix_test.png" if (model.folder / "confusion_matrix_test.png").is_file() else "confusion_matrix_validation.png"


# --- the app ------------------------------------------------------------------------------------------


def _confidence_markdown(p: dict[str, Any]) -> str:
    if "labels" in p:  # multi-label: every label over its own threshold, each with its probability
        if not p["labels"]:
            return f"**No label** reaches its threshold; the most likely is {p['label']} ({100 * p['score']:.1f}%)"
        found = ", ".join(f"**{x}** ({100 * p['scores'][x]:.1f}%)" for x in p["labels"])
        return f"Predicted labels: {found}, each over its own threshold"
    s = f"**Predicted: {p['label']}** with confidence {100 * p['score']:.1f}%"
    if "calibrated_score" in p:
        s += f"; calibrated confidence {100 * p['calibrated_score']:.1f}% (temperature {p['temperature']:.3g})"
    return s


_gradio_cache: str | None = None  # the GRADIO_TEMP_DIR build_app set (a later app in this process moves it to its own folder)


def build_app(folders: Sequence[str | Path] | None = None, *, models: Sequence[Model] | None = None, limits: Limits | None = None,
              top_k: int = TOP_K, neighbour_texts: int = MAX_NEIGHBOUR_TEXTS, concurrency: int = CONCURRENCY,
              queue_size: int = QUEUE_SIZE, device: str | None = None) -> gr.Blocks:
    """A Gradio Blocks app for one or more trained model folders (raises taskembed.UserError for a bad folder)."""
    if models is None:
        models = load_models(list(folders or []), device=device, cap=neighbour_texts)
    limits = limits or Limits()
    by_name = {m.name: m for m in models}
    first = models[0]
    several = len(models) > 1
    out_dir = Path(tempfile.mkdtemp(prefix="taskembed-demo-"))
    atexit.register(shutil.rmtree, out_dir, True)  # the downloads go with the demo, and Gradio's copies with them (below)
    # Gradio copies every upload and every file it serves (visitors' texts, their predictions) into its cache, by default
    # a shared /tmp/gradio whose files other local users can read and which outlives the demo. Inside this private
    # folder (mode 0700, removed at exit) they are neither. Read when the components are built, so it is set before
    # them; a GRADIO_TEMP_DIR the user set wins.
    global _gradio_cache
    if os.environ.get("GRADIO_TEMP_DIR") in (None, _gradio_cache):
        _gradio_cache = os.environ["GRADIO_TEMP_DIR"] = str(out_dir / "gradio")

    def pick(name: str | None) -> Model:
        if name is None and not several:
            return first
        if name not in by_name:
            raise _error(f"Unknown model {name!r}; pick one of: {', '.join(by_name)}.", title="Unknown model")
        return by_name[name]

    def samples(model: Model) -> list[list[str]]:
        return [[t] for t in model.examples]

    def do_predict(name: str, text: str):
        model = pick(name)
        text = check_text(text, limits)
        p = predict_one(model, text)
        label = {k: float(v) for k, v in p["scores"].items()}
        compare = []
        if several:
            for other in models:
                q = p if other is model else predict_one(other, text)
                # A multi-label model's answer is its label list (its best label's score beside it).
                row = [other.name, (", ".join(q["labels"]) or "(none)") if "labels" in q else q["label"], round(q["score"], 4)]
                compare.append(row + [round(q["calibrated_score"], 4) if "calibrated_score" in q else None])
        return label, _confidence_markdown(p), p, compare

    def do_batch(name: str, lines: str, upload: str | None):
        model = pick(name)
        if upload and (lines or "").strip():
            raise _error("Give texts either as lines or as a file, not both (clear one of them).", title="Two inputs")
        if lines and len(lines) > limits.max_batch_chars + limits.max_lines:
            raise _error(f"Input too long: {len(lines):,} characters; the demo takes at most {limits.max_batch_chars:,} per batch.",
                           title="Input too long")
        raw = read_upload(upload, limits, model.text_column, model.text_columns) if upload else split_lines(lines or "")
        texts = check_batch(raw, limits, "row" if upload and Path(upload).suffix.lower() in (".csv", ".tsv") else "line")
        started = time.perf_counter()
        preds = predict_many(model, texts)
        seconds = time.perf_counter() - started
        multi = model.clf.multi_label
        header, rows = model.clf.table(texts, preds)  # the columns `taskembed predict --out x.csv` writes
        _prune(out_dir)
        fd, path = tempfile.mkstemp(prefix="predictions-", suffix=".csv", dir=out_dir)
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(header)
            w.writerows([spreadsheet_safe(c) for c in r] for r in rows)
        counts: dict[str, int] = {}
        for p in preds:
            for x in p["labels"] if multi else [p["label"]]:  # multi-label: texts per predicted label
                counts[x] = counts.get(x, 0) + 1
        note = (f"{len(texts):,} texts in {seconds:.2f} s with **{model.name}**: "
                + ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])))
        return pd.DataFrame(rows, columns=header), path, note

    def do_neighbours(name: str, text: str, k: float):
        model = pick(name)
        text = check_text(text, limits)
        k = int(max(1, min(20, k or 5)))
        tuned, base, fig = neighbours(model, text, k)
        val = model.validation
        note = f"Nearest of {len(val.texts):,} validation texts from `{_short(val.where)}` by cosine similarity, with **{model.name}**."
        if isinstance(base, str):
            note += f" Base model column unavailable: {base}."
            base = []
        return tuned, base, fig, note

    def do_about(name: str):
        model = pick(name)
        v = about_values(model)
        return [
            v["summary"],
            v["metrics"],
            gr.Dataframe(value=v["per_class"], label=f"per class ({v['per_class_split']})"),
            gr.Image(value=v["cm"], label=_image_label(v["cm_name"]), visible=v["cm"] is not None),
            gr.Image(value=v["curves"], visible=v["curves"] is not None),
            v["plan"],
            v["config"],
            v["embedding"],
            gr.Image(value=v["projection"], visible=v["projection"] is not None),
            v["errors_note"],
            gr.Dataframe(value=v["confused_pairs"], visible=bool(v["confused_pairs"])),
            gr.Dataframe(value=v["top_loss"], visible=bool(v["top_loss"])),
            gr.Dataset(samples=samples(model)),
            gr.Dataset(samples=samples(model)),
            _examples_note(model),
        ]

    title = "taskembed demo" + (f": {first.name}" if not several else "")
    with gr.Blocks(title=title, analytics_enabled=False) as app:
        gr.Markdown(f"# {title}\n"
                    + ("Pick a model to compare runs on the same text. " if several else "")
                    + "Everything runs on this machine; nothing is sent elsewhere.")
        model_dd = gr.Dropdown(choices=list(by_name), value=first.name, label="model", visible=several, interactive=several)
        with gr.Tabs():
            with gr.Tab("Predict", id="predict"):
                with gr.Row():
                    with gr.Column(scale=3):
                        text = gr.Textbox(label="text", lines=4, max_length=limits.max_chars, placeholder="Type a review ...",
                                          elem_id="predict-text")
                        predict_btn = gr.Button("Predict", variant="primary", elem_id="predict-button")
                        examples = gr.Dataset(components=[text], samples=samples(first), label="examples from the validation data",
                                              samples_per_page=8)
                        examples_note = gr.Markdown(_examples_note(first), elem_classes="te-note")
                    with gr.Column(scale=2):
                        label_out = gr.Label(num_top_classes=top_k, label="label probabilities", elem_id="predict-label")
                        conf_out = gr.Markdown(elem_id="predict-confidence")
                        compare_out = gr.Dataframe(headers=["model", "label", "confidence", "calibrated"], label="all models on this text",
                                                   visible=several, interactive=False)
                        with gr.Accordion("raw output", open=False):
                            details_out = gr.JSON(label="prediction")
            with gr.Tab("Batch", id="batch"):
                with gr.Row():
                    with gr.Column():
                        lines = gr.Textbox(label=f"texts, one per line (at most {limits.max_lines:,})", lines=10, elem_id="batch-text",
                                           max_length=limits.max_batch_chars + limits.max_lines)
                        upload = gr.File(label=f"... or a .csv or .tsv (the column the model was trained on, or its columns joined, else 'text') or .txt file, up to {limits.max_upload_bytes // 1000:,} kB",
                                         file_types=[".csv", ".tsv", ".txt"], type="filepath")
                        batch_btn = gr.Button("Predict all", variant="primary", elem_id="batch-button")
                    with gr.Column():
                        batch_note = gr.Markdown()
                        csv_out = gr.File(label="download predictions (CSV)", interactive=False)
                batch_out = gr.Dataframe(label="predictions", interactive=False, wrap=True, elem_id="batch-table")
            with gr.Tab("Embeddings", id="embeddings"):
                with gr.Row():
                    with gr.Column(scale=3):
                        etext = gr.Textbox(label="text", lines=2, max_length=limits.max_chars, elem_id="embed-text")
                        eexamples = gr.Dataset(components=[etext], samples=samples(first), label="examples", samples_per_page=8)
                    with gr.Column(scale=1):
                        k_in = gr.Slider(1, 20, value=5, step=1, label="neighbours")
                        embed_btn = gr.Button("Find neighbours", variant="primary", elem_id="embed-button")
                enote = gr.Markdown("The validation texts are embedded on first use (a few seconds).", elem_classes="te-note",
                                    elem_id="embed-note")
                with gr.Row():
                    tuned_out = gr.Dataframe(headers=["rank", "cosine", "label", "text"], label="tuned model", interactive=False, wrap=True,
                                             column_widths=["9%", "13%", "14%", "64%"],
                                             elem_id="embed-tuned")
                    base_out = gr.Dataframe(headers=["rank", "cosine", "label", "text"], label="base model (mean pooling)",
                                            interactive=False, wrap=True, elem_id="embed-base", column_widths=["9%", "13%", "14%", "64%"])
                gr.Markdown("#### Where the text lands: a 2-D PCA of the validation set, before and after fine-tuning")
                plot_out = gr.Plot(show_label=False, elem_id="embed-plot", format="png")
            with gr.Tab("About", id="about"):
                v = about_values(first)
                summary = gr.Markdown(v["summary"], elem_id="about-summary")
                with gr.Row():
                    metrics_df = gr.Dataframe(value=v["metrics"], headers=["split", "model", "accuracy", "macro-F1", "n"],
                                              label="metrics (%), with baselines", interactive=False)
                    per_class_df = gr.Dataframe(value=v["per_class"], headers=["label", "precision", "recall", "F1", "support"],
                                                label=f"per class ({v['per_class_split']})", interactive=False)
                with gr.Row():
                    cm_img = gr.Image(value=v["cm"], type="pil", interactive=False, label=_image_label(v["cm_name"]), buttons=["fullscreen"],
                                      visible=v["cm"] is not None)
                    curves_img = gr.Image(value=v["curves"], type="pil", interactive=False, label="learning curves", buttons=["fullscreen"],
                                          visible=v["curves"] is not None)
                gr.Markdown("#### Errors")
                errors_md = gr.Markdown(v["errors_note"], elem_id="about-errors")
                with gr.Row():
                    pairs_df = gr.Dataframe(value=v["confused_pairs"], headers=["true", "predicted", "count"], label="most confused label pairs",
                                            interactive=False, visible=bool(v["confused_pairs"]), scale=1, elem_id="about-confused-pairs")
                    top_loss_df = gr.Dataframe(value=v["top_loss"], headers=["text", "true", "true label (%)", "predicted", "predicted label (%)"],
                                               label="highest-loss examples", interactive=False, wrap=True, visible=bool(v["top_loss"]),
                                               scale=3, column_widths=["64%", "12%", "12%", "12%"], elem_id="about-top-loss")
                plan_df = gr.Dataframe(value=v["plan"], headers=["group", "depth", "parameters", "rate", "weight decay", "modules"],
                                       label="learning-rate plan", interactive=False)
                gr.Markdown("#### Embeddings before and after fine-tuning")
                emb_md = gr.Markdown(v["embedding"])
                proj_img = gr.Image(value=v["projection"], type="pil", interactive=False, show_label=False, buttons=["fullscreen"],
                                    visible=v["projection"] is not None)
                with gr.Accordion("training config", open=False):
                    config_json = gr.JSON(value=v["config"], label="training_config.json")

        about_outputs = [summary, metrics_df, per_class_df, cm_img, curves_img, plan_df, config_json, emb_md, proj_img,
                         errors_md, pairs_df, top_loss_df]
        predict_outputs = [label_out, conf_out, details_out, compare_out]
        predict_btn.click(do_predict, [model_dd, text], predict_outputs, api_name="predict")
        text.submit(do_predict, [model_dd, text], predict_outputs, api_visibility="private")
        examples.click(lambda s: s[0] if isinstance(s, list) else s, examples, text, api_visibility="private", queue=False)
        eexamples.click(lambda s: s[0] if isinstance(s, list) else s, eexamples, etext, api_visibility="private", queue=False)
        batch_btn.click(do_batch, [model_dd, lines, upload], [batch_out, csv_out, batch_note], api_name="batch", concurrency_limit=1)
        embed_outputs = [tuned_out, base_out, plot_out, enote]
        embed_btn.click(do_neighbours, [model_dd, etext, k_in], embed_outputs, api_name="neighbours", concurrency_limit=1)
        etext.submit(do_neighbours, [model_dd, etext, k_in], embed_outputs, api_visibility="private", concurrency_limit=1)
        if several:
            model_dd.change(do_about, model_dd, [*about_outputs, examples, eexamples, examples_note], api_name="about")
            model_dd.change(lambda n, t: do_predict(n, t) if (t or "").strip() else (None, "", None, []), [model_dd, text],
                            predict_outputs, api_visibility="private")
            # The Batch and Embeddings results belong to the model that made them: cleared, not left under another name.
            model_dd.change(lambda _n: (None, None, "", None, None, None, ""), model_dd, [batch_out, csv_out, batch_note, *embed_outputs],
                            api_visibility="private")
    app.queue(default_concurrency_limit=concurrency, max_size=queue_size)
    app.taskembed_limits = limits  # read by launch(): the upload size cap
    app.taskembed_models = list(models)
    app.taskembed_tmp = out_dir
    return app


def _image_label(name: str) -> str:
    return name.removesuffix(".png").replace("_", " ")


def _examples_note(model: Model) -> str:
    val = model.validation
    if model.examples:
        return f"Examples: validation texts from `{_short(val.where)}`."
    if val.texts:
        return f"No examples: none of the validation texts from `{_short(val.where)}` is {EXAMPLE_CHARS[0]} to {EXAMPLE_CHARS[1]} characters long."
    return f"No examples: {val.missing}."


def _prune(folder: Path, max_age: float = 600.0) -> None:
    """Drop CSV downloads older than ten minutes (Gradio keeps its own copy in its cache)."""
    now = time.time()
    for f in folder.glob("predictions-*.csv"):
        try:
            if now - f.stat().st_mtime > max_age:
                f.unlink()
        except OSError:
            pass


# --- launching ----------------------------------------------------------------------------------------


class RefuseRemoteFiles:
    """ASGI middleware: Gradio's file route would fetch and relay http(s) URLs; this demo never needs that."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope.get("type") == "http":
            path = scope.get("path", "")
            marker = path.find("file=")
            if marker >= 0:
                target = path[marker + 5 :].lower()
                if target.startswith(("http:", "https:", "//", "\\\\")) or "://" in target:
                    body = b'{"detail":"remote URLs are not served by this demo"}'
                    await send({"type": "http.response.start", "status": 403,
                                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
                    await send({"type": "http.response.body", "body": body})
                    return
        await self.app(scope, receive, send)


def is_local(host: str) -> bool:
    if host in LOCAL_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_auth(value: str | None, source: str = "--auth") -> tuple[str, str] | None:
    """USER:PASSWORD from `source` (the option, or the environment variable that stands in for it)."""
    if not value:
        return None
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise DemoError(f"{source} must be USER:PASSWORD (both non-empty)")
    return user, password


def launch(app: gr.Blocks, host: str = "127.0.0.1", port: int | None = None, share: bool = False,
           auth: tuple[str, str] | None = None, prevent_thread_lock: bool = False, quiet: bool = False, warn=None):
    """Start the server: 127.0.0.1 and no share link unless asked, with a warning when asked."""
    warn = warn or (lambda msg: print(msg, file=sys.stderr))
    if not is_local(host):
        warn(f"warning: --host {host} makes the demo reachable from other machines"
             + ("" if auth else "; anyone who can reach it can use it (add --auth USER:PASSWORD)")
             + ("; the password travels unencrypted over plain HTTP" if auth else ""))
    if share:
        warn("warning: --share publishes the demo on a public gradio.live URL through Gradio's share servers"
             + ("" if auth else "; anyone with the link can use it (add --auth USER:PASSWORD)"))
    limits: Limits = getattr(app, "taskembed_limits", Limits())
    if not prevent_thread_lock and threading.current_thread() is threading.main_thread():  # only there can a handler be set
        signal.signal(signal.SIGTERM, _stop)  # before the server starts: a SIGTERM right after it would find none
    from starlette.middleware import Middleware

    # Gradio's own lines tell a user of this command to set `share=True` in `launch()`: say what the demo is and how
    # to share it instead, then wait as launch would have.
    started = app.launch(
        server_name=host,
        server_port=port,
        share=share,
        auth=auth,
        auth_message="taskembed demo" if auth else None,
        prevent_thread_lock=True,
        quiet=True,
        show_error=False,  # a gr.Error's message still shows; other exceptions do not leak details
        max_file_size=limits.max_upload_bytes,
        ssr_mode=False,
        mcp_server=False,
        pwa=False,
        enable_monitoring=False,
        strict_cors=True,
        app_kwargs={"middleware": [Middleware(RefuseRemoteFiles)]},
        theme=gr.themes.Default(),
        css=CSS,
    )
    if not quiet:
        _, local_url, share_url = started
        if share_url:
            where = f"{local_url} and {share_url}"
        elif share:
            where = f"{local_url} (no share link came back: Gradio's share servers need the internet)"
        elif not is_local(host):
            where = f"{local_url}, listening on {host}"
        else:
            where = f"{local_url} (this machine only; --share for a public link)"
        print(f"taskembed demo on {where}; Ctrl-C stops it", flush=True)
    if not prevent_thread_lock:
        app.block_thread()
    return started


def _stop(signum, frame):
    """SIGTERM (kill, timeout, docker stop, systemd) ends the demo with status 0, at any point of its start or its
    serving: the exit handlers run, which remove the folder of downloads (users' texts and their predictions); the
    server's threads end with the process. Python's default for SIGTERM is to die at once, which left that folder in
    the temp directory; a KeyboardInterrupt would print a traceback during the start and Gradio's "Keyboard
    interruption" line after it. A second SIGTERM while the exit handlers run is ignored: it would interrupt them with
    a traceback ("Exception ignored in atexit callback") and leave the folder half-removed."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise SystemExit(0)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="demo/app.py", description="Gradio demo for trained taskembed model folders.")
    p.add_argument("models", nargs="+", help="one or more trained model folders (several: a picker to compare them)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, help="port (default: 7860 or the next free one)")
    p.add_argument("--share", action="store_true", help="also publish a public gradio.live link (needs the internet)")
    p.add_argument("--auth", help="require a login, USER:PASSWORD (or set TASKEMBED_DEMO_AUTH)")
    p.add_argument("--max-chars", type=int, default=MAX_CHARS, help=f"characters per text (default {MAX_CHARS:,})")
    p.add_argument("--max-lines", type=int, default=MAX_LINES, help=f"texts per batch (default {MAX_LINES:,})")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    return p


def check_address(host: str, port: int | None) -> None:
    """Refuse in one line a host this machine cannot listen on, or a port another program holds: Gradio would stop
    with a traceback saying it found no empty port, for both. Binds a socket as the server will (SO_REUSEADDR, as
    uvicorn sets it), and closes it at once."""
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port or 0, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError):
        raise DemoError(f"--host {host}: not a name or address this machine can listen on; use 127.0.0.1 (this machine "
                        "only) or 0.0.0.0 (every interface)") from None
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise DemoError(f"--port {port} is in use by another program; choose another port, or leave --port out "
                                "to take the first free one from 7860") from None
            raise DemoError(f"--host {host}: cannot listen there ({exc.strerror}); use 127.0.0.1 (this machine only), "
                            "0.0.0.0 (every interface) or an address of this machine") from None


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        auth = parse_auth(args.auth) if args.auth else parse_auth(os.environ.get("TASKEMBED_DEMO_AUTH"), "TASKEMBED_DEMO_AUTH")
        if args.max_chars < 1 or args.max_lines < 1:
            raise DemoError("--max-chars and --max-lines must be positive")
        if args.port is not None and not 0 < args.port < 65536:
            raise DemoError(f"--port {args.port}: use 1 to 65535")
        check_address(args.host, args.port)  # before the models load, which takes a while
        limits = Limits(max_chars=args.max_chars, max_lines=args.max_lines, max_batch_chars=max(MAX_BATCH_CHARS, args.max_chars))
        app = build_app(args.models, limits=limits, device=args.device)
    except taskembed.UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    launch(app, host=args.host, port=args.port, share=args.share, auth=auth)
    return 0


if __name__ == "__main__":
    sys.exit(main())
