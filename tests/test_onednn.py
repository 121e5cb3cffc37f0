"""Float32 inference through oneDNN's linear kernels (taskembed/onednn.py): the same products as
torch.nn.functional.linear to float32 rounding, used only where it says, and off when asked."""

from __future__ import annotations

import threading
from contextlib import contextmanager

import pytest
import torch

import taskembed.onednn as onednn
from taskembed.data import encode
from taskembed.inference import predict_logits
from taskembed.onednn import onednn_linear
from tests.test_trim import padded_batch, tiny

pytestmark = pytest.mark.skipif(not onednn.available(), reason="this torch build has no usable oneDNN linear operator")


@pytest.fixture
def calls(monkeypatch):
    """How many times the oneDNN operator ran."""
    seen = []
    op = onednn._op()

    def counting(*args):
        seen.append(args[0].shape)
        return op(*args)

    monkeypatch.setattr(onednn, "_op", lambda: counting)
    return seen


@contextmanager
def _switched_off(monkeypatch, value: str = "0"):
    """TASKEMBED_ONEDNN_LINEAR set to value within the block; available() re-read on entry and on exit."""
    monkeypatch.setenv("TASKEMBED_ONEDNN_LINEAR", value)
    onednn.available.cache_clear()
    try:
        yield
    finally:
        monkeypatch.delenv("TASKEMBED_ONEDNN_LINEAR")
        onednn.available.cache_clear()


def _linears(model) -> int:
    return sum(type(m) is torch.nn.Linear for m in model.modules())


@pytest.mark.parametrize("kind", ["bert", "roberta", "distilbert"])
def test_every_linear_layer_runs_on_onednn_and_gives_the_same_logits(kind, calls):
    model = tiny(kind).eval()
    batch = padded_batch()
    with torch.no_grad():
        reference = model(**batch).logits
        assert not calls  # outside the block nothing changes
        with onednn_linear(model) as on:
            assert on
            logits = model(**batch).logits
    # BERT and RoBERTa: q, k, v, output, intermediate and output dense per layer, the pooler or head dense, the classifier.
    assert len(calls) == _linears(model) > 0
    torch.testing.assert_close(logits, reference, atol=1e-6, rtol=1e-5)


def test_gradients_autocast_and_other_threads_keep_the_module_forward(calls):
    model = tiny("bert").eval()
    batch = padded_batch()
    seen_in_thread = []
    with onednn_linear(model):
        model(**batch).logits.sum().backward()  # recording gradients: the oneDNN operator has no backward
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            model(**batch)  # autocast's bf16 products are already oneDNN's
        assert not calls
        with torch.no_grad():
            worker = threading.Thread(target=lambda: (model(**batch), seen_in_thread.append(len(calls))))
            worker.start()
            worker.join()
    assert seen_in_thread == [0]  # the switch is this thread's only
    assert model.bert.encoder.layer[0].attention.self.query.weight.grad is not None


def test_the_environment_turns_it_off(monkeypatch, calls):
    with _switched_off(monkeypatch):
        model = tiny("bert").eval()
        with torch.no_grad(), onednn_linear(model) as on:
            model(**padded_batch())
        assert not on and not calls
    assert onednn.available()


def test_predict_logits_use_it_and_keep_float32_results(tiny_model_dir, calls, monkeypatch):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=2)
    texts = ["a fine film", "dull and long, far too long for what it has to say", "fresh", "the cast is superb"]
    enc = encode(tokenizer, texts, None, max_length=32)
    fast = predict_logits(model, enc, tokenizer.pad_token_id, torch.device("cpu"))
    assert calls
    with _switched_off(monkeypatch, "off"):
        calls.clear()
        mkl = predict_logits(model, enc, tokenizer.pad_token_id, torch.device("cpu"))
        assert not calls
    assert fast.dtype == torch.float32
    torch.testing.assert_close(fast, mkl, atol=1e-5, rtol=1e-5)
    assert torch.equal(fast.argmax(-1), mkl.argmax(-1))


@pytest.mark.parametrize("preset, expected", [(None, "4096"), ("7", "7")])
def test_importing_taskembed_sets_onednns_primitive_cache_unless_the_user_did(preset, expected):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "ONEDNN_PRIMITIVE_CACHE_CAPACITY"}
    if preset is not None:
        env["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] = preset
    code = "import os, taskembed; print(os.environ['ONEDNN_PRIMITIVE_CACHE_CAPACITY'])"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == expected
