"""How often is a slope verdict wrong? The calibration of every verdict rule of the theory checks.

One POOL of independent replicates of the main job (the main job's plan with many replicates: replicate r's data
stream is data_seed(seed, r), independent across r) is cut into K studies of R consecutive replicates each
(study k = replicates [k R, (k + 1) R)), so one pool gives the rule's error rates at every replicate count R the
package uses (K = pool // R). Each study is summarised exactly as a check summarises the main job (valid fits
only, reparam.checks.valid_mask; the slope of log(mean error) on log n; an interval over replicates by a method of
reparam.rates.INTERVAL_METHODS; reparam.rates.verdict), and its verdict is compared with what is true:

- cases where the prediction HOLDS: the theory table's own predictions for each check (reparam.theory; the
  regression error's -1/2 and the shared exact-specified D's -1/2 are the parametric rate, true by construction
  up to log factors; the others are the paper's theorems), so a 'disagree' is a FALSE ALARM;
- cases where it FAILS by construction: a curve declared with a wrong slope (l2_error against -1/4), the
  'flatter than' rule applied to a curve whose slope is -1/2, and the over-specified independent D held to the
  shared rate -1/2, so an 'agree' is a MISS.

Coverage is measured twice: at the PREDICTED slope (is the predicted value inside the interval?) and at a
REFERENCE slope, the same slope statistic on the whole pool (all K R replicates). Finite-n bias (log factors: a
regression slope near -0.47 on n = 300 .. 1e5) lowers the first and not the second; an interval that is too
narrow for its own statistic lowers both. A third coverage is counted at the mean of the K studies' slopes at the
same R (coverage_own: the expectation of the statistic at R replicates). It equals the reference where that
expectation does not depend on R; for heavy-tailed errors (over-specified fits: rare replicates with errors orders
of magnitude above the rest) the log of a mean over more replicates sees more of the rare large errors, so the
pool's slope is not what a study of R replicates estimates, and only coverage_own measures the interval. Every rate
has its Monte Carlo standard error sqrt(p (1 - p) / K).
"""
from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .checks import overall_verdict, valid_mask
from .rates import (DEFAULT_INTERVAL, INTERVAL_METHODS, MIN_REPLICATES, Prediction, curve_slopes, interval_label,
                    interval_method, slope_intervals, verdict)
from .theory import claim, prediction_text

#: The replicate counts the package's studies use: the large-n robustness rerun (per window), the planted
#: attention study, the main job (and every check), the paper-grade study.
PACKAGE_REPLICATES = {4: "large-n robustness (per window)", 5: "planted attention study",
                      10: "main job and theory checks", 20: "paper-grade study"}
#: The replicate count of the theory checks (reparam.checks.Check.replicates), whose calibration the checks
#: report quotes.
CHECK_REPLICATES = 10
#: Where the committed calibration table lives (written by `reparam calibrate`, read by the checks report).
COMMITTED_TABLE = Path("figures/calibration/calibration.csv")
#: Interval level of every calibrated interval (the package's level).
LEVEL = 0.95
#: Columns of the calibration table, in order.
COLUMNS = ["check", "case", "holds", "basis", "structure", "regime", "error", "prediction", "R", "method", "K",
           "reference_slope", "mean_slope", "mean_width", "coverage_pred", "coverage_pred_se", "coverage_ref",
           "coverage_ref_se", "coverage_own", "coverage_own_se", "false_alarm", "false_alarm_se", "miss", "miss_se",
           "agree", "disagree", "inconclusive", "insufficient"]
ALL = "(all)"  # structure/regime/error of a case's overall row (the check's overall verdict over its curves)


@dataclass(frozen=True)
class Curve:
    """One curve a case judges and the prediction it is held to."""

    structure: str
    regime: str
    error: str
    prediction: Prediction


@dataclass(frozen=True)
class Case:
    """A verdict rule applied where the truth of its prediction is known.

    holds: whether the prediction is true (a 'disagree' is then a false alarm; otherwise an 'agree' is a miss).
    basis: 'construction' (the truth of the prediction follows from how the case is built, or is the parametric
        rate) or 'theory' (a theorem of the paper).
    """

    check: str
    name: str
    holds: bool
    basis: str
    curves: tuple[Curve, ...]
    why: str


