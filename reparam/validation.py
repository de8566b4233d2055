"""One validation layer for every entry point: user mistakes stop before any work, in one line, exit status 2.

Errors:
    InputError   base class of a user's mistake (a bad value, path or data file); entry points print its message
                 on one line and exit with status 2, without a traceback (`exit_on_input_error`).
    ConfigError  a bad configuration value: the message names the field, the value and what is allowed.
    DataError    a data file that cannot be read: the message names the file (and the line when known).
    FolderError  an output folder that holds another run (another command or setting) or that another process
                 is writing into: the message names the folder and the way out.
    WriteError   an output that could not be written (disk full, unwritable, invalid path): one line naming the
                 path, exit status 1 (`status` of the error class; InputError's is 2).

Checks (each raises ConfigError naming `field`; they return the value so they can be used inline):
    require(ok, field, value, allowed)       the general form
    check_int(field, value, low=, high=)     integers (bool is not an int here)
    check_number(field, value, low=, high=, low_open=, high_open=)   finite numbers in a range
    check_choice(field, value, choices)      one of a set of names
    check_device(value, field="device")      'cpu' or 'cuda' (a CUDA device torch sees) -> torch.device
    check_list(field, values, item_check=, unique=, non_empty=)      lists (each item checked)
    check_unknown_keys(cfg, schema)          every key of a (nested) config is a field of the schema
    check_added_keys()                       no `+key=value` override adds a key the app never reads
    check_output_dir(field, path)            a folder we may create / write into (never a file, never /proc)
    check_output_file(field, path)           a file we may (over)write: not a folder, parent creatable
    check_memory(field, value, need_bytes, allow_flag)   refuse what cannot fit this machine's memory

Writes:
    writing(path, hint="")                   context manager: an OSError at a write becomes a one-line WriteError
                                             naming the path (every table, log, figure and provenance write)

Fingerprints:
    fingerprint(settings, ignore=())         short stable hash of every result-affecting setting; used as the
                                             `setting_id` column of result logs, so rows of different settings
                                             are never reused or pooled by mistake.

Hydra:
    PreflightCallback                        a Hydra callback (hydra.callbacks) that runs a validator on the
                                             composed config before the run directory exists, and on EVERY job
                                             of a multirun before the first job starts.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import math
import os
import sys
from numbers import Integral, Real
from pathlib import Path
from typing import Any, Callable, Iterable


class InputError(ValueError):
    """A user's mistake (config value, path or data file): reported in one line, exit status 2."""


class ConfigError(InputError):
    """An invalid configuration value; the message names the field, the value and what is allowed."""


class DataError(InputError):
    """A data file that cannot be read; the message names the file and, when known, the line."""


class FolderError(InputError):
    """An output folder that cannot be used for this run: it holds another run's outputs, or another process
    writes into it. The message names the folder and the way out."""


class WriteError(InputError):
    """An output the machine could not write (OSError at the write: disk full, permissions, invalid path). Not the
    user's mistake, so its exit status is 1; reported in one line naming the path."""

    status = 1


def exit_status(err: BaseException) -> int:
    """The exit status of an error an entry point reports in one line: 2 for a user's mistake, its class's
    `status` otherwise (WriteError: 1)."""
    return int(getattr(err, "status", 2))


# ------------------------------------------------------------------------------------------ value checks

def require(ok: bool, field: str, value: Any, allowed: str) -> None:
    """Raise ConfigError('field=value is invalid: must be allowed') unless `ok`."""
    if not ok:
        raise ConfigError(f"{field}={value!r} is invalid: must be {allowed}")


def is_int(value: Any) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def check_int(field: str, value: Any, low: int | None = None, high: int | None = None) -> int:
    """An integer in [low, high] (either bound optional)."""
    allowed = "an integer" + (f" >= {low}" if low is not None else "") + (
        f"{' and' if low is not None else ''} <= {high}" if high is not None else "")
    require(is_int(value) and (low is None or value >= low) and (high is None or value <= high), field, value, allowed)
    return int(value)


def check_number(field: str, value: Any, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False) -> float:
    """A finite real number (never inf or nan) in the range given by low/high (open or closed ends)."""
    parts = []
    if low is not None:
        parts.append(f"{'>' if low_open else '>='} {low:g}")
    if high is not None:
        parts.append(f"{'<' if high_open else '<='} {high:g}")
    allowed = "a finite number" + (" " + " and ".join(parts) if parts else "")
    ok = isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    require(ok, field, value, allowed)
    return float(value)


