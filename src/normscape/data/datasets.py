"""The dataset registry: where images come from, and the one prepared format every dataset is turned into.

Each :class:`DatasetSpec` says how to read its source into ``{"train", "test"}`` (official splits, validation and
test then drawn from the official test set with ``data.val_size``/``data.test_size``/``data.split_seed``) or into
one pool split by :func:`normscape.data.imagefolder.split_indices` (``data.val_fraction``/``data.test_fraction``).
Registered: ``cifar10``, ``cifar100`` (official python archives; downloaded from ``url`` unless ``data.archive``
is set) and ``imagefolder`` (a user's ``data.root/<class>/<image>`` tree). Adding a dataset = one
:func:`register` call with a reader returning the same dict (plus its test).

Prepared file (HDF5): ``/<split>/{images uint8 (N, H, W, 3), labels, indices}`` and root attrs ``dataset``,
``class_names``, ``source_sha256`` (the archive's sha256, or the image tree's digest), ``split_seed``,
``split_rule``. The feature store copies this identity into its own attrs.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from normscape.data.cifar import CIFAR10, CIFAR100, file_digest, read_archive, split_test_set, verify_checksum
from normscape.models.norms import LazyModule
from normscape.pipeline.atomic import atomic_path
from normscape.pipeline.errors import DataError

h5py = LazyModule("h5py")  # imported on first use: the workflow reads this registry when it parses

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
OFFICIAL = "official"  # data.checksum: the registry's checksum of the official archive


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    name: str
    read: Callable[[str, dict], dict]  # (source path, data config) -> {"train", "test"} or {"pool"}, "class_names", ...
    url: str | None = None  # official download (None: a local source only, data.root)
    checksum: str | None = None  # of the official archive
    archive_name: str | None = None  # file name of the download under <downloads_dir>/data/
    pooled: bool = False  # True: read() returns one "pool" split by fractions; False: official train/test sets


DATASETS: dict[str, DatasetSpec] = {}


def register(spec: DatasetSpec) -> DatasetSpec:
    if spec.name in DATASETS:
        raise ValueError(f"dataset {spec.name!r} is registered twice")
    DATASETS[spec.name] = spec
    return spec


def get_dataset(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise DataError(f"unknown data.dataset {name!r}; choose one of {list(DATASETS)} (normscape/data/datasets.py).")
    return DATASETS[name]


def resolved_checksum(data: dict) -> str | None:
    """data.checksum with ``official`` replaced by the registry's checksum of the dataset's official archive."""
    spec = get_dataset(data["dataset"])
    return spec.checksum if data["checksum"] == OFFICIAL else data["checksum"]


def resolved_url(data: dict) -> str | None:
    return data.get("url") or get_dataset(data["dataset"]).url


def data_config(**overrides) -> dict:
    """A complete ``data`` config slice with the schema's defaults for small tests (60 val / 40 test images)."""
    base = {
        "dataset": "cifar10",
        "checksum": None,
        "val_size": 60,
        "test_size": 40,
        "val_fraction": 0.2,
        "test_fraction": 0.2,
        "image_size": 32,
        "split_seed": 0,
    }
    return {**base, **overrides}


# ------------------------------------------------------------------------------------------------ readers
def _cifar_reader(layout):
    def read(source: str, data: dict) -> dict:
        verify_checksum(source, resolved_checksum(data))
        out = read_archive(source, layout)
        out["source_sha256"] = file_digest(source, "sha256")
        return out

    return read


def _read_image_folder(source: str, data: dict) -> dict:
    from normscape.data.imagefolder import read_image_folder

    tree = read_image_folder(source, data["image_size"])
    return {
        "pool": (tree["images"], tree["labels"]),
        "class_names": tree["class_names"],
        "source_sha256": tree["sha256"],
        "files": tree["files"],
    }


register(
    DatasetSpec(
        "cifar10",
        _cifar_reader(CIFAR10),
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "md5:c58f30108f718f92721af3b95e74349a",
        "cifar-10-python.tar.gz",
    )
)
register(
    DatasetSpec(
        "cifar100",
        _cifar_reader(CIFAR100),
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "md5:eb9058c3a382ffc7106e4002c42a8d85",
        "cifar-100-python.tar.gz",
    )
)
register(DatasetSpec("imagefolder", _read_image_folder, pooled=True))


