"""One dataset's encoded rows for the low-data study: training examples, dev rows, test rows and prompts."""

from __future__ import annotations

from omegaconf import DictConfig

from reparam.lm.data import SEP, Example, load_dataset, nested_subset
from reparam.lm.models import default_cache
from reparam.lm.multiprefix import LowerStates, encode_prompts, encode_split
from reparam.validation import fingerprint, require

from .settings import model_settings

#: seeds of the fixed dev and test subsets (the same for every setting, so settings share their test tables)
DEV_SEED, TEST_SEED = 9_999, 12_345


class Pool:
    """One dataset's encoded dev rows, test rows and prompts, and its training examples (loaded once).

    Test rows: every (table, reference) pair, or with low_data.test.references=first the first reference of each
    table only (one row per table: the test NLL costs a fraction, and the paired difference between structures,
    taken on the same rows, stays precise). The BLEU of the outputs always uses every reference.

    With top-K prefixes (low_data.top_layers) every row also carries its lower-layer states, computed once
    here (dev, test) or on first use (training examples, shared by the nested subsets of every n).
    """

    def __init__(self, dataset: str, cfg: DictConfig, tok, base):
        p = cfg.low_data
        self.tok, self.max_len = tok, p.max_len
        model_key = fingerprint({"model": model_settings(cfg)})
        self._lower = LowerStates(base, p.top_layers, p.prefix_len, tok.pad_token_id,
                                  cache_dir=str(default_cache() / "lower_states"), model_key=model_key)
        self._train_rows: dict[tuple[str, str], dict] = {}
        self.train = load_dataset(dataset, "train", cfg.data_root)
        for n in p.ns:
            require(int(n) <= len(self.train), "low_data.ns", int(n), f"at most the {len(self.train)} {dataset} training examples")
        dev = load_dataset(dataset, "dev", cfg.data_root)
        require(p.n_dev <= len(dev), "low_data.n_dev", p.n_dev, f"at most the {len(dev)} {dataset} dev examples")
        self.dev_rows = self._lower(encode_split(tok, nested_subset(dev, p.n_dev, seed=DEV_SEED), p.max_len, SEP))
        items = load_dataset(dataset, "test", cfg.data_root, grouped=True)
        self.items = items if p.n_test is None else nested_subset(items, min(p.n_test, len(items)), seed=TEST_SEED)
        refs = (lambda t: t.refs[:1]) if p.test.get("references", "all") == "first" else (lambda t: t.refs)
        self.test_rows = self._lower(encode_split(tok, [Example(t.source, r) for t in self.items for r in refs(t)],
                                                  p.max_len, SEP))
        self.prompts = encode_prompts(tok, [t.source for t in self.items], SEP)

    def train_rows(self, examples: list[Example]) -> list[dict]:
        """Encoded training rows (with lower-layer states when top-K), each example encoded once per run."""
        new = [ex for ex in examples if (ex.source, ex.target) not in self._train_rows]
        if new:
            for ex, row in zip(new, self._lower(encode_split(self.tok, new, self.max_len, SEP))):
                self._train_rows[(ex.source, ex.target)] = row
        return [self._train_rows[(ex.source, ex.target)] for ex in examples]
