"""LoRA adapters saved and loaded alone: a few megabytes beside a frozen trunk that is
already on disk.

The file is safetensors: each adapter's two tensors under the layer's qualified name
(``h.0.lora_A``, ``h.0.lora_sketch_A``), and in its metadata (``synthdsl_adapters``) the
spec's name and, for each adapter by name, each layer's rank, scale and dropout. A file
holds every adapter of the module or those chosen (``names=``). Loading checks, before a
tensor is copied, that the file is such a file, that the module has each adapter the file
holds, and that the file holds exactly that adapter's layers with their shapes and
scales; a mistake is S205 naming what does not fit. The module's other adapters are left
as they are. The provenance of the loaded tensors names the file and its sha256.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from synthdsl.build.adapters import adapted, known
from synthdsl.files import atomic_path
from synthdsl.lang.errors import SynthError
from synthdsl.library.peft import adapters_of, key, param_names

#: The metadata key that marks a file of adapters.
META_KEY = "synthdsl_adapters"


def _tables(model, names=None) -> dict[str, dict[str, dict]]:
    """Adapter name -> layer -> rank, scale and dropout, of those `names` names."""
    out: dict[str, dict[str, dict]] = {}
    for layer, m in adapted(model).items():
        for name, a in adapters_of(m).items():
            if names is None or name in names:
                out.setdefault(name, {})[layer] = {"rank": a.rank, "scale": a.scale,
                                                   "dropout": a.dropout}
    return out


def _tensors(table: dict[str, dict[str, dict]]) -> list[str]:
    return [f"{layer}.{p}" for name, layers in table.items() for layer in layers
            for p in param_names(name)]


def save_adapters(model, path: str | Path, names=None) -> Path:
    """Write `model`'s LoRA adapters (or those `names` names) alone to `path`, atomically;
    the path."""
    from safetensors.torch import save_file

    if names is not None:
        names = list(names)
        known(model, names, "to save")
    table = _tables(model, names)
    if not table:
        raise SynthError("S205", f"'{model.graph.name}' has no LoRA adapters to save",
                         hint="adapt layers with `adapt PATTERN with lora(rank=8)`")
    tensors = {k: model.get_parameter(k).detach().cpu().contiguous() for k in _tensors(table)}
    meta = {"spec": model.graph.name, "adapters": table}
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={META_KEY: json.dumps(meta)})
    return path


def _saved(path: Path, meta: str) -> dict[str, dict[str, dict]]:
    try:
        data = json.loads(meta)
        table = data["adapters"] if "adapters" in data else {"default": data["layers"]}
        if not isinstance(table, dict) or not all(
                isinstance(v, dict) and all(isinstance(e, dict) for e in v.values())
                for v in table.values()):
            raise TypeError
    except (ValueError, KeyError, TypeError, RecursionError):
        raise SynthError("S205", f"the '{META_KEY}' metadata of '{path}' is not valid"
                         ) from None
    return table


def load_adapters(model, path: str | Path) -> list[str]:
    """Copy the adapters saved in `path` into `model`'s adapters of the same names; the
    keys loaded (``layer``, or ``layer:name``)."""
    from safetensors import safe_open

    from synthdsl.library.checkpoints import file_sha256
    from synthdsl.library.sources import compare_state

    path = Path(path)
    try:
        with safe_open(str(path), "pt") as f:
            meta = (f.metadata() or {}).get(META_KEY)
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as e:  # noqa: BLE001 - any failure to read is the user's file
        raise SynthError("S203", f"cannot read adapters file '{path}': {e}") from None
    if meta is None:
        raise SynthError("S205", f"'{path}' is not a file of LoRA adapters (it has no "
                         f"'{META_KEY}' metadata)",
                         hint="write one with `synth train --save-adapters` or "
                              "SynthModule.save_adapters()")
    saved = _saved(path, meta)
    have = _tables(model)
    if stray := [n for n in saved if n not in have]:
        raise SynthError("S205", f"adapters file '{path.name}' holds the adapter "
                         f"'{stray[0]}', and '{model.graph.name}' has none of that name",
                         notes=[f"the file's adapters: {', '.join(saved)}",
                                f"the spec's adapters: {', '.join(have) or 'none'}"],
                         hint='name it in the spec: adapt ... with lora(..., name="'
                              f'{stray[0]}")')
    mine = {name: have[name] for name in saved}
    expected = {k: tuple(model.get_parameter(k).shape) for k in _tensors(mine)}
    problems = compare_state(expected, shapes)
    problems += [f"'{key(layer, name)}' has scale {float(saved[name][layer]['scale']):g} in "
                 f"the file, the spec's adapter {entry['scale']:g} (alpha / rank)"
                 for name, layers in mine.items() for layer, entry in layers.items()
                 if layer in saved[name]
                 and abs(float(saved[name][layer].get("scale", 0)) - entry["scale"]) > 1e-9]
    if problems:
        raise SynthError("S205", f"adapters file '{path.name}' does not fit the adapters of "
                         f"'{model.graph.name}'", notes=problems[:6],
                         hint="the spec's `adapt ... with lora(...)` statements must name "
                              "the same layers, ranks and alphas as the run that saved it")
    digest = file_sha256(str(path))
    with safe_open(str(path), "pt") as f, torch.no_grad():
        for k in expected:
            model.get_parameter(k).copy_(f.get_tensor(k))
            model.provenance[k] = {"origin": "checkpoint", "file": str(path),
                                   "sha256": digest, "key": k, "transform": "adapters"}
    return sorted(key(layer, name) for name, layers in mine.items() for layer in layers)
