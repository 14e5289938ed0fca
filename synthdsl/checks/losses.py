"""Loss statements checked on the meta device: the loss exists, takes as many values as it
reads with the shapes it needs, and its options are its own.

A ``contrastive`` loss with ``learn_temperature=true`` owns one parameter, CLIP's logit
scale (``loss.logit_scale_K`` for the K-th loss statement, ``log(1 / temperature)`` at
first): the loss node records it, so the check's counts and the training sets see it as
they see a layer's.
"""

from __future__ import annotations

import torch

from synthdsl.checks.context import CheckContext
from synthdsl.lang.errors import SynthError, did_you_mean, fmt_shape
from synthdsl.lang.options import LOSSES


def scale_name(node_id: str) -> str:
    """The name of a loss node's learned logit scale.

    >>> scale_name("loss:2")
    'loss.logit_scale_2'
    """
    return f"loss.logit_scale_{node_id.rpartition(':')[2]}"


def run_loss(ctx: CheckContext, n, node, args):
    kind = node["name"]
    if kind not in LOSSES:
        raise SynthError("S402", f"unknown loss '{kind}'", node["kind_span"],
                         hint=did_you_mean(kind, LOSSES) or "losses: " + ", ".join(LOSSES))
    count, allowed = LOSSES[kind].values, LOSSES[kind].options
    if len(args) != count:
        raise SynthError("S402", f"loss {kind} takes {count} value{'s' if count > 1 else ''},"
                         f" found {len(args)}", node["span"])
    for key, value in node["options"].items():
        if key not in allowed:
            raise SynthError("S402", f"loss {kind} has no option '{key}'",
                             node["option_spans"][key],
                             hint=did_you_mean(key, allowed) or "its options: "
                             + ", ".join(allowed))
        if not allowed[key].accepts(value):
            raise SynthError("S402", f"loss {kind} option '{key}' expects "
                             f"{allowed[key].expects}, found {value!r}",
                             node["option_spans"][key])
    if any(not isinstance(a, torch.Tensor) for a in args):
        raise SynthError("S302", f"loss {kind} takes tensors", node["span"])
    if kind == "ce" and args[0].dim() != 2:
        raise SynthError("S301", f"loss ce takes class scores [B, classes]; "
                         f"{ctx.describe(node['inputs'][0])} is "
                         f"{fmt_shape(ctx.shape_of(args[0]))}", node["span"])
    if kind == "contrastive":
        for i, a in enumerate(args):
            if a.dim() != 2:
                raise SynthError("S301", f"loss contrastive takes embeddings [B, D]; "
                                 f"{ctx.describe(node['inputs'][i])} is "
                                 f"{fmt_shape(ctx.shape_of(a))}",
                                 node.get("arg_spans", (node["span"],) * 2)[i],
                                 hint="pool or flatten it to one vector per sample, e.g. "
                                 "GlobalAvgPool or Flatten, then Linear")
        if node["options"].get("learn_temperature"):
            node["parameters"] = {scale_name(n): 1}
            node["params"] = 1
        if args[0].shape[1] != args[1].shape[1]:
            raise SynthError("S301", f"loss contrastive compares embeddings of one size: "
                             f"{ctx.describe(node['inputs'][0])} is "
                             f"{fmt_shape(ctx.shape_of(args[0]))}, "
                             f"{ctx.describe(node['inputs'][1])} is "
                             f"{fmt_shape(ctx.shape_of(args[1]))}",
                             node.get("arg_spans", (node["span"],) * 2)[1],
                             hint="project both to one size with Linear(out=D)")
    if count == 2 and args[0].shape != args[1].shape:
        raise SynthError("S301", f"loss {kind} compares two values of one shape: "
                         f"{ctx.describe(node['inputs'][0])} is "
                         f"{fmt_shape(ctx.shape_of(args[0]))}, "
                         f"{ctx.describe(node['inputs'][1])} is "
                         f"{fmt_shape(ctx.shape_of(args[1]))}", node["span"],
                         hint="add an adapter layer (e.g. Linear) to match them")
    return args[0]
