"""A convergence study as a list of cells, run with resume: a plan -> validated -> cells -> rows on disk.

A `StudyPlan` is everything one study varies: the structures and regimes it compares, the sample-size grid,
the replicates and base seed, and one template `Setting` (truth, init, solver) applied to every
(structure, regime). `run_plan` runs every (structure, regime, n) cell with `reparam.study.run_cell`
and appends its rows to a checksummed `ResultLog` (JSON lines) as soon as the cell is done, so a run
killed at any moment loses at most the cell in flight. Rerunning with the same log skips every
(cell, replicate) already recorded; corrupt or partial records are skipped with a warning by the log
and their replicates are fitted again.

Determinism: every number in a row depends only on the setting, n, the replicate and the base seed
(the data stream of replicate r is `data_seed(seed, r)` for every structure and n), except `seconds`,
which is wall time. `results.csv` is written sorted by (structure, regime, n, replicate) with full
float precision, so two runs of one plan give byte-identical files once the `seconds` column is
removed (see `without_timing`).
"""
from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd
import torch

from .console import say
from .provenance import note_kept
from .results import ResultLog, RowSchema, write_table
from .validation import (ConfigError, DataError, check_choice, check_int, check_list, check_memory, check_number,
                         check_time, fingerprint, is_int, require)
from .structures import ACTIVATIONS, STRUCTURES, on_registry_change
from .study import DEFAULT_N_GRID, REGIMES, Setting, recorded_truth, run_cell, validate_setting

logger = logging.getLogger(__name__)

#: Column order of results.csv: identifiers, then errors, then the optimiser's certificate, then timing.
RESULT_COLUMNS = [
    "structure", "regime", "n", "replicate", "seed", "base_seed", "truth", "setting_id",
    "activation", "theorem", "n_true_atoms", "n_fitted_atoms", "noise", "init", "n_starts", "init_scale",
    "best_start",
    "voronoi_prefix", "voronoi_native", "voronoi_r1_prefix", "voronoi_r2_prefix",
    "atom_error_single", "atom_error_multi", "l2_error",
    "n_valid_starts", "loss", "truth_loss", "gap", "rel_gap", "valid", "converged", "certified", "status", "n_iter",
    "seconds",
]
SORT_KEYS = ["truth", "structure", "regime", "n", "base_seed", "replicate"]
#: What a record of a study log must be (reparam.results.RowSchema): the key columns, and the columns the
#: summaries read, typed; another app's record in the file (an LM row) is reported by line and never used.
STUDY_ROW = RowSchema(
    name="the synthetic study",
    required={"structure": "str", "regime": "str", "n": "int", "replicate": "int", "seed": "int", "truth": "str",
              "setting_id": "str"},
    optional={"base_seed": "int", "valid": "bool", "converged": "bool", "rel_gap": "number",
              "voronoi_prefix": "number", "loss": "number", "truth_loss": "number", "status": "str"})
TIMING_COLUMNS = ["seconds"]


@dataclass
class StudyPlan:
    """What one study runs.

    structures, regimes: every combination is one curve.
    n_grid: sample sizes (sorted, unique, >= 1).
    replicates: replicate ids 0 .. replicates - 1 (each one a nested data stream across n).
    seed: base seed of the data streams (common to all structures: common random numbers).
    setting: template for every curve; its `structure` and `regime` are replaced per curve.
    """

    structures: list[str] = field(default_factory=lambda: ["shared_linear", "shared_mlp", "independent"])
    regimes: list[str] = field(default_factory=lambda: ["exact", "over"])
    n_grid: list[int] = field(default_factory=lambda: list(DEFAULT_N_GRID))
    replicates: int = 10
    seed: int = 0
    setting: Setting = field(default_factory=Setting)

    def settings(self) -> list[Setting]:
        out = []
        for structure in self.structures:
            for regime in self.regimes:
                s = copy.deepcopy(self.setting)
                s.structure, s.regime = structure, regime
                out.append(s)
        return out

    def cells(self) -> list[tuple[Setting, int]]:
        """Cells in run order: cheap sample sizes first, so early results (and progress) come quickly."""
        return [(s, int(n)) for n in self.n_grid for s in self.settings()]


#: Plans validated in this process: plan_key -> the truth of each of its settings. The preflight, plan_from_cfg
#: and run_plan of one run all ask for validation; the first validates and builds the truths, the others find them
#: here. A changed plan has another key; a registry change (a structure registered or removed) forgets them all.
_VALIDATED: dict[str, list] = {}
on_registry_change(_VALIDATED.clear)


