"""The view model: what every picture of a checked SynthGraph shows, as plain data.

Built only from the graph (never from the AST or the text): one node per graph
node, one edge per graph edge, one cluster per source, and, for sources the
caller expands, one ``group`` node per module of the source's torch.fx graph
(see :mod:`synthdsl.viz.expand`). Every renderer (DOT, Mermaid, HTML, JSON,
text) reads this model and nothing else, so all formats agree.

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

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

#: Node states, by how the node's parameters train.
STATES = ("trainable", "frozen", "partial", "unused", "none")
#: The mark that says "frozen" beside the dashed border (never colour alone).
LOCK = "\U0001F512"
#: The mark of a node that failed the check.
WARN = "\u26A0"
#: Edge kinds every renderer knows how to draw.
EDGE_KINDS = ("data", "member", "inherit", "share", "flow")

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def clean(value: Any) -> str:
    """A display string: lone surrogates become U+FFFD, control characters visible escapes."""
    s = value if isinstance(value, str) else str(value)
    s = _SURROGATE.sub("\ufffd", s)
    return _CONTROL.sub(lambda m: {"\n": "\\n", "\t": "\\t", "\r": "\\r"}.get(
        m.group(), f"\\u{ord(m.group()):04x}"), s)


def fmt_count(n: int) -> str:
    return f"{n:,}"


def fmt_shape(shape: Iterable) -> str:
    return "[" + ", ".join(clean(d) for d in shape) + "]"


def fmt_value(v: Any) -> str:
    """An option value as the spec would spell it."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return clean(json.dumps(v, ensure_ascii=False))
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(fmt_value(x) for x in v) + "]"
    if v is None:
        return "none"
    return clean(repr(v))


@dataclass(frozen=True)
class Counts:
    """Parameters of a node or cluster; ``unused`` are a source's parameters no part installs."""

    params: int = 0
    trainable: int = 0
    frozen: int = 0
    unused: int = 0

    @property
    def state(self) -> str:
        if self.params == 0:
            return "none"
        if self.trainable + self.frozen == 0:
            return "unused"
        if self.frozen == 0:
            return "trainable"
        return "frozen" if self.trainable == 0 else "partial"

    def __add__(self, other: "Counts") -> "Counts":
        return Counts(self.params + other.params, self.trainable + other.trainable,
                      self.frozen + other.frozen, self.unused + other.unused)

    def describe(self) -> str:
        """`11,176,512 params · 8,393,728 trainable · 2,782,784 frozen 🔒`; zeros left out."""
        if self.params == 0:
            return "no parameters"
        head = f"{fmt_count(self.params)} params"
        if not self.unused and self.state == "trainable":
            return f"{head} · trainable"
        if not self.unused and self.state == "frozen":
            return f"{head} · frozen {LOCK}"
        bits = [head]
        if self.trainable:
            bits.append(f"{fmt_count(self.trainable)} trainable")
        if self.frozen:
            bits.append(f"{fmt_count(self.frozen)} frozen {LOCK}")
        if self.unused:
            bits.append(f"{fmt_count(self.unused)} unused")
        return " · ".join(bits)

    def to_dict(self) -> dict:
        return {"params": self.params, "trainable": self.trainable, "frozen": self.frozen,
                "unused": self.unused, "state": self.state}


@dataclass(frozen=True)
class Message:
    severity: str          # "error" or "warning"
    code: str
    message: str
    hint: str | None = None
    notes: tuple[str, ...] = ()
    location: str | None = None

    def headline(self) -> str:
        return f"{self.severity}[{self.code}]: {self.message}"

    def to_dict(self) -> dict:
        return {"severity": self.severity, "code": self.code, "message": self.message,
                "hint": self.hint, "notes": list(self.notes), "location": self.location}


@dataclass
class ViewNode:
    id: str
    name: str
    kind: str                      # input, source, part, layer, op, output, group, ...
    what: str                      # `timm:resnet18`, `Linear`, `concat`, `part of r18`
    detail: str = ""               # constructor arguments, checkpoint path, module type
    shape: str | None = None
    counts: Counts | None = None
    location: str | None = None    # `models/x.synth:12`
    source_line: str | None = None
    cluster: str | None = None     # the source this node belongs to
    status: str = "ok"             # ok, warning, error, skipped
    messages: list[Message] = field(default_factory=list)
    options: dict[str, str] = field(default_factory=dict)
    inputs: list[str] = field(default_factory=list)
    extra: dict[str, str] = field(default_factory=dict)   # more facts for the details panel

    @property
    def state(self) -> str:
        return self.counts.state if self.counts is not None else "none"

    @property
    def title(self) -> str:
        """What a picture calls it: the node id where one name makes several nodes (`h.0`)."""
        return self.id if self.id != self.name \
            and self.kind not in ("output", "group", "checkpoint") else self.name

    def to_dict(self) -> dict:
        return {"id": self.id, "name": self.name, "title": self.title, "kind": self.kind,
                "what": self.what,
                "detail": self.detail, "shape": self.shape,
                "counts": self.counts.to_dict() if self.counts else None,
                "state": self.state, "location": self.location,
                "source_line": self.source_line, "cluster": self.cluster,
                "status": self.status, "messages": [m.to_dict() for m in self.messages],
                "options": dict(self.options), "inputs": list(self.inputs),
                "extra": dict(self.extra)}


