"""Convergence rates from tidy result tables: log-log slopes, bootstrap intervals, power vs log law, verdicts.

The slope of a curve is the least-squares slope of log(mean error over replicates) on log(n). Its
interval is a percentile bootstrap over replicates: replicates are resampled with replacement and the
SAME replicate ids are used at every n (the data are nested, so a replicate is one stream across n).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

SLOPE_COLUMNS = ["error", "slope", "slope_lo", "slope_hi", "intercept", "n_min", "n_max", "n_sizes", "n_replicates",
                 "min_replicates"]

#: Fewest replicates (finite error values) at every n for a slope interval and a verdict. With fewer, the
#: bootstrap cannot see the spread between replicates (with one replicate the "interval" has width zero), so
#: the interval is left empty (NaN) and every verdict says "insufficient".
MIN_REPLICATES = 3


def _loglog_slope(log_n: np.ndarray, log_err: np.ndarray) -> tuple[float, float]:
    slope, intercept = np.polyfit(log_n, log_err, 1)
    return float(slope), float(intercept)


STATISTICS = {"mean": np.nanmean, "median": np.nanmedian}


def slope_with_interval(table: pd.DataFrame, error: str, n_col: str = "n", replicate_col: str = "replicate",
                        n_boot: int = 2000, seed: int = 0, level: float = 0.95, statistic: str = "mean") -> dict:
    """Slope of one curve (all rows of `table`) with its bootstrap interval. `statistic` ('mean' or 'median')
    is what is taken over replicates at each n before the log-log fit."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if statistic not in STATISTICS:
        raise ValueError(f"statistic={statistic!r} is invalid: must be one of {list(STATISTICS)}")
    centre = STATISTICS[statistic]
    wide = table.pivot_table(index=replicate_col, columns=n_col, values=error, aggfunc="mean")  # (replicates, sizes)
    wide = wide.dropna(axis=1, how="all")
    sizes = wide.columns.to_numpy(dtype=float)
    values = wide.to_numpy(dtype=float)
    out = dict(error=error, slope=np.nan, slope_lo=np.nan, slope_hi=np.nan, intercept=np.nan,
               n_min=sizes.min() if len(sizes) else np.nan, n_max=sizes.max() if len(sizes) else np.nan,
               n_sizes=len(sizes), n_replicates=values.shape[0],
               min_replicates=int(np.isfinite(values).sum(axis=0).min()) if len(sizes) else 0)
    if len(sizes) < 2:
        return out
    means = centre(values, axis=0)
    if not np.all(means > 0):
        return out
    log_n = np.log(sizes)
    out["slope"], out["intercept"] = _loglog_slope(log_n, np.log(means))
    if out["min_replicates"] < MIN_REPLICATES:
        return out  # point estimate only: no interval from fewer than MIN_REPLICATES replicates at some n
    rng = np.random.default_rng(seed)
    boot = np.empty(n_boot)
    for k in range(n_boot):
        pick = rng.integers(0, values.shape[0], size=values.shape[0])
        m = centre(values[pick], axis=0)
        boot[k] = _loglog_slope(log_n, np.log(m))[0] if np.all(m > 0) else np.nan
    alpha = (1 - level) / 2
    out["slope_lo"], out["slope_hi"] = (float(q) for q in np.nanquantile(boot, [alpha, 1 - alpha]))
    return out


def fit_slopes(df: pd.DataFrame, error: str, by: list[str], n_col: str = "n", replicate_col: str = "replicate",
               n_boot: int = 2000, seed: int = 0, level: float = 0.95, statistic: str = "mean") -> pd.DataFrame:
    """One row per group of `by`: the columns `by + SLOPE_COLUMNS`."""
    if error not in df.columns:
        raise ValueError(f"error={error!r} is not a column of the table; columns are {list(df.columns)}")
    rows = []
    for key, group in df.groupby(by, sort=True) if by else [((), df)]:
        key = key if isinstance(key, tuple) else (key,)
        rows.append({**dict(zip(by, key)),
                     **slope_with_interval(group, error, n_col, replicate_col, n_boot, seed, level, statistic)})
    return pd.DataFrame(rows, columns=list(by) + SLOPE_COLUMNS)


