"""What an editor asks of a spec, answered from the pipeline: diagnostics, hover, completion,
definitions. Plain functions of a document's text and position (zero-based line and
character, as the Language Server Protocol counts), used by the server
(:mod:`synthdsl.editor.server`) and testable without it.

A document is analysed by the same stages as `synth check` — parse, graph, check (shapes
on the meta device, checkpoints from their headers, the lock) — so its diagnostics are
the same codes, messages and spans. The last analysis that got as far as a graph is kept
for hover and completion while the text does not parse.

>>> a = analyse("synth A\\ninput x: [B, 8]\\ny = Linear(x, out=4)\\noutput y\\n", "/tmp/a.synth")
>>> a.diagnostics, hover(a, 2, 5)["value"].splitlines()[0]
([], '**y** — layer `Linear`')
>>> definition(a, 2, 11)
(1, 6, 1, 7)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from synthdsl.lang import ast
from synthdsl.lang.errors import SynthError, flatten, fmt_shape
from synthdsl.lang.parse import KEYWORDS, parse_spec

#: A name as the language writes it, with dots (``r18.layer4``).
_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*")


@dataclass
class Analysis:
    """One analysis of a document: its text, the AST and checked graph (None where the
    stage failed) and every diagnostic (errors and warnings)."""

    text: str
    path: str | None
    spec: ast.Spec | None = None
    graph: Any = None
    diagnostics: list[SynthError] = field(default_factory=list)


def analyse(text: str, path: str | None = None, previous: Analysis | None = None
            ) -> Analysis:
    """Parse, build and check `text` as the spec at `path` (relative checkpoints and
    imported specs resolve from its folder). Where it does not parse, the graph of
    `previous` is kept for hover and completion."""
    from synthdsl.graph import build_graph
    from synthdsl.pipeline import check_locked

    result = Analysis(text, path)
    try:
        result.spec = parse_spec(text, path)
    except SynthError as e:
        result.diagnostics = flatten(e)
        if previous is not None:
            result.graph = previous.graph
        return result
    try:
        graph = check_locked(build_graph(result.spec), raise_errors=False)
    except SynthError as e:
        result.diagnostics = flatten(e)
        return result
    result.graph = graph
    result.diagnostics = [*graph.graph.get("errors", ()), *graph.graph.get("warnings", ())]
    return result


def lsp_range(span, text: str) -> tuple[int, int, int, int]:
    """A span as (start line, start character, end line, end character), zero-based; no
    span at all covers the first line."""
    if span is None:
        return (0, 0, 0, len(text.split("\n", 1)[0]))
    return (span.line - 1, span.column - 1, span.end_line - 1, span.end_column - 1)


def diagnostics(a: Analysis) -> list[dict[str, Any]]:
    """The analysis's diagnostics as plain data: range, severity, code, message (hint and
    notes appended, as the command line prints them). Diagnostics whose span lies in
    another file (a spec this one imports) are placed on the first line, naming it."""
    out = []
    for d in a.diagnostics:
        span = d.span
        message = d.message
        if span is not None and a.path and span.file not in (None, a.path):
            message = f"{span.file}:{span.line}:{span.column}: {message}"
            span = None
        rng = lsp_range(span, a.text)
        extra = [f"note: {n}" for n in d.notes] + ([f"help: {d.hint}"] if d.hint else [])
        out.append({"range": rng, "severity": d.severity, "code": d.code,
                    "message": "\n".join([message, *extra])})
    return out


# ---- what is under the cursor ---------------------------------------------------------


def word_at(text: str, line: int, character: int) -> tuple[str, int] | None:
    """The dotted name under (line, character) and the column it starts at, or None."""
    lines = text.split("\n")
    if not 0 <= line < len(lines):
        return None
    row = lines[line]
    for m in _DOTTED.finditer(row):
        if m.start() <= character <= m.end():
            return m.group(), m.start()
    return None


def _contains(span, line: int, character: int) -> bool:
    if span is None:
        return False
    start = (span.line - 1, span.column - 1)
    end = (span.end_line - 1, span.end_column - 1)
    return start <= (line, character) < end


def _value_node(graph, name: str) -> str | None:
    """The node a name of the spec stands for: an input, a source, or an assigned value
    (the last node of its chain)."""
    if name in graph and graph.nodes[name]["kind"] != "output":
        return name
    found = [n for n in graph.topological_order() if graph.nodes[n].get("name") == name
             and graph.nodes[n]["kind"] not in ("output", "loss")]
    return found[-1] if found else None


def node_at(a: Analysis, line: int, character: int) -> str | None:
    """The graph node under the cursor: a callee written there, else the value, input or
    source its name stands for."""
    g = a.graph
    if g is None:
        return None
    for n in g.nodes:
        if _contains(g.nodes[n].get("callee_span"), line, character):
            return n
    word = word_at(a.text, line, character)
    if word is None or word[0] in KEYWORDS:
        return None
    head = word[0].split(".")[0]
    return _value_node(g, head) if head in _names(g) else None


def _names(graph) -> set[str]:
    return {graph.nodes[n].get("name", n) for n in graph.nodes} | set(graph.nodes)


def _count(n: int | None) -> str:
    return "?" if n is None else f"{n:,}"


def hover(a: Analysis, line: int, character: int) -> dict[str, Any] | None:
    """Markdown about the node under the cursor: what it is, its shape, its parameters
    (trainable and frozen), and where it is declared; None where nothing is there."""
    n = node_at(a, line, character)
    if n is None:
        return None
    node = a.graph.nodes[n]
    kind = node["kind"]
    title = node.get("name", n)
    what = node.get("label", kind)
    lines = [f"**{title}** — {kind} `{what}`"]
    if kind == "input":
        lines.append(f"shape `{fmt_shape(node['shape'])}` {node.get('input_dtype', 'float32')}")
    elif "shape" in node:
        lines.append(f"shape `{fmt_shape(node['shape'])}`")
    elif "shapes" in node:
        lines.append("shapes " + ", ".join(f"`{fmt_shape(s)}`" for s in node["shapes"]))
    if kind == "source":
        if node.get("params") is not None:
            lines.append(f"{_count(node['params'])} parameters in the model")
        if node.get("weights"):
            lines.append(f"weights `{node.get('weights_text') or node['weights']}`")
    elif node.get("params") is not None and kind in ("part", "layer"):
        if node.get("shares"):
            lines.append(f"shares the module of `{node['shares']}`")
        else:
            lines.append(f"{_count(node['params'])} parameters: "
                         f"{_count(node.get('trainable_params'))} trainable, "
                         f"{_count(node.get('frozen_params'))} frozen")
    if node.get("span") is not None:
        lines.append(f"line {node['span'].line}")
    callee = node.get("callee_span")
    return {"value": "\n\n".join(lines),
            "range": lsp_range(callee, a.text) if _contains(callee, line, character) else None}


def definition(a: Analysis, line: int, character: int) -> tuple[int, int, int, int] | None:
    """Where the name under the cursor is declared (its `input`, `source` or assignment),
    as a range; None where it names nothing the spec declares."""
    spec = a.spec
    word = word_at(a.text, line, character)
    if spec is None or word is None:
        return None
    head = word[0].split(".")[0]  # `r18.layer4`: the source r18
    for st in spec.statements:
        if isinstance(st, (ast.InputDecl, ast.SourceDecl)) and st.name == head:
            return lsp_range(st.name_span, a.text)
        if isinstance(st, ast.Assign):
            for t in st.targets:
                if t.name == head:
                    return lsp_range(t.span, a.text)
    return None


# ---- completion -----------------------------------------------------------------------

_CONSTRUCTOR_STRING = re.compile(r'\b(\w+)\(\s*"([^"]*)$')
_CUT_STRING = re.compile(r'\b(\w+)(?:\.[\w.]+)?(?:\[[^\]]*\])?\([^()]*\bat\s*=\s*"([^"]*)$')
_MEMBER = re.compile(r'\b([A-Za-z_]\w*)((?:\.\w+)*)\.(\w*)$')
_SOURCE_DECL = re.compile(r'^\s*source\s+\w+\s*=\s*(\w*)$')
_STATEMENT_START = re.compile(r'^\s*(\w*)$')
#: Methods of a timm model a part can call.
METHODS = ("forward_features", "forward_head")


def _item(label: str, kind: str, detail: str = "") -> dict[str, str]:
    return {"label": label, "kind": kind, "detail": detail}


def _values(a: Analysis) -> list[dict[str, str]]:
    g = a.graph
    if g is None:
        return []
    seen: dict[str, dict[str, str]] = {}
    for n in g.topological_order():
        node = g.nodes[n]
        name = node.get("name", n)
        if node["kind"] in ("output", "loss", "checkpoint") or not name:
            continue
        shape = fmt_shape(node["shape"]) if "shape" in node else ""
        kind = {"input": "input", "source": "source"}.get(node["kind"], "value")
        seen[name] = _item(name, kind, node.get("label", "") if kind == "source" else shape)
    return list(seen.values())


def _architectures(constructor: str, prefix: str) -> list[dict[str, str]]:
    if constructor == "timm" or constructor == "merge":
        from synthdsl.library.sources import timm_models

        names = timm_models()
    elif constructor == "torchvision":
        from synthdsl.library.torchvision_source import tv_models

        names = tv_models()
    else:
        return []
    return [_item(n, "architecture", constructor) for n in names if n.startswith(prefix)]


def _source_model(a: Analysis, name: str):
    """The meta model of source `name` as the check built it, or None."""
    g = a.graph
    if g is None or name not in g or g.nodes[name]["kind"] != "source" \
            or g.nodes[name].get("constructor") == "spec":
        return None
    from synthdsl.library.cache import sources_of

    try:
        return sources_of(g).pristine(name)
    except Exception:  # noqa: BLE001 - a source that does not build has no members to offer
        return None


def completions(a: Analysis, line: int, character: int) -> list[dict[str, str]]:
    """What may be written at the cursor: architectures inside ``timm("`` (and
    torchvision's), cut points inside ``at="``, a source's submodules and methods after
    ``src.``, constructors in a `source` statement, keywords at a statement's start, and
    the spec's values, layers and operations elsewhere. Each: label, kind, detail."""
    lines = a.text.split("\n")
    if not 0 <= line < len(lines):
        return []
    row = lines[line][:character]
    if m := _CUT_STRING.search(row):
        model = _source_model(a, m.group(1))
        if model is None:
            return []
        from synthdsl.library.sources import source_kind

        kind = source_kind(a.graph.nodes[m.group(1)]["constructor"])
        nodes = kind.node_names(model)
        modules = {".".join(n.split(".")[:i]) for n in nodes for i in range(1, n.count(".") + 1)}
        names = [*nodes, *sorted(modules - set(nodes))]  # a module cuts after its last node
        return [_item(n, "cut point", m.group(1)) for n in names if n.startswith(m.group(2))]
    if m := _CONSTRUCTOR_STRING.search(row):
        return _architectures(m.group(1), m.group(2))
    if '"' in row and row.count('"') % 2 == 1:
        return []  # inside another string: nothing to offer
    if m := _SOURCE_DECL.search(row):
        from synthdsl.library.sources import SOURCE_KINDS

        return [_item(k, "constructor", "kind of source") for k in SOURCE_KINDS
                if k.startswith(m.group(1))]
    if m := _MEMBER.search(row):
        model = _source_model(a, m.group(1))
        if model is None:
            return []
        path, prefix = m.group(2).lstrip("."), m.group(3)
        try:
            module = model.get_submodule(path) if path else model
        except AttributeError:
            return []
        items = [_item(c, "submodule", type(sub).__name__) for c, sub in module.named_children()]
        if not path:
            items += [_item(meth, "method", "timm") for meth in METHODS if hasattr(model, meth)]
        return [i for i in items if i["label"].startswith(prefix)]
    word = re.search(r"(\w*)$", row).group(1)
    from synthdsl.library.aliases import ALIASES
    from synthdsl.library.layers import LAYERS
    from synthdsl.library.ops import OPS

    items = _values(a)
    items += [_item(k, "layer", "layer") for k in sorted({*LAYERS, *ALIASES})]
    items += [_item(k, "operation", "operation") for k in sorted(OPS)]
    if _STATEMENT_START.search(row):
        items = [_item(k, "keyword", "keyword") for k in sorted(KEYWORDS)] + items
    return [i for i in items if i["label"].startswith(word)]
