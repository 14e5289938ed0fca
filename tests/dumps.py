"""Text dumps of the two front-end forms, for golden files: the AST and the graph as built.

Both dumps leave out positions (spans) and anything that is an object rather than data, and
both read what they print generically: the AST through the pydantic fields of each model,
the graph through whatever attributes its nodes, edges and the graph itself carry (plain
values, or typed records — dataclasses or pydantic models — whose fields are printed as if
they were attributes). So a change in how the graph stores a node keeps the dump the same
as long as the node says the same things.

>>> from synthdsl.lang.parse import parse_spec
>>> from synthdsl.graph import build_graph
>>> spec = parse_spec("synth A input x: [B, 4] y = Linear(x, out=2) output y")
>>> print(dump_graph(build_graph(spec)))  # doctest: +NORMALIZE_WHITESPACE
graph A
  inputs: ["x"]
  output_names: ["y"]
  outputs: ["output:y"]
node x
  dims: ["B", 4]
  kind: "input"
  label: "input"
  name: "x"
node y
  inputs: ["x"]
  kind: "layer"
  label: "Linear"
  layer: "Linear"
  module: "y"
  name: "y"
  options: {"out": 2}
node output:y
  inputs: ["y"]
  kind: "output"
  label: "output"
  name: "y"
  of: "y"
edges
  x -> y: {"kind": "data", "positions": [0]}
  y -> output:y: {"kind": "data", "positions": [0]}
"""

from __future__ import annotations

import dataclasses
import enum
import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

#: Graph-level keys that say where the spec lies rather than what it says.
_GRAPH_LOCATION_KEYS = frozenset({"file", "text", "base_dir"})


class _Drop:
    """Marks a value the dumps leave out (a span, an object)."""


DROP = _Drop()


def _is_span(value: Any) -> bool:
    return type(value).__name__ == "Span"


def _is_record(value: Any) -> bool:
    return (dataclasses.is_dataclass(value) and not isinstance(value, type)) or \
        hasattr(type(value), "model_fields")


def _record_fields(value: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(value):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    return {name: getattr(value, name) for name in type(value).model_fields}


def _is_span_key(key: str) -> bool:
    return key == "span" or key.endswith("_span") or key.endswith("_spans")


def plain(value: Any, root: str = str(ROOT)) -> Any:
    """`value` as JSON-able data: spans and objects become DROP (and vanish from containers),
    paths under the repository root are written relative to ``<root>``, sets are sorted."""
    if _is_span(value):
        return DROP
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, enum.Enum):
        return plain(value.value, root)
    if isinstance(value, str):
        return value.replace(root, "<root>") if root else value
    if isinstance(value, Path):
        return plain(str(value), root)
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if isinstance(k, str) and _is_span_key(k):
                continue
            v = plain(v, root)
            if v is not DROP:
                out[str(k)] = v
        return out
    if isinstance(value, (list, tuple)):
        items = [plain(v, root) for v in value]
        items = [v for v in items if v is not DROP]
        # a (text, span) pair becomes its text alone
        if isinstance(value, tuple) and len(items) == 1 and len(value) == 2 \
                and _is_span(value[1]):
            return items[0]
        return items
    if isinstance(value, (set, frozenset)):
        return sorted((plain(v, root) for v in value), key=repr)
    if _is_record(value):
        return plain(_record_fields(value), root)
    return DROP  # a nested graph, a module, a diagnostic object: not data


def _flat_attributes(attrs: dict[str, Any]) -> dict[str, Any]:
    """A node's or edge's attributes, with typed records opened into their fields."""
    out: dict[str, Any] = {}
    for key, value in attrs.items():
        if _is_record(value) and not _is_span(value):
            out.update(_flat_attributes(_record_fields(value)))
        else:
            out[key] = value
    return out


def _line(key: str, value: Any) -> str:
    return f"{key}: {json.dumps(value, ensure_ascii=False, sort_keys=True)}"


def attributes(attrs: Any) -> dict[str, Any]:
    """What a node, an edge or the graph says, as data: typed records opened into their
    fields, spans and objects left out, and a field that is None or empty left out too (a
    record that spells every field of its kind says no more than a dict that omits them)."""
    flat = _flat_attributes(dict(attrs))
    out = {}
    for key in sorted(flat):
        if _is_span_key(key):
            continue
        value = plain(flat[key])
        if value is DROP or value is None or value in ({}, []):
            continue
        out[key] = value
    return out


def node_attributes(graph, node: str) -> dict[str, Any]:
    return attributes(graph.nodes[node])


def edge_attributes(graph, u: str, v: str) -> dict[str, Any]:
    return attributes(graph.edges[u, v])


def _attribute_lines(attrs: dict[str, Any], indent: str = "  ") -> list[str]:
    return [indent + _line(key, value) for key, value in attributes(attrs).items()]


def dump_graph(graph) -> str:
    """The graph as built: its own attributes, the nodes in topological order with every
    attribute but spans, objects and empty values (see :func:`attributes`), the diagnostics
    recorded on it (code and message), and the edges, ordered by their ends' places in that
    order."""
    order = list(graph.topological_order())
    place = {n: i for i, n in enumerate(order)}
    meta = {k: v for k, v in graph.graph.items()
            if k not in _GRAPH_LOCATION_KEYS and k not in ("name", "diagnostics")}
    lines = [f"graph {graph.graph.get('name', '')}", *_attribute_lines(meta)]
    for diag in graph.graph.get("diagnostics", []):
        lines.append(f"  diagnostic {diag.code}: {diag.message}")
    for n in order:
        lines.append(f"node {n}")
        lines.extend(_attribute_lines(dict(graph.nodes[n]), "  "))
    lines.append("edges")
    for u, v, attrs in sorted(graph.edges(data=True), key=lambda e: (place[e[0]], place[e[1]])):
        data = attributes(attrs)
        lines.append(f"  {u} -> {v}: {json.dumps(data, ensure_ascii=False, sort_keys=True)}")
    return "\n".join(lines) + "\n"


def ast_data(node: Any) -> Any:
    """An AST node as data: ``{"node": ClassName, field: value, ...}`` in field order, without
    spans, and without the spec's file name and text (where it lies, not what it says)."""
    if _is_span(node):
        return DROP
    if hasattr(type(node), "model_fields"):
        out: dict[str, Any] = {"node": type(node).__name__}
        for name in type(node).model_fields:
            if _is_span_key(name) or (type(node).__name__ == "Spec" and name in ("file", "text")):
                continue
            value = ast_data(getattr(node, name))
            if value is not DROP:
                out[name] = value
        return out
    if isinstance(node, (list, tuple)):
        return [v for v in (ast_data(v) for v in node) if v is not DROP]
    if isinstance(node, dict):
        return {str(k): ast_data(v) for k, v in node.items()}
    return plain(node)


def dump_ast(spec) -> str:
    """The AST as indented JSON, one node per object, spans left out."""
    return json.dumps(ast_data(spec), indent=2, ensure_ascii=False) + "\n"
