"""The Hydra entry point of every app in sims/ and experiments/ (`reparam <command>`, reparam.cli).

An app is a function `run(cfg) -> int | None` (the work, callable in-process by tests and other apps) and a
primary config `<app folder>/conf/<name>.yaml`; `hydra_main(run, "<name>", __file__)` makes its `main`:
one config folder found by file path (it works from a checkout, an editable install and a wheel), one
error convention (an InputError is one stderr line and exit status 2; a non-zero return is the exit status), and
one way to end early: Ctrl-C (SIGINT) or SIGTERM ends the run with one line saying what was kept and the command
that resumes it (exit status 130), and its provenance record says 'interrupted'; a run that fails says 'failed'.
"""
from __future__ import annotations

import functools
import importlib
import inspect
import os
import shlex
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from .console import INTERRUPTED_STATUS, NOTHING_WRITTEN
from .validation import ConfigError, check_output_dir, exit_on_input_error


# `hydra/job_logging: reparam`, the logging of every app: the lines an app prints as plain text on the console,
# and timed in its job log (<run folder>/<app>.log, opened at the first line: an app that logs nothing leaves none);
# not the font chatter of matplotlib's PDF backend, nor fontTools' warning about the dates in a font's header
JOB_LOGGING = {
    "version": 1,
    "formatters": {"plain": {"format": "%(message)s"}, "timed": {"format": "[%(asctime)s] %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain", "stream": "ext://sys.stdout"},
                 "file": {"class": "logging.FileHandler", "formatter": "timed", "delay": True,
                          "filename": "${hydra.runtime.output_dir}/${hydra.job.name}.log"}},
    "root": {"level": "INFO", "handlers": ["console", "file"]},
    "loggers": {"fontTools": {"level": "WARNING"}, "fontTools.ttLib.tables._h_e_a_d": {"level": "ERROR"},
                "matplotlib": {"level": "WARNING"}},
    "disable_existing_loggers": False,
}
ConfigStore.instance().store(group="hydra/job_logging", name="reparam", node=JOB_LOGGING)


def as_dictconfig(cfg: Any) -> DictConfig:
    """An app's config as a DictConfig: a schema dataclass (or dict), as tests and other apps pass it to run(),
    becomes a structured config; a composed DictConfig is returned as it is."""
    return cfg if isinstance(cfg, DictConfig) else OmegaConf.structured(cfg)


