"""Convergence rates from tidy result tables: log-log slopes, their intervals, power vs log law, verdicts.

The slope of a curve is the least-squares slope of log(mean error over replicates) on log(n). Its interval is
computed over replicates, each replicate being one data stream across n (the data are nested), by one of the
methods of INTERVAL_METHODS; DEFAULT_INTERVAL is the one the package's calibration supports (reparam.calibration,
`reparam calibrate`: the coverage of each method measured on the main job's truth at the package's replicate
counts). Every method works on arrays of many curves at once: the least-squares slope has a closed form.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

SLOPE_COLUMNS = ["error", "slope", "slope_lo", "slope_hi", "intercept", "n_min", "n_max", "n_sizes", "n_replicates",
                 "min_replicates"]

#: Fewest replicates (finite error values) at every n for a slope interval and a verdict. With fewer, no method
#: can see the spread between replicates (with one replicate the "interval" has width zero), so the interval is
#: left empty (NaN) and every verdict says "insufficient".
MIN_REPLICATES = 3


def loglog_slopes(log_n: np.ndarray, log_y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares slope and intercept of log_y on log_n along the last axis, for any leading shape (the closed
    form of np.polyfit of degree 1). A curve with a non-finite value at some n gets NaN."""
    x = np.asarray(log_n, dtype=float)
    x_centred = x - x.mean()
    y = np.asarray(log_y, dtype=float)
    slope = (y * x_centred).sum(axis=-1) / (x_centred ** 2).sum()  # sum((x - xbar) y) = sum((x - xbar)(y - ybar))
    intercept = y.mean(axis=-1) - slope * x.mean()
    return slope, intercept


STATISTICS = {"mean": np.nanmean, "median": np.nanmedian}


def _log_centre(values: np.ndarray, statistic: str) -> np.ndarray:
    """log of the statistic over replicates (axis -2 of (..., replicates, sizes)); NaN where it is not positive."""
    with warnings.catch_warnings():  # a size where every replicate is NaN (a resample of failed fits): NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        centre = STATISTICS[statistic](values, axis=-2)
        return np.where(centre > 0, np.log(np.where(centre > 0, centre, 1.0)), np.nan)


def curve_slopes(values: np.ndarray, log_n: np.ndarray, statistic: str = "mean") -> tuple[np.ndarray, np.ndarray]:
    """The package's slope statistic of every curve of `values` (..., replicates, sizes): slope and intercept of
    log(statistic over replicates) on log n."""
    return loglog_slopes(log_n, _log_centre(values, statistic))


