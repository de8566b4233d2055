"""The low-data protocol: its smoke run end to end (train -> score -> report, resumable), the paired
comparison on a known truth, the E2E metrics on hand-checkable cases, and its config errors."""
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir

from reparam.lm.compare import format_difference, mean_interval, paired_differences, score_summary
from reparam.lm.metrics import E2EScorer, e2e_metrics
from reparam.validation import ConfigError

from .conftest import DATA, needs_data

CONF = Path(__file__).resolve().parents[2] / "experiments" / "conf"
HAS_WEBNLG = (DATA / "webnlg2017" / "test" / "testdata_with_lex.xml").is_file()
HAS_COCO = shutil.which("java") is not None and __import__("importlib").util.find_spec("pycocoevalcap") is not None


def _cfg(tmp_path, extra=()):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="low_data", overrides=["setting=smoke", f"run_dir={tmp_path}/runs",
                                                          f"out_dir={tmp_path}/fig", *extra])


@needs_data
def test_protocol_smoke(tmp_path):
    """Both datasets (WebNLG when present), every structure and init, lr selection, beam search, scoring,
    paired table and figures; a second run recomputes nothing. CIDEr (the Java path) when pycocoevalcap
    and Java are there, BLEU only otherwise."""
    from reparam.experiments import low_data

    datasets = "[e2e,webnlg]" if HAS_WEBNLG else "[e2e]"
    metrics = ["bleu", "cider"] if HAS_COCO else ["bleu"]
    cfg = _cfg(tmp_path, ["stage=all", f"low_data.datasets={datasets}", f"low_data.metrics=[{','.join(metrics)}]"])
    assert cfg.model.name == "tiny" and not str(cfg.out_dir).startswith("figures")
    t0 = time.perf_counter()
    low_data.run(cfg)
    wall = time.perf_counter() - t0
    n_ds = 2 if HAS_WEBNLG else 1
    df = low_data.table(cfg)
    assert len(df) == n_ds * 2 * 5 * 2  # datasets x ns x structures x inits
    assert set(df.structure) == {"independent", "shared", "deep_shared", "embedding_only", "infix"}
    assert df[["test_nll", *metrics]].notna().all().all()
    assert (df.test_nll > 0).all() and df.n_test_items.eq(2).all()
    # shared had two candidate lrs: the selected one has the lower dev loss of the two, per cell and init
    sel = pd.read_csv(tmp_path / "fig" / "low_data_e2e_lr_selection.csv")
    assert set(sel[sel.structure == "shared"].lr) == {0.001, 0.01}
    paired = pd.read_csv(tmp_path / "fig" / "low_data_e2e_paired.csv")
    assert paired.verdict.str.startswith("insufficient").all()  # one replicate is never evidence
    assert paired[["ci_low", "ci_high"]].isna().all().all()  # ... and gives no interval
    assert "insufficient" in (tmp_path / "fig" / "low_data_e2e_paired.md").read_text()
    summary = pd.read_csv(tmp_path / "fig" / "low_data_e2e_summary.csv")
    assert summary["bleu_ci_low"].isna().all() and summary["bleu_mean"].notna().all()
    for name in ("low_data_e2e_bleu.png", "low_data_e2e_paired.png", "low_data_e2e_test_nll.png"):
        assert (tmp_path / "fig" / name).is_file()
    gens = list((tmp_path / "runs" / "low_data" / "generations").rglob("e2e_n4_r0_*.jsonl"))
    assert len(gens) == 1 and len(gens[0].read_text().splitlines()) == 10 * 2
    t0 = time.perf_counter()
    low_data.train_stage(cfg)  # resumable: every cell and score recorded, nothing recomputed
    low_data.score_stage(cfg)
    assert len(low_data.table(cfg)) == len(df) and time.perf_counter() - t0 < 0.2 * wall
    print(f"protocol smoke run: {wall:.1f}s")


