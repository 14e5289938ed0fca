"""What changed between two checked specs, by meaning rather than by text.

``synth diff A.synth B.synth`` compares the two graphs the check made: the header, the
inputs (shape, element type), the sources (kind, architecture, options, weights), every
value (what it calls, from which values, its options, output shape and parameters), the
losses, outputs and recipe, and which parameters changed between frozen and trainable —
collapsed to the largest modules whose every tensor changed the same way, with element
counts — and the parameter totals. Values are paired by structure first (what they call,
with which options, on the structures of what they read), then by name, so reformatting,
comments, moving statements or writing a chain inline instead of naming its steps gives
no difference. Reads only the graphs, like every consumer after the check.

>>> from synthdsl.lang.parse import parse_spec
>>> from synthdsl.graph import build_graph
>>> a = build_graph(parse_spec("synth A\\ninput x: [B, 8]\\ny = Linear(x, out=4)\\noutput y\\n"))
>>> b = build_graph(parse_spec("synth A\\ninput x: [B, 8]\\n# wider\\n"
...                            "y = Linear(x, out=6)\\noutput y\\n"))
>>> [(c.section, c.name, c.change, c.fields) for c in spec_diff(a, b).changes]
[('values', 'y', 'changed', {'options': ({'out': 4}, {'out': 6})})]
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from synthdsl.graph import SynthGraph
from synthdsl.graph.counts import all_parameters
from synthdsl.lang.errors import fmt_shape
from synthdsl.viz.summary import totals

#: The order sections are shown in.
SECTIONS = ("spec", "inputs", "sources", "values", "losses", "outputs", "recipe", "training")


@dataclass
class Change:
    """One difference: a thing `added`, `removed` or `changed` (then `fields` holds each
    changed field's value before and after)."""

    section: str
    name: str
    change: str
    fields: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)  #: what an added/removed thing is

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"section": self.section, "name": self.name,
                               "change": self.change}
        if self.fields:
            out["fields"] = {k: {"before": _plain(a), "after": _plain(b)}
                             for k, (a, b) in self.fields.items()}
        if self.facts:
            out["facts"] = {k: _plain(v) for k, v in self.facts.items()}
        return out


@dataclass
class SpecDiff:
    """Every difference between two specs, and their parameter totals."""

    changes: list[Change]
    totals: tuple[dict[str, int], dict[str, int]]

    @property
    def same(self) -> bool:
        return not self.changes

    def as_dict(self) -> dict[str, Any]:
        return {"same": self.same, "changes": [c.as_dict() for c in self.changes],
                "totals": {"before": self.totals[0], "after": self.totals[1]}}


def _plain(v: Any) -> Any:
    """A value as JSON can hold it (shapes as lists, spans never)."""
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, Mapping):
        return {str(k): _plain(x) for k, x in v.items()}
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    return str(v)


# ---- facts of each thing ---------------------------------------------------------------


def _data_inputs(g: SynthGraph, n: str) -> tuple[str, ...]:
    """The values a node reads, in argument order (keyword inputs as ``name=value``)."""
    found = []
    for src, _, attrs in g.in_edges(n, data=True):
        if attrs.get("kind") != "data":
            continue
        for pos in attrs.get("positions", ()) or ():
            found.append((0, pos, _value_name(g, src)))
        for key in attrs.get("keywords", ()) or ():
            found.append((1, key, f"{key}={_value_name(g, src)}"))
    return tuple(name for *_, name in sorted(found, key=lambda t: (t[0], str(t[1]))))


def _value_name(g: SynthGraph, n: str) -> str:
    return g.nodes[n].get("name", n) if g.nodes[n]["kind"] == "input" else n


def _shape(node: Mapping[str, Any]) -> str | None:
    if "shape" in node:
        return fmt_shape(node["shape"])
    if "shapes" in node:
        return " ".join(fmt_shape(s) for s in node["shapes"])
    return None


def _source_facts(node: Mapping[str, Any]) -> dict[str, Any]:
    facts = {"what": node.get("label"), "options": dict(node.get("options", {}))}
    weights = node.get("weights_text") or node.get("weights")
    if weights:
        facts["weights"] = weights
    files = [f["text"] for f in node.get("files", ())]
    if files:
        facts["files"] = files
    if node.get("pretrained"):
        facts["pretrained"] = True
    return facts


