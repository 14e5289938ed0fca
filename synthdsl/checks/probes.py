"""Symbolic dimensions, checked soundly: every node runs under two probe assignments.

The shape pass gives each symbolic dimension a probe size and runs the graph on meta
tensors. One assignment cannot tell a size that is fixed from one that only happens to
follow from a probe (``H - 2`` is a number like any other), so every node runs a
second time, right after the first, with other probe sizes (``ctx.probes2``):

* a size equal in both runs is fixed; one equal to a symbol's probe in both is that
  symbol; any other size *follows* from symbols, and reads as ``H-2``, ``4*T`` or ``?``;
* a layer whose constructed sizes differ between the runs (``Linear`` after
  ``Flatten`` of a map of symbolic size) would need parameters of a size nobody
  knows: S304, naming the symbols it depends on (found by moving one symbol at a
  time);
* a node that runs under one assignment and not under the other works only for some
  sizes: S304 as well.

Both runs also measure every tensor a node makes, inside parts too: what one sample
costs, with sizes that follow from symbols counted as 1 (``activations``), is what
the budget pass (S305) compares with its limit. And when a symbol stands for more than
a batch size, a small size that runs the whole graph is found (``example_dims``) for
compile's example inputs.
"""

from __future__ import annotations

import re
import weakref
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_flatten

from synthdsl.checks.context import CheckContext
from synthdsl.graph import SynthGraph
from synthdsl.lang.errors import SynthError
from synthdsl.library.layers import LAYERS, LayerArgError
from synthdsl.library.ops import OPS
from synthdsl.library.parts import UsedTensors

#: Sizes tried, in order, for the symbols that are more than a batch size when compile
#: needs example inputs; each is run through the whole graph on meta first.
EXAMPLE_SIZES = (32, 64, 128, 224, 256, 384, 512, 1024, 16, 8, 4, 2, 1)

#: The size a batch-like symbol (one that is only ever the first dimension of an input)
#: takes while example sizes are searched.
EXAMPLE_BATCH = 2


@dataclass
class Probed:
    """What running under two assignments found, per checked graph."""

    probes: dict[str, int] = field(default_factory=dict)
    probes2: dict[str, int] = field(default_factory=dict)
    #: node -> (shapes of the first run, shapes of the second), for each output node
    outputs: dict[str, tuple] = field(default_factory=dict)
    #: node -> (bytes of one sample, summed over the tensors it makes; the largest one's
    #: bytes; that tensor's shape as the spec spells it)
    activations: dict[str, tuple[int, int, tuple]] = field(default_factory=dict)
    #: symbol -> a size that runs the whole graph (empty: the batch size serves)
    example_dims: dict[str, int] = field(default_factory=dict)


_RECORDS: "weakref.WeakKeyDictionary[SynthGraph, Probed]" = weakref.WeakKeyDictionary()


def probed(graph: SynthGraph) -> Probed:
    """The record of a checked graph (an empty one if it was never checked)."""
    return _RECORDS.get(graph) or Probed()


def start(ctx: CheckContext) -> Probed:
    rec = _RECORDS[ctx.g] = Probed(dict(ctx.probes), dict(ctx.probes2))
    return rec


