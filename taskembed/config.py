"""Typed run configuration: YAML file + command-line overrides, validated once.

A config is four small dataclasses. Every field has a one-line docstring (the
string literal under it), which `taskembed train --help-config` prints. All
problems in a config (unknown keys, wrong types, contradictions) are collected
and reported in a single UserError before anything is loaded.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import numbers
import os
import re
import types
import typing
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from taskembed.errors import UserError, key_name, setting


@dataclass
class DataConfig:
    source: str = "rotten_tomatoes"
    """Training data: a built-in name, a CSV/TSV/JSON/JSONL/Parquet file, a `save_to_disk` folder, or a Hub dataset id."""
    subset: str | None = None
    """A Hub dataset's configuration, for ids that have several (`sst2` of `nyu-mll/glue`, `emotion` of `tweet_eval`)."""
    validation: str | None = None
    """Optional validation file; if absent, the source's validation split or a stratified slice of train is used."""
    test: str | None = None
    """Optional test file; if absent, the source's test split (or a carved slice when test_fraction > 0)."""
    unlabelled: str | None = None
    """With train.mlm_epochs: a file of unlabelled in-domain texts (.txt, one per line, or a table with text_column) for the masked-LM stage, besides the training texts."""
    text_column: str = "text"
    """Column holding the text."""
    text_columns: list[str] | None = None
    """Several columns joined into the text in this order, a space between, empty cells left out (title and body; YAML list or 'a,b'); replaces text_column."""
    text_pair_column: str | None = None
    """Second text column for sentence-pair tasks (e.g. premise/hypothesis)."""
    label_column: str = "label"
    """Column holding the label."""
    multi_label: bool = False
    """Each example has zero or more labels (a sigmoid per label, thresholds tuned on validation) instead of exactly one."""
    label_delimiter: str | None = None
    """Multi-label: split text labels on this string (e.g. '|'); JSON/JSONL/Parquet lists need none."""
    label_columns: list[str] | None = None
    """Multi-label: several 0/1 columns, one per label, named after it (YAML list or 'a,b,c'); replaces label_column."""
    threshold_min_positives: int = 10
    """Multi-label: a label's threshold moves from 0.5 only with at least this many validation positives (an F1 maximum over fewer is noise)."""
    validation_fraction: float = 0.1
    """Share of train carved out (stratified, seeded) as validation when the source has none."""
    test_fraction: float = 0.0
    """Share of train carved out as test when the source has none (0 = no test split)."""
    split_seed: int = 0
    """Seed of the carved splits (independent of the training seed, so seeds compare on the same data)."""
    max_length: int = 128
    """Token limit per example; longer texts are truncated and counted."""
    max_train_samples: int | None = None
    """A seeded sample of N training rows that keeps every label at least once, for quick runs; validation and test carved from train come out of the N."""
    max_train_per_label: int | None = None
    """Few-shot: at most N training examples of each label (seeded), drawn after validation and test are carved, so they keep their size."""
    max_eval_samples: int | None = None
    """A seeded sample of at most N rows of validation and of test each (after any carving), for quick runs; full-size scores need it unset."""
    long_texts: Literal["truncate", "window"] = "truncate"
    """Texts over max_length tokens: truncate them, or cut them into overlapping windows of max_length tokens that are all classified (and trained on) and whose logits are aggregated."""
    window_stride: int = 32
    """With long_texts window: tokens shared by consecutive windows."""
    window_aggregate: Literal["mean", "max"] = "mean"
    """With long_texts window: how the windows' logits make the text's logits."""


@dataclass
class ModelConfig:
    name: str = "sentence-transformers/all-MiniLM-L6-v2"
    """Hugging Face model id or local folder; ids carried by an installed package load from that copy."""
    revision: str | None = None
    """Hub revision (branch, tag or commit) for online ids."""
    trust_remote_code: bool = False
    """Run code shipped with the model. Off unless you trust the source and pin a revision."""
    dropout: float | None = None
    """The classification head's dropout (every family's: BERT's classifier_dropout, DistilBERT's seq_classif_dropout, ...; the encoder's is left alone); None keeps the model's own."""