def plan_key(plan: StudyPlan) -> str:
    """The fingerprint of everything in `plan` (settings, sizes, seeds)."""
    return fingerprint(plan)


def validate_plan(plan: StudyPlan, allow_large: bool = False, flag: str = "allow_large=true",
                  n_field: str = "n_grid") -> None:
    """Type and range checks of a whole study, the solver pass (REPARAM_PASS, reparam.kernels: resolved here, so
    the run's record names it), the memory its truth's shape needs (before the truth is built: a shape too large
    for this machine is refused unless `allow_large`, naming the field), then its truths built (inconsistent
    dimensions, bad truth settings); ConfigError naming the field as the main job's config spells it, before any
    work. Once per plan and process."""
    if plan_key(plan) in _VALIDATED:
        return
    check_list("structures", plan.structures, item_check=lambda f, v: check_choice(f, v, sorted(STRUCTURES)),
               unique=True)
    check_list("regimes", plan.regimes, item_check=lambda f, v: check_choice(f, v, list(REGIMES)), unique=True)
    grid = check_list("n_grid", plan.n_grid, item_check=lambda f, v: check_int(f, v, low=1), unique=True)
    require(grid == sorted(grid), "n_grid", grid, "sorted in increasing order")
    check_int("replicates", plan.replicates, low=1)
    check_int("seed", plan.seed, low=0)
    s = plan.setting
    check_choice("structure.activation", s.activation, sorted(ACTIVATIONS))
    require(is_int(s.extra_atoms) and s.extra_atoms >= 1, "regime.extra_atoms", s.extra_atoms,
            "an integer >= 1 (over-specified fits need more fitted atoms than true atoms)")
    if s.truth.noise is not None:
        check_number("truth.noise", s.truth.noise, low=0)
    check_int("truth.seed", s.truth.seed, low=0)
    check_int("n_eval", s.n_eval, low=1)
    for setting in plan.settings():
        validate_setting(setting)
    from . import kernels

    kernels.check_requested_pass()
    kernels.pass_kernel()  # the pass the fits will use, chosen (and any fallback said) before the run folder
    shape = truth_shape(plan)
    field = size_field(plan, shape, n_field)
    value = _sizes(plan, shape, n_field)[field]
    check_memory(field, value, shape_memory_bytes(plan, shape), flag, allow_large)
    check_time(field, value, shape_seconds(plan, shape), TIME_LIMIT_SECONDS, flag, allow_large)
    from .study import build_truth, n_fitted_atoms
    truths = []
    for setting in plan.settings():  # builds the truths: catches inconsistent dimensions and bad truth settings
        try:
            truth = build_truth(setting)
        except ValueError as err:
            raise ConfigError(f"truth: {err}") from None
        require(n_fitted_atoms(setting, truth) >= truth.n_atoms, "regime.extra_atoms", setting.extra_atoms,
                f">= 0 so that fitted atoms >= {truth.n_atoms} true atoms")
        truths.append(truth)
    _VALIDATED[plan_key(plan)] = truths


def setting_id(setting: Setting) -> str:
    """Short fingerprint of everything in a Setting except structure and regime (those are own columns). The truth's
    shape fields enter only when off the kind's default (reparam.study.recorded_truth): a default truth keeps the
    id it had before those fields existed."""
    d = asdict(setting)
    d.pop("structure"), d.pop("regime")
    d["truth"] = recorded_truth(d["truth"])
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _key(structure, regime, n, base_seed, replicate, sid):
    return (str(structure), str(regime), int(n), int(base_seed), int(replicate), str(sid))


def study_log(log: ResultLog | str | os.PathLike) -> ResultLog:
    """`log` (a path or a ResultLog) read as a study log: records checked against STUDY_ROW."""
    path = log.path if isinstance(log, ResultLog) else log
    return ResultLog(path, schema=STUDY_ROW)


def read_study_log(path: str | os.PathLike) -> pd.DataFrame:
    """Rows of one synthetic-study log (records checked against STUDY_ROW: another app's records in it are reported
    by line and skipped); DataError when no record is a row of the study (e.g. an LM experiment log)."""
    log = study_log(path)
    frame = pd.DataFrame(log.rows())
    if not len(frame) and log.foreign_lines:
        line, why = log.foreign_lines[0]
        raise DataError(f"{path} is not a result log of the synthetic study (line {line}: {why}); LM "
                        f"experiment logs are tabulated by their own commands (reparam planted-prefix draw, "
                        f"reparam low-data stage=report)")
    return frame