def hydra_main(run: Callable, config_name: str, app_file: str) -> Callable[[], None]:
    """`main()` of an app: Hydra composes `config_name` from the `conf` folder beside `app_file` and calls
    `run(cfg)`. The job (its log file, e.g. check.log) is named after run's module, as for a plain app."""
    config_dir = str(Path(app_file).resolve().parent / "conf")

    @functools.wraps(run)  # Hydra names the job after the wrapped function's module
    def task(cfg) -> None:
        from .provenance import end_open_records

        try:
            with _sigterm_interrupts():
                code = exit_on_input_error(run)(cfg)
        except KeyboardInterrupt:
            print(interrupt_line(), file=sys.stderr, flush=True)
            end_open_records("interrupted", "interrupted by a signal (Ctrl-C or SIGTERM)")
            sys.exit(INTERRUPTED_STATUS)
        except SystemExit as err:
            if err.code:
                end_open_records("failed", f"exit status {err.code}")
            raise
        except BaseException as err:
            end_open_records("failed", f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
            raise
        if code:
            end_open_records("failed", f"exit status {code}")
            sys.exit(code)

    hydra_app = hydra.main(version_base="1.3", config_path=config_dir, config_name=config_name)(task)

    @functools.wraps(hydra_app)
    def main() -> None:
        try:
            hydra_app()
        except KeyboardInterrupt:  # while Hydra composes the config, before the preflight or the run
            print(NOTHING_WRITTEN, file=sys.stderr, flush=True)
            sys.exit(INTERRUPTED_STATUS)

    return main




class _sigterm_interrupts:
    """Within: SIGTERM (a batch system's stop, `kill`) ends the run as Ctrl-C does, as a KeyboardInterrupt."""

    def __enter__(self):
        self.before = None
        if hasattr(signal, "SIGTERM") and _in_main_thread():
            self.before = signal.signal(signal.SIGTERM, self._raise)
        return self

    @staticmethod
    def _raise(signum, frame):
        raise KeyboardInterrupt

    def __exit__(self, *exc):
        if self.before is not None:
            signal.signal(signal.SIGTERM, self.before)
        return False


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def resume_command(folders: list[str]) -> str:
    """The command line that resumes this run: the one typed, plus hydra.run.dir (hydra.sweep.dir for a multirun)
    where the outputs were written into a folder the command line does not name (Hydra's dated folder: a rerun
    without it would start a new one)."""
    args = list(sys.argv[1:])
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
        multirun = hc.mode == RunMode.MULTIRUN
        key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
        folder = os.path.realpath(str(hc.sweep.dir if multirun else hc.runtime.output_dir))
        inside = any(f == folder or os.path.dirname(f) == folder for f in folders)
        named = [a.split("=", 1)[1] for a in args if "=" in a]  # a folder the user typed (out=, dir=) is kept
        if inside and not any(os.path.realpath(os.path.expanduser(v)) == folder for v in named if v):
            args.append(f"{key}={folder}")
        if multirun and "-m" not in args and "--multirun" not in args:
            args.insert(0, "-m")
    except (ImportError, ValueError):  # not inside a Hydra app
        pass
    program = sys.argv[0] if sys.argv[0].startswith("reparam ") else f"python {shlex.quote(sys.argv[0])}"
    return " ".join([program] + [shlex.quote(a) for a in args])


def interrupt_line() -> str:
    """The one line of an interrupted run: what it kept (each open run folder's note, reparam.provenance.note_kept)
    and the command that resumes it."""
    from .provenance import noted_folders, open_folders

    opened = open_folders(completed=True) + noted_folders()
    if not opened:  # an app that keeps no provenance record of its own: its result logs are what it wrote
        return f"interrupted: the results written so far are kept; `{resume_command([])}` resumes the run"
    kept = "; ".join(note or f"what {folder} holds is kept" for folder, note in opened)
    return f"interrupted: {kept}; `{resume_command([f for f, _ in opened])}` resumes the run"


# The resolvers the apps' configs use (registered on import: every app imports this module)
def output_dir(path: Any = None, skip: bool = False) -> str:
    """`hydra.run.dir` of a utility that writes into a folder the user names (`out=`, `dir=`): that folder, so
    that Hydra's log file (if the app keeps one) lands beside the outputs and no `outputs/<date>` folder is made.
    The temp folder instead when there is no such folder (`path` null, or `skip`, e.g. `check list=true`) or when
    `path` cannot be a folder: the app's validator then reports the path by the field the user typed (`out=...`),
    before Hydra creates anything. Registered as the resolver `reparam.output_dir` (e.g. sims/conf/check.yaml)."""
    if path is None or skip:
        return tempfile.gettempdir()
    try:
        check_output_dir("path", str(path))
    except ConfigError:
        return tempfile.gettempdir()
    return str(path)


def app_help(module: str, schema: str) -> str:
    """The `--help` header of an app: its module docstring (what it does, example command lines) and what each
    setting does: the docstring of its schema class, or the text a function `schema` of the module returns (an app
    whose settings are several blocks, e.g. planted-prefix). Registered as the resolver `reparam.help`."""
    mod = importlib.import_module(module)
    obj = getattr(mod, schema)
    settings = obj() if callable(obj) and not isinstance(obj, type) else obj.__doc__ or ""
    return f"{inspect.cleandoc(mod.__doc__ or '')}\n\n{inspect.cleandoc(settings)}\n"


OmegaConf.register_new_resolver("reparam.output_dir", output_dir, replace=True)
OmegaConf.register_new_resolver("reparam.help", app_help, replace=True)
