"""What a compiled artifact's metadata holds, checked before anything is built from it.

A compiled artifact is a safetensors file. Its ``__metadata__`` has three strings:

* ``format``: ``"synthdsl-compiled/2"``;
* ``artifact``: one JSON object, :class:`Record`: every spec the module was compiled
  from, as text (the main spec first, then each spec it imports, each with the import
  strings it writes mapped to the spec they named when it was compiled), the
  provenance of every tensor, the lock, and the LoRA adapters kept unmerged;
* ``digest``: ``sha256:`` of the record and of every tensor (name, dtype, shape, bytes),
  so an artifact edited or damaged since it was written is told apart from one that is not
  an artifact at all.

An artifact carries everything: loading it opens no path its metadata names. The embedded
specs are placed in a virtual folder tree (:func:`place`) whose every import resolves to
an embedded text, exactly as the graph builder resolves it.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Iterator

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from synthdsl.lang.errors import SynthError
from synthdsl.lang.parse import parse_spec
from synthdsl.library.checkpoints import SAFETENSORS_DTYPES

FORMAT = "synthdsl-compiled/2"
#: Names of a spec inside an artifact are for display; at most this long.
MAX_NAME = 255
#: Most ``..`` steps the imports of all embedded specs may take together.
MAX_UP_STEPS = 256
#: Most places the embedded specs may take (every import of every imported spec).
MAX_PLACES = 10_000

DTYPE_CODES = {dtype: code for code, (_, dtype) in SAFETENSORS_DTYPES.items()}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class EmbeddedSpec(_Strict):
    """One spec's text, and the spec each of its `spec("...")` imports named."""

    name: str = Field(min_length=1, max_length=MAX_NAME)
    text: str
    imports: dict[str, int] = {}


class LockRecord(_Strict):
    spec: str
    checkpoints: dict[str, str]


class Record(_Strict):
    """The ``artifact`` metadata entry."""

    specs: list[EmbeddedSpec] = Field(min_length=1)
    provenance: dict[str, dict[str, Any]]
    lock: LockRecord
    #: The LoRA adapters the file holds: ``layer`` for a layer's default adapter,
    #: ``layer:name`` for a named one (those merged into the weights are not listed).
    adapters: list[str]
    #: Each adapter's weight where one is not 1 (0: inactive); absent when all are 1.
    adapter_weights: dict[str, float] = {}
    #: An int8 module's mode and layers (:mod:`synthdsl.build.quantized`): the file's
    #: tensors are then what makes it again from the spec; absent for a float module.
    quantized: dict[str, Any] = {}
    #: The plugins (module or entry point names) whose layers, operations or kinds of
    #: source the specs use; absent when they use none. Loading never imports them.
    plugins: list[str] = []
    #: The shape of every tensor that structured pruning changed (what `prune(...)` left),
    #: by qualified name; absent when nothing was pruned. Loading resizes those tensors
    #: (and their modules) before the file's tensors are compared and read.
    pruned: dict[str, list[int]] = {}
    #: Each hf(...) source's config.json and preprocessor config, by its target as written:
    #: the architecture, which is in the folder and not in the spec; absent without one.
    configs: dict[str, dict[str, Any]] = {}


def s209(path: Path, why: str) -> SynthError:
    return SynthError("S209", f"'{path.name}' is not a compiled synthdsl artifact: {why}",
                      hint="name a file written by `synth compile SPEC -o FILE.safetensors` "
                      "or by `synth train`")


def s211(path: Path, missing: list[str]) -> SynthError:
    return SynthError("S211", f"artifact '{path.name}' needs the plugin"
                      f"{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))}, "
                      "which this process has not loaded",
                      hint="load " + ("them" if len(missing) > 1 else "it") + " first: synth "
                      + " ".join(f"--plugin {m}" for m in missing) + " ... (or "
                      "synthdsl.plugins.load_plugin in Python); an artifact never imports "
                      "code itself")


def s210(path: Path, why: str, notes: Iterable[str] = ()) -> SynthError:
    return SynthError("S210", f"artifact '{path.name}' does not agree with itself: {why}",
                      notes=list(notes),
                      hint="it was edited or damaged after it was written; compile it again, "
                      "or use an unmodified copy")


