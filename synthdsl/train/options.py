"""How to run a training, as opposed to what to learn (the recipe): device, mixed
precision, caching, how often to evaluate and checkpoint, what to print.

>>> import torch
>>> amp_dtype("auto", torch.device("cpu")) is None, amp_dtype("bf16", torch.device("cpu"))
(True, torch.bfloat16)
>>> Options(keep=-1)
Traceback (most recent call last):
  ...
synthdsl.train.errors.TrainError: error[T001]: --keep must be a whole number ≥ 0, not -1
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from synthdsl.train.errors import TrainError


@dataclass(frozen=True)
class Options:
    """How to run (not what to learn): none of these change the result, except `augment`
    and `amp`."""

    device: str = "cpu"
    amp: str = "auto"                   # auto (bf16 on CUDA), bf16, fp16, off
    cache_frozen: bool = False
    augment: int = 0                    # random shifts of up to this many pixels
    eval_every: int = 1                 # epochs between evaluations of the val data
    checkpoint_every: int = 1           # epochs between checkpoints (0: the last only)
    save_every: int = 0                 # steps between mid-epoch checkpoints (0: none)
    keep: int = 2                       # checkpoints kept
    progress: bool | None = None        # a progress bar (None: when stderr is a terminal)
    quiet: bool = False
    select_best: bool = False           # val data is held out: keep the best, stop early
    compile: bool = False               # the trainable part under torch.compile
    log: tuple[str, ...] = ()           # logs beside log.jsonl: csv, tensorboard

    def __post_init__(self) -> None:
        counts = {"--augment": self.augment, "--eval-every": self.eval_every,
                  "--checkpoint-every": self.checkpoint_every,
                  "--save-every": self.save_every, "--keep": self.keep}
        for flag, value in counts.items():
            if not isinstance(value, int) or value < 0:
                raise TrainError(f"{flag} must be a whole number ≥ 0, not {value!r}")


def amp_dtype(option: str, device: torch.device) -> torch.dtype | None:
    """The dtype mixed precision computes in (None: float32 throughout)."""
    if option == "off" or (option == "auto" and device.type != "cuda"):
        return None
    if option == "fp16":
        return torch.float16
    if option in ("bf16", "auto"):
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            return torch.float16
        return torch.bfloat16
    raise TrainError(f"--amp must be auto, bf16, fp16 or off, not '{option}'")
