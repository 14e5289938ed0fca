"""The façade: text or file → AST → graph → checked graph → module, in one call.

Every stage is public too, so tests and tools can run any prefix of the pipeline:
:func:`parse_spec`, :func:`build_graph`, :func:`check_graph`, :func:`compile_graph`.
"""

from __future__ import annotations

from pathlib import Path

from synthdsl.lang import ast
from synthdsl.checks import check_graph
from synthdsl.build.compile import compile_graph
from synthdsl.graph import SynthGraph, build_graph
from synthdsl.build.module import SynthModule
from synthdsl.lang.parse import parse_file, parse_spec


def load_spec(path_or_text: str | Path) -> ast.Spec:
    """Parse a spec given as a path (`Path`, or a string ending in `.synth`) or as text."""
    if isinstance(path_or_text, Path) or (
            isinstance(path_or_text, str) and "\n" not in path_or_text
            and path_or_text.strip().endswith(".synth")):
        return parse_file(path_or_text)
    return parse_spec(path_or_text)


def check_spec(path_or_text: str | Path, raise_errors: bool = True) -> SynthGraph:
    """Parse, resolve and check; the annotated graph (shapes, counts, training sets)."""
    return check_graph(build_graph(load_spec(path_or_text)), raise_errors=raise_errors)


def compile_spec(path_or_text: str | Path, seed: int | None = None) -> SynthModule:
    """The whole pipeline: a spec in, one runnable, partly frozen `nn.Module` out.

    >>> m = compile_spec("synth A input x: [B, 8] y = Linear(x, out=2) output y", seed=0)
    >>> m(*m.example_inputs(batch_size=3)).shape
    torch.Size([3, 2])
    """
    return compile_graph(check_spec(path_or_text), seed=seed)
