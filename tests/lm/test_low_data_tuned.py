"""The per-n tuned low-data protocol: the edge-extension rule (by hand and on a tiny model), convergence status,
resumable runs, stable setting ids of the recorded studies, and the preflight check of low_data.top_layers."""
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from reparam.lm.low_data.tuned import Tuning, extension_lr, run_status
from reparam.validation import ConfigError

from .conftest import needs_data

CONF = Path(__file__).resolve().parents[2] / "experiments" / "conf"
ROOT = Path(__file__).resolve().parents[2]


def _cfg(overrides):
    import reparam.experiments.low_data  # noqa: F401  (registers the app's Hydra config groups)

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="low_data", overrides=list(overrides))


def _tuning(dev_by_lr: dict[float, float], grid=(0.003, 0.01, 0.03), max_extensions=3) -> Tuning:
    runs = {lr: {"best_dev": d, "run_index": k} for k, (lr, d) in enumerate(dev_by_lr.items())}
    return Tuning(sorted(grid), runs, max_extensions)


def test_the_selection_is_extended_outward_until_interior():
    assert extension_lr([0.003, 0.01, 0.03], upward=True) == 0.09
    assert extension_lr([0.003, 0.01, 0.03], upward=False) == 0.0009
    assert extension_lr([8e-6, 2.5e-5, 8e-5], upward=False) == 2.56e-6  # the ratio of the two outermost values
    incomplete = _tuning({0.003: 2.0, 0.01: 1.0})
    assert incomplete.selected() is None and incomplete.next_lr() == 0.03 and not incomplete.done
    top = _tuning({0.003: 2.0, 0.01: 1.5, 0.03: 1.0})
    assert (top.selected(), top.edge(), top.next_lr(), top.done) == (0.03, "top", 0.09, False)
    extended = _tuning({0.003: 2.0, 0.01: 1.5, 0.03: 1.0, 0.09: 1.2})
    assert (extended.selected(), extended.edge(), extended.done) == (0.03, None, True)
    assert extended.lr_columns()["lr_interior"] and extended.extensions == [0.09]
    bottom = _tuning({0.003: 1.0, 0.01: 1.5, 0.03: 2.0})
    assert (bottom.edge(), bottom.next_lr()) == ("bottom", 0.0009)
    exhausted = _tuning({0.003: 2.0, 0.01: 1.5, 0.03: 1.0, 0.09: 0.9}, max_extensions=1)
    assert exhausted.done and exhausted.edge() == "top" and not exhausted.lr_columns()["lr_interior"]
    tie = _tuning({0.003: 1.0, 0.01: 1.0, 0.03: 2.0})
    assert tie.selected() == 0.003  # a tie keeps the smaller lr


@pytest.mark.parametrize("best_step, stopped_by, diverged, status", [
    (40, "patience", False, "converged"), (20, "patience", False, "best at first check"),
    (0, "patience", False, "best at step 0"), (400, "cap", False, "best at cap"), (380, "cap", False, "stopped at cap"),
    (40, "diverged", True, "diverged")])
def test_run_status(best_step, stopped_by, diverged, status):
    assert run_status(best_step, stopped_by, diverged, eval_every=20, max_steps=400) == status


def test_the_recorded_studies_keep_their_setting_ids():
    """New settings hold the value every earlier run had, so the committed rows stay this setting's rows."""
    from reparam.lm.low_data.settings import setting_id

    assert setting_id(_cfg(["setting=cpu"])) == "6e966e1c05a8"  # top-6 CPU edition (figures/lm/low_data/cpu)
    assert setting_id(_cfg(["setting=cpu", "low_data.top_layers=null"])) == "ff70061e7a36"  # its all-layer check
    study = _cfg(["setting=cpu_all_layers"])
    assert setting_id(study) not in ("6e966e1c05a8", "ff70061e7a36")
    # the choice of cells and speed settings are not part of it; the schedule and the references are
    assert setting_id(_cfg(["setting=cpu_all_layers", "low_data.ns=[50,100,200,500]", "low_data.fit.eval_rows=8"])) == \
        setting_id(study)
    assert setting_id(_cfg(["setting=cpu_all_layers", "low_data.fit.schedule=linear"])) != setting_id(study)
    assert setting_id(_cfg(["setting=cpu_all_layers", "low_data.test.references=all"])) != setting_id(study)
    # its first edition checked the dev loss every 20 steps; its 4 runs keep that edition's id
    assert setting_id(_cfg(["setting=cpu_all_layers", "low_data.fit.eval_every=20", "low_data.fit.eval_unit=steps"])) \
        == "48d47f3f6e2d"


