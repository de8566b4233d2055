"""The batch order of every trainer: a pure function of (seed, step), each epoch a permutation."""
import numpy as np

from reparam.lm.train import batch_indices


def test_batch_indices_cover_each_epoch():
    seen = np.concatenate([batch_indices(12, 4, s, seed=0) for s in range(3)])
    assert sorted(seen.tolist()) == list(range(12))
    assert np.array_equal(batch_indices(12, 4, 5, 1), batch_indices(12, 4, 5, 1))
