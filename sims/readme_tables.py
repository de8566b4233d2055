"""`reparam readme-tables [figures=figures] [root=.] [readme=FILE]` (Hydra app): refresh the generated blocks.

README.md and the documentation pages under docs/ quote the canonical results. Every such table or answer
paragraph is rendered here from the committed tables in figures/ (never typed by hand; the theory table of
docs/theory.md from reparam.theory) and written between a pair of markers,

    <!-- generated:NAME -->
    ...
    <!-- /generated:NAME -->

in the one page that holds it (HOMES: README.md keeps one answer paragraph per study, the tables live in the
study's page under docs/), so a rerun of the recorded studies (`reparam canonical`) updates the prose's numbers
too. A block whose source file is missing is left as it is, with a note on stderr. `readme=FILE` rewrites the
blocks of that one file instead of the pages under `root`.
`python -m reparam.sims.readme_tables figures=DIR` is the same command; `run(cfg)` does the work in-process.
"""
from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd
from hydra.core.config_store import ConfigStore

from reparam.app import as_dictconfig, hydra_main
from reparam.validation import ConfigError, check_added_keys, check_unknown_keys


@dataclass
class ReadmeTablesConf:
    """Settings of `reparam readme-tables`.

    figures: the folder of the committed tables the pages quote (summary.csv, results.csv, sensitivity.csv,
        checks_report.md, calibration/calibration.csv, inverse-ratio/summary.csv, inverse-bound/,
        robustness_summary.csv, head_like/d*/{results,summary}.csv, lm/; a missing one leaves its blocks as they are).
    root: the checkout whose README.md and docs/ pages hold the blocks (each in its home page, see HOMES).
    readme: one markdown file whose `<!-- generated:NAME -->` blocks are rewritten in place, instead of the pages
        under `root` (null: the pages under `root`).
    """

    figures: str = "figures"
    root: str = "."
    readme: Optional[str] = None


ConfigStore.instance().store(name="readme_tables_schema", node=ReadmeTablesConf)


def _ci(slope: float, lo: float, hi: float) -> str:
    if not np.isfinite(slope):
        return "n/a"
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return f"{slope:+.3f}"
    return f"{slope:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def _predicted(value: float, kind: str) -> str:
    return f"{value:+.2f}" if kind == "equal" else f"flatter than {value:+.2f}"


def summary_table(summary: pd.DataFrame) -> str:
    """Every curve with a THEORY prediction: slope of the means and of the medians, verdict, valid fits."""
    s = summary[summary["prediction"].fillna("") != ""]
    lines = ["| structure | regime | error | predicted | slope of means [95% CI] | verdict | slope of medians [95% CI] "
             "| valid fits | converged |", "|---|---|---|---|---|---|---|---|---|"]
    for _, r in s.iterrows():
        lines.append(f"| {r.structure} | {r.regime} | `{r.error}` | {_predicted(r.predicted, r.prediction)} | "
                     f"{_ci(r.slope, r.slope_lo, r.slope_hi)} | {r.verdict} | "
                     f"{_ci(r.median_slope, r.median_slope_lo, r.median_slope_hi)} | {int(r.n_valid)}/{int(r.n_fits)} | "
                     f"{int(r.n_converged)}/{int(r.n_fits)} |")
    return "\n".join(lines)


def largest_n_table(summary: pd.DataFrame, results: pd.DataFrame) -> str:
    """D in prefix space at the largest n, mean and median, and the ratio of each curve to shared_mlp's in the
    same regime; plus the share of valid and of converged fits over the whole study."""
    s = summary[summary["error"] == "voronoi_prefix"].set_index(["structure", "regime"])
    lines = [f"| structure | regime | mean D at n = {int(s['n_max'].max()):,} | median D | mean / shared_mlp's |",
             "|---|---|---|---|---|"]
    for (structure, regime), r in s.iterrows():
        ref = s.loc[("shared_mlp", regime)] if ("shared_mlp", regime) in s.index else None
        ratio = f"{r.mean_at_n_max / ref.mean_at_n_max:.1f}x" if ref is not None else ""
        lines.append(f"| {structure} | {regime} | {r.mean_at_n_max:.3f} | {r.median_at_n_max:.3f} | {ratio} |")
    valid = results["valid"].astype(bool)
    converged = results["converged"].astype(bool)
    lines += ["", f"Fits: {len(results)}; valid (enter every number) {int(valid.sum())} "
                  f"({100 * valid.mean():.1f}%); converged by the solver's second-order test {int(converged.sum())} "
                  f"({100 * converged.mean():.1f}%)."]
    return "\n".join(lines)


def sensitivity_table(table: pd.DataFrame) -> str:
    t = table[table["error"] == "voronoi_prefix"]
    lines = ["| starts and budget | structure | valid fits | converged | mean D at largest n | median D | "
             "slope of means [95% CI] | slope of medians |", "|---|---|---|---|---|---|---|---|"]
    for _, r in t.iterrows():
        lines.append(f"| {r.variant} | {r.structure} | {int(r.n_valid)}/{int(r.n_fits)} | "
                     f"{int(r.n_converged)}/{int(r.n_fits)} | {r.mean_at_n_max:.3f} | {r.median_at_n_max:.3f} | "
                     f"{_ci(r.slope, r.slope_lo, r.slope_hi)} | {r.median_slope:+.3f} |")
    return "\n".join(lines)


def robustness_table(dist: pd.DataFrame) -> str:
    d = dist[dist["prediction"].fillna("") != ""]
    lines = ["| structure | regime | error | predicted | median slope [quartiles] | agree | disagree | "
             "inconclusive | insufficient | excluded fits |", "|---|---|---|---|---|---|---|---|---|---|"]
    for _, r in d.iterrows():
        insufficient = int(r["insufficient"]) if "insufficient" in r else 0
        excluded = r["excluded_fits"] if "excluded_fits" in r else r.get("failed_fits", np.nan)
        lines.append(f"| {r.structure} | {r.regime} | `{r.error}` | {_predicted(r.predicted, r.prediction)} | "
                     f"{r.slope_median:+.3f} [{r.slope_q25:+.3f}, {r.slope_q75:+.3f}] | {int(r.agree)} | "
                     f"{int(r.disagree)} | {int(r.inconclusive)} | {insufficient} | {int(excluded)}/{int(r.fits)} |")
    return "\n".join(lines)


