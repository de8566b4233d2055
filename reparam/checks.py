"""THEORY section 5 as code: the summary table of a study (which curve measures which prediction, its slope and
verdict), and the registry of citable theory checks, one per claim of the theory table.

What is predicted, for which structure, regime and error column, and where it comes from, is the theory table
(reparam.theory.THEORY_TABLE, rendered in docs/theory.md); every prediction below is read from it. The errors are
measured in the prefix space (k, v), so that structures compare.

"flatter than v" = the whole interval of the slope (reparam.rates.DEFAULT_INTERVAL) lies above v (no polynomial rate as fast
as the shared one). For the same curves the power law is compared with a 1/log(n)^tau law.
Only VALID fits (the basic inequality: optimality gap <= tolerance, converged or not) enter slopes and
means; every summary row counts the fits left out and why, and the solver diagnostics of the rest.
"""
from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .rates import describe_verdict, fit_slopes, interval_label, power_vs_log_law, verdict
from .study import DEFAULT_N_GRID, STUDY_INIT, InitConfig
from .theory import claim, prediction_for, prediction_text, slope_text  # noqa: F401 - prediction_for: public here too

# The structures each claim of the theory table predicts, by what their class declares (reparam.structures:
# `theory_rows`, `inverse_bound`), looked up at use, so a newly registered structure enters every check and
# prediction below without an edit here.
SHARED = claim("shared-exact").selection()  # shared_linear, shared_mlp
INDEPENDENT = claim("independent-over").selection()  # independent
ALL = claim("regression").selection()  # every structure with a predicted rate
INVERSE_BOUND = claim("inverse-ratio").selection()  # every structure whose inverse bound (THEORY section 7) is declared
SUMMARY_ERRORS = ["voronoi_prefix", "voronoi_native", "l2_error", "atom_error_multi", "voronoi_r1_prefix",
                  "voronoi_r2_prefix"]


DEFAULT_GAP_TOL = 1e-8  # reparam.fit.SolverConfig.gap_tol; used only for tables recorded before `valid` existed


def valid_mask(results: pd.DataFrame, gap_tol: float = DEFAULT_GAP_TOL) -> pd.Series:
    """Which rows are valid estimates: the basic inequality rel_gap <= gap_tol (THEORY section 3), the ONE
    filter of every mean, slope, band, figure and verdict. Converged or not does not matter here."""
    if "valid" in results.columns:
        return results["valid"].astype(bool)
    rel_gap = results["rel_gap"].astype(float)
    return np.isfinite(rel_gap) & (rel_gap <= gap_tol)


def _validity_counts(group: pd.DataFrame) -> dict:
    """How many fits are valid (enter every number) and how many are excluded, with why (a positive optimality
    gap, or a non-finite loss); and, as diagnostics only, how many converged and how many ran out of iterations."""
    valid = valid_mask(group)
    gap = group["rel_gap"].astype(float)
    status = group["status"].astype(str)
    return dict(n_fits=int(len(group)), n_valid=int(valid.sum()), n_excluded=int((~valid).sum()),
                excluded_gap=int((~valid & np.isfinite(gap)).sum()), excluded_nonfinite=int((~valid & ~np.isfinite(gap)).sum()),
                n_converged=int(group["converged"].astype(bool).sum()),
                valid_max_iter=int((valid & (status == "max_iter")).sum()),
                valid_stalled=int((valid & (status == "stalled")).sum()))


