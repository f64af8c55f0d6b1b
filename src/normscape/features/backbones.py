"""The backbone registry: any torchvision classification model, frozen, as a feature extractor.

``backbone.arch`` is a torchvision builder name (``torchvision.models.list_models(torchvision.models)``: resnet18,
resnet50, mobilenet_v2, mobilenet_v3_large, efficientnet_b0, convnext_tiny, vit_b_16, ...). torchvision's own
model registry is the registry; this module adds what the pipeline needs on top of it:

* the feature is the penultimate representation: the input of the model's last ``nn.Linear`` (its classifier),
  which is replaced by ``nn.Identity`` — global-pooled features for CNNs, the CLS token for ViTs. Its width is
  read from that layer (1280 for MobileNet-V2, 2048 for ResNet-50, 768 for ViT-B/16), never a constant;
* weights (``backbone.weights``): a torchvision weights name of that arch (``IMAGENET1K_V1``, ``DEFAULT``, ...;
  the ``download_weights`` rule fetches the file once into ``<downloads_dir>/weights/``, checked against the sha256
  prefix torch hub puts in its name), a path to a local state_dict (optional sha256 check), or ``random``
  (``torch.manual_seed(0)``: tests and the random-feature control);
* default preprocessing from the weights' own transforms metadata (crop size as input size, mean/std);
  random weights use the metadata of the arch's DEFAULT weights;
* :data:`BUILD_OPTIONS`: builder keyword arguments an arch family needs (a random-init ViT takes the input
  size as ``image_size``, so CI can run it at 32 px).

The backbone always runs in eval mode (BatchNorm uses its stored statistics). For speed (:func:`fast_extractor`)
BatchNorm is folded into the preceding convolution (``torch.fx`` conv-bn fusion, exact up to float rounding)
and the network runs in ``channels_last`` memory format under ``inference_mode``; an arch that torch.fx cannot
trace runs eager (logged). benchmarks/bench_features.py measures MobileNet-V2's path against the naive one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from normscape.data.cifar import file_digest
from normscape.pipeline.errors import WeightsError

log = logging.getLogger(__name__)

TORCHVISION_WEIGHTS = "IMAGENET1K_V1"  # the study's default
RANDOM_WEIGHTS = "random"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_INPUT_SIZE = 224

#: Builder kwargs an arch family needs: name prefix -> (input_size, weights name) -> kwargs.
BUILD_OPTIONS: dict[str, Callable[[int, str], dict]] = {
    "vit_": lambda size, weights: {"image_size": size} if weights == RANDOM_WEIGHTS else {},
}


# --------------------------------------------------------------------------------------------- the registry
def _models():
    """torchvision.models, imported on first use: importing torchvision costs ~1.5 s of CPU, which every job
    that only checks a feature cache against the config (normscape.features.store) would pay."""
    import torchvision.models

    return torchvision.models


def available_archs() -> list[str]:
    """Every torchvision classification builder name."""
    return sorted(_models().list_models(module=_models()))


def check_arch(arch: str) -> None:
    if arch not in available_archs():
        raise WeightsError(
            f"backbone.arch {arch!r} is not a torchvision classification model; choose one of {available_archs()}."
        )


def weights_names(arch: str) -> list[str]:
    """The torchvision weights names of ``arch`` (``IMAGENET1K_V1``, ..., and ``DEFAULT``)."""
    check_arch(arch)
    return [w.name for w in _models().get_model_weights(arch)] + ["DEFAULT"]


def is_torchvision_weights(arch: str, weights: str) -> bool:
    return weights in weights_names(arch)


def torchvision_weights(arch: str, weights: str):
    """The torchvision ``WeightsEnum`` member named ``weights`` for ``arch``."""
    if not is_torchvision_weights(arch, weights):
        raise WeightsError(
            f"backbone.weights {weights!r} is not a torchvision weights name of {arch} (those are "
            f"{weights_names(arch)}), 'random', or an existing state_dict file."
        )
    enum = _models().get_model_weights(arch)
    return enum.DEFAULT if weights == "DEFAULT" else enum[weights]


def torchvision_weights_url(arch: str = "mobilenet_v2", weights: str = TORCHVISION_WEIGHTS) -> tuple[str, str | None]:
    """(url, sha256 prefix or None) of torchvision's weights file."""
    url = torchvision_weights(arch, weights).url
    # torch hub file names end in -<first 8+ hex digits of the sha256>.pth
    prefix = Path(url).stem.rsplit("-", 1)[-1]
    is_hex = len(prefix) >= 8 and all(c in "0123456789abcdef" for c in prefix.lower())
    return url, prefix if is_hex else None


def preprocessing(arch: str, weights: str) -> dict:
    """{"input_size", "mean", "std"} from the weights' transforms metadata (random: the arch's DEFAULT weights)."""
    named = weights if is_torchvision_weights(arch, weights) else "DEFAULT"
    try:
        transforms = torchvision_weights(arch, named).transforms()
        size = transforms.crop_size
        return {
            "input_size": int(size[0] if isinstance(size, (list, tuple)) else size),
            "mean": [float(v) for v in transforms.mean],
            "std": [float(v) for v in transforms.std],
        }
    except (WeightsError, AttributeError, TypeError):  # an arch without weights metadata: ImageNet defaults
        return {"input_size": DEFAULT_INPUT_SIZE, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}


