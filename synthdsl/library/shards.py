"""Sharded checkpoints: an index file naming the file each tensor is in.

Large models are saved in shards (Transformers' ``save_pretrained``, ``huggingface_hub``'s
``save_torch_state_dict``): ``model-00001-of-00003.safetensors``, ... and beside them
``model.safetensors.index.json``, whose ``weight_map`` gives each tensor's shard. The index
is read as one checkpoint (:class:`ShardedReader`): its tensors' names, shapes and dtypes
from the shards' headers, each tensor from its own shard when asked, and each tensor's
provenance naming the shard and its sha256. A shard is a plain file name beside the index
(no folder, no ``..``), holding every tensor the index says it holds; anything else is a
ValueError the callers report at the spec (S203, S205). ``synth lock`` pins every shard.

>>> is_index("w/model.safetensors.index.json"), is_index("w/model.safetensors")
(True, False)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from synthdsl.files import read_regular

#: The largest index read (a model of 100,000 tensors has an index of a few megabytes).
INDEX_MAX_BYTES = 64 * 2**20
#: What a shard may be called: a file of weights beside the index.
SHARD_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def is_index(path: str | Path) -> bool:
    """Whether `path` names the index of a sharded checkpoint (``*.index.json``)."""
    return Path(path).name.lower().endswith(".index.json")


def read_index(path: str | Path) -> dict[str, str]:
    """The index's ``weight_map`` (tensor -> shard file name), each shard name checked."""
    try:
        data = json.loads(read_regular(path, INDEX_MAX_BYTES, "checkpoint index"))
        weight_map = data["weight_map"]
    except (ValueError, KeyError, TypeError, RecursionError):  # nested past any index
        raise ValueError(f"'{Path(path).name}' is not the index of a sharded checkpoint: "
                         'expected JSON with a "weight_map" of tensor names to shard '
                         "files") from None
    if not isinstance(weight_map, dict) or not weight_map:
        raise ValueError(f"the weight_map of '{Path(path).name}' names no tensors")
    for key, shard in weight_map.items():
        if not (isinstance(key, str) and isinstance(shard, str)) or Path(shard).name != shard \
                or shard in (".", "..") or not shard.lower().endswith(SHARD_SUFFIXES):
            raise ValueError(f"the index '{Path(path).name}' puts '{key}' in {shard!r}: a "
                             "shard is a .safetensors or .bin file beside the index")
    return weight_map


def shard_files(path: str | Path) -> list[Path]:
    """The shards an index names, in order, as paths beside it."""
    folder = Path(path).parent
    return [folder / s for s in dict.fromkeys(read_index(path).values())]


class ShardedReader:
    """The tensors of a sharded checkpoint, by the index at `path` (see the module). It
    reads as a :class:`~synthdsl.library.checkpoints.TensorReader`."""

    def __init__(self, path: str | Path) -> None:
        from synthdsl.library.checkpoints import open_checkpoint

        self.path = str(path)
        self._map = read_index(path)
        self._readers: dict[str, Any] = {}
        try:
            for shard in dict.fromkeys(self._map.values()):
                file = Path(path).parent / shard
                if not file.is_file():
                    raise ValueError(f"the index names the shard '{shard}', which is not "
                                     "beside it")
                self._readers[shard] = open_checkpoint(file)
            for shard, reader in self._readers.items():
                held = set(reader.keys())
                missing = [k for k, s in self._map.items() if s == shard and k not in held]
                if missing:
                    raise ValueError(f"the index puts {len(missing)} tensor(s) in '{shard}', "
                                     f"which does not hold them: "
                                     + ", ".join(f"'{k}'" for k in missing[:3]))
        except Exception:
            self.close()
            raise

    def keys(self) -> list[str]:
        return list(self._map)

    def _by_shard(self, what: str) -> dict[str, Any]:
        tables = {s: getattr(r, what)() for s, r in self._readers.items()}
        return {k: tables[s][k] for k, s in self._map.items()}

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return self._by_shard("shapes")

    def dtypes(self) -> dict[str, torch.dtype]:
        return self._by_shard("dtypes")

    def get(self, key: str) -> torch.Tensor:
        return self._readers[self._map[key]].get(key)

    def origin(self, key: str) -> dict[str, Any]:
        return {**self._readers[self._map[key]].origin(key), "index": self.path}

    def close(self) -> None:
        for reader in self._readers.values():
            reader.close()
        self._readers = {}
