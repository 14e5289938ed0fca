"""Writing files so that nothing is ever half-written.

Every file synthdsl writes (compiled artifacts, locks, checkpoints, run records, reports,
pictures) goes to a temporary file in the destination's folder, which is renamed onto the
destination only when writing succeeded: a crash, a full disk or Ctrl-C leaves the old file
(or none), never a torn one. The result has the permissions of a file made with ``open()``
(``0o666`` less the umask), not the private ``0o600`` of a temporary file.

>>> import pathlib, tempfile
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> write_text(folder / "a" / "note.txt", "hello\\n")
>>> (folder / "a" / "note.txt").read_text()
'hello\\n'
>>> with atomic_path(folder / "b.bin") as tmp:
...     _ = tmp.write_bytes(b"\\x00")
>>> sorted(p.name for p in folder.iterdir())
['a', 'b.bin']
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path
from typing import Iterator


def _default_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside `path`, renamed onto it when the block succeeds (and removed
    when it fails). The folder is created if need be."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, _default_mode())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


#: Most bytes a spec (``.synth``) file may have; a spec is text written by a person.
SPEC_MAX_BYTES = 2 * 2**20
#: Most bytes a lock file (``SPEC.lock``, a JSON table of digests) may have.
LOCK_MAX_BYTES = 16 * 2**20
#: Most bytes a weights checkpoint or a compiled artifact may have.
WEIGHTS_MAX_BYTES = 256 * 2**30


class NotReadable(OSError):
    """A path that is not a regular file, or a file larger than its limit: refused before it
    is read (a FIFO would block the open, ``/dev/zero`` would never end)."""


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def _refuse(path, st: os.stat_result, limit: int, what: str) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise NotReadable(f"{what} '{path}' is {_kind(st.st_mode)}, not a regular file")
    if st.st_size > limit:
        raise NotReadable(f"{what} '{path}' has {st.st_size:,} bytes, more than the "
                          f"{limit:,} a {what} may have")


def regular_file(path: str | os.PathLike, limit: int, what: str = "file") -> os.stat_result:
    """The ``os.stat`` of `path` where it is a regular file of at most `limit` bytes; else
    :class:`NotReadable` (``FileNotFoundError`` where nothing is there). Nothing is opened.

    >>> regular_file("/dev/null", 10, "spec file")
    Traceback (most recent call last):
    ...
    synthdsl.files.NotReadable: spec file '/dev/null' is a character device, not a regular file
    """
    st = os.stat(path)
    _refuse(path, st, limit, what)
    return st


def read_regular(path: str | os.PathLike, limit: int, what: str = "file") -> bytes:
    """The bytes of `path`, a regular file of at most `limit` bytes (:func:`regular_file`).
    The file is opened without blocking, and checked once more once open, so a FIFO put in
    its place between the look and the open is refused too, not waited on."""
    regular_file(path, limit, what)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    with os.fdopen(fd, "rb") as f:
        _refuse(path, os.fstat(f.fileno()), limit, what)
        data = f.read(limit + 1)
    if len(data) > limit:
        raise NotReadable(f"{what} '{path}' has more than the {limit:,} bytes a {what} may have")
    return data


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` atomically, as UTF-8."""
    write_bytes(path, text.encode("utf-8"))
