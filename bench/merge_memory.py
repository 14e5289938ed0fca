"""Peak memory of a weight-space merge streamed tensor by tensor vs loading every state dict.

N checkpoints (``--n``, default 4 and 8) of ``vit_base_patch16_224`` (86.6 M parameters,
~330 MiB as float32 safetensors) get random weights from different seeds and are saved
to a temporary folder, never the repository. Each N is merged two ways, by a spec with
one ``merge(...)`` source that reads the N files::

    source soup = merge("vit_base_patch16_224", method="ties", base="m0.safetensors",
                        models=["m1.safetensors", ..., "m{N-1}.safetensors"])
    source soup = merge("vit_base_patch16_224", method="linear",
                        models=["m0.safetensors", ..., "m{N-1}.safetensors"])

(TIES with the method's own defaults, density 1: sign election without trimming;
``--density 0.5`` adds the trim, about three times slower on a 2-core machine.)

Three paths compute the same merged tensors, each in a FRESH interpreter that first
imports torch, timm, safetensors and synthdsl, collects garbage and records its
baseline (the measuring helpers are :mod:`assembly_memory`'s: VmHWM reset with
``/proc/self/clear_refs``, baseline RSS subtracted, a 2 ms sampler of RssAnon/RssFile):

* ``merge``: ``synthdsl.cli.app.run(["merge", spec, "-o", out])``, the weights streamed
  to a safetensors file, one tensor of each input at a time; nothing is kept;
* ``compile``: ``synthdsl.compile_spec(spec)``, the merged model in memory, every kept
  value read once (a float64 checksum) inside the measured window;
* ``naive``: ``[safetensors.torch.load_file(p) for p in files]``, then
  ``synthdsl.library.merging.merge_tensor`` per key over the loaded dicts (the same
  computation), the merged state dict kept and read once.

The result's bytes are those of the merged state dict (unique storages); the three
paths are checked to give the same tensor names, the same float64 sum and the same
sha256 of every tensor's bytes (the ``merge`` path's file is read back for that after
its window closes). ``load_file`` maps the files, so the naive path's inputs are resident
as file pages (RssFile, which the page cache can give back) and its merged tensors as
anonymous memory; the other two paths read each tensor into memory of its own and map
nothing. Each path runs ``--runs`` times (default 3) per case, the order
rotating from run to run; medians are reported, with peak / result bytes.

Run from the repository root::

    .venv/bin/python bench/merge_memory.py              # table + bench/results/merge_memory.json
    .venv/bin/python bench/merge_memory.py --runs 1 --n 4
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from _record import environment, load_average, write_report  # noqa: E402
from assembly_memory import (_fingerprint, _mapped_bytes, _maxrss, _reset_peak,  # noqa: E402
                             _Sampler, _status, make_checkpoint)

RESULTS = ROOT / "bench" / "results" / "merge_memory.json"
PATHS = ("merge", "compile", "naive")
METHODS = ("ties", "linear")
MiB = 1 << 20


# ---- inside a measuring interpreter --------------------------------------------------


def _digest(state) -> str:
    """sha256 over every tensor's name and bytes, in name order: equal only when equal."""
    import hashlib

    import torch

    h = hashlib.sha256()
    for k in sorted(state):
        t = state[k].detach().contiguous()
        h.update(k.encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().data)
    return h.hexdigest()


def measure(path: str, case: dict) -> dict:
    import gc

    import safetensors.torch  # noqa: F401
    import timm  # noqa: F401
    import torch  # noqa: F401

    import synthdsl
    import synthdsl.cli.app
    import synthdsl.library.merge_source  # noqa: F401
    import synthdsl.library.merging
    import synthdsl.pipeline  # noqa: F401 - `import synthdsl` is lazy: what compile_spec runs

    spec, out = case["spec"], case["out"]
    gc.collect()
    exact = _reset_peak()
    base = _status()
    ru_before = _maxrss()
    t0 = time.perf_counter()
    state = None
    with _Sampler() as sampler:
        if path == "merge":
            rc = synthdsl.cli.app.run(["merge", spec, "-o", out])
            if rc != 0:
                raise SystemExit(f"synth merge exited {rc}")
        elif path == "compile":
            module = synthdsl.compile_spec(Path(spec))
            full = module.state_dict()
            prefix = next(iter(full)).split(".")[0] + "."
            state = {k[len(prefix):]: v for k, v in full.items()}
            del full
        else:
            from safetensors.torch import load_file

            merge_tensor = synthdsl.library.merging.merge_tensor
            loaded = [load_file(p) for p in case["files"]]
            base_sd, models = (loaded[0], loaded[1:]) if case["base"] else (None, loaded)
            state = {k: merge_tensor(case["method"], k,
                                     None if base_sd is None else base_sd[k],
                                     [m[k] for m in models], case["options"])
                     for k in loaded[0]}
            del loaded, base_sd, models
            gc.collect()
        # read every kept value once (the merge path keeps nothing: its result is the file)
        nbytes, checksum = _fingerprint(state) if state is not None else (0, 0.0)
    seconds = time.perf_counter() - t0
    after = _status()
    peak = after["VmHWM"] - base["VmRSS"] if exact else max(_maxrss(), after["VmHWM"]) \
        - base["VmRSS"]
    mapped = sum(_mapped_bytes(p) for p in case["files"])
    record = {
        "path": path,
        "seconds": seconds,
        "baseline_rss": base["VmRSS"],
        "peak_above_baseline": peak,
        "peak_exact": exact,
        "ru_maxrss_above_baseline": max(_maxrss() - base["VmRSS"], 0),
        "ru_maxrss_grew": _maxrss() > ru_before,
        "rss_after_above_baseline": after["VmRSS"] - base["VmRSS"],
        "sampled_peak_anon_above_baseline": max(sampler.anon - base["RssAnon"], 0),
        "sampled_peak_file_above_baseline": max(sampler.file - base["RssFile"], 0),
        "inputs_mapped_after_bytes": mapped,
    }
    # the merge path's result is the file: read it back, after the window, to compare
    if state is None:
        state = safetensors.torch.load_file(out)
        nbytes, checksum = _fingerprint(state)
    record.update({"result_bytes": nbytes, "result_tensors": len(state),
                   "names": sorted(state), "checksum": checksum, "sha256": _digest(state)})
    return record


