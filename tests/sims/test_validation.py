"""Every invalid config value stops the main job before any work: non-zero exit, an error that names the
field, the value and what is allowed, and no results file. Driven through the real command line."""
from concurrent.futures import ThreadPoolExecutor

import pytest

from .conftest import run_cli

# (override, text that must appear in the error)
BAD_INPUTS = [
    ("n_grid=[300,100]", "n_grid"),                       # not sorted
    ("n_grid=[300,300]", "n_grid"),                       # repeated
    ("n_grid=[0,100]", "n_grid"),                         # n < 1
    ("n=0", "n=0"),                                       # single n < 1
    ("replicates=0", "replicates=0"),
    ("replicates=ten", "replicates"),                     # type (Hydra)
    ("seed=-1", "seed=-1"),
    ("regime.extra_atoms=0", "extra_atoms=0"),            # fitted atoms must exceed true atoms
    ("truth.noise=-0.1", "truth.noise=-0.1"),
    ("truth.kind=fancy", "truth.kind='fancy'"),
    ("truth.min_separation=-1.0", "min_separation"),
    ("structure.names=[transformer]", "structures='transformer'"),
    ("structure.activation=swish", "activation='swish'"),
    ("regime.names=[under]", "regimes='under'"),
    ("structure=nonexistent", "nonexistent"),             # unknown group option (Hydra)
    ("optimiser.max_iter=0", "max_iter"),
    ("optimiser.gap_tol=-1.0", "gap_tol"),
    ("init.mode=bogus", "init.mode='bogus'"),
    ("init.n_starts=0", "init.n_starts=0"),
    ("n_eval=0", "n_eval=0"),
    ("threads=0", "threads=0"),
]


def _run(case, tmp_path):
    override, _ = case
    out = tmp_path / override.replace("/", "_").replace("=", "-").replace("[", "").replace("]", "").replace(",", "_")
    proc = run_cli(["sims.convergence", override, f"hydra.run.dir={out}", "progress=false"], timeout=120)
    return out, proc


FAST = 16  # the first 16 run in the default suite (each is a fresh interpreter: ~3 s), the rest are `slow`


@pytest.mark.parametrize("cases", [pytest.param(BAD_INPUTS[:FAST], id="first16"),
                                   pytest.param(BAD_INPUTS[FAST:], id="rest", marks=pytest.mark.slow)])
def test_bad_inputs_stop_before_any_work(tmp_path, cases):
    assert len(BAD_INPUTS[:FAST]) >= 15
    with ThreadPoolExecutor(max_workers=3) as pool:
        outcomes = list(pool.map(lambda c: _run(c, tmp_path), cases))
    problems = []
    for (override, needle), (out, proc) in zip(cases, outcomes):
        text = proc.stdout + proc.stderr
        if proc.returncode == 0:
            problems.append(f"{override}: exit status 0")
        if needle not in text:
            problems.append(f"{override}: error does not mention {needle!r}: {text[-400:]}")
        for name in ("results.jsonl", "results.csv", "summary.csv"):
            if (out / name).exists():
                problems.append(f"{override}: left {name}")
        if "[sweep]" in text:
            problems.append(f"{override}: started work")
    assert not problems, "\n".join(problems)


def _one_line_refusal(proc, needle):
    """Exit status 2 and exactly one line on stderr that names the problem: no traceback, no Hydra help."""
    lines = proc.stderr.strip().splitlines()
    return proc.returncode == 2 and len(lines) == 1 and needle in lines[0] and "Traceback" not in proc.stderr


def test_aggregate_rejects_missing_directory(tmp_path):
    proc = run_cli(["sims.aggregate", f"dirs=[{tmp_path / 'nope'}]"])
    assert _one_line_refusal(proc, f"dirs='{tmp_path / 'nope'}' is invalid: must be an existing directory"), proc.stderr
    proc = run_cli(["sims.aggregate"])
    assert _one_line_refusal(proc, "dirs=[] is invalid"), proc.stderr
    assert not (tmp_path / "nope").exists()  # not even the default out, nope/aggregate


def test_check_rejects_unknown_name_and_bad_replicates(tmp_path):
    out = tmp_path / "checks"
    cases = [(["names=[no-such-check]"], "'no-such-check' is not a check"),
             (["names=[shared-exact]", "replicates=0"], "replicates=0 is invalid: must be an integer >= 1"),
             (["names=[shared-exact]", "threads=0"], "threads=0 is invalid"),
             ([], "names=[] is invalid"),
             (["names=[shared-exact]", f"results={tmp_path / 'none.csv'}"], "results="),
             (["names=[shared-exact]", "replicates=100000"], "pass allow_large=true"),
             (["names=[shared-exact]", "+bogus=1"], "bogus is not a known setting")]
    with ThreadPoolExecutor(max_workers=2) as pool:
        procs = list(pool.map(lambda c: run_cli(["sims.check", *c[0], f"out={out}"], timeout=120), cases))
    problems = [f"{args}: exit {p.returncode}, {p.stderr[-300:]!r}" for (args, needle), p in zip(cases, procs)
                if not _one_line_refusal(p, needle)]
    assert not problems, "\n".join(problems)
    assert "shared-exact" in procs[0].stderr  # the message lists the checks there are
    assert not out.exists()  # refused before Hydra made the output folder
