"""Coverage of timm: does every architecture work in a spec, whole and cut at every stage?

For each architecture of ``timm.list_models()`` this builds two specs, on the
``meta`` device (no weights are read, nothing is allocated):

* **whole**:  ``y = net(image)``
* **stages**: ``s0, ..., sN = net(image, stages=[0, ..., N])`` over every
  ``feature_info`` index of the model

and for each one runs ``synthdsl.check_spec``, ``synthdsl.compile_graph(graph,
device="meta")``, and the compiled module on meta inputs of the declared shape
(batch 2). A spec passes when all three succeed and the outputs have the shapes
the check predicted. Input sizes are the model's own
(``timm.data.resolve_data_config({}, model=model)["input_size"]``).

As a baseline it records what timm itself can do with the same architecture on
meta: build it, run it eagerly, trace it with its own fx rules
(``timm.models._features_fx.get_graph_node_names``, i.e. timm's leaf modules and
autowrapped functions), cut it at every stage with ``FeatureGraphNet``, and build
and run ``features_only=True`` (whose output shapes the stage outputs are compared
with). The project's goal is stated against that baseline: every architecture
that timm can build and trace with its own fx rules works whole and at every
stage.

Each architecture runs in one of ``--workers`` worker processes (spawned; a worker
is replaced after ``--max-tasks`` architectures, and killed and replaced when an
architecture takes longer than ``--timeout`` seconds). Run from the repository
root::

    .venv/bin/python bench/timm_coverage.py                    # all 1,371 (~30-60 min)
    .venv/bin/python bench/timm_coverage.py --limit 20
    .venv/bin/python bench/timm_coverage.py --filter 'resnet*' --no-write

It prints a summary table and writes ``bench/results/timm_coverage.json``
(counts, failures per family with their first errors, per-architecture records,
timings, versions, date) and ``bench/results/timm_coverage_failures.txt``.
"""

from __future__ import annotations

import argparse
import collections
import datetime as _dt
import fnmatch
import json
import multiprocessing as mp
import os
import platform
import random
import re
import sys
import time
import traceback
from multiprocessing.connection import wait
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "timm_coverage.json"
FAILURES = ROOT / "bench" / "results" / "timm_coverage_failures.txt"
BATCH = 2
#: Name prefixes that say little about the architecture: the family takes the next word too.
_QUALIFIERS = {"tf", "legacy", "test", "gluon"}


def family(arch: str) -> str:
    """The family of an architecture: its name up to the first digit or underscore
    (``resnet50d`` → ``resnet``, ``vit_tiny_patch16_224`` → ``vit``), keeping a version
    (``mobilenetv3``, ``swinv2``) and a qualifier such as ``tf_`` or ``test_`` with the
    word after it (``tf_efficientnet``)."""
    words = arch.split("_")
    head = words[0]
    if head in _QUALIFIERS and len(words) > 1:
        head = f"{head}_{words[1]}"
    m = re.match(r"(?:[a-z]+_)?[a-z]+?(?:v\d+)?(?=\d|_|$)", head)  # keep a version: mobilenetv3, swinv2
    return m.group(0) if m else head


# -- the worker side -------------------------------------------------------------------------


def _short(text: str, n: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 3] + "..."


def _error(e: BaseException) -> dict:
    """A failure as data: a SynthError's code, message and notes, or an exception's type,
    message and where it was raised (innermost frame, and innermost frame in synthdsl)."""
    from synthdsl import SynthError

    if isinstance(e, SynthError):
        return {"kind": "SynthError", "code": e.code, "message": _short(e.message),
                "notes": [_short(n) for n in e.notes[:2]]}
    frames = traceback.extract_tb(e.__traceback__)
    ours = [f for f in frames if f"{os.sep}synthdsl{os.sep}" in f.filename]
    where = (lambda f: f"{Path(f.filename).name}:{f.lineno} in {f.name}") if frames else None
    return {"kind": type(e).__name__, "message": _short(str(e)),
            "at": where(frames[-1]) if frames else None,
            "synthdsl_at": where(ours[-1]) if ours else None}


def _first_error(record: dict) -> dict | None:
    return record.get("error")


def _shape(t) -> list:
    return list(t.shape)


def _meta_input(size) -> "torch.Tensor":
    import torch

    return torch.empty((BATCH, *size), device="meta")


#: Also cut every model with timm's FeatureGraphNet (another two traces; --feature-graph).
FEATURE_GRAPH = False


