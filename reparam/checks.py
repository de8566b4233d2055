"""THEORY section 5 as code: which error column measures which prediction, the summary table of a study,
and the registry of citable theory checks (one per row of the table).

Operationalisation (our choices, documented here and in the README):

| THEORY row | structures, regime | error column (prefix space (k, v)) | prediction |
|---|---|---|---|
| regression | all, both | l2_error | slope -1/2 (+- 0.1) |
| D exact-specified | shared_linear, shared_mlp, exact | voronoi_prefix | slope -1/2 (+- 0.1) |
| over-specified atoms | shared_linear, shared_mlp, over | atom_error_multi | slope -1/4 (+- 0.1) |
|   (D itself, over) | shared_linear, shared_mlp, over | voronoi_prefix | slope -1/2 (+- 0.1) |
| D_{1,r} over-specified | independent, over | voronoi_r1_prefix, atom_error_multi | flatter than -1/4 (the rate the shared structures reach for the same quantity) |
|   | independent, over | voronoi_r2_prefix | flatter than -1/2 |

"flatter than v" = the whole bootstrap interval of the slope lies above v (no polynomial rate as fast
as the shared one). For the same curves the power law is compared with a 1/log(n)^tau law.
Only certified fits (converged, optimality gap <= tolerance) enter slopes and means; every summary row
counts the fits left out and why.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .rates import Prediction, describe_verdict, fit_slopes, power_vs_log_law, verdict

SHARED = ("shared_linear", "shared_mlp")
ALL = ("shared_linear", "shared_mlp", "independent")
SUMMARY_ERRORS = ["voronoi_prefix", "voronoi_native", "l2_error", "atom_error_multi", "voronoi_r1_prefix",
                  "voronoi_r2_prefix"]


def prediction_for(structure: str, regime: str, error: str) -> tuple[Prediction | None, str]:
    """The THEORY prediction for one curve, and the THEORY row it comes from ('' when none applies)."""
    if error == "l2_error" and structure in ALL:
        return Prediction(-0.5), "regression: all structures"
    if structure in SHARED and error == "voronoi_prefix":
        return Prediction(-0.5), f"D, {'exact' if regime == 'exact' else 'over'}-specified: shared"
    if structure in SHARED and regime == "over" and error == "atom_error_multi":
        return Prediction(-0.25), "atoms in over-specified cells: shared"
    if structure == "independent" and regime == "over":
        if error in ("voronoi_r1_prefix", "atom_error_multi"):
            return Prediction(-0.25, kind="flatter_than"), "D_{1,r} over-specified: independent"
        if error == "voronoi_r2_prefix":
            return Prediction(-0.5, kind="flatter_than"), "D_{1,r} over-specified: independent"
    return None, ""


FAILURE_STATUSES = ("gap", "max_iter", "stalled", "nonfinite")


def _failure_counts(group: pd.DataFrame) -> dict:
    """How many fits failed the certificate, in total and per status (a converged fit whose optimality
    gap exceeds the tolerance has status 'gap'); any other status is counted in failed_other."""
    cert = group["certified"].astype(bool)
    status = group["status"].astype(str)
    out = dict(n_fits=int(len(group)), n_certified=int(cert.sum()), n_failed=int((~cert).sum()))
    for name in FAILURE_STATUSES:
        out[f"failed_{name}"] = int(((~cert) & (status == name)).sum())
    out["failed_other"] = int(((~cert) & ~status.isin(FAILURE_STATUSES)).sum())
    return out


def summarize(results: pd.DataFrame, errors: list[str] | None = None, n_boot: int = 2000, level: float = 0.95,
              by: tuple[str, ...] = ("structure", "regime"), replicate_col: str = "seed") -> pd.DataFrame:
    """One row per (by..., error): fitted slope of certified fits with its bootstrap interval, the THEORY
    prediction and verdict, the power-vs-log-law comparison, the mean error at the largest n, and how many
    fits failed the optimality certificate (excluded from everything numeric)."""
    errors = errors or SUMMARY_ERRORS
    by = list(by)
    rows = []
    for key, group in results.groupby(by, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        ident = dict(zip(by, key))
        counts = _failure_counts(group)
        good = group[group["certified"].astype(bool)]
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
            means = vals.groupby("n")[error].mean().sort_index()
            law = {}
            if len(means) >= 3:
                law = power_vs_log_law(means.index.to_numpy(), means.to_numpy())
            v = verdict(s["slope_lo"], s["slope_hi"], pred, s["slope"]) if pred else "n/a"
            rows.append({
                **ident, "error": error, "theory_row": row_name or "(no THEORY row)",
                "predicted": (np.nan if pred is None else pred.value),
                "prediction": ("" if pred is None else ("equal" if pred.kind == "equal" else "flatter_than")),
                "tolerance": (np.nan if pred is None or pred.kind != "equal" else pred.tolerance),
                "slope": s["slope"], "slope_lo": s["slope_lo"], "slope_hi": s["slope_hi"], "verdict": v,
                "intercept": s["intercept"], "n_min": s["n_min"], "n_max": s["n_max"], "n_sizes": s["n_sizes"],
                "n_replicates": s["n_replicates"],
                "mean_at_n_max": float(means.iloc[-1]), "better_law": law.get("better_law", ""),
                "log_law_tau": law.get("log_exponent", np.nan),
                **counts,
                "n_fits_error": int(len(vals)),
            })
    return pd.DataFrame(rows)


def headline(summary: pd.DataFrame) -> pd.DataFrame:
    """The rows that carry a THEORY prediction, in a compact form for printing."""
    s = summary[summary["prediction"] != ""].copy()
    s["slope (95% CI)"] = [f"{a:+.3f} [{b:+.3f}, {c:+.3f}]" for a, b, c in zip(s.slope, s.slope_lo, s.slope_hi)]
    s["predicted"] = [(f"{p:+.2f}" if k == "equal" else f"> {p:+.2f}") for p, k in zip(s.predicted, s.prediction)]
    s["failed"] = [f"{f}/{t}" for f, t in zip(s.n_failed, s.n_fits)]
    cols = [c for c in ["truth"] if c in s.columns] + ["structure", "regime", "error", "predicted",
                                                         "slope (95% CI)", "verdict", "failed", "better_law"]
    return s[cols].reset_index(drop=True)


# --------------------------------------------------------------------------------------------------
# Citable checks: one per row of THEORY section 5.

@dataclass
class Check:
    """A named, documented configuration and the curves whose slopes it compares with THEORY."""

    name: str
    theory_row: str
    description: str
    structures: list[str]
    regimes: list[str]
    errors: list[str]
    n_grid: list[int] = field(default_factory=lambda: [300, 1000, 3000, 10000, 30000, 100000])
    replicates: int = 10
    seed: int = 0
    truth: str = "canonical"

    def plan(self):
        from .study import Setting, TruthConfig
        from .sweep import StudyPlan
        return StudyPlan(structures=list(self.structures), regimes=list(self.regimes), n_grid=list(self.n_grid),
                         replicates=self.replicates, seed=self.seed, setting=Setting(truth=TruthConfig(kind=self.truth)))


CHECKS: dict[str, Check] = {c.name: c for c in [
    Check("regression", "||f_hat - f*||_L2, all structures: slope -1/2",
          "Regression error of every structure, exact- and over-specified, on a fresh sample of 1e5 points.",
          list(ALL), ["exact", "over"], ["l2_error"]),
    Check("shared-exact", "D, exact-specified cells, shared_linear and shared_mlp: slope -1/2",
          "Voronoi loss D in prefix space (k, v) of exact-specified shared fits (L' = L* = 2).",
          list(SHARED), ["exact"], ["voronoi_prefix"]),
    Check("shared-over", "atoms in over-specified cells, shared_linear and shared_mlp: slope -1/4",
          "Largest distance of a fitted atom in a multi-atom Voronoi cell to its true atom (prefix space), "
          "over-specified shared fits (L' = 3 > L* = 2); D itself should keep slope -1/2.",
          list(SHARED), ["over"], ["atom_error_multi", "voronoi_prefix"]),
    Check("independent-over", "D_{1,r}, over-specified, independent: slower than any polynomial",
          "D_{1,1}, D_{1,2} and the multi-cell atom error of over-specified independent fits; each slope should "
          "be flatter than the rate the shared structures reach for the same quantity (-1/4, -1/2, -1/4).",
          ["independent"], ["over"], ["voronoi_r1_prefix", "voronoi_r2_prefix", "atom_error_multi"]),
]}


def overall_verdict(verdicts: list[str]) -> str:
    if any(v == "disagree" for v in verdicts):
        return "disagree"
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
                                    line="no certified fits with this error" if pred else "no prediction"))
                    continue
                r = sel.iloc[0]
                out.append(dict(structure=structure, regime=regime, error=error, verdict=r["verdict"],
                                predicted=pred.value, kind=pred.kind, slope=r["slope"], slope_lo=r["slope_lo"],
                                slope_hi=r["slope_hi"], n_failed=int(r["n_failed"]), n_fits=int(r["n_fits"]),
                                better_law=r["better_law"],
                                line=describe_verdict(r["slope"], r["slope_lo"], r["slope_hi"], pred)))
    return out, overall_verdict([o["verdict"] for o in out])


def check_report(check: Check, summary: pd.DataFrame, command: str, wall_seconds: float | None = None) -> str:
    """A markdown section a reader can cite: configuration, prediction, measurement, verdict."""
    lines, overall = check_lines(check, summary)
    md = [f"## Check `{check.name}`: {overall.upper()}", "",
          f"- THEORY row: {check.theory_row}", f"- What: {check.description}",
          f"- Configuration: truth={check.truth}, structures={check.structures}, regimes={check.regimes}, "
          f"n_grid={check.n_grid}, replicates={check.replicates}, seed={check.seed}; core defaults otherwise "
          f"(reparam.study.Setting: near-truth init, reparam.fit.SolverConfig defaults; only certified fits enter).",
          f"- Command: `{command}`"]
    if wall_seconds is not None:
        md.append(f"- Wall time of this invocation: {wall_seconds:.0f} s (fits already in the result log are reused)")
    md += ["", "| structure | regime | error | predicted | measured slope [95% CI] | verdict | failed fits | better law |",
           "|---|---|---|---|---|---|---|---|"]
    for o in lines:
        if "slope" not in o:
            md.append(f"| {o['structure']} | {o['regime']} | {o['error']} | | {o['line']} | {o['verdict']} | | |")
            continue
        pred = f"{o['predicted']:+.2f} +- 0.10" if o["kind"] == "equal" else f"flatter than {o['predicted']:+.2f}"
        md.append(f"| {o['structure']} | {o['regime']} | `{o['error']}` | {pred} | {o['slope']:+.3f} "
                  f"[{o['slope_lo']:+.3f}, {o['slope_hi']:+.3f}] | **{o['verdict']}** | {o['n_failed']}/{o['n_fits']} "
                  f"| {o['better_law']} |")
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
            inconclusive=int(counts.get("inconclusive", 0)),
            fits=int(g["n_fits"].sum()), failed_fits=int(g["n_failed"].sum()),
        ))
    return per_truth, pd.DataFrame(rows)
