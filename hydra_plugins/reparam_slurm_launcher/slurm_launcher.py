"""The shipped `hydra/launcher=slurm`: submitit's SLURM launcher, sized for a small node, that says why jobs wait.

What the plain `submitit_slurm` launcher leaves to the user, handled here:
- A request sbatch refuses (more memory or CPUs than any node has) names the request and how to compare it
  with the nodes.
- Jobs that stay PENDING print, after `pending_notice_s`, SLURM's reason (squeue `%r`) with what it means and
  which setting to change (e.g. `Resources`: no node has the requested CPUs / memory free now).
- submitit follows its jobs with `sacct`, which fails on clusters that keep no job accounting: every poll then
  printed a warning and sacct's error, and a job that died without a result was never seen to end (the sweep
  waited for ever). When `sacct` does not work, this launcher says so once and follows the jobs with `squeue`
  instead: a job that ends without a result is then reported by submitit with its log, as with accounting.

Resuming: every job writes its fits to `<sweep dir>/<job num>/results.jsonl` as they finish. A job SLURM
preempts or times out is requeued by submitit (`max_num_timeout` times for time-outs) and starts again in the
same directory, skipping recorded fits; after a killed sweep, rerun the same command with
`hydra.sweep.dir=<that dir>`.
"""

import getpass
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from hydra_plugins.hydra_submitit_launcher.config import SlurmQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher
from submitit.core.utils import FailedJobError
from submitit.slurm.slurm import SlurmInfoWatcher, SlurmJob

# What a pending reason means and what to change; reasons not listed are printed as SLURM gives them.
PENDING_REASONS = {
    "Resources": "no node has the requested resources free now; if the cluster is idle, the request is larger "
                 "than a node: lower hydra.launcher.mem_gb / cpus_per_task (`sinfo -N -o '%N %c %m'` shows "
                 "each node's CPUs and memory in MB)",
    "Priority": "other jobs of higher priority are ahead in the queue",
    "ReqNodeNotAvail": "the nodes this job can use are down, drained or reserved (`sinfo -R` says why)",
    "PartitionNodeLimit": "the request exceeds what the partition allows (nodes / cpus / memory per node)",
    "PartitionConfig": "the partition does not allow this request (check hydra.launcher.partition / account)",
    "QOSMaxJobsPerUserLimit": "your QOS limits how many jobs may run at once; the rest wait their turn",
    "AssocGrpCpuLimit": "your account's CPU limit is reached; jobs start as others finish",
    "JobArrayTaskLimit": "hydra.launcher.array_parallelism limits how many jobs of the sweep run at once",
    "BeginTime": "the job was requeued (preempted or timed out) and waits for its earliest start time (SLURM "
                 "holds a requeued job for its credential lifetime, 120 s by default)",
}


@dataclass
class SlurmConf(SlurmQueueConf):
    """`hydra/launcher=slurm`. One job per sweep point, each asking for `cpus_per_task` CPUs (None: the CPUs the
    job uses, max(threads, workers) of the app's config), `mem_gb` GB (a job at n = 1e5 with every structure,
    regime and 2 workers peaks at 1.0 GB resident, all processes together) and `timeout_min` minutes.
    pending_notice_s: after this many seconds a job still pending has its reason printed (0: never)."""

    _target_: str = "hydra_plugins.reparam_slurm_launcher.slurm_launcher.WatchedSlurmLauncher"
    timeout_min: int = 60
    cpus_per_task: Optional[int] = None
    mem_gb: Optional[int] = 2
    tasks_per_node: int = 1
    nodes: int = 1
    name: str = "reparam-${hydra.job.name}"
    max_num_timeout: int = 3  # a timed-out job is requeued and resumes from its results.jsonl
    pending_notice_s: int = 120


