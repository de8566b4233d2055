"""Training plumbing of the real-transformer studies: the torch setup of a run and the batch order.

The trainers themselves live with what they train: every low-data configuration is trained by
`reparam.lm.multiprefix.fit` (many prefixes in one forward pass), the planted students by the L-BFGS estimator of
`reparam.lm.planted.estimator`.
"""

from __future__ import annotations

import numpy as np
import torch

from reparam.validation import check_device


def setup_torch(threads: int = 1, device: str = "cpu") -> torch.device:
    """Limit CPU threads (the machine is shared) and check the device exists (reparam.validation.check_device)."""
    if threads and threads > 0:
        torch.set_num_threads(threads)
    return check_device(device)


def batch_indices(n: int, batch_size: int, step: int, seed: int) -> np.ndarray:
    """Indices of the batch at `step`: epochs are seeded permutations of range(n), so the batch order is a pure
    function of (seed, step): every member of a run sees the same batches, and a rerun replays them."""
    b = min(batch_size, n)
    per_epoch = max(n // b, 1)
    epoch, k = divmod(step, per_epoch)
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    return perm[k * b:(k + 1) * b]
