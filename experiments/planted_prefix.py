"""`reparam planted-prefix [mode=run|draw|check] [key=value ...]`: the planted-prefix rate check in a real
transformer (THEORY section 6), on CPU.

A frozen random-init GPT-2 (or Llama) plus a TRUE prefix is the teacher; students with each prefix structure
registered for the planted study (independent, shared_fixed, shared, embedding_only; exact and over-specified) are
fitted by float64 full-batch L-BFGS to tokens SAMPLED from the teacher, and their prefixes are compared with the
truth per (layer, head). All logic is in reparam.lm.planted; this app only loops, records and draws.

    reparam planted-prefix                     (the CPU study: outputs/lm/planted)
    reparam planted-prefix study=smoke         (seconds)
    reparam planted-prefix mode=check          (verdict table from the recorded fits)
    reparam planted-prefix mode=check check_table=figures/lm/planted/draws_1/planted_fits.csv   (committed table)
    reparam planted-prefix mode=draw           (tables + figures from the recorded fits; no fitting)

Fits are recorded in <run_dir>/replicate_<r>.jsonl (one file per replicate, so replicates can run in separate
processes) and a rerun only fits what is missing; the job log is <run_dir>/planted_prefix.log.
"""
from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig

from reparam.app import as_dictconfig, hydra_main
from reparam.console import say
from reparam.lm import planted as pl
from reparam.lm.runner import repo_path
from reparam.provenance import note_kept, write_provenance
from reparam.results import ResultLog, write_table
from reparam.validation import DataError, status_on_input_error

logger = logging.getLogger(__name__)

FIT_KEY = ["setting_id", "structure", "regime", "n", "replicate"]


def _log(run_dir: Path, replicate: int) -> ResultLog:
    return ResultLog(run_dir / f"replicate_{replicate}.jsonl")


def _state_path(run_dir: Path, sid: str, r: int, structure: str, regime: str, n: int) -> Path:
    return run_dir / "states" / sid / f"replicate_{r}" / f"{structure}_{regime}_n{n}.pt"


def _state_key(sid: str, r: int, structure: str, regime: str, n: int) -> dict:
    return {"setting_id": sid, "replicate": int(r), "structure": structure, "regime": regime, "n": int(n)}


def _save_state(path: Path, key: dict, state: dict) -> None:
    """The kept estimate of a fit, with the SHA-256 of its bytes and its fit's key (reparam.cache)."""
    from reparam.cache import write_checked

    why = write_checked(path, key, state)
    if why:
        say(logger, f"reparam: {why}: the next size starts from its random starts only", stream=sys.stderr)


def _load_state(path: Path, key: dict, otherwise: str) -> dict | None:
    """The kept estimate saved by _save_state when its bytes and key match its record, else None with one line
    (`otherwise`: what the caller does without it); a damaged, replaced or unrecorded file is never loaded."""
    from reparam.cache import read_checked

    ok, state, why = read_checked(path, key)
    if why:
        say(logger, f"reparam: {why}: {otherwise}", stream=sys.stderr)
    return state if ok else None


