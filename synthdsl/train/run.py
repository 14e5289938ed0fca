"""A training run: the run folder around the :class:`~synthdsl.train.trainer.Trainer`, and
:func:`train_spec`, which is what ``synth train SPEC --data ... -o RUN`` does.

A run folder holds ``run.json`` (what was asked: spec, data, recipe, options),
``log.jsonl`` (one line per epoch), ``checkpoints/`` (one per epoch, and every
``save_every`` steps; ``step-00000120.pt`` is the state after 120 optimizer steps), and
at the end ``model.safetensors`` (a compiled artifact: weights, spec and provenance in
one file), ``metrics.json`` and ``confusion.png``. ``resume=True`` continues from the
newest checkpoint and ends exactly where an uninterrupted run ends.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F

from synthdsl.build.artifact import save_compiled
from synthdsl.build.compress import plans, prune_compiled
from synthdsl.checks.budget import batch_problem
from synthdsl.files import read_regular
from synthdsl.lang.errors import SynthError
from synthdsl.train.checkpoint import write_json
from synthdsl.train.data import DataSpec, split_positions
from synthdsl.train.captions import tokenizer_folder
from synthdsl.train.distributed import barrier
from synthdsl.train.errors import TrainError
from synthdsl.train.feed import Feed, feed_for
from synthdsl.train.evaluate import RUN_RECORD_MAX_BYTES, load_model, run_record_problem
from synthdsl.train.images import ImageData
from synthdsl.train.losses import Teacher
from synthdsl.train.options import Options
from synthdsl.train.overrides import checked_with, compiled_with, parse_overrides
from synthdsl.train.preprocess import Preprocess
from synthdsl.train.retrieval import RetrievalMetrics
from synthdsl.train.recipe import Recipe
from synthdsl.train.records import TrainResult, run_record
from synthdsl.train.trainer import Trainer


def train(model, data: ImageData, run: str | Path | None = None, *,
          recipe: Recipe | None = None, options: Options = Options(),
          val_data: ImageData | None = None, test_data: ImageData | None = None,
          preprocess: Preprocess | Feed | None = None, teacher: Teacher | None = None,
          resume: bool = False, spec_path: str | None = None, data_spec: DataSpec | None = None,
          teacher_record: dict | None = None, extra_record: dict | None = None,
          callback=None) -> TrainResult:
    """Train `model` (a compiled spec) on `data`; write the run folder `run` if given.

    The recipe defaults to the spec's own ``recipe`` statement over :class:`Recipe`'s
    defaults. With `test_data` the final model is evaluated there (``metrics.json``)."""
    recipe = recipe or Recipe.resolve(model.graph.graph.get("recipe"))
    if recipe.patience and not options.select_best:
        raise TrainError("patience stops on a held-out validation split, and there is none",
                         hint="hold some training data out with --val-split 0.1")
    t0 = time.perf_counter()
    run_path = Path(run) if run is not None else None
    preprocess = preprocess or feed_for(model)
    record = run_record(model, spec_path, data_spec, recipe, options, preprocess,
                        teacher_record, extra_record)
    if run_path is not None:
        existing = run_path / "run.json"
        if existing.exists() and not resume:
            raise TrainError(f"'{run_path}' already holds a run",
                             hint="pass --resume to continue it, or choose another folder")
        if resume and existing.exists():
            try:  # a regular file of bounded size: a FIFO here must not hang the resume
                before = json.loads(read_regular(existing, RUN_RECORD_MAX_BYTES, "run record"))
            except (OSError, ValueError, RecursionError) as e:
                raise TrainError(f"cannot resume: '{existing}' cannot be read: {e}") from None
            if problem := run_record_problem(before):
                raise TrainError(f"cannot resume: '{existing}' is not a run record: {problem}")
            for key in ("spec_sha256", "data", "recipe", "preprocess"):
                if before.get(key) != record.get(key):
                    raise TrainError(f"cannot resume: the {key.replace('_', ' ')} differs from "
                                     f"the one the run in '{run_path}' started with",
                                     hint="resume with the same spec, data and options")
    trainer = Trainer(model, data, recipe, options, run_path, val_data, preprocess, teacher,
                      record, callback)
    made = _start_run(run_path, record, resume) if run_path is not None and trainer.dist.main \
        else ([], set())
    try:
        for line in trainer.describe():
            trainer._log(line)
        resumed = trainer.resume() if resume else False
        if resume and not resumed:
            trainer._log("no checkpoint to resume from: starting at epoch 1")
        trainer.fit()
    except SynthError:
        _undo_start(run_path, made)
        raise
    metrics = trainer.final_metrics(test_data) if test_data is not None else None
    if run_path is not None and trainer.dist.main:
        _finish_run(trainer, run_path, metrics, test_data)
    barrier(trainer.dist)
    return TrainResult(run_path, trainer.history, metrics, time.perf_counter() - t0, model,
                       test_data.name if test_data is not None else "")


def _start_run(run: Path, record: dict, resume: bool) -> tuple[list[Path], set[Path]]:
    """Create the run folder and its record: what this made, newest last (to undo it), and
    the checkpoints the folder held before."""
    made = [] if run.exists() else [run]
    held = set((run / "checkpoints").glob("*"))
    run.mkdir(parents=True, exist_ok=True)
    if not (resume and (run / "run.json").exists()):
        write_json(run / "run.json", record)
        (run / "log.jsonl").unlink(missing_ok=True)
        made += [run / "run.json", run / "log.jsonl"]
    return made, held


def _undo_start(run: Path | None, started: tuple[list[Path], set[Path]]) -> None:
    """A run that failed before it wrote a checkpoint to resume from leaves nothing it
    began behind: the record and log this call wrote, and the folder if it made it."""
    made, held = started
    if run is None or not made or set((run / "checkpoints").glob("*")) - held:
        return
    for path in reversed(made):
        try:
            path.rmdir() if path.is_dir() else path.unlink(missing_ok=True)
        except OSError:
            pass  # a folder that holds something else is left as it is


def _finish_run(trainer: Trainer, run: Path, metrics, test_data: ImageData | None) -> None:
    save_compiled(trainer.model, run / "model.safetensors")
    ema = trainer.stepper.ema
    if ema is not None:
        save_compiled(ema.module, run / "model-ema.safetensors")
        trainer._log(f"wrote   {run}/model-ema.safetensors")
        if test_data is not None and not isinstance(metrics, RetrievalMetrics):
            got = trainer.final_metrics(test_data, ema.module)
            write_json(run / "metrics-ema.json", {"split": test_data.name, **got.to_dict()})
            trainer._log(f"test    EMA: accuracy {got.accuracy:.4f}, macro F1 "
                         f"{got.macro_f1:.4f} (metrics-ema.json)")
    if trainer.selection is not None and trainer.selection.best_epoch:
        trainer._log(f"best    epoch {trainer.selection.best_epoch} (val "
                     f"{trainer.selection.best:.4f}): {run}/model-best.safetensors")
    if isinstance(metrics, RetrievalMetrics):
        write_json(run / "metrics.json", {"split": test_data.name, **metrics.to_dict()})
        trainer._log(f"test    {test_data.name}: {metrics.line()} (metrics.json)")
    elif metrics is not None:
        write_json(run / "metrics.json", {"split": test_data.name, "output": trainer.primary,
                                           **metrics.to_dict()})
        metrics.plot(run / "confusion.png", f"{trainer.model.graph.name} on {test_data.name}")
        trainer._log(f"test    {test_data.name}: accuracy {metrics.accuracy:.4f}, macro F1 "
                     f"{metrics.macro_f1:.4f} (metrics.json, confusion.png)")
    if trainer.logs is not None and trainer.logs.close(trainer.history,
                                                       trainer.model.graph.name):
        trainer._log(f"curves  {run}/curves.png")
    trainer._log(f"wrote   {run}/model.safetensors")


def load_teacher(target: str, temperature: float, alpha: float, device: str,
                 output: str | None = None) -> tuple[Teacher, dict[str, Any]]:
    """The teacher `target` names (a run, an artifact or a spec, as :func:`load_model`
    reads them) and how the run records it."""
    loaded = load_model(target, device=device)
    if output is not None and output not in loaded.model.output_names:
        raise TrainError(f"teacher '{target}' has no output '{output}'",
                         hint="its outputs: " + ", ".join(loaded.model.output_names))
    teacher = Teacher(loaded.model, loaded.preprocess, temperature, alpha, output,
                      loaded.description)
    return teacher, {"target": str(Path(target).resolve()), "temperature": temperature,
                     "alpha": alpha, "output": output, "description": loaded.description}


def prune_for_training(model, data: ImageData, preprocess, options: Options) -> None:
    """Apply the spec's prune statements before training (which then fine-tunes what is
    left); Taylor importance reads the gradients of one batch's cross-entropy."""
    pos = torch.arange(min(len(data), 64))
    x, y = preprocess.inputs(data.images(pos)), data.targets[pos]
    keep = y >= 0
    before = sum(p.numel() for p in model.parameters())
    prune_compiled(model, x, loss=lambda m: F.cross_entropy(
        _primary(m(*x))[keep], y[keep]))
    if not options.quiet:
        after = sum(p.numel() for p in model.parameters())
        print(f"pruned  {before:,} -> {after:,} parameters "
              f"({len(model.pruned)} tensors resized)", flush=True)