def _row_key(row: dict):
    return _key(row["structure"], row["regime"], row["n"], row.get("base_seed", -1), row["replicate"],
                row.get("setting_id", ""))


def _run_cell_job(setting: Setting, n: int, missing: list[int], seed: int, threads: int) -> tuple[list[dict], float]:
    """One cell in a worker process (module-level so that it pickles): (rows, seconds)."""
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    return run_cell(setting, n, missing, seed), time.perf_counter() - t0


def _exit_with_parent(parent_pid: int) -> None:
    """Worker initializer: a killed study (SIGKILL, preemption) must not leave its workers fitting orphaned
    cells whose results nobody records; a daemon thread ends the worker once its parent is gone. Ctrl-C reaches
    every process of the terminal's group: a worker ignores it (no traceback per worker), the parent ends the run
    and its workers (_cell_results)."""
    import signal
    import threading

    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch():
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _cell_results(todo, plan: StudyPlan, workers: int):
    """Yield (index, rows, seconds) per cell with work to do: in order when serial; with `workers` > 1 from
    a process pool (spawned: no forked OpenMP state), largest cells submitted first so that the pool is not
    left waiting on one big cell at the end, yielded as they finish. Each worker runs its cell with the
    parent's torch thread count divided among the workers (at least 1)."""
    jobs = [(i, s, n, m) for i, (s, n, m) in enumerate(todo) if m]
    import multiprocessing

    if multiprocessing.parent_process() is not None or \
            multiprocessing.get_start_method(allow_none=True) not in (None, "fork", "spawn", "forkserver"):
        workers = 1  # already a worker of a parallel launcher (e.g. Hydra's joblib/loky): its jobs use the cores
    if workers <= 1:
        for i, setting, n, missing in jobs:
            t0 = time.perf_counter()
            yield i, run_cell(setting, n, missing, plan.seed), time.perf_counter() - t0
        return
    from concurrent.futures import ProcessPoolExecutor, as_completed

    threads = max(1, torch.get_num_threads() // workers)
    jobs.sort(key=lambda job: -job[2] * len(job[3]) * (2 if job[1].regime == "over" else 1))
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_exit_with_parent, initargs=(os.getpid(),))
    try:
        futures = {pool.submit(_run_cell_job, s, n, m, plan.seed, threads): i for i, s, n, m in jobs}
        for future in as_completed(futures):
            rows, seconds = future.result()
            yield futures[future], rows, seconds
    except BaseException:
        # an interrupt or a failed cell: the cells in flight are not waited for (their rows could not be recorded
        # once this process ends), so the workers are stopped rather than joined
        for process in list((getattr(pool, "_processes", None) or {}).values()):
            process.terminate()
        pool.shutdown(wait=True, cancel_futures=True)  # quick once the workers are gone; leaves no pipe open at exit
        raise
    pool.shutdown(wait=True)


def _pass_in_use(plan: StudyPlan) -> str:
    """The sample-space pass of the plan's fits, in words (the record's solver_pass says why)."""
    from . import kernels

    if plan.setting.device != "cpu":
        return f"tensor ({plan.setting.device})"
    return "fused (compiled kernel)" if kernels.kernel_status()["pass"] == "fused" else "tensor"


