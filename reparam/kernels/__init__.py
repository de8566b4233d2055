"""The fused sample-space pass (prefix_pass.c): built on first use with the machine's C compiler, loaded with ctypes.

Why compiled on first use and not at install: the kernel is built for the machine it runs on (-march=native:
AVX-512 where there is one), into a cache folder keyed by the source, the compiler, the flags and the CPU, so a
home folder shared by different cluster nodes never loads a kernel built for another CPU. The build takes about
a second, once per machine, and needs only a C compiler (`cc`, or $CC); no Python headers, no torch headers.
Without a compiler (or if the build fails) `pass_kernel()` is None and reparam.fit uses its tensor pass, which
computes the same sums (the tests check that both agree to rounding); one line says so.

The cache is checked before it is trusted. A build is stored as a library named by its content
(prefix_pass-<key>-<sha256 prefix>.so) and a record prefix_pass-<key>.json that names the library and holds the
SHA-256 of its bytes; the record is replaced atomically after the library, so a reader sees a record only with
its library in place (processes building at once each write a consistent pair). Before loading, the library's
bytes are hashed and compared with the record, and the loaded library must have the kernel's symbols: a file
that fails either check (damaged, truncated, replaced) is never loaded; the kernel is rebuilt with one line
saying so. A cache folder that cannot be written costs a build, never the run: the kernel is then built in a
private folder of this user under the system's temporary folder (reused, and checked the same way, by later
runs), and where that fails too the tensor pass runs.

Environment:
    REPARAM_PASS      'auto' (default: the fused pass where it builds, else the tensor pass), 'tensor' (always the
                      tensor pass), 'fused' (the fused pass or an error saying why it cannot be built). Checked
                      by every command's preflight, before any folder is made (`check_requested_pass`).
    REPARAM_KERNELS   the cache folder (default: $XDG_CACHE_HOME/reparam/kernels or ~/.cache/reparam/kernels).
    CC                the C compiler (default: cc).
"""
from __future__ import annotations

import ctypes
import hashlib
import json
import logging
import os
import platform
import shutil
import stat
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from torch import Tensor

from ..console import say
from ..validation import ConfigError

logger = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("prefix_pass.c")
PASS_CHOICES = ("auto", "tensor", "fused")
# (flags, libraries) tried in order: vectorised exp from glibc's libmvec, then scalar exp, then no -march=native
_BUILDS = (
    (["-O3", "-march=native", "-fno-math-errno", "-fno-trapping-math", "-fopenmp-simd"], ["-lmvec", "-lm"]),
    (["-O3", "-march=native", "-fno-math-errno", "-fno-trapping-math", "-DREPARAM_NO_MVEC"], ["-lm"]),
    (["-O3", "-fno-math-errno", "-fno-trapping-math", "-DREPARAM_NO_MVEC"], ["-lm"]),
)
#: the kernel's entry points and their ctypes signatures: a library without them is not the kernel
_SIGNATURES = {"prefix_pass_width": (ctypes.c_int64, [ctypes.c_int64] * 3),
               "prefix_pass": (None, [ctypes.c_int64] * 6 + [ctypes.c_void_p] * 8)}

_STATE: dict = {}  # "lib": the loaded library or None, "why": why this pass, "path": the loaded file, "sha256"


def requested_pass() -> str:
    choice = os.environ.get("REPARAM_PASS", "auto")
    if choice not in PASS_CHOICES:
        raise ConfigError(f"REPARAM_PASS={choice!r} is invalid: must be one of {list(PASS_CHOICES)} (an environment "
                          f"variable; unset it for 'auto')")
    return choice


def check_requested_pass() -> None:
    """The preflight's check of REPARAM_PASS (ConfigError naming it): a known value, and with 'fused' a kernel
    that builds and loads here (built now, so the run's first fit finds it ready)."""
    if requested_pass() == "fused":
        pass_kernel()