def inverse_ratio_table(summary: pd.DataFrame) -> str:
    """The inverse-ratio check on the fits: slope of D / ||f_hat - f*|| against n per curve."""
    lines = ["| structure | regime | predicted slope | slope of the mean ratio [95% CI] | verdict | slope of the median "
             "ratio [95% CI] | mean / median ratio at the largest n | valid fits |", "|---|---|---|---|---|---|---|---|"]
    for _, r in summary.iterrows():
        predicted = "> 0" if r.prediction == "flatter_than" else f"{r.predicted:+.0f} +- {r.tolerance:.1f}"
        lines.append(f"| {r.structure} | {r.regime} | {predicted} | {_ci(r.slope, r.slope_lo, r.slope_hi)} | {r.verdict} | "
                     f"{_ci(r.median_slope, r.median_slope_lo, r.median_slope_hi)} | "
                     f"{r.mean_at_n_max:.0f} / {r.median_at_n_max:.0f} | {int(r.n_valid)}/{int(r.n_fits)} |")
    return "\n".join(lines)


def wall_times_table(times: pd.DataFrame, robustness: pd.DataFrame | None = None) -> str:
    """The steps of the last `reparam canonical` run (figures/wall_times.csv): command, wall time, fit records the
    step added to its logs (fitted, or copied from another log with `reuse=`). A step whose fits were all in its
    log already says so: its time is then not the time of the fits. The robustness sweep, when it was not among
    the steps, gets the sum of its recorded cell times instead."""
    lines = ["| command | wall time | fit records added (in its logs) | CPUs, load at the end | date, commit |",
             "|---|---|---|---|---|"]
    for _, r in times.iterrows():
        fits = (f"{int(r.fits_run)} ({int(r.fits_recorded)})" if r.fits_run else
                f"none: all {int(r.fits_recorded)} already in its log" if r.fits_recorded else "no fits")
        lines.append(f"| `{r.command}` | {r.wall_seconds:.0f} s | {fits} | {int(r.cpu_count)}, "
                     f"{r.load_1min_at_end:.1f} | {r.date_utc}, `{r.git_commit}` |")
    if robustness is not None and not times.command.str.startswith("reparam robustness").any():
        cells = robustness.groupby(["truth", "structure", "regime", "n"])
        fitting = float((cells["seconds"].sum()).sum())
        lines.append(f"| `reparam robustness -m` (not run by that `reparam canonical`) | {fitting:.0f} s of fitting "
                     f"summed over its {cells.ngroups} cells, as recorded in `robustness_results.csv` (cells run in "
                     f"parallel worker processes) | {len(robustness)} | | |")
    return "\n".join(lines)


def _chunk_cost(chunks: pd.DataFrame) -> str:
    """Wall time, CPU time and load of a chunk log, summed from its rows."""
    import json

    load = chunks["load_avg_end"].map(lambda v: (json.loads(v) if isinstance(v, str) else v)[0])
    return (f"{chunks['wall_s'].sum() / 3600:.2f} hours of wall time and {chunks['cpu_s'].sum() / 3600:.2f} CPU-hours "
            f"({len(chunks)} chunk{'s' if len(chunks) != 1 else ''}; 1-minute load average at their ends "
            f"{load.min():.1f} to {load.max():.1f} on {int(chunks['cpu_count'].max())} cores)")


def low_data_budget_table(budget: pd.DataFrame) -> str:
    """Per structure and n: how often the selected lr was the grid's largest, how often the best dev loss came at
    the step cap (still improving), and the mean dev loss at step 0 and at its best (`*_budget.csv`)."""
    lines = ["| structure | n | cells | selected the largest lr | best dev loss at the step cap | dev loss: step 0 -> best |",
             "|---|---|---|---|---|---|"]
    for _, r in budget.sort_values(["structure", "n"]).iterrows():
        lines.append(f"| {r['structure']} | {int(r['n'])} | {int(r['cells'])} | {int(r['largest_lr_selected'])} of "
                     f"{int(r['cells'])} | {int(r['best_at_cap'])} of {int(r['cells'])} | "
                     f"{r['dev_start']:.3f} -> {r['dev_best']:.3f} |")
    return "\n".join(lines)


def low_data_budget_check_table(check: pd.DataFrame, check_lr: pd.DataFrame | None) -> str:
    """shared - the checked structure at the protocol's budget and at the check's larger one, on the same cells
    (`*_budget_check.csv`), and where the check's own runs stopped (`*_budget_check_lr.csv`)."""
    from reparam.lm.compare import format_difference

    labels = {"test_nll": "test NLL [nats/token]", "bleu": "BLEU"}
    baseline = check["baseline"].iloc[0]
    lines = [f"| metric | n | budget | replicates | shared - {baseline} [95% CI] | verdict |", "|---|---|---|---|---|---|"]
    for _, r in check[check.metric.isin(list(labels))].sort_values(["metric", "n", "variant"], ascending=[False, True, True]).iterrows():
        lines.append(f"| {labels[r['metric']]} | {int(r['n'])} | {r['variant']} | {int(r['replicates'])} | "
                     f"{format_difference(r)} | {r['verdict']} |")
    text = "\n".join(lines)
    if check_lr is not None and len(check_lr):
        text += "\n\nWith the larger budget, " + "; ".join(
            f"at n = {int(r['n'])} {r['structure']} selected the largest lr in {int(r['largest_lr_selected'])} of "
            f"{int(r['cells'])} cells, reached its best dev loss at the step cap in {int(r['best_at_cap'])} of "
            f"{int(r['cells'])}, and went from {r['dev_start']:.3f} to {r['dev_best']:.3f} on the dev set"
            for _, r in check_lr.sort_values("n").iterrows()) + "."
    return text


def _placement_levels(top: pd.DataFrame, every: pd.DataFrame) -> str:
    """Mean test NLL and BLEU per structure with the prefix in the top K layers and in every layer, on the
    (n, replicate) cells the all-layer rows cover."""
    keys = set(zip(every.n, every.replicate))
    covered = pd.Series([k in keys for k in zip(top.n, top.replicate)], index=top.index)
    top = top[covered & top.structure.isin(set(every.structure))]
    k = int(top["top_layers"].iloc[0]) if "top_layers" in top and len(top) else None
    lines = ["| prefix in | structure | n | replicates | test NLL [nats/token] | BLEU |", "|---|---|---|---|---|---|"]
    for label, d in ((f"top {k} layers" if k else "top layers", top), ("every layer", every)):
        for (structure, n), g in d.groupby(["structure", "n"]):
            bleu = f"{g['bleu'].mean():.2f}" if "bleu" in g and g["bleu"].notna().any() else "not scored"
            lines.append(f"| {label} | {structure} | {int(n)} | {len(g)} | {g['test_nll'].mean():.3f} | {bleu} |")
    return "\n".join(lines)


