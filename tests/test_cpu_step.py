"""The CPU training step's shortcuts: lane dropout (train.fast_dropout), the embedding gradient written by rows
(train.embedding_grad_rows), the token table trained as its used rows (train.compact_vocab) and clipping inside
the fused optimizer step. Each must compute what it replaces."""

from __future__ import annotations

import json
import threading

import pytest
import torch
from safetensors.torch import load_file

import taskembed
import taskembed.dropout as lanes
from bench.fault_injection import write_csv
from taskembed.dropout import ATTENTION, _lanes, _softmax, fast_dropout, keep_scale, lane_dropout
from taskembed.loop import clip_in_step
from taskembed.token_table import CompactVocab, EmbeddingRows
from tests.conftest import make_rows
from tests.test_trim import padded_batch, tiny, train_without_dropout


def test_every_lane_of_a_draw_is_uniform():
    torch.manual_seed(0)
    values = _lanes(torch.Size([4, 2**18]), torch.device("cpu")).view(-1, 4).float()  # column k: lane k of each 64-bit draw
    for k in range(4):
        lane = values[:, k]
        assert lane.min() == -32768 and lane.max() == 32767  # the top lane too: all 64 bits are random
        assert abs(lane.mean().item()) < 150  # uniform over [-32768, 32767]: mean -0.5, standard error 36
        assert abs((lane < -26214).float().mean().item() - 0.1) < 0.003


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_lane_dropout_drops_at_rate_p_and_keeps_the_expectation(p):
    torch.manual_seed(1)
    x = torch.rand(1000, 1000) + 0.5
    out = lane_dropout(x, p)
    threshold, scale = keep_scale(p)
    kept = out != 0
    assert abs(1 - kept.float().mean().item() - p) < 0.002  # 1e6 elements: standard error at most 5e-4
    assert torch.equal(out[kept], x[kept] * scale)
    assert abs(out.sum().item() / x.sum().item() - 1) < 0.003
    assert keep_scale(0.1) == (6554 - 32768, 65536 / (65536 - 6554))  # drop rate 6554 / 65536 = 0.1000061


def test_lane_dropout_gradient_is_its_mask_and_bf16_stays_bf16():
    torch.manual_seed(2)
    x = torch.randn(64, 48, requires_grad=True)
    out = lane_dropout(x, 0.2)
    g = torch.randn_like(out)
    out.backward(g)
    mask = torch.where(out != 0, keep_scale(0.2)[1], 0.0)
    assert torch.allclose(x.grad, g * mask)
    h = torch.randn(64, 48).bfloat16()
    torch.manual_seed(3)
    low = lane_dropout(h, 0.2)
    torch.manual_seed(3)
    ref = lane_dropout(h.float(), 0.2)
    assert low.dtype == torch.bfloat16 and torch.equal(low, ref.bfloat16())  # one rounding, as native dropout
    # bf16 keeps its mask as bf16 0/1 for backward: the gradient is still the float32 one rounded once.
    hb = h.clone().requires_grad_()
    torch.manual_seed(3)
    out = lane_dropout(hb, 0.2)
    gb = torch.randn(64, 48).bfloat16()
    out.backward(gb)
    kept = (ref != 0).float()
    assert hb.grad.dtype == torch.bfloat16 and torch.equal(hb.grad, (gb.float() * kept * keep_scale(0.2)[1]).bfloat16())
    assert lane_dropout(x, 0.0) is x and not lane_dropout(x, 0.3, training=False).ne(x).any()
    assert not lane_dropout(x, 1.0).any()
    # p within half a lane step of 0 or of 1 rounds to keeping everything or dropping everything (no division by zero)
    assert lane_dropout(x, 1e-6) is x and not lane_dropout(x, 1 - 1e-6).any()
    assert lane_dropout(x, 1 / 65536).ne(x).any()  # the smallest rate that still drops


def test_lane_masks_follow_the_seed_and_the_saved_rng_state():
    x = torch.ones(10_000)
    torch.manual_seed(5)
    first = lane_dropout(x, 0.1)
    state = torch.get_rng_state()
    second = lane_dropout(x, 0.1)
    torch.set_rng_state(state)
    assert torch.equal(lane_dropout(x, 0.1), second)  # a resumed checkpoint draws the same masks
    torch.manual_seed(5)
    assert torch.equal(lane_dropout(x, 0.1), first) and not torch.equal(first, second)


def count_lane_calls(monkeypatch) -> list[float]:
    calls: list[float] = []
    real = lanes.lane_dropout

    def spy(x, p, training=True):
        calls.append(p)
        return real(x, p, training)

    monkeypatch.setattr(lanes, "lane_dropout", spy)
    return calls


