"""Diagnostics: one exception family, rendered like a compiler does.

Every mistake a person can make in a spec is a :class:`SynthError` with a code,
a message that says what was expected and what was found, a :class:`Span`
pointing into the text, and optionally a hint. Checks that can find several
independent problems raise :class:`SynthErrors`, which carries them all.

>>> from synthdsl.lang.ast import Span
>>> text = "synth A\\noutput logits\\n"
>>> err = SynthError("S105", "output 'logits' is not defined",
...                  Span(file="a.synth", line=2, column=8, end_line=2, end_column=14,
...                       start=15, end=21), hint="define it with `logits = ...`")
>>> print(render(err, text))
error[S105]: output 'logits' is not defined
 --> a.synth:2:8
  |
2 | output logits
  |        ^^^^^^
  = help: define it with `logits = ...`
"""

from __future__ import annotations

import difflib
import functools
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable, Sequence

if TYPE_CHECKING:  # pragma: no cover
    from synthdsl.lang.ast import Span

#: How many diagnostics a report shows before "... and N more".
MAX_REPORTED = 20


class SynthError(Exception):
    """A user-facing problem with a spec: code, message, span, hint, notes."""

    def __init__(
        self,
        code: str,
        message: str,
        span: "Span | None" = None,
        hint: str | None = None,
        notes: Sequence[str] = (),
        severity: str = "error",
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.span = span
        self.hint = hint
        self.notes = tuple(notes)
        self.severity = severity

    def __str__(self) -> str:
        where = ""
        if self.span is not None:
            where = f"{self.span.file or '<spec>'}:{self.span.line}:{self.span.column}: "
        return f"{where}error[{self.code}]: {self.message}"

    def to_dict(self) -> dict:
        """The diagnostic as plain data (for `synth check --json`)."""
        return {
            "code": self.code,
            "severity": self.severity,
            "message": self.message,
            "hint": self.hint,
            "notes": list(self.notes),
            "span": None if self.span is None else self.span.to_dict(),
        }


class SynthErrors(SynthError):
    """Several independent problems found by one stage, raised together."""

    def __init__(self, errors: Iterable[SynthError]) -> None:
        self.errors = sorted(errors, key=_sort_key)
        first = self.errors[0]
        super().__init__(first.code, first.message, first.span, first.hint, first.notes)

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.errors)


class InternalError(Exception):
    """A bug in synthdsl itself, never a mistake in the spec."""


@dataclass
class Collector:
    """Gathers diagnostics from a stage and raises them once."""

    errors: list[SynthError] = field(default_factory=list)

    def add(self, error: SynthError) -> None:
        if isinstance(error, SynthErrors):
            self.errors.extend(error.errors)
        else:
            self.errors.append(error)

    def raise_if_any(self) -> None:
        if self.errors:
            raise SynthErrors(self.errors)


def _sort_key(err: SynthError) -> tuple:
    s = err.span
    return (0, "", 0, 0) if s is None else (1, s.file or "", s.line, s.column)


def flatten(err: SynthError) -> list[SynthError]:
    return list(err.errors) if isinstance(err, SynthErrors) else [err]


#: Above this many candidates, only the few sharing most letter pairs with the name are
#: compared in full (a spec with thousands of values and as many unknown names must not
#: take minutes); below it, every candidate is.
_FULL_COMPARE = 2000
_SHORTLIST = 20
_COMMON_PAIR = 500  # a letter pair in more candidates than this says too little to count


def _pairs(word: str) -> set[str]:
    return {word[i:i + 2] for i in range(len(word) - 1)} or {word}


@functools.lru_cache(maxsize=8)
def _pair_index(candidates: tuple[str, ...]) -> dict[str, list[str]]:
    """For each letter pair, the (distinct) candidates that contain it."""
    index: dict[str, list[str]] = {}
    for c in dict.fromkeys(candidates):
        for pair in _pairs(c):
            index.setdefault(pair, []).append(c)
    return index


