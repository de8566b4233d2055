"""The settings of `reparam planted-prefix`: its blocks, their validation (once, before any model is built), and
the fingerprint that keys its result logs."""
from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass
from typing import Optional

from .analysis import StudyConfig
from .estimator import LBFGSConfig
from .inverse import PsiConfig
from .model import BaseConfig
from .truth import PlantedConfig

SECTIONS = {"base": BaseConfig, "planted": PlantedConfig, "fit": LBFGSConfig, "study": StudyConfig,
            "inverse": PsiConfig}
MODES = ("run", "draw", "check", "inverse", "polish")


@dataclass
class PlantedPrefixConf:
    """Settings of `reparam planted-prefix` (key=value); the blocks are documented below.

    mode: run (fit what is missing, then draw the tables and figures and check) | draw (tables and figures from the
        recorded fits; nothing is refitted) | check (the verdict table only) | polish (more iterations for the
        recorded fits that did not converge, `polish_iter`) | inverse (the inverse bound inside
        attention: the attention witness and psi(delta) per structure and regime, the `inverse` block; resumable,
        one cached file per case under run_dir/inverse).
    threads: torch CPU threads (the machine may be shared).
    run_dir: the result logs, one JSON-lines file per replicate (resumable), and the job log planted_prefix.log;
        never a committed folder.
    out_dir: tables, figures and the check report; never a committed folder (write to outputs/..., then copy).
    check_table: draw/check from this tidy fits table (e.g. figures/lm/planted/draws_1/planted_fits.csv) instead of
        the logs in run_dir.
    n_boot: bootstrap resamples of the slope intervals (>= 10).
    polish_iter: mode=polish: every recorded fit whose kept start is not converged (max |gradient| > fit.grad_tol)
        gets one more start, L-BFGS from its kept estimate (saved with fit.warm_start) for polish_iter more
        iterations; its row has start_kind "continued" and counts the whole budget in `iterations` (the kept
        start's plus these). Largest sizes first, exact before over; resumable (a fit with a continued start is
        not polished again). The estimate of a fit is always its start with the lowest training NLL.
    progress: one line per fit.
    base, planted, fit, study, inverse: the blocks (study=cpu | asymptotic | smoke sets `study` and a few sizes).
    """

    mode: str = "run"
    threads: int = 1
    run_dir: str = "outputs/lm/planted"
    out_dir: str = "outputs/lm/planted/figures"
    check_table: Optional[str] = None
    n_boot: int = 2000
    progress: bool = True
    polish_iter: int = 300


APP_KEYS = tuple(f.name for f in dataclasses.fields(PlantedPrefixConf))


def help_text() -> str:
    """The settings part of `reparam planted-prefix --help`: the app's keys and every block's fields."""
    import inspect

    parts = [inspect.cleandoc(PlantedPrefixConf.__doc__)]
    parts += [f"{name}: {inspect.cleandoc(schema.__doc__)}" for name, schema in SECTIONS.items()]
    return "\n\n".join(parts)


def validate_study(cfg) -> dict:
    """Every setting of `reparam planted-prefix`, checked before any work.

    Returns {"base": BaseConfig, "planted": ..., "fit": ..., "study": ..., "setting_id": str}. A bad value raises
    reparam.validation.ConfigError naming the field; unknown keys are refused; outputs never go to figures/.
    """
    from omegaconf import OmegaConf

    from reparam.validation import ConfigError, check_choice, check_int, check_output_dir, require

    from ..runner import repo_path
    from ..validation import committed_folder

    # key by key, leaving out `hydra`: in the preflight callback its run-time fields cannot be resolved yet
    plain = {k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
             for k, v in ((k, cfg[k]) for k in cfg if k != "hydra")}
    unknown = sorted(set(plain) - set(SECTIONS) - set(APP_KEYS))
    if unknown:
        raise ConfigError(f"{unknown[0]} is not a known setting: the config accepts {sorted(set(SECTIONS) | set(APP_KEYS))}")
    check_choice("mode", plain.get("mode", "run"), MODES)
    check_int("threads", plain.get("threads", 1), low=1)
    check_int("n_boot", plain.get("n_boot", 2000), low=10)
    check_int("polish_iter", plain.get("polish_iter", 300), low=1)
    require(isinstance(plain.get("progress", True), bool), "progress", plain.get("progress"), "true or false")
    for name in ("run_dir", "out_dir"):
        value = plain.get(name)
        require(isinstance(value, str) and value != "", name, value, "a folder path")
        require(not committed_folder(value), name, value,
                "a folder outside the committed figures/ (write to outputs/..., then copy; see figures/lm/COMMANDS.md)")
        check_output_dir(name, repo_path(value))
    table = plain.get("check_table")
    if table is not None:
        require(repo_path(table).is_file(), "check_table", table, "an existing CSV written by this experiment")
    out = {}
    for section, schema in SECTIONS.items():
        block = plain.get(section) or {}
        require(isinstance(block, dict), section, block, "a block of settings")
        known = {f.name for f in dataclasses.fields(schema)}
        for key in block:
            if key not in known:
                raise ConfigError(f"{section}.{key} is not a known setting: {section} accepts {sorted(known)}")
        try:
            out[section] = schema(**block)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"{section} is invalid: {err}") from None
    if out["planted"].seq_len > out["base"].max_positions:
        raise ConfigError(f"planted.seq_len={out['planted'].seq_len} is invalid: must be <= base.max_positions="
                          f"{out['base'].max_positions}")
    sc = out["study"]
    if sc.axis == "draws" and max(sc.ns) > out["planted"].draws:
        raise ConfigError(f"study.ns={sc.ns} is invalid with study.axis=draws: the largest must be <= planted.draws="
                          f"{out['planted'].draws} (the sizes are the first n draws of every position)")
    out["setting_id"] = setting_id(out["base"], out["planted"], out["fit"], sc)
    return out


def config_record(base: BaseConfig, pc: PlantedConfig, fc: LBFGSConfig, sc: Optional[StudyConfig] = None) -> dict:
    """Every result-affecting setting, for the record key of a row (the study's axis only when it is `draws`: then
    n means draws per position on `sequences` sequences)."""
    out = {"base": asdict(base), "planted": asdict(pc), "fit": asdict(fc)}
    if sc is not None and sc.axis == "draws":
        out["study"] = {"axis": sc.axis, "sequences": sc.sequences}
    return out


def setting_id(base: BaseConfig, pc: PlantedConfig, fc: LBFGSConfig, sc: Optional[StudyConfig] = None) -> str:
    """Fingerprint of every result-affecting setting; structures and regimes are row columns, not settings.
    Settings added later are left out at their old behaviour (fit.warm_start=false, study.axis=sequences), so
    the fingerprints of the committed tables recorded before them are unchanged."""
    from reparam.validation import fingerprint

    ignore = ["planted.structures", "planted.regimes"] + ([] if fc.warm_start else ["fit.warm_start"])
    return fingerprint(config_record(base, pc, fc, sc), ignore=ignore)
