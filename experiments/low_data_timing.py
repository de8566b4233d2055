"""`reparam low-data-timing out=FILE [threads=1] [estimate_only=true]` (Hydra app): CPU timings of the low-data
protocol's pieces on SmolLM2-135M, the basis of its GPU-time estimate (README).

    reparam low-data-timing out=figures/lm/low_data_cpu_timing.json threads=1
    reparam low-data-timing out=figures/lm/low_data_cpu_timing.json estimate_only=true   # no measurement

Measures, on 8 training pairs of each dataset: one training step (forward + backward through the frozen model)
with 1 and with 5 configurations in the pass (one per structure), one no-gradient pass, and a 5-beam search of
2 test tables (64 new tokens at most). Records the load average, since a shared machine slows every number.
"""
from __future__ import annotations

import json
import logging
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from reparam.app import as_dictconfig, hydra_main
from reparam.lm.data import SEP, load_dataset, nested_subset
from reparam.lm.models import ModelConfig, load_model
from reparam.lm.multiprefix import Member, MultiPrefix, collate_split, encode_prompts, encode_split, word_ids
from reparam.console import say
from reparam.validation import (status_on_input_error, ConfigError, DataError, check_int, check_output_file, check_unknown_keys)

logger = logging.getLogger(__name__)

# the config folder by file path: `reparam <command>` imports this app as reparam.experiments.*, whose conf/
# is package data, not a Python package that Hydra could find by module name
CONF_DIR = str(Path(__file__).resolve().parent / "conf")
#: The protocol whose GPU time is estimated (read by gpu_estimate).
PROTOCOL = Path(CONF_DIR) / "low_data.yaml"


@dataclass
class LowDataTimingConf:
    """Settings of `reparam low-data-timing`.

    out: the JSON file to write: the timings and the GPU estimate (required). With estimate_only=true, the file of
        an earlier measurement, read and updated with a fresh estimate.
    threads: torch CPU threads of the measurement.
    estimate_only: only (re)compute the GPU estimate from the timings already in `out` (no model is loaded).
    data_root: the data root (null: REPARAM_DATA, else where `reparam data fetch` puts the data; docs/data.md).
    model: the model group, `model=smollm2` (the default: the protocol's model), `model=gpt2` or `model=tiny`; its
        fields (reparam.lm.models.ModelConfig):
        model.name: the registry key the group sets (gpt2 | smollm2 | tiny).
        model.path: smollm2: the folder holding its GGUF file; gpt2: a hub name or a local folder.
        model.cache: smollm2: the cache folder used when model.path is null (REPARAM_CACHE, else .cache/reparam).
        model.tokenizer_path: tiny/gpt2: a folder with vocab.json + merges.txt (null: <data_root>/gpt2-tokenizer).
        model.data_root: the shared data the model reads (its tokenizer); follows data_root.
        model.dtype: float32 | float64 | bfloat16 | float16, the weights' dtype.
        model.n_layer, model.n_head, model.n_embd, model.n_positions, model.seed: tiny only, the random-init GPT-2.
    """

    out: Optional[str] = None
    threads: int = 1
    estimate_only: bool = False
    model: ModelConfig = field(default_factory=lambda: ModelConfig(name="smollm2"))
    data_root: Optional[str] = None


ConfigStore.instance().store(name="low_data_timing_schema", node=LowDataTimingConf)


def measure(threads: int = 1, repeats: int = 2, model: ModelConfig | None = None) -> dict:
    torch.set_num_threads(threads)
    warnings.simplefilter("ignore")
    model = model or ModelConfig(name="smollm2", cache=".cache/reparam")
    base, tok = load_model(model)
    out = {"model": model.name, "threads": threads, "load_avg_start": os.getloadavg(), "cpu_count": os.cpu_count()}
    ids = word_ids(tok, "Describe the restaurant in one sentence from its attributes:", 10)
    groups = {1: [Member("shared", 1e-3)], 5: [Member(s, 1e-3) for s in ("independent", "shared", "deep_shared",
                                                                         "embedding_only", "infix")]}
    for dataset in ("e2e", "webnlg"):
        rows = encode_split(tok, nested_subset(load_dataset(dataset, "train"), 8, seed=0), 256, SEP)
        batch = collate_split(rows, tok.pad_token_id)
        out[f"{dataset}_batch_shape"] = list(batch["input_ids"].shape)
        for K, members in groups.items():
            mp = MultiPrefix(base, members, prefix_len=10, hidden=512, init_ids=ids)
            ks = list(range(K))
            steps = []
            for _ in range(repeats):  # the first is a warm-up
                t = time.perf_counter()
                s, c = mp.nll(batch, ks)
                (s / c).sum().backward()
                steps.append(time.perf_counter() - t)
            out[f"{dataset}_train_step_K{K}_s"] = steps[1:]
            t = time.perf_counter()
            with torch.no_grad():
                mp.nll(batch, ks)
            out[f"{dataset}_eval_pass_K{K}_s"] = time.perf_counter() - t
            say(logger, json.dumps(out))
        items = load_dataset(dataset, "test", grouped=True)[:2]
        mp = MultiPrefix(base, groups[1], prefix_len=10, hidden=512)
        t = time.perf_counter()
        mp.generate(encode_prompts(tok, [i.source for i in items], SEP), [0], tok, max_new_tokens=64, num_beams=5)
        out[f"{dataset}_beam5_2items_s"] = time.perf_counter() - t
    out["load_avg_end"] = os.getloadavg()
    return out


