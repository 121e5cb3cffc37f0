"""Data in: the validation matrix (one clear line per bad input), formats, splits, labels, batches.

The malformed inputs live as small files in tests/data/bad/ (byte-exact: BOM, CRLF, latin-1,
NUL); the ones that are binary or large are written here into tmp_path instead.
"""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from taskembed.config import DataConfig
from taskembed.data import collate, encode, eval_batches, frames_from_python, load_splits, read_table, sort_labels, texts_from_file, train_batches
from taskembed.errors import UserError, command_line
from tests.conftest import make_rows

BAD = Path(__file__).parent / "data" / "bad"


def user_error(source: str | Path, **options) -> str:
    """The one-line UserError that loading `source` raises (no carving unless asked for)."""
    options.setdefault("validation_fraction", 0.0)
    with pytest.raises(UserError) as info:
        load_splits(DataConfig(source=str(source), **options))
    msg = str(info.value)
    assert "\n" not in msg
    return msg


# --- the bad-input matrix -----------------------------------------------------------------------

# (file in tests/data/bad, DataConfig options, pieces the message must hold besides the file name)
BAD_FILES = [
    ("ragged_extra_field.csv", {}, ["row 3 has 3 fields but the header has 2", "quote fields that contain ','"]),
    ("ragged_missing_field.csv", {}, ["row 2 has 1 fields but the header has 2", "or fix the row"]),
    ("ragged.tsv", {}, ["row 2 has 3 fields but the header has 2", "quote fields that contain 'TAB'"]),
    ("tabs_in.csv", {}, ["header has a single column", "contains tabs", "use the matching extension (.csv for commas, .tsv for tabs)"]),
    ("commas_in.tsv", {}, ["header has a single column 'text,label' but contains commas", "use the matching extension"]),
    ("semicolons.csv", {}, ["header has a single column 'text;label' but contains semicolons", "save it with one of those"]),
    ("unclosed_quote.csv", {}, ["line 3: malformed CSV (unexpected end of data)", "check the quoting"]),
    ("stray_quote.csv", {}, ["line 3: malformed CSV", "check the quoting"]),
    ("empty.csv", {}, ["file is empty; it needs a header row and at least one example"]),
    ("blank_lines.jsonl", {}, ["no records; one JSON object per line"]),
    ("header_only.csv", {}, ["has a header but no rows; add examples"]),
    ("duplicate_header.csv", {}, ["column 'text' appears twice in the header; rename one"]),
    ("duplicate_key.jsonl", {}, ["line 2: key 'label' appears twice in one object; keep one"]),
    ("txt_column.csv", {}, ["no column 'text' (columns: txt, label)", "did you mean 'txt'? set it with --data.text_column txt"]),
    ("capital_text_column.jsonl", {}, ["no column 'text' (columns: Text, label)", "did you mean 'Text'? set it with --data.text_column Text"]),
    ("no_label_column.csv", {}, ["no column 'label' (columns: text, category)", "did you mean 'category'? set it with --data.label_column category"]),
    ("spaced_header.csv", {}, ["no column 'label' (columns: text,  label)", "the header spells it ' label', with spaces",
                               "remove the spaces around the names in the header line"]),
    ("txt_column.csv", {"text_column": "txt", "text_pair_column": "hypothesis"}, ["no column 'hypothesis'", "set --data.text_pair_column"]),
    ("number_as_text.jsonl", {}, ["row 2: column 'text' holds 42 (int), not text", "quote it or fix the column"]),
    ("missing_text_key.jsonl", {}, ["row 3: the record has no key 'text' (its keys: label)", "every record needs one"]),
    ("invalid_line.jsonl", {}, ["line 3 is not valid JSON", "one JSON object per line"]),
    ("array_line.jsonl", {}, ["line 2 is a JSON list, not an object"]),
    ("null_label.jsonl", {}, ["row 2: label column 'label' is empty", "every example needs a label (drop the row or label it)"]),
    ("empty_label.csv", {}, ["row 2: label column 'label' is empty", "drop the row or label it"]),
    ("invalid.json", {}, ["not valid JSON (line 4:", "for one object per line use .jsonl"]),
    ("object.json", {}, ["expected a JSON list of objects (records); got dict"]),
    ("empty_list.json", {}, ["the list of records is empty"]),
    ("list_label.json", {}, ["row 1: label ['pos', 'funny'] is not a single class name or number", "for several labels per example set data.multi_label true"]),
    ("empty_text.csv", {}, ["row 2: column 'text' is empty or only whitespace", "fill it or drop the row"]),
    ("whitespace_text.csv", {}, ["row 3: column 'text' is empty or only whitespace", "fill it or drop the row"]),
    ("single_class.csv", {}, ["every training example has the label 'pos'", "needs at least two classes"]),
    ("latin1.csv", {}, ["line 3 of the file is not valid UTF-8 (byte 17 of that line)", "re-save the file as UTF-8"]),
    ("utf16.csv", {}, ["contains NUL bytes, so it looks binary (or UTF-16), not CSV", "export it as UTF-8 text"]),
    ("binary.csv", {}, ["contains NUL bytes, so it looks binary", "export it as UTF-8 text"]),
    ("joined_header.csv", {}, ["row 3 repeats the header (text, label), as files joined together do; remove that line"]),
    ("no_header.csv", {}, ["the first line looks like an example, not a header: add a first line that names the columns (text,label)"]),
]


@pytest.mark.parametrize("name, options, pieces", BAD_FILES, ids=[f"{c[0]}{'+' if c[1] else ''}" for c in BAD_FILES])
def test_bad_file_gives_one_clear_line(name, options, pieces):
    path = BAD / name
    with command_line():  # the advice as `taskembed train` gives it (--data.text_column txt)
        msg = user_error(path, **options)
    assert msg.startswith(f"{path}: ")
    for piece in pieces:
        assert piece in msg


def test_bad_file_given_as_the_test_split_is_named(write_csv):
    train = write_csv(make_rows(20))
    msg = user_error(train, test=str(BAD / "latin1.csv"))
    assert msg.startswith(f"{BAD / 'latin1.csv'}: line 3 of the file is not valid UTF-8")


def test_label_only_in_the_test_split(write_csv):
    train = write_csv(make_rows(20))
    msg = user_error(train, test=str(BAD / "unseen_label_test.csv"))
    assert msg == f"{BAD / 'unseen_label_test.csv'}: row 3: label 'neutral' never occurs in training; add training examples or drop these rows"


def test_a_label_written_another_way_in_another_file_is_named(tmp_path, write_csv):
    # 0.0 in a CSV stays '0.0'; the same number in JSON Lines is read as '0': the same class, spelt two ways.
    train = write_csv([{"text": f"text number {i}", "label": f"{i % 2}.0"} for i in range(12)])
    test = tmp_path / "test.jsonl"
    test.write_text("\n".join(json.dumps({"text": f"other text {i}", "label": float(i % 2)}) for i in range(4)), encoding="utf-8")
    assert user_error(train, test=str(test)).endswith("row 1: label '0' never occurs in training (and 1 more); training writes it '0.0': "
                                                      "write the labels the same way in every file")


def test_folder_given_as_validation_file(write_csv):
    msg = user_error(write_csv(make_rows(20)), validation=str(BAD))
    assert msg.startswith(f"{BAD}: is a folder; give a data file")


