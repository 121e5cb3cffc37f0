"""Checkpoints: everything a run needs to continue exactly, written atomically and verified before use.

They live beside the output folder, never inside it (the output folder is the contract and is
written once, at the end, by `artifacts.save`):

    <output.dir>.checkpoints/
        step-000012/
            model.safetensors       the weights
            best.safetensors        the best validation weights so far (when there is validation)
            optimizer.safetensors   every tensor of optimizer.state_dict() (AdamW moments, step counts)
            optimizer.json          the rest of it, tensors replaced by references; parameter names and shapes per group
            scheduler.json          the lr scheduler's state
            rng.safetensors         torch CPU (and CUDA) generator states, one per rank
            rng.json                python `random` and numpy generator states
            state.json              TrainState: step, epoch, position in the epoch, best metric, the log, ...
            lr_plan.json            the lr plan
            training_config.json    the resolved config
            meta.json               format version, torch and transformers versions, world size, data fingerprint,
                                    total steps, device
            COMPLETE.json           sha256 and size of every file above; written last
        .tmp-step-000014-1a2b3c4d/  a checkpoint being written (never read; removed on the next start)

A checkpoint is written into a temporary folder, every file is flushed and fsynced, the marker
comes last, and only then is the folder renamed into place; older ones are pruned only after that.
Loading reads safetensors and JSON only: nothing is unpickled, `torch.load` is never called, and a
folder holding any other kind of file is refused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import re
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from taskembed.config import Config
from taskembed.data import IN_MEMORY
from taskembed.errors import UserError, raise_write_error, resume_option, setting

FORMAT = 1
MARKER = "COMPLETE.json"
FILES = (
    "model.safetensors", "best.safetensors", "optimizer.safetensors", "optimizer.json", "scheduler.json",
    "rng.safetensors", "rng.json", "state.json", "lr_plan.json", "training_config.json", "meta.json",
)
REQUIRED = tuple(f for f in FILES if f != "best.safetensors")
_STEP_DIR = re.compile(r"^step-(\d+)$")
# Test-only: seconds to sleep after a checkpoint's files are written and before its marker, so a
# test can kill the process in the middle of a write deterministically. Never set it in real runs.
SLOW_HOOK = "TASKEMBED_TEST_SLOW_CHECKPOINT"

# Options that may differ between a checkpoint and the run that resumes it: none of them changes
# what the optimizer state means, the schedule, or the sequence of batches.
MAY_CHANGE_ON_RESUME = {
    "train.checkpoint_every", "train.keep_checkpoints", "train.num_threads", "train.device",
    "output.dir", "output.overwrite", "output.baselines", "output.calibrate", "output.error_analysis",
    "output.embedding_report", "output.embedding_report_max_texts",
}


def library_versions() -> dict[str, str]:
    """The libraries whose kernels and random-number use decide the numbers a resumed run computes."""
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__}


@dataclasses.dataclass
class Checkpointing:
    """Where and how often `fit` checkpoints, and the checkpoint it continues from."""

    root: Path
    """The checkpoint folder, `<output.dir>.checkpoints`."""
    every: int
    """Also checkpoint every N optimizer steps; 0 = only at epoch ends, the last step and on a stop signal."""
    keep: int
    """Newest checkpoints kept (each holds the best weights so far)."""
    config: dict[str, Any]
    """The resolved config, saved with every checkpoint and compared on resume."""
    fingerprint: str
    """Fingerprint of the data, compared on resume."""
    resume_from: Path | None = None
    """A verified checkpoint to continue from; None starts afresh."""


def folder_for(out: Path) -> Path:
    """The checkpoint folder of an output folder: a sibling, so checkpoints never enter the output."""
    out = Path(out)
    return out.with_name(out.name + ".checkpoints")


# --- nested state <-> JSON + tensors (no pickle) ---------------------------------------------------


def flatten(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """JSON data for `obj`, its tensors moved into `tensors` under dotted names.

    Covers what optimizer and scheduler state dicts hold: dicts (with int keys too), lists, tuples,
    tensors, numbers, strings, booleans and None. Anything else is an error, not a pickle.
    """
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj.detach().to("cpu", copy=True).contiguous()
        return {"__tensor__": prefix}
    if isinstance(obj, tuple):
        return {"__tuple__": [flatten(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [flatten(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: flatten(v, f"{prefix}.{k}", tensors) for k, v in obj.items()}
        return {"__items__": [[flatten(k, f"{prefix}.key{i}", tensors), flatten(v, f"{prefix}.{k}", tensors)]
                              for i, (k, v) in enumerate(obj.items())]}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"{prefix}: cannot checkpoint a {type(obj).__name__} without pickle")


def unflatten(data: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """The inverse of `flatten`."""
    if isinstance(data, list):
        return [unflatten(v, tensors) for v in data]
    if isinstance(data, dict):
        if set(data) == {"__tensor__"}:
            return tensors[data["__tensor__"]]
        if set(data) == {"__tuple__"}:
            return tuple(unflatten(v, tensors) for v in data["__tuple__"])
        if set(data) == {"__items__"}:
            return {unflatten(k, tensors): unflatten(v, tensors) for k, v in data["__items__"]}
        return {k: unflatten(v, tensors) for k, v in data.items()}
    return data


# --- RNG streams --------------------------------------------------------------------------------------


def _all_gather(t: torch.Tensor, world: int, device: torch.device) -> list[torch.Tensor]:
    """Every rank's copy of a same-sized uint8 tensor (a collective: every rank must call it)."""
    if world == 1:
        return [t]
    t = t.to(device if torch.distributed.get_backend() == "nccl" else "cpu")
    out = [torch.empty_like(t) for _ in range(world)]
    torch.distributed.all_gather(out, t)
    return [x.cpu() for x in out]


