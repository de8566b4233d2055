"""Shared record-keeping of the low-data protocols (per cell and per n)."""

from __future__ import annotations

import json
import os
from pathlib import Path


def write_jsonl(path: Path, rows: list[dict]) -> None:
    """Write `rows` as JSON lines through a temporary file: a killed run never leaves a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    os.replace(tmp, path)
