"""The built-in demo: the synthesis loop on real data, measured (`synth demo`, `make demo`).

Offline, on the CPU, in a few minutes:

1. **Existing models.** Two small timm models (``test_resnet``, ``test_efficientnet``)
   are trained on MNIST-5k digits 0–4 and saved as safetensors checkpoints. They
   stand for the pretrained models a person already has.
2. **Synthesis.** A generated spec fuses their trunks (their pooled features,
   concatenated and normalised) under a new head for a new task, digits 5–9, and is
   trained on a few labels per class (20 by default, a seeded draw per seed): fine-tuned
   (trunks at a third of the head's learning rate), and with the trunks frozen (their
   outputs cached: a fraction of a second).
3. **Baselines, on the same labels.** The same architecture from scratch and each
   source alone under a new head (the same number of optimizer steps), a small CNN
   from scratch (the same), and that CNN distilled from the synthesised model (soft
   targets on the unlabelled rest of the training split too, for 10 epochs over it;
   Hinton et al.).
4. **Evaluation** on the fixed test split of digits 5–9 (500 images): accuracy and
   macro F1, mean ± standard deviation over the seeds, the paired difference to
   scratch, training time, trainable parameters; a bar chart, confusion matrices and
   ``results.json``. The sweep repeats synthesised against scratch with other numbers
   of labels per class (3 and 10 by default).

Everything it writes goes under the output folder (``runs/demo`` by default):
``sources/`` (the checkpoints and their specs), ``specs/`` (the generated specs),
``runs/ARM/seed-N/`` (ordinary ``synth train`` run folders: ``synth eval`` reads
them), ``results.json``, ``table.md`` and the PNGs.
"""

from __future__ import annotations

import json
import platform
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

from synthdsl.pipeline import compile_spec
from synthdsl.train.data import DataSpec
from synthdsl.train.demo_report import (margin_line, mean_std, paired, plot_sweep, summarise,
                                        sweep_table, table)
from synthdsl.train.losses import Teacher
from synthdsl.train.metrics import ClassificationMetrics, plot_bars
from synthdsl.train.options import Options
from synthdsl.train.preprocess import preprocess_for
from synthdsl.train.recipe import Recipe
from synthdsl.train.run import train

#: The classes of the old task and of the new one.
OLD_CLASSES = (0, 1, 2, 3, 4)
NEW_CLASSES = (5, 6, 7, 8, 9)


@dataclass
class DemoConfig:
    out: Path = Path("runs/demo")
    data: str = "mnist5k"
    seeds: int = 5
    shots: int = 20
    sweep: tuple[int, ...] = (3, 10)  # more labels-per-class counts: synthesised vs scratch
    sources: tuple[str, str] = ("test_resnet", "test_efficientnet")
    size: int = 32
    source_epochs: int = 30
    # few-shot arms train for a number of optimizer steps (batches of 32), whatever the
    # number of labels: as many epochs as that takes
    head_steps: int = 100
    finetune_steps: int = 100
    scratch_steps: int = 100
    student_epochs: int = 10   # over the whole transfer set (about 2,000 images)
    augment: int = 2
    quick: bool = False
    fresh: bool = False

    @classmethod
    def quick_config(cls, out: Path, data: str = "digits") -> "DemoConfig":
        """A smoke-test sized run (seconds, not minutes): numbers mean nothing."""
        return cls(out=out, data=data, seeds=1, shots=3, sweep=(5,), source_epochs=1,
                   head_steps=3, finetune_steps=1, scratch_steps=1, student_epochs=1,
                   quick=True)


# -- the specs ------------------------------------------------------------------------------------


def source_spec(arch: str, size: int) -> str:
    return f"""# An "existing model": timm's {arch}, trained by the demo on digits 0-4.
synth Source_{arch}

input image: [B, 3, {size}, {size}]

source net = timm("{arch}", num_classes={len(OLD_CLASSES)})

logits = net(image)

recipe epochs=8, lr=0.002, batch_size=64, weight_decay=0.05

output logits
"""


def _trunk(name: str, arch: str, ckpt: str | None) -> tuple[str, str]:
    weights = f', weights="{ckpt}"' if ckpt else ""
    src = f'source {name} = timm("{arch}", num_classes={len(OLD_CLASSES)}{weights})'
    use = f"f_{name} = {name}.forward_head({name}.forward_features(image), pre_logits=true)"
    return src, use


