"""Resolution and checks on the graph: shapes, inferred sizes, names, patterns."""

from __future__ import annotations

import pytest

import synthdsl
from synthdsl import SynthError
from synthdsl.checks import pattern_matches


def check(text: str, raise_errors: bool = True):
    return synthdsl.check_spec(text, raise_errors=raise_errors)


def codes(text: str) -> list[str]:
    g = check(text, raise_errors=False)
    return [e.code for e in g.graph["errors"]]


def test_sizes_are_inferred_from_shapes():
    g = check("""synth S
        input x: [B, 3, 16, 16]
        c = Conv2d(x, out=8, kernel=3, padding=1) |> BatchNorm2d |> ReLU
        p = GlobalAvgPool(c)
        h = LayerNorm(p) |> Linear(out=5)
        output h""")
    assert g.nodes["c.0"]["build"]["in_channels"] == 3
    assert g.nodes["c.1"]["build"]["num_features"] == 8
    assert g.nodes["h.0"]["build"]["normalized_shape"] == 8
    assert g.nodes["h.1"]["build"] == {"in_features": 8, "out_features": 5, "bias": True}
    assert g.nodes["c.2"]["shape"] == ("B", 8, 16, 16)
    assert g.nodes["p"]["shape"] == ("B", 8)
    assert g.edges["p", "h.0"]["shape"] == ("B", 8)


def test_symbolic_dims_stay_symbolic():
    g = check("synth S input x: [B, T, 32] y = Linear(x, out=4) output y")
    assert g.nodes["y"]["shape"] == ("B", "T", 4)


def test_forward_references_and_aliases():
    g = check("""synth S
        output y
        y = ReLU(h)
        h = Linear(z, out=3)
        z = x
        input x: [B, 7]""")
    assert g.nodes["y"]["shape"] == ("B", 3)
    assert g.nodes["h"]["inputs"] == ("x",)


def test_joins():
    g = check("""synth S
        input a: [B, 4]
        input b: [B, 4]
        s = add(a, b, a)
        m = mean(a, b)
        c = concat(s, m, dim=-1)
        output c""")
    assert g.nodes["c"]["shape"] == ("B", 8)
    assert codes("synth S input a: [B, 4] input b: [B, 5] s = add(a, b) output s") == ["S301"]
    assert codes("synth S input a: [B, 4] s = add(a) output s") == ["S301"]
    assert codes("synth S input a: [B, 4] s = concat(a, a, dim=2) output s") == ["S301"]
    assert codes("synth S input a: [B, 4] s = concat(a, a, axis=1) output s") == ["S402"]


def test_independent_problems_are_all_reported():
    errs = codes("""synth S
        input x: [B, 4]
        a = Linear(y, out=2)
        b = Conv2d(x, out=2)
        c = Dropout(x, p="a")
        output a, b, c, d""")
    assert errs == ["S101", "S301", "S402", "S105"]


def test_downstream_of_an_error_is_not_reported_again():
    errs = codes("""synth S
        input x: [B, 4]
        a = Conv2d(x, out=2)
        b = Linear(a, out=3) |> ReLU
        output b""")
    assert errs == ["S301"]


def test_pattern_semantics():
    assert pattern_matches("r18.layer4.0.conv1.weight", "r18.layer4")
    assert pattern_matches("r18.layer4.0.conv1.weight", "r18.*")
    assert pattern_matches("r18.layer4.0.bn1.weight", "*.bn1.*")
    assert not pattern_matches("r18.layer40.conv.weight", "r18.layer4")
    assert pattern_matches("r18.layer4.1.conv2.weight", "r18.layer4.?.conv2")


def test_later_rules_win():
    g = check("""synth S
        input x: [B, 4]
        h = Linear(x, out=4) |> Linear(out=4)
        freeze h
        train h.1
        freeze h.1.bias
        output h""")
    assert g.graph["frozen"] == ["h.0.bias", "h.0.weight", "h.1.bias"]


def test_unused_values_are_warnings():
    g = check("synth S input x: [B, 4] a = Linear(x, out=2) b = ReLU(x) output b")
    assert [w.code for w in g.graph["warnings"]] == ["W001"]
    assert "'a'" in g.graph["warnings"][0].message


@pytest.mark.parametrize("text,code", [
    ("synth S input x: [B, 4] a = Linear(x, out=2) a = ReLU(x) output a", "S102"),
    ("synth S input x: [B, 0] output x", "S107"),
    ("synth S input x: [B, 4] y = x.foo(x) output y", "S101"),
    ("synth S input x: [B, 4] y = x(x) output y", "S101"),
    ("synth S source r = keras(\"resnet18\") input x: [B, 4] output x", "S201"),
    ("synth S source r = timm(\"resnet18\") input x: [B, 3, 8, 8] y = r.layer1.forward_features(x) output y", "S202"),
    ("synth S source r = timm(\"resnet18\", weights=3) input x: [B, 4] output x", "S204"),
    ("synth S source r = timm(\"resnet18\", no_such_option=3) input x: [B, 3, 8, 8] y = r(x) output y", "S402"),
    ("synth S input x: [B, 4] y = Linear(x, out=2) train y with lr=2 output y", "S402"),
    ("synth S input x: [B, 4] y = Linear(x, out=2) train y with lr_mult=-1 output y", "S402"),
    ("synth S input x: [B, 4] a = b b = a output a", "S104"),
])
def test_error_codes(text, code):
    with pytest.raises(SynthError) as e:
        check(text)
    assert code in [x.code for x in getattr(e.value, "errors", [e.value])]


@pytest.mark.parametrize("recipe, message", [
    ("mean=0.5", "recipe gives 'mean' without 'std'"),
    ("mean=0.5, std=0", "recipe option 'std' expects a number > 0"),
    ("normalize=1", "recipe option 'normalize' expects true or false, found 1"),
    ("mean=0.5, std=0.2, normalize=false", "normalize=false and also gives mean and std"),
    ("mean=[0.5, 0.5], std=0.2", "2 values of 'mean'; expected one per channel of the image "
     "input (3)"),
    ("mean=0.5, std=[0.2, 0.2, 0.2, 0.2]", "4 values of 'std'"),
])
def test_recipe_preprocessing_mistakes(recipe, message):
    with pytest.raises(SynthError) as e:
        check(f"synth S input x: [B, 3, 8, 8] y = Flatten(x) recipe {recipe} output y")
    errors = getattr(e.value, "errors", [e.value])
    assert [x.code for x in errors] == ["S402"]
    assert message in errors[0].message


def test_recipe_preprocessing_accepted():
    check("synth S input x: [B, 3, 8, 8] y = Flatten(x) "
          "recipe mean=[0.5, 0.4, 0.3], std=0.2 output y")
    check("synth S input x: [B, 4] y = Linear(x, out=2) recipe mean=[1, 2], std=[3, 4] output y")
    check("synth S input x: [B, 3, 8, 8] y = Flatten(x) recipe normalize=false output y")

