"""The learning-rate plan: which parameter trains at which rate, built as data from names.

For an encoder with L layers, numbered 1..L from the bottom, a top rate ``lr`` and a
decay ``d`` in (0, 1]:

- layer i trains at ``lr * d**(L - i)``;
- the embeddings train at ``lr * d**L`` unless ``embedding_lr`` is given (decayed, never
  forgotten);
- the pooler, if any, and the classification head train at ``head_lr``;
- biases and normalisation weights get weight decay 0 (see ``_no_decay``).

Every parameter is placed by the small rule tables below, by name, and a parameter that
no rule places is a UserError that names it: a silent default would hand an unknown
module some arbitrary rate and nobody would notice.

Placements that are choices rather than facts:

- DeBERTa-v2 ``encoder.rel_embeddings`` and ``encoder.LayerNorm`` go with the embeddings
  (depth 0). The relative position table is an embedding shared by every layer, and that
  LayerNorm normalises the table, not the hidden states (``get_rel_embedding``); giving
  them layer L's rate would let the top layer move a table that layer 1 reads.
- DeBERTa-v2 ``encoder.conv`` (xlarge/xxlarge) goes with layer 1: it runs once, on the
  embeddings and layer 1's output, inside the first step of the layer loop.
- ELECTRA ``embeddings_project`` (present when embedding_size != hidden_size) goes with
  the embeddings: it is the last step of the input embedding, before layer 1.
- ModernBERT ``final_norm`` goes with layer L: it normalises layer L's output and is part
  of the encoder (an exported encoder keeps it), not of the task head.
- ModernBERT ``head`` (dense + norm before ``classifier``), DistilBERT ``pre_classifier``
  and every pooler go with the head: they are trained for the task.
- L counts encoder layers only, the distinct indices in ``...layer.N.`` names. A pooler
  (present or removed) is never a layer, so the top layer always trains at ``lr`` exactly.

``build_plan`` is pure: it reads the model and changes nothing. ``apply_freezing`` writes
``requires_grad`` for the plan's frozen groups; under gradual unfreezing the training loop then
switches whole groups on stage by stage (``loop.fit``'s ``set_trainable``).
"""

from __future__ import annotations

import dataclasses

import math
import re
from collections import Counter
from dataclasses import dataclass

from torch import nn

from taskembed.errors import UserError

# Roles a rule can give a parameter; depth follows from the role (and N for a layer).
EMBEDDINGS = "embeddings"  # depth 0
LAYER = "layer"  # depth N + 1, N the 0-based index in the name
FIRST_LAYER = "first_layer"  # depth 1
TOP_LAYER = "top_layer"  # depth L
HEAD = "head"  # depth L + 1

# Rules for names inside the encoder (the backbone), relative to it: "embeddings.x" for
# both "bert.embeddings.x" in a BertForSequenceClassification and "embeddings.x" in a bare
# BertModel. First match wins; the patterns are disjoint, the order only reads bottom-up.
# Each pattern is anchored at the start and ends on a dot, so it names whole modules.
_BACKBONE_RULES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), role)
    for pattern, role in (
        # Token, position and type embeddings plus their LayerNorm (every architecture).
        (r"^embeddings\.", EMBEDDINGS),
        # ELECTRA: projects small embeddings up to hidden size, before layer 1; ALBERT's projection does the same.
        (r"^(?:embeddings_project|encoder\.embedding_hidden_mapping_in)\.", EMBEDDINGS),
        # MPNet: the relative-position bias table shared by every layer, an input to every layer, so it decays like
        # the embeddings (as DeBERTa-v2's below). (RoFormer's rotary table is fixed: the plan would make it train.)
        (r"^encoder\.relative_attention_bias\.", EMBEDDINGS),
        # DeBERTa-v2: relative position table shared by all layers, and the LayerNorm
        # applied to that table; inputs to every layer, so they decay like embeddings.
        (r"^encoder\.(?:rel_embeddings|LayerNorm)\.", EMBEDDINGS),
        # The layers. BERT, RoBERTa, XLM-R, DeBERTa-v2, ELECTRA: encoder.layer.N;
        # DistilBERT: transformer.layer.N; ModernBERT: layers.N. The dots around N keep
        # "layer.1." from catching "layer.11.".
        (r"^(?:encoder\.layer|transformer\.layer|layers)\.(\d+)\.", LAYER),
        # ALBERT: one group of layers (by default) whose weights every layer step reuses, so the plan sees as many
        # layers as there are groups, each with one rate: a layer-wise decay cannot tell its steps apart.
        (r"^encoder\.albert_layer_groups\.(\d+)\.", LAYER),
        # DeBERTa-v2 xlarge: a convolution applied once, inside layer 1's step.
        (r"^encoder\.conv\.", FIRST_LAYER),
        # ModernBERT: LayerNorm on layer L's output, still part of the encoder.
        (r"^final_norm\.", TOP_LAYER),
        # BERT's pooler (bert.pooler, or pooler in a bare BertModel): trained for the task.
        (r"^pooler\.", HEAD),
    )
)