@needs_data
def test_selection_of_the_dev_best_lr_and_chunks(tmp_path):
    """Each (cell, structure, init) marks exactly the candidate with the lowest dev loss; a run cut by
    max_minutes records whole cells only, and the same command continues with the next cell."""
    from reparam.experiments import low_data
    from reparam.results import ResultLog

    cfg = _cfg(tmp_path, ["low_data.datasets=[e2e]", "low_data.ns=[4,8]", "low_data.structures=[shared,independent]",
                          "low_data.inits=[random]", "low_data.metrics=[bleu]", "max_minutes=0.001"])
    results = tmp_path / "runs" / "low_data" / "results.jsonl"
    low_data.train_stage(cfg)  # the first cell always starts; the second would not end within 0.06 s
    assert sorted({r["n"] for r in ResultLog(results).rows()}) == [4]
    low_data.train_stage(cfg)
    assert sorted(r["n"] for r in ResultLog(results).rows()) == [4, 4, 8, 8]
    # a cell run in parts: adding a structure trains only the new one, the recorded ones are kept
    more = _cfg(tmp_path, ["low_data.datasets=[e2e]", "low_data.ns=[4]", "low_data.structures=[shared,independent,infix]",
                           "low_data.inits=[random]", "low_data.metrics=[bleu]"])
    low_data.train_stage(more)
    rows = ResultLog(results).rows()
    assert len(rows) == 5 and [r["structure"] for r in rows[4:]] == ["infix"] and rows[4]["members"] == 1
    sel = pd.DataFrame(ResultLog(tmp_path / "runs" / "low_data" / "selection.jsonl").rows())
    for _, g in sel.groupby(["n", "structure", "init"]):
        assert g.selected.sum() == 1
        assert g.loc[g.selected, "best_dev"].iloc[0] == g.best_dev.min()


@needs_data
def test_report_sets_top_k_against_every_layer_on_common_cells(tmp_path):
    """With all-layer rows recorded beside the top-K ones (same run folder, told apart by setting id), the top-K
    report adds shared - independent under both placements on the cells both recorded, and the all-layer chunks'
    cost apart from the top-K study's own."""
    from reparam.experiments import low_data

    common = ["low_data.datasets=[e2e]", "low_data.structures=[independent,shared]", "low_data.inits=[random]",
              "low_data.metrics=[bleu]", "low_data.replicates=[0]"]
    top = _cfg(tmp_path, [*common, "low_data.ns=[4,8]", "low_data.top_layers=1", "stage=all"])
    every = _cfg(tmp_path, [*common, "low_data.ns=[4]", "stage=train"])
    assert low_data.setting_id(top) != low_data.setting_id(every)
    low_data.run(every)
    low_data.run(top)
    fig = tmp_path / "fig"
    variant = pd.read_csv(fig / "low_data_e2e_variant.csv")
    assert set(variant.variant) == {"top 1 layers", "every layer"} and set(variant.n) == {4}  # n=8: top-K only
    assert set(variant.metric) == {"test_nll"}  # the all-layer rows were never scored: no BLEU to compare
    rows = low_data.table(top).set_index(["n", "structure"])
    own = variant[(variant.variant == "top 1 layers")].set_index("metric").loc["test_nll"]
    assert own.mean_diff == pytest.approx(rows.loc[(4, "shared"), "test_nll"] - rows.loc[(4, "independent"), "test_nll"])
    assert variant.verdict.str.startswith("insufficient").all()
    chunks, every_chunks = pd.read_csv(fig / "low_data_e2e_chunks.csv"), pd.read_csv(fig / "low_data_e2e_variant_chunks.csv")
    assert set(chunks.setting_id) == {low_data.setting_id(top)} and set(every_chunks.setting_id) == {low_data.setting_id(every)}
    assert "every layer" in (fig / "low_data_e2e_variant.md").read_text()


