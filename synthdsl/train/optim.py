"""The optimizer a recipe asks for, and its learning-rate schedule.

The optimizer gets ``model.param_groups(lr, weight_decay)``: what the spec leaves
trainable, with its per-pattern learning-rate multipliers and weight decays, times the
layer-wise decay of :mod:`synthdsl.train.layer_decay`. The schedule
is a multiplier of every group's own rate, by optimizer step: linear warm-up, then
cosine, constant or step (×0.1 at 50% and 75% of the epochs).

>>> from synthdsl.train.recipe import Recipe
>>> r = Recipe(epochs=4, warmup_epochs=1, schedule="cosine")
>>> [round(lr_factor(r, s, steps_per_epoch=2), 3) for s in range(8)]
[0.5, 1.0, 1.0, 0.933, 0.75, 0.5, 0.25, 0.067]
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from synthdsl.train.errors import TrainError
from synthdsl.train.layer_decay import layer_scales
from synthdsl.train.recipe import Recipe


def make_optimizer(model, recipe: Recipe) -> torch.optim.Optimizer:
    """The recipe's optimizer over the model's trainable parameters: per-pattern options,
    layer-wise decay of the sources' rates (``layer_decay``), and no decay on 1-D
    parameters when ``decay_norm_bias`` is false."""
    groups = model.param_groups(base_lr=recipe.lr, weight_decay=recipe.weight_decay,
                                lr_scales=layer_scales(model, recipe.layer_decay),
                                decay_norm_bias=recipe.decay_norm_bias)
    if not groups:
        raise TrainError(f"spec '{model.graph.name}' has nothing to train: every parameter "
                         "is frozen", hint="unfreeze a part with `train PATTERN`, or add an "
                         "adapter with `adapt PATTERN with lora(rank=8)`")
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=recipe.lr, momentum=recipe.momentum)
    cls = torch.optim.AdamW if recipe.optimizer == "adamw" else torch.optim.Adam
    return cls(groups, lr=recipe.lr)


def lr_factor(recipe: Recipe, step: int, steps_per_epoch: int) -> float:
    """The learning-rate multiplier at optimizer step `step` (0-based) of a run of
    `steps_per_epoch` steps an epoch (under ``accum_steps=k``, a group of k batches is
    one step)."""
    total = recipe.epochs * steps_per_epoch
    warm = recipe.warmup_epochs * steps_per_epoch
    if step < warm:
        return (step + 1) / warm
    if recipe.schedule == "constant":
        return 1.0
    if recipe.schedule == "step":
        epoch = step // max(steps_per_epoch, 1)
        return 0.1 ** sum(epoch >= m for m in (recipe.epochs // 2, (3 * recipe.epochs) // 4)
                          if m > 0)
    progress = (step - warm) / max(total - warm, 1)
    return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def set_lr(opt: torch.optim.Optimizer, base_lrs: Sequence[float], factor: float) -> None:
    for g, lr in zip(opt.param_groups, base_lrs):
        g["lr"] = lr * factor
