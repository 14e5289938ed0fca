"""A table of a checked graph: one row per node, with shapes, parameters and training state.

Reads only the graph, like every consumer after the check.
"""

from __future__ import annotations

from pathlib import Path

from synthdsl.graph import SynthGraph
from synthdsl.graph.counts import all_parameters, count_params
from synthdsl.lang.errors import fmt_shape
from synthdsl.viz.describe import keyword_inputs


def _count(n: int) -> str:
    return f"{n:,}"


def _state(params: int, trainable: int) -> str:
    if params == 0:
        return "-"
    if trainable == params:
        return "trainable"
    return "frozen" if trainable == 0 else "partial"


def summary_rows(graph: SynthGraph) -> list[dict]:
    rows = []
    for n in graph.topological_order():
        node = graph.nodes[n]
        kind = node["kind"]
        if kind in ("source", "checkpoint"):
            what = node["label"] + (" (weights)" if node.get("weights") and kind == "source"
                                    else "")
        elif kind == "input":
            dtype = node.get("input_dtype", "float32")
            what = "input" if dtype == "float32" else f"input {dtype}"
        elif kind == "output":
            what = f"output '{node['name']}'"
        else:  # a part's keyword data inputs too: `t(mask=mask)`
            what = node["label"] + keyword_inputs(node)
        has = "params" in node and kind in ("part", "layer") and not node.get("shares")
        rows.append({
            "node": n, "kind": kind, "what": what,
            "shape": fmt_shape(node["shape"]) if "shape" in node else
            " ".join(fmt_shape(s) for s in node["shapes"]) if "shapes" in node else
            ("-" if kind in ("source", "checkpoint") else "?"),
            "params": node["params"] if has else None,
            "trainable": node.get("trainable_params") if has else None,
            "frozen": node.get("frozen_params") if has else None,
            "line": node["span"].line,
        })
    return rows


def totals(graph: SynthGraph) -> dict[str, int]:
    """Parameter totals of the compiled module: each tensor counted once."""
    total, n_frozen = count_params(all_parameters(graph), set(graph.graph.get("frozen", ())))
    return {"params": total, "trainable": total - n_frozen, "frozen": n_frozen}


def adapter_rows(graph: SynthGraph) -> list[dict]:
    """Each LoRA adapter the spec gives, by name in the order given: its layers, ranks and
    parameters."""
    from synthdsl.library.peft import DEFAULT, param_names

    sizes = all_parameters(graph)
    rows: dict[str, dict] = {}
    for a in graph.graph.get("adapters", []):
        name = a.get("name", DEFAULT)
        row = rows.setdefault(name, {"name": name, "layers": 0, "ranks": [], "params": 0})
        row["layers"] += 1
        if a["rank"] not in row["ranks"]:
            row["ranks"].append(a["rank"])
        row["params"] += sum(sizes.get(f"{a['module']}.{p}", 0) for p in param_names(name))
    return list(rows.values())


def render_summary(graph: SynthGraph) -> str:
    rows = summary_rows(graph)
    header = ["node", "kind", "what", "output shape", "params", "trainable", "frozen", "state"]
    table = [header]
    for r in rows:
        if r["params"] is None:
            nums = ["", "", "", ""]
        else:
            nums = [_count(r["params"]), _count(r["trainable"]), _count(r["frozen"]),
                    _state(r["params"], r["trainable"])]
        table.append([r["node"], r["kind"], r["what"], r["shape"], *nums])
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    right = {4, 5, 6}

    def line(row):
        cells = [c.rjust(w) if i in right else c.ljust(w)
                 for i, (c, w) in enumerate(zip(row, widths))]
        return "  ".join(cells).rstrip()

    out = [f"synth {graph.name}", "", line(header), line(["-" * w for w in widths])]
    out += [line(row) for row in table[1:]]
    t = totals(graph)
    out.append("")
    out.append(f"total: {_count(t['params'])} parameters, {_count(t['trainable'])} trainable, "
               f"{_count(t['frozen'])} frozen")
    if adapters := adapter_rows(graph):
        out.append("adapters: " + ", ".join(
            f"{a['name']} ({a['layers']} layer{'s' if a['layers'] != 1 else ''}, rank "
            f"{'/'.join(map(str, a['ranks']))}, {_count(a['params'])} parameters)"
            for a in adapters))
    return "\n".join(out)


def render_provenance(model) -> str:
    """Where every tensor of a compiled module comes from, grouped by module."""
    rows = []
    for name, t in model.state_dict().items():
        p = model.provenance.get(name, {"origin": "?"})
        origin = p.get("origin", "?")
        if origin == "checkpoint":
            where = f"{p.get('source', '')} <- {_short(p.get('file'))}:{p.get('key')}"
        elif origin == "inherited":
            where = f"{p.get('from')} <- {_short(p.get('file'))}:{p.get('key')}"
        elif origin in ("new", "init"):
            where = p.get("initialiser", "")
        elif origin == "merge":
            where = f"{p.get('source', '')} <- {p.get('method')} of " + ", ".join(
                _short(i.get("file")) for i in p.get("inputs", ())) + f":{p.get('key')}"
        else:
            where = p.get("model", "")
        rows.append((name, fmt_shape(t.shape), origin, where,
                     p.get("transform", "")))
    header = ("tensor", "shape", "origin", "from", "transform")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(5)]
    out = ["  ".join(c.ljust(w) for c, w in zip(header, widths)).rstrip(),
           "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    counts: dict[str, int] = {}
    for r in rows:
        counts[r[2]] = counts.get(r[2], 0) + 1
    files = sorted({(p.get("file"), p.get("sha256")) for p in model.provenance.values()
                    if p.get("file")} | {(i.get("file"), i.get("sha256"))
                                         for p in model.provenance.values()
                                         for i in p.get("inputs", ()) if i.get("file")})
    out.append("")
    out.append("tensors by origin: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    for f, h in files:
        out.append(f"  {f}  sha256 {h}")
    return "\n".join(out)


def _short(path) -> str:

    return Path(path).name if path else "?"
