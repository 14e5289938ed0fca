"""Compression of a compiled module as its spec says: `adapt ... with prune(...)` and
`adapt ... with quantize(...)` applied to a SynthModule.

The check resolved each statement to its layers (``graph.graph["compression"]``);
this applies them. Pruning changes the module in place and records the shapes it left on
``model.pruned`` (an artifact saves them, so `load_compiled` rebuilds the pruned module);
the training sets are applied again to the new parameters. Quantisation returns a new
int8 module (see :mod:`synthdsl.library.quantize`) that keeps its float module's spec and
what makes it again, so an artifact saves it (:mod:`synthdsl.build.quantized`).
"""

from __future__ import annotations

from typing import Callable, Iterable, Sequence

import torch
from torch import fx, nn

from synthdsl.lang.errors import SynthError
from synthdsl.build.quantized import QuantizedModule, quantize_module
from synthdsl.library.prune import prune_layers


def plans(model, method: str) -> list[dict]:
    """The spec's resolved statements of `method` ("prune" or "quantize")."""
    return [p for p in model.graph.graph.get("compression", []) if p["method"] == method]


def _span(model, plan: dict):
    """Where the statement is written (for a diagnostic raised while it runs)."""
    for rule in model.graph.graph["rules"]:
        if rule["action"] == "adapt" and rule["span"].line == plan["line"]:
            return rule["span"]
    return None


def prune_compiled(model, inputs: Sequence[torch.Tensor] | None = None,
                   loss: Callable[[nn.Module], torch.Tensor] | None = None) -> dict:
    """Apply every prune statement of `model`'s spec, in order; the shapes changed.

    `inputs` trace the module (by default :meth:`~SynthModule.example_inputs`); `loss`
    gives Taylor importance its gradients."""
    inputs = tuple(inputs) if inputs is not None else model.example_inputs(2)
    changed: dict[str, list[int]] = {}
    for plan in plans(model, "prune"):
        opts = plan["options"]
        changed.update(prune_layers(model, plan["modules"], opts["ratio"], opts["importance"],
                                    inputs, loss, _span(model, plan), opts.get("macs"),
                                    opts.get("heads")))
    model.pruned = {**model.pruned, **changed}
    model._apply_training_sets()
    return changed


def quantize_compiled(model, batches: Iterable[Sequence[torch.Tensor]],
                      fine_tune: Callable[[fx.GraphModule], None] | None = None,
                      mode: str | None = None) -> QuantizedModule:
    """The int8 module of `model` as its spec's quantize statement says (`mode` overrides
    it): `batches` (model inputs) calibrate "static" and trace "qat", which `fine_tune`
    trains. It keeps what an artifact needs to make it again
    (:mod:`synthdsl.build.quantized`)."""
    stated = plans(model, "quantize")
    if not stated:
        raise SynthError("S403", f"'{model.graph.name}' has no quantize statement",
                         hint='add one: adapt * with quantize(mode="static")')
    plan = stated[0]
    return quantize_module(model, mode or plan["options"]["mode"], plan["modules"], batches,
                           fine_tune)
