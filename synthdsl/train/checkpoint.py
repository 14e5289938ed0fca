"""Run folders and checkpoints of `synth train`.

A checkpoint is a dict of tensors and plain values, written atomically with
``torch.save`` and read back with ``torch.load(weights_only=True)``: it never holds
an arbitrary object. It is named by optimizer steps (``step-00000120.pt``), so names
sort in the order they were written.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import torch
from torch import nn

from synthdsl.files import (WEIGHTS_MAX_BYTES, NotReadable, atomic_path, regular_file,
                            write_text)
from synthdsl.library.checkpoints import reason
from synthdsl.train.errors import TrainError

RUN_FORMAT = "synthdsl-run/1"
CHECKPOINT_FORMAT = "synthdsl-checkpoint/1"


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to `path`, atomically. The file is written through a Python file, so a
    full disk is an ``OSError`` the writer turns into S009 naming `path`."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def checkpoints_in(run: Path) -> list[Path]:
    """The run's checkpoints, oldest first."""
    return sorted((run / "checkpoints").glob("*.pt"), key=lambda p: p.name)


def checkpoint_name(global_step: int) -> str:
    # named by optimizer steps, so that names sort in the order they were written
    return f"step-{global_step:08d}.pt"


def refusal(e: BaseException) -> str:
    """Why torch could not load a file, in words that never advise loading it with
    ``weights_only=False`` (which would run whatever the file holds)."""
    why = reason(e) if isinstance(e, Exception) else type(e).__name__
    if "weights_only" in why or "safe_globals" in why or "trust" in why:
        return ("it holds pickled Python objects, which are refused: only tensors are ever "
                "loaded")
    return why


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint, read as tensors and plain values only (never arbitrary objects): a
    regular file (a FIFO or a device is refused, not opened), loaded with
    ``weights_only=True``; a file that holds anything else is refused, and never with advice
    to load it some other way."""
    try:
        regular_file(path, WEIGHTS_MAX_BYTES, "checkpoint")
    except FileNotFoundError:
        raise TrainError(f"checkpoint '{path}' does not exist") from None
    except NotReadable as e:  # a FIFO would block, a device would never end
        raise TrainError(f"cannot read {e}", hint="name a regular file") from None
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a torn or foreign file: say which, in our words
        raise TrainError(f"cannot read checkpoint '{path}': {refusal(e)}",
                         hint="a synthdsl checkpoint holds tensors and plain values only; "
                         "delete this file to resume from the one before it") from None
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
        raise TrainError(f"'{path}' is not a synthdsl training checkpoint")
    return ck


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": list(_py_state())}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _py_state() -> tuple:
    version, internal, gauss = random.getstate()
    return version, list(internal), gauss


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_epoch(seed: int, epoch: int, rank: int) -> None:
    """Every epoch starts from random streams fixed by (seed, epoch, rank)."""
    s = (seed * 1_000_003 + epoch * 7_919 + rank * 104_729) % (2 ** 63)
    torch.manual_seed(s)
    random.seed(s)


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """What training can change: trainable parameters and every buffer."""
    state = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    state.update({n: b.detach().clone() for n, b in model.named_buffers()})
    return state
