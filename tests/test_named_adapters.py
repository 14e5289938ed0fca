"""Several named LoRA adapters on one layer: each its own tensors, chosen and weighted at
run time, trained alone, saved and loaded by name, and carried by artifacts."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

import synthdsl
from synthdsl.build.artifact import load_compiled, save_compiled
from synthdsl.cli.app import run
from synthdsl.lang.errors import SynthError, SynthErrors

SPEC = """synth TwoTasks
input x: [B, 16]
y = Linear(x, out=32) |> ReLU |> Linear(out=4)
freeze y
adapt y.0, y.2 with lora(rank=2, alpha=4, name="sketch")
adapt y.0 with lora(rank=3, name="photo")
output y
"""


def compiled(text: str = SPEC, seed: int = 0):
    m = synthdsl.compile_spec(text, seed=seed)
    return m


def randomise(m, which: str = "lora") -> None:
    with torch.no_grad():
        for name, p in m.named_parameters():
            if which in name:
                p.normal_()


def deltas(m, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """What each adapter alone adds to the output (the others off)."""
    out = {}
    for name in m.adapters:
        m.set_adapters([name])
        with torch.no_grad():
            out[name] = m(x)
    m.set_adapters([])
    with torch.no_grad():
        out[""] = m(x)
    m.set_adapters(None)
    return out


def test_each_named_adapter_has_its_own_tensors_on_the_layer():
    m = compiled()
    names = {n for n, _ in m.named_parameters() if "lora" in n}
    assert names == {"y.0.lora_sketch_A", "y.0.lora_sketch_B", "y.2.lora_sketch_A",
                     "y.2.lora_sketch_B", "y.0.lora_photo_A", "y.0.lora_photo_B"}
    assert m.adapters == {"sketch": ["y.0", "y.2"], "photo": ["y.0"]}
    assert tuple(m.get_parameter("y.0.lora_photo_A").shape) == (3, 16)
    assert m.adapter_weights == {"sketch": 1.0, "photo": 1.0}
    x = torch.randn(5, 16)
    with torch.no_grad():
        before = m(x)
    m.set_adapters([])  # all off: the frozen layers alone, and nothing left to train
    with torch.no_grad():
        assert torch.equal(m(x), before)  # B starts at zero: an adapter changes nothing yet
    assert m.trainable_parameters() == []


def test_choosing_and_weighting_adapters_adds_their_updates():
    m = compiled()
    randomise(m)
    x = torch.randn(5, 16)
    # on the first layer only, so that the updates add up before the ReLU mixes them
    lin = m.get_submodule("y.0")
    for name in ("sketch", "photo"):
        m.set_adapters([name])
        assert {n for n, _ in m.named_trainable_parameters()} == {
            f"{layer}.lora_{name}_{ab}" for layer in m.adapters[name] for ab in "AB"}
    m.set_adapters([])
    with torch.no_grad():
        base = lin(x)
        m.set_adapters({"sketch": 0.25, "photo": 2.0})
        both = lin(x)
        parts = []
        for name, w in (("sketch", 0.25), ("photo", 2.0)):
            m.set_adapters([name])
            parts.append(w * (lin(x) - base))
    assert torch.allclose(both, base + parts[0] + parts[1], atol=1e-5)
    assert m.adapter_weights == {"sketch": 0.0, "photo": 1.0}


def test_merging_folds_the_active_adapters_at_their_weights():
    m = compiled()
    randomise(m)
    x = torch.randn(5, 16)
    m.set_adapters({"sketch": 0.5, "photo": 0.0})
    with torch.no_grad():
        expected = m(x)
    assert m.merge_adapters() == ["y.0:sketch", "y.2:sketch"]
    assert m.adapters == {"photo": ["y.0"]}  # the inactive one stays, still off
    with torch.no_grad():
        assert torch.allclose(m(x), expected, atol=1e-5)
    assert m.merge_adapters(["photo"]) == ["y.0:photo"]  # merged at weight 0: nothing added
    with torch.no_grad():
        assert torch.allclose(m(x), expected, atol=1e-5)
    assert not any("lora" in n for n, _ in m.named_parameters())


def test_a_name_the_module_has_no_adapter_of_is_named():
    m = compiled()
    with pytest.raises(SynthError) as e:
        m.set_adapters(["skech"])
    assert e.value.code == "S010" and "sketch, photo" in str(e.value)
    assert "sketch" in (e.value.hint or "")
    with pytest.raises(SynthError) as e:
        m.set_adapters({"sketch": float("nan")})
    assert e.value.code == "S010" and "finite" in str(e.value)
    plain = compiled("synth P input x: [B, 4] y = Linear(x, out=2) output y")
    with pytest.raises(SynthError) as e:
        plain.set_adapters(["a"])
    assert "has no LoRA adapters" in str(e.value)


def test_one_name_twice_on_a_layer_is_s403_and_a_bad_name_s402():
    twice = SPEC.replace('name="photo"', 'name="sketch"')
    with pytest.raises(SynthErrors) as e:
        synthdsl.check_spec(twice)
    [err] = e.value.errors
    assert err.code == "S403" and "'y.0' already has the LoRA adapter 'sketch'" in err.message
    assert err.span.line == 6 and "first given at <spec>:5:7" in err.notes[0]
    with pytest.raises(SynthErrors) as e:
        synthdsl.check_spec(SPEC.replace('name="photo"', 'name="2nd"'))
    assert e.value.errors[0].code == "S402" and "'2nd'" in e.value.errors[0].message
    unnamed = "synth A input x: [B, 4] h = Linear(x, out=2) adapt h with lora(rank=1) " \
              "adapt h with lora(rank=2) output h"
    with pytest.raises(SynthErrors) as e:  # two unnamed ones: both 'default'
        synthdsl.check_spec(unnamed)
    assert "'default'" in e.value.errors[0].message and 'name="other"' in e.value.errors[0].hint


def test_adapters_are_saved_and_loaded_by_name(tmp_path):
    trained = compiled()
    randomise(trained)
    path = trained.save_adapters(tmp_path / "sketch.safetensors", names=["sketch"])
    from safetensors import safe_open
    with safe_open(str(path), "pt") as f:
        assert sorted(f.keys()) == ["y.0.lora_sketch_A", "y.0.lora_sketch_B",
                                    "y.2.lora_sketch_A", "y.2.lora_sketch_B"]
    fresh = compiled()
    photo_before = fresh.get_parameter("y.0.lora_photo_A").clone()
    assert fresh.load_adapters(path) == ["y.0:sketch", "y.2:sketch"]
    assert torch.equal(fresh.get_parameter("y.2.lora_sketch_B"),
                       trained.get_parameter("y.2.lora_sketch_B"))
    assert torch.equal(fresh.get_parameter("y.0.lora_photo_A"), photo_before)  # untouched
    assert fresh.provenance["y.0.lora_sketch_A"]["file"] == str(path)
    # a spec without that adapter: named, nothing copied
    other = compiled(SPEC.replace('name="sketch"', 'name="paint"'))
    with pytest.raises(SynthError) as e:
        other.load_adapters(path)
    assert e.value.code == "S205" and "'sketch'" in str(e.value) and "paint" in " ".join(
        e.value.notes)
    # the same name on other layers or of another rank: the tensors that differ, named
    narrow = compiled(SPEC.replace("adapt y.0, y.2 with lora(rank=2", "adapt y.0 with lora(rank=2"))
    with pytest.raises(SynthError) as e:
        narrow.load_adapters(path)
    assert "unexpected" in " ".join(e.value.notes) and "y.2.lora_sketch_A" in " ".join(
        e.value.notes)


def test_a_file_of_the_unnamed_adapter_from_before_names_were_given_still_loads(tmp_path):
    text = "synth A input x: [B, 4] h = Linear(x, out=2) adapt h with lora(rank=1) output h"
    m = compiled(text)
    randomise(m)
    tensors = {k: m.get_parameter(k).detach().clone() for k in ("h.lora_A", "h.lora_B")}
    meta = {"spec": "A", "layers": {"h": {"rank": 1, "scale": 1.0, "dropout": 0.0}}}
    save_file(tensors, str(tmp_path / "old.safetensors"),
              metadata={"synthdsl_adapters": json.dumps(meta)})
    fresh = compiled(text)
    assert fresh.load_adapters(tmp_path / "old.safetensors") == ["h"]
    assert torch.equal(fresh.get_parameter("h.lora_B"), tensors["h.lora_B"])


def test_an_artifact_keeps_every_adapter_and_their_weights(tmp_path):
    m = compiled()
    randomise(m)
    m.set_adapters({"sketch": 0.7})
    x = torch.randn(3, 16)
    with torch.no_grad():
        expected = m.eval()(x)
    save_compiled(m, tmp_path / "a.safetensors")
    back = load_compiled(tmp_path / "a.safetensors")
    assert back.adapter_weights == {"sketch": 0.7, "photo": 0.0}
    assert not any("photo" in n for n, _ in back.named_trainable_parameters())
    with torch.no_grad():
        assert torch.equal(back(x), expected)
    back.merge_adapters(["photo"])  # one merged away: the artifact lists the other only
    save_compiled(back, tmp_path / "b.safetensors")
    again = load_compiled(tmp_path / "b.safetensors")
    assert again.adapters == {"sketch": ["y.0", "y.2"]}
    with torch.no_grad():
        assert torch.allclose(again(x), expected, atol=1e-6)


DIGITS = """synth Digits
input image: [B, 1, 8, 8]
h = Flatten(image) |> Linear(out=32) |> ReLU |> Linear(out=10)
freeze h
adapt h.1, h.3 with lora(rank=2, name="sketch")
adapt h.1, h.3 with lora(rank=4, name="photo")
recipe epochs=2, lr=0.01, batch_size=64, seed=0
output h
"""


def test_train_one_adapter_alone_then_evaluate_with_any_mix(tmp_path, capsys):
    spec = tmp_path / "s.synth"
    spec.write_text(DIGITS)
    out = tmp_path / "run"
    assert run(["train", str(spec), "--data", "digits", "-o", str(out), "--adapter",
                "sketch", "--save-adapters", "--no-progress", "-q"]) == 0
    assert json.loads((out / "run.json").read_text())["adapters"] == {"sketch": 1.0,
                                                                     "photo": 0.0}
    model = load_compiled(out / "model.safetensors")
    assert model.adapter_weights == {"sketch": 1.0, "photo": 0.0}
    start = synthdsl.compile_spec(spec, seed=0)
    for layer in ("h.1", "h.3"):  # the photo adapter was left as it started
        for ab in "AB":
            k = f"{layer}.lora_photo_{ab}"
            assert torch.equal(model.get_parameter(k), start.get_parameter(k))
        assert model.get_parameter(f"{layer}.lora_sketch_B").abs().sum() > 0
    capsys.readouterr()
    assert run(["eval", str(out), "--data", "digits", "--json"]) == 0
    trained = json.loads(capsys.readouterr().out)["results"][0]["accuracy"]
    assert run(["eval", str(spec), "--data", "digits", "--adapters",
                str(out / "adapters.safetensors"), "--adapter", "sketch", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["results"][0]["accuracy"] == trained
    assert run(["eval", str(out), "--data", "digits", "--adapter", "photo", "--json"]) == 0
    untrained = json.loads(capsys.readouterr().out)["results"][0]["accuracy"]
    assert untrained < trained
    # the other adapter trained in a run of its own; each file holds its own adapter only
    assert run(["train", str(spec), "--data", "digits", "-o", str(tmp_path / "photo"),
                "--adapter", "photo", "--save-adapters", "--no-progress", "-q"]) == 0
    from safetensors import safe_open
    with safe_open(str(tmp_path / "photo" / "adapters.safetensors"), "pt") as f:
        assert all("lora_photo_" in k for k in f.keys())
    capsys.readouterr()
    assert run(["eval", str(spec), "--data", "digits", "--adapters",
                str(out / "adapters.safetensors"), "--adapters",
                str(tmp_path / "photo" / "adapters.safetensors"), "--adapter", "photo",
                "--json"]) == 0
    photo = json.loads(capsys.readouterr().out)["results"][0]["accuracy"]
    assert run(["eval", str(tmp_path / "photo"), "--data", "digits", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["results"][0]["accuracy"] == photo
    assert run(["eval", str(out), "--data", "digits", "--adapter", "potho"]) != 0
    err = capsys.readouterr().err
    assert "S010" in err and "no adapter 'potho'" in err and "Traceback" not in err


def test_the_summary_names_each_adapter_with_its_layers_ranks_and_parameters(capsys):
    assert run(["summary", "models/domain_adapters.synth"]) == 0
    out = capsys.readouterr().out
    # 12 blocks: sketch on qkv (rank 8: 8·192 + 576·8), photo on qkv and proj (rank 4)
    assert ("adapters: sketch (12 layers, rank 8, 73,728 parameters), photo (24 layers, "
            "rank 4, 55,296 parameters)") in out
    assert "130,954 trainable" in out  # both adapters and the head
    assert run(["summary", "models/domain_adapters.synth", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [(a["name"], a["layers"], a["ranks"]) for a in data["adapters"]] == [
        ("sketch", 12, [8]), ("photo", 24, [4])]
