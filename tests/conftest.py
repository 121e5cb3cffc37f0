"""Shared fixtures: no network, a tiny BERT built in-process, small generated data.

The tiny model (2 layers, hidden 32) and its WordPiece tokenizer are created once
per session from a generated corpus and saved as a normal Hugging Face folder;
tests that train get their own copy of that folder's path and their own output
folder, so nothing leaks between tests.
"""

from __future__ import annotations

import os
import random
import socket

import pytest

os.environ.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
os.environ.setdefault("MPLBACKEND", "Agg")

POSITIVE = "great wonderful superb moving delightful brilliant charming funny smart fresh".split()
NEGATIVE = "dull awful boring tedious clumsy bland messy lifeless stale weak".split()
NEUTRAL = "film movie story plot actor scene script director cast music the a and it is".split()


def _loopback(address) -> bool:
    host = address[0] if isinstance(address, tuple) else address
    return isinstance(host, str) and (host.startswith("127.") or host in ("localhost", "::1")) or not isinstance(address, tuple)


@pytest.fixture(autouse=True, scope="session")
def no_network():
    """Any connection beyond this machine fails the test that makes it: the suite must run offline."""
    real_connect = socket.socket.connect

    def guarded(self, address):
        if not _loopback(address):
            raise RuntimeError(f"test tried to reach the network: {address!r}")
        return real_connect(self, address)

    socket.socket.connect = guarded
    yield
    socket.socket.connect = real_connect


def make_review(rng: random.Random, label: str) -> str:
    words = POSITIVE if label == "pos" else NEGATIVE
    n = rng.randint(3, 12)
    return " ".join(rng.choice(words) if rng.random() < 0.4 else rng.choice(NEUTRAL) for _ in range(n)) + " " + rng.choice(words)


def make_rows(n: int, seed: int = 0, labels=("neg", "pos")) -> list[dict[str, str]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = labels[i % len(labels)]
        rows.append({"text": make_review(rng, "pos" if label == labels[-1] else "neg"), "label": label})
    return rows


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A 2-layer BERT (hidden 32) with a WordPiece tokenizer trained on the fly, as a model folder."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, BertTokenizerFast

    import torch

    out = tmp_path_factory.mktemp("tiny-bert")
    # The vocabulary is written out, not learned: the WordPiece trainer breaks ties between equally
    # frequent merges in hash order, which changes from process to process, so a trained vocabulary
    # made the tiny model (and every threshold or score learned on it) differ between runs.
    # Whole corpus words, then single characters and their "##" continuations, so any other word
    # still tokenizes (into characters) instead of becoming [UNK].
    words = sorted({w for w in " ".join(POSITIVE + NEGATIVE + NEUTRAL + "pair premise hypothesis extra words here".split()).split()})
    chars = sorted({c for c in "abcdefghijklmnopqrstuvwxyz0123456789.,!?'-"})
    pieces = dict.fromkeys(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + chars + ["##" + c for c in chars] + words)  # "a" is both
    tok = Tokenizer(models.WordPiece(vocab={p: i for i, p in enumerate(pieces)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
    )
    fast = BertTokenizerFast(tokenizer_object=tok, model_max_length=128)
    fast.save_pretrained(out)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=37, max_position_embeddings=128)
    BertModel(cfg).save_pretrained(out)
    return out


@pytest.fixture
def keep_threads():
    """For modules whose runs set train.num_threads (1, for exactness): give the rest of the suite its threads back."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def rows():
    return make_rows(120)


@pytest.fixture
def write_csv(tmp_path):
    """Write rows (list of dicts) as CSV and return the path."""
    import csv

    def write(rows, name="data.csv"):
        path = tmp_path / name
        with path.open("w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        return path

    return write


@pytest.fixture
def tiny_overrides(tiny_model_dir, tmp_path):
    """Overrides that make any config train the tiny model quickly into a fresh folder."""
    return {
        "model.name": str(tiny_model_dir),
        "output.dir": str(tmp_path / "out"),
        "train.epochs": 2,
        "train.batch_size": 16,
        "train.lr": 1e-3,
        "train.head_lr": 3e-3,
        "data.max_length": 32,
        "train.bf16": "off",
    }
