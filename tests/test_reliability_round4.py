"""Caches are checked before they are trusted, every input is checked before any work, an interrupt ends in one
line: one command-line test per defect (each fails on the code before the fix), plus unit tests of the pieces.

Every run is the smallest study that exercises the path (one structure, one regime, n = 300, one replicate), with
its own kernel cache folder (REPARAM_KERNELS) so that no test sees another's library."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reparam import kernels
from reparam.sweep import without_timing
from reparam.validation import PreflightCallback

pytestmark = pytest.mark.skipif(os.name != "posix", reason="signals and file modes of a POSIX system")
needs_compiler = pytest.mark.skipif(subprocess.run(["sh", "-c", "command -v ${CC:-cc}"], capture_output=True).returncode,
                                    reason="no C compiler: the fused pass cannot be built")
SMALL = ["n=300", "replicates=1", "n_eval=1000", "structure=independent", "regime=exact", "figures=false",
         "workers=1", "progress=false"]


def reparam(args, env=None, timeout=300, cwd=None):
    """`reparam ARGS` in a fresh process; CompletedProcess (text)."""
    full = dict(os.environ, HYDRA_FULL_ERROR="0", **(env or {}))
    return subprocess.run([sys.executable, "-m", "reparam.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=full, cwd=cwd)


def lines(text):
    return [ln for ln in text.splitlines() if ln.strip()]


def said(run, needle):
    """The lines of a run (console lines go to stdout through Hydra's logging, or to stderr) that hold `needle`."""
    return [ln for ln in lines(run.stdout) + lines(run.stderr) if needle in ln]


def records(folder):
    latest = json.loads((Path(folder) / "provenance.json").read_text())
    return latest.pop("history", []) + [latest]


def rows(folder):
    """results.csv of a run without its wall times: the deterministic part (reparam.sweep.without_timing)."""
    return without_timing(Path(folder) / "results.csv")


@pytest.fixture
def env(tmp_path):
    """A kernel cache of this test's own, and a temporary folder (the cache's fallback) of its own."""
    (tmp_path / "tmp").mkdir()
    return {"REPARAM_KERNELS": str(tmp_path / "kernels"), "TMPDIR": str(tmp_path / "tmp")}


# ------------------------------------------------------------------ 1. the kernel cache is checked before use

@needs_compiler
def test_a_damaged_kernel_library_is_rebuilt_with_one_line_and_the_rows_are_unchanged(tmp_path, env):
    first = reparam(["convergence", *SMALL, f"hydra.run.dir={tmp_path / 'a'}"], env)
    assert first.returncode == 0, first.stderr
    (library,) = Path(env["REPARAM_KERNELS"]).glob("prefix_pass-*.so")
    os.truncate(library, 1000)  # a bus error when loaded, before the fix
    again = reparam(["convergence", *SMALL, f"hydra.run.dir={tmp_path / 'b'}"], env)
    assert again.returncode == 0, again.stderr
    (line,) = said(again, "compiled kernel")
    assert "fails its checksum" in line and "rebuilt" in line
    assert rows(tmp_path / "a") == rows(tmp_path / "b")
    assert records(tmp_path / "b")[-1]["solver_pass"]["pass"] == "fused"
    status = "from reparam import kernels; print(kernels.kernel_status()['pass'])"
    quiet = subprocess.run([sys.executable, "-c", status], capture_output=True, text=True, env=dict(os.environ, **env))
    assert quiet.stdout.strip() == "fused" and not quiet.stderr.strip()  # the rebuilt file is trusted, silently


@needs_compiler
def test_an_unwritable_kernel_cache_costs_a_build_in_a_private_folder_not_the_fused_pass(tmp_path, env):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    env = dict(env, REPARAM_KERNELS=str(blocker / "kernels"))  # under a file: the folder cannot be made
    run = reparam(["convergence", *SMALL, f"hydra.run.dir={tmp_path / 'a'}"], env)
    assert run.returncode == 0, run.stderr
    (line,) = said(run, "kernel cache")
    assert "cannot be written" in line
    chosen = records(tmp_path / "a")[-1]["solver_pass"]
    assert chosen["pass"] == "fused" and chosen["path"].startswith(env["TMPDIR"])


@needs_compiler
def test_a_cached_library_without_the_kernel_symbols_is_never_loaded(tmp_path, env):
    status = "from reparam import kernels; import json; print(json.dumps(kernels.kernel_status()))"
    python = lambda: subprocess.run([sys.executable, "-c", status], capture_output=True, text=True,  # noqa: E731
                                    env=dict(os.environ, **env), timeout=120)
    assert json.loads(python().stdout)["pass"] == "fused"
    (record,) = Path(env["REPARAM_KERNELS"]).glob("prefix_pass-*.json")
    entry = json.loads(record.read_text())
    # another library under the recorded name, with a record that matches it: it loads, but lacks the entry points
    source = tmp_path / "other.c"
    source.write_text("int something_else(void) { return 1; }\n")
    other = record.parent / entry["library"]
    subprocess.run([os.environ.get("CC", "cc"), "-shared", "-fPIC", "-o", str(other), str(source)], check=True)
    entry["sha256"] = kernels._sha256(other)
    record.write_text(json.dumps(entry))
    again = python()  # an AttributeError traceback before the fix
    assert again.returncode == 0, again.stderr
    chosen = json.loads(again.stdout)
    assert chosen["pass"] == "fused" and chosen["sha256"] != entry["sha256"]
    (line,) = lines(again.stderr)
    assert "is not the kernel" in line and "rebuilt" in line


# ------------------------------------------------------------------ 3. REPARAM_PASS is checked before any folder

@pytest.mark.parametrize("setting,needle", [({"REPARAM_PASS": "bogus"}, "REPARAM_PASS='bogus' is invalid"),
                                            ({"REPARAM_PASS": "fused", "CC": "no-such-compiler-xyz"},
                                             "REPARAM_PASS=fused, but no C compiler")])
def test_reparam_pass_is_checked_before_the_run_folder_is_made(tmp_path, env, setting, needle):
    folder = tmp_path / "run"
    run = reparam(["convergence", *SMALL, f"hydra.run.dir={folder}"], dict(env, **setting))
    assert run.returncode == 2
    assert lines(run.stderr) == [lines(run.stderr)[-1]] and needle in run.stderr, run.stderr
    assert not folder.exists()


# ------------------------------------------------------------------ 4. the truth's shape is sized before it is built

@pytest.mark.parametrize("field,value", [("d", 100_000), ("n_experts", 10_000_000), ("latent_dim", 1_000_000_000)])
def test_a_truth_too_large_for_the_machine_is_refused_in_one_line_naming_the_field(tmp_path, env, field, value):
    folder = tmp_path / "run"
    run = reparam(["convergence", *SMALL, "truth=random", f"truth.{field}={value}", f"hydra.run.dir={folder}"], env,
                  timeout=120)
    assert run.returncode == 2, run.stderr
    (line,) = lines(run.stderr)
    assert line.startswith(f"config error: truth.{field}={value} is too large for this machine: needs about")
    assert not folder.exists()


def test_a_sweep_with_one_truth_too_large_runs_no_job(tmp_path, env):
    sweep = tmp_path / "sweep"
    run = reparam(["convergence", "-m", *SMALL, "truth=random", "truth.d=2,100000,3", f"hydra.sweep.dir={sweep}"],
                  env, timeout=120)
    assert run.returncode == 2, run.stderr
    assert "job 1 (" in run.stderr and "truth.d=100000 is too large" in run.stderr
    assert not sweep.exists()


def _raises_memory_error(cfg):
    raise MemoryError("the validator ran out of memory")


def test_an_exception_escaping_the_preflight_ends_the_command_not_a_warning(capsys):
    callback = PreflightCallback(validator=f"{__name__}._raises_memory_error")
    with pytest.raises(SystemExit) as stop:
        callback.on_run_start(config=None)
    assert stop.value.code == 1
    err = capsys.readouterr().err
    assert "MemoryError: the validator ran out of memory" in err and "nothing was run" in err.splitlines()[-1]


# ------------------------------------------------------------------ 6. the solver pass is recorded and said

def test_provenance_records_the_solver_pass_and_a_fallback_is_said(tmp_path, env):
    run = reparam(["convergence", *SMALL, f"hydra.run.dir={tmp_path / 'a'}"], dict(env, CC="no-such-compiler-xyz"))
    assert run.returncode == 0, run.stderr
    (line,) = said(run, "solver pass")
    assert "tensor pass runs" in line and "no C compiler" in line
    record = records(tmp_path / "a")[-1]
    assert record["status"] == "finished"
    assert record["solver_pass"]["pass"] == "tensor" and "no C compiler" in record["solver_pass"]["why"]
    chosen = reparam(["convergence", *SMALL, f"hydra.run.dir={tmp_path / 'b'}"], dict(env, REPARAM_PASS="tensor"))
    assert chosen.returncode == 0 and not said(chosen, "solver pass")  # chosen, not a fallback: nothing to say
    assert records(tmp_path / "b")[-1]["solver_pass"]["why"] == "REPARAM_PASS=tensor"


@pytest.mark.slow
@needs_compiler
def test_resuming_rows_of_the_other_solver_pass_is_said(tmp_path, env):
    folder = tmp_path / "a"
    two = [a for a in SMALL if not a.startswith("n=")] + ["n_grid=[300,400]"]
    first = reparam(["convergence", *two, f"hydra.run.dir={folder}"], dict(env, REPARAM_PASS="tensor"))
    assert first.returncode == 0, first.stderr
    lines_before = (folder / "results.jsonl").read_text().splitlines()
    (folder / "results.jsonl").write_text("\n".join(lines_before[:1]) + "\n")  # one cell left to resume
    again = reparam(["convergence", *two, f"hydra.run.dir={folder}"], dict(env, REPARAM_PASS="fused"))
    assert again.returncode == 0, again.stderr
    (line,) = said(again, "solver pass")
    assert "tensor solver pass" in line and "fused pass" in line
    assert [r["solver_pass"]["pass"] for r in records(folder)] == ["tensor", "fused"]


# ------------------------------------------------------------------ 7. an interrupt ends in one line

def _interruptible():
    """Give the child the default SIGINT action, as a terminal would. A suite started in the background
    (`nohup pytest ... &`) runs with SIGINT ignored, a child inherits that, and Python then installs no
    KeyboardInterrupt handler: Ctrl-C could not be tested at all."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _interrupt_after_first_cell(args, env, sig=signal.SIGINT):
    proc = subprocess.Popen([sys.executable, "-m", "reparam.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ, HYDRA_FULL_ERROR="0", **env),
                            preexec_fn=_interruptible)
    deadline = time.monotonic() + 240
    for line in proc.stdout:  # the first finished cell: some rows are recorded, the large cell is in flight
        if "[sweep] cell" in line or time.monotonic() > deadline:
            break
    time.sleep(0.5)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


@pytest.mark.parametrize("workers", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_ctrl_c_says_what_was_kept_and_the_command_that_resumes(tmp_path, env, workers):
    folder = tmp_path / "run"
    args = ["convergence", "n_grid=[300,100000]", "replicates=2", "n_eval=1000", "structure=independent",
            "regime=over", "figures=false", f"workers={workers}", f"hydra.run.dir={folder}"]
    code, _, err = _interrupt_after_first_cell(args, env)
    assert code == 130, err
    (line,) = lines(err)  # a KeyboardInterrupt traceback before the fix
    assert line.startswith("interrupted: 2 of 4 fits are kept in ") and line.endswith("resumes the run"), line
    assert records(folder)[-1]["status"] == "interrupted"
    command = line.split("`")[1]
    assert command.startswith("reparam convergence ") and f"hydra.run.dir={folder}" in command
    resumed = reparam(["convergence", *args[1:]], env, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert "2 already in" in resumed.stdout
    assert [r["status"] for r in records(folder)] == ["interrupted", "finished"]


@pytest.mark.slow
def test_sigterm_ends_the_run_as_ctrl_c_does(tmp_path, env):
    folder = tmp_path / "run"
    args = ["convergence", "n_grid=[300,100000]", "replicates=2", "n_eval=1000", "structure=independent",
            "regime=over", "figures=false", "workers=1", f"hydra.run.dir={folder}"]
    code, _, err = _interrupt_after_first_cell(args, env, signal.SIGTERM)
    assert code == 130, err
    (line,) = lines(err)
    assert line.startswith("interrupted: 2 of 4 fits are kept in ") and records(folder)[-1]["status"] == "interrupted"


def test_ctrl_c_before_the_run_writes_nothing_and_says_so(tmp_path, env):
    folder = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "reparam.cli", "convergence", *SMALL, f"hydra.run.dir={folder}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ, **env),
                            preexec_fn=_interruptible)
    time.sleep(0.3)  # the command's libraries are still loading
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and lines(err) == [
        "interrupted before any result was written: nothing to resume, rerun the command to start again"], err
    assert not folder.exists()


def test_a_record_is_closed_as_failed_or_interrupted_with_its_reason(tmp_path):
    from reparam import provenance

    provenance.begin_record(tmp_path, "convergence", {"n": 1})
    provenance.note_kept(tmp_path, "3 of 9 fits are kept in results.jsonl")
    mine = os.path.realpath(tmp_path)  # (other tests of this process may have opened records elsewhere)
    assert (mine, "3 of 9 fits are kept in results.jsonl") in provenance.open_folders()
    assert mine in provenance.end_open_records("failed", "WriteError: disk full")
    record = records(tmp_path)[-1]
    assert record["status"] == "failed" and record["reason"] == "WriteError: disk full" and "ended_utc" in record
    assert mine not in [f for f, _ in provenance.open_folders(completed=True)]
    assert mine not in provenance.end_open_records("interrupted")  # an ended record stays as it ended
    provenance.begin_record(tmp_path, "convergence", {"n": 1})
    provenance.write_provenance(tmp_path)
    assert mine not in provenance.end_open_records("failed")  # a finished run is never marked failed afterwards
    assert [r["status"] for r in records(tmp_path)] == ["failed", "finished"]
