"""Shapes: every node run on meta tensors in topological order.

Inputs become meta tensors (symbolic dimensions get their probe size), parts
run their plan on the source's meta model, new layers are built on meta with
sizes inferred from their inputs, operations check their inputs' shapes first,
losses check their values. Each node's output shape is written on the graph
(``shape``, or ``shapes`` for several values) and on its outgoing data edges;
parts and layers record their ``parameters``, ``buffers`` and ``params``;
layers their ``build`` arguments; parts the parameters they really touch
(``used``), so two parts silently sharing parameters are caught (S109). A node
whose input is already broken is skipped: one mistake, one diagnostic.

Every node runs twice, under two assignments of probe sizes (`checks.probes`): what stays
the same is fixed, what moves follows from a symbol and is spelled as one (``H-2``,
``?``), a layer whose sizes would move is S304. Both runs measure what one sample makes,
for the budget (`checks.budget`, S305).
"""

from __future__ import annotations

import weakref

import torch
from torch import nn

from synthdsl.checks.budget import current_budget, input_too_big
from synthdsl.checks.context import Broken, CheckContext
from synthdsl.checks.losses import run_loss
from synthdsl.checks.probes import (Again, Measured, again, bound_hint, find_example_dims,
                                    input_tensor, keyword_values, probed, record_activations,
                                    record_child, run_cached, spec_arguments, spec_outputs,
                                    start, symbolic_error)
from synthdsl.checks.sources import part_error
from synthdsl.graph.counts import all_buffers, all_parameters
from synthdsl.lang.errors import SynthError, did_you_mean, fmt_shape
from synthdsl.lang.parse import no_cyclic_gc
from synthdsl.library.layers import LAYERS, LayerArgError
from synthdsl.library.ops import OPS
from synthdsl.library.plugins import built_module
from synthdsl.library.cache import sources_of
from synthdsl.library.parts import PartError, plan_part


def check_shapes(ctx: CheckContext) -> None:
    """Run every node on meta; record shapes, parameters and build arguments."""
    with no_cyclic_gc():  # thousands of small meta tensors; each full GC walks all of torch
        _run_all(ctx)
    sources_of(ctx.g).settle()  # the parts are planned: the models' traces can go


def _run_all(ctx: CheckContext) -> None:
    g = ctx.g
    spelled: dict[tuple, tuple] = {}  # meta shapes of both runs -> how the spec spells it
    start(ctx)
    for n in g.topological_order():
        node = g.nodes[n]
        kind = node["kind"]
        if kind in ("source", "checkpoint"):
            continue
        keywords = node.get("keywords") or {}
        if n in ctx.broken or node.get("invalid") or any(
                i is None or i not in ctx.values for i in (*node["inputs"], *keywords.values())):
            ctx.broken.add(n)
            continue
        args = [ctx.values[i] for i in node["inputs"]]
        try:
            if keywords:  # keyword data inputs: only parts take them (the builder saw to it)
                out = _run_part(ctx, n, node, args, keyword_values(node, ctx.values))
            else:
                out = RUNNERS[kind](ctx, n, node, args)
            _unpacked(node, out)
            measure = Measured() if kind == "part" else None
            try:  # the same node under the other probe sizes
                out2 = again(ctx, n, node, [ctx.values2[i] for i in node["inputs"]],
                             ctx.probes2, measure, keyword_values(node, ctx.values2))
                if not _alike(out, out2):
                    raise Again("its result has another form for other sizes")
            except Again as e:
                if kind == "layer":  # sizes the probes made up: nothing to count or build
                    for key in ("parameters", "buffers", "params"):
                        node.pop(key, None)
                    ctx.layers.pop(n, None)
                raise symbolic_error(ctx, n, node, e) from None
        except SynthError as e:
            ctx.errors.add(e)
            ctx.broken.add(n)
            continue
        except Broken:
            ctx.broken.add(n)
            continue
        ctx.values[n], ctx.values2[n] = out, out2
        if kind in ("input", "part", "layer", "op"):
            made = ctx.made.pop(n, None)
            record_activations(ctx, n, out, out2, made,
                               measure.made if measure is not None and made is not None
                               else None)
            if kind == "part" and node["source"] in ctx.children:
                record_child(ctx, n, ctx.children[node["source"]])
        if isinstance(out, tuple):
            node["shapes"] = tuple(_plain(ctx.spell(t, t2)) for t, t2 in zip(out, out2))
            node["dtypes"] = tuple(_dtype_name(t) for t in out)
        else:
            node["dtype"] = _dtype_name(out)
            key = (out.shape, getattr(out2, "shape", None))
            exact = spelled.get(key)
            if exact is None:
                exact = spelled[key] = ctx.spell(out, out2)
            ctx.exact[n] = exact
            node["shape"] = _plain(exact)
    for o in g.outputs:  # a spec used as a source gives its outputs' sizes from these
        if o in ctx.values and isinstance(ctx.values[o], torch.Tensor):
            probed(g).outputs[o] = (tuple(ctx.values[o].shape), tuple(ctx.values2[o].shape))
    if not ctx.errors.errors:
        probed(g).example_dims = find_example_dims(ctx, current_budget().activations)
    for u, succ in g.adj.items():  # each data edge carries its value's shape
        shape = g.nodes[u].get("shape")
        if shape is not None:
            for attrs in succ.values():
                if attrs["kind"] == "data":
                    attrs["shape"] = shape


