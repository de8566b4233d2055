"""A throw-away one-node SLURM cluster on localhost, for the launcher test.

Everything lives in one directory: its own munge key and socket, slurm.conf (select/cons_tres, one partition,
the node's CPUs and memory as `slurmd -C` reads them from the machine), state, spool, logs and pid files, and
free TCP ports, so it neither needs nor touches a system-wide SLURM or munge. The daemons run in the foreground
as children of this process; `stop()` ends exactly those processes (by PID) and cancels nothing else.
Clients (sbatch, squeue, scancel) find the cluster through the environment of `env()` (SLURM_CONF).
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo", "scontrol")


# The daemons live in sbin, which a non-login shell's PATH may lack.
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"])


def _which(name: str) -> str | None:
    return shutil.which(name, path=SEARCH_PATH)


def missing_binaries() -> list[str]:
    """Names of the SLURM/munge programs not found on PATH (sbin included)."""
    return [b for b in BINARIES if _which(b) is None]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node_line() -> str:
    """`NodeName=... CPUs=... RealMemory=...` as slurmd detects this machine (first line of `slurmd -C`)."""
    out = subprocess.run([_which("slurmd"), "-C"], capture_output=True, text=True, check=True, timeout=60).stdout
    return out.splitlines()[0].strip()


class LocalSlurm:
    """Start with `LocalSlurm(root).start()`, stop with `.stop()`; `partition` is the name to submit to."""

    partition = "debug"

    def __init__(self, root: Path):
        self.root = Path(root)
        self.procs: dict[str, subprocess.Popen] = {}
        self.start_seconds: float | None = None

    # --- configuration -------------------------------------------------------------------------------------
    def _write_config(self) -> None:
        r = self.root
        for sub in ("munge", "state", "spool", "log", "run"):
            (r / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(r / "munge", 0o700)
        key = r / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o400)
        node = _node_line()
        self.node_name = node.split()[0].split("=", 1)[1]
        self.node_memory_mb = int(next(f.split("=")[1] for f in node.split() if f.startswith("RealMemory=")))
        self.node_cpus = int(next(f.split("=")[1] for f in node.split() if f.startswith("CPUs=")))
        conf = f"""\
ClusterName=reparamtest
SlurmctldHost={self.node_name}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={r / 'munge' / 'munge.socket'}
StateSaveLocation={r / 'state'}
SlurmdSpoolDir={r / 'spool'}
SlurmctldPidFile={r / 'run' / 'slurmctld.pid'}
SlurmdPidFile={r / 'run' / 'slurmd.pid'}
SlurmctldLogFile={r / 'log' / 'slurmctld.log'}
SlurmdLogFile={r / 'log' / 'slurmd.log'}
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
MailProg=/bin/true
SwitchType=switch/none
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
MinJobAge=300
KillWait=5
{node} NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName={self.partition} Nodes={self.node_name} Default=YES MaxTime=INFINITE State=UP
"""
        (r / "slurm.conf").write_text(conf)

    def env(self) -> dict:
        """Environment for SLURM clients (and submitit) to talk to this cluster."""
        return dict(os.environ, SLURM_CONF=str(self.root / "slurm.conf"), PATH=SEARCH_PATH)

    # --- lifecycle -----------------------------------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str]) -> None:
        with open(self.root / "log" / f"{name}.out", "wb") as log:  # the child keeps its own copy of the fd
            self.procs[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=self.env(),
                                                start_new_session=True)

    def _wait(self, what: str, ready, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, p in self.procs.items():
                if p.poll() is not None:
                    raise RuntimeError(f"{name} exited with status {p.returncode} while waiting for {what}:\n"
                                       + self.logs())
            if ready():
                return
            time.sleep(0.2)
        raise TimeoutError(f"{what} not ready after {timeout:.0f} s:\n" + self.logs())

    def _client(self, argv: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run(argv, capture_output=True, text=True, env=self.env(), timeout=30)

    def start(self, timeout: float = 120.0) -> "LocalSlurm":
        t0 = time.monotonic()
        self._write_config()
        m = self.root / "munge"
        self._spawn("munged", [_which("munged"), "--foreground", "--force", f"--socket={m / 'munge.socket'}",
                               f"--key-file={m / 'munge.key'}", f"--pid-file={m / 'munged.pid'}",
                               f"--log-file={self.root / 'log' / 'munged.log'}", f"--seed-file={m / 'munged.seed'}"])
        self._wait("munged", lambda: (m / "munge.socket").exists(), timeout)
        conf = str(self.root / "slurm.conf")
        self._spawn("slurmctld", [_which("slurmctld"), "-D", "-i", "-f", conf])
        self._wait("slurmctld", lambda: "UP" in self._client(["scontrol", "ping"]).stdout, timeout)
        self._spawn("slurmd", [_which("slurmd"), "-D", "-f", conf, "-N", self.node_name])
        self._wait("the node", lambda: "idle" in self._client(["sinfo", "-h", "-o", "%T"]).stdout, timeout)
        self.start_seconds = time.monotonic() - t0
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Cancel the jobs of this cluster, then end its daemons (our child processes only, by PID)."""
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            self._client(["scancel", "--partition", self.partition])
        for name in ("slurmd", "slurmctld", "munged"):
            p = self.procs.get(name)
            if p is None or p.poll() is not None:
                continue
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout)

    def logs(self, tail: int = 30) -> str:
        parts = []
        for f in sorted((self.root / "log").glob("*")):
            lines = f.read_text(errors="replace").splitlines()[-tail:]
            parts.append(f"--- {f.name} ---\n" + "\n".join(lines))
        return "\n".join(parts)