def power_vs_log_law(n: np.ndarray, error: np.ndarray) -> dict:
    """Fit error ~ c n^slope and error ~ c / log(n)^tau to mean errors; compare by residual sum of squares
    in log space (both laws have two parameters, so the lower RSS is the better description)."""
    n, error = np.asarray(n, dtype=float), np.asarray(error, dtype=float)
    keep = (error > 0) & (n > 1)
    n, error = n[keep], error[keep]
    if len(n) < 3:
        raise ValueError(f"need at least 3 sample sizes with positive error, got {len(n)}")
    log_err = np.log(error)
    out = {}
    for law, x in (("power", np.log(n)), ("log", np.log(np.log(n)))):
        coef = np.polyfit(x, log_err, 1)
        out[f"{law}_rss"] = float(np.sum((np.polyval(coef, x) - log_err) ** 2))
        out[f"{law}_exponent"] = float(coef[0]) if law == "power" else float(-coef[0])
    out["better_law"] = "power" if out["power_rss"] <= out["log_rss"] else "log"
    return out


@dataclass
class Prediction:
    """What THEORY predicts for a slope.

    kind 'equal': the slope should be `value` up to `tolerance` (log factors bias finite-n slopes:
        sqrt(log n / n) has local slope -1/2 + 1/(2 log n), about -0.45 at n = 1e4).
    kind 'flatter_than': no polynomial rate as fast as `value`: the slope should lie above it.
    """

    value: float
    kind: str = "equal"
    tolerance: float = 0.1
    max_width: float = 0.6

    def __post_init__(self):
        if self.kind not in ("equal", "flatter_than"):
            raise ValueError(f"kind={self.kind!r} is unknown; choose 'equal' or 'flatter_than'")


def verdict(slope_lo: float, slope_hi: float, prediction: Prediction, slope: float | None = None,
            min_replicates: int | None = None) -> str:
    """'agree', 'disagree', 'inconclusive' or 'insufficient' for a measured interval against a prediction.

    'insufficient' when `min_replicates` (the fewest valid replicates at any n, if given) is below
    MIN_REPLICATES: too few replicates to measure an interval, whatever the numbers say.

    For kind 'equal': 'disagree' when the interval excludes value +- tolerance; 'agree' only when the
    interval overlaps that band, is at most `max_width` wide AND the point estimate `slope` (if given)
    lies inside the band; anything else is 'inconclusive' (an interval that merely grazes the band
    does not count as agreement)."""
    if min_replicates is not None and min_replicates < MIN_REPLICATES:
        return "insufficient"
    if not (np.isfinite(slope_lo) and np.isfinite(slope_hi)):
        return "inconclusive"
    if prediction.kind == "flatter_than":
        if slope_lo > prediction.value:
            return "agree"
        return "disagree" if slope_hi < prediction.value else "inconclusive"
    lo, hi = prediction.value - prediction.tolerance, prediction.value + prediction.tolerance
    if slope_hi < lo or slope_lo > hi:
        return "disagree"
    if slope_hi - slope_lo > prediction.max_width:
        return "inconclusive"
    if slope is not None and not lo <= slope <= hi:
        return "inconclusive"
    return "agree"


def describe_verdict(slope: float, slope_lo: float, slope_hi: float, prediction: Prediction, level: float = 0.95,
                     min_replicates: int | None = None) -> str:
    """One line a reader can cite."""
    target = (f"{prediction.value:+.2f} +- {prediction.tolerance:.2f}" if prediction.kind == "equal"
              else f"flatter than {prediction.value:+.2f}")
    if min_replicates is not None and min_replicates < MIN_REPLICATES:
        return (f"measured slope {slope:+.3f} (no interval: {int(min_replicates)} valid replicate(s) at some n, "
                f"need >= {MIN_REPLICATES}), predicted {target}: INSUFFICIENT")
    return (f"measured slope {slope:+.3f} [{slope_lo:+.3f}, {slope_hi:+.3f}] ({level:.0%} bootstrap CI), "
            f"predicted {target}: {verdict(slope_lo, slope_hi, prediction, slope).upper()}")