def low_data_answer(paired: pd.DataFrame, structure: str = "shared") -> str:
    """One sentence: `structure` - independent in test NLL and BLEU at the smallest and the largest n, with intervals,
    and whether the verdict is the same at every n ('' without test-NLL rows for `structure`)."""
    from reparam.lm.compare import format_difference

    nll = paired[(paired.structure == structure) & (paired.metric == "test_nll")].sort_values("n")
    if nll.empty:
        return ""
    verdicts = set(nll.verdict)
    ns = [int(n) for n in nll.n]
    if verdicts == {f"{structure} better"}:
        head = f"`{structure}` has a lower test NLL than `independent` at every n recorded ({', '.join(map(str, ns))})"
    elif verdicts == {"independent better"}:
        head = f"`independent` has a lower test NLL than `{structure}` at every n recorded ({', '.join(map(str, ns))})"
    else:
        head = (f"`{structure}` - `independent` in test NLL: " +
                "; ".join(f"n = {int(r['n'])}: {r['verdict']}" for _, r in nll.iterrows()))
    ends = nll.iloc[[0, -1]] if len(nll) > 1 else nll.iloc[[0]]
    parts = [f"{format_difference(r)} nats/token at n = {int(r['n'])} ({int(r['replicates'])} paired replicates)"
             for _, r in ends.iterrows()]
    text = f"{head}: the difference is {' and '.join(parts)}"
    bleu = paired[(paired.structure == structure) & (paired.metric == "bleu")].set_index("n")
    if set(ends.n) <= set(bleu.index):
        text += "; in BLEU, " + " and ".join(f"{format_difference(bleu.loc[n])} at n = {int(n)}" for n in ends.n)
    return text + "."


def minimax_answer(verdicts: pd.DataFrame, targets: pd.DataFrame, measured: pd.DataFrame, latent_dim: int = 2,
                   target: float = 0.03) -> str:
    """One paragraph: the local minimax lower bound (Le Cam's two-point method on psi(delta), THEORY section 8) of
    the synthetic canonical truth at `latent_dim` per structure and regime, the worst-case sample ratio at `target`,
    and how many measured cells of the estimator fall below the bound ('' without synthetic rows)."""
    v = verdicts[(verdicts.study == "synthetic") & (verdicts.latent_dim == latent_dim)]
    if v.empty:
        return ""
    stay = v[v.verdict == "does not vanish"]
    fall = v[v.verdict == "falls like n^-1/2"]
    name = lambda r: f"{r.regime}-specified `{r.structure}`"  # noqa: E731
    parts = []
    if len(stay):
        parts.append("does not vanish at any n for " + ", ".join(
            f"{name(r)} (at least {r.lower_bound_proven_at_n_max:.3g} in D with the proven constant C = "
            f"{r.separation_constant:g}, {r.lower_bound_at_n_max:.3g} up to C)" for r in stay.itertuples()))
    if len(fall):
        parts.append("falls like n^-1/2 for " + ", ".join(name(r) for r in fall.itertuples()))
    text = (f"On the canonical truth (r = {latent_dim}), the local minimax lower bound on the prefix error D "
            f"(Le Cam's two-point method on psi(delta)) " + "; it ".join(parts) + ".")
    t = targets[(targets.study == "synthetic") & (targets.latent_dim == latent_dim) & (targets.target == target)
                & (targets.structure == "independent")].set_index("regime")
    ratios = [f"{regime}-specified, {t.loc[regime, 'ratio_to_reference']:.3g}x as many samples"
              if np.isfinite(t.loc[regime, "n_lower_bound"]) else f"{regime}-specified, no n suffices"
              for regime in ("exact", "over") if regime in t.index]
    if ratios:
        text += (f" To be guaranteed D = {target:g} in the worst case, `independent` needs, against `shared_mlp`: "
                 + "; ".join(ratios) + ".")
    m = measured[measured.study == "synthetic"]
    if len(m):
        below = int(m.below_bound.fillna(False).astype(bool).sum())
        text += f" The package's estimator is below the bound (beyond its 95% interval) in {below} of {len(m)} measured cells."
    return text


