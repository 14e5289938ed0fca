"""AST → SynthGraph: names resolved, expressions expanded into nodes.

The :class:`SynthGraph` (a ``networkx.DiGraph``) is the one intermediate form:
checks, summary, visualisation and the compiler read it, and none of them reads
the AST or the text again. Building it never raises for a mistake in the spec;
problems are recorded as diagnostics on the graph (``graph.diagnostics``) so a
broken spec can still be summarised and drawn, and :func:`check_graph` reports
them together with its own.

What each node, edge and the graph itself may hold (the builder's keys, and
those the check adds later) is written down in :mod:`synthdsl.graph.ir`, one
record per node kind; ``graph.validate()`` checks a graph against them.

Node ids: an input, source or one-node value has its name; an assignment that
makes several nodes numbers them in the order they run (``h.0``, ``h.1``), and
``h`` names the last; outputs are ``output:NAME``, losses ``loss:N``, checkpoint
donors ``checkpoint:FILE``.

>>> from synthdsl.lang.parse import parse_spec
>>> g = build_graph(parse_spec(
...     "synth A input x: [B, 8] h = Linear(x, out=4) |> ReLU output h"))
>>> [(n, g.nodes[n]["kind"]) for n in g.topological_order()]
[('x', 'input'), ('h.0', 'layer'), ('h.1', 'layer'), ('output:h', 'output')]
"""

from __future__ import annotations

import functools
import keyword
from pathlib import Path
from typing import Any, Iterator

from torch import nn

from synthdsl.lang import ast
from synthdsl.lang.errors import SynthError, did_you_mean
from synthdsl.lang.parse import no_cyclic_gc
from synthdsl.library.aliases import alias_hint
from synthdsl.library.layers import LAYERS
from synthdsl.library.ops import OPS
from synthdsl.lang.printer import format_index
from synthdsl.graph.ir import SynthGraph
from synthdsl.graph.keywords import KeywordInputs
from synthdsl.graph.statements import (_IMPORTS_BUILT, PART_METHODS, SOURCE_CONSTRUCTORS,
                                       SOURCE_OPTIONS, StatementBuilder, spec_texts)


__all__ = ["PART_METHODS", "SOURCE_CONSTRUCTORS", "SOURCE_OPTIONS", "SynthGraph", "build_graph",
           "spec_texts"]


# ---- names -----------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _module_attributes() -> frozenset[str]:
    """Every attribute of the compiled module: a value name becomes a child of the fx
    `GraphModule` and of :class:`synthdsl.build.module.SynthModule`, so a name that is
    already one of their attributes (``graph``, ``code``, ``_modules``, ``losses``, ...)
    cannot be. The GraphModule's come from the class and an instance; the SynthModule's
    from its class's source (its methods and properties, and what ``__init__`` and the
    other methods set on ``self``), since the graph layer does not import the compiler."""
    import ast as pyast

    from torch import fx

    names = set(dir(fx.GraphModule)) | set(vars(fx.GraphModule(nn.Module(), fx.Graph())))
    source = Path(__file__).resolve().parents[1] / "build" / "module.py"
    tree = pyast.parse(source.read_text("utf-8"))
    cls = next(n for n in tree.body if isinstance(n, pyast.ClassDef) and n.name == "SynthModule")
    for node in pyast.walk(cls):
        if isinstance(node, (pyast.FunctionDef, pyast.AsyncFunctionDef)) and node in cls.body:
            names.add(node.name)
        elif isinstance(node, pyast.Attribute) and isinstance(node.ctx, pyast.Store) \
                and isinstance(node.value, pyast.Name) and node.value.id == "self":
            names.add(node.attr)
        elif isinstance(node, pyast.Call) and pyast.unparse(node.func) == "object.__setattr__" \
                and len(node.args) >= 2 and isinstance(node.args[1], pyast.Constant):
            names.add(node.args[1].value)
        elif isinstance(node, (pyast.Assign, pyast.AnnAssign)) and node in cls.body:
            targets = node.targets if isinstance(node, pyast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, pyast.Name))
    return frozenset(names)


@functools.lru_cache(maxsize=4096)
def _reserved(name: str) -> bool:
    return keyword.iskeyword(name) or hasattr(nn.Module, name) or name == "self" \
        or name in _module_attributes()


