"""Inheritance: every `inherit` statement mapped tensor by tensor, with shapes, before any read.

The donor's tensors come from a checkpoint's header or from a fresh meta
instance of a timm source; the target's from the installed meta module. They
are paired by name (after ``rename``) or by order, each pair is run through the
shape transform on meta (rows, channel adaptation, interpolation), and every
mismatch is reported (S207) with both tensors named. The mapping is written on
the statement's record (``mapping``, ``skipped``, ``target_path``, ``mode``,
``donor_label``) and summed on its inherit edge (``tensors``, ``params``,
``mode``). Skipped when the check reads no weights.
"""

from __future__ import annotations

from pathlib import Path

import torch

from synthdsl.checks.context import CheckContext
from synthdsl.lang.errors import did_you_mean
from synthdsl.lang.options import INHERIT_OPTIONS, spoken
from synthdsl.library.cache import sources_of
from synthdsl.library.sources import _reason
from synthdsl.library.rename import Renamer, RenameTimeout, rename_problem
from synthdsl.library.weights import persistent_tensors, transform
from synthdsl.library.zoo_maps import ZOO_MAPS, donor_shape, map_by_zoo


def check_inheritance(ctx: CheckContext) -> None:
    """Map every inherit statement; a statement that cannot be mapped is an S207."""
    if not ctx.weights or not ctx.g.graph.get("inherits"):
        return
    g = ctx.g
    modules = ctx.all_modules()
    for rec in g.graph.get("inherits", []):
        opts, spans = rec["options"], rec["option_spans"]
        bad = next((k for k in opts if k not in INHERIT_OPTIONS), None)
        if bad is not None:
            ctx.err("S402", f"inherit has no option '{bad}'", spans[bad],
                    hint=did_you_mean(bad, INHERIT_OPTIONS)
                    or "its options: " + ", ".join(INHERIT_OPTIONS))
            continue
        problem = inherit_option_problem(opts)
        if problem:
            key, msg = problem
            ctx.err("S402", msg, spans.get(key, rec["span"]))
            continue
        target = rec["target"]
        tnode = g.nodes[target]
        if tnode["kind"] not in ("part", "layer") or tnode.get("shares"):
            ctx.err("S208", f"'{tnode['name']}' is made by {tnode['kind']} "
                    f"'{tnode['label']}'; only parts and new layers inherit tensors",
                    rec["target_span"])
            continue
        if target in ctx.broken or rec["donor"] in ctx.broken:
            continue
        tpath = ".".join((tnode["module"], *rec["sub"]))
        targets = _target_tensors(ctx, target, tpath)
        if not targets and tpath not in modules:
            ctx.err("S202", f"'{tnode['name']}' has no submodule "
                    f"'{'.'.join(rec['sub'])}'", rec["target_span"],
                    hint=did_you_mean(tpath, modules))
            continue
        donor = _donor_tensors(ctx, rec)
        if donor is None:
            continue
        if opts.get("map") == "order" and str(g.nodes[rec["donor"]].get(
                "weights", "")).endswith(".safetensors") \
                and g.nodes[rec["donor"]]["kind"] == "checkpoint":
            ctx.err("S207", "a safetensors file does not keep the order of its tensors, so "
                    "it cannot be mapped by order", spans["map"],
                    hint="map it by name with rename=[...], or use the .pt/.pth file")
            continue
        strip = ".".join(rec["donor_path"]) + "." if rec["donor_path"] else ""
        try:
            mapping, problems, skipped = map_tensors(targets, donor, opts, strip)
        except RenameTimeout as e:
            ctx.err("S402", str(e), spans.get("rename", rec["span"]),
                    hint="write the pattern without nested repetition, e.g. "
                    "'[a-z0-9_.]*Z' for '([a-z0-9_.]|[a-z0-9_.])*Z'")
            continue
        mapped = []
        for tname, key in mapping:
            what = key if isinstance(key, str) else " + ".join(key)  # q + k + v, joined
            try:
                shape = donor_shape(donor, key)
                out, done = transform(torch.empty(shape, device="meta"), targets[tname],
                                      opts.get("rows"), opts.get("adapt"),
                                      opts.get("prefix_tokens"))
            except (IndexError, ValueError, RuntimeError) as e:
                problems.append(f"'{what}' cannot become '{tpath}.{tname}' "
                                f"{list(targets[tname])}: {e}")
                continue
            if not isinstance(key, str):
                done = ["join q, k, v (dim 0)"] + [d for d in done if d != "copy"]
            if tuple(out.shape) != targets[tname]:
                problems.append(f"'{what}' has shape {list(shape)}"
                                + (f" ({', '.join(done)}: {list(out.shape)})"
                                   if done != ["copy"] else "")
                                + f", '{tpath}.{tname}' has {list(targets[tname])}")
                continue
            mapped.append({"target": f"{tpath}.{tname}", "key": key,
                           "transform": ", ".join(done), "numel": out.numel()})
        strict = opts.get("strict", True)
        if problems or (strict and skipped):
            what = rec.get("donor_label") or _donor_label(ctx, rec)
            notes = problems + skipped
            ctx.err("S207", f"'{tpath}' cannot inherit from {what}"
                    + ("" if problems else " strictly"), rec["span"],
                    notes=notes[:12] + ([f"... and {len(notes) - 12} more"]
                                        if len(notes) > 12 else []),
                    hint=None if problems else "say strict=false to copy what fits and "
                    "list the rest, or map names with map=\"order\" / rename=[...]")
            continue
        if skipped:
            ctx.warn("W002", f"'{tpath}' inherits {len(mapped)} tensors from "
                     f"{_donor_label(ctx, rec)}; {len(skipped)} skipped (strict=false)",
                     rec["span"], notes=skipped[:12])
        rec.update(mapping=mapped, skipped=skipped, target_path=tpath,
                   mode="strict" if strict else "partial",
                   donor_label=_donor_label(ctx, rec))
        edge = g.edges[rec["donor"], target]
        edge["tensors"] = edge.get("tensors", 0) + len(mapped)
        edge["params"] = edge.get("params", 0) + sum(m["numel"] for m in mapped)
        edge["mode"] = "partial" if not strict or edge.get("mode") == "partial" else "strict"