def _value_facts(g: SynthGraph, n: str) -> dict[str, Any]:
    node = g.nodes[n]
    facts: dict[str, Any] = {"what": node.get("label"), "inputs": _data_inputs(g, n),
                             "options": {k: v for k, v in node.get("options", {}).items()}}
    if (shape := _shape(node)) is not None:
        facts["shape"] = shape
    if node.get("kind") in ("part", "layer") and "params" in node and not node.get("shares"):
        facts["params"] = node["params"]
    if node.get("shares"):
        facts["shares"] = node["shares"]
    return facts


def _things(g: SynthGraph) -> dict[str, dict[str, dict[str, Any]]]:
    """section -> name -> facts, for everything a diff compares by name."""
    out: dict[str, dict[str, dict[str, Any]]] = {s: {} for s in SECTIONS}
    out["spec"]["synth"] = {"name": g.graph.get("name")}
    losses = Counter()
    for n in g.nodes:
        node = g.nodes[n]
        kind = node["kind"]
        if kind == "input":
            out["inputs"][node["name"]] = {"shape": _shape(node),
                                           "dtype": node.get("input_dtype", "float32")}
            bounds = g.graph.get("dim_bounds", {})
            if bounded := [f"{d}<={bounds[d]}" for d in node["dims"] if d in bounds]:
                out["inputs"][node["name"]]["bounds"] = ", ".join(bounded)
        elif kind in ("source", "checkpoint"):
            out["sources"][n] = _source_facts(node)
        elif kind == "output":
            out["outputs"][node["name"]] = {"shape": _shape(node)}
        elif kind == "loss":
            # losses have no names: the k-th loss of a kind is compared with the k-th
            losses[node["name"]] += 1
            key = node["name"] + (f"#{losses[node['name']]}" if losses[node["name"]] > 1 else "")
            out["losses"][key] = {"inputs": _data_inputs(g, n),
                                  "options": dict(node.get("options", {}))}
        else:
            out["values"][n] = _value_facts(g, n)
    for k, v in (g.graph.get("recipe") or {}).items():
        out["recipe"][k] = {"value": v}
    if g.graph.get("norm_policy") not in (None, "follow"):
        out["recipe"]["policy norm"] = {"value": g.graph["norm_policy"]}
    return out


# ---- trainability ----------------------------------------------------------------------


def collapse(changed: Iterable[str], universe: Mapping[str, int]) -> list[tuple[str, int]]:
    """The largest module prefixes all of whose parameters (in `universe`) are in
    `changed`, each with the elements it covers.

    >>> collapse(["a.x.w", "a.x.b", "a.y.w"], {"a.x.w": 4, "a.x.b": 2, "a.y.w": 3, "a.z.w": 1})
    [('a.x', 6), ('a.y', 3)]
    """
    changed = set(changed)
    in_all, in_changed = Counter(), Counter()
    for name in universe:
        for p in _prefixes(name):
            in_all[p] += 1
            if name in changed:
                in_changed[p] += 1
    picked: dict[str, int] = {}
    for name in sorted(changed):
        top = next(p for p in _prefixes(name) if in_changed[p] == in_all[p])
        if top not in picked:
            picked[top] = sum(n for k, n in universe.items()
                              if k == top or k.startswith(top + "."))
    return sorted(picked.items())


