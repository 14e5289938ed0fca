"""Cutting a model at its internal nodes: one trace per mode, reused by every cut.

A model is traced once in train mode and once in eval mode (torchvision's
``NodePathTracer`` with timm's not-traced modules and functions, and optional
``forward()`` arguments bound to their defaults), and the traces are kept beside
the model (:func:`traces_of`). Everything that needs the graph reads them: the
names a spec can cut at (:func:`graph_node_names`), the feature extractors of
cuts (:func:`build_extractor`, the graph surgery of torchvision's
``create_feature_extractor`` done on copies of the traces), and the cut points
``synth nodes`` lists (:func:`cut_points`). Traces name modules by path, not by
object, so an extractor is built from them for any model of the same
architecture: the check traces the meta model, and the compiler builds the real
model's extractor from the check's traces without tracing again.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import re
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn
from torch.utils._pytree import tree_map


def _fx_tracer_kwargs() -> dict:
    from timm.layers import get_notrace_functions, get_notrace_modules

    return {"leaf_modules": list(get_notrace_modules()),
            "autowrap_functions": list(get_notrace_functions())}


class TimmTracer(fx.Tracer):
    """torch.fx's own tracer with timm's rules: its not-traced modules kept as leaves, its
    not-traced functions wrapped (what the pictures trace with, by module)."""

    def __init__(self) -> None:
        kwargs = _fx_tracer_kwargs()
        super().__init__(autowrap_functions=tuple(kwargs["autowrap_functions"]))
        self._leaves = tuple(kwargs["leaf_modules"])

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, self._leaves) or super().is_leaf_module(m, qualname)


def _concrete_args(model: nn.Module) -> dict[str, Any]:
    """Bind every optional forward() argument to its default, so traces take one branch."""
    params = list(inspect.signature(model.forward).parameters.values())[1:]
    return {p.name: p.default for p in params
            if p.default is not inspect.Parameter.empty
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


@dataclass(frozen=True, eq=False)
class Trace:
    """One mode's fx graph of a model, and the node name (torchvision's) of each fx node."""

    graph: fx.Graph
    names: dict[fx.Node, str]


@dataclass(frozen=True, eq=False)
class Traces:
    """A model traced in both modes; no reference to the model itself is kept."""

    train: Trace
    eval: Trace
    class_name: str
    concrete: dict[str, Any]

    @property
    def node_names(self) -> list[str]:
        """The names a spec can cut at: the eval-mode trace's, in execution order."""
        return list(self.eval.names.values())


#: Traces of each live model, made on first use (the model is not kept alive by them)
#: and used up by the first cut (:func:`cut_graphs`); the node names stay.
_TRACES: "weakref.WeakKeyDictionary[nn.Module, Traces]" = weakref.WeakKeyDictionary()
_NAMES: "weakref.WeakKeyDictionary[nn.Module, list[str]]" = weakref.WeakKeyDictionary()


def trace_model(model: nn.Module) -> Traces:
    """Trace `model` in train mode and in eval mode (its own mode is kept)."""
    from torchvision.models.feature_extraction import NodePathTracer, _set_default_tracer_kwargs

    kwargs = _set_default_tracer_kwargs(_fx_tracer_kwargs())
    concrete = _concrete_args(model)
    was_training = model.training
    traces = {}
    try:
        for mode in ("train", "eval"):
            model.train(mode == "train")
            tracer = NodePathTracer(**kwargs)
            graph = tracer.trace(model, concrete_args=concrete or None)
            names = dict(tracer.node_to_qualname)
            if len(set(names.values())) != len(names):
                raise ValueError("There are duplicate nodes! Please raise an issue "
                                 "https://github.com/pytorch/vision/issues")
            traces[mode] = Trace(graph, names)
    finally:
        model.train(was_training)
    return Traces(traces["train"], traces["eval"], type(model).__name__, concrete)


def traces_of(model: nn.Module) -> Traces:
    """The model's traces, made once per model object."""
    traces = _TRACES.get(model)
    if traces is None:
        traces = _TRACES[model] = trace_model(model)
        _NAMES[model] = traces.node_names
    return traces


