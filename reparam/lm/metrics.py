"""Quality metrics for generated text and for LM fits.

BLEU (sacrebleu, corpus level, multi-reference), ROUGE-L (rouge_score, best reference per item,
averaged), and METEOR/CIDEr through pycocoevalcap when it and Java are available (optional extra
``reparam[lm-coco]``); when they are not, those keys are simply absent.
"""

from __future__ import annotations

import shutil

import torch
import torch.nn.functional as F


def bleu(hyps: list[str], refs: list[list[str]]) -> float:
    import sacrebleu

    if len(hyps) != len(refs):
        raise ValueError(f"bleu: {len(hyps)} hypotheses but {len(refs)} reference lists")
    k = max(len(r) for r in refs)
    # sacrebleu wants k parallel reference streams; items with fewer refs are padded with None (ignored)
    streams = [[r[j] if j < len(r) else None for r in refs] for j in range(k)]
    return float(sacrebleu.corpus_bleu(hyps, streams).score)


def rouge_l(hyps: list[str], refs: list[list[str]]) -> float:
    from rouge_score import rouge_scorer

    sc = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    vals = [max(sc.score(r, h)["rougeL"].fmeasure for r in rs) for h, rs in zip(hyps, refs)]
    return 100.0 * sum(vals) / max(len(vals), 1)


def coco_metrics(hyps: list[str], refs: list[list[str]]) -> dict[str, float]:
    """METEOR and CIDEr via pycocoevalcap (needs Java for METEOR); {} when unavailable."""
    out: dict[str, float] = {}
    try:
        from pycocoevalcap.cider.cider import Cider
    except ImportError:
        return out
    gts = {i: rs for i, rs in enumerate(refs)}
    res = {i: [h] for i, h in enumerate(hyps)}
    out["cider"] = float(Cider().compute_score(gts, res)[0])
    if shutil.which("java"):
        try:
            from pycocoevalcap.meteor.meteor import Meteor

            out["meteor"] = 100.0 * float(Meteor().compute_score(gts, res)[0])
        except Exception:  # noqa: BLE001 - METEOR's Java subprocess is fragile; report without it
            pass
    return out


def text_metrics(hyps: list[str], refs: list[list[str]]) -> dict[str, float]:
    return {"bleu": bleu(hyps, refs), "rouge_l": rouge_l(hyps, refs), **coco_metrics(hyps, refs)}


def token_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed next-token NLL and token count. logits (B, T, V), labels (B, T) with -100 = ignore."""
    lp = logits[:, :-1].float()
    tgt = labels[:, 1:]
    nll = F.cross_entropy(lp.reshape(-1, lp.shape[-1]), tgt.reshape(-1), ignore_index=-100, reduction="sum")
    return nll, (tgt != -100).sum()


def token_kl(teacher_logits: torch.Tensor, student_logits: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed KL(teacher || student) of next-token distributions over masked positions, and their count.

    logits (B, T, V), mask (B, T) of 0/1.
    """
    lt = F.log_softmax(teacher_logits.float(), -1)
    ls = F.log_softmax(student_logits.float(), -1)
    kl = (lt.exp() * (lt - ls)).sum(-1)  # (B, T)
    m = mask.to(kl.dtype)
    return (kl * m).sum(), m.sum()
