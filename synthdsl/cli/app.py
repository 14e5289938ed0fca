"""The `synth` command line.

    synth check FILE [--json]      exit 0 when the spec is sound, 1 with every problem found
    synth summary FILE             a table of nodes: kind, output shape, parameters, frozen
    synth compile FILE [--code]    build the module, run it once, print shapes and totals
                    [-o OUT]       ... and write it, with its spec and provenance
    synth export TARGET -o OUT     an ONNX model or a torch.export program, checked against
                                   the module (a spec, an artifact or a run)
    synth viz FILE [-o OUT]        the assembled model as text, DOT, SVG, PNG, HTML, Mermaid, JSON
    synth nodes ARCH|FILE SOURCE   the points a model can be cut at (torchvision:NAME too)
    synth fmt FILE... [--check]    the canonical spelling, comments kept (in place)
    synth lsp                      the language server for editors (stdio)
    synth diff A B [--json]        what changed between two specs, by meaning: values, shapes,
                                   sources, freeze sets, parameter counts
    synth lock FILE [--verify]     pin (or verify) the checkpoints a spec reads
    synth train FILE --data D -o RUN   train a spec: checkpoints, a JSON-lines log, --resume
    synth eval TARGET --data D     accuracy, per-class and macro P/R/F1, confusion matrix
    synth rank TARGET... --data D  which candidate transfers best: LogME, kNN, linear probe
    synth search FILE --space ...  Optuna over stages, frozen stages, lr, LoRA rank: trials, Pareto
    synth demo                     the synthesis loop on MNIST: synthesised vs scratch vs distilled
    synth compress FILE --data D   trained, pruned, int8 and distilled, measured side by side
    synth --plugin MODULE COMMAND  load a plugin's layers, operations and kinds of source first
    synth --version                the installed version (also `python -m synthdsl`)

A mistake in a spec is printed like a compiler prints it (file:line:col, the
line, a caret, a code and a hint) and exits 1; the CLI never shows a traceback.

This module is the parser and the dispatch, and imports nothing heavy: each command lives
in the module that does it (:mod:`synthdsl.cli.check`, :mod:`synthdsl.cli.spec`,
:mod:`synthdsl.cli.viz`, :mod:`synthdsl.cli.train`), loaded when the command runs, so
``synth check`` never loads the training stack and a syntax error never loads torch.
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import re
import sys
from pathlib import Path
from typing import Callable, Sequence

from synthdsl.cli import train_flags
from synthdsl.cli.common import EXIT_INTERNAL, EXIT_OK, EXIT_SPEC_ERROR, EXIT_USAGE, read_text
from synthdsl.cli.train_flags import add_training_flags
from synthdsl.files import WriteFailed, is_disk_error, write_error
from synthdsl.lang.budget import BUDGET_HELP
from synthdsl.cli.arguments import compress_arguments, demo_arguments, eval_arguments
from synthdsl.cli.examples import EXAMPLES
from synthdsl.lang.fmt import WIDTH
from synthdsl.lang.errors import SynthError, render_all
from synthdsl.lang.options import LOSSES, OPTIMIZERS, SCHEDULES

__all__ = ["EXIT_INTERNAL", "EXIT_OK", "EXIT_SPEC_ERROR", "EXIT_USAGE", "build_parser", "main",
           "run"]

Command = Callable[[argparse.Namespace], int]


def _command(module: str, name: str) -> Command:
    """The command `name` of `module`, imported when it first runs."""
    def command(args: argparse.Namespace) -> int:
        return getattr(importlib.import_module(module), name)(args)

    command.__name__ = command.__qualname__ = name
    return command


cmd_check = _command("synthdsl.cli.check", "cmd_check")
cmd_summary = _command("synthdsl.cli.spec", "cmd_summary")
cmd_lock = _command("synthdsl.cli.spec", "cmd_lock")
cmd_compile = _command("synthdsl.cli.spec", "cmd_compile")
cmd_merge = _command("synthdsl.cli.spec", "cmd_merge")
cmd_diff = _command("synthdsl.cli.spec", "cmd_diff")
cmd_fmt = _command("synthdsl.cli.fmt", "cmd_fmt")
cmd_lsp = _command("synthdsl.cli.lsp", "cmd_lsp")
cmd_export = _command("synthdsl.cli.export", "cmd_export")
cmd_soup = _command("synthdsl.cli.soup", "cmd_soup")
cmd_nodes = _command("synthdsl.cli.spec", "cmd_nodes")
cmd_viz = _command("synthdsl.cli.viz", "cmd_viz")
cmd_train = _command("synthdsl.cli.train", "cmd_train")
cmd_eval = _command("synthdsl.cli.train", "cmd_eval")
cmd_rank = _command("synthdsl.cli.train", "cmd_rank")
cmd_search = _command("synthdsl.cli.train", "cmd_search")
cmd_demo = _command("synthdsl.cli.train", "cmd_demo")
cmd_compress = _command("synthdsl.cli.compress", "cmd_compress")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="synth", description="Build new models out of "
                                "pretrained ones from declarative .synth specs.")
    p.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                   help="load a plugin first: a module (or an installed plugin's entry point "
                   "name) that registers layers, operations or kinds of source "
                   "(repeatable; also SYNTHDSL_PLUGINS=a,b). Installed plugins are never "
                   "loaded unless named")
    p.add_argument("--version", action="version", version=f"synthdsl {version()}")
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("check", help="check a spec; every problem, with line and column")
    c.add_argument("file")
    c.add_argument("--json", action="store_true", help="diagnostics as JSON")
    c.add_argument("--budget", metavar="KEY=SIZE,...", help=BUDGET_HELP)
    c.set_defaults(func=cmd_check)

    s = sub.add_parser("summary", help="a table of nodes, shapes and parameters")
    s.add_argument("file")
    s.add_argument("--inheritance", action="store_true",
                   help="also where every tensor comes from (builds the module)")
    s.add_argument("--json", action="store_true", help="the rows and totals as JSON")
    s.add_argument("--budget", metavar="KEY=SIZE,...", help=BUDGET_HELP)
    s.set_defaults(func=cmd_summary)

    lk = sub.add_parser("lock", help="pin the checkpoints a spec reads (SPEC.lock)")
    lk.add_argument("file")
    lk.add_argument("--verify", action="store_true", help="check them against the lock")
    lk.set_defaults(func=cmd_lock)

    k = sub.add_parser("compile", help="build the module and run one forward pass")
    k.add_argument("file")
    k.add_argument("--code", action="store_true", help="print the generated fx code")
    k.add_argument("--seed", type=int, default=0, help="seed for new layers (default 0)")
    k.add_argument("--batch-size", type=int, default=2)
    k.add_argument("-o", "--output", help="write the compiled module (.safetensors)")
    k.add_argument("--budget", metavar="KEY=SIZE,...", help=BUDGET_HELP)
    k.add_argument("--json", action="store_true", help="inputs, outputs and totals as JSON")
    k.set_defaults(func=cmd_compile)

    x = sub.add_parser("export", help="write an ONNX model or a torch.export program, and "
                       "check its outputs against the module")
    x.add_argument("file", metavar="TARGET",
                   help="a .synth spec, a compiled .safetensors artifact or a run folder of "
                   "`synth train`")
    x.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="the file to write; the suffix picks the format: .onnx (needs pip "
                   "install synthdsl[export]) or .pt2 (torch.export)")
    x.add_argument("--external-data", action="store_true", help="ONNX: keep the weights "
                   "in OUT.data beside it (done by itself past 1.75 GiB of weights)")
    x.add_argument("--atol", type=float, default=1e-4,
                   help="largest |diff| between the exported model's outputs and the "
                   "module's that passes (default 1e-4)")
    x.add_argument("--seed", type=int, default=0, help="seed for a spec's new layers "
                   "(default 0)")
    x.add_argument("--json", action="store_true",
                   help="what was written and the measured differences, as JSON")
    x.set_defaults(func=cmd_export)

    m = sub.add_parser("merge", help="write the merged weights of a merge(...) source")
    m.add_argument("file")
    m.add_argument("-o", "--output", help="the .safetensors file to write")
    m.add_argument("--source", help="which merge(...) source, when the spec has several")
    m.set_defaults(func=cmd_merge)

    d = sub.add_parser("diff", help="what changed between two specs: sources, values, shapes, "
                       "freeze sets and parameter counts, not their text")
    d.add_argument("before")
    d.add_argument("after")
    d.add_argument("--json", action="store_true", help="print the changes as JSON")
    d.add_argument("--exit-code", action="store_true",
                   help="exit 4 when the specs differ (0 when they describe the same model)")
    d.set_defaults(func=cmd_diff)

    f = sub.add_parser("fmt", help="write specs in their canonical spelling, comments kept")
    f.add_argument("files", nargs="+", metavar="FILE", help="specs to format ('-': stdin to "
                   "stdout)")
    f.add_argument("--check", action="store_true",
                   help="write nothing; exit 4 when a file would change")
    f.add_argument("--diff", action="store_true", help="write nothing; print what would "
                   "change as a unified diff (exit 4 when something would)")
    f.add_argument("--width", type=int, help=f"columns a line is wrapped to (default {WIDTH})")
    f.set_defaults(func=cmd_fmt)

    ls = sub.add_parser("lsp", help="the language server for editors, over stdio (needs "
                        "synthdsl[lsp])")
    ls.set_defaults(func=cmd_lsp)

    n = sub.add_parser("nodes", help="the cut points of a timm model, with their shapes")
    n.add_argument("target", help="a timm architecture, torchvision:NAME, or a .synth file")
    n.add_argument("source", nargs="?", help="with a .synth file: the name of its source")
    n.add_argument("--input", type=int, nargs="+", metavar="N",
                   help="input size without the batch, e.g. --input 3 224 224")
    n.add_argument("--json", action="store_true", help="the cut points as JSON")
    n.set_defaults(func=cmd_nodes)

    v = sub.add_parser("viz", help="draw the assembled model: text, DOT, SVG, PNG, HTML, "
                       "Mermaid or JSON")
    v.add_argument("file")
    v.add_argument("-o", "--output", metavar="OUT",
                   help="write here; the suffix picks the format (.dot .svg .png .html .mmd "
                   ".json .txt); without it, a text tree on the terminal")
    v.add_argument("--format", choices=("text", "dot", "svg", "png", "html", "mmd", "json"),
                   help="the format, whatever the suffix (to stdout without -o)")
    v.add_argument("--expand", action="append", metavar="SOURCE",
                   help="open a source into its torch.fx graph, grouped by module "
                   "(repeatable; 'all' for every source)")
    v.add_argument("--depth", type=int, default=1, metavar="N",
                   help="module levels an expanded source is grouped to (default 1)")
    v.add_argument("--collapse", action="append", metavar="SOURCE",
                   help="draw a source as one node (repeatable; 'all' for every source)")
    v.set_defaults(func=cmd_viz)

    t = sub.add_parser("train", help="train a spec on data: checkpoints, log, --resume, DDP")
    _train_arguments(t)
    t.add_argument("--budget", metavar="KEY=SIZE,...", help=BUDGET_HELP)
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="accuracy, precision, recall, F1 and the confusion matrix")
    eval_arguments(e)
    e.set_defaults(func=cmd_eval)

    rk = sub.add_parser("rank", help="score candidate starting points on your labels before "
                        "fine-tuning: LogME, kNN and a linear probe on frozen features")
    rk.add_argument("files", nargs="+", metavar="TARGET", help="specs, artifacts or runs; "
                    "every output of each is a candidate")
    rk.add_argument("--data", required=True, help="as for synth train")
    rk.add_argument("--classes", help="keep these classes, as for synth train")
    rk.add_argument("--shots", type=int, help="score on this many labelled samples per class "
                    "(a seeded subset, as synth train --shots takes it)")
    rk.add_argument("--shots-seed", type=int, default=0)
    rk.add_argument("--k", type=int, default=10, help="neighbours of the kNN score (default 10)")
    rk.add_argument("--batch-size", type=int, default=256)
    rk.add_argument("--device", default="cpu")
    rk.add_argument("--json", action="store_true", help="the table as JSON")
    rk.add_argument("--plot", metavar="PNG", help="a bar chart of the three scores")
    rk.set_defaults(func=cmd_rank)

    se = sub.add_parser("search", help="a bounded search over spec choices (stage, frozen "
                        "stages, lr, LoRA rank), each trial a real training run (Optuna)")
    se.add_argument("file", help="the .synth spec")
    se.add_argument("--data", required=True, help="as for synth train")
    se.add_argument("--space", action="append", required=True, metavar="NAME=DOMAIN",
                    help="a choice: recipe.lr=1e-4:1e-2:log, feats.stage=2|3|4, "
                    "frozen_stages.r=0..3, adapt.rank=4|8|16 (repeatable)")
    se.add_argument("--trials", type=int, default=10, help="finished trials wanted in all "
                    "(a study in OUT resumes; default 10)")
    se.add_argument("-o", "--output", required=True, metavar="OUT",
                    help="the study folder: study.db, trials/, results.json, pareto.png")
    se.add_argument("--seed", type=int, default=0, help="the sampler's and every trial's seed")
    se.add_argument("--classes", help="keep these classes, as for synth train")
    se.add_argument("--json", action="store_true", help="the trials as JSON")
    se.set_defaults(func=cmd_search)

    so = sub.add_parser("soup", help="fine-tune variants of a spec from one start; the greedy "
                        "and uniform soups against the best variant")
    so.add_argument("file", help="the .synth spec")
    so.add_argument("--data", required=True, help="as for synth train")
    so.add_argument("--variants", type=int, default=4, help="fine-tuned variants (default 4)")
    so.add_argument("--seed", type=int, default=0,
                    help="seed of the start; variant i trains with seed+1+i (default 0)")
    so.add_argument("--lrs", help="learning rates, cycled over the variants: 0.003,0.001")
    so.add_argument("--epochs", type=int, help="epochs of each variant (default: the recipe's)")
    so.add_argument("--batch-size", type=int)
    so.add_argument("--classes", help="keep these classes, as for synth train")
    so.add_argument("--device", default="cpu")
    so.add_argument("-o", "--output", help="write the greedy soup as a compiled module")
    so.add_argument("--report", help="write every variant's and soup's accuracies (JSON)")
    so.add_argument("--json", action="store_true", help="print that report as JSON")
    so.set_defaults(func=cmd_soup)

    d = sub.add_parser("demo", help="the synthesis loop, measured: fuse two models trained on "
                       "digits 0-4 into one for 5-9, against training from scratch")
    demo_arguments(d)
    d.set_defaults(func=cmd_demo)

    z = sub.add_parser("compress", help="train a spec, then prune, quantise and distil it as "
                       "its adapt statements say; every form measured side by side")
    compress_arguments(z)
    z.set_defaults(func=cmd_compress)
    for name, parser in sub.choices.items():
        if name in EXAMPLES:
            parser.epilog = "examples:\n" + "\n".join(f"  {e}" for e in EXAMPLES[name])
            parser.formatter_class = argparse.RawDescriptionHelpFormatter
    return p


def version() -> str:
    """The installed synthdsl's version (without importing anything heavy)."""
    from importlib import metadata

    try:
        return metadata.version("synthdsl")
    except metadata.PackageNotFoundError:
        return "unknown"