def _trace_eval(model) -> None:
    """Trace `model` in eval mode with timm's own fx rules: its leaf (not traced) modules and
    autowrapped functions, through torchvision's tracer, as timm's get_graph_node_names and
    FeatureGraphNet do (they also trace in train mode; the eval graph is the one that runs)."""
    from timm.layers import get_notrace_functions, get_notrace_modules
    from torchvision.models.feature_extraction import NodePathTracer

    tracer = NodePathTracer(leaf_modules=get_notrace_modules(),
                            autowrap_functions=get_notrace_functions())
    tracer.trace(model.eval())


def _timm_baseline(arch: str, rec: dict) -> None:
    """What timm can do with `arch` on meta, each step on a fresh instance."""
    import timm
    import torch
    from timm.models._features_fx import FeatureGraphNet

    def build(**kw):
        with torch.device("meta"):
            return timm.create_model(arch, **kw).eval()

    base = rec["timm"]
    t = time.perf_counter()
    try:
        model = build()
    except Exception as e:  # noqa: BLE001
        base["build"] = _error(e)
        return
    base["build"] = True
    rec["times"]["timm_build"] = time.perf_counter() - t
    cfg = timm.data.resolve_data_config({}, model=model)
    rec["input_size"] = list(cfg["input_size"])
    info = getattr(model, "feature_info", None)
    rec["n_stages"] = len(info) if info else 0
    rec["has_forward_intermediates"] = hasattr(model, "forward_intermediates") and hasattr(
        model, "prune_intermediate_layers")
    rec["params"] = sum(p.numel() for p in model.parameters())
    x = _meta_input(rec["input_size"])
    t = time.perf_counter()
    try:
        with torch.no_grad():
            out = model(x)
        base["forward"] = True
        base["out_shape"] = _shape(out) if isinstance(out, torch.Tensor) else type(out).__name__
    except Exception as e:  # noqa: BLE001
        base["forward"] = _error(e)
    rec["times"]["timm_forward"] = time.perf_counter() - t
    t = time.perf_counter()
    try:
        _trace_eval(build())
        base["trace"] = True
    except Exception as e:  # noqa: BLE001
        base["trace"] = _error(e)
    rec["times"]["timm_trace"] = time.perf_counter() - t
    if not rec["n_stages"]:
        return
    stages = tuple(range(rec["n_stages"]))
    if FEATURE_GRAPH:
        t = time.perf_counter()
        try:
            net = FeatureGraphNet(build(), out_indices=stages)
            with torch.no_grad():
                net(x)
            base["feature_graph"] = True
        except Exception as e:  # noqa: BLE001
            base["feature_graph"] = _error(e)
        rec["times"]["timm_feature_graph"] = time.perf_counter() - t
    t = time.perf_counter()
    try:
        feats = build(features_only=True, out_indices=stages)
        with torch.no_grad():
            outs = feats(x)
        base["features_only"] = True
        base["feature_shapes"] = [_shape(o) for o in outs]
    except Exception as e:  # noqa: BLE001
        base["features_only"] = _error(e)
    rec["times"]["timm_features_only"] = time.perf_counter() - t


def spec_text(arch: str, size, stages: int | None = None) -> str:
    """The spec that uses `arch` whole (stages=None) or cut at its stages 0..stages-1."""
    dims = ", ".join(str(d) for d in size)
    head = (f"synth Coverage\ninput image: [B, {dims}]\n"
            f'source net = timm("{arch}")\n')
    if stages is None:
        return head + "y = net(image)\noutput y\n"
    names = ", ".join(f"s{i}" for i in range(stages))
    return (head + f"{names} = net(image, stages=[{', '.join(map(str, range(stages)))}])\n"
            f"output {names}\n")