def _shortlist(name: str, candidates: tuple[str, ...]) -> list[str]:
    index = _pair_index(candidates)
    lists = [index[p] for p in _pairs(name) if p in index]
    rare = [ls for ls in lists if len(ls) <= _COMMON_PAIR]
    if not rare and lists:  # every pair is common: count the rarest one alone
        rare = [min(lists, key=len)[:_COMMON_PAIR * 4]]
    counts = Counter()
    for ls in rare:
        counts.update(ls)
    return sorted(c for c, _ in counts.most_common(_SHORTLIST))


def did_you_mean(name: str, candidates: Iterable[str], n: int = 3) -> str | None:
    """A hint naming the closest candidates, or None when nothing is close."""
    candidates = tuple(candidates)
    if len(candidates) > _FULL_COMPARE:
        pool = _shortlist(name, candidates)
    else:
        pool = sorted(set(candidates))
    close = difflib.get_close_matches(name, pool, n=n, cutoff=0.6)
    if not close:
        return None
    return "did you mean " + " or ".join(f"'{c}'" for c in close) + "?"


def fmt_shape(shape: Iterable) -> str:
    """A shape as messages and tables spell it: ``[B, 3, 224, 224]``.

    >>> fmt_shape(("B", 3, 224, 224))
    '[B, 3, 224, 224]'
    """
    return "[" + ", ".join(str(d) for d in shape) + "]"


def render(err: SynthError, text: str | None = None) -> str:
    """Render one diagnostic like rustc: header, location, the line, a caret, help."""
    out = [f"{err.severity}[{err.code}]: {err.message}"]
    span = err.span
    if span is not None:
        if text is not None and text.startswith("\ufeff"):
            text = text[1:]  # a byte-order mark is not part of the spec's first line
        lines = text.splitlines() if text is not None else []
        gutter = " " * len(str(span.line))
        out.append(f"{gutter}--> {span.file or '<spec>'}:{span.line}:{span.column}")
        if 1 <= span.line <= len(lines):
            src = lines[span.line - 1].expandtabs(1)
            start = max(span.column, 1)
            if span.end_line == span.line and span.end_column > span.column:
                width = span.end_column - span.column
            else:
                width = max(len(src) - start + 1, 1)
            out.append(f"{gutter} |")
            out.append(f"{span.line} | {src}")
            out.append(f"{gutter} | {' ' * (start - 1)}{'^' * width}")
        elif span.line == len(lines) + 1 or not lines:
            out.append(f"{gutter} |")
            out.append(f"{gutter} | <end of input>")
    else:
        gutter = " "
    for note in err.notes:
        out.append(f"{gutter} = note: {note}")
    if err.hint:
        out.append(f"{gutter} = help: {err.hint}")
    return "\n".join(out)


def render_all(err: SynthError, texts: dict[str | None, str] | str | None,
               limit: int = MAX_REPORTED) -> str:
    """Render every diagnostic in `err`, capped with "... and N more"."""
    errors = flatten(err)
    on_disk: dict[str, str | None] = {}   # each file read once, however many errors it has

    def read(file: str | None) -> str | None:
        if not file:
            return None
        if file not in on_disk:
            on_disk[file] = _read_text(file)
        return on_disk[file]

    blocks = []
    for e in errors[:limit]:
        file = e.span.file if e.span else None
        if isinstance(texts, dict):
            text = texts.get(file)
        else:
            text = texts
        other = file and not isinstance(texts, dict) and read(file) not in (None, texts)
        if text is None or other:
            text = read(file) or text  # e.g. an error inside an imported spec
        blocks.append(render(e, text))
    if len(errors) > limit:
        blocks.append(f"... and {len(errors) - limit} more")
    n = len(errors)
    blocks.append(f"{n} error{'s' if n != 1 else ''} found")
    return "\n\n".join(blocks[:-1]) + "\n\n" + blocks[-1]


def _read_text(file: str | None) -> str | None:
    if not file:
        return None
    try:
        with open(file, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError):
        return None
