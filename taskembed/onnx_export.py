"""ONNX export of a trained classifier, or of an encoder with its pooling (`export_onnx_embeddings`, the vectors `embed`
gives), to serve it without PyTorch: onnxruntime in Python or any language it binds.

The folder written holds model.onnx (the tokenizer's inputs, any batch size and length, to `logits`), the tokenizer,
config.json (the labels, and problem_type for multi-label), calibration.json / thresholds.json when the model has them,
and taskembed_onnx.json: how to read the outputs and what the export was checked against. config.json beside
model.onnx is also the layout optimum's ORTModelForSequenceClassification loads.

The export is checked before the folder appears: float32 must give PyTorch's logits (to float rounding) on texts of
several lengths in padded batches, or nothing is written. int8 (dynamic quantisation of the linear layers' weights)
changes the numbers by design; with `check` data it says how much the predictions and the accuracy moved.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import inspect
import logging
import random
import shutil
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from taskembed import artifacts
from taskembed.calibration import CALIBRATION_FILE
from taskembed.errors import UserError
from taskembed.modeling import can_trim_top_layer, top_layer_reads_head
from taskembed.metrics import THRESHOLDS_FILE
from taskembed.predict import Classifier

ONNX_FILE = "model.onnx"
META_FILE = "taskembed_onnx.json"
PACKAGES = ("onnx", "onnxscript", "onnxruntime")
# float32 through onnxruntime against PyTorch: the same arithmetic in another order. Measured on all-MiniLM-L6-v2,
# 3.7e-6 at most over the 1,265 rotten_tomatoes test texts; a wrong graph misses by whole units.
FLOAT32_TOLERANCE = 1e-3


def export_onnx(folder: str | Path, out: str | Path, *, int8: bool = False, check: Any = None, check_split: str | None = None,
                check_columns: dict[str, str | None] | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Write FOLDER's classifier as an ONNX folder at OUT; returns what taskembed_onnx.json records.

    `int8` quantises the linear layers' weights to 8 bits (about 4x smaller, faster on CPUs, slightly different
    scores, which also depend on the batch: the activations are quantised per batch). `check` is labelled data as
    `taskembed.evaluate` takes it (a file, a dataset folder or built-in name with `check_split`, default test; a
    DataFrame; `check_columns` maps evaluate's text_column / text_pair_column / label_column): both models score it, one
    text at a time and in batches of 32, and the record says their accuracies and how often they agree.
    """
    out = Path(out)
    # The destination, the packages and the check data first: refusing any of them should not wait for an export.
    artifacts.check_export_folder(folder, out, overwrite, META_FILE)
    _require_packages()
    try:
        clf = Classifier(folder, device="cpu")
    except UserError as exc:
        if "not a classifier folder" not in str(exc):
            raise
        raise UserError(f"{exc}, or export its vectors with --format onnx-embeddings (export_onnx_embeddings)") from None
    if clf.window_stride is not None:
        raise UserError(f"{folder} was trained on sliding windows (data.long_texts: window), whose logits are averaged over a "
                        "text's windows outside the network; ONNX export takes models that read one window")
    reference = None
    if check is not None:
        from taskembed.api import evaluate

        reference = evaluate(clf.folder, check, check_split, predictions=True, **(check_columns or {}))["predictions"]
    model, tok = clf.model, clf.tokenizer
    # As taskembed reads texts: padded on the right (the trimmed top layer reads row 0) and cut at the run's max_length,
    # which the saved tokenizer then states, so that tools truncating at the tokenizer's own limit read what it read.
    tok.padding_side = "right"
    tok.model_max_length = clf.max_length
    accepted = inspect.signature(model.forward).parameters
    inputs = [n for n in tok.model_input_names if n in accepted]
    pair = bool(clf.text_pair_column)

    with artifacts.staged_folder(out, overwrite) as tmp:
        full = tmp / "float32" if int8 else tmp  # the float32 graph (and any external weights file) apart, when quantised
        full.mkdir(exist_ok=True)
        with top_layer_reads_head(model) as trimmed:
            _export(model, tok, inputs, pair, full / ONNX_FILE, "logits")
        # The float32 graph must give PyTorch's logits whatever follows: a mistranslated operator is a bug, not rounding.
        session = session_for(full / ONNX_FILE)
        drift = _compare_on_probe_texts(clf, session, inputs)
        if not drift <= FLOAT32_TOLERANCE:
            raise UserError(f"the ONNX model's logits differ from PyTorch's by {drift:.3g} (more than {FLOAT32_TOLERANCE:g}); "
                            "nothing was written. This is a bug in the export of this architecture: please report it")
        if int8:
            _quantise(full, tmp)
            session = session_for(tmp / ONNX_FILE)  # the model written, which the check and the record describe
            drift = _compare_on_probe_texts(clf, session, inputs)
        tok.save_pretrained(tmp)
        model.config.save_pretrained(tmp)
        for name in (CALIBRATION_FILE, THRESHOLDS_FILE):
            if (clf.folder / name).is_file():
                shutil.copyfile(clf.folder / name, tmp / name)
        meta = {
            "source": str(clf.folder.resolve()),
            "weights": "int8 (dynamic quantisation of the linear layers)" if int8 else "float32",
            "inputs": inputs,
            "output": "logits",
            "labels": clf.labels,
            "scores": _scores_rule(clf),
            "max_length": clf.max_length,
            "text_pair": pair,
            # A model trained on several columns read each row's non-empty cells joined with a space; so should its users.
            "text_columns_joined": clf.training_config.get("data", {}).get("text_columns"),
            "temperature": clf.temperature,
            "top_layer_for_head_row_only": trimmed,
            "max_abs_logit_difference_on_probe_texts": drift,
            "check": _check_on_data(clf, session, inputs, reference, check, check_split) if reference is not None else None,
            "versions": {**artifacts.versions(), **{p: importlib.metadata.version(p) for p in PACKAGES}},
        }
        artifacts.write_json(tmp / META_FILE, meta)
    return meta


