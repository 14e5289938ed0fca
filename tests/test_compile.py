"""The compiled module: equivalence with timm, frozen means frozen, what the module knows."""

from __future__ import annotations

import copy
import inspect
import pickle

import pytest
import timm
import torch
from safetensors.torch import load_file
from torch import fx

import synthdsl
from synthdsl import SynthError
from tests.conftest import randomize_, save_checkpoint


def _whole(arch: str, ckpt, size: int = 64, **kwargs) -> str:
    extra = "".join(f", {k}={v}" for k, v in kwargs.items())
    return (f'synth Whole\ninput image: [B, 3, {size}, {size}]\n'
            f'source net = timm("{arch}"{extra}, weights="{ckpt}")\n'
            "y = net(image)\noutput y\n")


# ---- a whole timm model, and nothing else, is that timm model -----------------


def test_whole_models_equal_timm_bitwise(tmp_path):
    cases = [("resnet18", 64, {"num_classes": 10}), ("test_vit", 160, {}),
             ("test_efficientnet", 160, {}), ("test_convnext", 160, {}),
             ("mobilenetv3_small_050", 64, {"num_classes": 7})]
    for arch, size, kwargs in cases:
        ref = randomize_(timm.create_model(arch, **kwargs)).eval()
        ckpt = save_checkpoint(ref, tmp_path / f"{arch}.safetensors")
        model = synthdsl.compile_spec(_whole(arch, ckpt, size, **kwargs)).eval()
        x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            assert torch.equal(model(x), ref(x)), arch
        assert set(model.state_dict()) == {f"net.{k}" for k in ref.state_dict()}


def test_whole_model_from_a_checkpoint_predicts_as_timm_does(resnet_weights, digits):
    model = synthdsl.compile_spec(_whole("test_resnet", resnet_weights, 32,
                                         num_classes=10)).eval()
    ref = timm.create_model("test_resnet", num_classes=10)
    ref.load_state_dict(load_file(str(resnet_weights)))  # from the file, not from the model
    _, (xte, yte) = digits
    with torch.no_grad():
        assert torch.equal(model(xte[:64]), ref.eval()(xte[:64]))
        predicted = model(xte).argmax(1)
        assert len(set(predicted.tolist())) > 1  # the weights make a classifier, not a constant
        acc = (ref(xte).argmax(1) == yte).float().mean().item()
        assert (predicted == yte).float().mean().item() == acc


def test_pt_checkpoint_is_read_with_weights_only(tmp_path):
    ref = randomize_(timm.create_model("test_resnet")).eval()
    path = tmp_path / "r.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in ref.state_dict().items()}}, path)
    model = synthdsl.compile_spec(_whole("test_resnet", path, 64)).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), ref(x))


def test_checkpoint_that_does_not_fit_is_an_error_before_loading(tmp_path):
    ref = timm.create_model("resnet18", num_classes=5)
    ckpt = save_checkpoint(ref, tmp_path / "r5.safetensors")
    try:
        synthdsl.check_spec(_whole("resnet18", ckpt, 64, num_classes=10))
    except SynthError as e:
        assert e.code == "S205"
        assert any("'fc.weight' has shape [5, 512]" in n and "[10, 512]" in n for n in e.notes)
        assert e.span.line == 3
    else:
        raise AssertionError("a mismatched checkpoint must not check")


# ---- frozen means frozen ----------------------------------------------------------


SPEC = """
synth Transfer
input image: [B, 3, 32, 32]
source r18 = timm("resnet18", num_classes=0, weights="{ckpt}")
feats  = r18(image)
hidden = Linear(feats, out=32) |> BatchNorm1d |> ReLU
logits = Linear(hidden, out=10)
freeze r18
train  r18.layer4 with lr_mult=0.1
freeze r18.layer4.1.bn2
output logits
"""


