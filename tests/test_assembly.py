"""The assembly language: slices, stages, cuts, sharing, ensembles, composition, policies."""

from __future__ import annotations

import json

import pytest
import timm
import torch
from torchvision.models.feature_extraction import create_feature_extractor

import synthdsl
from synthdsl import SynthError
from synthdsl.cli import run
from synthdsl.library.cuts import _concrete_args, _fx_tracer_kwargs
from tests.conftest import randomize_, save_checkpoint


def errors_of(text: str) -> list[str]:
    g = synthdsl.check_spec(text, raise_errors=False)
    return [e.code for e in g.graph["errors"]]


@pytest.fixture(scope="module")
def r18(tmp_path_factory):
    model = randomize_(timm.create_model("resnet18", num_classes=10)).eval()
    return model, save_checkpoint(model, tmp_path_factory.mktemp("w") / "r18.safetensors")


def test_slices_and_items_equal_the_sequence(r18):
    model, ckpt = r18
    m = synthdsl.compile_spec(f"""synth S
        input x: [B, 3, 32, 32]
        source r = timm("resnet18", num_classes=10, weights="{ckpt}")
        a = r.layer1[0:1](r.maxpool(r.act1(r.bn1(r.conv1(x)))))
        b = r.layer1[-1](a) |> r.layer2[:]
        output b""").eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = model.layer2(model.layer1(model.maxpool(model.act1(model.bn1(model.conv1(x))))))
        assert torch.equal(m(x), ref)
    assert not any(k.startswith(("r.fc", "r.layer3")) for k in m.state_dict())
    assert "r.layer1.1.conv1.weight" in m.state_dict()


def test_stages_equal_timm_features_only(r18):
    model, ckpt = r18
    m = synthdsl.compile_spec(f"""synth S
        input x: [B, 3, 64, 64]
        source r = timm("resnet18", num_classes=10, weights="{ckpt}")
        s1, s2, s4 = r(x, stages=[1, 2, -1])
        output s1, s2, s4""").eval()
    fo = timm.create_model("resnet18", features_only=True, out_indices=(1, 2, 4))
    fo.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("fc.")})
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out, ref = m(x), fo.eval()(x)
    for name, r in zip(["s1", "s2", "s4"], ref):
        assert torch.equal(out[name], r), name
    assert not any(k.startswith("r.fc") for k in m.state_dict())  # pruned with the head


def test_cut_at_internal_node_equals_torchvision_extractor(r18):
    model, ckpt = r18
    m = synthdsl.compile_spec(f"""synth S
        input x: [B, 3, 32, 32]
        source r = timm("resnet18", num_classes=10, weights="{ckpt}")
        y = r(x, at="layer3.0.add")
        output y""").eval()
    ex = create_feature_extractor(model, ["layer3.0.add"], tracer_kwargs=_fx_tracer_kwargs(),
                                  concrete_args=_concrete_args(model) or None).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(m(x), ex(x)["layer3.0.add"])
    keys = list(m.state_dict())
    assert "r.layer3.0.conv2.weight" in keys and not any("layer4" in k for k in keys)


def test_sharing_is_explicit_and_real():
    m = synthdsl.compile_spec("""synth S
        input a: [B, 8]
        input b: [B, 8]
        pa = Linear(a, out=4)
        pb = pa(b)
        y = add(pa, pb)
        output y""", seed=0)
    assert [n for n, _ in m.named_parameters()] == ["pa.weight", "pa.bias"]
    a, b = m.example_inputs()
    y = m(a, b)
    lin = m.get_submodule("pa")
    assert torch.allclose(y, lin(a) + lin(b))
    assert errors_of("""synth S
        input a: [B, 3, 32, 32]
        source r = timm("resnet18")
        x = r.layer1(r.conv1(a))
        y = r.conv1(a)
        output x, y""") == ["S109"]