def _train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="the .synth spec to train")
    p.add_argument("--data", required=True, help="digits, mnist5k, a folder of class folders, "
                   "or an .npz of images and labels")
    p.add_argument("-o", "--output", required=True, metavar="RUN",
                   help="the run folder: run.json, log.jsonl, checkpoints/, model.safetensors")
    p.add_argument("--classes", help="keep these classes, renumbered from 0: '5-9', '0,2,4', "
                   "or class names")
    p.add_argument("--shots", type=int, help="labelled samples per class (a seeded subset)")
    p.add_argument("--shots-seed", type=int, help="seed of that subset (default: --seed)")
    p.add_argument("--unlabelled", action="store_true", help="with --shots, keep the other "
                   "training samples without labels (they count in distillation)")
    p.add_argument("--eval-split", default="test", choices=("test", "train", "none"),
                   help="evaluated after each epoch and at the end (default test)")
    r = p.add_argument_group("recipe (overrides the spec's `recipe` statement)")
    r.add_argument("--epochs", type=int)
    r.add_argument("--lr", type=float)
    r.add_argument("--batch-size", type=int)
    r.add_argument("--optimizer", choices=OPTIMIZERS)
    r.add_argument("--schedule", choices=SCHEDULES)
    r.add_argument("--weight-decay", type=float)
    r.add_argument("--momentum", type=float)
    r.add_argument("--warmup-epochs", type=int)
    r.add_argument("--label-smoothing", type=float)
    r.add_argument("--seed", type=int)
    t = p.add_argument_group("distillation from a model outside the spec")
    t.add_argument("--teacher", metavar="RUN|ARTIFACT|SPEC",
                   help="distil the spec's output from this model's output")
    t.add_argument("--teacher-output", help="the teacher's output to use (default: its first)")
    t.add_argument("--temperature", type=float,
                   default=LOSSES["distill"].options["temperature"].default)
    t.add_argument("--alpha", type=float, default=LOSSES["distill"].options["alpha"].default,
                   help="weight of the soft targets; 1 - alpha goes to the labels")
    x = p.add_argument_group("inputs")
    x.add_argument("--mean", help="normalisation mean, e.g. 0.5,0.5,0.5 (default: the first "
                   "timm source's own config)")
    x.add_argument("--std", help="normalisation std")
    x.add_argument("--no-normalize", action="store_true", help="feed values in [0, 1]")
    x.add_argument("--augment", type=int, default=0, metavar="PIXELS",
                   help="random shifts of up to this many pixels")
    o = p.add_argument_group("running")
    o.add_argument("--resume", action="store_true", help="continue the run in RUN")
    o.add_argument("--cache-frozen", action="store_true", help="compute the frozen prefix's "
                   "outputs once and reuse them in later epochs")
    o.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    o.add_argument("--amp", default="auto", choices=("auto", "bf16", "fp16", "off"),
                   help="mixed precision (auto: bf16 on CUDA, off on CPU)")
    o.add_argument("--eval-every", type=int, default=1, metavar="EPOCHS")
    o.add_argument("--checkpoint-every", type=int, default=1, metavar="EPOCHS",
                   help="checkpoint every EPOCHS epochs (default 1; 0: only the last)")
    o.add_argument("--save-every", type=int, default=0, metavar="STEPS",
                   help="also checkpoint every STEPS steps inside an epoch")
    o.add_argument("--keep", type=int, default=2, help="checkpoints kept (default 2)")
    o.add_argument("--save-adapters", action="store_true", help="also write "
                   "adapters.safetensors: the LoRA adapters alone")
    o.add_argument("--adapter", action="append", default=[], metavar="NAME[=WEIGHT]",
                   help="train with only these LoRA adapters active (at these weights); "
                   "the others are left out and frozen (repeatable)")
    o.add_argument("--merge-adapters", action="store_true", help="also write "
                   "model-merged.safetensors with LoRA adapters folded into the weights")
    o.add_argument("--no-progress", action="store_true", help="no progress bar")
    o.add_argument("-q", "--quiet", action="store_true")
    add_training_flags(r, o, x)