def test_nan_label_in_parquet(tmp_path):
    path = tmp_path / "labels.parquet"
    pd.DataFrame({"text": ["superb", "dull", "boring"], "label": [1.0, float("nan"), 0.0]}).to_parquet(path)
    msg = user_error(path)
    assert msg == f"{path}: row 2: label column 'label' is empty; every example needs a label (drop the row or label it)"


def test_corrupt_parquet(tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_text("text,label\nsuperb,pos\n")
    assert "not a readable Parquet file" in user_error(path) and "re-export it" in user_error(path)


def test_unsupported_extension(tmp_path):
    path = tmp_path / "reviews.xlsx"
    path.write_bytes(b"PK\x03\x04")
    assert user_error(path) == f"{path}: unsupported file type '.xlsx'; use .csv, .tsv, .json, .jsonl or .parquet"


def test_missing_file(tmp_path):
    assert user_error(tmp_path / "nope.csv").startswith(f"{tmp_path / 'nope.csv'}: file not found; check the path")
    with pytest.raises(UserError, match="file not found"):
        read_table(tmp_path / "nope.jsonl")


def test_folder_that_is_not_a_saved_dataset():
    assert user_error(BAD).startswith(f"{BAD}: folder is not a datasets.save_to_disk folder")


# --- awkward but valid inputs --------------------------------------------------------------------


def test_utf8_bom_is_stripped_from_the_header():
    df = read_table(BAD / "bom.csv")
    assert list(df.columns) == ["text", "label"] and df["text"].tolist() == ["superb film", "dull plot"]


def test_unquoted_line_separator_and_form_feed_stay_inside_their_field():
    # Python's csv writer (and pandas) leave U+2028 and \f unquoted: they are not record breaks.
    df = read_table(BAD / "line_separator.csv")
    assert df["text"].tolist() == ["superb\u2028film", "dull\x0cplot"]


def test_crlf_and_quoted_newline():
    df = read_table(BAD / "crlf.csv")
    assert df["text"].tolist() == ["superb\r\nfilm", "dull plot"] and df["label"].tolist() == ["pos", "neg"]


def test_jsonl_string_with_raw_line_separator(tmp_path):
    path = tmp_path / "sep.jsonl"
    path.write_text(json.dumps({"text": "a\u2028b", "label": "pos"}, ensure_ascii=False) + "\r\n" + '{"text": "c", "label": "neg"}\n', encoding="utf-8")
    assert read_table(path)["text"].tolist() == ["a\u2028b", "c"]


def test_two_megabyte_field_loads(tmp_path):
    big = "great " * 350_000
    path = tmp_path / "huge.csv"
    path.write_text(f'text,label\n"{big}",pos\ndull,neg\n', encoding="utf-8")
    df = read_table(path)
    assert len(df) == 2 and df["text"][0] == big and len(big) > 2_000_000


# --- formats ---------------------------------------------------------------------------------------


def test_every_format_loads_the_same_rows(tmp_path, rows):
    expected = pd.DataFrame(rows)
    paths = {fmt: tmp_path / f"data.{fmt}" for fmt in ("csv", "tsv", "json", "jsonl", "parquet")}
    expected.to_csv(paths["csv"], index=False)
    expected.to_csv(paths["tsv"], index=False, sep="\t")
    paths["json"].write_text(json.dumps(rows))
    paths["jsonl"].write_text("".join(json.dumps(r) + "\n" for r in rows))
    expected.to_parquet(paths["parquet"])
    prints = set()
    for fmt, path in paths.items():
        pd.testing.assert_frame_equal(read_table(path), expected, obj=fmt)
        splits = load_splits(DataConfig(source=str(path), validation_fraction=0.0))
        assert splits.labels == ["neg", "pos"] and len(splits.frames["train"]) == len(rows)
        prints.add(splits.fingerprint())
    assert len(prints) == 1


def test_a_json_file_of_one_object_per_line_is_read_as_json_lines(tmp_path):
    """run_classification.py's --train_file and datasets' json loader take JSON Lines in a .json file."""
    path = tmp_path / "train.json"
    path.write_text('{"text": "a", "label": "x"}\n{"text": "b", "label": "y"}\n')
    assert read_table(path)["label"].tolist() == ["x", "y"]
    path.write_text('{"text": "a", "label": "x"}\n{"text": "b", "label": \n')  # and its errors name the line
    assert user_error(path) == f"{path}: line 2 is not valid JSON (Expecting value); one JSON object per line"
    # A document broken otherwise keeps its own error: two pretty-printed objects, a stray bracket after a wrapper.
    path.write_text('{\n "text": "a", "label": "x"\n}\n{\n "text": "b", "label": "y"\n}\n')
    assert user_error(path) == f"{path}: not valid JSON (line 4: Extra data); for one object per line use .jsonl"
    path.write_text('{"data": [{"text": "a", "label": "x"}]}\n]\n')
    assert user_error(path) == f"{path}: not valid JSON (line 2: Extra data); for one object per line use .jsonl"


def test_json_wrapped_in_one_key(tmp_path):
    path = tmp_path / "wrapped.json"
    path.write_text(json.dumps({"data": [{"text": "a", "label": "x"}, {"text": "b", "label": "y"}]}))
    assert read_table(path)["label"].tolist() == ["x", "y"]


def test_save_to_disk_folder_gives_label_names(tmp_path):
    import datasets

    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])})
    rows = make_rows(30)
    ids = [0 if r["label"] == "neg" else 1 for r in rows]
    folder = tmp_path / "saved"
    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict({"text": [r["text"] for r in rows[:24]], "label": ids[:24]}, features=features),
            "dev": datasets.Dataset.from_dict({"text": [r["text"] for r in rows[24:]], "label": ids[24:]}, features=features),
        }
    ).save_to_disk(str(folder))
    splits = load_splits(DataConfig(source=str(folder)))
    assert splits.labels == ["neg", "pos"]
    assert set(splits.frames) == {"train", "validation"}  # "dev" is the validation split, nothing carved
    assert splits.frames["validation"]["label"].tolist() == [r["label"] for r in rows[24:]]
    assert splits.origin == {"train": f"{folder} [train]", "validation": f"{folder} [validation]"}  # "dev" read as validation
    (folder / "train" / "state.json").unlink()  # damaged: one split's state is gone
    msg = user_error(folder)
    assert msg.startswith(f"{folder}: could not load the saved dataset (") and msg.endswith("save it again with save_to_disk or copy it whole"), msg


# --- labels ----------------------------------------------------------------------------------------


def test_label_map_is_sorted_and_numeric_labels_sort_as_numbers(write_csv):
    rows = [{"text": f"text {i}", "label": str(label)} for i, label in enumerate([10, 2, 1, 2, 10, 1])]
    splits = load_splits(DataConfig(source=str(write_csv(rows)), validation_fraction=0.0))
    assert splits.labels == ["1", "2", "10"] and splits.label2id == {"1": 0, "2": 1, "10": 2}
    assert sort_labels({"pos", "neg", "Neutral"}) == ["Neutral", "neg", "pos"]
    assert sort_labels({"10", "2", "b"}) == ["10", "2", "b"]  # not all numeric: plain string order


def test_label_order_does_not_depend_on_the_order_labels_are_met():
    # sort_labels gets a set, whose order changes from process to process: a tie left to it gave a resumed run
    # (or another rank) another label-to-id map. Every order of the same labels must give one answer.
    names = ["1", "1.0", "01", "2", "nan", "-3"]
    orders = {tuple(sort_labels(list(p))) for p in itertools.permutations(names)}
    assert orders == {("-3", "01", "1", "1.0", "2", "nan")}


