"""Inference on a trained model folder: labels and per-class scores.

Scores are the softmax of float32 logits, exactly what
`pipeline("text-classification", top_k=None)` returns for the same folder.
Texts are tokenized once and batched by length, so a long list of short texts
is not padded to its longest member.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import torch

from taskembed.data import encode
from taskembed.errors import UserError
from taskembed.modeling import load_trained
from taskembed.loop import predict_logits


class Classifier:
    """A trained classifier loaded from a folder. Use `taskembed.load(folder)`."""

    def __init__(self, folder: str | Path, device: str | None = None):
        self.folder = Path(folder)
        self.model, self.tokenizer = load_trained(self.folder)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model.to(self.device)
        self.labels = [self.model.config.id2label[i] for i in range(self.model.config.num_labels)]
        cfg_file = self.folder / "training_config.json"
        self.training_config: dict[str, Any] = json.loads(cfg_file.read_text()) if cfg_file.exists() else {}
        cal_file = self.folder / "calibration.json"
        self.temperature: float | None = float(json.loads(cal_file.read_text())["temperature"]) if cal_file.exists() else None
        self.max_length = int(self.training_config.get("data", {}).get("max_length") or min(self.tokenizer.model_max_length, 512))

    def logits(self, texts: Sequence[str], pairs: Sequence[str] | None = None) -> torch.Tensor:
        texts = _check_texts(texts)
        enc = encode(self.tokenizer, texts, pairs, max_length=self.max_length)
        return predict_logits(self.model, enc, self.tokenizer.pad_token_id or 0, self.device)

    def predict_proba(self, texts: Sequence[str], pairs: Sequence[str] | None = None) -> torch.Tensor:
        return self.logits(texts, pairs).softmax(-1)

    def predict(self, texts: Sequence[str] | str, pairs: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """One dict per text: {"label": best label, "score": its probability, "scores": {label: probability}}.

        The scores are the raw softmax, as `pipeline` gives them. A folder trained with calibration adds
        "calibrated_score" and "calibrated_scores" (softmax of logits / T); the label is the same either way.
        """
        if isinstance(texts, str):
            texts = [texts]
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

    def embed(self, texts: Sequence[str] | str, **options):
        """Vectors (numpy, one row per text); by default the representation the classification head reads.

        Options as `taskembed.embed.embed`: pooling (auto|head|cls|mean|max), layer, mean_last,
        normalize, dtype (float32|float16), max_length, batch_tokens, progress.
        """
        from taskembed.embed import embed

        return embed(self, texts, **options)


def _check_texts(texts: Sequence[str]) -> list[str]:
    texts = list(texts)
    if not texts:
        raise UserError("no texts to predict; give at least one")
    for i, t in enumerate(texts, start=1):
        if not isinstance(t, str) or not t.strip():
            raise UserError(f"text {i} is empty or not a string; every input needs some text")
    return texts