class Measured(UsedTensors):
    """Records the tensors a computation touches and the shapes of those it makes (not
    views, not results written in place into an input)."""

    def __init__(self) -> None:
        super().__init__()
        self.made: list[tuple[tuple, int]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        flat, _ = tree_flatten((args, kwargs or {}))
        self.ids.update(id(t) for t in flat if isinstance(t, torch.Tensor))
        out = func(*args, **(kwargs or {}))
        inputs = {id(t) for t in flat if isinstance(t, torch.Tensor)}
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and id(t) not in inputs and t._base is None \
                    and not isinstance(t, torch.nn.Parameter):
                self.made.append((tuple(t.shape), t.element_size()))
        return out


def per_sample(shape1: tuple, shape2: tuple | None, element: int) -> int:
    """Bytes of one sample of a tensor: the sizes both runs agree on, times the element."""
    n = element
    if shape2 is None or len(shape2) != len(shape1):
        return n * _prod(shape1[1:])
    for d1, d2 in zip(shape1, shape2):
        if d1 == d2:
            n *= d1
    return n


def _prod(dims) -> int:
    n = 1
    for d in dims:
        n *= int(d)
    return n


def record_activations(ctx: CheckContext, n: str, out1, out2, made1=None, made2=None) -> None:
    """One sample's bytes for the tensors node `n` makes (a part's: every one inside)."""
    rec = probed(ctx.g)
    if made1 is not None:
        pairs = list(zip(made1, made2)) if made2 is not None and len(made2) == len(made1) \
            else [(m, None) for m in made1]
    else:
        t1 = out1 if isinstance(out1, tuple) else (out1,)
        t2 = out2 if isinstance(out2, tuple) else (out2,)
        pairs = [((tuple(a.shape), a.element_size()), (tuple(b.shape), b.element_size()))
                 for a, b in zip(t1, t2)]
    total, largest, big = 0, 0, ()
    for (s1, e), second in pairs:
        b = per_sample(s1, second[0] if second else None, e)
        total += b
        if b > largest:
            largest, big = b, _spelled(ctx, s1, second[0] if second else None)
    rec.activations[n] = (total, largest, big)


def record_child(ctx: CheckContext, n: str, child: SynthGraph) -> None:
    """A spec source's part makes what the child spec makes, inside it."""
    acts = probed(child).activations.values()
    if acts:
        top = max(acts, key=lambda a: a[1])
        probed(ctx.g).activations[n] = (sum(a[0] for a in acts), top[1], top[2])


def _spelled(ctx: CheckContext, s1: tuple, s2: tuple | None) -> tuple:
    from synthdsl.checks.context import spell_dim
    if s2 is None or len(s1) != len(s2):
        return tuple(ctx.symbol_of.get(d, d) for d in s1)
    return tuple(str(x) if isinstance(x, str) else x for x in
                 (spell_dim(a, b, ctx.probes, ctx.probes2) for a, b in zip(s1, s2)))


# -- running a node again -----------------------------------------------------------


class Again(Exception):
    """A node that ran under the first assignment fails under another one."""

    def __init__(self, why: str, keys: tuple = ()) -> None:
        super().__init__(why)
        self.keys = keys  # a layer's sizes that moved


def run_cached(ctx: CheckContext, key, fn, args, error):
    """`fn(*args)` on meta tensors, remembered by `key` and the inputs' shapes."""
    sig = (key, tuple((tuple(a.shape), a.dtype) for a in args))
    try:
        hit = ctx.meta_outputs.get(sig)
    except TypeError:
        hit, sig = None, None
    if hit is not None:  # a new tensor object, as contiguous as torch.empty makes it
        return hit[2].detach()
    try:
        with torch.no_grad():
            out = fn(*args)
    except Exception as e:  # noqa: BLE001
        raise error(e) from None
    if sig is not None and isinstance(out, torch.Tensor):
        ctx.meta_outputs[sig] = (tuple(out.shape), out.dtype,
                                 torch.empty(out.shape, dtype=out.dtype, device="meta"))
    return out


def input_tensor(node, probes: dict[str, int]) -> torch.Tensor:
    """An input as a meta tensor of its declared type, symbols at the sizes `probes` give."""
    return torch.empty([probes[d] if isinstance(d, str) else d for d in node["dims"]],
                       dtype=getattr(torch, node.get("input_dtype", "float32")), device="meta")


def keyword_values(node, values: dict[str, Any]) -> dict[str, Any]:
    """A part's keyword data inputs (`t(x, attention_mask=m)`): keyword -> value, from the
    values of one run (a missing value is a KeyError, as a missing positional one)."""
    return {k: values[i] for k, i in (node.get("keywords") or {}).items()}


def again(ctx: CheckContext, n: str, node, args, probes: dict[str, int],
          measure: Measured | None = None, kwargs: dict[str, Any] | None = None):
    """Node `n`'s value under the assignment `probes`, with the modules the first run
    built; `Again` when it does not run, or (a layer) its sizes would differ. `kwargs`
    are a part's keyword data inputs under the same assignment."""
    kind = node["kind"]
    if kind == "input":
        try:
            return input_tensor(node, probes)
        except RuntimeError as e:  # sizes too large for a tensor
            raise Again(ctx.reason(e)) from None
    if kind in ("output", "loss"):
        return args[0]
    if kind == "item":
        return args[0][node["item"]]
    if kind == "part":
        return _part_again(ctx, n, node, args, probes, measure, kwargs or {})
    if kind == "layer":
        spec = LAYERS[node["layer"]]
        shared = node.get("shares")
        if shared is None:
            try:
                build = spec.constructor_args([tuple(a.shape) for a in args], node["options"])
            except LayerArgError as e:
                raise Again(str(e)) from None
            moved = tuple(k for k in build if build[k] != node["build"].get(k))
            if moved:
                raise Again("sizes", moved)
        module = ctx.layers[shared or n]
        key = ("again", id(module))
        return run_cached(ctx, key, module, args, lambda e: Again(ctx.reason(e)))
    if kind == "op":
        spec = OPS[node["op"]]
        options = {**spec.defaults(), **node["options"]}
        return run_cached(ctx, ("op", spec.name, tuple(sorted(options.items()))),
                          lambda *a: spec.fn(*a, **options), args,
                          lambda e: Again(ctx.reason(e)))
    raise Again(f"cannot run a {kind} node again")  # pragma: no cover


def _part_again(ctx: CheckContext, n, node, args, probes, measure, kwargs):
    if node["source"] in ctx.children:
        return spec_outputs(ctx, node, spec_arguments(ctx.children[node["source"]], args,
                                                      kwargs), second=probes is ctx.probes2)
    plan = ctx.plans.get(node.get("shares") or n)
    if plan is None:
        raise Again("the part was not planned")
    try:
        with torch.no_grad():
            if measure is not None:
                with measure:
                    out = plan.call(*args, **kwargs)
            else:
                out = plan.call(*args, **kwargs)
    except Exception as e:  # noqa: BLE001
        raise Again(ctx.reason(e)) from None
    if isinstance(out, (list, tuple)) and plan.outputs == len(out) \
            and all(isinstance(t, torch.Tensor) for t in out):
        out = out[0] if len(out) == 1 else tuple(out)
    return out


def spec_arguments(child: SynthGraph, args: list, kwargs: dict[str, Any]) -> list:
    """A spec source's arguments in the order of its inputs: the positional ones first,
    then its other inputs by name (`enc(image, mask=m)`); the check has matched them."""
    return [*args, *(kwargs[name] for name in child.inputs[len(args):] if name in kwargs)]


def spec_outputs(ctx: CheckContext, node, args, second: bool):
    """A spec source's outputs under the run's assignment: its symbols bound by the
    inputs, its fixed sizes as they are, sizes that follow from its own symbols as the
    child's own run gave them."""
    child = ctx.children[node["source"]]
    rec = probed(child)
    bound: dict[str, int] = {}
    for name, a in zip(child.inputs, args):
        for d, v in zip(child.nodes[name]["dims"], a.shape):
            if isinstance(d, str):
                bound.setdefault(d, int(v))
    outs = []
    for o in child.outputs:
        shape = child.nodes[o]["shape"]
        concrete = rec.outputs.get(o, (shape, shape))[1 if second else 0]
        syms = rec.probes2 if second else rec.probes
        dims = []
        for i, d in enumerate(shape):
            if isinstance(d, int):
                dims.append(d)
            elif d in bound:
                dims.append(bound[d])
            elif d in syms:
                dims.append(syms[d])
            else:
                dims.append(int(concrete[i]))
        outs.append(torch.empty(dims, device="meta"))
    return outs[0] if len(outs) == 1 else tuple(outs)


# -- what a symbol does -------------------------------------------------------------


def depends_on(ctx: CheckContext, n: str, test) -> list[str]:
    """The symbols that, moved one at a time, make `test(value or Again)` true at `n`."""
    import networkx as nx

    g = ctx.g
    upstream = nx.ancestors(g, n) | {n}
    order = [m for m in g.topological_order() if m in upstream and m in ctx.values]
    found = []
    for s in ctx.probes:
        assign = dict(ctx.probes)
        assign[s] = ctx.probes2[s]
        values: dict[str, Any] = {}
        outcome: Any = None
        for m in order + ([n] if n not in ctx.values else []):
            node = g.nodes[m]
            if node["kind"] in ("source", "checkpoint"):
                continue
            try:
                values[m] = again(ctx, m, node, [values[i] for i in node["inputs"]], assign,
                                  kwargs=keyword_values(node, values))
            except (Again, KeyError) as e:
                outcome = e if m == n else Again("upstream")
                break
            if m == n:
                outcome = values[m]
        if test(outcome):
            found.append(s)
    return found


def words(symbols: list[str]) -> str:
    if not symbols:
        return "a symbolic dimension"
    return symbols[0] if len(symbols) == 1 else ", ".join(symbols[:-1]) + " and " + symbols[-1]


#: A layer's torch sizes, as a spec reader knows them.
_SIZE_NAMES = {"in_features": "in_features", "in_channels": "in_channels",
               "num_features": "num_features", "normalized_shape": "normalized_shape"}


def symbolic_error(ctx: CheckContext, n: str, node, err: Again) -> SynthError:
    """S304: what would depend on which symbols, at the node's call."""
    if err.keys:
        keys = err.keys
        syms = depends_on(ctx, n, lambda out: isinstance(out, Again) and bool(out.keys))
        what = f"{node['layer']}'s {' and '.join(_SIZE_NAMES.get(k, k) for k in keys)}"
        shape = ctx.g.nodes[node["inputs"][0]].get("shape")
        return SynthError(
            "S304", f"{what} would depend on {words(syms)}: a layer's parameters need "
            "sizes fixed when it is built", ctx.call_span(node),
            notes=[f"its input {ctx.describe(node['inputs'][0])} has shape "
                   f"[{', '.join(map(str, shape or ()))}]"],
            hint=f"pool the symbolic dimensions away first (GlobalAvgPool), or give "
            f"{words(syms) if syms else 'them'} a fixed size in the input")
    syms = depends_on(ctx, n, lambda out: isinstance(out, Again))
    what = node["label"]
    return SynthError(
        "S304", f"'{what}' runs for some sizes of {words(syms)} but not for others",
        ctx.call_span(node), notes=[*ctx.described_inputs(node), str(err)],
        hint=f"give {words(syms) if syms else 'the symbolic dimensions'} a fixed size, "
        "or make what follows work for every size")


# -- example sizes ----------------------------------------------------------------------


def find_example_dims(ctx: CheckContext, limit: int) -> dict[str, int]:
    """Sizes for the symbols that are more than a batch: the first of `EXAMPLE_SIZES` under
    which every node runs and every layer keeps its sizes (on meta), and the values of
    the nodes take at most `limit` bytes in all."""
    g = ctx.g
    batch = {s for s in ctx.probes if all(
        all(not isinstance(d, str) or d != s or i == 0 for i, d in enumerate(g.nodes[i_]["dims"]))
        for i_ in g.of_kind("input"))}
    others = [s for s in ctx.probes if s not in batch]
    if not others:
        return {}
    order = [m for m in g.topological_order() if m in ctx.values]
    bounds = g.graph.get("dim_bounds", {})
    for size in EXAMPLE_SIZES:
        sized = {s: min(size, bounds.get(s, size)) for s in others}  # T<=20: at most 20
        assign = {s: sized.get(s, EXAMPLE_BATCH) for s in ctx.probes}
        values: dict[str, Any] = {}
        used = 0
        try:
            for m in order:
                node = g.nodes[m]
                values[m] = again(ctx, m, node, [values[i] for i in node["inputs"]], assign,
                                  kwargs=keyword_values(node, values))
                if node["kind"] in ("input", "part", "layer", "op"):
                    out = values[m] if isinstance(values[m], tuple) else (values[m],)
                    used += sum(t.numel() * t.element_size() for t in out)
                if used > limit:
                    raise Again("too big")
        except (Again, KeyError):
            continue
        return sized
    return {}


def bound_hint(ctx: CheckContext, module: nn.Module, error: Exception, args, kwargs=None
               ) -> str | None:
    """For a part that failed on a symbolic size no bound limits (its `error` names the
    symbol): how to say its largest (a table of positions in the part gives it)."""
    reason = ctx.reason(error)
    bounds = ctx.g.graph.get("dim_bounds", {})
    values = [*args, *(kwargs or {}).values()]
    free = [d for v in values if isinstance(v, torch.Tensor)
            for i, d in enumerate(ctx.shape_of(v)) if i > 0 and isinstance(d, str)
            and d in ctx.probes and d not in bounds
            and re.search(rf"(?<![\w.]){re.escape(d)}(?![\w.])", reason)]
    if not free:
        return None
    s = free[-1]
    table = next((m.num_embeddings for k, m in module.named_modules()
                  if isinstance(m, nn.Embedding) and "position" in k), None)
    has = f"it has {table} positions" if table else "a text model's positions, say"
    return (f"the check runs '{s}' at sizes as large as {ctx.probes[s]}; if the part has a "
            f"largest size there ({has}), bound '{s}' where it is declared: "
            f"[..., {s}<={table or 512}]")
