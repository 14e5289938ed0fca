"""`synth fmt FILE... [--check] [--diff]`: specs in their canonical spelling, comments kept.

Each file is formatted by :func:`synthdsl.lang.fmt.format_text` and written back in place
(atomically) when it changed; ``--check`` writes nothing and exits 4 when a file would
change, ``--diff`` prints what would change as a unified diff, ``-`` reads a spec from
standard input and prints it formatted. A file that does not parse is reported at its
line and column (exit 1) and left as it is. Nothing heavy is loaded: no torch.
"""

from __future__ import annotations

import difflib
import sys

from synthdsl.cli.common import EXIT_OK, EXIT_SPEC_ERROR
from synthdsl.files import write_text
from synthdsl.lang.errors import SynthError, render
from synthdsl.lang.fmt import WIDTH, format_text
from synthdsl.lang.parse import read_spec_text

#: `--check`: a file would change.
EXIT_WOULD_CHANGE = 4


def cmd_fmt(args) -> int:
    width = args.width or WIDTH
    failed, changed = False, []
    for name in args.files:
        text = ""
        try:
            text = sys.stdin.read() if name == "-" else read_spec_text(name)
            new = format_text(text, None if name == "-" else name, width)
        except SynthError as e:
            print(render(e, text), file=sys.stderr)
            failed = True
            continue
        if name == "-":
            sys.stdout.write(new)
            continue
        if new == text:
            continue
        changed.append(name)
        if args.diff:
            sys.stdout.writelines(difflib.unified_diff(
                text.splitlines(keepends=True), new.splitlines(keepends=True),
                fromfile=name, tofile=f"{name} (formatted)"))
        if args.check or args.diff:
            print(f"would reformat {name}", file=sys.stderr)
        else:
            write_text(name, new)
            print(f"reformatted {name}", file=sys.stderr)
    if failed:
        return EXIT_SPEC_ERROR
    return EXIT_WOULD_CHANGE if changed and (args.check or args.diff) else EXIT_OK

