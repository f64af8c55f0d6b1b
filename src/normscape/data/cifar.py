"""CIFAR-10 / CIFAR-100: download, checksum, our own reader of the official python archives, and the split.

The reader reads the pickled batches straight out of the ``.tar.gz`` (nothing is extracted to disk, so a
malicious archive cannot write outside its folder) with a restricted unpickler that only rebuilds numpy
arrays (a pickle from an untrusted archive could otherwise run code). It does not depend on torchvision's
md5 table, so re-encoded copies such as an offline mirror load fine once their own checksum is configured.

Layouts (:data:`CIFAR10`, :data:`CIFAR100`): ``cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}``
with ``labels``/``label_names``, and ``cifar-100-python/{train, test, meta}`` with ``fine_labels``/
``fine_label_names`` (the 100 fine classes; the class count comes from the meta file).

Split: the 50,000 official training images are the training set; the 10,000 official test images are
permuted with ``numpy.random.default_rng(split_seed)`` and the first ``val_size`` become validation, the next
``test_size`` test (the study's 8,000 / 2,000).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import pickle
import tarfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import numpy as np

from normscape.pipeline.atomic import atomic_path
from normscape.pipeline.errors import ChecksumError, DataError, DownloadError

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class CifarLayout:
    """Where an official CIFAR python archive keeps its batches, labels and class names."""

    title: str
    folder: str
    train: tuple[str, ...]
    test: str
    meta: str
    label_key: bytes
    names_key: bytes


CIFAR10 = CifarLayout(
    "CIFAR-10",
    "cifar-10-batches-py",
    tuple(f"data_batch_{i}" for i in range(1, 6)),
    "test_batch",
    "batches.meta",
    b"labels",
    b"label_names",
)
CIFAR100 = CifarLayout("CIFAR-100", "cifar-100-python", ("train",), "test", "meta", b"fine_labels", b"fine_label_names")
# CIFAR-10 names kept for callers of the single-dataset reader
ARCHIVE_DIR, TRAIN_BATCHES, TEST_BATCH = CIFAR10.folder, CIFAR10.train, CIFAR10.test


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
        raise pickle.UnpicklingError(f"forbidden object {module}.{name} in a CIFAR batch file")


def _load_member(tf: tarfile.TarFile, archive: Path, name: str, layout: CifarLayout = CIFAR10) -> dict:
    member = f"{layout.folder}/{name}"
    try:
        fh = tf.extractfile(member)
    except KeyError:
        found = sorted(m.name for m in tf.getmembers())[:12]
        raise DataError(
            f"{archive} is not a {layout.title} python archive: member {member!r} is missing (found "
            f"{found}). Use the 'python version' archive of {layout.title} (or fix data.dataset)."
        ) from None
    if fh is None:
        raise DataError(f"{archive}: {member!r} is not a regular file; the archive has the wrong layout.")
    try:
        return _NumpyOnlyUnpickler(io.BytesIO(fh.read()), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise DataError(f"{archive}: {member!r} is not a valid {layout.title} batch ({exc}).") from None


def _batch_arrays(
    batch: dict, archive: Path, name: str, num_classes: int, layout: CifarLayout = CIFAR10
) -> tuple[np.ndarray, np.ndarray]:
    key = layout.label_key
    if not isinstance(batch, dict) or b"data" not in batch or key not in batch:
        keys = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        raise DataError(f"{archive}: batch {name!r} lacks the keys b'data' and {key!r} (has {keys}).")
    data = np.asarray(batch[b"data"])
    labels = np.asarray(batch[key], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise DataError(
            f"{archive}: batch {name!r} has data {data.dtype}{data.shape} and {len(labels)} labels; "
            "expected uint8 (N, 3072) and N labels."
        )
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"{archive}: batch {name!r} has labels outside 0..{num_classes - 1}.")
    # Rows are 1024 red, 1024 green, 1024 blue values, each a 32x32 row-major plane -> (N, 32, 32, 3).
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def read_archive(path: str | Path, layout: CifarLayout = CIFAR10) -> dict:
    """Read an official CIFAR python archive: ``{"train": (images, labels), "test": (...), "class_names"}``.

    images are uint8 (N, 32, 32, 3) RGB, labels int64 (N,); the number of classes is that of the meta file.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"{layout.title} archive {path} does not exist; check data.archive (or set it to null to "
            "download the official archive)."
        )
    try:
        with tarfile.open(path, "r:gz") as tf:
            meta = _load_member(tf, path, layout.meta, layout)
            names = [n.decode() if isinstance(n, bytes) else str(n) for n in meta.get(layout.names_key, [])]
            if len(names) < 2:
                raise DataError(f"{path}: {layout.meta} lists {len(names)} class names under {layout.names_key!r}.")
            parts = {
                name: _batch_arrays(_load_member(tf, path, name, layout), path, name, len(names), layout)
                for name in (*layout.train, layout.test)
            }
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise DataError(
            f"{path} is truncated or corrupt ({exc}). Delete it and download it again (or check data.archive)."
        ) from None
    train_x = np.concatenate([parts[n][0] for n in layout.train])
    train_y = np.concatenate([parts[n][1] for n in layout.train])
    return {"train": (train_x, train_y), "test": parts[layout.test], "class_names": names}


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