#: Flags that must be whole numbers ≥ 1, by command ("*": every command that has it).
_AT_LEAST_ONE = ("batch_size", "epochs", "shots", "seeds", "input", "k", "trials",
                 "finetune_epochs", "student_epochs", "repeats", "calibration",
                 *train_flags.AT_LEAST_ONE)
#: Flags that must be whole numbers ≥ 0.
_AT_LEAST_ZERO = ("depth", "warmup_epochs", "augment", "eval_every", "checkpoint_every",
                  "save_every", "keep", "threads", *train_flags.AT_LEAST_ZERO)
#: Flags that must be finite numbers in a range: (low, low included, high, high included).
_RANGES = {"lr": (0.0, False, math.inf, False), "temperature": (0.0, False, math.inf, False),
           "weight_decay": (0.0, True, math.inf, False), "momentum": (0.0, True, 1.0, True),
           "label_smoothing": (0.0, True, 1.0, False), "alpha": (0.0, True, 1.0, True),
           "atol": (0.0, True, math.inf, False), **train_flags.RANGES}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_flags(args: argparse.Namespace) -> None:
    """Sizes and rates on the command line are in their range before anything runs: S010
    naming the flag, what it takes and what it was given (argparse has checked the types)."""
    for name in _AT_LEAST_ONE + _AT_LEAST_ZERO:
        value = getattr(args, name, None)
        low = 1 if name in _AT_LEAST_ONE else 0
        for v in value if isinstance(value, list) else [value]:
            if v is not None and v < low:
                example = "3 224 224" if name == "input" else str(max(low, 1))
                raise SynthError("S010", f"{_flag(name)} must be a whole number ≥ {low}, not "
                                 f"{v}", hint=f"e.g. {_flag(name)} {example}")
    for name, (lo, lo_in, hi, hi_in) in _RANGES.items():
        v = getattr(args, name, None)
        if v is None:
            continue
        inside = math.isfinite(v) and (v >= lo if lo_in else v > lo) and (
            v <= hi if hi_in else v < hi)
        if not inside:
            span = (("[" if lo_in else "(") + f"{lo:g}, " + (f"{hi:g}" if math.isfinite(hi)
                    else "inf") + ("]" if hi_in else ")"))
            want = (f"a number > {lo:g}" if not math.isfinite(hi) and not lo_in else
                    f"a number ≥ {lo:g}" if not math.isfinite(hi) else f"a number in {span}")
            raise SynthError("S010", f"{_flag(name)} must be {want}, not {v}")