def summarize(results: pd.DataFrame, errors: list[str] | None = None, n_boot: int = 2000, level: float = 0.95,
              by: tuple[str, ...] = ("structure", "regime"), replicate_col: str = "seed") -> pd.DataFrame:
    """One row per (by..., error): fitted slope of the means of VALID fits with its interval (reparam.rates.
    DEFAULT_INTERVAL), the
    THEORY prediction and verdict, the same slope for the medians (the over-specified errors are heavy-tailed),
    the power-vs-log-law comparison, the mean and median error at the largest n, how many fits are valid and
    how many were excluded (positive optimality gap or non-finite; excluded from everything numeric), and the
    solver diagnostics of the valid fits (converged, stopped at max_iter or stalled)."""
    errors = errors or SUMMARY_ERRORS
    by = list(by)
    rows = []
    for key, group in results.groupby(by, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        ident = dict(zip(by, key))
        counts = _validity_counts(group)
        good = group[valid_mask(group)]
        for error in errors:
            if error not in group.columns:
                continue
            vals = good[np.isfinite(good[error].astype(float))]
            if vals.empty:
                continue  # e.g. atom_error_multi in exact-specified fits: no multi-atom cell exists
            pred, row_name = prediction_for(ident.get("structure", ""), ident.get("regime", ""), error)
            with warnings.catch_warnings():  # bootstrap draws of only-failed replicates at some n give NaN means
                warnings.simplefilter("ignore", RuntimeWarning)
                s = fit_slopes(vals, error, by=[], replicate_col=replicate_col, n_boot=n_boot, level=level).iloc[0]
                med = fit_slopes(vals, error, by=[], replicate_col=replicate_col, n_boot=n_boot, level=level,
                                 statistic="median").iloc[0]
            means = vals.groupby("n")[error].mean().sort_index()
            medians = vals.groupby("n")[error].median().sort_index()
            law = {}
            if len(means) >= 3:
                law = power_vs_log_law(means.index.to_numpy(), means.to_numpy())
            v = verdict(s["slope_lo"], s["slope_hi"], pred, s["slope"], s["min_replicates"]) if pred else "n/a"
            rows.append({
                **ident, "error": error, "theory_row": row_name or "(no THEORY row)",
                "predicted": (np.nan if pred is None else pred.value),
                "prediction": ("" if pred is None else ("equal" if pred.kind == "equal" else "flatter_than")),
                "tolerance": (np.nan if pred is None or pred.kind != "equal" else pred.tolerance),
                "slope": s["slope"], "slope_lo": s["slope_lo"], "slope_hi": s["slope_hi"], "verdict": v,
                "intercept": s["intercept"], "n_min": s["n_min"], "n_max": s["n_max"], "n_sizes": s["n_sizes"],
                "n_replicates": s["n_replicates"], "min_replicates": s["min_replicates"],
                "median_slope": med["slope"], "median_slope_lo": med["slope_lo"], "median_slope_hi": med["slope_hi"],
                "mean_at_n_max": float(means.iloc[-1]), "median_at_n_max": float(medians.iloc[-1]),
                "better_law": law.get("better_law", ""),
                "log_law_tau": law.get("log_exponent", np.nan),
                **counts,
                "n_fits_error": int(len(vals)),
            })
    return pd.DataFrame(rows)


def headline(summary: pd.DataFrame) -> pd.DataFrame:
    """The rows that carry a THEORY prediction, in a compact form for printing."""
    s = summary[summary["prediction"] != ""].copy()
    s[f"slope ({interval_label()})"] = [f"{a:+.3f} [{b:+.3f}, {c:+.3f}]"
                                        for a, b, c in zip(s.slope, s.slope_lo, s.slope_hi)]
    s["predicted"] = [(f"{p:+.2f}" if k == "equal" else f"> {p:+.2f}") for p, k in zip(s.predicted, s.prediction)]
    s["valid"] = [f"{v}/{t}" for v, t in zip(s.n_valid, s.n_fits)]
    cols = [c for c in ["setting_id", "truth"] if c in s.columns] + ["structure", "regime", "error", "predicted",
                                                         f"slope ({interval_label()})", "verdict", "valid", "better_law"]
    return s[cols].reset_index(drop=True)


# --------------------------------------------------------------------------------------------------
# Citable checks: one per row of THEORY section 5.

@dataclass
class Check:
    """A named, documented configuration and the curves whose slopes it compares with THEORY."""

    name: str
    theory_row: str
    description: str
    structures: Sequence[str]  # names, or a reparam.structures.StructureSelection (by declared property)
    regimes: list[str]
    errors: list[str]
    n_grid: list[int] = field(default_factory=lambda: list(DEFAULT_N_GRID))
    replicates: int = 10
    seed: int = 0
    truth: str = "canonical"
    init: InitConfig = field(default_factory=lambda: copy.deepcopy(STUDY_INIT))
    # 'study': fits plan() and compares the slopes of `errors` with THEORY (errors may include the derived column
    # 'inverse_ratio', reparam.identifiability.add_inverse_ratio); 'inverse_bound': no data and no fits, the
    # deterministic psi(delta) of reparam.identifiability.inverse_bound_study (n_grid, replicates, init unused).
    kind: str = "study"

    def plan(self):
        if self.kind != "study":
            raise ValueError(f"check {self.name!r} is of kind {self.kind!r}: it fits no study plan")
        from .study import Setting, TruthConfig
        from .sweep import StudyPlan
        return StudyPlan(structures=list(self.structures), regimes=list(self.regimes), n_grid=list(self.n_grid),
                         replicates=self.replicates, seed=self.seed,
                         setting=Setting(truth=TruthConfig(kind=self.truth), init=copy.deepcopy(self.init)))

    def init_description(self) -> str:
        i = self.init
        if i.mode == "mixed":
            return f"starts: 1 near the truth + {i.n_starts - 1} random (lowest loss wins)"
        return f"starts: {i.n_starts} x {i.mode} (lowest loss wins)"


def _check(name: str, description: str, **config) -> Check:
    """The check of claim `name` of the theory table: its THEORY row and its curves (the structures, regimes and
    error columns of the claim's rates) come from the table, `description` and `config` are the check's own."""
    theory = claim(name)
    structures = config.pop("structures", theory.selection())
    return Check(name, theory.statement, description, structures, theory.regimes, theory.errors, **config)


def _slopes(name: str, *errors: str) -> str:
    """The predicted slopes of claim `name` for `errors`, as fractions (reparam.theory.slope_text), comma-separated."""
    return ", ".join(slope_text(claim(name).rate(error).prediction.value) for error in errors)


def _inverse_ratio_expectation() -> str:
    """Where the ratio D / ||f_hat - f*|| should stay flat and where it should grow, from the theory table and
    the structures' declarations, in the form 'slope S +- T for A and B (exact and over) and C exact; slope > S
    for C over'."""
    parts = []
    for rate in claim("inverse-ratio").rates:
        groups: list[tuple[list[str], list[str]]] = []  # (structures, their regimes), in registry order
        for structure in dict.fromkeys(name for regime in rate.regimes for name in rate.structures(regime)):
            regimes = [regime for regime in rate.regimes if structure in rate.structures(regime)]
            if groups and groups[-1][1] == regimes:
                groups[-1][0].append(structure)
            else:
                groups.append(([structure], regimes))
        where = " and ".join(f"{' and '.join(names)} ({' and '.join(regimes)})" if len(names) > 1 else
                             f"{names[0]} {' and '.join(regimes)}" for names, regimes in groups)
        pred = rate.prediction
        slope = (f"slope {slope_text(pred.value)} +- {pred.tolerance:g}" if pred.kind == "equal"
                 else f"slope > {slope_text(pred.value)}")
        parts.append(f"{slope} for {where}")
    return "; ".join(parts)


CHECKS: dict[str, Check] = {c.name: c for c in [
    _check("regression",
           "Regression error of every structure, exact- and over-specified, on a fresh sample of 1e5 points."),
    _check("shared-exact", "Voronoi loss D in prefix space (k, v) of exact-specified shared fits (L' = L* = 2)."),
    _check("shared-over",
           "Largest distance of a fitted atom in a multi-atom Voronoi cell to its true atom (prefix space), "
           "over-specified shared fits (L' = 3 > L* = 2); D itself should keep slope "
           f"{_slopes('shared-over', 'voronoi_prefix')}."),
    _check("independent-over",
           "D_{1,1}, D_{1,2} and the multi-cell atom error of over-specified independent fits; each slope should "
           "be flatter than the rate the shared structures reach for the same quantity "
           f"({_slopes('independent-over', 'voronoi_r1_prefix', 'voronoi_r2_prefix', 'atom_error_multi')})."),
    _check("inverse-ratio",
           "Ratio of the prefix-space Voronoi loss to the regression error of every valid fit (THEORY section 7): "
           f"{_inverse_ratio_expectation()}."),
    _check("inverse-bound",
           "No data, no noise: multi-start constrained minimisation on the canonical truth (r = 2, and r = 3 > d for "
           "the shared structures), exact and over-specified (reparam.identifiability.inverse_bound_study).",
           structures=list(ALL), n_grid=[], replicates=0, kind="inverse_bound"),
]}


def overall_verdict(verdicts: list[str]) -> str:
    if any(v == "disagree" for v in verdicts):
        return "disagree"
    if any(v == "insufficient" for v in verdicts):
        return "insufficient"
    if verdicts and all(v == "agree" for v in verdicts):
        return "agree"
    return "inconclusive"


def check_lines(check: Check, summary: pd.DataFrame) -> tuple[list[dict], str]:
    """Per-curve verdict records of `check` from a summary table, and the overall verdict."""
    out = []
    for structure in check.structures:
        for regime in check.regimes:
            for error in check.errors:
                pred, _ = prediction_for(structure, regime, error)
                sel = summary[(summary.structure == structure) & (summary.regime == regime) & (summary.error == error)]
                if sel.empty or pred is None:
                    out.append(dict(structure=structure, regime=regime, error=error, verdict="inconclusive",
                                    line="no valid fits with this error" if pred else "no prediction"))
                    continue
                r = sel.iloc[0]
                out.append(dict(structure=structure, regime=regime, error=error, verdict=r["verdict"],
                                predicted=pred.value, kind=pred.kind, prediction=pred, slope=r["slope"],
                                slope_lo=r["slope_lo"],
                                slope_hi=r["slope_hi"], n_excluded=int(r["n_excluded"]), n_fits=int(r["n_fits"]),
                                better_law=r["better_law"],
                                line=describe_verdict(r["slope"], r["slope_lo"], r["slope_hi"], pred,
                                                      min_replicates=r.get("min_replicates"))))
    return out, overall_verdict([o["verdict"] for o in out])


def check_report(check: Check, summary: pd.DataFrame, command: str, wall_seconds: float | None = None,
                 calibration: pd.DataFrame | None = None) -> str:
    """A markdown section a reader can cite: configuration, prediction, measurement, verdict, and the verdict's
    measured false-alarm and miss rates at the check's replicate count (`calibration`: the calibration table,
    reparam.calibration; None: the committed one, if any)."""
    from .calibration import check_rates_line, read_calibration

    lines, overall = check_lines(check, summary)
    md = [f"## Check `{check.name}`: {overall.upper()}", "",
          f"- THEORY row: {check.theory_row}", f"- What: {check.description}",
          f"- Configuration: truth={check.truth}, structures={check.structures}, regimes={check.regimes}, "
          f"n_grid={check.n_grid}, replicates={check.replicates}, seed={check.seed}; core defaults otherwise "
          f"(reparam.study.Setting: {check.init_description()}, reparam.fit.SolverConfig defaults; every valid fit "
          f"enters: rel. optimality gap <= gap_tol, converged or not).",
          f"- Command: `{command}`"]
    if wall_seconds is not None:
        md.append(f"- Wall time of this invocation: {wall_seconds:.0f} s (fits already in the result log are reused)")
    md.append(check_rates_line(read_calibration() if calibration is None else calibration, check.name,
                               check.replicates))
    md += ["", f"| structure | regime | error | predicted | measured slope [{interval_label()}] | verdict "
           "| excluded fits | better law |",
           "|---|---|---|---|---|---|---|---|"]
    for o in lines:
        if "slope" not in o:
            md.append(f"| {o['structure']} | {o['regime']} | {o['error']} | | {o['line']} | {o['verdict']} | | |")
            continue
        md.append(f"| {o['structure']} | {o['regime']} | `{o['error']}` | {prediction_text(o['prediction'])} "
                  f"| {o['slope']:+.3f} [{o['slope_lo']:+.3f}, {o['slope_hi']:+.3f}] | **{o['verdict']}** "
                  f"| {o['n_excluded']}/{o['n_fits']} | {o['better_law']} |")
    md.append("")
    return "\n".join(md)


def robustness_tables(results: pd.DataFrame, n_boot: int = 300) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-truth slopes (one summary row per truth, structure, regime, error) and their distribution over
    truths per (structure, regime, error): quartiles, range, and how many truths agree / disagree /
    are inconclusive against THEORY."""
    per_truth = summarize(results, by=("truth", "structure", "regime"), n_boot=n_boot)
    rows = []
    for (structure, regime, error), g in per_truth.groupby(["structure", "regime", "error"], sort=True):
        s = g["slope"].dropna()
        counts = g["verdict"].value_counts()
        rows.append(dict(
            structure=structure, regime=regime, error=error, theory_row=g["theory_row"].iloc[0],
            predicted=g["predicted"].iloc[0], prediction=g["prediction"].iloc[0], n_truths=int(g["truth"].nunique()),
            slope_median=s.median(), slope_q25=s.quantile(0.25), slope_q75=s.quantile(0.75), slope_min=s.min(),
            slope_max=s.max(), slope_mean=s.mean(), slope_sd=s.std(),
            agree=int(counts.get("agree", 0)), disagree=int(counts.get("disagree", 0)),
            inconclusive=int(counts.get("inconclusive", 0)), insufficient=int(counts.get("insufficient", 0)),
            fits=int(g["n_fits"].sum()), excluded_fits=int(g["n_excluded"].sum()),
        ))
    return per_truth, pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------------
# How much of a number is the optimiser and how much is statistics.

@dataclass
class Variant:
    """One way of running the same study: its starts and its iteration budget (everything else equal)."""

    name: str
    init: InitConfig
    max_iter_factor: int = 1


SENSITIVITY_VARIANTS = [
    Variant("multi-start (default)", copy.deepcopy(STUDY_INIT)),
    Variant("near-truth start only", InitConfig(mode="near_truth", n_starts=1)),
    Variant("multi-start, 10x iterations", copy.deepcopy(STUDY_INIT), max_iter_factor=10),
]


def sensitivity_plan(variant: Variant, structures: list[str], regimes: list[str], n_grid: list[int],
                     replicates: int, seed: int = 0):
    """The study plan of `variant`: the core defaults with the variant's starts and iteration budget."""
    from .fit import SolverConfig
    from .study import Setting
    from .sweep import StudyPlan
    solver = SolverConfig()
    solver.max_iter *= variant.max_iter_factor
    return StudyPlan(structures=list(structures), regimes=list(regimes), n_grid=list(n_grid), replicates=replicates,
                     seed=seed, setting=Setting(init=copy.deepcopy(variant.init), solver=solver))


def sensitivity_table(results: dict[str, pd.DataFrame], errors: tuple[str, ...] = ("voronoi_prefix", "l2_error"),
                      n_boot: int = 1000) -> pd.DataFrame:
    """One row per (variant, structure, regime, error): valid and converged fits, mean and median error at the
    largest n, and the slope of the means with its interval. `results` maps a variant name to its rows."""
    rows = []
    for name, df in results.items():
        summary = summarize(df, errors=list(errors), n_boot=n_boot)
        for _, r in summary.iterrows():
            rows.append(dict(variant=name, structure=r["structure"], regime=r["regime"], error=r["error"],
                             n_fits=r["n_fits"], n_valid=r["n_valid"], n_converged=r["n_converged"],
                             mean_at_n_max=r["mean_at_n_max"], median_at_n_max=r["median_at_n_max"],
                             slope=r["slope"], slope_lo=r["slope_lo"], slope_hi=r["slope_hi"],
                             median_slope=r["median_slope"], verdict=r["verdict"]))
    return pd.DataFrame(rows)
