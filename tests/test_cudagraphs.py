"""train.cuda_graphs on the CPU: padding to static shapes changes no gradient, the model's forward and backward never
read a device value back to the host, and the loop keeps its side of make_graphed_callables' contract (one capture per
shape, the gradients handed back in buffers that the next replay overwrites). The capture itself needs a GPU; the
stand-in here reruns the module eagerly, so what only a real capture fixes (weight addresses, the dropout stream) is
for the GPU run to check."""

from __future__ import annotations

from contextlib import contextmanager
from unittest import mock

import pytest
import torch
import transformers.utils.import_utils as hf_imports
from torch.utils._python_dispatch import TorchDispatchMode

import taskembed
from taskembed import cudagraphs
from taskembed.config import load_config
from taskembed.errors import UserError
from taskembed.modeling import top_layer_reads_head
from tests.test_trim import padded_batch, tiny, train_without_dropout

# What reads a device value back to the host: a CUDA stream capture fails on any of them.
HOST_READS = {"_local_scalar_dense", "nonzero", "masked_select", "unique", "_unique2", "is_nonzero", "equal"}


class NoHostReads(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.__name__.split(".")[0] in HOST_READS:
            raise AssertionError(f"{func} reads a device value back to the host, which a CUDA graph capture refuses")
        return func(*args, **(kwargs or {}))


@contextmanager
def capturing():
    """As inside a capture: transformers sees a capturing stream (and so skips its own host reads), and any host read fails."""
    with mock.patch.object(hf_imports, "is_cuda_stream_capturing", lambda: True), NoHostReads():
        yield


def stand_in_capture(captured: list):
    """cudagraphs.capture for the CPU, with make_graphed_callables' contract: forward and backward run as captured (no host
    reads), and each weight's gradient comes back in a buffer of the graph that its next replay overwrites."""

    def capture(module, sample, pool):
        captured.append(tuple(t.shape for t in sample))
        assert sample[1][-1, -1] == 0  # the warm-up sees padding, so it takes the masked attention the capture takes
        params = tuple(p for p in module.parameters() if p.requires_grad)
        static = [torch.zeros_like(p) for p in params]

        class Graphed(torch.autograd.Function):
            @staticmethod
            def forward(ctx, *inputs):
                with torch.enable_grad(), capturing():
                    ctx.out = module(*inputs[: len(sample)])
                return ctx.out.detach()

            @staticmethod
            def backward(ctx, grad):
                with capturing():
                    grads = torch.autograd.grad(ctx.out, params, grad)
                for buffer, g in zip(static, grads):
                    buffer.copy_(g)
                return (None,) * len(sample) + tuple(b.detach() for b in static)

        return lambda *inputs: Graphed.apply(*inputs, *params)

    return capture


def test_a_batch_is_padded_to_a_multiple_of_16_tokens_and_the_full_rows_with_dummy_rows_attending_one_token():
    assert [cudagraphs.static_length(w, 128) for w in (1, 16, 17, 100, 120, 128)] == [16, 16, 32, 112, 128, 128]
    assert cudagraphs.static_length(40, 37) == 40 and cudagraphs.static_length(30, 37) == 32  # never past the longest text
    batch = {"input_ids": torch.tensor([[2, 7, 3], [2, 3, 0]]), "attention_mask": torch.tensor([[1, 1, 1], [1, 1, 0]]),
             "labels": torch.tensor([1, 0])}
    padded = cudagraphs.pad_batch(batch, 4, 16, pad_id=0)
    assert padded["input_ids"].shape == padded["attention_mask"].shape == (4, 16)
    assert torch.equal(padded["input_ids"][:2, :3], batch["input_ids"]) and not padded["input_ids"][:, 3:].any()
    assert padded["attention_mask"][:2].sum() == 5 and padded["attention_mask"][2:].tolist() == [[1] + [0] * 15] * 2
    assert padded["labels"] is batch["labels"]


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_padding_rows_and_tokens_changes_no_gradient(kind):
    model = tiny(kind, dropout=0.0).train()
    batch = padded_batch()
    y = torch.tensor([0, 1, 2, 1])
    grads = []
    for pad in (False, True):
        model.zero_grad()
        inputs = cudagraphs.pad_batch(batch, 7, 16, pad_id=1 if kind == "roberta" else 0) if pad else batch
        with top_layer_reads_head(model):
            logits = model(**inputs).logits[: len(y)]
        torch.nn.functional.cross_entropy(logits, y).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for name, g in grads[0].items():
        assert torch.allclose(grads[1][name], g, atol=1e-6), name


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_the_captured_forward_and_backward_never_read_a_device_value_to_the_host(kind):
    """On the meta device every operation whose result depends on the data (.item(), nonzero, boolean indexing) fails."""
    model = tiny(kind).train().to("meta")
    batch = {k: v.to("meta") for k, v in cudagraphs.pad_batch(padded_batch(), 6, 16, pad_id=1 if kind == "roberta" else 0).items()}
    table = model.get_input_embeddings()
    table.register_forward_pre_hook(lambda _m, args: (torch.arange(60, device="meta")[args[0]],))  # as CompactVocab looks ids up
    with mock.patch.object(hf_imports, "is_cuda_stream_capturing", lambda: True), top_layer_reads_head(model), \
            torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=False):
        model(**batch).logits.float().sum().backward()
    assert all(p.grad is not None and p.grad.is_meta for p in model.parameters())  # the backward reached every weight
    with pytest.raises(Exception, match="meta"):  # the check itself: outside a capture transformers reads the mask
        model(**batch).logits.sum().backward()


