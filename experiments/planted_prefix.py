"""Experiment 1: planted prefix on a real transformer (THEORY section 6).

A frozen LM plus a TRUE prefix is the teacher. The true prefix is planted either through a shared MLP
from latent vectors (``planted.truth=shared``) or independently (``planted.truth=independent``), and
rescaled per layer so that its keys/values have the RMS of the model's own keys/values (times
``planted.scale``): the planted experts are then of the size real prompt experts have. Each student
structure is fitted on n real-text sequences to the teacher's next-token distributions (KL), from its
own random initialisation, with the same optimiser budget for every n and structure. Errors, against n:

* ``voronoi``   - Voronoi loss (THEORY section 4, weights 1: prefix keys have no bias) between learned
                  and true prefix atoms, per layer, averaged over layers. An atom = one prefix position's
                  [keys; values] over all KV heads of that layer (positions are exchangeable, hence matched).
* ``rel_dist``  - sqrt(sum ||atom_hat - nearest true atom||^2 / sum ||true atom||^2) over all layers.
* ``kl``        - held-out KL(teacher || student) per token (nats), on sequences never used in training.

Run:  python -m experiments.planted_prefix                      (real setting, SmolLM2-135M)
      python -m experiments.planted_prefix setting=smoke        (tiny model, < 1 minute)
"""

from __future__ import annotations

import time
from dataclasses import asdict

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from reparam.losses import voronoi_loss
from reparam.lm.data import encode_texts, load_e2e, nested_subset
from reparam.lm.prefix import KVDims, PrefixConfig, PrefixEncoder, PrefixModel, fixed_prefix, prefix_atoms
from reparam.lm.runner import Log, prepare_model, repo_path, stamp, summary_table, write_outputs
from reparam.lm.train import TrainConfig, distill_loss, evaluate_kl, train

KEY = ["truth", "structure", "n", "replicate"]


@torch.no_grad()
def natural_kv_rms(base, rows, pad_id, device) -> torch.Tensor:
    """RMS of the model's own cached keys/values per (layer, key|value): (layers, 2)."""
    from reparam.lm.data import collate

    b = {k: v.to(device) for k, v in collate(rows, pad_id).items()}
    cache = base(input_ids=b["input_ids"], attention_mask=b["attention_mask"], use_cache=True).past_key_values
    m = b["attention_mask"][:, None, :, None].float()  # (batch, 1, T, 1): only real tokens
    out = []
    for layer in cache.layers:
        out.append([((t.float() ** 2 * m).sum() / (m.sum() * t.shape[1] * t.shape[-1])).sqrt()
                    for t in (layer.keys, layer.values)])
    return torch.tensor(out)


def plant_truth(base, p: DictConfig, seed: int, rms: torch.Tensor) -> torch.Tensor:
    """The true prefix kv (layers, 2, kv_heads, L, head_dim), per-layer RMS matched to `rms` * scale."""
    dims = KVDims.from_config(base.config)
    cfg = PrefixConfig(structure="shared" if p.truth == "shared" else "independent", prefix_len=p.prefix_len,
                       embed_dim=p.embed_dim, hidden=p.hidden, init="normal", init_std=1.0, seed=100_000 + seed)
    with torch.no_grad():
        kv = PrefixEncoder(cfg, dims)().to(rms.device)  # shared: MLP(latent); independent: i.i.d. N(0, 1)
        cur = kv.pow(2).mean(dim=(2, 3, 4)).sqrt()  # (layers, 2)
        # per-(layer, k|v) rescaling keeps a shared truth inside the shared family (it rescales the last Linear)
        kv = kv * (p.scale * rms / cur)[:, :, None, None, None]
    return kv.detach()


def prefix_errors(kv_hat: torch.Tensor, kv_true: torch.Tensor) -> dict:
    a_hat, a_true = prefix_atoms(kv_hat.double().cpu()), prefix_atoms(kv_true.double().cpu())  # (layers, L, D)
    w_hat, w_true = torch.ones(a_hat.shape[:2], dtype=torch.float64), torch.ones(a_true.shape[:2], dtype=torch.float64)
    vor = voronoi_loss(a_hat, w_hat, a_true, w_true)  # (layers,)
    d2 = torch.cdist(a_hat, a_true).pow(2).min(dim=-1).values.sum()  # nearest true atom = Voronoi cell
    return {"voronoi": float(torch.as_tensor(vor).mean()), "rel_dist": float((d2 / a_true.pow(2).sum()).sqrt())}


