"""hf(...) sources: each family's compiled parts equal the Transformers model they came
from, with the same weights (whole, a chosen output, a hidden state, a submodule, a
slice of its layers); the errors of a folder, an output and weights that do not fit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

import synthdsl  # noqa: E402
from synthdsl.lang.errors import SynthError, SynthErrors  # noqa: E402
from tests.hf_models import FAMILIES, write_folder  # noqa: E402


@pytest.fixture(scope="session")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf")
    return {f: write_folder(f, root / f, seed=i, preprocessor=f == "vit")
            for i, f in enumerate(FAMILIES)}


def _input(family: str) -> torch.Tensor:
    shape, dtype = FAMILIES[family][2], FAMILIES[family][3]
    g = torch.Generator().manual_seed(3)
    if dtype == "int64":
        return torch.randint(3, 100, shape, generator=g)
    return torch.randn(shape, generator=g)


def _spec(folder: Path, family: str, body: str, name: str = "T") -> Path:
    shape, dtype = FAMILIES[family][2], FAMILIES[family][3]
    dims = ", ".join(["B", *map(str, shape[1:])])
    path = folder.parent / f"{family}_{name}.synth"
    path.write_text(f"synth {name}\ninput x: [{dims}] {dtype}\n{body}")
    return path


def _reference(folder: Path):
    return transformers.AutoModel.from_pretrained(str(folder)).eval()


def _call(module, *args):
    from synthdsl.library.hf_parts import _mask_kwargs

    return module(*args, **_mask_kwargs(module))


@pytest.mark.parametrize("family", list(FAMILIES))
def test_each_family_equals_transformers(family, folders, one_thread):
    folder = folders[family]
    _, _, _, _, sub, layers = FAMILIES[family]
    ref = _reference(folder)
    x = _input(family)
    with torch.no_grad():
        want = ref(**{ref.main_input_name: x}, output_hidden_states=True)
    pooled = getattr(want, "pooler_output", None) is not None
    body = (f'source w = hf("{family}")\nsource k = hf("{family}")\n'
            f'source s = hf("{family}")\nsource l = hf("{family}")\n'
            + (f'source p = hf("{family}")\npooled = p(x, output="pooler_output")\n'
               if pooled else "")
            + f"whole = w(x)\nstate = k(x, hidden_state=1)\npart = s.{sub}(x)\n"
            f"first = l.{layers}[0:1](state)\n"
            f"output whole, state, part, first{', pooled' if pooled else ''}\n")
    graph = synthdsl.check_spec(_spec(folder, family, body))
    model = synthdsl.compile_graph(graph).eval()
    with torch.no_grad():
        got = model(x)
        layer = _call(ref.get_submodule(layers)[0], want.hidden_states[1])
        layer = layer if isinstance(layer, torch.Tensor) else layer[0]
        submodule = ref.get_submodule(sub)(x)
    torch.testing.assert_close(got["whole"], want.last_hidden_state, atol=1e-5, rtol=0)
    torch.testing.assert_close(got["state"], want.hidden_states[1], atol=1e-5, rtol=0)
    torch.testing.assert_close(got["part"], submodule, atol=1e-5, rtol=0)
    torch.testing.assert_close(got["first"], layer, atol=1e-5, rtol=0)
    if pooled:
        torch.testing.assert_close(got["pooled"], want.pooler_output, atol=1e-5, rtol=0)
    # what the check predicted is what ran
    for name, y in got.items():
        shape = graph.nodes[f"output:{name}"]["shape"]
        assert tuple(y.shape) == tuple(2 if d == "B" else d for d in shape), name


def test_a_layer_slice_of_bert_is_its_hidden_state(folders):
    """embeddings, then layers 0 and 1: BERT's hidden state 2 (no mask: every token kept)."""
    folder = folders["bert"]
    body = ('source t = hf("bert")\nh = t.encoder.layer[0:2](t.embeddings(x))\n'
            "output h\n")
    model = synthdsl.compile_spec(_spec(folder, "bert", body, "Slice")).eval()
    x = _input("bert")
    with torch.no_grad():
        want = _reference(folder)(input_ids=x, output_hidden_states=True).hidden_states[2]
        torch.testing.assert_close(model(x), want, atol=1e-5, rtol=0)


