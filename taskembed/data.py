"""Labelled text in, validated splits and length-grouped token batches out.

Every check happens before tokenization and raises a one-line UserError that
names the file, the row (1-based, as a person counts data rows) and the fix.
Labels are strings; the label map is the sorted set of training labels and a
label that only validation or test carry is an error, never silently added.
Multi-label data (data.multi_label) keeps each example's label set as a tuple
and becomes multi-hot 0/1 rows when encoded.
"""

from __future__ import annotations

import codecs
import csv
import functools
import hashlib
import io
import itertools
import json
import math
import numbers
import random
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import pandas as pd
import torch

from taskembed.config import DataConfig
from taskembed.errors import UserError, key_name, option, setting

SPLITS = ("train", "validation", "test")
SPLIT_ALIASES = {"dev": "validation", "valid": "validation", "val": "validation"}
"""Other names datasets give the validation split, read as it."""
FILE_SUFFIXES = {".csv", ".tsv", ".json", ".jsonl", ".parquet"}


# --- reading files ------------------------------------------------------------------------------


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV/TSV/JSON/JSONL/Parquet file into a DataFrame, or raise a UserError naming what is wrong."""
    p = Path(path).expanduser()  # as config paths are (a path from Python or in quotes reaches here with its ~)
    if not p.exists():
        raise missing_file(path)  # as given: Path() would fold a URL's // into one
    if p.is_dir():
        raise UserError(f"{p}: is a folder; give a data file, or a folder written by datasets.save_to_disk as data.source")
    suffix = p.suffix.lower()
    if suffix == ".txt":  # where texts alone will do (predict, embed, data.unlabelled), .txt is read elsewhere
        raise UserError(f"{p}: a .txt file holds texts without labels; labelled data is a table (.csv, .tsv, .json, .jsonl or "
                        ".parquet) with a text and a label column")
    if suffix not in FILE_SUFFIXES:
        raise UserError(f"{p}: unsupported file type '{suffix}'; use .csv, .tsv, .json, .jsonl or .parquet")
    if p.stat().st_size == 0:
        raise UserError(f"{p}: file is empty; it needs a header row and at least one example")
    if suffix == ".parquet":
        try:
            check_unique_columns(p, _parquet_names(p))
            return pd.read_parquet(p)
        except UserError:
            raise
        except Exception as exc:  # pyarrow raises several unrelated types for a corrupt file
            raise UserError(f"{p}: not a readable Parquet file ({type(exc).__name__}); re-export it") from None
    data = p.read_bytes()
    # Before decoding: most binary files (xlsx, zip, gzip) are not valid UTF-8 either, and
    # "re-save as UTF-8" would be the wrong advice for them.
    if b"\x00" in data:
        raise UserError(f"{p}: contains NUL bytes, so it looks binary (or UTF-16), not {suffix[1:].upper()}; export it as UTF-8 text")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        # Any line end counts (\n, \r\n, or an old Mac's \r); utf-8-sig counts from after a BOM, as a person does.
        before = data[len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0:][: exc.start]
        lines = re.split(rb"\r\n|\r|\n", before)
        line, column = len(lines), len(lines[-1]) + 1
        # Lines of the file, not rows of the table (a quoted cell can span lines): an editor goes straight to it.
        raise UserError(f"{p}: line {line} of the file is not valid UTF-8 (byte {column} of that line); re-save the file as UTF-8") from None
    if suffix in (".csv", ".tsv"):
        return _read_delimited(p, text, "," if suffix == ".csv" else "\t")
    if suffix == ".jsonl":
        return _read_jsonl(p, text)
    return _read_json(p, text)


def _parquet_names(p: Path) -> list[str]:
    import pyarrow.parquet as pq

    return list(pq.read_schema(p).names)


def _first_repeat(items: Iterator[Any] | Sequence[Any]) -> Any | None:
    """The first item that occurs a second time, or None."""
    seen = set()
    for item in items:
        if item in seen:
            return item
        seen.add(item)
    return None


def check_unique_columns(p: Path, names: Sequence[str]) -> None:
    """A column named twice is ambiguous: refuse it, whatever the format (readers would fail on it or keep one)."""
    repeat = _first_repeat(names)
    if repeat is not None:
        raise UserError(f"{p}: column '{repeat}' appears twice in the header; rename one")


SEPARATORS = {"\t": "tab", ",": "comma", ";": "semicolon", "|": "pipe"}
"""Field separators a header line may reveal, by name."""


def _read_delimited(p: Path, text: str, delimiter: str) -> pd.DataFrame:
    # The csv module (not pandas) so that a ragged row is an error naming its line, instead of
    # pandas silently filling missing fields with NaN.
    # newline="" splits records on \n and \r only: str.splitlines would also break unquoted fields at
    # U+2028, form feeds and the like, which csv writers (pandas included) do not quote.
    csv.field_size_limit(1 << 30)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    rows, start = [], 1
    try:
        for row in reader:
            rows.append(row)
            start = reader.line_num + 1
    except csv.Error as exc:
        # Many TSV files (GLUE's among them) do not quote at all, so a text may open with a quote that never closes
        # as CSV quoting would: read them as written, one record per line, where every line then has the header's fields.
        lines = [line.rstrip("\r").split("\t") for line in text.split("\n") if line.rstrip("\r")] if delimiter == "\t" else []
        # Only for a file with no quoted field at all: in one that quotes, the quoted rows would keep their quotes.
        quoted = any(len(f) >= 2 and f[0] == f[-1] == '"' for fields in lines for f in fields)
        if not lines or quoted or any(len(fields) != len(lines[0]) for fields in lines):
            raise UserError(f"{p}: line {start}: malformed {'CSV' if delimiter == ',' else 'TSV'} ({exc}); check the quoting") from None
        rows = lines
    rows = [r for r in rows if r]  # blank lines carry nothing
    if rows and rows[0][0].strip().lower().startswith("sep=") and not any(x.strip() for x in rows[0][1:]):
        rows = rows[1:]  # Excel's "sep=," line, which names the separator before the header
    if not rows:
        raise UserError(f"{p}: file is empty; it needs a header row and at least one example")
    # A row of empty fields is a blank line too: a spreadsheet writes one for each empty row (`,,` or `;;`). Those before
    # the last example shift the rows after them, which embed (whose ids are row numbers) says: attrs["empty_rows"].
    filled = [any(f.strip() for f in r) for r in rows[1:]]
    last = max((i for i, full in enumerate(filled) if full), default=-1)
    header, body = rows[0], [r for r, full in zip(rows[1:], filled) if full]
    # A spreadsheet's export may carry empty columns after the last named one: nothing in them, nothing to read.
    while len(header) > 1 and not header[-1].strip() and all(len(r) == len(header) and not r[-1].strip() for r in body):
        header, body = header[:-1], [r[:-1] for r in body]
    # A single column whose name holds another separator: the file is separated by that one (a semicolon is what
    # spreadsheets write for CSV where the comma is the decimal mark).
    other = next((name for sep, name in SEPARATORS.items() if sep != delimiter and sep in header[0]), None) if len(header) == 1 else None
    if other in ("tab", "comma"):
        raise UserError(f"{p}: header has a single column '{header[0][:60]}' but contains {other}s; use the matching extension (.csv for commas, .tsv for tabs)")
    if other:
        raise UserError(f"{p}: header has a single column '{header[0][:60]}' but contains {other}s; taskembed reads .csv separated by "
                        "commas and .tsv by tabs: save it with one of those (a spreadsheet's 'CSV, comma-separated')")
    check_unique_columns(p, header)
    if not body:
        raise UserError(f"{p}: has a header but no rows; add examples")
    for i, row in enumerate(body, start=1):
        if len(row) != len(header):
            raise UserError(f"{p}: row {i} has {len(row)} fields but the header has {len(header)}; quote fields that contain '{delimiter if delimiter != chr(9) else 'TAB'}' or fix the row")
    df = pd.DataFrame(body, columns=header)
    df.attrs["empty_rows"] = filled[:last + 1].count(False)
    return df


def rows_counted(where: str, df: pd.DataFrame) -> str:
    """WHERE for a message naming a row: a table read past its empty rows (a spreadsheet's `,,`) counts the others, which
    is said, or "row 3" would send the user to the wrong line of the file."""
    skipped = df.attrs.get("empty_rows", 0)
    return f"{where} (rows counted without its {skipped} empty one{'s' if skipped > 1 else ''})" if skipped else where


class _DuplicateKey(ValueError):
    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json's object_pairs_hook: a key given twice in one object is an error (json.loads would keep the last)."""
    repeat = _first_repeat(key for key, _ in pairs)
    if repeat is not None:
        raise _DuplicateKey(repeat)
    return dict(pairs)


def _read_jsonl(p: Path, text: str) -> pd.DataFrame:
    records = []
    # Split on \n only: JSON strings may hold a raw U+2028, which str.splitlines treats as a line break.
    for i, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line, object_pairs_hook=_unique_keys)
        except json.JSONDecodeError as exc:
            raise UserError(f"{p}: line {i} is not valid JSON ({exc.msg}); one JSON object per line") from None
        except _DuplicateKey as exc:
            raise UserError(f"{p}: line {i}: key '{exc.key}' appears twice in one object; keep one") from None
        if not isinstance(rec, dict):
            raise UserError(f"{p}: line {i} is a JSON {type(rec).__name__}, not an object; one object per line")
        records.append(rec)
    if not records:
        raise UserError(f"{p}: no records; one JSON object per line")
    return _with_absent_keys(pd.DataFrame.from_records(records), records)


def _with_absent_keys(df: pd.DataFrame, records: list[dict[str, Any]]) -> pd.DataFrame:
    """Records read as a table fill a key a record lacks with null, which the checks would call an empty cell. The keys
    of the records that lack one go in `df.attrs["record_keys"]` (by row, from 0), so a missing label can be said as a
    missing key, naming the keys the record has ("intent" for "label" is a typo, not an empty label). The first 1,000
    such records only: pandas deep-copies attrs at every operation on the frame (0.26 s a filter with 50,000 of them),
    and data whose records mostly leave out an optional key would pay that throughout; a typo is usually early."""
    width = len(df.columns)
    short = (i for i, rec in enumerate(records) if len(rec) < width)
    # A key of whole numbers that some records leave out (or give as null) becomes floats in a table: 17 is read as
    # 17.0, and an id past 2**53 loses digits. Such a column keeps the records' own numbers, and null.
    for column in df.columns:
        if df[column].dtype.kind == "f" and all(type(rec.get(column)) is int or rec.get(column) is None for rec in records):
            df[column] = pd.Series([rec.get(column) for rec in records], index=df.index, dtype=object)
    df.attrs["record_keys"] = {i: list(records[i]) for i in itertools.islice(short, 1000)}
    return df