def capture_rng(world: int, device: torch.device) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Every generator the run draws from: torch CPU and CUDA per rank (dropout), python and numpy.

    Under DDP this is a collective, so every rank calls it at the same step; ranks draw different
    amounts of dropout noise (their batches differ in shape), so each rank's stream is kept.
    """
    tensors = {f"torch_cpu.rank{r}": t for r, t in enumerate(_all_gather(torch.get_rng_state(), world, device))}
    if device.type == "cuda":
        tensors.update({f"torch_cuda.rank{r}": t for r, t in enumerate(_all_gather(torch.cuda.get_rng_state(device), world, device))})
    py = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    # Nothing in the loop draws from python or numpy, so rank 0's states stand for every rank.
    return tensors, {"python": [py[0], list(py[1]), py[2]], "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]}


def restore_rng(tensors: dict[str, torch.Tensor], data: dict[str, Any], rank: int, device: torch.device) -> None:
    torch.set_rng_state(tensors[f"torch_cpu.rank{rank}"])
    if device.type == "cuda" and f"torch_cuda.rank{rank}" in tensors:
        torch.cuda.set_rng_state(tensors[f"torch_cuda.rank{rank}"], device)
    version, keys, gauss = data["python"]
    random.setstate((version, tuple(keys), gauss))
    name, keys, pos, has_gauss, cached = data["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))


# --- writing ------------------------------------------------------------------------------------------


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks (checkpoints and embedding shard manifests)."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_json(path: Path, obj: Any) -> None:
    with path.open("w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())


def _group_params(model, optimizer) -> list[dict[str, Any]]:
    """Names and shapes of each optimizer group's parameters: what the optimizer state belongs to."""
    names = {id(p): n for n, p in model.named_parameters()}
    return [{"name": g.get("name", str(i)), "params": [names.get(id(p), "?") for p in g["params"]],
             "shapes": [list(p.shape) for p in g["params"]]} for i, g in enumerate(optimizer.param_groups)]