def parse_record(path: Path, meta: dict[str, str]) -> Record:
    """The metadata's record, validated (S209 where it is not one)."""
    if set(meta) != {"format", "artifact", "digest"}:
        extra = sorted(set(meta) - {"format", "artifact", "digest"})
        missing = sorted({"format", "artifact", "digest"} - set(meta))
        raise s209(path, "its metadata should have the keys format, artifact and digest"
                   + (f"; missing {', '.join(missing)}" if missing else "")
                   + (f"; unexpected {', '.join(map(repr, extra[:5]))}" if extra else ""))
    try:
        record = Record.model_validate_json(meta["artifact"])
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "the record"
        raise s209(path, f"its metadata entry 'artifact' is not valid: at {where}: "
                   f"{first['msg']} ({e.error_count()} problem"
                   f"{'s' if e.error_count() != 1 else ''})") from None
    for name in record.plugins:
        if not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", name, re.ASCII):
            raise s209(path, f"its metadata names a plugin {display(name)}, which is not a "
                       "Python module name")
    if not re.fullmatch(r"sha256:[0-9a-f]{64}", meta["digest"]):
        raise s209(path, "its metadata entry 'digest' is not 'sha256:' and 64 hex digits")
    n = len(record.specs)
    for i, spec in enumerate(record.specs):
        for target, j in spec.imports.items():
            if not 0 < j < n:
                raise s210(path, f"spec {display(spec.name)} imports {display(target)} as "
                           f"spec #{j}, but the artifact holds specs #1 to #{n - 1}")
    return record


# ---- the digest ------------------------------------------------------------------------


def _entry_line(name: str, code: str, shape: Iterable[int]) -> bytes:
    return json.dumps([name, code, list(shape)]).encode("utf-8") + b"\n"


def digest_of_tensors(record: str, state: dict[str, torch.Tensor]) -> str:
    """The digest of a record and the tensors about to be written."""
    h = hashlib.sha256(FORMAT.encode() + b"\n" + record.encode("utf-8") + b"\n")
    for name in sorted(state):
        t = state[name].detach().contiguous().cpu()
        h.update(_entry_line(name, DTYPE_CODES[t.dtype], t.shape))
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy())
    return "sha256:" + h.hexdigest()


def digest_of_file(record: str, f, data_start: int, header: dict) -> str:
    """The same digest, from an open safetensors file (its header validated): streamed, so
    nothing the size of a tensor is allocated."""
    h = hashlib.sha256(FORMAT.encode() + b"\n" + record.encode("utf-8") + b"\n")
    for name in sorted(header):
        entry = header[name]
        h.update(_entry_line(name, entry["dtype"], entry["shape"]))
        start, end = entry["data_offsets"]
        f.seek(data_start + start)
        left = end - start
        while left:
            block = f.read(min(left, 1 << 20))
            if not block:
                raise ValueError(f"'{name}' is cut short: the file is truncated")
            h.update(block)
            left -= len(block)
    return "sha256:" + h.hexdigest()


# ---- embedding specs ---------------------------------------------------------------------


def embed(graph) -> list[dict]:
    """Every spec of a compiled graph as :class:`EmbeddedSpec` data: the main spec first,
    each imported file once, its imports keyed by the string it writes."""
    specs: list[dict] = []
    index: dict[str, int] = {}

    def add(g, file: str | None) -> int:
        i = len(specs)
        if file is not None:
            index[file] = i
        entry = {"name": safe_name(Path(g.graph.get("file") or "spec.synth").name),
                 "text": g.graph.get("text", ""), "imports": {}}
        specs.append(entry)
        for s in g.of_kind("source"):
            node = g.nodes[s]
            child = node.get("graph")
            if node["constructor"] != "spec" or child is None:
                continue
            resolved = node["path_resolved"]
            j = index.get(resolved)
            entry["imports"][node["target"]] = add(child, resolved) if j is None else j
        return i

    add(graph, None)
    return specs


def safe_name(name: str) -> str:
    """A spec's file name as one harmless path component, for display and placing."""
    name = re.sub(r"[^A-Za-z0-9._+-]", "_", name)[:MAX_NAME].lstrip(".")
    return name or "spec.synth"


def display(text: str) -> str:
    """Text from an artifact, quoted for a message: no control characters, bounded."""
    text = text if len(text) <= 200 else text[:200] + "…"
    return repr(text)


def printable(text: str) -> str:
    """Text from an artifact as one line of printable characters, bounded."""
    return re.sub(r"[^\x20-\x7e]", "?", text[:200])


def _up_steps(target: str) -> int:
    return sum(1 for part in PurePosixPath(target.replace("\\", "/")).parts if part == "..")


