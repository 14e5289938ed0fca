"""Parameter counts of a checked graph: each tensor counted once, frozen ones apart.

The check writes, per node, ``parameters`` and ``buffers`` (qualified name →
number of values); the summary, the pictures and the check itself add them up
here.

>>> count_params({"h.weight": 12, "h.bias": 3}, frozen={"h.weight"})
(15, 12)
"""

from __future__ import annotations

from typing import Collection, Mapping


def all_parameters(g) -> dict[str, int]:
    """Every parameter a checked graph's nodes install, by qualified name (numel)."""
    out: dict[str, int] = {}
    for n in g.nodes:
        out.update(g.nodes[n].get("parameters", {}))
    return out


def all_buffers(g) -> dict[str, int]:
    """Every buffer a checked graph's nodes install, by qualified name (numel)."""
    out: dict[str, int] = {}
    for n in g.nodes:
        out.update(g.nodes[n].get("buffers", {}))
    return out


def count_params(params: Mapping[str, int], frozen: Collection[str] = ()) -> tuple[int, int]:
    """(total, frozen) values of `params`, a name → numel table."""
    total = sum(params.values())
    return total, sum(v for k, v in params.items() if k in frozen)
