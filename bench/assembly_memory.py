"""Peak memory of assembling a model that keeps a quarter of a large checkpoint.

A ViT-Base (``vit_base_patch16_224``, 86.6 M parameters, ~346 MB as float32
safetensors) gets random weights and is saved to a temporary folder, never the
repository. A spec keeps about a quarter of it::

    source vit = timm("vit_base_patch16_224", weights="vit_base_patch16_224.safetensors")
    x = vit(image, at="blocks.2")      # patch_embed, cls_token, pos_embed, blocks 0..2

Two paths build the same part, each in a FRESH interpreter that first imports
torch, timm, safetensors and synthdsl, collects garbage, and records its
baseline, then runs the path once:

* ``synthdsl``: ``synthdsl.compile_spec(spec)`` (check + compile, as a user runs it);
* ``naive``: ``m = timm.create_model(arch); m.load_state_dict(safetensors.torch.load_file(
  path)); part = <the same modules>`` and the rest of ``m`` dropped.

Peak memory is the kernel's high-water mark of the resident set, ``VmHWM`` in
``/proc/self/status``, reset to the current RSS just before the path runs
(``echo 5 > /proc/self/clear_refs``), minus ``VmRSS`` at that moment: the peak
above the interpreter's baseline, exactly. ``ru_maxrss`` (which includes the
import peak and cannot be reset) is reported beside it. Resident memory counts
both anonymous pages (tensors) and file pages mapped from the checkpoint; a
sampler thread (every 2 ms) records the largest ``RssAnon`` and ``RssFile`` seen,
to show which kind the peak is made of.

Inside the measured window each path also reads every value it keeps once (a
float64 checksum): a part is kept to be used, and a tensor that is still a view
of a file mapping costs no resident memory until it is read, which would flatter
a loader that does not copy. How much of the checkpoint is still mapped into
the process afterwards is reported too.

Kept bytes are the bytes of the compiled module's ``state_dict()`` (unique
storages). Both paths' parts are checked to hold the same tensors (names, and
the checksum of the values). Each path runs ``--runs`` times (default 3),
alternating which goes first; medians are reported, with the ratios
peak / kept bytes. The goal: synthdsl's peak within 1.5× the bytes it keeps.

Run from the repository root::

    .venv/bin/python bench/assembly_memory.py          # table + bench/results/assembly_memory.json
    .venv/bin/python bench/assembly_memory.py --runs 5 --cut 'stage=2'
"""

from __future__ import annotations

import argparse
import json
import os
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

RESULTS = ROOT / "bench" / "results" / "assembly_memory.json"
GOAL = 1.5
MiB = 1 << 20


# ---- inside a measuring interpreter --------------------------------------------------


def _status() -> dict[str, int]:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile", "RssShmem", "VmPeak"):
                out[key] = int(value.split()[0]) * 1024
    return out


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _maxrss() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


class _Sampler:
    """Largest RssAnon and RssFile seen, polled from a thread."""

    def __init__(self, period: float = 0.002) -> None:
        import threading

        self.period = period
        self.anon = self.file = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            s = _status()
            self.anon = max(self.anon, s["RssAnon"])
            self.file = max(self.file, s["RssFile"])
            self._stop.wait(self.period)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def _mapped_bytes(path: str) -> int:
    """Bytes of `path` still mapped into this process (tensors backed by the file)."""
    total = 0
    real = os.path.realpath(path)
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split(None, 5)
            if len(parts) == 6 and parts[5].strip() == real:
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                total += hi - lo
    return total


def _naive_part(model, keep: list[str]):
    """The same modules synthdsl keeps, taken out of a whole, loaded model."""
    import torch
    from torch import nn

    tops = sorted({k.split(".")[0] for k in keep})
    part = nn.Module()
    for top in tops:
        child = getattr(model, top)
        if isinstance(child, nn.Sequential) and any(k.startswith(top + ".") for k in keep):
            idx = sorted({int(k.split(".")[1]) for k in keep if k.startswith(top + ".")})
            child = child[idx[0]:idx[-1] + 1]
        if isinstance(child, nn.Parameter | torch.Tensor):
            part.register_parameter(top, child) if isinstance(child, nn.Parameter) \
                else part.register_buffer(top, child)
        else:
            part.add_module(top, child)
    return part


def _fingerprint(state) -> tuple[int, float]:
    import torch

    seen, total, nbytes = set(), 0.0, 0
    for k in sorted(state):
        t = state[k]
        total += float(t.detach().to(torch.float64).sum())
        key = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        if key not in seen:
            seen.add(key)
            nbytes += t.untyped_storage().nbytes()
    return nbytes, total