def _prefixes(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def _training_changes(a: SynthGraph, b: SynthGraph) -> list[Change]:
    sa, sb = all_parameters(a), all_parameters(b)
    fa, fb = set(a.graph.get("frozen", ())), set(b.graph.get("frozen", ()))
    both = {k: v for k, v in sb.items() if k in sa}
    froze = [k for k in both if k not in fa and k in fb]
    thawed = [k for k in both if k in fa and k not in fb]
    changes = []
    for name, n in collapse(froze, both):
        changes.append(Change("training", name, "changed", {"state": ("trainable", "frozen")},
                              {"elements": n}))
    for name, n in collapse(thawed, both):
        changes.append(Change("training", name, "changed", {"state": ("frozen", "trainable")},
                              {"elements": n}))
    oa, ob = a.graph.get("param_options") or {}, b.graph.get("param_options") or {}
    moved = {k for k in both if oa.get(k, {}) != ob.get(k, {})}
    by_options: dict[tuple, list[str]] = {}
    for k in moved:
        key = (tuple(sorted(oa.get(k, {}).items())), tuple(sorted(ob.get(k, {}).items())))
        by_options.setdefault(key, []).append(k)
    for (before, after), names in sorted(by_options.items()):
        for name, n in collapse(names, both):
            changes.append(Change("training", name, "changed",
                                  {"options": (dict(before), dict(after))}, {"elements": n}))
    return changes


# ---- matching values -------------------------------------------------------------------


def _reads(g: SynthGraph, n: str) -> list[tuple[int, str, str]]:
    """What a node reads: (0, position, node) and (1, keyword, node) for each data edge."""
    reads = []
    for src, _, attrs in g.in_edges(n, data=True):
        if attrs.get("kind") != "data":
            continue
        reads += [(0, str(pos), src) for pos in attrs.get("positions", ()) or ()]
        reads += [(1, str(key), src) for key in attrs.get("keywords", ()) or ()]
    return sorted(reads)


def _own(g: SynthGraph, n: str) -> tuple:
    """What a node is, apart from what it reads: kind, callee, options."""
    node = g.nodes[n]
    return (node["kind"], node.get("label"), repr(sorted(node.get("options", {}).items())))


def structure_keys(g: SynthGraph) -> dict[str, tuple]:
    """Each value's structure: what it calls with which options, applied to the structures
    of what it reads (inputs and sources by name). Two values of two specs with one key
    compute the same thing however the specs name or nest them."""
    keys: dict[str, tuple] = {}
    for n in g.topological_order():
        node = g.nodes[n]
        if node["kind"] in ("input", "source", "checkpoint"):
            keys[n] = (node["kind"], node.get("name", n))
            continue
        reads = tuple((k, slot, keys.get(src)) for k, slot, src in _reads(g, n))
        shares = keys.get(node["shares"]) if node.get("shares") else None
        keys[n] = (*_own(g, n), reads, shares)
    return keys


def match_values(a: SynthGraph, b: SynthGraph
                 ) -> tuple[list[tuple[str, str, bool]], list[str], list[str]]:
    """Values of `a` paired with values of `b`, in three passes: those of one structure;
    then, along the data flow, a value reading the counterparts of what the other reads
    (the same callee, the same options preferred); then those left with one name. The
    flag of a pair says whether the names of what they read may be told apart from a
    change (False: paired by name alone). Returns the pairs and what is left of each."""
    ka, kb = structure_keys(a), structure_keys(b)
    values = lambda g: [n for n in g.topological_order()  # noqa: E731
                        if g.nodes[n]["kind"] not in _NOT_VALUES]
    order_a, order_b = values(a), values(b)
    waiting: dict[tuple, list[str]] = {}
    for n in order_b:
        waiting.setdefault(kb[n], []).append(n)
    pairs = [(n, waiting[ka[n]].pop(0), True) for n in order_a if waiting.get(ka[n])]
    counterpart = {n: n for n in a.nodes if a.nodes[n]["kind"] in _NOT_VALUES and n in b}
    counterpart.update({x: y for x, y, _ in pairs})
    taken = set(counterpart.values())
    for x in order_a:  # along the data flow: a changed value, and what follows it
        if x in counterpart:
            continue
        reads = [(k, slot, counterpart.get(src)) for k, slot, src in _reads(a, x)]
        if any(src is None for *_, src in reads) or not reads:
            continue
        found = [y for y in order_b if y not in taken and
                 [(k, slot, src) for k, slot, src in _reads(b, y)] == reads]
        best = ([y for y in found if _own(b, y) == _own(a, x)]
                or [y for y in found if _own(b, y)[:2] == _own(a, x)[:2]])
        if best:
            counterpart[x] = best[0]
            taken.add(best[0])
            pairs.append((x, best[0], True))
    left_a = [n for n in order_a if n not in counterpart]
    left_b = [n for n in order_b if n not in taken]
    named = set(left_a) & set(left_b)
    pairs += [(n, n, False) for n in left_a if n in named]
    return pairs, [n for n in left_a if n not in named], [n for n in left_b if n not in named]


#: Node kinds that are not values of the data flow (compared in their own sections).
_NOT_VALUES = ("input", "source", "checkpoint", "output", "loss")


def _field_changes(before: Mapping[str, Any], after: Mapping[str, Any],
                   ignore: Iterable[str] = ()) -> dict[str, tuple[Any, Any]]:
    return {k: (before.get(k), after.get(k)) for k in dict.fromkeys([*before, *after])
            if k not in ignore and before.get(k) != after.get(k)}


# ---- the diff --------------------------------------------------------------------------


def spec_diff(a: SynthGraph, b: SynthGraph) -> SpecDiff:
    """Every difference from spec `a` to spec `b` (both built, ideally checked: shapes and
    parameter counts come from the check)."""
    ta, tb = _things(a), _things(b)
    changes: list[Change] = []
    for section in SECTIONS[:-1]:
        before, after = ta[section], tb[section]
        if section == "values":
            changes += _value_changes(a, b, before, after)
            continue
        for name in before:
            if name not in after:
                changes.append(Change(section, name, "removed", facts=before[name]))
        for name in after:
            if name not in before:
                changes.append(Change(section, name, "added", facts=after[name]))
            elif before[name] != after[name]:
                changes.append(Change(section, name, "changed",
                                      _field_changes(before[name], after[name])))
    changes += _training_changes(a, b)
    return SpecDiff(changes, (totals(a), totals(b)))


def _value_changes(a: SynthGraph, b: SynthGraph, before: Mapping[str, dict],
                   after: Mapping[str, dict]) -> list[Change]:
    pairs, removed, added = match_values(a, b)
    changes = [Change("values", n, "removed", facts=before[n]) for n in removed]
    for x, y, same_structure in pairs:
        # one structure: the names of what it reads may differ, not what it computes
        fields = _field_changes(before[x], after[y], ("inputs",) if same_structure else ())
        if fields:
            changes.append(Change("values", y if x == y else f"{x} -> {y}", "changed", fields))
    changes += [Change("values", n, "added", facts=after[n]) for n in added]
    return changes


# ---- text ------------------------------------------------------------------------------


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, str):
        return v
    if isinstance(v, Mapping):
        return "(" + ", ".join(f"{k}={_fmt(x)}" for k, x in v.items()) + ")" if v else "()"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    return "none" if v is None else str(v)


