"""Paired comparison of prefix structures across replicates, with bootstrap intervals.

In the low-data protocol every structure is trained on the same subset with the same seed in each
replicate, so the natural estimate of "structure s against the baseline" at one n is the mean over
replicates of the paired difference ``score(s) - score(baseline)``; its 95% interval is a percentile
bootstrap over replicates (`scipy.stats.bootstrap`). With fewer than `min_replicates` pairs the verdict
is "insufficient": an interval from two points is not evidence.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: Metrics where lower is better; every other metric is higher-is-better.
LOWER_IS_BETTER = {"test_nll", "best_dev"}


def paired_differences(df: pd.DataFrame, metrics: list[str], baseline: str = "independent",
                       by: tuple[str, ...] = ("init", "n"), pair_on: str = "replicate", n_boot: int = 2000,
                       level: float = 0.95, min_replicates: int = 3, seed: int = 0) -> pd.DataFrame:
    """One row per (by..., structure != baseline, metric): mean paired difference, interval and verdict.

    df: one row per (by..., structure, pair_on) with the metric columns. A structure's verdict says which
    side the interval lies on ("<structure> better", "<baseline> better", "no clear difference").
    """
    from scipy import stats

    missing = [c for c in [*by, "structure", pair_on, *metrics] if c not in df.columns]
    if missing:
        raise ValueError(f"paired_differences: columns {missing} are missing from the table")
    rows = []
    for keys, g in df.groupby(list(by)):
        keys = keys if isinstance(keys, tuple) else (keys,)
        base = g[g.structure == baseline].set_index(pair_on)
        for structure, gs in g[g.structure != baseline].groupby("structure"):
            gs = gs.set_index(pair_on)
            for metric in metrics:
                common = gs.index.intersection(base.index)
                d = (gs.loc[common, metric] - base.loc[common, metric]).dropna().to_numpy(dtype=float)
                row = {**dict(zip(by, keys)), "structure": structure, "baseline": baseline, "metric": metric,
                       "replicates": len(d), "mean_diff": float(d.mean()) if len(d) else np.nan,
                       "sd_diff": float(d.std(ddof=1)) if len(d) > 1 else np.nan, "ci_low": np.nan, "ci_high": np.nan}
                if len(d) >= 2:
                    if np.ptp(d) == 0:
                        row["ci_low"] = row["ci_high"] = float(d[0])
                    else:
                        ci = stats.bootstrap((d,), np.mean, n_resamples=n_boot, confidence_level=level,
                                             method="percentile", random_state=seed).confidence_interval
                        row["ci_low"], row["ci_high"] = float(ci.low), float(ci.high)
                row["verdict"] = _verdict(row, structure, baseline, metric, min_replicates)
                rows.append(row)
    return pd.DataFrame(rows)


def _verdict(row: dict, structure: str, baseline: str, metric: str, min_replicates: int) -> str:
    if row["replicates"] < min_replicates:
        return f"insufficient ({row['replicates']} < {min_replicates} replicates)"
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0  # +1: a positive difference favours `structure`
    lo, hi = sorted((sign * row["ci_low"], sign * row["ci_high"]))
    if lo > 0:
        return f"{structure} better"
    if hi < 0:
        return f"{baseline} better"
    return "no clear difference"
