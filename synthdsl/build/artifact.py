"""Compiled artifacts: a compiled module as one file that carries everything it needs.

`save_compiled(model, path)` writes a compiled module's weights as safetensors with, in the
file's metadata (:mod:`synthdsl.build.artifact_format`), the text of its spec and of every
spec it imports, the provenance of every tensor, its lock (the sha256 of every checkpoint it
was built from), and a digest of all of it. `load_compiled(path)` rebuilds the identical
module from that file alone, and opens no other path: not the spec's, not an import's, not
a checkpoint's, whatever the metadata says.

Before anything is built for real the artifact is checked against itself: the metadata
against its schema and the digest (S209 where it is not an artifact, S210 where it was
edited), the embedded specs parsed and checked on the meta device, and the module they
describe compared tensor by tensor (names, dtypes, shapes) with the tensors the file
holds, so a spec edited to claim a layer of terabytes is refused without allocating it.

Every write goes to a temporary file in the same folder, renamed into place: a failure
leaves no partial file. Locks are :mod:`synthdsl.build.locks`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import stat
from pathlib import Path

import safetensors.torch
import torch

from synthdsl.build.artifact_format import (DTYPE_CODES, FORMAT, FORMAT_1, Record,
                                            digest_of_file, digest_of_tensors, display,
                                            embed, imports_written, parse_record, place,
                                            record_from_v1, s209, s210, s211, safe_name)
from synthdsl.build.compile import compile_graph
from synthdsl.build.locks import (checkpoints, lock_data, verify_lock,  # noqa: F401
                                  write_lock)
from synthdsl.checks import check_graph
from synthdsl.files import WEIGHTS_MAX_BYTES, NotReadable, atomic_path, regular_file
from synthdsl.graph import SynthGraph, build_graph, spec_texts
from synthdsl.lang.errors import SynthError, flatten, render
from synthdsl.lang.parse import parse_spec
from synthdsl.library.checkpoints import _read_entry, _read_header
from synthdsl.build.adapters import active_weights, adapted, adapter_keys, set_active
from synthdsl.build.quantized import QuantizedModule, rebuild
from synthdsl.library.peft import adapters_of, key, remove_lora
from synthdsl.library.plugins import is_loaded, plugins_needed
from synthdsl.library.prune import resize_to

#: Tensors named in one S210 message, of each kind.
SHOWN = 5
#: Most bytes of buffers that are not saved (non-persistent ones, which a module computes
#: itself) the module of an artifact may have: the saved tensors are bounded by the file.
UNSAVED_MAX_BYTES = 1 << 30


def save_compiled(model, path: str | Path) -> Path:
    """Write `model` (a SynthModule, or the int8 QuantizedModule of one) as safetensors
    with its specs, provenance and lock."""
    quantized = model if isinstance(model, QuantizedModule) else None
    model = quantized.base if quantized is not None else model
    graph = model.graph
    # a module loaded from an artifact keeps the lock it was compiled under: its
    # checkpoints are not beside it to hash again
    lock = model.__dict__.get("lock") or lock_data(graph)
    record = {"specs": embed(graph), "provenance": model.provenance, "lock": lock,
              "adapters": adapter_keys(model)}
    weights = active_weights(model)
    if any(w != 1.0 for w in weights.values()):
        record["adapter_weights"] = weights
    if needed := plugins_needed(graph):
        record["plugins"] = needed
    if pruned := model.__dict__.get("pruned"):
        record["pruned"] = pruned
    if quantized is not None:
        record["quantized"] = quantized.record
    if any(graph.nodes[s].get("constructor") == "hf" for s in graph.of_kind("source")):
        from synthdsl.library.hf_source import embedded_configs

        record["configs"] = embedded_configs(graph)
    body = json.dumps(record, sort_keys=True, separators=(",", ":"))
    Record.model_validate_json(body)  # what is written is what load_compiled accepts
    state = {k: v.detach().contiguous().clone() for k, v in (
        quantized.state if quantized is not None else model.state_dict()).items()}
    meta = {"format": FORMAT, "artifact": body, "digest": digest_of_tensors(body, state)}
    with atomic_path(path) as tmp:
        safetensors.torch.save_file(state, str(tmp), metadata=meta)
    return Path(path)


class _Artifact:
    """An artifact file open for reading: one handle for the header, the digest and the
    tensors, so all three come from the same file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            regular_file(path, WEIGHTS_MAX_BYTES, "compiled artifact")
            self.f = open(path, "rb")
        except FileNotFoundError:
            raise s209(path, "the file does not exist") from None
        except NotReadable as e:  # a FIFO, a device, a directory: refused, never opened
            raise s209(path, str(e)) from None
        except OSError as e:
            raise s209(path, f"it cannot be read: {e.strerror or e}") from None
        try:
            st = os.fstat(self.f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise ValueError("it is not a regular file")
            self.n, self.header, self.meta = _read_header(self.f, st.st_size)
        except (ValueError, OSError) as e:
            self.f.close()
            raise s209(path, f"it is not a valid safetensors file: {e}") from None

    def __enter__(self) -> "_Artifact":
        return self

    def __exit__(self, *exc) -> None:
        self.f.close()

    def format(self) -> str:
        fmt = self.meta.get("format")
        if fmt not in (FORMAT, FORMAT_1):
            raise s209(self.path, "its metadata names no synthdsl format" if fmt is None else
                       f"its format is {display(fmt)}, and this synthdsl reads {FORMAT!r}")
        return fmt

    def record(self) -> Record:
        if self.format() == FORMAT_1:  # no digest: checked against itself from the spec on
            return record_from_v1(self.path, self.meta)
        record = parse_record(self.path, self.meta)
        try:
            found = digest_of_file(self.meta["artifact"], self.f, 8 + self.n, self.header)
        except (ValueError, OSError) as e:
            raise s209(self.path, f"it cannot be read: {e}") from None
        if found != self.meta["digest"]:
            raise s210(self.path, "its contents changed since it was written",
                       [f"digest written {self.meta['digest']}", f"digest found   {found}"])
        return record

    def tensors(self) -> dict[str, torch.Tensor]:
        try:
            return {k: _read_entry(self.f, 8 + self.n, k, e) for k, e in self.header.items()}
        except (ValueError, OSError) as e:
            raise s209(self.path, f"it cannot be read: {e}") from None


def read_metadata(path: str | Path) -> dict[str, str]:
    """The metadata of a compiled artifact (S209 where `path` is not one). Only its format
    is checked: whether it agrees with itself is :func:`load_compiled`'s to say (S210)."""
    with _Artifact(Path(path)) as a:
        a.format()
        return dict(a.meta)


def load_compiled(path: str | Path):
    """Rebuild the module saved by :func:`save_compiled`, from that file alone."""
    path = Path(path)
    with _Artifact(path) as artifact:
        record = artifact.record()
        if missing := [p for p in record.plugins if not is_loaded(p)]:
            raise s211(path, missing)
        graph = _rebuild(path, record)
        if not record.quantized:  # an int8 module's tensors are its prepared module's
            _agree(path, graph, record, artifact.header)  # on meta: nothing allocated yet
        model = compile_graph(graph, load_weights=False)
        _merge_unsaved(model, record.adapters)
        _resize(path, model, record.pruned)
        if record.quantized:
            return _quantized(path, model, record, artifact.tensors())
        if record.adapter_weights:
            set_active(model, record.adapter_weights)
        state = artifact.tensors()
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise s210(path, f"its spec builds {len(missing)} tensors it does not hold and "
                   f"holds {len(unexpected)} it does not build",
                   [*missing[:SHOWN], *unexpected[:SHOWN]])
    model.provenance = dict(record.provenance)
    model.lock = record.lock.model_dump()
    return model.eval()


def _quantized(path: Path, model, record: Record, tensors) -> QuantizedModule:
    """The int8 module an artifact holds, made again from its float module (S210 where
    the file's tensors are not those it needs)."""
    try:
        out = rebuild(model, record.quantized, tensors)
    except (ValueError, RuntimeError) as e:
        raise s210(path, f"its int8 tensors do not fit its spec: {e}") from None
    model.provenance = dict(record.provenance)
    model.lock = record.lock.model_dump()
    return out.eval()


def _resize(path: Path, model, pruned: dict[str, list[int]]) -> None:
    """The tensors pruning changed, given the shapes it left (S210 where one is not a
    tensor of the module); the training sets applied again to the new parameters."""
    if not pruned:
        return
    try:
        resize_to(model, pruned)
    except ValueError as e:
        raise s210(path, f"its metadata lists a pruned tensor the spec does not build: {e}"
                   ) from None
    model.pruned = dict(pruned)
    model._apply_training_sets()


def _merge_unsaved(model, adapters: list[str]) -> None:
    """LoRA adapters merged into their layers before saving are taken off again (their
    tensors were not saved; the merged weight was)."""
    saved = set(adapters)
    for layer, m in adapted(model).items():
        for name in [n for n in adapters_of(m) if key(layer, n) not in saved]:
            remove_lora(m, name)


def _rebuild(path: Path, record: Record) -> SynthGraph:
    """The checked graph of the embedded specs, on the meta device, reading no file; S210
    (with the embedded lines) where they do not parse, check, or import what is embedded."""
    main, texts, labels = place(path, record)
    by_file = {main: record.specs[0].text, **texts}
    for i, spec in enumerate(record.specs):
        label = f"{path.name}: {safe_name(spec.name)}"
        try:
            parsed = parse_spec(spec.text, label)
        except SynthError as e:
            raise _spec_problems(path, flatten(e), {label: spec.text}, {}) from None
        for target, span in imports_written(parsed):
            if target not in spec.imports:
                raise _spec_problems(path, [SynthError(
                    "S210", f"spec({display(target)}) is not embedded in the artifact", span)],
                    {label: spec.text}, {}, why=f"{display(spec.name)} imports a spec the "
                    "artifact does not carry")
    with spec_texts(texts), _hf_configs(record.configs):
        try:
            graph = build_graph(parse_spec(record.specs[0].text, main))
        except SynthError as e:
            raise _spec_problems(path, flatten(e), by_file, labels) from None
        _only_embedded(path, graph, by_file)
        graph = check_graph(graph, raise_errors=False, weights=False)
    if graph.graph.get("errors"):
        raise _spec_problems(path, graph.graph["errors"], by_file, labels)
    return graph


@contextlib.contextmanager
def _hf_configs(configs: dict[str, dict]):
    """The hf(...) configs an artifact carries, in force while it is rebuilt."""
    if not configs:
        yield
        return
    from synthdsl.library.hf_source import EMBEDDED

    token = EMBEDDED.set(configs)
    try:
        yield
    finally:
        EMBEDDED.reset(token)


def _only_embedded(path: Path, graph: SynthGraph, texts: dict[str, str]) -> None:
    """Every spec the graph was built from is an embedded one (never a file)."""
    for s in graph.of_kind("source"):
        node = graph.nodes[s]
        if node["constructor"] == "spec":
            if node["path_resolved"] not in texts:
                raise s210(path, f"its spec imports {display(node['target'])}, which it does "
                           "not carry")
            if node.get("graph") is not None:
                _only_embedded(path, node["graph"], texts)


def _spec_problems(path: Path, errors: list[SynthError], texts: dict[str, str],
                   labels: dict[str, str], why: str = "the spec it carries does not check"
                   ) -> SynthError:
    """One S210 whose notes show each problem at its line of the embedded text (rendered
    here from the artifact's own text: no file is opened for the caret)."""
    notes = []
    for e in errors[:SHOWN]:
        file = e.span.file if e.span is not None else None
        span = None if e.span is None else dataclasses.replace(
            e.span, file=labels.get(file, file if file in texts else f"{path.name}: spec"))
        shown = SynthError(e.code, e.message, span, e.hint, e.notes, e.severity)
        notes.append(render(shown, texts.get(file)).replace("\n", "\n    "))
    if len(errors) > SHOWN:
        notes.append(f"... and {len(errors) - SHOWN} more")
    return s210(path, why, notes)


def _agree(path: Path, graph: SynthGraph, record: Record, header: dict) -> None:
    """The module the spec describes has exactly the tensors the file holds: names, dtypes
    and shapes, compared on the meta device before anything is allocated."""
    model = compile_graph(graph, device="meta", load_weights=False)
    if stray := sorted(set(record.adapters) - set(adapter_keys(model))):
        raise s210(path, "its metadata lists LoRA adapters its spec does not give",
                   [display(n) for n in stray[:SHOWN]])
    _merge_unsaved(model, record.adapters)
    if stray := sorted(set(record.adapter_weights) - set(active_weights(model))):
        raise s210(path, "its metadata gives weights to adapters it does not hold",
                   [display(n) for n in stray[:SHOWN]])
    _resize(path, model, record.pruned)
    built = {k: (DTYPE_CODES.get(v.dtype, str(v.dtype)), list(v.shape))
             for k, v in model.state_dict().items()}
    held = {k: (e["dtype"], list(e["shape"])) for k, e in header.items()}
    missing = sorted(set(built) - set(held))
    extra = sorted(set(held) - set(built))
    differ = sorted(k for k in set(built) & set(held) if built[k] != held[k])
    if missing or extra or differ:
        def shown(k, what):
            return f"{display(k)}: {what[0]} {what[1]}"
        notes = ([f"the spec builds {shown(k, built[k])}, the file holds "
                  f"{held[k][0]} {held[k][1]}" for k in differ[:SHOWN]]
                 + [f"the spec builds {shown(k, built[k])}, the file does not hold it"
                    for k in missing[:SHOWN]]
                 + [f"the file holds {shown(k, held[k])}, the spec does not build it"
                    for k in extra[:SHOWN]])
        raise s210(path, f"its spec describes other tensors than it holds ({len(differ)} of "
                   f"another dtype or shape, {len(missing)} missing, {len(extra)} unexpected)",
                   notes)
    saved = {id(t) for t in model.state_dict(keep_vars=True).values()}
    unsaved = sum(t.numel() * t.element_size() for t in model.buffers() if id(t) not in saved)
    if unsaved > UNSAVED_MAX_BYTES:  # buffers a module makes itself (index tables, masks)
        raise s210(path, f"its spec builds {unsaved:,} bytes of buffers that are not saved, "
                   f"more than the {UNSAVED_MAX_BYTES:,} an artifact's module may make")
