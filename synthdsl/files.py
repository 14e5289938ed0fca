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


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` atomically, as UTF-8."""
    write_bytes(path, text.encode("utf-8"))