def graph_node_names(model: nn.Module) -> list[str]:
    """The names of the internal nodes a spec can cut a model at (eval-mode trace)."""
    names = _NAMES.get(model)
    return list(names) if names is not None else traces_of(model).node_names


def _copy(trace: Trace) -> tuple[fx.Graph, dict[fx.Node, str]]:
    old = trace.graph
    graph = fx.Graph(tracer_cls=old._tracer_cls, tracer_extras=old._tracer_extras)
    env: dict[fx.Node, fx.Node] = {}
    graph.output(graph.graph_copy(old, env))
    return graph, {env[n]: name for n, name in trace.names.items() if n in env}


def release_traces(model: nn.Module) -> None:
    """Forget a model's traces and take their graphs apart, so their memory goes now
    rather than at the next cyclic collection (a model handed over for its weights)."""
    traces = _TRACES.pop(model, None)
    if traces is None:
        return
    for trace in (traces.train, traces.eval):
        trace.names.clear()
        for node in reversed(list(trace.graph.nodes)):
            trace.graph.erase_node(node)


def cut_graphs(model: nn.Module, names: list[str]) -> tuple[fx.Graph, fx.Graph]:
    """The train and eval graphs of `model` cut at `names`, made from the model's traces,
    which they use up (a later use traces again; the node names stay known)."""
    traces = traces_of(model)
    graphs = extractor_graphs(model, traces, names, consume=True)
    if _TRACES.get(model) is traces:
        del _TRACES[model]
    return graphs


def extractor_graphs(model: nn.Module, traces: Traces, names: list[str],
                     consume: bool = False) -> tuple[fx.Graph, fx.Graph]:
    """The train and eval graphs of `model` returning the values of the nodes `names` (a
    dict by name), made from `traces` as torchvision's ``create_feature_extractor`` makes
    them; every value returned from the middle of the graph is copied where it is made.
    `model` does not change; `traces` do only when `consume` says so (no copy is made)."""
    graphs = []
    for trace in (traces.train, traces.eval):
        graph, qualname = (trace.graph, trace.names) if consume else _copy(trace)
        available = list(qualname.values())
        wanted = {str(n): str(n) for n in dict.fromkeys(names)}
        for query in wanted:
            if not any(re.match(rf"^{query}(\.|$)", n) is not None for n in available):
                raise ValueError(
                    f"node: '{query}' is not present in model. Hint: use "
                    "`get_graph_node_names` to make sure the "
                    "`return_nodes` you specified are present. It may even "
                    "be that you need to specify `train_return_nodes` and "
                    "`eval_return_nodes` separately.")
        gm = fx.GraphModule(model, graph, traces.class_name)  # what DCE asks about modules
        for n in [n for n in reversed(gm.graph.nodes) if n.op == "output"]:
            gm.graph.erase_node(n)
        nodes = list(gm.graph.nodes)
        outputs: OrderedDict[str, fx.Node] = OrderedDict()
        for n in reversed(nodes):
            module_qualname = qualname.get(n)
            if module_qualname is None:
                continue
            for query in wanted:
                depth = query.count(".")
                if ".".join(module_qualname.split(".")[: depth + 1]) == query:
                    outputs[wanted[query]] = n
                    wanted.pop(query)
                    break
        outputs = OrderedDict(reversed(list(outputs.items())))
        with gm.graph.inserting_after(nodes[-1]):
            gm.graph.output(outputs)
        gm.graph.eliminate_dead_code()
        _protect(gm.graph)
        graphs.append(_copy(Trace(gm.graph, {}))[0])  # a graph of its own, no module kept
    return graphs[0], graphs[1]


def bind_extractor(model: nn.Module, graphs: tuple[fx.Graph, fx.Graph],
                   class_name: str) -> fx.GraphModule:
    """A torchvision ``DualGraphModule`` of `model` running copies of `graphs` (train,
    eval), in the model's mode; no tracing."""
    from torchvision.models.feature_extraction import DualGraphModule

    train = _copy(Trace(graphs[0], {}))[0]
    eval_ = _copy(Trace(graphs[1], {}))[0]
    extractor = DualGraphModule(model, train, eval_, class_name=class_name)
    extractor.train(model.training)
    extractor.recompile()
    return extractor


