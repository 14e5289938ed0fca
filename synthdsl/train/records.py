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
from synthdsl.train.preprocess import Preprocess
from synthdsl.train.recipe import Recipe


@dataclass
class EpochRecord:
    """One epoch, as a line of ``log.jsonl``."""

    epoch: int
    step: int
    lr: float
    loss: float
    terms: dict[str, float]
    train_accuracy: float | None
    seconds: float
    samples_per_second: float
    val: dict[str, Any] | None = None
    cache: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


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
               options: Options, preprocess: Preprocess, teacher: dict | None,
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
