"""Parts are what the docs say: each part owns what it uses, and what it names is checked.

* a stage cut that shares its source with other parts owns only what runs up to its
  last stage (no false S109 beside a later submodule of the same source);
* a cut and a method of one source compile together and compute what timm computes;
* a method part (``forward_features``, ``forward_head``) keeps, counts, freezes and
  inherits only the tensors its trace uses, and equals timm's method on the same
  weights, in eval mode and (a ViT with drop paths) in training mode;
* a method's unknown keyword or a value of the wrong type is S402 at the keyword, with
  the method's own parameter names as suggestions;
* a misspelt method suggests the method;
* an item or slice outside a sequential module's children is S202 at the brackets.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch

import synthdsl
from tests.conftest import randomize_, save_checkpoint

X = torch.Generator().manual_seed(7)


def _head(weights: Path | None = None, arch: str = "test_resnet", size=(32, 32),
          options: str = "num_classes=5") -> str:
    w = f', weights="{weights}"' if weights else ""
    opts = f", {options}" if options else ""
    return (f"synth T\ninput x: [B, 3, {size[0]}, {size[1]}]\n"
            f'source s = timm("{arch}"{opts}{w})\n')


def _errors(text: str):
    return synthdsl.check_spec(text, raise_errors=False).graph["errors"]


def _only(text: str, code: str):
    errors = _errors(text)
    assert [e.code for e in errors] == [code], [str(e) for e in errors]
    return errors[0]


@pytest.fixture(scope="module")
def resnet(tmp_path_factory):
    """test_resnet (5 classes) with non-trivial weights, and its safetensors file."""
    torch.manual_seed(0)
    model = randomize_(timm.create_model("test_resnet", num_classes=5)).eval()
    path = save_checkpoint(model, tmp_path_factory.mktemp("parts") / "resnet.safetensors")
    return model, path


@pytest.fixture(scope="module")
def vit(tmp_path_factory):
    """test_vit with drop paths (training mode is random), its weights and its input size."""
    torch.manual_seed(0)
    model = randomize_(timm.create_model("test_vit", drop_path_rate=0.5)).eval()
    path = save_checkpoint(model, tmp_path_factory.mktemp("parts") / "vit.safetensors")
    return model, path, tuple(model.patch_embed.img_size)


def _x(*shape):
    return torch.randn(*shape, generator=X)


# ---- 1: a shared stage cut owns what runs up to its stage -------------------------------


def test_stage_cut_beside_a_later_submodule_owns_only_its_stages(resnet):
    model, path = resnet
    text = _head(path) + "f = s(x, stages=[3])\ng = s.layer4(f)\noutput g\n"
    graph = synthdsl.check_spec(text)
    stage = graph.nodes["f"]["parameters"]
    assert stage and all(not k.startswith(("s.layer4.", "s.fc.")) for k in stage)
    assert any(k.startswith("s.layer3.") for k in stage)
    assert all(k.startswith("s.layer4.") for k in graph.nodes["g"]["parameters"])
    module = synthdsl.compile_spec(text).eval()
    assert not any(k.startswith("s.fc.") for k in module.state_dict())
    x = _x(2, 3, 32, 32)
    with torch.no_grad():
        want = model.layer4(model.forward_intermediates(
            x, indices=[3], intermediates_only=True)[0])
        torch.testing.assert_close(module(x), want)


def test_stage_cut_still_conflicts_with_a_part_it_really_uses(resnet):
    _, path = resnet
    e = _only(_head(path) + "f = s(x, stages=[3])\nh = s.conv1(x)\noutput f, h\n", "S109")
    assert "'f'" in str(e) and e.span.line == 5


def test_a_stage_cut_alone_still_prunes_and_matches_timm(resnet):
    model, path = resnet
    module = synthdsl.compile_spec(_head(path) + "f = s(x, stages=[3])\noutput f\n").eval()
    x = _x(2, 3, 32, 32)
    with torch.no_grad():
        want = model.forward_intermediates(x, indices=[3], intermediates_only=True)[0]
        torch.testing.assert_close(module(x), want)


# ---- 2: a cut and a method of one source compile together ----------------------------------


def test_cut_then_forward_head_compiles_and_equals_timm(resnet):
    model, path = resnet
    text = _head(path) + 'f = s(x, at="layer4")\ny = s.forward_head(f)\noutput y\n'
    module = synthdsl.compile_spec(text).eval()
    x = _x(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(module(x), model.forward_head(model.forward_features(x)))
    graph = module.graph
    assert set(graph.nodes["y"]["parameters"]) == {"s.fc.weight", "s.fc.bias"}
    assert not any(k.startswith("s.fc.") for k in graph.nodes["f"]["parameters"])


# ---- 3: a method part owns what its trace uses ----------------------------------------------


def test_forward_features_owns_no_head(resnet):
    model, path = resnet
    text = _head(path) + ("f = s.forward_features(x)\ny = GlobalAvgPool(f) |> Linear(out=3)\n"
                          "output y, f\n")
    graph = synthdsl.check_spec(text)
    fc = sum(p.numel() for p in model.fc.parameters())
    total = sum(p.numel() for p in model.parameters())
    assert graph.nodes["f"]["params"] == total - fc
    assert not any(k.startswith("s.fc.") for k in graph.nodes["f"]["parameters"])
    module = synthdsl.compile_spec(text).eval()
    assert not any(k.startswith("s.fc.") for k in module.state_dict())
    assert sum(p.numel() for p in module.parameters()) == total - fc + 96 * 3 + 3
    x = _x(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(module(x)["f"], model.forward_features(x))


def test_forward_head_with_pre_logits_equals_timm(resnet):
    model, path = resnet
    text = _head(path) + ("f = s.forward_features(x)\n"
                          "p = s.forward_head(f, pre_logits=true)\noutput p\n")
    module = synthdsl.compile_spec(text).eval()
    assert module.graph.nodes["p"]["params"] == 0  # pre-logits: pooling only, no fc
    x = _x(2, 3, 32, 32)
    with torch.no_grad():
        want = model.forward_head(model.forward_features(x), pre_logits=True)
        torch.testing.assert_close(module(x), want)


def test_freeze_and_train_name_only_what_a_method_part_keeps(resnet):
    _, path = resnet
    body = "f = s.forward_features(x)\ny = GlobalAvgPool(f) |> Linear(out=3)\n"
    graph = synthdsl.check_spec(_head(path) + body + "freeze s\noutput y\n")
    frozen = graph.nodes["f"]["frozen_params"]
    assert frozen == graph.nodes["f"]["params"] and graph.nodes["y.1"]["frozen_params"] == 0
    e = _only(_head(path) + body + "freeze s.fc\noutput y\n", "S401")
    assert e.span.line == 6


def test_a_method_part_inherits_only_its_own_tensors(resnet):
    model, path = resnet
    body = ("source d = timm(\"test_resnet\", num_classes=5, weights=\"%s\")\n"
            "f = s.forward_features(x)\ny = GlobalAvgPool(f) |> Linear(out=3)\n" % path)
    strict = _only(_head(None) + body + "inherit f from d\noutput y\n", "S207")
    assert "fc.weight" in " ".join(strict.notes)
    module = synthdsl.compile_spec(_head(None) + body +
                                   "inherit f from d with strict=false\noutput y\n")
    state = module.state_dict()
    for k, v in model.state_dict().items():
        if not k.startswith("fc."):
            torch.testing.assert_close(state[f"s.{k}"], v)
    assert not any(k.startswith("s.fc.") for k in state)


def test_vit_methods_equal_timm_in_eval_and_training_mode(vit):
    model, path, size = vit
    text = _head(path, "test_vit", size, "drop_path_rate=0.5") + (
        "f = s.forward_features(x)\ny = s.forward_head(f)\noutput y, f\n")
    module = synthdsl.compile_spec(text)
    state = module.state_dict()
    assert "s.cls_token" in state and "s.pos_embed" in state
    assert sum(p.numel() for p in module.parameters()) == \
        sum(p.numel() for p in model.parameters())
    x = _x(2, 3, *size)
    with torch.no_grad():
        out = module.eval()(x)
        torch.testing.assert_close(out["f"], model.eval().forward_features(x))
        torch.testing.assert_close(out["y"], model(x))
        module.train()
        model.train()
        torch.manual_seed(11)
        train_out = module(x)["f"]
        torch.manual_seed(11)
        torch.testing.assert_close(train_out, model.forward_features(x))
        model.eval()
    assert not torch.allclose(train_out, out["f"])  # drop paths ran: the train graph


def test_vit_forward_features_alone_owns_no_head(vit):
    model, path, size = vit
    text = _head(path, "test_vit", size, "") + "f = s.forward_features(x)\noutput f\n"
    graph = synthdsl.check_spec(text)
    names = graph.nodes["f"]["parameters"]
    assert "s.cls_token" in names and not any(k.startswith("s.head.") for k in names)


# ---- 4: a method's options, from its signature ----------------------------------------------


def test_unknown_method_keyword_is_s402_at_the_keyword():
    text = _head() + "f = s.forward_features(x)\ny = s.forward_head(f, pre_logit=true)\noutput y\n"
    e = _only(text, "S402")
    assert (e.span.line, e.span.column) == (5, 23)
    assert "pre_logit" in str(e) and e.hint == "did you mean 'pre_logits'?"


def test_method_keyword_of_the_wrong_type_is_s402():
    text = _head() + "f = s.forward_features(x)\ny = s.forward_head(f, pre_logits=3)\noutput y\n"
    e = _only(text, "S402")
    assert (e.span.line, e.span.column) == (5, 23)
    assert "true or false" in str(e) and "found 3" in str(e)


def test_forward_features_takes_no_unknown_option():
    e = _only(_head() + "f = s.forward_features(x, flatten=true)\noutput f\n", "S402")
    assert (e.span.line, e.span.column) == (4, 27)


# ---- 5: a misspelt method suggests the method ------------------------------------------------


def test_misspelt_method_suggests_it():
    e = _only(_head() + "f = s.forward_feature(x)\noutput f\n", "S202")
    assert (e.span.line, e.span.column) == (4, 5)
    assert "'forward_features'" in e.hint


def test_misspelt_submodule_still_suggests_submodules():
    e = _only(_head() + "f = s.layr1(x)\noutput f\n", "S202")
    assert "'layer1'" in e.hint


# ---- 6: items and slices inside a sequential module's children -----------------------------


@pytest.mark.parametrize("index, column, words", [
    ("[0:9]", 13, "goes past its ends"),
    ("[-5:]", 13, "goes past its ends"),
    ("[2:1]", 13, "goes past its ends"),
    ("[1:0]", 13, "is empty"),
    ("[7]", 13, "index 7 is out of range"),
    ("[-2]", 13, "index -2 is out of range"),
])
def test_index_outside_the_children_is_s202_at_the_brackets(index, column, words):
    e = _only(_head() + f"f = s.layer1{index}(x)\noutput f\n", "S202")
    assert (e.span.line, e.span.column) == (4, column)
    assert e.span.end_column == column + len(index)
    assert words in str(e) and "1 child" in str(e)


def test_slices_inside_the_children_still_work():
    assert not _errors(_head() + "f = s.conv1[0:3](x)\ng = s.conv1[-1](f)\noutput g\n")
    graph = synthdsl.check_spec(_head() + "f = s.conv1[:3](x)\noutput f\n")
    names = graph.nodes["f"]["parameters"]
    assert names and all(k.startswith(("s.conv1.0.", "s.conv1.1.", "s.conv1.2.")) for k in names)


def test_slice_span_is_found_with_spaces_and_lines():
    text = _head() + "f = s.layer1 [0 :\n 9](x)\noutput f\n"
    e = _only(text, "S202")
    assert (e.span.line, e.span.column, e.span.end_line, e.span.end_column) == (4, 14, 5, 4)


@pytest.mark.parametrize("arch", ["test_efficientnet", "test_convnext", "mobilenetv3_small_050",
                                  "test_byobnet"])
def test_method_parts_equal_timm_across_families(arch, tmp_path):
    torch.manual_seed(0)
    model = randomize_(timm.create_model(arch)).eval()
    path = save_checkpoint(model, tmp_path / f"{arch}.safetensors")
    text = _head(path, arch, (64, 64), "") + (
        f'source t = timm("{arch}", weights="{path}")\n'
        "f = s.forward_features(x)\ny = s.forward_head(f)\n"
        "p = t.forward_head(f, pre_logits=true)\noutput y, p\n")
    module = synthdsl.compile_spec(text).eval()
    x = _x(2, 3, 64, 64)
    with torch.no_grad():
        out = module(x)
        torch.testing.assert_close(out["y"], model(x))
        torch.testing.assert_close(out["p"], model.forward_head(model.forward_features(x),
                                                                pre_logits=True))


class _Toy(torch.nn.Module):
    """A model whose head reads nothing of it, and whose features depend on its mode."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 4)
        self.scale = torch.nn.Parameter(torch.full((4,), 2.0))

    def forward_head(self, x, pre_logits: bool = False):
        return x if pre_logits else x * 3

    def forward_features(self, x):
        x = self.lin(x) * self.scale
        return x + 1 if self.training else x


