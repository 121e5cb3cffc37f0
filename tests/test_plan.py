"""The learning-rate plan on tiny random models of every supported architecture."""

from __future__ import annotations

import copy
import functools
import json
import re

import pytest
import torch
import transformers
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from transformers import AutoModelForSequenceClassification

from taskembed.errors import UserError
from taskembed.lrplan import Group, LrPlan, apply_freezing, build_plan, layer_depth_map

transformers.logging.set_verbosity_error()

LR, DECAY, HEAD_LR = 1e-4, 0.8, 5e-4
TINY = dict(
    hidden_size=32,
    num_attention_heads=2,
    intermediate_size=37,
    vocab_size=100,
    max_position_embeddings=64,
)


def _config(arch: str, num_layers: int):
    if arch == "distilbert":
        return transformers.DistilBertConfig(
            dim=32, n_layers=num_layers, n_heads=2, hidden_dim=37, vocab_size=100, max_position_embeddings=64
        )
    kw = dict(TINY, num_hidden_layers=num_layers)
    if arch in ("bert", "bert-base", "bert-base-nopool"):
        return transformers.BertConfig(**kw)
    if arch == "roberta":
        return transformers.RobertaConfig(**kw)
    if arch == "xlm-roberta":
        return transformers.XLMRobertaConfig(**kw)
    if arch == "deberta-v2":
        # Relative attention with a normalised table and the xlarge conv, so that the
        # encoder-level parameters (rel_embeddings, encoder.LayerNorm, encoder.conv) exist.
        return transformers.DebertaV2Config(
            relative_attention=True, pos_att_type=["p2c", "c2p"], norm_rel_ebd="layer_norm", conv_kernel_size=3, **kw
        )
    if arch == "electra":
        # embedding_size != hidden_size gives electra.embeddings_project.
        return transformers.ElectraConfig(embedding_size=16, **kw)
    if arch == "modernbert":
        # The default special token ids lie outside a 100-token vocabulary.
        return transformers.ModernBertConfig(
            pad_token_id=0, bos_token_id=1, eos_token_id=2, cls_token_id=1, sep_token_id=2, **kw
        )
    if arch == "camembert":
        return transformers.CamembertConfig(**kw)
    if arch == "mobilebert":
        return transformers.MobileBertConfig(embedding_size=32, intra_bottleneck_size=32, true_hidden_size=32, **kw)
    if arch == "big_bird":
        return transformers.BigBirdConfig(attention_type="original_full", **kw)
    if arch == "ernie":
        return transformers.ErnieConfig(**kw)
    if arch == "nystromformer":
        return transformers.NystromformerConfig(**kw)
    if arch == "mpnet":  # encoder.relative_attention_bias: one table for every layer
        return transformers.MPNetConfig(**kw)
    if arch == "xlm-roberta-xl":  # encoder.LayerNorm after the top layer (pre-LayerNorm layers)
        return transformers.XLMRobertaXLConfig(**kw)
    if arch == "albert":
        # A group of weights per layer here, so that groups count layers; ALBERT's default of one shared group is
        # checked on its own below. embedding_size != hidden_size gives encoder.embedding_hidden_mapping_in.
        return transformers.AlbertConfig(embedding_size=16, num_hidden_groups=num_layers, **kw)
    raise AssertionError(arch)


@functools.cache
def _model(arch: str, num_layers: int) -> nn.Module:
    """Built once per session; tests that change a model deepcopy it first."""
    torch.manual_seed(0)
    config = _config(arch, num_layers)
    if arch == "bert-base":
        return transformers.BertModel(config)
    if arch == "bert-base-nopool":
        return transformers.BertModel(config, add_pooling_layer=False)
    config.num_labels = 3
    return AutoModelForSequenceClassification.from_config(config)


# (architecture, L): layer counts vary so that a wrong L cannot pass by accident.
ARCHS = [
    ("bert", 3),
    ("distilbert", 2),
    ("roberta", 4),
    ("xlm-roberta", 2),
    ("deberta-v2", 3),
    ("electra", 2),
    ("modernbert", 3),
    ("mpnet", 3),
    ("xlm-roberta-xl", 3),
    ("albert", 3),
    ("camembert", 2),
    ("mobilebert", 3),
    ("big_bird", 2),
    ("ernie", 2),
    ("nystromformer", 3),
    ("bert-base", 2),
]
ARCH_IDS = [arch for arch, _ in ARCHS]


@pytest.fixture(params=ARCHS, ids=ARCH_IDS)
def case(request):
    arch, num_layers = request.param
    return arch, num_layers, _model(arch, num_layers)


def _plan(model, **kw) -> LrPlan:
    return build_plan(model, **{"lr": LR, "decay": DECAY, "head_lr": HEAD_LR, **kw})


