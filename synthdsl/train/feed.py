"""What a spec with several inputs, or inputs other than one image, takes from a batch.

A spec of one ``float32`` image input ``[B, C, H, W]`` reads a batch of images through a
:class:`~synthdsl.train.preprocess.Preprocess`, as it always has. Any other spec reads a
batch of *named* tensors, one per input (:class:`~synthdsl.train.named.NamedData`): a
:class:`Feed` turns it into the model's positional inputs, in the order they are
declared. Each image input (a floating ``[B, C, H, W]``) gets its own ``Preprocess``
(size, channels, normalisation from the first timm source's data config, or the
recipe's); every other input is taken as it is, in its declared element type.

>>> import torch
>>> feed = Feed((InputSpec("ids", ("B", 4), "int64"), InputSpec("w", ("B", 2), "float32")))
>>> ids, w = feed.inputs({"ids": torch.tensor([[1, 2, 3, 0]], dtype=torch.int32),
...                       "w": torch.ones(1, 2, dtype=torch.float64)})
>>> ids.dtype, w.dtype
(torch.int64, torch.float32)
>>> feed.describe()
'ids: int64 as given; w: float32 as given'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from synthdsl.build.module import embedding_sizes
from synthdsl.train.errors import DataError
from synthdsl.train.preprocess import Preprocess, image_preprocess, preprocess_for, random_shift

#: Element types an image input may have.
FLOAT_DTYPES = ("float32", "float16", "bfloat16")


@dataclass(frozen=True)
class InputSpec:
    """One declared input: its name, dims (sizes and symbols, batch first), element type,
    and for an integer input the ids it may hold (the smallest ``num`` of the Embedding
    layers it reaches; None when it reaches none)."""

    name: str
    dims: tuple
    dtype: str = "float32"
    bound: int | None = None

    @property
    def is_image(self) -> bool:
        return len(self.dims) == 4 and self.dtype in FLOAT_DTYPES

    @property
    def is_integer(self) -> bool:
        return self.dtype in ("int64", "int32")

    def fixed(self, i: int) -> int | None:
        """Dimension `i`'s size when it is fixed, else None (a symbol)."""
        d = self.dims[i]
        return d if isinstance(d, int) else None

    @property
    def shape(self) -> str:
        """The dims as a spec writes them: ``[B, 16]``."""
        return "[" + ", ".join(str(d) for d in self.dims) + "]"

    def describe(self) -> str:
        return f"{self.name}: {self.shape} {self.dtype}"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dims": list(self.dims), "dtype": self.dtype,
                "bound": self.bound}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "InputSpec":
        return cls(d["name"], tuple(d["dims"]), d.get("dtype", "float32"), d.get("bound"))


def spec_inputs(model) -> list[InputSpec]:
    """The declared inputs of a compiled spec, in order."""
    graph = model.graph
    out = []
    for n in graph.inputs:
        node = graph.nodes[n]
        dtype = node.get("input_dtype", "float32")
        nums = embedding_sizes(graph, n) if dtype in ("int64", "int32") else []
        out.append(InputSpec(n, tuple(node["dims"]), dtype, min(nums) if nums else None))
    return out


def images_only(inputs: Sequence[InputSpec]) -> bool:
    """Whether the spec reads what image data gives: one float32 ``[B, C, H, W]`` input."""
    return len(inputs) == 1 and inputs[0].is_image and inputs[0].dtype == "float32"


@dataclass(frozen=True)
class Feed:
    """A batch of named tensors → the model's inputs in declared order (see the module
    docstring); ``images`` holds each image input's preprocessing."""

    specs: tuple[InputSpec, ...]
    images: tuple[tuple[str, Preprocess], ...] = ()

    def inputs(self, raw: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        missing = [s.name for s in self.specs if not isinstance(raw, dict) or s.name not in raw]
        if missing:  # a teacher of other inputs than the data's, say
            held = ", ".join(raw) if isinstance(raw, dict) else "one batch of images"
            raise DataError(f"the data has no values for input '{missing[0]}' (it holds "
                            f"{held})", hint="give data with one array per input: "
                            + ", ".join(s.name for s in self.specs))
        pre = dict(self.images)
        return tuple(pre[s.name](raw[s.name]) if s.name in pre
                     else raw[s.name].to(getattr(torch, s.dtype)) for s in self.specs)

    def image(self, name: str) -> Preprocess | None:
        return dict(self.images).get(name)

    def describe(self) -> str:
        pre = dict(self.images)
        return "; ".join(f"{s.name}: {pre[s.name].describe()}" if s.name in pre
                         else f"{s.name}: {s.dtype} as given" for s in self.specs)

    def to_dict(self) -> dict[str, Any]:
        pre = dict(self.images)
        return {"inputs": [{**s.to_dict(), "preprocess": pre[s.name].to_dict()
                            if s.name in pre else None} for s in self.specs]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Feed":
        specs = tuple(InputSpec.from_dict(i) for i in d["inputs"])
        images = tuple((i["name"], Preprocess.from_dict(i["preprocess"])) for i in d["inputs"]
                       if i.get("preprocess"))
        return cls(specs, images)


def feed_for(model, mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
             normalize: bool | None = None) -> Preprocess | Feed:
    """What the compiled spec takes from a batch: a ``Preprocess`` for a spec of one image
    input (:func:`~synthdsl.train.preprocess.preprocess_for`), else a :class:`Feed`."""
    specs = spec_inputs(model)
    if images_only(specs):
        return preprocess_for(model, mean, std, normalize)
    images = tuple((s.name, image_preprocess(model, s.dims, mean, std, normalize))
                   for s in specs if s.is_image)
    return Feed(tuple(specs), images)


def read_feed(d: dict[str, Any]) -> Preprocess | Feed:
    """A run record's ``preprocess`` back as what wrote it."""
    return Feed.from_dict(d) if "inputs" in d else Preprocess.from_dict(d)


def to_device(raw: torch.Tensor | dict[str, torch.Tensor], device: torch.device | str
              ) -> torch.Tensor | dict[str, torch.Tensor]:
    """A batch (a tensor of images, or named tensors) on `device`."""
    if isinstance(raw, dict):
        return {k: v.to(device, non_blocking=True) for k, v in raw.items()}
    return raw.to(device, non_blocking=True)


def shift_images(raw: torch.Tensor | dict[str, torch.Tensor], max_shift: int,
                 gen: torch.Generator) -> torch.Tensor | dict[str, torch.Tensor]:
    """:func:`~synthdsl.train.preprocess.random_shift` of every image in a batch: the batch
    itself, or each floating ``[B, C, H, W]`` tensor of a named batch."""
    if not isinstance(raw, dict):
        return random_shift(raw, max_shift, gen)
    return {k: random_shift(v, max_shift, gen) if v.dim() == 4 and v.is_floating_point()
            else v for k, v in raw.items()}
