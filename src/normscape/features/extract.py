"""Feature extraction: every split of the prepared dataset through the frozen backbone into one HDF5 cache.

The backbone is any registered arch (normscape/features/backbones.py); the feature width is the model's, the default
input size and mean/std are the weights' own (torchvision transforms metadata), and the cache records the
dataset's identity (name, source checksum, split rule, classes) next to the backbone's.

Fast path (vs. the naive per-image PIL resize + ``ToTensor`` + ``DataLoader`` + fp32 eager model):
  * whole batches are converted uint8 -> float and resized on the tensor (bilinear, half-pixel centres — the
    same sampling as PIL's bilinear upsampling, without its per-image uint8 rounding);
  * BatchNorm folded into the convolutions, ``channels_last`` memory format, ``torch.inference_mode``;
  * small batches (16 at 224 px) keep activations in cache on a CPU;
  * ``precision: auto`` means fp32: bf16 features of the real ImageNet weights are too far from fp32 (cosine
    ~0.993) and bf16 is slower than fp32 on CPUs without AVX512-BF16/AMX (``resolve_precision``).
"""

from __future__ import annotations

import datetime
import logging
import platform
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from normscape.data.cifar import file_digest
from normscape.data.datasets import load_prepared
from normscape.features import store
from normscape.features.backbones import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    RANDOM_WEIGHTS,
    build_backbone,
    fast_extractor,
    is_torchvision_weights,
    preprocessing,
    reference_extractor,
    torchvision_weights,
)
from normscape.features.merge_shards import shard_ranges, write_shard

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        from normscape.pipeline.errors import ConfigError

        raise ConfigError("backbone.device is 'cuda' but no CUDA GPU is available; use 'auto' or 'cpu'.")
    return torch.device(device)


def resolve_precision(precision: str) -> str:
    """``auto`` -> ``fp32`` (see below); ``bf16`` only when asked for explicitly.

    Measured with the real ImageNet weights (offline mirror, 224 px): bf16 features reach a cosine similarity
    of only ~0.993 (min over images) to fp32, below the 0.999 fidelity bar, and on CPUs without AVX512-BF16/AMX
    bf16 is also slower. So ``auto`` keeps fp32; ``bf16`` remains available for users who accept the lower
    fidelity on a bf16-native GPU/CPU.
    """
    return "fp32" if precision == "auto" else precision