# Rules for names outside the backbone in a *ForSequenceClassification model.
_HEAD_RULES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), role)
    for pattern, role in (
        # BERT, DeBERTa-v2, DistilBERT, ModernBERT: classifier (a Linear);
        # RoBERTa, XLM-R, ELECTRA: classifier.dense + classifier.out_proj.
        (r"^classifier\.", HEAD),
        # DistilBERT: the dense layer before the classifier.
        (r"^pre_classifier\.", HEAD),
        # ModernBERT: prediction head (dense + norm) before the classifier.
        (r"^head\.", HEAD),
        # DeBERTa-v2: its ContextPooler sits outside the backbone.
        (r"^pooler\.", HEAD),
    )
)

NO_DECAY_RULE = "biases and every parameter with fewer than 2 dimensions (normalisation weights)"


def _no_decay(name: str, param: nn.Parameter) -> bool:
    """Whether a parameter trains with weight decay 0.

    Weight decay is meant to shrink matrices (linear, embedding, convolution weights).
    Biases are shifts and normalisation weights are gains whose neutral value is 1, not 0,
    so decaying them pulls the model towards a wrong prior. Every normalisation weight
    (LayerNorm, RMSNorm) is 1-D and every bias is named "bias", so the rule is: the leaf
    name is "bias", or the tensor has fewer than 2 dimensions. The tests check it against
    the normalisation modules of every supported architecture.
    """
    return name.rsplit(".", 1)[-1] == "bias" or param.ndim < 2


@dataclass(frozen=True)
class Group:
    """One depth of the model: every parameter in it trains at the same rate."""

    name: str
    """"embeddings", "layer.1" .. "layer.L", or "head"."""
    depth: int
    """0 for the embeddings, i for layer i (1-based from the bottom), L + 1 for the head."""
    lr: float
    """Learning rate of every parameter in the group."""
    weight_decay: float
    """Weight decay of the group's matrices; its biases and norm weights get 0."""
    params: tuple[str, ...]
    """Parameter names, as model.named_parameters() gives them, in model order."""
    n_params: int
    """Number of scalar elements in the group."""
    trainable: bool
    """False if the group is frozen."""
    modules: tuple[str, ...] = ()
    """The modules the group covers, e.g. ("bert.encoder.layer.2",); for people to read."""
    unfreeze_stage: int = 0
    """Gradual unfreezing: the group trains from stage k on (0 = from the first step); see unfreeze_steps."""


