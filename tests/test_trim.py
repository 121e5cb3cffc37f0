"""The top layer computed for the head's row only (train.trim_top_layer): exact, scoped, and refused where it would not be."""

from __future__ import annotations

import json
import shutil
import threading

import pytest
import torch
from safetensors.torch import load_file

import taskembed
from bench.fault_injection import write_csv
from taskembed.modeling import can_trim_top_layer, top_layer_reads_head
from tests.conftest import make_rows


def tiny(kind: str = "bert", dropout: float = 0.1, attn: str = "sdpa", layers: int = 2):
    import transformers

    config_class, model_class = {
        "bert": (transformers.BertConfig, transformers.BertForSequenceClassification),
        "roberta": (transformers.RobertaConfig, transformers.RobertaForSequenceClassification),
        "electra": (transformers.ElectraConfig, transformers.ElectraForSequenceClassification),
        "distilbert": (transformers.DistilBertConfig, transformers.DistilBertForSequenceClassification),
    }[kind]
    sizes = (dict(dim=16, n_layers=layers, n_heads=2, hidden_dim=20, dropout=dropout, attention_dropout=dropout)
             if kind == "distilbert" else
             dict(hidden_size=16, num_hidden_layers=layers, num_attention_heads=2, intermediate_size=20,
                  hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout))
    torch.manual_seed(0)
    if kind == "electra":
        sizes["embedding_size"] = 16
    config = config_class(vocab_size=60, max_position_embeddings=40, num_labels=3, **sizes)
    config._attn_implementation = attn
    return model_class(config)


def padded_batch(seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 60, (4, 9), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0  # two texts with padding, so the sliced attention mask matters
    mask[3, 3:] = 0
    ids[mask == 0] = 0
    return {"input_ids": ids, "attention_mask": mask}


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("kind", ["bert", "roberta", "electra"])
def test_trimmed_logits_equal_the_full_forward(kind, attn):
    model = tiny(kind, attn=attn).eval()
    batch = padded_batch()
    with torch.no_grad():
        full = model(**batch).logits
        with top_layer_reads_head(model) as trimmed:
            assert trimmed  # these heads read the first token and these layers have BERT's structure
            logits = model(**batch).logits
            rows = model.base_model(**batch).last_hidden_state.shape[1]
    assert rows == 1  # the work was really skipped, not recomputed
    assert torch.allclose(logits, full, atol=1e-6), (logits - full).abs().max()


def test_trimmed_gradients_equal_the_full_backward():
    # No dropout, so the two passes are the same function; every parameter's gradient must agree.
    model = tiny(dropout=0.0).train()
    batch = padded_batch()
    y = torch.tensor([0, 1, 2, 1])
    grads = []
    for on in (False, True):
        model.zero_grad()
        with top_layer_reads_head(model, on):
            torch.nn.functional.cross_entropy(model(**batch).logits, y).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    # the top layer's query weights get a gradient from the one row alone, and it is the same
    assert "bert.encoder.layer.1.attention.self.query.weight" in grads[1]
    for name, g in grads[0].items():
        assert torch.allclose(grads[1][name], g, atol=1e-6, rtol=1e-4), name


def test_outside_the_block_and_in_other_threads_every_token_is_computed():
    model = tiny().eval()
    batch = padded_batch()
    seen = {}

    def other_thread():  # e.g. the demo embedding texts while a prediction runs
        seen["other"] = model.base_model(**batch).last_hidden_state.shape[1]

    with torch.no_grad():
        with top_layer_reads_head(model):
            seen["inside"] = model.base_model(**batch).last_hidden_state.shape[1]
            t = threading.Thread(target=other_thread)
            t.start()
            t.join()
        seen["after"] = model.base_model(**batch).last_hidden_state.shape[1]
    assert seen == {"inside": 1, "other": 9, "after": 9}


def test_models_it_does_not_fit_are_left_whole():
    distil = tiny("distilbert").eval()  # a different layer structure
    assert not can_trim_top_layer(distil)
    # a BERT-structured layer whose forward does something else (here: a scaled residual) fails the numerical check
    odd = tiny().eval()
    layer = odd.bert.encoder.layer[-1]

    class Scaled(type(layer)):
        def forward(self, hidden_states, *args, **kwargs):
            return 2 * super().forward(hidden_states, *args, **kwargs)

    layer.__class__ = Scaled
    Scaled.__name__ = "BertLayer"
    batch = padded_batch()
    with torch.no_grad():
        full = odd(**batch).logits
        with top_layer_reads_head(odd) as trimmed:
            logits = odd(**batch).logits
    assert not trimmed and not can_trim_top_layer(odd)
    assert torch.equal(logits, full)


def train_without_dropout(tmp_path, tiny_model_dir, switch) -> tuple[list[dict], list[dict]]:
    """Train the tiny model with every dropout at 0, once with the overrides switch(True) and once with switch(False):
    the weights and run.json of each run."""
    model_dir = tmp_path / "tiny-no-dropout"
    shutil.copytree(tiny_model_dir, model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (model_dir / "config.json").write_text(json.dumps(config))
    train = write_csv(tmp_path / "train.csv", make_rows(96, seed=3))
    weights, runs = [], []
    for on in (True, False):
        out = tmp_path / f"out-{on}"
        overrides = {"data.source": str(train), "model.name": str(model_dir), "model.dropout": 0.0, "output.dir": str(out),
                     "data.max_length": 32, "train.epochs": 2, "train.batch_size": 16, "train.lr": 1e-3, "train.head_lr": 3e-3,
                     "train.bf16": "off", "train.keep_checkpoints": 0, **switch(on)}
        taskembed.train(None, overrides, progress=False, echo=lambda _m: None)
        weights.append(load_file(out / "model.safetensors"))
        runs.append(json.loads((out / "run.json").read_text()))
    return weights, runs


def test_training_with_and_without_the_trim_ends_at_the_same_weights(tmp_path, tiny_model_dir):
    """No dropout: the trimmed run must take the same steps as the full one, to float rounding."""
    weights, runs = train_without_dropout(tmp_path, tiny_model_dir, lambda on: {"train.trim_top_layer": on})
    assert [r["trim_top_layer"] for r in runs] == [True, False]
    moved = 0
    for name, w in weights[1].items():
        assert torch.allclose(weights[0][name], w, atol=1e-5), name
        moved += not torch.equal(w, load_file(tiny_model_dir / "model.safetensors").get(name.removeprefix("bert."), w))
    assert moved > 10  # the runs trained (the comparison is not between two untouched copies)
