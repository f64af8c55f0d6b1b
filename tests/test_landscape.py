"""Landscapes: the blocked fast evaluator equals the per-point loop for every head; directions; PCA."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from normscape import planeeval
from normscape.heads import NORM_NAMES, build_head
from normscape.landscape import filter_normalized_direction, flatten, random_directions, trajectory_pca, unflatten
from normscape.planeeval import PlaneEvaluator, loop_evaluate


def trained_like_head(norm: str, x: torch.Tensor) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_head(norm, hidden=32)
    if norm == "batch":  # non-trivial running statistics
        model.train()
        model(x)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


@pytest.mark.parametrize("native", [True, False], ids=["native", "torch"])
@pytest.mark.parametrize("norm", NORM_NAMES)
@pytest.mark.parametrize("ignore", ["biasbn", "none"])
def test_fast_path_equals_per_point_loop(norm, ignore, native):
    torch.manual_seed(1)
    x, y = torch.relu(torch.randn(300, 1280)), torch.randint(0, 10, (300,))
    model = trained_like_head(norm, x)
    d1, d2 = random_directions(model, seed=0, ignore=ignore)
    alphas, betas = np.linspace(-1, 1, 4), np.linspace(-0.5, 1.5, 3)
    loss_ref, acc_ref = loop_evaluate(model, x, y, d1, d2, alphas, betas)
    # odd block sizes so that sample and point blocks end mid-grid
    evaluator = PlaneEvaluator(model, d1, d2, sample_block=128, point_block=5, native=native)
    assert evaluator.native == native  # the kernel is built here (test_native_plane_kernel_is_built)
    loss, acc = evaluator.evaluate(x, y, alphas, betas)
    np.testing.assert_allclose(loss, loss_ref, rtol=1e-5)
    np.testing.assert_allclose(acc, acc_ref, atol=1e-6)


def test_native_plane_kernel_is_built():
    # `pip install -e .` compiles src/normscape/_planekernel.c; without it landscapes use the slower torch ops
    assert planeeval._native is not None, "normscape._planekernel is not built: pip install -e . with a C compiler"


@pytest.mark.parametrize("norm", NORM_NAMES)
@pytest.mark.parametrize("ignore", ["biasbn", "none"])
def test_native_kernel_equals_the_torch_ops_block_by_block(norm, ignore):
    """Every logit of the native kernel is as close to the exact (float64) logits as the torch path's (hidden
    activations, then the batched second layer) — not only the averaged loss — for point blocks that move the
    norm's parameters (ignore=none) and blocks that do not, with a sample count that is no whole number of tiles.
    (The two float32 paths differ from each other by rounding, which the norms' division by a per-sample std
    amplifies for small groups: the exact value is the common reference.)"""
    torch.manual_seed(2)
    x = torch.relu(torch.randn(90, 1280))
    model = trained_like_head(norm, x)
    d1, d2 = random_directions(model, seed=1, ignore=ignore)
    native = PlaneEvaluator(model, d1, d2, native=True)
    if native.rule is None:
        pytest.skip(f"{norm} has no plane rule (per-point loop)")
    zs = native._first_layer(x)
    a, b = torch.tensor([-0.7, 0.0, 0.3, 1.1]).view(-1, 1, 1), torch.tensor([0.2, -1.0, 0.5, 0.9]).view(-1, 1, 1)
    stats = native._statistics(a, b) if native.rule == "moments" else None
    (w2, w2a, w2b), (c2, c2a, c2b) = native.fc2
    w2_all = w2 + a * w2a + b * w2b  # (4, classes, hidden)
    c2_all = (c2 + a.view(-1, 1) * c2a + b.view(-1, 1) * c2b).unsqueeze(2)  # (4, classes, 1)
    h = native._hidden(zs, a, b, torch.empty(4, 32, 90), stats, torch.empty(4, 32, 90))
    assert (h > 0).any()
    torch_ops = torch.baddbmm(c2_all, w2_all, h)
    logits = native._logits_native(zs, a, b, stats, native._padded_second_layer(w2_all, c2_all), torch.empty(4, 10, 90))
    points = zip(a.flatten().tolist(), b.flatten().tolist())
    exact = torch.stack([exact_logits(model, d1, d2, ai, bi, x) for ai, bi in points])
    err_native, err_torch = (logits.double() - exact).abs().max(), (torch_ops.double() - exact).abs().max()
    assert err_native <= 2 * err_torch + 1e-6 * exact.abs().max(), (err_native, err_torch)


def exact_logits(model, d1, d2, a: float, b: float, x: torch.Tensor) -> torch.Tensor:
    """(classes, samples) logits of the model at theta + a d1 + b d2, in float64."""
    from torch.func import functional_call

    double = copy.deepcopy(model).double().eval()
    params = {n: p.detach().double() + a * d1[n].double() + b * d2[n].double() for n, p in double.named_parameters()}
    return functional_call(double, params, (x.double(),)).t()


def test_native_kernel_rejects_inconsistent_buffers():
    z = np.zeros((4, 8), dtype=np.float32)
    a = np.zeros(2, dtype=np.float32)
    e = np.empty(0, dtype=np.float32)
    w2t, c2 = np.zeros((2, 4, 10), dtype=np.float32), np.zeros((2, 10), dtype=np.float32)
    logits = np.zeros((2, 3, 8), dtype=np.float32)
    kernel = planeeval._native.plane_logits
    with pytest.raises(ValueError, match="logits must hold"):
        kernel(z, z, z, a, a, np.zeros(10, dtype=np.float32), 4, 8, e, e, 1, e, e, e, e, False, w2t, c2, 3, 10)
    with pytest.raises(ValueError, match="go together"):
        kernel(z, z, z, a, a, logits, 4, 8, e, e, 1, e, np.ones(4, np.float32), e, e, False, w2t, c2, 3, 10)
    with pytest.raises(ValueError, match="multiple of the class tile"):
        kernel(z, z, z, a, a, logits, 4, 8, e, e, 1, e, e, e, e, False, w2t, c2, 3, 8)
    with pytest.raises(ValueError, match="w2t must hold"):
        kernel(z, z, z, a, a, logits, 4, 8, e, e, 1, e, e, e, e, False, w2t[:1], c2, 3, 10)
    kernel(z, z, z, a, a, logits, 4, 8, e, e, 1, e, e, e, e, False, w2t, c2, 3, 10)  # consistent: runs


def test_filter_normalisation():
    model = build_head("layer", hidden=16)
    d = filter_normalized_direction(model, torch.Generator().manual_seed(0), ignore="biasbn")
    for name, theta in model.named_parameters():
        if theta.dim() == 2:
            torch.testing.assert_close(d[name].norm(dim=1), theta.detach().norm(dim=1))
        else:
            assert torch.count_nonzero(d[name]) == 0, name
    d_all = filter_normalized_direction(model, torch.Generator().manual_seed(0), ignore="none")
    torch.testing.assert_close(d_all["fc1.bias"].norm(), model.fc1.bias.detach().norm())


def test_same_seed_same_directions_for_every_head():
    a = random_directions(build_head("none", hidden=16), seed=3)[0]
    b = random_directions(build_head("frn", hidden=16), seed=3)[0]
    # same Gaussian draws for fc1 (filter-normalised to each head's own weights: compare the unit rows)
    ua = a["fc1.weight"] / a["fc1.weight"].norm(dim=1, keepdim=True)
    ub = b["fc1.weight"] / b["fc1.weight"].norm(dim=1, keepdim=True)
    torch.testing.assert_close(ua, ub)


def test_trajectory_pca_recovers_a_planar_path():
    torch.manual_seed(0)
    e1, e2 = torch.zeros(50), torch.zeros(50)
    e1[3], e2[7] = 1.0, 1.0
    ts = torch.linspace(0, 1, 8)
    path = torch.stack([torch.ones(50) + 2 * (1 - t) * e1 + (1 - t) ** 2 * e2 for t in ts])
    dirs, coords, ratio = trajectory_pca(path)
    recon = path[-1] + coords @ dirs
    torch.testing.assert_close(recon, path, atol=1e-5, rtol=0)
    assert ratio.sum() == pytest.approx(1.0, abs=1e-6)
    torch.testing.assert_close(dirs @ dirs.t(), torch.eye(2), atol=1e-5, rtol=0)


def test_flatten_round_trip():
    model = build_head("frn_learned_eps", hidden=8)
    d = random_directions(model, 0, "none")[0]
    back = unflatten(flatten(d, model), model)
    for k in d:
        torch.testing.assert_close(back[k], d[k])


@pytest.mark.parametrize("classes", [3, 23])
def test_native_kernel_with_class_counts_that_are_not_whole_tiles(classes):
    torch.manual_seed(3)
    x, y = torch.relu(torch.randn(150, 64)), torch.randint(0, classes, (150,))
    model = build_head("layer", in_features=64, hidden=32, num_classes=classes).eval()
    d1, d2 = random_directions(model, seed=0, ignore="none")
    alphas, betas = np.linspace(-1, 1, 3), np.linspace(-1, 1, 5)
    loss_ref, acc_ref = loop_evaluate(model, x, y, d1, d2, alphas, betas)
    evaluator = PlaneEvaluator(model, d1, d2, sample_block=100, point_block=4)
    assert evaluator.native
    loss, acc = evaluator.evaluate(x, y, alphas, betas)
    np.testing.assert_allclose(loss, loss_ref, rtol=1e-5)
    np.testing.assert_allclose(acc, acc_ref, atol=1e-6)
