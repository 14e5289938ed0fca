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

>>> parse_budget("params=16GiB, activations=1.5GB").params
17179869184
>>> fmt_bytes(3 * 2 ** 30)
'3 GiB'
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import re
from dataclasses import dataclass, replace
from typing import Iterator

from synthdsl.checks.context import CheckContext
from synthdsl.checks.probes import probed
from synthdsl.graph import SynthGraph
from synthdsl.lang.errors import SynthError, fmt_shape

GiB = 2 ** 30

#: The environment variable that sets the limits: ``params=16GiB,activations=8GiB``.
ENV = "SYNTH_BUDGET"

#: Bytes per parameter and per activation value (float32).
ELEMENT = 4


@dataclass(frozen=True)
class Budget:
    """Limits in bytes. The defaults take a ViT-L (1.2 GB of float32) with room to spare."""

    params: int = 8 * GiB          #: the parameters of the compiled module, or of one source
    activations: int = 4 * GiB     #: what one sample makes on its way through
    batch: int = 1024 * GiB        #: one batch's activations (a training step)


_UNITS = {"": 1, "b": 1, "k": 10 ** 3, "kb": 10 ** 3, "m": 10 ** 6, "mb": 10 ** 6,
          "g": 10 ** 9, "gb": 10 ** 9, "t": 10 ** 12, "tb": 10 ** 12, "kib": 2 ** 10,
          "mib": 2 ** 20, "gib": 2 ** 30, "tib": 2 ** 40, "pib": 2 ** 50, "pb": 10 ** 15}


def parse_size(text: str) -> int:
    """``16GiB`` -> bytes; decimal (GB) and binary (GiB) units, a plain number is bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    if m is None or m.group(2).lower() not in _UNITS:
        raise ValueError(f"expected a size such as 16GiB, 500MB or 1000000, found {text!r}")
    value = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if value < 1:
        raise ValueError(f"expected a size of at least one byte, found {text!r}")
    return value


def parse_budget(text: str, base: Budget | None = None) -> Budget:
    """``params=16GiB,activations=8GiB`` over `base` (the defaults): each key once."""
    base = base or Budget()
    fields = {"params", "activations", "batch"}
    changes: dict[str, int] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or key not in fields:
            raise ValueError(f"expected KEY=SIZE with KEY one of params, activations, batch; "
                             f"found {item!r}")
        if key in changes:
            raise ValueError(f"{key} is given twice")
        changes[key] = parse_size(value)
    return replace(base, **changes)


def budget_arg(text: str) -> str:
    """The ``--budget`` flag's argparse type: the text, once it parses (else a usage error)."""
    import argparse

    try:
        parse_budget(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


#: Help text of the ``--budget`` flag.
BUDGET_HELP = ("limits of the check, e.g. params=16GiB,activations=8GiB,batch=2TiB "
               "(defaults 8GiB, 4GiB, 1TiB; also SYNTH_BUDGET)")


_CURRENT: contextvars.ContextVar[Budget | None] = contextvars.ContextVar("synth_budget",
                                                                          default=None)


def current_budget() -> Budget:
    """The limits in force: a `budget_limits` block, else ``SYNTH_BUDGET``, else defaults."""
    chosen = _CURRENT.get()
    if chosen is not None:
        return chosen
    env = os.environ.get(ENV)
    if env:
        try:
            return parse_budget(env)
        except ValueError as e:
            raise SynthError("S402", f"{ENV}: {e}") from None
    return Budget()


@contextlib.contextmanager
def budget_limits(budget: Budget | str | None = None, **sizes: int | str) -> Iterator[Budget]:
    """Check with other limits inside the block: ``budget_limits("params=16GiB")``,
    ``budget_limits(params=16 * 2**30)`` or a `Budget`."""
    chosen = current_budget() if budget is None else (
        parse_budget(budget, current_budget()) if isinstance(budget, str) else budget)
    if sizes:
        chosen = replace(chosen, **{k: parse_size(v) if isinstance(v, str) else int(v)
                                    for k, v in sizes.items()})
    token = _CURRENT.set(chosen)
    try:
        yield chosen
    finally:
        _CURRENT.reset(token)


def fmt_bytes(n: int) -> str:
    """Bytes as people read them: ``3 GiB``, ``1.5 TiB``, ``512 bytes``."""
    for unit, size in (("EiB", 2 ** 60), ("PiB", 2 ** 50), ("TiB", 2 ** 40), ("GiB", 2 ** 30),
                       ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if n >= size:
            v = n / size
            return f"{v:.0f} {unit}" if v == int(v) or v >= 100 else f"{v:.1f} {unit}"
    return f"{n} bytes"


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
    per = ELEMENT
    for d in node["dims"]:
        if isinstance(d, int):
            per *= d
    limit = current_budget().activations
    if per <= limit:
        return None
    return SynthError(
        "S305", f"one sample of input '{node['name']}' takes {fmt_bytes(per)}, over the "
        f"budget of {fmt_bytes(limit)} for one sample's activations", blame_span(ctx, n),
        notes=[f"'{node['name']}' has shape {fmt_shape(node['dims'])} (float32)"],
        hint=_raise("activations", _roomy(per)))


# -- the pass -------------------------------------------------------------------------------


def check_budget(ctx: CheckContext) -> None:
    """Refuse parameters or one sample's activations over the budget (S305)."""
    budget = current_budget()
    _check_params(ctx, budget)
    _check_activations(ctx, budget)


def _lora(name: str) -> bool:
    return name.endswith((".lora_A", ".lora_B"))


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
