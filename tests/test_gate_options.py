"""Layer and operation options outside their range, and value names that collide with
the compiled module's attributes, are refused by the check with a span."""

from __future__ import annotations

from pathlib import Path

import pytest

import synthdsl
from tests.conftest import spec_params
from synthdsl.library.layers import LAYERS
from synthdsl.library.ops import OPS

IMG = "input x: [B, 4, 8, 8]"
VEC = "input x: [B, 8]"
SEQ = "input x: [B, 5, 8]"
IDS = "input x: [B, 5] int64"

#: (input, call with the bad option written last, option, as written, words of the message)
BAD = [
    (IMG, "Conv2d(x, out=0)", "out", "0", ">= 1"),
    (IMG, "Conv2d(x, out=4, kernel=0)", "kernel", "0", ">= 1"),
    (IMG, "Conv2d(x, out=4, kernel=[3, 3, 3])", "kernel", "[3, 3, 3]", "list of 2"),
    (IMG, "Conv2d(x, out=4, kernel=[3, 0])", "kernel", "[3, 0]", ">= 1"),
    (IMG, "Conv2d(x, out=4, stride=0)", "stride", "0", ">= 1"),
    (IMG, "Conv2d(x, out=4, padding=-5)", "padding", "-5", ">= 0"),
    (IMG, "Conv2d(x, out=4, padding=\"full\")", "padding", "\"full\"", "\"same\""),
    (IMG, "Conv2d(x, out=4, stride=2, padding=\"same\")", "padding", "\"same\"", "stride 1"),
    (IMG, "Conv2d(x, out=4, dilation=0)", "dilation", "0", ">= 1"),
    (IMG, "Conv2d(x, out=4, groups=0)", "groups", "0", ">= 1"),
    (IMG, "Conv2d(x, out=4, groups=3)", "groups", "3", "divisor"),
    (IMG, "Conv2d(x, out=6, groups=4)", "groups", "4", "divisor of out=6"),
    (VEC, "Linear(x, out=0)", "out", "0", ">= 1"),
    (VEC, "Linear(x, out=-3)", "out", "-3", ">= 1"),
    (VEC, "LayerNorm(x, eps=-1)", "eps", "-1", "> 0"),
    (VEC, "LayerNorm(x, eps=0)", "eps", "0", "> 0"),
    (VEC, "BatchNorm1d(x, momentum=7)", "momentum", "7", "from 0 to 1"),
    (VEC, "BatchNorm1d(x, eps=0.0)", "eps", "0.0", "> 0"),
    (IMG, "BatchNorm2d(x, momentum=-0.1)", "momentum", "-0.1", "from 0 to 1"),
    (IMG, "BatchNorm2d(x, eps=-1e-5)", "eps", "-1e-5", "> 0"),
    (VEC, "Dropout(x, p=1.5)", "p", "1.5", "from 0 to 1"),
    (VEC, "Dropout(x, p=-1)", "p", "-1", "from 0 to 1"),
    (VEC, "Softmax(x, dim=99)", "dim", "99", "rank 2"),
    (SEQ, "Softmax(x, dim=-4)", "dim", "-4", "from -3 to 2"),
    (VEC, "GELU(x, approximate=\"fast\")", "approximate", "\"fast\"", "\"tanh\""),
    (IMG, "Flatten(x, start=4)", "start", "4", "rank 4"),
    (IMG, "Flatten(x, end=7)", "end", "7", "rank 4"),
    (IMG, "Flatten(x, start=2, end=1)", "end", "1", "after start=2"),
    (IMG, "MaxPool2d(x, kernel=0)", "kernel", "0", ">= 1"),
    (IMG, "MaxPool2d(x, kernel=[2, 2, 2])", "kernel", "[2, 2, 2]", "list of 2"),
    (IMG, "MaxPool2d(x, stride=0)", "stride", "0", ">= 1"),
    (IMG, "MaxPool2d(x, padding=-1)", "padding", "-1", ">= 0"),
    (IMG, "MaxPool2d(x, kernel=2, padding=2)", "padding", "2", "half the kernel"),
    (IMG, "AvgPool2d(x, kernel=0)", "kernel", "0", ">= 1"),
    (IMG, "AvgPool2d(x, stride=[1, 0])", "stride", "[1, 0]", ">= 1"),
    (IMG, "AvgPool2d(x, kernel=3, padding=2)", "padding", "2", "half the kernel"),
    (VEC, "Ensemble(x, x, mode=\"median\")", "mode", "\"median\"", "\"vote\""),
    (VEC, "Ensemble(x, x, weights=[1, 2])", "weights", "[1, 2]", "mode=\"weighted\""),
    (VEC, "Ensemble(x, x, mode=\"weighted\", weights=[1, 2, 3])", "weights", "[1, 2, 3]",
     "2 positive numbers"),
    (VEC, "Ensemble(x, x, mode=\"weighted\", weights=[1, -2])", "weights", "[1, -2]",
     "2 positive numbers"),
    (VEC, "Ensemble(x, x, learnable=true)", "learnable", "true", "mode=\"weighted\""),
    (IDS, "Embedding(x, num=0, dim=4)", "num", "0", ">= 1"),
    (IDS, "Embedding(x, num=10, dim=-1)", "dim", "-1", ">= 1"),
    (SEQ, "Conv1d(x, out=0)", "out", "0", ">= 1"),
    (SEQ, "Conv1d(x, out=4, kernel=0)", "kernel", "0", ">= 1"),
    (SEQ, "Conv1d(x, out=4, stride=0)", "stride", "0", ">= 1"),
    (SEQ, "Conv1d(x, out=4, padding=-1)", "padding", "-1", ">= 0"),
    (SEQ, "Conv1d(x, out=4, padding=\"full\")", "padding", "\"full\"", "\"same\""),
    (SEQ, "Conv1d(x, out=4, stride=2, padding=\"same\")", "padding", "\"same\"", "stride 1"),
    (SEQ, "Conv1d(x, out=4, dilation=0)", "dilation", "0", ">= 1"),
    (SEQ, "Conv1d(x, out=4, groups=2)", "groups", "2", "divisor of the input's 5"),
    (IMG, "GroupNorm(x, groups=3)", "groups", "3", "divisor of the input's 4 channels"),
    (IMG, "GroupNorm(x, groups=0)", "groups", "0", ">= 1"),
    (IMG, "GroupNorm(x, groups=2, eps=0)", "eps", "0", "> 0"),
    (SEQ, "Permute(x, dims=[0, 1])", "dims", "[0, 1]", "permutation of 0..2"),
    (SEQ, "Permute(x, dims=[0, 2, 2])", "dims", "[0, 2, 2]", "permutation of 0..2"),
    (VEC, "reshape(x, shape=[0, 8])", "shape", "[0, 8]", "positive"),
    (VEC, "reshape(x, shape=[-1, -1])", "shape", "[-1, -1]", "at most one -1"),
    (IMG, "resize(x, size=0)", "size", "0", ">= 1"),
    (IMG, "resize(x, size=[4, 4, 4])", "size", "[4, 4, 4]", "list of 2"),
    (IMG, "resize(x, scale=0.0)", "scale", "0.0", "> 0"),
    (IMG, "resize(x, scale=-2)", "scale", "-2", "> 0"),
    (IMG, "resize(x, size=4, mode=\"cubic\")", "mode", "\"cubic\"", "\"bicubic\""),
    (SEQ, "MultiheadAttention(x, heads=3)", "heads", "3", "divisor of the input's 8"),
    (SEQ, "MultiheadAttention(x, heads=0)", "heads", "0", "from 1 to 2^48"),
    (SEQ, "MultiheadAttention(x, heads=2, dropout=1.5)", "dropout", "1.5", "from 0 to 1"),
    (SEQ, "CrossAttention(x, x, heads=16)", "heads", "16", "divisor of the input's 8"),
    (SEQ, "CrossAttention(x, x, heads=2, dropout=-0.1)", "dropout", "-0.1", "from 0 to 1"),
    (IMG, "Upsample(x, scale=0)", "scale", "0", "(not 0)"),
    (IMG, "Upsample(x, size=[4, 4], scale=2)", "scale", "2", "one of them"),
    (IMG, "Upsample(x, size=[4, 4, 4])", "size", "[4, 4, 4]", "list of 2"),
    (IMG, "Upsample(x, size=0)", "size", "0", ">= 1"),
    (IMG, "Upsample(x, scale=2, mode=\"linear\")", "mode", "\"linear\"", "\"bilinear\""),
    (SEQ, "Upsample(x, scale=2, mode=\"bilinear\")", "mode", "\"bilinear\"", "\"linear\""),
    (VEC, "split(x, sizes=[8])", "sizes", "[8]", "two or more"),
    (VEC, "split(x, sizes=[4, 0, 4])", "sizes", "[4, 0, 4]", ">= 1"),
    (VEC, "split(x, sizes=[4, 5])", "sizes", "[4, 5]", "adding up to 8"),
]


