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
functions, `library.cuts`) and keep only what the cut needs; stages use timm's
``forward_intermediates`` where the model has it (pruned with
``prune_intermediate_layers``), and otherwise cut at the stage's module.

A plan is data, one dataclass per kind of part (:class:`ModulesPlan`,
:class:`MethodPlan`, :class:`CutPlan`, :class:`StagesPlan`, :class:`SpecPlan`):
:func:`make_plan` makes it from a model and a part node and changes neither;
:meth:`PartPlan.bind` executes it on a model, giving a :class:`Part` (the
modules to install, the eager call, the fx nodes to write). The check keeps its
plans on the graph (``graph.graph["plans"]``) and the compiler binds them to the
models it installs, so nothing is planned, or traced, twice.
"""

from __future__ import annotations

import inspect
import operator
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch import fx, nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from synthdsl.lang.errors import did_you_mean
from synthdsl.library.partcheck import (  # noqa: F401 - PartError, PART_METHODS: re-exported
    PART_METHODS, PartError, method_keywords, method_options, part_problem, picked_children,
    submodule)
from synthdsl.library.cuts import cut_extractor, cut_graphs, graph_node_names
from synthdsl.library.traced import TraceError, bind_traced, resolvable, trace_method

#: Options a call of a whole source may take, to choose what it returns.
CUT_OPTIONS = ("at", "stage", "stages")


# ---- the plan: what a part takes, as data --------------------------------------------


@dataclass(frozen=True, eq=False)
class PartPlan:
    """What a part node takes from its source, independent of any one model object:
    the check makes it on the meta model, the compiler executes it (:meth:`bind`) on the
    model it installs. One subclass per kind of part."""

    source: str
    outputs: int = 1
    describe: str = ""

    def bind(self, model: nn.Module) -> "Part":
        """The modules of `model` this plan installs, and how to call and emit them."""
        raise NotImplementedError


@dataclass(frozen=True, eq=False)
class ModulesPlan(PartPlan):
    """A submodule by path, or the items of a sequential container, called in order."""

    paths: tuple[str, ...] = ()          # qualified: `vgg.features.0`

    def bind(self, model: nn.Module) -> "Part":
        mods = [model.get_submodule(p[len(self.source) + 1:]) if p != self.source else model
                for p in self.paths]
        if len(mods) == 1:
            call = mods[0]  # keyword data inputs go to its forward
        else:
            def call(*args):
                value = mods[0](*args)
                for m in mods[1:]:
                    value = m(value)
                return value
        return Part(dict(zip(self.paths, mods)), call, _emit_modules(self.paths), self)


@dataclass(frozen=True, eq=False)
class MethodPlan(PartPlan):
    """One of the model's methods: ``net.forward_features(x)``. With `graphs` (its train
    and eval traces, options bound) only what the trace uses is the part's
    (:mod:`synthdsl.library.traced`); a method torch.fx cannot trace runs on the whole
    model."""

    path: tuple[str, ...] = ()
    method: str = ""
    options: dict = field(default_factory=dict)
    graphs: tuple[fx.Graph, fx.Graph] | None = None
    #: keyword data inputs, in the method's order: inputs of the traces after the data
    keywords: tuple[str, ...] = ()

    def bind(self, model: nn.Module) -> "Part":
        if self.graphs is not None:
            return _bind_traced(self, model, _graphs_for(model, self.graphs, lambda: trace_method(
                model, self.method, self.options, keywords=self.keywords)), self.method,
                single=True, keywords=self.keywords)
        owner = model.get_submodule(".".join(self.path)) if self.path else model
        fn, method, options, source = getattr(owner, self.method), self.method, \
            dict(self.options), self.source

        def emit(g, args, name, kwargs=None):
            node = g.create_node("get_attr", source, name=f"{name}_owner")
            return [g.create_node("call_method", method, (node, *args),
                                  {**options, **(kwargs or {})}, name=name)]

        return Part({self.source: model}, lambda *a, **kw: fn(*a, **options, **kw), emit, self)


def _graphs_for(model: nn.Module, graphs, retrace):
    """The plan's traces, or the model's own where they read tensor constants that the
    traced model kept and `model` lacks."""
    return graphs if resolvable(model, graphs) else retrace()


def _bind_traced(plan: PartPlan, model: nn.Module, graphs, what: str, single: bool,
                 keywords: tuple[str, ...] = ()) -> "Part":
    """A traced plan bound to `model`: the modules its traces use, and one call of the
    source's container module in the compiled graph. The traces take the keyword data
    inputs (`keywords`) after the positional ones, in that order."""
    traced = bind_traced(model, plan.source, graphs, what)
    source, fn = plan.source, traced.fn

    def emit(g, args, name, kwargs=None):
        owner = g.create_node("get_attr", source, name=f"{name}_owner") \
            if traced.container else None
        extra = tuple((kwargs or {})[k] for k in keywords)
        out = g.create_node("call_function", fn, (owner, *args, *extra),
                            name=name if single else f"{name}_stages")
        if single:
            return [out]
        return [g.create_node("call_function", operator.getitem, (out, i),
                              name=f"{name}_{i}") for i in range(plan.outputs)]

    def run(*args, **kwargs):
        out = traced.run(*args, *(kwargs[k] for k in keywords))
        return out if single else tuple(out)

    return Part(traced.modules, run, emit, plan)


@dataclass(frozen=True, eq=False)
class CutPlan(PartPlan):
    """The model cut at internal fx nodes: the cut's train and eval graphs (made from the
    model's traces when the plan is made), so binding never traces."""

    names: tuple = ()
    graphs: tuple[fx.Graph, fx.Graph] | None = None
    class_name: str = ""

    def bind(self, model: nn.Module) -> "Part":
        names = list(self.names)
        extractor = cut_extractor(model, self.graphs, names, self.class_name)
        source = self.source

        def run(*args):
            out = extractor(*args)
            return tuple(out[n] for n in names)

        def emit(g, args, name):
            whole = g.create_node("call_module", source, args, name=f"{name}_cut")
            return [g.create_node("call_function", operator.getitem, (whole, n),
                                  name=f"{name}_{i}") for i, n in enumerate(names)]

        return Part({source: extractor}, run, emit, self)


