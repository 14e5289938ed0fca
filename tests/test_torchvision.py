"""torchvision(...) sources compute what torchvision computes.

For each architecture (eleven families, 64x64 inputs) a torchvision model gets random
"pretrained"-looking state (``randomize_``) and is saved as a local ``.pth`` state
dict; one spec loads it in three sources with ``weights="..."`` and returns the whole model, two
stages and a cut at an fx node in the middle of the model. The whole model is
bitwise ``model(x)``; the stages and the cut are torchvision's own
``create_feature_extractor`` on the same model (the stage's module, the node).
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch
from torchvision.models import get_model
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

import synthdsl
from synthdsl.lang.errors import SynthError
from synthdsl.library.torchvision_source import create_torchvision, tv_feature_info
from tests.conftest import randomize_

ARCHS = ["resnet18", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0",
         "regnet_x_400mf", "densenet121", "shufflenet_v2_x0_5", "squeezenet1_1", "mnasnet0_5",
         "googlenet", "convnext_tiny"]
SIZE = 64
pytestmark = pytest.mark.filterwarnings("ignore:NOTE. The nodes obtained by tracing")


@functools.lru_cache(maxsize=1)
def _reference(arch: str, folder: Path):
    torch.manual_seed(0)
    model = randomize_(create_torchvision(arch, {}, "cpu")).eval()
    path = folder / f"{arch}.pth"
    torch.save(model.state_dict(), path)
    return model, path


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield tmp_path_factory.mktemp("tv")
    torch.set_num_threads(threads)
    _reference.cache_clear()


def _spec(arch: str, body: str, weights: str) -> str:
    """Three sources of the same file: a part may not share its parameters with another."""
    return (f"synth TV\ninput image: [B, 3, {SIZE}, {SIZE}]\n" + "".join(
        f'source {n} = torchvision("{arch}", weights="{weights}")\n' for n in ("w", "s", "c"))
        + body)


@pytest.mark.parametrize("arch", ARCHS)
def test_whole_stages_and_cut_equal_torchvision(arch, folder):
    model, path = _reference(arch, folder)
    info = tv_feature_info(model)
    assert len(info) >= 4
    nodes = get_graph_node_names(model)[1]
    cut = nodes[len(nodes) // 2]
    spec = _spec(arch, f'y = w(image)\ns1, s2 = s(image, stages=[1, 2])\n'
                       f'k = c(image, at="{cut}")\noutput y, s1, s2, k', path)
    compiled = synthdsl.compile_spec(spec).eval()
    x = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = compiled(x)
        want = model(x)
        ref = create_feature_extractor(model, [info[1]["module"], info[2]["module"], cut])(x)
    assert torch.equal(out["y"], want)
    assert torch.equal(out["s1"], ref[info[1]["module"]])
    assert torch.equal(out["s2"], ref[info[2]["module"]])
    assert torch.equal(out["k"], ref[cut])


def test_stage_rule_and_node_names():
    r18 = create_torchvision("resnet18", {}, "meta")
    assert [d["module"] for d in tv_feature_info(r18)] == \
        ["relu", "layer1", "layer2", "layer3", "layer4"]
    mb = create_torchvision("mobilenet_v2", {}, "meta")
    assert [(d["module"], d["reduction"]) for d in tv_feature_info(mb)] == \
        [("features.1", 2), ("features.3", 4), ("features.6", 8), ("features.13", 16),
         ("features.18", 32)]
    from synthdsl.library.sources import source_kind

    assert source_kind("torchvision").node_names(r18) == \
        get_graph_node_names(get_model("resnet18"))[1]


def _error(text: str) -> SynthError:
    graph = synthdsl.check_spec(text, raise_errors=False)
    assert graph.graph["errors"], "expected an error"
    return graph.graph["errors"][0]


def test_unknown_model_and_file_options():
    e = _error('synth A input x: [B, 3, 32, 32]\nsource r = torchvision("resnet81")\n'
               'y = r(x)\noutput y')
    assert e.code == "S201" and "resnet18" in (e.hint or "")
    e = _error('synth A input x: [B, 3, 32, 32]\n'
               'source r = torchvision("resnet18", norm_layer="https://x/y.pth")\ny = r(x)\n'
               'output y')
    assert e.code == "S402" and "file or URL" in e.message
    e = _error('synth A input x: [B, 3, 32, 32]\n'
               'source r = torchvision("resnet18", num_clases=5)\ny = r(x)\noutput y')
    assert e.code == "S402" and "num_classes" in (e.hint or ""), e.hint
    model = synthdsl.compile_spec('synth A input x: [B, 3, 32, 32]\n'
                                  'source r = torchvision("resnet18", num_classes=5)\n'
                                  'y = r(x)\noutput y')
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 5)
    assert model.provenance["r.fc.weight"]["initialiser"] == "torchvision:resnet18 (random)"


def test_zoo_weights_offline_is_s203(monkeypatch, tmp_path):
    import torch.hub

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    for opt in ('weights="IMAGENET1K_V1"', 'weights="ResNet18_Weights.DEFAULT"',
                "pretrained=true"):
        with pytest.raises(SynthError) as e:
            synthdsl.compile_spec('synth A input x: [B, 3, 32, 32]\n'
                                  f'source r = torchvision("resnet18", {opt})\ny = r(x)\n'
                                  'output y')
        assert e.value.code == "S203" and "torchvision weights" in e.value.message
    e = _error('synth A input x: [B, 3, 32, 32]\n'
               'source r = torchvision("resnet18", weights="IMAGENET1K_V3")\ny = r(x)\noutput y')
    assert e.code == "S203" and "IMAGENET1K_V1" in (e.hint or "")


def test_parts_options_and_inheritance(folder):
    model, path = _reference("resnet18", folder)
    spec = (f'synth A input x: [B, 3, 64, 64]\n'
            f'source r = torchvision("resnet18", weights="{path}")\n'
            'source t = timm("resnet18")\n'
            'stem = r(x, at="maxpool")\ntl = t.layer1(stem)\nmid = r.layer3(r.layer2(tl))\n'
            'logits = Linear(Flatten(GlobalAvgPool(r.layer4(mid))), out=1000)\n'
            'output mid, logits\n'
            'inherit tl from r.layer1\ninherit logits from r.fc\n')
    compiled = synthdsl.compile_spec(spec).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = compiled(x)
        want = model.layer3(model.layer2(model.layer1(model.maxpool(model.relu(model.bn1(
            model.conv1(x)))))))
        assert torch.equal(out["mid"], want)
        torch.testing.assert_close(out["logits"], model(x))
    mb, mpath = _reference("mobilenet_v2", folder)
    spec = (f'synth B input x: [B, 3, 64, 64]\n'
            f'source m = torchvision("mobilenet_v2", num_classes=5, weights="{mpath}")\n'
            'y = m.features[0:7](x)\noutput y')
    with pytest.raises(SynthError) as e:  # num_classes=5 does not fit the 1000-class file
        synthdsl.compile_spec(spec)
    assert e.value.code == "S205"
    spec = spec.replace("num_classes=5, ", "")
    with torch.no_grad():
        assert torch.equal(synthdsl.compile_spec(spec).eval()(x), mb.features[0:7](x))


def test_synth_nodes_and_picture(capsys):
    from synthdsl.cli import run
    from synthdsl.viz import render_graph

    assert run(["nodes", "torchvision:resnet18"]) == 0
    out = capsys.readouterr().out
    assert "layer3.1.relu_1" in out and "stage 4 (layer4)" in out
    assert run(["nodes", "torchvision:resnet81"]) != 0
    graph = synthdsl.check_spec('synth A input x: [B, 3, 32, 32]\n'
                                'source r = torchvision("resnet18")\ny = r(x)\noutput y')
    assert "torchvision:resnet18" in render_graph(graph, "text", expand=["r"])


def test_train_rule_by_stage():
    graph = synthdsl.check_spec('synth A input x: [B, 3, 32, 32]\n'
                                'source m = torchvision("mobilenet_v2")\ny = m(x)\noutput y\n'
                                'freeze m\ntrain m@stage1\n')
    model = synthdsl.compile_graph(graph)
    trained = {k.split(".")[2] for k, p in model.named_parameters() if p.requires_grad}
    assert trained == {"2", "3"}  # stage 1 ends at features.3 and starts after features.1


def test_zoo_weights_with_pretrained_false_is_s204():
    import synthdsl

    text = ('synth Z\ninput x: [B, 3, 64, 64]\nsource r = torchvision("resnet18", '
            'weights="IMAGENET1K_V1", pretrained=false)\ny = r(x)\noutput y\n')
    errors = synthdsl.check_spec(text, raise_errors=False).graph["errors"]
    assert [e.code for e in errors] == ["S204"], [str(e) for e in errors]
    assert "pretrained=false" in errors[0].message
    assert errors[0].span.start == text.index("pretrained=false")
