"""Gradual unfreezing, the contrastive term, the balanced sampler, class-weight maps and sliding windows."""

from __future__ import annotations

import json
import random

import pytest
import torch
from safetensors.torch import load_file

import taskembed
from bench import fault_injection as fi
from taskembed.losses import class_weights
from taskembed.cli import main
from taskembed.config import TrainConfig, load_config
from taskembed.data import Encoded, balanced_sample, encode, train_batches
from taskembed.loop import TrainingInterrupted, lr_lambda
from taskembed.inference import predict_logits
from taskembed.losses import supervised_contrastive
from taskembed.lrplan import build_plan, unfreeze_steps
from tests.conftest import NEGATIVE, NEUTRAL, POSITIVE, make_rows
from tests.test_resume import interrupt_after, quiet, same_weights


def tiny_bert(layers: int = 3):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    return BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=layers, num_attention_heads=2,
                                                    intermediate_size=20, max_position_embeddings=32, num_labels=2))


# --- gradual unfreezing: the plan and the schedule -------------------------------------------------


def test_plan_stages_go_top_down_from_the_head():
    plan = build_plan(tiny_bert(3), lr=1e-3, decay=0.5, head_lr=1e-2, unfreeze_start=1)
    stages = {g.name: g.unfreeze_stage for g in plan.groups}
    # head and the top layer at once, then one group per stage down to the embeddings
    assert stages == {"head": 0, "layer.3": 0, "layer.2": 1, "layer.1": 2, "embeddings": 3}
    assert plan.gradual and plan.stages == 3
    assert "trains from" in plan.table() and "stage 3" in plan.table()
    assert plan.to_json()["groups"][0]["unfreeze_stage"] == 3

    frozen = build_plan(tiny_bert(3), lr=1e-3, decay=0.5, head_lr=1e-2, unfreeze_start=0, freeze_layers=1, freeze_embeddings=True)
    assert {g.name: (g.trainable, g.unfreeze_stage) for g in frozen.groups} == {
        "embeddings": (False, 0), "layer.1": (False, 0), "layer.2": (True, 2), "layer.3": (True, 1), "head": (True, 0)}
    assert not build_plan(tiny_bert(3), lr=1e-3, decay=0.5, head_lr=1e-2).gradual


def test_unfreeze_steps_per_epoch_and_per_steps():
    plan = build_plan(tiny_bert(3), lr=1e-3, decay=0.5, head_lr=1e-2, unfreeze_start=0)  # 4 stages after 0
    assert unfreeze_steps(plan, "epoch", 0, 10) == [0, 10, 20, 30, 40]
    assert unfreeze_steps(plan, "steps", 3, 10) == [0, 3, 6, 9, 12]
    spread = unfreeze_steps(plan, "steps", 0, 10)  # every group trains before the first epoch ends
    assert spread[0] == 0 and spread == sorted(spread) and spread[-1] < 10


def test_a_late_group_warms_up_again_and_then_follows_the_decay():
    cfg = TrainConfig(warmup_ratio=0.1, schedule="linear")
    base, late = lr_lambda(cfg, 100), lr_lambda(cfg, 100, start=40)
    assert [late(s) for s in (0, 20, 39)] == [0.0, 0.0, 0.0]
    assert 0 < late(40) < late(45) < base(45)
    assert late(60) == pytest.approx(base(60))  # past its own warmup it is on the global schedule


def log_lr(folder, group: str) -> list[float]:
    return [e["lr"][group] for e in map(json.loads, (folder / "log.jsonl").read_text().splitlines()) if e["kind"] == "train"]