def _facts_text(facts: Mapping[str, Any]) -> str:
    bits = []
    for k, v in facts.items():
        if v in (None, {}, (), []):
            continue
        if k in ("what", "shape", "value"):
            bits.append(_fmt(v))
        elif k == "inputs":
            bits.append("from " + ", ".join(v))
        elif k == "elements":
            bits.append(f"{v:,} elements")
        elif k == "params":
            bits.append(f"{v:,} params")
        else:
            bits.append(f"{k} {_fmt(v)}")
    return "  ".join(bits)


def render_diff(diff: SpecDiff, a: str = "a", b: str = "b") -> str:
    """The diff as text: one line per change, grouped by section, then the totals."""
    if diff.same:
        return f"{a} and {b} describe the same model"
    lines = [f"--- {a}", f"+++ {b}"]
    mark = {"added": "+", "removed": "-", "changed": "~"}
    for section in SECTIONS:
        here = [c for c in diff.changes if c.section == section]
        if not here:
            continue
        lines.append(section)
        for c in here:
            if c.change == "changed":
                text = "; ".join(f"{k} {_fmt(x)} -> {_fmt(y)}" for k, (x, y) in c.fields.items())
                if c.facts:
                    text += "  (" + _facts_text(c.facts) + ")"
            else:
                text = _facts_text(c.facts)
            lines.append(f"  {mark[c.change]} {c.name}" + (f"  {text}" if text else ""))
    (ta, tb) = diff.totals
    lines.append("totals")
    for k in ("params", "trainable", "frozen"):
        delta = tb[k] - ta[k]
        lines.append(f"  {k:<9} {ta[k]:>14,} -> {tb[k]:>14,}"
                     + (f"  ({delta:+,})" if delta else ""))
    return "\n".join(lines)
