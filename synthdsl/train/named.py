"""Samples of named inputs: what a spec with several inputs, or inputs other than one image,
trains on; and the ``.npz`` of one array per input that holds them.

A :class:`NamedData` yields, for a batch of positions, one tensor per input name
(``{"tokens": [B, T] int64, "image": [B, C, H, W] float in [0, 1], ...}``) and the
labels (``-1`` where a sample has none: a contrastive spec needs none). Its columns are
tensors in memory, images read from files, or token ids padded per batch
(:mod:`synthdsl.train.captions`).

An ``.npz`` for a spec holds an array named after each input and, optionally, labels
``y`` (or ``labels``) and class names ``classes``; or split arrays ``tokens_train`` /
``tokens_test``, ``y_train`` / ``y_test``. Every array is checked against its input
before anything trains (:func:`check_input_array`):

* D001: an input with no array (the arrays the file holds named);
* D003: arrays of different lengths;
* D004: an element type that cannot become the input's: floats for an integer input,
  integers other than 0/1 for a bool input, ids outside what the input's Embedding takes,
  anything but numbers; an image input's arrays follow the image rules
  (:mod:`synthdsl.train.arrays`: 0..255 integers or floats in [0, 1]);
* D006: an array whose rank, or a fixed size, differs from its input's.

>>> import numpy as np
>>> from synthdsl.train.feed import Feed, InputSpec
>>> check_input_array(np.zeros((2, 5), np.float32), InputSpec("ids", ("B", 5), "int64"),
...                   "p.npz", "ids")
Traceback (most recent call last):
  ...
synthdsl.train.errors.DataError: error[D004]: 'p.npz': array 'ids' holds float32 values; \
input 'ids' ([B, 5] int64) takes integers, and floats are not rounded into them
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, Sequence

import numpy as np
import torch

from synthdsl.train.arrays import check_images, check_labels
from synthdsl.train.data import (BUILTIN, TEST_FRACTION, class_names, hwc_to_chw, npz_arrays,
                                 split_positions)
from synthdsl.train.errors import DataError
from synthdsl.train.feed import Feed, InputSpec
from synthdsl.train.images import ImageData, to_float

#: Array names an ``.npz`` may give the labels.
LABEL_NAMES = ("y", "labels", "targets")


class Column(Protocol):
    """One input's values for every sample: a batch of them by position."""

    def take(self, positions: torch.Tensor) -> torch.Tensor: ...

    def describe(self) -> str: ...


class TensorColumn:
    """Values held as one tensor ``[N, ...]``; images (uint8 or float) read into [0, 1]."""

    def __init__(self, values: torch.Tensor, image: bool = False) -> None:
        self.values, self.image = values, image

    def take(self, positions: torch.Tensor) -> torch.Tensor:
        got = self.values[positions]
        return to_float(got) if self.image else got

    def describe(self) -> str:
        dtype = str(self.values.dtype).removeprefix("torch.")
        scale = (" 0..255" if dtype == "uint8" else " in [0, 1]") if self.image else ""
        return f"{list(self.values.shape[1:])} {dtype}{scale}"


class ImagesColumn:
    """Images an :class:`~synthdsl.train.images.ImageData` reads (files, on demand)."""

    def __init__(self, data: ImageData) -> None:
        self.data = data

    def take(self, positions: torch.Tensor) -> torch.Tensor:
        return self.data.images(positions)

    def describe(self) -> str:
        return f"images {list(self.data.image_shape)}"


class NamedData(ImageData):
    """Samples of named inputs: ``images(positions)`` gives ``{name: batch}``."""

    def __init__(self, name: str, columns: dict[str, Column], targets: torch.Tensor,
                 classes: Sequence[str]) -> None:
        super().__init__(name, classes, targets)
        self.columns = dict(columns)

    def images(self, positions: torch.Tensor) -> dict[str, torch.Tensor]:
        positions = torch.as_tensor(positions, dtype=torch.long)
        return {k: c.take(positions) for k, c in self.columns.items()}

    def image(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in self.images(torch.tensor([i])).items()}

    def samples_text(self, n: int) -> str:
        return f"{n} samples of " + ", ".join(f"{k} {c.describe()}"
                                              for k, c in self.columns.items())


