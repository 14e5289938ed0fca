"""Layers that join several values: Ensemble, GatedFusion, and attention.

`MultiheadAttention` attends over one sequence ``[B, T, D]``; `CrossAttention` lets
queries ``[B, Tq, D]`` attend to a context ``[B, Tk, Dk]``. Both take an optional key
padding mask ``[B, Tk]`` (bool, true = keep) and compute what ``nn.MultiheadAttention``
(batch first) computes, from four `Linear` projections (``q``, ``k``, ``v``, ``out``),
so that LoRA can adapt each of them. `GatedFusion` learns, per feature, how much of
each input to keep. They join the registry of :mod:`synthdsl.library.layers` when it
loads; their inputs play roles (:class:`~synthdsl.library.layers.Input`), and messages
name them.

>>> from synthdsl.library.layers import LAYERS
>>> LAYERS["CrossAttention"].constructor_args([(2, 4, 8), (2, 6, 16)], {"heads": 2})
{'dim': 8, 'kdim': 16, 'heads': 2, 'dropout': 0.0, 'bias': True}
>>> LAYERS["CrossAttention"].constructor_args([(2, 4, 8), (2, 32)], {"heads": 2})
Traceback (most recent call last):
...
synthdsl.library.layers.LayerArgError: CrossAttention's context expects rank 3, found [2, 32]
>>> LAYERS["GatedFusion"].constructor_args([(2, 8), (2, 8)], {})
{'n': 2, 'dim': 8}
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from synthdsl.lang.errors import fmt_shape
from synthdsl.library.layers import (MAX_SIZE, Ensemble, Input, LayerSpec, _choice, _is_int,
                                     _number, _o, register_layer, show_value)


def _ensemble_weights(value, shapes, options):
    if value is None:
        return None
    if options["mode"] != "weighted":
        return f'none with mode={show_value(options["mode"])} (weights go with mode="weighted")'
    n = len(shapes)
    if len(value) != n or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                  and v > 0 for v in value):
        return f"{n} positive numbers, one per member"
    return None


def _ensemble_learnable(value, shapes, options):
    if value and options["mode"] != "weighted":
        return f'false with mode={show_value(options["mode"])} (learnable goes with ' \
               'mode="weighted")'
    return None


register_layer(LayerSpec(
    "Ensemble", Ensemble,
    (_o("mode", str, "mean", "mean, weighted or vote", check=_choice("mean", "weighted", "vote")),
     _o("weights", (tuple, type(None)), None, "one positive weight per member",
        check=_ensemble_weights),
     _o("learnable", bool, False, "weights trained as parameters", check=_ensemble_learnable)),
    infer=lambda shapes: {"n": len(shapes)}, many=True,
    doc="combine several members' outputs: mean, weighted mean or majority vote"))


class GatedFusion(nn.Module):
    """A learned per-feature choice between inputs of one shape ``[..., D]``.

    Two inputs: ``g = sigmoid(W [a; b] + c)`` (one gate per feature) and the result is
    ``g * a + (1 - g) * b``. ``n > 2`` inputs: ``W`` gives ``n`` logits per feature, a
    softmax over the inputs turns them into weights ``w_i`` and the result is
    ``sum_i w_i * x_i``.
    """

    def __init__(self, n: int, dim: int) -> None:
        super().__init__()
        self.n, self.dim = n, dim
        self.gate = nn.Linear(n * dim, dim if n == 2 else n * dim)

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        logits = self.gate(torch.cat(xs, dim=-1))
        if self.n == 2:
            g = torch.sigmoid(logits)
            return g * xs[0] + (1 - g) * xs[1]
        w = logits.unflatten(-1, (self.n, self.dim)).softmax(dim=-2)
        return (torch.stack(xs, dim=-2) * w).sum(dim=-2)

    def extra_repr(self) -> str:
        return f"n={self.n}, dim={self.dim}"


class Attention(nn.Module):
    """Multi-head attention of queries ``[B, Tq, dim]`` over keys and values
    ``[B, Tk, kdim]``: ``softmax(q k^T / sqrt(dim / heads)) v``, per head, then ``out``.

    A key padding mask ``[B, Tk]`` (bool) keeps the keys where it is true; a row that
    keeps none gives zeros (where ``nn.MultiheadAttention`` gives NaN). ``dropout``
    drops attention weights while training, as ``nn.MultiheadAttention`` does.
    """

    def __init__(self, dim: int, heads: int, kdim: int | None = None, dropout: float = 0.0,
                 bias: bool = True) -> None:
        super().__init__()
        kdim = dim if kdim is None else kdim
        if dim % heads:
            raise ValueError(f"heads={heads} does not divide dim={dim}")
        self.dim, self.kdim, self.heads, self.dropout = dim, kdim, heads, dropout
        self.q = nn.Linear(dim, dim, bias)
        self.k = nn.Linear(kdim, dim, bias)
        self.v = nn.Linear(kdim, dim, bias)
        self.out = nn.Linear(dim, dim, bias)
        for proj in (self.q, self.k, self.v):  # nn.MultiheadAttention's initialisation
            nn.init.xavier_uniform_(proj.weight)
        for proj in (self.q, self.k, self.v, self.out):
            if proj.bias is not None:
                nn.init.zeros_(proj.bias)

    def attend(self, query: torch.Tensor, context: torch.Tensor,
               mask: torch.Tensor | None = None) -> torch.Tensor:
        b, tq, tk = query.shape[0], query.shape[1], context.shape[1]
        q = self.q(query).unflatten(-1, (self.heads, -1)).transpose(1, 2)
        k = self.k(context).unflatten(-1, (self.heads, -1)).transpose(1, 2)
        v = self.v(context).unflatten(-1, (self.heads, -1)).transpose(1, 2)
        keep = empty = None
        if mask is not None:
            empty = ~mask.any(dim=1)  # such a row attends to every key, then gives zeros
            keep = (mask | empty[:, None])[:, None, None, :]
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=keep,
                                           dropout_p=self.dropout if self.training else 0.0)
        y = self.out(y.transpose(1, 2).reshape(b, tq, self.dim))
        return y if empty is None else y.masked_fill(empty[:, None, None], 0.0)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, kdim={self.kdim}, heads={self.heads}, dropout={self.dropout}"


class SelfAttention(Attention):
    """A sequence attending over itself: ``MultiheadAttention(x)`` or ``(x, mask)``."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0, bias: bool = True) -> None:
        super().__init__(dim, heads, None, dropout, bias)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.attend(x, x, mask)