def _one_object_line(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except json.JSONDecodeError:
        return False


def _read_json(p: Path, text: str) -> pd.DataFrame:
    try:
        obj = json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as exc:
        lines = [line.strip() for line in itertools.islice((x for x in text.split("\n") if x.strip()), 2)]
        if exc.msg == "Extra data" and len(lines) == 2 and lines[1].startswith("{") and _one_object_line(lines[0]):
            # One object per line in a .json file, as run_classification.py's train_file and datasets' "json" loader
            # take it: read as JSON Lines, whose errors name the line. (A document broken otherwise keeps its own error.)
            return _read_jsonl(p, text)
        raise UserError(f"{p}: not valid JSON (line {exc.lineno}: {exc.msg}); for one object per line use .jsonl") from None
    except _DuplicateKey as exc:
        raise UserError(f"{p}: key '{exc.key}' appears twice in one object; keep one") from None
    if isinstance(obj, dict) and len(obj) == 1 and isinstance(next(iter(obj.values())), list):
        obj = next(iter(obj.values()))  # {"data": [...]} is a common wrapper
    if not isinstance(obj, list) or not all(isinstance(r, dict) for r in obj):
        raise UserError(f"{p}: expected a JSON list of objects (records); got {type(obj).__name__}")
    if not obj:
        raise UserError(f"{p}: the list of records is empty")
    return _with_absent_keys(pd.DataFrame.from_records(obj), obj)


# --- sources -> raw splits ---------------------------------------------------------------------


def _from_datasets(obj: Any) -> dict[str, pd.DataFrame]:
    """A datasets Dataset/DatasetDict -> DataFrames, with ClassLabel ids turned into their names."""
    import datasets

    if isinstance(obj, datasets.Dataset):
        obj = datasets.DatasetDict({"train": obj})
    out = {}
    for split, ds in obj.items():
        df = ds.to_pandas()
        order = {}
        for col, feat in ds.features.items():
            if isinstance(feat, datasets.ClassLabel):
                df[col] = [feat.int2str(int(v)) if v is not None and v >= 0 else None for v in df[col]]
                order[col] = list(feat.names)
            elif isinstance(getattr(feat, "feature", None), datasets.ClassLabel):
                # A list of class ids (how multi-label sets such as go_emotions store labels) -> a list of names.
                names = feat.feature
                df[col] = [None if v is None else [names.int2str(int(x)) for x in v] for v in df[col]]
                order[col] = list(names.names)
        # The dataset's own class ids, so that the model's ids are the same ones (label_order): MNLI's 0 is entailment,
        # which sorting the names would make 1, and code that compares the model's argmax with the dataset's ids would
        # silently score the wrong classes.
        df.attrs[CLASS_ORDER] = order
        name = SPLIT_ALIASES.get(split, split)
        if name in out:  # 'dev' and 'validation': one of them was dropped without a word
            first = next(s for s in obj if SPLIT_ALIASES.get(s, s) == name)
            raise UserError(f"the dataset's splits '{first}' and '{split}' both name the {name} split; keep one of them "
                            "(DatasetDict.pop, then save_to_disk again)")
        out[name] = df
    return out


CLASS_ORDER = "class_label_names"
"""A frame read from a datasets Dataset keeps its ClassLabel columns' names, in id order, in `df.attrs[CLASS_ORDER]`."""


def label_order(raw_train: pd.DataFrame, column: str, labels: set[str]) -> list[str]:
    """The label names in id order: a ClassLabel column's own order (of the names training has), else sort_labels."""
    names = raw_train.attrs.get(CLASS_ORDER, {}).get(column)
    if not names:
        return sort_labels(labels)
    kept = [n for n in names if n in labels]
    return kept + sort_labels(labels - set(kept))


def renumbered_labels(raw_train: pd.DataFrame, column: str, labels: Sequence[str]) -> dict[str, int]:
    """{name: the ClassLabel's id} for the model's labels (label_order) whose id differs from the dataset's."""
    names = raw_train.attrs.get(CLASS_ORDER, {}).get(column) or []
    return {name: names.index(name) for i, name in enumerate(labels) if name in names and names.index(name) != i}


IN_MEMORY = "<in-memory data>"
"""data.source of a run whose data was given in Python (`taskembed.train(data=...)`), as training_config.json records it."""


def frames_from_python(data: Any, what: str = "data") -> dict[str, pd.DataFrame]:
    """Data given in Python, as raw splits: a pandas DataFrame (the training split), a dict of split name to DataFrame
    (or datasets.Dataset), or a datasets Dataset / DatasetDict."""
    import datasets

    if isinstance(data, pd.DataFrame):
        return {"train": _table(data)}
    if isinstance(data, (datasets.Dataset, datasets.DatasetDict)):
        return _from_datasets(data)
    if isinstance(data, dict) and data:
        out, named = {}, {}
        for name, frame in data.items():
            split = SPLIT_ALIASES.get(name, name)
            if split not in SPLITS:
                raise UserError(f"{what}: split '{name}' is not one of {', '.join(SPLITS)}; name the splits train, validation and test")
            if split in named:
                raise UserError(f"{what}: '{named[split]}' and '{name}' both name the {split} split; give one of them")
            named[split] = name
            if isinstance(frame, datasets.Dataset):
                frame = _from_datasets(frame)["train"]
            elif not isinstance(frame, pd.DataFrame):
                raise UserError(f"{what}['{name}']: give a pandas DataFrame or a datasets Dataset (got {type(frame).__name__})")
            out[split] = _table(frame)
        return out
    raise UserError(f"{what}: give a pandas DataFrame, a dict of split name to DataFrame, or a datasets Dataset or "
                    f"DatasetDict (got {type(data).__name__}{' with no splits' if isinstance(data, dict) else ''})")


def _table(frame: pd.DataFrame) -> pd.DataFrame:
    """A frame given in Python as a file would read: rows numbered from 1 in the order given (messages name them so), and
    column names as text, since the config names columns with strings (a frame from read_csv(header=None) has 0, 1, ...)."""
    frame = frame.reset_index(drop=True)
    frame.columns = [str(c) for c in frame.columns]
    return frame


_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


def names_a_path(src: str, suffixes: set[str] | frozenset[str] = FILE_SUFFIXES) -> bool:
    """Whether `src`, which is not there, was meant as a file (a table's suffix, a path's start, or a URL) rather than
    a dataset's name: its error is then missing_file's, not a Hub lookup's."""
    return Path(src).suffix.lower() in suffixes or src.startswith((".", "/", "~")) or bool(_URL.match(src))


def missing_file(path: str | Path, more: str = "") -> UserError:
    """"file not found", with the name in the same folder that it most likely meant ('Tickets.jsonl' for
    'tickets.jsonl': a case slip or a typo), when there is one; `more` goes inside the advice's parentheses."""
    import difflib

    if _URL.match(str(path)):  # no path at all: "check the path" would send them looking for a file
        return UserError(f"{path}: a URL; taskembed reads local files, built-in datasets and Hub dataset names, not "
                         "web addresses: download the file first (curl -LO URL) and give its path")
    p = Path(path).expanduser()
    try:
        names = [q.name for q in p.parent.iterdir()] if p.parent.is_dir() else []
    except OSError:
        names = []
    same = [n for n in names if n.casefold() == p.name.casefold()]
    close = same or difflib.get_close_matches(p.name, names, n=1, cutoff=0.8)
    hint = f"did you mean {p.parent / close[0] if str(p.parent) != '.' else close[0]}?" if close else "check the path"
    return UserError(f"{path}: file not found; {hint}" + (f" ({more})" if more else ""))


def check_paths(cfg: DataConfig) -> None:
    """What a dry run can check without reading a row: the files the config names are there (as load_raw says it)."""
    from taskembed import builtin

    src, path = cfg.source, Path(cfg.source).expanduser()
    if src == IN_MEMORY:
        raise UserError(f"data.source {IN_MEMORY} is data that was given in Python (taskembed.train(data=...)); give it again "
                        "that way, or name a file or dataset")
    if cfg.subset and (src in builtin.BUILTIN_NAMES or path.exists()):
        raise UserError(f"data.subset names a configuration of a Hub dataset, and data.source {src} is a "
                        f"{'built-in dataset' if src in builtin.BUILTIN_NAMES else 'local file or folder'}; drop data.subset")
    if src not in builtin.BUILTIN_NAMES and not path.exists() and names_a_path(src):
        raise missing_file(src, f"built-in datasets: {', '.join(builtin.BUILTIN_NAMES)}")
    for file in (cfg.validation, cfg.test):
        if file and not Path(file).expanduser().exists():
            raise missing_file(file)
    if cfg.unlabelled and not Path(cfg.unlabelled).expanduser().is_file():
        raise UserError(f"data.unlabelled {cfg.unlabelled}: file not found (or a folder); give a .txt, one text per line, or a table file")


def load_raw(cfg: DataConfig, training: bool = True, given: dict[str, pd.DataFrame] | None = None) -> tuple[dict[str, pd.DataFrame], dict[str, str]]:
    """The source's own splits and where each came from. For training (the default) there must be a train split and
    errors name the source as data.source; evaluate, embed and compare read any split of their DATA argument."""
    from taskembed import builtin

    src = cfg.source
    path = Path(src).expanduser()
    if given is None and (src == IN_MEMORY or cfg.subset):
        check_paths(cfg)  # raises for in-memory data given no longer, or a subset beside a local or built-in source
    if given is not None:  # frames_from_python's splits; data.source reads IN_MEMORY
        if cfg.subset:
            raise UserError("data.subset names a configuration of a Hub dataset, and the data was given in Python; drop data.subset")
        splits = {name: frame.copy() for name, frame in given.items()}
        # A DataFrame alone is the train split: named as the argument it was given as ("data", not "data['train']").
        origin = {"train": "data"} if list(splits) == ["train"] else {name: f"data['{name}']" for name in splits}
    elif src in builtin.BUILTIN_NAMES:
        splits = builtin.load_builtin(src)
        origin = {s: f"builtin:{src} [{s}]" for s in splits}  # a row number is only useful with its split
    elif path.is_file():
        splits = {"train": read_table(path)}
        origin = {"train": str(path)}
    elif path.is_dir():
        if not (path / "dataset_dict.json").exists() and not (path / "dataset_info.json").exists():
            raise UserError(f"{path}: folder is not a datasets.save_to_disk folder (no dataset_dict.json or dataset_info.json)")
        import datasets

        try:
            splits = _from_datasets(datasets.load_from_disk(str(path)))
        except UserError:
            raise
        except Exception as exc:
            first = " ".join(str(exc).split())  # one line, whatever the library's message spans
            first = first if len(first) <= 160 else first[:157] + "..."
            raise UserError(f"{path}: could not load the saved dataset ({type(exc).__name__}: {first}); the folder is damaged or "
                            "incomplete: save it again with save_to_disk or copy it whole") from None
        origin = {s: f"{path} [{s}]" for s in splits}
    elif path.exists():  # a device, a pipe or a socket: nothing to read a table from
        raise UserError(f"{src}: not a file or a folder; give a data file, or a folder written by datasets.save_to_disk")
    elif names_a_path(src):
        check_paths(cfg)  # raises: a path that is not there, or a URL
    else:
        splits, origin = _load_hub(src, "data.source " if training else "", cfg.subset)
    if training and "train" not in splits:
        raise UserError(f"{src}: has splits {sorted(splits)} but no 'train'; rename the training split")
    for split, file in (("validation", cfg.validation), ("test", cfg.test)):
        if file and given is not None and split in given:
            raise UserError(f"data['{split}'] and data.{split} ({file}) both give the {split} split; give one of them")
        if file:
            splits[split] = read_table(file)
            origin[split] = str(file)
    return splits, origin


def near_builtin(name: str) -> str | None:
    """The built-in dataset a name most likely misspells; never for an owner/name id (someorg/reviews is no typo of
    drug_reviews) or a name that only shares a word with one."""
    import difflib

    from taskembed import builtin

    # 0.85: a slip in one of their names scores 0.93 or more; Hub names that share a word with one (app_reviews and
    # drug_reviews: 0.70) are other datasets.
    close = [] if "/" in name else difflib.get_close_matches(name, builtin.BUILTIN_NAMES, n=1, cutoff=0.85)
    return close[0] if close else None


def _load_hub(name: str, named: str, subset: str | None = None) -> tuple[dict[str, pd.DataFrame], dict[str, str]]:
    from taskembed import builtin

    close = near_builtin(name)
    if close:
        raise UserError(f"{named}'{name}' is not a file or built-in dataset; did you mean '{close}'?")
    import datasets

    from taskembed import hub

    why = hub.unreachable("dataset")  # then only the local cache, at once, instead of half a minute of retries
    try:
        with hub.offline() if why else nullcontext():
            ds = datasets.load_dataset(name, subset)
    except Exception as exc:
        msg = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        text = " ".join(str(exc).split())
        if "Config name is missing" in text or (subset and "BuilderConfig" in text and "not found" in text):
            # datasets names the configurations in its message (its example call aside): they are the answer.
            listed = re.search(r"(?:available configs|Available): (\[.*?\])", text)
            configs = f" ({listed.group(1)[:300]})" if listed else ""
            if not named:  # evaluate, embed and compare take no data.subset
                raise UserError(f"'{name}' has several configurations{configs}; save the one you want with datasets "
                                f"(load_dataset('{name}', CONFIG).save_to_disk(FOLDER)) and give FOLDER") from None
            raise UserError(f"{named}'{name}' has several configurations"
                            + (f" and '{subset}' is not one of them" if subset else "")
                            + f"; name one with data.subset{configs}") from None
        raise UserError(
            f"{named}'{name}': not a file, folder or built-in ({', '.join(builtin.BUILTIN_NAMES)}), "
            + (f"and the Hugging Face Hub cannot be reached ({why}), so only the local cache was read, which failed ({msg}); "
               "give a local file, or run once with the Hub reachable" if why else f"and loading it from the Hugging Face Hub failed ({msg})")
        ) from None
    return _from_datasets(ds), {}


# --- validation --------------------------------------------------------------------------------


def label_str(value: Any) -> str:
    # 1.0 and 1 from a float column mean the same class as "1" in a CSV.
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def label_values(column: pd.Series) -> list:
    """A label column's values as Python objects. A float32 column (Parquet's 'float') is read through float32's own
    shortest form: widened to Python's float first, 0.1 would become the class '0.10000000149011612'."""
    if column.dtype == np.float32:
        return [float(str(v)) for v in column.to_numpy()]
    return column.tolist()


def lookalike_key(name: str) -> str:
    """What two label names share when they differ only in case or as written numbers ('POS' and 'pos', '1' and '1.0')."""
    try:
        return f"number {float(name)!r}"
    except ValueError:
        return name.casefold()


def is_null(value: Any) -> bool:
    try:
        return value is None or bool(pd.isna(value))
    except (TypeError, ValueError):
        return False  # list-like values are not null


def check_texts(texts: Sequence[str], purpose: str, what: str = "text", what_plural: str | None = None) -> list[str]:
    """The texts as a list, refusing none at all and any empty or non-string one (purpose: "predict", "embed")."""
    # Iterating a table or a mapping gives its column names or keys, which would be scored as if they were the texts.
    if texts is None or isinstance(texts, (pd.DataFrame, Mapping)) or not isinstance(texts, Iterable):
        kind = "None" if texts is None else type(texts).__name__  # a lone number, say, which list() would fail on
        raise UserError(f"give the {what_plural or what + 's'} to {purpose} as a list or a column (df['text']), not {kind}")
    if isinstance(texts, (bytes, bytearray)):  # iterating bytes gives numbers, which read as "text 1 is a number"
        raise UserError(f"the {what_plural or what + 's'} to {purpose} are bytes; decode them first (b.decode('utf-8'))")
    texts = list(texts)
    if not texts:
        raise UserError(f"no {what_plural or what + 's'} to {purpose}; give at least one")
    for i, t in enumerate(texts, start=1):
        if isinstance(t, (tuple, list)) and len(t) == 2 and all(isinstance(x, str) for x in t):
            # ("premise", "hypothesis"), as pipeline takes a pair: here the second texts are their own argument.
            call = {"predict": "predict", "embed": "embed", "count": "count_truncated"}.get(purpose) if what == "text" else None
            fix = f"give the first texts and the second as two lists, as in {call}(texts, pairs)" if call else "give single texts"
            raise UserError(f"{what} {i} is a pair of texts, not a string; {fix}")
        if not isinstance(t, str) or not t.strip():
            # A missing cell (NaN, pd.NA, None) is said as one: "a number" for NaN would send the user looking for digits.
            missing = t is not None and not isinstance(t, str) and is_null(t)
            kind = ("empty" if isinstance(t, str) else "None" if t is None else f"missing ({t!r})" if missing else
                    "a number" if isinstance(t, numbers.Number) else f"a {type(t).__name__}")
            raise UserError(f"{what} {i} is {kind}{'' if isinstance(t, str) or missing else ', not a string'}; every input needs some text")
    return texts


def text_columns_named(text_column: str, text_columns: Sequence[str] | None) -> str:
    """The column(s) a model reads its text from, quoted for messages: "'title', 'body'" (joined) or "'text'"."""
    return ", ".join(f"'{c}'" for c in text_columns) if text_columns else f"'{text_column}'"


def check_joined_columns(where: str, present: Sequence[Any], text_columns: Sequence[str]) -> None:
    """A table read for a model trained on data.text_columns holds each of them (or, named with --text-column, one column
    of texts joined already)."""
    lacking = next((c for c in text_columns if c not in present), None)
    if lacking is not None:
        raise UserError(f"{where}: no column '{lacking}' (columns: {', '.join(map(str, present))}); the model reads its text from "
                        f"the columns {', '.join(text_columns)}, joined, or give one column of joined texts with {option('--text-column')}")


def joined_texts(df: pd.DataFrame, columns: Sequence[str], where: str, first_row: int = 1, empty: Any = UserError) -> list[Any]:
    """data.text_columns: each row's cells of `columns` joined with a space, in order. An empty cell (null or blank) is
    left out, as a missing title or body is; a row with all of them empty is refused, or given as `empty` where that
    is not UserError (predict's None); a cell that is no text is refused."""
    values = [df[c].tolist() for c in columns]
    out = []
    for i, cells in enumerate(zip(*values), start=first_row):
        parts = []
        for col, v in zip(columns, cells):
            if is_null(v):
                continue
            if not isinstance(v, str):
                kind = "bytes, not text; store it as text (decoded, e.g. UTF-8)" if isinstance(v, bytes) else \
                    f"{repr(v)[:40]} ({type(v).__name__}), not text; quote it or fix the column"
                raise UserError(f"{where}: row {i}: column '{col}' holds {kind}")
            if v.strip():
                parts.append(v.strip())
        if not parts and empty is not UserError:
            out.append(empty)
            continue
        if not parts:
            raise UserError(f"{where}: row {i}: the text columns {', '.join(repr(c) for c in columns)} are all empty; fill one or drop the row")
        out.append(" ".join(parts))
    return out


def clean_split(df: pd.DataFrame, cfg: DataConfig, where: str, flag: Callable[[str], str | None] = lambda field: f"data.{field}",
                extra_file: bool = False) -> pd.DataFrame:
    """Check the columns and every row; return a frame with text, [text_pair], label (all str).

    Multi-label: `label` holds each row's label set as a sorted tuple of names (empty for none). `flag` names
    the option that sets a column field, for the hints (`text_column` -> the config key `data.text_column` in
    training, evaluate's own `--text-column`); None for multi_label, label_columns and label_delimiter where a trained
    model fixes them (evaluate).
    `extra_file`: a data.validation or data.test file, whose columns the options cannot name apart from train's.
    """
    label_cols = cfg.label_columns if cfg.multi_label and cfg.label_columns else [cfg.label_column]
    text_cols = cfg.text_columns or [cfg.text_column]
    columns = [c for c in (*text_cols, cfg.text_pair_column, *label_cols) if c]
    twice = next((c for c in columns if list(df.columns).count(c) > 1), None)
    if twice is not None:  # a frame from pd.concat(axis=1) can hold one; a file's reader renames repeats (x.1)
        raise UserError(f"{where}: the column '{twice}' appears more than once; keep one of them")
    for col in columns:
        if col not in df.columns:
            role = _which(cfg, col)
            close = likely_column(df, col, role, set(columns))
            named_by = flag(role)  # the option or config key that names this column
            if role == "label_columns":
                hint = f"did you mean '{close[0]}'? fix data.label_columns" if close else "fix data.label_columns"
                if flag("label_columns") is None:
                    hint = f"the model reads its labels from the 0/1 columns {', '.join(cfg.label_columns)}: the data needs each of them"
            elif role == "text_columns":
                hint = f"did you mean '{close[0]}'? fix data.text_columns" if close else "fix data.text_columns"
                if flag("text_columns") is None:
                    hint = (f"the model reads its text from the columns {', '.join(text_cols)}, joined: the data needs each of "
                            f"them, or one column of joined texts named with {option('--text-column')}")
            elif extra_file:  # the option would rename the column in the training data too
                hint = f"every split uses the training data's column names ({named_by.lstrip('-')} '{col}'): rename this file's column"
            else:
                hint = (f"did you mean '{close[0]}'? set it with {_set_option(named_by, close[0])}" if close
                        else f"set {_option_name(named_by)} to one of them")
            spaced = [str(c) for c in df.columns if str(c).strip() == col]
            # A first example read as the header: its label then also names the label column's values ('pos').
            if len(df) and any(str(c) in set(df[c].astype(str).head(1000)) for c in df.columns if str(c).strip()):
                hint = (f"the first line looks like an example, not a header: add a first line that names the columns "
                        f"({','.join(columns)})")
            elif spaced:  # 'text, label': no option can name ' label', since values are read as YAML, which trims them
                hint = f"the header spells it '{spaced[0]}', with spaces: remove the spaces around the names in the header line"
            raise UserError(f"{where}: no column '{col}' (columns: {', '.join(map(str, df.columns))}); {hint}")
    if len(df) == 0:
        raise UserError(f"{where}: no rows; add examples")
    where = rows_counted(where, df)
    # Files joined with `cat` keep each one's header line, which would be read as an example of a class named
    # after the label column.
    for i, row in enumerate(df[columns].itertuples(index=False, name=None), start=1):
        if all(isinstance(v, str) and v.strip() == c for v, c in zip(row, columns)):
            raise UserError(f"{where}: row {i} repeats the header ({', '.join(columns)}), as files joined together do; remove that line")
    absent = df.attrs.get("record_keys", {})

    def check_key(row: int, column: str) -> None:  # a JSON record without the key, rather than with an empty value
        if row - 1 in absent and column not in absent[row - 1]:
            raise UserError(f"{where}: row {row}: the record has no key '{column}' (its keys: {', '.join(absent[row - 1])}); "
                            "a misspelt key? every record needs one")

    out = {}
    if cfg.text_columns:
        out["text"] = joined_texts(df, cfg.text_columns, where)
    for col, key in ((None if cfg.text_columns else cfg.text_column, "text"), (cfg.text_pair_column, "text_pair")):
        if not col:
            continue
        values = df[col].tolist()
        for i, v in enumerate(values, start=1):
            if is_null(v):
                check_key(i, col)
                raise UserError(f"{where}: row {i}: column '{col}' is empty (null); fill it or drop the row")
            if isinstance(v, bytes):  # a Parquet binary column: text stored undecoded
                raise UserError(f"{where}: row {i}: column '{col}' holds bytes, not text; store it as text (decoded, e.g. UTF-8)")
            if not isinstance(v, str):
                raise UserError(f"{where}: row {i}: column '{col}' holds {repr(v)[:40]} ({type(v).__name__}), not text; quote it or fix the column")
            if not v.strip():
                raise UserError(f"{where}: row {i}: column '{col}' is empty or only whitespace; fill it or drop the row")
        out[key] = values
    if cfg.multi_label:
        out["label"] = _multi_labels(df, cfg, where, flag)
        return pd.DataFrame(out)
    labels = []
    for i, v in enumerate(label_values(df[cfg.label_column]), start=1):
        if is_null(v):
            check_key(i, cfg.label_column)
        if is_null(v) or (isinstance(v, str) and not v.strip()):
            raise UserError(f"{where}: row {i}: label column '{cfg.label_column}' is empty; every example needs a label (drop the row or label it)")
        if isinstance(v, bytes):
            raise UserError(f"{where}: row {i}: label column '{cfg.label_column}' holds bytes, not text; store it as text (decoded, e.g. UTF-8)")
        if not isinstance(v, (str, int, float, bool)) or isinstance(v, float) and not math.isfinite(v):
            fix = ("for several labels per example set data.multi_label true" if flag("multi_label")
                   else "the model predicts one label per example: give one class name per row")
            raise UserError(f"{where}: row {i}: label {repr(v)[:60]} is not a single class name or number; {fix}")
        labels.append(label_str(v).strip())
    out["label"] = labels
    return pd.DataFrame(out)


def _multi_labels(df: pd.DataFrame, cfg: DataConfig, where: str, flag: Callable[[str], str | None]) -> list[tuple[str, ...]]:
    """Each row's label set: from several 0/1 columns, a list column, or text split on data.label_delimiter."""
    if cfg.label_columns:
        flags = {c: df[c].tolist() for c in cfg.label_columns}
        sets = []
        for i in range(len(df)):
            names = []
            for c in cfg.label_columns:
                v = flags[c][i]
                if is_null(v):
                    raise UserError(f"{where}: row {i + 1}: label column '{c}' is empty (null); write 0 or 1")
                on = _binary(v)
                if on is None:
                    raise UserError(f"{where}: row {i + 1}: label column '{c}' holds {repr(v)[:40]}; label columns take 0 or 1")
                if on:
                    names.append(str(c))
            sets.append(tuple(sort_labels(set(names))))
        return sets
    col, sep = cfg.label_column, cfg.label_delimiter
    sets = []
    for i, v in enumerate(df[col].tolist(), start=1):
        if hasattr(v, "tolist") and not isinstance(v, str):
            v = v.tolist()  # Parquet and datasets give numpy arrays; their items become plain str/int
        if isinstance(v, (list, tuple)):
            items = list(v)
        elif is_null(v):
            raise UserError(f"{where}: row {i}: label column '{col}' is empty (null); give the example's labels "
                            f"({'an empty string' if sep else '[]'} for none) or drop the row")
        elif isinstance(v, str) and sep is not None:
            items = v.split(sep) if v.strip() else []  # an empty cell is a row with no labels
        elif isinstance(v, str):
            fix = ("set data.label_delimiter to split it (e.g. '|'), or give the labels as a JSON list" if flag("label_delimiter")
                   else "the model was trained on labels given as lists, so give them as lists (a JSON list in JSONL or Parquet)")
            raise UserError(f"{where}: row {i}: label {v[:40]!r} is text, not a list; {fix}")
        else:
            raise UserError(f"{where}: row {i}: label {repr(v)[:40]} is not a list of labels; give a list such as [\"a\", \"b\"]")
        names = []
        for item in items:
            if isinstance(item, bool) or not isinstance(item, (str, int, float)) or isinstance(item, float) and not item.is_integer():
                raise UserError(f"{where}: row {i}: label {repr(item)[:40]} in column '{col}' is not a class name or integer")
            name = label_str(item).strip()
            if not name:
                hint = f"two '{sep}' in a row or one at an end" if isinstance(v, str) else "an empty string in the list"
                raise UserError(f"{where}: row {i}: an empty label in {repr(v)[:60]} ({hint}); remove it")
            if name in names:
                raise UserError(f"{where}: row {i}: label '{name}' appears twice in {repr(v)[:60]}; list each label once")
            names.append(name)
        sets.append(tuple(sort_labels(set(names))))
    return sets


def _binary(value: Any) -> bool | None:
    """0/1 (also as text, floats or booleans) -> False/True; anything else -> None."""
    if isinstance(value, str):
        value = value.strip().lower()
        return {"0": False, "1": True, "0.0": False, "1.0": True, "false": False, "true": True}.get(value)
    if hasattr(value, "item"):
        value = value.item()  # numpy scalars from Parquet
    if isinstance(value, (bool, int, float)) and value in (0, 1):
        return bool(value)
    return None


def likely_column(df: pd.DataFrame, col: str, field: str, named: set[str]) -> list[str]:
    """The column to suggest for a missing one, among those no option names yet: for a text, the one with the longest
    values on average; for a label, the one with the fewest distinct values, two at least; a close name for an entry
    of label_columns or text_columns (the columns of one kind look alike) or where there are no rows. Names alone mislead: 'text' is closest to
    'intent', which holds labels."""
    import difflib

    free = [(i, str(c)) for i, c in enumerate(df.columns) if str(c) not in named]
    if df.empty or field in ("label_columns", "text_columns"):  # several columns of one kind: the name tells them apart
        return difflib.get_close_matches(col, [name for _, name in free], n=1)
    score = {}
    for i, name in free:
        values = df.iloc[:1000, i].dropna().astype(str)  # by position: a header may repeat a name
        if field == "label_column":
            if values.nunique() >= 2:
                score[name] = -values.nunique()
        elif len(values):
            score[name] = values.str.len().mean()
    return [max(score, key=score.get)] if score else []


def _set_option(name: str, value: str) -> str:
    """`name` set to `value` in advice, as the caller sets it: a config key (data.text_column; errors.setting) or a
    command's own option (--text-column; errors.option)."""
    return option(name, value) if name.startswith("--") else setting({name: value})


def _option_name(name: str) -> str:
    return option(name) if name.startswith("--") else key_name(name)


def missing_column(where: str, column: str, columns: Sequence[str], flag: str, df: pd.DataFrame | None = None,
                   named: Sequence[str] = ()) -> UserError:
    """The error for a text column the data lacks. With the data at hand (`df`), the suggestion is the column whose
    values look like texts (likely_column), among those not `named` already; with names only (a Parquet file's
    schema), the closest name."""
    import difflib

    close = likely_column(df, column, "text_column", {column, *named}) if df is not None else \
        difflib.get_close_matches(column, [str(c) for c in columns], n=1)
    hint = f"did you mean '{close[0]}'? pass {option(flag, close[0])}" if close else f"pass {option(flag)} with one of them"
    return UserError(f"{where}: no column '{column}' (columns: {', '.join(map(str, columns))}); {hint}")


def _which(cfg: DataConfig, col: str) -> str:
    """The option that names column `col`: an entry of data.label_columns is none of the single-column ones."""
    if col == cfg.label_column:
        return "label_column"
    if col == cfg.text_pair_column:
        return "text_pair_column"
    if col in (cfg.text_columns or []):
        return "text_columns"
    return "text_column" if col == cfg.text_column else "label_columns"


def sort_labels(labels: set[str]) -> list[str]:
    """Numeric labels sort as numbers (so '10' follows '9'); anything else alphabetically.

    The order is total: labels equal as numbers ('1' and '1.0') fall back to the text, and 'nan' sorts last.
    A set's iteration order changes from process to process, so a sort that left any tie to it would give
    another label-to-id map in a resumed run or on another rank."""
    try:
        numbers = {name: float(name) for name in labels}
    except ValueError:
        return sorted(labels)

    def key(name: str) -> tuple[bool, float, str]:
        nan = math.isnan(numbers[name])
        return nan, 0.0 if nan else numbers[name], name

    return sorted(labels, key=key)


# --- splits ------------------------------------------------------------------------------------


@dataclass
class Splits:
    """Validated splits with string labels, the label names in id order, and provenance."""

    frames: dict[str, pd.DataFrame]
    labels: list[str]
    origin: dict[str, str]
    multi_label: bool = False
    """Each frame's `label` is a tuple of names (zero or more per example) instead of one name."""
    unlabelled: dict[str, str] = field(default_factory=dict)
    """The source's own validation or test splits left out because none of their rows has a label, with where they came
    from (benchmark test sets on the Hub are often published so, as -1)."""
    sampled_out: list[str] = field(default_factory=list)
    """Labels of the training data that data.max_train_samples left out: a sample smaller than the label count cannot
    hold them all, so the model does not learn them."""
    ignored: list[str] = field(default_factory=list)
    """The source's splits that are none of train, validation and test (nor named as one: dev, valid, val), which
    training does not read: said in a note (an 'eval' split was dropped silently and validation carved from train)."""
    renumbered: dict[str, int] = field(default_factory=dict)
    """A datasets ClassLabel's names whose dataset id is not the model's, with the dataset's id: a name with no
    training example before them moves them down (the model has no row for it). Said by training; empty otherwise."""
    sampled: dict[str, int] | None = None
    """{"from": rows, "kept": rows} where data.max_train_samples sampled the training data (before any split was carved
    from it), and {"per_label_from", "per_label_kept"} where data.max_train_per_label cut it (after the carving), for
    run.json, training's note and the model card: the scores are then those of a model trained on part of the data."""

    @property
    def label2id(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.labels)}

    def fingerprint(self) -> str:
        """sha256 over every split's rows: two runs on the same data share it."""
        h = hashlib.sha256()
        for split in SPLITS:
            if split in self.frames:
                h.update(split.encode())
                h.update(self.frames[split].to_json(orient="records", force_ascii=False).encode())
        return h.hexdigest()

    def seen_in_train(self) -> dict[str, int]:
        """Rows of each other split whose text (and second text) a training row has too, outer whitespace aside:
        their scores measure what the model remembers, not how it does on new text."""
        columns = [c for c in ("text", "text_pair") if c in self.frames["train"]]

        def rows(df: pd.DataFrame):
            return zip(*(df[c].astype(str).str.strip() for c in columns))

        train = set(rows(self.frames["train"]))
        # In SPLITS order (validation, then test), whatever order the splits were carved in.
        return {s: sum(r in train for r in rows(self.frames[s])) for s in SPLITS if s in self.frames and s != "train"}

    def conflicting_labels(self) -> list[tuple[str, list[str], list[str]]]:
        """Texts (with their second texts) that rows of the data give different labels, outer whitespace aside, over
        every split, with those labels in label order and the splits the text is in: a re-routed support ticket exported
        twice, say. The model cannot learn both, and scoring either side counts against it; which is right is the user's
        to say (single-label)."""
        if self.multi_label:
            return []
        frames = [self.frames[s].assign(split=s) for s in SPLITS if s in self.frames]
        keys = [c for c in ("text", "text_pair") if c in self.frames["train"]]
        frame = pd.concat(frames, ignore_index=True)
        frame = frame.assign(**{c: frame[c].astype(str).str.strip() for c in keys})
        # Grouped over the texts that occur twice only: a group per distinct text took 19 s on 1M rows to report nothing.
        unique = frame[[*keys, "label"]].drop_duplicates()
        twice = unique[unique.duplicated(keys, keep=False)]
        if twice.empty:
            return []
        order = {name: i for i, name in enumerate(self.labels)}
        labels = twice.groupby(keys, sort=False)["label"].unique()
        where = frame.merge(twice[keys].drop_duplicates(), on=keys).groupby(keys, sort=False)["split"].unique()
        return [(" / ".join(key if isinstance(key, tuple) else (key,)), sorted(names, key=lambda n: order.get(n, len(order))),
                 [s for s in SPLITS if s in set(where[key])]) for key, names in labels.items()]

    def lookalike_labels(self) -> list[list[str]]:
        """Groups of label names that differ only in case or as written numbers ('POS' and 'pos', '1' and '1.0'), in
        label order. Each name is its own class, which a data file seldom means, but which of them is right is for
        the user to say: they are reported, never merged."""
        groups: dict[str, list[str]] = {}
        for name in self.labels:
            groups.setdefault(lookalike_key(name), []).append(name)
        return [names for names in groups.values() if len(names) > 1]

    def describe(self) -> str:
        """One line for the console: the splits' sizes and the labels."""
        sizes = ", ".join(f"{s} {len(self.frames[s]):,}" for s in SPLITS if s in self.frames)  # train, validation, test
        more = " ..." if len(self.labels) > 12 else ""
        # Quoted when a name holds a comma, which would otherwise read as two labels.
        quoted = any("," in name for name in self.labels)
        shown = [repr(n) if quoted else n for n in self.labels[:12]]
        return f"data: {sizes}; {len(self.labels)} labels: {', '.join(shown)}{more}"

    def summary(self) -> dict[str, Any]:
        if self.multi_label:
            # Label sets are mostly unique, so count each label's examples (and the examples with none).
            return {
                split: {"rows": len(df), "classes": {name: int(sum(name in row for row in df["label"])) for name in self.labels},
                        "no_label": int(sum(1 for row in df["label"] if not row))}
                for split, df in self.frames.items()
            }
        return {
            split: {"rows": len(df), "classes": {k: int(v) for k, v in df["label"].value_counts().sort_index().items()}}
            for split, df in self.frames.items()
        }