@dataclass
class ViewEdge:
    src: str
    dst: str
    kind: str                      # data, member, inherit, share, flow (or a graph's own)
    label: str = ""
    attrs: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"source": self.src, "target": self.dst, "kind": self.kind,
                "label": self.label, "attrs": dict(self.attrs)}


@dataclass
class ViewCluster:
    id: str                        # the source node's id
    name: str
    what: str
    counts: Counts | None
    members: list[str]             # node ids, the source node first
    expanded: bool = False         # its fx groups are among the members
    depth: int = 0
    note: str | None = None
    collapsed: bool = False        # drawn as the source node alone

    def to_dict(self) -> dict:
        return {"id": self.id, "name": self.name, "what": self.what,
                "counts": self.counts.to_dict() if self.counts else None,
                "members": list(self.members), "expanded": self.expanded,
                "depth": self.depth, "note": self.note, "collapsed": self.collapsed}


@dataclass
class View:
    name: str
    file: str | None
    nodes: list[ViewNode]
    edges: list[ViewEdge]
    clusters: list[ViewCluster]
    totals: Counts
    messages: list[Message]        # problems that belong to no single node
    checked: bool = True

    def node(self, node_id: str) -> ViewNode:
        return self._index()[node_id]

    def _index(self) -> dict[str, ViewNode]:
        return {n.id: n for n in self.nodes}

    @property
    def errors(self) -> int:
        return sum(m.severity == "error" for n in self.nodes for m in n.messages) \
            + sum(m.severity == "error" for m in self.messages)

    def to_dict(self) -> dict:
        return {"format": "synthdsl.viz", "version": 1, "name": self.name, "file": self.file,
                "checked": self.checked, "totals": self.totals.to_dict(),
                "nodes": [n.to_dict() for n in self.nodes],
                "edges": [e.to_dict() for e in self.edges],
                "clusters": [c.to_dict() for c in self.clusters],
                "messages": [m.to_dict() for m in self.messages],
                "legend": [dict(zip(("key", "label"), row)) for row in LEGEND]}


#: What each mark means; every format draws it.
LEGEND = (
    ("trainable", "solid border: trainable parameters"),
    ("frozen", f"dashed border and {LOCK}: frozen parameters"),
    ("partial", f"dotted border and {LOCK}: partly frozen"),
    ("unused", "grey: parameters of a source that no part installs"),
    ("error", f"thick red border and {WARN}: failed the check"),
    ("skipped", "crossed corners: not checked, an input failed"),
    ("data", "arrow labelled [shape]: data"),
    ("inherit", "dashed purple arrow: weights inherited (tensors · params · strict/partial)"),
    ("member", "dotted grey line: a part taken from its source"),
)


# ---- building ------------------------------------------------------------------


def _location(span: Any) -> str | None:
    if span is None or not hasattr(span, "line"):
        return None
    return f"{clean(getattr(span, 'file', None) or '<spec>')}:{span.line}"


def _line_of(lines: Sequence[str], span: Any) -> str | None:
    if span is None or not hasattr(span, "line"):
        return None
    if 1 <= span.line <= len(lines):
        return clean(lines[span.line - 1].rstrip())
    return None


def _message(e: Any) -> Message:
    return Message(severity=clean(getattr(e, "severity", "error")),
                   code=clean(getattr(e, "code", "")),
                   message=clean(getattr(e, "message", str(e))),
                   hint=clean(e.hint) if getattr(e, "hint", None) else None,
                   notes=tuple(clean(n) for n in getattr(e, "notes", ())),
                   location=clean(e.span) if getattr(e, "span", None) is not None else None)


def _what(node: Mapping[str, Any]) -> tuple[str, str]:
    """The kind as a person names it, and one line of detail."""
    kind = node.get("kind", "node")
    label = clean(node.get("label", kind))
    if kind == "source":
        detail = ""
        if node.get("weights_text") or node.get("weights"):
            detail = "checkpoint " + clean(node.get("weights_text") or node.get("weights"))
        elif node.get("pretrained"):
            detail = "pretrained (hub)"
        kwargs = node.get("create_kwargs") or {}
        if kwargs:
            opts = ", ".join(f"{clean(k)}={fmt_value(v)}" for k, v in sorted(kwargs.items()))
            detail = f"{detail} · {opts}" if detail else opts
        return label, detail
    if kind == "checkpoint":
        return "checkpoint", ""
    if kind == "part":
        src = clean(node.get("source", "?"))
        return f"part of {src}", label
    if kind == "layer":
        build = node.get("build")
        args = build if isinstance(build, Mapping) else node.get("options", {})
        opts = ", ".join(f"{clean(k)}={fmt_value(v)}" for k, v in args.items())
        return label, f"{label}({opts})"
    if kind == "op":
        opts = ", ".join(f"{clean(k)}={fmt_value(v)}" for k, v in
                         (node.get("options") or {}).items())
        return label, f"{label}({opts})"
    return (label if label != kind else kind), ""


