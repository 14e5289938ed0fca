"""Layer-wise learning-rate decay, as timm's ``--layer-decay`` does it: each parameter of a
source trains at ``decay ** (depth from the top)`` times its rate.

The depth is timm's own: the layer groups of ``model.group_matcher(coarse=False)`` put in
order by ``timm.models.group_parameters`` (``reverse=True``: parameter name → layer), or,
for a model without a group matcher (torchvision's), timm's fallback
``timm.optim._param_groups.auto_group_layers`` (``_layer_map``). Each source is grouped as
the source kind builds it (its pristine meta model), so a spec that uses a whole timm model
gets the scales ``timm.optim.param_groups_layer_decay`` gives that model. The parameters of
new layers (heads, adapters on nothing pretrained) keep scale 1, and an adapter's tensors
(``lora_A``) take the scale of the module they adapt. The scale multiplies the spec's
``lr_mult``.
"""

from __future__ import annotations

from torch import nn

from synthdsl.library.cache import sources_of


def source_layer_map(model: nn.Module) -> dict[str, int]:
    """timm's layer id of each parameter of `model` (0: the first layer)."""
    from timm.models import group_parameters
    from timm.optim._param_groups import auto_group_layers

    if hasattr(model, "group_matcher"):
        return group_parameters(model, model.group_matcher(coarse=False), reverse=True)
    return auto_group_layers(model)


def layer_scales(module, decay: float) -> dict[str, float]:
    """The learning-rate scale of every parameter of a compiled spec `module` whose source
    is a model, by qualified name; a parameter left out has scale 1."""
    if decay == 1.0:
        return {}
    graph = module.graph
    cache = sources_of(graph)
    names = [n for n, _ in module.named_parameters()]
    scales: dict[str, float] = {}
    for source in graph.of_kind("source"):
        if graph.nodes[source].get("constructor") == "spec":
            continue  # a spec used as a source: its own tensors, no timm depth
        mine = [n for n in names if n.startswith(source + ".")]
        if not mine:
            continue
        try:
            model = cache.pristine(source)
        except (KeyError, RuntimeError):
            continue
        layers = source_layer_map(model)
        if not layers:
            continue
        top = max(layers.values())
        by_module = _module_layers(layers)
        for name in mine:
            inner = name[len(source) + 1:]
            layer = layers.get(inner)
            if layer is None:
                layer = _nearest(inner, by_module)
            if layer is not None:
                scales[name] = decay ** (top - layer)
    return scales


def _module_layers(layers: dict[str, int]) -> dict[str, int]:
    """Each module path above a grouped parameter and its (deepest) parameter's layer."""
    out: dict[str, int] = {}
    for name, layer in layers.items():
        parts = name.split(".")[:-1]
        for i in range(len(parts), 0, -1):
            out.setdefault(".".join(parts[:i]), layer)
    return out


def _nearest(inner: str, by_module: dict[str, int]) -> int | None:
    """The layer of the innermost grouped module above `inner` (an adapter's tensor)."""
    parts = inner.split(".")[:-1]
    for i in range(len(parts), 0, -1):
        got = by_module.get(".".join(parts[:i]))
        if got is not None:
            return got
    return None
