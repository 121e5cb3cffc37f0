"""`taskembed` console entry point. Each subcommand is a plain function that tests call directly.

User mistakes (UserError) print one line to stderr and exit with 2; bugs keep their traceback.
"""

from __future__ import annotations

import argparse
import csv
import errno
import json
import math
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any, Sequence

from taskembed.errors import FIXABLE_WRITE_ERRORS, UserError, command_line


# api.plan builds the model with two labels so that it reads no data; say so where the head's count would otherwise mislead.
PLAN_LABELS_NOTE = "head parameters counted for 2 labels (this data is not read before training); training sizes the head for the data's labels"


def cmd_train(config: str | None, overrides: Sequence[str] = (), dry_run: bool = False, progress: bool = True,
              resume: str | None = None) -> int:
    """Train; `resume` is None (start afresh), "latest" (continue the latest checkpoint) or "auto" (continue if there is one).

    SIGINT/SIGTERM finish the step in flight, write a checkpoint and exit with 130/143 and one line saying how to resume.
    """
    import shlex

    from taskembed import api
    from taskembed.config import config_changes, dump_config, load_config, parse_overrides, without_effect
    from taskembed.artifacts import metrics_table
    from taskembed.progress import seconds_text
    from taskembed.data import text_columns_named

    cfg = load_config(config, parse_overrides(list(overrides)))
    if dry_run:
        from taskembed import builtin
        from taskembed.data import check_paths, load_splits

        check_paths(cfg.data)  # a dry run that passes should not be followed by a run that fails at once
        from taskembed.loop import PRECISION_WORDS, autocast_dtype, training_device

        device = training_device(cfg.train.device)  # a GPU that is not there fails the check as it would fail training
        dtype = autocast_dtype(cfg.train, device)
        half = f", {PRECISION_WORDS[dtype]}" if dtype else ""
        if cfg.train.fp16 and device.type == "cpu":
            half += " (emulated on the CPU: slow)"
        # Data on this machine is read and checked as training reads it (columns, every row, the splits), and what
        # training says of it is said; a Hub dataset would be downloaded, which a dry run does not do.
        local = cfg.data.source in builtin.BUILTIN_NAMES or Path(cfg.data.source).expanduser().exists()
        if not local:
            from taskembed import hub
            from taskembed.data import near_builtin

            # With the Hub out of reach, training reads only the local cache: reading it costs no download, and what
            # training would refuse (nothing cached, a misspelt built-in name) the dry run refuses too.
            local = bool(near_builtin(cfg.data.source) or hub.unreachable("dataset"))  # the free check first
        splits = load_splits(cfg.data) if local else None
        notes: list[str] = []
        if splits:
            api.check_data(cfg, splits, notes.append)
        if cfg.train.mlm_epochs > 0 and cfg.data.unlabelled:
            from taskembed.data import unlabelled_texts

            notes.append(f"data.unlabelled: {len(unlabelled_texts(cfg.data)):,} texts for the masked-LM stage")
        print(dump_config(cfg))
        for note in without_effect(cfg):  # training says these itself
            print(f"note: {note}")
        print(splits.describe() if splits else f"data: {cfg.data.source} is read from the Hub when training")
        print(f"device: {device} (train.device {cfg.train.device}){half}")
        for note in notes:
            print(note)
        plan = api.plan(cfg, labels=splits.labels if splits else None)
        print(plan.table())
        if not splits:
            print(PLAN_LABELS_NOTE)
        if note := _stages_never_started(cfg, plan):
            print(note)
        if splits:
            from taskembed.loop import planned_steps, schedule_notes

            for note in schedule_notes(cfg.train, *planned_steps(cfg.train, len(splits.frames["train"])), "validation" in splits.frames):
                print(note)
        # Nor one that refuses its output folder; checked last, so that the rest of the check is shown whatever the folder.
        from taskembed.artifacts import check_output_dir

        try:
            check_output_dir(Path(cfg.output.dir), cfg.output.overwrite)
        except UserError as exc:  # said as what training would do, after a check that otherwise passed
            raise UserError(f"the check above passed, but training would stop here: {exc}") from None
        return 0
    # As typed, as "try it:" is, and under the launcher it ran under: one process would be refused (the number of
    # processes changes the batches each sees).
    resume_command = shlex.join([*_launched_as(), "train", *([config] if config else []), *overrides, "--resume"])
    if int(os.environ.get("RANK", "0")) == 0:  # once under torchrun, as the run's own lines are
        print("config (data, model, output, and the settings that differ from the defaults; all of them: --dry-run, or "
              "training_config.json in the output folder):\n"
              + "\n".join("  " + line for line in config_changes(cfg)))
    try:
        result = api.train(cfg, progress=progress, resume={None: False, "latest": True, "auto": "auto"}[resume])
    except api.TrainingInterrupted as exc:
        if int(os.environ.get("RANK", "0")) == 0:
            print(exc.message(resume_command), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        # Stopped after training, while scoring or saving: the last step's checkpoint is still there.
        from taskembed.checkpoint import folder_for, step_folders

        out = Path(cfg.output.dir)
        if int(os.environ.get("RANK", "0")) == 0 and cfg.train.keep_checkpoints and step_folders(folder_for(out)) and not out.exists():
            print(f"stopped before the model folder was written; its checkpoint is kept: finish with {resume_command}", file=sys.stderr)
        raise
    if int(os.environ.get("RANK", "0")) == 0:
        print()
        print(metrics_table(result.metrics, result.baselines))
        if cfg.data.multi_label and result.metrics:
            from taskembed.artifacts import multi_label_table

            tuned = (result.output_dir / "thresholds.json").is_file()  # tuned on validation; without one every label keeps 0.5
            if tuned:  # on validation, the fine-tuned row is scored at thresholds chosen on those very texts
                print("(the fine-tuned model at the thresholds tuned on validation, so its validation row flatters it; "
                      "the baselines as they are)")
            print("\nmulti-label (accuracy = subset accuracy), at 0.5" + (" and at the thresholds saved in thresholds.json:" if tuned else
                                                                           " (no validation split, so no thresholds were tuned):"))
            print(multi_label_table(result.metrics))
        stage = f", after a masked-LM stage of {seconds_text(result.mlm_seconds)} s" if result.mlm_seconds else ""
        # The progress bar's time counts the validation passes too, so a run that says 5 s there is told apart here.
        evals = f", and its validation passes {seconds_text(result.eval_seconds)} s" if result.eval_seconds else ""
        print(f"\nsaved to {result.output_dir}/ (training took {result.train_seconds:.0f} s{evals}{stage})")
        exe = shlex.join(_invoked_as())
        if cfg.data.text_pair_column:  # a pair model reads a table of text pairs, and the demo takes single texts only
            print(f"try it:   {exe} predict {result.output_dir} --file PAIRS.csv    (columns "
                  f"{text_columns_named(cfg.data.text_column, cfg.data.text_columns)} and '{cfg.data.text_pair_column}'; "
                  "the demo takes single-text models only)")
        else:
            print(f"try it:   {exe} predict {result.output_dir} \"a text to classify\"")
            print(f"demo:     {exe} demo {result.output_dir}    (serves it on http://127.0.0.1:7860, or the next free port; open that in a browser)")
    return 0


def _invoked_as() -> list[str]:
    """How the user started taskembed, so printed commands work as typed (e.g. `.venv/bin/taskembed` after `make run`)."""
    argv0 = sys.argv[0] if sys.argv else ""
    if Path(argv0).name == "taskembed" and os.sep in argv0 and shutil.which("taskembed") != str(Path(argv0).resolve()):
        return [argv0]
    if Path(argv0).parent.name == "taskembed" and Path(argv0).name in ("cli.py", "__main__.py"):  # python -m taskembed(.cli)
        return [sys.executable, "-m", "taskembed"]
    return ["taskembed"]


def _launched_as() -> list[str]:
    """_invoked_as, under the torchrun that started this process when one did (it sets TORCHELASTIC_RUN_ID): a
    training command to run again needs the same processes."""
    world, local = int(os.environ.get("WORLD_SIZE", "1") or 1), int(os.environ.get("LOCAL_WORLD_SIZE", "0") or 0)
    if world <= 1 or "TORCHELASTIC_RUN_ID" not in os.environ or not local:
        return _invoked_as()
    nodes = ["--nnodes", str(world // local)] if world > local else []  # (and the rendezvous options given then)
    return ["torchrun", *nodes, "--nproc_per_node", str(local), "-m", "taskembed"]


def cmd_help_config() -> int:
    """Every option, as `--section.key value` or YAML `section: {key: value}`, with its default and docstring."""
    import dataclasses

    from taskembed.config import SECTIONS, field_docs

    import typing

    def choices(hint) -> list[str]:
        """The values a Literal option takes (also inside a union: class_weights is one of them or a mapping)."""
        if typing.get_origin(hint) is typing.Literal:
            return [str(a) for a in typing.get_args(hint)]
        return [c for a in typing.get_args(hint) for c in choices(a)]

    for section, cls in SECTIONS.items():
        print(f"{section}:")
        docs, hints = field_docs(cls), typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            values = choices(hints[f.name])
            if values and any(typing.get_origin(a) is dict for a in typing.get_args(hints[f.name])):
                values.append("a mapping")
            print(f"  {section}.{f.name} = {default!r}" + (f"  (one of: {', '.join(values)})" if values else "")
                  + f"\n      {docs.get(f.name, '')}")
    return 0


def cmd_plan(config: str | None, overrides: Sequence[str] = (), as_json: bool = False) -> int:
    from taskembed import api, builtin
    from taskembed.config import load_config, parse_overrides

    cfg = load_config(config, parse_overrides(list(overrides)))
    p = api.plan(cfg)  # a built-in dataset's labels are read; other data's are not, and the note says so
    if as_json:
        print(json.dumps(p.to_json(), indent=2))
        return 0
    print(p.table() + ("" if cfg.data.source in builtin.BUILTIN_NAMES else "\n" + PLAN_LABELS_NOTE))
    if note := _stages_never_started(cfg, p):
        print(note)
    return 0


def _stages_never_started(cfg, plan) -> str | None:
    """The note that stages by epoch outnumber the epochs (training says it too; it is known before any data is read)."""
    never = sum(1 for k in range(plan.stages + 1) if k >= cfg.train.epochs) if cfg.train.gradual_unfreezing == "epoch" else 0
    if not never:
        return None
    return (f"note: gradual unfreezing by epoch over {cfg.train.epochs:g} epoch(s): the last {never} stage(s) never start, so "
            "those groups stay frozen (more epochs, or gradual_unfreezing steps)")


def cmd_lr_find(config: str | None, overrides: Sequence[str] = (), steps: int = 100, out: str | None = None,
                start: float = 1e-7, end: float = 1.0, progress: bool = True) -> int:
    """Learning-rate range test: print the suggested top rate, the curve and the command that trains with it."""
    import math
    import shlex

    from taskembed import api
    from taskembed.config import load_config, parse_overrides
    from taskembed.lrfind import PNG_FILE, curve_table

    cfg = load_config(config, parse_overrides(list(overrides)))
    r = api.lr_find(cfg, steps=steps, start=start, end=end, out=out, progress=progress)
    s = r.suggestion
    print()
    print(curve_table(r.curve, s["lr"]))
    print(f"\n{len(r.curve)} of {steps} steps ({r.stopped}) in {r.seconds:.0f} s")
    steepest = f"{s['steepest']:.2g}" if s["steepest"] else "n/a"
    print(f"suggested train.lr {s['lr']:.2g} (rule: {s['rule']}; minimum of the smoothed loss at {s['minimum']:.2g}, steepest descent at {steepest})")
    decades = math.log10(r.curve[-1]["lr"] / r.curve[0]["lr"]) if len(r.curve) > 1 else math.log10(end / start)
    if len(r.curve) < 3 * decades:  # the smoothed minimum of a curve this sparse can be a decade off (5 steps: 12x 30's)
        print(f"note: {len(r.curve)} points over {decades:.0f} decades of rates place the minimum coarsely; rerun with "
              f"--steps {max(50, math.ceil(10 * decades))} or more for a suggestion to train with")
    if s["still_falling"]:
        print("note: the loss was still falling at the end of the range; rerun with a larger --end to see where it turns")
    print(f"plot:     {r.folder / PNG_FILE}")
    rates = [x for k, v in r.train_overrides.items() for x in (f"--{k}", f"{v:.2g}")]
    kept = _drop_overrides(list(overrides), set(r.train_overrides))
    out_dir = Path(cfg.output.dir)
    if out_dir.is_dir() and any(out_dir.iterdir()) and not cfg.output.overwrite:  # train would refuse it: a folder of its own
        kept = [*_drop_overrides(kept, {"output.dir"}), f"--output.dir={out_dir.parent / out_dir.name}-lr{s['lr']:.2g}"]
    print("train:    " + shlex.join([*_invoked_as(), "train", *([config] if config else []), *kept, *rates]))
    return 0


def _drop_overrides(tokens: list[str], keys: set[str]) -> list[str]:
    """The override tokens without those that set `keys` ("train.lr" also drops a bare --lr), read as parse_overrides reads them."""
    names = keys | {k.split(".", 1)[1] for k in keys}
    kept, i = [], 0
    while i < len(tokens):
        tok = tokens[i]
        width = 1 if "=" in tok or i + 1 == len(tokens) or tokens[i + 1].startswith("--") else 2
        if tok[2:].split("=", 1)[0].replace("-", "_") not in names:
            kept += tokens[i : i + width]
        i += width
    return kept


def cmd_sweep(config: str | None, overrides: Sequence[str], grid: Sequence[str], seeds: str = "0,1,2", keep: str = "best",
              progress: bool = True) -> int:
    """Train every combination of the --grid values on every seed; print the ranking and the best setting."""
    import shlex

    from taskembed.config import parse_overrides
    from taskembed.loop import TrainingInterrupted
    from taskembed.sweep import SWEEP_JSON, SWEEP_MD, as_arg, best_overrides, parse_grid, report_markdown, sweep

    try:
        seed_list = [int(x) for x in seeds.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"--seeds {seeds}: give whole numbers separated by commas (e.g. 0,1,2)") from None

    try:
        result = sweep(config, parse_overrides(list(overrides)), grid=parse_grid(grid), seeds=seed_list, keep=keep, progress=progress)
    except TrainingInterrupted as exc:
        again = shlex.join([*_invoked_as(), "sweep", *([config] if config else []), *[f"--grid={g}" for g in grid],
                            f"--seeds={seeds}", f"--keep={keep}", *overrides])
        print(f"sweep stopped; the finished trials are recorded and the one in flight is checkpointed: continue with {again}",
              file=sys.stderr)
        return exc.exit_code
    root = Path(result["trials"][0]["config"]["output"]["dir"]).parent
    print()
    print(report_markdown(result))
    best = result["ranking"][0]
    print(f"best: {', '.join(f'{k}={v}' for k, v in best['setting'].items())}"
          + (f"; its best seed's model: {root / best['best_trial']}" if best["best_trial"] in result["kept"] else ""))
    # The sweep's other overrides, less its folder and what the best setting replaces; the model goes beside the sweep's
    # folder (without an output.dir it would go to the config's, say runs/sentiment, whatever the data).
    chosen = {key.replace("-", "_") for key in best["setting"]}
    base = [f"--{key}={as_arg(value)}" for key, value in parse_overrides(list(overrides)).items() if key not in chosen | {"output.dir"}]
    print("train it: " + shlex.join([*_invoked_as(), "train", *([config] if config else []), *base, *best_overrides(result),
                                     f"--output.dir={root}-best"]))
    print(f"written to {root / SWEEP_JSON} and {root / SWEEP_MD}")
    return 0


def cmd_evaluate(model: str, data: str, split: str | None = None, out: str | None = None, text_column: str | None = None,
                 text_pair_column: str | None = None, label_column: str | None = None, predictions: str | None = None,
                 device: str | None = None) -> int:
    from taskembed import api
    from taskembed.artifacts import written_whole

    if out:
        check_out_file(out, (".json",), source=data)
    if predictions:
        check_out_file(predictions, (".csv", ".jsonl"), source=data, flag="--predictions")  # never --out's file: .json
    # evaluate loads the folder itself unless given a classifier: one loaded here where --device chooses.
    m = api.evaluate(api.load(model, device=device) if device else model, data, split, text_column=text_column,
                     text_pair_column=text_pair_column, label_column=label_column, predictions=bool(predictions))
    rows = m.pop("predictions", None)
    if "at_0.5" in m:  # multi-label: at the folder's thresholds and at 0.5
        fixed, which = m["at_0.5"], "tuned thresholds" if m["thresholds_tuned"] else "thresholds 0.5 (none tuned)"
        print(f"{which}: subset accuracy {100 * m['accuracy']:.2f}  micro-F1 {100 * m['micro_f1']:.2f}  macro-F1 {100 * m['macro_f1']:.2f}")
        print(f"at 0.5: subset accuracy {100 * fixed['accuracy']:.2f}  micro-F1 {100 * fixed['micro_f1']:.2f}  macro-F1 {100 * fixed['macro_f1']:.2f}")
        print(f"loss {m['loss']:.4f}  n {m['n']}  truncated {m['truncated']}")
        print("| label | threshold | precision | recall | F1 | F1 at 0.5 | support |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        for name, v in m["per_class"].items():
            print(f"| {name} | {m['thresholds'][name]:.2f} | {100 * v['precision']:.1f} | {100 * v['recall']:.1f} | {100 * v['f1']:.1f} "
                  f"| {100 * fixed['per_class'][name]['f1']:.1f} | {v['support']} |")
    else:
        print(f"accuracy {100 * m['accuracy']:.2f}  macro-F1 {100 * m['macro_f1']:.2f}  loss {m['loss']:.4f}  n {m['n']}  truncated {m['truncated']}")
        from taskembed.metrics import per_class_cells

        print("| label | precision | recall | F1 | support |\n| --- | ---: | ---: | ---: | ---: |")
        for name, v in m["per_class"].items():
            print(f"| {name} | {per_class_cells(v)} |")
        names = list(m["per_class"])
        confused = sorted(((n, t, p) for t, row in enumerate(m["confusion_matrix"]) for p, n in enumerate(row) if n and t != p),
                          key=lambda x: (-x[0], x[1], x[2]))[:5]
        if confused:
            print("most confused (true -> predicted): " + ", ".join(f"{names[t]} -> {names[p]} {n}" for n, t, p in confused))
    if out:
        with written_whole(Path(out)) as fh:
            fh.write(json.dumps(m, indent=2) + "\n")
        print(f"written to {out}")
    if rows is not None:
        _write_evaluated(Path(predictions), rows, list(m["per_class"]), model)
        wrong = sum(not r["correct"] for r in rows)
        print(f"{len(rows)} predictions ({wrong} wrong) written to {predictions}")
    return 0


def _write_evaluated(path: Path, rows: list[dict[str, Any]], labels: list[str], model: str) -> None:
    """evaluate --predictions: JSON lines as the API returns them, or a CSV with one score column per label (as predict --out
    writes them), label sets joined as the training data joined them."""
    from taskembed.artifacts import written_whole
    from taskembed.modeling import read_training_config

    with written_whole(path, newline="") as fh:
        if path.suffix.lower() == ".jsonl":
            fh.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
            return
        sep = read_training_config(Path(model).expanduser()).get("data", {}).get("label_delimiter") or "|"
        first = [k for k in rows[0] if k not in ("scores", "calibrated_scores")]
        cal = "calibrated_scores" in rows[0]  # calibrated_score_<label> after score_<label>, as predict --out writes them
        w = csv.writer(fh)
        w.writerow([*first, *(f"score_{x}" for x in labels), *(f"calibrated_score_{x}" for x in labels if cal)])
        for r in rows:
            cells = [sep.join(r[k]) if isinstance(r[k], list) else f"{r[k]:.6f}" if isinstance(r[k], float) else r[k] for k in first]
            w.writerow([*cells, *(f"{r['scores'][x]:.6f}" for x in labels), *(f"{r['calibrated_scores'][x]:.6f}" for x in labels if cal)])


def cmd_predict(model: str, texts: Sequence[str] = (), file: str | None = None, out: str | None = None,
                text_column: str | None = None, bf16: bool = False, text_pair_column: str | None = None,
                device: str | None = None) -> int:
    """The columns of a table file default to those the model was trained on (else `text`); a model trained on text
    pairs reads its second texts from `text_pair_column`, so it takes a table file only."""
    from taskembed import api
    from taskembed.data import text_columns_named, texts_to_predict

    if bool(texts) == bool(file):
        raise UserError("give texts as arguments or --file FILE (one of them)")
    if out:
        check_out_file(out, (".csv", ".jsonl"), source=file)
    if texts and text_column:  # said as embed says it of a .txt: an option that does nothing should not pass unremarked
        print(f"note: --text-column {text_column} applies to a table given with --file, not to texts given as arguments", file=sys.stderr)
    clf = api.load(model, device=device, bf16=bf16)
    trained = clf.training_config.get("data", {})
    # A model trained on several text columns joined reads a table file's the same way, unless one column is named.
    text_columns = None if text_column else trained.get("text_columns")
    text_column = text_column or trained.get("text_column", "text")
    if text_pair_column and not clf.text_pair_column:
        raise UserError(f"--text-pair-column {text_pair_column}: {model} was trained on single texts; drop --text-pair-column")
    text_pair_column = text_pair_column or clf.text_pair_column
    if text_pair_column and text_pair_column == text_column:  # each text paired with itself, as evaluate refuses too
        raise UserError(f"the text and second-text columns must differ (both '{text_column}'); name each with --text-column and --text-pair-column")
    if texts and text_pair_column:
        raise UserError(f"{model} reads text pairs; give them in a table file with the columns "
                        f"{text_columns_named(text_column, text_columns)} and '{text_pair_column}': --file FILE")
    read_notes: list[str] = []
    rows = None if texts else texts_to_predict(file, text_column, text_pair_column, text_columns, read_notes)
    inputs: list[str | None] = list(texts) if texts else rows.texts
    pairs = rows.pairs if rows else None
    replacing = bool(out) and Path(out).is_file()
    # A row without its text gets no prediction, and the others theirs: one blank cell should not stop a nightly batch.
    missing = set(rows.missing) if rows else set()
    todo = [i for i in range(len(inputs)) if i not in missing]
    done = clf.predict([inputs[i] for i in todo], [pairs[i] for i in todo] if pairs else None)
    preds: list[dict[str, Any] | None] = [None] * len(inputs)
    for i, p in zip(todo, done):
        preds[i] = p
    if cut := clf.last_truncated:  # evaluate and embed say it too: a long text is judged by its start
        print(f"note: {cut} text(s) longer than {clf.max_length} tokens (the model's data.max_length) were read up to that "
              "length only", file=sys.stderr)
    for note in read_notes:  # blank lines or empty rows skipped: as embed says it, the rows of --out no longer line up with the file's
        print(note, file=sys.stderr)
    if rows and rows.missing:
        print(f"note: {rows.missing_message()}: {'they were' if len(rows.missing) > 1 else 'it was'} left without a prediction",
              file=sys.stderr)
    if out:
        written = _write_predictions(Path(out), clf, inputs, pairs, preds, rows.table if rows else None, rows.records() if rows else None)
        print(f"{written} predictions written to {out}{_replaced(replacing)}")
        return 0
    # One line per text: a newline or tab inside one is shown escaped, so it cannot pass for the next text or column.
    shown = str.maketrans({"\n": "\\n", "\r": "\\r", "\t": "\\t"})

    def show(text: str, limit: int = 300) -> str:  # a whole book on one line would bury the labels (--out keeps it whole)
        text = text.translate(shown)
        return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"

    for i, p in enumerate(preds):
        if p is None:  # a line still, so that line i of the output is row i of the file
            print(f"-\t\t(row {i + 1}: no text)")
            continue
        t = show(inputs[i]) if not pairs else f"{show(inputs[i])}\t{show(pairs[i])}"
        if clf.multi_label:
            # Every label over its threshold with its probability; when none is, the most likely one for context.
            found = ", ".join(f"{x} {p['scores'][x]:.4f}" for x in p["labels"]) or f"(none; top {p['label']} {p['score']:.4f})"
            print(f"{found}\t{t}")
            continue
        cal = f" (calibrated {p['calibrated_score']:.4f})" if "calibrated_score" in p else ""
        print(f"{p['label']}\t{p['score']:.4f}{cal}\t{t}")
    return 0


def _write_predictions(out: Path, clf: Any, inputs: Sequence[str | None], pairs: Sequence[str | None] | None,
                       preds: Sequence[dict[str, Any] | None], table: Any, records: list[dict[str, Any]] | None = None) -> int:
    """predict --out: a table file's own columns, all of them (an id to join on, the truth where it has one), then the
    prediction's; texts given as arguments or a .txt get `text` (and `text_pair`) instead. A row without text keeps
    its columns and gets empty prediction cells (null in JSON Lines). Returns how many rows have a prediction."""
    from taskembed.artifacts import written_whole

    made = [(i, p) for i, p in enumerate(preds) if p is not None]
    header, predicted = clf.table([inputs[i] for i, _ in made], [p for _, p in made], [pairs[i] for i, _ in made] if pairs else None)
    lead = 2 if pairs else 1  # text and text_pair, which a table's own columns replace
    pred_columns, cells = header[lead:], dict(zip((i for i, _ in made), (row[lead:] for row in predicted)))
    keys = list(made[0][1])  # a prediction's keys, for JSON Lines
    if table is None:
        own = [{"text": t, **({"text_pair": pairs[i]} if pairs else {})} for i, t in enumerate(inputs)]
        names = ["text", *(["text_pair"] if pairs else [])]
    else:
        # An input column named as a prediction's (a test file's own `label`) keeps its values under input_<name>.
        taken = set(pred_columns if out.suffix.lower() == ".csv" else keys)
        renamed = {}
        for c in map(str, table.columns):
            new = c
            while new in taken or new in renamed.values():
                new = f"input_{new}"
            renamed[c] = new
        if moved := [f"'{c}' to '{n}'" for c, n in renamed.items() if c != n]:
            print(f"note: renamed the input's column{'s' if len(moved) > 1 else ''} {', '.join(moved)}: the prediction has "
                  f"{'columns of those names' if len(moved) > 1 else 'a column of that name'}", file=sys.stderr)
        if records is not None:  # a JSON or Parquet file's rows as it holds them: an integer id stays one, a key stays absent
            own = [{renamed.get(str(k), str(k)): v for k, v in r.items()} for r in records]
        else:  # CSV and TSV: every cell a string already
            own = table.rename(columns=lambda c: renamed[str(c)]).to_dict(orient="records")
        names = list(renamed.values())
    with written_whole(out, newline="") as fh:
        if out.suffix.lower() == ".jsonl":
            for i, row in enumerate(own):
                fh.write(json.dumps(_json_safe({**row, **(preds[i] or dict.fromkeys(keys))}), ensure_ascii=False, allow_nan=False) + "\n")
            return len(made)
        w = csv.writer(fh)
        w.writerow([*names, *pred_columns])
        empty = [""] * len(pred_columns)
        w.writerows([*(_cell(row.get(name)) for name in names), *(f"{v:.6f}" if isinstance(v, float) else v for v in cells.get(i, empty))]
                    for i, row in enumerate(own))
    return len(made)


def _cell(v: Any) -> str:
    """A passed-through value as a CSV cell: what _json_safe makes of it, text as it is (a decimal, bytes or a time
    too, as in JSON Lines), nothing for a missing or non-finite one, numbers and lists as JSON."""
    v = _json_safe(v)
    if v is None:
        return ""
    return v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)


def check_out_file(out: str, suffixes: tuple[str, ...], source: str | None = None, flag: str = "--out") -> None:
    """Before any work: --out (or `flag`) must name a file of a known kind, not a folder (its parent folder is made when
    written), nor the input file `source`."""
    if Path(out).is_dir():
        raise UserError(f"{flag} {out} is a folder; give a file name ending in {' or '.join(suffixes)}")
    if Path(out).suffix.lower() not in suffixes:
        raise UserError(f"{flag} {out}: use a {' or '.join(suffixes)} file name")
    from taskembed.artifacts import check_not_in_model, check_not_input, check_writable

    check_writable(Path(out), flag)
    check_not_input(out, source, flag)
    check_not_in_model(out, flag)


def cmd_push(folder: str, repo_id: str, public: bool = False, message: str | None = None) -> int:
    from taskembed import api

    url = api.push(folder, repo_id, private=not public, message=message)
    # create_repo leaves an existing repository's visibility as it is: only a new one is made public or private here.
    print(f"pushed {folder} to {url} (a repository created now is {'public' if public else 'private'}; one that was there "
          "keeps its visibility)")
    if extra := api.pushed_extra(folder):
        print(f"left out, not written by training: {', '.join(extra[:10])}{' ...' if len(extra) > 10 else ''}")
    return 0


def cmd_datasets() -> int:
    from taskembed.builtin import describe_builtins

    for d in describe_builtins():
        print(f"{d['name']}: {d['description']}")
        print(f"  source: {d['source']}")
        if d.get("splits") is None:
            print(f"  unavailable: {d.get('error')}")
            continue
        print("  splits: " + ", ".join(f"{s} {n:,}" for s, n in d["splits"].items()))
        classes = sorted(d["classes"].items(), key=lambda kv: -kv[1])
        shown = ", ".join(f"{k} {v}" for k, v in classes[:10])
        if d.get("label_delimiter"):
            print(f"  {len(classes)} labels (train examples carrying each): {shown}{' ...' if len(classes) > 10 else ''}")
            print(f"  multi-label: train with --data.multi_label true --data.label_delimiter '{d['label_delimiter']}'")
            continue
        print(f"  {len(classes)} classes (train): {shown}{' ...' if len(classes) > 10 else ''}")
    return 0


def cmd_demo(models: Sequence[str], host: str = "127.0.0.1", port: int | None = None, share: bool = False,
             auth: str | None = None) -> int:
    """Run the Gradio demo on MODELS; it exits 2 with one line for a bad folder.

    The demo is the repository's demo/app.py, which the wheel ships as taskembed.demo.app (pyproject.toml maps the
    folder), so this works from a checkout and from an installed package alike."""
    import importlib
    import importlib.util

    if importlib.util.find_spec("gradio") is None:
        raise UserError("the demo needs gradio: pip install 'taskembed[demo]' (in a checkout, make install does)")
    argv = [*models, "--host", host, *(["--port", str(port)] if port is not None else []), *(["--share"] if share else []),
            *(["--auth", auth] if auth else [])]
    try:
        app = importlib.import_module("taskembed.demo.app")
    except ModuleNotFoundError as exc:
        if exc.name not in ("taskembed.demo", "taskembed.demo.app"):
            raise
        # Not installed with the mapping (run from a checkout without installing it, or an editable install made before
        # the demo moved into the package): this checkout's own demo/app.py, if this is a checkout.
        root = Path(__file__).resolve().parent.parent
        project = root / "pyproject.toml"
        if not ((root / "demo" / "app.py").is_file() and project.is_file() and 'name = "taskembed"' in project.read_text(encoding="utf-8")):
            raise UserError("this installation of taskembed lacks its demo (taskembed.demo); reinstall it from a wheel or a checkout") from None
        import runpy

        return runpy.run_path(str(root / "demo" / "app.py"), run_name="taskembed_demo")["main"](argv)
    return app.main(argv)


def _replaced(replacing: bool) -> str:
    """Said after an output file's name when it was there before the command: --out replaces a file, as shell
    redirection does, and says so, since a corpus embedded for an hour is lost to a mistyped name."""
    return " (replacing the file that was there)" if replacing else ""


def cmd_embed(model: str, data: str, out: str, pooling: str | None = None, layer: int | None = None, mean_last: int | None = None,
              normalize: bool | None = None, dtype: str = "float32", max_length: int | None = None, text_column: str | None = None,
              label_column: str | None = None, split: str | None = None, chunk_size: int = 10_000, batch_tokens: int | None = None,
              progress: bool = True, bf16: bool = False, device: str | None = None, keep: str | Sequence[str] | None = None) -> int:
    """Embed DATA into OUT; under torchrun / accelerate launch each process writes one shard and rank 0 a manifest.
    KEEP: comma-separated columns of DATA (or all) to write beside the vectors; a list is what --keep given again makes."""
    from taskembed.embed import embed_file, keep_columns, manifest_path, sidecar_path

    asked = label_column is not None
    replacing = Path(out).is_file()
    keep = ",".join([keep] if isinstance(keep, str) else keep) if keep is not None else None  # --keep given again: all of them
    columns = keep_columns(keep)
    info = embed_file(model, data, out, text_column=text_column, label_column=label_column, split=split, chunk_size=chunk_size,
                      label_required=asked, keep=columns,
                      progress=progress, pooling=pooling, layer=layer, mean_last=mean_last, normalize=normalize, dtype=dtype,
                      max_length=max_length, batch_tokens=batch_tokens, bf16=bf16, device=device)
    if int(os.environ.get("RANK", "0") or 0) != 0:
        return 0
    what = (f"{info['count']:,} vectors ({info['dim']}-d {info['dtype']}, {info['pooling']}: {info['pooling_detail']}"
            f"{', L2-normalised' if info['normalize'] else ''}{', bf16 autocast' if info.get('bf16') else ''})")
    tail = f"{info['truncated']} text(s) truncated at {info['max_length']} tokens"
    source = info.get("source", {})
    notes = []
    if source.get("blank_lines_skipped"):
        notes.append(f"note: {source['blank_lines_skipped']} blank line(s) skipped, so id (and row) i is the i-th non-blank "
                     "line, not line i")
    if source.get("format") == "lines" and (text_column or label_column):  # one text per line: no columns to choose
        notes.append(f"note: {'--text-column' if text_column else '--label-column'} does not apply to {data}, a plain text file "
                     "read as one text per line (with no labels)")
    if source.get("empty_rows_skipped"):  # rows of empty fields, as spreadsheets write empty rows: read past, as blank lines are
        notes.append(f"note: {source['empty_rows_skipped']} empty row(s) skipped, so id (and row) i is the i-th non-empty row of "
                     f"{data}, not row i")
    # The default label column, not found (a .npy holds the vectors alone, labels or not): say so, or it goes unseen.
    if source.get("label_column_absent") and source.get("format") != "lines" and Path(out).suffix.lower() == ".parquet":
        notes.append(f"note: {data} has no column '{source['label_column_absent']}', so the vectors have no labels; "
                     "--label-column names the one it has")
    kept = source.get("kept_columns") or {}
    if kept:  # first of the lines after the summary: what the output holds besides id, text and label
        notes.insert(0, "kept columns: " + ", ".join(name if name == column else f"{name} (the data's '{column}')"
                                                  for column, name in kept.items()))
    elif keep is not None and "all" in columns:  # --keep all, on data with nothing but its text and label
        notes.append(f"note: --keep {keep}: {data} has no columns besides the text and the label, which are there already")
    elif keep is not None:  # the text or label column named: in the output already, as text and label
        notes.append(f"note: --keep {keep}: the text and label columns are in the output already (as text and label); "
                     "nothing else was asked for")
    if source.get("not_in_every_split"):
        notes.append(f"note: --keep all keeps the columns every split has; {', '.join(map(str, source['not_in_every_split']))} "
                     "left out (some split lacks it)")
    if source.get("own_id_column") and "id" not in kept:  # a RAG user joins hits back to documents by id: theirs is not what comes back
        notes.append("note: the data's own 'id' column is not kept: a vector's id is its row number, from 0; --keep id "
                     "copies it beside the vectors (as data_id)")
    if "shards" in info:
        written = [s for s in info["shards"] if s["file"]]
        print(f"{what} written as {len(written)} shard(s) by {info['sharding']['world_size']} processes in {info['seconds']:.1f} s; {tail}")
        for s in written:
            print(f"  {Path(out).parent / s['file']}  ({s['count']:,} rows)")
        print(f"manifest: {manifest_path(out)}  (taskembed.embed.load_vectors reads it back in row order; search accepts it)")
    else:
        print(f"{what} written to {out}{_replaced(replacing)} in {info['seconds']:.1f} s; {tail}")
        print(f"provenance: {sidecar_path(out)}")
    _note_pair_model(model, source.get("text_column") or "the text column", "each vector encodes", source.get("text_columns"))
    for note in notes:
        print(note)
    return 0


def cmd_export(model: str, out: str, format: str = "sentence-transformers", pooling: str | None = None, normalize: bool | None = None,
               max_length: int | None = None, overwrite: bool = False, int8: bool = False, check: str | None = None,
               split: str | None = None, text_column: str | None = None, text_pair_column: str | None = None,
               label_column: str | None = None) -> int:
    columns = {"text_column": text_column, "text_pair_column": text_pair_column, "label_column": label_column}
    given = {"--pooling": pooling is not None, "--normalize/--no-normalize": normalize is not None, "--max-length": max_length is not None,
             "--int8": int8, "--check": check is not None, "--split": split is not None,
             **{f"--{k.replace('_', '-')}": v is not None for k, v in columns.items()}}
    vectors, checked = ("--pooling", "--normalize/--no-normalize", "--max-length"), ("--check", "--split", "--text-column",
                                                                                     "--text-pair-column", "--label-column")
    takes = {"sentence-transformers": vectors, "onnx": ("--int8",) + checked, "onnx-embeddings": vectors + ("--int8",)}
    for flag, is_given in given.items():
        if is_given and flag not in takes[format]:
            formats = " or ".join(f"--format {f}" for f, flags in takes.items() if flag in flags)
            raise UserError(f"{flag} is for {formats}; drop it")
    reads_check = next((f for f in checked[1:] if given[f]), None)
    if check is None and reads_check:
        raise UserError(f"{reads_check} goes with --check DATA (it says how to read DATA); drop it or add --check")
    if format == "onnx":
        from taskembed.onnx_export import ONNX_FILE, export_onnx, model_bytes

        meta = export_onnx(model, out, int8=int8, check=check, check_split=split, overwrite=overwrite,
                           check_columns={k: v for k, v in columns.items() if v is not None})
        print(f"ONNX folder written to {out} ({ONNX_FILE}: {meta['weights']}, {model_bytes(out) / 1e6:,.1f} MB; "
              f"inputs {', '.join(meta['inputs'])}; output logits, scored as {meta['scores']})")
        what = "the float32 graph's" if meta["weights"] == "float32" else "the int8 graph's"
        print(f"{what} logits against PyTorch's on texts of 1 to 80 words: at most {meta['max_abs_logit_difference_on_probe_texts']:.2g} apart")
        if meta["check"]:
            c = meta["check"]
            where = f"{c['data']} [{c['split']}]" if c["split"] else c["data"]
            one, batch = c["batch_1"], c["batch_32"]
            print(f"checked on {where}, {c['examples']:,} examples: accuracy {c['accuracy_pytorch']:.2f} with PyTorch; with ONNX "
                  f"{one['accuracy_onnx']:.2f} one text at a time and {batch['accuracy_onnx']:.2f} in batches of 32, the same "
                  f"prediction for {one['same_prediction']:.2f}% and {batch['same_prediction']:.2f}%")
    elif format == "onnx-embeddings":
        from taskembed.onnx_export import ONNX_FILE, export_onnx_embeddings, model_bytes

        options = {"pooling": pooling, "normalize": normalize, "max_length": max_length}
        meta = export_onnx_embeddings(model, out, int8=int8, overwrite=overwrite, **{k: v for k, v in options.items() if v is not None})
        print(f"ONNX folder written to {out} ({ONNX_FILE}: {meta['weights']}, {model_bytes(out) / 1e6:,.1f} MB; "
              f"inputs {', '.join(meta['inputs'])}; output embeddings, {meta['dim']} wide: {meta['pooling_detail']}"
              f"{', L2-normalised' if meta['normalize'] else ''}; texts cut at {meta['max_length']} tokens)")
        what = "the float32 graph's" if meta["weights"] == "float32" else "the int8 graph's"
        print(f"{what} vectors against `taskembed embed`'s on texts of 1 to 80 words: at most {meta['max_abs_difference_on_probe_texts']:.2g} "
              f"apart, cosine {meta['min_cosine_on_probe_texts']:.4f} at the least")
    if format in ("onnx", "onnx-embeddings"):
        if meta["text_pair"]:
            print("the model reads text pairs: tokenize each text with its second text, tokenizer(texts, second_texts)")
        if meta["text_columns_joined"]:
            print(f"the model was trained on {', '.join(meta['text_columns_joined'])} joined with a space (empty cells left out): "
                  "join them so before tokenizing")
        print(f"use it:   onnxruntime.InferenceSession('{Path(out) / ONNX_FILE}') with the tokenizer in {out} (README: ONNX export)")
        return 0
    from taskembed.embed import export_sentence_transformers

    path = export_sentence_transformers(model, out, overwrite=overwrite, pooling=pooling, normalize=normalize, max_length=max_length)
    print(f"sentence-transformers folder written to {path}")
    print(f"use it:   SentenceTransformer({str(path)!r}).encode(texts)")
    return 0


def cmd_search(vectors: str, queries: Sequence[str], k: int = 5, as_json: bool = False, file: str | None = None,
               model: str | None = None) -> int:
    """Queries come as arguments or from --file (a .txt, one per line); --model says where the model that wrote the
    vectors is now, when its folder moved."""
    from taskembed.data import texts_from_file
    from taskembed.embed import OWN_COLUMNS, search

    if bool(queries) == bool(file):
        raise UserError("give queries as arguments or --file FILE (one of them)")
    if file and Path(file).suffix.lower() != ".txt":
        raise UserError(f"--file {file}: give a .txt file, one query per line")
    queries = texts_from_file(file)[0] if file else list(queries)
    results = search(vectors, queries, k=k, model_path=model)
    if as_json:
        print(json.dumps(_json_safe([{"query": q, "hits": hits} for q, hits in zip(queries, results)]), indent=2, ensure_ascii=False,
                         allow_nan=False))
        return 0
    for q, hits in zip(queries, results):
        print(f"query: {q}")
        for h in hits:
            label = f"\t{h['label']}" if h.get("label") is not None else ""
            text = f"\t{_shown_text(h['text'])}" if h.get("text") is not None else ""
            # Columns kept with embed --keep (a document's own id, title, url), named, between the label and the text.
            kept = "".join(f"\t{name}={_shown_text(value, SHOWN_KEPT_CHARS)}" for name, value in h.items() if name not in OWN_COLUMNS)
            print(f"  {h['rank']}\t{h['score']:.4f}\t{h['id']}{label}{kept}{text}")
        if results and len(hits) < k:  # fewer vectors than asked for: every one of them is above
            print(f"  (all {len(hits)} vectors; -k {k} asked for more)")
    return 0


def _json_safe(value: Any) -> Any:
    """A table's own columns (predict --out, search's kept columns) can hold what JSON has no type for: NaN and
    infinities (which JSON.parse refuses) become null, numpy scalars Python's, times ISO 8601 (to their last digit),
    bytes their UTF-8 text, anything else (decimals, durations) its text."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if type(value).__module__ == "numpy" and getattr(getattr(value, "dtype", None), "kind", "x") in "biufO":
        return _json_safe(value.tolist())  # np.int64 is no int to json; an array is a list (a datetime64 is left to str)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (str, int, bool)):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


SHOWN_CHARS = 300
"""A hit's text on the terminal: a whole document would fill the screen; --json gives it whole."""
SHOWN_KEPT_CHARS = 80
"""A kept column's value on the terminal, shorter than the text it stands beside."""


def _shown_text(text: Any, limit: int = SHOWN_CHARS) -> str:
    flat = " ".join(str(text).split())  # one line per hit, whatever the text's own line breaks
    return flat if len(flat) <= limit else f"{flat[:limit]}... ({len(flat):,} characters; --json shows it whole)"


def _note_pair_model(model: str, text_column: str, what: str, text_columns: Sequence[str] | None = None) -> None:
    """A model trained on text pairs, embedded one text at a time (as embed and compare do): said, not left to be found."""
    from taskembed.data import text_columns_named
    from taskembed.modeling import read_training_config

    pair = (read_training_config(model).get("data") or {}).get("text_pair_column")
    if pair:
        print(f"note: the model was trained on text pairs (second text: '{pair}'); {what} one text of "
              f"{text_columns_named(text_column, text_columns)} alone, as a search query or document is")


def cmd_compare(base: str, tuned: str, data: str, out_dir: str = "embedding_report", split: str | None = None,
                text_column: str | None = None, label_column: str | None = None, max_texts: int = 2000, seed: int = 0,
                base_pooling: str = "mean", tuned_pooling: str | None = None, progress: bool = True, device: str | None = None) -> int:
    from taskembed.compare import REPORT_JSON, REPORT_PNG, compare_data, report_markdown
    from taskembed.embed import trained_columns

    text_column, label_column, text_columns = trained_columns(tuned, text_column, label_column)
    report = compare_data(base, tuned, data, out_dir, split=split, text_column=text_column, label_column=label_column,
                          text_columns=text_columns, max_texts=max_texts, seed=seed,
                          base_options={"pooling": base_pooling, "device": device},
                          tuned_options={"pooling": tuned_pooling, "device": device}, progress=progress)
    print(report_markdown({**report, "files": None}))  # the image link is for the Markdown files; the paths follow
    print(f"written to {Path(out_dir) / REPORT_JSON} and {Path(out_dir) / REPORT_PNG}")
    _note_pair_model(tuned, text_column, "each side embeds", text_columns)
    if report["base"]["fingerprint"] and report["base"]["fingerprint"] == report["tuned"]["fingerprint"]:
        print(f"note: {base} and {tuned} hold the same weights, so before and after differ only in how they pool; "
              "give the fine-tuned model's folder as TUNED")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse with the project's one-line errors: a usage block of up to nine lines buried the mistake. A mistyped
    subcommand or option gets the nearest real one."""

    def error(self, message: str):
        self.exit(2, f"error: {message}{self._suggestion(message)}; see `{self.prog} --help`\n")

    def _suggestion(self, message: str) -> str:
        import difflib

        if m := re.match(r"argument command: invalid choice: '([^']*)'", message):
            close = difflib.get_close_matches(m.group(1), list(_subcommands(self)), n=1)
            return f" (did you mean {close[0]}?)" if close else ""
        if message.startswith("unrecognized arguments: "):
            said = []
            for word in message.split(": ", 1)[1].split():
                name = word.split("=", 1)[0]
                if near := self.nearest_option(name):
                    said.append(f"{name}: did you mean {near}?")
            return f" ({'; '.join(said)})" if said else ""
        return ""

    def nearest_option(self, name: str) -> str | None:
        """This parser's --option nearest to `name`, if one is near; None for anything that is not a --word."""
        import difflib

        if not name.startswith("--"):
            return None
        options = [o for o in self._option_string_actions if o.startswith("--")]
        hyphens = "--" + name[2:].replace("_", "-")  # --text_column: the config's spelling of --text-column
        close = [hyphens] if hyphens in options else difflib.get_close_matches(name, options, n=1, cutoff=0.75)
        return close[0] if close else None


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


OVERRIDES_HELP = ("Any config option can be set after the config as --section.key VALUE (--train.lr 1e-4 --data.max_length 64 "
                  "--output.dir runs/x), or as --key VALUE when one section has that key (--epochs 1, --seed 2); values are read "
                  "as YAML (1e-4, true, [a, b]). train --help-config lists every option with its default.")


def build_parser() -> argparse.ArgumentParser:
    from taskembed import __version__

    p = _Parser(prog="taskembed", description="Fine-tune a transformer classifier with discriminative learning rates.")
    p.add_argument("--version", action="version", version=f"taskembed {__version__}")
    sub = p.add_subparsers(dest="command", required=True)  # subcommands' parsers are _Parser too

    t = sub.add_parser("train", help="train a classifier from a YAML config (overrides: --section.key value)", epilog=OVERRIDES_HELP)
    t.add_argument("config", nargs="?", help="YAML config (default: built-in defaults = configs/sentiment.yaml)")
    t.add_argument("--dry-run", action="store_true", help="read and check the data, print the resolved config, the splits and the lr plan; train nothing")
    t.add_argument("--help-config", action="store_true", help="list every config option with its default and meaning")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("--resume", nargs="?", const="latest", choices=["latest", "auto"],
                   help="continue from the latest complete checkpoint of output.dir (an error if none); "
                        "--resume auto: continue if there is one, else start afresh")

    pl = sub.add_parser("plan", help="print the learning-rate plan of a config without training (overrides: --section.key value)", epilog=OVERRIDES_HELP)
    pl.add_argument("config", nargs="?", help="YAML config (default: built-in defaults)")
    pl.add_argument("--json", action="store_true", help="print the plan as JSON")

    lf = sub.add_parser("lr-find", help="learning-rate range test: suggest train.lr for a config (overrides: --section.key value)", epilog=OVERRIDES_HELP)
    lf.add_argument("config", nargs="?", help="YAML config (default: built-in defaults)")
    lf.add_argument("--steps", type=int, default=100, help="optimizer steps of the sweep (default 100)")
    lf.add_argument("--start", type=float, default=1e-7, help="first top-layer rate (default 1e-7)")
    lf.add_argument("--end", type=float, default=1.0, help="last top-layer rate (default 1); the sweep stops earlier when the loss diverges")
    lf.add_argument("--out", help="folder for lr_find.json and lr_find.png (default: <output.dir>.lr_find)")
    lf.add_argument("--no-progress", action="store_true", help="no progress bar")

    sw = sub.add_parser("sweep", help="train a grid of settings on several seeds and rank them on validation (overrides: --section.key value)", epilog=OVERRIDES_HELP)
    sw.add_argument("config", nargs="?", help="YAML config (default: built-in defaults)")
    sw.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                    help="a setting and its values, e.g. --grid train.lr=1e-4,3e-4 (repeat for more; every combination is trained)")
    sw.add_argument("--seeds", default="0,1,2", help="seeds each setting is trained on (default 0,1,2)")
    sw.add_argument("--keep", default="best", choices=["best", "all", "none"],
                    help="trial folders kept afterwards (default best: the best seed of the best setting)")
    sw.add_argument("--no-progress", action="store_true", help="no progress bars")

    e = sub.add_parser("evaluate", help="score a trained model on labelled data")
    e.add_argument("model", help="a folder `taskembed train` wrote (its output.dir)")
    e.add_argument("data", help="a file, a save_to_disk folder or a built-in dataset name")
    e.add_argument("--split", help="split of a folder or built-in dataset (default: test; a file is one split)")
    e.add_argument("--out", help="write the metrics as JSON here (a .json file)")
    e.add_argument("--text-column", help="the data's text column (default: the one the model was trained on)")
    e.add_argument("--text-pair-column", help="the data's second text column, for sentence-pair models (default: as trained)")
    e.add_argument("--label-column", help="the data's label column (default: the one the model was trained on)")
    e.add_argument("--predictions", help="write every example's prediction beside its true label to .csv or .jsonl, in the "
                   "data's order (for error analysis)")
    e.add_argument("--device", help="where the model runs: cpu, cuda or cuda:N (default: cuda when torch has a GPU, else cpu)")

    pr = sub.add_parser("predict", help="predict labels for texts")
    pr.add_argument("model", help="a folder `taskembed train` wrote (its output.dir)")
    pr.add_argument("texts", nargs="*", default=[], help="texts to classify (or --file)")  # a default: argparse would call "*" required
    pr.add_argument("--file", help="texts from a .txt (one per line) or a table file")
    pr.add_argument("--text-column", help="text column of a table file (default: the one the model was trained on; text for a model "
                                           "taskembed did not train)")
    pr.add_argument("--text-pair-column", help="second-text column of a table file, for a model trained on text pairs "
                    "(default: the one it was trained on)")
    pr.add_argument("--out", help="write predictions to .csv or .jsonl")
    pr.add_argument("--device", help="where the model runs: cpu, cuda or cuda:N (default: cuda when torch has a GPU, else cpu)")
    pr.add_argument("--bf16", action="store_true", help="bfloat16 autocast (CPUs with AVX512-BF16/AMX, recent GPUs): "
                    "about 1.6x faster than float32 there; scores differ from float32 in the third decimal (measured: up to 0.0071)")

    pu = sub.add_parser("push", help="upload a trained folder to a Hugging Face Hub model repository (created private unless --public)")
    pu.add_argument("folder", help="a trained output folder")
    pu.add_argument("repo_id", help="owner/name of the model repository (created if it is not there)")
    pu.add_argument("--public", action="store_true", help="make a new repository public (default: private)")
    pu.add_argument("--message", help="the commit message")

    sub.add_parser("datasets", help="list the built-in offline datasets with sizes and classes")

    d = sub.add_parser("demo", help="open the Gradio demo for one or more model folders")
    d.add_argument("models", nargs="+")
    d.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    d.add_argument("--port", type=int, help="port (default: 7860 or the next free one)")
    d.add_argument("--share", action="store_true", help="also publish a public gradio.live link (prints a warning)")
    d.add_argument("--auth", metavar="USER:PASSWORD", help="require a login (or set TASKEMBED_DEMO_AUTH)")

    em = sub.add_parser("embed", help="write one vector per text (Parquet or .npy) with a JSON sidecar")
    em.add_argument("model", help="a trained folder, or any encoder folder or id (the base model too)")
    em.add_argument("data", help="a table file, a .txt (one text per line), a save_to_disk folder or a built-in dataset name")
    em.add_argument("--out", required=True, help="output file: .parquet (id = row number, text, label, kept columns, vector) or "
                    ".npy (the vectors alone); under torchrun or "
                    "accelerate launch, one OUT-stem.shard-R-of-W file per process plus OUT-stem.manifest.json")
    em.add_argument("--pooling", help="auto (default: what the head reads, mean for a base encoder, a sentence-transformers folder's "
                    "own pooling), head, cls, mean or max")
    em.add_argument("--layer", type=int, help="hidden-state index: 0 = embeddings, 1..L, or negative from the top (default -1)")
    em.add_argument("--mean-last", type=int, help="average the last K layers before pooling")
    em.add_argument("--normalize", action=argparse.BooleanOptionalAction, default=None,
                    help="L2-normalise the vectors (default: as a sentence-transformers folder's modules say, else not)")
    em.add_argument("--max-length", type=int, help="token limit (default: the model's training max_length, else a sentence-transformers "
                    "max_seq_length, else the tokenizer's limit up to 512)")
    em.add_argument("--dtype", default="float32", choices=["float32", "float16"], help="storage type of the vectors")
    em.add_argument("--text-column", help="default: the one a taskembed model was trained on, else text")
    em.add_argument("--label-column", help="copied to the output when present (default: as trained, else label)")
    em.add_argument("--split", help="one split of a folder or built-in dataset (default: all, with a split column)")
    em.add_argument("--keep", metavar="COLUMNS", action="append", help="other columns of DATA to copy beside each vector in the .parquet output "
                    "(comma-separated, or all), so that search hits lead back to their documents; one named id, text, label, split, "
                    "vector, rank or score is written as data_<name>; may be repeated")
    em.add_argument("--chunk-size", type=int, default=10_000, help="texts read, embedded and written at a time")
    em.add_argument("--batch-tokens", type=int, help="token budget per batch (default 2048 on CPU, 8192 on a GPU)")
    em.add_argument("--bf16", action="store_true", help="bfloat16 autocast for the matmuls (CPUs with AVX512-BF16/AMX, recent GPUs); "
                    "opt-in: faster, vectors off float32 in the 4th-5th decimal (min cosine 0.9999 for all-MiniLM-L6-v2)")
    em.add_argument("--device", help="where the model runs: cpu, cuda or cuda:N (default: cuda when torch has a GPU, else cpu)")
    em.add_argument("--no-progress", action="store_true")

    ex = sub.add_parser("export", help="write a folder that sentence_transformers.SentenceTransformer loads, or an ONNX classifier "
                        "or encoder")
    ex.add_argument("model", help="a folder `taskembed train` wrote, or (sentence-transformers, onnx-embeddings) any encoder "
                    "folder or id")
    ex.add_argument("out", help="output folder")
    ex.add_argument("--format", default="sentence-transformers", choices=["sentence-transformers", "onnx", "onnx-embeddings"],
                    help="sentence-transformers (default: the embeddings), onnx (the classifier's logits, for onnxruntime) or "
                    "onnx-embeddings (embed's vectors, for onnxruntime)")
    ex.add_argument("--int8", action="store_true", help="onnx, onnx-embeddings: quantise the linear layers' weights to 8 bits "
                    "(smaller, faster on CPUs, scores and vectors move a little)")
    ex.add_argument("--check", metavar="DATA", help="onnx: labelled data (a file, a folder or a built-in name) to compare the "
                    "ONNX model's predictions and accuracy with PyTorch's on")
    ex.add_argument("--split", help="the split of --check DATA (default test)")
    ex.add_argument("--text-column", help="--check DATA's text column (default: the one the model was trained on)")
    ex.add_argument("--text-pair-column", help="--check DATA's second-text column, for a model trained on text pairs")
    ex.add_argument("--label-column", help="--check DATA's label column (default: the one the model was trained on)")
    ex.add_argument("--pooling", help="auto (default: what the head reads, mean for a base encoder), head, cls, mean or max")
    ex.add_argument("--normalize", action=argparse.BooleanOptionalAction, default=None,
                    help="add L2 normalisation (default: as a sentence-transformers source folder's modules say, else not)")
    ex.add_argument("--max-length", type=int, help="token limit (default: the model's training max_length, else a sentence-transformers "
                    "max_seq_length, else the tokenizer's limit up to 512)")
    ex.add_argument("--overwrite", action="store_true", help="replace OUT if an earlier export wrote it (never a folder of other files)")

    se = sub.add_parser("search", help="nearest neighbours of a query among vectors written by `taskembed embed`")
    se.add_argument("vectors", help="a .parquet or .npy file with its .json sidecar")
    se.add_argument("queries", nargs="*", default=[], help="query text(s) (or --file)")
    se.add_argument("--file", help="queries from a .txt file, one per line")
    se.add_argument("-k", type=int, default=5, help="hits per query (default 5)")
    se.add_argument("--json", action="store_true", help="print the hits as JSON")
    se.add_argument("--model", help="where the model that wrote the vectors is now, if its folder moved (its weights must "
                    "be the ones the sidecar records)")

    co = sub.add_parser("compare", help="before/after report: k-NN and linear-probe accuracy, silhouette, projection plot")
    co.add_argument("base", help="the base encoder (folder or id)")
    co.add_argument("tuned", help="the fine-tuned folder")
    co.add_argument("data", help="labelled texts: a file, a save_to_disk folder or a built-in name")
    co.add_argument("--out-dir", "--out", dest="out_dir", default="embedding_report",  # --out, as lr-find names its folder
                    help="where the JSON and PNG go (default: ./embedding_report)")
    co.add_argument("--split", help="split of a folder or built-in (default: test, else validation, else train)")
    co.add_argument("--text-column", help="default: the one the tuned model was trained on, else text")
    co.add_argument("--label-column", help="default: as the tuned model was trained, else label")
    co.add_argument("--max-texts", type=int, default=2000, help="seeded sample size (default 2000)")
    co.add_argument("--seed", type=int, default=0)
    co.add_argument("--base-pooling", default="mean", help="pooling of the base encoder (default mean)")
    co.add_argument("--tuned-pooling", help="pooling of the tuned model (default: what its head reads)")
    co.add_argument("--device", help="where the model runs: cpu, cuda or cuda:N (default: cuda when torch has a GPU, else cpu)")
    co.add_argument("--no-progress", action="store_true")
    return p


_NEGATIVE = re.compile(r"-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?|-inf|-nan", re.IGNORECASE)
"""A negative number as a value (`--start -1e-3`), which is not an option however it starts."""


def _split_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
    """For train/plan/lr-find: the subcommand, its optional config path and flags go to argparse; `--x.y value` pairs are overrides."""
    if not argv or argv[0] not in ("train", "plan", "lr-find", "sweep"):
        return argv, []
    own = {"--dry-run", "--no-progress", "--json", "--help-config", "-h", "--help"}
    # lr-find's own options that take a value: the option and its value go to argparse.
    valued = {"lr-find": {"--steps", "--start", "--end", "--out"}, "sweep": {"--grid", "--seeds", "--keep"}}.get(argv[0], set())
    head, rest = argv[:1], argv[1:]
    overrides: list[str] = []
    has_config = False
    for i, tok in enumerate(rest):
        prev = rest[i - 1] if i else ""
        # The option just before takes this bare token (or negative number) as its value, unless it is a switch.
        bare = not tok.startswith("-") or _NEGATIVE.fullmatch(tok) is not None
        value_of = prev if prev.startswith("--") and "=" not in prev and bare else None
        if value_of in valued and tok.startswith("-"):
            head[-1] = f"{value_of}={tok}"  # joined: argparse would take '-1e-3' for an option
        elif (value_of == "--resume" and tok in ("latest", "auto")) or (value_of in valued):
            head.append(tok)
        elif not tok.startswith("-") and not has_config and (tok.endswith((".yaml", ".yml")) or value_of in (None, "--resume") or value_of in own):
            # The config path, before or after the flags (no option takes a YAML file as its value); given to argparse
            # first, where --resume (whose value is optional) cannot take it for its own.
            head.insert(1, tok)
            has_config = True
        elif tok == "--resume" or tok.startswith("--resume=") or tok.split("=", 1)[0] in valued or tok in own:
            head.append(tok)
        elif value_of == "--resume" and not tok.startswith("-"):  # `--resume latset`: argparse names the values it takes
            head[-1] = f"--resume={tok}"
        else:
            overrides.append(tok)  # --section.key, and its value
    return head, overrides


def _own_flag_typos(parser: argparse.ArgumentParser, command: str, overrides: list[str]) -> None:
    """train, plan, lr-find and sweep take unknown --words as config overrides: one that is no config option but is
    near one of the subcommand's own flags (--dry_run, lr-find's --step) is said as that flag, by its parser."""
    from taskembed.config import is_option

    if not overrides:
        return
    sub = _subcommands(parser)[command]
    for word in overrides:
        name = word.split("=", 1)[0]
        if not is_option(name[2:].replace("-", "_")) and sub.nearest_option(name):
            sub.error(f"unrecognized arguments: {name}")  # the parser adds the nearest flag


REFUSALS = FIXABLE_WRITE_ERRORS | {errno.ENOENT, errno.EISDIR, errno.ENOTDIR, errno.EEXIST, errno.ENAMETOOLONG}


class _Terminated(KeyboardInterrupt):
    """SIGTERM as an exception, so that what a command was writing is removed as for Ctrl-C; Python's default action
    ends the process on the spot, leaving a half-written output folder behind. (Training handles both signals
    itself, to checkpoint: loop.StopSignals.)"""


def _terminate(_signum, _frame) -> None:
    raise _Terminated()


WRITERS = ("train", "sweep", "lr-find", "predict", "evaluate", "embed", "export", "compare")
"""The commands that write files, for which SIGTERM is taken over (the demo's server handles its own)."""


def main(argv: Sequence[str] | None = None) -> int:
    import signal
    import threading

    argv = list(sys.argv[1:] if argv is None else argv)
    # Only the main thread may set handlers. A Python handler runs when the interpreter next gets control, so a
    # command waiting inside a C call (a collective, say) stops when that returns; torchrun follows up with SIGKILL.
    own = bool(argv) and argv[0] in WRITERS and threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if own else None
    try:
        try:
            with command_line():  # advice names settings as flags (errors.setting)
                return _main(argv)
        finally:
            if own:
                signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
    except _Terminated:  # one that came between the command's own handling and the restore above
        print("terminated", file=sys.stderr)
        return 143


INTERMIXED = ("predict", "search", "demo")
"""Commands whose list of positionals may have options among them (`predict MODEL --bf16 "a text"`): plain argparse
gives the list only the words before the first option and calls the rest unrecognized."""


def _parse(parser: argparse.ArgumentParser, known: list[str]) -> argparse.Namespace:
    # parse_intermixed_args refuses a parser with subcommands, so the subcommand's own parser reads the rest.
    subcommands = _subcommands(parser)
    if known and known[0] in INTERMIXED:
        args = subcommands[known[0]].parse_intermixed_args(known[1:])
        args.command = known[0]
        return args
    args, rest = parser.parse_known_args(known)
    if rest:  # said by the subcommand's parser, which names its own help page and knows its own options
        subcommands[args.command].error(f"unrecognized arguments: {' '.join(rest)}")
    return args


def _main(argv: list[str]) -> int:
    parser = build_parser()
    if not argv:  # `taskembed` alone: what it can do, not an error about a missing argument
        parser.print_help()
        return 0
    known, extra = _split_overrides(argv)
    args = _parse(parser, known)
    _own_flag_typos(parser, args.command, extra)
    try:
        if args.command == "train" and args.help_config:
            return cmd_help_config()
        if args.command == "train":
            return cmd_train(args.config, extra, dry_run=args.dry_run, progress=not args.no_progress, resume=args.resume)
        if args.command == "plan":
            return cmd_plan(args.config, extra, as_json=args.json)
        if args.command == "lr-find":
            return cmd_lr_find(args.config, extra, steps=args.steps, out=args.out, start=args.start, end=args.end,
                               progress=not args.no_progress)
        if args.command == "sweep":
            return cmd_sweep(args.config, extra, args.grid, args.seeds, args.keep, progress=not args.no_progress)
        if args.command == "evaluate":
            return cmd_evaluate(args.model, args.data, args.split, args.out, args.text_column, args.text_pair_column, args.label_column,
                                predictions=args.predictions, device=args.device)
        if args.command == "predict":
            return cmd_predict(args.model, args.texts, args.file, args.out, args.text_column, bf16=args.bf16,
                               text_pair_column=args.text_pair_column, device=args.device)
        if args.command == "push":
            return cmd_push(args.folder, args.repo_id, public=args.public, message=args.message)
        if args.command == "datasets":
            return cmd_datasets()
        if args.command == "demo":
            return cmd_demo(args.models, args.host, args.port, args.share, args.auth)
        if args.command == "embed":
            return cmd_embed(args.model, args.data, args.out, args.pooling, args.layer, args.mean_last, args.normalize, args.dtype,
                             args.max_length, args.text_column, args.label_column, args.split, args.chunk_size, args.batch_tokens,
                             progress=not args.no_progress, bf16=args.bf16, device=args.device, keep=args.keep)
        if args.command == "export":
            return cmd_export(args.model, args.out, args.format, args.pooling, args.normalize, args.max_length, args.overwrite,
                              args.int8, args.check, args.split, args.text_column, args.text_pair_column, args.label_column)
        if args.command == "search":
            return cmd_search(args.vectors, args.queries, args.k, args.json, file=args.file, model=args.model)
        if args.command == "compare":
            return cmd_compare(args.base, args.tuned, args.data, args.out_dir, args.split, args.text_column, args.label_column,
                               args.max_texts, args.seed, args.base_pooling, args.tuned_pooling, progress=not args.no_progress,
                               device=args.device)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:
        # `taskembed ... | head` closed the pipe: not an error; keep Python from complaining at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:
        # What the machine refuses (a full disk, a permission, a folder gone) is the user's to fix, not a traceback.
        # The writers leave nothing half-written behind (artifacts.staged_folder, written_whole, embed's .partial).
        # Other OS errors (a network reset) keep their traceback; the demo checks its host and port before it starts.
        if exc.errno not in REFUSALS:
            raise
        where = f": {exc.filename}" if exc.filename else ""
        print(f"error: {exc.strerror or exc}{where}; free some space, fix the permission or choose another path", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        terminated = isinstance(exc, _Terminated)
        print("terminated" if terminated else "interrupted", file=sys.stderr)
        return 143 if terminated else 130
    return 1


if __name__ == "__main__":
    sys.exit(main())
