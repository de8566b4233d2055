"""`reparam readme-tables [figures=figures] [readme=README.md]` (Hydra app): refresh README's generated tables.

The README quotes the canonical results. Every such table is rendered here from the committed tables in
figures/ (never typed by hand) and written between a pair of markers,

    <!-- generated:NAME -->
    ...
    <!-- /generated:NAME -->

so a rerun of the recorded studies (`reparam canonical`) updates the prose's numbers too. A table
whose source file is missing is left as it is, with a note on stderr.
`python -m reparam.sims.readme_tables figures=DIR` is the same command; `run(cfg)` does the work in-process.
"""
from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from hydra.core.config_store import ConfigStore

from reparam.app import as_dictconfig, hydra_main
from reparam.validation import ConfigError, check_added_keys, check_unknown_keys


@dataclass
class ReadmeTablesConf:
    """Settings of `reparam readme-tables`.

    figures: the folder of the committed tables the README quotes (summary.csv, results.csv, sensitivity.csv,
        inverse-ratio/summary.csv, robustness_summary.csv, head_like/d*/{results,summary}.csv; a missing one leaves
        its README table as it is).
    readme: the markdown file whose `<!-- generated:NAME -->` blocks are rewritten in place.
    """

    figures: str = "figures"
    readme: str = "README.md"


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
    lines = ([f"**Answer.** {answer}", ""] if answer else []) + [
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
    valid fits [95% bootstrap CI] and its verdict against THEORY's -1/2, on the sweep's own grid (n <= 3e4), on
    the large-n window (n >= 3e4) and on all n; plus the verdict the sweep recorded (robustness.csv), so a reader
    sees whether the slopes move toward -1/2 as n grows (pre-asymptotic) or not."""
    from reparam.checks import valid_mask
    from reparam.rates import Prediction, fit_slopes, verdict

    pred = Prediction(-0.5)
    part = results[(results.regime == regime) & valid_mask(results)]
    head = "| truth | structure | sweep's verdict | " + " | ".join(f"slope, {w}" for w in LARGE_N_WINDOWS) + " | valid fits |"
    lines = [head, "|---|---|---|" + "---|" * len(LARGE_N_WINDOWS) + "---|"]
    moved = toward = 0
    after: dict[str, list] = {s: [] for s in sorted(part.structure.unique())}
    keys = sorted(part.groupby(["structure", "truth"]).groups, key=lambda k: (k[0], int(str(k[1]).split("-")[1])))
    for structure, truth in keys:
        g = part[(part.structure == structure) & (part.truth == truth)]
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
            toward += abs(large + 0.5) < abs(small + 0.5)
        if before == "disagree" and len(cells) > 1 and cells[1] != "n/a":
            after[structure].append((truth, cells[1].rsplit(" ", 1)[-1]))
        lines.append(f"| {truth} | {structure} | {before} | " + " | ".join(cells) +
                     f" | {len(g)}/{int(((results.truth == truth) & (results.structure == structure) & (results.regime == regime)).sum())} |")
    text = "\n".join(lines)
    if moved:
        text += (f"\n\nOf {moved} curves, {toward} have a large-n slope (n >= 3e4) closer to -1/2 than their slope on "
                 f"the sweep's grid (n <= 3e4).")
    for structure, pairs in after.items():
        if pairs:
            counts = {v: [t for t, x in pairs if x == v] for v in ("agree", "inconclusive", "disagree", "insufficient")}
            text += (f" Of the {len(pairs)} truths where `{structure}` disagreed in the sweep, on n >= 3e4: " +
                     ", ".join(f"{len(ts)} {v}" + (f" ({', '.join(ts)})" if v == "disagree" and ts else "")
                               for v, ts in counts.items() if ts) + ".")
    return text


def _read_summary(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path, keep_default_na=False, na_values=[""])
    df["prediction"] = df["prediction"].fillna("")
    return df


def tables(figures: Path) -> dict[str, str]:
    """NAME -> markdown, for every table whose source files exist in `figures`."""
    out = {}
    if (figures / "summary.csv").is_file() and (figures / "results.csv").is_file():
        summary = _read_summary(figures / "summary.csv")
        out["canonical-summary"] = summary_table(summary)
        out["canonical-largest-n"] = largest_n_table(summary, pd.read_csv(figures / "results.csv"))
    head_like = sorted((figures / "head_like").glob("d*/summary.csv"), key=lambda p: int(p.parent.name[1:]))
    if head_like and (figures / "summary.csv").is_file() and (figures / "results.csv").is_file():
        studies = [(pd.read_csv(figures / "results.csv"), _read_summary(figures / "summary.csv"))]
        studies += [(pd.read_csv(p.with_name("results.csv")), _read_summary(p)) for p in head_like]
        out["head-like-separation"], out["head-like-verdicts"] = dimension_tables(studies)
    large = figures / "robustness_large_n" / "results.csv"
    if large.is_file():
        original = figures / "robustness.csv"
        out["robustness-large-n"] = large_n_table(pd.read_csv(large),
                                                  pd.read_csv(original) if original.is_file() else None)
    if (figures / "sensitivity.csv").is_file():
        out["sensitivity"] = sensitivity_table(pd.read_csv(figures / "sensitivity.csv"))
    if (figures / "inverse-ratio" / "summary.csv").is_file():
        out["inverse-ratio"] = inverse_ratio_table(_read_summary(figures / "inverse-ratio" / "summary.csv"))
    if (figures / "robustness_summary.csv").is_file():
        out["robustness"] = robustness_table(_read_summary(figures / "robustness_summary.csv"))
    low = figures / "lm" / "low_data"
    if (low / "low_data_e2e_paired.csv").is_file() and (low / "low_data_e2e.csv").is_file():
        optional = {name: pd.read_csv(low / f"low_data_e2e_{name}.csv") if (low / f"low_data_e2e_{name}.csv").is_file()
                    else None for name in ("chunks", "variant", "variant_chunks", "every_layer")}
        out["low-data-cpu"] = low_data_table(pd.read_csv(low / "low_data_e2e_paired.csv"), optional["chunks"],
                                             pd.read_csv(low / "low_data_e2e.csv"), optional["variant"],
                                             optional["variant_chunks"], optional["every_layer"])
    if (low / "low_data_e2e_budget_check.csv").is_file():
        lr = low / "low_data_e2e_budget_check_lr.csv"
        out["low-data-budget-check"] = low_data_budget_check_table(pd.read_csv(low / "low_data_e2e_budget_check.csv"),
                                                                   pd.read_csv(lr) if lr.is_file() else None)
    if (low / "low_data_e2e_budget.csv").is_file():
        out["low-data-budget"] = low_data_budget_table(pd.read_csv(low / "low_data_e2e_budget.csv"))
    planted = figures / "lm" / "planted"  # rendered by `reparam planted-prefix` (mode=draw / mode=inverse)
    for name, path in (("planted-asymptotic", planted / "asymptotic" / "planted_report.md"),
                       ("planted-inverse", planted / "inverse" / "planted_psi.md")):
        if path.is_file():
            out[name] = "\n".join(line for line in path.read_text().splitlines() if not line.startswith("# ")).strip()
    if (figures / "wall_times.csv").is_file():
        robustness = figures / "robustness_results.csv"
        out["wall-times"] = wall_times_table(pd.read_csv(figures / "wall_times.csv"),
                                             pd.read_csv(robustness) if robustness.is_file() else None)
    return out


def refresh(readme: Path, figures: Path) -> list[str]:
    """Rewrite every generated block of `readme` whose table can be rendered; return the names rewritten."""
    text = readme.read_text(encoding="utf-8")
    done = []
    for name, body in tables(figures).items():
        pattern = re.compile(rf"(<!-- generated:{re.escape(name)} -->\n).*?(<!-- /generated:{re.escape(name)} -->)",
                             re.S)
        if not pattern.search(text):
            print(f"note: {readme} has no block generated:{name}", file=sys.stderr)
            continue
        text = pattern.sub(lambda m: m.group(1) + body + "\n" + m.group(2), text)
        done.append(name)
    readme.write_text(text, encoding="utf-8")
    return done


def validate_cfg(cfg: Any) -> None:
    """The validator of the Hydra preflight callback (conf/readme_tables.yaml): readme is an existing file and
    figures an existing folder (ConfigError otherwise)."""
    cfg = as_dictconfig(cfg)
    check_unknown_keys(cfg, ReadmeTablesConf)
    check_added_keys()
    if not Path(str(cfg.readme)).is_file():
        raise ConfigError(f"readme={str(cfg.readme)!r} is invalid: must be an existing file")
    if not Path(str(cfg.figures)).is_dir():
        raise ConfigError(f"figures={str(cfg.figures)!r} is invalid: must be an existing directory")


def run(cfg: Any) -> int:
    """Refresh the generated tables of `cfg.readme` from `cfg.figures` (a ReadmeTablesConf or its DictConfig) and
    print the name of each; 0 when done. Raises ConfigError (before writing) for a missing file or folder."""
    validate_cfg(cfg)
    for name in refresh(Path(str(cfg.readme)), Path(str(cfg.figures))):
        print(f"refreshed generated:{name}")
    return 0


main = hydra_main(run, "readme_tables", __file__)


if __name__ == "__main__":
    main()
