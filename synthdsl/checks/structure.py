"""Structure: values that depend on themselves (S104).

Names the build could not resolve (unknown, duplicate, undefined outputs) are
already on the graph as diagnostics; the context starts with them. This pass
adds the cycles of the data and sharing edges: one cycle for each strongly
connected component (not every cycle, whose number can grow exponentially
with the values), reported at the value written first, and marks every node
of the component broken so later passes skip them.
"""

from __future__ import annotations

from collections import deque

import networkx as nx

from synthdsl.checks.context import CheckContext


def _one_cycle(data: nx.DiGraph, part: set, start) -> list:
    """A shortest cycle through ``start`` inside ``part``, ``start`` first (breadth-first)."""
    parent = {start: None}
    queue = deque([start])
    while queue:
        u = queue.popleft()
        for v in data.successors(u):
            if v == start:
                path = [u]
                while parent[path[-1]] is not None:
                    path.append(parent[path[-1]])
                return path[::-1]
            if v in part and v not in parent:
                parent[v] = u
                queue.append(v)
    raise AssertionError("a strongly connected component has a cycle through each node")


def check_cycles(ctx: CheckContext) -> None:
    """Report one cycle per strongly connected component of data (and sharing) edges."""
    g = ctx.g
    if g.is_acyclic():  # no cycle over all edges, so none over data and sharing edges
        return
    data = nx.DiGraph((u, v) for u, v, k in g.edges(data="kind") if k in ("data", "share"))
    parts = [p for p in nx.strongly_connected_components(data)
             if len(p) > 1 or data.has_edge(next(iter(p)), next(iter(p)))]
    found = []
    for part in parts:
        # start at the value written first, so the message is the same on every run
        start = min(part, key=lambda n: g.nodes[n]["span"].start)
        found.append((part, _one_cycle(data, part, start)))
    for part, cycle in sorted(found, key=lambda pc: sorted(pc[1])):
        names = [g.nodes[n]["name"] for n in cycle]
        chain = " → ".join(f"'{n}'" for n in (*names, names[0]))
        ctx.err("S104", f"cycle: {chain}", g.nodes[cycle[0]]["span"],
                hint="a value cannot depend on itself; feed it from an earlier value")
        ctx.broken.update(part)
