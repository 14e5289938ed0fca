"""The `synth` command line.

    synth check FILE [--json]      exit 0 when the spec is sound, 1 with every problem found
    synth summary FILE             a table of nodes: kind, output shape, parameters, frozen
    synth compile FILE [--code]    build the module, run it once, print shapes and totals
                    [-o OUT]       ... and write it, with its spec and provenance
    synth viz FILE [-o OUT]        the assembled model as text, DOT, SVG, PNG, HTML, Mermaid, JSON
    synth nodes ARCH|FILE SOURCE   the points a timm model can be cut at, with shapes
    synth lock FILE [--verify]     pin (or verify) the checkpoints a spec reads
    synth train FILE --data D -o RUN   train a spec: checkpoints, a JSON-lines log, --resume
    synth eval TARGET --data D     accuracy, per-class and macro P/R/F1, confusion matrix
    synth demo                     the synthesis loop on MNIST: synthesised vs scratch vs distilled

A mistake in a spec is printed like a compiler prints it (file:line:col, the
line, a caret, a code and a hint) and exits 1; the CLI never shows a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Sequence

from synthdsl.lang.errors import SynthError, SynthErrors, flatten, render, render_all

EXIT_OK, EXIT_SPEC_ERROR, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3


def _read(path: str) -> str:
    try:
        return Path(path).read_text("utf-8")
    except (OSError, UnicodeDecodeError):
        return ""


def _checked(path: str):
    from synthdsl.checks import check_graph
    from synthdsl.graph import build_graph
    from synthdsl.lang.parse import parse_file

    return check_graph(build_graph(parse_file(path)))


def _print_warnings(graph, text: str) -> None:
    for w in graph.graph.get("warnings", ()):
        print(render(w, text), file=sys.stderr)
        print(file=sys.stderr)


def cmd_check(args) -> int:
    from synthdsl.checks import check_graph
    from synthdsl.graph import build_graph
    from synthdsl.lang.parse import parse_file

    text = _read(args.file)
    try:
        graph = check_graph(build_graph(parse_file(args.file)), raise_errors=False)
    except SynthError as e:  # syntax: stops at the first error
        errors, warnings = flatten(e), []
    else:
        errors, warnings = graph.graph["errors"], graph.graph["warnings"]
    if not errors and args.json:
        from synthdsl.build.artifact import verify_lock

        errors = verify_lock(graph, args.file)
    if args.json:
        print(json.dumps({"file": args.file, "ok": not errors,
                          "diagnostics": [d.to_dict() for d in [*errors, *warnings]]}, indent=2))
        return EXIT_SPEC_ERROR if errors else EXIT_OK
    for w in warnings:
        print(render(w, text), file=sys.stderr)
        print(file=sys.stderr)
    if not errors:
        from synthdsl.build.artifact import verify_lock

        errors = verify_lock(graph, args.file)
    if errors:
        print(render_all(SynthErrors(errors), text), file=sys.stderr)
        return EXIT_SPEC_ERROR
    locked = Path(args.file + ".lock").exists()
    print(f"{args.file}: ok" + (" (checkpoints match the lock)" if locked else ""))
    return EXIT_OK


def cmd_summary(args) -> int:
    from synthdsl.viz.summary import render_provenance, render_summary

    graph = _checked(args.file)
    _print_warnings(graph, _read(args.file))
    print(render_summary(graph))
    if args.inheritance:
        from synthdsl.build.compile import compile_graph

        print()
        print(render_provenance(compile_graph(graph, seed=0)))
    return EXIT_OK


def cmd_lock(args) -> int:
    from synthdsl.build.artifact import lock_data, verify_lock, write_lock

    graph = _checked(args.file)
    if args.verify:
        errors = verify_lock(graph, args.file)
        if errors:
            print(render_all(SynthErrors(errors), _read(args.file)), file=sys.stderr)
            return EXIT_SPEC_ERROR
        print(f"{args.file}: checkpoints match {args.file}.lock")
        return EXIT_OK
    lock = write_lock(graph, args.file)
    n = len(lock_data(graph)["checkpoints"])
    print(f"wrote {lock} ({n} checkpoint{'s' if n != 1 else ''})")
    return EXIT_OK


def cmd_compile(args) -> int:
    import torch

    from synthdsl.build.compile import compile_graph
    from synthdsl.checks import fmt_shape

    graph = _checked(args.file)
    _print_warnings(graph, _read(args.file))
    t0 = time.perf_counter()
    model = compile_graph(graph, seed=args.seed)
    t1 = time.perf_counter()
    if args.code:
        print(model.code.strip())
        print()
    inputs = model.example_inputs(batch_size=args.batch_size)
    with torch.no_grad():
        out = model.eval()(*inputs)
    outs = out if isinstance(out, dict) else {model.output_names[0]: out}
    print(f"synth {graph.name}: compiled in {t1 - t0:.2f}s")
    for name, x in zip(model.input_names, inputs):
        print(f"  input  {name}: {fmt_shape(x.shape)}")
    for name, y in outs.items():
        print(f"  output {name}: {fmt_shape(y.shape)}")
    t = model.parameter_totals()
    print(f"  {t['params']:,} parameters: {t['trainable']:,} trainable, {t['frozen']:,} frozen")
    if model.frozen_norm_layers:
        print(f"  {len(model.frozen_norm_layers)} frozen normalisation layers stay in eval mode")
    if args.output:
        from synthdsl.build.artifact import save_compiled

        save_compiled(model, args.output)
        print(f"  wrote {args.output} (weights, spec, provenance and lock)")
    return EXIT_OK


def cmd_nodes(args) -> int:
    """The cut points of a timm architecture, or of a source of a spec, with shapes."""
    import torch

    from synthdsl.lang.errors import did_you_mean
    from synthdsl.library.parts import cut_points, feature_info
    from synthdsl.library.sources import check_arch, create_timm

    kwargs: dict = {}
    size = list(args.input) if args.input else None
    if args.target.endswith(".synth"):
        graph = _checked(args.target)
        sources = [n for n in graph.of_kind("source") if graph.nodes[n]["constructor"] == "timm"]
        if args.source not in sources:
            raise SynthError("S101", f"spec '{graph.name}' has no timm source "
                             f"'{args.source}'", hint=did_you_mean(args.source or "", sources)
                             or "its sources: " + ", ".join(sources))
        node = graph.nodes[args.source]
        arch, kwargs = node["target"], dict(node["create_kwargs"])
        if size is None:
            users = [p for p in graph.successors(args.source) if p in graph
                     and graph.nodes[p]["kind"] == "part" and graph.nodes[p]["inputs"]]
            first = graph.nodes[graph.nodes[users[0]]["inputs"][0]] if users else None
            if first is not None and "shape" in first:
                size = [d for d in first["shape"][1:]]
    else:
        arch = args.target
        if (e := check_arch({"target": arch, "target_span": None})) is not None:
            raise e
    model = create_timm(arch, kwargs, "meta")
    if size is None:
        size = list(model.pretrained_cfg.get("input_size", (3, 224, 224)))
    rows = cut_points(model, torch.empty([1, *size], device="meta"))
    if not any(r[2] for r in rows):  # some graphs cannot be run node by node on meta
        rows = cut_points(create_timm(arch, kwargs, "cpu"), torch.zeros([1, *size]))
    if any(r[2] for r in rows):  # what is not a tensor (asserts, sizes) cannot be cut at
        rows = [r for r in rows if r[2]]
    marks = {}
    for i, d in enumerate(feature_info(model)):  # a stage ends at its module's last node
        last = [r[0] for r in rows if r[0] == d["module"] or r[0].startswith(d["module"] + ".")]
        if last:
            marks[last[-1]] = f"stage {i} ({d['module']})"
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
            f"{i}={d['module']}" for i, d in enumerate(feature_info(model))))
    return EXIT_OK


def cmd_viz(args) -> int:
    from synthdsl.checks import check_graph
    from synthdsl.graph import build_graph
    from synthdsl.lang.parse import parse_file
    from synthdsl.viz import (GraphvizFailed, GraphvizNotFound, VizError, format_for,
                              render_graph, write_atomic)

    to_file = args.output not in (None, "-")
    try:
        fmt = args.format or (format_for(args.output) if to_file else "text")
    except VizError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    text = _read(args.file)
    graph = check_graph(build_graph(parse_file(args.file)), raise_errors=False)
    try:
        data = render_graph(graph, fmt, expand=args.expand or (), depth=args.depth,
                            collapse=args.collapse or ())
    except (GraphvizNotFound, GraphvizFailed, VizError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    if to_file:
        write_atomic(Path(args.output), data)
    elif isinstance(data, bytes):
        sys.stdout.buffer.write(data)
    else:
        sys.stdout.write(data)
    errors, warnings = graph.graph.get("errors", []), graph.graph.get("warnings", [])
    for w in warnings:
        print(render(w, text), file=sys.stderr)
        print(file=sys.stderr)
    if errors:
        print(render_all(SynthErrors(errors), text), file=sys.stderr)
        where = args.output if to_file else "the drawing"
        print(f"{where}: drawn with {len(errors)} error{'s' if len(errors) != 1 else ''} "
              "marked on the failing nodes", file=sys.stderr)
        return EXIT_SPEC_ERROR
    if to_file:
        print(f"wrote {args.output} ({fmt})")
    return EXIT_OK


def cmd_train(args) -> int:
    from synthdsl.train.trainer import main_train

    return main_train(args)


def cmd_eval(args) -> int:
    from synthdsl.train.evaluate import main_eval

    return main_eval(args)


def cmd_demo(args) -> int:
    from synthdsl.train.demo import main_demo

    return main_demo(args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="synth", description="Build new models out of "
                                "pretrained ones from declarative .synth specs.")
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("check", help="check a spec; every problem, with line and column")
    c.add_argument("file")
    c.add_argument("--json", action="store_true", help="diagnostics as JSON")
    c.set_defaults(func=cmd_check)

    s = sub.add_parser("summary", help="a table of nodes, shapes and parameters")
    s.add_argument("file")
    s.add_argument("--inheritance", action="store_true",
                   help="also where every tensor comes from (builds the module)")
    s.set_defaults(func=cmd_summary)

    lk = sub.add_parser("lock", help="pin the checkpoints a spec reads (SPEC.lock)")
    lk.add_argument("file")
    lk.add_argument("--verify", action="store_true", help="check them against the lock")
    lk.set_defaults(func=cmd_lock)

    k = sub.add_parser("compile", help="build the module and run one forward pass")
    k.add_argument("file")
    k.add_argument("--code", action="store_true", help="print the generated fx code")
    k.add_argument("--seed", type=int, default=0, help="seed for new layers (default 0)")
    k.add_argument("--batch-size", type=int, default=2)
    k.add_argument("-o", "--output", help="write the compiled module (.safetensors)")
    k.set_defaults(func=cmd_compile)

    n = sub.add_parser("nodes", help="the cut points of a timm model, with their shapes")
    n.add_argument("target", help="a timm architecture, or a .synth file")
    n.add_argument("source", nargs="?", help="with a .synth file: the name of its source")
    n.add_argument("--input", type=int, nargs="+", metavar="N",
                   help="input size without the batch, e.g. --input 3 224 224")
    n.set_defaults(func=cmd_nodes)

    v = sub.add_parser("viz", help="draw the assembled model: text, DOT, SVG, PNG, HTML, "
                       "Mermaid or JSON")
    v.add_argument("file")
    v.add_argument("-o", "--output", metavar="OUT",
                   help="write here; the suffix picks the format (.dot .svg .png .html .mmd "
                   ".json .txt); without it, a text tree on the terminal")
    v.add_argument("--format", choices=("text", "dot", "svg", "png", "html", "mmd", "json"),
                   help="the format, whatever the suffix (to stdout without -o)")
    v.add_argument("--expand", action="append", metavar="SOURCE",
                   help="open a source into its torch.fx graph, grouped by module "
                   "(repeatable; 'all' for every source)")
    v.add_argument("--depth", type=int, default=1, metavar="N",
                   help="module levels an expanded source is grouped to (default 1)")
    v.add_argument("--collapse", action="append", metavar="SOURCE",
                   help="draw a source as one node (repeatable; 'all' for every source)")
    v.set_defaults(func=cmd_viz)

    from synthdsl.train import demo as _demo, evaluate as _evaluate, trainer as _train

    t = sub.add_parser("train", help="train a spec on data: checkpoints, log, --resume, DDP")
    _train.add_arguments(t)
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="accuracy, precision, recall, F1 and the confusion matrix")
    _evaluate.add_arguments(e)
    e.set_defaults(func=cmd_eval)

    d = sub.add_parser("demo", help="the synthesis loop, measured: fuse two models trained on "
                       "digits 0-4 into one for 5-9, against training from scratch")
    _demo.add_arguments(d)
    d.set_defaults(func=cmd_demo)
    return p


def run(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except SynthError as e:
        print(render_all(e, _read(getattr(args, "file", "") or "")), file=sys.stderr)
        return EXIT_SPEC_ERROR
    except BrokenPipeError:  # `synth nodes ... | head`
        sys.stderr.close()
        return EXIT_OK
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - a bug of ours: say so, briefly
        print(f"internal error: {type(e).__name__}: {e}\n"
              "This is a bug in synthdsl, not in your spec; set SYNTH_TRACEBACK=1 to see "
              "where it happened.", file=sys.stderr)
        if os.environ.get("SYNTH_TRACEBACK"):
            raise
        return EXIT_INTERNAL


def main(argv: Sequence[str] | None = None) -> None:
    sys.exit(run(argv))


if __name__ == "__main__":  # pragma: no cover
    main()
