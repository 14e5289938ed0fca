"""The gate's rule, as a property: every spec that `synth check` accepts compiles and runs a
forward pass on its example inputs, and the shapes the check reported are the shapes the
module returns.

Specs are drawn as ASTs (inputs of images, token sequences and vectors, fixed or symbolic
sizes; chains of every layer and operation of the registries with options drawn near their
edges; sometimes a part of timm's tiny ``test_resnet``) and printed with ``format_spec``.
Most are accepted, many are refused; the refused ones must be refused with a SynthError,
the accepted ones must build. Derandomized, so that a run in CI is the run here.
"""

from __future__ import annotations

import math

import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import synthdsl
from synthdsl.build.compile import compile_graph
from synthdsl.lang import ast
from synthdsl.lang.errors import SynthError
from synthdsl.lang.printer import format_spec
from synthdsl.library.layers import LAYERS
from synthdsl.library.ops import OPS

#: Values drawn for each option name: typical ones and those at the edge of the range.
VALUES: dict[str, list] = {
    "out": [1, 2, 3, 8],
    "kernel": [1, 2, 3, 5, (3, 1), (1, 3)],
    "stride": [1, 2, (2, 1)],
    "padding": [0, 1, 2, "same", "valid", (1, 0)],
    "dilation": [1, 2],
    "groups": [1, 2, 4],
    "bias": [True, False],
    "eps": [1e-5, 1e-3],
    "momentum": [0, 0.1, 1],
    "approximate": ["none", "tanh"],
    "dim": [-1, 0, 1, 2, 3],
    "p": [0, 0.2, 1],
    "start": [0, 1, 2, -1],
    "end": [-1, 1, 2, 3],
    "flatten": [True, False],
    "shape": [(-1,), (2, -1), (-1, 4)],
    "index": [0, 1, -1],
    "size": [1, 2, 4, (3, 5)],
    "scale": [0.5, 1, 2],
    "mode": ["nearest", "bilinear", "bicubic", "mean", "vote"],
    "learnable": [False],
    "weights": [None],
    "num": [1, 3, 10],
    "dims": [(0, 1), (0, 2, 1), (0, 2, 3, 1), (1, 0)],
    "heads": [1, 2, 4],
    "dropout": [0, 0.1],
    "sizes": [(4, 4), (1, 2), (3, 5), (2, 3, 3)],
}
NAMES = sorted({*LAYERS, *OPS} - {"Ensemble"})
SHAPES = [("B", 3, 8, 8), ("B", 4, "H", "W"), ("B", 1, 7, 5), ("B", 8), ("B", 5, 8),
          ("B", 2, 1, 1), ("N", 3, 32, 32)]
#: Element types drawn for inputs, float32 most often; ids and masks feed Embedding and
#: masked_mean, and are refused by the float layers.
DTYPES = ["float32", "float32", "float32", "int64", "bool"]


def _dim(d):
    return ast.SymbolicDim(name=d) if isinstance(d, str) else ast.FixedDim(size=d)


def _lit(v):
    return tuple(v) if isinstance(v, (list, tuple)) else v


@st.composite
def drawn_specs(draw) -> str:
    statements: list = []
    values: list[str] = []
    image_inputs: list[str] = []
    for i in range(draw(st.integers(1, 2))):
        shape = draw(st.sampled_from(SHAPES))
        statements.append(ast.InputDecl(name=f"x{i}", shape=tuple(_dim(d) for d in shape),
                                        dtype=draw(st.sampled_from(DTYPES))))
        values.append(f"x{i}")
        if len(shape) == 4:
            image_inputs.append(f"x{i}")
    if image_inputs and draw(st.integers(0, 4)) == 0:
        statements.append(ast.SourceDecl(name="s", constructor="timm", target="test_resnet",
                                         kwargs=(ast.KwArg(name="num_classes",
                                                           value=draw(st.sampled_from(
                                                               [0, 3]))),)))
        how = draw(st.sampled_from(["whole", "features", "stage", "at"]))
        callee, kw = ("s",), ()
        if how == "features":
            callee = ("s", "forward_features")
        elif how == "stage":
            kw = (ast.KwArg(name="stages", value=(draw(st.integers(0, 4)),)),)
        elif how == "at":
            kw = (ast.KwArg(name="at", value=draw(st.sampled_from(["layer2", "layer3.0",
                                                                    "act1"]))),)
        statements.append(ast.Assign(name="p", value=ast.Call(
            callee=callee, args=(ast.Ref(name=draw(st.sampled_from(image_inputs))),),
            kwargs=kw)))
        values.append("p")
    for i in range(draw(st.integers(1, 5))):
        name = draw(st.sampled_from(NAMES))
        spec = LAYERS.get(name) or OPS[name]
        n_in = getattr(spec, "min_inputs", 1) or 1
        if n_in > 1:
            n_in = draw(st.integers(2, 3))
        args = tuple(ast.Ref(name=draw(st.sampled_from(values))) for _ in range(n_in))
        options = [o for o in spec.options]
        chosen = draw(st.lists(st.sampled_from(options), unique_by=lambda o: o.name,
                               max_size=3)) if options else []
        required = [o for o in options if o.required]
        for o in required:
            if o not in chosen:
                chosen.append(o)
        kwargs = tuple(ast.KwArg(name=o.name, value=_lit(draw(st.sampled_from(
            VALUES.get(o.name, [o.default]))))) for o in chosen
            if VALUES.get(o.name, [o.default]) != [None])
        statements.append(ast.Assign(name=f"v{i}", value=ast.Call(callee=(name,), args=args,
                                                                  kwargs=kwargs)))
        values.append(f"v{i}")
    if draw(st.booleans()) and "p" in values:
        statements.append(ast.FreezeStmt(patterns=(ast.Pattern(text="s"),)))
    statements.append(ast.OutputStmt(names=(ast.Ref(name=values[-1]),)))
    return format_spec(ast.Spec(name="Drawn", statements=tuple(statements)))


def _concrete(shape, symbols: dict[str, int], batch: int) -> tuple:
    return tuple(symbols.get(d, batch) if isinstance(d, str) else d for d in shape)


@settings(max_examples=120, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(drawn_specs())
def test_every_spec_the_check_accepts_compiles_and_runs(text):
    try:
        graph = synthdsl.check_spec(text, raise_errors=False)
    except SynthError as e:  # a syntax-level refusal: fine, as long as it is a SynthError
        event(f"refused {e.code}")
        return
    errors = graph.graph["errors"]
    if errors:
        event(f"refused {errors[0].code}")
        return
    event("accepted")
    module = compile_graph(graph, seed=0)
    inputs = module.example_inputs(batch_size=2)  # symbolic sizes: ones the check ran
    with torch.no_grad():
        out = module(*inputs)
    outs = out if isinstance(out, tuple) else (out,)
    for t in outs:
        assert isinstance(t, torch.Tensor)
        assert all(s >= 0 for s in t.shape)
        assert not math.isinf(float(t.numel()))
