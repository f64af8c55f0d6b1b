"""The whole-study A/B (benchmarks/study_ab.py): the variant config, and both sides of the tiny study timed from one
feature cache (no timing claims: that the numbers exist, and that each side ran what it says)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from conftest import REPO, SCHEMA, TINY_CONFIG

from benchmarks.study_ab import absolute_inputs, main, parse_time, variant_config
from normscape.pipeline.config import validate_config


def test_the_variant_drops_the_experiments_and_switches_the_measures_off():
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    variant = validate_config(
        variant_config(config, ["stability", "stability_large_batch"], ["diagnostics.preconditioned_sharpness"]),
        SCHEMA,
    )
    assert {"stability", "stability_large_batch"} & set(variant["experiments"]) == set()
    probe = variant["diagnostics"]["preconditioned_sharpness"]
    assert probe["enabled"] is False and "stability_large_batch" not in probe["experiments"]
    assert variant["experiments"].keys() == config["experiments"].keys() - {"stability", "stability_large_batch"}
    assert "stability" in config["experiments"]  # the study's own config is left as it was
    with pytest.raises(SystemExit, match="lacks"):
        variant_config(config, ["no_such_experiment"], [])
    with pytest.raises(SystemExit, match="no such section"):
        variant_config(config, [], ["diagnostics.no_such_measure"])


def test_parse_time_reads_usr_bin_time_v():
    stderr = (
        'snakemake output\n\tCommand being timed: "snakemake all"\n\tUser time (seconds): 9983.12\n'
        "\tSystem time (seconds): 390.5\n\tPercent of CPU this job got: 162%\n"
        "\tElapsed (wall clock) time (h:mm:ss or m:ss): 1:46:13\n\tMaximum resident set size (kbytes): 2695000\n"
        "\tExit status: 0\n"
    )
    timing = parse_time(stderr)
    assert timing["wall_s"] == 3600 + 46 * 60 + 13 and timing["user_s"] == 9983.12 and timing["system_s"] == 390.5
    assert parse_time(stderr.replace("1:46:13", "3:07.25"))["wall_s"] == pytest.approx(187.25)
    assert parse_time("snakemake output, then killed")["wall_s"] is None  # no report: no growth, not a KeyError


def test_relative_input_paths_become_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "archive.tar.gz").write_bytes(b"")
    given = {"data": {"archive": "archive.tar.gz", "checksum": None}, "backbone": {"weights": "DEFAULT"}}
    resolved = absolute_inputs(given)
    assert (
        resolved["data"]["archive"] == str(tmp_path / "archive.tar.gz") and given["data"]["archive"] == "archive.tar.gz"
    )
    assert resolved["backbone"]["weights"] == "DEFAULT"  # a torchvision weights name, not a file


@pytest.mark.slow
@pytest.mark.skipif(not Path("/usr/bin/time").exists(), reason="needs /usr/bin/time (.ci/run installs it)")
def test_both_sides_of_the_tiny_study_run_from_one_feature_cache(tmp_path, synthetic_archive):
    overrides = yaml.safe_load(TINY_CONFIG.read_text())
    overrides["data"]["archive"] = str(synthetic_archive)
    overrides["landscape"]["experiments"] = []  # the A/B is about training work: no landscapes or curvature jobs
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(overrides))
    assert main([str(tmp_path / "ab"), "--configfile", str(tmp_path / "tiny.yaml")]) == 0
    with pytest.raises(SystemExit, match="already has side"):  # a second run would time two no-ops
        main([str(tmp_path / "ab"), "--configfile", str(tmp_path / "tiny.yaml")])
    report = json.loads((tmp_path / "ab" / "ab.json").read_text())
    for side in ("A", "B"):
        assert report[side]["returncode"] == 0 and report[side]["wall_s"] > 0 and report[side]["user_s"] > 0
    assert report["wall_time_growth_b_over_a"] == pytest.approx(report["B"]["wall_s"] / report["A"]["wall_s"] - 1)
    a, b = tmp_path / "ab" / "A" / "results", tmp_path / "ab" / "B" / "results"
    cache = tmp_path / "ab" / "features" / "results" / "features" / "features.h5"
    assert os.stat(a / "features" / "features.h5").st_ino == os.stat(b / "features" / "features.h5").st_ino
    assert os.stat(cache).st_ino == os.stat(a / "features" / "features.h5").st_ino  # extracted once
    assert (b / "runs" / "stability").is_dir() and not (a / "runs" / "stability").exists()
    run = Path("runs", "convergence", "batch", "base", "seed0", "preconditioned_sharpness.json")
    assert json.loads((b / run).read_text())["probes"] > 0
    assert json.loads((a / run).read_text())["probes"] == 0  # every run declares the file; A's carry no probe
    assert (a / "figures" / "fig4_convergence_accuracy.png").exists()  # the rest of the study ran
