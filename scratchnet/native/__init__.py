"""C loops, built once per machine with the system's C compiler and called
through ctypes, for the few places in a training step where one loop beats a
sequence of small torch ops (each costs microseconds there, its caches cold)
and torch.compile's Python wrapper: Adam's flat update (``adam.c``, used by
:mod:`scratchnet.optim.adam`'s compiled path on the CPU), the plain
cross-entropy's batch loops (``cross_entropy.c``) and the Linear layers'
products split between the threads (``gemm.c``, bound and chosen per shape by
:mod:`scratchnet.native.gemm`), both used by :mod:`scratchnet.fast`. Each
file's comments say how it computes the same numbers as the torch ops it
replaces.

Nothing depends on it. :func:`load` returns ``None`` where there is no C
compiler, the build fails, or ``SCRATCHNET_NATIVE=0`` is set, and the callers
then take their torch path; :func:`why_unavailable` says why.

Built libraries are cached in ``$SCRATCHNET_CACHE_DIR`` (default
``~/.cache/scratchnet/native``), one file per source, compiler, flags and CPU
(``-march=native`` code runs only where it was built), written to a temporary
file and renamed into place, so a crash mid-build leaves no half-written
library behind.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

# -ffp-contract=off: no multiply-add is fused unless the source says fma();
# -fno-math-errno: sqrt may vectorize (it sets no errno on a negative input).
FLAGS = ("-O3", "-ffp-contract=off", "-fno-math-errno", "-shared", "-fPIC")
# tried in turn until one builds: this CPU's vector instructions and OpenMP
# threads (on torch's pool: the libgomp torch has loaded is the one linked),
# then one thread, then portable code
EXTRA_FLAGS = (("-march=native", "-fopenmp"), ("-march=native",), ())
LIBRARIES = ("-lm",)  # after the source: pow
BUILD_TIMEOUT_S = 120
# the dtypes every loop is built for: torch dtype → (symbol suffix, C scalar)
C_TYPES = {torch.float32: ("float32", ctypes.c_float),
           torch.float64: ("float64", ctypes.c_double)}

_SOURCES = Path(__file__).parent
_loaded: dict[str, ctypes.CDLL | None] = {}
_why_unavailable: dict[str, str] = {}
_built_with: dict[str, str] = {}  # name → "compiler version, flags"


def cache_dir() -> Path:
    """Where built libraries are kept."""
    if os.environ.get("SCRATCHNET_CACHE_DIR"):
        return Path(os.environ["SCRATCHNET_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "scratchnet" / "native"


def c_compiler() -> str | None:
    """``$CC``, else the first of cc, gcc, clang on the PATH."""
    if os.environ.get("CC"):
        return shutil.which(os.environ["CC"]) or os.environ["CC"]
    return next((found for name in ("cc", "gcc", "clang")
                 if (found := shutil.which(name))), None)


def load(name: str) -> ctypes.CDLL | None:
    """The library built from ``scratchnet/native/<name>.c`` (built on the first
    call on this machine, a fraction of a second), or ``None`` if it cannot be."""
    if name not in _loaded:
        try:
            _loaded[name] = _build_and_load(name)
        except _Unavailable as reason:
            _loaded[name] = None
            _why_unavailable[name] = str(reason)
    return _loaded[name]


def function(name: str, symbol: str, restype: Any, argtypes: list[Any]
             ) -> Callable[..., Any] | None:
    """``symbol`` of the library ``name`` with its C signature set, or ``None``
    if the library cannot be built."""
    library = load(name)
    if library is None:
        return None
    found = getattr(library, symbol)
    found.restype, found.argtypes = restype, argtypes
    return found


def why_unavailable(name: str) -> str | None:
    """Why :func:`load` returned ``None`` for ``name`` (``None`` if it did not)."""
    return _why_unavailable.get(name)


def built_with(name: str) -> str | None:
    """The compiler (its version line) and flags of the loaded library."""
    return _built_with.get(name)


class _Unavailable(Exception):
    pass


def _build_and_load(name: str) -> ctypes.CDLL:
    if os.environ.get("SCRATCHNET_NATIVE", "1") == "0":
        raise _Unavailable("SCRATCHNET_NATIVE=0")
    compiler = c_compiler()
    if compiler is None:
        raise _Unavailable("no C compiler (cc, gcc or clang) on the PATH; set CC")
    source = _SOURCES / f"{name}.c"
    errors = []
    for extra in EXTRA_FLAGS:
        flags = (*FLAGS, *extra)
        library = cache_dir() / f"{name}-{_build_key(source, compiler, flags)}.so"
        if not library.exists():
            error = _compile(compiler, flags, source, library)
            if error:
                errors.append(f"{compiler} {' '.join(flags)}: {error}")
                continue
        try:
            loaded = ctypes.CDLL(str(library))
        except OSError as error:
            errors.append(f"loading {library}: {error}")
            continue
        version = _compiler_version(compiler).partition("\n")[0]
        _built_with[name] = f"{version or compiler}, {' '.join(flags)}"
        return loaded
    raise _Unavailable("; ".join(errors))


def _compile(compiler: str, flags: tuple[str, ...], source: Path, library: Path
             ) -> str | None:
    """Build ``library`` from ``source``; the compiler's message on failure."""
    try:
        library.parent.mkdir(parents=True, exist_ok=True)
        handle, partial = tempfile.mkstemp(dir=library.parent, prefix=".building-",
                                           suffix=".so")
        os.close(handle)
    except OSError as error:
        return f"cannot write to {library.parent}: {error}"
    try:
        done = subprocess.run([compiler, *flags, str(source), "-o", partial, *LIBRARIES],
                              capture_output=True, text=True,
                              timeout=BUILD_TIMEOUT_S, check=False)
        if done.returncode != 0:
            return (done.stderr.strip().splitlines() or ["failed"])[-1]
        os.replace(partial, library)  # atomic: the library is whole or absent
        return None
    except (OSError, subprocess.TimeoutExpired) as error:
        return str(error)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)


def _build_key(source: Path, compiler: str, flags: tuple[str, ...]) -> str:
    """16 hex digits naming the source and the headers beside it (threads.h),
    the compiler, its flags and the CPU."""
    headers = [header.read_bytes() for header in sorted(source.parent.glob("*.h"))]
    parts = [source.read_bytes(), *headers, compiler.encode(),
             _compiler_version(compiler).encode(),
             " ".join((*flags, *LIBRARIES)).encode(), _cpu_identity().encode()]
    return hashlib.sha256(b"\0".join(parts)).hexdigest()[:16]


@functools.cache
def _compiler_version(compiler: str) -> str:
    try:
        return subprocess.run([compiler, "--version"], capture_output=True,
                              text=True, timeout=30, check=False).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def _cpu_identity() -> str:
    """The CPU's model and instruction-set flags (what -march=native targets)."""
    identity = [platform.machine(), platform.processor()]
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "flags", "Features")):
                identity.append(line)
            if line == "":
                break  # the first processor's lines are enough
    except OSError:
        pass
    return "\n".join(identity)
