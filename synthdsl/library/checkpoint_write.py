"""Writing a checkpoint tensor by tensor: a safetensors file laid out from a reader's shapes
and dtypes, each tensor read, written and let go (what ``synth merge`` writes)."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any, Mapping

import torch

from synthdsl.library.checkpoints import SAFETENSORS_DTYPES, TensorReader


def write_safetensors(path: str | Path, reader: TensorReader,
                      metadata: Mapping[str, str] | None = None) -> int:
    """Write every tensor of `reader` to a safetensors file at `path`, one tensor at a
    time: the header is laid out from the reader's shapes and dtypes, then each tensor is
    read, written and let go, so memory holds one tensor. Returns the bytes written."""
    names = {dtype: name for name, (_, dtype) in SAFETENSORS_DTYPES.items()}
    shapes, dtypes = reader.shapes(), reader.dtypes()
    header: dict[str, Any] = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    for key in shapes:
        width = SAFETENSORS_DTYPES[names[dtypes[key]]][0]
        size = width * int(torch.Size(shapes[key]).numel())
        header[key] = {"dtype": names[dtypes[key]], "shape": list(shapes[key]),
                       "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for key in shapes:
            t = reader.get(key).to(dtypes[key]).contiguous().cpu()
            if tuple(t.shape) != tuple(shapes[key]):
                raise ValueError(f"'{key}' has shape {list(t.shape)}, its header says "
                                 f"{list(shapes[key])}")
            f.write(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return 8 + len(text) + offset