def place(path: Path, record: Record) -> tuple[str, dict[str, str], dict[str, str]]:
    """Where each embedded spec stands in a virtual folder tree, as the graph builder will
    resolve it: (the main spec's file, the text at every import's resolved path, a label for
    each path in diagnostics). S210 where two imports would resolve to one path but name
    different specs, where the imports form a cycle, or where they would take too many places.

    The tree's root is deep enough that no chain of ``..`` climbs out of it, so every import
    resolves inside it; none of its folders exists, so resolving reads nothing."""
    specs = record.specs
    _acyclic(path, record)
    steps = sum(_up_steps(t) for s in specs for t in s.imports)
    if steps > MAX_UP_STEPS:
        raise s210(path, f"its specs' imports climb {steps} folders with '..', more than "
                   f"the {MAX_UP_STEPS} an artifact may")
    root = Path(os.sep, ".synthdsl-artifact", *(["_"] * (steps + 1))).resolve()
    name = safe_name(specs[0].name)  # one component: never a path of its own
    main = str(root / name)
    texts: dict[str, str] = {}
    owner: dict[str, int] = {}
    labels: dict[str, str] = {main: f"{path.name}: {name}"}
    todo = [(0, main, labels[main])]
    while todo:
        i, file, label = todo.pop()
        base = Path(file).resolve().parent
        for target, j in sorted(specs[i].imports.items()):
            key = str((base / target).resolve())
            if owner.setdefault(key, j) != j:
                raise s210(path, f"the import {display(target)} of {display(specs[i].name)} "
                           "resolves where another import names a different spec")
            if key in texts:
                continue
            if len(texts) >= MAX_PLACES:
                raise s210(path, f"its specs import each other in more than {MAX_PLACES} "
                           "places")
            texts[key] = specs[j].text
            labels[key] = f"{label} > {printable(target)}"
            todo.append((j, key, labels[key]))
    return main, texts, labels


def _acyclic(path: Path, record: Record) -> None:
    specs = record.specs
    users = [0] * len(specs)  # how many specs import each one
    for s in specs:
        for j in set(s.imports.values()):
            users[j] += 1
    todo, done = [i for i, n in enumerate(users) if n == 0], 0
    while todo:
        done += 1
        for j in set(specs[todo.pop()].imports.values()):
            users[j] -= 1
            if users[j] == 0:
                todo.append(j)
    if done != len(specs):
        raise s210(path, "its specs import each other in a cycle")


def imports_written(spec) -> Iterator[tuple[str, Any]]:
    """Each `spec("...")` a parsed spec writes: the string and its span."""
    for st in spec.statements:
        if getattr(st, "constructor", None) == "spec" and hasattr(st, "target_span") \
                and isinstance(getattr(st, "target", None), str):
            yield st.target, st.target_span


# ---- the first format --------------------------------------------------------------------

#: Artifacts written before specs were embedded with their imports' strings: the spec text,
#: and the imported texts keyed by their path relative to the main spec's folder.
FORMAT_1 = "synthdsl-compiled/1"
_KEYS_1 = {"format", "spec", "spec_file", "imports", "provenance", "lock", "adapters"}


def record_from_v1(path: Path, meta: dict[str, str]) -> Record:
    """The record of a first-format artifact (which has no digest). Each import a spec
    writes is found in its table by the path it names, relative to the spec that writes it;
    one that is not there is S210 (a file is never read in its place)."""
    if missing := sorted(_KEYS_1 - set(meta)):
        raise s209(path, f"its metadata lacks {', '.join(missing)}")
    try:
        table = json.loads(meta["imports"])
        data = {k: json.loads(meta[k]) for k in ("provenance", "lock", "adapters")}
        if not isinstance(table, dict) or not all(isinstance(v, str) for v in table.values()):
            raise ValueError("'imports' is not a table of texts")
    except (ValueError, TypeError) as e:
        raise s209(path, f"its metadata is not valid: {e}") from None
    specs: list[dict] = [{"name": safe_name(meta["spec_file"]), "text": meta["spec"],
                          "imports": {}}]
    index: dict[str, int] = {}
    todo = [(0, "")]
    while todo:
        i, where = todo.pop()
        try:
            parsed = parse_spec(specs[i]["text"])
        except SynthError:
            continue  # reported when the record is built
        for target, _ in imports_written(parsed):
            rel = posixpath.normpath(posixpath.join(posixpath.dirname(where),
                                                    target.replace("\\", "/")))
            if rel not in table:
                continue  # reported as not embedded
            if rel not in index:
                if len(specs) >= MAX_PLACES:
                    raise s210(path, f"it imports more than {MAX_PLACES} specs")
                index[rel] = len(specs)
                specs.append({"name": safe_name(posixpath.basename(rel)), "text": table[rel],
                              "imports": {}})
                todo.append((index[rel], rel))
            specs[i]["imports"][target] = index[rel]
    try:
        return Record.model_validate({"specs": specs, **data})
    except ValidationError as e:
        first = e.errors()[0]
        raise s209(path, f"its metadata is not valid: at "
                   f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}") from None
