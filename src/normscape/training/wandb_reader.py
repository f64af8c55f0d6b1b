"""Read an offline W&B run file (``run-<id>.wandb``) back, without a W&B server or account.

W&B (0.31) no longer ships a Python reader for its transaction log, so this is one. The file is a
LevelDB-style log: a 7-byte header (``:W&B``, magic 0xBEE1 little-endian, version byte), then 32 KiB blocks of
records, each with a 7-byte header (CRC32 uint32, payload length uint16, type uint8: 1 full, 2 first,
3 middle, 4 last fragment); a block tail shorter than a header is zero padding. Each reassembled payload is a
protobuf ``wandb.proto.wandb_internal_pb2.Record``. Used by the tests to check what training logged.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BLOCK_BYTES = 32 * 1024
FILE_HEADER = b":W&B"
FILE_HEADER_BYTES = 7
RECORD_HEADER_BYTES = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def iter_payloads(path: str | Path) -> Iterator[bytes]:
    data = Path(path).read_bytes()
    if data[:4] != FILE_HEADER:
        raise ValueError(f"{path} is not a W&B transaction log (header {data[:4]!r})")
    pos, pending = FILE_HEADER_BYTES, b""
    while pos + RECORD_HEADER_BYTES <= len(data):
        left_in_block = BLOCK_BYTES - pos % BLOCK_BYTES
        if left_in_block < RECORD_HEADER_BYTES:
            pos += left_in_block  # zero padding at the end of a block
            continue
        _crc, length, kind = struct.unpack_from("<IHB", data, pos)
        if kind == 0 and length == 0:
            pos += left_in_block
            continue
        payload = data[pos + RECORD_HEADER_BYTES : pos + RECORD_HEADER_BYTES + length]
        pos += RECORD_HEADER_BYTES + length
        if kind == FULL:
            yield payload
        elif kind == FIRST:
            pending = payload
        elif kind == MIDDLE:
            pending += payload
        elif kind == LAST:
            yield pending + payload
            pending = b""


def read_records(path: str | Path) -> list:
    from wandb.proto import wandb_internal_pb2

    return [wandb_internal_pb2.Record.FromString(p) for p in iter_payloads(path)]


def read_history(path: str | Path) -> list[dict[str, Any]]:
    """Every logged history row as ``{key: decoded JSON value}`` (histograms as W&B's histogram dicts)."""
    rows = []
    for record in read_records(path):
        if record.WhichOneof("record_type") != "history":
            continue
        row = {}
        for item in record.history.item:
            key = item.key or "/".join(item.nested_key)
            row[key] = json.loads(item.value_json)
        rows.append(row)
    return rows


def read_config(path: str | Path) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for record in read_records(path):
        kind = record.WhichOneof("record_type")
        updates = record.config.update if kind == "config" else record.run.config.update if kind == "run" else []
        for item in updates:
            config[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return config


def read_run(path: str | Path):
    """The run record (name, tags, job type, group) of an offline run file."""
    return next(r.run for r in read_records(path) if r.WhichOneof("record_type") == "run")


def read_artifact_paths(path: str | Path) -> list[str]:
    """The local path of every file of every artifact the run logged (what `wandb sync` uploads from)."""
    return [
        entry.local_path
        for r in read_records(path)
        if r.WhichOneof("record_type") == "artifact"
        for entry in r.artifact.manifest.contents
    ]


def find_run_files(wandb_dir: str | Path) -> list[Path]:
    """All offline run files under a W&B directory (``<dir>/wandb/offline-run-*/run-*.wandb``)."""
    return sorted(Path(wandb_dir).glob("**/offline-run-*/run-*.wandb"))