def _run_spec(text: str, rec: dict, key: str) -> list | None:
    """check → compile on meta → run on meta; the output shapes, or None (error recorded)."""
    import torch

    import synthdsl

    res = rec[key]
    step = "check"
    t0 = time.perf_counter()
    try:
        graph = synthdsl.check_spec(text)
        rec["times"][f"{key}_check"] = time.perf_counter() - t0
        step, t = "compile", time.perf_counter()
        model = synthdsl.compile_graph(graph, device="meta")
        rec["times"][f"{key}_compile"] = time.perf_counter() - t
        step, t = "run", time.perf_counter()
        inputs = [torch.empty([BATCH if isinstance(d, str) else d
                               for d in graph.nodes[n]["dims"]], device="meta")
                  for n in model.input_names]
        with torch.no_grad():
            out = model(*inputs)
        rec["times"][f"{key}_run"] = time.perf_counter() - t
        step = "shape"
        outs = list(out.values()) if isinstance(out, dict) else [out]
        shapes = [_shape(o) for o in outs]
        predicted = [[BATCH if isinstance(d, str) else d
                      for d in graph.nodes[f"output:{o}"]["shape"]] for o in model.output_names]
        if shapes != predicted:
            raise AssertionError(f"compiled module gives {shapes}, the check predicted "
                                 f"{predicted}")
    except Exception as e:  # noqa: BLE001
        res["ok"] = False
        res["step"] = step
        res["error"] = _error(e)
        return None
    res["ok"] = True
    res["shapes"] = shapes
    return shapes


def probe(arch: str) -> dict:
    """Everything the bench learns about one architecture."""
    rec = {"arch": arch, "family": family(arch), "timm": {}, "whole": {}, "stages": {},
           "times": {}}
    t = time.perf_counter()
    _timm_baseline(arch, rec)
    if rec["timm"].get("build") is True:
        shapes = _run_spec(spec_text(arch, rec["input_size"]), rec, "whole")
        want = rec["timm"].get("out_shape")
        if shapes is not None and isinstance(want, list) and shapes != [want]:
            rec["whole"].update(ok=False, step="vs_timm", error={
                "kind": "ShapeMismatch", "message": f"spec gives {shapes[0]}, timm {want}"})
        if rec["n_stages"]:
            shapes = _run_spec(spec_text(arch, rec["input_size"], rec["n_stages"]), rec, "stages")
            want = rec["timm"].get("feature_shapes")
            if shapes is not None and want is not None:
                nchw = [[w[0], w[3], w[1], w[2]] if len(w) == 4 else w for w in want]
                # True; "NHWC" where timm's features_only gives channels-last (swin, ...)
                # and the spec channels-first; False for any other difference
                rec["stages"]["agrees_with_features_only"] = (
                    True if shapes == want else "NHWC" if shapes == nchw else False)
        else:
            rec["stages"] = {"ok": False, "step": "none", "error": {
                "kind": "NoFeatureInfo", "message": "timm gives the model no feature_info"}}
    else:
        for key in ("whole", "stages"):
            rec[key] = {"ok": False, "step": "timm_build", "error": rec["timm"]["build"]}
    rec["times"]["total"] = time.perf_counter() - t
    return rec


def worker(conn, log: str | None, feature_graph: bool) -> None:
    """A worker process: architectures in, records out, until it receives None."""
    import warnings

    global FEATURE_GRAPH
    FEATURE_GRAPH = feature_graph

    if log:  # what models and torch print (fx prints failing code) goes here, not the table
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)

    warnings.simplefilter("ignore")
    import logging

    logging.disable(logging.WARNING)
    import torch

    torch.set_num_threads(1)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import synthdsl  # noqa: F401  (import once, before the first task)
    import timm  # noqa: F401

    conn.send(("ready", None))
    while True:
        arch = conn.recv()
        if arch is None:
            break
        try:
            rec = probe(arch)
        except BaseException as e:  # noqa: BLE001 - the bench itself must go on
            rec = {"arch": arch, "family": family(arch), "timm": {}, "times": {},
                   "whole": {"ok": False, "step": "bench", "error": _error(e)},
                   "stages": {"ok": False, "step": "bench", "error": _error(e)}}
        conn.send(("done", rec))


# -- the parent side -------------------------------------------------------------------------


class Worker:
    log: str | None = None
    feature_graph = False

    def __init__(self, ctx) -> None:
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=worker, args=(child, Worker.log, Worker.feature_graph),
                                daemon=True)
        self.proc.start()
        child.close()
        self.tasks = 0
        self.arch: str | None = None
        self.started = 0.0
        self.ready = False

    def give(self, arch: str) -> None:
        self.conn.send(arch)
        self.arch, self.started, self.tasks = arch, time.monotonic(), self.tasks + 1

    def stop(self, kill: bool = False) -> None:
        if kill:
            self.proc.kill()  # only ever a process this bench started
        else:
            try:
                self.conn.send(None)
            except (BrokenPipeError, OSError):
                pass
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)
        self.conn.close()