class CrossAttention(Attention):
    """Queries attending over a context: ``CrossAttention(q, ctx)`` or ``(q, ctx, mask)``."""

    def forward(self, query: torch.Tensor, context: torch.Tensor,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.attend(query, context, mask)


def _heads(value, shapes, options):
    if not 1 <= value <= MAX_SIZE:
        return f"a whole number from 1 to 2^48 = {MAX_SIZE}"
    dim = shapes[0][-1]
    if _is_int(dim) and dim % value:
        return f"a divisor of the input's {dim} features"
    return None


def _mask_fits(keys: tuple, mask: tuple, shown_keys: tuple, shown_mask: tuple,
               of: str) -> str | None:
    if tuple(mask) != tuple(keys[:2]):
        return (f"needs a mask [B, T] of the {of}'s first two sizes: the {of} is "
                f"{fmt_shape(shown_keys)}, the mask {fmt_shape(shown_mask)}")
    return None


def _agree_self(shapes, shown):
    if len(shapes) < 2:
        return None
    msg = _mask_fits(shapes[0], shapes[1], shown[0], shown[1], "sequence")
    return msg and f"MultiheadAttention {msg}"


def _agree_cross(shapes, shown):
    if shapes[0][0] != shapes[1][0]:
        return (f"CrossAttention needs a query and a context of one batch: the query is "
                f"{fmt_shape(shown[0])}, the context {fmt_shape(shown[1])}")
    if len(shapes) == 3 and (msg := _mask_fits(shapes[1], shapes[2], shown[1], shown[2],
                                               "context")):
        return f"CrossAttention {msg}"
    return None


def _attention_options():
    return (_o("heads", int, doc="attention heads (a divisor of the features)",
               check=_heads),
            _o("dropout", float, 0.0, "dropout of the attention weights while training",
               check=_number(0, 1)),
            _o("bias", bool, True))


_MASK = Input("mask", (2,), "bool", optional=True)

register_layer(LayerSpec(
    "GatedFusion", GatedFusion, infer=lambda shapes: {"n": len(shapes), "dim": shapes[0][-1]},
    ranks=(2, 3), many=True,
    doc="a learned per-feature gate between inputs of one shape: g*a + (1-g)*b"))
register_layer(LayerSpec(
    "MultiheadAttention", SelfAttention, _attention_options(),
    infer=lambda shapes: {"dim": shapes[0][-1]},
    inputs=(Input("sequence", (3,)), _MASK), agree=_agree_self,
    doc="self-attention over a sequence [B, T, D] (optional [B, T] bool mask) → [B, T, D]"))
register_layer(LayerSpec(
    "CrossAttention", CrossAttention, _attention_options(),
    infer=lambda shapes: {"dim": shapes[0][-1], "kdim": shapes[1][-1]},
    inputs=(Input("query", (3,)), Input("context", (3,)), _MASK), agree=_agree_cross,
    doc="queries [B, Tq, D] attending over a context [B, Tk, Dk] → [B, Tq, D]"))
