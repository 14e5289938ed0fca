"""Writing files so that nothing is ever half-written.

Every file synthdsl writes (compiled artifacts, locks, checkpoints, run records, reports,
pictures) goes to a temporary file in the destination's folder, which is renamed onto the
destination only when writing succeeded: a crash, a full disk or Ctrl-C leaves the old file
(or none), never a torn one. The result has the permissions of a file made with ``open()``
(``0o666`` less the umask), not the private ``0o600`` of a temporary file.

A temporary file is named ``.NAME.<pid>-<n>.tmp`` after its destination and its writer,
so a write that was killed (``kill -9``, a power cut) leaves a file the next write of the
same destination recognises and removes, once its writer is gone. A destination that
cannot be written (permissions, a read-only filesystem, a full disk, a path through a
file) is a :class:`WriteFailed` (S009) naming it, never a traceback.

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
import errno
import itertools
import os
import re
import stat
import time
from pathlib import Path
from typing import BinaryIO, Iterator

from synthdsl.lang.errors import SynthError


def _default_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


#: A temporary file older than this is stale even where its pid is alive (a pid reused by
#: another process, or a writer in another pid namespace): nothing writes one file that long.
STALE_TEMP_SECONDS = 24 * 3600

#: Errors that are about the place written to, whatever the file they name: a full disk, a
#: quota, a file larger than the filesystem takes, a read-only filesystem.
_DISK_ERRNOS = frozenset(getattr(errno, n) for n in ("ENOSPC", "EDQUOT", "EFBIG", "EROFS")
                         if hasattr(errno, n))
#: Errors that are about a path: user mistakes where they name the destination (or a folder
#: above it), bugs of ours where they name any other file.
_PATH_ERRNOS = frozenset(getattr(errno, n) for n in (
    "EACCES", "EPERM", "ENOTDIR", "EISDIR", "ENAMETOOLONG", "ELOOP", "ENOENT", "EEXIST",
    "EXDEV", "EMLINK") if hasattr(errno, n))
_TEMP_COUNTER = itertools.count()


class WriteFailed(SynthError):
    """A destination that cannot be written: no permission, a read-only filesystem, a full
    disk, a path through a file (S009, with the path)."""

    def __init__(self, path: str | os.PathLike, error: OSError) -> None:
        path = str(path)
        why = error.strerror or str(error) or type(error).__name__
        hint = {errno.EACCES: "choose a folder you can write to, or change its permissions",
                errno.EPERM: "choose a folder you can write to, or change its permissions",
                errno.ENOSPC: "free some space, or write somewhere else",
                errno.EROFS: "write to a writable filesystem"}.get(error.errno)
        where = error.filename
        named = f" ('{where}')" if where and str(where) != path and not _is_temp(where) else ""
        super().__init__("S009", f"cannot write '{path}': {why.lower()}{named}", hint=hint)
        self.errno = error.errno


def _is_temp(name) -> bool:
    return str(name).endswith(".tmp") and Path(name).name.startswith(".")


def _embedded_errno(e: BaseException) -> int | None:
    """The errno of an OSError, or the one a writer written in another language states in its
    message (safetensors: ``Os { code: 28, ... }``; torch: ``errno: 28``)."""
    if isinstance(e, OSError):
        return e.errno
    m = re.search(r"(?:\bcode: |os error |errno:? )(\d+)", str(e))
    return int(m.group(1)) if m else None


def is_disk_error(e: BaseException) -> bool:
    """Whether `e` is a full disk, a quota, a file too large or a read-only filesystem."""
    return _embedded_errno(e) in _DISK_ERRNOS


def write_error(e: BaseException, path: Path, also: tuple = ()) -> WriteFailed | None:
    """The :class:`WriteFailed` an error met while writing `path` stands for, or None where it
    is not about the destination (a bug, or a failure reading some other file): a full disk
    or a read-only filesystem whatever file it names, a permission or path error only where
    it names `path`, a folder above it, or one of `also` (the temporary file)."""
    if isinstance(e, WriteFailed):
        return e
    code = _embedded_errno(e)
    if code is None:
        return None
    err = e if isinstance(e, OSError) else OSError(code, os.strerror(code))
    if code in _DISK_ERRNOS:
        return WriteFailed(path, err)
    if code in _PATH_ERRNOS and isinstance(e, OSError):
        mine = {str(p) for p in (path, *path.parents, *also)}
        names = {str(n) for n in (e.filename, getattr(e, "filename2", None)) if n is not None}
        pattern = temp_pattern(path.name)
        if names & mine or any(Path(n).parent == path.parent and pattern.fullmatch(Path(n).name)
                               for n in names):
            return WriteFailed(path, e)
    return None


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError, ValueError):  # gone, or no pid at all
        return False
    except (PermissionError, OSError):
        return True  # someone else's process: alive
    return True


def temp_pattern(name: str) -> re.Pattern:
    """The names of the temporary files written for a destination called `name`:
    ``.NAME.<pid>-<n>.tmp``."""
    return re.compile(r"\." + re.escape(name) + r"\.(\d+)-\d+\.tmp")


def _legacy_pattern(name: str) -> re.Pattern:
    """Temporary names of earlier versions (``tempfile.mkstemp``'s ``.NAME.XXXXXXXX.tmp``),
    removed once older than :data:`STALE_TEMP_SECONDS`."""
    return re.compile(r"\." + re.escape(name) + r"\.[a-z0-9_]{8}\.tmp")


def remove_stale_temps(path: str | os.PathLike, now: float | None = None) -> list[Path]:
    """Remove what killed writes of `path` left beside it: its temporary files whose writer's
    pid is gone, or that are older than :data:`STALE_TEMP_SECONDS` (also those of the
    ``mkstemp`` names earlier versions wrote). Only this destination's, only regular files.
    The removed paths."""
    path = Path(path)
    pattern = temp_pattern(path.name)
    now = time.time() if now is None else now
    removed = []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return removed
    legacy = _legacy_pattern(path.name)
    for entry in entries:
        m = pattern.fullmatch(entry.name)
        if not m and not legacy.fullmatch(entry.name):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode):
                continue
            alive = _pid_alive(int(m.group(1))) if m else True  # a legacy name has no pid
            if alive and now - st.st_mtime < STALE_TEMP_SECONDS:
                continue
            os.unlink(entry.path)
            removed.append(Path(entry.path))
        except OSError:  # gone already, or not ours to remove: leave it
            continue
    return removed


def _new_temp(path: Path) -> Path:
    """Create the temporary file (exclusively, ``0o600``) for writing `path`."""
    while True:
        tmp = path.parent / f".{path.name}.{os.getpid()}-{next(_TEMP_COUNTER)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0),
                         0o600)
        except FileExistsError:  # left by an earlier process of the same pid
            continue
        os.close(fd)
        return tmp


def _refuse_special(path: Path) -> None:
    """S009 where `path` exists and is neither a regular file nor a link (a FIFO, a device, a
    socket, a folder): a rename would replace it."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
        raise SynthError("S009", f"'{path}' exists and is not a regular file; it is not "
                         "replaced", hint="write to a regular file's path")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside `path`, renamed onto it when the block succeeds (and removed
    when it fails). The folder is created if need be, and what earlier killed writes of
    `path` left there is removed (:func:`remove_stale_temps`).

    A destination that cannot be written (no permission, a read-only filesystem, a full
    disk, a path through a file) raises :class:`WriteFailed` naming it, whether the failure
    comes from making the folder, writing in the block or the rename; other errors pass
    unchanged."""
    path = Path(path)
    tmp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path)
        tmp = _new_temp(path)
        yield tmp
        os.chmod(tmp, _default_mode())
        _refuse_special(path)  # checked again just before: a FIFO or device is never replaced
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        failed = write_error(e, path, (tmp,) if tmp is not None else ())
        if failed is not None and failed is not e:
            raise failed from None
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


def open_regular(path: str | os.PathLike, limit: int, what: str = "file") -> BinaryIO:
    """`path` open for reading in binary, where it is a regular file of at most `limit` bytes
    (:func:`regular_file`). The file is opened without blocking, and checked once more once
    open, so a FIFO put in its place between the look and the open is refused too, not
    waited on."""
    regular_file(path, limit, what)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    f = os.fdopen(fd, "rb")
    try:
        _refuse(path, os.fstat(f.fileno()), limit, what)
    except BaseException:
        f.close()
        raise
    return f


def read_regular(path: str | os.PathLike, limit: int, what: str = "file") -> bytes:
    """The bytes of `path`, a regular file of at most `limit` bytes (:func:`open_regular`)."""
    with open_regular(path, limit, what) as f:
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