@dataclass
class TrainConfig:
    lr: float = 1.5e-4
    """Learning rate of the top encoder layer."""
    layer_decay: float = 1.0
    """Each layer below the top trains at this factor times the rate of the layer above; in (0, 1]. 1.0 (one rate for the encoder) won the ablation in docs/ablations.md."""
    head_lr: float = 1e-3
    """Learning rate of the pooler and classification head."""
    embedding_lr: float | None = None
    """Explicit embedding rate; None means lr * layer_decay ** num_layers."""
    weight_decay: float = 0.01
    """AdamW weight decay (never applied to biases and normalisation weights)."""
    freeze_embeddings: bool = False
    """Keep the embedding layer frozen."""
    freeze_layers: int = 0
    """Keep the bottom N encoder layers frozen."""
    gradual_unfreezing: Literal["off", "epoch", "steps"] = "off"
    """ULMFiT gradual unfreezing: start with the head (and the top unfreeze_start layers) trainable, then unfreeze one more group, top down, each epoch or every unfreeze_every steps."""
    unfreeze_every: int = 0
    """With gradual_unfreezing steps: optimizer steps between two unfreezings; 0 spreads them evenly over the first epoch."""
    unfreeze_start: int = 0
    """With gradual_unfreezing: encoder layers trainable from the first step besides the head."""
    mlm_epochs: float = 0.0
    """ULMFiT's second step: before the labels, train the encoder this many passes at masked-token prediction over the training texts (and data.unlabelled); 0 skips it. Its masked-LM head is discarded afterwards."""
    mlm_lr: float = 5e-5
    """With mlm_epochs: the encoder's rate in the masked-LM stage (its head trains at head_lr)."""
    mlm_probability: float = 0.15
    """With mlm_epochs: the share of tokens masked (BERT's 15%: 80% of them replaced by the mask token, 10% by a random token, 10% kept)."""
    epochs: float = 3.0
    """Passes over the training data (a fraction is allowed)."""
    batch_size: int = 32
    """Examples per optimizer step (before gradient accumulation)."""
    grad_accum: int = 1
    """Micro-batches accumulated per optimizer step; an epoch's last step takes the micro-batches left over, so every example is seen."""
    lr_scaling: Literal["none", "sqrt", "linear"] = "none"
    """Scale every rate with the effective batch (batch_size x grad_accum x processes) over lr_batch_size: by its square root (the rule for Adam; for large batches on an accelerator) or linearly. none: the rates as given."""
    lr_batch_size: int = 32
    """With lr_scaling: the batch size the rates were chosen for (the shipped rates: 32)."""
    auto_batch: bool = False
    """On out-of-memory, split each micro-batch in two and accumulate twice as many (same effective batch, same loss; only the contrastive term, computed within each piece, changes); retried down to 1 example."""
    warmup_ratio: float = 0.1
    """Share of the optimizer steps spent warming the rates up linearly from 0 (in the masked-LM stage, of its steps)."""
    schedule: Literal["linear", "cosine", "constant"] = "linear"
    """Rate decay after warmup (the masked-LM stage's too, over its own steps)."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm (0 disables clipping)."""
    label_smoothing: float = 0.0
    """Cross-entropy label smoothing."""
    class_weights: Literal["none", "balanced"] | dict[str, float] = "none"
    """Loss weight per class: balanced weighs each class by n / (classes * count); or a map {label: weight} (unlisted labels weigh 1)."""
    sampler: Literal["random", "balanced"] = "random"
    """Which examples an epoch draws: each once (random), or with replacement so every class is drawn equally often (balanced)."""
    contrastive_weight: float = 0.0
    """Weight of a supervised contrastive loss on the vector the head reads, added to cross-entropy (0 = off)."""
    contrastive_temperature: float = 0.1
    """Temperature of the supervised contrastive loss."""
    log_every: int = 0
    """Log the training loss, the rates and the gradient norm every N optimizer steps (log.jsonl, on_log); 0 = every tenth of an epoch, at most every 50 steps. On a GPU this is also how often the losses are read back from the device (and before every evaluation and checkpoint)."""
    eval_every: int = 0
    """Evaluate every N optimizer steps; 0 evaluates at the end of each epoch."""
    metric: Literal["accuracy", "macro_f1", "loss"] = "accuracy"
    """Validation metric used to pick the best weights and for early stopping (loss: lower is better). A tie on accuracy or macro_f1 (a gain of at most early_stopping_min_delta over the last improvement, and no lower than the kept weights' score) goes to the lower validation loss for the kept weights; it does not reset the patience."""
    early_stopping_patience: int = 0
    """Stop after this many evaluations without improvement (0 disables)."""
    early_stopping_min_delta: float = 0.0
    """What counts as an improvement: beating the best validation metric so far by more than this (0.002 = 0.2 points of accuracy). Smaller gains do not reset the patience, and replace the kept weights only as a tie does (train.metric)."""
    seed: int = 0
    """Seed of initialisation, shuffling and dropout."""
    bf16: Literal["auto", "on", "off"] = "auto"
    """bfloat16 autocast: auto uses it where the hardware supports it natively."""
    fp16: bool = False
    """float16 autocast with dynamic loss scaling, for GPUs without bf16 units (T4, V100), where it runs on their tensor cores; bf16 auto is then off. A step whose scaled gradient overflows float16 is skipped and the scale halved (counted in the log and run.json); training stops if it overflows even at scale 1. On the CPU float16 is emulated and slower than float32. lr-find and the masked-LM stage run without it."""
    trim_top_layer: bool = True
    """Compute the top encoder layer only for the token the head reads ([CLS], or the pooler's input): the same arithmetic on the rows that matter, about a sixth less work for a 6-layer model. false computes every token, as the Trainer does."""
    fast_dropout: bool = True
    """On the CPU, draw dropout masks four to a 64-bit random number and compute attention with its dropout in plain tensor ops (taskembed/dropout.py): PyTorch's CPU dropout draws one number per element on one core. The drop rate is exact to 1/65,536. No effect on a GPU."""
    embedding_grad_rows: bool = True
    """Write the input embedding table's gradient only for the rows a step used, into one reused buffer, instead of a fresh zero table (30,522 x 384 for MiniLM) every step. The same gradient; false uses the dense default."""
    compact_vocab: bool = True
    """While training, hold only the input token table's rows the training texts use (13,524 of MiniLM's 30,522 on rotten_tomatoes) in the optimizer; the other rows get the weight decay AdamW would give them and nothing else, which is all AdamW does to a row whose gradient is always zero. The same weights (bit for bit on the CPU, where it is tested); less optimizer memory and work, most for large vocabularies. Single process only. false trains the whole table."""
    cuda_graphs: bool = False
    """On a CUDA GPU, run each training forward and backward as a captured CUDA graph, one per padded batch shape (lengths padded to multiples of 16, rows to batch_size), instead of launching its kernels one by one (taskembed/cudagraphs.py). The same gradients up to float rounding. Off by default until measured on a GPU; ignored, with a note, on the CPU. Not with gradual unfreezing, auto_batch, long_texts window, the contrastive term or torchrun."""
    device: str = "auto"
    """Where training runs: auto (a CUDA GPU when torch has one, else the CPU), cpu, cuda, or cuda:N for one GPU of several. Under torchrun each process takes its own GPU: auto, cuda or cpu there."""
    num_threads: int | None = None
    """CPU threads for torch; None uses the number of physical cores."""
    checkpoint_every: int = 0
    """Also checkpoint every N optimizer steps (beside output.dir, in <output.dir>.checkpoints); 0 = at each epoch end only (and, always, when SIGINT/SIGTERM stops the run)."""
    keep_checkpoints: int = 2
    """Checkpoints kept while training (the newest N; each also holds the best weights so far); 0 writes none, so a run cannot be resumed."""


@dataclass
class OutputConfig:
    dir: str = "runs/sentiment"
    """Folder the trained model is written to."""
    overwrite: bool = False
    """Replace an existing model folder (one holding training_config.json); a folder of other files is never replaced. An empty folder needs no overwrite."""
    baselines: bool = True
    """Also score majority-class and TF-IDF + logistic-regression baselines on the same splits."""
    calibrate: bool = True
    """Fit a temperature on the validation logits (calibration.json); predict reports calibrated scores too."""
    error_analysis: bool = True
    """Write the most confused label pairs and the highest-loss test examples into metrics.json and the card."""
    embedding_report: bool = True
    """Compare base and tuned embeddings on the validation split (k-NN, linear probe, silhouette, PCA plot)."""
    embedding_report_max_texts: int = 1000
    """Cap on the validation texts the embedding report uses (a seeded sample)."""


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


