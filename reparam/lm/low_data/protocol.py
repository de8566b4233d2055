"""The low-data protocols' stages: train (per cell or per n), score, and the recorded table.

per_cell (low_data.lr_selection=per_cell, the top-K CPU edition): in each cell (dataset, n, replicate) every
structure x initialisation x learning rate of its grid is trained at once, in one forward pass per step
(`reparam.lm.multiprefix`), with AdamW, early stopping on the dev loss; per structure and initialisation the lr
with the best dev loss is selected (every candidate's dev loss in selection.jsonl); the selected configurations
get the test NLL and greedy/beam outputs. A cell's rows are written when it ends (a killed chunk loses that cell).
per_n: `reparam.lm.low_data.tuned` (one run at a time, tuned once per n with the edge-extension rule).

Replicate r draws training subset r (nested in n) and seeds every structure's initialisation and batch order
with r: structures are compared PAIRED, on the same examples in the same order.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from reparam.console import say
from reparam.lm.data import nested_subset
from reparam.lm.metrics import E2EScorer
from reparam.lm.multiprefix import Member, MultiPrefix, fit, word_ids
from reparam.results import ResultLog
from reparam.validation import fingerprint

from .pool import Pool
from .settings import KEY, cells, fit_config, paths as _paths, setting_id

logger = logging.getLogger(__name__)


def write_jsonl(path: Path, rows: list[dict]) -> None:
    """Write `rows` as JSON lines through a temporary file: a killed run never leaves a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    os.replace(tmp, path)


def rows_of(log: ResultLog, sid: str) -> list[dict]:
    """The rows of setting `sid` in a result log (a run folder holds the rows of several settings)."""
    return [r for r in log.rows() if r.get("setting_id") == sid]


def run_cell(cfg: DictConfig, base, tok, device, pool: Pool, dataset: str, n: int, rep: int, sid: str,
             pairs: list[tuple[str, str]]) -> list[dict]:
    """Train every lr of the (structure, init) `pairs` in one cell, select the lr per pair, test; returns the result rows.

    Pairs are independent of each other (each selects its own lr on the dev loss), so a cell can be run in
    parts (low_data.structures / low_data.inits choose them) without changing any result.
    """
    p, paths = cfg.low_data, _paths(cfg, sid)
    t_cell = time.perf_counter()
    train_rows = pool.train_rows(nested_subset(pool.train, n, seed=rep))
    members = [Member(s, float(lr), init, seed=rep) for s, init in pairs for lr in p.lr_grid[s]]
    init_ids = word_ids(tok, p.init_text[dataset], p.prefix_len) if any(i == "words" for _, i in pairs) else None
    model = MultiPrefix(base, members, prefix_len=p.prefix_len, hidden=p.hidden, embed_dim=p.embed_dim, init_ids=init_ids,
                        top_layers=p.top_layers)
    log = (lambda msg: say(logger, f"[low_data] {dataset} n={n} r={rep} {msg}")) if cfg.progress else None
    fits, timing = fit(model, train_rows, pool.dev_rows, fit_config(p.fit, n, seed=rep),
                       tok.pad_token_id, log=log)

    chosen: dict[tuple[str, str], int] = {}
    for k, m in enumerate(members):  # the lr with the lowest dev loss (ties: the smaller lr, listed first)
        best = chosen.get((m.structure, m.init))
        if best is None or fits[k].best_dev < fits[best].best_dev:
            chosen[(m.structure, m.init)] = k
    ks = sorted(chosen.values())
    cell = {"dataset": dataset, "n": n, "replicate": rep, "setting_id": sid}
    selection = [{**cell, "structure": m.structure, "init": m.init, "lr": m.lr, "best_dev": f.best_dev,
                  "best_step": f.best_step, "stopped_step": f.stopped_step, "diverged": f.diverged, "selected": k in ks,
                  "dev_curve": json.dumps(f.dev_curve), "train_loss_first": f.train_losses[0] if f.train_losses else None,
                  "train_loss_last": f.train_losses[-1] if f.train_losses else None}
                 for k, (m, f) in enumerate(zip(members, fits))]

    t0 = time.perf_counter()
    nll = model.evaluate_nll(pool.test_rows, ks, tok.pad_token_id, p.test.nll_rows)
    nll_s, t0 = time.perf_counter() - t0, time.perf_counter()
    texts = model.generate(pool.prompts, ks, tok, max_new_tokens=p.test.max_new_tokens, num_beams=p.test.num_beams,
                           length_penalty=p.test.length_penalty, max_rows=p.test.gen_rows)
    gen_s = time.perf_counter() - t0
    part = fingerprint(sorted(pairs))[:8]  # one file per set of (structure, init) pairs: parts of a cell never collide
    gen_file = paths["generations"] / f"{dataset}_n{n}_r{rep}_{part}.jsonl"  # the rows inside name their configuration
    write_jsonl(gen_file, [{"structure": members[k].structure, "init": members[k].init, "lr": members[k].lr,
                             "item": i, "hyp": h} for k in ks for i, h in enumerate(texts[k])])
    refs_file = paths["generations"] / f"{dataset}_refs.jsonl"
    if not refs_file.is_file():
        write_jsonl(refs_file, [{"item": i, "source": t.source, "refs": t.refs} for i, t in enumerate(pool.items)])
    wall = time.perf_counter() - t_cell
    results = [{**cell, "structure": members[k].structure, "init": members[k].init, "lr": members[k].lr,
                "test_nll": float(v), "best_dev": fits[k].best_dev, "best_step": fits[k].best_step,
                "stopped_step": fits[k].stopped_step, "cell_steps": timing["steps"], "members": len(members),
                "n_test_items": len(pool.items), "n_test_pairs": len(pool.test_rows), "train_s": timing["train_s"],
                "dev_eval_s": timing["eval_s"], "test_nll_s": nll_s, "generate_s": gen_s, "cell_wall_s": wall,
                "generations": str(gen_file.relative_to(paths["run"])), "device": str(device), "model": cfg.model.name,
                "top_layers": model.dims.n_layers, "model_layers": model.model_dims.n_layers}
               for k, v in zip(ks, nll)]
    ResultLog(paths["selection"]).extend(selection)
    ResultLog(paths["results"]).extend(results)  # last: a cell counts as done only once its results are written
    return results


