"""One compile builds each source at most twice (meta once, real once), traces it once per
mode, and opens each checkpoint at most twice; the plans the check makes are the ones the
compiler executes, and they leave what they read unchanged."""

from __future__ import annotations

import builtins
import copy
from collections import Counter
from pathlib import Path

import pytest
import timm
import torch
from torch import fx

import synthdsl
from synthdsl.build.compile import compile_graph, spec_shapes
from synthdsl.graph import build_graph
from synthdsl.lang.parse import parse_spec
from synthdsl.library import cuts, parts
from synthdsl.library.cache import sources_of
from synthdsl.library.sources import SOURCE_KINDS

MODELS = Path(__file__).resolve().parent.parent / "models"


@pytest.fixture
def counts(monkeypatch) -> Counter:
    """Every timm build (by architecture and device), fx trace (by class and mode),
    torchvision extractor or node listing, and opening of a checkpoint file."""
    seen: Counter = Counter()
    create = timm.create_model

    def counted_create(name, *args, **kwargs):
        device = "meta" if torch.empty(0).device.type == "meta" else "real"
        seen[("build", name, device)] += 1
        return create(name, *args, **kwargs)

    trace = fx.Tracer.trace

    def counted_trace(self, root, *args, **kwargs):
        seen[("trace", type(root).__name__, "train" if root.training else "eval")] += 1
        return trace(self, root, *args, **kwargs)

    import torchvision.models.feature_extraction as fe

    for name in ("create_feature_extractor", "get_graph_node_names"):
        original = getattr(fe, name)
        monkeypatch.setattr(fe, name, lambda *a, _n=name, _f=original, **k:
                            seen.update([("torchvision", _n)]) or _f(*a, **k))
    opener = builtins.open

    def counted_open(file, *args, **kwargs):
        if str(file).endswith((".pth", ".pt", ".safetensors")):
            seen[("open", Path(file).name)] += 1
        return opener(file, *args, **kwargs)

    load = torch.load

    def counted_load(f, *args, **kwargs):
        seen[("torch.load", Path(f).name)] += 1
        return load(f, *args, **kwargs)

    monkeypatch.setattr(timm, "create_model", counted_create)
    monkeypatch.setattr(fx.Tracer, "trace", counted_trace)
    monkeypatch.setattr(builtins, "open", counted_open)
    monkeypatch.setattr(torch, "load", counted_load)
    return seen


def test_truncated_trunk_builds_resnet50_twice_and_traces_once_per_mode(counts):
    model = synthdsl.compile_spec(MODELS / "truncated_trunk.synth", seed=0)
    assert counts[("build", "resnet50", "meta")] == 1
    assert counts[("build", "resnet50", "real")] == 1
    assert counts[("trace", "ResNet", "train")] == 1
    assert counts[("trace", "ResNet", "eval")] == 1
    assert not [k for k in counts if k[0] == "torchvision"]  # one trace serves every cut
    with torch.no_grad():
        out = model(*model.example_inputs(batch_size=2))
    assert tuple(out.shape) == (2, 10)


def test_foreign_checkpoint_is_opened_at_most_twice(counts):
    model = synthdsl.compile_spec(MODELS / "foreign_checkpoint.synth", seed=0)
    name = "foreign_test_resnet.pth"
    assert 1 <= counts[("open", name)] <= 2, counts
    assert counts[("torch.load", name)] == 1
    assert counts[("build", "test_resnet", "meta")] == 2  # two sources, each built once
    assert counts[("build", "test_resnet", "real")] == 2
    assert {v["file"] for k, v in model.provenance.items() if v["origin"] == "inherited"} \
        == {str(MODELS / "ckpt" / name)}


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    from safetensors.torch import save_file

    torch.manual_seed(1)
    state = timm.create_model("test_resnet", num_classes=10).state_dict()
    path = tmp_path / "r.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def _spec(ckpt: Path, part: str = 'r(x, at="layer1")') -> str:
    return (f'synth W input x: [B, 3, 32, 32] '
            f'source r = timm("test_resnet", num_classes=10, weights="{ckpt}") '
            f'y = {part} output y')


def test_a_checkpoint_source_is_built_on_meta_once_and_filled_in_place(checkpoint, counts):
    graph = synthdsl.check_spec(_spec(checkpoint))
    checked = sources_of(graph).built("r")
    model = compile_graph(graph)
    assert counts[("build", "test_resnet", "meta")] == 1
    assert counts[("build", "test_resnet", "real")] == 0
    # the header (for the check), the tensors (one handle for all), the sha256 (provenance)
    assert counts[("open", checkpoint.name)] == 3
    # the check's meta model is what was filled and installed
    assert model.r.get_submodule("conv1.0") is checked.conv1[0]
    assert checked.conv1[0].weight.device.type == "cpu"
    assert sources_of(graph).built("r") is None  # handed over: not given out again


def test_a_second_compile_of_one_graph_shares_nothing(checkpoint):
    graph = synthdsl.check_spec(_spec(checkpoint))
    first, second = compile_graph(graph), compile_graph(graph)
    for (k, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items()):
        assert a.data_ptr() != b.data_ptr(), k
        assert torch.equal(a, b), k


