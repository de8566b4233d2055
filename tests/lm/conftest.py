import pytest
import torch

from reparam.lm.models import ModelConfig, data_root, load_model

DATA = data_root()
needs_data = pytest.mark.skipif(not (DATA / "e2e" / "trainset.csv").is_file(),
                                reason=f"shared data not found at {DATA} (set REPARAM_DATA)")
needs_tokenizer = pytest.mark.skipif(not (DATA / "gpt2-tokenizer" / "vocab.json").is_file(),
                                     reason=f"GPT-2 tokenizer files not found under {DATA}/gpt2-tokenizer")


@pytest.fixture(scope="session")
def tiny():
    """Random-init GPT-2 of the real architecture (real tokenizer when present), frozen."""
    torch.set_num_threads(1)
    return load_model(ModelConfig(name="tiny", n_layer=2, n_head=4, n_embd=64, seed=0))
