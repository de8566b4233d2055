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

#: the columns of a fits table (planted_fits.csv, check_table=) that the verdicts and figures read
TABLE_LABELS = ["setting_id", "structure", "regime", "valid", "finite"]
TABLE_NUMBERS = ["n", "replicate", "train_nll", "voronoi", "rel_dist", "kl"]
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
    allow_large: run even when the up-front estimate (`resource_estimate`: memory from the model's and the data's
        sizes, fitting time from their flops) exceeds this machine's memory or 24 h.
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
    allow_large: bool = False


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
    require(isinstance(plain.get("allow_large", False), bool), "allow_large", plain.get("allow_large"),
            "true or false")
    for name in ("run_dir", "out_dir"):
        value = plain.get(name)
        require(isinstance(value, str) and value != "", name, value, "a folder path")
        require(not committed_folder(value), name, value,
                "a folder outside the committed figures/ (write to outputs/..., then copy; see figures/lm/COMMANDS.md)")
        check_output_dir(name, repo_path(value))
    table = plain.get("check_table")
    if table is not None:
        require(repo_path(table).is_file(), "check_table", table, "an existing CSV written by this experiment")
        from reparam.validation import read_csv_table

        # read in full now: a damaged or foreign table is refused in one line before any work
        read_csv_table(repo_path(table), TABLE_LABELS + TABLE_NUMBERS, "the planted study's verdicts and figures",
                       numeric=TABLE_NUMBERS)
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
    if plain.get("mode") == "polish" and not out["fit"].warm_start:
        raise ConfigError("mode=polish is invalid with fit.warm_start=false: it continues the kept estimates that "
                          "fit.warm_start=true saves (pass the settings of the recorded run)")
    check_size(out, plain.get("mode", "run"), plain.get("allow_large", False))
    out["setting_id"] = setting_id(out["base"], out["planted"], out["fit"], sc)
    return out


# ------------------------------------------------------------------------------------------ size preflight
# Bytes of a float64 and the work of the fits, counted from the settings alone (no model is built): enough to refuse
# a size that cannot fit in memory or end in time, before a folder or a model exists.
FLOAT = 8
#: float64 multiply-adds per second assumed for the time estimate: a fast core's peak, so the estimate is low and
#: only a study that could not end in time even at that speed is refused
FLOPS_PER_SECOND = 1e10


def _layer_params(base: BaseConfig) -> int:
    """Weights of one transformer block (attention and MLP; the Llama MLP is gated, 3 x d x 4d)."""
    d = base.d_model
    if base.arch == "gpt2":
        return 12 * d * d + 13 * d
    kv = d // base.n_head * (base.n_kv_head or base.n_head)
    return 2 * d * d + 2 * d * kv + 12 * d * d + 2 * d


def _base_params(base: BaseConfig) -> int:
    embeddings = base.vocab * base.d_model * (1 if base.arch == "gpt2" else 2)  # gpt2 ties its output layer
    positions = base.max_positions * base.d_model if base.arch == "gpt2" else 0
    return embeddings + positions + base.n_layer * _layer_params(base) + 2 * base.d_model


def _forward_bytes(base: BaseConfig, sequences: int, tokens: int, keys: int, train: bool) -> float:
    """Peak bytes of one forward pass over `sequences` x `tokens` (attending to `keys` positions): with `train`,
    every layer's saved activations (about 20 x d per token, the attention scores and probabilities) and the
    logits' gradients; without, two layers' worth and the log-probabilities."""
    per_layer = sequences * tokens * (20 * base.d_model + 3 * base.n_head * keys) * FLOAT
    logits = sequences * tokens * base.vocab * FLOAT * 4
    return (base.n_layer if train else 2) * per_layer + logits


def _forward_flops(base: BaseConfig, tokens: int, keys: int) -> float:
    """Multiply-adds of one forward pass per token: the weights and the attention over `keys` positions."""
    return 2.0 * (base.n_layer * _layer_params(base) + base.d_model * base.vocab) + 4.0 * base.n_layer * keys * base.d_model