def test_inside_the_block_every_dropout_of_a_training_forward_draws_lanes(monkeypatch):
    model = tiny("bert", dropout=0.1, layers=2).train()
    calls = count_lane_calls(monkeypatch)
    batch = padded_batch()
    model(**batch).logits.sum().backward()
    assert calls == []  # outside the block: PyTorch's own dropout
    with fast_dropout(model) as on:
        assert on and model.config._attn_implementation == ATTENTION
        model(**batch).logits.sum().backward()
        # embeddings 1, per layer attention probabilities + 2 hidden, classifier 1 (its dropout is the hidden one)
        assert len(calls) == 1 + 2 * 3 + 1 and set(calls) == {0.1}
        calls.clear()
        other: list[int] = []
        thread = threading.Thread(target=lambda: (model(**batch), other.append(len(calls))))
        thread.start()
        thread.join()
        assert other == [0]  # another thread's forward keeps SDPA and PyTorch's dropout
    assert model.config._attn_implementation == "sdpa"
    with fast_dropout(model, enabled=False) as on:
        assert not on and model.config._attn_implementation == "sdpa"


@pytest.mark.parametrize("kind", ["bert", "roberta", "electra", "distilbert"])
def test_without_dropout_the_plain_attention_gives_the_same_logits_and_gradients(kind):
    """Eval mode: no dropout anywhere, so the switched attention and its additive mask must equal SDPA."""
    model = tiny(kind, dropout=0.1).eval()
    batch = padded_batch()
    results = []
    for on in (False, True):
        model.zero_grad()
        with fast_dropout(model, enabled=on):
            logits = model(**batch).logits
        logits.square().sum().backward()
        results.append((logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    assert torch.allclose(results[0][0], results[1][0], atol=1e-5)
    for name, grad in results[0][1].items():
        assert torch.allclose(results[1][1][name], grad, atol=1e-5), name
    if kind != "distilbert":
        assert model._taskembed_lane_attention  # these go through transformers' attention interface


@pytest.mark.parametrize("keys", [16, 27, 31, 32, 40, 50, 63, 64])
def test_the_attention_softmax_is_the_float32_one_rounded_to_bf16_where_it_goes_through_float32(keys):
    torch.manual_seed(keys)
    scores = (torch.randn(3, 4, 5, keys) * 4).bfloat16().requires_grad_()
    out = _softmax(scores)
    grad = torch.randn_like(out)
    out.backward(grad)
    via_float32 = keys % 32 >= 16
    reference = scores.detach().float().requires_grad_()
    expected = torch.softmax(reference, dim=-1)
    expected.backward(grad.float())
    assert out.dtype == torch.bfloat16 and scores.grad.dtype == torch.bfloat16
    if via_float32:
        assert torch.equal(out, expected.bfloat16())  # one rounding of the float32 result
        assert torch.equal(scores.grad, reference.grad.bfloat16())
    else:
        assert torch.equal(out, torch.softmax(scores.detach(), dim=-1))  # PyTorch's bf16 kernel, untouched
    assert (out.float() - expected).abs().max() <= 2**-8  # either way within one bf16 rounding of float32
    plain = torch.randn(2, 3, keys)
    assert torch.equal(_softmax(plain), torch.softmax(plain, dim=-1))  # float32 scores are left alone


def test_the_gradient_norm_reads_the_embedding_rows_a_step_touched_and_gets_the_dense_norm():
    model = tiny("bert", dropout=0.0).train()
    params = list(model.parameters())
    opt = torch.optim.AdamW(params, lr=1e-3, fused=True)
    with EmbeddingRows.of(model, True) as rows:
        for seed in (1, 2):
            model.zero_grad(set_to_none=True)
            batch = padded_batch(seed)
            model(**batch).logits.square().sum().backward()
            rows.densify()
            table = model.get_input_embeddings().weight.grad
            used = batch["input_ids"].unique()
            used = used[used != model.get_input_embeddings().padding_idx]  # the padding row gets no gradient
            assert torch.equal(rows.rows, used)  # each token once, however often the batch uses it
            assert rows.norm_view(table).shape == (len(used), table.shape[1])
            dense = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
            assert torch.allclose(clip_in_step(opt, params, 0.0, rows), dense, rtol=1e-6)


def test_a_model_with_eager_attention_keeps_it_and_still_gets_lane_dropout(monkeypatch):
    model = tiny("bert", attn="eager").train()
    calls = count_lane_calls(monkeypatch)
    with fast_dropout(model):
        assert model.config._attn_implementation == "eager" and not model._taskembed_lane_attention
        model(**padded_batch())
    assert len(calls) == 1 + 2 * 2 + 1  # the hidden dropouts; eager attention draws its own


def test_embedding_rows_give_the_dense_gradient_step_after_step():
    model = tiny("bert", dropout=0.0).train()
    dense = []
    for seed in (1, 2):  # two steps with different tokens: the first step's rows must not leak into the second
        model.zero_grad(set_to_none=True)
        model(**padded_batch(seed)).logits.square().sum().backward()
        dense.append(model.get_input_embeddings().weight.grad.clone())
    with EmbeddingRows.of(model, True) as rows:
        assert rows is not None and model.get_input_embeddings().sparse
        for seed, expected in zip((1, 2), dense):
            model.zero_grad(set_to_none=True)
            model(**padded_batch(seed)).logits.square().sum().backward()
            assert model.get_input_embeddings().weight.grad.is_sparse
            rows.densify()
            grad = model.get_input_embeddings().weight.grad
            assert not grad.is_sparse and torch.allclose(grad, expected, atol=1e-6)
    assert not model.get_input_embeddings().sparse
    with EmbeddingRows.of(model, False) as rows:
        assert rows is None


def test_clipping_inside_the_step_equals_clip_grad_norm():
    def run(inside: bool) -> list[torch.Tensor]:
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
        opt = torch.optim.AdamW(net.parameters(), lr=1e-2, fused=True)
        norms = []
        for step in range(4):
            x = torch.randn(32, 8, generator=torch.Generator().manual_seed(step)) * 10
            net(x).square().sum().backward()
            params = list(net.parameters())
            norms.append(clip_in_step(opt, params, 0.5) if inside else torch.nn.utils.clip_grad_norm_(params, 0.5))
            opt.step()
            opt.zero_grad(set_to_none=True)
        assert min(norms) > 0.5  # the clip was active on every step
        return [p.detach() for p in net.parameters()] + norms

    for a, b in zip(run(False), run(True)):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)


def test_training_with_the_shortcuts_and_without_them_ends_at_the_same_weights(tmp_path, tiny_model_dir):
    """Dropout 0: lane dropout is then the identity, so with the plain attention, the embedding rows and the
    clip in the step the run must take the same steps as PyTorch's defaults, to float rounding."""
    weights, runs = train_without_dropout(tmp_path, tiny_model_dir, lambda on: {
        "train.fast_dropout": on, "train.embedding_grad_rows": on, "train.max_grad_norm": 0.05})
    assert [r["fast_dropout"] for r in runs] == [True, False]
    base = load_file(tiny_model_dir / "model.safetensors")
    moved = 0
    for name, w in weights[1].items():
        assert torch.allclose(weights[0][name], w, atol=1e-5), name
        moved += not torch.equal(w, base.get(name.removeprefix("bert."), w))
    assert moved > 10
    word = "bert.embeddings.word_embeddings.weight"
    assert not torch.equal(weights[0][word], base[word.removeprefix("bert.")])  # the embedding rows trained


def train_compact_and_whole(tmp_path, overrides: dict) -> tuple[list[dict], list]:
    """Train with train.compact_vocab true, then false: each run's weights and its run.json token_rows_trained."""
    weights, rows = [], []
    for on in (True, False):
        out = tmp_path / f"out-{on}"
        taskembed.train(None, {**overrides, "train.compact_vocab": on, "output.dir": str(out)}, progress=False, echo=lambda _m: None)
        weights.append(load_file(out / "model.safetensors"))
        rows.append(json.loads((out / "run.json").read_text())["token_rows_trained"])
    return weights, rows


# Gradual: no validation split, so the weights compared are the last ones, after the table's stage began.
@pytest.mark.parametrize("extra", [{"data.validation_fraction": 0.2},
                                   {"data.validation_fraction": 0.0, "train.gradual_unfreezing": "steps", "train.unfreeze_every": 3}],
                         ids=["default", "gradual"])
def test_compact_vocab_ends_bit_for_bit_where_training_the_whole_table_does(tmp_path, tiny_model_dir, tiny_overrides, extra, monkeypatch):
    """Dropout on, a validation split scored each epoch and checkpoints written (both read the whole table),
    a weight decay large enough to see: every weight must be equal, and the rows no training text uses must
    have shrunk by one common factor and nothing else. With gradual unfreezing the table is frozen at first,
    and AdamW (so the decay of the unused rows) skips it until its stage."""
    unused: list[torch.Tensor] = []
    build = CompactVocab.__init__

    def spy(self, *args):
        build(self, *args)
        unused.append(self.unused.clone())

    monkeypatch.setattr(CompactVocab, "__init__", spy)
    train = write_csv(tmp_path / "train.csv", make_rows(96, seed=3))
    weights, rows = train_compact_and_whole(tmp_path, {**tiny_overrides, "data.source": str(train), "train.weight_decay": 0.5, **extra})
    assert len(unused) == 1 and len(unused[0]) > 0  # the first run compacted, the second did not
    size = len(weights[0]["bert.embeddings.word_embeddings.weight"])
    assert rows == [[size - len(unused[0]), size], None]
    for name, w in weights[1].items():
        assert torch.equal(weights[0][name], w), name
    word = weights[0]["bert.embeddings.word_embeddings.weight"]
    base = load_file(tiny_model_dir / "model.safetensors")["embeddings.word_embeddings.weight"]
    ratio = word[unused[0]] / base[unused[0]]
    assert ratio.max() < 1 and ratio.max() - ratio.min() < 1e-5  # decayed, all by the same factor
    used = torch.ones(len(base), dtype=torch.bool)
    used[unused[0]] = False
    decayed = (word[unused[0]] - base[unused[0]]).abs().max()
    assert (word[used] - base[used]).abs().max() > 5 * decayed  # the used rows trained, beyond the decay


def test_compact_vocab_leaves_the_input_ids_to_the_model(tmp_path, tiny_model_dir, tiny_overrides):
    """RoBERTa numbers positions from input_ids != pad id. Here the pad is [MASK] (id 4) and ids 0 and 1 occur in
    no text, so compact row numbers in input_ids would move the pad and every position; only the lookup may see them."""
    from transformers import BertTokenizerFast, RobertaConfig, RobertaModel

    folder = tmp_path / "tiny-roberta"
    tok = BertTokenizerFast.from_pretrained(tiny_model_dir, pad_token="[MASK]")
    tok.save_pretrained(folder)
    torch.manual_seed(0)
    RobertaModel(RobertaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                               max_position_embeddings=140, pad_token_id=tok.pad_token_id, type_vocab_size=2)).save_pretrained(folder)
    train = write_csv(tmp_path / "train.csv", make_rows(96, seed=3))
    weights, rows = train_compact_and_whole(tmp_path, {**tiny_overrides, "model.name": str(folder), "data.source": str(train),
                                                       "data.validation_fraction": 0.0})
    assert rows[0] is not None and rows[1] is None
    assert tok.pad_token_id == 4 and not {0, 1} & {i for t in make_rows(96, seed=3) for i in tok(t["text"])["input_ids"]}
    for name, w in weights[1].items():
        assert torch.equal(weights[0][name], w), name


