"""Slope fits and verdicts against synthetic tables whose true law is known."""
import numpy as np
import pandas as pd
import pytest

from reparam.rates import Prediction, fit_slopes, power_vs_log_law, verdict


def synthetic_table(law, replicates=20, noise=0.1, seed=0):
    rng = np.random.default_rng(seed)
    sizes = np.logspace(3, 5, 7).round()
    rows = [dict(structure="s", n=n, replicate=r, err=law(n) * np.exp(noise * rng.standard_normal()))
            for n in sizes for r in range(replicates)]
    return pd.DataFrame(rows)


def test_recovers_a_known_power_law_slope_with_covering_interval():
    table = synthetic_table(lambda n: 3.0 * n ** -0.5)
    row = fit_slopes(table, "err", by=["structure"], n_boot=400).iloc[0]
    assert row.slope == pytest.approx(-0.5, abs=0.03)  # 7 sizes x 20 reps of 10% noise
    assert row.slope_lo < -0.5 < row.slope_hi
    assert row.slope_hi - row.slope_lo < 0.1
    assert verdict(row.slope_lo, row.slope_hi, Prediction(-0.5)) == "agree"
    assert verdict(row.slope_lo, row.slope_hi, Prediction(-0.25)) == "disagree"


def test_log_law_is_preferred_for_a_logarithmic_decay_and_power_for_a_power_law():
    n = np.logspace(2, 6, 9)
    assert power_vs_log_law(n, 1 / np.log(n) ** 2)["better_law"] == "log"
    assert power_vs_log_law(n, n ** -0.25)["better_law"] == "power"


def test_flatter_than_verdicts():
    p = Prediction(-0.25, kind="flatter_than")
    assert verdict(-0.2, -0.05, p) == "agree"
    assert verdict(-0.6, -0.4, p) == "disagree"
    assert verdict(-0.3, -0.1, p) == "inconclusive"


def test_wide_interval_is_inconclusive_not_agreement():
    assert verdict(-0.9, 0.0, Prediction(-0.5)) == "inconclusive"
    assert verdict(float("nan"), -0.4, Prediction(-0.5)) == "inconclusive"


def test_interval_grazing_the_band_with_a_point_estimate_outside_is_not_agreement():
    assert verdict(-0.96, -0.47, Prediction(-0.5), slope=-0.86) == "inconclusive"
    assert verdict(-0.96, -0.47, Prediction(-0.5), slope=-0.55) == "agree"


def test_unknown_column_is_named():
    with pytest.raises(ValueError, match="error='nope'"):
        fit_slopes(synthetic_table(lambda n: n ** -0.5), "nope", by=["structure"])


@pytest.mark.parametrize("replicates", [1, 2])
def test_too_few_replicates_give_no_interval_and_an_insufficient_verdict(replicates):
    """One replicate used to give a zero-width '95% CI' (every bootstrap draw is the same replicate) and a
    confident verdict; below MIN_REPLICATES valid replicates per n there is no interval and no verdict."""
    from reparam.rates import MIN_REPLICATES, describe_verdict

    table = synthetic_table(lambda n: 3.0 * n ** -0.5, replicates=replicates)
    row = fit_slopes(table, "err", by=["structure"], n_boot=200).iloc[0]
    assert row.min_replicates == replicates < MIN_REPLICATES == 3
    assert row.slope == pytest.approx(-0.5, abs=0.15)  # the point estimate is still reported
    assert np.isnan(row.slope_lo) and np.isnan(row.slope_hi)
    assert verdict(row.slope_lo, row.slope_hi, Prediction(-0.5), row.slope, row.min_replicates) == "insufficient"
    assert describe_verdict(row.slope, row.slope_lo, row.slope_hi, Prediction(-0.5),
                            min_replicates=row.min_replicates).endswith("INSUFFICIENT")


def test_replicates_are_counted_per_n_and_the_minimum_decides():
    table = synthetic_table(lambda n: 3.0 * n ** -0.5, replicates=5)
    table = table[~((table.n == table.n.max()) & (table.replicate >= 2))]  # only 2 valid replicates at the largest n
    row = fit_slopes(table, "err", by=["structure"], n_boot=200).iloc[0]
    assert row.min_replicates == 2 and np.isnan(row.slope_lo)
    full = fit_slopes(synthetic_table(lambda n: 3.0 * n ** -0.5, replicates=3), "err", by=["structure"], n_boot=200)
    assert full.min_replicates.iloc[0] == 3 and full.slope_hi.iloc[0] > full.slope_lo.iloc[0]


def test_mean_half_width_is_the_student_t_interval_and_covers_at_its_level():
    """The shared t half-width: equal to scipy's t interval of a mean; NaN from one value; and its 95% interval
    covers the true mean of normal samples of size 3 in 95% of 4000 seeded draws (Monte Carlo SE 0.34%, so
    +-1.5% is over 4 SE)."""
    from scipy import stats

    from reparam.rates import mean_half_width, t_half_width

    x = np.array([1.0, 2.5, 2.0])
    lo, hi = stats.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=stats.sem(x))
    assert mean_half_width(x) == pytest.approx((hi - lo) / 2, rel=1e-12)
    assert np.isnan(mean_half_width([1.0])) and np.isnan(mean_half_width([]))
    assert np.isnan(t_half_width([1.0, 1.0], [1, 0])).all()
    draws = np.random.default_rng(3).normal(size=(4000, 3))
    half = t_half_width(draws.std(axis=1, ddof=1), np.full(4000, 3))
    covered = np.abs(draws.mean(axis=1)) <= half
    assert covered.mean() == pytest.approx(0.95, abs=0.015)
    # what it replaces in small samples: [min, max] of 3 values covers the true mean (0) only when the three
    # do not share a sign, 1 - 2 / 2**3 = 75% of the time (MC SE 0.7%)
    minmax = (draws.min(axis=1) <= 0) & (draws.max(axis=1) >= 0)
    assert minmax.mean() == pytest.approx(0.75, abs=0.03)