def check_input_array(arr: np.ndarray, spec: InputSpec, where: str, aname: str
                      ) -> np.ndarray:
    """`arr` checked against input `spec` and made what a batch of it holds: images as
    ``[N, C, H, W]`` uint8 or float32, other values in the input's element type."""
    said = f"input '{spec.name}' ({spec.shape} {spec.dtype})"
    kind = arr.dtype.kind
    if kind not in "biuf":
        raise DataError(f"'{where}': array '{aname}' holds {arr.dtype} values; {said} takes "
                        "numbers", code="D004")
    if spec.is_image:
        if arr.ndim not in (3, 4):
            raise DataError(f"'{where}': array '{aname}' has shape {list(arr.shape)}; {said} "
                            "takes images [N, H, W], [N, H, W, C] or [N, C, H, W]",
                            code="D006")
        check_images(arr, where, aname)
        arr = hwc_to_chw(arr, where)
        return arr.astype(np.uint8) if kind in "iub" else arr.astype(np.float32)
    if arr.ndim != len(spec.dims):
        raise DataError(f"'{where}': array '{aname}' has shape {list(arr.shape)} ({arr.ndim} "
                        f"dimensions); {said} has {len(spec.dims)}", code="D006",
                        hint="one row per sample, then the input's own dimensions")
    for i in range(1, arr.ndim):
        want = spec.fixed(i)
        if want is not None and arr.shape[i] != want:
            raise DataError(f"'{where}': array '{aname}' has shape {list(arr.shape)}; {said} "
                            f"needs {want} in dimension {i}, found {arr.shape[i]}",
                            code="D006")
    if spec.is_integer or spec.dtype == "bool":
        _check_whole(arr, spec, where, aname, said)
    elif kind == "f" and arr.size and not np.isfinite(arr).all():
        i = int(np.flatnonzero(~np.isfinite(arr.reshape(len(arr), -1)).any(1))[0])
        raise DataError(f"'{where}': {aname}[{i}] holds a NaN or an infinity; {said} takes "
                        "finite numbers", code="D002")
    return arr.astype(spec.dtype if spec.dtype not in ("bfloat16", "float16") else "float32")


def _check_whole(arr: np.ndarray, spec: InputSpec, where: str, aname: str, said: str) -> None:
    """Integers (or bools) for an integer or bool input, in the range it takes."""
    if arr.dtype.kind == "f":
        raise DataError(f"'{where}': array '{aname}' holds {arr.dtype} values; {said} takes "
                        f"{'integers' if spec.is_integer else '0/1 or booleans'}, and floats "
                        "are not rounded into them",
                        hint="store the values as integers (token ids, positions)"
                        if spec.is_integer else "store the mask as bool (or 0/1 integers)",
                        code="D004")
    if not arr.size or arr.dtype.kind == "b":
        return
    lo, hi = int(arr.min()), int(arr.max())
    if spec.dtype == "bool":
        low, high, rule = 0, 1, "a bool input takes 0 and 1 only"
    elif spec.bound is not None:
        low, high, rule = 0, spec.bound - 1, (f"it feeds an Embedding of {spec.bound} rows, so "
                                              f"ids must lie in 0..{spec.bound - 1}")
    else:
        info = np.iinfo(spec.dtype)
        low, high, rule = int(info.min), int(info.max), f"{spec.dtype} holds no more"
    if lo < low or hi > high:
        bad = lo if lo < low else hi
        i = int(np.flatnonzero(((arr < low) | (arr > high)).reshape(len(arr), -1).any(1))[0])
        raise DataError(f"'{where}': {aname}[{i}] holds {bad}; {said}: {rule}", code="D004")


def fixed_split(y: np.ndarray, labelled: bool, split: str) -> np.ndarray:
    """The positions of `split` in data without its own split: 80/20 per class when it is
    `labelled`, else of a seeded permutation; "all" keeps every position."""
    if split == "all":
        return np.arange(len(y))
    if labelled:
        train, test = split_positions(y, TEST_FRACTION)
    else:
        perm = np.random.default_rng(0).permutation(len(y))
        n_test = int(round(len(y) * TEST_FRACTION)) if len(y) > 1 else 0
        train, test = np.sort(perm[n_test:]), np.sort(perm[:n_test])
    return train if split == "train" else test