def fused_spec(sources: dict[str, tuple[str, str | None]], size: int, name: str,
               freeze: bool, trunk_lr: float | None = None, comment: str = "") -> str:
    """Trunks of `sources` (name -> (arch, checkpoint or None)) pooled, concatenated,
    normalised and read by a new head for the new classes."""
    decls, uses = zip(*(_trunk(n, a, c) for n, (a, c) in sources.items()))
    feats = [f"f_{n}" for n in sources]
    joined = f"concat({', '.join(feats)})" if len(feats) > 1 else feats[0]
    lines = [f"# {comment}" if comment else None, f"synth {name}", "",
             f"input image: [B, 3, {size}, {size}]", "", *decls, "", *uses,
             f"logits = LayerNorm({joined}) |> Linear(out={len(NEW_CLASSES)})", ""]
    if freeze:
        lines.append(f"freeze {', '.join(sources)}")
    if trunk_lr is not None:
        lines.append(f"train {', '.join(sources)} with lr_mult={trunk_lr}")
    lines += ["", "output logits", ""]
    return "\n".join(line for line in lines if line is not None)


STUDENT = f"""# A small CNN, about 25k parameters: the student.
synth SmallStudent

input image: [B, 1, 28, 28]

c1 = Conv2d(image, out=16, kernel=3, padding=1) |> BatchNorm2d |> ReLU |> MaxPool2d
c2 = Conv2d(c1, out=32, kernel=3, padding=1) |> BatchNorm2d |> ReLU |> MaxPool2d
c3 = Conv2d(c2, out=64, kernel=3, padding=1) |> BatchNorm2d |> ReLU |> GlobalAvgPool
logits = Linear(c3, out={len(NEW_CLASSES)})

output logits
"""


# -- the arms -------------------------------------------------------------------------------------


@dataclass
class Arm:
    key: str
    label: str
    spec: str                       # file name under specs/
    steps: int                      # optimizer steps (few-shot arms), or epochs (transfer set)
    lr: float
    batch_size: int = 32
    augment: int = 0
    cache: bool = False
    teacher: str | None = None      # key of the arm whose model teaches this one
    unlabelled: bool = False
    color: str = "#8c8c8c"


def arms(cfg: DemoConfig) -> list[Arm]:
    a, b = cfg.sources
    return [
        Arm("synth_ft", "synthesised: fused trunks + new head, fine-tuned",
            "synth_finetune.synth", cfg.finetune_steps, 3e-3, augment=cfg.augment,
            color="#2a9d8f"),
        Arm("synth", "synthesised, trunks frozen (cached)", "synth_frozen.synth",
            cfg.head_steps, 3e-3, cache=True, color="#52b788"),
        Arm("scratch", "same architecture from scratch", "scratch.synth",
            cfg.scratch_steps, 2e-3, augment=cfg.augment, color="#e76f51"),
        Arm("only_a", f"{a} alone, frozen, new head", "only_a.synth", cfg.head_steps,
            3e-3, cache=True, color="#a8dadc"),
        Arm("only_b", f"{b} alone, frozen, new head", "only_b.synth", cfg.head_steps,
            3e-3, cache=True, color="#a8dadc"),
        Arm("student_kd", "small CNN distilled from the synthesised model", "student.synth",
            cfg.student_epochs, 3e-3, teacher="synth_ft", unlabelled=True, color="#457b9d"),
        Arm("student", "small CNN from scratch", "student.synth", cfg.scratch_steps, 3e-3,
            augment=cfg.augment, color="#e9c46a"),
    ]


SHORT = {"synth_ft": "synthesised", "synth": "synth. frozen", "scratch": "scratch",
         "only_a": "source A only", "only_b": "source B only",
         "student_kd": "student, distilled", "student": "student, scratch"}


# -- running --------------------------------------------------------------------------------------


def _say(text: str) -> None:
    print(text, flush=True)


def train_sources(cfg: DemoConfig) -> dict[str, dict[str, Any]]:
    """Train the existing models on digits 0-4 (or reuse them from an earlier run)."""
    folder = cfg.out / "sources"
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for arch in cfg.sources:
        ckpt = folder / f"{arch}.safetensors"
        record = folder / f"{arch}.json"
        want = {"arch": arch, "data": cfg.data, "size": cfg.size, "epochs": cfg.source_epochs,
                "augment": cfg.augment, "classes": list(OLD_CLASSES)}
        if not cfg.fresh and ckpt.exists() and record.exists():
            done = json.loads(record.read_text())
            if done.get("config") == want:
                _say(f"  {arch}: reused {ckpt} (accuracy on digits 0-4: "
                     f"{done['accuracy']:.3f})")
                out[arch] = done
                continue
        spec = folder / f"{arch}.synth"
        spec.write_text(source_spec(arch, cfg.size))
        model = compile_spec(spec, seed=0)
        data = DataSpec(cfg.data, OLD_CLASSES)
        result = train(model, data.load("train"), None,
                       recipe=Recipe.resolve(model.recipe, {"epochs": cfg.source_epochs}),
                       options=Options(quiet=True, augment=cfg.augment),
                       test_data=data.load("test"))
        state = {k[len("net."):]: v.contiguous() for k, v in model.state_dict().items()
                 if k.startswith("net.")}
        save_file(state, str(ckpt))
        done = {"config": want, "accuracy": result.metrics.accuracy,
                "seconds": result.seconds, "checkpoint": str(ckpt)}
        record.write_text(json.dumps(done, indent=2) + "\n")
        _say(f"  {arch}: accuracy on digits 0-4 {result.metrics.accuracy:.3f} "
             f"({result.seconds:.0f}s) -> {ckpt}")
        out[arch] = done
    return out


