"""What produced a run's outputs: package version, git commit and library versions (provenance.json).

Every app writes `write_provenance(out_dir)` next to its results, so a table or figure can be cited with the
exact code and libraries that made it (README, "Citing").
"""
from __future__ import annotations

import json
import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from . import __version__

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


def write_provenance(out_dir: str | Path) -> Path:
    """Write OUT_DIR/provenance.json (creating OUT_DIR) and return its path."""
    path = Path(out_dir) / "provenance.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(provenance(), indent=2) + "\n")
    return path
