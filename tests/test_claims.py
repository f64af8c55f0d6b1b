"""Claims table: statistics and verdicts on synthetic run records whose answers are known."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from normscape.reporting.claims import Row
from normscape.reporting.claims_evaluation import evaluate_row
from normscape.reporting.claims_markdown import write_claims
from normscape.reporting.claims_stats import bootstrap_ci, sign_flip_p, smallest_p, tost_p, verdict
from normscape.reporting.run_table import curve_statistics, run_table

PLATEAU = {"none": 0.76, "batch": 0.76, "layer": 0.76, "frn": 0.10, "frn_learned_eps": 0.75, "group": 0.76}
TAU = {"none": 2.0, "batch": 0.5, "layer": 0.8, "frn": 1.0, "frn_learned_eps": 2.0, "group": 1.0}
CLIP_EFFECT = {"none": 0.0, "batch": 0.0, "layer": 0.02, "frn": 0.0}
HIGH_LR_DROP = {"none": 0.03, "batch": 0.005, "layer": 0.004, "frn": 0.0}
TOP_EIG = {"none": 11.0, "batch": 8.0, "layer": 8.3, "frn": 0.7, "frn_learned_eps": 21.9}
LOSS_INCREASE = {"none": 0.57, "batch": 0.91, "layer": 0.32, "frn": 0.001, "frn_learned_eps": 0.21}


def write_run(root, experiment, head, variant, seed, rng, final_acc, tau, epochs=8, sharp=None):
    run = root / "runs" / experiment / head / variant / f"seed{seed}"
    run.mkdir(parents=True)
    e = np.arange(1, epochs + 1)
    plateau = PLATEAU[head]
    val = plateau * (1 - np.exp(-e / tau)) if plateau > 0.2 else np.full(epochs, plateau)
    val = val + rng.normal(0, 0.0005, epochs)
    pd.DataFrame({"epoch": e, "val_acc": val, "train_loss": 1.0}).to_csv(run / "metrics.csv", index=False)
    summary = {"final": {"test_acc": final_acc}, "best": {"test_acc": final_acc, "val_acc": float(val.max())}}
    summary["training"] = {"lr": 0.02 if experiment == "high_lr" else 0.002}  # as the run trained (claims say it)
    (run / "summary.json").write_text(json.dumps(summary))
    if sharp is not None:
        land = root / "landscapes" / experiment / head / variant / f"seed{seed}"
        land.mkdir(parents=True)
        (land / "sharpness.json").write_text(json.dumps(sharp))
        # spectrum.json: eval mode for every head, train mode (batch statistics) only for BatchNorm
        spectrum = {"eval": {"top_eigenvalues": [sharp["top_eigenvalue"], 1.0]}}
        if head == "batch":
            spectrum["train"] = {"top_eigenvalues": [3 * sharp["top_eigenvalue"], 1.0]}
        (land / "spectrum.json").write_text(json.dumps(spectrum))


@pytest.fixture
def study(tmp_path):
    rng = np.random.default_rng(0)
    seeds = range(5)
    for seed in seeds:
        noise = lambda: rng.normal(0, 0.0005)  # noqa: E731
        for head in ("none", "batch", "layer", "frn", "frn_learned_eps"):
            base = PLATEAU[head] + noise()
            sharp = {
                "top_eigenvalue": TOP_EIG[head] * (1 + 0.02 * rng.normal()),
                "min_eigenvalue": -0.01 if head != "frn" else -5.0,
                "saddle": head == "frn",
                "hessian_trace": 200 + 20 * rng.normal(),  # no systematic difference: inconclusive
                "loss_increase_at_radius": {"0.5": LOSS_INCREASE[head] * (1 + 0.02 * rng.normal())},
            }
            write_run(tmp_path, "convergence", head, "base", seed, rng, base, TAU[head], sharp=sharp)
            if head in CLIP_EFFECT:
                write_run(tmp_path, "clipping", head, "base", seed, rng, base + CLIP_EFFECT[head] + noise(), TAU[head])
                write_run(tmp_path, "high_lr", head, "base", seed, rng, base - HIGH_LR_DROP[head] + noise(), TAU[head])
    for head, spread in (("batch", 0.05), ("layer", 0.005), ("group", 0.005)):
        for i, bs in enumerate((8, 32, 128)):
            write_run(tmp_path, "batch_size", head, f"bs-{bs}", 0, rng, 0.7 + spread * i / 2, TAU[head], epochs=3)
    summaries = sorted(map(str, tmp_path.glob("runs/**/summary.json")))
    metrics = sorted(map(str, tmp_path.glob("runs/**/metrics.csv")))
    sharpness = sorted(map(str, tmp_path.glob("landscapes/**/sharpness.json")))
    spectrum = sorted(map(str, tmp_path.glob("landscapes/**/spectrum.json")))
    return tmp_path, summaries, metrics, {"sharpness": sharpness, "spectrum": spectrum}


def test_statistics_primitives():
    assert sign_flip_p(np.array([1.0, 2.0, 3.0]), "greater") == pytest.approx(1 / 8)
    assert sign_flip_p(np.array([1.0, -2.0, 3.0]), "greater") == pytest.approx(3 / 8)  # (1,-2,3), (1,2,3), (-1,2,3)
    assert sign_flip_p(np.array([1.0, 2.0, 3.0]), "two-sided") == pytest.approx(2 / 8)
    assert bootstrap_ci(np.array([0.3, 0.3, 0.3]), 0.95, 1000, 0) == pytest.approx((0.3, 0.3))
    lo, hi = bootstrap_ci(np.array([1.0, 2.0, 3.0]), 0.95, 20000, 0)
    assert lo == pytest.approx(1.0) and hi == pytest.approx(3.0)  # n = 3: [min, max]
    up, down, three, five = np.array([0.1, 0.15, 0.2]), np.array([-0.2, -0.15, -0.1]), np.ones(3), np.ones(5)
    assert verdict(up, 0.1, 0.2, "greater", 0) == "supported" and verdict(down, -0.2, -0.1, "greater", 0) == "refuted"
    assert (
        verdict(up, -0.1, 0.2, "less", 0) == "inconclusive"
        and verdict(up[:1], 0.1, 0.2, "greater", 0) == "inconclusive"
    )
    # at n = 5 one seed without the claimed sign fails the exact test (p = 2/32 > 0.05) even where the bootstrap
    # interval of the mean excludes 0 (it is narrower than [min, max]): the real study's lr 1e-2 LayerNorm row
    tied = np.array([0.0015, 0.021, 0.018, 0.0305, 0.0])
    lo, hi = bootstrap_ci(tied, 0.95, 10000, 0)
    assert lo > 0 and sign_flip_p(tied, "greater") == pytest.approx(2 / 32)
    assert (
        verdict(tied, lo, hi, "greater", 0) == "inconclusive"
        and verdict(tied + 0.001, lo, hi, "greater", 0) == "supported"
    )
    # with more seeds the exact test at alpha decides: one small disagreeing seed of 8 still gives p <= 0.05
    eight = np.array([0.3, 0.25, 0.4, 0.35, 0.2, 0.3, 0.45, -0.01])
    assert sign_flip_p(eight, "greater") <= 0.05 and verdict(eight, 0.1, 0.4, "greater", 0) == "supported"
    # equivalence only by TOST, which cannot reach p <= 0.05 with 3 seeds (2^-3 = 0.125)
    assert verdict(three, -0.001, 0.002, "equivalent", 0.005, p_tost=0.125) == "not testable at 3 seeds"
    assert verdict(five, -0.001, 0.002, "equivalent", 0.005, p_tost=1 / 32) == "supported"
    assert verdict(five, -0.001, 0.002, "equivalent", 0.005, p_tost=0.5) == "inconclusive"
    assert verdict(three, 0.01, 0.02, "equivalent", 0.005) == "refuted"
    d = np.array([0.001, -0.002, 0.0, 0.003, 0.001])
    assert tost_p(d, 0.005) == pytest.approx(1 / 32) and tost_p(d, 0.0025) > 0.05  # 0.003 is outside ±0.0025
    assert (
        smallest_p(3, "greater") == 1 / 8
        and smallest_p(3, "different") == 1 / 4
        and smallest_p(5, "equivalent") == 1 / 32
    )
    assert verdict(three, -0.001, 0.002, "different", 0.005) == "refuted"
    e = np.arange(1.0, 6.0)
    stats = curve_statistics(np.array([0.5, 0.7, 0.75, 0.8, 0.79]), e, 0.95, np.array([1.2, 0.9, 0.8, 0.7, 0.7]))
    assert stats["val_loss_auc"] == pytest.approx(np.trapezoid([1.2, 0.9, 0.8, 0.7, 0.7], e) / 4)
    assert stats["epochs_to_plateau"] == 4.0  # 0.95 * 0.8 = 0.76: 0.75 at epoch 3 falls short
    assert stats["val_auc"] == pytest.approx(np.trapezoid([0.5, 0.7, 0.75, 0.8, 0.79], e) / 4)


def test_claims_table_gives_the_known_verdicts(study):
    root, summaries, metrics, measures = study
    result = write_claims(summaries, metrics, measures, root / "claims.csv", root / "claims.md")
    row = lambda cid, comp, stat=None: result[  # noqa: E731
        (result["claim_id"] == cid) & (result["comparison"] == comp) & ((result["statistic"] == stat) if stat else True)
    ].iloc[0]
    claim = lambda cid: result.loc[result["claim_id"] == cid, "claim_verdict"].iloc[0]  # noqa: E731
    # the learning rate a claim names is the one its runs trained with
    high_lr_claim = result.loc[result["claim_id"] == "high_lr_hurts_baseline_most", "claim"].iloc[0]
    assert high_lr_claim == "Training at lr 0.02 hurts the baseline more than any normalised head"
    # convergence: BatchNorm/LayerNorm faster on both statistics; dead FRN has no speed
    for head in ("BatchNorm", "LayerNorm"):
        assert row("faster_convergence", f"{head} - baseline", "epochs_to_plateau")["verdict"] == "supported"
        assert row("faster_convergence", f"{head} - baseline", "val_auc")["verdict"] == "supported"
    assert row("faster_convergence", "FRN - baseline", "val_auc")["n_seeds"] == 0
    # a head at chance in every seed: its rows say so and do not count towards the claim's verdict
    assert row("faster_convergence", "FRN - baseline", "val_auc")["verdict"].startswith("not applicable")
    assert row("high_lr_hurts_baseline_most", "drop(baseline) - drop(FRN)")["verdict"].startswith("not applicable")
    # learned-eps FRN: same time constant as the baseline (epochs to plateau: no difference) but a 1-point lower
    # plateau, so a smaller area under its curve
    # (6 epochs in every run of both: a statistic that cannot speak)
    same = row("faster_convergence", "FRN (learned eps) - baseline", "epochs_to_plateau")["verdict"]
    assert same == "uninformative: the statistic is 6 in every run compared"
    assert row("faster_convergence", "FRN (learned eps) - baseline", "val_auc")["verdict"] == "refuted"
    assert claim("faster_convergence") == "mixed"
    # clipping: LayerNorm +2 points, the others within noise
    assert row("clipping_layernorm_only", "LayerNorm: clipped - unclipped")["verdict"] == "supported"
    assert row("clipping_layernorm_only", "LayerNorm: clipped - unclipped")["mean"] == pytest.approx(0.02, abs=0.002)
    assert claim("clipping_layernorm_only") == "supported"
    assert claim("high_lr_hurts_baseline_most") == "supported"
    # flatness per measure: eigenvalue smaller for BN/LN but larger for learned-eps FRN; BN's loss increase larger
    assert row("flatter_minima[sharpness.top_eigenvalue]", "BatchNorm - baseline")["verdict"] == "supported"
    assert row("flatter_minima[sharpness.top_eigenvalue]", "FRN (learned eps) - baseline")["verdict"] == "refuted"
    assert claim("flatter_minima[sharpness.top_eigenvalue]") == "mixed"
    key = "flatter_minima[sharpness.loss_increase_at_radius.0.5]"
    assert row(key, "BatchNorm - baseline")["verdict"] == "refuted"
    assert row(key, "LayerNorm - baseline")["verdict"] == "supported"
    assert row("flatter_minima[sharpness.hessian_trace]", "LayerNorm - baseline")["verdict"] == "inconclusive"
    # train mode: BatchNorm's batch-statistics eigenvalue (3 x 8 = 24) against the baseline's (= its eval, 11)
    train = row("flatter_minima[spectrum.train.top_eigenvalues.0]", "BatchNorm - baseline")
    assert train["verdict"] == "refuted" and train["mean"] == pytest.approx(24 - 11, rel=0.05)
    assert row("flatter_minima[spectrum.train.top_eigenvalues.0]", "LayerNorm - baseline")["verdict"] == "supported"
    # measures that were not computed make no rows
    assert claim("flatter_minima[adaptive.eval.worst.0.002]") == "not testable (runs missing)"
    # one seed of the batch-size sweep: the range difference is there but cannot be judged
    bs = row("batchnorm_batch_size", "range(BatchNorm) - range(LayerNorm)")
    assert bs["n_seeds"] == 1 and bs["mean"] == pytest.approx(0.045) and bs["verdict"] == "inconclusive"
    assert claim("frn_needs_learnable_eps") == "supported"
    fr = row("frn_needs_learnable_eps", "FRN (learned eps) - FRN")
    assert fr["n_seeds"] == 5 and fr["p_exact"] == pytest.approx(1 / 32)
    md = (root / "claims.md").read_text()
    # lambda_max rows show lambda_min of every run compared, saddles starred
    note = row("flatter_minima[sharpness.top_eigenvalue]", "FRN - baseline")["saddles"]
    assert "FRN s0: -5*" in note and "Baseline (no norm) s0: -0.01;" in note
    assert "λmin beside λmax (* = at a saddle" in md
    assert "Gradient clipping changes LayerNorm's result and no other head's — **supported**" in md
    assert pd.read_csv(root / "claims.csv").shape[0] == len(result)


def test_run_table_flattens_measure_files(study):
    root, summaries, metrics, measures = study
    table = run_table(summaries, metrics, measures)
    r = table[(table["experiment"] == "convergence") & (table["head"] == "frn") & (table["seed"] == 0)].iloc[0]
    assert not r["learned"] and np.isfinite(r["sharpness.loss_increase_at_radius.0.5"])
    assert len(table) == 5 * (5 + 4 + 4) + 9


def _table(values: dict, sems: dict | None = None) -> pd.DataFrame:
    rows = []
    for head, per_seed in values.items():
        for seed, v in enumerate(per_seed):
            row = {"experiment": "convergence", "head": head, "variant": "base", "seed": seed, "stat": v}
            if sems is not None:
                row["stat_sem"] = sems[head][seed]
            rows.append(row)
    return pd.DataFrame(rows)


def test_constant_statistics_are_uninformative_and_noisy_estimates_are_not_verdicts():
    terms = [(1, "convergence", "batch", "base"), (-1, "convergence", "none", "base")]
    plateau = evaluate_row(_table({"batch": [1, 1, 1], "none": [1, 1, 1]}), Row("stat", terms, "less", "BN - base"))
    assert plateau["verdict"] == "uninformative: the statistic is 1 in every run compared"
    # a difference of 10 per seed: decisive with standard errors of 1, "too noisy" with 8 (combined 11.3 > 10 / 2)
    values = {"batch": [100.0, 101.0, 99.0], "none": [110.0, 111.0, 109.0]}
    row = Row("stat", terms, "less", "BN - base", sem="stat_sem")
    precise = evaluate_row(_table(values, {"batch": [1, 1, 1], "none": [1, 1, 1]}), row)
    assert precise["verdict"] == "supported" and precise["p_smallest"] == 1 / 8 and precise["sided"].startswith("one")
    noisy = evaluate_row(_table(values, {"batch": [8, 1, 1], "none": [8, 1, 1]}), row)
    assert noisy["verdict"].startswith("estimator too noisy: seed 0")
    missing = evaluate_row(_table(values), row)
    assert missing["verdict"] == "estimator too noisy: its standard error is not recorded"
