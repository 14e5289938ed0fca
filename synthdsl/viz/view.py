"""The view model built from a checked SynthGraph: :func:`build_view`.

Built only from the graph (never from the AST or the text): one node per graph
node, one edge per graph edge, one cluster per source, and, for sources the
caller expands, one ``group`` node per module of the source's torch.fx graph
(see :mod:`synthdsl.viz.expand`). Every renderer (DOT, Mermaid, HTML, JSON,
text) reads this model and nothing else, so all formats agree. The records
are in :mod:`synthdsl.viz.model` (re-exported here), what one node or edge
says in :mod:`synthdsl.viz.describe`, which node a diagnostic belongs to in
:mod:`synthdsl.viz.attribute`, and clusters of fx groups and collapsed sources
in :mod:`synthdsl.viz.clusters`.

Everything here is deterministic: nodes follow the graph's topological order
(declaration order breaks ties), edges are sorted, and no timestamps or
addresses are recorded. Every string that came from the spec is cleaned of lone
surrogates and control characters, so renderers only have to escape for their
own syntax.

>>> from synthdsl.lang.parse import parse_spec
>>> from synthdsl.graph import build_graph
>>> from synthdsl.checks import check_graph
>>> g = check_graph(build_graph(parse_spec(
...     "synth A input x: [B, 8] h = Linear(x, out=4) |> ReLU freeze h output h")))
>>> v = build_view(g)
>>> [(n.id, n.kind, n.shape, n.state) for n in v.nodes]
[('x', 'input', '[B, 8]', 'none'), ('h.0', 'layer', '[B, 4]', 'frozen'), ('h.1', 'layer', '[B, 4]', 'none'), ('output:h', 'output', '[B, 4]', 'none')]
>>> [(e.src, e.dst, e.label) for e in v.edges]
[('x', 'h.0', '[B, 8]'), ('h.0', 'h.1', '[B, 4]'), ('h.1', 'output:h', '[B, 4]')]
"""

from __future__ import annotations

from typing import Iterable, Mapping

from synthdsl.viz.attribute import attribute_diagnostics
from synthdsl.viz.clusters import collapse_sources, group_id, group_nodes  # noqa: F401
from synthdsl.viz.describe import (edge_label, is_plain, line_of, location_of, message_of,
                                   node_counts, node_shape, node_what, totals_of)
# the records, re-exported: renderers import them from here
from synthdsl.viz.model import (EDGE_KINDS, LEGEND, LOCK, STATES, WARN, Counts,  # noqa: F401
                                Message, View, ViewCluster, ViewEdge, ViewNode, clean,
                                fmt_count, fmt_shape, fmt_value)

__all__ = ["EDGE_KINDS", "LEGEND", "LOCK", "STATES", "WARN", "Counts", "Message", "View",
           "ViewCluster", "ViewEdge", "ViewNode", "build_view", "clean", "fmt_count",
           "fmt_shape", "fmt_value", "group_id"]