def test_several_hidden_states_unpack_and_the_last_is_the_output(folders):
    folder = folders["bert"]
    body = 'source t = hf("bert")\na, b = t(x, hidden_states=[0, -1])\noutput a, b\n'
    model = synthdsl.compile_spec(_spec(folder, "bert", body, "Several")).eval()
    x = _input("bert")
    with torch.no_grad():
        got = model(x)
        want = _reference(folder)(input_ids=x, output_hidden_states=True)
    torch.testing.assert_close(got["a"], want.hidden_states[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(got["b"], want.last_hidden_state, atol=1e-5, rtol=0)


def test_only_the_tensors_the_spec_keeps_are_read(folders):
    folder = folders["bert"]
    body = 'source t = hf("bert")\ne = t.embeddings(x)\noutput e\n'
    model = synthdsl.compile_spec(_spec(folder, "bert", body, "Keeps"))
    keys = set(model.state_dict())
    assert keys and all(k.startswith("t.embeddings.") for k in keys)
    origins = {v["origin"] for v in model.provenance.values()}
    assert origins == {"checkpoint"}
    assert all(v["file"].endswith("model.safetensors") for v in model.provenance.values())


def test_the_source_is_labelled_and_summarised_with_its_folder(folders):
    from synthdsl.viz.summary import render_summary

    folder = folders["vit"]
    graph = synthdsl.check_spec(_spec(folder, "vit", 'source t = hf("vit")\ny = t(x)\n'
                                      "output y\n", "Label"))
    assert graph.nodes["t"]["label"] == "hf:vit"
    assert "hf:vit (weights)" in render_summary(graph)


def test_a_vision_folder_s_preprocessing_is_its_preprocessor_config(folders):
    from synthdsl.library.cache import sources_of

    graph = synthdsl.check_spec(_spec(folders["vit"], "vit", 'source t = hf("vit")\n'
                                      "y = t(x)\noutput y\n", "Pre"))
    config = sources_of(graph).data_config("t")
    assert config == {"mean": (0.5, 0.4, 0.3), "std": (0.2, 0.25, 0.3),
                      "interpolation": "bicubic", "input_size": (3, 32, 32)}
    graph = synthdsl.check_spec(_spec(folders["bert"], "bert", 'source t = hf("bert")\n'
                                      "y = t(x)\noutput y\n", "Pre"))
    assert sources_of(graph).data_config("t") is None


def test_non_persistent_buffers_are_transformers_own(folders):
    """position_ids made on a meta model by Transformers' initialisation equal those of a
    model built on the CPU."""
    from synthdsl.library.hf_source import restore_buffers

    for family in FAMILIES:
        config = transformers.AutoConfig.from_pretrained(str(folders[family]))
        with torch.device("meta"):
            meta = transformers.AutoModel.from_config(config)
        cpu = transformers.AutoModel.from_config(config)
        assert restore_buffers(meta)
        for name, buf in cpu.named_buffers():
            if name not in cpu.state_dict():
                assert torch.equal(dict(meta.named_buffers())[name], buf), (family, name)


def test_a_task_model_s_checkpoint_gives_its_base_model(tmp_path, folders):
    """A BertForSequenceClassification folder: its keys under `bert.` are read, its head
    is left."""
    config = transformers.AutoConfig.from_pretrained(str(folders["bert"]))
    torch.manual_seed(5)
    task = transformers.BertForSequenceClassification(config)
    task.save_pretrained(tmp_path / "mlm")
    body = 'source t = hf("mlm")\ny = t(x)\noutput y\n'
    model = synthdsl.compile_spec(_spec(tmp_path / "mlm", "bert", body, "Task")).eval()
    x = _input("bert")
    with torch.no_grad():
        want = task.bert.eval()(input_ids=x).last_hidden_state
        torch.testing.assert_close(model(x), want, atol=1e-5, rtol=0)


def test_options_override_the_config(folders):
    body = 'source t = hf("bert", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)\n' \
           "y = t(x)\noutput y\n"
    model = synthdsl.compile_spec(_spec(folders["bert"], "bert", body, "Opts"))
    assert model.t.config.hidden_dropout_prob == 0.0
    model.train()  # no dropout: training mode gives the same values
    x = _input("bert")
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x))


def _errors(folder: Path, family: str, body: str) -> list[SynthError]:
    with pytest.raises(SynthErrors) as caught:
        synthdsl.check_spec(_spec(folder, family, body, "Bad"))
    return caught.value.errors


