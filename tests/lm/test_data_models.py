"""Data loaders, linearisation, nested subsets, metrics, and clear errors for missing/malformed inputs."""
import pytest

from reparam.lm import data as D
from reparam.lm.metrics import bleu, rouge_l
from reparam.lm.models import ModelConfig, gpt2_tokenizer, load_model

from .conftest import needs_data, needs_tokenizer


def test_linearize():
    assert D.linearize_e2e("name[The Vaults], eatType[pub], near[Café Adriatic]") == \
        "name : The Vaults | eatType : pub | near : Café Adriatic"
    assert D.linearize_triples(["Aarhus | leaderName | Jacob_Bundsgaard"]) == "Aarhus : leaderName : Jacob Bundsgaard"
    with pytest.raises(ValueError):
        D.linearize_e2e("no slots here")


def test_nested_subsets():
    items = list(range(100))
    a, b = D.nested_subset(items, 10, seed=3), D.nested_subset(items, 40, seed=3)
    assert b[:10] == a and len(set(b)) == 40
    assert D.nested_subset(items, 10, seed=4) != a
    with pytest.raises(ValueError, match="n=101"):
        D.nested_subset(items, 101, seed=0)


@needs_data
def test_e2e_and_webnlg_load():
    tr = D.load_e2e("train")
    assert len(tr) == 42061 and " | " in tr[0].source
    te = D.load_e2e_test("test")
    assert len(te) == 630 and all(t.refs for t in te)
    wt = D.load_webnlg_test("test")
    assert len(wt) == 1862 - sum(0 for _ in [])  # grouping by source never merges into more items than entries
    assert all(" : " in t.source for t in wt[:20])


def test_missing_and_malformed_data(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "e2e" / "trainset.csv")):
        D.load_e2e("train", root=str(tmp_path))
    (tmp_path / "e2e").mkdir()
    (tmp_path / "e2e" / "trainset.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="mr,ref"):
        D.load_e2e("train", root=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="webnlg2017"):
        D.load_webnlg("train", root=str(tmp_path))
    (tmp_path / "webnlg2017" / "test").mkdir(parents=True)
    (tmp_path / "webnlg2017" / "test" / "testdata_with_lex.xml").write_text("<benchmark><entries>")
    with pytest.raises(ValueError, match="not valid XML"):
        D.load_webnlg("test", root=str(tmp_path))


def test_missing_models(tmp_path):
    with pytest.raises(FileNotFoundError, match="fetch smollm2"):
        load_model(ModelConfig(name="smollm2", path=str(tmp_path)))
    (tmp_path / "g").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_model(ModelConfig(name="gpt2", path=str(tmp_path / "g")))
    with pytest.raises(FileNotFoundError, match="vocab.json"):
        gpt2_tokenizer(tmp_path)
    with pytest.raises(ValueError, match="model.name"):
        load_model(ModelConfig(name="bert"))


@needs_tokenizer
def test_real_gpt2_tokenizer():
    tok = gpt2_tokenizer()
    assert tok.encode("Hello world") == [15496, 995]


def test_metrics():
    refs = [["the cat sat on the mat", "a cat sat"], ["hello there friend"]]
    assert bleu(["the cat sat on the mat", "hello there friend"], refs) == pytest.approx(100.0)
    assert bleu(["dog", "xyz"], refs) < 5
    assert rouge_l(["the cat sat on the mat", "hello there friend"], refs) == pytest.approx(100.0)
    assert 0 < rouge_l(["the cat", "hello"], refs) < 100


@needs_tokenizer
def test_encode_masks_prompt():
    tok = gpt2_tokenizer()
    rows = D.encode_examples(tok, [D.Example("name : X", "X is a pub.")], max_len=64)
    ids, labels = rows[0]["input_ids"], rows[0]["labels"]
    n_prompt = len(tok.encode("name : X" + D.SEP))
    assert labels[:n_prompt] == [-100] * n_prompt and labels[n_prompt:] == ids[n_prompt:]
    assert ids[-1] == tok.eos_token_id
