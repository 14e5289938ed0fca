"""Text → AST: the lark grammar, the tree builder, and lark's errors in our words.

>>> spec = parse_spec("synth Tiny input x: [B, 8] y = Linear(x, out=2) output y")
>>> spec.name, [type(s).__name__ for s in spec.statements]
('Tiny', ['InputDecl', 'Assign', 'OutputStmt'])
"""

from __future__ import annotations

import contextlib
import functools
import gc
import hashlib
import json
import math
import os
import re
from importlib import resources
from pathlib import Path

import lark
from lark import Lark, Token, Tree
from lark.exceptions import (UnexpectedCharacters, UnexpectedEOF, UnexpectedInput,
                             UnexpectedToken)

from synthdsl.lang import ast
from synthdsl.lang.errors import SynthError

KEYWORDS = frozenset({"synth", "input", "source", "freeze", "train", "with", "policy",
                      "adapt", "inherit", "from", "loss", "recipe", "output", "true", "false",
                      "none"})

_SURROGATE = re.compile("[\ud800-\udfff]")
#: The largest magnitude a number in a spec may have.
MAX_NUMBER = 1e300
#: How deep the parse tree may be (S008 beyond): about 240 nested calls, or 480 pipes or
#: nested lists, as deep as lark's recursive transformer used to reach under Python's
#: default recursion limit; the later stages (printer, equality, graph) recurse too.
MAX_TREE_DEPTH = 480

#: How terminals are named in messages: as the user would type them.
_TERMINAL_WORDS = {
    "NAME": "a name",
    "PATTERN": "a name pattern",
    "INT": "a whole number",
    "SIGNED_NUMBER": "a number",
    "STRING": 'a string ("...")',
    "$END": "end of input",
}


@functools.lru_cache(maxsize=1)
def grammar_text() -> str:
    return resources.files("synthdsl.grammar").joinpath("synth.lark").read_text("utf-8")


@functools.lru_cache(maxsize=1)
def _parser() -> Lark:
    """The LALR parser. Every token stays in the tree (`keep_all_tokens`) and the tree
    builder, not lark, finds each rule's extent from its first and last token: lark's
    `propagate_positions` costs a third of the parse and gives the same spans.

    Its tables are cached (see :func:`_cache_file`), so a new process loads them
    instead of building them: 0.01 s instead of 0.25 s.
    """
    return Lark(grammar_text(), parser="lalr", strict=True, keep_all_tokens=True,
                maybe_placeholders=True, cache=_cache_file())


def _cache_file() -> str | bool:
    """Where lark keeps the built tables: a folder only this user can write
    (``$XDG_CACHE_HOME/synthdsl``, else ``~/.cache/synthdsl``), not lark's default in the
    shared temporary folder, because lark reads the file with pickle. False (no cache)
    where that folder cannot be made. lark checks the grammar's hash in the file."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    folder = os.path.join(base, "synthdsl")
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
    except OSError:
        return False
    digest = hashlib.sha256(grammar_text().encode("utf-8")).hexdigest()[:16]
    return os.path.join(folder, f"grammar-{digest}-lark-{lark.__version__}.cache")


@functools.lru_cache(maxsize=1)
def _kept_terminals() -> frozenset[str]:
    """The terminals a rule's methods receive: the patterns (NAME, STRING, INT, ...), not
    the punctuation and keywords written as strings in the grammar, which lark would
    filter out without `keep_all_tokens` (the grammar names no string terminal)."""
    return frozenset(t.name for t in _parser().terminals if t.pattern.type == "re")


@contextlib.contextmanager
def no_cyclic_gc():
    """Pause the cyclic garbage collector for the block (reference counting still frees).

    The front end makes many small objects and no reference cycles; with torch
    loaded the interpreter tracks hundreds of thousands of objects, and each full
    collection the allocations trigger walks all of them: at 10,000 nodes that
    was half the parse time. A pause alone only defers the cost: the first
    allocation after it would walk everything the block made. So at the end of
    the outermost pause what survived it goes straight to the oldest generation
    (``gc.freeze()`` then ``gc.unfreeze()``: two list splices, and the young count
    starts again at zero), unless the program keeps frozen objects of its own.
    Nested use is fine; the state before is restored.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            if gc.get_freeze_count() == 0:
                gc.freeze()
                gc.unfreeze()
            gc.enable()


