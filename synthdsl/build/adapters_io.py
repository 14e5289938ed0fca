"""LoRA adapters saved and loaded alone: a few megabytes beside a frozen trunk that is
already on disk.

The file is safetensors: each adapted layer's ``lora_A`` and ``lora_B`` under the layer's
qualified name, and in its metadata (``synthdsl_adapters``) the spec's name and each
layer's rank, scale and dropout. Loading checks, before a tensor is copied, that the file
is such a file and holds exactly the module's adapters with their shapes and scales; a
mistake is S205 naming what does not fit. The provenance of the loaded tensors names the
file and its sha256.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from synthdsl.files import atomic_path
from synthdsl.lang.errors import SynthError

#: The metadata key that marks a file of adapters.
META_KEY = "synthdsl_adapters"


def adapted_layers(model) -> dict[str, torch.nn.Module]:
    return {name: m for name, m in model.named_modules() if hasattr(m, "lora_A")}


def save_adapters(model, path: str | Path) -> Path:
    """Write `model`'s LoRA adapters alone to `path` (atomically); the path."""
    from safetensors.torch import save_file

    layers = adapted_layers(model)
    if not layers:
        raise SynthError("S205", f"'{model.graph.name}' has no LoRA adapters to save",
                         hint="adapt layers with `adapt PATTERN with lora(rank=8)`")
    tensors = {f"{name}.{p}": getattr(m, p).detach().cpu().contiguous()
               for name, m in layers.items() for p in ("lora_A", "lora_B")}
    meta = {"spec": model.graph.name,
            "layers": {name: {"rank": int(m.lora_A.shape[0]), "scale": float(m.lora_scale),
                              "dropout": float(m.lora_dropout)} for name, m in layers.items()}}
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={META_KEY: json.dumps(meta)})
    return path


def load_adapters(model, path: str | Path) -> list[str]:
    """Copy the adapters saved in `path` into `model`'s; the layers loaded."""
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
    layers = adapted_layers(model)
    expected = {f"{n}.{p}": tuple(getattr(m, p).shape) for n, m in layers.items()
                for p in ("lora_A", "lora_B")}
    problems = compare_state(expected, shapes)
    saved = json.loads(meta).get("layers", {})
    problems += [f"'{n}' has scale {saved[n]['scale']:g} in the file, the spec's adapter "
                 f"{m.lora_scale:g} (alpha / rank)" for n, m in layers.items()
                 if n in saved and abs(float(saved[n]["scale"]) - m.lora_scale) > 1e-9]
    if problems:
        raise SynthError("S205", f"adapters file '{path.name}' does not fit the adapters of "
                         f"'{model.graph.name}'", notes=problems[:6],
                         hint="the spec's `adapt ... with lora(...)` statements must name "
                              "the same layers, ranks and alphas as the run that saved it")
    digest = file_sha256(str(path))
    with safe_open(str(path), "pt") as f, torch.no_grad():
        for key in expected:
            name, p = key.rsplit(".", 1)
            getattr(layers[name], p).copy_(f.get_tensor(key))
            model.provenance[key] = {"origin": "checkpoint", "file": str(path),
                                     "sha256": digest, "key": key, "transform": "adapters"}
    return sorted(layers)
