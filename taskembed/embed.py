"""Adapted embeddings: extraction, export to sentence-transformers, nearest-neighbour search.

    from taskembed.embed import embed
    vectors = embed("runs/sentiment", ["a gripping film", "dull"])          # what the head reads
    base = embed("sentence-transformers/all-MiniLM-L6-v2", texts, normalize=True)  # mean pooling

Any encoder works: a taskembed output folder, any `*ForSequenceClassification`
folder, or a plain encoder folder or id (packaged ids resolve offline).

Pooling. `head` (the default for a classifier) is exactly the vector the
classification head reads, so a fine-tuned model's embedding is the space its
decisions are made in. Which vector that is depends on the architecture:

| model_type | head representation (`head`) | sentence-transformers export |
| --- | --- | --- |
| bert, albert, megatron-bert, mobilebert, ernie | pooler output = tanh(dense(h_CLS)); the pooler belongs to the encoder (a MobileBERT with `classifier_activation` false: h_CLS) | Pooling(cls) + Dense(tanh, pooler weights) |
| deberta, deberta-v2 | ContextPooler output = act(dense(h_CLS)), act = `pooler_hidden_act` | Pooling(cls) + Dense(act, ContextPooler weights) |
| roberta, xlm-roberta, xlm-roberta-xl, camembert, electra, distilbert, mpnet, big_bird, nystromformer, roformer | h_CLS; their classifier's own dense layer is part of the new head | Pooling(cls) |
| modernbert | h_CLS or the masked mean of the last layer, as `classifier_pooling` says | Pooling(cls or mean) |

A base encoder without a head defaults to `mean` (masked average of the last
layer, as sentence encoders are trained). `cls`, `mean` and `max` work on any
model and any layer: `layer` indexes the hidden states (0 = embedding output,
1..L = encoder layers, negative = from the top; -1, the default, is the last
layer's output), `mean_last=k` averages the last k layers before pooling.
Vectors are computed in float32 under `torch.inference_mode()` and optionally
L2-normalised; `dtype="float16"` only changes how they are stored. `bf16=True`
(opt-in, for hardware with native bfloat16 matmuls) autocasts the matrix
products to bfloat16 while norms, residuals and pooling stay float32; the
sidecar records it and `search` embeds queries the same way.

Files. `embed_file` streams: texts are read in chunks, each chunk is sorted by
length and cut into token-budget batches, and its vectors are written before
the next chunk is read, so memory does not grow with the corpus. Output goes to
`<out>.partial` and is renamed when complete; a JSON sidecar `<out>.json`
records the model (with a sha256 of its weights), the options and the counts,
which is what `search` uses to embed a query the same way.

Shards. Under `torchrun` or `accelerate launch` (WORLD_SIZE > 1) the same call
splits the rows: rank r embeds the rows whose id i has i % world_size == r
(strided, so a file sorted by length or by split still loads every process
alike) into `<stem>.shard-r-of-w<suffix>` with its own sidecar, keeping the
global `id` column. When every rank is done, rank 0 writes
`<stem>.manifest.json`: the shared sidecar fields plus each shard's file, row
count, byte size and sha256. `load_vectors`, `search` and `embedder_for`
accept the manifest wherever they accept a vectors file.
"""

from __future__ import annotations

import difflib
import hashlib
import inspect
import json
import numbers
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from taskembed.caller_state import keeps_caller_state
from taskembed.checkpoint import file_sha256  # one file-hash helper for checkpoints and shard manifests
from taskembed.errors import UserError, on_command_line, option, raise_write_error
from taskembed.modeling import (HEAD_READS, PACKAGED_MODELS, head_reads, head_vector, model_token_limit, native_bf16, pick_device, pool,
                                 process_device, quiet_transformers, read_folder_json, read_training_config, top_layer_reads_head)
from taskembed.onednn import onednn_linear
from taskembed.progress import progress_bar

POOLINGS = ("head", "cls", "mean", "max")
# Default token budget per batch. On a CPU, batches whose activations outgrow the caches cost more per
# token: all-MiniLM-L6-v2 on the 2-core dev machine embeds ~310 texts/s at 512 to 2048 tokens a batch and
# ~230 at 8192 (docs/embeddings.md). A GPU wants the big batches.
BATCH_TOKENS = {"cpu": 2048, "cuda": 8192}
DTYPES = ("float32", "float16")
OUTPUT_SUFFIXES = (".parquet", ".npy")
# The Parquet output's own columns, and the fields a search hit adds (rank, score). A column of the data kept under one
# of these names (--keep id) is written as data_<name>: the output's id is the row number, which sharding and the
# manifest count on, and a data's "score" column (a rating, say) must not hide the hit's.
OWN_COLUMNS = ("id", "text", "label", "split", "vector", "rank", "score")

# Activation names of transformers' ACT2FN that have an exact torch.nn module, for the export's Dense layer.
_TORCH_ACTIVATIONS = {
    "tanh": "torch.nn.modules.activation.Tanh",
    "gelu": "torch.nn.modules.activation.GELU",
    "relu": "torch.nn.modules.activation.ReLU",
}


# --- the model and its options -------------------------------------------------------------------


def fingerprint(folder: str | Path) -> dict[str, Any] | None:
    """sha256 of each safetensors weights file of a local folder, and one over all of them."""
    path = Path(folder)
    if not path.is_dir():
        return None
    files = {}
    for f in sorted(path.glob("*.safetensors")):
        files[f.name] = file_sha256(f)
    if not files:
        return None
    total = hashlib.sha256("".join(f"{k}:{v}\n" for k, v in files.items()).encode()).hexdigest()
    return {"sha256": total, "files": files}