def _alike(a, b) -> bool:  # two runs' values of one node: as many tensors, of one rank each
    if isinstance(a, tuple) or isinstance(b, tuple):
        return isinstance(a, tuple) and isinstance(b, tuple) and len(a) == len(b) and all(
            _alike(x, y) for x, y in zip(a, b))
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.dim() == b.dim()
    return type(a) is type(b)


def _plain(shape: tuple) -> tuple:
    """A shape as the graph keeps it: numbers and plain strings."""
    return tuple(str(d) if isinstance(d, str) else d for d in shape)


def _dtype_name(t: torch.Tensor) -> str:  # float32, int64, ...: as the graph writes it
    return str(t.dtype).removeprefix("torch.")


def _unpacked(node, out) -> None:
    """A call that gives several values is unpacked into exactly as many names."""
    if node["kind"] in ("item", "output", "loss"):
        return
    count = len(out) if isinstance(out, tuple) else 1
    want = node.get("unpack", 1)
    if count == want:
        return
    if want == 1:
        names = ", ".join(f"{node['name']}{i}" for i in range(count))
        raise SynthError("S108", f"'{node['label']}' gives {count} values; unpack them "
                         "into as many names", node["span"], hint=f"{names} = ...")
    raise SynthError("S108", f"'{node['label']}' gives {count} value"
                     f"{'s' if count != 1 else ''}, but {want} names receive them",
                     node["span"])


# -- the simple kinds -----------------------------------------------------------

#: The largest size a dimension may have (2^48): beyond it no tensor could be made, and
#: far beyond it a size does not fit torch's 64-bit sizes.
MAX_DIM = 2 ** 48


def _run_input(ctx: CheckContext, n, node, args) -> torch.Tensor:
    for i, d in enumerate(node["dims"]):
        if isinstance(d, int) and d > MAX_DIM:
            raise SynthError("S007", f"dimension {i} of input '{node['name']}' is {d}, out of "
                             f"range: a size is at most 2^48 = {MAX_DIM}", ctx.dim_span(n, i),
                             hint="a tensor of this size could never be made")
    if e := input_too_big(ctx, n, node):
        raise e
    return input_tensor(node, ctx.probes)


def _run_output(ctx: CheckContext, n, node, args) -> torch.Tensor:
    return args[0]


def _run_item(ctx: CheckContext, n, node, args):
    return args[0][node["item"]]


# -- parts ------------------------------------------------------------------------

