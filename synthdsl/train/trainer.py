"""Training a compiled spec: `synth train SPEC --data ... -o RUN/`.

What is optimised is what the spec leaves trainable: the optimizer gets
``model.param_groups(lr, weight_decay)`` (per-pattern learning-rate multipliers and
weight decays from ``train ... with``), and frozen normalisation stays in eval mode.
The frozen prefix of the graph runs without autograd (:mod:`synthdsl.train.frozen`); with
``cache_frozen`` its outputs are computed once per sample and reused.

The objective is the spec's ``loss`` statements, summed (:mod:`synthdsl.train.losses`):
cross-entropy, Hinton et al.'s distillation, feature matching. Without a ``loss``
statement the single output is trained with cross-entropy, or, given a teacher
(``--teacher RUN|ARTIFACT|SPEC``), distilled from that teacher's output. Unlabelled
samples (label -1, see :meth:`ImageData.few_shot`) count only in the distillation
and feature terms.

A run folder holds ``run.json`` (what was asked: spec, data, recipe, options),
``log.jsonl`` (one line per epoch), ``checkpoints/`` (one per epoch, and every
``save_every`` steps; ``step-00000120.pt`` is the state after 120 optimizer
steps), and at the end ``model.safetensors`` (a compiled artifact:
weights, spec and provenance in one file), ``metrics.json`` and ``confusion.png``.
``resume=True`` continues from the newest checkpoint and ends exactly where an
uninterrupted run ends: each epoch's order of samples and random streams are
derived from the seed and the epoch, and a checkpoint also holds the random state
in the middle of an epoch.

Under ``torchrun --nproc_per_node=N`` each process takes a share of every batch and
DistributedDataParallel averages the gradients (gloo on CPU, NCCL on GPU); the loss
is scaled so that the update equals the one-process update on the whole batch.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from synthdsl.train.checkpoint import (CHECKPOINT_FORMAT, RUN_FORMAT, atomic_save, checkpoint_name,
                                 checkpoints_in, load_checkpoint, rng_state, seed_epoch,
                                 set_rng_state, trainable_state, write_json)
from synthdsl.train.data import DataSpec, ImageData, Preprocess, preprocess_for
from synthdsl.train.losses import (TEACHER_VALUE, Teacher, TrainError, loss_terms, objective,
                             primary_output, teacher_modules, term_names)
from synthdsl.train.recipe import Recipe
from synthdsl.train.frozen import (FrozenCache, FrozenSplit, cache_problems, check_deterministic,
                             split_frozen)

# -- what to train with ---------------------------------------------------------------------

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

    def __post_init__(self) -> None:
        counts = {"--augment": self.augment, "--eval-every": self.eval_every,
                  "--checkpoint-every": self.checkpoint_every,
                  "--save-every": self.save_every, "--keep": self.keep}
        for flag, value in counts.items():
            if not isinstance(value, int) or value < 0:
                raise TrainError(f"{flag} must be a whole number ≥ 0, not {value!r}")


# -- the optimizer and its schedule ---------------------------------------------------------------


def make_optimizer(model, recipe: Recipe) -> torch.optim.Optimizer:
    groups = model.param_groups(base_lr=recipe.lr, weight_decay=recipe.weight_decay)
    if not groups:
        raise TrainError(f"spec '{model.graph.name}' has nothing to train: every parameter "
                         "is frozen", hint="unfreeze a part with `train PATTERN`, or add an "
                         "adapter with `adapt PATTERN with lora(rank=8)`")
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=recipe.lr, momentum=recipe.momentum)
    cls = torch.optim.AdamW if recipe.optimizer == "adamw" else torch.optim.Adam
    return cls(groups, lr=recipe.lr)


def lr_factor(recipe: Recipe, step: int, steps_per_epoch: int) -> float:
    """The learning-rate multiplier at optimizer step `step` (0-based)."""
    total = recipe.epochs * steps_per_epoch
    warm = recipe.warmup_epochs * steps_per_epoch
    if step < warm:
        return (step + 1) / warm
    if recipe.schedule == "constant":
        return 1.0
    if recipe.schedule == "step":
        epoch = step // max(steps_per_epoch, 1)
        return 0.1 ** sum(epoch >= m for m in (recipe.epochs // 2, (3 * recipe.epochs) // 4)
                          if m > 0)
    progress = (step - warm) / max(total - warm, 1)
    return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def set_lr(opt: torch.optim.Optimizer, base_lrs: Sequence[float], factor: float) -> None:
    for g, lr in zip(opt.param_groups, base_lrs):
        g["lr"] = lr * factor


# -- distributed -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def init_distributed(device: str) -> tuple[Dist, torch.device]:
    """Join the process group torchrun describes (WORLD_SIZE, RANK, LOCAL_RANK)."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    dev = torch.device(device)
    if world <= 1:
        return Dist(), dev
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if dev.type == "cuda":
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return Dist(rank, world, local), dev