# ---- the driver ------------------------------------------------------------------------


def make_checkpoints(arch: str, folder: Path, seeds: range) -> list[Path]:
    """One random checkpoint per seed, ``m0.safetensors``, ``m1.safetensors``, ..."""
    files = []
    for i, seed in enumerate(seeds):
        sub = folder / f"make{i}"
        sub.mkdir()
        made = make_checkpoint(arch, sub, seed, "safetensors")
        files.append(made.rename(folder / f"m{i}.safetensors"))
        sub.rmdir()
    return files


def spec_text(arch: str, n: int, method: str, options: dict, input_size: str) -> str:
    names = [f'"m{i}.safetensors"' for i in range(n)]
    extra = "".join(f", {k}={json.dumps(v)}" for k, v in options.items())
    if method == "linear":
        files = f"models=[{', '.join(names)}]"
    else:
        files = f"base={names[0]}, models=[{', '.join(names[1:])}]"
    return (f"synth Merged\ninput image: [B, {input_size}]\n"
            f'source soup = merge("{arch}", method="{method}", {files}{extra})\n'
            "y = soup(image)\noutput y\n")


def run_path(path: str, case: dict) -> dict:
    Path(case["out"]).unlink(missing_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--measure", path,
           "--case", json.dumps(case)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=3600)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("MEASURE ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"{path} run failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}\n"
                         f"{proc.stderr[-4000:]}")
    Path(case["out"]).unlink(missing_ok=True)
    return json.loads(lines[-1][len("MEASURE "):])