def check_choice(field: str, value: Any, choices: Iterable[str]) -> str:
    choices = list(choices)
    require(value in choices, field, value, f"one of {choices}")
    return value


#: Where a run's tensors can live: the one list of every app and of the solver.
DEVICES = ("cpu", "cuda")


def check_device(value: Any, field: str = "device"):
    """One of DEVICES, and 'cuda' only where torch sees a CUDA device -> torch.device. The one device check of
    every entry point (synthetic study, benchmarks, LM experiments) and of the solver itself."""
    check_choice(field, value, DEVICES)
    import torch  # here, not at the top: the validation layer is imported by apps that never touch a device

    if value == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{field}='cuda' is invalid: torch sees no CUDA device on this machine "
                          f"(torch.cuda.is_available() is False); use {field}=cpu")
    return torch.device(value)


def check_list(field: str, values: Any, item_check: Callable[[str, Any], Any] | None = None, unique: bool = False,
               non_empty: bool = True) -> list:
    """A list (or tuple / OmegaConf ListConfig); each item passed through `item_check(field, item)`."""
    if hasattr(values, "_content") and hasattr(values, "__iter__") and not isinstance(values, (str, dict)):
        values = list(values)  # ListConfig
    require(isinstance(values, (list, tuple)), field, values, "a list")
    values = list(values)
    require(bool(values) or not non_empty, field, values, "a non-empty list")
    if item_check is not None:
        for item in values:
            item_check(field, item)
    if unique:
        require(len({json.dumps(v, sort_keys=True, default=str) for v in values}) == len(values), field, values,
                "a list without repeats")
    return values


def check_unknown_keys(cfg: Any, schema: Any, prefix: str = "", skip: Iterable[str] = ("hydra",)) -> None:
    """Every key of `cfg` (a dict or DictConfig) must be a field of `schema` (a dataclass or a dict of the
    allowed keys whose values are sub-schemas, or None for a leaf). Catches `+optimiser.tol=1e-3`: a typo
    that would otherwise be written to config.yaml and silently ignored."""
    if dataclasses.is_dataclass(schema):
        fields = {f.name: f for f in dataclasses.fields(schema)}
        sub = {}
        for name, f in fields.items():
            default = f.default if f.default is not dataclasses.MISSING else (
                f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
            sub[name] = default if dataclasses.is_dataclass(default) else None
    elif isinstance(schema, dict):
        sub = schema
    else:
        return
    keys = list(cfg.keys()) if hasattr(cfg, "keys") else []
    for key in keys:
        if prefix == "" and key in skip:
            continue
        name = f"{prefix}{key}"
        if key not in sub:
            raise ConfigError(f"{name} is not a known setting: {prefix.rstrip('.') or 'the config'} accepts "
                              f"{sorted(sub)}")
        if sub[key] is not None and hasattr(cfg[key], "keys"):
            check_unknown_keys(cfg[key], sub[key], prefix=f"{name}.", skip=())


def check_added_keys(overrides: Iterable[str] | None = None, groups: Iterable[str] | None = None) -> None:
    """Refuse command-line overrides that ADD a key (`+low_data.tol=1`, `++x=1`) unless the key is a config
    group (`+setting=smoke`): an added key is a setting the app never reads, silently ignored otherwise.
    Defaults: the running Hydra app's task overrides and group choices (a no-op outside a Hydra app)."""
    if overrides is None or groups is None:
        try:
            from hydra.core.hydra_config import HydraConfig

            hc = HydraConfig.get()
        except (ImportError, ValueError):  # not inside a Hydra app (tests compose configs directly)
            return
        overrides = list(hc.overrides.task) if overrides is None else overrides
        groups = list(hc.runtime.choices) if groups is None else groups
    groups = set(groups)
    for override in overrides:
        if override.startswith("+"):
            key = override.lstrip("+").split("=", 1)[0].split("@", 1)[0]
            if key not in groups:
                raise ConfigError(f"{key} is not a known setting: '{override}' adds a key the app never reads "
                                  f"(drop the '+' to set an existing key)")


# ------------------------------------------------------------------------------------------ paths

def _first_existing_parent(path: Path) -> Path:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_output_dir(field: str, path: str | os.PathLike) -> Path:
    """A folder that exists (and is writable) or can be created: not a file, not under /proc, /sys or /dev."""
    path = Path(path).expanduser()
    absolute = path.resolve()
    if absolute.parts[:2] in (("/", "proc"), ("/", "sys"), ("/", "dev")):
        raise ConfigError(f"{field}={str(path)!r} is invalid: must be a folder outside /proc, /sys and /dev")
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{field}={str(path)!r} is invalid: must be a folder, but it is an existing file")
    parent = _first_existing_parent(absolute)
    if not parent.is_dir():
        raise ConfigError(f"{field}={str(path)!r} is invalid: {parent} is a file, so the folder cannot be created")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{field}={str(path)!r} is invalid: must be a writable folder ({parent} is not writable)")
    return path


def check_output_file(field: str, path: str | os.PathLike) -> Path:
    """A file we may create or replace: not an existing folder, in a folder that can be created."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise ConfigError(f"{field}={str(path)!r} is invalid: must be a file, but it is an existing folder "
                          f"(remove or rename it)")
    check_output_dir(f"{field} (its folder)", path.parent)
    return path


# ------------------------------------------------------------------------------------------ resources

def available_memory_bytes() -> int:
    """Physical memory of this machine (MemAvailable when /proc/meminfo has it, else total pages)."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 1 << 62  # unknown: do not refuse


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} PiB"


