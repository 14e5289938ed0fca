"""The commands about one spec: `synth summary`, `synth lock`, `synth compile`, `synth merge`,
`synth nodes`."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from synthdsl.build.artifact import save_compiled
from synthdsl.build.locks import checkpoints, has_lock, lock_data, lock_path, write_lock
from synthdsl.build.compile import example_dims, spec_shapes
from synthdsl.checks.budget import batch_problem, budget_limits
from synthdsl.cli.common import EXIT_OK, check_output, print_warnings, read_text
from synthdsl.graph import SynthGraph
from synthdsl.files import atomic_path
from synthdsl.lang.errors import SynthError, did_you_mean, fmt_shape
from synthdsl.library.checkpoint_write import write_safetensors
from synthdsl.library.cache import sources_of
from synthdsl.library.cuts import cut_points
from synthdsl.library.sources import SOURCE_KINDS, source_kind
from synthdsl.pipeline import check_spec, compile_locked
from synthdsl.viz.summary import (adapter_rows, render_provenance, render_summary,
                                  summary_rows, totals)


def checked(path: str, lock: bool = True, budget: str | None = None) -> SynthGraph:
    """The checked graph of the spec at `path`; raises its errors. Its lock (`SPEC.lock`)
    is verified before any checkpoint is read, unless `lock` is False. `budget` (the
    ``--budget`` flag: ``params=16GiB,activations=8GiB``) changes the check's limits."""
    with budget_limits(budget):
        return check_spec(Path(path), lock=lock)


def cmd_summary(args) -> int:
    graph = checked(args.file, budget=getattr(args, "budget", None))
    print_warnings(graph, read_text(args.file))
    if getattr(args, "json", False):
        data = {"file": args.file, "name": graph.name, "nodes": summary_rows(graph),
                "totals": totals(graph), "adapters": adapter_rows(graph)}
        if args.inheritance:
            data["provenance"] = compile_locked(graph, seed=0).provenance
        print(json.dumps(data, indent=2, default=str))
        return EXIT_OK
    print(render_summary(graph))
    if args.inheritance:
        print()
        print(render_provenance(compile_locked(graph, seed=0)))
    return EXIT_OK


#: `synth diff --exit-code`: the specs differ.
EXIT_DIFFERENT = 4


def cmd_diff(args) -> int:
    from synthdsl.viz.diff import render_diff, spec_diff

    before, after = checked(args.before), checked(args.after)
    diff = spec_diff(before, after)
    if args.json:
        print(json.dumps({"before": args.before, "after": args.after, **diff.as_dict()},
                         indent=2))
    else:
        print(render_diff(diff, args.before, args.after))
    return EXIT_DIFFERENT if args.exit_code and not diff.same else EXIT_OK


def cmd_lock(args) -> int:
    if args.verify:
        if not has_lock(args.file):
            raise SynthError("S206", f"'{args.file}' has no lock file: expected "
                             f"'{lock_path(args.file)}'",
                             hint="write one with `synth lock SPEC`")
        checked(args.file)  # the lock verified first: its errors are raised before the check
        print(f"{args.file}: checkpoints match {lock_path(args.file)}")
        return EXIT_OK
    graph = checked(args.file, lock=False)  # a new lock replaces the old one: not verified
    lock = write_lock(graph, args.file)
    n = len(lock_data(graph)["checkpoints"])
    print(f"wrote {lock} ({n} checkpoint{'s' if n != 1 else ''})")
    return EXIT_OK