def _cut_plan(model: nn.Module, source: str, names: list, describe: str) -> CutPlan:
    return CutPlan(source, outputs=len(names), describe=describe, names=tuple(names),
                   graphs=cut_graphs(model, names), class_name=type(model).__name__)


@dataclass(frozen=True, eq=False)
class StagesPlan(PartPlan):
    """timm feature stages through ``forward_intermediates``. With `prune` (no other part
    uses the source) the model is pruned after the last stage when it is bound; otherwise
    the method is traced (`graphs`), stopping after the last stage, so the part owns only
    what runs up to it. A model torch.fx cannot trace runs it eagerly, stopping early
    where timm lets it."""

    stages: tuple[int, ...] = ()
    prune: bool = False
    graphs: tuple[fx.Graph, fx.Graph] | None = None

    @property
    def kwargs(self) -> dict:
        return _stage_kwargs(self.stages, self.prune)

    def bind(self, model: nn.Module) -> "Part":
        stages, source, kwargs = list(self.stages), self.source, self.kwargs
        if self.graphs is not None:
            return _bind_traced(self, model, _graphs_for(model, self.graphs, lambda: trace_method(
                model, "forward_intermediates", kwargs)), "stages", single=False)
        if self.prune:
            model.prune_intermediate_layers(stages, prune_norm=True, prune_head=True)
        kwargs = {k: v for k, v in kwargs.items() if k in _accepts(model)}

        def run(*args):
            return tuple(model.forward_intermediates(*args, **kwargs))

        def emit(g, args, name):
            owner = g.create_node("get_attr", source, name=f"{name}_owner")
            out = g.create_node("call_method", "forward_intermediates", (owner, *args),
                                dict(kwargs), name=f"{name}_stages")
            return [g.create_node("call_function", operator.getitem, (out, i),
                                  name=f"{name}_{i}") for i in range(len(stages))]

        return Part({source: model}, run, emit, self)


def _stage_kwargs(stages, prune: bool) -> dict:
    kwargs = {"indices": list(stages), "intermediates_only": True}
    if not prune:
        kwargs["stop_early"] = True
    return kwargs


def _accepts(model: nn.Module) -> set[str]:
    return set(inspect.signature(model.forward_intermediates).parameters)


@dataclass(frozen=True, eq=False)
class SpecPlan(PartPlan):
    """A spec source, whole: its compiled module, returning its outputs by name."""

    output_names: tuple[str, ...] = ()

    def bind(self, model: nn.Module) -> "Part":
        names, source = self.output_names, self.source

        def emit(g: fx.Graph, args: tuple, name: str, kwargs=None) -> list[fx.Node]:
            kwargs = dict(kwargs or {})  # its other inputs, by name
            if len(names) == 1:
                return [g.create_node("call_module", source, args, kwargs, name=name)]
            whole = g.create_node("call_module", source, args, kwargs, name=f"{name}_all")
            return [g.create_node("call_function", operator.getitem, (whole, o),
                                  name=f"{name}_{o}") for o in names]

        return Part({source: model}, model, emit, self)


@dataclass
class Part:
    """A plan bound to one model: the modules to install (qualified paths) and how to
    call them (eagerly on meta in the check) and write their fx nodes (the compiler)."""

    modules: dict[str, nn.Module]
    call: Callable[..., Any]                     # eager: (*args, **keyword data) -> tensor(s)
    #: (fx graph, args, name[, keyword data inputs]) -> the fx nodes of its values
    emit: Callable[..., list[fx.Node]]
    plan: PartPlan
    notes: list[str] = field(default_factory=list)

    @property
    def outputs(self) -> int:
        return self.plan.outputs

    @property
    def describe(self) -> str:
        return self.plan.describe


