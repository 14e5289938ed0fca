"""SynthGraph → torch.fx: one `GraphModule` built node by node, wrapped as a SynthModule.

The fx graph is written by hand in the graph's topological order (the pattern of
``torch.fx.passes.split_module``): one placeholder per input, one
``call_module`` per part or layer, one ``call_function`` per operation, and an
output. Nothing is traced. Pretrained parts keep their own names, so
``state_dict()`` keys read ``vgg.features.0.weight``.

Compile executes what the check planned: the part plans it kept
(``graph.graph["plans"]``) are bound to the installed models, and the sources
come from the run's cache (``graph.graph["sources"]``): a source with a
checkpoint is the check's meta model, filled tensor by tensor from the reader
the check read its header from; any other is built for real once. Every fx node
says where it came from in ``node.meta["synth"]`` (spec node, name, kind, span,
file, line, shape), which :func:`spec_shapes` reads without a forward pass.
"""

from __future__ import annotations

import itertools
import math
import operator

import torch
from torch import fx, nn

from synthdsl.build.module import SynthModule
from synthdsl.checks.probes import probed
from synthdsl.graph import SynthGraph
from synthdsl.lang.errors import InternalError, SynthError
from synthdsl.library.cache import Sources, sources_of
from synthdsl.library.checkpoints import ModuleReader, TensorReader, file_sha256
from synthdsl.library.layers import LAYERS
from synthdsl.library.ops import OPS
from synthdsl.library.parts import Part, SpecPlan
from synthdsl.library.peft import DEFAULT, add_lora, param_names
from synthdsl.library.sources import SOURCE_KINDS
from synthdsl.library.weights import has_hidden_state, materialize, persistent_tensors, transform
from synthdsl.library.zoo_maps import joined_origin, read_joined

# A `spec(...)` source is another spec compiled whole: the source layer sits below the
# compiler, so the compiler hands it the way to do that.
SOURCE_KINDS["spec"].compile = lambda graph, **kw: compile_graph(graph, **kw)


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


def _unrestorable(model: nn.Module) -> bool:
    """Buffers no checkpoint holds (non-persistent), whatever ran the model before."""
    persistent = set(model.state_dict(keep_vars=True))
    return any(name not in persistent for name, _ in model.named_buffers())


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
                  ) -> tuple[nn.Module, dict[str, Part], dict[str, dict]]:
    """Build the modules of every part and new layer under one root.

    A source with a checkpoint installs the meta model the check built and reads only
    the tensors the installed modules keep from the file; the others are built for real
    and the check's plans are executed on them. Returns the root, the parts (plans bound
    to the installed models), and the provenance of every tensor."""
    root = nn.Module()
    sources = sources_of(graph)
    models: dict[str, nn.Module] = {}
    bound: dict[str, dict[str, Part]] = {}   # source -> parts the check bound to its model
    lazy: dict[str, TensorReader] = {}
    provenance: dict[str, dict] = {}
    for s in graph.of_kind("source"):
        if not any(_is_user(graph, p) for p in graph.successors(s)):
            continue
        node = graph.nodes[s]
        if node["constructor"] == "spec":
            models[s] = _spec_module(s, node, sources, device, load_weights, provenance)
            continue
        kind = SOURCE_KINDS[node["constructor"]]
        if kind.has_reader(node) and load_weights and device != "meta":
            model, parts = sources.take(s)  # meta once: the check's model is filled in place
            if model is None or (has_hidden_state(model) and not _unrestorable(model)):
                sources.meta(s)  # a new one: taken already, or tensors cached by a forward
                model, parts = sources.take(s)
            # tensors no checkpoint holds (non-persistent buffers): made by the kind, or
            # the model is built for real
            if not has_hidden_state(model) or kind.restore_hidden(model, "cpu"):
                models[s], bound[s], lazy[s] = model, parts, _open(node, sources, model)
                continue
        if device == "meta":  # a structure only: the check's meta model serves
            model, parts = sources.take(s)
            if model is not None:
                models[s], bound[s] = model, parts
                continue
        models[s] = sources.real(s, device if load_weights else "cpu", load_weights)
    parts: dict[str, Part] = {}
    for n in graph.of_kind("part"):
        node = graph.nodes[n]
        if node.get("shares"):
            continue
        s = node["source"]
        model = models[s]
        if isinstance(model, SynthModule):
            parts[n] = SpecPlan(s, outputs=len(model.output_names),
                                output_names=tuple(model.output_names)).bind(model)
        elif n in bound.get(s, {}):
            parts[n] = bound[s][n]
        else:
            plan = sources.plan(n)
            if plan is None:  # a graph checked without keeping its plans
                users = [p for p in graph.successors(s) if _is_user(graph, p)]
                plan = SOURCE_KINDS[graph.nodes[s]["constructor"]].plan(
                    model, node, exclusive=len(users) == 1)
            parts[n] = plan.bind(model)
    # shallow paths first: a whole source installed at `vgg` already holds `vgg.features`
    installs = sorted(((p, m) for part in parts.values() for p, m in part.modules.items()),
                      key=lambda pm: pm[0].count("."))
    for path, module in installs:
        if not _reachable(root, path):
            _install(root, path, module)
    for n, part in parts.items():
        s = graph.nodes[n]["source"]
        for path, module in part.modules.items():
            if s in lazy:
                try:
                    materialize(module, _key_in(path, s), lazy[s], provenance, path, s)
                except (ValueError, OSError) as e:  # the file changed since the check
                    node = graph.nodes[s]
                    raise SynthError("S205", f"{_files_text(node)} changed since the spec "
                                     f"was checked: {e}",
                                     node.get("weights_span") or node["span"]) from None
            elif not isinstance(models[s], SynthModule):
                origin = _origin(graph.nodes[s], load_weights)
                for name, _, _ in persistent_tensors(module):
                    provenance[f"{path}.{name}"] = {"source": s, **origin,
                                                    "key": _key_in(path, s)(name)}
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
    return root, parts, provenance


