"""The HDF5 feature cache: one file holding the frozen backbone's features for every split.

Layout (``FORMAT_VERSION`` 2)::

    /<split>/features   float32 (N, D)   chunked by rows, D = 1280 for MobileNet-V2
    /<split>/labels     int64   (N,)     class index 0..num_classes-1
    /<split>/indices    int64   (N,)     row of the image in its source set (official train or test set)
    attrs on /          format_version, backbone, weights_id, weights_sha256, input_size, precision,
                        normalization (JSON), feature_dim, num_classes, class_names (JSON),
                        data_checksum, split_seed, split_sizes (JSON), split_fingerprint, identity,
                        backbone_request (digest of the backbone settings as configured; not part of the
                        identity), split_crc32 (JSON: CRC-32 of each split's features and labels as
                        written; checked when a split is read whole), versions (JSON), created (ISO 8601 UTC)

Provenance: ``identity`` is a digest of everything the features were computed from — the ``IDENTITY_ATTRS``
(backbone, weights and their sha256, input size, precision, preprocessing, data archive checksum) plus
``split_fingerprint``, a content digest of every split's source indices and labels (so the split seed and the
val/test sizes are covered by what was actually written, not by config text), plus ``FORMAT_VERSION``. It is
computed by :func:`write_features` itself, so no writer can forget it. Every consumer records it (training
checkpoints and run outputs, landscapes) and compares it before reusing anything (see docs/provenance.md).

``write_features`` writes atomically (temp file + rename), so a killed extraction never leaves a truncated
cache behind; ``load_split`` opens the file read-only with no write lock, so several training jobs can read it
at once. :func:`require_compatible` compares a file's attributes with what the config asks for
(:func:`expected_attrs`) and raises one :class:`DataError` naming the mismatches and the rebuild command, so a
cache built with a different backbone, input size or split is never silently used; :func:`check_readable`
runs when the workflow is parsed, so a truncated cache is reported before any job (and any deletion of
finished outputs) starts.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from normscape.pipeline.atomic import atomic_path
from normscape.pipeline.errors import DataError
from normscape.pipeline.integrity import check_hdf5, rebuild_command

FORMAT_VERSION = 2
SPLITS = ("train", "val", "test")
ROWS_PER_CHUNK = 1024
# The attributes that determine the feature values (versions, device, creation time and the weights file's
# path do not: the weights are covered by their sha256, or by their name for built-in weights).
IDENTITY_ATTRS = (
    "backbone",
    "weights_id",
    "weights_sha256",
    "input_size",
    "precision",
    "normalization",
    "feature_dim",
    "data_checksum",
)


def digest(obj: Any) -> str:
    """A short, stable content digest of a JSON-able object (keys sorted)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def split_fingerprint(splits: Mapping[str, Mapping[str, np.ndarray]]) -> str:
    """Digest of which source rows and labels each split holds: covers the split seed and val/test sizes."""
    h = hashlib.sha256()
    for name in sorted(splits):
        h.update(name.encode())
        for key in ("indices", "labels"):
            h.update(np.ascontiguousarray(np.asarray(splits[name][key], dtype=np.int64)).tobytes())
    return h.hexdigest()[:16]


def compute_identity(attrs: Mapping[str, Any], fingerprint: str) -> str:
    return digest(
        {
            "format_version": FORMAT_VERSION,
            "split_fingerprint": fingerprint,
            **{key: _attr_value(attrs.get(key)) for key in IDENTITY_ATTRS},
        }
    )


def _attr_value(value: Any) -> Any:
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, sort_keys=True)
    if value is None:
        return ""
    return value


# Attributes write_features computes from the arrays it writes (never taken from the caller).
DERIVED_ATTRS = ("split_sizes", "split_fingerprint", "identity", "split_crc32")


def split_crc32(features: np.ndarray, labels: np.ndarray) -> int:
    """CRC-32 of a split's float32 features and int64 labels, in row order (~0.1 s for CIFAR-10's training split):
    bytes damaged inside the file (a bad disk, a partial copy) read back as valid numbers (NaN features, labels
    out of range) that no HDF5 check notices, and training would report as divergence or fail obscurely."""
    crc = zlib.crc32(np.ascontiguousarray(features, dtype=np.float32).reshape(-1).view(np.uint8))
    return zlib.crc32(np.ascontiguousarray(labels, dtype=np.int64).reshape(-1).view(np.uint8), crc)