def test_dev_checks_per_epoch_are_whole_steps_of_the_runs_n():
    """fit.eval_unit=epochs: a check every ceil(eval_every * n / batch) steps, the batch capped at n; the
    FitConfig of a run gets the steps, and a unit other than steps or epochs is refused by name."""
    from reparam.lm.low_data.settings import eval_every_steps, fit_config, validate

    fit = _cfg(["setting=cpu_all_layers"]).low_data.fit
    assert [eval_every_steps(fit, n) for n in (50, 100, 200, 500, 3)] == [7, 13, 25, 63, 1]
    assert fit_config(fit, 50, seed=2).eval_every == 7 and fit_config(fit, 50, seed=2).seed == 2
    steps = _cfg(["setting=cpu_all_layers", "low_data.fit.eval_unit=steps", "low_data.fit.eval_every=20"]).low_data.fit
    assert [eval_every_steps(steps, n) for n in (50, 200)] == [20, 20]
    with pytest.raises(ConfigError, match="low_data.fit.eval_unit"):
        validate(_cfg(["setting=cpu_all_layers", "stage=report", "low_data.fit.eval_unit=tokens"]))


def test_the_all_layer_study_setting():
    p = _cfg(["setting=cpu_all_layers"]).low_data
    assert p.top_layers is None and list(p.structures) == ["independent", "shared"] and list(p.inits) == ["words"]
    assert p.lr_selection == "per_n" and all(len(p.lr_grid[s]) >= 3 for s in p.structures)
    assert p.replicates_by_n[50] >= 5 and all(p.replicates_by_n[n] >= 3 for n in p.ns)
    assert p.fit.schedule == "constant" and p.test.references == "first" and p.fit.eval_unit == "epochs"


def _tiny(tmp_path, extra=()):
    return _cfg(["setting=smoke", f"run_dir={tmp_path}/runs", f"out_dir={tmp_path}/fig", "low_data.datasets=[e2e]",
                 "low_data.ns=[4]", "low_data.replicates_by_n={4: 2}", "low_data.structures=[independent,shared]",
                 "low_data.inits=[words]", "low_data.lr_selection=per_n",
                 # independent: a grid far too small to move in 4 steps, so its best is always the largest lr
                 "low_data.lr_grid.independent=[1e-4,2e-4,4e-4]", "low_data.lr_grid.shared=[0.001,0.01,0.1]",
                 "low_data.tuning.max_extensions=2", "low_data.fit.max_steps=4", "low_data.fit.eval_every=2",
                 "low_data.fit.schedule=constant", "low_data.test.references=first", "low_data.test.num_beams=1",
                 "low_data.metrics=[bleu]", *extra])


