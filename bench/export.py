"""Exported models against eager: ONNX under onnxruntime and the torch.export program.

For each example spec (``models/transfer_resnet18.synth``, a ResNet-18 trunk under a new
head, and ``models/dual_encoder.synth``, a ViT image tower beside a text tower over token
ids and a mask), the compiled module is exported by ``synthdsl.build.export.export_model``
to ``.onnx`` and to ``.pt2`` (each checked there at batch 2 and 3), in a temporary folder.
Then, at batch 1 and 32, on the same example inputs: the max |diff| of every output of each
exported model against the eager module, and, after a warm-up, interleaved rounds that time
one forward of each of the three (eager under ``torch.inference_mode()``, the onnxruntime
session, the loaded program's module), rotating which goes first. Reported: the median time
of each and the median of the per-round ratios exported / eager.

Run from the repository root::

    .venv/bin/python bench/export.py                  # table + bench/results/export.json
    .venv/bin/python bench/export.py --rounds 50 --threads 1
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import synthdsl  # noqa: E402
from _record import environment, load_average, write_report  # noqa: E402
from synthdsl.build.export import export_model, max_abs_diff  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "export.json"
SPECS = ("models/transfer_resnet18.synth", "models/dual_encoder.synth")
PATHS = ("eager", "onnx", "pt2")


def _named(model, out) -> dict[str, torch.Tensor]:
    return out if isinstance(out, dict) else {model.output_names[0]: out}


def runners(model, folder: Path, threads: int) -> tuple[dict, dict]:
    """Export `model` both ways (checked by export_model); the three forwards by path, and
    what each export recorded."""
    import onnxruntime

    records = {fmt: export_model(model, folder / f"{model.graph.name}.{fmt}")
               for fmt in ("onnx", "pt2")}
    opts = onnxruntime.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(folder / f"{model.graph.name}.onnx"), opts,
                                           providers=["CPUExecutionProvider"])
    outputs = [o.name for o in session.get_outputs()]
    with open(folder / f"{model.graph.name}.pt2", "rb") as f:
        program = torch.export.load(f).module()

    def onnx(*inputs):
        values = session.run(outputs, {n: x.numpy() for n, x in zip(model.input_names, inputs)})
        return {n: torch.from_numpy(v) for n, v in zip(outputs, values)}

    def pt2(*inputs):
        return _named(model, program(*inputs))

    def eager(*inputs):
        return _named(model, model(*inputs))
    return {"eager": eager, "onnx": onnx, "pt2": pt2}, records


def measure(fns: dict, inputs: tuple, rounds: int, warmup: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {p: [] for p in PATHS}
    pc = time.perf_counter
    with torch.inference_mode():
        for _ in range(warmup):
            for p in PATHS:
                fns[p](*inputs)
        gc.collect()
        gc.disable()
        try:
            for i in range(rounds):
                order = PATHS[i % 3:] + PATHS[:i % 3]
                for p in order:
                    t0 = pc()
                    fns[p](*inputs)
                    times[p].append(pc() - t0)
        finally:
            gc.enable()
    return times


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--specs", default=",".join(SPECS), help="comma-separated example specs")
    ap.add_argument("--batches", default="1,32", help="batch sizes (default %(default)s)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch and onnxruntime intra-op threads (default %(default)s)")
    ap.add_argument("--rounds", type=int, default=50, help="timed rounds (default %(default)s)")
    ap.add_argument("--warmup", type=int, default=5, help="warm-up rounds (default %(default)s)")
    ap.add_argument("--out", type=Path, default=RESULTS, help="JSON file to write")
    ap.add_argument("--no-write", action="store_true", help="do not write the JSON file")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    load_at_start = load_average()
    t_start = time.perf_counter()
    batches = [int(b) for b in args.batches.split(",")]
    runs, exports = [], {}
    print(f"{'spec':<26} {'batch':>5} {'eager ms':>9} {'onnx ms':>9} {'pt2 ms':>9} "
          f"{'onnx/eager':>10} {'pt2/eager':>9} {'onnx |diff|':>11} {'pt2 |diff|':>10}")
    with tempfile.TemporaryDirectory() as tmp:
        for spec in args.specs.split(","):
            model = synthdsl.compile_spec(ROOT / spec, seed=0).eval()
            t0 = time.perf_counter()
            fns, records = runners(model, Path(tmp), args.threads)
            export_s = time.perf_counter() - t0
            for batch in batches:
                inputs = model.example_inputs(batch_size=batch, seed=batch)
                with torch.inference_mode():
                    want = fns["eager"](*inputs)
                    diffs = {p: max(max_abs_diff(fns[p](*inputs)[n], want[n]) for n in want)
                             for p in ("onnx", "pt2")}
                times = measure(fns, inputs, args.rounds, args.warmup)
                med = {p: statistics.median(ts) for p, ts in times.items()}
                ratio = {p: statistics.median(a / e for a, e in zip(times[p], times["eager"]))
                         for p in ("onnx", "pt2")}
                print(f"{Path(spec).stem:<26} {batch:>5} {med['eager'] * 1e3:>9.3f} "
                      f"{med['onnx'] * 1e3:>9.3f} {med['pt2'] * 1e3:>9.3f} "
                      f"{ratio['onnx']:>10.3f} {ratio['pt2']:>9.3f} {diffs['onnx']:>11.2e} "
                      f"{diffs['pt2']:>10.2e}")
                runs.append({"spec": spec, "batch": batch,
                             "input_shapes": {n: list(x.shape) for n, x in
                                              zip(model.input_names, inputs)},
                             "max_abs_diff": diffs, "median_s": med,
                             "median_ratio_to_eager": ratio, "times_s": times})
            exports[spec] = {"wall_s": export_s, **{
                fmt: {"bytes": r.bytes, "seconds": r.seconds, "checked_at": [
                    c.sizes for c in r.comparisons], "checked_max_abs_diff": r.max_diff}
                for fmt, r in records.items()}}
    report = {
        "benchmark": "export",
        "description": "exported ONNX (onnxruntime, CPU) and torch.export program "
                       "(torch.export.load(...).module()) against the eager compiled module: "
                       "max |diff| of every output and interleaved forward times, rotating "
                       "order; eval mode, torch.inference_mode()",
        **environment("torch", "timm", "synthdsl", "onnx", "onnxruntime", "onnxscript"),
        "load_average_at_start": load_at_start,
        "load_average_at_end": load_average(),
        "settings": {"specs": args.specs.split(","), "batches": batches,
                     "threads": args.threads, "rounds": args.rounds, "warmup": args.warmup},
        "bench_wall_s": time.perf_counter() - t_start,
        "exports": exports,
        "runs": runs,
    }
    if not args.no_write:
        print()
        write_report(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
