"""Property-based tests of the data loader: arbitrary unicode texts and label strings survive every format."""

from __future__ import annotations

import csv
import json

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from taskembed.config import DataConfig
from taskembed.data import load_splits, sort_labels

# Texts: any unicode except surrogates (not encodable as UTF-8) and NUL (files with NUL are refused
# as binary by design); must contain a visible character, since blank texts are refused too.
text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1, max_size=40).filter(
    lambda s: s.strip() != ""
)
label = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp"), blacklist_characters="\x00"), min_size=1, max_size=12).filter(
    lambda s: s.strip() == s and s != ""
)
rows = st.lists(st.tuples(text, label), min_size=2, max_size=30).filter(lambda r: len({lab for _, lab in r}) >= 2)


def _write(tmp, fmt: str, data: list[tuple[str, str]]):
    path = tmp / f"data.{fmt}"
    if fmt == "csv":
        with path.open("w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["text", "label"])
            w.writerows(data)
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in data), encoding="utf-8")
    else:
        pd.DataFrame(data, columns=["text", "label"]).to_parquet(path)
    return path


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=rows, fmt=st.sampled_from(["csv", "jsonl", "parquet"]))
def test_any_unicode_round_trips(tmp_path, data, fmt):
    path = _write(tmp_path, fmt, data)
    splits = load_splits(DataConfig(source=str(path), validation_fraction=0.0))
    train = splits.frames["train"]
    assert train["text"].tolist() == [t for t, _ in data]
    assert train["label"].tolist() == [lab for _, lab in data]
    assert splits.labels == sort_labels({lab for _, lab in data})
    assert splits.label2id == {name: i for i, name in enumerate(splits.labels)}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.lists(st.tuples(text, st.sampled_from(["a", "b", "c"])), min_size=12, max_size=60), seed=st.integers(0, 10_000))
def test_carving_keeps_every_row_once_and_every_class_in_training(tmp_path, data, seed):
    if len({lab for _, lab in data}) < 2:
        data = data + [("extra text", "a"), ("another text", "b")]
    path = _write(tmp_path, "jsonl", data)
    splits = load_splits(DataConfig(source=str(path), validation_fraction=0.25, split_seed=seed))
    train, val = splits.frames["train"], splits.frames["validation"]
    assert sorted(map(tuple, pd.concat([train, val])[["text", "label"]].values.tolist())) == sorted(data)
    assert set(val["label"]) <= set(train["label"])
