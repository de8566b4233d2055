"""Training loop: deterministic batches, interrupted-and-resumed == uninterrupted, checkpoint errors."""
import numpy as np
import pytest
import torch

from reparam.lm.prefix import PrefixConfig, PrefixModel
from reparam.lm.train import TrainConfig, batch_indices, lm_loss, load_checkpoint, train


def _rows(vocab, n=12, T=10, seed=0):
    """Random token rows valid for any vocabulary (the tiny model's is small without the real tokenizer)."""
    rng = np.random.default_rng(seed)
    high = min(500, vocab)
    return [{"input_ids": rng.integers(0, high, T).tolist(), "labels": rng.integers(0, high, T).tolist()}
            for _ in range(n)]


def test_batch_indices_cover_each_epoch():
    seen = np.concatenate([batch_indices(12, 4, s, seed=0) for s in range(3)])
    assert sorted(seen.tolist()) == list(range(12))
    assert np.array_equal(batch_indices(12, 4, 5, 1), batch_indices(12, 4, 5, 1))


@pytest.mark.parametrize("structure", ["independent", "shared"])
def test_resume_equals_uninterrupted(tiny, tmp_path, structure):
    model, tok = tiny
    rows = _rows(model.config.vocab_size)
    cfg = TrainConfig(steps=8, batch_size=4, lr=1e-2, warmup=2, checkpoint_every=3, seed=0, progress=False)
    pcfg = PrefixConfig(structure=structure, prefix_len=3, hidden=16, seed=0)

    full = PrefixModel(model, pcfg)
    r_full = train(full, rows, lm_loss, cfg, pad_id=0, checkpoint=tmp_path / "a.pt")

    part = PrefixModel(model, pcfg)
    first = train(part, rows, lm_loss, TrainConfig(**{**cfg.__dict__, "stop_after": 5}), pad_id=0,
                  checkpoint=tmp_path / "b.pt")
    assert not first["finished"] and load_checkpoint(tmp_path / "b.pt")["step"] == 5
    again = PrefixModel(model, pcfg)  # a fresh process: parameters come only from the checkpoint
    r_res = train(again, rows, lm_loss, cfg, pad_id=0, checkpoint=tmp_path / "b.pt")
    assert r_res["resumed_from"] == 5 and r_res["finished"]
    np.testing.assert_allclose(r_res["losses"], r_full["losses"], rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        assert torch.allclose(again.prefix(), full.prefix(), atol=1e-6)
    assert r_full["losses"][-1] < r_full["losses"][0]  # it actually trains


def test_checkpoint_mismatch_and_malformed(tiny, tmp_path):
    model, _ = tiny
    rows = _rows(model.config.vocab_size)
    pm = PrefixModel(model, PrefixConfig(structure="independent", prefix_len=2))
    train(pm, rows, lm_loss, TrainConfig(steps=2, batch_size=4, progress=False), 0, checkpoint=tmp_path / "c.pt")
    with pytest.raises(ValueError, match="lr"):
        train(pm, rows, lm_loss, TrainConfig(steps=2, batch_size=4, lr=0.5, progress=False), 0,
              checkpoint=tmp_path / "c.pt")
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="bad.pt"):
        train(pm, rows, lm_loss, TrainConfig(steps=2, progress=False), 0, checkpoint=tmp_path / "bad.pt")
