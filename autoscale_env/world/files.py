"""Safe file writing: the one atomic-write helper, and an exclusive lock on an output path.

Every file the package writes whole (models, checkpoints, policies, summaries, figures, traces
written by ``write_trace``) goes through :func:`atomic_writer`: the bytes go to a temp file in the
same directory, which is flushed, synced and renamed over the destination, and the directory entry
is synced too. An interrupted write therefore leaves the old file or the new one, never a torn one,
and never a stray temp file (it is removed on any exception, Ctrl-C included).

:class:`PathLock` keeps two processes from writing one output (a benchmark directory, a recorded
trace) at once. It is an advisory ``flock`` on a hidden side file, released by the kernel when the
holder dies, so a killed run never leaves a stale lock.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Self

from autoscale_env.world.errors import AutoScaleError

__all__ = ["MAX_CSV_BYTES", "MAX_JSON_BYTES", "MAX_JSON_DEPTH", "MAX_NPZ_BYTES", "OutputLocked",
           "PathLock", "atomic_write", "atomic_writer", "check_regular_file", "json_depth",
           "load_csv_rows", "load_json", "load_npz", "parse_json", "read_text"]


class OutputLocked(AutoScaleError, RuntimeError):
    """Another live process holds the lock on an output (its PID is in the message)."""


def fsync_directory(directory: Path) -> None:
    """Make a rename or a new file in ``directory`` survive a crash (best effort)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # not possible everywhere (e.g. Windows); the rename itself is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    try:  # reading it without setting it (os.umask would race with other threads)
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike, mode: str = "wb", *,
                  suffix: str = ".tmp") -> Iterator[IO]:
    """Open a temp file beside ``path``; on a clean exit it replaces ``path`` atomically.

    Args:
        path: the destination (its directory is created if missing).
        mode: ``"wb"`` (binary) or ``"w"`` (UTF-8 text).
        suffix: the temp file's suffix (some writers pick the format from it, e.g. ``".png"``).

    Yields:
        The open temp file. Leaving the block with an exception removes it and keeps ``path``.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"mode must be 'wb' or 'w', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a plain open() honours umask
        os.close(fd)
        # reopened by name, so ``f.name`` is the temp file's path (for writers that want one)
        with open(tmp, mode, **({"encoding": "utf-8"} if mode == "w" else {})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def atomic_write(path: str | os.PathLike, data: bytes | str | Callable[[IO], object], *,
                 suffix: str = ".tmp") -> Path:
    """Write ``data`` (bytes, text, or a function given the open binary file) atomically.

    Returns:
        ``path``.
    """
    if isinstance(data, str):
        with atomic_writer(path, "w", suffix=suffix) as f:
            f.write(data)
    else:
        with atomic_writer(path, "wb", suffix=suffix) as f:
            if callable(data):
                data(f)
            else:
                f.write(data)
    return Path(path)


#: Locks this process holds: lock file -> [fd, holders].
_HELD: dict[str, list[int]] = {}


class PathLock:
    """An exclusive, non-blocking lock on ``target`` (a file or directory that will be written).

    The lock is ``flock`` on the hidden side file ``.<name>.lock`` beside the *real* file that
    ``target`` names once every symlink is resolved (inside it, for a directory), holding the
    holder's PID for the error message. So a writer reaching another run's output through a
    symlink is refused like one naming it directly. Use as a context manager,
    or :meth:`acquire` / :meth:`release`.

    Raises:
        OutputLocked: on acquire, when another process holds it.
    """

    def __init__(self, target: str | os.PathLike, *, inside: bool = False, what: str = "output"):
        self.target = Path(target)
        # The lock belongs to the file that will be written, not to the name it is reached by:
        # ``link.csv -> r.csv`` and ``r.csv`` must share one lock, or two writers (one through
        # the symlink) both "succeed" into one file and interleave their bytes.
        self.real = Path(os.path.realpath(self.target))
        self.path = (self.real / ".lock") if inside else \
            self.real.with_name(f".{self.real.name}.lock")
        self.what = what
        self._fd: int | None = None
        self._key = ""

    def acquire(self) -> Self:
        """Take the lock (re-entrant within one process: a second holder shares it)."""
        if self._fd is not None:
            return self
        key = str(self.path.resolve()) if self.path.parent.exists() else str(self.path)
        held = _HELD.get(key)
        if held is not None:
            held[1] += 1
            self._fd, self._key = held[0], key
            return self
        try:
            import fcntl
        except ImportError:  # no flock (Windows): run unlocked rather than not at all
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        key = str(self.path.resolve())
        for _ in range(10):  # the holder may unlink the file between our open and our flock
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
                os.close(fd)
                via = "" if self.real == Path(os.path.abspath(self.target)) else \
                    f" (a link to {self.real})"
                raise OutputLocked(
                    f"{self.target}{via} is in use by another run (process {holder}, lock "
                    f"{self.path}); wait for it to finish or stop it, then rerun") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
                self._fd, self._key = fd, key
                _HELD[key] = [fd, 1]
                return self
            os.close(fd)  # we locked a file its holder just removed: try the new one
        raise OutputLocked(f"{self.path}: could not take the lock (it keeps changing)")

    def release(self) -> None:
        """Drop the lock (the last holder in this process removes its side file)."""
        if self._fd is None:
            return
        held = _HELD.get(self._key)
        self._fd = None
        if held is None:
            return
        held[1] -= 1
        if held[1] > 0:
            return
        del _HELD[self._key]
        with contextlib.suppress(OSError):
            self.path.unlink()  # while still holding it: a waiter re-checks the inode
        os.close(held[0])

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.release()

    def __enter__(self) -> Self:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


# --------------------------------------------------------------------------------------------
# Bounded reads

#: Largest model/checkpoint ``.npz`` read by default (file size and declared expanded size).
MAX_NPZ_BYTES = 64 * 1024 * 1024
#: Most arrays one ``.npz`` may hold.
MAX_NPZ_MEMBERS = 64


def check_regular_file(path: str | os.PathLike, max_bytes: int, error: type[Exception],
                       what: str = "file") -> int:
    """Stat ``path`` without opening it: it must be a regular file of at most ``max_bytes``.

    A FIFO would block a reader forever and ``/dev/zero`` never ends, so both are refused here,
    before any read. Returns the size; raises ``error`` naming the file and the limit.
    """
    import stat
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise error(f"{path}: no such {what}") from None
    except OSError as e:
        raise error(f"{path}: cannot be read: {e.strerror or e}") from None
    if stat.S_ISDIR(st.st_mode):
        raise error(f"{path}: is a directory, not a {what}")
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{path}: not a regular file (a device, FIFO or socket); a {what} must be "
                    f"a regular file")
    if st.st_size > max_bytes:
        raise error(f"{path}: {st.st_size} bytes exceeds the limit of {max_bytes} bytes for a "
                    f"{what}")
    return st.st_size


def load_npz(path: str | os.PathLike, error: type[Exception], *,
             max_bytes: int = MAX_NPZ_BYTES, max_members: int = MAX_NPZ_MEMBERS) -> dict:
    """Read every array of an ``.npz`` without pickle, checking sizes before allocating.

    The file size, the member count, each member's declared (uncompressed) size and each array's
    declared shape are checked against ``max_bytes`` / ``max_members`` before the data is read,
    so a deflate bomb or a header announcing a huge shape costs no memory. Object arrays are
    refused. Any problem raises ``error`` naming the file (and the limit, where one is hit).
    """
    import zipfile
    import zlib

    import numpy as np
    from numpy.lib import format as npy

    check_regular_file(path, max_bytes, error, "model file")
    arrays = {}
    try:
        with zipfile.ZipFile(path) as z:
            members = z.infolist()
            if len(members) > max_members:
                raise error(f"{path}: {len(members)} arrays exceeds the limit of {max_members}")
            declared = sum(m.file_size for m in members)
            if declared > max_bytes:
                raise error(f"{path}: declares {declared} uncompressed bytes, over the limit of "
                            f"{max_bytes} bytes")
            for m in members:
                if not m.filename.endswith(".npy"):
                    raise error(f"{path}: member {m.filename!r} is not a .npy array")
                with z.open(m) as f:
                    version = npy.read_magic(f)
                    if version not in ((1, 0), (2, 0)):
                        raise error(f"{path}: {m.filename}: unsupported .npy version {version}")
                    reader = npy.read_array_header_1_0 if version == (1, 0) else \
                        npy.read_array_header_2_0
                    shape, fortran, dtype = reader(f, max_header_size=10_000)
                    if dtype.hasobject:
                        raise error(f"{path}: {m.filename}: object arrays are refused (they "
                                    f"would need pickle)")
                    if any(d < 0 for d in shape):
                        raise error(f"{path}: {m.filename}: negative shape {shape}")
                    nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
                    if nbytes > m.file_size:  # the header promises more data than the member
                        raise error(f"{path}: {m.filename}: shape {shape} of {dtype} needs "
                                    f"{nbytes} bytes, the member holds {m.file_size}")
                    data = f.read(nbytes)
                    if len(data) != nbytes:
                        raise error(f"{path}: {m.filename}: truncated array data")
                order = "F" if fortran else "C"
                arrays[m.filename[:-4]] = np.frombuffer(data, dtype=dtype).reshape(
                    shape, order=order).copy()
    except error:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, KeyError,
            UnicodeDecodeError, RuntimeError) as e:
        raise error(f"{path}: not a readable .npz file ({type(e).__name__}: {e})") from None
    return arrays


# --------------------------------------------------------------------------------------------
# Bounded text inputs: JSON and CSV

#: Largest JSON input read by default (a model's metadata, a saved policy, a run's config): 16 MiB.
MAX_JSON_BYTES = 16 * 1024 * 1024
#: Deepest nesting of ``[`` / ``{`` accepted in a JSON input (Python's parser recurses per level).
MAX_JSON_DEPTH = 64
#: Largest CSV input read by default (measurements, features, results tables): 64 MiB.
MAX_CSV_BYTES = 64 * 1024 * 1024
#: Most data rows one CSV input may hold.
MAX_CSV_ROWS = 1_000_000


def read_text(path: str | os.PathLike, error: type[Exception], *, max_bytes: int,
              what: str = "file") -> str:
    """The UTF-8 text of ``path``, a regular file of at most ``max_bytes`` bytes.

    A FIFO, a device (``/dev/zero``), a directory or an oversize file is refused by
    :func:`check_regular_file` before it is opened; at most ``max_bytes + 1`` bytes are ever read
    (a file growing while it is read is refused too). Raises ``error`` naming the file.
    """
    check_regular_file(path, max_bytes, error, what)
    try:
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as e:
        raise error(f"{path}: cannot be read: {e.strerror or e}") from None
    if len(data) > max_bytes:
        raise error(f"{path}: grew past the limit of {max_bytes} bytes for a {what} while read")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{path}: not UTF-8 text (byte {e.start})") from None


def json_depth(text: str) -> int:
    """Deepest ``[``/``{`` nesting of a JSON text (brackets inside strings do not count)."""
    import re

    import numpy as np

    bare = re.sub(r'"(?:[^"\\]|\\.)*"', "", text).encode("utf-8", "replace")  # strings out
    depth = deepest = 0
    chunk = 1 << 20  # bounded scratch memory whatever the text's size
    for start in range(0, len(bare), chunk):
        codes = np.frombuffer(bare, dtype=np.uint8, count=min(chunk, len(bare) - start),
                              offset=start)
        step = ((codes == ord("[")) | (codes == ord("{"))).astype(np.int32)
        step -= (codes == ord("]")) | (codes == ord("}"))
        running = np.cumsum(step, dtype=np.int64) + depth
        if len(running):
            deepest = max(deepest, int(running.max()))
            depth = int(running[-1])
    return deepest


def parse_json(text: str, error: type[Exception], *, where: str = "JSON",
               max_depth: int = MAX_JSON_DEPTH) -> object:
    """``json.loads`` with the nesting checked first (no RecursionError on a hostile text).

    Raises ``error`` naming ``where`` for too deep a nesting or a syntax error.
    """
    import json

    depth = json_depth(text)
    if depth > max_depth:
        raise error(f"{where}: nested {depth} levels deep, over the limit of {max_depth}")
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as e:
        raise error(f"{where}: not valid JSON ({type(e).__name__}: {e})") from None


def load_json(path: str | os.PathLike, error: type[Exception], *,
              max_bytes: int = MAX_JSON_BYTES, max_depth: int = MAX_JSON_DEPTH,
              what: str = "JSON file") -> object:
    """Read and parse a JSON file: a regular file, at most ``max_bytes``, nested at most
    ``max_depth`` deep. Raises ``error`` naming the file and the limit it broke."""
    return parse_json(read_text(path, error, max_bytes=max_bytes, what=what), error,
                      where=str(path), max_depth=max_depth)


def load_csv_rows(path: str | os.PathLike, error: type[Exception], *,
                  max_bytes: int = MAX_CSV_BYTES, max_rows: int = MAX_CSV_ROWS,
                  what: str = "CSV file", comment: str | None = None) -> list[dict[str, str]]:
    """The rows of a CSV file with a header line, as dicts, read within bounds.

    Args:
        path: a regular file of at most ``max_bytes`` bytes.
        error: the exception type raised (naming the file and the limit).
        max_rows: most data rows accepted.
        what: what the file is, for messages.
        comment: lines starting with it before the header are skipped (e.g. ``"#"``).
    """
    import csv

    text = read_text(path, error, max_bytes=max_bytes, what=what)
    lines = text.splitlines()
    first = 0
    while comment and first < len(lines) and lines[first].startswith(comment):
        first += 1
    if len(lines) - first - 1 > max_rows:
        raise error(f"{path}: {len(lines) - first - 1} rows exceeds the limit of {max_rows} rows "
                    f"for a {what}")
    try:
        return list(csv.DictReader(lines[first:]))
    except csv.Error as e:
        raise error(f"{path}: not valid CSV ({e})") from None