def write_features(path: str | Path, splits: Mapping[str, Mapping[str, np.ndarray]], attrs: Mapping[str, Any]) -> None:
    """Write ``splits[name] = {"features", "labels", "indices"}`` and ``attrs`` to ``path`` atomically, with the
    ``split_sizes``, ``split_fingerprint`` and ``identity`` attributes computed from what is written."""
    fingerprint = split_fingerprint(splits)
    derived = {
        "split_sizes": {name: int(len(arrays["labels"])) for name, arrays in splits.items()},
        "split_fingerprint": fingerprint,
        "identity": compute_identity(attrs, fingerprint),
        "split_crc32": {name: split_crc32(arrays["features"], arrays["labels"]) for name, arrays in splits.items()},
    }
    with atomic_path(path, suffix=".h5") as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["format_version"] = FORMAT_VERSION
            for key, value in sorted({**attrs, **derived}.items()):  # one order: the same attrs, the same bytes
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
            f"feature file {path} is unreadable or truncated ({_short(exc)}). Rebuild it: {rebuild_command(path)}"
        ) from None


def _short(exc: Exception) -> str:
    return str(exc) or type(exc).__name__


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


def _require_split(f: h5py.File, path: str | Path, split: str) -> None:
    if split not in f:
        raise DataError(
            f"feature file {path} has no split {split!r} (has {sorted(f.keys())}). Rebuild it: {rebuild_command(path)}"
        )


def _check_crc(path: str | Path, recorded: Any, split: str, features: np.ndarray, labels: np.ndarray) -> None:
    """Raise :class:`DataError` unless ``features`` and ``labels`` match ``recorded``, the file's ``split_crc32``
    attribute (None in a file written before there was one: not checked)."""
    if isinstance(recorded, bytes):
        recorded = recorded.decode()
    try:
        expected = json.loads(recorded).get(split) if recorded else None
    except (ValueError, AttributeError) as exc:  # not the JSON object the writer records
        raise _corrupt_split(path, split, exc) from None
    if expected is not None and split_crc32(features, labels) != expected:
        raise DataError(
            f"feature file {path} is corrupt in split {split!r} (its features or labels are not the bytes that were "
            f"written: CRC-32 mismatch). Rebuild it: {rebuild_command(path)}"
        )


def _corrupt_split(path: str | Path, split: str, exc: Exception) -> DataError:
    return DataError(
        f"feature file {path} is corrupt in split {split!r} ({_short(exc)}). Rebuild it: {rebuild_command(path)}"
    )


