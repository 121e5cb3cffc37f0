"""The masked-language-model stage: ULMFiT's second step, before the classifier learns the labels.

The encoder keeps training on the objective it was pre-trained with (predict masked tokens) on the task's own texts,
and on unlabelled in-domain texts when `data.unlabelled` names some, so that it adapts to the domain's language before
the labels pull on it. Then the classifier is trained as always, from the adapted encoder. Off by default
(`train.mlm_epochs: 0`): on all-MiniLM-L6-v2 and rotten_tomatoes it gained nothing measurable
(docs/quality.md); it is for models pre-trained with this objective and text far from their domain.

The masked-LM head is the base model's own when its file has one. Where it has none (sentence-transformers
checkpoints such as all-MiniLM-L6-v2 keep only the encoder), the head's transform starts at random and its output
layer is the token table, as the model family ties them; the head then trains at train.head_lr and the encoder at
train.mlm_lr, so the random start does not pull the encoder far at once. The head is discarded afterwards.

The stage trains what the plan trains: frozen embeddings or layers (train.freeze_embeddings, train.freeze_layers) stay
as they are, and weight decay spares biases and normalisation weights, as in the plan.
"""

from __future__ import annotations

import inspect
import math
import time
from typing import Any, Callable, Sequence

import torch

from taskembed.config import Config
from taskembed.data import encode
from taskembed.errors import UserError
from taskembed.loop import TrainingDiverged, lr_lambda, seed_everything, use_bf16
from taskembed.modeling import load_errors, quiet_transformers, resolve_model
from taskembed.progress import progress_bar


def mlm_model(cfg: Config, classifier):
    """The masked-LM model of the same checkpoint, with the classifier's encoder in it (one set of weights: training
    it trains the classifier's encoder)."""
    from transformers import AutoModelForMaskedLM

    quiet_transformers()
    try:
        mlm = AutoModelForMaskedLM.from_pretrained(resolve_model(cfg.model.name, cfg.model.revision), revision=cfg.model.revision,
                                                   dtype=torch.float32, use_safetensors=True,
                                                   trust_remote_code=cfg.model.trust_remote_code)
    except ValueError as exc:
        if "Unrecognized configuration class" in str(exc):
            raise UserError(f"train.mlm_epochs: transformers has no masked-LM model for {classifier.config.model_type}; "
                            "set train.mlm_epochs 0") from None
        raise
    except load_errors() as exc:
        raise UserError(f"train.mlm_epochs: could not load a masked-LM model of {cfg.model.name}: {str(exc).splitlines()[0][:200]}") from None
    prefix = mlm.base_model_prefix
    encoder = getattr(classifier, prefix)
    # The classifier's encoder replaces the masked-LM model's copy. Its pooler (which a masked-LM model lacks) still runs,
    # unused: it gets no gradient, so AdamW leaves it alone. The output layer is tied to the token table again, as the
    # family ties it.
    setattr(mlm, prefix, encoder)
    out = mlm.get_output_embeddings()
    if out is not None and out.weight.shape == encoder.get_input_embeddings().weight.shape:
        out.weight = encoder.get_input_embeddings().weight
    return mlm


