"""The typed config: shipped files, defaults, every problem in one line, CLI overrides, YAML pitfalls."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from taskembed import config as config_module
from taskembed.config import SECTIONS, Config, DataConfig, TrainConfig, as_config, config_from_dict, field_docs, load_config, parse_overrides
from taskembed.errors import UserError, command_line

ROOT = Path(__file__).parent.parent
SHIPPED = sorted((ROOT / "configs").glob("*.yaml"))


def problems(raw=None, overrides=None) -> str:
    """The message of the UserError a config raises; it must be a single line."""
    with pytest.raises(UserError) as info:
        config_from_dict(raw or {}, overrides)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


# --- shipped configs and defaults -------------------------------------------------------------


def test_configs_folder_is_not_empty():
    assert (ROOT / "configs" / "sentiment.yaml") in SHIPPED


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_config_loads_and_round_trips(path):
    cfg = load_config(path)
    assert isinstance(cfg, Config)
    assert config_from_dict(cfg.to_dict()) == cfg


def test_no_path_gives_the_valid_defaults():
    cfg = load_config()
    assert cfg == Config()
    assert config_from_dict(cfg.to_dict()) == cfg


def test_every_option_is_documented_on_one_line():
    for name, cls in SECTIONS.items():
        docs = field_docs(cls)
        fields = [f.name for f in dataclasses.fields(cls)]
        assert sorted(docs) == sorted(fields), name
        for key in fields:
            assert docs[key].strip() and "\n" not in docs[key], f"{name}.{key}"
    assert field_docs(TrainConfig)["lr"] == "Learning rate of the top encoder layer."


def test_bare_keys_are_unique_across_sections():
    # A bare override (--epochs 2) resolves only when one section owns the key.
    names = [f.name for cls in SECTIONS.values() for f in dataclasses.fields(cls)]
    assert len(names) == len(set(names))


# --- problems, all at once, on one line --------------------------------------------------------


def test_unknown_keys_and_sections_suggest_the_right_name():
    msg = problems({"trian": {"lr": 1e-4}, "train": {"epoch": 2}, "data": {"text_colum": "review"}})
    assert msg.startswith("config: 3 problems: ")
    assert "unknown section 'trian'; did you mean 'train'?" in msg
    assert "unknown key 'train.epoch'; did you mean 'train.epochs'?" in msg
    assert "unknown key 'data.text_colum'; did you mean 'data.text_column'?" in msg
    # a column's role alone means its column option, not the nearest spelling (data.multi_label for data.label)
    assert problems({"data": {"label": "stars"}}).endswith("unknown key 'data.label'; did you mean 'data.label_column'?")
    # a key of another section, and a key YAML read as a number (class_weights' entries indented too little), which
    # raised a TypeError from the spelling suggestion
    assert problems({"train": {"max_length": 64}}).endswith("unknown key 'train.max_length'; it is a key of section 'data': move it under data:")
    import yaml

    msg = problems(yaml.safe_load("train:\n  class_weights:\n  0: 1.0\n  1: 3.0\n"))
    assert "unknown key 'train.0' (read as a number, not a name: an entry of the mapping above it, such as class_weights," in msg


def test_wrong_types_are_named_with_the_value():
    msg = problems({"train": {"batch_size": "many", "lr": True}, "data": {"source": ["a.csv", "b.csv"]}})
    assert msg.startswith("config: 3 problems: ")
    assert "train.batch_size must be an integer (got 'many')" in msg
    assert "train.lr must be a finite number (got true; on the command line an option given without a value reads as true)" in msg
    assert "data.source must be a string (got ['a.csv', 'b.csv'])" in msg


@pytest.mark.parametrize("value", [".inf", "-.inf", "inf", ".nan"])
def test_non_finite_numbers_are_refused(value):
    import yaml

    msg = problems({"train": {"epochs": yaml.safe_load(value)}})
    assert "1 problem: train.epochs must be a finite number" in msg


def test_contradictions_are_reported_together():
    msg = problems(
        {
            "train": {"lr": 0, "layer_decay": 0, "warmup_ratio": 1},
            "data": {"validation_fraction": 0.5, "test_fraction": 0.5, "text_pair_column": "text"},
        }
    )
    assert msg.startswith("config: 5 problems: ")
    for piece in (
        "train.lr must be > 0 (got 0.0)",
        "train.layer_decay must be in (0, 1] (got 0.0)",
        "train.warmup_ratio must be in [0, 1) (got 1.0)",
        "data.validation_fraction + data.test_fraction must leave training data (< 1)",
        "data.text_pair_column must differ from data.text_column",
    ):
        assert piece in msg


@pytest.mark.parametrize(
    "raw, piece",
    [
        ({"train": {"lr": -1e-5}}, "train.lr must be > 0 (got -1e-05)"),
        ({"train": {"layer_decay": 1.5}}, "train.layer_decay must be in (0, 1] (got 1.5)"),
        ({"data": {"label_column": "text"}}, "data.label_column must differ from the text columns"),
        ({"data": {"text_pair_column": "label"}}, "data.label_column must differ from the text columns"),
        ({"data": {"validation_fraction": 0.7, "test_fraction": 0.3}}, "must leave training data"),
        # one mistake, one problem: the sum is not checked when a fraction is out of range on its own
        ({"data": {"validation_fraction": 1.5}}, "data.validation_fraction must be in [0, 1) (got 1.5)"),
        ({"data": {"threshold_min_positives": 0}}, "data.threshold_min_positives must be >= 1 (got 0)"),
        # the plan refuses a zero rate; the config says so up front, before any data or model is loaded
        ({"train": {"embedding_lr": 0}}, "train.embedding_lr must be > 0 (got 0.0); to keep the embeddings fixed, set train.freeze_embeddings true"),
        ({"train": {"seed": -1}}, "train.seed must be in [0, 2**32) (got -1)"),
        ({"train": {"seed": 10**15}}, "train.seed must be in [0, 2**32) (got 1000000000000000)"),
        ({"lr": 1e-4}, "unknown section 'lr'; it is a key of section 'train': indent it under train:"),
        ({"data": {"split_seed": -3}}, "data.split_seed must be in [0, 2**32) (got -3)"),
        # the default stride is too wide for a short window: said, with a stride that fits
        ({"data": {"long_texts": "window", "max_length": 48}},
         "data.window_stride must be in [0, max_length / 2) (got 32, the default, with max_length 48); set data.window_stride 12"),
        ({"train": {"early_stopping_min_delta": -0.01}}, "train.early_stopping_min_delta must be a finite number >= 0 (got -0.01)"),
        # YAML reads `yes` as true: the map's key is what is wrong (and the message says why), not that a map was given
        ({"train": {"class_weights": {True: 2.0}}}, "train.class_weights entry True: must be a string (got true; "),
    ],
)
def test_single_contradiction(raw, piece):
    msg = problems(raw)
    assert msg.startswith("config: 1 problem: ") and piece in msg


def test_type_errors_and_contradictions_and_overrides_in_one_message():
    msg = problems({"train": {"batch_size": "x"}}, {"train.lr": -1, "epoch": 2})
    assert msg.startswith("config: 3 problems: ")
    assert "unknown option 'epoch'; did you mean 'epochs'?" in msg
    assert "train.batch_size must be an integer" in msg and "train.lr must be > 0" in msg


def test_load_config_names_the_file_in_the_message(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("train:\n  lr: -1\n  layer_decay: 2\n  schedule: stepwise\n")
    with pytest.raises(UserError) as info:
        load_config(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: 3 problems: ") and "\n" not in msg
    assert "train.schedule must be one of linear, cosine, constant (got 'stepwise')" in msg


# --- CLI overrides ------------------------------------------------------------------------------


def test_override_forms():
    assert parse_overrides(["--train.lr", "1e-4", "--lr=2e-4", "--output.overwrite", "--max-length", "64"]) == {
        "train.lr": "1e-4",  # YAML 1.1 reads it as a string; load_config turns it into a float
        "lr": "2e-4",
        "output.overwrite": True,
        "max_length": 64,
    }


def test_override_values_are_yaml_scalars():
    got = parse_overrides(["--model.revision", "null", "--output.baselines", "false", "--train.bf16", "off", "--train.epochs", "2.5"])
    assert got == {"model.revision": None, "output.baselines": False, "train.bf16": False, "train.epochs": 2.5}
    cfg = load_config(overrides=got)
    assert cfg.model.revision is None and cfg.output.baselines is False and cfg.train.bf16 == "off" and cfg.train.epochs == 2.5


def test_override_symbols_are_taken_literally():
    # A delimiter of symbols is meant as written: | and > are YAML block scalars, # a comment, and ~ and a blank were
    # read as null, so `--data.label_delimiter "~"` was "not set" and the advice asked for the option just given.
    for raw in ("|", ";", "#", "~", " ", "-", "> "):
        assert parse_overrides(["--data.label_delimiter", raw]) == {"data.label_delimiter": raw}
    assert load_config(overrides=parse_overrides(["--data.multi_label", "true", "--data.label_delimiter", "~"])).data.label_delimiter == "~"
    with pytest.raises(UserError, match="data.label_delimiter is empty or whitespace"):
        load_config(overrides=parse_overrides(["--data.multi_label", "true", "--data.label_delimiter", " "]))


def test_override_value_with_dashes_stays_intact():
    assert parse_overrides(["--model.name=/tmp/a-b", "--output.dir", "runs/my-run", "--train.lr", "-1"]) == {
        "model.name": "/tmp/a-b",
        "output.dir": "runs/my-run",
        "train.lr": -1,
    }
    cfg = load_config(overrides=parse_overrides(["--model.name=/tmp/a-b", "--data.text-column=review-text"]))
    assert cfg.model.name == "/tmp/a-b" and cfg.data.text_column == "review-text"


def test_bare_keys_resolve_to_their_section():
    cfg = load_config(overrides=parse_overrides(["--epochs", "2", "--lr=1e-4", "--max-length", "64", "--overwrite"]))
    assert cfg.train.epochs == 2.0 and cfg.train.lr == 1e-4 and cfg.data.max_length == 64 and cfg.output.overwrite is True


def test_ambiguous_bare_key_names_both_sections(monkeypatch):
    @dataclasses.dataclass
    class Extra:
        lr: float = 0.1
        """A second option called lr."""

    monkeypatch.setitem(SECTIONS, "extra", Extra)
    found: list[str] = []
    assert config_module._resolve_key("lr", found) is None
    assert found == ["'lr' is ambiguous: write one of train.lr, extra.lr"]


@pytest.mark.parametrize("args", [["train.lr", "1e-4"], ["--epochs", "2", "3"], ["--"], ["-lr", "1"]])
def test_argument_without_dashes_is_a_user_error(args):
    with pytest.raises(UserError, match=r"unexpected argument '.*': overrides look like --section.key value"):
        parse_overrides(args)


def test_override_with_unknown_section_suggests_one():
    msg = problems(overrides={"trian.lr": 1e-4})
    assert msg == "config: 1 problem: unknown section 'trian' in 'trian.lr'; did you mean 'train'?"


def test_overrides_win_over_the_file(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("train:\n  epochs: 3\ndata:\n  source: a.csv\n")
    cfg = load_config(path, {"train.epochs": 1, "data.source": "b.csv"})
    assert cfg.train.epochs == 1.0 and cfg.data.source == "b.csv"


# --- YAML files ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, content, piece",
    [
        ("invalid.yaml", "train:\n  lr: [1e-4\n  epochs: 2\n", "not valid YAML (line 3, column 9: expected ',' or ']', but got ':')"),
        ("list.yaml", "- train\n- data\n", "a config must be a mapping of sections"),
        ("scalar.yaml", "just words\n", "a config must be a mapping of sections"),
        ("latin1.yaml", "# r\u00e9glages\ntrain:\n  lr: 1.0e-4\n".encode("latin-1"), "not UTF-8 text (byte 3); re-save the file as UTF-8"),
        ("section.yaml", "train: 3\n", "section 'train' must be a mapping of keys"),
    ],
)
def test_yaml_file_problems_name_the_file(tmp_path, name, content, piece):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(UserError) as info:
        load_config(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: ") and piece in msg and "\n" not in msg


def test_missing_config_file(tmp_path):
    with pytest.raises(UserError, match=r"missing\.yaml: config file not found"):
        load_config(tmp_path / "missing.yaml")


def test_empty_file_means_defaults(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing set\n")
    assert load_config(path) == Config()


def test_exponent_without_dot_is_a_float(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("train:\n  lr: 1e-4\n  head_lr: 5E-3\n  epochs: 2\n")
    cfg = load_config(path)
    assert cfg.train.lr == 1e-4 and isinstance(cfg.train.lr, float)
    assert cfg.train.head_lr == 5e-3 and cfg.train.epochs == 2.0 and isinstance(cfg.train.epochs, float)


def test_yaml_on_off_reads_as_the_literal(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("train:\n  bf16: on\n")
    assert load_config(path).train.bf16 == "on"


def test_null_keeps_optional_fields_empty():
    cfg = config_from_dict({"data": {"validation": None, "max_train_samples": None}, "model": None})
    assert cfg.data == DataConfig()


def test_builtin_defaults_are_the_default_job():
    """`taskembed train` with no config must train exactly what configs/sentiment.yaml says."""
    assert load_config(None) == load_config(Path(__file__).resolve().parent.parent / "configs" / "sentiment.yaml")


def test_help_config_lists_every_option(capsys):
    from taskembed.cli import main

    assert main(["train", "--help-config"]) == 0
    out = capsys.readouterr().out
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            assert f"{section}.{f.name} = " in out
    # The options with a fixed set of values list them, as a typo's error would.
    assert "  train.schedule = 'linear'  (one of: linear, cosine, constant)\n" in out
    assert "  train.class_weights = 'none'  (one of: none, balanced, a mapping)\n" in out


def test_a_folder_given_as_the_config_file_is_named_as_one(tmp_path):
    with pytest.raises(UserError, match=r"is a folder; give a YAML config file"):
        load_config(tmp_path)
    # A saved dataset and a model folder are named for what they are, with the option that takes them.
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "dataset_dict.json").write_text("{}")
    with command_line(), pytest.raises(UserError, match=rf"^{tmp_path / 'ds'}: is a dataset folder \(datasets.save_to_disk\), "
                                                        rf"not a config; train on it with --data.source {tmp_path / 'ds'} \(no config needed\)$"):
        load_config(tmp_path / "ds")
    with pytest.raises(UserError, match=re.escape(f"train on it with overrides={{'data.source': '{tmp_path / 'ds'}'}} (no config needed)")):
        load_config(tmp_path / "ds")  # in Python, the same advice as train() takes it
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    (tmp_path / "m" / "model.safetensors").write_bytes(b"")
    with command_line(), pytest.raises(UserError, match=rf"^{tmp_path / 'm'}: is a model folder, not a config; to fine-tune it "
                                                        rf"further, give it as --model.name {tmp_path / 'm'}$"):
        load_config(tmp_path / "m")


def test_a_data_file_given_as_the_config_is_pointed_to_data_source(tmp_path):
    # `taskembed train tickets.tsv`, a new user's first guess, was parsed as YAML and refused as "fix the file's syntax".
    from taskembed.data import FILE_SUFFIXES

    assert config_module.DATA_SUFFIXES == FILE_SUFFIXES  # the tables training reads, which the advice sends to --data.source
    tsv = tmp_path / "tickets.tsv"
    tsv.write_text("text\tlabel\nwhere is my parcel\tshipping\n", encoding="utf-8")
    with command_line(), pytest.raises(UserError, match=rf"^{re.escape(str(tsv))}: is a data file, not a config; train on it with --data.source "):
        load_config(tsv)
    records = tmp_path / "tickets.json"  # a .json may be a config: judged by what it holds
    records.write_text('[{"text": "where is my parcel", "label": "shipping"}]', encoding="utf-8")
    with command_line(), pytest.raises(UserError, match=r"a config must be a mapping of sections .*; if the file holds training data, "
                                                        r"train on it with --data.source"):
        load_config(records)
    for name, said in (("notes.txt", "is a text file, not a config; training reads labelled examples from a table"),
                       ("tickets.xlsx", "is a spreadsheet, not a config; save it as CSV and train on it with --data.source tickets.csv")):
        (tmp_path / name).write_text("x", encoding="utf-8")
        with command_line(), pytest.raises(UserError, match=re.escape(said)):  # the advice to use --data.source would fail for these
            load_config(tmp_path / name)
    (tmp_path / "config.json").write_text('{"train": {"epochs": 2}}', encoding="utf-8")
    assert load_config(tmp_path / "config.json").train.epochs == 2


def test_config_changes_lists_what_differs_from_the_defaults():
    from taskembed.config import config_changes

    cfg = load_config(None, {"train.lr": 3e-5, "train.class_weights": {"a b": 2.0}, "data.source": "my file: a.csv"})
    assert config_changes(cfg) == ["data.source: 'my file: a.csv'", "model.name: sentence-transformers/all-MiniLM-L6-v2",
                                   "train.lr: 3.0e-05", "train.class_weights: {a b: 2.0}", "output.dir: runs/sentiment"]


def test_a_config_object_from_code_is_validated_too():
    import taskembed

    cfg = load_config(None)
    bad = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, label_smoothing=3.0))
    with pytest.raises(UserError, match="the Config given: .*train.label_smoothing"):
        taskembed.train(bad)
    with pytest.raises(UserError, match="^overrides: .*unknown key 'train.epoch'"):
        taskembed.train(None, {"train.epoch": 1})


def test_a_key_given_twice_in_a_config_file_is_refused(tmp_path):
    # PyYAML keeps the last of two equal keys without a word: 'lr' below would silently be 3e-4.
    path = tmp_path / "dup.yaml"
    path.write_text("train:\n  lr: 1e-4\n  epochs: 2\n  lr: 3e-4\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"line 4, column 3: key 'lr' appears twice; keep one"):
        load_config(path)
    # YAML's merge key is not a key given twice, and the keys it brings may be given again.
    path.write_text("base: &b {lr: 2.0e-5, epochs: 3}\ntrain:\n  <<: *b\n  epochs: 2\n", encoding="utf-8")
    with pytest.raises(UserError, match="unknown section 'base'"):  # it parses: the error is about the content
        load_config(path)
    path.write_text("train: {<<: {lr: 2.0e-5, epochs: 3}, epochs: 2}\n", encoding="utf-8")
    cfg = load_config(path)
    assert cfg.train.lr == 2e-5 and cfg.train.epochs == 2


def test_a_boolean_where_a_string_belongs_is_explained_for_both_sources():
    # True: an option given without a value on the command line, or an unquoted yes/on/true in YAML.
    msg = problems({"data": {"text_column": True}})
    assert "an option given without a value reads as true" in msg and "quote such a word, or write null" in msg


def test_a_merged_mapping_merged_again_is_not_taken_for_a_repeat(tmp_path):
    # PyYAML rewrites a merged mapping in place; a later visit must not read its merged keys as given twice.
    import yaml

    text = "b: &b {x: 1}\na:\n  inner: &m {<<: *b, x: 2}\ntop: {<<: *m}\n"
    assert config_module._UniqueKeyLoader(text).get_single_data() == yaml.safe_load(text)


def test_text_options_keep_numbers_as_written_in_files_and_overrides(tmp_path):
    # YAML 1.1 reads 0123 as octal 83, 12:30 as 750 and 1_0 as 10; a revision or column name must not be
    # rewritten that way without a word. Number options still read as numbers.
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  revision: 0123456\ndata:\n  text_column: 1_0\ntrain:\n  batch_size: 0x10\n", encoding="utf-8")
    cfg = load_config(path, parse_overrides(["--data.label_column", "12:30", "--train.lr", "1e-4"]))
    assert (cfg.model.revision, cfg.data.text_column, cfg.data.label_column) == ("0123456", "1_0", "12:30")
    assert cfg.train.batch_size == 16 and type(cfg.train.batch_size) is int and cfg.train.lr == 1e-4
    assert "revision: '0123456'" in config_module.dump_config(cfg)  # the dump reads back as the same text


def test_paths_starting_with_a_tilde_mean_the_home_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = load_config(None, parse_overrides(["--output.dir", "~/runs/x", "--data.test", "~/test.csv"]))
    assert (cfg.output.dir, cfg.data.test) == (str(tmp_path / "runs/x"), str(tmp_path / "test.csv"))


def test_a_mistyped_override_is_not_blamed_on_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epochs: 2\n", encoding="utf-8")
    with pytest.raises(UserError) as info:
        load_config(path, parse_overrides(["--train.epoch", "3"]))
    assert "unknown key 'train.epoch' (an override, not the file); did you mean 'train.epochs'?" in str(info.value)
    # A bad value or a contradiction given on the command line is marked too; the file's own are not.
    path.write_text("train:\n  epochs: 0\n", encoding="utf-8")
    with pytest.raises(UserError) as info:
        load_config(path, parse_overrides(["--train.class_weights", "Balanced", "--train.lr", "-1"]))
    assert str(info.value) == (f"{path}: 3 problems: train.class_weights (an override, not the file) must be one of none, balanced "
                               "(got 'Balanced'); train.lr (an override, not the file) must be > 0 (got -1.0); "
                               "train.epochs must be > 0 (got 0.0)")


def test_integer_options_read_leading_zeros_as_decimal_and_refuse_base_60():
    # YAML 1.1 reads 010 as octal 8 and 1:30 as 90; nobody means either for a seed or a batch size.
    assert load_config(None, parse_overrides(["--train.seed", "010", "--train.batch_size", "0x10"])).train.seed == 10
    assert "train.batch_size must be an integer (got '1:30')" in problems(overrides={"train.batch_size": parse_overrides(["--x", "1:30"])["x"]})
    assert "train.lr must be a finite number (got '1:30')" in problems(overrides={"train.lr": parse_overrides(["--x", "1:30"])["x"]})


# --- settings the rest of the config makes meaningless --------------------------------------------


@pytest.mark.parametrize("key, value, off, on", [
    ("data.window_stride", 16, ("data.long_texts", "truncate"), ("data.long_texts", "window")),
    ("data.window_aggregate", "max", ("data.long_texts", "truncate"), ("data.long_texts", "window")),
    ("data.threshold_min_positives", 3, ("data.multi_label", False), ("data.multi_label", True)),
    ("train.unfreeze_start", 1, ("train.gradual_unfreezing", "off"), ("train.gradual_unfreezing", "epoch")),
    ("train.contrastive_temperature", 0.2, ("train.contrastive_weight", 0.0), ("train.contrastive_weight", 0.1)),
    ("train.lr_batch_size", 64, ("train.lr_scaling", "none"), ("train.lr_scaling", "sqrt")),
    ("output.embedding_report_max_texts", 50, ("output.embedding_report", False), ("output.embedding_report", True)),
])
def test_a_setting_without_effect_is_noted_until_the_setting_that_gives_it_one_is_on(key, value, off, on):
    notes = config_module.without_effect(config_from_dict({}, {key: value, off[0]: off[1]}))
    assert len(notes) == 1 and notes[0].startswith(f"{key} is set but has no effect unless {on[0]} ")
    assert config_module.without_effect(config_from_dict({}, {key: value, on[0]: on[1]})) == []


def test_frozen_embeddings_make_their_rate_meaningless():
    notes = config_module.without_effect(config_from_dict({}, {"train.freeze_embeddings": True, "train.embedding_lr": 1e-5}))
    assert notes == ["train.embedding_lr is set but has no effect unless train.freeze_embeddings is false"]


def test_defaults_and_the_shipped_configs_have_no_setting_without_effect():
    assert config_module.without_effect(Config()) == []
    for path in SHIPPED:
        assert config_module.without_effect(load_config(path)) == [], path.name


def test_train_says_so_before_it_reads_any_data(tmp_path, monkeypatch):
    from taskembed import api

    class Reached(Exception):
        pass

    def load_splits(_cfg, _given=None):
        raise Reached

    monkeypatch.setattr(api, "load_splits", load_splits)
    messages: list[str] = []
    with pytest.raises(Reached):
        api.train(None, {"data.window_stride": 16, "output.dir": str(tmp_path / "out")}, progress=False, echo=messages.append)
    assert messages == ["note: data.window_stride is set but has no effect unless data.long_texts is window"]


def test_dry_run_prints_the_whole_config_the_notes_and_the_plan_and_trains_nothing(tiny_model_dir, tmp_path, capsys):
    from taskembed.cli import main

    out_dir = tmp_path / "out"
    rc = main(["train", "--dry-run", "--model.name", str(tiny_model_dir), "--data.window_stride", "16", "--output.dir", str(out_dir)])
    printed = capsys.readouterr().out
    assert rc == 0
    assert config_from_dict(yaml.safe_load(printed.split("\nnote: ")[0])).data.window_stride == 16
    assert "\nnote: data.window_stride is set but has no effect unless data.long_texts is window\n" in printed
    assert "embeddings" in printed.split("note: ")[1]  # the learning-rate plan follows, one row per group
    assert not out_dir.exists()


def test_a_data_path_found_only_beside_the_config_is_refused_with_both_places(tmp_path, monkeypatch):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "train.csv").write_text("text,label\na,x\nb,y\n")
    (tmp_path / "sub" / "cfg.yaml").write_text("data:\n  source: train.csv\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError) as err:
        load_config("sub/cfg.yaml")
    assert str(err.value) == (f"sub/cfg.yaml: data.source 'train.csv' is not in the current folder ({tmp_path}) but is beside the config; "
                              "paths in a config are read from the folder taskembed runs in: run it from sub or write 'sub/train.csv'")
    assert load_config("sub/cfg.yaml", {"data.source": "sub/train.csv"}).data.source == "sub/train.csv"  # overridden: fine
    (tmp_path / "train.csv").write_text("text,label\na,x\nb,y\n")
    assert load_config("sub/cfg.yaml").data.source == "train.csv"  # in the current folder: read from there, as always
    monkeypatch.chdir(tmp_path / "sub")
    assert load_config("cfg.yaml").data.source == "train.csv"
    (tmp_path / "sub" / "rotten_tomatoes").mkdir()  # a built-in's name: the built-in is read, whatever lies beside
    (tmp_path / "sub" / "builtin.yaml").write_text("data:\n  source: rotten_tomatoes\n")
    monkeypatch.chdir(tmp_path)
    assert load_config("sub/builtin.yaml").data.source == "rotten_tomatoes"
    (tmp_path / "sub" / "unl.txt").write_text("a text\n")  # data.unlabelled too (a bare "file not found" before)
    (tmp_path / "sub" / "unl.yaml").write_text("data:\n  source: rotten_tomatoes\n  unlabelled: unl.txt\n")
    with pytest.raises(UserError, match=r"data.unlabelled 'unl.txt' is not in the current folder .* but is beside the config"):
        load_config("sub/unl.yaml")


def test_output_dir_dot_means_the_folder_it_names_and_root_is_refused(tmp_path, monkeypatch):
    # `.` has no name to put `.checkpoints` or `.lr_find` after: `Path('.').with_name(...)` raised a ValueError traceback.
    monkeypatch.chdir(tmp_path)
    assert load_config(None, {"output.dir": "."}).output.dir == str(tmp_path)
    assert load_config(None, {"output.dir": ".."}).output.dir == str(tmp_path.parent)
    with pytest.raises(UserError, match="output.dir '/' is the root folder"):
        load_config(None, {"output.dir": "/"})


def test_a_dry_run_checks_that_the_data_files_are_there(tmp_path, monkeypatch, capsys):
    from taskembed.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["train", "--data.source", "nothere.csv", "--dry-run"]) == 2
    assert "nothere.csv: file not found" in capsys.readouterr().err
    rows = "".join(f"text number {i},{'ab'[i % 2]}\n" for i in range(40))
    (tmp_path / "train.csv").write_text("text,label\n" + rows)
    assert main(["train", "--data.source", "train.csv", "--data.test", "t.csv", "--dry-run"]) == 2
    assert "t.csv: file not found" in capsys.readouterr().err
    (tmp_path / "t.csv").write_text("text,label\na,b\n")
    assert main(["train", "--data.source", "train.csv", "--data.test", "t.csv", "--data.test_fraction", "0.2", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "note: data.test_fraction is set but has no effect unless data.test is unset" in out
    assert "data: train 36, validation 4, test 1; 2 labels: a, b" in out  # read as training reads it
    # What only reading the data finds, a dry run finds too (it read no data, and passed).
    (tmp_path / "typo.csv").write_text("txet,label\n" + rows)
    assert main(["train", "--data.source", "typo.csv", "--dry-run"]) == 2
    assert "no column 'text'" in capsys.readouterr().err
    # A single file is all train, so early stopping with no validation carved from it fails the real run: the dry run says so.
    stop = ["train", "--data.source", "train.csv", "--train.early_stopping_patience", "2", "--dry-run"]
    assert main(stop + ["--data.validation_fraction", "0"]) == 2
    assert "train.early_stopping_patience needs a validation split" in capsys.readouterr().err
    # Settings this run's length leaves without effect: 40 texts, batch 32, 3 epochs are 6 steps, and validation at each
    # epoch's end 3 evaluations, the last at the last step; a patience of 2 can stop such a run only there, so not early.
    stop = stop + ["--data.validation", "t.csv", "--data.validation_fraction", "0"]
    assert main(stop) == 0
    out = capsys.readouterr().out
    assert "note: this run takes 6 optimizer step(s) (2 an epoch), too few to train much; on a few examples per label more " in out
    notes = [line for line in out.splitlines() if line.startswith("note: train.")]
    assert notes == ["note: train.early_stopping_patience 2 cannot stop this run early: it evaluates 3 time(s), the last at its "
                     "last step, and stopping takes 2 evaluation(s) without a gain after the best one; evaluate more often "
                     "(train.eval_every, in optimizer steps of the 6) or train longer"]
    assert main(stop + ["--train.eval_every", "1"]) == 0  # 6 evaluations: no note
    assert not [line for line in capsys.readouterr().out.splitlines() if line.startswith("note: train.")]
    assert main(stop + ["--train.epochs", "10", "--train.batch_size", "8"]) == 0  # the few-shot recipe's length was asked for
    assert "note: this run takes" not in capsys.readouterr().out
    assert main(stop + ["--train.eval_every", "6", "--train.checkpoint_every", "6"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "note: train.eval_every 6 is not less than this run's 6 optimizer steps, so validation runs once, at the end" in out
    assert "note: train.early_stopping_patience 2 cannot stop this run early: it evaluates 1 time(s)" in out
    assert "note: train.checkpoint_every 6 is not less than this run's 6 optimizer steps, so checkpoints are written at epoch ends only" in out
    # Without validation the last weights are kept, so what chooses among evaluations does nothing.
    assert main(["train", "--data.source", "train.csv", "--data.validation_fraction", "0", "--train.metric", "macro_f1",
                 "--train.eval_every", "2", "--dry-run"]) == 0
    assert ("note: train.eval_every and train.metric are set but have no effect without a validation split: the last weights "
            "are kept (data.validation_fraction or data.validation gives one)") in " ".join(capsys.readouterr().out.split())
    # A Hub dataset with the Hub out of reach (HF_HUB_OFFLINE here) is read from the local cache, as training reads it, so
    # what training refuses the dry run refuses (it said "read from the Hub when training" and passed); a near miss of a
    # built-in name likewise, but not another name that shares a word with one.
    assert main(["train", "--data.source", "someorg/reviews", "--dry-run"]) == 2
    assert "the Hugging Face Hub cannot be reached" in capsys.readouterr().err
    assert main(["train", "--data.source", "rotten_tomatos", "--dry-run"]) == 2
    assert "did you mean 'rotten_tomatoes'?" in capsys.readouterr().err
    assert main(["train", "--data.source", "app_reviews", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "the Hugging Face Hub cannot be reached" in err and "did you mean" not in err
    # A saved dataset of a train split only is all train too: found by reading it, as training finds it.
    import datasets

    datasets.Dataset.from_dict({"text": [f"text number {i}" for i in range(40)], "label": ["ab"[i % 2] for i in range(40)]}
                               ).save_to_disk(str(tmp_path / "ds"))
    capsys.readouterr()
    assert main(["train", "--data.source", "ds", "--train.early_stopping_patience", "2", "--data.validation_fraction", "0",
                 "--dry-run"]) == 2
    assert "train.early_stopping_patience needs a validation split" in capsys.readouterr().err
    # And what training says of the data, the dry run says (here: test texts that are training texts).
    (tmp_path / "dup.csv").write_text("text,label\n" + rows)
    assert main(["train", "--data.source", "train.csv", "--data.test", "dup.csv", "--dry-run"]) == 0
    assert "note: 36 of the 40 test examples are also in the training data" in capsys.readouterr().out  # 4 went to validation
    # An output folder the run would refuse, the dry run refuses, with the same advice.
    (tmp_path / "runs" / "sentiment").mkdir(parents=True)
    (tmp_path / "runs" / "sentiment" / "training_config.json").write_text("{}")
    assert main(["train", "--data.source", "train.csv", "--dry-run"]) == 2
    printed = capsys.readouterr()
    assert printed.err.startswith("error: the check above passed, but training would stop here: "
                                  "output.dir runs/sentiment already exists; pass --output.overwrite true")
    assert "weight decay 0 on biases" in printed.out  # the rest of the check, the plan last, was shown first
    assert main(["train", "--data.source", "train.csv", "--dry-run", "--output.overwrite", "true"]) == 0


def test_an_empty_label_delimiter_says_to_quote_it_in_yaml(tmp_path):
    # `label_delimiter: |` unquoted is an empty block of text to YAML: the user wrote the separator the message suggested.
    path = tmp_path / "ml.yaml"
    path.write_text("data:\n  multi_label: true\n  label_delimiter: |\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"quoted in a YAML file \(label_delimiter: '\|'\), where a bare \| is read as an empty block"):
        load_config(path)


def test_the_trainers_names_are_answered_with_taskembeds_keys():
    """A Trainer user's num_train_epochs was answered "did you mean 'train.mlm_epochs'?", which adds a masked-LM stage."""
    from taskembed.config import TRAINER_NAMES, is_option

    assert "the Trainer's num_train_epochs here: train.epochs" in problems(overrides={"num_train_epochs": 3})
    assert "unknown key 'train.learning_rate'; the Trainer's learning_rate here: train.lr" in problems({"train": {"learning_rate": 1e-4}})
    assert "unknown key 'data.train_file'; the Trainer's train_file here: data.source" in problems(overrides={"data.train_file": "x.csv"})
    for name, advice in TRAINER_NAMES.items():
        assert not is_option(name), name  # a name taskembed has itself is not advice
        named = re.findall(r"\b(data|model|train|output)\.(\w+)", advice)
        assert named or advice.startswith("no key; "), (name, advice)
        assert all(is_option(f"{s}.{k}") for s, k in named), (name, advice)
    # docs/comparison.md lists them all, as said
    doc = (Path(__file__).parent.parent / "docs" / "comparison.md").read_text(encoding="utf-8")
    assert all(f"| `{name}` | {advice} |" in doc for name, advice in TRAINER_NAMES.items())


