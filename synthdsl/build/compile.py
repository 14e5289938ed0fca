"""SynthGraph → torch.fx: one `GraphModule` built node by node, wrapped as a SynthModule.

The fx graph is written by hand in the graph's topological order (the pattern of
``torch.fx.passes.split_module``): one placeholder per input, one
``call_module`` per part or layer, one ``call_function`` per operation, and an
output. Nothing is traced. Pretrained parts keep their own names, so
``state_dict()`` keys read ``vgg.features.0.weight``.
"""

from __future__ import annotations

import gc
import operator

import torch
from torch import fx, nn

from synthdsl.lang.errors import InternalError, SynthError
from synthdsl.graph import SynthGraph
from synthdsl.library.layers import LAYERS
from synthdsl.build.module import SynthModule
from synthdsl.library.ops import OPS
from synthdsl.library.parts import PartPlan, plan_part
from synthdsl.library.peft import add_lora
from synthdsl.library.sources import build_source, create_timm
from synthdsl.library.weights import (ModuleReader, TensorReader, file_sha256, has_hidden_state,
                              materialize, open_checkpoint, persistent_tensors, transform)


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


def _is_user(graph: SynthGraph, n: str) -> bool:
    node = graph.nodes[n]
    return node["kind"] == "part" and not node.get("shares")


def build_modules(graph: SynthGraph, device: str = "cpu", load_weights: bool = True,
                  ) -> tuple[nn.Module, dict[str, PartPlan], dict[str, dict]]:
    """Build the modules of every part and new layer under one root.

    Sources with a checkpoint are built on the meta device and only the tensors the
    installed modules keep are read from the file; the others are built for real.
    Returns the root, the parts' plans, and the provenance of every tensor."""
    gc.collect()  # what the check left behind (traced graphs, meta models) goes first
    root = nn.Module()
    models: dict[str, nn.Module] = {}
    lazy: dict[str, TensorReader] = {}
    provenance: dict[str, dict] = {}
    for s in graph.of_kind("source"):
        if not any(_is_user(graph, p) for p in graph.successors(s)):
            continue
        node = graph.nodes[s]
        if node["constructor"] == "spec":
            child = compile_graph(node["graph"], device=device, load_weights=load_weights)
            models[s] = child
            provenance.update({f"{s}.{k}": {**v, "via": f"spec:{node['target']}"}
                               for k, v in child.provenance.items()})
            continue
        if node.get("weights") and load_weights and device != "meta":
            model = create_timm(node["target"], node["create_kwargs"], "meta")
            if not has_hidden_state(model):
                models[s], lazy[s] = model, _open(node)
                continue
        models[s] = build_source(node, device if load_weights else "cpu",
                                 load_weights=load_weights)
    plans: dict[str, PartPlan] = {}
    for n in graph.of_kind("part"):
        node = graph.nodes[n]
        if node.get("shares"):
            continue
        model = models[node["source"]]
        if isinstance(model, SynthModule):
            plans[n] = _spec_plan(model, node["source"])
        else:
            users = [p for p in graph.successors(node["source"]) if _is_user(graph, p)]
            plans[n] = plan_part(model, node, exclusive=len(users) == 1)
    # shallow paths first: a whole source installed at `vgg` already holds `vgg.features`
    installs = sorted(((p, m) for plan in plans.values() for p, m in plan.modules.items()),
                      key=lambda pm: pm[0].count("."))
    for path, module in installs:
        if not _reachable(root, path):
            _install(root, path, module)
    for n, plan in plans.items():
        s = graph.nodes[n]["source"]
        for path, module in plan.modules.items():
            if s in lazy:
                try:
                    materialize(module, _key_in(path, s), lazy[s], provenance, path, s)
                except (ValueError, OSError) as e:  # the file changed since the check
                    node = graph.nodes[s]
                    raise SynthError("S205", f"weights file '{node['weights_text']}' changed "
                                     f"since the spec was checked: {e}",
                                     node["weights_span"]) from None
            elif not isinstance(models[s], SynthModule):
                origin = _origin(graph.nodes[s], load_weights)
                for name, _, _ in persistent_tensors(module):
                    provenance[f"{path}.{name}"] = {"source": s, **origin,
                                                    "key": _key_in(path, s)(name)}
    for reader in lazy.values():
        reader.close()
    with torch.device(device):
        for n in graph.of_kind("layer"):
            node = graph.nodes[n]
            if not node.get("shares"):
                module = LAYERS[node["layer"]].build(**node["build"])
                _install(root, node["module"], module)
                for name, _, _ in persistent_tensors(module):
                    provenance[f"{node['module']}.{name}"] = {
                        "origin": "new", "initialiser": f"{node['layer']}: torch default",
                        "node": n}
    return root, plans, provenance


