"""Training cost of a frozen trunk: full fine-tuning vs frozen-trunk training vs cached trunk.

One spec, a timm trunk under a new 10-class head, trained by `synthdsl.train.trainer` on
MNIST-5k images (offline) in three ways:

* **full**    — nothing frozen: forward and backward through the whole network;
* **frozen**  — ``freeze net``: the trunk is the frozen prefix and runs under
  ``torch.no_grad()``, only the head has a backward pass;
* **cached**  — ``freeze net`` and ``cache_frozen``: the first epoch computes the
  trunk's output for every sample, later epochs read it from memory.

Each variant trains for ``--epochs`` epochs (default 3) and the figures are taken
from the trainer's own log: the seconds of each epoch and the optimizer steps in
it. Reported per variant: the first epoch and the median of the later epochs (the
steady state), as seconds per epoch and milliseconds per step, and the speed-up of
the steady state over full fine-tuning. The variants run round-robin ``--repeats``
times (default 2) so each sees a similar spread of machine load, and the medians
over repeats are reported. The machine's load average is recorded before and after.

Run from the repository root::

    .venv/bin/python bench/train_step.py              # table + bench/results/train_step.json
    .venv/bin/python bench/train_step.py --arch test_resnet --images 512 --no-write
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import timm  # noqa: E402, F401 - imported here, before bench_wall_s starts
import torch  # noqa: E402

import synthdsl  # noqa: E402
from synthdsl.train.data import load_dataset  # noqa: E402
from synthdsl.train.options import Options  # noqa: E402
from synthdsl.train.recipe import Recipe  # noqa: E402
from synthdsl.train.run import train  # noqa: E402
from _record import environment, load_average, write_report  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "train_step.json"

SPEC = """synth Bench
input image: [B, 3, SIZE, SIZE]
source net = timm("ARCH", num_classes=0)
features = net(image)
logits   = Linear(features, out=10)
FREEZE
output logits
"""

VARIANTS = {"full": ("", False), "frozen": ("freeze net", False), "cached": ("freeze net", True)}


def run_variant(arch: str, size: int, variant: str, data, epochs: int, batch: int,
                seed: int) -> dict:
    freeze, cache = VARIANTS[variant]
    spec = SPEC.replace("ARCH", arch).replace("SIZE", str(size)).replace("FREEZE", freeze)
    model = synthdsl.compile_spec(spec, seed=seed)
    t0 = time.perf_counter()
    result = train(model, data, recipe=Recipe(epochs=epochs, lr=1e-3, batch_size=batch,
                                              seed=seed),
                   options=Options(quiet=True, cache_frozen=cache, progress=False))
    wall = time.perf_counter() - t0
    steps = -(-len(data) // batch)
    seconds = [h["seconds"] for h in result.history]
    totals = model.parameter_totals()
    return {"epoch_seconds": seconds, "steps_per_epoch": steps, "wall_s": wall,
            "trainable": totals["trainable"], "params": totals["params"],
            "final_loss": result.history[-1]["loss"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="resnet18", help="timm trunk (default %(default)s)")
    ap.add_argument("--size", type=int, default=32, help="input size (default %(default)s)")
    ap.add_argument("--images", type=int, default=1024, help="training images (default "
                    "%(default)s)")
    ap.add_argument("--batch", type=int, default=64, help="batch size (default %(default)s)")
    ap.add_argument("--epochs", type=int, default=3, help="epochs per run (default %(default)s)")
    ap.add_argument("--repeats", type=int, default=2, help="round-robin repeats (default "
                    "%(default)s)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch.set_num_threads, fixed (default %(default)s)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS, help="JSON file to write")
    ap.add_argument("--no-write", action="store_true", help="do not write the JSON file")
    args = ap.parse_args(argv)
    if args.epochs < 2:
        ap.error("--epochs must be at least 2 (the steady state is epochs 2..N)")

    torch.set_num_threads(args.threads)
    load_start = load_average()
    t_start = time.perf_counter()
    full = load_dataset("mnist5k", "train")
    data = full.subset(torch.arange(min(args.images, len(full))))
    runs: dict[str, list[dict]] = {v: [] for v in VARIANTS}
    for r in range(args.repeats):
        for v in VARIANTS:
            runs[v].append(run_variant(args.arch, args.size, v, data, args.epochs, args.batch,
                                       args.seed))
            print(f"repeat {r + 1}/{args.repeats} {v:7s} epochs "
                  + ", ".join(f"{s:.2f}s" for s in runs[v][-1]["epoch_seconds"]), flush=True)

    summary = {}
    for v, rs in runs.items():
        steps = rs[0]["steps_per_epoch"]
        first = statistics.median(r["epoch_seconds"][0] for r in rs)
        steady = statistics.median(s for r in rs for s in r["epoch_seconds"][1:])
        summary[v] = {"first_epoch_s": first, "steady_epoch_s": steady,
                      "first_step_ms": 1000 * first / steps,
                      "steady_step_ms": 1000 * steady / steps,
                      "trainable": rs[0]["trainable"], "params": rs[0]["params"]}
    base = summary["full"]["steady_epoch_s"]
    for v in summary:
        summary[v]["speedup_vs_full"] = base / summary[v]["steady_epoch_s"]

    print()
    print(f"{args.arch} at {args.size}x{args.size}, {len(data)} images, batch {args.batch}, "
          f"{args.threads} thread(s)")
    print(f"{'variant':8s} {'trainable':>11s} {'epoch 1':>9s} {'later':>9s} {'ms/step':>9s} "
          f"{'speed-up':>9s}")
    for v, s in summary.items():
        print(f"{v:8s} {s['trainable']:11,d} {s['first_epoch_s']:8.2f}s "
              f"{s['steady_epoch_s']:8.2f}s {s['steady_step_ms']:9.1f} "
              f"{s['speedup_vs_full']:8.1f}x")

    record = {
        "benchmark": "train_step",
        "description": __doc__.splitlines()[0],
        **environment(),
        "load_average_at_start": load_start,
        "load_average_at_end": load_average(),
        "arch": args.arch, "input_size": args.size, "images": len(data),
        "batch": args.batch, "epochs": args.epochs, "repeats": args.repeats,
        "summary": summary, "runs": runs,
        "bench_wall_s": time.perf_counter() - t_start,
    }
    if not args.no_write:
        print()
        write_report(record, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
