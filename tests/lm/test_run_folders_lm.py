"""The LM commands: a command that cannot do what it was asked exits non-zero with one line, and writes nothing."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from reparam.lm.validation import check_prefix_positions, max_positions, require_recorded_rows
from reparam.validation import ConfigError, DataError

from .conftest import needs_data

ROOT = Path(__file__).resolve().parents[2]


def cli(module, *args, env=None, cwd=None, timeout=300):
    e = dict(os.environ, HYDRA_FULL_ERROR="0", **(env or {}))
    return subprocess.run([sys.executable, "-m", f"reparam.experiments.{module}", *args], cwd=cwd or ROOT,
                          capture_output=True, text=True, timeout=timeout, env=e)


def one_line(proc) -> bool:
    return len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_prefix_and_text_must_fit_the_model_positions():
    tiny = {"name": "tiny", "n_positions": 256}
    assert max_positions(tiny) == 256
    check_prefix_positions(tiny, 192, 64)  # exactly the 256 positions
    with pytest.raises(ConfigError, match=r"low_data.prefix_len=1000 is invalid: .* exceeds the 256 positions of "
                                          r"model 'tiny'; must be at most 192"):
        check_prefix_positions(tiny, 1000, 64)


def test_a_report_without_rows_is_an_error():
    with pytest.raises(DataError, match="no recorded rows of setting abc in runs/x/results.jsonl"):
        require_recorded_rows(0, "abc", "runs/x/results.jsonl")
    require_recorded_rows(3, "abc", "runs/x/results.jsonl")


@needs_data
def test_low_data_refuses_a_prefix_longer_than_the_model_positions(tmp_path):
    """Wired in experiments/low_data.py validate(): before the fix, an IndexError after the model loaded."""
    proc = cli("low_data", "setting=smoke", "stage=train", "low_data.prefix_len=1000", f"run_dir={tmp_path / 'run'}",
               f"out_dir={tmp_path / 'out'}")
    assert proc.returncode == 2 and one_line(proc), proc.stderr[-2000:]
    assert "low_data.prefix_len=1000 is invalid" in proc.stderr
    assert not (tmp_path / "run").exists() and not (tmp_path / "out").exists()


@needs_data
def test_low_data_report_without_rows_exits_non_zero(tmp_path):
    """Wired in experiments/low_data.py report_stage(): before the fix, exit 0 and nothing written."""
    proc = cli("low_data", "setting=smoke", "stage=report", f"run_dir={tmp_path / 'run'}",
               f"out_dir={tmp_path / 'out'}")
    assert proc.returncode == 2 and one_line(proc), proc.stderr[-2000:]
    assert "no recorded rows of setting" in proc.stderr and "stage=train" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_planted_draw_without_fits_writes_nothing(tmp_path):
    proc = cli("planted_prefix", "mode=draw", "study=smoke", f"run_dir={tmp_path / 'run'}",
               f"out_dir={tmp_path / 'out'}")
    assert proc.returncode == 2 and one_line(proc), proc.stderr[-2000:]
    assert "no recorded fits" in proc.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, env, needle", [
    (["model.cache=CACHE"], {}, "model.cache='CACHE' is invalid: must be a folder holding"),
    (["model.path=CACHE"], {}, "model.path='CACHE' is invalid: must be a folder holding"),
    ([], {"REPARAM_CACHE": "CACHE"}, "model.cache='CACHE' is invalid: must be a folder holding"),
])
def test_low_data_timing_takes_the_model_group_and_checks_its_files(tmp_path, args, env, needle):
    cache = str(tmp_path / "cache")
    args = [a.replace("CACHE", cache) for a in args]
    env = {k: v.replace("CACHE", cache) for k, v in env.items()}
    proc = cli("low_data_timing", f"out={tmp_path / 't.json'}", *args, env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2 and one_line(proc), proc.stderr[-2000:]
    assert needle.replace("CACHE", cache) in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_low_data_refuses_a_run_folder_another_process_is_writing(tmp_path):
    """Two chunks of one study started together would train the same cells twice: the second is refused."""
    import subprocess
    import sys
    import time

    folder = tmp_path / "runs" / "low_data"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from reparam.runfolder import acquire; "
                               f"acquire({str(folder)!r}); print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "reparam.cli", "low-data", "setting=smoke", "stage=train",
                              f"run_dir={tmp_path}/runs", f"out_dir={tmp_path}/fig", "low_data.datasets=[e2e]"],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 2, out.stderr
        assert "is in use" in out.stderr and str(folder) in out.stderr
        assert time.perf_counter() - t0 < 60  # refused at once, not after waiting for the holder
        assert not (folder / "results.jsonl").exists()
    finally:
        holder.kill()