def run_plan(plan: StudyPlan, log_path: str | os.PathLike, progress: bool = True, stream=None,
             workers: int = 1) -> pd.DataFrame:
    """Run every missing (cell, replicate) of `plan`, persisting each finished cell; return the plan's rows.

    workers: processes that run cells in parallel (1 = in this process). Rows do not depend on it (every
    number in a row is a function of the setting, n, replicate and seed; the worker count only changes
    `seconds` and the order of records in the log), provided every cell runs with the same torch thread
    count; resume works the same (each finished cell is appended as soon as it arrives).
    progress: one line per finished cell, written to `stream` if given, else through this module's logger (the
    Hydra job log and console) where logging is configured, else to stderr (reparam.console.say)."""
    check_int("workers", workers, low=1)
    validate_plan(plan)  # a no-op when this process validated the plan already (the preflight, plan_from_cfg)
    log = study_log(log_path)
    done = {_row_key(r) for r in log.rows()}
    cells = plan.cells()
    todo = []
    for setting, n in cells:
        sid = setting_id(setting)
        missing = [r for r in range(plan.replicates)
                   if _key(setting.structure, setting.regime, n, plan.seed, r, sid) not in done]
        todo.append((setting, n, missing))
    n_missing = sum(len(m) for *_, m in todo)
    n_total = len(cells) * plan.replicates
    note_kept(log.path.parent, f"{n_total - n_missing} of {n_total} fits are kept in {log.path}")
    if progress:
        say(logger, f"[sweep] {len(cells)} cells x {plan.replicates} replicates = {n_total} fits; "
            f"{n_total - n_missing} already in {log.path}, {n_missing} to run; solver pass: {_pass_in_use(plan)}",
            stream, fallback="stderr")
    tic = time.perf_counter()
    ran = 0
    for i, rows, seconds in _cell_results(todo, plan, workers):
        setting, n, missing = todo[i]
        sid = setting_id(setting)
        for row in rows:
            row["base_seed"] = int(plan.seed)
            row["setting_id"] = sid
        log.extend(rows)
        ran += len(missing)
        note_kept(log.path.parent, f"{n_total - n_missing + ran} of {n_total} fits are kept in {log.path}")
        if progress:
            ok = sum(r["valid"] for r in rows)
            elapsed = time.perf_counter() - tic
            say(logger, f"[sweep] cell {i + 1:>3}/{len(todo)}  {setting.structure:<14} {setting.regime:<5} n={n:<7} "
                f"fits={len(rows):<3} valid={ok:<3} {seconds:6.1f}s  "
                f"(done {n_total - n_missing + ran}/{n_total}, elapsed {elapsed:.0f}s)", stream, fallback="stderr")
    return plan_rows(plan, log)


def copy_planned_rows(plans: list[StudyPlan], source: ResultLog, target: ResultLog) -> int:
    """Append to `target` the records of `source` that belong to one of `plans` (same setting fingerprint, n,
    seed and replicate) and are not in `target` yet; return how many. Reuses fits without refitting them."""
    wanted = set()
    for plan in plans:
        for setting, n in plan.cells():
            sid = setting_id(setting)
            wanted |= {_key(setting.structure, setting.regime, n, plan.seed, r, sid) for r in range(plan.replicates)}
    source, target = study_log(source), study_log(target)
    have = {_row_key(r) for r in target.rows()}
    rows, seen = [], set()
    for row in source.rows():
        k = _row_key(row)
        if k in wanted and k not in have and k not in seen:
            rows.append(row)
            seen.add(k)
    if rows:
        target.extend(rows)
    return len(rows)


def plan_rows(plan: StudyPlan, log: ResultLog) -> pd.DataFrame:
    """The rows of `log` that belong to `plan` (one per planned fit, first valid record wins), tidy and sorted."""
    wanted = {}
    for setting, n in plan.cells():
        sid = setting_id(setting)
        for r in range(plan.replicates):
            wanted[_key(setting.structure, setting.regime, n, plan.seed, r, sid)] = None
    log = study_log(log)
    for row in log.rows():
        k = _row_key(row)
        if k in wanted and wanted[k] is None:
            wanted[k] = row
    missing = [k for k, v in wanted.items() if v is None]
    if missing:
        raise RuntimeError(f"{len(missing)} planned fits are missing from {log.path} (first: {missing[0]})")
    return tidy(pd.DataFrame(list(wanted.values())))


def tidy(df: pd.DataFrame) -> pd.DataFrame:
    """Known columns first in RESULT_COLUMNS order (others after, alphabetically), rows sorted, deduplicated."""
    df = df.copy()
    key = [c for c in ["truth", "structure", "regime", "n", "base_seed", "replicate", "setting_id"] if c in df.columns]
    df = df.drop_duplicates(subset=key, keep="first")
    cols = [c for c in RESULT_COLUMNS if c in df.columns] + sorted(c for c in df.columns if c not in RESULT_COLUMNS)
    sort = [c for c in SORT_KEYS if c in df.columns]
    return df[cols].sort_values(sort, kind="mergesort").reset_index(drop=True)