def fit_all(cfg: DictConfig, settings: dict) -> None:
    """Fit every (replicate, n, structure, regime) of the configured study that its log does not hold yet.

    With fit.warm_start the kept estimate of every fit is saved under <run_dir>/states/<setting>/ (with the SHA-256 of
    its bytes: a damaged state is never loaded, the next size then has its random starts only) and the next
    larger size of the same (replicate, structure, regime) starts from it too (a resumed run continues the chain;
    a size whose smaller neighbour has no saved estimate gets the random starts only)."""
    base_cfg, pc, fc, sc, sid = (settings[k] for k in ("base", "planted", "fit", "study", "setting_id"))
    torch.set_num_threads(cfg.threads)
    run_dir = repo_path(cfg.run_dir)
    ns = sorted(sc.ns)
    left = {}
    for r in sc.replicates:
        done = _log(run_dir, r).completed_keys(FIT_KEY)
        left[r] = [(n, s, g) for n in ns for s in pc.structures for g in pc.regimes if (sid, s, g, n, r) not in done]
    total = len(sc.replicates) * len(ns) * len(pc.structures) * len(pc.regimes)
    kept = total - sum(len(todo) for todo in left.values())
    note_kept(run_dir, f"{kept} of {total} fits are kept in {run_dir}")  # said by an interrupt's line (reparam.app)
    base = pl.make_base(base_cfg)
    t_all = time.time()
    for r in sc.replicates:
        log, todo = _log(run_dir, r), left[r]
        if not todo:
            continue
        n_max = sc.sequences if sc.axis == "draws" else max(ns)
        study = pl.PlantedStudy(base, pc, fc, r, n_max)
        for n, structure, regime in todo:
            warm = None
            if fc.warm_start and ns.index(n) > 0:
                smaller = ns[ns.index(n) - 1]
                warm = _load_state(_state_path(run_dir, sid, r, structure, regime, smaller),
                                   _state_key(sid, r, structure, regime, smaller),
                                   f"the fit at n={n} starts from its random starts only")
            if sc.axis == "draws":
                rows, state = study.fit(structure, regime, sc.sequences, draws=n, warm=warm)
            else:
                rows, state = study.fit(structure, regime, n, warm=warm)
            rows = [{**row, "n": int(n)} for row in rows]  # n: the study's size axis (sequences or draws)
            if fc.warm_start:
                _save_state(_state_path(run_dir, sid, r, structure, regime, n), _state_key(sid, r, structure, regime, n),
                            state)
            log.extend([{**row, "setting_id": sid} for row in rows])  # all starts of a fit in one append
            kept += 1
            note_kept(run_dir, f"{kept} of {total} fits are kept in {run_dir}")
            if cfg.progress:
                best = next(row for row in rows if row["selected"])
                say(logger, f"[planted] r={r} n={n:4d} {structure:14s} {regime:5s} valid={best['valid']!s:5s} "
                            f"gap={best['rel_gap']:+.1e} it={best['iterations']:3d} |g|={best['grad_max']:.0e} "
                            f"start={best['start_kind']} vor={best['voronoi']:.3g} rel={best['rel_dist']:.3g} "
                            f"kl={best['kl']:.3g} ({sum(x['fit_s'] for x in rows):.1f}s)")
    say(logger, f"[planted] fits done in {time.time() - t_all:.0f}s")


