"""Every bad input through the real command line: exit 2, one `error:` line, no traceback, nothing left behind."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

import taskembed
from taskembed.cli import main
from tests.conftest import make_rows
from tests.test_data import BAD, BAD_FILES

CASES = [(name, {f"--data.{k}": v for k, v in options.items()}) for name, options, _ in BAD_FILES]


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_clean_failure(code: int, err: str, out_dir: Path) -> None:
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    # neither the output folder nor checkpoints nor a temporary sibling may exist
    assert not [p.name for p in out_dir.parent.iterdir() if p.name.startswith((out_dir.name, f".{out_dir.name}"))]


@pytest.mark.parametrize("name, options", CASES, ids=[c[0] + ("+" if c[1] else "") for c in CASES])
def test_bad_data_file(name, options, tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["train", "--data.source", str(BAD / name), "--data.validation_fraction", "0", "--model.name", str(tiny_model_dir),
            "--output.dir", str(out)]
    for key, value in options.items():
        args += [key, str(value)]
    code, _, err = run_cli(args, capsys)
    assert_clean_failure(code, err, out)
    assert str(BAD / name) in err


@pytest.mark.parametrize(
    "extra, piece",
    [
        (["--train.lerning_rate", "1e-4"], "unknown key 'train.lerning_rate'"),
        (["--train.epochs", "three"], "train.epochs must be a finite number"),
        (["--train.lr", "-1e-4"], "train.lr must be > 0"),
        (["--train.layer_decay", "1.5"], "train.layer_decay must be in (0, 1]"),
        (["--train.layer_decay", "0"], "train.layer_decay must be in (0, 1]"),
        (["--model.name", "./no/such/model"], "folder not found"),
    ],
)
def test_bad_config_values(extra, piece, tmp_path, capsys, write_csv):
    from tests.conftest import make_rows

    out = tmp_path / "out"
    data = write_csv(make_rows(20))
    code, _, err = run_cli(["train", "--data.source", str(data), "--output.dir", str(out), *extra], capsys)
    assert_clean_failure(code, err, out)
    assert piece in err


def test_config_file_with_unknown_keys(tmp_path, capsys):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("trian:\n  lr: 1e-4\ndata:\n  sorce: x.csv\n")
    code, _, err = run_cli(["train", str(cfg), "--output.dir", str(tmp_path / "out")], capsys)
    assert_clean_failure(code, err, tmp_path / "out")
    assert "did you mean 'train'" in err and "did you mean 'data.source'" in err and str(cfg) in err


def test_output_folder_that_is_a_file(tmp_path, capsys, write_csv, tiny_model_dir):
    from tests.conftest import make_rows

    target = tmp_path / "out"
    target.write_text("not a folder")
    code, _, err = run_cli(["train", "--data.source", str(write_csv(make_rows(20))), "--model.name", str(tiny_model_dir),
                            "--output.dir", str(target)], capsys)
    assert code == 2 and err.startswith("error: output.dir") and "is a file" in err
    assert target.read_text() == "not a folder"


@pytest.mark.parametrize("command", ["train", "lr-find"])
def test_max_length_beyond_the_position_table(command, tmp_path, capsys, write_csv, tiny_model_dir):
    # The tiny model reads 128 positions: 129 tokens would fail inside the embedding lookup with an IndexError.
    from tests.conftest import make_rows

    out = tmp_path / "out"
    code, _, err = run_cli([command, "--data.source", str(write_csv(make_rows(40))), "--model.name", str(tiny_model_dir),
                            "--data.max_length", "129", "--output.dir", str(out)], capsys)
    assert_clean_failure(code, err, out)
    assert "data.max_length 129 is more than model" in err and "(128 tokens)" in err and "set --data.max_length to 128 or less" in err


@pytest.fixture
def classifier_dir(tiny_model_dir, tmp_path):
    """A classifier folder as any training writes it (weights, config, tokenizer), built without training."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = tmp_path / "clf"
    AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=2).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(folder)
    return folder


def _drop_tokenizer(folder: Path) -> None:
    for p in folder.iterdir():
        if p.name == "tokenizer.json" or p.name.startswith("vocab."):
            p.unlink()


