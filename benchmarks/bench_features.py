"""Feature extraction at 224 px: our fast path vs the naive per-image PIL + ToTensor + DataLoader + fp32 eager.

Both run the same MobileNet-V2 (random init: weights do not change the cost) on the same synthetic 32x32
images in this process. Also reports the bf16-vs-fp32 feature fidelity (cosine similarity).
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch

from benchmarks.common import result
from normscape.backbone import build_backbone, reference_extractor
from normscape.features import FeatureExtractor
from normscape.synthetic import synthetic_images


def naive_extract(model, images: np.ndarray, size: int, batch_size: int = 64) -> np.ndarray:
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset
    from torchvision import transforms

    tf = transforms.Compose(
        [
            transforms.Resize((size, size)),
            transforms.ToTensor(),
            transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ]
    )

    class Images(Dataset):
        def __len__(self):
            return len(images)

        def __getitem__(self, i):
            return tf(Image.fromarray(images[i]))

    net = reference_extractor(model)
    out = []
    with torch.no_grad():
        for x in DataLoader(Images(), batch_size=batch_size):
            out.append(net(x).numpy())
    return np.concatenate(out)


def run(quick: bool) -> list[dict]:
    torch.set_num_threads(2)
    n, size = (32, 64) if quick else (384, 224)
    images = synthetic_images(n, np.random.default_rng(0))[0]
    model = build_backbone("random")
    fast = FeatureExtractor(model, size, device="auto", precision="auto", batch_size=16)
    fast(images[:16])  # warm-up (allocations, oneDNN kernel selection)
    t0 = time.perf_counter()
    ours = fast(images)
    t_fast = time.perf_counter() - t0
    naive_extract(model, images[:16], size)
    t0 = time.perf_counter()
    ref = naive_extract(model, images, size)
    t_naive = time.perf_counter() - t0
    cos_naive = float(np.min((ours * ref).sum(1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(ref, axis=1))))
    # bf16 fidelity: cosine similarity of bf16 vs fp32 features. Random-init weights flatter bf16; set
    # NORMSCAPE_BENCH_WEIGHTS to a real mobilenet_v2 state_dict to measure what matters.
    weights = os.environ.get("NORMSCAPE_BENCH_WEIGHTS")
    real = build_backbone(weights, weights) if weights else model
    fp32 = FeatureExtractor(real, size, "cpu", "fp32", 16)(images[:64])
    bf16 = FeatureExtractor(real, size, "cpu", "bf16", 16)(images[:64])
    cos_bf16 = float(np.min((fp32 * bf16).sum(1) / (np.linalg.norm(fp32, axis=1) * np.linalg.norm(bf16, axis=1))))
    return [
        result(
            "feature_extraction_224",
            n / t_fast,
            "images/s",
            n / t_naive,
            ">= 100 images/s and >= 3x naive",
            True,
            images=n,
            input_px=size,
            device=str(fast.device),
            precision=fast.precision,
            min_cosine_vs_naive=cos_naive,
        ),
        result(
            "feature_bf16_fidelity",
            cos_bf16,
            "min cosine",
            None,
            ">= 0.999 (bf16 vs fp32 features)",
            True,
            weights="real (NORMSCAPE_BENCH_WEIGHTS)" if weights else "random init",
        ),
    ]