def polish(cfg: DictConfig, settings: dict) -> None:
    """mode=polish (settings.py PlantedPrefixConf.polish_iter): one more start, from the kept estimate, for every
    recorded fit of the configured study that did not converge; largest n first, exact before over."""
    import dataclasses

    base_cfg, pc, fc, sc, sid = (settings[k] for k in ("base", "planted", "fit", "study", "setting_id"))
    torch.set_num_threads(cfg.threads)
    run_dir = repo_path(cfg.run_dir)
    base = pl.make_base(base_cfg)
    more = dataclasses.replace(fc, max_iter=cfg.polish_iter)
    t_all = time.time()
    studies = {}
    order = [(n, g, r) for n in sorted(sc.ns, reverse=True) for g in ("exact", "over") if g in pc.regimes
             for r in sc.replicates]
    for n, regime, r in order:
        log = _log(run_dir, r)
        fits = pd.DataFrame(log.rows())
        if fits.empty:
            continue
        fits = fits[fits["setting_id"] == sid]
        for structure in pc.structures:
            part = fits[(fits.structure == structure) & (fits.regime == regime) & (fits.n == n)]
            if part.empty or (part.get("start_kind") == "continued").any():
                continue
            kept = part.loc[part["train_nll"].astype(float).idxmin()]
            if bool(kept.get("converged", False)):
                continue
            path, key = _state_path(run_dir, sid, r, structure, regime, n), _state_key(sid, r, structure, regime, n)
            if not path.is_file():
                continue
            kept_state = _load_state(path, key, "this fit is not polished")
            if kept_state is None:
                continue
            if r not in studies:
                studies[r] = pl.PlantedStudy(base, pc, fc, r, sc.sequences if sc.axis == "draws" else max(sc.ns))
            study = studies[r]
            seqs, draws = (sc.sequences, n) if sc.axis == "draws" else (n, None)
            row, state = study.continue_fit(structure, regime, seqs, draws, kept_state, more,
                                            start=int(part["start"].max()) + 1)
            row.update({"n": int(n), "iterations": int(kept["iterations"]) + row["iterations"],
                        "max_iter": int(kept["max_iter"]) + more.max_iter, "polished_from": int(kept["start"]),
                        "selected": False, "setting_id": sid})
            log.extend([row])
            if row["train_nll"] < float(kept["train_nll"]):
                _save_state(path, key, state)
            if cfg.progress:
                say(logger, f"[polish] r={r} n={n:4d} {structure:14s} {regime:5s} valid={row['valid']!s:5s} "
                            f"gap={row['rel_gap']:+.1e} it={row['iterations']:4d} |g|={row['grad_max']:.0e} "
                            f"rel={row['rel_dist']:.3g} (was {kept['rel_dist']:.3g}) kl={row['kl']:.3g} "
                            f"({row['fit_s']:.1f}s)")
    say(logger, f"[polish] done in {time.time() - t_all:.0f}s")


def load_fits(cfg: DictConfig, settings: dict) -> pd.DataFrame:
    """Every recorded fit (all starts) of this setting, from check_table or the run folder's logs."""
    if cfg.check_table is not None:
        fits = pd.read_csv(repo_path(cfg.check_table))
    else:
        rows = [row for f in sorted(repo_path(cfg.run_dir).glob("replicate_*.jsonl")) for row in ResultLog(f).rows()]
        fits = pd.DataFrame(rows)
    if fits.empty or "setting_id" not in fits.columns:
        raise DataError(f"no recorded fits under {cfg.check_table or cfg.run_dir}; run the experiment first")
    other = fits[fits["setting_id"] != settings["setting_id"]]
    if len(other):
        say(logger, f"[planted] {len(other)} fit row(s) of other settings left out (this setting: "
                    f"{settings['setting_id']})")
    fits = fits[fits["setting_id"] == settings["setting_id"]]
    pc, sc = settings["planted"], settings["study"]  # the configured study only (a log may hold more)
    fits = fits[fits.structure.isin(pc.structures) & fits.regime.isin(pc.regimes) & fits.n.isin(sc.ns)
                & fits.replicate.isin(sc.replicates)]
    if fits.empty:
        raise DataError(f"no recorded fits of setting {settings['setting_id']} under {cfg.check_table or cfg.run_dir}")
    fits = fits.reset_index(drop=True)
    # the estimate of a fit is its start with the lowest training NLL, also after mode=polish added a start
    finite = fits["train_nll"].where(fits["finite"].astype(bool), np.inf)
    kept = finite.groupby([fits[k] for k in FIT_KEY]).idxmin()
    fits["selected"] = fits.index.isin(kept.to_numpy())
    return fits


#: figure stem -> (plotted column, slope-table error whose slopes it has): every figure is named after what it
#: shows, never after the truth (the truth family of each structure is its `fitted_to`, reparam.lm.structures)
FIGURES = {
    "planted_voronoi_rel_vs_n": ("voronoi_rel", "voronoi"),  # normalised: same slopes as the raw loss
    "planted_rel_dist_vs_n": ("rel_dist", "rel_dist"),
    "planted_kl_vs_n": ("kl", "kl"),
    "planted_inverse_ratio_vs_n": ("inverse_ratio_rel", "inverse_ratio"),
}
VALLEY = "planted_rel_dist_vs_kl"


