"""Landscapes: the one plane evaluator equals the per-point loop (and float64) for every norm, registered ones
included; directions; PCA."""

from __future__ import annotations

import copy
import logging

import numpy as np
import pytest
import torch

from normscape.landscape.plane_eval import PlaneEvaluator, loop_evaluate
from normscape.landscape.planes import (
    filter_normalized_direction,
    flatten,
    random_directions,
    trajectory_pca,
    unflatten,
)
from normscape.models.heads import NORM_NAMES, build_head


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


@pytest.mark.parametrize("norm", NORM_NAMES)
@pytest.mark.parametrize("ignore", ["biasbn", "none"])
def test_fast_path_equals_per_point_loop(norm, ignore):
    torch.manual_seed(1)
    x, y = torch.relu(torch.randn(300, 1280)), torch.randint(0, 10, (300,))
    model = trained_like_head(norm, x)
    d1, d2 = random_directions(model, seed=0, ignore=ignore)
    alphas, betas = np.linspace(-1, 1, 4), np.linspace(-0.5, 1.5, 3)
    loss_ref, acc_ref = loop_evaluate(model, x, y, d1, d2, alphas, betas)
    # odd chunk sizes so that sample blocks and point chunks end mid-grid
    loss, acc = PlaneEvaluator(model, d1, d2, points_per_chunk=5, sample_block=128).evaluate(x, y, alphas, betas)
    np.testing.assert_allclose(loss, loss_ref, rtol=1e-5)
    np.testing.assert_allclose(acc, acc_ref, atol=1e-6)
    assert loss.std() > 1e-4  # a plane that is not flat: the points are told apart


@pytest.mark.parametrize("norm", NORM_NAMES)
def test_float32_plane_is_as_close_to_float64_as_the_float32_loop(norm):
    """The float32 evaluator against the exact (float64) per-point loss: as close as the float32 per-point loop
    is — the norms' division by a per-sample std amplifies rounding (GroupNorm's 32 groups of one unit here)."""
    torch.manual_seed(2)
    x, y = torch.relu(torch.randn(200, 1280)), torch.randint(0, 10, (200,))
    model = trained_like_head(norm, x)
    d1, d2 = random_directions(model, seed=1, ignore="none")
    alphas, betas = np.array([-0.7, 0.0, 0.4]), np.array([-1.0, 0.3])
    exact, _ = loop_evaluate(copy.deepcopy(model).double(), x.double(), y, _double(d1), _double(d2), alphas, betas)
    loss, _ = PlaneEvaluator(model, d1, d2).evaluate(x, y, alphas, betas)
    loop32, _ = loop_evaluate(model, x, y, d1, d2, alphas, betas)
    err_fast, err_loop = np.abs(loss - exact).max(), np.abs(loop32 - exact).max()
    assert err_fast <= 2 * err_loop + 1e-6 * np.abs(exact).max(), (err_fast, err_loop)


def _double(direction):
    return {k: v.double() for k, v in direction.items()}


class ScaleNorm(torch.nn.Module):
    """ScaleNorm (Nguyen & Salazar 2019), g * (z - centre) / ||z - centre||, with a 0-d parameter and a buffer:
    the shapes no built-in norm has."""

    def __init__(self, hidden: int):
        super().__init__()
        self.g = torch.nn.Parameter(torch.tensor(16.0**0.5))
        self.register_buffer("centre", torch.linspace(-0.5, 0.5, hidden))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        shifted = z - self.centre
        return self.g * shifted / shifted.norm(dim=-1, keepdim=True).clamp_min(1e-6)


@pytest.fixture
def scale_norm():
    from normscape.models.norms import NORMS, NormSpec, register

    register(NormSpec("test_scale", ScaleNorm, "ScaleNorm", "#000000"))
    yield "test_scale"
    del NORMS["test_scale"]


@pytest.mark.parametrize("ignore", ["biasbn", "none"])
def test_registered_norm_with_a_0d_parameter_and_a_buffer(scale_norm, ignore):
    torch.manual_seed(4)
    x, y = torch.relu(torch.randn(150, 64)), torch.randint(0, 10, (150,))
    model = build_head(scale_norm, in_features=64, hidden=16).eval()
    with torch.no_grad():
        model.norm.centre.mul_(3.0)  # the model's own buffer, not a fresh module's, must be used
        model.norm.g.fill_(2.5)
    d1, d2 = random_directions(model, seed=0, ignore=ignore)
    assert model.norm.g.dim() == 0 and bool(d1["norm.g"] != 0) == (ignore == "none")
    alphas, betas = np.linspace(-1, 1, 5), np.linspace(-0.5, 0.5, 3)
    loss_ref, acc_ref = loop_evaluate(model, x, y, d1, d2, alphas, betas)
    loss, acc = PlaneEvaluator(model, d1, d2, points_per_chunk=4, sample_block=64).evaluate(x, y, alphas, betas)
    np.testing.assert_allclose(loss, loss_ref, rtol=1e-5)
    np.testing.assert_allclose(acc, acc_ref, atol=1e-6)
    assert loss.std() > 1e-3


class NoVmapNorm(ScaleNorm):
    """A norm whose autograd.Function has no vmap rule: torch.vmap refuses it."""

    class Scale(torch.autograd.Function):
        @staticmethod
        def forward(ctx, t, g):
            return t * g

        @staticmethod
        def backward(ctx, grad):
            raise NotImplementedError

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.Scale.apply(super().forward(z), torch.ones(()))


def test_norm_that_cannot_be_vmapped_is_evaluated_point_by_point_with_a_log_line(caplog):
    from normscape.models.norms import NORMS, NormSpec, register

    register(NormSpec("test_no_vmap", NoVmapNorm, "no vmap", "#000001"))
    try:
        torch.manual_seed(5)
        x, y = torch.relu(torch.randn(80, 32)), torch.randint(0, 10, (80,))
        model = build_head("test_no_vmap", in_features=32, hidden=8).eval()
        d1, d2 = random_directions(model, seed=0, ignore="none")
        alphas, betas = np.linspace(-1, 1, 3), np.linspace(-1, 1, 2)
        with caplog.at_level(logging.INFO, logger="normscape.landscape.plane_eval"):
            loss, _ = PlaneEvaluator(model, d1, d2, points_per_chunk=4).evaluate(x, y, alphas, betas)
        assert "'test_no_vmap' cannot run under torch.vmap" in caplog.text
        np.testing.assert_allclose(loss, loop_evaluate(model, x, y, d1, d2, alphas, betas)[0], rtol=1e-5)
    finally:
        del NORMS["test_no_vmap"]


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


@pytest.mark.parametrize("classes", [2, 23])
def test_class_counts_other_than_ten(classes):
    torch.manual_seed(3)
    x, y = torch.relu(torch.randn(150, 64)), torch.randint(0, classes, (150,))
    model = build_head("layer", in_features=64, hidden=32, num_classes=classes).eval()
    d1, d2 = random_directions(model, seed=0, ignore="none")
    alphas, betas = np.linspace(-1, 1, 3), np.linspace(-1, 1, 5)
    loss_ref, acc_ref = loop_evaluate(model, x, y, d1, d2, alphas, betas)
    loss, acc = PlaneEvaluator(model, d1, d2, sample_block=100, points_per_chunk=4).evaluate(x, y, alphas, betas)
    np.testing.assert_allclose(loss, loss_ref, rtol=1e-5)
    np.testing.assert_allclose(acc, acc_ref, atol=1e-6)
