"""Does merging in weight space pay? Greedy and uniform soups, task arithmetic and TIES, over seeds.

A "pretrained" trunk is made first: timm's ``test_resnet`` trained on digits 0-4 of
scikit-learn's 8x8 digits (resized to 32x32), saved as safetensors in a temporary
folder. The synthesised model is that trunk (its pooled features) under a new
5-class head, fine-tuned on digits 5-9 (renumbered 0-4)::

    source r = timm("test_resnet", num_classes=5, weights="trunk.safetensors")
    feats  = r.forward_head(r.forward_features(image), pre_logits=true)
    logits = Linear(feats, out=5)

For each seed (the new head's initialisation, and the variants' training seeds):

* **soups** (:func:`synthdsl.train.soup.soup`): ``--variants`` copies fine-tuned from
  the same start with training seeds ``seed+1+i`` and learning rates cycled over
  ``--lrs``; a fifth of the training split is held out to choose; reported on the
  test split: the best single variant (by validation), the uniform soup, the greedy
  soup.
* **task arithmetic / TIES**: from the same start, model A is fine-tuned on digits
  5-7 only and model B on 8-9 only (the same 5-class head); on the test images of all
  of 5-9: A alone, B alone, their task-arithmetic merge (``base + (θA − base) +
  (θB − base)``), TIES (density 0.7), and the plain average.

Mean ± standard deviation over ``--seeds`` seeds (default 3); every per-seed figure is
in the JSON. Run from the repository root::

    .venv/bin/python bench/soup.py            # → bench/results/soup.json
    .venv/bin/python bench/soup.py --seeds 1 --epochs 1 --no-write   # a quick look
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

import _record
from synthdsl.library.merge_source import running_statistics
from synthdsl.library.merging import merge_tensor
from synthdsl.pipeline import compile_locked, check_spec
from synthdsl.train.data import DataSpec
from synthdsl.train.evaluate import evaluate
from synthdsl.train.preprocess import preprocess_for
from synthdsl.train.recipe import Recipe
from synthdsl.train.run import train, train_spec
from synthdsl.train.soup import soup

PRETRAIN = ("synth Pretrain\ninput image: [B, 3, 32, 32]\n"
            'source r = timm("test_resnet", num_classes=5)\nlogits = r(image)\n'
            "recipe epochs={epochs}, lr=0.003, batch_size=64, seed=0\noutput logits\n")
FINETUNE = ("synth Finetune\ninput image: [B, 3, 32, 32]\n"
            'source r = timm("test_resnet", num_classes=5, weights="trunk.safetensors")\n'
            "feats  = r.forward_head(r.forward_features(image), pre_logits=true)\n"
            "logits = Linear(feats, out=5)\n"
            "recipe epochs={epochs}, lr=0.003, batch_size=32\noutput logits\n")


def pretrain(folder: Path, epochs: int) -> None:
    spec = folder / "pretrain.synth"
    spec.write_text(PRETRAIN.format(epochs=epochs))
    result = train_spec(spec, "digits", None, classes=[0, 1, 2, 3, 4], eval_split="none")
    state = {k.removeprefix("r."): v.contiguous() for k, v in
             result.model.state_dict().items()}
    save_file(state, str(folder / "trunk.safetensors"))


def accuracy(model, data, preprocess) -> float:
    return float(evaluate(model, data, preprocess).rows[0].metrics.accuracy)


def task_merges(spec: Path, seed: int, epochs: int, lr: float) -> dict[str, float]:
    """A on 5-7, B on 8-9, from one start; each alone and merged, on the test of 5-9."""
    graph = check_spec(spec)
    model = compile_locked(graph, seed=seed)
    preprocess = preprocess_for(model)
    data = DataSpec("digits", (5, 6, 7, 8, 9))
    train_all = data.load("train", preprocess.size, preprocess.channels or 3)
    test = data.load("test", preprocess.size, preprocess.channels or 3)
    start = copy.deepcopy(model.state_dict())
    states = []
    for j, keep in enumerate(((0, 1, 2), (3, 4))):
        positions = torch.nonzero(torch.isin(train_all.targets, torch.tensor(keep))).flatten()
        part = train_all.subset(positions, name=f"digits {keep}")
        model.load_state_dict(start)
        recipe = Recipe.resolve(graph.graph.get("recipe"),
                                {"seed": seed + 10 + j, "lr": lr, "epochs": epochs})
        train(model, part, None, recipe=recipe, preprocess=preprocess)
        states.append(copy.deepcopy(model.state_dict()))

    def score(state) -> float:
        model.load_state_dict(state)
        return accuracy(model, test, preprocess)

    statistics = set(running_statistics(model))

    def merged(method: str, **options) -> dict:
        return {k: merge_tensor(method, k, start[k], [s[k] for s in states], options,
                                statistic=k in statistics) for k in start}

    return {"A (5-7) alone": score(states[0]), "B (8-9) alone": score(states[1]),
            "average": score({k: merge_tensor("linear", k, None, [s[k] for s in states], {})
                              for k in start}),
            "task arithmetic": score(merged("task_arithmetic")),
            "TIES (density 0.7)": score(merged("ties", density=0.7))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--variants", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=2, help="epochs of each fine-tuning")
    ap.add_argument("--pretrain-epochs", type=int, default=4)
    ap.add_argument("--lrs", default="0.003,0.001")
    ap.add_argument("--out", type=Path, default=_record.ROOT / "bench/results/soup.json")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    lrs = [float(v) for v in args.lrs.split(",")]
    per_seed: list[dict] = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        pretrain(folder, args.pretrain_epochs)
        spec = folder / "finetune.synth"
        spec.write_text(FINETUNE.format(epochs=args.epochs))
        for seed in range(args.seeds):
            s = soup(spec, "digits", variants=args.variants, seed=seed, lrs=lrs,
                     classes=[5, 6, 7, 8, 9])
            row = {"seed": seed,
                   "best single variant": s.scores["best"]["test"],
                   "uniform soup": s.scores["uniform"]["test"],
                   "greedy soup": s.scores["greedy"]["test"],
                   "greedy ingredients": len(s.greedy),
                   "variants": [v.record() for v in s.variants]}
            row.update(task_merges(spec, seed, args.epochs, lrs[0]))
            per_seed.append(row)
            print(f"seed {seed}: " + ", ".join(f"{k} {v:.3f}" for k, v in row.items()
                                                  if isinstance(v, float)), flush=True)
    keys = [k for k, v in per_seed[0].items() if isinstance(v, float)]
    summary = {}
    print(f"\n{'':24}{'test accuracy, mean ± std over ' + str(args.seeds) + ' seeds':>40}")
    for k in keys:
        vals = [r[k] for r in per_seed]
        mean = statistics.fmean(vals)
        std = statistics.stdev(vals) if len(vals) > 1 else 0.0
        summary[k] = {"mean": mean, "std": std, "min": min(vals), "max": max(vals)}
        print(f"{k:24}{mean:>30.3f} ± {std:.3f}   (min {min(vals):.3f}, max {max(vals):.3f})")
    report = {"benchmark": "soup", "environment": _record.environment(),
              "settings": {"seeds": args.seeds, "variants": args.variants,
                           "epochs": args.epochs, "pretrain_epochs": args.pretrain_epochs,
                           "lrs": lrs, "data": "digits 5-9 (trunk pretrained on 0-4)"},
              "summary": summary, "per_seed": per_seed,
              "seconds": round(time.perf_counter() - t0, 1)}
    if not args.no_write:
        _record.write_report(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
