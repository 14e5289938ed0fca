"""A spec source given what was trained of it: `spec("child.synth", weights="run")`.

The child spec is trained for one epoch on digits with `synth train` (its run folder's
``model.safetensors``); a parent reads it back whole, checked from the file's header
against the child's module compiled on meta, and every tensor read from the file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file

import synthdsl
from synthdsl.cli.app import run
from synthdsl.lang.errors import SynthError, SynthErrors
from synthdsl.library.checkpoints import TorchReader, file_sha256
from synthdsl.library.weight_keys import KeyView, ViewReader
from synthdsl.viz.summary import summary_rows
from tests.conftest import randomize_, save_checkpoint

#: The child: a trunk with a checkpoint of its own, a head, and a freeze rule.
CHILD = """synth Child
input image: [B, 3, 32, 32]
source r = timm("test_resnet", num_classes=0, weights="r.safetensors")
feats = r(image)
logits = Linear(feats, out=5)
freeze r.conv1.*, r.bn1.*
output logits
recipe epochs=1, batch_size=256
"""

#: A parent that had the child as its source `enc`, under a head of its own.
OUTER = """synth Outer
input image: [B, 3, 32, 32]
source enc = spec("child/child.synth")
feats = enc(image)
head = Linear(feats, out=5)
output head
recipe epochs=1, batch_size=256
"""


def parent(weights: str, name: str = "enc", extra: str = "") -> str:
    return (f'synth Parent\ninput image: [B, 3, 32, 32]\n'
            f'source {name} = spec("child/child.synth"{weights})\n'
            f"logits = {name}(image)\n{extra}output logits\n")


def _train(spec: Path, out: Path) -> None:
    assert run(["train", str(spec), "--data", "digits", "-o", str(out), "--classes", "0-4",
                "--no-progress", "-q"]) == 0


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """child/child.synth with its run (child/run), and outer.synth with its (outer_run)."""
    root = tmp_path_factory.mktemp("specweights")
    (root / "child").mkdir()
    torch.manual_seed(0)
    save_checkpoint(randomize_(timm.create_model("test_resnet", num_classes=0)),
                    root / "child" / "r.safetensors")
    (root / "child" / "child.synth").write_text(CHILD)
    (root / "outer.synth").write_text(OUTER)
    _train(root / "child" / "child.synth", root / "child" / "run")
    _train(root / "outer.synth", root / "outer_run")
    return root


@pytest.fixture
def work(trained, tmp_path) -> Path:
    """A copy of the trained folder this test may change."""
    shutil.copytree(trained, tmp_path / "w")
    return tmp_path / "w"


def _batch() -> torch.Tensor:
    return torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def _errors(spec: Path) -> list[SynthError]:
    return synthdsl.check_spec(spec, raise_errors=False).graph["errors"]


def test_the_trained_child_is_read_whole(work):
    spec = work / "parent.synth"
    spec.write_text(parent(', weights="child/run"', extra="train enc.r.bn1.*\n"))
    graph = synthdsl.check_spec(spec)
    assert not [w for w in graph.graph["warnings"] if w.code == "W004"]
    model = synthdsl.compile_graph(graph).eval()
    trained = synthdsl.load_compiled(work / "child" / "run" / "model.safetensors").eval()
    with torch.no_grad():
        assert torch.equal(model(_batch()), trained(_batch()))
    state, want = model.state_dict(), trained.state_dict()
    assert set(state) == {f"enc.{k}" for k in want}
    assert all(torch.equal(state[f"enc.{k}"], v) for k, v in want.items())  # BN stats too
    # every tensor comes from the file, named by its key there, via the child spec
    path = work / "child" / "run" / "model.safetensors"
    sha = file_sha256(path)
    for k in state:
        p = model.provenance[k]
        assert (p["origin"], p["file"], p["sha256"]) == ("checkpoint", str(path), sha), k
        assert p["key"] == k[len("enc."):] and p["via"] == "spec:child/child.synth"
    # the child's freeze applies, then the parent's train
    grads = {n: p.requires_grad for n, p in model.named_parameters()}
    assert not grads["enc.r.conv1.0.weight"]
    assert grads["enc.r.bn1.weight"] and grads["enc.logits.weight"]
    # the child's own checkpoint is not read: gone, nothing changes
    (work / "child" / "r.safetensors").unlink()
    again = synthdsl.compile_spec(spec).eval()
    with torch.no_grad():
        assert torch.equal(again(_batch()), trained(_batch()))


def test_a_state_dict_of_the_child_reads_as_its_run(work):
    state = load_file(str(work / "child" / "run" / "model.safetensors"))
    torch.save(state, work / "child.pt")
    spec = work / "parent.synth"
    spec.write_text(parent(', weights="child.pt"'))
    model = synthdsl.compile_spec(spec).eval()
    assert all(torch.equal(model.state_dict()[f"enc.{k}"], v) for k, v in state.items())
    assert model.provenance["enc.logits.bias"]["file"] == str(work / "child.pt")


def test_a_run_of_a_parent_is_read_under_its_source_name(work):
    outer = synthdsl.load_compiled(work / "outer_run" / "model.safetensors").eval()
    for name in ("enc", "trunk"):  # its name in the run, or another: the prefix holds it
        spec = work / f"reuse_{name}.synth"
        spec.write_text(parent(', weights="outer_run"', name))
        graph = synthdsl.check_spec(spec)
        [w] = [w for w in graph.graph["warnings"] if w.code == "W004"]
        assert w.span.line == 3 and "spec('child/child.synth')" in w.message
        notes = " ".join(w.notes)
        assert "under 'enc.'" in notes and "2 other tensor(s) of the file are not read" in notes
        model = synthdsl.compile_graph(graph).eval()
        with torch.no_grad():
            assert torch.equal(model(_batch()), outer.enc(_batch()))
        p = model.provenance[f"{name}.r.layer1.0.conv1.weight"]
        assert p["key"] == "enc.r.layer1.0.conv1.weight"
        assert p["file"].endswith("model.safetensors")


def test_a_pt_file_under_a_prefix_is_copied_out_of_the_file(work):
    state = load_file(str(work / "outer_run" / "model.safetensors"))
    torch.save(state, work / "outer.pt")
    spec = work / "reuse.synth"
    spec.write_text(parent(', weights="outer.pt"'))
    model = synthdsl.compile_spec(spec)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    reader = TorchReader(work / "outer.pt")  # memory-mapped: its tensors are the file's
    view = ViewReader(reader, KeyView.from_dict(model.graph.nodes["enc"]["weights_view"]))
    mapped = reader.get("enc.logits.weight").untyped_storage().data_ptr()
    assert view.get("logits.weight").untyped_storage().data_ptr() != mapped


def test_a_file_that_does_not_fit_the_child_is_S205(work):
    state = load_file(str(work / "child" / "run" / "model.safetensors"))
    spec = work / "parent.synth"
    cases = {
        "missing": ({k: v for k, v in state.items() if k != "logits.bias"},
                    "1 tensor(s) missing from the checkpoint: 'logits.bias'"),
        "shape": ({**state, "logits.weight": torch.zeros(7, state["logits.weight"].shape[1])},
                  "'logits.weight' has shape [7, 96] in the checkpoint, the model expects "
                  "[5, 96]"),
        "extra": ({**state, "lora_A": torch.zeros(2)},
                  "1 unexpected tensor(s) in the checkpoint: 'lora_A'"),
        "dtype": ({**state, "r.bn1.num_batches_tracked": torch.zeros(())},
                  "'r.bn1.num_batches_tracked' is float32 in the checkpoint"),
    }
    for what, (bad, note) in cases.items():
        save_file(bad, str(work / f"{what}.safetensors"))
        spec.write_text(parent(f', weights="{what}.safetensors"'))
        [e] = _errors(spec)
        assert e.code == "S205" and "spec('child/child.synth')" in e.message, what
        assert any(note in n for n in e.notes), (what, e.notes)
        column = spec.read_text().splitlines()[2].index(f'"{what}.') + 1
        assert (e.span.line, e.span.column) == (3, column)  # at the path weights= names


def test_a_file_that_changed_since_the_check_is_S205(work):
    spec = work / "parent.synth"
    spec.write_text(parent(', weights="child/run"'))
    graph = synthdsl.check_spec(spec)
    path = work / "child" / "run" / "model.safetensors"
    state = load_file(str(path))
    del state["logits.bias"]
    save_file(state, str(path))
    with pytest.raises(SynthError) as e:
        synthdsl.compile_graph(graph)
    assert e.value.code == "S205" and "changed since the spec was checked" in e.value.message
    assert "'logits.bias' is no longer in the file" in e.value.message


def test_a_missing_or_unreadable_file_is_S203(work):
    spec = work / "parent.synth"
    spec.write_text(parent(', weights="runs/none"'))
    [e] = _errors(spec)
    assert e.code == "S203" and "'runs/none' does not exist" in e.message
    (work / "junk.safetensors").write_bytes(b"not a safetensors file")
    spec.write_text(parent(', weights="junk.safetensors"'))
    [e] = _errors(spec)
    assert e.code == "S203" and "cannot read weights file 'junk.safetensors'" in e.message


def test_other_options_are_S204(work):
    spec = work / "parent.synth"
    for options, message in [
            (', weigths="child/run"', "spec(...) takes the path of a .synth file and "
             "optionally weights=, not weigths="),
            (', weights="child/run", seed=3', "not seed="),
            (", weights=3", "weights= expects a path to a .safetensors, .pt or .pth file, "
             "found 3")]:
        spec.write_text(parent(options))
        errors = [e for e in _errors(spec) if e.code != "W001"]
        assert [e.code for e in errors] == ["S204"] and message in errors[0].message, options
    spec.write_text(parent(', weigths="child/run"'))
    assert _errors(spec)[0].hint == "did you mean 'weights'?"


def test_the_lock_covers_the_file_and_not_the_childs_own(work, capsys):
    spec = work / "parent.synth"
    spec.write_text(parent(', weights="child/run"'))
    assert run(["lock", str(spec)]) == 0
    locked = json.loads((work / "parent.synth.lock").read_text())["checkpoints"]
    path = work / "child" / "run" / "model.safetensors"
    assert locked == {"child/run": file_sha256(path)}  # r.safetensors is never read
    synthdsl.check_spec(spec)
    state = load_file(str(path))
    state["logits.bias"] = state["logits.bias"] + 1
    save_file(state, str(path))
    with pytest.raises(SynthErrors) as e:
        synthdsl.check_spec(spec)
    [err] = e.value.errors
    assert err.code == "S206" and "'child/run' changed since it was locked" in err.message


def test_the_artifact_of_the_parent_loads_from_itself(work):
    spec = work / "parent.synth"
    spec.write_text(parent(', weights="child/run"'))
    assert run(["compile", str(spec), "-o", str(work / "parent.safetensors")]) == 0
    trained = synthdsl.load_compiled(work / "child" / "run" / "model.safetensors").eval()
    shutil.rmtree(work / "child")  # the spec, its checkpoint, its run: none is needed
    model = synthdsl.load_compiled(work / "parent.safetensors").eval()
    with torch.no_grad():
        assert torch.equal(model(_batch()), trained(_batch()))
    p = model.provenance["enc.r.conv1.0.weight"]
    assert p["key"] == "r.conv1.0.weight" and p["via"] == "spec:child/child.synth"
    assert model.lock["checkpoints"] == {"child/run": p["sha256"]}
    assert not model.get_parameter("enc.r.conv1.0.weight").requires_grad


def test_the_summary_and_the_picture_name_the_weights(work):
    spec = work / "parent.synth"
    spec.write_text(parent(', weights="child/run"'))
    graph = synthdsl.check_spec(spec)
    [row] = [r for r in summary_rows(graph) if r["node"] == "enc"]
    assert row["what"] == "spec:child/child.synth (weights)"
    from synthdsl.viz.describe import node_what

    assert node_what(graph.nodes["enc"]) == ("spec:child/child.synth", "checkpoint child/run")


def test_lora_adapters_of_the_child_are_part_of_its_state(tmp_path):
    (tmp_path / "lora.synth").write_text(
        "synth Lora\ninput x: [B, 8]\nh = Linear(x, out=4)\nadapt h with lora(rank=2)\n"
        "output h\n")
    child = synthdsl.compile_spec(tmp_path / "lora.synth", seed=0)
    with torch.no_grad():
        for name, p in child.named_parameters():  # "trained": B no longer zero
            p.add_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    synthdsl.save_compiled(child, tmp_path / "lora.safetensors")
    lora = [k for k in child.state_dict() if "lora" in k]
    assert lora
    spec = tmp_path / "top.synth"
    spec.write_text('synth Top\ninput x: [B, 8]\nsource a = spec("lora.synth", '
                    'weights="lora.safetensors")\ny = a(x)\noutput y\n')
    model = synthdsl.compile_spec(spec).eval()
    x = torch.randn(3, 8)
    with torch.no_grad():
        assert torch.equal(model(x), child.eval()(x))
    state = load_file(str(tmp_path / "lora.safetensors"))
    save_file({k: v for k, v in state.items() if k != lora[0]},
              str(tmp_path / "lora.safetensors"))
    [e] = _errors(spec)
    assert e.code == "S205" and f"'{lora[0]}'" in " ".join(e.notes)


def test_the_check_of_the_package_needs_no_other_import_first(trained, tmp_path):
    import subprocess
    import sys

    (trained / "fresh.synth").write_text(parent(', weights="child/run"'))
    code = ("import synthdsl\n"
            f"g = synthdsl.build_graph(synthdsl.parse_file({str(trained / 'fresh.synth')!r}))\n"
            "print(synthdsl.check_graph(g).graph['errors'])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=str(Path(__file__).resolve().parents[1]), timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