#: The one H100 measurement recorded for this model (figures/lm/COMMANDS.md, the earlier E2E run): 120 training
#: steps of 32 rows of E2E (<= 96 tokens) with one prefix took about 12 s.
H100_RECORDED = {"steps": 120, "rows": 32, "tokens": 80, "seconds": 12.0}


def gpu_estimate(timing: dict, conf: str | Path = PROTOCOL) -> dict:
    """GPU minutes per cell and in total for the protocol in `conf`, at the throughput of the recorded H100 run.

    Work is counted in token-passes of the frozen model (a backward pass to the activations costs about one
    more forward, so a training token counts 2, an evaluation token 1), with the row lengths measured by
    `measure` (padded batch of 8). Every cell is assumed to run all max_steps (early stopping only shortens it);
    beam search is counted as (prompt + 40 generated tokens) per beam, and it is latency-bound on a GPU, so its
    share is the least certain. An estimate: the H100 was measured at 32 rows per pass, the protocol uses more,
    which usually runs faster per row.
    """
    from omegaconf import OmegaConf

    from reparam.lm.data import load_dataset

    p = OmegaConf.load(conf).low_data
    configs = sum(len(p.lr_grid[s]) for s in p.structures) * len(p.inits)
    selected = len(p.structures) * len(p.inits)
    checks = p.fit.max_steps // p.fit.eval_every + 1
    per_token_s = H100_RECORDED["seconds"] / (2 * H100_RECORDED["steps"] * H100_RECORDED["rows"] * H100_RECORDED["tokens"])
    out = {"h100_recorded": H100_RECORDED, "configurations_per_cell": configs, "dev_checks_per_cell": checks}
    total = 0.0
    for dataset in p.datasets:
        T = timing[f"{dataset}_batch_shape"][1]
        items = load_dataset(dataset, "test", grouped=True)
        pairs = sum(len(t.refs) for t in items)
        work = {"train": 2 * p.fit.max_steps * configs * p.fit.batch_size * T,
                "dev": checks * configs * p.n_dev * T,
                "test_nll": selected * pairs * T,
                "beam": selected * len(items) * p.test.num_beams * (T / 2 + 40)}
        minutes = {k: v * per_token_s / 60 for k, v in work.items()}
        cell = sum(minutes.values())
        cells = len(p.ns) * len(p.replicates)
        out[dataset] = {"row_tokens": T, "test_items": len(items), "test_pairs": pairs, "minutes_per_cell": minutes,
                        "cell_minutes": cell, "cells": cells, "total_hours": cell * cells / 60}
        total += cell * cells / 60
    out["total_hours"] = total
    return out


def _timings(path: Path) -> dict:
    """The timings recorded in `path` (estimate_only=true); DataError when the file is not such a record."""
    try:
        timing = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path} is not a readable JSON timing record ({str(err).splitlines()[0]})") from None
    datasets = list(OmegaConf.load(PROTOCOL).low_data.datasets)
    missing = [f"{d}_batch_shape" for d in datasets if not isinstance(timing, dict) or f"{d}_batch_shape" not in timing]
    if missing:
        raise DataError(f"{path} lacks {missing}: it is not a timing record of this command (run it without "
                        f"estimate_only to measure)")
    return timing


def validate_cfg(cfg: Any) -> None:
    """Every check before any work (raises InputError naming the field)."""
    check_unknown_keys(cfg, LowDataTimingConf)
    if cfg.out is None:
        raise ConfigError("out=null is invalid: must be the JSON file to write (e.g. out=figures/lm/"
                          "low_data_cpu_timing.json)")
    check_int("threads", cfg.threads, low=1)
    out = check_output_file("out", str(cfg.out))
    if not cfg.estimate_only:  # the model files, before any is loaded (names model.path / model.cache)
        from reparam.lm.validation import validate_model

        validate_model(cfg.model, cfg.get("data_root"))
    if cfg.estimate_only:
        if not out.is_file():
            raise ConfigError(f"out={str(cfg.out)!r} is invalid with estimate_only=true: must be an existing timing "
                              f"record (run without estimate_only to measure)")
        _timings(out)


@status_on_input_error
def run(cfg: Any) -> int:
    """Measure (or, with estimate_only, read) the timings, add the GPU estimate, write `out`; returns the exit
    status (a user's mistake: one line on stderr, status 2). cfg: a DictConfig or a LowDataTimingConf."""
    cfg = as_dictconfig(cfg)
    validate_cfg(cfg)
    out = Path(str(cfg.out))
    result = _timings(out) if cfg.estimate_only else measure(
        int(cfg.threads), model=ModelConfig(**OmegaConf.to_container(cfg.model, resolve=True)))
    result["gpu_estimate"] = gpu_estimate(result)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    say(logger, json.dumps(result["gpu_estimate"], indent=1))
    return 0


main = hydra_main(run, "low_data_timing", __file__)


if __name__ == "__main__":
    main()