def figure_title(settings: dict, what: str = "mean of valid fits, 95% band") -> str:
    draws = settings["planted"].draws
    return f"Planted prefix, {draws} sampled token{'s' if draws > 1 else ''} per position ({what})"


def axis_label(settings: dict) -> str:
    """The x label of every figure: what n counts in this study (study.axis)."""
    sc, pc = settings["study"], settings["planted"]
    if sc.axis == "draws":
        return f"sampled tokens per position $n$ ({sc.sequences} sequences x {pc.seq_len} positions)"
    return r"sample size $n$ (sequences)"


def draw_figures(est: pd.DataFrame, slopes: pd.DataFrame, settings: dict, out_dir: Path, width: float | None = None,
                 suffix: str = "") -> list[Path]:
    """Every figure from the estimates table (with the normalised columns of pl.add_normalised_errors) and the
    slope table; `width` (inches) defaults to the text width (7 in; at 3.5 in the regimes are stacked)."""
    from reparam.plots import TEXT_WIDTH, planted_error_figure, planted_valley_figure, save_figure

    width = width or TEXT_WIDTH
    title = figure_title(settings)
    paths = []
    for stem, (column, slope_error) in FIGURES.items():
        predictions = {(s, g): v for (s, g, e), v in pl.predictions().items() if e == slope_error}
        fig = planted_error_figure(est, column, slopes=slopes[slopes["error"] == slope_error],
                                   predictions=predictions, width=width, title=title)
        for ax in fig.axes:
            if ax.get_xlabel():
                ax.set_xlabel(axis_label(settings))
        paths += save_figure(fig, out_dir / f"{stem}{suffix}")
    valley_title = figure_title(settings, "one point per valid fit")
    paths += save_figure(planted_valley_figure(est, "rel_dist", "kl", width=width, title=valley_title),
                         out_dir / f"{VALLEY}{suffix}")
    if len(est["n"].unique()) >= 2:
        from reparam.lm.planted.headline import headline_figure

        for regime in sorted(set(est["regime"])):
            paths += save_figure(headline_figure(est, regime, xlabel=axis_label(settings)),
                                 out_dir / f"planted_headline_{regime}{suffix}")
    return paths


def draw(cfg: DictConfig, settings: dict) -> pd.DataFrame:
    """Tables and figures from the recorded fits only (nothing is refitted; the truths' scales are recomputed from
    the settings and checked against the recorded fits); returns the slope table."""
    from reparam.lm.runner import summary_table

    out_dir = repo_path(cfg.out_dir)
    fits = load_fits(cfg, settings)  # first: a refused draw (no recorded fits) writes nothing
    out_dir.mkdir(parents=True, exist_ok=True)
    write_provenance(out_dir)
    est = pl.add_normalised_errors(pl.estimates(fits), pl.truth_references(settings))
    slopes = pl.slope_table(est, settings["study"], n_boot=cfg.n_boot)
    write_table(fits, out_dir / "planted_fits.csv")  # every start of every fit, with its validity
    write_table(est, out_dir / "planted_estimates.csv")  # the selected start of every fit
    write_table(slopes, out_dir / "planted_slopes.csv")
    valid = est[est["valid"].astype(bool)]
    cols = list(pl.ERRORS) + ["voronoi_rel", "inverse_ratio_rel", "iterations", "grad_max", "rel_gap", "fit_s"]
    summary = summary_table(valid, cols, ["structure", "regime"])
    share = est.groupby(["structure", "regime", "n"])["valid"].mean().rename("valid_share").reset_index()
    conv = est.groupby(["structure", "regime", "n"]).agg(
        converged_share=("converged", "mean") if "converged" in est else ("valid", lambda v: np.nan),
        at_cap_share=("iterations", lambda it: float((it >= fc_max_iter(settings)).mean())),
        grad_max_median=("grad_max", "median"), grad_max_max=("grad_max", "max"),
        warm_selected_share=("start_kind", lambda k: float((k == "warm").mean())) if "start_kind" in est
        else ("valid", lambda v: np.nan)).reset_index()
    write_table(summary.merge(share, on=["structure", "regime", "n"], how="right").merge(
        conv, on=["structure", "regime", "n"], how="left"), out_dir / "planted_summary.csv")
    from reparam.lm.planted.headline import n_to_target

    n2t = n_to_target(est)
    write_table(n2t, out_dir / "planted_n_to_target.csv")
    from reparam.lm.planted.headline import largest_n_table, report_markdown

    write_table(largest_n_table(est), out_dir / "planted_largest_n.csv")
    (out_dir / "planted_report.md").write_text(report_markdown(est, slopes, n2t) + "\n")
    draw_figures(est, slopes, settings, out_dir)
    report = pl.check_lines(slopes)
    (out_dir / "planted_check.md").write_text(
        f"# Planted-prefix check (setting {settings['setting_id']})\n\n{report}\n\n"
        f"valid fits: {est['valid'].mean():.1%} of {len(est)} estimates "
        f"({fits['valid'].mean():.1%} of {len(fits)} starts)\n")
    say(logger, f"[planted] tables and figures in {out_dir}")
    return slopes


