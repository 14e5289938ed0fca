"""Locks: ``SPEC.lock`` pins the sha256 of every checkpoint a spec reads.

`synth lock SPEC` writes ``SPEC.lock`` beside the spec (``spec.synth.lock``). Every
command that reads weights through a spec verifies it first (:func:`verify_lock`), before
any checkpoint is opened for its tensors or its header: a checkpoint that changed, vanished
or is not in the lock is S206, naming the file, the locked and the found sha256. A lock
that is not a regular file, cannot be read or is not a lock is S206 too.

A checkpoint is keyed by its path as the main spec writes it (``weights="w.safetensors"``);
one named by an imported spec by its path relative to the main spec's folder, so two
imported specs that both say ``"w.safetensors"`` in different folders do not collide.
An imported spec given its trained weights (``spec("enc.synth", weights="runs/enc")``)
is locked by that file; its own sources' weights files, which are then not read, are not
in the lock.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from synthdsl.files import LOCK_MAX_BYTES, NotReadable, read_regular
from synthdsl.files import write_text as atomic_write_text
from synthdsl.graph import SynthGraph
from synthdsl.lang.ast import Span
from synthdsl.lang.errors import SynthError
from synthdsl.library.checkpoints import file_sha256
from synthdsl.library.shards import is_index, shard_files

_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Named:
    """A checkpoint a spec (or a spec it imports) names."""

    key: str            #: its key in the lock
    path: str           #: the file, resolved from the folder of the spec that names it
    span: Span | None   #: where it is written
    text: str           #: as it is written
    what: str = "weights file"  #: what the file is, in messages (hf's ``config file``)


def named_checkpoints(graph: SynthGraph) -> Iterator[Named]:
    """Every checkpoint `graph` names, its imports' included, each file once."""
    base = graph.graph.get("base_dir") or "."
    seen: set[str] = set()

    def walk(g: SynthGraph, top: bool, replaced: bool = False) -> Iterator[Named]:
        # `replaced`: an importing spec names the weights of this one (spec(..., weights=)),
        # so its own weights files are never read; the files that say what it is stay
        for n in g.nodes:
            node = g.nodes[n]
            named = [(node["weights"], node.get("weights_span"),
                      node.get("weights_text", node["weights"]), "weights file")
                     ] if node.get("weights") and not replaced else []
            named += [(f["path"], f["span"], f["text"], f.get("what", "weights file"))
                      for f in node.get("files", ())
                      if not replaced or f.get("what", "weights file") != "weights file"]
            named += [shard for entry in named for shard in _shards(*entry)]
            for path, span, text, what in named:
                key = text if top else Path(os.path.relpath(path, base)).as_posix()
                if key not in seen:
                    seen.add(key)
                    yield Named(key, path, span, text, what)
            if node.get("constructor") == "spec" and node.get("graph") is not None:
                yield from walk(node["graph"], False, replaced or bool(node.get("weights")))

    yield from walk(graph, True)


def _shards(path: str, span, text: str, what: str) -> list[tuple]:
    """The shards an index of a sharded checkpoint names, each pinned like the index
    (none when `path` is no index, or one that cannot be read: the check reports it)."""
    if not is_index(path):
        return []
    try:
        files = shard_files(path)
    except (OSError, ValueError):
        return []
    folder = Path(text).parent
    return [(str(f), span, (folder / f.name).as_posix(), "weights shard") for f in files]


def checkpoints(graph: SynthGraph) -> dict[str, str]:
    """Every checkpoint a spec reads (its imports' too): resolved path -> lock key."""
    return {c.path: c.key for c in named_checkpoints(graph)}


def lock_data(graph: SynthGraph) -> dict:
    """What ``SPEC.lock`` holds: the spec's name and the sha256 of each checkpoint there is."""
    return {"spec": graph.name,
            "checkpoints": {c.key: file_sha256(c.path)
                            for c in sorted(named_checkpoints(graph), key=lambda c: c.key)
                            if Path(c.path).is_file()}}


def lock_path(spec_path: str | os.PathLike) -> Path:
    """Where the lock of the spec at `spec_path` is: ``SPEC.lock`` beside it."""
    return Path(str(spec_path) + ".lock")


def write_lock(graph: SynthGraph, spec_path: str | os.PathLike) -> Path:
    lock = lock_path(spec_path)
    atomic_write_text(lock, json.dumps(lock_data(graph), indent=2, sort_keys=True) + "\n")
    return lock


