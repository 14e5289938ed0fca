"""Training data, training and evaluation inputs fail as coded user errors, never as
tracebacks: bad image arrays (D002 non-finite, D003 length mismatch, D004 wrong kind or
range), unreadable image files and decompression bombs (D005), a loss that becomes NaN
(T002), a checkpoint holding pickled objects (refused without torch's advice to load it
unsafely) and paths that are not regular files (a FIFO as --weights, as a checkpoint).

Each runs `synth` in-process as a user types it and checks the code, exit 1, no traceback
and that nothing was written. The first diagnostic of each new code is a golden file
(tests/golden/train/CODE.txt, temporary paths written as <tmp>)."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from synthdsl.cli.app import run

pytestmark = pytest.mark.usefixtures("one_thread")

from tests.test_gate_cli import GOLDEN, SPEC, spec  # noqa: F401 - `spec` is a fixture


def _images(n: int = 20) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.random((n, 8, 8)).astype(np.float32), np.arange(n) % 2


def _synth(capsys, tmp_path, *argv: str) -> tuple[int, str]:
    code = run([*argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err and "internal error" not in err, err
    return code, err.replace(str(tmp_path), "<tmp>")


def _train(capsys, tmp_path, spec, data, *extra: str) -> tuple[int, str]:
    return _synth(capsys, tmp_path, "train", str(spec), "--data", str(data), "-o",
                  str(tmp_path / "run"), "-q", "--no-progress", *extra)


def _refused(capsys, tmp_path, spec, data, code: str, *extra: str) -> str:
    rc, err = _train(capsys, tmp_path, spec, data, *extra)
    assert rc == 1, err
    assert f"error[{code}]" in err, err
    assert not (tmp_path / "run").exists(), "nothing is written for data that is refused"
    return err


# -- 1. image arrays -----------------------------------------------------------------------


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_images_are_d002_naming_the_file_and_the_sample(tmp_path, capsys, spec,
                                                                   golden, bad):
    x, y = _images()
    x[7, 2, 3] = bad
    np.savez(tmp_path / "bad.npz", x=x, y=y)
    err = _refused(capsys, tmp_path, spec, tmp_path / "bad.npz", "D002")
    assert "bad.npz" in err and "x[7]" in err
    if np.isnan(bad):
        golden(GOLDEN / "D002.txt", err)


def test_non_finite_images_of_a_split_file_name_their_array(tmp_path, capsys, spec):
    x, y = _images()
    xt = x[:4].copy()
    xt[2, 0, 0] = np.nan
    np.savez(tmp_path / "s.npz", x_train=x, y_train=y, x_test=xt, y_test=y[:4])
    err = _refused(capsys, tmp_path, spec, tmp_path / "s.npz", "D002")
    assert "x_test[2]" in err


def test_images_and_labels_of_different_lengths_are_d003(tmp_path, capsys, spec, golden):
    x, y = _images()
    np.savez(tmp_path / "short.npz", x=x, y=y[:15])
    err = _refused(capsys, tmp_path, spec, tmp_path / "short.npz", "D003")
    assert "20 images" in err and "15 labels" in err
    golden(GOLDEN / "D003.txt", err)


@pytest.mark.parametrize("make, words", [
    (lambda x: x.astype(np.complex64), "complex"),
    (lambda x: np.full(x.shape, "a"), "string"),
    (lambda x: x * 1e30, "lie in [0, 1]"),
    (lambda x: (x * 300).astype(np.int32), "0..255"),
])
def test_images_of_the_wrong_kind_or_range_are_d004(tmp_path, capsys, spec, make, words):
    x, y = _images()
    np.savez(tmp_path / "odd.npz", x=make(x), y=y)
    err = _refused(capsys, tmp_path, spec, tmp_path / "odd.npz", "D004")
    assert words in err and "odd.npz" in err
    assert "ComplexWarning" not in err


def test_labels_that_are_not_whole_numbers_at_least_zero_are_d004(tmp_path, capsys, spec,
                                                                   golden):
    x, y = _images()
    np.savez(tmp_path / "neg.npz", x=x, y=np.where(np.arange(20) == 5, -3, y))
    err = _refused(capsys, tmp_path, spec, tmp_path / "neg.npz", "D004")
    assert "y[5] is -3" in err
    golden(GOLDEN / "D004.txt", err)
    np.savez(tmp_path / "frac.npz", x=x, y=y + 0.5)
    assert "whole numbers" in _refused(capsys, tmp_path, spec, tmp_path / "frac.npz", "D004")


def test_sound_arrays_still_train(tmp_path, capsys, spec):
    x, y = _images()
    np.savez(tmp_path / "ok.npz", x=x, y=y)
    rc, err = _train(capsys, tmp_path, spec, tmp_path / "ok.npz")
    assert rc == 0, err
    assert (tmp_path / "run" / "model.safetensors").is_file()


# -- 1. image files --------------------------------------------------------------------------


def _folder(root: Path) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(5):
            Image.fromarray((rng.random((8, 8)) * 255).astype(np.uint8)).save(root / c / f"{i}.png")
    return root


def _png_header(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0,
                                                                0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def test_a_corrupt_png_is_d005_naming_the_file(tmp_path, capsys, spec, golden):
    root = _folder(tmp_path / "imgs")
    (root / "b" / "9.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    err = _refused(capsys, tmp_path, spec, root, "D005")
    assert "9.png" in err
    golden(GOLDEN / "D005.txt", err)


@pytest.mark.parametrize("size", [(100_000, 100_000), (10_000, 10_000)])
def test_a_decompression_bomb_is_refused_from_its_header(tmp_path, capsys, spec, size):
    root = _folder(tmp_path / "imgs")
    (root / "a" / "bomb.png").write_bytes(_png_header(*size))
    err = _refused(capsys, tmp_path, spec, root, "D005")
    assert "bomb.png" in err and "pixels" in err
    assert "DecompressionBomb" not in err  # neither PIL's error nor its warning


def test_an_image_that_breaks_after_the_check_is_d005_while_training(tmp_path, capsys, spec,
                                                                    monkeypatch):
    import synthdsl.train.images as images

    root = _folder(tmp_path / "imgs")
    monkeypatch.setattr(images, "check_image_files", lambda files: None)
    (root / "a" / "0.png").write_bytes(_png_header(8, 8)[:40])
    rc, err = _train(capsys, tmp_path, spec, root)
    assert rc == 1 and "error[D005]" in err and "0.png" in err
    assert not (tmp_path / "run" / "model.safetensors").exists()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_among_the_images_is_refused_not_waited_on(tmp_path, capsys, spec):
    root = _folder(tmp_path / "imgs")
    os.mkfifo(root / "a" / "pipe.png")
    err = _refused(capsys, tmp_path, spec, root, "D005")
    assert "pipe.png" in err and "FIFO" in err


# -- 2. a loss that becomes NaN ----------------------------------------------------------------


def test_a_loss_that_becomes_nan_stops_training_with_t002(tmp_path, capsys, spec, golden):
    x, y = _images()
    np.savez(tmp_path / "ok.npz", x=x, y=y)
    rc, err = _train(capsys, tmp_path, spec, tmp_path / "ok.npz", "--optimizer", "sgd",
                     "--lr", "1e38", "--epochs", "3")
    assert rc == 1 and "error[T002]" in err, err
    assert "epoch 1, batch 2 of 4" in err
    golden(GOLDEN / "T002.txt", err)
    run_dir = tmp_path / "run"
    assert not (run_dir / "model.safetensors").exists()
    assert not list(run_dir.glob("checkpoints/*.pt"))  # no checkpoint of a diverged state
    assert not list(run_dir.rglob("*.tmp"))


def test_a_nan_in_a_later_epoch_keeps_the_earlier_checkpoints_whole(tmp_path, capsys, spec,
                                                                     monkeypatch):
    import synthdsl.train.trainer as trainer

    x, y = _images()
    np.savez(tmp_path / "ok.npz", x=x, y=y)
    calls = {"n": 0}
    real = trainer.objective

    def objective(*args, **kwargs):
        loss, parts = real(*args, **kwargs)
        calls["n"] += 1
        return (loss * float("inf") if calls["n"] == 6 else loss), parts

    monkeypatch.setattr(trainer, "objective", objective)
    rc, err = _train(capsys, tmp_path, spec, tmp_path / "ok.npz", "--epochs", "3")
    assert rc == 1 and "error[T002]" in err and "epoch 2, batch 2 of 4" in err, err
    assert "the loss became inf" in err and "step-00000004.pt" in err
    kept = sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("*.pt"))
    assert kept == ["step-00000004.pt"]  # epoch 1's, as it was written
    ck = torch.load(tmp_path / "run" / "checkpoints" / kept[0], weights_only=True)
    assert ck["epoch"] == 1 and all(torch.isfinite(v).all() for v in ck["model"].values())
    assert not (tmp_path / "run" / "model.safetensors").exists()


# -- 3. a checkpoint that holds pickled objects --------------------------------------------------


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_resuming_from_a_malicious_checkpoint_is_refused_without_unsafe_advice(
        tmp_path, capsys, spec):
    x, y = _images()
    np.savez(tmp_path / "ok.npz", x=x, y=y)
    assert _train(capsys, tmp_path, spec, tmp_path / "ok.npz")[0] == 0
    torch.save({"format": "synthdsl-checkpoint/1", "x": _Evil()},
               tmp_path / "run" / "checkpoints" / "step-99999999.pt")
    rc, err = _train(capsys, tmp_path, spec, tmp_path / "ok.npz", "--resume")
    assert rc == 1 and "error[T001]" in err and "step-99999999.pt" in err, err
    assert "pickled Python objects" in err
    for advice in ("weights_only", "trust", "safe_globals", "pwned"):
        assert advice not in err, advice
    captured = capsys.readouterr()
    assert "pwned" not in captured.out


def test_evaluating_weights_that_hold_pickled_objects_is_refused(tmp_path, capsys, spec):
    torch.save({"w": _Evil()}, tmp_path / "evil.pt")
    x, y = _images()
    np.savez(tmp_path / "ok.npz", x=x, y=y)
    rc, err = _synth(capsys, tmp_path, "eval", str(spec), "--data", str(tmp_path / "ok.npz"),
                     "--weights", str(tmp_path / "evil.pt"))
    assert rc == 1 and "error[E001]" in err and "pickled Python objects" in err, err
    assert "weights_only" not in err and "trust" not in err


# -- 4. only regular files are read ----------------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_as_weights_is_refused_not_waited_on(tmp_path, capsys, spec):
    os.mkfifo(tmp_path / "pipe.safetensors")
    x, y = _images()
    np.savez(tmp_path / "ok.npz", x=x, y=y)
    rc, err = _synth(capsys, tmp_path, "eval", str(spec), "--data", str(tmp_path / "ok.npz"),
                     "--weights", str(tmp_path / "pipe.safetensors"))
    assert rc == 1 and "error[E001]" in err and "FIFO" in err, err


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_as_a_checkpoint_is_refused(tmp_path, capsys, spec):
    x, y = _images()
    np.savez(tmp_path / "ok.npz", x=x, y=y)
    assert _train(capsys, tmp_path, spec, tmp_path / "ok.npz")[0] == 0
    os.mkfifo(tmp_path / "run" / "checkpoints" / "step-99999999.pt")
    rc, err = _train(capsys, tmp_path, spec, tmp_path / "ok.npz", "--resume")
    assert rc == 1 and "error[T001]" in err and "FIFO" in err, err
    rc, err = _synth(capsys, tmp_path, "eval",
                     str(tmp_path / "run" / "checkpoints" / "step-99999999.pt"))
    assert rc == 1 and "FIFO" in err, err


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_as_data_is_refused(tmp_path, capsys, spec):
    os.mkfifo(tmp_path / "pipe.npz")
    err = _refused(capsys, tmp_path, spec, tmp_path / "pipe.npz", "D001")
    assert "pipe.npz" in err


def test_missing_targets_and_weights_are_e001(tmp_path, capsys, spec):
    rc, err = _synth(capsys, tmp_path, "eval", str(tmp_path / "nope.safetensors"),
                     "--data", "digits")
    assert rc == 1 and "error[E001]" in err and "nope.safetensors" in err, err
    rc, err = _synth(capsys, tmp_path, "eval", str(spec), "--data", "digits", "--weights",
                     str(tmp_path / "nope.pt"))
    assert rc == 1 and "error[E001]" in err and "does not exist" in err, err


def test_images_without_pixels_are_d004(tmp_path, capsys, spec):
    np.savez(tmp_path / "flat.npz", x=np.zeros((20, 0, 8), np.float32), y=np.arange(20) % 2)
    err = _refused(capsys, tmp_path, spec, tmp_path / "flat.npz", "D004")
    assert "at least one pixel" in err


def test_a_folder_that_cannot_be_listed_is_d001(tmp_path, capsys, spec, monkeypatch):
    root = _folder(tmp_path / "imgs")
    real = Path.iterdir

    def iterdir(self):
        if self == root:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "iterdir", iterdir)
    err = _refused(capsys, tmp_path, spec, root, "D001")
    assert "permission denied" in err.lower() and "imgs" in err
