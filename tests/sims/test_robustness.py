"""`reparam robustness`: a Hydra multirun over truth.seed whose end writes the summary into the sweep folder.

Driven through the real command line on a tiny study (1 structure, 1 regime, 2 sizes, 2 replicates, 2 truths)."""
import io
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import pytest

from reparam.results import ResultLog
from reparam.validation import DataError

from .conftest import run_cli

TINY = ["structure=shared_linear", "regime=exact", "n_grid=[300,1000]", "replicates=2", "init=near_truth",
        "n_eval=2000", "threads=1", "workers=1", "progress=false"]
SUMMARY = ["results.csv", "robustness.csv", "robustness_summary.csv", "robustness.png", "robustness.pdf",
           "provenance.json"]


def lines(path):
    return len(path.read_bytes().splitlines())


def test_multirun_over_truths_summarizes_the_sweep_and_resumes(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["sims.robustness", "-m", "truth.seed=range(0,2)", *TINY, f"hydra.sweep.dir={sweep}"]
    first = run_cli(args)
    assert first.returncode == 0, first.stderr[-2000:]
    logs = [sweep / str(job) / "results.jsonl" for job in (0, 1)]
    assert [lines(log) for log in logs] == [4, 4]  # one record per fit: 2 sizes x 2 replicates
    for name in SUMMARY:
        assert (sweep / name).is_file(), name
    results = pd.read_csv(sweep / "results.csv")
    assert sorted(results.truth.unique()) == ["random-0", "random-1"] and len(results) == 8
    per_truth = pd.read_csv(sweep / "robustness.csv")
    assert set(per_truth.truth) == {"random-0", "random-1"}
    dist = pd.read_csv(sweep / "robustness_summary.csv")
    assert (dist[dist.error.isin(["voronoi_prefix", "l2_error"])].n_truths == 2).all()
    assert "slope distribution over random truths" in first.stdout
    # each job ran the main job's code path: its own results.csv holds exactly its truth's fits
    job0 = pd.read_csv(sweep / "0" / "results.csv")
    assert set(job0.truth) == {"random-0"} and len(job0) == 4

    before = (sweep / "robustness.csv").read_bytes()
    second = run_cli(args)  # the same sweep again: every job finds its fits, nothing is refitted
    assert second.returncode == 0, second.stderr[-2000:]
    assert [lines(log) for log in logs] == [4, 4]
    assert (sweep / "robustness.csv").read_bytes() == before

    # summarize=DIR rewrites the summary from the recorded fits, fits nothing and leaves no .hydra in DIR
    for name in ("robustness.csv", "robustness_summary.csv", "results.csv"):
        (sweep / name).unlink()
    third = run_cli(["sims.robustness", f"summarize={sweep}", "figures=false"])
    assert third.returncode == 0, third.stderr[-2000:]
    assert (sweep / "robustness.csv").read_bytes() == before
    assert [lines(log) for log in logs] == [4, 4]
    assert not (sweep / ".hydra").exists()

    # an unfinished job is left out (with a warning); jobs of different settings are never pooled
    from reparam.sims.robustness import summarize_folder

    log1 = sweep / "1" / "results.jsonl"
    full = log1.read_bytes()
    log1.write_bytes(b"".join(full.splitlines(keepends=True)[:-1]))
    out = io.StringIO()
    summarize_folder(sweep, figures=False, stream=out)
    assert "left out 1 unfinished job" in out.getvalue()
    assert set(pd.read_csv(sweep / "results.csv").truth) == {"random-0"}
    log1.write_bytes(full)
    config = sweep / "1" / ".hydra" / "config.yaml"
    config.write_text(config.read_text().replace("replicates: 2", "replicates: 1"))
    with pytest.raises(DataError, match=r"different settings: replicates \(2 vs 1\)"):
        summarize_folder(sweep, figures=False, stream=out)


def test_bad_robustness_inputs_stop_before_any_work(tmp_path):
    foreign = tmp_path / "foreign"
    ResultLog(foreign / "0" / "results.jsonl").extend([dict(truth="shared", structure="independent", n=4,
                                                            replicate=0, voronoi=0.1)])
    blocked = tmp_path / "blocked"
    (blocked / "robustness.csv").mkdir(parents=True)
    cases = [  # (arguments, text the one-line message must hold, folder that must not exist afterwards)
        (["-m", "truth.seed=range(0,0)"], "the sweep has no job", "s1"),
        (["-m", "truth.seed=0,1", "replicates=0"], "replicates=0 is invalid", "s2"),
        (["-m", "n_grid=[300,10000000000]"], "too large", "s4"),  # the config's own 20 truths are validated
        (["-m", f"summarize={tmp_path}"], "summarize is invalid with -m", "s5"),
        (["-m", "truth.seed=0", f"hydra.sweep.dir={foreign}"], "not a result log of the synthetic study", None),
        (["-m", "truth.seed=0", f"hydra.sweep.dir={blocked}"], "robustness.csv", None),
        ([f"summarize={tmp_path / 'nowhere'}"], "summarize=", None),
        (["truth.seed=0", f"reuse={tmp_path / 'nowhere.jsonl'}"], "reuse=", "r1"),
    ]

    def one(case):
        args, _, folder = case
        where = [f"hydra.sweep.dir={tmp_path / folder}", f"hydra.run.dir={tmp_path / folder}"] if folder else []
        flag = [a for a in args if a == "-m"]  # Hydra's flags before the overrides
        return run_cli(["sims.robustness", *flag, *TINY, *[a for a in args if a != "-m"], *where], timeout=120)

    with ThreadPoolExecutor(max_workers=3) as pool:
        procs = list(pool.map(one, cases))
    problems = []
    for (args, needle, folder), proc in zip(cases, procs):
        if proc.returncode != 2 or needle not in proc.stderr or "Traceback" in proc.stderr \
                or len(proc.stderr.strip().splitlines()) != 1:
            problems.append(f"{args}: exit {proc.returncode}, {proc.stderr[-400:]!r}")
        if folder and (tmp_path / folder).exists():
            problems.append(f"{args}: created {folder}")
    assert not problems, "\n".join(problems)
    assert not (foreign / "results.csv").exists()
