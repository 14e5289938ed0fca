"""Only regular files are read, within size limits, and `-o` never destroys an input.

A FIFO named as the spec, an imported spec, a weights file, a lock or an artifact would
block the open forever; ``/dev/zero`` would be read without end. Each is refused with a
coded error before it is opened. Each such case runs in a child process with a timeout,
so a hang fails the test instead of hanging the suite.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from synthdsl.cli.app import run
from synthdsl.files import SPEC_MAX_BYTES, NotReadable, read_regular, regular_file

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")

#: Seconds a refused file may take (the child is killed after it: a hang fails).
TIMEOUT_S = 60
ARCH = "test_resnet"
TINY = "synth Tiny\ninput x: [B, 4]\ny = Linear(x, out=2)\noutput y\n"
CLI = "import sys; from synthdsl.cli.app import run; sys.exit(run(sys.argv[1:]))"


def synth(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`synth ARGS` in a child process, killed after TIMEOUT_S (a hang raises)."""
    return subprocess.run([sys.executable, "-c", CLI, *map(str, args)], capture_output=True,
                          text=True, timeout=TIMEOUT_S, cwd=cwd)


def fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def weights_spec(folder: Path, weights: str) -> Path:
    spec = folder / "loader.synth"
    spec.write_text(f'synth Loader\ninput image: [B, 3, 32, 32]\n'
                    f'source net = timm("{ARCH}", weights="{weights}")\n'
                    "y = net(image)\noutput y\n")
    return spec


def assert_refused(p: subprocess.CompletedProcess, code: str, *words: str) -> None:
    assert p.returncode == 1, (p.returncode, p.stderr)
    assert f"error[{code}]" in p.stderr, p.stderr
    assert "internal error" not in p.stderr and "Traceback" not in p.stderr, p.stderr
    for w in words:
        assert w in p.stderr, p.stderr


# ---- the helper ---------------------------------------------------------------------


def test_helper_refuses_what_is_not_a_regular_file(tmp_path):
    for path, kind in ((fifo(tmp_path / "p"), "FIFO"), (Path("/dev/zero"), "character device"),
                       (tmp_path, "directory")):
        with pytest.raises(NotReadable, match=kind):
            regular_file(path, 100)
        with pytest.raises(NotReadable, match=kind):
            read_regular(path, 100)
    big = tmp_path / "big"
    big.write_bytes(b"x" * 101)
    with pytest.raises(NotReadable, match="101 bytes, more than the 100"):
        read_regular(big, 100)
    assert read_regular(big, 101) == b"x" * 101
    with pytest.raises(FileNotFoundError):
        regular_file(tmp_path / "none", 100)


# ---- the spec ------------------------------------------------------------------------


@pytest.mark.parametrize("cmd", ["check", "compile", "viz"])
def test_fifo_as_spec(tmp_path, cmd):
    spec = fifo(tmp_path / "spec.synth")
    assert_refused(synth(cmd, spec), "S000", "FIFO", "not a regular file")


@pytest.mark.parametrize("cmd", ["check", "summary"])
def test_dev_zero_as_spec(cmd):
    assert_refused(synth(cmd, "/dev/zero"), "S000", "character device")


def test_spec_over_the_limit(tmp_path, capsys):
    spec = tmp_path / "huge.synth"
    with open(spec, "wb") as f:  # sparse: nothing is written, the size alone is too large
        f.truncate(SPEC_MAX_BYTES + 1)
    assert run(["check", str(spec)]) == 1
    err = capsys.readouterr().err
    assert "error[S000]" in err and f"more than the {SPEC_MAX_BYTES:,}" in err


def test_fifo_as_imported_spec(tmp_path):
    fifo(tmp_path / "enc.synth")
    top = tmp_path / "top.synth"
    top.write_text('synth Top\ninput x: [B, 4]\nsource e = spec("enc.synth")\n'
                   "y = e(x)\noutput y\n")
    assert_refused(synth("check", top), "S000", "FIFO")


# ---- weights -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["w.safetensors", "w.pt"])
def test_fifo_as_weights(tmp_path, name):
    fifo(tmp_path / name)
    assert_refused(synth("check", weights_spec(tmp_path, name)), "S203", "FIFO")


@pytest.mark.parametrize("name", ["z.safetensors", "z.pth"])
def test_dev_zero_as_weights(tmp_path, name):
    (tmp_path / name).symlink_to("/dev/zero")
    assert_refused(synth("check", weights_spec(tmp_path, name)), "S203", "character device")