def _node_shape(node: Mapping[str, Any]) -> str | None:
    if node.get("shape") is not None:
        return fmt_shape(node["shape"])
    if node.get("shapes"):
        return "(" + ", ".join(fmt_shape(s) for s in node["shapes"]) + ")"
    return None


def _node_counts(node: Mapping[str, Any], frozen: set[str]) -> Counts | None:
    if "parameters" in node:
        params = node["parameters"]
        total = sum(params.values())
        n_frozen = sum(v for k, v in params.items() if k in frozen)
        return Counts(total, total - n_frozen, n_frozen)
    if node.get("params") is not None and node.get("kind") != "source":
        total = int(node["params"])
        n_frozen = int(node.get("frozen_params", 0))
        return Counts(total, int(node.get("trainable_params", total - n_frozen)), n_frozen)
    return None


def _edge_label(kind: str, attrs: Mapping[str, Any]) -> str:
    if kind == "data":
        return fmt_shape(attrs["shape"]) if attrs.get("shape") is not None else ""
    if kind == "inherit":
        bits = []
        if attrs.get("tensors") is not None:
            t = attrs["tensors"]
            bits.append(f"{fmt_count(t) if isinstance(t, int) else clean(t)} tensors")
        if attrs.get("params") is not None:
            p = attrs["params"]
            bits.append(f"{fmt_count(p) if isinstance(p, int) else clean(p)} params")
        if attrs.get("mode"):
            bits.append(clean(attrs["mode"]))
        return "inherits " + " · ".join(bits) if bits else "inherits"
    if kind == "share":
        return "shares parameters"
    if kind in ("member", "flow"):
        return ""
    return clean(kind)


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


def _attribute(graph, order: Sequence[str], diagnostics: Iterable[Any]
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
    by_node, loose = _attribute(graph, order, [*errors, *warnings])

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
        what, detail = _what(node)
        vn = ViewNode(
            id=clean(n), name=clean(node.get("name", n)), kind=kind, what=what,
            detail=detail, shape=_node_shape(node), counts=_node_counts(node, frozen),
            location=_location(node.get("span")), source_line=_line_of(lines, node.get("span")),
            cluster=clean(n) if kind == "source" else
            (clean(member_of[n]) if n in member_of else None),
            options={clean(k): fmt_value(v) for k, v in (node.get("options") or {}).items()},
            inputs=[clean(i) if i is not None else "?" for i in (node.get("inputs") or ())])
        if node.get("used") is not None and sum(node.get("parameters", {}).values()):
            used = set(node["used"])
            n_used = sum(v for k, v in node["parameters"].items() if k in used)
            vn.extra["used in forward"] = f"{fmt_count(n_used)} of " \
                f"{fmt_count(sum(node['parameters'].values()))} params"
        if node.get("shares"):
            vn.extra["shares parameters with"] = clean(node["shares"])
        mine = by_node.get(n, [])
        vn.messages = [_message(d) for d in mine]
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
                gnodes, gedges = _group_nodes(graph, s, exp, installed, frozen, parts)
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
                      _edge_label(a.get("kind", "data"), a),
                      {clean(k): fmt_value(x) for k, x in sorted(a.items())
                       if k not in ("kind", "shape") and _plain(x)})
             for u, v, a in graph.edges(data=True)]
    _inheritance(graph, by_id, edges)
    edges += extra_edges
    view = View(name=clean(graph.graph.get("name", "")),
                file=clean(graph.graph["file"]) if graph.graph.get("file") else None,
                nodes=nodes, edges=edges, clusters=clusters,
                totals=_totals(graph, frozen), messages=[_message(d) for d in loose],
                checked=bool(graph.graph.get("checked")))
    if collapse:
        view = _collapsed(view)
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
            if _location(r.get("span")):
                places.append(_location(r.get("span")))
        if places:
            e.attrs["at"] = ", ".join(places)
        target = by_id.get(e.dst)
        if target is not None:
            text = e.label + (f" from {', '.join(donors)}" if donors else f" from {e.src}")
            if places:
                text += f" ({', '.join(places)})"
            prev = target.extra.get("weights inherited")
            target.extra["weights inherited"] = f"{prev}; {text}" if prev else text


def _plain(x: Any) -> bool:
    if isinstance(x, (str, int, float, bool)) or x is None:
        return True
    return isinstance(x, (list, tuple)) and all(_plain(i) for i in x)


def _totals(graph, frozen: set[str]) -> Counts:
    params: dict[str, int] = {}
    for n in graph.nodes:
        params.update(graph.nodes[n].get("parameters", {}))
    total = sum(params.values())
    n_frozen = sum(v for k, v in params.items() if k in frozen)
    return Counts(total, total - n_frozen, n_frozen)


def _group_nodes(graph, s: str, exp, installed: Mapping[str, int], frozen: set[str],
                 parts: Sequence[str]) -> tuple[list[ViewNode], list[ViewEdge]]:
    """One node per fx group of an expanded source, with counts that add up to the source."""
    span_loc = _location(graph.nodes[s].get("span"))
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


def _collapsed(view: View) -> View:
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