def export_onnx_embeddings(model_or_folder: Any, out: str | Path, *, int8: bool = False, overwrite: bool = False,
                           **options) -> dict[str, Any]:
    """Write an encoder with its pooling as an ONNX folder at OUT, whose `embeddings` output is the vector `embed` gives
    with the same options; returns what taskembed_onnx.json records.

    model_or_folder: a taskembed folder, any encoder folder or id, or a loaded Classifier, as `embed` takes it. Options:
    pooling, normalize and max_length, as `embed` takes them. The float32 graph must give `embed`'s vectors on texts of
    several lengths in padded batches, or nothing is written. `int8` quantises the linear layers' weights; the record
    then says how close its vectors stay (cosine to float32 PyTorch's, per text).
    """
    from taskembed.embed import _trained_data, exportable_embedder

    out = Path(out)
    artifacts.check_export_folder(model_or_folder, out, overwrite, META_FILE)
    _require_packages()
    emb = exportable_embedder(model_or_folder, {**options, "device": "cpu"})
    if "attention_mask" not in emb.tokenizer.model_input_names:
        raise UserError(f"{emb.name}: its tokenizer gives no attention_mask, which the pooling needs to skip padding")
    trained = _trained_data(model_or_folder)
    pair = bool(trained.get("text_pair_column"))
    accepted = inspect.signature(emb.encoder.forward).parameters
    inputs = [n for n in emb.tokenizer.model_input_names if n in accepted]
    graph = _EmbeddingGraph(emb, inputs)
    # The saved tokenizer reads texts as `embed` does (padded on the right, cut at max_length); the Embedder's own
    # tokenizer may be a loaded Classifier's, so it is put back as it was.
    tok = emb.tokenizer
    kept = tok.padding_side, tok.model_max_length
    tok.padding_side, tok.model_max_length = "right", emb.max_length
    try:
        with artifacts.staged_folder(out, overwrite) as tmp:
            full = tmp / "float32" if int8 else tmp
            full.mkdir(exist_ok=True)
            _export(graph, tok, inputs, pair, full / ONNX_FILE, "embeddings", type(emb.model).__name__)
            texts = _probe_texts(tok)
            pairs = _probe_texts(tok, seed=1) if pair else None
            theirs = emb.encode(texts, pairs=pairs)

            def drift_of(graph_file: Path) -> tuple[float, float]:
                mine = onnx_outputs(session_for(graph_file), tok, inputs, texts, pairs, emb.max_length, batch_size=8, output="embeddings")
                return _vector_drift(mine, theirs)

            drift, cosine = drift_of(full / ONNX_FILE)
            if not drift <= FLOAT32_TOLERANCE * max(1.0, float(np.abs(theirs).max())):
                raise UserError(f"the ONNX model's vectors differ from PyTorch's by {drift:.3g} (more than {FLOAT32_TOLERANCE:g} of "
                                "their scale); nothing was written. This is a bug in the export of this architecture: please report it")
            if int8:
                _quantise(full, tmp)
                drift, cosine = drift_of(tmp / ONNX_FILE)  # the model written, which the record describes
            tok.save_pretrained(tmp)
            emb.config.save_pretrained(tmp)
            meta = {
                **emb.describe(),
                "kind": "embeddings",
                "weights": "int8 (dynamic quantisation of the linear layers)" if int8 else "float32",
                "inputs": inputs,
                "output": "embeddings",
                "text_pair": pair,
                "text_columns_joined": trained.get("text_columns"),
                # The head's vector or the top layer's [CLS] read the top layer's first row only, computed alone as embed does.
                "top_layer_for_head_row_only": graph.first_row,
                "max_abs_difference_on_probe_texts": drift,
                "min_cosine_on_probe_texts": cosine,
                "versions": {**artifacts.versions(), **{p: importlib.metadata.version(p) for p in PACKAGES}},
            }
            artifacts.write_json(tmp / META_FILE, meta)
    finally:
        tok.padding_side, tok.model_max_length = kept
    return meta


