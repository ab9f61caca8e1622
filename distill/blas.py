"""Fast MLX on Linux CPU: the mlx[cpu] wheel links a slow reference BLAS; preload the system OpenBLAS.

LD_PRELOAD only works from process start, so CLI entry points call `ensure_openblas()` first thing: when
the library exists and is not loaded yet, the process re-executes itself with LD_PRELOAD set.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

OPENBLAS_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/libopenblas.so.0",
    "/usr/lib64/libopenblas.so.0",
    "/usr/lib/libopenblas.so.0",
)
# DISTILL_BLAS=reference keeps the wheel's own BLAS (used by the benchmark's baseline).
OPT_OUT = "DISTILL_BLAS"


def openblas_path() -> str | None:
    if sys.platform != "linux":
        return None
    return next((p for p in OPENBLAS_CANDIDATES if Path(p).exists()), None)


def openblas_loaded() -> bool:
    lib = openblas_path()
    return bool(lib) and lib in os.environ.get("LD_PRELOAD", "")


def env_with_openblas(env: dict[str, str] | None = None) -> dict[str, str]:
    """A copy of `env` that preloads OpenBLAS when there is one (for subprocesses)."""
    env = dict(os.environ if env is None else env)
    lib = openblas_path()
    if lib and env.get(OPT_OUT) != "reference" and lib not in env.get("LD_PRELOAD", ""):
        env["LD_PRELOAD"] = ":".join(filter(None, [lib, env.get("LD_PRELOAD")]))
    return env


def ensure_openblas() -> None:
    """Re-exec the current command with OpenBLAS preloaded (Linux only; no-op elsewhere or when done)."""
    if os.environ.get(OPT_OUT) == "reference" or openblas_loaded() or not openblas_path():
        return
    if os.environ.get("_DISTILL_REEXEC"):
        return  # never loop
    env = env_with_openblas()
    env["_DISTILL_REEXEC"] = "1"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


def default_dtype() -> str:
    """float16 on Apple GPUs; float32 on CPU, where half-precision matmul has no BLAS path."""
    return "float16" if sys.platform == "darwin" else "float32"