def _lost(arch: str, kind: str, message: str) -> dict:
    err = {"kind": kind, "message": message}
    return {"arch": arch, "family": family(arch), "timm": {}, "times": {},
            "whole": {"ok": False, "step": "bench", "error": err},
            "stages": {"ok": False, "step": "bench", "error": err}}


def run_all(archs: list[str], workers: int, timeout: float, max_tasks: int,
            records_path: Path | None, progress_every: int) -> list[dict]:
    ctx = mp.get_context("spawn")
    pending = collections.deque(archs)
    pool = [Worker(ctx) for _ in range(min(workers, len(archs)))]
    records: list[dict] = []
    t0 = time.monotonic()
    sink = open(records_path, "a") if records_path else None

    def finish(rec: dict) -> None:
        records.append(rec)
        if sink:
            sink.write(json.dumps(rec) + "\n")
            sink.flush()
        n = len(records)
        if n % progress_every == 0 or n == len(archs):
            ok = sum(r["whole"].get("ok") and r["stages"].get("ok") for r in records)
            el = time.monotonic() - t0
            print(f"  [{n:5d}/{len(archs)}] {el / 60:5.1f} min, both pass {ok}/{n}, "
                  f"eta {el / n * (len(archs) - n) / 60:4.1f} min", flush=True)

    try:
        while pending or any(w.arch for w in pool):
            for i, w in enumerate(pool):
                if w.arch is None and w.ready and pending:
                    if w.tasks >= max_tasks:
                        w.stop()
                        pool[i] = w = Worker(ctx)
                        continue
                    w.give(pending.popleft())
            busy = [w for w in pool if w.arch]
            now = time.monotonic()
            wait_for = min([timeout - (now - w.started) for w in busy], default=timeout)
            ready = wait([w.conn for w in pool], timeout=max(0.05, min(wait_for, 5.0)))
            for i, w in enumerate(pool):
                if w.conn in ready:
                    try:
                        kind, rec = w.conn.recv()
                    except (EOFError, OSError):
                        if w.arch:
                            finish(_lost(w.arch, "WorkerDied",
                                         f"worker exited with code {w.proc.exitcode}"))
                        w.stop(kill=True)
                        pool[i] = Worker(ctx)
                        continue
                    if kind == "ready":
                        w.ready = True
                    else:
                        w.arch = None
                        finish(rec)
                elif w.arch and time.monotonic() - w.started > timeout:
                    print(f"  timeout: {w.arch} after {timeout:.0f} s", flush=True)
                    finish(_lost(w.arch, "Timeout", f"no result after {timeout:.0f} s"))
                    w.stop(kill=True)
                    pool[i] = Worker(ctx)
            pool = [w for w in pool if w.ready or w.proc.is_alive() or w.arch]
            while len(pool) < min(workers, len(pending) + sum(bool(w.arch) for w in pool)):
                pool.append(Worker(ctx))
    finally:
        for w in pool:
            w.stop(kill=bool(w.arch))
        if sink:
            sink.close()
    order = {a: i for i, a in enumerate(archs)}
    return sorted(records, key=lambda r: order[r["arch"]])


# -- the report ------------------------------------------------------------------------------


def _ok(v) -> bool:
    return v is True


def _signature(err: dict | None) -> str:
    """A failure in one line, for grouping."""
    if not err:
        return "?"
    if err.get("kind") == "SynthError":
        note = f" ({err['notes'][0]})" if err.get("notes") else ""
        return f"{err['code']}: {err['message']}{note}"
    where = f" [at {err['synthdsl_at'] or err.get('at')}]" if err.get("synthdsl_at") or err.get("at") else ""
    return f"{err['kind']}: {err['message']}{where}"


def _generic(sig: str) -> str:
    """The signature with names and numbers taken out, to group alike failures."""
    sig = re.sub(r"'[^']*'", "'…'", sig)
    return re.sub(r"\d+", "N", sig)[:200]


