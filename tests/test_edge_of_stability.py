"""Adam's preconditioned sharpness: the preconditioner Adam divides by, lambda_1(P^-1 H) vs dense float64
eigen-decompositions, the threshold vs the iterated quadratic, no effect on training, summary and files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import dense_hessian, small_data, train_with_and_without_probe, trained_head

from normscape.curvature.edge_of_stability import (
    PreconditionedSharpnessProbe,
    adam_preconditioner,
    preconditioned_top_eigenvalue,
    read_preconditioned_sharpness_h5,
    records_to_arrays,
    stability_threshold,
    summarize,
    write_preconditioned_sharpness,
)
from normscape.curvature.head_loss import HeadLoss
from normscape.models.heads import build_head
from normscape.training.trainer import Trainer


def dense_top(loss: HeadLoss, precond: torch.Tensor) -> float:
    s = precond.double().rsqrt()
    return float(torch.linalg.eigvalsh(s[:, None] * dense_hessian(loss) * s[None, :])[-1])


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_adam_preconditioner_is_what_adam_divides_by(weight_decay):
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(50, dtype=torch.float64))
    opt = torch.optim.Adam([p], lr=1e-2, betas=(0.9, 0.99), eps=1e-6, weight_decay=weight_decay)
    for t in range(1, 6):
        p.grad = torch.randn(50, dtype=torch.float64) * 10.0 ** (t - 3)  # v must follow scale changes
        precond = adam_preconditioner(opt, p, p.grad)
        before = p.detach().clone()
        opt.step()
        m_hat = opt.state[p]["exp_avg"] / (1 - 0.9**t)
        torch.testing.assert_close(p.detach() - before, -1e-2 * m_hat / precond, rtol=1e-10, atol=1e-15)
    with pytest.raises(ValueError, match="amsgrad"):
        adam_preconditioner(torch.optim.Adam([p], amsgrad=True), p, p.grad)


@pytest.mark.slow
@pytest.mark.parametrize("norm, mode", [("none", "eval"), ("batch", "train"), ("layer", "eval")])
def test_top_eigenvalues_match_the_dense_decomposition(norm, mode):
    model, x, y = trained_head(norm, in_features=6, hidden=5, classes=3, samples=24, batch=8, steps=30)
    loss = HeadLoss(model, x, y, mode=mode, batch_size=8, dtype=torch.float64)
    if mode == "train":
        assert loss.chunks == 3  # BatchNorm over three chunks of 8, as the update sees them
    g = torch.Generator().manual_seed(1)
    precond = 10.0 ** (-3 + 2 * torch.rand(loss.dim, generator=g, dtype=torch.float64))  # Adam-like spread
    for p in (precond, torch.ones(loss.dim, dtype=torch.float64)):
        expected = dense_top(loss, p)
        r = preconditioned_top_eigenvalue(loss, p, max_steps=loss.dim, tol=1e-8, seed=3)
        assert r["converged"] and r["residual_bound"] <= 1e-8 * abs(expected) * 1.01
        assert r["top_eigenvalue"] == pytest.approx(expected, rel=1e-7)
        # the probe's settings: tol 1e-3, few steps; the bound holds whatever it reports
        short = preconditioned_top_eigenvalue(loss, p, max_steps=20, tol=1e-3, seed=3)
        assert abs(short["top_eigenvalue"] - expected) <= short["residual_bound"] + 1e-10 * abs(expected)
        assert short["lanczos_steps"] <= 20
    # preconditioning changes the number: the two are different measures
    assert dense_top(loss, precond) > 10 * dense_top(loss, torch.ones(loss.dim, dtype=torch.float64))


def momentum_update_with_frozen_preconditioner(a, precond, lr, beta1, iterations):
    x = torch.ones(a.shape[0], dtype=torch.float64)
    m = torch.zeros_like(x)
    for _ in range(iterations):
        m = beta1 * m + (1 - beta1) * (a @ x)
        x = x - lr * m / precond
    return float(x.norm())


@pytest.mark.parametrize("beta1", [0.0, 0.5, 0.9])
def test_threshold_separates_convergence_from_divergence_on_a_quadratic(beta1):
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=torch.float64))
    a0 = q @ torch.diag(torch.tensor([1.0, 1.5, 2.0, 3.0, 4.5, 6.0], dtype=torch.float64)) @ q.T  # SPD, not diagonal
    precond = 10.0 ** (-1 + torch.rand(6, generator=g, dtype=torch.float64))
    s = precond.rsqrt()
    lam0 = float(torch.linalg.eigvalsh(s[:, None] * a0 * s[None, :])[-1])  # lambda_1(P^-1 A0)
    lr = 1e-2
    for factor, converges in ((0.95, True), (1.05, False)):
        a = a0 * factor * stability_threshold(lr, beta1) / lam0  # lambda_1(P^-1 A) = factor x threshold
        final = momentum_update_with_frozen_preconditioner(a, precond, lr, beta1, iterations=600)
        assert (final < 1e-6) if converges else (final > 1e6), (factor, final)
    # exactly at the threshold the 2x2 iteration of (x, lr m) along the top direction has spectral radius 1
    la = (2 + 2 * beta1) / (1 - beta1)
    step = np.array([[1 - (1 - beta1) * la, -beta1], [(1 - beta1) * la, beta1]])
    assert np.abs(np.linalg.eigvals(step)).max() == pytest.approx(1.0, abs=1e-6)
    assert stability_threshold(1e-3, 0.9) == pytest.approx(38 / 1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("norm", ["batch", "none"])
def test_probe_leaves_training_unchanged_and_measures_the_run(norm):
    data = small_data()
    kw = dict(norm=norm, seeds=0, epochs=2, batch_size=32, lr=1e-2, hidden=8, clip_grad_norm=1.0, weight_decay=1e-3)
    x, y = data["train"][0][:64], data["train"][1][:64]
    probe = PreconditionedSharpnessProbe(x, y, batch_size=32, every=4, lanczos_steps=30, tol=1e-4, dtype=torch.float64)
    probe.keep_vectors = True
    train_with_and_without_probe(data, probe, **kw)
    # the probe's Lanczos starts come from its own generator: the global stream is where training alone leaves it
    states = []
    for trainer in (
        Trainer(data, **kw),
        Trainer(data, probe=PreconditionedSharpnessProbe(x, y, 32, every=3, lanczos_steps=5), **kw),
    ):
        torch.manual_seed(123)
        trainer.fit()
        states.append(torch.get_rng_state())
    assert torch.equal(*states)
    a = probe.arrays()
    assert a["step"].tolist() == list(range(0, 2 * 5, 4))
    np.testing.assert_allclose(a["threshold"], 38 / 1e-2)
    assert probe.seconds > 0 and a["preconditioned_converged"].all() and a["sharpness_converged"].all()
    # each record against the dense Hessian of the head it saw, preconditioned by the P it computed
    for k, (theta, precond) in enumerate(probe.vectors):
        model = build_head(norm, 24, 8, 10).double()
        torch.nn.utils.vector_to_parameters(theta, model.parameters())
        loss = HeadLoss(model, x, y, mode="train", batch_size=32, dtype=torch.float64)
        assert a["preconditioned_sharpness"][k] == pytest.approx(dense_top(loss, precond), rel=2e-4)
        assert a["sharpness"][k] == pytest.approx(dense_top(loss, torch.ones_like(precond)), rel=2e-4)


def test_probe_preconditioner_is_the_trainers_adam_denominator():
    # end to end through the stacked optimiser: theta_{k+1} - theta_k = -lr m_hat_{k+1} / P_k, with m_{k+1} and the
    # step count read at the next probe (clipping and weight decay on, so the gradient must be the one Adam gets)
    data = small_data()
    x, y = data["train"][0][:64], data["train"][1][:64]
    probe = PreconditionedSharpnessProbe(x, y, batch_size=32, every=1, lanczos_steps=2)
    probe.keep_vectors = True
    kw = dict(norm="layer", seeds=0, epochs=1, batch_size=32, lr=1e-2, hidden=8, clip_grad_norm=0.5, weight_decay=0.1)
    trainer = Trainer(data, probe=probe, **kw)
    moments = []

    def spy(view, step, xb, yb):
        state = view.opt.state.get(view.flat_param, {})
        moments.append((float(state["step"]), state["exp_avg"].double().clone()) if state else None)
        probe(view, step, xb, yb)

    trainer.runs[0].probe = spy
    trainer.fit()
    assert moments[0] is None and len(probe.vectors) == 5
    for (theta, precond), (theta_next, _), (t, m) in zip(probe.vectors, probe.vectors[1:], moments[1:]):
        torch.testing.assert_close(theta_next - theta, -1e-2 * m / (1 - 0.9**t) / precond, rtol=1e-4, atol=1e-7)


@pytest.mark.slow
def test_records_survive_resume(tmp_path):
    data = small_data()
    kw = dict(norm="batch", seeds=0, epochs=2, batch_size=32, lr=1e-2, hidden=8)
    x, y = data["train"][0][:64], data["train"][1][:64]
    make = lambda: PreconditionedSharpnessProbe(x, y, batch_size=32, every=3, lanczos_steps=8)  # noqa: E731
    full = make()
    Trainer(data, probe=full, **kw).fit()
    Trainer(data, probe=make(), **{**kw, "epochs": 1}).fit(tmp_path / "last.pt")
    resumed_probe = make()
    resumed = Trainer(data, probe=resumed_probe, **kw)
    resumed.load_state_dict(torch.load(tmp_path / "last.pt", weights_only=False))
    resumed.fit()
    for key, value in full.arrays().items():
        np.testing.assert_array_equal(value, resumed_probe.arrays()[key], err_msg=key)


def hand_made(ratios, threshold=100.0, every=10):
    return records_to_arrays(
        [
            {
                "step": every * (i + 1),
                "lr": 0.38,
                "beta1": 0.9,
                "threshold": threshold,
                "preconditioned_sharpness": r * threshold,
                "preconditioned_sharpness_residual_bound": 0.0,
                "preconditioned_lanczos_steps": 5,
                "preconditioned_converged": True,
                "sharpness": 1.0,
                "sharpness_residual_bound": 0.0,
                "sharpness_lanczos_steps": 5,
                "sharpness_converged": True,
            }
            for i, r in enumerate(ratios)
        ]
    )


def test_summarize_hand_made_trajectories():
    rising = hand_made([0.1, 0.5, 0.85, 0.92, 1.05, 1.3, 0.98, 1.02])
    s = summarize(rising, threshold=100.0, seconds=1.5)
    assert s["probes"] == 8 and s["max_ratio"] == pytest.approx(1.3)
    assert s["first_step_at_threshold"] == 40  # 0.85 is below 0.9, 0.92 is not
    assert s["fraction_within_10pct"] == pytest.approx(4 / 8)  # 0.92, 1.05, 0.98, 1.02
    assert s["late_median_ratio"] == pytest.approx(np.median([1.05, 1.3, 0.98, 1.02]))
    assert s["equilibrated"] and s["threshold"] == 100.0 and s["lr"] == 0.38 and s["beta1"] == 0.9
    assert s["probe_seconds"] == 1.5 and s["converged_fraction"] == 1.0
    # the threshold defaults to the records' own; another threshold rescales every ratio
    assert summarize(rising)["max_ratio"] == pytest.approx(1.3)
    assert summarize(rising, threshold=200.0)["max_ratio"] == pytest.approx(0.65)
    flat = summarize(hand_made([0.1, 0.2, 0.3, float("nan"), 0.3]))
    assert flat["first_step_at_threshold"] is None and flat["fraction_within_10pct"] == 0.0
    assert flat["late_median_ratio"] == pytest.approx(0.3) and not flat["equilibrated"]  # NaN (diverged) skipped
    overshoot = summarize(hand_made([1.0, 1.5, 1.6, 1.4]))
    assert overshoot["late_median_ratio"] == pytest.approx(1.5) and not overshoot["equilibrated"]
    # the probe at step 0 (P = |g|: Adam's first step is lr * sign(g)) is recorded, not summarised
    start = hand_made([50.0])
    start["step"][:] = 0
    with_start = {k: np.concatenate([start[k], rising[k]]) for k in rising}
    s0 = summarize(with_start, threshold=100.0)
    assert s0["probes"] == 9 and s0["max_ratio"] == pytest.approx(1.3) and s0["first_step_at_threshold"] == 40


@pytest.mark.slow
def test_write_read_round_trip_with_and_without_probe(tmp_path):
    data = small_data()
    x, y = data["train"][0][:64], data["train"][1][:64]
    probe = PreconditionedSharpnessProbe(x, y, batch_size=32, every=2, lanczos_steps=6)
    Trainer(data, norm="layer", seeds=0, epochs=1, batch_size=32, lr=1e-2, hidden=8, probe=probe).fit()
    summary = write_preconditioned_sharpness(tmp_path / "p.h5", tmp_path / "p.json", probe, {"head": "layer"})
    back = read_preconditioned_sharpness_h5(tmp_path / "p.h5")
    for key, value in probe.arrays().items():
        np.testing.assert_array_equal(back[key], value, err_msg=key)
    assert back["attrs"]["head"] == "layer" and back["attrs"]["probed"] and back["attrs"]["every"] == 2
    assert summary["probed"] and summary["probes"] == 3 and summary["threshold"] == pytest.approx(3800.0)
    import json

    assert json.loads((tmp_path / "p.json").read_text())["probes"] == 3
    empty = write_preconditioned_sharpness(tmp_path / "e.h5", tmp_path / "e.json", None, {"head": "none"})
    assert empty["probed"] is False and empty["probes"] == 0 and empty["max_ratio"] is None
    back = read_preconditioned_sharpness_h5(tmp_path / "e.h5")
    assert back["step"].shape == (0,) and not back["attrs"]["probed"]
    assert json.loads((tmp_path / "e.json").read_text())["probed"] is False
    with pytest.raises(ValueError, match="positive"):
        PreconditionedSharpnessProbe(x, y, batch_size=32, every=0)
