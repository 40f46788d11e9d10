"""Process-level settings that PyTorch's CPU path needs to be fast here.

PyTorch allocates CPU tensors with plain ``malloc``. glibc serves every block above its mmap threshold
(at most 32 MiB) with a fresh ``mmap`` and unmaps it on ``free``, so a meta-batch whose activations are
hundreds of MiB (Conv4, 16 tasks of 80 images: about 250 MiB in the first block alone) page-faults all
of them back in at every step: on a 2-core machine the step then spends more time in the kernel than
in the convolutions (measured: ProtoNet, 16 tasks, 2.0 s per step with glibc's defaults, 0.65 s with
the allocator tuned). Serving large blocks from the heap and keeping freed memory for the next step
removes that cost; the price is that the process keeps its peak memory instead of giving it back,
which is what a training process wants anyway.

This is a process-wide change, so it is made only where metaauto drives the whole computation
(meta-training, evaluation, benchmarks), only with glibc, and never when ``METAAUTO_TUNE_MALLOC=0``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_TRIM_THRESHOLD = 1 << 30

_tuned: bool | None = None


def tune_cpu_allocator() -> bool:
    """Serve large CPU blocks from the heap and keep freed memory; ``True`` when the setting is in force.

    Idempotent and cheap, so entry points simply call it. Does nothing off Linux/glibc or when the
    environment variable ``METAAUTO_TUNE_MALLOC`` is ``0``.
    """
    global _tuned
    if _tuned is not None:
        return _tuned
    _tuned = False
    if os.environ.get("METAAUTO_TUNE_MALLOC", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other libcs have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _tuned = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
    return _tuned