def _carve(df: pd.DataFrame, fraction: float, seed: int, where: str, by: pd.Series | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Stratified and seeded: each class gives its share of the carved rows (largest remainder first).

    Every class keeps at least one training row, whatever the seed: a label that only the carved
    split holds is an error in load_splits, and a rare class must not make the split a lottery.
    `by` stratifies on another key than the label (multi-label: see _carve_multi).
    """
    n_out = max(1, round(len(df) * fraction))
    if len(df) - n_out < 2:
        raise UserError(f"{where}: only {len(df)} examples, too few to carve a {fraction:.0%} split; add data or give a validation file")
    groups = {label: list(ix) for label, ix in df.groupby("label" if by is None else by, sort=True).indices.items()}
    share = {c: len(ix) * n_out / len(df) for c, ix in groups.items()}
    take = {c: min(int(share[c]), len(ix) - 1) for c, ix in groups.items()}
    while (short := n_out - sum(take.values())) > 0:
        room = sorted((c for c in groups if take[c] < len(groups[c]) - 1), key=lambda c: take[c] - share[c])
        if not room:
            raise UserError(
                f"{where}: {len(df)} examples in {len(groups)} classes are too few to carve a {fraction:.0%} split "
                "that leaves every class in training; lower the fraction or give a validation file"
            )
        for c in room[:short]:
            take[c] += 1
    rng = random.Random(seed)
    out = set()
    for c, ix in groups.items():
        rng.shuffle(ix)
        out.update(ix[: take[c]])
    mask = [i in out for i in range(len(df))]
    return df[[not m for m in mask]].reset_index(drop=True), df[mask].reset_index(drop=True)


def _carve_multi(df: pd.DataFrame, fraction: float, seed: int, where: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """_carve for label sets, stratified on each row's rarest label (sets themselves are mostly unique).

    Every label keeps a training row: a label whose rows all went to the carved split gets its first
    one back, so a carved split never holds a label that training lacks.
    """
    train, carved = _carve(df, fraction, seed, where, by=_rarest_label(df))
    counts = Counter(x for row in df["label"] for x in row)
    in_train = {x for row in train["label"] for x in row}
    back = []
    for name in sort_labels(set(counts) - in_train):
        if not any(name in carved["label"].iat[i] for i in back):
            back.append(next(i for i, row in enumerate(carved["label"]) if name in row))
    if back:
        keep = [i for i in range(len(carved)) if i not in set(back)]
        train = pd.concat([train, carved.iloc[back]], ignore_index=True)
        carved = carved.iloc[keep].reset_index(drop=True)
    return train, carved


def _rarest_label(df: pd.DataFrame) -> pd.Series:
    """Multi-label: each row's rarest label ("" for none), the key to stratify label sets on (they are mostly unique)."""
    counts = Counter(x for row in df["label"] for x in row)
    return df["label"].map(lambda row: min(row, key=lambda x: (counts[x], x)) if row else "")


def _stratified_sample(df: pd.DataFrame, n: int, seed: int, key: pd.Series) -> pd.DataFrame:
    """n rows, seeded, in df's order, each class of `key` its share (largest remainder) and at least one row where n has
    room for every class: a plain sample of a small cap can drop a rare class, and with it its per-class scores."""
    groups = {c: list(ix) for c, ix in df.groupby(key.to_numpy(), sort=True).indices.items()}
    if n < len(groups):
        return df.sample(n=n, random_state=seed).sort_index().reset_index(drop=True)
    share = {c: len(ix) * n / len(df) for c, ix in groups.items()}
    take = {c: min(len(ix), max(1, int(share[c]))) for c, ix in groups.items()}
    while (short := n - sum(take.values())) != 0:
        if short > 0:  # the classes furthest under their share first
            for c in sorted((c for c in groups if take[c] < len(groups[c])), key=lambda c: take[c] - share[c])[:short]:
                take[c] += 1
        else:  # the one-row minimum overshot: the classes furthest over their share give one back
            for c in sorted((c for c in groups if take[c] > 1), key=lambda c: share[c] - take[c])[:-short]:
                take[c] -= 1
    rng = random.Random(seed)
    picked = []
    for c, ix in groups.items():
        rng.shuffle(ix)
        picked += ix[: take[c]]
    return df.iloc[sorted(picked)].reset_index(drop=True)


def _multi_label_names(frames: dict[str, pd.DataFrame], origin: dict[str, str], cfg: DataConfig, src: str,
                       raw_train: pd.DataFrame) -> list[str]:
    """The label map of a multi-label run: label_columns in their order, else the training labels in label_order."""
    seen = {x for row in frames["train"]["label"] for x in row}
    if cfg.label_columns:
        never = [c for c in cfg.label_columns if c not in seen]
        if never:
            raise UserError(f"{src}: label column '{never[0]}' is 0 in every training row{f' (and {len(never) - 1} more)' if len(never) > 1 else ''}; "
                            "a label needs positive training examples: add some or drop the column from data.label_columns")
        labels = list(cfg.label_columns)
    else:
        labels = label_order(raw_train, cfg.label_column, seen)
    if len(labels) < 2:
        which = f"only the label '{labels[0]}'" if labels else "no labels at all"
        raise UserError(f"{src}: the training examples carry {which}; multi-label needs at least two labels")
    for split in ("validation", "test"):
        for i, row in enumerate(frames.get(split, pd.DataFrame({"label": []}))["label"], start=1):
            unseen = [x for x in row if x not in seen]
            if unseen:
                raise UserError(f"{origin.get(split, split)}: row {i}: label '{unseen[0]}' never occurs in training; "
                                "add training examples or remove it from this row")
    return labels


def sample_keeping_labels(frame: pd.DataFrame, n: int, seed: int, multi_label: bool) -> tuple[pd.DataFrame, list[str]]:
    """A seeded random sample of n rows that holds every label of `frame` at least once, where n leaves room for that.

    A plain sample drops rare labels, and then a validation or test split that has them is refused ("never occurs in
    training"). The plain sample is kept where it holds them all (the runs measured with it stay as they were) or
    where there is no room; otherwise one random row of each missing label replaces rows from its end whose labels
    others still cover. Returns the sample and the labels it leaves out (none unless there was no room for them)."""
    def names(value) -> set[str]:
        return set(value) if multi_label else {value}

    sample = frame.sample(n=n, random_state=seed)
    every = set().union(*map(names, frame["label"]))
    have = set().union(*map(names, sample["label"]))
    if have == every or n < len(every):  # with no room for every label, the plain sample (carving still works on it)
        return sample.reset_index(drop=True), sorted(every - have, key=str)
    rng = random.Random(seed)
    added: list[int] = []
    for name in sorted(every - have, key=str):
        if name not in have:  # an earlier multi-label pick may hold it
            pick = rng.choice([i for i, v in zip(frame.index, frame["label"]) if name in names(v)])
            added.append(pick)
            have |= names(frame.at[pick, "label"])
    counts = Counter(x for v in list(sample["label"]) + [frame.at[i, "label"] for i in added] for x in names(v))
    keep, surplus = [], len(added)
    for i in reversed(sample.index.tolist()):
        if surplus and all(counts[x] > 1 for x in names(sample.at[i, "label"])):
            counts.subtract(names(sample.at[i, "label"]))
            surplus -= 1
        else:
            keep.append(i)
    if surplus:  # multi-label rows each needed for a label: no room after all
        return sample.reset_index(drop=True), sorted(every - set().union(*map(names, sample["label"])), key=str)
    return frame.loc[keep[::-1] + added].reset_index(drop=True), []


def load_splits(cfg: DataConfig, given: dict[str, pd.DataFrame] | None = None) -> Splits:
    """The config's splits, read, cleaned, carved and checked; with data.max_eval_samples, validation and test cut to a
    seeded sample afterwards (so every row was checked, and a message's row number is the file's)."""
    splits = _read_splits(cfg, given)
    if cfg.max_eval_samples is not None:
        # After the carving, which takes its shares of the data as given: the training data is what it is without the cap.
        for split in ("validation", "test"):
            frame = splits.frames.get(split)
            if frame is not None and len(frame) > cfg.max_eval_samples:
                key = _rarest_label(frame) if splits.multi_label else frame["label"]
                splits.frames[split] = _stratified_sample(frame, cfg.max_eval_samples, cfg.split_seed, key)
                splits.origin[split] = (f"{splits.origin.get(split) or f'{cfg.source} [{split}]'}, {cfg.max_eval_samples} of its "
                                        f"{len(frame):,} rows (data.max_eval_samples, seed {cfg.split_seed})")
    return splits


def _read_splits(cfg: DataConfig, given: dict[str, pd.DataFrame] | None = None) -> Splits:
    """Read the source (or the splits `given` in Python, from frames_from_python), validate every row, carve missing
    splits, build and check the label map."""
    from taskembed import builtin

    sep = builtin.multi_label_delimiter(cfg.source) if cfg.source in builtin.BUILTIN_NAMES else None
    if sep is not None and not (cfg.multi_label and cfg.label_delimiter == sep and not cfg.label_columns):
        # Trained as single-label, every combination of intents would silently become a class of its own.
        raise UserError(f"{cfg.source} is a multi-label dataset (labels joined by '{sep}'): set data.multi_label true "
                        f"and data.label_delimiter '{sep}' (configs/multilabel.yaml does)")
    raw, origin = load_raw(cfg, given=given)
    raw_train = raw["train"]
    ignored = [split for split in raw if split not in SPLITS]
    unlabelled = {}
    columns = cfg.label_columns if cfg.multi_label and cfg.label_columns else [cfg.label_column]
    for split in ("validation", "test"):
        # A split of the dataset itself (not a file the config names) whose labels are all missing cannot be scored:
        # left out, and carved from train like an absent one, instead of refused row by row.
        if (split in raw and not {"validation": cfg.validation, "test": cfg.test}[split] and len(raw[split])
                and all(c in raw[split].columns for c in columns) and all(raw[split][c].map(is_null).all() for c in columns)):
            unlabelled[split] = origin.pop(split, split)
            del raw[split]
    frames = {}
    for split in SPLITS:
        if split in raw:
            frames[split] = clean_split(raw[split], cfg, origin.get(split) or f"{cfg.source} [{split}]",
                                        extra_file=bool({"validation": cfg.validation, "test": cfg.test}.get(split)))
    src = origin.get("train") or cfg.source
    sampled_out: list[str] = []
    given_labels = frames["train"]["label"].nunique() if cfg.max_train_samples is not None else 0  # for the advice below
    sampled = None
    if cfg.max_train_samples is not None and cfg.max_train_samples < len(frames["train"]):
        sampled = {"from": len(frames["train"]), "kept": cfg.max_train_samples}
        frames["train"], sampled_out = sample_keeping_labels(frames["train"], cfg.max_train_samples, cfg.split_seed, cfg.multi_label)
    carve = _carve_multi if cfg.multi_label else _carve
    carved_test = "test" not in frames and cfg.test_fraction > 0
    if carved_test:
        frames["train"], frames["test"] = carve(frames["train"], cfg.test_fraction, cfg.split_seed, src)
        origin["test"] = f"{src} (carved {cfg.test_fraction:.0%} of train, seed {cfg.split_seed})"
    if "validation" not in frames and cfg.validation_fraction > 0:
        # Both fractions are shares of the data as given, so carving test first must not shrink validation.
        share = cfg.validation_fraction / (1 - cfg.test_fraction) if carved_test else cfg.validation_fraction
        frames["train"], frames["validation"] = carve(frames["train"], share, cfg.split_seed, src)
        origin["validation"] = f"{src} (carved {cfg.validation_fraction:.0%} of train, seed {cfg.split_seed})"
    if cfg.max_train_per_label is not None:
        # After the carving: a few-shot run's validation and test are as large as without it.
        train = frames["train"]
        frames["train"] = (train.sample(frac=1.0, random_state=cfg.split_seed).groupby("label", sort=False).head(cfg.max_train_per_label)
                           .sort_index().reset_index(drop=True))
        if len(frames["train"]) < len(train):  # said by training: a config's cap would otherwise drop a user's own examples unseen
            sampled = {**(sampled or {}), "per_label_from": len(train), "per_label_kept": len(frames["train"])}
    if cfg.multi_label:
        labels = _multi_label_names(frames, origin, cfg, src, raw_train)
        return Splits(frames=frames, labels=labels, origin=origin, multi_label=True, unlabelled=unlabelled, sampled_out=sampled_out,
                      sampled=sampled, renumbered={} if cfg.label_columns else renumbered_labels(raw_train, cfg.label_column, labels),
                      ignored=ignored)

    train_labels = set(frames["train"]["label"])
    if len(train_labels) < 2:
        only = next(iter(train_labels))
        raise UserError(f"{src}: every training example has the label '{only}'; a classifier needs at least two classes")
    labels = label_order(raw_train, cfg.label_column, train_labels)
    for split in ("validation", "test"):
        if split in frames:
            unseen = sorted(set(frames[split]["label"]) - train_labels)
            if unseen:
                row = frames[split]["label"].tolist().index(unseen[0]) + 1
                # '0' from a JSON number against '0.0' in a CSV, or 'Pos' against 'pos': the same class written two ways.
                twin = next((name for name in labels if lookalike_key(name) == lookalike_key(unseen[0])), None)
                fix = (f"training writes it '{twin}': write the labels the same way in every file" if twin is not None
                       else "add training examples or drop these rows")
                if unseen[0] in sampled_out:  # the training data has it; the sample left it out
                    fix = (f"the training data has it, but data.max_train_samples {cfg.max_train_samples} left it out of the sample: "
                           f"raise data.max_train_samples to at least {given_labels}, the number of labels, "
                           "so that the sample holds every label")
                raise UserError(
                    f"{origin.get(split, split)}: row {row}: label '{unseen[0]}' never occurs in training"
                    f"{f' (and {len(unseen) - 1} more)' if len(unseen) > 1 else ''}; {fix}"
                )
    return Splits(frames=frames, labels=labels, origin=origin, unlabelled=unlabelled, sampled_out=sampled_out, sampled=sampled,
                  renumbered=renumbered_labels(raw_train, cfg.label_column, labels), ignored=ignored)


# --- tokenization and batches --------------------------------------------------------------------


@dataclass
class Encoded:
    """One split tokenized once, unpadded; batches are padded only to their own longest example."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]] | None
    labels: list[int] | list[list[int]] | None
    """Class ids; multi-label: a multi-hot 0/1 list per example, one entry per label."""
    truncated: int
    doc_ids: list[int] | None = None
    """Window mode (data.long_texts window): the text each row is a window of; None when a row is a text."""
    windowed: int = 0
    """Window mode: how many texts were longer than one window (and so were cut into several)."""
    _packed: dict[str, np.ndarray | None] | None = field(default=None, init=False, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.input_ids)

    def packed(self) -> dict[str, np.ndarray | None]:
        """The rows as flat arrays, built on first use: what `collate` gathers each batch from, instead of converting
        every row's Python list again at every step. The lists are not changed after encoding, so this stays valid.
        Token ids are kept in 32 bits (half the memory; a vocabulary has fewer than 2**31 entries) and widened per batch."""
        if self._packed is None:
            lengths = np.array([len(r) for r in self.input_ids], dtype=np.int64)
            flat = lambda rows: np.fromiter((t for r in rows for t in r), dtype=np.int32, count=int(lengths.sum()))  # noqa: E731
            multi = self.multi_label
            self._packed = {
                "lengths": lengths, "starts": np.cumsum(lengths) - lengths,
                "input_ids": flat(self.input_ids),
                "token_type_ids": None if self.token_type_ids is None else flat(self.token_type_ids),
                # Multi-hot rows are float targets (the loss is then binary cross-entropy); class ids stay long for cross-entropy.
                "labels": None if self.labels is None else np.array(self.labels, dtype=np.float32 if multi else np.int64),
            }
        return self._packed

    @property
    def n_texts(self) -> int:
        return len(self.input_ids) if self.doc_ids is None else (self.doc_ids[-1] + 1 if self.doc_ids else 0)

    @property
    def targets(self) -> list | None:
        """One label per text (rows are windows in window mode, each carrying its text's label)."""
        if self.labels is None or self.doc_ids is None:
            return self.labels
        first = {}
        for row, d in enumerate(self.doc_ids):
            first.setdefault(d, row)
        return [self.labels[first[d]] for d in range(self.n_texts)]

    @property
    def lengths(self) -> list[int]:
        return [len(x) for x in self.input_ids]

    @property
    def multi_label(self) -> bool:
        return bool(self.labels) and isinstance(self.labels[0], list)


# A text is cut before tokenizing when it is longer than this many characters per token of max_length (4,096
# characters for 256 tokens): the tokenizer reads every character before truncating, so a 100 KB document cost
# about 31 ms to tokenize (and twice that, with the count of truncated texts) where its first 256 tokens need about 1.
CUT_CHARS_PER_TOKEN = 16

# Tokenizer steps that never join text across a space into one word: whatever is cut after a space, the words before
# it tokenize as they do in the whole text. Anything else (a Split pattern, a Replace rule, ByteLevel without its
# regex, a Metaspace that does not split) is read whole, as before.
_WORD_LOCAL = {"BertPreTokenizer", "Whitespace", "WhitespaceSplit", "Punctuation", "Digits", "ByteLevel", "Metaspace",
               "BertNormalizer", "NFC", "NFD", "NFKC", "NFKD", "Lowercase", "StripAccents", "Strip", "Prepend", "Precompiled"}


# Of those, the pre-tokenizers that end a word at a space (Punctuation and Digits only split words further).
_SPACE_SPLITTING = {"BertPreTokenizer", "Whitespace", "WhitespaceSplit", "ByteLevel", "Metaspace"}


def _steps(step: dict[str, Any]) -> list[dict[str, Any]]:
    """A normalizer or pre-tokenizer as its list of single steps (a Sequence's members, flattened)."""
    if step.get("type") == "Sequence":
        return [s for member in step.get("pretokenizers", step.get("normalizers", [])) for s in _steps(member)]
    return [step]


def _word_local(step: dict[str, Any]) -> bool:
    kind = step.get("type")
    if kind == "ByteLevel" and not step.get("use_regex", True):
        return False
    if kind == "Metaspace" and not step.get("split", True):
        return False
    return kind in _WORD_LOCAL


def _cuttable(tokenizer) -> bool:
    """Whether a text cut at a space keeps, in the tokens before the cut, the tokens the whole text has there."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or getattr(tokenizer, "truncation_side", "right") != "right" or backend.pre_tokenizer is None:
        return False  # a slow tokenizer, truncation that keeps the end, or no words at all (the text is one piece)
    if any(" " in token for token in tokenizer.get_added_vocab()):
        return False  # an added token is matched in the raw text, and one with a space could span the cut
    pre = _steps(json.loads(backend.pre_tokenizer.__getstate__()))
    norm = _steps(json.loads(backend.normalizer.__getstate__())) if backend.normalizer is not None else []
    return all(_word_local(step) for step in pre + norm) and any(step.get("type") in _SPACE_SPLITTING for step in pre)


def _cut_long(tokenizer, texts: Sequence[str], max_length: int) -> dict[int, str]:
    """{i: the start of text i} for texts that tokenize to more than max_length tokens within their first
    CUT_CHARS_PER_TOKEN * max_length characters: their truncated encoding is that start's, and they are truncated.
    The cut falls before a space that follows a word, so every word before it, and the whitespace between them, is
    read as in the whole text: the start's tokens are the first tokens of the whole text's."""
    budget = CUT_CHARS_PER_TOKEN * max_length
    long = [i for i, t in enumerate(texts) if len(t) > budget]
    if not long or not _cuttable(tokenizer):
        return {}
    starts = {}
    for i in long:
        text = texts[i]
        cut = text.rfind(" ", 0, budget)
        while cut > 0 and text[cut - 1].isspace():  # the start ends in a word: a run of whitespace cut in two (ByteLevel
            cut = text.rfind(" ", 0, cut)           # reads "\n " and "\n  " as different pieces) would end it otherwise
        if cut > 0:
            starts[i] = text[:cut]
    if not starts:
        return {}
    lengths = tokenizer(list(starts.values()), truncation=False, return_length=True, verbose=False)["length"]
    # More than max_length tokens before the cut: the whole text has them too, the same ones first. Fewer (a text of
    # very long words, or none at all) and the text is read whole.
    return {i: start for (i, start), n in zip(starts.items(), lengths) if n > max_length}


def encode(tokenizer, texts: Sequence[str], pairs: Sequence[str] | None = None, labels: Sequence[int] | None = None, max_length: int = 128,
           window_stride: int | None = None) -> Encoded:
    if window_stride is not None:
        if pairs is not None:
            raise UserError("sliding windows work on single texts; sentence pairs are truncated (set data.long_texts truncate)")
        return encode_windows(tokenizer, texts, labels, max_length, window_stride)
    # Pairs are truncated longest-first, which depends on both texts' whole lengths: they are read whole.
    cut = _cut_long(tokenizer, texts, max_length) if pairs is None else {}
    # Tokenize without truncation first would double the work; instead ask for overflow info cheaply:
    # a text is truncated exactly when its truncated encoding is max_length long and the full one is longer.
    enc = tokenizer([cut.get(i, t) for i, t in enumerate(texts)], list(pairs) if pairs is not None else None, truncation=True,
                    max_length=max_length, return_length=True)
    truncated = len(cut)
    full_needed = [i for i, n in enumerate(enc["length"]) if n >= max_length and i not in cut]
    if full_needed:
        sub_t = [texts[i] for i in full_needed]
        sub_p = [pairs[i] for i in full_needed] if pairs is not None else None
        full = tokenizer(sub_t, sub_p, truncation=False, return_length=True, verbose=False)
        truncated += sum(1 for n in full["length"] if n > max_length)
    return Encoded(
        input_ids=enc["input_ids"],
        token_type_ids=enc.get("token_type_ids"),
        labels=list(labels) if labels is not None else None,
        truncated=truncated,
    )


def encode_windows(tokenizer, texts: Sequence[str], labels: Sequence[int] | None, max_length: int, stride: int) -> Encoded:
    """Every text as windows of at most max_length tokens (special tokens included), consecutive windows sharing `stride` tokens.

    A text that fits is one window, identical to its truncation-mode encoding, so short texts are
    classified the same way in both modes.
    """
    enc = tokenizer(list(texts), truncation=True, max_length=max_length, stride=stride, return_overflowing_tokens=True)
    doc_ids = list(enc["overflow_to_sample_mapping"])
    counts = torch.bincount(torch.tensor(doc_ids, dtype=torch.long), minlength=len(texts))
    return Encoded(
        input_ids=enc["input_ids"],
        token_type_ids=enc.get("token_type_ids"),
        labels=[labels[d] for d in doc_ids] if labels is not None else None,
        truncated=0,
        doc_ids=doc_ids,
        windowed=int((counts > 1).sum()),
    )


def label_targets(values: Sequence[Any], label2id: dict[str, int]) -> list[int] | list[list[int]]:
    """Class ids; for multi-label frames (whose labels are tuples, see clean_split) multi-hot 0/1 lists in id order."""
    values = list(values)
    if values and isinstance(values[0], tuple):
        hot = []
        for row in values:
            v = [0] * len(label2id)
            for name in row:
                v[label2id[name]] = 1
            hot.append(v)
        return hot
    return [label2id[x] for x in values]


def encode_split(tokenizer, df: pd.DataFrame, label2id: dict[str, int] | None, max_length: int, window_stride: int | None = None) -> Encoded:
    labels = label_targets(df["label"], label2id) if label2id is not None and "label" in df else None
    pairs = df["text_pair"].tolist() if "text_pair" in df else None
    return encode(tokenizer, df["text"].tolist(), pairs, labels, max_length, window_stride)


UNKNOWN_SHARE = 0.01
"""The share of a split's tokens that are the tokenizer's unknown token above which training says so."""


def unknown_tokens_note(tokenizer, texts: Sequence[str], enc: Encoded, model_name: str) -> str | None:
    """A note when the tokenizer reads more than UNKNOWN_SHARE of the training tokens as its unknown token (emoji, or
    characters of scripts an English vocabulary lacks): those pieces reach the model as one and the same token, and no
    training teaches it to tell them apart. Names a few of the pieces, the most frequent first."""
    unk = tokenizer.unk_token_id
    # A tokenizer whose unknown token doubles as a special one (GPT-2's <|endoftext|>) would count every text's own.
    specials = {getattr(tokenizer, f"{k}_token_id", None) for k in ("cls", "sep", "bos", "eos", "pad")}
    total = sum(len(row) for row in enc.input_ids)
    if unk is None or unk in specials or not total:
        return None
    unknown = sum(row.count(unk) for row in enc.input_ids)
    if unknown <= UNKNOWN_SHARE * total:
        return None
    pieces: Counter = Counter()
    if tokenizer.is_fast:  # the offsets say which characters each [UNK] stands for
        docs: dict[int, None] = {}  # distinct texts: in window mode many rows are windows of one text
        for i, row in enumerate(enc.input_ids):
            if unk in row:
                docs[enc.doc_ids[i] if enc.doc_ids is not None else i] = None
                if len(docs) == 200:  # enough to name the common ones, in a moment
                    break
        for d in docs:
            text = texts[d][:5000]
            out = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
            pieces.update(text[a:b][:20] for t, (a, b) in zip(out["input_ids"], out["offset_mapping"]) if t == unk and b > a)
    shown = ", ".join(f"'{w}'" for w, _ in pieces.most_common(5))
    return (f"note: {100 * unknown / total:.1f}% of the training tokens are {tokenizer.unk_token}, which {model_name}'s tokenizer "
            f"gives every piece it does not know{f' (such as {shown})' if shown else ''}: the model reads them all as one "
            "token. A model whose vocabulary covers this text (a multilingual one, for other scripts) reads them")


def window_stride(cfg: DataConfig) -> int | None:
    """The stride encode() takes: None in truncate mode."""
    return cfg.window_stride if cfg.long_texts == "window" else None


def balanced_sample(labels: Sequence[int], generator: torch.Generator) -> list[int]:
    """len(labels) example indices drawn with replacement so that every class is drawn equally often on average.

    Rare classes are repeated and common ones subsampled within an epoch; the epoch keeps its length, so
    the number of optimizer steps (and the schedule) is the same as with the random sampler.
    """
    y = torch.as_tensor(labels)
    counts = torch.bincount(y).double()
    weights = (1.0 / counts)[y]
    return torch.multinomial(weights, len(y), replacement=True, generator=generator).tolist()


def train_batches(lengths: Sequence[int], batch_size: int, generator: torch.Generator, pool: int = 64,
                  sample: Sequence[int] | None = None) -> list[list[int]]:
    """Length-grouped random batches: shuffle, sort within pools of `pool` batches, shuffle batch order.

    Batches hold texts of similar length (little padding) while the order stays random. The
    generator alone decides the order, so a seed (and an epoch number) reproduce it exactly.
    `sample` (from balanced_sample) replaces "every example once" by the drawn indices.
    """
    order = torch.randperm(len(lengths), generator=generator).tolist()
    if sample is not None:
        order = [sample[i] for i in order]
    chunk = batch_size * pool
    batches = []
    for start in range(0, len(order), chunk):
        block = sorted(order[start : start + chunk], key=lambda i: lengths[i], reverse=True)
        batches.extend(block[j : j + batch_size] for j in range(0, len(block), batch_size))
    perm = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in perm]


def epoch_batches(lengths: Sequence[int], batch_size: int, seed: int, epoch: int,
                  balanced: Sequence[int] | None = None) -> list[list[int]]:
    """One epoch's batches (`train_batches`, from a sample drawn by `balanced_sample` over these class ids when
    given). The seed and the epoch number alone decide them, so a resumed run and lr-find see what training sees."""
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    sample = balanced_sample(balanced, generator) if balanced is not None else None
    return train_batches(lengths, batch_size, generator, sample=sample)


def eval_batches(lengths: Sequence[int], max_tokens: int = 8192, max_batch: int = 256) -> list[list[int]]:
    """Sorted by length, cut by a token budget: short texts go in big batches, long ones in small."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
    batches, cur = [], []
    for i in order:
        longest = lengths[cur[0]] if cur else lengths[i]
        if cur and (len(cur) + 1) * longest > max_tokens or len(cur) >= max_batch:
            batches.append(cur)
            cur = []
        cur.append(i)
    if cur:
        batches.append(cur)
    return batches


def collate(enc: Encoded, idx: Sequence[int], pad_id: int) -> dict[str, torch.Tensor]:
    """The rows `idx` padded to their longest: input_ids, attention_mask, [token_type_ids], [labels]."""
    packed = enc.packed()
    rows = np.asarray(idx, dtype=np.int64)
    lengths = packed["lengths"][rows]
    width = np.arange(lengths.max())
    mask = width < lengths[:, None]
    at = np.where(mask, packed["starts"][rows, None] + width, 0)  # each token's place in the flat arrays
    batch = {"input_ids": torch.from_numpy(np.where(mask, packed["input_ids"][at], pad_id).astype(np.int64)),
             "attention_mask": torch.from_numpy(mask.astype(np.int64))}
    if packed["token_type_ids"] is not None:
        batch["token_type_ids"] = torch.from_numpy(np.where(mask, packed["token_type_ids"][at], 0).astype(np.int64))
    if packed["labels"] is not None:
        batch["labels"] = torch.from_numpy(packed["labels"][rows])
    return batch


def iter_text_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """(line number from 0, text) for each non-blank line of a plain text file: blank lines are skipped."""
    p = Path(path)
    n = 0
    # Read as bytes, a line at a time, so that an error can name its line (a decoding text stream fails a whole
    # chunk), and so that UTF-16, which decodes as UTF-8 full of NULs, is caught instead of read as garbage.
    with p.open("rb") as fh:
        for i, raw in enumerate(fh):
            if i == 0 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8):]
            for part in raw.rstrip(b"\n").removesuffix(b"\r").split(b"\r"):  # \n, \r\n and a lone \r end a line, as in text mode
                if b"\0" in part:
                    raise UserError(f"{p}: line {n + 1} contains NUL bytes, so it looks binary (or UTF-16), not text; save it as UTF-8 text")
                try:
                    line = part.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise UserError(f"{p}: line {n + 1} of the file is not valid UTF-8 (byte {exc.start + 1} of that line); re-save the file as UTF-8") from None
                if line.strip():
                    yield n, line
                n += 1


