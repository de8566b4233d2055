"""Run folders: one writer at a time, and never silently reused for another command or another setting.

Every app that writes a run folder opens it with `open_run_folder(folder, command, setting, field)` before its
first write (and its Hydra preflight calls `check_run_folder` before Hydra writes anything there):

* lock: an exclusive `flock` on the folder itself (no lock file is left behind; the kernel drops it when the
  process ends, however it ends). A second process that wants the same folder is refused at once with one line
  naming the folder (FolderError, exit status 2). The lock is re-entrant within a process and held until the
  process ends or `release` is called.
* claim: the folder's provenance.json records which command (and which setting, a fingerprint of every
  result-affecting setting) wrote it. Another command, or the same command with another setting, is refused
  with a message that names the folder, what differs and the way out (another folder, or the folder's own
  setting to resume). Provenance is a history: each run adds a record (reparam.provenance), none is replaced.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
from pathlib import Path
from typing import Any

from .provenance import begin_record, read_records  # provenance.json is the folder's record of its runs
from .validation import FolderError, fingerprint, writing

#: folder (resolved) -> [fd, depth] of the locks this process holds
_HELD: dict[str, list[int]] = {}


def _key(folder: str | os.PathLike) -> str:
    return os.path.realpath(os.path.expanduser(str(folder)))


def acquire(folder: str | os.PathLike, field: str = "hydra.run.dir") -> Path:
    """Lock `folder` (created if needed) for this process; FolderError when another process holds it."""
    key = _key(folder)
    if key in _HELD:
        _HELD[key][1] += 1
        return Path(folder)
    with writing(folder, "pass another folder"):
        Path(key).mkdir(parents=True, exist_ok=True)
        fd = os.open(key, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        os.close(fd)
        if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise FolderError(f"{field}={str(folder)!r} is in use: another reparam process is writing into {folder}; "
                              f"wait until it ends (rerun then to resume), or pass another folder") from None
        raise
    _HELD[key] = [fd, 1]
    return Path(folder)


def release(folder: str | os.PathLike) -> None:
    """Undo one `acquire` of `folder` (the lock is dropped with the last one)."""
    key = _key(folder)
    if key not in _HELD:
        return
    _HELD[key][1] -= 1
    if _HELD[key][1] <= 0:
        fd, _ = _HELD.pop(key)
        os.close(fd)  # closing the descriptor drops the flock


def _differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b), key=str) for d in _differences(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [f"{prefix.rstrip('.')}={a!r} there, {b!r} here"]


def check_run_folder(folder: str | os.PathLike, command: str, setting: Any = None,
                     field: str = "hydra.run.dir") -> None:
    """Refuse (FolderError) a folder whose provenance records another command, or this command with another
    setting (compared with the last record of this command that has one). `setting`: a dict of every
    result-affecting setting, or None when the command's outputs do not depend on one."""
    records = read_records(folder)
    if not records:
        return
    latest = records[-1]
    previous = latest.get("command")
    if previous is not None and previous != command:
        raise FolderError(f"{field}={str(folder)!r} holds the outputs of `reparam {previous}` (see its provenance.json); "
                          f"`reparam {command}` never writes into another command's folder: pass a new folder")
    if setting is None:
        return
    mine = [r for r in records if r.get("command") == command and r.get("setting_id") is not None]
    if not mine or mine[-1]["setting_id"] == fingerprint(setting):
        return
    diffs = _differences(mine[-1].get("setting"), _plain(setting))
    what = "; ".join(diffs[:3]) + (f" and {len(diffs) - 3} more" if len(diffs) > 3 else "") if diffs else \
        f"setting {mine[-1]['setting_id']} there, {fingerprint(setting)} here"
    raise FolderError(f"{field}={str(folder)!r} holds a run of `reparam {command}` with another setting ({what}); "
                      f"its results are never replaced by another setting's: pass a new folder, or the folder's "
                      f"own setting to resume it")


def _plain(setting: Any) -> Any:
    from omegaconf import OmegaConf

    if OmegaConf.is_config(setting):
        return OmegaConf.to_container(setting, resolve=True)
    return json.loads(json.dumps(setting, default=str))


def open_run_folder(folder: str | os.PathLike, command: str, setting: Any = None,
                    field: str = "hydra.run.dir") -> Path:
    """Before the first write of a run: lock `folder`, check that it holds no other command's or setting's
    outputs, and add this run's record to its provenance (status 'running'; `write_provenance` completes it).
    The lock is held until the process ends (or `release`)."""
    acquire(folder, field)
    try:
        check_run_folder(folder, command, setting, field)
        begin_record(folder, command, None if setting is None else _plain(setting))
    except BaseException:
        release(folder)
        raise
    return Path(folder)