@pytest.mark.parametrize("body, code, words", [
    ('source t = hf("bert", hidden_dropout=0.1)\ny = t(x)\noutput y\n', "S402",
     "has no option 'hidden_dropout'"),
    ('source t = hf("bert", weights="w.safetensors")\ny = t(x)\noutput y\n', "S402",
     "takes no weights="),
    ('source t = hf("bert")\ny = t(x, output="pooled")\noutput y\n', "S402",
     "has no output 'pooled'; its outputs are 'last_hidden_state', 'pooler_output'"),
    ('source t = hf("bert")\ny = t(x, hidden_state=3)\noutput y\n', "S402",
     "hidden state 3 does not exist: the model gives 3"),
    ('source t = hf("bert")\ny = t(x, at="encoder")\noutput y\n', "S402",
     "torch.fx cannot cut"),
    ('source t = hf("bert")\ny = t(x, outputs="x")\noutput y\n', "S402",
     "has no option 'outputs'"),
    ('source t = hf("bert")\ny = t.embeddings(x, output="a")\noutput y\n', "S402",
     "has no output 'a': it gives a Tensor, not a model output"),
    ('source t = hf("bert")\ny = t.encoder(x, hidden_state=1)\noutput y\n', "S402",
     "has no option 'hidden_state'"),
    ('source t = hf("bert")\ny = t.encoders(x)\noutput y\n', "S202",
     "has no submodule 'encoders'"),
    ('source t = hf("bert")\ny = t(x, output="pooler_output", hidden_state=1)\noutput y\n',
     "S402", "give one of"),
])
def test_mistakes_are_diagnostics_at_the_spec(folders, body, code, words):
    (e,) = _errors(folders["bert"], "bert", body)
    assert e.code == code and words in e.message, e.message
    assert e.span is not None


def test_folders_without_a_model(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "config.json").write_text('{"model_type": "bertt"}')
    (tmp_path / "noweights").mkdir()
    (tmp_path / "noweights" / "config.json").write_text('{"model_type": "bert"}')
    cases = {"./missing": ("S203", "folder './missing' does not exist"),
             "empty": ("S203", "folder 'empty' has no config.json"),
             "odd": ("S201", "model_type 'bertt', which Transformers does not know"),
             "noweights": ("S203", "has no weights file")}
    for target, (code, words) in cases.items():
        (e,) = _errors(tmp_path / target, "bert", f'source t = hf("{target}")\n'
                       "y = t(x)\noutput y\n")
        assert e.code == code and words in e.message, e.message
        assert (e.span.line, e.span.column) == (3, 15)  # at the target
    (e,) = _errors(tmp_path / "odd", "bert", 'source t = hf("odd")\ny = t(x)\noutput y\n')
    assert "did you mean 'bert'" in e.hint