def _run_part(ctx: CheckContext, n, node, args, kwargs=None):
    kwargs = kwargs or {}
    if node["source"] in ctx.children:
        return _run_spec_part(ctx, n, node, args, kwargs)
    if node["source"] not in ctx.models:
        raise Broken  # the source's own problem is reported already
    shared = node.get("shares")
    if shared is not None:
        if shared not in ctx.plans:
            raise Broken
        plan = ctx.plans[shared]
    else:
        model = ctx.models[node["source"]]
        users = [p for p in ctx.g.successors(node["source"])
                 if ctx.g.nodes[p]["kind"] == "part" and not ctx.g.nodes[p].get("shares")]
        try:
            plan = plan_part(model, node, exclusive=len(users) == 1,
                             kind=sources_of(ctx.g).kind(node["source"]))
        except PartError as e:
            raise part_error(ctx.g, node, e) from None
        except Exception as e:  # noqa: BLE001 - tracing the model failed
            raise SynthError("S303", f"'{node['source']}' cannot be cut here",
                             node["span"], notes=[ctx.reason(e)],
                             hint="cut at another node, or use a submodule part") from None
        ctx.plans[n] = plan
        sources_of(ctx.g).keep_part(node["source"], n, plan)  # compile executes it
        _record_params(ctx, n, plan.modules)
    recorder = Measured()
    try:
        with torch.no_grad(), recorder:
            out = plan.call(*args, **kwargs)
    except PartError as e:  # what the part was asked for is not in what it gives
        raise part_error(ctx.g, node, e) from None
    except Exception as e:  # noqa: BLE001 - the part rejects its input
        root, module = next(iter(plan.modules.items()))
        raise _input_mismatch(ctx, node, module, args, e, root, kwargs) from None
    if isinstance(out, (list, tuple)) and plan.outputs == len(out) \
            and all(isinstance(t, torch.Tensor) for t in out):
        out = out[0] if len(out) == 1 else tuple(out)
    elif not isinstance(out, torch.Tensor):
        raise SynthError("S302", f"part '{node['label']}' returns {type(out).__name__}, not a "
                         "tensor", node["span"], hint="take a part that returns one tensor, "
                         "or cut it with at=")
    if shared is None:
        _claim(ctx, n, node, recorder.ids)
    ctx.made[n] = recorder.made
    return out


def _claim(ctx: CheckContext, n: str, node, ids: set[int]) -> None:
    """Record the parameters a part really uses; a second use of one is an error."""
    model = ctx.models[node["source"]]
    used = [f"{node['source']}.{k}" for k, p in model.named_parameters() if id(p) in ids]
    node["used"] = used
    for name in used:
        first = ctx.used_by.setdefault(name, n)
        if first != n:
            other = ctx.g.nodes[first]
            raise SynthError(
                "S109", f"part '{node['label']}' uses parameters that '{other['name']}' "
                f"({other['label']}, line {other['span'].line}) already uses, e.g. '{name}'",
                node["span"],
                hint=f"to share them, apply the first value again: `... = "
                f"{other['name']}(...)`; to use a copy, declare a second source")


def _run_spec_part(ctx: CheckContext, n, node, args, kwargs):
    """A spec source called like a function: its inputs bound (positionally, then by name),
    its outputs' shapes given."""
    child = ctx.children[node["source"]]
    inputs = child.inputs
    for key in kwargs:
        if key not in inputs or inputs.index(key) < len(args):
            given = key in inputs
            raise SynthError(
                "S402", f"spec '{child.name}' input '{key}' is already given positionally"
                if given else f"spec '{child.name}' has no input '{key}'",
                node["keyword_spans"][key],
                hint=None if given else did_you_mean(key, inputs[len(args):])
                or f"its inputs, in order: {', '.join(inputs)}")
    args = spec_arguments(child, args, kwargs)
    if len(args) != len(inputs):
        raise SynthError("S301", f"spec '{child.name}' takes {len(inputs)} input"
                         f"{'s' if len(inputs) != 1 else ''} "
                         f"({', '.join(inputs)}), found {len(args)}", node["span"])
    bound: dict[str, int] = {}
    for name, a in zip(inputs, args):
        dims = child.nodes[name]["dims"]
        shape = tuple(a.shape)
        ok = len(dims) == len(shape)
        for d, v in zip(dims, shape) if ok else ():
            if isinstance(d, str):
                ok = bound.setdefault(d, v) == v
            else:
                ok = d == v
            if not ok:
                break
        if not ok:
            raise SynthError("S301", f"spec '{child.name}' expects input '{name}' of shape "
                             f"{fmt_shape(dims)}, found {fmt_shape(ctx.shape_of(a))}",
                             node["span"], notes=ctx.described_inputs(node))
        want = child.nodes[name].get("input_dtype", "float32")
        if _dtype_name(a) != want:
            raise SynthError("S301", f"spec '{child.name}' expects input '{name}' of type "
                             f"{want}, found {_dtype_name(a)}", node["span"],
                             notes=ctx.described_inputs(node))
    params = all_parameters(child)
    if node.get("shares") is not None:
        params = {}
    node["parameters"] = {f"{node['source']}.{k}": v for k, v in params.items()}
    node["buffers"] = {f"{node['source']}.{k}": v for k, v in all_buffers(child).items()
                       if params}
    node["params"] = sum(params.values())
    if node.get("shares") is None:
        for name in node["parameters"]:
            first = ctx.used_by.setdefault(name, n)
            if first != n:
                raise SynthError("S109", f"spec '{node['source']}' is already used by "
                                 f"'{ctx.g.nodes[first]['name']}'", node["span"],
                                 hint="to share it, apply the first value again")
    return spec_outputs(ctx, node, args, second=False)


