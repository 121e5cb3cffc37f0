"""The output folder: the contract every consumer relies on.

It is written into a temporary sibling folder and renamed into place only when
complete, so an interrupted save never leaves a folder that looks finished.
Weights are safetensors; everything else is JSON, PNG or Markdown.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, TextIO

from taskembed.errors import UserError, key_name, raise_write_error, setting


MODEL_MARKER = "training_config.json"
"""A file every model folder holds: --output.overwrite replaces a folder only if it has one (or is empty)."""


def check_export_folder(source: Any, out: Path, overwrite: bool, marker: str) -> None:
    """An export's destination, checked before any model loads: not the folder exported from (which --overwrite would
    otherwise be refused for as a folder of other files), and one the export may write or replace."""
    if isinstance(source, (str, Path)) and Path(source).expanduser().resolve() == Path(out).expanduser().resolve():
        raise UserError(f"{out} is the model folder itself; write the export to another folder")
    other = next((what for name, what in EXPORTS.items() if name != marker and (out / name).is_file()), None)
    if other and not (out / marker).is_file():  # taskembed wrote it, but as another format than this one
        raise UserError(f"{out} is {other}; --overwrite replaces only an export of the same format: choose another folder, "
                        "or delete this one first")
    check_replaceable(out, overwrite, marker, "", "--overwrite", "folder")
    check_writable(out, "folder")


EXPORTS = {"sentence_bert_config.json": "a sentence-transformers export", "taskembed_onnx.json": "an ONNX export"}
"""Each export format's record file (the marker check_export_folder is given), and how a message names the format."""


def check_replaceable(out: Path, overwrite: bool, marker: str, name: str, flag: str, other: str) -> None:
    """Refuse a path the output cannot take: a file, a folder with contents and no `flag`, or a folder with
    contents taskembed did not write (no `marker`), which overwriting would delete (a mistyped --output.dir ~)."""
    if out.is_symlink():
        raise UserError(f"{name}{out} is a symbolic link; give the folder it points to, or another path")
    if out.exists() and not out.is_dir():
        raise UserError(f"{name}{out} is a file; choose a folder path")
    if not out.is_dir() or not any(out.iterdir()):
        return
    # A folder of someone else's files first: the flag would not help there, so it is not offered.
    if not (out / marker).is_file():
        raise UserError(f"{name}{out} holds files taskembed did not write (no {marker}); {flag} replaces only a folder "
                        f"taskembed wrote: choose another {other} or empty this one")
    if not overwrite:
        raise UserError(f"{name}{out} already exists; pass {flag} or choose another {other}")


def check_writable(path: Path, what: str) -> None:
    """Before any work: the nearest existing path above `path` must be a folder this process can write in (folders
    missing below it are made when the output is written)."""
    probe = path.parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise UserError(f"{what} {path}: {probe} is a file, so nothing can be written under it; choose another {what}")
    if not os.access(probe, os.W_OK):
        raise UserError(f"{what} {path}: {probe} is not writable; choose another {what}")


def check_not_input(out: str | Path, source: str | Path | None, what: str = "--out") -> None:
    """Before any work: an output that is the input file would replace the user's data with what was read from it."""
    out, source = Path(out).expanduser(), Path(source).expanduser() if source is not None else None
    if source is not None and out.exists() and source.is_file() and os.path.samefile(out, source):
        raise UserError(f"{what} {out} is the input file {source}, which writing would replace; choose another {what}")


def files_written(folder: Path) -> list[str] | None:
    """The files training wrote into a model folder (run.json's `files`, paths relative to it); None for a folder whose
    run.json does not list them (an earlier taskembed's)."""
    try:
        written = json.loads((folder / "run.json").read_text(encoding="utf-8")).get("files")
    except (OSError, ValueError, AttributeError):
        return None
    return written if isinstance(written, list) and all(isinstance(f, str) for f in written) else None


def check_not_in_model(out: str | Path, what: str = "--out") -> None:
    """Before any work: a file written into a trained model's folder may not replace one that training wrote there
    (metrics.json, which the demo reads; the model card; the weights): an evaluation's metrics.json in its place would
    silently break the folder. run.json lists them; in a folder whose run.json does not, no existing file is replaced.
    A file of the user's own beside them (predictions.csv, written again) is allowed."""
    out = Path(out).expanduser()
    if not out.exists() or not (out.parent / MODEL_MARKER).is_file():
        return
    written = files_written(out.parent)
    if written is None or out.name in written:
        raise UserError(f"{what} {out} would replace {out.name}, which training wrote into the model folder {out.parent}; "
                        "write to a path outside the model folder")


