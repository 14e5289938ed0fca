"""Layers for sequences, token ids and maps: Embedding, Conv1d, GroupNorm, Permute, Upsample.

They join the registry of :mod:`synthdsl.library.layers` when it loads. A sequence
of token ids ``[B, T]`` (int64) becomes ``[B, T, dim]`` through `Embedding`;
`Permute` puts its channels second (``[B, dim, T]``) for `Conv1d` and `GroupNorm`;
`Upsample` enlarges a map ``[B, C, H, W]`` (or a sequence ``[B, C, T]``).

>>> from synthdsl.library.layers import LAYERS
>>> LAYERS["Embedding"].constructor_args([(2, 16)], {"num": 100, "dim": 8})
{'num_embeddings': 100, 'embedding_dim': 8}
>>> LAYERS["Permute"].constructor_args([(2, 16, 8)], {"dims": (0, 2, 1)})
{'dims': (0, 2, 1)}
>>> LAYERS["Upsample"].constructor_args([(2, 3, 8, 8)], {"scale": 2})
{'scale': 2.0, 'size': None, 'mode': 'nearest'}
"""

from __future__ import annotations

import torch
from torch import nn

from synthdsl.library.layers import (_TORCH_NAMES, MAX_SCALE, LayerSpec, _conv_groups, _ints,
                                     _is_int, _o, register_layer)


class Permute(nn.Module):
    """Reorder the dimensions: ``dims`` is a permutation of the input's rank."""

    def __init__(self, dims: tuple) -> None:
        super().__init__()
        self.dims = tuple(dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(*self.dims)

    def extra_repr(self) -> str:
        return f"dims={self.dims}"


def _permutation(value, shapes, options):
    rank = len(shapes[0])
    if sorted(v if _is_int(v) else -1 for v in value) != list(range(rank)):
        return f"a permutation of 0..{rank - 1} (the input has rank {rank})"
    return None


def _conv1d_padding(value, shapes, options):
    if isinstance(value, str):
        if value not in ("same", "valid"):
            return '"same", "valid" or a whole number >= 0'
        if value == "same" and options["stride"] != 1:
            return f'a number or "valid" with stride={options["stride"]} ("same" needs stride 1)'
        return None
    return _ints(0, "the padding")(value, shapes, options)


def _norm_groups(value, shapes, options):
    if value < 1:
        return "a whole number >= 1"
    channels = shapes[0][1]
    if _is_int(channels) and channels % value:
        return f"a divisor of the input's {channels} channels"
    return None


def upsample(scale: float | None, size: int | tuple | None, mode: str) -> nn.Upsample:
    """``nn.Upsample`` by `scale` or to `size`; linear modes with ``align_corners=False``."""
    return nn.Upsample(size=size, scale_factor=scale, mode=mode,
                       align_corners=False if mode in ("linear", "bilinear", "bicubic") else None)


def _upsample_scale(value, shapes, options):
    if (value is None) == (options["size"] is None):
        return "a number > 0, or none with size= (Upsample takes scale= or size=, one of them)"
    if value is not None and not 0 < value <= MAX_SCALE:
        return f"a number from 0 to {MAX_SCALE:g} (not 0)"
    return None


def _upsample_size(value, shapes, options):
    return _ints(1, "a size", len(shapes[0]) - 2)(value, shapes, options)


def _upsample_mode(value, shapes, options):
    modes = ("nearest", "linear") if len(shapes[0]) == 3 else ("nearest", "bilinear", "bicubic")
    if value in modes:
        return None
    return "one of " + ", ".join(f'"{m}"' for m in modes) + \
        f" for an input of rank {len(shapes[0])}"


_TORCH_NAMES.update({
    "Embedding": {"num": "num_embeddings", "dim": "embedding_dim"},
    "Conv1d": {"out": "out_channels", "kernel": "kernel_size"},
    "GroupNorm": {"groups": "num_groups"},
})

register_layer(LayerSpec(
    "Embedding", nn.Embedding,
    (_o("num", int, doc="how many ids (ids are 0 .. num-1)", check=_ints(1, "a size")),
     _o("dim", int, doc="the size of each id's vector", check=_ints(1, "a size"))),
    takes="integer", doc="a learned vector per integer id: [B, T] int64 → [B, T, dim]"))
register_layer(LayerSpec(
    "Conv1d", nn.Conv1d,
    (_o("out", int, doc="output channels", check=_ints(1, "a size")),
     _o("kernel", int, 3, check=_ints(1, "the kernel size")),
     _o("stride", int, 1, check=_ints(1, "the stride")),
     _o("padding", (int, str), 0, check=_conv1d_padding),
     _o("dilation", int, 1, check=_ints(1, "the dilation")),
     _o("groups", int, 1, check=_conv_groups), _o("bias", bool, True)),
    infer=lambda s: {"in_channels": s[1]}, ranks=(3,),
    doc="1-D convolution over [B, C, L]; in_channels from the input"))
register_layer(LayerSpec(
    "GroupNorm", nn.GroupNorm,
    (_o("groups", int, 8, doc="channel groups (a divisor of the channels)", check=_norm_groups),
     _o("eps", float, 1e-5, check=lambda v, s, o: None if v > 0 else "a number > 0")),
    infer=lambda s: {"num_channels": s[1]}, ranks=(2, 3, 4, 5), check_defaults=("groups",),
    doc="group normalisation over channels (dimension 1); num_channels from the input"))
register_layer(LayerSpec(
    "Permute", Permute, (_o("dims", tuple, doc="the new order of the dimensions",
                            check=_permutation),),
    takes="any", doc="reorder the dimensions: [B, T, C] with dims=[0, 2, 1] → [B, C, T]"))
register_layer(LayerSpec(
    "Upsample", upsample,
    (_o("scale", (float, type(None)), None, "the factor of every spatial size",
        check=_upsample_scale),
     _o("size", (int, tuple, type(None)), None, "the spatial sizes, or one for all",
        check=_upsample_size),
     _o("mode", str, "nearest", '"nearest", "bilinear" or "bicubic" ([B, C, H, W]); '
        '"nearest" or "linear" ([B, C, T])', check=_upsample_mode)),
    ranks=(3, 4), check_defaults=("scale",),
    doc="enlarge (or shrink) the spatial sizes: by scale= or to size=, one of them"))
