"""Sharded checkpoints: an index (``model.safetensors.index.json``) and its shards read as
one checkpoint, by hf(...) folders and by any source's weights=, checked from the shards'
headers, each tensor's provenance naming its shard, and every shard pinned by the lock."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

import synthdsl
from synthdsl.cli.app import run
from synthdsl.lang.errors import SynthError, SynthErrors
from tests.conftest import randomize_


def shard(state: dict, folder: Path, parts: int = 3) -> Path:
    """`state` saved in `parts` safetensors shards with an index, as save_pretrained does."""
    folder.mkdir(parents=True, exist_ok=True)
    keys = list(state)
    weight_map = {}
    for i in range(parts):
        name = f"model-{i + 1:05d}-of-{parts:05d}.safetensors"
        mine = keys[i::parts]
        save_file({k: state[k].contiguous() for k in mine}, str(folder / name))
        weight_map.update(dict.fromkeys(mine, name))
    index = folder / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return index


def timm_spec(tmp_path: Path, weights: str) -> Path:
    path = tmp_path / "s.synth"
    path.write_text('synth S\ninput image: [B, 3, 32, 32]\n'
                    f'source r = timm("test_resnet", num_classes=0, weights="{weights}")\n'
                    "feats = r(image)\noutput feats\n")
    return path


@pytest.fixture
def resnet():
    torch.manual_seed(0)
    return randomize_(timm.create_model("test_resnet", num_classes=0)).eval()


def test_a_sharded_checkpoint_is_one_source_of_weights(tmp_path, resnet):
    shard(resnet.state_dict(), tmp_path / "w")
    model = synthdsl.compile_spec(timm_spec(tmp_path, "w/model.safetensors.index.json"))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), resnet(x))
    p = model.provenance["r.conv1.0.weight"]
    assert Path(p["file"]).name.startswith("model-0000") and p["index"].endswith("index.json")
    shards = {Path(v["file"]).name for v in model.provenance.values() if "file" in v}
    assert len(shards) == 3  # each tensor from its own shard


def test_the_lock_pins_every_shard_and_a_changed_shard_is_s206(tmp_path, resnet, capsys):
    index = shard(resnet.state_dict(), tmp_path / "w")
    spec = timm_spec(tmp_path, "w/model.safetensors.index.json")
    assert run(["lock", str(spec)]) == 0
    locked = json.loads(Path(str(spec) + ".lock").read_text())["checkpoints"]
    assert sorted(locked) == ["w/model-00001-of-00003.safetensors",
                              "w/model-00002-of-00003.safetensors",
                              "w/model-00003-of-00003.safetensors",
                              "w/model.safetensors.index.json"]
    second = index.parent / "model-00002-of-00003.safetensors"
    from safetensors.torch import load_file
    state = load_file(str(second))
    key = next(iter(state))
    state[key] = state[key] + 1
    save_file(state, str(second))
    capsys.readouterr()
    assert run(["check", str(spec)]) == 1
    err = capsys.readouterr().err
    assert "S206" in err and "model-00002-of-00003.safetensors" in err


@pytest.mark.parametrize("damage, words", [
    ("missing", "the index names the shard 'model-00002-of-00003.safetensors', which is not "
                "beside it"),
    ("outside", "a shard is a .safetensors or .bin file beside the index"),
    ("wrong_shard", "which does not hold them"),
    ("not_json", "is not the index of a sharded checkpoint"),
])
def test_an_index_that_does_not_hold_together_is_s203(tmp_path, resnet, damage, words):
    index = shard(resnet.state_dict(), tmp_path / "w")
    data = json.loads(index.read_text())
    first = next(iter(data["weight_map"]))
    if damage == "missing":
        (index.parent / "model-00002-of-00003.safetensors").unlink()
    elif damage == "outside":
        data["weight_map"][first] = "../elsewhere.safetensors"
    elif damage == "wrong_shard":
        data["weight_map"][first] = "model-00003-of-00003.safetensors"
    else:
        index.write_text("{not json")
    if damage in ("outside", "wrong_shard"):
        index.write_text(json.dumps(data))
    with pytest.raises(SynthErrors) as e:
        synthdsl.check_spec(timm_spec(tmp_path, "w/model.safetensors.index.json"))
    [err] = e.value.errors
    assert err.code == "S203" and words in err.message


def test_a_shard_missing_a_tensor_of_the_model_is_s205_naming_it(tmp_path, resnet):
    state = dict(resnet.state_dict())
    state.pop("fc.weight", None)
    dropped = "layer1.0.conv1.weight"
    state.pop(dropped)
    shard(state, tmp_path / "w")
    with pytest.raises(SynthErrors) as e:
        synthdsl.check_spec(timm_spec(tmp_path, "w/model.safetensors.index.json"))
    [err] = e.value.errors
    assert err.code == "S205" and dropped in " ".join(err.notes)


def test_inheriting_from_a_sharded_checkpoint(tmp_path, resnet):
    shard(resnet.state_dict(), tmp_path / "w")
    spec = tmp_path / "i.synth"
    spec.write_text('synth I\ninput image: [B, 3, 32, 32]\n'
                    'source r = timm("test_resnet", num_classes=0)\nfeats = r(image)\n'
                    'inherit feats from checkpoint("w/model.safetensors.index.json")\n'
                    "output feats\n")
    model = synthdsl.compile_spec(spec).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), resnet(x))


transformers = pytest.importorskip("transformers")


def test_a_transformers_folder_saved_in_shards(tmp_path, one_thread):
    from tests.hf_models import write_folder

    whole = transformers.AutoModel.from_pretrained(str(write_folder("bert", tmp_path / "b")))
    whole.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    files = sorted(p.name for p in (tmp_path / "sharded").iterdir())
    assert "model.safetensors.index.json" in files and "model.safetensors" not in files
    spec = tmp_path / "t.synth"
    spec.write_text('synth T\ninput tokens: [B, T<=64] int64\nsource bert = hf("sharded")\n'
                    "h = bert(tokens)\noutput h\n")
    model = synthdsl.compile_spec(spec).eval()
    tokens = torch.randint(3, 100, (2, 9))
    with torch.no_grad():
        assert torch.equal(model(tokens), whole.eval()(input_ids=tokens).last_hidden_state)
    assert run(["lock", str(spec)]) == 0
    locked = json.loads(Path(str(spec) + ".lock").read_text())["checkpoints"]
    shards = [f for f in files if f.startswith("model-")]
    assert len(shards) > 1 and all(f"sharded/{s}" in locked for s in shards)
    (tmp_path / "sharded" / shards[0]).unlink()
    with pytest.raises(SynthError) as e:  # a shard the lock pins is gone
        synthdsl.check_spec(spec)
    assert "S206" in str(e.value) and shards[0] in str(e.value)


def test_a_hostile_index_is_s203_not_a_crash(tmp_path, resnet):
    shard(resnet.state_dict(), tmp_path / "w")
    index = tmp_path / "w" / "model.safetensors.index.json"
    spec = timm_spec(tmp_path, "w/model.safetensors.index.json")
    for text in ("[" * 200_000, '{"weight_map": {}}', '{"weight_map": {"a": 3}}',
                 '{"weight_map": {"a": "/etc/passwd.safetensors"}}'):
        index.write_text(text)
        with pytest.raises(SynthErrors) as e:
            synthdsl.check_spec(spec)
        assert e.value.errors[0].code == "S203", text[:40]
