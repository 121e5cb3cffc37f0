"""The public Python API: train, load, evaluate, plan, lr_find. The CLI and the demo call these and the public
functions of the modules beside them (embed, compare, config, builtin); none of them reaches into the loop
(TrainingInterrupted, which train raises on SIGINT/SIGTERM, is re-exported here).

Data flows one way: config -> data -> model -> lr plan -> fit -> evaluate -> output folder.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from taskembed import artifacts, builtin, checkpoint, cudagraphs
from taskembed.caller_state import keeps_caller_state
from taskembed.config import Config, DataConfig, as_config, without_effect
from taskembed.data import (IN_MEMORY, SPLIT_ALIASES, Splits, clean_split, encode_split, frames_from_python, label_targets, load_raw, load_splits,
                            read_table, unknown_tokens_note, unlabelled_texts, window_stride)
from taskembed.errors import FIXABLE_WRITE_ERRORS, UserError, again, option, resume_option, setting
from taskembed.metrics import baselines, error_analysis, majority_scores, metrics_from_logits, multi_label_metrics, threshold_report
from taskembed.modeling import can_trim_top_layer, head_reads, is_classifier_config, load_classifier, packaged_model_version
from taskembed.losses import check_class_weight_names, class_weights
from taskembed.lrplan import LrPlan, apply_freezing, build_plan, lr_scale
from taskembed.inference import predict_logits
from taskembed.predict import Classifier
from taskembed.calibration import calibrate
from taskembed.loop import (PRECISION_WORDS, TrainingDiverged, TrainingInterrupted, autocast_dtype, distributed, fit, seed_everything,
                            training_device, use_bf16, world_size)


__all__ = ["TrainResult", "TrainingInterrupted", "evaluate", "load", "lr_find", "make_plan", "plan", "train"]


@dataclass
class TrainResult:
    output_dir: Path
    metrics: dict[str, Any]
    baselines: dict[str, Any] | None
    train_seconds: float
    mlm_seconds: float = 0.0  # the masked-LM stage before training (train.mlm_epochs), not in train_seconds
    eval_seconds: float = 0.0  # the validation passes during training, not in train_seconds (the progress bar's time has both)


def make_plan(cfg: Config, model, world: int = 1) -> LrPlan:
    """The config's rates on `model`, times train.lr_scaling's factor for `world` processes."""
    t = cfg.train
    f = lr_scale(t.lr_scaling, t.batch_size * t.grad_accum * world, t.lr_batch_size)
    return build_plan(model, lr=t.lr * f, decay=t.layer_decay, head_lr=t.head_lr * f,
                      embedding_lr=None if t.embedding_lr is None else t.embedding_lr * f,
                      weight_decay=t.weight_decay, freeze_embeddings=t.freeze_embeddings, freeze_layers=t.freeze_layers,
                      unfreeze_start=t.unfreeze_start if t.gradual_unfreezing != "off" else None)


SMALL_VALIDATION = 50
"""Fewer validation texts than this, choosing the kept weights by accuracy or macro-F1, are said to be coarse."""


@keeps_caller_state
def plan(config: Config | dict[str, Any] | str | Path | None = None, overrides: dict[str, Any] | None = None, *,
         labels: Sequence[str] | None = None) -> LrPlan:
    """The learning-rate plan a config would train with; loads the model (its head sized for `labels`). Without
    `labels`, a built-in dataset's are read (it is on this machine and reads in a second or two); other data is not
    read (a file can be large, a Hub dataset would be downloaded) and the head is sized for two."""
    cfg = as_config(config, overrides)
    if labels is None and cfg.data.source in builtin.BUILTIN_NAMES:
        labels = load_splits(cfg.data).labels
    # With max_length, as training loads it: a data.max_length the model cannot read fails here, so a dry run that
    # passes is not followed by a run that fails once the model has loaded.
    model, _ = load_classifier(cfg.model, list(labels) if labels else ["negative", "positive"], max_length=cfg.data.max_length)
    # The world size scales the rates; reading it needs no process group (a plan under torchrun would otherwise
    # leave one up). build_plan refuses a freeze_layers beyond the model's depth.
    return make_plan(cfg, model, world_size())


def with_data(cfg: Config, data: Any, say: Callable[[str], None]) -> tuple[Config, dict[str, Any] | None]:
    """`data=` given in Python: the config with data.source "<in-memory data>" and the raw splits (without it, the config
    as it is and None).
    The data given replaces the config's source, so a recipe's config serves any data; a source other than the default
    gets a note, since the config named it."""
    if data is None:
        return cfg, None
    given = frames_from_python(data)
    if cfg.data.source not in (DataConfig().source, IN_MEMORY):
        say(f"note: training on the data given in Python (data=), not on data.source {cfg.data.source}")
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, source=IN_MEMORY)), given


def check_data(cfg: Config, splits: Splits, say: Callable[[str], None]) -> tuple[dict[str, int], list[list[str]]]:
    """What training says of its data before loading the model (the notes) or refuses (class weights of unknown labels,
    early stopping without validation); `train --dry-run` says the same. Returns the counts of texts seen in training
    and the lookalike labels, for run.json."""
    for split, where in splits.unlabelled.items():
        carved = {"validation": cfg.data.validation_fraction, "test": cfg.data.test_fraction}[split] > 0
        say(f"note: {where} has no labels (every row's is missing), so it is not used"
            + (f"; the {split} split is carved from train instead" if carved
               else f"; this run has no {split} split (data.{split}_fraction, e.g. 0.1, carves one from train)"))
    if splits.sampled_out:
        left = splits.sampled_out
        say(f"note: data.max_train_samples {cfg.data.max_train_samples} leaves {len(left)} label(s) of the training data out "
            f"({', '.join(left[:10])}{', ...' if len(left) > 10 else ''}), so the model will not know them; a sample holds every "
            "label when it has at least as many rows as there are labels")
    if not splits.multi_label:
        # 'billing|refund' beside 'billing' and 'refund': sets of labels, which single-label training makes classes of their own.
        names = set(splits.labels)
        for sep in ("|", ";", ","):
            joined = [n for n in splits.labels if sep in n and all(part.strip() in names for part in n.split(sep))]
            if joined:
                say(f"note: {len(joined)} label(s) are other labels joined by '{sep}' (such as {joined[0]!r}) and train as classes of "
                    f"their own; if a text may have several labels, set data.multi_label true and data.label_delimiter '{sep}'")
                break
    if splits.ignored:
        say(f"note: {cfg.data.source} has split(s) {', '.join(repr(s) for s in splits.ignored)} that training does not read (it reads "
            "train, validation and test; dev, valid and val as validation); rename one to use it")
    for split, key, default in (("validation", "validation_fraction", DataConfig.validation_fraction), ("test", "test_fraction", DataConfig.test_fraction)):
        value = getattr(cfg.data, key)
        # A fraction carves a split only where the data has none: set on data that has its own, it does nothing.
        if value != default and split in splits.frames and "carved" not in splits.origin.get(split, "carved") and getattr(cfg.data, split) is None:
            say(f"note: data.{key} {value:g} has no effect: {splits.origin[split]} is the data's own {split} split "
                "(a fraction carves one only where the data has none)")
    if splits.renumbered:  # the README promises the dataset's ids: where they cannot hold, the user compares by name
        moved = ", ".join(f"{name} {was} -> {splits.labels.index(name)}" for name, was in list(splits.renumbered.items())[:5])
        say(f"note: the training data has no example of some of its ClassLabel's names, so the model's label ids differ from "
            f"the dataset's ({moved}{', ...' if len(splits.renumbered) > 5 else ''}); compare predictions by name (clf.labels), "
            "not by id")
    seen = splits.seen_in_train()
    for split, n in seen.items():
        if n:  # a test file that is (partly) the training file scores memory: said, not refused (a sanity run may want it)
            say(f"note: {n:,} of the {len(splits.frames[split]):,} {split} examples are also in the training data, so their "
                f"scores overstate accuracy on new text ({splits.origin.get(split, split)})")
    check_class_weight_names(cfg.train.class_weights, splits.labels)  # before the model loads, not after tokenizing
    if cfg.train.sampler == "balanced" and cfg.train.class_weights == "balanced":
        # Each corrects for the imbalance on its own; together the rare classes count twice over.
        say("note: train.sampler balanced and train.class_weights balanced each even out the classes; together they tip "
            "the loss toward the rare ones (most of it for a class of a few percent): use one of them")
    lookalikes = splits.lookalike_labels()
    for names in lookalikes:  # two classes that are probably one: training would learn to tell them apart
        how = "are one number written differently" if names[0].casefold() != names[1].casefold() else "differ only in case"
        say(f"note: labels {' and '.join(repr(n) for n in names)} {how}; they are {len(names)} classes. "
            f"If they mean one, write them one way in {splits.origin.get('train', 'the data')}")
    # A few-shot run or a sample has few of some labels by design (the sample keeps one of each where it can).
    if not splits.multi_label and cfg.data.max_train_per_label is None and cfg.data.max_train_samples is None:
        counts = splits.frames["train"]["label"].value_counts()
        if len(single := [name for name in splits.labels if counts.get(name, 0) == 1]):
            say(f"note: {len(single)} label(s) have a single training example ({', '.join(single[:10])}{', ...' if len(single) > 10 else ''}); "
                "the model can hardly learn a class from one: add examples, or merge or drop the label")
    if conflicts := splits.conflicting_labels():
        text, names, where = conflicts[0]
        shown = text if len(text) <= 60 else text[:57] + "..."
        files = dict.fromkeys(splits.origin.get(s, s).split(" (carved ")[0] for s in where)  # a carved split is its file's
        say(f"note: {len(conflicts):,} text(s) of the data have two or more labels (such as {shown!r}: {', '.join(names)}); the model "
            f"cannot learn both, and scores count either against it: fix the labels or drop one of the rows in {' and '.join(files)}")
    if cfg.train.early_stopping_patience and "validation" not in splits.frames:
        raise UserError(EARLY_STOPPING_NEEDS_VALIDATION)
    return seen, lookalikes


@keeps_caller_state
def lr_find(config: Config | dict[str, Any] | str | Path | None = None, overrides: dict[str, Any] | None = None, **options: Any):
    """Learning-rate range test for a config: the curve, a suggested `train.lr` and its files; see taskembed.lrfind.lr_find."""
    from taskembed.lrfind import lr_find as run  # imported here: lrfind builds on this module's loaders

    return run(config, overrides, **options)


TRAINING_STARTS = "training on "
"""How the line `train` says as training starts begins: what comes before it is about the data and the setup, which a
sweep's trials share."""

