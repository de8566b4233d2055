"""What produced a run's outputs: package version, git commit and library versions (provenance.json).

Every app writes `write_provenance(out_dir)` next to its results, so a table or figure can be cited with the
exact code and libraries that made it (README, "Citing").
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from . import STARTED, __version__

LIBRARIES = ("torch", "numpy", "scipy", "pandas", "transformers")
PACKAGE_DIR = Path(__file__).resolve().parent


def git_commit(path: str | Path = PACKAGE_DIR) -> str | None:
    """`git describe --always --dirty` of the checkout holding `path` (a '-dirty' suffix marks uncommitted
    edits), or None outside a git checkout or without git."""
    try:
        proc = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=path, capture_output=True, text=True,
                              timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return (proc.stdout.strip() or None) if proc.returncode == 0 else None


def library_versions(names: tuple[str, ...] = LIBRARIES) -> dict[str, str | None]:
    """Installed distribution versions (None when a library is not installed)."""
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def provenance() -> dict:
    """Package version, git commit (None outside git), python and library versions, platform and UTC time."""
    return {"package": "reparam", "version": __version__, "git_commit": git_commit(),
            "python": platform.python_version(), "libraries": library_versions(), "platform": platform.platform(),
            "argv": list(sys.argv), "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def resources(started: float | None = None) -> dict:
    """What the run cost and on what: wall seconds since `started` (a time.perf_counter() value; default: the
    process's first import of reparam), CPU seconds of this process and of its finished child processes (the
    worker processes of a study), the CPU count and the load average when it ended (other programs' load
    slows a run: a wall time is only comparable with its load), and torch's thread count."""
    import time

    times = os.times()
    record = {"wall_seconds": round(time.perf_counter() - (STARTED if started is None else started), 2),
              "wall_clock_from": "process start" if started is None else "run start",
              "cpu_seconds": round(times.user + times.system + times.children_user + times.children_system, 2),
              "cpu_count": os.cpu_count()}
    try:
        record["load_average"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:  # not available on this platform
        record["load_average"] = None
    if "torch" in sys.modules:
        record["torch_threads"] = sys.modules["torch"].get_num_threads()
    return record


def write_provenance(out_dir: str | Path, started: float | None = None) -> Path:
    """Write OUT_DIR/provenance.json (creating OUT_DIR): what produced the outputs (`provenance()`) and what it
    cost (`resources(started)`; call this when the run's work is done). Returns its path."""
    path = Path(out_dir) / "provenance.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**provenance(), "resources": resources(started)}, indent=2) + "\n")
    return path