def apply_inheritance(graph: SynthGraph, root: nn.Module, provenance: dict[str, dict]) -> None:
    """Copy every inherited tensor into place, transformed as its edge says."""
    readers: dict[str, TensorReader] = {}
    try:
        for rec in graph.graph.get("inherits", []):
            donor = rec["donor"]
            if donor not in readers:
                readers[donor] = _donor_reader(graph.nodes[donor])
            reader, opts = readers[donor], rec["options"]
            for m in rec.get("mapping", []):
                target = _tensor(root, m["target"])
                value, _ = transform(reader.get(m["key"]), tuple(target.shape), opts.get("rows"),
                                     opts.get("adapt"), opts.get("prefix_tokens"))
                with torch.no_grad():
                    target.copy_(value.to(target.dtype))
                provenance[m["target"]] = {"origin": "inherited",
                                           "from": rec["donor_label"],
                                           **{k: v for k, v in reader.origin(m["key"]).items()
                                              if k != "origin"},
                                           "transform": m["transform"]}
    finally:
        for r in readers.values():
            r.close()


def _donor_reader(node) -> TensorReader:
    if node["kind"] == "checkpoint" or node.get("weights"):
        return _open(node)
    model = build_source(node)  # a donor with random or hub weights: build it
    return ModuleReader(model, _origin(node, True))


def _tensor(root: nn.Module, name: str) -> torch.Tensor:
    *path, leaf = name.split(".")
    owner = root.get_submodule(".".join(path))
    return owner._parameters.get(leaf) if leaf in owner._parameters else owner._buffers[leaf]


def _open(node) -> TensorReader:
    try:
        return open_checkpoint(node["weights"])
    except Exception as e:  # noqa: BLE001 - the check read its header; the file changed since
        raise SynthError("S203", f"cannot read weights file '{node['weights_text']}': {e}",
                         node["weights_span"]) from None


def _key_in(path: str, source: str):
    """Checkpoint key of a tensor of the module installed at `path` of `source`."""
    rel = path[len(source) + 1:] if path != source else ""
    return lambda name: f"{rel}.{name}" if rel else name


def _origin(node, loaded: bool) -> dict:
    if node.get("weights") and loaded:
        return {"origin": "checkpoint", "file": node["weights"],
                "sha256": file_sha256(node["weights"]), "transform": "copy"}
    if node.get("pretrained") and loaded:
        return {"origin": "hub", "model": node["target"], "transform": "copy"}
    return {"origin": "init", "initialiser": f"timm:{node['target']} (random)"}


def _spec_plan(model: SynthModule, source: str) -> PartPlan:
    names = model.output_names

    def emit(g: fx.Graph, args: tuple, name: str) -> list[fx.Node]:
        if len(names) == 1:
            return [g.create_node("call_module", source, args, name=name)]
        whole = g.create_node("call_module", source, args, name=f"{name}_all")
        return [g.create_node("call_function", operator.getitem, (whole, o), name=f"{name}_{o}")
                for o in names]

    return PartPlan({source: model}, model, emit, outputs=len(names))


def inference_outputs(graph: SynthGraph) -> list[tuple[str, str]]:
    """(name, node id) of each declared output."""
    return [(name, graph.nodes[o]["of"]) for name, o in
            zip(graph.graph["output_names"], graph.outputs)]


