"""``.npz`` data: arrays read as numpy writes them, and sizes checked before anything is
allocated, so a header that lies or a zip that inflates without end is a D-coded error."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest

from synthdsl.lang.errors import SynthError
from synthdsl.train.npz import read_npz

ARRAYS = {
    "x": np.arange(24, dtype=np.uint8).reshape(2, 3, 4),
    "f": np.asfortranarray(np.random.default_rng(0).random((3, 5)).astype(np.float32)),
    "y": np.array([1, 0, 2], dtype=np.int64),
    "classes": np.array(["cat", "dog", "emu"]),
    "empty": np.zeros((0, 4), dtype=np.float64),
    "scalar": np.array(3.5),
    "b": np.array([True, False]),
}


@pytest.mark.parametrize("compressed", [False, True])
def test_arrays_are_read_as_numpy_reads_them(tmp_path, compressed):
    path = tmp_path / "d.npz"
    (np.savez_compressed if compressed else np.savez)(path, **ARRAYS)
    got = read_npz(path)
    with np.load(path, allow_pickle=False) as want:
        assert sorted(got) == sorted(want.files)
        for k in want.files:
            assert got[k].dtype == want[k].dtype and got[k].shape == want[k].shape
            np.testing.assert_array_equal(got[k], want[k])


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def _lying_header(shape) -> bytes:
    """An .npy header claiming `shape` of float32, followed by 16 bytes."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False,
                                              "shape": shape})
    return np.lib.format.MAGIC_PREFIX[:0] + buf.getvalue() + b"\0" * 16


def _error(path) -> SynthError:
    with pytest.raises(SynthError) as info:
        read_npz(path)
    assert info.value.code.startswith("D"), info.value.code
    return info.value


def test_a_header_claiming_more_than_its_record_holds_is_refused(tmp_path):
    path = tmp_path / "lie.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("x.npy", _lying_header((3_000_000_000,)))  # 12 GB claimed
    e = _error(path)
    assert "claims shape [3000000000]" in e.message and "holds 16 bytes" in e.message


def test_a_zip_bomb_is_refused_before_it_is_inflated(tmp_path, monkeypatch):
    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("x.npy", _npy_bytes(np.zeros(64 * 2**20, dtype=np.uint8)))
    assert path.stat().st_size < 2**20
    monkeypatch.setenv("SYNTHDSL_MAX_DATA_BYTES", str(2**20))
    e = _error(path)
    assert "unpacks to" in e.message and "more than the 1,048,576" in e.message
    assert "SYNTHDSL_MAX_DATA_BYTES" in e.hint
    monkeypatch.delenv("SYNTHDSL_MAX_DATA_BYTES")
    assert read_npz(path)["x"].shape == (64 * 2**20,)


def test_object_arrays_are_refused_without_unpickling(tmp_path):
    path = tmp_path / "obj.npz"
    np.savez(path, x=np.array([{"a": 1}, None], dtype=object))
    assert "Python objects" in _error(path).message


@pytest.mark.parametrize("payload, words", [
    (b"not an npy file at all", "no readable .npy header"),
    (_npy_bytes(np.arange(10, dtype=np.int64))[:-8], "record holds"),
])
def test_broken_records_are_refused(tmp_path, payload, words):
    path = tmp_path / "bad.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("x.npy", payload)
    assert words in _error(path).message


def test_a_file_that_is_not_a_zip_is_refused(tmp_path):
    path = tmp_path / "no.npz"
    path.write_bytes(b"\x93NUMPY nope")
    assert "as an .npz of arrays" in _error(path).message


def test_a_bad_limit_in_the_environment_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.zeros(3))
    monkeypatch.setenv("SYNTHDSL_MAX_DATA_BYTES", "lots")
    assert "whole number of bytes" in _error(path).message


def test_the_data_loader_reads_npz_through_the_checks(tmp_path):
    from synthdsl.train.data import load_dataset

    good = tmp_path / "good.npz"
    np.savez(good, x=np.zeros((10, 1, 8, 8), dtype=np.uint8), y=np.arange(10) % 2)
    assert len(load_dataset(good, "all")) == 10
    lie = tmp_path / "lie.npz"
    with zipfile.ZipFile(lie, "w") as z:
        z.writestr("x.npy", _lying_header((3_000_000_000,)))
        z.writestr("y.npy", _npy_bytes(np.arange(3)))
    with pytest.raises(SynthError, match="claims shape") as info:
        load_dataset(lie, "all")
    assert info.value.code.startswith("D")