def parse_spec(text: str, file: str | None = None) -> ast.Spec:
    """Parse spec text into an :class:`ast.Spec`; raise :class:`SynthError` on bad syntax."""
    text = text.replace("\r\n", "\n")
    with no_cyclic_gc():
        return build_ast(parse_tree(text, file), text, file)


def parse_tree(text: str, file: str | None = None) -> Tree:
    """The first half of :func:`parse_spec`: lark's parse tree of `text` (every token kept),
    or the :class:`SynthError` of its first syntax error."""
    if bad := _SURROGATE.search(text):  # only a str built in Python can hold one; no file can
        raise SynthError("S001", f"invalid character U+{ord(bad.group()):04X} (a lone surrogate)",
                         _point(text, bad.start(), file))
    try:
        return _parser().parse(text)
    except UnexpectedInput as e:
        raise _translate(e, text, file) from None


def build_ast(tree: Tree, text: str, file: str | None = None) -> ast.Spec:
    """The second half of :func:`parse_spec`: the AST of a tree from :func:`parse_tree`
    (names, numbers and strings checked: S004-S008)."""
    try:
        spec = _Builder(file).transform(tree)
    except RecursionError:
        raise _too_deep(text, file) from None
    return spec.model_copy(update={"file": file, "text": text})


def parse_file(path: str | Path) -> ast.Spec:
    path = Path(path)
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        raise SynthError("S000", f"spec file '{path}' does not exist") from None
    except (UnicodeDecodeError, IsADirectoryError) as e:
        raise SynthError("S000", f"spec file '{path}' cannot be read as UTF-8 text: {e}") from None
    return parse_spec(text, str(path))


def _too_deep(text: str, file: str | None) -> SynthError:
    return SynthError("S008", "the spec nests calls, pipes or lists too deeply to read",
                      _point(text, 0, file),
                      hint="split deep expressions into named steps (a = ..., b = f(a))")


# ---- positions -------------------------------------------------------------


def _span_of(item, file: str | None) -> ast.Span:
    return ast.Span(file, item.line, item.column, item.end_line, item.end_column,
                    item.start_pos, item.end_pos)


def _point(text: str, pos: int, file: str | None, width: int = 1) -> ast.Span:
    """A span of `width` characters at offset `pos` (clamped to the text)."""
    pos = max(0, min(pos, len(text)))
    line = text.count("\n", 0, pos) + 1
    col = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return ast.Span(file=file, line=line, column=col, end_line=line, end_column=col + width,
                    start=pos, end=pos + width)


# ---- lark's errors, said our way ------------------------------------------


def _describe_terminal(name: str) -> str:
    if name in _TERMINAL_WORDS:
        return _TERMINAL_WORDS[name]
    for t in _parser().terminals:
        if t.name == name:
            if t.pattern.type == "str":
                return f"'{t.pattern.value}'"
            break
    return name.lower()


def _expected(names) -> str:
    words = sorted({_describe_terminal(n) for n in names})
    if not words:
        return ""
    if len(words) <= 6:
        return "expected " + ", ".join(words[:-1]) + (" or " if len(words) > 1 else "") + words[-1]
    return ""


