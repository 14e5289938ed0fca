"""`synth train`, `synth eval` and `synth demo`: command-line flags in, the typed functions of
:mod:`synthdsl.train` called, their results printed."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from synthdsl.build.adapters import parse_active
from synthdsl.build.artifact import save_compiled
from synthdsl.cli import train_flags
from synthdsl.cli.common import EXIT_OK, check_folder_output, check_output
from synthdsl.lang.budget import budget_limits
from synthdsl.train.data import BUILTIN, parse_classes
from synthdsl.train.demo import DemoConfig, run_demo
from synthdsl.train.distributed import close, is_main_process
from synthdsl.train.errors import EvalError, TrainError
from synthdsl.train.evaluate import data_for, evaluate, load_model
from synthdsl.train.options import Options
from synthdsl.train.run import train_spec
from synthdsl.train.runlog import log_kinds

#: `synth train` flags that override the spec's `recipe` statement.
RECIPE_FLAGS = ("epochs", "lr", "batch_size", "optimizer", "schedule", "weight_decay",
                "momentum", "warmup_epochs", "label_smoothing", "seed", *train_flags.RECIPE_FLAGS)


def _floats(text: str | None) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError as e:
        raise TrainError(f"expected numbers separated by commas, found '{text}'") from e


def check_device(text: str, flag: str = "--device") -> None:
    """`--device` names a device torch knows and this machine has (T001 otherwise), checked
    before the spec is compiled or any data read."""
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError) as e:
        raise TrainError(f"{flag} '{text}' is not a device: {str(e).splitlines()[0]}",
                         hint="cpu, cuda, cuda:1, mps, ...") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise TrainError(f"{flag} '{text}': CUDA is not available on this machine",
                             hint="use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise TrainError(f"{flag} '{text}': this machine has "
                             f"{torch.cuda.device_count()} CUDA devices (0.."
                             f"{torch.cuda.device_count() - 1})")
    elif device.type == "mps" and not (hasattr(torch.backends, "mps")
                                       and torch.backends.mps.is_available()):
        raise TrainError(f"{flag} '{text}': MPS is not available on this machine",
                         hint="use --device cpu")


def cmd_train(args) -> int:
    """`synth train`: see `synth train --help`."""
    data = None if args.data in BUILTIN else args.data
    check_folder_output(args.output, [args.file, data, args.teacher], "run folder")
    check_device(args.device)
    options = Options(device=args.device, amp=args.amp, cache_frozen=args.cache_frozen,
                      augment=args.augment, eval_every=args.eval_every,
                      checkpoint_every=args.checkpoint_every, save_every=args.save_every,
                      keep=args.keep,
                      progress=False if args.no_progress else None, quiet=args.quiet,
                      compile=args.compile, log=log_kinds(args.log))
    with budget_limits(getattr(args, "budget", None)):  # the check's limits, batch included
        result = _train(args, options)
    if result.run is not None and args.save_adapters and is_main_process():
        trained = [n for n, w in result.model.adapter_weights.items() if w != 0] \
            if args.adapter else None  # the adapters trained, not those left out
        written = result.model.save_adapters(result.run / "adapters.safetensors", trained)
        if not args.quiet:
            print(f"adapters  the LoRA adapters alone: {written}")
    if result.run is not None and args.merge_adapters:
        merged = result.model.merge_adapters()
        if merged and is_main_process():
            save_compiled(result.model, result.run / "model-merged.safetensors")
            if not args.quiet:
                print(f"merged  {len(merged)} adapters into their layers: "
                      f"{result.run}/model-merged.safetensors")
    close()
    return EXIT_OK


def _train(args, options: Options):
    return train_spec(
        Path(args.file), args.data, args.output,
        recipe={k: getattr(args, k, None) for k in RECIPE_FLAGS}, options=options,
        classes=parse_classes(args.classes), shots=args.shots, shots_seed=args.shots_seed,
        unlabelled=args.unlabelled, eval_split=args.eval_split, mean=_floats(args.mean),
        std=_floats(args.std), normalize=False if args.no_normalize else None,
        teacher=args.teacher, teacher_output=args.teacher_output,
        temperature=args.temperature, alpha=args.alpha, resume=args.resume,
        overrides=args.set, val_split=args.val_split or 0.0,
        adapters=parse_active(args.adapter))


def cmd_eval(args) -> int:
    """`synth eval`: see `synth eval --help`."""
    inputs = [args.file, args.weights, None if args.data in BUILTIN else args.data]
    check_folder_output(args.output, inputs, "report folder")
    check_output(args.plot, [i for i in inputs if i], "confusion matrix")
    check_device(args.device)
    loaded = load_model(args.file, args.weights, args.device)
    for file in args.adapters:
        loaded.model.load_adapters(file)
    if args.adapter:
        loaded.model.set_adapters(parse_active(args.adapter))
    data = data_for(loaded, args.data, args.classes, args.split)
    report = evaluate(loaded.model, data, loaded.preprocess, args.batch_size, args.device,
                      target=str(args.file))
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(loaded.description)
        print(report.text())
    if args.output:
        written = report.write(args.output)
        if not args.json:
            print(f"\nwrote {', '.join(str(p) for p in written)}")
    if args.plot and report.primary is None:
        raise EvalError("--plot draws a confusion matrix, and no output of "
                        f"'{loaded.model.graph.name}' gives class scores",
                        hint="drop --plot; retrieval is in the report")
    if args.plot:
        report.primary.metrics.plot(args.plot, f"{report.primary.name} on {report.data}")
        if not args.json:
            print(f"wrote {args.plot}")
    return EXIT_OK


def cmd_rank(args) -> int:
    """`synth rank`: see `synth rank --help`."""
    from synthdsl.train.rank import rank

    check_output(args.plot, [f for f in args.files], "plot")
    check_device(args.device)
    report = rank(args.files, args.data, args.classes, args.batch_size, args.device, args.k,
                  args.shots, args.shots_seed)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(report.text())
    if args.plot:
        report.plot(args.plot)
        if not args.json:
            print(f"wrote {args.plot}")
    return EXIT_OK


def cmd_search(args) -> int:
    """`synth search`: see `synth search --help`."""
    from synthdsl.train.data import parse_classes
    from synthdsl.train.search import parse_space, plot, search, table

    space = parse_space(args.space)
    check_folder_output(args.output, [args.file], "study folder")
    log = (lambda m: print(m, file=sys.stderr)) if args.json else print
    records = search(args.file, args.data, space, args.output, trials=args.trials,
                     seed=args.seed, classes=parse_classes(args.classes), log=log)
    if args.json:
        print(json.dumps(records, indent=2))
    else:
        print(table(records))
    if records:
        written = plot(records, Path(args.output) / "pareto.png")
        if not args.json:
            print(f"wrote {Path(args.output) / 'results.json'} and {written}")
    return EXIT_OK


def cmd_demo(args) -> int:
    """`synth demo`: see `synth demo --help`."""
    check_folder_output(args.output, [], "demo folder")
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.output)
    if args.quick:
        cfg = DemoConfig.quick_config(out, args.data)
    else:
        sweep = tuple(int(k) for k in args.sweep.split(",") if k.strip())
        cfg = DemoConfig(out=out, data=args.data, seeds=args.seeds, shots=args.shots,
                         sweep=sweep, fresh=args.fresh)
    run_demo(cfg)
    return EXIT_OK