@needs_data
def test_budget_check_trains_the_checked_structure_alone_and_sets_shared_against_both_budgets(tmp_path):
    """budget_check.run=true trains only budget_check.structure, with its own steps and lr grid (a setting of its own:
    the protocol's rows are untouched), and the report sets shared - that structure at both budgets on common cells."""
    from reparam.experiments import low_data

    common = ["low_data.datasets=[e2e]", "low_data.structures=[independent,shared]", "low_data.inits=[random]",
              "low_data.metrics=[bleu]", "low_data.replicates=[0]", "low_data.ns=[4]", "budget_check.max_steps=4",
              "budget_check.lr_grid=[0.02]"]
    own = _cfg(tmp_path, [*common, "stage=all"])
    check = _cfg(tmp_path, [*common, "stage=all", "budget_check.run=true"])
    assert low_data.run(check) == 2  # the check first: trained and scored, but no protocol rows to report yet
    assert low_data.run(own) == 0
    checked = low_data.table(low_data.budget_setting(own))
    assert list(checked.structure) == ["independent"] and checked.lr.tolist() == [0.02]
    assert low_data.setting_id(low_data.budget_setting(own)) != low_data.setting_id(own)
    rows = low_data.table(own).set_index("structure")
    assert set(rows.index) == {"independent", "shared"} and rows.loc["independent", "lr"] == 0.01
    result = pd.read_csv(tmp_path / "fig" / "low_data_e2e_budget_check.csv")
    assert set(result.variant) == {"independent: 2 steps, lr in [0.01]", "independent: 4 steps, lr in [0.02]"}
    by = result[result.metric == "test_nll"].set_index("variant").mean_diff
    shared = rows.loc["shared", "test_nll"]
    assert by["independent: 2 steps, lr in [0.01]"] == pytest.approx(shared - rows.loc["independent", "test_nll"])
    assert by["independent: 4 steps, lr in [0.02]"] == pytest.approx(shared - checked.test_nll.iloc[0])
    assert set(result.metric) == {"test_nll", "bleu"}  # the check's outputs were scored by its own stage=all
    lr = pd.read_csv(tmp_path / "fig" / "low_data_e2e_budget_check_lr.csv")
    assert lr.cells.tolist() == [1] and lr.structure.tolist() == ["independent"]
    assert "independent: 4 steps" in (tmp_path / "fig" / "low_data_e2e_budget_check.md").read_text()


def test_budget_diagnostics_count_grid_edges_and_runs_still_improving_at_the_cap():
    """Per structure and n, from the candidates' rows: the selected lr at the grid's top, the best dev loss at the
    step cap, and the mean dev loss at step 0 and at its best, over the cells (a hand-made truth)."""
    import json

    from reparam.lm.compare import budget_diagnostics

    rows = []
    for rep, (pick, best_step) in enumerate([(0.01, 100), (0.01, 60), (0.003, 100)]):
        for lr in (0.003, 0.01):
            rows.append({"dataset": "e2e", "n": 50, "replicate": rep, "structure": "independent", "init": "words",
                         "lr": lr, "selected": lr == pick, "best_dev": 2.0 + rep, "best_step": best_step,
                         "dev_curve": json.dumps([[0, 3.0 + rep], [best_step, 2.0 + rep]])})
    out = budget_diagnostics(pd.DataFrame(rows), max_steps=100).iloc[0]
    assert (out.cells, out.largest_lr_selected, out.best_at_cap) == (3, 2, 2)
    assert (out.dev_start, out.dev_best) == pytest.approx((4.0, 3.0))


def test_config_errors_name_the_field(tmp_path):
    from reparam.experiments import low_data

    cases = [("low_data.structures=[independent,prefix]", "low_data.structures"),
             ("low_data.lr_grid.shared=[0.0]", "low_data.lr_grid.shared"), ("low_data.fit.warmup=10", "low_data.fit.warmup"),
             ("stage=fit", "stage"), ("low_data.metrics=[bleu,spice]", "low_data.metrics"),
             ("budget_check.structure=prefix", "budget_check.structure"), ("budget_check.max_steps=0", "budget_check.max_steps"),
             ("budget_check.lr_grid=[-1.0]", "budget_check.lr_grid"), ("budget_check.run=maybe", "budget_check.run")]
    if not torch.cuda.is_available():
        cases.append(("device=cuda", "device"))  # a clear error, not a CUDA traceback later
    for override, field in cases:
        with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
            low_data.validate(_cfg(tmp_path, [override]))