def resource_estimate(settings: dict, mode: str = "run") -> dict:
    """Peak memory (bytes) and fitting time (seconds, a lower estimate) of `reparam planted-prefix mode=MODE` from
    its validated blocks (validate_study's `settings`), before any model is built: the base built in float32 and
    copied to float64, every truth family's data (the sampling CDF, the targets, the held-out set's teacher
    log-probabilities), and the largest forward pass (a fit's full batch with its saved activations, the held-out
    set, or mode=inverse's solves); the time counts every start of every fit at fit.max_iter iterations, three
    forward passes' work per iteration (mode=run only: polish continues an unknown share of the fits, inverse's
    solves are minutes at any size that fits)."""
    base, pc, fc, sc = (settings[k] for k in ("base", "planted", "fit", "study"))
    T, longest = pc.seq_len, pc.prefix_len + (pc.extra if "over" in pc.regimes else 0)
    keys = T + longest
    build = 12.0 * _base_params(base)  # float32 parameters and their float64 copy
    if mode == "inverse":
        ic = settings["inverse"]
        batch = max(64, ic.sequences)
        return {"memory_bytes": build + _forward_bytes(base, batch, T, keys, train=True), "seconds": 0.0}
    families = len({pc.family(s) for s in pc.structures})
    n_max = (sc.sequences if sc.axis == "draws" else max(sc.ns)) if mode in ("run", "polish") else 1
    data = families * (pc.n_test * T * base.vocab * FLOAT + n_max * T * base.vocab * FLOAT
                       + 3 * n_max * pc.draws * T * FLOAT)
    passes = max(_forward_bytes(base, n_max, T, keys, train=mode in ("run", "polish")),
                 _forward_bytes(base, pc.n_test, T, keys, train=False),
                 n_max * T * base.vocab * FLOAT)  # the fit's token counts
    seconds = 0.0
    if mode == "run":
        sizes = [sc.sequences] * len(sc.ns) if sc.axis == "draws" else sc.ns
        evaluations = len(sc.replicates) * len(pc.structures) * len(pc.regimes) * fc.starts * fc.max_iter
        fit_flops = evaluations * sum(sizes) * T * 3 * _forward_flops(base, T, keys)
        data_flops = len(sc.replicates) * families * (n_max + pc.n_test) * T * _forward_flops(base, T, keys)
        seconds = (fit_flops + data_flops) / FLOPS_PER_SECOND
    return {"memory_bytes": build + data + passes, "seconds": seconds}


def _size_settings(settings: dict, mode: str) -> dict:
    """{field as typed: its value (a list's largest or count)} of every setting the estimate grows with."""
    base, pc, fc, sc = (settings[k] for k in ("base", "planted", "fit", "study"))
    out = {f"base.{k}": getattr(base, k) for k in ("n_layer", "n_head", "d_model", "vocab", "max_positions")}
    out.update({f"planted.{k}": getattr(pc, k) for k in ("prefix_len", "extra", "seq_len", "draws", "n_test")})
    out.update({"fit.starts": fc.starts, "fit.max_iter": fc.max_iter, "study.ns": max(sc.ns),
                "study.replicates": len(sc.replicates), "study.sequences": sc.sequences})
    if mode == "inverse":
        out["inverse.sequences"] = settings["inverse"].sequences
    return out


def size_field(settings: dict, mode: str) -> tuple[str, object]:
    """The setting that drives the study's size, the one furthest above its default, and its value as typed."""
    values = _size_settings(settings, mode)
    defaults = _size_settings({name: schema() for name, schema in SECTIONS.items()}, mode)
    name = max(values, key=lambda k: values[k] / defaults[k])
    section, key = name.split(".")
    return name, getattr(settings[section], key)


def check_size(settings: dict, mode: str, allow_large: bool) -> None:
    """Refuse (ConfigError naming the setting that drives the size) a study whose `resource_estimate` exceeds this
    machine's memory or 24 h, unless allow_large=true; mode=check builds no model."""
    from reparam.validation import TIME_LIMIT_SECONDS, check_memory, check_time

    if mode == "check":
        return
    est = resource_estimate(settings, mode)
    field, value = size_field(settings, mode)
    check_memory(field, value, est["memory_bytes"], "allow_large=true", allow_large)
    check_time(field, value, est["seconds"], TIME_LIMIT_SECONDS, "allow_large=true", allow_large)


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