def low_data_runs_table(path: Path) -> str:
    """The training runs recorded so far by a per-n tuned study (its checksummed runs.jsonl), before its report is
    written: which learning rates were tried where, where each run's best dev check fell, and its test NLL."""
    from reparam.results import ResultLog

    rows = ResultLog(path).rows()
    order = list(dict.fromkeys(r["setting_id"] for r in rows))  # settings in the order their runs were recorded
    lines = [f"The study has no report yet (`stage=report` writes it once its cells are trained); "
             f"{len(rows)} training run{'s' if len(rows) != 1 else ''} recorded"
             + (f" under {len(order)} settings (an edited protocol gets a new setting id; earlier runs are kept but "
                "never pooled with its runs)" if len(order) > 1 else "") + ":", "",
             "| setting | n | replicate | structure | lr | steps | best dev check (first, cap) | status | best dev loss "
             "| test NLL |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (order.index(r["setting_id"]), r["n"], r["replicate"], r["structure"], r["lr"])):
        lines.append(f"| {r['setting_id']} | {r['n']} | {r['replicate']} | {r['structure']} | {r['lr']:g} | {r['steps']} | "
                     f"{r['best_step']} ({r['first_check']}, {r['cap']}) | {r['status']} | {r['best_dev']:.4f} | "
                     f"{r['test_nll']:.4f} |")
    return "\n".join(lines)


def low_data_all_layer_blocks(low: Path) -> dict[str, str]:
    """The all-layer study's blocks: its answer (README, followed by the top-K edition's diagnosis as a variant)
    and its per-cell and paired tables (the low-data tutorial), from the report of `setting=cpu_all_layers`; and
    the top-K edition's diagnosis table (is it optimisation-limited?)."""
    from reparam.lm.low_data.report import answer_paragraph, variant_paragraph

    report = low / "cpu_all_layers" / "report"
    answer = answer_paragraph(report) or ("The all-layer study (`setting=cpu_all_layers`) has no reported cells "
                                          "yet: there is no low-data answer.")
    blocks = {"low-data-answer": "\n\n".join(p for p in (answer, variant_paragraph(low)) if p)}
    tables = [report / f"low_data_e2e_{name}.md" for name in ("study", "paired")]
    if all(t.is_file() for t in tables):
        parts = ["\n".join(line for line in t.read_text().splitlines() if not line.startswith("# ")).strip()
                 for t in tables]
        chunks_csv = report / "low_data_e2e_chunks.csv"
        if chunks_csv.is_file():
            chunks = pd.read_csv(chunks_csv)
            ids = ", ".join(f"`{i}`" for i in chunks["setting_id"].astype(str).unique())
            parts.append(f"The study's recorded chunks (setting {ids}) took {_chunk_cost(chunks)}.")
        blocks["low-data-all-layers"] = "\n\n".join(parts)
    elif (low / "cpu_all_layers" / "low_data" / "runs.jsonl").is_file():
        blocks["low-data-all-layers"] = low_data_runs_table(low / "cpu_all_layers" / "low_data" / "runs.jsonl")
    diagnosis = low / "low_data_e2e_diagnosis.md"
    if diagnosis.is_file():
        blocks["low-data-diagnosis"] = "\n".join(line for line in diagnosis.read_text().splitlines()
                                                 if not line.startswith("# ")).strip()
    return blocks


def low_data_table(paired: pd.DataFrame, chunks: pd.DataFrame | None, cells: pd.DataFrame,
                   variant: pd.DataFrame | None = None, variant_chunks: pd.DataFrame | None = None,
                   every: pd.DataFrame | None = None) -> str:
    """The real-model answer so far: each structure minus independent per n (test NLL, BLEU), replicates recorded,
    interval and verdict ("insufficient" below 3 replicates), and the CPU time the recorded chunks took; with
    `variant` (the `*_variant.csv` of `reparam low-data stage=report`), shared - independent with the prefix in
    the top K layers and in every layer on the same cells, and what that check cost."""
    from reparam.lm.compare import format_difference

    labels = {"test_nll": "test NLL [nats/token]", "bleu": "BLEU"}
    p = paired[paired.metric.isin(list(labels))].sort_values(["metric", "structure", "n"], ascending=[False, True, True])
    answer = low_data_answer(paired)
    top = cells.top_layers.dropna() if "top_layers" in cells else pd.Series(dtype=float)
    label = f"Top-{int(top.iloc[0])} edition" if len(top) else "Summary"
    lines = ([f"**{label}.** {answer}", ""] if answer else []) + [
             "| metric | structure - independent | n | replicates | difference [95% CI] | verdict |",
             "|---|---|---|---|---|---|"]
    for _, r in p.iterrows():
        lines.append(f"| {labels[r['metric']]} | {r['structure']} | {int(r['n'])} | {int(r['replicates'])} | "
                     f"{format_difference(r)} | {r['verdict']} |")
    done = cells.groupby(["n"]).replicate.nunique()
    recorded = ", ".join(f"n = {n}: {k} of 3" for n, k in done.items())
    text = "\n".join(lines) + f"\n\nReplicates recorded so far: {recorded}."
    if chunks is not None and len(chunks):
        text += f" The recorded chunks took {_chunk_cost(chunks)}."
    if variant is not None and len(variant):
        v = variant[variant.metric.isin(list(labels))].sort_values(["metric", "n", "variant"], ascending=[False, True, False])
        lines = ["| metric | n | prefix in | replicates | shared - independent [95% CI] | verdict |",
                 "|---|---|---|---|---|---|"]
        for _, r in v.iterrows():
            lines.append(f"| {labels[r['metric']]} | {int(r['n'])} | {r['variant']} | {int(r['replicates'])} | "
                         f"{format_difference(r)} | {r['verdict']} |")
        text += ("\n\nThe top-K variant against prefixes in every layer, on the same cells (training subsets and seeds):"
                 "\n\n" + "\n".join(lines))
        if every is not None and len(every):
            text += "\n\nThe scores themselves on those cells (mean over replicates):\n\n" + _placement_levels(cells, every)
        if variant_chunks is not None and len(variant_chunks):
            text += f"\n\nThe all-layer runs took {_chunk_cost(variant_chunks)}."
    return text


def _truth_label(results: pd.DataFrame) -> tuple[str, int, int]:
    """(truth name, d, m) of a study's rows (one truth per study)."""
    name = str(results["truth"].iloc[0])
    d = int(results["d"].iloc[0]) if "d" in results else (int(name.split("-d")[1].split("-")[0]) if "-d" in name else 2)
    m = int(results["m"].iloc[0]) if "m" in results else (int(name.split("-m")[1].split("-")[0]) if "-m" in name else 1)
    return name, d, m


def dimension_tables(studies: list[tuple[pd.DataFrame, pd.DataFrame]]) -> tuple[str, str]:
    """The same study at growing dimension: (separation, verdicts).

    separation: the headline comparison per truth (reparam.plots.samples_needed, over-specified D): the target is
    what independent reaches at its largest n, and the n each shared structure needs for it, with the ratio; and
    the ratio of the errors themselves at the largest n (mean and median over valid fits, from summary.csv).
    verdicts: slope [95% CI] and verdict of every curve with a THEORY prediction, one column per truth."""
    from reparam.plots import samples_needed

    sep = ["| truth | d | m | target D (independent's mean at its largest n) | n needed: independent | shared_linear | "
           "shared_mlp | independent / shared_mlp | D at the largest n, independent / shared_mlp: mean | median |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    labels, merged = [], None
    for results, summary in studies:
        name, d, m = _truth_label(results)
        target, needed = samples_needed(results)
        fmt = lambda n: f"{n:,.0f}" if np.isfinite(n) else "not reached"  # noqa: E731
        ratio = needed.get("independent", np.nan) / needed.get("shared_mlp", np.nan)
        top = summary[(summary.error == "voronoi_prefix") & (summary.regime == "over")].set_index("structure")
        level = {stat: top.loc["independent", f"{stat}_at_n_max"] / top.loc["shared_mlp", f"{stat}_at_n_max"]
                 if {"independent", "shared_mlp"} <= set(top.index) else np.nan for stat in ("mean", "median")}
        sep.append(f"| {name} | {d} | {m} | {target:.3g} | {fmt(needed.get('independent', np.nan))} | "
                   f"{fmt(needed.get('shared_linear', np.nan))} | {fmt(needed.get('shared_mlp', np.nan))} | "
                   f"{f'{ratio:.0f}x' if np.isfinite(ratio) else 'n/a'} | {level['mean']:.1f}x | {level['median']:.1f}x |")
        s = summary[summary["prediction"].fillna("") != ""].copy()
        s[name] = [f"{_ci(r.slope, r.slope_lo, r.slope_hi)} {r.verdict}" for r in s.itertuples()]
        s["predicted_text"] = [_predicted(r.predicted, r.prediction) for r in s.itertuples()]
        s = s[["structure", "regime", "error", "predicted_text", name]]
        merged = s if merged is None else merged.merge(s, on=["structure", "regime", "error", "predicted_text"],
                                                        how="outer")
        labels.append(name)
    ver = ["| structure | regime | error | predicted | " + " | ".join(labels) + " |",
           "|---|---|---|---|" + "---|" * len(labels)]
    for _, r in merged.iterrows():
        ver.append(f"| {r.structure} | {r.regime} | `{r.error}` | {r.predicted_text} | " +
                   " | ".join(str(r[x]) if isinstance(r[x], str) else "not run" for x in labels) + " |")
    return "\n".join(sep), "\n".join(ver)


LARGE_N_WINDOWS = {"n <= 3e4 (the sweep's grid)": (0, 30_000), "n >= 3e4": (30_000, np.inf), "all n": (0, np.inf)}


def large_n_table(results: pd.DataFrame, original: pd.DataFrame | None = None, error: str = "voronoi_prefix",
                  regime: str = "over") -> str:
    """Truths of the robustness sweep rerun to larger n: per truth and structure, the slope of the mean D over
    valid fits [its interval] and its verdict against the theory table's prediction for that structure (-1/2 for
    the shared structures' over-specified D), on the sweep's own grid (n <= 3e4), on the large-n window
    (n >= 3e4) and on all n; plus the verdict the sweep recorded (robustness.csv), so a reader sees whether the
    slopes move toward the prediction as n grows (pre-asymptotic) or not."""
    from reparam.checks import valid_mask
    from reparam.rates import fit_slopes, verdict
    from reparam.theory import prediction_for, slope_text

    part = results[(results.regime == regime) & valid_mask(results)]
    head = "| truth | structure | sweep's verdict | " + " | ".join(f"slope, {w}" for w in LARGE_N_WINDOWS) + " | valid fits |"
    lines = [head, "|---|---|---|" + "---|" * len(LARGE_N_WINDOWS) + "---|"]
    moved = toward = 0
    predicted: set[float] = set()
    after: dict[str, list] = {s: [] for s in sorted(part.structure.unique())}
    keys = sorted(part.groupby(["structure", "truth"]).groups, key=lambda k: (k[0], int(str(k[1]).split("-")[1])))
    for structure, truth in keys:
        g = part[(part.structure == structure) & (part.truth == truth)]
        pred, _ = prediction_for(structure, regime, error)
        if pred is None:
            raise ValueError(f"the theory table predicts no slope of {error!r} for {structure!r} ({regime}-specified)")
        predicted.add(pred.value)
        cells, slopes = [], {}
        for name, (lo, hi) in LARGE_N_WINDOWS.items():
            w = g[(g.n >= lo) & (g.n <= hi)]
            if w.n.nunique() < 3:
                cells.append("n/a")
                continue
            r = fit_slopes(w, error, by=[], n_boot=1000).iloc[0]
            v = verdict(r.slope_lo, r.slope_hi, pred, r.slope, r.min_replicates)
            slopes[name] = r.slope
            cells.append(f"{_ci(r.slope, r.slope_lo, r.slope_hi)} {v}")
        before = ""
        if original is not None:
            o = original[(original.truth == truth) & (original.structure == structure) & (original.regime == regime)
                         & (original.error == error)]
            before = str(o.verdict.iloc[0]) if len(o) else ""
        small, large = (slopes.get(k) for k in list(LARGE_N_WINDOWS)[:2])
        if small is not None and large is not None:
            moved += 1
            toward += abs(large - pred.value) < abs(small - pred.value)
        if before == "disagree" and len(cells) > 1 and cells[1] != "n/a":
            after[structure].append((truth, cells[1].rsplit(" ", 1)[-1]))
        lines.append(f"| {truth} | {structure} | {before} | " + " | ".join(cells) +
                     f" | {len(g)}/{int(((results.truth == truth) & (results.structure == structure) & (results.regime == regime)).sum())} |")
    text = "\n".join(lines)
    if moved:
        target = " / ".join(slope_text(v) for v in sorted(predicted))
        text += (f"\n\nOf {moved} curves, {toward} have a large-n slope (n >= 3e4) closer to {target} than their slope "
                 f"on the sweep's grid (n <= 3e4).")
    for structure, pairs in after.items():
        if pairs:
            counts = {v: [t for t, x in pairs if x == v] for v in ("agree", "inconclusive", "disagree", "insufficient")}
            text += (f" Of the {len(pairs)} truths where `{structure}` disagreed in the sweep, on n >= 3e4: " +
                     ", ".join(f"{len(ts)} {v}" + (f" ({', '.join(ts)})" if v == "disagree" and ts else "")
                               for v, ts in counts.items() if ts) + ".")
    return text


def _names(items) -> str:
    """`a`, `b` and `c`."""
    items = [f"`{x}`" for x in items]
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _verdict_counts(verdicts: pd.Series, order=("agree", "inconclusive", "disagree", "insufficient")) -> str:
    """'9 agree, 6 inconclusive and 0 disagree' (the verdicts that occur, plus 'disagree' always)."""
    counts = verdicts.value_counts()
    parts = [f"{int(counts.get(v, 0))} {v}" for v in order if v in counts.index or v == "disagree"]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def convergence_answer(summary: pd.DataFrame, results: pd.DataFrame) -> str:
    """The synthetic study's answer in one paragraph: how many fewer samples over-specified `shared_mlp` needs to
    reach the mean prefix error `independent` has at its largest n, the error ratio at that n, and the THEORY
    verdicts of every predicted curve."""
    from reparam.plots import samples_needed

    target, needed = samples_needed(results)
    top = summary[(summary.error == "voronoi_prefix") & (summary.regime == "over")].set_index("structure")
    predicted = summary[summary["prediction"].fillna("") != ""]
    fits = f"{len(results):,} fits, {int(results['valid'].astype(bool).sum()):,} of them valid"
    verdicts = f"Of the {len(predicted)} curves THEORY predicts a slope for, {_verdict_counts(predicted.verdict)} ({fits})"
    others = predicted[predicted.verdict != "agree"]
    if len(others):
        verdicts += ("; not agreeing: " + ", ".join(f"`{r.structure}` {r.regime} `{r.error}` ({r.verdict})"
                                                    for r in others.itertuples()))
    verdicts += "."
    if not ({"independent", "shared_mlp"} <= set(top.index) and {"independent", "shared_mlp"} <= set(needed)):
        return verdicts
    n_max = int(top.loc["independent", "n_max"])
    mean = top.loc["independent", "mean_at_n_max"] / top.loc["shared_mlp", "mean_at_n_max"]
    median = top.loc["independent", "median_at_n_max"] / top.loc["shared_mlp", "median_at_n_max"]
    return (f"Over-specified `shared_mlp` reaches the prefix error D = {target:.3g} that `independent` has at "
            f"n = {n_max:,} with about {needed['independent'] / needed['shared_mlp']:.0f}x fewer samples "
            f"(n = {needed['shared_mlp']:,.0f}); at n = {n_max:,} the mean D of over-specified `independent` is "
            f"{mean:.1f}x that of `shared_mlp` (median {median:.1f}x). " + verdicts)


def checks_answer(report: str) -> str:
    """The verdict of every citable check, read from the verdict table of `reparam check all=true`'s report.md."""
    rows = re.findall(r"^\| `([^`]+)` \| \*\*(\w+)\*\* \|$", report, re.M)
    if not rows:
        return ""
    by_verdict: dict[str, list[str]] = {}
    for name, verdict in rows:
        by_verdict.setdefault(verdict, []).append(name)
    order = ("agree", "inconclusive", "disagree", "insufficient")
    parts = [f"{len(names)} {verdict} ({_names(names)})" for verdict, names in sorted(
        by_verdict.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order))]
    text = (f"Of the {len(rows)} citable theory checks run on the canonical study, " +
            (parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]))
    return text + ("" if "disagree" in by_verdict else "; none disagrees") + "."


