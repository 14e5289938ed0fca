"""The losses `synth train` optimises, from the spec's `loss` statements.

* ``ce(logits)`` — cross-entropy on the labelled samples.
* ``distill(student, teacher, temperature=T, alpha=a)`` — Hinton et al.'s knowledge
  distillation: ``a · T² · KL(softmax(teacher/T) ‖ softmax(student/T))`` over every
  sample plus ``(1 - a) · CE(student, label)`` over the labelled ones.
* ``feature(student, teacher, weight=w)`` — ``w ·`` the mean squared difference of two
  values of one shape.
* ``contrastive(a, b, temperature=t)`` — CLIP's symmetric InfoNCE: ``a`` and ``b``
  ``[B, D]`` L2-normalised, the similarities ``a bᵀ / t`` scored by cross-entropy with
  sample ``i``'s pair as the class, rows and columns averaged; no labels. Under DDP the
  other samples of a process's share are its negatives.

The second value of ``distill`` and ``feature`` is the target and gets no gradient.
Per-sample losses are weighted and divided by the batch's counts, so that under DDP
each process's share adds up to the mean over the whole batch.

>>> import torch
>>> y = torch.tensor([0, 1, -1])                  # the third sample has no label
>>> s = torch.zeros(3, 2)
>>> loss, parts = objective([LossTerm("ce", ["s"])], {"s": s}, y, torch.ones(3), 3.0, 2.0)
>>> round(float(loss), 4)                          # log 2, over the two labelled samples
0.6931
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from synthdsl.lang.options import LOSSES
from synthdsl.train.errors import TrainError
from synthdsl.train.frozen import training_graph_module
from synthdsl.train.preprocess import Preprocess


@dataclass
class Teacher:
    """A model whose outputs a student is distilled from (given outside the spec)."""

    model: nn.Module
    preprocess: Preprocess
    temperature: float = LOSSES["distill"].options["temperature"].default
    alpha: float = LOSSES["distill"].options["alpha"].default
    output: str | None = None
    description: str = ""

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            out = self.model(*self.preprocess.inputs(images))
        if isinstance(out, dict):
            out = out[self.output or next(iter(out))]
        return out.float()


@dataclass
class LossTerm:
    kind: str                            # ce, distill, feature
    inputs: list[str]
    options: dict[str, Any] = field(default_factory=dict)
    scale: Any = None                    # a contrastive loss's learned logit scale

    def describe(self) -> str:
        opts = ", ".join(f"{k}={v}" for k, v in self.options.items())
        return f"{self.kind}({', '.join(self.inputs)}{', ' + opts if opts else ''})"


def _learned(model, loss: dict) -> nn.Parameter | None:
    """A contrastive loss's learned logit scale (``learn_temperature=true``), else None."""
    if not loss.get("options", {}).get("learn_temperature"):
        return None
    from synthdsl.checks.losses import scale_name

    return model.get_parameter(scale_name(loss["node"]))


#: CLIP's bound on the learned logit scale: a temperature of at least 1/100.
MAX_LOGIT_SCALE = math.log(100)


def _option(term: LossTerm, name: str) -> Any:
    """A term's option as the spec gives it, else the language's default (lang.options)."""
    return term.options.get(name, LOSSES[term.kind].options[name].default)


TEACHER_VALUE = "teacher"
#: The key under which a mixed batch's soft targets (synthdsl.train.augment) reach the losses.
SOFT_TARGETS = "<mixup targets>"


def loss_terms(model, teacher: Teacher | None = None) -> list[LossTerm]:
    """The spec's loss statements; without any, cross-entropy on the single output (or
    distillation from `teacher`)."""
    stated = [LossTerm(d["kind"], list(d["inputs"]), dict(d.get("options", {})),
                       _learned(model, d)) for d in model.graph.graph.get("losses", [])]
    if stated:
        if teacher is not None:
            raise TrainError("the spec states its own losses, so a teacher cannot be added "
                             "from the command line",
                             hint="name the teacher as a source in the spec and add "
                             "`loss distill(logits, teacher_logits)`")
        return stated
    outputs = list(model.output_names)
    if len(outputs) != 1:
        raise TrainError(f"spec '{model.graph.name}' has {len(outputs)} outputs "
                         f"({', '.join(outputs)}) and no loss statement",
                         hint=f"say what to train, e.g. `loss ce({outputs[0]})`")
    if teacher is not None:
        return [LossTerm("distill", [outputs[0], TEACHER_VALUE],
                         {"temperature": teacher.temperature, "alpha": teacher.alpha})]
    return [LossTerm("ce", [outputs[0]])]