def train_stage(cfg: DictConfig) -> None:
    """Train the selected cells not yet recorded (per cell), or the runs left (per n); resumable."""
    from reparam.lm.runner import Chunk, prepare_model

    sid = setting_id(cfg)
    if cfg.low_data.get("lr_selection", "per_cell") == "per_n":
        from . import tuned

        return tuned.train_stage(cfg, sid)
    paths = _paths(cfg, sid)
    p = cfg.low_data
    done = {tuple(r[k] for k in KEY) for r in rows_of(ResultLog(paths["results"]), sid)}
    wanted = [(s, i) for s in p.structures for i in p.inits]
    todo = [(c, [w for w in wanted if (*c, *w) not in done]) for c in cells(cfg)]
    todo = [(c, pairs) for c, pairs in todo if pairs]
    say(logger, f"[low_data] setting {sid}: {len(cells(cfg)) - len(todo)} of {len(cells(cfg))} selected cells recorded, "
          f"{len(todo)} to run; rows in {paths['run']}")
    if not todo:
        return
    from reparam.provenance import note_kept

    def note_cells_kept(recorded: int) -> None:  # what an interrupt keeps, said by its one line (reparam.app)
        note_kept(paths["run"], f"{recorded} of {len(cells(cfg))} cells are kept in {paths['results']}")

    note_cells_kept(len(cells(cfg)) - len(todo))
    chunk = Chunk(paths["chunks"], sid, cfg, cells_total=len(cells(cfg)), cells_left=len(todo))
    base, tok, device = prepare_model(OmegaConf.to_container(cfg.model, resolve=True), cfg.device, cfg.threads)
    pools: dict[str, Pool] = {}
    longest = 0.0
    try:
        for i, ((dataset, n, rep), pairs) in enumerate(todo):
            # start a cell only if it is expected to end in time (expected: the longest cell so far); the clock
            # includes loading the model and data, and a chunk always runs at least one cell
            if i > 0 and cfg.max_minutes is not None and chunk.wall() + longest > 60 * cfg.max_minutes:
                say(logger, f"[low_data] max_minutes={cfg.max_minutes}: the next cell would not end in time; rerun the same "
                      f"command to continue")
                break
            if dataset not in pools:
                pools[dataset] = Pool(dataset, cfg, tok, base)
            rows = run_cell(cfg, base, tok, device, pools[dataset], dataset, n, rep, sid, pairs)
            w = rows[0]
            longest = max(longest, w["cell_wall_s"])
            chunk.cell_done(w["cell_wall_s"], n)
            note_cells_kept(len(cells(cfg)) - len(todo) + i + 1)
            say(logger, f"[low_data] cell {dataset} n={n} r={rep} done in {w['cell_wall_s']:.0f}s (train {w['train_s']:.0f}s, "
                  f"{w['cell_steps']} steps, {w['members']} configurations; test NLL {w['test_nll_s']:.0f}s; "
                  f"decoding {w['generate_s']:.0f}s)")
    finally:
        rows = rows_of(ResultLog(paths["results"]), sid)
        cell_times = sorted({(r["dataset"], int(r["n"]), int(r["replicate"]), float(r["cell_wall_s"])) for r in rows})
        done_now = {tuple(r[k] for k in KEY) for r in rows}
        left_ns = [n for (d, n, r), pairs in todo if any((d, n, r, *w) not in done_now for w in pairs)]
        say(logger, chunk.close(left_ns, [(n, w) for _, n, _, w in cell_times]))


