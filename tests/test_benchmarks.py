"""The benchmark suite runs in quick mode and writes results.json in the documented format (no timing claims)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
from conftest import REPO

REQUIRED = {
    "feature_extraction_224",
    "train_15_epochs",
    "grad_histogram_overhead",
    "grad_histogram_overhead_none_lr0.01",
    "landscape_51x51",
    "snakemake_noop_dryrun",
    "extraction_page_faults",
    "extraction_system_time",
    "contention_extraction",
    "contention_training",
    "contention_landscape",
    "oversubscription_training",
    "smoothness_overhead_every_100",
    "spectrum_batch_train",
    "adaptive_sharpness_batch_train",
    "subnormal_flush_none_lr0.01",
    "subnormal_flush_frn_lr0.001",
    "subnormal_flush_none_lr0.001",
    "subnormal_flush_batch_lr0.001",
    "grad_histogram_every4_batch_lr0.001",
    "grad_histogram_every4_frn_lr0.001",
    "grad_histogram_every4_none_lr0.01",
}


@pytest.mark.slow
def test_quick_benchmarks_write_results_json(tmp_path):
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--output", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert {"machine", "torch", "date", "results"} <= set(doc)
    names = {r["name"] for r in doc["results"]}
    assert REQUIRED <= names
    for row in doc["results"]:
        assert {"name", "value", "unit", "naive_value", "ratio_vs_naive", "target"} <= set(row)
        # counts and fractions can be 0 at quick sizes (no page fault, no system time): finite and not negative
        assert math.isfinite(row["value"]) and row["value"] >= 0, row
        if row["naive_value"] and row["value"]:  # a ratio against zero (no faults left) is undefined: None
            assert row["ratio_vs_naive"] > 0


def test_compare_flags_figures_outside_the_tolerance(tmp_path):
    from benchmarks.compare import compare, main

    first = [
        {"name": "a", "value": 10.0, "ratio_vs_naive": 3.0},
        {"name": "b", "value": 100.0, "ratio_vs_naive": None},
        {"name": "only_first", "value": 1.0, "ratio_vs_naive": None},
    ]
    second = [
        {"name": "a", "value": 11.0, "ratio_vs_naive": 2.0},  # value 9 % apart, ratio 33 % apart
        {"name": "b", "value": 0.0, "ratio_vs_naive": 1.0},  # 100 % apart; a ratio in one run only is skipped
    ]
    records, unmatched = compare(first, second, tolerance=0.2)
    got = {(r["name"], r["field"]): (round(r["relative"], 4), r["ok"]) for r in records}
    assert got == {
        ("a", "value"): (0.0909, True),
        ("a", "ratio_vs_naive"): (0.3333, False),
        ("b", "value"): (1.0, False),
    }
    assert unmatched == ["only_first"]
    paths = []
    for i, rows in enumerate((first, second, first)):
        paths.append(tmp_path / f"r{i}.json")
        paths[-1].write_text(json.dumps({"results": rows}))
    assert main([str(paths[0]), str(paths[1])]) == 1
    assert main([str(paths[0]), str(paths[2])]) == 0  # a run against itself


def test_compare_agrees_within_a_rows_stated_resolution():
    from benchmarks.compare import compare

    def row(value, ratio, resolution=50.0):
        return {"name": "faults", "value": value, "ratio_vs_naive": ratio, "details": {"resolution": resolution}}

    # 0 vs 9.8 faults/image at a resolution of 50: the same figure; the ratio (2,000 / ~0) is not compared
    records, _ = compare([row(0.0, None)], [row(9.8, 204.0)])
    assert [(r["field"], r["ok"]) for r in records] == [("value", True)]
    # above the resolution the relative tolerance applies again, to the value and to the ratio
    records, _ = compare([row(100.0, 20.0)], [row(300.0, 6.7)])
    assert [(r["field"], r["ok"]) for r in records] == [("value", False), ("ratio_vs_naive", False)]
    records, _ = compare([row(100.0, 20.0, 0.0)], [row(110.0, 18.2, 0.0)])
    assert all(r["ok"] for r in records)


def test_a_run_without_a_gpu_keeps_the_gpu_rows_of_the_last_run_with_one():
    import torch

    from benchmarks import bench_gpu
    from benchmarks.__main__ import gpu_rows_to_keep

    if not torch.cuda.is_available():
        assert bench_gpu.run(quick=True) == []  # nothing measured here ...
    previous = {
        "date": "2026-11-26T17:13:03Z",
        "results": [
            {"name": "train_15_epochs", "value": 22.0, "details": {}},
            {"name": "gpu_train_15_epochs", "value": 5.0, "details": {"device_type": "cuda", "device": "H100"}},
        ],
    }
    fresh = [{"name": "train_15_epochs", "value": 21.0, "details": {}}]
    kept = gpu_rows_to_keep(fresh, previous)  # ... and the GPU row of the previous run stays, dated
    assert [r["name"] for r in kept] == ["gpu_train_15_epochs"]
    assert kept[0]["details"] == {"measured_at": "2026-11-26T17:13:03Z", "device_type": "cuda", "device": "H100"}
    assert gpu_rows_to_keep(fresh + [previous["results"][1]], previous) == []  # measured again: not duplicated


def test_a_selection_that_matches_no_benchmark_is_an_error_and_writes_nothing(tmp_path, capsys):
    from benchmarks.__main__ import main

    out = tmp_path / "results.json"
    with pytest.raises(SystemExit) as exit_:
        main(["--only", "trian", "--output", str(out)])
    assert exit_.value.code == 2 and not out.exists()
    assert "--only trian matches no benchmark module; the modules are: bench_allocator" in capsys.readouterr().err


def test_the_readme_results_table_is_the_one_rendered_from_results_json():
    """benchmarks/README.md's table is generated (python -m benchmarks writes both): never edited by hand."""
    from benchmarks.__main__ import HERE, TABLE_END, TABLE_START, render_table

    readme = (HERE / "README.md").read_text()
    table = readme.split(TABLE_START, 1)[1].split(TABLE_END, 1)[0].strip()
    assert table == render_table(json.loads((HERE / "results.json").read_text())).strip()
