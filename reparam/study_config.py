"""The study's structured config (StudyConf, a Hydra ConfigStore schema) and its translation to a StudyPlan.

Shared by every app that runs the synthetic study through one config: `reparam convergence` (schema StudyConf,
sims/conf/convergence.yaml) and `reparam robustness` (RobustnessConf, a StudyConf with other defaults). Importing
this module stores the schema (`study_schema`) and its groups in Hydra's ConfigStore:

Groups (pick one with `group=name`, then override fields with `group.field=value`):
    truth      canonical | random                       -> reparam.study.TruthConfig (shape: truth.d, m, n_atoms,
                                                       n_experts, latent_dim; null = the kind's default)
    structure  all | shared | shared_linear | shared_mlp | independent | shared_learned (and every structure
               registered later: each declares its options, reparam.structures `hydra_options`)
    regime     both | exact | over
    optimiser  newton | newton_long                     -> reparam.fit.SolverConfig (damped Newton / Levenberg-Marquardt)
    init       near_truth | random | mixed              -> reparam.study.InitConfig
    hydra/launcher  joblib, submitit_local, submitit_slurm (plugins) and the shipped local_parallel, slurm
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from .fit import SolverConfig
from .structures import STRUCTURES, on_registry_change
from .study import DEFAULT_N_GRID, STUDY_INIT, InitConfig, Setting, TruthConfig, recorded_truth
from .sweep import StudyPlan, check_resources, validate_plan
from .validation import ConfigError, check_int, check_unknown_keys


@dataclass
class StructureConf:
    """names: structures compared (one curve each); activation: sigma of shared_mlp."""

    names: List[str] = field(default_factory=lambda: structure_options()["all"])  # as `structure=all`
    activation: str = "tanh"


@dataclass
class RegimeConf:
    """names: 'exact' (L' = L*) and/or 'over' (L' = L* + extra_atoms)."""

    names: List[str] = field(default_factory=lambda: ["exact", "over"])
    extra_atoms: int = 1


@dataclass
class StudyConf:
    """Settings of the study (pick a group option with `group=name`, override a field with `group.field=value`).

    truth: the ground truth (reparam.study.TruthConfig); options canonical | random. truth.kind: 'canonical' (the
        documented values) or 'random' (drawn from truth.seed); truth.noise: sigma of Y (null: the truth's 0.1);
        truth.min_separation: least distance between true atoms (random truths only).
        The truth's shape (null: the kind's default): truth.d (input dimension), truth.m (output dimension),
        truth.n_atoms (L*, the true prompts), truth.n_experts (N, the pretrained experts), truth.latent_dim (r, the
        latent size of the shared structures). canonical: d = 2 (the documented truth; m = 1, L* = 2, N = 2, r = 2,
        or latent_dim=3 for the non-injective "canonical-r3") or d = 8, 16 (the head-like family documented in
        reparam/truth.py, e.g. "canonical-d8-m4": m = 4 (1..d), L* = 2 (1..4), N = 2 (1..4), r = d (or d + 1));
        random: any shape >= 1, default d = 2, m = 1, L* = 2, N = 2, r = 2. A shape field at its default does not
        change the setting's fingerprint (setting_id, run folders).
    structure: the structures compared, one curve each; options all | shared | independent | one structure's
        name (every registered structure declares its options). structure.names: the list itself;
        structure.activation: sigma of shared_mlp.
    regime: options both | exact | over. regime.names: 'exact' (L' = L*) and/or 'over' (L' = L* + extra_atoms);
        regime.extra_atoms: atoms added in over-specified fits.
    optimiser: the batched damped-Newton solver (reparam.fit.SolverConfig); options newton | newton_long
        (max_iter=1000). optimiser.max_iter, ftol, stop ('statistical' or 'strict'), stat_tol, damping0,
        damping_max, chunk_elements, gap_tol, method ('newton' or 'gauss_newton'), psd_tol, prune,
        prune_after, prune_margin, num_threads: see `help(reparam.fit.SolverConfig)`.
    init: the starts of each fit (reparam.study.InitConfig); options near_truth | random | mixed (the default:
        the near-truth start + 4 random ones). init.mode, n_starts (the lowest-loss start is kept),
        scale and shrink (near-truth noise scale * (n / 1000) ** -shrink), random_scale (random atoms in
        U(-random_scale, random_scale)).
    n_grid: the sample sizes (sorted, unique, >= 1).
    n: one sample size instead of n_grid (null: n_grid); handy for `-m n=1000,10000`.
    replicates: replicate data streams per cell (>= 1); seed: base seed of the replicates' data streams.
    n_eval: held-out samples of the prediction-error estimate.
    threads: torch threads of this process (with workers > 1: shared among the workers, at least 1 each).
    workers: processes that run cells in parallel (rows do not depend on it; see reparam.sweep.run_plan).
    device: where the solver's sample-space pass runs, 'cpu' or 'cuda' (float64; 'cuda' needs a GPU).
    figures: draw the figures (needs >= 2 sample sizes); progress: print a line per finished cell.
    allow_large: run even when the up-front estimate exceeds this machine's memory or 24 h.
    """

    truth: TruthConfig = field(default_factory=TruthConfig)
    structure: StructureConf = field(default_factory=StructureConf)
    regime: RegimeConf = field(default_factory=RegimeConf)
    optimiser: SolverConfig = field(default_factory=SolverConfig)
    init: InitConfig = field(default_factory=lambda: InitConfig(**vars(STUDY_INIT)))
    n_grid: List[int] = field(default_factory=lambda: list(DEFAULT_N_GRID))
    n: Optional[int] = None
    replicates: int = 10
    seed: int = 0
    n_eval: int = 100_000
    threads: int = 2
    workers: int = 2
    device: str = "cpu"
    figures: bool = True
    progress: bool = True
    allow_large: bool = False


@dataclass
class LocalParallelConf:
    """`hydra/launcher=local_parallel`: the joblib launcher with one job per core of this machine."""

    _target_: str = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
    n_jobs: int = 2
    backend: Optional[str] = None
    prefer: str = "processes"
    require: Optional[str] = None
    verbose: int = 0
    timeout: Optional[float] = None
    pre_dispatch: str = "2*n_jobs"
    batch_size: str = "auto"
    temp_folder: Optional[str] = None
    max_nbytes: Optional[str] = None
    mmap_mode: str = "r"


def structure_options() -> dict[str, list[str]]:
    """The `structure=` options, from what each registered structure declares (reparam.structures): its own name,
    and every composite option listed in its `hydra_options` (e.g. "all", "shared")."""
    options: dict[str, list[str]] = {}
    for name, cls in STRUCTURES.items():
        options[name] = [name]
        for option in cls.hydra_options:
            options.setdefault(option, []).append(name)
    return options


def store_structure_options() -> None:
    """(Re)store the `structure=` options; called on every registry change (an unregistered structure's own
    option is dropped)."""
    cs = ConfigStore.instance()
    options = structure_options()
    for stale in set(cs.repo.get("structure", {})) - {f"{name}.yaml" for name in options}:
        del cs.repo["structure"][stale]
    for name, names in options.items():
        cs.store(group="structure", name=name, node=StructureConf(names=names))


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(name="study_schema", node=StudyConf)
    cs.store(group="truth", name="canonical", node=TruthConfig(kind="canonical"))
    cs.store(group="truth", name="random", node=TruthConfig(kind="random"))
    on_registry_change(store_structure_options)
    for name, names in {"both": ["exact", "over"], "exact": ["exact"], "over": ["over"]}.items():
        cs.store(group="regime", name=name, node=RegimeConf(names=names))
    cs.store(group="optimiser", name="newton", node=SolverConfig())
    cs.store(group="optimiser", name="newton_long", node=SolverConfig(max_iter=1000))
    for mode in ("near_truth", "random", "mixed"):  # `mixed` (the default) is reparam.study.STUDY_INIT
        n_starts = 1 if mode == "near_truth" else STUDY_INIT.n_starts
        cs.store(group="init", name=mode, node=InitConfig(mode=mode, n_starts=n_starts))
    cs.store(group="hydra/launcher", name="local_parallel", node=LocalParallelConf, provider="reparam")
    try:
        from hydra_plugins.reparam_slurm_launcher.slurm_launcher import SlurmConf  # sized for a small node

        cs.store(group="hydra/launcher", name="slurm", provider="reparam", node=SlurmConf)
    except ImportError:  # the submitit plugin is a dependency; without it only `slurm` is missing
        pass


def _section(cfg, name):
    return OmegaConf.to_object(cfg[name])


def plan_from_cfg(cfg: Any) -> tuple[StudyPlan, int]:
    """Translate a composed config into a validated StudyPlan (ConfigError naming the field): no unknown keys, every
    value in range, and a size that fits this machine (unless allow_large=true). The plan's own checks and its truths
    run once per process (reparam.sweep.validate_plan): the preflight's call does the work, the app's finds it done."""
    check_unknown_keys(cfg, StudyConf)
    sections = {}
    for section in ("truth", "optimiser", "init"):
        try:
            sections[section] = _section(cfg, section)
        except ValueError as err:  # e.g. SolverConfig.__post_init__ range checks: named within their section
            raise ConfigError(f"{section}.{err}") from None
    if cfg.n is not None:
        check_int("n", cfg.n, low=1)
    grid = [int(cfg.n)] if cfg.n is not None else list(cfg.n_grid)
    setting = Setting(extra_atoms=cfg.regime.extra_atoms, activation=cfg.structure.activation,
                      truth=sections["truth"], init=sections["init"], solver=sections["optimiser"],
                      n_eval=cfg.n_eval, device=cfg.device)
    plan = StudyPlan(structures=list(cfg.structure.names), regimes=list(cfg.regime.names), n_grid=grid,
                     replicates=cfg.replicates, seed=cfg.seed, setting=setting)
    allow_large, n_field = bool(cfg.get("allow_large", False)), "n" if cfg.n is not None else "n_grid"
    validate_plan(plan, allow_large, n_field=n_field)  # the truth's shape is sized before the truth is built
    check_int("threads", cfg.threads, low=1)
    check_int("workers", cfg.workers, low=1)
    check_resources(plan, allow_large, n_field=n_field)
    return plan, int(cfg.threads)


#: StudyConf fields that change how fast or how verbosely a study runs, never a recorded number
EXECUTION_FIELDS = ("threads", "workers", "progress", "figures", "allow_large")


def folder_setting(cfg: Any, schema: Any = StudyConf, ignore: tuple = ()) -> dict:
    """The setting a run folder of the study records (reparam.runfolder): every field of `schema` that changes
    a result, the sizes (n_grid, n, replicates, seed) included, since results.csv holds exactly those fits. The
    truth's shape fields enter only when off the kind's default (reparam.study.recorded_truth), so a folder of a
    default truth made before those fields existed is still this setting's folder."""
    keys = [f.name for f in dataclasses.fields(schema) if f.name not in EXECUTION_FIELDS + tuple(ignore)]
    setting = OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in keys if k in cfg]), resolve=True)
    if isinstance(setting.get("truth"), dict):  # shape fields at the kind's default are left out: see recorded_truth
        setting["truth"] = recorded_truth(setting["truth"])
    return setting


register()
