"""The view model's records: what every picture of a checked SynthGraph shows, as plain data.

A :class:`View` holds one :class:`ViewNode` per graph node (and per fx group of
an expanded source), one :class:`ViewEdge` per edge, one :class:`ViewCluster`
per source, the parameter :class:`Counts` and the :class:`Message` of each
diagnostic; every renderer (DOT, Mermaid, HTML, JSON, text) reads these and
nothing else. :mod:`synthdsl.viz.view` builds them from a graph. Every string
here is cleaned of lone surrogates and control characters (:func:`clean`), so
renderers only have to escape for their own syntax.

>>> Counts(10, 4, 6).state, Counts(10, 4, 6).describe()
('partial', '10 params · 4 trainable · 6 frozen \U0001f512')
>>> fmt_value([1, "x", True, None]), fmt_shape(("B", 3))
('[1, "x", true, none]', '[B, 3]')
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Iterable

from synthdsl.lang.errors import fmt_shape as _fmt_shape

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
    """A shape as the diagnostics spell it, made safe to display."""
    return clean(_fmt_shape(shape))


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