SECTIONS: dict[str, type] = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig, "output": OutputConfig}


def field_docs(cls: type) -> dict[str, str]:
    """Field docstrings, read from the source so each option is documented once, where it is declared."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body
    docs: dict[str, str] = {}
    for stmt, nxt in zip(body, body[1:]):
        if isinstance(stmt, ast.AnnAssign) and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant):
            docs[stmt.target.id] = str(nxt.value.value)
    return docs


# --- type coercion --------------------------------------------------------------------------

_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _coerce(value: Any, hint: Any) -> Any:
    """Return value as `hint`, or raise ValueError with a short reason. YAML already typed most values."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg)
            except ValueError as exc:
                # A mapping or list given for a mapping or list option: that branch's reason is the one to show.
                container = typing.get_origin(arg) in (dict, list) and isinstance(value, typing.get_origin(arg))
                errors.insert(0 if container else len(errors), str(exc))
        raise ValueError(errors[0] if errors else "invalid value")
    if origin is list:
        # On the command line a list is easiest typed as `a,b,c`; YAML `[a, b]` arrives as a list already.
        items = [part.strip() for part in value.split(",")] if isinstance(value, str) else value
        if not isinstance(items, list) or not items:
            raise ValueError(f"must be a non-empty list, in YAML [a, b] or as a,b (got {value!r})")
        out_items = []
        for item in items:
            try:
                out_items.append(_coerce(item, args[0]))
            except ValueError as exc:
                raise ValueError(f"item {item!r}: {exc}") from None
        return out_items
    if origin is dict:
        if not isinstance(value, dict) or not value:
            raise ValueError(f"must be a non-empty mapping (got {value!r})")
        key_hint, value_hint = args
        out = {}
        for k, v in value.items():
            try:
                out[_coerce(k, key_hint)] = _coerce(v, value_hint)
            except ValueError as exc:
                raise ValueError(f"entry {k!r}: {exc}") from None
        return out
    if origin is Literal:
        if value in args:
            return args[args.index(value)]  # the option's own value, not YAML's number type
        # YAML reads `on`/`off` as booleans; accept them for the string literals that spell them.
        if isinstance(value, bool) and ("on" if value else "off") in args:
            return "on" if value else "off"
        raise ValueError(f"must be one of {', '.join(map(str, args))} (got {value!r})")
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"must be true or false (got {value!r})")
    if hint is int:
        text = getattr(value, "text", "")
        if re.fullmatch(r"[-+]?0[0-9_]+", text):  # YAML 1.1's octal: a seed 010 meant ten, not eight
            return int(text.replace("_", ""), 10)
        # numbers.Integral takes NumPy's integers too: a value from np.arange or a pandas cell, in a sweep from Python.
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return int(value)
        if isinstance(value, str) and re.fullmatch(r"\s*[-+]?[0-9]+\s*", value):
            return int(value)  # quoted, "16": as a float option takes "1e-4" (YAML 1.1 reads that one as a string)
        raise ValueError(f"must be an integer (got {_shown(value)})")
    if hint is float:
        number = None
        if isinstance(value, numbers.Real) and not isinstance(value, bool):  # np.float32(1e-4) too
            try:
                number = float(str(value))  # the number as written: float(np.float32(1e-4)) is 9.9999997e-05
            except ValueError:
                number = float(value)  # a Fraction
        elif isinstance(value, str):
            # YAML 1.1 reads `1e-4` (no dot) as a string; accept it.
            try:
                number = float(value)
            except ValueError:
                pass
        # inf would pass every range check (epochs: inf never ends); no option means anything by it.
        if number is not None and math.isfinite(number):
            return number
        raise ValueError(f"must be a finite number (got {_shown(value)})")
    if hint is str:
        if isinstance(value, str):
            return value
        if isinstance(value, os.PathLike):  # a pathlib.Path for a file, a folder or a model (result.output_dir)
            return os.fspath(value)
        if isinstance(value, bool):
            raise ValueError(f"must be a string (got {_shown(value)}; and YAML reads yes, no, on, off, true and false as booleans: "
                             "quote such a word, or write null to leave the option unset)")
        if isinstance(value, (int, float)):  # booleans were refused above
            return getattr(value, "text", str(value))  # 0123 stays 0123, not octal 83
        raise ValueError(f"must be a string (got {_shown(value)})")
    raise ValueError(f"unsupported type {hint}")


def _shown(value: Any) -> str:
    # A bare `--train.lr` on the command line (its value forgotten) reads as true, like a switch.
    return "true; on the command line an option given without a value reads as true" if value is True else repr(value)