def _errors(text: str):
    return synthdsl.check_spec(text, raise_errors=False).graph["errors"]


@pytest.mark.parametrize("decl, call, option, written, words", BAD,
                         ids=[b[1] for b in BAD])
def test_an_option_out_of_range_is_s402_at_its_value(decl, call, option, written, words):
    text = f"synth A\n{decl}\ny = {call}\noutput y\n"
    errors = _errors(text)
    assert [e.code for e in errors] == ["S402"], [str(e) for e in errors]
    e = errors[0]
    at = text.index(f"{option}={written}", text.index("y = "))  # `option=value`, or the value
    assert (e.span.start, e.span.end) in [(at, at + len(option) + 1 + len(written)),
                                          (at + len(option) + 1, at + len(option) + 1
                                           + len(written))], str(e)
    assert f"option '{option}' expects" in e.message and words in e.message, e.message
    assert f"found {written}" in e.message or f"found {written.replace('e-5', 'e-05')}" \
        in e.message, e.message


GOOD = [
    (IMG, "Conv2d(x, out=4, kernel=[3, 1], stride=[2, 1], padding=[1, 0], dilation=1)"),
    (IMG, "Conv2d(x, out=4, kernel=1, padding=0)"),
    (IMG, "Conv2d(x, out=4, padding=\"same\", dilation=2)"),
    (IMG, "Conv2d(x, out=4, stride=2, padding=\"valid\")"),
    (IMG, "Conv2d(x, out=8, groups=4)"),
    (VEC, "BatchNorm1d(x, momentum=0, eps=1e-3)"),
    (IMG, "BatchNorm2d(x, momentum=1)"),
    (VEC, "Dropout(x, p=0)"),
    (VEC, "Dropout(x, p=1)"),
    (SEQ, "Softmax(x, dim=-3)"),
    (SEQ, "Softmax(x, dim=2)"),
    (VEC, "GELU(x, approximate=\"tanh\")"),
    (IMG, "Flatten(x, start=-3, end=2)"),
    (IMG, "Flatten(x, start=2, end=2)"),
    (IMG, "MaxPool2d(x, kernel=2, padding=1)"),
    (IMG, "AvgPool2d(x, kernel=[3, 2], stride=1, padding=[1, 1])"),
    (VEC, "Ensemble(x, x, mode=\"weighted\", weights=[1, 2.5], learnable=true)"),
    (VEC, "Ensemble(x, x, mode=\"vote\")"),
    (IDS, "Embedding(x, num=1, dim=1)"),
    (SEQ, "Conv1d(x, out=10, kernel=1, stride=2, padding=0, dilation=2, groups=5)"),
    (SEQ, "Conv1d(x, out=4, padding=\"same\", dilation=2)"),
    (IMG, "GroupNorm(x, groups=2, eps=1e-3)"),
    (SEQ, "Permute(x, dims=[2, 0, 1])"),
    (VEC, "reshape(x, shape=[2, -1])"),
    (IMG, "resize(x, size=[4, 6])"),
    (IMG, "resize(x, scale=0.5, mode=\"nearest\")"),
    (SEQ, "MultiheadAttention(x, heads=8, dropout=1)"),
    (SEQ, "CrossAttention(x, x, heads=1, dropout=0, bias=false)"),
    (IMG, "Upsample(x, scale=0.5, mode=\"bicubic\")"),
    (IMG, "Upsample(x, size=3, mode=\"bilinear\")"),
    (SEQ, "Upsample(x, size=[9], mode=\"linear\")"),
    (VEC, "GatedFusion(x, x, x)"),
    (SEQ, "cls_token(x)"),
]