def summarize(records: list[dict]) -> dict:
    n = len(records)
    whole = [r for r in records if r["whole"].get("ok")]
    stages = [r for r in records if r["stages"].get("ok")]
    both = [r for r in records if r["whole"].get("ok") and r["stages"].get("ok")]
    T = lambda k: [r for r in records if _ok(r["timm"].get(k))]  # noqa: E731
    traceable = T("trace")
    fgraph = T("feature_graph")
    measured_fg = any("feature_graph" in r["timm"] for r in records)
    tr = {r["arch"] for r in traceable}
    fg = {r["arch"] for r in fgraph}
    with_stages = [r for r in records if r.get("n_stages")]
    counts = {
        "archs": n,
        "whole": len(whole),
        "stages": len(stages),
        "both": len(both),
        "with_feature_info": len(with_stages),
        "stages_of_those_with_feature_info": len([r for r in with_stages
                                                  if r["stages"].get("ok")]),
        "timm_build_meta": len(T("build")),
        "timm_forward_meta": len(T("forward")),
        "timm_traceable": len(traceable),
        "timm_feature_graph_all_stages": len(fgraph) if measured_fg else None,
        "timm_features_only": len(T("features_only")),
        "goal_both_of_timm_traceable": sum(r["arch"] in tr for r in both),
        "goal_whole_of_timm_traceable": sum(r["arch"] in tr for r in whole),
        "goal_stages_of_timm_traceable": sum(r["arch"] in tr for r in stages),
        "both_of_timm_feature_graph": sum(r["arch"] in fg for r in both)
        if measured_fg else None,
        "pass_but_not_timm_traceable": sum(r["arch"] not in tr for r in both),
        "stages_agree_with_features_only": sum(
            r["stages"].get("agrees_with_features_only") is True for r in records),
        "stages_disagree_with_features_only": sum(
            r["stages"].get("agrees_with_features_only") is False for r in records),
        "stages_nchw_where_features_only_nhwc": sum(
            r["stages"].get("agrees_with_features_only") == "NHWC" for r in records),
    }
    fams: dict[str, dict] = {}
    for r in records:
        f = fams.setdefault(r["family"], {"archs": 0, "whole_fail": 0, "stages_fail": 0,
                                          "failures": []})
        f["archs"] += 1
        bad = {k: r[k] for k in ("whole", "stages") if not r[k].get("ok")}
        if bad:
            f["whole_fail"] += "whole" in bad
            f["stages_fail"] += "stages" in bad
            f["failures"].append({
                "arch": r["arch"],
                "timm_traceable": _ok(r["timm"].get("trace")),
                **{k: {"step": v.get("step"), "error": v.get("error")} for k, v in bad.items()}})
    failures = {k: v for k, v in sorted(fams.items(), key=lambda kv: (
        -(kv[1]["whole_fail"] + kv[1]["stages_fail"]), kv[0])) if v["failures"]}
    groups = collections.Counter()
    examples: dict[str, list[str]] = {}
    for r in records:
        for k in ("whole", "stages"):
            if not r[k].get("ok"):
                g = f"{k} @{r[k].get('step')}: {_generic(_signature(r[k].get('error')))}"
                groups[g] += 1
                examples.setdefault(g, []).append(r["arch"])
    disagree = [{"arch": r["arch"], "spec": r["stages"].get("shapes"),
                 "features_only": r["timm"].get("feature_shapes")}
                for r in records if r["stages"].get("agrees_with_features_only") is False]
    nhwc = [r["arch"] for r in records
            if r["stages"].get("agrees_with_features_only") == "NHWC"]
    not_traceable = {r["arch"]: _signature(r["timm"].get("trace") if isinstance(
        r["timm"].get("trace"), dict) else r["timm"].get("build"))
        for r in records if not _ok(r["timm"].get("trace"))}
    return {"counts": counts, "failures_by_family": failures,
            "failure_groups": [{"count": c, "signature": g, "examples": examples[g][:8]}
                               for g, c in groups.most_common()],
            "stage_shape_disagreements": disagree, "stages_nchw_where_features_only_nhwc": nhwc,
            "timm_not_traceable": not_traceable}


def _timings(records: list[dict], wall: float, workers: int) -> dict:
    import statistics

    keys = sorted({k for r in records for k in r["times"]})
    out = {"wall_s": round(wall, 1), "workers": workers}
    for k in keys:
        xs = sorted(r["times"][k] for r in records if k in r["times"])
        out[k] = {"n": len(xs), "median_s": round(statistics.median(xs), 4),
                  "p90_s": round(xs[int(0.9 * (len(xs) - 1))], 4), "max_s": round(xs[-1], 3),
                  "sum_s": round(sum(xs), 1)}
    slow = sorted(records, key=lambda r: -r["times"].get("total", 0))[:10]
    out["slowest"] = [[r["arch"], round(r["times"].get("total", 0), 1)] for r in slow]
    return out