def write_specs(cfg: DemoConfig) -> Path:
    folder = cfg.out / "specs"
    folder.mkdir(parents=True, exist_ok=True)
    a, b = cfg.sources
    ck = {s: f"../sources/{s}.safetensors" for s in cfg.sources}
    files = {
        "synth_frozen.synth": fused_spec({"a": (a, ck[a]), "b": (b, ck[b])}, cfg.size,
                                         "FusedFrozen", True, comment="The same, with the "
                                         "trunks frozen: only the head trains, and the trunks' "
                                         "outputs can be cached."),
        "synth_finetune.synth": fused_spec({"a": (a, ck[a]), "b": (b, ck[b])}, cfg.size,
                                           "FusedFineTuned", False, 0.33,
                                           comment="Two existing models' trunks, fused under "
                                           "a new head for digits 5-9; the trunks train at a "
                                           "third of the head's rate."),
        "scratch.synth": fused_spec({"a": (a, None), "b": (b, None)}, cfg.size, "Scratch",
                                    False, comment="The same architecture, randomly "
                                    "initialised: the baseline."),
        "only_a.synth": fused_spec({"a": (a, ck[a])}, cfg.size, "OnlyA", True),
        "only_b.synth": fused_spec({"b": (b, ck[b])}, cfg.size, "OnlyB", True),
        "student.synth": STUDENT,
    }
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