def summarise(runs: dict[str, list[dict]], result_bytes: int) -> dict:
    def med(path: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[path])

    return {path: {
        "peak_above_baseline_bytes": med(path, "peak_above_baseline"),
        "peak_min_bytes": min(r["peak_above_baseline"] for r in runs[path]),
        "peak_max_bytes": max(r["peak_above_baseline"] for r in runs[path]),
        "ratio_to_result": med(path, "peak_above_baseline") / result_bytes,
        "ru_maxrss_above_baseline_bytes": med(path, "ru_maxrss_above_baseline"),
        "rss_after_above_baseline_bytes": med(path, "rss_after_above_baseline"),
        "sampled_peak_anon_bytes": med(path, "sampled_peak_anon_above_baseline"),
        "sampled_peak_file_bytes": med(path, "sampled_peak_file_above_baseline"),
        "seconds": med(path, "seconds"),
        "inputs_mapped_after_bytes": med(path, "inputs_mapped_after_bytes"),
    } for path in runs}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="vit_base_patch16_224")
    ap.add_argument("--input", default="3, 224, 224", help="input size without the batch")
    ap.add_argument("--n", type=int, action="append",
                    help="checkpoints merged (repeatable; default 4 and 8)")
    ap.add_argument("--methods", default=",".join(METHODS),
                    help="comma-separated, of ties and linear (default %(default)s)")
    ap.add_argument("--density", type=float, default=None,
                    help="TIES's density= (default: none given, the method's 1.0)")
    ap.add_argument("--runs", type=int, default=3, help="runs per path (default %(default)s)")
    ap.add_argument("--seed", type=int, default=0, help="seed of m0; m{i} gets seed + i")
    ap.add_argument("--out", type=Path, default=RESULTS, help="JSON file to write")
    ap.add_argument("--no-write", action="store_true", help="do not write the JSON file")
    ap.add_argument("--measure", choices=PATHS, help=argparse.SUPPRESS)
    ap.add_argument("--case", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.measure:
        print("MEASURE " + json.dumps(measure(args.measure, json.loads(args.case))))
        return 0

    sizes = sorted(set(args.n or (4, 8)))
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if any(m not in METHODS for m in methods) or any(n < 2 for n in sizes):
        ap.error(f"--methods takes {' and '.join(METHODS)}; --n is at least 2")
    load_at_start = load_average()
    cases = []
    with tempfile.TemporaryDirectory(prefix="synth-bench-merge-") as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        files = make_checkpoints(args.arch, folder, range(args.seed, args.seed + max(sizes)))
        ckpt_bytes = files[0].stat().st_size
        print(f"{len(files)} checkpoints: {args.arch}, random weights, seeds {args.seed}.."
              f"{args.seed + len(files) - 1}, {ckpt_bytes / MiB:.1f} MiB each "
              f"({time.perf_counter() - t0:.1f} s to make), in {folder}")
        for n in sizes:
            for method in methods:
                options = {"density": args.density} if method == "ties" and \
                    args.density is not None else {}
                text = spec_text(args.arch, n, method, options, args.input)
                spec = folder / f"merge_{method}_{n}.synth"
                spec.write_text(text)
                case = {"spec": str(spec), "out": str(folder / "merged.safetensors"),
                        "files": [str(f) for f in files[:n]], "method": method,
                        "base": method != "linear", "options": options}
                runs: dict[str, list[dict]] = {p: [] for p in PATHS}
                for i in range(args.runs):
                    order = PATHS[i % len(PATHS):] + PATHS[:i % len(PATHS)]
                    for path in order:
                        r = run_path(path, case)
                        runs[path].append(r)
                        print(f"  N={n} {method:6s} run {i + 1} {path:7s}: "
                              f"{r['peak_above_baseline'] / MiB:8.1f} MiB above baseline, "
                              f"{r['seconds']:.1f} s", flush=True)
                first = runs["merge"][0]
                every = [r for rs in runs.values() for r in rs]
                same = {
                    "names": all(r["names"] == first["names"] for r in every),
                    "sum": all(abs(r["checksum"] - first["checksum"])
                               <= 1e-9 * max(1.0, abs(first["checksum"])) for r in every),
                    "sha256": all(r["sha256"] == first["sha256"] for r in every),
                }
                cases.append({"n": n, "method": method, "options": options, "spec": text,
                              "inputs_bytes": sum(f.stat().st_size for f in files[:n]),
                              "result_bytes": first["result_bytes"],
                              "result_tensors": first["result_tensors"],
                              "same_result_in_all_paths": same,
                              "median": summarise(runs, first["result_bytes"]),
                              "runs": {p: [{k: v for k, v in r.items() if k != "names"}
                                           for r in rs] for p, rs in runs.items()}})
        shutil.rmtree(folder, ignore_errors=True)
    load_at_end = load_average()

    print()
    print(f"{args.arch}: {ckpt_bytes / MiB:.1f} MiB per checkpoint; medians of {args.runs} "
          "fresh interpreters per path; peak = VmHWM above the baseline RSS")
    head = (f"{'N':>2s} {'method':7s} {'path':8s} {'peak MiB':>9s} {'min':>8s} {'max':>8s} "
            f"{'result MiB':>10s} {'peak/result':>11s} {'anon MiB':>9s} {'file MiB':>9s} "
            f"{'seconds':>8s}")
    print(head)
    print("-" * len(head))
    for c in cases:
        for path, s in c["median"].items():
            print(f"{c['n']:2d} {c['method']:7s} {path:8s} "
                  f"{s['peak_above_baseline_bytes'] / MiB:9.1f} {s['peak_min_bytes'] / MiB:8.1f} "
                  f"{s['peak_max_bytes'] / MiB:8.1f} {c['result_bytes'] / MiB:10.1f} "
                  f"{s['ratio_to_result']:11.2f} {s['sampled_peak_anon_bytes'] / MiB:9.1f} "
                  f"{s['sampled_peak_file_bytes'] / MiB:9.1f} {s['seconds']:8.1f}")
    print("anon/file = largest RssAnon/RssFile sampled every 2 ms, above the baseline")
    for c in cases:
        same = c["same_result_in_all_paths"]
        print(f"N={c['n']} {c['method']}: same merged tensors in all three paths: "
              + ", ".join(f"{k} {v}" for k, v in same.items())
              + f" (inputs {c['inputs_bytes'] / MiB:.0f} MiB)")

    result = {
        "benchmark": "merge_memory",
        "description": "peak RSS above the interpreter's baseline while merging N checkpoints "
                       "of one architecture: synth merge (streamed to a file) and "
                       "synthdsl.compile_spec (the merged model in memory) vs loading every "
                       "state dict with safetensors.torch.load_file and merging them whole; "
                       "each run in a fresh interpreter",
        "command": ".venv/bin/python bench/merge_memory.py"
                   + ("" if argv is None else " " + " ".join(argv)),
        **environment(torch_threads=False),
        "load_average_at_start": load_at_start,
        "load_average_at_end": load_at_end,
        "arch": args.arch,
        "checkpoint_bytes": ckpt_bytes,
        "runs_per_path": args.runs,
        "cases": cases,
    }
    if not args.no_write:
        write_report(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] if len(sys.argv) > 1 else None))
