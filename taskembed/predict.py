"""Inference on a trained model folder: labels and per-class scores.

Scores are the softmax of float32 logits (a multi-label folder: each label's
sigmoid), what `pipeline("text-classification", top_k=None)` returns for the
same folder, to float32 rounding (the products are summed in another order).
Texts are tokenized once and batched by length, so a long list of short texts
is not padded to its longest member; on the CPU the float32 linear layers run on
oneDNN's kernels (taskembed/onednn.py). `bf16=True` (opt-in, for hardware with
bfloat16 matrix units) autocasts the matmuls: about 1.6x faster on such a CPU,
scores that differ from float32 in the third decimal and, rarely, a different
label for a near-tie (docs/benchmarks.md has the measured agreement).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

import torch

from taskembed.calibration import CALIBRATION_FILE
from taskembed.data import check_texts, encode
from taskembed.errors import UserError
from taskembed.metrics import THRESHOLDS_FILE
from taskembed.inference import predict_logits
from taskembed.modeling import load_trained, model_token_limit, native_bf16, pick_device, read_training_config


def read_temperature(folder: Path) -> float | None:
    """T from the folder's calibration.json (None without one). A file that is there but unusable is an error, not
    ignored: T <= 0 would reorder or drop the calibrated scores."""
    path = folder / CALIBRATION_FILE
    if not path.exists():
        return None
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        raise UserError(f"{path}: not readable JSON; fix or remove it") from None
    t = loaded.get("temperature") if isinstance(loaded, dict) else loaded
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t <= 0:
        raise UserError(f"{path}: 'temperature' must be a positive number, got {t!r}; fix or remove the file")
    return float(t)


class Classifier:
    """A trained classifier loaded from a folder. Use `taskembed.load(folder)`."""

    def __init__(self, folder: str | Path, device: str | None = None, bf16: bool = False):
        if not isinstance(folder, (str, Path)):  # Path(None) is a TypeError
            raise UserError(f"give the model folder as a path (a str or Path), not {type(folder).__name__}")
        self.folder = Path(folder).expanduser()  # as config paths are: `load("~/runs/sentiment")`
        self.device = pick_device(device)
        self.bf16 = bool(bf16)
        if self.bf16 and not native_bf16(self.device):
            raise UserError(f"bf16 was asked for, but {self.device.type} here has no native bfloat16 matrix units, "
                            "so it would be slower than float32; drop it")
        self.model, self.tokenizer = load_trained(self.folder)
        self.model.to(self.device)
        self.labels = [self.model.config.id2label[i] for i in range(self.model.config.num_labels)]
        self.training_config: dict[str, Any] = read_training_config(self.folder)
        self.temperature: float | None = read_temperature(self.folder)
        data = self.training_config.get("data", {})
        # Not trained here: what the model can read, at most 512 (a tokenizer may state no limit, or a false one).
        self.max_length = int(data.get("max_length") or min(model_token_limit(self.model.config, self.tokenizer) or 512, 512))
        # A model trained on sliding windows predicts the same way (pipeline() truncates instead).
        self.window_stride: int | None = int(data.get("window_stride", 0)) if data.get("long_texts") == "window" else None
        self.window_aggregate: str = data.get("window_aggregate", "mean")
        # A model trained on text pairs reads each text with its second text; without them it would answer about
        # the first texts alone, which is not what it learnt.
        self.text_pair_column: str | None = data.get("text_pair_column") or None
        # The flag pipeline() reads to apply a sigmoid per label instead of a softmax; taskembed follows the same one.
        self.multi_label = self.model.config.problem_type == "multi_label_classification"
        self.thresholds: dict[str, float] = read_thresholds(self.folder, self.labels) if self.multi_label else {}
        self.thresholds_tuned = self.multi_label and (self.folder / THRESHOLDS_FILE).exists()
        self.last_truncated = 0
        """How many texts of the last `logits`/`predict`/`predict_proba` call were longer than `max_length` tokens and read
        up to it only (0 for sliding windows, which read every window): what `taskembed predict` notes, without a second
        tokenization."""

    def logits(self, texts: Sequence[str] | str, pairs: Sequence[str] | str | None = None) -> torch.Tensor:
        # One string is one text (as predict takes it), not a sequence of one-character texts.
        texts = check_texts([texts] if isinstance(texts, str) else texts, "predict")
        pairs = [pairs] if isinstance(pairs, str) else pairs
        if pairs is None and self.text_pair_column:
            raise UserError(f"{self.folder} was trained on text pairs (data.text_pair_column '{self.text_pair_column}'); "
                            "give each text its second text: predict(texts, pairs)")
        if pairs is not None and not self.text_pair_column:
            raise UserError(f"{self.folder} was trained on single texts, so second texts would be input it never saw; give texts only")
        if pairs is not None:
            pairs = check_texts(pairs, "predict", "second text")
            if len(pairs) != len(texts):
                raise UserError(f"{len(texts)} texts but {len(pairs)} second texts; give one second text per text")
        enc = encode(self.tokenizer, texts, pairs, max_length=self.max_length, window_stride=self.window_stride)
        self.last_truncated = enc.truncated
        return predict_logits(self.model, enc, self.tokenizer.pad_token_id or 0, self.device, self.window_aggregate, bf16=self.bf16)

    def count_truncated(self, texts: Sequence[str] | str, pairs: Sequence[str] | str | None = None) -> int:
        """How many of `texts` (with their `pairs`) are longer than `max_length` tokens, so that `predict` reads only their
        start. 0 for a model trained on sliding windows, which reads every window. This tokenizes `texts` again; after a
        `predict` call, `last_truncated` has the same count for its texts."""
        texts = check_texts([texts] if isinstance(texts, str) else texts, "count")
        if self.window_stride is not None:
            return 0
        pairs = check_texts([pairs] if isinstance(pairs, str) else pairs, "count", "second text") if pairs is not None else None
        return encode(self.tokenizer, texts, pairs, max_length=self.max_length).truncated

    def predict_proba(self, texts: Sequence[str] | str, pairs: Sequence[str] | str | None = None) -> torch.Tensor:
        """A float tensor (texts x labels, columns in the order of `self.labels`): the softmax over the labels;
        multi-label: each label's own sigmoid."""
        logits = self.logits(texts, pairs)
        return torch.sigmoid(logits) if self.multi_label else logits.softmax(-1)

    def predict(self, texts: Sequence[str] | str, pairs: Sequence[str] | str | None = None) -> list[dict[str, Any]]:
        """One dict per text: {"label": best label, "score": its probability, "scores": {label: probability}}.

        A model trained on text pairs (`data.text_pair_column`) needs `pairs`, one second text per text.

        The scores are the raw softmax, as `pipeline` gives them (to rounding; under bf16 to the third decimal). A folder trained with calibration adds
        "calibrated_score" and "calibrated_scores" (softmax of logits / T); the label is the same either way.
        A multi-label folder adds "labels", the labels over their thresholds, and scores are sigmoids.
        """
        if isinstance(texts, str):
            texts = [texts]
        if isinstance(pairs, str):
            pairs = [pairs]
        if self.multi_label:
            return self._predict_sets(texts, pairs)
        logits = self.logits(texts, pairs)
        probs = logits.softmax(-1).tolist()
        calibrated = (logits / self.temperature).softmax(-1).tolist() if self.temperature else None
        out = []
        for i, row in enumerate(probs):
            best = max(range(len(row)), key=row.__getitem__)
            pred = {"label": self.labels[best], "score": row[best], "scores": dict(zip(self.labels, row))}
            if calibrated is not None:
                pred["calibrated_score"] = calibrated[i][best]
                pred["calibrated_scores"] = dict(zip(self.labels, calibrated[i]))
            out.append(pred)
        return out

    def table(self, texts: Sequence[str], preds: Sequence[dict[str, Any]], pairs: Sequence[str] | None = None
              ) -> tuple[list[str], list[list[Any]]]:
        """`predict`'s results as a header and rows, the columns `taskembed predict --out x.csv` writes: text,
        [text_pair], [labels: the set, joined as the training data joined it], label, score, score_<label> for each
        label, [calibrated_score, calibrated_score_<label> for each label (which no label name can collide with)]. Scores are floats rounded to 6 places."""
        sep = self.training_config.get("data", {}).get("label_delimiter") or "|"
        cal = self.temperature is not None
        header = ["text", *(["text_pair"] if pairs else []), *(["labels"] if self.multi_label else []), "label", "score",
                  *[f"score_{x}" for x in self.labels], *(["calibrated_score", *(f"calibrated_score_{x}" for x in self.labels)] if cal else [])]
        rows = [[t, *([pairs[i]] if pairs else []), *([sep.join(p["labels"])] if self.multi_label else []), p["label"],
                 round(p["score"], 6), *[round(p["scores"][x], 6) for x in self.labels],
                 *([round(p["calibrated_score"], 6), *(round(p["calibrated_scores"][x], 6) for x in self.labels)] if cal else [])]
                for i, (t, p) in enumerate(zip(texts, preds))]
        return header, rows

    def _predict_sets(self, texts: Sequence[str], pairs: Sequence[str] | None) -> list[dict[str, Any]]:
        """Multi-label: {"labels": every label whose sigmoid >= its threshold, most likely first, "scores": {label: sigmoid},
        "label"/"score": the most likely label and its probability (even when it is under its threshold)}."""
        probs = self.predict_proba(texts, pairs).tolist()
        out = []
        for row in probs:
            best = max(range(len(row)), key=row.__getitem__)
            out.append({"labels": self.over_thresholds(row), "label": self.labels[best], "score": row[best],
                        "scores": dict(zip(self.labels, row))})
        return out

    def over_thresholds(self, probs: Sequence[float]) -> list[str]:
        """Multi-label: the labels whose sigmoid (`probs`, in the order of `self.labels`) reaches its threshold, most
        likely first."""
        order = sorted(range(len(probs)), key=lambda j: -probs[j])
        return [self.labels[j] for j in order if probs[j] >= self.thresholds[self.labels[j]]]

    def embed(self, texts: Sequence[str] | str, **options):
        """Vectors (numpy, one row per text); by default the representation the classification head reads.

        Options as `taskembed.embed.embed`: pooling (auto|head|cls|mean|max), layer, mean_last,
        normalize, dtype (float32|float16), max_length, batch_tokens, progress.
        """
        from taskembed.embed import embed

        return embed(self, texts, **options)


def read_thresholds(folder: Path, labels: list[str]) -> dict[str, float]:
    """Per-label decision thresholds from thresholds.json; 0.5 for every label when the folder has none
    (trained without a validation split, or not by taskembed)."""
    path = folder / THRESHOLDS_FILE
    if not path.exists():
        return {name: 0.5 for name in labels}
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))["labels"]
        found = {name: float(entries[name]["threshold"]) for name in labels}
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{path}: unreadable ({type(exc).__name__}: {str(exc)[:80]}); it needs a threshold for every label, "
                        "as training writes it") from None
    bad = [name for name, t in found.items() if not 0.0 <= t <= 1.0]
    if bad:
        raise UserError(f"{path}: threshold of '{bad[0]}' is {found[bad[0]]}; thresholds are probabilities in [0, 1]")
    return found
