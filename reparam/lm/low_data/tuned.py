"""The per-n tuned protocol of the low-data study (low_data.lr_selection=per_n): one run at a time, resumable.

The unit of work is a RUN: one (dataset, n, replicate, structure, init, lr), trained alone with early stopping
on the dev loss, then its test NLL and greedy outputs. Every run is appended to runs.jsonl as soon as it ends,
so a chunk killed mid-run loses that run only, and the same command continues.

Learning rate, per (dataset, n, structure, init):

* tuning: on replicate `low_data.tuning.replicate` every lr of `low_data.lr_grid[structure]` is trained and the
  one with the lowest best dev loss is selected (ties: the smaller lr). When the selection is at an EDGE of the
  lrs tried, the next geometric value outward is trained (the edge value times the ratio of the two outermost
  values on that side, to 3 significant digits), and the selection is made again; this repeats until the
  selection is interior or `low_data.tuning.max_extensions` values were added (then the row says the lr is
  not interior). Every extension is a run of its own and is recorded in the selection log and in the row.
* reuse: every other replicate of that n is trained once, at the selected lr.

A run's convergence status (`run_status`): "converged" when its best dev check is strictly after the first check
after step 0 (`eval_every` steps, or `eval_every` epochs of n with fit.eval_unit=epochs) and strictly before the step cap (`max_steps`), and it stopped by patience;
otherwise it says which of these failed ("best at first check", "best at cap", "stopped at cap", "best at step
0", "diverged"). Every result row carries it, with the lr's provenance (tuned / reused, extensions, interior).

When a tuning is complete its selection rows are written (one per lr tried, the selected one marked) and its
result row; a reused run's result row is written when it ends. Both are derived from runs.jsonl, so a chunk
stopped between the two writes completes them on the next start.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass

from omegaconf import DictConfig, OmegaConf

from reparam.console import say
from reparam.lm.data import nested_subset
from reparam.lm.multiprefix import Member, MultiPrefix, fit, word_ids
from reparam.results import ResultLog

from .settings import KEY, cells, eval_every_steps, fit_config, paths, replicates_of

logger = logging.getLogger(__name__)

RUN_KEY = [*KEY, "lr"]
#: significant digits of an extension's lr (a clean value that reads back exactly from JSON)
LR_DIGITS = 3


def run_status(best_step: int, stopped_by: str, diverged: bool, eval_every: int, max_steps: int) -> str:
    """'converged' when eval_every < best_step < max_steps and the run stopped by patience; else what failed."""
    if diverged:
        return "diverged"
    if best_step <= 0:
        return "best at step 0"
    if best_step <= eval_every:
        return "best at first check"
    if best_step >= max_steps:
        return "best at cap"
    if stopped_by != "patience":
        return "stopped at cap"
    return "converged"


def same_lr(a: float, b: float) -> bool:
    return math.isclose(float(a), float(b), rel_tol=1e-9)


def extension_lr(tried: list[float], upward: bool) -> float:
    """The next geometric value outward of the sorted lrs `tried` (the edge times the ratio of the two outermost
    values on that side), rounded to LR_DIGITS significant digits."""
    lrs = sorted(tried)
    value = lrs[-1] * lrs[-1] / lrs[-2] if upward else lrs[0] * lrs[0] / lrs[1]
    return float(f"{value:.{LR_DIGITS}g}")


@dataclass
class Tuning:
    """The state of one (dataset, n, structure, init) tuning, from its recorded runs."""

    grid: list[float]
    runs: dict[float, dict]  # lr -> run row, on the tuning replicate
    max_extensions: int

    @property
    def missing_grid(self) -> list[float]:
        return [lr for lr in self.grid if not any(same_lr(lr, t) for t in self.runs)]

    @property
    def tried(self) -> list[float]:
        return sorted(self.runs)

    @property
    def extensions(self) -> list[float]:
        """The lrs tried beyond the grid, in the order they were trained."""
        extra = [lr for lr in self.runs if not any(same_lr(lr, g) for g in self.grid)]
        return sorted(extra, key=lambda lr: self.runs[lr]["run_index"])

    def selected(self) -> float | None:
        """The tried lr with the lowest best dev loss (ties: the smaller lr); None before the grid is complete."""
        if self.missing_grid:
            return None
        best = None
        for lr in self.tried:  # ascending: a tie keeps the smaller lr
            if best is None or self.runs[lr]["best_dev"] < self.runs[best]["best_dev"]:
                best = lr
        return best

    def edge(self) -> str | None:
        """'top' / 'bottom' when the selection is the largest / smallest lr tried, else None (interior)."""
        sel = self.selected()
        if sel is None:
            return None
        if same_lr(sel, self.tried[-1]):
            return "top"
        if same_lr(sel, self.tried[0]):
            return "bottom"
        return None

    def next_lr(self) -> float | None:
        """The next lr to train: a missing grid value, or an extension while the selection is at an edge."""
        if self.missing_grid:
            return self.missing_grid[0]
        side = self.edge()
        if side is None or len(self.extensions) >= self.max_extensions:
            return None
        return extension_lr(self.tried, upward=side == "top")

    @property
    def done(self) -> bool:
        return not self.missing_grid and self.next_lr() is None

    def lr_columns(self) -> dict:
        """What a result row records about its lr (the tuning's outcome)."""
        return {"lr_grid": json.dumps(self.grid), "lr_tried": json.dumps(self.tried),
                "lr_extensions": len(self.extensions), "lr_extended_to": json.dumps(self.extensions),
                "lr_interior": self.edge() is None}


@dataclass(frozen=True)
class RunSpec:
    dataset: str
    n: int
    replicate: int
    structure: str
    init: str
    lr: float | None  # None: a reused run whose lr is not yet known (its n is still being tuned)
    role: str  # "tune" | "reuse"

    @property
    def runnable(self) -> bool:
        return self.lr is not None


class Plan:
    """What is recorded and what is left, from the setting's recorded runs."""

    def __init__(self, cfg: DictConfig, sid: str):
        self.cfg, self.sid, self.paths = cfg, sid, paths(cfg, sid)
        p = cfg.low_data
        self.tune_rep = int(p.tuning.replicate)
        self.max_ext = int(p.tuning.max_extensions)
        self.pairs = [(s, i) for s in p.structures for i in p.inits]
        rows = [r for r in ResultLog(self.paths["runs"]).rows() if r.get("setting_id") == sid]
        self.runs: dict[tuple, dict] = {}
        for k, r in enumerate(rows):
            self.runs[(r["dataset"], int(r["n"]), int(r["replicate"]), r["structure"], r["init"], float(r["lr"]))] = \
                {**r, "run_index": k}

    def tuning(self, dataset: str, n: int, structure: str, init: str) -> Tuning:
        grid = sorted(float(v) for v in self.cfg.low_data.lr_grid[structure])
        runs = {k[5]: r for k, r in self.runs.items() if k[:5] == (dataset, n, self.tune_rep, structure, init)}
        return Tuning(grid, runs, self.max_ext)

    def run_of(self, dataset, n, rep, structure, init, lr) -> dict | None:
        for k, r in self.runs.items():
            if k[:5] == (dataset, n, rep, structure, init) and same_lr(k[5], lr):
                return r
        return None

    def pending(self) -> list[RunSpec]:
        """Every run left that is known now, in run order (n ascending; an n's tuning before its reused runs).
        A tuning's further extensions are not known until its current runs end, so they are not counted."""
        out = []
        ns = sorted({n for _, n, _ in cells(self.cfg)})
        for d in self.cfg.low_data.datasets:
            for n in ns:
                reps = replicates_of(self.cfg, n)
                for s, i in self.pairs:
                    t = self.tuning(d, n, s, i)
                    lrs = t.missing_grid or ([t.next_lr()] if t.next_lr() is not None else [])
                    out += [RunSpec(d, n, self.tune_rep, s, i, lr, "tune") for lr in lrs]
                for s, i in self.pairs:
                    t = self.tuning(d, n, s, i)
                    sel = t.selected() if t.done else None
                    for r in reps:
                        if r == self.tune_rep:
                            continue
                        if sel is None or self.run_of(d, n, r, s, i, sel) is None:
                            out.append(RunSpec(d, n, r, s, i, sel, "reuse"))
        return out

    def cells_left(self) -> int:
        """Selected cells (dataset, n, replicate) with a (structure, init) whose result is not final yet."""
        left = 0
        for d, n, r in cells(self.cfg):
            for s, i in self.pairs:
                t = self.tuning(d, n, s, i)
                if not t.done or self.run_of(d, n, r, s, i, t.selected()) is None:
                    left += 1
                    break
        return left

    def derived_rows(self) -> tuple[list[dict], list[dict]]:
        """(result rows, selection rows) of every final (cell, structure, init), from the recorded runs."""
        results, selection = [], []
        ns = sorted({n for _, n, _ in cells(self.cfg)})
        fc = self.cfg.low_data.fit
        for d in self.cfg.low_data.datasets:
            for n in ns:
                for s, i in self.pairs:
                    t = self.tuning(d, n, s, i)
                    if not t.done:
                        continue
                    sel = t.selected()
                    lr_cols = t.lr_columns()
                    ext = t.extensions
                    for lr in t.tried:
                        r = t.runs[lr]
                        selection.append({
                            **{k: r[k] for k in ("dataset", "n", "replicate", "setting_id", "structure", "init", "lr",
                                                 "best_dev", "best_step", "stopped_step", "stopped_by", "diverged",
                                                 "status", "dev_curve", "train_loss_first", "train_loss_last")},
                            "selected": same_lr(lr, sel), "first_check": eval_every_steps(fc, n),
                            "cap": int(fc.max_steps),
                            "extension": next((k + 1 for k, e in enumerate(ext) if same_lr(e, lr)), 0)})
                    for rep in replicates_of(self.cfg, n):
                        run = self.run_of(d, n, rep, s, i, sel)
                        if run is None:
                            continue
                        row = {k: v for k, v in run.items() if k not in ("run_index", "dev_curve", "role")}
                        results.append({**row, **lr_cols, "lr_source": "tuned" if rep == self.tune_rep else
                                        f"reused (tuned on replicate {self.tune_rep})"})
        return results, selection


def write_derived(plan: Plan) -> None:
    """Append the result and selection rows that the recorded runs make final and that are not yet written."""
    sid = plan.sid
    res_log, sel_log = ResultLog(plan.paths["results"]), ResultLog(plan.paths["selection"])
    have_res = {tuple(r[k] for k in KEY) for r in res_log.rows() if r.get("setting_id") == sid}
    have_sel = {tuple(r[k] for k in RUN_KEY) for r in sel_log.rows() if r.get("setting_id") == sid}
    results, selection = plan.derived_rows()
    new_sel = [r for r in selection if tuple(r[k] for k in RUN_KEY) not in have_sel]
    new_res = [r for r in results if tuple(r[k] for k in KEY) not in have_res]
    if new_sel:
        sel_log.extend(new_sel)
    if new_res:
        res_log.extend(new_res)


def train_run(cfg: DictConfig, base, tok, device, pool, spec: RunSpec, sid: str) -> dict:
    """Train one run alone (early stopping on the dev loss), then its test NLL and greedy outputs; returns its row."""
    from .protocol import write_jsonl

    p, where = cfg.low_data, paths(cfg, sid)
    t_run = time.perf_counter()
    train_rows = pool.train_rows(nested_subset(pool.train, spec.n, seed=spec.replicate))
    member = Member(spec.structure, float(spec.lr), spec.init, seed=spec.replicate)
    init_ids = word_ids(tok, p.init_text[spec.dataset], p.prefix_len) if spec.init == "words" else None
    model = MultiPrefix(base, [member], prefix_len=p.prefix_len, hidden=p.hidden, embed_dim=p.embed_dim,
                        init_ids=init_ids, top_layers=p.top_layers)
    label = f"[low_data] {spec.dataset} n={spec.n} r={spec.replicate} {spec.structure} lr={spec.lr:g}"
    log = (lambda msg: say(logger, f"{label} {msg}")) if cfg.progress else None
    fc = fit_config(p.fit, spec.n, seed=spec.replicate)
    (f,), timing = fit(model, train_rows, pool.dev_rows, fc, tok.pad_token_id, log=log)
    t0 = time.perf_counter()
    (nll,) = model.evaluate_nll(pool.test_rows, [0], tok.pad_token_id, p.test.nll_rows)
    nll_s, t0 = time.perf_counter() - t0, time.perf_counter()
    texts = model.generate(pool.prompts, [0], tok, max_new_tokens=p.test.max_new_tokens, num_beams=p.test.num_beams,
                           length_penalty=p.test.length_penalty, max_rows=p.test.gen_rows)[0]
    gen_s = time.perf_counter() - t0
    gen_file = where["generations"] / (f"{spec.dataset}_n{spec.n}_r{spec.replicate}_{spec.structure}_{spec.init}_"
                                       f"lr{spec.lr:g}.jsonl")
    write_jsonl(gen_file, [{"structure": spec.structure, "init": spec.init, "lr": spec.lr, "item": k, "hyp": h}
                           for k, h in enumerate(texts)])
    refs_file = where["generations"] / f"{spec.dataset}_refs.jsonl"
    if not refs_file.is_file():
        write_jsonl(refs_file, [{"item": k, "source": t.source, "refs": t.refs} for k, t in enumerate(pool.items)])
    status = run_status(f.best_step, f.stopped_by, f.diverged, fc.eval_every, int(p.fit.max_steps))
    return {"dataset": spec.dataset, "n": spec.n, "replicate": spec.replicate, "setting_id": sid,
            "structure": spec.structure, "init": spec.init, "lr": float(spec.lr), "role": spec.role,
            "test_nll": float(nll), "best_dev": f.best_dev, "best_step": f.best_step, "stopped_step": f.stopped_step,
            "stopped_by": f.stopped_by, "diverged": f.diverged, "first_check": fc.eval_every,
            "cap": int(p.fit.max_steps), "status": status, "converged": status == "converged",
            "dev_curve": json.dumps(f.dev_curve),
            "train_loss_first": f.train_losses[0] if f.train_losses else None,
            "train_loss_last": f.train_losses[-1] if f.train_losses else None,
            "steps": timing["steps"], "members": 1, "n_test_items": len(pool.items), "n_test_pairs": len(pool.test_rows),
            "train_s": timing["train_s"], "dev_eval_s": timing["eval_s"], "test_nll_s": nll_s, "generate_s": gen_s,
            "run_wall_s": time.perf_counter() - t_run, "generations": str(gen_file.relative_to(where["run"])),
            "device": str(device), "model": cfg.model.name, "top_layers": model.dims.n_layers,
            "model_layers": model.model_dims.n_layers}


def _estimate_s(plan: Plan, n: int) -> float | None:
    """Seconds a run of sample size n should take at most: the longest recorded run of that n; with none, the step
    cap at the slowest recorded seconds per step, plus the slowest recorded test; None with no run recorded."""
    walls = [r["run_wall_s"] for k, r in plan.runs.items() if k[1] == n]
    if walls:
        return max(walls)
    if not plan.runs:
        return None
    per_step = max((r["train_s"] + r["dev_eval_s"]) / max(int(r["steps"]), 1) for r in plan.runs.values())
    test = max(r["test_nll_s"] + r["generate_s"] for r in plan.runs.values())
    return int(plan.cfg.low_data.fit.max_steps) * per_step + test


def progress_line(plan: Plan) -> str:
    """Cells and runs left, and the minutes they should take at the recorded mean run time of each n."""
    pending = plan.pending()
    line = (f"[low_data] setting {plan.sid}: {plan.cells_left()} of {len(cells(plan.cfg))} cells left, "
            f"{len(pending)} known runs left (plus any grid extensions); {len(plan.runs)} runs recorded")
    if pending and plan.runs:
        mean_all = sum(r["run_wall_s"] for r in plan.runs.values()) / len(plan.runs)
        by_n: dict[int, list[float]] = {}
        for k, r in plan.runs.items():
            by_n.setdefault(k[1], []).append(r["run_wall_s"])
        eta = sum(sum(by_n[s.n]) / len(by_n[s.n]) if s.n in by_n else mean_all for s in pending)
        line += f"; about {eta / 60:.0f} min left at the recorded mean run time of each n"
    return line


def note_runs_kept(plan: Plan) -> None:
    """What an interrupt keeps (reparam.provenance.note_kept, said by its one line): the recorded runs of this
    setting; the run in progress starts again. The total counts the runs known now (an lr extension adds one)."""
    from reparam.provenance import note_kept

    done = len(plan.runs)
    note_kept(plan.paths["run"], f"{done} of {done + len(plan.pending())} runs are kept in {plan.paths['runs']}")


def train_stage(cfg: DictConfig, sid: str) -> None:
    """Run the runs left, in order, until none is left or the next would not end within max_minutes."""
    from reparam.lm.runner import Chunk, prepare_model

    from .pool import Pool

    plan = Plan(cfg, sid)
    write_derived(plan)
    note_runs_kept(plan)
    say(logger, progress_line(plan) + f"; rows in {plan.paths['run']}")
    if not any(s.runnable for s in plan.pending()):
        return
    chunk = Chunk(plan.paths["chunks"], sid, cfg, cells_total=len(cells(cfg)), cells_left=plan.cells_left())
    base, tok, device = prepare_model(OmegaConf.to_container(cfg.model, resolve=True), cfg.device, cfg.threads)
    pools = {}
    ran = 0
    try:
        while True:
            todo = [s for s in plan.pending() if s.runnable]
            if not todo:
                break
            spec = todo[0]
            expected = _estimate_s(plan, spec.n)
            # a run starts only if it should end in time (the chunk's clock includes loading the model and data);
            # a chunk always runs at least one
            if ran and cfg.max_minutes is not None and chunk.wall() + (expected or 0.0) > 60 * cfg.max_minutes:
                say(logger, f"[low_data] max_minutes={cfg.max_minutes}: the next run (about {expected / 60:.0f} min at "
                            f"most) would not end in time; rerun the same command to continue")
                break
            if spec.role == "tune" and spec.lr is not None:
                t = plan.tuning(spec.dataset, spec.n, spec.structure, spec.init)
                if not t.missing_grid:
                    say(logger, f"[low_data] {spec.dataset} n={spec.n} {spec.structure}: lr {t.selected():g} selected at "
                                f"the {t.edge()} edge of {t.tried}; extending to {spec.lr:g} (extension "
                                f"{len(t.extensions) + 1} of at most {plan.max_ext})")
            if spec.dataset not in pools:
                pools[spec.dataset] = Pool(spec.dataset, cfg, tok, base)
            cells_before = plan.cells_left()
            row = train_run(cfg, base, tok, device, pools[spec.dataset], spec, sid)
            ResultLog(plan.paths["runs"]).append(row)
            ran += 1
            plan = Plan(cfg, sid)
            write_derived(plan)
            note_runs_kept(plan)
            for _ in range(cells_before - plan.cells_left()):
                chunk.cell_done(row["run_wall_s"], spec.n)
            say(logger, f"[low_data] run {spec.dataset} n={spec.n} r={spec.replicate} {spec.structure} lr={spec.lr:g} "
                        f"({spec.role}) done in {row['run_wall_s'] / 60:.1f} min: {row['steps']} steps, best dev "
                        f"{row['best_dev']:.4f} at step {row['best_step']} ({row['status']}), test NLL {row['test_nll']:.4f}")
            say(logger, progress_line(plan))
    finally:
        plan = Plan(cfg, sid)
        chunk.cells_left = plan.cells_left()
        left_ns = [s.n for s in plan.pending()]
        times = [(k[1], r["run_wall_s"]) for k, r in plan.runs.items()]
        say(logger, chunk.close(left_ns, times).replace(" cell(s) done", " cell(s) completed") +
            f" ({ran} run(s) this chunk)")