def _groups(plan: LrPlan) -> dict[str, Group]:
    return {g.name: g for g in plan.groups}


def _group_of(plan: LrPlan, name: str) -> str:
    (found,) = [g.name for g in plan.groups if name in g.params]
    return found


# --- every architecture --------------------------------------------------------------


def test_counts_the_encoder_layers(case):
    _, num_layers, model = case
    depths, found = layer_depth_map(model)
    assert found == num_layers
    assert _plan(model).num_layers == num_layers
    assert set(depths.values()) == set(range(num_layers + 2))


def test_rates_follow_the_formula(case):
    _, num_layers, model = case
    groups = _groups(_plan(model))
    assert [g.name for g in _plan(model).groups] == (
        ["embeddings"] + [f"layer.{i}" for i in range(1, num_layers + 1)] + ["head"]
    )
    for i in range(1, num_layers + 1):
        assert groups[f"layer.{i}"].depth == i
        assert groups[f"layer.{i}"].lr == pytest.approx(LR * DECAY ** (num_layers - i))
    assert groups[f"layer.{num_layers}"].lr == LR
    rates_top_down = [groups[f"layer.{i}"].lr for i in range(num_layers, 0, -1)]
    assert all(upper > lower for upper, lower in zip(rates_top_down, rates_top_down[1:]))
    assert groups["embeddings"].lr == pytest.approx(LR * DECAY**num_layers)
    assert groups["embeddings"].depth == 0
    assert groups["head"].lr == HEAD_LR
    assert groups["head"].depth == num_layers + 1


def test_a_norm_named_alike_is_placed_by_what_it_does_in_its_model():
    # encoder.LayerNorm normalises DeBERTa-v2's relative table (an input to every layer: the embeddings' rate) and XLM-R
    # XL's top-layer output (the top layer's rate).
    xl = _groups(_plan(_model("xlm-roberta-xl", 3)))
    assert "roberta.encoder.LayerNorm.weight" in xl["layer.3"].params and xl["layer.3"].lr == LR
    deberta = _groups(_plan(_model("deberta-v2", 3)))
    assert "deberta.encoder.LayerNorm.weight" in deberta["embeddings"].params


def test_a_model_s_fixed_rotary_table_is_not_placed_where_it_would_train():
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(transformers.RoFormerConfig(num_hidden_layers=2, **TINY))
    assert not model.roformer.encoder.embed_positions.weight.requires_grad  # fixed in transformers
    with pytest.raises(UserError, match="cannot place parameter 'roformer.encoder.embed_positions.weight'"):
        _plan(model)


def test_albert_s_shared_layer_is_one_layer_with_one_rate():
    # By default every ALBERT layer step reuses one group of weights: the plan has one layer, at the top rate.
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(transformers.AlbertConfig(embedding_size=16, num_hidden_layers=4, **TINY))
    groups = _groups(_plan(model))
    assert list(groups) == ["embeddings", "layer.1", "head"] and groups["layer.1"].lr == LR
    assert "albert.encoder.embedding_hidden_mapping_in.weight" in groups["embeddings"].params


def test_every_parameter_lies_in_exactly_one_group(case):
    _, _, model = case
    plan = _plan(model)
    listed = [name for g in plan.groups for name in g.params]
    names = [name for name, _ in model.named_parameters()]
    assert sorted(listed) == sorted(names)
    assert len(listed) == len(set(listed))
    sizes = dict((n, p.numel()) for n, p in model.named_parameters())
    for g in plan.groups:
        assert g.n_params == sum(sizes[n] for n in g.params)
    assert sum(g.n_params for g in plan.groups) == sum(p.numel() for p in model.parameters())


def test_biases_and_norm_weights_get_no_weight_decay(case):
    _, _, model = case
    plan = _plan(model, weight_decay=0.05)
    by_id = {}
    for group in plan.optimizer_groups(model):
        for p in group["params"]:
            assert id(p) not in by_id, "a parameter in two optimizer groups"
            by_id[id(p)] = group
    params = dict(model.named_parameters())
    assert set(by_id) == {id(p) for p in params.values()}

    norm_params = {
        f"{module_name}.{leaf}" if module_name else leaf
        for module_name, module in model.named_modules()
        if "norm" in type(module).__name__.lower()
        for leaf, _ in module.named_parameters(recurse=False)
    }
    assert norm_params, "the tiny model should have normalisation layers"
    matrices = {
        f"{module_name}.weight"
        for module_name, module in model.named_modules()
        if isinstance(module, (nn.Linear, nn.Embedding, nn.Conv1d, nn.Conv2d))  # Nyströmformer has a Conv2d
    }
    for name, p in params.items():
        group = by_id[id(p)]
        if name.endswith(".bias") or name in norm_params:
            assert group["weight_decay"] == 0.0, name
            assert group["name"].endswith("/no_decay"), name
        else:
            assert name in matrices, f"{name} is neither a bias, a norm weight nor a matrix"
            assert group["weight_decay"] == 0.05, name
            assert not group["name"].endswith("/no_decay"), name
        assert group["name"].split("/")[0] == _group_of(plan, name)


