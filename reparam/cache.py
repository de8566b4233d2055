"""Checked caches of computed values: each file is stored with the SHA-256 of its bytes and the fingerprint of
the settings that produced it, and is used only when both match; otherwise it is recomputed, with one line
saying why.

`cached(path, settings, compute, say)` is the one entry point: a value pickled at `path` with a record
`path + ".json"` ({"sha256", "settings"}) written after it (a reader never sees a record without its file). A
file that is damaged, truncated, replaced, written without a record, or made under other settings is never
unpickled (pickle runs code: only bytes this package wrote and recorded are loaded). A cache that cannot be
written costs a recomputation in the next run, never this run.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
from pathlib import Path
from typing import Any, Callable

from .results import replace_atomically
from .validation import fingerprint


def read_checked(path: str | os.PathLike, settings: Any) -> tuple[bool, Any, str]:
    """(True, value, '') when `path` holds a value recorded for `settings` whose bytes match the record;
    (False, None, why) otherwise ('' when there is no file)."""
    path = Path(path)
    record = path.with_name(path.name + ".json")
    if not path.is_file():
        return False, None, ""
    try:
        entry = json.loads(record.read_text())
        data = path.read_bytes()
    except FileNotFoundError:
        return False, None, f"{path} has no checksum record"
    except (OSError, ValueError) as err:
        return False, None, f"{record} cannot be read ({type(err).__name__})"
    if not isinstance(entry, dict) or entry.get("sha256") != hashlib.sha256(data).hexdigest():
        return False, None, f"{path} fails its checksum (damaged or replaced)"
    if entry.get("settings") != fingerprint(settings):
        return False, None, f"{path} was computed under other settings"
    return True, pickle.loads(data), ""


def write_checked(path: str | os.PathLike, settings: Any, value: Any) -> str:
    """Store `value` at `path` with its record; '' when written, else why not (the value is still returned by
    `cached`: a cache that cannot be written costs the next run a recomputation)."""
    path = Path(path)
    data = pickle.dumps(value)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        record = json.dumps({"sha256": hashlib.sha256(data).hexdigest(), "settings": fingerprint(settings)}).encode()
        replace_atomically(path, lambda tmp: tmp.write_bytes(data))
        replace_atomically(path.with_name(path.name + ".json"), lambda tmp: tmp.write_bytes(record))
    except OSError as err:
        return f"{path} cannot be written ({err.strerror or err})"
    return ""


def cached(path: str | os.PathLike, settings: Any, compute: Callable[[], Any], say: Callable[[str], None],
           reuse: bool = True) -> Any:
    """The value at `path` when `reuse` and it passes the checks (read_checked), else `compute()` stored there;
    `say` gets one line for a reused file, for a file that was not used and for one that could not be written."""
    if reuse:
        ok, value, why = read_checked(path, settings)
        if ok:
            say(f"reused {path}")
            return value
        if why:
            say(f"{why}: recomputed")
    value = compute()
    why = write_checked(path, settings, value)
    if why:
        say(f"{why}: the next run recomputes it")
    return value
