"""`synth compress SPEC --data ...`: the trained model and its compressed forms, measured
side by side in one run.

Per seed: the spec is compiled and trained (its recipe, on the training split); then

* **pruned** — a copy pruned as its ``prune(...)`` statements say (Torch-Pruning; Taylor
  importance takes its gradients from one training batch), fine-tuned for a few epochs
  with the trained model as its teacher (the ``distill`` loss);
* **quantised** — int8 as its ``quantize(...)`` statement says (or each mode asked for):
  dynamic, static (calibrated on training batches) or QAT (fine-tuned fake-quantised);
* **pruned + quantised** — the pruned model, quantised the same way;
* **student, distilled** — a small spec (the built-in CNN, or ``--student SPEC``) trained
  on the trained model's soft targets and the labels.

Each row gets its parameters, the bytes of its saved state, MACs (one image, counted by
:func:`~synthdsl.train.measure.count_macs`), CPU latency at batch 1 and 32 (the rows of a
seed timed interleaved, with torch's threads fixed) and accuracy / macro F1 on the test
split. The report gives per row the mean ± std over seeds, latency as a ratio to the
trained model's of the same seed.
"""

from __future__ import annotations

import copy
import json
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from synthdsl.build.artifact import save_compiled
from synthdsl.build.compress import plans, prune_compiled, quantize_compiled
from synthdsl.library.quantize import int8_layers
from synthdsl.pipeline import check_spec, compile_locked
from synthdsl.train.data import DataSpec
from synthdsl.train.demo_report import _render, mean_std
from synthdsl.train.errors import TrainError
from synthdsl.train.images import ImageData
from synthdsl.train.losses import Teacher
from synthdsl.train.measure import (accuracy_of, count_macs, latencies, state_bytes,
                                    weight_count)
from synthdsl.train.options import Options
from synthdsl.train.preprocess import Preprocess, preprocess_for
from synthdsl.train.recipe import Recipe
from synthdsl.train.run import train


def student_spec(classes: int, size: int = 16) -> str:
    """The built-in student: a small CNN on one channel, about 5k parameters."""
    return f"""# A small CNN: the student distilled from the trained model.
synth CompressStudent

input image: [B, 1, {size}, {size}]

c1 = Conv2d(image, out=16, kernel=3, padding=1) |> BatchNorm2d |> ReLU |> MaxPool2d
c2 = Conv2d(c1, out=32, kernel=3, padding=1) |> BatchNorm2d |> ReLU |> GlobalAvgPool
logits = Linear(c2, out={classes})

output logits
"""


@dataclass
class CompressConfig:
    """What `synth compress` runs."""

    spec: Path
    data: str = "digits"
    seeds: int = 1
    epochs: int | None = None          # the trained model's (default: the spec's recipe)
    finetune_epochs: int = 3           # pruned and QAT fine-tuning
    student: Path | None = None        # a student spec (default: the built-in CNN)
    student_epochs: int = 10
    modes: tuple[str, ...] = ()        # quantisation modes (default: the spec's)
    calibration: int = 8               # training batches that calibrate static int8
    threads: int = 1
    repeats: int = 20
    quiet: bool = False
    save: Path | None = None           # the first seed's models as artifacts, into this folder


@dataclass
class Row:
    """One model of one seed, measured."""

    name: str
    model: Callable
    float_model: torch.nn.Module        # what its MACs are counted on
    preprocess: Preprocess
    train_seconds: float = 0.0


def _fit(model, data: ImageData, recipe: Recipe, teacher: Teacher | None = None) -> float:
    pre = preprocess_for(model)
    result = train(model, data, None, recipe=recipe, preprocess=pre, teacher=teacher,
                   options=Options(quiet=True, progress=False, eval_every=recipe.epochs,
                                   checkpoint_every=0, keep=1))
    return sum(h["seconds"] for h in result.history)


def _qat_tuner(data: ImageData, pre: Preprocess, recipe: Recipe, epochs: int) -> Callable:
    """Fine-tuning of a fake-quantised fx module: cross-entropy on the labelled images."""
    def fine_tune(prepared) -> None:
        for p in prepared.parameters():  # a teacher's copy comes with its tensors frozen
            p.requires_grad_(True)
        opt = torch.optim.AdamW(prepared.parameters(), lr=recipe.lr * 0.1)
        gen = torch.Generator().manual_seed(recipe.seed)
        labelled = torch.nonzero(data.targets >= 0).flatten()
        prepared.train()
        for _ in range(epochs):
            order = labelled[torch.randperm(len(labelled), generator=gen)]
            for i in range(0, len(order), recipe.batch_size):
                pos = order[i:i + recipe.batch_size]
                loss = F.cross_entropy(prepared(*pre.inputs(data.images(pos))),
                                       data.targets[pos])
                opt.zero_grad()
                loss.backward()
                opt.step()
        prepared.eval()
    return fine_tune


