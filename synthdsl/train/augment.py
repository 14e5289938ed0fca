"""Mixup, CutMix and RandAugment through timm's own data tools.

* ``mixup=0.8``, ``cutmix=1.0``: :class:`timm.data.Mixup` mixes each training batch (its
  images in [0, 1], before the model's preprocessing, so the frozen prefix and a teacher
  see the mixed images too) and gives soft targets, label smoothing folded in; the
  cross-entropy terms of the objective then use them (timm's soft-target cross-entropy,
  ``-Σ target · log_softmax(scores)``). timm mixes batches of an even size only: an odd
  last batch of an epoch is left unmixed, with its targets smoothed alike.
* ``randaugment="rand-m9-mstd0.5"``: timm's ``rand_augment_transform`` of that policy,
  applied to each training image as a PIL image (grey images as RGB, then grey again).

Both draw from the random streams timm uses (NumPy's and Python's), seeded per batch from
the recipe's seed, the epoch and the step, and put back afterwards: an epoch is the same
whether it ran through or was resumed.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

from synthdsl.train.errors import TrainError

class _Seeded:
    """NumPy's and Python's global random streams seeded for one batch, then restored."""

    def __init__(self, seed: int) -> None:
        self.seed = seed % (2 ** 32)

    def __enter__(self) -> None:
        self.np_state, self.py_state = np.random.get_state(), random.getstate()
        np.random.seed(self.seed)
        random.seed(self.seed)

    def __exit__(self, *exc: Any) -> None:
        np.random.set_state(self.np_state)
        random.setstate(self.py_state)


class Mixer:
    """timm's Mixup / CutMix of one training batch, and its soft targets."""

    def __init__(self, mixup: float, cutmix: float, smoothing: float, num_classes: int):
        from timm.data import Mixup
        from timm.data.mixup import mixup_target

        self.mix = Mixup(mixup_alpha=mixup, cutmix_alpha=cutmix, label_smoothing=smoothing,
                         num_classes=num_classes)
        self._target = mixup_target
        self.smoothing, self.num_classes = smoothing, num_classes

    def __call__(self, x: torch.Tensor, y: torch.Tensor, seed: int
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        if len(x) % 2:  # timm's Mixup takes even batches only
            return x, self._target(y, self.num_classes, 1.0, self.smoothing)
        with _Seeded(seed):
            return self.mix(x.clone(), y)


class RandAugment:
    """timm's RandAugment of every image of a batch of [0, 1] images [B, C, H, W]."""

    def __init__(self, policy: str, size: tuple[int, int]) -> None:
        from timm.data.auto_augment import rand_augment_transform

        try:
            self.transform = rand_augment_transform(policy, {
                "translate_const": int(min(size) * 0.45), "img_mean": (124, 116, 104)})
        except (AssertionError, ValueError, KeyError, IndexError) as e:
            raise TrainError(f"randaugment '{policy}' is not a RandAugment policy timm reads "
                             f"({type(e).__name__}: {e})",
                             hint="e.g. rand-m9-mstd0.5 or rand-m7-n2") from None

    def __call__(self, x: torch.Tensor, seed: int) -> torch.Tensor:
        from PIL import Image

        out = torch.empty_like(x)
        with _Seeded(seed):
            for i, image in enumerate(x):
                grey = image.shape[0] == 1
                arr = (image.detach().cpu().clamp(0, 1) * 255).round().byte()
                arr = arr.expand(3, *arr.shape[1:]) if grey else arr
                pil = Image.fromarray(arr.permute(1, 2, 0).numpy(), "RGB")
                got = torch.from_numpy(np.asarray(self.transform(pil), dtype=np.uint8).copy())
                got = got.permute(2, 0, 1).float() / 255
                out[i] = got.mean(0, keepdim=True) if grey else got
        return out


def batch_augmenters(recipe, data, shape: tuple[int, ...] | None
                     ) -> tuple[Mixer | None, RandAugment | None]:
    """What the recipe asks to do to each training batch: a Mixer, a RandAugment, or None.
    `shape` is the data's image shape [C, H, W] (None: named inputs, which neither takes)."""
    mixing = bool(recipe.mixup or recipe.cutmix)
    if not (mixing or recipe.randaugment):
        return None, None
    if shape is None or len(shape) != 3 or shape[0] not in (1, 3):
        raise TrainError("mixup, cutmix and randaugment take one grey or RGB image input, "
                         f"and {data.name} is not that",
                         hint="drop them for this data, or use --augment PIXELS")
    if mixing and not bool((data.targets >= 0).all()):
        raise TrainError("mixup and cutmix mix labels, and some training samples have none",
                         hint="drop --unlabelled, or mixup/cutmix")
    mixer = Mixer(recipe.mixup, recipe.cutmix, recipe.label_smoothing,
                  data.num_classes) if mixing else None
    augmenter = RandAugment(recipe.randaugment, tuple(shape[1:])) if recipe.randaugment \
        else None
    return mixer, augmenter
