"""The check as passes: each pass run alone on a small graph does its one job, and the
option tables of the language have one owner that the check and the trainer share."""

from __future__ import annotations

import argparse
import dataclasses
import inspect

import pytest

from synthdsl.checks import PASSES, CheckContext, check_graph
from synthdsl.checks.adapters import check_adapters
from synthdsl.checks.context import run_check
from synthdsl.checks.policies import check_policies
from synthdsl.checks.recipe import check_recipe
from synthdsl.checks.shapes import check_shapes
from synthdsl.checks.sources import check_sources
from synthdsl.checks.structure import check_cycles
from synthdsl.checks.training import check_training
from synthdsl.checks.unused import check_unused
from synthdsl.graph import build_graph
from synthdsl.lang.errors import SynthErrors
from synthdsl.lang.options import (LOSSES, OPTIMIZERS, POLICIES, RECIPE, SCHEDULES,
                                   TRAIN_OPTIONS, Option)
from synthdsl.lang.parse import parse_spec
from synthdsl.train.recipe import Recipe


def context(text: str) -> CheckContext:
    return CheckContext(build_graph(parse_spec(text)), passes=PASSES)


def found(ctx: CheckContext) -> list[tuple[str, str]]:
    return [(e.code, e.message) for e in ctx.errors.errors]


# -- the pass list -----------------------------------------------------------------

def test_check_graph_runs_the_pass_list_in_order():
    assert inspect.signature(check_graph).parameters["passes"].default is PASSES
    ran = []

    def recorded(pass_):
        def run(ctx):
            ran.append(pass_.__name__)
            pass_(ctx)
        return run

    text = "synth A input x: [B, 8] h = Linear(x, out=4) |> ReLU output h"
    g = check_graph(build_graph(parse_spec(text)), passes=[recorded(p) for p in PASSES])
    assert ran == [p.__name__ for p in PASSES] == [
        "check_cycles", "check_sources", "check_shapes", "check_inheritance",
        "check_policies", "check_adapters", "check_compression", "check_budget",
        "check_training", "check_recipe",
        "check_unused"]
    assert g.nodes["h.0"]["shape"] == ("B", 4) and g.graph["checked"]


def test_a_shorter_pass_list_does_only_its_part():
    text = "synth A input x: [B, 8] h = Linear(x, out=4) recipe epochs=0 output h"
    g = check_graph(build_graph(parse_spec(text)), passes=[check_shapes])
    assert g.nodes["h"]["shape"] == ("B", 4)
    assert g.graph["errors"] == [] and "frozen" not in g.graph  # no recipe, no training
    with pytest.raises(SynthErrors):
        check_graph(build_graph(parse_spec(text)))


# -- each pass alone -----------------------------------------------------------------

def test_the_cycle_pass_reports_a_cycle_and_nothing_else():
    ctx = context("synth A input x: [B, 4] a = add(x, b) b = ReLU(a) c = Linear(x, out=2) "
                  "recipe epochs=0 output c")
    check_cycles(ctx)
    assert found(ctx) == [("S104", "cycle: 'a' → 'b' → 'a'")]
    assert ctx.broken == {"a", "b"}
    assert not any("shape" in ctx.g.nodes[n] for n in ctx.g.nodes)  # shapes are not its job


def test_the_shape_pass_skips_what_is_broken():
    ctx = context("synth A input x: [B, 4] a = add(x, b) b = ReLU(a) c = Linear(x, out=2) "
                  "d = Linear(b, out=3) output c, d")
    check_cycles(ctx)
    check_shapes(ctx)
    assert [c for c, _ in found(ctx)] == ["S104"]  # d's input is broken: no second report
    assert ctx.g.nodes["c"]["shape"] == ("B", 2) and ctx.g.nodes["c"]["params"] == 10
    assert "d" in ctx.broken and "shape" not in ctx.g.nodes["d"]