def run_arm(cfg: DemoConfig, arm: Arm, seed: int, specs: Path, test, teachers: dict,
            shots: int | None = None) -> dict[str, Any]:
    spec = specs / arm.spec
    model = compile_spec(spec, seed=seed)
    pre = preprocess_for(model)
    shots = cfg.shots if shots is None else shots
    data_spec = DataSpec(cfg.data, NEW_CLASSES, shots, seed, arm.unlabelled)
    data = data_spec.load("train", pre.size, pre.channels or 3)
    teacher = None
    if arm.teacher is not None:
        tmodel, tpre = teachers[arm.teacher]
        teacher = Teacher(tmodel, tpre, temperature=4.0, alpha=0.7,
                          description=f"the '{arm.teacher}' model of seed {seed}")
    if arm.unlabelled:
        epochs = arm.steps
    else:
        epochs = max(1, -(-arm.steps // -(-len(data) // arm.batch_size)))
    recipe = Recipe(epochs=epochs, lr=arm.lr, batch_size=arm.batch_size, weight_decay=0.05,
                    seed=seed)
    options = Options(quiet=True, progress=False, cache_frozen=arm.cache or teacher is not None,
                      augment=arm.augment, eval_every=epochs, checkpoint_every=0, keep=1)
    run_dir = cfg.out / "runs" / (arm.key if shots == cfg.shots else
                                  f"sweep/shots-{shots}/{arm.key}") / f"seed-{seed}"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    result = train(model, data, run_dir, recipe=recipe, options=options, test_data=test,
                   preprocess=pre, teacher=teacher, spec_path=str(spec), data_spec=data_spec,
                   teacher_record={"arm": arm.teacher} if arm.teacher else None)
    m = result.metrics
    totals = model.parameter_totals()
    train_seconds = sum(h["seconds"] for h in result.history)
    teachers[arm.key] = (model.eval(), pre)
    return {"accuracy": m.accuracy, "macro_f1": m.macro_f1, "train_seconds": train_seconds,
            "params": totals["params"], "trainable": totals["trainable"],
            "labelled": sum(data.class_counts()), "images": len(data),
            "confusion": m.confusion.tolist(), "run": str(run_dir)}


def run_sweep(cfg: DemoConfig, specs: Path, test, main: dict[str, list[dict]]
              ) -> list[dict[str, Any]]:
    """Synthesised (fine-tuned) against scratch at every labels-per-class count."""
    keep = [a for a in arms(cfg) if a.key in ("synth_ft", "scratch")]
    points = []
    for shots in sorted({cfg.shots, *cfg.sweep}):
        if shots == cfg.shots:
            per_seed = {k: main[k] for k in ("synth_ft", "scratch")}
        else:
            per_seed = {}
            for seed in range(cfg.seeds):
                for arm in keep:
                    r = run_arm(cfg, arm, seed, specs, test, {}, shots=shots)
                    per_seed.setdefault(arm.key, []).append(r)
            _say(f"   {shots:3d} labels per class: " + margin_line("synthesised",
                                                                   paired(per_seed, "synth_ft")))
        points.append({"shots": shots,
                       **{k: mean_std([r["accuracy"] for r in rs]) for k, rs in per_seed.items()},
                       "margin": mean_std(paired(per_seed, "synth_ft")),
                       "wins": sum(d > 0 for d in paired(per_seed, "synth_ft")),
                       "per_seed": {k: [r["accuracy"] for r in rs] for k, rs in per_seed.items()}})
    return points


def run_demo(cfg: DemoConfig) -> dict[str, Any]:
    t0 = time.perf_counter()
    cfg.out.mkdir(parents=True, exist_ok=True)
    a, b = cfg.sources
    n_seeds = f"{cfg.seeds} seed{'s' if cfg.seeds > 1 else ''}"
    _say(f"synthdsl demo: {cfg.data}, old task digits 0-4, new task digits 5-9 with "
         f"{cfg.shots} labels per class, {n_seeds}")
    _say(f"1. existing models: {a} and {b}, trained on digits 0-4")
    sources = train_sources(cfg)
    specs = write_specs(cfg)
    _say(f"2. specs written to {specs}/ (synth_finetune.synth fuses the two trunks)")
    arm_list = arms(cfg)
    test = DataSpec(cfg.data, NEW_CLASSES).load("test")  # each arm preprocesses it its way
    per_seed: dict[str, list[dict]] = {}
    _say(f"3. training on {cfg.shots} labels per class of digits 5-9, evaluating on the "
         f"{len(test)} test images")
    for seed in range(cfg.seeds):
        teachers: dict[str, Any] = {}
        for arm in arm_list:
            t = time.perf_counter()
            r = run_arm(cfg, arm, seed, specs, test, teachers)
            per_seed.setdefault(arm.key, []).append(r)
            _say(f"   seed {seed}  {arm.label:48s} accuracy {r['accuracy']:.3f}  "
                 f"macro F1 {r['macro_f1']:.3f}  ({time.perf_counter() - t:.1f}s)")
    rows = summarise(arm_list, per_seed)
    title = (f"{cfg.data}: digits 5-9, {cfg.shots} labels per class "
             f"({cfg.shots * len(NEW_CLASSES)} images), {len(test)} test images; "
             f"mean ± std over {n_seeds}")
    margins = {k: paired(per_seed, k) for k in ("synth_ft", "synth")}
    points = []
    if cfg.sweep:
        _say(f"4. synthesised against scratch with more labels: {', '.join(map(str, cfg.sweep))}"
             " per class")
        points = run_sweep(cfg, specs, test, per_seed)
    _say("")
    _say(title)
    _say(table(rows))
    _say("")
    by_key = {r["key"]: r for r in rows}
    for k, diffs in margins.items():
        _say(margin_line(by_key[k]["name"], diffs))
    if points:
        _say("")
        _say(sweep_table(points))

    plots = [plot_bars([{"name": SHORT.get(r["key"], r["key"]),
                         "mean": r["accuracy"][0], "std": r["accuracy"][1],
                         "color": r["color"]} for r in rows],
                       cfg.out / "accuracy.png", "test accuracy",
                       f"digits 5-9, {cfg.shots} labels/class, {n_seeds}")]
    for key in ("synth_ft", "scratch"):
        m = ClassificationMetrics(tuple(str(c) for c in NEW_CLASSES),
                                  np.array(per_seed[key][0]["confusion"]))
        plots.append(m.plot(cfg.out / f"confusion-{key}.png", f"{by_key[key]['name']} (seed 0)"))
    if points:
        plots.append(plot_sweep(points, cfg.out / "labels.png",
                                f"digits 5-9 from digits 0-4, {n_seeds}"))
    results = {
        "title": title, "config": {k: (str(v) if isinstance(v, Path) else v)
                                   for k, v in asdict(cfg).items()},
        "sources": sources, "rows": rows, "per_seed": per_seed,
        "margins_over_scratch": margins, "sweep": points,
        "seconds": time.perf_counter() - t0,
        "environment": {"python": platform.python_version(), "torch": torch.__version__,
                        "threads": torch.get_num_threads(), "platform": platform.platform()},
    }
    (cfg.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    md = f"{title}\n\n{table(rows, markdown=True)}\n"
    if points:
        md += f"\n{sweep_table(points, markdown=True)}\n"
    (cfg.out / "table.md").write_text(md)
    _say(f"\nwrote {cfg.out}/results.json, table.md, " + ", ".join(p.name for p in plots)
         + f"; run folders in {cfg.out}/runs/ ({results['seconds']:.0f}s in all)")
    return results