def _batches(data: ImageData, pre: Preprocess, n: int, size: int) -> list[tuple]:
    return [pre.inputs(data.images(torch.arange(i, min(i + size, len(data)))))
            for i in range(0, min(len(data), n * size), size)]


def run_seed(cfg: CompressConfig, seed: int, say: Callable[[str], None]) -> list[dict]:
    """Every row of one seed, measured."""
    graph = check_spec(cfg.spec)
    model = compile_locked(graph, seed=seed)
    pre = preprocess_for(model)
    train_data = DataSpec(cfg.data).load("train", pre.size, pre.channels or 3)
    test = DataSpec(cfg.data).load("test", pre.size, pre.channels or 3)
    recipe = Recipe.resolve(model.recipe, {"epochs": cfg.epochs, "seed": seed})
    rows = [Row("synthesised", model, model, pre, _fit(model, train_data, recipe))]
    model.eval()
    teacher = Teacher(model, pre, temperature=4.0, alpha=0.7, description="the trained model")
    tune = Recipe.resolve(model.recipe, {"epochs": cfg.finetune_epochs, "seed": seed})
    calib = _batches(train_data, pre, cfg.calibration, recipe.batch_size)
    pruned = None
    if plans(model, "prune"):
        pruned = copy.deepcopy(model)
        x, y = calib[0], train_data.targets[:len(calib[0][0])]
        prune_compiled(pruned, x, loss=lambda m: F.cross_entropy(m(*x), y))
        rows.append(Row("pruned + fine-tuned", pruned, pruned, pre,
                        _fit(pruned, train_data, tune, teacher)))
        pruned.eval()
    modes = cfg.modes or tuple(p["options"]["mode"] for p in plans(model, "quantize"))
    for mode in modes:
        for base, name in ((model, "quantised"), (pruned, "pruned + quantised")):
            if base is None:
                continue
            t = time.perf_counter()
            qm = quantize_compiled(base, calib, _qat_tuner(train_data, pre, tune,
                                                           cfg.finetune_epochs), mode)
            rows.append(Row(f"{name} ({mode})", qm, base, pre, time.perf_counter() - t))
    student = compile_locked(check_spec(cfg.student) if cfg.student else check_spec(
        student_spec(train_data.num_classes)), seed=seed)
    spre = preprocess_for(student)
    sdata = DataSpec(cfg.data).load("train", spre.size, spre.channels or 3)
    srecipe = Recipe.resolve(student.recipe, {"epochs": cfg.student_epochs, "seed": seed,
                                              "lr": 3e-3})
    rows.append(Row("student, distilled", student, student, spre,
                    _fit(student, sdata, srecipe, teacher)))
    student.eval()
    if cfg.save is not None and seed == 0:
        for r in rows:
            path = save_compiled(r.model, cfg.save / f"{artifact_name(r.name)}.safetensors")
            say(f"   wrote {path}")
    return measure_rows(rows, cfg, DataSpec(cfg.data), say, seed)


def artifact_name(row: str) -> str:
    """The file a row's model is saved as.

    >>> artifact_name("pruned + quantised (static)"), artifact_name("synthesised")
    ('pruned-int8-static', 'trained')
    """
    words = {"synthesised": "trained", "pruned + fine-tuned": "pruned",
             "student, distilled": "student"}
    if row in words:
        return words[row]
    return (row.replace("pruned + quantised", "pruned-int8").replace("quantised", "int8")
            .replace(" (", "-").rstrip(")"))


def measure_rows(rows: list[Row], cfg: CompressConfig, data: DataSpec,
                 say: Callable[[str], None], seed: int) -> list[dict]:
    """Size, MACs, accuracy of each row, and latency of all of them side by side."""
    tests = {}
    out = []
    for r in rows:
        key = (r.preprocess.size, r.preprocess.channels)
        if key not in tests:
            tests[key] = data.load("test", r.preprocess.size, r.preprocess.channels or 3)
        test = tests[key]
        m = accuracy_of(r.model, test, r.preprocess.inputs)
        one = r.preprocess.inputs(test.images(torch.arange(1)))
        out.append({"name": r.name, "seed": seed, "params": weight_count(r.model),
                    "bytes": state_bytes(r.model), "macs": count_macs(r.float_model, one),
                    "int8_layers": len(int8_layers(r.model)), "accuracy": m.accuracy,
                    "macro_f1": m.macro_f1, "train_seconds": r.train_seconds})
    inputs = {b: [r.preprocess.inputs(tests[(r.preprocess.size, r.preprocess.channels)]
                                      .images(torch.arange(b))) for r in rows]
              for b in (1, 32)}
    timed = _timed(rows, inputs, cfg)
    for i, o in enumerate(out):
        o["latency_ms"] = {str(b): timed[i][b] * 1e3 for b in (1, 32)}
        o["latency_ratio"] = {str(b): timed[i][b] / timed[0][b] for b in (1, 32)}
        say(f"   seed {seed}  {o['name']:28s} accuracy {o['accuracy']:.3f}  macro F1 "
            f"{o['macro_f1']:.3f}  {o['params']:>9,} params  {o['bytes']:>9,} B  "
            f"{o['macs']:>11,} MACs  batch 1 x{o['latency_ratio']['1']:.2f}  "
            f"batch 32 x{o['latency_ratio']['32']:.2f}")
    return out


