"""Compression: `adapt PATTERN with prune(...)` / `quantize(...)` resolved to the layers
they change.

A prune statement names the Linear and Conv layers whose output channels (features)
Torch-Pruning may remove; a quantize statement the layers made int8. Both are checked
here, before anything is built: each option against its table (S402), each pattern
against the model (S401 where it names no tensor, or no layer of a kind the method
changes), a layer whose values are an output of the spec (its size must stay: S403), a
layer that also has a LoRA adapter (S403), more than one quantisation mode (S403), and
pruning without Torch-Pruning installed (S404). Writes ``graph.graph["compression"]``: per
statement the method, its options (defaults filled in), the layers and the line (for
quantize every Linear and Conv named, so that another mode can be measured; dynamic
quantisation leaves the convolutions float).
"""

from __future__ import annotations

import importlib.util

from torch import nn

from synthdsl.checks.context import CheckContext
from synthdsl.checks.training import match_at
from synthdsl.lang.errors import did_you_mean
from synthdsl.lang.options import ADAPT_METHODS, COMPRESS_METHODS, spoken
from synthdsl.library.prune import has_heads

#: The layers each method changes; dynamic quantisation covers Linear layers only.
PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
QUANTIZABLE = {"dynamic": (nn.Linear,), "static": (nn.Linear, nn.Conv1d, nn.Conv2d),
               "qat": (nn.Linear, nn.Conv1d, nn.Conv2d)}
VERB = {"prune": "prune", "quantize": "quantise"}
INSTALL_HINT = "install the optional dependencies: pip install 'synthdsl[compress]'"


def pruning_available() -> bool:
    """Whether Torch-Pruning (the `compress` extra) can be imported."""
    return importlib.util.find_spec("torch_pruning") is not None


def check_compression(ctx: CheckContext) -> None:
    """Check every prune and quantize statement and resolve the layers it changes."""
    names = ctx.tensor_names()
    lora = {a["module"] for a in ctx.g.graph.get("adapters", [])}
    outputs = set(ctx.g.graph.get("output_names", ()))
    modules = None
    plans, modes = [], {}
    for rule in ctx.g.graph["rules"]:
        if rule["action"] != "adapt" or rule["method"] not in COMPRESS_METHODS:
            continue
        method, opts = rule["method"], _options(ctx, rule)
        if opts is None:
            continue
        if method == "prune" and not pruning_available():
            ctx.err("S404", "prune(...) needs Torch-Pruning, which is not installed",
                    rule["method_span"], hint=INSTALL_HINT)
            continue
        if method == "quantize":
            modes.setdefault(opts["mode"], rule)
            if len(modes) > 1:
                first = next(iter(modes))
                ctx.err("S403", f"a spec quantises in one mode: '{opts['mode']}' here, "
                        f"'{first}' at line {modes[first]['span'].line}",
                        rule["option_spans"].get("mode", rule["span"]))
                continue
        kinds = PRUNABLE if method == "prune" else QUANTIZABLE[opts["mode"]]
        modules = modules if modules is not None else ctx.all_modules()
        layers: list[str] = []
        for pattern, span in rule["patterns"]:
            matched = match_at(ctx, pattern, names, span)
            if matched is None:
                continue
            if not matched:
                if not ctx.may_name_broken(pattern):
                    ctx.err("S401", f"adapt pattern '{pattern}' matches no parameter", span,
                            hint=did_you_mean(pattern.rstrip(".*"), ctx.prefixes or []))
                continue
            found = _layers(matched, modules, kinds)
            if not found:
                ctx.err("S401", f"adapt pattern '{pattern}' names no {_kinds(kinds)} layer "
                        f"to {VERB[method]}", span,
                        hint=_why_none(method, opts, matched, modules))
                continue
            if method == "prune":
                fixed = [m for m in found if m.split(".")[0] in outputs
                         and ctx.g.nodes.get(m.split(".")[0], {}).get("kind") == "layer"]
                if fixed and len(fixed) == len(found):
                    ctx.err("S403", f"cannot prune '{fixed[0]}': its values are the output "
                            f"'{fixed[0].split('.')[0]}', whose size the spec declares",
                            span, hint="prune the layers before it; pruning keeps the "
                            "outputs' shapes")
                    continue
                found = [m for m in found if m not in fixed]
                if opts.get("heads") is not None:
                    found = [m for m in found if _attention_qkv(m, modules)]
                    if not found:
                        ctx.err("S401", f"adapt pattern '{pattern}' names no attention "
                                "layer whose heads can be pruned", span,
                                hint="name attention modules with a fused qkv projection "
                                     "(timm's Attention: vit.blocks.*.attn) of a source used "
                                     "whole or as a submodule part; a cut (at=, stages) is "
                                     "traced and keeps no head count")
                        continue
            if clash := sorted(set(found) & lora):
                ctx.err("S403", f"'{clash[0]}' has a LoRA adapter and cannot also be "
                        f"{'pruned' if method == 'prune' else 'quantised'}", span,
                        hint="compress the model after merging its adapters "
                        "(merge_adapters()), or adapt other layers")
                continue
            if method == "quantize":  # every Linear and Conv: dynamic skips the convolutions
                found = _layers(matched, modules, QUANTIZABLE["static"])
            layers += [m for m in found if m not in layers]
        if layers:
            plans.append({"method": method, "options": opts, "modules": layers,
                          "line": rule["span"].line})
    ctx.g.graph["compression"] = plans


