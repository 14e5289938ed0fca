"""`synth compress FILE --data D`: flags in, :func:`synthdsl.train.compress.compress_spec`
called, the side-by-side table (or the JSON report) out."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from synthdsl.cli.common import EXIT_OK, check_folder_output, check_output
from synthdsl.lang.errors import SynthError
from synthdsl.lang.options import ADAPT_METHODS


def cmd_compress(args) -> int:
    """`synth compress`: see `synth compress --help`."""
    check_output(args.report, [args.file], "report")
    check_folder_output(args.save, [args.file, args.student], "folder of models")
    if args.threads < 1:
        raise SynthError("S010", f"--threads must be a whole number ≥ 1, not {args.threads}",
                         hint="e.g. --threads 1")
    modes = tuple(m.strip() for m in (args.modes or "").split(",") if m.strip())
    allowed = ADAPT_METHODS["quantize"]["mode"].choices
    if bad := [m for m in modes if m not in allowed]:
        raise SynthError("S010", f"--modes takes {', '.join(allowed)}, not '{bad[0]}'")
    from synthdsl.train.compress import CompressConfig, compress_spec, write_report

    cfg = CompressConfig(Path(args.file), args.data, args.seeds, args.epochs,
                         args.finetune_epochs, Path(args.student) if args.student else None,
                         args.student_epochs, modes, args.calibration, args.threads,
                         args.repeats, quiet=args.json,
                         save=Path(args.save) if args.save else None)
    report = compress_spec(cfg)
    if args.report:
        write_report(report, Path(args.report))
        if not args.json:
            print(f"wrote {args.report}")
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        print()
    return EXIT_OK