def _input_mismatch(ctx: CheckContext, node, module: nn.Module, args,
                    e: Exception, root: str | None = None, kwargs=None) -> SynthError:
    """Name both sides: what the part's first layer expects, what flows in."""
    notes = ctx.described_inputs(node)
    first = next(((k, m) for k, m in module.named_modules()
                  if isinstance(m, (nn.Conv2d, nn.Linear))), None)
    if first is not None and len(args) == 1 and not kwargs:
        path, layer = first
        base = root or node["module"]  # the module's own path: `s.conv1`, `s.layer1.0`
        where = f"{base}.{path}" if path else base
        shape, src = args[0].shape, ctx.describe(node["inputs"][0]).strip("'")
        shown = ctx.shape_of(args[0])
        if isinstance(layer, nn.Conv2d) and len(shape) == 4 \
                and shape[1] != layer.in_channels:
            return SynthError(
                "S301", f"part '{node['label']}' expects {layer.in_channels} input channels "
                f"but '{src}' has {shown[1]}", node["span"],
                notes=[*notes, f"its first layer '{where}' is {layer}"],
                hint=f"declare '{src}' with {layer.in_channels} channels, or build the "
                f"source with in_chans={shown[1]}" if isinstance(shown[1], int) else
                f"declare '{src}' with {layer.in_channels} channels")
        if isinstance(layer, nn.Linear) and shape[-1] != layer.in_features:
            return SynthError(
                "S301", f"part '{node['label']}' expects {layer.in_features} input "
                f"features but '{src}' has {shown[-1]}", node["span"],
                notes=[*notes, f"its first layer '{where}' is {layer}"])
    return SynthError("S301", f"part '{node['label']}' cannot take its input", node["span"],
                      notes=[*notes, ctx.reason(e)], hint=bound_hint(ctx, module, e, args, kwargs))


# -- new layers and operations ------------------------------------------------------

def _run_layer(ctx: CheckContext, n, node, args) -> torch.Tensor:
    spec = LAYERS[node["layer"]]
    shared = node.get("shares")
    if shared is not None:
        if shared not in ctx.layers or shared in ctx.broken:
            raise Broken
        node["build"] = ctx.g.nodes[shared]["build"]
        try:
            with torch.no_grad():
                return ctx.layers[shared](*args)
        except Exception as e:  # noqa: BLE001
            raise SynthError("S301", f"'{ctx.g.nodes[shared]['name']}' applied again "
                             "cannot take this input", node["span"],
                             notes=[*ctx.described_inputs(node), ctx.reason(e)]) from None
    shapes = [tuple(a.shape) for a in args]
    if msg := spec.dtype_problem([_dtype_name(a) for a in args]):
        raise SynthError("S301", msg, node["span"], notes=[
            f"input {i + 1} {ctx.describe(src)} is {_dtype_name(a)}"
            for i, (src, a) in enumerate(zip(node["inputs"], args))])
    try:
        build = spec.constructor_args(shapes, node["options"], [
            ctx.exact.get(i) or ctx.shape_of(a) for i, a in zip(node["inputs"], args)])
    except LayerArgError as e:
        span = node["option_spans"].get(e.option, node["span"]) if e.option else node["span"]
        code = "S402" if e.option or "option" in str(e) else "S301"
        raise SynthError(code, str(e), span, hint=e.hint,
                         notes=ctx.described_inputs(node) if code == "S301" else ()) from None
    node["build"] = build
    if spec.name == "Linear" and len(shapes[0]) >= 4:
        ctx.warn("W003", f"Linear applies to the last dimension of "
                 f"{ctx.describe(node['inputs'][0])}, a map of shape "
                 f"{fmt_shape(ctx.shape_of(args[0]))}", ctx.call_span(node),
                 hint="flatten it (Flatten) or pool it (GlobalAvgPool) first; a map whose "
                 "channels are last may mean it")
    # one meta module per distinct layer, and one meta run per distinct input: a spec
    # of thousands of nodes has few distinct ones, and meta kernels dominate the check
    key = (spec.name, tuple(sorted(build.items(), key=lambda kv: kv[0])))
    try:
        module = ctx.meta_layers.get(key)
        if module is None:
            with torch.device("meta"):
                module = ctx.meta_layers[key] = spec.build(**build)
    except TypeError:  # an unhashable option value: no sharing
        with torch.device("meta"):
            module = spec.build(**build)
    except Exception as e:  # noqa: BLE001
        raise SynthError("S402", f"{spec.name} cannot be built with these options",
                         node["span"], notes=[ctx.reason(e)]) from None
    built_module("layer", spec.name, module, node["span"])
    ctx.layers[n] = module
    _record_params(ctx, n, {node["module"]: module}, _layer_table)
    return run_cached(ctx, key, module, args, lambda e: SynthError(
        "S301", f"{spec.name} cannot take its input", node["span"],
        notes=[*ctx.described_inputs(node), ctx.reason(e)]))