def test_applying_a_part_again_shares_the_module(r18):
    _, ckpt = r18
    m = synthdsl.compile_spec(f"""synth Siamese
        input l: [B, 3, 32, 32]
        input r: [B, 3, 32, 32]
        source net = timm("resnet18", num_classes=10, weights="{ckpt}")
        fl = net(l)
        fr = fl(r)
        d = add(fl, fr)
        output d""")
    assert m.code.count("self.net(") == 2
    assert sum(p.numel() for p in m.parameters()) == 11181642


def test_ops_shape_rules():
    g = synthdsl.check_spec("""synth S
        input x: [B, 4, 8, 8]
        input t: [B, 5, 16]
        s = stack(x, x, dim=1)
        r = reshape(x, shape=[4, -1])
        c = select(t, dim=1, index=0)
        z = resize(x, size=[16, 16])
        h = resize(x, scale=0.5, mode="nearest")
        m = multiply(x, x) |> Identity
        k = max(x, x)
        output s, r, c, z, h, m, k""")
    shapes = {n: g.nodes[n]["shape"] for n in ("s", "r", "c", "z", "h", "k")}
    assert shapes == {"s": ("B", 2, 4, 8, 8), "r": ("B", 4, 64), "c": ("B", 16),
                      "z": ("B", 4, 16, 16), "h": ("B", 4, 4, 4), "k": ("B", 4, 8, 8)}
    bad = """synth S
        input x: [B, 4, 8, 8]
        a = reshape(x, shape=[5, -1])
        b = select(x, dim=1, index=4)
        c = resize(x)
        d = multiply(x, select(x, dim=1, index=0))
        e = reshape(x)
        output a, b, c, d, e"""
    assert errors_of(bad) == ["S301", "S301", "S301", "S301", "S402"]


def test_ensemble_modes():
    m = synthdsl.compile_spec("""synth E
        input a: [B, 3]
        input b: [B, 3]
        input c: [B, 3]
        mean = Ensemble(a, b, c)
        w = Ensemble(a, b, c, mode="weighted", weights=[1, 1, 2])
        v = Ensemble(a, b, c, mode="vote")
        output mean, w, v""")
    a = torch.tensor([[1.0, 0.0, 0.0]])
    b = torch.tensor([[0.0, 1.0, 0.0]])
    c = torch.tensor([[0.9, 0.0, 0.2]])
    out = m(a, b, c)
    assert torch.allclose(out["mean"], (a + b + c) / 3)
    assert torch.allclose(out["w"], 0.25 * a + 0.25 * b + 0.5 * c)
    assert out["v"].argmax(-1).item() == 0  # two of three members vote class 0
    assert errors_of("""synth E
        input a: [B, 3]
        input b: [B, 4]
        e = Ensemble(a, b)
        output e""") == ["S301"]


def test_learnable_ensemble_weights_train():
    m = synthdsl.compile_spec("""synth E
        input a: [B, 3]
        input b: [B, 3]
        w = Ensemble(a, b, mode="weighted", learnable=true)
        output w""")
    assert [n for n, _ in m.named_trainable_parameters()] == ["w.logits"]


def test_specs_compose(tmp_path):
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "enc.synth").write_text("""synth Enc
        input x: [B, 8]
        h = Linear(x, out=4)
        g = Linear(x, out=3)
        freeze h
        output h, g""")
    (tmp_path / "top.synth").write_text("""synth Top
        input x: [B, 8]
        source enc = spec("lib/enc.synth")
        a, b = enc(x)
        y = concat(a, b) |> Linear(out=2)
        train enc.h.bias
        output y""")
    m = synthdsl.compile_spec(tmp_path / "top.synth", seed=0)
    assert m(*m.example_inputs()).shape == (2, 2)
    assert set(m.graph.graph["frozen"]) == {"enc.h.weight"}
    assert "enc.g.weight" in m.state_dict()
    (tmp_path / "lib" / "enc.synth").write_text(
        'synth Enc input x: [B, 8] source t = spec("../top.synth") y = t(x) output y')
    with pytest.raises(SynthError) as e:
        synthdsl.check_spec(tmp_path / "top.synth")
    assert e.value.code == "S110"
    assert "'top.synth' → 'enc.synth' → 'top.synth'" in e.value.message


