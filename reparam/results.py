"""Tidy rows that survive crashes: an append-only JSON-lines log with a checksum per record.

Each line is {"row": {...}, "sha256": <hash of the canonical JSON of row>}. A record is written with a
single write() of one line followed by flush + fsync, so a process killed at any moment leaves at most
one partial LAST line (the next append starts on a fresh line, so it never glues onto that partial one); on reading, lines that do not parse or whose checksum does not match are
skipped with a warning and their cells are simply recomputed. A log opened with a `RowSchema` (the row
columns and types of the app that writes it) also checks every record against it: a record with a valid
checksum that is not a row of this app (another app's record appended to the file, a row that lacks a key
column or has one of the wrong type) is reported by file and line and skipped, never used. Tables are written
atomically (temporary file in the same folder, then os.replace). A write the machine refuses (disk full,
permissions) raises reparam.validation.WriteError, one line naming the file; what was written before stays.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from numbers import Integral, Real
from pathlib import Path
from typing import Callable, Iterable

import pandas as pd

from .validation import writing


def _canonical(row: dict) -> str:
    return json.dumps(row, sort_keys=True, separators=(",", ":"), allow_nan=True)


def _checksum(row: dict) -> str:
    return hashlib.sha256(_canonical(row).encode()).hexdigest()


def _plain(value):
    """JSON-safe scalars (numpy and torch scalars become Python numbers)."""
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    return value


def _is_kind(value, kind: str) -> bool:
    if kind == "str":
        return isinstance(value, str)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "int":
        return not isinstance(value, bool) and (isinstance(value, Integral) or
                                                (isinstance(value, float) and value.is_integer()))
    if kind == "number":
        return isinstance(value, Real) and not isinstance(value, bool)
    raise ValueError(f"unknown column kind {kind!r}")


@dataclass(frozen=True)
class RowSchema:
    """The rows of one app's log: `required` columns and their kinds ('str', 'int', 'number', 'bool'), and
    `optional` columns checked only when present (columns added to the app after older logs were written)."""

    name: str
    required: dict = field(default_factory=dict)
    optional: dict = field(default_factory=dict)

    def problem(self, row) -> str | None:
        """Why `row` is not a row of this schema (None when it is)."""
        if not isinstance(row, dict):
            return f"not a row of {self.name} (a {type(row).__name__}, not a record)"
        missing = [c for c in self.required if c not in row]
        if missing:
            return f"not a row of {self.name} (it lacks {missing})"
        for column, kind in list(self.required.items()) + list(self.optional.items()):
            if column in row and not _is_kind(row[column], kind):
                return f"not a row of {self.name} ({column}={row[column]!r} is not a {kind})"
        return None


class ResultLog:
    """Append-only, checksummed record of finished work at `path` (created on first append). With `schema`,
    records that are not rows of it are reported (file and line) and skipped on reading."""

    def __init__(self, path: str | os.PathLike, schema: RowSchema | None = None):
        self.path = Path(path)
        self.schema = schema
        self.corrupt_lines: list[int] = []  # of the last read: lines that do not parse or fail their checksum
        self.foreign_lines: list[tuple[int, str]] = []  # (line, why) of records that are not rows of `schema`

    def append(self, row: dict) -> None:
        self.extend([row])

    def extend(self, rows: Iterable[dict]) -> None:
        lines = []
        for row in rows:
            row = {k: _plain(v) for k, v in row.items()}
            lines.append(json.dumps({"row": row, "sha256": _checksum(row)}, allow_nan=True) + "\n")
        if not lines:
            return
        with writing(self.path, "the records written before are kept: make room (or fix the folder) and rerun the "
                                "same command to resume"):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as handle:
                # A killed writer can leave a partial last line without its newline; start on a fresh line so
                # the partial record stays one corrupt line (skipped on reading) instead of swallowing this one.
                handle.write(("\n" if not _ends_on_fresh_line(self.path) else "") + "".join(lines))
                handle.flush()
                os.fsync(handle.fileno())

    def rows(self) -> list[dict]:
        """Every valid record, in order; corrupt or partial lines, and records that are not rows of the schema,
        are reported (file and line numbers) and skipped."""
        self.corrupt_lines, self.foreign_lines = [], []
        if not self.path.exists():
            return []
        good = []
        with open(self.path, encoding="utf-8", errors="replace") as handle:
            for number, line in enumerate(handle, start=1):
                try:
                    record = json.loads(line)
                    row = record["row"]
                    if record["sha256"] != _checksum(row):
                        raise ValueError("checksum mismatch")
                except (ValueError, KeyError, TypeError):
                    self.corrupt_lines.append(number)
                    continue
                problem = self.schema.problem(row) if self.schema is not None else None
                if problem is not None:
                    self.foreign_lines.append((number, problem))
                    continue
                good.append(row)
        if self.corrupt_lines:
            warnings.warn(f"{self.path}: skipped {len(self.corrupt_lines)} corrupt or partial record(s) "
                          f"(line {_lines(self.corrupt_lines)}); their work will be redone", RuntimeWarning,
                          stacklevel=2)
        if self.foreign_lines and good:  # a log of nothing but foreign records is the caller's to refuse
            first_line, why = self.foreign_lines[0]
            where = f"line {first_line}: {why}" if len(self.foreign_lines) == 1 else \
                f"lines {_lines([n for n, _ in self.foreign_lines])}; line {first_line}: {why}"
            warnings.warn(f"{self.path}: skipped {len(self.foreign_lines)} record(s) that are not rows of this log "
                          f"({where}); they are left in the file and never used", RuntimeWarning, stacklevel=2)
        return good

    def completed_keys(self, key_fields: list[str]) -> set[tuple]:
        return {tuple(_key_value(row.get(k)) for k in key_fields) for row in self.rows()}

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows())


def _lines(numbers: list[int], shown: int = 5) -> str:
    """'3, 7, 9' or '3, 7, 9, 12, 15 and 4 more'."""
    head = ", ".join(str(n) for n in numbers[:shown])
    return head + (f" and {len(numbers) - shown} more" if len(numbers) > shown else "")


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
    return _replace_atomically(path, lambda handle: df.to_csv(handle, index=False, float_format=float_format), newline="")


def write_text(path: str | os.PathLike, text: str) -> Path:
    """A text file (a report), atomically like write_table; a refused write is a one-line WriteError."""
    return _replace_atomically(path, lambda handle: handle.write(text))


def replace_atomically(path: str | os.PathLike, write_to: Callable[[Path], None]) -> Path:
    """Write `path` by `write_to(tmp)` on a temporary file beside it, then put it in place with one rename: a killed
    or failed write leaves `path` as it was and no temporary file behind. The error propagates unchanged, so each
    caller keeps its own policy (a one-line WriteError, a message, a cache that is recomputed next time)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; a table is shared like any file open() makes
        write_to(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _replace_atomically(path: str | os.PathLike, write, newline: str | None = None) -> Path:
    """Write `path` through `write(handle)` (text, synced to disk before the rename) atomically; a refused write is
    a one-line WriteError and leaves the file as it was."""
    def text_to(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8", newline=newline) as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())

    path = Path(path)
    with writing(path, "the file as it was before is kept"):
        replace_atomically(path, text_to)
    return path