def cmd_compile(args) -> int:
    check_output(args.output, [args.file], "compiled module")
    graph = checked(args.file, budget=getattr(args, "budget", None))
    check_output(args.output, checkpoints(graph), "compiled module")  # nor a weights file
    with budget_limits(getattr(args, "budget", None)):  # --batch-size against the budget
        if (too_big := batch_problem(graph, args.batch_size)) is not None:
            raise too_big
    print_warnings(graph, read_text(args.file))
    t0 = time.perf_counter()
    model = compile_locked(graph, seed=args.seed)
    t1 = time.perf_counter()
    if args.code:
        print(model.code.strip())
        print()
    # the shapes come from the plan the check made, written into the fx graph; the one
    # forward pass shows the module runs, and where a size follows from a symbolic one
    # other than the batch the plan cannot know it, so what the run gives is printed
    planned = spec_shapes(model)
    inputs = model.example_inputs(batch_size=args.batch_size, **example_dims(graph))
    with torch.no_grad():
        out = model.eval()(*inputs)
    outs = out if isinstance(out, dict) else {model.output_names[0]: out}
    if getattr(args, "json", False):
        if args.output:
            save_compiled(model, args.output)
        print(json.dumps({
            "name": graph.name, "seconds": round(t1 - t0, 3),
            "inputs": {n: {"shape": list(x.shape), "dtype": str(x.dtype).removeprefix("torch.")}
                       for n, x in zip(model.input_names, inputs)},
            "outputs": {n: list(y.shape) for n, y in outs.items()},
            "totals": model.parameter_totals(), "written": args.output}, indent=2))
        return EXIT_OK
    print(f"synth {graph.name}: compiled in {t1 - t0:.2f}s")
    for name, x in zip(model.input_names, inputs):
        dtype = "" if x.dtype == torch.float32 else " " + str(x.dtype).removeprefix("torch.")
        print(f"  input  {name}: {fmt_shape(x.shape)}{dtype}")
    for (name, y), node in zip(outs.items(), graph.outputs):
        shape = _concrete(planned.get(graph.nodes[node]["of"]), args.batch_size)
        print(f"  output {name}: {fmt_shape(shape if shape == tuple(y.shape) else y.shape)}")
    t = model.parameter_totals()
    print(f"  {t['params']:,} parameters: {t['trainable']:,} trainable, {t['frozen']:,} frozen")
    if model.frozen_norm_layers:
        print(f"  {len(model.frozen_norm_layers)} frozen normalisation layers stay in eval mode")
    if args.output:
        save_compiled(model, args.output)
        print(f"  wrote {args.output} (weights, spec, provenance and lock)")
    return EXIT_OK


def cmd_merge(args) -> int:
    """Write the merged weights of a spec's ``merge(...)`` source to a safetensors file,
    tensor by tensor, with the merge's provenance in its metadata."""
    if not args.output:
        raise SynthError("S009", "synth merge needs -o FILE.safetensors: where the merged "
                         "weights go")
    if not str(args.output).endswith(".safetensors"):
        raise SynthError("S009", f"-o '{args.output}' is not a .safetensors file; synth merge "
                         "writes safetensors", hint="name a file ending in .safetensors")
    check_output(args.output, [args.file], "merged weights")
    graph = checked(args.file)
    merges = [n for n in graph.of_kind("source") if graph.nodes[n]["constructor"] == "merge"]
    if not merges:
        raise SynthError("S101", f"spec '{graph.name}' has no merge(...) source",
                         hint='a merged source reads: source soup = merge("resnet18", '
                              'method="linear", models=["a.safetensors", "b.safetensors"])')
    name = args.source
    if name is None and len(merges) > 1:
        raise SynthError("S101", f"spec '{graph.name}' has {len(merges)} merge(...) sources",
                         hint="name one with --source: " + ", ".join(merges))
    name = name or merges[0]
    if name not in merges:
        raise SynthError("S101", f"spec '{graph.name}' has no merge(...) source '{name}'",
                         hint=did_you_mean(name, merges) or "its merges: " + ", ".join(merges))
    check_output(args.output, checkpoints(graph), "merged weights")  # nor one of its inputs
    sources = sources_of(graph)
    node = graph.nodes[name]
    reader = SOURCE_KINDS["merge"].reader(node, sources.readers, sources.pristine(name))
    provenance = {k: v for k, v in reader.origin("").items() if k not in ("key", "origin")}
    provenance["architecture"] = f"{node['options'].get('zoo', 'timm')}:{node['target']}"
    provenance["parts"] = list(node["options"].get("parts") or [])
    metadata = {"format": "synthdsl-merge/1", "spec": graph.name,
                "merge": json.dumps(provenance, sort_keys=True, default=list)}
    t0 = time.perf_counter()
    with atomic_path(args.output) as tmp:
        size = write_safetensors(tmp, reader, metadata)
    print(f"synth {graph.name}: merged '{name}' ({node['options']['method']}, "
          f"{len(reader.inputs())} input files) in {time.perf_counter() - t0:.2f}s")
    print(f"  wrote {args.output}: {len(reader.keys())} tensors, {size:,} bytes")
    return EXIT_OK


def _concrete(shape, batch_size: int) -> tuple | None:
    """A planned shape with its symbolic dimensions at the size example inputs give them."""
    if not isinstance(shape, tuple) or not all(isinstance(d, (int, str)) for d in shape):
        return None
    return tuple(batch_size if isinstance(d, str) else d for d in shape)