EARLY_STOPPING_NEEDS_VALIDATION = ("train.early_stopping_patience needs a validation split; set data.validation_fraction > 0 "
                                   "or give data.validation")


@keeps_caller_state
def train(
    config: Config | dict[str, Any] | str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    *,
    data: Any = None,
    progress: bool = True,
    echo: Callable[[str], None] = print,
    resume: bool | str = False,
    on_log: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train a classifier as the config says and write the output folder. Returns its path and metrics.

    `data` gives the data in Python instead of `data.source`: a pandas DataFrame (the training split; validation and
    test are carved from it as from a file, or come from `data.validation` / `data.test`), a dict of split name to
    DataFrame, or a datasets Dataset / DatasetDict. Its columns are read as the config's `data.*_column` say; messages
    number its rows from 1 in the order given, whatever the frame's index. It replaces a source the config names.
    training_config.json then records `data.source` as "<in-memory data>", and a resume needs the same data again.

    Checkpoints go to `<output.dir>.checkpoints` while training and are deleted once the output folder
    is complete. `resume=True` continues from the latest complete checkpoint (an error if there is
    none), `resume="auto"` continues if there is one and starts afresh otherwise. SIGINT/SIGTERM
    finish the step in flight, checkpoint and raise `taskembed.TrainingInterrupted`; no output folder is written.
    `echo` receives every line the run says (None: silent). `on_log` receives each entry of log.jsonl as training
    writes it (a dict: kind "train" with step, epoch, loss, lr per group and grad_norm, every train.log_every steps; kind "eval" with
    the validation loss, accuracy and macro_f1), for live tracking in TensorBoard, W&B or MLflow; after a resume, from the
    next entry on. Under torchrun only the first process calls it.
    """
    started = time.perf_counter()
    if resume not in (True, False, "auto"):  # "yes" or "no" would both read as true
        raise UserError(f"resume={resume!r}: give True, False or 'auto'")
    echo = echo or (lambda _msg: None)  # echo=None: silent
    # Only the first process speaks (torchrun sets RANK); the group is joined once the config says which device.
    say = echo if int(os.environ.get("RANK", "0") or 0) == 0 else (lambda _msg: None)
    cfg, given = with_data(as_config(config, overrides), data, say)
    device = training_device(cfg.train.device)
    rank, world = distributed(gpu=device.type == "cuda")
    for note in without_effect(cfg):
        say(f"note: {note}")
    out = Path(cfg.output.dir)
    ckpt_root = checkpoint.folder_for(out)
    if resume and not cfg.output.overwrite and (out / artifacts.MODEL_MARKER).is_file() and not checkpoint.step_folders(ckpt_root):
        # A finished run deletes its checkpoints: the overwrite advice below would train again from step 1.
        raise UserError(f"output.dir {out} holds a finished run, so there is nothing to resume (its checkpoints were deleted "
                        f"when it completed); use it as it is, or pass {setting({'output.overwrite': True})} without {resume_option()} to train again")
    artifacts.check_output_dir(out, cfg.output.overwrite)
    if resume and cfg.train.keep_checkpoints == 0:
        if resume != "auto":
            raise UserError(f"{resume_option()} needs checkpoints, but train.keep_checkpoints is 0")
        say("train.keep_checkpoints is 0, so there is nothing to resume: starting afresh")  # a script may pass auto always
    resume_from = checkpoint.resume_point(ckpt_root, resume, cfg.output.overwrite, say) if cfg.train.keep_checkpoints else None
    mlm = cfg.train.mlm_epochs > 0 and resume_from is None  # a resumed run has the stage's weights in its checkpoint
    if mlm and world > 1:
        raise UserError("train.mlm_epochs runs in one process; run it without torchrun, or set train.mlm_epochs 0")

    splits = load_splits(cfg.data, given)
    # Read now, so that a mistake in the file is found before the model loads, not after.
    unlabelled = unlabelled_texts(cfg.data) if mlm and cfg.data.unlabelled else []
    fingerprint = splits.fingerprint()  # a hash over every split: computed once
    if resume_from is not None:
        checkpoint.check_compatible(resume_from, cfg.to_dict(), fingerprint, world, say, labels=splits.labels, device=device.type)
    say(splits.describe())
    seen, lookalikes = check_data(cfg, splits, say)
    embedding_report = cfg.output.embedding_report and "validation" in splits.frames and not splits.multi_label
    if embedding_report and splits.frames["validation"]["label"].nunique() < 2:
        # The report measures how the classes separate; said now, not found after training.
        say(f"note: no embedding report: every validation example has the label '{splits.frames['validation']['label'].iloc[0]}' "
            "(a larger data.validation_fraction or a data.validation file with more classes gives one)")
        embedding_report = False
    seed_everything(cfg.train.seed)  # the new head's initialisation is part of what the seed fixes
    model, tokenizer = load_classifier(cfg.model, splits.labels, multi_label=splits.multi_label, max_length=cfg.data.max_length)
    if embedding_report and head_reads(model.config) is None:  # said now, not found as a failure after training
        say(f"note: no embedding report: taskembed does not know which vector the {model.config.model_type} head reads")
        embedding_report = False
    if is_classifier_config(model.config):
        say(f"note: {cfg.model.name} is a trained classifier: training starts from its encoder, with a new head for these labels")
    lr_plan = make_plan(cfg, model, world)
    apply_freezing(model, lr_plan)
    t = cfg.train
    if t.lr_scaling != "none":
        batch = t.batch_size * t.grad_accum * world
        say(f"train.lr_scaling {t.lr_scaling}: every rate x{lr_scale(t.lr_scaling, batch, t.lr_batch_size):.3g} "
            f"(effective batch {batch}, rates given for batch {t.lr_batch_size})")
    say("learning-rate plan:\n" + lr_plan.table())

    stride = window_stride(cfg.data)
    encoded = {s: encode_split(tokenizer, df, splits.label2id, cfg.data.max_length, stride) for s, df in splits.frames.items()}
    if rank == 0 and (note := unknown_tokens_note(tokenizer, splits.frames["train"]["text"].tolist(), encoded["train"], cfg.model.name)):
        say(note)
    if rank == 0 and "validation" in encoded and (n_val := len(splits.frames["validation"])) < SMALL_VALIDATION and cfg.train.metric != "loss":
        # The kept weights are chosen on it: on a handful of texts accuracy moves in steps of one text and ties for
        # evaluation after evaluation (a tie goes to the lower loss, but the choice is still coarse).
        say(f"note: the best weights are chosen on {n_val} validation text(s), where one text is {100 / n_val:.0f} points of "
            f"accuracy; train.metric loss chooses more finely, and without a validation split (data.validation_fraction 0, "
            "where it is carved from train) every example trains and the last weights are kept (configs/fewshot.yaml)")
    if rank == 0 and (per := splits.sampled or {}).get("per_label_from"):
        say(f"note: data.max_train_per_label {cfg.data.max_train_per_label} keeps {per['per_label_kept']:,} of the "
            f"{per['per_label_from']:,} training examples; set it to null to train on all of them")
    cut = {s: e.truncated for s, e in encoded.items() if e.truncated}
    if rank == 0 and cut:  # predict, evaluate and embed say it too; run.json keeps the counts
        counts = ", ".join(f"{n:,} of {len(splits.frames[s]):,} {s}" for s, n in cut.items())
        say(f"note: texts longer than data.max_length {cfg.data.max_length} tokens are read up to it ({counts}); a longer "
            "data.max_length reads more of them" + ("" if cfg.data.text_pair_column else
                                                   ", and data.long_texts window classifies all of a long text"))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    half = autocast_dtype(cfg.train, device)
    bf16 = half == torch.bfloat16
    trimmed = cfg.train.trim_top_layer and can_trim_top_layer(model)
    lanes = cfg.train.fast_dropout and device.type == "cpu"
    graphs = cfg.train.cuda_graphs and cudagraphs.available(device)
    precision = f" with {PRECISION_WORDS[half]}" if half else ""
    say(f"{TRAINING_STARTS}{device}{precision}{', top layer for [CLS] only' if trimmed else ''}"
        f"{', lane dropout' if lanes else ''}{', CUDA graphs' if graphs else ''}, {world} process(es)")
    if device.type == "cuda" and half is None and cfg.train.bf16 == "auto":
        say(f"note: this GPU has no bf16 units, so training runs in float32; {setting({'train.fp16': True})} trains in float16 on its "
            "tensor cores, with a loss scale (as the Trainer's fp16)")
    if cfg.train.fp16 and device.type == "cpu":
        say("note: train.fp16 on the CPU: float16 arithmetic is emulated here and slower than float32; it is for GPUs without "
            "bf16 units (T4, V100)" + (", and this CPU has bf16: train.fp16 false uses it" if use_bf16(cfg.train.bf16, device) else ""))
    ckpts = None
    if cfg.train.keep_checkpoints:
        checkpoint.check_root(ckpt_root)
        checkpoint.check_disk_space(ckpt_root, model, cfg.train.keep_checkpoints, "validation" in encoded)
        if world > 1:
            torch.distributed.barrier()  # every rank has chosen its checkpoint before rank 0 clears anything
        if rank == 0:
            checkpoint.prepare(ckpt_root, fresh=resume_from is None)
        ckpts = checkpoint.Checkpointing(ckpt_root, cfg.train.checkpoint_every, cfg.train.keep_checkpoints, cfg.to_dict(),
                                         fingerprint, resume_from)
    mlm_info = None
    if cfg.train.mlm_epochs > 0:
        # Last before the loop, after every check that could refuse the run, so that none waits for the stage; the plan's
        # freezing is set, so frozen embeddings or layers stay as they are (gradual unfreezing only orders the loop).
        if not mlm:
            say("masked-LM stage: skipped on resume (its weights are in the checkpoint)")
            mlm_info = {"epochs": cfg.train.mlm_epochs, "ran_before_the_checkpoint_this_run_resumed_from": True}
        else:
            from taskembed.mlm import adapt_encoder

            train = splits.frames["train"]
            texts = train["text"].tolist() + unlabelled
            pairs = train["text_pair"].tolist() if "text_pair" in train else None
            try:
                mlm_info = adapt_encoder(cfg, model, tokenizer, texts, pairs, device, say, progress=progress)
            except KeyboardInterrupt:
                say("interrupted during the masked-LM stage, before any checkpoint: nothing was saved; run the command again")
                raise
    try:
        result = fit(model, lr_plan, cfg.train, encoded["train"], encoded.get("validation"), splits.labels, pad_id,
                     device=device, progress=progress, checkpoints=ckpts,
                     class_weights=class_weights(cfg.train.class_weights, encoded["train"].targets, splits.labels),
                     aggregate=cfg.data.window_aggregate, say=say, on_log=on_log)
    except TrainingInterrupted as exc:
        if given is not None:  # no command line can give the data again
            exc.args = (exc.message("taskembed.train(the same config, data=the same data, resume=True)"),)
        raise
    if result.state.overflow_steps:
        say(f"fp16: {result.state.overflow_steps:,} of {result.state.step:,} optimizer steps made no update, their scaled gradient "
            f"having overflowed float16 (the loss scale halves after each; it ended at {result.state.loss_scale:g})")

    agg = cfg.data.window_aggregate
    logits = {s: predict_logits(model, encoded[s], pad_id, device, agg) for s in ("validation", "test") if s in encoded}
    for s, x in logits.items():
        # Finite weights can still overflow in the forward: a model that answers NaN is not saved as a result.
        if not bool(torch.isfinite(x).all()):
            raise TrainingDiverged(f"after training, the model's {s} logits are not finite: the weights diverged; "
                                   "lower train.lr / train.head_lr or check the data")
    thresholds, skipped = None, {}
    if splits.multi_label:
        # Per-label thresholds tuned on validation; every split is scored at them and at 0.5 (thresholds.json, the card).
        thresholds, metrics = threshold_report(logits, {s: encoded[s].targets for s in logits}, splits.labels,
                                               min_positives=cfg.data.threshold_min_positives)
        skipped = _multi_label_skips(cfg)
        if skipped:
            say(f"multi-label: skipped {', '.join(skipped)} (single-label only)")
    else:
        metrics = {s: metrics_from_logits(logits[s], encoded[s].targets, splits.labels) for s in logits}
    calibration = None
    if cfg.output.calibrate and "validation" not in logits and logits and not splits.multi_label:
        # Said, as the other skips are (the README promises "the run said why"): a few-shot run has no validation split.
        skipped["calibration"] = "no validation split to fit the temperature on (data.validation_fraction or data.validation gives one)"
        say(f"calibration skipped: {skipped['calibration']}")
    if cfg.output.calibrate and "validation" in logits and not splits.multi_label:
        y = {s: torch.tensor(encoded[s].targets) for s in logits}
        calibration, why = calibrate(logits["validation"], y["validation"], {s: (logits[s], y[s]) for s in logits if s != "validation"})
        if why:
            skipped["calibration"] = why
            say(f"calibration skipped: {why}")
        else:
            for s, c in calibration["splits"].items():
                metrics[s]["ece"], metrics[s]["ece_calibrated"] = c["ece_before"], c["ece_after"]
            v = calibration["splits"]["validation"]
            say(f"calibration: temperature {calibration['temperature']:.2f} fitted on validation, expected calibration error "
                f"{100 * v['ece_before']:.1f}% -> {100 * v['ece_after']:.1f}% (predict's calibrated_score)")
    errors = None
    if cfg.output.error_analysis and logits and not splits.multi_label:
        split = "test" if "test" in logits else "validation"
        errors = {"split": split, **error_analysis(logits[split], encoded[split].targets, _joined(splits.frames[split]), splits.labels)}
    base = None
    if cfg.output.baselines and rank == 0:
        tr = splits.frames["train"]
        base = baselines(_joined(tr), label_targets(tr["label"], splits.label2id),
                         {s: (_joined(splits.frames[s]), encoded[s].targets) for s in metrics}, splits.labels, cfg.train.seed)
        if features := next((b["tfidf_logreg"].get("features") for b in base.values()), None):
            say(f"note: the TF-IDF baseline reads {features}")
    split = "validation" if "validation" in metrics else "test" if "test" in metrics else None
    # Said with or without output.baselines (the majority class alone costs nothing); on a handful of texts (under 20)
    # the comparison is chance, so it is not made.
    if rank == 0 and split and not splits.multi_label and metrics[split]["n"] >= 20:
        majority = (base[split]["majority"] if base else
                    majority_scores(label_targets(splits.frames["train"]["label"], splits.label2id), {split: encoded[split].targets},
                                    splits.labels)[split])
        # Both measures: with balanced class weights a model may trade accuracy for the small classes (macro-F1).
        # Against the best of tied classes: a balanced few-shot draw ties them all, and a model that always answers the
        # validation's commonest class learnt nothing whatever the mean of the tie is.
        floor = {k: majority.get(f"best_{k}", majority[k]) for k in ("accuracy", "macro_f1")}
        if metrics[split]["accuracy"] <= floor["accuracy"] and metrics[split]["macro_f1"] <= floor["macro_f1"]:
            # A finite loss can still climb (a rate far too high), or a run be too short to move: the model is saved as
            # asked, but not as a success. Equal on both is a model that answers the most common class whatever the text.
            say(f"note: the model scores no better than always answering the most common class on {split} "
                f"({100 * metrics[split]['accuracy']:.2f}% against {100 * floor['accuracy']:.2f}%): it learnt nothing "
                "useful; if its loss climbed, lower train.lr / train.head_lr (taskembed lr-find suggests one); if it barely "
                "moved, train longer; and check the labels")
        elif base and (tfidf := base[split]["tfidf_logreg"]) and (
                metrics[split]["accuracy"] < tfidf["accuracy"] and metrics[split]["macro_f1"] < tfidf["macro_f1"]):
            # Below a bag of words on both measures: an under-trained run (too few epochs or steps for its rates), which
            # the table's bold row would otherwise present as the result.
            say(f"note: the model scores below the TF-IDF + logistic regression baseline on {split} ({100 * metrics[split]['accuracy']:.2f}% "
                f"against {100 * tfidf['accuracy']:.2f}%, macro-F1 {100 * metrics[split]['macro_f1']:.2f} against "
                f"{100 * tfidf['macro_f1']:.2f}): it is probably under-trained; train longer (train.epochs), or check the rates "
                "(taskembed lr-find)")
    if rank == 0:
        st = result.state
        info = {
            "config": cfg.to_dict(),
            "plan": lr_plan.to_json(),
            "metrics": metrics,
            "baselines": base,
            "calibration": calibration,
            "errors": errors,
            "labels": splits.labels,
            "multi_label": splits.multi_label,
            "thresholds": thresholds,
            "skipped": skipped,
            "best_step": st.best_step or st.step,
            "last_step": st.step,
            "mlm": mlm_info,
            "seed": cfg.train.seed,
            # The packages the default model and built-in data come from are versions of those assets too.
            "versions": {**artifacts.versions(), **packaged_model_version(cfg.model.name), **builtin.package_versions(cfg.data.source)},
            "device": device_name(device),
            "bf16": bf16,
            "fp16": {"overflow_steps": st.overflow_steps, "loss_scale": st.loss_scale} if cfg.train.fp16 else None,
            "trim_top_layer": trimmed,
            "fast_dropout": lanes,
            "token_rows_trained": result.token_rows,
            "cuda_graphs": result.cuda_graphs,
            "train_seconds": st.train_seconds,
            "eval_seconds": st.eval_seconds,
            "total_seconds": time.perf_counter() - started,
            "samples_per_second": st.samples_seen / max(st.train_seconds, 1e-9),
            "tokens_per_second": st.tokens_seen * world / max(st.train_seconds, 1e-9),
            "stopped_early": st.stopped_early,
            "world_size": world,
            "data": {"fingerprint": fingerprint, "origin": splits.origin, "summary": splits.summary(), "seen_in_train": seen,
                     "lookalike_labels": lookalikes, "renumbered_labels": splits.renumbered, "unlabelled_splits": splits.unlabelled, "train_sampled": splits.sampled,
                     "truncated": {s: e.truncated for s, e in encoded.items()},
                     **({"windowed": {s: e.windowed for s, e in encoded.items()}} if stride is not None else {})},
        }
        extra = _embedding_report(cfg, splits, model, tokenizer, say, device) if embedding_report else None
        try:
            artifacts.save(out, cfg.output.overwrite, model, tokenizer, info, st.log, extra=extra)
        except UserError as exc:
            if ckpts is None:
                raise
            # The output folder changed while training (another run wrote it, say). The refusal's own advice would lose
            # the training: --output.overwrite alone trains again from step 1, and another --output.dir does not find
            # the checkpoint, which is kept beside this one. Say how to save without training again instead.
            if out.is_dir() and (out / artifacts.MODEL_MARKER).is_file() and not cfg.output.overwrite:
                raise UserError(f"output.dir {out} was written by something else while this run trained; training is complete "
                                f"and checkpointed in {ckpt_root}: {again()} with {setting({'output.overwrite': True}, resume=True)} "
                                f"to replace that folder, or move it away and {again()} with {resume_option()}, to save without training again") from exc
            raise UserError(f"{exc} (but training is complete and checkpointed in {ckpt_root}, which {resume_option()} finds only beside "
                            f"this output.dir: make room there and {again()} with {resume_option()} to save without training again)") from exc
        except OSError as exc:
            if ckpts is None or exc.errno not in FIXABLE_WRITE_ERRORS:
                raise
            # The machine refused the model folder after all the training: the last step is checkpointed, so say how
            # to save it without training again.
            raise UserError(f"{exc.strerror}: {exc.filename or out}; training is complete and checkpointed in {ckpt_root}: free some "
                            f"space (or fix the permission) and {again()} with {resume_option()} to save it without training again") from exc
        try:
            checkpoint.remove(ckpt_root)  # only now: a failure while saving leaves the last checkpoint to --resume from
        except KeyboardInterrupt:
            # Ctrl-C while the checkpoints were being deleted: the model folder is complete, so this run succeeded;
            # finish the deletion (a second Ctrl-C would stop it, leaving only `.old-` folders the next start removes).
            checkpoint.remove(ckpt_root)
    if world > 1:
        torch.distributed.barrier()  # no rank returns before rank 0 has written the folder
        torch.distributed.destroy_process_group()
    return TrainResult(output_dir=out, metrics=metrics, baselines=base, train_seconds=result.state.train_seconds,
                       mlm_seconds=(mlm_info or {}).get("seconds", 0.0), eval_seconds=result.state.eval_seconds)


def _multi_label_skips(cfg: Config) -> dict[str, str]:
    """The reports a multi-label run does not write although the config asks for them, and why (for the card)."""
    why = {
        "calibration": "temperature scaling fits one softmax over the classes; the labels here are independent sigmoids",
        "error analysis": "confused label pairs and the loss of the true class assume exactly one label per example",
        "embedding report": "k-NN and linear-probe accuracy score one label per text",
    }
    asked = {"calibration": cfg.output.calibrate, "error analysis": cfg.output.error_analysis, "embedding report": cfg.output.embedding_report}
    return {name: reason for name, reason in why.items() if asked[name]}


def _embedding_report(cfg: Config, splits: Splits, model, tokenizer, say: Callable[[str], None],
                      device: torch.device) -> Callable[[Path], str]:
    """A hook for artifacts.save: base vs tuned embeddings of the validation texts, written into the folder; the base
    encoder runs where the tuned one trained."""

    def write(folder: Path) -> str:
        from taskembed.compare import compare, report_markdown
        from taskembed.embed import Embedder

        val = splits.frames["validation"]
        tuned = Embedder.from_model(model, tokenizer, name=str(cfg.output.dir), max_length=cfg.data.max_length)
        # Said first: with many labels the cross-validated probes take a minute or more, after the last progress line.
        n = min(len(val), cfg.output.embedding_report_max_texts)
        say(f"embedding report: {n:,} validation texts through the base and the tuned encoder, k-NN and linear probes "
            "(output.embedding_report false skips it)")
        try:
            # A pair model's texts are read with their second texts on both sides, as the model reads them.
            report = compare(cfg.model.name, tuned, val["text"].tolist(), val["label"].tolist(), folder,
                             max_texts=cfg.output.embedding_report_max_texts, seed=cfg.train.seed,
                             data={"source": cfg.data.source, "split": "validation"}, base_options={"device": str(device)},
                             pairs=val["text_pair"].tolist() if "text_pair" in val else None)
        except UserError as exc:
            # The report describes the model; what stops it must not cost the trained model its folder.
            say(f"embedding report left out: {exc}")
            return f"## Embeddings before and after\n\nLeft out: {exc}\n"
        b, t = report["base"], report["tuned"]

        def pct(v: float | None) -> str:
            return "n/a" if v is None else f"{100 * v:.1f}"

        say(f"embeddings (validation): k-NN accuracy {pct(b['knn_accuracy'])} -> {pct(t['knn_accuracy'])}, "
            f"linear probe {pct(b['linear_probe_accuracy'])} -> {pct(t['linear_probe_accuracy'])} (base -> tuned)")
        return report_markdown(report)

    return write


def push(folder: str | Path, repo_id: str, *, private: bool = True, message: str | None = None) -> str:
    """Upload a trained output folder to the Hugging Face Hub as a model repository, created if it is not there: private
    unless `private=False`. The folder already is what the Hub shows (safetensors weights, a model card with its YAML
    header, JSON metadata). Only the files training wrote go (run.json lists them): predictions or evaluations written
    beside them hold the user's own texts (`pushed_extra` names those left out). Returns the repository's URL."""
    import re

    from taskembed import hub

    folder = Path(folder).expanduser()
    if not (folder / artifacts.MODEL_MARKER).is_file():
        raise UserError(f"{folder}: not a model folder taskembed wrote (no {artifacts.MODEL_MARKER}); push a trained output folder")
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo_id):
        raise UserError(f"{repo_id}: name the repository owner/name (your user or organisation, then the model's name)")
    why = hub.unreachable("model")
    if why:
        raise UserError(f"cannot push to the Hugging Face Hub: it cannot be reached ({why})")
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HFValidationError, HfHubHTTPError

    # The HTTP library's own errors (a connection dropped mid-upload) share a base with HfHubHTTPError.
    transport = next((c for c in HfHubHTTPError.__mro__[1:] if c.__name__ == "HTTPError"), OSError)
    client = HfApi()
    try:
        url = client.create_repo(repo_id, private=private, exist_ok=True)
        # Hidden files (a staging folder's leftovers, editor files) are not part of the model, nor files training did
        # not write (a folder from before run.json listed them goes whole, as it did then).
        written = artifacts.files_written(folder)
        client.upload_folder(repo_id=repo_id, folder_path=folder, ignore_patterns=[".*", "**/.*"], allow_patterns=written,
                             commit_message=message or f"taskembed: upload {folder.name}")
    except HFValidationError as exc:  # a name the Hub does not take ('me/a..b', '--', over 96 characters)
        raise UserError(f"{repo_id}: not a repository name the Hub takes ({str(exc).strip().splitlines()[0][:200]})") from None
    except (HfHubHTTPError, transport, OSError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise UserError(f"pushing {folder} to {repo_id} failed ({first}); log in with `hf auth login` or set HF_TOKEN, "
                        "and check that you may write to that owner") from None
    return str(url)


def pushed_extra(folder: str | Path) -> list[str]:
    """Files in a model folder that `push` leaves out: not hidden, and not among those training wrote."""
    folder = Path(folder).expanduser()
    written = artifacts.files_written(folder)
    if written is None:
        return []
    paths = (p.relative_to(folder) for p in folder.rglob("*") if p.is_file())
    return sorted(str(p) for p in paths if not any(part.startswith(".") for part in p.parts) and str(p) not in written)


@keeps_caller_state
def load(folder: str | Path, device: str | None = None, bf16: bool = False) -> Classifier:
    """A trained model folder, ready to `predict`. bf16=True: bfloat16 autocast where the hardware has native units."""
    return Classifier(folder, device=device, bf16=bf16)


@keeps_caller_state
def evaluate(folder: str | Path | Classifier, data: Any, split: str | None = None, *, text_column: str | None = None,
             text_pair_column: str | None = None, label_column: str | None = None, predictions: bool = False) -> dict[str, Any]:
    """Score a trained folder (or a classifier `load` returned, without loading it again) on DATA: a whole file, or one split of a folder or built-in dataset (`split`, default
    test; a file has none to pick). In Python DATA may also be a pandas DataFrame or datasets Dataset (scored whole),
    or a dict of split name to DataFrame or a DatasetDict (one split, as for a folder).

    The columns default to the ones the model was trained on; name others for data laid out differently.
    `predictions=True` adds "predictions": one dict per example, in the data's order, for error analysis:
    text, [text_pair], label (the truth), predicted, correct, score (the predicted label's probability), p_label (the
    true label's) and scores ({label: probability}), and where the run calibrated, calibrated_score and calibrated_scores
    as predict gives them; multi-label: the label sets as lists, correct when they are equal, and each label's sigmoid.
    """
    clf = folder if isinstance(folder, Classifier) else load(folder)
    folder = clf.folder
    trained = clf.training_config.get("data", {})
    if label_column and clf.multi_label and trained.get("label_columns"):
        raise UserError(f"{option('--label-column', label_column)}: {folder} reads its labels from the 0/1 columns "
                        f"{', '.join(trained['label_columns'])}, which the data must have; drop it")
    if text_pair_column and not clf.text_pair_column:
        raise UserError(f"{option('--text-pair-column', text_pair_column)}: {folder} was trained on single texts; drop it")
    in_memory = not isinstance(data, (str, Path))
    dcfg = DataConfig(source=IN_MEMORY if in_memory else str(data), text_column=text_column or trained.get("text_column", "text"),
                      text_columns=None if text_column else trained.get("text_columns"),
                      text_pair_column=text_pair_column or trained.get("text_pair_column"),
                      label_column=label_column or trained.get("label_column", "label"), validation_fraction=0.0, max_length=clf.max_length,
                      multi_label=clf.multi_label, label_delimiter=trained.get("label_delimiter") if clf.multi_label else None,
                      label_columns=trained.get("label_columns") if clf.multi_label else None)
    named = [c for c in (dcfg.text_column, dcfg.text_pair_column, None if dcfg.label_columns else dcfg.label_column) if c]
    if len(set(named)) < len(named):
        raise UserError(f"the text, second-text and label columns must differ (they are {', '.join(named)}); "
                        f"name each with {option('--text-column')}, {option('--text-pair-column')} and {option('--label-column')}")

    def flag(field: str) -> str | None:  # the evaluate command's own options; how labels and joined texts are read, the model fixes
        if field in ("multi_label", "label_columns", "label_delimiter", "text_columns"):
            return None
        return "--" + field.replace("_", "-") if field in ("text_column", "text_pair_column", "label_column") else f"data.{field}"

    import datasets

    if in_memory and not isinstance(data, (dict, datasets.DatasetDict)):  # one table: all of it is scored
        if split is not None:
            raise UserError(f"split {split}: a single table has no splits; drop split")
        df, where = clean_split(frames_from_python(data)["train"], dcfg, "data", flag), "data"
    elif in_memory:
        split = SPLIT_ALIASES.get(split or "test", split or "test")
        raw = frames_from_python(data)
        if split not in raw:
            raise UserError(f"data: has no '{split}' split (it has {', '.join(raw)}); pick one with split")
        where = f"data['{split}']"
        df = clean_split(raw[split], dcfg, where, flag)
    elif Path(data).expanduser().is_file():  # ~/x.csv from Python or in quotes, as config paths read it
        if split is not None:
            raise UserError(f"--split {split}: {data} is a single file, which has no splits; drop --split")
        df, where = clean_split(read_table(data), dcfg, data, flag), data
    else:
        split = SPLIT_ALIASES.get(split or "test", split or "test")  # a dataset's "dev" is read as validation
        raw, origin = load_raw(dcfg, training=False)
        if split not in raw:
            raise UserError(f"{data}: has no '{split}' split (it has {', '.join(raw)}); pick one with --split")
        where = origin.get(split, f"{data} [{split}]")
        df = clean_split(raw[split], dcfg, where, flag)
    known = set(clf.labels)
    given = {x for value in df["label"] for x in (value if clf.multi_label else (value,))}
    if given and not given & known:  # another task's data, not a few stray rows
        raise UserError(f"{where}: none of its labels ({', '.join(sorted(given)[:8])}{', ...' if len(given) > 8 else ''}) is one "
                        f"the model knows ({', '.join(clf.labels[:8])}{', ...' if len(clf.labels) > 8 else ''})"
                        + (next(filter(None, (_same_number(g, known) for g in sorted(given))), "") or "; is it the data for this model?"))
    for row, value in enumerate(df["label"], start=1):
        unknown = [x for x in (value if clf.multi_label else (value,)) if x not in known]
        if unknown:
            raise UserError(f"{where}: row {row}: label '{unknown[0]}' is not one the model knows ({', '.join(clf.labels)})"
                            f"{_same_number(unknown[0], known)}; drop the rows with it")
    enc = encode_split(clf.tokenizer, df, {name: i for i, name in enumerate(clf.labels)}, clf.max_length, clf.window_stride)
    logits = predict_logits(clf.model, enc, clf.tokenizer.pad_token_id or 0, clf.device, clf.window_aggregate)
    if clf.multi_label:
        # At the folder's thresholds (what predict decides with) and at 0.5, as in its metrics.json.
        m = multi_label_metrics(logits, enc.targets, clf.labels, [clf.thresholds[x] for x in clf.labels])
        m["at_0.5"] = multi_label_metrics(logits, enc.targets, clf.labels)
        m["thresholds"], m["thresholds_tuned"] = dict(clf.thresholds), clf.thresholds_tuned
    else:
        m = metrics_from_logits(logits, enc.targets, clf.labels)
    m["truncated"] = enc.truncated
    if clf.window_stride is not None:
        m["windowed"] = enc.windowed
    if predictions:
        m["predictions"] = _prediction_rows(clf, df, logits)
    return m


def _same_number(label: str, known: set[str]) -> str:
    """A hint when `label` is a number the model knows written another way ('4.0', read as a float, for '4'), else ""."""
    def number(text: str) -> float | None:
        try:
            return float(text)
        except ValueError:
            return None

    value = number(label)
    same = next((k for k in sorted(known) if value is not None and number(k) == value), None)
    return f" (the model's label '{same}' is the same number: write the labels as the training data did)" if same else ""


def _prediction_rows(clf: Classifier, df, logits: torch.Tensor) -> list[dict[str, Any]]:
    """evaluate's per-example rows: what the model said next to the truth, in the data's order."""
    probs = (torch.sigmoid(logits) if clf.multi_label else logits.softmax(-1)).tolist()
    # As predict gives them where the run calibrated: a threshold chosen on these rows is one predict can apply.
    calibrated = (logits / clf.temperature).softmax(-1).tolist() if clf.temperature and not clf.multi_label else None
    pairs = df["text_pair"].tolist() if "text_pair" in df else None
    rows = []
    for i, (text, truth, row) in enumerate(zip(df["text"].tolist(), df["label"].tolist(), probs)):
        scores = dict(zip(clf.labels, row))
        first = {"text": text, **({"text_pair": pairs[i]} if pairs is not None else {})}
        if clf.multi_label:  # decided at the folder's thresholds, as predict and the headline metrics decide
            chosen = clf.over_thresholds(row)
            rows.append({**first, "labels": list(truth), "predicted": chosen, "correct": set(chosen) == set(truth), "scores": scores})
            continue
        best = max(range(len(row)), key=row.__getitem__)
        rows.append({**first, "label": truth, "predicted": clf.labels[best], "correct": clf.labels[best] == truth,
                     "score": row[best], "p_label": scores[truth], "scores": scores,
                     **({"calibrated_score": calibrated[i][best], "calibrated_scores": dict(zip(clf.labels, calibrated[i]))}
                        if calibrated else {})})
    return rows


def _joined(df) -> list[str]:
    if "text_pair" in df:
        return [f"{a} [SEP] {b}" for a, b in zip(df["text"], df["text_pair"])]
    return df["text"].tolist()


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU ({cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} threads)"
