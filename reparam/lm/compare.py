"""Paired comparison of prefix structures across replicates, with paired t intervals, and score summaries.

In the low-data protocol every structure is trained on the same subset with the same seed in each
replicate, so the natural estimate of "structure s against the baseline" at one n is the mean over
replicates of the paired difference ``score(s) - score(baseline)``. Its 95% interval is the PAIRED t interval
over replicates (`INTERVAL_METHOD`: mean +- t_{r-1} sd / sqrt(r) with r - 1 degrees of freedom), whose coverage
is right at a handful of replicates when the differences are roughly normal. (A percentile bootstrap over 3
replicates is no 95% interval: it is [min, max] of the three differences, and it excludes 0 whenever the three
share a sign, a quarter of the time when there is no effect.) With fewer than `min_replicates` (3) pairs there is
NO interval (NaN) and the verdict is "insufficient".

Verdicts (`_verdict`): "<structure> better" / "<baseline> better" only when the interval excludes 0;
"equivalent within +-m" when the whole interval lies inside the metric's equivalence margin m
(`EQUIVALENCE_MARGINS`, the one place the margins live); "no clear difference" otherwise. `score_summary` gives
each score's mean over replicates with a Student-t interval of the mean, under the same rule.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: Metrics where lower is better; every other metric is higher-is-better.
LOWER_IS_BETTER = {"test_nll", "best_dev"}
#: Equivalence margins: a paired difference whose whole interval lies within +-margin is "equivalent"; metrics not
#: listed get no equivalence verdict. Test NLL in nats/token, BLEU in points (0-100).
EQUIVALENCE_MARGINS = {"test_nll": 0.02, "bleu": 1.5}
#: How every paired interval is computed (stated in every table header that shows one).
INTERVAL_METHOD = "95% paired t interval over replicates (df = replicates - 1)"
#: Fewer paired replicates than this give no interval and the verdict "insufficient".
MIN_REPLICATES = 3


def paired_t_interval(d, level: float = 0.95) -> tuple[float, float]:
    """(low, high): the paired t interval of the mean of the differences `d` (len(d) - 1 degrees of freedom);
    NaN for fewer than 2 values; [mean, mean] when every difference is the same."""
    from reparam.rates import mean_half_width

    d = np.asarray(d, dtype=float)
    if len(d) < 2:
        return np.nan, np.nan
    mean = float(d.mean())
    half = mean_half_width(d, level)
    return mean - half, mean + half


def paired_differences(df: pd.DataFrame, metrics: list[str], baseline: str = "independent",
                       by: tuple[str, ...] = ("init", "n"), pair_on: str = "replicate",
                       level: float = 0.95, min_replicates: int = MIN_REPLICATES,
                       margins: dict[str, float] | None = None) -> pd.DataFrame:
    """One row per (by..., structure != baseline, metric): mean paired difference, paired t interval and verdict.

    df: one row per (by..., structure, pair_on) with the metric columns. Columns: replicates, mean_diff, sd_diff,
    ci_low, ci_high, margin (the metric's equivalence margin, NaN if none), method and verdict (`_verdict`).
    """
    margins = EQUIVALENCE_MARGINS if margins is None else margins
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
                       "sd_diff": float(d.std(ddof=1)) if len(d) > 1 else np.nan, "ci_low": np.nan, "ci_high": np.nan,
                       "margin": float(margins[metric]) if metric in margins else np.nan, "method": INTERVAL_METHOD}
                if len(d) >= min_replicates:  # fewer: no interval
                    row["ci_low"], row["ci_high"] = paired_t_interval(d, level)
                row["verdict"] = _verdict(row, structure, baseline, metric, min_replicates)
                rows.append(row)
    return pd.DataFrame(rows)


def _verdict(row: dict, structure: str, baseline: str, metric: str, min_replicates: int) -> str:
    if row["replicates"] < min_replicates:
        return f"insufficient ({row['replicates']} < {min_replicates} replicates)"
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0  # +1: a positive difference favours `structure`
    lo, hi = sorted((sign * row["ci_low"], sign * row["ci_high"]))
    margin = row.get("margin", np.nan)
    within = bool(np.isfinite(margin) and -margin <= lo and hi <= margin)
    if lo > 0 or hi < 0:
        winner = structure if lo > 0 else baseline
        return f"{winner} better (by less than the {equivalence_label(metric, margin)} margin)" if within else f"{winner} better"
    if within:
        return f"equivalent within {equivalence_label(metric, margin)}"
    return "no clear difference"


def equivalence_label(metric: str, margin: float) -> str:
    """'+-0.02 nats/token' / '+-1.5 BLEU': a margin as the verdicts write it."""
    unit = {"test_nll": " nats/token", "bleu": " BLEU"}.get(metric, "")
    return f"\u00b1{margin:g}{unit}"


def format_difference(row) -> str:
    """'+0.22 [+0.10, +0.35]' (mean paired difference and its interval, with two significant digits of the
    interval's width, so a small difference never prints as '+0.00 [+0.00, +0.00]'), or '+0.22 (insufficient:
    2 replicates, no interval)' where `paired_differences` gave none."""
    mean, lo, hi = row["mean_diff"], row["ci_low"], row["ci_high"]
    if not np.isfinite(mean):
        return "no pairs"
    if not (np.isfinite(lo) and np.isfinite(hi)):
        reps = int(row["replicates"])
        return f"{mean:+.3g} (insufficient: {reps} replicate{'s' if reps != 1 else ''}, no interval)"
    if hi == lo:
        return f"{mean:+.3g} (no spread: every replicate gives this difference)"
    digits = int(np.clip(np.ceil(-np.log10(hi - lo)) + 1, 2, 8))  # two significant digits of the width
    return f"{mean:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]"


def paired_markdown(paired: pd.DataFrame, labels: dict[str, str] | None = None) -> str:
    """The paired table as markdown, one row per (init, n, structure, metric), intervals by `format_difference`
    (the caller's header states `INTERVAL_METHOD` and the margins: `method_note`)."""
    lines = ["| init | n | structure - baseline | metric | replicates | difference [95% CI] | verdict |",
             "|---|---|---|---|---|---|---|"]
    for _, r in paired.sort_values(["metric", "init", "n", "structure"]).iterrows():
        lines.append(f"| {r['init']} | {int(r['n'])} | {r['structure']} - {r['baseline']} | "
                     f"{(labels or {}).get(r['metric'], r['metric'])} | {int(r['replicates'])} | "
                     f"{format_difference(r)} | {r['verdict']} |")
    return "\n".join(lines)


def method_note(metrics=None) -> str:
    """The sentence every table header with paired intervals carries: the method, the minimum replicates, the
    verdict rule and the equivalence margins (of `metrics`, default all)."""
    shown = [m for m in (metrics or EQUIVALENCE_MARGINS) if m in EQUIVALENCE_MARGINS]
    margins = ", ".join(equivalence_label(m, EQUIVALENCE_MARGINS[m]) for m in shown)
    return (f"{INTERVAL_METHOD}; no interval from fewer than {MIN_REPLICATES} replicates (\"insufficient\"); "
            f"\"better\" only when the interval excludes 0" +
            (f"; \"equivalent\" when it lies within the margin ({margins})" if margins else ""))


def mean_interval(values, level: float = 0.95, min_replicates: int = 3) -> tuple[float, float, float]:
    """(mean, low, high): the mean of the finite `values` and its Student-t interval (n - 1 degrees of freedom);
    the interval is (NaN, NaN) with fewer than `min_replicates` values (never z = 1.96 from 2 seeds)."""
    from reparam.rates import mean_half_width

    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if not len(v):
        return np.nan, np.nan, np.nan
    mean = float(v.mean())
    if len(v) < max(min_replicates, 2):
        return mean, np.nan, np.nan
    half = mean_half_width(v, level)
    return mean, mean - half, mean + half


def score_summary(df: pd.DataFrame, metrics: list[str], by: tuple[str, ...] = ("init", "structure", "n"),
                  level: float = 0.95, min_replicates: int = 3) -> pd.DataFrame:
    """One row per `by` group: `<metric>_mean`, `_sd`, `_ci_low`, `_ci_high` (`mean_interval`: Student t, none from
    fewer than `min_replicates` replicates) and `replicates` (rows of the group)."""
    rows = []
    for keys, g in df.groupby(list(by)):
        keys = keys if isinstance(keys, tuple) else (keys,)
        row = {**dict(zip(by, keys)), "replicates": len(g)}
        for m in metrics:
            mean, lo, hi = mean_interval(g[m], level, min_replicates)
            sd = g[m].std(ddof=1) if g[m].notna().sum() > 1 else np.nan
            row.update({f"{m}_mean": mean, f"{m}_sd": sd, f"{m}_ci_low": lo, f"{m}_ci_high": hi})
        rows.append(row)
    return pd.DataFrame(rows)


def variant_agreement(variants: dict[str, pd.DataFrame], metrics: list[str], structure: str = "shared",
                      baseline: str = "independent",
                      min_replicates: int = MIN_REPLICATES) -> pd.DataFrame:
    """The paired difference `structure - baseline` under each variant of a protocol, on common cells only.

    variants: {label: table with columns init, n, replicate, structure, metrics...} (e.g. prefixes in the top
    K layers vs in every layer). Only the (init, n, replicate) cells that every variant recorded for both
    structures enter, so the variants are compared on the same training subsets and seeds. One row per
    (variant, init, n, metric) with the columns of `paired_differences`.
    """
    keys = ["init", "n", "replicate"]
    common = None
    for df in variants.values():
        both = df[df.structure.isin([structure, baseline])]
        cells = both.groupby(keys).structure.nunique()
        cells = set(cells[cells == 2].index)
        common = cells if common is None else common & cells
    rows = []
    for label, df in variants.items():
        sub = df[df.structure.isin([structure, baseline])]
        sub = sub[[tuple(k) in (common or set()) for k in sub[keys].itertuples(index=False)]]
        if sub.empty:
            continue
        paired = paired_differences(sub, metrics, baseline=baseline, min_replicates=min_replicates)
        rows.append(paired.assign(variant=label))
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()


def budget_diagnostics(selection: pd.DataFrame, max_steps: int, by: tuple[str, ...] = ("structure", "init", "n")) -> pd.DataFrame:
    """How much of each structure's result is its learning-rate grid and step budget, from the lr-selection rows.

    selection: one row per (cell, structure, init, lr candidate) with `lr`, `selected`, `best_dev`, `best_step` and
    `dev_curve` ([[step, dev loss], ...] as JSON text or a list). One row per `by` group of the selected candidates:
    `cells`; `largest_lr_selected` (cells whose selected lr is the largest of the candidates: the grid's edge, so a
    larger lr might have done better); `best_at_cap` (cells whose best dev loss came at `max_steps`: still improving
    when the budget ran out); `dev_start` and `dev_best` (mean dev loss at step 0 and at the best check).
    """
    import json

    rows = []
    cell = [c for c in ("dataset", "n", "replicate", "structure", "init") if c in selection.columns]
    for keys, g in selection.groupby(list(by)):
        keys = keys if isinstance(keys, tuple) else (keys,)
        largest = edge = start = best = 0.0
        cells = 0
        for _, c in g.groupby(cell):
            chosen = c[c.selected.astype(bool)]
            if chosen.empty:
                continue
            s = chosen.iloc[0]
            curve = json.loads(s.dev_curve) if isinstance(s.dev_curve, str) else s.dev_curve
            cells += 1
            largest += float(s.lr) == float(c.lr.max())
            edge += int(s.best_step) >= max_steps
            start += float(curve[0][1])
            best += float(s.best_dev)
        if cells:
            rows.append({**dict(zip(by, keys)), "cells": cells, "largest_lr_selected": int(largest),
                         "best_at_cap": int(edge), "dev_start": start / cells, "dev_best": best / cells})
    return pd.DataFrame(rows)