def _head(mlm) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The part of the masked-LM model after the encoder, applied to the masked rows only (a sixth of the vocabulary
    projection's work at a 15% mask rate, and no batch x length x vocabulary logits); None for a family not listed,
    whose whole forward runs instead."""
    for name in ("cls", "lm_head"):  # BERT-family, RoBERTa-family
        head = getattr(mlm, name, None)
        if isinstance(head, torch.nn.Module):
            return head
    if hasattr(mlm, "vocab_projector"):  # DistilBERT: its head is four modules, applied in this order in its forward
        return lambda h: mlm.vocab_projector(mlm.vocab_layer_norm(mlm.activation(mlm.vocab_transform(h))))
    if hasattr(mlm, "generator_lm_head"):  # ELECTRA's generator
        return lambda h: mlm.generator_lm_head(mlm.generator_predictions(h))
    return None


def _mask_at_least_one(batch: dict[str, torch.Tensor], labels: torch.Tensor, tokenizer, generator: torch.Generator) -> None:
    """A batch of short texts can draw no mask at all, which leaves nothing to predict (a loss of 0/0): mask one ordinary
    token of it, chosen with the stage's own generator, as BERT masks."""
    if bool((labels != -100).any()):
        return
    special = torch.tensor([[t in tokenizer.all_special_ids for t in row] for row in batch["input_ids"].tolist()])
    ordinary = (batch.get("attention_mask", torch.ones_like(labels)).bool() & ~special).nonzero()
    if len(ordinary) == 0:
        return  # only special tokens: the caller skips the batch, which has no text to learn from
    row, col = ordinary[int(torch.randint(len(ordinary), (1,), generator=generator))].tolist()
    labels[row, col] = batch["input_ids"][row, col]
    batch["input_ids"][row, col] = tokenizer.mask_token_id


def adapt_encoder(cfg: Config, classifier, tokenizer, texts: Sequence[str], pairs: Sequence[str] | None, device: torch.device,
                  say: Callable[[str], None], progress: bool = True) -> dict[str, Any]:
    """Train `classifier`'s encoder with masked-token prediction over `texts` for train.mlm_epochs; returns what run.json
    records of it."""
    from transformers import DataCollatorForLanguageModeling

    t = cfg.train
    if tokenizer.mask_token is None:
        raise UserError(f"train.mlm_epochs: the tokenizer of {cfg.model.name} has no mask token, so there is nothing to predict; "
                        "set train.mlm_epochs 0")
    # The same stage in every run of the config, whatever ran before it in this process (a resumed run's checkpoint
    # holds what an unstopped run computed): the head's random start, the collator's masks and dropout draw from the
    # global generator, seeded here rather than trusting its state; and the thread count, which orders the sums, is the
    # one training uses (a second run in one process would otherwise inherit the first one's).
    seed_everything(t.seed)
    if t.num_threads:
        torch.set_num_threads(t.num_threads)
    mlm = mlm_model(cfg, classifier).to(device).train()
    head = _head(mlm)
    # Tokenized as training tokenizes (data.encode: a long document is cut before the tokenizer reads all of it); the
    # collator pads each batch and adds its attention mask.
    enc = encode(tokenizer, list(texts), list(pairs) if pairs is not None else None, max_length=cfg.data.max_length)
    accepted = inspect.signature(mlm.base_model.forward).parameters  # DistilBERT takes no token types, which BERT's tokenizers give
    types = enc.token_type_ids if enc.token_type_ids is not None and "token_type_ids" in accepted else None
    rows = [{"input_ids": ids, **({"token_type_ids": types[i]} if types is not None else {})} for i, ids in enumerate(enc.input_ids)]
    cut = enc.truncated
    collate = DataCollatorForLanguageModeling(tokenizer, mlm_probability=t.mlm_probability, return_tensors="pt")
    per_epoch = math.ceil(len(rows) / t.batch_size)
    total = max(1, round(per_epoch * t.mlm_epochs))
    # The encoder's parameters as the plan left them (requires_grad off for frozen ones; the output layer shares the token
    # table's, so it is frozen with it), then the head's; no weight decay on vectors (biases, normalisation), as in the plan.
    encoder = {id(p) for n, p in mlm.named_parameters() if n.startswith(mlm.base_model_prefix + ".")}
    groups = []
    for params, lr in (([p for p in mlm.parameters() if id(p) in encoder and p.requires_grad], t.mlm_lr),
                       ([p for p in mlm.parameters() if id(p) not in encoder], t.head_lr)):
        groups += [{"params": [p for p in params if p.dim() >= 2], "lr": lr, "weight_decay": t.weight_decay},
                   {"params": [p for p in params if p.dim() < 2], "lr": lr, "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], fused=device.type in ("cpu", "cuda"))
    trained = [p for g in groups for p in g["params"]]
    # The classifier's warmup and decay (train.warmup_ratio, train.schedule) over the stage's own steps.
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(t, total))
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16(t.bf16, device))
    say(f"masked-LM stage: {t.mlm_epochs:g} epoch(s) over {len(rows):,} texts, {total} steps of {t.batch_size}, "
        f"{t.mlm_probability:.0%} of tokens masked, encoder lr {t.mlm_lr:g}, head lr {t.head_lr:g}"
        + (f"; {cut:,} texts are longer than data.max_length ({cfg.data.max_length} tokens) and are read up to it" if cut else ""))
    bar = progress_bar(total, "masked LM", "step") if progress else None
    losses: list[float] = []
    started = time.perf_counter()
    step = 0
    generator = torch.Generator().manual_seed(t.seed)
    while step < total:
        taken = step
        # Batches of similar length (less padding), in a random order each epoch, as the classifier's are.
        order = torch.randperm(len(rows), generator=generator).tolist()
        chunks = [sorted(order[i:i + 50 * t.batch_size], key=lambda j: len(rows[j]["input_ids"])) for i in range(0, len(order), 50 * t.batch_size)]
        batches = [c[i:i + t.batch_size] for c in chunks for i in range(0, len(c), t.batch_size)]
        for b in torch.randperm(len(batches), generator=generator).tolist():
            if step >= total:
                break
            batch = collate([rows[j] for j in batches[b]])
            labels = batch.pop("labels")
            _mask_at_least_one(batch, labels, tokenizer, generator)
            if not bool((labels != -100).any()):
                continue  # texts of special tokens only: nothing to predict, and no step is taken
            batch, labels = {k: v.to(device) for k, v in batch.items()}, labels.to(device)
            with autocast:
                if head is not None:
                    hidden = mlm.base_model(**batch).last_hidden_state
                    masked = labels != -100
                    logits = head(hidden[masked])
                    loss = torch.nn.functional.cross_entropy(logits.float(), labels[masked])
                else:
                    loss = mlm(**batch, labels=labels).loss
            if not torch.isfinite(loss):  # never skipped: a stage that diverged would hand the classifier a broken encoder
                raise TrainingDiverged(f"masked-LM stage, step {step + 1}: the loss is {loss.item()}; lower train.mlm_lr")
            loss.backward()
            if t.max_grad_norm > 0:
                norm = torch.nn.utils.clip_grad_norm_(trained, t.max_grad_norm)
                if not torch.isfinite(norm):  # never skipped, as for the loss
                    raise TrainingDiverged(f"masked-LM stage, step {step + 1}: the gradient norm is {norm.item()}; lower train.mlm_lr")
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
            step += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
        if step == taken:
            raise UserError("train.mlm_epochs: no training text has a token besides the tokenizer's special ones, so there is "
                            "nothing to mask; set train.mlm_epochs 0")
    if bar is not None:
        bar.close()
    # The encoder is the classifier's own (shared above); only the head, which the classifier does not use, goes.
    tail = max(1, len(losses) // 10)
    info = {"epochs": t.mlm_epochs, "texts": len(rows), "steps": step, "seconds": round(time.perf_counter() - started, 2),
            "loss_first": sum(losses[:tail]) / tail, "loss_last": sum(losses[-tail:]) / tail}
    say(f"masked-LM stage: loss {info['loss_first']:.3f} -> {info['loss_last']:.3f} (means of the first and last tenth of the "
        f"steps) in {info['seconds']:.0f} s")
    return info
