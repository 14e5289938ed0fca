"""Sources: building pretrained models (on the meta device or for real) and their weights.

A checkpoint is only ever read as tensors: safetensors files through
`safetensors`, `.pt`/`.pth` files through ``torch.load(weights_only=True)``.
Safetensors headers are size-checked before they are parsed.
"""

from __future__ import annotations

import functools
import json
import os
import re
import struct
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch
from torch import nn

from synthdsl.lang.errors import SynthError, did_you_mean

#: A safetensors header larger than this is refused before it is parsed.
MAX_HEADER_BYTES = 64 * 1024 * 1024
#: A checkpoint with more tensors than this is refused.
MAX_TENSORS = 100_000
#: Top-level keys under which training scripts commonly nest the state dict.
_NESTED_KEYS = ("state_dict", "model", "module", "model_state_dict", "state_dict_ema")


@functools.lru_cache(maxsize=1)
def timm_models() -> tuple[str, ...]:
    import timm

    return tuple(timm.list_models())


def create_timm(arch: str, kwargs: Mapping[str, Any], device: str | torch.device = "cpu",
                pretrained: bool = False) -> nn.Module:
    """Build a timm model; on ``meta`` it costs no memory and reads no weights."""
    import timm

    with torch.device(device):
        model = timm.create_model(arch, pretrained=pretrained, **dict(kwargs))
    return model.eval()


def check_arch(node: Mapping[str, Any]) -> SynthError | None:
    """An unknown timm architecture, with the closest names as suggestions."""
    import timm

    arch = node["target"]
    if timm.is_model(arch):
        return None
    hint = did_you_mean(arch, timm_models())
    return SynthError("S201", f"unknown timm architecture '{arch}'", node["target_span"],
                      hint=hint or "`python -c \"import timm; print(timm.list_models())\"` "
                                   "lists them")


def weights_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return "safetensors"
    if suffix in (".pt", ".pth", ".bin", ".ckpt"):
        return "torch"
    raise ValueError(f"'{path.name}' is not a .safetensors, .pt or .pth file")


#: Bytes per element of each safetensors dtype, and the torch dtype it reads as.
SAFETENSORS_DTYPES = {
    "F64": (8, torch.float64), "F32": (4, torch.float32), "F16": (2, torch.float16),
    "BF16": (2, torch.bfloat16), "I64": (8, torch.int64), "I32": (4, torch.int32),
    "I16": (2, torch.int16), "I8": (1, torch.int8), "U8": (1, torch.uint8),
    "BOOL": (1, torch.bool), "F8_E4M3": (1, torch.float8_e4m3fn),
    "F8_E5M2": (1, torch.float8_e5m2),
}


def _safetensors_header(path: Path) -> dict:
    """The JSON header of a safetensors file, every entry validated against the file:
    absurd sizes and entry counts are refused before the JSON is parsed, and every
    tensor's byte range must lie inside the file and match its shape and dtype."""
    size = path.stat().st_size
    with open(path, "rb") as f:
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
    except (ValueError, UnicodeDecodeError):
        raise ValueError("its header is not valid JSON: the file is damaged or not "
                         "safetensors") from None
    if not isinstance(header, dict):
        raise ValueError("its header is not a JSON object")
    header.pop("__metadata__", None)
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
    return header


def read_safetensors(path: Path, keys, header: dict | None = None
                     ) -> Iterator[tuple[str, torch.Tensor]]:
    """The named tensors of a safetensors file, each read straight into its own memory
    (no mapping of the file outlives the call). `header`: already validated."""
    header = header if header is not None else _safetensors_header(path)
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        for key in keys:
            entry = header[key]
            width, dtype = SAFETENSORS_DTYPES[entry["dtype"]]
            start, end = entry["data_offsets"]
            buf = torch.empty(end - start, dtype=torch.uint8)
            f.seek(8 + n + start)
            if f.readinto(memoryview(buf.numpy())) != end - start:
                raise ValueError(f"'{key}' is cut short: the file is truncated")
            yield key, buf.view(dtype).reshape(entry["shape"])