def teacher_modules(model) -> list[str]:
    """Modules only the losses read (a teacher inside the spec) whose tensors are all
    frozen: in training they run in eval mode (no dropout, fixed statistics), as a
    teacher should."""
    gm, infer = training_graph_module(model), model.graph_module
    if gm is infer:
        return []
    used = {n.target for n in infer.graph.nodes if n.op in ("call_module", "get_attr")}
    out = []
    for n in gm.graph.nodes:
        if n.op in ("call_module", "get_attr") and n.target not in used and n.target not in out:
            m = gm.get_submodule(n.target)
            if isinstance(m, nn.Module) and all(not p.requires_grad for p in m.parameters()):
                out.append(n.target)
    return out


def primary_output(terms: Sequence[LossTerm], model) -> str:
    """The value whose arg-max is the prediction: the first ce/distill student."""
    for t in terms:
        if t.kind in ("ce", "distill"):
            return t.inputs[0]
    return model.output_names[0]


def term_names(terms: Sequence[LossTerm]) -> list[str]:
    """How each term is called in the log: its kind, numbered when a kind repeats."""
    return [t.kind if sum(u.kind == t.kind for u in terms) == 1 else f"{t.kind}{i}"
            for i, t in enumerate(terms)]


def contrastive_per_sample(a: torch.Tensor, b: torch.Tensor, temperature: float
                           ) -> torch.Tensor:
    """Each pair's symmetric InfoNCE loss: ``a[i]`` against every ``b`` and ``b[i]`` against
    every ``a``, the pair as the right answer (CLIP's loss, before the mean).

    >>> import torch
    >>> e = torch.eye(3)
    >>> bool(contrastive_per_sample(e, e, 0.01).max() < 1e-6)     # every pair found
    True
    """
    a = F.normalize(a.float().flatten(1), dim=-1)
    b = F.normalize(b.float().flatten(1), dim=-1)
    logits = a @ b.T / temperature
    target = torch.arange(len(a), device=a.device)
    return (F.cross_entropy(logits, target, reduction="none")
            + F.cross_entropy(logits.T, target, reduction="none")) / 2


def objective(terms: Sequence[LossTerm], values: dict[str, torch.Tensor], y: torch.Tensor,
              w: torch.Tensor, n_all: float, n_labelled: float, label_smoothing: float = 0.0
              ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The total loss and each term. Per-sample losses are weighted by `w` (0 for padding)
    and summed, then divided by the batch's sample counts (`n_all`, `n_labelled`) — the
    global counts under DDP, so that the shares add up to the batch mean."""
    labelled = (y >= 0).to(w.dtype) * w
    safe_y = y.clamp(min=0)
    total = torch.zeros((), device=w.device)
    parts: dict[str, torch.Tensor] = {}

    soft_targets = values.get(SOFT_TARGETS)  # mixup/cutmix: soft targets, smoothing in them

    def ce(logits: torch.Tensor, smoothing: float) -> torch.Tensor:
        if soft_targets is not None:  # timm's SoftTargetCrossEntropy, per sample
            per = -(soft_targets * F.log_softmax(logits.float(), dim=-1)).sum(-1)
        else:
            per = F.cross_entropy(logits.float(), safe_y, reduction="none",
                                  label_smoothing=smoothing)
        return (per * labelled).sum() / max(n_labelled, 1.0)

    for t, name in zip(terms, term_names(terms)):
        if t.kind == "ce":
            smoothing = float(t.options.get("label_smoothing", label_smoothing))
            value = float(_option(t, "weight")) * ce(values[t.inputs[0]], smoothing)
        elif t.kind == "distill":
            s, te = values[t.inputs[0]].float(), values[t.inputs[1]].detach().float()
            temp = float(_option(t, "temperature"))
            alpha = float(_option(t, "alpha"))
            log_p_s = F.log_softmax(s / temp, dim=-1)
            log_p_t = F.log_softmax(te / temp, dim=-1)
            kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(-1) * temp * temp
            soft = (kl * w).sum() / max(n_all, 1.0)
            value = alpha * soft + (1 - alpha) * ce(s, label_smoothing) if alpha < 1 else soft
        elif t.kind == "feature":
            a, b = values[t.inputs[0]].float(), values[t.inputs[1]].detach().float()
            per = (a - b).pow(2).flatten(1).mean(1)
            value = float(_option(t, "weight")) * (per * w).sum() / max(n_all, 1.0)
        elif t.kind == "contrastive":
            temperature = float(_option(t, "temperature")) if t.scale is None else \
                t.scale.clamp(max=MAX_LOGIT_SCALE).neg().exp()
            per = contrastive_per_sample(values[t.inputs[0]], values[t.inputs[1]],
                                         temperature)
            value = float(_option(t, "weight")) * (per * w).sum() / max(n_all, 1.0)
        else:
            raise TrainError(f"unknown loss '{t.kind}'")
        parts[name] = value
        total = total + value
    return total, parts