def test_compile_executes_the_plans_of_the_check(monkeypatch, checkpoint):
    graphs = [synthdsl.check_spec(_spec(checkpoint)),
              synthdsl.check_spec('synth S input x: [B, 3, 32, 32] source r = '
                                  'timm("test_resnet") source q = timm("test_resnet") '
                                  'a, b = r(x, stages=[1, 2]) c = q.conv1[0:2](x) '
                                  'output a, b, c')]
    for g in graphs:
        assert {type(p).__name__ for p in g.graph["plans"].values()} <= {
            "CutPlan", "StagesPlan", "ModulesPlan"}

    def refuse(*a, **k):
        raise AssertionError("compile planned a part again")

    monkeypatch.setattr(parts, "make_plan", refuse)
    monkeypatch.setattr(type(SOURCE_KINDS["timm"]), "plan", refuse)
    monkeypatch.setattr(cuts, "traces_of", refuse)
    for g in graphs:
        m = compile_graph(g, seed=0).eval()
        with torch.no_grad():
            m(*m.example_inputs(batch_size=1))


def _part_node(spec: str, name: str) -> dict:
    return build_graph(parse_spec(spec)).nodes[name]


@pytest.mark.parametrize("call", ['r(x, stages=[1])', 'r(x, at="layer1")', 'r.conv1[0:2](x)',
                                  'r.forward_features(x)'])
def test_plan_part_leaves_its_input_unchanged(call):
    node = _part_node(f'synth P input x: [B, 3, 32, 32] source r = timm("test_resnet") '
                      f'y = {call} output y', "y")
    before = copy.deepcopy(node)
    model = SOURCE_KINDS["timm"].build({"target": "test_resnet", "create_kwargs": {}}, "meta")
    modules = dict(model.named_modules())
    plan = parts.make_plan(model, node, exclusive=True)
    assert node == before
    assert dict(model.named_modules()) == modules  # making a plan changes no model
    part = plan.bind(model)
    assert node == before
    assert part.plan is plan and part.outputs == plan.outputs
    assert part.call(torch.empty(1, 3, 32, 32, device="meta")) is not None
    parts.plan_part(model, node)
    assert node == before


def test_fx_nodes_name_the_spec_line_and_shape():
    model = synthdsl.compile_spec("synth F\ninput x: [B, 3, 32, 32]\n"
                                  'source r = timm("test_resnet")\n'
                                  "a, b = r(x, stages=[1, 2])\n"
                                  "h = GlobalAvgPool(b) |> Linear(out=4)\n"
                                  "output h, a\n")
    shapes = spec_shapes(model)
    graph = model.graph
    assert shapes["x"] == ("B", 3, 32, 32)
    assert shapes["h.1"] == ("B", 4)
    assert shapes["a_b"] == (graph.nodes["a"]["shape"], graph.nodes["b"]["shape"])
    assert set(shapes) == {"x", "a_b", "h.0", "h.1"}
    lines = {n.meta["synth"]["node"]: n.meta["synth"]["line"]
             for n in model.graph_module.graph.nodes if "synth" in n.meta}
    assert lines["h.1"] == 5 and lines["x"] == 2
    nodes = [n for n in model.graph_module.graph.nodes if n.op != "output"]
    assert all("synth" in n.meta for n in nodes)  # the method's owner and the call too
    assert all(n.meta["synth"]["shape"] is not None for n in nodes if n.meta["synth"]["value"])
    assert {n.meta["stack_trace"] for n in nodes if n.meta["synth"]["node"] == "a_b"} == {
        'File "<spec>", line 4, in a_b\n    a, b = r(x, stages=[1, 2])'}


def test_the_plan_carries_each_value_dtype_into_the_fx_meta():
    model = synthdsl.compile_spec("synth D\ninput x: [B, 3, 32, 32]\n"
                                  'source r = timm("test_resnet")\n'
                                  "a, b = r(x, stages=[1, 2])\n"
                                  "h = GlobalAvgPool(b) |> Linear(out=4)\n"
                                  "output h, a\n")
    graph = model.graph
    assert graph.nodes["h.1"]["dtype"] == "float32"
    assert graph.nodes["a_b"]["dtypes"] == ("float32", "float32")
    values = [n for n in model.graph_module.graph.nodes
              if "synth" in n.meta and n.meta["synth"]["value"]]
    assert values and all(n.meta["synth"]["dtype"] == "float32" for n in values)
    assert graph.validate() == []


def test_a_runtime_error_names_the_spec_node_and_line():
    model = synthdsl.compile_spec("synth E\ninput x: [B, 8]\n"
                                  "h = Linear(x, out=4) |> ReLU\n"
                                  "y = Linear(h, out=2)\noutput y\n")
    with pytest.raises(RuntimeError) as e:
        model(torch.randn(2, 9))
    assert e.value.__notes__ == ["in the spec: 'h' (layer) at <spec>:3:5"]
    with pytest.raises(RuntimeError) as e:
        model.forward_train(torch.randn(2, 9))
    assert e.value.__notes__ == ["in the spec: 'h' (layer) at <spec>:3:5"]
