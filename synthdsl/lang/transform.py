"""lark's parse tree → AST: one method per grammar rule, and the checks the grammar cannot make.

:class:`AstBuilder` walks the tree that :func:`synthdsl.lang.parse.parse_tree`
returns (every token kept) bottom-up; each rule's method gets the rule's
values without punctuation and the rule's first and last token, for its span.
Names (keywords are reserved, S006), numbers (in range, S007), strings
(escapes, S001), keyword arguments (S004, S005) and nesting (S008) are
checked here. :func:`synthdsl.lang.parse.build_ast` is the public entry.
"""

from __future__ import annotations

import json
import math

from lark import Token, Tree

from synthdsl.lang import ast
from synthdsl.lang.errors import SynthError

KEYWORDS = frozenset({"synth", "input", "source", "freeze", "train", "optimize", "with",
                      "policy", "adapt", "inherit", "from", "loss", "recipe", "output", "true",
                      "false", "none", *ast.DTYPES})

#: The largest magnitude a number in a spec may have.
MAX_NUMBER = 1e300
#: How deep the parse tree may be (S008 beyond): about 240 nested calls, or 480 pipes or
#: nested lists, as deep as lark's recursive transformer used to reach under Python's
#: default recursion limit; the later stages (printer, equality, graph) recurse too.
MAX_TREE_DEPTH = 480


def span_of(item, file: str | None) -> ast.Span:
    return ast.Span(file, item.line, item.column, item.end_line, item.end_column,
                    item.start_pos, item.end_pos)