def write_results(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """results.csv, atomically, at full float precision (so the table round-trips exactly)."""
    return write_table(tidy(df), path)


def without_timing(path: str | os.PathLike) -> bytes:
    """The bytes of a results.csv with the wall-time column(s) removed: the part that is deterministic."""
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    return df.drop(columns=[c for c in TIMING_COLUMNS if c in df.columns]).to_csv(index=False).encode()


def set_threads(threads: int) -> None:
    check_int("threads", threads, low=1)
    torch.set_num_threads(int(threads))


from .validation import TIME_LIMIT_SECONDS  # noqa: E402  (refuse a study estimated to take longer; allow_large)


def estimate_resources(plan: StudyPlan, allow_large: bool = False) -> dict:
    """Order-of-magnitude peak memory (bytes, the largest cell) and wall time (seconds, all cells, one thread)
    of `plan`, from the array sizes the solver allocates and the per-iteration cost measured in BENCHMARKS.md
    (about 1.6e-7 s per fit, sample and iteration at prefix width 12; every fit assumed to run max_iter
    iterations, so the time is an upper estimate). Used to refuse what cannot fit the machine before any work.
    The shape enters through the truths: the prefix width L (d + 1 + m) of the sample-space pass (whose J J^T
    term grows with width^2) and the native parameter count P of the fitted structure (P x P matrices, P^3
    eigendecompositions; P exceeds the width for shared_learned, whose globals grow with (d + m) r), and the
    pretrained experts' pass over the data (shape_memory_bytes: N experts per sample).
    Validates `plan` first (once per process: validate_plan) and reads the truths built there."""
    from .losses import L2_BLOCK_FITS, L2_CHUNK_POINTS
    from .study import cell_group_size, n_fitted_atoms, replicate_bytes

    validate_plan(plan, allow_large)
    experts_peak = shape_memory_bytes(plan, truth_shape(plan))
    peak, seconds, worst = 0.0, 0.0, None
    for setting, truth in zip(plan.settings(), _VALIDATED[plan_key(plan)]):
        d, m = truth.d, truth.m
        L = n_fitted_atoms(setting, truth)
        width = L * (d + 1 + m)  # prefix-space coordinates of one fit (Pz of the solver)
        P = max(width, truth.structure.n_params(L))  # native parameters (shared_learned: its globals too)
        fits = plan.replicates * setting.init.n_starts
        iters = setting.solver.max_iter
        for n in plan.n_grid:
            # run_cell fits the replicates in groups that fit CELL_MEMORY_BYTES (reparam.study.replicate_bytes)
            group = min(plan.replicates, cell_group_size(setting, truth, n))
            # the group's data and its fits' matrices (Hessian, J^T J, eigendecomposition per fit)
            data = group * replicate_bytes(n, d, m, truth.experts.n_experts, setting.init.n_starts, P)
            chunks = 8.0 * setting.solver.chunk_elements * 12  # bounded temporaries of one chunk
            # l2_error: its sample, the experts' pass over it, and one block of fits x chunk of points
            evaluation = 8.0 * setting.n_eval * (d + 2 * m + 2) + 8.0 * L2_BLOCK_FITS * L2_CHUNK_POINTS * (L + 2 + 2 * m)
            cell = max(data + chunks + evaluation, experts_peak)
            if cell > peak:
                peak, worst = cell, (setting.structure, setting.regime, n)
            seconds += fits * iters * (n * (1e-8 * width + 3e-10 * width * width) + 1e-9 * P ** 3)
            # the experts' pass (N scores per sample) over the cell's data and the l2_error sample: about 1e-7 s per
            # (sample, expert) pair at d + m = 3 (measured: N = 1000, n_eval = 1e5, one thread), growing with d + m
            seconds += (3 * plan.replicates * n + 2 * setting.n_eval) * truth.experts.n_experts * 1e-7 * (d + m) / 3
    return dict(memory_bytes=peak, seconds=seconds, largest_cell=worst)


def check_resources(plan: StudyPlan, allow_large: bool = False, flag: str = "allow_large=true",
                    n_field: str = "n_grid") -> dict:
    """Raise ConfigError when `plan` needs more memory than this machine has or more than TIME_LIMIT_SECONDS,
    unless `allow_large`. The message names the setting that drives the size (`n_field`: how the caller's
    user spells the sample-size setting, e.g. 'n' or '--n-grid'). The truth's shape is checked before the truth
    is built (validate_plan), so a shape that cannot fit is refused without trying."""
    validate_plan(plan, allow_large, flag, n_field)
    est = estimate_resources(plan, allow_large)
    shape = truth_shape(plan)
    field = size_field(plan, shape, n_field)
    value = _sizes(plan, shape, n_field)[field]
    check_memory(field, value, est["memory_bytes"], flag, allow_large)
    check_time(field, value, est["seconds"], TIME_LIMIT_SECONDS, flag, allow_large)
    return est


def truth_shape(plan: StudyPlan) -> dict:
    """The resolved shape {d, m, n_atoms, n_experts, latent_dim} of the plan's truth (the same for every
    setting), without building it."""
    from .truth import resolved_shape

    t = plan.setting.truth
    return resolved_shape(t.kind, **t.shape())


def shape_memory_bytes(plan: StudyPlan, shape: dict) -> float:
    """Order-of-magnitude peak memory (bytes) that the truth's shape alone implies, known before the truth is
    built: its parameters as drawn (the N experts' (d, d) and (d, m) matrices, the tie maps and latent atoms, and
    shared_learned's globals, with their working copies) and the experts' pass over the largest sample (every
    sample scored by all N experts: (samples, N, d + m) temporaries, for one group of replicates' data at the
    largest n (run_cell fits its replicates in groups: reparam.study.replicate_group_size) and n_eval)."""
    d, m, L, N, r = (shape[k] for k in ("d", "m", "n_atoms", "n_experts", "latent_dim"))
    hidden = d + m
    build = 8.0 * (4 * N * d * d + 2 * N * d * m + 3 * (d + m + L) * r + 3 * (hidden * r + hidden * hidden + 2 * hidden))
    from .study import replicate_group_size

    n = max(plan.n_grid)
    width = _widest_fit(plan, shape)  # the fits' P x P matrices, P >= the prefix width
    S = plan.setting.init.n_starts
    group = min(plan.replicates, replicate_group_size(n, d, m, N, S, width))  # run_cell's replicates at once
    samples = max(group * n, plan.setting.n_eval)
    matrices = 8.0 * group * S * width * width * 16
    return build + max(8.0 * samples * N * (d + m + 2) * 2, matrices)


def _widest_fit(plan: StudyPlan, shape: dict) -> int:
    """The prefix width L' (d + 1 + m) of the plan's largest fit (L' = L* + extra_atoms when over-specified)."""
    extra = plan.setting.extra_atoms if "over" in plan.regimes else 0
    return (shape["n_atoms"] + extra) * (shape["d"] + 1 + shape["m"])


def shape_seconds(plan: StudyPlan, shape: dict) -> float:
    """A lower estimate of the plan's wall time from the shape alone (estimate_resources' formula with the native
    parameter count P at its least, the prefix width), and the random truth's draw (its L*^2 / 2 atom distances,
    about 2e-6 s each): enough to refuse, before a truth is built, a shape whose fits could not end in time."""
    width = _widest_fit(plan, shape)
    s = plan.setting
    fits = plan.replicates * s.init.n_starts * len(plan.structures) * len(plan.regimes)
    per_sample = 1e-8 * width + 3e-10 * width * width
    seconds = sum(fits * s.solver.max_iter * (n * per_sample + 1e-9 * width ** 3) for n in plan.n_grid)
    return seconds + (2e-6 * shape["n_atoms"] ** 2 / 2 if s.truth.kind == "random" else 0.0)


#: the sizes a study's cost grows with, at their defaults (a refusal names the one furthest above its default)
SIZE_DEFAULTS = {"replicates": 10, "n_eval": 100_000, "regime.extra_atoms": 1, "init.n_starts": 1,
                 "truth.d": 2, "truth.m": 1, "truth.n_atoms": 2, "truth.n_experts": 2, "truth.latent_dim": 2}
SAMPLE_SIZE_DEFAULT = 100_000


def _sizes(plan: StudyPlan, shape: dict, n_field: str) -> dict:
    s = plan.setting
    return {n_field: max(plan.n_grid), "replicates": plan.replicates, "n_eval": s.n_eval,
            "regime.extra_atoms": s.extra_atoms, "init.n_starts": s.init.n_starts,
            **{f"truth.{k}": v for k, v in shape.items()}}


def size_field(plan: StudyPlan, shape: dict, n_field: str = "n_grid") -> str:
    """The setting that drives the plan's size: the one furthest above its default."""
    sizes = _sizes(plan, shape, n_field)
    defaults = dict(SIZE_DEFAULTS, **{n_field: SAMPLE_SIZE_DEFAULT})
    return max(sizes, key=lambda k: sizes[k] / defaults[k])
