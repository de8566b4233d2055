"""The planted-prefix experiment's smoke setting end to end (tiny model): tables, slope tables and figures."""
import pandas as pd
from pathlib import Path

from hydra import compose, initialize_config_dir

from .conftest import needs_data


def _cfg(name, tmp_path, extra):
    conf = Path(__file__).resolve().parents[2] / "experiments" / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        return compose(config_name=name, overrides=["setting=smoke", f"run_dir={tmp_path}/runs",
                                                    f"out_dir={tmp_path}/fig", *extra])


@needs_data
def test_planted_prefix_smoke(tmp_path):
    from experiments import planted_prefix

    cfg = _cfg("planted_prefix", tmp_path, ["planted.seeds=[0]", "planted.ns=[4,8]"])
    assert cfg.model.name == "tiny"
    planted_prefix.run(cfg)
    df = pd.read_csv(tmp_path / "fig" / "planted_shared.csv")
    assert len(df) == 2 * 3 and set(df.structure) == {"independent", "shared", "deep_shared"}
    assert (df.kl >= 0).all() and (df.rel_dist > 0).all()
    assert (tmp_path / "fig" / "planted_shared_kl.png").is_file()
    planted_prefix.run(cfg)  # resumable: everything recorded, nothing refitted
    assert len(pd.read_csv(tmp_path / "fig" / "planted_shared.csv")) == 6

# the low-data protocol's smoke run: tests/lm/test_low_data_protocol.py
