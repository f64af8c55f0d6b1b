"""Sharded feature extraction, the merge half: shards of the feature store written by separate jobs are merged
into exactly the file an unsharded extraction writes.

A shard holds a contiguous block of rows of every split, in the :mod:`normscape.features.store` format, with one
extra root attribute ``shard`` = ``{"index", "count", "rows": [[split, start, stop, total], ...]}`` (a list:
the splits keep their order, and with it the merged file its layout). Block bounds
are multiples of the extraction batch size (:func:`shard_ranges`), so each shard's forward passes see exactly
the batches the unsharded extraction sees and its features are the same bits. :func:`merge_shards` checks that
the shards form one complete, consistent set — same count, every index once, identical provenance attributes,
rows contiguous and complete — and writes the concatenation with the shards' common attributes (``created``:
the latest shard's), byte for byte the file that ``store.write_features`` writes from the same arrays.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from normscape.features import store
from normscape.pipeline.errors import DataError

SHARD_ATTR = "shard"
VOLATILE_ATTRS = (SHARD_ATTR, "created")  # may differ between the shards of one set


def shard_ranges(n: int, count: int, align: int = 1) -> list[tuple[int, int]]:
    """``count`` contiguous ``(start, stop)`` row blocks covering ``range(n)``, as even as possible, every bound
    a multiple of ``align`` (the extraction batch size) except the final ``n``; trailing blocks may be empty."""
    if count < 1 or align < 1:
        raise ValueError(f"need count >= 1 and align >= 1, got {count}, {align}")
    units = -(-n // align)  # batches, the last one possibly partial
    bounds = [min(n, (units * i // count) * align) for i in range(count)] + [n]
    return list(zip(bounds[:-1], bounds[1:]))


def write_shard(
    path: str | Path,
    splits: Mapping[str, Mapping[str, np.ndarray]],
    attrs: Mapping[str, Any],
    index: int,
    count: int,
    rows: Mapping[str, tuple[int, int, int]],
) -> None:
    """Write shard ``index`` of ``count``: ``splits[name]`` holds rows ``rows[name] = (start, stop, total)``."""
    for name, (start, stop, _) in rows.items():
        if len(splits[name]["features"]) != stop - start:
            raise ValueError(
                f"shard {index}: split {name} has {len(splits[name]['features'])} rows, not {stop - start}"
            )
    info = {"index": index, "count": count, "rows": [[name, *map(int, r)] for name, r in rows.items()]}
    store.write_features(path, splits, {**attrs, SHARD_ATTR: info})


def merge_shards(parts: Sequence[str | Path], out: str | Path) -> dict[str, Any]:
    """Merge a complete set of shards into one feature store at ``out`` (atomic). Returns its attributes."""
    if not parts:
        raise DataError("no feature shards to merge")
    metas = [store.read_attrs(p) for p in parts]
    infos = []
    for path, meta in zip(parts, metas):
        info = meta.get(SHARD_ATTR)
        if not isinstance(info, dict):
            raise DataError(f"{path} is not a feature shard (no '{SHARD_ATTR}' attribute); rebuild it.")
        infos.append({**info, "rows": {name: (start, stop, total) for name, start, stop, total in info["rows"]}})
    count = infos[0]["count"]
    if sorted(info["index"] for info in infos) != list(range(count)) or any(i["count"] != count for i in infos):
        found = sorted((i["index"], i["count"]) for i in infos)
        raise DataError(f"feature shards do not form one complete set of {count}: (index, count) = {found}")
    # each shard's split sizes, fingerprint and identity describe its own rows; the merged file gets its own
    ignored = (*VOLATILE_ATTRS, *store.DERIVED_ATTRS)
    common = {k: v for k, v in metas[0].items() if k not in ignored}
    for path, meta in zip(parts, metas):
        differing = sorted(k for k in set(common) | set(meta) if k not in ignored and meta.get(k) != common.get(k))
        if differing:
            raise DataError(
                f"feature shard {path} was computed from other inputs than {parts[0]} (attributes {differing} "
                "differ); rebuild the shards from one config."
            )
    order = sorted(range(len(parts)), key=lambda i: infos[i]["index"])
    split_names = list(infos[order[0]]["rows"])
    merged: dict[str, dict[str, np.ndarray]] = {}
    for split in split_names:
        expected_start, pieces = 0, {"features": [], "labels": [], "indices": []}
        total = infos[order[0]]["rows"][split][2]
        for i in order:
            start, stop, shard_total = infos[i]["rows"][split]
            if start != expected_start or shard_total != total:
                raise DataError(
                    f"feature shard {parts[i]} holds rows {start}:{stop} of split {split!r} (of {shard_total}), "
                    f"expected rows from {expected_start} (of {total}); rebuild the shards from one config."
                )
            expected_start = stop
            with h5py.File(parts[i], "r", locking=False) as f:
                for key in pieces:
                    pieces[key].append(f[split][key][()])
        if expected_start != total:
            raise DataError(f"feature shards cover rows 0:{expected_start} of split {split!r}, not all {total}")
        merged[split] = {key: np.concatenate(values) for key, values in pieces.items()}
    dropped = ("format_version", SHARD_ATTR, *store.DERIVED_ATTRS)
    attrs = {k: v for k, v in metas[order[0]].items() if k not in dropped}
    attrs["created"] = max(meta.get("created", "") for meta in metas)
    store.write_features(out, merged, attrs)
    return attrs
