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


# ----------------------------------------------------------------------------- the E2E challenge's five metrics

E2E_METRICS = ("bleu", "nist", "meteor", "rouge_l", "cider")


def _mteval_tokens(texts: list[str]) -> list[list[str]]:
    """mteval-v13a tokenisation, lowercased (the E2E script scores case-insensitively)."""
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    tok = Tokenizer13a()
    return [tok(t.lower()).split() for t in texts]


def nist(hyps: list[str], refs: list[list[str]], n: int = 5) -> float:
    """Corpus NIST (n-grams up to 5, as mteval and the E2E script), nltk's implementation."""
    from nltk.translate.nist_score import corpus_nist

    if len(hyps) != len(refs):
        raise ValueError(f"nist: {len(hyps)} hypotheses but {len(refs)} reference lists")
    h = _mteval_tokens(hyps)
    if not any(h):
        return 0.0
    return float(corpus_nist([_mteval_tokens(r) for r in refs], h, n=n))


def e2e_metrics(hyps: list[str], refs: list[list[str]], metrics: tuple[str, ...] = E2E_METRICS) -> dict[str, float]:
    """BLEU, NIST, METEOR, ROUGE-L and CIDEr as the E2E NLG challenge reports them (Li & Liang's table).

    BLEU: corpus BLEU-4, mteval-13a tokens, case-insensitive (sacrebleu). NIST: n = 5 on the same tokens
    (nltk). METEOR 1.5, ROUGE-L (F, beta 1.2, best reference) and CIDEr: pycocoevalcap on PTB-tokenised
    lowercase text, as the challenge script runs coco-caption. BLEU, METEOR and ROUGE-L are x100.
    Needs pycocoevalcap and Java for METEOR, ROUGE-L and CIDEr (the PTB tokeniser is Java); asking for
    them without those raises an error that says so. Not checked bit-for-bit against the official script.
    """
    import sacrebleu

    unknown = set(metrics) - set(E2E_METRICS)
    if unknown:
        raise ValueError(f"e2e_metrics: metrics {sorted(unknown)} are not among {E2E_METRICS}")
    if len(hyps) != len(refs) or not hyps:
        raise ValueError(f"e2e_metrics: {len(hyps)} hypotheses and {len(refs)} reference lists (need equal, > 0)")
    out: dict[str, float] = {}
    if "bleu" in metrics:
        k = max(len(r) for r in refs)
        streams = [[r[j] if j < len(r) else None for r in refs] for j in range(k)]
        out["bleu"] = float(sacrebleu.corpus_bleu(hyps, streams, lowercase=True, tokenize="13a").score)
    if "nist" in metrics:
        out["nist"] = nist(hyps, refs)
    coco = [m for m in ("meteor", "rouge_l", "cider") if m in metrics]
    if coco:
        try:
            from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
        except ImportError as e:
            raise ImportError(f"metrics {coco} need pycocoevalcap: pip install 'reparam[lm-coco]' (and Java)") from e
        if not shutil.which("java"):
            raise RuntimeError(f"metrics {coco} need Java on PATH (the PTB tokeniser and METEOR are Java programs)")
        tok = PTBTokenizer()
        gts = tok.tokenize({i: [{"caption": r} for r in rs] for i, rs in enumerate(refs)})
        res = tok.tokenize({i: [{"caption": h}] for i, h in enumerate(hyps)})
        if "meteor" in coco:
            from pycocoevalcap.meteor.meteor import Meteor

            out["meteor"] = 100.0 * float(Meteor().compute_score(gts, res)[0])
        if "rouge_l" in coco:
            from pycocoevalcap.rouge.rouge import Rouge

            out["rouge_l"] = 100.0 * float(Rouge().compute_score(gts, res)[0])
        if "cider" in coco:
            from pycocoevalcap.cider.cider import Cider

            out["cider"] = float(Cider().compute_score(gts, res)[0])
    return {m: out[m] for m in metrics}
