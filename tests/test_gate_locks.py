"""Every command that reads weights through a spec honours the lock beside it.

`synth lock SPEC` writes ``SPEC.lock``; after that, a checkpoint that changed, vanished or
is not in the lock is S206 naming the file and both sha256 — for `check`, `compile`,
`summary`, `nodes`, `train`, `eval SPEC`, and the Python façade — before any checkpoint is
read for its header or its tensors (only hashed), and nothing is written. A lock that is a
directory, a dangling link or not a lock is S206 too, never an internal error.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

import synthdsl
from synthdsl.build.locks import provenance_errors
from synthdsl.cli.app import run
from synthdsl.lang.errors import SynthError
from synthdsl.library import checkpoints
from synthdsl.train.run import train_spec

ARCH = "test_resnet"
SPEC = ('synth Locked\ninput x: [B, 3, 32, 32]\n'
        'source r = timm("test_resnet", num_classes=5, weights="w.safetensors")\n'
        "y = r(x)\noutput y\n")


def save_weights(path: Path, seed: int) -> str:
    torch.manual_seed(seed)
    model = timm.create_model(ARCH, num_classes=5)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> tuple[Path, Path]:
    """Two checkpoints of one architecture with different values."""
    folder = tmp_path_factory.mktemp("weights")
    a, b = folder / "a.safetensors", folder / "b.safetensors"
    save_weights(a, 0)
    save_weights(b, 1)
    return a, b


@pytest.fixture
def locked(tmp_path, weights) -> tuple[Path, str, str]:
    """A spec locked on checkpoint a, whose checkpoint is then replaced by b."""
    a, b = weights
    spec = tmp_path / "spec.synth"
    spec.write_text(SPEC)
    w = tmp_path / "w.safetensors"
    w.write_bytes(a.read_bytes())
    assert run(["lock", str(spec)]) == 0
    w.write_bytes(b.read_bytes())
    return spec, hashlib.sha256(a.read_bytes()).hexdigest(), \
        hashlib.sha256(b.read_bytes()).hexdigest()


@pytest.fixture
def headers(monkeypatch) -> list:
    """Every checkpoint header or tensor table read (a hash reads the bytes, not these)."""
    seen: list = []
    original = checkpoints._read_header
    monkeypatch.setattr(checkpoints, "_read_header",
                        lambda f, size: seen.append(getattr(f, "name", f)) or original(f, size))
    load = checkpoints.load_torch
    monkeypatch.setattr(checkpoints, "load_torch",
                        lambda path, mmap: seen.append(path) or load(path, mmap))
    return seen


def listing(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def assert_s206(err: str, *words: str) -> None:
    assert "error[S206]" in err, err
    assert "internal error" not in err and "Traceback" not in err, err
    for w in words:
        assert w in err, err


# ---- 1: every command refuses a checkpoint that changed since the lock ----------------


@pytest.mark.parametrize("argv", [
    ["compile", "{spec}", "-o", "{dir}/out.safetensors"],
    ["summary", "{spec}"],
    ["summary", "{spec}", "--inheritance"],
    ["nodes", "{spec}", "r"],
    ["lock", "{spec}", "--verify"],
    ["eval", "{spec}", "--data", "digits"],
    ["train", "{spec}", "--data", "digits", "-o", "{dir}/run", "--epochs", "1"],
], ids=lambda a: " ".join(a[:2 if a[0] != "summary" else 3]).replace("{spec}", "SPEC"))
def test_changed_checkpoint_is_refused_before_it_is_read(locked, headers, capsys, argv):
    spec, old, new = locked
    before = listing(spec.parent)
    args = [a.format(spec=spec, dir=spec.parent) for a in argv]
    assert run(args) == 1
    err = capsys.readouterr().err
    assert_s206(err, "w.safetensors", "changed since it was locked", old, new, "spec.synth:3:")
    assert headers == []  # hashed, never opened as a checkpoint
    assert listing(spec.parent) == before and not (spec.parent / "run").exists()


def test_check_reports_the_changed_checkpoint(locked, capsys):
    spec, old, new = locked
    assert run(["check", str(spec)]) == 1
    assert_s206(capsys.readouterr().err, "changed since it was locked", old[:16], new[:16])


def test_python_facade_and_train_refuse_too(locked, headers, tmp_path):
    spec, old, new = locked
    for call in (lambda: synthdsl.check_spec(spec), lambda: synthdsl.compile_spec(spec),
                 lambda: train_spec(spec, "digits", tmp_path / "run")):
        with pytest.raises(SynthError) as e:
            call()
        assert e.value.code == "S206" and new in "\n".join(e.value.notes)
    assert headers == [] and not (tmp_path / "run").exists()


def test_a_matching_lock_passes(tmp_path, weights, capsys):
    spec = tmp_path / "spec.synth"
    spec.write_text(SPEC)
    (tmp_path / "w.safetensors").write_bytes(weights[0].read_bytes())
    assert run(["lock", str(spec)]) == 0
    assert run(["lock", str(spec), "--verify"]) == 0
    assert run(["compile", str(spec), "-o", str(tmp_path / "out.safetensors")]) == 0
    assert run(["check", str(spec)]) == 0
    assert synthdsl.load_compiled(tmp_path / "out.safetensors").lock["checkpoints"] == {
        "w.safetensors": hashlib.sha256(weights[0].read_bytes()).hexdigest()}


def test_locking_again_accepts_the_new_checkpoint(locked, capsys):
    spec, _, new = locked
    assert run(["lock", str(spec)]) == 0  # a new lock is written, not verified
    assert json.loads(Path(str(spec) + ".lock").read_text())["checkpoints"] == {
        "w.safetensors": new}
    assert run(["compile", str(spec)]) == 0


def test_missing_and_unlocked_checkpoints(tmp_path, weights, capsys, headers):
    spec = tmp_path / "spec.synth"
    spec.write_text(SPEC)
    w = tmp_path / "w.safetensors"
    w.write_bytes(weights[0].read_bytes())
    assert run(["lock", str(spec)]) == 0
    w.unlink()
    assert run(["compile", str(spec)]) == 1
    assert_s206(capsys.readouterr().err, "locked", "but missing")
    w.write_bytes(weights[0].read_bytes())
    spec.write_text(SPEC.replace("y = r(x)", 'source s = timm("test_resnet", num_classes=5, '
                                 'weights="v.safetensors")\ny = r(x)\nz = s(x)')
                    .replace("output y", "output y, z"))
    (tmp_path / "v.safetensors").write_bytes(weights[1].read_bytes())
    capsys.readouterr()
    headers.clear()
    assert run(["compile", str(spec)]) == 1
    assert_s206(capsys.readouterr().err, "'v.safetensors' is not in the lock file")
    assert headers == []


def test_a_checkpoint_of_an_imported_spec_is_locked(tmp_path, weights, capsys, headers):
    (tmp_path / "enc").mkdir()
    (tmp_path / "enc" / "enc.synth").write_text(SPEC.replace("Locked", "Enc"))
    (tmp_path / "enc" / "w.safetensors").write_bytes(weights[0].read_bytes())
    (tmp_path / "w.safetensors").write_bytes(weights[0].read_bytes())  # a different file
    spec = tmp_path / "main.synth"
    spec.write_text('synth Main\ninput x: [B, 3, 32, 32]\nsource e = spec("enc/enc.synth")\n'
                    'source r = timm("test_resnet", num_classes=5, weights="w.safetensors")\n'
                    "a = e(x)\nb = r(x)\ny = add(a, b)\noutput y\n")
    assert run(["lock", str(spec)]) == 0
    lock = json.loads(Path(str(spec) + ".lock").read_text())["checkpoints"]
    assert sorted(lock) == ["enc/w.safetensors", "w.safetensors"]
    (tmp_path / "enc" / "w.safetensors").write_bytes(weights[1].read_bytes())
    capsys.readouterr()
    headers.clear()
    assert run(["compile", str(spec)]) == 1
    assert_s206(capsys.readouterr().err, "'enc/w.safetensors' changed")
    assert headers == []


# ---- a lock that is not a lock ---------------------------------------------------------


@pytest.mark.parametrize("kind", ["directory", "dangling link", "not JSON", "no checkpoints",
                                  "bad digest"])
@pytest.mark.parametrize("cmd", ["check", "compile", "lock --verify", "summary"])
def test_a_bad_lock_is_s206(tmp_path, weights, capsys, kind, cmd, headers):
    spec = tmp_path / "spec.synth"
    spec.write_text(SPEC)
    (tmp_path / "w.safetensors").write_bytes(weights[0].read_bytes())
    lock = Path(str(spec) + ".lock")
    if kind == "directory":
        lock.mkdir()
    elif kind == "dangling link":
        os.symlink(tmp_path / "nowhere", lock)
    else:
        lock.write_text({"not JSON": "{", "no checkpoints": '{"spec": "Locked"}',
                         "bad digest": '{"checkpoints": {"w.safetensors": "abc"}}'}[kind])
    before = listing(tmp_path)
    assert run([*cmd.split(" ")[:1], str(spec), *cmd.split(" ")[1:]]) == 1
    err = capsys.readouterr().err
    assert_s206(err, "spec.synth.lock")
    if cmd != "check":
        assert headers == []
    assert listing(tmp_path) == before


def test_verify_without_a_lock(tmp_path, capsys):
    spec = tmp_path / "spec.synth"
    spec.write_text("synth A\ninput x: [B, 4]\ny = Linear(x, out=2)\noutput y\n")
    assert run(["lock", str(spec), "--verify"]) == 1
    assert_s206(capsys.readouterr().err, "has no lock file")


def test_a_file_swapped_while_it_was_read_is_caught():
    digest = "a" * 64
    prov = {"r.w": {"origin": "checkpoint", "file": "/x/w.safetensors", "sha256": "b" * 64},
            "h.w": {"origin": "new"}}
    (e,) = provenance_errors(prov, {"/x/w.safetensors": digest})
    assert e.code == "S206" and digest in e.notes[0] and "b" * 64 in e.notes[1]
    assert provenance_errors(prov, {"/x/w.safetensors": "b" * 64}) == []


def test_viz_verifies_the_lock_before_it_reads_a_checkpoint(tmp_path, capsys):
    """`synth viz` draws a spec whose checkpoint changed since the lock with S206 marked."""
    import timm
    from safetensors.torch import save_file

    from synthdsl.cli.app import run

    spec = tmp_path / "v.synth"
    spec.write_text('synth V\ninput x: [B, 3, 32, 32]\nsource s = timm("test_resnet", '
                    'num_classes=5, weights="w.safetensors")\ny = s(x)\noutput y\n')
    state = {k: v.contiguous() for k, v in
             timm.create_model("test_resnet", num_classes=5).state_dict().items()}
    save_file(state, str(tmp_path / "w.safetensors"))
    assert run(["lock", str(spec)]) == 0
    save_file({k: v + 1 if v.is_floating_point() else v for k, v in state.items()},
              str(tmp_path / "w.safetensors"))
    capsys.readouterr()
    out = tmp_path / "v.txt"
    assert run(["viz", str(spec), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "error[S206]" in err and "w.safetensors" in err
