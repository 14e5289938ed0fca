"""Classification metrics: accuracy, per-class and macro precision, recall and F1, and
the confusion matrix — as a table, as JSON, and as a PNG.

The figures follow ``sklearn.metrics`` exactly (``zero_division=0``: a class nobody
predicted has precision 0; the macro F1 is the mean of the per-class F1 scores, not
the F1 of the macro precision and recall). Rows of the confusion matrix are true
classes, columns predicted ones.

>>> m = classification_metrics([0, 0, 1, 2, 2], [0, 1, 1, 2, 0], ["a", "b", "c"])
>>> round(m.accuracy, 3), [round(float(v), 3) for v in m.f1]
(0.6, [0.5, 0.667, 0.667])
>>> m.confusion.tolist()
[[1, 1, 0], [0, 1, 0], [1, 0, 1]]
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from synthdsl.files import atomic_path


@dataclass(frozen=True)
class ClassificationMetrics:
    """The metrics of one set of predictions over `classes`."""

    classes: tuple[str, ...]
    confusion: np.ndarray  # [true, predicted] counts

    @property
    def n(self) -> int:
        return int(self.confusion.sum())

    @property
    def support(self) -> np.ndarray:
        return self.confusion.sum(1)

    @property
    def accuracy(self) -> float:
        return float(np.trace(self.confusion) / self.n) if self.n else 0.0

    @property
    def precision(self) -> np.ndarray:
        predicted = self.confusion.sum(0)
        return _safe_div(np.diag(self.confusion), predicted)

    @property
    def recall(self) -> np.ndarray:
        return _safe_div(np.diag(self.confusion), self.support)

    @property
    def f1(self) -> np.ndarray:
        # sklearn's form, 2·tp / (2·tp + fp + fn): zero where a class was never seen
        tp = np.diag(self.confusion).astype(np.float64)
        fp = self.confusion.sum(0) - tp
        fn = self.confusion.sum(1) - tp
        return _safe_div(2 * tp, 2 * tp + fp + fn)

    @property
    def macro_precision(self) -> float:
        return float(self.precision.mean()) if len(self.classes) else 0.0

    @property
    def macro_recall(self) -> float:
        return float(self.recall.mean()) if len(self.classes) else 0.0

    @property
    def macro_f1(self) -> float:
        return float(self.f1.mean()) if len(self.classes) else 0.0

    # -- presentations ------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "accuracy": self.accuracy,
            "macro": {"precision": self.macro_precision, "recall": self.macro_recall,
                      "f1": self.macro_f1},
            "per_class": {c: {"precision": float(p), "recall": float(r), "f1": float(f),
                              "support": int(s)}
                          for c, p, r, f, s in zip(self.classes, self.precision, self.recall,
                                                   self.f1, self.support)},
            "classes": list(self.classes),
            "confusion": self.confusion.tolist(),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ClassificationMetrics":
        return cls(tuple(d["classes"]), np.array(d["confusion"], dtype=np.int64))

    def table(self, title: str | None = None) -> str:
        """Per-class precision, recall, F1 and support, the macro means, the accuracy, and
        the confusion matrix."""
        width = max([len(c) for c in self.classes] + [len("macro avg"), 5])
        lines = [title] if title else []
        lines.append(f"{'class'.ljust(width)}  precision  recall     f1  support")
        for c, p, r, f, s in zip(self.classes, self.precision, self.recall, self.f1,
                                 self.support):
            lines.append(f"{c.ljust(width)}  {p:9.3f}  {r:6.3f}  {f:5.3f}  {int(s):7d}")
        lines.append(f"{'macro avg'.ljust(width)}  {self.macro_precision:9.3f}  "
                     f"{self.macro_recall:6.3f}  {self.macro_f1:5.3f}  {self.n:7d}")
        lines.append(f"{'accuracy'.ljust(width)}  {'':9}  {'':6}  {self.accuracy:5.3f}  "
                     f"{self.n:7d}")
        lines.append("")
        lines.append("confusion matrix (rows: true, columns: predicted)")
        cw = max(len(str(int(self.confusion.max(initial=0)))),
                 max((len(c) for c in self.classes), default=1))
        lines.append(" " * width + "  " + " ".join(c.rjust(cw) for c in self.classes))
        for c, row in zip(self.classes, self.confusion):
            lines.append(c.ljust(width) + "  " + " ".join(str(int(v)).rjust(cw) for v in row))
        return "\n".join(lines)

    def plot(self, path: str | Path, title: str = "") -> Path:
        """The confusion matrix as a PNG (counts, shaded by row-normalised recall)."""
        plt = pyplot()
        n = len(self.classes)
        size = min(2.0 + 0.55 * n, 14)
        fig, ax = plt.subplots(figsize=(size + 1.2, size))
        rows = self.confusion.sum(1, keepdims=True)
        share = np.divide(self.confusion, rows, out=np.zeros(self.confusion.shape),
                          where=rows > 0)
        im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        ax.set_xticks(range(n), self.classes, rotation=45 if n > 8 else 0)
        ax.set_yticks(range(n), self.classes)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        if n <= 30:
            for i in range(n):
                for j in range(n):
                    v = int(self.confusion[i, j])
                    if v:
                        ax.text(j, i, str(v), ha="center", va="center", fontsize=8,
                                color="white" if share[i, j] > 0.5 else "black")
        heading = f"{title}\n" if title else ""
        ax.set_title(f"{heading}accuracy {self.accuracy:.3f}, macro F1 {self.macro_f1:.3f}",
                     fontsize=10)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
        fig.tight_layout()
        return save_figure(fig, path)


def _safe_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return np.divide(a, b, out=np.zeros_like(a), where=b > 0)


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int
                     ) -> np.ndarray:
    t = np.asarray(y_true, dtype=np.int64).ravel()
    p = np.asarray(y_pred, dtype=np.int64).ravel()
    if t.shape != p.shape:
        raise ValueError(f"{len(t)} true labels but {len(p)} predictions")
    for name, v in (("true label", t), ("prediction", p)):
        if len(v) and (v.min() < 0 or v.max() >= num_classes):
            raise ValueError(f"a {name} lies outside 0..{num_classes - 1}")
    return np.bincount(t * num_classes + p, minlength=num_classes ** 2).reshape(
        num_classes, num_classes)


def classification_metrics(y_true: Sequence[int], y_pred: Sequence[int],
                           classes: Sequence[str] | int) -> ClassificationMetrics:
    """Metrics of predictions `y_pred` against `y_true` (class numbers)."""
    names = [str(i) for i in range(classes)] if isinstance(classes, int) else list(classes)
    return ClassificationMetrics(tuple(names), confusion_matrix(y_true, y_pred, len(names)))


# -- plotting helpers -------------------------------------------------------------------


def pyplot():
    """matplotlib's pyplot on the Agg backend (loaded on first use: plotting is optional
    to everything else here)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path) -> Path:
    """Write `fig` as a PNG, atomically, and close it."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    pyplot().close(fig)
    return path


def plot_bars(rows: Sequence[dict[str, Any]], path: str | Path, metric: str = "accuracy",
              title: str = "") -> Path:
    """A bar per row (``{"name", "mean", "std"}``), with the spread as an error bar."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(rows), 4.2))
    names = [r["name"] for r in rows]
    means = [r["mean"] for r in rows]
    stds = [r.get("std", 0.0) for r in rows]
    colors = [r.get("color", "#4c72b0") for r in rows]
    ax.bar(range(len(rows)), means, yerr=stds, capsize=4, color=colors)
    for i, (m, s) in enumerate(zip(means, stds)):
        ax.text(i, m + s + 0.01, f"{m:.3f}", ha="center", va="bottom", fontsize=9)
    ax.set_xticks(range(len(rows)), names, rotation=15, ha="right")
    ax.set_ylabel(metric)
    lo = max(0.0, min(m - s for m, s in zip(means, stds)) - 0.1)
    ax.set_ylim(lo, 1.0 + 0.04)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_curves(curves: dict[str, Sequence[float]], path: str | Path, ylabel: str,
                title: str = "") -> Path:
    """Lines over epochs, one per name."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, ys in curves.items():
        ax.plot(range(1, len(ys) + 1), ys, marker="o", markersize=3, label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)
