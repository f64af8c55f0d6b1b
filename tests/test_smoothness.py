"""Smoothness along the trajectory: the Adam direction, the measurements vs brute force, no effect on training."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import small_data, train_with_and_without_probe

from normscape.curvature.smoothness import (
    SmoothnessProbe,
    adam_update,
    derived,
    read_smoothness_h5,
    summarize,
    write_smoothness,
    write_smoothness_h5,
)
from normscape.models.heads import build_head
from normscape.training.trainer import Trainer


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_adam_update_is_the_step_adam_takes(weight_decay):
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(50))
    opt = torch.optim.Adam([p], lr=1e-2, weight_decay=weight_decay, fused=True)
    for _ in range(4):
        p.grad = torch.randn(50)
        predicted = adam_update(opt, p, p.grad)
        before = p.detach().clone()
        opt.step()
        np.testing.assert_allclose(
            (p.detach() - before).double(), predicted, rtol=1e-4, atol=4e-7
        )  # float32 rounding of p ~ 1


@pytest.mark.parametrize("norm", ["none", "batch", "layer"])
def test_probe_measures_match_brute_force_and_leave_training_unchanged(norm):
    data = small_data()
    kw = dict(norm=norm, seeds=0, epochs=2, batch_size=32, lr=1e-2, hidden=16, clip_grad_norm=1.0)
    probe = SmoothnessProbe(every=3, multipliers=(0.5, 1.0, 2.0), dtype=torch.float64)
    probe.keep_vectors = True
    train_with_and_without_probe(data, probe, **kw)
    steps_per_epoch = 160 // 32
    assert [r["step"] for r in probe.records] == list(range(0, 2 * steps_per_epoch, 3))
    # brute force at one recorded step: a float64 copy of the head in train mode, autograd gradients
    x, y = data["train"]
    k = 2
    step = probe.records[k]["step"]
    epoch, i = divmod(step, steps_per_epoch)
    perm = torch.randperm(160, generator=torch.Generator().manual_seed(0 * 1_000_003 + epoch + 1))
    xb, yb = x[perm[i * 32 : (i + 1) * 32]].double(), y[perm[i * 32 : (i + 1) * 32]]
    theta, u = probe.vectors[k]
    model = build_head(norm, 24, 16, 10).double().train()

    def loss_grad(flat):
        torch.nn.utils.vector_to_parameters(flat, model.parameters())
        model.zero_grad()
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        return loss.item(), torch.cat([p.grad.flatten() for p in model.parameters()])

    l0, g0 = loss_grad(theta)
    rec = probe.records[k]
    assert rec["loss"] == pytest.approx(l0, rel=1e-12)
    assert rec["grad_norm"] == pytest.approx(g0.norm().item(), rel=1e-10)
    for j, c in enumerate(probe.multipliers):
        lc, gc = loss_grad(theta + c * u)
        assert rec["losses"][j] == pytest.approx(lc, rel=1e-12)
        assert rec["grad_changes"][j] == pytest.approx((gc - g0).norm().item(), rel=1e-9)
    # c = 1 along the Adam update lands on the parameters after that step (clipping included)
    d = derived(probe.arrays())
    assert d["beta"][k] == pytest.approx(
        max(rec["grad_changes"][j] / (c * u.norm().item()) for j, c in enumerate(probe.multipliers)), rel=1e-12
    )
    assert d["loss_range"][k] == pytest.approx(max(l0, *rec["losses"]) - min(l0, *rec["losses"]), rel=1e-12)


def test_update_direction_lands_on_the_next_parameters():
    data = small_data()
    probe = SmoothnessProbe(every=1)
    probe.keep_vectors = True
    trainer = Trainer(data, norm="layer", seeds=1, epochs=1, batch_size=32, lr=1e-2, hidden=16, probe=probe)
    trainer.fit()
    for (theta, u), (theta_next, _) in zip(probe.vectors, probe.vectors[1:]):
        np.testing.assert_allclose(theta + u, theta_next, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_records_survive_resume_and_file_round_trip(tmp_path):
    data = small_data()
    kw = dict(norm="batch", seeds=0, epochs=3, batch_size=32, lr=1e-2, hidden=16)
    full_probe = SmoothnessProbe(every=2)
    Trainer(data, probe=full_probe, **kw).fit()
    first = Trainer(data, probe=SmoothnessProbe(every=2), **{**kw, "epochs": 1})
    first.fit(tmp_path / "last.pt")
    resumed_probe = SmoothnessProbe(every=2)
    resumed = Trainer(data, probe=resumed_probe, **kw)
    resumed.load_state_dict(torch.load(tmp_path / "last.pt", weights_only=False))
    resumed.fit()
    a, b = full_probe.arrays(), resumed_probe.arrays()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    write_smoothness_h5(tmp_path / "smoothness.h5", full_probe, {"head": "batch"})
    back = read_smoothness_h5(tmp_path / "smoothness.h5")
    np.testing.assert_array_equal(back["grad_changes"], a["grad_changes"])
    assert back["attrs"]["direction"] == "update" and back["attrs"]["head"] == "batch"
    s = summarize(a)
    assert s["probes"] == len(a["step"]) and s["beta_median"] > 0 and s["loss_range_p90"] >= s["loss_range_median"]


@pytest.mark.slow
def test_float32_probe_agrees_with_float64():
    data = small_data()
    kw = dict(norm="batch", seeds=0, epochs=1, batch_size=32, lr=1e-2, hidden=16)
    probes = {dt: SmoothnessProbe(every=2, dtype=dt) for dt in (torch.float32, torch.float64)}
    for probe in probes.values():
        Trainer(data, probe=probe, **kw).fit()
    plain, probed = Trainer(data, **kw), Trainer(data, probe=SmoothnessProbe(every=1), **kw)  # float32 probe
    plain.fit()
    probed.fit()
    assert torch.equal(plain.flat_param, probed.flat_param)  # the default probe does not touch training either
    a, b = derived(probes[torch.float32].arrays()), derived(probes[torch.float64].arrays())
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=2e-4)


def test_gradient_direction_is_the_sgd_step_of_the_clipped_gradient():
    data = small_data()
    probe = SmoothnessProbe(every=1, direction="gradient", dtype=torch.float64)
    probe.keep_vectors = True
    kw = dict(norm="none", seeds=0, epochs=1, batch_size=32, lr=1e-2, hidden=16, clip_grad_norm=0.5)
    trainer = Trainer(data, probe=probe, **kw)
    seen = []
    original = probe.__call__

    def spy(tr, step, xb, yb):
        seen.append(tr.flat_grad.detach().double().clone())
        original(tr, step, xb, yb)

    trainer.runs[0].probe = spy
    trainer.fit()
    assert max(float(g.norm()) for g in seen) == pytest.approx(0.5, rel=1e-5)  # clipped: what the optimiser gets
    for (_, u), g in zip(probe.vectors, seen):
        np.testing.assert_allclose(u, -1e-2 * g, rtol=1e-12)
    with pytest.raises(ValueError, match="direction"):
        SmoothnessProbe(direction="sideways")
    with pytest.raises(ValueError, match="positive"):
        SmoothnessProbe(every=0)


def test_a_probe_without_records_writes_empty_files(tmp_path):
    # runs outside diagnostics.smoothness.experiments still produce the train rule's declared outputs
    probe = SmoothnessProbe(every=100)
    summary = write_smoothness(tmp_path / "s.h5", tmp_path / "s.json", probe)
    assert summary["probes"] == 0
    back = read_smoothness_h5(tmp_path / "s.h5")
    assert back["step"].shape == (0,) and back["losses"].shape == (0, 4)
