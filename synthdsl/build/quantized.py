"""An int8 model of a compiled spec, kept and saved: what `adapt ... with quantize(...)`
makes of a SynthModule, beside the float module it came from.

:func:`quantize_module` quantises as the spec says (:mod:`synthdsl.library.quantize`:
dynamic, static post-training, quantisation-aware) and returns a :class:`QuantizedModule`:
it runs the int8 fx module, and keeps the float module's spec, graph and names, and the
state that makes the int8 module again. That state is float and integer tensors only, so an
artifact holds it as safetensors (:func:`synthdsl.build.artifact.save_compiled`): for
``dynamic``, the float weights; for ``static`` and ``qat``, the prepared module's state —
the float (or fine-tuned, batch-norm-folded) weights and every observer's statistics (or
fake-quantisation scale and zero point). :func:`rebuild` prepares the spec's float module
the same way, loads that state into it and converts it: the int8 module the file came from,
with the same outputs (a test checks them bit for bit).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
from torch import fx, nn

from synthdsl.library import quantize as q


class QuantizedModule(nn.Module):
    """The int8 module of a compiled spec (``int8``, whose tensors and children it shows
    as its own), its float module's graph and names, and what rebuilds it (`mode`,
    `layers`, `state`)."""

    def __init__(self, int8: nn.Module, base, mode: str, layers: Sequence[str],
                 state: Mapping[str, torch.Tensor]) -> None:
        super().__init__()
        # the int8 module's own tensors and children, under its own names (its state dict,
        # named_modules() read as its); it and the float module are not children
        object.__setattr__(self, "int8", int8)
        object.__setattr__(self, "base", base)
        self._parameters, self._buffers, self._modules = \
            int8._parameters, int8._buffers, int8._modules
        self.mode, self.layers = mode, list(layers)
        self.state = {k: v.detach().cpu().clone() for k, v in state.items()}
        self.input_names, self.output_names = base.input_names, base.output_names

    @property
    def graph(self):
        return self.base.graph

    @property
    def spec(self) -> str:
        return self.base.spec

    @property
    def graph_module(self) -> fx.GraphModule:
        """The int8 fx graph (a dynamic module's is its float graph, int8 Linear inside)."""
        return self.int8 if isinstance(self.int8, fx.GraphModule) else self.int8.graph_module

    @property
    def record(self) -> dict[str, Any]:
        """What an artifact says of it (``quantized`` in its metadata)."""
        return {"mode": self.mode, "layers": self.layers}

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.int8(*args, **kwargs)


def _prepared(base, mode: str, layers: Sequence[str], inputs: Sequence[torch.Tensor]
              ) -> fx.GraphModule:
    return q.prepare_static(base.graph_module, layers, inputs, qat=mode == "qat")


def quantize_module(base, mode: str, layers: Sequence[str],
                    batches: Iterable[Sequence[torch.Tensor]],
                    fine_tune: Callable[[fx.GraphModule], None] | None = None
                    ) -> QuantizedModule:
    """`base` (a SynthModule) quantised by `mode` on `layers`: `batches` calibrate
    ``static`` and trace ``qat``, which `fine_tune` trains."""
    if mode == "dynamic":
        return QuantizedModule(q.quantize_dynamic_layers(base, layers), base, mode, layers,
                               base.state_dict())
    batches = [tuple(b) for b in batches]
    prepared = _prepared(base, mode, layers, batches[0])
    if mode == "qat":
        if fine_tune is None:
            raise ValueError("quantisation-aware training needs a fine_tune function")
        fine_tune(prepared)
    else:
        with torch.no_grad():
            for b in batches:
                prepared(*b)
    return QuantizedModule(q.convert(prepared), base, mode, layers, prepared.state_dict())


def rebuild(base, record: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]
            ) -> QuantizedModule:
    """The int8 module an artifact saved, made again from its spec's float module `base`
    (built, not loaded) and the saved `tensors`; ValueError naming the tensors that do not
    fit (the caller's S210)."""
    mode, layers = record["mode"], list(record["layers"])
    if mode == "dynamic":
        target = base
    else:
        target = _prepared(base, mode, layers, base.example_inputs(2))
    want = {k: tuple(v.shape) for k, v in target.state_dict().items()}
    missing = sorted(set(want) - set(tensors))
    unexpected = sorted(set(tensors) - set(want))
    grows = _observers(target)  # an observer's statistics take their shape when it runs
    shaped = sorted(k for k in set(want) & set(tensors) if tuple(tensors[k].shape) != want[k]
                    and k.rsplit(".", 1)[0] not in grows)
    if missing or unexpected or shaped:
        raise ValueError(f"the {mode} int8 module of its spec has {len(missing)} tensors the "
                         f"file does not hold, the file {len(unexpected)} it does not have, "
                         f"{len(shaped)} of another shape: "
                         f"{[*missing[:3], *unexpected[:3], *shaped[:3]]}")
    target.load_state_dict(dict(tensors))
    if mode == "dynamic":  # the float weights loaded: quantised as when it was made
        return quantize_module(base, mode, layers, ())
    return QuantizedModule(q.convert(target), base, mode, layers, target.state_dict())


def _observers(model: nn.Module) -> set[str]:
    """The observers and fake-quantisation modules of a prepared module, by name."""
    from torch.ao.quantization import FakeQuantizeBase, ObserverBase

    return {n for n, m in model.named_modules() if isinstance(m, (ObserverBase,
                                                                  FakeQuantizeBase))}
