"""Reading a source's weights from what a user trained: the keys of a file seen as the
model's.

A checkpoint usually holds exactly the model's tensors. Two other files are common and
read without renaming by hand:

* **a synthdsl artifact or run** (`synth compile -o`, `synth train`'s
  ``model.safetensors``, or the run folder itself): its tensors are named by the spec that
  made it, each source's under the source's name (``r.conv1.weight``). The source's own
  name is tried first, then any other prefix whose tensors hold every tensor of the model;
  the rest of the file (other parts, new heads) is left unread.
* **a checkpoint with a classifier, read into a model without one** (``num_classes=0``):
  the classifier's tensors (timm's ``pretrained_cfg["classifier"]``, torchvision's ``fc``,
  ``classifier``, ``head``, ``heads``) are dropped by name.

Either is reported (warning W004, with what was taken and what was left), never guessed
further: every tensor of the model must be found, with its shape.

>>> v = key_view("r", ["conv.weight", "conv.bias"],
...              ["r.conv.weight", "r.conv.bias", "r.fc.weight", "head.weight"], ("fc",))
>>> v.prefix, v.dropped, v.left, v.file_key("conv.bias")
('r.', ['fc.weight'], 1, 'r.conv.bias')
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import torch
from torch import nn

from synthdsl.library.checkpoints import TensorReader, TorchReader

#: Classifier names of torchvision's (and most hand-written) models.
CLASSIFIERS = ("fc", "classifier", "head", "heads")


@dataclass
class KeyView:
    """The model's tensors inside a file: under `prefix`, less the `dropped` classifier
    tensors (names without the prefix), with `left` other tensors of the file unread."""

    prefix: str = ""
    dropped: list[str] = field(default_factory=list)
    left: int = 0

    def file_key(self, key: str) -> str:
        return self.prefix + key

    def as_dict(self) -> dict[str, Any]:
        return {"prefix": self.prefix, "dropped": list(self.dropped), "left": self.left}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "KeyView":
        return cls(d.get("prefix", ""), list(d.get("dropped", ())), int(d.get("left", 0)))

    def notes(self) -> list[str]:
        out = []
        if self.prefix:
            out.append(f"the model's tensors are those under '{self.prefix}' (a synthdsl "
                       f"artifact or run names each source's tensors by the source)")
        if self.dropped:
            heads = sorted({k.rsplit(".", 1)[0] for k in self.dropped})
            out.append(f"dropped the file's classifier {', '.join(repr(h) for h in heads)} "
                       f"({len(self.dropped)} tensor(s)): the model has none "
                       "(num_classes=0)")
        if self.left:
            out.append(f"{self.left} other tensor(s) of the file are not read")
        return out


def classifier_names(model: nn.Module) -> tuple[str, ...]:
    """The names a model's classifier may have, its own first."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    own = cfg.get("classifier") if isinstance(cfg, Mapping) else None
    own = (own,) if isinstance(own, str) else tuple(own or ())
    return (*own, *(c for c in CLASSIFIERS if c not in own))


def _under(key: str, names: Iterable[str]) -> bool:
    return any(key == n or key.startswith(n + ".") for n in names)


def key_view(source: str, model_keys: Sequence[str], file_keys: Sequence[str],
             classifiers: Sequence[str] = CLASSIFIERS) -> KeyView | None:
    """How the model's tensors are found in a file whose keys are not exactly the model's:
    under the source's name or another prefix, with a classifier the model lacks dropped;
    None when no way holds every tensor of the model."""
    want = set(model_keys)
    firsts = Counter(k.split(".", 1)[0] for k in file_keys if "." in k)
    prefixes = ["", f"{source}."] + [f"{p}." for p, _ in firsts.most_common() if p != source]
    for prefix in prefixes:
        inner = [k[len(prefix):] for k in file_keys if k.startswith(prefix)]
        if not want <= set(inner):
            continue
        extra = [k for k in inner if k not in want]
        if any(not _under(k, classifiers) for k in extra):
            continue  # tensors of the model's own kind that it does not have: not this
        view = KeyView(prefix, extra, len(file_keys) - len(inner))
        if view.prefix or view.dropped:
            return view
    return None


class ViewReader(TensorReader):
    """A reader of a file's tensors under the model's names (a :class:`KeyView`)."""

    def __init__(self, inner: TensorReader, view: KeyView,
                 model_keys: Sequence[str] | None = None) -> None:
        self.inner, self.view = inner, view
        dropped = set(view.dropped)
        self._keys = list(model_keys) if model_keys is not None else [
            k[len(view.prefix):] for k in inner.keys()
            if k.startswith(view.prefix) and k[len(view.prefix):] not in dropped]
        self._known = set(self._keys)
        self.path = getattr(inner, "path", None)

    def keys(self) -> list[str]:
        return list(self._keys)

    def shapes(self) -> dict[str, tuple[int, ...]]:
        found = self.inner.shapes()
        return {k: found[self.view.file_key(k)] for k in self._keys}

    def dtypes(self) -> dict[str, torch.dtype]:
        found = self.inner.dtypes()
        return {k: found[self.view.file_key(k)] for k in self._keys}

    def get(self, key: str) -> torch.Tensor:
        if key not in self._known:
            raise KeyError(key)
        value = self.inner.get(self.view.file_key(key))
        # a tensor of a memory-mapped .pt file is copied out of it (safetensors gives copies)
        return value.clone() if isinstance(self.inner, TorchReader) else value

    def origin(self, key: str) -> dict[str, Any]:
        return {**self.inner.origin(self.view.file_key(key)), "key": self.view.file_key(key)}

    def close(self) -> None:
        pass  # the file's reader belongs to the run's cache, which closes it


def view_state(state: Mapping[str, torch.Tensor], view: KeyView) -> dict[str, torch.Tensor]:
    """A whole state dict read from the file, under the model's names."""
    dropped = set(view.dropped)
    return {k[len(view.prefix):]: v for k, v in state.items()
            if k.startswith(view.prefix) and k[len(view.prefix):] not in dropped}