TRAINER_NAMES = {
    # The Hugging Face Trainer's (TrainingArguments) and run_classification.py's names for what taskembed has, said when
    # such a name is given as a key: spelling alone sends several of them elsewhere (num_train_epochs to mlm_epochs).
    "num_train_epochs": "train.epochs (fractions allowed)",
    "max_steps": "train.epochs, which takes fractions (0.5 is half an epoch); there is no step count",
    "learning_rate": "train.lr, the top encoder layer's rate (train.head_lr is the head's, train.layer_decay the drop per layer below; "
                     "taskembed plan prints them all)",
    "per_device_train_batch_size": "train.batch_size",
    "train_batch_size": "train.batch_size",
    "per_device_eval_batch_size": "no key; evaluation batches are sized by tokens",
    "eval_batch_size": "no key; evaluation batches are sized by tokens",
    "gradient_accumulation_steps": "train.grad_accum",
    "warmup_steps": "train.warmup_ratio, a share of the optimizer steps",
    "lr_scheduler_type": "train.schedule (linear, cosine or constant)",
    "label_smoothing_factor": "train.label_smoothing",
    "use_cpu": "train.device cpu",
    "no_cuda": "train.device cpu",
    "metric_for_best_model": "train.metric (accuracy, macro_f1 or loss)",
    "load_best_model_at_end": "always on: the best weights by train.metric are restored",
    "greater_is_better": "no key; train.metric knows its direction",
    "early_stopping_threshold": "train.early_stopping_min_delta",
    "eval_strategy": "train.eval_every (0: at each epoch's end; N: every N optimizer steps)",
    "evaluation_strategy": "train.eval_every (0: at each epoch's end; N: every N optimizer steps)",
    "eval_steps": "train.eval_every",
    "save_strategy": "train.checkpoint_every (0: at each epoch's end; N: every N optimizer steps)",
    "save_steps": "train.checkpoint_every",
    "save_total_limit": "train.keep_checkpoints",
    "resume_from_checkpoint": "no key; taskembed train CONFIG --resume",
    "logging_steps": "train.log_every",
    "report_to": "no key; taskembed.train(on_log=...) receives each log entry, for any tracker",
    "do_train": "no key; train trains, then scores validation and test; taskembed evaluate and predict do the rest",
    "do_eval": "no key; train scores validation and test; taskembed evaluate scores other data",
    "do_predict": "no key; taskembed predict, or taskembed evaluate --predictions",
    "output_dir": "output.dir",
    "overwrite_output_dir": "output.overwrite",
    "model_name_or_path": "model.name",
    "train_file": "data.source",
    "dataset_name": "data.source",
    "dataset_config_name": "data.subset",
    "validation_file": "data.validation",
    "test_file": "data.test",
    "max_seq_length": "data.max_length",
    "text_column_name": "data.text_column",
    "text_column_names": "data.text_columns (a list)",
    "label_column_name": "data.label_column",
    "max_predict_samples": "data.max_eval_samples (validation and test alike)",
    "shuffle_train_dataset": "always on: every epoch is shuffled with train.seed",
    "do_regression": "no key; taskembed trains classifiers",
}


def _suggest(word: str, options: typing.Iterable[str], section: str | None = None) -> str:
    if word in TRAINER_NAMES:
        return f"; the Trainer's {word} here: {TRAINER_NAMES[word]}"
    options = list(options)
    # A column's role without "_column" (data.label, data.text) means the column option, which spelling alone
    # would miss (it finds multi_label for label).
    close = [f"{word}_column"] if f"{word}_column" in options else difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return f"; did you mean '{f'{section}.' if section else ''}{close[0]}'?" if close else ""


# --- loading ----------------------------------------------------------------------------------


def parse_overrides(args: list[str]) -> dict[str, Any]:
    """`--train.lr 1e-4 --epochs 2 --output.overwrite` -> {"train.lr": 1e-4, "epochs": 2, "output.overwrite": True}.

    Values are read as YAML scalars, so numbers, booleans and null need no special syntax.
    A bare flag means true. A key without a section is resolved in `load_config` when it is unique.
    """
    out: dict[str, Any] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or len(arg) == 2:
            raise UserError(f"unexpected argument '{arg}': overrides look like --section.key value (e.g. --train.lr 1e-4)")
        key = arg[2:]
        if "=" in key:
            key, raw = key.split("=", 1)
            i += 1
        elif i + 1 < len(args) and not args[i + 1].startswith("--"):
            raw = args[i + 1]
            i += 2
        else:
            raw = "true"
            i += 1
        key = key.replace("-", "_")  # --max-length reads as max_length
        if raw and not any(c.isalnum() for c in raw) and raw.strip() not in ("[]", "{}"):
            # Symbols only (a delimiter such as | ; # ~, or a space) are meant literally: YAML would read | and > as
            # block scalars (""), # as a comment, ~ and blanks as null, and - as a list; a delimiter read as null was
            # then "not set", and the advice asked for the very option given. (null is written null.)
            out[key] = raw
            continue
        try:
            out[key] = yaml.load(raw, Loader=_UniqueKeyLoader) if raw != "" else ""  # safe: SafeLoader's constructors
        except yaml.YAMLError:
            out[key] = raw
    return out


def is_option(key: str) -> bool:
    """Whether `key` names a config option: section.key, or a key alone that one section has or several do."""
    section, _, name = key.rpartition(".")
    return name in _hints(SECTIONS[section]) if section in SECTIONS else (not section and any(key in _hints(c) for c in SECTIONS.values()))


def _resolve_key(key: str, problems: list[str]) -> tuple[str, str] | None:
    if "." in key:
        section, name = key.split(".", 1)
        if section not in SECTIONS:
            problems.append(f"unknown section '{section}' in '{key}'{_suggest(section, SECTIONS)}")
            return None
        return section, name
    owners = [s for s, cls in SECTIONS.items() if key in _hints(cls)]
    if len(owners) == 1:
        return owners[0], key
    if len(owners) > 1:
        problems.append(f"'{key}' is ambiguous: write one of {', '.join(f'{s}.{key}' for s in owners)}")
        return None
    every = [f"{s}.{n}" for s, cls in SECTIONS.items() for n in _hints(cls)] + [n for cls in SECTIONS.values() for n in _hints(cls)]
    problems.append(f"unknown option '{key}'{_suggest(key, every)}")
    return None


class _Int(int):
    text: str  # the number as written


class _Float(float):
    text: str


