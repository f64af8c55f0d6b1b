"""Hessian spectrum (top-k, SLQ density, per-layer blocks, BatchNorm eval/train) vs the explicit Hessian."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import dense_hessian, trained_head

from normscape.curvature.head_loss import HeadLoss
from normscape.curvature.spectrum import (
    density_grid,
    density_moments,
    hessian_spectrum,
    lanczos,
    rademacher,
    read_spectrum_h5,
    ritz,
    slq,
    spectral_density,
    write_spectrum_h5,
)
from normscape.models.heads import build_head


def small_head(norm: str, seed: int = 0):
    """16-d input, hidden 8, 10 classes, float32."""
    return trained_head(norm, 16, 8, 10, samples=96, batch=16, steps=30, seed=seed, dtype=torch.float32)


explicit = dense_hessian


@pytest.mark.slow
@pytest.mark.parametrize("norm", ["none", "layer", "frn_learned_eps"])
def test_lanczos_top_k_and_moments_match_the_explicit_hessian(norm):
    model, x, y = small_head(norm)
    loss = HeadLoss(model, x, y)
    h = explicit(loss)
    np.testing.assert_allclose(loss.hvp(torch.ones(loss.dim, dtype=torch.float64)), h.sum(1), rtol=1e-10, atol=1e-12)
    eigs = torch.linalg.eigvalsh(h).numpy()[::-1]
    res = hessian_spectrum(model, x, y, top_k=5, slq_steps=80, slq_runs=1, block_steps=40, block_probes=0)
    top = np.asarray(res["summary"]["top_eigenvalues"])
    np.testing.assert_allclose(top, eigs[:5], rtol=1e-7, atol=1e-10)
    assert max(res["summary"]["top_eigenvalue_residual_bounds"]) < 1e-5 * eigs[0]
    # Gauss quadrature: the Ritz rule reproduces v^T H^j v / v^T v of its own start vector exactly (j < 2m)
    v = rademacher(loss.dim, torch.Generator().manual_seed(0))
    alphas, betas = lanczos(loss.hvp, v, 12)
    r = ritz(alphas, betas)
    for j in range(1, 6):
        exact = float(v @ torch.linalg.matrix_power(h, j) @ v / (v @ v))
        assert float(np.sum(r["weights"] * r["values"] ** j)) == pytest.approx(exact, rel=1e-8)


@pytest.mark.slow
def test_slq_density_moments_estimate_trace_moments():
    model, x, y = small_head("layer")
    loss = HeadLoss(model, x, y)
    h = explicit(loss)
    eigs = torch.linalg.eigvalsh(h).numpy()
    nodes, weights, _ = slq(loss.hvp, loss.dim, steps=30, runs=100, seed=3)
    assert np.allclose(weights.sum(1), 1.0)
    est = density_moments(nodes, weights, orders=(1, 2))
    exact = [np.mean(eigs), np.mean(eigs**2)]
    # unbiased estimates; 100 Rademacher starts: within ~10 % of tr(H^j)/P
    np.testing.assert_allclose(est, exact, rtol=0.12)
    grid = density_grid(nodes, 4000, margin=0.5)
    sigma = 0.01 * (eigs.max() - eigs.min())
    dens = spectral_density(nodes, weights, grid, sigma)
    dx = grid[1] - grid[0]
    assert np.sum(dens) * dx == pytest.approx(1.0, abs=1e-3)
    assert np.sum(dens * grid) * dx == pytest.approx(est[0], rel=1e-3, abs=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("norm", ["none", "batch", "frn_learned_eps"])
def test_block_top_eigenvalue_and_trace(norm):
    model, x, y = small_head(norm)
    loss = HeadLoss(model, x, y)
    h = explicit(loss)
    res = hessian_spectrum(model, x, y, top_k=3, slq_steps=10, block_steps=200, block_probes=100, seed=1)
    blocks = res["summary"]["blocks"]
    assert list(blocks) == (["fc1", "fc2"] if norm == "none" else ["fc1", "norm", "fc2"])
    for name, numbers in blocks.items():
        idx = torch.cat([torch.arange(s.start, s.stop) for s in loss.block_slices()[name]])
        hb = h[idx][:, idx]
        assert numbers["size"] == len(idx)
        assert numbers["top_eigenvalue"] == pytest.approx(torch.linalg.eigvalsh(hb).max().item(), rel=1e-7, abs=1e-10)
        assert abs(numbers["trace"] - torch.trace(hb).item()) < 4 * numbers["trace_sem"] + 1e-9


@pytest.mark.slow
def test_batchnorm_train_mode_is_the_mean_over_training_batches_and_differs_from_eval():
    model, x, y = small_head("batch")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train = HeadLoss(model, x, y, mode="train", batch_size=16)
    # reference: the model itself in train mode, one forward per training-size batch, losses averaged
    ref_model = build_head("batch", 16, 8, 10).double()
    ref_model.load_state_dict(model.state_dict())
    ref_model.train()
    chunks = [
        torch.nn.functional.cross_entropy(ref_model(x[i : i + 16].double()), y[i : i + 16]) for i in range(0, 96, 16)
    ]
    assert train.loss(train.theta).item() == pytest.approx(torch.stack(chunks).mean().item(), rel=1e-12)
    h_train = explicit(train)
    res_train = hessian_spectrum(model, x, y, mode="train", batch_size=16, top_k=3, slq_steps=80, block_probes=0)
    res_eval = hessian_spectrum(model, x, y, mode="eval", top_k=3, slq_steps=80, block_probes=0)
    assert res_train["summary"]["mode"] == "train" and res_eval["summary"]["mode"] == "eval"
    assert res_train["summary"]["batch_size"] == 16
    np.testing.assert_allclose(
        res_train["summary"]["top_eigenvalues"], torch.linalg.eigvalsh(h_train).numpy()[::-1][:3], rtol=1e-7
    )
    assert abs(res_train["summary"]["top_eigenvalues"][0] / res_eval["summary"]["top_eigenvalues"][0] - 1) > 1e-3
    for k, v in model.state_dict().items():  # running statistics untouched by the train-mode function
        assert torch.equal(v, before[k]), k


@pytest.mark.slow
def test_spectrum_file_round_trip(tmp_path):
    model, x, y = small_head("batch")
    results = {
        mode: hessian_spectrum(model, x, y, mode=mode, batch_size=16, slq_steps=8, block_steps=4, block_probes=2)
        for mode in ("eval", "train")
    }
    write_spectrum_h5(tmp_path / "spectrum.h5", results)
    back = read_spectrum_h5(tmp_path / "spectrum.h5")
    assert set(back) == {"eval", "train"}
    for mode in back:
        np.testing.assert_array_equal(back[mode]["nodes"], results[mode]["nodes"])
        assert back[mode]["summary"] == results[mode]["summary"]
    # deterministic: the same seed gives the same numbers
    again = hessian_spectrum(model, x, y, mode="eval", slq_steps=8, block_steps=4, block_probes=2)
    np.testing.assert_array_equal(again["nodes"], results["eval"]["nodes"])


@pytest.mark.parametrize("norm", ["none", "batch", "layer", "group", "frn", "frn_learned_eps"])
def test_head_loss_is_the_models_eval_loss_for_every_head(norm):
    model, x, y = small_head(norm)
    ref = torch.nn.functional.cross_entropy(model.double()(x.double()), y).item()
    model.float()
    loss = HeadLoss(model, x, y)
    assert loss.loss(loss.theta).item() == pytest.approx(ref, rel=1e-12)
    assert set(loss.block_slices()) == ({"fc1", "fc2"} if norm == "none" else {"fc1", "norm", "fc2"})
    assert sum(s.stop - s.start for b in loss.block_slices().values() for s in b) == loss.dim


@pytest.mark.parametrize("norm", ["none", "batch", "frn_learned_eps"])
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_tail_hvp_fast_path_equals_the_restricted_full_hvp(norm, mode):
    model, x, y = small_head(norm)
    loss = HeadLoss(model, x, y, mode=mode, batch_size=16)
    n1 = loss.fc1_size
    v = torch.randn(loss.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    v[:n1] = 0
    np.testing.assert_allclose(loss.tail_hvp(v[n1:]), loss.hvp(v)[n1:], rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("norm", ["none", "batch", "layer", "group", "rms", "frn", "frn_learned_eps"])
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_factored_hvp_equals_autodiff_through_the_whole_head(norm, mode):
    model, x, y = small_head(norm)
    loss = HeadLoss(model, x, y, mode=mode, batch_size=16)
    g = torch.Generator().manual_seed(3)
    for _ in range(2):  # the second product reuses the cached pre-activations
        v = torch.randn(loss.dim, dtype=torch.float64, generator=g)
        np.testing.assert_allclose(loss.hvp(v), loss.hvp_autodiff(v), rtol=1e-10, atol=1e-12)
    # away from the model's parameters (pre-activations recomputed there, the cache untouched)
    at = loss.theta + 0.1 * torch.randn(loss.dim, dtype=torch.float64, generator=g)
    v = torch.randn(loss.dim, dtype=torch.float64, generator=g)
    np.testing.assert_allclose(loss.hvp(v, at=at), loss.hvp_autodiff(v, at=at), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(loss.hvp(v), loss.hvp_autodiff(v), rtol=1e-10, atol=1e-12)
    # and in float32, as close to the float64 product as torch.func's float32 product is (to float32 rounding;
    # GroupNorm's one-unit groups here amplify rounding to ~3e-5 in both)
    loss32 = HeadLoss(model, x, y, mode=mode, batch_size=16, dtype=torch.float32)
    exact = loss.hvp(v)
    error = lambda product: float((product.double() - exact).norm() / exact.norm())  # noqa: E731
    assert error(loss32.hvp(v.float())) < max(1e-5, 2 * error(loss32.hvp_autodiff(v.float())))


@pytest.mark.slow
def test_float32_products_give_the_float64_spectrum_to_float32_accuracy():
    model, x, y = small_head("layer")
    kw = dict(top_k=3, slq_steps=40, block_steps=20, block_probes=4)
    a = hessian_spectrum(model, x, y, dtype=torch.float64, **kw)["summary"]
    b = hessian_spectrum(model, x, y, dtype=torch.float32, **kw)["summary"]
    assert b["dtype"] == "float32"
    np.testing.assert_allclose(b["top_eigenvalues"], a["top_eigenvalues"], rtol=1e-4)
    for block in a["blocks"]:
        assert b["blocks"][block]["top_eigenvalue"] == pytest.approx(a["blocks"][block]["top_eigenvalue"], rel=1e-4)


def test_derivatives_do_not_load_torch_dynamo():
    """Gradients and Hessian-vector products go through torch.autograd: torch.func's transforms import
    torch._dynamo on first use, ~1.4 s of CPU in every job that probes a head (training with the smoothness probe,
    curvature, sharpness). Checked in a fresh process, for a BatchNorm head in train mode (the longest path)."""
    import subprocess
    import sys

    script = """