def _under(name: str, out: str) -> bool:
    a, b = os.path.abspath(name), os.path.abspath(out)
    return a == b or a.startswith(b.rstrip(os.sep) + os.sep) or b.startswith(a + os.sep)


def user_write_error(e: OSError, args: argparse.Namespace) -> SynthError | None:
    """The S009 an OSError stands for where it is about where the command writes: a full disk
    or a read-only filesystem, or a permission or path error naming the command's -o/--plot
    path, a folder above it or a file inside it. None for anything else (a bug of ours)."""
    outputs = [str(o) for o in (getattr(args, "output", None), getattr(args, "plot", None))
               if o not in (None, "", "-")]
    names = [str(n) for n in (e.filename, getattr(e, "filename2", None)) if n is not None]
    for out in outputs:
        for name in names:
            if _under(name, out):
                return write_error(e, Path(name)) or WriteFailed(name, e)
    if is_disk_error(e):  # a full disk, whatever file it names
        return WriteFailed(names[0] if names else (outputs[0] if outputs else "the output"), e)
    return None


def _is_out_of_memory(e: BaseException) -> bool:
    """torch's allocator refusing a size (its OutOfMemoryError, or the CPU allocator's
    RuntimeError), as opposed to any other error."""
    if type(e).__name__ == "OutOfMemoryError":
        return True
    text = str(e)
    return isinstance(e, RuntimeError) and ("can't allocate memory" in text
                                            or "out of memory" in text.lower())


