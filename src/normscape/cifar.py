"""CIFAR-10: download, checksum, our own reader of the official python batches, and the train/val/test split.

The reader reads the pickled batches straight out of the ``.tar.gz`` (nothing is extracted to disk, so a
malicious archive cannot write outside its folder) with a restricted unpickler that only rebuilds numpy
arrays (a pickle from an untrusted archive could otherwise run code). It does not depend on torchvision's
md5 table, so re-encoded copies such as an offline mirror load fine once their own checksum is configured.

Split: the 50,000 official training images are the training set; the 10,000 official test images are
permuted with ``numpy.random.default_rng(split_seed)`` and the first ``val_size`` become validation, the next
``test_size`` test (the study's 8,000 / 2,000).
"""

from __future__ import annotations

import hashlib
import io
import logging
import pickle
import tarfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import h5py
import numpy as np

from normscape.atomic import atomic_path
from normscape.errors import ChecksumError, DataError, DownloadError

log = logging.getLogger(__name__)

ARCHIVE_DIR = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
META = "batches.meta"
NUM_CLASSES = 10
IMAGE_SHAPE = (32, 32, 3)


# --------------------------------------------------------------------------------------------- checksums
def parse_checksum(spec: str | None) -> tuple[str, str] | None:
    """``"md5:<hex>"`` / ``"sha256:<hex>"`` -> (algorithm, hex); None -> no check."""
    if not spec:
        return None
    algo, _, digest = spec.partition(":")
    if algo not in ("md5", "sha256") or not digest:
        raise DataError(f"checksum {spec!r} is not of the form 'md5:<hex>' or 'sha256:<hex>'.")
    return algo, digest.lower()


def file_digest(path: str | Path, algo: str = "sha256", chunk_bytes: int = 1 << 20) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as fh:
        while block := fh.read(chunk_bytes):
            h.update(block)
    return h.hexdigest()


def verify_checksum(path: str | Path, spec: str | None, config_key: str = "data.checksum") -> None:
    """Raise :class:`ChecksumError` unless ``path`` has the checksum ``spec``.

    A digest shorter than the full hash is compared as a prefix (torch hub names weights by a sha256 prefix).
    """
    parsed = parse_checksum(spec)
    if parsed is None:
        log.warning("no checksum configured for %s (%s is null): skipping verification", path, config_key)
        return
    algo, want = parsed
    have = file_digest(path, algo)
    if not have.startswith(want):
        raise ChecksumError(
            f"checksum mismatch for {path}: expected {algo}:{want}, got {algo}:{have}. The file is corrupt or a "
            f"different release. Re-download it, or if you trust this file set {config_key} to "
            f"'{algo}:{have}' (null skips the check)."
        )


# --------------------------------------------------------------------------------------------- download
def download(
    url: str, dest: str | Path, checksum: str | None, timeout_s: float = 60.0, config_key: str = "data.checksum"
) -> Path:
    """Download ``url`` to ``dest`` with a progress bar; verify ``checksum``; atomic (no partial file left)."""
    from tqdm import tqdm

    dest = Path(dest)
    with atomic_path(dest, suffix=".part") as tmp:
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as resp, open(tmp, "wb") as out:
                total = int(resp.headers.get("Content-Length") or 0) or None
                with tqdm(total=total, unit="B", unit_scale=True, desc=f"download {dest.name}") as bar:
                    while block := resp.read(1 << 20):
                        out.write(block)
                        bar.update(len(block))
                if total is not None and out.tell() != total:
                    raise DownloadError(
                        f"download of {url} was cut off after {out.tell()} of {total} bytes; "
                        "run the workflow again to retry."
                    )
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise DownloadError(
                f"could not download {url}: {reason}. No network here? Download the file on a machine with "
                "network access, then point the config at the local copy (data.archive for CIFAR-10, "
                "backbone.weights for the backbone) and set its checksum."
            ) from None
        verify_checksum(tmp, checksum, config_key)
    return dest


# --------------------------------------------------------------------------------------------- reading
class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only; anything else in a batch file is refused."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"forbidden object {module}.{name} in a CIFAR-10 batch file")


