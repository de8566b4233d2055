"""Plumbing shared by the two real-transformer experiments: setup, resumable result logs, tables, figures.

Figures and slope tables are drawn ONLY from the recorded table (one tidy row per fit), with the same
code as the synthetic study (`reparam.rates.fit_slopes`, `reparam.plots.error_vs_n`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd
import torch

from .models import REPO_ROOT, ModelConfig, load_model
from .train import setup_torch


def repo_path(p: str | Path) -> Path:
    """Relative paths in experiment configs are taken from the repository root, not the CWD."""
    p = Path(p).expanduser()
    return p if p.is_absolute() else REPO_ROOT / p


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


def write_outputs(df: pd.DataFrame, out_dir: Path, stem: str, errors: dict[str, str], panel: str | None = None,
                  theory_slopes: dict | None = None, n_boot: int = 2000) -> dict[str, pd.DataFrame]:
    """Write the tidy table, a slope table per error and one figure per error.

    errors: {column: y-axis label}. Returns {column: slopes DataFrame}.
    """
    from reparam.plots import error_vs_n, save_figure
    from reparam.rates import fit_slopes
    from reparam.results import write_table

    out_dir.mkdir(parents=True, exist_ok=True)
    write_table(df, out_dir / f"{stem}.csv")
    by = ["structure"] + ([panel] if panel else [])
    slopes_all, out = [], {}
    for col, label in errors.items():
        d = df[df[col].notna()]
        if d["n"].nunique() < 2:
            continue
        sl = fit_slopes(d, col, by, n_col="n", replicate_col="replicate", n_boot=n_boot)
        out[col] = sl
        slopes_all.append(sl)
        fig = error_vs_n(d, col, group="structure", panel=panel, slopes=sl, theory_slopes=theory_slopes,
                         ylabel=label, title=f"{stem}: {label}")
        save_figure(fig, out_dir / f"{stem}_{col}")
    if slopes_all:
        write_table(pd.concat(slopes_all, ignore_index=True), out_dir / f"{stem}_slopes.csv")
    return out


def summary_table(df: pd.DataFrame, cols: list[str], by: list[str]) -> pd.DataFrame:
    """Mean and standard deviation over replicates, one row per (by..., n)."""
    g = df.groupby(by + ["n"])[cols]
    mean, sd = g.mean().add_suffix("_mean"), g.std().add_suffix("_sd")
    return pd.concat([mean, sd, g.size().rename("replicates")], axis=1).reset_index()


def stamp(cfg_dict: dict) -> dict:
    """Config fields worth repeating on every row (so a row is self-describing)."""
    return {"config": json.dumps(cfg_dict, sort_keys=True, default=str), "time": time.strftime("%Y-%m-%dT%H:%M:%S")}


def sync(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize()