def cmd_nodes(args) -> int:
    """The cut points of a model (``resnet18`` for timm, ``torchvision:resnet18``), or of a
    source of a spec, with shapes."""
    model = None
    size = list(args.input) if args.input else None
    if args.target.endswith(".synth"):
        graph = checked(args.target)
        sources = [n for n in graph.of_kind("source")
                   if graph.nodes[n]["constructor"] != "spec"]
        if args.source not in sources:
            raise SynthError("S101", f"spec '{graph.name}' has no model source "
                             f"'{args.source}'", hint=did_you_mean(args.source or "", sources)
                             or "its sources: " + ", ".join(sources))
        node = dict(graph.nodes[args.source])
        model = sources_of(graph).pristine(args.source)  # the model the check built
        if size is None:
            users = [p for p in graph.successors(args.source) if p in graph
                     and graph.nodes[p]["kind"] == "part" and graph.nodes[p]["inputs"]]
            first = graph.nodes[graph.nodes[users[0]]["inputs"][0]] if users else None
            if first is not None and "shape" in first:
                size = [d for d in first["shape"][1:]]
    else:
        constructor, _, arch = args.target.rpartition(":")
        constructor = constructor or "timm"
        if source_kind(constructor) is None or constructor == "spec":
            kinds = [k for k in SOURCE_KINDS if k != "spec"]
            raise SynthError("S201", f"unknown kind of source '{constructor}'",
                             hint=did_you_mean(constructor, kinds)
                             or "write KIND:NAME with KIND one of " + ", ".join(kinds))
        node = {"constructor": constructor, "target": arch, "target_span": None,
                "create_kwargs": {}, "option_spans": {}, "span": None}
        source_kind(constructor).resolve(node, Path.cwd())  # hf:FOLDER from here
        if (e := source_kind(constructor).check(node)) is not None:
            raise e
    kind = source_kind(node["constructor"])
    arch = node["target"]
    model = model if model is not None else kind.build(node, "meta")
    if not kind.node_names(model):  # hf(...): no fx graph to cut; its submodules are parts
        return _print_submodules(arch, model)
    if size is None:
        cfg = getattr(model, "pretrained_cfg", None) or kind.data_config(model) or {}
        size = list(cfg.get("input_size", (3, 224, 224)))
    rows = cut_points(model, torch.empty([1, *size], device="meta"))
    if not any(r[2] for r in rows):  # some graphs cannot be run node by node on meta
        rows = cut_points(kind.build(node, "cpu", load_weights=False), torch.zeros([1, *size]))
    if any(r[2] for r in rows):  # what is not a tensor (asserts, sizes) cannot be cut at
        rows = [r for r in rows if r[2]]
    info = kind.feature_info(model)
    marks = {}
    for i, d in enumerate(info):  # a stage ends at its module's last node
        last = [r[0] for r in rows if r[0] == d["module"] or r[0].startswith(d["module"] + ".")]
        if last:
            marks[last[-1]] = f"stage {i} ({d['module']})"
    if getattr(args, "json", False):
        print(json.dumps({"target": arch, "input": [None, *size], "nodes": [
            {"name": name, "op": what, "shape": [None, *shape[1:]] if shape else None,
             "stage_end": marks.get(name)} for name, what, shape in rows],
            "stages": [d["module"] for d in info]}, indent=2))
        return EXIT_OK
    width = max(len(r[0]) for r in rows)
    what_w = max(len(r[1]) for r in rows)
    print(f"{arch}: {len(rows)} cut points for input [B, {', '.join(map(str, size))}]")
    print("  cut with  x = source(image, at=\"NAME\")  (a module's name cuts after its "
          "last node)")
    for name, what, shape in rows:
        mark = f"  <- {marks[name]}" if name in marks else ""
        shp = "[B, " + ", ".join(map(str, shape[1:])) + "]" if shape else "?"
        print(f"  {name.ljust(width)}  {what.ljust(what_w)}  {shp}{mark}")
    if marks:
        print("stages (stage=K / stages=[...]): " + ", ".join(
            f"{i}={d['module']}" for i, d in enumerate(info)))
    return EXIT_OK


def _print_submodules(arch: str, model, depth: int = 3) -> int:
    """A model torch.fx cannot cut: the submodules a part can take, to `depth` levels."""
    rows = [(n, type(m).__name__) for n, m in model.named_modules()
            if n and n.count(".") < depth]
    print(f"{arch}: no cut points (torch.fx cannot trace it); {len(rows)} submodules a part "
          "can take, as  y = source.NAME(x)  (a sequence also as  source.NAME[i:j](x))")
    width = max((len(n) for n, _ in rows), default=0)
    for name, what in rows:
        print(f"  {name.ljust(width)}  {what}")
    return EXIT_OK