def _all_sum(values: list[float], d: Dist, device: torch.device) -> list[float]:
    if not d.active:
        return values
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


# -- helpers of the loop -----------------------------------------------------------------------


def random_shift(x: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Shift each image by up to `max_shift` pixels in each direction, zero-filled."""
    if max_shift <= 0:
        return x
    n, _, h, w = x.shape
    shifts = torch.randint(-max_shift, max_shift + 1, (n, 2), generator=gen)
    padded = F.pad(x, (max_shift, max_shift, max_shift, max_shift))
    out = torch.empty_like(x)
    for i in range(n):
        dy, dx = int(shifts[i, 0]) + max_shift, int(shifts[i, 1]) + max_shift
        out[i] = padded[i, :, dy:dy + h, dx:dx + w]
    return out


def _amp_dtype(option: str, device: torch.device) -> torch.dtype | None:
    if option == "off" or (option == "auto" and device.type != "cuda"):
        return None
    if option == "fp16":
        return torch.float16
    if option in ("bf16", "auto"):
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            return torch.float16
        return torch.bfloat16
    raise TrainError(f"--amp must be auto, bf16, fp16 or off, not '{option}'")


class _Suffix(nn.Module):
    """What DDP wraps: the trainable part of the graph (its modules are the model's)."""

    def __init__(self, split: FrozenSplit) -> None:
        super().__init__()
        self.graph = split.suffix

    def forward(self, inputs: tuple, boundary: tuple) -> Any:
        return self.graph(*inputs, *boundary)


def _as_dict(out: Any, names: Sequence[str]) -> dict[str, torch.Tensor]:
    return out if isinstance(out, dict) else {names[0]: out}


def _shard(batch: torch.Tensor, d: Dist) -> tuple[torch.Tensor, torch.Tensor]:
    """This process's share of a global batch and per-sample weights (a process with no
    share takes the batch's first sample with weight 0, so it still joins the
    gradient exchange)."""
    mine = batch[d.rank::d.world] if d.active else batch
    if len(mine) == 0:
        return batch[:1], torch.zeros(1)
    return mine, torch.ones(len(mine))


@dataclass
class EpochRecord:
    epoch: int
    step: int
    lr: float
    loss: float
    terms: dict[str, float]
    train_accuracy: float | None
    seconds: float
    samples_per_second: float
    val: dict[str, Any] | None = None
    cache: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class TrainResult:
    run: Path | None
    history: list[dict[str, Any]]
    metrics: Any                      # ClassificationMetrics of the final evaluation, or None
    seconds: float
    model: nn.Module
    split: str = ""

    @property
    def final(self) -> dict[str, Any]:
        return self.history[-1] if self.history else {}


# -- the trainer ---------------------------------------------------------------------------------


class Trainer:
    """Trains one compiled spec on one dataset; see the module docstring."""

    def __init__(self, model, data: ImageData, recipe: Recipe, options: Options = Options(),
                 run: str | Path | None = None, val_data: ImageData | None = None,
                 preprocess: Preprocess | None = None, teacher: Teacher | None = None,
                 record: dict[str, Any] | None = None,
                 callback: Callable[["Trainer", int, int], None] | None = None) -> None:
        self.dist, self.device = init_distributed(options.device)
        self.model = model.to(self.device)
        self.data, self.val_data = data, val_data
        self.recipe, self.options = recipe, options
        self.run = Path(run) if run is not None else None
        self.preprocess = preprocess or preprocess_for(model)
        self.teacher = teacher
        if teacher is not None:
            teacher.model.to(self.device).eval()
            for p in teacher.model.parameters():
                p.requires_grad_(False)
        self.record = dict(record or {})
        self.callback = callback
        self.terms = loss_terms(model, teacher)
        self.primary = primary_output(self.terms, model)
        self.amp = _amp_dtype(options.amp, self.device)
        if len(data) == 0:
            raise TrainError(f"{data.name} has no samples")
        if data.num_classes and not (data.targets >= 0).any():
            if not any(t.kind in ("distill", "feature") for t in self.terms):
                raise TrainError(f"{data.name} has no labelled samples to train on")

        self.teacher_modules = teacher_modules(model)
        self.train_mode()  # the split reads the modes modules train in
        self.split = split_frozen(model, cacheable=options.cache_frozen)
        self.cache: FrozenCache | None = None
        self.teacher_cache: FrozenCache | None = None
        self.opt = make_optimizer(model, recipe)
        self.base_lrs = [g["lr"] for g in self.opt.param_groups]
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp == torch.float16)
        self.suffix: nn.Module = _Suffix(self.split)
        if self.dist.active:
            self.suffix = self._wrap_ddp()
        self.epoch = 0             # completed epochs
        self.step_in_epoch = 0     # optimizer steps done in the current epoch
        self.global_step = 0
        self.history: list[dict[str, Any]] = []
        self._acc: dict[str, float] = {}    # the current epoch's running sums
        self._resume_rng: dict[str, Any] | None = None
        self.steps_per_epoch = math.ceil(len(data) / recipe.batch_size)

    # -- set-up ----------------------------------------------------------------------------

    def train_mode(self) -> None:
        """The model in training mode, except its teachers, which run as in inference."""
        self.model.train()
        for name in self.teacher_modules:
            self.model.get_submodule(name).eval()

    def _wrap_ddp(self) -> nn.Module:
        from torch.nn.parallel import DistributedDataParallel as DDP

        unused = self._unused_parameters()
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DDP(self.suffix, device_ids=ids, find_unused_parameters=bool(unused))

    def _unused_parameters(self) -> list[str]:
        """Trainable parameters the losses do not reach (DDP must be told of them)."""
        pos = torch.arange(min(2, len(self.data)))
        buffers = {k: b.clone() for k, b in self.model.named_buffers()}
        rng = rng_state()
        self.train_mode()
        values, y, w = self._forward(pos, pos, cached=False)
        loss, _ = objective(self.terms, values, y, w, float(len(pos)),
                            float(max(int((y >= 0).sum()), 1)), self.recipe.label_smoothing)
        names = dict(self.model.named_trainable_parameters())
        grads = torch.autograd.grad(loss, list(names.values()), allow_unused=True)
        with torch.no_grad():  # the probe leaves no trace: statistics and random streams
            for k, b in self.model.named_buffers():
                b.copy_(buffers[k])
        set_rng_state(rng)
        return [n for (n, _), g in zip(names.items(), grads) if g is None]

    def describe(self) -> list[str]:
        t = self.model.parameter_totals()
        lines = [
            f"model   {self.model.graph.name}: {t['params']:,} parameters, "
            f"{t['trainable']:,} trainable, {t['frozen']:,} frozen",
            f"data    {self.data.describe()}",
        ]
        if self.val_data is not None:
            lines.append(f"val     {self.val_data.describe()}")
        lines += [
            f"inputs  {self.preprocess.describe()}",
            "loss    " + " + ".join(t.describe() for t in self.terms),
            "recipe  " + ", ".join(f"{k}={v}" for k, v in asdict(self.recipe).items()),
            f"frozen  {self.split.describe()}",
        ]
        if self.teacher is not None:
            lines.append(f"teacher {self.teacher.description}")
        if self.dist.active:
            lines.append(f"ddp     {self.dist.world} processes "
                         f"({'nccl' if self.device.type == 'cuda' else 'gloo'})")
        if self.amp is not None:
            lines.append(f"amp     {str(self.amp).removeprefix('torch.')}")
        return lines

    def _log(self, text: str) -> None:
        if self.dist.main and not self.options.quiet:
            print(text, flush=True)

    # -- batches -----------------------------------------------------------------------------

    def epoch_batches(self, epoch: int) -> list[torch.Tensor]:
        """The epoch's global batches: positions in a permutation fixed by (seed, epoch)."""
        g = torch.Generator().manual_seed(self.recipe.seed * 1_000_003 + epoch)
        perm = torch.randperm(len(self.data), generator=g)
        b = self.recipe.batch_size
        return [perm[i:i + b] for i in range(0, len(perm), b)]

    def _images(self, pos: torch.Tensor, epoch: int, step: int) -> torch.Tensor:
        x = self.data.images(pos)
        if self.options.augment:
            g = torch.Generator().manual_seed(
                (self.recipe.seed * 1_000_003 + epoch * 10_007 + step) % (2 ** 63))
            full = random_shift(x, self.options.augment, g)
            x = full
        return x.to(self.device, non_blocking=True)

    def _forward(self, pos: torch.Tensor, global_pos: torch.Tensor, cached: bool,
                 epoch: int = 0, step: int = 0
                 ) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        """The values the losses read, for the samples at `pos` (this process's share)."""
        keys = pos  # caches are per run and per dataset: a sample's position is its key
        y = self.data.targets[pos].to(self.device)
        w = torch.ones(len(pos), device=self.device)
        boundary = self.cache.get(keys) if (cached and self.cache is not None) else None
        teacher_out = None
        if self.teacher is not None and cached and self.teacher_cache is not None:
            got = self.teacher_cache.get(keys)
            teacher_out = got[0] if got is not None else None
        need_images = (boundary is None and not self.split.empty) or (
            self.teacher is not None and teacher_out is None) or self._suffix_reads_inputs
        raw = self._images(pos, epoch, step) if need_images else None
        inputs = (self.preprocess(raw),) if raw is not None else (None,)
        ctx = torch.autocast(self.device.type, dtype=self.amp) if self.amp else \
            contextlib.nullcontext()
        with ctx:
            if boundary is None and not self.split.empty:
                boundary = self.split.run_prefix(inputs)
                if cached and self.cache is not None:
                    self.cache.put(keys, boundary)
            out = self.suffix(inputs, tuple(boundary or ()))
        values = _as_dict(out, self.model.output_names)
        if self.teacher is not None:
            if teacher_out is None:
                teacher_out = self.teacher(raw)
                if cached and self.teacher_cache is not None:
                    self.teacher_cache.put(keys, (teacher_out,))
            values[TEACHER_VALUE] = teacher_out
        return values, y, w

    @property
    def _suffix_reads_inputs(self) -> bool:
        if self.split.empty:
            return True
        return any(n.op == "placeholder" and n.users and not n.name.startswith("frozen_")
                   for n in self.split.suffix.graph.nodes)

    def _check_classes(self) -> None:
        """The trained output gives one score per class of the data (checked on two
        images in eval mode: no statistics move, no random numbers are drawn)."""
        if not any(t.kind in ("ce", "distill") for t in self.terms):
            return
        pos = torch.arange(min(2, len(self.data)))
        self.model.eval()
        try:
            with torch.no_grad():
                values, _, _ = self._forward(pos, pos, cached=False)
        finally:
            self.train_mode()
        scores = values[self.primary]
        if scores.dim() != 2 or scores.shape[1] != self.data.num_classes:
            raise TrainError(f"'{self.primary}' gives {list(scores.shape[1:])} per image, but "
                             f"{self.data.name} has {self.data.num_classes} classes",
                             hint="give the head as many outputs as there are classes, or "
                             "choose classes with --classes")

    # -- caching -------------------------------------------------------------------------------

    def _setup_cache(self) -> None:
        if not self.options.cache_frozen:
            return
        self.train_mode()
        problems = cache_problems(self.split, augment=bool(self.options.augment))
        if not problems:
            pos = torch.arange(min(4, len(self.data)))
            x = self.preprocess(self.data.images(pos).to(self.device))
            problem = check_deterministic(self.split, (x,))
            problems = [problem] if problem else []
        if problems and self.split.empty and self.teacher is not None:
            problems = []  # nothing to cache but the teacher: that is fine
        elif problems:
            raise TrainError("--cache-frozen: the frozen part's outputs can change between "
                             "epochs, so they cannot be reused:\n  - " + "\n  - ".join(problems),
                             hint="train without --cache-frozen (the frozen prefix still runs "
                             "without autograd), or freeze the normalisation layers and drop "
                             "dropout/augmentation in the frozen part")
        size = len(self.data)
        if not self.split.empty:
            self.cache = FrozenCache(size, self.device)
        if self.teacher is not None:
            self.teacher_cache = FrozenCache(size, self.device)

    # -- checkpoints ----------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "epoch": self.epoch, "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step,
            "model": trainable_state(self.model),
            "optimizer": self.opt.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng_state(),
            "history": json.dumps(self.history),
            "recipe": json.dumps(asdict(self.recipe)),
            "epoch_sums": json.dumps(self._global_acc() if self.step_in_epoch else {}),
        }

    def load_state(self, ck: dict[str, Any]) -> None:
        if json.loads(ck["recipe"]) != asdict(self.recipe):
            raise TrainError("the checkpoint was written with another recipe",
                             hint="resume with the options the run started with")
        own = dict(self.model.named_parameters()) | dict(self.model.named_buffers())
        missing = [k for k in ck["model"] if k not in own]
        if missing:
            raise TrainError(f"the checkpoint has tensors the model lacks: {missing[:3]}")
        with torch.no_grad():
            for k, v in ck["model"].items():
                own[k].copy_(v.to(own[k].device))
        self.opt.load_state_dict(ck["optimizer"])
        self.scaler.load_state_dict(ck["scaler"])
        self.epoch, self.step_in_epoch = ck["epoch"], ck["step_in_epoch"]
        self.global_step = ck["global_step"]
        self.history = json.loads(ck["history"])
        self._acc = json.loads(ck.get("epoch_sums", "{}"))
        self._resume_rng = ck["rng"] if self.step_in_epoch else None

    def save(self) -> Path | None:
        if self.run is None:
            return None
        state = self.state()  # every process: the epoch's sums are gathered
        if not self.dist.main:
            return None
        path = self.run / "checkpoints" / checkpoint_name(self.global_step)
        atomic_save(state, path)
        for old in checkpoints_in(self.run)[:-max(self.options.keep, 1)]:
            old.unlink(missing_ok=True)
        return path

    def resume(self) -> bool:
        """Continue from the newest checkpoint in the run folder; False if there is none."""
        found = checkpoints_in(self.run) if self.run is not None else []
        if not found:
            return False
        self.load_state(load_checkpoint(found[-1]))
        if self.run is not None and self.dist.main:  # the log says what the checkpoint says
            from synthdsl.build.artifact import atomic_write_text

            atomic_write_text(self.run / "log.jsonl",
                              "".join(json.dumps(h) + "\n" for h in self.history))
        where = (f"epoch {self.epoch + 1}, step {self.step_in_epoch}" if self.step_in_epoch
                 else f"the end of epoch {self.epoch}")
        self._log(f"resumed from {found[-1].name} ({where})")
        return True

    # -- the loop -------------------------------------------------------------------------------

    def fit(self) -> list[dict[str, Any]]:
        self._check_classes()
        self._setup_cache()
        while self.epoch < self.recipe.epochs:
            record = self._train_epoch(self.epoch)
            self.epoch += 1
            self.step_in_epoch = 0
            if self.val_data is not None and (self.epoch % max(self.options.eval_every, 1) == 0
                                              or self.epoch == self.recipe.epochs):
                record.val = self.validate()
            self.history.append(record.to_dict())
            if self.run is not None and self.dist.main:
                with open(self.run / "log.jsonl", "a", encoding="utf-8") as f:
                    f.write(json.dumps(record.to_dict()) + "\n")
            self._log(self._epoch_line(record))
            every = self.options.checkpoint_every
            if self.epoch == self.recipe.epochs or (every and self.epoch % every == 0):
                self.save()
        return self.history

    def _epoch_line(self, r: EpochRecord) -> str:
        parts = [f"epoch {r.epoch}/{self.recipe.epochs}", f"loss {r.loss:.4f}"]
        if r.train_accuracy is not None:
            parts.append(f"train acc {r.train_accuracy:.3f}")
        if r.val:
            parts.append(f"val acc {r.val['accuracy']:.3f}")
            parts.append(f"macro F1 {r.val['macro_f1']:.3f}")
        parts.append(f"{r.seconds:.1f}s ({r.samples_per_second:,.0f} img/s)")
        return "  ".join(parts)

    def _acc_keys(self) -> list[str]:
        return ["loss", "correct", "labelled", "samples"] + [
            f"term:{n}" for n in term_names(self.terms)]

    def _global_acc(self) -> dict[str, float]:
        """The epoch's running sums over every process (a collective under DDP)."""
        keys = self._acc_keys()
        return dict(zip(keys, _all_sum([self._acc.get(k, 0.0) for k in keys], self.dist,
                                       self.device)))

    def _train_epoch(self, epoch: int) -> EpochRecord:
        batches = self.epoch_batches(epoch)
        start = self.step_in_epoch
        if start and self._resume_rng is not None:
            set_rng_state(self._resume_rng)
            self._resume_rng = None
        else:
            seed_epoch(self.recipe.seed, epoch, self.dist.rank)
        if start == 0 or not self.dist.main:
            self._acc = {}   # a resumed epoch's sums so far came with the checkpoint (rank 0)
        acc = self._acc
        self.train_mode()
        cached = self.cache is not None or self.teacher_cache is not None
        t0 = time.perf_counter()
        seen = 0.0
        bar = self._progress(len(batches), start, epoch)
        for k in range(start, len(batches)):
            batch = batches[k]
            pos, w = _shard(batch, self.dist)
            n_all = float(len(batch))
            n_lab = float((self.data.targets[batch] >= 0).sum())
            factor = lr_factor(self.recipe, self.global_step, self.steps_per_epoch)
            set_lr(self.opt, self.base_lrs, factor)
            values, y, _ = self._forward(pos, batch, cached, epoch, k)
            w = w.to(self.device)
            loss, parts = objective(self.terms, values, y, w, n_all, n_lab,
                                    self.recipe.label_smoothing)
            scale = float(self.dist.world)  # DDP averages gradients over processes
            self.opt.zero_grad(set_to_none=True)
            self.scaler.scale(loss * scale).backward()
            self.scaler.step(self.opt)
            self.scaler.update()
            self.global_step += 1
            self.step_in_epoch = k + 1
            with torch.no_grad():  # this process's share of each sum
                pred = values[self.primary].argmax(-1)
                lab = (y >= 0) & (w > 0)
                sums = {"loss": float(loss) * n_all,
                        "correct": float(((pred == y) & lab).sum()),
                        "labelled": float(lab.sum()), "samples": float(w.sum())}
                sums.update({f"term:{n}": float(v) * n_all for n, v in parts.items()})
                for key, v in sums.items():
                    acc[key] = acc.get(key, 0.0) + v
                seen += sums["samples"]
            if bar is not None:
                bar.update(1)
                elapsed = time.perf_counter() - t0
                bar.set_postfix(loss=f"{float(loss) * self.dist.world:.4f}",
                                img_s=f"{seen * self.dist.world / max(elapsed, 1e-9):,.0f}")
            if self.callback is not None:
                self.callback(self, epoch, k)
            if (self.options.save_every and self.global_step % self.options.save_every == 0
                    and self.step_in_epoch < len(batches)):
                self.save()
        if bar is not None:
            bar.close()
        seconds = time.perf_counter() - t0
        totals = self._global_acc()
        n = max(totals["samples"], 1.0)
        cache_info = None
        if self.cache is not None or self.teacher_cache is not None:
            c = self.cache or self.teacher_cache
            cache_info = {"hits": c.hits, "misses": c.misses, "complete": c.complete,
                          "megabytes": round(sum(x.nbytes for x in (self.cache,
                                                 self.teacher_cache) if x) / 2 ** 20, 3)}
            for x in (self.cache, self.teacher_cache):
                if x is not None:
                    x.hits = x.misses = 0
        done = sum(len(b) for b in batches[start:])
        return EpochRecord(
            epoch=epoch + 1, step=self.global_step,
            lr=self.recipe.lr * lr_factor(self.recipe, self.global_step - 1,
                                          self.steps_per_epoch),  # before lr_mult
            loss=totals["loss"] / n,
            terms={k[5:]: v / n for k, v in totals.items() if k.startswith("term:")},
            train_accuracy=(totals["correct"] / totals["labelled"]) if totals["labelled"]
            else None,
            seconds=round(seconds, 4),
            samples_per_second=round(done / max(seconds, 1e-9), 2),
            cache=cache_info)

    def _progress(self, total: int, start: int, epoch: int):
        show = self.options.progress
        if show is None:
            show = sys.stderr.isatty()
        if not show or self.options.quiet or not self.dist.main:
            return None
        from tqdm import tqdm

        return tqdm(total=total, initial=start, desc=f"epoch {epoch + 1}/{self.recipe.epochs}",
                    unit="batch", leave=False, dynamic_ncols=True, file=sys.stderr)

    # -- evaluation -------------------------------------------------------------------------------

    def validate(self, data: ImageData | None = None):
        """Accuracy and macro F1 of the primary output on `data` (the val data)."""
        from synthdsl.train.evaluate import predict_values
        from synthdsl.train.metrics import classification_metrics

        data = data if data is not None else self.val_data
        values = predict_values(self.model, data, self.preprocess, self.recipe.batch_size,
                                self.device, names=[self.primary], dist=self.dist,
                                amp=self.amp)
        pred = values[self.primary].argmax(-1)
        labelled = data.targets >= 0
        m = classification_metrics(data.targets[labelled], pred[labelled], data.classes)
        return {"accuracy": m.accuracy, "macro_f1": m.macro_f1, "n": m.n}

    def final_metrics(self, data: ImageData):
        from synthdsl.train.evaluate import predict_values
        from synthdsl.train.metrics import classification_metrics

        values = predict_values(self.model, data, self.preprocess, self.recipe.batch_size,
                                self.device, names=[self.primary], dist=self.dist,
                                amp=self.amp)
        pred = values[self.primary].argmax(-1)
        labelled = data.targets >= 0
        return classification_metrics(data.targets[labelled], pred[labelled], data.classes)


