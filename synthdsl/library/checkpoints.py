"""Checkpoint I/O, all of it: headers, tensors, state dicts, digests, and readers.

A checkpoint is only ever read as tensors: safetensors files through their
header and byte ranges, `.pt`/`.pth` files through
``torch.load(weights_only=True, mmap=True)``, which never unpickles an object.
A safetensors header is size-checked before it is parsed (a valid header of a
million entries costs seconds and gigabytes), and every entry must lie inside
the file.

A :class:`TensorReader` serves tensors by key without loading the whole file,
so assembling a model from large checkpoints costs about the memory of what it
keeps. A :class:`ReaderCache` (one per run, on the graph's
:class:`~synthdsl.library.registry.Sources`) opens each file once: the check
reads its shapes from the reader the compiler then reads tensors from. It is
keyed by path, size and modification time, so a file changed between the two
is opened afresh (and its changes are caught).
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import pickle
import re
import struct
import zipfile
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from synthdsl.files import WEIGHTS_MAX_BYTES, regular_file

#: A safetensors header larger than this is refused before it is parsed.
MAX_HEADER_BYTES = 64 * 1024 * 1024
#: A checkpoint with more tensors than this is refused.
MAX_TENSORS = 100_000
#: Top-level keys under which training scripts commonly nest the state dict.
_NESTED_KEYS = ("state_dict", "model", "module", "model_state_dict", "state_dict_ema")

#: Bytes per element of each safetensors dtype, and the torch dtype it reads as.
SAFETENSORS_DTYPES = {
    "F64": (8, torch.float64), "F32": (4, torch.float32), "F16": (2, torch.float16),
    "BF16": (2, torch.bfloat16), "I64": (8, torch.int64), "I32": (4, torch.int32),
    "I16": (2, torch.int16), "I8": (1, torch.int8), "U8": (1, torch.uint8),
    "BOOL": (1, torch.bool), "F8_E4M3": (1, torch.float8_e4m3fn),
    "F8_E5M2": (1, torch.float8_e5m2),
}


def weights_format(path: Path) -> str:
    """``"safetensors"``, ``"torch"`` or ``"sharded"`` (an index of shards), by the suffix."""
    suffix = Path(path).suffix.lower()
    if suffix == ".safetensors":
        return "safetensors"
    if suffix in (".pt", ".pth", ".bin", ".ckpt"):
        return "torch"
    if Path(path).name.lower().endswith(".index.json"):
        return "sharded"
    raise ValueError(f"'{Path(path).name}' is not a .safetensors, .pt or .pth file, nor the "
                     "index.json of a sharded checkpoint")


# ---- safetensors ---------------------------------------------------------------------


def _read_header(f, size: int) -> tuple[int, dict, dict]:
    """(header length, tensor entries, ``__metadata__``) of an open safetensors file,
    validated before and after
    parsing: absurd sizes and entry counts are refused before the JSON is parsed, and every
    tensor's byte range must lie inside the file and match its shape and dtype."""
    raw = f.read(8)
    if len(raw) < 8:
        raise ValueError("the file is too short to be safetensors" if raw or size
                         else "the file is empty")
    (n,) = struct.unpack("<Q", raw)
    if n > MAX_HEADER_BYTES or n > size - 8:
        raise ValueError(f"its header claims {n:,} bytes (the file has {size:,}); "
                         "the file is truncated or not safetensors")
    text = f.read(n)
    entries = text.count(b'"data_offsets"')
    if entries > MAX_TENSORS:
        raise ValueError(f"its header lists {entries:,} tensors (the limit is {MAX_TENSORS:,})")
    try:
        header = json.loads(text)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: `[` x 100,000
        raise ValueError("its header is not valid JSON: the file is damaged or not "
                         "safetensors") from None
    if not isinstance(header, dict):
        raise ValueError("its header is not a JSON object")
    metadata = header.pop("__metadata__", None)
    if metadata is not None and not (isinstance(metadata, dict) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())):
        raise ValueError("its __metadata__ is not a table of strings: the file is damaged or "
                         "not safetensors")
    data = size - 8 - n
    for key, entry in header.items():
        try:
            width, _ = SAFETENSORS_DTYPES[entry["dtype"]]
            shape = [int(d) for d in entry["shape"]]
            start, end = (int(o) for o in entry["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"its header entry '{key}' has no valid dtype, shape and "
                             "data_offsets") from None
        count = 1
        for d in shape:
            if d < 0:
                raise ValueError(f"its header gives '{key}' a negative dimension")
            count *= d
        if not 0 <= start <= end <= data:
            raise ValueError(f"'{key}' lies outside the file (bytes {start:,} to {end:,} of "
                             f"{data:,}): the file is truncated")
        if end - start != count * width:
            raise ValueError(f"'{key}' takes {end - start:,} bytes but its shape {shape} "
                             f"needs {count * width:,}")
    return n, header, metadata if isinstance(metadata, dict) else {}


def safetensors_metadata(path: Path) -> dict[str, str]:
    """The ``__metadata__`` table of a safetensors file (its header validated first)."""
    regular_file(path, WEIGHTS_MAX_BYTES)  # a FIFO or a device is refused, not opened
    size = Path(path).stat().st_size
    with open(path, "rb") as f:
        return _read_header(f, size)[2]


def _read_entry(f, offset: int, key: str, entry: dict) -> torch.Tensor:
    width, dtype = SAFETENSORS_DTYPES[entry["dtype"]]
    start, end = entry["data_offsets"]
    buf = torch.empty(end - start, dtype=torch.uint8)
    f.seek(offset + start)
    if f.readinto(memoryview(buf.numpy())) != end - start:
        raise ValueError(f"'{key}' is cut short: the file is truncated")
    return buf.view(dtype).reshape(entry["shape"])


# ---- torch files ---------------------------------------------------------------------


def sniff(path: Path) -> str | None:
    """What a file really is, when its name says otherwise."""
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError:
        return None
    if not head:
        return "the file is empty"
    if len(head) == 9 and head[8:9] == b"{":
        n = struct.unpack("<Q", head[:8])[0]
        if 0 < n < MAX_HEADER_BYTES:
            return "it is a safetensors file; name it .safetensors"
    return None


class _Inert:
    """What :class:`_RecordLister` makes of every global and call: nothing runs."""

    def __init__(self, *args, **kwargs) -> None:
        pass

    def __call__(self, *args, **kwargs) -> "_Inert":
        return _Inert()

    def __setstate__(self, state) -> None:
        pass

    __setitem__ = append = extend = __setstate__


class _RecordLister(pickle.Unpickler):
    """The storages a checkpoint's ``data.pkl`` names (record key -> bytes it needs); every
    global is an inert placeholder, so no code ever runs."""

    def __init__(self, f) -> None:
        super().__init__(f)
        self.storages: dict[str, int] = {}

    def find_class(self, module: str, name: str) -> _Inert:
        found = _Inert()
        found.name = name
        return found

    def persistent_load(self, pid):
        if isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage":
            dtype = torch.storage._get_dtype_from_pickle_storage_type(pid[1].name)
            need = int(pid[4]) * torch.empty((), dtype=dtype).element_size()
            self.storages[str(pid[2])] = max(self.storages.get(str(pid[2]), 0), need)
        return _Inert()


def zip_records(path: Path) -> bool | None:
    """Whether a zip-format `.pt` file may be memory-mapped (None: not such a file).

    A memory map reads a tensor where its record starts, as many bytes as the tensor needs:
    a compressed record would read as its compressed bytes, a short one on into its
    neighbours. So the zip directory is read first: a record of another size than its
    tensor is refused (ValueError); compressed records answer False (load them without
    mmap, which decompresses)."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError):
        return None
    with archive:
        infos = archive.infolist()
        pkl = [i for i in infos if i.filename.count("/") == 1
               and i.filename.endswith("/data.pkl")]
        if len(pkl) != 1:
            return None
        prefix = pkl[0].filename[:-len("data.pkl")] + "data/"
        records = {i.filename[len(prefix):]: i for i in infos if i.filename.startswith(prefix)}
        lister = _RecordLister(io.BytesIO(archive.read(pkl[0])))
        try:
            lister.load()
        except Exception:  # noqa: BLE001 - torch.load says what is wrong with the table
            return None
    for key, need in lister.storages.items():
        size = records[key].file_size if key in records else None
        if size != need:
            raise ValueError(f"its record 'data/{key}' holds {size or 0:,} bytes but the "
                             f"tensor stored there needs {need:,}: the file is damaged or "
                             "cut short")
    return all(records[k].compress_type == zipfile.ZIP_STORED for k in lister.storages)


def load_torch(path: Path, mmap: bool) -> dict[str, torch.Tensor]:
    """The state dict of a `.pt`/`.pth` file, tensors only (``weights_only=True``),
    memory-mapped where the format allows (:func:`zip_records`: not where a record is
    compressed). A file that does not load is looked at (:func:`sniff`) to say what it
    really is."""
    if zip_records(path) is False:
        mmap = False
    try:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        except RuntimeError as e:
            if mmap and "mmap" in str(e):  # legacy (non-zip) format cannot be memory-mapped
                obj = torch.load(path, map_location="cpu", weights_only=True)
            else:
                raise
    except Exception:
        if (what := sniff(path)) is not None:
            raise ValueError(what) from None
        raise
    return unwrap_state_dict(obj)


def unwrap_state_dict(obj: Any) -> dict[str, torch.Tensor]:
    """The dictionary of tensors inside what a training script saved: nested under a
    usual key, and without DataParallel's ``module.`` prefix."""
    if isinstance(obj, Mapping):
        for key in _NESTED_KEYS:
            if key in obj and isinstance(obj[key], Mapping):
                return unwrap_state_dict(obj[key])
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if tensors:
            if all(k.startswith("module.") for k in tensors):
                tensors = {k[len("module."):]: v for k, v in tensors.items()}
            return tensors
    raise ValueError("the file holds no dictionary of tensors")


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint (a `.pt` file's memory-mapped)."""
    if weights_format(path) == "torch":
        regular_file(path, WEIGHTS_MAX_BYTES)  # a FIFO or a device is refused, not opened
        return load_torch(path, mmap=True)
    return _of_reader(path, lambda r: {k: r.get(k) for k in r.keys()})


def _of_reader(path: Path, what):
    reader = open_checkpoint(path)
    try:
        return what(reader)
    finally:
        reader.close()


def checkpoint_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes of a checkpoint, without reading tensor data where possible."""
    return _of_reader(path, lambda r: r.shapes())


def checkpoint_dtypes(path: Path) -> dict[str, torch.dtype]:
    """Tensor names and dtypes of a checkpoint (a safetensors file's from its header)."""
    return _of_reader(path, lambda r: r.dtypes())


def reason(e: Exception) -> str:
    """Why a checkpoint could not be read, in words a person can act on."""
    text = str(e).strip()
    first = text.splitlines()[0] if text else ""
    refused = re.search(r"GLOBAL ([\w.]+)", text)
    if refused or "Unsupported global" in text or "Weights only load failed" in text:
        name = (f"; it names the Python global '{refused.group(1)}'" if refused else "")
        return ("it holds pickled Python objects, which are refused: only tensors are ever "
                f"loaded{name}")
    if isinstance(e, EOFError) or "Ran out of input" in text:
        return "the file is empty or cut short"
    if "inline_container" in text or "zip archive" in text or "central directory" in text:
        return "it is a zip archive but not a PyTorch checkpoint (or it is damaged)"
    if "invalid load key" in text:
        return "it is not a PyTorch checkpoint (wrong format, or damaged)"
    return first[:300] or type(e).__name__


# ---- digests -------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file (cached while its size and modification time are unchanged)."""
    regular_file(path, WEIGHTS_MAX_BYTES)  # a FIFO or a device is refused, not opened
    st = os.stat(path)
    return _sha256_cached(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


# ---- readers -------------------------------------------------------------------------


class TensorReader:
    """Tensors by key, read on demand."""

    path: str | None = None

    def keys(self) -> list[str]:
        raise NotImplementedError

    def shapes(self) -> dict[str, tuple[int, ...]]:
        raise NotImplementedError

    def dtypes(self) -> dict[str, torch.dtype]:
        raise NotImplementedError

    def get(self, key: str) -> torch.Tensor:
        raise NotImplementedError

    def origin(self, key: str) -> dict[str, Any]:
        return {"origin": "checkpoint", "file": self.path, "sha256": file_sha256(self.path),
                "key": key}

    def close(self) -> None:
        pass


class SafetensorsReader(TensorReader):
    """Each tensor read from its byte range straight into memory of its own: no mapping
    of the file stays behind, so a compiled module never changes with the file. The file
    is opened for the header, and once more (kept until :meth:`close`) for the tensors."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        size = Path(path).stat().st_size
        with open(path, "rb") as f:
            self._offset, self._header, _ = _read_header(f, size)
        self._offset += 8
        self._file = None

    def keys(self) -> list[str]:
        return list(self._header)

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: tuple(v["shape"]) for k, v in self._header.items()}

    def dtypes(self) -> dict[str, torch.dtype]:
        return {k: SAFETENSORS_DTYPES[v["dtype"]][1] for k, v in self._header.items()}

    def get(self, key: str) -> torch.Tensor:
        if key not in self._header:
            raise KeyError(key)
        if self._file is None:
            self._file = open(self.path, "rb")
        return _read_entry(self._file, self._offset, key, self._header[key])

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class _StateReader(TensorReader):
    """Tensors held in a state dict already (``_state``)."""

    _state: dict[str, torch.Tensor]

    def keys(self) -> list[str]:
        return list(self._state)

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: tuple(v.shape) for k, v in self._state.items()}

    def dtypes(self) -> dict[str, torch.dtype]:
        return {k: v.dtype for k, v in self._state.items()}

    def get(self, key: str) -> torch.Tensor:
        return self._state[key]


class TorchReader(_StateReader):
    """A `.pt` file memory-mapped: tensors are views of the file until copied."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._state = load_torch(Path(path), mmap=True)

    def close(self) -> None:
        self._state = {}


class ModuleReader(_StateReader):
    """Tensors of a model built in memory (random initialisation, or hub weights)."""

    def __init__(self, model: nn.Module, origin: dict[str, Any]) -> None:
        self._state = model.state_dict()
        self._origin = origin

    def origin(self, key: str) -> dict[str, Any]:
        return {**self._origin, "key": key}


def open_checkpoint(path: str | Path) -> TensorReader:
    """A reader of the checkpoint at `path` (the format follows the suffix)."""
    regular_file(path, WEIGHTS_MAX_BYTES)  # a FIFO or a device is refused, not opened
    fmt = weights_format(Path(path))
    if fmt == "sharded":
        from synthdsl.library.shards import ShardedReader

        return ShardedReader(path)
    return SafetensorsReader(path) if fmt == "safetensors" else TorchReader(path)


class ReaderCache:
    """One reader per checkpoint file for a run: keyed by the resolved path, size and
    modification time, so the shapes the check reads and the tensors the compiler reads
    come from one opening of the file."""

    def __init__(self) -> None:
        self._readers: dict[tuple[str, int, int], TensorReader] = {}

    @staticmethod
    def _key(path: str | Path) -> tuple[str, int, int]:
        st = os.stat(path)
        return str(Path(path).resolve()), st.st_size, st.st_mtime_ns

    def open(self, path: str | Path) -> TensorReader:
        """The run's reader of `path`, opened on first use; a failure is not cached."""
        key = self._key(path)
        reader = self._readers.get(key)
        if reader is None:
            reader = self._readers[key] = open_checkpoint(path)
        return reader

    def shapes(self, path: str | Path) -> dict[str, tuple[int, ...]]:
        """Tensor names and shapes of a checkpoint, read from its header or table."""
        return self.open(path).shapes()

    def dtypes(self, path: str | Path) -> dict[str, torch.dtype]:
        """Tensor names and dtypes of a checkpoint, read from its header or table."""
        return self.open(path).dtypes()

    def close(self) -> None:
        """Close every reader (memory maps and handles go); later uses open afresh."""
        for reader in self._readers.values():
            reader.close()
        self._readers.clear()

    def __len__(self) -> int:
        return len(self._readers)