def has_lock(spec_path: str | os.PathLike | None) -> bool:
    """Something is at ``SPEC.lock`` (a file, a directory, a dangling link...)."""
    if not spec_path:
        return False
    lock = lock_path(spec_path)
    return lock.exists() or lock.is_symlink()


def read_lock(spec_path: str | os.PathLike) -> dict[str, str]:
    """The locked digests by key; S206 where the lock is not a readable, valid lock."""
    lock = lock_path(spec_path)
    try:
        raw = read_regular(lock, LOCK_MAX_BYTES, "lock file")
    except OSError as e:  # a directory, a FIFO, a device, too large, unreadable: never read
        why = (str(e).replace(f"lock file '{lock}' is", "it is", 1) if isinstance(e, NotReadable)
               else e.strerror or type(e).__name__)
        raise SynthError("S206", f"lock file '{lock}' cannot be read: {why}",
                         hint="remove it, or write it again with `synth lock SPEC`") from None
    try:
        data = json.loads(raw.decode("utf-8"))
        locked = data["checkpoints"]
        if not isinstance(locked, dict) or not all(
                isinstance(k, str) and isinstance(v, str) and _SHA256.fullmatch(v)
                for k, v in locked.items()):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise SynthError("S206", f"lock file '{lock}' is not valid: expected a JSON object "
                         "whose \"checkpoints\" maps each checkpoint to its sha256",
                         hint="write it again with `synth lock SPEC`") from None
    return locked


def verify_lock(graph: SynthGraph, spec_path: str | os.PathLike | None) -> list[SynthError]:
    """Checkpoints that changed, vanished or are not locked since `SPEC.lock` was written
    (nothing when there is no lock). Only hashes are computed: no tensor, no header read."""
    if not has_lock(spec_path):
        return []
    try:
        locked = read_lock(spec_path)
    except SynthError as e:
        return [e]
    lock = lock_path(spec_path)
    errors = []
    for c in named_checkpoints(graph):
        digest = locked.get(c.key)
        if digest is None:
            errors.append(SynthError(
                "S206", f"{c.what} '{c.key}' is not in the lock file '{lock.name}'", c.span,
                hint="lock again with `synth lock SPEC` if this checkpoint is meant"))
            continue
        try:
            found = file_sha256(c.path)
        except FileNotFoundError:
            errors.append(SynthError("S206", f"{c.what} '{c.key}' is locked in "
                                     f"'{lock.name}' but missing", c.span,
                                     notes=[f"locked sha256 {digest}"]))
            continue
        except OSError as e:
            errors.append(SynthError("S206", f"{c.what} '{c.key}' is locked in "
                                     f"'{lock.name}' but cannot be read: "
                                     f"{e if isinstance(e, NotReadable) else e.strerror or e}",
                                     c.span, notes=[f"locked sha256 {digest}"]))
            continue
        if found != digest:
            errors.append(SynthError(
                "S206", f"{c.what} '{c.key}' changed since it was locked in '{lock.name}'",
                c.span, notes=[f"locked sha256 {digest}", f"found  sha256 {found}"],
                hint="if the change is intended, lock again with `synth lock SPEC`"))
    return errors


def verified_digests(graph: SynthGraph, spec_path: str | os.PathLike | None
                     ) -> dict[str, str]:
    """The locked sha256 of each checkpoint file (resolved path) of a verified lock."""
    if not has_lock(spec_path):
        return {}
    locked = read_lock(spec_path)
    return {c.path: locked[c.key] for c in named_checkpoints(graph) if c.key in locked}


def provenance_errors(provenance: dict[str, dict], digests: dict[str, str]) -> list[SynthError]:
    """Tensors read from a locked checkpoint whose recorded sha256 is not the locked one
    (the file changed after the lock was verified, while it was read)."""
    bad: dict[str, tuple[str, str]] = {}
    for origin in provenance.values():
        file, sha = origin.get("file"), origin.get("sha256")
        if file is None or sha is None:
            continue
        want = digests.get(file) or digests.get(str(Path(file).resolve()))
        if want is not None and want != sha:
            bad[file] = (want, sha)
    return [SynthError("S206", f"weights file '{file}' changed while it was read",
                       notes=[f"locked sha256 {want}", f"found  sha256 {sha}"],
                       hint="nothing was written; run the command again")
            for file, (want, sha) in sorted(bad.items())]