# --------------------------------------------------------------------------------------------- building
def load_state_dict(path: str | Path, sha256: str | None = None, arch: str = "mobilenet_v2") -> dict:
    """Read a local state_dict with clear errors for a missing, corrupt or mismatching file."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(
            f"backbone weights file {path} does not exist; fix backbone.weights (a path to a torchvision "
            f"state_dict of backbone.arch, a torchvision weights name such as '{TORCHVISION_WEIGHTS}', "
            f"or '{RANDOM_WEIGHTS}')."
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
        with open(path, "rb") as fh:  # torch.save writes a zip archive; old torch versions a bare pickle
            torch_file = fh.read(4).startswith((b"PK\x03\x04", b"\x80"))
        what = (
            "a pickle of other Python objects (e.g. a whole model), not only tensors"
            if torch_file and ("weights_only" in str(exc) or "Unpickl" in type(exc).__name__)
            else f"not a PyTorch file at all, or truncated ({type(exc).__name__})"
        )
        raise WeightsError(
            f"backbone weights {path} is not a PyTorch state_dict: it is {what}. Set backbone.weights to a file "
            f"written with torch.save(model.state_dict(), path) from a torchvision {arch} (backbone.arch), or to "
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


def backbone_problem(backbone: dict, weights_file: str | Path | None) -> str | None:
    """What would make feature extraction fail on this ``backbone`` config slice (an arch torchvision lacks, a
    weights name the arch lacks, a local weights file that is no state_dict of the arch or misses its sha256),
    or None. Checked before any job starts: found by the extraction job, the mistake would already have cost
    the feature cache, which Snakemake deletes when the job starts. ``weights_file``: the local or downloaded
    weights (a download not made yet is the download job's to verify)."""
    arch, weights = backbone["arch"], str(backbone["weights"])
    try:
        check_arch(arch)
        if weights == RANDOM_WEIGHTS:
            return None
        if weights_file is None or not Path(weights_file).is_file():
            torchvision_weights(arch, weights)  # a name: is it one of the arch's?
            return None
        build_backbone(weights, weights_file, backbone.get("weights_sha256"), arch, backbone.get("input_size"))
    except WeightsError as exc:
        return str(exc)
    return None


def _last_linear(model: nn.Module) -> tuple[str, nn.Linear]:
    linears = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise WeightsError(f"{type(model).__name__} has no final nn.Linear classifier to take features before.")
    return linears[-1]


def _replace(model: nn.Module, dotted: str, new: nn.Module) -> None:
    parent, _, leaf = dotted.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, new)


def build_backbone(
    weights: str,
    weights_file: str | Path | None = None,
    sha256: str | None = None,
    arch: str = "mobilenet_v2",
    input_size: int | None = None,
) -> nn.Module:
    """torchvision ``arch`` with the requested weights and its classifier removed: (N, 3, S, S) -> (N, D).

    Eval mode, gradients off; ``model.feature_dim`` is D, ``model.arch`` the arch name."""
    check_arch(arch)
    size = input_size or preprocessing(arch, weights)["input_size"]
    kwargs = {
        k: v for prefix, f in BUILD_OPTIONS.items() if arch.startswith(prefix) for k, v in f(size, weights).items()
    }
    if weights == RANDOM_WEIGHTS:
        torch.manual_seed(0)  # the same random backbone every time
    model = _models().get_model(arch, weights=None, **kwargs)
    classifier_name, classifier = _last_linear(model)
    dropped = {f"{classifier_name}.weight", f"{classifier_name}.bias"}
    if weights != RANDOM_WEIGHTS:
        source = weights_file or weights
        state = load_state_dict(source, sha256, arch)
        expected = model.state_dict()
        missing = sorted(set(expected) - set(state) - dropped)
        unexpected = sorted(set(state) - set(expected))
        wrong = sorted(
            k for k in (set(expected) & set(state)) - dropped if tuple(state[k].shape) != tuple(expected[k].shape)
        )
        if missing or unexpected or wrong:
            raise WeightsError(
                f"backbone weights {source} do not fit torchvision's {arch}: "
                f"{len(missing)} missing keys {missing[:3]}, {len(unexpected)} unexpected keys {unexpected[:3]}, "
                f"{len(wrong)} with wrong shapes {wrong[:3]}. Use a {arch} state_dict (or fix backbone.arch)."
            )
        model.load_state_dict({k: v for k, v in state.items() if k not in dropped}, strict=False)
    _replace(model, classifier_name, nn.Identity())
    model.feature_dim = classifier.in_features
    model.arch = arch
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def reference_extractor(model: nn.Module) -> nn.Module:
    """The plain eager extractor (NCHW, BN separate): the reference the fast path is tested against."""
    return model.eval()


def fast_extractor(model: nn.Module, device: torch.device) -> nn.Module:
    """Conv-BN folded (when torch.fx can trace the arch), channels_last extractor on ``device``."""
    from torch.fx.experimental.optimization import fuse

    try:
        net = fuse(model.eval())  # a GraphModule with BN folded into the convs (a copy: ``model`` is unchanged)
    except Exception as exc:  # torch.fx cannot trace every arch; eager is correct, only slower
        log.info("%s: no conv-BN folding (torch.fx: %s); running the eager model", type(model).__name__, exc)
        net = model
    return net.to(device).to(memory_format=torch.channels_last).eval()