def test_paired_differences_on_a_known_truth():
    """Shared is 2 points better in every replicate: the interval is [2, 2]; a noisy zero effect is unclear."""
    rng = np.random.default_rng(0)
    rows = []
    for r in range(6):
        base = rng.normal(50, 5)
        rows += [{"init": "random", "n": 50, "replicate": r, "structure": "independent", "bleu": base, "test_nll": 2.0},
                 {"init": "random", "n": 50, "replicate": r, "structure": "shared", "bleu": base + 2.0,
                  "test_nll": 2.0 + rng.normal(0, 0.1)}]
    p = paired_differences(pd.DataFrame(rows), ["bleu", "test_nll"]).set_index("metric")
    assert p.loc["bleu", "mean_diff"] == pytest.approx(2.0) and p.loc["bleu", "ci_low"] == pytest.approx(2.0)
    assert p.loc["bleu", "verdict"] == "shared better"
    assert p.loc["test_nll", "ci_low"] < 0 < p.loc["test_nll", "ci_high"]
    assert p.loc["test_nll", "verdict"] == "no clear difference"
    p2 = paired_differences(pd.DataFrame(rows[:4]), ["bleu"])
    assert p2.verdict.iloc[0].startswith("insufficient")


def test_e2e_metrics_hand_cases():
    refs = [["The Vaults is a pub near Cafe Adriatic.", "There is a pub called The Vaults."], ["Hello there, friend!"]]
    same = ["The Vaults is a pub near Cafe Adriatic.", "Hello there, friend!"]
    m = e2e_metrics(same, refs, ("bleu", "nist"))
    assert m["bleu"] == pytest.approx(100.0)
    # case-insensitive, as the E2E script: lowercasing the outputs changes nothing
    assert e2e_metrics([s.lower() for s in same], refs, ("bleu", "nist")) == pytest.approx(m)
    assert e2e_metrics(["a dog", "xyz"], refs, ("bleu",))["bleu"] < 5
    with pytest.raises(ValueError, match="spice"):
        E2EScorer(("bleu", "spice"))


@pytest.mark.skipif(not HAS_COCO, reason="needs pycocoevalcap (reparam[lm-coco]) and Java")
def test_coco_metrics_perfect_and_worse():
    refs = [["The Vaults is a pub near Cafe Adriatic.", "There is a pub called The Vaults."], ["Hello there, friend!"],
            ["Alimentum serves cheap Chinese food."]]
    same = [r[0] for r in refs]
    other = ["The pub is near a cafe.", "Goodbye, friend.", "Chinese food is served."]
    s = E2EScorer(("rouge_l", "cider")).score_many({"same": same, "other": other}, refs)
    assert s["same"]["rouge_l"] == pytest.approx(100.0)
    assert s["other"]["rouge_l"] < s["same"]["rouge_l"] and s["other"]["cider"] < s["same"]["cider"]


@pytest.mark.slow
@pytest.mark.skipif(not HAS_COCO, reason="needs pycocoevalcap (reparam[lm-coco]) and Java")
def test_meteor_runs():
    refs = [["The Vaults is a pub near Cafe Adriatic."], ["Hello there, friend!"]]
    s = E2EScorer(("meteor",)).score_many({"same": [r[0] for r in refs], "other": ["A pub.", "Bye."]}, refs)
    assert s["same"]["meteor"] > 90 and s["other"]["meteor"] < s["same"]["meteor"]


# ------------------------------------------------------------------ report: intervals and figures of few replicates


def _scores(replicates: int, ns=(50, 100, 200, 500)) -> pd.DataFrame:
    rng = np.random.default_rng(replicates)
    rows = []
    for r in range(replicates):
        for n in ns:
            for k, s in enumerate(["independent", "shared"]):
                b = 40 + 5 * np.log(n / 50) + 2 * k + rng.normal(0, 1)
                rows.append({"init": "random", "n": n, "replicate": r, "structure": s, "bleu": b, "rouge_l": b + 20,
                             "test_nll": 2.0 - 0.05 * k + rng.normal(0, 0.01)})
    return pd.DataFrame(rows)


