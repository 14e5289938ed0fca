"""Text → AST: the lark parser, lark's errors in our words, and the front end's GC pause.

:func:`parse_spec` is :func:`parse_tree` (lark's LALR parse, syntax errors S001-S003)
then :func:`build_ast` (the tree walked into the AST by
:class:`synthdsl.lang.transform.AstBuilder`, S004-S008).

>>> spec = parse_spec("synth Tiny input x: [B, 8] y = Linear(x, out=2) output y")
>>> spec.name, [type(s).__name__ for s in spec.statements]
('Tiny', ['InputDecl', 'Assign', 'OutputStmt'])
"""

from __future__ import annotations

import contextlib
import functools
import gc
import hashlib
import os
import re
from importlib import resources
from pathlib import Path

import lark
from lark import Lark, Tree
from lark.exceptions import (UnexpectedCharacters, UnexpectedEOF, UnexpectedInput,
                             UnexpectedToken)

from synthdsl.files import SPEC_MAX_BYTES, NotReadable, read_regular
from synthdsl.lang import ast
from synthdsl.lang.errors import SynthError
from synthdsl.lang.transform import KEYWORDS, AstBuilder, span_of

#: Most statements a spec may have (S008 beyond): checking one takes about half a
#: millisecond, so a spec stays checked in seconds.
MAX_STATEMENTS = 20_000
_SURROGATE = re.compile("[\ud800-\udfff]")
#: The word just before an offset (white space between them): how a token's left neighbour
#: is found for the messages below, without lark's token history.
_WORD_BEFORE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*\Z")
#: The words a statement begins with.
STATEMENT_WORDS = ("input", "source", "freeze", "train", "optimize", "policy", "adapt",
                   "inherit", "loss", "recipe", "output")

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
    """The grammar: in a source checkout the `grammar/` folder beside this package (an
    editable install elsewhere maps `synthdsl.grammar` to its own tree), else the
    installed package's copy."""
    beside = Path(__file__).resolve().parents[2] / "grammar"
    if (beside / "__init__.py").is_file() and (beside / "synth.lark").is_file():
        return (beside / "synth.lark").read_text("utf-8")
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
    if text.startswith("\ufeff"):  # a byte-order mark, as some editors write: not part of the spec
        text = text[1:]
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
    statements = tree.children[1:]
    if len(statements) > MAX_STATEMENTS:
        first = next((t for t in statements[MAX_STATEMENTS].iter_subtrees_topdown()
                      for tok in t.children if isinstance(tok, lark.Token)), None)
        tok = next(c for c in first.children if isinstance(c, lark.Token)) if first else None
        raise SynthError("S008", f"the spec has {len(statements):,} statements; at most "
                         f"{MAX_STATEMENTS:,} are read",
                         span_of(tok, file) if tok is not None else _point(text, 0, file),
                         hint="split it into specs that import each other with spec(\"...\")")
    try:
        spec = AstBuilder(file, _kept_terminals()).transform(tree)
    except RecursionError:
        raise _too_deep(text, file) from None
    return spec.model_copy(update={"file": file, "text": text})


def parse_file(path: str | Path) -> ast.Spec:
    return parse_spec(read_spec_text(path), str(path))


def read_spec_text(path: str | Path) -> str:
    """The text of the spec file at `path`; S000 where it cannot be read as a spec."""
    path = Path(path)
    try:
        text = read_regular(path, SPEC_MAX_BYTES, "spec file").decode("utf-8")
    except FileNotFoundError:
        raise SynthError("S000", f"spec file '{path}' does not exist") from None
    except NotReadable as e:  # a FIFO, a device, a directory, or too large: never read
        said = str(e)
        if said.startswith(f"spec file '{path}' has "):  # too large: the sizes say it all
            raise SynthError("S000", said, hint="split it into specs that import each other "
                             'with spec("...")') from None
        said = said.replace(f"spec file '{path}' is", "it is", 1)
        raise SynthError("S000", f"spec file '{path}' cannot be read as UTF-8 text: {said}",
                         hint="name a .synth text file") from None
    except (UnicodeDecodeError, IsADirectoryError) as e:
        raise SynthError("S000", f"spec file '{path}' cannot be read as UTF-8 text: {e}") from None
    except OSError as e:
        raise SynthError("S000", f"spec file '{path}' cannot be read: "
                         f"{e.strerror or e}") from None
    return text