def preprocess(
    images_uint8: np.ndarray,
    input_size: int,
    device: torch.device,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> (x - mean) / std float (N, 3, S, S) in channels_last, on ``device``."""
    x = torch.from_numpy(np.ascontiguousarray(images_uint8)).to(device)
    x = x.permute(0, 3, 1, 2).float().div_(255.0)
    if x.shape[-1] != input_size or x.shape[-2] != input_size:
        x = F.interpolate(x, size=(input_size, input_size), mode="bilinear", align_corners=False, antialias=False)
    mean_t = torch.tensor(mean, device=device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=device).view(1, 3, 1, 1)
    return ((x - mean_t) / std_t).contiguous(memory_format=torch.channels_last)


class FeatureExtractor:
    """Batched, fused, channels_last feature extraction (see module docstring)."""

    def __init__(
        self,
        model: torch.nn.Module,
        input_size: int,
        device: str = "auto",
        precision: str = "auto",
        batch_size: int = 16,
        fast: bool = True,
        mean: tuple[float, ...] = IMAGENET_MEAN,
        std: tuple[float, ...] = IMAGENET_STD,
    ):
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision)
        self.input_size = input_size
        self.batch_size = batch_size
        self.mean, self.std = tuple(mean), tuple(std)
        self.feature_dim = model.feature_dim
        self.net = fast_extractor(model, self.device) if fast else reference_extractor(model).to(self.device)

    def __call__(self, images_uint8: np.ndarray, progress: str | None = None) -> np.ndarray:
        from tqdm import tqdm

        out = np.empty((len(images_uint8), self.feature_dim), dtype=np.float32)
        starts = range(0, len(images_uint8), self.batch_size)
        bar = tqdm(total=len(images_uint8), unit="img", desc=progress, disable=progress is None, mininterval=5)
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")
        with torch.inference_mode(), autocast, bar:
            for start in starts:
                batch = images_uint8[start : start + self.batch_size]
                feats = self.net(preprocess(batch, self.input_size, self.device, self.mean, self.std))
                out[start : start + len(batch)] = feats.float().cpu().numpy()
                bar.update(len(batch))
        return out


def versions() -> dict:
    import h5py
    import torchvision

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
        "h5py": h5py.__version__,
    }


def extract_features(
    dataset_path: str | Path,
    out_path: str | Path,
    weights: str,
    weights_file: str | Path | None,
    weights_sha256: str | None,
    input_size: int | None,
    precision: str,
    batch_size: int,
    device: str,
    arch: str = "mobilenet_v2",
    splits: Iterable[str] = SPLITS,
    shard: tuple[int, int] | None = None,
) -> dict:
    """Extract features of every split of a prepared dataset into ``out_path`` (atomic). Returns the attrs.

    ``input_size`` None: the weights' own crop size (their transforms metadata); mean/std always come from there.
    ``shard`` ``(index, count)``: only that shard's batch-aligned block of rows of every split, written as a
    shard (:mod:`normscape.features.merge_shards`) that ``merge_shards`` joins into the unsharded file bit for bit.
    """
    data = load_prepared(dataset_path)
    request = {"arch": arch, "weights": weights, "weights_sha256": weights_sha256, "input_size": input_size}
    request = store.backbone_request({**request, "precision": precision})  # the settings as configured
    pre = preprocessing(arch, weights)
    input_size = input_size or pre["input_size"]
    model = build_backbone(weights, weights_file, weights_sha256, arch=arch, input_size=input_size)
    extractor = FeatureExtractor(model, input_size, device, precision, batch_size, mean=pre["mean"], std=pre["std"])
    log.info("extracting %s features at %d px on %s in %s", arch, input_size, extractor.device, extractor.precision)
    arrays, rows = {}, {}
    for split in splits:
        images, labels, indices = data[split]
        if shard is not None:  # whole batches of the unsharded run: every forward pass sees the same batch
            start, stop = shard_ranges(len(images), shard[1], batch_size)[shard[0]]
            rows[split] = (start, stop, len(images))
            images, labels, indices = images[start:stop], labels[start:stop], indices[start:stop]
        t0 = datetime.datetime.now()
        feats = extractor(images, progress=f"features {split}")
        secs = (datetime.datetime.now() - t0).total_seconds()
        log.info("%s: %d images in %.1f s (%.1f images/s)", split, len(images), secs, len(images) / max(secs, 1e-9))
        if not np.isfinite(feats).all():
            raise FloatingPointError(f"non-finite features in split {split}")
        arrays[split] = {"features": feats, "labels": labels, "indices": indices}
    weights_sha = file_digest(weights_file, "sha256") if weights_file else ""
    if is_torchvision_weights(arch, weights):  # DEFAULT -> the concrete weights it meant in this torchvision
        weights_id = f"torchvision:{torchvision_weights(arch, weights).name}"
    else:
        weights_id = weights if weights == RANDOM_WEIGHTS else f"file:{Path(weights).name}"
    attrs = {
        "backbone": arch,
        "weights_id": weights_id,
        "weights_file": str(weights_file or ""),
        "weights_sha256": weights_sha,
        "input_size": input_size,
        "precision": extractor.precision,
        "backbone_request": request,  # lets a job check the cache against its config without torchvision
        "device": str(extractor.device),
        "normalization": {
            "mean": list(pre["mean"]),
            "std": list(pre["std"]),
            "resize": "bilinear",
            "feature": "input of the last Linear layer (global-pooled / CLS token)",
        },
        "feature_dim": model.feature_dim,
        "num_classes": len(data["class_names"]),
        "class_names": data["class_names"],
        "dataset": data["dataset"],
        "data_checksum": f"sha256:{data['source_sha256']}",
        "split_seed": data["split_seed"],
        "split_rule": data["split_rule"],
        "versions": versions(),
        "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if shard is not None:
        write_shard(out_path, arrays, attrs, shard[0], shard[1], rows)
    else:
        store.write_features(out_path, arrays, attrs)
    return attrs
