"""Compression of a compiled module as its spec says: `adapt ... with prune(...)` and
`adapt ... with quantize(...)` applied to a SynthModule.

The check resolved each statement to its layers (``graph.graph["compression"]``);
this applies them. Pruning changes the module in place and records the shapes it left on
``model.pruned`` (an artifact saves them, so `load_compiled` rebuilds the pruned module);
the training sets are applied again to the new parameters. Quantisation returns a new
int8 fx module (see :mod:`synthdsl.library.quantize`), which is measured and used for
inference, not saved as an artifact: it is made again in seconds from the float one.
"""

from __future__ import annotations

from typing import Callable, Iterable, Sequence

import torch
from torch import fx, nn

from synthdsl.lang.errors import SynthError
from synthdsl.library import quantize as q
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
                                    inputs, loss, _span(model, plan)))
    model.pruned = {**model.pruned, **changed}
    model._apply_training_sets()
    return changed


def quantize_compiled(model, batches: Iterable[Sequence[torch.Tensor]],
                      fine_tune: Callable[[fx.GraphModule], None] | None = None,
                      mode: str | None = None) -> nn.Module:
    """The int8 module of `model` as its spec's quantize statement says (`mode` overrides
    it): `batches` (model inputs) calibrate "static" and trace "qat", which `fine_tune`
    trains."""
    stated = plans(model, "quantize")
    if not stated:
        raise SynthError("S403", f"'{model.graph.name}' has no quantize statement",
                         hint='add one: adapt * with quantize(mode="static")')
    plan = stated[0]
    mode = mode or plan["options"]["mode"]
    batches = [tuple(b) for b in batches]
    if mode == "dynamic":
        return q.quantize_dynamic_layers(model, plan["modules"])
    if mode == "static":
        return q.quantize_static(model.graph_module, plan["modules"], batches)
    if fine_tune is None:
        raise ValueError("quantisation-aware training needs a fine_tune function")
    return q.quantize_qat(model.graph_module, plan["modules"], batches[0], fine_tune)