def sacct_works() -> bool:
    """Whether `sacct` answers (it fails when the cluster keeps no job accounting)."""
    try:
        return subprocess.run(["sacct", "--noheader", "-X", "-j", "1"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


class SqueueInfoWatcher(SlurmInfoWatcher):
    """submitit's job-state poller reading `squeue` instead of `sacct`. squeue lists pending and running jobs and,
    for MinJobAge seconds, ended ones; a job of this sweep it no longer lists has ended (state ENDED), so submitit
    stops waiting and reads the result, or reports the job's log when there is none."""

    def _make_command(self) -> Optional[list]:
        if not self._registered - self._finished:
            return None
        return ["squeue", "--noheader", f"--user={getpass.getuser()}", "--states=all", "--array", "--format=%i|%T|%N"]

    def read_info(self, string) -> dict:
        lines = string.decode() if isinstance(string, bytes) else string
        info = super().read_info("JobID|State|NodeList\n" + lines)
        for job_id in self._registered - self._finished:
            if job_id not in info:
                info[job_id] = {"JobID": job_id, "State": "ENDED", "NodeList": ""}
        return info


class PendingWatch(threading.Thread):
    """Prints, once per job, why a job of this sweep is still pending after `notice_s` seconds. The sweep's
    job ids are the names of the submitit folders (`.../.submitit/%j`) created after this watch started."""

    def __init__(self, submitit_root: Path, notice_s: float, poll_s: float | None = None):
        super().__init__(name="reparam-slurm-pending", daemon=True)
        # poll often enough that the notice comes about notice_s after submission, not up to a poll later
        poll_s = min(5.0, max(0.5, notice_s / 2)) if poll_s is None else poll_s
        self.root, self.notice_s, self.poll_s = submitit_root, notice_s, poll_s
        self.before = self._job_dirs()
        self.stopped = threading.Event()
        self.t0 = time.monotonic()
        self.told: set[str] = set()

    def _job_dirs(self) -> set[str]:
        return {p.name for p in self.root.iterdir() if p.is_dir()} if self.root.is_dir() else set()

    def pending(self) -> dict[str, list[str]]:
        """{reason: [job ids]} of this sweep's pending jobs (array tasks as 12_3)."""
        sweep_jobs = {job.split("_")[0] for job in self._job_dirs() - self.before}  # array ids: 12 of 12_3
        try:
            out = subprocess.run(["squeue", "--noheader", f"--user={getpass.getuser()}", "--array", "--states=PENDING",
                                  "--format=%i|%r"], capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.TimeoutExpired):
            return {}
        by_reason: dict[str, list[str]] = {}
        for line in out.splitlines():
            job, _, reason = line.strip().partition("|")
            if job.split("_")[0] in sweep_jobs:
                by_reason.setdefault(reason, []).append(job)
        return by_reason

    def check(self) -> None:
        waited = time.monotonic() - self.t0
        if waited < self.notice_s:
            return
        for reason, jobs in self.pending().items():
            new = [j for j in jobs if j not in self.told]
            if new:
                self.told.update(new)
                print(f"[slurm] {len(new)} job(s) of this sweep still PENDING after {waited:.0f} s "
                      f"({', '.join(new)}), reason '{reason}': "
                      f"{PENDING_REASONS.get(reason, 'see JOB REASON CODES in `man squeue`')}", flush=True)

    def run(self) -> None:
        while not self.stopped.wait(self.poll_s):
            self.check()


class WatchedSlurmLauncher(SlurmLauncher):
    """submitit's SlurmLauncher plus the pending-reason notice and the squeue fallback of this module."""

    def __init__(self, pending_notice_s: int = 120, **params: Any) -> None:
        super().__init__(**params)
        self.pending_notice_s = pending_notice_s

    def setup(self, *, hydra_context, task_function, config) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        if self.params.get("cpus_per_task") is None:  # size the request from the job: its torch threads are
            # shared among its worker processes, at least one each (reparam.sweep.run_plan)
            self.params["cpus_per_task"] = max(int(config.get("threads", 1)), int(config.get("workers", 1)))

    def launch(self, job_overrides, initial_job_idx):
        sacct_watcher = SlurmJob.watcher
        if not sacct_works():
            print("[slurm] sacct does not answer (no job accounting on this cluster): following the jobs with "
                  "squeue instead", flush=True)
            SlurmJob.watcher = SqueueInfoWatcher(delay_s=sacct_watcher._delay_s)
        watch = None
        if self.pending_notice_s > 0:
            submitit_root = Path(str(self.params["submitit_folder"])).parent  # ".../.submitit/%j"
            watch = PendingWatch(submitit_root, self.pending_notice_s)
            watch.start()
        try:
            return super().launch(job_overrides, initial_job_idx)
        except FailedJobError as err:
            if "submission failed" not in str(err):
                raise
            p = self.params  # sbatch refused the request itself (e.g. more memory than any node has)
            raise FailedJobError(f"{err}\n[slurm] each job asks for cpus_per_task={p.get('cpus_per_task')} CPUs and "
                                 f"mem_gb={p.get('mem_gb')} GB in partition {p.get('partition')}; `sinfo -N -o "
                                 f"'%N %P %c %m'` lists each node's partition, CPUs and memory (MB): lower "
                                 f"hydra.launcher.mem_gb / cpus_per_task or choose hydra.launcher.partition") from None
        finally:
            SlurmJob.watcher = sacct_watcher
            if watch is not None:
                watch.stopped.set()