class _EmbeddingGraph(torch.nn.Module):
    """The Embedder's forward as one module for the exporter: the tokenizer's inputs to the pooled (and normalised)
    vectors, computed by the Embedder's own code so that the graph cannot drift from `embed`."""

    def __init__(self, emb, inputs: list[str]):
        super().__init__()
        self.model = emb.model
        self.inputs = inputs
        self.first_row = emb.first_row_only and can_trim_top_layer(emb.model)  # as top_layer_reads_head decides it
        self._emb = emb

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        vectors = self._emb._represent({n: given[n] for n in self.inputs}).float()
        return torch.nn.functional.normalize(vectors, p=2, dim=-1) if self._emb.normalize else vectors


def _vector_drift(mine: np.ndarray, theirs: np.ndarray) -> tuple[float, float]:
    """The largest difference between two sets of vectors, and the smallest cosine between a text's two vectors."""
    dot = (mine * theirs).sum(1)
    norms = np.linalg.norm(mine, axis=1) * np.linalg.norm(theirs, axis=1)
    return float(np.abs(mine - theirs).max()), float((dot / np.maximum(norms, 1e-12)).min())


def _scores_rule(clf: Classifier) -> str:
    """How the logits become scores and labels, as taskembed_onnx.json states it for a user of the graph."""
    if not clf.multi_label:
        return "a softmax over the labels"
    if clf.thresholds_tuned:
        return "a sigmoid per label; a label is predicted at or over its threshold in thresholds.json"
    thresholds = set(clf.thresholds.values())
    if len(thresholds) == 1:
        return f"a sigmoid per label; a label is predicted at or over {thresholds.pop():g}"
    return "a sigmoid per label, each over its own threshold"


def model_bytes(folder: str | Path) -> int:
    """The size of model.onnx with any external weights file beside it (models over 2 GB)."""
    return sum(f.stat().st_size for f in Path(folder).glob(ONNX_FILE + "*"))


def _require_packages() -> None:
    missing = [p for p in PACKAGES if importlib.util.find_spec(p) is None]
    if missing:
        raise UserError(f"ONNX export needs {', '.join(missing)}: pip install 'taskembed[onnx]'")


def _export(model, tok, inputs: list[str], pair: bool, path: Path, output: str, name: str | None = None) -> None:
    """torch.onnx.export of the module's forward (the tokenizer's inputs by name to one output), batch and length
    dynamic. Inside `top_layer_reads_head` the top layer is traced for the head's row only (exact, and about a sixth less
    work for a 6-layer model: docs/benchmarks.md)."""
    sample = tok(["a short text", "a longer text, to give the batch some padding"],
                 ["a second text", "and another"] if pair else None, padding=True, truncation=True, return_tensors="pt")
    # (Cut at the tokenizer's length, set to the model's: a model trained with a short data.max_length would otherwise
    # get transformers' "longer than the specified maximum ... indexing errors" warning for this sample.)
    kwargs = {n: sample[n] for n in inputs}
    batch, length = torch.export.Dim("batch"), torch.export.Dim("length")
    # The exporter's own deprecation and axis-naming warnings and its log lines about torchvision's operators are not
    # the user's business.
    with warnings.catch_warnings(), _quiet_logs("torch.onnx"), torch.no_grad():
        warnings.simplefilter("ignore")
        try:
            program = torch.onnx.export(model, (), kwargs=kwargs, input_names=inputs, output_names=[output],
                                        dynamic_shapes={n: {0: batch, 1: length} for n in inputs}, dynamo=True, verbose=False)
        except Exception as exc:  # noqa: BLE001 - torch.export's failures are long; one line says which model and why
            first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            raise UserError(f"torch.onnx.export could not trace this {name or type(model).__name__}: {first}") from None
    program.save(str(path))


