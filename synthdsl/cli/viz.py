"""`synth viz FILE [-o OUT]`: the assembled model as text, DOT, SVG, PNG, HTML, Mermaid or
JSON. A spec with errors is still drawn, with the errors marked on the failing nodes."""

from __future__ import annotations

import sys
from pathlib import Path

from synthdsl.cli.common import EXIT_OK, EXIT_SPEC_ERROR, EXIT_USAGE, check_output, read_text
from synthdsl.graph import build_graph
from synthdsl.lang.errors import SynthErrors, render, render_all
from synthdsl.lang.parse import parse_file
from synthdsl.pipeline import check_locked
from synthdsl.viz import (GraphvizFailed, GraphvizNotFound, VizError, format_for, render_graph,
                          write_atomic)


def cmd_viz(args) -> int:
    to_file = args.output not in (None, "-")
    check_output(args.output, [args.file], "drawing")
    try:
        fmt = args.format or (format_for(args.output) if to_file else "text")
    except VizError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    text = read_text(args.file)
    # the lock beside the spec is verified before any checkpoint header is read (S206)
    graph = check_locked(build_graph(parse_file(args.file)), raise_errors=False)
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
