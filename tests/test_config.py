"""Config validation (defaults, coercion of --config strings, messages) and the run matrix."""

from __future__ import annotations

import copy

import pytest
import yaml
from conftest import REPO, SCHEMA

from normscape.pipeline.config import (
    enumerate_runs,
    experiment_runs,
    find_run,
    hessian_settings,
    spectrum_settings,
    validate_config,
)
from normscape.pipeline.errors import ConfigError


@pytest.fixture
def cfg():
    return yaml.safe_load((REPO / "config.yaml").read_text())


def test_defaults_fill_missing_sections():
    cfg = validate_config({"experiments": {"convergence": {"heads": ["none"]}}}, SCHEMA)
    assert cfg["training"]["epochs"] == 15 and cfg["backbone"]["input_size"] is None  # None: the weights' own crop size
    assert cfg["tracking"]["wandb"]["mode"] == "offline" and cfg["landscape"]["resolution"] == 51
    assert hessian_settings(cfg)["samples"] == spectrum_settings(cfg)["samples"] == 2000


def test_a_config_that_replaces_config_yaml_gets_its_values_as_defaults(cfg):
    """`--replace-workflow-config` fills what a config leaves out from the schema's defaults: they are config.yaml's
    values, but for two that change no number (tests/config/tiny.yaml relies on both): input_size null is the
    weights' own crop size (224 for config.yaml's backbone), and features.shards only splits extraction into jobs."""
    schema = yaml.safe_load(SCHEMA.read_text())
    differ = []

    def walk(node, values, path):
        for key, sub in node.get("properties", {}).items():
            if key not in values:
                continue
            if "default" in sub and not isinstance(sub["default"], dict) and sub["default"] != values[key]:
                differ.append((".".join(path + [key]), sub["default"], values[key]))
            if isinstance(values[key], dict):
                walk(sub, values[key], path + [key])

    walk(schema, cfg, [])
    assert differ == [("backbone.input_size", None, 224), ("features.shards", 1, 2)]


def test_an_experiment_set_to_null_is_left_out(cfg):
    """How a --configfile extending config.yaml removes an experiment (Snakemake merges the files key by key)."""
    cfg["experiments"]["stability"] = None
    cfg["experiments"]["batch_size"] = "null"  # as --config 'experiments={batch_size: null}' passes it
    validated = validate_config(cfg, SCHEMA)
    assert "stability" not in validated["experiments"] and "stability_large_batch" in validated["experiments"]
    assert "batch_size" not in validated["experiments"]
    assert {run.experiment for run in enumerate_runs(validated)} == set(validated["experiments"])


def test_one_hessian_section_sliced_per_rule(cfg):
    validate_config(cfg, SCHEMA)
    hessian = hessian_settings(cfg)
    assert "spectrum" not in hessian and hessian["samples"] == cfg["hessian"]["samples"]
    spectrum = spectrum_settings(cfg)  # the curvature rule's slice: the spectrum on the same training subset
    assert spectrum["samples"] == hessian["samples"] and spectrum["top_k"] == cfg["hessian"]["spectrum"]["top_k"]


@pytest.mark.parametrize(
    "section,key,new_place",
    [("landscape", "hessian", "'hessian'"), ("diagnostics", "spectrum", "'hessian.spectrum'")],
)
def test_a_moved_key_names_its_new_place(cfg, section, key, new_place):
    cfg[section][key] = {"samples": 100}
    with pytest.raises(ConfigError) as err:
        validate_config(cfg, SCHEMA)
    message = str(err.value)
    assert f"config key '{section}.{key}' has moved to {new_place}" in message and "unknown key" not in message


def test_command_line_strings_become_numbers(cfg):
    cfg["backbone"]["batch_size"] = "32"
    cfg["training"]["clip_grad_norm"] = "null"
    cfg["seeds"] = ["0", "1"]
    cfg["experiments"]["convergence"]["lr"] = "1e-2"
    validate_config(cfg, SCHEMA)
    assert cfg["backbone"]["batch_size"] == 32 and cfg["training"]["clip_grad_norm"] is None
    assert cfg["seeds"] == [0, 1] and cfg["experiments"]["convergence"]["lr"] == 0.01


