"""The view as Graphviz DOT, and SVG/PNG through the system's ``dot``.

One DOT node per view node and one DOT edge per view edge, so the DOT of an
unexpanded, uncollapsed view has exactly the graph's node and edge counts.
Sources are clusters (their fx groups a nested cluster); the legend, the totals
and problems that belong to no node are the graph's own label, not extra nodes.

Labels are Graphviz HTML-like labels, XML-escaped; identifiers and tooltips are
quoted strings with ``\\`` and ``"`` escaped, so no name or string from a spec can
change the structure of the file.
"""

from __future__ import annotations

import html
import os
import shutil
import subprocess
import textwrap

from synthdsl.viz.view import LEGEND, LOCK, WARN, View, ViewCluster, ViewEdge, ViewNode

#: Fill colour per node kind (state is shown by border style and marks, not only colour).
FILL = {"input": "#e3f2fd", "output": "#e8f5e9", "source": "#ede7f6", "part": "#f6f1fc",
        "layer": "#fff8e1", "op": "#f5f5f5", "group": "#fbfbfb", "item": "#f5f5f5",
        "checkpoint": "#f3e5f5", "loss": "#fce4ec"}
ERROR_COLOR = "#c62828"
INHERIT_COLOR = "#7b1fa2"
INSTALL_HINT = ("SVG and PNG are drawn by Graphviz's `dot`, which is not installed (or not on "
                "PATH). Install it with `sudo apt-get install graphviz` (Debian/Ubuntu), "
                "`sudo dnf install graphviz` (Fedora), `brew install graphviz` (macOS), "
                "`conda install graphviz` or `choco install graphviz` (Windows), or point "
                "SYNTH_DOT at the `dot` program. DOT, HTML, Mermaid and JSON need nothing: "
                "`synth viz FILE -o model.html` works without it.")


class GraphvizNotFound(RuntimeError):
    """`dot` is needed for SVG and PNG and is not installed."""


class GraphvizFailed(RuntimeError):
    """`dot` ran and refused the input (a bug of ours) or crashed."""


