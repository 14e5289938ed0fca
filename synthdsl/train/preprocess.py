"""What a model takes from a batch of images in [0, 1]: size, channels, normalisation.

Keeping images and their preprocessing apart lets a student and its teacher read the same
images through their own preprocessing, and lets the trainer cache what a frozen trunk
computes from each sample. :func:`preprocess_for` derives it from a compiled spec (its
input, its recipe, its first timm source's data config).

>>> import torch
>>> pre = Preprocess(size=(4, 4), channels=3, mean=(0.5,) * 3, std=(0.5,) * 3)
>>> pre(torch.ones(2, 1, 8, 8)).shape
torch.Size([2, 3, 4, 4])
>>> pre.describe()
'resize to 4x4 (bilinear), 3 channels, normalise mean=[0.5, 0.5, 0.5] std=[0.5, 0.5, 0.5]'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from synthdsl.library.cache import sources_of
from synthdsl.train.errors import DataError


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

    def inputs(self, raw: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """What the model is called with: the one image input."""
        return (self(raw),)

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
    (in a spec it imports, too); None when the spec has no timm source, or that source
    has no data config (an hf(...) folder without preprocessor_config.json)."""
    def first(graph) -> tuple[Any, str] | None:
        for s in graph.of_kind("source"):
            node = graph.nodes[s]
            if node["constructor"] not in ("spec",):  # timm, torchvision: the zoo's config
                return graph, s
            if node["constructor"] == "spec" and node.get("graph") is not None:
                found = first(node["graph"])
                if found:
                    return found
        return None

    found = first(model.graph)
    if found is None:
        return None
    graph, name = found
    config = sources_of(graph).data_config(name)  # the run's model, not a new one
    if config is None:  # a source without preprocessing of its own (an hf text model)
        return None
    node = graph.nodes[name]
    return config, f"{node['constructor']} config of '{name}' ({node['target']})"


def preprocess_for(model, mean: Sequence[float] | None = None,
                   std: Sequence[float] | None = None, normalize: bool | None = None
                   ) -> Preprocess:
    """The preprocessing a compiled spec takes: its input's size and channels, and the
    mean, std and interpolation of its first timm source's own data config, unless given
    here or in the spec's recipe (``mean``, ``std``, ``normalize``; `normalize=False`
    keeps values in [0, 1])."""
    return image_preprocess(model, image_input(model)[1], mean, std, normalize)


def image_preprocess(model, dims: Sequence, mean: Sequence[float] | None = None,
                     std: Sequence[float] | None = None, normalize: bool | None = None
                     ) -> Preprocess:
    """:func:`preprocess_for` of one image input of `dims` ``[B, C, H, W]``."""
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


def random_shift(x: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Shift each image by up to `max_shift` pixels in each direction, zero-filled."""
    if max_shift <= 0:
        return x
    n, _, h, w = x.shape
    shifts = torch.randint(-max_shift, max_shift + 1, (n, 2), generator=gen)
    padded = F.pad(x, (max_shift, max_shift, max_shift, max_shift))
    out = torch.empty_like(x)
    for i in range(n):
        dy, dx = int(shifts[i, 0]) + max_shift, int(shifts[i, 1]) + max_shift
        out[i] = padded[i, :, dy:dy + h, dx:dx + w]
    return out
