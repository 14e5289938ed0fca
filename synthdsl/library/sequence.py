"""Layers for sequences and token ids: Embedding, Conv1d, GroupNorm, Permute.

They join the registry of :mod:`synthdsl.library.layers` when it loads. A sequence
of token ids ``[B, T]`` (int64) becomes ``[B, T, dim]`` through `Embedding`;
`Permute` puts its channels second (``[B, dim, T]``) for `Conv1d` and `GroupNorm`.

>>> from synthdsl.library.layers import LAYERS
>>> LAYERS["Embedding"].constructor_args([(2, 16)], {"num": 100, "dim": 8})
{'num_embeddings': 100, 'embedding_dim': 8}
>>> LAYERS["Permute"].constructor_args([(2, 16, 8)], {"dims": (0, 2, 1)})
{'dims': (0, 2, 1)}
"""

from __future__ import annotations

import torch
from torch import nn

from synthdsl.library.layers import (_TORCH_NAMES, LayerSpec, _conv_groups, _ints, _is_int, _o,
                                     register_layer)


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