def print_summary(summary: dict, timings: dict) -> None:
    c = summary["counts"]
    n = c["archs"]
    pct = lambda a, b: f"{100 * a / b:5.1f}%" if b else "  -  "  # noqa: E731
    print()
    print(f"{'':40s} {'count':>6s} {'share':>7s}")
    rows = [("architectures", n, n),
            ("timm: builds on meta", c["timm_build_meta"], n),
            ("timm: runs on meta", c["timm_forward_meta"], n),
            ("timm: traceable with its fx rules", c["timm_traceable"], n),
            ("timm: FeatureGraphNet, every stage", c["timm_feature_graph_all_stages"], n),
            ("timm: features_only builds and runs", c["timm_features_only"], n),
            ("spec whole passes", c["whole"], n),
            ("spec stages passes", c["stages"], n),
            ("spec both pass", c["both"], n),
            ("  (with feature_info: stages pass)", c["stages_of_those_with_feature_info"],
             c["with_feature_info"]),
            ("GOAL: both pass / timm-traceable", c["goal_both_of_timm_traceable"],
             c["timm_traceable"]),
            ("  whole passes / timm-traceable", c["goal_whole_of_timm_traceable"],
             c["timm_traceable"]),
            ("  stages pass / timm-traceable", c["goal_stages_of_timm_traceable"],
             c["timm_traceable"]),
            ("both pass / timm FeatureGraphNet ok", c["both_of_timm_feature_graph"],
             c["timm_feature_graph_all_stages"]),
            ("stage shapes = features_only shapes", c["stages_agree_with_features_only"],
             c["stages_agree_with_features_only"] + c["stages_disagree_with_features_only"]
             + c["stages_nchw_where_features_only_nhwc"]),
            ("  same but NCHW where timm gives NHWC", c["stages_nchw_where_features_only_nhwc"],
             c["stages_agree_with_features_only"] + c["stages_disagree_with_features_only"]
             + c["stages_nchw_where_features_only_nhwc"])]
    for label, a, b in rows:
        if a is None:
            continue
        print(f"{label:40s} {a:6d} {pct(a, b):>7s}" + (f"  of {b}" if b != n else ""))
    fams = summary["failures_by_family"]
    if fams:
        print(f"\nfailures by family ({len(fams)} families; whole / stages failing of archs):")
        for name, f in list(fams.items())[:25]:
            first = f["failures"][0]
            key = "whole" if "whole" in first else "stages"
            print(f"  {name:18s} {f['whole_fail']:3d} / {f['stages_fail']:3d} of {f['archs']:3d}"
                  f"  e.g. {first['arch']} ({key} @{first[key]['step']}): "
                  f"{_short(_signature(first[key]['error']), 150)}")
    groups = summary["failure_groups"]
    if groups:
        print("\nmost common failures:")
        for g in groups[:15]:
            print(f"  {g['count']:4d}  {_short(g['signature'], 160)}")
            print(f"        e.g. {', '.join(g['examples'][:4])}")
    print(f"\nwall time {timings['wall_s'] / 60:.1f} min with {timings['workers']} workers")


