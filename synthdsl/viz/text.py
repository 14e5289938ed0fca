"""The view as a text tree for the terminal (`synth viz FILE` without -o).

Nodes in the order the model runs; each source with its parts (and, when
expanded, its fx groups) beneath it. Columns: name, what it is, inputs and
output shape, parameters, spec location; problems on the lines below.
"""

from __future__ import annotations

import unicodedata

from synthdsl.viz.view import LOCK, WARN, View, ViewNode

#: Column caps: name, what, flow, parameters (the location is never cut).
CAPS = (40, 48, 64, 90)


def width(s: str) -> int:
    """Terminal columns: wide characters (the lock) take two."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in s)


def fit(s: str, cap: int) -> str:
    if width(s) <= cap:
        return s
    out = ""
    for c in s:
        if width(out + c) > cap - 1:
            break
        out += c
    return out + "\u2026"


def pad(s: str, w: int) -> str:
    return s + " " * max(0, w - width(s))


def _flow(n: ViewNode) -> str:
    ins = ", ".join(n.inputs)
    bits = []
    if ins:
        bits.append(f"\u2190 {ins}")
    if n.shape:
        bits.append(f"\u2192 {n.shape}")
    return " ".join(bits)


def _params(n: ViewNode) -> str:
    if n.counts is None or not n.counts.params:
        return ""
    text = n.counts.describe()
    return text + (" (partial)" if n.state == "partial" else "")


def _what(n: ViewNode) -> str:
    if n.kind in ("layer", "op") and n.detail:
        return f"{n.kind} {n.detail}"
    return n.what + (f" ({n.detail})" if n.detail and n.kind in ("source", "input") else "")


def render_text(view: View) -> str:
    by_id = {n.id: n for n in view.nodes}
    clusters = {c.id: c for c in view.clusters}
    members = {m for c in view.clusters for m in c.members[1:]}
    rows: list[tuple[str, ViewNode]] = []   # (tree prefix, node)
    notes: dict[int, list[str]] = {}

    for n in view.nodes:
        if n.id in members:
            continue
        rows.append(("", n))
        c = clusters.get(n.id)
        if c is None:
            continue
        kids = [by_id[m] for m in c.members[1:] if m in by_id]
        parts = [k for k in kids if k.kind != "group"]
        groups = [k for k in kids if k.kind == "group"]
        for i, k in enumerate(parts):
            last = i == len(parts) - 1 and not groups
            rows.append(("\u2514\u2500 " if last else "\u251c\u2500 ", k))
        if groups:
            notes[len(rows)] = [f"\u2514\u2500 fx graph of {c.name}, grouped to depth {c.depth}"
                                + (f" ({c.note})" if c.note else "")]
            for i, k in enumerate(groups):
                last = i == len(groups) - 1
                rows.append(("   " + ("\u2514\u2500 " if last else "\u251c\u2500 "), k))
        elif c.note:
            notes[len(rows)] = [f"   ({c.note})"]

    table = [(p + n.title + (f" {LOCK}" if n.state in ("frozen", "partial") else "")
              + (f" {WARN}" if n.status == "error" else ""),
              _what(n), _flow(n), _params(n), n.location if n.kind != "group" else "")
             for p, n in rows]
    table = [tuple(fit(c, cap) for c, cap in zip(r, CAPS)) + r[len(CAPS):] for r in table]
    widths = [max((width(r[i]) for r in table), default=0) for i in range(5)]
    t = view.totals
    out = [f"synth {view.name}" + (f"  ({view.file})" if view.file else "")]
    if view.checked:
        out.append(f"{t.params:,} parameters: {t.trainable:,} trainable, {t.frozen:,} frozen"
                   + (f"; {view.errors} error{'s' if view.errors != 1 else ''}"
                      if view.errors else ""))
    else:
        out.append("not checked: no shapes or counts")
    out.append("")
    for i, ((prefix, n), row) in enumerate(zip(rows, table)):
        for line in notes.get(i, ()):
            out.append(line)
        cells = [pad(c, w) for c, w in zip(row, widths)]
        out.append("  ".join(cells).rstrip())
        indent = "   " * (prefix.count(" ") // 3 + (1 if prefix else 0)) + "   "
        if "weights inherited" in n.extra:
            out.append(f"{indent}\u21d0 {n.extra['weights inherited']}")
        for m in n.messages:
            if m.code:
                own = n.location.rsplit(":", 1)[0] + ":" if n.location else None
                at = f"  ({m.location})" if m.location and not (
                    own and m.location.startswith(own)) else ""
                out.append(f"{indent}{WARN} {m.headline()}{at}")
                out += [f"{indent}    = note: {x}" for x in m.notes]
                if m.hint:
                    out.append(f"{indent}    = help: {m.hint}")
            else:
                out.append(f"{indent}({m.message})")
    for m in view.messages:
        out.append("")
        out.append(f"{WARN} {m.headline()}" + (f"  ({m.location})" if m.location else ""))
        if m.hint:
            out.append(f"    = help: {m.hint}")
    out.append("")
    out.append(f"{LOCK} frozen (partial: some frozen) \u00b7 {WARN} failed the check \u00b7 "
               "\u2190 inputs \u00b7 \u2192 output shape")
    return "\n".join(out) + "\n"