def _transfer(tmp_path):
    trunk = randomize_(timm.create_model("resnet18", num_classes=0))
    ckpt = save_checkpoint(trunk, tmp_path / "trunk.safetensors")
    return synthdsl.compile_spec(SPEC.format(ckpt=ckpt), seed=0)


def test_optimizer_step_changes_only_trainable_tensors(tmp_path):
    model = _transfer(tmp_path)
    frozen = set(model.graph.graph["frozen"])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD(model.param_groups(base_lr=0.5), lr=0.5, momentum=0.9)
    model.train()
    for _ in range(2):
        x = torch.randn(8, 3, 32, 32)
        loss = torch.nn.functional.cross_entropy(model(x), torch.randint(0, 10, (8,)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = model.state_dict()
    assert frozen, "the spec freezes something"
    for k in frozen:
        assert torch.equal(before[k], after[k]), f"frozen tensor {k} changed"
    trainable = dict(model.named_trainable_parameters())
    for k in trainable:
        assert not torch.equal(before[k], after[k]), f"trainable parameter {k} did not change"
    # running statistics of trainable normalisation layers do move
    assert not torch.equal(before["r18.layer4.0.bn1.running_mean"],
                           after["r18.layer4.0.bn1.running_mean"])
    assert not torch.equal(before["hidden.1.running_mean"], after["hidden.1.running_mean"])


def test_frozen_sets_and_norm_policy(tmp_path):
    model = _transfer(tmp_path)
    names = {n for n, _ in model.named_parameters()}
    trainable = {n for n, _ in model.named_trainable_parameters()}
    assert trainable == {n for n in names if n.startswith(("r18.layer4.", "hidden.", "logits."))
                         and not n.startswith("r18.layer4.1.bn2.")}
    assert {id(p) for p in model.trainable_parameters()} == {
        id(p) for n, p in model.named_parameters() if n in trainable}
    assert {id(p) for p in model.frozen_parameters()} == {
        id(p) for n, p in model.named_parameters() if n not in trainable}
    assert all(not p.requires_grad for p in model.frozen_parameters())
    model.train()
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            frozen = not name.startswith("r18.layer4.") or name == "r18.layer4.1.bn2"
            assert m.training is (not frozen), name
            assert (name in model.frozen_norm_layers) is frozen
    assert model.get_submodule("hidden.1").training


def test_param_groups_carry_lr_multipliers(tmp_path):
    model = _transfer(tmp_path)
    groups = model.param_groups(base_lr=1.0, weight_decay=0.05)
    by_lr = {g["lr"]: g for g in groups}
    assert set(by_lr) == {1.0, 0.1}
    assert all(n.startswith("r18.layer4.") for n in by_lr[0.1]["names"])
    assert all(not n.startswith("r18.") for n in by_lr[1.0]["names"])
    assert sum(len(g["params"]) for g in groups) == len(model.trainable_parameters())


def test_parameter_report_adds_up(tmp_path):
    model = _transfer(tmp_path)
    rows = {r.node: r for r in model.parameter_report()}
    assert rows["feats"].state == "partial"
    assert rows["logits"].state == "trainable" and rows["logits"].params == 32 * 10 + 10
    totals = model.parameter_totals()
    assert sum(r.params for r in rows.values()) == totals["params"]
    assert sum(r.frozen for r in rows.values()) == totals["frozen"]


# ---- what the module knows about itself --------------------------------------------


def test_module_knows_itself(tmp_path):
    model = _transfer(tmp_path)
    assert isinstance(model, torch.nn.Module)
    assert isinstance(model.graph_module, fx.GraphModule)
    model.graph_module.graph.lint()
    assert model.graph.nodes["logits"]["shape"] == ("B", 10)
    assert "synth Transfer" in model.spec
    (x,) = model.example_inputs(batch_size=5)
    assert x.shape == (5, 3, 32, 32)
    assert model.eval()(x).shape == (5, 10)
    assert "self.r18(image)" in model.code
    keys = list(model.state_dict())
    assert "r18.conv1.weight" in keys and "hidden.0.weight" in keys and "logits.bias" in keys
    spans = [n.meta["synth"]["span"] for n in model.graph_module.graph.nodes if "synth" in n.meta]
    assert any(s.endswith(":7:10") for s in spans)  # `logits = Linear(...)` at line 7


def test_vgg_part_has_readable_keys():
    model = synthdsl.compile_spec("""
        synth Parts
        input image: [B, 3, 32, 32]
        source vgg = timm("vgg11")
        a = vgg.features(image)
        y = GlobalAvgPool(a) |> Linear(out=3)
        freeze vgg
        output y""", seed=0)
    keys = list(model.state_dict())
    assert keys[0] == "vgg.features.0.weight"
    assert not any(k.startswith("vgg.pre_logits") or k.startswith("vgg.head") for k in keys)
    assert model.eval()(*model.example_inputs()).shape == (2, 3)


def test_forward_features_and_multiple_outputs():
    model = synthdsl.compile_spec("""
        synth Two
        input image: [B, 3, 64, 64]
        source net = timm("test_efficientnet")
        f = net.forward_features(image)
        pooled = GlobalAvgPool(f)
        logits = net.forward_head(f)
        both = concat(pooled, logits)
        output logits, both
        """, seed=0).eval()
    ref = timm.create_model("test_efficientnet").eval()
    ref.load_state_dict({k.removeprefix("net."): v for k, v in model.state_dict().items()})
    x = model.example_inputs()[0]
    with torch.no_grad():
        out = model(x)
        assert set(out) == {"logits", "both"}
        assert torch.equal(out["logits"], ref(x))
        assert out["both"].shape == (2, ref.num_features + ref.num_classes)


def test_torch_export_and_compile_friendly():
    model = synthdsl.compile_spec(
        "synth E input x: [B, 8] h = Linear(x, out=4) |> ReLU y = add(h, h) output y",
        seed=0).eval()
    (x,) = model.example_inputs()
    exported = torch.export.export(model, (x,))
    assert torch.equal(exported.module()(x), model(x))


def test_forward_takes_the_spec_inputs_by_name():
    model = synthdsl.compile_spec(
        "synth Two input tokens: [B, 6] int64 input mask: [B, 6] bool "
        "e = Embedding(tokens, num=11, dim=4) y = masked_mean(e, mask) output y",
        seed=0).eval()
    assert str(inspect.signature(model.forward)) == "(tokens, mask)"
    tokens, mask = model.example_inputs(3)
    by_position = model(tokens, mask)
    assert torch.equal(model(mask=mask, tokens=tokens), by_position)
    assert torch.equal(model(tokens, mask=mask), by_position)
    with pytest.raises(TypeError, match="mask"):
        model(tokens, mask, mask=mask)
    for copy_of in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert type(copy_of) is type(model)
        assert str(inspect.signature(copy_of.forward)) == "(tokens, mask)"
        assert torch.equal(copy_of(tokens=tokens, mask=mask), by_position)
    # one input module: its own names, the same class for the same names
    other = synthdsl.compile_spec("synth One input image: [B, 3] y = Linear(image, out=2) "
                                  "output y")
    assert str(inspect.signature(other.forward)) == "(image)"
    assert isinstance(other, synthdsl.SynthModule) and type(other) is not type(model)


def test_torch_export_takes_dynamic_shapes_by_input_name():
    model = synthdsl.compile_spec(
        "synth Two input image: [B, 4] input extra: [B, 4] "
        "y = add(Linear(image, out=3), Linear(extra, out=3)) output y", seed=0).eval()
    batch = torch.export.Dim("B")
    example = model.example_inputs(2)
    program = torch.export.export(model, example,
                                  dynamic_shapes={"image": {0: batch}, "extra": {0: batch}})
    names = [n.name for n in program.graph.nodes if n.op == "placeholder"]
    assert names[-2:] == ["image", "extra"]
    five = model.example_inputs(5, seed=1)
    assert torch.allclose(program.module()(*five), model(*five))