def _timed(rows: list[Row], inputs: dict[int, list[tuple]], cfg: CompressConfig
           ) -> list[dict[int, float]]:
    """Latency of every row per batch size, interleaved."""
    result: list[dict[int, float]] = [{} for _ in rows]
    for b, xs in inputs.items():
        calls = {i: (lambda i=i: rows[i].model(*xs[i])) for i in range(len(rows))}
        t = latencies({i: (lambda f=f: f()) for i, f in calls.items()}, {b: ()},
                      cfg.repeats, cfg.threads)
        for i in calls:
            result[i][b] = t[i][b]
    return result


def summarise(per_seed: list[list[dict]]) -> list[dict[str, Any]]:
    """Per row name: mean and std over seeds of every figure."""
    names = list(dict.fromkeys(r["name"] for rows in per_seed for r in rows))
    out = []
    for name in names:
        rs = [r for rows in per_seed for r in rows if r["name"] == name]
        row: dict[str, Any] = {"name": name, "seeds": len(rs)}
        for key in ("params", "bytes", "macs", "int8_layers", "accuracy", "macro_f1",
                    "train_seconds"):
            row[key] = mean_std([float(r[key]) for r in rs])
        for key in ("latency_ms", "latency_ratio"):
            row[key] = {b: mean_std([r[key][b] for r in rs]) for b in ("1", "32")}
        out.append(row)
    return out


def table(rows: list[dict[str, Any]], markdown: bool = False) -> str:
    """The side-by-side table: one line per model, mean ± std over seeds."""
    head = ["model", "params", "state bytes", "MACs", "accuracy", "macro F1",
            "latency b=1", "latency b=32"]

    def pm(v, digits=3):
        return f"{v[0]:.{digits}f} ± {v[1]:.{digits}f}"

    def ratio(v):
        return f"×{v[0]:.2f} ± {v[1]:.2f}"

    body = [[r["name"], f"{r['params'][0]:,.0f}", f"{r['bytes'][0]:,.0f}",
             f"{r['macs'][0]:,.0f}", pm(r["accuracy"]), pm(r["macro_f1"]),
             ratio(r["latency_ratio"]["1"]), ratio(r["latency_ratio"]["32"])] for r in rows]
    return _render(head, body, markdown)


def compress_spec(cfg: CompressConfig, say: Callable[[str], None] | None = None
                  ) -> dict[str, Any]:
    """Run every seed of `cfg` and report: rows (mean ± std), per-seed figures, the
    table, and where it ran."""
    say = say or (lambda text: None if cfg.quiet else print(text, flush=True))
    graph = check_spec(cfg.spec)
    if not graph.graph.get("compression"):
        raise TrainError(f"'{cfg.spec}' says neither prune(...) nor quantize(...)",
                         hint="add e.g. `adapt r.layer4 with prune(ratio=0.5)` and "
                         '`adapt * with quantize(mode="static")`')
    t0 = time.perf_counter()
    per_seed = []
    for seed in range(cfg.seeds):
        per_seed.append(run_seed(cfg, seed, say))
    rows = summarise(per_seed)
    text = table(rows)
    title = (f"{graph.name} on {cfg.data}: mean ± std over {cfg.seeds} seed"
             f"{'s' if cfg.seeds > 1 else ''}; latency as a ratio to the trained model's, "
             f"{cfg.threads} thread{'s' if cfg.threads > 1 else ''}")
    say("")
    say(title)
    say(text)
    return {"title": title, "rows": rows, "per_seed": per_seed, "table": text,
            "markdown": table(rows, markdown=True),
            "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
            "seconds": time.perf_counter() - t0,
            "environment": {"python": platform.python_version(), "torch": torch.__version__,
                            "threads": cfg.threads, "platform": platform.platform()}}


def write_report(report: dict[str, Any], path: Path) -> Path:
    """The report as JSON."""
    from synthdsl.files import write_text

    write_text(path, json.dumps(report, indent=2) + "\n")
    return path