DAMAGE = {
    # transformers 5 builds an empty tokenizer for a folder without one: every word [UNK], predictions without meaning.
    "no tokenizer": (_drop_tokenizer, "so its files are missing"),
    "truncated weights": (lambda f: (f / "model.safetensors").write_bytes((f / "model.safetensors").read_bytes()[:200]), "damaged"),
    "empty weights": (lambda f: (f / "model.safetensors").write_bytes(b""), "damaged"),
    "config not JSON": (lambda f: (f / "config.json").write_text("{oops", encoding="utf-8"), "not readable JSON"),
    "config for 3 labels, weights for 2": (lambda f: (f / "config.json").write_text(json.dumps(
        {**json.loads((f / "config.json").read_text()), "id2label": {"0": "a", "1": "b", "2": "c"}, "label2id": {"a": 0, "b": 1, "c": 2}})),
        "its weights do not fit its config.json"),
    "training_config a list": (lambda f: (f / "training_config.json").write_text("[1]", encoding="utf-8"), "not an object"),
    "training_config not JSON": (lambda f: (f / "training_config.json").write_text("{", encoding="utf-8"), "not readable JSON"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_model_folder(damage, classifier_dir, capsys):
    change, piece = DAMAGE[damage]
    assert main(["predict", str(classifier_dir), "a fine film"]) == 0  # intact, it predicts
    capsys.readouterr()
    change(classifier_dir)
    code, _, err = run_cli(["predict", str(classifier_dir), "a fine film"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("error: ") and "Traceback" not in err, err
    assert str(classifier_dir) in err and piece in err


def test_weights_without_the_head_are_refused(classifier_dir, tiny_model_dir, capsys):
    # The encoder's own weights load into the classifier with a random head; transformers only warns (and taskembed
    # silences its warnings), so the folder would answer at random.
    (classifier_dir / "model.safetensors").write_bytes((tiny_model_dir / "model.safetensors").read_bytes())
    code, _, err = run_cli(["predict", str(classifier_dir), "a fine film"], capsys)
    assert code == 2 and "lack" in err and "classifier." in err and "Traceback" not in err, err


def test_training_from_a_folder_without_a_tokenizer(tiny_model_dir, tmp_path, capsys, write_csv):
    import shutil

    from tests.conftest import make_rows

    model = tmp_path / "encoder"
    shutil.copytree(tiny_model_dir, model)
    _drop_tokenizer(model)
    out = tmp_path / "out"
    code, _, err = run_cli(["train", "--data.source", str(write_csv(make_rows(20))), "--model.name", str(model),
                            "--output.dir", str(out)], capsys)
    assert_clean_failure(code, err, out)
    assert "so its files are missing" in err


@pytest.mark.parametrize("command", ["train", "lr-find", "predict", "evaluate", "embed", "compare", "export"])
def test_an_output_path_under_a_file(command, classifier_dir, tiny_model_dir, tmp_path, capsys, write_csv):
    # A file where a folder above the output should be: refused before any work, not after training.
    from tests.conftest import make_rows

    data = str(write_csv(make_rows(20)))
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file, not a folder")
    under = str(blocker / "x")
    args = {
        "train": ["train", "--data.source", data, "--model.name", str(tiny_model_dir), "--output.dir", under],
        "lr-find": ["lr-find", "--data.source", data, "--model.name", str(tiny_model_dir), "--out", under],
        "predict": ["predict", str(classifier_dir), "a film", "--out", under + ".csv"],
        "evaluate": ["evaluate", str(classifier_dir), data, "--out", under + ".json"],
        "embed": ["embed", str(classifier_dir), data, "--out", under + ".npy"],
        "compare": ["compare", str(tiny_model_dir), str(classifier_dir), data, "--out-dir", under],
        "export": ["export", str(classifier_dir), under],
    }[command]
    code, _, err = run_cli(args, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert f"{blocker} is a file, so nothing can be written under it" in err
    assert blocker.read_text() == "a file, not a folder"


@pytest.mark.parametrize("command, length, piece", [("embed", "100000", "can read (128 tokens)"), ("export", "100000", "can read (128 tokens)"),
                                                    ("embed", "0", "too small")])
def test_embedding_max_length_is_checked(command, length, piece, classifier_dir, tmp_path, capsys, write_csv):
    # The tiny model reads 128 positions; more failed inside the embedding lookup (embed) or made an export that
    # sentence-transformers cannot run; 0 was taken for "not given".
    from tests.conftest import make_rows

    out = tmp_path / "out"
    args = {"embed": ["embed", str(classifier_dir), str(write_csv(make_rows(10))), "--out", str(out) + ".npy"],
            "export": ["export", str(classifier_dir), str(out)]}[command]
    code, _, err = run_cli([*args, "--max-length", length], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and piece in err and "Traceback" not in err, err
    assert not list(tmp_path.glob("out*"))


def test_evaluate_refuses_a_split_of_a_single_file(classifier_dir, capsys, write_csv):
    # It scored the whole file whatever --split said.
    from tests.conftest import make_rows

    data = str(write_csv(make_rows(10)))
    code, _, err = run_cli(["evaluate", str(classifier_dir), data, "--split", "validation"], capsys)
    assert code == 2 and "--split validation" in err and "single file" in err and data in err, err


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_compare_refuses_a_row_without_a_label(suffix, classifier_dir, tiny_model_dir, tmp_path, capsys):
    # A blank cell became a class named '' and a JSON null was dropped without a word.
    from tests.conftest import make_rows

    rows = make_rows(8)
    rows[2]["label"] = "" if suffix == ".csv" else None
    path = tmp_path / f"d{suffix}"
    if suffix == ".csv":
        path.write_text("text,label\n" + "".join(f"{r['text']},{r['label']}\n" for r in rows), encoding="utf-8")
    else:
        import json

        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "report"
    code, _, err = run_cli(["compare", str(tiny_model_dir), str(classifier_dir), str(path), "--out-dir", str(out)], capsys)
    assert code == 2 and f"{path}: row 3: no label in column 'label'" in err and "Traceback" not in err, err
    assert not out.exists()


def test_evaluate_names_the_row_of_a_label_the_model_does_not_know(classifier_dir, capsys, tmp_path):
    path = tmp_path / "e.csv"
    path.write_text("text,label\na fine film,LABEL_0\na dull film,LABEL_1\nmeh,neutral\n", encoding="utf-8")
    code, _, err = run_cli(["evaluate", str(classifier_dir), str(path)], capsys)
    assert code == 2 and f"{path}: row 3: label 'neutral' is not one the model knows (LABEL_0, LABEL_1)" in err, err
    # Another task's data altogether is said as such; a number written another way is pointed out.
    path.write_text("text,label\na fine film,pos\na dull film,neg\n", encoding="utf-8")
    code, _, err = run_cli(["evaluate", str(classifier_dir), str(path)], capsys)
    assert code == 2 and "none of its labels (neg, pos) is one the model knows (LABEL_0, LABEL_1); is it the data for this model?" in err
    path.write_text("text,label\na fine film,1.0\na dull film,0.0\n", encoding="utf-8")
    num_dir = classifier_dir.parent / "numbered"
    shutil.copytree(classifier_dir, num_dir)
    config = json.loads((num_dir / "config.json").read_text())
    (num_dir / "config.json").write_text(json.dumps({**config, "id2label": {"0": "0", "1": "1"}, "label2id": {"0": 0, "1": 1}}))
    code, _, err = run_cli(["evaluate", str(num_dir), str(path)], capsys)
    assert code == 2 and "none of its labels (0.0, 1.0) is one the model knows (0, 1) (the model's label '0' is the same number" in err, err
    from taskembed.api import _same_number

    assert _same_number("4.0", {"0", "4"}) == " (the model's label '4' is the same number: write the labels as the training data did)"
    assert _same_number("4.5", {"0", "4"}) == _same_number("x", {"0", "4"}) == ""


def test_compare_writes_into_an_existing_folder_whose_parent_is_read_only(tmp_path, monkeypatch):
    # --out-dir ~ is the usual case: /home belongs to root. The report goes into the folder, so only it must be writable.
    import os

    from taskembed import compare
    from taskembed.errors import UserError

    out = tmp_path / "reports"
    out.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == tmp_path else real(p, mode))
    compare._check_out_dir(out)
    with pytest.raises(UserError, match="is not writable"):  # a new folder is made in the parent, which must be writable
        compare._check_out_dir(tmp_path / "new")


def test_a_tokenizer_that_needs_no_files_is_not_taken_for_a_missing_one(tmp_path):
    # CANINE reads characters: its folder has no vocabulary file, and its tokenizer is as large as its model's table.
    import warnings

    import transformers

    import taskembed

    folder = tmp_path / "canine"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        transformers.CanineTokenizer().save_pretrained(folder)
        config = transformers.CanineConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                                           num_hash_functions=2, num_hash_buckets=64, downsampling_rate=2, local_transformer_stride=16,
                                           max_position_embeddings=256, num_labels=2)
        transformers.CanineForSequenceClassification(config).save_pretrained(folder)
    assert taskembed.load(folder, device="cpu").predict("a fine film")[0]["label"] in ("LABEL_0", "LABEL_1")


def test_a_folder_whose_tokenizer_states_no_limit_reads_what_its_model_can(classifier_dir):
    # Not trained by taskembed and no model_max_length: 512 was assumed, more than this model's 128 positions, and
    # embedding it was refused.
    import json

    import taskembed

    tc = classifier_dir / "tokenizer_config.json"
    tc.write_text(json.dumps({k: v for k, v in json.loads(tc.read_text()).items() if k != "model_max_length"}))
    clf = taskembed.load(classifier_dir, device="cpu")
    assert clf.max_length == 128 and clf.embed(["a fine film"]).shape[0] == 1


def test_a_missing_tokenizer_of_a_small_vocabulary_is_found_too(tmp_path):
    # A 40-token model (protein or character models are this small) without tokenizer files: transformers builds a
    # 5-token tokenizer, not ten times smaller than 40, but with no ordinary token at all.
    import transformers

    from taskembed.errors import UserError
    from taskembed.modeling import check_tokenizer

    transformers.BertConfig(vocab_size=40, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37).save_pretrained(tmp_path)
    with pytest.raises(UserError, match="its tokenizer has 5 tokens for a vocabulary of 40"):
        check_tokenizer(transformers.AutoTokenizer.from_pretrained(tmp_path), transformers.AutoConfig.from_pretrained(tmp_path), "m")


@pytest.mark.parametrize("command", ["embed", "evaluate"])
def test_a_mistyped_dataset_argument_is_named_as_given_not_as_a_config_key(command, classifier_dir, tmp_path, capsys):
    # Their DATA is an argument; the message spoke of data.source, a training config key.
    args = {"embed": ["embed", str(classifier_dir), "rotten_tomatoe", "--out", str(tmp_path / "v.npy")],
            "evaluate": ["evaluate", str(classifier_dir), "rotten_tomatoe"]}[command]
    code, _, err = run_cli(args, capsys)
    assert code == 2 and err.strip() == "error: 'rotten_tomatoe' is not a file or built-in dataset; did you mean 'rotten_tomatoes'?", err


def test_a_saved_dataset_of_only_a_test_split_serves_evaluate_and_embed_but_not_training(classifier_dir, tiny_model_dir, tmp_path, capsys):
    # Only training needs a train split; evaluate and embed refused such a folder, asking to rename the training split.
    import datasets
    import numpy as np

    from tests.conftest import make_rows

    texts = [r["text"] for r in make_rows(12)]
    folder = tmp_path / "ds"
    datasets.DatasetDict({"test": datasets.Dataset.from_dict({"text": texts, "label": [f"LABEL_{i % 2}" for i in range(12)]})}).save_to_disk(str(folder))
    code, out, err = run_cli(["evaluate", str(classifier_dir), str(folder)], capsys)
    assert code == 0 and "accuracy" in out, err
    code, _, err = run_cli(["embed", str(classifier_dir), str(folder), "--out", str(tmp_path / "v.npy")], capsys)
    assert code == 0 and np.load(tmp_path / "v.npy").shape[0] == 12, err
    code, _, err = run_cli(["train", "--data.source", str(folder), "--model.name", str(tiny_model_dir), "--output.dir", str(tmp_path / "out")], capsys)
    assert code == 2 and err.strip() == f"error: {folder}: has splits ['test'] but no 'train'; rename the training split", err


def test_evaluate_tells_a_single_label_model_to_get_one_label_a_row(classifier_dir, tmp_path, capsys):
    # It said "set data.multi_label true", a training option: the model fixes that.
    data = tmp_path / "d.jsonl"
    data.write_text('{"text": "a fine film", "label": ["LABEL_0", "LABEL_1"]}\n', encoding="utf-8")
    code, _, err = run_cli(["evaluate", str(classifier_dir), str(data)], capsys)
    assert code == 2 and err.strip().endswith("is not a single class name or number; the model predicts one label per example: "
                                              "give one class name per row"), err


@pytest.mark.parametrize("argv, head, overrides", [
    (["train", "c.yaml", "--dry-run", "--train.lr", "1e-4"], ["train", "c.yaml", "--dry-run"], ["--train.lr", "1e-4"]),
    (["train", "--dry-run", "c.yaml", "--epochs", "2"], ["train", "c.yaml", "--dry-run"], ["--epochs", "2"]),
    (["train", "--resume", "latest", "c.yml"], ["train", "c.yml", "--resume", "latest"], []),
    (["train", "--resume", "c.yaml"], ["train", "c.yaml", "--resume"], []),
    (["train", "--train.lr", "1e-4", "c.yaml", "--no-progress"], ["train", "c.yaml", "--no-progress"], ["--train.lr", "1e-4"]),
    (["lr-find", "--steps", "50", "c.yaml", "--data.source", "x.csv"], ["lr-find", "c.yaml", "--steps", "50"], ["--data.source", "x.csv"]),
    (["train", "--data.source", "x.csv"], ["train"], ["--data.source", "x.csv"]),
])
def test_the_config_path_may_come_before_or_after_the_flags(argv, head, overrides):
    from taskembed.cli import _split_overrides, build_parser

    assert _split_overrides(argv) == (head, overrides)
    args = build_parser().parse_args(head)  # and argparse reads it as the config, not as --resume's value
    assert args.config == next((t for t in argv if t.endswith((".yaml", ".yml"))), None)


@pytest.mark.parametrize("value, message", [
    ("-1", "error: lr-find: start must be a positive finite rate (got -1.0)"),
    ("-1e-3", "error: lr-find: start must be a positive finite rate (got -0.001)"),  # argparse alone takes this for an option
])
def test_a_negative_lr_find_rate_is_its_value_not_a_missing_argument(value, message, capsys):
    # It said "argument --start: expected one argument": the value was taken for an override.
    code, _, err = run_cli(["lr-find", "--start", value], capsys)
    assert code == 2 and err.strip() == message, err
    from taskembed.cli import _split_overrides

    assert _split_overrides(["lr-find", "--end", "-.5", "--train.weight_decay", "-0.1"]) == (
        ["lr-find", "--end=-.5"], ["--train.weight_decay", "-0.1"])


def test_plan_reads_the_config_given_after_its_flag(tmp_path, capsys, tiny_model_dir):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"model:\n  name: {tiny_model_dir}\ntrain:\n  head_lr: 0.0042\n", encoding="utf-8")
    assert main(["plan", "--json", str(cfg)]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["groups"][-1]["lr"] == 0.0042  # the file's head rate, so the file was read


def _drop_tensors(folder: Path, dest: Path, dropped: str) -> Path:
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.copytree(folder, dest)
    weights = load_file(str(dest / "model.safetensors"))
    kept = {k: v for k, v in weights.items() if dropped not in k}
    assert len(kept) < len(weights)
    save_file(kept, str(dest / "model.safetensors"), metadata={"format": "pt"})
    return dest


def test_a_base_model_missing_a_layer_is_refused_not_started_at_random(tiny_model_dir, tmp_path, capsys, write_csv):
    # transformers starts missing tensors at random and only warns; taskembed silences its warnings.
    partial = _drop_tensors(tiny_model_dir, tmp_path / "partial", "layer.1.")
    data = write_csv(make_rows(40))
    for argv in (["train", "--data.source", str(data), "--model.name", str(partial), "--output.dir", str(tmp_path / "out")],
                 ["embed", str(partial), str(data), "--out", str(tmp_path / "v.npy")]):
        code, _, err = run_cli(argv, capsys)
        assert code == 2 and "the weights lack" in err and "layer.1." in err and "Traceback" not in err, err
    assert not (tmp_path / "out").exists() and not (tmp_path / "v.npy").exists()


def test_embed_refuses_a_classifier_without_its_pooler(classifier_dir, tmp_path, capsys, write_csv):
    # The head representation is the pooler's output: a random pooler would give random vectors.
    damaged = _drop_tensors(classifier_dir, tmp_path / "nopooler", "pooler.")
    code, _, err = run_cli(["embed", str(damaged), str(write_csv(make_rows(10))), "--out", str(tmp_path / "v.npy")], capsys)
    assert code == 2 and "the weights lack" in err and "pooler" in err, err


@pytest.mark.parametrize("argv, piece", [
    (["embed", "runs/x", "data.csv"], "required: --out; see `taskembed embed --help`"),
    (["frob"], "invalid choice: 'frob'"),
    (["train", "--resume=maybe"], "invalid choice: 'maybe'"),
    (["train", "c.yaml", "--resume", "latset"], "argument --resume: invalid choice: 'latset' (choose from 'latest', 'auto')"),
    (["lr-find", "--steps", "abc"], "invalid int value: 'abc'"),
    (["predict"], "required: model; see"),  # not "model, texts": --file is the other way to give them
    (["trian"], "(did you mean train?); see `taskembed --help`"),
    # An unknown option is said by the subcommand's own parser: its help page, and the nearest option it has.
    (["evaluate", "m", "d.csv", "--bogus", "1"], "unrecognized arguments: --bogus 1; see `taskembed evaluate --help`"),
    (["predict", "m", "--text_column", "review"], "(--text_column: did you mean --text-column?); see `taskembed predict --help`"),
    (["embed", "m", "d.csv", "--out", "v.npy", "--poling", "mean"], "(--poling: did you mean --pooling?); see `taskembed embed --help`"),
    # train, plan, lr-find and sweep take unknown words as config overrides; one near their own flag is that flag.
    (["train", "--dry_run"], "unrecognized arguments: --dry_run (--dry_run: did you mean --dry-run?); see `taskembed train --help`"),
    (["lr-find", "--step", "3"], "(--step: did you mean --steps?); see `taskembed lr-find --help`"),
])
def test_a_malformed_command_line_is_one_line_too(argv, piece, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.startswith("error: ") and piece in err and len(err.strip().splitlines()) == 1, err


def test_the_bare_command_prints_the_help_and_version_its_version(capsys):
    assert main([]) == 0
    assert capsys.readouterr().out.startswith("usage: taskembed")
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.strip() == f"taskembed {taskembed.__version__}"
    # The commands that read a config say on their help page how to set an option (a walk-through found no word of it).
    for command in ("train", "plan", "lr-find", "sweep"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert "--section.key VALUE" in " ".join(capsys.readouterr().out.split())


def test_a_full_disk_while_writing_predictions_is_one_line_and_leaves_nothing(classifier_dir, tmp_path, capsys, monkeypatch):
    import errno

    from taskembed import cli

    class FullDisk:
        def __init__(self, fh):
            self.fh = fh

        def writerow(self, row):
            self.fh.write(",".join(map(str, row)) + "\n")

        def writerows(self, rows):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cli.csv, "writer", FullDisk)
    texts = tmp_path / "texts.txt"
    texts.write_text("a fine film\na dull film\n", encoding="utf-8")
    out = tmp_path / "sub" / "p.csv"
    assert main(["predict", str(classifier_dir), "--file", str(texts), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: No space left on device: {out};") and len(err.strip().splitlines()) == 1, err
    assert list((tmp_path / "sub").iterdir()) == []  # neither p.csv nor p.csv.partial


def test_a_full_disk_when_training_saves_its_weights_names_the_output_folder(tiny_model_dir, tmp_path, capsys, monkeypatch):
    # safetensors writes from Rust: a full disk arrives as a SafetensorError whose text alone holds the OS error.
    from safetensors import SafetensorError
    from transformers import PreTrainedModel

    def full(self, *a, **k):
        raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })')

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", full)
    data = tmp_path / "d.csv"
    data.write_text("text,label\n" + "".join(f"{r['text']},{r['label']}\n" for r in make_rows(40)), encoding="utf-8")
    out = tmp_path / "runs" / "model"
    assert main(["train", "--data.source", str(data), "--model.name", str(tiny_model_dir), "--output.dir", str(out), "--epochs", "1",
                 "--no-progress", "--output.embedding_report", "false", "--train.keep_checkpoints", "0"]) == 1
    err = capsys.readouterr().err
    assert err == f"error: No space left on device: {out}; free some space, fix the permission or choose another path\n", err
    assert list((tmp_path / "runs").iterdir()) == []  # no model folder, no staging folder


def test_raise_write_error_renames_only_what_concerns_the_temporary(tmp_path):
    import errno

    from taskembed.errors import raise_write_error

    dest, tmp = tmp_path / "out", tmp_path / ".out.tmp-1"
    cases = [
        (OSError(errno.ENOSPC, "No space left on device"), (errno.ENOSPC, str(dest))),  # a write: no file name
        (PermissionError(errno.EACCES, "Permission denied", str(tmp / "a.json")), (errno.EACCES, str(dest))),
        (FileNotFoundError(errno.ENOENT, "No such file", str(tmp_path / "input.csv")), (errno.ENOENT, str(tmp_path / "input.csv"))),
    ]
    for exc, (code, name) in cases:
        with pytest.raises(OSError) as info:
            raise_write_error(exc, dest, tmp)
        assert (info.value.errno, info.value.filename) == (code, name)
    with pytest.raises(ValueError):  # not a write refusal: as it was
        raise_write_error(ValueError("a bug"), dest, tmp)


def test_embed_and_compare_read_the_columns_the_model_was_trained_on(tiny_model_dir, tmp_path, capsys):
    import csv as csv_module

    data = tmp_path / "intents.csv"
    with data.open("w", newline="", encoding="utf-8") as fh:
        w = csv_module.writer(fh)
        w.writerow(["utterance", "intent"])
        w.writerows([r["text"], r["label"]] for r in make_rows(60))
    model = tmp_path / "model"
    assert main(["train", "--data.source", str(data), "--data.text_column", "utterance", "--data.label_column", "intent",
                 "--model.name", str(tiny_model_dir), "--output.dir", str(model), "--epochs", "1", "--no-progress",
                 "--output.embedding_report", "false"]) == 0
    assert main(["embed", str(model), str(data), "--out", str(tmp_path / "v.parquet"), "--no-progress"]) == 0
    sidecar = json.loads((tmp_path / "v.parquet.json").read_text())
    assert (sidecar["source"]["text_column"], sidecar["source"]["label_column"]) == ("utterance", "intent")
    capsys.readouterr()
    assert main(["compare", str(tiny_model_dir), str(model), str(data), "--out-dir", str(tmp_path / "report"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "![" not in out and f"written to {tmp_path / 'report'}" in out  # no image link that only resolves beside the report


def test_second_texts_for_a_single_text_model_and_one_column_for_two_roles_are_refused(classifier_dir, tmp_path, capsys, write_csv):
    data = str(write_csv(make_rows(10)))
    for argv, piece in ((["predict", str(classifier_dir), "--file", data, "--text-pair-column", "label"], "trained on single texts"),
                        (["predict", str(classifier_dir), "a film", "--text-pair-column", "b"], "trained on single texts"),
                        (["evaluate", str(classifier_dir), data, "--text-pair-column", "text"], "trained on single texts"),
                        (["evaluate", str(classifier_dir), data, "--text-column", "label"], "columns must differ")):
        code, _, err = run_cli(argv, capsys)
        assert code == 2 and piece in err and len(err.strip().splitlines()) == 1, (argv, err)


def test_only_what_the_machine_refuses_is_shortened_to_one_line(monkeypatch):
    # A full disk or a permission is the user's to fix; a network reset keeps its traceback.
    from taskembed import cli

    def reset(*_a, **_k):
        raise ConnectionResetError(104, "Connection reset by peer")

    monkeypatch.setattr(cli, "cmd_datasets", reset)
    with pytest.raises(ConnectionResetError):
        main(["datasets"])


def test_advice_names_a_setting_as_the_caller_sets_it(tmp_path, capsys):
    """The same mistake through the command line and through Python: each is told the fix in its own spelling, and the
    Python one, taken literally, gets past the error (a flag with a lower-case true is nothing Python can take)."""
    import ast

    from taskembed.config import as_config
    from taskembed.data import load_splits

    data = tmp_path / "reviews.csv"
    data.write_text("review,label\n" + "a gripping film,pos\na dull plot,neg\n" * 6, encoding="utf-8")
    out = tmp_path / "out"
    code, _, err = run_cli(["train", "--data.source", str(data), "--output.dir", str(out)], capsys)
    assert_clean_failure(code, err, out)
    assert err.rstrip().endswith("did you mean 'review'? set it with --data.text_column review"), err

    overrides = {"data.source": str(data), "data.validation_fraction": 0.0, "data.test_fraction": 0.0}
    with pytest.raises(taskembed.UserError, match=r"did you mean 'review'\? set it with overrides=\{'data.text_column': 'review'\}$") as caught:
        load_splits(as_config(None, overrides).data)
    advice = ast.literal_eval(str(caught.value).rsplit("overrides=", 1)[1])
    assert list(load_splits(as_config(None, {**overrides, **advice}).data).frames["train"]["text"])[:2] == ["a gripping film", "a dull plot"]

    # The folder-exists refusal: a flag with a lower-case value on the command line, a dict with True in Python.
    out.mkdir()
    from taskembed import artifacts

    (out / artifacts.MODEL_MARKER).write_text("{}", encoding="utf-8")
    with pytest.raises(taskembed.UserError, match=r"already exists; pass overrides=\{'output.overwrite': True\} or choose another output.dir$"):
        artifacts.check_output_dir(out, overwrite=False)
    from taskembed.errors import command_line

    with command_line(), pytest.raises(taskembed.UserError, match=r"already exists; pass --output.overwrite true or choose another --output.dir$"):
        artifacts.check_output_dir(out, overwrite=False)


def test_a_url_for_data_is_said_to_be_one(classifier_dir, tmp_path, capsys):
    # It was "file not found; check the path", or for a URL without a table's suffix a Hub lookup of it as a dataset name.
    said = "a URL; taskembed reads local files, built-in datasets and Hub dataset names, not web addresses: download the file first"
    for url in ("https://example.com/reviews.csv", "https://example.com/reviews"):
        out = tmp_path / "out"
        code, _, err = run_cli(["train", "--data.source", url, "--output.dir", str(out)], capsys)
        assert_clean_failure(code, err, out)
        assert err.startswith(f"error: {url}: {said}"), err
    url = "http://example.com/more.csv"
    for args in (["predict", str(classifier_dir), "--file", url], ["evaluate", str(classifier_dir), url],
                 ["embed", str(classifier_dir), url, "--out", str(tmp_path / "v.parquet")]):
        code, _, err = run_cli(args, capsys)
        assert code == 2 and err.startswith(f"error: {url}: {said}") and "\n" not in err.strip(), (args, err)
    assert not (tmp_path / "v.parquet").exists()


def test_embed_suggests_the_column_of_texts_not_the_closest_name(classifier_dir, tmp_path, capsys):
    data = tmp_path / "intents.csv"
    data.write_text("utterance,intent\nwhat is the weather like today,weather\nturn on the lights please,lights\n", encoding="utf-8")
    code, _, err = run_cli(["embed", str(classifier_dir), str(data), "--out", str(tmp_path / "v.npy")], capsys)
    assert code == 2 and err.rstrip().endswith("did you mean 'utterance'? pass --text-column utterance"), err
    # embed_file in Python takes the option as its keyword, which its message names
    from taskembed.embed import embed_file

    with pytest.raises(taskembed.UserError, match=r"pass text_column='utterance'$"):
        embed_file(classifier_dir, data, tmp_path / "w.npy", progress=False)
    assert not (tmp_path / "w.npy").exists()


def test_predict_on_a_table_without_the_trained_column_suggests_the_column_of_texts(classifier_dir, tmp_path, capsys):
    data = tmp_path / "one.csv"
    data.write_text("sentence\nturn on the light\nset volume to 3\n", encoding="utf-8")
    code, _, err = run_cli(["predict", str(classifier_dir), "--file", str(data)], capsys)
    # predict has no Python function with a text_column= keyword: the flag alone
    assert code == 2 and err.strip().endswith("no column 'text' (columns: sentence); did you mean 'sentence'? pass --text-column sentence"), err


def test_embed_file_in_python_reads_the_columns_the_model_was_trained_on(classifier_dir, tmp_path):
    # As the embed command does: a model trained on 'utterance' and 'intent' reads those columns unless told otherwise.
    import shutil

    from taskembed.embed import embed_file

    model = tmp_path / "model"
    shutil.copytree(classifier_dir, model)
    (model / "training_config.json").write_text(json.dumps({"data": {"text_column": "utterance", "label_column": "intent"}}))
    data = tmp_path / "intents.csv"
    data.write_text("utterance,intent\nwhat is the weather like today,weather\nturn on the lights please,lights\n", encoding="utf-8")
    info = embed_file(model, data, tmp_path / "v.parquet", progress=False)
    assert info["count"] == 2 and info["source"]["text_column"] == "utterance" and info["source"]["label_column"] == "intent"


def test_embed_says_a_pair_model_encodes_one_text_alone(classifier_dir, tmp_path, capsys, write_csv):
    (classifier_dir / "training_config.json").write_text(json.dumps({"data": {"text_column": "text", "text_pair_column": "hypothesis"}}))
    code, out, _ = run_cli(["embed", str(classifier_dir), str(write_csv(make_rows(10))), "--out", str(tmp_path / "v.npy"), "--no-progress"], capsys)
    assert code == 0 and "note: the model was trained on text pairs (second text: 'hypothesis'); each vector encodes one text of 'text' alone" in out
    # compare embeds one text too, and scores it against the pair's label: said the same way
    code, out, _ = run_cli(["compare", str(classifier_dir), str(classifier_dir), str(write_csv(make_rows(20))), "--out-dir",
                            str(tmp_path / "cmp"), "--no-progress"], capsys)
    assert code == 0 and "note: the model was trained on text pairs (second text: 'hypothesis'); each side embeds one text of 'text' alone" in out
    assert f"note: {classifier_dir} and {classifier_dir} hold the same weights, so before and after differ only in how they pool" in out
    (classifier_dir / "training_config.json").write_text(json.dumps({"data": {"text_column": "text"}}))
    code, out, _ = run_cli(["embed", str(classifier_dir), str(write_csv(make_rows(10))), "--out", str(tmp_path / "w.npy"), "--no-progress"], capsys)
    assert code == 0 and "text pairs" not in out


def test_options_may_come_between_the_texts(classifier_dir, tmp_path, capsys):
    # `predict MODEL --out p.csv "a text"`: plain argparse gave the text list only the words before the first option.
    out = tmp_path / "p.csv"
    code, _, err = run_cli(["predict", str(classifier_dir), "a fine film", "--out", str(out), "a dull film"], capsys)
    assert code == 0, err
    assert [r.split(",")[0] for r in out.read_text().splitlines()[1:]] == ["a fine film", "a dull film"]


def test_an_output_that_is_the_input_file_is_refused_before_any_work(classifier_dir, tmp_path, capsys, write_csv):
    # `predict --file x.csv --out x.csv` (or embed's, evaluate's) replaced the user's table with what was read from it.
    rows = [{**r, "author": "someone"} for r in make_rows(6)]
    for name, argv in (("p.csv", ["predict", str(classifier_dir), "--file", "{f}", "--out", "{f}"]),
                       ("e.parquet", ["embed", str(classifier_dir), "{f}", "--out", "{f}"])):
        data = tmp_path / name
        if name.endswith(".parquet"):
            pd.DataFrame(rows).to_parquet(data)
        else:
            write_csv(rows, name)
        before = data.read_bytes()
        code, _, err = run_cli([a.format(f=data) for a in argv], capsys)
        assert code == 2 and "is the input file" in err and len(err.strip().splitlines()) == 1, err
        assert data.read_bytes() == before
    js = tmp_path / "d.json"
    js.write_text(json.dumps(make_rows(6)))
    before = js.read_bytes()
    code, _, err = run_cli(["evaluate", str(classifier_dir), str(js), "--out", str(js)], capsys)
    assert code == 2 and "is the input file" in err and js.read_bytes() == before, err


def test_outputs_do_not_replace_the_files_of_a_trained_folder(tiny_overrides, tmp_path, capsys, write_csv):
    # `evaluate --out runs/X/metrics.json` replaced training's metrics (which the demo reads) with an evaluation's, and
    # `compare --out-dir runs/X` the report the model card quotes; nothing said so. A new file beside them is allowed.
    data = write_csv(make_rows(40))
    folder = Path(taskembed.train(None, {**tiny_overrides, "data.source": str(data), "train.epochs": 1,
                                         "data.test_fraction": 0.2}, progress=False).output_dir)
    kept = {name: (folder / name).read_bytes() for name in ("metrics.json", "embedding_report.json")}
    for argv, named in (
        (["evaluate", str(folder), str(data), "--out", str(folder / "metrics.json")], "would replace metrics.json, which training wrote"),
        (["compare", str(tiny_overrides["model.name"]), str(folder), str(data), "--out-dir", str(folder), "--no-progress"],
         "is a trained model's folder"),
    ):
        code, _, err = run_cli(argv, capsys)
        assert code == 2 and named in err and len(err.strip().splitlines()) == 1, err
    assert {name: (folder / name).read_bytes() for name in kept} == kept
    assert "metrics.json" in json.loads((folder / "run.json").read_text())["files"]
    predict = ["predict", str(folder), "--file", str(data), "--out", str(folder / "predictions.csv")]
    for _ in range(2):  # a file of the user's own, written again
        assert run_cli(predict, capsys)[0] == 0 and (folder / "predictions.csv").is_file()
    # A folder whose run.json lists nothing (an earlier taskembed's): no existing file is replaced.
    run = json.loads((folder / "run.json").read_text())
    (folder / "run.json").write_text(json.dumps({k: v for k, v in run.items() if k != "files"}))
    code, _, err = run_cli(predict, capsys)
    assert code == 2 and "would replace predictions.csv" in err and "outside the model folder" in err, err


def test_a_data_file_under_home_reads_by_tilde(classifier_dir, monkeypatch, capsys, write_csv):
    # Config paths expanded ~, but evaluate's DATA and predict's --file did not: "~/x.csv: file not found; did you
    # mean /home/.../x.csv?", naming the very file that was given (a path from Python, or in quotes on a command line).
    import taskembed

    data = write_csv(make_rows(8, labels=("LABEL_0", "LABEL_1")))  # the labels classifier_dir knows
    monkeypatch.setenv("HOME", str(data.parent))
    tilde = f"~/{data.name}"
    assert taskembed.evaluate(classifier_dir, tilde)["n"] == 8
    code, out, err = run_cli(["predict", str(classifier_dir), "--file", tilde], capsys)
    assert code == 0 and len(out.strip().splitlines()) >= 8, err
    code, _, err = run_cli(["evaluate", str(classifier_dir), "~/missing.csv"], capsys)
    assert code == 2 and "~/missing.csv: file not found" in err, err


def test_a_model_folder_under_home_loads_by_tilde(classifier_dir, monkeypatch):
    import taskembed

    monkeypatch.setenv("HOME", str(classifier_dir.parent))  # what Path.expanduser reads
    assert taskembed.load(f"~/{classifier_dir.name}").folder == classifier_dir


def test_predict_prints_one_line_per_text_and_says_when_blank_lines_shift_the_rows(classifier_dir, tmp_path, capsys):
    code, out, _ = run_cli(["predict", str(classifier_dir), "a fine\nfilm", "tab\there"], capsys)
    lines = out.strip().splitlines()
    assert code == 0 and len(lines) == 2 and lines[0].endswith("\ta fine\\nfilm") and lines[1].endswith("\ttab\\there"), out
    # A very long text is cut on the terminal (--out keeps it whole).
    code, out, _ = run_cli(["predict", str(classifier_dir), "word " * 10_000], capsys)
    assert code == 0 and out.strip().endswith("... (50,000 characters)") and len(out) < 400, out
    src = tmp_path / "in.txt"
    src.write_text("a fine film\n\n\na dull film\n\n")
    code, out, err = run_cli(["predict", str(classifier_dir), "--file", str(src)], capsys)
    assert code == 0 and len(out.strip().splitlines()) == 2
    assert "note: 2 blank line(s) skipped, so prediction i is for the i-th non-blank line" in err  # the trailing one shifts nothing
    table = tmp_path / "in.csv"  # a spreadsheet's empty rows in a table, likewise
    table.write_text("text\na fine film\n,\na dull film\n", encoding="utf-8")
    code, out, err = run_cli(["predict", str(classifier_dir), "--file", str(table)], capsys)
    assert code == 0 and len(out.strip().splitlines()) == 2
    assert f"note: 1 empty row(s) of {table} skipped, so prediction i is for the i-th non-empty row, not row i" in err, err
    assert "were read up to that length" not in err
    # A text longer than the model's data.max_length is judged by its start only: said, as evaluate and embed say it.
    limit = taskembed.load(classifier_dir).max_length
    code, out, err = run_cli(["predict", str(classifier_dir), "a fine film", "film " * (limit + 5)], capsys)
    assert code == 0 and len(out.strip().splitlines()) == 2
    assert f"note: 1 text(s) longer than {limit} tokens (the model's data.max_length) were read up to that length only" in err
    # The note comes from predict's own tokenization (last_truncated), the count count_truncated makes separately.
    clf = taskembed.load(classifier_dir)
    texts = ["a fine film", "film " * (limit + 5), "dull " * (limit + 1)]
    clf.predict(texts)
    assert clf.last_truncated == clf.count_truncated(texts) == 2
    clf.predict(["a fine film"])
    assert clf.last_truncated == 0


def test_a_pair_model_is_shown_how_to_predict_and_stacked_corrections_get_a_note(tiny_model_dir, tmp_path, capsys, write_csv,
                                                                                   monkeypatch):
    # The printed "try it" (one text) and "demo" lines both failed for a model trained on text pairs.
    rows = [{**r, "pair": "extra words here"} for r in make_rows(40)]
    data = write_csv(rows)
    from taskembed.embed import Embedder

    seen: list = []
    real = Embedder.encode
    monkeypatch.setattr(Embedder, "encode", lambda self, t, progress=False, pairs=None: seen.append(pairs) or real(self, t, progress, pairs))
    code, out, err = run_cli(["train", "--data.source", str(data), "--data.text_pair_column", "pair", "--model.name", str(tiny_model_dir),
                              "--data.max_length", "32", "--train.epochs", "1", "--train.bf16", "off", "--output.dir", str(tmp_path / "m"),
                              "--train.sampler", "balanced", "--train.class_weights", "balanced", "--no-progress"], capsys)
    assert code == 0, err
    # Its embedding report reads each validation text with its second text, as the model does.
    report = json.loads((tmp_path / "m" / "embedding_report.json").read_text())
    assert report["neighbours"] and all(n["text"].endswith(" [SEP] extra words here") for n in report["neighbours"])
    # both sides were given the pairs, and the tuned side's second reading (with the base's pooling, for the shift) too
    assert len(seen) == 3 and all(p and set(p) == {"extra words here"} for p in seen)
    # the bar's time counts the validation passes; the last line tells them apart
    assert re.search(rf"saved to {re.escape(str(tmp_path / 'm'))}/ \(training took \d+ s, and its validation passes [\d.]+ s\)", out)
    assert f"predict {tmp_path / 'm'} --file PAIRS.csv    (columns 'text' and 'pair'; the demo takes single-text models only)" in out
    assert "demo:" not in out
    assert "note: train.sampler balanced and train.class_weights balanced each even out the classes" in out
    # the same column for both texts pairs each text with itself: refused, as evaluate refuses it
    code, _, err = run_cli(["predict", str(tmp_path / "m"), "--file", str(data), "--text-pair-column", "text"], capsys)
    assert code == 2 and "the text and second-text columns must differ (both 'text')" in err, err


def test_predict_proba_takes_one_string_as_one_text(classifier_dir):
    import taskembed

    clf = taskembed.load(classifier_dir)
    assert clf.predict_proba("a fine film").shape == (1, 2)  # it was 11 rows, one per character
    assert clf.logits("great film").shape == (1, 2)


@pytest.mark.parametrize("argv0, words", [
    ("/somewhere/venv/bin/taskembed", ["/somewhere/venv/bin/taskembed"]),       # not on PATH: as typed
    ("/repo/taskembed/cli.py", ["{python}", "-m", "taskembed"]),              # python -m taskembed.cli
    ("/repo/taskembed/__main__.py", ["{python}", "-m", "taskembed"]),         # python -m taskembed
    ("/usr/bin/pytest", ["taskembed"]),
])
def test_printed_commands_name_taskembed_as_it_was_started(argv0, words, monkeypatch):
    import sys

    from taskembed.cli import _invoked_as

    monkeypatch.setattr(sys, "argv", [argv0])
    assert _invoked_as() == [w.format(python=sys.executable) for w in words]


def test_a_command_to_train_again_under_torchrun_names_torchrun(monkeypatch):
    # The "continue with:" line after a stopped torchrun run named `python -m taskembed train ... --resume`, which one
    # process then refused ("the number of processes 2 -> 1").
    import sys

    from taskembed.cli import _launched_as

    monkeypatch.setattr(sys, "argv", ["/repo/taskembed/__main__.py"])
    assert _launched_as() == [sys.executable, "-m", "taskembed"]  # one process
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "none")
    assert _launched_as() == ["torchrun", "--nproc_per_node", "2", "-m", "taskembed"]
    monkeypatch.setenv("WORLD_SIZE", "8")
    assert _launched_as() == ["torchrun", "--nnodes", "4", "--nproc_per_node", "2", "-m", "taskembed"]


def test_a_folder_that_is_no_model_is_told_which_folder_to_give(tmp_path, capsys, write_csv):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("mine")
    assert main(["predict", str(tmp_path / "notes"), "a text"]) == 2
    assert capsys.readouterr().err.strip().endswith("no config.json, so this is not a Hugging Face model folder; give the folder "
                                                    "`taskembed train` wrote (its output.dir)")
    data = write_csv(make_rows(20))
    assert main(["train", "--model.name", str(tmp_path / "notes"), "--data.source", str(data), "--output.dir", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.strip().endswith("give a folder with config.json and the weights, or a Hub id, as the model")


def test_plan_says_what_the_dry_run_says_of_stages_that_never_start(tmp_path, capsys, tiny_model_dir):
    # The tiny model's plan has stages 0 to 3 (head, layer 1, layer 0, embeddings): by epoch over 2 epochs, 2 never start.
    argv = ["--model.name", str(tiny_model_dir), "--train.gradual_unfreezing", "epoch", "--train.epochs", "2"]
    assert main(["plan", *argv]) == 0
    out = capsys.readouterr().out
    assert "(stages 0 to 3)" in out and "the last 2 stage(s) never start" in out
    assert main(["plan", "--json", *argv]) == 0
    json.loads(capsys.readouterr().out)  # JSON alone, notes left out
    assert main(["plan", *argv[:4], "--train.epochs", "4"]) == 0
    assert "never start" not in capsys.readouterr().out


def test_evaluate_in_python_names_its_keyword_beside_the_flag(classifier_dir):
    import pandas as pd

    import taskembed

    frame = pd.DataFrame({"text": ["a fine film", "a dull film"], "other": ["x", "y"], "label": ["pos", "neg"]})
    with pytest.raises(taskembed.UserError, match=r"^text_pair_column='other': .* single texts; drop it$"):
        taskembed.evaluate(classifier_dir, frame, text_pair_column="other")
    with pytest.raises(taskembed.UserError, match=r"name each with text_column=, text_pair_column= and label_column=$"):
        taskembed.evaluate(classifier_dir, frame, label_column="text")


def test_a_text_column_beside_texts_given_as_arguments_is_said_to_do_nothing(classifier_dir, capsys):
    assert main(["predict", str(classifier_dir), "--text-column", "review", "a fine film"]) == 0
    printed = capsys.readouterr()
    assert printed.err == "note: --text-column review applies to a table given with --file, not to texts given as arguments\n"
    assert printed.out.rstrip().endswith("a fine film") and "note" not in printed.out  # the predictions alone on stdout
