"""Training sets: `freeze` / `train` / `optimize` rules over qualified tensor names, later
rules winning.

A pattern is a glob (``r18.layer4.*``; naming a module covers everything below
it), the name of a part or layer value, or a timm feature stage
(``r50@stage2``). A pattern that matches nothing is an error (S401) unless it
may name tensors of something the check could not build. `train ... with` and
`optimize ... with` options become per-parameter options; `optimize` sets them
without thawing anything (a frozen tensor stays frozen). Adapter statements
(resolved by the adapters pass) apply in their place among the rules; the norm
policy freezes or trains normalisation layers last. Writes
``graph.graph["frozen"]`` (sorted names), ``graph.graph["param_options"]`` and,
per node, ``frozen_params`` and ``trainable_params``.
"""

from __future__ import annotations

from typing import Any, Iterable

from synthdsl.checks.context import CheckContext, pattern_matches
from synthdsl.graph.counts import count_params
from synthdsl.lang.errors import SynthError, did_you_mean
from synthdsl.lang.options import TRAIN_OPTIONS
from synthdsl.library.layers import is_norm
from synthdsl.library.cache import sources_of


def check_training(ctx: CheckContext) -> None:
    """Resolve the rules into the frozen set and the per-parameter options."""
    g = ctx.g
    names = ctx.tensor_names()
    frozen = dict.fromkeys(names, False)
    options: dict[str, dict[str, Any]] = {}
    for s, child in ctx.children.items():  # a spec source brings its own training sets
        for k in child.graph.get("frozen", ()):
            if f"{s}.{k}" in frozen:
                frozen[f"{s}.{k}"] = True
        for k, opt in child.graph.get("param_options", {}).items():
            if f"{s}.{k}" in frozen:
                options[f"{s}.{k}"] = dict(opt)
    prefixes = ctx.prefixes
    for rule in g.graph["rules"]:
        if rule["action"] == "adapt":
            for k, v in ctx.adapted.get(id(rule), {}).items():
                frozen[k] = v
                options.pop(k, None) if v else None
            continue
        for key, value in rule["options"].items():
            span = rule["option_spans"][key]
            if key not in TRAIN_OPTIONS:
                ctx.err("S402", f"{rule['action']} has no option '{key}'", span,
                        hint=did_you_mean(key, TRAIN_OPTIONS)
                        or "its options: " + ", ".join(TRAIN_OPTIONS))
            elif not TRAIN_OPTIONS[key].accepts(value):
                ctx.err("S402", f"{rule['action']} option '{key}' expects "
                        f"{TRAIN_OPTIONS[key].expects}, found {value!r}", span)
        for pattern, span in rule["patterns"]:
            matched = match_at(ctx, pattern, names, span)
            if matched is None:
                continue
            if not matched:
                if ctx.may_name_broken(pattern):
                    continue  # the names of a broken part are unknown; do not guess
                hint = did_you_mean(pattern.rstrip(".*"), prefixes)
                ctx.err("S401", f"{rule['action']} pattern '{pattern}' matches no "
                        "parameter", span,
                        hint=hint or "patterns match qualified names such as "
                        + ", ".join(f"'{p}'" for p in list(prefixes)[:3]))
            for k in matched:
                if rule["action"] == "optimize":  # options only: frozen stays frozen
                    options.setdefault(k, {}).update(rule["options"])
                    continue
                frozen[k] = rule["action"] == "freeze"
                if rule["action"] == "train" and rule["options"]:
                    options.setdefault(k, {}).update(rule["options"])
                elif rule["action"] == "freeze":
                    options.pop(k, None)
    policy = g.graph.get("policies", {}).get("norm", {}).get("value")
    if policy in ("frozen", "train"):
        for k in _norm_tensors(ctx, buffers_only=policy == "train"):
            if k in frozen:
                frozen[k] = policy == "frozen"
    g.graph["frozen"] = sorted(k for k, v in frozen.items() if v)
    g.graph["param_options"] = {k: options[k] for k in sorted(options)}
    frozen_set = set(g.graph["frozen"])
    for n in g.nodes:
        node = g.nodes[n]
        if "parameters" in node:
            node["frozen_params"] = count_params(node["parameters"], frozen_set)[1]
            node["trainable_params"] = node["params"] - node["frozen_params"]


