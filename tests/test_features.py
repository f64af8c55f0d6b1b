"""Feature cache: the fast extractor equals the reference math, HDF5 layout/attrs, weights errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from normscape.data.datasets import data_config, prepare_dataset
from normscape.data.synthetic import synthetic_images
from normscape.features import store
from normscape.features.backbones import build_backbone, reference_extractor
from normscape.features.extract import FeatureExtractor, extract_features, preprocess
from normscape.pipeline.errors import DataError, WeightsError


@pytest.fixture(scope="module")
def backbone():
    return build_backbone("random")


@pytest.fixture(scope="module")
def images():
    return synthetic_images(6, np.random.default_rng(0))[0]


def reference_features(model, images, size):
    """The loop the fast path replaces: one image at a time, NCHW, BN unfused, fp32."""
    net = reference_extractor(model)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    out = []
    with torch.no_grad():
        for img in images:
            x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255.0
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
            out.append(net((x - mean) / std)[0].numpy())
    return np.stack(out)


def test_fast_path_equals_reference_loop_fp32(backbone, images):
    fast = FeatureExtractor(backbone, input_size=64, device="cpu", precision="fp32", batch_size=4)(images)
    ref = reference_features(backbone, images, 64)
    assert fast.shape == (6, 1280)
    # BN folding and channels_last reorder float sums: agreement to float32 rounding, relative to the scale.
    scale = np.abs(ref).max()
    np.testing.assert_allclose(fast, ref, rtol=0, atol=1e-4 * scale)


def test_fast_path_close_to_naive_pil_path(backbone, images):
    # The naive path resizes each uint8 PIL image (rounding to uint8 after resizing): close, not identical.
    from PIL import Image
    from torchvision import transforms

    tf = transforms.Compose(
        [
            transforms.Resize((64, 64), interpolation=transforms.InterpolationMode.BILINEAR),
            transforms.ToTensor(),
            transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ]
    )
    x = torch.stack([tf(Image.fromarray(img)) for img in images])
    with torch.no_grad():
        naive = reference_extractor(backbone)(x).numpy()
    fast = FeatureExtractor(backbone, 64, "cpu", "fp32", 4)(images)
    cos = (fast * naive).sum(1) / (np.linalg.norm(fast, axis=1) * np.linalg.norm(naive, axis=1))
    assert cos.min() > 0.99


def test_preprocess_normalises_like_imagenet():
    img = np.full((1, 32, 32, 3), 255, dtype=np.uint8)
    x = preprocess(img, 48, torch.device("cpu"))
    assert x.shape == (1, 3, 48, 48) and x.is_contiguous(memory_format=torch.channels_last)
    expected = (1 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    torch.testing.assert_close(x[0, :, 10, 10], expected)


def test_bf16_features_stay_close_to_fp32(backbone, images):
    fp32 = FeatureExtractor(backbone, 64, "cpu", "fp32", 6)(images)
    bf16 = FeatureExtractor(backbone, 64, "cpu", "bf16", 6)(images)
    cos = (fp32 * bf16).sum(1) / (np.linalg.norm(fp32, axis=1) * np.linalg.norm(bf16, axis=1))
    assert cos.min() > 0.99  # real-weight fidelity (>= 0.999) is measured in benchmarks/bench_features.py


def test_extract_features_writes_the_cache(tmp_path, synthetic_archive):
    dataset = tmp_path / "cifar10.h5"
    prepare_dataset(synthetic_archive, dataset, data_config())
    out = tmp_path / "features.h5"
    extract_features(
        dataset,
        out,
        weights="random",
        weights_file=None,
        weights_sha256=None,
        input_size=64,
        precision="auto",
        batch_size=50,
        device="cpu",
    )
    attrs = store.read_attrs(out)
    for key in (
        "backbone",
        "weights_id",
        "weights_sha256",
        "input_size",
        "precision",
        "normalization",
        "versions",
        "created",
        "class_names",
        "data_checksum",
    ):
        assert key in attrs, key
    assert attrs["input_size"] == 64 and attrs["weights_id"] == "random" and attrs["precision"] in ("fp32", "bf16")
    for split, n in (("train", 200), ("val", 60), ("test", 40)):
        x, y = store.load_split(out, split)
        assert x.shape == (n, 1280) and x.dtype == np.float32 and y.shape == (n,)
        assert np.isfinite(x).all()
    assert store.check_attrs(out, {"input_size": 64, "backbone": "mobilenet_v2"}) == []
    assert store.check_attrs(out, {"input_size": 224}) != []


def test_load_rows_equals_indexing_the_whole_split(features_file):
    """The diagnostics' subset reader (chunk by chunk, one reused buffer) returns exactly split[rows]: rows in any
    order, repeated, all in one chunk, across the partial last chunk, or none."""
    x_all, y_all = store.load_split(features_file, "train")  # 2000 rows: chunks of 1024 and 976
    rng = np.random.default_rng(3)
    for rows in (
        rng.choice(2000, 300, replace=False),  # unsorted, both chunks
        np.array([1999, 0, 1024, 1023, 5, 5, 1999]),  # chunk edges, repeats
        np.arange(1100, 1200),  # only the last (partial) chunk
        np.arange(2000),
        np.array([], dtype=np.int64),
    ):
        x, y = store.load_rows(features_file, "train", rows)
        assert x.dtype == np.float32 and x.shape == (len(rows), 1280)
        np.testing.assert_array_equal(x, x_all[rows])
        np.testing.assert_array_equal(y, y_all[rows])
    assert store.split_length(features_file, "val") == 500
    with pytest.raises(IndexError, match="outside"):
        store.load_rows(features_file, "train", np.array([2000]))
    with pytest.raises(DataError, match="no split 'bogus'"):
        store.load_rows(features_file, "bogus", np.array([0]))


def test_map_split_equals_load_split(tmp_path, features_file):
    """The trainer's reader maps the file where the writer laid the rows out back to back (every split of a store
    written by write_features: chunks of 1024 rows and a partial last one) and reads it otherwise (compressed or
    contiguous datasets, another dtype); the arrays equal load_split's either way."""
    import h5py

    for split in ("train", "val", "test"):
        x, y = store.map_split(features_file, split)
        x_ref, y_ref = store.load_split(features_file, split)
        assert isinstance(x, np.memmap) and x.dtype == np.float32 and x.flags.writeable
        np.testing.assert_array_equal(x, x_ref)
        np.testing.assert_array_equal(y, y_ref)
        assert torch.equal(torch.from_numpy(x)[7], torch.from_numpy(x_ref)[7])
    x, _ = store.map_split(features_file, "train")
    before = float(x[0, 0])
    x[0, 0] = before + 1.0  # copy-on-write: the file keeps its value
    assert store.load_split(features_file, "train")[0][0, 0] == before != x[0, 0]

    x_ref, y_ref = store.load_split(features_file, "val")
    for name, kwargs, mapped in [
        ("gzip", {"chunks": (100, 1280), "compression": "gzip"}, False),
        ("contiguous", {}, True),
        ("float64", {"dtype": np.float64}, False),
        ("narrow_chunks", {"chunks": (100, 640)}, False),
    ]:
        other = tmp_path / f"{name}.h5"
        with h5py.File(other, "w") as f:
            data = x_ref.astype(kwargs.pop("dtype", np.float32))
            f.create_dataset("val/features", data=data, **kwargs)
            f.create_dataset("val/labels", data=y_ref)
        x, y = store.map_split(other, "val")
        assert isinstance(x, np.memmap) == mapped, name
        np.testing.assert_array_equal(x, x_ref.astype(x.dtype))
        np.testing.assert_array_equal(y, y_ref)
    with pytest.raises(DataError, match="no split 'bogus'"):
        store.map_split(features_file, "bogus")
    # a file cut short after its metadata: one clear error, not a traceback from the memory map
    cut = tmp_path / "cut.h5"
    with h5py.File(cut, "w") as f:
        f.create_dataset("val/features", data=x_ref)
        f.create_dataset("val/labels", data=y_ref)
        offset = f["val/features"].id.get_offset()
    cut.write_bytes(cut.read_bytes()[: offset + 100])
    with pytest.raises(DataError, match="Rebuild it"):
        store.map_split(cut, "val")


