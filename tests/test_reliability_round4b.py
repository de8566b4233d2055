"""Reliability, second round: planted-prefix sizes are estimated before any model is built, `reparam check` records
its run as finished only at the end, damaged input tables of check, minimax and figures are refused in one line
before any work; each command-line test fails on the code before the fix."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from reparam.validation import ConfigError, DataError

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ROOT / "figures"


def reparam(args, timeout=300, cwd=None):
    """`reparam ARGS` in a fresh process; CompletedProcess (text)."""
    return subprocess.run([sys.executable, "-m", "reparam.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ, HYDRA_FULL_ERROR="0"), cwd=cwd)


def lines(text):
    return [ln for ln in text.splitlines() if ln.strip()]


def records(folder):
    latest = json.loads((Path(folder) / "provenance.json").read_text())
    return latest.pop("history", []) + [latest]


# ------------------------------------------------------------------ planted-prefix: the size preflight

def planted_cfg(overrides=()):
    import reparam.experiments.planted_prefix  # noqa: F401  (the app's resolvers)

    with initialize_config_dir(config_dir=str(ROOT / "experiments" / "conf"), version_base="1.3"):
        return compose(config_name="planted_prefix", overrides=list(overrides))


TOO_LARGE = [(["base.d_model=1000000", "base.n_head=1"], "base.d_model=1000000", "memory"),
             (["planted.n_test=100000000"], "planted.n_test=100000000", "memory"),
             (["planted.seq_len=100000", "base.max_positions=100000"], "planted.seq_len=100000", "memory"),
             (["base.n_layer=100000"], "base.n_layer=100000", "memory"),
             (["base.n_layer=3000"], "base.n_layer=3000", "hours")]


@pytest.mark.parametrize("overrides,named,what", TOO_LARGE)
def test_a_planted_study_too_large_is_refused_naming_the_setting(overrides, named, what):
    from reparam.lm.planted import validate_study

    with pytest.raises(ConfigError) as refused:
        validate_study(planted_cfg(overrides))
    message = str(refused.value)
    assert message.startswith(f"{named} is too large") and what in message and "allow_large=true" in message
    validate_study(planted_cfg([*overrides, "allow_large=true"]))  # the way out the message names
    validate_study(planted_cfg([*overrides, "mode=check"]))  # the verdicts from recorded fits build no model


@pytest.mark.parametrize("study", ["smoke", "cpu", "asymptotic"])
@pytest.mark.parametrize("mode", ["run", "draw", "polish", "inverse"])
def test_the_documented_planted_studies_pass_the_size_preflight(study, mode):
    from reparam.lm.planted import validate_study
    from reparam.lm.planted.settings import resource_estimate

    polish = ["fit.warm_start=true"] if mode == "polish" else []  # polish continues the kept estimates
    settings = validate_study(planted_cfg([f"study={study}", f"mode={mode}", *polish]))
    estimate = resource_estimate(settings, mode)
    assert estimate["memory_bytes"] < 2 ** 30 and estimate["seconds"] < 3600  # MiB and minutes, not the limits


def test_planted_prefix_too_large_ends_in_one_line_before_its_folders(tmp_path):
    run = reparam(["planted-prefix", "base.d_model=1000000", "base.n_head=1", f"run_dir={tmp_path}/run",
                   f"out_dir={tmp_path}/out"], timeout=120)
    assert run.returncode == 2, run.stderr  # a RuntimeError traceback before the preflight sized the base
    (line,) = lines(run.stderr)
    assert line.startswith("config error: base.d_model=1000000 is too large for this machine: needs about"), line
    assert not (tmp_path / "run").exists() and not (tmp_path / "out").exists()


def test_a_planted_sweep_with_one_job_too_large_runs_no_job(tmp_path):
    run = reparam(["planted-prefix", "-m", "study=smoke", "base.n_layer=2,100000", f"run_dir={tmp_path}/run",
                   f"out_dir={tmp_path}/out", f"hydra.sweep.dir={tmp_path}/sweep"], timeout=120)
    assert run.returncode == 2, run.stderr
    assert "job 1 (" in run.stderr and "base.n_layer=100000 is too large" in run.stderr
    assert not (tmp_path / "run").exists() and not (tmp_path / "sweep").exists()


# ------------------------------------------------------------------ planted-prefix: what an interrupt keeps

def test_an_interrupted_planted_study_says_how_many_fits_are_kept(tmp_path, monkeypatch):
    from reparam.experiments import planted_prefix
    from reparam.app import interrupt_line
    from reparam.lm import planted as pl

    fit, calls = pl.PlantedStudy.fit, []

    def fit_then_interrupt(self, *args, **kwargs):
        calls.append(args)
        if len(calls) > 1:
            raise KeyboardInterrupt
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(pl.PlantedStudy, "fit", fit_then_interrupt)
    cfg = planted_cfg(["study=smoke", "study.ns=[4,8]", "study.replicates=[0,1,2]", "study.min_sizes=2",
                       "planted.structures=[independent]", "planted.regimes=[exact]",
                       f"run_dir={tmp_path}/run", f"out_dir={tmp_path}/out"])
    settings = pl.validate_study(cfg)
    with pytest.raises(KeyboardInterrupt):
        planted_prefix.fit_all(cfg, settings)
    line = interrupt_line()  # before: 'the results written so far are kept', with no count or folder
    assert line.startswith(f"interrupted: 1 of 6 fits are kept in {tmp_path / 'run'}; `"), line
    assert line.endswith("` resumes the run")


def test_a_damaged_warm_start_state_is_never_loaded(tmp_path, capsys):
    from reparam.experiments import planted_prefix
    from reparam.lm import planted as pl
    from reparam.results import ResultLog

    def study(folder, ns):
        cfg = planted_cfg(["study=smoke", f"study.ns={ns}", "study.replicates=[0]", "planted.structures=[independent]",
                           "planted.regimes=[exact]", "fit.warm_start=true", f"run_dir={folder}", f"out_dir={folder}/f"])
        planted_prefix.fit_all(cfg, pl.validate_study(cfg))
        return {row["n"]: row for row in ResultLog(folder / "replicate_0.jsonl").rows() if row["start_kind"] == "warm"}

    intact, damaged = tmp_path / "intact", tmp_path / "damaged"
    for folder in (intact, damaged):
        study(folder, "[4]")
    (state,) = damaged.glob("states/*/replicate_0/independent_exact_n4.pt")
    state.write_bytes(bytes(state.stat().st_size))  # zeroed, size unchanged: torch.load raised before the fix
    capsys.readouterr()
    assert 8 in study(intact, "[4,8]")  # the intact state is the warm start of the next size
    assert "fails its checksum" not in capsys.readouterr().err
    assert study(damaged, "[4,8]") == {}  # the damaged one is not loaded: random starts only
    (line,) = [ln for ln in capsys.readouterr().err.splitlines() if "fails its checksum" in ln]
    assert str(state) in line and line.endswith("the fit at n=8 starts from its random starts only")


def same_rows(case, other):
    """The rows of two cached inverse cases agree except their wall times (NaN where both are NaN)."""
    import pandas as pd

    pd.testing.assert_frame_equal(pd.DataFrame(case["rows"]).drop(columns="seconds"),
                                  pd.DataFrame(other["rows"]).drop(columns="seconds"))


def test_a_damaged_inverse_case_is_recomputed_not_drawn(tmp_path, capsys):
    from reparam.experiments import planted_prefix

    cfg = planted_cfg(["study=smoke", f"run_dir={tmp_path}/runs", f"out_dir={tmp_path}/fig", "mode=inverse",
                       "inverse.deltas=[3.0,0.1]", "inverse.max_iter=3", "inverse.sequences=4",
                       "inverse.random_starts=0", "inverse.structures=[independent]", "inverse.regimes=[over]",
                       "base.d_model=32", "base.vocab=48", "progress=false"])
    assert planted_prefix.run(cfg) == 0
    (case,) = (tmp_path / "runs" / "inverse").rglob("constant_query__*.json")  # its psi are finite
    good = json.loads(case.read_text())
    damaged = dict(good, rows=[dict(row, psi=row["psi"] + 1.0) for row in good["rows"]])  # an edited value
    case.write_text(json.dumps(damaged))
    capsys.readouterr()
    assert planted_prefix.run(cfg) == 0  # before: the edited psi was drawn into the tables as computed
    (line,) = [ln for ln in capsys.readouterr().err.splitlines() if "fails its checksum" in ln]
    assert str(case) in line and line.endswith("it is recomputed")
    same_rows(json.loads(case.read_text()), good)  # recomputed: the rows of the first run
    case.write_bytes(b"\x00" * 64)  # zeroed
    assert planted_prefix.run(cfg) == 0
    same_rows(json.loads(case.read_text()), good)


# ------------------------------------------------------------------ reparam check: provenance at the end

def test_check_records_running_until_its_checks_end_and_failed_when_they_fail(tmp_path, monkeypatch):
    from reparam import provenance
    from reparam.sims import check

    out = tmp_path / "out"
    seen = []

    def summarize_then_fail(*args, **kwargs):
        seen.append(records(out)[-1]["status"])
        raise RuntimeError("a check failed half way")

    monkeypatch.setattr(check, "summarize", summarize_then_fail)
    cfg = check.CheckConf(names=["shared-exact"], results=str(FIGURES / "results.csv"), out=str(out))
    with pytest.raises(RuntimeError):
        check.run(cfg)
    assert seen == ["running"]  # 'finished' before the fix: the record was written before the checks ran
    assert os.path.realpath(out) in provenance.end_open_records("failed", "RuntimeError: a check failed half way")
    assert records(out)[-1]["status"] == "failed"


# ------------------------------------------------------------------ damaged input tables

@pytest.fixture
def tables(tmp_path):
    """A foreign CSV, a binary file named .csv, and the committed results table with one damaged value."""
    (tmp_path / "foreign.csv").write_text("a,b\n1,2\n")
    (tmp_path / "binary.csv").write_bytes(b"\xff\xfe\x00 not text")
    text = (FIGURES / "results.csv").read_text().splitlines()
    header = text[0].split(",")
    row = text[3].split(",")
    row[header.index("n")] = "garbage"
    (tmp_path / "damaged.csv").write_text("\n".join(text[:3] + [",".join(row)] + text[4:]) + "\n")
    return tmp_path


def test_read_csv_table_names_the_file_the_column_and_the_line(tables):
    from reparam.validation import read_csv_table

    with pytest.raises(DataError, match=r"foreign\.csv lacks the columns \['n'\], read from it by the test"):
        read_csv_table(tables / "foreign.csv", ["a", "n"], "the test")
    with pytest.raises(DataError, match=r"binary\.csv is not a readable CSV table"):
        read_csv_table(tables / "binary.csv", ["a"], "the test")
    with pytest.raises(DataError, match=r"damaged\.csv line 4: n='garbage' is not a number"):
        read_csv_table(tables / "damaged.csv", ["n"], "the test", numeric=["n"])
    with pytest.raises(DataError, match=r"missing\.csv is missing \(make it\)"):
        read_csv_table(tables / "missing.csv", ["n"], "the test", "make it")
    assert len(read_csv_table(FIGURES / "results.csv", ["n"], "the test", numeric=["n", "voronoi_prefix"]))


@pytest.mark.parametrize("name,needle", [("foreign.csv", "lacks the columns"), ("binary.csv", "not a readable CSV"),
                                         ("damaged.csv", "line 4: n='garbage' is not a number")])
def test_check_refuses_a_damaged_results_table_before_its_folder(tables, name, needle):
    out = tables / "out"
    run = reparam(["check", "names=[shared-exact]", f"results={tables / name}", f"out={out}"], timeout=120)
    assert run.returncode == 2, run.stderr  # an AttributeError or UnicodeDecodeError traceback before the fix
    (line,) = lines(run.stderr)
    assert line.startswith(f"error: {tables / name}") and needle in line, line
    assert not out.exists()


@pytest.mark.parametrize("name,needle", [("foreign.csv", "lacks the columns"), ("binary.csv", "not a readable CSV")])
def test_planted_prefix_refuses_a_damaged_check_table_in_one_line(tables, name, needle):
    run = reparam(["planted-prefix", "mode=check", f"check_table={tables / name}"], timeout=120)
    assert run.returncode == 2, run.stderr  # a UnicodeDecodeError traceback, or 'no recorded fits', before the fix
    (line,) = lines(run.stderr)
    assert line.startswith(f"error: {tables / name}") and needle in line, line


def _minimax_inputs(folder: Path) -> Path:
    from reparam.minimax import INPUTS

    for rel in INPUTS.values():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes((FIGURES / rel).read_bytes())
    return folder


@pytest.mark.parametrize("damage,needle", [(b"\xff\xfe\x00", "is not a readable CSV table"),
                                           (b"x,y\n1,2\n", "lacks the columns")])
def test_minimax_refuses_a_damaged_input_table_in_one_line(tmp_path, damage, needle):
    figures = _minimax_inputs(tmp_path / "figures")
    (figures / "inverse-bound" / "inverse_bound.csv").write_bytes(damage)
    run = reparam(["minimax", f"figures={figures}", f"out={tmp_path / 'out'}"], timeout=120)
    assert run.returncode == 2, run.stderr  # a UnicodeDecodeError traceback before the fix
    (line,) = lines(run.stderr)
    assert "inverse_bound.csv" in line and needle in line, line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("where", ["inverse-bound/inverse_bound.csv", "results.csv"])
def test_figures_refuses_a_damaged_table_in_one_line(tables, where):
    folder = tables / "dir"
    (folder / "inverse-bound").mkdir(parents=True)
    for name in ("results.csv", "summary.csv", "inverse-bound/inverse_bound.csv"):
        (folder / name).write_bytes((FIGURES / name).read_bytes())
    damaged = tables / ("binary.csv" if where.startswith("inverse") else "damaged.csv")
    (folder / where).write_bytes(damaged.read_bytes())
    run = reparam(["figures", f"dir={folder}"], timeout=300)
    assert run.returncode == 2, run.stderr  # a traceback before the fix
    (line,) = lines(run.stderr)
    assert line.startswith(f"error: {folder / where}"), line
    assert not list(folder.glob("*.png"))


def test_readme_tables_refuses_an_unreadable_table_in_one_line(tmp_path):
    figures = tmp_path / "figures"
    for name in ("results.csv", "summary.csv"):
        (figures / name).parent.mkdir(parents=True, exist_ok=True)
        (figures / name).write_bytes((FIGURES / name).read_bytes())
    (figures / "sensitivity.csv").write_bytes(b"\xff\xfe\x00")
    page = tmp_path / "page.md"
    page.write_text("<!-- generated:sensitivity -->\nold\n<!-- /generated:sensitivity -->\n")
    run = reparam(["readme-tables", f"figures={figures}", f"readme={page}"], timeout=120)
    assert run.returncode == 2, run.stderr  # a UnicodeDecodeError traceback before the fix
    (line,) = lines(run.stderr)
    assert line.startswith(f"error: {figures / 'sensitivity.csv'} is not a readable CSV table"), line
    assert "old" in page.read_text()


def test_planted_polish_without_kept_estimates_is_refused_before_its_folder(tmp_path):
    run = reparam(["planted-prefix", "study=smoke", "mode=polish", f"run_dir={tmp_path}/run",
                   f"out_dir={tmp_path}/out"], timeout=120)
    assert run.returncode == 2, run.stderr
    (line,) = lines(run.stderr)
    assert line.startswith("config error: mode=polish is invalid with fit.warm_start=false"), line
    assert not (tmp_path / "run").exists()  # Hydra made the run folder before the check, in run()
