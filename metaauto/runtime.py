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

import contextlib
import ctypes
import ctypes.util
import os
import sys
from typing import Iterator

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


def cpu_workers() -> int:
    """CPUs this process may run on (its affinity mask, which containers and ``taskset`` narrow)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - platforms without affinity masks
        return max(1, os.cpu_count() or 1)


@contextlib.contextmanager
def single_threaded_ops() -> Iterator[None]:
    """Run tiny CPU operations on one intra-op thread each, so several can run side by side.

    Why: per-task fine-tuning (5 images through a Conv4) is far too small to split across threads;
    with two intra-op threads on a 2-core machine under load a step took 10x longer than with one,
    because every small operation waits for both threads to be scheduled. Callers then run independent
    tasks in a thread pool of :func:`cpu_workers` threads (autograd and the optimisers run CPU work on
    the calling thread and release the GIL), which uses the cores for whole tasks instead.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
