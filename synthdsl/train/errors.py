"""The errors of training, data and evaluation: each a :class:`SynthError` with its own code,
printed by the CLI like a spec's diagnostics (no span: they are about a request, not a line).

>>> from synthdsl.lang.errors import render
>>> print(render(TrainError("epochs must be > 0", hint="say --epochs 3"), ""))
error[T001]: epochs must be > 0
  = help: say --epochs 3
"""

from __future__ import annotations

from synthdsl.lang.errors import SynthError


class TrainError(SynthError):
    """A training request that cannot be carried out as asked."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__("T001", message, None, hint=hint)


class DataError(SynthError):
    """Data that cannot be read or does not fit what was asked of it: D001 in general, D002
    non-finite image values, D003 images and labels of different lengths, D004 an array of
    the wrong kind or range, D005 an image file that cannot be read, D006 an array whose
    shape does not fit the input it is for."""

    def __init__(self, message: str, hint: str | None = None, code: str = "D001") -> None:
        super().__init__(code, message, None, hint=hint)


class DivergedError(SynthError):
    """Training that stopped because its loss became NaN or infinite (T002)."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__("T002", message, None, hint=hint)


class EvalError(SynthError):
    """A model or run that cannot be evaluated as asked."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__("E001", message, None, hint=hint)


def diverged(loss: float, terms: dict[str, float], epoch: int, step: int, steps: int,
             global_step: int, checkpoint: str | None) -> DivergedError:
    """T002 for a loss that became `loss` (NaN or infinite) at batch `step` of `steps` of
    `epoch` (both from 1), a batch of optimizer step `global_step` (from 1): training stops
    before that step is taken, so the run keeps its earlier checkpoints (`checkpoint` the
    newest) and writes no final model.

    >>> print(diverged(float("nan"), {"ce": float("nan")}, 2, 3, 10, 13, None).message)
    the loss became nan at epoch 2, batch 3 of 10 (optimizer step 13); training stopped \
before that step, no final model was written
    """
    parts = ", ".join(f"{n} {v:.4g}" for n, v in terms.items())
    kept = f"the run keeps its last checkpoint, {checkpoint}; " if checkpoint else ""
    return DivergedError(
        f"the loss became {loss} at epoch {epoch}, batch {step} of {steps} (optimizer step "
        f"{global_step}){f': {parts}' if len(terms) > 1 else ''}; training stopped before "
        f"that step, {kept}no final model was written",
        hint="lower the learning rate (--lr), check the data for extreme values, or train "
        "without --amp fp16")
