"""What a run logs, epoch by epoch: ``log.jsonl`` always, and with ``--log`` also
``log.csv`` (one row per epoch, fixed columns) and TensorBoard event files under ``tb/``
(``torch.utils.tensorboard``, when the ``tensorboard`` package is installed:
``pip install 'synthdsl[tb]'``); at the end ``curves.png``, the loss and the accuracies
over the epochs.

>>> flat_row({"epoch": 2, "loss": 0.5, "val": {"accuracy": 0.75, "n": 40}})["val_accuracy"]
0.75
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Sequence

from synthdsl.files import write_text
from synthdsl.train.errors import TrainError

#: The logs ``--log`` may name besides ``log.jsonl`` (always written).
LOG_KINDS = ("jsonl", "csv", "tensorboard")
#: The columns of ``log.csv``, in order.
CSV_COLUMNS = ("epoch", "step", "lr", "loss", "train_accuracy", "val_accuracy",
               "val_macro_f1", "val_ema_accuracy", "seconds", "samples_per_second")


def log_kinds(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"csv,tensorboard"`` as a checked tuple; T001 for an unknown kind, or for
    TensorBoard where its package is missing."""
    items = text.split(",") if isinstance(text, str) else list(text or ())
    kinds = tuple(k.strip() for k in items if k.strip())
    for k in kinds:
        if k not in LOG_KINDS:
            raise TrainError(f"--log has no kind '{k}'", hint="its kinds: "
                             + ", ".join(LOG_KINDS))
    if "tensorboard" in kinds:
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            raise TrainError("--log tensorboard needs the 'tensorboard' package, which is not "
                             "installed", hint="pip install 'synthdsl[tb]' (or tensorboard), "
                             "or log csv instead") from None
    return kinds


def flat_row(record: dict[str, Any]) -> dict[str, Any]:
    """An epoch's record as one flat row (its validation's figures as ``val_*``)."""
    row = {k: v for k, v in record.items() if not isinstance(v, dict)}
    for part in ("val", "val_ema"):
        for k, v in (record.get(part) or {}).items():
            if isinstance(v, (int, float)) and k != "n":
                row[f"{part}_{k}"] = v
    return row


class RunLog:
    """The logs of one run folder (written by the first process only)."""

    def __init__(self, run: Path, kinds: Sequence[str] = ()) -> None:
        self.run, self.kinds = run, tuple(kinds)
        self._writer = None

    def epoch(self, record: dict[str, Any], history: list[dict[str, Any]]) -> None:
        """Append the epoch's `record` (the last of `history`) to every log."""
        with open(self.run / "log.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if "csv" in self.kinds:  # rewritten whole: a resumed run's rows are its history's
            out = io.StringIO()
            w = csv.DictWriter(out, CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
            w.writeheader()
            w.writerows(flat_row(r) for r in history)
            write_text(self.run / "log.csv", out.getvalue())
        if "tensorboard" in self.kinds:
            if self._writer is None:
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(str(self.run / "tb"))
            for k, v in flat_row(record).items():
                if k not in ("epoch", "step") and isinstance(v, (int, float)):
                    self._writer.add_scalar(k.replace("_", "/", 1) if k.startswith("val")
                                            else f"train/{k}", v, record["epoch"])
            self._writer.flush()

    def close(self, history: list[dict[str, Any]], title: str = "") -> Path | None:
        """Close the event file; draw ``curves.png`` of `history` (None without epochs)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        return plot_curves(history, self.run / "curves.png", title) if history else None


def plot_curves(history: list[dict[str, Any]], path: Path, title: str = "") -> Path:
    """The loss (left) and the train, validation and EMA accuracies (right) by epoch."""
    from synthdsl.train.metrics import pyplot, save_figure

    plt = pyplot()
    rows = [flat_row(r) for r in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    left.plot([r["epoch"] for r in rows], [r["loss"] for r in rows], marker="o")
    left.set(xlabel="epoch", ylabel="training loss")
    for key, label in (("train_accuracy", "train"), ("val_accuracy", "validation"),
                       ("val_ema_accuracy", "EMA")):
        got = [(r["epoch"], r[key]) for r in rows if r.get(key) is not None]
        if got:
            right.plot(*zip(*got), marker="o", label=label)
    right.set(xlabel="epoch", ylabel="accuracy")
    if right.lines:
        right.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)
