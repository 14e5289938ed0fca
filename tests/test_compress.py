"""Compression: prune(...) and quantize(...) checked, applied and measured; pruned
artifacts round-trip; `synth compress` end to end on digits."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from torch import nn

import synthdsl
from synthdsl.build.artifact import load_compiled, save_compiled
from synthdsl.build.compress import prune_compiled, quantize_compiled
from synthdsl.lang.errors import SynthError, flatten
from synthdsl.library.prune import resize_to
from synthdsl.library.quantize import int8_layers
from synthdsl.train.data import DataSpec
from synthdsl.train.measure import accuracy_of, count_macs, state_bytes
from synthdsl.train.options import Options
from synthdsl.train.preprocess import preprocess_for
from synthdsl.train.recipe import Recipe
from synthdsl.train.run import train

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "models" / "compress_digits.synth"
pytestmark = pytest.mark.usefixtures("one_thread")

# digits at 8x8 through a small CNN and a Linear head: seconds to train
SMALL = """synth SmallCompress
input image: [B, 1, 8, 8]
c = Conv2d(image, out=16, kernel=3, padding=1) |> BatchNorm2d |> ReLU
d = Conv2d(c, out=32, kernel=3, padding=1) |> ReLU |> GlobalAvgPool
h = Linear(d, out=64) |> ReLU
logits = Linear(h, out=10)
adapt c, d, h with prune(ratio=0.5)
adapt * with quantize(mode="dynamic")
output logits
"""


def _errors(text: str) -> list[SynthError]:
    with pytest.raises(SynthError) as e:
        synthdsl.check_spec(text)
    return flatten(e.value)


@pytest.fixture(scope="module")
def digits():
    return DataSpec("digits").load("train"), DataSpec("digits").load("test")


@pytest.fixture(scope="module")
def trained(digits):
    """SMALL trained for a few epochs on digits."""
    model = synthdsl.compile_spec(SMALL, seed=0)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    train(model, digits[0], None, recipe=Recipe(epochs=6, lr=3e-3, batch_size=32, seed=0),
          options=Options(quiet=True, progress=False, checkpoint_every=0))
    torch.set_num_threads(before)
    return model.eval()


# -- the check -----------------------------------------------------------------------------


def test_the_check_resolves_each_statement_to_its_layers():
    graph = synthdsl.check_spec(SMALL)
    prune, quant = graph.graph["compression"]
    assert prune == {"method": "prune", "options": {"ratio": 0.5, "importance": "l1"},
                     "modules": ["c.0", "d.0", "h.0"], "line": 7}
    assert quant["modules"] == ["c.0", "d.0", "h.0", "logits"]
    assert quant["options"] == {"mode": "dynamic"}


def test_prune_without_torch_pruning_says_what_to_install(monkeypatch):
    monkeypatch.setattr("synthdsl.checks.compress.pruning_available", lambda: False)
    (e,) = _errors(SMALL)
    assert e.code == "S404" and "synthdsl[compress]" in e.hint
    assert (e.span.line, e.span.column) == (7, 20)   # at the method: `prune`


def test_prune_of_a_layer_with_lora_is_refused_at_its_pattern():
    text = SMALL.replace('adapt * with quantize(mode="dynamic")',
                         "adapt h with lora(rank=2)")
    (e,) = _errors(text)
    assert e.code == "S403" and "LoRA" in e.message and (e.span.line, e.span.column) == (7, 13)


# -- pruning ----------------------------------------------------------------------------------


def test_pruning_reaches_its_ratio_keeps_the_outputs_and_the_rest(trained, digits):
    model = copy.deepcopy(trained)
    x = preprocess_for(model).inputs(digits[1].images(torch.arange(8)))
    changed = prune_compiled(model, x)
    assert model.get_submodule("c.0").out_channels == 8
    assert model.get_submodule("d.0").out_channels == 16
    assert model.get_submodule("h.0").out_features == 32
    assert model.get_submodule("logits").out_features == 10        # the output's size stays
    assert model(*x).shape == (8, 10)
    assert changed["c.1.running_mean"] == [8] and model.pruned == changed
    kept = sum(p.numel() for p in model.parameters())
    assert kept < 0.45 * sum(p.numel() for p in trained.parameters())
    assert count_macs(model, x) < 0.5 * count_macs(trained, x)
    # the pruned model trains, and still classifies the digits after a short fine-tune
    train(model, digits[0], None, recipe=Recipe(epochs=2, lr=3e-3, batch_size=32, seed=0),
          options=Options(quiet=True, progress=False, checkpoint_every=0))
    assert accuracy_of(model.eval(), digits[1], lambda b: (b,)).accuracy > 0.5


def test_taylor_importance_prunes_by_gradients(trained, digits):
    model = copy.deepcopy(trained)
    x, y = digits[0].images(torch.arange(32)), digits[0].targets[:32]
    for plan in model.graph.graph["compression"]:
        plan["options"] = {**plan["options"], "importance": "taylor"} \
            if plan["method"] == "prune" else plan["options"]
    prune_compiled(model, (x,), loss=lambda m: nn.functional.cross_entropy(m(x), y))
    assert model.get_submodule("d.0").out_channels == 16


def test_a_pruned_artifact_loads_back_as_the_same_module(trained, digits, tmp_path):
    model = copy.deepcopy(trained)
    x = (digits[1].images(torch.arange(4)),)
    prune_compiled(model, x)
    path = save_compiled(model, tmp_path / "pruned.safetensors")
    loaded = load_compiled(path)
    assert loaded.pruned == model.pruned
    assert loaded.get_submodule("d.0").out_channels == 16
    torch.testing.assert_close(loaded(*x), model(*x), rtol=0, atol=0)


def test_resize_refuses_a_name_the_module_does_not_have():
    with pytest.raises(ValueError, match="not a tensor"):
        resize_to(nn.Sequential(nn.Linear(2, 2)), {"0.gamma": [2]})


# -- quantisation ---------------------------------------------------------------------------


def test_dynamic_int8_is_smaller_and_close_to_float_on_digits(trained, digits):
    q = quantize_compiled(trained, [])
    assert int8_layers(q) == ["h.0", "logits"]          # dynamic: the Linear layers
    x = digits[1].images(torch.arange(len(digits[1])))
    ref, out = trained(x), q(x)
    # measured: the largest difference is about 1% of the logits' range
    assert (out - ref).abs().max() < 0.05 * (ref.max() - ref.min())
    assert (out.argmax(-1) == ref.argmax(-1)).float().mean() > 0.97
    assert state_bytes(q) < state_bytes(trained)


def test_static_int8_runs_int8_convolutions_close_to_float(trained, digits):
    calib = [(digits[0].images(torch.arange(i, i + 64)),) for i in range(0, 256, 64)]
    q = quantize_compiled(trained, calib, mode="static")
    assert {"c.0", "d.0", "h.0", "logits"} <= set(int8_layers(q))
    x = digits[1].images(torch.arange(len(digits[1])))
    ref, out = trained(x), q(x)
    assert (out.argmax(-1) == ref.argmax(-1)).float().mean() > 0.95
    assert state_bytes(q) < 0.6 * state_bytes(trained)   # int8 weights; the rest is framing


def test_macs_agree_with_a_hand_count():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(8 * 8 * 8, 10))
    # conv: 8x8 outputs x 8 channels x (3 x 3 x 3) taps; linear: 512 x 10
    assert count_macs(model, (torch.zeros(1, 3, 8, 8),)) == 8 * 8 * 8 * 27 + 512 * 10


# -- synth compress --------------------------------------------------------------------------


def test_synth_compress_runs_end_to_end(tmp_path, capsys):
    from synthdsl.cli import main

    spec = tmp_path / "small.synth"
    spec.write_text(SMALL.replace('quantize(mode="dynamic")', 'quantize(mode="static")'))
    report = tmp_path / "report.json"
    with pytest.raises(SystemExit) as e:
        main(["compress", str(spec), "--data", "digits", "--epochs", "2",
              "--finetune-epochs", "1", "--student-epochs", "1", "--repeats", "2",
              "--modes", "dynamic,static", "--report", str(report)])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "pruned + quantised (static)" in out and "student, distilled" in out
    rows = {r["name"]: r for r in json.loads(report.read_text())["rows"]}
    assert list(rows) == ["synthesised", "pruned + fine-tuned", "quantised (dynamic)",
                          "pruned + quantised (dynamic)", "quantised (static)",
                          "pruned + quantised (static)", "student, distilled"]
    assert rows["pruned + fine-tuned"]["params"][0] < rows["synthesised"]["params"][0]
    assert rows["quantised (static)"]["bytes"][0] < rows["synthesised"]["bytes"][0]
    assert rows["synthesised"]["latency_ratio"]["1"][0] == 1.0
    assert rows["quantised (static)"]["int8_layers"][0] >= 4
    assert all(0 <= r["accuracy"][0] <= 1 for r in rows.values())


def test_synth_compress_refuses_a_spec_without_compression(tmp_path, capsys):
    from synthdsl.cli import main

    spec = tmp_path / "plain.synth"
    spec.write_text("synth P\ninput image: [B, 1, 8, 8]\n"
                    "logits = Flatten(image) |> Linear(out=10)\noutput logits\n")
    with pytest.raises(SystemExit) as e:
        main(["compress", str(spec), "--data", "digits"])
    assert e.value.code != 0
    assert "neither prune" in capsys.readouterr().err


@pytest.mark.parametrize("mode", ["dynamic", "static", "qat"])
def test_an_int8_artifact_loads_back_as_the_same_int8_module(trained, digits, tmp_path, mode):
    calib = [(digits[0].images(torch.arange(i, i + 64)),) for i in range(0, 256, 64)]

    def fine_tune(prepared):  # a step of quantisation-aware training
        opt = torch.optim.SGD(prepared.parameters(), lr=1e-3)
        x, y = calib[0][0], digits[0].targets[:64]
        torch.nn.functional.cross_entropy(prepared(x), y).backward()
        opt.step()

    q = quantize_compiled(trained, calib, fine_tune, mode=mode)
    path = save_compiled(q, tmp_path / f"int8-{mode}.safetensors")
    back = load_compiled(path)
    assert type(back).__name__ == "QuantizedModule" and back.record == q.record
    assert int8_layers(back) == int8_layers(q) and back.graph.name == "SmallCompress"
    x = digits[1].images(torch.arange(len(digits[1])))
    with torch.no_grad():
        assert torch.equal(back(x), q(x))
    assert state_bytes(back) == state_bytes(q)
    # edited tensors are refused, named
    from safetensors.torch import load_file, save_file
    meta = synthdsl.build.artifact.read_metadata(path)
    state = load_file(str(path))
    state.pop(sorted(state)[0])
    from synthdsl.build.artifact_format import digest_of_tensors
    meta["digest"] = digest_of_tensors(meta["artifact"], state)
    save_file(state, str(tmp_path / "cut.safetensors"), metadata=meta)
    with pytest.raises(SynthError) as e:
        load_compiled(tmp_path / "cut.safetensors")
    assert e.value.code == "S210" and "int8 tensors do not fit" in str(e.value)


def test_synth_compress_saves_its_models_and_synth_eval_reads_them(tmp_path, capsys):
    from synthdsl.cli.app import run

    spec = tmp_path / "small.synth"
    spec.write_text(SMALL.replace('quantize(mode="dynamic")', 'quantize(mode="static")'))
    out = tmp_path / "models"
    assert run(["compress", str(spec), "--data", "digits", "--epochs", "1",
                "--finetune-epochs", "1", "--student-epochs", "1", "--repeats", "1",
                "--report", str(tmp_path / "r.json"), "--save", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "int8-static.safetensors", "pruned-int8-static.safetensors", "pruned.safetensors",
        "student.safetensors", "trained.safetensors"]
    rows = {r["name"]: r for r in json.loads((tmp_path / "r.json").read_text())["rows"]}
    capsys.readouterr()
    assert run(["eval", str(out / "pruned-int8-static.safetensors"), "--data", "digits",
                "--json"]) == 0
    got = json.loads(capsys.readouterr().out)["results"][0]["accuracy"]
    assert got == pytest.approx(rows["pruned + quantised (static)"]["accuracy"][0], abs=1e-9)


def test_pruning_to_a_mac_target_keeps_at_most_that_share(digits):
    text = SMALL.replace("prune(ratio=0.5)", "prune(macs=0.6)")
    model = synthdsl.compile_spec(text, seed=0).eval()
    x = digits[1].images(torch.arange(4))
    before = count_macs(model, (x,))
    changed = prune_compiled(model, (x,))
    after = count_macs(model, (x,))
    assert after <= 0.6 * before and changed
    # it stops at the first step that reaches the target, not far below it
    assert after > 0.35 * before
    assert model(x).shape == (4, 10)
    tight = synthdsl.compile_spec(SMALL.replace("adapt c, d, h with prune(ratio=0.5)",
                                                "adapt h with prune(macs=0.2)"), seed=0)
    with pytest.raises(SynthError) as e:  # h alone is a small share of the MACs
        prune_compiled(tight, (x,))
    assert e.value.code == "S403" and "more than macs=0.2" in e.value.message
    assert e.value.span is not None and e.value.span.line == 7


VIT = """synth HeadPruned
input image: [B, 3, 32, 32]
source vit = timm("test_vit", num_classes=0, img_size=32, num_heads=4)
f = vit(image)
logits = Linear(f, out=10)
adapt vit.blocks.*.attn with prune(heads=0.5)
output logits
"""


def test_attention_heads_are_pruned_whole_and_the_artifact_keeps_them(tmp_path):
    model = synthdsl.compile_spec(VIT, seed=0).eval()
    fc1 = tuple(model.vit.blocks[0].mlp.fc1.weight.shape)
    x = model.example_inputs(2)
    changed = prune_compiled(model, x)
    for block in model.vit.blocks:
        attn = block.attn
        assert (attn.num_heads, attn.head_dim) == (2, 16)    # 4 heads of 16: half kept
        assert tuple(attn.qkv.weight.shape) == (3 * 2 * 16, 64)
        assert tuple(attn.proj.weight.shape) == (64, 32)     # the embedding stays 64 wide
        assert tuple(block.mlp.fc1.weight.shape) == fc1      # nothing else is pruned
    assert "vit.blocks.0.attn.qkv.weight" in changed and model(*x).shape == (2, 10)
    save_compiled(model, tmp_path / "heads.safetensors")
    back = load_compiled(tmp_path / "heads.safetensors")
    assert back.vit.blocks[0].attn.num_heads == 2
    with torch.no_grad():
        assert torch.equal(back(*x), model(*x))


def test_head_pruning_needs_attention_it_can_count_heads_of():
    errors = _errors(VIT.replace("vit.blocks.*.attn with", "vit.blocks.*.mlp with"))
    assert errors[0].code == "S401" and "no attention layer" in errors[0].message
    cut = VIT.replace("f = vit(image)", 'f = vit(image, at="blocks.3") |> cls_token')
    assert "a cut" in _errors(cut.replace("blocks.*.attn", "blocks.0.attn"))[0].hint
    both = _errors(VIT.replace("prune(heads=0.5)", "prune(heads=0.5, ratio=0.5)"))
    assert both[0].code == "S402" and "not heads and ratio" in both[0].message
