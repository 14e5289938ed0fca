"""Checking plain dicts against the TypedDict records of :mod:`synthdsl.graph.ir`.

>>> from typing import NotRequired, TypedDict
>>> class Point(TypedDict):
...     x: int
...     label: NotRequired[str]
>>> record_problems({"x": 1}, Point), record_problems({"x": True, "y": 2}, Point)
([], ["unknown key 'y'", "'x' is bool True, expected <class 'int'>"])
"""

import functools
import types
import typing
from typing import Any, Literal, Union


@functools.cache
def _hints(record: type) -> dict[str, Any]:
    """The record's field types, forward references resolved."""
    return typing.get_type_hints(record)


def _type_ok(value: Any, tp: Any) -> bool:
    """Whether `value` is an instance of the annotation `tp` (the forms used above)."""
    if tp is Any:
        return True
    if tp is None or tp is type(None):
        return value is None
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        return any(_type_ok(value, a) for a in args)
    if origin is Literal:
        return value in args
    if isinstance(tp, type) and typing.is_typeddict(tp):
        return isinstance(value, dict) and not record_problems(value, tp, "")
    if origin is tuple:
        if not isinstance(value, tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_type_ok(v, args[0]) for v in value)
        return len(value) == len(args) and all(_type_ok(v, a) for v, a in zip(value, args))
    if origin is list:
        return isinstance(value, list) and all(_type_ok(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(
            _type_ok(k, args[0]) and _type_ok(v, args[1]) for k, v in value.items())
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, tp)


def record_problems(attrs: dict, record: type, where: str = "") -> list[str]:
    """Unknown keys, missing required keys and values of the wrong type, as sentences."""
    hints = _hints(record)
    problems = [f"{where}unknown key '{k}'" for k in attrs if k not in hints]
    problems += [f"{where}missing key '{k}'" for k in sorted(record.__required_keys__)
                 if k not in attrs]
    for k, v in attrs.items():
        if k in hints and not _type_ok(v, hints[k]):
            problems.append(f"{where}'{k}' is {type(v).__name__} {v!r:.60}, "
                            f"expected {hints[k]}")
    return problems


def graph_problems(g) -> list[str]:
    """:meth:`SynthGraph.validate`: `g.graph` against ``GraphRecord``, each node against its
    kind's record, each edge against its kind's; a spec source's graph too."""
    from synthdsl.graph.ir import EDGE_RECORDS, NODE_RECORDS, GraphRecord

    problems = record_problems(g.graph, GraphRecord, "graph: ")
    for n, attrs in g.nodes(data=True):
        record = NODE_RECORDS.get(attrs.get("kind"))
        if record is None:
            problems.append(f"node {n!r}: unknown kind {attrs.get('kind')!r}")
            continue
        problems += record_problems(attrs, record, f"node {n!r} ({attrs['kind']}): ")
        child = attrs.get("graph")
        if child is not None and hasattr(child, "validate"):
            problems += [f"in {n!r}: {p}" for p in child.validate()]
    for u, v, attrs in g.edges(data=True):
        record = EDGE_RECORDS.get(attrs.get("kind"))
        if record is None:
            problems.append(f"edge {u!r} -> {v!r}: unknown kind {attrs.get('kind')!r}")
            continue
        problems += record_problems(attrs, record, f"edge {u!r} -> {v!r}: ")
    return problems