def _spec_module(s: str, node, sources: Sources, device: str, load_weights: bool,
                 provenance: dict[str, dict]) -> SynthModule:
    """A spec source compiled whole (compile_graph of its own graph). With `weights=` it is
    built without its own sources' weights, then every tensor is read from that file
    strictly; either way its provenance is under the source's name, via the spec."""
    weighted = bool(node.get("weights")) and load_weights and device != "meta"
    child = sources.real(s, device, load_weights and not node.get("weights"))
    own: dict[str, dict] = {}
    if weighted:
        try:
            materialize(child, str, _open(node, sources, child), own, s, s)
        except (ValueError, OSError) as e:  # the file changed since the check
            raise SynthError("S205", f"{_files_text(node)} changed since the spec was "
                             f"checked: {e}", node["weights_span"]) from None
    else:
        own = {f"{s}.{k}": v for k, v in child.provenance.items()}
    provenance.update({k: {**v, "via": f"spec:{node['target']}"} for k, v in own.items()})
    return child


def apply_inheritance(graph: SynthGraph, root: nn.Module, provenance: dict[str, dict]) -> None:
    """Copy every inherited tensor into place, transformed as its edge says."""
    readers: dict[str, TensorReader] = {}
    sources = sources_of(graph)
    for rec in graph.graph.get("inherits", []):
        donor = rec["donor"]
        if donor not in readers:
            readers[donor] = _donor_reader(graph, donor, sources)
        reader, opts = readers[donor], rec["options"]
        for m in rec.get("mapping", []):
            target = _tensor(root, m["target"])
            # a key list is one tensor joined from several (map="hf_vit_to_timm": q, k, v)
            value, _ = transform(read_joined(reader, m["key"]), tuple(target.shape),
                                 opts.get("rows"), opts.get("adapt"), opts.get("prefix_tokens"))
            with torch.no_grad():
                target.copy_(value.to(target.dtype))
            provenance[m["target"]] = {"origin": "inherited",
                                       "from": rec["donor_label"],
                                       **{k: v for k, v in joined_origin(reader, m["key"]).items()
                                          if k != "origin"},
                                       "transform": m["transform"]}


def _donor_reader(graph: SynthGraph, donor: str, sources: Sources) -> TensorReader:
    node = graph.nodes[donor]
    if node["kind"] == "checkpoint":
        return _open(node, sources)
    if SOURCE_KINDS[node["constructor"]].has_reader(node):
        return _open(node, sources, sources.pristine(donor))
    model = sources.real(donor)  # a donor with random or hub weights: build it
    return ModuleReader(model, _origin(node, True))


def _tensor(root: nn.Module, name: str) -> torch.Tensor:
    *path, leaf = name.split(".")
    owner = root.get_submodule(".".join(path))
    return owner._parameters.get(leaf) if leaf in owner._parameters else owner._buffers[leaf]


def _files_text(node) -> str:
    if node.get("weights_text"):
        return f"weights file '{node['weights_text']}'"
    return "the files of " + ", ".join(f"'{f['text']}'" for f in node.get("files", ()))


