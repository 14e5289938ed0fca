"""`inherit ... with rename=[pattern, replacement, ...]`: donor keys renamed by regular
expressions, in bounded time.

A spec's pattern runs on every key of a donor (a checkpoint may hold 100,000), and a
pattern such as ``([a-z]|[a-z])*Z`` makes a backtracking engine (Python's ``re``) run for
minutes. Patterns are compiled with the ``regex`` module (the same syntax as ``re`` for
everything a key needs; it finds most such patterns fast where ``re`` does not), each
pattern is at most :data:`MAX_PATTERN_CHARS` long, and all the matching an inherit
statement does shares one time limit, :data:`RENAME_SECONDS`; past it the statement is
refused (S402 at ``rename=``), never left running.

>>> r = Renamer(["model\\\\.stage(\\\\d)\\\\.(.*)", "layer\\\\1.\\\\2"])
>>> r("model.stage2.conv.weight"), r("head.weight")
('layer2.conv.weight', None)
"""

from __future__ import annotations

import time
from typing import Sequence

import regex

#: The longest pattern (characters) a rename= may give.
MAX_PATTERN_CHARS = 1000
#: Seconds of matching one inherit statement's renames may take, over all donor keys.
RENAME_SECONDS = 2.0


class RenameError(ValueError):
    """A rename= that is not a list of (pattern, replacement) pairs that can be used."""


class RenameTimeout(RenameError):
    """A rename= pattern that took longer than :data:`RENAME_SECONDS` on the donor's keys."""


def rename_problem(items: Sequence[str]) -> str | None:
    """What is wrong with a rename= list (pattern, replacement, ...), or None."""
    if len(items) % 2 or not all(isinstance(x, str) for x in items):
        return 'inherit rename= takes pairs of strings: ["regex", "replacement", ...]'
    for pat, rep in zip(items[::2], items[1::2]):
        if len(pat) > MAX_PATTERN_CHARS:
            return (f"inherit rename= pattern is {len(pat):,} characters long; at most "
                    f"{MAX_PATTERN_CHARS:,} are read")
        try:
            compiled = regex.compile(pat)
        except (regex.error, OverflowError, RecursionError) as e:
            return f"inherit rename= pattern {pat!r} is not a regular expression: {e}"
        try:
            compiled.sub(rep, "", count=1)  # the replacement's group references, checked now
            _check_groups(compiled, rep)
        except (regex.error, IndexError) as e:
            return f"inherit rename= replacement {rep!r} does not fit pattern {pat!r}: {e}"
    return None


def _check_groups(compiled, rep: str) -> None:
    """A replacement naming a group the pattern does not have is refused before any key is
    matched (``regex`` would find it only on the first match)."""
    template = regex.compile(r"\\(\d+)|\\g<([^>]*)>")
    for number, name in template.findall(rep):
        ref = number or name
        if ref.isdigit():
            if int(ref) > compiled.groups:
                raise regex.error(f"invalid group reference {ref}: the pattern has "
                                  f"{compiled.groups} group(s)")
        elif ref not in compiled.groupindex:
            raise regex.error(f"unknown group name {ref!r}")


class Renamer:
    """Renames keys by the first pattern that matches all of a key (its replacement applied
    as ``re.sub(pattern, replacement, key, count=1)`` would), sharing one time limit."""

    def __init__(self, items: Sequence[str], seconds: float | None = None) -> None:
        problem = rename_problem(items)
        if problem:
            raise RenameError(problem)
        self.rules = [(regex.compile(p), p, r) for p, r in zip(items[::2], items[1::2])]
        self.seconds = RENAME_SECONDS if seconds is None else seconds
        self.deadline: float | None = None

    def __call__(self, key: str) -> str | None:
        """`key` renamed by the first pattern matching all of it; None when none does."""
        if self.deadline is None:
            self.deadline = time.monotonic() + self.seconds
        for compiled, pat, rep in self.rules:
            left = self.deadline - time.monotonic()
            try:
                if left <= 0:
                    raise TimeoutError
                if compiled.fullmatch(key, timeout=left):
                    return compiled.sub(rep, key, count=1,
                                        timeout=max(1e-3, self.deadline - time.monotonic()))
            except TimeoutError:
                raise RenameTimeout(
                    f"inherit rename= pattern {pat!r} took more than {self.seconds:g} s on the "
                    f"donor's keys (stopped at {key!r}); a pattern that repeats a repetition "
                    "backtracks without end") from None
        return None
