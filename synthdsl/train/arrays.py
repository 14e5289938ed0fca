"""Image and label arrays checked before they are trained on: what an ``.npz`` holds is data
from anywhere, and a NaN, a label too many or a string array must stop at the file with its
name and the sample, not train to ``loss nan`` or fail deep inside torch.

* D002: an image with a NaN or an infinity (the first such sample named);
* D003: images and labels of different lengths;
* D004: an array of the wrong kind or range: images that are not real numbers (complex,
  strings, dates), integer images outside 0..255, float images outside [0, 1], labels that
  are not whole numbers ≥ 0, one per image.

>>> import numpy as np
>>> x = np.zeros((3, 2, 2), np.float32); x[1, 0, 0] = np.nan
>>> check_images_and_labels(x, np.arange(3), "d.npz", "x", "y")
Traceback (most recent call last):
  ...
synthdsl.train.errors.DataError: error[D002]: 'd.npz': image x[1] holds NaN; images must be finite numbers
"""

from __future__ import annotations

import numpy as np

from synthdsl.train.errors import DataError

#: Samples checked at a time (the checks need a temporary array as large as a chunk).
CHUNK = 4096


_KINDS = {"c": "complex ", "U": "string ", "S": "byte-string ", "O": "object ",
          "M": "date ", "m": "time-span ", "V": "record "}


def _first(bad_per_sample: np.ndarray, start: int) -> int | None:
    hits = np.flatnonzero(bad_per_sample)
    return int(hits[0]) + start if len(hits) else None


def _per_sample(mask: np.ndarray) -> np.ndarray:
    return mask.reshape(len(mask), -1).any(axis=1) if mask.ndim > 1 else mask


def check_labels(y: np.ndarray, n_images: int, where: str, xname: str, yname: str) -> None:
    """Labels: one whole number ≥ 0 per image."""
    if y.ndim != 1:
        raise DataError(f"'{where}': labels {yname} must be one whole number per image, found "
                        f"an array of shape {list(y.shape)}", code="D004")
    if y.dtype.kind not in "iu":
        raise DataError(f"'{where}': labels {yname} must be whole numbers, found {y.dtype} "
                        "values", hint="store the class of each image as an integer 0, 1, ...",
                        code="D004")
    if len(y) != n_images:
        raise DataError(f"'{where}': {xname} has {n_images} images but {yname} has {len(y)} "
                        "labels; expected one label per image", code="D003")
    if y.dtype.kind == "i" and len(y) and int(y.min()) < 0:
        i = int(np.flatnonzero(y < 0)[0])
        raise DataError(f"'{where}': label {yname}[{i}] is {int(y[i])}; labels must be whole "
                        "numbers ≥ 0 (class 0, 1, ...)", code="D004")


def check_images(x: np.ndarray, where: str, xname: str) -> None:
    """Images: real numbers; integers in 0..255, floats finite and in [0, 1]."""
    kind = x.dtype.kind
    if kind == "b":
        return
    if kind not in "iuf":
        found = _KINDS.get(kind, "")
        raise DataError(f"'{where}': images {xname} must be real numbers (integers 0..255 or "
                        f"floats in [0, 1]), found {found}{x.dtype} values", code="D004")
    for start in range(0, len(x), CHUNK):
        part = x[start:start + CHUNK]
        if kind == "f":
            i = _first(_per_sample(~np.isfinite(part)), start)
            if i is not None:
                bad = x[i][~np.isfinite(x[i])].flat[0]
                what = "NaN" if np.isnan(bad) else ("+inf" if bad > 0 else "-inf")
                raise DataError(f"'{where}': image {xname}[{i}] holds {what}; images must be "
                                "finite numbers", code="D002")
            lo, hi, rule = 0.0, 1.0, "floats must lie in [0, 1]"
        else:
            lo, hi, rule = 0, 255, "integers must lie in 0..255"
        i = _first(_per_sample((part < lo) | (part > hi)), start)
        if i is not None:
            values = x[i]
            found = values[(values < lo) | (values > hi)].flat[0]
            raise DataError(f"'{where}': image {xname}[{i}] holds {found.item():g}; image "
                            f"{rule}", hint="store images as uint8 0..255, or as floats "
                            "scaled into [0, 1]", code="D004")


def check_images_and_labels(x: np.ndarray, y: np.ndarray, where: str, xname: str,
                            yname: str) -> None:
    """The checks of :func:`check_labels` and :func:`check_images`, labels first (a length
    mismatch says more than a bad pixel of an image without a label)."""
    if x.ndim == 0:
        raise DataError(f"'{where}': images {xname} must be an array of images, found one "
                        "value", code="D004")
    check_labels(y, len(x), where, xname, yname)
    if 0 in x.shape[1:]:
        raise DataError(f"'{where}': images {xname} have shape {list(x.shape)}; an image "
                        "needs at least one pixel in each dimension", code="D004")
    check_images(x, where, xname)
