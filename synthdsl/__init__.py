"""synthdsl: build new neural networks out of pretrained ones, declaratively.

A `.synth` spec is parsed into an AST, resolved into a networkx graph, checked
(names, cycles, shapes, training sets) before any weight is read, and compiled
through torch.fx into one ordinary `nn.Module`.

>>> import synthdsl
>>> model = synthdsl.compile_spec('''
...     synth Probe
...     input x: [B, 16]
...     h = Linear(x, out=8) |> ReLU
...     y = Linear(h, out=2)
...     freeze h
...     output y''')
>>> model.parameter_totals()
{'params': 154, 'trainable': 18, 'frozen': 136}
"""

from synthdsl.artifact import load_compiled, save_compiled
from synthdsl.ast import Span, Spec
from synthdsl.check import check_graph
from synthdsl.compile import compile_graph
from synthdsl.errors import SynthError, SynthErrors
from synthdsl.graph import SynthGraph, build_graph
from synthdsl.layers import LAYERS, LayerSpec, register_layer
from synthdsl.module import SynthModule
from synthdsl.ops import OPS, OpSpec, register_op
from synthdsl.parse import parse_file, parse_spec
from synthdsl.pipeline import check_spec, compile_spec, load_spec
from synthdsl.printer import format_spec

__all__ = [
    "LAYERS", "OPS", "LayerSpec", "OpSpec", "Span", "Spec", "SynthError", "SynthErrors",
    "SynthGraph", "SynthModule", "build_graph", "check_graph", "check_spec", "compile_graph",
    "compile_spec", "format_spec", "load_compiled", "load_spec", "parse_file", "parse_spec",
    "register_layer", "register_op", "save_compiled",
]
__version__ = "0.1.0"