def test_int_and_float_labels_are_the_same_class(tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_text("".join(json.dumps({"text": f"t{i}", "label": v}) + "\n" for i, v in enumerate([1, 1.0, 0, 0.0, 1])))
    assert load_splits(DataConfig(source=str(path), validation_fraction=0.0)).labels == ["0", "1"]
    # a float column (Parquet) for train and a CSV with "0"/"1" for test agree on the classes
    train = tmp_path / "train.parquet"
    pd.DataFrame({"text": ["a", "b", "c", "d"], "label": [0.0, 1.0, 0.0, 1.0]}).to_parquet(train)
    test = tmp_path / "test.csv"
    test.write_text("text,label\ne,1\nf,0\n")
    splits = load_splits(DataConfig(source=str(train), test=str(test), validation_fraction=0.0))
    assert splits.labels == ["0", "1"] and splits.frames["test"]["label"].tolist() == ["1", "0"]


def test_float32_labels_keep_their_written_form(tmp_path):
    # Parquet's 32-bit floats widened to Python floats would name the class 0.10000000149011612
    path = tmp_path / "scores.parquet"
    pd.DataFrame({"text": ["a", "b", "c", "d"], "label": np.array([0.1, 2.5, 0.1, 3.0], dtype=np.float32)}).to_parquet(path)
    assert load_splits(DataConfig(source=str(path), validation_fraction=0.0)).labels == ["0.1", "2.5", "3"]


# --- carved splits -------------------------------------------------------------------------------


def _three_classes(write_csv, per_class=20):
    rows = [{"text": f"{label} example {i}", "label": label} for i in range(per_class) for label in ("a", "b", "c")]
    return write_csv(rows), rows


def test_carved_validation_is_stratified_and_seeded(write_csv):
    path, rows = _three_classes(write_csv)
    first = load_splits(DataConfig(source=str(path), validation_fraction=0.1, split_seed=1))
    again = load_splits(DataConfig(source=str(path), validation_fraction=0.1, split_seed=1))
    other = load_splits(DataConfig(source=str(path), validation_fraction=0.1, split_seed=2))
    val = first.frames["validation"]
    assert len(val) == 6 and val["label"].value_counts().to_dict() == {"a": 2, "b": 2, "c": 2}
    assert first.frames["train"]["label"].value_counts().to_dict() == {"a": 18, "b": 18, "c": 18}
    pd.testing.assert_frame_equal(val, again.frames["validation"])
    assert set(val["text"]) != set(other.frames["validation"]["text"])
    # nothing lost, nothing on both sides
    assert sorted(first.frames["train"]["text"].tolist() + val["text"].tolist()) == sorted(r["text"] for r in rows)
    assert "carved 10% of train, seed 1" in first.origin["validation"]


def test_carved_test_and_validation_are_disjoint(write_csv):
    path, rows = _three_classes(write_csv)
    splits = load_splits(DataConfig(source=str(path), validation_fraction=0.1, test_fraction=0.2))
    texts = [set(splits.frames[s]["text"]) for s in ("train", "validation", "test")]
    assert len(texts[2]) == 12 and len(texts[0]) + len(texts[1]) == 48 and len(texts[1]) >= 4
    assert set.union(*texts) == {r["text"] for r in rows} and sum(map(len, texts)) == len(rows)
    assert splits.frames["test"]["label"].value_counts().to_dict() == {"a": 4, "b": 4, "c": 4}


def test_rare_classes_always_keep_a_training_example(write_csv):
    # A single example of 'c', and ten classes of two: no seed may carve a class out of training.
    rows = [{"text": f"t{i}", "label": "a" if i < 50 else "b"} for i in range(99)] + [{"text": "only c", "label": "c"}]
    rows += [{"text": f"pair {k} {j}", "label": f"k{k}"} for k in range(10) for j in range(2)]
    path = write_csv(rows)
    for seed in range(20):
        splits = load_splits(DataConfig(source=str(path), validation_fraction=0.1, split_seed=seed))
        assert set(splits.frames["train"]["label"]) == {r["label"] for r in rows}
        assert len(splits.frames["validation"]) == 12


def test_carving_more_than_the_classes_allow_is_a_user_error(write_csv):
    rows = [{"text": f"t{i}", "label": str(i % 10)} for i in range(20)]
    msg = user_error(write_csv(rows), validation_fraction=0.85)
    assert "20 examples in 10 classes are too few to carve a 85% split" in msg and "give a validation file" in msg


def test_max_train_per_label_keeps_n_of_each_label_and_the_carved_splits_whole(write_csv):
    path = write_csv(make_rows(150, seed=8))
    whole = load_splits(DataConfig(source=str(path), validation_fraction=0.2, test_fraction=0.2))
    few = load_splits(DataConfig(source=str(path), validation_fraction=0.2, test_fraction=0.2, max_train_per_label=4))
    counts = whole.frames["train"]["label"].value_counts()
    assert few.frames["train"]["label"].value_counts().to_dict() == {k: min(4, v) for k, v in counts.items()}
    for split in ("validation", "test"):  # carved before the few-shot draw: the same rows as without it
        assert few.frames[split].equals(whole.frames[split])
    assert set(map(tuple, few.frames["train"].values)) <= set(map(tuple, whole.frames["train"].values))
    # what the cut kept, which training says (a config's cap must not drop a user's examples unseen)
    assert few.sampled == {"per_label_from": len(whole.frames["train"]), "per_label_kept": 8} and whole.sampled is None
    assert load_splits(DataConfig(source=str(path), validation_fraction=0.2, test_fraction=0.2, max_train_per_label=500)).sampled is None
    again = load_splits(DataConfig(source=str(path), validation_fraction=0.2, test_fraction=0.2, max_train_per_label=4))
    other = load_splits(DataConfig(source=str(path), validation_fraction=0.2, test_fraction=0.2, max_train_per_label=4, split_seed=1))
    assert again.frames["train"].equals(few.frames["train"]) and not other.frames["train"].equals(few.frames["train"])
    from taskembed.config import load_config

    with pytest.raises(UserError, match="data.max_train_per_label counts the examples of each label"):
        load_config(None, {"data.multi_label": True, "data.label_delimiter": "|", "data.max_train_per_label": 4})


def test_max_train_samples_is_a_seeded_subset(write_csv, rows):
    path = write_csv(rows)
    cfg = DataConfig(source=str(path), validation_fraction=0.0, max_train_samples=50)
    a, b = load_splits(cfg), load_splits(cfg)
    assert len(a.frames["train"]) == 50
    pd.testing.assert_frame_equal(a.frames["train"], b.frames["train"])
    assert set(a.frames["train"]["text"]) <= {r["text"] for r in rows}
    assert a.sampled == {"from": len(rows), "kept": 50}  # for run.json and the model card
    assert load_splits(DataConfig(source=str(path), validation_fraction=0.0)).sampled is None


def test_fingerprint_is_stable_and_sees_one_label(write_csv, rows):
    path = write_csv(rows)
    cfg = DataConfig(source=str(path))
    fp = load_splits(cfg).fingerprint()
    assert len(fp) == 64 and load_splits(cfg).fingerprint() == fp
    changed = [dict(r) for r in rows]
    changed[7]["label"] = "pos" if changed[7]["label"] == "neg" else "neg"
    assert load_splits(DataConfig(source=str(write_csv(changed, "changed.csv")))).fingerprint() != fp


# --- batches ------------------------------------------------------------------------------------------


def _padding(batches, lengths):
    return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)