# ------------------------------------------------------------------------------------------------ prepare
# The data keys a split depends on (split_rule reads them): with the dataset, what a feature cache was built for.
SPLIT_KEYS = ("dataset", "split_seed", "val_size", "test_size", "val_fraction", "test_fraction")


def split_rule(data: dict) -> str:
    """The split of ``data`` (a data config) in words: recorded by the prepared file and the feature cache, and
    compared with the config before a cache is used (features.store.expected_attrs)."""
    seed = data["split_seed"]
    if get_dataset(data["dataset"]).pooled:
        return f"stratified per class, val {data['val_fraction']}, test {data['test_fraction']}, seed {seed}"
    return (
        f"official train set; val {data['val_size']} / test {data['test_size']} of the official test set, seed {seed}"
    )


def split_data(raw: dict, data: dict) -> tuple[dict, str]:
    """{split: (images, labels, indices)} and the split rule in words."""
    seed = data["split_seed"]
    if "pool" in raw:
        from normscape.data.imagefolder import split_indices

        x, y = raw["pool"]
        idx = split_indices(y, data["val_fraction"], data["test_fraction"], seed)
        return {s: (x[idx[s]], y[idx[s]], idx[s]) for s in SPLITS}, split_rule(data)
    test_x, test_y = raw["test"]
    val_idx, test_idx = split_test_set(len(test_x), data["val_size"], data["test_size"], seed)
    train_x, train_y = raw["train"]
    splits = {
        "train": (train_x, train_y, np.arange(len(train_x))),
        "val": (test_x[val_idx], test_y[val_idx], val_idx),
        "test": (test_x[test_idx], test_y[test_idx], test_idx),
    }
    return splits, split_rule(data)


def prepare_dataset(source: str | Path, out_path: str | Path, data: dict) -> dict:
    """Read ``source`` (archive or image root) as ``data.dataset``, split it and write ``out_path`` atomically."""
    spec = get_dataset(data["dataset"])
    if not Path(source).exists():
        raise DataError(f"{spec.name} source {source} does not exist; check data.archive / data.root.")
    raw = spec.read(str(source), data)
    splits, rule = split_data(raw, data)
    with atomic_path(out_path, suffix=".h5") as tmp, h5py.File(tmp, "w") as f:
        f.attrs["dataset"] = spec.name
        f.attrs["class_names"] = np.array(raw["class_names"], dtype=h5py.string_dtype())
        f.attrs["source_sha256"] = raw["source_sha256"]
        f.attrs["split_seed"] = data["split_seed"]
        f.attrs["split_rule"] = rule
        for name, (x, y, idx) in splits.items():
            g = f.create_group(name)
            g.create_dataset("images", data=x, chunks=(max(1, min(len(x), 1024)), *x.shape[1:]) if len(x) else None)
            g.create_dataset("labels", data=y)
            g.create_dataset("indices", data=idx.astype(np.int64))
        if "files" in raw:
            f.create_dataset("files", data=np.array(raw["files"], dtype=h5py.string_dtype()))
    counts = {name: len(v[0]) for name, v in splits.items()}
    log.info("prepared %s (%s, %d classes): %s", out_path, spec.name, len(raw["class_names"]), counts)
    return counts


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def load_prepared(path: str | Path) -> dict:
    """``{split: (images uint8 (N,H,W,3), labels, indices)}`` plus the dataset's identity attributes."""
    try:
        with h5py.File(path, "r", locking=False) as f:
            out = {s: (f[s]["images"][()], f[s]["labels"][()], f[s]["indices"][()]) for s in SPLITS}
            out["class_names"] = [_text(c) for c in f.attrs["class_names"]]
            for key in ("dataset", "source_sha256", "split_rule"):
                out[key] = _text(f.attrs[key])
            out["split_seed"] = int(f.attrs["split_seed"])
            return out
    except (OSError, KeyError) as exc:
        raise DataError(f"prepared dataset {path} is unreadable or incomplete ({exc}); delete it and rerun.") from None
