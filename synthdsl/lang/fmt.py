"""`synth fmt`: a spec in its canonical spelling, its comments kept.

:func:`format_spec` prints an AST, which holds no comments. :func:`format_text` formats
the text of a spec: each statement printed from its AST, wrapped at `width` columns (at
the commas of its first bracket, or before each ``|>``), and every comment kept —

* a comment after a statement on its last line stays there, in its column where the
  printed line ends before it (else two spaces after the line),
* a comment on lines of its own stays above what follows it,
* a comment inside a statement written over several lines goes above that statement,

and blank lines between statements kept (runs of them become one), one blank line after
the header. The result parses to the same AST as the text and holds the same comments in
the same order (:func:`format_text` checks both before returning), and formatting it
again changes nothing.

>>> print(format_text('''# a head
... synth A
... input x:[B,4]   # features
... y=Linear(x,out=2)|>ReLU
...
... output y
... '''), end="")
# a head
synth A
<BLANKLINE>
input x: [B, 4]  # features
y = Linear(x, out=2) |> ReLU
<BLANKLINE>
output y
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass

from synthdsl.lang import ast
from synthdsl.lang.parse import parse_spec
from synthdsl.lang.printer import format_statement

#: Columns a formatted line fits in, where it can be broken.
WIDTH = 100
_BLANK = re.compile(r"\n[ \t\r\f]*\n")


@dataclass(frozen=True)
class Comment:
    """A ``# ...`` comment: where it starts and ends in the text (offsets), and its text."""

    start: int
    end: int
    text: str


def comments_of(text: str) -> list[Comment]:
    """Every comment of `text`, in order: ``#`` to the end of its line, outside strings."""
    found, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if c == '"':  # a string runs to its closing quote on the same line
            j = i + 1
            while j < n and text[j] not in '"\n':
                j += 2 if text[j] == "\\" else 1
            i = j + 1
        elif c == "#":
            j = text.find("\n", i)
            j = n if j < 0 else j
            found.append(Comment(i, j, text[i:j].rstrip()))
            i = j
        else:
            i += 1
    return found


@dataclass
class _Block:
    """One statement (or the header) and the comments that go with it."""

    start: int          #: the statement's extent in the original text
    end: int
    text: str           #: as printed
    header: bool = False
    leading: list[Comment] | None = None
    trailing: Comment | None = None
    statement: ast.Node | None = None


def _blocks(spec: ast.Spec, text: str) -> tuple[list[_Block], list[Comment]]:
    header = _Block(spec.span.start, spec.name_span.end, f"synth {spec.name}", header=True,
                    leading=[])
    blocks = [header] + [_Block(st.span.start, st.span.end, format_statement(st), leading=[],
                                statement=st) for st in spec.statements]
    starts = [b.start for b in blocks]
    tail: list[Comment] = []
    for c in comments_of(text):
        k = bisect.bisect_right(starts, c.start) - 1  # the last block starting before it
        if k >= 0 and c.start < blocks[k].end:  # inside a statement: above it
            blocks[k].leading.append(c)
        elif k >= 0 and "\n" not in text[blocks[k].end:c.start] and blocks[k].trailing is None:
            blocks[k].trailing = c
        elif k + 1 < len(blocks):
            blocks[k + 1].leading.append(c)
        else:
            tail.append(c)
    return blocks, tail


def format_text(text: str, file: str | None = None, width: int = WIDTH) -> str:
    """`text` formatted, its comments kept; raises the text's SynthError if it does not
    parse. See the module."""
    text = text.replace("\r\n", "\n").lstrip("\ufeff")
    spec = parse_spec(text, file)
    blocks, tail = _blocks(spec, text)
    out: list[str] = []
    last = None  # the end (offset) of what was written last, in the original text
    after_header = False  # the next line written is the first after the header

    def emit(lines: list[str], start: int, end: int) -> None:
        nonlocal last, after_header
        if after_header:  # one blank line after the header, always
            out.append("")
        elif last is not None and _BLANK.search(text[last:start]):
            out.append("")  # blank lines between statements: one
        out.extend(lines)
        last, after_header = end, False

    for b in blocks:
        before = [c for c in b.leading if c.start < b.start]
        inside = [c for c in b.leading if c.start >= b.start]
        for c in before:
            emit([c.text], c.start, c.end)
        lines = [c.text for c in inside] + (wrap_statement(b.statement, width)
                                             if b.statement is not None else [b.text])
        if b.trailing is not None:  # where it was, if the line still ends before it
            column = b.trailing.start - (text.rfind("\n", 0, b.trailing.start) + 1)
            lines[-1] = lines[-1].ljust(column) if len(lines[-1]) + 2 <= column \
                else lines[-1] + "  "
            lines[-1] += b.trailing.text
        emit(lines, b.start, b.trailing.end if b.trailing is not None else b.end)
        after_header = b.header
    for c in tail:
        emit([c.text], c.start, c.end)
    result = "\n".join(out) + "\n"
    _verify(spec, text, result, file)
    return result


class FormatError(RuntimeError):
    """The formatter would have changed a spec's meaning or lost a comment (a bug)."""