def test_train_batches_are_a_seeded_length_grouped_permutation():
    rng = random.Random(0)
    lengths = [rng.randint(3, 128) for _ in range(1000)]
    batches = train_batches(lengths, 16, torch.Generator().manual_seed(0))
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(1000))
    assert all(len(b) <= 16 for b in batches) and sum(len(b) < 16 for b in batches) <= -(-1000 // (16 * 64))
    assert batches == train_batches(lengths, 16, torch.Generator().manual_seed(0))
    assert batches != train_batches(lengths, 16, torch.Generator().manual_seed(1))
    order = torch.randperm(1000, generator=torch.Generator().manual_seed(0)).tolist()
    random_batches = [order[j : j + 16] for j in range(0, 1000, 16)]
    assert _padding(batches, lengths) < 0.1 * _padding(random_batches, lengths)


def test_eval_batches_cover_every_index_within_the_token_budget():
    rng = random.Random(1)
    lengths = [rng.randint(1, 120) for _ in range(500)] + [9000]  # one example longer than the budget
    batches = eval_batches(lengths, max_tokens=1024, max_batch=32)
    assert sorted(i for b in batches for i in b) == list(range(501))
    for b in batches:
        assert len(b) <= 32
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 1024
    assert [9000] in [[lengths[i] for i in b] for b in batches]


def test_collate_pads_with_the_pad_id_and_masks_the_padding():
    from taskembed.data import Encoded

    enc = Encoded(input_ids=[[5, 6, 7], [8], [9, 10]], token_type_ids=[[0, 0, 0], [0], [0, 1]], labels=[1, 0, 1], truncated=0)
    batch = collate(enc, [1, 0, 2], pad_id=3)
    assert batch["input_ids"].tolist() == [[8, 3, 3], [5, 6, 7], [9, 10, 3]]
    assert batch["attention_mask"].tolist() == [[1, 0, 0], [1, 1, 1], [1, 1, 0]]
    assert batch["token_type_ids"].tolist() == [[0, 0, 0], [0, 0, 0], [0, 1, 0]]
    assert batch["labels"].tolist() == [0, 1, 1]
    assert all(t.dtype == torch.long for t in batch.values())
    bare = collate(Encoded(input_ids=[[1, 2], [4]], token_type_ids=None, labels=None, truncated=0), [0, 1], pad_id=0)
    assert set(bare) == {"input_ids", "attention_mask"}


def test_collate_gathers_from_the_packed_rows_what_padding_each_row_gives():
    """collate reads flat arrays built once per split; any batch must equal the rows padded one by one."""
    from taskembed.data import Encoded

    rng = random.Random(4)
    rows = [[rng.randrange(5, 90) for _ in range(rng.randrange(1, 40))] for _ in range(300)]
    types = [[rng.randrange(2) for _ in r] for r in rows]
    for labels in ([rng.randrange(3) for _ in rows], [[rng.randrange(2) for _ in range(4)] for _ in rows]):
        enc = Encoded(input_ids=rows, token_type_ids=types, labels=labels, truncated=0)
        for _ in range(30):
            idx = rng.sample(range(len(rows)), rng.randrange(1, 40))
            batch = collate(enc, idx, pad_id=2)
            width = max(len(rows[i]) for i in idx)
            assert batch["input_ids"].tolist() == [rows[i] + [2] * (width - len(rows[i])) for i in idx]
            assert batch["token_type_ids"].tolist() == [types[i] + [0] * (width - len(rows[i])) for i in idx]
            assert batch["attention_mask"].tolist() == [[1] * len(rows[i]) + [0] * (width - len(rows[i])) for i in idx]
            assert batch["labels"].tolist() == [labels[i] for i in idx]
            assert batch["labels"].dtype == (torch.float32 if isinstance(labels[0], list) else torch.long)


def test_encode_counts_truncated_texts_exactly(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    texts = [" ".join(["the film"] * n) for n in range(1, 20)]
    full = [len(x) for x in tok(texts)["input_ids"]]
    limit = 16
    assert limit in full  # one text fits exactly: it is not truncated
    enc = encode(tok, texts, labels=list(range(len(texts))), max_length=limit)
    assert enc.truncated == sum(n > limit for n in full) > 0
    assert enc.lengths == [min(n, limit) for n in full] and enc.labels == list(range(len(texts)))
    pairs = ["the plot"] * len(texts)
    full_pairs = [len(x) for x in tok(texts, pairs)["input_ids"]]
    assert encode(tok, texts, pairs, max_length=limit).truncated == sum(n > limit for n in full_pairs)


def _tokenizer(kind: str):
    """A small fast tokenizer of each family a cut must be exact for (and one it must not be used with), trained here."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    # Runs of spaces in the corpus, so that BPE learns tokens for them (RoBERTa and GPT-2 have "ĠĠ" and longer).
    corpus = [" ".join(make_rows(40, seed=s)[i]["text"] for i in range(40)) for s in range(3)] + ["a" + " " * n + "b" for n in range(2, 9)] * 20
    if kind == "bytelevel-bpe":  # RoBERTa, GPT-2
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=["<s>", "</s>", "<pad>"])
    elif kind == "metaspace-unigram":  # SentencePiece models: XLM-R, ALBERT, T5
        tok = Tokenizer(models.Unigram())
        tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        trainer = trainers.UnigramTrainer(vocab_size=200, special_tokens=["<s>", "</s>", "<pad>", "<unk>"], unk_token="<unk>")
    else:  # "split": a pattern that can join words across a space; never cut
        tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"\w+ \w+|\S"), behavior="isolated")
        trainer = trainers.WordLevelTrainer(special_tokens=["<s>", "</s>", "<pad>", "<unk>"])
    tok.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


@pytest.mark.parametrize("kind", ["wordpiece", "bytelevel-bpe", "metaspace-unigram", "split"])
def test_long_texts_are_cut_before_tokenizing_with_the_same_tokens_and_counts(kind, tiny_model_dir):
    # A 100 KB document was tokenized whole, twice, to keep its first 256 tokens; now its first 4,096 characters are.
    from transformers import AutoTokenizer

    from taskembed.data import CUT_CHARS_PER_TOKEN, _cut_long

    tok = AutoTokenizer.from_pretrained(tiny_model_dir) if kind == "wordpiece" else _tokenizer(kind)
    limit = 12
    rng = random.Random(0)
    words = [w for r in make_rows(30, seed=4) for w in r["text"].split()] + ["naïve", "ﬁlm", "x" * 300, "[SEP]", "ÉTÉ"]
    gaps = [" ", " ", " ", "  ", "\n", " \n ", "\t", "\u3000", "\r\n"]
    texts = []
    for _ in range(120):
        n = rng.choice([2, 20, 60, 150, 400])  # around the cut's 192 characters, and far past it
        texts.append("".join(rng.choice(words) + rng.choice(gaps) for _ in range(n)).strip() or "film")
    texts += ["x" * 5000, ("y" * 150 + " ") * 30]  # no space to cut at; words too long to fill the window before the cut
    # Runs of whitespace across the cut's 192 characters, each run ending at a different place.
    texts += [" ".join(words[:30])[:150 + j] + "\n" + " " * 60 + "tail " * 50 for j in range(0, 40, 3)]
    cut = _cut_long(tok, texts, limit)
    for i, start in cut.items():  # the start's tokens are the whole text's first ones (all but the closing special token)
        mine = tok(start, add_special_tokens=False)["input_ids"]
        assert tok(texts[i], add_special_tokens=False)["input_ids"][:len(mine)] == mine, (kind, i)
    if kind == "split":
        assert cut == {}
    else:
        assert len(cut) > 50 and all(len(texts[i]) > CUT_CHARS_PER_TOKEN * limit for i in cut)  # the cut is taken
    reference = tok(texts, truncation=True, max_length=limit)["input_ids"]
    full = [len(x) for x in tok(texts)["input_ids"]]
    enc = encode(tok, texts, max_length=limit)
    assert enc.input_ids == reference
    assert enc.truncated == sum(n > limit for n in full)
    if kind == "wordpiece":  # pre-tokenizers that only split words further, with none that ends a word at a space: read whole
        from tokenizers import pre_tokenizers

        kept = tok.backend_tokenizer.pre_tokenizer
        for only in (pre_tokenizers.Punctuation(), pre_tokenizers.Sequence([pre_tokenizers.Digits(), pre_tokenizers.Punctuation()]),
                     pre_tokenizers.Sequence([])):
            tok.backend_tokenizer.pre_tokenizer = only
            assert _cut_long(tok, texts, limit) == {}
        tok.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Punctuation(), pre_tokenizers.WhitespaceSplit()])
        assert len(_cut_long(tok, texts, limit)) > 50
        tok.backend_tokenizer.pre_tokenizer = kept
    tok.truncation_side = "left"  # keeps the end: a cut start would be the wrong part
    assert _cut_long(tok, texts, limit) == {} and encode(tok, texts, max_length=limit).input_ids == tok(texts, truncation=True, max_length=limit)["input_ids"]


def test_plain_text_files_for_prediction(tmp_path):
    path = tmp_path / "t.txt"
    path.write_bytes(b"\xef\xbb\xbffirst\r\nsecond\n\n  \nthird\rfourth\n")  # BOM, CRLF, blank lines, a lone CR
    assert texts_from_file(path) == (["first", "second", "third", "fourth"], None)
    path.write_bytes("one\ntwo\n".encode("utf-16-le"))  # UTF-16 without a BOM decodes as UTF-8 full of NULs
    with pytest.raises(UserError, match=r"line 1 contains NUL bytes.*UTF-16"):
        texts_from_file(path)
    path.write_bytes("fine\ncaf\xe9 au lait\n".encode("latin-1"))
    with pytest.raises(UserError, match=r"line 2 of the file is not valid UTF-8 \(byte 4 of that line\)"):
        texts_from_file(path)
    path.write_bytes("one\rtwo\rcaf\xe9\r".encode("latin-1"))  # old Mac line ends: the line is still the third
    with pytest.raises(UserError, match=r"line 3 of the file is not valid UTF-8 \(byte 4 of that line\)"):
        texts_from_file(path)


def test_a_parquet_column_named_twice_is_refused_for_training_and_embedding(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from taskembed.embed import open_texts

    path = tmp_path / "dup.parquet"
    pq.write_table(pa.table([pa.array(["a good film", "bad"]), pa.array(["x", "y"]), pa.array(["pos", "neg"])],
                            names=["text", "text", "label"]), path)
    for read in (lambda: read_table(path), lambda: open_texts(path, "text", "label", None)):
        with pytest.raises(UserError, match="column 'text' appears twice in the header; rename one"):
            read()


def test_a_test_file_with_another_column_name_is_told_to_rename_it(write_csv, rows):
    # --data.label_column would rename the training data's column too, so it is not the fix for one file.
    train = write_csv(rows)
    test = write_csv([{"text": r["text"], "sentiment": r["label"]} for r in rows[:6]], "test.csv")
    with pytest.raises(UserError, match=r"test.csv: no column 'label' .*every split uses the training data's column names "
                                        r"\(data.label_column 'label'\): rename this file's column"):
        load_splits(DataConfig(source=str(train), test=str(test)))


def test_a_missing_column_suggests_the_one_whose_values_fit_not_the_closest_name(tmp_path):
    # 'text' is closest by name to 'intent', which holds the labels; the texts are in 'utterance'.
    path = tmp_path / "intents.csv"
    path.write_text("utterance,intent\nwhat is the weather like today,weather\nturn on the lights please,lights\n"
                    "play some jazz music now,music\nwhat is the weather in rome,weather\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"did you mean 'utterance'\? set it with overrides=\{'data.text_column': 'utterance'\}"):
        load_splits(DataConfig(source=str(path)))
    with pytest.raises(UserError, match=r"did you mean 'intent'\? set it with overrides=\{'data.label_column': 'intent'\}"):
        load_splits(DataConfig(source=str(path), text_column="utterance"))


def test_the_data_line_lists_the_splits_in_their_order(tmp_path):
    # A test file given beside a training file whose validation is carved from it: the line still reads train, validation, test.
    from tests.conftest import make_rows

    for name, n in (("train.csv", 60), ("test.csv", 20)):
        with (tmp_path / name).open("w", encoding="utf-8") as fh:
            fh.write("text,label\n" + "".join(f"{r['text']},{r['label']}\n" for r in make_rows(n)))
    splits = load_splits(DataConfig(source=str(tmp_path / "train.csv"), test=str(tmp_path / "test.csv"), validation_fraction=0.2))
    assert splits.describe() == "data: train 48, validation 12, test 20; 2 labels: neg, pos"
    # a label with a comma in it: every name quoted, so that it does not read as two
    from taskembed.data import Splits

    frame = pd.DataFrame({"text": ["a", "b", "c"], "label": ["billing/shipping, misc", "42", "refund"]})
    named = Splits(frames={"train": frame}, labels=["42", "billing/shipping, misc", "refund"], origin={})
    assert named.describe() == "data: train 3; 3 labels: '42', 'billing/shipping, misc', 'refund'"


def test_a_bad_row_in_a_saved_dataset_names_its_split(tmp_path):
    import datasets

    from tests.conftest import make_rows

    train, test = make_rows(20), make_rows(4)
    test[2]["text"] = "   "
    datasets.DatasetDict({s: datasets.Dataset.from_list(rows) for s, rows in (("train", train), ("test", test))}).save_to_disk(str(tmp_path / "ds"))
    with pytest.raises(UserError, match=r"ds \[test\]: row 3"):
        load_splits(DataConfig(source=str(tmp_path / "ds")))


def test_labels_that_differ_only_in_case_or_number_format_are_found_not_merged(tmp_path):
    rows = [{"text": f"text {i}", "label": label} for i, label in enumerate(["POS", "pos", "neg", "1", "1.0", "2", "Pos", "none"] * 3)]
    path = tmp_path / "d.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    splits = load_splits(DataConfig(source=str(path), validation_fraction=0.0, test_fraction=0.0))
    assert len(splits.labels) == 8  # every spelling stays its own class
    assert splits.lookalike_labels() == [["1", "1.0"], ["POS", "Pos", "pos"]]
    clean = load_splits(DataConfig(source=str(path), validation_fraction=0.0, test_fraction=0.0, label_column="text"))
    assert clean.lookalike_labels() == []


def got_all_labels(splits) -> bool:
    return splits.sampled_out == [] and set(splits.frames["train"]["label"]) == {"a", "b", "c"}


def test_a_training_sample_keeps_every_label(tmp_path, write_csv):
    # 60 "a", 30 "b", 1 "c": a plain sample of 10 rows usually has no "c", and then a test split with "c" was refused
    # ("never occurs in training").
    rows = [{"text": f"text number {i}", "label": "a" if i < 60 else "b" if i < 90 else "c"} for i in range(91)]
    path = write_csv(rows)
    frame = load_splits(DataConfig(source=str(path), validation_fraction=0.0)).frames["train"]
    seed = next(s for s in range(100) if "c" not in set(frame.sample(n=10, random_state=s)["label"]))  # a plain sample without "c"
    got = load_splits(DataConfig(source=str(path), validation_fraction=0.0, max_train_samples=10, split_seed=seed)).frames["train"]
    assert len(got) == 10 and set(got["label"]) == {"a", "b", "c"} and got["text"].is_unique
    # where the plain sample already holds every label, it is what is taken (the measured quick runs stay as they were)
    seed = next(s for s in range(100) if "c" in set(frame.sample(n=10, random_state=s)["label"]))
    got = load_splits(DataConfig(source=str(path), validation_fraction=0.0, max_train_samples=10, split_seed=seed)).frames["train"]
    pd.testing.assert_frame_equal(got, frame.sample(n=10, random_state=seed).reset_index(drop=True))
    # no room for every label: the plain sample, as before (a budget below the label count is a quick run, not an error)
    seed = next(s for s in range(100) if set(frame.sample(n=2, random_state=s)["label"]) == {"a", "b"})
    small = load_splits(DataConfig(source=str(path), validation_fraction=0.0, test_fraction=0.0, max_train_samples=2, split_seed=seed))
    whole = load_splits(DataConfig(source=str(path), validation_fraction=0.0, test_fraction=0.0)).frames["train"]
    pd.testing.assert_frame_equal(small.frames["train"], whole.sample(n=2, random_state=seed).reset_index(drop=True))
    assert small.sampled_out == ["c"]  # named, so that training says the model will not know it
    # A test split with the label the sample left out: the advice is about the sample, not the training data, which has it
    test = write_csv([{"text": "another text", "label": "c"}, {"text": "more text", "label": "a"}], "test.csv")
    with pytest.raises(UserError, match=r"label 'c' never occurs in training; the training data has it, but data.max_train_samples 2 "
                                        r"left it out of the sample: raise data.max_train_samples to at least 3, the number of labels"):
        load_splits(DataConfig(source=str(path), test=str(test), validation_fraction=0.0, max_train_samples=2, split_seed=seed))
    assert got_all_labels(load_splits(DataConfig(source=str(path), validation_fraction=0.0, max_train_samples=10, split_seed=seed)))


def test_what_spreadsheets_add_to_a_csv_is_read_past(tmp_path):
    # Excel's "sep=," line before the header, and empty columns after the last named one (trailing commas).
    (tmp_path / "sep.csv").write_text("sep=,\ntext,label\na fine warm film,pos\na dull cold film,neg\n", encoding="utf-8")
    (tmp_path / "trail.csv").write_text("text,label,,\na fine warm film,pos,,\na dull cold film,neg,,\n", encoding="utf-8")
    # An empty row, as a spreadsheet writes it (a walk-through's export had 8, refused one run at a time); and in a TSV.
    (tmp_path / "rows.csv").write_text("\ufefftext,label\r\n,\r\na fine warm film,pos\r\n , \r\na dull cold film,neg\r\n,\r\n", encoding="utf-8")
    (tmp_path / "rows.tsv").write_text("text\tlabel\n\t\na fine warm film\tpos\na dull cold film\tneg\n", encoding="utf-8")
    for name in ("sep.csv", "trail.csv", "rows.csv", "rows.tsv"):
        frame = load_splits(DataConfig(source=str(tmp_path / name), validation_fraction=0.0)).frames["train"]
        assert frame.values.tolist() == [["a fine warm film", "pos"], ["a dull cold film", "neg"]], name
    # an empty column that holds something is not trailing padding: its blank name is still refused
    (tmp_path / "full.csv").write_text("text,label,,\na fine warm film,pos,,x\na dull cold film,neg,,\n", encoding="utf-8")
    assert "column '' appears twice in the header" in user_error(tmp_path / "full.csv")
    # a row named in an error after empty rows were read past: counted without them, which is said
    (tmp_path / "gap.csv").write_text("text,label\n,\n,\na fine warm film,pos\n,neg\n", encoding="utf-8")
    assert f"{tmp_path / 'gap.csv'} (rows counted without its 2 empty ones): row 2: column 'text' is empty" in user_error(tmp_path / "gap.csv")


def test_a_class_label_keeps_its_own_ids(tmp_path):
    """MNLI's 0 is entailment: sorting the names would renumber the classes, and code comparing the model's argmax
    with the dataset's ids would silently score the wrong ones. From disk, in memory, and for multi-label sets."""
    import datasets

    names = datasets.ClassLabel(names=["pos", "neg", "mixed"])
    rows = make_rows(40)
    ids = [names.str2int(r["label"]) for r in rows]
    ids[:4] = [2] * 4  # some "mixed", the name that sorts between the others
    features = datasets.Features({"text": datasets.Value("string"), "label": names})
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": [r["text"] for r in rows], "label": ids}, features=features)})
    dd.save_to_disk(str(tmp_path / "ds"))
    assert load_splits(DataConfig(source=str(tmp_path / "ds"))).labels == ["pos", "neg", "mixed"]
    assert load_splits(DataConfig(source="<in-memory data>"), given=frames_from_python(dd)).labels == ["pos", "neg", "mixed"]
    # A name the training split lacks is left out, and the others keep their order.
    without = dd["train"].filter(lambda r: r["label"] != 2)
    kept = load_splits(DataConfig(source="<in-memory data>"), given=frames_from_python(without))
    assert kept.labels == ["pos", "neg"] and kept.renumbered == {}  # the last name: the others' ids are the dataset's
    # A name before others missing: their ids move down, which the README's "keeps its own ids" cannot promise, so
    # training says so (and run.json records it).
    from taskembed.api import check_data
    from taskembed.config import Config

    shifted = load_splits(DataConfig(source="<in-memory data>"), given=frames_from_python(dd["train"].filter(lambda r: r["label"] != 0)))
    assert shifted.labels == ["neg", "mixed"] and shifted.renumbered == {"neg": 1, "mixed": 2}
    said: list[str] = []
    check_data(Config(), shifted, said.append)
    assert any("model's label ids differ from the dataset's (neg 1 -> 0, mixed 2 -> 1); compare predictions by name" in m for m in said), said
    # Plain files and frames keep the sorted order.
    frame = dd["train"].to_pandas().assign(label=lambda f: f["label"].map(names.int2str))
    assert load_splits(DataConfig(source="<in-memory data>"), given=frames_from_python(frame)).labels == ["mixed", "neg", "pos"]
    # A list of class ids per row (multi-label sets such as go_emotions).
    multi = datasets.Features({"text": datasets.Value("string"), "labels": datasets.Sequence(names)})
    ml = datasets.Dataset.from_dict({"text": [r["text"] for r in rows], "labels": [[i] if i else [0, 2] for i in ids]}, features=multi)
    cfg = DataConfig(source="<in-memory data>", multi_label=True, label_column="labels")
    assert load_splits(cfg, given=frames_from_python(ml)).labels == ["pos", "neg", "mixed"]


def test_a_dataset_split_without_labels_is_left_out_with_a_note(tmp_path):
    """GLUE-style test splits on the Hub carry -1 for every label: that split cannot be scored, and was refused."""
    import datasets

    rows = make_rows(40)
    names = datasets.ClassLabel(names=["neg", "pos"])
    features = datasets.Features({"text": datasets.Value("string"), "label": names})
    dd = datasets.DatasetDict({
        "train": datasets.Dataset.from_list([{"text": r["text"], "label": names.str2int(r["label"])} for r in rows[:30]], features=features),
        "test": datasets.Dataset.from_list([{"text": r["text"], "label": -1} for r in rows[30:]], features=features),
    })
    dd.save_to_disk(str(tmp_path / "ds"))
    splits = load_splits(DataConfig(source=str(tmp_path / "ds"), validation_fraction=0.2, test_fraction=0.0))
    assert "test" not in splits.frames and splits.unlabelled == {"test": f"{tmp_path / 'ds'} [test]"}
    assert len(splits.frames["train"]) + len(splits.frames["validation"]) == 30
    carved = load_splits(DataConfig(source=str(tmp_path / "ds"), validation_fraction=0.2, test_fraction=0.2))
    assert len(carved.frames["test"]) == 6 and "carved" in carved.origin["test"]
    # one unlabelled row among labelled ones is still a mistake in the data, said by row
    dd["test"] = datasets.Dataset.from_list([{"text": r["text"], "label": names.str2int(r["label"])} for r in rows[30:39]]
                                            + [{"text": rows[39]["text"], "label": -1}], features=features)
    dd.save_to_disk(str(tmp_path / "ds2"))
    assert "row 10: label column 'label' is empty" in user_error(tmp_path / "ds2")


def test_an_unquoted_tsv_whose_texts_hold_quotes_is_read_as_written(tmp_path):
    # GLUE's TSVs do not quote: a text that opens with a quote it never closes failed as "malformed TSV".
    (tmp_path / "glue.tsv").write_text('sentence\tlabel\n"great" movie , really\t1\nhide the "parental units\t0\n', encoding="utf-8")
    frame = load_splits(DataConfig(source=str(tmp_path / "glue.tsv"), text_column="sentence", validation_fraction=0.0)).frames["train"]
    assert frame.values.tolist() == [['"great" movie , really', "1"], ['hide the "parental units', "0"]]
    # a file that quotes is not read raw because one row is broken: its quoted rows would keep their quotes
    (tmp_path / "quoted.tsv").write_text('text\tlabel\n"a ""quoted"" text"\tpos\n"broken\tneg\n', encoding="utf-8")
    assert "line 3: malformed TSV" in user_error(tmp_path / "quoted.tsv")
    # lines that do not all have the header's fields are still malformed
    (tmp_path / "bad.tsv").write_text('text\tlabel\n"great movie\t1\textra\nfine\t0\n', encoding="utf-8")
    assert "malformed TSV" in user_error(tmp_path / "bad.tsv")


def test_a_parquet_column_of_bytes_is_named_as_bytes(tmp_path):
    pd.DataFrame({"text": [b"a fine film", b"a dull film"], "label": ["pos", "neg"]}).to_parquet(tmp_path / "t.parquet")
    assert "row 1: column 'text' holds bytes, not text; store it as text" in user_error(tmp_path / "t.parquet")
    pd.DataFrame({"text": ["a fine film", "a dull film"], "label": [b"pos", b"neg"]}).to_parquet(tmp_path / "l.parquet")
    assert "row 1: label column 'label' holds bytes, not text" in user_error(tmp_path / "l.parquet")


def test_a_path_that_is_neither_file_nor_folder_and_a_header_of_questions(tmp_path):
    assert user_error("/dev/null") == "/dev/null: not a file or a folder; give a data file, or a folder written by datasets.save_to_disk"
    # a form export's columns are questions: long names are a header all the same, so the advice is a column to name
    pd.DataFrame({"What did you think of the film overall": ["great", "bad"], "How would you rate it": ["pos", "neg"]}).to_csv(
        tmp_path / "form.csv", index=False)
    assert "did you mean 'What did you think of the film overall'?" in user_error(tmp_path / "form.csv")


def test_a_txt_file_as_labelled_data_is_told_what_labelled_data_is(tmp_path):
    (tmp_path / "texts.txt").write_text("a fine film\na dull one\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"texts\.txt: a \.txt file holds texts without labels; labelled data is a table"):
        read_table(tmp_path / "texts.txt")


def test_max_eval_samples_cuts_validation_and_test_after_every_check(write_csv):
    rows = make_rows(200, seed=11)
    base = {"source": str(write_csv(rows)), "validation_fraction": 0.25, "test_fraction": 0.25}
    whole = load_splits(DataConfig(**base))
    cut = load_splits(DataConfig(**base, max_eval_samples=20))
    assert len(whole.frames["validation"]) == len(whole.frames["test"]) == 50
    assert len(cut.frames["validation"]) == len(cut.frames["test"]) == 20
    assert cut.frames["train"].equals(whole.frames["train"])  # the cap leaves training as it was
    for split in ("validation", "test"):  # a seeded sample of the split, in its order
        texts = list(whole.frames[split]["text"])
        picked = list(cut.frames[split]["text"])
        assert set(picked) <= set(texts) and picked == sorted(picked, key=texts.index)
        assert "20 of its 50 rows (data.max_eval_samples, seed 0)" in cut.origin[split]
    assert list(load_splits(DataConfig(**base, max_eval_samples=20)).frames["test"]["text"]) == list(cut.frames["test"]["text"])
    # Every row is still checked, and named by its row in the file: a label training never saw, past any sample.
    bad = [dict(r) for r in make_rows(40, seed=12)]
    bad[-1]["label"] = "meh"
    validation = write_csv(bad, name="validation.csv")
    with pytest.raises(UserError, match=r"validation\.csv: row 40: label 'meh' never occurs in training"):
        load_splits(DataConfig(source=base["source"], validation=str(validation), max_eval_samples=5))


def test_the_eval_sample_keeps_every_class_its_share_and_at_least_one_row():
    from taskembed.data import _stratified_sample

    df = pd.DataFrame({"text": [f"t{i}" for i in range(100)], "label": ["a"] * 60 + ["b"] * 37 + ["c"] * 3})
    for seed in range(5):
        out = _stratified_sample(df, 10, seed, df["label"])
        assert out["label"].value_counts().to_dict() == {"a": 6, "b": 3, "c": 1}  # c's share is 0.3: one row, not none
        assert list(out["text"]) == sorted(out["text"], key=lambda t: int(t[1:]))  # the split's order
    assert len(_stratified_sample(df, 2, 0, df["label"])) == 2  # no room for every class: a plain sample


def test_a_byte_that_is_not_utf8_is_placed_in_its_line_whatever_the_line_ends(tmp_path):
    # A BOM is no part of line 1's bytes, and an old Mac's \r ends a line as \n does.
    for name, data in [("bom.csv", b"\xef\xbb\xbfcaf\xe9,label\nx,y\n"), ("mac.csv", b"text,label\rcaf\xe9,pos\rok,neg\r")]:
        (tmp_path / name).write_bytes(data)
        line = 1 if name == "bom.csv" else 2
        with pytest.raises(UserError, match=rf"{name}: line {line} of the file is not valid UTF-8 \(byte 4 of that line\)"):
            read_table(tmp_path / name)


def test_a_record_without_the_key_is_said_as_a_missing_key_not_an_empty_value(tmp_path):
    # A walk-through's JSONL had "intent" for "label" in one record, and was told the label was empty.
    lines = ['{"text": "a fine warm film", "label": "pos"}', '{"text": "a dull cold film", "intent": "neg"}']
    (tmp_path / "typo.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert user_error(tmp_path / "typo.jsonl").endswith(
        "typo.jsonl: row 2: the record has no key 'label' (its keys: text, intent); a misspelt key? every record needs one")
    (tmp_path / "typo.json").write_text('[{"text": "a fine warm film", "label": "pos"}, {"txt": "a dull film", "label": "neg"}]',
                                        encoding="utf-8")
    assert user_error(tmp_path / "typo.json").endswith("row 2: the record has no key 'text' (its keys: txt, label); a misspelt key? "
                                                      "every record needs one")
    # a key that is there with a null value is an empty value, as before
    (tmp_path / "null.jsonl").write_text('{"text": "a fine warm film", "label": "pos"}\n{"text": "a dull film", "label": null}\n',
                                         encoding="utf-8")
    assert "row 2: label column 'label' is empty" in user_error(tmp_path / "null.jsonl")


def test_a_missing_file_names_the_one_it_most_likely_meant(tmp_path):
    (tmp_path / "tickets.jsonl").write_text('{"text": "where is my parcel", "label": "shipping"}\n', encoding="utf-8")
    from taskembed.builtin import BUILTIN_NAMES

    assert user_error(tmp_path / "Tickets.jsonl") == f"{tmp_path / 'Tickets.jsonl'}: file not found; did you mean {tmp_path / 'tickets.jsonl'}? " \
        f"(built-in datasets: {', '.join(BUILTIN_NAMES)})"
    assert f"did you mean {tmp_path / 'tickets.jsonl'}?" in user_error(tmp_path / "tickts.jsonl")  # a letter dropped
    assert "file not found; check the path" in user_error(tmp_path / "reviews.csv")  # nothing like it there


def test_data_given_in_python_is_named_as_it_was_given():
    # A DataFrame alone was named "data['train']" in errors, a key the user never wrote.
    from taskembed.data import IN_MEMORY, frames_from_python, load_raw

    frame = pd.DataFrame({"review": ["a fine film", "a dull film"], "label": ["pos", "neg"]})
    assert load_raw(DataConfig(source=IN_MEMORY), given=frames_from_python(frame))[1] == {"train": "data"}
    both = frames_from_python({"train": frame, "test": frame})
    assert load_raw(DataConfig(source=IN_MEMORY), given=both)[1] == {"train": "data['train']", "test": "data['test']"}
    with pytest.raises(UserError, match=r"^data: no column 'text' \(columns: review, label\); did you mean 'review'\?"):
        load_splits(DataConfig(source=IN_MEMORY), given=frames_from_python(frame))


def test_a_tokenizer_that_cannot_read_the_text_is_said_to(tiny_model_dir):
    """Words the vocabulary has no piece for all become [UNK]: one token, whatever the word, which training cannot undo."""
    from transformers import AutoTokenizer

    from taskembed.data import unknown_tokens_note

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    english = [r["text"] for r in make_rows(40)]
    assert unknown_tokens_note(tok, english, encode(tok, english), "tiny") is None
    mixed = [f"{t} 😀" if i % 2 else f"{t} बहुत अच्छी फिल्म" for i, t in enumerate(english)]
    note = unknown_tokens_note(tok, mixed, encode(tok, mixed), "tiny")
    assert note.startswith("note: ") and "% of the training tokens are [UNK], which tiny's tokenizer gives every piece it does not know" in note
    assert "'😀'" in note and "'बहुत'" in note
    share = float(note.split("note: ")[1].split("%")[0])
    enc = encode(tok, mixed)
    assert share == round(100 * sum(r.count(tok.unk_token_id) for r in enc.input_ids) / sum(map(len, enc.input_ids)), 1)
    # A piece is named by the characters the [UNK] stands for, cut to 20 (an unspaced script's run of them is one "word").
    odd = [f"{t} {'ж' * 50}" for t in english]
    assert f"(such as '{'ж' * 20}')" in unknown_tokens_note(tok, odd, encode(tok, odd), "tiny")
    # Windows of long texts name the pieces of the text each window is a part of.
    long = [" ".join([t] * 6) + " 😀 😀 😀" for t in english[:6]]
    windowed = encode(tok, long, max_length=24, window_stride=8)
    assert windowed.doc_ids is not None and "'😀'" in unknown_tokens_note(tok, long, windowed, "tiny")


def test_a_datasets_other_splits_are_said_and_two_names_for_one_refused(tmp_path):
    # An 'eval' split was dropped without a word (validation then carved from train), and of 'dev' and 'validation'
    # one was dropped; a fraction set on data with its own split did nothing, silently.
    import datasets

    from taskembed.api import check_data
    from taskembed.config import Config

    rows = make_rows(40)
    part = lambda rs: datasets.Dataset.from_list(rs)  # noqa: E731
    datasets.DatasetDict({"train": part(rows[:30]), "eval": part(rows[30:])}).save_to_disk(str(tmp_path / "eval"))
    splits = load_splits(DataConfig(source=str(tmp_path / "eval")))
    assert splits.ignored == ["eval"] and "carved" in splits.origin["validation"]
    said: list[str] = []
    check_data(Config(data=DataConfig(source=str(tmp_path / "eval"))), splits, said.append)
    assert any(f"{tmp_path / 'eval'} has split(s) 'eval' that training does not read" in m for m in said), said
    datasets.DatasetDict({"train": part(rows[:20]), "dev": part(rows[20:30]), "validation": part(rows[30:])}).save_to_disk(str(tmp_path / "two"))
    with pytest.raises(UserError, match="the dataset's splits 'dev' and 'validation' both name the validation split"):
        load_splits(DataConfig(source=str(tmp_path / "two")))
    datasets.DatasetDict({"train": part(rows[:30]), "validation": part(rows[30:])}).save_to_disk(str(tmp_path / "own"))
    cfg = DataConfig(source=str(tmp_path / "own"), validation_fraction=0.0, test_fraction=0.2)
    said = []
    check_data(Config(data=cfg), load_splits(cfg), said.append)
    assert any(m.startswith("note: data.validation_fraction 0 has no effect:") and "the data's own validation split" in m for m in said), said
    assert not any("test_fraction" in m for m in said)  # carved: it took effect


def test_labels_that_join_other_labels_are_said_to_be_sets():
    # A single-label file whose labels look multi-label trained 'a|b' as a class of its own without a word.
    from taskembed.api import check_data
    from taskembed.config import Config

    rows = make_rows(30)
    for r in rows[:6]:
        r["label"] = "neg|pos"
    splits = load_splits(DataConfig(source="<in-memory data>", validation_fraction=0.0), given=frames_from_python(pd.DataFrame(rows)))
    said: list[str] = []
    check_data(Config(), splits, said.append)
    assert any("1 label(s) are other labels joined by '|' (such as 'neg|pos')" in m and "data.multi_label true" in m for m in said), said
    rows[0]["label"] = "good|bad"  # parts that are no labels: a name of its own, nothing said
    for r in rows[1:6]:
        r["label"] = "neg"
    splits = load_splits(DataConfig(source="<in-memory data>", validation_fraction=0.0), given=frames_from_python(pd.DataFrame(rows)))
    said = []
    check_data(Config(), splits, said.append)
    assert not any("joined by" in m for m in said), said