def _norm_tensors(ctx: CheckContext, buffers_only: bool = False) -> set[str]:
    """Qualified names of the tensors of every normalisation layer in the model."""
    out = set()
    for path, module in ctx.installed().items():
        for name, m in module.named_modules():
            if is_norm(m):
                prefix = f"{path}.{name}" if name else path
                tensors = [] if buffers_only else [k for k, _ in
                                                   m.named_parameters(recurse=False)]
                tensors += [k for k, _ in m.named_buffers(recurse=False)]
                out.update(f"{prefix}.{k}" for k in tensors)
    return out


def match_at(ctx: CheckContext, pattern: str, names: Iterable[str], span) -> list[str] | None:
    """`match`, with a pattern's own problem reported at its span (then None)."""
    try:
        return match(ctx, pattern, names)
    except SynthError as e:
        ctx.errors.add(SynthError(e.code, e.message, span, e.hint))
        return None


def match(ctx: CheckContext, pattern: str, names: Iterable[str]) -> list[str]:
    """Names a freeze/train pattern selects: a glob, a value's name, or `source@stageN`."""
    g = ctx.g
    if pattern in g and g.nodes[pattern]["kind"] in ("part", "layer"):
        return sorted(set(g.nodes[pattern].get("parameters", {}))
                      | set(g.nodes[pattern].get("buffers", {})))
    if "@" in pattern:
        return _match_stage(ctx, pattern, names)
    return [k for k in names if pattern_matches(k, pattern)]


def _match_stage(ctx: CheckContext, pattern: str, names: Iterable[str]) -> list[str]:
    """`r50@stage2`: the modules of timm feature stage 2 (and what runs between stages)."""
    source, _, stage = pattern.partition("@")
    model = ctx.models.get(source)
    if model is None:
        raise SynthError("S401", f"'{source}' in '{pattern}' is not a model source",
                         hint=did_you_mean(source, ctx.models))
    info = sources_of(ctx.g).kind(source).feature_info(model)  # the source kind's stages
    if not stage.startswith("stage") or not stage[5:].isdigit() \
            or int(stage[5:]) >= len(info):
        raise SynthError("S401", f"'{pattern}' names no stage: '{source}' has stages "
                         f"{source}@stage0 to {source}@stage{len(info) - 1}",
                         hint="its stages: " + ", ".join(
                             f"{i}={d.get('module')}" for i, d in enumerate(info)))
    k = int(stage[5:])
    # a stage is every top-level module from after the previous stage's module to its own
    order = list(model._modules)
    ends = [order.index(d["module"].split(".")[0]) for d in info
            if d["module"].split(".")[0] in order]
    if len(ends) != len(info):
        raise SynthError("S401", f"the stages of '{source}' are not whole modules; freeze "
                         "them by name instead")
    tops = order[(ends[k - 1] + 1 if k else 0):ends[k] + 1]
    nested = info[k]["module"].split(".")
    if len(nested) > 1:  # stages inside one container, e.g. `stages.2` or `features.6`
        prev = info[k - 1]["module"] if k else None
        tops = _siblings(model, prev, info[k]["module"])
        if k == 0 or prev.split(".")[0] != nested[0]:
            tops = [m for m in order[:ends[k]]
                    if k == 0 or order.index(m) > ends[k - 1]] + tops
    prefixes = [f"{source}.{t}" for t in tops]
    return [n for n in names if any(n == p or n.startswith(p + ".") for p in prefixes)]


def _siblings(model, prev: str | None, module: str) -> list[str]:
    """The children of `module`'s container from after `prev` (when it is in the same
    container; else from the first) up to `module` itself: what runs in the stage."""
    parent, _, leaf = module.rpartition(".")
    order = list(model.get_submodule(parent)._modules)
    before, _, prev_leaf = (prev or "").rpartition(".")
    start = order.index(prev_leaf) + 1 if prev and before == parent and prev_leaf in order \
        else 0
    return [f"{parent}.{m}" for m in order[start:order.index(leaf) + 1]]
