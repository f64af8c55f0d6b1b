"""The statistics of a claim's row: a paired comparison across seeds, d_s per seed. From the d_s:

* mean and a 95 % percentile **bootstrap** confidence interval of the mean (seeds resampled; seeded);
* the **exact sign-flip** p-value (all 2^n sign patterns), sided per row: one-sided in the claimed direction
  for ``greater``/``less``, two-sided for ``different``, TOST (two one-sided tests against +-margin, the larger
  p) for ``equivalent``; beside it the smallest p the test can reach at this n and sidedness (its power ceiling);
* the row's **verdict** from the interval and the exact test together: ``greater``/``less`` — supported when
  the interval excludes 0 on the claimed side *and* the one-sided exact p is at most max(alpha, 2^-n), refuted
  likewise on the other side (so at n = 5 and alpha = 0.05 a verdict needs every seed's difference to have one
  sign: one seed at 0 or across it gives p >= 2/32; the bootstrap interval alone would not, at n >= 4 it is
  narrower than [min, max]); ``equivalent`` (no effect) — supported only when TOST gives p <= alpha (and "not
  testable at n seeds" when 2^-n > alpha: an interval inside +-margin from 3 seeds is no evidence of
  equivalence), refuted when the interval lies outside +-margin; ``different`` — supported when it excludes 0 and
  the two-sided exact p is at most max(alpha, 2^(1-n)), refuted when it lies inside +-margin; otherwise (and
  always with fewer than 2 seeds) inconclusive. Two reasons replace a verdict: "uninformative" (the statistic
  has one value in every run compared, e.g. epochs to plateau = 1) and "estimator too noisy" (a stochastic
  measure whose difference at some seed is within ``noise_z`` of its combined standard errors: its sign there is
  not measured).

The exact test cannot go below 2^-n (0.031 at n = 5): while 2 x 2^-n > alpha, "supported" means "every seed
agrees" (and, while 2^-n > alpha too, not "significant"); the table says which. A claim is supported/refuted
when all its rows are, ``mixed`` when rows disagree, inconclusive otherwise.
"""

from __future__ import annotations

import itertools

import numpy as np


def bootstrap_ci(d: np.ndarray, confidence: float, resamples: int, seed: int) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``d`` (seeds resampled with replacement)."""
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), size=(resamples, len(d)))].mean(1)
    tail = 100 * (1 - confidence) / 2
    return float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))


def sign_flip_p(d: np.ndarray, alternative: str) -> float:
    """Exact paired permutation (sign-flip) test of mean(d) = 0; alternative 'greater', 'less' or 'two-sided'."""
    signs = np.array(list(itertools.product((1.0, -1.0), repeat=len(d))))
    means = (signs * d[None, :]).mean(1)
    obs, tol = d.mean(), 1e-12 * max(np.abs(d).max(), 1e-300)
    if alternative == "greater":
        return float(np.mean(means >= obs - tol))
    if alternative == "less":
        return float(np.mean(means <= obs + tol))
    return float(np.mean(np.abs(means) >= abs(obs) - tol))


def sidedness(expect: str) -> str:
    """How the exact test of a row is sided."""
    return {"greater": "one-sided (> 0)", "less": "one-sided (< 0)", "different": "two-sided"}.get(
        expect, "TOST: two one-sided, vs ±margin"
    )


def smallest_p(n: int, expect: str) -> float:
    """The smallest p-value the exact sign-flip test can reach with n seeds: 2^-n one-sided (also each of TOST's
    two tests), 2^(1-n) two-sided (the observed pattern and its mirror)."""
    if n < 1:
        return float("nan")
    return 2.0 ** (1 - n) if expect == "different" else 2.0**-n


def tost_p(d: np.ndarray, margin: float) -> float:
    """Equivalence within ±margin by two one-sided exact sign-flip tests (TOST): max of p(mean > -margin) and
    p(mean < margin)."""
    return max(sign_flip_p(d + margin, "greater"), sign_flip_p(d - margin, "less"))


def verdict(d: np.ndarray, lo: float, hi: float, expect: str, margin: float, p_tost=np.nan, alpha=0.05) -> str:
    """The verdict of a row with per-seed differences ``d`` and bootstrap interval [lo, hi] (module docstring)."""
    n = len(d)
    if n < 2:
        return "inconclusive"
    # the exact test's level: alpha, or the smallest p it can reach (then every seed has to agree in sign)
    level = max(alpha, smallest_p(n, expect)) * (1 + 1e-9)
    inside = -margin <= lo and hi <= margin
    if expect in ("greater", "less"):
        other = "less" if expect == "greater" else "greater"
        claimed, opposite = (lo > 0, hi < 0) if expect == "greater" else (hi < 0, lo > 0)
        if claimed and sign_flip_p(d, expect) <= level:
            return "supported"
        return "refuted" if opposite and sign_flip_p(d, other) <= level else "inconclusive"
    if expect == "different":
        if (lo > 0 or hi < 0) and sign_flip_p(d, "two-sided") <= level:
            return "supported"
        return "refuted" if inside else "inconclusive"
    if expect == "equivalent":
        if lo > margin or hi < -margin:
            return "refuted"
        if smallest_p(n, expect) > alpha:
            return f"not testable at {n} seeds"  # TOST cannot reach p <= alpha: 'inside' would be no evidence
        return "supported" if inside and p_tost <= alpha else "inconclusive"
    raise ValueError(f"unknown expectation {expect!r}")


def claim_verdict(verdicts: list[str]) -> str:
    """A claim's verdict from its rows'; rows on heads that did not learn say nothing about it."""
    verdicts = [v for v in verdicts if not v.startswith("not applicable")]
    if not verdicts:
        return "not testable (runs missing)"
    if all(v == "supported" for v in verdicts):
        return "supported"
    if all(v == "refuted" for v in verdicts):
        return "refuted"
    if "supported" in verdicts and "refuted" in verdicts:
        return "mixed"
    return "refuted" if "refuted" in verdicts and "inconclusive" not in verdicts else "inconclusive"