def test_bytes_damaged_inside_a_split_are_reported_not_trained_on(tmp_path, features_file):
    """Random bytes written into the middle of the file keep it a valid HDF5 file of valid floats (some NaN):
    without the writer's CRC, training reported the damage as divergence. Read whole, a split is checked."""
    import h5py

    damaged = tmp_path / "damaged.h5"
    damaged.write_bytes(features_file.read_bytes())
    with h5py.File(damaged, "r") as f:
        offset = store._file_extent(f["train/features"])
    with damaged.open("r+b") as fh:
        fh.seek(offset + 4 * 1280 * 700)  # row 700 of the training split
        fh.write(np.random.default_rng(0).bytes(4096))
    for read in (store.map_split, store.load_split):
        with pytest.raises(DataError, match=r"corrupt in split 'train' \(its features or labels are not the bytes"):
            read(damaged, "train")
        np.testing.assert_array_equal(read(damaged, "val")[0], store.load_split(features_file, "val")[0])
    assert store.read_attrs(features_file)["split_crc32"]["train"] == store.split_crc32(
        *store.load_split(features_file, "train")
    )
    # the labels too: damaged, they were an obscure error deep in training
    damaged.write_bytes(features_file.read_bytes())
    with h5py.File(damaged, "r") as f:
        labels_at = f["val/labels"].id.get_offset()
    with damaged.open("r+b") as fh:
        fh.seek(labels_at + 8 * 10)
        fh.write(np.random.default_rng(1).bytes(64))
    with pytest.raises(DataError, match=r"corrupt in split 'val' \(its features or labels are not the bytes"):
        store.map_split(damaged, "val")


