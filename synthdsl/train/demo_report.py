"""The demo's figures: mean ± standard deviation over seeds, paired differences to the
scratch baseline, the tables (plain or Markdown) and the labels-per-class plot.

>>> rows = [["a", "1.0"], ["bb", "22.5"]]
>>> print(_render(["name", "value"], rows, markdown=False))
name  value
----  -----
a       1.0
bb     22.5
>>> mean_std([0.5, 0.7])
(0.6, 0.14142135623730948)
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any, Sequence

from synthdsl.train.metrics import pyplot, save_figure


def mean_std(xs: list[float]) -> tuple[float, float]:
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def summarise(arm_list: Sequence[Any], per_seed: dict[str, list[dict]]
              ) -> list[dict[str, Any]]:
    rows = []
    for arm in arm_list:
        rs = per_seed.get(arm.key, [])
        if not rs:
            continue
        acc = mean_std([r["accuracy"] for r in rs])
        f1 = mean_std([r["macro_f1"] for r in rs])
        secs = mean_std([r["train_seconds"] for r in rs])
        rows.append({"key": arm.key, "name": arm.label, "accuracy": acc, "macro_f1": f1,
                     "train_seconds": secs, "trainable": rs[0]["trainable"],
                     "params": rs[0]["params"], "labelled": rs[0]["labelled"],
                     "images": rs[0]["images"], "color": arm.color,
                     "seeds": [r["accuracy"] for r in rs]})
    return rows


def table(rows: list[dict[str, Any]], markdown: bool = False) -> str:
    head = ["model", "trained / all params", "accuracy", "macro F1", "train time"]
    body = [[r["name"], f"{r['trainable']:,} / {r['params']:,}",
             f"{r['accuracy'][0]:.3f} ± {r['accuracy'][1]:.3f}",
             f"{r['macro_f1'][0]:.3f} ± {r['macro_f1'][1]:.3f}",
             f"{r['train_seconds'][0]:.1f} s"] for r in rows]
    return _render(head, body, markdown)


def paired(per_seed: dict[str, list[dict]], key: str, base: str = "scratch") -> list[float]:
    return [a["accuracy"] - b["accuracy"] for a, b in zip(per_seed[key], per_seed[base])]


def margin_line(name: str, diffs: list[float]) -> str:
    mean, std = mean_std(diffs)
    return (f"{name} - scratch: {mean:+.3f} ± {std:.3f} accuracy (better on "
            f"{sum(d > 0 for d in diffs)} of {len(diffs)} seeds)")


def sweep_table(points: list[dict[str, Any]], markdown: bool = False) -> str:
    head = ["labels per class", "synthesised, fine-tuned", "scratch", "difference",
            "seeds better"]
    body = [[str(p["shots"]), f"{p['synth_ft'][0]:.3f} ± {p['synth_ft'][1]:.3f}",
             f"{p['scratch'][0]:.3f} ± {p['scratch'][1]:.3f}",
             f"{p['margin'][0]:+.3f} ± {p['margin'][1]:.3f}",
             f"{p['wins']} of {len(p['per_seed']['scratch'])}"] for p in points]
    return _render(head, body, markdown)


def _render(head: list[str], body: list[list[str]], markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(head) + " |",
                 "| " + " | ".join(["---"] + ["---:"] * (len(head) - 1)) + " |"]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in body])
    widths = [max(len(x[i]) for x in [head] + body) for i in range(len(head))]

    def fmt(row: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(row, widths)))

    return "\n".join([fmt(head), fmt(["-" * w for w in widths])] + [fmt(r) for r in body])


def plot_sweep(points: list[dict[str, Any]], path: Path, title: str) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    xs = [p["shots"] for p in points]
    for key, label, color in (("synth_ft", "synthesised, fine-tuned", "#2a9d8f"),
                              ("scratch", "same architecture from scratch", "#e76f51")):
        ax.errorbar(xs, [p[key][0] for p in points], yerr=[p[key][1] for p in points],
                    marker="o", capsize=4, label=label, color=color)
    ax.set_xscale("log")
    ax.set_xticks(xs, [str(x) for x in xs])
    ax.minorticks_off()
    ax.set_xlabel("labels per class")
    ax.set_ylabel("test accuracy")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)
