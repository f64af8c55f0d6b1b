"""A user's own images: an ImageFolder tree ``root/<class>/<image>`` read, checked and split with a seed.

Checks, each one clear message naming the files and the fix (never a traceback): the root is missing or has
fewer than two class folders; a class folder holds no images; images that PIL cannot read. Stated, logged
handling: files whose extension is not an image's are skipped (counted in the log); images in other modes
(grey ``L``, ``RGBA``, palette ``P``, ...) are converted to RGB (counted per mode); every image is resized to
``data.image_size`` px square (bilinear) so the dataset is one uint8 array like CIFAR's.

Split rule (``data.val_fraction``, ``data.test_fraction``, ``data.split_seed``): within each class, the images
(sorted by path) are permuted with ``numpy.random.default_rng([split_seed, class index])``; the first
round(val_fraction * n) are validation, the next round(test_fraction * n) test, the rest training. Stratified, so
every class is in every split when it has enough images; indices are positions in the sorted file list.
"""

from __future__ import annotations

import collections
import hashlib
import logging
from pathlib import Path

import numpy as np

from normscape.cifar import file_digest
from normscape.errors import DataError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def scan(root: str | Path) -> tuple[list[str], list[Path], np.ndarray]:
    """(class names, image files, labels) of the tree; DataError for the layouts that cannot be a dataset."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data.root {root} is not a directory; point it at a folder of <class>/<image> folders.")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise DataError(
            f"data.root {root} has {len(classes)} class folder(s) {classes}; a classifier needs at least two "
            "(the layout is root/<class>/<image>)."
        )
    files, labels, skipped, empty = [], [], 0, []
    for index, name in enumerate(classes):
        found = sorted(p for p in (root / name).rglob("*") if p.is_file() and not p.name.startswith("."))
        images = [p for p in found if p.suffix.lower() in IMAGE_EXTENSIONS]
        skipped += len(found) - len(images)
        if not images:
            empty.append(name)
        files += images
        labels += [index] * len(images)
    if empty:
        raise DataError(
            f"data.root {root}: class folder(s) {empty} hold no images ({', '.join(IMAGE_EXTENSIONS)}); "
            "add images or remove the folder(s)."
        )
    if skipped:
        log.info("skipped %d non-image file(s) under %s", skipped, root)
    return classes, files, np.asarray(labels, dtype=np.int64)


def read_images(files: list[Path], image_size: int) -> np.ndarray:
    """uint8 (N, S, S, 3) RGB; unreadable files -> one DataError listing them; other modes converted (logged)."""
    from PIL import Image, UnidentifiedImageError

    out = np.empty((len(files), image_size, image_size, 3), dtype=np.uint8)
    bad, modes = [], collections.Counter()
    for i, path in enumerate(files):
        try:
            with Image.open(path) as img:
                img.load()
                if img.mode != "RGB":
                    modes[img.mode] += 1
                    img = img.convert("RGB")
                out[i] = np.asarray(img.resize((image_size, image_size), Image.Resampling.BILINEAR))
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
            bad.append(f"{path} ({type(exc).__name__})")
    if bad:
        raise DataError(
            f"{len(bad)} image(s) cannot be read: {bad[:5]}{' ...' if len(bad) > 5 else ''}. Replace or delete them."
        )
    if modes:
        log.info("converted %d image(s) to RGB (modes: %s)", sum(modes.values()), dict(modes))
    return out


def tree_digest(root: str | Path, files: list[Path]) -> str:
    """sha256 over (relative path, file sha256) of every image: the dataset's identity."""
    h = hashlib.sha256()
    for path in files:
        h.update(f"{path.relative_to(root).as_posix()}\0{file_digest(path)}\n".encode())
    return h.hexdigest()


def split_indices(labels: np.ndarray, val_fraction: float, test_fraction: float, seed: int) -> dict[str, np.ndarray]:
    """Stratified seeded split (see module docstring): sorted indices per split."""
    if val_fraction + test_fraction >= 1:
        raise DataError(
            f"data.val_fraction ({val_fraction}) + data.test_fraction ({test_fraction}) leave no training images; "
            "lower them."
        )
    parts = {"train": [], "val": [], "test": []}
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[np.random.default_rng([seed, int(c)]).permutation(len(idx))]
        n_val, n_test = round(val_fraction * len(idx)), round(test_fraction * len(idx))
        parts["val"].append(idx[:n_val])
        parts["test"].append(idx[n_val : n_val + n_test])
        parts["train"].append(idx[n_val + n_test :])
    out = {k: np.sort(np.concatenate(v)) for k, v in parts.items()}
    empty = [k for k, v in out.items() if len(v) == 0]
    if empty:
        raise DataError(
            f"the split leaves {empty} empty ({len(labels)} images); add images or raise data.val_fraction / "
            "data.test_fraction."
        )
    return out


def read_image_folder(root: str | Path, image_size: int) -> dict:
    """``{"images", "labels", "class_names", "files", "sha256"}`` of the whole tree."""
    classes, files, labels = scan(root)
    images = read_images(files, image_size)
    log.info("read %d images of %d classes from %s at %d px", len(files), len(classes), root, image_size)
    return {
        "images": images,
        "labels": labels,
        "class_names": classes,
        "files": [p.relative_to(root).as_posix() for p in files],
        "sha256": tree_digest(root, files),
    }