def save_checkpoint(
    root: Path,
    model,
    optimizer: torch.optim.Optimizer,
    scheduler,
    state: dict[str, Any],
    *,
    best_weights: dict[str, torch.Tensor] | None,
    rng: tuple[dict[str, torch.Tensor], dict[str, Any]],
    plan: dict[str, Any],
    config: dict[str, Any],
    meta: dict[str, Any],
) -> Path:
    """Write `root/step-NNNNNN` atomically and return it. Call it on rank 0 only."""
    from safetensors.torch import save_file, save_model

    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{state['step']:06d}"
    tmp = root / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        save_model(model, str(tmp / "model.safetensors"))
        if best_weights is not None:
            save_file({k: v.contiguous() for k, v in best_weights.items()}, str(tmp / "best.safetensors"))
        opt_tensors: dict[str, torch.Tensor] = {}
        opt = flatten(optimizer.state_dict(), "opt", opt_tensors)
        save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
        _write_json(tmp / "optimizer.json", {"state_dict": opt, "groups": _group_params(model, optimizer)})
        sched_tensors: dict[str, torch.Tensor] = {}
        _write_json(tmp / "scheduler.json", flatten(scheduler.state_dict(), "sched", sched_tensors))
        if sched_tensors:
            raise TypeError("scheduler state holds tensors; store them like the optimizer's")
        save_file(rng[0], str(tmp / "rng.safetensors"))
        _write_json(tmp / "rng.json", rng[1])
        _write_json(tmp / "lr_plan.json", plan)
        _write_json(tmp / "training_config.json", config)
        _write_json(tmp / "meta.json", {"format": FORMAT, "versions": library_versions(), **meta})
        _write_json(tmp / "state.json", state)
        files = sorted(p.name for p in tmp.iterdir())
        for name in files:
            _fsync(tmp / name)
        if os.environ.get(SLOW_HOOK):
            time.sleep(float(os.environ[SLOW_HOOK]))
        _write_json(tmp / MARKER, {"format": FORMAT, "step": state["step"],
                                   "files": {n: {"sha256": file_sha256(tmp / n), "bytes": (tmp / n).stat().st_size} for n in files}})
        _fsync(tmp)
        if final.exists():  # the same step again (a resumed run that went back past a broken checkpoint)
            old = root / f".old-{final.name}-{uuid.uuid4().hex[:8]}"
            final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(final)
        _fsync(root)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise_write_error(exc, final, tmp)
    return final


def step_folders(root: Path) -> list[tuple[int, Path]]:
    """(step, folder) of every `step-N` folder, newest first; complete or not."""
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _STEP_DIR.match(p.name))]
    return sorted(found, reverse=True)


def prune(root: Path, keep: int, saved_step: int | None = None) -> None:
    """Delete all but the `keep` newest complete checkpoints. (Each holds the best weights so far, so the one taken
    at the best step has nothing the newest lacks.) With `saved_step`, the step just saved: folders of later steps are
    an earlier run's, which a resume went back past (they failed to verify), and go too. Counted among the newest, a
    broken one kept a slot, and with keep 1 the checkpoint just reported saved was deleted in its place."""
    folders = step_folders(root)
    for step, p in folders:
        if saved_step is not None and step > saved_step:
            _discard(p)
    complete = [p for step, p in folders if (p / MARKER).is_file() and (saved_step is None or step <= saved_step)]
    for p in complete[keep:]:
        _discard(p)


def _discard(folder: Path) -> None:
    """Delete a checkpoint folder, renamed out of the way first: a deletion stopped half-way (Ctrl-C) then leaves an
    `.old-` folder that the next start removes, never a `step-N` folder without its marker, which would pass for one
    that was being written when the run stopped."""
    if _STEP_DIR.match(folder.name):
        moved = folder.with_name(f".old-{folder.name}-{uuid.uuid4().hex[:8]}")
        try:
            folder.rename(moved)
            folder = moved
        except OSError:
            pass  # then delete it where it is
    shutil.rmtree(folder, ignore_errors=True)


def prepare(root: Path, fresh: bool) -> None:
    """Before training (rank 0): drop half-written temporaries, and every old checkpoint on a fresh start."""
    if not root.is_dir():
        return
    for p in root.iterdir():
        if p.name.startswith((".tmp-", ".old-")) or (fresh and _STEP_DIR.match(p.name)):
            _discard(p)


def remove(root: Path) -> None:
    """After the output folder is complete the checkpoints have done their job: delete them (and the folder if empty)."""
    prepare(root, fresh=True)
    try:
        root.rmdir()
    except OSError:
        pass  # absent, or holds files that are not ours