@dataclass(frozen=True)
class LrPlan:
    """Every parameter of a model in exactly one Group, groups ordered bottom to top."""

    groups: tuple[Group, ...]
    """Embeddings, layer.1 .. layer.L, head; a group with no parameters is left out."""
    num_layers: int
    """L, the number of encoder layers."""
    gradual: bool = False
    """Whether groups are unfrozen in stages (ULMFiT) rather than all trained from the first step."""

    @property
    def stages(self) -> int:
        """The number of unfreezing stages after stage 0."""
        return max((g.unfreeze_stage for g in self.groups if g.trainable), default=0)

    def optimizer_groups(self, model: nn.Module) -> list[dict]:
        """Torch optimizer param groups for the trainable groups of this plan.

        Each Group becomes up to two dicts: its matrices at the group's weight decay
        (named like "layer.3") and its biases and norm weights at weight decay 0 (named
        "layer.3/no_decay"). Empty halves are left out. Frozen groups are left out.
        """
        params = _check_same_parameters(self, model)
        out: list[dict] = []
        for group in self.groups:
            if not group.trainable:
                continue
            decay = [params[n] for n in group.params if not _no_decay(n, params[n])]
            no_decay = [params[n] for n in group.params if _no_decay(n, params[n])]
            # torch keeps extra keys in a param group: the loop reads unfreeze_stage, checkpoints save it.
            if decay:
                out.append({"params": decay, "lr": group.lr, "weight_decay": group.weight_decay, "name": group.name,
                            "unfreeze_stage": group.unfreeze_stage})
            if no_decay:
                out.append({"params": no_decay, "lr": group.lr, "weight_decay": 0.0, "name": f"{group.name}/no_decay",
                            "unfreeze_stage": group.unfreeze_stage})
        return out

    def to_json(self) -> dict:
        """The plan as plain JSON data, saved next to the weights."""
        trainable = sum(g.n_params for g in self.groups if g.trainable)
        total = sum(g.n_params for g in self.groups)
        return {
            "num_layers": self.num_layers,
            "gradual_unfreezing": self.gradual,
            "no_weight_decay": NO_DECAY_RULE,
            "groups": [
                {
                    "name": g.name,
                    "depth": g.depth,
                    "lr": g.lr,
                    "weight_decay": g.weight_decay,
                    "n_params": g.n_params,
                    "trainable": g.trainable,
                    "unfreeze_stage": g.unfreeze_stage,
                    "modules": list(g.modules),
                    "params": list(g.params),
                }
                for g in self.groups
            ],
            "totals": {"n_params": total, "trainable": trainable, "frozen": total - trainable},
        }

    def table(self) -> str:
        """The plan as a text table, bottom to top, with a total line."""
        header = ("group", "layers", "params", "lr", "weight decay") + (("trains from",) if self.gradual else ())
        rows = [
            (
                g.name,
                ", ".join(g.modules),
                f"{g.n_params:,}",
                f"{g.lr:.3e}" if g.trainable else "frozen",
                f"{g.weight_decay:g}" if g.trainable else "-",
            ) + ((f"stage {g.unfreeze_stage}" if g.trainable else "-",) if self.gradual else ())
            for g in self.groups
        ]
        total = sum(g.n_params for g in self.groups)
        trainable = sum(g.n_params for g in self.groups if g.trainable)
        summary = f"{self.num_layers} encoder layers, {trainable:,} parameters trainable"
        rows.append(("total", summary, f"{total:,}", "", "") + (("",) if self.gradual else ()))
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
        right = {2}  # numbers line up on the right

        def line(row: tuple[str, ...]) -> str:
            cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))]
            return " | ".join(cells).rstrip()

        rule = "-+-".join("-" * w for w in widths)
        body = [line(header), rule, *(line(r) for r in rows[:-1]), rule, line(rows[-1])]
        body.append(f"weight decay 0 on {NO_DECAY_RULE}")
        if self.gradual:
            body.append(f"gradual unfreezing: stage 0 trains from the first step, then one more group per stage, top down "
                        f"(stages 0 to {self.stages}); each group warms up again from the step it is unfrozen")
        return "\n".join(body)


def _architecture(model: nn.Module) -> str:
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    name = type(model).__name__
    return f"{name} (model_type {model_type!r})" if model_type else name


def _backbone_prefix(model: nn.Module) -> str:
    """"bert." for BertForSequenceClassification, "" for a bare BertModel."""
    prefix = getattr(model, "base_model_prefix", "")
    if prefix and isinstance(dict(model.named_children()).get(prefix), nn.Module):
        return prefix + "."
    return ""


# Rules of one model_type that go before the general ones, where a name means something else there.
_TYPE_RULES: dict[str, tuple[tuple[re.Pattern[str], str], ...]] = {
    # XLM-R XL (pre-LayerNorm): encoder.LayerNorm normalises the top layer's output, not a table fed to every layer.
    "xlm-roberta-xl": ((re.compile(r"^encoder\.LayerNorm\."), TOP_LAYER),),
}


