"""Inheritance edges, reading only what is kept, provenance, artifacts and locks."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest
import timm
import torch
from timm.models import adapt_input_conv

import synthdsl
from synthdsl import SynthError
from synthdsl.cli import run
from tests.conftest import randomize_, save_checkpoint


@pytest.fixture(scope="module")
def donor(tmp_path_factory):
    model = randomize_(timm.create_model("resnet18", num_classes=10)).eval()
    path = save_checkpoint(model, tmp_path_factory.mktemp("donor") / "r18.safetensors")
    return model, path


def check_errors(text: str) -> list[SynthError]:
    return synthdsl.check_spec(text, raise_errors=False).graph["errors"]


def test_rows_and_channels(donor):
    model, ckpt = donor
    m = synthdsl.compile_spec(f"""synth I
        input x: [B, 5, 32, 32]
        source r = timm("resnet18", num_classes=10, weights="{ckpt}")
        stem = Conv2d(x, out=64, kernel=7, stride=2, padding=3, bias=false)
        head = GlobalAvgPool(stem) |> Linear(out=3)
        pre = r.forward_head(r.forward_features(Conv2d(x, out=3, kernel=1)), pre_logits=true)
        cls = Linear(pre, out=4)
        inherit stem from r.conv1 with adapt="channels_mean"
        inherit cls from r.fc with rows=[9, 0, 2, 2]
        output head, cls""", seed=0)
    expected = adapt_input_conv(5, model.conv1.weight.detach().clone())
    assert torch.equal(m.get_submodule("stem").weight, expected)
    assert torch.equal(m.get_submodule("cls").weight, model.fc.weight[[9, 0, 2, 2]])
    assert torch.equal(m.get_submodule("cls").bias, model.fc.bias[[9, 0, 2, 2]])
    p = m.provenance["cls.weight"]
    assert p["origin"] == "inherited" and p["key"] == "fc.weight"
    assert p["transform"] == "rows [9, 0, 2, 2]"
    assert p["sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert m.provenance["head.1.weight"]["origin"] == "new"
    assert m.provenance["r.conv1.weight"]["key"] == "conv1.weight"
    assert set(m.provenance) == set(m.state_dict())


def test_strict_mismatch_names_both_tensors(donor):
    _, ckpt = donor
    (err,) = check_errors(f"""synth I
        input x: [B, 8]
        source r = timm("resnet18", num_classes=10, weights="{ckpt}")
        head = Linear(x, out=4)
        inherit head from r.fc
        output head""")
    assert err.code == "S207" and err.span.line == 5
    assert any("'fc.weight' has shape [10, 512]" in n and "'head.weight' has [4, 8]" in n
               for n in err.notes)


def test_missing_and_partial(donor, tmp_path):
    _, ckpt = donor
    spec = f"""synth I
        input x: [B, 512]
        source r = timm("resnet18", num_classes=10, weights="{ckpt}")
        h = Linear(x, out=10) |> LayerNorm
        inherit h.0 from r.layer4.1 {{}}
        output h"""
    (err,) = check_errors(spec.format(""))
    assert err.code == "S207" and "strictly" in err.message
    assert any("'weight' of the target is not in the donor" in n for n in err.notes)
    g = synthdsl.check_spec(spec.format("with strict=false"))
    (w,) = [w for w in g.graph["warnings"] if w.code == "W002"]
    assert "0 tensors" in w.message


def test_interpolated_position_embedding():
    m = synthdsl.compile_spec("""synth I
        input x: [B, 3, 96, 96]
        source small = timm("test_vit", img_size=64)
        source big = timm("test_vit", img_size=96)
        y = big(x)
        inherit y from small with adapt="interpolate"
        output y""", seed=0)
    assert m.provenance["big.pos_embed"]["transform"] == "interpolate"
    assert m.provenance["big.blocks.0.attn.qkv.weight"]["transform"] == "copy"


def test_check_reads_headers_only(donor, monkeypatch):
    _, ckpt = donor
    from synthdsl.library import checkpoints as weights

    def refuse(*a, **k):
        raise AssertionError("the check read tensor data")

    monkeypatch.setattr(weights.SafetensorsReader, "get", refuse)
    monkeypatch.setattr("safetensors.torch.load_file", refuse)
    synthdsl.check_spec(f"""synth I
        input x: [B, 512]
        source r = timm("resnet18", num_classes=10, weights="{ckpt}")
        h = Linear(x, out=3)
        inherit h from r.fc with rows=3
        output h""")


def test_only_kept_tensors_are_read(donor, monkeypatch):
    _, ckpt = donor
    from synthdsl.library import checkpoints as weights

    read: list[str] = []
    original = weights.SafetensorsReader.get
    monkeypatch.setattr(weights.SafetensorsReader, "get",
                        lambda self, key: read.append(key) or original(self, key))
    m = synthdsl.compile_spec(f"""synth K
        input x: [B, 3, 32, 32]
        source r = timm("resnet18", num_classes=10, weights="{ckpt}")
        y = r(x, at="layer1")
        output y""")
    assert set(read) == {k[len("r."):] for k in m.state_dict()}
    assert not any(k.startswith(("layer2", "layer3", "layer4", "fc")) for k in read)


def test_artifact_round_trip_without_checkpoints(donor, tmp_path, capsys):
    model, ckpt = donor
    local = tmp_path / "w.safetensors"
    shutil.copy(ckpt, local)
    spec = tmp_path / "t.synth"
    spec.write_text("""synth T
        input x: [B, 3, 32, 32]
        source r = timm("resnet18", num_classes=10, weights="w.safetensors")
        f = r(x, stages=[3])
        y = GlobalAvgPool(f) |> Linear(out=5)
        inherit y.1 from r.fc with rows=5, adapt="fit"
        adapt y.1 with lora(rank=2, alpha=2)
        output y""")
    out = tmp_path / "out" / "t.safetensors"
    assert run(["compile", str(spec), "-o", str(out)]) == 0
    original = synthdsl.compile_spec(spec, seed=0).eval()
    local.unlink()  # the artifact must not need the checkpoint
    loaded = synthdsl.load_compiled(out)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), original(x))
    assert loaded.provenance["y.1.bias"]["origin"] == "inherited"
    assert list(loaded.lock["checkpoints"]) == ["w.safetensors"]
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    import safetensors.torch

    m = synthdsl.compile_spec("synth A input x: [B, 4] y = Linear(x, out=2) output y")

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", boom)
    with pytest.raises(OSError):
        synthdsl.save_compiled(m, tmp_path / "a.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_lock_catches_a_changed_checkpoint(donor, tmp_path, capsys):
    _, ckpt = donor
    local = tmp_path / "w.safetensors"
    shutil.copy(ckpt, local)
    spec = tmp_path / "t.synth"
    spec.write_text('synth T\ninput x: [B, 3, 32, 32]\n'
                    'source r = timm("resnet18", num_classes=10, weights="w.safetensors")\n'
                    'y = r(x)\noutput y\n')
    assert run(["lock", str(spec)]) == 0
    lock = json.loads((tmp_path / "t.synth.lock").read_text())
    assert lock["checkpoints"]["w.safetensors"] == hashlib.sha256(local.read_bytes()).hexdigest()
    assert run(["check", str(spec)]) == 0
    other = randomize_(timm.create_model("resnet18", num_classes=10))
    with torch.no_grad():
        other.fc.bias.add_(1)
    save_checkpoint(other, local)
    capsys.readouterr()
    assert run(["check", str(spec)]) == 1
    err = capsys.readouterr().err
    assert "error[S206]: weights file 'w.safetensors' changed since it was locked" in err
    assert ":3:" in err
    assert run(["lock", str(spec), "--verify"]) == 1


def test_summary_inheritance(capsys):
    assert run(["summary", "models/foreign_checkpoint.synth", "--inheritance"]) == 0
    out = capsys.readouterr().out
    assert "inherited" in out and "model.encoder.stage1.blocks.0.conv1.weight" in out
    assert "sha256" in out


def test_hub_weights_offline_is_a_clear_error(tmp_path):
    import os
    import subprocess
    import sys

    spec = tmp_path / "hub.synth"
    spec.write_text('synth Hub\ninput x: [B, 3, 32, 32]\n'
                    'source r = timm("resnet18", pretrained=true)\ny = r(x)\noutput y\n')
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    p = subprocess.run([sys.executable, "-m", "synthdsl.cli", "compile", str(spec)],
                       capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert "error[S203]: cannot get hub weights for 'resnet18' (HF_HUB_OFFLINE=1" in p.stderr
    assert f"{spec}:3:1" in p.stderr
