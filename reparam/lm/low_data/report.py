"""The low-data study's report: tables and figures from the recorded rows only.

`report_stage(cfg)` writes, per dataset, the rows, the score summary (Student t per structure and n), the paired
differences against independent (`reparam.lm.compare`: paired t intervals over replicates, equivalence margins),
the lr selection and budget diagnostics, the chunk log's cost and the figures; for a top-K setting, the same
cells with the prefix in every layer beside it (the variant table); for a per-n tuned setting, the study table
(`study_table`: per cell the selected lr, whether it is interior to the lrs tried, the extensions, the best step
and convergence status), the sample-efficiency readout and figure, and the generated answer paragraph.
"""

from __future__ import annotations

import logging

import pandas as pd
from omegaconf import DictConfig

from reparam.console import say
from reparam.lm.compare import budget_diagnostics, method_note, paired_differences, paired_markdown, score_summary
from reparam.lm.metrics import E2E_METRICS, METRIC_LABELS, SCORE_RANGES
from reparam.lm.runner import repo_path
from reparam.provenance import write_provenance
from reparam.results import ResultLog, write_table

from .protocol import budget_setting, chunk_table, every_layer, rows_of, table
from .settings import paths as _paths, setting_id

logger = logging.getLogger(__name__)


def report_stage(cfg: DictConfig) -> None:
    """Tables and figures from the recorded rows only."""
    from reparam.lm.validation import require_recorded_rows
    from reparam.plots import low_data_paired_figure, low_data_scores_figure, save_figure

    sid = setting_id(cfg)
    df = table(cfg)
    out = repo_path(cfg.out_dir)
    require_recorded_rows(len(df), sid, _paths(cfg, sid)["results"])
    out.mkdir(parents=True, exist_ok=True)
    write_provenance(out)
    metrics = ["test_nll"] + [m for m in E2E_METRICS if m in df.columns and df[m].notna().any()]
    sel = pd.DataFrame(rows_of(ResultLog(_paths(cfg, sid)["selection"]), sid))
    for dataset, d in df.groupby("dataset"):
        stem = f"low_data_{dataset}"
        write_table(d, out / f"{stem}.csv")
        summary = score_summary(d, metrics, by=("init", "structure", "n"))  # Student-t, none from < 3 replicates
        write_table(summary, out / f"{stem}_summary.csv")
        paired = paired_differences(d, metrics, baseline="independent")
        write_table(paired, out / f"{stem}_paired.csv")
        (out / f"{stem}_paired.md").write_text(
            f"# {dataset}: paired difference vs independent\n\n{method_note(metrics)}.\n\n"
            f"{paired_markdown(paired, METRIC_LABELS)}\n")
        if not sel.empty:
            s = sel[sel.dataset == dataset].drop_duplicates(["n", "replicate", "structure", "init", "lr"], keep="last")
            lr_table = (s.groupby(["structure", "init", "n", "lr"])
                        .agg(selected=("selected", "sum"), candidates=("selected", "size"), best_dev_mean=("best_dev", "mean"),
                             best_step_mean=("best_step", "mean")).reset_index())
            write_table(lr_table, out / f"{stem}_lr_selection.csv")
            budget = budget_diagnostics(s, int(cfg.low_data.fit.max_steps))
            write_table(budget, out / f"{stem}_budget.csv")
            if cfg.low_data.top_layers is not None:  # is the top-K edition limited by its optimisation?
                diag = diagnosis_table(budget)
                write_table(diag, out / f"{stem}_diagnosis.csv")
                (out / f"{stem}_diagnosis.md").write_text(diagnosis_markdown(diag, dataset, cfg.low_data.top_layers,
                                                                             int(cfg.low_data.fit.max_steps)))
        chunks = chunk_table(cfg, sid)
        if not chunks.empty:  # what the recorded study cost, summed from the chunk log (never typed in)
            write_table(chunks, out / f"{stem}_chunks.csv")
        every = table(every_layer(cfg)) if cfg.low_data.top_layers is not None else pd.DataFrame()
        every = every[every.dataset == dataset] if not every.empty else every
        variant = _variant_table(cfg, d, every, metrics)
        if not variant.empty:
            write_table(variant, out / f"{stem}_variant.csv")
            write_table(every, out / f"{stem}_every_layer.csv")  # the all-layer rows themselves
            every_chunks = chunk_table(cfg, setting_id(every_layer(cfg)))
            if not every_chunks.empty:  # what the all-layer check cost, apart from the top-K study's own chunks
                write_table(every_chunks, out / f"{stem}_variant_chunks.csv")
            (out / f"{stem}_variant.md").write_text(
                f"# {dataset}: shared - independent with the prefix in the top {cfg.low_data.top_layers} layers and in "
                f"every layer (same cells)\n\n{method_note(metrics)}.\n\n"
                f"{_variant_markdown(variant)}\n")
        check = _budget_check_table(cfg, d, dataset, metrics)
        if not check.empty:
            write_table(check, out / f"{stem}_budget_check.csv")
            csid = setting_id(budget_setting(cfg))
            csel = pd.DataFrame(rows_of(ResultLog(_paths(cfg, csid)["selection"]), csid))
            csel = csel[(csel.dataset == dataset) & (csel.structure == cfg.budget_check.structure)]
            write_table(budget_diagnostics(csel, int(cfg.budget_check.max_steps)), out / f"{stem}_budget_check_lr.csv")
            (out / f"{stem}_budget_check.md").write_text(
                f"# {dataset}: shared - {cfg.budget_check.structure} at the protocol's budget and with "
                f"{cfg.budget_check.structure} given more (same cells)\n\n{method_note(metrics)}.\n\n"
                f"{_variant_markdown(check, what='budget')}\n")
        for m in metrics:
            save_figure(low_data_scores_figure(summary, m, ylabel=METRIC_LABELS[m], title=f"{dataset}: {METRIC_LABELS[m]}",
                                               bounds=SCORE_RANGES.get(m)), out / f"{stem}_{m}")
        save_figure(low_data_paired_figure(paired, metrics, labels=METRIC_LABELS,
                                           title=f"{dataset}: paired difference vs independent"),
                    out / f"{stem}_paired")
        if cfg.low_data.get("lr_selection", "per_cell") == "per_n":
            study_report(cfg, d, dataset, summary, paired, out)
    say(logger, f"[low_data] tables and figures in {out}")


