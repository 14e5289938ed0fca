"""Parts that run one of a model's methods, traced: only what the method uses is kept.

A method part (``net.forward_features(x)``, ``net.forward_head(f, pre_logits=true)``)
and a stage cut that shares its source with other parts
(``c3 = r50(x, stages=[3])`` beside ``r50.layer4(c3)``) are traced with timm's fx
rules (:class:`synthdsl.library.cuts.TimmTracer`) once in train mode and once in
eval mode, with their keyword options bound. The traces name modules and tensors
by path, so they are made once (on the check's meta model) and executed on any
model of the same architecture.

Bound to a model (:func:`bind_traced`), a trace gives the modules it calls at
their own qualified paths (``s.layer1.0.conv1``: the model's own module objects),
the tensors it reads directly (``s.cls_token``) on a holder module at their owner's
path, and one function of the source's container module (the module the compiled
graph holds at ``s``) per mode. The compiled graph reads that container
(``get_attr s``) and calls the function with it, so parts of one source that
install other modules there (a cut, a submodule) run beside it, and a part owns,
counts and trains only what its trace uses.
"""

from __future__ import annotations

import inspect
import weakref
from dataclasses import dataclass
from typing import Any, Callable

from torch import fx, nn


class TraceError(RuntimeError):
    """A method that torch.fx cannot trace with its options bound."""


def _strip_bound(graph: fx.Graph, keep: int, kept: tuple[str, ...] = ()) -> None:
    """Remove every placeholder after the first `keep` but those of the arguments named
    `kept` (keyword data inputs): the arguments bound at trace time, and the assertions
    torch.fx wrote to check their values."""
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    doomed: list[fx.Node] = []
    stack = [p for p in placeholders[keep:] if p.target not in kept]
    while stack:
        node = stack.pop()
        if node in doomed:
            continue
        doomed.append(node)
        stack.extend(node.users)
    output = next(n for n in graph.nodes if n.op == "output")
    if output in doomed:
        raise TraceError("a bound option flows into the method's result")
    order = {n: i for i, n in enumerate(graph.nodes)}
    for node in sorted(doomed, key=order.__getitem__, reverse=True):
        graph.erase_node(node)
    graph._codegen = fx.graph.CodeGen()  # plain inputs and outputs, no pytree specs
    graph.lint()


