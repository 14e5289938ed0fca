"""synth export: every example to ONNX and to a torch.export program, loaded back and
compared with the module; names, dynamic dimensions, refusals and mismatches."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest
import torch

import synthdsl
from synthdsl.build import export as export_mod
from synthdsl.build.export import ExportError, export_model
from synthdsl.cli.app import run
from synthdsl.plugins import load_plugin

MODELS = sorted((Path(__file__).resolve().parent.parent / "models").glob("*.synth"))
FORMATS = ("onnx", "pt2")

#: A plugin whose operations run in the module but that an exporter refuses: Python control
#: flow on a tensor's values (torch.export), and an op ONNX has no function for.
REFUSED = '''
import torch
from synthdsl import plugins


def flip(x):
    if x.is_meta:  # the check runs on meta tensors, which hold no values
        return x
    return x if bool((x > 0).all()) else -x


def gamma_log(x):
    return torch.lgamma(x)


plugins.register_op("flip_if_negative", flip)
plugins.register_op("gamma_log", gamma_log)
'''


@pytest.fixture(scope="module")
def compiled():
    """Each example compiled once for both formats."""
    cache: dict[Path, synthdsl.SynthModule] = {}

    def get(path: Path) -> synthdsl.SynthModule:
        if path not in cache:
            cache[path] = synthdsl.compile_spec(path, seed=0)
        return cache[path]
    return get


@pytest.fixture(scope="module")
def refused_plugin(tmp_path_factory):
    folder = tmp_path_factory.mktemp("plugin")
    (folder / "export_refused_ops.py").write_text(textwrap.dedent(REFUSED))
    import sys
    sys.path.insert(0, str(folder))
    try:
        from synthdsl.library.ops import OPS
        if "gamma_log" not in OPS:
            load_plugin("export_refused_ops")
        yield "export_refused_ops"
    finally:
        sys.path.remove(str(folder))


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("path", MODELS, ids=[p.stem for p in MODELS])
def test_every_example_exports_and_computes_what_the_module_does(path, fmt, compiled,
                                                                 tmp_path):
    model = compiled(path)
    out = tmp_path / f"{path.stem}.{fmt}"
    result = export_model(model, out)
    assert out.is_file() and out.stat().st_size == result.bytes
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no temporary file left
    assert len(result.comparisons) == 2
    assert [c.sizes["B"] for c in result.comparisons] == [2, 3]  # the batch is dynamic
    for c in result.comparisons:
        assert set(c.diffs) == set(model.output_names)
        assert c.max_diff <= 1e-4, c.diffs
    assert result.dynamic["B"] == [f"{n}:0" for n in model.input_names]
    if fmt == "onnx":
        import onnx

        proto = onnx.load(str(out))
        dims = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
                for v in [*proto.graph.input, *proto.graph.output]}
        assert [v.name for v in proto.graph.input] == list(model.input_names)
        assert [v.name for v in proto.graph.output] == list(model.output_names)
        for n in model.input_names:
            assert dims[n] == list(model.graph.nodes[n]["dims"])
        assert all(dims[n][0] == "B" for n in model.output_names)
    else:
        program = torch.export.load(str(out))
        user = program.graph_signature.user_inputs
        assert list(user) == list(model.input_names)


def test_symbols_shared_by_inputs_are_one_dimension_and_all_are_dynamic(tmp_path):
    model = synthdsl.compile_spec(textwrap.dedent("""\
        synth Maps
        input x: [B, 3, H, W]
        input t: [B, 8, T]
        h = Conv2d(x, out=4, kernel=3, padding=1) |> ReLU |> GlobalAvgPool
        s = GlobalAvgPool(t) |> Linear(out=4)
        y = add(h, s)
        output y
        """), seed=0)
    shapes = export_mod.dynamic_shapes(model)
    assert shapes["x"][0] is shapes["t"][0]
    assert {a: d.__name__ for a, d in shapes["x"].items()} == {0: "B", 2: "H", 3: "W"}
    for fmt in FORMATS:
        result = export_model(model, tmp_path / f"maps.{fmt}")
        assert result.dynamic == {"B": ["x:0", "t:0"], "H": ["x:2"], "W": ["x:3"],
                                  "T": ["t:2"]}
        # the batch at two sizes, then the other symbols at twice their example size
        assert [c.sizes for c in result.comparisons] == [
            {"B": 2, "H": 32, "W": 32, "T": 32}, {"B": 3, "H": 32, "W": 32, "T": 32},
            {"B": 2, "H": 64, "W": 64, "T": 64}]
        assert result.max_diff <= 1e-4


def test_a_model_in_training_mode_is_exported_in_eval_mode_and_left_as_it_was(tmp_path):
    model = synthdsl.compile_spec(
        "synth D input x: [B, 8] h = Linear(x, out=16) |> BatchNorm1d |> Dropout(p=0.5) "
        "y = Linear(h, out=2) output y", seed=0)
    model.train()
    result = export_model(model, tmp_path / "d.pt2")
    assert model.training
    assert result.max_diff == 0.0  # dropout and batch statistics would differ in training
    program = torch.export.load(str(tmp_path / "d.pt2")).module()
    (x,) = model.eval().example_inputs(4)
    with torch.no_grad():
        assert torch.equal(program(x), model(x))


def test_an_artifact_exports_through_the_cli_as_json(tmp_path, capsys):
    spec = MODELS[[p.stem for p in MODELS].index("token_classifier")]
    artifact = tmp_path / "model.safetensors"
    assert run(["compile", str(spec), "-o", str(artifact)]) == 0
    capsys.readouterr()
    assert run(["export", str(artifact), "-o", str(tmp_path / "model.onnx"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["spec"] == "TokenClassifier" and report["format"] == "onnx"
    assert report["inputs"] == {"tokens": ["B", 16], "mask": ["B", 16]}
    assert report["outputs"] == ["logits"]
    assert [c["sizes"] for c in report["comparisons"]] == [{"B": 2}, {"B": 3}]
    assert 0 <= report["max_diff"] <= 1e-4
    assert report["bytes"] == (tmp_path / "model.onnx").stat().st_size


def test_a_run_folder_exports_its_model(tmp_path, capsys):
    spec = tmp_path / "a.synth"
    spec.write_text("synth A\ninput image: [B, 1, 8, 8]\n"
                    "h = Flatten(image) |> Linear(out=10)\n"
                    "recipe epochs=1, batch_size=256\noutput h\n")
    assert run(["train", str(spec), "--data", "digits", "-o", str(tmp_path / "run"),
                "--no-progress", "-q"]) == 0
    capsys.readouterr()
    assert run(["export", str(tmp_path / "run"), "-o", str(tmp_path / "a.pt2"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["max_diff"] == 0
    program = torch.export.load(str(tmp_path / "a.pt2"))
    model = synthdsl.load_compiled(tmp_path / "run" / "model.safetensors")
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(program.module()(x), model(x))
    (tmp_path / "empty").mkdir()
    assert run(["export", str(tmp_path / "empty"), "-o", str(tmp_path / "b.pt2")]) == 1
    assert "it has no model.safetensors" in capsys.readouterr().err
    assert not (tmp_path / "b.pt2").exists()


def test_the_cli_says_what_was_written_and_measured(tmp_path, capsys):
    spec = MODELS[[p.stem for p in MODELS].index("dual_encoder")]
    assert run(["export", str(spec), "-o", str(tmp_path / "m.pt2")]) == 0
    out = capsys.readouterr().out
    assert "synth DualEncoder: exported" in out
    assert "inputs  image [B, 1, 32, 32], tokens [B, 8] int64, mask [B, 8] bool" in out
    assert "outputs img, txt" in out
    assert "dynamic B (image:0, tokens:0, mask:0)" in out
    assert "B=2: max |diff| 0, B=3: max |diff| 0 (atol 0.0001)" in out


def test_outputs_beyond_the_tolerance_are_x002_and_nothing_is_written(tmp_path, monkeypatch,
                                                                       capsys):
    write, load = export_mod.WRITERS["pt2"]

    def off_by_a_little(path, model):
        program = load(path, model)
        return lambda *inputs: program(*inputs) + 1e-3
    monkeypatch.setitem(export_mod.WRITERS, "pt2", (write, off_by_a_little))
    spec = "synth Off input x: [B, 4] y = Linear(x, out=2) output y"
    model = synthdsl.compile_spec(spec, seed=0)
    with pytest.raises(ExportError) as e:
        export_model(model, tmp_path / "off.pt2")
    assert e.value.code == "X002"
    assert "beyond atol 0.0001 at B=2: 'y' by 0.001; nothing was written" in e.value.message
    assert list(tmp_path.iterdir()) == []
    # a looser tolerance passes, and writes
    assert export_model(model, tmp_path / "off.pt2", atol=2e-3).max_diff == pytest.approx(
        1e-3, rel=1e-3)
    (tmp_path / "spec.synth").write_text(spec)
    os.remove(tmp_path / "off.pt2")
    assert run(["export", str(tmp_path / "spec.synth"), "-o", str(tmp_path / "off.pt2")]) == 1
    err = capsys.readouterr().err
    assert "error[X002]" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.synth"]


@pytest.mark.parametrize("op, fmt, exporter, words", [
    ("flip_if_negative", "pt2", "torch.export", "data-dependent"),
    ("flip_if_negative", "onnx", "torch.export", "data-dependent"),
    ("gamma_log", "onnx", "the ONNX exporter", "No ONNX function found"),
])
def test_an_op_the_exporter_refuses_is_x001_naming_its_node(refused_plugin, tmp_path, capsys,
                                                             op, fmt, exporter, words):
    spec = tmp_path / "refused.synth"
    spec.write_text(f"synth Refused\ninput x: [B, 4]\nh = Linear(x, out=4)\ny = {op}(h)\n"
                    "output y\n")
    model = synthdsl.compile_spec(spec, seed=0)
    with torch.no_grad():
        model(*model.example_inputs())  # the module itself runs
    with pytest.raises(ExportError) as e:
        export_model(model, tmp_path / f"refused.{fmt}")
    assert e.value.code == "X001"
    assert e.value.message.startswith(f"{exporter} cannot export 'y' (op): ")
    assert words in e.value.message
    assert (e.value.span.line, e.value.span.column) == (4, 5)
    assert run(["--plugin", refused_plugin, "export", str(spec), "-o",
                str(tmp_path / f"refused.{fmt}")]) == 1
    err = capsys.readouterr().err
    assert f"error[X001]: {exporter} cannot export 'y' (op)" in err
    assert "4 | y = " in err and "Traceback" not in err and "def forward" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["refused.synth"]


def test_onnx_without_the_extra_names_it(tmp_path, monkeypatch, capsys):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnxscript" else find_spec(name, *a))
    with pytest.raises(ExportError, match=r"needs onnxscript, which is not installed") as e:
        export_mod.require_onnx()
    assert "pip install synthdsl[export]" in e.value.hint
    spec = tmp_path / "a.synth"
    spec.write_text("synth A input x: [B, 4] y = Linear(x, out=2) output y")
    assert run(["export", str(spec), "-o", str(tmp_path / "a.onnx")]) == 1
    assert "pip install synthdsl[export]" in capsys.readouterr().err
    # a torch.export program needs no extra
    assert run(["export", str(spec), "-o", str(tmp_path / "a.pt2")]) == 0


@pytest.mark.parametrize("argv, words", [
    (["-o", "model.tflite"], "cannot tell the export format of 'model.tflite'"),
    (["-o", "model.pt2", "--atol", "-1"], "--atol must be a number ≥ 0, not -1.0"),
])
def test_requests_that_cannot_be_carried_out(tmp_path, capsys, monkeypatch, argv, words):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.synth").write_text("synth A input x: [B, 4] y = Linear(x, out=2) output y")
    assert run(["export", "a.synth", *argv]) == 1
    assert words in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.synth"]


def test_exporting_onto_the_spec_itself_is_refused(tmp_path, capsys):
    spec = tmp_path / "a.pt2"
    spec.write_text("synth A input x: [B, 4] y = Linear(x, out=2) output y")
    assert run(["export", str(spec), "-o", str(spec)]) == 1
    assert "error[" in capsys.readouterr().err
    assert spec.read_text().startswith("synth A")


def test_weights_beside_an_onnx_model_when_asked_or_past_the_inline_limit(tmp_path, capsys,
                                                                         monkeypatch):
    pytest.importorskip("onnxruntime")
    spec = MODELS[[p.stem for p in MODELS].index("token_classifier")]
    out = tmp_path / "big.onnx"
    assert run(["export", str(spec), "-o", str(out), "--external-data"]) == 0
    assert "weights in big.onnx.data" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.onnx", "big.onnx.data"]
    import onnx
    model = onnx.load(str(out), load_external_data=False)
    assert any(i.external_data for i in model.graph.initializer)
    assert (tmp_path / "big.onnx.data").stat().st_size > 10_000
    # past the inline limit it is done without asking; a failed check leaves nothing
    monkeypatch.setattr(export_mod, "INLINE_MAX_BYTES", 0)
    compiled = synthdsl.compile_spec(spec)
    result = export_model(compiled, tmp_path / "auto" / "m.onnx")
    assert result.external and (tmp_path / "auto" / "m.onnx.data").is_file()
    monkeypatch.setattr(export_mod, "compare", lambda *a, **k: [
        export_mod.Comparison({"B": 2}, {"logits": 1.0})])
    with pytest.raises(ExportError):
        export_model(compiled, tmp_path / "bad" / "m.onnx")
    assert list((tmp_path / "bad").iterdir()) == []
    assert run(["export", str(spec), "-o", str(tmp_path / "p.pt2"), "--external-data"]) == 1
    assert "keeps an ONNX model's weights" in capsys.readouterr().err