class AstBuilder:
    """lark's tree → AST: one method per rule (or alias), called as ``method(meta, items)``
    with the rule's children already built, bottom-up, and punctuation left out; `meta`
    is the rule's first and last token (punctuation included), for its span.

    A plain recursive walk rather than a ``lark.Transformer``: the transformer's
    per-node wrappers (``v_args``, ``VisitError``) cost more than the AST itself.
    """

    def __init__(self, file: str | None, kept: frozenset[str]) -> None:
        self.file = file
        self._rules: dict[str, object] = {}
        self._kept = kept  # the terminals the methods receive (NAME, STRING, ...)

    def transform(self, tree: Tree):
        return self._walk(tree, 1)[0]

    def _walk(self, tree: Tree, depth: int) -> tuple:
        """(the rule's value, its first token, its last token)."""
        if depth > MAX_TREE_DEPTH:
            raise RecursionError("the parse tree is deeper than MAX_TREE_DEPTH")
        rule = self._rules.get(tree.data)
        if rule is None:
            rule = self._rules[tree.data] = getattr(self, tree.data)
        items, first, last, kept, gap = [], None, None, self._kept, False
        for c in tree.children:
            if type(c) is Token:
                gap = False
                if first is None:
                    first = c
                last = c
                if c.type in kept:
                    items.append(c)
            elif c is None:
                # a missing [optional] part: lark writes one None per symbol in it (its
                # punctuation too, here), the methods expect one per part (the grammar
                # has no two optional parts side by side)
                if not gap:
                    items.append(None)
                gap = True
            else:
                gap = False
                value, f, lst = self._walk(c, depth + 1)
                if f is not None:
                    if first is None:
                        first = f
                    last = lst
                items.append(value)
        return rule((first, last), items), first, last

    def _span(self, meta) -> ast.Span:
        first, last = meta
        if first is None:
            return ast.NO_SPAN
        return ast.Span(self.file, first.line, first.column, last.end_line, last.end_column,
                        first.start_pos, last.end_pos)

    def _tok(self, tok: Token) -> ast.Span:
        return span_of(tok, self.file)

    def _string(self, tok: Token) -> str:
        """A STRING token's value: JSON-style escapes, never evaluated code."""
        try:
            return json.loads(str(tok), strict=False)
        except ValueError:
            raise SynthError("S001", f"invalid escape in string {tok}", self._tok(tok),
                             hint='use \\\\, \\", \\n, \\t or \\uXXXX') from None

    def _name(self, tok: Token) -> str:
        """A declared name; keywords are reserved even where the grammar could tell them apart."""
        if str(tok) in KEYWORDS:
            raise SynthError("S006", f"'{tok}' is a keyword and cannot be used as a name",
                             self._tok(tok), hint=f"choose another name, e.g. '{tok}_'")
        return str(tok)

    # header and statements
    def start(self, meta, items):
        (name, name_span), *stmts = items
        return ast.Spec(name=name, name_span=name_span, statements=tuple(stmts),
                        span=self._span(meta))

    def header(self, meta, items):
        (tok,) = items
        return self._name(tok), self._tok(tok)

    def input_decl(self, meta, items):
        tok, shape, dtype = items
        return ast.InputDecl(name=self._name(tok), name_span=self._tok(tok), shape=shape,
                             dtype=dtype or ast.DTYPES[0], span=self._span(meta))

    def dtype(self, meta, items):
        return str(meta[0])  # one keyword: float32, int64, bool, ...

    def shape(self, meta, dims):
        return tuple(dims)

    def fixed_dim(self, meta, items):
        (tok,) = items
        return ast.FixedDim(size=self._number(tok), span=self._tok(tok))

    def symbolic_dim(self, meta, items):
        (tok,) = items
        return ast.SymbolicDim(name=str(tok), span=self._tok(tok))

    def bounded_dim(self, meta, items):
        tok, bound = items[0], items[-1]
        return ast.BoundedDim(name=str(tok), max=self._number(bound),
                              span=self._span((tok, bound)))

    def source_decl(self, meta, items):
        name, ctor, target, *kwargs = items
        return ast.SourceDecl(
            name=self._name(name), name_span=self._tok(name),
            constructor=str(ctor), constructor_span=self._tok(ctor),
            target=self._string(target), target_span=self._tok(target),
            kwargs=self._unique(self._literals(kwargs, f"source '{name}'")),
            span=self._span(meta))

    def assign(self, meta, items):
        name, *more, value = items
        seen = {str(name)}
        for tok in more:
            if str(tok) in seen:
                raise SynthError("S102", f"'{tok}' is assigned twice in one statement",
                                 self._tok(tok))
            seen.add(str(tok))
        return ast.Assign(name=self._name(name), name_span=self._tok(name), value=value,
                          more=tuple(ast.Ref(name=self._name(t), span=self._tok(t)) for t in more),
                          span=self._span(meta))

    # expressions
    def ref(self, meta, items):
        (tok,) = items
        return ast.Ref(name=str(tok), span=self._tok(tok))

    def dotted(self, meta, items):
        return tuple(str(t) for t in items), self._span(meta)

    def callee(self, meta, items):
        (dotted, span), index = items
        return dotted, index, span  # the span of the name; an index has its own

    def slice_index(self, meta, items):
        start, stop = (None if t is None else self._number(t) for t in items)
        return ast.Index(start=start, stop=stop, span=self._span(meta))

    def item_index(self, meta, items):
        (tok,) = items
        return ast.Index(start=self._number(tok), item=True, span=self._span(meta))

    def _split_arguments(self, arguments) -> tuple[list, list]:
        args, kwargs = [], []
        for a in arguments or ():
            if isinstance(a, ast.KwArg):
                kwargs.append(a)
            elif kwargs:
                raise SynthError("S004", "positional argument after keyword arguments", a.span,
                                 hint="put data arguments first, options (k=v) after them")
            else:
                args.append(a)
        return args, kwargs

    def call(self, meta, items):
        (callee, index, callee_span), arguments = items
        args, kwargs = self._split_arguments(arguments)
        return ast.Call(callee=callee, callee_span=callee_span, index=index, args=tuple(args),
                        kwargs=self._unique(kwargs), span=self._span(meta))

    def arguments(self, meta, items):
        return list(items)

    def stage(self, meta, items):
        (callee, index, callee_span), kwargs = items
        return ast.Stage(callee=callee, callee_span=callee_span, index=index,
                         kwargs=self._unique(kwargs or ()), span=self._span(meta))

    def pipe(self, meta, items):
        value, stage = items
        return ast.Pipe(value=value, stage=stage, span=self._span(meta))

    def kwargs(self, meta, items):
        return list(items)

    options = kwargs

    def kwarg(self, meta, items):
        name, (value, value_span) = items
        return ast.KwArg(name=str(name), value=value, value_span=value_span,
                         span=self._span(meta))

    def _literals(self, kwargs, what: str) -> list:
        """Keyword arguments of a statement that takes literals only: a value name is S402
        at the value, saying a literal was expected."""
        for k in kwargs or ():
            if k.is_data:
                raise SynthError("S402", f"{what} option '{k.name}' expects a literal value "
                                 f"(a number, a string, true, false, none or a list), found "
                                 f"the value name '{k.value.name}'", k.value_span,
                                 hint="only parts of sources take values by keyword; write "
                                 "the option's value itself here")
        return kwargs or ()

    def _unique(self, kwargs) -> tuple[ast.KwArg, ...]:
        seen: dict[str, ast.KwArg] = {}
        for k in kwargs:
            if k.name in seen:
                raise SynthError("S005", f"keyword argument '{k.name}' is given twice", k.span,
                                 notes=[f"first given at {seen[k.name].span}"])
            seen[k.name] = k
        return tuple(kwargs)

    # literal values: (python value, span)
    def string(self, meta, items):
        (tok,) = items
        return self._string(tok), self._tok(tok)

    def number(self, meta, items):
        (tok,) = items
        return self._number(tok), self._tok(tok)

    def _number(self, tok: Token) -> int | float:
        text = str(tok)
        try:
            value = float(text) if any(c in text for c in ".eE") else int(text)
        except ValueError:  # more digits than Python converts
            value = math.inf
        limit = int(MAX_NUMBER) if isinstance(value, int) else MAX_NUMBER
        if abs(value) > limit or not math.isfinite(value):
            raise SynthError("S007", f"number {text[:20]}{'...' if len(text) > 20 else ''} "
                             "is out of range", self._tok(tok),
                             hint=f"numbers in a spec lie within ±{MAX_NUMBER:.0e}")
        return value

    def value_ref(self, meta, items):
        (tok,) = items  # a keyword data input: the name of a value, resolved by the graph
        span = self._tok(tok)
        return ast.Ref(name=str(tok), span=span), span

    def true(self, meta, items):
        return True, self._span(meta)

    def false(self, meta, items):
        return False, self._span(meta)

    def none(self, meta, items):
        return None, self._span(meta)

    def list(self, meta, items):
        # an empty list comes through as one placeholder (None), never as a (value, span) pair
        return tuple(item[0] for item in items if item is not None), self._span(meta)

    # training sets and outputs
    def pattern(self, meta, items):
        (tok,) = items
        return ast.Pattern(text=str(tok), span=self._tok(tok))

    def freeze_stmt(self, meta, items):
        return ast.FreezeStmt(patterns=tuple(items), span=self._span(meta))

    def train_stmt(self, meta, items):
        *patterns, options = items
        return ast.TrainStmt(patterns=tuple(patterns),
                             options=self._unique(self._literals(options, "train")),
                             span=self._span(meta))

    def optimize_stmt(self, meta, items):
        *patterns, options = items
        return ast.OptimizeStmt(patterns=tuple(patterns),
                                options=self._unique(self._literals(options, "optimize")),
                                span=self._span(meta))

    def policy_stmt(self, meta, items):
        name, (value, value_span) = items
        return ast.PolicyStmt(name=str(name), name_span=self._tok(name), value=value,
                              value_span=value_span, span=self._span(meta))

    def adapt_stmt(self, meta, items):
        *patterns, method, options = items
        return ast.AdaptStmt(patterns=tuple(patterns), method=str(method),
                             method_span=self._tok(method),
                             options=self._unique(self._literals(options, f"adapt {method}")),
                             span=self._span(meta))

    def inherit_stmt(self, meta, items):
        (target, target_span), donor, options = items
        return ast.InheritStmt(target=target, target_span=target_span, **donor,
                               options=self._unique(self._literals(options, "inherit")),
                               span=self._span(meta))

    def module_donor(self, meta, items):
        ((path, span),) = items
        return {"donor": path, "donor_span": span}

    def file_donor(self, meta, items):
        ctor, tok = items
        return {"constructor": str(ctor), "file": self._string(tok),
                "donor_span": self._span(meta)}

    def loss_stmt(self, meta, items):
        kind, arguments = items
        args, kwargs = self._split_arguments(arguments)
        return ast.LossStmt(kind=str(kind), kind_span=self._tok(kind), args=tuple(args),
                            options=self._unique(self._literals(kwargs, f"loss {kind}")),
                            span=self._span(meta))

    def recipe_stmt(self, meta, items):
        (options,) = items
        return ast.RecipeStmt(options=self._unique(self._literals(options, "recipe")),
                              span=self._span(meta))

    def output_stmt(self, meta, items):
        return ast.OutputStmt(names=tuple(ast.Ref(name=str(t), span=self._tok(t)) for t in items),
                              span=self._span(meta))