def test_the_shape_pass_reports_a_mismatch_at_the_node():
    text = "synth A input x: [B, 4] input y: [B, 5] z = add(x, y) output z"
    ctx = context(text)
    check_shapes(ctx)
    (err,) = ctx.errors.errors
    assert err.code == "S301" and err.span.column == text.index("add(") + 1
    assert ctx.g.nodes["x"]["shape"] == ("B", 4)


def test_the_recipe_pass_reports_s402_at_the_option():
    text = "synth A input x: [B, 4] y = ReLU(x)\nrecipe lr=0.1, epochs=0\noutput y"
    ctx = context(text)
    check_recipe(ctx)
    (err,) = ctx.errors.errors
    assert (err.code, err.message) == (
        "S402", "recipe option 'epochs' expects a whole number > 0, found 0")
    assert (err.span.line, err.span.column) == (2, 23)  # at the value
    assert text[err.span.start:err.span.end] == "0"


def test_the_recipe_pass_names_the_options_it_knows():
    ctx = context("synth A input x: [B, 4] y = ReLU(x) recipe epoch=3 output y")
    check_recipe(ctx)
    (err,) = ctx.errors.errors
    assert err.message == "recipe has no option 'epoch'" and "'epochs'" in err.hint


def test_the_policy_pass_checks_values_and_writes_the_norm_policy():
    ctx = context('synth A input x: [B, 4] y = ReLU(x) policy norm = "thaw" output y')
    check_policies(ctx)
    assert found(ctx) == [("S402", 'policy norm takes "follow", "frozen", "train", '
                                   "found 'thaw'")]
    assert ctx.g.graph["norm_policy"] == "follow"
    ok = context('synth A input x: [B, 4] y = ReLU(x) policy norm = "train" output y')
    check_policies(ok)
    assert found(ok) == [] and ok.g.graph["norm_policy"] == "train"


def test_the_source_pass_builds_nothing_it_cannot_name():
    ctx = context('synth A source r = timm("no_such_net") input x: [B, 3, 8, 8] '
                  "y = r(x) output y")
    check_sources(ctx)
    assert [c for c, _ in found(ctx)] == ["S201"]
    assert ctx.broken == {"r"} and ctx.models == {}


def test_the_training_pass_resolves_rules_after_the_shapes():
    text = ("synth A input x: [B, 4] h = Linear(x, out=3) |> ReLU |> Linear(out=2) "
            "freeze h.0 train h.0.bias with lr_mult=0.5 freeze nothing.* output h")
    ctx = context(text)
    check_shapes(ctx)
    check_training(ctx)
    assert found(ctx) == [("S401", "freeze pattern 'nothing.*' matches no parameter")]
    assert ctx.g.graph["frozen"] == ["h.0.weight"]
    assert ctx.g.graph["param_options"] == {"h.0.bias": {"lr_mult": 0.5}}
    assert ctx.g.nodes["h.0"]["frozen_params"] == 12
    assert ctx.g.nodes["h.0"]["trainable_params"] == 3


def test_the_adapter_pass_adds_lora_tensors_that_training_then_trains():
    text = ("synth A input x: [B, 4] h = Linear(x, out=3) adapt h with lora(rank=2) "
            "output h")
    ctx = context(text)
    check_shapes(ctx)
    check_adapters(ctx)
    assert found(ctx) == []
    assert ctx.g.graph["adapters"] == [{"module": "h", "method": "lora", "rank": 2,
                                        "alpha": 2, "dropout": 0.0}]
    added = sorted(k for k in ctx.g.nodes["h"]["parameters"] if "lora" in k)
    assert added and ctx.g.nodes["h"]["params"] == 15 + 2 * 4 + 3 * 2
    check_training(ctx)
    assert ctx.g.graph["frozen"] == ["h.bias", "h.weight"]
    assert not set(added) & set(ctx.g.graph["frozen"])


def test_the_adapter_pass_checks_its_options():
    ctx = context("synth A input x: [B, 4] h = Linear(x, out=3) adapt h with lora(rank=0) "
                  "output h")
    check_shapes(ctx)
    check_adapters(ctx)
    assert found(ctx) == [("S402", "lora rank expects a whole number > 0, found 0")]


