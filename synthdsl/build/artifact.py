"""Compiled artifacts and locks.

`save_compiled(model, path)` writes a compiled module's weights as safetensors
with, in the file's metadata, the spec text (and the text of every spec it
imports), the provenance of every tensor, and a lock: the sha256 of every
checkpoint it was built from. `load_compiled(path)` rebuilds the identical
module from that file alone. `write_lock` / `verify_lock` pin a spec's
checkpoints so a changed file is caught by `synth check`.

Every write goes to a temporary file in the same folder, renamed into place:
a failure leaves no partial file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import safetensors.torch

from synthdsl.build.compile import compile_graph
from synthdsl.checks import check_graph
from synthdsl.files import LOCK_MAX_BYTES, NotReadable, atomic_path, read_regular
from synthdsl.files import write_text as atomic_write_text
from synthdsl.graph import SynthGraph, build_graph, spec_texts
from synthdsl.lang.errors import SynthError
from synthdsl.lang.parse import parse_spec
from synthdsl.build.locks import checkpoints, lock_data, verify_lock, write_lock  # noqa: F401
from synthdsl.library.checkpoints import file_sha256, read_state_dict, safetensors_metadata
from synthdsl.library.peft import merge_lora

FORMAT = "synthdsl-compiled/1"


def _specs(graph: SynthGraph, base: Path, out: dict[str, str]) -> dict[str, str]:
    """The text of every spec `graph` imports, keyed by path relative to the main spec."""
    for s in graph.of_kind("source"):
        node = graph.nodes[s]
        child = node.get("graph")
        if node["constructor"] == "spec" and child is not None:
            rel = os.path.relpath(node["path_resolved"], base)
            out[rel] = child.graph["text"]
            _specs(child, base, out)
    return out


def save_compiled(model, path: str | Path) -> Path:
    """Write `model` (a SynthModule) as safetensors with its spec, provenance and lock."""

    graph = model.graph
    base = Path(graph.graph.get("base_dir", "."))
    meta = {
        "format": FORMAT,
        "spec": graph.graph.get("text", ""),
        "spec_file": Path(graph.graph.get("file") or "spec.synth").name,
        "imports": json.dumps(_specs(graph, base, {}), sort_keys=True),
        "provenance": json.dumps(model.provenance, sort_keys=True),
        "lock": json.dumps(lock_data(graph), sort_keys=True),
        "adapters": json.dumps(sorted(n for n, m in model.named_modules()
                                      if hasattr(m, "lora_A"))),
    }
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        safetensors.torch.save_file(state, str(tmp), metadata=meta)
    return Path(path)


def read_metadata(path: str | Path) -> dict[str, str]:
    try:
        meta = safetensors_metadata(Path(path))  # the header size-checked, then parsed
    except NotReadable as e:  # a FIFO, a device, a directory: refused, never opened
        raise SynthError("S209", f"'{path}' is not a compiled synthdsl artifact: {e}",
                         hint="name a file written by `synth compile SPEC -o FILE.safetensors`"
                         ) from None
    if meta.get("format") != FORMAT:
        raise SynthError("S209", f"'{path}' is not a compiled synthdsl artifact "
                         "(its metadata has no spec)",
                         hint="write one with `synth compile SPEC -o FILE.safetensors`")
    return meta


def load_compiled(path: str | Path):
    """Rebuild the module saved by :func:`save_compiled`, from that file alone."""

    path = Path(path)
    meta = read_metadata(path)
    # the spec and its imports come from the file; paths resolve as if beside it
    base = path.resolve().parent / ".synth-artifact"
    texts = {str((base / rel).resolve()): text
             for rel, text in json.loads(meta["imports"]).items()}
    with spec_texts(texts):
        graph = check_graph(_build(parse_spec(meta["spec"], str(base / meta["spec_file"]))),
                            weights=False)
    model = compile_graph(graph, load_weights=False)
    saved = set(json.loads(meta.get("adapters", "[]")))

    for name, m in list(model.named_modules()):
        if hasattr(m, "lora_A") and name not in saved:  # merged before saving
            with torch.no_grad():
                m.lora_B.zero_()
            merge_lora(m)
    state = read_state_dict(path)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise SynthError("S209", f"'{path.name}' does not match its own spec: "
                         f"{len(missing)} missing, {len(unexpected)} unexpected tensors",
                         notes=[*missing[:5], *unexpected[:5]])
    model.provenance = json.loads(meta["provenance"])
    model.lock = json.loads(meta["lock"])
    return model.eval()


def _build(spec):

    return build_graph(spec)