def test_adamw_takes_the_groups_and_steps(case):
    _, _, model = case
    model = copy.deepcopy(model)
    plan = _plan(model)
    optimizer = torch.optim.AdamW(plan.optimizer_groups(model))
    rates = {g["name"]: g["lr"] for g in optimizer.param_groups}
    for g in plan.groups:
        assert rates[g.name] == g.lr
    input_ids = torch.randint(3, 100, (2, 7))
    out = model(input_ids=input_ids)
    logits = out.logits if hasattr(out, "logits") else out.last_hidden_state
    logits.float().pow(2).mean().backward()
    optimizer.step()


def test_to_json_and_table(case):
    _, num_layers, model = case
    plan = _plan(model)
    data = json.loads(json.dumps(plan.to_json()))
    assert data["num_layers"] == num_layers
    assert [g["name"] for g in data["groups"]] == [g.name for g in plan.groups]
    for saved, group in zip(data["groups"], plan.groups):
        assert saved["params"] == list(group.params)
        assert (saved["depth"], saved["lr"], saved["n_params"], saved["trainable"]) == (
            group.depth,
            group.lr,
            group.n_params,
            group.trainable,
        )
    assert data["totals"]["n_params"] == sum(p.numel() for p in model.parameters())
    table = plan.table()
    for g in plan.groups:
        assert re.search(rf"^{re.escape(g.name)} ", table, re.M), g.name
    assert table.splitlines()[-2].startswith("total")


# --- where the odd parameters go -----------------------------------------------------


def test_deberta_shared_relative_embeddings_sit_with_the_embeddings():
    model = _model("deberta-v2", 3)
    plan = _plan(model)
    assert _group_of(plan, "deberta.encoder.rel_embeddings.weight") == "embeddings"
    assert _group_of(plan, "deberta.encoder.LayerNorm.weight") == "embeddings"
    assert _group_of(plan, "deberta.encoder.conv.conv.weight") == "layer.1"
    assert _group_of(plan, "pooler.dense.weight") == "head"


def test_modernbert_final_norm_sits_with_the_top_layer_and_head_with_the_head():
    model = _model("modernbert", 3)
    plan = _plan(model)
    assert _group_of(plan, "model.final_norm.weight") == "layer.3"
    assert _group_of(plan, "head.dense.weight") == "head"
    assert _group_of(plan, "head.norm.weight") == "head"
    assert _group_of(plan, "classifier.weight") == "head"


def test_electra_embedding_projection_sits_with_the_embeddings():
    plan = _plan(_model("electra", 2))
    assert _group_of(plan, "electra.embeddings_project.weight") == "embeddings"


def test_poolers_and_pre_classifier_train_at_the_head_rate():
    assert _group_of(_plan(_model("bert", 3)), "bert.pooler.dense.weight") == "head"
    assert _group_of(_plan(_model("bert-base", 2)), "pooler.dense.weight") == "head"
    assert _group_of(_plan(_model("distilbert", 2)), "pre_classifier.weight") == "head"
    assert _group_of(_plan(_model("roberta", 4)), "classifier.out_proj.weight") == "head"


def test_layer_1_does_not_catch_layer_11():
    model = _model("bert", 12)
    plan = _plan(model)
    groups = _groups(plan)
    assert plan.num_layers == 12
    assert all(".layer.1." in n for n in groups["layer.2"].params)
    assert all(".layer.11." in n for n in groups["layer.12"].params)
    assert len({g.n_params for g in plan.groups if g.name.startswith("layer.")}) == 1
    assert groups["layer.12"].lr == LR
    assert groups["layer.2"].lr == pytest.approx(LR * DECAY**10)


def test_a_missing_pooler_is_not_a_layer():
    without = _plan(_model("bert-base-nopool", 3))
    with_pooler = _plan(_model("bert-base", 3))
    assert without.num_layers == with_pooler.num_layers == 3
    assert _groups(without)["layer.3"].lr == LR
    assert _groups(without)["embeddings"].lr == pytest.approx(LR * DECAY**3)
    # No head parameters at all: the plan has no empty head group.
    assert [g.name for g in without.groups] == ["embeddings", "layer.1", "layer.2", "layer.3"]
    assert [g.name for g in with_pooler.groups][-1] == "head"


# --- options -------------------------------------------------------------------------


def test_embedding_lr_overrides_the_decayed_rate():
    plan = _plan(_model("bert", 3), embedding_lr=3e-6)
    groups = _groups(plan)
    assert groups["embeddings"].lr == 3e-6
    assert groups["layer.1"].lr == pytest.approx(LR * DECAY**2)


