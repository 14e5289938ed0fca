"""Does `synth rank` choose the starting point fine-tuning would? Rank correlation over seeds.

Trunks are "pretrained" first: timm's ``test_resnet`` and ``test_efficientnet`` trained
on digits 0-4 of scikit-learn's 8x8 digits (resized to 32x32), saved as safetensors in a
temporary folder. The candidates are starting points for digits 5-9 with 10 labelled
images per class — the pretrained ResNet cut after stage 1, 2 or 3 or whole, the
pretrained EfficientNet whole, both architectures with random weights, and the pixels
themselves — each under a new 5-class head::

    source r = timm("test_resnet", num_classes=0, weights="resnet.safetensors")
    feats  = r(image, stage=2) |> GlobalAvgPool
    logits = Linear(feats, out=5)

For each seed (the 10-shot subset, the head's initialisation, the training order):

* ``synth rank``'s scores of each candidate's frozen ``feats`` on the 50 labelled images
  (LogME; kNN and a linear probe scored on the test split);
* each candidate fine-tuned end to end on those 50 images (``--epochs``, AdamW), then its
  test accuracy on all of 5-9;
* Spearman's ρ and Kendall's τ between each score and the fine-tuned accuracy over the
  candidates, and whether the top-ranked candidate is the best fine-tuned one.

Mean ± standard deviation over ``--seeds`` seeds (default 5); every per-seed figure is in
the JSON. Run from the repository root::

    .venv/bin/python bench/rank.py            # → bench/results/rank.json
    .venv/bin/python bench/rank.py --seeds 1 --epochs 5 --no-write   # a quick look
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

import _record
from synthdsl.pipeline import check_spec, compile_locked
from synthdsl.train.data import DataSpec
from synthdsl.train.evaluate import evaluate
from synthdsl.train.predict import predict_values
from synthdsl.train.preprocess import preprocess_for
from synthdsl.train.rank import knn_accuracy, logme, probe_accuracy
from synthdsl.train.run import train_spec

CLASSES = (5, 6, 7, 8, 9)
PRETRAIN = ("synth Pretrain\ninput image: [B, 3, 32, 32]\n"
            'source r = timm("{arch}", num_classes=5)\nlogits = r(image)\n'
            "recipe epochs={epochs}, lr=0.003, batch_size=64, seed=0\noutput logits\n")
HEAD = ("logits = Linear(feats, out=5)\nloss ce(logits)\n"
        "recipe epochs={epochs}, lr=0.001, batch_size=16, weight_decay=0.01\n"
        "output logits, feats\n")


def candidates() -> dict[str, str]:
    """Each candidate's spec body (before its head)."""
    def trunk(arch: str, weights: bool, part: str) -> str:
        w = f', weights="{arch}.safetensors"' if weights else ""
        return (f'source r = timm("{arch}", num_classes=0{w})\n'
                f"feats = {part}\n")

    pool = "|> GlobalAvgPool"
    return {
        "resnet, pretrained, stage 1": trunk("test_resnet", True, f"r(image, stage=1) {pool}"),
        "resnet, pretrained, stage 2": trunk("test_resnet", True, f"r(image, stage=2) {pool}"),
        "resnet, pretrained, stage 3": trunk("test_resnet", True, f"r(image, stage=3) {pool}"),
        "resnet, pretrained, whole": trunk("test_resnet", True, "r(image)"),
        "resnet, random": trunk("test_resnet", False, "r(image)"),
        "efficientnet, pretrained": trunk("test_efficientnet", True, "r(image)"),
        "efficientnet, random": trunk("test_efficientnet", False, "r(image)"),
        "pixels": "feats = reshape(image, shape=[3072])\n",
    }


def pretrain(folder: Path, arch: str, epochs: int) -> None:
    spec = folder / f"pretrain_{arch}.synth"
    spec.write_text(PRETRAIN.format(arch=arch, epochs=epochs))
    result = train_spec(spec, "digits", None, classes=[0, 1, 2, 3, 4], eval_split="none")
    state = {k.removeprefix("r."): v.contiguous() for k, v in result.model.state_dict().items()
             if not k.startswith("r.fc.") and not k.startswith("r.classifier.")}
    save_file(state, str(folder / f"{arch}.safetensors"))


