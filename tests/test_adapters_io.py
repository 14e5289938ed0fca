"""LoRA: dropout on the adapter's input, and adapters saved and loaded alone."""

from __future__ import annotations

import pytest
import torch

import synthdsl
from synthdsl.cli.app import run
from synthdsl.lang.errors import SynthError

SPEC = """synth Adapted
input x: [B, 16]
y = Linear(x, out=32) |> ReLU |> Linear(out=4)
freeze y
adapt y.0, y.2 with lora(rank={rank}, alpha=8{extra})
output y
"""


def compiled(rank: int = 2, extra: str = "", seed: int = 0):
    return synthdsl.compile_spec(SPEC.format(rank=rank, extra=extra), seed=seed)


def test_dropout_acts_on_the_adapter_while_training_only():
    m = compiled(extra=", dropout=0.5")
    with torch.no_grad():
        for name, p in m.named_parameters():
            if "lora_B" in name:
                p.normal_()
    x = torch.randn(64, 16)
    m.eval()
    assert torch.equal(m(x), m(x))
    m.train()
    torch.manual_seed(0)
    a = m(x)
    assert not torch.equal(a, m(x))  # dropped differently each call
    plain = compiled(extra=", dropout=0.5")
    plain.load_state_dict(m.state_dict())
    for layer in ("y.0", "y.2"):  # without the adapter's contribution, nothing is dropped
        torch.nn.init.zeros_(plain.get_submodule(layer).lora_B)
    plain.train()
    assert torch.equal(plain(x), plain(x))
    with pytest.raises(SynthError) as e:
        synthdsl.check_spec(SPEC.format(rank=2, extra=", dropout=1.5"))
    assert "S402" in str(e.value) and "dropout" in str(e.value)


def test_adapters_saved_alone_load_into_a_fresh_module(tmp_path):
    trained = compiled(seed=0)
    with torch.no_grad():
        for name, p in trained.named_parameters():
            if "lora" in name:
                p.normal_()
    path = trained.save_adapters(tmp_path / "adapters.safetensors")
    assert path.stat().st_size < 4096  # only the adapters, not the layers
    fresh = compiled(seed=0)  # the same frozen layers (same seed), fresh adapters
    assert sorted(fresh.load_adapters(path)) == ["y.0", "y.2"]
    x = torch.randn(3, 16)
    with torch.no_grad():
        assert torch.equal(fresh.eval()(x), trained.eval()(x))
    assert fresh.provenance["y.0.lora_A"]["file"] == str(path)
    with pytest.raises(SynthError) as e:  # another rank: named, nothing copied
        compiled(rank=4).load_adapters(path)
    assert e.value.code == "S205" and "y.0.lora_A" in " ".join(e.value.notes)
    other = tmp_path / "plain.safetensors"
    from safetensors.torch import save_file
    save_file({"w": torch.zeros(1)}, str(other))
    with pytest.raises(SynthError) as e:
        fresh.load_adapters(other)
    assert "not a file of LoRA adapters" in str(e.value)


def test_train_saves_them_and_eval_loads_them(tmp_path, capsys):
    spec = tmp_path / "s.synth"
    spec.write_text("synth A\ninput image: [B, 1, 8, 8]\n"
                    "h = Flatten(image) |> Linear(out=32) |> ReLU |> Linear(out=10)\n"
                    "freeze h\nadapt h.1, h.3 with lora(rank=2)\n"
                    "recipe epochs=2, lr=0.01, batch_size=64, seed=0\noutput h\n")
    assert run(["train", str(spec), "--data", "digits", "-o", str(tmp_path / "run"),
                "--save-adapters", "--no-progress", "-q"]) == 0
    adapters = tmp_path / "run" / "adapters.safetensors"
    assert adapters.exists()
    capsys.readouterr()
    assert run(["eval", str(spec), "--data", "digits", "--adapters", str(adapters),
                "--json"]) == 0
    import json
    with_adapters = json.loads(capsys.readouterr().out)
    assert run(["eval", str(tmp_path / "run"), "--data", "digits", "--json"]) == 0
    from_run = json.loads(capsys.readouterr().out)
    assert with_adapters["results"][0]["accuracy"] == from_run["results"][0]["accuracy"]
    assert run(["eval", str(spec), "--data", "digits", "--json"]) == 0  # the untrained start
    untrained = json.loads(capsys.readouterr().out)
    assert untrained["results"][0]["accuracy"] < with_adapters["results"][0]["accuracy"]
