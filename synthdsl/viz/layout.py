"""A layered (Sugiyama-style) ordering of the view, for the HTML page to draw.

Ranks come from the longest path over the view's order (the graph's topological
order; edges that point backwards, as in a cycle of a broken spec, are left
out). Within each rank, nodes are ordered by a few sweeps of the barycenter
heuristic, down and up, keeping the members of one source next to each other.
The result is a horizontal position hint per node; the page packs nodes left to
right in that order, so it can redo ranks itself when a source is collapsed.

Deterministic: ties are broken by the previous position, then by the view order.

>>> from synthdsl.viz.view import View, ViewNode, ViewEdge, Counts
>>> v = View("A", None, [ViewNode(i, i, "op", "op") for i in "abcd"],
...          [ViewEdge("a", "c", "data"), ViewEdge("b", "d", "data"), ViewEdge("a", "d", "data")],
...          [], Counts(), [])
>>> sorted(layered_order(v).items())
[('a', (0, -0.5)), ('b', (0, 0.5)), ('c', (1, -0.5)), ('d', (1, 0.5))]
"""

from __future__ import annotations

from synthdsl.viz.view import View

#: Barycenter sweeps (one down and one up each).
SWEEPS = 6


def ranks(ids: list[str], edges: list[tuple[str, str]]) -> dict[str, int]:
    pos = {n: i for i, n in enumerate(ids)}
    preds: dict[str, list[str]] = {n: [] for n in ids}
    for u, v in edges:
        if u in pos and v in pos and pos[u] < pos[v]:
            preds[v].append(u)
    rank: dict[str, int] = {}
    for n in ids:
        rank[n] = max((rank[u] + 1 for u in preds[n]), default=0)
    return rank


def layered_order(view: View) -> dict[str, tuple[int, float]]:
    """Node id -> (rank, horizontal position hint, centred on 0)."""
    ids = [n.id for n in view.nodes]
    pos = {n: i for i, n in enumerate(ids)}
    edges = [(e.src, e.dst) for e in view.edges
             if e.src in pos and e.dst in pos and pos[e.src] < pos[e.dst]]
    rank = ranks(ids, edges)
    cluster = {n.id: n.cluster for n in view.nodes}
    preds: dict[str, list[str]] = {n: [] for n in ids}
    succs: dict[str, list[str]] = {n: [] for n in ids}
    for u, v in edges:
        preds[v].append(u)
        succs[u].append(v)
    layers: dict[int, list[str]] = {}
    for n in ids:
        layers.setdefault(rank[n], []).append(n)
    x: dict[str, float] = {}

    def place(layer: list[str]) -> None:
        mid = (len(layer) - 1) / 2
        for i, n in enumerate(layer):
            x[n] = i - mid

    for layer in layers.values():
        place(layer)

    def sweep(levels: list[int], neighbours: dict[str, list[str]]) -> None:
        for r in levels:
            layer = layers[r]
            bary = {n: (sum(x[m] for m in neighbours[n]) / len(neighbours[n])
                        if neighbours[n] else x[n]) for n in layer}
            groups: dict[str, list[float]] = {}
            for n in layer:
                if cluster[n]:
                    groups.setdefault(cluster[n], []).append(bary[n])
            gkey = {c: sum(v) / len(v) for c, v in groups.items()}
            prev = {n: i for i, n in enumerate(layer)}
            layer.sort(key=lambda n: (gkey[cluster[n]] if cluster[n] else bary[n],
                                      cluster[n] or "", bary[n], prev[n], pos[n]))
            place(layer)

    levels = sorted(layers)
    for _ in range(SWEEPS):
        sweep(levels[1:], preds)
        sweep(levels[-2::-1], succs)
    sweep(levels[1:], preds)
    return {n: (rank[n], round(x[n], 4)) for n in ids}