@pytest.mark.parametrize("decl, call", GOOD, ids=[g[1] for g in GOOD])
def test_options_inside_their_range_pass(decl, call):
    errors = _errors(f"synth A\n{decl}\ny = {call}\noutput y\n")
    assert errors == [], [str(e) for e in errors]


def test_every_range_checked_option_is_exercised():
    """Each option that states a range has a bad value in the table above."""
    ranged = {(name, o.name) for name, spec in {**LAYERS, **OPS}.items()
              for o in spec.options if o.check is not None}
    tested = {(call.split("(")[0], option) for _, call, option, _, _ in BAD}
    assert ranged - tested == set()


#: Options whose range depends on the inputs' shapes alone: the operation's shape rule
#: reports them, as a mismatch of the inputs (S301), as it always has.
BY_SHAPE_RULE = {("concat", "dim"), ("stack", "dim"), ("select", "dim"), ("select", "index"),
                 ("split", "dim")}


def test_every_numeric_or_text_option_states_a_range():
    """Going through the registries: only true/false options go without a range (and the
    operations' dimensions, which the shape rule checks against the inputs)."""
    loose = {(name, o.name) for name, spec in {**LAYERS, **OPS}.items()
             for o in spec.options if o.check is None and o.types != (bool,)}
    assert loose == BY_SHAPE_RULE


