"""The report's landing page, generated from the summary and claims tables (normscape.reporting.landing_page)."""

from __future__ import annotations

import csv

import pytest

from normscape.figures.registry import FIGURES
from normscape.reporting.landing_page import CATEGORY_GUIDE, claims_list, headline_table, how_to_read, overview_fragment


def row(claim_id, claim, verdict, claim_verdict, n=3):
    return {
        "claim_id": claim_id,
        "claim": claim,
        "claim_verdict": claim_verdict,
        "statistic": "s",
        "verdict": verdict,
        "n_seeds": str(float(n)),
    }


def test_each_claim_is_one_sentence_with_its_verdict_and_what_it_means_at_n_seeds():
    rows = [
        row("faster", "Norms converge faster", "supported", "supported"),
        row("faster", "Norms converge faster", "supported", "supported"),
        row("clip", "Clipping changes LayerNorm", "supported", "mixed"),
        row("clip", "Clipping changes LayerNorm", "refuted", "mixed"),
        row("clip", "Clipping changes LayerNorm", "uninformative", "mixed"),
        row("flat[a]", "Flatter minima — by the λmax", "refuted", "refuted"),
        row("flat[b]", "Flatter minima — by the trace", "inconclusive", "inconclusive"),
        {"claim_id": "bs", "claim": "BatchNorm depends on batch size", "claim_verdict": "not testable (runs missing)"},
    ]
    html = claims_list(rows)
    assert "With n = 3 seeds, supported means every seed agrees (smallest possible p = 2^-3 = 0.125)" in html
    # from 6 seeds on, p <= 0.05 no longer needs every seed to agree: the sentence says what it does need
    eight = claims_list([row("faster", "Norms converge faster", "supported", "supported", 8)])
    assert "With n = 8 seeds, supported means an exact sign-flip p <= 0.05 in the claimed direction" in eight
    assert html.count("<ul class='claims'>") == 1
    items = html.split("<li>")[1:]
    assert len(items) == 4  # the two measures of "flatter minima" are one claim
    assert (
        'Norms converge faster: <b class="supported">supported</b> — every one of the 3 seeds agrees, in all 2'
        in (items[0])
    )
    assert "mixed</b> — of 3 comparisons across 3 seeds: 1 supported, 1 refuted, 1 not measurable" in items[1]
    assert (
        'Flatter minima: by the λmax: <b class="refuted">refuted</b>; by the trace: <b class="">inconclusive'
        in (items[2])
    )
    assert "not testable (runs missing)</b> — the study has no runs for it." in items[3]


def test_headline_table_is_heads_by_experiment_with_lambda_max_where_measured():
    summary = [
        {
            "experiment": "convergence",
            "head": "none",
            "variant": "base",
            "seeds": "3",
            "diverged": "0/3",
            "final_test_acc_mean": "0.745",
            "final_test_acc_std": "0.0123",
            "top_eigenvalue_mean": "31.32",
            "top_eigenvalue_std": "2.5",
        },
        {
            "experiment": "high_lr",
            "head": "none",
            "variant": "base",
            "seeds": "3",
            "diverged": "2/3",
            "final_test_acc_mean": "0.1",
            "final_test_acc_std": "",
            "top_eigenvalue_mean": "",
            "top_eigenvalue_std": "",
        },
        {
            "experiment": "lr_sweep",
            "head": "none",
            "variant": "lr-0.01",
            "seeds": "1",
            "diverged": "0/1",
            "final_test_acc_mean": "0.5",
            "final_test_acc_std": "",
            "top_eigenvalue_mean": "",
            "top_eigenvalue_std": "",
        },
    ]
    html = headline_table(summary)
    assert "<th>convergence<br>test acc %</th><th>high_lr<br>test acc %</th><th>convergence<br>λmax</th>" in html
    assert "<td>74.5 ± 1.2</td><td>10.0 (2/3 diverged)</td><td>31.3 ± 2.5</td>" in html
    assert "lr_sweep" not in html.split("<table>")[1]  # sweeps: in the summary table


def test_every_category_of_the_report_is_explained():
    categories = {spec.category for spec in FIGURES.values()} | {"tables"}
    assert categories <= CATEGORY_GUIDE.keys()
    with pytest.raises(ValueError, match="without a reading guide"):
        how_to_read(["experiments", "new-category"])


def test_overview_shows_the_config_as_yaml(tmp_path):
    summary, claims = tmp_path / "summary.csv", tmp_path / "claims.csv"
    with summary.open("w", newline="") as fh:
        csv.writer(fh).writerows([["experiment", "head", "variant", "seeds"], ["e", "none", "base", "1"]])
    claims.write_text("claim_id,claim,claim_verdict,verdict\nc,A claim,not testable (runs missing),x\n")
    config = {"backbone": {"arch": "resnet18"}, "seeds": [0], "experiments": {"e": {"heads": ["none"]}}}
    html = overview_fragment(summary, claims, config, ["tables"])
    assert "backbone:\n  arch: resnet18\nseeds:\n- 0\n" in html and "e</b>: 1 head, 1 seed" in html
