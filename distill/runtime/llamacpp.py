"""Load a GGUF with llama-cpp-python safely on every machine we use.

Trap (measured 2026-11-25 on our x86 VM, llama-cpp-python 0.3.36 built from source): the CPU has AMX, ggml puts
Q4_0/Q4_1/Q8_0 weights into its AMX "extra buffer type", and the first `llama_decode` segfaults in
`ggml_backend_amx_mul_mat`. Turning the extra buffer types off for that model (llama.cpp's `--no-extra-bufts`)
fixes it; llama-cpp-python has no keyword for that, so `load_llama` sets the field on the default params.
"""

from __future__ import annotations

import functools
import os
import threading
from pathlib import Path
from typing import Any

_PATCH_LOCK = threading.Lock()


@functools.cache
def cpu_has_amx() -> bool:
    try:
        return " amx_int8" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def default_threads() -> int:
    """Threads of one llama.cpp context: half the cores (load_llama says why)."""
    return max(1, usable_cores() // 2)


def parallel_contexts(n_threads: int | None = None) -> int:
    """How many contexts of `n_threads` threads decode side by side without sharing a core: 2 with the default."""
    return max(1, usable_cores() // (n_threads or default_threads()))


def load_llama(model_path: str | Path, *, n_ctx: int = 1024, n_threads: int | None = None, **kwargs: Any):
    """A quiet `llama_cpp.Llama`, AMX-safe, on half the cores by default.

    Half, not all: llama.cpp's OpenMP threads spin at barriers, and when another process holds a core they
    wait for each other. Measured on our 2-core VM with SmolLM2 Q4_1 and other work running: 1 thread decodes
    a token in 21 ms, 2 threads in 1448 ms.
    """
    if n_threads is None:
        n_threads = default_threads()
    kwargs.setdefault("verbose", False)
    kwargs.setdefault("n_threads_batch", n_threads)
    return _construct(model_path, n_ctx=n_ctx, n_threads=n_threads, **kwargs)


def _construct(model_path: str | Path, **kwargs: Any):
    """`llama_cpp.Llama(model_path, **kwargs)`, with AMX extra buffers off where the CPU has AMX."""
    import llama_cpp
    import llama_cpp.llama_cpp as capi

    if not cpu_has_amx():
        return llama_cpp.Llama(model_path=str(model_path), **kwargs)
    with _PATCH_LOCK:
        original = capi.llama_model_default_params

        def without_extra_bufts():
            params = original()
            params.use_extra_bufts = False
            return params

        capi.llama_model_default_params = without_extra_bufts
        try:
            return llama_cpp.Llama(model_path=str(model_path), **kwargs)
        finally:
            capi.llama_model_default_params = original
