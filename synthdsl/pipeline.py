"""The façade: text or file → AST → graph → checked graph → module, in one call.

Every stage is public too, so tests and tools can run any prefix of the pipeline:
:func:`parse_spec`, :func:`build_graph`, :func:`check_graph`, :func:`compile_graph`.

A spec read from a file with a lock beside it (``SPEC.lock``, written by `synth lock`) has
its lock verified after the graph is built and before any checkpoint is read, header or
tensor (:func:`check_locked`); a checkpoint that changed is S206 and nothing is compiled.
"""

from __future__ import annotations

from pathlib import Path

from synthdsl.lang import ast
from synthdsl.checks import check_graph
from synthdsl.build.compile import compile_graph
from synthdsl.build.locks import provenance_errors, verified_digests, verify_lock
from synthdsl.graph import SynthGraph, build_graph
from synthdsl.build.module import SynthModule
from synthdsl.lang.budget import Budget, budget_limits
from synthdsl.lang.errors import SynthErrors
from synthdsl.lang.parse import parse_file, parse_spec


def load_spec(path_or_text: str | Path) -> ast.Spec:
    """Parse a spec given as a path (`Path`, or a string ending in `.synth`) or as text."""
    if isinstance(path_or_text, Path) or (
            isinstance(path_or_text, str) and "\n" not in path_or_text
            and path_or_text.strip().endswith(".synth")):
        return parse_file(path_or_text)
    return parse_spec(path_or_text)


def check_locked(graph: SynthGraph, raise_errors: bool = True, lock: bool = True,
                 weights: bool = True) -> SynthGraph:
    """:func:`check_graph`, with the lock beside the graph's spec file verified first.

    A lock that fails (S206) is reported with the check's other problems, and the check then
    consults no checkpoint (it runs with ``weights=False``): a changed file is not read."""
    errors = verify_lock(graph, graph.graph.get("file")) if lock and weights else []
    graph = check_graph(graph, raise_errors=raise_errors and not errors,
                        weights=weights and not errors)
    if errors:
        graph.graph["errors"] = SynthErrors([*errors, *graph.graph.get("errors", [])]).errors
        if raise_errors:
            raise SynthErrors(graph.graph["errors"])
    return graph


def check_spec(path_or_text: str | Path, raise_errors: bool = True,
               lock: bool = True, budget: Budget | str | None = None) -> SynthGraph:
    """Parse, resolve and check; the annotated graph (shapes, counts, training sets).

    A spec given as a file has its ``SPEC.lock`` verified, when there is one, before its
    checkpoints are read (``lock=False``: not, as `synth lock` does to write a new one).
    `budget` (``"params=16GiB,activations=8GiB"``) changes the check's limits (S305)."""
    with budget_limits(budget):
        return check_locked(build_graph(load_spec(path_or_text)), raise_errors, lock)


def compile_locked(graph: SynthGraph, seed: int | None = None) -> SynthModule:
    """:func:`compile_graph` of a graph :func:`check_locked` verified; the sha256 of every
    checkpoint tensor as it was read (its provenance) is compared with the lock again, so a
    file swapped between the check and the read is S206 too."""
    digests = verified_digests(graph, graph.graph.get("file"))
    model = compile_graph(graph, seed=seed)
    if errors := provenance_errors(model.provenance, digests):
        raise SynthErrors(errors)
    return model


def compile_spec(path_or_text: str | Path, seed: int | None = None,
                 budget: Budget | str | None = None) -> SynthModule:
    """The whole pipeline: a spec in, one runnable, partly frozen `nn.Module` out.

    >>> m = compile_spec("synth A input x: [B, 8] y = Linear(x, out=2) output y", seed=0)
    >>> m(*m.example_inputs(batch_size=3)).shape
    torch.Size([3, 2])
    """
    return compile_locked(check_spec(path_or_text, budget=budget), seed=seed)