def measure(path: str, arch: str, ckpt: str, spec: str, keep_file: str | None) -> dict:
    import gc

    import safetensors.torch  # noqa: F401
    import timm
    import torch

    import synthdsl
    import synthdsl.pipeline  # noqa: F401 - `import synthdsl` is lazy: what compile_spec runs

    gc.collect()
    exact = _reset_peak()
    base = _status()
    ru_before = _maxrss()
    t0 = time.perf_counter()
    with _Sampler() as sampler:
        if path == "synthdsl":
            module = synthdsl.compile_spec(Path(spec))
            state = module.state_dict()
            prefix = state and next(iter(state)).split(".")[0] + "."
            names = [k[len(prefix):] for k in state]
        else:
            from safetensors.torch import load_file

            keep = json.loads(Path(keep_file).read_text())
            model = timm.create_model(arch)
            if ckpt.endswith(".safetensors"):
                model.load_state_dict(load_file(ckpt))
            else:
                model.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=True))
            part = _naive_part(model, keep)
            del model
            gc.collect()
            state = part.state_dict()
            names = list(state)
        # read every kept value once: a part is kept to be used, so its data must be resident
        # (a tensor still backed by a mapping of the file costs nothing until it is read)
        nbytes, checksum = _fingerprint(state)
    seconds = time.perf_counter() - t0
    after = _status()
    mapped = _mapped_bytes(ckpt)
    peak = after["VmHWM"] - base["VmRSS"] if exact else max(_maxrss(), after["VmHWM"]) \
        - base["VmRSS"]
    return {
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
        "checkpoint_mapped_after_bytes": mapped,
        "kept_bytes": nbytes,
        "kept_tensors": len(names),
        "names": sorted(names),
        "checksum": checksum,
    }


# ---- the driver ------------------------------------------------------------------------


def make_checkpoint(arch: str, folder: Path, seed: int, fmt: str) -> Path:
    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    model = timm.create_model(arch)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    path = folder / f"{arch}.{fmt}"
    if fmt == "safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)
    return path


