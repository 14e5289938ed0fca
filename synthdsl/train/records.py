"""What a training run records: ``run.json`` (what was asked), one line of ``log.jsonl`` per
epoch, and the result handed back to the caller."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from synthdsl import __version__
from synthdsl.train.checkpoint import RUN_FORMAT
from synthdsl.train.data import DataSpec
from synthdsl.train.options import Options
from synthdsl.train.feed import Feed
from synthdsl.train.preprocess import Preprocess
from synthdsl.train.recipe import Recipe


@dataclass
class EpochRecord:
    """One epoch, as a line of ``log.jsonl``."""

    epoch: int
    step: int                       #: optimizer steps taken by its end (in the whole run)
    lr: float                       #: the rate of its last step (before ``lr_mult``)
    loss: float
    terms: dict[str, float]
    train_accuracy: float | None
    seconds: float
    samples_per_second: float
    val: dict[str, Any] | None = None
    cache: dict[str, Any] | None = None
    val_ema: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    def line(self, epochs: int) -> str:
        """The epoch as the trainer prints it.

        >>> r = EpochRecord(2, 40, 1e-3, 0.51234, {}, 0.8, 1.25, 1600.0,
        ...                 val={"accuracy": 0.75, "macro_f1": 0.7})
        >>> for part in r.line(10).split("  "):
        ...     print(part)
        epoch 2/10
        loss 0.5123
        train acc 0.800
        val acc 0.750
        macro F1 0.700
        1.2s (1,600 img/s)
        """
        parts = [f"epoch {self.epoch}/{epochs}", f"loss {self.loss:.4f}"]
        if self.train_accuracy is not None:
            parts.append(f"train acc {self.train_accuracy:.3f}")
        if self.val and "accuracy" in self.val:
            parts.append(f"val acc {self.val['accuracy']:.3f}")
            parts.append(f"macro F1 {self.val['macro_f1']:.3f}")
        elif self.val:  # a contrastive spec: retrieval both ways
            parts.append(f"val R@1 {self.val['a2b_recall@1']:.3f}/{self.val['b2a_recall@1']:.3f}")
            parts.append(f"R@5 {self.val['a2b_recall@5']:.3f}/{self.val['b2a_recall@5']:.3f}")
        if self.val_ema and "accuracy" in self.val_ema:
            parts.append(f"ema acc {self.val_ema['accuracy']:.3f}")
        parts.append(f"{self.seconds:.1f}s ({self.samples_per_second:,.0f} img/s)")
        return "  ".join(parts)


@dataclass
class TrainResult:
    """What :func:`synthdsl.train.run.train` hands back."""

    run: Path | None
    history: list[dict[str, Any]]
    metrics: Any                      # ClassificationMetrics of the final evaluation, or None
    seconds: float
    model: nn.Module
    split: str = ""

    @property
    def final(self) -> dict[str, Any]:
        return self.history[-1] if self.history else {}


def run_record(model, spec_path: str | None, data: DataSpec | None, recipe: Recipe,
               options: Options, preprocess: Preprocess | Feed, teacher: dict | None,
               extra: dict | None) -> dict[str, Any]:
    """``run.json``: the spec (and a hash of its text), data, recipe, preprocessing and
    teacher a run started with; resuming checks them against what is asked again."""
    text = model.graph.graph.get("text", "")
    return {
        "format": RUN_FORMAT,
        "spec": str(Path(spec_path).resolve()) if spec_path else None,
        "spec_name": model.graph.name,
        "spec_sha256": hashlib.sha256(text.encode()).hexdigest(),
        "data": data.to_dict() if data else None,
        "recipe": asdict(recipe),
        "options": {k: v for k, v in asdict(options).items()
                    if k in ("amp", "cache_frozen", "augment", "device")},
        "preprocess": preprocess.to_dict(),
        "teacher": teacher,
        "synthdsl": __version__, "torch": torch.__version__,
        **(extra or {}),
    }


def epoch_record(t, epoch: int, totals: dict[str, float], seconds: float,
                 samples: int) -> EpochRecord:
    """Epoch `epoch` (from 0) of trainer `t`, from its sums over every process (`totals`)
    and the `samples` it trained in `seconds`: its ``step`` is the count of optimizer steps,
    its ``lr`` the rate of the last one (before ``lr_mult``)."""
    from synthdsl.train.frozen import cache_report
    from synthdsl.train.optim import lr_factor

    n = max(totals["samples"], 1.0)
    return EpochRecord(
        epoch=epoch + 1, step=t.global_step,
        lr=t.recipe.lr * lr_factor(t.recipe, t.global_step - 1, t.steps_per_epoch),
        loss=totals["loss"] / n,
        terms={k[5:]: v / n for k, v in totals.items() if k.startswith("term:")},
        train_accuracy=(totals["correct"] / totals["labelled"]) if totals["labelled"] else None,
        seconds=round(seconds, 4),
        samples_per_second=round(samples / max(seconds, 1e-9), 2),
        cache=cache_report(t.cache, t.teacher_cache))


def describe_trainer(t) -> list[str]:
    """What a trainer prints before it starts: model, data, inputs, loss, recipe, frozen
    prefix, teacher, processes and precision."""
    totals = t.model.parameter_totals()
    lines = [
        f"model   {t.model.graph.name}: {totals['params']:,} parameters, "
        f"{totals['trainable']:,} trainable, {totals['frozen']:,} frozen",
        f"data    {t.data.describe()}",
    ]
    if t.val_data is not None:
        lines.append(f"val     {t.val_data.describe()}")
    lines += [
        f"inputs  {t.preprocess.describe()}",
        "loss    " + " + ".join(term.describe() for term in t.terms),
        "recipe  " + ", ".join(f"{k}={v}" for k, v in asdict(t.recipe).items()),
        f"frozen  {t.split.describe()}",
    ]
    if t.teacher is not None:
        lines.append(f"teacher {t.teacher.description}")
    if t.dist.active:
        lines.append(f"ddp     {t.dist.world} processes "
                     f"({'nccl' if t.device.type == 'cuda' else 'gloo'})")
    if t.amp is not None:
        lines.append(f"amp     {str(t.amp).removeprefix('torch.')}")
    return lines


def progress_bar(t, total: int, start: int, epoch: int):
    """A trainer's progress bar over an epoch's batches, or None (not on a terminal, quiet,
    or not the first process)."""
    import sys

    from tqdm import tqdm

    show = t.options.progress
    if show is None:
        show = sys.stderr.isatty()
    if not show or t.options.quiet or not t.dist.main:
        return None
    return tqdm(total=total, initial=start, desc=f"epoch {epoch + 1}/{t.recipe.epochs}",
                unit="batch", leave=False, dynamic_ncols=True, file=sys.stderr)