def test_every_problem_is_listed(cfg):
    cfg["training"]["epochs"] = 0
    cfg["head"]["dropout"] = 1.5
    with pytest.raises(ConfigError) as err:
        validate_config(cfg, SCHEMA)
    text = str(err.value)
    assert "'training.epochs'" in text and "'head.dropout'" in text


def test_sweep_variants_and_seed_override(cfg):
    validate_config(cfg, SCHEMA)
    lr = experiment_runs(cfg, "lr_sweep")
    assert sorted({r.variant for r in lr}) == ["lr-0.001", "lr-0.01", "lr-0.2"]
    assert {r.training["lr"] for r in lr} == {1e-3, 1e-2, 0.2}
    bs = experiment_runs(cfg, "batch_size")
    assert {r.seed for r in bs} == {0} and {r.training["epochs"] for r in bs} == {3}
    assert {r.variant for r in bs} == {"bs-8", "bs-32", "bs-128", "bs-256"}
    clip = experiment_runs(cfg, "clipping")
    assert all(r.training["clip_grad_norm"] == 1.0 and r.variant == "base" for r in clip)


def test_runs_only_carry_their_own_slice(cfg):
    validate_config(cfg, SCHEMA)
    before = {r.run_id: r.training for r in enumerate_runs(cfg)}
    edited = copy.deepcopy(cfg)
    edited["experiments"]["high_lr"]["lr"] = 0.05
    after = {r.run_id: r.training for r in enumerate_runs(edited)}
    changed = {k for k in before if before[k] != after[k]}
    assert changed and all(k.startswith("high_lr/") for k in changed)


def test_find_run_errors_name_the_problem(cfg):
    validate_config(cfg, SCHEMA)
    assert find_run(cfg, "lr_sweep", "none", "lr-0.01", "1").training["lr"] == 0.01
    with pytest.raises(ConfigError, match="not defined"):
        find_run(cfg, "nope", "none", "base", 0)
    with pytest.raises(ConfigError, match="not part of"):
        find_run(cfg, "convergence", "group", "base", 0)


def test_the_checker_reads_a_file_as_the_workflow_does(tmp_path):
    """`python -m normscape.pipeline.config my.yaml` checks my.yaml extending the working directory's config.yaml
    (as --configfile does); --alone checks it as the whole config."""
    import subprocess
    import sys

    def check(*args):
        command = [sys.executable, "-m", "normscape.pipeline.config", *args]
        return subprocess.run(command, cwd=tmp_path, capture_output=True, text=True)

    (tmp_path / "config.yaml").write_text((REPO / "config.yaml").read_text())  # the workflow's configfile
    (tmp_path / "mine.yaml").write_text("seeds: [0]\nhessian:\n  samples: 500\n")
    ok = check("mine.yaml")
    assert ok.returncode == 0 and "mine.yaml: valid (extending config.yaml)" in ok.stdout, ok.stderr
    alone = check("mine.yaml", "--alone")
    assert alone.returncode == 1 and "defines no experiments" in alone.stderr and "Traceback" not in alone.stderr
    (tmp_path / "old.yaml").write_text("landscape:\n  hessian:\n    samples: 500\n")
    old = check("old.yaml")
    assert old.returncode == 1 and "config key 'landscape.hessian' has moved to 'hessian'" in old.stderr
    assert check().returncode == 2 and "Traceback" not in check().stderr  # no file: usage, not an IndexError
    (tmp_path / "list.yaml").write_text("- a\n")
    listed = check("list.yaml")
    assert (
        listed.returncode == 1 and "top level must be a mapping" in listed.stderr and "Traceback" not in listed.stderr
    )
