"""Files graphnn writes and reads back: atomic multi-file saves and a distrusting .npz reader.

Writing (`write_files`): every file of one save (a model's `.json` and `.npz`, a
program's `.py` and `.npz`, a checkpoint) is first written in full to a
temporary file in the destination folder and synced; only when all of them are
written are they renamed into place. A write that fails (disk full, a file size
limit, an exception) removes its temporaries and leaves the previous files as
they were, so the previous save still loads. Temporaries are named
`.<name>.<pid>.<random>.tmp`; one left behind by a process that was killed is
removed by the next save of the same file (its process is gone).

Reading (`read_npy`, `read_npz`): an archive from someone else can be damaged or
hostile. Every failure is a `FormatError`: a bad zip directory, an "encrypted"
flag, an unknown compression method, a bad deflate stream or CRC, a pickled
(object) array, and a `.npy` header claiming more data than the member holds
(checked *before* allocating: a header may claim 10**12 elements).
"""
from __future__ import annotations

import os
import re
import tempfile
import zipfile
import zlib
from typing import Iterable

import numpy as np

from .errors import FormatError

# -- writing ---------------------------------------------------------------------------------

_TMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[A-Za-z0-9_]+\.tmp$")


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True  # ours: possibly being written by another thread right now
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError, OverflowError):
        return True  # exists (another user's), or cannot tell: leave it alone
    return True


def sweep_stale(path: str) -> list[str]:
    """Remove temporaries of `path` left by processes that no longer exist; return them."""
    folder = os.path.dirname(os.path.abspath(path))
    base = os.path.basename(path)
    removed = []
    try:
        entries = os.listdir(folder)
    except OSError:
        return removed
    for entry in entries:
        m = _TMP.match(entry)
        if m and m.group("name") == base and not _pid_alive(int(m.group("pid"))):
            try:
                os.unlink(os.path.join(folder, entry))
                removed.append(entry)
            except OSError:
                pass
    return removed


def _umask() -> int:
    """The process umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_files(files: Iterable[tuple[str, bytes]]) -> None:
    """Write each (path, data): all temporaries first, then all renames."""
    files = [(os.fspath(p), d) for p, d in files]
    temps: list[str] = []
    try:
        for path, data in files:
            sweep_stale(path)
            folder = os.path.dirname(os.path.abspath(path))
            fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp",
                                       prefix=f".{os.path.basename(path)}.{os.getpid()}.")
            temps.append(tmp)
            os.chmod(tmp, 0o666 & ~_umask())   # mkstemp makes 0600; a saved file gets the usual mode
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        for (path, _), tmp in zip(files, temps):
            os.replace(tmp, path)
    except BaseException:
        for tmp in temps:
            try:
                os.unlink(tmp)
            except OSError:
                pass  # already renamed into place
        raise


# -- reading ---------------------------------------------------------------------------------

# deflate cannot expand data more than ~1032 times: a member claiming more is lying
_MAX_RATIO = 1100
_READ_ERRORS = (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error, KeyError,
                NotImplementedError, RuntimeError, MemoryError, OverflowError, TypeError,
                IndexError, UnicodeDecodeError, SyntaxError)


def open_zip(path: str, what: str) -> zipfile.ZipFile:
    """A ZipFile whose members are all plain (stored or deflated, unencrypted)."""
    try:
        zf = zipfile.ZipFile(path)
    except FileNotFoundError:
        raise
    except _READ_ERRORS as e:
        raise FormatError(f"{path}: not {what} ({type(e).__name__}: {e})") from None
    for info in zf.infolist():
        if info.flag_bits & 0x1:
            zf.close()
            raise FormatError(f"{path}: member {info.filename!r} is marked encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            zf.close()
            raise FormatError(f"{path}: member {info.filename!r} uses compression method "
                              f"{info.compress_type}; only stored and deflated are read")
    return zf


def read_member(zf: zipfile.ZipFile, name: str, path: str, limit: int | None = None) -> bytes:
    """The bytes of one member (at most `limit`), FormatError on any damage."""
    try:
        info = zf.getinfo(name)
        if limit is not None and info.file_size > limit:
            raise FormatError(f"{path}: member {name!r} is {info.file_size} bytes "
                              f"(at most {limit} expected)")
        return zf.read(name)
    except FormatError:
        raise
    except _READ_ERRORS as e:
        raise FormatError(f"{path}: member {name!r} is unreadable ({type(e).__name__}: "
                          f"{e})") from None


def read_npy(zf: zipfile.ZipFile, name: str, path: str) -> np.ndarray:
    """One `.npy` member as an array: header checked against the member's size first."""
    try:
        info = zf.getinfo(name)
        budget = info.file_size
        if info.compress_type == zipfile.ZIP_DEFLATED:
            budget = min(budget, info.compress_size * _MAX_RATIO)
        with zf.open(info) as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise FormatError(f"{path}: member {name!r} has .npy version {version}")
            if dtype.hasobject:
                raise FormatError(f"{path}: member {name!r} holds Python objects (a "
                                  "pickle): it cannot be read safely")
            count = 1
            for d in shape:
                count *= int(d)
            if count * dtype.itemsize > budget:
                raise FormatError(f"{path}: member {name!r} claims shape {shape} of {dtype} "
                                  f"({count * dtype.itemsize} bytes) but holds at most "
                                  f"{budget} bytes")
            data = f.read(count * dtype.itemsize)
            if len(data) != count * dtype.itemsize:
                raise FormatError(f"{path}: member {name!r} is truncated")
            if f.read(1):
                raise FormatError(f"{path}: member {name!r} has data after its array")
        arr = np.frombuffer(data, dtype=dtype)
        if fortran:
            arr = arr.reshape(shape[::-1]).transpose()
        else:
            arr = arr.reshape(shape)
        return np.array(arr)  # writable, owns its memory
    except FormatError:
        raise
    except _READ_ERRORS as e:
        raise FormatError(f"{path}: array {name!r} is unreadable ({type(e).__name__}: "
                          f"{e})") from None


def read_npz(path: str) -> dict[str, np.ndarray]:
    """Every array of an `.npz` written by `np.savez`, keyed without `.npy`."""
    out = {}
    with open_zip(path, "an .npz archive") as zf:
        for name in zf.namelist():
            if not name.endswith(".npy"):
                raise FormatError(f"{path}: member {name!r} is not an .npy array")
            out[name[:-4]] = read_npy(zf, name, path)
    return out