def check_memory(field: str, value: Any, need_bytes: float, allow_flag: str, allow: bool = False) -> None:
    """Refuse (ConfigError) when the estimated peak memory `need_bytes` exceeds what this machine has,
    unless `allow` (the user passed `allow_flag`)."""
    have = available_memory_bytes()
    if need_bytes > have and not allow:
        raise ConfigError(f"{field}={value!r} is too large for this machine: needs about {human_bytes(need_bytes)} "
                          f"of memory, {human_bytes(have)} available; lower it, or pass {allow_flag} to proceed anyway")


#: Refuse a study estimated to take longer than this (pass allow_large=true to run it anyway).
TIME_LIMIT_SECONDS = 24 * 3600


def check_time(field: str, value: Any, seconds: float, limit_seconds: float, allow_flag: str,
               allow: bool = False) -> None:
    """Refuse (ConfigError) when the estimated wall time exceeds `limit_seconds`, unless `allow`."""
    if seconds > limit_seconds and not allow:
        raise ConfigError(f"{field}={value!r} is too large: estimated to need about {seconds / 3600:.3g} hours "
                          f"(limit {limit_seconds / 3600:g} h); lower it, or pass {allow_flag} to proceed anyway")


# ------------------------------------------------------------------------------------------ input tables

def read_csv_table(path: str | os.PathLike, columns: Iterable[str], needed_by: str, missing: str = "",
                   numeric: Iterable[str] = (), **kwargs):
    """The CSV table at `path` (pandas.read_csv's `kwargs`), read in full before any work uses it: DataError in one
    line naming the file when it is missing (`missing`: how to make it), does not parse (binary, damaged quoting),
    lacks one of `columns` (`needed_by`: what reads them, e.g. 'the figures') or holds a value that is not a number
    in one of the `numeric` columns (naming the column and the line)."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} is missing" + (f" ({missing})" if missing else ""))
    try:
        table = pd.read_csv(path, **kwargs)
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as err:  # EmptyDataError is a ValueError
        raise DataError(f"{path} is not a readable CSV table ({str(err).splitlines()[0]})") from None
    lacking = [c for c in columns if c not in table.columns]
    if lacking:
        raise DataError(f"{path} lacks the columns {lacking}, read from it by {needed_by} (is it the right table?)")
    for column in numeric:
        values = pd.to_numeric(table[column], errors="coerce")
        bad = values.isna() & table[column].notna()
        if bad.any():
            row = int(bad.to_numpy().nonzero()[0][0])
            raise DataError(f"{path} line {row + 2}: {column}={table[column].iloc[row]!r} is not a number (a damaged "
                            f"table? {needed_by} read {column} as numbers)")
    return table


# ------------------------------------------------------------------------------------------ fingerprints

def _plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {k: _plain(v) for k, v in dataclasses.asdict(obj).items()}
    if hasattr(obj, "items"):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)) or (hasattr(obj, "__iter__") and hasattr(obj, "_content")):
        return [_plain(v) for v in obj]
    if isinstance(obj, float) and obj.is_integer():
        return int(obj)  # 1.0 and 1 are the same setting
    return obj


def _drop(d: Any, dotted: str) -> None:
    head, _, rest = dotted.partition(".")
    if isinstance(d, dict) and head in d:
        if rest:
            _drop(d[head], rest)
        else:
            d.pop(head)


def fingerprint(settings: Any, ignore: Iterable[str] = ()) -> str:
    """12 hex digits identifying `settings` (dict, DictConfig or dataclass, nested) minus the dotted keys in
    `ignore` (settings that do not change a result, e.g. progress bars, or that are own row columns).

    Equal settings give equal fingerprints whatever the key order; 1 and 1.0 are the same value."""
    d = _plain(settings)
    for key in ignore:
        _drop(d, key)
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:12]


# ------------------------------------------------------------------------------------------ entry points

def os_error_message(err: OSError, path: Any = None, what: str = "write") -> str:
    """'cannot write PATH: No space left on device' (the path of the error itself when `path` is not given)."""
    path = path if path is not None else (err.filename or "")
    reason = err.strerror or str(err) or type(err).__name__
    return f"cannot {what} {path}: {reason}" if path else f"cannot {what}: {reason}"


@contextlib.contextmanager
def writing(path: Any, hint: str = ""):
    """Around a write of `path`: an OSError (disk full, permissions, a path that cannot be made) becomes a
    WriteError whose one line names the path (and `hint`, e.g. what is kept and how to go on)."""
    try:
        yield
    except OSError as err:
        raise WriteError(os_error_message(err, path) + (f"; {hint}" if hint else "")) from err


def input_error_prefix(err: BaseException) -> str:
    """'error' for a mistake in the user's data or files (an InputError that is not a ConfigError), else
    'config error'."""
    return "error" if isinstance(err, (InputError, OSError)) and not isinstance(err, ConfigError) else "config error"


def report_input_error(err: BaseException, prefix: str | None = None) -> None:
    """The one-line message of a user's mistake, on stderr (prefix: input_error_prefix(err) unless given)."""
    prefix = input_error_prefix(err) if prefix is None else prefix
    print(f"{prefix}: {str(err).splitlines()[0] if str(err) else type(err).__name__}", file=sys.stderr, flush=True)


