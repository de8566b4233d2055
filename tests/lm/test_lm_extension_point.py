"""A new real-model prefix structure is ONE class, defined here (outside reparam/), registered with
reparam.lm.structures.register: the encoder, the planted study (truth, student, tables, figures) and the low-data
protocol take it with no edit anywhere else.

`low_rank_test`: latents p_i in R^r through ONE learned linear map, k_i, v_i = W p_i (no hidden layer, no
bias). It declares its own truth family, so its planted students are fitted to a truth of its own kind.
"""
from pathlib import Path
from typing import ClassVar

import pandas as pd
import pytest
import torch
import torch.nn as nn
from hydra import compose, initialize_config_dir

from reparam.experiments import planted_prefix as app  # also registers the apps' Hydra job logging (reparam.app)
from reparam.lm import planted as pl
from reparam.lm.prefix import KVDims, PrefixConfig, PrefixEncoder
from reparam.lm.structures import (STRUCTURES, LMStructure, register, rescale_map, structures_of, to_flat,
                                   unregister, word_kv)
from reparam.validation import ConfigError

from .conftest import needs_data

NAME = "low_rank_test"
CONF = Path(__file__).resolve().parents[2] / "experiments" / "conf"


class LowRank(LMStructure):
    """k_i, v_i = W p_i: a learned linear map of learned latents (outside the theorems: W is estimated)."""

    name: ClassVar[str] = NAME
    studies: ClassVar[tuple[str, ...]] = ("planted", "low_data")
    fitted_to: ClassVar[str] = NAME
    plants: ClassVar[str | None] = NAME

    def build(self, enc, g):
        r = enc.cfg.embed_dim or 4
        enc.embedding = nn.Embedding(enc.cfg.prefix_len, r)
        enc.transform = nn.Sequential(nn.Linear(r, enc.dims.n_layers * 2 * enc.dims.kv_dim, bias=False))
        with torch.no_grad():
            enc.embedding.weight.normal_(0.0, 1.0, generator=g)
            enc.transform[0].weight.normal_(0.0, r ** -0.5, generator=g)

    def flat_prefix(self, enc):
        return enc.transform(enc.embedding.weight)

    @torch.no_grad()
    def init_from_words(self, enc, base, ids, first=0):
        residual = to_flat(word_kv(base, ids)[first:]).to(enc.embedding.weight.dtype) - self.flat_prefix(enc)
        enc.transform[0].weight.add_((torch.linalg.pinv(enc.embedding.weight) @ residual).T)

    def plant(self, enc, target_rms):
        rescale_map(enc, target_rms)  # its output layer scaled to the model's key/value RMS: still W p_i


@pytest.fixture
def low_rank():
    register(LowRank)
    yield LowRank
    unregister(NAME)


def test_registry_declarations_and_unregistering(low_rank):
    assert NAME in structures_of("planted") and NAME in structures_of("low_data")
    assert NAME not in structures_of("planted")[:4]  # registered after the built-in ones
    assert not low_rank().in_theorems and pl.PlantedConfig(structures=[NAME]).family(NAME) == NAME
    unregister(NAME)
    assert NAME not in STRUCTURES
    with pytest.raises(ValueError, match="structures"):
        pl.PlantedConfig(structures=[NAME])
    register(LowRank)


def test_encoder_and_words_init(low_rank, tiny):
    """The encoder builds it by name; its words init reproduces the words' keys/values (L <= r: exact)."""
    base, tok = tiny
    dims = KVDims.from_config(base.config)
    enc = PrefixEncoder(PrefixConfig(structure=NAME, prefix_len=3, embed_dim=8, seed=1), dims, network=base)
    assert enc().shape == (dims.n_layers, 2, dims.kv_heads, 3, dims.head_dim)
    assert sum(p.numel() for p in enc.parameters() if p.requires_grad) == 3 * 8 + 8 * dims.n_layers * 2 * dims.kv_dim
    ids = [5, 17, 33]
    enc.structure.init_from_words(enc, base, ids)
    torch.testing.assert_close(enc(), word_kv(base, ids), rtol=1e-4, atol=1e-4)


def _planted_cfg(tmp_path, extra=()):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="planted_prefix",
                       overrides=["study=smoke", f"run_dir={tmp_path}/runs", f"out_dir={tmp_path}/fig", *extra])


def test_new_structure_runs_through_the_planted_smoke_study(low_rank, tmp_path):
    cfg = _planted_cfg(tmp_path, [f"planted.structures=[{NAME},shared_fixed]", "study.ns=[4,8,16]"])
    assert app.run(cfg) == 0  # mode=run: fit, then tables, figures and the check
    fits = pd.read_csv(tmp_path / "fig" / "planted_fits.csv")
    mine = fits[fits.structure == NAME]
    assert len(mine) == 2 * 3 * 3  # regimes x sizes x replicates, 1 start each
    assert set(mine.truth) == {NAME} and not mine.in_theorems.any() and mine.trainable.gt(0).all()
    assert mine[["voronoi", "rel_dist", "kl"]].notna().all().all() and (mine.kl_truth_vs_base > 0).all()
    # its truth is its own planted draw at the model's key/value scale (the recomputed references agree)
    est = pd.read_csv(tmp_path / "fig" / "planted_estimates.csv")
    assert est[est.structure == NAME]["voronoi_scale"].notna().all()
    slopes = pd.read_csv(tmp_path / "fig" / "planted_slopes.csv")
    rows = slopes[slopes.structure == NAME]
    assert set(rows.error) == set(pl.ERRORS)
    # THEORY predicts nothing for the prefix error of a structure outside the theorems; the KL of any estimate at
    # the parametric rate is predicted for every structure (slope -1)
    prefix_errors = rows[rows.error != "kl"]
    assert prefix_errors.predicted.isna().all() and prefix_errors.verdict.isin(["measured", "insufficient"]).all()
    assert (rows[rows.error == "kl"].predicted == -1.0).all()
    assert f"| {NAME} | exact | voronoi |" in (tmp_path / "fig" / "planted_check.md").read_text()


def test_unknown_planted_student_is_refused_by_name(tmp_path):
    with pytest.raises(ConfigError, match=r"planted.*low_rank_test"):
        pl.validate_study(_planted_cfg(tmp_path, [f"planted.structures=[{NAME}]"]))


@needs_data
def test_new_structure_runs_through_the_low_data_smoke_run(low_rank, tmp_path):
    from reparam.experiments import low_data

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="low_data", overrides=[
            "setting=smoke", "stage=all", f"run_dir={tmp_path}/runs", f"out_dir={tmp_path}/fig", "low_data.datasets=[e2e]",
            "low_data.metrics=[bleu]", f"low_data.structures=[{NAME},independent]", "low_data.inits=[random,words]",
            f"+low_data.lr_grid.{NAME}=[0.01]"])
    low_data.run(cfg)
    df = low_data.table(cfg)
    mine = df[df.structure == NAME]
    assert len(mine) == 2 * 2  # ns x inits
    assert (mine.test_nll > 0).all() and mine.bleu.notna().all()