def robustness_answer(dist: pd.DataFrame, large_n: str | None = None) -> str:
    """Over random truths: how often the regression rate and the over-specified shared D agree with THEORY, and
    (from the large-n rerun's table text) what became of the truths that disagreed."""
    d = dist[dist["prediction"].fillna("") != ""].set_index(["structure", "regime", "error"])
    truths = int(d["n_truths"].max())
    parts = []
    if "l2_error" in d.index.get_level_values("error"):
        l2 = d.xs("l2_error", level="error")
        parts.append(f"the regression error falls at THEORY's -1/2 for {int(l2.agree.min())} to {int(l2.agree.max())} "
                     f"of the {truths} truths in every structure and regime ({int(l2.disagree.sum())} disagreements "
                     f"in all)")
    key = ("shared_mlp", "over", "voronoi_prefix")
    if key in d.index:
        r = d.loc[key]
        parts.append(f"the over-specified `shared_mlp` prefix error has median slope {r.slope_median:+.3f} against "
                     f"{r.predicted:+.2f} ({int(r.agree)} agree, {int(r.disagree)} disagree, {int(r.inconclusive)} "
                     f"inconclusive)")
    if not parts:
        return ""
    text = f"Over {truths} random truths, " + "; ".join(parts) + "."
    if large_n:
        moved = re.search(r"Of the \d+ truths where `shared_mlp` disagreed[^.]*\.", large_n)
        if moved:
            text += f" The disagreeing truths were rerun to n = 1e6: {moved.group(0)}"
    return text