def load_named(source: str, split: str, feed: Feed, tokenizer: Path | None = None
               ) -> NamedData:
    """The `split` of `source` for a spec of the inputs `feed` describes: an ``.npz`` of
    one array per input, or a folder with a captions file; anything else is D001 saying
    what would fit."""
    from synthdsl.train.captions import caption_file, load_captions

    path = Path(source)
    declared = ", ".join(s.describe() for s in feed.specs)
    fits = ("an .npz with one array per input (" + ", ".join(s.name for s in feed.specs)
            + ") and labels y" + (", or a folder of images with captions.tsv"
                                  if any(s.is_integer for s in feed.specs) else ""))
    if source in BUILTIN or (path.is_dir() and caption_file(path) is None):
        raise DataError(f"'{source}' holds one image per sample, which fills one image "
                        f"input [B, C, H, W]; the spec declares {declared}",
                        hint=f"give {fits}")
    if path.is_dir():
        return load_captions(path, split, feed, tokenizer)
    if path.suffix == ".npz" and path.is_file():
        return named_npz(npz_arrays(path), path.name, split, feed.specs)
    if not path.exists():
        raise DataError(f"no dataset '{source}'", hint=f"give {fits}")
    raise DataError(f"'{source}' is neither an .npz file nor a folder with captions",
                    hint=f"give {fits}")


def _split_of(arrays: dict[str, np.ndarray], names: Sequence[str], split: str
              ) -> tuple[str, np.ndarray] | None:
    """The array of the first of `names` in `split` (``name_train``, or both splits joined
    for "all"); None if the file has none."""
    for n in names:
        parts = [f"{n}_{s}" for s in (("train", "test") if split == "all" else (split,))]
        if all(p in arrays for p in parts):
            return parts[0] if len(parts) == 1 else n, np.concatenate(
                [np.asarray(arrays[p]) for p in parts])
    return None


def named_npz(arrays: dict[str, np.ndarray], fname: str, split: str,
              specs: Sequence[InputSpec]) -> NamedData:
    """The `split` of an ``.npz``'s arrays (read by :func:`synthdsl.train.npz.read_npz`) for a
    spec of inputs `specs`: see the module docstring."""
    by_split = any(f"{s.name}_train" in arrays for s in specs)
    got: dict[str, tuple[str, np.ndarray]] = {}
    for s in specs:
        if by_split:
            found = _split_of(arrays, [s.name], split)
        else:
            found = (s.name, np.asarray(arrays[s.name])) if s.name in arrays else None
        if found is None:
            want = f"{s.name}_train and {s.name}_test" if by_split else s.name
            raise DataError(f"'{fname}' has no array {want} for input '{s.name}' "
                            f"({s.shape} {s.dtype}); it holds {', '.join(sorted(arrays))}",
                            hint="name one array after each input ("
                            + ", ".join(x.name for x in specs) + ") and the labels y")
        got[s.name] = found
    labels = _split_of(arrays, LABEL_NAMES, split) if by_split else next(
        ((n, np.asarray(arrays[n])) for n in LABEL_NAMES if n in arrays), None)
    first, n = specs[0].name, len(got[specs[0].name][1])
    for name, (aname, arr) in got.items():
        if len(arr) != n:
            raise DataError(f"'{fname}': array '{got[first][0]}' has {n} samples but "
                            f"'{aname}' has {len(arr)}; every input's array needs one row "
                            "per sample", code="D003")
    if labels is not None:
        check_labels(labels[1], n, fname, got[first][0], labels[0])
        y = labels[1].astype(np.int64)
    else:
        y = np.full(n, -1, dtype=np.int64)
    # checked as stored, so that a message's index is the file's
    checked = {s.name: check_input_array(got[s.name][1], s, fname, got[s.name][0])
               for s in specs}
    if not by_split:
        pos = fixed_split(y, labels is not None, split)
        checked = {k: arr[pos] for k, arr in checked.items()}
        y = y[pos]
    columns: dict[str, Column] = {
        s.name: TensorColumn(torch.from_numpy(np.ascontiguousarray(checked[s.name])),
                             image=s.is_image) for s in specs}
    classes = class_names(arrays, y, fname) if labels is not None else []
    return NamedData(f"{fname}/{split}", columns, torch.from_numpy(y), classes)