def checkpoint_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes of a checkpoint, without reading tensor data where possible."""
    if weights_format(path) == "safetensors":
        header = _safetensors_header(path)
        return {k: tuple(v["shape"]) for k, v in header.items()}
    state = _load_torch(path, mmap=True)
    return {k: tuple(v.shape) for k, v in state.items()}


def _load_torch(path: Path, mmap: bool) -> dict[str, torch.Tensor]:
    if (what := _sniff(path)) is not None:
        raise ValueError(what)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except RuntimeError as e:
        if mmap and "mmap" in str(e):  # legacy (non-zip) format cannot be memory-mapped
            obj = torch.load(path, map_location="cpu", weights_only=True)
        else:
            raise
    return _unwrap_state_dict(obj)


def _unwrap_state_dict(obj: Any) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping):
        for key in _NESTED_KEYS:
            if key in obj and isinstance(obj[key], Mapping):
                return _unwrap_state_dict(obj[key])
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if tensors:
            if all(k.startswith("module.") for k in tensors):
                tensors = {k[len("module."):]: v for k, v in tensors.items()}
            return tensors
    raise ValueError("the file holds no dictionary of tensors")


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if weights_format(path) == "safetensors":
        return dict(read_safetensors(path, list(_safetensors_header(path))))
    return _load_torch(path, mmap=True)


def compare_state(expected: Mapping[str, tuple[int, ...]],
                  found: Mapping[str, tuple[int, ...]]) -> list[str]:
    """What keeps a checkpoint from loading strictly into a model: missing, unexpected, shape."""
    problems = []
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    mismatched = [k for k in expected if k in found and tuple(found[k]) != tuple(expected[k])]
    for k in mismatched[:5]:
        problems.append(f"'{k}' has shape {list(found[k])} in the checkpoint, "
                        f"the model expects {list(expected[k])}")
    if missing:
        problems.append(f"{len(missing)} tensor(s) missing from the checkpoint: "
                        + ", ".join(f"'{k}'" for k in missing[:5])
                        + (" ..." if len(missing) > 5 else ""))
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensor(s) in the checkpoint: "
                        + ", ".join(f"'{k}'" for k in unexpected[:5])
                        + (" ..." if len(unexpected) > 5 else ""))
    if len(mismatched) > 5:
        problems.append(f"... and {len(mismatched) - 5} more shape mismatches")
    return problems


def model_state_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def check_weights(node: Mapping[str, Any], model: nn.Module) -> SynthError | None:
    """The weights file of a source exists, is readable, and fits the model exactly."""
    path = Path(node["weights"])
    span = node["weights_span"]
    if not path.exists():
        return SynthError("S203", f"weights file '{node['weights_text']}' does not exist", span,
                          hint="a relative path starts at the spec's own folder")
    try:
        weights_format(path)
    except ValueError as e:
        return SynthError("S203", str(e), span)
    try:
        found = checkpoint_shapes(path)
    except Exception as e:  # noqa: BLE001 - any failure to read is the user's file
        return SynthError("S203", f"cannot read weights file '{path.name}': {_reason(e)}", span)
    problems = compare_state(model_state_shapes(model), found)
    if problems:
        return SynthError("S205", f"weights file '{path.name}' does not fit "
                          f"{node['constructor']}('{node['target']}')", span, notes=problems,
                          hint="check the architecture and its options (num_classes, in_chans)")
    return None


def _reason(e: Exception) -> str:
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


def _sniff(path: Path) -> str | None:
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


def build_source(node: Mapping[str, Any], device: str = "cpu",
                 load_weights: bool = True) -> nn.Module:
    """The source model of a `source` node, with its weights when it names them."""
    pretrained = node.get("pretrained", False) and load_weights
    try:
        model = create_timm(node["target"], node["create_kwargs"], device, pretrained=pretrained)
    except Exception as e:  # noqa: BLE001
        if not pretrained:
            raise
        offline = any(os.environ.get(v) == "1" for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
        raise SynthError("S203", f"cannot get hub weights for '{node['target']}'"
                         + (" (HF_HUB_OFFLINE=1 and they are not in the cache)" if offline
                            else ""), node.get("span"),
                         notes=[f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
                                if str(e) else type(e).__name__],
                         hint="download them once with a network (they are cached), or name a "
                              "local file with weights=\"...\"") from None
    if node.get("weights") and device != "meta" and load_weights:
        path = Path(node["weights"])
        try:
            state = read_state_dict(path)
        except Exception as e:  # noqa: BLE001
            raise SynthError("S203", f"cannot read weights file '{path.name}': {_reason(e)}",
                             node["weights_span"]) from None
        problems = compare_state(model_state_shapes(model),
                                 {k: tuple(v.shape) for k, v in state.items()})
        if problems:
            raise SynthError("S205", f"weights file '{path.name}' does not fit "
                             f"{node['constructor']}('{node['target']}')", node["weights_span"],
                             notes=problems)
        model.load_state_dict(state, strict=True)
    return model.eval()