def _target_tensors(ctx: CheckContext, target: str, tpath: str) -> dict[str, tuple]:
    """The tensors the target node installs at or below `tpath`, by name relative to it:
    a part installs only what it uses (a method or a cut keeps the modules its trace
    calls, at their own paths), so they are read from what the node installs."""
    part = ctx.plans.get(target)
    roots = part.modules if part is not None else {
        ctx.g.nodes[target]["module"]: ctx.layers[target]} if target in ctx.layers else {}
    out: dict[str, tuple] = {}
    for path, module in roots.items():
        for name, t, _ in persistent_tensors(module):
            full = f"{path}.{name}"
            if full.startswith(tpath + "."):
                out[full[len(tpath) + 1:]] = tuple(t.shape)
    return out


def _donor_label(ctx: CheckContext, rec) -> str:
    if rec["donor"].startswith("checkpoint:"):
        return f"checkpoint '{ctx.g.nodes[rec['donor']]['weights_text']}'"
    return "'" + ".".join((rec["donor"], *rec["donor_path"])) + "'"


def _donor_tensors(ctx: CheckContext, rec) -> dict[str, tuple[int, ...]] | None:
    """Keys (as the donor's weights name them) and shapes of what the donor offers."""
    node = ctx.g.nodes[rec["donor"]]
    if node["kind"] == "checkpoint":
        path = Path(node["weights"])
        if not path.exists():
            ctx.err("S203", f"checkpoint '{node['weights_text']}' does not exist",
                    rec["donor_span"], hint="a relative path starts at the spec's folder")
            return None
        try:
            return sources_of(ctx.g).shapes(path)  # the reader compile reads tensors from
        except Exception as e:  # noqa: BLE001 - the user's file
            ctx.err("S203", f"cannot read checkpoint '{node['weights_text']}': "
                    f"{_reason(e)}", rec["donor_span"])
            return None
    model = ctx.models.get(rec["donor"])
    if model is not None:  # as timm built it: a stage cut may have pruned the part's
        model = sources_of(ctx.g).pristine(rec["donor"])
    if model is None:
        if node.get("constructor") == "spec":
            ctx.err("S208", "inherit from a module of a timm source or a checkpoint; "
                    f"'{rec['donor']}' is a spec", rec["donor_span"])
        return None
    path = ".".join(rec["donor_path"])
    try:
        module = model.get_submodule(path) if path else model
    except AttributeError:
        ctx.err("S202", f"'{rec['donor']}' has no submodule '{path}'", rec["donor_span"],
                hint=did_you_mean(path, dict(model.named_modules())))
        return None
    prefix = f"{path}." if path else ""
    return {prefix + n: tuple(t.shape) for n, t, _ in persistent_tensors(module)}


