"""Every example in models/ checks, compiles and runs, so the examples never rot."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import synthdsl
from tests.conftest import spec_params

MODELS = sorted((Path(__file__).resolve().parent.parent / "models").glob("*.synth"))


def test_there_are_examples():
    names = {p.name for p in MODELS}
    assert {"fusion_vgg_mobilenet.synth", "transfer_resnet18.synth",
            "whole_resnet18.synth"} <= names


@pytest.mark.parametrize("path", spec_params(MODELS))
def test_example_compiles_and_runs(path: Path):
    graph = synthdsl.check_spec(path)
    assert not graph.graph["errors"]
    assert not graph.graph["warnings"], [str(w) for w in graph.graph["warnings"]]
    model = synthdsl.compile_graph(graph, seed=0).eval()
    inputs = model.example_inputs(batch_size=2)
    with torch.no_grad():
        out = model(*inputs)
    outs = out if isinstance(out, dict) else {model.output_names[0]: out}
    for name, y in outs.items():
        node = graph.nodes[f"output:{name}"]
        expect = tuple(2 if d == "B" else d for d in node["shape"])
        assert tuple(y.shape) == expect, name
        assert torch.isfinite(y).all()
    # what check predicted is what compile built
    totals = model.parameter_totals()
    from synthdsl.viz.summary import totals as graph_totals
    assert graph_totals(graph) == totals
