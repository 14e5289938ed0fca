"""Runtime overhead: models/whole_resnet18.synth compiled vs timm's own resnet18.

Both models hold the same weights (the compiled module's ``r18.*`` state loaded
into ``timm.create_model("resnet18", num_classes=10)``), run in eval mode under
``torch.inference_mode()`` on the same input. Outputs are first checked to be
bitwise equal (``torch.equal``). Then, after a warm-up, every round times one
forward of each model, alternating which goes first, and the per-round ratio
compiled / timm is recorded. Reported: the median forward time of each, and the
median, p10 and p90 of the per-round ratio (the goal: median within 1.02).

Run from the repository root::

    .venv/bin/python bench/overhead.py                # table + bench/results/overhead.json
    .venv/bin/python bench/overhead.py --rounds 400 --threads 1
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import timm  # noqa: E402
import torch  # noqa: E402

import synthdsl  # noqa: E402
from _record import environment, load_average, write_report  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "overhead.json"
SPEC = ROOT / "models" / "whole_resnet18.synth"
GOAL = 1.02


def quantile(xs: list[float], q: float) -> float:
    """Linear-interpolated quantile (q in [0, 1]) of a non-empty list."""
    s = sorted(xs)
    pos = (len(s) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def build(seed: int):
    compiled = synthdsl.compile_spec(str(SPEC), seed=seed)
    reference = timm.create_model("resnet18", num_classes=10)
    state = {k[len("r18."):]: v for k, v in compiled.state_dict().items()
             if k.startswith("r18.")}
    leftover = [k for k in compiled.state_dict() if not k.startswith("r18.")]
    if leftover:
        raise SystemExit(f"compiled module has state outside r18.*: {leftover[:5]}")
    reference.load_state_dict(state, strict=True)
    compiled.eval()
    reference.eval()
    return compiled, reference


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8, help="batch size (default %(default)s)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch.set_num_threads, fixed (default %(default)s)")
    ap.add_argument("--rounds", type=int, default=400, help="timed rounds (default %(default)s)")
    ap.add_argument("--warmup", type=int, default=20, help="warm-up rounds (default %(default)s)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS, help="JSON file to write")
    ap.add_argument("--no-write", action="store_true", help="do not write the JSON file")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    load_at_start = load_average()
    t_start = time.perf_counter()
    compiled, reference = build(args.seed)
    (x,) = compiled.example_inputs(batch_size=args.batch, seed=args.seed)
    x = x.contiguous()

    with torch.inference_mode():
        y_c = compiled(x)
        y_r = reference(x)
    bitwise_equal = bool(torch.equal(y_c, y_r))
    max_abs_diff = float((y_c - y_r).abs().max())
    print(f"outputs {tuple(y_c.shape)}: bitwise equal = {bitwise_equal} "
          f"(max |diff| = {max_abs_diff:g})")
    if not bitwise_equal:
        print("WARNING: outputs differ; the timing below compares different computations",
              file=sys.stderr)

    fns = {"compiled": compiled, "timm": reference}
    t_c: list[float] = []
    t_r: list[float] = []
    ratios: list[float] = []
    pc = time.perf_counter
    with torch.inference_mode():
        for i in range(args.warmup):
            compiled(x)
            reference(x)
        gc.collect()
        gc.disable()  # no collector pauses inside a timed forward
        try:
            for i in range(args.rounds):
                order = ("compiled", "timm") if i % 2 == 0 else ("timm", "compiled")
                got = {}
                for name in order:
                    f = fns[name]
                    t0 = pc()
                    f(x)
                    got[name] = pc() - t0
                t_c.append(got["compiled"])
                t_r.append(got["timm"])
                ratios.append(got["compiled"] / got["timm"])
        finally:
            gc.enable()

    med_c, med_r = statistics.median(t_c), statistics.median(t_r)
    med_ratio = statistics.median(ratios)
    p10, p90 = quantile(ratios, 0.10), quantile(ratios, 0.90)
    ok = med_ratio <= GOAL

    print(f"\nresnet18 forward, batch {args.batch} x 3 x 64 x 64, eval, inference_mode, "
          f"{args.threads} threads, {args.rounds} interleaved rounds ({args.warmup} warm-up)")
    print(f"python {platform.python_version()}, torch {torch.__version__}, "
          f"timm {timm.__version__}, cpus {os.cpu_count()}\n")
    print(f"{'model':<28} {'median ms':>10} {'p10 ms':>8} {'p90 ms':>8} {'min ms':>8}")
    for label, ts in (("synthdsl (whole_resnet18)", t_c), ("timm resnet18", t_r)):
        print(f"{label:<28} {med_c * 1e3 if ts is t_c else med_r * 1e3:>10.3f} "
              f"{quantile(ts, 0.1) * 1e3:>8.3f} {quantile(ts, 0.9) * 1e3:>8.3f} "
              f"{min(ts) * 1e3:>8.3f}")
    print(f"\nper-round ratio compiled / timm: median {med_ratio:.4f}  "
          f"p10 {p10:.4f}  p90 {p90:.4f}")
    print(f"ratio of medians: {med_c / med_r:.4f}")
    print(f"goal median ratio <= {GOAL}: {'met' if ok else 'NOT met'}")

    report = {
        "benchmark": "overhead",
        "description": "forward time of models/whole_resnet18.synth compiled by synthdsl vs "
                       "timm.create_model('resnet18', num_classes=10) with the same weights "
                       "and input; eval mode, torch.inference_mode(); interleaved rounds, "
                       "alternating order",
        **environment(),
        "load_average_at_start": load_at_start,
        "load_average_at_end": load_average(),
        "spec": str(SPEC.relative_to(ROOT)),
        "seed": args.seed,
        "input_shape": list(x.shape),
        "output_shape": list(y_c.shape),
        "compiled_forward_code": compiled.code.strip(),
        "bitwise_equal": bitwise_equal,
        "max_abs_diff": max_abs_diff,
        "warmup_rounds": args.warmup,
        "rounds": args.rounds,
        "median_s": {"compiled": med_c, "timm": med_r},
        "p10_s": {"compiled": quantile(t_c, 0.1), "timm": quantile(t_r, 0.1)},
        "p90_s": {"compiled": quantile(t_c, 0.9), "timm": quantile(t_r, 0.9)},
        "min_s": {"compiled": min(t_c), "timm": min(t_r)},
        "ratio": {"median": med_ratio, "p10": p10, "p90": p90,
                  "ratio_of_medians": med_c / med_r},
        "goal_median_ratio": GOAL,
        "goal_met": ok,
        "bench_wall_s": time.perf_counter() - t_start,
        "times_s": {"compiled": t_c, "timm": t_r},
    }
    if not args.no_write:
        print()
        write_report(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