def _quantise(full: Path, out: Path) -> None:
    """The float32 graph in folder `full` to an int8 one at out/model.onnx (dynamic quantisation of the linear layers'
    weights); `full` is removed."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # One scale per output column rather than per matrix: a column of large weights no longer coarsens all the others.
    # On the default model (rotten_tomatoes test split, docs/benchmarks.md) it kept 98.3 to 98.7% of predictions
    # against 96.9 to 97.2% with one scale, and the embeddings' mean cosine to float32 at 0.993 to 0.995 against 0.965
    # to 0.971 (the head's vectors and mean pooling).
    with _quiet_logs("root"):  # its advice to pre-process first is for convolutional models
        quantize_dynamic(full / ONNX_FILE, out / ONNX_FILE, weight_type=QuantType.QInt8, per_channel=True,
                         use_external_data_format=sum(f.stat().st_size for f in full.iterdir()) > 2**31 - 2**20)
    shutil.rmtree(full)


@contextmanager
def _quiet_logs(name: str) -> Iterator[None]:
    logger = logging.getLogger(None if name == "root" else name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def session_for(path: str | Path, threads: int | None = None):
    """An onnxruntime CPU session on the model file; `threads` for its operators (default: its own choice, the physical
    cores)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3  # errors only: its warnings about unused initialisers are noise here
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_outputs(session, tokenizer, inputs: Sequence[str], texts: Sequence[str], pairs: Sequence[str] | None, max_length: int,
                 batch_size: int = 32, output: str = "logits") -> np.ndarray:
    """The graph's `output` (logits, or an embedding export's embeddings) for `texts` (with their `pairs`) in their
    order, in batches of similar length (less padding)."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]) + (len(pairs[i]) if pairs is not None else 0))
    out: list[np.ndarray | None] = [None] * len(texts)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        enc = tokenizer([texts[i] for i in idx], [pairs[i] for i in idx] if pairs is not None else None, padding=True,
                        truncation=True, max_length=max_length, return_tensors="np")
        rows = session.run([output], {n: enc[n].astype(np.int64) for n in inputs})[0]
        for i, row in zip(idx, rows):
            out[i] = row
    return np.stack(out).astype(np.float32)


def _probe_texts(tokenizer, n: int = 24, seed: int = 0) -> list[str]:
    """Texts of 1 to 80 words drawn from the tokenizer's own whole-word vocabulary: several lengths, so the check
    covers padded rows and the dynamic sequence axis, not only the sample traced."""
    words = sorted(w for w in tokenizer.get_vocab() if w.isalpha() and len(w) > 2)[:20_000] or ["text"]
    rng = random.Random(seed)
    return [" ".join(rng.choices(words, k=rng.randint(1, 80))) for _ in range(n)]


def _compare_on_probe_texts(clf: Classifier, session, inputs: list[str]) -> float:
    texts = _probe_texts(clf.tokenizer)
    pairs = _probe_texts(clf.tokenizer, seed=1) if clf.text_pair_column else None
    mine = onnx_outputs(session, clf.tokenizer, inputs, texts, pairs, clf.max_length, batch_size=8)
    theirs = clf.logits(texts, pairs).numpy()
    return float(np.abs(mine - theirs).max())


def _check_on_data(clf: Classifier, session, inputs: list[str], rows: list[dict[str, Any]], data: Any,
                   split: str | None) -> dict[str, Any]:
    """Both models on labelled data: their accuracies (exact match for multi-label) and how often they agree. The ONNX
    model reads the texts one at a time and in batches of 32: an int8 model's answers can differ between the two, since
    dynamic quantisation scales each batch's activations together."""
    texts = [r["text"] for r in rows]
    pairs = [r["text_pair"] for r in rows] if clf.text_pair_column else None
    if clf.multi_label:
        truth, theirs = [sorted(r["labels"]) for r in rows], [sorted(r["predicted"]) for r in rows]
    else:
        truth, theirs = [r["label"] for r in rows], [r["predicted"] for r in rows]
    n = len(rows)
    out: dict[str, Any] = {
        "data": str(data) if isinstance(data, (str, Path)) else "data given in Python",
        "split": split or (None if not isinstance(data, (str, Path)) or Path(data).is_file() else "test"),
        "examples": n,
        "accuracy_pytorch": 100 * sum(a == b for a, b in zip(theirs, truth)) / n,
    }
    for batch_size in (1, 32):
        logits = onnx_outputs(session, clf.tokenizer, inputs, texts, pairs, clf.max_length, batch_size)
        if clf.multi_label:
            predicted = [sorted(clf.over_thresholds((1 / (1 + np.exp(-row))).tolist())) for row in logits]
        else:
            predicted = [clf.labels[i] for i in logits.argmax(1)]
        out[f"batch_{batch_size}"] = {"accuracy_onnx": 100 * sum(a == b for a, b in zip(predicted, truth)) / n,
                                      "same_prediction": 100 * sum(a == b for a, b in zip(predicted, theirs)) / n}
    return out