def test_a_hub_name_offline_without_a_cache_is_s203(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    (e,) = _errors(tmp_path / "x", "bert", 'source t = hf("synthdsl-test/no-such-model")\n'
                   "y = t(x)\noutput y\n")
    assert e.code == "S203" and "HF_HUB_OFFLINE=1 and it is not in the cache" in e.message


def test_weights_that_do_not_fit_are_s205(tmp_path, folders):
    import shutil

    shutil.copytree(folders["bert"], tmp_path / "misfit")
    config = json.loads((tmp_path / "misfit" / "config.json").read_text())
    config["intermediate_size"] = 40
    (tmp_path / "misfit" / "config.json").write_text(json.dumps(config))
    (e,) = _errors(tmp_path / "misfit", "bert", 'source t = hf("misfit")\ny = t(x)\n'
                   "output y\n")
    assert e.code == "S205" and "'misfit/model.safetensors' does not fit" in e.message
    assert any("has shape [37, 32] in the checkpoint, the model expects [40, 32]" in n
               for n in e.notes)


def test_without_transformers_an_hf_source_says_how_to_install_it(folders, monkeypatch):
    from synthdsl.library import hf_source

    monkeypatch.setattr(hf_source, "has_transformers", lambda: False)
    (e,) = _errors(folders["bert"], "bert", 'source t = hf("bert")\ny = t(x)\noutput y\n')
    assert e.code == "S201" and "needs Hugging Face Transformers" in e.message
    assert "pip install synthdsl[hf]" in e.hint


def test_the_lock_covers_the_folder_s_weights_and_config(tmp_path, folders):
    import shutil

    from synthdsl.build.locks import checkpoints, verify_lock, write_lock
    from synthdsl.graph import build_graph
    from synthdsl.lang.parse import parse_file

    shutil.copytree(folders["bert"], tmp_path / "bert")
    spec = _spec(tmp_path / "bert", "bert", 'source t = hf("bert")\ny = t(x)\noutput y\n',
                 "Locked")
    graph = build_graph(parse_file(spec))
    assert sorted(checkpoints(graph).values()) == ["bert/config.json",
                                                   "bert/model.safetensors"]
    write_lock(graph, spec)
    assert verify_lock(graph, spec) == []
    config = tmp_path / "bert" / "config.json"
    config.write_text(config.read_text().replace('"hidden_act": "gelu"',
                                                 '"hidden_act": "relu"'))
    (e,) = verify_lock(graph, spec)
    assert e.code == "S206" and "config file 'bert/config.json' changed" in e.message


def test_timm_vit_blocks_inherit_from_an_hf_vit_with_q_k_v_joined(tmp_path, one_thread):
    """map="hf_vit_to_timm": timm's blocks from Transformers' layers, q, k and v joined
    into qkv; the blocks then give what the Transformers layers give."""
    folder = write_folder("vit", tmp_path / "vit", seed=7, intermediate_size=64,
                          layer_norm_eps=1e-6)
    spec = _spec(folder, "vit", 'source donor = hf("vit")\n'
                 'source tv = timm("vit_tiny_patch16_224", img_size=32, patch_size=8, '
                 "embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0, num_classes=0)\n"
                 "tokens = donor.embeddings(x)\nout = tv.blocks(tokens)\n"
                 'inherit out from donor.layers with map="hf_vit_to_timm"\noutput out\n',
                 "Inherit")
    model = synthdsl.compile_spec(spec).eval()
    x = _input("vit")
    with torch.no_grad():
        want = _reference(folder)(pixel_values=x, output_hidden_states=True).hidden_states[2]
        torch.testing.assert_close(model(x), want, atol=1e-5, rtol=0)
    qkv = model.provenance["tv.blocks.0.attn.qkv.weight"]
    assert qkv["origin"] == "inherited" and qkv["transform"] == "join q, k, v (dim 0)"
    # the file's own names (Transformers saves a ViT under its 4.x names)
    assert qkv["key"] == [f"encoder.layer.0.attention.attention.{p}.weight"
                          for p in ("query", "key", "value")]
    assert qkv["file"].endswith("model.safetensors") and len(qkv["sha256"]) == 64
    assert model.provenance["tv.blocks.1.mlp.fc2.bias"]["key"] == \
        "encoder.layer.1.output.dense.bias"


def test_hf_vit_to_timm_is_strict(tmp_path):
    folder = write_folder("vit", tmp_path / "vit", seed=7, intermediate_size=64)
    head = ('source donor = hf("vit")\nsource tv = timm("vit_tiny_patch16_224", img_size=32, '
            "patch_size=8, embed_dim=32, depth={depth}, num_heads=2, mlp_ratio=2.0, "
            "num_classes=0)\ntokens = donor.embeddings(x)\nout = tv.blocks(tokens)\n")
    # three timm blocks, two Transformers layers: block 2 has no donor
    (e,) = _errors(folder, "vit", head.format(depth=3) + 'inherit out from donor.layers '
                   'with map="hf_vit_to_timm"\noutput out\n')
    assert e.code == "S207" and "cannot inherit from 'donor.layers' strictly" in e.message
    assert "'2.attn.qkv.weight' of the target is not in the donor" in e.notes
    # a wider MLP in timm: the shapes are named
    (e,) = _errors(folder, "vit", head.format(depth=2).replace("mlp_ratio=2.0", "mlp_ratio=4.0")
                   + 'inherit out from donor.layers with map="hf_vit_to_timm"\noutput out\n')
    assert e.code == "S207"
    assert any("'layers.0.mlp.fc1.weight' has shape [64, 32], 'tv.blocks.0.mlp.fc1.weight' "
               "has [128, 32]" in n for n in e.notes), e.notes


def test_the_translation_table():
    from synthdsl.library.zoo_maps import translate

    assert translate("layers.3.attention.k_proj.bias") == ("blocks.3.attn.qkv.bias", 1)
    assert translate("encoder.layer.0.attention.attention.value.weight") == \
        ("blocks.0.attn.qkv.weight", 2)
    assert translate("1.attention.output.dense.weight") == ("1.attn.proj.weight", None)
    assert translate("intermediate.dense.bias") == ("mlp.fc1.bias", None)
    assert translate("embeddings.position_embeddings") == ("pos_embed", None)
    assert translate("pooler.dense.weight") is None


def test_a_folder_with_an_older_pytorch_model_bin(tmp_path, folders):
    """pytorch_model.bin is read with torch.load(weights_only=True), as any .bin."""
    import shutil

    from safetensors.torch import load_file

    shutil.copytree(folders["distilbert"], tmp_path / "old")
    state = load_file(str(tmp_path / "old" / "model.safetensors"))
    torch.save(state, tmp_path / "old" / "pytorch_model.bin")
    (tmp_path / "old" / "model.safetensors").unlink()
    body = 'source t = hf("old")\ny = t(x)\noutput y\n'
    graph = synthdsl.check_spec(_spec(tmp_path / "old", "distilbert", body, "Bin"))
    assert graph.nodes["t"]["weights_text"] == "old/pytorch_model.bin"
    model = synthdsl.compile_graph(graph).eval()
    x = _input("distilbert")
    with torch.no_grad():
        want = _reference(folders["distilbert"])(input_ids=x).last_hidden_state
        torch.testing.assert_close(model(x), want, atol=1e-5, rtol=0)


def test_a_hub_name_is_read_from_its_snapshot(folders, monkeypatch):
    """A target that is no folder and reads like `org/name` is the hub's model: its
    snapshot folder (here a local one standing in for the hub's cache) is read."""
    from synthdsl.library import hf_source

    asked = []
    monkeypatch.setattr(hf_source, "hub_folder",
                        lambda repo, offline: asked.append(repo) or str(folders["bert"]))
    body = 'source t = hf("some-org/tiny-bert")\ny = t(x)\noutput y\n'
    graph = synthdsl.check_spec(_spec(folders["bert"].parent / "hub", "bert", body, "Hub"))
    assert graph.nodes["t"]["hub"] == "some-org/tiny-bert" and asked
    model = synthdsl.compile_graph(graph).eval()
    x = _input("bert")
    with torch.no_grad():
        torch.testing.assert_close(model(x), _reference(folders["bert"])(input_ids=x)
                                   .last_hidden_state, atol=1e-5, rtol=0)
    assert {v["file"] for v in model.provenance.values()} == \
        {str(folders["bert"] / "model.safetensors")}


def test_an_attention_mask_given_by_keyword_reaches_the_model():
    transformers = pytest.importorskip("transformers")
    root = Path(__file__).resolve().parent.parent
    folder = root / "models" / "ckpt" / "hf_tiny_bert"
    spec = ("synth Masked\ninput tokens: [B, 16] int64\ninput mask: [B, 16] bool\n"
            f'source bert = hf("{folder}")\nwords = bert(tokens, attention_mask=mask)\n'
            "output words\n")
    model = synthdsl.compile_spec(spec).eval()
    reference = transformers.AutoModel.from_pretrained(str(folder)).eval()
    tokens = torch.randint(0, 50, (2, 16))
    mask = torch.ones(2, 16, dtype=torch.bool)
    mask[0, 10:] = False  # the first sentence is padded after 10 tokens
    with torch.no_grad():
        got = model(tokens, mask)
        want = reference(input_ids=tokens, attention_mask=mask).last_hidden_state
        unmasked = reference(input_ids=tokens).last_hidden_state
    assert torch.allclose(got, want, atol=1e-5)
    assert not torch.allclose(got[0], unmasked[0], atol=1e-3)  # the mask changed it
    with pytest.raises(SynthError) as e:  # a mask of another length, at the check
        synthdsl.check_spec(spec.replace("input mask: [B, 16]", "input mask: [B, 12]"))
    assert "S301" in str(e.value)


def test_an_artifact_of_an_hf_spec_carries_its_config(tmp_path):
    pytest.importorskip("transformers")
    root = Path(__file__).resolve().parent.parent
    spec = root / "models" / "text_head_bert.synth"
    model = synthdsl.compile_spec(spec, seed=0).eval()
    out = tmp_path / "bert_head.safetensors"
    synthdsl.save_compiled(model, out)
    elsewhere = tmp_path / "moved"
    elsewhere.mkdir()
    moved = elsewhere / "copy.safetensors"  # far from the folder: built from what it carries
    moved.write_bytes(out.read_bytes())
    loaded = synthdsl.load_compiled(moved).eval()
    tokens = torch.randint(0, 50, (2, 16))
    with torch.no_grad():
        assert torch.equal(loaded(tokens), model(tokens))
    from safetensors import safe_open

    with safe_open(str(moved), "pt") as f:
        meta = json.loads(f.metadata()["artifact"])
    assert meta["configs"]["ckpt/hf_tiny_bert"]["config"]["model_type"] == "bert"
