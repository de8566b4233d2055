"""Paired intervals over a handful of replicates (reparam.lm.compare): a paired t interval whose coverage is right at
3-5 replicates (measured by simulation), never [min, max] of the differences, with equivalence verdicts."""
import numpy as np
import pandas as pd
import pytest

from reparam.lm.compare import (EQUIVALENCE_MARGINS, INTERVAL_METHOD, method_note, paired_differences,
                                paired_t_interval)


def _pairs(diffs, metric="test_nll", n=50):
    rows = []
    for r, d in enumerate(diffs):
        rows += [{"init": "words", "n": n, "replicate": r, "structure": "independent", metric: 2.0},
                 {"init": "words", "n": n, "replicate": r, "structure": "shared", metric: 2.0 + d}]
    return pd.DataFrame(rows)


def test_three_replicates_do_not_give_min_to_max():
    """A percentile bootstrap over 3 values is [min, max] of them; the paired t interval (df = 2) is much wider."""
    d = np.array([0.01, 0.03, 0.05])
    row = paired_differences(_pairs(d), ["test_nll"]).iloc[0]
    assert not (row.ci_low == pytest.approx(d.min()) and row.ci_high == pytest.approx(d.max()))
    half = 4.302653 * d.std(ddof=1) / np.sqrt(3)  # t_{0.975, 2}
    assert (row.ci_low, row.ci_high) == pytest.approx((d.mean() - half, d.mean() + half), rel=1e-5)
    assert row.ci_low < d.min() and row.ci_high > d.max()
    assert row.verdict == "no clear difference" and row.method == INTERVAL_METHOD  # three of one sign are no evidence


@pytest.mark.parametrize("replicates", [3, 5])
def test_coverage_of_the_paired_interval_by_simulation(replicates):
    """4000 simulated studies of normal paired differences (fixed seed): the 95% interval covers the true mean
    95% of the time, within 0.015 (binomial sd at 4000 draws: 0.0034); with no effect, "better" fires in at most
    5% + 0.015 of them (the percentile bootstrap of 3 replicates fires in about 25%)."""
    rng = np.random.default_rng(2024)
    truth, sd, sims = 0.03, 0.05, 4000
    covered = better_without_effect = 0
    for _ in range(sims):
        lo, hi = paired_t_interval(rng.normal(truth, sd, replicates))
        covered += lo <= truth <= hi
        lo0, hi0 = paired_t_interval(rng.normal(0.0, sd, replicates))
        better_without_effect += lo0 > 0 or hi0 < 0
    assert covered / sims == pytest.approx(0.95, abs=0.015)
    assert better_without_effect / sims <= 0.05 + 0.015


def test_verdicts_better_equivalent_insufficient():
    margin = EQUIVALENCE_MARGINS["test_nll"]
    tight_zero = paired_differences(_pairs([0.001, -0.002, 0.0015, -0.001, 0.0005]), ["test_nll"]).iloc[0]
    assert tight_zero.verdict == f"equivalent within \u00b1{margin:g} nats/token" and tight_zero.margin == margin
    lower = paired_differences(_pairs([-0.20, -0.22, -0.21]), ["test_nll"]).iloc[0]
    assert lower.verdict == "shared better"  # lower NLL is better: the interval excludes 0 on that side
    small_but_sure = paired_differences(_pairs([-0.010, -0.011, -0.012, -0.010]), ["test_nll"]).iloc[0]
    assert small_but_sure.verdict.startswith("shared better (by less than")
    two = paired_differences(_pairs([0.1, 0.2]), ["test_nll"]).iloc[0]
    assert two.verdict.startswith("insufficient") and np.isnan(two.ci_low)
    bleu = paired_differences(_pairs([0.3, -0.4, 0.2, 0.1, -0.2], metric="bleu"), ["bleu"]).iloc[0]
    assert bleu.verdict == "equivalent within \u00b11.5 BLEU"
    nist = paired_differences(_pairs([0.01, -0.01, 0.0], metric="nist"), ["nist"]).iloc[0]
    assert nist.verdict == "no clear difference" and np.isnan(nist.margin)  # no margin stated: never "equivalent"
    assert "paired t" in method_note(["test_nll", "bleu"]) and "\u00b10.02 nats/token" in method_note(["test_nll"])