def test_decay_one_gives_flat_rates():
    plan = _plan(_model("roberta", 4), decay=1.0)
    assert {g.lr for g in plan.groups if g.name != "head"} == {LR}


def test_freezing_is_planned_then_applied():
    model = copy.deepcopy(_model("bert", 3))
    plan = _plan(model, freeze_embeddings=True, freeze_layers=2)
    assert all(p.requires_grad for p in model.parameters()), "build_plan must not touch the model"
    trainable = {g.name: g.trainable for g in plan.groups}
    assert trainable == {"embeddings": False, "layer.1": False, "layer.2": False, "layer.3": True, "head": True}

    names = {g["name"].split("/")[0] for g in plan.optimizer_groups(model)}
    assert names == {"layer.3", "head"}
    table = plan.table()
    assert len(re.findall(r"\| frozen", table)) == 3

    apply_freezing(model, plan)
    for g in plan.groups:
        for name in g.params:
            assert model.get_parameter(name).requires_grad is g.trainable, name
    in_optimizer = {id(p) for group in plan.optimizer_groups(model) for p in group["params"]}
    assert in_optimizer == {id(p) for p in model.parameters() if p.requires_grad}
    assert plan.to_json()["totals"]["frozen"] == sum(p.numel() for p in model.parameters() if not p.requires_grad)

    # Unfreezing by a plan without frozen groups turns every gradient back on.
    apply_freezing(model, _plan(model))
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize(
    "kw",
    [
        {"decay": 0.0},
        {"decay": 1.5},
        {"decay": float("nan")},
        {"lr": -1e-5},
        {"head_lr": 0.0},
        {"embedding_lr": float("inf")},
        {"weight_decay": -0.1},
        {"freeze_layers": 4},
        {"freeze_layers": -1},
    ],
    ids=str,
)
def test_bad_settings_are_user_errors(kw):
    with pytest.raises(UserError, match=next(iter(kw))):
        _plan(_model("bert", 3), **kw)


# --- loud errors ---------------------------------------------------------------------


@pytest.mark.parametrize("where", ["top", "backbone"])
def test_an_unknown_parameter_is_an_error_that_names_it(where):
    model = copy.deepcopy(_model("bert", 2))
    if where == "top":
        model.extra = nn.Linear(32, 4)
        expected = "extra.weight"
    else:
        model.bert.extra = nn.Linear(32, 4)
        expected = "bert.extra.weight"
    with pytest.raises(UserError, match=rf"'{re.escape(expected)}' of BertForSequenceClassification"):
        layer_depth_map(model)
    with pytest.raises(UserError, match=re.escape(expected)):
        _plan(model)


def test_a_gap_in_the_layer_numbers_is_an_error():
    model = copy.deepcopy(_model("bert", 3))
    model.bert.encoder.layer[1] = nn.Identity()  # layer.1 now has no parameters
    with pytest.raises(UserError, match=r"\[0, 2\]"):
        layer_depth_map(model)


def test_a_plan_for_another_model_is_refused():
    plan = _plan(_model("bert", 2))
    with pytest.raises(UserError, match="does not match"):
        plan.optimizer_groups(_model("bert", 3))
    with pytest.raises(UserError, match="does not match"):
        apply_freezing(copy.deepcopy(_model("bert", 3)), plan)


# --- property ------------------------------------------------------------------------


@settings(max_examples=15, deadline=None)
@given(
    num_layers=st.integers(min_value=1, max_value=8),
    decay=st.floats(min_value=1e-3, max_value=1.0),
    lr=st.floats(min_value=1e-7, max_value=1e-2),
)
def test_bert_rates_match_the_formula_for_any_depth_and_decay(num_layers, decay, lr):
    plan = build_plan(_model("bert", num_layers), lr=lr, decay=decay, head_lr=2 * lr)
    assert plan.num_layers == num_layers
    depths = {g.depth: g for g in plan.groups}
    assert sorted(depths) == list(range(num_layers + 2))
    for i in range(1, num_layers + 1):
        assert depths[i].lr == pytest.approx(lr * decay ** (num_layers - i), rel=1e-12)
    assert depths[num_layers].lr == lr
    assert depths[0].lr == pytest.approx(lr * decay**num_layers, rel=1e-12)
    assert depths[num_layers + 1].lr == 2 * lr


def test_the_package_api_names_stay_functions():
    # Importing a submodule sets an attribute of that name on the package: a module named like an API function
    # (plan.py once) replaced taskembed.plan with a module as soon as anything imported the API.
    import taskembed
    import taskembed.api  # noqa: F401  (loads every submodule the API needs)

    for name in ("train", "load", "evaluate", "plan", "lr_find", "load_config", "Config"):
        assert callable(getattr(taskembed, name)), name
