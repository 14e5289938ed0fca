"""`synth check FILE [--json]`: every problem of a spec, with line and column; exit 1 if any.

The spec is parsed before anything heavy is loaded: a syntax error is reported without
loading torch. Past the syntax, the graph, the check and the lock need it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from synthdsl.cli.common import EXIT_OK, EXIT_SPEC_ERROR, read_text
from synthdsl.lang.ast import Spec
from synthdsl.lang.errors import SynthError, SynthErrors, flatten, render, render_all
from synthdsl.lang.parse import parse_file


def _check(spec: Spec, budget: str | None = None):
    """The check, with the lock beside the spec verified before any checkpoint is read."""
    from synthdsl.checks.budget import budget_limits
    from synthdsl.graph import build_graph
    from synthdsl.pipeline import check_locked

    with budget_limits(budget):  # --budget params=16GiB,activations=8GiB
        return check_locked(build_graph(spec), raise_errors=False)


def cmd_check(args) -> int:
    text = read_text(args.file)
    try:
        graph = _check(parse_file(args.file), getattr(args, "budget", None))
    except SynthError as e:  # syntax: stops at the first error
        errors, warnings = flatten(e), []
    else:
        errors, warnings = graph.graph["errors"], graph.graph["warnings"]
    if args.json:
        print(json.dumps({"file": args.file, "ok": not errors,
                          "diagnostics": [d.to_dict() for d in [*errors, *warnings]]}, indent=2))
        return EXIT_SPEC_ERROR if errors else EXIT_OK
    for w in warnings:
        print(render(w, text), file=sys.stderr)
        print(file=sys.stderr)
    if errors:
        print(render_all(SynthErrors(errors), text), file=sys.stderr)
        return EXIT_SPEC_ERROR
    locked = Path(args.file + ".lock").exists()
    print(f"{args.file}: ok" + (" (checkpoints match the lock)" if locked else ""))
    return EXIT_OK
