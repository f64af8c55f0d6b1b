"""Norms registered by a plugin file (config ``plugins:``): trained, measured and drawn like the built-in ones,
with parameters of every shape (0-d, 1-d, none) and buffers; their code is part of their runs' identity."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from conftest import REPO, run_snakemake, write_config

from normscape.pipeline.errors import ConfigError, DataError
from normscape.pipeline.plugins import load_plugins

PLUGIN = REPO / "tests" / "plugins" / "norms_plugin.py"


def plugin_copy(tmp_path: Path, name: str, replace: tuple[str, str] | None = None) -> Path:
    """A copy of the test plugin whose norms are registered under ``<name>_<norm>`` (one registry per process:
    every copy registers names of its own), optionally with one text edit."""
    text = PLUGIN.read_text()
    for norm in ("scale", "shifted", "unit"):
        text = text.replace(f'NormSpec("{norm}"', f'NormSpec("{name}_{norm}"')
    if replace:
        assert replace[0] in text
        text = text.replace(*replace)
    path = tmp_path / f"{name}.py"
    path.write_text(text)
    return path


def test_code_digest_follows_the_norms_own_code_and_nothing_else(tmp_path):
    from normscape.models.norms import code_digest

    load_plugins([plugin_copy(tmp_path, "a")])
    load_plugins([plugin_copy(tmp_path, "b", ("torch.tensor(math.sqrt(features))", "torch.ones(features)"))])
    load_plugins([plugin_copy(tmp_path, "c", ("class UnitNorm", "def unrelated():\n    return 1\n\n\nclass UnitNorm"))])
    # ScaleNorm's gain changed shape in b: its digest changes; the other norms' code did not
    assert code_digest("a_scale") != code_digest("b_scale")
    assert code_digest("a_shifted") == code_digest("b_shifted") == code_digest("c_shifted")
    # a function nobody uses does not change the unit norm, whose builder and class are unchanged
    assert code_digest("a_unit") == code_digest("c_unit")
    # built-in norms: digests differ between norms, and torch is not imported for them (the workflow's parse)
    assert len({code_digest(n) for n in ("none", "batch", "layer", "frn", "frn_learned_eps")}) == 5


def test_plugin_errors_are_one_message(tmp_path):
    with pytest.raises(ConfigError, match=r"plugins: '.*nope.py' is not a file"):
        load_plugins([str(tmp_path / "nope.py")])
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('my bug')\n")
    with pytest.raises(ConfigError, match=r"plugin .*broken.py failed while it was imported: RuntimeError: my bug"):
        load_plugins([str(broken)])


def test_a_saved_model_that_no_longer_fits_its_norm_names_the_run_and_the_fix(tmp_path):
    from normscape.landscape.run_inputs import load_head
    from normscape.models.heads import build_head

    load_plugins([plugin_copy(tmp_path, "d")])
    state = build_head("d_scale", in_features=6, hidden=4).state_dict()
    state["norm.gain"] = torch.ones(4)  # as saved by an earlier version of the norm (one gain per unit)
    path = tmp_path / "model_final.pt"
    torch.save({"head_config": {"norm": "d_scale", "in_features": 6, "hidden": 4}, "state_dict": state}, path)
    with pytest.raises(DataError) as err:
        load_head(path)
    assert f"{path} does not fit the head that norm 'd_scale' builds now" in str(err.value)
    assert "norm.gain" in str(err.value) and "snakemake --cores 2 all" in str(err.value)


@pytest.mark.slow
def test_plugin_norms_of_every_parameter_shape_go_through_the_whole_study(tiny_config, tmp_path):
    """0-d parameter, buffer, no parameters: training, landscapes, every Hessian measure, W&B histograms,
    figures and tables, through the CLI."""
    plugin = shutil.copy(PLUGIN, tmp_path / "my_norms.py")
    cfg = {**tiny_config, "plugins": ["my_norms.py"]}  # relative to the directory Snakemake runs in
    cfg["experiments"] = {"convergence": {"heads": ["scale", "shifted", "unit"], "lr": 2.0e-3}}
    cfg["tracking"] = {"wandb": {"mode": "offline", "watch_log_freq": 5}}
    proc = run_snakemake(["all", "--cores", "2"], cwd=tmp_path, configfile=write_config(cfg, tmp_path / "c.yaml"))
    assert "Traceback" not in proc.stdout + proc.stderr
    results = Path(cfg["results_dir"])
    for norm in ("scale", "shifted", "unit"):
        run = results / "runs" / "convergence" / norm / "base" / "seed0"
        summary = json.loads((run / "summary.json").read_text())
        assert summary["best"]["val_acc"] > 0.5, (norm, summary["best"])  # it learns
        where = results / "landscapes" / "convergence" / norm / "base" / "seed0"
        sharpness = json.loads((where / "sharpness.json").read_text())
        assert math.isfinite(sharpness["top_eigenvalue"]) and sharpness["hessian_trace"] > 0, norm
        spectrum = json.loads((where / "spectrum.json").read_text())
        assert all(math.isfinite(v) for v in spectrum["eval"]["top_eigenvalues"]), norm
        adaptive = json.loads((where / "adaptive_sharpness.json").read_text())
        assert adaptive["eval"]["worst"], norm
    state = torch.load(results / "runs/convergence/scale/base/seed0/model_final.pt", weights_only=False)
    assert state["state_dict"]["norm.gain"].dim() == 0
    logged = b"".join(p.read_bytes() for p in (results / "wandb").rglob("*.wandb"))
    assert b"gradients/norm.gain" in logged and b"parameters/norm.weight" in logged  # 0-d and 1-d histograms
    assert "ScaleNorm" in (results / "tables" / "summary.md").read_text()
    assert len(list((results / "figures").glob("*.png"))) >= 8
    assert Path(plugin).exists()
