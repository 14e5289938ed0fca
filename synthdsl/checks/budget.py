"""The budget: a model too big for any machine is refused by the check, at its cause.

The check knows, on meta, every parameter a compiled module would hold and every tensor
one sample makes on its way through (inside parts too; `checks.probes` measures them).
Sizes the meta device accepts but no allocator could serve are refused here (S305)
before anything real is built, at the statement or option that makes them big:

* **params**: the parameters the module installs, float32 (4 bytes each), LoRA adapters
  included, and each source model as a whole (compile builds a source whole);
* **activations**: what one sample makes, summed over every tensor of the forward pass
  (sizes that follow from symbolic dimensions count as 1, so this is a lower bound);
* **batch**: one sample's activations times a batch size (`batch_problem`, for
  ``synth train --batch-size``).

The limits are ``Budget()`` unless ``SYNTH_BUDGET`` (``params=16GiB,activations=8GiB``)
or :func:`budget_limits` (a ``with`` block, for library callers and the ``--budget``
flag) says otherwise.

>>> Budget().params // 2 ** 30
8
"""

from __future__ import annotations

from synthdsl.checks.context import CheckContext
from synthdsl.checks.probes import probed
from synthdsl.graph import SynthGraph
from synthdsl.lang.budget import (BUDGET_HELP, ENV, Budget, budget_limits, current_budget,
                                  fmt_bytes, parse_budget, parse_size)
from synthdsl.lang.errors import SynthError, fmt_shape
from synthdsl.library.peft import adapter_of

__all__ = ["BUDGET_HELP", "ELEMENT", "ENV", "Budget", "activation_bytes", "batch_problem",
           "budget_limits", "check_budget", "current_budget", "fmt_bytes",
           "parse_budget", "parse_size"]

#: Bytes per parameter and per activation value (float32).
ELEMENT = 4


def _raise(key: str, flag_value: int) -> str:
    return (f"raise the budget with --budget {key}={fmt_bytes(flag_value).replace(' ', '')} "
            f"(or {ENV}={key}=...), or make it smaller")


def _roomy(n: int) -> int:
    """A limit above `n`: the next power of two bytes."""
    return 1 << max(n - 1, 1).bit_length()


# -- where a size comes from ----------------------------------------------------------


def _largest_option(node) -> str | None:
    """The option with the largest number (a list counts as the product of its items)."""
    best, best_key = 0, None
    for k, v in node.get("options", {}).items():
        items = v if isinstance(v, tuple) else (v,)
        if not items or not all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                for x in items):
            continue
        size = 1
        for x in items:
            size *= abs(x)
        if size > best:
            best, best_key = size, k
    return best_key


def blame_span(ctx: CheckContext, n: str):
    """Where a node is made big: an input's largest size, a call's largest option."""
    node = ctx.g.nodes[n]
    if node["kind"] == "input":
        fixed = [(d, i) for i, d in enumerate(node["dims"]) if isinstance(d, int)]
        return ctx.dim_span(n, max(fixed)[1]) if fixed else node["span"]
    key = _largest_option(node)
    if key is not None and key in node.get("option_spans", {}):
        return node["option_spans"][key]
    return node.get("span")


def _what(ctx: CheckContext, n: str) -> str:
    node = ctx.g.nodes[n]
    if node["kind"] == "input":
        return f"input '{node['name']}'"
    if node["kind"] == "source":
        return f"source '{n}' ({node['target']})"
    return f"{ctx.describe(n)} ({node['label']})"


def input_too_big(ctx: CheckContext, n: str, node) -> SynthError | None:
    """An input whose one sample alone is over the activation budget (checked before
    its meta tensor is made: a size this large may not even fit torch's sizes)."""
    dtype = node.get("input_dtype", "float32")
    per = {"float16": 2, "bfloat16": 2, "int64": 8, "bool": 1}.get(dtype, ELEMENT)
    for d in node["dims"]:
        if isinstance(d, int):
            per *= d
    limit = current_budget().activations
    if per <= limit:
        return None
    return SynthError(
        "S305", f"one sample of input '{node['name']}' takes {fmt_bytes(per)}, over the "
        f"budget of {fmt_bytes(limit)} for one sample's activations", blame_span(ctx, n),
        notes=[f"'{node['name']}' has shape {fmt_shape(node['dims'])} ({dtype})"],
        hint=_raise("activations", _roomy(per)))


# -- the pass -------------------------------------------------------------------------------


def check_budget(ctx: CheckContext) -> None:
    """Refuse parameters or one sample's activations over the budget (S305)."""
    budget = current_budget()
    _check_params(ctx, budget)
    _check_activations(ctx, budget)