def status_on_input_error(fn: Callable) -> Callable:
    """Decorator for an app's run(cfg): an InputError becomes a one-line message and the return status 2, so
    in-process callers get the status the command line exits with."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except InputError as err:
            report_input_error(err)
            return exit_status(err)
        except OSError as err:  # a write or read the code did not wrap (reparam.results.writing): still one line
            report_input_error(WriteError(os_error_message(err)))
            return WriteError.status
    return wrapper


def exit_on_input_error(fn: Callable) -> Callable:
    """Decorator for an entry point: an InputError becomes a one-line message and exit status 2."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except InputError as err:
            report_input_error(err)
            sys.exit(exit_status(err))
        except OSError as err:  # a write or read the code did not wrap (reparam.results.writing): still one line
            report_input_error(WriteError(os_error_message(err)))
            sys.exit(WriteError.status)
    return wrapper


def _import(dotted: str) -> Callable:
    import importlib

    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


try:
    from hydra.experimental.callback import Callback as _HydraCallback
except ImportError:  # hydra is a dependency; keep this module importable without it
    _HydraCallback = object


class PreflightCallback(_HydraCallback):
    """Hydra callback: validate before any work. Configure in the app's primary config::

        hydra:
          callbacks:
            preflight:
              _target_: reparam.validation.PreflightCallback
              validator: reparam.sims.convergence.validate_cfg # callable(cfg) raising InputError

    on_run_start: checks the environment variables that choose a code path (REPARAM_PASS), runs the validator,
    then checks that hydra.run.dir can be created, before Hydra creates
    the run folder; with `folder` (a callable(cfg), e.g. reparam.sims.convergence.check_folder), locks the run
    folder and refuses one that holds another command's or setting's outputs (reparam.runfolder). on_multirun_start: checks hydra.sweep.dir, then composes EVERY job of the sweep from its
    overrides (the config's `hydra.sweeper.params` and the command line's) and validates each, so one bad value
    stops the sweep before its first job (and no job of a
    sweep is left unrun because an earlier one was rejected). A failure prints one line and exits with 2; any
    other exception escaping a check (a bug, MemoryError) ends the command with its traceback and exit status 1,
    never a warning (Hydra warns about a callback's exception and goes on).
    """

    def __init__(self, validator: str, folder: str | None = None):
        self.validator = validator
        self.folder = folder  # callable(cfg) that locks and checks the run folder (reparam.runfolder), or None

    def _fail(self, err: BaseException, where: str = "") -> None:
        report_input_error(f"{where}{err}" if where else err, input_error_prefix(err))
        sys.exit(exit_status(err))

    @staticmethod
    def _crash(err: BaseException) -> None:
        """An exception that is not a user's mistake escaped a check: a bug or the machine (MemoryError). Hydra
        would turn it into a warning and run the job anyway; it ends the command instead, with its traceback
        (exit status 1)."""
        import traceback

        traceback.print_exception(err)
        print(f"error: the checks before the run failed ({type(err).__name__}); nothing was run", file=sys.stderr,
              flush=True)
        sys.exit(1)

    @staticmethod
    def _interrupted() -> None:
        from .console import INTERRUPTED_STATUS, NOTHING_WRITTEN

        print(NOTHING_WRITTEN, file=sys.stderr, flush=True)
        sys.exit(INTERRUPTED_STATUS)

    @staticmethod
    def check_environment() -> None:
        """The environment variables that choose a code path (REPARAM_PASS, reparam.kernels)."""
        from .kernels import check_requested_pass

        check_requested_pass()

    def on_run_start(self, config, **kwargs) -> None:
        try:  # the validator first: where hydra.run.dir is the app's `out=`, it names the field the user typed
            self.check_environment()
            _import(self.validator)(config)
            check_output_dir("hydra.run.dir", str(config.hydra.run.dir))
            if self.folder is not None:  # before Hydra writes its .hydra record into a folder that is not ours
                _import(self.folder)(config)
        except InputError as err:
            self._fail(err)
        except KeyboardInterrupt:
            self._interrupted()
        except Exception as err:  # noqa: BLE001 - see _crash
            self._crash(err)

    def check_sweep(self, config, parsed: list, jobs: list[list[str]]) -> None:
        """A subclass's checks of the sweep as a whole (raise InputError): `parsed`, the overrides of the config's
        sweep and the command line (Hydra Override objects); `jobs`, each job's overrides. Runs before the jobs'
        own validation."""

    def on_multirun_start(self, config, **kwargs) -> None:
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
        from hydra.core.global_hydra import GlobalHydra
        from hydra.core.override_parser.overrides_parser import OverridesParser
        from hydra.types import RunMode

        try:
            self._check_sweep(config, BasicSweeper, GlobalHydra, OverridesParser, RunMode)
        except KeyboardInterrupt:
            self._interrupted()
        except Exception as err:  # noqa: BLE001 - see _crash
            self._crash(err)

    def _check_sweep(self, config, BasicSweeper, GlobalHydra, OverridesParser, RunMode) -> None:
        try:
            self.check_environment()
            check_output_dir("hydra.sweep.dir", str(config.hydra.sweep.dir))
        except InputError as err:
            self._fail(err)
        validate = _import(self.validator)
        # the sweep of the config itself (hydra.sweeper.params, e.g. the truths of conf/robustness.yaml), then the
        # command line's overrides, which take precedence as in Hydra's basic sweeper
        params = [f"{k}={v}" for k, v in (config.hydra.sweeper.get("params") or {}).items()]
        parsed = OverridesParser.create().parse_overrides(params + list(config.hydra.overrides.task))
        jobs = [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]
        try:
            self.check_sweep(config, parsed, jobs)
        except InputError as err:
            self._fail(err)
        loader = GlobalHydra.instance().config_loader()
        for num, job in enumerate(jobs):
            where = f"job {num} ({' '.join(job)}): "
            try:
                job_cfg = loader.load_configuration(config_name=config.hydra.job.config_name, overrides=list(job),
                                                    run_mode=RunMode.RUN)
            except Exception as err:  # noqa: BLE001 - Hydra's own composition errors (types, unknown groups)
                self._fail(ConfigError(str(err).splitlines()[0]), where)
            try:
                validate(job_cfg)
            except InputError as err:
                self._fail(err, where)
