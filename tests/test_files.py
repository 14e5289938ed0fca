"""The one atomic-write helper: a failed write leaves the old file and no temporary, and what
is written has the permissions of a file made by open()."""

from __future__ import annotations

import os

import pytest

from synthdsl.files import atomic_path, write_bytes, write_text


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "model.bin"
    write_bytes(target, b"old")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half of the ne")
            raise RuntimeError("disk full")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.bin"]


def test_the_folder_is_made_and_the_text_is_utf8(tmp_path):
    target = tmp_path / "a" / "b" / "report.txt"
    write_text(target, "accuracy ≥ 0.9\n")
    assert target.read_bytes() == "accuracy ≥ 0.9\n".encode("utf-8")


def test_permissions_follow_the_umask_not_the_temporary_file(tmp_path):
    old = os.umask(0o027)
    try:
        write_text(tmp_path / "x.json", "{}")
        with atomic_path(tmp_path / "y.pt") as tmp:
            tmp.write_bytes(b"\0")
    finally:
        os.umask(old)
    assert (tmp_path / "x.json").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "y.pt").stat().st_mode & 0o777 == 0o640
