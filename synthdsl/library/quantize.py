"""Quantisation to int8 on the CPU with torch's own flows (``torch.ao.quantization``).

* ``dynamic`` — `quantize_dynamic`: the named Linear layers hold int8 weights and
  quantise their inputs on the fly; nothing to calibrate.
* ``static`` — post-training, fx graph mode (`prepare_fx` / `convert_fx`): observers on
  the named layers see calibration batches, then Conv and Linear run as int8 kernels
  (Conv + BatchNorm + ReLU fused) between quantise and dequantise steps.
* ``qat`` — `prepare_qat_fx` (BatchNorm folded into its convolution first): fake
  quantisation in the forward while the model is
  fine-tuned, then converted as ``static`` is.

The compiled module's fx graph is traced again by torch's quantisation tracer (its parts'
traced code included), so the result is a `torch.fx.GraphModule`, not a SynthModule; it
takes the same inputs and gives the same outputs. The x86 engine (fbgemm) is used.

>>> import torch
>>> from torch import nn
>>> m = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 2)).eval()
>>> q = quantize_dynamic_layers(m, ["0", "2"])
>>> type(q[0]).__module__.endswith("dynamic.modules.linear"), type(m[0]).__name__
(True, 'Linear')
"""

from __future__ import annotations

import copy
import warnings
from typing import Callable, Iterable, Sequence

import torch
from torch import fx, nn
from torch.fx.experimental.optimization import fuse

ENGINE = "x86"


def _ao():
    import torch.ao.quantization as ao
    from torch.ao.quantization import quantize_fx

    torch.backends.quantized.engine = ENGINE
    return ao, quantize_fx


def quantize_dynamic_layers(model: nn.Module, layers: Sequence[str]) -> nn.Module:
    """A copy of `model` whose named Linear layers are dynamic int8."""
    ao, _ = _ao()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notice
        return ao.quantize_dynamic(copy.deepcopy(model).eval(), set(layers), dtype=torch.qint8)


def _mapping(model: nn.Module, layers: Sequence[str], qat: bool):
    """torch's default int8 mapping (every operation it can quantise), less the Linear
    and Conv layers not in `layers`, which stay float."""
    ao, _ = _ao()
    mapping = (ao.get_default_qat_qconfig_mapping(ENGINE) if qat
               else ao.get_default_qconfig_mapping(ENGINE))
    named = set(layers)
    for name, m in model.named_modules():
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)) and name not in named:
            mapping.set_module_name(name, None)
    return mapping


def prepare_static(graph_module: fx.GraphModule, layers: Sequence[str],
                   inputs: Sequence[torch.Tensor], qat: bool = False) -> fx.GraphModule:
    """A copy of `graph_module` with observers (or fake quantisation, `qat`) on `layers`."""
    _, qfx = _ao()
    gm = copy.deepcopy(graph_module)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if qat:  # BatchNorm folded into its convolution first: its statistics stay put
            gm = fuse(_retraced(gm.eval()), inplace=True, no_trace=True)
            return qfx.prepare_qat_fx(gm.train(), _mapping(gm, layers, True), tuple(inputs),
                                      _leaves(gm))
        return qfx.prepare_fx(gm.eval(), _mapping(gm, layers, False), tuple(inputs),
                              _leaves(gm))


class _Tracer(fx.Tracer):
    """torch.fx's tracer, with synthdsl's own layers as leaves (they are not traceable)."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return type(m).__module__.startswith("synthdsl.library") or \
            super().is_leaf_module(m, qualname)


def _retraced(model: nn.Module) -> fx.GraphModule:
    """`model` traced down to torch's layers (a source installed whole is traced into, so
    its convolutions and batch norms can be fused), synthdsl's own layers kept whole."""
    return fx.GraphModule(model, _Tracer().trace(model))


def _leaves(model: nn.Module):
    """synthdsl's own layers (`GlobalAvgPool`, ...) are called as they are, not traced
    into: they stay float, between a dequantise and a quantise step."""
    from torch.ao.quantization.fx.custom_config import PrepareCustomConfig

    own = sorted({type(m) for m in model.modules()
                  if type(m).__module__.startswith("synthdsl.library")}, key=str)
    return PrepareCustomConfig().set_non_traceable_module_classes(own)


def convert(prepared: fx.GraphModule) -> fx.GraphModule:
    """The int8 module of a prepared (calibrated or fine-tuned) one."""
    _, qfx = _ao()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return qfx.convert_fx(copy.deepcopy(prepared).eval())


def int8_layers(model: nn.Module) -> list[str]:
    """The modules of `model` that run int8 kernels (quantised Linear and Conv)."""
    return [n for n, m in model.named_modules()
            if type(m).__module__.startswith(("torch.ao.nn.quantized", "torch.nn.quantized",
                                              "torch.ao.nn.intrinsic.quantized"))
            and hasattr(m, "weight")]
