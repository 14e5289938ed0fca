"""Structured pruning: output channels removed with Torch-Pruning's DepGraph, and a
pruned module's shapes restored on a freshly built one.

`prune_layers` ranks the output channels (features) of the named Linear and Conv layers
and removes the given fraction of them; DepGraph (traced with example inputs, so the
compiled fx module works as it is) removes what depends on them too: the next layers'
input channels, normalisation statistics, residual partners. Every other Conv/Linear is
an ignored layer (its outputs stay), and so is a named layer whose values are an output
of the model: the outputs keep their shapes. It returns the new shape of every tensor it
changed, which is what an artifact records so that `resize_to` rebuilds the same module.

Torch-Pruning is an optional dependency (``pip install 'synthdsl[compress]'``); it is
imported when pruning runs.

>>> import torch
>>> from torch import nn
>>> m = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
>>> resize_to(m, {"0.weight": [3, 4], "0.bias": [3], "2.weight": [2, 3]})
>>> m[0], m[2]
(Linear(in_features=4, out_features=3, bias=True), Linear(in_features=3, out_features=2, bias=True))
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Sequence

import torch
from torch import nn

from synthdsl.lang.errors import SynthError

#: The layers whose output channels can be ranked and removed.
PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
#: Pruning to a MAC target (``macs=``): the named layers lose up to this share of their
#: channels, in this many equal steps, until the model's MACs are at most the target.
MAX_RATIO, STEPS = 0.9, 18


def count_macs(model: nn.Module, inputs: Sequence[torch.Tensor]) -> int:
    """Multiply-adds of one forward pass of `model` on `inputs` (torch's flop counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(*inputs)
    return counter.get_total_flops() // 2


def _importance(name: str):
    import torch_pruning as tp

    if name == "taylor":
        return tp.importance.TaylorImportance()
    return tp.importance.MagnitudeImportance(p=1 if name == "l1" else 2)


def output_layers(model: nn.Module, inputs: Sequence[torch.Tensor]) -> set[str]:
    """The Conv/Linear layers whose own result is one of the model's outputs."""
    made: dict[int, str] = {}

    def seen(name: str):
        def hook(module, args, out) -> None:
            made[id(out)] = name
        return hook

    hooks = [m.register_forward_hook(seen(n)) for n, m in model.named_modules()
             if isinstance(m, PRUNABLE)]
    try:
        with torch.no_grad():
            out = model(*inputs)
    finally:
        for h in hooks:
            h.remove()
    values = out.values() if isinstance(out, dict) else out if isinstance(
        out, (tuple, list)) else [out]
    return {made[id(v)] for v in values if id(v) in made}


def prune_layers(model: nn.Module, layers: Sequence[str], ratio: float,
                 importance: str = "l1", inputs: Sequence[torch.Tensor] = (),
                 loss: Callable[[nn.Module], torch.Tensor] | None = None,
                 span: Any = None, macs: float | None = None,
                 heads: float | None = None) -> dict[str, list[int]]:
    """Remove `ratio` of the output channels of `layers` of `model`, in place; or, with
    `macs` (a share of the model's MACs to keep), as many as it takes, in :data:`STEPS`
    equal steps up to :data:`MAX_RATIO` of them, to bring the model's MACs to at most
    that share (S403 at `span` when even the most leaves more); or, with `heads`, that
    share of the heads of the attention modules whose ``qkv`` `layers` names (whole heads:
    their query, key and value rows and the output projection's columns).

    `importance` is "l1", "l2" or "taylor" (which reads the gradients of `loss(model)`).
    Returns the new shape of every parameter and buffer whose shape changed; a layer that
    cannot lose channels without changing an output is SynthError S403 at `span`."""
    try:
        import torch_pruning as tp
    except ImportError:
        raise SynthError("S404", "prune(...) needs Torch-Pruning, which is not installed",
                         span, hint="pip install 'synthdsl[compress]'") from None
    was_training = model.training
    model.eval()
    keep = output_layers(model, inputs)
    targets = {id(model.get_submodule(n)) for n in layers if n not in keep}
    attention = {model.get_submodule(n): a.num_heads for n in layers
                 if heads is not None and (a := attention_of(model, n)) is not None}
    if not targets:
        raise SynthError("S403", f"cannot prune {', '.join(map(repr, layers))}: their values "
                         "are outputs of the model", span)
    ignored = [m for m in model.modules() if isinstance(m, PRUNABLE) and id(m) not in targets]
    shapes = [tuple(v.shape) for v in _outputs(model, inputs)]
    before = {k: list(v.shape) for k, v in model.state_dict().items()}
    start = count_macs(model, inputs) if macs is not None else 0
    steps = STEPS if macs is not None else 1
    by_heads = dict(num_heads=attention, prune_num_heads=True, prune_head_dims=False,
                    head_pruning_ratio=heads) if heads is not None else {}
    with warnings.catch_warnings():  # parameters outside layers (a ViT's position table)
        warnings.filterwarnings("ignore", "Unwrapped parameters")  # are pruned as they follow
        pruner = tp.pruner.MetaPruner(model, tuple(inputs), importance=_importance(importance),
                                      pruning_ratio=MAX_RATIO if macs is not None else
                                      heads if heads is not None else ratio,
                                      iterative_steps=steps, ignored_layers=ignored,
                                      root_module_types=list(PRUNABLE),
                                      forward_fn=lambda m, x: m(*x), **by_heads)
    for _ in range(steps):
        if importance == "taylor":
            if loss is None:
                raise ValueError("Taylor importance needs a loss to take gradients of")
            model.zero_grad()
            loss(model).backward()
        pruner.step()
        model.zero_grad(set_to_none=True)
        if macs is not None and count_macs(model, inputs) <= macs * start:
            break
    if macs is not None and (left := count_macs(model, inputs)) > macs * start:
        raise SynthError("S403", f"pruning {', '.join(map(repr, layers[:3]))} by "
                         f"{MAX_RATIO:.0%} leaves {left:,} MACs, {left / start:.0%} of the "
                         f"model's {start:,}: more than macs={macs:g}", span,
                         hint="name more layers, or keep a larger share of the MACs")
    fit_heads(model)
    try:
        after = [tuple(v.shape) for v in _outputs(model, inputs)]
    except RuntimeError as e:  # a head count traced into the compiled code as a number
        raise SynthError("S403", f"the pruned heads of {', '.join(map(repr, layers[:3]))} do "
                         f"not run: {str(e).splitlines()[0][:200]}", span,
                         hint="prune the heads of a source used whole or as a submodule "
                              "part: a cut (at=, stages) fixes its head counts when traced"
                         ) from None
    if after != shapes:
        raise SynthError("S403", f"pruning {', '.join(map(repr, layers[:3]))} would change the "
                         f"outputs' shapes from {shapes} to {after}", span,
                         hint="name the layers before the output")
    model.train(was_training)
    return {k: list(v.shape) for k, v in model.state_dict().items() if before.get(k) !=
            list(v.shape)}


def _outputs(model: nn.Module, inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    with torch.no_grad():
        out = model(*inputs)
    return list(out.values()) if isinstance(out, dict) else list(out) if isinstance(
        out, (tuple, list)) else [out]


def resize_to(model: nn.Module, shapes: dict[str, Sequence[int]]) -> None:
    """Give the tensors named in `shapes` those shapes (uninitialised, on their device)
    and their modules the sizes that follow, as pruning left them; ValueError where a
    name is not a tensor of `model`."""
    touched: dict[int, nn.Module] = {}
    for name, shape in shapes.items():
        path, _, attr = name.rpartition(".")
        try:
            module = model.get_submodule(path)
        except AttributeError:
            raise ValueError(f"'{name}' is not a tensor of the model") from None
        old = module._parameters.get(attr)
        if old is None and module._buffers.get(attr) is None:
            raise ValueError(f"'{name}' is not a tensor of the model")
        ref = old if old is not None else module._buffers[attr]
        new = torch.empty(tuple(shape), dtype=ref.dtype, device=ref.device)
        if old is not None:
            module._parameters[attr] = nn.Parameter(new, requires_grad=old.requires_grad)
        else:
            module._buffers[attr] = new
        touched[id(module)] = module
    for module in touched.values():
        _fit_sizes(module)
    fit_heads(model)


def has_heads(module: nn.Module) -> bool:
    """`module` is attention with a fused ``qkv`` projection and a head count (timm's
    ``Attention``: ``qkv``, ``num_heads``, ``head_dim``)."""
    return isinstance(getattr(module, "qkv", None), nn.Linear) and all(
        isinstance(getattr(module, a, None), int) for a in ("num_heads", "head_dim"))


def attention_of(model: nn.Module, layer: str) -> nn.Module | None:
    """The attention module (:func:`has_heads`) whose ``qkv`` projection `layer` is, else
    None."""
    path, _, last = layer.rpartition(".")
    if last != "qkv":
        return None
    owner = model.get_submodule(path) if path else model
    return owner if has_heads(owner) else None


def fit_heads(model: nn.Module) -> None:
    """Every attention module's head count made to agree with its ``qkv`` projection (whole
    heads pruned leave ``head_dim`` as it was)."""
    for _, m in model.named_modules():
        if has_heads(m):
            m.num_heads = m.qkv.out_features // (3 * m.head_dim)
            if hasattr(m, "attn_dim"):
                m.attn_dim = m.num_heads * m.head_dim


def _fit_sizes(module: nn.Module) -> None:
    """A module's size attributes made to agree with its tensors."""
    if isinstance(module, nn.Linear):
        module.out_features, module.in_features = module.weight.shape
    elif isinstance(module, nn.modules.conv._ConvNd):
        depthwise = module.groups > 1 and module.groups == module.in_channels
        transposed = module.transposed
        out_ch = module.weight.shape[1] * module.groups if transposed else module.weight.shape[0]
        if depthwise:
            module.groups = module.in_channels = module.out_channels = module.weight.shape[0]
        else:
            per_group = module.weight.shape[0] if transposed else module.weight.shape[1]
            module.out_channels, module.in_channels = out_ch, per_group * module.groups
    elif isinstance(module, nn.modules.batchnorm._NormBase):
        module.num_features = (module.weight if module.weight is not None
                               else module.running_mean).shape[0]
    elif isinstance(module, nn.LayerNorm):
        module.normalized_shape = tuple(module.weight.shape)
    elif isinstance(module, nn.GroupNorm):
        module.num_channels = module.weight.shape[0]
