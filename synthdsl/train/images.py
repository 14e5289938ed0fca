"""Labelled images in memory or on disk, and subsets of them that keep their indices.

A dataset yields ``(image, label)`` with the image a float tensor ``[C, H, W]`` in
``[0, 1]`` at the data's own size; a :class:`~synthdsl.train.preprocess.Preprocess` then
turns a batch into what a model takes. Where the images come from is
:mod:`synthdsl.train.data`.

Subsets keep every sample's index into the full split, so a cache keyed by index
stays valid: :meth:`ImageData.select_classes` keeps some classes and renumbers them
(digits 5–9 become 0–4), :meth:`ImageData.few_shot` keeps ``k`` labelled samples per
class (seeded) and can keep the rest unlabelled (label ``-1``) for distillation.

>>> import torch
>>> data = TensorImages("toy", torch.zeros(6, 1, 2, 2), torch.tensor([0, 1, 2, 0, 1, 2]),
...                     ["a", "b", "c"])
>>> kept = data.select_classes(["c", "a"])
>>> kept.classes, kept.targets.tolist(), kept.indices.tolist()
(['c', 'a'], [1, 0, 1, 0], [0, 2, 3, 5])
>>> kept.few_shot(1, seed=0).class_counts()
[1, 1]
"""

from __future__ import annotations

import contextlib
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from synthdsl.files import NotReadable, open_regular
from synthdsl.train.errors import DataError


class ImageData(Dataset):
    """Labelled images: ``data[i] -> (image [C, H, W] float in [0, 1], label)``.

    ``targets`` holds every label (``-1`` for an unlabelled sample), ``classes`` the
    class names, and ``indices`` each sample's position in the split it was taken
    from (what caches are keyed by).
    """

    def __init__(self, name: str, classes: Sequence[str], targets: torch.Tensor,
                 indices: torch.Tensor | None = None) -> None:
        self.name = name
        self.classes = list(classes)
        self.targets = targets.long()
        self.indices = torch.arange(len(targets)) if indices is None else indices.long()

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.image(i), int(self.targets[i])

    def image(self, i: int) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def images(self, positions: torch.Tensor) -> torch.Tensor:
        """A batch of images at these positions (in this dataset, not the split)."""
        return torch.stack([self.image(int(i)) for i in positions])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.image(0).shape)

    def class_counts(self) -> list[int]:
        """Labelled samples per class."""
        labelled = self.targets[self.targets >= 0]
        return torch.bincount(labelled, minlength=self.num_classes).tolist()

    def samples_text(self, n: int) -> str:
        """What `n` samples of this data are, for :meth:`describe`."""
        return f"{n} images {list(self.image_shape)}"

    def describe(self) -> str:
        if not self.num_classes:
            return f"{self.name}: {self.samples_text(len(self))}, unlabelled"
        counts = self.class_counts()
        unlabelled = int((self.targets < 0).sum())
        extra = f", {unlabelled} unlabelled" if unlabelled else ""
        return (f"{self.name}: {self.samples_text(len(self))}, "
                f"{self.num_classes} classes, {sum(counts)} labelled{extra}")

    # -- subsets --------------------------------------------------------------------

    def subset(self, positions: torch.Tensor, targets: torch.Tensor | None = None,
               classes: Sequence[str] | None = None, name: str | None = None) -> "ImageData":
        positions = torch.as_tensor(positions, dtype=torch.long)
        return _Subset(self, positions,
                       self.targets[positions] if targets is None else targets,
                       self.classes if classes is None else classes,
                       name or self.name)

    def select_classes(self, keep: Sequence[int | str]) -> "ImageData":
        """Keep the samples of some classes (by number or by name), renumbered 0..k-1 in
        the order given: ``select_classes([5, 6, 7, 8, 9])`` makes digit 5 class 0."""
        ids = []
        for c in keep:
            if isinstance(c, str) and (c in self.classes or not c.isdigit()):
                if c not in self.classes:
                    raise DataError(f"{self.name} has no class '{c}'",
                                    hint="its classes: " + ", ".join(self.classes))
                ids.append(self.classes.index(c))
            else:
                ids.append(int(c))
        bad = [c for c in ids if not 0 <= c < self.num_classes]
        if bad:
            raise DataError(f"{self.name} has classes 0..{self.num_classes - 1}, not {bad[0]}")
        if len(set(ids)) != len(ids):
            raise DataError("a class is selected twice")
        remap = torch.full((self.num_classes + 1,), -1, dtype=torch.long)
        for new, old in enumerate(ids):
            remap[old] = new
        new_targets = remap[self.targets]  # -1 stays -1 (index -1 is the extra slot)
        keep_mask = new_targets >= 0
        positions = torch.nonzero(keep_mask).flatten()
        names = [self.classes[c] for c in ids]
        return self.subset(positions, new_targets[positions], names,
                           f"{self.name}[{','.join(names)}]")

    def few_shot(self, k: int, seed: int = 0, keep_unlabelled: bool = False) -> "ImageData":
        """``k`` labelled samples per class, drawn with `seed`; with `keep_unlabelled` the
        other samples stay, labelled -1 (a transfer set for distillation)."""
        if k <= 0:
            raise DataError(f"--shots must be a whole number > 0, not {k}")
        rng = np.random.default_rng(seed)
        chosen = []
        for c in range(self.num_classes):
            pos = torch.nonzero(self.targets == c).flatten().numpy()
            if len(pos) < k:
                raise DataError(f"{self.name} has {len(pos)} samples of class "
                                f"'{self.classes[c]}', fewer than {k}")
            chosen.extend(rng.choice(pos, size=k, replace=False).tolist())
        chosen_t = torch.tensor(sorted(chosen), dtype=torch.long)
        tag = f"{self.name}, {k} per class (seed {seed})"
        if not keep_unlabelled:
            return self.subset(chosen_t, name=tag)
        targets = torch.full_like(self.targets, -1)
        targets[chosen_t] = self.targets[chosen_t]
        return self.subset(torch.arange(len(self)), targets,
                           name=tag + " + the rest unlabelled")


