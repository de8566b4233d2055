"""The fused sample-space pass (prefix_pass.c): built on first use with the machine's C compiler, loaded with ctypes.

Why compiled on first use and not at install: the kernel is built for the machine it runs on (-march=native:
AVX-512 where there is one), into a cache folder keyed by the source, the compiler, the flags and the CPU, so a
home folder shared by different cluster nodes never loads a kernel built for another CPU. The build takes about
a second, once per machine, and needs only a C compiler (`cc`, or $CC); no Python headers, no torch headers.
Without a compiler (or if the build fails) `pass_kernel()` is None and reparam.fit uses its tensor pass, which
computes the same sums (the tests check that both agree to rounding).

Environment:
    REPARAM_PASS      'auto' (default: the fused pass where it builds, else the tensor pass), 'tensor' (always the
                      tensor pass), 'fused' (the fused pass or an error saying why it cannot be built).
    REPARAM_KERNELS   the cache folder (default: $XDG_CACHE_HOME/reparam/kernels or ~/.cache/reparam/kernels).
    CC                the C compiler (default: cc).
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from torch import Tensor

from ..validation import ConfigError

SOURCE = Path(__file__).with_name("prefix_pass.c")
PASS_CHOICES = ("auto", "tensor", "fused")
# (flags, libraries) tried in order: vectorised exp from glibc's libmvec, then scalar exp, then no -march=native
_BUILDS = (
    (["-O3", "-march=native", "-fno-math-errno", "-fno-trapping-math", "-fopenmp-simd"], ["-lmvec", "-lm"]),
    (["-O3", "-march=native", "-fno-math-errno", "-fno-trapping-math", "-DREPARAM_NO_MVEC"], ["-lm"]),
    (["-O3", "-fno-math-errno", "-fno-trapping-math", "-DREPARAM_NO_MVEC"], ["-lm"]),
)

_STATE: dict = {}  # "lib": the loaded library or None, "why": why there is none, "path": the built file


def requested_pass() -> str:
    choice = os.environ.get("REPARAM_PASS", "auto")
    if choice not in PASS_CHOICES:
        raise ConfigError(f"REPARAM_PASS={choice!r} is invalid: must be one of {list(PASS_CHOICES)}")
    return choice


def cache_folder() -> Path:
    if os.environ.get("REPARAM_KERNELS"):
        return Path(os.environ["REPARAM_KERNELS"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(base) / "reparam" / "kernels"


def _cpu_signature() -> str:
    """Model name and feature flags of this CPU (what -march=native compiles for)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        keep = [ln for ln in lines if ln.split(":")[0].strip() in ("model name", "flags", "Features", "CPU part")]
        return "\n".join(sorted(set(keep)))
    except OSError:
        return platform.processor() + platform.machine()


def _build(compiler: str) -> tuple[Path | None, str]:
    """Compile the kernel into the cache folder (atomically); return (path, '') or (None, why)."""
    try:
        version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as err:
        return None, f"no C compiler ({compiler!r}: {err})"
    source = SOURCE.read_bytes()
    errors = []
    for flags, libs in _BUILDS:
        key = hashlib.sha256(b"\0".join([source, version.encode(), " ".join(flags + libs).encode(),
                                         _cpu_signature().encode()])).hexdigest()[:16]
        target = cache_folder() / f"prefix_pass-{key}.so"
        if target.exists():
            return target, ""
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
                built = Path(tmp) / target.name
                proc = subprocess.run([compiler, *flags, "-shared", "-fPIC", "-o", str(built), str(SOURCE), *libs],
                                      capture_output=True, text=True, timeout=120)
                if proc.returncode != 0:
                    errors.append(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}")
                    continue
                os.replace(built, target)  # atomic: a concurrent build of the same key writes the same bytes
            return target, ""
        except (OSError, subprocess.SubprocessError) as err:
            errors.append(str(err))
    return None, "the kernel did not build: " + "; ".join(errors)


def pass_kernel():
    """The loaded kernel library, or None (then `kernel_status()` says why). Built once per process."""
    if "lib" in _STATE:
        return _STATE["lib"]
    choice = requested_pass()
    lib, why, path = None, "", None
    if choice == "tensor":
        why = "REPARAM_PASS=tensor"
    else:
        compiler = os.environ.get("CC", "cc")
        if shutil.which(compiler) is None:
            why = f"no C compiler ({compiler!r} not found; set CC)"
        else:
            path, why = _build(compiler)
        if path is not None:
            try:
                lib = ctypes.CDLL(str(path))
                lib.prefix_pass_width.restype = ctypes.c_int64
                lib.prefix_pass_width.argtypes = [ctypes.c_int64] * 3
                lib.prefix_pass.restype = None
                lib.prefix_pass.argtypes = [ctypes.c_int64] * 6 + [ctypes.c_void_p] * 8
            except OSError as err:
                lib, why = None, f"the built kernel did not load: {err}"
        if lib is None and choice == "fused":
            raise ConfigError(f"REPARAM_PASS=fused, but {why}; use REPARAM_PASS=auto or tensor")
    _STATE.update(lib=lib, why=why, path=path)
    return lib


def kernel_status() -> dict:
    """Which sample-space pass runs on the CPU: {'pass': 'fused' | 'tensor', 'why': ..., 'path': ...}."""
    lib = pass_kernel()
    return {"pass": "fused" if lib is not None else "tensor", "why": _STATE["why"], "path": str(_STATE["path"] or "")}


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
