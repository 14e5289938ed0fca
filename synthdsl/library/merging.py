"""Weight-space merges of tensors: the methods a ``merge(...)`` source applies, one tensor
at a time.

Every method takes the tensors of one key (the base's, when the method has a base, and
each model's) and gives the merged tensor; nothing here reads a file. Computation is in
float32 (float64 for float64 tensors) and the result is cast back to the model's dtype.

* ``linear`` — a weighted average ``Σ wᵢ θᵢ / Σ wᵢ`` (a uniform soup with equal
  weights; ``normalize=false`` keeps the plain weighted sum).
* ``task_arithmetic`` — ``θ_base + λ Σ wᵢ (θᵢ − θ_base)`` (Ilharco et al., 2023).
* ``ties`` — TIES-merging (Yadav et al., 2023): each task vector ``τᵢ = θᵢ − θ_base``
  is trimmed to the ``max(1, ⌊density · n⌋)`` entries largest in magnitude, a sign is
  elected per entry (that of ``Σ wᵢ τᵢ``; + where it is 0), and the weighted entries
  that agree with it are summed and divided by the weights that agree: ``θ_base + λ τ``.
* ``dare_ties`` / ``dare_linear`` — DARE (Yu et al., 2024): each task vector keeps
  each entry with probability ``density`` (a seeded draw per tensor and model) and is
  rescaled so that its L1 norm is what it was (``rescale="l1"``, mergekit's way), by
  ``1/density`` (``rescale="density"``, the paper's) or not at all (``"none"``); then
  the TIES sign election, or a plain weighted sum.
* ``slerp`` — spherical interpolation between two models at ``t`` over each flattened
  tensor; nearly collinear tensors are interpolated linearly.

This is mergekit's ``generalized_task_arithmetic`` family, with its defaults: task
arithmetic, TIES and the DARE variants differ only in how task vectors are sparsified
(none, by magnitude, at random), whether signs are elected, and whether the sum is
divided by the weights (by default only for ``ties``).

>>> import torch
>>> a, b = torch.tensor([1.0, -2.0]), torch.tensor([3.0, 1.0])
>>> linear([a, b], [1.0, 1.0]).tolist()
[2.0, -0.5]
>>> merge_tensor("ties", "w", torch.zeros(2), [a, b], {"density": 1.0}).tolist()  # -2 and 1
[2.0, -2.0]
"""

from __future__ import annotations

import math
import zlib
from typing import Sequence

import torch

#: Each method: whether it needs a base model, how task vectors are sparsified, whether a
#: sign is elected, and whether the sum is divided by the weights by default.
METHODS: dict[str, dict] = {
    "linear": {"base": False},
    "task_arithmetic": {"base": True, "sparsify": None, "consensus": False, "normalize": False},
    "ties": {"base": True, "sparsify": "magnitude", "consensus": True, "normalize": True},
    "dare_ties": {"base": True, "sparsify": "random", "consensus": True, "normalize": False},
    "dare_linear": {"base": True, "sparsify": "random", "consensus": False, "normalize": False},
    "slerp": {"base": False},
}
#: Below this cosine similarity two tensors are interpolated on the sphere; above it, along
#: the line (their angle is too small for the sphere's formula to be accurate).
SLERP_COLLINEAR = 0.9995


