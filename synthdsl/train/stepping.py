"""How a batch's loss becomes an optimizer step: gradient accumulation, clipping by norm, and
an exponential moving average of the weights.

* ``accum_steps=k``: the gradients of k batches are summed, each batch's (mean) loss
  scaled by its share of the group's samples (1/k for full batches; a last, short group
  of an epoch is weighed by its own sizes), and the optimizer steps once per group. A
  *step* is such an update: the trainer sets every batch of a group to the learning rate
  of the group's step, and counts steps in its schedule (``ceil(batches / k)`` an epoch),
  records, ``save_every`` and checkpoint names, so k batches of B train like one batch
  of kB under any schedule.
* ``clip_grad=c``: before each step the trainable gradients' total 2-norm is clipped to c
  (``torch.nn.utils.clip_grad_norm_``, after the gradient scaler unscales them).
* ``ema=d``: timm's :class:`~timm.utils.ModelEmaV3` of the model, updated after every
  optimizer step with the count of steps (``ema_warmup``: its decay warms up from 0);
  evaluated beside the model and saved as ``model-ema.safetensors``.

>>> [group_size(k, 4, 10) for k in range(10)]
[4, 4, 4, 4, 4, 4, 4, 4, 2, 2]
"""

from __future__ import annotations

from typing import Any

import torch


def group_size(k: int, accum: int, batches: int) -> int:
    """How many batches share batch `k`'s optimizer step (the last group may be short)."""
    start = (k // accum) * accum
    return min(accum, batches - start)


class Stepper:
    """The optimizer steps of one run; see the module docstring."""

    def __init__(self, model, opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                 recipe) -> None:
        self.model, self.opt, self.scaler = model, opt, scaler
        self.accum = int(recipe.accum_steps)
        self.clip = float(recipe.clip_grad)
        self.updates = 0           # optimizer steps taken
        self.ema = None
        if recipe.ema:
            from timm.utils import ModelEmaV3

            self.ema = ModelEmaV3(model, decay=recipe.ema, use_warmup=recipe.ema_warmup)
            self.ema.module.requires_grad_(False)

    def backward(self, loss: torch.Tensor, scale: float, k: int, sizes: list[int]) -> bool:
        """Accumulate batch `k`'s gradient (`sizes`: the samples of each batch of the epoch);
        step the optimizer when its group is complete. True when a step was taken."""
        size = group_size(k, self.accum, len(sizes))
        start = k - k % self.accum
        share = sizes[k] / sum(sizes[start:start + size])
        if k % self.accum == 0:
            self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss * (scale * share)).backward()
        if (k % self.accum) + 1 < size:
            return False
        if self.clip > 0:
            self.scaler.unscale_(self.opt)
            torch.nn.utils.clip_grad_norm_(
                [p for g in self.opt.param_groups for p in g["params"]], self.clip)
        self.scaler.step(self.opt)
        self.scaler.update()
        self.updates += 1
        if self.ema is not None:
            self.ema.update(self.model, step=self.updates)
        return True

    # -- checkpoints ------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        out: dict[str, Any] = {"updates": self.updates}
        if self.ema is not None:
            out["ema"] = self.ema.module.state_dict()
        return out

    def load_state(self, state: dict[str, Any]) -> None:
        self.updates = int(state.get("updates", 0))
        if self.ema is not None:
            self.ema.module.load_state_dict(state["ema"])


def compile_module(module: torch.nn.Module) -> torch.nn.Module:
    """`module` under ``torch.compile`` (``--compile``). torch compiles on the first call;
    a compiler that cannot run here (no C++ toolchain for inductor, say) is T001 then,
    naming what failed, rather than an internal error."""
    return _Compiled(module)


class _Compiled(torch.nn.Module):
    """A compiled module whose first call turns a compiler failure into T001."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.inner = module
        object.__setattr__(self, "compiled", torch.compile(module))
        self.ran = False

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self.ran:
            return self.compiled(*args, **kwargs)
        from synthdsl.train.errors import TrainError

        try:
            out = self.compiled(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - only torch's compiler errors are turned
            if not type(e).__module__.startswith(("torch._dynamo", "torch._inductor")):
                raise
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
            raise TrainError(f"--compile: torch.compile cannot compile this model here: "
                             f"{type(e).__name__}: {first}",
                             hint="train without --compile") from None
        self.ran = True
        return out