def test_fifo_as_inherited_checkpoint(tmp_path):
    fifo(tmp_path / "c.safetensors")
    spec = tmp_path / "inheritor.synth"
    spec.write_text(f'synth Inheritor\ninput image: [B, 3, 32, 32]\nsource net = timm("{ARCH}")\n'
                    'y = net(image)\ninherit y from checkpoint("c.safetensors")\noutput y\n')
    assert_refused(synth("check", spec), "S203", "FIFO")


# ---- the lock and artifacts ----------------------------------------------------------


def test_fifo_as_lock(tmp_path):
    spec = tmp_path / "tiny.synth"
    spec.write_text(TINY)
    fifo(tmp_path / "tiny.synth.lock")
    assert_refused(synth("lock", spec, "--verify"), "S206", "FIFO")


def test_fifo_and_dev_zero_as_artifact(tmp_path):
    code = ("import sys\nfrom synthdsl.build.artifact import load_compiled\n"
            "from synthdsl.lang.errors import SynthError\n"
            "try:\n    load_compiled(sys.argv[1])\nexcept SynthError as e:\n"
            "    print(e.code, e.message)\n")
    (tmp_path / "z.safetensors").symlink_to("/dev/zero")
    for path, kind in ((fifo(tmp_path / "a.safetensors"), "FIFO"),
                       (tmp_path / "z.safetensors", "character device")):
        p = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                           text=True, timeout=TIMEOUT_S)
        assert p.returncode == 0, p.stderr
        assert p.stdout.startswith("S209 ") and kind in p.stdout, p.stdout


# ---- -o ------------------------------------------------------------------------------


@pytest.fixture
def tiny(tmp_path) -> Path:
    spec = tmp_path / "in.synth"
    spec.write_text(TINY)
    return spec


def test_compile_onto_its_own_spec(tiny, capsys):
    for out in (tiny, tiny.parent / "." / tiny.name):
        assert run(["compile", str(tiny), "-o", str(out)]) == 1
        err = capsys.readouterr().err
        assert "error[S009]" in err and "would destroy it" in err, err
        assert tiny.read_text() == TINY


def test_compile_onto_its_spec_by_another_name(tiny, capsys):
    link = tiny.parent / "link.synth"
    link.symlink_to(tiny.name)
    assert run(["compile", str(link), "-o", str(tiny)]) == 1
    assert "error[S009]" in capsys.readouterr().err
    assert tiny.read_text() == TINY


def test_viz_onto_its_own_input(tmp_path, capsys):
    spec = tmp_path / "in.txt"
    spec.write_text(TINY)
    assert run(["viz", str(spec), "-o", str(spec)]) == 1
    err = capsys.readouterr().err
    assert "error[S009]" in err and "would destroy it" in err
    assert spec.read_text() == TINY


@pytest.mark.parametrize("cmd", ["compile", "viz"])
def test_output_onto_a_directory(tiny, tmp_path, cmd, capsys):
    folder = tmp_path / "out.svg"
    folder.mkdir()
    assert run([cmd, str(tiny), "-o", str(folder)]) == 1
    err = capsys.readouterr().err
    assert "error[S009]" in err and "is a directory" in err and "internal error" not in err
    assert folder.is_dir() and not any(folder.iterdir())


@pytest.mark.parametrize("cmd,name", [("compile", "m.safetensors"), ("viz", "m.svg")])
def test_output_under_a_regular_file(tiny, tmp_path, cmd, name, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("keep")
    assert run([cmd, str(tiny), "-o", str(blocker / "sub" / name)]) == 1
    err = capsys.readouterr().err
    assert "error[S009]" in err and "not a directory" in err and "internal error" not in err
    assert blocker.read_text() == "keep"


def test_output_elsewhere_still_written(tiny, tmp_path, capsys):
    out = tmp_path / "new" / "m.txt"
    assert run(["viz", str(tiny), "-o", str(out)]) == 0
    assert out.is_file() and tiny.read_text() == TINY


def test_compile_onto_a_weights_file_it_reads(tmp_path, capsys):
    import safetensors.torch
    import timm

    weights = tmp_path / "w.safetensors"
    state = {k: v.contiguous() for k, v in timm.create_model(ARCH).state_dict().items()}
    safetensors.torch.save_file(state, str(weights))
    before = weights.read_bytes()
    spec = weights_spec(tmp_path, weights.name)
    assert run(["compile", str(spec), "-o", str(weights)]) == 1
    err = capsys.readouterr().err
    assert "error[S009]" in err and "would destroy it" in err, err
    assert weights.read_bytes() == before