import sys, torch
from normscape.curvature.head_loss import HeadLoss
from normscape.models.heads import build_head
model = build_head(norm="batch", in_features=12, hidden=8, num_classes=3, dropout=0.0)
loss = HeadLoss(model, torch.randn(32, 12), torch.randint(0, 3, (32,)), mode="train", batch_size=8)
loss.value_and_grad(loss.theta); loss.grad(loss.theta)
loss.hvp(torch.randn(loss.dim)); loss.tail_hvp(torch.randn(loss.dim - loss.fc1_size))
print("torch._dynamo" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.slow
def test_slq_trace_standard_error_matches_repeated_sampling():
    """slq_trace_sem (sd of the per-run traces / sqrt(runs)) is the spread of slq_trace over independent seeds,
    around the exact trace; with one run it is None (no error estimate), never a fake 0."""
    model, x, y = small_head("layer")
    exact = torch.trace(explicit(HeadLoss(model, x, y))).item()
    runs, repeats = 4, 60
    kw = dict(top_k=1, slq_steps=3, slq_runs=runs, block_steps=2, block_probes=0)
    summaries = [hessian_spectrum(model, x, y, seed=s, **kw)["summary"] for s in range(repeats)]
    traces = np.array([r["slq_trace"] for r in summaries])
    sems = np.array([r["slq_trace_sem"] for r in summaries])
    assert np.sqrt(np.mean(sems**2)) == pytest.approx(traces.std(ddof=1), rel=0.3)
    assert abs(traces.mean() - exact) < 4 * traces.std(ddof=1) / np.sqrt(repeats)
    one = hessian_spectrum(model, x, y, top_k=1, slq_steps=3, slq_runs=1, block_steps=2, block_probes=0)["summary"]
    assert one["slq_trace_sem"] is None
