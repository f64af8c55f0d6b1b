"""The backbone registry: every listed torchvision arch builds with random weights, its penultimate feature has the
model's own width, the fast path equals the eager model, and preprocessing comes from the weights' metadata."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from normscape.data.datasets import data_config, prepare_dataset
from normscape.data.synthetic import make_cifar_archive, synthetic_images
from normscape.features import backbones, store
from normscape.features.extract import FeatureExtractor, extract_features
from normscape.pipeline.errors import WeightsError

# arch -> width of its penultimate representation (the input of its last Linear layer)
ARCHS = {
    "mobilenet_v2": 1280,
    "mobilenet_v3_large": 1280,
    "resnet18": 512,
    "resnet50": 2048,
    "efficientnet_b0": 1280,
    "convnext_tiny": 768,
    "vit_b_16": 768,
}
SIZE = 32  # px: small for CI; a random-init ViT-B/16 is built for it (2 x 2 patches + CLS)


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    """A prepared dataset of 5 train / 2 val / 2 test images."""
    root = tmp_path_factory.mktemp("tiny")
    archive = make_cifar_archive(root / "c.tar.gz", train_per_batch=1, n_test=4)
    out = root / "cifar10.h5"
    prepare_dataset(archive, out, data_config(val_size=2, test_size=2))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_every_arch_writes_a_feature_store_of_its_width(arch, tiny_dataset, tmp_path):
    out = tmp_path / "features.h5"
    attrs = extract_features(tiny_dataset, out, "random", None, None, SIZE, "fp32", 4, "cpu", arch=arch)
    assert attrs["feature_dim"] == ARCHS[arch] and attrs["backbone"] == arch
    for split, n in (("train", 5), ("val", 2), ("test", 2)):
        x, y = store.load_split(out, split)
        assert x.shape == (n, ARCHS[arch]) and np.isfinite(x).all() and y.shape == (n,)
    assert x.std() > 0  # a real representation, not a constant


@pytest.mark.parametrize("arch", ["mobilenet_v2", "resnet18", "convnext_tiny", "vit_b_16"])
def test_fast_path_equals_the_eager_model(arch):
    model = backbones.build_backbone("random", arch=arch, input_size=SIZE)
    images = synthetic_images(2, np.random.default_rng(0))[0]
    fast = FeatureExtractor(model, SIZE, "cpu", "fp32", 2)(images)
    eager = FeatureExtractor(model, SIZE, "cpu", "fp32", 2, fast=False)(images)
    scale = np.abs(eager).max()
    np.testing.assert_allclose(fast / scale, eager / scale, atol=1e-4)


def test_preprocessing_comes_from_the_weights_metadata():
    vit = backbones.preprocessing("vit_b_16", "IMAGENET1K_SWAG_E2E_V1")
    assert vit["input_size"] == 384 and vit["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert backbones.preprocessing("efficientnet_b3", "IMAGENET1K_V1")["input_size"] == 300
    assert backbones.preprocessing("mobilenet_v2", "random")["input_size"] == 224  # DEFAULT weights' metadata


def test_weights_names_urls_and_errors():
    url, prefix = backbones.torchvision_weights_url("resnet18", "IMAGENET1K_V1")
    assert url.endswith(".pth") and prefix and len(prefix) >= 8
    assert backbones.torchvision_weights("mobilenet_v2", "DEFAULT").name == "IMAGENET1K_V2"
    with pytest.raises(WeightsError, match="not a torchvision weights name of resnet18"):
        backbones.torchvision_weights("resnet18", "IMAGENET1K_V9")
    with pytest.raises(WeightsError, match="not a torchvision classification model"):
        backbones.check_arch("resnet19")


def test_local_state_dict_of_another_arch(tmp_path):
    path = tmp_path / "r18.pth"
    import torchvision

    torch.save(torchvision.models.resnet18().state_dict(), path)  # with its classifier: the fc is dropped
    model = backbones.build_backbone(str(path), path, arch="resnet18")
    assert model.feature_dim == 512 and isinstance(model.fc, torch.nn.Identity)
    with pytest.raises(WeightsError, match="do not fit torchvision's mobilenet_v2"):
        backbones.build_backbone(str(path), path, arch="mobilenet_v2")
