"""The frozen MobileNet-V2 backbone: weights (torchvision ImageNet, a local state_dict, or random) and the
fast inference form used for feature extraction.

Weights sources (``backbone.weights``):

* ``IMAGENET1K_V1`` — torchvision's ImageNet weights; the ``download_weights`` rule fetches them once into
  ``results/weights/`` (checked against torchvision's sha256 prefix), so compute nodes need no network.
* a path — a torchvision ``mobilenet_v2`` state_dict (e.g. an offline mirror); optional sha256 check.
* ``random`` — random init with ``torch.manual_seed(0)`` (tests, and the random-feature control).

The backbone always runs in eval mode: BatchNorm uses its stored statistics (some converted checkpoints fold BN
into the convolutions and carry placeholder statistics, which train-mode BN would destroy). For speed, BN is
folded into the preceding convolution (``torch.fx`` conv-bn fusion: exact up to float rounding) and the
network runs in ``channels_last`` memory format — on a 2-core AVX-512 CPU that is ~2.5x faster than the
eager NCHW model at 224 px (see benchmarks/bench_features.py).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torchvision
from torch import nn

from normscape.cifar import file_digest
from normscape.errors import WeightsError

log = logging.getLogger(__name__)

TORCHVISION_WEIGHTS = "IMAGENET1K_V1"
RANDOM_WEIGHTS = "random"
FEATURE_DIM = 1280
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def torchvision_weights_url() -> tuple[str, str]:
    """(url, sha256 prefix) of torchvision's MobileNet-V2 IMAGENET1K_V1 weights."""
    weights = torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1
    url = weights.url
    # torch hub file names end in -<first 8+ hex digits of the sha256>.pth
    prefix = Path(url).stem.rsplit("-", 1)[-1]
    return url, prefix


def load_state_dict(path: str | Path, sha256: str | None = None) -> dict:
    """Read a local mobilenet_v2 state_dict with clear errors for a missing, corrupt or mismatching file."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(
            f"backbone weights file {path} does not exist; fix backbone.weights (a path to a "
            f"torchvision mobilenet_v2 state_dict, '{TORCHVISION_WEIGHTS}' or '{RANDOM_WEIGHTS}')."
        )
    if sha256:
        have = file_digest(path, "sha256")
        if have.lower() != sha256.lower():
            raise WeightsError(
                f"sha256 mismatch for backbone weights {path}: expected {sha256}, got {have}. "
                "Use the right file or update backbone.weights_sha256."
            )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt files
        # Not torch's own text: it advises weights_only=False (unsafe for files from elsewhere) or filing an issue.
        what = (
            "a pickle of other Python objects (e.g. a whole model), not only tensors"
            if "weights_only" in str(exc) or "Unpickl" in type(exc).__name__
            else f"not a PyTorch file at all, or truncated ({type(exc).__name__})"
        )
        raise WeightsError(
            f"backbone weights {path} is not a PyTorch state_dict: it is {what}. Set backbone.weights to a file "
            "written with torch.save(model.state_dict(), path) from a torchvision mobilenet_v2, or to "
            f"'{TORCHVISION_WEIGHTS}' / '{RANDOM_WEIGHTS}'."
        ) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsError(
            f"backbone weights {path} hold a {type(state).__name__}, not a state_dict. Save one with "
            "torch.save(model.state_dict(), path)."
        )
    return state


def build_backbone(weights: str, weights_file: str | Path | None = None, sha256: str | None = None) -> nn.Module:
    """torchvision ``mobilenet_v2`` with the requested weights, in eval mode, gradients off."""
    if weights == RANDOM_WEIGHTS:
        torch.manual_seed(0)  # the same random backbone every time
        model = torchvision.models.mobilenet_v2()
    else:
        model = torchvision.models.mobilenet_v2()
        state = load_state_dict(weights_file or weights, sha256)
        expected = model.state_dict()
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        wrong = sorted(k for k in set(expected) & set(state) if tuple(state[k].shape) != tuple(expected[k].shape))
        if missing or unexpected or wrong:
            raise WeightsError(
                f"backbone weights {weights_file or weights} do not fit torchvision's mobilenet_v2: "
                f"{len(missing)} missing keys {missing[:3]}, {len(unexpected)} unexpected keys {unexpected[:3]}, "
                f"{len(wrong)} with wrong shapes {wrong[:3]}. Use a mobilenet_v2 state_dict."
            )
        model.load_state_dict(state)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


class PooledFeatures(nn.Module):
    """``features`` -> global average pool -> (N, 1280): MobileNet-V2's penultimate representation."""

    def __init__(self, features: nn.Module):
        super().__init__()
        self.features = features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).mean(dim=(2, 3))


def reference_extractor(model: nn.Module) -> nn.Module:
    """The plain eager extractor (NCHW, BN separate): the reference the fast path is tested against."""
    return PooledFeatures(model.features).eval()


def fast_extractor(model: nn.Module, device: torch.device) -> nn.Module:
    """Conv-BN folded, channels_last extractor on ``device``."""
    from torch.fx.experimental.optimization import fuse

    fused = fuse(model.features.eval())  # returns a GraphModule with BN folded into the convs
    return PooledFeatures(fused).to(device).to(memory_format=torch.channels_last).eval()