def _work_dtype(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _stack(ts: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.stack([t.to(_work_dtype(ts[0])) for t in ts])


def _weights(weights: Sequence[float], like: torch.Tensor) -> torch.Tensor:
    """The weights as a column that broadcasts against stacked tensors."""
    return torch.tensor(list(weights), dtype=like.dtype).view(-1, *([1] * (like.dim() - 1)))


def linear(ts: Sequence[torch.Tensor], weights: Sequence[float],
           normalize: bool = True) -> torch.Tensor:
    """``Σ wᵢ θᵢ`` divided by ``Σ wᵢ`` (when `normalize`)."""
    stacked = _stack(ts)
    w = _weights(weights, stacked)
    out = (stacked * w).sum(0)
    if normalize:
        out = out / float(sum(weights))
    return out.to(ts[0].dtype)


#: How DARE rescales a task vector after its drop.
RESCALES = ("l1", "density", "none")


def magnitude_mask(delta: torch.Tensor, density: float) -> torch.Tensor:
    """True for the ``max(1, ⌊density · numel⌋)`` entries of `delta` largest in magnitude
    (ties broken by position: the earlier entry is kept)."""
    k = max(1, int(density * delta.numel())) if delta.numel() else 0
    mask = torch.zeros(delta.numel(), dtype=torch.bool)
    if k > 0:
        order = torch.argsort(delta.abs().flatten(), descending=True, stable=True)
        mask[order[:k]] = True
    return mask.view(delta.shape)


def key_generator(seed: int, key: str, index: int) -> torch.Generator:
    """The random stream of model `index` at tensor `key`: the same whatever order tensors
    are read in, and whatever else is merged."""
    gen = torch.Generator()
    gen.manual_seed(zlib.crc32(f"{seed}:{index}:{key}".encode()) + (seed << 32))
    return gen


def random_mask(delta: torch.Tensor, density: float, gen: torch.Generator) -> torch.Tensor:
    """Each entry kept with probability `density` (DARE's drop), from `gen`."""
    return torch.rand(delta.shape, generator=gen) < density


def rescaled(delta: torch.Tensor, kept: torch.Tensor, density: float, rescale: str
             ) -> torch.Tensor:
    """A task vector's kept entries, scaled back up after DARE's drop (:data:`RESCALES`)."""
    masked = delta * kept
    if rescale == "density":
        return masked / density
    if rescale == "l1":
        before, after = delta.abs().sum(), masked.abs().sum()
        if before >= 1e-7 and after >= 1e-7:
            return masked * (before / after)
    return masked


def task_vectors(base: torch.Tensor, ts: Sequence[torch.Tensor], sparsify: str | None,
                 density: float, key: str = "", seed: int = 0, rescale: str = "l1"
                 ) -> torch.Tensor:
    """``θᵢ − θ_base`` for each model, stacked, sparsified as the method says: by
    magnitude (TIES's trim), or at random and rescaled (DARE)."""
    work = _work_dtype(base)
    deltas = []
    for i, t in enumerate(ts):
        d = t.to(work) - base.to(work)
        if sparsify == "magnitude" and density < 1:
            d = d * magnitude_mask(d, density)
        elif sparsify == "random" and density < 1:
            d = rescaled(d, random_mask(d, density, key_generator(seed, key, i)), density,
                         rescale)
        deltas.append(d)
    return torch.stack(deltas)


def combine(base: torch.Tensor, deltas: torch.Tensor, weights: Sequence[float],
            consensus: bool, normalize: bool, scale: float) -> torch.Tensor:
    """``θ_base + λ · Σ wᵢ τᵢ``; with `consensus` only the entries whose sign agrees with
    the sign of ``Σ wᵢ τᵢ`` (+ where that is 0), and with `normalize` divided by the
    weights that count."""
    w = _weights(weights, deltas)
    weighted = deltas * w
    if consensus:
        elected = torch.where(weighted.sum(0) >= 0, 1.0, -1.0).to(weighted.dtype)
        agree = torch.sign(weighted) == elected
        mixed = (weighted * agree).sum(0)
        divisor = (w * agree).sum(0)
    else:
        mixed = weighted.sum(0)
        divisor = w.sum(0).expand_as(mixed)
    if normalize:
        mixed = mixed / torch.where(divisor.abs() > 0, divisor, torch.ones_like(divisor))
    return (base.to(deltas.dtype) + scale * mixed).to(base.dtype)




def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """From `a` (t=0) to `b` (t=1) along the great circle through their directions, each
    tensor flattened; lengths interpolate with it."""
    work = _work_dtype(a)
    x, y = a.to(work).flatten(), b.to(work).flatten()
    nx, ny = x.norm(), y.norm()
    if nx == 0 or ny == 0:
        return torch.lerp(x, y, t).view(a.shape).to(a.dtype)
    dot = float(torch.dot(x / nx, y / ny).clamp(-1.0, 1.0))
    if abs(dot) > SLERP_COLLINEAR:
        out = torch.lerp(x, y, t)
    else:
        theta = math.acos(dot)
        s = math.sin(theta)
        out = (math.sin((1 - t) * theta) / s) * x + (math.sin(t * theta) / s) * y
    return out.view(a.shape).to(a.dtype)


def merge_tensor(method: str, key: str, base: torch.Tensor | None,
                 ts: Sequence[torch.Tensor], options: dict,
                 statistic: bool = False) -> torch.Tensor:
    """The merged value of tensor `key` under `method` and its `options` (weights,
    density, scale, t, seed, normalize, rescale). Integer and bool tensors (counters,
    indices) are not averaged: the base's (or the first model's) is kept. A `statistic`
    (a normalisation layer's running mean or variance) is the weighted average of the
    models under every method (``1 − t`` and ``t`` for slerp): task vectors of
    variances can add up to a negative variance."""
    first = base if base is not None else ts[0]
    if not first.dtype.is_floating_point:
        return first
    weights = options.get("weights") or [1.0] * len(ts)
    if statistic and method != "linear":
        t = float(options.get("t", 0.5))
        return linear(ts, [1 - t, t] if method == "slerp" else weights)
    if method == "linear":
        return linear(ts, weights, options.get("normalize", True))
    if method == "slerp":
        return slerp(ts[0], ts[1], float(options.get("t", 0.5)))
    spec = METHODS[method]
    deltas = task_vectors(base, ts, spec["sparsify"], float(options.get("density", 1.0)),
                          key, int(options.get("seed", 0)), options.get("rescale", "l1"))
    return combine(base, deltas, weights, spec["consensus"],
                   options.get("normalize", spec["normalize"]),
                   float(options.get("scale", 1.0)))