def run(cfg: DictConfig) -> None:
    p = cfg.planted
    base, tok, dev = prepare_model(OmegaConf.to_container(cfg.model, resolve=True), cfg.device, cfg.threads)
    pad = tok.pad_token_id
    run_dir = repo_path(cfg.run_dir) / "planted"
    log = Log(run_dir / "results.jsonl", KEY)

    # real text: E2E references; training pool from train, held-out from dev (never trained on)
    pool_text = sorted({ex.target for ex in load_e2e("train", cfg.data_root)})
    test_text = sorted({ex.target for ex in load_e2e("dev", cfg.data_root)})
    test_rows = encode_texts(tok, nested_subset(test_text, p.n_test, seed=12345), p.seq_len)
    rms = natural_kv_rms(base, test_rows[:16], pad, dev).to(dev)
    n_max = max(p.ns)

    t_all = time.time()
    for seed in p.seeds:
        kv_true = plant_truth(base, p, seed, rms)
        teacher = fixed_prefix(base, kv_true).to(dev)
        pool = encode_texts(tok, nested_subset(pool_text, n_max, seed=seed), p.seq_len)  # nested in n
        kl_base = None
        for n in sorted(p.ns):
            for structure in p.structures:
                key = {"truth": p.truth, "structure": structure, "n": int(n), "replicate": int(seed)}
                if log.has(key):
                    continue
                pcfg = PrefixConfig(structure=structure, prefix_len=p.prefix_len, embed_dim=p.embed_dim,
                                    hidden=p.hidden, seed=10_000 + seed)
                student = PrefixModel(base, pcfg).to(dev)
                tcfg = TrainConfig(**OmegaConf.to_container(p.train, resolve=True), seed=seed, progress=cfg.progress)
                kl_init = evaluate_kl(teacher, student, test_rows, pad, progress=cfg.progress)
                if kl_base is None:
                    kl_base = evaluate_kl(teacher, base, test_rows, pad, progress=False)  # how much the truth matters
                ckpt = run_dir / "ckpt" / f"{p.truth}_{structure}_n{n}_s{seed}.pt"
                res = train(student, pool[:n], distill_loss(teacher), tcfg, pad, checkpoint=ckpt,
                            desc=f"{structure} n={n} s={seed}")
                if not res["finished"]:
                    print(f"stopped early at step {res['steps']} (stop_after); rerun to resume from {ckpt}")
                    return
                with torch.no_grad():
                    errs = prefix_errors(student.prefix(), kv_true)
                kl = evaluate_kl(teacher, student, test_rows, pad, progress=cfg.progress)
                row = {**key, "experiment": "planted_prefix", "model": cfg.model.name, "prefix_len": p.prefix_len,
                       "steps": res["steps"], "train_loss_final": float(np.mean(res["losses"][-10:])),
                       **errs, "kl": kl, "kl_init": kl_init, "kl_teacher_vs_base": kl_base,
                       "wall_s": res["wall_s"], "device": str(dev), **stamp(OmegaConf.to_container(p))}
                log.append(row)
                ckpt.unlink(missing_ok=True)  # the row is recorded; the optimiser state is no longer needed
                print(f"[planted] {structure:12s} n={n:5d} seed={seed} voronoi={errs['voronoi']:.4g} "
                      f"rel_dist={errs['rel_dist']:.4g} kl={kl:.4g} (init {kl_init:.3g}) {res['wall_s']:.0f}s")
    print(f"[planted] fits done in {time.time() - t_all:.0f}s")
    draw(cfg)


def draw(cfg: DictConfig) -> None:
    """Tables and figures from the recorded rows only."""
    run_dir, out_dir = repo_path(cfg.run_dir) / "planted", repo_path(cfg.out_dir)
    df = Log(run_dir / "results.jsonl", KEY).frame()
    df = df[df["truth"] == cfg.planted.truth]
    write_outputs(df, out_dir, f"planted_{cfg.planted.truth}",
                  {"voronoi": "Voronoi loss, prefix space (mean over layers)",
                   "rel_dist": "relative prefix distance", "kl": "held-out KL(teacher || student) [nats/token]"},
                  n_boot=cfg.n_boot)
    from reparam.results import write_table

    write_table(summary_table(df, ["voronoi", "rel_dist", "kl", "kl_init", "wall_s"], ["structure"]),
                out_dir / f"planted_{cfg.planted.truth}_summary.csv")
    print(f"[planted] tables and figures in {out_dir}")


@hydra.main(version_base="1.3", config_path="conf", config_name="planted_prefix")
def main(cfg: DictConfig) -> None:
    if cfg.get("draw_only", False):
        draw(cfg)
    else:
        run(cfg)


if __name__ == "__main__":
    main()
