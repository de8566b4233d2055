"""Quality metrics for generated text: the E2E challenge's five metrics (`E2EScorer`, `e2e_metrics`) and the
plain BLEU (sacrebleu, corpus level, multi-reference) and ROUGE-L (rouge_score, best reference per item, averaged).
METEOR/CIDEr need pycocoevalcap and Java (optional extra ``reparam[lm-coco]``).
"""

from __future__ import annotations

import shutil


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


# ----------------------------------------------------------------------------- the E2E challenge's five metrics

E2E_METRICS = ("bleu", "nist", "meteor", "rouge_l", "cider")
#: axis labels of the low-data report; every score is drawn on a LINEAR axis against n (a bounded score has no
#: power law in n, so neither a log axis nor a log-log slope means anything for it)
METRIC_LABELS = {"test_nll": "test NLL [nats/token]", "bleu": "BLEU", "nist": "NIST", "meteor": "METEOR",
                 "rouge_l": "ROUGE-L", "cider": "CIDEr"}
#: the range of each bounded score (BLEU, METEOR and ROUGE-L are reported x100)
SCORE_RANGES = {"bleu": (0.0, 100.0), "meteor": (0.0, 100.0), "rouge_l": (0.0, 100.0)}


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


class E2EScorer:
    """BLEU, NIST, METEOR, ROUGE-L and CIDEr as the E2E NLG challenge reports them (Li & Liang's table).

    BLEU: corpus BLEU-4, mteval-13a tokens, case-insensitive (sacrebleu). NIST: n = 5 on the same tokens
    (nltk). METEOR 1.5, ROUGE-L (F, beta 1.2, best reference) and CIDEr: pycocoevalcap on PTB-tokenised
    lowercase text, as the challenge script runs coco-caption. BLEU, METEOR and ROUGE-L are x100.
    METEOR, ROUGE-L and CIDEr need pycocoevalcap and Java (the PTB tokeniser and METEOR are Java programs);
    asking for them without those raises an error that says so. Not checked bit-for-bit against the
    official script. One scorer keeps one METEOR process (its start takes ~25 s), so score many systems
    with one scorer; `score_many` tokenises the references once and all systems' outputs in one call.
    """

    def __init__(self, metrics: tuple[str, ...] | list[str] = E2E_METRICS):
        unknown = set(metrics) - set(E2E_METRICS)
        if unknown:
            raise ValueError(f"E2EScorer: metrics {sorted(unknown)} are not among {E2E_METRICS}")
        self.metrics = tuple(metrics)
        self.coco = [m for m in ("meteor", "rouge_l", "cider") if m in self.metrics]
        self._meteor = None
        if self.coco:
            try:
                import pycocoevalcap  # noqa: F401
            except ImportError as e:
                raise ImportError(f"metrics {self.coco} need pycocoevalcap: pip install 'reparam[lm-coco]' (and Java)") from e
            if not shutil.which("java"):
                raise RuntimeError(f"metrics {self.coco} need Java on PATH (the PTB tokeniser and METEOR are Java programs)")

    def score_many(self, systems: dict[str, list[str]], refs: list[list[str]]) -> dict[str, dict[str, float]]:
        """{system name: {metric: value}} for several systems' outputs on the same items."""
        import sacrebleu

        for name, hyps in systems.items():
            if len(hyps) != len(refs) or not hyps:
                raise ValueError(f"E2EScorer: system {name!r} has {len(hyps)} outputs for {len(refs)} items (need equal, > 0)")
        out = {name: {} for name in systems}
        k = max(len(r) for r in refs)
        streams = [[r[j] if j < len(r) else None for r in refs] for j in range(k)]
        for name, hyps in systems.items():
            if "bleu" in self.metrics:
                out[name]["bleu"] = float(sacrebleu.corpus_bleu(hyps, streams, lowercase=True, tokenize="13a").score)
            if "nist" in self.metrics:
                out[name]["nist"] = nist(hyps, refs)
        if self.coco:
            from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

            tok = PTBTokenizer()
            gts = tok.tokenize({i: [{"caption": r} for r in rs] for i, rs in enumerate(refs)})
            names = list(systems)
            flat = tok.tokenize({f"{j}:{i}": [{"caption": h}] for j, n in enumerate(names) for i, h in enumerate(systems[n])})
            for j, name in enumerate(names):
                res = {i: flat[f"{j}:{i}"] for i in range(len(refs))}
                out[name].update(self._coco_scores(gts, res))
        return {name: {m: out[name][m] for m in self.metrics} for name in systems}

    def _coco_scores(self, gts: dict, res: dict) -> dict[str, float]:
        out = {}
        if "meteor" in self.coco:
            from pycocoevalcap.meteor.meteor import Meteor

            self._meteor = self._meteor or Meteor()
            out["meteor"] = 100.0 * float(self._meteor.compute_score(gts, res)[0])
        if "rouge_l" in self.coco:
            from pycocoevalcap.rouge.rouge import Rouge

            out["rouge_l"] = 100.0 * float(Rouge().compute_score(gts, res)[0])
        if "cider" in self.coco:
            from pycocoevalcap.cider.cider import Cider

            out["cider"] = float(Cider().compute_score(gts, res)[0])
        return out


def e2e_metrics(hyps: list[str], refs: list[list[str]], metrics: tuple[str, ...] = E2E_METRICS) -> dict[str, float]:
    """The E2E challenge's metrics of one system (see `E2EScorer`)."""
    return E2EScorer(metrics).score_many({"system": hyps}, refs)["system"]
