"""CPU timings of the low-data protocol's pieces on SmolLM2-135M, the basis of its GPU-time estimate (README).

    python -m experiments.low_data_timing --out figures/lm/low_data_cpu_timing.json [--threads 1]

Measures, on 8 training pairs of each dataset: one training step (forward + backward through the frozen model)
with 1 and with 5 configurations in the pass (one per structure), one no-gradient pass, and a 5-beam search of
2 test tables (64 new tokens at most). Records the load average, since a shared machine slows every number.
"""
from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from pathlib import Path

import torch

from reparam.lm.data import SEP, load_dataset, nested_subset
from reparam.lm.models import ModelConfig, load_model
from reparam.lm.multiprefix import Member, MultiPrefix, collate_split, encode_prompts, encode_split, word_ids


def measure(threads: int = 1, repeats: int = 2) -> dict:
    torch.set_num_threads(threads)
    warnings.simplefilter("ignore")
    base, tok = load_model(ModelConfig(name="smollm2", cache=".cache/reparam"))
    out = {"model": "smollm2", "threads": threads, "load_avg_start": os.getloadavg(), "cpu_count": os.cpu_count()}
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
            print(json.dumps(out), flush=True)
        items = load_dataset(dataset, "test", grouped=True)[:2]
        mp = MultiPrefix(base, groups[1], prefix_len=10, hidden=512)
        t = time.perf_counter()
        mp.generate(encode_prompts(tok, [i.source for i in items], SEP), [0], tok, max_new_tokens=64, num_beams=5)
        out[f"{dataset}_beam5_2items_s"] = time.perf_counter() - t
    out["load_avg_end"] = os.getloadavg()
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(prog="python -m experiments.low_data_timing")
    ap.add_argument("--out", required=True, help="JSON file to write")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    result = measure(args.threads)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))
