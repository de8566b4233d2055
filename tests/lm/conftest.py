import pytest
import torch

from reparam.lm.models import ModelConfig, data_root, dataset_dir, load_model

DATA = data_root()
# where the loaders look (reparam.lm.datasets): tests that need the real files skip, saying how to get them
needs_data = pytest.mark.skipif(not (dataset_dir("e2e") / "trainset.csv").is_file(),
                                reason=f"E2E data not found at {dataset_dir('e2e')} (`reparam data fetch e2e`, or set "
                                       f"REPARAM_DATA)")
needs_tokenizer = pytest.mark.skipif(not (dataset_dir("gpt2-tokenizer") / "vocab.json").is_file(),
                                     reason=f"GPT-2 tokenizer files not found at {dataset_dir('gpt2-tokenizer')} "
                                            f"(`reparam data fetch gpt2-tokenizer`)")


@pytest.fixture(scope="session")
def tiny():
    """Random-init GPT-2 of the real architecture (real tokenizer when present), frozen."""
    torch.set_num_threads(1)
    return load_model(ModelConfig(name="tiny", n_layer=2, n_head=4, n_embd=64, seed=0))