# --- finding and verifying ------------------------------------------------------------------------------


def verify(folder: Path) -> str | None:
    """Why `folder` is not a complete, intact checkpoint (None when it is).

    A folder holding a file that no checkpoint writes (a pickle, say) raises a UserError: that is
    not damage from a crash but something put there, and it is never read.
    """
    foreign = sorted(p.name for p in folder.iterdir() if p.name not in FILES and p.name != MARKER)
    if foreign:
        raise UserError(
            f"{folder}: holds {', '.join(foreign)}, which taskembed never writes into a checkpoint; refusing to read it "
            "(checkpoints are safetensors and JSON only, never pickle). Remove that folder to resume from an older checkpoint"
        )
    if not (folder / MARKER).is_file():
        return "incomplete (no COMPLETE.json; it was being written when the run stopped)"
    try:
        listed = json.loads((folder / MARKER).read_text(encoding="utf-8"))["files"]
    except (ValueError, KeyError, TypeError):
        return "COMPLETE.json is unreadable"
    if not isinstance(listed, dict) or not all(isinstance(v, dict) for v in listed.values()):
        return "COMPLETE.json is unreadable"
    missing = [f for f in REQUIRED if f not in listed]
    if missing:
        return f"COMPLETE.json does not list {missing[0]}"
    for name, want in listed.items():
        path = folder / name
        if name not in FILES:
            raise UserError(f"{folder}: COMPLETE.json lists {name}, which taskembed never writes into a checkpoint; refusing to read it")
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != want.get("bytes") or file_sha256(path) != want.get("sha256"):
            return f"{name} does not match its checksum"
    return None


def latest(root: Path) -> tuple[Path | None, list[str]]:
    """The newest checkpoint that verifies, and a note for each newer one that was skipped."""
    skipped = []
    for _, folder in step_folders(root):
        problem = verify(folder)
        if problem is None:
            return folder, skipped
        skipped.append(f"{folder.name}: {problem}")
    return None, skipped


def resume_point(root: Path, resume: bool | str, overwrite: bool, say=print) -> Path | None:
    """The checkpoint a run continues from (None: start afresh), or a UserError saying why neither works.

    resume False: start afresh; refused when checkpoints of an earlier run are there, unless overwrite.
    resume True: the latest complete checkpoint, an error if there is none.
    resume "auto": the latest complete checkpoint if there is one, else start afresh.
    """
    folders = step_folders(root)
    if resume is False:
        if folders and not overwrite:
            raise UserError(
                f"{root} holds checkpoints of an earlier run into this output.dir (newest {folders[0][1].name}); "
                f"continue it with {resume_option()}, or pass {setting({'output.overwrite': True})} to start afresh and delete them"
            )
        return None
    found, skipped = latest(root)
    for note in skipped:
        say(f"skipping checkpoint {note}")
    if found is not None:
        return found
    if resume == "auto":
        if folders:
            say(f"no usable checkpoint in {root}; starting afresh")
        return None
    why = f" ({'; '.join(skipped)})" if skipped else ""
    raise UserError(f"no complete checkpoint in {root} to resume from{why}; run without {resume_option()} to start afresh")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: unreadable checkpoint file ({exc}); resume from another checkpoint or start afresh") from None


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        # Copies, not views of a mapped file: the folder may be pruned while these are still in use.
        return {k: v.clone() for k, v in load_file(str(path)).items()}
    except Exception as exc:  # safetensors raises its own error type for a file that is not safetensors
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise UserError(f"{path}: not a valid safetensors file ({first}); taskembed never unpickles checkpoints") from None


def _describe(key: str, old: Any, new: Any) -> str:
    section, name = key.split(".", 1)
    if name in ("batch_size", "grad_accum", "epochs", "warmup_ratio", "schedule", "eval_every"):
        why = "changes the schedule"
    elif name in ("lr", "head_lr", "embedding_lr", "layer_decay", "weight_decay", "freeze_embeddings", "freeze_layers"):
        why = "changes the lr plan the optimizer state belongs to"
    elif section in ("model", "data"):
        why = f"changes the {section}"
    else:
        why = "changes the run"
    return f"{key} {old!r} -> {new!r} ({why})"


