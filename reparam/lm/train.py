"""The one training loop both real-transformer experiments use, with checkpoint/resume, and evaluation.

Only the prefix is trained (the base LM is frozen). Batches are a pure function of (seed, step), and
the base model has no dropout in eval mode, so a run killed and restarted from its last checkpoint
replays exactly the steps an uninterrupted run would take: the checkpoint holds the prefix (and MLP)
parameters, the optimiser and scheduler state, the step and the loss history.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from .data import collate, collate_prompts
from .metrics import token_kl, token_nll
from .prefix import PrefixModel


@dataclass
class TrainConfig:
    """Optimisation settings of one prefix fit."""

    steps: int = 200  # optimiser steps (fixed budget, whatever n is)
    batch_size: int = 8  # sequences per step (capped at n)
    lr: float = 5e-3  # peak learning rate (AdamW)
    weight_decay: float = 0.0
    warmup: int = 10  # linear warm-up steps, then linear decay to 10% of lr
    grad_clip: float = 1.0  # max global grad norm (0 = off)
    checkpoint_every: int = 50  # steps between checkpoints (0 = only at the end)
    seed: int = 0  # seed of the batch order
    stop_after: int | None = None  # stop (as if killed) after this many steps in THIS call; for resume tests
    progress: bool = True  # tqdm bars


def setup_torch(threads: int = 1, device: str = "cpu") -> torch.device:
    """Limit CPU threads (the machine is shared) and check the device exists."""
    if threads and threads > 0:
        torch.set_num_threads(threads)
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} requested but CUDA is not available; use device=cpu")
    return dev


def batch_indices(n: int, batch_size: int, step: int, seed: int) -> np.ndarray:
    """Indices of the batch at `step`: epochs are seeded permutations of range(n) (a function of step only)."""
    b = min(batch_size, n)
    per_epoch = max(n // b, 1)
    epoch, k = divmod(step, per_epoch)
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    return perm[k * b:(k + 1) * b]


def _lr_lambda(cfg: TrainConfig):
    def f(step: int) -> float:
        if step < cfg.warmup:
            return (step + 1) / cfg.warmup
        frac = (step - cfg.warmup) / max(cfg.steps - cfg.warmup, 1)
        return 1.0 - 0.9 * min(frac, 1.0)

    return f


def _save_atomic(obj, path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)  # a crash mid-write never leaves a truncated checkpoint


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"checkpoint {path} is malformed ({e}); delete it to restart the run from scratch") from e


LossFn = Callable[[PrefixModel, dict], torch.Tensor]

#: TrainConfig fields that may differ between a checkpoint and its resume (they never change the result).
RESUME_IGNORED = {"progress", "stop_after", "checkpoint_every"}


def train(
    model: PrefixModel,
    rows: list[dict],
    loss_fn: LossFn,
    cfg: TrainConfig,
    pad_id: int,
    checkpoint: str | Path | None = None,
    desc: str = "train",
) -> dict:
    """Fit `model.prefix` on `rows` (encoded sequences) by minimising `loss_fn(model, batch)`.

    `batch` is `collate(rows[idx])` on the model's device plus `batch["index"]` (row indices, for
    losses that look up per-row targets). Resumes from `checkpoint` when it exists.
    Returns {"losses": [...], "steps": int, "resumed_from": int, "wall_s": float, "finished": bool}.
    """
    if not rows:
        raise ValueError("train: no training rows")
    device = next(model.base.parameters()).device
    params = [p for p in model.prefix.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"prefix structure {model.cfg.structure!r} has no trainable parameters")
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg))
    step, losses, resumed_from = 0, [], 0
    ckpt = Path(checkpoint) if checkpoint else None
    if ckpt is not None and ckpt.is_file():
        state = load_checkpoint(ckpt)
        now = asdict(cfg)
        for key in sorted(set(now) - RESUME_IGNORED):  # every setting that changes the result must match
            if state["train_config"].get(key) != now[key]:
                raise ValueError(
                    f"checkpoint {ckpt} was made with {key}={state['train_config'].get(key)}, now {now[key]}: "
                    f"delete it or use a new run folder"
                )
        if "prefix_config" in state and state["prefix_config"] != asdict(model.cfg):
            diff = sorted(k for k in asdict(model.cfg) if state["prefix_config"].get(k) != asdict(model.cfg)[k])
            raise ValueError(f"checkpoint {ckpt} was made with another prefix ({', '.join(diff)} differ): "
                             f"delete it or use a new run folder")
        model.prefix.load_state_dict(state["prefix"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        step, losses = state["step"], list(state["losses"])
        resumed_from = step

    def save():
        if ckpt is not None:
            _save_atomic(
                {"step": step, "prefix": model.prefix.state_dict(), "optimizer": opt.state_dict(),
                 "scheduler": sched.state_dict(), "losses": losses, "train_config": asdict(cfg),
                 "prefix_config": asdict(model.cfg)},
                ckpt,
            )

    t0, done_here = time.time(), 0
    model.prefix.train()
    bar = tqdm(total=cfg.steps, initial=step, desc=desc, disable=not cfg.progress, leave=False)
    while step < cfg.steps:
        if cfg.stop_after is not None and done_here >= cfg.stop_after:
            break
        idx = batch_indices(len(rows), cfg.batch_size, step, cfg.seed)
        batch = {k: v.to(device) for k, v in collate([rows[i] for i in idx], pad_id).items()}
        batch["index"] = torch.as_tensor(idx, device=device)
        loss = loss_fn(model, batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{desc}: non-finite loss {loss.item()} at step {step}; lower train.lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        step += 1
        done_here += 1
        bar.update(1)
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
        if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
            save()
    bar.close()
    save()
    model.prefix.eval()
    return {"losses": losses, "steps": step, "resumed_from": resumed_from, "wall_s": time.time() - t0,
            "finished": step >= cfg.steps}


# ----------------------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate_nll(model: PrefixModel, rows: list[dict], pad_id: int, batch_size: int = 16, progress: bool = True) -> float:
    """Mean per-token negative log-likelihood (nats) of the scored tokens of `rows`."""
    device = next(model.base.parameters()).device
    tot, cnt = 0.0, 0
    for s in tqdm(range(0, len(rows), batch_size), desc="eval nll", disable=not progress, leave=False):
        b = {k: v.to(device) for k, v in collate(rows[s:s + batch_size], pad_id).items()}
        logits = model(b["input_ids"], b["attention_mask"]).logits
        nll, c = token_nll(logits, b["labels"])
        tot, cnt = tot + float(nll), cnt + int(c)
    return tot / max(cnt, 1)


@torch.no_grad()
def evaluate_kl(teacher: torch.nn.Module, student: torch.nn.Module, rows: list[dict], pad_id: int,
                batch_size: int = 16, progress: bool = True) -> float:
    """Mean per-position KL(teacher || student) of next-token distributions on held-out `rows` (nats).

    Either model may be a PrefixModel or a bare HF causal LM (both take input_ids=, attention_mask=).
    """
    device = next(teacher.parameters()).device
    tot, cnt = 0.0, 0.0
    for s in tqdm(range(0, len(rows), batch_size), desc="eval kl", disable=not progress, leave=False):
        b = {k: v.to(device) for k, v in collate(rows[s:s + batch_size], pad_id).items()}
        lt = teacher(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
        ls = student(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
        kl, c = token_kl(lt, ls, b["attention_mask"])
        tot, cnt = tot + float(kl), cnt + float(c)
    return tot / max(cnt, 1.0)


@torch.no_grad()
def generate_texts(model: PrefixModel, tok, sources: list[str], max_new_tokens: int = 48, batch_size: int = 16,
                   progress: bool = True) -> list[str]:
    """Greedy continuations of `source + SEP` for each source, cut at eos/newline."""
    device = next(model.base.parameters()).device
    out = []
    for s in tqdm(range(0, len(sources), batch_size), desc="generate", disable=not progress, leave=False):
        b = {k: v.to(device) for k, v in collate_prompts(tok, sources[s:s + batch_size]).items()}
        new = model.generate(b["input_ids"], b["attention_mask"], max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        for row in new.tolist():
            if tok.eos_token_id in row:
                row = row[:row.index(tok.eos_token_id)]
            out.append(tok.decode(row, skip_special_tokens=True).split("\n")[0].strip())
    return out


def lm_loss(model: PrefixModel, batch: dict) -> torch.Tensor:
    """Mean token NLL of the labelled tokens (the low-data table-to-text objective)."""
    logits = model(batch["input_ids"], batch["attention_mask"]).logits
    nll, c = token_nll(logits, batch["labels"])
    return nll / c.clamp(min=1)


def distill_loss(teacher: PrefixModel) -> LossFn:
    """Mean KL(teacher || student) over real positions: fitting the teacher's next-token distributions."""

    def f(model: PrefixModel, batch: dict) -> torch.Tensor:
        with torch.no_grad():
            lt = teacher(batch["input_ids"], batch["attention_mask"]).logits
        ls = model(batch["input_ids"], batch["attention_mask"]).logits
        kl, c = token_kl(lt, ls, batch["attention_mask"])
        return kl / c.clamp(min=1)

    return f

