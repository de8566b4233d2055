"""`reparam low-data-timing`: the GPU estimate recomputed from the committed CPU timings, and bad inputs."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

from .conftest import needs_data

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "figures" / "lm" / "low_data_cpu_timing.json"


@needs_data
def test_estimate_only_reproduces_the_committed_estimate(tmp_path):
    from reparam.experiments.low_data_timing import LowDataTimingConf, run

    out = tmp_path / "timing.json"
    shutil.copyfile(COMMITTED, out)
    assert run(LowDataTimingConf(out=str(out), estimate_only=True)) == 0
    assert json.loads(out.read_text()) == json.loads(COMMITTED.read_text())


def test_bad_inputs_stop_with_one_line(tmp_path):
    not_json = tmp_path / "x.json"
    not_json.write_text("not json")
    for args, needle in ([[], "out=null is invalid"],
                         [[f"out={tmp_path / 'none.json'}", "estimate_only=true"], "must be an existing timing record"],
                         [[f"out={not_json}", "estimate_only=true"], "is not a readable JSON timing record"],
                         [[f"out={tmp_path / 't.json'}", "threads=0"], "threads=0"]):
        proc = subprocess.run([sys.executable, "-m", "reparam.experiments.low_data_timing", *args], cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and needle in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, \
            proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]  # no outputs/ folder, no JSON written


def test_help_documents_every_setting_and_lists_no_group_of_the_other_experiments(tmp_path):
    import dataclasses

    from reparam.experiments.low_data_timing import LowDataTimingConf
    from reparam.lm.models import ModelConfig

    proc = subprocess.run([sys.executable, "-m", "reparam.experiments.low_data_timing", "--help"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    documented = proc.stdout.split("== Settings (key=value) ==")[0]
    for f in dataclasses.fields(LowDataTimingConf):
        assert f"\n{f.name}: " in documented, f.name
    for f in dataclasses.fields(ModelConfig):
        assert f"model.{f.name}" in documented, f.name
    assert "Configuration groups" not in proc.stdout and "setting:" not in proc.stdout and "study:" not in proc.stdout
    assert list(tmp_path.iterdir()) == []  # --help writes nothing
