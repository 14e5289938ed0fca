"""Sources drawn as clusters: an expanded source's fx groups, and collapsed sources.

:func:`group_nodes` turns the module groups of a source's torch.fx graph (see
:mod:`synthdsl.viz.expand`) into view nodes whose counts add up to the
source's; :func:`collapse_sources` draws each collapsed source as its source node
alone, with the edges of its members redirected to it.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from synthdsl.viz.describe import location_of
from synthdsl.viz.model import Counts, View, ViewEdge, ViewNode, clean


def group_nodes(graph, s: str, exp, installed: Mapping[str, int], frozen: set[str],
                 parts: Sequence[str]) -> tuple[list[ViewNode], list[ViewEdge]]:
    """One node per fx group of an expanded source, with counts that add up to the source."""
    span_loc = location_of(graph.nodes[s].get("span"))
    part_paths = {p: ".".join(graph.nodes[p].get("path") or ()) for p in parts}
    out: list[ViewNode] = []
    for g in exp.groups:
        t = sum(v for k, v in g.parameters.items() if k in installed and k not in frozen)
        f = sum(v for k, v in g.parameters.items() if k in installed and k in frozen)
        total = sum(g.parameters.values())
        users = [p for p, path in part_paths.items()
                 if not path or g.path == path or g.path.startswith(path + ".")
                 or path.startswith(g.path + ".") or not g.path]
        vn = ViewNode(id=group_id(s, g.path), name=clean(f"{s}.{g.path}" if g.path else s),
                      kind="group", what=clean(g.module_type),
                      detail=f"{g.ops} fx node{'s' if g.ops != 1 else ''}",
                      counts=Counts(total, t, f, total - t - f), location=span_loc,
                      cluster=clean(s))
        if users:
            vn.extra["used by parts"] = ", ".join(clean(p) for p in users)
        if not g.path:
            vn.extra["note"] = "the model's own parameters and top-level operations"
        out.append(vn)
    ids = {g.path: group_id(s, g.path) for g in exp.groups}
    edges = [ViewEdge(ids[a], ids[b], "flow") for a, b in exp.edges]
    entered = {b for _, b in exp.edges}
    edges += [ViewEdge(clean(s), ids[g.path], "member") for g in exp.groups
              if g.path not in entered]
    return out, edges


def group_id(source: str, path: str) -> str:
    """The view id of an fx group; `::` cannot occur in a spec's node ids."""
    return clean(f"{source}::{path}")


def collapse_sources(view: View) -> View:
    """Draw each collapsed source as its source node alone, edges redirected to it."""
    into: dict[str, str] = {}
    for c in view.clusters:
        if c.collapsed:
            for m in c.members[1:]:
                into[m] = c.id
            src = next(n for n in view.nodes if n.id == c.id)
            hidden = len(c.members) - 1
            src.extra["collapsed"] = f"{hidden} member{'s' if hidden != 1 else ''} hidden"
    nodes = [n for n in view.nodes if n.id not in into]
    seen: set[tuple] = set()
    edges: list[ViewEdge] = []
    for e in view.edges:
        u, v = into.get(e.src, e.src), into.get(e.dst, e.dst)
        if u == v:
            continue
        key = (u, v, e.kind, e.label)
        if key in seen:
            continue
        seen.add(key)
        edges.append(ViewEdge(u, v, e.kind, e.label, dict(e.attrs)))
    for c in view.clusters:
        if c.collapsed:
            c.members = [c.id]
    return View(view.name, view.file, nodes, edges, view.clusters, view.totals,
                view.messages, view.checked)
