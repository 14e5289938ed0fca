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
    if out.exists() and not out.is_file():  # a device, a FIFO, a socket: never replaced
        raise SynthError("S009", f"-o '{output}' exists and is not a regular file; expected a "
                         f"file to write the {role} to", hint="name a regular file for -o")
    _refuse_under_a_file(out, output)


def _refuse_under_a_file(out: Path, output: str) -> None:
    """S009 where the nearest existing folder above `out` is not a folder (a file)."""
    for parent in out.parents:
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                raise SynthError("S009", f"-o '{output}' lies under '{parent}', which is not a "
                                 "directory", hint="name a path in an existing directory")
            break


def check_folder_output(output: str | None, inputs: Iterable[str | os.PathLike | None] = (),
                        role: str = "output folder") -> None:
    """`-o FOLDER` (a folder the command writes files into) is refused (S009, before anything
    is read or written) where it is an existing file, lies under something that is not a
    directory, or is one of the command's inputs or inside an input folder (a run written
    into a data folder would become one of its classes)."""
    if output in (None, "", "-"):
        return
    out = Path(output)
    if (out.exists() or out.is_symlink()) and not out.is_dir():
        raise SynthError("S009", f"-o '{output}' is a file; expected the {role} (a directory) "
                         "to write into", hint="name a new or existing folder for -o")
    _refuse_under_a_file(out, output)
    here = out.resolve()
    for given in inputs:
        if given in (None, ""):
            continue
        p = Path(given)
        if not p.exists():
            continue
        src = p.resolve()
        if src == here or (p.is_dir() and src in here.parents):
            raise SynthError("S009", f"-o '{output}' is or lies inside the command's input "
                             f"'{given}': writing the {role} there would change it",
                             hint="name a folder apart from the inputs for -o")


def print_warnings(graph, text: str) -> None:
    """The check's warnings, on stderr, each followed by a blank line."""
    for w in graph.graph.get("warnings", ()):
        print(render(w, text), file=sys.stderr)
        print(file=sys.stderr)