def _theory_curves(check: str) -> tuple[Curve, ...]:
    """Every curve the theory table predicts for `check`, with its prediction (read from the table)."""
    curves = []
    for rate in claim(check).rates:
        for regime in rate.regimes:
            for structure in rate.structures(regime):
                for error in rate.errors:
                    curves.append(Curve(structure, regime, error, rate.prediction))
    return tuple(curves)


def _with(curves: tuple[Curve, ...], prediction: Prediction, **select) -> tuple[Curve, ...]:
    """The curves of `curves` matching `select` (field=value), held to `prediction` instead."""
    return tuple(Curve(c.structure, c.regime, c.error, prediction) for c in curves
                 if all(getattr(c, k) == v for k, v in select.items()))


def calibration_cases() -> list[Case]:
    """The registry of calibrated cases: for each check of the main job, its own predictions (they hold) and
    predictions that fail by construction. Slopes that hold are read from the theory table; a wrong slope is
    the table's slope halved (-1/2 declared as -1/4), and a 'flatter than' rule is applied to a -1/2 curve
    with the bound -1/4, which that curve is steeper than."""
    regression, shared_exact = _theory_curves("regression"), _theory_curves("shared-exact")
    true_slope = claim("regression").rate("l2_error").prediction  # -1/2: the parametric rate
    wrong = Prediction(true_slope.value / 2)  # same tolerance and width rules, wrong value
    flatter = Prediction(true_slope.value / 2, kind="flatter_than")
    shared_over_d = [c for c in _theory_curves("shared-over") if c.error == "voronoi_prefix"]
    independent_over = _theory_curves("independent-over")
    independent = sorted({c.structure for c in independent_over})
    cases = [
        Case("regression", "theory", True, "construction", regression,
             "the regression error of a well-specified parametric fit has the parametric rate n^-1/2"),
        Case("regression", "wrong slope", False, "construction", _with(regression, wrong),
             f"the same curves declared with slope {wrong.value:+.2f}"),
        Case("regression", "flatter than, steeper curve", False, "construction", _with(regression, flatter),
             f"'flatter than {flatter.value:+.2f}' on curves of slope {true_slope.value:+.2f}"),
        Case("shared-exact", "theory", True, "construction", shared_exact,
             "D of an exact-specified shared fit has the parametric rate n^-1/2"),
        Case("shared-exact", "wrong slope", False, "construction",
             tuple(Curve(c.structure, c.regime, c.error, Prediction(c.prediction.value / 2)) for c in shared_exact),
             "the same curves declared with half their slope"),
        Case("shared-over", "theory", True, "theory", _theory_curves("shared-over"),
             "the paper's rates for over-specified shared fits (atoms in multi-atom cells n^-1/4, D n^-1/2)"),
        Case("shared-over", "flatter than, steeper curve", False, "theory",
             tuple(Curve(c.structure, c.regime, c.error, flatter) for c in shared_over_d),
             f"'flatter than {flatter.value:+.2f}' on over-specified shared D (slope -1/2 by the theory)"),
        Case("independent-over", "theory", True, "theory", independent_over,
             "the paper's Theorem 1: no polynomial rate as fast as the shared one"),
        Case("independent-over", "flatter than, steeper curve", False, "construction",
             tuple(Curve(s, "over", "l2_error", flatter) for s in independent),
             "the 'flatter than' rule of the check on the independent structure's regression error (slope -1/2)"),
        Case("independent-over", "independent D held to -1/2", False, "theory",
             tuple(Curve(s, "over", "voronoi_prefix", true_slope) for s in independent),
             "over-specified independent D against the shared rate -1/2 (slower by Theorem 1)"),
        Case("inverse-ratio", "theory", True, "theory", _theory_curves("inverse-ratio"),
             "THEORY section 7: D / ||f_hat - f*|| flat where the inverse bound holds, growing where it fails"),
    ]
    return cases


