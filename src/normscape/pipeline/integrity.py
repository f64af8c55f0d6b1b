"""Cached HDF5 files checked when the workflow starts: a truncated or corrupt file is reported before any job.

Why at parse time: Snakemake deletes a job's existing outputs when the job starts (and again when it fails), so
a corrupt cache found by a training job would already have cost that job's finished results. Checked here, the
user sees one message naming the file and the exact rebuild command, and nothing has been touched. The check
opens the file and reads the last element of every dataset (a truncated file fails on that), not the data.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import h5py


def rebuild_command(path: str | Path) -> str:
    """The exact command that rebuilds a cached file (Snakemake then reruns what depends on it)."""
    return f"rm {path} && snakemake --cores 2 all  (add the --configfile/--profile options you normally use)"


def check_hdf5(path: str | Path, what: str = "file") -> str | None:
    """None when ``path`` is absent or reads back completely; else the message to show (file + fix)."""
    path = Path(path)
    if not path.exists():
        return None
    datasets: list[h5py.Dataset] = []
    try:
        with h5py.File(path, "r", locking=False) as f:
            f.visititems(lambda _, obj: datasets.append(obj) if isinstance(obj, h5py.Dataset) else None)
            for data in datasets:
                if data.shape and data.shape[0]:
                    data[data.shape[0] - 1]
    except (OSError, KeyError, ValueError, RuntimeError) as exc:
        return corrupt_message(path, exc, what)
    return None


def corrupt_message(path: str | Path, exc: BaseException, what: str = "") -> str:
    """The one message for a damaged file: which, what is wrong, the command that rebuilds it."""
    return f"{what} {path}".lstrip() + f" is truncated or corrupt ({exc}). Rebuild it: {rebuild_command(path)}"


def check_file(path: str | Path) -> str | None:
    """None when a run file reads back completely (HDF5, torch .pt, JSON, CSV by its suffix; others are not
    checked); else the message to show: the file, what is wrong, the command that rebuilds it."""
    path = Path(path)
    if not path.is_file():
        return None
    if path.suffix == ".h5":
        return check_hdf5(path)
    try:
        if path.suffix == ".pt":
            with zipfile.ZipFile(path) as archive:  # torch.save's format: a zip archive with CRCs
                bad = archive.testzip()
                if bad is not None:
                    raise ValueError(f"member {bad} fails its checksum")
        elif path.suffix == ".json":
            import json

            json.loads(path.read_text())
        elif path.suffix == ".csv":
            import csv

            rows = list(csv.reader(path.open()))
            if not rows or any(len(row) != len(rows[0]) for row in rows):
                raise ValueError("rows of unequal length")
    except (OSError, ValueError, UnicodeDecodeError, zipfile.BadZipFile) as exc:  # JSONDecodeError: a ValueError
        return corrupt_message(path, exc)
    return None


def corrupt_input(paths) -> str | None:
    """The message for the first input file of a job that is truncated or corrupt, or None."""
    for path in paths:
        if problem := check_file(path):
            return problem
    return None