# -- the whole command ----------------------------------------------------------------------------


def _run_record(model, spec_path: str | None, data: DataSpec | None, recipe: Recipe,
                options: Options, preprocess: Preprocess, teacher: dict | None,
                extra: dict | None) -> dict[str, Any]:
    import hashlib

    from synthdsl import __version__

    text = model.graph.graph.get("text", "")
    return {
        "format": RUN_FORMAT,
        "spec": str(Path(spec_path).resolve()) if spec_path else None,
        "spec_name": model.graph.name,
        "spec_sha256": hashlib.sha256(text.encode()).hexdigest(),
        "data": data.to_dict() if data else None,
        "recipe": asdict(recipe),
        "options": {k: v for k, v in asdict(options).items()
                    if k in ("amp", "cache_frozen", "augment", "device")},
        "preprocess": preprocess.to_dict(),
        "teacher": teacher,
        "synthdsl": __version__, "torch": torch.__version__,
        **(extra or {}),
    }


def train(model, data: ImageData, run: str | Path | None = None, *,
          recipe: Recipe | None = None, options: Options = Options(),
          val_data: ImageData | None = None, test_data: ImageData | None = None,
          preprocess: Preprocess | None = None, teacher: Teacher | None = None,
          resume: bool = False, spec_path: str | None = None, data_spec: DataSpec | None = None,
          teacher_record: dict | None = None, extra_record: dict | None = None,
          callback=None) -> TrainResult:
    """Train `model` (a compiled spec) on `data`; write the run folder `run` if given.

    The recipe defaults to the spec's own ``recipe`` statement over :class:`Recipe`'s
    defaults. With `test_data` the final model is evaluated there (``metrics.json``)."""
    recipe = recipe or Recipe.resolve(model.graph.graph.get("recipe"))
    t0 = time.perf_counter()
    run_path = Path(run) if run is not None else None
    preprocess = preprocess or preprocess_for(model)
    record = _run_record(model, spec_path, data_spec, recipe, options, preprocess,
                         teacher_record, extra_record)
    if run_path is not None:
        existing = run_path / "run.json"
        if existing.exists() and not resume:
            raise TrainError(f"'{run_path}' already holds a run",
                             hint="pass --resume to continue it, or choose another folder")
        if resume and existing.exists():
            before = json.loads(existing.read_text("utf-8"))
            for key in ("spec_sha256", "data", "recipe", "preprocess"):
                if before.get(key) != record.get(key):
                    raise TrainError(f"cannot resume: the {key.replace('_', ' ')} differs from "
                                     f"the one the run in '{run_path}' started with",
                                     hint="resume with the same spec, data and options")
    trainer = Trainer(model, data, recipe, options, run_path, val_data, preprocess, teacher,
                      record, callback)
    if run_path is not None and trainer.dist.main:
        run_path.mkdir(parents=True, exist_ok=True)
        if not (resume and (run_path / "run.json").exists()):
            write_json(run_path / "run.json", record)
            (run_path / "log.jsonl").unlink(missing_ok=True)
    for line in trainer.describe():
        trainer._log(line)
    resumed = trainer.resume() if resume else False
    if resume and not resumed:
        trainer._log("no checkpoint to resume from: starting at epoch 1")
    trainer.fit()
    metrics = trainer.final_metrics(test_data) if test_data is not None else None
    if run_path is not None and trainer.dist.main:
        _finish_run(trainer, run_path, metrics, test_data)
    if trainer.dist.active:
        import torch.distributed as dist

        dist.barrier()
    return TrainResult(run_path, trainer.history, metrics, time.perf_counter() - t0, model,
                       test_data.name if test_data is not None else "")