def training_outputs(graph: SynthGraph) -> list[tuple[str, str]]:
    """The declared outputs and every value a loss reads, by name (teachers included)."""
    outs = dict(inference_outputs(graph))
    for loss in graph.graph.get("losses", []):
        for name, node_id in zip(loss["inputs"], graph.nodes[loss["node"]]["inputs"]):
            outs.setdefault(name, node_id)
    return list(outs.items())


def build_fx_graph(graph: SynthGraph, plans: dict[str, PartPlan],
                   outputs: list[tuple[str, str]] | None = None,
                   as_dict: bool = False) -> fx.Graph:
    g = fx.Graph()
    env: dict[str, list[fx.Node]] = {}
    for n in graph.topological_order():
        node = graph.nodes[n]
        kind = node["kind"]
        if kind in ("source", "checkpoint", "output", "loss"):
            continue
        args = () if kind == "item" else tuple(_value(graph, env, i) for i in node["inputs"])
        name = n.replace(".", "_").replace(":", "_")  # `hidden.0` → `hidden_0`
        if kind == "input":
            values = [g.create_node("placeholder", n, name=name)]
        elif kind == "item":
            values = [env[node["inputs"][0]][node["item"]]]
        elif kind == "part":
            plan = plans[node.get("shares") or n]
            values = plan.emit(g, args, name)
        elif kind == "layer":
            values = [g.create_node("call_module", node["module"], args, name=name)]
        elif kind == "op":
            spec = OPS[node["op"]]
            values = [g.create_node("call_function", spec.fn, args,
                                    {**spec.defaults(), **node["options"]}, name=name)]
        else:  # pragma: no cover
            raise InternalError(f"unknown node kind {kind!r}")
        for v in values:
            v.meta["synth"] = {"node": n, "name": node["name"], "kind": kind,
                               "span": str(node["span"])}
        env[n] = values
    outputs = inference_outputs(graph) if outputs is None else outputs
    values = {name: _value(graph, env, n) for name, n in outputs}
    if len(values) == 1 and not as_dict:
        g.output(next(iter(values.values())))
    else:
        g.output(values)
    g.lint()
    return g


def _value(graph: SynthGraph, env: dict[str, list[fx.Node]], n: str) -> fx.Node:
    values = env[n]
    if len(values) != 1:  # pragma: no cover - the check refuses unpacking mismatches
        raise InternalError(f"'{n}' gives {len(values)} values where one is used")
    return values[0]


def compile_graph(graph: SynthGraph, seed: int | None = None, device: str = "cpu",
                  load_weights: bool = True) -> SynthModule:
    """Build the module a checked graph describes, with weights and training sets applied.

    On ``device="meta"`` nothing is allocated and no weights are read: the module has
    the compiled structure and runs on meta tensors (used to test coverage cheaply)."""
    if not graph.graph.get("checked"):
        raise InternalError("compile_graph needs a graph that check_graph has annotated")
    if graph.graph.get("errors"):
        raise SynthError("S000", "the spec has errors; run `synth check` to see them")
    if seed is not None:
        torch.manual_seed(seed)
    root, plans, provenance = build_modules(graph, device, load_weights)
    if load_weights and device != "meta":
        apply_inheritance(graph, root, provenance)
    for a in graph.graph.get("adapters", []):
        module = root.get_submodule(a["module"])
        add_lora(module, a["rank"], a["alpha"])
        for name in ("lora_A", "lora_B"):
            provenance[f"{a['module']}.{name}"] = {
                "origin": "new", "initialiser": "lora: A kaiming-uniform, B zeros"}
    gm = _graph_module(root, build_fx_graph(graph, plans), graph.name)
    train_gm = None
    if graph.graph.get("losses"):
        train_gm = _graph_module(root, build_fx_graph(graph, plans, training_outputs(graph),
                                                     as_dict=True), f"{graph.name}Train")
    return SynthModule(gm, graph, train_gm, provenance)


def _graph_module(root: nn.Module, fx_graph: fx.Graph, name: str) -> fx.GraphModule:
    gm = fx.GraphModule(root, fx_graph, class_name=name or "SynthGraphModule")
    if gm.graph.eliminate_dead_code():  # e.g. a teacher only training reads, unused stages
        gm.graph.lint()
        gm.recompile()
    return gm
