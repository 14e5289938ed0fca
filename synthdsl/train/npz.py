"""``.npz`` data read with its sizes checked first: what each array's header claims, what
its zip record holds, and the total, before a byte is allocated.

``numpy.load`` trusts both: an ``.npy`` header claiming 12 GB is allocated before the
record is found short, and a 6 MB zip whose records inflate to 5.6 GB (a "zip bomb") is
inflated. Here the zip directory is read first: the records' uncompressed sizes together
may hold at most :data:`NPZ_MAX_BYTES` (``SYNTHDSL_MAX_DATA_BYTES`` in the environment
raises it), each array's header must describe exactly the bytes its record holds, object
arrays (which would need pickle) are refused, and each record is read into an array of
the size its header states, never further than the size the directory gives.

>>> import io, numpy as np
>>> buf = io.BytesIO(); np.savez(buf, x=np.arange(6).reshape(2, 3)); _ = buf.seek(0)
>>> read_npz(buf, "x.npz")["x"].tolist()
[[0, 1, 2], [3, 4, 5]]
"""

from __future__ import annotations

import math
import os
import zipfile
import zlib
from pathlib import Path
from typing import IO

import numpy as np
from numpy.lib import format as npy

from synthdsl.train.errors import DataError

#: The most bytes all arrays of one ``.npz`` may hold, uncompressed (8 GiB).
NPZ_MAX_BYTES = 8 * 2**30
#: The most arrays one ``.npz`` may hold.
NPZ_MAX_ARRAYS = 1024


def max_data_bytes() -> int:
    """:data:`NPZ_MAX_BYTES`, or ``SYNTHDSL_MAX_DATA_BYTES`` where the environment sets it."""
    raw = os.environ.get("SYNTHDSL_MAX_DATA_BYTES")
    if raw is None:
        return NPZ_MAX_BYTES
    try:
        value = int(raw)
    except ValueError:
        raise DataError(f"SYNTHDSL_MAX_DATA_BYTES must be a whole number of bytes, found "
                        f"{raw!r}") from None
    if value <= 0:
        raise DataError(f"SYNTHDSL_MAX_DATA_BYTES must be > 0, found {value}")
    return value


def read_npz(source: str | Path | IO[bytes], name: str | None = None) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` file (or file object), each checked against its record."""
    label = name or str(source)
    limit = max_data_bytes()
    try:
        with zipfile.ZipFile(source) as z:
            infos = [i for i in z.infolist() if i.filename.endswith(".npy")]
            if len(infos) > NPZ_MAX_ARRAYS:
                raise DataError(f"'{label}' holds {len(infos):,} arrays; at most "
                                f"{NPZ_MAX_ARRAYS:,} are read")
            total = sum(i.file_size for i in infos)
            if total > limit:
                raise DataError(
                    f"'{label}' unpacks to {total:,} bytes, more than the {limit:,} an .npz "
                    "may hold", hint="set SYNTHDSL_MAX_DATA_BYTES to read a larger file, or "
                    "split it")
            if any(i.flag_bits & 0x1 for i in infos):
                raise DataError(f"'{label}' is encrypted; an .npz of plain arrays is read")
            return {i.filename[:-4]: _read_array(z, i, label) for i in infos}
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, NotImplementedError,
            RuntimeError, zlib.error, OSError) as e:  # encrypted, a damaged deflate stream
        raise DataError(f"cannot read '{label}' as an .npz of arrays: {e}") from None


def _read_array(z: zipfile.ZipFile, info: zipfile.ZipInfo, label: str) -> np.ndarray:
    where = f"'{label}' array '{info.filename[:-4]}'"
    with z.open(info) as f:
        try:
            version = npy.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = npy.read_array_header_1_0(f, max_header_size=10_000)
            elif version in ((2, 0), (3, 0)):
                shape, fortran, dtype = npy.read_array_header_2_0(f, max_header_size=10_000)
            else:
                raise ValueError(f"unknown .npy version {version}")
        except (ValueError, SyntaxError, TypeError) as e:
            raise DataError(f"{where} has no readable .npy header: {e}") from None
        if dtype.hasobject:
            raise DataError(f"{where} holds Python objects ({dtype}); only numbers and text "
                            "are read (objects would need pickle)")
        header = f.tell()
        need = math.prod(shape) * dtype.itemsize
        held = info.file_size - header
        if need != held:
            raise DataError(f"{where} claims shape {list(shape)} of {dtype} ({need:,} bytes) "
                            f"but its record holds {max(held, 0):,} bytes")
        arr = np.empty(shape, dtype=dtype, order="F" if fortran else "C")
        view = memoryview(arr.reshape(-1, order="A").view(np.uint8)) if arr.size else None
        done = 0
        while view is not None and done < need:
            n = f.readinto(view[done:])
            if not n:
                raise DataError(f"{where} ends after {done:,} of its {need:,} bytes")
            done += n
        return arr
