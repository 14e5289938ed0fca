"""Choosing the best epoch on a held-out validation split, and stopping early.

With ``--val-split`` the trainer validates on samples taken out of the training data
(never on the test split) and keeps the epoch of the best validation accuracy as
``model-best.safetensors`` (the EMA's weights and accuracy when there is an EMA, as timm
does); ``patience=N`` stops the run after N validations in a row without a better one. A
contrastive spec is chosen by its mean recall@1.

>>> s = Selection(patience=2)
>>> [s.observe(e, {"accuracy": a}) for e, a in enumerate([0.5, 0.6, 0.6, 0.55], 1)]
['better', 'better', 'worse', 'stop']
>>> s.best, s.best_epoch
(0.6, 2)
"""

from __future__ import annotations

from typing import Any


def score_of(val: dict[str, Any]) -> float | None:
    """What a validation is ranked by: accuracy, else the mean of the recalls@1."""
    if val.get("accuracy") is not None:
        return float(val["accuracy"])
    recalls = [v for k, v in val.items() if k.endswith("_recall@1")]
    return sum(recalls) / len(recalls) if recalls else None


class Selection:
    """The best validation so far, and how many since (see the module docstring)."""

    def __init__(self, patience: int = 0) -> None:
        self.patience = patience
        self.best: float | None = None
        self.best_epoch = 0
        self.since = 0

    def observe(self, epoch: int, val: dict[str, Any]) -> str:
        """``"better"`` (save it), ``"worse"``, or ``"stop"`` when patience has run out."""
        score = score_of(val)
        if score is not None and (self.best is None or score > self.best):
            self.best, self.best_epoch, self.since = score, epoch, 0
            return "better"
        self.since += 1
        return "stop" if self.patience and self.since >= self.patience else "worse"

    def state(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "since": self.since}

    def load_state(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch = state.get("best"), state.get("best_epoch", 0)
        self.since = state.get("since", 0)
