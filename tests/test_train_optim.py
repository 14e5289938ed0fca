"""What the optimizer is given: `optimize` statements (options without thawing),
layer-wise learning-rate decay, no decay on norms and biases, and the command line's
`--set` overrides; each through the Python API or `synth train` as a user runs it."""

from __future__ import annotations

import pytest
import torch

import synthdsl
from synthdsl.lang.errors import SynthError
from synthdsl.train.optim import make_optimizer
from synthdsl.train.recipe import Recipe

pytestmark = pytest.mark.usefixtures("one_thread")

#: a frozen trunk under a trainable head, on digits at their own 8×8 size
FROZEN_TRUNK = """synth Trunk
input image: [B, 1, 8, 8]
trunk  = Flatten(image) |> Linear(out=16) |> LayerNorm |> ReLU
logits = Linear(trunk, out=10)
freeze trunk
{extra}
output logits
"""


def _groups(model, recipe: Recipe) -> dict[str, dict]:
    """Each trainable parameter's optimizer group (lr and weight decay), by name."""
    opt = make_optimizer(model, recipe)
    return {n: g for g in opt.param_groups for n in g["names"]}


def test_optimize_sets_weight_decay_without_thawing_anything():
    model = synthdsl.compile_spec(FROZEN_TRUNK.format(
        extra="optimize *.bias with weight_decay=0\noptimize logits with lr_mult=2"), seed=0)
    frozen = set(model.graph.graph["frozen"])
    assert {"trunk.1.bias", "trunk.1.weight", "trunk.2.bias", "trunk.2.weight"} <= frozen
    groups = _groups(model, Recipe(lr=0.1, weight_decay=0.05))
    assert set(groups) == {"logits.weight", "logits.bias"}   # the trunk's biases stay frozen
    assert groups["logits.bias"]["weight_decay"] == 0.0
    assert groups["logits.weight"]["weight_decay"] == 0.05
    assert groups["logits.weight"]["lr"] == pytest.approx(0.2)


def test_train_with_options_still_thaws_and_later_statements_win():
    model = synthdsl.compile_spec(FROZEN_TRUNK.format(
        extra="train *.bias with weight_decay=0\noptimize trunk.1 with lr_mult=0.5\n"
              "freeze trunk.2"), seed=0)
    groups = _groups(model, Recipe(lr=0.1, weight_decay=0.05))
    assert set(groups) == {"logits.weight", "logits.bias", "trunk.1.bias"}
    assert groups["trunk.1.bias"]["weight_decay"] == 0.0
    assert groups["trunk.1.bias"]["lr"] == pytest.approx(0.05)
    assert model.graph.graph["param_options"].get("trunk.2.bias") is None  # frozen later


@pytest.mark.parametrize("extra, code, text", [
    ("optimize *.bais with weight_decay=0", "S401", "optimize pattern '*.bais'"),
    ("optimize logits with lr=2", "S402", "optimize has no option 'lr'"),
])
def test_optimize_problems_are_diagnostics(extra, code, text):
    with pytest.raises(SynthError) as e:
        synthdsl.compile_spec(FROZEN_TRUNK.format(extra=extra), seed=0)
    assert e.value.code == code and text in str(e.value)


def test_optimize_round_trips_through_the_printer():
    from synthdsl.lang.parse import parse_spec
    from synthdsl.lang.printer import format_spec

    spec = parse_spec(FROZEN_TRUNK.format(extra="optimize *.bias, logits with weight_decay=0"))
    assert "optimize *.bias, logits with weight_decay=0\n" in format_spec(spec)
    assert parse_spec(format_spec(spec)) == spec
