"""Per-run curvature diagnostics from files: modes per head, the seeded subset, file contents."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from normscape.curvature.adaptive_sharpness import read_adaptive_sharpness
from normscape.curvature.jobs import compute_curvature_diagnostics, smoothness_probe
from normscape.curvature.spectrum import hessian_spectrum, read_spectrum_h5
from normscape.features import store
from normscape.landscape.run_inputs import subset_indices
from normscape.models.heads import build_head

SPECTRUM = {
    "samples": 256,
    "top_k": 3,
    "slq_steps": 10,
    "slq_runs": 1,
    "block_steps": 5,
    "block_probes": 2,
    "dtype": "float64",
    "batchnorm_train_mode": True,
}
SHARPNESS = {
    "samples": 256,
    "radii": [0.01, 0.02],
    "average_radii": [0.05],
    "ball": "linf",
    "noise_samples": 2,
    "ascent_steps": 2,
    "dtype": "float64",
    "batchnorm_train_mode": True,
}


def saved_head(path, norm, features_file):
    torch.manual_seed(0)
    model = build_head(norm, 1280, 16, 10)
    x, _ = store.load_split(features_file, "train")
    model.train()
    with torch.no_grad():
        model(torch.from_numpy(x[:512]))  # BatchNorm running statistics of real inputs
    config = {"norm": norm, "in_features": 1280, "hidden": 16, "num_classes": 10, "dropout": 0.0}
    torch.save({"state_dict": model.state_dict(), "head_config": config, "epoch": 0, "metrics": {}}, path)
    return model.eval()


@pytest.mark.slow
@pytest.mark.parametrize("norm", ["batch", "layer"])
def test_curvature_diagnostics_files(tmp_path, features_file, norm):
    model = saved_head(tmp_path / "model_final.pt", norm, features_file)
    out = compute_curvature_diagnostics(
        tmp_path / "model_final.pt",
        features_file,
        32,
        SPECTRUM,
        SHARPNESS,
        tmp_path / "spectrum.h5",
        tmp_path / "spectrum.json",
        tmp_path / "adaptive_sharpness.json",
        seed=0,
    )
    modes = {"eval", "train"} if norm == "batch" else {"eval"}
    spectra = read_spectrum_h5(tmp_path / "spectrum.h5")
    assert set(spectra) == modes == set(json.loads((tmp_path / "spectrum.json").read_text()))
    adaptive = read_adaptive_sharpness(tmp_path / "adaptive_sharpness.json")
    assert set(adaptive) == modes and set(adaptive["eval"]["worst"]) == {"0.01", "0.02"}
    assert set(adaptive["eval"]["average"]) == {"0.05"}
    # the same numbers as a direct call on the seeded subset of the training set
    x, y = store.load_split(features_file, "train")
    idx = subset_indices(len(x), 256, 0)
    direct = hessian_spectrum(
        model,
        torch.from_numpy(x[idx]),
        torch.from_numpy(y[idx]).long(),
        mode="eval",
        top_k=3,
        slq_steps=10,
        block_steps=5,
        block_probes=2,
    )
    np.testing.assert_allclose(spectra["eval"]["summary"]["top_eigenvalues"], direct["summary"]["top_eigenvalues"])
    assert out["spectrum"]["eval"]["top_eigenvalues"][0] > 0
    if norm == "batch":
        assert spectra["train"]["summary"]["batch_size"] == 32
        assert spectra["train"]["summary"]["top_eigenvalues"] != spectra["eval"]["summary"]["top_eigenvalues"]


def test_smoothness_probe_from_config():
    probe = smoothness_probe({"enabled": True, "every": 50, "multipliers": [1, 2], "direction": "gradient"})
    assert probe.every == 50 and probe.multipliers == (1.0, 2.0) and probe.direction == "gradient"
    assert probe.dtype == torch.float32
    assert smoothness_probe({"enabled": False}) is None


def test_curvature_rule_records_provenance_and_a_diverged_run(tmp_path, features_file):
    """compute_curvature (the rule's entry): provenance in every output; a diverged run gets null numbers and
    the reason instead of a traceback."""
    from normscape.curvature.jobs import compute_curvature

    saved_head(tmp_path / "model_final.pt", "batch", features_file)
    state = torch.load(tmp_path / "model_final.pt", weights_only=False)
    state["provenance"] = {"identity": "run-abc", "features_identity": store.identity(features_file)}
    torch.save(state, tmp_path / "model_final.pt")
    outs = [tmp_path / name for name in ("spectrum.h5", "spectrum.json", "adaptive_sharpness.json")]
    compute_curvature(tmp_path / "model_final.pt", features_file, 32, SPECTRUM, SHARPNESS, *outs)
    for path in outs[1:]:
        record = json.loads(path.read_text())
        assert record["provenance"]["run_identity"] == "run-abc" and {"eval", "train"} <= set(record)
    assert set(read_spectrum_h5(outs[0])) == {"eval", "train"}

    state["state_dict"] = {k: v * float("nan") if v.is_floating_point() else v for k, v in state["state_dict"].items()}
    state.update(diverged=True, diverged_reason="loss exploded at epoch 3")
    torch.save(state, tmp_path / "model_final.pt")
    result = compute_curvature(tmp_path / "model_final.pt", features_file, 32, SPECTRUM, SHARPNESS, *outs)
    assert result["diverged"] and "epoch 3" in result["reason"]
    for path in outs[1:]:
        record = json.loads(path.read_text())
        assert record["diverged"] and "eval" not in record and record["provenance"]["run_identity"] == "run-abc"
    assert read_spectrum_h5(outs[0]) == {}
