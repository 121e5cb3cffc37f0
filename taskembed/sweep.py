"""A grid of settings, each trained on several seeds, and the choice among them made on validation (`taskembed sweep`).

The Trainer's `hyperparameter_search` and SetFit's Optuna search sample a space and rank single runs. On a few
thousand examples the seed alone moves test accuracy by about a point (docs/benchmarks.md, docs/ablations.md), as
much as the settings a search compares, so a ranking of single runs is mostly a ranking of seeds. A sweep here is a
small explicit grid with every setting trained on the same seeds, ranked by its mean validation metric (the config's
`train.metric`) with the spread beside it. Test scores are reported and never choose.

Every trial is an ordinary training run into `<output.dir>/<setting>-seed<S>`. `sweep.json` is written after each
trial, so a sweep that is stopped (Ctrl-C checkpoints the trial in flight) continues where it stopped when run again:
finished trials are read back, not trained again, and the interrupted one resumes from its checkpoint.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import shutil
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from taskembed.artifacts import MODEL_MARKER
from taskembed.builtin import BUILTIN_NAMES
from taskembed.checkpoint import folder_for
from taskembed.config import SECTIONS, Config, _hints, _resolve_key, _suggest, as_config, config_from_dict, parse_overrides
from taskembed.data import load_splits
from taskembed.errors import UserError
from taskembed.progress import seconds_text

SAME_VALIDATION = {"max_length", "long_texts", "window_stride", "window_aggregate", "max_train_per_label", "threshold_min_positives"}
"""The data options a grid may vary: they leave the validation examples as they are (the few-shot draw comes after the carving)."""

DRAWS = {"split_seed", "max_train_samples"}
"""Data options that change only which examples train where validation is the data's own, not carved from train."""

SWEEP_JSON = "sweep.json"
SWEEP_MD = "sweep.md"
KEEP = ("best", "all", "none")


def parse_grid(specs: Sequence[str]) -> dict[str, list[Any]]:
    """`["train.lr=1e-4,3e-4", "train.epochs=2,3"]` -> {"train.lr": [1e-4, 3e-4], "train.epochs": [2, 3]}; each value is
    read as a command-line override is (a YAML scalar)."""
    grid: dict[str, list[Any]] = {}
    for spec in specs:
        key, sep, values = spec.partition("=")
        key = key.strip().removeprefix("--")
        if not sep or not key or not values.strip():
            raise UserError(f"--grid {spec!r}: write KEY=VALUE,VALUE (for example --grid train.lr=1e-4,3e-4)")
        if key in grid:
            raise UserError(f"--grid names {key} twice; give all its values in one --grid {key}=A,B")
        parsed = [parse_overrides([f"--{key}", v.strip()])[key.replace("-", "_")] for v in values.split(",")]
        if len(set(map(repr, parsed))) < len(parsed):
            raise UserError(f"--grid {key}: a value is given twice ({values})")
        grid[key] = parsed
    if not grid:
        raise UserError("a sweep needs at least one --grid KEY=VALUE,VALUE")
    return grid


def _name(setting: dict[str, Any], seed: int) -> str:
    """A trial's folder: its setting and seed, readable (`lr=0.0003-epochs=2-seed0`), safe as a file name."""
    parts = [f"{key.rsplit('.', 1)[-1]}={value}" for key, value in setting.items()]
    return re.sub(r"[^A-Za-z0-9=._+-]", "_", "-".join(parts + [f"seed{seed}"]))


@dataclass
class Trial:
    setting: dict[str, Any]
    seed: int
    folder: str
    config: dict[str, Any]  # the trial's resolved config: a rerun reuses a record only for the same one ...
    data_fingerprint: str | None = None  # ... and the same data: the config names the files, not what is in them
    validation: dict[str, float] | None = None
    test: dict[str, float] | None = None
    train_seconds: float | None = None


def _scores(split: dict[str, Any] | None) -> dict[str, float] | None:
    return None if not split else {k: float(split[k]) for k in ("accuracy", "macro_f1", "loss") if k in split}