@pytest.mark.parametrize("accumulate", [1, 2])
def test_training_through_graphs_ends_at_the_eager_weights(tmp_path, tiny_model_dir, monkeypatch, accumulate):
    """No dropout: through the stand-in graphs (padded shapes, the gradients in the graphs' buffers) the run must take
    the eager run's steps to float rounding, also when two micro-batches of one shape make a step."""
    captured: list = []
    monkeypatch.setattr(cudagraphs, "available", lambda device: True)
    monkeypatch.setattr(cudagraphs, "capture", stand_in_capture(captured))
    monkeypatch.setattr(cudagraphs, "BUCKET", 4)  # the texts have 4 to 15 tokens: several shapes, also within one step
    weights, runs = train_without_dropout(tmp_path, tiny_model_dir, lambda on: {
        "train.cuda_graphs": on, "train.grad_accum": accumulate, "train.batch_size": 8})
    assert len(captured) >= 3 and all(rows == 8 and width % 4 == 0 or width == 15 for shape in captured for rows, width in shape)
    assert len(captured) == len(set(captured))  # one capture per shape
    assert [r["cuda_graphs"] for r in runs] == [len(captured), None]
    for name, w in weights[1].items():
        assert torch.allclose(weights[0][name], w, atol=1e-5), name


def test_without_a_gpu_the_setting_is_noted_and_training_runs_eagerly(tmp_path, tiny_overrides, write_csv, rows):
    said: list[str] = []
    with mock.patch.object(cudagraphs, "capture", side_effect=AssertionError("no capture on the CPU")):
        taskembed.train(None, {**tiny_overrides, "data.source": str(write_csv(rows)), "train.cuda_graphs": True,
                               "train.epochs": 1, "train.keep_checkpoints": 0}, progress=False, echo=said.append)
    assert "train.cuda_graphs: no CUDA device (cpu), so the steps run without graphs" in said
    assert (tmp_path / "out" / "model.safetensors").is_file()


@pytest.mark.parametrize("clash", [{"train.gradual_unfreezing": "epoch"}, {"train.auto_batch": True},
                                   {"data.long_texts": "window"}, {"train.contrastive_weight": 0.1}])
def test_graphs_refuse_what_changes_shapes_or_what_the_step_reads(clash):
    with pytest.raises(UserError, match="train.cuda_graphs cannot be combined with " + next(iter(clash)).replace(".", r"\.")):
        load_config(overrides={"train.cuda_graphs": True, **clash})


def test_a_step_that_cannot_be_captured_stops_with_one_line_naming_the_setting(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device: torch.zeros(8, dtype=torch.uint8))
    monkeypatch.setattr(torch.cuda, "make_graphed_callables", mock.Mock(
        side_effect=RuntimeError("CUDA error: operation not permitted when stream is capturing\nmore detail")))
    with pytest.raises(UserError, match=r"could not be captured as a CUDA graph \(CUDA error: operation not permitted when "
                                        r"stream is capturing\); set train.cuda_graphs false$"):
        cudagraphs.capture(torch.nn.Linear(2, 2), (torch.zeros(1, 2),), pool=None)
