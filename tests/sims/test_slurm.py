"""The shipped `hydra/launcher=slurm` on a real one-node SLURM cluster on localhost (tests/sims/slurm_cluster.py).

One sweep of 2 jobs runs through SLURM, is cut back as if its second job had been killed after its first fit,
is resumed by rerunning the same command in the same sweep directory, and is merged by `reparam aggregate`; the
merged table must equal, byte for byte without the wall-time column, the same sweep run locally (basic
launcher): same code, seeds and thread count, so any difference is a launcher bug (a lost, duplicated or
re-seeded fit). Each job asks for all the node's CPUs, so the second one waits and the launcher must say why;
a request larger than the node must be refused at submission with the request named.
Skipped, with the reason, where the SLURM/munge programs are missing or we are not root (slurmd runs jobs as
their user); `.ci/run` installs Debian's slurm-wlm and munge when it can.
"""
import os
import time

import pytest

from reparam.sweep import without_timing

from .conftest import run_cli
from .slurm_cluster import LocalSlurm, missing_binaries

pytestmark = pytest.mark.slurm

SWEEP = ["n=300,1000", "structure=shared_mlp", "regime=exact", "replicates=2", "figures=false", "threads=1",
         "workers=1", "progress=false"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    missing = missing_binaries()
    if missing:
        pytest.skip(f"SLURM/munge programs not found: {' '.join(missing)} (Debian: apt-get install slurm-wlm munge)")
    if os.geteuid() != 0:
        pytest.skip("a throw-away SLURM cluster needs root (slurmd starts jobs as their user)")
    slurm = LocalSlurm(tmp_path_factory.mktemp("slurm"))
    try:
        slurm.start()
        yield slurm
    finally:
        slurm.stop()


def _slurm_sweep(slurm, sweep_dir):
    return run_cli(["sims.convergence", "-m", "hydra/launcher=slurm", f"hydra.launcher.partition={slurm.partition}",
                    f"hydra.launcher.cpus_per_task={slurm.node_cpus}", "hydra.launcher.pending_notice_s=1", *SWEEP,
                    f"hydra.sweep.dir={sweep_dir}"], env=slurm.env(), timeout=600)


def test_slurm_sweep_resumes_and_equals_the_local_sweep(cluster, tmp_path, capsys):
    with capsys.disabled():  # shown even in a quiet run: the proof that this test ran on a real cluster
        print(f"\n[slurm test] cluster up in {cluster.start_seconds:.1f} s: node {cluster.node_name}, "
              f"{cluster.node_cpus} CPUs, {cluster.node_memory_mb} MB, partition {cluster.partition}")
    tic = time.monotonic()
    on_slurm, local = tmp_path / "slurm", tmp_path / "local"
    proc = _slurm_sweep(cluster, on_slurm)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:] + "\n" + cluster.logs()
    assert "Submitit 'slurm'" in out and len(list((on_slurm / ".submitit").glob("*_*/*_result.pkl"))) == 2, out[-2000:]
    assert "still PENDING" in out and "reason '" in out, out[-2000:]  # the second job waits for the CPUs
    assert "Bypassing sacct error" not in out and "accounting storage is disabled" not in out, out[-2000:]

    # Kill-and-resume: keep the first fit of job 1 only, rerun the same command in the same sweep directory.
    log = on_slurm / "1" / "results.jsonl"
    records = log.read_text().splitlines(keepends=True)
    assert len(records) == 2, records
    log.write_text(records[0])
    proc = _slurm_sweep(cluster, on_slurm)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert len(log.read_text().splitlines()) == 2 and log.read_text().startswith(records[0])
    assert len((on_slurm / "0" / "results.jsonl").read_text().splitlines()) == 2  # nothing refitted there

    proc = run_cli(["sims.convergence", "-m", *SWEEP, f"hydra.sweep.dir={local}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    for sweep in (on_slurm, local):
        agg = run_cli(["sims.aggregate", f"dirs=[{sweep}]", f"out={tmp_path / f'{sweep.name}_merged'}",
                       "figures=false"])
        assert agg.returncode == 0, agg.stderr[-2000:]
    merged = without_timing(tmp_path / "slurm_merged" / "results.csv")
    expected = without_timing(tmp_path / "local_merged" / "results.csv")
    fits = merged.count(b"\n") - 1
    assert fits == 4  # 2 sizes x 2 replicates
    assert merged == expected
    with capsys.disabled():
        print(f"[slurm test] SLURM sweep, its resume, the local sweep and both aggregations: "
              f"{time.monotonic() - tic:.1f} s; SLURM table == local table without `seconds` ({fits} fits)")


def test_request_larger_than_the_node_is_refused_with_the_request_named(cluster, tmp_path):
    too_much = cluster.node_memory_mb // 1024 + 2  # GB: more than the node has
    proc = run_cli(["sims.convergence", "-m", "hydra/launcher=slurm", f"hydra.launcher.partition={cluster.partition}",
                    f"hydra.launcher.mem_gb={too_much}", *SWEEP, f"hydra.sweep.dir={tmp_path / 'sweep'}"],
                   env=cluster.env(), timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-2000:]
    assert f"mem_gb={too_much} GB in partition {cluster.partition}" in out and "sinfo -N" in out, out[-2000:]
    assert not list(tmp_path.rglob("results.jsonl"))  # nothing ran
