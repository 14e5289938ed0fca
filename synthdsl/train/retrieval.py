"""Retrieval metrics of a contrastive spec: recall@1 and recall@5 in both directions.

For a ``loss contrastive(a, b)`` the two values of sample ``i`` are a pair. Over an
evaluation split of ``N`` samples each ``a[i]`` queries every ``b[j]`` by cosine
similarity, and the pair is found at rank ``r`` when ``r`` candidates are more similar
than ``b[i]``; recall@k is the share of queries found at a rank below ``k``, for ``a → b``
and for ``b → a``. Candidates exactly as similar as the pair (two equal captions) share
their ranks: a query counts as the chance that a random order of them puts the pair in
the top ``k``, so a model that maps everything to one point scores chance, ``k / N``.

>>> import torch
>>> a = torch.eye(4)
>>> m = retrieval_metrics(a, a, "img", "txt")
>>> m.a_to_b, m.b_to_a
({1: 1.0, 5: 1.0}, {1: 1.0, 5: 1.0})
>>> collapsed = retrieval_metrics(torch.ones(4, 2), torch.ones(4, 2), "img", "txt")
>>> collapsed.a_to_b[1], collapsed.chance[1]
(0.25, 0.25)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

#: The ranks recall is reported at.
KS = (1, 5)
#: Similarities closer than this to the pair's count as equal to it.
TIE = 1e-5
#: Queries compared at a time (the similarity block is CHUNK × N).
CHUNK = 1024


def _recall(q: torch.Tensor, c: torch.Tensor) -> dict[int, float]:
    n = len(q)
    hits = {k: 0.0 for k in KS}
    for start in range(0, n, CHUNK):
        sim = q[start:start + CHUNK] @ c.T
        rows = torch.arange(len(sim))
        true = sim[rows, rows + start].unsqueeze(1)
        greater = (sim > true + TIE).sum(1).double()
        ties = ((sim - true).abs() <= TIE).sum(1).double()  # the pair itself included
        for k in KS:
            hits[k] += float(((k - greater) / ties).clamp(0, 1).sum())
    return {k: hits[k] / max(n, 1) for k in KS}


@dataclass
class RetrievalMetrics:
    """Recall@k of value `a` retrieving `b` and back, over `n` pairs."""

    a: str
    b: str
    n: int
    a_to_b: dict[int, float] = field(default_factory=dict)
    b_to_a: dict[int, float] = field(default_factory=dict)

    @property
    def chance(self) -> dict[int, float]:
        return {k: min(k / max(self.n, 1), 1.0) for k in KS}

    def summary(self) -> dict[str, float]:
        """The four numbers, as a validation line and ``log.jsonl`` keep them."""
        return {f"{d}_recall@{k}": v for d, got in (("a2b", self.a_to_b), ("b2a", self.b_to_a))
                for k, v in got.items()} | {"n": self.n}

    def to_dict(self) -> dict[str, Any]:
        def at(got: dict[int, float]) -> dict[str, float]:
            return {f"recall@{k}": v for k, v in got.items()}

        return {"kind": "retrieval", "a": self.a, "b": self.b, "n": self.n,
                f"{self.a}->{self.b}": at(self.a_to_b), f"{self.b}->{self.a}": at(self.b_to_a),
                "chance": at(self.chance)}

    def line(self) -> str:
        return (f"{self.a}->{self.b} recall@1 {self.a_to_b[1]:.4f}, @5 {self.a_to_b[5]:.4f}; "
                f"{self.b}->{self.a} recall@1 {self.b_to_a[1]:.4f}, @5 {self.b_to_a[5]:.4f} "
                f"(chance {self.chance[1]:.4f}, {self.chance[5]:.4f}; {self.n} pairs)")

    def table(self) -> str:
        width = max(len(self.a), len(self.b)) * 2 + 2
        rows = [f"{'direction'.ljust(width)}  recall@1  recall@5",
                f"{(self.a + '->' + self.b).ljust(width)}  {self.a_to_b[1]:8.4f}  "
                f"{self.a_to_b[5]:8.4f}",
                f"{(self.b + '->' + self.a).ljust(width)}  {self.b_to_a[1]:8.4f}  "
                f"{self.b_to_a[5]:8.4f}",
                f"{'chance'.ljust(width)}  {self.chance[1]:8.4f}  {self.chance[5]:8.4f}"]
        return "\n".join(rows)


def retrieval_metrics(a: torch.Tensor, b: torch.Tensor, a_name: str = "a", b_name: str = "b"
                      ) -> RetrievalMetrics:
    """Recall@1 and @5 of the pairs ``(a[i], b[i])``, both ways (see the module docstring)."""
    qa = F.normalize(a.double().flatten(1), dim=-1)
    qb = F.normalize(b.double().flatten(1), dim=-1)
    return RetrievalMetrics(a_name, b_name, len(a), _recall(qa, qb), _recall(qb, qa))


def contrastive_pairs(graph) -> list[tuple[str, str]]:
    """The two values of every ``loss contrastive`` statement of a spec."""
    return [(d["inputs"][0], d["inputs"][1]) for d in graph.graph.get("losses", [])
            if d["kind"] == "contrastive" and len(d["inputs"]) == 2]


def retrieval_of(model, data, preprocess, pair: tuple[str, str], batch_size: int = 256,
                 device: str | torch.device = "cpu", dist=None, amp=None) -> RetrievalMetrics:
    """:func:`retrieval_metrics` of the values `pair` over every sample of `data` (each
    process a share under DDP, all getting the whole)."""
    from synthdsl.train.predict import predict_values

    values = predict_values(model, data, preprocess, batch_size, device, names=list(pair),
                            dist=dist, amp=amp, train_values=True)
    return retrieval_metrics(values[pair[0]], values[pair[1]], *pair)