def bootstrap_slopes(values: np.ndarray, log_n: np.ndarray, n_boot: int = 2000, seed: int = 0,
                     statistic: str = "mean") -> np.ndarray:
    """(..., n_boot) slopes of `values` (..., replicates, sizes) with replicates resampled with replacement, the
    SAME replicate ids at every n. Draw k uses the k-th row of default_rng(seed).integers(0, R, (n_boot, R)), the
    same draws as n_boot successive calls of size R (so every curve gets the draws the package has always used)."""
    replicates = values.shape[-2]
    picks = np.random.default_rng(seed).integers(0, replicates, size=(n_boot, replicates))
    out = np.empty(values.shape[:-2] + (n_boot,))
    chunk = max(1, int(4e7 // max(1, values[..., 0, 0].size * replicates * values.shape[-1])))  # bound the memory
    for start in range(0, n_boot, chunk):
        resampled = values[..., picks[start:start + chunk], :]  # (..., chunk, replicates, sizes)
        out[..., start:start + chunk] = curve_slopes(resampled, log_n, statistic)[0]
    return out


def jackknife_slopes(values: np.ndarray, log_n: np.ndarray, statistic: str = "mean") -> np.ndarray:
    """(..., replicates) slopes with one replicate left out each (leave-one-replicate-out)."""
    replicates = values.shape[-2]
    keep = ~np.eye(replicates, dtype=bool)
    return np.stack([curve_slopes(values[..., keep[i], :], log_n, statistic)[0] for i in range(replicates)], axis=-1)


def replicate_slopes(values: np.ndarray, log_n: np.ndarray) -> np.ndarray:
    """(..., replicates) log-log slope of each replicate's own curve (NaN where a value is missing or not positive)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.where(values > 0, np.log(np.where(values > 0, values, 1.0)), np.nan)
    return loglog_slopes(log_n, logs)[0]


def _t_quantile(level: float, dof: np.ndarray) -> np.ndarray:
    from scipy.stats import t

    dof = np.asarray(dof, dtype=float)
    return np.where(dof >= 1, t.ppf(0.5 + level / 2, np.maximum(dof, 1)), np.nan)


def t_half_width(sd, count, level: float = 0.95) -> np.ndarray:
    """Half-width of the Student-t interval of a mean, elementwise: the t quantile with count - 1 degrees of
    freedom times sd / sqrt(count); NaN where count < 2 (one value shows no spread). The one formula behind every
    mean-with-interval of the package (tables, bands, paired differences)."""
    count = np.asarray(count, dtype=float)
    sd = np.asarray(sd, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(count >= 2, _t_quantile(level, count - 1) * sd / np.sqrt(np.maximum(count, 1)), np.nan)


def mean_half_width(values, level: float = 0.95) -> float:
    """`t_half_width` of the mean of the 1-D `values` (every value counts; NaN with fewer than 2)."""
    v = np.asarray(values, dtype=float)
    return float(t_half_width(v.std(ddof=1) if len(v) > 1 else np.nan, len(v), level))


def _percentile_bootstrap(values, log_n, slope, level, n_boot, seed, statistic):
    boot = bootstrap_slopes(values, log_n, n_boot, seed, statistic)
    alpha = (1 - level) / 2
    with warnings.catch_warnings():  # a curve whose every draw is NaN: NaN interval
        warnings.simplefilter("ignore", RuntimeWarning)
        lo, hi = np.nanquantile(boot, [alpha, 1 - alpha], axis=-1)
    return lo, hi


def _quantiles_at(draws: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """The quantile of each row of `draws` (..., B; NaN ignored) at its own probability `probs` (...), linear
    interpolation as np.quantile's default."""
    ordered = np.sort(draws, axis=-1)  # NaN last
    count = np.isfinite(ordered).sum(axis=-1)
    position = np.clip(probs, 0, 1) * np.maximum(count - 1, 0)
    below = np.floor(position).astype(int)
    above = np.minimum(below + 1, np.maximum(count - 1, 0))
    low = np.take_along_axis(ordered, below[..., None], axis=-1)[..., 0]
    high = np.take_along_axis(ordered, above[..., None], axis=-1)[..., 0]
    return np.where(count > 0, low + (position - below) * (high - low), np.nan)


def _bca_bootstrap(values, log_n, slope, level, n_boot, seed, statistic):
    """Efron's bias-corrected and accelerated percentile interval: the bootstrap quantiles at levels moved by the
    bias z0 (share of draws below the estimate) and the acceleration a (skewness of the jackknife slopes)."""
    from scipy.stats import norm

    boot = bootstrap_slopes(values, log_n, n_boot, seed, statistic)
    finite = np.isfinite(boot).sum(axis=-1)
    below = (boot < slope[..., None]).sum(axis=-1) + 0.5 * (boot == slope[..., None]).sum(axis=-1)
    share = np.clip(below / np.maximum(finite, 1), 1 / (n_boot + 1), n_boot / (n_boot + 1))
    z0 = norm.ppf(share)
    jack = jackknife_slopes(values, log_n, statistic)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        d = np.nanmean(jack, axis=-1, keepdims=True) - jack
        accel = np.nansum(d ** 3, axis=-1) / (6 * np.nansum(d ** 2, axis=-1) ** 1.5)
    accel = np.where(np.isfinite(accel), accel, 0.0)
    bounds = []
    for tail in ((1 - level) / 2, (1 + level) / 2):
        z = z0 + norm.ppf(tail)
        bounds.append(_quantiles_at(boot, norm.cdf(z0 + z / (1 - accel * z))))
    return bounds[0], bounds[1]


def _jackknife_t(values, log_n, slope, level, n_boot, seed, statistic):
    jack = jackknife_slopes(values, log_n, statistic)
    count = np.isfinite(jack).sum(axis=-1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        spread = np.nansum((jack - np.nanmean(jack, axis=-1, keepdims=True)) ** 2, axis=-1)
        se = np.sqrt((count - 1) / count * spread)
    half = _t_quantile(level, count - 1) * se
    return slope - half, slope + half


def _replicate_t(values, log_n, slope, level, n_boot, seed, statistic):
    per = replicate_slopes(values, log_n)
    count = np.isfinite(per).sum(axis=-1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        se = np.nanstd(per, axis=-1, ddof=1) / np.sqrt(count)
    half = _t_quantile(level, count - 1) * se
    return slope - half, slope + half


@dataclass(frozen=True)
class IntervalMethod:
    """One way of turning replicates into a slope interval around the package's point estimate."""

    name: str
    label: str  # what a table header or sentence calls the interval, e.g. "percentile-bootstrap"
    description: str
    compute: object  # (values, log_n, slope, level, n_boot, seed, statistic) -> (lo, hi) arrays


INTERVAL_METHODS: dict[str, IntervalMethod] = {m.name: m for m in [
    IntervalMethod("percentile-bootstrap", "percentile-bootstrap",
                   "replicates resampled with replacement (n_boot draws, the same ids at every n); the "
                   "alpha/2 and 1 - alpha/2 quantiles of the resampled slopes", _percentile_bootstrap),
    IntervalMethod("bca-bootstrap", "BCa bootstrap",
                   "the bootstrap draws' quantiles at levels corrected for bias (share of draws below the "
                   "estimate) and acceleration (skewness of the jackknife slopes), Efron's BCa", _bca_bootstrap),
    IntervalMethod("jackknife-t", "jackknife-t",
                   "slope +- t(R-1) quantile x jackknife standard error (leave one replicate out)", _jackknife_t),
    IntervalMethod("replicate-t", "replicate-slope t",
                   "slope +- t(R-1) quantile x standard error of the R per-replicate log-log slopes", _replicate_t),
]}

#: The interval of every slope the package reports, chosen by its calibration (docs/reference/calibration.md,
#: figures/calibration/): over independent reruns of the main job at the package's replicate counts (4, 5, 10,
#: 20), the jackknife-t interval covers the slope of exact-specified fits and regression errors at about the
#: nominal level, where the percentile bootstrap (the package's interval before) under-covers at R <= 10, and it
#: is the least under-covering of the methods on the heavy-tailed over-specified errors. "percentile-bootstrap"
#: stays available by name (method=...).
DEFAULT_INTERVAL = "jackknife-t"


def interval_method(name: str | None) -> IntervalMethod:
    """The IntervalMethod called `name` (None: DEFAULT_INTERVAL); ValueError naming the bad argument."""
    name = DEFAULT_INTERVAL if name is None else name
    if name not in INTERVAL_METHODS:
        raise ValueError(f"method={name!r} is invalid: must be one of {list(INTERVAL_METHODS)}")
    return INTERVAL_METHODS[name]


def interval_label(method: str | None = None, level: float = 0.95) -> str:
    """How a header or sentence names the interval, e.g. '95% jackknife-t CI'."""
    return f"{level:.0%} {interval_method(method).label} CI"


def slope_intervals(values: np.ndarray, log_n: np.ndarray, method: str | None = None, level: float = 0.95,
                    n_boot: int = 2000, seed: int = 0, statistic: str = "mean") -> dict[str, np.ndarray]:
    """Slope, intercept and interval of every curve of `values` (..., replicates, sizes) at once: the arrays
    'slope', 'intercept', 'slope_lo', 'slope_hi' of shape `values.shape[:-2]`."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if statistic not in STATISTICS:
        raise ValueError(f"statistic={statistic!r} is invalid: must be one of {list(STATISTICS)}")
    chosen = interval_method(method)
    values = np.asarray(values, dtype=float)
    slope, intercept = curve_slopes(values, log_n, statistic)
    lo, hi = chosen.compute(values, log_n, slope, level, n_boot, seed, statistic)
    return dict(slope=slope, intercept=intercept, slope_lo=np.asarray(lo, dtype=float),
                slope_hi=np.asarray(hi, dtype=float))


def slope_with_interval(table: pd.DataFrame, error: str, n_col: str = "n", replicate_col: str = "replicate",
                        n_boot: int = 2000, seed: int = 0, level: float = 0.95, statistic: str = "mean",
                        method: str | None = None) -> dict:
    """Slope of one curve (all rows of `table`) with its interval (`method`: a name of INTERVAL_METHODS, None for
    DEFAULT_INTERVAL). `statistic` ('mean' or 'median') is what is taken over replicates at each n before the
    log-log fit."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if statistic not in STATISTICS:
        raise ValueError(f"statistic={statistic!r} is invalid: must be one of {list(STATISTICS)}")
    interval_method(method)
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
    fit = slope_intervals(values, np.log(sizes), method, level, n_boot, seed, statistic)
    if not np.isfinite(fit["slope"]):
        return out
    out["slope"], out["intercept"] = float(fit["slope"]), float(fit["intercept"])
    if out["min_replicates"] < MIN_REPLICATES:
        return out  # point estimate only: no interval from fewer than MIN_REPLICATES replicates at some n
    out["slope_lo"], out["slope_hi"] = float(fit["slope_lo"]), float(fit["slope_hi"])
    return out


def fit_slopes(df: pd.DataFrame, error: str, by: list[str], n_col: str = "n", replicate_col: str = "replicate",
               n_boot: int = 2000, seed: int = 0, level: float = 0.95, statistic: str = "mean",
               method: str | None = None) -> pd.DataFrame:
    """One row per group of `by`: the columns `by + SLOPE_COLUMNS` (`method`: the interval, None for
    DEFAULT_INTERVAL)."""
    if error not in df.columns:
        raise ValueError(f"error={error!r} is not a column of the table; columns are {list(df.columns)}")
    rows = []
    for key, group in df.groupby(by, sort=True) if by else [((), df)]:
        key = key if isinstance(key, tuple) else (key,)
        rows.append({**dict(zip(by, key)),
                     **slope_with_interval(group, error, n_col, replicate_col, n_boot, seed, level, statistic,
                                           method)})
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
                     min_replicates: int | None = None, method: str | None = None) -> str:
    """One line a reader can cite (`method`: the interval's method, None for DEFAULT_INTERVAL)."""
    target = (f"{prediction.value:+.2f} +- {prediction.tolerance:.2f}" if prediction.kind == "equal"
              else f"flatter than {prediction.value:+.2f}")
    if min_replicates is not None and min_replicates < MIN_REPLICATES:
        return (f"measured slope {slope:+.3f} (no interval: {int(min_replicates)} valid replicate(s) at some n, "
                f"need >= {MIN_REPLICATES}), predicted {target}: INSUFFICIENT")
    return (f"measured slope {slope:+.3f} [{slope_lo:+.3f}, {slope_hi:+.3f}] ({interval_label(method, level)}), "
            f"predicted {target}: {verdict(slope_lo, slope_hi, prediction, slope).upper()}")