def test_the_unused_pass_warns_only_when_there_is_no_error():
    text = "synth A input x: [B, 4] y = ReLU(x) z = ReLU(x) output y"
    ctx = context(text)
    check_unused(ctx)
    assert [(w.code, w.message) for w in ctx.warnings] == [
        ("W001", "value 'z' does not reach any output")]
    ctx = context(text)
    ctx.err("S999", "an earlier problem", None)
    check_unused(ctx)
    assert ctx.warnings == []


def test_run_check_writes_the_summary_keys():
    g = build_graph(parse_spec("synth A input x: [B, 4] a = add(x, b) b = ReLU(a) output b"))
    run_check(g, [check_cycles], raise_errors=False)
    assert [e.code for e in g.graph["errors"]] == ["S104"]
    assert g.graph["symbols"] == {"B": 9973} and g.graph["checked"] is True
    assert g.nodes["a"]["broken"] and g.nodes["b"]["broken"]


# -- the option tables -------------------------------------------------------------------

@pytest.mark.parametrize("option, good, bad", [
    (RECIPE["epochs"], [1, 50], [0, -1, 2.5, True, "3"]),
    (RECIPE["momentum"], [0, 0.5], [1, -0.1, False]),
    (RECIPE["optimizer"], ["sgd"], ["lion", 3]),
    (RECIPE["std"], [0.5, (0.2, 0.3)], [0, (), (0.2, 0), (True,), "x"]),
    (RECIPE["normalize"], [True, False], [1, "no"]),
    (LOSSES["distill"].options["alpha"], [0, 1, 0.7], [1.01, -1]),
    (LOSSES["distill"].options["temperature"], [0.5], [0, -2]),
    (TRAIN_OPTIONS["lr_mult"], [0, 0.1, 3], [-1, True, "x"]),
])
def test_an_option_accepts_its_type_and_range(option: Option, good, bad):
    assert all(option.accepts(v) for v in good)
    assert not any(option.accepts(v) for v in bad)


def test_options_spell_what_they_expect():
    assert [RECIPE[k].expects for k in ("epochs", "lr", "weight_decay", "label_smoothing",
                                        "seed", "schedule")] == [
        "a whole number > 0", "a number > 0", "a number ≥ 0", "a number in [0, 1)",
        "a whole number", '"cosine", "constant" or "step"']
    assert LOSSES["distill"].options["alpha"].expects == "a number in [0, 1]"
    assert POLICIES["norm"].default == POLICIES["norm"].choices[0] == "follow"


def test_the_recipe_of_the_trainer_is_the_schema_less_preprocessing():
    schema = {k: o.default for k, o in RECIPE.items() if k not in ("mean", "std", "normalize")}
    assert {f.name: f.default for f in dataclasses.fields(Recipe)} == schema
    assert list(schema) == [f.name for f in dataclasses.fields(Recipe)]
    assert Recipe.resolve({"mean": 0.5, "epochs": 2}).epochs == 2
    with pytest.raises(Exception, match="optimizer must be adamw, adam or sgd, not 'lion'"):
        Recipe.resolve({"optimizer": "lion"})
    with pytest.raises(Exception, match="epochs, batch size and learning rate must be > 0"):
        Recipe.resolve(overrides={"batch_size": 0})


def test_the_command_line_offers_the_schema_choices():
    from synthdsl.cli.app import build_parser

    parser = build_parser()
    train = next(a for a in parser._subparsers._group_actions
                 if isinstance(a, argparse._SubParsersAction)).choices["train"]
    choices = {a.dest: a.choices for a in train._actions if a.dest in ("optimizer", "schedule")}
    assert choices == {"optimizer": OPTIMIZERS, "schedule": SCHEDULES}
    assert OPTIMIZERS == RECIPE["optimizer"].choices == ("adamw", "adam", "sgd")