def check_output_dir(out: Path, overwrite: bool) -> None:
    """Fail before training, not after an hour of it, when the output cannot be written."""
    check_replaceable(out, overwrite, MODEL_MARKER, "output.dir ", setting({"output.overwrite": True}), key_name("output.dir"))
    check_writable(out, "output.dir")


@contextmanager
def staged_folder(out: Path, overwrite: bool) -> Iterator[Path]:
    """Yield a temporary folder beside `out`; on success it replaces `out`, on failure it is removed.

    An empty `out` is simply taken; callers check with `check_replaceable` first what a full one may be."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        # Some writers use mkstemp (mode 0600); the folder is meant to be shared like any other output.
        umask = os.umask(0)
        os.umask(umask)
        for f in tmp.rglob("*"):
            f.chmod((0o777 if f.is_dir() else 0o666) & ~umask)
        if out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # an empty folder made beforehand (mkdir -p) is no conflict
        if out.exists():
            if not overwrite:
                raise UserError(f"output.dir {out} appeared while training; pass {setting({'output.overwrite': True})}")
            old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise_write_error(exc, out, tmp)


@contextmanager
def written_whole(path: Path, newline: str | None = None) -> Iterator[TextIO]:
    """A text file opened for writing that appears at `path` only when the block completes: on any error (a full
    disk, Ctrl-C) nothing is left, neither a half-written file nor its temporary."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    try:
        with tmp.open("w", encoding="utf-8", newline=newline) as fh:
            yield fh
        tmp.replace(path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        raise_write_error(exc, path, tmp)


def write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for pkg in ("taskembed", "torch", "transformers", "tokenizers", "safetensors", "scikit-learn", "numpy", "datasets"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def metrics_table(metrics: dict[str, Any], baselines: dict[str, Any] | None) -> str:
    """Markdown: one row per split and scorer, accuracy and macro-F1 in percent; a sentence when nothing was scored."""
    if not any(split in metrics for split in ("validation", "test")):  # a header with no rows says nothing
        return ("No validation or test split, so nothing was scored (data.validation_fraction or data.test_fraction carve one "
                "from train; data.validation or data.test give one).")
    rows = ["| split | model | accuracy | macro-F1 |", "| --- | --- | ---: | ---: |"]
    for split in ("validation", "test"):
        if split not in metrics:
            continue
        m = metrics[split]
        rows.append(f"| {split} | **fine-tuned** | **{100 * m['accuracy']:.2f}** | **{100 * m['macro_f1']:.2f}** |")
        for name, b in (baselines or {}).get(split, {}).items():
            label = {"majority": "majority class", "tfidf_logreg": "TF-IDF + logistic regression"}.get(name, name)
            if b.get("tied"):  # no one most common class: the mean of answering each of the tied ones
                label += f" ({b['tied']} tied for most common: their mean)"
            if b.get("features"):  # texts without words: the baseline read characters (metrics.CHARACTER_FEATURES)
                label += " (character n-grams)"
            rows.append(f"| {split} | {label} | {100 * b['accuracy']:.2f} | {100 * b['macro_f1']:.2f} |")
    return "\n".join(rows)


def _calibration_section(cal: dict[str, Any] | None, skipped: str | None = None) -> str:
    if skipped:
        return f"### Calibration\n\nNot calibrated: {skipped}.\n\n"
    if not cal:
        return ""
    rows = "\n".join(f"| {split} | {100 * v['ece_before']:.2f} | {100 * v['ece_after']:.2f} |" for split, v in cal["splits"].items())
    return f"""### Calibration

Temperature scaling fitted on validation: T = {cal['temperature']:.3f} (`calibration.json`). It never changes the
predicted label; `taskembed predict` reports the calibrated scores beside the raw ones.

| split | ECE raw (%) | ECE calibrated (%) |
| --- | ---: | ---: |
{rows}

"""


def multi_label_table(metrics: dict[str, Any]) -> str:
    """Markdown: subset accuracy, micro- and macro-F1 per split at the fixed 0.5 and at the tuned thresholds, in percent."""
    rows = ["| split | thresholds | subset accuracy | micro-F1 | macro-F1 |", "| --- | --- | ---: | ---: | ---: |"]
    for split in ("validation", "test"):
        if split not in metrics:
            continue
        m = metrics[split]
        fixed = m["at_0.5"]
        rows.append(f"| {split} | 0.5 | {100 * fixed['accuracy']:.2f} | {100 * fixed['micro_f1']:.2f} | {100 * fixed['macro_f1']:.2f} |")
        name = "tuned" if m.get("thresholds_tuned") else "0.5 (none tuned)"
        rows.append(f"| {split} | **{name}** | **{100 * m['accuracy']:.2f}** | **{100 * m['micro_f1']:.2f}** | **{100 * m['macro_f1']:.2f}** |")
    return "\n".join(rows)


def _multi_label_section(info: dict[str, Any]) -> str:
    if not info.get("multi_label"):
        return ""
    th = info.get("thresholds")
    if th:
        how = (f"tuned per label on the validation split to maximise that label's F1 (grid {th['grid']['start']:g} to "
               f"{th['grid']['stop']:g} in steps of {th['grid']['step']:g}; ties go to the value closest to 0.5, and a label with "
               f"fewer than {th.get('min_positives', 1)} validation positives keeps 0.5), saved in `thresholds.json`")
        rows = "\n".join(f"| {name} | {v['threshold']:.2f} | {100 * v['validation_f1_at_0.5']:.1f} | {100 * v['validation_f1_tuned']:.1f} "
                         f"| {v['validation_positives']} |" for name, v in th["labels"].items())
        table = f"""
| label | threshold | validation F1 at 0.5 | validation F1 tuned | validation positives |
| --- | ---: | ---: | ---: | ---: |
{rows}
"""
    else:
        how, table = "0.5 for every label (there was no validation split to tune them on)", ""
    skipped = info.get("skipped") or {}
    skip = "".join(f"\n- {name}: {reason}" for name, reason in skipped.items())
    return f"""### Multi-label

Each label has its own sigmoid, and a label is predicted when its probability reaches its threshold:
{how}. "accuracy" above is subset accuracy (the predicted set equals the true set of labels).
Scores at the fixed 0.5 and at the thresholds the folder predicts with:

{multi_label_table(info['metrics'])}
{table}
`pipeline("text-classification", model=..., top_k=None)` returns the same sigmoid scores; apply the thresholds
from `thresholds.json` to turn them into label sets (`taskembed predict` does).
{f"{chr(10)}Not written for multi-label:{skip}{chr(10)}" if skip else ""}
"""


def md_cell(value: Any) -> str:
    """A value as one Markdown table cell: a | escaped (a label 'billing|refund' shifted every figure after it into
    the wrong column) and line breaks as spaces (a text's own ended the table at its row)."""
    return " ".join(str(value).split()).replace("|", "\\|")


def _errors_section(errors: dict[str, Any] | None) -> str:
    if not errors or not errors["confused_pairs"]:
        return ""
    pairs = "\n".join(f"| {md_cell(p['true'])} | {md_cell(p['predicted'])} | {p['count']} |" for p in errors["confused_pairs"][:5])
    worst = "\n".join(
        f"| {md_cell(e['text'][:120])} | {md_cell(e['label'])} ({100 * e['p_label']:.0f}%) | {md_cell(e['predicted'])} ({100 * e['p_predicted']:.0f}%) |"
        for e in errors["top_loss"][:5]
    )
    return f"""### Errors ({errors['split']})

| true | predicted | count |
| --- | --- | ---: |
{pairs}

The mistakes with the highest loss, where the true label got the least probability (all in `metrics.json`):

| text | label | predicted |
| --- | --- | --- |
{worst}

"""


def _per_split(counts: dict[str, int]) -> str:
    """'3 of train, 0 of validation, 1 of test': a count per split, in the splits' order."""
    return ", ".join(f"{counts[s]:,} of {s}" for s in ("train", "validation", "test") if s in counts)


def _use_section(data: dict[str, Any]) -> str:
    """How to predict with the folder, for the way it was trained: a pair model takes pairs, and `pipeline` reads a
    long text as training did only when asked to truncate (a windowed model's windows it cannot read at all)."""
    n = data["max_length"]
    if data.get("text_pair_column"):
        call = f'clf({{"text": "first text", "text_pair": "second text"}}, truncation=True, max_length={n})'
        cli = (f"taskembed predict path/to/this/folder --file pairs.csv   "
               f"# columns '{data.get('text_column', 'text')}' and '{data['text_pair_column']}'")
    else:
        call = f'clf("some text", truncation=True, max_length={n})'
        cli = 'taskembed predict path/to/this/folder "some text"'
    if data.get("long_texts") == "window":
        why = (f"This model was trained on windows of {n} tokens overlapping by {data['window_stride']}, with their logits "
               f"aggregated ({data['window_aggregate']}). `pipeline` reads only the first {n} tokens of a longer text, so "
               "for such texts its scores differ from `taskembed predict`'s, which reads every window as training did.")
    else:
        why = (f"Training read texts up to {n} tokens; `truncation=True, max_length={n}` has `pipeline` do the same "
               "(it does not truncate unless asked), so its scores are taskembed's.")
    if data.get("text_columns"):
        cols = data["text_columns"]
        why += (f" Its text is the columns {', '.join(f'`{c}`' for c in cols)} joined with a space, empty ones left out: give "
                "`pipeline` the texts joined that way; `taskembed predict --file` reads a table file's columns and joins them.")
        cli = ("taskembed predict path/to/this/folder --file table.csv   # columns " + ", ".join(f"'{c}'" for c in cols)
               + (f" and '{data['text_pair_column']}'" if data.get("text_pair_column") else ""))
    return f"""```python
from transformers import pipeline
clf = pipeline("text-classification", model="path/to/this/folder")
{call}
```

{why}

```bash
{cli}
```
"""


def _mlm_clause(mlm: dict[str, Any] | None) -> str:
    """The masked-LM stage (train.mlm_epochs), which ran before training and is not in its time."""
    if not mlm:
        return ""
    if "seconds" not in mlm:  # a resumed run: the stage ran in the run that wrote the checkpoint
        return f", after a masked-LM stage of {mlm['epochs']:g} epoch(s) in the run this one resumed"
    return f", after a masked-LM stage of {mlm['epochs']:g} epoch(s) over {mlm['texts']:,} texts in {mlm['seconds']:.0f} s"


def _base_model_line(name: str) -> str:
    """The card header's base_model: a Hub id only. A local folder's path there is refused by the Hub's metadata check
    when the folder is pushed, and would mean nothing to a reader elsewhere."""
    local = name.startswith((".", "/", "~")) or Path(name).expanduser().exists()
    return "" if local else f"base_model: {name}\n"


def model_card(info: dict[str, Any]) -> str:
    cfg = info["config"]
    metrics = info["metrics"]
    split = "test" if "test" in metrics else "validation"
    # A run without validation or test split has no scores to show, only the plan and the files.
    per_class = metrics[split]["per_class"] if split in metrics else {}
    from taskembed.metrics import per_class_cells

    pc_rows = "\n".join(f"| {md_cell(name)} | {per_class_cells(v)} |" for name, v in per_class.items())
    per_class_section = f"""### Per class ({split})

| label | precision | recall | F1 | support |
| --- | ---: | ---: | ---: | ---: |
{pc_rows}
""" if per_class else "No validation or test split, so no scores.\n"
    if data_windowed := info["data"].get("windowed"):
        long_texts = (f"Texts longer than {cfg['data']['max_length']} tokens were cut into windows overlapping by "
                      f"{cfg['data']['window_stride']} tokens, whose logits are aggregated ({cfg['data']['window_aggregate']}): "
                      + _per_split(data_windowed) + ".")
    else:
        long_texts = (f"Texts longer than {cfg['data']['max_length']} tokens were truncated: "
                      + _per_split(info["data"]["truncated"]) + ".")
    plan_rows = "\n".join(
        f"| {g['name']} | {g['n_params']:,} | {format(g['lr'], '.3g') if g['trainable'] else 'frozen'} |" for g in info["plan"]["groups"]
    )
    data = info["data"]
    sizes = ", ".join(f"{s} {v['rows']:,}" for s, v in data["summary"].items())
    if (sampled := data.get("train_sampled") or {}).get("kept"):  # scores of a model trained on part of the data should say so
        sizes += (f"; data.max_train_samples kept a seeded sample of {sampled['kept']:,} of the {sampled['from']:,} training examples "
                  "(before any split was carved from them)")
    if cfg["data"].get("max_train_per_label") is not None:
        sizes += f"; data.max_train_per_label kept at most {cfg['data']['max_train_per_label']:,} training examples per label"
    plots = "\n".join(f"![{p}]({p})" for p in info["plots"])
    scaled = ("" if cfg["train"].get("lr_scaling", "none") == "none"
              else f"; every rate scaled with the batch ({cfg['train']['lr_scaling']}), the rates trained with are in the plan below")
    best = (f"Best validation {cfg['train']['metric']} at optimizer step {info['best_step']}; "
            if info["metrics"].get("validation") else "No validation split, so the final weights are kept; ")
    if info.get("stopped_early"):
        best += f"stopped early at step {info['last_step']} (train.early_stopping_patience), the best weights kept; "
    return f"""---
library_name: transformers
pipeline_tag: text-classification
{_base_model_line(cfg['model']['name'])}tags: [taskembed, text-classification]
---

# {Path(cfg['output']['dir']).name}

A text classifier fine-tuned with [taskembed](https://pypi.org/project/taskembed/) from
`{cfg['model']['name']}` on `{cfg['data']['source']}`{f" (configuration `{cfg['data']['subset']}`)" if cfg['data'].get('subset') else ""} ({sizes}), with discriminative
learning rates (top {cfg['train']['lr']:g}, layer decay {cfg['train']['layer_decay']:g}, head {cfg['train']['head_lr']:g}{scaled}).
Labels: {', '.join(f'`{x}`' for x in info['labels'])}.

## Results

{metrics_table(metrics, info.get('baselines'))}

{best}training took {info['train_seconds']:.0f} s on {info['device']}{_mlm_clause(info.get('mlm'))}. {long_texts}

{per_class_section}
{_multi_label_section(info)}{_calibration_section(info.get("calibration"), (info.get("skipped") or {}).get("calibration"))}{_errors_section(info.get("errors"))}
{plots}

## Learning-rate plan

| group | parameters | rate |
| --- | ---: | ---: |
{plan_rows}

## Use

{_use_section(cfg['data'])}
Files: `training_config.json` (the resolved config), `lr_plan.json`, `metrics.json`, `run.json`
(versions, seed, data fingerprint), `log.jsonl` (training log). Weights are safetensors only.
"""


def save(out: Path, overwrite: bool, model, tokenizer, info: dict[str, Any], log: list[dict[str, Any]],
         extra: Callable[[Path], str | None] | None = None) -> Path:
    """Write the complete folder atomically and return its path.

    `extra(folder)` may add files before the rename and returns Markdown for the model card.
    """
    from taskembed.metrics import plot_confusion, plot_curves

    save_started = time.perf_counter()
    check_output_dir(out, overwrite)  # again: the folder may have changed while training
    with staged_folder(out, overwrite) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        write_json(tmp / "training_config.json", info["config"])
        write_json(tmp / "lr_plan.json", info["plan"])
        write_json(tmp / "metrics.json", {"validation": info["metrics"].get("validation"), "test": info["metrics"].get("test"),
                                           "baselines": info.get("baselines"), "best_step": info["best_step"],
                                           "errors": info.get("errors")})
        if info.get("thresholds"):
            from taskembed.metrics import THRESHOLDS_FILE

            write_json(tmp / THRESHOLDS_FILE, info["thresholds"])
        if info.get("calibration"):
            from taskembed.calibration import CALIBRATION_FILE, plot_reliability

            write_json(tmp / CALIBRATION_FILE, info["calibration"])
            split = "test" if "test" in info["calibration"]["splits"] else "validation"
            plot_reliability(info["calibration"], split, tmp / "reliability.png")
        with (tmp / "log.jsonl").open("w", encoding="utf-8") as fh:
            for entry in log:
                fh.write(json.dumps(entry) + "\n")
        plots = []
        for split in ("validation", "test"):
            if "confusion_matrix" in (info["metrics"].get(split) or {}):  # single-label only
                name = f"confusion_matrix_{split}.png"
                plot_confusion(info["metrics"][split]["confusion_matrix"], info["labels"], tmp / name, f"confusion matrix ({split})")
                plots.append(name)
        if log:
            plot_curves(log, tmp / "learning_curves.png", info["config"]["train"]["metric"])
            plots.append("learning_curves.png")
        if info.get("calibration"):
            plots.append("reliability.png")
        info = {**info, "plots": plots}
        card = model_card(info)
        report_started = time.perf_counter()
        if extra is not None:
            section = extra(tmp)
            if section:
                card += "\n" + section  # a Markdown section, its heading included
        # Written last, so that its times cover the whole run: the weights, the plots and the embedding report (which
        # with many labels takes seconds) are part of what the user waited for.
        run = {k: info[k] for k in ("versions", "seed", "data", "device", "bf16", "fp16", "trim_top_layer", "fast_dropout",
                                    "token_rows_trained", "cuda_graphs", "train_seconds", "eval_seconds", "samples_per_second",
                                    "tokens_per_second", "stopped_early", "world_size", "labels", "mlm")}
        run["report_seconds"] = time.perf_counter() - report_started if extra is not None else None
        run["total_seconds"] = info["total_seconds"] + (time.perf_counter() - save_started)
        # What training wrote, so that a later command's output beside them is told from one that would replace them.
        run["files"] = sorted({str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file()} | {"run.json", "README.md"})
        write_json(tmp / "run.json", run)
        (tmp / "README.md").write_text(card, encoding="utf-8")
    return out
