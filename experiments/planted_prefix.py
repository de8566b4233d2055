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
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from omegaconf import DictConfig

from reparam.app import as_dictconfig, hydra_main
from reparam.console import say
from reparam.lm import planted as pl
from reparam.lm.runner import repo_path
from reparam.provenance import write_provenance
from reparam.results import ResultLog, write_table
from reparam.validation import DataError, status_on_input_error

logger = logging.getLogger(__name__)

FIT_KEY = ["setting_id", "structure", "regime", "n", "replicate"]


def _log(run_dir: Path, replicate: int) -> ResultLog:
    return ResultLog(run_dir / f"replicate_{replicate}.jsonl")


def fit_all(cfg: DictConfig, settings: dict) -> None:
    """Fit every (replicate, n, structure, regime) of the configured study that its log does not hold yet."""
    base_cfg, pc, fc, sc, sid = (settings[k] for k in ("base", "planted", "fit", "study", "setting_id"))
    torch.set_num_threads(cfg.threads)
    run_dir = repo_path(cfg.run_dir)
    base = pl.make_base(base_cfg)
    t_all = time.time()
    for r in sc.replicates:
        log = _log(run_dir, r)
        done = log.completed_keys(FIT_KEY)
        todo = [(n, s, g) for n in sorted(sc.ns) for s in pc.structures for g in pc.regimes
                if (sid, s, g, n, r) not in done]
        if not todo:
            continue
        study = pl.PlantedStudy(base, pc, fc, r, max(sc.ns))
        for n, structure, regime in todo:
            rows = study.fit(structure, regime, n)
            log.extend([{**row, "setting_id": sid} for row in rows])  # all starts of a fit in one append
            if cfg.progress:
                best = next(row for row in rows if row["selected"])
                say(logger, f"[planted] r={r} n={n:4d} {structure:14s} {regime:5s} valid={best['valid']!s:5s} "
                            f"gap={best['rel_gap']:+.1e} it={best['iterations']:3d} |g|={best['grad_max']:.0e} "
                            f"vor={best['voronoi']:.3g} rel={best['rel_dist']:.3g} kl={best['kl']:.3g} "
                            f"({sum(x['fit_s'] for x in rows):.1f}s)")
    say(logger, f"[planted] fits done in {time.time() - t_all:.0f}s")


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
    return fits.reset_index(drop=True)


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
        paths += save_figure(fig, out_dir / f"{stem}{suffix}")
    valley_title = figure_title(settings, "one point per valid fit")
    paths += save_figure(planted_valley_figure(est, "rel_dist", "kl", width=width, title=valley_title),
                         out_dir / f"{VALLEY}{suffix}")
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
    write_table(summary.merge(share, on=["structure", "regime", "n"], how="right"), out_dir / "planted_summary.csv")
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
    if cfg.mode == "run":
        fit_all(cfg, settings)
        draw(cfg, settings)
    elif cfg.mode == "draw":
        draw(cfg, settings)
    else:
        check(cfg, settings)
    return 0


main = hydra_main(run, "planted_prefix", __file__)


if __name__ == "__main__":
    main()