def _place(model: nn.Module) -> tuple[list[tuple[str, str, int | None, str]], int]:
    """(name, role, layer index or None, module) for every parameter, in model order; and L."""
    prefix = _backbone_prefix(model)
    own = _TYPE_RULES.get(getattr(getattr(model, "config", None), "model_type", None), ())
    placed: list[tuple[str, str, int | None, str]] = []
    for name, _ in model.named_parameters():
        if prefix and not name.startswith(prefix):
            local, rules, outer = name, _HEAD_RULES, ""
        else:
            local, rules, outer = name[len(prefix) :], own + _BACKBONE_RULES, prefix
        for pattern, role in rules:
            match = pattern.match(local)
            if match:
                index = int(match.group(1)) if role == LAYER else None
                placed.append((name, role, index, outer + match.group(0)[:-1]))
                break
        else:
            raise UserError(
                f"cannot place parameter {name!r} of {_architecture(model)} in the learning-rate plan: "
                "no rule in taskembed/lrplan.py matches it (embeddings, encoder layer N, pooler or head); "
                "add a rule for this architecture rather than guessing a rate"
            )
    indices = sorted({index for _, role, index, _ in placed if role == LAYER})
    if not indices:
        raise UserError(f"found no encoder layers in {_architecture(model)}: no parameter is named like 'layer.N.'")
    if indices != list(range(len(indices))):
        raise UserError(
            f"encoder layers of {_architecture(model)} are numbered {indices}, expected 0..{len(indices) - 1} "
            "without gaps; cannot tell which layer is the top"
        )
    return placed, len(indices)


def layer_depth_map(model: nn.Module) -> tuple[dict[str, int], int]:
    """Depth of every parameter (0 embeddings, 1..L layers, L + 1 head) and L.

    Raises UserError naming the first parameter no rule places.
    """
    placed, num_layers = _place(model)
    return _depths(placed, num_layers), num_layers


def _depths(placed: list[tuple[str, str, int | None, str]], num_layers: int) -> dict[str, int]:
    depth_of_role = {EMBEDDINGS: 0, FIRST_LAYER: 1, TOP_LAYER: num_layers, HEAD: num_layers + 1}
    return {name: index + 1 if role == LAYER else depth_of_role[role] for name, role, index, _ in placed}


def _check_rates(**rates: float | None) -> None:
    problems = [
        f"{key} must be a positive finite number, got {value!r}"
        for key, value in rates.items()
        if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0)
    ]
    if problems:
        raise UserError("; ".join(problems))


def lr_scale(rule: str, effective_batch: int, reference_batch: int) -> float:
    """The factor train.lr_scaling puts on every rate. Adam's update does not grow with the batch the way
    SGD's does, and its scaling rule is the square root (Malladi et al., 2022, "On the SDEs and Scaling
    Rules for Adaptive Gradient Algorithms"); linear is the SGD rule (Goyal et al., 2017), kept for
    users who tuned with it."""
    if rule == "none":
        return 1.0
    ratio = effective_batch / reference_batch
    if rule == "sqrt":
        return math.sqrt(ratio)
    if rule == "linear":
        return ratio
    raise UserError(f"train.lr_scaling must be none, sqrt or linear (got {rule!r})")


