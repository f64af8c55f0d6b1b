"""The norm registry: one entry per norm drives the schema, labels, palette and plane evaluator; `rms` is the
proof that adding a norm is one entry."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import yaml
from conftest import REPO, SCHEMA

from normscape.landscape.plane_eval import PlaneEvaluator
from normscape.landscape.planes import random_directions
from normscape.models.heads import build_head
from normscape.models.norms import NORM_COLOURS, NORM_LABELS, NORMS
from normscape.pipeline.config import validate_config
from normscape.pipeline.errors import ConfigError
from normscape.training.job import load_features
from normscape.training.trainer import Trainer


def test_labels_palette_and_schema_come_from_the_registry():
    assert list(NORM_LABELS) == list(NORMS) == list(NORM_COLOURS)
    built_in = [name for name, spec in NORMS.items() if spec.build.__module__ == "normscape.models.norms"]
    assert len({NORM_COLOURS[name] for name in built_in}) == len(built_in), "every norm needs its own colour"
    cfg = {"experiments": {"convergence": {"heads": list(NORMS)}}}
    validate_config(cfg, SCHEMA)  # every registered name is allowed
    with pytest.raises(ConfigError) as err:
        validate_config({"experiments": {"convergence": {"heads": ["rmsnorm"]}}}, SCHEMA)
    assert "'rmsnorm' is not allowed" in str(err.value) and "'rms'" in str(err.value)


def test_no_other_file_lists_norm_names():
    # the registry is the only place: the schema, labels, palette and the plane evaluator read it
    pattern = re.compile(r"frn_learned_eps|\"rms\"|'rms'")
    offenders = [
        p.relative_to(REPO).as_posix()
        for p in [*(REPO / "src" / "normscape").rglob("*.py"), *(REPO / "workflow").rglob("*.smk")]
        if p.name != "norms.py" and pattern.search(p.read_text())
    ]
    assert offenders == []
    schema = yaml.safe_load(SCHEMA.read_text())
    assert "enum" not in schema["definitions"]["norm_name"]


def test_rms_is_torch_rmsnorm():
    head = build_head("rms", in_features=12, hidden=8)
    assert isinstance(head.norm, torch.nn.RMSNorm)
    z = torch.randn(5, 8)
    with torch.no_grad():
        head.norm.weight.copy_(torch.linspace(0.5, 2.0, 8))
    expected = z / torch.sqrt(z.pow(2).mean(1, keepdim=True) + torch.finfo(z.dtype).eps) * head.norm.weight
    torch.testing.assert_close(head.norm(z), expected)


def _manual_rms_plane(model, x, y, d1, d2, alphas, betas):
    """An independent reference: the head's maths written out per point (RMSNorm by its formula)."""
    p = {k: v.detach() for k, v in model.named_parameters()}
    loss = np.zeros((len(alphas), len(betas)))
    for i, a in enumerate(alphas):
        for j, b in enumerate(betas):
            q = {k: p[k] + a * d1[k] + b * d2[k] for k in p}
            z = x @ q["fc1.weight"].t() + q["fc1.bias"]
            h = z * torch.rsqrt(z.pow(2).mean(1, keepdim=True) + torch.finfo(z.dtype).eps) * q["norm.weight"]
            logits = torch.relu(h) @ q["fc2.weight"].t() + q["fc2.bias"]
            loss[i, j] = torch.nn.functional.cross_entropy(logits, y).item()
    return loss


@pytest.mark.parametrize("ignore", ["biasbn", "none"])
def test_rms_landscape_is_exact(ignore):
    torch.manual_seed(0)
    x, y = torch.relu(torch.randn(200, 64)), torch.randint(0, 10, (200,))
    model = build_head("rms", in_features=64, hidden=16).eval()
    d1, d2 = random_directions(model, seed=0, ignore=ignore)
    alphas, betas = np.linspace(-1, 1, 3), np.linspace(-0.5, 0.5, 2)
    loss, acc = PlaneEvaluator(model, d1, d2).evaluate(x, y, alphas, betas)
    np.testing.assert_allclose(loss, _manual_rms_plane(model, x, y, d1, d2, alphas, betas), rtol=1e-5)
    assert loss.std() > 0.01 and ((acc >= 0) & (acc <= 1)).all()


def test_rms_head_trains(features_file):
    data = {k: (x[:800], y[:800]) for k, (x, y) in load_features(features_file).items()}
    tr = Trainer(data, "rms", 0, 3, 64, 1e-3, hidden=32)
    tr.fit()
    metrics = tr.runs[0].metrics
    assert metrics[-1]["val_acc"] > 0.8 and metrics[-1]["train_loss"] < metrics[0]["train_loss"]


class CentredScale(torch.nn.Module):
    """A norm defined here, not in normscape: subtract the batch mean per unit, scale by a learned gain."""

    def __init__(self, num_features: int):
        super().__init__()
        self.gain = torch.nn.Parameter(torch.ones(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - x.mean(0, keepdim=True)) * self.gain


@pytest.fixture
def user_norm():
    from normscape.models.norms import NormSpec, register

    spec = register(NormSpec("test_centred_scale", CentredScale, "centred scale", "#000000"))
    yield spec.name
    NORMS.pop(spec.name)


def test_a_user_registered_norm_trains_through_the_same_step_as_batch(features_file, user_norm, monkeypatch):
    from normscape.models import stacked_heads

    data = {k: (x[:400], y[:400]) for k, (x, y) in load_features(features_file).items()}
    steps = []
    original = stacked_heads.StackedHeads.forward_backward

    def spy(self, xb, yb, masks):
        steps.append((self.head_config["norm"], type(self.module.norm)))
        return original(self, xb, yb, masks)

    monkeypatch.setattr(stacked_heads.StackedHeads, "forward_backward", spy)
    trainers = {norm: Trainer(data, norm, [0, 1], 2, 64, 1e-3, hidden=16) for norm in ("batch", user_norm)}
    for tr in trainers.values():
        tr.fit()
    n_steps = 2 * (400 // 64 + 1)
    assert steps.count(("batch", torch.nn.BatchNorm1d)) == n_steps
    assert steps.count((user_norm, CentredScale)) == n_steps  # the user's module itself, in the one step function
    user = trainers[user_norm]
    assert [name for name in user.names if name.startswith("norm.")] == ["norm.gain"]
    assert user.runs[0].metrics[-1]["train_loss"] < user.runs[0].metrics[0]["train_loss"]
    gains = user.stack.state_of(0)["norm.gain"]
    assert not torch.equal(gains, torch.ones_like(gains))  # its own parameter was trained