def _attention_qkv(layer: str, modules: dict) -> bool:
    """`layer` is the fused ``qkv`` projection of an attention module with a head count."""
    path, _, last = layer.rpartition(".")
    return last == "qkv" and path in modules and has_heads(modules[path])


def _options(ctx: CheckContext, rule: dict) -> dict | None:
    """The statement's options with the defaults filled in; None after an S402."""
    table = ADAPT_METHODS[rule["method"]]
    given = [k for k in rule["options"] if k in ("ratio", "macs", "heads")]  # as written
    if rule["method"] == "prune" and len(given) > 1:
        ctx.err("S402", "prune takes one of ratio= (the share of each layer's channels "
                "removed), macs= (the share of the model's MACs kept) and heads= (the share "
                f"of attention heads removed), not {' and '.join(given)}",
                rule["option_spans"][given[1]], hint="drop all but one")
        return None
    out = {}
    for name, option in table.items():
        value = rule["options"].get(name, option.default)
        if value is None and name not in rule["options"]:  # an option with no default
            continue
        if not option.accepts(value):
            ctx.err("S402", f"{rule['method']} {name} expects {option.expects}, found "
                    f"{value!r}", rule["option_spans"].get(name, rule["span"]))
            return None
        out[name] = value
    return out


def _layers(matched: list[str], modules: dict[str, nn.Module], kinds: tuple) -> list[str]:
    """The layers of `kinds` whose weights are among the matched tensor names."""
    return sorted({k.rsplit(".", 1)[0] for k in matched if k.endswith(".weight")
                   and isinstance(modules.get(k.rsplit(".", 1)[0]), kinds)})


def _kinds(kinds: tuple) -> str:
    return spoken(sorted({k.__name__.rstrip("123d") if k is not nn.Linear else "Linear"
                          for k in kinds}, reverse=True), quote=False)


def _why_none(method: str, opts: dict, matched: list[str], modules: dict) -> str:
    if method == "quantize" and opts["mode"] == "dynamic" and _layers(
            matched, modules, QUANTIZABLE["static"]):
        return 'dynamic quantisation covers Linear layers; for convolutions use mode="static"'
    if method == "prune":
        return "pruning removes output channels of Linear and Conv layers"
    return "quantisation makes Linear and Conv layers int8"
