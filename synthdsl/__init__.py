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

The names below are loaded on first use (PEP 562): ``import synthdsl`` and the
front end (``parse_spec``, ``format_spec``, syntax diagnostics) load no torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: Public name -> the module that defines it.
_EXPORTS = {
    "Span": "synthdsl.lang.ast", "Spec": "synthdsl.lang.ast",
    "SynthError": "synthdsl.lang.errors", "SynthErrors": "synthdsl.lang.errors",
    "parse_spec": "synthdsl.lang.parse", "parse_file": "synthdsl.lang.parse",
    "format_spec": "synthdsl.lang.printer",
    "SynthGraph": "synthdsl.graph", "build_graph": "synthdsl.graph",
    "check_graph": "synthdsl.pipeline",  # the check, with the compiler spec(...) sources need
    "LAYERS": "synthdsl.library.layers", "LayerSpec": "synthdsl.library.layers",
    "register_layer": "synthdsl.library.layers",
    "OPS": "synthdsl.library.ops", "OpSpec": "synthdsl.library.ops",
    "register_op": "synthdsl.library.ops",
    "compile_graph": "synthdsl.build.compile", "SynthModule": "synthdsl.build.module",
    "load_compiled": "synthdsl.build.artifact", "save_compiled": "synthdsl.build.artifact",
    "check_spec": "synthdsl.pipeline", "compile_spec": "synthdsl.pipeline",
    "load_spec": "synthdsl.pipeline",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'synthdsl' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


if TYPE_CHECKING:  # for type checkers and editors; never run
    from synthdsl.build.artifact import load_compiled, save_compiled
    from synthdsl.build.compile import compile_graph
    from synthdsl.build.module import SynthModule
    from synthdsl.checks import check_graph
    from synthdsl.graph import SynthGraph, build_graph
    from synthdsl.lang.ast import Span, Spec
    from synthdsl.lang.errors import SynthError, SynthErrors
    from synthdsl.lang.parse import parse_file, parse_spec
    from synthdsl.lang.printer import format_spec
    from synthdsl.library.layers import LAYERS, LayerSpec, register_layer
    from synthdsl.library.ops import OPS, OpSpec, register_op
    from synthdsl.pipeline import check_spec, compile_spec, load_spec
