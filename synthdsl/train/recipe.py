"""The recipe: how to optimise, from the spec's `recipe` statement and the command line."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from synthdsl.train.losses import TrainError

#: Recipe options that say how images are read, not how to optimise (see preprocess_for).
PREPROCESS_KEYS = ("mean", "std", "normalize")


@dataclass(frozen=True)
class Recipe:
    """How to optimise: the spec's `recipe` statement, then command-line flags, win over
    these defaults."""

    epochs: int = 10
    lr: float = 1e-3
    batch_size: int = 64
    optimizer: str = "adamw"           # adamw, adam, sgd
    schedule: str = "cosine"           # cosine, constant, step (×0.1 at 50% and 75%)
    weight_decay: float = 0.0
    momentum: float = 0.9              # sgd only
    warmup_epochs: int = 0
    label_smoothing: float = 0.0
    seed: int = 0

    @classmethod
    def resolve(cls, spec_recipe: dict[str, Any] | None = None,
                overrides: dict[str, Any] | None = None) -> "Recipe":
        known = {f.name for f in fields(cls)}
        values: dict[str, Any] = {}
        for source in (spec_recipe or {}, overrides or {}):
            for k, v in source.items():
                if v is None or k in PREPROCESS_KEYS:
                    continue
                if k not in known:
                    raise TrainError(f"recipe has no option '{k}'",
                                     hint="its options: " + ", ".join(sorted(known)))
                values[k] = v
        r = cls(**values)
        r.validate()
        return r

    def validate(self) -> None:
        if self.optimizer not in ("adamw", "adam", "sgd"):
            raise TrainError(f"optimizer must be adamw, adam or sgd, not '{self.optimizer}'")
        if self.schedule not in ("cosine", "constant", "step"):
            raise TrainError(f"schedule must be cosine, constant or step, not "
                             f"'{self.schedule}'")
        if self.epochs <= 0 or self.batch_size <= 0 or self.lr <= 0:
            raise TrainError("epochs, batch size and learning rate must be > 0")