def check(cfg: DictConfig, settings: dict) -> pd.DataFrame:
    est = pl.estimates(load_fits(cfg, settings))
    slopes = pl.slope_table(est, settings["study"], n_boot=cfg.n_boot)
    say(logger, pl.check_lines(slopes))
    say(logger, f"valid fits: {est['valid'].mean():.1%} of {len(est)} estimates")
    return slopes


def quiet_libraries() -> None:
    """No library chatter on the console: the base is called without an attention mask and with a prefix cache on
    purpose (random tokens, no padding), so transformers' advice lines and deprecation warnings say nothing here."""
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers(\.|$)")
    warnings.filterwarnings("ignore", message=r".*past_key_values.*", category=FutureWarning)


def fc_max_iter(settings: dict) -> int:
    return settings["fit"].max_iter


def inverse(cfg: DictConfig, settings: dict) -> pd.DataFrame:
    """The inverse bound inside attention (reparam.lm.planted.inverse): query constancy per head, the attention
    witness on the constant-query base, psi(delta) per (base, structure, regime). Every case is cached under
    <run_dir>/inverse/ (a rerun computes what is missing; two processes may split `inverse.bases`); the tables,
    the report and the figure are drawn from every cached case of this setting; a cached case is used only when
    its checksum matches (a damaged one is recomputed, with one line)."""
    from reparam.lm.planted import inverse as inv
    from reparam.lm.planted.headline import psi_figure
    from reparam.plots import save_figure

    base_cfg, pc, ic = settings["base"], settings["planted"], settings["inverse"]
    torch.set_num_threads(cfg.threads)
    cache = repo_path(cfg.run_dir) / "inverse" / settings["setting_id"]
    run_dir, out_dir = cache / f"replicate_{ic.replicate}", repo_path(cfg.out_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    base0 = pl.make_base(base_cfg)
    g = torch.Generator().manual_seed(pl.seed_of("rms", 0))
    probe = torch.randint(0, base0.config.vocab_size, (64, pc.seq_len), generator=g)
    kv_rms = pl.natural_kv_rms(base0, probe)
    bases = {"random_init": (base0, None)}
    if "constant_query" in ic.bases or any(cache.glob("replicate_*/constant_query__*.json")):
        bases["constant_query"] = inv.constant_query_base(base0, ic.c0)
    # the witness and the query constancy of both bases (cheap: no fit)
    wrows = []
    for name, (b, dirs) in bases.items():
        ratio, found = inv.query_constancy(b, probe)
        margin = inv.query_halfspace(b, probe, found)
        row = {"base": name, "query_constancy_min": float(ratio.min()), "query_constancy_median": float(ratio.median()),
               "query_constancy_max": float(ratio.max()), "halfspace_margin_min": float(margin.min()),
               "halfspace_heads": int((margin > 0).sum()), "heads": int(margin.numel())}
        truth = pl.plant_truth(b, "shared", pc, ic.replicate, kv_rms)
        kv = inv.attention_witness(truth.kv, dirs if dirs is not None else inv.query_constancy(b, probe)[1], ic.c0,
                                   position=pc.prefix_len - 1, alpha=0.5, scale=1.0)
        with torch.no_grad():
            diff = (pl.logits(pl_fixed(b, kv), probe) - pl.logits(pl_fixed(b, truth.kv), probe)).abs().max()
        errs = pl.prefix_errors(kv, truth.kv)
        wrows.append({**row, "witness_max_logit_diff": float(diff), "witness_rel_dist": errs["rel_dist"],
                      "witness_voronoi": errs["voronoi"], "witness_kl": inv.kl_on(pl_fixed(b, kv), probe,
                                                                                 pl.logits(pl_fixed(b, truth.kv), probe))})
    rows = []
    for name in ic.bases:
        b, dirs = bases[name]
        structures = ic.structures if name == "random_init" else [s for s in ic.structures if s in ic.witness_structures]
        for structure in structures:
            for regime in ic.regimes:
                path = run_dir / f"{name}__{structure}__{regime}.json"
                if path.is_file() and _read_case(path, settings["setting_id"], "it is recomputed") is not None:
                    continue
                truth = pl.plant_truth(b, pc.family(structure), pc, ic.replicate, kv_rms)
                witness = None
                if dirs is not None:
                    witness = lambda d, kv=truth.kv, dirs=dirs: inv.witness_at_delta(kv, dirs, ic.c0, d)  # noqa: E731
                t0 = time.time()
                curve = inv.psi_curve(b, truth, structure, regime, pc, kv_rms, ic, witness=witness,
                                      replicate=ic.replicate)
                for r in curve:
                    r["base"], r["seconds"] = name, time.time() - t0
                _write_case(path, settings["setting_id"], curve)
                if cfg.progress:
                    say(logger, f"[inverse] {name} {structure} {regime}: " + ", ".join(
                        f"psi({r['delta']:g})={r['psi']:.2e}" for r in curve) + f" ({time.time() - t0:.0f}s)")
    for path in sorted(cache.glob("replicate_*/*.json")):  # every truth replicate computed so far
        rows += _read_case(path, settings["setting_id"], "it is left out (rerun mode=inverse with its "
                           "inverse.replicate to recompute it)") or []
    curves = pd.DataFrame(rows)
    verdicts = inv.psi_verdicts(curves, ic)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_provenance(out_dir)
    write_table(curves, out_dir / "planted_psi.csv")
    write_table(verdicts, out_dir / "planted_psi_verdicts.csv")
    write_table(pd.DataFrame(wrows), out_dir / "planted_witness.csv")
    save_figure(psi_figure(curves, verdicts), out_dir / "planted_psi")
    lines = ["| base | structure | regime | truth replicate | psi/delta at the smallest delta reached | at the largest "
             "delta | psi at the base point | verdict |", "|---|---|---|---|---|---|---|---|"]
    for _, r in verdicts.iterrows():
        lines.append(f"| {r.base} | {r.structure} | {r.regime} | {r.replicate} | {r.ratio_smallest_delta:.3g} "
                     f"(delta = {r.smallest_delta_reached:g}) | {r.ratio_largest_delta:.3g} | {r.psi_at_base_point:.3g} "
                     f"| {r.verdict} |")
    wl = ["| base | query constancy (min / median / max over heads) | heads whose queries lie in a half-space | "
          "witness max logit diff | witness rel. distance | witness Voronoi |", "|---|---|---|---|---|---|"]
    for r in wrows:
        wl.append(f"| {r['base']} | {r['query_constancy_min']:.3g} / {r['query_constancy_median']:.3g} / "
                  f"{r['query_constancy_max']:.3g} | {r['halfspace_heads']}/{r['heads']} (min margin "
                  f"{r['halfspace_margin_min']:.2f}) | {r['witness_max_logit_diff']:.2e} | "
                  f"{r['witness_rel_dist']:.3g} | {r['witness_voronoi']:.3g} |")
    (out_dir / "planted_psi.md").write_text(
        f"# Inverse bound inside attention (setting {settings['setting_id']})\n\n"
        "psi(delta) = min sqrt(KL(teacher || student)) on a fixed sample of inputs at relative prefix distance delta; "
        f"verdict: holds when psi/delta at the smallest delta >= {ic.holds_ratio} x its value at the largest, fails "
        f"when psi < {ic.round_off} (round-off) somewhere, else decreasing.\n\n" + "\n".join(lines) +
        "\n\nThe attention witness (split of the last true position in every head, alpha = 1/2, |u| = the RMS value "
        "norm); query constancy = min over directions e of std(e.q)/|mean(e.q)| (0: a constant query component); "
        "half-space: every sampled query has e.q > 0 along that e (min margin = min e.q / mean e.q), so an extra "
        "position can lose its weight only by moving its key arbitrarily far:\n\n"
        + "\n".join(wl) + "\n")
    say(logger, "\n".join(lines))
    say(logger, "\n".join(wl))
    return verdicts


def _case_digest(rows: list) -> str:
    import hashlib
    import json

    return hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()


def _write_case(path: Path, sid: str, rows: list) -> None:
    """One cached case of mode=inverse: its rows with their setting and the SHA-256 of their text (atomic)."""
    import json
    import os

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"setting_id": sid, "sha256": _case_digest(rows), "rows": rows}))
    os.replace(tmp, path)


