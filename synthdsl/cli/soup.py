"""`synth soup`: fine-tune variants of a spec from one start and make the greedy soup."""

from __future__ import annotations

import json
import sys

from synthdsl.build.artifact import save_compiled
from synthdsl.cli.common import EXIT_OK, check_output
from synthdsl.files import write_text
from synthdsl.train.data import parse_classes
from synthdsl.train.options import Options
from synthdsl.train.soup import soup


def cmd_soup(args) -> int:
    """`synth soup`: see `synth soup --help`."""
    from synthdsl.cli.train import _floats

    check_output(args.output, [args.file], "soup")
    check_output(args.report, [args.file], "soup report")
    recipe = {k: getattr(args, k) for k in ("epochs", "batch_size") if getattr(args, k)}
    result = soup(args.file, args.data, variants=args.variants, seed=args.seed,
                  lrs=_floats(args.lrs), recipe=recipe,
                  options=Options(device=args.device, quiet=args.json),
                  classes=parse_classes(args.classes),
                  log=(lambda m: print(m, file=sys.stderr)) if args.json else print)
    if args.json:
        if args.output:
            save_compiled(result.model, args.output)
        if args.report:
            write_text(args.report, json.dumps(result.record(), indent=2) + "\n")
        print(json.dumps(result.record(), indent=2))
        return EXIT_OK
    print(f"{'':14}{'validation':>12}{'test':>10}")
    for name, label in (("best", "best single"), ("uniform", "uniform soup"),
                        ("greedy", "greedy soup")):
        s = result.scores[name]
        print(f"{label:14}{s['val']:>12.4f}{s['test']:>10.4f}")
    print(f"greedy soup: variants {', '.join(map(str, result.greedy))} of {len(result.variants)}")
    if args.output:
        save_compiled(result.model, args.output)
        print(f"wrote {args.output} (the greedy soup, its spec and provenance)")
    if args.report:
        write_text(args.report, json.dumps(result.record(), indent=2) + "\n")
        print(f"wrote {args.report}")
    return EXIT_OK
