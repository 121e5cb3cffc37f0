"""Out of memory: an opt-in retry with smaller micro-batches keeps the effective batch (simulated on CPU)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

import taskembed
from taskembed.errors import UserError
from tests.conftest import make_rows


@pytest.fixture
def oom_above(monkeypatch):
    """Make the BERT forward raise CUDA's out-of-memory error for batches larger than `limit` rows."""
    from transformers.models.bert import modeling_bert

    real = modeling_bert.BertModel.forward
    calls = {"oom": 0}

    def install(limit: int):
        def forward(self, input_ids=None, *args, **kwargs):
            if self.training and input_ids is not None and input_ids.shape[0] > limit:
                calls["oom"] += 1
                raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
            return real(self, input_ids, *args, **kwargs)

        monkeypatch.setattr(modeling_bert.BertModel, "forward", forward)
        return calls

    return install


def train(overrides, tmp_path, name, echo=lambda _m: None, **extra):
    return taskembed.train(None, {**overrides, "output.dir": str(tmp_path / name), **extra}, progress=False, echo=echo)


@pytest.mark.parametrize("weights", [None, {"neg": 1.0, "pos": 5.0}])
def test_auto_batch_halves_until_it_fits_and_keeps_the_result(tiny_overrides, tiny_model_dir, write_csv, tmp_path, oom_above, capsys,
                                                              weights):
    # Without dropout the split run differs from the whole-batch run only in summation order
    # (with dropout, smaller pieces draw different masks). With class weights each piece counts by its share
    # of the step's weight, so weighted cross-entropy over the pieces is the whole batch's too.
    import json
    import shutil

    model = tmp_path / "no-dropout"
    shutil.copytree(tiny_model_dir, model)
    cfg = json.loads((model / "config.json").read_text())
    cfg.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (model / "config.json").write_text(json.dumps(cfg))
    base = {**tiny_overrides, "model.name": str(model), "data.source": str(write_csv(make_rows(96, seed=4))), "train.epochs": 1,
            "output.embedding_report": False, "output.baselines": False, "train.keep_checkpoints": 0}
    if weights:
        base["train.class_weights"] = weights
    reference = load_file(train(base, tmp_path, "ref").output_dir / "model.safetensors")
    calls = oom_above(4)  # batch 16 fits only as 4 pieces of 4
    said: list[str] = []
    res = train(base, tmp_path, "auto", echo=said.append, **{"train.auto_batch": True})
    out = "\n".join(said)  # through the caller's echo, as every line of a run
    assert calls["oom"] == 2 and "split in 2" in out and "split in 4" in out
    ref_log = (tmp_path / "ref" / "log.jsonl").read_text().splitlines()
    auto_log = (res.output_dir / "log.jsonl").read_text().splitlines()
    digests = [[json.loads(x).get("batches") for x in log] for log in (ref_log, auto_log)]
    assert digests[0] == digests[1]  # the same examples in every optimizer step
    weights = load_file(res.output_dir / "model.safetensors")
    # Same examples per optimizer step: only the summation order differs, so the weights agree closely.
    for k in reference:
        assert torch.allclose(weights[k], reference[k], atol=1e-5), k


def test_without_auto_batch_oom_is_a_clear_error(tiny_overrides, write_csv, tmp_path, oom_above):
    oom_above(4)
    base = {**tiny_overrides, "data.source": str(write_csv(make_rows(64, seed=4))), "train.epochs": 1}
    with pytest.raises(UserError, match="out of memory with micro-batches of about 16; lower train.batch_size"):
        train(base, tmp_path, "plain")
    assert not (tmp_path / "plain").exists()


def test_auto_batch_has_a_floor(tiny_overrides, write_csv, tmp_path, oom_above):
    oom_above(0)  # nothing fits
    base = {**tiny_overrides, "data.source": str(write_csv(make_rows(64, seed=4))), "train.epochs": 1, "train.auto_batch": True}
    with pytest.raises(UserError, match="out of memory with micro-batches of about 1;"):
        train(base, tmp_path, "floor")