def test_gradual_unfreezing_keeps_the_frozen_groups_untouched(tiny_model_dir, write_csv, tmp_path, capsys):
    data = write_csv(make_rows(96))
    opts = {"model.name": str(tiny_model_dir), "data.source": str(data), "data.max_length": 32, "train.bf16": "off", "train.epochs": 2,
            "train.batch_size": 8, "train.lr": 1e-3, "train.head_lr": 3e-3, "data.validation_fraction": 0.0,
            "output.baselines": False, "output.embedding_report": False, "train.gradual_unfreezing": "steps"}
    initial = {k: v for k, v in load_file(str(tiny_model_dir / "model.safetensors")).items()}
    # unfreeze_every larger than the run: only stage 0 (the head) ever trains
    capsys.readouterr()
    said: list[str] = []
    late = taskembed.train(None, {**opts, "output.dir": str(tmp_path / "late"), "train.unfreeze_every": 1000}, progress=False, echo=said.append)
    # Said without progress output too, and through the caller's echo like every other line of the run (not printed past it).
    assert any("the last 3 stage(s) never start, so those groups stay frozen" in m for m in said) and capsys.readouterr().out == ""
    # Stages by steps already: the fix is a shorter interval (3 stages after stage 0 within 24 steps), not "steps".
    assert any("(train.unfreeze_every 7 or less, or 0 to spread the stages over the first epoch)" in m for m in said), said
    w = load_file(str(late.output_dir / "model.safetensors"))
    assert torch.equal(w["bert.embeddings.word_embeddings.weight"], initial["embeddings.word_embeddings.weight"])
    assert torch.equal(w["bert.encoder.layer.1.output.dense.weight"], initial["encoder.layer.1.output.dense.weight"])
    assert set(log_lr(late.output_dir, "embeddings")) == {0.0}
    # spread over the first epoch: every group moves, the embeddings last
    spread = taskembed.train(None, {**opts, "output.dir": str(tmp_path / "spread")}, progress=False, echo=quiet)
    w = load_file(str(spread.output_dir / "model.safetensors"))
    assert not torch.equal(w["bert.embeddings.word_embeddings.weight"], initial["embeddings.word_embeddings.weight"])
    rates = log_lr(spread.output_dir, "embeddings")
    assert rates[0] == 0.0 and max(rates) > 0
    plan = json.loads((spread.output_dir / "lr_plan.json").read_text())
    assert plan["gradual_unfreezing"] and {g["name"]: g["unfreeze_stage"] for g in plan["groups"]}["embeddings"] == 3


def test_gradual_unfreezing_resumes_exactly(tiny_model_dir, tmp_path, monkeypatch):
    train = fi.write_csv(tmp_path / "train.csv", make_rows(96, seed=4))
    test = fi.write_csv(tmp_path / "test.csv", make_rows(20, seed=5))
    opts = {**fi.overrides(tiny_model_dir, train, test, tmp_path / "out", epochs=2), "train.checkpoint_every": 3,
            "train.gradual_unfreezing": "steps", "train.unfreeze_every": 2}
    ref = taskembed.train(None, {**opts, "output.dir": str(tmp_path / "ref")}, progress=False, echo=quiet)
    interrupt_after(monkeypatch, 1)  # stops at step 4, with layer.1 frozen and the embeddings frozen
    with pytest.raises(TrainingInterrupted):
        taskembed.train(None, opts, progress=False, echo=quiet)
    monkeypatch.undo()
    res = taskembed.train(None, opts, progress=False, echo=quiet, resume=True)
    assert same_weights(ref.output_dir, res.output_dir)
    assert (ref.output_dir / "log.jsonl").read_text() == (res.output_dir / "log.jsonl").read_text()


# --- the contrastive term ------------------------------------------------------------------------


def naive_supcon(z: torch.Tensor, y: torch.Tensor, t: float) -> torch.Tensor:
    z = torch.nn.functional.normalize(z, dim=-1)
    losses = []
    for i in range(len(y)):
        others = [a for a in range(len(y)) if a != i]
        positives = [p for p in others if y[p] == y[i]]
        if not positives:
            continue
        denom = torch.logsumexp(torch.stack([z[i] @ z[a] / t for a in others]), 0)
        losses.append(-sum(z[i] @ z[p] / t - denom for p in positives) / len(positives))
    return torch.stack(losses).mean()


def test_supervised_contrastive_matches_the_definition():
    g = torch.Generator().manual_seed(0)
    z, y = torch.randn(9, 5, generator=g), torch.tensor([0, 1, 2, 0, 1, 0, 2, 2, 1])
    assert supervised_contrastive(z, y, 0.3).item() == pytest.approx(naive_supcon(z, y, 0.3).item(), rel=1e-5)


def test_supervised_contrastive_rewards_clusters_and_tolerates_no_positives():
    y = torch.tensor([0, 0, 1, 1])
    clustered = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    mixed = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1], [0.1, 0.9]])
    assert supervised_contrastive(clustered, y) < supervised_contrastive(mixed, y)
    z = torch.randn(3, 4, requires_grad=True)
    loss = supervised_contrastive(z, torch.tensor([0, 1, 2]))  # every anchor alone in its class
    loss.backward()
    assert loss.item() == 0.0 and z.grad is not None
    one = torch.randn(1, 4, requires_grad=True)  # a last batch of one example
    supervised_contrastive(one, torch.tensor([0])).backward()
    assert torch.isfinite(one.grad).all()