def _finish_run(trainer: Trainer, run: Path, metrics, test_data: ImageData | None) -> None:
    from synthdsl.build.artifact import save_compiled

    save_compiled(trainer.model, run / "model.safetensors")
    if metrics is not None:
        write_json(run / "metrics.json", {"split": test_data.name, "output": trainer.primary,
                                           **metrics.to_dict()})
        metrics.plot(run / "confusion.png", f"{trainer.model.graph.name} on {test_data.name}")
        trainer._log(f"test    {test_data.name}: accuracy {metrics.accuracy:.4f}, macro F1 "
                     f"{metrics.macro_f1:.4f} (metrics.json, confusion.png)")
    trainer._log(f"wrote   {run}/model.safetensors")


# -- `synth train` ------------------------------------------------------------------------------


def _floats(text: str | None) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError as e:
        raise TrainError(f"expected numbers separated by commas, found '{text}'") from e


def load_teacher(target: str, temperature: float, alpha: float, device: str,
                 output: str | None = None) -> tuple[Teacher, dict[str, Any]]:
    from synthdsl.train.evaluate import load_model

    loaded = load_model(target, device=device)
    if output is not None and output not in loaded.model.output_names:
        raise TrainError(f"teacher '{target}' has no output '{output}'",
                         hint="its outputs: " + ", ".join(loaded.model.output_names))
    teacher = Teacher(loaded.model, loaded.preprocess, temperature, alpha, output,
                      loaded.description)
    return teacher, {"target": str(Path(target).resolve()), "temperature": temperature,
                     "alpha": alpha, "output": output, "description": loaded.description}


