"""The built-in example: every spec in `models/`, checked, summarised, compiled and run,
then one training step that shows frozen really is frozen."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from synthdsl.check import fmt_shape
from synthdsl.errors import render_all, SynthError
from synthdsl.pipeline import check_spec, compile_graph
from synthdsl.summary import render_summary


def _frozen_step(model) -> tuple[int, int, int, int]:
    """One SGD step in train mode; counts of (frozen unchanged, frozen total,
    trainable changed, trainable total) over parameters and buffers."""
    before = {k: v.clone() for k, v in model.state_dict().items()}
    frozen = set(model.graph.graph["frozen"])
    opt = torch.optim.SGD(model.param_groups(base_lr=0.1), lr=0.1)
    model.train()
    out = model(*model.example_inputs(batch_size=4))
    out = out if isinstance(out, torch.Tensor) else next(iter(out.values()))
    out.float().pow(2).mean().backward()
    opt.step()
    after = model.state_dict()
    same = sum(torch.equal(before[k], after[k]) for k in before if k in frozen)
    trainable = [k for k, p in model.named_parameters() if p.requires_grad]
    changed = sum(not torch.equal(before[k], after[k]) for k in trainable)
    return same, sum(k in frozen for k in before), changed, len(trainable)


def run_demo(models: Path) -> int:
    specs = sorted(models.glob("*.synth"))
    if not specs:
        print(f"no .synth files in {models}")
        return 1
    failures = 0
    for path in specs:
        print("=" * 78)
        try:
            graph = check_spec(path)
            print(render_summary(graph))
            t0 = time.perf_counter()
            model = compile_graph(graph, seed=0)
            t1 = time.perf_counter()
            with torch.no_grad():
                out = model.eval()(*model.example_inputs(batch_size=2))
            outs = out if isinstance(out, dict) else {model.output_names[0]: out}
            shapes = ", ".join(f"{k} {fmt_shape(v.shape)}" for k, v in outs.items())
            print(f"\ncompiled in {t1 - t0:.1f}s; forward on example inputs: {shapes}")
            same, n_frozen, changed, n_train = _frozen_step(model)
            print(f"one training step: {same}/{n_frozen} frozen tensors unchanged, "
                  f"{changed}/{n_train} trainable parameters changed")
            if same != n_frozen:
                failures += 1
        except SynthError as e:
            failures += 1
            print(render_all(e, path.read_text("utf-8")))
    print("=" * 78)
    print(f"{len(specs) - failures}/{len(specs)} example specs compiled and ran")
    return 0 if failures == 0 else 1