def _open(node, sources: Sources, model: nn.Module | None = None) -> TensorReader:
    """The run's reader of the node's tensors (of the files the check read headers from)."""
    try:
        if node["kind"] == "checkpoint":
            return sources.reader(node["weights"])
        return SOURCE_KINDS[node["constructor"]].reader(node, sources.readers, model)
    except Exception as e:  # noqa: BLE001 - the check read its header; the file changed since
        raise SynthError("S203", f"cannot read {_files_text(node)}: {e}",
                         node.get("weights_span") or node["span"]) from None


def _key_in(path: str, source: str):
    """Checkpoint key of a tensor of the module installed at `path` of `source`."""
    rel = path[len(source) + 1:] if path != source else ""
    return lambda name: f"{rel}.{name}" if rel else name


def _origin(node, loaded: bool) -> dict:
    if node.get("weights") and loaded:
        return {"origin": "checkpoint", "file": node["weights"],
                "sha256": file_sha256(node["weights"]), "transform": "copy"}
    if node.get("pretrained") and loaded:
        hub = {"origin": "hub", "model": node["target"], "transform": "copy"}
        return {**hub, "weights": node["zoo_weights"]} if node.get("zoo_weights") else hub
    return {"origin": "init", "initialiser": f"{node['constructor']}:{node['target']} (random)"}


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


def build_fx_graph(graph: SynthGraph, plans: dict[str, Part],
                   outputs: list[tuple[str, str]] | None = None,
                   as_dict: bool = False) -> fx.Graph:
    g = fx.Graph()
    env: dict[str, list[fx.Node]] = {}
    lines = str(graph.graph.get("text", "")).splitlines()
    for n in graph.topological_order():
        node = graph.nodes[n]
        kind = node["kind"]
        if kind in ("source", "checkpoint", "output", "loss"):
            continue
        before = len(g.nodes)
        args = () if kind == "item" else tuple(_value(graph, env, i) for i in node["inputs"])
        name = n.replace(".", "_").replace(":", "_")  # `hidden.0` → `hidden_0`
        if kind == "input":
            values = [g.create_node("placeholder", n, name=name)]
        elif kind == "item":
            values = [env[node["inputs"][0]][node["item"]]]
        elif kind == "part":
            plan = plans[node.get("shares") or n]
            keywords = {k: _value(graph, env, i) for k, i in (node.get("keywords") or {}).items()}
            # keyword data inputs become the call's kwargs (a plugin's own plan may not
            # take them, and is asked only when there are some)
            values = plan.emit(g, args, name, keywords) if keywords else plan.emit(g, args, name)
        elif kind == "layer":
            values = [g.create_node("call_module", node["module"], args, name=name)]
        elif kind == "op":
            spec = OPS[node["op"]]
            values = [g.create_node("call_function", spec.fn, args,
                                    {**spec.defaults(), **node["options"]}, name=name)]
            if node.get("unpack", 1) > 1:  # an operation giving several values: one each
                values = [g.create_node("call_function", operator.getitem, (values[0], i),
                                        name=f"{name}_{i}") for i in range(node["unpack"])]
        else:  # pragma: no cover
            raise InternalError(f"unknown node kind {kind!r}")
        shapes, dtypes = node.get("shapes") or (), node.get("dtypes") or ()
        for i, v in enumerate(values if kind != "item" else ()):  # an item's is its part's
            several = len(values) > 1 and i < len(shapes)
            v.meta["synth"] = _synth_meta(
                n, node, shapes[i] if several else node.get("shape"),
                i if len(values) > 1 else None,
                dtypes[i] if several and i < len(dtypes) else node.get("dtype"))
        # every fx node the spec node wrote (a cut's extractor call, a method's owner too)
        # points at its line; fx prints it beside the generated code when a call fails
        trace = _stack_trace(graph, node, lines)
        for v in itertools.islice(reversed(g.nodes), len(g.nodes) - before):
            v.meta.setdefault("synth", {**_synth_meta(n, node, None, None), "value": False})
            if v.op != "placeholder":
                v.meta["stack_trace"] = trace
        env[n] = values
    outputs = inference_outputs(graph) if outputs is None else outputs
    values = {name: _value(graph, env, n) for name, n in outputs}
    if len(values) == 1 and not as_dict:
        g.output(next(iter(values.values())))
    else:
        g.output(values)
    g.lint()
    return g


def _synth_meta(n: str, node, shape, index: int | None, dtype: str | None = None) -> dict:
    """What an fx node says of where it came from: the spec node, its name and kind, its
    span (``file:line:col``; file and line apart too), its output shape with symbolic
    dimensions by name (``('B', 10)``) and dtype (``float32``), and which of several
    values it is."""
    span = node["span"]
    return {"node": n, "name": node["name"], "kind": node["kind"], "span": str(span),
            "file": getattr(span, "file", None), "line": getattr(span, "line", None),
            "shape": tuple(shape) if shape is not None else None, "dtype": dtype,
            "index": index,
            "value": True}