def _load_member(tf: tarfile.TarFile, archive: Path, name: str) -> dict:
    member = f"{ARCHIVE_DIR}/{name}"
    try:
        fh = tf.extractfile(member)
    except KeyError:
        found = sorted(m.name for m in tf.getmembers())[:12]
        raise DataError(
            f"{archive} is not a CIFAR-10 python archive: member {member!r} is missing (found "
            f"{found}). Use the 'python version' cifar-10-python.tar.gz."
        ) from None
    if fh is None:
        raise DataError(f"{archive}: {member!r} is not a regular file; the archive has the wrong layout.")
    try:
        return _NumpyOnlyUnpickler(io.BytesIO(fh.read()), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise DataError(f"{archive}: {member!r} is not a valid CIFAR-10 batch ({exc}).") from None


def _batch_arrays(batch: dict, archive: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        keys = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        raise DataError(f"{archive}: batch {name!r} lacks the keys b'data' and b'labels' (has {keys}).")
    data = np.asarray(batch[b"data"])
    labels = np.asarray(batch[b"labels"], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise DataError(
            f"{archive}: batch {name!r} has data {data.dtype}{data.shape} and {len(labels)} labels; "
            "expected uint8 (N, 3072) and N labels."
        )
    if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise DataError(f"{archive}: batch {name!r} has labels outside 0..9.")
    # Rows are 1024 red, 1024 green, 1024 blue values, each a 32x32 row-major plane -> (N, 32, 32, 3).
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def read_archive(path: str | Path) -> dict:
    """Read the official CIFAR-10 python archive: ``{"train": (images, labels), "test": (...), "class_names"}``.

    images are uint8 (N, 32, 32, 3) RGB, labels int64 (N,).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"CIFAR-10 archive {path} does not exist; check data.archive (or set it to null to "
            "download the official archive)."
        )
    try:
        with tarfile.open(path, "r:gz") as tf:
            meta = _load_member(tf, path, META)
            parts = {
                name: _batch_arrays(_load_member(tf, path, name), path, name) for name in (*TRAIN_BATCHES, TEST_BATCH)
            }
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise DataError(
            f"{path} is truncated or corrupt ({exc}). Delete it and download it again (or check data.archive)."
        ) from None
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in meta.get(b"label_names", [])]
    if len(names) != NUM_CLASSES:
        raise DataError(f"{path}: batches.meta lists {len(names)} class names, expected {NUM_CLASSES}.")
    train_x = np.concatenate([parts[n][0] for n in TRAIN_BATCHES])
    train_y = np.concatenate([parts[n][1] for n in TRAIN_BATCHES])
    return {"train": (train_x, train_y), "test": parts[TEST_BATCH], "class_names": names}


# --------------------------------------------------------------------------------------------- split
def split_test_set(n_test: int, val_size: int, test_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint, sorted indices into the official test set for validation and test."""
    if val_size + test_size > n_test:
        raise DataError(
            f"data.val_size ({val_size}) + data.test_size ({test_size}) exceed the {n_test} images "
            "of the official test set; lower them."
        )
    perm = np.random.default_rng(seed).permutation(n_test)
    return np.sort(perm[:val_size]), np.sort(perm[val_size : val_size + test_size])


def prepare_dataset(
    archive: str | Path, out_path: str | Path, checksum: str | None, val_size: int, test_size: int, split_seed: int
) -> dict:
    """Verify, read and split the archive into ``out_path`` (HDF5: /<split>/{images, labels, indices})."""
    if not Path(archive).is_file():
        raise DataError(f"CIFAR-10 archive {archive} does not exist; check data.archive.")
    verify_checksum(archive, checksum)
    data = read_archive(archive)
    test_x, test_y = data["test"]
    val_idx, test_idx = split_test_set(len(test_x), val_size, test_size, split_seed)
    train_x, train_y = data["train"]
    splits = {
        "train": (train_x, train_y, np.arange(len(train_x))),
        "val": (test_x[val_idx], test_y[val_idx], val_idx),
        "test": (test_x[test_idx], test_y[test_idx], test_idx),
    }
    with atomic_path(out_path, suffix=".h5") as tmp, h5py.File(tmp, "w") as f:
        f.attrs["class_names"] = np.array(data["class_names"], dtype=h5py.string_dtype())
        f.attrs["archive_sha256"] = file_digest(archive, "sha256")
        f.attrs["split_seed"] = split_seed
        for name, (x, y, idx) in splits.items():
            g = f.create_group(name)
            g.attrs["source"] = "official train set" if name == "train" else "official test set"
            g.create_dataset("images", data=x, chunks=(min(len(x), 1024), 32, 32, 3) if len(x) else None)
            g.create_dataset("labels", data=y)
            g.create_dataset("indices", data=idx.astype(np.int64))
    log.info("prepared %s: train %d, val %d, test %d images", out_path, len(train_x), len(val_idx), len(test_idx))
    return {name: len(v[0]) for name, v in splits.items()}


def load_prepared(path: str | Path) -> dict:
    """``{split: (images uint8 (N,32,32,3), labels, indices)}`` plus ``class_names`` and ``archive_sha256``."""
    try:
        with h5py.File(path, "r", locking=False) as f:
            out = {s: (f[s]["images"][()], f[s]["labels"][()], f[s]["indices"][()]) for s in ("train", "val", "test")}
            out["class_names"] = [c.decode() if isinstance(c, bytes) else str(c) for c in f.attrs["class_names"]]
            out["archive_sha256"] = str(f.attrs["archive_sha256"])
            return out
    except (OSError, KeyError) as exc:
        raise DataError(f"prepared dataset {path} is unreadable or incomplete ({exc}); delete it and rerun.") from None
