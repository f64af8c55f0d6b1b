"""Merging feature shards gives the unsharded feature store byte for byte; incomplete or mixed sets are refused."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from normscape.features import store
from normscape.features.merge_shards import merge_shards, shard_ranges, write_shard
from normscape.pipeline.errors import DataError

SIZES = {"train": 203, "val": 37, "test": 16}
ATTRS = {
    "backbone": "mobilenet_v2",
    "weights_id": "random",
    "input_size": 64,
    "normalization": {"mean": [0.485, 0.456, 0.406], "resize": "bilinear"},
    "feature_dim": 1280,
    "class_names": ["a", "b"],
    "data_checksum": "sha256:00ff",
    "created": "2026-01-02T03:04:05Z",
}


def arrays() -> dict:
    rng = np.random.default_rng(0)
    return {
        name: {
            "features": rng.random((n, 1280), dtype=np.float32),
            "labels": rng.integers(0, 10, n),
            "indices": rng.permutation(50_000)[:n],
        }
        for name, n in SIZES.items()
    }


def write_set(tmp_path, data, count, align=16, attrs=ATTRS):
    parts = []
    for index in range(count):
        rows = {name: (*shard_ranges(SIZES[name], count, align)[index], SIZES[name]) for name in SIZES}
        part = {name: {k: v[rows[name][0] : rows[name][1]] for k, v in data[name].items()} for name in SIZES}
        parts.append(tmp_path / f"part{index}.h5")
        write_shard(parts[-1], part, attrs, index, count, rows)
    return parts


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("count", [1, 3, 7])
def test_merged_shards_equal_the_unsharded_file_byte_for_byte(tmp_path, count):
    data = arrays()
    store.write_features(tmp_path / "whole.h5", data, ATTRS)
    merge_shards(write_set(tmp_path, data, count)[::-1], tmp_path / "merged.h5")  # any order of parts
    assert digest(tmp_path / "merged.h5") == digest(tmp_path / "whole.h5")
    assert store.read_attrs(tmp_path / "merged.h5") == store.read_attrs(tmp_path / "whole.h5")
    for split in SIZES:
        x, y = store.load_split(tmp_path / "merged.h5", split)
        np.testing.assert_array_equal(x, data[split]["features"])
        np.testing.assert_array_equal(y, data[split]["labels"])


def test_shard_bounds_are_whole_batches_and_cover_every_row():
    for n, count, align in [(50_000, 8, 16), (203, 3, 16), (10, 4, 16), (0, 2, 16), (37, 5, 1)]:
        ranges = shard_ranges(n, count, align)
        assert len(ranges) == count and ranges[0][0] == 0 and ranges[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
        assert all(start % align == 0 for start, _ in ranges if start < n)
    sizes = [stop - start for start, stop in shard_ranges(50_000, 8, 16)]
    assert max(sizes) - min(sizes) <= 16


def test_incomplete_or_mixed_shard_sets_are_refused(tmp_path):
    data = arrays()
    parts = write_set(tmp_path, data, 3)
    with pytest.raises(DataError, match="complete set"):
        merge_shards(parts[:2], tmp_path / "out.h5")
    other = tmp_path / "other"
    other.mkdir()
    foreign = write_set(other, data, 3, attrs={**ATTRS, "input_size": 96})
    with pytest.raises(DataError, match="input_size"):
        merge_shards([parts[0], parts[1], foreign[2]], tmp_path / "out.h5")
    store.write_features(tmp_path / "plain.h5", data, ATTRS)
    with pytest.raises(DataError, match="not a feature shard"):
        merge_shards([tmp_path / "plain.h5"], tmp_path / "out.h5")
    assert not (tmp_path / "out.h5").exists()