def _primary(out):
    return next(iter(out.values())) if isinstance(out, dict) else out


def train_spec(spec: str | Path, data: str, run: str | Path | None, *,
               recipe: dict[str, Any] | None = None, options: Options = Options(),
               classes: Sequence[int | str] | None = None, shots: int | None = None,
               shots_seed: int | None = None, unlabelled: bool = False,
               eval_split: str = "test", mean: Sequence[float] | None = None,
               std: Sequence[float] | None = None, normalize: bool | None = None,
               teacher: str | None = None, teacher_output: str | None = None,
               temperature: float = 4.0, alpha: float = 0.7,
               resume: bool = False, overrides: Sequence[str] = (),
               val_split: float = 0.0,
               adapters: Sequence[str] | Mapping[str, float] | None = None) -> TrainResult:
    """Check and compile the spec at `spec`, load `data`, and :func:`train` it into `run`.

    `recipe` overrides the spec's ``recipe`` statement (None values are ignored);
    `classes`, `shots` (seeded by `shots_seed`, by default the recipe's seed) and
    `unlabelled` choose the training samples; `eval_split` ("test", "train" or "none") is
    evaluated after each epoch and at the end; `mean`, `std` and `normalize` override the
    preprocessing; `teacher` names a run, artifact or spec to distil from; `overrides`
    (``["recipe.lr=3e-4", "policy.norm=frozen"]``) change the spec's values before it is
    checked (:mod:`synthdsl.train.overrides`); `val_split` holds out that share of the
    training data, per class and seeded, to validate on and choose the best epoch by. A
    spec that says ``adapt ... with prune(...)`` is pruned after it is compiled, and the
    training fine-tunes the pruned model (whose artifact records its shapes). `adapters`
    (names, or names with weights) trains with only those LoRA adapters active, the
    others left out and frozen (:func:`synthdsl.build.adapters.set_active`)."""
    changes = parse_overrides(overrides)
    graph = checked_with(Path(spec), changes)  # SPEC.lock verified before a checkpoint is read
    resolved = Recipe.resolve(graph.graph.get("recipe"), recipe)
    if (too_big := batch_problem(graph, resolved.batch_size)) is not None:
        raise too_big  # S305: a batch's activations over the budget, before anything is built
    model = compiled_with(graph, changes, seed=resolved.seed)  # its text: the spec as trained
    if adapters is not None:
        chosen = model.set_adapters(adapters)
    data_spec = DataSpec(data, tuple(classes) if classes else None, shots,
                         shots_seed if shots_seed is not None else resolved.seed, unlabelled)
    preprocess = feed_for(model, mean, std, normalize)
    tokenizer = tokenizer_folder(model.graph)
    train_data = data_spec.load_for("train", preprocess, tokenizer)
    test = None if eval_split == "none" else DataSpec(
        data, data_spec.classes).load_for(eval_split, preprocess, tokenizer)
    if plans(model, "prune"):
        prune_for_training(model, train_data, preprocess, options)
    val = test
    if val_split:
        train_data, val = hold_out(train_data, val_split, resolved.seed)
        options = replace(options, select_best=True)
    loaded, teacher_record = (None, None)
    if teacher:
        loaded, teacher_record = load_teacher(teacher, temperature, alpha, options.device,
                                              teacher_output)
    extra = {"overrides": list(overrides)} if overrides else {}
    if val_split:
        extra["val_split"] = val_split
    if adapters is not None:
        extra["adapters"] = chosen
    return train(model, train_data, run, recipe=resolved, options=options, val_data=val,
                 test_data=test, preprocess=preprocess, teacher=loaded, resume=resume,
                 spec_path=str(spec), data_spec=data_spec, teacher_record=teacher_record,
                 extra_record=extra or None)


def hold_out(data: ImageData, fraction: float, seed: int) -> tuple[ImageData, ImageData]:
    """`data` less a validation split of `fraction` of each class (seeded), and that split."""
    if not 0 < fraction < 1:
        raise TrainError(f"--val-split must be a fraction in (0, 1), not {fraction}")
    keep, val = split_positions(data.targets.numpy(), fraction, seed)
    if len(val) == 0 or len(keep) == 0:
        raise TrainError(f"--val-split {fraction} leaves no samples to "
                         f"{'validate' if len(val) == 0 else 'train'} on in {data.name}")
    return (data.subset(torch.as_tensor(keep), name=f"{data.name} less val"),
            data.subset(torch.as_tensor(val), name=f"{data.name} val ({fraction:g})"))
