"""Files a user hands back to synthdsl — run records, checkpoints, weights, data, locks —
whose contents are not what they claim are coded errors, never tracebacks; and inputs at
the edge of what the check can size are refused with a position."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from synthdsl.cli.app import run

pytestmark = pytest.mark.usefixtures("one_thread")

SPEC = "synth Tiny\ninput x: [B, 1, 8, 8]\nh = Flatten(x) |> Linear(out=3)\noutput h\n"


def _err(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and "internal error" not in err, err
    return err


@pytest.fixture
def spec(tmp_path) -> Path:
    p = tmp_path / "tiny.synth"
    p.write_text(SPEC)
    return p


@pytest.mark.parametrize("record", ["[]", '"x"', '{"spec": 5}', "[" * 50_000])
def test_a_run_record_that_is_not_one_is_e001(tmp_path, capsys, record):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "run.json").write_text(record)
    assert run(["eval", str(folder), "--data", "digits"]) == 1
    assert "error[E001]" in _err(capsys)


def test_resuming_a_run_whose_record_is_not_one_is_t001(tmp_path, capsys, spec):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "run.json").write_text("[]")
    assert run(["train", str(spec), "--data", "digits", "--classes", "0-2",
                "-o", str(folder), "--resume",
                "--epochs", "1", "--no-progress"]) == 1
    err = _err(capsys)
    assert "error[T001]" in err and "not a run record" in err


@pytest.fixture
def trained(tmp_path, capsys, spec) -> tuple[Path, Path]:
    """A run of one epoch on digits 0-2: its folder and its last checkpoint."""
    folder = tmp_path / "run"
    assert run(["train", str(spec), "--data", "digits", "--classes", "0-2",
                "-o", str(folder), "--epochs", "1", "--no-progress", "-q"]) == 0
    capsys.readouterr()
    return folder, sorted((folder / "checkpoints").glob("*.pt"))[-1]


def test_a_checkpoint_without_model_state_is_e001(trained, capsys, spec):
    folder, ck = trained
    torch.save({"format": "synthdsl-checkpoint/1", "model": 5}, ck)
    assert run(["eval", str(ck), "--data", "digits"]) == 1
    assert "holds no model state" in _err(capsys)
    assert run(["train", str(spec), "--data", "digits", "--classes", "0-2",
                "-o", str(folder), "--resume",
                "--epochs", "2", "--no-progress", "-q"]) == 1
    err = _err(capsys)
    assert "error[T001]" in err and "cannot resume" in err


def test_a_checkpoint_of_a_changed_spec_is_refused(trained, capsys, spec):
    _, ck = trained
    spec.write_text(SPEC.replace("out=3", "out=4"))
    assert run(["eval", str(ck), "--data", "digits"]) == 1
    assert "changed since the run was trained" in _err(capsys)


def test_weights_of_other_shapes_are_e001(tmp_path, capsys, spec):
    w = tmp_path / "w.safetensors"
    save_file({"h.1.weight": torch.zeros(5, 64), "h.1.bias": torch.zeros(5)}, str(w))
    assert run(["eval", str(spec), "--weights", str(w), "--data", "digits"]) == 1
    err = _err(capsys)
    assert "error[E001]" in err and "of another shape" in err


@pytest.mark.parametrize("header", [b"[" * 100_000, b'{"__metadata__": {"digest": 123}}',
                                    b'{"__metadata__": [1, 2]}'])
def test_a_hostile_safetensors_header_is_s209(tmp_path, capsys, header):
    f = tmp_path / "a.safetensors"
    f.write_bytes(len(header).to_bytes(8, "little") + header)
    assert run(["eval", str(f), "--data", "digits"]) == 1
    assert "error[S209]" in _err(capsys)


def test_an_encrypted_or_damaged_npz_is_d001(tmp_path, capsys, spec):
    good = tmp_path / "good.npz"
    np.savez_compressed(good, x=np.zeros((6, 1, 8, 8), np.float32), y=np.arange(6) % 3)
    raw = bytearray(good.read_bytes())
    with zipfile.ZipFile(good) as z:
        info = z.infolist()[0]
    at = info.header_offset + 30 + len(info.filename) + 5
    raw[at:at + 20] = os.urandom(20)
    damaged = tmp_path / "damaged.npz"
    damaged.write_bytes(bytes(raw))
    enc = tmp_path / "enc.npz"
    raw = bytearray(good.read_bytes())
    raw[6] |= 1  # the "encrypted" flag of the first local header
    with zipfile.ZipFile(good) as z:
        cd = good.read_bytes().rfind(b"PK\x01\x02")
    raw[cd + 8] |= 1
    enc.write_bytes(bytes(raw))
    for data in (damaged, enc):
        assert run(["train", str(spec), "--data", str(data), "-o", str(tmp_path / "r"),
                    "--epochs", "1", "--no-progress"]) == 1
        assert "error[D" in _err(capsys)
        assert not (tmp_path / "r").exists()


def test_too_many_symbolic_dimensions_are_s007_at_the_input(tmp_path, capsys):
    dims = ", ".join(f"N{i}" for i in range(20))
    p = tmp_path / "m.synth"
    p.write_text(f"synth M\ninput x: [B, {dims}]\noutput x\n")
    assert run(["check", str(p)]) == 1
    err = _err(capsys)
    assert "error[S007]" in err and "m.synth:2:1" in err and "21 symbolic dimensions" in err


def test_a_budget_beyond_any_number_is_s010(tmp_path, capsys, spec):
    assert run(["check", str(spec), "--budget", "params=" + "9" * 400]) == 1
    assert "error[S010]" in _err(capsys)


def test_a_lock_that_is_a_fifo_is_not_replaced(tmp_path, capsys, spec):
    lock = Path(str(spec) + ".lock")
    os.mkfifo(lock)
    assert run(["lock", str(spec)]) == 1
    assert "error[S009]" in _err(capsys)
    assert lock.is_fifo()