def cache_folder() -> Path:
    if os.environ.get("REPARAM_KERNELS"):
        return Path(os.environ["REPARAM_KERNELS"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(base) / "reparam" / "kernels"


def fallback_folder() -> Path:
    """Where the kernel is built when the cache folder cannot be written: a folder of this user only, under the
    system's temporary folder (one per user, so other users cannot plant a library there)."""
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return Path(tempfile.gettempdir()) / f"reparam-kernels-{uid}"


def _private(folder: Path) -> bool:
    """`folder` (created mode 0700 if missing) belongs to this user and no one else can write into it."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = folder.stat()
    owner = os.getuid() if hasattr(os, "getuid") else info.st_uid
    return info.st_uid == owner and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _cpu_signature() -> str:
    """Model name and feature flags of this CPU (what -march=native compiles for)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        keep = [ln for ln in lines if ln.split(":")[0].strip() in ("model name", "flags", "Features", "CPU part")]
        return "\n".join(sorted(set(keep)))
    except OSError:
        return platform.processor() + platform.machine()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class _BuildFailed(Exception):
    """The compiler rejected the source with these flags (the message: its last line)."""


def _load(path: Path):
    """The library at `path` with the kernel's signatures set; OSError when it does not load, AttributeError
    when it lacks an entry point."""
    lib = ctypes.CDLL(str(path))
    for name, (restype, argtypes) in _SIGNATURES.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = restype, argtypes
    return lib


def _cached(folder: Path, key: str) -> tuple[Path | None, str]:
    """The verified library of `key` in `folder`: (path, '') when its record names it and its bytes have the
    recorded SHA-256; (None, '') when there is none; (None, what is wrong) when a cached entry fails the check."""
    record = folder / f"prefix_pass-{key}.json"
    libraries = sorted(folder.glob(f"prefix_pass-{key}*.so"))
    if not record.is_file():
        if libraries:  # a library without its record: an older cache, or one written by hand
            return None, f"{libraries[0]} has no checksum record"
        return None, ""
    try:
        entry = json.loads(record.read_text())
        path = folder / Path(str(entry["library"])).name
        if not path.is_file():
            return None, f"{record} names {path.name}, which is missing"
        if _sha256(path) != entry["sha256"]:
            return None, f"{path} fails its checksum (damaged or replaced)"
    except (OSError, ValueError, KeyError, TypeError) as err:
        return None, f"{record} cannot be read ({type(err).__name__}: {err})"
    return path, ""


def _build(compiler: str, flags: list[str], libs: list[str], folder: Path, key: str) -> Path:
    """Compile into `folder` and record the library's checksum; OSError when `folder` cannot be written,
    _BuildFailed when the compiler rejects these flags."""
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        built = Path(tmp) / "prefix_pass.so"
        try:
            proc = subprocess.run([compiler, *flags, "-shared", "-fPIC", "-o", str(built), str(SOURCE), *libs],
                                  capture_output=True, text=True, timeout=120)
        except subprocess.SubprocessError as err:
            raise _BuildFailed(str(err)) from None
        if proc.returncode != 0:
            raise _BuildFailed(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}")
        digest = _sha256(built)
        target = folder / f"prefix_pass-{key}-{digest[:16]}.so"  # named by its content: builds at once never clash
        record = Path(tmp) / "record.json"
        record.write_text(json.dumps({"library": target.name, "sha256": digest, "compiler": compiler,
                                      "flags": flags + libs}) + "\n")
        os.replace(built, target)
        os.replace(record, folder / f"prefix_pass-{key}.json")  # last: a record is only seen with its library
    return target


def _resolve(compiler: str) -> tuple[object | None, str, Path | None, list[str]]:
    """(library, why, path, notes): the first build of _BUILDS found verified in a cache folder or built there;
    notes are the lines to say (a cached file that failed its check and was rebuilt, an unwritable cache)."""
    try:
        version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as err:
        return None, f"no C compiler ({compiler!r}: {err})", None, []
    source = SOURCE.read_bytes()
    errors, notes, unwritable = [], [], {}
    folders = [cache_folder(), fallback_folder()]
    for flags, libs in _BUILDS:
        key = hashlib.sha256(b"\0".join([source, version.encode(), " ".join(flags + libs).encode(),
                                         _cpu_signature().encode()])).hexdigest()[:16]
        failed = False
        for folder in folders:
            if folder in unwritable:
                continue
            try:
                if folder != folders[0] and not _private(folder):
                    unwritable[folder] = "it belongs to another user or others can write into it"
                    continue
                path, problem = _cached(folder, key) if folder.is_dir() else (None, "")
            except OSError as err:
                unwritable[folder] = err.strerror or str(err)
                continue
            if path is not None:
                try:
                    return _load(path), "", path, notes
                except (OSError, AttributeError) as err:
                    problem = f"{path} is not the kernel ({str(err).splitlines()[0]})"
            try:
                path = _build(compiler, flags, libs, folder, key)
            except _BuildFailed as err:
                errors.append(str(err))
                failed = True
                break
            except OSError as err:
                unwritable[folder] = err.strerror or str(err)
                continue
            if problem:
                notes.append(f"the compiled kernel cache was not used: {problem}; the kernel was rebuilt")
            if folder != folders[0]:
                notes.append(f"the kernel cache {folders[0]} cannot be written ({unwritable.get(folders[0])}); "
                             f"the kernel was built in {folder} instead")
            try:
                return _load(path), "", path, notes
            except (OSError, AttributeError) as err:
                errors.append(f"the built kernel did not load: {str(err).splitlines()[0]}")
                failed = True
                break
        if not failed:  # no folder could be written: another build's flags would not help
            where = "; ".join(f"{f}: {why}" for f, why in unwritable.items())
            return None, f"no folder to build the kernel in ({where})", None, notes
    return None, "the kernel did not build: " + "; ".join(errors), None, notes


def pass_kernel():
    """The loaded kernel library, or None (then `kernel_status()` says why). Resolved once per process; a
    fallback to the tensor pass, and a cache entry that failed its check, are said in one line each."""
    if "lib" in _STATE:
        return _STATE["lib"]
    choice = requested_pass()
    lib, why, path, notes = None, "", None, []
    if choice == "tensor":
        why = "REPARAM_PASS=tensor"
    else:
        compiler = os.environ.get("CC", "cc")
        if shutil.which(compiler) is None:
            why = f"no C compiler ({compiler!r} not found; set CC)"
        else:
            lib, why, path, notes = _resolve(compiler)
        if lib is None and choice == "fused":
            raise ConfigError(f"REPARAM_PASS=fused, but {why}; use REPARAM_PASS=auto or tensor")
        if lib is not None:
            why = f"REPARAM_PASS={choice}: the compiled kernel {path}"
        else:
            notes.append(f"the fused solver pass is unavailable ({why}); the tensor pass runs (the same sums to "
                         f"rounding; REPARAM_PASS=tensor chooses it without this line)")
            why = f"REPARAM_PASS=auto, and {why}"
    _STATE.update(lib=lib, why=why, path=path, sha256=_sha256(path) if path is not None else None)
    import multiprocessing

    if multiprocessing.parent_process() is None:  # a worker process's parent resolved the pass and said it
        for note in notes:  # on stderr: mostly said by the preflight, before the run's log exists
            say(logger, f"reparam: {note}", stream=sys.stderr)
    return lib


def kernel_status() -> dict:
    """Which sample-space pass runs on the CPU, and why: {'pass': 'fused' | 'tensor', 'why': ..., 'path': the
    loaded library or '', 'sha256': its checksum or None} (provenance.json records it as `solver_pass`)."""
    lib = pass_kernel()
    return {"pass": "fused" if lib is not None else "tensor", "why": _STATE["why"], "path": str(_STATE["path"] or ""),
            "sha256": _STATE["sha256"]}


def resolved_status() -> dict | None:
    """`kernel_status()` when this process has resolved the pass already, else None (resolves nothing)."""
    return kernel_status() if "lib" in _STATE else None


def _address(t: Tensor) -> ctypes.c_void_p:
    return ctypes.c_void_p(t.data_ptr())


def fused_sums(what: int, gate: Tensor, values: Tensor, rep: Tensor, A: Tensor, Yt: Tensor, mu0: Tensor,
               s0: Tensor, threads: int = 1) -> Tensor:
    """Per-fit sums of the pass (layout: prefix_pass.c), (B, K) float64.

    gate (B, L, q), values (B, L, m): the fits' prefixes; rep (B,): each fit's replicate; A (R, q, n) = [1, x],
    Yt (R, m, n), mu0 (R, m, n), s0 (R, n): the data, sample axis last. what: 0 loss, 1 + gradient and J^T J,
    2 + residual curvature. The fits are split over `threads` threads (the kernel releases the GIL)."""
    lib = pass_kernel()
    B, L, q = gate.shape
    m, n = values.shape[-1], A.shape[-1]
    for name, t in (("A", A), ("Yt", Yt), ("mu0", mu0), ("s0", s0)):
        if t.dtype != torch.float64 or not t.is_contiguous() or t.device.type != "cpu":
            raise ValueError(f"{name} must be a contiguous float64 CPU tensor")
    gate = gate.to(torch.float64).contiguous()
    values = values.to(torch.float64).contiguous()
    rep = rep.to(torch.int64).contiguous()
    if B and (int(rep.min()) < 0 or int(rep.max()) >= A.shape[0]):
        raise ValueError(f"rep must index the {A.shape[0]} replicates of the data")
    K = int(lib.prefix_pass_width(L, q, m))
    out = torch.empty(B, K, dtype=torch.float64)

    def run(lo: int, hi: int) -> None:
        lib.prefix_pass(hi - lo, n, L, q, m, what, _address(gate[lo:hi]), _address(values[lo:hi]),
                        _address(rep[lo:hi]), _address(A), _address(Yt), _address(mu0), _address(s0),
                        _address(out[lo:hi]))

    threads = max(1, min(int(threads), B))
    if threads == 1:
        run(0, B)
    else:
        bounds = [B * i // threads for i in range(threads + 1)]
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(run, bounds[:-1], bounds[1:]))
    return out


def reset() -> None:
    """Forget the loaded kernel, so that the next use reads REPARAM_PASS, CC and REPARAM_KERNELS again."""
    _STATE.clear()