def texts_from_file(path: str | Path, text_column: str = "text", pair_column: str | None = None,
                    text_columns: Sequence[str] | None = None, notes: list[str] | None = None) -> tuple[list[str], list[str] | None]:
    """Texts from a .txt (one per line) or any table format (its text column, or `text_columns` joined as training
    joined them), and the second texts from `pair_column` (None without it). A row without its text is refused, naming
    it. `notes`, when given, gets a line for blank lines or empty table rows read past (the rows after them move up)."""
    rows = texts_to_predict(path, text_column, pair_column, text_columns, notes)
    if rows.missing:
        raise UserError(rows.missing_message(1) + "; fill it or drop the row")
    return rows.texts, rows.pairs  # type: ignore[return-value]


@dataclass
class TextsToPredict:
    """What `predict --file` reads: each row's text (None where the row has none), its second text for a pair model,
    and the table itself (None for a .txt), whose columns `--out` passes through."""

    path: Path
    texts: list[str | None]
    pairs: list[str | None] | None
    table: pd.DataFrame | None
    where: str  # the column (or columns) the texts come from, as a message names them

    def records(self) -> list[dict[str, Any]] | None:
        """A JSON or Parquet file's rows as the file holds them, for --out (read again, so only when asked): pandas would
        make an id column with a gap in it floats (17.0) and give every row every key. None for a .txt, CSV or TSV."""
        return None if self.table is None else _records(self.path, len(self.table))

    @functools.cached_property
    def missing(self) -> list[int]:
        """Rows (0-based) without a text, or without a second text for a pair model."""
        return [i for i, t in enumerate(self.texts) if t is None or (self.pairs is not None and self.pairs[i] is None)]

    def missing_message(self, shown: int = 5) -> str:
        rows = self.missing
        listed = ", ".join(str(i + 1) for i in rows[:shown]) + (f" and {len(rows) - shown:,} more" if len(rows) > shown else "")
        return f"{self.path}: row{'s' if len(rows) > 1 else ''} {listed}: no text in {self.where}"


