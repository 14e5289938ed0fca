"""A model's outputs over a dataset, and the graph that also outputs each ensemble member.

:func:`predict_values` runs a compiled spec in eval mode over every sample of a dataset
(or, under DDP, each process over its share, gathered on all) and returns each output on
the CPU; with ``members=True`` it also returns what each member of an ``Ensemble`` layer
gives alone (:func:`graph_with_members`), so an evaluation can show what the combination
adds.
"""

from __future__ import annotations

import contextlib
from typing import Sequence

import torch
from torch import fx

from synthdsl.library.layers import Ensemble
from synthdsl.train.distributed import Dist, gather_rows
from synthdsl.train.feed import Feed, to_device
from synthdsl.train.images import ImageData
from synthdsl.train.preprocess import Preprocess


def graph_with_members(model) -> tuple[fx.GraphModule, dict[str, tuple[str, str]]]:
    """The inference graph with every Ensemble member as an extra output; for each extra
    output, the ensembles it is a member of (comma-separated) and the member's name.
    A member of several ensembles is one output, named after the member (``a``), or
    ``averaged/a`` where that name is taken."""
    gm = model.graph_module
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    out_value = graph.graph_copy(gm.graph, env)
    outputs = dict(out_value) if isinstance(out_value, dict) else {
        model.output_names[0]: out_value}
    members: dict[fx.Node, list[str]] = {}
    for node in gm.graph.nodes:
        if node.op != "call_module" or not isinstance(gm.get_submodule(node.target), Ensemble):
            continue
        ens = node.meta.get("synth", {}).get("name", node.name)
        for member in node.args:
            if isinstance(member, fx.Node):
                members.setdefault(member, []).append(ens)
    extra: dict[str, tuple[str, str]] = {}
    taken = set(outputs)
    for member, ensembles in members.items():
        if any(v is env[member] for v in outputs.values()):
            continue  # already an output of its own
        name = member.meta.get("synth", {}).get("name", member.name) or member.name
        key = name if name not in taken else f"{ensembles[0]}/{name}"
        while key in taken:  # a name that is taken both ways: number it
            key = f"{key}'"
        taken.add(key)
        outputs[key] = env[member]
        extra[key] = (", ".join(ensembles), name)
    graph.output(outputs)
    graph.lint()
    return fx.GraphModule(gm, graph, class_name=f"{type(gm).__name__}WithMembers"), extra


@torch.no_grad()
def predict_values(model, data: ImageData, preprocess: Preprocess | Feed,
                   batch_size: int = 256, device: str | torch.device = "cpu",
                   names: Sequence[str] | None = None, members: bool = False,
                   dist: Dist | None = None, amp: torch.dtype | None = None,
                   train_values: bool = False) -> dict[str, torch.Tensor]:
    """Every output (or those in `names`), and with `members` every Ensemble member, for
    each sample of `data` in order, on the CPU; with `train_values` also every value a loss
    reads (``forward_train``). The model runs in eval mode; its mode is restored
    afterwards. Under DDP each process predicts a share and all get the whole. `preprocess`
    is a ``Preprocess`` or, for named inputs, a ``Feed`` (:mod:`synthdsl.train.feed`)."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    gm, _ = graph_with_members(model) if members else (None, {})
    positions = torch.arange(len(data))
    if dist is not None and dist.active:
        positions = positions[dist.rank::dist.world]
    chunks: dict[str, list[torch.Tensor]] = {}
    try:
        for i in range(0, len(positions), batch_size):
            pos = positions[i:i + batch_size]
            x = preprocess.inputs(to_device(data.images(pos), device))
            ctx = torch.autocast(device.type, dtype=amp) if amp else contextlib.nullcontext()
            with ctx:
                out = gm(*x) if gm is not None else (
                    model.forward_train(*x) if train_values else model(*x))
            out = out if isinstance(out, dict) else {model.output_names[0]: out}
            for k, v in out.items():
                if names is not None and k not in names:
                    continue
                if isinstance(v, torch.Tensor):
                    chunks.setdefault(k, []).append(v.float().cpu())
    finally:
        model.train(was_training)
    values = {k: torch.cat(v) for k, v in chunks.items()}
    if dist is not None and dist.active:
        values = gather_rows(values, positions, len(data), dist)
    return values
