"""Experiment 2: a fair low-data table-to-text comparison of the prefix structures (THEORY section 6).

The protocol (README, "Low-data protocol"; every number in experiments/conf/low_data.yaml):

* cells: dataset (E2E, WebNLG 2017) x n training examples x replicate. Replicate r draws training subset
  r (nested in n) and seeds every structure's initialisation and batch order with r: structures are
  compared PAIRED, on the same examples in the same order.
* in each cell, every structure x initialisation (random, real-word activations) x learning rate of its
  grid is trained at once, in one forward pass per step (`reparam.lm.multiprefix`), with AdamW and a linear
  decay, early stopping on the dev loss; per structure and initialisation the lr with the best dev loss is
  selected (every candidate's dev loss is recorded in selection.jsonl);
* the selected configurations get the test NLL of every (test item, reference) pair and beam-search
  outputs on the full test set (saved: generations/...).

* low_data.top_layers=K puts the prefixes in the top K layers only: the layers below never see a prefix, so
  their states are computed once per example and reused by every step and configuration (exact; the lever
  that makes a CPU run affordable). null (the default) is Li & Liang's prefix on every layer.

Stages (`stage=`):

    reparam low-data stage=train [device=cuda] [low_data.datasets=[e2e]] [low_data.ns=[50]] ...
    reparam low-data stage=score      # E2E metrics of the saved outputs (BLEU and NIST in Python; the rest: Java)
    reparam low-data stage=report     # tables, paired differences, figures
    reparam low-data setting=smoke stage=all   # everything on a tiny model, < 1 minute
    reparam low-data setting=cpu stage=train max_minutes=60   # the CPU edition, one chunk (rerun to continue)
    reparam low-data setting=gpu stage=all                    # the all-layer edition in one call on one GPU
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from reparam.app import as_dictconfig, hydra_main
from reparam.console import say

from reparam.lm.compare import budget_diagnostics, paired_differences, paired_markdown, score_summary
from reparam.lm.data import nested_subset
from reparam.lm.low_data import tuned
from reparam.lm.low_data.pool import Pool
from reparam.lm.low_data.protocol import write_jsonl
from reparam.lm.low_data.settings import KEY, NOT_RESULT, STAGES, cells, model_settings, paths, setting_id, validate  # noqa: F401
from reparam.lm.metrics import E2E_METRICS, METRIC_LABELS, SCORE_RANGES, E2EScorer
from reparam.lm.multiprefix import FitConfig, Member, MultiPrefix, fit, word_ids
from reparam.lm.runner import Chunk, prepare_model, repo_path
from reparam.provenance import write_provenance
from reparam.results import ResultLog, write_table
from reparam.runfolder import acquire, release
from reparam.validation import check_added_keys, fingerprint, status_on_input_error

logger = logging.getLogger(__name__)

# ----------------------------------------------------------------------------- config
# validate (the preflight's validator), setting_id, cells: reparam.lm.low_data.settings

_model_settings = model_settings
_paths = paths


def _rows_of(log: ResultLog, sid: str) -> list[dict]:
    return [r for r in log.rows() if r.get("setting_id") == sid]


# ----------------------------------------------------------------------------- stage: train


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
    fits, timing = fit(model, train_rows, pool.dev_rows, FitConfig(**OmegaConf.to_container(p.fit), seed=rep),
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
    sid = setting_id(cfg)
    if cfg.low_data.get("lr_selection", "per_cell") == "per_n":
        return tuned.train_stage(cfg, sid)
    paths = _paths(cfg, sid)
    p = cfg.low_data
    done = {tuple(r[k] for k in KEY) for r in _rows_of(ResultLog(paths["results"]), sid)}
    wanted = [(s, i) for s in p.structures for i in p.inits]
    todo = [(c, [w for w in wanted if (*c, *w) not in done]) for c in cells(cfg)]
    todo = [(c, pairs) for c, pairs in todo if pairs]
    say(logger, f"[low_data] setting {sid}: {len(cells(cfg)) - len(todo)} of {len(cells(cfg))} selected cells recorded, "
          f"{len(todo)} to run; rows in {paths['run']}")
    if not todo:
        return
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
            say(logger, f"[low_data] cell {dataset} n={n} r={rep} done in {w['cell_wall_s']:.0f}s (train {w['train_s']:.0f}s, "
                  f"{w['cell_steps']} steps, {w['members']} configurations; test NLL {w['test_nll_s']:.0f}s; "
                  f"decoding {w['generate_s']:.0f}s)")
    finally:
        rows = _rows_of(ResultLog(paths["results"]), sid)
        cell_times = sorted({(r["dataset"], int(r["n"]), int(r["replicate"]), float(r["cell_wall_s"])) for r in rows})
        done_now = {tuple(r[k] for k in KEY) for r in rows}
        left_ns = [n for (d, n, r), pairs in todo if any((d, n, r, *w) not in done_now for w in pairs)]
        say(logger, chunk.close(left_ns, [(n, w) for _, n, _, w in cell_times]))


# ----------------------------------------------------------------------------- stage: score


def score_stage(cfg: DictConfig) -> None:
    """The E2E metrics of every recorded configuration not yet scored (reads the saved generations only)."""
    sid = setting_id(cfg)
    paths = _paths(cfg, sid)
    metrics = list(cfg.low_data.metrics)
    scored = {tuple(r[k] for k in KEY) for r in _rows_of(ResultLog(paths["scores"]), sid) if set(metrics) <= set(r)}
    todo = [r for r in _rows_of(ResultLog(paths["results"]), sid) if tuple(r[k] for k in KEY) not in scored]
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


# ----------------------------------------------------------------------------- stage: report


def table(cfg: DictConfig) -> pd.DataFrame:
    """One row per recorded (cell, structure, init): training record, test NLL and the metrics scored so far."""
    sid = setting_id(cfg)
    paths = _paths(cfg, sid)
    res = pd.DataFrame(_rows_of(ResultLog(paths["results"]), sid))
    if res.empty:
        return res
    res = res.drop_duplicates(KEY, keep="last")
    sc = pd.DataFrame(_rows_of(ResultLog(paths["scores"]), sid))
    if not sc.empty:
        sc = sc.drop_duplicates(KEY, keep="last").drop(columns=["setting_id"])
        res = res.merge(sc, on=KEY, how="left")
    return res


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
    sel = pd.DataFrame(_rows_of(ResultLog(_paths(cfg, sid)["selection"]), sid))
    for dataset, d in df.groupby("dataset"):
        stem = f"low_data_{dataset}"
        write_table(d, out / f"{stem}.csv")
        summary = score_summary(d, metrics, by=("init", "structure", "n"))  # Student-t, none from < 3 replicates
        write_table(summary, out / f"{stem}_summary.csv")
        paired = paired_differences(d, metrics, baseline="independent", n_boot=cfg.n_boot)
        write_table(paired, out / f"{stem}_paired.csv")
        (out / f"{stem}_paired.md").write_text(
            f"# {dataset}: paired difference vs independent (95% percentile bootstrap over replicates; "
            f"no interval from fewer than 3)\n\n{paired_markdown(paired, METRIC_LABELS)}\n")
        if not sel.empty:
            s = sel[sel.dataset == dataset].drop_duplicates(["n", "replicate", "structure", "init", "lr"], keep="last")
            lr_table = (s.groupby(["structure", "init", "n", "lr"])
                        .agg(selected=("selected", "sum"), candidates=("selected", "size"), best_dev_mean=("best_dev", "mean"),
                             best_step_mean=("best_step", "mean")).reset_index())
            write_table(lr_table, out / f"{stem}_lr_selection.csv")
            write_table(budget_diagnostics(s, int(cfg.low_data.fit.max_steps)), out / f"{stem}_budget.csv")
        chunks = _chunk_table(cfg, sid)
        if not chunks.empty:  # what the recorded study cost, summed from the chunk log (never typed in)
            write_table(chunks, out / f"{stem}_chunks.csv")
        every = table(_every_layer(cfg)) if cfg.low_data.top_layers is not None else pd.DataFrame()
        every = every[every.dataset == dataset] if not every.empty else every
        variant = _variant_table(cfg, d, every, metrics)
        if not variant.empty:
            write_table(variant, out / f"{stem}_variant.csv")
            write_table(every, out / f"{stem}_every_layer.csv")  # the all-layer rows themselves
            every_chunks = _chunk_table(cfg, setting_id(_every_layer(cfg)))
            if not every_chunks.empty:  # what the all-layer check cost, apart from the top-K study's own chunks
                write_table(every_chunks, out / f"{stem}_variant_chunks.csv")
            (out / f"{stem}_variant.md").write_text(
                f"# {dataset}: shared - independent with the prefix in the top {cfg.low_data.top_layers} layers and in "
                f"every layer (same cells; 95% percentile bootstrap over replicates)\n\n"
                f"{_variant_markdown(variant)}\n")
        check = _budget_check_table(cfg, d, dataset, metrics)
        if not check.empty:
            write_table(check, out / f"{stem}_budget_check.csv")
            csid = setting_id(budget_setting(cfg))
            csel = pd.DataFrame(_rows_of(ResultLog(_paths(cfg, csid)["selection"]), csid))
            csel = csel[(csel.dataset == dataset) & (csel.structure == cfg.budget_check.structure)]
            write_table(budget_diagnostics(csel, int(cfg.budget_check.max_steps)), out / f"{stem}_budget_check_lr.csv")
            (out / f"{stem}_budget_check.md").write_text(
                f"# {dataset}: shared - {cfg.budget_check.structure} at the protocol's budget and with "
                f"{cfg.budget_check.structure} given more (same cells; 95% percentile bootstrap over replicates)\n\n"
                f"{_variant_markdown(check, what='budget')}\n")
        for m in metrics:
            save_figure(low_data_scores_figure(summary, m, ylabel=METRIC_LABELS[m], title=f"{dataset}: {METRIC_LABELS[m]}",
                                               bounds=SCORE_RANGES.get(m)), out / f"{stem}_{m}")
        save_figure(low_data_paired_figure(paired, metrics, labels=METRIC_LABELS,
                                           title=f"{dataset}: paired difference vs independent"),
                    out / f"{stem}_paired")
    say(logger, f"[low_data] tables and figures in {out}")


def _chunk_table(cfg: DictConfig, sid: str) -> pd.DataFrame:
    """The chunk log of setting `sid`, with its CPU time in hours."""
    chunks = pd.DataFrame(_rows_of(ResultLog(_paths(cfg, sid)["chunks"]), sid))
    if not chunks.empty:
        chunks["cpu_hours"] = chunks["cpu_s"] / 3600
    return chunks


def _variant_table(cfg: DictConfig, top: pd.DataFrame, every: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """Top-K rows against the all-layer rows of the same setting and dataset (recorded with low_data.top_layers=null)."""
    from reparam.lm.compare import variant_agreement

    if every.empty:
        return pd.DataFrame()
    shared_metrics = [m for m in metrics if m in every.columns and every[m].notna().any()]
    return variant_agreement({f"top {cfg.low_data.top_layers} layers": top, "every layer": every}, shared_metrics,
                             n_boot=cfg.n_boot)


def budget_setting(cfg: DictConfig, only_checked: bool = False) -> DictConfig:
    """The budget check's own setting: `budget_check.structure` with `budget_check.max_steps` and `.lr_grid` (and,
    with only_checked, that structure alone), every other setting as in `cfg`."""
    b = cfg.budget_check
    change = {"fit": {"max_steps": int(b.max_steps)}, "lr_grid": {b.structure: list(b.lr_grid)}}
    if only_checked:
        change["structures"] = [b.structure]
    return OmegaConf.merge(cfg, {"low_data": change, "budget_check": {"run": False}})


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
                              label(b.max_steps, b.lr_grid): larger}, kept, baseline=b.structure, n_boot=cfg.n_boot)


def _every_layer(cfg: DictConfig) -> DictConfig:
    """The same setting with the prefix in every layer (the all-layer check of a top-K run)."""
    return OmegaConf.merge(cfg, {"low_data": {"top_layers": None}})


def _variant_markdown(variant: pd.DataFrame, what: str = "prefix in") -> str:
    from reparam.lm.compare import format_difference

    baseline = variant["baseline"].iloc[0] if "baseline" in variant and len(variant) else "independent"
    lines = [f"| {what} | init | n | metric | replicates | shared - {baseline} [95% CI] | verdict |",
             "|---|---|---|---|---|---|---|"]
    for _, r in variant.sort_values(["metric", "n", "variant"]).iterrows():
        lines.append(f"| {r['variant']} | {r['init']} | {int(r['n'])} | {METRIC_LABELS.get(r['metric'], r['metric'])} | "
                     f"{int(r['replicates'])} | {format_difference(r)} | {r['verdict']} |")
    return "\n".join(lines)


def help_text() -> str:
    """The settings part of `--help`: the primary config, whose comments document every setting."""
    text = (CONF_DIR / "low_data.yaml").read_text()
    # Hydra fills the help template with string.Template: a literal $ (e.g. $REPARAM_DATA) must be doubled
    return "== What each setting does (experiments/conf/low_data.yaml) ==\n" + text.replace("$", "$$")


CONF_DIR = Path(__file__).resolve().parent / "conf"


@status_on_input_error
def run(cfg: Any) -> int:
    """Validate every setting (before a model or data file is touched), then run the stages `stage` names;
    returns the exit status (a user's mistake: one line on stderr, status 2). cfg: the composed config."""
    cfg = as_dictconfig(cfg)
    check_added_keys()  # `+low_data.tol=1` would otherwise be recorded and ignored
    validate(cfg)
    # one writer at a time: two chunks started together would train the same cells twice. The folder holds
    # the rows of several settings (e.g. top-K and every-layer), told apart by setting_id, so it is locked only.
    folder = acquire(repo_path(cfg.run_dir) / "low_data", field="run_dir") if cfg.stage != "report" else None
    work = budget_setting(cfg, only_checked=True) if cfg.budget_check.run else cfg
    try:
        if cfg.stage in ("train", "all"):
            train_stage(work)
        if cfg.stage in ("score", "all"):
            score_stage(work)
        if cfg.stage in ("report", "all"):
            report_stage(cfg)
    finally:
        if folder is not None:
            release(folder)
    return 0


main = hydra_main(run, "low_data", __file__)


if __name__ == "__main__":
    main()