def case_errors(cases: list[Case]) -> list[str]:
    return sorted({c.error for case in cases for c in case.curves})


def pool_arrays(results: pd.DataFrame, curves: list[tuple[str, str, str]], replicate_col: str = "replicate"
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(replicates, values, sizes): the pool's replicate ids (sorted), and per curve (structure, regime, error) a
    (replicates, sizes) array of VALID errors (NaN where a fit is invalid, missing or non-finite), on the pool's
    common grid of sizes."""
    if "inverse_ratio" in {e for *_, e in curves} and "inverse_ratio" not in results.columns:
        from .identifiability import add_inverse_ratio
        results = add_inverse_ratio(results)
    good = results[valid_mask(results)]
    replicates = np.sort(results[replicate_col].unique())
    sizes = np.sort(results["n"].unique()).astype(float)
    values = np.full((len(curves), len(replicates), len(sizes)), np.nan)
    for i, (structure, regime, error) in enumerate(curves):
        rows = good[(good.structure == structure) & (good.regime == regime)]
        if error not in rows.columns or rows.empty:
            continue
        wide = rows.pivot_table(index=replicate_col, columns="n", values=error, aggfunc="mean")
        wide = wide.reindex(index=replicates, columns=sizes)
        values[i] = wide.to_numpy(dtype=float)
    values[~np.isfinite(values)] = np.nan
    return replicates, values, sizes


def _rate(hits: np.ndarray) -> tuple[float, float]:
    """Mean of a boolean array over its last axis (studies) and its Monte Carlo standard error sqrt(p(1-p)/K)."""
    k = hits.shape[-1]
    p = float(np.mean(hits)) if k else np.nan
    return p, (float(np.sqrt(p * (1 - p) / k)) if k else np.nan)


def calibrate(results: pd.DataFrame, replicate_counts: list[int], methods: list[str], cases: list[Case] | None = None,
              n_boot: int = 2000, replicate_col: str = "replicate") -> pd.DataFrame:
    """The calibration table (COLUMNS) of `cases` on the pool `results` (rows of a study whose replicates are
    independent): one row per (case, curve, R, method) and one per (case, R, method) with structure, regime
    and error ALL (the case's overall verdict over its curves, as a check's). R values above the pool size are
    refused (ValueError naming replicate_counts)."""
    cases = calibration_cases() if cases is None else cases
    for m in methods:
        interval_method(m)
    keys = list(dict.fromkeys((c.structure, c.regime, c.error) for case in cases for c in case.curves))
    ids, values, sizes = pool_arrays(results, keys, replicate_col)
    pool = len(ids)
    bad = [r for r in replicate_counts if not MIN_REPLICATES <= int(r) <= pool]
    if bad:
        raise ValueError(f"replicate_counts={list(replicate_counts)} is invalid: {bad[0]} is outside "
                         f"[{MIN_REPLICATES}, {pool}] (the pool has {pool} replicates)")
    log_n = np.log(sizes)
    reference = curve_slopes(values, log_n)[0]  # (curves,): the slope statistic on the whole pool
    rows = []
    for r_count in replicate_counts:
        k = pool // int(r_count)
        studies = values[:, :k * r_count].reshape(len(keys), k, r_count, len(sizes))  # study k: [kR, (k+1)R)
        enough = np.isfinite(studies).sum(axis=2).min(axis=-1) >= MIN_REPLICATES  # (curves, K)
        for method in methods:
            fit = slope_intervals(studies, log_n, method, LEVEL, n_boot)
            lo = np.where(enough, fit["slope_lo"], np.nan)
            hi = np.where(enough, fit["slope_hi"], np.nan)
            slope = fit["slope"]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                own = np.nanmean(slope, axis=1)  # (curves,): the statistic's expectation at R, over the K studies
            for case in cases:
                per_curve = []
                for curve in case.curves:
                    i = keys.index((curve.structure, curve.regime, curve.error))
                    verdicts = np.array([verdict(lo[i, s], hi[i, s], curve.prediction, slope[i, s],
                                                 MIN_REPLICATES if enough[i, s] else 0) for s in range(k)])
                    per_curve.append(verdicts)
                    covered_ref = (lo[i] <= reference[i]) & (reference[i] <= hi[i])
                    covered_own = (lo[i] <= own[i]) & (own[i] <= hi[i])
                    covered_pred = ((lo[i] <= curve.prediction.value) & (curve.prediction.value <= hi[i])
                                    if curve.prediction.kind == "equal" else None)
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", RuntimeWarning)
                        extra = dict(reference_slope=float(reference[i]), mean_slope=float(np.nanmean(slope[i])),
                                     mean_width=float(np.nanmean(hi[i] - lo[i])))
                    rows.append(_row(case, curve.structure, curve.regime, curve.error,
                                     prediction_text(curve.prediction), r_count, method, verdicts,
                                     [covered_pred] if covered_pred is not None else [], [covered_ref],
                                     [covered_own], extra))
                overall = np.array([overall_verdict(list(v)) for v in zip(*per_curve)])
                idx = [keys.index((c.structure, c.regime, c.error)) for c in case.curves]
                cov_ref = [(lo[i] <= reference[i]) & (reference[i] <= hi[i]) for i in idx]
                cov_own = [(lo[i] <= own[i]) & (own[i] <= hi[i]) for i in idx]
                cov_pred = [(lo[i] <= c.prediction.value) & (c.prediction.value <= hi[i])
                            for i, c in zip(idx, case.curves) if c.prediction.kind == "equal"]
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    extra = dict(reference_slope=np.nan, mean_slope=np.nan,
                                 mean_width=float(np.nanmean([hi[i] - lo[i] for i in idx])))
                rows.append(_row(case, ALL, ALL, ALL, "as per curve", r_count, method, overall, cov_pred, cov_ref,
                                 cov_own, extra))
    return pd.DataFrame(rows, columns=COLUMNS)


def _row(case: Case, structure: str, regime: str, error: str, prediction: str, r_count: int, method: str,
         verdicts: np.ndarray, covered_pred: list, covered_ref: list, covered_own: list, extra: dict) -> dict:
    """One table row: verdict rates over the K studies and coverage (the mean over the row's curves when there are
    several; its standard error is that of one curve's rate over K studies, sqrt(p(1-p)/K))."""
    k = len(verdicts)
    share = {v: float(np.mean(verdicts == v)) if k else np.nan
             for v in ("agree", "disagree", "inconclusive", "insufficient")}
    cov_pred = _rate(np.array(covered_pred)) if covered_pred else (np.nan, np.nan)
    cov_ref = _rate(np.array(covered_ref))
    cov_own = _rate(np.array(covered_own))
    false_alarm = _rate(verdicts == "disagree") if case.holds else (np.nan, np.nan)
    miss = _rate(verdicts == "agree") if not case.holds else (np.nan, np.nan)
    return dict(check=case.check, case=case.name, holds=case.holds, basis=case.basis, structure=structure,
                regime=regime, error=error, prediction=prediction, R=int(r_count), method=method, K=k, **extra,
                coverage_pred=cov_pred[0], coverage_pred_se=cov_pred[1], coverage_ref=cov_ref[0],
                coverage_ref_se=cov_ref[1], coverage_own=cov_own[0], coverage_own_se=cov_own[1],
                false_alarm=false_alarm[0], false_alarm_se=false_alarm[1],
                miss=miss[0], miss_se=miss[1], **share)


def pool_plan(pool: int, n_grid: list[int] | None = None, seed: int = 0):
    """The main job's plan (reparam.sweep.StudyPlan defaults: every structure and regime, the canonical truth)
    with `pool` replicates (and `n_grid` instead of the default grid if given)."""
    from .sweep import StudyPlan

    plan = StudyPlan(replicates=int(pool), seed=int(seed))
    if n_grid is not None:
        plan.n_grid = [int(n) for n in n_grid]
    return copy.deepcopy(plan)


def chunk_plans(plan, chunk: int) -> list:
    """`plan` with its replicates reached `chunk` at a time: plans with replicates chunk, 2 chunk, ..., pool. Run
    in turn on one result log, each fits only the replicates the log lacks (at most `chunk` per cell), so an
    interrupted pool loses at most one pass's cell (the log records a cell when all its replicates are fitted; a
    cell's memory is bounded by run_cell's replicate groups either way), and the rows are those of `plan`
    (replicate r's data stream depends on r only, and a fit does not depend on the fits batched beside it)."""
    stops = list(range(int(chunk), plan.replicates, int(chunk))) + [plan.replicates]
    plans = []
    for stop in stops:
        part = copy.deepcopy(plan)
        part.replicates = stop
        plans.append(part)
    return plans


def _fits_done(plan, rows: pd.DataFrame) -> int:
    """How many of `plan`'s fits the log rows `rows` hold (each fit once)."""
    from .sweep import setting_id

    if rows.empty:
        return 0
    keys = {(s.structure, s.regime, setting_id(s)) for s in plan.settings()}
    mine = rows[[(a, b, c) in keys for a, b, c in zip(rows.structure, rows.regime, rows.setting_id)]]
    mine = mine[mine.n.isin(plan.n_grid) & (mine.replicate < plan.replicates)
                & (mine.get("base_seed", pd.Series(-1, index=mine.index)) == plan.seed)]
    return int(len(mine.drop_duplicates(["structure", "regime", "n", "replicate", "setting_id"])))


def fit_pool(plan, log_path, chunk: int, workers: int = 1, progress: bool = True, stream=None) -> pd.DataFrame:
    """Fit every replicate of `plan` into the result log `log_path`, `chunk` replicates per cell at a time
    (chunk_plans), resuming from what the log holds; one line per pass with what is left. Returns the rows."""
    import logging

    from .console import say
    from .sweep import plan_rows, run_plan, study_log

    logger = logging.getLogger(__name__)
    plans = chunk_plans(plan, chunk)
    total = len(plan.cells()) * plan.replicates
    for i, part in enumerate(plans, 1):
        rows = pd.DataFrame(study_log(log_path).rows())
        if _fits_done(part, rows) == len(part.cells()) * part.replicates:
            continue
        if progress:
            say(logger, f"[calibrate] pass {i}/{len(plans)}: replicates up to {part.replicates} of {plan.replicates}; "
                f"{total - _fits_done(plan, rows)} of the pool's {total} fits left", stream, fallback="stderr")
        run_plan(part, log_path, progress=progress, stream=stream, workers=workers)
    return plan_rows(plan, study_log(log_path))


# --------------------------------------------------------------------------------------------------
# Reading the table back: the checks report and the documentation.

def _pct(p: float, se: float) -> str:
    return "n/a" if not np.isfinite(p) else f"{100 * p:.0f}% +- {100 * se:.0f}"


def read_calibration(path: str | Path = COMMITTED_TABLE) -> pd.DataFrame | None:
    """The calibration table at `path` (relative: from the working directory, else from the checkout this package
    is in), or None where there is none."""
    path = Path(path)
    for candidate in (path, Path(__file__).resolve().parents[1] / path) if not path.is_absolute() else (path,):
        if candidate.is_file():
            return pd.read_csv(candidate)
    return None


def check_rates_line(table: pd.DataFrame | None, check: str, replicates: int, method: str | None = None) -> str:
    """One sentence for a check's section of the checks report: its measured false-alarm and miss rates (overall
    verdict) at `replicates` replicates with the interval `method` (None: DEFAULT_INTERVAL), or why there is none."""
    method = DEFAULT_INTERVAL if method is None else method
    if table is None:
        return f"- Calibration: no calibration table ({COMMITTED_TABLE}; `reparam calibrate` writes it)."
    rows = table[(table.check == check) & (table.R == replicates) & (table.method == method)
                 & (table.structure == ALL)]
    if rows.empty:
        return (f"- Calibration: no calibration row for this check at R = {replicates} replicates with the "
                f"{method} interval in {COMMITTED_TABLE}.")
    k = int(rows.K.min())
    held, failed = rows[rows.holds.astype(bool)], rows[~rows.holds.astype(bool)]
    parts = [f"false alarm ('disagree' where the prediction holds) {_pct(r.false_alarm, r.false_alarm_se)}"
             for r in held.itertuples()]
    parts += [f"miss ('agree' where it fails: {r.case}) {_pct(r.miss, r.miss_se)}" for r in failed.itertuples()]
    return (f"- Calibration of this verdict ({interval_label(method, LEVEL)}, R = {replicates} replicates, K = {k} "
            f"independent reruns; +- Monte Carlo standard error): " + "; ".join(parts) + ".")


def calibration_markdown(table: pd.DataFrame, command: str, pool: int, n_grid: list[int]) -> str:
    """The report of a calibration table: what was done, then per R and method the overall rows of each case."""
    overall = table[table.structure == ALL]
    methods = list(dict.fromkeys(table.method))
    md = ["# Calibration of the verdict rules", "",
          f"Generated by `{command}`: one pool of {pool} independent replicates of the main job (canonical truth, "
          f"n_grid={list(n_grid)}), cut into K studies of R replicates; every study summarised as a check "
          f"summarises the main job (valid fits only; {LEVEL:.0%} intervals by each method; the package's verdict "
          "rule). Coverage at the predicted slope is lowered by finite-n bias (log factors) as well as by a too "
          "narrow interval; coverage at the reference slope (the same statistic on the whole pool) by the "
          "interval alone. Rates are over the K studies, +- Monte Carlo standard error sqrt(p(1-p)/K); "
          "coverage of a case over several curves is the mean over its curves.", "",
          "Interval methods: " + "; ".join(f"**{m}**: {INTERVAL_METHODS[m].description}" for m in methods)
          + f". The package's default is **{DEFAULT_INTERVAL}**.", ""]
    md += [coverage_markdown(table), ""]
    md += ["## Verdict error rates (overall verdict of each case)", "",
           "| check | case | prediction holds | R | method | K | coverage at prediction | at reference | at own "
           "expectation | false alarm | miss | agree / disagree / inconclusive |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in overall.itertuples():
        md.append(f"| {r.check} | {r.case} | {'yes' if r.holds else 'no'} ({r.basis}) | {r.R} | {r.method} | {r.K} "
                  f"| {_pct(r.coverage_pred, r.coverage_pred_se)} | {_pct(r.coverage_ref, r.coverage_ref_se)} "
                  f"| {_pct(r.coverage_own, r.coverage_own_se)} | {_pct(r.false_alarm, r.false_alarm_se)} "
                  f"| {_pct(r.miss, r.miss_se)} | {r.agree:.2f} / {r.disagree:.2f} / {r.inconclusive:.2f} |")
    return "\n".join(md)


def _regular(curves: pd.DataFrame) -> pd.Series:
    """Curves whose errors are not heavy-tailed: exact-specified fits, and the regression error of every fit."""
    return (curves.regime == "exact") | (curves.error == "l2_error")


def coverage_markdown(table: pd.DataFrame) -> str:
    """Coverage per interval method and R, over every curve of the cases whose prediction holds (each curve once),
    at the reference slope and at the statistic's own expectation at R, apart for regular and for heavy-tailed
    curves: the table the choice of the default method rests on."""
    curves = table[(table.structure != ALL) & table.holds.astype(bool)]
    curves = curves.drop_duplicates(["structure", "regime", "error", "R", "method"])
    methods = list(dict.fromkeys(curves.method))
    counts = sorted(curves.R.unique())
    md = [f"Coverage of the {LEVEL:.0%} slope interval: at the reference slope (the statistic on the whole pool) / at "
          "the statistic's own expectation at R (the mean slope of the K studies); mean over the curves, worst "
          "curve's coverage at its own expectation in brackets."]
    regular = _regular(curves)
    for title, group in (("exact-specified fits and every regression error", curves[regular]),
                         ("over-specified fits, prefix-space errors (heavy-tailed)", curves[~regular])):
        if group.empty:
            continue
        n_curves = group[["structure", "regime", "error"]].drop_duplicates().shape[0]
        md += ["", f"**{title}** ({n_curves} curves)", "",
               "| method | " + " | ".join(f"R = {r} (K = {int(group[group.R == r].K.max())})" for r in counts) + " |",
               "|---|" + "---|" * len(counts)]
        for m in methods:
            cells = []
            for r in counts:
                sel = group[(group.method == m) & (group.R == r)]
                worst = sel.loc[sel.coverage_own.idxmin()]
                cells.append(f"{100 * sel.coverage_ref.mean():.0f}% / {100 * sel.coverage_own.mean():.0f}% "
                             f"[{100 * worst.coverage_own:.0f}%: {worst.structure} {worst.regime} {worst.error}]")
            md.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(md)


def rates_markdown(table: pd.DataFrame, method: str | None = None) -> str:
    """The overall verdict error rates of every case at each replicate count of the package, for one interval
    `method` (None: DEFAULT_INTERVAL): the table the checks report and the documentation quote."""
    method = DEFAULT_INTERVAL if method is None else method
    rows = table[(table.structure == ALL) & (table.method == method)]
    md = ["| check | case | prediction holds | R | K | coverage at prediction | coverage at reference | false alarm "
          "| miss |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows.sort_values(["check", "holds", "case", "R"], ascending=[True, False, True, True],
                              kind="stable").itertuples():
        md.append(f"| `{r.check}` | {r.case} | {'yes' if r.holds else 'no'} ({r.basis}) | {r.R} | {r.K} "
                  f"| {_pct(r.coverage_pred, r.coverage_pred_se)} | {_pct(r.coverage_ref, r.coverage_ref_se)} "
                  f"| {_pct(r.coverage_own, r.coverage_own_se)} | {_pct(r.false_alarm, r.false_alarm_se)} "
                  f"| {_pct(r.miss, r.miss_se)} |")
    return "\n".join(md)


def calibration_block(table: pd.DataFrame) -> str:
    """The documentation's generated block: coverage per method and R, then the error rates of the default
    method."""
    return "\n".join([coverage_markdown(table), "",
                      f"Verdict error rates with the package's interval ({interval_label(None, LEVEL)}), overall "
                      "verdict of each case (+- Monte Carlo standard error):", "", rates_markdown(table)])


def calibration_answer(table: pd.DataFrame, replicates: int = CHECK_REPLICATES) -> str:
    """One paragraph for the README: at the checks' replicate count, the default interval's coverage at the
    reference slope, and each check's false-alarm and miss rates."""
    method = DEFAULT_INTERVAL
    rows = table[(table.method == method) & (table.R == replicates)]
    if rows.empty:
        return ""
    curves = rows[(rows.structure != ALL) & rows.holds.astype(bool)].drop_duplicates(["structure", "regime", "error"])
    regular, heavy = curves[_regular(curves)], curves[~_regular(curves)]
    overall = rows[rows.structure == ALL]
    k = int(overall.K.min())
    alarms = ", ".join(f"`{r.check}` {100 * r.false_alarm:.0f}%" + (" (holds by a theorem, asymptotically)"
                                                                    if r.basis == "theory" else "")
                       for r in overall[overall.holds.astype(bool)].itertuples())
    misses = ", ".join(f"`{r.check}` ({r.case}) {100 * r.miss:.0f}%" for r in overall[~overall.holds.astype(bool)]
                       .itertuples())
    return (f"Rerun {k} times on independent data with the checks' {replicates} replicates, the slope interval "
            f"({interval_label(method, LEVEL)}) covers the slope it estimates in "
            f"{100 * regular.coverage_own.mean():.0f}% of the studies for exact-specified fits and regression errors "
            f"({len(regular)} curves; worst {100 * regular.coverage_own.min():.0f}%)"
            + (f" and in {100 * heavy.coverage_own.mean():.0f}% for the heavy-tailed over-specified prefix errors"
               if len(heavy) else "")
            + f". False-alarm rates ('disagree' where the prediction holds): {alarms}; miss rates "
            f"('agree' where it fails): {misses}.")