def test_traced_parts_take_only_what_they_read_and_follow_the_mode():
    from synthdsl.library.traced import bind_traced, trace_method

    toy = _Toy().eval()
    head = bind_traced(toy, "s", trace_method(toy, "forward_head", {"pre_logits": False}),
                       "forward_head")
    assert head.modules == {} and not head.container
    x = torch.randn(2, 4)
    torch.testing.assert_close(head.run(x), x * 3)
    feats = bind_traced(toy, "s", trace_method(toy, "forward_features", {}), "forward_features")
    assert set(feats.modules) == {"s", "s.lin"} and feats.modules["s.lin"] is toy.lin
    assert dict(feats.modules["s"].named_parameters()) == {"scale": toy.scale}
    with torch.no_grad():
        want = toy.forward_features(x)
        torch.testing.assert_close(feats.run(x), want)
        toy.train()
        torch.testing.assert_close(feats.run(x), want + 1)


@pytest.mark.parametrize("part, first", [("s.forward_features(x)", "s.conv1.0"),
                                          ("s.layer1[0:1](x)", "s.layer1.0.conv1")])
def test_a_channel_mismatch_names_the_first_layer_by_its_path(part, first):
    import synthdsl

    text = (f'synth A\ninput x: [B, 1, 32, 32]\nsource s = timm("test_resnet", num_classes=5)\n'
            f"y = {part}\noutput y\n")
    errors = synthdsl.check_spec(text, raise_errors=False).graph["errors"]
    assert [e.code for e in errors] == ["S301"], [str(e) for e in errors]
    assert any(f"its first layer '{first}' is Conv2d" in n for n in errors[0].notes)