def _verify(spec: ast.Spec, text: str, result: str, file: str | None) -> None:
    """The formatted text means what the text meant, with the same comments."""
    again = parse_spec(result, file)
    if again != spec or [c.text for c in comments_of(result)] != \
            [c.text for c in comments_of(text)]:
        raise FormatError(f"formatting {file or 'the spec'} would change its meaning or "
                          "lose a comment; nothing was written")


# ---- wrapping long lines ------------------------------------------------------------


def _top_level(text: str, seps: str, opening: int = -1) -> list[int]:
    """Positions of the characters of `seps` at bracket depth 0 (inside the bracket that
    opens at `opening`, when given), outside strings."""
    found, depth, i = [], 0, opening + 1
    while i < len(text):
        c = text[i]
        if c == '"':
            j = i + 1
            while j < len(text) and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            i = j + 1
            continue
        if c in "([":
            depth += 1
        elif c in ")]":
            if depth == 0 and opening >= 0:
                return found + [i]  # the closing bracket, last
            depth -= 1
        elif depth == 0 and c in seps:
            found.append(i)
        i += 1
    return found


def wrap_statement(st: ast.Node, width: int = WIDTH) -> list[str]:
    """A statement printed and wrapped to `width`: patterns (which may hold brackets of
    their own, ``layer[34]``) at the commas between them, anything else by :func:`wrap`."""
    text = format_statement(st)
    patterns = [p.text for p in getattr(st, "patterns", ())]
    if not patterns or len(text) <= width:
        return wrap(text, width)
    keyword = text.split(" ", 1)[0] + " "
    rest = text[len(keyword) + len(", ".join(patterns)):].strip()  # "with ..." or ""
    indent = " " * len(keyword)
    rows, current = [], keyword
    for i, p in enumerate(patterns):
        piece = p + ("," if i < len(patterns) - 1 else "")
        if current.strip() and len(current) + 1 + len(piece) > width:
            rows.append(current.rstrip())
            current = indent + piece
        else:
            current = (current + " " + piece) if current != keyword else keyword + piece
    if rest and len(current) + 1 + len(rest) <= width:
        return rows + [current + " " + rest]
    rows.append(current)
    return rows + (["    " + s for s in wrap(rest, width - 4)] if rest else [])


def wrap(line: str, width: int = WIDTH) -> list[str]:
    """`line` broken to fit `width` columns where it can be: a pipe before each ``|>``
    (stages under the first, indented), else the arguments of its longest call or list at
    their commas, greedily — continuations under the first argument, or indented by four
    on the lines after the bracket where that would sit past half the width — inner
    brackets in turn.

    >>> for s in wrap('source s = merge("resnet18", method="ties", models=["a.pt", "b.pt"])', 42):
    ...     print(s)
    source s = merge("resnet18",
                     method="ties",
                     models=["a.pt", "b.pt"])
    """
    if len(line) <= width:
        return [line]
    pipes = [m.start() for m in re.finditer(r" \|> ", line)
             if not _inside(line, m.start())]
    if pipes:
        eq = line.find(" = ")
        indent = " " * (eq + 3 if 0 <= eq < pipes[0] else 4)
        pieces = [line[:pipes[0]]] + [line[a + 1:b] for a, b in zip(pipes, pipes[1:] + [None])]
        return wrap(pieces[0], width) + [indent + s for p in pieces[1:]
                                         for s in wrap(p, width - len(indent))]
    groups = [(i, _top_level(line, ",", i)) for i, c in enumerate(line)
              if c in "([" and not _inside(line, i)]
    groups = [(i, marks) for i, marks in groups if marks and line[marks[-1]] in ")]"]
    if not groups:
        return [line]
    opening, marks = max(groups, key=lambda g: g[1][-1] - g[0])  # the longest bracket
    close = marks[-1]
    args, prev = [], opening + 1
    for m in marks:
        args.append(line[prev:m].strip())
        prev = m + 1
    head, tail = line[:opening + 1], line[close:]
    indent = len(head)
    hanging = indent > width // 2  # too far right to align under: a hanging indent
    if hanging:
        indent = 4
    rows: list[str] = []
    current = ""
    for i, arg in enumerate(args):
        piece = arg + ("," if i < len(args) - 1 else tail)
        candidate = piece if not current else current + " " + piece
        if current and indent + len(candidate) > width:
            rows.append(current)
            current = piece
        else:
            current = candidate
    rows.append(current)
    out = [head] if hanging else []
    for i, row in enumerate(rows):
        prefix = head if i == 0 and not hanging else " " * indent
        if len(prefix) + len(row) > width:  # one argument alone too long: break inside it
            inner = wrap(row, width - indent)
            out += [prefix + inner[0]] + [" " * indent + s for s in inner[1:]]
        else:
            out.append(prefix + row)
    return out


def _inside(text: str, pos: int) -> bool:
    """Whether `pos` lies inside a string or a bracket of `text`."""
    depth, i, in_string = 0, 0, False
    while i < pos:
        c = text[i]
        if in_string:
            if c == "\\":
                i += 1
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c in "([":
            depth += 1
        elif c in ")]":
            depth -= 1
        i += 1
    return in_string or depth > 0