class _Builder(KeywordInputs, StatementBuilder):
    """Names, then data flow: inputs, calls, pipes, re-applied values and outputs."""

    def __init__(self, spec: ast.Spec, stack: tuple[str, ...] = ()) -> None:
        self.spec = spec
        self.stack = stack  # the spec files being built, outermost first (import cycles)
        self.pending: list[tuple[str, ast.Ref]] = []  # re-applied values, resolved last
        self.g = SynthGraph()
        self.g.graph.update(
            name=spec.name, file=spec.file, text=spec.text,
            base_dir=str(Path(spec.file).resolve().parent) if spec.file else str(Path.cwd()),
            inputs=[], outputs=[], output_names=[], rules=[], diagnostics=[])
        self.values: dict[str, str] = {}      # value name -> node id (or alias name)
        self.decl_spans: dict[str, ast.Span] = {}
        self.sources: dict[str, ast.SourceDecl] = {}
        self.aliases: dict[str, ast.Ref] = {}  # `y = x`
        self.accepted: set[int] = set()        # statements whose name was declared
        self.rejected: set[str] = set()        # names already reported as unusable
        self.calls: dict[int, list] = {}       # assignment -> its node-making expressions

    def build_child(self, spec: ast.Spec) -> SynthGraph:
        """The graph of a `spec(...)` source's file, with this file on the import stack."""
        return build_graph(spec, self.stack)

    def error(self, code: str, message: str, span: ast.Span | None, hint: str | None = None,
              notes=()) -> None:
        self.g.diagnostics.append(SynthError(code, message, span, hint, notes))

    def declare(self, name: str, span: ast.Span) -> bool:
        if name in self.decl_spans:
            first = self.decl_spans[name]
            self.error("S102", f"'{name}' is defined twice", span,
                       notes=[f"first defined at {first}"],
                       hint="give each input, source and value its own name")
            return False
        if _reserved(name):
            self.rejected.add(name)
            self.error("S103", f"'{name}' cannot be used as a name: it is reserved", span,
                       hint=f"rename it, e.g. '{name}_'")
            return False
        self.decl_spans[name] = span
        return True

    def declare_statement(self, st) -> bool:
        targets = [(st.name, st.name_span)]
        if isinstance(st, ast.Assign):
            targets += [(t.name, t.span) for t in st.more]
        ok = all([self.declare(name, span) for name, span in targets])
        if ok:
            self.accepted.add(id(st))
        return ok

    # -- pass 1: every declared name gets its node id -------------------------

    def declare_all(self) -> None:
        for st in self.spec.statements:
            if isinstance(st, (ast.InputDecl, ast.SourceDecl, ast.Assign)) \
                    and not self.declare_statement(st):
                continue
            if isinstance(st, ast.InputDecl):
                self.values[st.name] = st.name
            elif isinstance(st, ast.SourceDecl):
                self.sources[st.name] = st
            elif isinstance(st, ast.Assign) and st.more:
                for t in st.targets:
                    self.values[t.name] = t.name  # item nodes, one per target
            elif isinstance(st, ast.Assign):
                if isinstance(st.value, ast.Ref):
                    self.aliases[st.name] = st.value
                    continue
                n = len(self.calls_of(st))
                self.values[st.name] = st.name if n == 1 else f"{st.name}.{n - 1}"

    def lookup(self, ref: ast.Ref, seen: tuple[str, ...] = ()) -> str | None:
        """The node id a name stands for, or None (and a diagnostic) if it is unknown."""
        name = ref.name
        if name in self.values:
            return self.values[name]
        if name in self.aliases:
            if name in seen:
                chain = " → ".join(f"'{n}'" for n in (*seen, name))
                self.error("S104", f"'{name}' is defined in terms of itself: {chain}", ref.span)
                return None
            return self.lookup(self.aliases[name], (*seen, name))
        if name in self.rejected:
            return None
        if name in self.sources:
            self.error("S101", f"'{name}' is a source, not a value", ref.span,
                       hint=f"call it on an input: {name}(...)")
            return None
        self.error("S101", f"unknown name '{name}'", ref.span,
                   hint=did_you_mean(name, [*self.values, *self.aliases]))
        return None

    # -- pass 2: nodes and edges -----------------------------------------------

    def build(self) -> SynthGraph:
        self.declare_all()
        for st in self.spec.statements:
            if isinstance(st, ast.InputDecl) and id(st) in self.accepted:
                self.add_input(st)
            elif isinstance(st, ast.SourceDecl) and id(st) in self.accepted:
                self.add_source(st)
        for st in self.spec.statements:
            if isinstance(st, ast.Assign) and id(st) in self.accepted:
                if st.more and isinstance(st.value, ast.Ref):
                    self.error("S108", f"'{st.value.name}' is one value; it cannot be unpacked "
                               f"into {len(st.targets)} names", st.value.span)
                elif st.name in self.aliases:
                    self.lookup(self.aliases[st.name], (st.name,))
                else:
                    self.add_assign(st)
            elif isinstance(st, (ast.FreezeStmt, ast.TrainStmt, ast.OptimizeStmt,
                                 ast.AdaptStmt)):
                self.add_rule(st)
            elif isinstance(st, ast.InheritStmt):
                self.add_inherit(st)
            elif isinstance(st, ast.LossStmt):
                self.add_loss(st)
            elif isinstance(st, ast.RecipeStmt):
                self.add_recipe(st)
            elif isinstance(st, ast.PolicyStmt):
                self.add_policy(st)
            elif isinstance(st, ast.OutputStmt):
                for ref in st.names:
                    self.add_output(ref)
        self.apply_refs = dict(self.pending)
        self.applied: set[str] = set()
        for node_id, ref in self.pending:
            self.resolve_apply(node_id, ref)
        if not self.spec.of_type(ast.OutputStmt):
            self.error("S106", f"spec '{self.spec.name}' declares no output", self.spec.name_span,
                       hint="add `output NAME` for the value the model returns")
        return self.g

    def add_input(self, st: ast.InputDecl) -> None:
        dims = tuple(d.size if isinstance(d, ast.FixedDim) else d.name for d in st.shape)
        for d in st.shape:
            if isinstance(d, ast.FixedDim) and d.size == 0:
                self.error("S107", f"input '{st.name}' has a dimension of size 0", d.span)
            elif isinstance(d, ast.BoundedDim):
                self.add_bound(d)
        self.g.add_node(st.name, kind="input", name=st.name, label="input", span=st.span,
                        inputs=(), options={}, option_spans={}, dims=dims,
                        input_dtype=st.dtype)
        self.g.graph["inputs"].append(st.name)

    def calls_of(self, st: ast.Assign) -> list:
        calls = self.calls.get(id(st))
        if calls is None:
            calls = self.calls[id(st)] = list(_calls(st.value))
        return calls

    def add_assign(self, st: ast.Assign) -> None:
        calls = self.calls_of(st)
        base = "_".join((st.name, *(t.name for t in st.more)))
        ids = [base] if len(calls) == 1 else [f"{base}.{i}" for i in range(len(calls))]
        id_of = {id(c): i for c, i in zip(calls, ids)}
        for call, node_id in zip(calls, ids):
            callee, index, callee_span, args, kwargs = _call_parts(call)
            inputs = tuple(id_of[id(a)] if id(a) in id_of else self.lookup(a) for a in args)
            self.add_call(node_id, base, call.span, callee, callee_span, inputs, kwargs, index)
        if st.more:
            self.g.nodes[ids[-1]]["unpack"] = len(st.targets)
            for k, t in enumerate(st.targets):
                self.g.add_node(t.name, kind="item", name=t.name, span=t.span, inputs=(ids[-1],),
                                options={}, option_spans={}, item=k,
                                label=f"{self.g.nodes[ids[-1]]['label']}[{k}]")
                self.g.add_edge(ids[-1], t.name, kind="data", positions=[0])

    def add_call(self, node_id: str, name: str, span: ast.Span, callee: tuple[str, ...],
                 callee_span: ast.Span, inputs: tuple, kwargs: tuple[ast.KwArg, ...],
                 index: ast.Index | None = None) -> None:
        literal = [k for k in kwargs if not k.is_data]
        attrs: dict[str, Any] = dict(
            name=name, span=span, callee_span=callee_span, inputs=inputs,
            options={k.name: k.value for k in literal},
            option_spans={k.name: k.span for k in literal},
            index=None if index is None else (index.start, index.stop, index.item))
        data = [k for k in kwargs if k.is_data]
        if index is not None:
            attrs["index_span"] = index.span
        head = callee[0]
        if index is not None and (head not in self.sources or len(callee) == 1):
            attrs["invalid"] = True
            self.error("S402", "only a submodule of a source can be sliced", index.span,
                       hint="slice a sequential part, e.g. vgg.features[0:10](x)")
        if head in self.sources and self.sources[head].constructor == "spec" and len(callee) > 1:
            attrs["invalid"] = True
            self.error("S202", f"'{head}' is a spec; call it whole: {head}(...)", callee_span)
        if len(callee) == 1 and (head in self.values or head in self.aliases) \
                and head not in LAYERS and head not in OPS:
            attrs.update(kind="apply", label=head, applies=head)
            self.g.add_node(node_id, **attrs)
            self.pending.append((node_id, ast.Ref(name=head, span=callee_span)))
        elif head in self.sources:
            path, method = callee[1:], None
            if path and path[-1] in PART_METHODS:
                path, method = path[:-1], path[-1]
                if path:
                    attrs["invalid"] = True
                    self.error("S202", f"'{method}' is a method of the whole model '{head}', "
                               f"not of '{'.'.join(callee[:-1])}'", callee_span,
                               hint=f"call {head}.{method}(...)")
            module = ".".join((head, *path))
            label = ".".join(callee)
            if index is not None:
                label += format_index(index)
            attrs.update(kind="part", source=head, path=path, method=method, module=module,
                         label=label)
            self.g.add_node(node_id, **attrs)
            self.g.add_edge(head, node_id, kind="member")
        elif len(callee) == 1 and head in LAYERS:
            attrs.update(kind="layer", layer=head, module=node_id, label=head)
            self.g.add_node(node_id, **attrs)
        elif len(callee) == 1 and head in OPS:
            attrs.update(kind="op", op=head, label=head)
            self.g.add_node(node_id, **attrs)
        else:
            attrs.update(kind="op", op=None, label=".".join(callee), invalid=True)
            self.g.add_node(node_id, **attrs)
            data = []  # the callee is unknown: its own diagnostic says so
            if len(callee) > 1:
                self.error("S101", f"unknown source '{head}'", callee_span,
                           hint=did_you_mean(head, self.sources))
            else:
                known = [*LAYERS, *OPS]
                self.error("S101", f"unknown layer or operation '{head}'", callee_span,
                           hint=alias_hint(head, known)
                           or did_you_mean(head, [*known, *self.sources]) or _plugin_hint())
        self.connect(inputs, node_id)
        if data:
            self.add_keywords(node_id, data)

    def connect(self, inputs: tuple, node_id: str) -> None:
        """Data edges from each resolved input, with the argument positions they feed."""
        for pos, src in enumerate(inputs):
            if src is None:
                continue
            if self.g.has_edge(src, node_id):
                self.g.edges[src, node_id]["positions"].append(pos)
            else:
                self.g.add_edge(src, node_id, kind="data", positions=[pos])

    def resolve_apply(self, node_id: str, ref: ast.Ref,
                      stack: tuple[tuple[str, ast.Ref], ...] = ()) -> None:
        """`b = a(y)`: apply again the module that made `a`, sharing its parameters.

        An applied value made by another application is resolved first; a chain
        of applications that comes back to itself (`h = h(x)`, `a = b(x)` with
        `b = a(x)`) is an S104 cycle, reported once, at the value written first.
        """
        if node_id in self.applied:
            return
        self.applied.add(node_id)
        stack = (*stack, (node_id, ref))
        node = self.g.nodes[node_id]
        target = self.lookup(ref)
        seen = {node_id}
        while target is not None and self.g.nodes[target]["kind"] in ("item", "apply"):
            t = self.g.nodes[target]
            on_stack = [n for n, _ in stack]
            if t["kind"] == "apply" and target in on_stack:
                self.report_apply_cycle(stack[on_stack.index(target):])
                target = None
                break
            if target in seen:
                target = None
                break
            seen.add(target)
            if t["kind"] == "item":
                target = t["inputs"][0]
                continue
            if target not in self.applied:
                self.resolve_apply(target, self.apply_refs[target], stack)
            if t["kind"] == "apply":  # still unresolved: its own diagnostic is already out
                target = None
        if target is None:
            node["invalid"] = True
            return
        while self.g.nodes[target].get("shares"):  # share with the first value, as its others do
            target = self.g.nodes[target]["shares"]
        t = self.g.nodes[target]
        if t["kind"] not in ("part", "layer"):
            node["invalid"] = True
            self.error("S101", f"'{ref.name}' is made by {t['kind']} '{t['label']}', which has "
                       "no parameters to apply again", ref.span,
                       hint="only parts of sources and new layers can be applied again")
            return
        if node["options"]:
            node["invalid"] = True
            first = next(iter(node["option_spans"].values()))
            self.error("S402", f"applying '{ref.name}' again takes no options: it runs as it "
                       "did the first time", first)
            return
        if node.get("keywords") and t["kind"] == "layer":
            node["invalid"] = True
            name = next(iter(node["keywords"]))
            self.error("S402", f"'{ref.name}' is layer '{t['label']}', which takes its data "
                       f"positionally; keyword '{name}' names a value", node["keyword_spans"][name],
                       hint="only parts of sources take values by keyword")
            return
        for key in ("kind", "layer", "source", "path", "method", "module", "index", "options",
                    "unpack"):
            if key in t:
                node[key] = t[key]
        node["shares"] = target
        node["label"] = f"{t['label']} (shared with '{t['name']}')"
        if t["kind"] == "part":
            self.g.add_edge(t["source"], node_id, kind="member")
        self.g.add_edge(target, node_id, kind="share")

    def report_apply_cycle(self, cycle: tuple[tuple[str, ast.Ref], ...]) -> None:
        """One S104 for applications that apply each other, naming every value and alias."""
        nodes = self.g.nodes
        i = min(range(len(cycle)), key=lambda k: nodes[cycle[k][0]]["span"].start)
        cycle = cycle[i:] + cycle[:i]
        names = []
        for k, (node_id, ref) in enumerate(cycle):
            names.append(nodes[node_id]["name"])
            following = nodes[cycle[(k + 1) % len(cycle)][0]]["name"]
            if ref.name != following:  # reached through an alias: name it too
                names.append(ref.name)
        names.append(names[0])
        chain = " → ".join(f"'{n}'" for n in names)
        self.error("S104", f"'{names[0]}' is defined in terms of itself: {chain}", cycle[0][1].span,
                   hint="a value cannot apply itself; apply a layer or part written earlier")
        for node_id, _ in cycle:
            nodes[node_id]["invalid"] = True

    def add_output(self, ref: ast.Ref) -> None:
        node_id = f"output:{ref.name}"
        if node_id in self.g:
            self.error("S102", f"output '{ref.name}' is declared twice", ref.span)
            return
        if ref.name in self.rejected:
            return
        if ref.name in self.sources:
            self.error("S105", f"output '{ref.name}' is a source, not a value", ref.span,
                       hint=f"output what it computes, e.g. `y = {ref.name}(x)` then `output y`")
            return
        if ref.name not in self.values and ref.name not in self.aliases:
            self.error("S105", f"output '{ref.name}' is not defined", ref.span,
                       hint=did_you_mean(ref.name, [*self.values, *self.aliases])
                       or f"define it with `{ref.name} = ...`")
            return
        of = self.lookup(ref)
        self.g.add_node(node_id, kind="output", name=ref.name, label="output", span=ref.span,
                        inputs=(of,), options={}, option_spans={}, of=of)
        if of is not None:
            self.g.add_edge(of, node_id, kind="data", positions=[0])
        self.g.graph["outputs"].append(node_id)
        self.g.graph["output_names"].append(ref.name)