class _Subset(ImageData):
    def __init__(self, base: ImageData, positions: torch.Tensor, targets: torch.Tensor,
                 classes: Sequence[str], name: str) -> None:
        super().__init__(name, classes, targets, base.indices[positions])
        self.base, self.positions = base, positions

    def image(self, i: int) -> torch.Tensor:
        return self.base.image(int(self.positions[i]))

    def images(self, positions: torch.Tensor) -> torch.Tensor:
        return self.base.images(self.positions[positions])

    def samples_text(self, n: int) -> str:
        return self.base.samples_text(n)


class TensorImages(ImageData):
    """Images held in memory as one tensor ``[N, C, H, W]`` (uint8, or float in [0, 1])."""

    def __init__(self, name: str, images: torch.Tensor, targets: torch.Tensor,
                 classes: Sequence[str]) -> None:
        super().__init__(name, classes, targets)
        self.data = images

    def image(self, i: int) -> torch.Tensor:
        return to_float(self.data[i])

    def images(self, positions: torch.Tensor) -> torch.Tensor:
        return to_float(self.data[positions])


#: Most bytes one image file may have.
IMAGE_MAX_BYTES = 256 * 2**20
#: Most pixels one image may have (PIL's own default bound): larger is refused from the
#: header, before a pixel is decoded, whatever the file's size (a "decompression bomb").
IMAGE_MAX_PIXELS = 89_478_485


def _unreadable(path: Path, index: int | None, why: str) -> DataError:
    sample = f" (sample {index})" if index is not None else ""
    return DataError(f"cannot read image '{path}'{sample}: {why}",
                     hint="remove or replace the file", code="D005")


def _why(e: BaseException) -> str:
    if isinstance(e, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return "it claims more pixels than any image may have (a decompression bomb?)"
    if isinstance(e, UnidentifiedImageError):
        return "it is not an image PIL can read (unknown format, or damaged)"
    text = (getattr(e, "strerror", None) or str(e)).strip().splitlines()
    said = (text[0][:200] if text else "") or type(e).__name__
    return f"it is damaged or cut short ({said})"


@contextlib.contextmanager
def open_image(path: Path, index: int | None = None) -> Iterator[Image.Image]:
    """The image at `path`, open (its header read, no pixel decoded) where it is a regular file
    of at most :data:`IMAGE_MAX_BYTES` bytes and :data:`IMAGE_MAX_PIXELS` pixels; anything that
    goes wrong reading it while the block runs is D005 naming the file (and the sample)."""
    try:
        with open_regular(path, IMAGE_MAX_BYTES, "image file") as f, Image.open(f) as im:
            w, h = im.size
            if w * h > IMAGE_MAX_PIXELS:
                raise _unreadable(path, index, f"it claims {w}x{h} pixels, more than the "
                                  f"{IMAGE_MAX_PIXELS:,} an image may have")
            yield im
    except DataError:
        raise
    except FileNotFoundError:
        raise _unreadable(path, index, "the file does not exist (any more)") from None
    except NotReadable as e:  # a FIFO, a device, too large: never opened or read
        raise _unreadable(path, index, str(e).replace(f"image file '{path}' ", "it ", 1)
                          ) from None
    except Exception as e:  # noqa: BLE001 - PIL decoding bytes from anywhere: any failure
        raise _unreadable(path, index, _why(e)) from None  # is about the file


def check_image_files(files: Sequence[Path]) -> None:
    """Every file a readable image by its header (format, size, pixels), before training
    starts: D005 names the first that is not. A file's pixels are decoded only when read."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        for i, path in enumerate(files):
            with open_image(path, i):
                pass


class FolderImages(ImageData):
    """Image files read on demand with PIL, resized to `size` so that they batch. Every file's
    header is checked when the dataset is made (:func:`check_image_files`)."""

    def __init__(self, name: str, files: Sequence[Path], targets: torch.Tensor,
                 classes: Sequence[str], size: tuple[int, int] | None = None,
                 channels: int = 3) -> None:
        super().__init__(name, classes, targets)
        self.files = list(files)
        self.size, self.channels = size, channels
        check_image_files(self.files)

    def images(self, positions: torch.Tensor) -> torch.Tensor:
        """Decoded in a few threads (PIL releases the interpreter lock while it decodes)."""
        if len(positions) < 8:
            return super().images(positions)
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            return torch.stack(list(pool.map(self.image, [int(i) for i in positions])))

    def image(self, i: int) -> torch.Tensor:
        with open_image(self.files[i], i) as im:
            im = im.convert("L" if self.channels == 1 else "RGB")
            if self.size is not None and im.size != (self.size[1], self.size[0]):
                im = im.resize((self.size[1], self.size[0]), Image.Resampling.BILINEAR)
            arr = np.asarray(im, dtype=np.uint8)
        t = torch.from_numpy(arr.copy())
        t = t.unsqueeze(0) if t.dim() == 2 else t.permute(2, 0, 1)
        return t.float() / 255.0


def to_float(t: torch.Tensor) -> torch.Tensor:
    return t.float() / 255.0 if t.dtype == torch.uint8 else t.float()