def test_supervised_contrastive_asks_nothing_of_the_data_on_the_host():
    # On a GPU a branch on the data waits for the device at every step; the meta device refuses any such read.
    z, y = torch.randn(6, 4, device="meta", requires_grad=True), torch.zeros(6, dtype=torch.long, device="meta")
    supervised_contrastive(z, y).backward()


def test_contrastive_weight_enters_the_training_loss(tiny_model_dir, write_csv, tmp_path):
    data = write_csv(make_rows(64))
    opts = {"model.name": str(tiny_model_dir), "data.source": str(data), "data.max_length": 32, "train.bf16": "off", "train.epochs": 1,
            "train.batch_size": 8, "data.validation_fraction": 0.0, "output.baselines": False, "output.embedding_report": False}
    plain = taskembed.train(None, {**opts, "output.dir": str(tmp_path / "a")}, progress=False, echo=quiet)
    con = taskembed.train(None, {**opts, "output.dir": str(tmp_path / "b"), "train.contrastive_weight": 1.0}, progress=False, echo=quiet)
    first = [next(json.loads(x) for x in (r.output_dir / "log.jsonl").read_text().splitlines()) for r in (plain, con)]
    # same seed, same batches: the first logged loss differs by the contrastive term, which is positive
    assert first[0]["batches"] == first[1]["batches"]
    assert first[1]["loss"] > first[0]["loss"] + 0.1


# --- imbalance: the balanced sampler and class-weight maps ----------------------------------------


def test_balanced_sample_draws_every_class_equally_often():
    labels = [0] * 900 + [1] * 90 + [2] * 10
    sample = balanced_sample(labels, torch.Generator().manual_seed(0))
    counts = torch.bincount(torch.tensor([labels[i] for i in sample]), minlength=3)
    assert len(sample) == len(labels)
    assert all(abs(c - 333) < 60 for c in counts.tolist()), counts
    assert sample == balanced_sample(labels, torch.Generator().manual_seed(0))
    batches = train_batches([5] * len(labels), 32, torch.Generator().manual_seed(1), sample=sample)
    assert sorted(i for b in batches for i in b) == sorted(sample)


def test_class_weight_map_and_balanced(tmp_path):
    enc = Encoded(input_ids=[[1]] * 4, token_type_ids=None, labels=[0, 0, 0, 1], truncated=0)
    cfg = load_config(None, {"train.class_weights": {"b": 3.0}})
    assert class_weights(cfg.train.class_weights, enc.targets, ["a", "b"]).tolist() == [1.0, 3.0]
    balanced = class_weights(load_config(None, {"train.class_weights": "balanced"}).train.class_weights, enc.targets, ["a", "b"])
    assert balanced.tolist() == pytest.approx([4 / 6, 2.0])