def write_failures(summary: dict, path: Path) -> None:
    lines = ["# timm coverage failures (bench/timm_coverage.py), grouped by family", ""]
    for name, f in summary["failures_by_family"].items():
        lines.append(f"## {name}: whole fails {f['whole_fail']}, stages fail {f['stages_fail']}"
                     f", of {f['archs']}")
        for x in f["failures"]:
            for key in ("whole", "stages"):
                if key in x:
                    lines.append(f"  {x['arch']:45s} {key:6s} @{x[key]['step']:8s} "
                                 f"{_signature(x[key]['error'])}")
        lines.append("")
    if summary["stages_nchw_where_features_only_nhwc"]:
        lines.append("## stages the spec gives NCHW where timm's features_only gives NHWC")
        lines.append("  " + ", ".join(summary["stages_nchw_where_features_only_nhwc"]))
        lines.append("")
    if summary["stage_shape_disagreements"]:
        lines.append("## stage shapes that differ from timm's features_only")
        for d in summary["stage_shape_disagreements"]:
            lines.append(f"  {d['arch']}: spec {d['spec']} / features_only {d['features_only']}")
        lines.append("")
    lines.append("## not traceable by timm's own fx rules")
    for arch, sig in summary["timm_not_traceable"].items():
        lines.append(f"  {arch:45s} {sig}")
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--filter", default="*", metavar="GLOB",
                    help="only architectures matching this glob (comma-separated globs)")
    ap.add_argument("--limit", type=int, default=0, metavar="N",
                    help="only the first N architectures (after --filter)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per architecture")
    ap.add_argument("--max-tasks", type=int, default=40,
                    help="architectures per worker before it is replaced")
    ap.add_argument("--records", type=Path, default=None,
                    help="also append each record as a JSON line to this file as it comes")
    ap.add_argument("--worker-log", default=os.path.join(
        os.environ.get("TMPDIR", "/tmp"), "timm_coverage_workers.log"),
        help="where the workers' own output goes ('' keeps it on this terminal)")
    ap.add_argument("--out", type=Path, default=RESULTS, help="JSON file to write")
    ap.add_argument("--failures", type=Path, default=FAILURES, help="text file of failures")
    ap.add_argument("--no-write", action="store_true", help="print only")
    ap.add_argument("--feature-graph", action="store_true",
                    help="also cut every model with timm's FeatureGraphNet (slower)")
    ap.add_argument("--resume", action="store_true",
                    help="take the architectures already in --records from there")
    ap.add_argument("--summarize-only", action="store_true",
                    help="run nothing: report on what --records holds (e.g. a partial run)")
    ap.add_argument("--no-retry", action="store_true",
                    help="do not run timed-out architectures again (with twice the timeout)")
    args = ap.parse_args(argv)
    if (args.resume or args.summarize_only) and not args.records:
        ap.error("--resume and --summarize-only need --records")

    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import timm
    import torch
    import torchvision

    Worker.log = args.worker_log or None
    Worker.feature_graph = args.feature_graph
    globs = args.filter.split(",")
    archs = [a for a in timm.list_models() if any(fnmatch.fnmatchcase(a, g) for g in globs)]
    if args.limit:
        archs = archs[: args.limit]
    done: dict[str, dict] = {}
    if (args.resume or args.summarize_only) and args.records.exists():
        for line in args.records.read_text().splitlines():
            rec = json.loads(line)
            if rec["arch"] in archs:
                done[rec["arch"]] = rec
    # a fixed shuffle: the big models (aimv2, beit, cait, ...) do not all come first,
    # so the ETA means something and the two workers get similar loads
    todo = [] if args.summarize_only else [a for a in archs if a not in done]
    random.Random(0).shuffle(todo)
    print(f"timm coverage: {len(archs)} architectures ({len(done)} from {args.records}), "
          f"{args.workers} workers, timeout {args.timeout:.0f} s; torch {torch.__version__}, "
          f"timm {timm.__version__}; load average {os.getloadavg()[0]:.1f}", flush=True)
    start = _dt.datetime.now(_dt.timezone.utc)
    load = [os.getloadavg()[0]]
    t0 = time.monotonic()
    new = run_all(todo, args.workers, args.timeout, args.max_tasks, args.records,
                  progress_every=max(1, min(50, len(todo) // 20 or 1)))
    timed_out = [r["arch"] for r in new if r["whole"].get("error", {}).get("kind") == "Timeout"]
    if timed_out and not args.no_retry:
        print(f"again, with {2 * args.timeout:.0f} s each: {', '.join(timed_out)}", flush=True)
        again = {r["arch"]: r for r in run_all(timed_out, args.workers, 2 * args.timeout,
                                               args.max_tasks, args.records, progress_every=10)}
        new = [again.get(r["arch"], r) for r in new]
    wall = time.monotonic() - t0
    load.append(os.getloadavg()[0])
    done.update({r["arch"]: r for r in new})
    records = [done[a] for a in archs if a in done]
    summary = summarize(records)
    timings = _timings(records, wall, args.workers)
    print_summary(summary, timings)
    if args.no_write:
        return 0
    report = {
        "what": "synthdsl specs over timm.list_models() on the meta device: whole and every "
                "feature stage; check + compile(device='meta') + run; timm baseline alongside",
        "date": start.isoformat(timespec="seconds"),
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "timm": timm.__version__, "torchvision": torchvision.__version__,
                     "synthdsl": __import__("synthdsl").__version__},
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average_start_end": load,
        "resumed": len(archs) - len(todo),
        "feature_graph_measured": args.feature_graph,
        "filter": args.filter, "limit": args.limit, "batch": BATCH,
        **summary,
        "timings": timings,
        "records": records,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    write_failures(summary, args.failures)
    print(f"wrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}"
          f" and {args.failures.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