def test_python_overrides_may_be_laid_out_as_the_yaml_is():

    cfg = as_config(None, {"train": {"epochs": 1, "class_weights": {"neg": 2.0}}, "data.max_length": 64, "seed": 3})
    assert (cfg.train.epochs, cfg.train.class_weights, cfg.data.max_length, cfg.train.seed) == (1.0, {"neg": 2.0}, 64, 3)
    with pytest.raises(UserError, match=r"^overrides: 1 problem: train.epochs must be a finite number \(got 'one'\)$"):
        as_config(None, {"train": {"epochs": "one"}})
    with pytest.raises(UserError, match=r"^overrides: train.epochs is given twice, as 'train.epochs' and under 'train'; give it once$"):
        as_config(None, {"train": {"epochs": 1}, "train.epochs": 2})
    assert as_config(None, {"train": None}).train == as_config(None).train  # an empty section, as in YAML



def test_python_values_a_notebook_passes_are_taken_as_they_mean():
    # NumPy's numbers (np.arange in a sweep, a pandas cell) and paths (result.output_dir / "v2") are values like any other.
    import numpy as np

    cfg = as_config(None, {"train.epochs": np.int64(2), "train.lr": np.float32(1e-4), "train.batch_size": np.int64(16),
                           "output.dir": Path("/tmp/x") / "v2", "model.name": Path("runs/sentiment")})
    assert (cfg.train.epochs, cfg.train.lr, cfg.train.batch_size) == (2.0, 1e-4, 16) and type(cfg.train.batch_size) is int
    assert (cfg.output.dir, cfg.model.name) == ("/tmp/x/v2", "runs/sentiment")
    with pytest.raises(UserError, match=r"train.batch_size must be an integer \(got np.True_\)"):
        as_config(None, {"train.batch_size": np.bool_(True)})
    with pytest.raises(UserError, match=r"train.lr must be a finite number \(got np.float64\(nan\)\)"):
        as_config(None, {"train.lr": np.float64("nan")})
    # a DataFrame given as the config is data: said where it goes
    import pandas as pd

    with pytest.raises(UserError, match=r"\(got DataFrame\) \(a DataFrame or Dataset goes in data=, as in taskembed.train\(None, data=df\)\)$"):
        as_config(pd.DataFrame({"text": ["a"], "label": ["b"]}))

