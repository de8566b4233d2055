"""The low-data study's settings: checked once, before a model or data file is touched, and fingerprinted.

`validate(cfg)` checks every field the protocol reads (a bad value raises ConfigError naming the field),
including what can only be checked against the model's configuration (`low_data.top_layers` against its
layers, read from its config without loading weights), so a run or every job of a `-m` sweep is refused
before any work. `setting_id(cfg)` is the fingerprint of every result-affecting setting, stamped on every
recorded row: rows of another setting are never reused or pooled.

Settings added after rows were recorded keep the old rows' fingerprints: a key of `LEGACY_DEFAULTS` that holds
the value every earlier run had is left out of the fingerprint (so the committed top-6 rows, setting
6e966e1c05a8, and the first all-layer rows, ff70061e7a36, are still this setting's rows).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf

from reparam.validation import (ConfigError, check_choice, check_int, check_list, check_number, check_unknown_keys,
                                fingerprint, require)

#: the recorded cell key of a result row
KEY = ["dataset", "n", "replicate", "structure", "init"]
STAGES = ("train", "score", "report", "all")
#: how the learning rate of a (cell, structure, init) is chosen (low_data.lr_selection)
LR_SELECTIONS = ("per_cell", "per_n")
#: which references of a test table enter the test NLL (low_data.test.references)
TEST_REFERENCES = ("all", "first")
#: what low_data.fit.eval_every counts: optimiser steps, or epochs of the run's n training examples
EVAL_UNITS = ("steps", "epochs")
#: low_data settings that choose cells and configurations (own columns of every row) or only change speed:
#: not part of the result fingerprint
NOT_RESULT = ("datasets", "ns", "replicates", "replicates_by_n", "structures", "inits", "metrics", "fit.train_rows",
              "fit.eval_rows", "test.gen_rows", "test.nll_rows")
#: settings added after rows were recorded, with the value every earlier run had: left out of the fingerprint
#: while they hold it, so earlier rows keep their setting id
LEGACY_DEFAULTS = {"lr_selection": "per_cell", "fit.schedule": "linear", "test.references": "all",
                   "fit.eval_unit": "steps"}


# ----------------------------------------------------------------------------- the typed schema of the low_data block


@dataclass
class TuningSettings:
    """lr_selection=per_n: the replicate each n is tuned on, and how many edge extensions a tuning may add."""

    replicate: int = 0
    max_extensions: int = 3


@dataclass
class FitSettings:
    """The optimisation of every run (reparam.lm.multiprefix.FitConfig, whose seed is the replicate)."""

    max_steps: int = 500
    batch_size: int = 8
    warmup: int = 0
    schedule: str = "linear"
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    eval_every: int = 25
    eval_unit: str = "steps"
    patience: int = 4
    train_rows: int = 160
    eval_rows: int = 512


@dataclass
class TestSettings:
    """Test NLL and decoding of the selected configurations."""

    num_beams: int = 5
    length_penalty: float = 1.0
    max_new_tokens: int = 100
    gen_rows: int = 2048
    nll_rows: int = 512
    references: str = "all"


@dataclass
class LowDataSettings:
    """The `low_data` block (experiments/conf/low_data.yaml documents every field), typed; built by `read_settings`
    after `validate`, so code that takes it never re-checks a value."""

    datasets: list = field(default_factory=lambda: ["e2e"])
    ns: list = field(default_factory=lambda: [50])
    replicates: list = field(default_factory=lambda: [0])
    replicates_by_n: Optional[dict] = None
    structures: list = field(default_factory=lambda: ["independent", "shared"])
    inits: list = field(default_factory=lambda: ["words"])
    init_text: dict = field(default_factory=dict)
    prefix_len: int = 10
    top_layers: Optional[int] = None
    hidden: int = 512
    embed_dim: Optional[int] = None
    lr_selection: str = "per_cell"
    tuning: TuningSettings = field(default_factory=TuningSettings)
    lr_grid: dict = field(default_factory=dict)
    n_dev: int = 128
    n_test: Optional[int] = None
    max_len: int = 256
    fit: FitSettings = field(default_factory=FitSettings)
    test: TestSettings = field(default_factory=TestSettings)
    metrics: list = field(default_factory=lambda: ["bleu"])


def eval_every_steps(fit: Any, n: int) -> int:
    """Steps between two dev checks of a run on n examples: `fit.eval_every` steps, or with fit.eval_unit=epochs
    `fit.eval_every` epochs of n examples at `fit.batch_size` per step, rounded up (n = 50, batch 8: 7 steps)."""
    every = int(fit["eval_every"])
    if (fit.get("eval_unit") or "steps") == "steps":
        return every
    batch = min(int(fit["batch_size"]), int(n))  # the batch is capped at n
    return max(1, math.ceil(every * int(n) / batch))


def fit_config(fit: Any, n: int, seed: int):
    """The reparam.lm.multiprefix.FitConfig of one run on n examples (its dev checks in steps)."""
    from reparam.lm.multiprefix import FitConfig

    block = OmegaConf.to_container(fit) if OmegaConf.is_config(fit) else dict(fit)
    block.pop("eval_unit", None)
    block["eval_every"] = eval_every_steps(fit, n)
    return FitConfig(**block, seed=seed)


def read_settings(cfg: DictConfig) -> LowDataSettings:
    """The validated `low_data` block as a LowDataSettings (runs `validate` first)."""
    validate(cfg)
    block = OmegaConf.to_container(cfg.low_data, resolve=True)
    nested = {"tuning": TuningSettings, "fit": FitSettings, "test": TestSettings}
    return LowDataSettings(**{k: nested[k](**v) if k in nested and v is not None else v for k, v in block.items()})


# ----------------------------------------------------------------------------- fingerprint, cells, paths


def _get(block: dict, dotted: str):
    for part in dotted.split("."):
        if not isinstance(block, dict) or part not in block:
            return None
        block = block[part]
    return block


def _drop(block: dict, dotted: str) -> None:
    *head, last = dotted.split(".")
    for part in head:
        block = block.get(part, {})
    block.pop(last, None)


def model_settings(cfg: DictConfig) -> dict:
    """The model block without where its files live (data_root, cache): what makes the model what it is."""
    model = OmegaConf.to_container(cfg.model, resolve=True)
    return {k: v for k, v in model.items() if k not in ("data_root", "cache")}


def setting_id(cfg: DictConfig) -> str:
    """Fingerprint of every result-affecting setting (model and protocol, not the choice of cells)."""
    block = OmegaConf.to_container(cfg.low_data, resolve=True)
    for key, legacy in LEGACY_DEFAULTS.items():
        if _get(block, key) == legacy:
            _drop(block, key)
    if block.get("lr_selection", "per_cell") == "per_cell":
        block.pop("tuning", None)  # read by the per-n protocol only
    return fingerprint({"model": model_settings(cfg), "low_data": block}, ignore=[f"low_data.{k}" for k in NOT_RESULT])


def replicates_of(cfg: DictConfig, n: int) -> list[int]:
    """The replicates of sample size n: 0..replicates_by_n[n]-1 where that map names n, else low_data.replicates."""
    p = cfg.low_data
    by_n = p.get("replicates_by_n")
    if by_n is not None and int(n) in {int(k) for k in by_n}:
        count = {int(k): int(v) for k, v in by_n.items()}[int(n)]
        return list(range(count))
    return sorted(int(r) for r in p.replicates)


def cells(cfg: DictConfig) -> list[tuple[str, int, int]]:
    """Selected cells in run order. per_cell: dataset, then replicate, then n. per_n: dataset, then n (the tuning
    replicate first), then replicate, so that each n's learning rate is tuned before its other replicates run."""
    p = cfg.low_data
    if p.get("lr_selection", "per_cell") == "per_n":
        return [(d, int(n), r) for d in p.datasets for n in sorted(p.ns) for r in replicates_of(cfg, n)]
    return [(d, int(n), int(r)) for d in p.datasets for r in sorted(p.replicates) for n in sorted(p.ns)]


