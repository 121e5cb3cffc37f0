"""The masked-LM stage (train.mlm_epochs, ULMFiT's second step): it trains the classifier's own encoder before the labels,
records what it did, and refuses what it cannot do in one line."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

import taskembed
from taskembed.cli import main
from tests.conftest import make_rows


def quiet(_message: str) -> None:
    pass


def test_the_stage_moves_the_encoder_lowers_its_loss_and_is_recorded(tiny_overrides, write_csv, tmp_path):
    data = write_csv(make_rows(160, seed=2))
    extra = tmp_path / "extra.txt"
    extra.write_text("\n".join(r["text"] for r in make_rows(80, seed=9)) + "\n", encoding="utf-8")
    said: list[str] = []
    base = {**tiny_overrides, "data.source": str(data), "output.embedding_report": False, "train.epochs": 1}
    plain = taskembed.train(None, {**base, "output.dir": str(tmp_path / "plain")}, progress=False, echo=quiet)
    adapted = taskembed.train(None, {**base, "output.dir": str(tmp_path / "mlm"), "train.mlm_epochs": 4, "train.mlm_lr": 1e-3,
                                     "data.unlabelled": str(extra)}, progress=False, echo=said.append)
    run = json.loads((adapted.output_dir / "run.json").read_text())
    mlm = run["mlm"]
    train_texts = 160 - 16  # the default validation share (10%) is carved from the file, and the stage reads train only
    assert mlm["texts"] == train_texts + 80 and mlm["steps"] == 4 * -(-mlm["texts"] // 16)
    assert mlm["loss_last"] < mlm["loss_first"]  # it learnt to fill in the masks
    assert any(line.startswith("masked-LM stage: 4 epoch(s) over") for line in said)
    assert json.loads((plain.output_dir / "run.json").read_text())["mlm"] is None
    # Its time is not in training's, so the result and the card say it beside it.
    assert adapted.mlm_seconds == mlm["seconds"] > 0 and plain.mlm_seconds == 0
    card = (adapted.output_dir / "README.md").read_text()
    assert f"after a masked-LM stage of 4 epoch(s) over {mlm['texts']:,} texts in" in card
    assert "masked-LM" not in (plain.output_dir / "README.md").read_text()
    # The same seed and data: only the stage differs, so the encoders differ, and the model still loads and predicts.
    a, b = load_file(plain.output_dir / "model.safetensors"), load_file(adapted.output_dir / "model.safetensors")
    assert a.keys() == b.keys()
    assert not torch.equal(a["bert.encoder.layer.0.attention.self.query.weight"], b["bert.encoder.layer.0.attention.self.query.weight"])
    assert not any("cls.predictions" in k for k in b)  # the masked-LM head is not part of the classifier
    assert taskembed.load(adapted.output_dir).predict(["a fine film"])[0]["label"] in ("neg", "pos")


def test_the_stage_is_seeded(tiny_overrides, write_csv, tmp_path):
    data = write_csv(make_rows(80, seed=3))
    weights = []
    for i in range(2):
        res = taskembed.train(None, {**tiny_overrides, "data.source": str(data), "output.dir": str(tmp_path / str(i)), "train.epochs": 1,
                                     "train.mlm_epochs": 1, "output.embedding_report": False}, progress=False, echo=quiet)
        weights.append(load_file(res.output_dir / "model.safetensors"))
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


@pytest.mark.parametrize("schedule", ["cosine", "constant"])
def test_the_stage_follows_the_classifiers_warmup_and_schedule(tiny_overrides, write_csv, tmp_path, monkeypatch, schedule):
    # The rate the stage's optimizer steps with, step by step: train.warmup_ratio's ramp, then train.schedule's decay.
    seen: list[float] = []
    step = torch.optim.AdamW.step

    def recording(self, *a, **k):
        if len(self.param_groups) <= 4:  # the stage's groups (encoder and head, with and without decay); the plan has more
            seen.append(self.param_groups[0]["lr"])
        return step(self, *a, **k)

    monkeypatch.setattr(torch.optim.AdamW, "step", recording)
    taskembed.train(None, {**tiny_overrides, "data.source": str(write_csv(make_rows(80, seed=3))), "output.dir": str(tmp_path / "o"),
                           "train.epochs": 1, "train.mlm_epochs": 2, "train.mlm_lr": 1e-3, "train.warmup_ratio": 0.25,
                           "train.schedule": schedule, "output.embedding_report": False}, progress=False, echo=quiet)
    total = len(seen)
    assert total == 2 * -(-72 // 16)  # 72 training texts (the validation tenth carved off), batches of 16
    warmup = round(0.25 * total)
    assert seen[:warmup] == pytest.approx([1e-3 * (s + 1) / (warmup + 1) for s in range(warmup)])
    after = [(s - warmup) / (total - warmup) for s in range(warmup, total)]
    expected = [1.0] * len(after) if schedule == "constant" else [0.5 * (1 + math.cos(math.pi * p)) for p in after]
    assert seen[warmup:] == pytest.approx([1e-3 * f for f in expected])


def test_bad_settings_are_refused_in_one_line_and_the_stage_time_is_said(tiny_overrides, write_csv, tmp_path, capsys):
    data = write_csv(make_rows(40, seed=4))
    common = ["train", "--model.name", tiny_overrides["model.name"], "--data.source", str(data), "--train.bf16", "off",
              "--output.dir", str(tmp_path / "out")]
    cases = [
        (["--train.mlm_epochs", "-1"], "train.mlm_epochs must be >= 0"),
        (["--train.mlm_epochs", "1", "--train.mlm_probability", "1.5"], "train.mlm_probability must be in (0, 1)"),
        (["--train.mlm_epochs", "1", "--data.unlabelled", str(tmp_path / "missing.txt")], "data.unlabelled: "),
    ]
    for extra, message in cases:
        assert main([*common, *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and message in err and "\n" not in err, err
        assert not (tmp_path / "out").exists()
    # Accepted, the stage's time is said beside training's, which does not include it.
    assert main([*common, "--train.mlm_epochs", "1", "--train.epochs", "1", "--output.embedding_report", "false", "--no-progress"]) == 0
    assert "s, after a masked-LM stage of " in capsys.readouterr().out


def test_settings_without_the_stage_are_noted(tiny_overrides, write_csv, tmp_path):
    said: list[str] = []
    taskembed.train(None, {**tiny_overrides, "data.source": str(write_csv(make_rows(60, seed=5))), "train.epochs": 1,
                           "train.mlm_lr": 1e-4, "output.embedding_report": False}, progress=False, echo=said.append)
    assert "note: train.mlm_lr is set but has no effect unless train.mlm_epochs is above 0" in said


def test_short_texts_never_leave_a_batch_without_a_mask(tiny_overrides, write_csv, tmp_path):
    # Two-word texts in a one-text last batch: at 15% a batch often draws no mask, which was a 0/0 loss called divergence.
    rows = [{"text": f"{w} film", "label": "pos" if i % 2 else "neg"} for i, w in enumerate("good bad fine dull great poor nice weak".split() * 3)]
    for seed in range(4):
        res = taskembed.train(None, {**tiny_overrides, "data.source": str(write_csv(rows[:19])), "train.batch_size": 16, "train.seed": seed,
                                     "train.epochs": 1, "train.mlm_epochs": 2, "output.dir": str(tmp_path / str(seed)),
                                     "output.embedding_report": False, "data.validation_fraction": 0.1}, progress=False, echo=quiet)
        assert json.loads((res.output_dir / "run.json").read_text())["mlm"]["steps"] == 4


def test_frozen_embeddings_stay_frozen_through_the_stage(tiny_overrides, tiny_model_dir, write_csv, tmp_path):
    res = taskembed.train(None, {**tiny_overrides, "data.source": str(write_csv(make_rows(60, seed=6))), "train.epochs": 1,
                                 "train.mlm_epochs": 2, "train.mlm_lr": 1e-3, "train.freeze_embeddings": True,
                                 "output.embedding_report": False}, progress=False, echo=quiet)
    tuned, base = load_file(res.output_dir / "model.safetensors"), load_file(tiny_model_dir / "model.safetensors")
    key = "embeddings.word_embeddings.weight"
    assert torch.equal(tuned["bert." + key], base[key])
    assert not torch.equal(tuned["bert.encoder.layer.0.output.dense.weight"], base["encoder.layer.0.output.dense.weight"])


@pytest.mark.parametrize("kind", ["distilbert", "electra", "roberta"])
def test_other_families_train_through_their_own_heads(kind, tiny_model_dir, write_csv, tmp_path):
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(tiny_model_dir)
    sizes = (dict(dim=16, n_layers=2, n_heads=2, hidden_dim=20) if kind == "distilbert" else
             dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=20, pad_token_id=tok.pad_token_id,
                  **({"embedding_size": 16} if kind == "electra" else {})))
    config = {"distilbert": transformers.DistilBertConfig, "electra": transformers.ElectraConfig, "roberta": transformers.RobertaConfig}[kind]
    folder = tmp_path / kind
    torch.manual_seed(0)
    transformers.AutoModel.from_config(config(vocab_size=len(tok), max_position_embeddings=80, **sizes)).save_pretrained(folder)
    tok.save_pretrained(folder)
    said: list[str] = []
    res = taskembed.train(None, {"model.name": str(folder), "data.source": str(write_csv(make_rows(60, seed=7))), "train.epochs": 1,
                                 "train.batch_size": 16, "data.max_length": 32, "train.bf16": "off", "train.mlm_epochs": 4,
                                 "train.mlm_lr": 5e-3, "train.head_lr": 1e-2, "output.dir": str(tmp_path / "out"), "output.embedding_report": False},
                          progress=False, echo=said.append)
    mlm = json.loads((res.output_dir / "run.json").read_text())["mlm"]
    assert mlm["steps"] > 0 and mlm["loss_last"] < mlm["loss_first"], mlm


def test_refusals_come_before_the_stage_and_in_the_dry_run(tiny_overrides, write_csv, tmp_path, capsys, monkeypatch):
    data = write_csv(make_rows(40, seed=8))
    said: list[str] = []
    (tmp_path / "late.checkpoints").write_text("")  # where the run would keep its checkpoints
    with pytest.raises(taskembed.UserError, match="late.checkpoints"):
        taskembed.train(None, {**tiny_overrides, "data.source": str(data), "train.mlm_epochs": 1, "output.dir": str(tmp_path / "late")},
                        progress=False, echo=said.append)
    assert not any("masked-LM" in line for line in said)  # refused before the stage ran, not after
    table = tmp_path / "unlabelled.csv"
    table.write_text("body\nsome text\nmore text\n", encoding="utf-8")
    common = ["train", "--model.name", tiny_overrides["model.name"], "--data.source", str(data), "--train.bf16", "off",
              "--output.dir", str(tmp_path / "out"), "--train.mlm_epochs", "1"]
    cases = [
        (["--dry-run", "--data.unlabelled", str(tmp_path / "missing.txt")], "data.unlabelled"),
        (["--data.unlabelled", str(table)], "data.unlabelled " + str(table) + ": no column 'text' (data.text_column"),
        (["--data.unlabelled", str(table), "--data.text_pair_column", "text"], "drop data.unlabelled"),
    ]
    for extra, message in cases:
        assert main([*common, *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and message in err and "\n" not in err, err
        assert not (tmp_path / "out").exists()
    # The file's content is checked by the dry run too, and by a run before the model loads.
    assert main([*common, "--dry-run", "--data.unlabelled", str(table)]) == 2
    assert "no column 'text' (data.text_column" in capsys.readouterr().err
    from taskembed import api

    monkeypatch.setattr(api, "load_classifier", lambda *a, **k: pytest.fail("loaded the model before reading data.unlabelled"))
    assert main([*common, "--data.unlabelled", str(table)]) == 2
    assert "no column 'text' (data.text_column" in capsys.readouterr().err
    monkeypatch.undo()  # the dry run's plan loads the model
    good = tmp_path / "unlabelled.txt"
    good.write_text("some text\nmore text\n\nthird\n", encoding="utf-8")
    assert main([*common, "--dry-run", "--data.unlabelled", str(good)]) == 0
    assert "data.unlabelled: 3 texts for the masked-LM stage" in capsys.readouterr().out


def test_a_run_stopped_after_the_stage_resumes_without_it_and_ends_where_an_unstopped_one_does(tiny_model_dir, tmp_path, monkeypatch, capsys):
    from bench import fault_injection as fi
    from tests.test_resume import interrupt_after, same_weights

    train, test = fi.write_csv(tmp_path / "train.csv", make_rows(96, seed=4)), fi.write_csv(tmp_path / "test.csv", make_rows(24, seed=5))
    opts = {**fi.overrides(tiny_model_dir, train, test, tmp_path / "out", epochs=1), "train.mlm_epochs": 1}
    threads = torch.get_num_threads()  # the runs use one thread, for exactness
    try:
        ref = taskembed.train(None, {**opts, "output.dir": str(tmp_path / "ref")}, progress=False, echo=quiet)
        interrupt_after(monkeypatch, 2)
        with pytest.raises(taskembed.TrainingInterrupted):
            taskembed.train(None, opts, progress=False, echo=quiet)
        monkeypatch.undo()
        said: list[str] = []
        res = taskembed.train(None, opts, progress=False, echo=said.append, resume=True)
    finally:
        torch.set_num_threads(threads)
    # The stage's weights came back from the checkpoint: running it again would move the encoder a second time.
    assert same_weights(ref.output_dir, res.output_dir)
    assert "masked-LM stage: skipped on resume (its weights are in the checkpoint)" in said
    assert not any(line.startswith("masked-LM stage: 1 epoch(s) over") for line in said)
    assert res.mlm_seconds == 0
    assert json.loads((res.output_dir / "run.json").read_text())["mlm"]["ran_before_the_checkpoint_this_run_resumed_from"] is True
    assert "after a masked-LM stage of 1 epoch(s) in the run this one resumed" in (res.output_dir / "README.md").read_text()
