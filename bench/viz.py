"""Visualisation benchmark: `synth viz` formats for generated specs of 1,000+ nodes.

A spec is generated deterministically (``generate_spec(n)``, seed 0): one input
``[B, 3, 32, 32]``; two sources (timm's tiny ``test_resnet``), one used whole
and one cut into three parts, so the drawing has two clusters; then a deep,
branching network of new layers at width 32 (``Linear |> ReLU``, ``LayerNorm
|> Dropout``, ``add``, ``concat |> Linear``, ``mean`` of three), a frozen
stretch in the middle, and four outputs. The node count reported is the real
one, ``graph.number_of_nodes()``.

The spec is parsed and checked once per size (not timed here: ``bench/frontend.py``
measures that). Then, per repeat, each format is rendered from the checked
graph with ``synthdsl.viz.render_graph`` and timed with ``time.perf_counter``:

* ``view``  — ``build_view`` alone (the view model every format is drawn from)
* ``html``  — view + layered ordering + the self-contained page
* ``dot``, ``mmd``, ``json``, ``text`` — view + that format
* ``svg``, ``png`` — view + DOT + Graphviz's ``dot`` (sources drawn as clusters
  of their parts, not expanded: the "collapsed" drawing the issue asks for)
* ``svg_collapsed`` — ``--collapse all``: every source one node

Reported: the median and minimum seconds per format and the output size in
bytes (outputs are deterministic, so every repeat has the same size; the script
checks that). The examples in ``models/`` are timed the same way (SVG and
HTML, one run each after a warm-up).

``deep_chain`` is the spec ``tests/test_viz.py`` draws whole (``deep_chain_spec(620)``:
one source, then a chain of 620 values that each read the one before and one five
back, 1,000+ nodes). The test checks what is drawn; this measures how long it takes:
HTML, and SVG with ``--collapse all``, against the limits the test used to assert
(10 s and 30 s).

Run from the repository root::

    .venv/bin/python bench/viz.py                    # table + bench/results/viz.json
    .venv/bin/python bench/viz.py --sizes 1000:5 --no-write
    .venv/bin/python bench/viz.py --only-deep-chain  # that section of viz.json alone
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import synthdsl  # noqa: E402
from synthdsl.viz import build_view, render_graph  # noqa: E402
from _record import environment, load_average, write_report  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "viz.json"
DEFAULT_SIZES = ((1_000, 5), (2_000, 3))
FORMATS = ("view", "html", "dot", "mmd", "json", "text", "svg", "svg_collapsed", "png")
WIDTH = 32


def generate_spec(target_nodes: int, seed: int = 0, n_outputs: int = 4) -> str:
    """A spec whose graph has about `target_nodes` nodes (never fewer)."""
    rng = random.Random(seed)
    w = WIDTH
    lines = ["synth Generated", "", "input x: [B, 3, 32, 32]", "",
             'source whole = timm("test_resnet", num_classes=0)',
             'source cut   = timm("test_resnet", num_classes=0)', "",
             "f1 = whole(x)",
             "c1 = cut.conv1(x) |> cut.bn1 |> cut.act1",
             "f2 = GlobalAvgPool(c1)",
             f"h0 = concat(Linear(f1, out={w}), Linear(f2, out={w}))",
             f"v0 = Linear(h0, out={w})"]
    nodes = 1 + 2 + 1 + 3 + 1 + 3 + 1          # input, sources, parts and the layers above
    templates = [
        (4, 2, "Linear({a}, out=%d) |> ReLU" % w),
        (2, 2, "LayerNorm({a}) |> Dropout(p=0.1)"),
        (2, 1, "add({a}, {b})"),
        (2, 2, "concat({a}, {b}) |> Linear(out=%d)" % w),
        (1, 1, "mean({a}, {b}, {c})"),
    ]
    weights = [t[0] for t in templates]
    values = ["v0"]
    frozen: list[str] = []
    i = 0
    budget = target_nodes - n_outputs
    while nodes < budget:
        i += 1
        _, count, template = rng.choices(templates, weights)[0]
        recent = values[-8:]
        text = template.format(a=values[-1], b=rng.choice(recent), c=rng.choice(recent))
        name = f"v{i}"
        lines.append(f"{name} = {text}")
        values.append(name)
        nodes += count
        if budget // 3 < nodes < budget // 2 and "Linear" in template:
            frozen.append(name)
    step = max(1, len(values) // n_outputs)
    outs = [values[min(len(values) - 1, step * (k + 1))] for k in range(n_outputs)]
    outs[-1] = values[-1]
    lines += ["", "freeze whole, " + ", ".join(frozen[:50]) if frozen else "freeze whole",
              "", "output " + ", ".join(dict.fromkeys(outs))]
    return "\n".join(lines) + "\n"


#: What `deep_chain` may cost: the limits tests/test_viz.py asserted before it moved here.
DEEP_CHAIN_LIMITS_S = {"html": 10.0, "svg_collapsed": 30.0}


def deep_chain_spec(n_values: int) -> str:
    """The deep, branching spec that tests/test_viz.py draws: about 2 nodes per value."""
    lines = ["synth Big", "input x: [B, 3, 32, 32]", 'source net = timm("test_resnet")',
             "v0 = Linear(GlobalAvgPool(net.layer1(net.conv1(x))), out=32)"]
    for i in range(1, n_values):
        a, b = f"v{i - 1}", f"v{max(0, i - 5)}"
        lines.append([f"v{i} = Linear({a}, out=32) |> ReLU", f"v{i} = add({a}, {b})",
                      f"v{i} = concat({a}, {b}) |> Linear(out=32)"][i % 3])
    lines += ["freeze net", f"output v{n_values - 1}"]
    return "\n".join(lines)


def bench_deep_chain(repeats: int, have_dot: bool, n_values: int = 620) -> dict:
    """HTML and collapsed SVG of `deep_chain_spec(n_values)`, against DEEP_CHAIN_LIMITS_S."""
    graph = synthdsl.check_spec(deep_chain_spec(n_values))
    fns = {"html": lambda: render_graph(graph, "html"),
           "svg_collapsed": lambda: render_graph(graph, "svg", collapse=["all"])}
    out = {"values": n_values, "nodes": graph.number_of_nodes(),
           "edges": graph.number_of_edges(), "repeats": repeats,
           "limits_s": DEEP_CHAIN_LIMITS_S, "formats": {}}
    for name, fn in fns.items():
        if name == "svg_collapsed" and not have_dot:
            out["formats"][name] = {"skipped": "Graphviz `dot` is not installed"}
            continue
        times, size = _time(fn, repeats)
        out["formats"][name] = {"median_s": round(statistics.median(times), 4),
                                "max_s": round(max(times), 4),
                                "runs_s": [round(t, 4) for t in times], "bytes": size}
    out["met"] = all(r["max_s"] < DEEP_CHAIN_LIMITS_S[f] for f, r in out["formats"].items()
                     if "skipped" not in r)
    return out


def _print_deep_chain(entry: dict) -> None:
    cells = "  ".join(f"{f} {r['median_s']:.3f}s (max {r['max_s']:.3f}s, limit "
                      f"{entry['limits_s'][f]:.0f}s)" if "skipped" not in r else f"{f} -"
                      for f, r in entry["formats"].items())
    print(f"\ndeep chain ({entry['nodes']} nodes, {entry['repeats']} runs): {cells}"
          f"  met: {entry['met']}")


def _time(fn, repeats: int) -> tuple[list[float], int]:
    times, sizes = [], set()
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
        sizes.add(len(out.encode("utf-8") if isinstance(out, str) else out) if out is not None
                  else 0)
    if len(sizes) != 1:
        raise AssertionError(f"output size changed between repeats: {sorted(sizes)}")
    return times, sizes.pop()


def bench_graph(graph, repeats: int, have_dot: bool) -> dict:
    fns = {"view": lambda: (build_view(graph), None)[1],
           "svg_collapsed": lambda: render_graph(graph, "svg", collapse=["all"])}
    for fmt in ("html", "dot", "mmd", "json", "text", "svg", "png"):
        fns[fmt] = (lambda f: lambda: render_graph(graph, f))(fmt)
    out = {}
    for name in FORMATS:
        if name in ("svg", "svg_collapsed", "png") and not have_dot:
            out[name] = {"skipped": "Graphviz `dot` is not installed"}
            continue
        times, size = _time(fns[name], repeats)
        out[name] = {"median_s": round(statistics.median(times), 4),
                     "min_s": round(min(times), 4), "runs_s": [round(t, 4) for t in times],
                     "bytes": size}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default=",".join(f"{n}:{r}" for n, r in DEFAULT_SIZES),
                    help="target nodes:repeats, comma separated (default %(default)s)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--no-write", action="store_true", help="print only")
    ap.add_argument("--no-examples", action="store_true", help="skip models/*.synth")
    ap.add_argument("--deep-chain-repeats", type=int, default=3, metavar="N",
                    help="runs of the deep_chain section (default %(default)s; 0 skips it)")
    ap.add_argument("--only-deep-chain", action="store_true",
                    help="run only the deep_chain section and replace it in the report")
    args = ap.parse_args(argv)
    sizes = [tuple(int(x) for x in s.split(":")) for s in args.sizes.split(",")]
    torch.set_num_threads(1)
    dot = shutil.which("dot")
    have_dot = dot is not None
    dot_version = subprocess.run([dot, "-V"], capture_output=True, text=True).stderr.strip() \
        if dot else None
    load_start = load_average()
    results = {"benchmark": "viz",
               "description": "synth viz formats rendered from checked generated specs; "
                              "medians of repeated runs",
               **environment("torch", "synthdsl", torch_threads=False),
               "graphviz": dot_version,
               "load_average_at_start": load_start, "sizes": []}

    # warm-up: imports, timm registry, the HTML assets
    warm = synthdsl.check_spec(generate_spec(60))
    for fmt in ("html", "dot") + (("svg",) if have_dot else ()):
        render_graph(warm, fmt)

    if args.only_deep_chain:
        report = json.loads(args.out.read_text("utf-8")) if args.out.exists() else results
        entry = bench_deep_chain(max(1, args.deep_chain_repeats), have_dot)
        report["deep_chain"] = {**environment("torch", "synthdsl", torch_threads=False),
                                "load_average_at_start": load_start, **entry,
                                "load_average_at_end": load_average()}
        _print_deep_chain(entry)
        if not args.no_write:
            write_report(report, args.out)
        return 0

    print(f"{'nodes':>6} {'edges':>6}  " + "  ".join(f"{f:>13}" for f in FORMATS))
    for target, repeats in sizes:
        t0 = time.perf_counter()
        graph = synthdsl.check_spec(generate_spec(target))
        check_s = time.perf_counter() - t0
        row = bench_graph(graph, repeats, have_dot)
        entry = {"target_nodes": target, "nodes": graph.number_of_nodes(),
                 "edges": graph.number_of_edges(), "repeats": repeats,
                 "check_s": round(check_s, 3), "formats": row}
        results["sizes"].append(entry)
        cells = []
        for f in FORMATS:
            r = row[f]
            cells.append(f"{'-':>13}" if "skipped" in r
                         else f"{r['median_s']:6.3f}s {r['bytes'] / 1024:5.0f}k")
        print(f"{entry['nodes']:>6} {entry['edges']:>6}  " + "  ".join(cells))

    if not args.no_examples:
        results["examples"] = {}
        print("\nexamples (one run after a warm-up):")
        for path in sorted((ROOT / "models").glob("*.synth")):
            try:
                graph = synthdsl.check_spec(path, raise_errors=False)
            except Exception as e:  # noqa: BLE001 - an example the check cannot take today
                results["examples"][path.name] = {"error": f"{type(e).__name__}: {e}"}
                print(f"  {path.name:<36} check failed: {type(e).__name__}: {e}")
                continue
            ex = {"nodes": graph.number_of_nodes()}
            for fmt in ("html",) + (("svg",) if have_dot else ()):
                render_graph(graph, fmt)
                t = time.perf_counter()
                out = render_graph(graph, fmt)
                ex[fmt] = {"s": round(time.perf_counter() - t, 4), "bytes": len(out.encode())}
            results["examples"][path.name] = ex
            print(f"  {path.name:<36} {ex['nodes']:>4} nodes  "
                  + "  ".join(f"{k} {v['s']:.3f}s {v['bytes'] / 1024:.0f}k"
                              for k, v in ex.items() if k != "nodes"))

    if args.deep_chain_repeats > 0:
        results["deep_chain"] = bench_deep_chain(args.deep_chain_repeats, have_dot)
        _print_deep_chain(results["deep_chain"])

    results["load_average_at_end"] = load_average()
    largest = results["sizes"][-1]["formats"] if results["sizes"] else {}
    at_1k = next((s["formats"] for s in results["sizes"] if s["nodes"] >= 1000), {})
    results["verdict"] = {
        "target": "a spec of 1,000+ nodes renders to HTML and SVG in seconds (< 10 s each)",
        "html_s_at_1000+": at_1k.get("html", {}).get("median_s"),
        "svg_s_at_1000+": at_1k.get("svg", {}).get("median_s"),
        "met": bool(at_1k) and at_1k["html"]["median_s"] < 10
        and ("skipped" in at_1k["svg"] or at_1k["svg"]["median_s"] < 10),
        "largest_html_s": largest.get("html", {}).get("median_s"),
    }
    print(f"\nverdict: {results['verdict']}")
    if not args.no_write:
        write_report(results, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
