"""Parameter-efficient fine-tuning: LoRA adapters on Linear and Conv2d layers.

An adapter adds two small trainable matrices to a layer whose own weight stays
frozen: ``y = W x + w · (alpha / rank) · B (A x)``. ``A`` starts random and ``B`` at
zero, so a freshly adapted layer computes exactly what it did before. The
adapter lives on the layer itself (two parameters and one forward hook for all
its adapters), so every other state-dict key is unchanged, and
:func:`merge_lora` folds it back into the weight.

A layer may hold several adapters, each under a name (PEFT's named adapters): the
unnamed one, ``default``, has the parameters ``lora_A`` and ``lora_B``; one named
``sketch`` has ``lora_sketch_A`` and ``lora_sketch_B``. Each adapter has a weight
``w`` (1 when added): the layer adds every adapter's update times its weight, and an
adapter of weight 0 is inactive (it is not computed and gets no gradient).

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
>>> add_lora(lin, rank=1, alpha=1, name="sketch")
>>> sorted(adapters_of(lin)), [n for n, _ in lin.named_parameters()][2:]
(['default', 'sketch'], ['lora_A', 'lora_B', 'lora_sketch_A', 'lora_sketch_B'])
>>> set_weights(lin, {"default": 1.0, "sketch": 0.0})
>>> merge_lora(lin)
['default']
>>> torch.allclose(lin(x), adapted, atol=1e-6), hasattr(lin, "lora_A"), sorted(adapters_of(lin))
(True, False, ['sketch'])
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

ADAPTABLE = (nn.Linear, nn.Conv2d)

#: The largest LoRA rank (2^31 - 1). A rank this large is far past full rank for any layer;
#: the check's budget (S305) refuses ranks whose matrices no machine could hold long before.
MAX_RANK = 2 ** 31 - 1
#: The name of the unnamed adapter, whose parameters are ``lora_A`` and ``lora_B``.
DEFAULT = "default"
#: What an adapter's name may be: a word that can sit inside a parameter name.
NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
_TENSOR = re.compile(r"lora_(?:(?P<name>[A-Za-z][A-Za-z0-9_]*)_)?(?P<which>[AB])")


@dataclass
class Adapter:
    """One adapter of a layer: its rank, scale (alpha / rank), input dropout, and weight
    (the multiplier of its update; 0 makes it inactive)."""

    rank: int
    scale: float
    dropout: float = 0.0
    weight: float = 1.0


def param_names(name: str = DEFAULT) -> tuple[str, str]:
    """The two parameters of adapter `name` on its layer.

    >>> param_names(), param_names("sketch")
    (('lora_A', 'lora_B'), ('lora_sketch_A', 'lora_sketch_B'))
    """
    return ("lora_A", "lora_B") if name == DEFAULT else (f"lora_{name}_A", f"lora_{name}_B")


def adapter_of(tensor: str) -> str | None:
    """The adapter a tensor (a qualified name) belongs to, or None for any other tensor.

    >>> adapter_of("h.0.lora_A"), adapter_of("h.0.lora_my_task_B"), adapter_of("h.0.weight")
    ('default', 'my_task', None)
    """
    m = _TENSOR.fullmatch(tensor.rsplit(".", 1)[-1])
    if m is None:
        return None
    return m.group("name") or DEFAULT


def key(layer: str, name: str = DEFAULT) -> str:
    """How one adapter of one layer is named in records and messages: the layer for the
    default adapter, ``layer:name`` for a named one.

    >>> key("h.0"), key("h.0", "sketch")
    ('h.0', 'h.0:sketch')
    """
    return layer if name == DEFAULT else f"{layer}:{name}"


def adapters_of(module: nn.Module) -> dict[str, Adapter]:
    """The adapters on `module`, by name, in the order they were added ({} for none)."""
    return module.__dict__.get("lora_adapters", {})


def lora_shapes(module: nn.Module, rank: int, name: str = DEFAULT) -> dict[str, tuple[int, ...]]:
    """The shapes of adapter `name`'s two parameters for `module`."""
    if not 1 <= rank <= MAX_RANK:
        raise ValueError(f"a LoRA rank is a whole number from 1 to {MAX_RANK}, not {rank}")
    a, b = param_names(name)
    if isinstance(module, nn.Linear):
        return {a: (rank, module.in_features), b: (module.out_features, rank)}
    if isinstance(module, nn.Conv2d):
        if module.groups != 1:
            raise ValueError("LoRA needs a convolution with groups=1 "
                             f"(this one has groups={module.groups})")
        return {a: (rank, module.in_channels, *module.kernel_size),
                b: (module.out_channels, rank)}
    raise ValueError(f"LoRA adapts Linear and Conv2d layers, not {type(module).__name__}")