def feature_info(model: nn.Module) -> list[dict]:
    info = getattr(model, "feature_info", None)
    if info is None:
        return []
    if hasattr(info, "get_dicts"):
        return list(info.get_dicts())
    return [dict(i) for i in info]


def _submodule(model: nn.Module, source: str, path: Sequence[str]) -> nn.Module:
    return submodule(model, source, path)


def _emit_modules(paths: Sequence[str]):
    def emit(g: fx.Graph, args: tuple, name: str, kwargs=None) -> list[fx.Node]:
        value = None
        for i, p in enumerate(paths):  # keyword data inputs: only for one module (checked)
            call_args, call_kwargs = (args, dict(kwargs or {})) if i == 0 else ((value,), {})
            node_name = name if i == len(paths) - 1 else f"{name}_{i}"
            value = g.create_node("call_module", p, call_args, call_kwargs, name=node_name)
        return [value]
    return emit


def make_plan(model: nn.Module, node: dict, exclusive: bool = True,
              info: Callable[[], list[dict]] | None = None) -> PartPlan:
    """The plan for a part node of `model` (the source's model, on meta or real); neither
    the node nor the model is changed (a cut traces the model once, :func:`traces_of`).

    `exclusive` says no other part uses this source, so a stage cut may prune the model
    it is bound to. `info` gives the model's stages (its kind's; timm's feature_info
    when absent)."""
    source, path, method = node["source"], tuple(node["path"]), node["method"]
    options = dict(node["options"])
    index = node.get("index")
    if method:
        if (problem := part_problem(model, node)) is not None:
            raise problem
        owner = _submodule(model, source, path)
        _, inputs = method_options(owner, method)
        keywords = method_keywords(owner, method, node.get("keywords") or ())
        try:
            graphs = trace_method(owner, method, options, inputs, keywords) if not path \
                else None
        except TraceError:
            graphs = None  # not traceable: the method runs on the whole model
        return MethodPlan(source, path=path, method=method, options=options, graphs=graphs,
                          keywords=keywords)

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
        return _plan_stages(model, source, key, value, exclusive,
                            info() if info is not None else feature_info(model))

    module = _submodule(model, source, path)
    qual = ".".join((source, *path))
    if index is None:
        return ModulesPlan(source, paths=(qual,))
    picked = picked_children(module, qual, index)
    return ModulesPlan(source, paths=tuple(f"{qual}.{k}" for k, _ in picked))


def plan_part(model: nn.Module, node: dict, exclusive: bool = True, kind=None) -> Part:
    """The plan for a part node, bound to `model` (:func:`make_plan`, then
    :meth:`PartPlan.bind`); the node is left as it is. Binding an exclusive stage cut
    prunes `model`, which is then the part's own. With `kind` (the source's
    `SourceKind`), the kind makes the plan."""
    if kind is not None:
        return kind.plan(model, node, exclusive).bind(model)
    return make_plan(model, node, exclusive).bind(model)


def _as_names(value, what: str, option: str) -> list:
    values = list(value) if isinstance(value, tuple) else [value]
    if not values:
        raise PartError(f"{option}= needs at least one {what}", option=option)
    return values


def _plan_cut(model: nn.Module, source: str, at) -> CutPlan:

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
    return _cut_plan(model, source, names, f"cut at {', '.join(map(str, names))}")


def _plan_stages(model: nn.Module, source: str, key: str, value, exclusive: bool,
                 info: list[dict]) -> PartPlan:
    stages = _as_names(value, "stage index", key)
    if key == "stage" and isinstance(value, tuple):
        raise PartError("stage= takes one index; use stages=[...] for several", option="stage")
    if not info:
        raise PartError(f"'{source}' has no feature stages",
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
        graphs = None
        if not exclusive:  # traced up to the last stage: the part owns only that
            try:
                graphs = trace_method(model, "forward_intermediates",
                                      _stage_kwargs(stages, prune=False))
            except TraceError:
                graphs = None  # run eagerly on the whole model, stopping early
        return StagesPlan(source, outputs=len(stages),
                          describe="stages " + ", ".join(map(str, stages)),
                          stages=tuple(stages), prune=exclusive, graphs=graphs)
    names = [info[s]["module"] for s in stages]
    return _cut_plan(model, source, names, f"cut at {', '.join(f'stage {s}' for s in stages)}")


class UsedTensors(TorchFunctionMode):
    """Records every tensor a computation touches, to learn which parameters a part uses."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[int] = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        flat, _ = tree_flatten((args, kwargs or {}))
        self.ids.update(id(t) for t in flat if isinstance(t, torch.Tensor))
        return func(*args, **(kwargs or {}))