@pytest.mark.parametrize("extra", [{}, {"train.contrastive_weight": 0.5, "train.gradual_unfreezing": "steps", "train.unfreeze_every": 1}])
def test_a_failed_fit_gives_the_model_back_whole(tmp_path, tiny_overrides, monkeypatch, extra):
    """A non-finite loss stops training after its backward: the model must still end with its whole table, no
    gradient of the compact size, no hook of fit's (the contrastive term's would keep every later forward's
    output) and every group trainable again (gradual unfreezing had frozen all but the head)."""
    import taskembed.api as api
    import taskembed.loop as loop

    seen, calls = {}, []
    real_fit, real_loss = api.fit, loop.classification_loss

    def fit(model, *args, **kwargs):
        seen["model"] = model
        return real_fit(model, *args, **kwargs)

    def loss(*args, **kwargs):
        calls.append(1)
        return real_loss(*args, **kwargs) * (float("nan") if len(calls) == 3 else 1.0)

    monkeypatch.setattr(api, "fit", fit)
    monkeypatch.setattr(loop, "classification_loss", loss)
    train = write_csv(tmp_path / "train.csv", make_rows(64, seed=4))
    with pytest.raises(loop.TrainingDiverged, match="step 3"):
        taskembed.train(None, {**tiny_overrides, "data.source": str(train), "train.keep_checkpoints": 0, **extra},
                        progress=False, echo=lambda _m: None)
    model = seen["model"]
    table = model.get_input_embeddings()
    assert table.weight.shape[0] == table.num_embeddings == model.config.vocab_size
    assert table.weight.grad is None and not table._forward_pre_hooks
    assert not model.base_model._forward_hooks
    assert all(p.requires_grad for p in model.parameters())


def test_lane_dropout_trains_and_is_recorded(tmp_path, tiny_overrides, monkeypatch):
    calls = count_lane_calls(monkeypatch)
    train = write_csv(tmp_path / "train.csv", make_rows(64, seed=4))
    messages: list[str] = []
    taskembed.train(None, {**tiny_overrides, "data.source": str(train), "train.keep_checkpoints": 0}, progress=False, echo=messages.append)
    assert len(calls) > 0
    assert json.loads((tmp_path / "out" / "run.json").read_text())["fast_dropout"] is True
    assert any("lane dropout" in m for m in messages)