@needs_data
def test_tiny_model_edge_extension_reuse_and_resume(tmp_path):
    """On a tiny model: a selection at the top edge is extended (each extension a recorded run) up to
    max_extensions and the row says the lr is not interior; the other replicate reuses the selected lr; a chunk
    cut by max_minutes runs whole runs only and the same command continues; result rows lost after their runs
    were recorded are derived again; a finished study recomputes nothing."""
    from reparam.experiments import low_data
    from reparam.results import ResultLog

    cfg = _tiny(tmp_path, ["max_minutes=0.0001"])
    run = tmp_path / "runs" / "low_data"
    low_data.train_stage(cfg)  # the first run always starts; the next would not end within 6 ms
    assert len(ResultLog(run / "runs.jsonl").rows()) == 1
    low_data.train_stage(_tiny(tmp_path))
    runs = pd.DataFrame(ResultLog(run / "runs.jsonl").rows())
    ind = runs[(runs.structure == "independent") & (runs.replicate == 0)]
    assert list(ind.lr) == [1e-4, 2e-4, 4e-4, 8e-4, 1.6e-3]  # the grid, then two extensions upward, in order
    sel = pd.DataFrame(ResultLog(run / "selection.jsonl").rows())
    s_ind = sel[sel.structure == "independent"].set_index("lr")
    assert s_ind.loc[1.6e-3, "selected"] and list(s_ind.extension) == [0, 0, 0, 1, 2]
    res = pd.DataFrame(ResultLog(run / "results.jsonl").rows()).set_index(["structure", "replicate"])
    assert len(res) == 4 and res.loc[("independent", 0), "lr_extensions"] == 2
    assert not res.loc[("independent", 0), "lr_interior"]
    assert json.loads(res.loc[("independent", 0), "lr_extended_to"]) == [8e-4, 1.6e-3]
    for s in ("independent", "shared"):  # the other replicate reuses the lr tuned on replicate 0
        assert res.loc[(s, 1), "lr"] == res.loc[(s, 0), "lr"] and res.loc[(s, 1), "lr_source"].startswith("reused")
        assert runs[(runs.structure == s) & (runs.replicate == 1)].shape[0] == 1
    for _, r in res.iterrows():  # every row says where its best step lies
        assert r.status == run_status(r.best_step, r.stopped_by, r.diverged, 2, 4) and r.converged == (r.status == "converged")
        assert (r.first_check, r.cap) == (2, 4)
    # a chunk killed after a run was recorded but before its result row: the next start derives it
    (run / "results.jsonl").unlink()
    low_data.train_stage(_tiny(tmp_path))
    again = pd.DataFrame(ResultLog(run / "results.jsonl").rows()).set_index(["structure", "replicate"])
    assert len(ResultLog(run / "runs.jsonl").rows()) == len(runs)
    pd.testing.assert_series_equal(again.sort_index().test_nll, res.sort_index().test_nll)
    low_data.score_stage(_tiny(tmp_path))
    assert len(low_data.table(_tiny(tmp_path))) == 4
    low_data.report_stage(_tiny(tmp_path))  # the study's tables, figure and paragraph, from the rows only
    fig = tmp_path / "fig"
    study = pd.read_csv(fig / "low_data_e2e_study.csv")
    assert len(study) == 4 and {"lr_interior", "lr_extensions", "status", "converged", "best_step", "cap"} <= set(study)
    assert (fig / "low_data_e2e_efficiency.png").is_file() and (fig / "low_data_e2e_efficiency.csv").is_file()
    answer = (fig / "low_data_e2e_answer.md").read_text()
    assert "insufficient (2 paired replicates" in answer and "a tiny random GPT-2" in answer  # 2 < 3 replicates
    assert "95% paired t" in (fig / "low_data_e2e_paired.md").read_text()


def test_top_layers_beyond_the_model_is_refused_before_any_work(tmp_path):
    from reparam.lm.low_data.settings import validate

    with pytest.raises(ConfigError, match=r"low_data\.top_layers=3 .*has 2 layers"):
        validate(_cfg(["setting=smoke", "low_data.top_layers=3", "low_data.structures=[independent]"]))
    # a sweep: every job is checked before the first starts, so nothing is written
    out = subprocess.run([sys.executable, "-m", "reparam.cli", "low-data", "-m", "setting=smoke",
                          "low_data.structures=[independent]", "low_data.top_layers=1,5", f"run_dir={tmp_path}/r",
                          f"out_dir={tmp_path}/f", f"hydra.sweep.dir={tmp_path}/h"],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 2 and "low_data.top_layers=5" in out.stderr and "2 layers" in out.stderr
    assert not (tmp_path / "r").exists()


def test_a_setting_the_schema_does_not_know_is_refused():
    from reparam.lm.low_data.settings import LowDataSettings, read_settings, validate

    with pytest.raises(ConfigError, match=r"low_data\.fit\.patiense is not a known setting"):
        validate(_cfg(["setting=smoke", "+low_data.fit.patiense=3"]))
    typed = read_settings(_cfg(["setting=cpu_all_layers", "stage=report"]))
    assert isinstance(typed, LowDataSettings) and typed.fit.schedule == "constant" and typed.tuning.max_extensions == 3
