"""Pictures of the assembled model: DOT, SVG, PNG, HTML, Mermaid, JSON and a text tree.

Every format is drawn from one view model (:func:`build_view`), which is built
from the checked :class:`~synthdsl.graph.SynthGraph` alone. Output is
deterministic: the same graph gives the same bytes, in every format.

    render_graph(graph, "html")                  # one self-contained, offline page
    render_graph(graph, "svg", expand=["r18"])   # Graphviz; r18 opened into its fx graph
    write_graph(graph, "model.png")              # format from the suffix, written atomically

>>> from synthdsl.pipeline import check_spec
>>> g = check_spec("synth A input x: [B, 8] h = Linear(x, out=4) output h")
>>> print(render_graph(g, "mmd").splitlines()[1])
flowchart TB
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

from synthdsl.files import write_bytes
from synthdsl.viz.dot import GraphvizFailed, GraphvizNotFound, render_dot, run_graphviz
from synthdsl.viz.expand import ExpandError, expand_source
from synthdsl.viz.html import render_html
from synthdsl.viz.mermaid import render_mermaid
from synthdsl.viz.text import render_text
from synthdsl.viz.view import Counts, View, build_view

#: Format name -> file suffixes that select it.
FORMATS = {"dot": (".dot", ".gv"), "svg": (".svg",), "png": (".png",), "html": (".html", ".htm"),
           "mmd": (".mmd", ".mermaid"), "json": (".json",), "text": (".txt",)}
#: Formats that need Graphviz's `dot`.
GRAPHVIZ_FORMATS = ("svg", "png")


class VizError(ValueError):
    """A request that cannot be drawn: unknown format, unknown source to expand."""


def format_for(path: str | os.PathLike) -> str:
    """The format a file name asks for, by its suffix."""
    suffix = Path(path).suffix.lower()
    for fmt, suffixes in FORMATS.items():
        if suffix in suffixes:
            return fmt
    known = ", ".join(s for ss in FORMATS.values() for s in ss)
    raise VizError(f"cannot tell the format of '{path}' from its suffix; use one of {known} "
                   "(or --format)")


def render_view(view: View, fmt: str) -> str | bytes:
    """A view in `fmt`: text for dot, svg, html, mmd, json, text; bytes for png."""

    if fmt == "dot":
        return render_dot(view)
    if fmt in GRAPHVIZ_FORMATS:
        out = run_graphviz(render_dot(view), fmt)
        return out.decode("utf-8") if fmt == "svg" else out
    if fmt == "html":
        return render_html(view)
    if fmt == "mmd":
        return render_mermaid(view)
    if fmt == "json":
        return json.dumps(view.to_dict(), ensure_ascii=False, sort_keys=True, indent=1) + "\n"
    if fmt == "text":
        return render_text(view)
    raise VizError(f"unknown format '{fmt}'; formats: {', '.join(FORMATS)}")


def render_graph(graph, fmt: str = "text", expand: Iterable[str] = (), depth: int = 1,
                 collapse: Iterable[str] = ()) -> str | bytes:
    """Draw a checked SynthGraph in `fmt` (see :data:`FORMATS`).

    `expand` opens sources into their torch.fx graph grouped to `depth` module
    levels; `collapse` draws sources as one node each ("all" for every source).
    """
    if fmt not in FORMATS:
        raise VizError(f"unknown format '{fmt}'; formats: {', '.join(FORMATS)}")
    if depth < 1:
        raise VizError(f"--depth must be 1 or more, found {depth}")
    try:
        view = build_view(graph, expand=expand, depth=depth, collapse=collapse)
    except ExpandError as e:
        raise VizError(str(e)) from None
    return render_view(view, fmt)


def write_graph(graph, path: str | os.PathLike, fmt: str | None = None, **options) -> str:
    """Render and write atomically (a temporary file renamed into place); the format used."""
    fmt = fmt or format_for(path)
    data = render_graph(graph, fmt, **options)
    write_atomic(Path(path), data)
    return fmt


def write_atomic(path: Path, data: str | bytes) -> None:
    write_bytes(path, data.encode("utf-8") if isinstance(data, str) else data)


__all__ = [
    "FORMATS", "Counts", "ExpandError", "GraphvizFailed", "GraphvizNotFound", "View",
    "VizError", "build_view", "expand_source", "format_for", "render_dot", "render_graph",
    "render_html", "render_mermaid", "render_text", "render_view", "write_graph",
]