def _run_op(ctx: CheckContext, n, node, args) -> torch.Tensor:
    spec = OPS[node["op"]]
    shapes = [ctx.exact.get(i) or ctx.shape_of(a) for i, a in zip(node["inputs"], args)]
    if bad := spec.check_options(node["options"], shapes):
        msg, option = bad
        raise SynthError("S402", msg, node["option_spans"].get(option, node["span"]))
    names = [ctx.describe(i) for i in node["inputs"]]
    if msg := spec.check(shapes, node["options"], names):
        raise SynthError("S301", msg, node["span"], notes=ctx.described_inputs(node))
    if spec.dtype_rule and (msg := spec.dtype_rule([_dtype_name(a) for a in args], names)):
        raise SynthError("S301", msg, node["span"])
    options = {**spec.defaults(), **node["options"]}
    return run_cached(
        ctx, ("op", spec.name, tuple(sorted(options.items()))),
        lambda *a: spec.fn(*a, **options), args,
        lambda e: SynthError("S301", f"{spec.name} cannot take its inputs", node["span"],
                             notes=[*ctx.described_inputs(node), ctx.reason(e)]))


def _record_params(ctx: CheckContext, n: str, modules: dict[str, nn.Module],
                   tables=None) -> None:
    """The parameters and buffers a node installs, by qualified name."""
    node = ctx.g.nodes[n]
    listed = {path: (tables or _tensor_table)(m) for path, m in modules.items()}
    node["parameters"] = {f"{path}.{k}": numel for path, (ps, _) in listed.items()
                          for k, numel in ps}
    node["buffers"] = {f"{path}.{k}": numel for path, (_, bs) in listed.items()
                       for k, numel in bs}
    node["params"] = sum(node["parameters"].values())


def _tensor_table(m: nn.Module) -> tuple[list, list]:
    """A module's parameters and buffers, as (name, numel) pairs."""
    return ([(k, p.numel()) for k, p in m.named_parameters()],
            [(k, b.numel()) for k, b in m.named_buffers()])


#: A new layer's meta module -> its tensor table. Identical layers share one meta module
#: (built by the check, never changed), so thousands of layers list a few modules' tensors.
_LAYER_TABLES: "weakref.WeakKeyDictionary[nn.Module, tuple]" = weakref.WeakKeyDictionary()


def _layer_table(m: nn.Module) -> tuple[list, list]:
    table = _LAYER_TABLES.get(m)
    if table is None:
        table = _LAYER_TABLES[m] = _tensor_table(m)
    return table


#: How each kind of node runs on meta: (context, node id, node, input values) -> value(s).
RUNNERS = {"input": _run_input, "output": _run_output, "item": _run_item, "loss": run_loss,
           "part": _run_part, "layer": _run_layer, "op": _run_op}
