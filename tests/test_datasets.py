"""The dataset registry: CIFAR-100's official layout, and a user's ImageFolder tree with its checks and split."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from normscape.data import imagefolder
from normscape.data.cifar import CIFAR100, read_archive
from normscape.data.datasets import DATASETS, data_config, load_prepared, prepare_dataset
from normscape.data.synthetic import make_cifar100_archive, make_image_folder
from normscape.pipeline.errors import DataError


def test_registry_names_the_three_datasets():
    assert list(DATASETS) == ["cifar10", "cifar100", "imagefolder"]
    assert DATASETS["cifar100"].archive_name == "cifar-100-python.tar.gz" and DATASETS["imagefolder"].url is None


def test_cifar100_fine_labels_and_class_count(tmp_path):
    archive = make_cifar100_archive(tmp_path / "cifar-100-python.tar.gz", n_train=300, n_test=120)
    raw = read_archive(archive, CIFAR100)
    assert len(raw["class_names"]) == 100 and raw["train"][0].shape == (300, 32, 32, 3)
    assert raw["train"][1].max() >= 50  # fine labels (0..99), not the 20 coarse ones
    out = tmp_path / "cifar100.h5"
    sizes = prepare_dataset(archive, out, data_config(dataset="cifar100", val_size=60, test_size=60))
    data = load_prepared(out)
    assert sizes == {"train": 300, "val": 60, "test": 60} and data["dataset"] == "cifar100"
    np.testing.assert_array_equal(data["val"][1], raw["test"][1][data["val"][2]])


def test_cifar10_archive_is_not_read_as_cifar100(tmp_path, synthetic_archive):
    with pytest.raises(DataError, match="not a CIFAR-100 python archive"):
        read_archive(synthetic_archive, CIFAR100)


def test_image_folder_split_is_stratified_seeded_and_converts_modes(tmp_path, caplog):
    root = make_image_folder(tmp_path / "imgs", per_class=20)
    (root / "cat" / "notes.txt").write_text("not an image")
    out = tmp_path / "imagefolder.h5"
    with caplog.at_level(logging.INFO, logger="normscape.data.imagefolder"):
        sizes = prepare_dataset(root, out, data_config(dataset="imagefolder", image_size=24))
    assert "converted 12 image(s) to RGB" in caplog.text and "{'L': 6, 'RGBA': 6}" in caplog.text
    assert "skipped 1 non-image file(s)" in caplog.text
    data = load_prepared(out)
    assert sizes == {"train": 36, "val": 12, "test": 12} and data["class_names"] == ["cat", "dog", "fox"]
    for split in ("train", "val", "test"):
        images, labels, _ = data[split]
        assert images.shape[1:] == (24, 24, 3) and set(labels) == {0, 1, 2}  # every class in every split
    all_idx = np.concatenate([data[s][2] for s in ("train", "val", "test")])
    assert sorted(all_idx) == list(range(60))  # a partition of the tree
    again = tmp_path / "again.h5"
    prepare_dataset(root, again, data_config(dataset="imagefolder", image_size=24))
    np.testing.assert_array_equal(load_prepared(again)["val"][2], data["val"][2])
    other = imagefolder.split_indices(np.repeat([0, 1, 2], 20), 0.2, 0.2, seed=1)
    assert not np.array_equal(other["val"], data["val"][2])


@pytest.mark.parametrize(
    "breakage, message",
    [
        ("empty_class", r"class folder\(s\) \['empty'\] hold no images"),
        ("unreadable", r"1 image\(s\) cannot be read: \[.*broken.png"),
        ("one_class", r"has 1 class folder\(s\) \['cat'\]; a classifier needs at least two"),
        ("missing", "does not exist; check data.archive / data.root"),
    ],
)
def test_bad_image_folders_get_one_clear_message(tmp_path, breakage, message):
    root = make_image_folder(tmp_path / "imgs", per_class=5, mixed_modes=False)
    if breakage == "empty_class":
        (root / "empty").mkdir()
    elif breakage == "unreadable":
        (root / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    elif breakage == "one_class":
        for name in ("dog", "fox"):
            for p in (root / name).iterdir():
                p.unlink()
            (root / name).rmdir()
    elif breakage == "missing":
        root = tmp_path / "nowhere"
    with pytest.raises(DataError, match=message):
        prepare_dataset(root, tmp_path / "out.h5", data_config(dataset="imagefolder"))
    assert not (tmp_path / "out.h5").exists()


def test_split_that_leaves_a_split_empty_is_refused():
    with pytest.raises(DataError, match="leaves .*empty"):
        imagefolder.split_indices(np.array([0, 0, 1, 1]), 0.1, 0.1, seed=0)


def picture_in_every_mode(tmp_path):
    """One grey gradient (the 8-bit reference) saved in every image mode the reader accepts."""
    from PIL import Image

    grad = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (64, 1))
    ref = Image.fromarray(grad).convert("L")
    variants = {
        "L.png": ref,
        "RGB.png": ref.convert("RGB"),
        "RGBA.png": ref.convert("RGBA"),
        "LA.png": ref.convert("LA"),
        "P.png": ref.convert("P"),
        "CMYK.tiff": ref.convert("CMYK"),
        "I16.png": Image.fromarray(grad.astype(np.uint16) * 257),  # 16-bit grey PNG: mode I;16
        "I32.tiff": Image.fromarray(grad.astype(np.int32) * 257),  # mode I (older Pillow's 16-bit PNGs)
        "F.tiff": Image.fromarray(grad.astype(np.float32) / 255),  # float image in [0, 1]
    }
    files = []
    for name, img in variants.items():
        img.save(tmp_path / name)
        files.append(tmp_path / name)
    return np.asarray(ref.convert("RGB")), files


def test_every_image_mode_reads_as_its_8_bit_reference(tmp_path, caplog):
    from PIL import Image

    from normscape.data.imagefolder import read_images

    reference, files = picture_in_every_mode(tmp_path)
    assert {Image.open(f).mode for f in files} >= {"I;16", "I", "F", "P", "LA", "CMYK"}
    with caplog.at_level(logging.INFO, logger="normscape.data.imagefolder"):
        images = read_images(files, 64)
    for path, image in zip(files, images):
        assert np.array_equal(image, reference), path.name  # 16-bit white is 255, mid-grey stays mid-grey
    assert "rescaled 3 image(s) of more than 8 bits to 8 bits by their range" in caplog.text


def test_links_that_lead_nowhere_or_in_a_circle_are_counted(tmp_path, caplog):
    from normscape.data.imagefolder import scan
    from normscape.data.synthetic import make_image_folder

    root = make_image_folder(tmp_path / "tree", per_class=3, mixed_modes=False)
    (root / "cat" / "loop.png").symlink_to(root / "cat" / "loop.png")  # a link to itself
    (root / "dog" / "gone.png").symlink_to(tmp_path / "deleted.png")
    (root / "dog" / "notes.txt").write_text("not an image")
    with caplog.at_level(logging.INFO, logger="normscape.data.imagefolder"):
        _, files, _ = scan(root)
    assert len(files) == 9
    assert "skipped 1 non-image file(s)" in caplog.text
    assert "skipped 2 link(s)" in caplog.text and "lead nowhere or in a circle" in caplog.text
