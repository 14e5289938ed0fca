"""Parts of a source model: what a part node takes from the model, and how it runs.

The same plan serves the check (on a model built on the ``meta`` device, to find
shapes and parameters) and the compiler (on the real model, to install modules
and write fx nodes), so what is checked is what is compiled.

A part is one of:

* the whole model, or a submodule by dotted path:  ``r18(x)``, ``vgg.features(x)``
* a slice or an item of a sequential container:     ``vgg.features[0:23](x)``
* one of timm's methods:                            ``net.forward_features(x)``
* the model cut at internal fx nodes:               ``r18(x, at="layer3")``
* timm feature stages (``feature_info`` indices):   ``c3, c4 = r50(x, stages=[3, 4])``

Cuts trace the model with timm's own fx rules (its not-traced modules and
functions) and keep only what the cut needs; stages use timm's
``forward_intermediates`` where the model has it (pruned with
``prune_intermediate_layers``), and otherwise cut at the stage's module.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import operator
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch import fx, nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map

#: Options a call of a whole source may take, to choose what it returns.
CUT_OPTIONS = ("at", "stage", "stages")


class PartError(ValueError):
    """What the spec asked of a source that the source does not have."""

    def __init__(self, message: str, hint: str | None = None, option: str | None = None):
        super().__init__(message)
        self.hint = hint
        self.option = option


@dataclass
class PartPlan:
    """Modules to install (qualified paths) and how to call them."""

    modules: dict[str, nn.Module]
    call: Callable[..., Any]                     # eager: args -> tensor or tuple of tensors
    emit: Callable[[fx.Graph, tuple, str], list[fx.Node]]
    outputs: int = 1
    describe: str = ""
    notes: list[str] = field(default_factory=list)


def _fx_tracer_kwargs() -> dict:
    from timm.layers import get_notrace_functions, get_notrace_modules

    return {"leaf_modules": list(get_notrace_modules()),
            "autowrap_functions": list(get_notrace_functions())}


def _concrete_args(model: nn.Module) -> dict[str, Any]:
    """Bind every optional forward() argument to its default, so traces take one branch."""
    params = list(inspect.signature(model.forward).parameters.values())[1:]
    return {p.name: p.default for p in params
            if p.default is not inspect.Parameter.empty
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def graph_node_names(model: nn.Module) -> list[str]:
    """The names of the internal nodes a spec can cut a model at (eval-mode trace)."""
    from torchvision.models.feature_extraction import get_graph_node_names

    _, eval_nodes = get_graph_node_names(model, tracer_kwargs=_fx_tracer_kwargs(),
                                         suppress_diff_warning=True,
                                         concrete_args=_concrete_args(model) or None)
    return eval_nodes


def feature_info(model: nn.Module) -> list[dict]:
    info = getattr(model, "feature_info", None)
    if info is None:
        return []
    if hasattr(info, "get_dicts"):
        return list(info.get_dicts())
    return [dict(i) for i in info]


def _submodule(model: nn.Module, source: str, path: Sequence[str]) -> nn.Module:
    from synthdsl.lang.errors import did_you_mean

    module = model
    for i, step in enumerate(path):
        child = module._modules.get(step)
        if child is None:
            where = ".".join((source, *path[:i]))
            raise PartError(f"'{where}' has no submodule '{step}'",
                            hint=did_you_mean(step, module._modules)
                            or "its submodules: " + ", ".join(list(module._modules)[:12]))
        module = child
    return module


def _emit_modules(paths: Sequence[str]):
    def emit(g: fx.Graph, args: tuple, name: str) -> list[fx.Node]:
        value = None
        for i, p in enumerate(paths):
            call_args = args if i == 0 else (value,)
            node_name = name if i == len(paths) - 1 else f"{name}_{i}"
            value = g.create_node("call_module", p, call_args, name=node_name)
        return [value]
    return emit


def plan_part(model: nn.Module, node: dict, exclusive: bool = True) -> PartPlan:
    """The plan for a part node of `model` (the source's model, real or on meta).

    `exclusive` says no other part uses this source, so a stage cut may prune the model.
    """
    source, path, method = node["source"], tuple(node["path"]), node["method"]
    options = dict(node["options"])
    index = node.get("index")
    if method:
        fn_owner = _submodule(model, source, path)
        fn = getattr(fn_owner, method)

        def emit(g, args, name):
            owner = g.create_node("get_attr", source, name=f"{name}_owner")
            return [g.create_node("call_method", method, (owner, *args), options, name=name)]

        return PartPlan({source: model}, lambda *a: fn(*a, **options), emit)

    cut = {k: options.pop(k) for k in CUT_OPTIONS if k in options}
    if options:
        bad = next(iter(options))
        raise PartError(f"part '{node['label']}' has no option '{bad}'", option=bad,
                        hint="a whole source takes at=, stage= or stages=; other parts take "
                        "no options" if not path else "parts run as they are; only a whole "
                        "source takes at=, stage= or stages=")
    if cut:
        if path or index is not None:
            opt = next(iter(cut))
            raise PartError(f"only a whole source can be cut; '{node['label']}' is a submodule",
                            option=opt, hint=f"cut the whole source: {source}(x, {opt}=...)")
        if len(cut) > 1:
            raise PartError("give one of at=, stage= or stages=", option=list(cut)[1])
        (key, value), = cut.items()
        if key == "at":
            return _plan_cut(model, source, value)
        return _plan_stages(model, source, key, value, exclusive)

    module = _submodule(model, source, path)
    qual = ".".join((source, *path))
    if index is None:
        return PartPlan({qual: module}, module, _emit_modules([qual]))
    children = list(module._modules.items())
    if not children or not isinstance(module, (nn.Sequential, nn.ModuleList)):
        raise PartError(f"'{qual}' is a {type(module).__name__}, not a sequence of layers; "
                        "it cannot be sliced")
    start, stop, item = index
    try:
        picked = [children[start]] if item else children[slice(start, stop)]
    except IndexError:
        raise PartError(f"index {start} is out of range: '{qual}' has {len(children)} "
                        "layers") from None
    if not picked:
        raise PartError(f"the slice [{'' if start is None else start}:"
                        f"{'' if stop is None else stop}] of '{qual}' is empty "
                        f"(it has {len(children)} layers)")
    paths = [f"{qual}.{k}" for k, _ in picked]
    mods = [m for _, m in picked]

    def run(*args):
        value = mods[0](*args)
        for m in mods[1:]:
            value = m(value)
        return value

    return PartPlan(dict(zip(paths, mods)), run, _emit_modules(paths))


def _as_names(value, what: str, option: str) -> list:
    values = list(value) if isinstance(value, tuple) else [value]
    if not values:
        raise PartError(f"{option}= needs at least one {what}", option=option)
    return values


def _plan_cut(model: nn.Module, source: str, at) -> PartPlan:
    from synthdsl.lang.errors import did_you_mean

    names = _as_names(at, "node name", "at")
    if not all(isinstance(n, str) for n in names):
        raise PartError("at= takes a node name or a list of node names (strings)", option="at")
    available = graph_node_names(model)
    for n in names:
        # a module's name stands for its last node (as in torchvision's feature extraction)
        if n not in available and not any(a.startswith(n + ".") for a in available):
            raise PartError(f"'{source}' has no node '{n}' to cut at", option="at",
                            hint=did_you_mean(n, available) or
                            f"`synth nodes` lists the {len(available)} nodes of this model")
    return _extractor_plan(model, source, names, names)


def _extractor_plan(model: nn.Module, source: str, names: list[str], labels: list) -> PartPlan:
    from torchvision.models.feature_extraction import create_feature_extractor

    extractor = create_feature_extractor(
        model, return_nodes=list(dict.fromkeys(names)), tracer_kwargs=_fx_tracer_kwargs(),
        suppress_diff_warning=True, concrete_args=_concrete_args(model) or None)
    _protect_returned_values(extractor)

    def run(*args):
        out = extractor(*args)
        return tuple(out[n] for n in names)

    def emit(g, args, name):
        whole = g.create_node("call_module", source, args, name=f"{name}_cut")
        return [g.create_node("call_function", operator.getitem, (whole, n),
                              name=f"{name}_{i}") for i, n in enumerate(names)]

    return PartPlan({source: extractor}, run, emit, outputs=len(names),
                    describe=f"cut at {', '.join(map(str, labels))}")


def _copy_tensors(value):
    """A copy of every tensor in `value` (a tensor, or a tuple/list/dict of them)."""
    return tree_map(lambda v: v.clone() if isinstance(v, torch.Tensor) else v, value)


def _protect_returned_values(gm: fx.GraphModule) -> None:
    """Every value a cut returns from the middle of its graph is copied where it is made:
    an in-place op downstream (``ReLU(inplace=True)`` after a residual add), on the value or
    on what it is a view of, would otherwise change what the cut returns for the earlier
    node. The last value computed needs no copy (nothing runs after it). Both graphs of a
    train/eval extractor are treated."""
    graphs = [g for g in (getattr(gm, "train_graph", None), getattr(gm, "eval_graph", None))
              if g is not None] or [gm.graph]
    for graph in dict.fromkeys(graphs):
        order = {node: i for i, node in enumerate(graph.nodes)}
        output = next(n for n in graph.nodes if n.op == "output")
        returned = output.args[0]
        values = returned.values() if isinstance(returned, dict) else (
            returned if isinstance(returned, (list, tuple)) else [returned])
        nodes = sorted(dict.fromkeys(v for v in values if isinstance(v, fx.Node)),
                       key=order.__getitem__)
        for node in nodes[:-1]:
            with graph.inserting_after(node):
                copy = graph.call_function(_copy_tensors, (node,))
            output.replace_input_with(node, copy)
        graph.lint()
    gm.recompile()


def _plan_stages(model: nn.Module, source: str, key: str, value, exclusive: bool) -> PartPlan:
    stages = _as_names(value, "stage index", key)
    if key == "stage" and isinstance(value, tuple):
        raise PartError("stage= takes one index; use stages=[...] for several", option="stage")
    info = feature_info(model)
    if not info:
        raise PartError(f"'{source}' has no feature stages (timm gives it no feature_info)",
                        option=key, hint="cut it at a named node with at=\"...\"")
    for s in stages:
        if not isinstance(s, int) or isinstance(s, bool) or not -len(info) <= s < len(info):
            raise PartError(f"stage {s!r} does not exist: '{source}' has stages 0 to "
                            f"{len(info) - 1}", option=key,
                            hint="its stages: " + ", ".join(
                                f"{i}={d.get('module')} ({d.get('num_chs')} channels, "
                                f"/{d.get('reduction')})" for i, d in enumerate(info)))
    stages = [s % len(info) for s in stages]
    if hasattr(model, "forward_intermediates") and hasattr(model, "prune_intermediate_layers"):
        if exclusive:
            model.prune_intermediate_layers(stages, prune_norm=True, prune_head=True)
        kwargs = {"indices": stages, "intermediates_only": True}

        def run(*args):
            return tuple(model.forward_intermediates(*args, **kwargs))

        def emit(g, args, name):
            owner = g.create_node("get_attr", source, name=f"{name}_owner")
            out = g.create_node("call_method", "forward_intermediates", (owner, *args),
                                dict(kwargs), name=f"{name}_stages")
            return [g.create_node("call_function", operator.getitem, (out, i),
                                  name=f"{name}_{i}") for i in range(len(stages))]

        return PartPlan({source: model}, run, emit, outputs=len(stages),
                        describe="stages " + ", ".join(map(str, stages)))
    names = [info[s]["module"] for s in stages]
    return _extractor_plan(model, source, names, [f"stage {s}" for s in stages])


class UsedTensors(TorchFunctionMode):
    """Records every tensor a computation touches, to learn which parameters a part uses."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[int] = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        flat, _ = tree_flatten((args, kwargs or {}))
        self.ids.update(id(t) for t in flat if isinstance(t, torch.Tensor))
        return func(*args, **(kwargs or {}))


def cut_points(model: nn.Module, example: torch.Tensor) -> list[tuple[str, str, tuple]]:
    """Every node a spec can cut `model` at: (name, what it is, output shape).

    Traced as cuts are (timm's leaf modules and functions, optional arguments bound),
    shapes propagated on whatever device `example` is on (use ``meta``: no memory)."""
    from torch.fx.passes.shape_prop import ShapeProp
    from torchvision.models.feature_extraction import NodePathTracer

    tracer = NodePathTracer(**_fx_tracer_kwargs())
    concrete = _concrete_args(model)
    graph = tracer.trace(model.eval(), concrete_args=concrete or None)
    gm = fx.GraphModule(tracer.root, graph)
    # bound arguments stay placeholders that assert their value: pass those values
    count = sum(1 for n in graph.nodes if n.op == "placeholder") - 1
    rest = list(concrete.values())[:count]  # in the order of forward()'s signature
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # ShapeProp prints what it raises
            ShapeProp(gm).propagate(example, *rest)
    except Exception:  # noqa: BLE001 - some graphs cannot run node by node on meta
        pass  # the names are still right; the shapes it did not reach are shown as "?"
    rows = []
    for node in graph.nodes:
        if node.op in ("placeholder", "output") or node not in tracer.node_to_qualname:
            continue
        meta = node.meta.get("tensor_meta")
        shape = tuple(meta.shape) if hasattr(meta, "shape") else ()
        if node.op == "call_module":
            what = type(gm.get_submodule(node.target)).__name__
        elif node.op == "call_function":
            what = getattr(node.target, "__name__", str(node.target))
        else:
            what = f"{node.op} {node.target}"
        rows.append((tracer.node_to_qualname[node], what, shape))
    return rows
