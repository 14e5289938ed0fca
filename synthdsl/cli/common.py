"""What every command shares: exit codes, reading a spec's text for the caret, warnings."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Iterable

from synthdsl.files import SPEC_MAX_BYTES, read_regular
from synthdsl.lang.errors import SynthError, render

EXIT_OK, EXIT_SPEC_ERROR, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3


def read_text(path: str) -> str:
    """The text of `path`, or "" where it cannot be read (a diagnostic then has no caret)."""
    try:  # a FIFO or a device is not read (it would hang or never end)
        return read_regular(path, SPEC_MAX_BYTES, "spec file").decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return ""


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and a.samefile(b))
    except OSError:
        return False


def check_output(output: str | None, inputs: Iterable[str | os.PathLike] = (),
                 role: str = "output") -> None:
    """`-o OUT` is refused (S009, nothing read or written yet) where it names one of the
    command's `inputs` (writing it would destroy what was read), a directory, or a path
    under something that is not a directory."""
    if output in (None, "", "-"):
        return
    out = Path(output)
    for given in inputs:
        if _same_file(out, Path(given)):
            raise SynthError("S009", f"-o '{output}' is the command's input '{given}': writing "
                             f"the {role} there would destroy it",
                             hint="name another file for -o")
    if out.is_dir():
        raise SynthError("S009", f"-o '{output}' is a directory; expected a file to write the "
                         f"{role} to", hint=f"name a file inside it, e.g. -o {out / 'out'}")
    for parent in out.parents:
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                raise SynthError("S009", f"-o '{output}' lies under '{parent}', which is not a "
                                 "directory", hint="name a path in an existing directory")
            break


def print_warnings(graph, text: str) -> None:
    """The check's warnings, on stderr, each followed by a blank line."""
    for w in graph.graph.get("warnings", ()):
        print(render(w, text), file=sys.stderr)
        print(file=sys.stderr)