def load_split(path: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """``(features float32 (N, D), labels int64 (N,))`` of one split, read fully into memory."""
    with _open(path) as f:
        _require_split(f, path, split)
        try:
            features, labels = f[split]["features"][()], f[split]["labels"][()]
        except (OSError, KeyError) as exc:
            raise _corrupt_split(path, split, exc) from None
        _check_crc(path, f.attrs.get("split_crc32"), split, features, labels)
    return features, labels


def _file_extent(features: h5py.Dataset) -> int | None:
    """Byte offset of ``features``' rows when they lie in the file back to back in row order, unfiltered and
    little-endian float32 (so a memory map of the file IS the array); else None."""
    if features.dtype != np.dtype("<f4") or features.ndim != 2 or len(features) == 0:
        return None
    dsid = features.id
    if features.chunks is None:  # contiguous layout
        offset = dsid.get_offset()
        return None if offset is None else int(offset)
    if dsid.get_create_plist().get_nfilters() or features.chunks[1] != features.shape[1]:
        return None
    rows_per_chunk = features.chunks[0]
    chunk_bytes = rows_per_chunk * features.shape[1] * 4
    n_chunks = -(-len(features) // rows_per_chunk)
    if not hasattr(dsid, "get_chunk_info") or dsid.get_num_chunks() != n_chunks:  # h5py/HDF5 too old to tell
        return None
    starts = sorted(
        (info.chunk_offset[0], info.byte_offset, info.size) for info in map(dsid.get_chunk_info, range(n_chunks))
    )
    first = starts[0][1]
    for i, (row, byte_offset, size) in enumerate(starts):
        if row != i * rows_per_chunk or byte_offset != first + i * chunk_bytes or size != chunk_bytes:
            return None
    return int(first)


def map_split(path: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """``load_split(path, split)`` with the features as a copy-on-write memory map of the file where its layout
    allows (the writer's chunks lie back to back; tests/test_features.py checks equality with ``load_split``),
    else read like ``load_split``.

    A training job then reads the 256 MB training split from the page cache, shared with every other job on the
    node, instead of copying it into freshly faulted memory of its own; writes to the array stay private.
    """
    with _open(path) as f:
        _require_split(f, path, split)
        try:
            features = f[split]["features"]
            offset, shape = _file_extent(features), features.shape
            labels = f[split]["labels"][()] if offset is not None else None
            recorded = f.attrs.get("split_crc32")
        except (OSError, KeyError) as exc:
            raise _corrupt_split(path, split, exc) from None
    if offset is None:
        return load_split(path, split)
    try:
        mapped = np.memmap(path, dtype="<f4", mode="c", offset=offset, shape=shape)
    except (OSError, ValueError) as exc:  # e.g. a file cut short after its header
        raise _corrupt_split(path, split, exc) from None
    _check_crc(path, recorded, split, mapped, labels)
    return mapped, labels


def split_length(path: str | Path, split: str) -> int:
    """Rows of one split, read from the file's dataset (not from its attributes)."""
    with _open(path) as f:
        _require_split(f, path, split)
        return len(f[split]["labels"])


def load_rows(path: str | Path, split: str, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``load_split(path, split)`` restricted to ``rows`` (any order, repeats allowed): equal to indexing the whole
    split, without holding it in memory.

    The landscape and Hessian jobs use seeded subsets (e.g. 2,000 of the 50,000 training rows): reading them a chunk
    (``ROWS_PER_CHUNK`` rows) at a time into one reused buffer keeps ~5 MB in memory instead of 256 MB and
    skips the chunks that hold none of the rows.
    """
    rows = np.asarray(rows, dtype=np.int64)
    with _open(path) as f:
        _require_split(f, path, split)
        try:
            features, labels = f[split]["features"], f[split]["labels"]
            n = len(features)
            if rows.size and (rows.min() < 0 or rows.max() >= n):
                raise IndexError(f"rows outside [0, {n}) requested from split {split!r} of {path}")
            x = np.empty((len(rows), *features.shape[1:]), dtype=features.dtype)
            step = (features.chunks or (ROWS_PER_CHUNK,))[0]
            buffer = np.empty((min(step, n), *features.shape[1:]), dtype=features.dtype)
            order = np.argsort(rows, kind="stable")
            sorted_rows = rows[order]
            bounds = np.searchsorted(sorted_rows, np.arange(0, n + step, step))
            for block, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
                if lo == hi:
                    continue
                start = block * step
                stop = min(start + step, n)
                features.read_direct(buffer, np.s_[start:stop], np.s_[: stop - start])
                x[order[lo:hi]] = buffer[sorted_rows[lo:hi] - start]
            return x, labels[()][rows]
        except (OSError, KeyError) as exc:
            raise _corrupt_split(path, split, exc) from None


def identity(path: str | Path) -> str:
    """The recorded identity of a feature cache; a cache without one (an older format) is an error."""
    ident = read_attrs(path).get("identity")
    if not ident:
        raise DataError(
            f"feature file {path} has no recorded identity (written by an older version, format "
            f"{read_attrs(path).get('format_version')} < {FORMAT_VERSION}). Rebuild it: {rebuild_command(path)}"
        )
    return str(ident)


def check_readable(path: str | Path) -> str | None:
    """None when ``path`` is absent or a readable cache of the current format; else the message to show.

    Reads the attributes and every dataset's last element: enough to catch a truncated or foreign file without
    reading gigabytes at workflow start.
    """
    if not Path(path).exists():
        return None
    problem = check_hdf5(path, "feature file")
    if problem:
        return problem
    with _open(path) as f:
        if int(f.attrs.get("format_version", 0)) != FORMAT_VERSION or "identity" not in f.attrs:
            return (
                f"feature file {path} was written by another version of normscape (format "
                f"{f.attrs.get('format_version')}, need {FORMAT_VERSION}) and has no usable identity. "
                f"Rebuild it: {rebuild_command(path)}"
            )
    return None


BACKBONE_REQUEST_KEYS = ("arch", "weights", "weights_sha256", "input_size", "precision")


def backbone_request(backbone: Mapping[str, Any]) -> str:
    """Digest of the backbone settings as the config states them (before defaults are resolved) and of the
    torchvision that resolves them; extraction records it as the ``backbone_request`` attribute."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        torchvision_version = version("torchvision")
    except PackageNotFoundError:
        torchvision_version = None
    request = {key: backbone.get(key) for key in BACKBONE_REQUEST_KEYS}
    return digest({**request, "torchvision": torchvision_version})


def attrs_if_requested(path: str | Path | None, backbone: Mapping[str, Any]) -> dict[str, Any] | None:
    """The attributes of the feature cache at ``path`` when it records these backbone settings as its
    ``backbone_request`` (extraction resolved exactly them, with this torchvision); else None (also for a
    missing or unreadable file)."""
    if path is None or not Path(path).is_file():
        return None
    try:
        stored = read_attrs(path)
    except (OSError, DataError):
        return None
    return stored if stored.get("backbone_request") == backbone_request(backbone) else None


def built_from(path: str | Path, backbone: Mapping[str, Any], weights_file: str | Path | None) -> bool:
    """Whether the feature cache at ``path`` was extracted with exactly these backbone settings (as configured,
    by this torchvision) from a weights file not replaced since (older than the cache, as Snakemake judges it):
    then nothing can make extraction run again with them, and checking them (:func:`~normscape.features.
    backbones.backbone_problem`, seconds of imports) can be skipped. Reads attributes and mtimes only."""
    if attrs_if_requested(path, backbone) is None:
        return False
    return not weights_file or Path(weights_file).stat().st_mtime <= Path(path).stat().st_mtime


def expected_attrs(
    backbone: Mapping[str, Any], data: Mapping[str, Any], cache: str | Path | None = None
) -> dict[str, Any]:
    """What the config asks a feature cache to be: compared with :func:`require_compatible` before use.

    Resolves what the config leaves to defaults the way extraction does (the weights' own input size, the
    concrete torchvision weights behind ``DEFAULT``). That needs torchvision (~1.5 s of CPU to import), so it
    is not done at parse time, and with ``cache`` (the feature file about to be checked) not at all when the
    file records the same ``backbone_request``: extraction resolved exactly these settings with this
    torchvision, so its recorded weights id and input size are what resolving them again would give (tested
    equal). Everything else is still compared for real."""
    from normscape.data.datasets import split_rule

    arch, weights = backbone["arch"], str(backbone["weights"])
    if (stored := attrs_if_requested(cache, backbone)) is not None:
        resolved = {"weights_id": stored.get("weights_id"), "input_size": stored.get("input_size")}
    else:
        resolved = _resolve_backbone(arch, weights, backbone["input_size"])
    expected = {
        "backbone": arch,
        "weights_id": resolved["weights_id"],
        "input_size": resolved["input_size"],
        "precision": "fp32" if backbone["precision"] == "auto" else backbone["precision"],
        "dataset": data["dataset"],
        "split_rule": split_rule(data),
    }
    if backbone.get("weights_sha256"):
        expected["weights_sha256"] = str(backbone["weights_sha256"]).lower()
    return expected


def _resolve_backbone(arch: str, weights: str, input_size: int | None) -> dict[str, Any]:
    """The weights id and input size extraction derives from the config (imports torchvision)."""
    from normscape.features.backbones import RANDOM_WEIGHTS, is_torchvision_weights, preprocessing, torchvision_weights

    if weights == RANDOM_WEIGHTS:
        weights_id = weights
    elif is_torchvision_weights(arch, weights):
        weights_id = f"torchvision:{torchvision_weights(arch, weights).name}"
    else:
        weights_id = f"file:{Path(weights).name}"
    return {"weights_id": weights_id, "input_size": input_size or preprocessing(arch, weights)["input_size"]}


def cache_differences(path: str | Path, backbone: Mapping[str, Any], data: Mapping[str, Any]) -> list[str]:
    """How the feature cache at ``path`` differs from what the config asks (:func:`check_attrs`' lines); empty
    when it matches, or is missing or unreadable (reported by its own check). Resolving what the config leaves to
    defaults imports torchvision (~1.5 s) only when the cache records another backbone request than the config's
    (:func:`expected_attrs`): a cache this workflow built records the config's."""
    if not Path(path).is_file():
        return []
    try:
        return check_attrs(path, expected_attrs(backbone, data, cache=path))
    except Exception:  # noqa: BLE001 - unreadable cache, bad backbone settings: their own checks say so
        return []


def require_compatible(path: str | Path, expected: Mapping[str, Any]) -> str:
    """The cache's identity, after checking it was built for ``expected``; else one DataError naming the fix."""
    mismatched = check_attrs(path, expected)
    if mismatched:
        raise DataError(
            f"feature file {path} was not built for this config ({'; '.join(mismatched)}). "
            f"Rebuild it: {rebuild_command(path)}"
        )
    return identity(path)


def check_attrs(path: str | Path, expected: Mapping[str, Any]) -> list[str]:
    """Mismatches between stored attributes and ``expected`` ("key: file has X, config wants Y"; empty list:
    compatible). A dotted key ``a.b`` looks into the JSON attribute ``a``."""
    stored = read_attrs(path)
    for key in expected:
        if "." in key:
            outer, inner = key.split(".", 1)
            value = stored.get(outer)
            stored[key] = value.get(inner) if isinstance(value, dict) else None
    mismatched = []
    for key, want in expected.items():
        have = stored.get(key)
        if isinstance(want, (tuple, list)):
            want = list(want)
        if have != want and not (want is None and have == ""):
            mismatched.append(f"{key}: file has {have!r}, config wants {want!r}")
    return mismatched