def main_train(args) -> int:
    """`synth train`: see `synth train --help`."""
    from synthdsl.train.data import parse_classes
    from synthdsl.pipeline import check_spec, compile_graph

    graph = check_spec(Path(args.file))
    overrides = {k: getattr(args, k, None) for k in
                 ("epochs", "lr", "batch_size", "optimizer", "schedule", "weight_decay",
                  "momentum", "warmup_epochs", "label_smoothing", "seed")}
    recipe = Recipe.resolve(graph.graph.get("recipe"), overrides)
    model = compile_graph(graph, seed=recipe.seed)
    options = Options(device=args.device, amp=args.amp, cache_frozen=args.cache_frozen,
                      augment=args.augment, eval_every=args.eval_every,
                      checkpoint_every=args.checkpoint_every, save_every=args.save_every,
                      keep=args.keep,
                      progress=False if args.no_progress else None, quiet=args.quiet)
    classes = parse_classes(args.classes)
    data_spec = DataSpec(args.data, tuple(classes) if classes else None, args.shots,
                         args.shots_seed if args.shots_seed is not None else recipe.seed,
                         args.unlabelled)
    normalize = False if args.no_normalize else None
    preprocess = preprocess_for(model, _floats(args.mean), _floats(args.std), normalize)
    size, channels = preprocess.size, preprocess.channels or 3
    data = data_spec.load("train", size, channels)
    test = None if args.eval_split == "none" else DataSpec(
        args.data, data_spec.classes).load(args.eval_split, size, channels)
    teacher, teacher_record = (None, None)
    if args.teacher:
        teacher, teacher_record = load_teacher(args.teacher, args.temperature, args.alpha,
                                               args.device, args.teacher_output)
    result = train(model, data, args.output, recipe=recipe, options=options,
                   val_data=test, test_data=test, preprocess=preprocess, teacher=teacher,
                   resume=args.resume, spec_path=args.file, data_spec=data_spec,
                   teacher_record=teacher_record)
    if result.run is not None and args.merge_adapters:
        from synthdsl.build.artifact import save_compiled

        merged = model.merge_adapters()
        if merged and int(os.environ.get("RANK", "0")) == 0:
            save_compiled(model, result.run / "model-merged.safetensors")
            if not args.quiet:
                print(f"merged  {len(merged)} adapters into their layers: "
                      f"{result.run}/model-merged.safetensors")
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    return 0