def run_path(path: str, args, ckpt: Path, spec: Path, keep_file: Path | None) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--measure", path, "--arch", args.arch,
           "--ckpt", str(ckpt), "--spec", str(spec)]
    if keep_file is not None:
        cmd += ["--keep-file", str(keep_file)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=1200)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("MEASURE ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"{path} run failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1][len("MEASURE "):])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="vit_base_patch16_224")
    ap.add_argument("--cut", default='at="blocks.2"',
                    help="how the spec calls the source, after the input (default %(default)s)")
    ap.add_argument("--input", default="3, 224, 224", help="input size without the batch")
    ap.add_argument("--runs", type=int, default=3, help="runs per path (default %(default)s)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--format", choices=("safetensors", "pt"), default="safetensors",
                    help="checkpoint format (default %(default)s); the naive path reads a .pt "
                    "with torch.load(weights_only=True)")
    ap.add_argument("--out", type=Path, default=RESULTS, help="JSON file to write")
    ap.add_argument("--no-write", action="store_true", help="do not write the JSON file")
    ap.add_argument("--measure", choices=("synthdsl", "naive"), help=argparse.SUPPRESS)
    ap.add_argument("--ckpt", help=argparse.SUPPRESS)
    ap.add_argument("--spec", help=argparse.SUPPRESS)
    ap.add_argument("--keep-file", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.measure:
        print("MEASURE " + json.dumps(measure(args.measure, args.arch, args.ckpt, args.spec,
                                              args.keep_file)))
        return 0

    load_at_start = load_average()
    with tempfile.TemporaryDirectory(prefix="synth-bench-") as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        ckpt = make_checkpoint(args.arch, folder, args.seed, args.format)
        ckpt_bytes = ckpt.stat().st_size
        print(f"checkpoint: {args.arch}, random weights, {ckpt_bytes / MiB:.1f} MiB "
              f"({time.perf_counter() - t0:.1f} s to make), in {folder}")
        spec_text = (f"synth Quarter\ninput image: [B, {args.input}]\n"
                     f'source vit = timm("{args.arch}", weights="{ckpt.name}")\n'
                     f"x = vit(image, {args.cut})\noutput x\n")
        spec = folder / "quarter.synth"
        spec.write_text(spec_text)
        keep_file = folder / "keep.json"
        runs: dict[str, list[dict]] = {"synthdsl": [], "naive": []}
        for i in range(args.runs):
            # alternate which goes first; run 1 starts with synthdsl, whose kept tensor names
            # tell the naive path what to take
            for path in (("synthdsl", "naive") if i % 2 == 0 else ("naive", "synthdsl")):
                r = run_path(path, args, ckpt, spec, keep_file if path == "naive" else None)
                runs[path].append(r)
                if path == "synthdsl" and not keep_file.exists():
                    keep_file.write_text(json.dumps(r["names"]))
                print(f"  run {i + 1} {path:8s}: {r['peak_above_baseline'] / MiB:7.1f} MiB "
                      f"above baseline, {r['seconds']:.1f} s")
    load_at_end = load_average()

    first = runs["synthdsl"][0]
    kept = first["kept_bytes"]
    same_names = all(r["names"] == first["names"] for rs in runs.values() for r in rs)
    same_values = all(abs(r["checksum"] - first["checksum"]) <= 1e-9 * max(1, abs(
        first["checksum"])) for rs in runs.values() for r in rs)

    def med(path: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[path])

    summary = {}
    for path in runs:
        summary[path] = {
            "peak_above_baseline_bytes": med(path, "peak_above_baseline"),
            "peak_min_bytes": min(r["peak_above_baseline"] for r in runs[path]),
            "peak_max_bytes": max(r["peak_above_baseline"] for r in runs[path]),
            "ratio_to_kept": med(path, "peak_above_baseline") / kept,
            "ru_maxrss_above_baseline_bytes": med(path, "ru_maxrss_above_baseline"),
            "rss_after_above_baseline_bytes": med(path, "rss_after_above_baseline"),
            "sampled_peak_anon_bytes": med(path, "sampled_peak_anon_above_baseline"),
            "sampled_peak_file_bytes": med(path, "sampled_peak_file_above_baseline"),
            "seconds": med(path, "seconds"),
            "checkpoint_mapped_after_bytes": med(path, "checkpoint_mapped_after_bytes"),
        }
    ok = summary["synthdsl"]["ratio_to_kept"] <= GOAL

    print()
    print(f"{args.arch}: checkpoint {ckpt_bytes / MiB:.1f} MiB; the spec keeps "
          f"{kept / MiB:.1f} MiB ({kept / ckpt_bytes:.1%}, {first['kept_tensors']} tensors) "
          f"with `x = vit(image, {args.cut})`")
    head = (f"{'path':10s} {'peak MiB':>9s} {'min':>7s} {'max':>7s} {'peak/kept':>9s} "
            f"{'anon MiB':>9s} {'file MiB':>9s} {'after MiB':>9s} {'seconds':>8s}")
    print(head)
    print("-" * len(head))
    for path, s in summary.items():
        print(f"{path:10s} {s['peak_above_baseline_bytes'] / MiB:9.1f} "
              f"{s['peak_min_bytes'] / MiB:7.1f} {s['peak_max_bytes'] / MiB:7.1f} "
              f"{s['ratio_to_kept']:9.2f} {s['sampled_peak_anon_bytes'] / MiB:9.1f} "
              f"{s['sampled_peak_file_bytes'] / MiB:9.1f} "
              f"{s['rss_after_above_baseline_bytes'] / MiB:9.1f} {s['seconds']:8.1f}")
    print(f"medians of {args.runs} fresh interpreters per path; peak = VmHWM above the "
          f"baseline RSS ({'reset with clear_refs' if first['peak_exact'] else 'ru_maxrss'}); "
          "anon/file = largest RssAnon/RssFile sampled every 2 ms")
    print(f"same tensors in both paths: names {same_names}, values {same_values}")
    for path, s in summary.items():
        if s["checkpoint_mapped_after_bytes"]:
            print(f"note: after {path}, {s['checkpoint_mapped_after_bytes'] / MiB:.1f} MiB of the "
                  "checkpoint file are still mapped into the process (its tensors are views of "
                  "the file, not copies)")
    print(f"goal: synthdsl peak <= {GOAL}x kept bytes: "
          f"{'met' if ok else 'NOT met'} ({summary['synthdsl']['ratio_to_kept']:.2f}x; "
          f"naive {summary['naive']['ratio_to_kept']:.2f}x)")

    result = {
        "benchmark": "assembly_memory",
        "description": "peak RSS above the interpreter's baseline while assembling a part that "
                       "keeps about a quarter of a large checkpoint: synthdsl.compile_spec vs "
                       "timm.create_model + load_state_dict(load_file) + taking the part; "
                       "each run in a fresh interpreter",
        "command": ".venv/bin/python bench/assembly_memory.py"
                   + ("" if argv is None else " " + " ".join(argv)),
        **environment(torch_threads=False),
        "load_average_at_start": load_at_start,
        "load_average_at_end": load_at_end,
        "arch": args.arch,
        "format": args.format,
        "spec": spec_text,
        "checkpoint_bytes": ckpt_bytes,
        "kept_bytes": kept,
        "kept_fraction": kept / ckpt_bytes,
        "kept_tensors": first["kept_tensors"],
        "same_tensors_in_both_paths": same_names and same_values,
        "runs_per_path": args.runs,
        "goal_ratio": GOAL,
        "goal_met": ok,
        "median": summary,
        "runs": {p: [{k: v for k, v in r.items() if k != "names"} for r in rs]
                 for p, rs in runs.items()},
    }
    if not args.no_write:
        write_report(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
