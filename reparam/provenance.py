"""What produced a run's outputs: package version, git commit and library versions (provenance.json).

Every app writes `write_provenance(out_dir)` next to its results, so a table or figure can be cited with the
exact code and libraries that made it (README, "Citing"). provenance.json is a history: its top level is the
latest run's record (command, setting, code, libraries, cost) and `history` lists the records of the earlier runs
that wrote into the folder, oldest first; a run adds its record and never replaces another's
(reparam.runfolder opens the record when a run starts, `write_provenance` completes it when the work is done).

A record's `status` is 'running' while its run works, then 'finished' (`write_provenance`), 'interrupted' (Ctrl-C,
SIGTERM) or 'failed' (an error ended the run; `reason` says which), set by `end_open_records`. A record of a run
that fitted with the synthetic study's solver holds `solver_pass`: which sample-space pass ran on the CPU (the
compiled kernel or the tensor pass, reparam.kernels), why, and the kernel's file and SHA-256.
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
from .results import replace_atomically
from .validation import FolderError, InputError, writing

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


def solver_pass() -> dict | None:
    """The solver's sample-space pass this process resolved (reparam.kernels.resolved_status: 'fused' or
    'tensor', why, the kernel's file and checksum), or None when it ran no fit and its preflight chose none."""
    kernels = sys.modules.get("reparam.kernels")
    return None if kernels is None else kernels.resolved_status()