def trace_method(model: nn.Module, method: str, options: dict[str, Any],
                 inputs: int = 1, keywords: tuple[str, ...] = ()) -> tuple[fx.Graph, fx.Graph]:
    """`model.<method>(*inputs, **options)` traced in train and in eval mode (its own mode
    is kept): graphs taking the `inputs` data arguments, then the keyword data inputs
    `keywords` (in the method's order), every other argument bound to `options` or its
    default."""
    from synthdsl.library.cuts import TimmTracer

    params = list(inspect.signature(getattr(type(model), method)).parameters.values())[1:]
    concrete = {}
    for p in params[inputs:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.name in keywords:
            continue
        if p.name in options:
            concrete[p.name] = options[p.name]
        elif p.default is not inspect.Parameter.empty:
            concrete[p.name] = p.default
        else:
            raise TraceError(f"{method}() needs its argument '{p.name}'")
    was_training = model.training
    graphs = []
    try:
        for mode in (True, False):
            model.train(mode)
            tracer = TimmTracer()
            tracer.traced_func_name = method
            try:
                graph = tracer.trace(model, concrete_args=concrete or None)
            except Exception as e:  # noqa: BLE001 - the method cannot be traced
                raise TraceError(f"{type(e).__name__}: {e}") from e
            _strip_bound(graph, inputs, keywords)
            graphs.append(graph)
    finally:
        model.train(was_training)
    return graphs[0], graphs[1]


def _targets(graphs) -> tuple[list[str], list[str]]:
    """The modules the graphs call and the attributes they read, by path, in order."""
    modules: dict[str, None] = {}
    attrs: dict[str, None] = {}
    for graph in graphs:
        for node in graph.nodes:
            if node.op == "call_module":
                modules[str(node.target)] = None
            elif node.op == "get_attr":
                attrs[str(node.target)] = None
    return list(modules), list(attrs)


def resolvable(model: nn.Module, graphs) -> bool:
    """Whether every module and attribute the graphs read exists on `model` (a trace
    keeps the tensor constants it met on the model it traced)."""
    modules, attrs = _targets(graphs)
    for target in (*modules, *attrs):
        owner: Any = model
        for step in target.split("."):
            owner = getattr(owner, step, None)
            if owner is None:
                return False
    return True


class Holder(nn.Module):
    """The tensors a traced part reads directly from one module of its source (the model's
    own tensor objects), at that module's path; submodules are installed below it."""


#: The holders of each live model, by path, shared by every part bound to that model.
_HOLDERS: "weakref.WeakKeyDictionary[nn.Module, dict[str, Holder]]" = \
    weakref.WeakKeyDictionary()


def _holder(model: nn.Module, path: str) -> Holder:
    holders = _HOLDERS.setdefault(model, {})
    holder = holders.get(path)
    if holder is None:
        holder = holders[path] = Holder()
    return holder


def _hold(model: nn.Module, target: str) -> tuple[str, Holder]:
    """The holder of an attribute the trace reads (``cls_token``, ``blocks.0.ls1.gamma``),
    with the model's own tensor registered on it as the model registers it."""
    *path, leaf = target.split(".")
    owner = model.get_submodule(".".join(path)) if path else model
    holder = _holder(model, ".".join(path))
    if leaf in owner._parameters:
        holder._parameters[leaf] = owner._parameters[leaf]
    elif leaf in owner._buffers:
        holder.register_buffer(leaf, owner._buffers[leaf],
                               persistent=leaf not in owner._non_persistent_buffers_set)
    else:  # a plain attribute the trace kept (a tensor constant)
        object.__setattr__(holder, leaf, getattr(owner, leaf))
    return ".".join(path), holder


class TracedCall:
    """A traced part as a function of its source's container module: the train or the
    eval graph's code, chosen by the container's mode. A named, module-level kind of
    object, so the compiled fx graph can call it (``call_function``)."""

    __module__ = __name__

    def __init__(self, graphs: tuple[fx.Graph, fx.Graph], name: str) -> None:
        from torch.fx.graph_module import _forward_from_src

        self.__name__ = self.__qualname__ = f"traced_{name}"
        self._fns = []
        for graph in graphs:
            code = graph.python_code(root_module="self")
            self._fns.append(_forward_from_src(code.src, code.globals))

        self.same = graphs[0].python_code("self").src == graphs[1].python_code("self").src

    def __call__(self, container: nn.Module | None, *args):
        train, eval_ = self._fns
        if container is None:  # reads nothing of the model, the same in either mode
            return eval_(container, *args)
        return (train if container.training else eval_)(container, *args)


@dataclass
class TracedPart:
    """A trace bound to a model: the modules to install and how to run it."""

    modules: dict[str, nn.Module]
    run: Callable[..., Any]
    fn: TracedCall
    container: bool = True               # the compiled graph passes the source's module


def bind_traced(model: nn.Module, source: str, graphs: tuple[fx.Graph, fx.Graph],
                name: str) -> TracedPart:
    """The modules of `model` the graphs use, at their qualified paths under `source`
    (leaf modules as they are, directly read tensors on holders), and the traced call."""
    module_targets, attr_targets = _targets(graphs)
    modules: dict[str, nn.Module] = {}
    for path, holder in (_hold(model, t) for t in attr_targets):
        modules[f"{source}.{path}" if path else source] = holder
    for target in module_targets:
        modules[f"{source}.{target}"] = model.get_submodule(target)
    fn = TracedCall(graphs, name)
    if not modules and fn.same:  # reads nothing of the model, whatever its mode
        return TracedPart(modules, lambda *args: fn(None, *args), fn, container=False)
    if not modules:  # nothing to read, but the modes differ: a container carries the mode
        modules[source] = _holder(model, "")
    return TracedPart(modules, lambda *args: fn(model, *args), fn)