def _resolvable(model: nn.Module, graphs) -> bool:
    """Whether every module and attribute the graphs read exists on `model` (a trace
    keeps the tensor constants it met on the model it traced: ``_tensor_constant0``)."""
    for graph in graphs:
        for node in graph.nodes:
            if node.op in ("get_attr", "call_module"):
                owner = model
                for part in str(node.target).split("."):
                    owner = getattr(owner, part, None)
                    if owner is None:
                        return False
    return True


def cut_extractor(model: nn.Module, graphs: tuple[fx.Graph, fx.Graph], names: list[str],
                  class_name: str) -> fx.GraphModule:
    """The extractor of a cut on `model` from the cut's graphs; a model of the kind that
    keeps tensor constants from its trace (the graphs were made on another model) is
    traced itself instead."""
    if _resolvable(model, graphs):
        return bind_extractor(model, graphs, class_name)
    return bind_extractor(model, cut_graphs(model, names), class_name)


def build_extractor(model: nn.Module, traces: Traces, names: list[str]) -> fx.GraphModule:
    """`model` cut at the nodes `names`, from its traces (:func:`extractor_graphs`)."""
    return bind_extractor(model, extractor_graphs(model, traces, names), traces.class_name)


def _copy_tensors(value):
    """A copy of every tensor in `value` (a tensor, or a tuple/list/dict of them)."""
    return tree_map(lambda v: v.clone() if isinstance(v, torch.Tensor) else v, value)


def _protect(graph: fx.Graph) -> None:
    """Copy every value the graph returns from its middle where it is made (below)."""
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


def protect_returned_values(gm: fx.GraphModule) -> None:
    """Every value a cut returns from the middle of its graph is copied where it is made:
    an in-place op downstream (``ReLU(inplace=True)`` after a residual add), on the value or
    on what it is a view of, would otherwise change what the cut returns for the earlier
    node. The last value computed needs no copy (nothing runs after it). Both graphs of a
    train/eval extractor are treated."""
    graphs = [g for g in (getattr(gm, "train_graph", None), getattr(gm, "eval_graph", None))
              if g is not None] or [gm.graph]
    for graph in dict.fromkeys(graphs):
        _protect(graph)
    gm.recompile()


def cut_points(model: nn.Module, example: torch.Tensor) -> list[tuple[str, str, tuple]]:
    """Every node a spec can cut `model` at: (name, what it is, output shape).

    Read from the model's eval-mode trace, shapes propagated on whatever device
    `example` is on (use ``meta``: no memory)."""
    from torch.fx.passes.shape_prop import ShapeProp

    traces = traces_of(model)
    graph, qualname = _copy(traces.eval)
    gm = fx.GraphModule(model, graph)
    # bound arguments stay placeholders that assert their value: pass those values
    count = sum(1 for n in graph.nodes if n.op == "placeholder") - 1
    rest = list(traces.concrete.values())[:count]  # in the order of forward()'s signature
    was_training = model.training
    model.eval()
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # ShapeProp prints what it raises
            ShapeProp(gm).propagate(example, *rest)
    except Exception:  # noqa: BLE001 - some graphs cannot run node by node on meta
        pass  # the names are still right; the shapes it did not reach are shown as "?"
    finally:
        model.train(was_training)
    rows = []
    for node in graph.nodes:
        if node.op in ("placeholder", "output") or node not in qualname:
            continue
        meta = node.meta.get("tensor_meta")
        shape = tuple(meta.shape) if hasattr(meta, "shape") else ()
        if node.op == "call_module":
            what = type(gm.get_submodule(node.target)).__name__
        elif node.op == "call_function":
            what = getattr(node.target, "__name__", str(node.target))
        else:
            what = f"{node.op} {node.target}"
        rows.append((qualname[node], what, shape))
    return rows