def identifiability_answer(bound: pd.DataFrame, ratio: pd.DataFrame) -> str:
    """The inverse bound: where it holds and fails against THEORY's prediction, and the ratio check on the fits."""
    fails = bound[bound.verdict.str.startswith("fails")]
    cases = [f"`{r.structure}` {r.regime}-specified with r = {int(r.latent_dim)}" for r in fails.itertuples()]
    agree = int((bound.agreement == "agree").sum())
    predicted = int((bound.agreement != "no prediction").sum())
    text = (f"The inverse bound psi(delta) >= c delta holds in {int((bound.verdict == 'holds').sum())} of "
            f"{len(bound)} measured cases and fails (psi at round-off: an f-equivalent family) in {len(fails)}: "
            + (", ".join(cases[:-1]) + " and " + cases[-1] if len(cases) > 1 else "".join(cases)) +
            f". The measured verdict matches THEORY in {agree} of the {predicted} cases THEORY predicts")
    if predicted < len(bound):
        text += f" ({len(bound) - predicted} without a prediction)"
    others = ratio[ratio.verdict != "agree"]
    return (text + f". On the fits, the ratio D / ||f_hat - f*|| has a flat slope (agree) in "
            f"{int((ratio.verdict == 'agree').sum())} of {len(ratio)} curves" +
            ("; " + ", ".join(f"`{r.structure}` {r.regime}: {r.verdict}" for r in others.itertuples())
             if len(others) else "") + ".")


def head_like_answer(studies: list[tuple[pd.DataFrame, pd.DataFrame]]) -> str:
    """At head-like dimension: the verdicts of the shared structures' prefix error and the error ratio of
    over-specified independent to shared_mlp at the largest n, per truth."""
    parts = []
    for results, summary in studies:
        name, d, m = _truth_label(results)
        shared = summary[summary.structure.isin(["shared_linear", "shared_mlp"]) &
                         (summary.error == "voronoi_prefix") & (summary["prediction"].fillna("") != "")]
        top = summary[(summary.error == "voronoi_prefix") & (summary.regime == "over")].set_index("structure")
        ratio = ""
        if {"independent", "shared_mlp"} <= set(top.index):
            times = top.loc["independent", "mean_at_n_max"] / top.loc["shared_mlp", "mean_at_n_max"]
            ratio = f", and over-specified `independent` has {times:.1f}x the mean D of `shared_mlp` at the largest n"
        parts.append(f"at d = {d} (m = {m}), {int((shared.verdict == 'agree').sum())} of the {len(shared)} curves "
                     f"agree{ratio}")
    return ("The shared structures' prefix error D (exact- and over-specified `shared_linear` and `shared_mlp`) "
            "against THEORY's -1/2: " + "; ".join(parts) + ".")