def test_spec_input_shapes_are_checked(tmp_path):
    (tmp_path / "enc.synth").write_text("synth Enc input x: [B, 8] y = ReLU(x) output y")
    assert errors_of(f"""synth Top
        input x: [B, 9]
        source enc = spec("{tmp_path / 'enc.synth'}")
        y = enc(x)
        output y""") == ["S301"]


def test_stage_patterns_and_node_patterns():
    g = synthdsl.check_spec("""synth S
        input x: [B, 3, 64, 64]
        source r = timm("resnet18", num_classes=0)
        f = r(x)
        head = Linear(f, out=3)
        freeze r
        train r@stage4 with lr_mult=0.1
        freeze head
        output head""")
    frozen = set(g.graph["frozen"])
    assert "head.weight" in frozen and "r.layer3.0.conv1.weight" in frozen
    assert "r.layer4.0.conv1.weight" not in frozen
    assert g.graph["param_options"]["r.layer4.1.bn2.weight"] == {"lr_mult": 0.1}
    assert errors_of("""synth S
        input x: [B, 3, 64, 64]
        source r = timm("resnet18", num_classes=0)
        f = r(x)
        freeze r@stage9
        output f""") == ["S401"]


@pytest.mark.parametrize("policy,frozen_bn_trains", [("follow", False), ("train", True)])
def test_norm_policy(policy, frozen_bn_trains):
    m = synthdsl.compile_spec(f"""synth S
        input x: [B, 3, 32, 32]
        source r = timm("resnet18", num_classes=0)
        f = r(x)
        y = Linear(f, out=2)
        freeze r
        policy norm = "{policy}"
        output y""", seed=0)
    m.train()
    assert m.get_submodule("r.bn1").training is frozen_bn_trains
    before = m.get_submodule("r.bn1").running_mean.clone()
    m(torch.randn(4, 3, 32, 32))
    changed = not torch.equal(before, m.get_submodule("r.bn1").running_mean)
    assert changed is frozen_bn_trains
    assert not m.get_submodule("r.bn1").weight.requires_grad


def test_norm_policy_frozen_freezes_every_norm():
    m = synthdsl.compile_spec("""synth S
        input x: [B, 3, 32, 32]
        source r = timm("resnet18", num_classes=0)
        f = r(x)
        y = LayerNorm(f) |> Linear(out=2)
        policy norm = "frozen"
        output y""", seed=0)
    frozen = {n for n, p in m.named_parameters() if not p.requires_grad}
    assert "y.0.weight" in frozen and "r.layer4.1.bn2.weight" in frozen
    assert "r.layer4.1.conv2.weight" not in frozen
    m.train()
    assert not m.get_submodule("r.layer2.0.bn1").training
    assert errors_of('synth S input x: [B, 2] y = ReLU(x) policy norm = "thaw" output y') == [
        "S402"]


def test_all_independent_problems_at_once_as_json(tmp_path, capsys):
    spec = tmp_path / "many.synth"
    spec.write_text("""synth Many
        input x: [B, 3, 32, 32]
        source r = timm("resnet18", num_classes=0)
        a = r(x, stage=9)
        b = concat(GlobalAvgPool(x), r.layer4(x))
        c = Linear(x, outt=3)
        freeze nothing_here
        output a, b, c""")
    assert run(["check", str(spec), "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    codes = [(d["code"], d["span"]["line"]) for d in data["diagnostics"]]
    assert codes == [("S202", 4), ("S301", 5), ("S402", 6), ("S401", 7)]


def test_synth_nodes_lists_cut_points(capsys):
    assert run(["nodes", "resnet18", "--input", "3", "64", "64"]) == 0
    out = capsys.readouterr().out
    assert "layer3.0.add" in out and "[B, 256, 4, 4]" in out
    assert "<- stage 3 (layer3)" in out
