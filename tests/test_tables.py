"""The summary table's Markdown: one table per experiment, sweeps in the order of their value, and no column or
cell that pretends to say something it cannot (a constant statistic, a spread of one seed)."""

from __future__ import annotations

import pandas as pd

from normscape.reporting.summary_table import COLUMNS, aggregate, to_markdown


def runs(experiment: str, head: str, variant: str, seeds: list[int], acc: list[float], plateau: list[float]):
    rows = []
    for seed, a, p in zip(seeds, acc, plateau, strict=True):
        row = dict.fromkeys((c for c, _ in COLUMNS), None)
        row.update(experiment=experiment, head=head, variant=variant, seed=seed, diverged=False, saddle=None)
        row.update(final_test_acc=a, best_test_acc=a, epochs_to_plateau=p, wall_time_s=1.0 + seed)
        rows.append(row)
    return rows


def test_sweeps_sort_by_value_and_uninformative_columns_say_why():
    rows = runs("convergence", "batch", "base", [0, 1, 2], [0.74, 0.75, 0.76], [1, 1, 1])
    rows += runs("convergence", "none", "base", [0, 1, 2], [0.70, 0.73, 0.71], [1, 1, 1])
    for bs, acc in ((128, 0.75), (256, 0.74), (32, 0.76), (8, 0.77)):
        rows += runs("batch_size", "batch", f"bs-{bs}", [0], [acc], [1 + bs // 128])
    table = aggregate(pd.DataFrame(rows))
    assert table[table["experiment"] == "batch_size"]["variant"].tolist() == ["bs-8", "bs-32", "bs-128", "bs-256"]
    md = to_markdown(table)
    sweep, conv = md.split("### batch_size")[1], md.split("### convergence")[1].split("### batch_size")[0]
    # constant in every run of convergence: not a column there, stated once instead of "1.0 ± 0.0" per row
    assert "epochs to plateau = 1.0 in every run" in conv and "| epochs to plateau |" not in conv
    assert "1.000 ± 0.000" not in md and "± 0.0 " not in md
    # the one-seed sweep varies in it: shown, with why its rows have no spread and how large seed noise is
    assert "| epochs to plateau |" in sweep and "One seed per run, so no spread" in sweep
    assert "±1.5 points between seeds" in sweep  # the largest std of test accuracy of the multi-seed rows
    assert "| bs-8 | 1 | 0/1 | 77.0% |" in sweep


def test_a_statistic_equal_in_every_seed_reads_as_such():
    rows = runs("convergence", "batch", "base", [0, 1, 2], [0.74, 0.75, 0.76], [2, 2, 2])
    rows += runs("convergence", "none", "base", [0, 1, 2], [0.70, 0.73, 0.71], [3, 4, 5])
    md = to_markdown(aggregate(pd.DataFrame(rows)))
    assert "| 2.0 (every seed) |" in md and "| 4.0 ± 1.0 |" in md