def out_of_memory(e: BaseException) -> SynthError:
    """What a refused allocation tells the user: S305, with what was asked where torch says."""
    asked = re.search(r"allocate (\d+) bytes", str(e))
    size = f" ({int(asked.group(1)):,} bytes asked)" if asked else ""
    return SynthError("S305", f"this machine ran out of memory{size}: the model, the batch or "
                      "the data is larger than it can hold, though within the check's budget",
                      hint="use a smaller --batch-size or input size, or lower the budget "
                      "(--budget params=...,activations=...,batch=...) to have the check "
                      "refuse such sizes")


def _load_plugins(args: argparse.Namespace) -> None:
    """The plugins of SYNTHDSL_PLUGINS, then those of --plugin, before the command runs."""
    names = [*os.environ.get("SYNTHDSL_PLUGINS", "").split(","), *args.plugin]
    if any(n.strip() for n in names):
        from synthdsl.library.plugins import load_plugins, names_from_env

        load_plugins(names_from_env(",".join(names)))


def run(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        check_flags(args)
        _load_plugins(args)
        return args.func(args)
    except SynthError as e:
        print(render_all(e, read_text(getattr(args, "file", "") or "")), file=sys.stderr)
        return EXIT_SPEC_ERROR
    except BrokenPipeError:  # `synth nodes ... | head`
        sys.stderr.close()
        return EXIT_OK
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except MemoryError as e:
        print(render_all(out_of_memory(e), ""), file=sys.stderr)
        return EXIT_SPEC_ERROR
    except Exception as e:  # noqa: BLE001 - a bug of ours: say so, briefly
        if _is_out_of_memory(e):  # the allocator refused: this machine, not a bug
            print(render_all(out_of_memory(e), ""), file=sys.stderr)
            return EXIT_SPEC_ERROR
        failed = user_write_error(e, args) if isinstance(e, OSError) else None
        if failed is not None:  # where the command writes is not writable: the user's to fix
            print(render_all(failed, ""), file=sys.stderr)
            return EXIT_SPEC_ERROR
        print(f"internal error: {type(e).__name__}: {e}\n"
              "This is a bug in synthdsl, not in your spec; set SYNTH_TRACEBACK=1 to see "
              "where it happened.", file=sys.stderr)
        if os.environ.get("SYNTH_TRACEBACK"):
            raise
        return EXIT_INTERNAL


def main(argv: Sequence[str] | None = None) -> None:
    sys.exit(run(argv))


if __name__ == "__main__":  # pragma: no cover
    main()