def _too_deep(text: str, file: str | None) -> SynthError:
    return SynthError("S008", "the spec nests calls, pipes or lists too deeply to read",
                      _point(text, 0, file),
                      hint="split deep expressions into named steps (a = ..., b = f(a))")


# ---- positions -------------------------------------------------------------


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
    span = span_of(tok, file)
    exp = _expected(e.expected)
    found = f"'{tok.value}'"
    if tok.type == "STRING":
        found = f"string {tok.value}"
    before = _word_before(text, tok.start_pos)
    if before is not None and tok.type in ("EQUAL", "COMMA") and before[0] in KEYWORDS:
        word, start = before  # `train = ...`, `output, y = ...`: a keyword as an assigned name
        return SynthError("S006", f"'{word}' is a keyword and cannot be used as a name",
                          _point(text, start, file, len(word)),
                          hint=f"choose another name, e.g. '{word}_'")
    if (before is not None and tok.type in ("NAME", "PATTERN", "STRING") and "EQUAL" in e.expected
            and before[0] not in KEYWORDS
            and (meant := _misspelt_statement_word(before[0]))):
        word, start = before  # `sourse s = ...`: a statement word misspelt
        return SynthError("S002", f"unknown statement '{word}'; expected a statement word "
                          "(source, input, train, ...) or an assignment `name = ...`",
                          _point(text, start, file, len(word)), hint=f"did you mean '{meant}'?")
    hint = None
    if str(tok.value) in KEYWORDS and "NAME" in e.expected:
        hint = f"'{tok.value}' is a keyword; choose another name"
    elif "EQUAL" in e.expected and len(e.expected) <= 3:
        hint = "an assignment needs '=' between the name and its value"
    elif "RPAR" in e.expected and len(e.expected) <= 4:
        hint = "a ')' may be missing before this"
    return SynthError("S002", f"unexpected {found}" + (f"; {exp}" if exp else ""), span, hint=hint)


def _word_before(text: str, pos: int | None) -> tuple[str, int] | None:
    """The word that ends just before offset `pos` (white space allowed between), with its
    offset; None when the text before is not a word or `pos` is unknown."""
    if not pos:
        return None
    m = _WORD_BEFORE.search(text, max(0, pos - 256), pos)
    if m is None or (m.start() > 0 and text[m.start() - 1] in "._"):
        return None  # `r18.train = ...` is a dotted path, not a statement word
    return m.group(1), m.start()


def _misspelt_statement_word(word: str) -> str | None:
    """The statement word `word` is a slip of (one edit away, two for words of six letters or
    more; a swap of neighbours is one edit), or None. Stricter than "did you mean", since
    here `word` may just as well be a value's name with a missing '='."""
    limit = 1 if len(word) <= 5 else 2
    best = min(STATEMENT_WORDS, key=lambda w: _edits(word.lower(), w))
    return best if _edits(word.lower(), best) <= limit else None


def _edits(a: str, b: str) -> int:
    """Edits (insert, delete, substitute, swap two neighbours) from `a` to `b`."""
    prev2, prev = None, list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb))
            if prev2 is not None and i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        prev2, prev = prev, cur
    return prev[-1]


def _eof_hint(expected) -> str | None:
    expected = set(expected or ())
    if "RPAR" in expected:
        return "a ')' is missing"
    if "RSQB" in expected:
        return "a ']' is missing"
    if expected & {"NAME"} and len(expected) <= 2:
        return "the spec stops in the middle of a statement"
    return None