def _number(cls: type, construct: Callable) -> Callable:
    def build(loader: yaml.SafeLoader, node: yaml.ScalarNode):
        if ":" in node.value:
            # YAML 1.1's base 60 (1:30 is 90, 12:30 is 750) is never what a config means: kept as text, a number
            # option refuses it by name, and a text option (a revision, a column) gets it as written.
            return node.value
        out = cls(construct(loader, node))
        out.text = node.value
        return out
    return build


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML that refuses a key given twice in one mapping, where PyYAML would keep the last without a word, and
    whose numbers remember how they were written: YAML 1.1 reads 0123 as octal (83) and 1_0 as
    10, so a revision, column name or delimiter that looks like a number must be given to a text option as
    written, not as str() of the number."""

    def flatten_mapping(self, node):
        # Checked on a mapping's first visit, before PyYAML merges '<<' keys into it in place: the keys a merge brings
        # may be given again (that is what merging is for), and a merged mapping may be visited again later.
        if not getattr(node, "keys_checked", False):
            node.keys_checked = True
            seen = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node)
                if not isinstance(key, Hashable):
                    continue  # SafeLoader's own error for such a key follows
                if key in seen:
                    raise yaml.constructor.ConstructorError(None, None, f"key '{key}' appears twice; keep one", key_node.start_mark)
                seen.add(key)
        super().flatten_mapping(node)


_UniqueKeyLoader.add_constructor("tag:yaml.org,2002:int", _number(_Int, yaml.SafeLoader.construct_yaml_int))
_UniqueKeyLoader.add_constructor("tag:yaml.org,2002:float", _number(_Float, yaml.SafeLoader.construct_yaml_float))


CONFIG_HELP = "`taskembed train --help-config` lists every key; the repository's configs/ folder has examples"
DATA_SUFFIXES = {".csv", ".tsv", ".json", ".jsonl", ".parquet"}
"""The tables training reads (data.FILE_SUFFIXES, which this module does not import): given where the config goes
(`taskembed train tickets.csv`), they mean the data."""


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None, overrides_from: str = "command line") -> Config:
    """Read a YAML config (or the defaults when path is None), apply overrides, validate, return a Config.

    `overrides_from` names where the overrides came from, for errors when there is no file to name."""
    where = str(path) if path is not None else overrides_from
    raw: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if p.is_dir():
            if (p / "dataset_dict.json").is_file() or (p / "dataset_info.json").is_file():
                raise UserError(f"{p}: is a dataset folder (datasets.save_to_disk), not a config; train on it with "
                                f"{setting({'data.source': str(p)})} (no config needed)")
            if (p / "config.json").is_file() and any(p.glob("*.safetensors")):
                raise UserError(f"{p}: is a model folder, not a config; to fine-tune it further, give it as {setting({'model.name': str(p)})}")
            raise UserError(f"{p}: is a folder; give a YAML config file ({CONFIG_HELP})")
        if not p.is_file():
            raise UserError(f"{p}: config file not found; check the path ({CONFIG_HELP})")
        suffix = p.suffix.lower()
        if suffix in (".xlsx", ".xls"):
            raise UserError(f"{p}: is a spreadsheet, not a config; save it as CSV and train on it with "
                            f"{setting({'data.source': p.stem + '.csv'})}")
        if suffix == ".txt":
            raise UserError(f"{p}: is a text file, not a config; training reads labelled examples from a table (.csv, .tsv, "
                            f".json, .jsonl or .parquet) given with {key_name('data.source')}")
        if suffix in DATA_SUFFIXES - {".json"}:  # a .json file may be either: known once it is read
            raise UserError(f"{p}: is a data file, not a config; train on it with {setting({'data.source': str(p)})} (no config needed)")
        try:
            text = p.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise UserError(f"{p}: not UTF-8 text (byte {exc.start}); re-save the file as UTF-8") from None
        try:
            loaded = yaml.load(text, Loader=_UniqueKeyLoader)  # safe: SafeLoader's constructors only
        except yaml.YAMLError as exc:
            first = str(exc).strip().splitlines()[0]
            mark = getattr(exc, "problem_mark", None)  # where the parser gave up (0-based)
            at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
            problem = getattr(exc, "problem", None) or first
            fix = "fix the file" if isinstance(exc, yaml.constructor.ConstructorError) else "fix the file's syntax"
            raise UserError(f"{p}: not valid YAML ({at}{problem}); {fix}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict) or (p.suffix.lower() == ".json" and loaded and not set(loaded) & set(SECTIONS)):
            raise UserError(f"{p}: a config must be a mapping of sections (data, model, train, output)"
                            + (f"; if the file holds training data, train on it with {setting({'data.source': str(p)})}" if p.suffix.lower() == ".json" else ""))
        raw = loaded
    cfg = config_from_dict(raw, overrides or {}, where=where)
    if path is not None:
        _check_beside(Path(path), raw.get("data"), overrides or {})
    return cfg


def _check_beside(config_file: Path, data: Any, overrides: dict[str, Any]) -> None:
    """Refuse a relative data path of the config file that is missing from the current folder but present beside the
    config: paths are read from the folder taskembed runs in (as every command's paths are), and saying so here beats
    a "file not found" that does not name the config. A path missing in both places is left to the data loader, since
    it may be a Hugging Face Hub dataset id; so is a bare name (see `_names_a_path`)."""
    if not isinstance(data, dict):
        return
    for key in ("source", "validation", "test", "unlabelled"):
        value = data.get(key)
        if not isinstance(value, str) or not value or f"data.{key}" in overrides or Path(value).is_absolute():
            continue
        beside = config_file.parent / value
        if _names_a_path(value) and not Path(value).exists() and beside.exists():
            raise UserError(f"{config_file}: data.{key} '{value}' is not in the current folder ({Path.cwd()}) but is beside the config; "
                            f"paths in a config are read from the folder taskembed runs in: run it from {config_file.parent} "
                            f"or write '{beside}'")


def _names_a_path(value: str) -> bool:
    """Whether a data value can only be a path: it has a folder or a file extension. A bare name may be a built-in
    dataset, which the data loader takes before any file of that name."""
    return len(Path(value).parts) > 1 or bool(Path(value).suffix)


def as_config(config: "Config | dict[str, Any] | str | Path | None", overrides: dict[str, Any] | None = None) -> Config:
    """What the API's functions accept as a config (a Config, a YAML path, a dict laid out as the YAML is, or None for
    the defaults) with overrides ({"train.lr": 1e-4}), validated."""
    if overrides is not None and not isinstance(overrides, dict):
        raise UserError(f"overrides: give a dict of dotted keys to values, such as {{'train.lr': 1e-4}} (got {type(overrides).__name__})")
    if overrides:
        # {"train": {"epochs": 1}}, laid out as the YAML is, means {"train.epochs": 1} (it was called an unknown option).
        flat: dict[str, Any] = {}
        for key, value in overrides.items():
            if key in SECTIONS and (isinstance(value, dict) or value is None):
                for name, v in (value or {}).items():
                    if f"{key}.{name}" in overrides:  # which one was meant is the caller's to say
                        raise UserError(f"overrides: {key}.{name} is given twice, as '{key}.{name}' and under '{key}'; give it once")
                    flat[f"{key}.{name}"] = v
            else:
                flat[key] = value
        overrides = flat
    if isinstance(config, Config):
        # Validated again, overrides or not: a Config built or changed in code has not been through the checks.
        return config_from_dict(config.to_dict(), overrides or {}, where="the Config given")
    if isinstance(config, dict):
        return config_from_dict(config, overrides or {}, where="the config dict")
    if config is not None and not isinstance(config, (str, Path)):
        # Data where the config goes: train(df), as simpletransformers' train_model(df) reads it.
        data = " (a DataFrame or Dataset goes in data=, as in taskembed.train(None, data=df))" if hasattr(config, "columns") or hasattr(config, "column_names") else ""
        raise UserError(f"config: give a YAML file's path, a dict laid out as the YAML is, a Config or None (got {type(config).__name__}){data}")
    return load_config(config, overrides, overrides_from="overrides")


PATHS = {("data", "source"), ("data", "validation"), ("data", "test"), ("data", "unlabelled"), ("output", "dir")}
"""Options that may name a file or folder (model.name is resolved where the model loads)."""


def config_from_dict(raw: dict[str, Any], overrides: dict[str, Any] | None = None, where: str = "config") -> Config:
    problems: list[str] = []
    values: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
    for section, body in raw.items():
        if section not in SECTIONS:
            owners = [s for s, cls in SECTIONS.items() if str(section) in _hints(cls)]
            hint = f"; it is a key of section '{owners[0]}': indent it under {owners[0]}:" if owners else _suggest(str(section), SECTIONS)
            head, _, name = str(section).partition(".")
            if head in SECTIONS and name:  # train.epochs: 1, as an override is written
                hint = f"; a file nests its keys: write {head}: on its own line and {name}: indented under it"
            problems.append(f"unknown section '{section}'{hint}")
            continue
        if body is None:
            continue
        if not isinstance(body, dict):
            problems.append(f"section '{section}' must be a mapping of keys")
            continue
        values[section].update(body)
    overridden = set()
    for key, value in (overrides or {}).items():
        resolved = _resolve_key(key, problems)
        if resolved:
            values[resolved[0]][resolved[1]] = value
            overridden.add(resolved)

    sections: dict[str, Any] = {}
    for section, cls in SECTIONS.items():
        hints = _hints(cls)
        kwargs = {}
        for key, value in values[section].items():
            if key not in hints:
                source = " (an override, not the file)" if (section, key) in overridden and where.endswith((".yaml", ".yml")) else ""
                owners = [s for s, c in SECTIONS.items() if s != section and isinstance(key, str) and key in _hints(c)]
                if not isinstance(key, str):  # YAML reads `0:` as a number: an entry of a mapping above, indented too little
                    hint = " (read as a number, not a name: an entry of the mapping above it, such as class_weights, indented too little?)"
                elif owners:
                    hint = f"; it is a key of section '{owners[0]}': move it under {owners[0]}:"
                else:
                    hint = _suggest(key, hints, section)
                problems.append(f"unknown key '{section}.{key}'{source}{hint}")
                continue
            try:
                kwargs[key] = _coerce(value, hints[key])
                if (section, key) in PATHS and isinstance(kwargs[key], str):
                    kwargs[key] = os.path.expanduser(kwargs[key])  # ~/runs means the home folder, not a folder named ~
                if (section, key) == ("output", "dir") and kwargs[key] and Path(kwargs[key]).name in ("", ".."):
                    # `.` or `..` has no name to put `.checkpoints` or `.lr_find` after: the folder it means does.
                    kwargs[key] = str(Path(kwargs[key]).resolve())
            except ValueError as exc:
                problems.append(f"{section}.{key} {exc}")
        sections[section] = cls(**kwargs)
    cfg = Config(**sections)
    # Fields that failed to parse kept their defaults above, so the remaining checks still see every other value.
    problems.extend(_contradictions(cfg))
    if where.endswith((".yaml", ".yml")):
        # A value given on the command line is not the file's: say so, or the user looks for it in the file.
        named = {f"{s}.{k}" for s, k in overridden}
        problems = [f"{head} (an override, not the file) {rest}" if head in named else f"{head} {rest}".rstrip()
                    for head, _, rest in (problem.partition(" ") for problem in problems)]
    if problems:
        count = f"{len(problems)} problems" if len(problems) > 1 else "1 problem"
        raise UserError(f"{where}: {count}: " + "; ".join(problems))
    return cfg


def _contradictions(cfg: Config) -> list[str]:
    """Values that are well typed but cannot work, alone or together."""
    t, d = cfg.train, cfg.data
    out = []

    def need(cond: bool, msg: str) -> None:
        if not cond:
            out.append(msg)

    need(t.lr > 0, f"train.lr must be > 0 (got {t.lr})")
    need(t.head_lr > 0, f"train.head_lr must be > 0 (got {t.head_lr})")
    need(t.embedding_lr is None or t.embedding_lr > 0,
         f"train.embedding_lr must be > 0 (got {t.embedding_lr}); to keep the embeddings fixed, set train.freeze_embeddings true")
    need(0 < t.layer_decay <= 1, f"train.layer_decay must be in (0, 1] (got {t.layer_decay})")
    need(t.weight_decay >= 0, f"train.weight_decay must be >= 0 (got {t.weight_decay})")
    need(t.epochs > 0, f"train.epochs must be > 0 (got {t.epochs})")
    need(math.isfinite(t.mlm_epochs) and t.mlm_epochs >= 0, f"train.mlm_epochs must be >= 0 (got {t.mlm_epochs})")
    need(d.unlabelled is None or d.text_pair_column is None,
         "data.unlabelled gives single texts, but data.text_pair_column makes this a model of text pairs; drop data.unlabelled")
    need(t.mlm_lr > 0, f"train.mlm_lr must be > 0 (got {t.mlm_lr})")
    need(0 < t.mlm_probability < 1, f"train.mlm_probability must be in (0, 1) (got {t.mlm_probability})")
    need(t.batch_size >= 1, f"train.batch_size must be >= 1 (got {t.batch_size})")
    need(t.grad_accum >= 1, f"train.grad_accum must be >= 1 (got {t.grad_accum})")
    need(t.lr_batch_size >= 1, f"train.lr_batch_size must be >= 1 (got {t.lr_batch_size})")
    need(0 <= t.warmup_ratio < 1, f"train.warmup_ratio must be in [0, 1) (got {t.warmup_ratio})")
    need(t.max_grad_norm >= 0, f"train.max_grad_norm must be >= 0 (got {t.max_grad_norm})")
    need(0 <= t.label_smoothing < 1, f"train.label_smoothing must be in [0, 1) (got {t.label_smoothing})")
    need(t.eval_every >= 0, f"train.eval_every must be >= 0 (got {t.eval_every})")
    need(t.log_every >= 0, f"train.log_every must be >= 0 (got {t.log_every})")
    need(t.early_stopping_patience >= 0, f"train.early_stopping_patience must be >= 0 (got {t.early_stopping_patience})")
    need(math.isfinite(t.early_stopping_min_delta) and t.early_stopping_min_delta >= 0,
         f"train.early_stopping_min_delta must be a finite number >= 0 (got {t.early_stopping_min_delta})")
    need(t.freeze_layers >= 0, f"train.freeze_layers must be >= 0 (got {t.freeze_layers})")
    need(re.fullmatch(r"auto|cpu|cuda(:\d+)?", str(t.device)) is not None,
         f"train.device must be auto, cpu, cuda or cuda:N (got {t.device!r})")
    need(t.num_threads is None or t.num_threads >= 1, f"train.num_threads must be >= 1 (got {t.num_threads})")
    # Seeds derive others (seed x 100,003 + epoch for each epoch's order) that must stay within torch's 64 bits.
    need(0 <= t.seed < 2**32, f"train.seed must be in [0, 2**32) (got {t.seed})")
    need(0 <= d.split_seed < 2**32, f"data.split_seed must be in [0, 2**32) (got {d.split_seed})")
    if isinstance(t.class_weights, dict):
        bad = {k: v for k, v in t.class_weights.items() if not v > 0}
        need(not bad, f"train.class_weights weights must be > 0 (got {bad})")
    need(t.unfreeze_every >= 0, f"train.unfreeze_every must be >= 0 (got {t.unfreeze_every})")
    need(t.unfreeze_start >= 0, f"train.unfreeze_start must be >= 0 (got {t.unfreeze_start})")
    need(t.gradual_unfreezing == "steps" or t.unfreeze_every == 0,
         f"train.unfreeze_every is {t.unfreeze_every} but train.gradual_unfreezing is {t.gradual_unfreezing!r}; set gradual_unfreezing steps")
    need(t.contrastive_weight >= 0, f"train.contrastive_weight must be >= 0 (got {t.contrastive_weight})")
    need(t.contrastive_temperature > 0, f"train.contrastive_temperature must be > 0 (got {t.contrastive_temperature})")
    need(d.long_texts == "truncate" or 0 <= d.window_stride < d.max_length // 2,
         f"data.window_stride must be in [0, max_length / 2) (got {d.window_stride}"
         + (", the default," if d.window_stride == DataConfig.window_stride else "")
         + f" with max_length {d.max_length}); set data.window_stride {max(0, d.max_length // 4)} (a quarter of the window)")
    need(d.long_texts == "truncate" or d.text_pair_column is None,
         "data.long_texts window works on single texts; sentence pairs are truncated (set long_texts truncate)")
    need(not (t.fp16 and t.bf16 == "on"), "train.fp16 and train.bf16 on ask for two half-precision types; set one of them")
    if t.cuda_graphs:  # a graph replays fixed shapes and reads what it read when captured
        for on, what in ((t.gradual_unfreezing != "off", "train.gradual_unfreezing (which trainable weights changes)"),
                         (t.auto_batch, "train.auto_batch (which changes the batch shape)"),
                         (d.long_texts == "window", "data.long_texts window (texts have varying numbers of rows)"),
                         (t.contrastive_weight > 0, "train.contrastive_weight (the graph returns only the logits)"),
                         (t.fp16, "train.fp16 (its loss scale changes between steps)")):
            need(not on, f"train.cuda_graphs cannot be combined with {what}; set train.cuda_graphs false or turn that off")
    need(t.checkpoint_every >= 0, f"train.checkpoint_every must be >= 0 (got {t.checkpoint_every})")
    need(t.keep_checkpoints >= 0, f"train.keep_checkpoints must be >= 0 (got {t.keep_checkpoints})")
    need(not (t.checkpoint_every > 0 and t.keep_checkpoints == 0),
         f"train.checkpoint_every is {t.checkpoint_every} but train.keep_checkpoints is 0 (no checkpoints); set keep_checkpoints >= 1")
    need(0 <= d.validation_fraction < 1, f"data.validation_fraction must be in [0, 1) (got {d.validation_fraction})")
    need(0 <= d.test_fraction < 1, f"data.test_fraction must be in [0, 1) (got {d.test_fraction})")
    # Only when each is valid on its own: a validation_fraction of 1.5 is one mistake, reported once.
    need(not (0 <= d.validation_fraction < 1 and 0 <= d.test_fraction < 1) or d.validation_fraction + d.test_fraction < 1,
         "data.validation_fraction + data.test_fraction must leave training data (< 1)")
    need(d.max_length >= 8, f"data.max_length must be >= 8 (got {d.max_length})")
    need(d.threshold_min_positives >= 1, f"data.threshold_min_positives must be >= 1 (got {d.threshold_min_positives})")
    need(d.max_train_samples is None or d.max_train_samples >= 2, f"data.max_train_samples must be >= 2 (got {d.max_train_samples})")
    need(d.subset is None or bool(str(d.subset).strip()), "data.subset is empty; name a configuration of the Hub dataset, or leave it unset")
    need(d.max_train_per_label is None or d.max_train_per_label >= 1, f"data.max_train_per_label must be >= 1 (got {d.max_train_per_label})")
    need(d.max_eval_samples is None or d.max_eval_samples >= 1, f"data.max_eval_samples must be >= 1 (got {d.max_eval_samples})")
    need(d.max_train_per_label is None or not d.multi_label,
         "data.max_train_per_label counts the examples of each label, which multi-label rows share; use data.max_train_samples")
    need(bool(d.source), "data.source is empty: name a built-in dataset, a file or a folder")
    need(bool(d.text_column), "data.text_column is empty")
    if d.text_columns is not None:
        need(len(d.text_columns) >= 2, f"data.text_columns joins several columns (got {d.text_columns}); for one, use data.text_column")
        need(all(str(c).strip() for c in d.text_columns), "data.text_columns has an empty column name")
        need(len(set(d.text_columns)) == len(d.text_columns), f"data.text_columns names a column twice ({d.text_columns}); list each once")
        need(d.text_column == "text", "data.text_columns replaces data.text_column; set one of them")
        need(not {d.text_pair_column, d.label_column, *(d.label_columns or [])} & set(d.text_columns),
             "data.text_columns must not include the second-text or label columns")
    need(bool(d.label_column), "data.label_column is empty")
    need(d.text_pair_column != d.text_column, "data.text_pair_column must differ from data.text_column")
    need(d.label_column not in (d.text_column, d.text_pair_column), "data.label_column must differ from the text columns")
    out.extend(_multi_label_contradictions(cfg))
    need(cfg.model.dropout is None or 0 <= cfg.model.dropout < 1, f"model.dropout must be in [0, 1) (got {cfg.model.dropout})")
    need(bool(cfg.output.dir), "output.dir is empty")
    need(not cfg.output.dir or Path(cfg.output.dir).name != "", f"output.dir '{cfg.output.dir}' is the root folder; give a folder of its own")
    need(cfg.output.embedding_report_max_texts >= 10, f"output.embedding_report_max_texts must be >= 10 (got {cfg.output.embedding_report_max_texts})")
    return out


def _multi_label_contradictions(cfg: Config) -> list[str]:
    """The multi-label keys need multi_label, and the options that only mean something for one label per example refuse it."""
    t, d = cfg.train, cfg.data
    out = []
    if not d.multi_label:
        if d.label_columns is not None:
            out.append("data.label_columns is set but data.multi_label is false; set data.multi_label true (or use data.label_column)")
        if d.label_delimiter is not None:
            out.append("data.label_delimiter is set but data.multi_label is false; set data.multi_label true (or drop label_delimiter)")
        return out
    if d.label_delimiter is not None and not d.label_delimiter.strip():
        # YAML reads a bare | or > as the start of a block of text, which is empty here: the user wrote '|' unquoted.
        out.append("data.label_delimiter is empty or whitespace; use a visible separator such as '|' or ';', quoted in a "
                   "YAML file (label_delimiter: '|'), where a bare | is read as an empty block of text")
    if d.label_columns is not None:
        if d.label_delimiter is not None:
            out.append("data.label_columns and data.label_delimiter exclude each other (0/1 columns have nothing to split); drop one")
        dup = sorted({c for c in d.label_columns if d.label_columns.count(c) > 1})
        if dup:
            out.append(f"data.label_columns names '{dup[0]}' twice; list each label column once")
        if any(not c.strip() for c in d.label_columns):
            out.append("data.label_columns has an empty column name")
        clash = [c for c in d.label_columns if c in (d.text_column, d.text_pair_column)]
        if clash:
            out.append(f"data.label_columns includes the text column '{clash[0]}'; label columns hold 0/1 values")
    # Each of these is defined for one class per example; multi-label trains one sigmoid per label with binary cross-entropy.
    if t.class_weights != "none":
        out.append("train.class_weights is not supported for multi-label (data.multi_label true); set it to none")
    if t.contrastive_weight > 0:
        out.append("train.contrastive_weight > 0 is not supported for multi-label (positives are defined by one shared class); set it to 0")
    if t.sampler != "random":
        out.append(f"train.sampler {t.sampler} is not supported for multi-label (it balances single classes); set it to random")
    if t.label_smoothing > 0:
        out.append("train.label_smoothing is not supported for multi-label (the loss is binary cross-entropy); set it to 0")
    return out


def without_effect(cfg: Config) -> list[str]:
    """Settings changed from their default that the rest of the config makes meaningless, one note each.

    Notes rather than errors: a script that sweeps one option over several modes (bench/long_texts.py passes a
    stride to both) should not fail, but a user who set a stride and forgot `long_texts: window` should hear it.
    """
    default = Config()
    notes = []
    for section, key, idle, unless in (
        ("data", "window_stride", cfg.data.long_texts != "window", "data.long_texts is window"),
        ("data", "window_aggregate", cfg.data.long_texts != "window", "data.long_texts is window"),
        ("data", "threshold_min_positives", not cfg.data.multi_label, "data.multi_label is true"),
        ("data", "validation_fraction", cfg.data.validation is not None, "data.validation is unset (a share of train is carved only where no validation split is given)"),
        ("data", "test_fraction", cfg.data.test is not None, "data.test is unset (a share of train is carved only where no test split is given)"),
        ("train", "unfreeze_start", cfg.train.gradual_unfreezing == "off", "train.gradual_unfreezing is epoch or steps"),
        ("train", "embedding_lr", cfg.train.freeze_embeddings, "train.freeze_embeddings is false"),
        ("train", "contrastive_temperature", cfg.train.contrastive_weight == 0, "train.contrastive_weight is above 0"),
        ("train", "lr_batch_size", cfg.train.lr_scaling == "none", "train.lr_scaling is sqrt or linear"),
        ("train", "mlm_lr", cfg.train.mlm_epochs == 0, "train.mlm_epochs is above 0"),
        ("train", "mlm_probability", cfg.train.mlm_epochs == 0, "train.mlm_epochs is above 0"),
        ("data", "unlabelled", cfg.train.mlm_epochs == 0, "train.mlm_epochs is above 0"),
        ("output", "embedding_report_max_texts", not cfg.output.embedding_report, "output.embedding_report is true"),
    ):
        if idle and getattr(getattr(cfg, section), key) != getattr(getattr(default, section), key):
            notes.append(f"{section}.{key} is set but has no effect unless {unless}")
    return notes


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)


ALWAYS_SHOWN = ("data.source", "model.name", "output.dir")
"""What `config_changes` lists even at its default: what a run trains, on what, and where it writes."""


def config_changes(cfg: Config) -> list[str]:
    """`section.key: value` for the data source, the model, the output folder and every setting that differs from
    its default: what a log of the run needs, without the ~70 lines of the whole config (--dry-run prints those)."""
    default = Config().to_dict()
    lines = []
    for section, values in cfg.to_dict().items():
        for key, value in values.items():
            name = f"{section}.{key}"
            if name in ALWAYS_SHOWN or value != default[section][key]:
                lines.append(f"{name}: {yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix('...').strip()}")
    return lines
