"""Sources: every `source` built on the meta device, and its checkpoint header read.

A timm source (any kind in `library.sources.SOURCE_KINDS`) is checked by name
(S201), built once with the user's options on meta into the run's cache (S204:
timm refuses them) and, when it names weights, its checkpoint's header is
compared with the architecture (S203, S205). A spec source is checked with the
same passes as its parent; its problems are the parent's. A spec source with
`weights=` has that file's header compared with the state of the child's module,
compiled on meta through its kind (S203, S205; under a prefix W004). The models and the
checked child graphs are left on the context for the later passes.

What each part names of its source is checked here too, from the model alone
(`library.partcheck`): a submodule or method it does not have (S202, with the
closest names), a method option the method does not take or a value of the wrong
type (S402, at the option), an item or slice outside a sequential module's children
(S202, at the brackets). Such a part is broken, so the shapes pass skips it.
"""

from __future__ import annotations

from synthdsl.checks.context import CheckContext, run_check
from synthdsl.graph.counts import all_parameters
from synthdsl.lang.ast import Span
from synthdsl.lang.errors import SynthError
from synthdsl.library.cache import Sources, sources_of
from synthdsl.library.partcheck import PartError, part_problem
from synthdsl.library.plugins import module_problem
from synthdsl.library.sources import source_kind, unknown_option


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
            if (known := unknown_option(node, e)) is not None:  # `num_clases=5`
                ctx.errors.add(known)
                ctx.broken.add(s)
                continue
            opts = ", ".join(f"{k}={v!r}" for k, v in node["create_kwargs"].items())
            ctx.err("S204", f"{kind.name} cannot build '{node['target']}'"
                    + (f" with {opts}" if opts else ""), node["span"],
                    notes=[f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"])
            ctx.broken.add(s)
            continue
        if (e := module_problem("source", node["constructor"], model, node["span"])) is not None:
            ctx.errors.add(e)
            ctx.broken.add(s)
            continue
        ctx.models[s] = model
        node["params"] = sum(p.numel() for p in model.parameters())
        _check_weights(ctx, node, kind, model)
        _check_parts(ctx, s, model)


def _check_weights(ctx: CheckContext, node, kind, model) -> None:
    """The source's weights file against its model, from the header (S203, S205); a file
    read through a key view (under a prefix, a classifier dropped) is W004."""
    node.pop("weights_view", None)  # found again by this check, or not at all
    if ctx.weights and (e := kind.weights_problem(node, model, sources_of(ctx.g).readers)):
        ctx.errors.add(e)
    elif node.get("weights_view"):
        from synthdsl.library.weight_keys import KeyView

        ctx.warn("W004", f"weights file '{node.get('weights_text')}' is read under "
                 f"{node['constructor']}('{node['target']}')'s names",
                 node.get("weights_span") or node["span"],
                 notes=KeyView.from_dict(node["weights_view"]).notes())


def _check_parts(ctx: CheckContext, s: str, model) -> None:
    """Every part of source `s` names what the model has (see the module's docstring)."""
    for p in ctx.g.successors(s):
        node = ctx.g.nodes[p]
        if node["kind"] != "part" or node.get("invalid") \
                or node.get("source") != s \
                or (node.get("shares") and not node.get("keywords")):
            continue  # a part applied again names what its first use named, but its keywords;
            # a part of another source inheriting from s is that source's to check
        problem = part_problem(model, node)
        if problem is not None:
            ctx.errors.add(part_error(ctx.g, node, problem))
            ctx.broken.add(p)


def part_error(graph, node, e: PartError) -> SynthError:
    """A part's PartError as a diagnostic at the place it is about."""
    if e.at == "option" and e.option in node["option_spans"]:
        span = node["option_spans"][e.option]
    elif e.at == "index":
        span = index_span(graph, node)
    elif e.at == "keyword" and e.option in node.get("keyword_spans", {}):
        span = node["keyword_spans"][e.option]
    else:
        span = node["callee_span"]
    return SynthError(e.code, str(e), span, hint=e.hint)


def index_span(graph, node) -> Span:
    """Where a part's item or slice (``[0:9]``) is written, brackets included (the graph
    keeps it from the AST); the callee's span for a node without one."""
    return node.get("index_span") or node["callee_span"]


def _spec_source(ctx: CheckContext, s: str, node) -> None:
    """A `.synth` file as a source: checked on its own, its errors reported here. With
    `weights=` its own sources' checkpoints are not read (nor checked): the file named
    must hold the state of its module, compiled on meta, exactly."""
    child = node.get("graph")
    if child is None:
        ctx.broken.add(s)
        return
    run_check(child, ctx.passes, raise_errors=False,
              weights=ctx.weights and not node.get("weights"))
    for e in child.graph["errors"]:
        ctx.errors.add(e)
    if child.graph["errors"]:
        ctx.broken.add(s)
        return
    ctx.children[s] = child
    node["params"] = sum(all_parameters(child).values())
    node.pop("weights_view", None)
    if node.get("weights") and ctx.weights:
        kind = source_kind("spec")
        _check_weights(ctx, node, kind, kind.build(node, "meta", load_weights=False))
