"""Tiny synthetic stand-ins for CIFAR-10/100, an ImageFolder tree and the feature cache, for tests and CI.

``make_cifar_archive`` writes a ``cifar-10-python.tar.gz`` with exactly the official layout (protocol-2
pickles, bytes keys, ``cifar-10-batches-py/`` folder) but few, generated images; ``make_cifar100_archive`` the
same for ``cifar-100-python/{train,test,meta}`` (fine and coarse labels); ``make_image_folder`` a
``root/<class>/<image>.png`` tree (optionally with grey / RGBA images mixed in). Images are class-separable (a
class colour and stripe pattern under noise), so even a random-init backbone's features let heads learn.
``make_features_file`` writes a feature cache in the :mod:`normscape.features.store` format with class-separable
Gaussian features, so training on it is fast and actually learns.
"""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np

from normscape.features.store import write_features

CLASS_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
ARCHIVE_DIR = "cifar-10-batches-py"


def synthetic_images(n: int, rng: np.random.Generator, num_classes: int = 10, size: int = 32):
    """``n`` RGB uint8 images (size x size) whose mean colour and stripe frequency depend on the class."""
    labels = rng.integers(0, num_classes, size=n)
    return class_images(labels, rng, size), labels


def class_images(labels: np.ndarray, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size] * (32 / size)
    imgs = np.empty((len(labels), size, size, 3), dtype=np.uint8)
    for i, c in enumerate(labels):
        base = np.array([(c * 37) % 256, (c * 91) % 256, (c * 151) % 256], dtype=np.float64)
        stripes = 60 * np.sin((xx + yy * (c % 3)) * (c % 10 + 1) * np.pi / 16)[..., None]
        noise = rng.normal(0, 20, size=(size, size, 3))
        imgs[i] = np.clip(base + stripes + noise, 0, 255).astype(np.uint8)
    return imgs


def _batch_bytes(images: np.ndarray, labels: np.ndarray, label: str) -> bytes:
    # Official row layout: 1024 red, 1024 green, 1024 blue values per image, each plane row-major.
    data = images.transpose(0, 3, 1, 2).reshape(len(images), 3072)
    batch = {
        b"batch_label": label.encode(),
        b"labels": [int(x) for x in labels],
        b"data": data,
        b"filenames": [f"synthetic_{i:05d}.png".encode() for i in range(len(images))],
    }
    return pickle.dumps(batch, protocol=2)


def make_cifar_archive(
    path: str | Path, train_per_batch: int = 40, n_test: int = 100, seed: int = 0, batches: int = 5
) -> Path:
    """Write a small CIFAR-10-layout archive to ``path``: ``batches`` training batches and one test batch."""
    rng = np.random.default_rng(seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    members: dict[str, bytes] = {
        "batches.meta": pickle.dumps(
            {
                b"num_cases_per_batch": train_per_batch,
                b"label_names": [c.encode() for c in CLASS_NAMES],
                b"num_vis": 3072,
            },
            protocol=2,
        ),
    }
    for b in range(1, batches + 1):
        imgs, labels = synthetic_images(train_per_batch, rng)
        members[f"data_batch_{b}"] = _batch_bytes(imgs, labels, f"training batch {b} of {batches}")
    imgs, labels = synthetic_images(n_test, rng)
    members["test_batch"] = _batch_bytes(imgs, labels, "testing batch 1 of 1")
    with tarfile.open(path, "w:gz") as tf:
        for name, payload in members.items():
            info = tarfile.TarInfo(f"{ARCHIVE_DIR}/{name}")
            info.size = len(payload)
            info.mtime = 0
            tf.addfile(info, io.BytesIO(payload))
    return path


def make_features_file(
    path: str | Path,
    n_train: int = 2000,
    n_val: int = 500,
    n_test: int = 500,
    dim: int = 1280,
    seed: int = 0,
    separation: float = 1.0,
) -> Path:
    """Write a feature cache with 10 Gaussian classes (non-negative, like post-ReLU pooled features)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, separation, size=(10, dim)).astype(np.float32)

    def split(n: int, offset: int) -> dict[str, np.ndarray]:
        labels = rng.integers(0, 10, size=n)
        feats = np.maximum(centers[labels] + rng.normal(0, 1.0, size=(n, dim)).astype(np.float32), 0)
        return {"features": feats, "labels": labels, "indices": np.arange(offset, offset + n)}

    splits = {"train": split(n_train, 0), "val": split(n_val, 0), "test": split(n_test, n_val)}
    attrs = {
        "backbone": "synthetic",
        "weights_id": "synthetic",
        "weights_sha256": "",
        "input_size": 0,
        "precision": "fp32",
        "normalization": {},
        "feature_dim": dim,
        "num_classes": 10,
        "class_names": CLASS_NAMES,
        "data_checksum": "",
        "split_seed": seed,
        "versions": {},
        "created": "1970-01-01T00:00:00Z",
    }
    write_features(path, splits, attrs)
    return Path(path)


def _write_tar(path: Path, folder: str, members: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tf:
        for name, payload in members.items():
            info = tarfile.TarInfo(f"{folder}/{name}")
            info.size = len(payload)
            info.mtime = 0
            tf.addfile(info, io.BytesIO(payload))
    return path


def make_cifar100_archive(path: str | Path, n_train: int = 400, n_test: int = 200, seed: int = 0, classes: int = 100):
    """A small ``cifar-100-python.tar.gz``: official layout, ``classes`` fine classes (coarse = fine // 5)."""
    rng = np.random.default_rng(seed)
    names = [f"class_{i:03d}" for i in range(classes)]

    def part(n: int, label: str) -> bytes:
        imgs, fine = synthetic_images(n, rng, classes)
        return pickle.dumps(
            {
                b"filenames": [f"synthetic_{i:05d}.png".encode() for i in range(n)],
                b"batch_label": label.encode(),
                b"fine_labels": [int(x) for x in fine],
                b"coarse_labels": [int(x) // 5 for x in fine],
                b"data": imgs.transpose(0, 3, 1, 2).reshape(n, 3072),
            },
            protocol=2,
        )

    meta = pickle.dumps(
        {
            b"fine_label_names": [c.encode() for c in names],
            b"coarse_label_names": [f"super_{i}".encode() for i in range((classes + 4) // 5)],
        },
        protocol=2,
    )
    members = {"meta": meta, "train": part(n_train, "training batch 1 of 1"), "test": part(n_test, "testing batch 1")}
    return _write_tar(Path(path), "cifar-100-python", members)


def make_image_folder(
    root: str | Path,
    classes: tuple[str, ...] = ("cat", "dog", "fox"),
    per_class: int = 30,
    size: int = 40,
    seed: int = 0,
    mixed_modes: bool = True,
) -> Path:
    """``root/<class>/<i>.png`` with class-separable images; with ``mixed_modes`` some are grey (L) or RGBA."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    root = Path(root)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i, img in enumerate(class_images(np.full(per_class, c), rng, size)):
            pil = Image.fromarray(img)
            if mixed_modes and i % 10 == 3:
                pil = pil.convert("L")
            elif mixed_modes and i % 10 == 7:
                pil = pil.convert("RGBA")
            pil.save(root / name / f"{i:04d}.png")
    return root
