"""The native head step (normscape.headstep) against the plain path it replaces, torch autograd.

Both compute the same function; they may differ in float32 rounding only. Checked per batch (loss, correct
predictions, every gradient element, BatchNorm's running statistics), over whole runs, at the corners (FRN's
TLU ties, a learned eps, NaN propagation), and for the fallbacks (no train rule, dropout, unusual modules).
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from normscape import headstep
from normscape.norms import NORMS, TRAIN_RULES
from normscape.train import Trainer, load_features

NATIVE_NORMS = [name for name, spec in NORMS.items() if spec.train_rule]


@pytest.fixture(scope="module")
def data(features_file):
    return {k: (x[:700], y[:700]) for k, (x, y) in load_features(features_file).items()}


def pair(data, norm, hidden=40, **kw):
    """A trainer on the native step and one on autograd, from the same initialisation."""
    native = Trainer(data, norm, 0, 1, 64, 1e-3, hidden=hidden, **kw)
    plain = Trainer(data, norm, 0, 1, 64, 1e-3, hidden=hidden, native_step=False, **kw)
    assert native.head_step is not None and plain.head_step is None
    assert torch.equal(native.flat_param, plain.flat_param)
    return native, plain


def assert_same_gradient(native, plain):
    # absolute tolerance on the scale of the whole gradient: under BatchNorm fc1's bias gradient is exactly 0 in
    # exact arithmetic, so both paths hold rounding noise there
    scale = float(plain.flat_grad.abs().max())
    for name, p, q in zip(native.names, native.params, plain.params):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-5 * scale, msg=f"gradient of {name}")


def test_every_rule_is_used_by_a_registered_norm():
    assert NATIVE_NORMS and {NORMS[n].train_rule for n in NATIVE_NORMS} == set(TRAIN_RULES)
    assert headstep._native is not None, "the native head step is not built (pip install -e .)"


@pytest.mark.parametrize("hidden", [40, 64])  # 40: GroupNorm's groups of 2, dot products with a remainder
@pytest.mark.parametrize("norm", NATIVE_NORMS)
def test_native_step_equals_autograd(data, norm, hidden):
    native, plain = pair(data, norm, hidden)
    x, y = data["train"]
    for rows in (slice(0, 64), slice(64, 128), slice(128, 165)):  # a short last batch too
        loss, correct = native.compute_gradient(x[rows], y[rows])
        ref_loss, ref_correct = plain.compute_gradient(x[rows], y[rows])
        assert loss == pytest.approx(ref_loss, rel=1e-6)
        assert correct == ref_correct
        assert_same_gradient(native, plain)
    if norm == "batch":  # the running statistics move as torch's BatchNorm moves them
        torch.testing.assert_close(native.model.norm.running_mean, plain.model.norm.running_mean)
        torch.testing.assert_close(native.model.norm.running_var, plain.model.norm.running_var)
        assert int(native.model.norm.num_batches_tracked) == int(plain.model.norm.num_batches_tracked) == 3
    assert native.flat_grad.abs().sum() > 0 and native.flat_grad.isfinite().all()


@pytest.mark.parametrize("norm", ["batch", "layer"])
def test_native_training_follows_autograd_training(data, norm):
    """Whole runs: the two paths' metrics and parameters agree to what float32 rounding lets drift in 3 epochs,
    and two native runs are identical (determinism). (FRN's runs are chaotic — its gradients jump by ~1/sqrt(eps)
    near zero — so rounding-level differences grow within epochs there: FRN is checked step by step above.)"""
    runs = {}
    for name, native_step in (("native", True), ("again", True), ("autograd", False)):
        tr = Trainer(data, norm, 0, 3, 64, 1e-3, hidden=32, clip_grad_norm=1.0, native_step=native_step)
        tr.fit()
        runs[name] = tr
    native, again, autograd = runs["native"], runs["again"], runs["autograd"]
    assert torch.equal(native.flat_param, again.flat_param) and native.metrics == [
        {**row, "epoch_time_s": mine["epoch_time_s"]} for row, mine in zip(again.metrics, native.metrics)
    ]
    for row, ref in zip(native.metrics, autograd.metrics):
        for key in ("train_loss", "val_loss", "grad_norm_median"):
            assert row[key] == pytest.approx(ref[key], rel=1e-4)
        assert abs(row["val_acc"] - ref["val_acc"]) <= 0.005
    for name, p, q in zip(native.names, native.params, autograd.params):
        if norm == "batch" and name == "fc1.bias":
            continue  # BatchNorm removes it: its gradient is rounding noise, which Adam turns into a random walk
        torch.testing.assert_close(p, q, rtol=1e-3, atol=1e-5, msg=name)
    assert native.metrics[-1]["val_acc"] > 0.8  # it learned the separable classes


def test_frn_tie_and_learned_eps_match_autograd(data):
    """TLU ties (y == tau: torch.maximum splits the gradient) and the learned eps's gradient (through |eps_l|)."""
    native, plain = pair(data, "frn_learned_eps", 32)
    for tr in (native, plain):
        with torch.no_grad():  # unit 0: z = 0 for every row, so y = beta = 0.5 = tau, a tie in every row
            tr.model.fc1.weight[0].zero_()
            tr.model.fc1.bias[0].zero_()
            tr.model.norm.bias[0] = tr.model.norm.tau[0] = 0.5
            tr.model.norm.eps_l.fill_(-3e-4)  # negative: d|eps_l|/d eps_l = -1
    x, y = data["train"]
    native.compute_gradient(x[:64], y[:64])
    plain.compute_gradient(x[:64], y[:64])
    assert_same_gradient(native, plain)
    assert native.model.norm.tau.grad[0] != 0 and native.model.norm.eps_l.grad.abs() > 0


