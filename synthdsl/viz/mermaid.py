"""The view as a Mermaid flowchart, for READMEs and issues (GitHub renders it).

Node ids are generated (`n0`, `n1`, ... in view order) so that no spec name can
break the syntax; every label is a quoted string whose special characters are
Mermaid entity codes (`#34;` for `"`, `#60;` for `<`, ...), so a name is always
text, never markup.
"""

from __future__ import annotations

from synthdsl.viz.view import LOCK, WARN, View, ViewNode

_ENTITIES = {"#": "#35;", '"': "#34;", "<": "#60;", ">": "#62;", "&": "#38;", "`": "#96;",
             "|": "#124;", "{": "#123;", "}": "#125;", "[": "#91;", "]": "#93;"}


def esc(s: str) -> str:
    return "".join(_ENTITIES.get(c, c) for c in s)


def _label(n: ViewNode) -> str:
    marks = (f" {LOCK}" if n.state in ("frozen", "partial") else "") + \
        (f" {WARN}" if n.status == "error" else "")
    lines = [f"<b>{esc(n.title)}</b>{marks}",
             esc(f"{n.kind} · {n.detail}" if n.kind in ("layer", "op") and n.detail else n.what)]
    if n.kind not in ("layer", "op") and n.detail:
        lines.append(esc(n.detail))
    if n.shape:
        lines.append(esc(f"→ {n.shape}"))
    if n.counts is not None and n.counts.params:
        lines.append(esc(n.counts.describe()))
    if n.location and n.kind != "group":
        lines.append(f"<i>{esc(n.location)}</i>")
    for m in n.messages:
        if m.severity == "error":
            lines.append(esc(f"{WARN} {m.headline()}"))
    return "<br/>".join(lines)


def render_mermaid(view: View) -> str:
    ids = {n.id: f"n{i}" for i, n in enumerate(view.nodes)}
    by_id = {n.id: n for n in view.nodes}
    out = [f"%% synth {esc(view.name)}: drawn by synthdsl (synth viz)", "flowchart TB"]
    placed: set[str] = set()
    for k, c in enumerate(view.clusters):
        members = [m for m in c.members if m in by_id]
        if c.collapsed or not members:
            continue
        title = f"{c.name} · {c.what}" + (f" · {c.counts.describe()}" if c.counts else "")
        out.append(f'  subgraph c{k}["{esc(title)}"]')
        for m in members:
            out.append(f'    {ids[m]}["{_label(by_id[m])}"]')
            placed.add(m)
        out.append("  end")
    for n in view.nodes:
        if n.id not in placed:
            out.append(f'  {ids[n.id]}["{_label(n)}"]')
    for e in view.edges:
        if e.src not in ids or e.dst not in ids:
            continue
        a, b = ids[e.src], ids[e.dst]
        label = f'|"{esc(e.label)}"|' if e.label else ""
        if e.kind == "member":
            out.append(f"  {a} -.- {b}")
        elif e.kind in ("inherit", "share"):
            out.append(f'  {a} -.->|"{esc(e.label or e.kind)}"| {b}')
        else:
            out.append(f"  {a} -->{label} {b}")
    styles = {"frozen": "stroke-dasharray: 6 4,stroke:#1565c0,stroke-width:1.5px",
              "partial": "stroke-dasharray: 2 3,stroke:#1565c0,stroke-width:1.5px",
              "error": "stroke:#c62828,stroke-width:3px",
              "skipped": "stroke-dasharray: 1 4,color:#777777",
              "unused": "fill:#eeeeee,color:#777777"}
    fills = {"input": "#e3f2fd", "output": "#e8f5e9", "source": "#ede7f6", "part": "#f6f1fc",
             "layer": "#fff8e1", "op": "#f5f5f5", "group": "#fbfbfb", "checkpoint": "#f3e5f5",
             "loss": "#fce4ec"}
    for kind, fill in fills.items():
        out.append(f"  classDef k_{kind} fill:{fill}")
    for key, style in styles.items():
        out.append(f"  classDef {key} {style}")
    for n in view.nodes:
        classes = [f"k_{n.kind}"] if n.kind in fills else []
        if n.status in ("error", "skipped"):
            classes.append(n.status)
        if n.state in ("frozen", "partial", "unused"):
            classes.append(n.state)
        if classes:
            out.append(f"  class {ids[n.id]} {','.join(classes)}")
    drawn = [e for e in view.edges if e.src in ids and e.dst in ids]
    inherit = [str(i) for i, e in enumerate(drawn) if e.kind == "inherit"]
    if inherit:
        out.append(f"  linkStyle {','.join(inherit)} stroke:#7b1fa2,stroke-width:2px")
    return "\n".join(out) + "\n"
