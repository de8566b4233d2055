"""`reparam minimax [figures=figures] [out=figures/minimax]` (Hydra app): the local minimax lower bound.

Post-processing only: reads the committed inverse-bound curves psi(delta) (figures/inverse-bound/, and the planted
study's figures/lm/planted/inverse/) and the estimator's measured errors (figures/results.csv,
figures/lm/planted/asymptotic/planted_fits.csv), and writes to OUT

    minimax.csv            LB(n) per study, structure, regime (and truth replicate), reparam.minimax.LB_COLUMNS
    minimax_measured.csv   the estimator's mean error per n beside the bound, with below-the-bound flags
    minimax_targets.csv    the n each structure needs in the worst case to reach each target, and the ratios
    minimax_verdicts.csv   the verdict per structure and regime (plateau / n^-1/2 / ...)
    minimax.{png,pdf}, minimax_planted.{png,pdf}   the bound beside the measured error (log-log)
    report.md, provenance.json

The only computation beyond the tables is the witness pairs of the over-specified cells whose psi is 0 (seconds).
Derivation: THEORY section 8 (docs/theory.md). `run(cfg)` does the work in-process.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from reparam.app import as_dictconfig, hydra_main
from reparam.minimax import MinimaxConfig, minimax_report, minimax_study, read_inputs
from reparam.validation import check_added_keys, check_output_dir, check_unknown_keys, status_on_input_error


@dataclass
class MinimaxConf:
    """Settings of `reparam minimax`.

    figures: the folder of the committed input tables (reparam.minimax.INPUTS).
    out: the folder the tables, figures and report are written to.
    bound: the bound's settings (reparam.minimax.MinimaxConfig: sample sizes, delta resolution, targets, the
        reference structures of the ratios, the interval level of the measured errors).
    """

    figures: str = "figures"
    out: str = "figures/minimax"
    bound: MinimaxConfig = field(default_factory=MinimaxConfig)


ConfigStore.instance().store(name="minimax_schema", node=MinimaxConf)


def bound_config(cfg: Any) -> MinimaxConfig:
    """The MinimaxConfig of a config (its checks raise ConfigError naming the bad field)."""
    return MinimaxConfig(**OmegaConf.to_container(as_dictconfig(cfg).bound, resolve=True))


def validate_cfg(cfg: Any) -> None:
    """The preflight (conf/minimax.yaml): no unknown key, valid bound settings, the inputs exist, out is writable."""
    cfg = as_dictconfig(cfg)
    check_unknown_keys(cfg, MinimaxConf)
    check_added_keys()
    bound_config(cfg)
    read_inputs(str(cfg.figures))
    check_output_dir("out", str(cfg.out))


@status_on_input_error
def run(cfg: Any) -> int:
    """Compute and write every output (module docstring); returns the exit status."""
    from reparam.plots import save_figure
    from reparam.plots_minimax import minimax_figure
    from reparam.provenance import write_provenance
    from reparam.results import write_table, write_text

    started = time.perf_counter()
    validate_cfg(cfg)
    cfg = as_dictconfig(cfg)
    config = bound_config(cfg)
    tables = minimax_study(read_inputs(str(cfg.figures)), config)
    out = Path(str(cfg.out))
    out.mkdir(parents=True, exist_ok=True)
    paths = [write_table(tables["bounds"], out / "minimax.csv"),
             write_table(tables["comparison"], out / "minimax_measured.csv"),
             write_table(tables["needed"], out / "minimax_targets.csv"),
             write_table(tables["verdicts"], out / "minimax_verdicts.csv")]
    paths += save_figure(minimax_figure(tables["bounds"], tables["measured"], "synthetic", "n (samples)",
                                        r"$\mathcal{D}(\hat G, G)$, prefix space"), out / "minimax")
    planted = tables["bounds"][tables["bounds"]["study"] == "planted"]
    tokens = int(planted["kl_per_psi2"].iloc[0])  # sampled tokens per unit of n (sequences x seq_len)
    paths += save_figure(minimax_figure(tables["bounds"], tables["measured"], "planted",
                                        f"n (draws per position; {tokens} tokens each)", "relative prefix distance"),
                         out / "minimax_planted")
    command = "reparam minimax " + " ".join(f"{k}={v}" for k, v in (("figures", cfg.figures), ("out", cfg.out)))
    paths.append(write_text(out / "report.md", minimax_report(tables["verdicts"], tables["needed"],
                                                               tables["comparison"], tables["bounds"], config,
                                                               command)))
    paths.append(write_provenance(out, started))
    for p in paths:
        print(p)
    return 0


main = hydra_main(run, "minimax", __file__)


if __name__ == "__main__":
    main()