def texts_to_predict(path: str | Path, text_column: str = "text", pair_column: str | None = None,
                     text_columns: Sequence[str] | None = None, notes: list[str] | None = None) -> TextsToPredict:
    """Texts to predict from a .txt (one per line) or any table format (its text column, or `text_columns` joined as
    training joined them), and the second texts from `pair_column` for a model trained on text pairs. An empty or
    null cell reads as None, so that one blank cell need not stop a batch; a cell that holds no text (a number, bytes)
    is refused, since the column is then probably not the text. `notes`, when given, gets a line for blank lines or
    empty table rows read past (the rows after them move up), as `predict` says it."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise UserError(f"{p}: is a folder; give a .txt (one text per line) or a table file")
    if not p.is_file():
        raise missing_file(path)
    if p.suffix.lower() not in FILE_SUFFIXES:
        if pair_column is not None:
            raise UserError(f"{p}: the model reads text pairs, which a .txt file cannot hold; give a table file with the "
                            f"columns {text_columns_named(text_column, text_columns)} and '{pair_column}'")
        lines = list(iter_text_lines(p))
        if not lines:
            raise UserError(f"{p}: no text lines; one text per line")
        blank = lines[-1][0] + 1 - len(lines)  # those before the last text: the ones that shift the texts after them
        if notes is not None and blank:
            notes.append(f"note: {blank} blank line(s) skipped, so prediction i is for the i-th non-blank line, not line i")
        return TextsToPredict(p, [text for _, text in lines], None, None, "the line")
    df = read_table(p)
    if notes is not None and df.attrs.get("empty_rows"):
        notes.append(f"note: {df.attrs['empty_rows']} empty row(s) of {p} skipped, so prediction i is for the i-th non-empty row, "
                     "not row i")

    def column(name: str, flag: str) -> list[str | None]:
        if name not in df.columns:  # as train and embed suggest it: the column whose values look like texts
            raise missing_column(str(p), name, list(df.columns), flag, df, [c for c in (text_column, pair_column) if c])
        values: list[str | None] = []
        for i, t in enumerate(df[name].tolist(), start=1):
            if is_null(t) or (isinstance(t, str) and not t.strip()):
                values.append(None)
            elif isinstance(t, str):
                values.append(t)
            else:
                raise UserError(f"{p}: row {i}: column '{name}' holds {repr(t)[:40]} ({type(t).__name__}), not text; "
                                f"is '{name}' the text column? (name it with {flag})")
        return values

    if text_columns:  # for predict --file and the like, which no Python function with these keywords serves
        check_joined_columns(str(p), list(df.columns), text_columns)
        texts, where = joined_texts(df, text_columns, str(p), empty=None), f"the columns {', '.join(repr(c) for c in text_columns)}"
    else:
        texts, where = column(text_column, "--text-column"), f"column '{text_column}'"
    pairs = None if pair_column is None else column(pair_column, "--text-pair-column")
    if pairs is not None:
        where += f" or '{pair_column}'"
    rows = TextsToPredict(p, texts, pairs, df, where)
    if len(rows.missing) == len(texts):
        flag = "--text-pair-column" if pairs is not None and all(t is not None for t in texts) else "--text-column"
        raise UserError(f"{p}: no row has text in {where}; name the column with {flag}")
    return rows


def _records(p: Path, rows: int) -> list[dict[str, Any]] | None:
    """The rows of a JSON, JSON Lines or Parquet file as Python values, in the table's order (None for CSV and TSV,
    whose cells are strings in the table already, or where the count does not match the table's)."""
    suffix = p.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        records = pq.read_table(p).to_pylist()
    elif suffix in (".json", ".jsonl"):
        text = p.read_text(encoding="utf-8-sig")
        try:
            whole = json.loads(text) if suffix == ".json" else None
        except json.JSONDecodeError:
            whole = None  # JSON Lines in a .json file, as read_table reads it
        records = whole if isinstance(whole, list) else [json.loads(line) for line in text.split("\n") if line.strip()]
    else:
        return None
    return records if len(records) == rows and all(isinstance(r, dict) for r in records) else None


def unlabelled_texts(cfg: DataConfig) -> list[str]:
    """data.unlabelled's texts for the masked-LM stage: a .txt (one per line) or a table's text column (or text_columns)."""
    path = Path(cfg.unlabelled).expanduser()
    try:
        return texts_from_file(path, cfg.text_column, text_columns=cfg.text_columns)[0]
    except UserError as exc:
        # A table without the column: the training data's column name is the one asked for, not a flag of this file, so
        # the advice is about the file (read again only on this path; the usual one reads it once).
        if path.is_file() and path.suffix.lower() in FILE_SUFFIXES and not cfg.text_columns:
            columns = [str(c) for c in read_table(path).columns]
            if cfg.text_column not in columns:
                raise UserError(f"data.unlabelled {path}: no column '{cfg.text_column}' (data.text_column, as in the training data); "
                                f"its columns are {', '.join(columns[:10])}: rename its text column, or give a .txt, one text per line") from None
        raise UserError(f"data.unlabelled: {exc}") from None