def planted_answer(slopes: pd.DataFrame, to_target: pd.DataFrame) -> str:
    """The planted-prefix study in one paragraph: THEORY's KL and prefix-error verdicts (exact-specified), how many
    fewer samples each exact-specified structure needs to reach `independent`'s prefix error at its largest n, and
    the share of valid over-specified fits where it is too small for a verdict."""
    kl = slopes[(slopes.error == "kl") & (slopes.regime == "exact")]
    fixed = slopes[(slopes.structure == "shared_fixed") & (slopes.regime == "exact") & (slopes.error == "rel_dist")]
    target = to_target[(to_target.regime == "exact") & (to_target.error == "rel_dist") &
                       to_target.target_kind.str.startswith("independent at ")]
    text = (f"Exact-specified, the held-out KL falls at THEORY's -1 for {int((kl.verdict == 'agree').sum())} of "
            f"{len(kl)} students")
    if len(fixed):
        f = fixed.iloc[0]
        text += (f", and `shared_fixed` (the theorems' setting) meets -1/2 in prefix space (relative distance slope "
                 f"{_ci(f.slope, f.slope_lo, f.slope_hi)}, {f.verdict})")
    if len(target):
        others = target[target.structure != "independent"].sort_values("ratio_reference_over_structure",
                                                                        ascending=False)
        where = target.target_kind.iloc[0].removeprefix("independent ")
        text += (f". To reach the relative prefix distance that `independent` has {where}, the other structures "
                 f"need fewer samples by a factor of: " +
                 ", ".join(f"`{r.structure}` {r.ratio_reference_over_structure:.3g}" for r in others.itertuples()))
    over = slopes[(slopes.regime == "over") & (slopes.error == "kl") & (slopes.verdict == "insufficient")]
    if len(over):
        text += (". Over-specified, too few fits are valid for a verdict in " +
                 ", ".join(f"`{r.structure}` ({100 * r.valid_share:.0f}% valid)" for r in over.itertuples()))
    return text + "."


def _read_csv(path: Path, **kwargs) -> pd.DataFrame:
    """A committed table, read in full (a binary or unparsable file: DataError in one line naming it)."""
    from reparam.validation import read_csv_table

    return read_csv_table(path, [], "the generated blocks", **kwargs)


def _read_summary(path: Path) -> pd.DataFrame:
    df = _read_csv(path, keep_default_na=False, na_values=[""])
    df["prediction"] = df["prediction"].fillna("")
    return df


def tables(figures: Path) -> dict[str, str]:
    """NAME -> markdown, for every block whose source files exist in `figures`."""
    out = {}
    if (figures / "summary.csv").is_file() and (figures / "results.csv").is_file():
        summary = _read_summary(figures / "summary.csv")
        results = _read_csv(figures / "results.csv")
        out["canonical-summary"] = summary_table(summary)
        out["canonical-largest-n"] = largest_n_table(summary, results)
        out["answer-convergence"] = convergence_answer(summary, results)
    if (figures / "checks_report.md").is_file():
        out["answer-checks"] = checks_answer((figures / "checks_report.md").read_text(encoding="utf-8"))
    head_like = sorted((figures / "head_like").glob("d*/summary.csv"), key=lambda p: int(p.parent.name[1:]))
    if head_like and (figures / "summary.csv").is_file() and (figures / "results.csv").is_file():
        studies = [(_read_csv(figures / "results.csv"), _read_summary(figures / "summary.csv"))]
        studies += [(_read_csv(p.with_name("results.csv")), _read_summary(p)) for p in head_like]
        out["head-like-separation"], out["head-like-verdicts"] = dimension_tables(studies)
        out["answer-head-like"] = head_like_answer(studies[1:])
    large = figures / "robustness_large_n" / "results.csv"
    if large.is_file():
        original = figures / "robustness.csv"
        out["robustness-large-n"] = large_n_table(_read_csv(large),
                                                  _read_csv(original) if original.is_file() else None)
    if (figures / "sensitivity.csv").is_file():
        out["sensitivity"] = sensitivity_table(_read_csv(figures / "sensitivity.csv"))
    if (figures / "inverse-ratio" / "summary.csv").is_file():
        ratio = _read_summary(figures / "inverse-ratio" / "summary.csv")
        out["inverse-ratio"] = inverse_ratio_table(ratio)
        bound = figures / "inverse-bound" / "inverse_bound_summary.csv"
        if bound.is_file():
            out["answer-identifiability"] = identifiability_answer(_read_csv(bound), ratio)
    if (figures / "robustness_summary.csv").is_file():
        dist = _read_summary(figures / "robustness_summary.csv")
        out["robustness"] = robustness_table(dist)
        out["answer-robustness"] = robustness_answer(dist, out.get("robustness-large-n"))
    low = figures / "lm" / "low_data"
    if (low / "low_data_e2e_paired.csv").is_file() and (low / "low_data_e2e.csv").is_file():
        optional = {name: _read_csv(low / f"low_data_e2e_{name}.csv") if (low / f"low_data_e2e_{name}.csv").is_file()
                    else None for name in ("chunks", "variant", "variant_chunks", "every_layer")}
        paired = _read_csv(low / "low_data_e2e_paired.csv")
        out["low-data-cpu"] = low_data_table(paired, optional["chunks"],
                                             _read_csv(low / "low_data_e2e.csv"), optional["variant"],
                                             optional["variant_chunks"], optional["every_layer"])
    minimax = figures / "minimax"
    if all((minimax / f"minimax_{x}.csv").is_file() for x in ("verdicts", "targets", "measured")):
        out["answer-minimax"] = minimax_answer(*(_read_csv(minimax / f"minimax_{x}.csv")
                                                 for x in ("verdicts", "targets", "measured")))
    out.update(low_data_all_layer_blocks(low))
    if (low / "low_data_e2e_budget_check.csv").is_file():
        lr = low / "low_data_e2e_budget_check_lr.csv"
        out["low-data-budget-check"] = low_data_budget_check_table(_read_csv(low / "low_data_e2e_budget_check.csv"),
                                                                   _read_csv(lr) if lr.is_file() else None)
    if (low / "low_data_e2e_budget.csv").is_file():
        out["low-data-budget"] = low_data_budget_table(_read_csv(low / "low_data_e2e_budget.csv"))
    planted = figures / "lm" / "planted"  # rendered by `reparam planted-prefix` (mode=draw / mode=inverse)
    for name, path in (("planted-asymptotic", planted / "asymptotic" / "planted_report.md"),
                       ("planted-inverse", planted / "inverse" / "planted_psi.md")):
        if path.is_file():
            out[name] = "\n".join(line for line in path.read_text().splitlines() if not line.startswith("# ")).strip()
    slopes, to_target = (planted / "asymptotic" / f"planted_{x}.csv" for x in ("slopes", "n_to_target"))
    if slopes.is_file() and to_target.is_file():
        out["answer-planted"] = planted_answer(_read_csv(slopes), _read_csv(to_target))
    calibration = figures / "calibration" / "calibration.csv"
    if calibration.is_file():  # rendered by `reparam calibrate`
        from reparam.calibration import calibration_answer, calibration_block

        table = _read_csv(calibration)
        out["calibration"] = calibration_block(table)
        out["answer-calibration"] = calibration_answer(table)
    if (figures / "wall_times.csv").is_file():
        robustness = figures / "robustness_results.csv"
        out["wall-times"] = wall_times_table(_read_csv(figures / "wall_times.csv"),
                                             _read_csv(robustness) if robustness.is_file() else None)
    return out


