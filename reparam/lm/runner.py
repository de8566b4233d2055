"""Plumbing shared by the two real-transformer experiments: setup, resumable result logs, tables, figures.

Figures and slope tables are drawn ONLY from the recorded table (one tidy row per fit), with the same
code as the synthetic study (`reparam.rates.fit_slopes`, the helpers of `reparam.plots`).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .models import ModelConfig, load_model, repo_path  # noqa: F401  (repo_path: re-exported for the experiments)
from .train import setup_torch


def prepare_model(model_cfg: dict, device: str = "cpu", threads: int = 1):
    """(model on device, tokenizer, device). `threads` caps torch CPU threads (the machine is shared)."""
    dev = setup_torch(threads, device)
    model, tok = load_model(ModelConfig(**model_cfg))
    return model.to(dev), tok, dev


class Log:
    """A resumable result log: `reparam.results.ResultLog` keyed on `key_fields` + the run's `setting_id`.

    setting_id: `reparam.lm.validation.result_setting_id(cfg, section)`, the fingerprint of every
        result-affecting setting. It is stamped on every appended row and is part of the resume key, so rows
        recorded with another model / prefix_len / lr / steps / ... are never taken for this run's rows
        (they are refitted), and `frame()` returns only this setting's rows. None keeps the old behaviour
        (key_fields only).
    Appends start on a fresh line (ResultLog), so a torn last record never swallows the next one.
    """

    def __init__(self, path: Path, key_fields: list[str], setting_id: str | None = None):
        from reparam.results import ResultLog

        self.log = ResultLog(path)
        self.setting_id = setting_id
        self.key_fields = list(key_fields) + (["setting_id"] if setting_id is not None else [])
        self.done = set(self.log.completed_keys(self.key_fields))

    def _key(self, row: dict) -> tuple:
        row = {**row, "setting_id": self.setting_id} if self.setting_id is not None else row
        return tuple(row[k] for k in self.key_fields)

    def has(self, row_key: dict) -> bool:
        return self._key(row_key) in self.done

    def append(self, row: dict):
        if self.setting_id is not None:
            row = {**row, "setting_id": self.setting_id}
        self.log.append(row)
        self.done.add(self._key(row))

    def frame(self) -> pd.DataFrame:
        """This setting's rows (all rows when setting_id is None); other settings' rows are reported, not mixed."""
        df = self.log.to_frame()
        if self.setting_id is None or df.empty:
            return df
        if "setting_id" not in df.columns:
            df["setting_id"] = None
        other = df[df["setting_id"] != self.setting_id]
        if len(other):
            print(f"[log] {self.log.path}: {len(other)} row(s) of other settings "
                  f"({sorted(map(str, other['setting_id'].unique()))}) left out; this setting is {self.setting_id}")
        return df[df["setting_id"] == self.setting_id].reset_index(drop=True)


def summary_table(df: pd.DataFrame, cols: list[str], by: list[str]) -> pd.DataFrame:
    """Mean and standard deviation over replicates, one row per (by..., n)."""
    g = df.groupby(by + ["n"])[cols]
    mean, sd = g.mean().add_suffix("_mean"), g.std().add_suffix("_sd")
    return pd.concat([mean, sd, g.size().rename("replicates")], axis=1).reset_index()


class Chunk:
    """One invocation of a resumable long run: what it did and cost, as a progress line and a log row.

    A long run (the low-data study on a CPU) is done in chunks that may run on different machines and days;
    each appends one row to `path` (wall and CPU seconds, cells done and left, load, threads), so the
    cost of the whole study is summed from the committed log, never typed in.
    """

    def __init__(self, path: Path, setting_id: str, cfg, cells_total: int, cells_left: int):
        import datetime
        import time

        self.path, self.setting_id, self.cells_total, self.cells_left = Path(path), setting_id, cells_total, cells_left
        self.threads, self.device = int(cfg.threads), str(cfg.device)
        self.started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        self._t0, self._cpu0 = time.perf_counter(), time.process_time()
        self.cell_walls: list[tuple[int, float]] = []  # (n, wall seconds) of the cells done in this chunk

    def wall(self) -> float:
        import time

        return time.perf_counter() - self._t0

    def cell_done(self, wall_s: float, n: int) -> None:
        self.cell_walls.append((int(n), float(wall_s)))
        self.cells_left -= 1

    def close(self, left_ns: list[int] | None = None, cell_times: list[tuple[int, float]] | None = None) -> str:
        """Append this chunk's row; return the progress line.

        left_ns: the n of every cell left; cell_times: (n, wall seconds) of every recorded cell (default: this
        chunk's); what is left is estimated from the mean recorded time of cells with the same n.
        """
        import os
        import time

        from reparam.results import ResultLog

        wall, cpu = self.wall(), time.process_time() - self._cpu0
        ResultLog(self.path).append({
            "setting_id": self.setting_id, "started": self.started, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
            "cells_done": len(self.cell_walls), "cells_left": self.cells_left, "cells_total": self.cells_total,
            "threads": self.threads, "device": self.device, "cpu_count": os.cpu_count(),
            "load_avg_end": [round(x, 2) for x in os.getloadavg()]})
        line = (f"[chunk] {len(self.cell_walls)} cell(s) done in {wall / 60:.1f} min ({cpu / 3600:.2f} CPU-hours); "
                f"{self.cells_left} of {self.cells_total} cells left")
        times = list(cell_times) if cell_times else self.cell_walls
        if self.cells_left and left_ns and times:
            by_n: dict[int, list[float]] = {}
            for n, w in times:
                by_n.setdefault(n, []).append(w)
            overall = sum(w for _, w in times) / len(times)
            eta = sum(sum(by_n[n]) / len(by_n[n]) if n in by_n else overall for n in left_ns)
            line += f", about {eta / 3600:.1f} h at the recorded cell times for each n"
        return line