def _delta(module: nn.Module, x: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    if isinstance(module, nn.Linear):
        return F.linear(F.linear(x, a), b)
    low = F.conv2d(x, a, None, module.stride, module.padding, module.dilation)
    return F.conv2d(low, b[:, :, None, None])


def _lora_hook(module: nn.Module, args, output):
    (x,) = args[:1]
    for name, adapter in adapters_of(module).items():
        if adapter.weight == 0:
            continue
        a, b = (getattr(module, p) for p in param_names(name))
        xin = F.dropout(x, adapter.dropout, training=True) \
            if adapter.dropout and module.training else x
        output = output + (adapter.weight * adapter.scale) * _delta(module, xin, a, b)
    return output


def add_lora(module: nn.Module, rank: int, alpha: float, dropout: float = 0.0,
             name: str = DEFAULT) -> None:
    """Give `module` a LoRA adapter called `name` (A random, B zero: the output is
    unchanged at first); `dropout` drops the adapter's input while training, not the
    layer's own path."""
    if not NAME.fullmatch(name):
        raise ValueError(f"an adapter's name is a word of letters, digits and _ that starts "
                         f"with a letter, not {name!r}")
    adapters = module.__dict__.setdefault("lora_adapters", {})
    if name in adapters:
        raise ValueError(f"this layer already has an adapter named '{name}'")
    shapes = lora_shapes(module, rank, name)
    pa, pb = param_names(name)
    weight = module.weight
    a = torch.empty(shapes[pa], device=weight.device, dtype=weight.dtype)
    if a.device.type != "meta":
        nn.init.kaiming_uniform_(a.view(rank, -1), a=math.sqrt(5))
    setattr(module, pa, nn.Parameter(a))
    setattr(module, pb, nn.Parameter(torch.zeros(shapes[pb], device=weight.device,
                                                 dtype=weight.dtype)))
    adapters[name] = Adapter(rank, alpha / rank, float(dropout))
    if "_lora_handle" not in module.__dict__:
        module._lora_handle = module.register_forward_hook(_lora_hook)


def set_weights(module: nn.Module, weights: Mapping[str, float]) -> None:
    """Set the weight of each adapter of `module` that `weights` names."""
    for name, w in weights.items():
        adapters_of(module)[name].weight = float(w)


def remove_lora(module: nn.Module, name: str) -> None:
    """Take adapter `name` off `module`, its parameters with it."""
    adapters = adapters_of(module)
    del adapters[name]
    for p in param_names(name):
        delattr(module, p)
    if not adapters:
        module._lora_handle.remove()
        del module.__dict__["lora_adapters"], module._lora_handle


def merge_lora(module: nn.Module, names: Iterable[str] | None = None) -> list[str]:
    """Fold adapters into the weight at their weights and remove them: those `names` names,
    by default every active one (weight ≠ 0); the names merged."""
    adapters = adapters_of(module)
    chosen = [n for n, a in adapters.items() if a.weight != 0] if names is None else list(names)
    with torch.no_grad():
        for name in chosen:
            adapter = adapters[name]
            a, b = (getattr(module, p) for p in param_names(name))
            if isinstance(module, nn.Linear):
                delta = b @ a
            else:
                delta = torch.einsum("or,rikl->oikl", b, a)
            module.weight.add_((adapter.weight * adapter.scale) * delta.to(module.weight.dtype))
            remove_lora(module, name)
    return chosen
