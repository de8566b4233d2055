"""`reparam sensitivity`, `reparam canonical` and `reparam bench` as Hydra apps: key=value settings, every bad input
stopped before any work with one line naming the field (exit status 2), and nothing written outside the folders the
user names (no outputs/<date>, no .hydra)."""
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
from omegaconf import OmegaConf

from reparam.results import ResultLog

from .conftest import run_cli

SENS = ["n_grid=[300,1000]", "replicates=2", "structures=[shared_linear]", "threads=1", "workers=1", "quiet=true"]


def lines(path):
    return len(path.read_bytes().splitlines())


def test_sensitivity_writes_only_into_out_and_reuses_fits(tmp_path):
    first = run_cli(["sims.sensitivity", f"out={tmp_path / 'a'}", *SENS], cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [
        "provenance.json", "results.jsonl", "sensitivity.csv", "sensitivity.log"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]  # no outputs/<date>, no .hydra
    table = pd.read_csv(tmp_path / "a" / "sensitivity.csv")
    assert len(table) == 3 * 2  # 3 variants x (voronoi_prefix, l2_error) for the one structure and regime
    # every fit of the second run is copied from the first one's log: nothing is refitted, the table is the same
    second = run_cli(["sims.sensitivity", f"out={tmp_path / 'b'}", f"reuse={tmp_path / 'a' / 'results.jsonl'}",
                      *SENS], cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "reused" in second.stdout and lines(tmp_path / "b" / "results.jsonl") == lines(
        tmp_path / "a" / "results.jsonl")
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "b" / "sensitivity.csv"), table)


def test_bad_inputs_of_the_study_apps_stop_before_any_work(tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    lm = tmp_path / "lm.jsonl"
    ResultLog(lm).extend([dict(truth="shared", structure="independent", n=4, replicate=0, voronoi=0.1)])
    new = tmp_path / "new"
    cases = [  # (arguments, text the one-line message must hold)
        (["sims.sensitivity", f"out={a_file}", *SENS], "out='"),
        (["sims.sensitivity", f"out={new}", f"reuse={tmp_path / 'nowhere.jsonl'}", *SENS], "reuse="),
        (["sims.sensitivity", f"out={new}", f"reuse={lm}", *SENS], "not a result log of the synthetic study"),
        (["sims.sensitivity", f"out={new}", *SENS, "replicates=0"], "replicates=0"),
        (["sims.sensitivity", f"out={new}", *SENS, "regimes=[under]"], "regimes='under'"),
        (["sims.sensitivity", f"out={new}", *SENS, "n_grid=[300,1000000000000]"], "too large"),
        (["sims.canonical", f"work={a_file}"], "work='"),
        (["sims.canonical", f"work={new}", "figures=/proc/x"], "figures='/proc/x'"),
        (["sims.bench", "threads=0"], "threads=0"),
        (["sims.bench", f"out={tmp_path}"], "out='"),
        (["sims.bench", "reuse=true"], "reuse=true is invalid without logs"),
        (["sims.bench", "+quick_mode=true"], "quick_mode is not a known setting"),
    ]
    with ThreadPoolExecutor(max_workers=3) as pool:
        procs = list(pool.map(lambda c: run_cli(c[0], cwd=tmp_path, timeout=120), cases))
    problems = [f"{args}: exit {p.returncode}, {p.stderr[-400:]!r}" for (args, needle), p in zip(cases, procs)
                if p.returncode != 2 or needle not in p.stderr or "Traceback" in p.stderr
                or len(p.stderr.strip().splitlines()) != 1]
    assert not problems, "\n".join(problems)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "lm.jsonl"]  # nothing created
    assert a_file.read_text() == "x"


def test_canonical_runs_each_step_with_the_new_command_syntax(tmp_path):
    from reparam.sims.canonical import CanonicalConf, steps

    work = tmp_path / "w"
    cfg = OmegaConf.structured(CanonicalConf(work=str(work)))
    main_log = work / "main" / "results.jsonl"
    assert steps(cfg) == [
        ("convergence", [f"hydra.run.dir={work / 'main'}", "figures=false"]),
        ("check", ["all=true", f"out={work / 'checks'}", f"log={main_log}", "quiet=true"]),
        ("sensitivity", [f"out={work / 'sensitivity'}", f"reuse={main_log}", "quiet=true"]),
        ("robustness", ["-m", f"hydra.sweep.dir={work / 'robustness'}", "progress=false"]),
    ]
    ResultLog(work / "robustness" / "results.jsonl").extend([dict(x=1)])  # the older one-log layout: reused
    assert steps(cfg)[-1][1][-1] == f"reuse={work / 'robustness' / 'results.jsonl'}"
    cfg.skip_robustness = True
    assert [command for command, _ in steps(cfg)] == ["convergence", "check", "sensitivity"]
    cfg.work = "/tmp/a,b"  # a comma would make a Hydra sweep: such paths are quoted
    assert steps(cfg)[0][1][0] == "hydra.run.dir='/tmp/a,b/main'"


def test_bench_records_its_command_line():
    from reparam.sims.bench import BenchConf, command_line

    cfg = OmegaConf.structured(BenchConf(quick=True, ns=[2000, 4000], logs="/tmp/x"))
    assert command_line(cfg) == "reparam bench ns=[2000,4000] quick=true logs=/tmp/x"