def _mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def rank(trials: list[Trial], metric: str) -> list[dict[str, Any]]:
    """One row per setting, best first by its mean validation metric over its seeds (loss: lowest first)."""
    groups: dict[str, list[Trial]] = {}
    for t in trials:
        groups.setdefault(json.dumps(t.setting, sort_keys=True, default=str), []).append(t)
    rows = []
    for group in groups.values():
        val = [t.validation[metric] for t in group]
        row = {"setting": group[0].setting, "seeds": [t.seed for t in group], "validation": _mean_sd(val),
               "train_seconds": statistics.fmean(t.train_seconds or 0.0 for t in group)}
        tests = [t.test["accuracy"] for t in group if t.test]
        if len(tests) == len(group):
            row["test_accuracy"] = _mean_sd(tests)
        best = (min if metric == "loss" else max)(group, key=lambda t: t.validation[metric])
        row["best_trial"] = best.folder
        rows.append(row)
    return sorted(rows, key=lambda r: r["validation"][0], reverse=metric != "loss")


def ranking_notes(result: dict[str, Any]) -> list[str]:
    """What the ranking cannot say: a tie at the top (the first in grid order is named best), a single seed."""
    ranking, metric = result["ranking"], result["metric"]
    notes = []
    tied = [r for r in ranking[1:] if r["validation"][0] == ranking[0]["validation"][0]]
    if tied:
        notes.append(f"{len(tied) + 1} settings tie at the top on mean validation {metric}; the first in grid order is named best, "
                     "and the data cannot tell them apart (more validation data, or more seeds, might)")
    if len(result["seeds"]) == 1 and len(ranking) > 1:
        notes.append(f"one seed: this ranks single runs, and a seed alone moves validation {metric} about as much as nearby "
                     "settings do; --seeds 0,1,2 ranks the settings by their means")
    return notes


def report_markdown(result: dict[str, Any]) -> str:
    metric, scale = result["metric"], (1.0 if result["metric"] == "loss" else 100.0)
    places = 4 if metric == "loss" else 2  # a loss of 0.24 and one of 0.2441 would look alike
    keys = list(result["grid"])
    lines = [f"Sweep over {', '.join(keys)}; seeds {', '.join(map(str, result['seeds']))}; ranked by mean validation {metric}"
             f" ({'lowest' if metric == 'loss' else 'highest'} first). Test scores are shown, never used to choose.", "",
             "| " + " | ".join(keys) + f" | validation {metric} | test accuracy | train s |",
             "| " + " | ".join("---" for _ in keys) + " | ---: | ---: | ---: |"]
    one = len(result["seeds"]) == 1  # one seed has no spread to show: "± 0.00" would claim one

    def shown(pair, scale: float, places: int) -> str:
        return f"{scale * pair[0]:.{places}f}" + ("" if one else f" ± {scale * pair[1]:.{places}f}")

    for row in result["ranking"]:
        val = shown(row["validation"], scale, places)
        test = shown(row["test_accuracy"], 100.0, 2) if "test_accuracy" in row else "n/a"
        lines.append("| " + " | ".join(str(row["setting"][k]) for k in keys) + f" | {val} | {test} | {seconds_text(row['train_seconds'])} |")
    notes = ranking_notes(result)
    return "\n".join(lines + ([""] + [f"Note: {n}." for n in notes] if notes else [])) + "\n"


