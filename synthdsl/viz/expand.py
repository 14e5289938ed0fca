"""A source opened up: its torch.fx graph, grouped by module path, with parameter counts.

The source model is built on the ``meta`` device (no memory, no weights) and
traced with timm's own fx rules: its not-traced modules stay leaves and its
not-traced functions are wrapped, and optional ``forward()`` arguments are bound
to their defaults so the trace takes one branch (see ``shared/TIMM_FX.md``).
Each fx node goes to the group of its module path cut to `depth` levels
(``layer1`` at depth 1, ``layer1.0`` at depth 2); data flowing between groups
becomes an edge. Every parameter of the model goes to the group of its own
module path cut the same way, so the groups' counts always add up to the
source's count, traced or not. A model that cannot be traced is still grouped
by its module tree, with a note and no edges.

>>> from synthdsl.viz.expand import trace_groups
>>> from synthdsl.library.sources import create_timm
>>> groups, edges, note = trace_groups(create_timm("test_resnet", {}, "meta"), depth=1)
>>> [g.path for g in groups][:4], ("conv1", "bn1") in edges
(['conv1', 'bn1', 'act1', 'maxpool'], True)
"""

from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass
from typing import Any, Mapping

from torch import fx, nn

from synthdsl.library.cuts import TimmTracer


class ExpandError(ValueError):
    """A source that cannot be opened (unknown name, or a source that failed the check)."""


@dataclass(frozen=True)
class Group:
    path: str                       # module path inside the source; "" is the model itself
    module_type: str
    ops: int                        # fx nodes in the group
    parameters: Mapping[str, int]   # qualified name (with the source's name) -> numel


@dataclass(frozen=True)
class Expansion:
    source: str
    depth: int
    groups: tuple[Group, ...]
    edges: tuple[tuple[str, str], ...]   # (group path, group path), data flow between groups
    note: str | None = None


def _concrete_args(model: nn.Module) -> dict[str, Any]:
    params = list(inspect.signature(model.forward).parameters.values())
    return {p.name: p.default for p in params
            if p.default is not inspect.Parameter.empty
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def _cut(path: str, depth: int) -> str:
    return ".".join(path.split(".")[:depth]) if path else ""


def _module_path(node: fx.Node) -> str:
    if node.op == "call_module":
        return str(node.target)
    if node.op == "get_attr":
        return str(node.target).rpartition(".")[0]
    stack = node.meta.get("nn_module_stack") or {}
    if stack:
        last = list(stack.values())[-1]
        return str(last[0] if isinstance(last, tuple) else last)
    return ""


def trace_groups(model: nn.Module, depth: int = 1, prefix: str = ""
                 ) -> tuple[list[Group], list[tuple[str, str]], str | None]:
    """Group `model`'s fx graph by module path; parameters are named `prefix.name`."""
    if depth < 1:
        raise ExpandError(f"depth must be 1 or more, found {depth}")
    modules = dict(model.named_modules())
    params: dict[str, dict[str, int]] = {}
    for name, p in model.named_parameters():
        key = _cut(name.rpartition(".")[0], depth)
        params.setdefault(key, {})[f"{prefix}.{name}" if prefix else name] = p.numel()

    note = None
    graph = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            graph = TimmTracer().trace(model, concrete_args=_concrete_args(model) or None)
    except Exception as e:  # noqa: BLE001 - a model timm's rules cannot trace
        first = (str(e).strip().splitlines() or [""])[0][:200]
        note = (f"could not trace it ({type(e).__name__}: {first}); groups follow its "
                "module tree, without data flow")

    order: list[str] = []
    ops: dict[str, int] = {}
    edges: list[tuple[str, str]] = []
    if graph is not None:
        group_of: dict[fx.Node, str | None] = {}
        frontier: dict[fx.Node, frozenset[str]] = {}
        seen_edges: set[tuple[str, str]] = set()
        for node in graph.nodes:
            if node.op in ("placeholder", "output"):
                group_of[node] = None
            else:
                g = _cut(_module_path(node), depth)
                # top-level glue (flatten, cat) is contracted; the model's own
                # parameters (a cls_token) form the group ""
                own = node.op == "get_attr" and "" in params
                group_of[node] = g if (g or own) else None
            g = group_of[node]
            incoming = frozenset().union(*(frontier.get(a, frozenset())
                                           for a in node.all_input_nodes))
            if g is None:
                frontier[node] = incoming
                continue
            if g not in ops:
                order.append(g)
                ops[g] = 0
            ops[g] += 1
            for src in sorted(incoming):
                if src != g and (src, g) not in seen_edges:
                    seen_edges.add((src, g))
                    edges.append((src, g))
            frontier[node] = frozenset((g,))
    for key in params:
        if key not in ops:
            order.append(key)
            ops[key] = 0
    groups = [Group(path=g, module_type=type(modules.get(g, model)).__name__, ops=ops[g],
                    parameters=params.get(g, {})) for g in order]
    return groups, edges, note


def _expand_model(graph, source: str, depth: int):
    """The groups of a source's meta model from the run's cache (built once, and each
    depth traced once); a graph that was not checked in this run builds it there."""
    from synthdsl.library.cache import sources_of

    sources = sources_of(graph)

    def expand(model):
        groups, edges, note = trace_groups(model, depth, source)
        return tuple(groups), tuple(edges), note

    return sources.fact(source, ("expand", depth), expand)


def _spec_groups(child, depth: int, prefix: str) -> tuple[list[Group], str]:
    """A spec source, grouped by the qualified names of the parameters its nodes install."""
    params: dict[str, dict[str, int]] = {}
    for n in child.nodes:
        for name, numel in sorted(child.nodes[n].get("parameters", {}).items()):
            key = _cut(name.rpartition(".")[0], depth)
            params.setdefault(key, {})[f"{prefix}.{name}"] = numel
    groups = [Group(path=k, module_type="spec module", ops=0, parameters=v)
              for k, v in params.items()]
    return groups, "a spec source: grouped by the names of its parameters"


def expand_source(graph, source: str, depth: int = 1) -> Expansion:
    """The fx groups of the source node `source` of a checked graph."""
    if source not in graph or graph.nodes[source].get("kind") != "source":
        raise ExpandError(f"no source named '{source}'")
    node = graph.nodes[source]
    if node.get("broken") or node.get("params") is None:
        raise ExpandError(f"source '{source}' cannot be opened: it failed the check")
    if node.get("constructor") == "spec" and node.get("graph") is not None:
        groups, note = _spec_groups(node["graph"], depth, source)
        return Expansion(source, depth, tuple(groups), (), note)
    from synthdsl.library.sources import source_kind

    if source_kind(node.get("constructor", "")) is None:
        raise ExpandError(f"source '{source}' is not a model and cannot be opened")
    try:
        groups, edges, note = _expand_model(graph, source, depth)
    except ExpandError:
        raise
    except Exception as e:  # noqa: BLE001 - timm refused to build it
        raise ExpandError(f"source '{source}' cannot be built on the meta device: "
                          f"{type(e).__name__}: {e}") from None
    return Expansion(source, depth, groups, edges, note)