def _calls(expr: ast.Expr) -> Iterator[ast.Call | ast.Pipe]:
    """The node-making sub-expressions of `expr`, arguments before the call that uses them."""
    if isinstance(expr, ast.Call):
        for a in expr.args:
            yield from _calls(a)
        yield expr
    elif isinstance(expr, ast.Pipe):
        yield from _calls(expr.value)
        yield expr


def _call_parts(call: ast.Call | ast.Pipe):
    if isinstance(call, ast.Pipe):
        s = call.stage
        return s.callee, s.index, s.callee_span, (call.value,), s.kwargs
    return call.callee, call.index, call.callee_span, call.args, call.kwargs


def build_graph(spec: ast.Spec, _stack: tuple[str, ...] = ()) -> SynthGraph:
    """Resolve the names of `spec` and expand it into a :class:`SynthGraph`.

    Sources made with `spec("other.synth")` are parsed and built too (their graph
    is the source node's ``graph``); a chain of specs that imports itself is an error.
    """
    if spec.file:
        _stack = (*_stack, str(Path(spec.file).resolve()))
    token = _IMPORTS_BUILT.set([0]) if _IMPORTS_BUILT.get() is None else None
    try:
        with no_cyclic_gc():  # many small dicts, no cycles: see synthdsl.lang.parse
            return _Builder(spec, _stack).build()
    finally:
        if token is not None:
            _IMPORTS_BUILT.reset(token)


def _plugin_hint() -> str:
    from synthdsl.library.plugins import unknown_hint  # only when a name is unknown

    return unknown_hint()
