"""The budget's limits and their spelling: sizes such as ``16GiB``, ``KEY=SIZE`` lists,
the ``SYNTH_BUDGET`` variable and the ``--budget`` flag (no torch: the command line reads
them before anything heavy is loaded). The check enforces them: `synthdsl.checks.budget`.

>>> parse_budget("params=16GiB, activations=1.5GB").params
17179869184
>>> fmt_bytes(3 * 2 ** 30)
'3 GiB'
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import re
from dataclasses import dataclass, replace
from typing import Iterator

from synthdsl.lang.errors import SynthError

GiB = 2 ** 30

#: The environment variable that sets the limits: ``params=16GiB,activations=8GiB``.
ENV = "SYNTH_BUDGET"


@dataclass(frozen=True)
class Budget:
    """Limits in bytes. The defaults take a ViT-L (1.2 GB of float32) with room to spare."""

    params: int = 8 * GiB          #: the parameters of the compiled module, or of one source
    activations: int = 4 * GiB     #: what one sample makes on its way through
    batch: int = 1024 * GiB        #: one batch's activations (a training step)


_UNITS = {"": 1, "b": 1, "k": 10 ** 3, "kb": 10 ** 3, "m": 10 ** 6, "mb": 10 ** 6,
          "g": 10 ** 9, "gb": 10 ** 9, "t": 10 ** 12, "tb": 10 ** 12, "kib": 2 ** 10,
          "mib": 2 ** 20, "gib": 2 ** 30, "tib": 2 ** 40, "pib": 2 ** 50, "pb": 10 ** 15}


def parse_size(text: str) -> int:
    """``16GiB`` -> bytes; decimal (GB) and binary (GiB) units, a plain number is bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    if m is None or m.group(2).lower() not in _UNITS:
        raise ValueError(f"expected a size such as 16GiB, 500MB or 1000000, found {text!r}")
    try:
        value = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    except (OverflowError, ValueError):  # 400 nines: no number of bytes
        raise ValueError(f"expected a size of at most 2^63 bytes, found {text!r}") from None
    if value > 2 ** 63:
        raise ValueError(f"expected a size of at most 2^63 bytes, found {text!r}")
    if value < 1:
        raise ValueError(f"expected a size of at least one byte, found {text!r}")
    return value


def parse_budget(text: str, base: Budget | None = None) -> Budget:
    """``params=16GiB,activations=8GiB`` over `base` (the defaults): each key once."""
    base = base or Budget()
    fields = {"params", "activations", "batch"}
    changes: dict[str, int] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or key not in fields:
            raise ValueError(f"expected KEY=SIZE with KEY one of params, activations, batch; "
                             f"found {item!r}")
        if key in changes:
            raise ValueError(f"{key} is given twice")
        changes[key] = parse_size(value)
    return replace(base, **changes)


#: Help text of the ``--budget`` flag.
BUDGET_HELP = ("limits of the check, e.g. params=16GiB,activations=8GiB,batch=2TiB "
               "(defaults 8GiB, 4GiB, 1TiB; also SYNTH_BUDGET); a bad one is S010")


_CURRENT: contextvars.ContextVar[Budget | None] = contextvars.ContextVar("synth_budget",
                                                                          default=None)


def current_budget() -> Budget:
    """The limits in force: a `budget_limits` block, else ``SYNTH_BUDGET``, else defaults."""
    chosen = _CURRENT.get()
    if chosen is not None:
        return chosen
    env = os.environ.get(ENV)
    if env:
        try:
            return parse_budget(env)
        except ValueError as e:
            raise SynthError("S010", f"{ENV}: {e}",
                             hint=f"e.g. {ENV}=params=16GiB,activations=8GiB") from None
    return Budget()


@contextlib.contextmanager
def budget_limits(budget: Budget | str | None = None, **sizes: int | str) -> Iterator[Budget]:
    """Check with other limits inside the block: ``budget_limits("params=16GiB")``,
    ``budget_limits(params=16 * 2**30)`` or a `Budget`."""
    if isinstance(budget, str):
        try:
            chosen = parse_budget(budget, current_budget())
        except ValueError as e:  # the --budget flag, or a caller's text
            raise SynthError("S010", f"--budget: {e}",
                             hint="e.g. --budget params=16GiB,activations=8GiB") from None
    else:
        chosen = current_budget() if budget is None else budget
    if sizes:
        chosen = replace(chosen, **{k: parse_size(v) if isinstance(v, str) else int(v)
                                    for k, v in sizes.items()})
    token = _CURRENT.set(chosen)
    try:
        yield chosen
    finally:
        _CURRENT.reset(token)


def fmt_bytes(n: int) -> str:
    """Bytes as people read them: ``3 GiB``, ``1.5 TiB``, ``512 bytes``."""
    for unit, size in (("EiB", 2 ** 60), ("PiB", 2 ** 50), ("TiB", 2 ** 40), ("GiB", 2 ** 30),
                       ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if n >= size:
            v = n / size
            return f"{v:.0f} {unit}" if v == int(v) or v >= 100 else f"{v:.1f} {unit}"
    return f"{n} bytes"