@pytest.mark.parametrize("norm", NATIVE_NORMS)
def test_nan_features_give_a_nan_loss(data, norm):
    """A diverging run must see NaN in its loss on both paths (the ReLU keeps NaN, as torch's does)."""
    native, plain = pair(data, norm, 32)
    x, y = data["train"]
    xb = x[:64].clone()
    xb[3, 5] = float("nan")
    assert np.isnan(native.compute_gradient(xb, y[:64])[0]) and np.isnan(plain.compute_gradient(xb, y[:64])[0])


def test_falls_back_to_autograd_with_a_reason(data, caplog):
    with caplog.at_level(logging.INFO, logger="normscape.headstep"):
        assert Trainer(data, "rms", 0, 1, 64, 1e-3, hidden=32).head_step is None
        assert "'rms' has no train_rule" in caplog.text
        assert Trainer(data, "batch", 0, 1, 64, 1e-3, hidden=32, dropout=0.1).head_step is None
        assert "dropout > 0" in caplog.text
        odd = Trainer(data, "batch", 0, 1, 64, 1e-3, hidden=32, native_step=False)
        odd.model.norm.momentum = None  # a cumulative average: not what the kernel computes
        assert headstep.HeadStep.build(odd.model) is None
        assert "momentum=None" in caplog.text


def test_kernel_rejects_inconsistent_input(data):
    native, _ = pair(data, "batch", 32)
    x, y = data["train"]
    with pytest.raises(ValueError, match="label 10 outside"):
        native.compute_gradient(x[:64], torch.full((64,), 10))
    with pytest.raises(ValueError, match="a batch of one row"):
        native.compute_gradient(x[:1], y[:1])
    with pytest.raises(ValueError, match="labels must hold 64 int64 values"):
        native.compute_gradient(x[:64], y[:64].to(torch.int32))


@pytest.mark.parametrize("norm", ["batch", "layer"])
def test_settings_changed_on_a_built_model_are_followed(data, norm):
    """eps and momentum are read from the module at every step, and eval mode falls back to autograd."""
    native, plain = pair(data, norm, 32)
    for tr in (native, plain):
        tr.model.norm.eps = 0.1
        if norm == "batch":
            tr.model.norm.momentum = 0.5
    x, y = data["train"]
    assert native.compute_gradient(x[:64], y[:64])[0] == pytest.approx(plain.compute_gradient(x[:64], y[:64])[0])
    assert_same_gradient(native, plain)
    if norm == "batch":
        torch.testing.assert_close(native.model.norm.running_var, plain.model.norm.running_var)
    for tr in (native, plain):
        tr.model.eval()  # running statistics: not what the kernel computes, so the step takes autograd
    before = {k: v.clone() for k, v in native.model.norm.state_dict().items()}
    assert native.compute_gradient(x[:64], y[:64])[0] == pytest.approx(plain.compute_gradient(x[:64], y[:64])[0])
    assert_same_gradient(native, plain)
    for key, value in native.model.norm.state_dict().items():  # eval mode: no running-statistics update
        assert torch.equal(value, before[key]), key