# The one page that holds each generated block (paths relative to the checkout). `reparam readme-tables` rewrites
# each block there and nowhere else; tests/docs checks that every block sits in its home and only there.
HOMES = {
    "answer-convergence": "README.md", "answer-checks": "README.md", "answer-robustness": "README.md",
    "answer-identifiability": "README.md", "answer-head-like": "README.md", "answer-planted": "README.md",
    "low-data-answer": "README.md", "answer-minimax": "README.md",
    "canonical-summary": "docs/tutorials/convergence.md", "canonical-largest-n": "docs/tutorials/convergence.md",
    "sensitivity": "docs/tutorials/convergence.md",
    "robustness": "docs/tutorials/robustness.md", "robustness-large-n": "docs/tutorials/robustness.md",
    "inverse-ratio": "docs/tutorials/identifiability.md",
    "head-like-separation": "docs/tutorials/head-like.md", "head-like-verdicts": "docs/tutorials/head-like.md",
    "planted-asymptotic": "docs/tutorials/planted-prefix.md", "planted-inverse": "docs/tutorials/planted-prefix.md",
    "low-data-all-layers": "docs/tutorials/low-data.md", "low-data-diagnosis": "docs/tutorials/low-data.md", "low-data-cpu": "docs/tutorials/low-data.md", "low-data-budget": "docs/tutorials/low-data.md",
    "low-data-budget-check": "docs/tutorials/low-data.md",
    "wall-times": "docs/how-to/regenerate.md",
    "calibration": "docs/reference/calibration.md", "answer-calibration": "README.md",
    "theory_table": "docs/theory.md",
}


def code_tables() -> dict[str, str]:
    """NAME -> markdown for the blocks rendered from the package's code rather than from figures/: the theory
    table (structure x regime x error -> predicted slope, with its source) of reparam.theory."""
    from reparam.theory import theory_table_markdown

    return {"theory_table": theory_table_markdown()}


def refresh(readme: Path, figures: Path, names: set[str] | None = None,
            rendered: dict[str, str] | None = None) -> list[str]:
    """Rewrite every generated block of the markdown file `readme` whose table can be rendered (only those in
    `names`, when given; `rendered` reuses tables already computed); return the names rewritten."""
    text = readme.read_text(encoding="utf-8")
    done = []
    for name, body in (tables(figures) if rendered is None else rendered).items():
        if names is not None and name not in names:
            continue
        pattern = re.compile(rf"(<!-- generated:{re.escape(name)} -->\n).*?(<!-- /generated:{re.escape(name)} -->)",
                             re.S)
        if not pattern.search(text):
            print(f"note: {readme} has no block generated:{name}", file=sys.stderr)
            continue
        text = pattern.sub(lambda m: m.group(1) + body + "\n" + m.group(2), text)
        done.append(name)
    readme.write_text(text, encoding="utf-8")
    return done


def refresh_pages(root: Path, figures: Path) -> list[str]:
    """Rewrite every block in its home page under `root` (README.md and docs/, see HOMES): those rendered from
    `figures` and those rendered from the code (code_tables); return the names."""
    rendered = {**tables(figures), **code_tables()}
    done = []
    for page in sorted(set(HOMES.values())):
        names = {name for name, home in HOMES.items() if home == page}
        done += refresh(root / page, figures, names, rendered)
    return done


def validate_cfg(cfg: Any) -> None:
    """The validator of the Hydra preflight callback (conf/readme_tables.yaml): readme, when given, is an existing
    file, otherwise every home page under root exists; figures is an existing folder (ConfigError otherwise)."""
    cfg = as_dictconfig(cfg)
    check_unknown_keys(cfg, ReadmeTablesConf)
    check_added_keys()
    if cfg.readme is not None:
        if not Path(str(cfg.readme)).is_file():
            raise ConfigError(f"readme={str(cfg.readme)!r} is invalid: must be an existing file")
    else:
        missing = sorted(page for page in set(HOMES.values()) if not (Path(str(cfg.root)) / page).is_file())
        if missing:
            raise ConfigError(f"root={str(cfg.root)!r} is invalid: must be a checkout holding the pages of the "
                              f"generated blocks; missing: {', '.join(missing)}")
    if not Path(str(cfg.figures)).is_dir():
        raise ConfigError(f"figures={str(cfg.figures)!r} is invalid: must be an existing directory")


def run(cfg: Any) -> int:
    """Refresh the generated blocks from `cfg.figures` (a ReadmeTablesConf or its DictConfig): in their home pages
    under `cfg.root`, or in the one file `cfg.readme`; print the name of each; 0 when done. Raises ConfigError
    (before writing) for a missing file or folder."""
    validate_cfg(cfg)
    figures = Path(str(cfg.figures))
    names = (refresh(Path(str(cfg.readme)), figures) if cfg.readme is not None
             else refresh_pages(Path(str(cfg.root)), figures))
    for name in names:
        print(f"refreshed generated:{name}")
    return 0


main = hydra_main(run, "readme_tables", __file__)


if __name__ == "__main__":
    main()
