"""The HDF5 feature cache: one file holding the frozen backbone's features for every split.

Layout (``FORMAT_VERSION`` 1)::

    /<split>/features   float32 (N, D)   chunked by rows, D = 1280 for MobileNet-V2
    /<split>/labels     int64   (N,)     class index 0..9
    /<split>/indices    int64   (N,)     row of the image in its source set (official train or test set)
    attrs on /          format_version, backbone, weights_id, weights_sha256, input_size, precision,
                        normalization (JSON), feature_dim, num_classes, class_names (JSON),
                        data_checksum, split_seed, versions (JSON), created (ISO 8601 UTC)

``write_features`` writes atomically (temp file + rename), so a killed extraction never leaves a truncated
cache behind; ``load_split`` opens the file read-only with no write lock, so several training jobs can read it
at once. ``check_attrs`` compares a file's attributes with what the config asks for, so a cache built with a
different backbone or input size is detected and rebuilt instead of silently reused.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from normscape.atomic import atomic_path
from normscape.errors import DataError

FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")
ROWS_PER_CHUNK = 1024


def _attr_value(value: Any) -> Any:
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, sort_keys=True)
    if value is None:
        return ""
    return value


def write_features(path: str | Path, splits: Mapping[str, Mapping[str, np.ndarray]], attrs: Mapping[str, Any]) -> None:
    """Write ``splits[name] = {"features", "labels", "indices"}`` and ``attrs`` to ``path`` atomically."""
    with atomic_path(path, suffix=".h5") as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["format_version"] = FORMAT_VERSION
            for key, value in sorted(attrs.items()):  # one order: the same attrs give the same bytes
                f.attrs[key] = _attr_value(value)
            for name, arrays in splits.items():
                feats = np.asarray(arrays["features"], dtype=np.float32)
                n, d = feats.shape
                g = f.create_group(name)
                chunks = (min(n, ROWS_PER_CHUNK), d) if n else None  # a shard of a small split may be empty
                g.create_dataset("features", data=feats, chunks=chunks)
                g.create_dataset("labels", data=np.asarray(arrays["labels"], dtype=np.int64))
                g.create_dataset("indices", data=np.asarray(arrays["indices"], dtype=np.int64))


def _open(path: str | Path) -> h5py.File:
    path = Path(path)
    if not path.exists():
        raise DataError(f"feature file {path} does not exist; build it with `snakemake --cores 2 {path}`.")
    try:
        # locking=False: read-only readers must not block each other (or fail on NFS without flock).
        return h5py.File(path, "r", locking=False)
    except OSError as exc:
        raise DataError(
            f"feature file {path} is unreadable or truncated ({exc}); delete it and rerun the workflow to rebuild it."
        ) from None


def read_attrs(path: str | Path) -> dict[str, Any]:
    """All root attributes, JSON-encoded values decoded."""
    with _open(path) as f:
        out = {}
        for key, value in f.attrs.items():
            if isinstance(value, bytes):
                value = value.decode()
            if isinstance(value, np.generic):
                value = value.item()
            if isinstance(value, str) and value[:1] in "[{":
                try:
                    value = json.loads(value)
                except json.JSONDecodeError:
                    pass
            out[key] = value
        return out


def load_split(path: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """``(features float32 (N, D), labels int64 (N,))`` of one split, read fully into memory."""
    with _open(path) as f:
        if split not in f:
            raise DataError(
                f"feature file {path} has no split {split!r} (has {sorted(f.keys())}); "
                "delete it and rerun the workflow to rebuild it."
            )
        try:
            return f[split]["features"][()], f[split]["labels"][()]
        except (OSError, KeyError) as exc:
            raise DataError(
                f"feature file {path} is corrupt in split {split!r} ({exc}); delete it and rerun "
                "the workflow to rebuild it."
            ) from None


def check_attrs(path: str | Path, expected: Mapping[str, Any]) -> list[str]:
    """Names of attributes whose stored value differs from ``expected`` (empty list: compatible)."""
    stored = read_attrs(path)
    mismatched = []
    for key, want in expected.items():
        have = stored.get(key)
        if isinstance(want, (tuple, list)):
            want = list(want)
        if have != want and not (want is None and have == ""):
            mismatched.append(f"{key}: file has {have!r}, config wants {want!r}")
    return mismatched