def build_view(graph, expand: Iterable[str] = (), depth: int = 1,
               collapse: Iterable[str] = ()) -> View:
    """The view model of a (checked) SynthGraph.

    `expand` names sources to open into their torch.fx graph, grouped by module
    path up to `depth` levels ("all" opens every source); `collapse` names
    sources to draw as one node ("all" collapses every source).
    """
    from synthdsl.viz.expand import ExpandError, expand_source

    order = list(graph.topological_order()) if hasattr(graph, "topological_order") \
        else list(graph.nodes)
    text = graph.graph.get("text")
    lines = text.splitlines() if isinstance(text, str) else []
    frozen = set(graph.graph.get("frozen", ()))
    errors = list(graph.graph.get("errors", ()))
    warnings = list(graph.graph.get("warnings", ()))
    if not graph.graph.get("checked"):
        errors += list(graph.graph.get("diagnostics", ()))
    by_node, loose = attribute_diagnostics(graph, order, [*errors, *warnings])

    sources = [n for n in order if graph.nodes[n].get("kind") == "source"]
    expand = set(sources) if "all" in set(expand) else set(expand)
    collapse = set(sources) if "all" in set(collapse) else set(collapse)
    for name in sorted((expand | collapse) - set(sources)):
        raise ExpandError(f"no source named '{clean(name)}'; the spec's sources: "
                          + (", ".join(f"'{s}'" for s in sources) or "none"))

    member_of: dict[str, str] = {}
    for u, v, k in graph.edges(data="kind"):
        if k == "member" and graph.nodes[u].get("kind") == "source":
            member_of.setdefault(v, u)

    nodes: list[ViewNode] = []
    for n in order:
        node = graph.nodes[n]
        kind = clean(node.get("kind", "node"))
        what, detail = node_what(node)
        vn = ViewNode(
            id=clean(n), name=clean(node.get("name", n)), kind=kind, what=what,
            detail=detail, shape=node_shape(node), counts=node_counts(node, frozen),
            location=location_of(node.get("span")), source_line=line_of(lines, node.get("span")),
            cluster=clean(n) if kind == "source" else
            (clean(member_of[n]) if n in member_of else None),
            options={clean(k): fmt_value(v) for k, v in (node.get("options") or {}).items()},
            inputs=[clean(i) if i is not None else "?" for i in (node.get("inputs") or ())]
            + [f"{clean(k)}={clean(i) if i is not None else '?'}"  # keyword data inputs
               for k, i in (node.get("keywords") or {}).items()])
        if node.get("used") is not None and sum(node.get("parameters", {}).values()):
            used = set(node["used"])
            n_used = sum(v for k, v in node["parameters"].items() if k in used)
            vn.extra["used in forward"] = f"{fmt_count(n_used)} of " \
                f"{fmt_count(sum(node['parameters'].values()))} params"
        if node.get("shares"):
            vn.extra["shares parameters with"] = clean(node["shares"])
        mine = by_node.get(n, [])
        vn.messages = [message_of(d) for d in mine]
        if any(m.severity == "error" for m in vn.messages):
            vn.status = "error"
        elif node.get("broken"):
            vn.status = "skipped"
            vn.messages.append(Message("note", "", "not checked: a value it needs failed "
                                       "the check"))
        elif vn.messages:
            vn.status = "warning"
        nodes.append(vn)

    by_id = {vn.id: vn for vn in nodes}
    clusters: list[ViewCluster] = []
    groups_after: dict[str, list[ViewNode]] = {}
    extra_edges: list[ViewEdge] = []
    for s in sources:
        node = graph.nodes[s]
        parts = [p for p in order if member_of.get(p) == s]
        installed: dict[str, int] = {}
        for p in parts:
            installed.update(graph.nodes[p].get("parameters", {}))
        total = node.get("params")
        counts = None
        if total is not None:
            n_frozen = sum(v for k, v in installed.items() if k in frozen)
            n_in = sum(installed.values())
            counts = Counts(int(total), n_in - n_frozen, n_frozen, max(int(total) - n_in, 0))
        by_id[clean(s)].counts = counts
        cluster = ViewCluster(id=clean(s), name=clean(node.get("name", s)),
                              what=by_id[clean(s)].what, counts=counts,
                              members=[clean(s), *(clean(p) for p in parts)],
                              collapsed=s in collapse)
        if s in expand:
            try:
                exp = expand_source(graph, s, depth)
            except ExpandError as e:
                cluster.note = clean(e)
            else:
                cluster.expanded, cluster.depth, cluster.note = True, depth, \
                    clean(exp.note) if exp.note else None
                gnodes, gedges = group_nodes(graph, s, exp, installed, frozen, parts)
                groups_after[s] = gnodes
                cluster.members += [g.id for g in gnodes]
                extra_edges += gedges
        clusters.append(cluster)

    if groups_after:
        ordered = []
        for vn in nodes:
            ordered.append(vn)
            ordered += groups_after.get(vn.id, [])
        nodes = ordered

    edges = [ViewEdge(clean(u), clean(v), clean(a.get("kind", "data")),
                      edge_label(a.get("kind", "data"), a),
                      {clean(k): fmt_value(x) for k, x in sorted(a.items())
                       if k not in ("kind", "shape") and is_plain(x)})
             for u, v, a in graph.edges(data=True)]
    _inheritance(graph, by_id, edges)
    edges += extra_edges
    view = View(name=clean(graph.graph.get("name", "")),
                file=clean(graph.graph["file"]) if graph.graph.get("file") else None,
                nodes=nodes, edges=edges, clusters=clusters,
                totals=totals_of(graph, frozen), messages=[message_of(d) for d in loose],
                checked=bool(graph.graph.get("checked")))
    if collapse:
        view = collapse_sources(view)
    position = {vn.id: i for i, vn in enumerate(view.nodes)}
    view.edges.sort(key=lambda e: (position.get(e.src, -1), position.get(e.dst, -1),
                                   e.kind, e.label))
    return view


def _inheritance(graph, by_id: Mapping[str, ViewNode], edges: list[ViewEdge]) -> None:
    """Where a node's inherited weights come from, on the node and on the edge."""
    records = {r.get("index"): r for r in graph.graph.get("inherits", ())
               if isinstance(r, Mapping)}
    for e in edges:
        if e.kind != "inherit":
            continue
        attrs = graph.edges[e.src, e.dst] if graph.has_edge(e.src, e.dst) else {}
        donors, places = [], []
        for i in attrs.get("statements", ()) or ():
            r = records.get(i)
            if r is None:
                continue
            donors.append(clean(r.get("donor_label") or "'" + ".".join(
                (str(r.get("donor", e.src)), *map(str, r.get("donor_path", ())))) + "'"))
            if location_of(r.get("span")):
                places.append(location_of(r.get("span")))
        if places:
            e.attrs["at"] = ", ".join(places)
        target = by_id.get(e.dst)
        if target is not None:
            text = e.label + (f" from {', '.join(donors)}" if donors else f" from {e.src}")
            if places:
                text += f" ({', '.join(places)})"
            prev = target.extra.get("weights inherited")
            target.extra["weights inherited"] = f"{prev}; {text}" if prev else text