def quote(s: str) -> str:
    """A DOT quoted string: only `"` is special to the lexer, `\\` to label escapes."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def esc(s: str) -> str:
    """Text inside an HTML-like label."""
    return html.escape(s, quote=True)


def _wrap(s: str, width: int = 56, lines: int = 3) -> list[str]:
    out = textwrap.wrap(s, width, break_long_words=True, break_on_hyphens=False) or [""]
    if len(out) > lines:
        out = out[:lines]
        out[-1] = out[-1][: width - 1] + "\u2026"
    return out


def _style(n: ViewNode) -> dict[str, str]:
    style = ["filled"]
    state = n.state
    if n.status == "skipped":
        style.append("diagonals")
    else:
        style.append("rounded")
    if state == "frozen":
        style.append("dashed")
    elif state == "partial":
        style.append("dotted")
    attrs = {"style": quote(",".join(style)),
             "fillcolor": quote("#eeeeee" if state == "unused" else FILL.get(n.kind, "#ffffff"))}
    if n.status == "error":
        attrs.update(color=quote(ERROR_COLOR), penwidth="2.5")
    elif state in ("frozen", "partial"):
        attrs.update(color=quote("#1565c0"), penwidth="1.4")
    if n.kind == "source":
        attrs["penwidth"] = attrs.get("penwidth", "1.4")
    return attrs


def node_label(n: ViewNode) -> str:
    marks = ""
    if n.state in ("frozen", "partial"):
        marks += f" {LOCK}"
    if n.status == "error":
        marks += f" {WARN}"
    rows = [f'<FONT POINT-SIZE="11"><B>{esc(n.title)}</B>{esc(marks)}</FONT>']
    if n.kind in ("layer", "op") and n.detail:
        rows.append(f'<FONT COLOR="#555555">{esc(n.kind)} · {esc(n.detail)}</FONT>')
    else:
        rows.append(f'<FONT COLOR="#555555">{esc(n.what)}</FONT>')
        if n.detail:
            rows += [f'<FONT COLOR="#555555">{esc(line)}</FONT>' for line in _wrap(n.detail)]
    if n.shape:
        rows.append(f"\u2192 {esc(n.shape)}")
    if n.counts is not None and n.counts.params:
        state = {"frozen": "frozen", "partial": "partial", "unused": "unused"}.get(n.state)
        text = n.counts.describe() + (f" ({state})" if state == "partial" else "")
        rows.append(esc(text))
    for k, v in sorted(n.extra.items()):
        if k in ("collapsed", "used in forward", "weights inherited"):
            color = INHERIT_COLOR if k == "weights inherited" else "#555555"
            rows += [f'<FONT COLOR="{color}">{esc(line)}</FONT>'
                     for line in _wrap(f"{k}: {v}", 60, 4)]
    if n.location and n.kind != "group":  # a group's line is its source's
        rows.append(f'<FONT POINT-SIZE="8" COLOR="#777777">{esc(n.location)}</FONT>')
    for m in n.messages[:2]:
        if m.severity in ("error", "warning"):
            color = ERROR_COLOR if m.severity == "error" else "#e65100"
            for line in _wrap(f"{WARN} {m.headline()}"):
                rows.append(f'<FONT COLOR="{color}">{esc(line)}</FONT>')
        elif m.message:
            rows.append(f'<FONT COLOR="#777777">{esc(m.message)}</FONT>')
    if len([m for m in n.messages if m.severity == "error"]) > 2:
        rows.append(f'<FONT COLOR="{ERROR_COLOR}">… and more (see the tooltip)</FONT>')
    body = "".join(f'<TR><TD ALIGN="LEFT">{r}</TD></TR>' for r in rows)
    return f'<<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="0" CELLPADDING="1">{body}</TABLE>>'


def tooltip(n: ViewNode) -> str:
    lines = [f"{n.title} ({n.kind}: {n.what})"]
    if n.detail:
        lines.append(n.detail)
    if n.shape:
        lines.append(f"shape {n.shape}")
    if n.counts is not None:
        lines.append(n.counts.describe())
    if n.location:
        lines.append(n.location + (f": {n.source_line.strip()}" if n.source_line else ""))
    for m in n.messages:
        lines.append((m.headline() if m.code else m.message)
                     + (f" ({m.location})" if m.location else ""))
        lines += [f"  note: {x}" for x in m.notes]
        if m.hint:
            lines.append(f"  help: {m.hint}")
    return "\n".join(lines)


def _attrs(d: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in d.items())


def _node_stmt(n: ViewNode, indent: str) -> str:
    attrs = {"label": node_label(n), **_style(n), "tooltip": quote(tooltip(n))}
    return f"{indent}{quote(n.id)} [{_attrs(attrs)}];"


#: Above this many nodes, edge labels are placed after layout (`xlabel`) and the
#: positioning pass is capped, which keeps `dot` to seconds at thousands of nodes.
LARGE = 150


def _edge_stmt(e: ViewEdge, large: bool = False) -> str:
    attrs: dict[str, str] = {}
    if e.kind == "member":
        attrs.update(style="dotted", arrowhead="none", color=quote("#9e9e9e"))
    elif e.kind == "inherit":
        attrs.update(style="dashed", color=quote(INHERIT_COLOR), fontcolor=quote(INHERIT_COLOR),
                     penwidth="1.6", arrowhead="empty")
    elif e.kind == "share":
        attrs.update(style="dashed", color=quote("#00796b"), fontcolor=quote("#00796b"),
                     arrowhead="odot")
    elif e.kind == "flow":
        attrs.update(color=quote("#90a4ae"), arrowsize="0.5")
    if e.label:
        attrs["xlabel" if large else "label"] = quote(e.label)
    tail = f" [{_attrs(attrs)}]" if attrs else ""
    return f"  {quote(e.src)} -> {quote(e.dst)}{tail};"


def _cluster_label(c: ViewCluster, frozen: bool) -> str:
    head = f"<B>{esc(c.name)}</B> · {esc(c.what)}" + (f" {LOCK}" if frozen else "")
    rows = [head]
    if c.counts is not None:
        rows.append(esc(c.counts.describe()))
    if c.expanded:
        rows.append(f'<FONT COLOR="#555555">fx graph, grouped to depth {c.depth}</FONT>')
    if c.note:
        rows += [f'<FONT COLOR="#555555">{esc(line)}</FONT>' for line in _wrap(c.note, 70)]
    return "<" + "<BR/>".join(rows) + ">"


def legend_label(view: View) -> str:
    title = f"synth {view.name}" + (f" · {view.file}" if view.file else "")
    rows = [f'<TR><TD COLSPAN="2" ALIGN="LEFT"><B>{esc(title)}</B></TD></TR>',
            f'<TR><TD COLSPAN="2" ALIGN="LEFT">{esc(_totals_text(view))}</TD></TR>']
    for m in view.messages:
        color = ERROR_COLOR if m.severity == "error" else "#e65100"
        text = f"{WARN} {m.headline()}" + (f" ({m.location})" if m.location else "")
        rows.append(f'<TR><TD COLSPAN="2" ALIGN="LEFT"><FONT COLOR="{color}">{esc(text)}'
                    "</FONT></TD></TR>")
    samples = {"trainable": ('BORDER="1"', ""), "frozen": ('BORDER="1" STYLE="dashed"', LOCK),
               "partial": ('BORDER="1" STYLE="dotted"', LOCK),
               "unused": ('BORDER="1" BGCOLOR="#eeeeee"', ""),
               "error": (f'BORDER="2" COLOR="{ERROR_COLOR}"', WARN),
               "skipped": ('BORDER="1"', "\u2572"),
               "data": ('BORDER="0"', "\u2192"),
               "inherit": ('BORDER="0"', f'<FONT COLOR="{INHERIT_COLOR}">- - \u25b7</FONT>'),
               "member": ('BORDER="0"', '<FONT COLOR="#9e9e9e">\u00b7\u00b7\u00b7</FONT>')}
    for key, text in LEGEND:
        cell, mark = samples[key]
        mark = mark if mark.startswith("<") else esc(mark)
        rows.append(f'<TR><TD {cell} WIDTH="28">{mark}</TD><TD ALIGN="LEFT">{esc(text)}</TD></TR>')
    return ('<<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="3" CELLPADDING="2">'
            + "".join(rows) + "</TABLE>>")


def _totals_text(view: View) -> str:
    t = view.totals
    text = (f"{t.params:,} parameters: {t.trainable:,} trainable, {t.frozen:,} frozen"
            if view.checked else "not checked: no shapes or counts")
    if view.errors:
        text += f" · {view.errors} error{'s' if view.errors != 1 else ''}"
    return text


def render_dot(view: View) -> str:
    """The view as DOT text; deterministic, same view, same bytes."""
    large = len(view.nodes) > LARGE
    limit = f"nslimit={max(0.05, 1000 / len(view.nodes)):.2f}, " if large else ""
    out = [f"digraph {quote('synth ' + view.name)} {{",
           f"  graph [rankdir=TB, fontname={quote('Helvetica,Arial,sans-serif')}, fontsize=10, "
           f"nodesep=0.3, ranksep=0.45, newrank=true, labelloc=b, labeljust=l, {limit}"
           f"tooltip={quote('synth ' + view.name)}, label={legend_label(view)}];",
           f"  node [shape=box, fontname={quote('Helvetica,Arial,sans-serif')}, fontsize=9, "
           "margin=\"0.10,0.05\", color=\"#546e7a\"];",
           f"  edge [fontname={quote('Helvetica,Arial,sans-serif')}, fontsize=8, "
           "color=\"#546e7a\", fontcolor=\"#37474f\", arrowsize=0.7];"]
    by_id = {n.id: n for n in view.nodes}
    in_cluster: set[str] = set()
    for c in view.clusters:
        if c.collapsed:
            continue
        members = [m for m in c.members if m in by_id]
        in_cluster.update(members)
        frozen = c.counts is not None and c.counts.state == "frozen"
        out.append(f"  subgraph {quote('cluster_' + c.id)} {{")
        out.append(f"    label={_cluster_label(c, frozen)}; labeljust=l; labelloc=t; "
                   f"style={quote('rounded,filled' + (',dashed' if frozen else ''))}; "
                   'fillcolor="#faf8fd"; color="#9575cd"; fontsize=9;')
        plain = [by_id[m] for m in members if by_id[m].kind != "group"]
        groups = [by_id[m] for m in members if by_id[m].kind == "group"]
        out += [_node_stmt(n, "    ") for n in plain]
        if groups:
            out.append(f"    subgraph {quote('cluster_' + c.id + '::fx')} {{")
            out.append(f"      label={quote(f'inside {c.name} (fx, depth {c.depth})')}; "
                       'style="rounded,dashed"; color="#b0bec5"; fillcolor="#ffffff"; '
                       "fontsize=8;")
            out += [_node_stmt(n, "      ") for n in groups]
            out.append("    }")
        out.append("  }")
    out += [_node_stmt(n, "  ") for n in view.nodes if n.id not in in_cluster]
    out += [_edge_stmt(e, large) for e in view.edges]
    out.append("}")
    return "\n".join(out) + "\n"


# ---- Graphviz -------------------------------------------------------------------


def find_dot() -> str:
    """The `dot` program (SYNTH_DOT overrides PATH), or GraphvizNotFound saying how to install it."""
    override = os.environ.get("SYNTH_DOT")
    path = override if override else shutil.which("dot")
    if not path or not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise GraphvizNotFound(INSTALL_HINT)
    return path


def has_font_for(char: str) -> bool:
    """Whether fontconfig knows a font with `char` (PNG is drawn with the system's fonts)."""
    fc = shutil.which("fc-list")
    if not fc:
        return False
    try:
        p = subprocess.run([fc, f":charset={ord(char):x}", "family"], capture_output=True,
                           timeout=20, check=False)
    except (OSError, subprocess.SubprocessError):
        return False
    return bool(p.stdout.strip())


def run_graphviz(dot_text: str, fmt: str, timeout: float = 300) -> bytes:
    """`dot -T<fmt>` on the text; SVG and PNG output are deterministic for one Graphviz."""
    if fmt not in ("svg", "png"):
        raise ValueError(f"Graphviz output format must be svg or png, not {fmt!r}")
    if fmt == "png" and not has_font_for(LOCK):
        dot_text = dot_text.replace(LOCK, "[locked]")  # no font has the glyph
    args = [find_dot(), f"-T{fmt}"] + (["-Gdpi=110"] if fmt == "png" else [])
    try:
        p = subprocess.run(args, input=dot_text.encode("utf-8"), capture_output=True,
                           timeout=timeout, check=False)
    except OSError as e:
        raise GraphvizNotFound(f"{INSTALL_HINT} ({e})") from None
    except subprocess.TimeoutExpired:
        raise GraphvizFailed(f"dot took more than {timeout:.0f}s; collapse sources "
                             "(--collapse all) or write .html instead") from None
    if p.returncode != 0 or not p.stdout:
        err = p.stderr.decode("utf-8", "replace").strip()
        raise GraphvizFailed(f"dot failed (exit {p.returncode}): {err[:500]}")
    return p.stdout
