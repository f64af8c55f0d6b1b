"""CIFAR-10 stage: our reader, checksums, split, failure paths (synthetic archives only)."""

from __future__ import annotations

import io
import pickle
import tarfile

import h5py
import numpy as np
import pytest

from normscape.data import cifar
from normscape.data.datasets import data_config, load_prepared, prepare_dataset
from normscape.data.synthetic import make_cifar_archive, synthetic_images
from normscape.pipeline.errors import ChecksumError, DataError, DownloadError


def test_reader_round_trip_matches_generator(tmp_path):
    path = make_cifar_archive(tmp_path / "a.tar.gz", train_per_batch=7, n_test=9, seed=3)
    data = cifar.read_archive(path)
    rng = np.random.default_rng(3)  # the generator draws batch 1..5 then test, in order
    expected = [synthetic_images(7, rng) for _ in range(5)]
    test_x, test_y = synthetic_images(9, rng)
    train_x, train_y = data["train"]
    assert train_x.shape == (35, 32, 32, 3) and train_x.dtype == np.uint8
    np.testing.assert_array_equal(train_x, np.concatenate([e[0] for e in expected]))
    np.testing.assert_array_equal(train_y, np.concatenate([e[1] for e in expected]))
    np.testing.assert_array_equal(data["test"][0], test_x)
    np.testing.assert_array_equal(data["test"][1], test_y)
    assert data["class_names"][0] == "airplane" and len(data["class_names"]) == 10


def test_row_layout_is_rgb_planes():
    # One official row: 1024 R, 1024 G, 1024 B values; pixel (y, x) of plane c sits at c*1024 + y*32 + x.
    img = np.zeros((1, 32, 32, 3), dtype=np.uint8)
    img[0, 2, 5] = (10, 20, 30)
    row = img.transpose(0, 3, 1, 2).reshape(1, 3072)
    assert row[0, 0 * 1024 + 2 * 32 + 5] == 10 and row[0, 1024 + 69] == 20 and row[0, 2048 + 69] == 30
    back, _ = cifar._batch_arrays({b"data": row, b"labels": [1]}, "x", "b", num_classes=10)
    np.testing.assert_array_equal(back, img)


def test_split_sizes_disjoint_and_deterministic():
    val, test = cifar.split_test_set(10000, 8000, 2000, seed=0)
    assert len(val) == 8000 and len(test) == 2000
    assert not set(val) & set(test) and set(val) | set(test) == set(range(10000))
    val2, test2 = cifar.split_test_set(10000, 8000, 2000, seed=0)
    np.testing.assert_array_equal(val, val2)
    val3, _ = cifar.split_test_set(10000, 8000, 2000, seed=1)
    assert not np.array_equal(val, val3)
    with pytest.raises(DataError, match="exceed"):
        cifar.split_test_set(100, 80, 30, seed=0)


def test_prepare_writes_split_file(tmp_path, synthetic_archive):
    out = tmp_path / "cifar10.h5"
    sizes = prepare_dataset(synthetic_archive, out, data_config())
    assert sizes == {"train": 200, "val": 60, "test": 40}
    data = load_prepared(out)
    assert data["dataset"] == "cifar10" and len(data["class_names"]) == 10
    raw = cifar.read_archive(synthetic_archive)
    val_x, val_y, val_idx = data["val"]
    np.testing.assert_array_equal(val_x, raw["test"][0][val_idx])
    np.testing.assert_array_equal(val_y, raw["test"][1][val_idx])
    assert not set(val_idx) & set(data["test"][2])
    assert list(out.parent.iterdir()) == [out]  # no temp file left behind


def test_checksum_mismatch_names_both_sums_and_the_fix(tmp_path, synthetic_archive):
    out = tmp_path / "cifar10.h5"
    with pytest.raises(ChecksumError) as err:
        prepare_dataset(synthetic_archive, out, data_config(checksum="md5:" + "0" * 32))
    actual = cifar.file_digest(synthetic_archive, "md5")
    assert actual in str(err.value) and "data.checksum" in str(err.value)
    assert not out.exists()
    cifar.verify_checksum(synthetic_archive, f"md5:{actual}")
    cifar.verify_checksum(synthetic_archive, "sha256:" + cifar.file_digest(synthetic_archive)[:8])  # prefix


def test_truncated_archive_is_reported(tmp_path, synthetic_archive):
    bad = tmp_path / "trunc.tar.gz"
    bad.write_bytes(synthetic_archive.read_bytes()[: synthetic_archive.stat().st_size // 2])
    with pytest.raises(DataError, match="truncated or corrupt"):
        cifar.read_archive(bad)


def test_wrong_layout_is_reported(tmp_path):
    bad = tmp_path / "other.tar.gz"
    with tarfile.open(bad, "w:gz") as tf:
        payload = b"hello"
        info = tarfile.TarInfo("something/else.txt")
        info.size = len(payload)
        tf.addfile(info, io.BytesIO(payload))
    with pytest.raises(DataError, match="not a CIFAR-10 python archive"):
        cifar.read_archive(bad)


def test_malicious_pickle_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    bad = tmp_path / "evil.tar.gz"
    with tarfile.open(bad, "w:gz") as tf:
        for name in ("batches.meta", *cifar.TRAIN_BATCHES, cifar.TEST_BATCH):
            payload = pickle.dumps(Evil(), protocol=2)
            info = tarfile.TarInfo(f"{cifar.ARCHIVE_DIR}/{name}")
            info.size = len(payload)
            tf.addfile(info, io.BytesIO(payload))
    with pytest.raises(DataError, match="forbidden object"):
        cifar.read_archive(bad)


def test_missing_archive(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        cifar.read_archive(tmp_path / "nope.tar.gz")


def test_download_without_network_fails_cleanly(tmp_path):
    dest = tmp_path / "dl" / "cifar.tar.gz"
    with pytest.raises(DownloadError, match="data.archive"):
        cifar.download("http://127.0.0.1:9/cifar-10-python.tar.gz", dest, None, timeout_s=5)
    assert not dest.exists() and not any(dest.parent.iterdir())


def test_download_from_local_server_verifies_checksum(tmp_path, synthetic_archive):
    # A real HTTP download from a server on loopback, then a checksum mismatch: no file may be left.
    import functools
    import http.server
    import threading

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(synthetic_archive.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{synthetic_archive.name}"
        good = cifar.download(url, tmp_path / "ok.tar.gz", f"sha256:{cifar.file_digest(synthetic_archive)}")
        assert good.read_bytes() == synthetic_archive.read_bytes()
        with pytest.raises(ChecksumError):
            cifar.download(url, tmp_path / "bad.tar.gz", "md5:" + "1" * 32)
        assert not (tmp_path / "bad.tar.gz").exists()
    finally:
        server.shutdown()
        server.server_close()


def test_prepared_file_is_valid_hdf5(tmp_path, synthetic_archive):
    out = tmp_path / "c.h5"
    prepare_dataset(synthetic_archive, out, data_config())
    with h5py.File(out, "r") as f:
        assert f["train/images"].shape == (200, 32, 32, 3) and f["train/images"].dtype == np.uint8
        assert f.attrs["source_sha256"] == cifar.file_digest(synthetic_archive)
