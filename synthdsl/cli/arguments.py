"""The arguments of the commands that take many: eval, demo, compress."""

from __future__ import annotations

import argparse


def eval_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="TARGET", help="a .synth spec, a compiled .safetensors "
                   "artifact, a run folder of `synth train`, or one of its checkpoints")
    p.add_argument("--data", help="digits, mnist5k, a folder or an .npz (default: the run's)")
    p.add_argument("--classes", help="keep these classes, renumbered from 0 (default: the run's)")
    p.add_argument("--split", default="test", choices=("test", "train", "all"))
    p.add_argument("--weights", help="a state dict or compiled artifact to load into a spec")
    p.add_argument("--adapters", action="append", default=[], metavar="FILE",
                   help="LoRA adapters saved alone (synth train --save-adapters) to load "
                   "into the model's adapters of the same names (repeatable)")
    p.add_argument("--adapter", action="append", default=[], metavar="NAME[=WEIGHT]",
                   help="evaluate with only these adapters active, at these weights "
                   "(repeatable; default: every adapter, or the artifact's weights)")
    p.add_argument("--json", action="store_true", help="the report as JSON")
    p.add_argument("-o", "--output", metavar="DIR",
                   help="write metrics.json, report.txt and confusion PNGs here")
    p.add_argument("--plot", metavar="PNG", help="the first output's confusion matrix")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="cpu")


def demo_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", default="runs/demo", help="where everything is written "
                   "(default runs/demo)")
    p.add_argument("--seeds", type=int, default=5, help="seeds (default 5)")
    p.add_argument("--shots", type=int, default=20, help="labels per class of the new task "
                   "(default 20)")
    p.add_argument("--sweep", default="3,10", metavar="K,K,...",
                   help="also compare synthesised and scratch with these labels per class "
                   "(default 3,10; '' for none)")
    p.add_argument("--data", default="mnist5k", choices=("mnist5k", "digits"))
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: these models are too small to gain from "
                   "more, and a busy machine makes several threads wait on each other)")
    p.add_argument("--fresh", action="store_true", help="retrain the existing models even "
                   "if an earlier run left them")
    p.add_argument("--quick", action="store_true", help="a smoke test: one seed, one epoch "
                   "each; the numbers mean nothing")


def compress_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="the .synth spec, with prune(...) and/or quantize(...)")
    p.add_argument("--data", default="digits", help="digits (default), mnist5k, a folder or "
                   "an .npz: its train split trains, its test split measures")
    p.add_argument("--seeds", type=int, default=1, help="seeds (default 1)")
    p.add_argument("--epochs", type=int, help="epochs of the trained model (default: the "
                   "spec's recipe)")
    p.add_argument("--finetune-epochs", type=int, default=3, help="epochs of the pruned "
                   "model's and of quantisation-aware fine-tuning (default 3)")
    p.add_argument("--student", help="the student spec distilled from the trained model "
                   "(default: a built-in CNN of about 5k parameters)")
    p.add_argument("--student-epochs", type=int, default=10, help="(default 10)")
    p.add_argument("--modes", help="quantisation modes to measure, e.g. dynamic,static,qat "
                   "(default: the spec's quantize mode)")
    p.add_argument("--calibration", type=int, default=8, help="training batches that "
                   "calibrate static int8 (default 8)")
    p.add_argument("--threads", type=int, default=1, help="torch threads while timing "
                   "(default 1)")
    p.add_argument("--repeats", type=int, default=20, help="timed calls per model and batch "
                   "size (default 20)")
    p.add_argument("--report", help="write the report (every seed's figures) as JSON")
    p.add_argument("--save", metavar="DIR", help="write the first seed's models there as "
                   "artifacts: trained, pruned, int8-MODE, pruned-int8-MODE, student "
                   "(.safetensors; synth eval and load_compiled read them)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