def _translate(e: UnexpectedInput, text: str, file: str | None) -> SynthError:
    if isinstance(e, UnexpectedCharacters):
        ch = text[e.pos_in_stream] if e.pos_in_stream < len(text) else ""
        span = _point(text, e.pos_in_stream, file)
        if ch == '"':
            return SynthError("S001", "unterminated string", span,
                              hint='close the string with " on the same line')
        exp = _expected(e.allowed or ())
        msg = f"unexpected character {ch!r}" + (f"; {exp}" if exp else "")
        return SynthError("S001", msg, span)
    if isinstance(e, UnexpectedEOF) or (isinstance(e, UnexpectedToken) and e.token.type == "$END"):
        expected = e.expected if isinstance(e, UnexpectedEOF) else e.expected
        exp = _expected(expected)
        end = len(text.rstrip())
        return SynthError("S003", "unexpected end of input" + (f"; {exp}" if exp else ""),
                          _point(text, end, file),
                          hint=_eof_hint(expected))
    assert isinstance(e, UnexpectedToken)
    tok = e.token
    span = _span_of(tok, file)
    exp = _expected(e.expected)
    found = f"'{tok.value}'"
    if tok.type == "STRING":
        found = f"string {tok.value}"
    hint = None
    if str(tok.value) in KEYWORDS and "NAME" in e.expected:
        hint = f"'{tok.value}' is a keyword; choose another name"
    elif "EQUAL" in e.expected and len(e.expected) <= 3:
        hint = "an assignment needs '=' between the name and its value"
    elif "RPAR" in e.expected and len(e.expected) <= 4:
        hint = "a ')' may be missing before this"
    return SynthError("S002", f"unexpected {found}" + (f"; {exp}" if exp else ""), span, hint=hint)


def _eof_hint(expected) -> str | None:
    expected = set(expected or ())
    if "RPAR" in expected:
        return "a ')' is missing"
    if "RSQB" in expected:
        return "a ']' is missing"
    if expected & {"NAME"} and len(expected) <= 2:
        return "the spec stops in the middle of a statement"
    return None


# ---- tree → AST ------------------------------------------------------------


class _Builder:
    """lark's tree → AST: one method per rule (or alias), called as ``method(meta, items)``
    with the rule's children already built, bottom-up, and punctuation left out; `meta`
    is the rule's first and last token (punctuation included), for its span.

    A plain recursive walk rather than a ``lark.Transformer``: the transformer's
    per-node wrappers (``v_args``, ``VisitError``) cost more than the AST itself.
    """

    def __init__(self, file: str | None) -> None:
        self.file = file
        self._rules: dict[str, object] = {}
        self._kept = _kept_terminals()

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
        return _span_of(tok, self.file)

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
        tok, shape = items
        return ast.InputDecl(name=self._name(tok), name_span=self._tok(tok), shape=shape,
                             span=self._span(meta))

    def shape(self, meta, dims):
        return tuple(dims)

    def fixed_dim(self, meta, items):
        (tok,) = items
        return ast.FixedDim(size=self._number(tok), span=self._tok(tok))

    def symbolic_dim(self, meta, items):
        (tok,) = items
        return ast.SymbolicDim(name=str(tok), span=self._tok(tok))

    def source_decl(self, meta, items):
        name, ctor, target, *kwargs = items
        return ast.SourceDecl(
            name=self._name(name), name_span=self._tok(name),
            constructor=str(ctor), constructor_span=self._tok(ctor),
            target=self._string(target), target_span=self._tok(target),
            kwargs=self._unique(kwargs), span=self._span(meta))

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
        return ast.TrainStmt(patterns=tuple(patterns), options=self._unique(options or ()),
                             span=self._span(meta))

    def policy_stmt(self, meta, items):
        name, (value, value_span) = items
        return ast.PolicyStmt(name=str(name), name_span=self._tok(name), value=value,
                              value_span=value_span, span=self._span(meta))

    def adapt_stmt(self, meta, items):
        *patterns, method, options = items
        return ast.AdaptStmt(patterns=tuple(patterns), method=str(method),
                             method_span=self._tok(method),
                             options=self._unique(options or ()), span=self._span(meta))

    def inherit_stmt(self, meta, items):
        (target, target_span), donor, options = items
        return ast.InheritStmt(target=target, target_span=target_span, **donor,
                               options=self._unique(options or ()), span=self._span(meta))

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
                            options=self._unique(kwargs), span=self._span(meta))

    def recipe_stmt(self, meta, items):
        (options,) = items
        return ast.RecipeStmt(options=self._unique(options), span=self._span(meta))

    def output_stmt(self, meta, items):
        return ast.OutputStmt(names=tuple(ast.Ref(name=str(t), span=self._tok(t)) for t in items),
                              span=self._span(meta))



