"""What a graph node or edge says in a picture: its kind, detail, shape, counts, place.

Each function reads one node's (or edge's) attribute dict, as the records of
:mod:`synthdsl.graph.ir` describe it, and returns display strings already
cleaned (:func:`synthdsl.viz.model.clean`); :func:`synthdsl.viz.view.build_view`
puts them together.

>>> node_what({"kind": "layer", "label": "Linear", "build": {"in_features": 8, "out_features": 4}})
('Linear', 'Linear(in_features=8, out_features=4)')
>>> node_what({"kind": "layer", "label": "Upsample", "build": {"scale": 2.0, "size": None}})
('Upsample', 'Upsample(scale=2.0)')
>>> edge_label("inherit", {"tensors": 2, "params": 36, "mode": "strict"})
'inherits 2 tensors · 36 params · strict'
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from synthdsl.graph.counts import all_parameters, count_params
from synthdsl.viz.model import Counts, Message, clean, fmt_count, fmt_shape, fmt_value


def location_of(span: Any) -> str | None:
    if span is None or not hasattr(span, "line"):
        return None
    return f"{clean(getattr(span, 'file', None) or '<spec>')}:{span.line}"


def line_of(lines: Sequence[str], span: Any) -> str | None:
    if span is None or not hasattr(span, "line"):
        return None
    if 1 <= span.line <= len(lines):
        return clean(lines[span.line - 1].rstrip())
    return None


def message_of(e: Any) -> Message:
    return Message(severity=clean(getattr(e, "severity", "error")),
                   code=clean(getattr(e, "code", "")),
                   message=clean(getattr(e, "message", str(e))),
                   hint=clean(e.hint) if getattr(e, "hint", None) else None,
                   notes=tuple(clean(n) for n in getattr(e, "notes", ())),
                   location=clean(e.span) if getattr(e, "span", None) is not None else None)


def node_what(node: Mapping[str, Any]) -> tuple[str, str]:
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
    if kind == "input":  # its element type, when it is not the default
        dtype = node.get("input_dtype", "float32")
        return "input", "" if dtype == "float32" else clean(dtype)
    if kind == "part":
        src = clean(node.get("source", "?"))
        return f"part of {src}", label + keyword_inputs(node)
    if kind == "layer":
        build = node.get("build")
        args = build if isinstance(build, Mapping) else node.get("options", {})
        opts = ", ".join(f"{clean(k)}={fmt_value(v)}" for k, v in args.items()
                         if v is not None)  # an option left unset (Upsample's size=none)
        return label, f"{label}({opts})"
    if kind == "op":
        opts = ", ".join(f"{clean(k)}={fmt_value(v)}" for k, v in
                         (node.get("options") or {}).items())
        return label, f"{label}({opts})"
    return (label if label != kind else kind), ""


def node_shape(node: Mapping[str, Any]) -> str | None:
    if node.get("shape") is not None:
        return fmt_shape(node["shape"])
    if node.get("shapes"):
        return "(" + ", ".join(fmt_shape(s) for s in node["shapes"]) + ")"
    return None


def node_counts(node: Mapping[str, Any], frozen: set[str]) -> Counts | None:
    if "parameters" in node:
        total, n_frozen = count_params(node["parameters"], frozen)
        return Counts(total, total - n_frozen, n_frozen)
    if node.get("params") is not None and node.get("kind") != "source":
        total = int(node["params"])
        n_frozen = int(node.get("frozen_params", 0))
        return Counts(total, int(node.get("trainable_params", total - n_frozen)), n_frozen)
    return None


def keyword_inputs(node: Mapping[str, Any]) -> str:
    """A part's keyword data inputs as the spec writes them (``(mask=m)``), or ""."""
    keywords = node.get("keywords") or {}
    if not keywords:
        return ""
    return "(" + ", ".join(f"{clean(k)}={clean(v or '?')}" for k, v in keywords.items()) + ")"


def edge_label(kind: str, attrs: Mapping[str, Any]) -> str:
    if kind == "data":
        shape = fmt_shape(attrs["shape"]) if attrs.get("shape") is not None else ""
        keywords = attrs.get("keywords") or ()
        if not keywords:
            return shape
        # a keyword data input: `mask=[B, T]` (and the shape alone for a position it feeds)
        bits = [shape] if attrs.get("positions") and shape else []
        return ", ".join(bits + [f"{clean(k)}={shape}" for k in keywords])
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


def is_plain(x: Any) -> bool:
    if isinstance(x, (str, int, float, bool)) or x is None:
        return True
    return isinstance(x, (list, tuple)) and all(is_plain(i) for i in x)


def totals_of(graph, frozen: set[str]) -> Counts:
    total, n_frozen = count_params(all_parameters(graph), frozen)
    return Counts(total, total - n_frozen, n_frozen)