def test_two_replicates_give_no_interval():
    """With 2 seeds a bootstrap only reshuffles two points (it printed '+0.22 [+0.22, +0.23]'), and z = 1.96 is no
    interval either: below 3 replicates both the paired difference and the score mean get none, and say so."""
    from scipy import stats

    p = paired_differences(_scores(2), ["bleu"])
    assert p[["ci_low", "ci_high"]].isna().all().all() and p.verdict.str.startswith("insufficient").all()
    text = format_difference(p.iloc[0])
    assert "insufficient" in text and "[" not in text
    p3 = paired_differences(_scores(3), ["bleu"])
    assert p3[["ci_low", "ci_high"]].notna().all().all() and "[" in format_difference(p3.iloc[0])
    assert np.isnan(mean_interval([1.0, 2.0])[1])
    mean, lo, hi = mean_interval([1.0, 2.0, 4.0])
    assert (lo, hi) == pytest.approx(stats.t.interval(0.95, 2, loc=mean, scale=stats.sem([1.0, 2.0, 4.0])))
    summary = score_summary(_scores(2), ["bleu"])
    assert summary["bleu_ci_low"].isna().all() and summary["replicates"].eq(2).all()
    small = format_difference({"mean_diff": 2.1e-4, "ci_low": 1.0e-4, "ci_high": 3.2e-4, "replicates": 3})
    assert small == "+0.00021 [+0.00010, +0.00032]"  # never '+0.00 [+0.00, +0.00]'


@pytest.mark.parametrize("width", [3.5, 7.0])
def test_score_figures_are_linear_with_ticks_at_the_measured_n(width):
    """A bounded score (BLEU) on a LINEAR axis within its range, n ticks at the measured n only, no band and an
    'insufficient' legend with 2 replicates, a band with 3, and a panel without any finite score still drawn
    (with a note) instead of an empty log-scaled plot; the figure no wider than asked."""
    from matplotlib.collections import PolyCollection

    from reparam.lm.metrics import SCORE_RANGES
    from reparam.plots import low_data_paired_figure, low_data_scores_figure, plt

    for replicates in (2, 3):
        d = _scores(replicates)
        d2 = pd.concat([d, d.assign(init="words", bleu=np.nan)])  # a panel with no score at all
        summary = score_summary(d2, ["bleu", "test_nll"])
        fig = low_data_scores_figure(summary, "bleu", ylabel="BLEU", title="e2e: BLEU", width=width,
                                     bounds=SCORE_RANGES["bleu"])
        axes = [ax for ax in fig.axes if ax.get_visible()]
        assert len(axes) == 2
        for ax in axes:
            assert ax.get_yscale() == "linear" and ax.get_xscale() == "log"
            assert list(ax.get_xticks()) == [50, 100, 200, 500]
            assert [t.get_text() for t in ax.get_xticklabels()] == ["50", "100", "200", "500"]
            low, high = ax.get_ylim()
            assert 0 <= low < high <= 100
        bands = [c for c in axes[0].collections if isinstance(c, PolyCollection)]
        legend = " ".join(t.get_text() for t in fig.legends[0].get_texts())
        assert bool(bands) == (replicates >= 3) and ("insufficient" in legend) == (replicates < 3)
        assert "no finite values" in " ".join(t.get_text() for t in axes[1].texts)
        assert "slope" not in legend.lower()
        fig.canvas.draw()
        assert fig.get_tightbbox(fig.canvas.get_renderer()).width <= width + 0.05
        plt.close(fig)
        paired = paired_differences(d, ["bleu", "test_nll"])
        fig = low_data_paired_figure(paired, ["bleu", "test_nll"], title="paired", width=width)
        assert all(ax.get_yscale() == "linear" for ax in fig.axes)
        assert bool(fig.axes[0].containers) == (replicates >= 3)  # error bars only from >= 3 replicates
        fig.canvas.draw()
        assert fig.get_tightbbox(fig.canvas.get_renderer()).width <= width + 0.05
        plt.close(fig)
        # a single n and two structures: the dodged markers sit well inside the axis, not at its edges
        one_n = pd.DataFrame([dict(init="random", n=50, structure=s, baseline="independent", metric="bleu",
                                   mean_diff=v, ci_low=v - 1, ci_high=v + 1) for s, v in (("shared", 2.0),
                                                                                          ("embedding_only", -3.0))])
        fig = low_data_paired_figure(one_n, ["bleu"], title="paired", width=width)
        lo, hi = fig.axes[0].get_xlim()
        xs = np.concatenate([line.get_xdata() for line in fig.axes[0].get_lines() if len(line.get_xdata())])
        xs = xs[xs > 2]  # not the line at 0 (drawn in axes coordinates)
        assert lo < xs.min() / 1.3 and hi > xs.max() * 1.3
        plt.close(fig)