def score_stage(cfg: DictConfig) -> None:
    """The E2E metrics of every recorded configuration not yet scored (reads the saved generations only)."""
    sid = setting_id(cfg)
    paths = _paths(cfg, sid)
    metrics = list(cfg.low_data.metrics)
    scored = {tuple(r[k] for k in KEY) for r in rows_of(ResultLog(paths["scores"]), sid) if set(metrics) <= set(r)}
    todo = [r for r in rows_of(ResultLog(paths["results"]), sid) if tuple(r[k] for k in KEY) not in scored]
    say(logger, f"[low_data] scoring {len(todo)} configuration(s) with {metrics}")
    if not todo:
        return
    scorer = E2EScorer(metrics)
    by_file: dict[str, list[dict]] = {}
    for r in todo:
        by_file.setdefault(r["generations"], []).append(r)
    for rel, rows in by_file.items():
        gen = [json.loads(line) for line in open(paths["run"] / rel, encoding="utf-8")]
        refs_file = paths["run"] / Path(rel).parent / f"{rows[0]['dataset']}_refs.jsonl"
        refs = [json.loads(line)["refs"] for line in open(refs_file, encoding="utf-8")]
        systems = {}
        for r in rows:
            hyps = sorted((g for g in gen if (g["structure"], g["init"]) == (r["structure"], r["init"])), key=lambda g: g["item"])
            if len(hyps) != len(refs):
                raise ValueError(f"{paths['run'] / rel}: {len(hyps)} outputs of {r['structure']}/{r['init']} for "
                                 f"{len(refs)} test items; delete the file and its rows to regenerate")
            systems[f"{r['structure']}|{r['init']}"] = [g["hyp"] for g in hyps]
        t0 = time.perf_counter()
        scores = scorer.score_many(systems, refs)
        ResultLog(paths["scores"]).extend(
            [{**{k: r[k] for k in KEY}, "setting_id": sid, **scores[f"{r['structure']}|{r['init']}"],
              "score_s": (time.perf_counter() - t0) / len(rows)} for r in rows])
        say(logger, f"[low_data] scored {rel} ({len(rows)} configurations, {time.perf_counter() - t0:.0f}s)")


def table(cfg: DictConfig) -> pd.DataFrame:
    """One row per recorded (cell, structure, init): training record, test NLL and the metrics scored so far."""
    sid = setting_id(cfg)
    paths = _paths(cfg, sid)
    res = pd.DataFrame(rows_of(ResultLog(paths["results"]), sid))
    if res.empty:
        return res
    res = res.drop_duplicates(KEY, keep="last")
    sc = pd.DataFrame(rows_of(ResultLog(paths["scores"]), sid))
    if not sc.empty:
        sc = sc.drop_duplicates(KEY, keep="last").drop(columns=["setting_id"])
        res = res.merge(sc, on=KEY, how="left")
    return res


def chunk_table(cfg: DictConfig, sid: str) -> pd.DataFrame:
    """The chunk log of setting `sid`, with its CPU time in hours."""
    chunks = pd.DataFrame(rows_of(ResultLog(_paths(cfg, sid)["chunks"]), sid))
    if not chunks.empty:
        chunks["cpu_hours"] = chunks["cpu_s"] / 3600
    return chunks


def budget_setting(cfg: DictConfig, only_checked: bool = False) -> DictConfig:
    """The budget check's own setting: `budget_check.structure` with `budget_check.max_steps` and `.lr_grid` (and,
    with only_checked, that structure alone), every other setting as in `cfg`."""
    b = cfg.budget_check
    change = {"fit": {"max_steps": int(b.max_steps)}, "lr_grid": {b.structure: list(b.lr_grid)}}
    if only_checked:
        change["structures"] = [b.structure]
    return OmegaConf.merge(cfg, {"low_data": change, "budget_check": {"run": False}})


def every_layer(cfg: DictConfig) -> DictConfig:
    """The same setting with the prefix in every layer (the all-layer check of a top-K run)."""
    return OmegaConf.merge(cfg, {"low_data": {"top_layers": None}})
