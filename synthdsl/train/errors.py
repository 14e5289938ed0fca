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
    """Data that cannot be read or does not fit what was asked of it."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__("D001", message, None, hint=hint)


class EvalError(SynthError):
    """A model or run that cannot be evaluated as asked."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__("E001", message, None, hint=hint)
