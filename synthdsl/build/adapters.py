"""The named LoRA adapters of a compiled module: which there are, which are active and
at what weight, and folding them into the weights.

A spec may give a layer several adapters (``adapt h with lora(rank=8, name="sketch")``
beside ``adapt h with lora(rank=8, name="photo")``). Every adapter is active at weight 1
when the module is compiled. :func:`set_active` chooses which adapters the module adds
and with what weight, as PEFT's ``set_adapter`` and its weighted combinations do: an
adapter of weight 0 is inactive, not computed, and frozen (its tensors leave
:meth:`~synthdsl.build.module.SynthModule.trainable_parameters`), so ``synth train
--adapter sketch`` trains that adapter alone. An artifact records the weights
(:mod:`synthdsl.build.artifact`) and loads with them.

>>> import synthdsl
>>> m = synthdsl.compile_spec('synth A input x: [B, 4] h = Linear(x, out=2) '
...     'adapt h with lora(rank=1) adapt h with lora(rank=2, name="b") output h')
>>> adapter_layers(m), set_active(m, ["b"])
({'default': ['h'], 'b': ['h']}, {'default': 0.0, 'b': 1.0})
>>> sorted(n for n, _ in m.named_trainable_parameters())
['h.lora_b_A', 'h.lora_b_B']
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

from torch import nn

from synthdsl.lang.errors import SynthError, did_you_mean
from synthdsl.library.peft import adapters_of, key, merge_lora, param_names, set_weights


def adapted(model: nn.Module) -> dict[str, nn.Module]:
    """The layers of `model` that hold an adapter, by qualified name."""
    return {name: m for name, m in model.named_modules() if adapters_of(m)}


def adapter_layers(model: nn.Module) -> dict[str, list[str]]:
    """Each adapter's name and the layers it is on, in the order the spec gave them."""
    out: dict[str, list[str]] = {}
    for layer, m in adapted(model).items():
        for name in adapters_of(m):
            out.setdefault(name, []).append(layer)
    return out


def adapter_keys(model: nn.Module) -> list[str]:
    """Every adapter of every layer as a key (``layer``, or ``layer:name``), sorted."""
    return sorted(key(layer, name) for layer, m in adapted(model).items()
                  for name in adapters_of(m))


def active_weights(model: nn.Module) -> dict[str, float]:
    """Each adapter's weight (0 for an inactive one)."""
    out: dict[str, float] = {}
    for m in adapted(model).values():
        for name, a in adapters_of(m).items():
            out.setdefault(name, a.weight)
    return out


def inactive_tensors(model: nn.Module) -> set[str]:
    """The tensors of the adapters whose weight is 0: kept frozen."""
    return {f"{layer}.{p}" for layer, m in adapted(model).items()
            for name, a in adapters_of(m).items() if a.weight == 0 for p in param_names(name)}


def _spec_name(model: nn.Module) -> str:
    graph = getattr(model, "graph", None)
    return f"'{graph.name}'" if graph is not None else "the model"


def known(model: nn.Module, names: Iterable[str], what: str) -> None:
    """S010 unless `model` has adapters and one of each name in `names`."""
    have = list(adapter_layers(model))
    if not have:
        raise SynthError("S010", f"{_spec_name(model)} has no LoRA adapters {what}",
                         hint="adapt layers with `adapt PATTERN with lora(rank=8)`")
    for name in names:
        if name not in have:
            raise SynthError("S010", f"{_spec_name(model)} has no adapter '{name}' "
                             f"(its adapters: {', '.join(have)})",
                             hint=did_you_mean(name, have))


def set_active(model: nn.Module, active: Sequence[str] | Mapping[str, float] | None = None
               ) -> dict[str, float]:
    """Make the adapters `active` names the ones `model` adds: a list (each at weight 1),
    a mapping of names to weights, or None for every adapter at weight 1. The others get
    weight 0 and are frozen. S010 for a name the model has no adapter of. The weights."""
    names = list(adapter_layers(model))
    if active is None:
        weights = dict.fromkeys(names, 1.0)
    else:
        given = dict(active) if isinstance(active, Mapping) else dict.fromkeys(active, 1.0)
        known(model, given, "to choose from")
        bad = [n for n, w in given.items()
               if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w)]
        if bad:
            raise SynthError("S010", f"adapter '{bad[0]}' needs a finite weight, found "
                             f"{given[bad[0]]!r}")
        weights = {n: float(given.get(n, 0.0)) for n in names}
    for m in adapted(model).values():
        set_weights(m, {n: weights[n] for n in adapters_of(m)})
    refresh = getattr(model, "_apply_training_sets", None)
    if refresh is not None:
        refresh()
    return weights


def merge(model: nn.Module, names: Iterable[str] | None = None) -> list[str]:
    """Fold adapters into their layers' weights at their weights: those `names` names, by
    default the active ones; the keys of the adapters merged."""
    if names is not None:
        names = list(names)
        known(model, names, "to merge")
    merged = []
    for layer, m in adapted(model).items():
        chosen = None if names is None else [n for n in adapters_of(m) if n in names]
        merged += [key(layer, n) for n in merge_lora(m, chosen)]
    return sorted(merged)


def parse_active(items: Sequence[str]) -> dict[str, float] | None:
    """``--adapter NAME[=WEIGHT]`` flags as weights (None when there are none).

    >>> parse_active(["sketch", "photo=0.5"]), parse_active([])
    ({'sketch': 1.0, 'photo': 0.5}, None)
    """
    if not items:
        return None
    out: dict[str, float] = {}
    for item in items:
        name, eq, text = item.partition("=")
        try:
            weight = float(text) if eq else 1.0
        except ValueError:
            weight = math.nan
        if not name or not math.isfinite(weight):
            raise SynthError("S010", f"--adapter expects NAME or NAME=WEIGHT, not '{item}'",
                             hint="e.g. --adapter sketch or --adapter sketch=0.5")
        out[name] = weight
    return out
