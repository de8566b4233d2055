"""Experiment 2: low-data table-to-text (E2E, WebNLG 2017) with each prefix structure (THEORY section 6).

For each dataset, n (nested training subsets drawn by seed), seed and structure: fit a fresh prefix on
the n examples (LM loss on the text only, same optimiser budget for every n and structure), then on a
fixed held-out test subset measure the test NLL of the references and the quality of greedy
generations (BLEU, ROUGE-L; METEOR/CIDEr when pycocoevalcap is installed).

Run:  python -m experiments.low_data                  (real setting, SmolLM2-135M, E2E)
      python -m experiments.low_data setting=smoke    (tiny model, < 1 minute)
"""

from __future__ import annotations

import json
import time

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from reparam.lm.data import Example, encode_examples, load_dataset, nested_subset
from reparam.lm.metrics import text_metrics
from reparam.lm.prefix import PrefixConfig, PrefixModel
from reparam.lm.runner import Log, prepare_model, repo_path, stamp, summary_table, write_outputs
from reparam.lm.train import TrainConfig, evaluate_nll, generate_texts, lm_loss, train

KEY = ["dataset", "structure", "n", "replicate"]


def run(cfg: DictConfig) -> None:
    p = cfg.low_data
    base, tok, dev = prepare_model(OmegaConf.to_container(cfg.model, resolve=True), cfg.device, cfg.threads)
    pad = tok.pad_token_id
    run_dir = repo_path(cfg.run_dir) / "low_data"
    log = Log(run_dir / "results.jsonl", KEY)
    t_all = time.time()
    for dataset in p.datasets:
        train_pool = load_dataset(dataset, "train", cfg.data_root)
        test_items = nested_subset(load_dataset(dataset, "test", cfg.data_root, grouped=True), p.n_test, seed=12345)
        test_rows = encode_examples(tok, [Example(t.source, r) for t in test_items for r in t.refs], p.max_len)
        for seed in p.seeds:
            for n in sorted(p.ns):
                train_rows = encode_examples(tok, nested_subset(train_pool, int(n), seed=seed), p.max_len)
                for structure in p.structures:
                    key = {"dataset": dataset, "structure": structure, "n": int(n), "replicate": int(seed)}
                    if log.has(key):
                        continue
                    pcfg = PrefixConfig(structure=structure, prefix_len=p.prefix_len, embed_dim=p.embed_dim,
                                        hidden=p.hidden, seed=10_000 + seed)
                    model = PrefixModel(base, pcfg).to(dev)
                    tcfg = TrainConfig(**OmegaConf.to_container(p.train, resolve=True), seed=seed,
                                       progress=cfg.progress)
                    ckpt = run_dir / "ckpt" / f"{dataset}_{structure}_n{n}_s{seed}.pt"
                    res = train(model, train_rows, lm_loss, tcfg, pad, checkpoint=ckpt,
                                desc=f"{dataset} {structure} n={n} s={seed}")
                    if not res["finished"]:
                        print(f"stopped early at step {res['steps']} (stop_after); rerun to resume from {ckpt}")
                        return
                    t_eval = time.time()
                    nll = evaluate_nll(model, test_rows, pad, progress=cfg.progress)
                    hyps = generate_texts(model, tok, [t.source for t in test_items], p.max_new_tokens,
                                          progress=cfg.progress)
                    scores = text_metrics(hyps, [t.refs for t in test_items])
                    samples = run_dir / "generations" / f"{dataset}_{structure}_n{n}_s{seed}.jsonl"
                    samples.parent.mkdir(parents=True, exist_ok=True)
                    with open(samples, "w") as f:
                        for t, h in zip(test_items, hyps):
                            f.write(json.dumps({"source": t.source, "hyp": h, "refs": t.refs}) + "\n")
                    row = {**key, "experiment": "low_data", "model": cfg.model.name, "prefix_len": p.prefix_len,
                           "steps": res["steps"], "train_loss_final": float(np.mean(res["losses"][-10:])),
                           "test_nll": nll, **scores, "n_test": len(test_items), "wall_s": res["wall_s"],
                           "eval_s": time.time() - t_eval, "device": str(dev), **stamp(OmegaConf.to_container(p))}
                    log.append(row)
                    ckpt.unlink(missing_ok=True)
                    print(f"[low_data] {dataset} {structure:12s} n={n:5d} seed={seed} nll={nll:.4f} "
                          f"bleu={scores['bleu']:.2f} rougeL={scores['rouge_l']:.2f} e.g. {hyps[0]!r}")
    print(f"[low_data] fits done in {time.time() - t_all:.0f}s")
    draw(cfg)


def draw(cfg: DictConfig) -> None:
    """Tables and figures from the recorded rows only."""
    run_dir, out_dir = repo_path(cfg.run_dir) / "low_data", repo_path(cfg.out_dir)
    df = Log(run_dir / "results.jsonl", KEY).frame()
    metrics = {"test_nll": "test NLL [nats/token]", "bleu": "BLEU", "rouge_l": "ROUGE-L"}
    metrics.update({k: k.upper() for k in ("meteor", "cider") if k in df.columns})
    from reparam.results import write_table

    for dataset, d in df.groupby("dataset"):
        write_outputs(d, out_dir, f"low_data_{dataset}", metrics, n_boot=cfg.n_boot)
        write_table(summary_table(d, list(metrics) + ["wall_s"], ["structure"]),
                    out_dir / f"low_data_{dataset}_summary.csv")
    print(f"[low_data] tables and figures in {out_dir}")


@hydra.main(version_base="1.3", config_path="conf", config_name="low_data")
def main(cfg: DictConfig) -> None:
    if cfg.get("draw_only", False):
        draw(cfg)
    else:
        run(cfg)


if __name__ == "__main__":
    main()
