"""Atomic writes: write to a temporary file in the target's directory, then rename over the target.

A rename within one file system is atomic on POSIX, so readers (and a restarted job) see either the old file
or the complete new one — never a truncated file — even when the writer is killed or the disk fills up.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from normscape.pipeline.errors import DiskFullError

# How a full disk shows itself: OSError's errno (Python's own writes, matplotlib), or only in the text of the error
# of a library that writes through its own C code (HDF5: "errno = 28"; torch.save: "file write failed").
DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
DISK_FULL_TEXTS = ("No space left on device", "errno = 28", "Disk quota exceeded", "file write failed")
# torch.save's zip writer reports a full disk only as a stream error ("basic_ios::clear: iostream error",
# "unexpected pos"): a write error on a device with less than this left counts as a full disk
NEARLY_FULL_BYTES = 2**20


def is_disk_full(exc: BaseException, where: str | os.PathLike | None = None) -> bool:
    """True for the error a write gets from a full disk or an exhausted quota (whichever library raised it);
    with ``where``, also any write error while the device of ``where`` has (nearly) nothing left."""
    if where is not None and isinstance(exc, (OSError, RuntimeError)):
        with contextlib.suppress(OSError):
            if shutil.disk_usage(where).free < NEARLY_FULL_BYTES:
                return True
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
            return True
        if isinstance(exc, (OSError, RuntimeError)) and any(text in str(exc) for text in DISK_FULL_TEXTS):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def disk_full_error(target: str | os.PathLike, written: int | None = None) -> DiskFullError:
    """One message: where the disk filled, what is free there, how much the write needed at least, the fix."""
    where = Path(target)
    folder = where if where.is_dir() else where.parent
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    needed = f"; {where.name} alone needs more than the {_mb(written)} it had written" if written else ""
    return DiskFullError(
        f"no space left on the device of {folder} ({_mb(free)} free there{needed}). Free space there, or set "
        "results_dir to a disk with room, and rerun the same command: finished outputs are kept and an "
        "interrupted training resumes from its last checkpoint."
    )


def _mb(size: int) -> str:
    return f"{size / 2**20:.1f} MB"


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``target``; on success it is renamed to ``target``, on error removed."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix + ".tmp", dir=target.parent)
    except OSError as exc:
        if is_disk_full(exc):
            raise disk_full_error(target) from None
        raise
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates the file 0600; give the result the permissions a normal file would get.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, target)
    except BaseException as exc:
        written = tmp_path.stat().st_size if tmp_path.exists() else None
        full = is_disk_full(exc, target.parent)  # before the temp file is removed: it holds the space it took
        tmp_path.unlink(missing_ok=True)
        if full:
            raise disk_full_error(target, written) from None
        raise


def write_text(target: str | os.PathLike, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text)


def write_json(target: str | os.PathLike, obj: Any) -> None:
    """Strict JSON: NaN and infinities (e.g. the losses of a diverged run) are written as null."""
    text = json.dumps(strict_json(obj), indent=2, sort_keys=True, default=_json_default, allow_nan=False)
    write_text(target, text + "\n")


def strict_json(obj: Any, non_finite: Callable[[float], Any] = lambda _: None) -> Any:
    """``obj`` with every NaN or infinity replaced by ``non_finite(value)`` (default None): strict JSON has no such
    numbers, and a diverged run's losses are exactly those."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else non_finite(obj)
    if isinstance(obj, dict):
        return {k: strict_json(v, non_finite) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v, non_finite) for v in obj]
    if getattr(obj, "shape", None) == ():  # numpy / torch scalars
        return strict_json(obj.item(), non_finite)
    return obj


def _json_default(obj: Any) -> Any:
    # numpy scalars and arrays, Paths: written as plain JSON values.
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")