def _lora(name: str) -> bool:
    return adapter_of(name) is not None


def _check_params(ctx: CheckContext, budget: Budget) -> None:
    g = ctx.g
    reported: set[str] = set()
    for s in g.of_kind("source"):
        node = g.nodes[s]
        if s in ctx.broken or node.get("constructor") == "spec":
            continue
        size = int(node.get("params", 0)) * ELEMENT
        if size > budget.params:
            reported.add(s)
            ctx.err("S305", f"source '{s}' ({node['target']}) has {fmt_bytes(size)} of "
                    f"parameters, over the budget of {fmt_bytes(budget.params)}",
                    blame_span(ctx, s),
                    notes=[f"{int(node['params']):,} float32 parameters; compile builds a "
                           "source whole"],
                    hint=_raise("params", _roomy(size)))
    shares: dict[str, int] = {}   # what each node or adapt statement adds, in values
    spans: dict[str, object] = {}
    for n in g.nodes:
        node = g.nodes[n]
        if node.get("kind") in ("part", "layer") and n not in ctx.broken:
            shares[n] = sum(v for k, v in node.get("parameters", {}).items() if not _lora(k))
    names = ctx.names or {}
    for i, rule in enumerate(g.graph.get("rules", [])):
        effect = ctx.adapted.get(id(rule))
        if rule.get("action") == "adapt" and effect:
            key = f"adapt:{i}"
            shares[key] = sum(names.get(k, 0) for k in effect if _lora(k))
            spans[key] = rule.get("option_spans", {}).get("rank", rule.get("span"))
    total = sum(shares.values()) * ELEMENT
    if total <= budget.params or not shares:
        return
    top = max(shares, key=shares.get)
    if top in g and g.nodes[top].get("source") in reported:
        return  # its source is reported already
    if top in spans:
        what, span = "the LoRA adapters of this statement", spans[top]
    else:
        what, span = _what(ctx, top), blame_span(ctx, top)
    ctx.err("S305", f"the model has {fmt_bytes(total)} of parameters, over the budget of "
            f"{fmt_bytes(budget.params)}; the largest share, "
            f"{fmt_bytes(shares[top] * ELEMENT)}, is {what}",
            span, notes=[f"{sum(shares.values()):,} float32 parameters in all"],
            hint=_raise("params", _roomy(total)))


def _check_activations(ctx: CheckContext, budget: Budget) -> None:
    acts = probed(ctx.g).activations
    order = [n for n in ctx.g.topological_order() if n in acts]
    for n in order:  # the first tensor over the budget is where it goes wrong
        total, largest, shape = acts[n]
        if largest > budget.activations:
            ctx.err("S305", f"{_what(ctx, n)} makes a tensor of {fmt_bytes(largest)} for one "
                    f"sample, over the budget of {fmt_bytes(budget.activations)} for one "
                    "sample's activations", blame_span(ctx, n),
                    notes=[f"the tensor has shape {fmt_shape(shape)} (float32, per sample)"],
                    hint=_raise("activations", _roomy(largest)))
            return
    total = sum(a[0] for a in acts.values())
    if total > budget.activations and order:
        top = max(order, key=lambda n: acts[n][0])
        ctx.err("S305", f"one sample's activations come to {fmt_bytes(total)}, over the budget "
                f"of {fmt_bytes(budget.activations)}; {_what(ctx, top)} makes "
                f"{fmt_bytes(acts[top][0])} of them", blame_span(ctx, top),
                notes=["summed over every tensor the forward pass makes (float32; sizes "
                       "that follow from symbolic dimensions count as 1)"],
                hint=_raise("activations", _roomy(total)))


# -- for callers after the check ----------------------------------------------------------


def activation_bytes(graph: SynthGraph) -> int:
    """Bytes one sample makes on its way through a checked graph (see the module's note)."""
    return sum(a[0] for a in probed(graph).activations.values())


def batch_problem(graph: SynthGraph, batch_size: int,
                  budget: Budget | None = None) -> SynthError | None:
    """S305 when `batch_size` samples' activations are over the batch budget (for
    ``synth train --batch-size``); None when they fit."""
    budget = budget or current_budget()
    per = activation_bytes(graph)
    need = per * int(batch_size)
    if need <= budget.batch:
        return None
    return SynthError(
        "S305", f"a batch of {batch_size:,} samples needs {fmt_bytes(need)} of activations "
        f"({fmt_bytes(per)} per sample), over the budget of {fmt_bytes(budget.batch)} for "
        "one batch", None, hint=f"use a smaller --batch-size, or " + _raise(
            "batch", _roomy(need)).replace(", or make it smaller", ""))