def sweep(config: Config | dict[str, Any] | str | Path | None = None, overrides: dict[str, Any] | None = None, *, grid: dict[str, list[Any]],
          seeds: Sequence[int] = (0, 1, 2), keep: str = "best", progress: bool = False,
          echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Train every combination of `grid`'s values on every seed into `<output.dir>/`, rank the combinations by mean
    validation metric, and write sweep.json and sweep.md there. `keep`: which trial folders stay afterwards (best: the
    best seed of the best setting; all; none). Returns what sweep.json holds."""
    from taskembed import api

    if keep not in KEEP:
        raise UserError(f"keep must be one of {', '.join(KEEP)} (got {keep!r})")
    seeds = list(seeds)
    if not seeds or len(set(seeds)) < len(seeds):
        raise UserError(f"seeds must be distinct and at least one (got {seeds})")
    base = as_config(config, overrides)
    where: dict[str, tuple[str, str]] = {}  # each grid key's section and option (`epochs` is train.epochs)
    # A validation split of the data's own (a built-in dataset's, or data.validation's file) is not carved, so the seed
    # of the carving and the sample before it only change which examples train: several few-shot draws, for one.
    # (data.max_eval_samples samples validation with data.split_seed too.)
    own_validation = (base.data.validation is not None or base.data.source in BUILTIN_NAMES) and base.data.max_eval_samples is None
    allowed = SAME_VALIDATION | (DRAWS if own_validation else set())
    for key in grid:
        problems: list[str] = []
        found = _resolve_key(key.replace("-", "_"), problems)
        if found is not None and found[1] not in _hints(SECTIONS[found[0]]):
            problems.append(f"unknown key '{found[0]}.{found[1]}'{_suggest(found[1], _hints(SECTIONS[found[0]]), found[0])}")
            found = None
        if found is None:
            raise UserError(f"--grid {key}: {problems[0]}")
        if found in (("train", "seed"), ("output", "dir")):
            raise UserError(f"--grid {key}: the sweep sets it for each trial ({'--seeds' if found[1] == 'seed' else '--output.dir names the sweep folder'})")
        if found[0] == "data" and found[1] not in allowed:
            # Validation is what ranks the settings: each must be scored on the same examples.
            also = "" if own_validation else f"; {' and '.join(sorted(DRAWS))} too where validation is the data's own (data.validation, or a built-in dataset's)"
            raise UserError(f"--grid {key}: it changes which examples validate, so the settings would be scored on different data; "
                            f"run one sweep per value (the data options a grid may vary: {', '.join(sorted(allowed))}{also})")
        where[key] = found
    root = Path(base.output.dir)
    if root.is_file():
        raise UserError(f"output.dir {root} is a file; a sweep writes a folder of trials there")
    if (root / MODEL_MARKER).is_file():
        raise UserError(f"output.dir {root} is a trained model's folder; a sweep writes a folder of trials: choose another --output.dir")
    # Every trial's config is built and checked first: a value that cannot work fails now, not after hours of trials.
    trials: list[Trial] = []
    configs: dict[str, Config] = {}
    for values in itertools.product(*grid.values()):
        # The values as the config reads them (1e-4 written on the command line is the number 0.0001).
        resolved = config_from_dict(base.to_dict(), dict(zip(grid, values)), where="--grid")  # a bad value is named as the grid's
        setting = {f"{s}.{n}": getattr(getattr(resolved, s), n) for s, n in where.values()}
        if any(t.setting == setting for t in trials):
            raise UserError(f"--grid gives the setting {', '.join(f'{k}={v}' for k, v in setting.items())} twice (one value written "
                            "two ways, as 0.001 and 1e-3); give each value once")
        for seed in seeds:
            folder = _name(setting, seed)
            if folder in configs:  # two values that only differ in characters a folder name cannot hold
                folder = f"{folder}-{hashlib.sha1(json.dumps(setting, sort_keys=True, default=str).encode()).hexdigest()[:8]}"
            # overwrite: a trial folder without a record of this sweep is a stale one (its checkpoint still resumes)
            configs[folder] = as_config(base, {**setting, "train.seed": seed, "output.dir": str(root / folder), "output.overwrite": True})
            trials.append(Trial(setting=setting, seed=seed, folder=folder, config=configs[folder].to_dict()))
    # The grid as the config reads it, for the record and the table: full keys, typed values, in the order given.
    grid = {f"{s}.{n}": list({repr(t.setting[f"{s}.{n}"]): t.setting[f"{s}.{n}"] for t in trials}.values()) for s, n in where.values()}
    # Read before any trial (every trial reads the same examples: SAME_VALIDATION): missing columns or splits fail now.
    # Each distinct data section is read once; its fingerprint tells a record of the same files edited since from one to reuse.
    fingerprints: dict[str, str] = {}
    for trial in trials:
        key = json.dumps(trial.config["data"], sort_keys=True, default=str)
        if key not in fingerprints:
            splits = load_splits(configs[trial.folder].data)
            if "validation" not in splits.frames:
                raise UserError("a sweep chooses on validation, and this data has none: set data.validation_fraction (e.g. 0.1) "
                                "or give data.validation")
            fingerprints[key] = splits.fingerprint()
        trial.data_fingerprint = fingerprints[key]
    done = _read_records(root / SWEEP_JSON)
    metric = base.train.metric
    echo(f"sweep: {len(trials) // len(seeds)} setting(s) x {len(seeds)} seed(s) = {len(trials)} trials into {root}/")
    said: set[str] = set()
    for i, trial in enumerate(trials, start=1):
        record = done.get(trial.folder)
        if record is not None and record.get("config") == trial.config:
            if record.get("data_fingerprint") == trial.data_fingerprint:
                trial.validation, trial.test, trial.train_seconds = record["validation"], record["test"], record["train_seconds"]
                echo(f"[{i}/{len(trials)}] {trial.folder}: done before, read back")
                continue
            why = "on other data (the files changed since)" if "data_fingerprint" in record else \
                "by an earlier taskembed, whose record does not say on which data"
            echo(f"  note: {trial.folder} was trained {why}; training it again")
        # Only the trial's notes reach the sweep's output; its full log is in its folder (log.jsonl). The notes before
        # training starts (about the data, which every trial reads) are said once; those after it are the trial's own
        # (a model that learnt nothing) and named with it.
        started = False

        def say(message: str) -> None:
            nonlocal started
            started = started or message.startswith(api.TRAINING_STARTS)
            if not message.startswith("note:"):
                return
            if started:
                echo(f"  {trial.folder}: {message}")
            elif message not in said:
                said.add(message)
                echo(f"  {message}")

        def run():
            return api.train(configs[trial.folder], progress=progress, resume="auto", echo=say)

        try:
            result = run()
        except UserError as exc:
            if not str(exc).startswith("cannot resume from "):
                raise
            # The checkpoint of an earlier sweep run with other settings (changed overrides): the sweep wrote it, so it
            # goes, and the trial starts afresh, instead of a refusal whose advice (--resume, overwrite) a sweep cannot take.
            echo(f"  note: {trial.folder} has a checkpoint of other settings ({str(exc).split(': ', 2)[-1][:200]}); training it afresh")
            shutil.rmtree(folder_for(root / trial.folder))
            result = run()
        trial.validation, trial.test = _scores(result.metrics.get("validation")), _scores(result.metrics.get("test"))
        trial.train_seconds = result.train_seconds
        val = trial.validation[metric]
        echo(f"[{i}/{len(trials)}] {trial.folder}: validation {metric} {val:.4f} ({seconds_text(result.train_seconds)} s)")
        done[trial.folder] = vars(trial).copy()
        _write(root, grid, seeds, metric, list(done.values()), None)
    ranking = rank(trials, metric)
    kept = {"best": {ranking[0]["best_trial"]}, "all": {t.folder for t in trials}, "none": set()}[keep]
    kept = {folder for folder in kept if (root / folder).is_dir()}  # a trial read back after an earlier --keep none has none
    for trial in trials:
        if trial.folder not in kept:
            shutil.rmtree(root / trial.folder, ignore_errors=True)
    # Model folders of an earlier sweep into the same folder, with values this grid lacks: sweep.md ranks none of them.
    ours = {t.folder for t in trials}
    stale = sorted(p.name for p in root.iterdir() if p.name not in ours and (p / MODEL_MARKER).is_file())
    if stale:
        echo(f"note: {root} also holds {', '.join(stale[:5])}{' ...' if len(stale) > 5 else ''}, trained by an earlier sweep with "
             "other values; this sweep's report does not rank them (move them away to keep the folder to this sweep)")
    return _write(root, grid, seeds, metric, [vars(t).copy() for t in trials], ranking, kept)


def _read_records(path: Path) -> dict[str, dict[str, Any]]:
    if not path.is_file():
        return {}
    try:
        return {t["folder"]: t for t in json.loads(path.read_text(encoding="utf-8"))["trials"]}
    except (ValueError, KeyError, TypeError):
        raise UserError(f"{path}: not a sweep record taskembed wrote; move it away to start the sweep afresh") from None


def _write(root: Path, grid: dict[str, list[Any]], seeds: list[int], metric: str, trials: list[dict[str, Any]],
           ranking: list[dict[str, Any]] | None, kept: set[str] | None = None) -> dict[str, Any]:
    from taskembed.artifacts import written_whole

    result = {"metric": metric, "grid": grid, "seeds": seeds, "trials": trials, "ranking": ranking,
              "kept": sorted(kept) if kept is not None else None}
    result["notes"] = ranking_notes(result) if ranking is not None else []
    root.mkdir(parents=True, exist_ok=True)
    with written_whole(root / SWEEP_JSON) as fh:
        json.dump(result, fh, indent=2, default=str)
    if ranking is not None:
        with written_whole(root / SWEEP_MD) as fh:
            fh.write(report_markdown(result))
    return result


def best_overrides(result: dict[str, Any]) -> list[str]:
    """The best setting as command-line overrides."""
    return [f"--{key}={as_arg(value)}" for key, value in result["ranking"][0]["setting"].items()]


def as_arg(value: Any) -> str:
    """A value as a command-line override reads it back (YAML: true and null, not Python's True and None)."""
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    return json.dumps(value) if isinstance(value, (dict, list)) else str(value)

