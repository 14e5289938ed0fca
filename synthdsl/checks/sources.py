"""Sources: every `source` built on the meta device, and its checkpoint header read.

A timm source (any kind in `library.sources.SOURCE_KINDS`) is checked by name
(S201), built once with the user's options on meta into the run's cache (S204:
timm refuses them) and, when it names weights, its checkpoint's header is
compared with the architecture (S203, S205). A spec source is checked with the
same passes as its parent; its problems are the parent's. The models and the
checked child graphs are left on the context for the later passes.
"""

from __future__ import annotations

from synthdsl.checks.context import CheckContext, run_check
from synthdsl.graph.counts import all_parameters
from synthdsl.library.cache import Sources
from synthdsl.library.sources import source_kind


def check_sources(ctx: CheckContext) -> None:
    """Build each source on meta; a source that cannot be built is broken. The models
    go into a fresh per-run cache on the graph (``graph.graph["sources"]``)."""
    sources = ctx.g.graph["sources"] = Sources(ctx.g)
    ctx.g.graph["plans"] = {}
    for s in ctx.g.of_kind("source"):
        node = ctx.g.nodes[s]
        if node["constructor"] == "spec":
            _spec_source(ctx, s, node)
            continue
        kind = source_kind(node["constructor"])  # the kinds of source, by constructor
        if kind is None:
            ctx.broken.add(s)
            continue
        if e := kind.check(node):
            ctx.errors.add(e)
            ctx.broken.add(s)
            continue
        try:
            model = sources.meta(s)
        except Exception as e:  # noqa: BLE001 - the zoo rejects the user's options
            opts = ", ".join(f"{k}={v!r}" for k, v in node["create_kwargs"].items())
            ctx.err("S204", f"{kind.name} cannot build '{node['target']}'"
                    + (f" with {opts}" if opts else ""), node["span"],
                    notes=[f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"])
            ctx.broken.add(s)
            continue
        ctx.models[s] = model
        node["params"] = sum(p.numel() for p in model.parameters())
        if ctx.weights and (e := kind.weights_problem(node, model, sources.readers)):
            ctx.errors.add(e)


def _spec_source(ctx: CheckContext, s: str, node) -> None:
    """A `.synth` file as a source: checked on its own, its errors reported here."""
    child = node.get("graph")
    if child is None:
        ctx.broken.add(s)
        return
    run_check(child, ctx.passes, raise_errors=False, weights=ctx.weights)
    for e in child.graph["errors"]:
        ctx.errors.add(e)
    if child.graph["errors"]:
        ctx.broken.add(s)
        return
    ctx.children[s] = child
    node["params"] = sum(all_parameters(child).values())
