"""Unused values: a source or value that reaches no output and no loss (W001, a warning).

Skipped when the check found errors: then "unused" is mostly their echo.
"""

from __future__ import annotations

from synthdsl.checks.context import CheckContext


def check_unused(ctx: CheckContext) -> None:
    """Warn about every node that no output or loss depends on, in topological order."""
    if ctx.errors.errors:
        return
    g = ctx.g
    used = g.reaching([*g.outputs, *g.of_kind("loss")])
    for n in g.topological_order():
        node = g.nodes[n]
        if n not in used and node["kind"] not in ("output", "loss"):
            what = "source" if node["kind"] == "source" else "value"
            ctx.warn("W001", f"{what} '{node['name']}' does not reach any output", node["span"],
                     hint="remove it, or output it")