def test_truncated_feature_file_is_reported(tmp_path, features_file):
    bad = tmp_path / "trunc.h5"
    bad.write_bytes(features_file.read_bytes()[:4096])
    with pytest.raises(DataError, match="Rebuild it: rm "):
        store.load_split(bad, "train")


def test_missing_weights_file(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        build_backbone(str(tmp_path / "nope.pth"), tmp_path / "nope.pth")


def test_wrong_state_dict_is_reported(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(3)}, path)
    with pytest.raises(WeightsError, match="do not fit"):
        build_backbone(str(path), path)


def test_weights_sha256_mismatch(tmp_path):
    path = tmp_path / "w.pth"
    torch.save(build_backbone("random").state_dict(), path)
    with pytest.raises(WeightsError, match="sha256 mismatch"):
        build_backbone(str(path), path, sha256="0" * 64)
    build_backbone(str(path), path)  # without the check the file loads


def test_linear_probe_learns_separable_features(features_file):
    from normscape.features.linear_probe import linear_probe

    result = linear_probe(str(features_file), train_samples=1000)
    assert result["train_samples"] == 1000 and result["test_acc"] > 0.9


def test_cache_check_without_torchvision_equals_resolving_the_config(tmp_path, synthetic_archive):
    """A training job checks the cache against its config without importing torchvision (~1.5 s of CPU a job)
    when the cache records the same backbone request; what it expects is what resolving the config gives."""
    import json
    import subprocess
    import sys

    import torchvision

    dataset = tmp_path / "cifar10.h5"
    data = data_config()
    prepare_dataset(synthetic_archive, dataset, data)
    weights_file = tmp_path / "mobilenet_v2.pth"
    torch.manual_seed(0)
    torch.save(torchvision.models.mobilenet_v2().state_dict(), weights_file)
    # DEFAULT and no input size: both resolved from torchvision's metadata (IMAGENET1K_V2, 224 px)
    backbone = {"arch": "mobilenet_v2", "weights": "DEFAULT", "weights_sha256": None, "input_size": None}
    backbone["precision"] = "auto"
    out = tmp_path / "features.h5"
    extract_features(
        dataset,
        out,
        weights_file=weights_file,
        device="cpu",
        batch_size=32,
        splits=("val",),
        **{key: backbone[key] for key in ("weights", "weights_sha256", "input_size", "precision", "arch")},
    )
    assert store.read_attrs(out)["backbone_request"] == store.backbone_request(backbone)
    resolved = store.expected_attrs(backbone, data)
    assert (resolved["weights_id"], resolved["input_size"]) == ("torchvision:IMAGENET1K_V2", 224)
    assert store.expected_attrs(backbone, data, cache=out) == resolved
    store.require_compatible(out, resolved)

    script = (
        "import json, sys; from normscape.features import store; "
        f"e = store.expected_attrs({backbone!r}, {dict(data)!r}, cache={str(out)!r}); "
        "print(json.dumps({'expected': e, 'torchvision': 'torchvision' in sys.modules}))"
    )
    child = json.loads(subprocess.run([sys.executable, "-c", script], capture_output=True, check=True).stdout)
    assert child == {"expected": resolved, "torchvision": False}

    # another request (an explicit input size) is resolved for real, and the cache does not fit it
    other = store.expected_attrs({**backbone, "input_size": 96}, data, cache=out)
    assert other == store.expected_attrs({**backbone, "input_size": 96}, data)
    with pytest.raises(DataError, match="input_size: file has 224, config wants 96"):
        store.require_compatible(out, other)