@pytest.mark.parametrize("decl, call, words", [
    (VEC, "concat(x, x, dim=2)", "out of range"),
    (VEC, "stack(x, x, dim=3)", "out of range"),
    (SEQ, "select(x, dim=5)", "out of range"),
    (SEQ, "select(x, dim=1, index=5)", "size 5"),
    (SEQ, "split(x, sizes=[4, 4], dim=3)", "out of range"),
])
def test_an_operation_dimension_outside_the_inputs_is_s301(decl, call, words):
    errors = _errors(f"synth A\n{decl}\ny = {call}\noutput y\n")
    assert [e.code for e in errors] == ["S301"] and words in errors[0].message, errors


MODELS = sorted((Path(__file__).resolve().parent.parent / "models").glob("*.synth"))


@pytest.mark.parametrize("path", spec_params(MODELS))
def test_the_example_models_still_check(path):
    errors = synthdsl.check_spec(path, raise_errors=False).graph["errors"]
    assert errors == [], [str(e) for e in errors]


# -- names that collide with the compiled module's attributes ------------------------


def _compiled_attributes() -> set[str]:
    """Attributes of a real compiled module: the SynthModule, its GraphModule, both
    classes and instances."""
    from torch import fx

    from synthdsl.build.module import SynthModule

    model = synthdsl.compile_spec("synth A input x: [B, 8] y = Linear(x, out=4) output y")
    return (set(dir(fx.GraphModule)) | set(dir(SynthModule)) | set(vars(model))
            | set(vars(model.graph_module)))


ATTRIBUTES = sorted(n for n in _compiled_attributes() if n.isidentifier())


def test_the_issue_s_names_are_among_them():
    assert {"_modules", "_parameters", "graph", "code", "losses", "provenance",
            "forward_train", "training", "_graph"} <= set(ATTRIBUTES)


@pytest.mark.parametrize("name", ATTRIBUTES)
def test_a_name_the_compiled_module_uses_is_reserved(name):
    from synthdsl import SynthError

    text = f"synth A\ninput x: [B, 8]\n{name} = Linear(x, out=4)\noutput {name}\n"
    try:
        errors = _errors(text)
    except SynthError as e:  # a word of the language itself (`freeze`, `train`, ...)
        assert e.code.startswith("S0"), str(e)
        pytest.skip(f"'{name}' does not parse as a value name: {e}")
    assert errors, f"'{name}' was accepted"
    e = errors[0]
    assert e.code == "S103", str(e)
    at = text.index(f"\n{name} = ") + 1
    assert (e.span.start, e.span.end) == (at, at + len(name)), str(e)
    assert "reserved" in e.message and e.hint and f"'{name}_'" in e.hint


@pytest.mark.parametrize("name", ["graph", "losses", "_modules"])
def test_a_reserved_input_or_source_name_is_refused_too(name):
    errors = _errors(f"synth A\ninput {name}: [B, 8]\ny = Linear({name}, out=4)\noutput y\n")
    assert errors and errors[0].code == "S103", [str(e) for e in errors]


@pytest.mark.parametrize("name", ["graph_", "codes", "graphs", "features", "head"])
def test_names_near_them_still_compile_and_run(name):
    import torch

    model = synthdsl.compile_spec(
        f"synth A input x: [B, 8] {name} = Linear(x, out=4) output {name}")
    assert tuple(model(torch.ones(2, 8)).shape) == (2, 4)