def read_meta(folder: Path) -> dict[str, Any]:
    """A checkpoint's meta.json: format, library versions, world size, data fingerprint, total steps, device."""
    return _read_json(folder / "meta.json")


SAME_PATH_KEYS = ("data.source", "data.validation", "data.test", "data.unlabelled", "model.name")
"""Config values that may name one file or folder in two ways (relative and absolute, a trailing slash)."""


def _same_path(key: str, old: Any, new: Any) -> bool:
    """Whether two spellings of a path key name the same existing file or folder: not a change (the data's own
    fingerprint and the weights still guard the content)."""
    if key not in SAME_PATH_KEYS or not isinstance(old, str) or not isinstance(new, str):
        return False
    a, b = Path(old).expanduser(), Path(new).expanduser()
    return a.exists() and b.exists() and os.path.samefile(a, b)


def check_compatible(folder: Path, config: dict[str, Any], fingerprint: str, world: int,
                     say: Callable[[str], None] = lambda _m: None, labels: list[str] | None = None,
                     device: str | None = None) -> None:
    """A UserError naming what changed when the current run cannot continue `folder` exactly.

    Other library versions are no reason to refuse (the run is still the same run), but the continuation may
    then differ in the last bits from the one the old versions would have computed: `say` tells the user."""
    saved = _read_json(folder / "training_config.json")
    meta = read_meta(folder)
    now = library_versions()
    if meta.get("versions", now) != now:
        then = ", ".join(f"{k} {v}" for k, v in meta["versions"].items())
        say(f"note: {folder} was written with {then}; this run has {', '.join(f'{k} {v}' for k, v in now.items())}: "
            "it continues, but not necessarily bit for bit")
    if device and meta.get("device", device) != device:  # `device`: the type this run trains on
        say(f"note: {folder} was written on {meta['device']} and this run continues on {device}: the same run, but its "
            "dropout draws and arithmetic differ from there on, so not bit for bit")
    changes = []
    defaults = dataclasses.asdict(Config())
    for section, values in config.items():
        for name, value in values.items():
            key = f"{section}.{name}"
            # A key the checkpoint's config lacks came with a later taskembed: the run had its default then.
            old = saved.get(section, {}).get(name, defaults.get(section, {}).get(name, value))
            if key not in MAY_CHANGE_ON_RESUME and old != value and not _same_path(key, old, value):
                if key == "data.source" and IN_MEMORY in (old, value):  # data given in Python: the fix is in the call
                    from_python = ("the data: the checkpoint was trained on data given in Python (taskembed.train(data=...)); "
                                   "pass the same data= again")
                    changes.append(from_python if old == IN_MEMORY else f"the data: the checkpoint was trained on {old}, and data= "
                                   "was given now")
                    continue
                changes.append(_describe(key, old, value))
    renumbered = None
    if meta.get("data_fingerprint") != fingerprint:
        changes.append("the training data (its fingerprint differs)")
    elif labels is not None and meta.get("labels", labels) != labels:  # checkpoints written before labels were recorded have none
        # The same data numbered another way would train the saved head's rows on other labels. With the same data and
        # config, only taskembed itself can have changed the numbering (a datasets ClassLabel keeps its own ids since
        # 2026-11-30; the labels were sorted before): no value can be put back for that.
        renumbered = f"the label numbering ({', '.join(meta['labels'])} -> {', '.join(labels)})"
    if meta.get("world_size") != world:
        changes.append(f"the number of processes {meta.get('world_size')} -> {world} (changes the batches each one sees)")
    if renumbered and not changes:
        raise UserError(f"cannot resume from {folder}: {renumbered} with the same data and config, which only this version of "
                        f"taskembed can have changed (a datasets ClassLabel keeps its own ids); start afresh without {resume_option()} "
                        f"(pass {setting({'output.overwrite': True})} to delete the checkpoints)")
    if renumbered:
        changes.append(renumbered)
    if changes:
        raise UserError(
            f"cannot resume from {folder}: the run changed since the checkpoint: {'; '.join(changes)}. "
            f"Put the old values back, or start afresh without {resume_option()} (pass {setting({'output.overwrite': True})} to delete "
            "the checkpoints)"
        )


