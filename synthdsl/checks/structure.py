"""Structure: values that depend on themselves (S104).

Names the build could not resolve (unknown, duplicate, undefined outputs) are
already on the graph as diagnostics; the context starts with them. This pass
adds the cycles of the data and sharing edges, each reported once at the
value written first, and marks their nodes broken so later passes skip them.
"""

from __future__ import annotations

import networkx as nx

from synthdsl.checks.context import CheckContext


def check_cycles(ctx: CheckContext) -> None:
    """Report every cycle of data (and sharing) edges, in a stable order."""
    g = ctx.g
    if g.is_acyclic():  # no cycle over all edges, so none over data and sharing edges
        return
    data = nx.DiGraph((u, v) for u, v, k in g.edges(data="kind") if k in ("data", "share"))
    for cycle in sorted(nx.simple_cycles(data), key=sorted):
        # start at the value written first, so the message is the same on every run
        i = min(range(len(cycle)), key=lambda k: g.nodes[cycle[k]]["span"].start)
        cycle = cycle[i:] + cycle[:i]
        names = [g.nodes[n]["name"] for n in cycle]
        chain = " → ".join(f"'{n}'" for n in (*names, names[0]))
        ctx.err("S104", f"cycle: {chain}", g.nodes[cycle[0]]["span"],
                hint="a value cannot depend on itself; feed it from an earlier value")
        ctx.broken.update(cycle)