def _read_case(path: Path, sid: str, otherwise: str) -> list | None:
    """The rows of a cached case written by _write_case for setting `sid` whose digest matches, else None with one
    line (`otherwise`: what happens to the case): a damaged, foreign or unrecorded file is never used."""
    import json

    try:
        case = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        case = None
    if not isinstance(case, dict) or not isinstance(case.get("rows"), list):
        why = "is not a checked case of this study (damaged, or written without its checksum)"
    elif case.get("setting_id") != sid:
        why = f"was computed under another setting ({case.get('setting_id')})"
    elif case.get("sha256") != _case_digest(case["rows"]):
        why = "fails its checksum (damaged or edited)"
    else:
        return case["rows"]
    say(logger, f"reparam: the cached case {path} {why}: {otherwise}", stream=sys.stderr)
    return None


def pl_fixed(base, kv):
    from reparam.lm.prefix import fixed_prefix

    return fixed_prefix(base, kv)


help_text = pl.help_text  # the settings part of --help (reparam.app.app_help)


def validate_cfg(cfg: Any) -> None:
    """The preflight check (reparam.validation.PreflightCallback): every setting, before Hydra creates a folder."""
    pl.validate_study(cfg)


@status_on_input_error
def run(cfg: Any) -> int:
    """Validate every setting (before a model is built or a file written), then fit, draw or check as `mode` says;
    returns the exit status (a user's mistake: one line on stderr, status 2). cfg: the composed config."""
    cfg = as_dictconfig(cfg)
    settings = pl.validate_study(cfg)
    quiet_libraries()
    if cfg.mode == "run":
        fit_all(cfg, settings)
        draw(cfg, settings)
    elif cfg.mode == "draw":
        draw(cfg, settings)
    elif cfg.mode == "polish":
        polish(cfg, settings)
    elif cfg.mode == "inverse":
        inverse(cfg, settings)
    else:
        check(cfg, settings)
    return 0


main = hydra_main(run, "planted_prefix", __file__)


if __name__ == "__main__":
    main()