def _default_max_length(path: Path | None, tokenizer, config) -> int:
    """What the model was trained or published with: taskembed's data.max_length, a sentence-transformers
    max_seq_length, else the tokenizer's limit (capped at 512 and the position table)."""
    if path is not None:
        n = read_training_config(path).get("data", {}).get("max_length")
        if n:
            return int(n)
        sb = path / "sentence_bert_config.json"
        if sb.is_file():
            n = read_folder_json(sb).get("max_seq_length")
            if n:
                return int(n)
    limit = min(int(getattr(tokenizer, "model_max_length", 512) or 512), 512)
    positions = getattr(config, "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        limit = min(limit, positions)
    return limit


def _check_pooling_name(pooling: str | None) -> None:
    if pooling not in (None, "auto", *POOLINGS):
        close = difflib.get_close_matches(str(pooling), POOLINGS, n=1, cutoff=0.4)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise UserError(f"unknown pooling '{pooling}'; {hint}use one of {', '.join(POOLINGS)} (or auto)")


def sentence_transformers_modules(folder: Path) -> dict[str, str] | None:
    """A sentence-transformers folder's modules (their kind, such as Pooling or Normalize, to their sub-folder) from its
    modules.json; None for other folders."""
    modules_file = folder / "modules.json"
    if not modules_file.is_file():
        return None
    try:
        modules = json.loads(modules_file.read_text(encoding="utf-8"))
        return {m["type"].rsplit(".", 1)[-1]: m.get("path", "") for m in modules}
    except (ValueError, TypeError, KeyError, AttributeError):
        raise UserError(f"{modules_file}: not the module list sentence-transformers writes; copy the folder again") from None


def sentence_transformers_pooling(folder: Path, name: str) -> str | None:
    """The pooling a sentence-transformers folder names (modules.json and its Pooling module's config), as embed's
    default for it: None for other folders. A folder whose vectors embed would not reproduce is refused, for the
    default would silently differ from `SentenceTransformer(folder).encode`: a Dense layer after the pooling (what
    `taskembed export` writes for a BERT classifier's pooler), or a pooling other than cls, mean or max. A Normalize
    module sets embed's default `normalize` instead (Embedder.load)."""
    kinds = sentence_transformers_modules(folder)
    if kinds is None:
        return None
    other = [kind for kind in kinds if kind not in ("Transformer", "Pooling", "Normalize")]
    modes: list[str] = []
    if not other and "Pooling" in kinds:
        try:
            pool_config = json.loads((folder / kinds["Pooling"] / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise UserError(f"{folder}: its Pooling module's config.json is missing or not JSON; copy the folder again") from None
        given = pool_config.get("pooling_mode")  # sentence-transformers 5 and later
        modes = [given] if isinstance(given, str) else [m for m in ("cls", "mean", "max", "mean_sqrt_len", "weightedmean", "lasttoken")
                                                        if pool_config.get(f"pooling_mode_{m}_token" if m in ("cls", "lasttoken") else f"pooling_mode_{m}_tokens")]
    if other or len(modes) != 1 or modes[0] not in ("cls", "mean", "max"):
        what = f"a {', '.join(other)} module" if other else f"pooling {' + '.join(map(str, modes)) or 'none'}"
        raise UserError(f"{name}: a sentence-transformers folder with {what}, which taskembed does not reproduce, so its vectors "
                        "would differ from SentenceTransformer's: name one of taskembed's poolings (embed's --pooling, compare's "
                        "--base-pooling or --tuned-pooling), use the model folder it was exported from, or encode with sentence_transformers")
    return modes[0]


def _is_classifier(model) -> bool:
    return type(model).__name__.endswith("ForSequenceClassification")


class Embedder:
    """A loaded encoder plus the options that turn its hidden states into one vector per text.

    Build it with `Embedder.load(model_or_folder, **options)` or, for a model already in memory
    (the training loop's), `Embedder.from_model(model, tokenizer, **options)`.
    """

    def __init__(self, model, tokenizer, *, name: str, path: str | Path | None = None, pooling: str | None = None,
                 layer: int | None = -1, mean_last: int | None = None, normalize: bool | None = False, dtype: str | None = "float32",
                 max_length: int | None = None, batch_tokens: int | None = None, device: str | torch.device | None = None,
                 bf16: bool = False):
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.path = Path(path) if path is not None else None
        self.checked_weights: dict[str, Any] | None = None  # search's fingerprint of the weights at `path`, made once
        self.is_classifier = _is_classifier(model)
        self.encoder = model.base_model if self.is_classifier else model
        self.config = model.config
        self.model_type = getattr(self.config, "model_type", None)
        self.num_layers = int(getattr(self.config, "num_hidden_layers", 0) or 0)
        self.pooling = self._check_pooling(pooling)
        self.layer, self.mean_last = self._check_layers(-1 if layer is None else layer, mean_last)
        dtype = dtype or "float32"
        if dtype not in DTYPES:
            raise UserError(f"dtype '{dtype}' is not supported; use one of {', '.join(DTYPES)}")
        self.dtype = dtype
        self.normalize = bool(normalize)
        self.max_length = _default_max_length(self.path, tokenizer, self.config) if max_length is None else int(max_length)
        if self.max_length < 2:
            raise UserError(f"max_length {self.max_length} is too small; it must leave room for the special tokens")
        limit = model_token_limit(self.config, tokenizer)
        if max_length is not None and limit is not None and self.max_length > limit:
            # Longer inputs would fail deep inside the position lookup, or be written into an export that cannot read them.
            raise UserError(f"max_length {self.max_length} is more than {name} can read ({limit} tokens); give {limit} or less")
        if device is not None:
            self.device = pick_device(device)
            self.model.to(self.device)
        else:
            self.device = next(model.parameters()).device
        if batch_tokens is None:
            batch_tokens = BATCH_TOKENS.get(self.device.type, BATCH_TOKENS["cpu"])
        if batch_tokens < 1:
            raise UserError(f"batch_tokens must be positive, got {batch_tokens}")
        self.batch_tokens = int(batch_tokens)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.bf16 = bool(bf16)
        if self.bf16 and not native_bf16(self.device):
            raise UserError(f"bf16 was asked for, but {self.device.type} here has no native bfloat16 matrix units, "
                            "so it would be slower than float32; drop it")
        self.dim: int | None = None

    # construction

    @classmethod
    @keeps_caller_state
    def load(cls, model_or_folder: str | Path, device: str | None = None, **options) -> "Embedder":
        """Load any encoder: a taskembed/classifier folder (keeps its head) or a plain encoder folder or id."""
        from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, AutoTokenizer

        from taskembed.modeling import check_tokenizer, hub_error, is_classifier_config, load_errors, refuse_missing, resolve_model

        check_options(options)
        _check_pooling_name(options.get("pooling"))  # before a model load, not after it
        device = pick_device(device)
        quiet_transformers()
        name = str(model_or_folder)
        path = resolve_model(name)
        local = Path(path).is_dir()
        # A folder the user names (or a packaged model): the same folder whether or not the Hub is reachable, which a
        # Hub id's cache is not (online, transformers reads the id itself).
        named = Path(name).expanduser().is_dir() or name in PACKAGED_MODELS
        if local and named and options.get("pooling") in (None, "auto"):
            options["pooling"] = sentence_transformers_pooling(Path(path), name) or options.get("pooling")
        if local and named and options.get("normalize") is None:
            # As SentenceTransformer(folder).encode does: a folder whose modules end in Normalize gives unit vectors.
            options["normalize"] = "Normalize" in (sentence_transformers_modules(Path(path)) or {})
        try:
            # Never a folder's own code (trust_remote_code=False, not None, which asks on the terminal: modeling.load_trained).
            config = AutoConfig.from_pretrained(path, trust_remote_code=False)
            loader = AutoModelForSequenceClassification if is_classifier_config(config) else AutoModel
            model, info = loader.from_pretrained(path, config=config, dtype=torch.float32, use_safetensors=True, output_loading_info=True,
                                                 trust_remote_code=False)
            tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
        except load_errors() as exc:
            raise hub_error(name, exc, trainable=False) from None
        # A plain encoder may lack a pooler (no pooling here reads it); a classifier's head, pooler included, must be whole.
        refuse_missing(name, info["missing_keys"], allowed=lambda key: loader is AutoModel and key.startswith("pooler."))
        check_tokenizer(tokenizer, config, name)
        model.eval()
        return cls(model, tokenizer, name=name, path=Path(path).resolve() if local else None, device=device, **options)

    @classmethod
    def from_model(cls, model, tokenizer, *, name: str = "in-memory model", path: str | Path | None = None, **options) -> "Embedder":
        """Wrap a model already in memory (nothing is copied or moved unless `device` is given)."""
        check_options(options)
        return cls(model, tokenizer, name=name, path=path, **options)

    def _check_pooling(self, pooling: str | None) -> str:
        if pooling in (None, "auto"):
            return "head" if self.is_classifier else "mean"
        _check_pooling_name(pooling)
        if pooling == "head":
            if not self.is_classifier:
                raise UserError(f"{self.name}: pooling 'head' needs a classifier folder, and this model has no classification head; "
                                "use cls, mean or max")
            if self.model_type not in HEAD_READS:
                raise UserError(
                    f"{self.name}: taskembed does not know which vector the {self.model_type} head reads "
                    f"(known: {', '.join(sorted(HEAD_READS))}); pass pooling cls, mean or max"
                )
        return pooling

    def _check_layers(self, layer: int, mean_last: int | None) -> tuple[int, int | None]:
        n = self.num_layers
        if isinstance(layer, bool) or not isinstance(layer, int):
            raise UserError(f"layer must be an integer index, got {layer!r}")
        if not -(n + 1) <= layer <= n:
            raise UserError(f"layer {layer} is out of range: {self.name} has {n} layers, "
                            f"so use 0 (embeddings) to {n}, or -1 (last) to -{n + 1}")
        layer = layer % (n + 1)  # one canonical index: 0..n
        if mean_last is not None:
            if isinstance(mean_last, bool) or not isinstance(mean_last, int) or not 1 <= mean_last <= n:
                raise UserError(f"mean_last {mean_last!r} is out of range: {self.name} has {n} layers, so use 1 to {n}")
            if layer != n:
                raise UserError("give either layer or mean_last, not both: mean_last already chooses the layers")
        if self.pooling == "head" and (layer != n or mean_last is not None):
            raise UserError("layer and mean_last apply to cls, mean and max pooling; the head reads the last layer only")
        return layer, mean_last

    # what the options mean

    @property
    def head_reads(self) -> str | None:
        """For pooling 'head': pooler, context_pooler, cls or mean (ModernBERT's classifier_pooling)."""
        if self.pooling != "head":
            return None
        return head_reads(self.config)

    def describe(self) -> dict[str, Any]:
        """What produced the vectors, for sidecars and reports; `options()` rebuilds the same Embedder."""
        detail = {
            "pooler": "BERT pooler output, tanh(dense(h_CLS)) of the last layer",
            "context_pooler": "DeBERTa ContextPooler output, act(dense(h_CLS)) of the last layer",
            "cls": "h_CLS of the last layer, which the head's own dense layer reads",
            "mean": "masked mean of the last layer, as classifier_pooling says",
        }
        if self.pooling == "head":
            what = detail[self.head_reads]
        else:
            if self.mean_last:
                layers = f"mean of the last {self.mean_last} layers"
            else:
                layers = {0: "the embedding output", self.num_layers: "the last layer"}.get(self.layer, f"layer {self.layer} of {self.num_layers}")
            kind = {"cls": "first-token vector", "mean": "masked mean over tokens", "max": "masked max over tokens"}[self.pooling]
            what = f"{kind} of {layers}"
        return {
            "model": {
                "name": self.name,
                "path": str(self.path) if self.path else None,
                "fingerprint": fingerprint(self.path) if self.path else None,
                "model_type": self.model_type,
                "architecture": type(self.model).__name__,
                "classifier": self.is_classifier,
                "num_layers": self.num_layers,
            },
            **self.options(),
            "pooling_detail": what,
            "dim": self.dim,
        }

    def options(self) -> dict[str, Any]:
        return {"pooling": self.pooling, "layer": self.layer, "mean_last": self.mean_last, "normalize": self.normalize,
                "dtype": self.dtype, "max_length": self.max_length, "bf16": self.bf16}

    # computing

    @property
    def first_row_only(self) -> bool:
        """Whether the vector needs the top layer's first row alone: the head's vector, or the last layer's [CLS]."""
        return self.mean_last is None and self.layer == self.num_layers and self.pooling in ("head", "cls")

    def _represent(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """One float vector per row of a padded batch (on the model's device)."""
        n = self.num_layers
        need_hidden = self.mean_last is not None or self.layer != n
        # The top layer's first row is computed alone where that is all the vector needs, as predict does, so the head
        # applied to these vectors gives predict's logits bit for bit.
        with top_layer_reads_head(self.model, self.first_row_only):
            out = self.encoder(**batch, output_hidden_states=need_hidden, return_dict=True)
        mask = batch["attention_mask"]
        if self.pooling == "head":
            try:
                return head_vector(self.model, self.head_reads, out, mask)
            except UserError as exc:
                raise UserError(f"{self.name}: {exc}") from None
        if self.mean_last is not None:
            # hidden_states[n] may differ from last_hidden_state (ModernBERT applies a final norm); the top layer is the output.
            stack = list(out.hidden_states[n - self.mean_last + 1 : n]) + [out.last_hidden_state]
            h = torch.stack(stack).mean(0)
        elif self.layer == n:
            h = out.last_hidden_state
        else:
            h = out.hidden_states[self.layer]
        return pool(h, mask, self.pooling)

    def _embed_encoded(self, enc, on_batch: Callable[[int], None] | None = None) -> np.ndarray:
        from taskembed.data import collate, eval_batches

        result: np.ndarray | None = None
        was_training = self.model.training
        self.model.eval()
        try:
            # bf16 (opt-in) autocasts the matmuls only: residual stream, norms and pooling stay float32.
            autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)
            with torch.inference_mode(), autocast, onednn_linear(self.model):
                for idx in eval_batches(enc.lengths, max_tokens=self.batch_tokens):
                    batch = collate(enc, idx, self.pad_id)
                    batch.pop("labels", None)
                    vec = self._represent({k: v.to(self.device) for k, v in batch.items()}).float()
                    if self.normalize:
                        vec = torch.nn.functional.normalize(vec, p=2, dim=-1)
                    if result is None:
                        self.dim = int(vec.shape[-1])
                        result = np.empty((len(enc), self.dim), dtype=self.dtype)
                    result[idx] = vec.cpu().numpy()
                    if on_batch:
                        on_batch(len(idx))
        finally:
            self.model.train(was_training)
        assert result is not None
        return result

    def encode_chunk(self, texts: Sequence[str], on_batch: Callable[[int], None] | None = None,
                     pairs: Sequence[str] | None = None) -> tuple[np.ndarray, int]:
        """Vectors for `texts` (each read with its second text from `pairs`, when given) in their order, and how many of
        them were truncated."""
        from taskembed.data import encode

        enc = encode(self.tokenizer, list(texts), list(pairs) if pairs is not None else None, max_length=self.max_length)
        return self._embed_encoded(enc, on_batch), enc.truncated

    def encode(self, texts: Sequence[str] | str, progress: bool = False, pairs: Sequence[str] | None = None) -> np.ndarray:
        """An (n, dim) array for n texts, in their order. `pairs`: a second text for each, read with it as a sentence-pair
        model reads its input (the tokenizer's pair encoding)."""
        if isinstance(texts, str):
            texts = [texts]
        if isinstance(pairs, str):  # one second text, for one text (not a list of its characters)
            pairs = [pairs]
        from taskembed.data import check_texts

        texts = check_texts(texts, "embed")
        if pairs is not None:
            pairs = check_texts(pairs, "embed", "second text")
            if len(pairs) != len(texts):
                raise UserError(f"{len(texts)} texts but {len(pairs)} second texts; give one second text per text")
        with _bar(len(texts), progress) as bar:
            vectors, _ = self.encode_chunk(texts, bar.update, pairs)
        return vectors


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _bar(total: int | None, progress: bool):
    if not progress:
        return _NoBar()
    return progress_bar(total, "embedding", "text")


OPTIONS = ("pooling", "layer", "mean_last", "normalize", "dtype", "max_length", "batch_tokens", "device", "bf16")
"""What an Embedder is built with, besides its model."""


def check_options(options: dict[str, Any]) -> None:
    """A misspelt option is named, with the one it most likely meant: it would otherwise end in a TypeError from deep inside."""
    for name in options:
        if name not in OPTIONS:
            close = difflib.get_close_matches(name, OPTIONS, n=1)
            raise UserError(f"unknown embedding option '{name}'" + (f"; did you mean '{close[0]}'?" if close else "")
                            + f" (options: {', '.join(OPTIONS)})")


def as_embedder(model_or_folder, options: dict[str, Any]) -> Embedder:
    """An Embedder for a path/id, a loaded Classifier, or an Embedder (whose options must not be overridden)."""
    from taskembed.predict import Classifier

    check_options(options)
    if isinstance(model_or_folder, Embedder):
        if options:
            raise UserError(f"{', '.join(options)}: options of an Embedder are set when it is built; build one with them "
                            "(Embedder.load(folder, pooling=...)) or give the folder")
        return model_or_folder
    if isinstance(model_or_folder, Classifier):
        clf = model_or_folder
        options.setdefault("max_length", clf.max_length)
        # The Classifier owns its model: moving it elsewhere would break its own predict (it keeps clf.device).
        try:
            asked = None if options.get("device") is None else torch.device(options["device"])
        except (RuntimeError, TypeError):
            asked = pick_device(options["device"])  # raises its one-line error for a name torch does not know
        if asked is not None and (asked.type, asked.index or 0) != (clf.device.type, clf.device.index or 0):
            raise UserError(f"device {options['device']}: this classifier is loaded on {clf.device}; "
                            f"load it there instead (taskembed.load(folder, device='{options['device']}'))")
        options["device"] = None
        return Embedder.from_model(clf.model, clf.tokenizer, name=str(clf.folder), path=clf.folder.resolve(), **options)
    return Embedder.load(model_or_folder, **options)


def embed(model_or_folder, texts: Sequence[str] | str, *, progress: bool = False, **options) -> np.ndarray:
    """Vectors for texts, shape (n, dim), in their order.

    model_or_folder: a taskembed output folder, any encoder folder or id, a `taskembed.load(...)`
    Classifier, or an Embedder. Options: pooling (auto|head|cls|mean|max), layer, mean_last,
    normalize, dtype (float32|float16), max_length, batch_tokens (default 2048 on CPU, 8192 on CUDA), device, bf16.
    """
    return as_embedder(model_or_folder, dict(options)).encode(texts, progress=progress)


# --- data sources, read in chunks ----------------------------------------------------------------


@dataclass
class TextSource:
    """Texts (and labels, if the data has them) from any input, countable up front and read in chunks."""

    description: dict[str, Any]
    count: int
    has_labels: bool
    has_splits: bool
    _chunks: Callable[[int], Iterator[dict[str, list]]]
    kept: dict[str, Any] = field(default_factory=dict)  # output name -> pyarrow type of each column kept with --keep

    def chunks(self, size: int) -> Iterator[dict[str, list]]:
        """Dicts of equal-length lists: id, text, and label / split / kept columns where the source has them (a kept
        column from a Parquet file comes as its Arrow array)."""
        return self._chunks(size)


def kept_name(column: str) -> str:
    """The output column a kept data column is written as."""
    return f"data_{column}" if column in OWN_COLUMNS else column


def keep_columns(keep: Sequence[str] | str | None) -> list[str]:
    """What `keep=` (and --keep) asks for, as a list of names: a string is read as the command line reads it, names
    separated by commas; a list holds names as they are."""
    if keep is None:
        return []
    if not (isinstance(keep, str) or (isinstance(keep, (list, tuple)) and all(isinstance(c, str) for c in keep))):
        raise UserError(f"keep={keep!r}: give a column name, a list of names, or 'all'")
    if isinstance(keep, str):
        names = [c.strip() for c in keep.split(",") if c.strip()]
        if not names:
            raise UserError("--keep: name the columns to keep, comma-separated (or all)")
        return names
    return list(keep)


def _keep_plan(where: str, available: Sequence[str], keep: Sequence[str] | None, already: Sequence[str]) -> dict[str, str]:
    """{data column: output column} for `keep` (column names, or ["all"]); `already` (the text and label columns) are
    in the output as text and label, so they are not copied a second time."""
    if not keep:
        return {}
    if "all" in keep and "all" not in available:
        # pandas writes a frame's index into Parquet as __index_level_0__: the frame's, not a column of the data.
        columns = [c for c in available if c not in already and not re.fullmatch(r"__index_level_\d+__", str(c))]
    else:
        missing = next((c for c in keep if c not in available), None)
        if missing is not None:
            raise UserError(f"{where}: no column '{missing}' to keep ({option('--keep')}); it has {', '.join(map(str, available))}")
        columns = [c for c in dict.fromkeys(keep) if c not in already]
    plan = {c: kept_name(c) for c in columns}
    taken: dict[str, str] = {}
    for column, name in plan.items():
        if name in taken:
            raise UserError(f"{where}: columns '{taken[name]}' and '{column}' would both be written as '{name}' (a kept "
                            f"{', '.join(OWN_COLUMNS)} column is written as data_<name>); keep one of them"
                            + (", naming the columns to keep instead of all" if "all" in keep else ""))
        taken[name] = column
    return plan


def _arrow_type(values: Any, where: str, column: str):
    """The pyarrow type of a kept column, from all its values: every chunk is then written with that type (a chunk of
    nulls alone would otherwise fix a type the next chunk contradicts). Checked against Parquet here, before the
    model loads, rather than by the first write."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from taskembed.data import is_null

    try:
        kind = pa.array(values, from_pandas=True).type
    except OverflowError:
        raise UserError(f"{where}: column '{column}' holds whole numbers too large for 64 bits; store them as text to keep "
                        "them with --keep") from None
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        kinds = sorted({type(v).__name__ for v in values if not is_null(v)})
        what = (f"mixes kinds of values ({', '.join(kinds)})" if len(kinds) > 1 else
                f"holds {kinds[0] if kinds else 'values'} values whose items mix kinds (numbers and text, say)")
        raise UserError(f"{where}: column '{column}' {what}; make them one kind (all text, say) to keep it with --keep") from None
    try:
        pq.write_table(pa.table({column: pa.array([], kind)}), pa.BufferOutputStream())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise UserError(f"{where}: column '{column}' holds values Parquet cannot store ({kind}: empty objects, say); leave it "
                        "out of --keep") from None
    return kind


def _check_column(texts: list, where: str, column: str, first_row: int) -> None:
    from taskembed.data import is_null

    for i, t in enumerate(texts, start=first_row):
        if is_null(t) or not isinstance(t, str) or not t.strip():
            raise UserError(f"{where}: row {i}: column '{column}' is empty or not text; fill it or drop the row")


def _label_list(values: list) -> list[str | None]:
    from taskembed.data import is_null, label_str

    return [None if is_null(v) else label_str(v).strip() for v in values]


def _frames_kept(frames: list[tuple[str | None, Any]], where: str, keep: Sequence[str] | None,
                 already: list[str]) -> tuple[dict[str, str], dict[str, Any], list[str]]:
    """--keep over a source's splits: {data column: output column}, the output columns' Arrow types, and the columns
    `--keep all` left out because some split lacks them. A column named outright must be in every split."""
    import pandas as pd

    in_all = [c for c in frames[0][1].columns if all(c in df.columns for _, df in frames[1:])]
    lacking = next(((split, df) for split, df in frames for c in (keep or []) if c != "all" and c not in df.columns), None)
    if lacking is not None and len(frames) > 1:  # say which split lacks it, and what that split has
        split, df = lacking
        _keep_plan(f"{where} [{split}]", list(df.columns), keep, [])
    plan = _keep_plan(where, in_all, keep, already)
    partial = list(dict.fromkeys(c for _, df in frames for c in df.columns if c not in in_all)) if keep and "all" in keep else []
    kept = {name: _arrow_type(pd.concat([df[column] for _, df in frames], ignore_index=True), where, column)
            for column, name in plan.items()}
    return plan, kept, partial


def _frames_source(frames: list[tuple[str | None, Any]], where: str, text_column: str, label_column: str | None,
                   desc: dict[str, Any], text_columns: Sequence[str] | None = None, keep: Sequence[str] | None = None) -> TextSource:
    """`text_columns`: the columns a model trained on joined texts reads, joined the same way (data.joined_texts).
    `keep`: columns copied beside the vectors (_keep_plan)."""
    from taskembed.data import check_joined_columns, joined_texts, label_values, missing_column, rows_counted

    for split, df in frames:
        at = f"{where} [{split}]" if split else where
        if text_columns:
            check_joined_columns(at, list(df.columns), text_columns)
        elif text_column not in df.columns:
            raise missing_column(at, text_column, list(df.columns), "--text-column", df, [label_column] if label_column else [])
    has_labels = bool(label_column) and all(label_column in df.columns for _, df in frames)
    has_splits = any(split for split, _ in frames)
    count = sum(len(df) for _, df in frames)
    # Every text read and checked before the model loads (an empty cell at row 900,000 would end an hour's run), once:
    # the chunks slice these lists.
    texts_of: list[list[str]] = []
    for split, df in frames:
        at = rows_counted(f"{where} [{split}]" if split else where, df)
        if text_columns:
            texts_of.append(joined_texts(df, text_columns, at, 1))
        else:
            texts_of.append(df[text_column].tolist())
            _check_column(texts_of[-1], at, text_column, 1)
    plan, kept, partial = _frames_kept(frames, where, keep, list(text_columns or [text_column]) + ([label_column] if has_labels else []))

    def chunks(size: int) -> Iterator[dict[str, list]]:
        next_id = 0
        for (split, df), split_texts in zip(frames, texts_of):
            for start in range(0, len(df), size):
                part = df.iloc[start : start + size]
                texts = split_texts[start : start + size]
                out: dict[str, list] = {"id": list(range(next_id, next_id + len(texts))), "text": texts}
                if has_labels:
                    out["label"] = _label_list(label_values(part[label_column]))
                if has_splits:
                    out["split"] = [split] * len(texts)
                for column, name in plan.items():
                    out[name] = part[column].tolist()
                next_id += len(texts)
                yield out

    desc = {**desc, "text_column": None if text_columns else text_column, **({"text_columns": list(text_columns)} if text_columns else {}),
            "label_column": label_column if has_labels else None, "own_id_column": any("id" in df.columns for _, df in frames),
            **({"label_column_absent": label_column} if label_column and not has_labels else {}),
            **({"kept_columns": plan} if plan else {}),
            **({"not_in_every_split": partial} if partial else {}),  # what --keep all left out
            "empty_rows_skipped": sum(df.attrs.get("empty_rows", 0) for _, df in frames)}
    return TextSource(desc, count, has_labels, has_splits, chunks, kept)


def check_source(data: Any) -> None:
    """DATA of embed_file, compare_data and open_texts names data on disk or built in: str() of a DataFrame would be
    looked up as a file name."""
    if not isinstance(data, (str, Path)):
        raise UserError(f"data: give a file, a save_to_disk folder or a built-in dataset name, not {type(data).__name__}; for texts "
                        "already in Python use taskembed.embed.embed(model, df['text']) or compare(base, tuned, texts, labels)")


def open_texts(data: str | Path, text_column: str = "text", label_column: str | None = "label", split: str | None = None,
               text_columns: Sequence[str] | None = None, keep: Sequence[str] | None = None) -> TextSource:
    """Any input the trainer accepts (table file, save_to_disk folder, built-in name) or a .txt file, one text per line.

    A multi-split source gives all its splits (train, validation, test) unless `split` picks one.
    A label column is optional: absent, the vectors simply carry no label. `keep` names other columns to carry
    along (["all"]: every one), written under their own names, or data_<name> for one of OWN_COLUMNS.
    """
    from taskembed.data import FILE_SUFFIXES, SPLIT_ALIASES, SPLITS, iter_text_lines, load_raw, missing_file, names_a_path, read_table

    check_source(data)
    data = str(data)
    p = Path(data).expanduser()
    desc: dict[str, Any] = {"data": data}
    if p.is_file() and p.suffix.lower() not in FILE_SUFFIXES:
        if split:
            raise UserError(f"--split {split}: {p} is a plain text file, which has no splits")
        count = lines_in_file = 0
        for n, _ in iter_text_lines(p):
            count, lines_in_file = count + 1, n + 1
        if count == 0:
            raise UserError(f"{p}: no text lines; one text per line")
        if keep:
            raise UserError(f"--keep {','.join(keep)}: {p} is a plain text file, one text per line, with no columns to keep; drop --keep")
        # Ids stay 0..count-1 (the .npy row, and what sharding counts on); blank lines before the last text shift
        # them from the line numbers, which the sidecar and the command's output say.
        blank = lines_in_file - count

        def lines(size: int) -> Iterator[dict[str, list]]:
            buf: list[str] = []
            next_id = 0
            for _, line in iter_text_lines(p):
                buf.append(line)
                if len(buf) == size:
                    yield {"id": list(range(next_id, next_id + size)), "text": buf}
                    next_id, buf = next_id + size, []
            if buf:
                yield {"id": list(range(next_id, next_id + len(buf))), "text": buf}

        return TextSource({**desc, "format": "lines", "text_column": None, "label_column": None, "blank_lines_skipped": blank},
                          count, False, False, lines)
    if p.is_file() and p.suffix.lower() == ".parquet":
        if split:
            raise UserError(f"--split {split}: {p} is a single file, which has no splits")
        return _parquet_source(p, text_column, label_column, desc, text_columns, keep)
    if p.is_file():
        if split:
            raise UserError(f"--split {split}: {p} is a single file, which has no splits")
        desc = {**desc, "format": p.suffix.lower()[1:]}
        return _frames_source([(None, read_table(p))], str(p), text_column, label_column, desc, text_columns, keep)
    if not p.exists() and names_a_path(data, FILE_SUFFIXES | {".txt"}):
        raise missing_file(data)
    from taskembed.config import DataConfig

    raw, origin = load_raw(DataConfig(source=data, text_column=text_column, label_column=label_column or "label"), training=False)
    order = [s for s in SPLITS if s in raw] + [s for s in raw if s not in SPLITS]
    if split:
        split = SPLIT_ALIASES.get(split, split)  # a dataset's "dev" is read as validation
        if split not in raw:
            raise UserError(f"{data}: has no '{split}' split (it has {', '.join(order)}); pick one with --split")
        order = [split]
    frames = [(s, raw[s].reset_index(drop=True)) for s in order]
    return _frames_source(frames, data, text_column, label_column, {**desc, "format": "splits", "splits": order}, text_columns, keep)


def _parquet_source(p: Path, text_column: str, label_column: str | None, desc: dict[str, Any],
                    text_columns: Sequence[str] | None = None, keep: Sequence[str] | None = None) -> TextSource:
    import pandas as pd
    import pyarrow.parquet as pq

    from taskembed.data import check_joined_columns, check_unique_columns, joined_texts, label_values, missing_column

    try:
        pf = pq.ParquetFile(p)
    except Exception as exc:  # pyarrow raises several unrelated types for a corrupt file
        raise UserError(f"{p}: not a readable Parquet file ({type(exc).__name__}); re-export it") from None
    names = pf.schema_arrow.names
    check_unique_columns(p, names)
    if text_columns:
        check_joined_columns(str(p), names, text_columns)
    elif text_column not in names:
        raise missing_column(str(p), text_column, names, "--text-column")
    has_labels = bool(label_column) and label_column in names
    count = pf.metadata.num_rows
    if count == 0:
        raise UserError(f"{p}: no rows; nothing to embed")
    columns = list(text_columns or [text_column]) + ([label_column] if has_labels else [])
    plan = _keep_plan(str(p), names, keep, columns)
    kept = {name: pf.schema_arrow.field(column).type for column, name in plan.items()}  # the file's own types
    columns += [c for c in plan if c not in columns]

    def texts_of(batch, first_row: int) -> list[str]:
        if text_columns:
            return joined_texts(pd.DataFrame({c: batch.column(c).to_pylist() for c in text_columns}), text_columns, str(p), first_row)
        texts = batch.column(text_column).to_pylist()
        _check_column(texts, str(p), text_column, first_row)
        return texts

    # Every text checked before the model loads (reading the text column once more): an empty cell at row 900,000
    # would otherwise end an hour's run.
    checked = 0
    for batch in pf.iter_batches(batch_size=65_536, columns=list(text_columns or [text_column])):
        texts_of(batch, checked + 1)
        checked += batch.num_rows

    def chunks(size: int) -> Iterator[dict[str, list]]:
        next_id = 0
        for batch in pq.ParquetFile(p).iter_batches(batch_size=size, columns=columns):
            texts = texts_of(batch, next_id + 1)
            out: dict[str, list] = {"id": list(range(next_id, next_id + len(texts))), "text": texts}
            if has_labels:
                out["label"] = _label_list(label_values(batch.column(label_column).to_pandas()))
            for column, name in plan.items():
                out[name] = batch.column(column)  # as Arrow holds it: Python values would drop nanoseconds, and NaN
            next_id += len(texts)
            yield out

    desc = {**desc, "format": "parquet", "text_column": None if text_columns else text_column,
            **({"text_columns": list(text_columns)} if text_columns else {}), "label_column": label_column if has_labels else None,
            "own_id_column": "id" in names, **({"label_column_absent": label_column} if label_column and not has_labels else {}),
            **({"kept_columns": plan} if plan else {})}
    return TextSource(desc, count, has_labels, False, chunks, kept)


# --- writing vectors -----------------------------------------------------------------------------


def sidecar_path(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".json")


class _ParquetSink:
    def __init__(self, tmp: Path, kept: dict[str, Any] | None = None):
        self.tmp, self.writer, self.kept = tmp, None, kept or {}

    def write(self, chunk: dict[str, list], vectors: np.ndarray) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        n, dim = vectors.shape
        flat = pa.array(vectors.reshape(-1), type=pa.float16() if vectors.dtype == np.float16 else pa.float32())
        cols = {"id": pa.array(chunk["id"], pa.int64()), "text": pa.array(chunk["text"], pa.string())}
        for key in ("label", "split"):
            if key in chunk:
                cols[key] = pa.array(chunk[key], pa.string())
        for name, kind in self.kept.items():
            values = chunk[name]  # an Arrow array from a Parquet source; else a list, where NaN, None and pandas' NA become null
            cols[name] = values if isinstance(values, pa.Array) else pa.array(values, kind, from_pandas=True)
        cols["vector"] = pa.FixedSizeListArray.from_arrays(flat, dim)
        table = pa.table(cols)
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.tmp, table.schema)
        self.writer.write_table(table)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class _NpySink:
    """A .npy written front to back with plain writes: the header for the final shape first, then each chunk's rows.

    Not a memmap: the pages of a memory-mapped output stay in the process's resident set as they are written,
    so RSS would grow with the corpus (1.5 GB for a million 384-d float32 vectors); plain writes leave them
    to the page cache.
    """

    def __init__(self, tmp: Path, count: int):
        self.tmp, self.count, self.fh, self.row = tmp, count, None, 0

    def write(self, chunk: dict[str, list], vectors: np.ndarray) -> None:
        if self.fh is None:
            self.fh = self.tmp.open("wb")
            header = {"descr": np.lib.format.dtype_to_descr(vectors.dtype), "fortran_order": False, "shape": (self.count, vectors.shape[1])}
            np.lib.format.write_array_header_1_0(self.fh, header)
        if self.row + len(vectors) > self.count:
            raise RuntimeError(f"more rows than the {self.count} counted")
        self.fh.write(np.ascontiguousarray(vectors).tobytes())
        self.row += len(vectors)

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()
            self.fh = None


def _trained_data(model_or_folder) -> dict[str, Any]:
    """The data section of the config a taskembed folder (or loaded Classifier) was trained with; {} for anything else."""
    from taskembed.predict import Classifier

    if isinstance(model_or_folder, Classifier):
        return model_or_folder.training_config.get("data") or {}
    if isinstance(model_or_folder, (str, Path)):
        return read_training_config(Path(model_or_folder).expanduser()).get("data") or {}
    return {}


def trained_columns(model_or_folder, text_column: str | None = None,
                    label_column: str | None = None) -> tuple[str, str, list[str] | None]:
    """The data's columns: as given, else those a taskembed folder was trained on (as predict and evaluate read them),
    else text and label; and the columns it joined into its text (data.text_columns), unless a text column is given."""
    trained = _trained_data(model_or_folder)
    return (text_column or trained.get("text_column") or "text", label_column or trained.get("label_column") or "label",
            None if text_column is not None else trained.get("text_columns"))


def embed_file(model_or_folder, data: str | Path, out: str | Path, *, text_column: str | None = None, label_column: str | None = None,
               split: str | None = None, chunk_size: int = 10_000, progress: bool = True, label_required: bool = False,
               keep: Sequence[str] | str | None = None, **options) -> dict[str, Any]:
    """Embed every text of DATA into OUT (.parquet: id, text, [label], [split], [kept columns], vector; .npy: the matrix),
    streaming.

    `keep`: other columns of DATA copied beside each vector (a name, a list of names, or "all"), so that a search hit
    leads back to its document (its own id, title, url); one named id, text, label, split or vector is written as
    data_<name>, since the output's id is the row number.

    Returns the sidecar (also written to `<out>.json`). Under torchrun or `accelerate launch` (WORLD_SIZE > 1)
    each process embeds the rows whose id i has i % world_size == rank into `<stem>.shard-R-of-W<suffix>`
    (with its own sidecar), and the returned dict is the manifest `<stem>.manifest.json` that lists them all;
    `load_vectors(manifest)` merges them back in id order. `label_required`: a data without `label_column` is an error
    (the column was asked for by name) rather than vectors without labels. The columns default to those the model was
    trained on (`trained_columns`); a data without the label column gives vectors without labels.
    """
    started = time.perf_counter()
    text_column, label_column, text_columns = trained_columns(model_or_folder, text_column, label_column)
    out = Path(out)
    fmt = out.suffix.lower()
    if fmt not in OUTPUT_SUFFIXES:  # the command's --out is this function's `out`: both are named
        raise UserError(f"{option('--out', str(out))}: use a .parquet or .npy file name")
    if out.is_dir():
        raise UserError(f"{option('--out', str(out))} is a folder; give a file name ending in .parquet or .npy")
    from taskembed.artifacts import check_not_input, check_writable

    check_writable(out, "--out")
    check_source(data)
    check_not_input(out, data)
    if chunk_size < 1:
        raise UserError(f"chunk_size must be positive, got {chunk_size}")
    keep = keep_columns(keep)
    if keep and fmt != ".parquet":
        raise UserError(f"{option('--keep', ','.join(map(str, keep)))}: a .npy file holds the vectors alone; write a .parquet "
                        "file to keep columns beside them")
    rank, world = _world()
    source = open_texts(data, text_column, label_column, split, text_columns, keep)
    if source.count == 0:
        raise UserError(f"{data}: no texts to embed")
    if label_required and label_column and not source.has_labels:
        raise UserError(f"{data}: no label column '{label_column}' (asked for with --label-column); check the name, or leave the "
                        "option out for vectors without labels")
    options = dict(options)
    if world > 1:  # one device per process, as the launcher means, and chosen as training chooses its own
        options["device"] = process_device(options.get("device"), "device")
    embedder = as_embedder(model_or_folder, options)
    made = [p for p in (out.parent, *out.parent.parents) if not p.exists()]  # deepest first
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        if world == 1:
            return _embed_to(embedder, source, source.chunks(chunk_size), source.count, out, fmt, started, progress)
        return _embed_sharded(embedder, source, chunk_size, out, fmt, rank, world, started, progress)
    except BaseException:
        for folder in made:  # a failed run leaves nothing behind, the folders it made for --out included
            try:
                folder.rmdir()
            except OSError:
                break  # not empty (another rank's shard, say): kept
        raise


def _embed_to(embedder: Embedder, source: TextSource, chunks: Iterator[dict[str, list]], count: int, out: Path, fmt: str,
              started: float, progress: bool, shard: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write `count` rows from `chunks` to OUT through `<out>.partial`, then its sidecar; the sidecar."""
    from taskembed import artifacts

    tmp = out.with_name(out.name + ".partial")
    sink = _ParquetSink(tmp, source.kept) if fmt == ".parquet" else _NpySink(tmp, count)
    written = truncated = 0
    try:
        with _bar(count, progress) as bar:
            for chunk in chunks:
                vectors, cut = embedder.encode_chunk(chunk["text"], bar.update)
                sink.write(chunk, vectors)
                written += len(vectors)
                truncated += cut
        sink.close()
        if written != count:
            raise RuntimeError(f"counted {count} texts but embedded {written}")
        info = {
            "file": out.name,
            "format": fmt[1:],
            "count": written,
            "truncated": truncated,
            **embedder.describe(),
            "columns": (["id", "text"] + (["label"] if source.has_labels else []) + (["split"] if source.has_splits else [])
                        + list(source.kept) + ["vector"])
            if fmt == ".parquet" else None,
            "source": source.description,
            **({"shard": shard} if shard else {}),
            "seconds": round(time.perf_counter() - started, 3),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "versions": {**artifacts.versions(), **_more_versions()},
        }
        # Everything is ready before the old files go. The old sidecar goes first: should a rename fail, vectors are
        # left without a sidecar (which search refuses), never described by another run's sidecar.
        side = sidecar_path(out)
        side_tmp = side.with_name(side.name + ".partial")
        artifacts.write_json(side_tmp, info)
        side.unlink(missing_ok=True)
        os.replace(tmp, out)
        os.replace(side_tmp, side)
    except BaseException as exc:
        sink.close()
        tmp.unlink(missing_ok=True)
        sidecar_path(out).with_name(sidecar_path(out).name + ".partial").unlink(missing_ok=True)
        raise_write_error(exc, out, out)  # the .partial files' names start with out's
    return info


# --- sharded runs (torchrun / accelerate launch) -------------------------------------------------

MANIFEST_KIND = "taskembed-embedding-shards"
SHARD_RULE = "row id i is in shard i % world_size; ids increase within a shard"
# Fields of a shard's sidecar that belong to that shard; everything else is the same on every rank.
_PER_SHARD = ("file", "count", "truncated", "seconds", "created", "shard")


def _world() -> tuple[int, int]:
    """(rank, world size) as torchrun and `accelerate launch` set them in the environment; (0, 1) for a plain run."""
    try:
        world = int(os.environ.get("WORLD_SIZE") or 1)
        rank = int(os.environ.get("RANK") or 0)
    except ValueError:
        raise UserError("RANK and WORLD_SIZE must be integers (they are set by torchrun or accelerate launch)") from None
    if world < 1 or not 0 <= rank < world:
        raise UserError(f"RANK {rank} and WORLD_SIZE {world} are inconsistent; start sharded runs with torchrun or accelerate launch")
    return rank, world


def shard_path(out: str | Path, rank: int, world: int) -> Path:
    """Where rank R of W writes its part of OUT: `<stem>.shard-R-of-W<suffix>` next to it."""
    out = Path(out)
    return out.with_name(f"{out.stem}.shard-{rank}-of-{world}{out.suffix}")


def manifest_path(out: str | Path) -> Path:
    """The manifest of a sharded run that was asked for OUT: `<stem>.manifest.json` next to it."""
    out = Path(out)
    return out.with_name(f"{out.stem}.manifest.json")


class _Ranks:
    """The processes of a sharded run, for two things only: a barrier and gathering each shard's summary.

    It joins the launcher's process group if the calling script already made one, else makes a gloo group
    (CPU collectives, whatever device the model runs on) and tears it down afterwards. If one process dies,
    torchrun / accelerate stop the others, so a long timeout cannot leave them waiting.
    """

    def __init__(self):
        import datetime

        import torch.distributed as dist

        self.dist = dist
        self.owned = not dist.is_initialized()
        if self.owned:
            dist.init_process_group("gloo", timeout=datetime.timedelta(hours=24))  # the slowest shard decides when all meet

    def barrier(self) -> None:
        self.dist.barrier()

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's obj, sent as JSON: all_gather_object would pickle it, and unpickle what the others send."""
        world = self.dist.get_world_size()
        device = torch.device("cuda", torch.cuda.current_device()) if self.dist.get_backend() == "nccl" else torch.device("cpu")
        data = torch.tensor(list(json.dumps(obj).encode("utf-8")), dtype=torch.uint8, device=device)
        sizes = [torch.zeros(1, dtype=torch.long, device=device) for _ in range(world)]
        self.dist.all_gather(sizes, torch.tensor([len(data)], device=device))
        longest = max(int(n) for n in sizes)
        pieces = [torch.empty(longest, dtype=torch.uint8, device=device) for _ in range(world)]
        self.dist.all_gather(pieces, torch.cat([data, data.new_zeros(longest - len(data))]))
        return [json.loads(piece[:int(n)].cpu().numpy().tobytes()) for piece, n in zip(pieces, sizes)]

    def close(self) -> None:
        if self.owned and self.dist.is_initialized():
            self.dist.destroy_process_group()


def _strided(chunks: Iterator[dict[str, list]], rank: int, world: int) -> Iterator[dict[str, list]]:
    """This rank's rows (id % world == rank) of each chunk; every rank still reads (and checks) all rows."""
    for chunk in chunks:
        keep = [j for j, i in enumerate(chunk["id"]) if i % world == rank]
        if keep:
            yield {k: v.take(keep) if hasattr(v, "take") else [v[j] for j in keep] for k, v in chunk.items()}  # lists, or Arrow arrays


def _embed_sharded(embedder: Embedder, source: TextSource, chunk_size: int, out: Path, fmt: str, rank: int, world: int,
                   started: float, progress: bool) -> dict[str, Any]:
    from taskembed import artifacts

    ranks = _Ranks()
    try:
        manifest = manifest_path(out)
        if rank == 0:
            manifest.unlink(missing_ok=True)  # a manifest must never list shards of this run next to those of an older one
        ranks.barrier()
        count = len(range(rank, source.count, world))
        path = shard_path(out, rank, world)
        summary: dict[str, Any] = {"rank": rank, "file": None, "sidecar": None, "count": 0, "truncated": 0, "bytes": 0, "sha256": None,
                                   "seconds": 0.0}
        shared = None
        if count:  # with fewer texts than processes, the last ranks have nothing to write
            shard = {"rank": rank, "world_size": world, "rule": SHARD_RULE, "manifest": manifest.name}
            # Each rank reads `world` times more rows than it keeps, so it embeds about chunk_size texts at a time.
            info = _embed_to(embedder, source, _strided(source.chunks(chunk_size * world), rank, world), count, path, fmt, started,
                             progress and rank == 0, shard=shard)
            summary.update(file=path.name, sidecar=sidecar_path(path).name, count=info["count"], truncated=info["truncated"],
                           bytes=path.stat().st_size, sha256=file_sha256(path), seconds=info["seconds"])
            shared = {k: v for k, v in info.items() if k not in _PER_SHARD}
        gathered = ranks.gather({"summary": summary, "shared": shared})
        shards = [g["summary"] for g in gathered]
        common = next(g["shared"] for g in gathered if g["shared"] is not None)
        result = {
            "kind": MANIFEST_KIND,
            "file": out.name,
            **common,
            "count": sum(s["count"] for s in shards),
            "truncated": sum(s["truncated"] for s in shards),
            "sharding": {"world_size": world, "rule": SHARD_RULE},
            "shards": shards,
            "seconds": round(time.perf_counter() - started, 3),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        if result["count"] != source.count:
            raise RuntimeError(f"counted {source.count} texts but the shards hold {result['count']}")
        if rank == 0:
            tmp = manifest.with_name(manifest.name + ".partial")
            artifacts.write_json(tmp, result)
            os.replace(tmp, manifest)
        ranks.barrier()  # no rank returns (and no launcher reports success) before the manifest exists
        return result
    finally:
        ranks.close()


def read_manifest(manifest: str | Path, verify: bool = True) -> dict[str, Any]:
    """A sharded run's manifest, after checking that every shard it lists is there, complete and unchanged.

    verify=True also compares each shard's sha256 (reads every byte); sizes and presence are always checked.
    """
    path = Path(manifest)
    if not path.is_file():
        raise UserError(f"{path}: manifest not found; a sharded `taskembed embed` run writes it when every process has finished")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"{path}: not a JSON manifest") from None
    if not isinstance(info, dict) or info.get("kind") != MANIFEST_KIND:
        raise UserError(f"{path}: not a taskembed shard manifest")
    for s in info["shards"]:
        if not s["count"]:
            continue
        f = path.parent / s["file"]
        if not f.is_file():
            raise UserError(f"{path}: shard {s['file']} is missing; keep the shards next to their manifest or re-run the embedding")
        if f.stat().st_size != s["bytes"] or (verify and file_sha256(f) != s["sha256"]):
            raise UserError(f"{path}: shard {s['file']} changed since the manifest was written; re-run the embedding")
    return info


def _is_manifest(path: Path) -> bool:
    return path.name.endswith(".manifest.json")


def _shard_ids(shard: dict[str, Any], manifest: dict[str, Any]) -> np.ndarray:
    """Global ids of a shard's rows in file order (what a .npy shard, which has no id column, holds)."""
    return np.arange(shard["rank"], manifest["count"], manifest["sharding"]["world_size"], dtype=np.int64)


def _load_manifest_vectors(path: Path) -> tuple[np.ndarray, dict[str, list] | None]:
    info = read_manifest(path)
    n = info["count"]
    matrix: np.ndarray | None = None
    columns: dict[str, list] | None = None
    seen = np.zeros(n, dtype=np.int64)
    for s in info["shards"]:
        if not s["count"]:
            continue
        part, cols = load_vectors(path.parent / s["file"])
        ids = np.asarray(cols["id"], dtype=np.int64) if cols is not None else _shard_ids(s, info)
        if len(ids) != len(part) or len(part) != s["count"] or (len(ids) and (ids.min() < 0 or ids.max() >= n)):
            raise UserError(f"{path}: shard {s['file']} does not hold the rows the manifest says; re-run the embedding")
        if matrix is None:
            matrix = np.empty((n, part.shape[1]), dtype=part.dtype)
        matrix[ids] = part
        np.add.at(seen, ids, 1)
        if cols is not None:
            if columns is None:
                columns = {k: [None] * n for k in cols}
            for k, values in cols.items():
                column = columns[k]
                for i, v in zip(ids.tolist(), values):
                    column[i] = v
    if matrix is None or not (seen == 1).all():
        raise UserError(f"{path}: the shards do not cover every row exactly once; re-run the embedding")
    return matrix, columns


def _more_versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for pkg in ("pyarrow",):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


# --- reading vectors back, search ----------------------------------------------------------------


def read_sidecar(vectors: str | Path) -> dict[str, Any]:
    """What wrote a vectors file: its sidecar, or for a sharded run's manifest the manifest (which has the same fields)."""
    path = Path(vectors)
    if _is_manifest(path):
        return read_manifest(path, verify=False)
    if path.is_dir():
        raise UserError(f"{path}: is a folder; give the .parquet or .npy file `taskembed embed` wrote")
    if not path.is_file():
        if manifest_path(path).is_file():
            raise UserError(f"{path}: not found, but {manifest_path(path).name} is: it was written in shards; use the manifest")
        raise UserError(f"{path}: file not found; write it with `taskembed embed MODEL DATA --out {path.name}`")
    vectors_of = path.with_name(path.name[:-len(".json")]) if path.name.lower().endswith(".json") else None
    if vectors_of is not None and vectors_of.suffix.lower() in OUTPUT_SUFFIXES and vectors_of.is_file():
        raise UserError(f"{path}: is the sidecar of {vectors_of}; give the vectors file itself")
    if path.suffix.lower() not in OUTPUT_SUFFIXES:  # a data file given for the vectors: the sidecar is not what is wrong
        raise UserError(f"{path}: not a vectors file (`taskembed embed` writes .parquet or .npy); embed it first: "
                        f"`taskembed embed MODEL {path} --out {path.stem}.parquet`")
    side = sidecar_path(path)
    if not side.is_file():
        raise UserError(f"{path}: no sidecar {side.name}, so the model and options that made it are unknown; re-run `taskembed embed`")
    try:
        info = json.loads(side.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise UserError(f"{side}: not readable JSON ({str(exc)[:80]}); re-run `taskembed embed` to write the vectors and it again") from None
    if not isinstance(info, dict) or not isinstance(info.get("model"), dict):
        raise UserError(f"{side}: not a sidecar `taskembed embed` wrote (no 'model' entry); re-run `taskembed embed`")
    missing = [k for k in SIDECAR_KEYS if k not in info] + [f"model.{k}" for k in ("name", "path") if k not in info["model"]]
    if missing:
        raise UserError(f"{side}: a sidecar without {', '.join(missing)}, so how the vectors were made is unknown; re-run `taskembed embed`")
    return info


SIDECAR_KEYS = ("count", "dim", "pooling", "layer", "mean_last", "normalize", "max_length")
"""What search needs of a sidecar to embed its queries the same way and to check the file against it."""


def _unreadable(path: Path, exc: Exception) -> UserError:
    if path.suffix.lower() == ".npy" and "pickled" in str(exc):
        # NumPy reads bytes without its header as a pickle, which it refuses, and says so: the file is simply not a .npy.
        why = "it does not start with NumPy's header"
    else:
        why = " ".join(str(exc).split())[:100]
    return UserError(f"{path}: not a readable {path.suffix.lstrip('.')} file of vectors ({why}); re-run `taskembed embed` to write it again")


def load_vectors(vectors: str | Path) -> tuple[np.ndarray, dict[str, list] | None]:
    """The whole matrix, and (for Parquet) the other columns. For small files and tests; search streams instead.

    A sharded run's `<stem>.manifest.json` gives all its shards merged back in row-id order (after checking
    each shard's size and sha256 against the manifest).
    """
    path = Path(vectors)
    if _is_manifest(path):
        return _load_manifest_vectors(path)
    import pyarrow.parquet as pq

    try:
        if path.suffix.lower() == ".npy":
            return np.load(path, allow_pickle=False), None
        table = pq.read_table(path)
    except (OSError, ValueError, EOFError) as exc:  # a truncated or empty .npy, or what pyarrow cannot read (ArrowInvalid is a ValueError)
        raise _unreadable(path, exc) from None
    vec = table.column("vector").combine_chunks()
    dim = vec.type.list_size
    matrix = vec.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)
    return matrix, {name: table.column(name).to_pylist() for name in table.column_names if name != "vector"}


Rows = Callable[[Sequence[int]], list[dict[str, Any]]]
"""Given row positions within a block, their columns (all but the vector) as dicts."""


def _iter_blocks(path: Path, block: int = 65_536, ids: np.ndarray | None = None) -> Iterator[tuple[np.ndarray, Rows]]:
    """(vectors, rows) a block at a time; `ids` gives a .npy file's row ids (default 0..n-1); a manifest chains its shards.
    Only the rows asked for become Python values: a search wants k of each block's 65,536 (turning every text into a
    string was about a tenth of a search over 500,000 rows, more with large kept columns)."""
    if _is_manifest(path):
        info = read_manifest(path, verify=False)
        for s in info["shards"]:
            if s["count"]:
                yield from _iter_blocks(path.parent / s["file"], block, _shard_ids(s, info))
        return
    if path.suffix.lower() == ".npy":
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise _unreadable(path, exc) from None
        for start in range(0, len(arr), block):
            part = np.asarray(arr[start : start + block])
            rows = ids[start : start + len(part)] if ids is not None else np.arange(start, start + len(part))
            yield part, lambda picked, rows=rows: [{"id": int(rows[j])} for j in picked]
        return
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except (OSError, ValueError) as exc:
        raise _unreadable(path, exc) from None
    for batch in parquet.iter_batches(batch_size=block):
        vec = batch.column("vector")
        matrix = vec.flatten().to_numpy(zero_copy_only=False).reshape(len(batch), vec.type.list_size)
        others = batch.drop_columns(["vector"])
        yield matrix, lambda picked, others=others: others.take(list(picked)).to_pylist()


def embedder_for(vectors: str | Path, device: str | None = None, model_path: str | Path | None = None) -> Embedder:
    """The Embedder that wrote a vectors file, from its sidecar; refuses if the model's weights changed since.
    `model_path`: where that model is now, for a folder moved since (its weights must be the same)."""
    info = read_sidecar(vectors)
    model = info["model"]
    where = str(model_path) if model_path is not None else model.get("path") or model["name"]
    if model_path is None and model.get("path") and not Path(model["path"]).is_dir():
        if model["name"] not in PACKAGED_MODELS:
            raise UserError(f"{vectors}: the model that wrote it ({model['path']}) is no longer there; if it moved, say where "
                            f"({'--model FOLDER' if on_command_line() else 'model_path='}; the weights are checked), else re-embed with the model you have")
        # A packaged model's path is inside a virtual environment, which may have been made again elsewhere: its id
        # finds it there, and the weights' fingerprint below still refuses other weights.
        where = model["name"]
    opts = {k: info[k] for k in ("pooling", "layer", "mean_last", "normalize", "max_length")}
    # Sidecars from before the option computed in float32. Vectors made in bf16 are searched with float32 queries
    # where this machine has no bf16 units (bf16 here would be refused as slower): scores move in the third decimal.
    opts["bf16"] = bool(info.get("bf16", False)) and native_bf16(pick_device(device))
    try:
        emb = Embedder.load(where, device=device, **opts)
    except UserError as exc:
        if model_path is None or opts["pooling"] != "head" or "needs a classifier folder" not in str(exc):
            raise
        # search has no pooling to choose: the advice is about the model, which cannot be the one that wrote them.
        raise UserError(f"{vectors}: --model {model_path} has no classification head, so it is not the model that wrote these "
                        f"vectors ({model['name']}, which read them with its head); give that model's folder") from None
    if model_path is not None and not (model.get("fingerprint") and emb.path is not None):
        # A model named by the user must be shown to be the one that wrote the vectors: a Hub id has no local weights
        # to hash, and vectors written from one record no fingerprint to compare with.
        raise UserError(f"{vectors}: --model {model_path}: its weights cannot be checked against the vectors' "
                        + ("(it is no local folder); give the model's folder" if model.get("fingerprint")
                           else "(they were written by a model loaded by id, with no fingerprint); re-embed the texts"))
    if model.get("fingerprint") and emb.path is not None:
        now = fingerprint(emb.path)
        if not now or now["sha256"] != model["fingerprint"]["sha256"]:
            raise UserError(f"{vectors}: the weights in {where} are not those that wrote these vectors (changed since, or "
                            "another model); re-run `taskembed embed`")
    return emb


def search(vectors: str | Path, queries: Sequence[str] | str, k: int = 5, *,
           embedder: Embedder | None = None, model_path: str | Path | None = None) -> list[list[dict[str, Any]]]:
    """Cosine nearest neighbours of each query among the stored vectors, best first.

    The query is embedded with the model and options recorded in the sidecar (the model found at `model_path` when
    its folder moved). An `embedder` given instead must pool as the sidecar says and, when it has a folder, hold
    the same weights: a query from another space would score noise. Each hit is {"rank", "score", "id", "text",
    "label"} (text/label are None for .npy files), and "split" and the columns kept with --keep where the file has
    them. VECTORS may be a sharded run's
    manifest: its shards are searched one after another, ids stay global.
    """
    if isinstance(queries, str):
        queries = [queries]
    from taskembed.data import check_texts

    queries = check_texts(queries, "embed", "query", "queries")
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise UserError(f"{option('-k', k)}: give a whole number of hits, at least 1")
    info = read_sidecar(vectors)
    if embedder is not None:
        if model_path is not None:
            raise UserError("give embedder or model_path, not both: each says which model embeds the queries")
        embedder = as_embedder(embedder, {})  # a Classifier or a folder is taken as `embed` takes it
        _check_embedder(vectors, info, embedder)
    emb = embedder or embedder_for(vectors, model_path=model_path)
    q = emb.encode(queries).astype(np.float32)
    q /= np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    if info.get("dim") and q.shape[1] != info["dim"]:
        raise UserError(f"{vectors}: vectors have {info['dim']} dimensions but the query has {q.shape[1]}; "
                        "the sidecar does not match the file")
    best: list[list[tuple[float, dict[str, Any]]]] = [[] for _ in queries]
    rows = 0
    for matrix, rows_of in _iter_blocks(Path(vectors)):
        if matrix.ndim != 2 or matrix.shape[1] != q.shape[1]:
            held = f"{matrix.shape[1]}-dimensional vectors" if matrix.ndim == 2 else f"a {matrix.ndim}-d array, not a matrix of vectors,"
            raise UserError(f"{vectors}: holds {held} but its sidecar says {info['dim']} dimensions; the file and its sidecar "
                            "come from different runs: re-run `taskembed embed`")
        rows += len(matrix)
        m = matrix.astype(np.float32)
        m /= np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12)
        scores = np.clip(q @ m.T, -1.0, 1.0)  # a text against itself came out at 1.0000002 in float32
        take = min(k, m.shape[0])
        for qi, row in enumerate(scores):
            top = np.argpartition(-row, take - 1)[:take]
            cand = [(float(row[j]), columns) for j, columns in zip(top, rows_of(top.tolist()))]
            best[qi] = sorted(best[qi] + cand, key=lambda t: -t[0])[:k]
    if rows != info["count"]:
        raise UserError(f"{vectors}: holds {rows:,} vectors but its sidecar says {info['count']:,}; the file and its sidecar "
                        "come from different runs: re-run `taskembed embed`")
    results = []
    for hits in best:
        results.append([{"rank": r, "score": s, "id": c.get("id"), "text": c.get("text"), "label": c.get("label"),
                         **({"split": c["split"]} if "split" in c else {}),  # a dataset's splits embedded together
                         **{name: value for name, value in c.items() if name not in OWN_COLUMNS}}  # columns kept with --keep
                        for r, (s, c) in enumerate(hits, start=1)])
    return results


def _check_embedder(vectors: str | Path, info: dict[str, Any], emb: Embedder) -> None:
    """An embedder given to `search` makes queries in the stored vectors' space: the same pooling and layers, and the
    same weights where it has a folder to check (one built from a model in memory, or loaded by a Hub id, cannot be).
    Normalisation does not matter: search compares unit vectors. The weights are hashed once per Embedder, not at
    every search."""
    mine = emb.options()
    differ = [f"{key} {mine[key]!r} (the vectors': {info[key]!r})" for key in ("pooling", "layer", "mean_last")
              if key in info and mine[key] != info[key]]
    if differ:
        raise UserError(f"{vectors}: the embedder given reads texts otherwise than the one that wrote these vectors: "
                        f"{'; '.join(differ)}; build it with the sidecar's options, or leave embedder out")
    wrote = (info["model"].get("fingerprint") or {}).get("sha256")
    if wrote and emb.path is not None:
        if emb.checked_weights is None:
            emb.checked_weights = fingerprint(emb.path) or {}
        now = emb.checked_weights
        if not now or now["sha256"] != wrote:
            raise UserError(f"{vectors}: the embedder given ({emb.name}) has other weights than the model that wrote these "
                            f"vectors ({info['model']['name']}); embed the queries with that model, or re-embed the texts")


# --- export to sentence-transformers -------------------------------------------------------------


def exportable_embedder(model_or_folder, options: dict[str, Any]) -> Embedder:
    """The Embedder an export writes: the last layer's pooling, float32, as the model computes it."""
    emb = as_embedder(model_or_folder, dict(options))
    if emb.layer != emb.num_layers or emb.mean_last is not None:
        raise UserError("export supports the last layer only (a sentence encoder pools the model's output); drop layer/mean_last")
    if emb.dtype != "float32":
        raise UserError("export writes float32 weights; drop dtype (convert the vectors when you store them)")
    if emb.bf16:
        raise UserError("bf16 is how taskembed computes, not part of the model; export without it")
    return emb


@keeps_caller_state  # its save would draw transformers' "Writing model shards" bar: quiet inside, as it was after
def export_sentence_transformers(model_or_folder, out: str | Path, *, overwrite: bool = False, **options) -> Path:
    """A folder that `SentenceTransformer(out)` loads offline and whose `encode` gives `embed`'s vectors.

    Modules: Transformer (the encoder, safetensors) + Pooling + [Dense for a pooler] + [Normalize].
    The folder uses the classic module paths (sentence_transformers.models.*), which sentence-transformers
    2.3 to 6 all load; sentence-transformers itself is not needed to write it.
    """
    from safetensors.torch import save_file

    from taskembed import artifacts

    out = Path(out)
    # The destination first: refusing it should not wait for a model to load.
    artifacts.check_export_folder(model_or_folder, out, overwrite, "sentence_bert_config.json")
    emb = exportable_embedder(model_or_folder, options)

    reads = emb.head_reads if emb.pooling == "head" else emb.pooling
    pooling_mode = {"pooler": "cls", "context_pooler": "cls"}.get(reads, reads)
    dense = None  # (linear, activation module path)
    if reads == "pooler":
        pooler = emb.encoder.pooler
        linear = pooler.dense if hasattr(pooler, "dense") else pooler  # BERT's BertPooler / ALBERT's bare Linear
        dense = (linear, _TORCH_ACTIVATIONS["tanh"])
    elif reads == "context_pooler":
        act = str(getattr(emb.config, "pooler_hidden_act", "gelu"))
        if act not in _TORCH_ACTIVATIONS:
            raise UserError(f"cannot export: the ContextPooler's activation '{act}' has no exact torch.nn module "
                            f"(known: {', '.join(_TORCH_ACTIVATIONS)})")
        dense = (emb.model.pooler.dense, _TORCH_ACTIVATIONS[act])
    hidden = int(emb.config.hidden_size)

    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    quiet_transformers()
    with artifacts.staged_folder(out, overwrite=True) as tmp:
        emb.encoder.save_pretrained(tmp, safe_serialization=True)
        emb.tokenizer.save_pretrained(tmp)
        sbert = {"max_seq_length": emb.max_length, "do_lower_case": False}
        if getattr(emb.encoder, "pooler", "") is None and "add_pooling_layer" in inspect.signature(type(emb.encoder).__init__).parameters:
            # A RoBERTa-family classifier's encoder has no pooler, but AutoModel builds one by default, and loading the
            # export reported its weights "newly initialized ... consider training" (unused by the Pooling module).
            # sentence-transformers passes model_args to from_pretrained (2.x to 6 alike).
            sbert["model_args"] = {"add_pooling_layer": False}
        artifacts.write_json(tmp / "sentence_bert_config.json", sbert)
        (tmp / "1_Pooling").mkdir()
        artifacts.write_json(tmp / "1_Pooling" / "config.json", {
            "word_embedding_dimension": hidden,
            "pooling_mode_cls_token": pooling_mode == "cls",
            "pooling_mode_mean_tokens": pooling_mode == "mean",
            "pooling_mode_max_tokens": pooling_mode == "max",
            "pooling_mode_mean_sqrt_len_tokens": False,
        })
        if dense is not None:
            linear, activation = dense
            folder = f"{len(modules)}_Dense"
            (tmp / folder).mkdir()
            artifacts.write_json(tmp / folder / "config.json", {"in_features": linear.in_features, "out_features": linear.out_features,
                                                               "bias": linear.bias is not None, "activation_function": activation})
            tensors = {"linear.weight": linear.weight.detach().float().cpu().contiguous().clone()}
            if linear.bias is not None:
                tensors["linear.bias"] = linear.bias.detach().float().cpu().contiguous().clone()
            save_file(tensors, str(tmp / folder / "model.safetensors"))
            modules.append({"idx": len(modules), "name": str(len(modules)), "path": folder, "type": "sentence_transformers.models.Dense"})
        if emb.normalize:
            folder = f"{len(modules)}_Normalize"
            (tmp / folder).mkdir()
            modules.append({"idx": len(modules), "name": str(len(modules)), "path": folder,
                            "type": "sentence_transformers.models.Normalize"})
        artifacts.write_json(tmp / "modules.json", modules)
        st_config = {"model_type": "SentenceTransformer", "prompts": {}, "default_prompt_name": None, "similarity_fn_name": "cosine"}
        artifacts.write_json(tmp / "config_sentence_transformers.json", st_config)
        # Nothing has been encoded, so the Embedder does not know its width yet: it is the last module's output.
        info = {**emb.describe(), "dim": dense[0].out_features if dense is not None else hidden}
        artifacts.write_json(tmp / "taskembed_export.json", {**info, "format": "sentence-transformers", "versions": artifacts.versions()})
        (tmp / "README.md").write_text(_export_card(emb, info, [m["type"].rsplit(".", 1)[1] for m in modules]), encoding="utf-8")
    return out


def _export_card(emb: Embedder, info: dict[str, Any], modules: list[str]) -> str:
    return f"""---
library_name: sentence-transformers
pipeline_tag: sentence-similarity
tags: [taskembed, sentence-transformers, feature-extraction]
---

# {emb.name} as a sentence encoder

Exported by taskembed from `{emb.name}`. `SentenceTransformer(this folder).encode(texts)` gives the same
vectors as `taskembed embed {emb.name} DATA --out vectors.parquet --pooling {emb.pooling} --max-length {emb.max_length} {'--normalize' if emb.normalize else '--no-normalize'}`:
{info['pooling_detail']}, texts truncated to {emb.max_length} tokens.

Modules: {' -> '.join(modules)}. Weights are safetensors only. Provenance (source weights fingerprint,
options, versions) is in `taskembed_export.json`.

```python
from sentence_transformers import SentenceTransformer
model = SentenceTransformer("path/to/this/folder")
vectors = model.encode(["some text"])
```
"""