def inherit_option_problem(opts: dict) -> tuple[str, str] | None:
    """The first option of an inherit statement whose value is wrong: (option, message)."""
    maps = INHERIT_OPTIONS["map"].choices
    if "map" in opts and opts["map"] not in maps:
        return "map", f'inherit map= is {spoken(maps)}, found {opts["map"]!r}'
    if "rename" in opts:
        r = opts["rename"]
        problem = rename_problem(r) if isinstance(r, tuple) else \
            'inherit rename= takes pairs of strings: ["regex", "replacement", ...]'
        if problem:
            return "rename", problem
    if "rows" in opts:
        r = opts["rows"]
        ok = (isinstance(r, int) and not isinstance(r, bool) and r > 0) or (
            isinstance(r, tuple) and r and all(isinstance(i, int) and not isinstance(i, bool)
                                               for i in r))
        if not ok:
            return "rows", ("inherit rows= takes a count (the first N rows) or a list of row "
                            f"indices, found {r!r}")
    adapt_modes = INHERIT_OPTIONS["adapt"].choices
    if "adapt" in opts and opts["adapt"] not in adapt_modes:
        return "adapt", ("inherit adapt= is one of " + ", ".join(f'"{m}"' for m in adapt_modes)
                         + f", found {opts['adapt']!r}")
    if "strict" in opts and not isinstance(opts["strict"], bool):
        return "strict", f"inherit strict= is true or false, found {opts['strict']!r}"
    if "prefix_tokens" in opts and not (isinstance(opts["prefix_tokens"], int)
                                        and opts["prefix_tokens"] >= 0):
        return "prefix_tokens", "inherit prefix_tokens= is a whole number ≥ 0"
    return None


def map_tensors(targets: dict[str, tuple], donor: dict[str, tuple], opts: dict,
                strip: str = "") -> tuple[list[tuple[str, str]], list[str], list[str]]:
    """Pair target tensors (local names) with donor keys: by name (after `rename`) or by
    order. Returns the pairs, count problems, and what is left unpaired on either side."""
    renamed: dict[str, str] = {}
    rename = Renamer(opts.get("rename", ()))  # RenameTimeout: S402 at rename=, by the caller
    for key in donor:
        name = key[len(strip):] if strip and key.startswith(strip) else key
        new = rename(key) if rename.rules else None
        renamed[name if new is None else new] = key
    if opts.get("map") in ZOO_MAPS:  # one zoo's names into another's, by a fixed table
        return map_by_zoo(targets, donor, strip)
    if opts.get("map", "name") == "order":
        tkeys, dkeys = list(targets), list(donor)
        n = min(len(tkeys), len(dkeys))
        mapping = list(zip(tkeys[:n], dkeys[:n]))
        skipped = [f"'{k}' of the target has no counterpart (map by order)" for k in tkeys[n:]]
        skipped += [f"'{k}' of the donor is not used (map by order)" for k in dkeys[n:]]
        return mapping, [], skipped
    mapping = [(t, renamed[t]) for t in targets if t in renamed]
    used = {k for _, k in mapping}
    skipped = [f"'{t}' of the target is not in the donor" for t in targets if t not in renamed]
    skipped += [f"'{k}' of the donor is not used" for k in donor if k not in used]
    return mapping, [], skipped