def paths(cfg: DictConfig, sid: str) -> dict[str, Path]:
    """Where a setting's records live: rows of every setting of a run_dir share the files (told apart by setting_id)."""
    from reparam.lm.runner import repo_path

    run = repo_path(cfg.run_dir) / "low_data"
    return {"run": run, "results": run / "results.jsonl", "selection": run / "selection.jsonl",
            "runs": run / "runs.jsonl", "scores": run / "scores.jsonl", "chunks": run / "chunks.jsonl",
            "generations": run / "generations" / sid}


def check_top_layers(model: Any, top_layers: Any) -> None:
    """low_data.top_layers must be at most the model's layers (refused before the model loads)."""
    if top_layers is None:
        return
    from reparam.lm.validation import model_layers

    layers = model_layers(model)
    if layers is not None and int(top_layers) > layers:
        raise ConfigError(f"low_data.top_layers={top_layers} is invalid: model {model.get('name')!r} has {layers} "
                          f"layers; must be in [1, {layers}] (or null: every layer)")


def validate(cfg: DictConfig) -> None:
    """Every field the protocol reads, before a model or data file is touched (ConfigError names the field)."""
    from reparam.lm.metrics import E2E_METRICS
    from reparam.lm.multiprefix import INITS, SCHEDULES
    from reparam.lm.structures import structures_of
    from reparam.lm.validation import check_prefix_positions, validate_common, validate_model

    check_choice("stage", cfg.stage, STAGES)
    require(cfg.get("low_data") is not None, "low_data", None, "the protocol's block of settings")
    check_unknown_keys(cfg.low_data, LowDataSettings, prefix="low_data.")  # a typo is refused, never ignored
    validate_common(cfg)  # data_root, device (cuda needs a GPU), threads, n_boot, run_dir/out_dir, progress
    p = cfg.low_data
    if p.top_layers is not None:
        check_int("low_data.top_layers", p.top_layers, low=1)
    if cfg.stage in ("train", "all"):
        validate_model(cfg.model, cfg.data_root)
        check_prefix_positions(cfg.model, p.prefix_len, p.max_len)
        check_top_layers(cfg.model, p.top_layers)
    if cfg.max_minutes is not None:
        check_number("max_minutes", cfg.max_minutes, low=0, low_open=True)
    check_list("low_data.datasets", p.datasets, item_check=lambda f, v: check_choice(f, v, ("e2e", "webnlg")), unique=True)
    check_list("low_data.ns", p.ns, item_check=lambda f, v: check_int(f, v, low=1), unique=True)
    check_list("low_data.replicates", p.replicates, item_check=lambda f, v: check_int(f, v, low=0), unique=True)
    by_n = p.get("replicates_by_n")
    if by_n is not None:
        require(OmegaConf.is_dict(by_n) or isinstance(by_n, dict), "low_data.replicates_by_n", by_n,
                "null or a map from n to a number of replicates, e.g. {50: 5, 100: 3}")
        for k, v in by_n.items():
            require(str(k).isdigit() and int(k) >= 1, "low_data.replicates_by_n", k, "a sample size n >= 1 as the key")
            check_int(f"low_data.replicates_by_n.{k}", v, low=1)
    check_list("low_data.structures", p.structures, item_check=lambda f, v: check_choice(f, v, structures_of("low_data")),
               unique=True)
    check_list("low_data.inits", p.inits, item_check=lambda f, v: check_choice(f, v, INITS), unique=True)
    per_n = check_choice("low_data.lr_selection", p.get("lr_selection", "per_cell"), LR_SELECTIONS) == "per_n"
    for s in p.structures:
        require(s in p.lr_grid, f"low_data.lr_grid.{s}", None, "a list of learning rates (the structure is in low_data.structures)")
        check_list(f"low_data.lr_grid.{s}", p.lr_grid[s], item_check=lambda f, v: check_number(f, v, low=0, low_open=True),
                   unique=True)
        if per_n:
            require(len(p.lr_grid[s]) >= 3, f"low_data.lr_grid.{s}", list(p.lr_grid[s]),
                    "at least 3 learning rates with low_data.lr_selection=per_n (the edge rule extends the grid by "
                    "the ratio of its two outermost values)")
    if per_n:
        t = p.get("tuning")
        require(t is not None, "low_data.tuning", t, "a block {replicate, max_extensions} with low_data.lr_selection=per_n")
        check_int("low_data.tuning.replicate", t.replicate, low=0)
        check_int("low_data.tuning.max_extensions", t.max_extensions, low=0)
        for n in p.ns:
            require(int(t.replicate) in replicates_of(cfg, n), "low_data.tuning.replicate", t.replicate,
                    f"one of the replicates of n={n} ({replicates_of(cfg, n)}): each n is tuned on it")
    if "words" in p.inits:
        for d in p.datasets:
            require(isinstance(p.init_text.get(d), str) and p.init_text.get(d).strip() != "", f"low_data.init_text.{d}",
                    p.init_text.get(d), "a non-empty text (init=words needs real task words)")
    b = cfg.budget_check
    require(isinstance(b.run, bool), "budget_check.run", b.run, "true or false")
    check_choice("budget_check.structure", b.structure, structures_of("low_data"))
    check_int("budget_check.max_steps", b.max_steps, low=1)
    check_list("budget_check.lr_grid", b.lr_grid, item_check=lambda f, v: check_number(f, v, low=0, low_open=True), unique=True)
    require(not (b.run and per_n), "budget_check.run", b.run, "false with low_data.lr_selection=per_n (the per-n "
            "protocol extends its grids until the selection is interior instead)")
    check_int("low_data.prefix_len", p.prefix_len, low=1)
    if p.top_layers is not None:
        require("infix" not in p.structures, "low_data.top_layers", p.top_layers,
                "null (every layer) while low_data.structures has 'infix' (the infix needs every layer)")
    check_int("low_data.hidden", p.hidden, low=1)
    if p.embed_dim is not None:
        check_int("low_data.embed_dim", p.embed_dim, low=1)
    check_int("low_data.n_dev", p.n_dev, low=1)
    if p.n_test is not None:
        check_int("low_data.n_test", p.n_test, low=1)
    check_int("low_data.max_len", p.max_len, low=4)
    f = p.fit
    for name, low in (("max_steps", 1), ("batch_size", 1), ("eval_every", 1), ("patience", 1), ("train_rows", 1),
                      ("eval_rows", 1), ("warmup", 0)):
        check_int(f"low_data.fit.{name}", f[name], low=low)
    require(f.warmup < f.max_steps, "low_data.fit.warmup", f.warmup, f"smaller than low_data.fit.max_steps={f.max_steps}")
    check_choice("low_data.fit.schedule", f.get("schedule", "linear"), SCHEDULES)
    check_choice("low_data.fit.eval_unit", f.get("eval_unit", "steps"), EVAL_UNITS)
    check_number("low_data.fit.weight_decay", f.weight_decay, low=0)
    check_number("low_data.fit.grad_clip", f.grad_clip, low=0)
    t = p.test
    for name in ("num_beams", "max_new_tokens", "gen_rows", "nll_rows"):
        check_int(f"low_data.test.{name}", t[name], low=1)
    check_number("low_data.test.length_penalty", t.length_penalty)
    check_choice("low_data.test.references", t.get("references", "all"), TEST_REFERENCES)
    check_list("low_data.metrics", p.metrics, item_check=lambda f_, v: check_choice(f_, v, E2E_METRICS), unique=True)