def load_checkpoint(
    folder: Path, model, optimizer: torch.optim.Optimizer, scheduler, *, rank: int, device: torch.device
) -> tuple[dict[str, Any], dict[str, torch.Tensor] | None]:
    """Restore model, optimizer, scheduler and RNG streams from a verified checkpoint (every rank calls it).

    Returns the saved TrainState fields and the best weights (None without validation).
    """
    saved_groups = _read_json(folder / "optimizer.json")
    groups = _group_params(model, optimizer)
    if [g["name"] for g in saved_groups["groups"]] != [g["name"] for g in groups]:
        raise UserError(f"cannot resume from {folder}: optimizer groups were {[g['name'] for g in saved_groups['groups']]}, "
                        f"now {[g['name'] for g in groups]} (a different lr plan); start afresh without {resume_option()}")
    for old, new in zip(saved_groups["groups"], groups):
        for what in ("params", "shapes"):
            if old[what] != new[what]:
                diff = next((a, b) for a, b in zip(old[what] + [None] * len(new[what]), new[what] + [None] * len(old[what])) if a != b)
                raise UserError(f"cannot resume from {folder}: group '{new['name']}' had parameter {what} {diff[0]}, now {diff[1]} "
                                f"(a different model or plan); start afresh without {resume_option()}")

    _load_weights(model, folder / "model.safetensors")
    optimizer.load_state_dict(unflatten(saved_groups["state_dict"], _read_tensors(folder / "optimizer.safetensors")))
    scheduler.load_state_dict(unflatten(_read_json(folder / "scheduler.json"), {}))
    restore_rng(_read_tensors(folder / "rng.safetensors"), _read_json(folder / "rng.json"), rank, device)
    best = _read_tensors(folder / "best.safetensors") if (folder / "best.safetensors").is_file() else None
    return _read_json(folder / "state.json"), best


def _load_weights(model, path: Path) -> None:
    from safetensors.torch import load_model

    try:
        load_model(model, str(path), strict=True)  # copies into the parameters; tied weights stored once are handled
    except Exception as exc:  # not safetensors (a pickle, say), or tensors that do not fit this model
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise UserError(f"{path}: cannot load it into the model ({first}); taskembed never unpickles checkpoints") from None


def estimated_bytes(model, has_validation: bool) -> int:
    """Size of one checkpoint: weights, AdamW's two moments of each trainable tensor, the best weights."""
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    moments = sum(2 * p.numel() * 4 for p in model.parameters() if p.requires_grad)
    return weights * (2 if has_validation else 1) + moments


def check_root(root: Path) -> None:
    """Before training, not at the first checkpoint after an epoch of it: the checkpoint folder can be written."""
    fix = "move it away, or set train.keep_checkpoints 0 to write no checkpoints"
    if root.exists() and not root.is_dir():
        raise UserError(f"{root}: is a file, and the checkpoints of this output.dir go there; {fix}")
    if root.is_dir() and not os.access(root, os.W_OK | os.X_OK):
        raise UserError(f"{root}: the checkpoint folder is not writable; {fix}")
    # A root not there yet is made in output.dir's parent, which check_output_dir has found writable.


def _size(n: float) -> str:
    # Below a megabyte in kB: 400 kB free read "0 MB free", as if nothing were left.
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.0f} MB" if n >= 1e6 else f"{n / 1e3:.0f} kB"


def check_disk_space(root: Path, model, keep: int, has_validation: bool) -> None:
    """Fail before training when the checkpoints cannot fit: keep + 1 of them exist at once at worst."""
    probe = root
    while not probe.exists():
        probe = probe.parent
    need = estimated_bytes(model, has_validation) * (keep + 1)
    free = shutil.disk_usage(probe).free
    if free < need:
        raise UserError(f"{root}: checkpoints need about {_size(need)} ({keep} kept + one being written) "
                        f"but {probe} has {_size(free)} free; lower train.keep_checkpoints (0 = none) or free some space")
