"""SynthGraph → torch.fx: one `GraphModule` built node by node, wrapped as a SynthModule.

The fx graph is written by hand in the graph's topological order (the pattern of
``torch.fx.passes.split_module``): one placeholder per input, one
``call_module`` per part or layer, one ``call_function`` per operation, and an
output. Nothing is traced. Pretrained parts keep their own names, so
``state_dict()`` keys read ``vgg.features.0.weight``.
"""

from __future__ import annotations

import torch
from torch import fx, nn

from synthdsl.errors import InternalError, SynthError
from synthdsl.graph import SynthGraph
from synthdsl.layers import LAYERS
from synthdsl.module import SynthModule
from synthdsl.ops import OPS
from synthdsl.sources import build_source


def _install(root: nn.Module, path: str, module: nn.Module) -> None:
    """Put `module` at dotted `path` under `root`, making plain containers on the way."""
    *parents, leaf = path.split(".")
    here = root
    for p in parents:
        nxt = here._modules.get(p)
        if nxt is None:
            nxt = nn.Module()
            here.add_module(p, nxt)
        here = nxt
    if leaf not in here._modules:
        here.add_module(leaf, module)
    elif here._modules[leaf] is not module:
        raise InternalError(f"two different modules compiled to '{path}'")


def _reachable(root: nn.Module, path: str) -> bool:
    here = root
    for p in path.split("."):
        here = here._modules.get(p)
        if here is None:
            return False
    return True


def build_modules(graph: SynthGraph) -> nn.Module:
    """Build the real (CPU) modules of every source part and new layer under one root."""
    root = nn.Module()
    sources: dict[str, nn.Module] = {}
    for s in graph.of_kind("source"):
        if any(graph.nodes[p]["kind"] == "part" for p in graph.successors(s)):
            sources[s] = build_source(graph.nodes[s])
    # shallow paths first: a whole source installed at `vgg` already holds `vgg.features`
    parts = sorted(graph.of_kind("part"), key=lambda n: graph.nodes[n]["module"].count("."))
    for n in parts:
        node = graph.nodes[n]
        if not _reachable(root, node["module"]):
            module = sources[node["source"]].get_submodule(".".join(node["path"]))
            _install(root, node["module"], module)
    for n in graph.of_kind("layer"):
        node = graph.nodes[n]
        _install(root, node["module"], LAYERS[node["layer"]].build(**node["build"]))
    return root


def build_fx_graph(graph: SynthGraph, root: nn.Module) -> fx.Graph:
    g = fx.Graph()
    env: dict[str, fx.Node] = {}
    for n in graph.topological_order():
        node = graph.nodes[n]
        kind = node["kind"]
        args = tuple(env[i] for i in node["inputs"])
        name = n.replace(".", "_").replace(":", "_")  # `hidden.0` → `hidden_0`
        if kind in ("source", "output"):
            continue
        if kind == "input":
            fx_node = g.create_node("placeholder", n, name=name)
        elif kind == "part" and node["method"]:
            owner = g.create_node("get_attr", node["module"], name=f"{name}_owner")
            fx_node = g.create_node("call_method", node["method"], (owner, *args),
                                    dict(node["options"]), name=name)
        elif kind in ("part", "layer"):
            fx_node = g.create_node("call_module", node["module"], args, name=name)
        elif kind == "op":
            spec = OPS[node["op"]]
            fx_node = g.create_node("call_function", spec.fn, args,
                                    {**spec.defaults(), **node["options"]}, name=name)
        else:  # pragma: no cover
            raise InternalError(f"unknown node kind {kind!r}")
        fx_node.meta["synth"] = {"node": n, "name": node["name"], "kind": kind,
                                 "span": str(node["span"])}
        env[n] = fx_node
    outs = [env[graph.nodes[o]["of"]] for o in graph.outputs]
    if len(outs) == 1:
        g.output(outs[0])
    else:
        g.output({name: v for name, v in zip(graph.graph["output_names"], outs)})
    g.lint()
    return g


def compile_graph(graph: SynthGraph, seed: int | None = None) -> SynthModule:
    """Build the module a checked graph describes, with weights and training sets applied."""
    if not graph.graph.get("checked"):
        raise InternalError("compile_graph needs a graph that check_graph has annotated")
    if graph.graph.get("errors"):
        raise SynthError("S000", "the spec has errors; run `synth check` to see them")
    if seed is not None:
        torch.manual_seed(seed)
    root = build_modules(graph)
    fx_graph = build_fx_graph(graph, root)
    gm = fx.GraphModule(root, fx_graph, class_name=graph.name or "SynthGraphModule")
    return SynthModule(gm, graph)
