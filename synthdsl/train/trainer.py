"""The trainer: one compiled spec, one dataset, one recipe (see :func:`synthdsl.train.run.train`
for the run folder around it).

What is optimised is what the spec leaves trainable: the optimizer gets
``model.param_groups(lr, weight_decay)`` (:mod:`synthdsl.train.optim`), and frozen
normalisation stays in eval mode. The frozen prefix of the graph runs without autograd
(:mod:`synthdsl.train.frozen`); with ``cache_frozen`` its outputs are computed once per
sample and reused.

The objective is the spec's ``loss`` statements, summed (:mod:`synthdsl.train.losses`):
cross-entropy, Hinton et al.'s distillation, feature matching, contrastive. Without a
``loss`` statement the single output is trained with cross-entropy, or, given a teacher,
distilled from it. Unlabelled samples (label -1) count only in the other terms. A batch
is images, or named tensors for a spec of other inputs (:mod:`synthdsl.train.feed`).

A step is an optimizer update (:mod:`synthdsl.train.stepping`): the schedule, the records,
``save_every`` and the checkpoints count them; random draws are seeded per batch.

Resuming ends exactly where an uninterrupted run ends: each epoch's order of samples and
random streams are derived from the seed and the epoch, and a checkpoint also holds the
random state in the middle of an epoch.

Under ``torchrun --nproc_per_node=N`` each process takes a share of every batch and
DistributedDataParallel averages the gradients (:mod:`synthdsl.train.distributed`); the
loss is scaled so that the update equals the one-process update on the whole batch.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from synthdsl.build.artifact import save_compiled
from synthdsl.files import write_text
from synthdsl.train.checkpoint import (CHECKPOINT_FORMAT, atomic_save, checkpoint_name,
                                       checkpoints_in, load_checkpoint, rng_state, seed_epoch,
                                       set_rng_state, trainable_state)
from synthdsl.train.distributed import all_sum, init_distributed, shard
from synthdsl.train.errors import TrainError, diverged
from synthdsl.train.feed import Feed, feed_for, shift_images, to_device
from synthdsl.train.frozen import FrozenCache, SuffixModule, frozen_caches, split_frozen
from synthdsl.train.images import ImageData
from synthdsl.train.losses import (SOFT_TARGETS, TEACHER_VALUE, Teacher, loss_terms, objective,
                                   primary_output, teacher_modules, term_names)
from synthdsl.train.metrics import ClassificationMetrics, classification_metrics
from synthdsl.train.optim import lr_factor, make_optimizer, set_lr
from synthdsl.train.options import Options, amp_dtype
from synthdsl.train.predict import predict_values
from synthdsl.train.preprocess import Preprocess
from synthdsl.train.recipe import Recipe
from synthdsl.train.augment import batch_augmenters
from synthdsl.train.records import EpochRecord, describe_trainer, epoch_record, progress_bar
from synthdsl.train.selection import Selection
from synthdsl.train.stepping import Stepper, compile_module
from synthdsl.train.retrieval import RetrievalMetrics, contrastive_pairs, retrieval_of
from synthdsl.train.runlog import RunLog, log_kinds


def _as_dict(out: Any, names: Sequence[str]) -> dict[str, torch.Tensor]:
    return out if isinstance(out, dict) else {names[0]: out}


class Trainer:
    """Trains one compiled spec on one dataset; see the module docstring."""

    def __init__(self, model, data: ImageData, recipe: Recipe, options: Options = Options(),
                 run: str | Path | None = None, val_data: ImageData | None = None,
                 preprocess: Preprocess | Feed | None = None, teacher: Teacher | None = None,
                 record: dict[str, Any] | None = None,
                 callback: Callable[["Trainer", int, int], None] | None = None) -> None:
        self.dist, self.device = init_distributed(options.device)
        self.model = model.to(self.device)
        self.data, self.val_data = data, val_data
        self.recipe, self.options = recipe, options
        self.run = Path(run) if run is not None else None
        self.preprocess = preprocess or feed_for(model)
        self.teacher = teacher
        if teacher is not None:
            teacher.model.to(self.device).eval()
            for p in teacher.model.parameters():
                p.requires_grad_(False)
        self.record = dict(record or {})
        self.callback = callback
        self.terms = loss_terms(model, teacher)
        self.primary = primary_output(self.terms, model)
        self.classifies = any(t.kind in ("ce", "distill") for t in self.terms)
        pairs = contrastive_pairs(model.graph)  # scored by retrieval where nothing classifies
        self.retrieval = pairs[0] if pairs and not self.classifies else None
        self.amp = amp_dtype(options.amp, self.device)
        if len(data) == 0:
            raise TrainError(f"{data.name} has no samples")
        if not (data.targets >= 0).any() and not any(
                t.kind in ("distill", "feature", "contrastive") for t in self.terms):
            raise TrainError(f"{data.name} has no labelled samples to train on")

        self.teacher_modules = teacher_modules(model)
        first = data.images(torch.arange(1))  # what augmenting needs to know of the data
        self.mixer, self.augmenter = batch_augmenters(
            recipe, data, None if isinstance(first, dict) else tuple(first.shape[1:]))
        self.train_mode()  # the split reads the modes modules train in
        self.split = split_frozen(model, cacheable=options.cache_frozen)
        self.cache: FrozenCache | None = None
        self.teacher_cache: FrozenCache | None = None
        self.opt = make_optimizer(model, recipe)
        self.base_lrs = [g["lr"] for g in self.opt.param_groups]
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp == torch.float16)
        self.suffix: nn.Module = SuffixModule(self.split)
        if self.dist.active:
            self.suffix = self._wrap_ddp()
        if options.compile:
            self.suffix = compile_module(self.suffix)
        self.stepper = Stepper(model, self.opt, self.scaler, recipe)
        self.selection = Selection(recipe.patience) if options.select_best else None
        main = self.run is not None and self.dist.main
        self.logs = RunLog(self.run, log_kinds(options.log)) if main else None
        self.epoch = 0             # completed epochs
        self.step_in_epoch = 0     # batches done in the current epoch
        self.history: list[dict[str, Any]] = []
        self._acc: dict[str, float] = {}    # the current epoch's running sums
        self._resume_rng: dict[str, Any] | None = None
        # the schedule's length: optimizer steps of a group of batches (a short one counts)
        self.steps_per_epoch = math.ceil(math.ceil(len(data) / recipe.batch_size)
                                         / self.stepper.accum)

    @property
    def global_step(self) -> int:
        """Optimizer steps taken (a group of ``accum_steps`` batches is one)."""
        return self.stepper.updates

    # -- set-up ----------------------------------------------------------------------------

    def train_mode(self) -> None:
        """The model in training mode, except its teachers, which run as in inference."""
        self.model.train()
        for name in self.teacher_modules:
            self.model.get_submodule(name).eval()

    def _wrap_ddp(self) -> nn.Module:
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
        return describe_trainer(self)

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

    def _images(self, pos: torch.Tensor, epoch: int, step: int) -> Any:
        x = self.data.images(pos)  # a tensor of images, or named tensors
        if self.options.augment:
            g = torch.Generator().manual_seed(
                (self.recipe.seed * 1_000_003 + epoch * 10_007 + step) % (2 ** 63))
            x = shift_images(x, self.options.augment, g)
        if self.augmenter is not None and self.model.training:
            x = self.augmenter(x, self._seed(epoch, step))
        return to_device(x, self.device)

    def _seed(self, epoch: int, step: int) -> int:
        return self.recipe.seed * 1_000_003 + epoch * 10_007 + step

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
        soft = None
        if self.mixer is not None and raw is not None and self.model.training:
            raw, soft = self.mixer(raw, y, self._seed(epoch, step))
        inputs = self.preprocess.inputs(raw) if raw is not None else \
            (None,) * len(self.model.graph.inputs)
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
        if soft is not None:
            values[SOFT_TARGETS] = soft
        return values, y, w

    @property
    def augments(self) -> bool:
        """Whether the training images change from epoch to epoch."""
        return bool(self.options.augment or self.mixer or self.augmenter)

    @property
    def _suffix_reads_inputs(self) -> bool:
        if self.split.empty:
            return True
        return any(n.op == "placeholder" and n.users and not n.name.startswith("frozen_")
                   for n in self.split.suffix.graph.nodes)

    def _check_classes(self) -> None:
        """The trained output gives one score per class of the data (checked on two
        images in eval mode: no statistics move, no random numbers are drawn)."""
        if not self.classifies:
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
        if self.options.cache_frozen:
            self.cache, self.teacher_cache = frozen_caches(self)

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
            "stepper": self.stepper.state(),
            "selection": json.dumps(self.selection.state() if self.selection else {}),
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
        self.history = json.loads(ck["history"])
        self._acc = json.loads(ck.get("epoch_sums", "{}"))
        self.stepper.load_state(ck.get("stepper") or {"updates": ck["global_step"]})
        if self.selection is not None:
            self.selection.load_state(json.loads(ck.get("selection", "{}")))
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
        state = load_checkpoint(found[-1])
        try:  # what the file holds is the file's: a missing key or a shape is its fault
            self.load_state(state)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError, RuntimeError) as e:
            raise TrainError(f"cannot resume from '{found[-1]}': it does not hold a checkpoint "
                             f"of this run ({type(e).__name__}: {str(e)[:200]})",
                             hint="delete it to resume from the one before, or start a new "
                             "run folder") from None
        if self.run is not None and self.dist.main:  # the log says what the checkpoint says
            write_text(self.run / "log.jsonl",
                       "".join(json.dumps(h) + "\n" for h in self.history))
        where = (f"epoch {self.epoch + 1}, batch {self.step_in_epoch}" if self.step_in_epoch
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
            stop = False
            if self.val_data is not None and (self.epoch % max(self.options.eval_every, 1) == 0
                                              or self.epoch == self.recipe.epochs):
                record.val = self.validate()
                stop = self._select(record)
            self.history.append(record.to_dict())
            if self.logs is not None:
                self.logs.epoch(record.to_dict(), self.history)
            self._log(record.line(self.recipe.epochs))
            every = self.options.checkpoint_every
            if stop or self.epoch == self.recipe.epochs or (every and self.epoch % every == 0):
                self.save()
            if stop:
                self._log(f"stopped: {self.selection.since} validations without a better "
                          f"one (best: epoch {self.selection.best_epoch})")
                break
        return self.history

    def _select(self, record: EpochRecord) -> bool:
        """The EMA validated too; the best epoch kept; True when patience has run out."""
        if self.stepper.ema is not None:
            record.val_ema = self.validate(model=self.stepper.ema.module)
        if self.selection is None:
            return False
        verdict = self.selection.observe(self.epoch, record.val_ema or record.val)
        if verdict == "better" and self.run is not None and self.dist.main:
            save_compiled(self.evaluated_model, self.run / "model-best.safetensors")
        return verdict == "stop"

    @property
    def evaluated_model(self):
        """The model whose weights are chosen and reported: the EMA's, when there is one."""
        return self.stepper.ema.module if self.stepper.ema is not None else self.model

    def _acc_keys(self) -> list[str]:
        return ["loss", "correct", "labelled", "samples"] + [
            f"term:{n}" for n in term_names(self.terms)]

    def _global_acc(self) -> dict[str, float]:
        """The epoch's running sums over every process (a collective under DDP)."""
        keys = self._acc_keys()
        return dict(zip(keys, all_sum([self._acc.get(k, 0.0) for k in keys], self.dist,
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
        bar = progress_bar(self, len(batches), start, epoch)
        sizes = [len(b) for b in batches]
        for k in range(start, len(batches)):
            batch = batches[k]
            pos, w = shard(batch, self.dist)
            n_all = float(len(batch))
            n_lab = float((self.data.targets[batch] >= 0).sum())
            # every batch of a group trains at the rate of the step the group takes
            factor = lr_factor(self.recipe, self.global_step, self.steps_per_epoch)
            set_lr(self.opt, self.base_lrs, factor)
            values, y, _ = self._forward(pos, batch, cached, epoch, k)
            w = w.to(self.device)
            loss, parts = objective(self.terms, values, y, w, n_all, n_lab,
                                    self.recipe.label_smoothing)
            if not bool(torch.isfinite(loss.detach())):  # stop before the step is taken
                last = checkpoints_in(self.run) if self.run is not None else []
                if bar is not None:
                    bar.close()
                raise diverged(float(loss.detach()), {n: float(torch.as_tensor(v).detach())
                                                       for n, v in parts.items()},
                               epoch + 1, k + 1, len(batches), self.global_step + 1,
                               last[-1].name if last else None)
            # DDP averages gradients over processes; accumulation sums them over batches
            stepped = self.stepper.backward(loss, float(self.dist.world), k, sizes)
            self.step_in_epoch = k + 1
            with torch.no_grad():  # this process's share of each sum
                pred = values[self.primary].argmax(-1)
                lab = (y >= 0) & (w > 0) & self.classifies
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
            if (stepped and self.options.save_every  # only where the gradients are empty
                    and self.global_step % self.options.save_every == 0
                    and self.step_in_epoch < len(batches)):
                self.save()
        if bar is not None:
            bar.close()
        seconds = time.perf_counter() - t0
        return epoch_record(self, epoch, self._global_acc(), seconds,
                            sum(len(b) for b in batches[start:]))

    # -- evaluation -------------------------------------------------------------------------------

    def validate(self, data: ImageData | None = None, model=None) -> dict[str, Any]:
        """Accuracy and macro F1 of the primary output on `data` (the val data), or the
        recalls of a contrastive spec; of `model` (an EMA of it), by default the model."""
        m = self.final_metrics(data if data is not None else self.val_data, model)
        if isinstance(m, RetrievalMetrics):
            return m.summary()
        return {"accuracy": m.accuracy, "macro_f1": m.macro_f1, "n": m.n}

    def final_metrics(self, data: ImageData, model=None
                      ) -> ClassificationMetrics | RetrievalMetrics:
        """The metrics of the primary output on the labelled samples of `data`; for a
        contrastive spec that classifies nothing, retrieval both ways."""
        model = model if model is not None else self.model
        if self.retrieval is not None:
            return retrieval_of(model, data, self.preprocess, self.retrieval,
                                self.recipe.batch_size, self.device, self.dist, self.amp)
        values = predict_values(model, data, self.preprocess, self.recipe.batch_size,
                                self.device, names=[self.primary], dist=self.dist,
                                amp=self.amp)
        pred = values[self.primary].argmax(-1)
        labelled = data.targets >= 0
        return classification_metrics(data.targets[labelled], pred[labelled], data.classes)
