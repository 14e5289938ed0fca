"""The command line's user errors are coded messages with exit 1, never "internal error":
destinations that cannot be written (no permission, a read-only filesystem, a full disk, a
run folder that is a file), flags out of range (S010), and what a killed write left behind
is cleaned up by the next write of the same place."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import synthdsl.files as files
from synthdsl.cli.app import run
from synthdsl.files import WriteFailed, atomic_path, remove_stale_temps, write_bytes

pytestmark = pytest.mark.usefixtures("one_thread")

GOLDEN = Path(__file__).parent / "golden" / "train"

SPEC = """synth Tiny
input image: [B, 1, 8, 8]
trunk  = Flatten(image) |> Linear(out=16) |> ReLU
logits = Linear(trunk, out=2)
recipe epochs=1, lr=0.01, batch_size=4, seed=3
output logits
"""


@pytest.fixture
def spec(tmp_path) -> Path:
    path = tmp_path / "tiny.synth"
    path.write_text(SPEC)
    return path


@pytest.fixture
def data(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.random((20, 8, 8)).astype(np.float32),
             y=np.arange(20) % 2)
    return tmp_path / "d.npz"


def _synth(capsys, *argv: str) -> tuple[int, str]:
    code = run([str(a) for a in argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err and "internal error" not in err, err
    return code, err


def _no_temporaries(folder: Path) -> None:
    assert not [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


# -- 5. destinations that cannot be written ------------------------------------------------------


def _denied(monkeypatch) -> None:
    """Every temporary file is refused as in a folder without write permission."""

    def new_temp(path: Path) -> Path:
        name = path.parent / f".{path.name}.{os.getpid()}-0.tmp"
        raise PermissionError(errno.EACCES, "Permission denied", str(name))

    monkeypatch.setattr(files, "_new_temp", new_temp)


def test_compile_into_a_folder_without_permission_is_s009(tmp_path, capsys, spec, monkeypatch,
                                                          golden):
    _denied(monkeypatch)
    out = tmp_path / "ro" / "model.safetensors"
    code, err = _synth(capsys, "compile", spec, "-o", out)
    assert code == 1 and "error[S009]" in err and str(out) in err, err
    assert "permission denied" in err
    assert not out.exists()
    golden(GOLDEN / "S009-write.txt", err[err.index("error["):].replace(str(tmp_path), "<tmp>"))


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="a read-only folder needs a user without root's override")
def test_compile_into_a_read_only_folder_is_s009(tmp_path, capsys, spec):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        code, err = _synth(capsys, "compile", spec, "-o", ro / "m.safetensors")
    finally:
        ro.chmod(0o755)
    assert code == 1 and "error[S009]" in err, err
    assert list(ro.iterdir()) == []


def test_viz_into_a_folder_without_permission_is_s009(tmp_path, capsys, spec, monkeypatch):
    _denied(monkeypatch)
    out = tmp_path / "pic.mmd"
    code, err = _synth(capsys, "viz", spec, "-o", out)
    assert code == 1 and "error[S009]" in err and "pic.mmd" in err, err
    assert not out.exists()


@pytest.mark.parametrize("failure", [
    OSError(errno.ENOSPC, "No space left on device"),
    RuntimeError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, '
                 'message: "No space left on device" })'),
    OSError(errno.EROFS, "Read-only file system"),
])
def test_a_full_disk_or_read_only_filesystem_while_compiling_is_s009(tmp_path, capsys, spec,
                                                                     monkeypatch, failure):
    import safetensors.torch

    def save_file(state, filename, metadata=None):
        Path(filename).write_bytes(b"\0" * 4096)  # half of it written, then the disk is full
        raise failure

    monkeypatch.setattr(safetensors.torch, "save_file", save_file)
    out = tmp_path / "out" / "model.safetensors"
    code, err = _synth(capsys, "compile", spec, "-o", out)
    assert code == 1 and "error[S009]" in err and str(out) in err, err
    assert "no space left" in err or "read-only" in err
    assert not out.exists()
    _no_temporaries(tmp_path)


def test_a_full_disk_while_checkpointing_is_s009_and_leaves_no_torn_checkpoint(
        tmp_path, capsys, spec, data, monkeypatch):
    import torch

    real = torch.save

    def save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", save)
    code, err = _synth(capsys, "train", spec, "--data", data, "-o", tmp_path / "run", "-q",
                       "--no-progress")
    monkeypatch.setattr(torch, "save", real)
    assert code == 1 and "error[S009]" in err and "no space left" in err, err
    assert "step-00000004.pt" in err
    assert not list((tmp_path / "run").glob("checkpoints/*.pt"))
    assert not (tmp_path / "run" / "model.safetensors").exists()
    _no_temporaries(tmp_path)


def test_a_full_disk_outside_the_atomic_writer_is_s009(tmp_path, capsys, spec, data,
                                                       monkeypatch):
    import synthdsl.cli.train as cli_train

    def train_spec(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")  # e.g. appending to a log

    monkeypatch.setattr(cli_train, "train_spec", train_spec)
    code, err = _synth(capsys, "train", spec, "--data", data, "-o", tmp_path / "run")
    assert code == 1 and "error[S009]" in err and "no space left" in err, err


def test_permission_denied_inside_the_run_folder_is_s009(tmp_path, capsys, spec, data,
                                                         monkeypatch):
    import synthdsl.cli.train as cli_train

    def train_spec(spec, data, run, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(Path(run) / "log.jsonl"))

    monkeypatch.setattr(cli_train, "train_spec", train_spec)
    code, err = _synth(capsys, "train", spec, "--data", data, "-o", tmp_path / "run")
    assert code == 1 and "error[S009]" in err and "log.jsonl" in err, err


def test_an_oserror_about_another_file_is_still_a_bug(tmp_path, capsys, monkeypatch):
    import synthdsl.cli.app as app

    def boom(args):
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", "/opt/ours/x.json")

    monkeypatch.setattr(app, "cmd_check", boom)
    monkeypatch.delenv("SYNTH_TRACEBACK", raising=False)
    assert app.run(["check", str(tmp_path / "x.synth")]) == app.EXIT_INTERNAL
    assert "internal error: FileNotFoundError" in capsys.readouterr().err


def test_train_onto_an_existing_file_is_s009_and_the_file_is_kept(tmp_path, capsys, spec, data):
    target = tmp_path / "notes.txt"
    target.write_text("mine\n")
    code, err = _synth(capsys, "train", spec, "--data", data, "-o", target, "-q")
    assert code == 1 and "error[S009]" in err and "is a file" in err, err
    assert target.read_text() == "mine\n"
    code, err = _synth(capsys, "train", spec, "--data", data, "-o", target / "run", "-q")
    assert code == 1 and "error[S009]" in err and "not a directory" in err, err
    code, err = _synth(capsys, "train", spec, "--data", data, "-o", spec, "-q")
    assert code == 1 and "error[S009]" in err and spec.read_text() == SPEC


def test_train_into_its_own_data_folder_is_s009(tmp_path, capsys, spec):
    from PIL import Image

    root = tmp_path / "imgs"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(root / c / f"{i}.png")
    code, err = _synth(capsys, "train", spec, "--data", root, "-o", root / "run", "-q")
    assert code == 1 and "error[S009]" in err and "input" in err, err
    assert sorted(p.name for p in root.iterdir()) == ["a", "b"]


def test_eval_output_folder_and_plot_are_checked_first(tmp_path, capsys, spec, data):
    target = tmp_path / "report"
    target.write_text("x")
    code, err = _synth(capsys, "eval", spec, "--data", data, "-o", target)
    assert code == 1 and "error[S009]" in err, err
    code, err = _synth(capsys, "eval", spec, "--data", data, "--plot", tmp_path)
    assert code == 1 and "error[S009]" in err and "directory" in err, err
    code, err = _synth(capsys, "eval", spec, "--data", data, "--plot", data)
    assert code == 1 and "error[S009]" in err and data.exists() and data.stat().st_size > 100


def test_eval_of_a_missing_artifact_is_e001(tmp_path, capsys):
    code, err = _synth(capsys, "eval", tmp_path / "nope.safetensors", "--data", "digits")
    assert code == 1 and "error[E001]" in err and "nope.safetensors" in err, err


# -- 5. flags out of range -------------------------------------------------------------------------


@pytest.mark.parametrize("argv, flag", [
    (["train", "{spec}", "--data", "{data}", "-o", "{out}", "--batch-size", "0"], "--batch-size"),
    (["train", "{spec}", "--data", "{data}", "-o", "{out}", "--batch-size", "-4"], "--batch-size"),
    (["train", "{spec}", "--data", "{data}", "-o", "{out}", "--epochs", "0"], "--epochs"),
    (["train", "{spec}", "--data", "{data}", "-o", "{out}", "--epochs", "-1"], "--epochs"),
    (["train", "{spec}", "--data", "{data}", "-o", "{out}", "--lr", "0"], "--lr"),
    (["train", "{spec}", "--data", "{data}", "-o", "{out}", "--lr", "-0.1"], "--lr"),
    (["train", "{spec}", "--data", "{data}", "-o", "{out}", "--lr", "nan"], "--lr"),
    (["train", "{spec}", "--data", "{data}", "-o", "{out}", "--lr", "inf"], "--lr"),
    (["train", "{spec}", "--data", "{data}", "-o", "{out}", "--shots", "0"], "--shots"),
    (["train", "{spec}", "--data", "{data}", "-o", "{out}", "--alpha", "2"], "--alpha"),
    (["train", "{spec}", "--data", "{data}", "-o", "{out}", "--temperature", "0"],
     "--temperature"),
    (["eval", "{spec}", "--data", "{data}", "--batch-size", "0"], "--batch-size"),
    (["eval", "{spec}", "--data", "{data}", "--batch-size", "-1"], "--batch-size"),
    (["compile", "{spec}", "--batch-size", "0"], "--batch-size"),
    (["nodes", "{spec}", "--input", "0", "8", "8"], "--input"),
    (["nodes", "{spec}", "--input", "1", "-8", "8"], "--input"),
    (["viz", "{spec}", "--depth", "-1"], "--depth"),
])
def test_flags_out_of_range_are_s010(tmp_path, capsys, spec, data, argv, flag):
    argv = [a.format(spec=spec, data=data, out=tmp_path / "run") for a in argv]
    code, err = _synth(capsys, *argv)
    assert code == 1, err
    assert f"error[S010]: {flag} must be" in err, err
    assert not (tmp_path / "run").exists()


def test_a_flag_out_of_range_reads_as_its_golden(tmp_path, capsys, spec, data, golden):
    code, err = _synth(capsys, "train", spec, "--data", data, "-o", tmp_path / "run",
                       "--batch-size", "0")
    assert code == 1
    golden(GOLDEN / "S010.txt", err)


# -- 6. what killed writes left ----------------------------------------------------------------------


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_a_stale_temporary_of_the_same_target_is_removed_by_the_next_write(tmp_path):
    out = tmp_path / "model.safetensors"
    dead = _dead_pid()
    stale = tmp_path / f".model.safetensors.{dead}-0.tmp"
    stale.write_bytes(b"\0" * 100_000)
    live = tmp_path / f".model.safetensors.{os.getppid()}-3.tmp"  # a writer still running
    live.write_bytes(b"\0")
    other = tmp_path / f".other.safetensors.{dead}-0.tmp"          # another target's
    other.write_bytes(b"\0")
    mine = tmp_path / "model.safetensors.notes.tmp"                 # not a temporary name
    mine.write_bytes(b"\0")
    absurd = tmp_path / f".model.safetensors.{10 ** 30}-0.tmp"      # no process has that pid
    absurd.write_bytes(b"\0")
    write_bytes(out, b"new")
    assert out.read_bytes() == b"new"
    assert not stale.exists() and not absurd.exists()
    assert live.exists() and other.exists() and mine.exists()
    old = time.time() - files.STALE_TEMP_SECONDS - 60  # a live pid, but far too old
    os.utime(live, (old, old))
    assert remove_stale_temps(out) == [live]


def test_a_stale_folder_named_like_a_temporary_is_left_alone(tmp_path):
    odd = tmp_path / f".x.bin.{_dead_pid()}-0.tmp"
    odd.mkdir()
    write_bytes(tmp_path / "x.bin", b"1")
    assert odd.is_dir()


def test_a_write_killed_with_sigkill_is_cleaned_up_by_the_next_compile(tmp_path, capsys, spec):
    out = tmp_path / "model.safetensors"
    script = ("import os, signal, sys\n"
              "from synthdsl.files import atomic_path\n"
              "with atomic_path(sys.argv[1]) as tmp:\n"
              "    tmp.write_bytes(b'\\0' * 2_000_000)\n"
              "    os.kill(os.getpid(), signal.SIGKILL)\n")
    p = subprocess.run([sys.executable, "-c", script, str(out)], cwd=Path(__file__).parent.parent)
    assert p.returncode == -signal.SIGKILL
    left = [q.name for q in tmp_path.iterdir() if q.name.endswith(".tmp")]
    assert len(left) == 1 and left[0].startswith(".model.safetensors.")
    code, err = _synth(capsys, "compile", spec, "-o", out)
    assert code == 0, err
    assert out.is_file()
    _no_temporaries(tmp_path)


def test_the_atomic_writer_raises_write_failed_only_for_its_destination(tmp_path):
    with pytest.raises(WriteFailed, match="no space left"):
        with atomic_path(tmp_path / "a.bin"):
            raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(FileNotFoundError):  # reading some other file: not the destination's
        with atomic_path(tmp_path / "b.bin"):
            open(tmp_path / "missing-input.bin", "rb")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(WriteFailed) as e:
        write_bytes(blocker / "c.bin", b"1")
    assert e.value.code == "S009" and str(blocker / "c.bin") in e.value.message
    _no_temporaries(tmp_path)


def test_an_old_temporary_of_an_earlier_version_is_removed_once_stale(tmp_path):
    out = tmp_path / "model.safetensors"
    legacy = tmp_path / ".model.safetensors.k3j_9x2a.tmp"  # tempfile.mkstemp's name
    legacy.write_bytes(b"\0")
    write_bytes(out, b"1")
    assert legacy.exists()  # it may belong to a write still running
    old = time.time() - files.STALE_TEMP_SECONDS - 60
    os.utime(legacy, (old, old))
    write_bytes(out, b"2")
    assert not legacy.exists() and out.read_bytes() == b"2"


@pytest.mark.parametrize("device", ["banana", "cuda:99"])
def test_a_device_that_is_not_there_is_t001_before_anything_runs(tmp_path, capsys, spec, data,
                                                                 device):
    code, err = _synth(capsys, "train", spec, "--data", data, "-o", tmp_path / "run",
                       "--device", device)
    assert code == 1 and "error[T001]" in err and f"--device '{device}'" in err, err
    assert not (tmp_path / "run").exists()
    code, err = _synth(capsys, "eval", spec, "--data", data, "--device", device)
    assert code == 1 and "error[T001]" in err, err