def provenance() -> dict:
    """Package version, git commit (None outside git), python and library versions, platform and UTC time, and
    the solver pass when this process resolved one."""
    record = {"package": "reparam", "version": __version__, "git_commit": git_commit(),
              "python": platform.python_version(), "libraries": library_versions(), "platform": platform.platform(),
              "argv": list(sys.argv), "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    chosen = solver_pass()
    if chosen is not None:
        record["solver_pass"] = chosen
    return record


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


#: folder (resolved) -> the run id of the record this process opened there (begin_record)
_OPEN: dict[str, str] = {}


def _write(path: Path, records: list[dict]) -> None:
    latest = dict(records[-1])
    if len(records) > 1:
        latest["history"] = records[:-1]
    text = json.dumps(latest, indent=2) + "\n"
    with writing(path, "the record as it was before is kept"):
        replace_atomically(path, lambda tmp: tmp.write_text(text))


def read_records(folder: str | os.PathLike) -> list[dict]:
    """The provenance records of `folder`, oldest first ([] when it has none); FolderError when its
    provenance.json is not one reparam wrote."""
    path = Path(folder) / "provenance.json"
    if not path.is_file():
        return []
    try:
        latest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise FolderError(f"{path} is not a provenance record of reparam ({str(err).splitlines()[0]}): the folder "
                          f"holds something else; pass another folder") from None
    if not isinstance(latest, dict):
        raise FolderError(f"{path} is not a provenance record of reparam: pass another folder")
    history = latest.pop("history", []) if isinstance(latest.get("history"), list) else []
    return [r for r in history if isinstance(r, dict)] + [latest]


def _records(path: Path) -> list[dict]:
    return read_records(path.parent)


def begin_record(out_dir: str | Path, command: str, setting: dict | None = None) -> Path:
    """Add this run's record to OUT_DIR/provenance.json (status 'running': the command, the setting and its
    fingerprint, what code runs it); `write_provenance` completes it."""
    from .validation import fingerprint

    path = Path(out_dir) / "provenance.json"
    record = {**provenance(), "command": command, "setting_id": None if setting is None else fingerprint(setting),
              "setting": setting, "status": "running"}
    record["run_id"] = f"{os.getpid()}-{record['created_utc']}"
    records = _records(path)
    _say_pass_change(path.parent, records, record)
    _write(path, records + [record])
    _OPEN[os.path.realpath(path.parent)] = record["run_id"]
    return path


def _say_pass_change(folder: Path, records: list[dict], record: dict) -> None:
    """One line when this run resumes rows that an earlier run of the same command and setting fitted with the
    other solver pass (the two agree to rounding, not to the last digit)."""
    mine = record.get("solver_pass")
    earlier = [r for r in records if r.get("command") == record["command"] and r.get("setting_id") ==
               record["setting_id"] and isinstance(r.get("solver_pass"), dict)]
    if mine is None or not earlier or earlier[-1]["solver_pass"].get("pass") == mine["pass"]:
        return
    import logging

    from .console import say

    say(logging.getLogger(__name__), f"reparam: the rows already in {folder} were fitted with the "
        f"{earlier[-1]['solver_pass'].get('pass')} solver pass, this run uses the {mine['pass']} pass "
        f"({mine['why']}); the two agree to rounding, not in the last digits", stream=sys.stderr)


def write_provenance(out_dir: str | Path, started: float | None = None) -> Path:
    """Complete this run's record in OUT_DIR/provenance.json (creating OUT_DIR; a new record when the run opened
    none): what produced the outputs (`provenance()`) and what it cost (`resources(started)`; call this when the
    run's work is done). The records of earlier runs stay, under `history`. Returns its path."""
    path = Path(out_dir) / "provenance.json"
    records = _records(path)
    run_id = _OPEN.get(os.path.realpath(path.parent))
    if records and run_id is not None and records[-1].get("run_id") == run_id:  # the record this run opened
        record = records.pop()
        record.update({k: v for k, v in provenance().items() if k != "created_utc"})
        record["finished_utc"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    else:
        record = provenance()
    record.update(status="finished", resources=resources(started))
    _write(path, records + [record])
    return path


#: folder (resolved) -> what of its outputs is kept if the run stops now (note_kept), for the interrupt's line
_KEPT: dict[str, str] = {}


def note_kept(folder: str | os.PathLike, text: str) -> None:
    """Say what of `folder`'s outputs is on disk so far (e.g. '4 of 12 fits are kept in DIR/results.jsonl'): the line of an
    interrupted run names it (reparam.app)."""
    _KEPT[os.path.realpath(folder)] = text


def noted_folders() -> list[tuple[str, str]]:
    """(folder, what is kept there) of every folder with a note (note_kept) whose record this process did not open:
    the result logs of a run that keeps no record of its own while it works (low-data's training, planted-prefix's
    fits), or a log outside the run folder."""
    return [(key, text) for key, text in _KEPT.items() if key not in _OPEN]


def open_folders(completed: bool = False) -> list[tuple[str, str | None]]:
    """(folder, what is kept there or None) of every folder whose record this process opened and has not ended;
    with `completed`, also those whose record it completed (an app that writes its provenance before its last
    step, e.g. `reparam check`, which writes it before its checks run)."""
    out = []
    for key, run_id in _OPEN.items():
        try:
            records = read_records(key)
        except FolderError:
            continue
        status = records[-1].get("status") if records else None
        if records and records[-1].get("run_id") == run_id and (status == "running" or
                                                                 (completed and status == "finished")):
            out.append((key, _KEPT.get(key)))
    return out


def end_open_records(status: str, reason: str = "") -> list[str]:
    """Close every record this process opened and has not completed with `status` ('interrupted' or 'failed') and
    `reason` (an interrupt also closes a record its run completed early: the run did not end); returns the
    folders. Never raises for a folder it cannot write (the run is ending anyway)."""
    ended = []
    for key, _ in open_folders(completed=status == "interrupted"):
        path = Path(key) / "provenance.json"
        try:
            records = _records(path)
            record = records.pop()
            record.update(status=status, ended_utc=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                          resources=resources())
            if reason:
                record["reason"] = reason
            chosen = solver_pass()
            if chosen is not None:
                record["solver_pass"] = chosen
            _write(path, records + [record])
            ended.append(key)
        except (OSError, InputError, IndexError):
            continue
    return ended
