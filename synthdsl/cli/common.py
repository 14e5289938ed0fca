"""What every command shares: exit codes, reading a spec's text for the caret, warnings."""

from __future__ import annotations

import sys
from pathlib import Path

from synthdsl.lang.errors import render

EXIT_OK, EXIT_SPEC_ERROR, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3


def read_text(path: str) -> str:
    """The text of `path`, or "" where it cannot be read (a diagnostic then has no caret)."""
    try:
        return Path(path).read_text("utf-8")
    except (OSError, UnicodeDecodeError):
        return ""


def print_warnings(graph, text: str) -> None:
    """The check's warnings, on stderr, each followed by a blank line."""
    for w in graph.graph.get("warnings", ()):
        print(render(w, text), file=sys.stderr)
        print(file=sys.stderr)
