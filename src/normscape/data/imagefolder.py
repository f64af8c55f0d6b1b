"""A user's own images: an ImageFolder tree ``root/<class>/<image>`` read, checked and split with a seed.

Checks, each one clear message naming the files and the fix (never a traceback): the root is missing or has
fewer than two class folders; a class folder holds no images; images that PIL cannot read. Stated, logged
handling: files whose extension is not an image's, and links that lead nowhere or in a circle, are skipped (each
kind counted in the log); images in other modes (grey ``L``, ``RGBA``, palette ``P``, ...) are converted to RGB
(counted per mode); images of more than 8 bits (16-bit grey ``I;16``, 32-bit integer ``I``, float ``F``) are
rescaled by their mode's range to 8 bits first, not clipped (a 16-bit PNG's 65535 is white, not 255); every image
is resized to ``data.image_size`` px square (bilinear) so the dataset is one uint8 array like CIFAR's.

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

from normscape.data.cifar import file_digest
from normscape.pipeline.errors import DataError

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
    files, labels, skipped, broken, empty = [], [], 0, 0, []
    for index, name in enumerate(classes):
        entries = [p for p in (root / name).rglob("*") if not p.name.startswith(".")]
        found = sorted(p for p in entries if p.is_file())
        # a link that leads nowhere or in a circle is neither a file nor a folder (pathlib answers False for both,
        # ELOOP included)
        broken += sum(1 for p in entries if p.is_symlink() and not p.is_file() and not p.is_dir())
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
    if broken:
        log.info("skipped %d link(s) under %s that lead nowhere or in a circle", broken, root)
    return classes, files, np.asarray(labels, dtype=np.int64)


# The full-scale value of the image modes of more than 8 bits PIL decodes to (16-bit PNG and TIFF: I;16*, or I
# on older Pillow; F: float images, whose scale is 1.0 when every value is in [0, 1], else 255).
HIGH_DEPTH_MODES = {"I;16": 65535, "I;16L": 65535, "I;16B": 65535, "I;16N": 65535, "I": 65535, "F": None}


def to_8bit(img):
    """A grey image of more than 8 bits as 8-bit ``L``, rescaled by its mode's full-scale value (rounded)."""
    from PIL import Image

    values = np.asarray(img, dtype=np.float64)
    scale = HIGH_DEPTH_MODES[img.mode]
    if scale is None:
        scale = 1.0 if values.size and np.nanmax(values) <= 1.0 else 255.0
    return Image.fromarray(np.clip(np.rint(values * (255.0 / scale)), 0, 255).astype(np.uint8), "L")


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
                    img = (to_8bit(img) if img.mode in HIGH_DEPTH_MODES else img).convert("RGB")
                out[i] = np.asarray(img.resize((image_size, image_size), Image.Resampling.BILINEAR))
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
            bad.append(f"{path} ({type(exc).__name__})")
    if bad:
        raise DataError(
            f"{len(bad)} image(s) cannot be read: {bad[:5]}{' ...' if len(bad) > 5 else ''}. Replace or delete them."
        )
    if modes:
        log.info("converted %d image(s) to RGB (modes: %s)", sum(modes.values()), dict(modes))
        if deep := {m: n for m, n in modes.items() if m in HIGH_DEPTH_MODES}:
            log.info("rescaled %d image(s) of more than 8 bits to 8 bits by their range (%s)", sum(deep.values()), deep)
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