def _stack_trace(graph: SynthGraph, node, lines: list[str]) -> str:
    """The spec line of a node in the form of a Python traceback frame, which torch.fx
    writes as a comment above the node's line of generated code."""
    span = node["span"]
    line = getattr(span, "line", None) or 0
    file = getattr(span, "file", None) or graph.graph.get("file") or "<spec>"
    text = lines[line - 1].strip() if 0 < line <= len(lines) else node["label"]
    return f'File "{file}", line {line}, in {node["name"]}\n    {text}'


def spec_shapes(module: fx.GraphModule | SynthModule) -> dict[str, tuple | None]:
    """The output shape of every spec node in a compiled module, read from the fx
    ``node.meta["synth"]`` compile wrote (no forward pass): spec node id -> shape, with
    symbolic dimensions by name; a node giving several values has a tuple of shapes.

    >>> from synthdsl.pipeline import compile_spec
    >>> spec_shapes(compile_spec("synth A input x: [B, 8] h = Linear(x, out=4) output h"))
    {'x': ('B', 8), 'h': ('B', 4)}
    """
    gm = module.graph_module if isinstance(module, SynthModule) else module
    single: dict[str, tuple | None] = {}
    several: dict[str, dict[int, tuple | None]] = {}
    for fx_node in gm.graph.nodes:
        synth = fx_node.meta.get("synth")
        if synth is None or not synth.get("value", True):
            continue
        if synth.get("index") is None:
            single.setdefault(synth["node"], synth.get("shape"))
        else:
            several.setdefault(synth["node"], {})[synth["index"]] = synth.get("shape")
    for n, shapes in several.items():
        single[n] = tuple(shapes[i] for i in sorted(shapes))
    return single


def example_dims(graph: SynthGraph) -> dict[str, int]:
    """Sizes for the symbolic dimensions that are more than a batch size (``H``, ``W``,
    ``T``), for example inputs: sizes the check ran the whole graph with on meta, every
    layer keeping its sizes. Empty when every symbol is a batch size (any size serves).

    >>> from synthdsl.pipeline import check_spec
    >>> example_dims(check_spec("synth A input x: [B, 3, H, W] y = Conv2d(x, out=4, "
    ...                         "kernel=3) output y"))
    {'H': 32, 'W': 32}
    """
    return dict(probed(graph).example_dims)


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
    try:
        root, plans, provenance = build_modules(graph, device, load_weights)
        if load_weights and device != "meta":
            apply_inheritance(graph, root, provenance)
    finally:
        sources_of(graph).close()  # every checkpoint was read: maps and handles go
    for a in graph.graph.get("adapters", []):
        module = root.get_submodule(a["module"])
        name = a.get("name", DEFAULT)
        add_lora(module, a["rank"], a["alpha"], a.get("dropout", 0.0), name)
        for name in param_names(name):
            provenance[f"{a['module']}.{name}"] = {
                "origin": "new", "initialiser": "lora: A kaiming-uniform, B zeros"}
    gm = _graph_module(root, build_fx_graph(graph, plans), graph.name)
    train_gm = None
    if graph.graph.get("losses"):
        train_gm = _graph_module(root, build_fx_graph(graph, plans, training_outputs(graph),
                                                     as_dict=True), f"{graph.name}Train")
    model = SynthModule(gm, graph, train_gm, provenance)
    _learned_scales(model, graph, device)
    return model


def _learned_scales(model: SynthModule, graph: SynthGraph, device: str) -> None:
    """The logit scale of every contrastive loss that learns its temperature, as the
    check named it (``loss.logit_scale_K``), at ``log(1 / temperature)``."""
    from synthdsl.checks.losses import scale_name

    learned = [d for d in graph.graph.get("losses", [])
               if d["options"].get("learn_temperature")]
    if not learned:
        return
    holder = nn.Module()
    for d in learned:
        name = scale_name(d["node"]).rpartition(".")[2]
        t = float(d["options"].get("temperature", 0.07))
        holder.register_parameter(name, nn.Parameter(
            torch.tensor(math.log(1 / t), device=device)))
        model.provenance[f"loss.{name}"] = {"origin": "new",
                                            "initialiser": f"contrastive: log(1/{t:g})"}
    model.loss = holder
    model._apply_training_sets()


def _graph_module(root: nn.Module, fx_graph: fx.Graph, name: str) -> fx.GraphModule:
    gm = fx.GraphModule(root, fx_graph, class_name=name or "SynthGraphModule")
    if gm.graph.eliminate_dead_code():  # e.g. a teacher only training reads, unused stages
        gm.graph.lint()
        gm.recompile()
    return gm
