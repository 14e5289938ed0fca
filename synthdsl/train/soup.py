"""Model soups: several fine-tuned variants of one spec, from one start, averaged in weight
space (Wortsman et al., ICML 2022).

:func:`soup` compiles the spec once (the start: new layers initialised with one seed) and
fine-tunes ``variants`` copies of it, each with its own training seed (data order, dropout)
and learning rate. A fixed stratified fifth of the training split is held out for
validation; the test split is never looked at to choose. Then:

* the **uniform soup** averages every variant;
* the **greedy soup** takes the variants in order of validation accuracy and keeps each
  one whose addition to the average does not lower the validation accuracy.

Both soups, and the best single variant (by validation accuracy), are evaluated on the
test split. Averages are taken tensor by tensor with :func:`synthdsl.library.merging.linear`
(integer tensors, such as BatchNorm's counters, from the first ingredient).

>>> greedy_order([0.5, 0.9, 0.7])
[1, 2, 0]
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from synthdsl.library.merging import merge_tensor
from synthdsl.train.data import DataSpec, split_positions
from synthdsl.train.errors import TrainError
from synthdsl.train.evaluate import evaluate
from synthdsl.train.options import Options
from synthdsl.train.preprocess import preprocess_for
from synthdsl.train.recipe import Recipe

#: The fraction of the training split held out to choose the soup's ingredients.
VAL_FRACTION = 0.2


@dataclass
class Variant:
    """One fine-tuned copy of the start."""

    index: int
    seed: int
    lr: float
    val_accuracy: float = 0.0
    test_accuracy: float = 0.0
    state: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    def record(self) -> dict[str, Any]:
        return {"index": self.index, "seed": self.seed, "lr": self.lr,
                "val_accuracy": self.val_accuracy, "test_accuracy": self.test_accuracy}


@dataclass
class SoupResult:
    variants: list[Variant]
    best: int                       #: index of the best single variant by validation
    greedy: list[int]               #: the greedy soup's ingredients, in the order added
    scores: dict[str, dict[str, float]]   #: best / uniform / greedy: val and test accuracy
    model: Any = None               #: the compiled model holding the greedy soup

    def record(self) -> dict[str, Any]:
        return {"variants": [v.record() for v in self.variants], "best": self.best,
                "greedy": self.greedy, "scores": self.scores}


def average(states: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The uniform average of state dicts with the same keys, tensor by tensor."""
    return {k: merge_tensor("linear", k, None, [s[k] for s in states], {})
            for k in states[0]}


def greedy_order(scores: Sequence[float]) -> list[int]:
    """Indices by score, best first (ties: the earlier first)."""
    return sorted(range(len(scores)), key=lambda i: (-scores[i], i))


def greedy_soup(states: Sequence[dict[str, torch.Tensor]], scores: Sequence[float],
                score: Callable[[dict[str, torch.Tensor]], float]) -> tuple[list[int], float]:
    """The greedy soup's ingredients: in order of `scores`, each state is added when the
    average with it scores (by `score`) at least as well as without it."""
    order = greedy_order(scores)
    chosen, best = [order[0]], scores[order[0]]
    for i in order[1:]:
        trial = score(average([states[j] for j in chosen + [i]]))
        if trial >= best:
            chosen, best = chosen + [i], trial
    return chosen, best


def _accuracy(model, data, preprocess) -> float:
    report = evaluate(model, data, preprocess)
    return float(report.rows[0].metrics.accuracy)


def soup(spec: str | Path, data: str, *, variants: int = 4, seed: int = 0,
         lrs: Sequence[float] | None = None, recipe: dict[str, Any] | None = None,
         options: Options = Options(), classes: Sequence[int | str] | None = None,
         log: Callable[[str], None] | None = None) -> SoupResult:
    """Fine-tune `variants` copies of the spec at `spec` on `data` from one start (seed
    `seed`), each with training seed ``seed + 1 + i`` and learning rate ``lrs[i % len]``
    (the recipe's when `lrs` is None), and make the uniform and greedy soups."""
    from synthdsl.pipeline import check_spec, compile_locked
    from synthdsl.train.run import train

    if variants < 2:
        raise TrainError(f"a soup needs at least 2 variants, not {variants}")
    graph = check_spec(Path(spec))
    base = Recipe.resolve(graph.graph.get("recipe"), recipe)
    lrs = list(lrs) if lrs else [base.lr]
    start = compile_locked(graph, seed=seed)
    preprocess = preprocess_for(start)
    size, channels = preprocess.size, preprocess.channels or 3
    spec_data = DataSpec(data, tuple(classes) if classes else None)
    full = spec_data.load("train", size, channels)
    fit_pos, val_pos = split_positions(full.targets.numpy(), VAL_FRACTION, seed)
    fit = full.subset(torch.as_tensor(fit_pos), name=f"{full.name} (fit)")
    val = full.subset(torch.as_tensor(val_pos), name=f"{full.name} (validation)")
    test = spec_data.load("test", size, channels)
    start_state = copy.deepcopy(start.state_dict())
    out: list[Variant] = []
    for i in range(variants):
        v = Variant(i, seed + 1 + i, float(lrs[i % len(lrs)]))
        model = start
        model.load_state_dict(start_state)
        r = Recipe.resolve(graph.graph.get("recipe"), {**(recipe or {}), "seed": v.seed,
                                                       "lr": v.lr})
        train(model, fit, None, recipe=r, options=options, preprocess=preprocess)
        v.state = copy.deepcopy(model.state_dict())
        v.val_accuracy = _accuracy(model, val, preprocess)
        v.test_accuracy = _accuracy(model, test, preprocess)
        out.append(v)
        if log:
            log(f"variant {i}: seed {v.seed}, lr {v.lr:g}: validation {v.val_accuracy:.4f}, "
                f"test {v.test_accuracy:.4f}")
    model = start

    def scored(state, data) -> float:
        model.load_state_dict(state)
        return _accuracy(model, data, preprocess)

    states = [v.state for v in out]
    val_scores = [v.val_accuracy for v in out]
    best = greedy_order(val_scores)[0]
    chosen, _ = greedy_soup(states, val_scores, lambda s: scored(s, val))
    uniform = average(states)
    greedy = average([states[j] for j in chosen])
    scores = {"best": {"val": out[best].val_accuracy, "test": out[best].test_accuracy},
              "uniform": {"val": scored(uniform, val), "test": scored(uniform, test)},
              "greedy": {"val": scored(greedy, val), "test": scored(greedy, test)}}
    model.load_state_dict(greedy)
    for k in list(model.provenance):
        model.provenance[k] = {**model.provenance[k], "soup": {
            "method": "greedy", "ingredients": [out[j].record() for j in chosen]}}
    return SoupResult(out, best, chosen, scores, model)