def add_arguments(p) -> None:
    """The options of `synth train` (for the CLI's parser)."""
    p.add_argument("file", help="the .synth spec to train")
    p.add_argument("--data", required=True, help="digits, mnist5k, a folder of class folders, "
                   "or an .npz of images and labels")
    p.add_argument("-o", "--output", required=True, metavar="RUN",
                   help="the run folder: run.json, log.jsonl, checkpoints/, model.safetensors")
    p.add_argument("--classes", help="keep these classes, renumbered from 0: '5-9', '0,2,4', "
                   "or class names")
    p.add_argument("--shots", type=int, help="labelled samples per class (a seeded subset)")
    p.add_argument("--shots-seed", type=int, help="seed of that subset (default: --seed)")
    p.add_argument("--unlabelled", action="store_true", help="with --shots, keep the other "
                   "training samples without labels (they count in distillation)")
    p.add_argument("--eval-split", default="test", choices=("test", "train", "none"),
                   help="evaluated after each epoch and at the end (default test)")
    r = p.add_argument_group("recipe (overrides the spec's `recipe` statement)")
    r.add_argument("--epochs", type=int)
    r.add_argument("--lr", type=float)
    r.add_argument("--batch-size", type=int)
    r.add_argument("--optimizer", choices=("adamw", "adam", "sgd"))
    r.add_argument("--schedule", choices=("cosine", "constant", "step"))
    r.add_argument("--weight-decay", type=float)
    r.add_argument("--momentum", type=float)
    r.add_argument("--warmup-epochs", type=int)
    r.add_argument("--label-smoothing", type=float)
    r.add_argument("--seed", type=int)
    t = p.add_argument_group("distillation from a model outside the spec")
    t.add_argument("--teacher", metavar="RUN|ARTIFACT|SPEC",
                   help="distil the spec's output from this model's output")
    t.add_argument("--teacher-output", help="the teacher's output to use (default: its first)")
    t.add_argument("--temperature", type=float, default=4.0)
    t.add_argument("--alpha", type=float, default=0.7,
                   help="weight of the soft targets; 1 - alpha goes to the labels")
    x = p.add_argument_group("inputs")
    x.add_argument("--mean", help="normalisation mean, e.g. 0.5,0.5,0.5 (default: the first "
                   "timm source's own config)")
    x.add_argument("--std", help="normalisation std")
    x.add_argument("--no-normalize", action="store_true", help="feed values in [0, 1]")
    x.add_argument("--augment", type=int, default=0, metavar="PIXELS",
                   help="random shifts of up to this many pixels")
    o = p.add_argument_group("running")
    o.add_argument("--resume", action="store_true", help="continue the run in RUN")
    o.add_argument("--cache-frozen", action="store_true", help="compute the frozen prefix's "
                   "outputs once and reuse them in later epochs")
    o.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    o.add_argument("--amp", default="auto", choices=("auto", "bf16", "fp16", "off"),
                   help="mixed precision (auto: bf16 on CUDA, off on CPU)")
    o.add_argument("--eval-every", type=int, default=1, metavar="EPOCHS")
    o.add_argument("--checkpoint-every", type=int, default=1, metavar="EPOCHS",
                   help="checkpoint every EPOCHS epochs (default 1; 0: only the last)")
    o.add_argument("--save-every", type=int, default=0, metavar="STEPS",
                   help="also checkpoint every STEPS steps inside an epoch")
    o.add_argument("--keep", type=int, default=2, help="checkpoints kept (default 2)")
    o.add_argument("--merge-adapters", action="store_true", help="also write "
                   "model-merged.safetensors with LoRA adapters folded into the weights")
    o.add_argument("--no-progress", action="store_true", help="no progress bar")
    o.add_argument("-q", "--quiet", action="store_true")
