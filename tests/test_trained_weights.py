"""What a user trained, as a source's weights: artifacts and runs (keys under the source's
name), and checkpoints with a classifier read into a model without one."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

import synthdsl
from synthdsl.cli.app import run
from synthdsl.lang.errors import SynthError

FIRST = """synth First
input image: [B, 3, 32, 32]
source r = timm("test_resnet", num_classes=0)
feats = r(image)
logits = Linear(feats, out=5)
output logits
"""


def reuse(weights: str, name: str = "r", num_classes: int = 0) -> str:
    return (f"synth Second\ninput image: [B, 3, 32, 32]\n"
            f'source {name} = timm("test_resnet", num_classes={num_classes}, '
            f'weights="{weights}")\nfeats = {name}(image)\noutput feats\n')


def test_an_artifact_is_read_under_the_source_name(tmp_path, capsys):
    (tmp_path / "first.synth").write_text(FIRST)
    assert run(["compile", str(tmp_path / "first.synth"), "-o",
                str(tmp_path / "first.safetensors")]) == 0
    first = synthdsl.load_compiled(tmp_path / "first.safetensors").eval()
    for name in ("r", "trunk"):  # its own name, or any other: the prefix that holds it all
        spec = tmp_path / f"second_{name}.synth"
        spec.write_text(reuse("first.safetensors", name))
        graph = synthdsl.check_spec(spec)
        [w] = [w for w in graph.graph["warnings"] if w.code == "W004"]
        assert "under 'r.'" in " ".join(w.notes) and "not read" in " ".join(w.notes)
        second = synthdsl.compile_graph(graph).eval()
        x = torch.randn(2, 3, 32, 32)
        with torch.no_grad():
            assert torch.equal(second(x), first.r(x))
        p = second.provenance[f"{name}.conv1.0.weight"]
        assert p["key"] == "r.conv1.0.weight" and p["file"].endswith("first.safetensors")


def test_a_run_folder_names_its_model(tmp_path):
    (tmp_path / "first.synth").write_text(FIRST + "recipe epochs=1, batch_size=256\n")
    assert run(["train", str(tmp_path / "first.synth"), "--data", "digits", "-o",
                str(tmp_path / "run"), "--classes", "0-4", "--no-progress", "-q"]) == 0
    spec = tmp_path / "second.synth"
    spec.write_text(reuse("run"))
    model = synthdsl.compile_spec(spec)
    trained = synthdsl.load_compiled(tmp_path / "run" / "model.safetensors")
    assert torch.equal(model.state_dict()["r.conv1.0.weight"],
                       trained.state_dict()["r.conv1.0.weight"])


def test_a_classifier_is_dropped_by_name_into_num_classes_0(tmp_path):
    full = timm.create_model("test_resnet", num_classes=7)
    save_file({k: v.contiguous() for k, v in full.state_dict().items()},
              str(tmp_path / "full.safetensors"))
    spec = tmp_path / "s.synth"
    spec.write_text(reuse("full.safetensors"))
    graph = synthdsl.check_spec(spec)
    [w] = [w for w in graph.graph["warnings"] if w.code == "W004"]
    assert "dropped the file's classifier 'fc' (2 tensor(s))" in " ".join(w.notes)
    model = synthdsl.compile_graph(graph).eval()
    full.eval().reset_classifier(0)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), full(x))
    # anything else the model lacks is still a mismatch, named
    extra = {k: v.contiguous() for k, v in full.state_dict().items()}
    extra["layer9.weight"] = torch.zeros(1)
    save_file(extra, str(tmp_path / "extra.safetensors"))
    spec.write_text(reuse("extra.safetensors"))
    with pytest.raises(SynthError) as e:
        synthdsl.check_spec(spec)
    assert e.value.code == "S205" and "layer9.weight" in " ".join(e.value.notes)
