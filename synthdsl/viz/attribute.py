"""Which node each diagnostic belongs to: the one whose spec text holds it most tightly.

A problem inside a spec used as a source (``spec("other.synth")``) belongs to
the source node that imports it; one that lies in no node's text stays with the
view as a whole.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Sequence


def _contains(outer: Any, inner: Any) -> bool:
    try:
        return (getattr(outer, "file", None) == getattr(inner, "file", None)
                and outer.start <= inner.start and inner.end <= outer.end
                and outer.end > outer.start)
    except AttributeError:
        return False


def _importer(graph, order: Sequence[str], span: Any) -> tuple[str, int] | None:
    """A problem inside a spec used as a source belongs to the source that imports it."""
    file = getattr(span, "file", None)
    if not file:
        return None
    try:
        target = str(Path(file).resolve())
    except (OSError, ValueError):
        return None
    for n in order:
        node = graph.nodes[n]
        if node.get("kind") == "source" and node.get("path_resolved") == target:
            return n, 0
    return None


def attribute_diagnostics(graph, order: Sequence[str], diagnostics: Iterable[Any]
               ) -> tuple[dict[str, list[Any]], list[Any]]:
    """Give each diagnostic to the node whose spec text holds it most tightly."""
    spans = [(n, graph.nodes[n].get("span")) for n in order]
    by_node: dict[str, list[Any]] = {}
    loose: list[Any] = []
    for d in diagnostics:
        span = getattr(d, "span", None)
        best = None
        if span is not None:
            for n, s in spans:
                if s is not None and _contains(s, span):
                    if best is None or (s.end - s.start) < best[1]:
                        best = (n, s.end - s.start)
        if best is None and span is not None:
            best = _importer(graph, order, span)
        if best is None:
            loose.append(d)
        else:
            by_node.setdefault(best[0], []).append(d)
    return by_node, loose
