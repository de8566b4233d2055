"""Tidy rows that survive crashes: an append-only JSON-lines log with a checksum per record.

Each line is {"row": {...}, "sha256": <hash of the canonical JSON of row>}. A record is written with a
single write() of one line followed by flush + fsync, so a process killed at any moment leaves at most
one partial LAST line (the next append starts on a fresh line, so it never glues onto that partial one); on reading, lines that do not parse or whose checksum does not match are
skipped with a warning and their cells are simply recomputed. Tables are written atomically
(temporary file in the same folder, then os.replace).
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Iterable

import pandas as pd


def _canonical(row: dict) -> str:
    return json.dumps(row, sort_keys=True, separators=(",", ":"), allow_nan=True)


def _checksum(row: dict) -> str:
    return hashlib.sha256(_canonical(row).encode()).hexdigest()


def _plain(value):
    """JSON-safe scalars (numpy and torch scalars become Python numbers)."""
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    return value


class ResultLog:
    """Append-only, checksummed record of finished work at `path` (created on first append)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def append(self, row: dict) -> None:
        self.extend([row])

    def extend(self, rows: Iterable[dict]) -> None:
        lines = []
        for row in rows:
            row = {k: _plain(v) for k, v in row.items()}
            lines.append(json.dumps({"row": row, "sha256": _checksum(row)}, allow_nan=True) + "\n")
        if not lines:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as handle:
            # A killed writer can leave a partial last line without its newline; start on a fresh line so
            # the partial record stays one corrupt line (skipped on reading) instead of swallowing this one.
            handle.write(("\n" if not _ends_on_fresh_line(self.path) else "") + "".join(lines))
            handle.flush()
            os.fsync(handle.fileno())

    def rows(self) -> list[dict]:
        """Every valid record, in order; corrupt or partial lines are reported and skipped."""
        if not self.path.exists():
            return []
        good, bad = [], 0
        with open(self.path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                try:
                    record = json.loads(line)
                    row = record["row"]
                    if record["sha256"] != _checksum(row):
                        raise ValueError("checksum mismatch")
                except (ValueError, KeyError, TypeError):
                    bad += 1
                    continue
                good.append(row)
        if bad:
            warnings.warn(f"{self.path}: skipped {bad} corrupt or partial record(s); their work will be redone",
                          RuntimeWarning, stacklevel=2)
        return good

    def completed_keys(self, key_fields: list[str]) -> set[tuple]:
        return {tuple(_key_value(row.get(k)) for k in key_fields) for row in self.rows()}

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows())


def _ends_on_fresh_line(path: Path) -> bool:
    """True when `path` is empty or missing, or its last byte is a newline."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            if handle.tell() == 0:
                return True
            handle.seek(-1, os.SEEK_END)
            return handle.read(1) == b"\n"
    except FileNotFoundError:
        return True


def _key_value(value):
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _umask() -> int:
    """The process umask (read by setting it and restoring it at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_table(df: pd.DataFrame, path: str | os.PathLike, float_format: str | None = None) -> Path:
    """Write CSV atomically: readers see the old file or the new one, never a partial one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; a table is shared like any file open() makes
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            df.to_csv(handle, index=False, float_format=float_format)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path