def build_plan(
    model: nn.Module,
    *,
    lr: float,
    decay: float,
    head_lr: float,
    embedding_lr: float | None = None,
    weight_decay: float = 0.01,
    freeze_embeddings: bool = False,
    freeze_layers: int = 0,
    unfreeze_start: int | None = None,
) -> LrPlan:
    """The learning-rate plan for ``model``. Pure: reads the model, changes nothing.

    Layer i of L trains at ``lr * decay**(L - i)``, the embeddings at ``embedding_lr`` or
    ``lr * decay**L``, the pooler and head at ``head_lr``. ``freeze_embeddings`` freezes
    the embeddings group, ``freeze_layers=k`` freezes layers 1..k; ``apply_freezing``
    carries that onto the model. ``unfreeze_start=k`` (not None) plans gradual unfreezing:
    the head and the top k layers form stage 0, then each lower trainable group, top down
    to the embeddings, gets the next stage.
    """
    _check_rates(lr=lr, head_lr=head_lr, embedding_lr=embedding_lr)
    if not (isinstance(decay, (int, float)) and 0 < decay <= 1):
        raise UserError(f"decay must be in (0, 1], got {decay!r}")
    if not (isinstance(weight_decay, (int, float)) and math.isfinite(weight_decay) and weight_decay >= 0):
        raise UserError(f"weight_decay must be a finite number >= 0, got {weight_decay!r}")

    placed, num_layers = _place(model)
    depths = _depths(placed, num_layers)
    is_int = isinstance(freeze_layers, int) and not isinstance(freeze_layers, bool)
    if not (is_int and 0 <= freeze_layers <= num_layers):
        raise UserError(
            f"freeze_layers must be an integer in 0..{num_layers} for this {num_layers}-layer model, "
            f"got {freeze_layers!r}"
        )
    sizes = {name: p.numel() for name, p in model.named_parameters()}

    groups = []
    for depth in sorted(set(depths.values())):
        names = tuple(name for name, _, _, _ in placed if depths[name] == depth)
        modules = tuple(dict.fromkeys(module for name, _, _, module in placed if depths[name] == depth))
        if depth == 0:
            name = "embeddings"
            rate = embedding_lr if embedding_lr is not None else lr * decay**num_layers
            trainable = not freeze_embeddings
        elif depth <= num_layers:
            name = f"layer.{depth}"
            rate = lr * decay ** (num_layers - depth)
            trainable = depth > freeze_layers
        else:
            name, rate, trainable = "head", head_lr, True
        groups.append(
            Group(
                name=name,
                depth=depth,
                lr=float(rate),
                weight_decay=float(weight_decay),
                params=names,
                n_params=sum(sizes[n] for n in names),
                trainable=trainable,
                modules=modules,
            )
        )
    if unfreeze_start is not None:
        if not (isinstance(unfreeze_start, int) and 0 <= unfreeze_start <= num_layers):
            raise UserError(f"unfreeze_start must be an integer in 0..{num_layers} for this {num_layers}-layer model, got {unfreeze_start!r}")
        stage, staged = 0, []
        for g in reversed(groups):  # top down: head, layer.L, ..., embeddings
            if g.trainable and g.name != "head" and g.depth <= num_layers - unfreeze_start:
                stage += 1
            staged.append(dataclasses.replace(g, unfreeze_stage=stage if g.trainable else 0))
        groups = staged[::-1]
    plan = LrPlan(groups=tuple(groups), num_layers=num_layers, gradual=unfreeze_start is not None)
    _check_same_parameters(plan, model)
    return plan


def unfreeze_steps(plan: LrPlan, mode: str, every: int, steps_per_epoch: int) -> list[int]:
    """The optimizer step at which each stage 0..plan.stages starts training.

    mode "epoch": stage k at the start of epoch k + 1 (ULMFiT). mode "steps": stage k after k * every
    steps, or, with every = 0, evenly spread so that every group trains before the first epoch ends.
    """
    n = plan.stages
    if mode == "epoch":
        return [k * steps_per_epoch for k in range(n + 1)]
    interval = every if every > 0 else steps_per_epoch / (n + 1)
    return [int(k * interval) for k in range(n + 1)]


def _check_same_parameters(plan: LrPlan, model: nn.Module) -> dict[str, nn.Parameter]:
    """The model's parameters by name, after checking each lies in exactly one group."""
    params = dict(model.named_parameters())
    listed = [name for group in plan.groups for name in group.params]
    if len(listed) != len(set(listed)) or set(listed) != set(params):
        twice = sorted(n for n, count in Counter(listed).items() if count > 1)
        missing = sorted(set(params) - set(listed))
        unknown = sorted(set(listed) - set(params))
        raise UserError(
            f"the learning-rate plan does not match {_architecture(model)}: "
            f"in no group {missing[:3]}, not in the model {unknown[:3]}, in two groups {twice[:3]}"
        )
    return params


def apply_freezing(model: nn.Module, plan: LrPlan) -> None:
    """Set requires_grad on every parameter from its group's trainable flag."""
    params = _check_same_parameters(plan, model)
    for group in plan.groups:
        for name in group.params:
            params[name].requires_grad_(group.trainable)