def spearman(a: list[float], b: list[float]) -> float:
    def ranks(v):
        order = sorted(range(len(v)), key=lambda i: v[i])
        r = [0.0] * len(v)
        i = 0
        while i < len(v):
            j = i
            while j + 1 < len(v) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for k in range(i, j + 1):
                r[order[k]] = (i + j) / 2
            i = j + 1
        return r
    ra, rb = ranks(a), ranks(b)
    ma, mb = statistics.fmean(ra), statistics.fmean(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    sa = sum((x - ma) ** 2 for x in ra) ** 0.5
    sb = sum((y - mb) ** 2 for y in rb) ** 0.5
    return cov / (sa * sb) if sa and sb else 0.0


def kendall(a: list[float], b: list[float]) -> float:
    """Kendall's tau-a: (concordant - discordant pairs) / all pairs."""
    pairs = [(i, j) for i in range(len(a)) for j in range(i + 1, len(a))]
    signs = [(a[i] - a[j]) * (b[i] - b[j]) for i, j in pairs]
    return (sum(s > 0 for s in signs) - sum(s < 0 for s in signs)) / len(pairs)


def one_seed(folder: Path, seed: int, shots: int, epochs: int) -> dict:
    rows = {}
    for i, (name, body) in enumerate(candidates().items()):
        spec = folder / f"candidate_{i}.synth"
        spec.write_text("synth Candidate\ninput image: [B, 3, 32, 32]\n" + body
                        + HEAD.format(epochs=epochs))
        model = compile_locked(check_spec(spec), seed=seed)
        pre = preprocess_for(model)
        data = DataSpec("digits", CLASSES, shots, seed)
        train = data.load("train", pre.size, pre.channels or 3)
        test = DataSpec("digits", CLASSES).load("test", pre.size, pre.channels or 3)
        t0 = time.perf_counter()
        ftr = predict_values(model, train, pre, names=["feats"])["feats"]
        fte = predict_values(model, test, pre, names=["feats"])["feats"]
        ytr, yte = train.targets.long(), test.targets.long()
        scores = {"logme": logme(ftr, ytr), "knn": knn_accuracy(ftr, ytr, fte, yte),
                  "probe": probe_accuracy(ftr, ytr, fte, yte),
                  "rank seconds": time.perf_counter() - t0}
        t0 = time.perf_counter()
        result = train_spec(spec, "digits", None, classes=list(CLASSES), shots=shots,
                            shots_seed=seed, recipe={"seed": seed}, eval_split="none")
        report = evaluate(result.model, test, pre)
        scores["fine-tuned"] = float(next(r for r in report.rows
                                          if r.name == "logits").metrics.accuracy)
        scores["fine-tune seconds"] = time.perf_counter() - t0
        rows[name] = scores
        print(f"  seed {seed} {name:30} " + "  ".join(
            f"{k} {v:.3f}" for k, v in scores.items()), flush=True)
    tuned = [r["fine-tuned"] for r in rows.values()]
    agreement = {}
    for key in ("logme", "knn", "probe"):
        vals = [r[key] for r in rows.values()]
        top = max(rows, key=lambda n: rows[n][key])
        agreement[key] = {"spearman": spearman(vals, tuned), "kendall": kendall(vals, tuned),
                          "top is best fine-tuned": rows[top]["fine-tuned"] == max(tuned),
                          "fine-tuned accuracy of its top": rows[top]["fine-tuned"]}
    return {"seed": seed, "candidates": rows, "agreement": agreement,
            "best fine-tuned": max(tuned)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--shots", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=30, help="epochs of each fine-tuning")
    ap.add_argument("--pretrain-epochs", type=int, default=4)
    ap.add_argument("--out", type=Path, default=_record.ROOT / "bench/results/rank.json")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    t0 = time.perf_counter()
    per_seed = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for arch in ("test_resnet", "test_efficientnet"):
            pretrain(folder, arch, args.pretrain_epochs)
        for seed in range(args.seeds):
            per_seed.append(one_seed(folder, seed, args.shots, args.epochs))
    summary = {}
    print(f"\nagreement with fine-tuned accuracy over {len(candidates())} "
          f"candidates, mean ± std over {args.seeds} seeds")
    for key in ("logme", "knn", "probe"):
        rho = [s["agreement"][key]["spearman"] for s in per_seed]
        tau = [s["agreement"][key]["kendall"] for s in per_seed]
        hits = sum(s["agreement"][key]["top is best fine-tuned"] for s in per_seed)
        summary[key] = {"spearman": _ms(rho), "kendall": _ms(tau), "top hits": hits}
        print(f"  {key:6}  Spearman {summary[key]['spearman']['mean']:.2f} ± "
              f"{summary[key]['spearman']['std']:.2f}   Kendall "
              f"{summary[key]['kendall']['mean']:.2f} ± {summary[key]['kendall']['std']:.2f}"
              f"   top candidate best fine-tuned in {hits}/{args.seeds} seeds")
    names = list(per_seed[0]["candidates"])
    summary["candidates"] = {n: {k: _ms([s["candidates"][n][k] for s in per_seed])
                                 for k in ("logme", "knn", "probe", "fine-tuned",
                                           "rank seconds", "fine-tune seconds")}
                             for n in names}
    for n in names:
        c = summary["candidates"][n]
        print(f"  {n:30} LogME {c['logme']['mean']:+.3f}  fine-tuned "
              f"{c['fine-tuned']['mean']:.3f} ± {c['fine-tuned']['std']:.3f}  "
              f"rank {c['rank seconds']['mean']:.1f} s, fine-tune "
              f"{c['fine-tune seconds']['mean']:.1f} s")
    report = {"benchmark": "rank", "environment": _record.environment(),
              "settings": {"seeds": args.seeds, "shots": args.shots, "epochs": args.epochs,
                           "pretrain_epochs": args.pretrain_epochs,
                           "data": "digits 5-9, 10 labelled per class (trunks pretrained "
                                   "on 0-4)"},
              "summary": summary, "per_seed": per_seed,
              "seconds": round(time.perf_counter() - t0, 1)}
    if not args.no_write:
        _record.write_report(report, args.out)
    return 0


def _ms(vals: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(vals),
            "std": statistics.stdev(vals) if len(vals) > 1 else 0.0}


if __name__ == "__main__":
    sys.exit(main())