def _variant_table(cfg: DictConfig, top: pd.DataFrame, every: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """Top-K rows against the all-layer rows of the same setting and dataset (recorded with low_data.top_layers=null)."""
    from reparam.lm.compare import variant_agreement

    if every.empty:
        return pd.DataFrame()
    shared_metrics = [m for m in metrics if m in every.columns and every[m].notna().any()]
    return variant_agreement({f"top {cfg.low_data.top_layers} layers": top, "every layer": every}, shared_metrics)


def _budget_check_table(cfg: DictConfig, own: pd.DataFrame, dataset: str, metrics: list[str]) -> pd.DataFrame:
    """shared - budget_check.structure at the protocol's budget and at the check's, on the cells both recorded."""
    from reparam.lm.compare import variant_agreement

    b, p = cfg.budget_check, cfg.low_data
    checked = table(budget_setting(cfg))
    if checked.empty or dataset not in set(checked.dataset) or "shared" not in set(own.structure):
        return pd.DataFrame()
    checked = checked[(checked.dataset == dataset) & (checked.structure == b.structure)]
    larger = pd.concat([checked, own[own.structure == "shared"]], ignore_index=True)
    kept = [m for m in metrics if m in checked.columns and checked[m].notna().any()]
    label = lambda steps, grid: f"{b.structure}: {steps} steps, lr in {list(grid)}"  # noqa: E731
    return variant_agreement({label(p.fit.max_steps, p.lr_grid[b.structure]): own,
                              label(b.max_steps, b.lr_grid): larger}, kept, baseline=b.structure)


def _variant_markdown(variant: pd.DataFrame, what: str = "prefix in") -> str:
    from reparam.lm.compare import format_difference

    baseline = variant["baseline"].iloc[0] if "baseline" in variant and len(variant) else "independent"
    lines = [f"| {what} | init | n | metric | replicates | shared - {baseline} [95% paired t CI] | verdict |",
             "|---|---|---|---|---|---|---|"]
    for _, r in variant.sort_values(["metric", "n", "variant"]).iterrows():
        lines.append(f"| {r['variant']} | {r['init']} | {int(r['n'])} | {METRIC_LABELS.get(r['metric'], r['metric'])} | "
                     f"{int(r['replicates'])} | {format_difference(r)} | {r['verdict']} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- the top-K edition's diagnosis

#: the selected dev loss must fall by more than this (nats/token) from the smallest to the largest n for a structure
#: to count as using the extra data (a diagnosis of the top-K edition, not a verdict of the comparison)
DEV_GAIN_TOL = 0.01


def diagnosis_table(budget: pd.DataFrame) -> pd.DataFrame:
    """Per (structure, init): the selected dev loss at each n (does it fall with n?), and in how many cells the
    selected lr was the largest of the grid and the best dev check the step cap. 'optimisation-limited' when the
    dev loss does not fall by DEV_GAIN_TOL from the smallest to the largest n while most cells hit the grid's top
    edge or the cap: the run measures how far a structure moves in its budget, not how well it uses data."""
    rows = []
    for (structure, init), g in budget.groupby(["structure", "init"]):
        g = g.sort_values("n")
        gain = float(g.dev_best.iloc[0] - g.dev_best.iloc[-1])
        cells = int(g.cells.sum())
        limited = int(g.largest_lr_selected.sum()) * 2 > cells or int(g.best_at_cap.sum()) * 2 > cells
        rows.append({"structure": structure, "init": init, "ns": " / ".join(str(int(n)) for n in g.n),
                     "dev_best": " / ".join(f"{v:.3f}" for v in g.dev_best), "dev_gain": gain, "cells": cells,
                     "largest_lr_selected": int(g.largest_lr_selected.sum()), "best_at_cap": int(g.best_at_cap.sum()),
                     "diagnosis": "optimisation-limited" if gain <= DEV_GAIN_TOL and limited else "uses the data"})
    return pd.DataFrame(rows)


def diagnosis_markdown(diag: pd.DataFrame, dataset: str, top_layers: int, max_steps: int) -> str:
    lines = [f"# {dataset}: is the top-{top_layers} edition limited by its optimisation?\n",
             f"Selected dev loss per n (mean over replicates), and the cells whose selected lr was the largest of "
             f"its grid or whose best dev check was the step cap ({max_steps}). A structure whose dev loss does not "
             f"fall by more than {DEV_GAIN_TOL} nats/token with n while most of its cells sit at the grid's top or "
             f"the cap is optimisation-limited: its gap measures how far it moves in the budget, not how well it "
             f"uses data. The all-layer study (tuned per n, converged) is the answer; this edition is a variant.\n",
             "| structure | init | n | selected dev loss | fall with n | cells | largest lr | best at cap | diagnosis |",
             "|---|---|---|---|---|---|---|---|---|"]
    for _, r in diag.iterrows():
        lines.append(f"| {r.structure} | {r.init} | {r.ns} | {r.dev_best} | {r.dev_gain:+.3f} | {r.cells} | "
                     f"{r.largest_lr_selected} | {r.best_at_cap} | {r.diagnosis} |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- the per-n tuned study

#: the model as every table and paragraph names it
MODEL_NAMES = {"smollm2": "SmolLM2-135M-Instruct (dequantised from its Q4_1 GGUF file)", "tiny": "a tiny random GPT-2",
               "gpt2": "GPT-2"}
STUDY_COLUMNS = ["model", "n", "replicate", "structure", "init", "lr", "lr_source", "lr_interior", "lr_extensions", "lr_tried",
                 "best_step", "first_check", "cap", "stopped_by", "status", "converged", "best_dev", "test_nll"]


def study_table(d: pd.DataFrame) -> pd.DataFrame:
    """Per recorded (cell, structure, init) of a per-n tuned setting: its lr and how it was chosen (tuned or reused,
    interior to the lrs tried, extensions), its best step against the first dev check and the cap, its convergence
    status, its dev and test NLL (and BLEU when scored)."""
    cols = [c for c in STUDY_COLUMNS + ["bleu"] if c in d.columns]
    return d[cols].sort_values(["n", "structure", "init", "replicate"]).reset_index(drop=True)


def study_markdown(study: pd.DataFrame, dataset: str, model: str) -> str:
    lines = [f"# {dataset}: the all-layer study, per cell ({model})\n",
             "lr: tuned on replicate 0 of each n over its grid, extended outward while the selection was at an edge "
             "(interior: the selected lr has a tried lr on each side), then reused for the other replicates. "
             "status: converged = best dev check strictly after the first check and before the cap, stopped by "
             "patience.\n",
             "| n | replicate | structure | lr | lr from | interior | extensions | best step (first check, cap) | "
             "status | test NLL |" + (" BLEU |" if "bleu" in study else ""),
             "|---|---|---|---|---|---|---|---|---|---|" + ("---|" if "bleu" in study else "")]
    for _, r in study.iterrows():
        bleu = f" {r.bleu:.2f} |" if "bleu" in study and pd.notna(r.get("bleu")) else (" - |" if "bleu" in study else "")
        lines.append(f"| {int(r.n)} | {int(r.replicate)} | {r.structure} | {r.lr:g} | {r.lr_source} | "
                     f"{'yes' if r.lr_interior else 'NO'} | {int(r.lr_extensions)} | {int(r.best_step)} "
                     f"({int(r.first_check)}, {int(r.cap)}) | {r.status} | {r.test_nll:.4f} |{bleu}")
    n_bad = int((~study.converged.astype(bool)).sum())
    n_edge = int((~study.lr_interior.astype(bool)).sum())
    lines.append(f"\n{len(study) - n_bad} of {len(study)} rows converged"
                 + (f"; {n_bad} did not (status column)" if n_bad else "")
                 + (f"; {n_edge} rows have a selected lr at the edge of the lrs tried" if n_edge else
                    "; every selected lr is interior to the lrs tried") + ".")
    return "\n".join(lines) + "\n"


def cells_table(cfg: DictConfig, d: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """Per n: the replicates the setting plans and those recorded for every structure (paired)."""
    from .settings import replicates_of

    structures = list(cfg.low_data.structures)
    rows = []
    for n in sorted(int(n) for n in cfg.low_data.ns):
        g = d[d.n == n]
        paired = sum(1 for _, c in g.groupby("replicate") if set(structures) <= set(c.structure))
        rows.append({"dataset": dataset, "n": n, "planned": len(replicates_of(cfg, n)), "recorded": paired})
    return pd.DataFrame(rows)


def sample_efficiency(summary: pd.DataFrame, metric: str = "test_nll", baseline: str = "independent",
                      min_replicates: int | None = None) -> pd.DataFrame:
    """The n each structure needs to reach a target test NLL, and its ratio to the baseline's.

    summary: `score_summary` rows of one init; an n enters a structure's curve only with at least `min_replicates`
    replicates (default: `reparam.lm.compare.MIN_REPLICATES`, the fewest that give an interval), so a study still
    being recorded is not read off one replicate's mean. Target: the highest of the structures' mean `metric` at their
    largest recorded n (a level every structure reaches inside the measured range). n needed: the smallest n from
    which the mean curve stays at or below the target, interpolated log-linearly between measured n
    (`reparam.plots.samples_to_reach`; no extrapolation). ratio: baseline's n / the structure's n (> 1: it needs
    fewer examples). A point estimate from the mean curves; the paired intervals say whether the gap is resolved.
    """
    from reparam.lm.compare import MIN_REPLICATES
    from reparam.plots import samples_to_reach

    enough = summary.replicates >= (MIN_REPLICATES if min_replicates is None else min_replicates)
    curves = {s: g.set_index("n")[f"{metric}_mean"].sort_index() for s, g in summary[enough].groupby("structure")}
    curves = {s: c[c.notna()] for s, c in curves.items()}
    if len(curves) < 2 or any(len(c) < 2 for c in curves.values()):  # a readout needs every curve at 2 n or more
        return pd.DataFrame()
    target = max(float(c.iloc[-1]) for c in curves.values())
    needed = {s: samples_to_reach(c, target) for s, c in curves.items()}
    rows = []
    for s, c in curves.items():
        base = needed.get(baseline, float("nan"))
        rows.append({"structure": s, "metric": metric, "target": target, "n_needed": needed[s],
                     "ratio_vs_" + baseline: base / needed[s] if needed[s] else float("nan"),
                     # below the target already at the smallest n measured: it needs at most that many
                     "at_most": bool(needed[s] == float(c.index[0])), "ns": " / ".join(str(int(n)) for n in c.index)})
    return pd.DataFrame(rows)


def study_report(cfg: DictConfig, d: pd.DataFrame, dataset: str, summary: pd.DataFrame, paired: pd.DataFrame,
                 out) -> None:
    """The per-n tuned study's tables, the sample-efficiency figure and the answer paragraph (from tables only)."""
    from reparam.plots import low_data_efficiency_figure, save_figure

    stem = f"low_data_{dataset}"
    model = MODEL_NAMES.get(cfg.model.name, cfg.model.name)
    study = study_table(d)
    write_table(study, out / f"{stem}_study.csv")
    (out / f"{stem}_study.md").write_text(study_markdown(study, dataset, model))
    write_table(cells_table(cfg, d, dataset), out / f"{stem}_cells.csv")
    inits = sorted(summary.init.unique())
    effs = []
    for init in inits:
        eff = sample_efficiency(summary[summary.init == init]).assign(init=init)
        effs.append(eff)
        save_figure(low_data_efficiency_figure(summary[summary.init == init], paired[paired.init == init], eff,
                                               title=f"{dataset}, prefix in every layer of {model.split(' (')[0]}"
                                                     + (f", init = {init}" if len(inits) > 1 else "")),
                    out / (f"{stem}_efficiency" + (f"_{init}" if len(inits) > 1 else "")))
    write_table(pd.concat(effs, ignore_index=True), out / f"{stem}_efficiency.csv")
    paragraph = answer_paragraph(out, dataset)
    (out / f"{stem}_answer.md").write_text(paragraph + "\n")


def _fmt(r) -> str:
    from reparam.lm.compare import format_difference

    return format_difference(r)


def answer_paragraph(folder, dataset: str = "e2e", structure: str = "shared", baseline: str = "independent") -> str:
    """The low-data answer in one paragraph, generated from the committed tables of a per-n tuned study in `folder`
    (low_data_<dataset>_{paired,study,cells,efficiency}.csv): the paired test-NLL difference with its interval and
    verdict at each n, BLEU likewise, how many cells are recorded, how many selected lrs are interior and runs
    converged, and the n each structure needs to reach the target test NLL. It never claims more than the
    verdicts: an n with fewer than 3 paired replicates reads "insufficient", and with cells missing it says how
    many are recorded. '' when the folder holds no such tables."""
    from pathlib import Path

    folder = Path(folder)
    stem = folder / f"low_data_{dataset}"
    need = [Path(f"{stem}_{k}.csv") for k in ("paired", "study", "cells")]
    if not all(p.is_file() for p in need):
        return ""
    paired, study, cells = (pd.read_csv(p) for p in need)
    model = MODEL_NAMES.get(study.model.iloc[0], study.model.iloc[0]) if "model" in study and len(study) else "the model"
    eff_path = Path(f"{stem}_efficiency.csv")
    eff = pd.read_csv(eff_path) if eff_path.is_file() else pd.DataFrame()
    init = "words" if "words" in set(paired.init) else sorted(paired.init)[0] if len(paired) else None
    paired = paired[(paired.structure == structure) & (paired.baseline == baseline) & (paired.init == init)]
    if not eff.empty and "init" in eff:
        eff = eff[eff.init == init]
    nll = paired[paired.metric == "test_nll"].sort_values("n")
    bleu = paired[paired.metric == "bleu"].set_index("n")
    planned, recorded = int(cells.planned.sum()), int(cells.recorded.sum())
    text = [f"On {dataset.upper()} with {model} and the prefix in every layer, `{structure}` (Li & Liang's MLP) "
            f"against `{baseline}`, each with its learning rate tuned per n and trained to early stopping "
            f"(differences {structure} - {baseline} with 95% paired t intervals over replicates)"]
    if recorded < planned:
        text.append(f" ({recorded} of {planned} planned paired cells recorded so far: " +
                    ", ".join(f"{int(r.recorded)}/{int(r.planned)} at n = {int(r.n)}" for _, r in cells.iterrows()) + ")")
    text.append(": ")
    def said(r, unit: str) -> str:
        if str(r.verdict).startswith("insufficient"):
            return (f"insufficient ({int(r.replicates)} paired replicate{'s' if int(r.replicates) != 1 else ''}, "
                    f"mean difference {r.mean_diff:+.3g}{unit})")
        return f"{_fmt(r)}{unit}, {r.verdict}"

    parts = []
    for _, r in nll.iterrows():
        part = f"at n = {int(r.n)}, test NLL {said(r, ' nats/token')}"
        if int(r.n) in bleu.index:
            part += f"; BLEU {said(bleu.loc[int(r.n)], '')}"
        parts.append(part)
    text.append("; ".join(parts) + "." if parts else "no paired cell is recorded yet.")
    kinds = [_verdict_kind(v, structure, baseline) for v in nll.verdict]
    if kinds and all(k == "equivalent" for k in kinds):
        text.append(f" At every n recorded the two are equivalent in test NLL within the margin: on this model "
                    f"`{structure}` prefixes do not need fewer examples.")
    elif kinds and all(k == structure for k in kinds):
        text.append(f" `{structure}` has the lower test NLL at every n recorded.")
    elif kinds and all(k == baseline for k in kinds):
        text.append(f" `{baseline}` has the lower test NLL at every n recorded.")
    elif kinds and all(k == "unresolved" for k in kinds):
        text.append(" At no n recorded is the difference resolved: neither structure is better, and the intervals "
                    "are too wide to call them equivalent within the margin.")
    elif kinds:
        text.append(" No single answer holds across n: " + _verdicts_by_n(nll.n, kinds) + ".")
        if baseline in kinds and structure not in kinds:
            text.append(f" `{structure}` is better at no n recorded and, where the difference is resolved, "
                        f"`{baseline}` is the better one: this evidence does not support `{structure}` prefixes "
                        f"needing fewer examples on this model.")
        elif structure in kinds and baseline not in kinds:
            text.append(f" `{baseline}` is better at no n recorded and, where the difference is resolved, "
                        f"`{structure}` is the better one.")
        if "insufficient" in kinds:
            text.append(" Where a verdict is insufficient there are too few paired replicates to say anything.")
    if not eff.empty and eff.n_needed.notna().all() and len(eff) >= 2:
        e = eff.set_index("structure")
        ratio_col = f"ratio_vs_{baseline}"
        if structure in e.index and baseline in e.index:
            def n_of(s):
                at_most = bool(e.loc[s, "at_most"]) if "at_most" in e else False
                return f"{'at most ' if at_most else 'about '}n = {e.loc[s, 'n_needed']:.0f}"

            text.append(f" From the mean curves, reaching a test NLL of {e.target.iloc[0]:.3f} takes {n_of(baseline)} "
                        f"for `{baseline}` and {n_of(structure)} for `{structure}` (ratio "
                        f"{e.loc[structure, ratio_col]:.2f}; a point estimate, resolved only where the paired verdicts "
                        f"are).")
    n_rows = len(study)
    interior = int(study.lr_interior.astype(bool).sum())
    converged = int(study.converged.astype(bool).sum())
    text.append(f" {interior} of the {n_rows} recorded (cell, structure) rows have a selected lr interior to the lrs "
                f"tried and {converged} converged (best dev check strictly between the first check and the cap, "
                f"stopped by patience).")
    return "".join(text)


def _verdict_kind(verdict: str, structure: str, baseline: str) -> str:
    """What a paired verdict (`reparam.lm.compare._verdict`) says: `structure` or `baseline` (that one is better,
    by any amount), "equivalent", "insufficient", or "unresolved" (no clear difference)."""
    v = str(verdict)
    for kind, prefix in ((structure, f"{structure} better"), (baseline, f"{baseline} better"),
                         ("equivalent", "equivalent"), ("insufficient", "insufficient")):
        if v.startswith(prefix):
            return kind
    return "unresolved"


def _verdicts_by_n(ns, kinds: list[str]) -> str:
    """'`independent` better at n = 50, 100; not resolved (no clear difference) at n = 200': the verdict kinds
    (`_verdict_kind`) at each n, grouped, in the order they first occur along n."""
    labels = {"equivalent": "equivalent within the margin", "insufficient": "insufficient",
              "unresolved": "not resolved (no clear difference)"}
    groups: dict[str, list[int]] = {}
    for n, kind in zip(ns, kinds):
        groups.setdefault(labels.get(kind, f"`{kind}` better"), []).append(int(n))
    return "; ".join(f"{label} at n = {', '.join(map(str, ns))}" for label, ns in groups.items())


def variant_paragraph(folder, dataset: str = "e2e") -> str:
    """The top-K CPU edition as a documented variant, in one paragraph generated from its committed tables
    (low_data_<dataset>_diagnosis.csv and the rows, low_data_<dataset>.csv, in `folder`): which structures are
    optimisation-limited and why, so its gap is not read as the answer. '' when the folder holds no diagnosis."""
    from pathlib import Path

    path, rows = Path(folder) / f"low_data_{dataset}_diagnosis.csv", Path(folder) / f"low_data_{dataset}.csv"
    if not (path.is_file() and rows.is_file()):
        return ""
    diag = pd.read_csv(path)
    top_layers = int(pd.read_csv(rows, usecols=["top_layers"]).top_layers.iloc[0])
    limited = diag[diag.diagnosis == "optimisation-limited"]
    if limited.empty:
        return (f"In the top-{top_layers} CPU edition every structure's selected dev loss falls with n: no structure "
                f"is diagnosed as optimisation-limited.")
    parts = [f"`{r.structure}` (selected dev loss {r.dev_best} at n = {r.ns}; the top lr of its grid in "
             f"{r.largest_lr_selected} of {r.cells} cells and its best dev check at the step cap in {r.best_at_cap})"
             for _, r in limited.iterrows()]
    return (f"The top-{top_layers} CPU edition (prefixes in the top {top_layers} layers only) is a "
            f"variant, not the answer: in it " + "; ".join(parts) + " " +
            ("is" if len(parts) == 1 else "are") + " optimisation-limited: the selected dev loss does not fall "
            "with n, so a gap there measures how far each structure moves within the budget, not how well it uses "
            "the data.")