def test_class_weight_map_with_an_unknown_label_is_a_one_line_error(tiny_model_dir, write_csv, tmp_path, capsys):
    data = write_csv(make_rows(40))
    code = main(["train", "--data.source", str(data), "--model.name", str(tiny_model_dir), "--output.dir", str(tmp_path / "o"),
                 "--train.class_weights", "{posi: 2}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "posi" in err and "neg, pos" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()
    code = main(["train", "--train.class_weights", "{pos: -1}", "--output.dir", str(tmp_path / "o")])
    assert code == 2 and "must be > 0" in capsys.readouterr().err


# --- sliding windows ------------------------------------------------------------------------------


def long_rows(n: int, seed: int, filler: int = 40) -> list[dict[str, str]]:
    """Reviews whose only sentiment words come after `filler` neutral words: truncation cannot see them."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = "pos" if i % 2 else "neg"
        cue = POSITIVE if label == "pos" else NEGATIVE
        words = [rng.choice(NEUTRAL) for _ in range(filler)] + [rng.choice(cue) for _ in range(3)]
        rows.append({"text": " ".join(words), "label": label})
    return rows


def test_windows_cover_the_text_and_short_texts_are_unchanged(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    text = " ".join(["film"] * 30 + ["great"])
    win = encode(tok, [text, "dull film"], labels=[1, 0], max_length=12, window_stride=4)
    trunc = encode(tok, [text, "dull film"], labels=[1, 0], max_length=12)
    assert win.doc_ids[-1] == 1 and win.doc_ids.count(0) > 1 and win.windowed == 1 and win.n_texts == 2
    assert all(len(x) <= 12 for x in win.input_ids)
    assert win.input_ids[-1] == trunc.input_ids[1]  # a text that fits is encoded identically
    assert tok.convert_ids_to_tokens(win.input_ids[win.doc_ids.count(0) - 1])[-2] == "great"  # the last window reaches the end
    assert win.targets == [1, 0] and win.labels == [1] * win.doc_ids.count(0) + [0]
    assert trunc.truncated == 1


def test_window_logits_are_the_mean_of_the_windows(tiny_model_dir):
    model, tok = load_trained_like(tiny_model_dir)
    text = " ".join(["film great"] * 20)
    enc = encode(tok, [text, "dull"], max_length=12, window_stride=4)
    out = predict_logits(model, enc, tok.pad_token_id, torch.device("cpu"))
    rows = predict_logits(model, Encoded(enc.input_ids, enc.token_type_ids, None, 0), tok.pad_token_id, torch.device("cpu"))
    n0 = enc.doc_ids.count(0)
    assert out.shape == (2, 2)
    assert torch.allclose(out[0], rows[:n0].mean(0), atol=1e-6) and torch.allclose(out[1], rows[n0])
    top = predict_logits(model, enc, tok.pad_token_id, torch.device("cpu"), aggregate="max")
    assert torch.allclose(top[0], rows[:n0].max(0).values)
    # Scoring builds no autograd graph (inference mode), even though the model's weights require gradients.
    assert any(p.requires_grad for p in model.parameters())
    assert not any(t.requires_grad for t in (out, rows, top)) and torch.is_inference(rows)


def load_trained_like(folder):
    from transformers import AutoTokenizer, BertForSequenceClassification

    torch.manual_seed(0)
    model = BertForSequenceClassification.from_pretrained(folder, num_labels=2).eval()
    return model, AutoTokenizer.from_pretrained(folder)


def test_sliding_windows_beat_truncation_on_long_texts(tiny_model_dir, write_csv, tmp_path):
    train = write_csv(long_rows(160, seed=1), "train.csv")
    test = write_csv(long_rows(60, seed=2), "test.csv")
    opts = {"model.name": str(tiny_model_dir), "data.source": str(train), "data.test": str(test), "data.max_length": 24,
            "train.bf16": "off", "train.epochs": 10, "train.batch_size": 16, "train.lr": 3e-3, "train.head_lr": 1e-2,
            "output.baselines": False, "output.embedding_report": False}
    trunc = taskembed.train(None, {**opts, "output.dir": str(tmp_path / "t")}, progress=False, echo=quiet)
    win = taskembed.train(None, {**opts, "output.dir": str(tmp_path / "w"), "data.long_texts": "window", "data.window_stride": 8},
                          progress=False, echo=quiet)
    assert trunc.metrics["test"]["accuracy"] < 0.7  # the cue is past the truncation point
    assert win.metrics["test"]["accuracy"] > trunc.metrics["test"]["accuracy"] + 0.2
    info = json.loads((win.output_dir / "run.json").read_text())
    assert info["data"]["windowed"]["test"] == 60 and info["data"]["truncated"]["train"] == 0
    # predict and evaluate classify the same way as training did
    clf = taskembed.load(win.output_dir)
    texts = [r["text"] for r in long_rows(60, seed=2)]
    labels = [p["label"] for p in clf.predict(texts)]
    accuracy = sum(a == r["label"] for a, r in zip(labels, long_rows(60, seed=2))) / 60
    assert accuracy == pytest.approx(win.metrics["test"]["accuracy"])
    assert taskembed.evaluate(win.output_dir, str(test))["accuracy"] == pytest.approx(accuracy)


def test_window_options_are_validated():
    with pytest.raises(Exception, match="window_stride"):
        load_config(None, {"data.long_texts": "window", "data.max_length": 32, "data.window_stride": 16})
    with pytest.raises(Exception, match="sentence pairs"):
        load_config(None, {"data.long_texts": "window", "data.text_pair_column": "b"})
    assert load_config(None, {"data.max_length": 16}).data.window_stride == 32  # only checked in window mode


# --- train.lr_scaling: rates that follow the batch size ---------------------------------------------


def test_lr_scale_rules():
    from taskembed.lrplan import lr_scale

    assert lr_scale("none", 256, 32) == 1.0
    assert lr_scale("sqrt", 256, 32) == pytest.approx(8 ** 0.5)
    assert lr_scale("sqrt", 8, 32) == pytest.approx(0.5)  # smaller batches get smaller rates
    assert lr_scale("linear", 256, 32) == 8.0
    with pytest.raises(Exception, match="none, sqrt or linear"):
        lr_scale("cubic", 64, 32)


def test_a_plan_under_torchrun_scales_by_the_world_size_without_joining_a_process_group(tiny_model_dir, monkeypatch):
    import taskembed.api as api

    options = {"model.name": str(tiny_model_dir), "train.lr_scaling": "linear", "train.lr_batch_size": 32, "train.batch_size": 32}
    alone = api.plan(None, options)
    monkeypatch.setenv("WORLD_SIZE", "4")  # what torchrun sets; no rendezvous address, so joining a group would fail
    four = api.plan(None, options)
    assert not torch.distributed.is_initialized()
    assert [g.lr for g in four.groups] == pytest.approx([4 * g.lr for g in alone.groups])


def test_lr_scaling_scales_every_rate_of_the_run(tiny_model_dir, write_csv, tmp_path):
    data = write_csv(make_rows(64, seed=7))
    base = {"data.source": str(data), "data.validation_fraction": 0.0, "data.max_length": 32, "model.name": str(tiny_model_dir),
            "train.epochs": 1, "train.batch_size": 16, "train.grad_accum": 2, "train.lr": 1e-3, "train.head_lr": 4e-3,
            "train.embedding_lr": 2e-4, "train.bf16": "off", "train.keep_checkpoints": 0,
            "output.baselines": False, "output.embedding_report": False}
    messages: list[str] = []

    def rates(name: str, **extra) -> dict[str, float]:
        res = taskembed.train(None, {**base, **extra, "output.dir": str(tmp_path / name)}, progress=False, echo=messages.append)
        return {g["name"]: g["lr"] for g in json.loads((res.output_dir / "lr_plan.json").read_text())["groups"]}

    plain = rates("plain")
    # effective batch 16 x 2 = 32 over a reference of 8: x2 with the square root, x4 linearly
    sqrt = rates("sqrt", **{"train.lr_scaling": "sqrt", "train.lr_batch_size": 8})
    linear = rates("linear", **{"train.lr_scaling": "linear", "train.lr_batch_size": 8})
    assert plain["head"] == pytest.approx(4e-3) and plain["embeddings"] == pytest.approx(2e-4)
    assert sqrt == pytest.approx({k: 2 * v for k, v in plain.items()})
    assert linear == pytest.approx({k: 4 * v for k, v in plain.items()})
    assert any("train.lr_scaling sqrt: every rate x2 (effective batch 32, rates given for batch 8)" in m for m in messages)
    # the config the folder records is what was asked for, so a rerun of it scales again, the same way
    cfg = json.loads((tmp_path / "sqrt" / "training_config.json").read_text())["train"]
    assert cfg["lr"] == 1e-3 and cfg["lr_scaling"] == "sqrt" and cfg["lr_batch_size"] == 8


def test_gradient_accumulation_sees_every_example_each_epoch(tiny_model_dir, write_csv, tmp_path, monkeypatch):
    import taskembed.api as api

    # 90 texts in micro-batches of 16 make 6 per epoch: one step of 4 and a last step of the 2 left over
    data = write_csv(make_rows(90, seed=8))
    seen, real_fit = [], api.fit
    monkeypatch.setattr(api, "fit", lambda *a, **kw: seen.append(real_fit(*a, **kw)) or seen[-1])
    taskembed.train(None, {"data.source": str(data), "data.validation_fraction": 0.0, "data.max_length": 32,
                                 "model.name": str(tiny_model_dir), "train.epochs": 2, "train.batch_size": 16, "train.grad_accum": 4,
                                 "train.bf16": "off", "train.keep_checkpoints": 0, "output.dir": str(tmp_path / "out"),
                                 "output.baselines": False, "output.embedding_report": False}, progress=False, echo=lambda _m: None)
    state = seen[0].state
    assert state.samples_seen == 2 * 90 and state.step == 2 * 2 and state.epoch == 2


def test_lr_scaling_options_are_validated_and_lr_find_refuses_them(tiny_model_dir, write_csv, tmp_path, capsys):
    from tests.test_config import problems

    assert "train.lr_batch_size must be >= 1" in problems({"train": {"lr_batch_size": 0}})
    assert "train.lr_scaling must be one of" in problems({"train": {"lr_scaling": "cubic"}})
    data = write_csv(make_rows(40))
    code = main(["lr-find", "--data.source", str(data), "--model.name", str(tiny_model_dir), "--train.lr_scaling", "sqrt",
                 "--output.dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "run it with --train.lr_scaling none" in err and not (tmp_path / "out.lr_find").exists()


def test_step_shares_count_weight_with_class_weights_and_examples_without():
    import torch.nn.functional as F

    from taskembed.losses import step_shares

    pieces, targets = [[0, 1], [2]], [0, 1, 1]
    assert step_shares(pieces, targets, None) == pytest.approx([2 / 3, 1 / 3])
    weights = torch.tensor([1.0, 5.0])
    shares = step_shares(pieces, targets, weights.tolist())
    assert shares == pytest.approx([6 / 11, 5 / 11])
    # the pieces' weighted means, so combined, are the weighted mean of the step taken at once
    logits, y = torch.randn(3, 2), torch.tensor(targets)
    whole = F.cross_entropy(logits, y, weight=weights)
    parts = sum(F.cross_entropy(logits[p], y[p], weight=weights) * s for p, s in zip(pieces, shares))
    assert float(parts) == pytest.approx(float(whole), rel=1e-6)


@pytest.mark.parametrize("kind", ["bert", "distilbert", "albert", "mpnet", "deberta-v2"])
def test_model_dropout_sets_every_familys_head_dropout(kind, tiny_model_dir, tmp_path):
    # model.dropout was written to config.classifier_dropout alone, which only BERT-type heads read: on DistilBERT,
    # ALBERT, MPNet and DeBERTa it was recorded and did nothing.
    from transformers import AlbertConfig, AutoConfig, AutoModel, AutoTokenizer, BertConfig, DebertaV2Config, DistilBertConfig, MPNetConfig

    from taskembed.config import ModelConfig
    from taskembed.modeling import load_classifier

    tok, base = AutoTokenizer.from_pretrained(tiny_model_dir), AutoConfig.from_pretrained(tiny_model_dir)
    shape = dict(vocab_size=base.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                 max_position_embeddings=130)
    config = {"bert": lambda: BertConfig(**shape),
              "distilbert": lambda: DistilBertConfig(vocab_size=base.vocab_size, dim=32, n_layers=2, n_heads=2, hidden_dim=37,
                                                     max_position_embeddings=130),
              "albert": lambda: AlbertConfig(**shape, embedding_size=16),
              "mpnet": lambda: MPNetConfig(**shape),
              "deberta-v2": lambda: DebertaV2Config(**shape)}[kind]()
    folder = tmp_path / kind
    AutoModel.from_config(config).save_pretrained(folder)
    tok.save_pretrained(folder)

    def head_rates(dropout):
        model, _ = load_classifier(ModelConfig(name=str(folder), dropout=dropout), ["a", "b"])
        return {name: m.p for name, m in model.named_modules()
                if isinstance(m, torch.nn.Dropout) and not name.startswith(model.base_model_prefix + ".") and "pooler" not in name}

    own = head_rates(None)
    assert own and 0.9 not in own.values()
    assert head_rates(0.9) == dict.fromkeys(own, 0.9)


def test_fewer_batches_than_grad_accum_make_one_step_an_epoch_as_planned(tiny_overrides, write_csv, tmp_path, capsys):
    # The dry run planned one step an epoch (the step takes the micro-batches there are, as an epoch's last step does),
    # and training then refused the run once the model had loaded.
    opts = {**tiny_overrides, "data.source": str(write_csv(make_rows(40))), "data.validation_fraction": 0.0, "train.batch_size": 8,
            "train.grad_accum": 9, "train.epochs": 2, "output.embedding_report": False, "output.baselines": False}
    args = ["train", "--no-progress", *[f"--{k}={v}" for k, v in opts.items()]]
    assert main(args + ["--dry-run"]) == 0
    assert "this run takes 2 optimizer step(s) (1 an epoch)" in capsys.readouterr().out
    assert main(args) == 0
    steps = [json.loads(line)["step"] for line in (tmp_path / "out" / "log.jsonl").read_text().splitlines()]
    assert max(steps) == 2


def test_a_dry_run_refuses_a_max_length_the_model_cannot_read(tiny_overrides, capsys):
    # Training refused it once the model had loaded and the data was read; the dry run passed.
    from transformers import AutoConfig

    limit = AutoConfig.from_pretrained(tiny_overrides["model.name"]).max_position_embeddings
    args = ["train", "--dry-run", *[f"--{k}={v}" for k, v in tiny_overrides.items() if k != "data.max_length"],
            f"--data.max_length={limit + 1}"]
    assert main(args) == 2
    assert f"data.max_length {limit + 1} is more than model" in capsys.readouterr().err
