"""Parameter-efficient fine-tuning: LoRA adapters on Linear and Conv2d layers.

An adapter adds two small trainable matrices to a layer whose own weight stays
frozen: ``y = W x + (alpha / rank) · B (A x)``. ``A`` starts random and ``B`` at
zero, so a freshly adapted layer computes exactly what it did before. The
adapter lives on the layer itself (parameters ``lora_A`` and ``lora_B`` and a
forward hook), so every other state-dict key is unchanged, and
:func:`merge_lora` folds it back into the weight.

>>> import torch
>>> lin = torch.nn.Linear(6, 4)
>>> x = torch.randn(3, 6)
>>> before = lin(x)
>>> add_lora(lin, rank=2, alpha=4)
>>> torch.equal(lin(x), before)
True
>>> with torch.no_grad():
...     _ = lin.lora_B.normal_()
>>> adapted = lin(x)
>>> merge_lora(lin)
>>> torch.allclose(lin(x), adapted, atol=1e-6), hasattr(lin, "lora_A")
(True, False)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

ADAPTABLE = (nn.Linear, nn.Conv2d)

#: The largest LoRA rank (2^31 - 1). A rank this large is far past full rank for any layer;
#: the check's budget (S305) refuses ranks whose matrices no machine could hold long before.
MAX_RANK = 2 ** 31 - 1


def lora_shapes(module: nn.Module, rank: int) -> dict[str, tuple[int, ...]]:
    """The shapes of the adapter's two parameters for `module`."""
    if not 1 <= rank <= MAX_RANK:
        raise ValueError(f"a LoRA rank is a whole number from 1 to {MAX_RANK}, not {rank}")
    if isinstance(module, nn.Linear):
        return {"lora_A": (rank, module.in_features), "lora_B": (module.out_features, rank)}
    if isinstance(module, nn.Conv2d):
        if module.groups != 1:
            raise ValueError("LoRA needs a convolution with groups=1 "
                             f"(this one has groups={module.groups})")
        return {"lora_A": (rank, module.in_channels, *module.kernel_size),
                "lora_B": (module.out_channels, rank)}
    raise ValueError(f"LoRA adapts Linear and Conv2d layers, not {type(module).__name__}")


def _lora_hook(module: nn.Module, args, output):
    (x,) = args[:1]
    if module.lora_dropout and module.training:
        x = F.dropout(x, module.lora_dropout, training=True)
    scale = module.lora_scale
    if isinstance(module, nn.Linear):
        return output + scale * F.linear(F.linear(x, module.lora_A), module.lora_B)
    low = F.conv2d(x, module.lora_A, None, module.stride, module.padding, module.dilation)
    return output + scale * F.conv2d(low, module.lora_B[:, :, None, None])


def add_lora(module: nn.Module, rank: int, alpha: float, dropout: float = 0.0) -> None:
    """Give `module` a LoRA adapter (A random, B zero: the output is unchanged at first);
    `dropout` drops the adapter's input while training, not the layer's own path."""
    if hasattr(module, "lora_A"):
        raise ValueError("this layer already has an adapter")
    shapes = lora_shapes(module, rank)
    weight = module.weight
    a = torch.empty(shapes["lora_A"], device=weight.device, dtype=weight.dtype)
    if a.device.type != "meta":
        nn.init.kaiming_uniform_(a.view(rank, -1), a=math.sqrt(5))
    module.lora_A = nn.Parameter(a)
    module.lora_B = nn.Parameter(torch.zeros(shapes["lora_B"], device=weight.device,
                                             dtype=weight.dtype))
    module.lora_scale = alpha / rank
    module.lora_dropout = float(dropout)
    module._lora_handle = module.register_forward_hook(_lora_hook)


def merge_lora(module: nn.Module) -> None:
    """Fold the adapter into the weight and remove it."""
    with torch.no_grad():
        a, b = module.lora_A, module.lora_B
        if isinstance(module, nn.Linear):
            delta = b @ a
        else:
            delta = torch.einsum("or,rikl->oikl", b, a)
        module.weight.add_(module.lora_scale * delta.to(module.weight.dtype))
    module._lora_handle.remove()
    del module.lora_A, module.lora_B, module.lora_scale, module.lora_dropout
    del module._lora_handle