def test_yaml_slips_of_a_trainer_user_get_advice_that_works():
    # A quoted integer is read as one, as a quoted float already was ("1e-4").
    cfg = config_from_dict({"train": {"batch_size": "16", "epochs": "1", "seed": " 7 "}})
    assert (cfg.train.batch_size, cfg.train.epochs, cfg.train.seed) == (16, 1.0, 7)
    assert "train.batch_size must be an integer (got '16.5')" in problems({"train": {"batch_size": "16.5"}})
    # A dotted key at the top of the file, as an override is written
    assert problems({"train.epochs": 1}) == ("config: 1 problem: unknown section 'train.epochs'; a file nests its keys: write train: "
                                             "on its own line and epochs: indented under it")


def test_advice_settings_read_back_as_what_they_set():
    # errors.setting writes the fix a message gives: taken as written, on the command line or in Python, it must set
    # exactly these values (a path with a space quoted, a boolean as YAML's true, a number as a number).
    import ast
    import shlex

    values = {"data.source": "my reviews.csv", "output.overwrite": True, "train.lr": 0.0001, "data.max_length": 256}
    from taskembed.errors import setting

    with command_line():
        flags = setting(values, resume=True)
    assert flags == "--resume --data.source 'my reviews.csv' --output.overwrite true --train.lr 0.0001 --data.max_length 256"
    assert parse_overrides(shlex.split(flags)[1:]) == values
    python = setting(values, resume=True)
    assert python.startswith("resume=True, overrides=") and ast.literal_eval(python.split("overrides=", 1)[1]) == values
