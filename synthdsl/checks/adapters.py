"""Adapters: `adapt PATTERN with METHOD(...)` statements resolved to the tensors they add.

LoRA adds two small matrices to every Linear or Conv2d layer a pattern matches
and freezes the layer's own weight and bias; `bias` trains only the biases.
A layer may hold several LoRA adapters of different names (``lora(name="sketch")``);
one name given twice to a layer is S403, at the second statement.
The adapter tensors join the check's tensor table (`CheckContext.tensor_names`)
and the parameters of the node that installs the layer. Writes
``graph.graph["adapters"]`` (module, method, rank, alpha per adapted layer) and
leaves, per statement, what it freezes (True) or trains (False) on
``ctx.adapted`` for the training pass, which applies it in statement order.
``prune`` and ``quantize`` add nothing to train: their options are checked here and
what they name by :mod:`synthdsl.checks.compress`.
"""

from __future__ import annotations

from synthdsl.checks.context import CheckContext
from synthdsl.checks.training import match_at
from synthdsl.lang.errors import did_you_mean
from synthdsl.lang.options import ADAPT_METHODS, COMPRESS_METHODS
from synthdsl.library.peft import ADAPTABLE, DEFAULT, NAME, key, lora_shapes


def check_adapters(ctx: CheckContext) -> None:
    """Check each adapt statement's method and options, and resolve what it adapts."""
    names = ctx.tensor_names()
    resolved = []
    modules = None
    first: dict[str, object] = {}  # adapter key (layer:name) -> where it was first given
    for rule in ctx.g.graph["rules"]:
        if rule["action"] != "adapt":
            continue
        method, opts = rule["method"], rule["options"]
        if method not in ADAPT_METHODS:
            ctx.err("S402", f"unknown adapter '{method}'", rule["method_span"],
                    hint=did_you_mean(method, ADAPT_METHODS)
                    or "adapters: " + ", ".join(ADAPT_METHODS))
            continue
        allowed = ADAPT_METHODS[method]
        bad = next((k for k in opts if k not in allowed), None)
        if bad is not None:
            ctx.err("S402", f"{method} has no option '{bad}'", rule["option_spans"][bad],
                    hint=did_you_mean(bad, allowed) or (
                        "its options: " + ", ".join(allowed) if allowed else
                        "it takes no options"))
            continue
        if method in COMPRESS_METHODS:
            continue  # no tensors to add or train: the compression pass resolves these
        lora = ADAPT_METHODS["lora"]
        rank = opts.get("rank", lora["rank"].default)
        alpha = opts.get("alpha", rank)  # the scale alpha / rank is 1 unless alpha is given
        if method == "lora" and not lora["rank"].accepts(rank):
            ctx.err("S402", f"lora rank expects {lora['rank'].expects}, found {rank!r}",
                    rule["option_spans"].get("rank", rule["span"]))
            continue
        if method == "lora" and not lora["alpha"].accepts(alpha):
            ctx.err("S402", f"lora alpha expects {lora['alpha'].expects}, found {alpha!r}",
                    rule["option_spans"].get("alpha", rule["span"]))
            continue
        dropout = opts.get("dropout", 0.0)
        if method == "lora" and not lora["dropout"].accepts(dropout):
            ctx.err("S402", f"lora dropout expects {lora['dropout'].expects}, found "
                    f"{dropout!r}", rule["option_spans"].get("dropout", rule["span"]))
            continue
        name = opts.get("name", DEFAULT)
        if method == "lora" and not (isinstance(name, str) and NAME.fullmatch(name)):
            ctx.err("S402", "lora name expects a word of letters, digits and _ that starts "
                    f"with a letter (at most 64), found {name!r}",
                    rule["option_spans"].get("name", rule["span"]))
            continue
        effect: dict[str, bool] = {}
        for pattern, span in rule["patterns"]:
            matched = match_at(ctx, pattern, names, span)
            if matched is None:
                continue
            if method == "bias":
                if not any(k.endswith(".bias") for k in matched):
                    ctx.err("S401", f"adapt pattern '{pattern}' matches no bias", span)
                effect.update({k: not k.endswith(".bias") for k in matched})
                continue
            modules = modules if modules is not None else ctx.all_modules()
            targets = sorted({k.rsplit(".", 1)[0] for k in matched if k.endswith(".weight")
                              and isinstance(modules.get(k.rsplit(".", 1)[0]), ADAPTABLE)})
            if not targets:
                ctx.err("S401", f"adapt pattern '{pattern}' matches no Linear or Conv2d "
                        "layer", span, hint="LoRA adapts Linear and Conv2d layers")
                continue
            for t in targets:
                if key(t, name) in first:
                    ctx.err("S403", f"'{t}' already has the LoRA adapter "
                            f"'{name}'", span, notes=[f"first given at {first[key(t, name)]}"],
                            hint='a layer holds several adapters of different names: '
                                 'lora(rank=8, name="other")')
                    continue
                try:
                    shapes = lora_shapes(modules[t], rank, name)
                except ValueError as e:
                    ctx.err("S402", f"cannot adapt '{t}': {e}", span)
                    continue
                first[key(t, name)] = span
                for pname, shape in shapes.items():
                    numel = 1
                    for d in shape:
                        numel *= d
                    names[f"{t}.{pname}"] = numel
                    effect[f"{t}.{pname}"] = False
                    _own(ctx, t, f"{t}.{pname}", numel)
                for k in (f"{t}.weight", f"{t}.bias"):
                    if k in names:
                        effect[k] = True
                resolved.append({"module": t, "method": "lora", "rank": rank,
                                 "alpha": alpha, "dropout": float(dropout),
                                 **({"name": name} if name != DEFAULT else {})})
        ctx.adapted[id(rule)] = effect
    ctx.g.graph["adapters"] = resolved


def _own(ctx: CheckContext, module: str, name: str, numel: int) -> None:
    """Attribute a new tensor (an adapter's) to the node that installs `module`."""
    for n in ctx.g.nodes:
        node = ctx.g.nodes[n]
        if f"{module}.weight" in node.get("parameters", {}):
            node["parameters"][name] = numel
            node["params"] += numel
            return
