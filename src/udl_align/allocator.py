"""The C heap's settings for a process that aligns: freed memory kept for the next batch.

Every batch of an aligner allocates and frees the same few large buffers (rotated copies,
spectra, feature maps of 1-30 MB). glibc's ``malloc`` serves blocks that large with fresh
``mmap`` pages and gives them back when they are freed, or trims the top of its heap, so
each batch pays the kernel's page faults on every buffer again. Serving them from the heap
and keeping freed memory for reuse (``mallopt``: ``M_MMAP_THRESHOLD`` at glibc's upper limit,
``M_TRIM_THRESHOLD`` high) made ``bruteforce`` 1.4x faster on 2 cores (64 pairs of 128 px:
29-30 ms a pair against 20-21) and the network path about 1.15x, and took away most of the
+-20% that ``bruteforce``'s pairs/s moved between runs of one benchmark. The cost: up to
``TRIM_THRESHOLD`` of freed memory stays with the process until it ends.

The command line (:mod:`udl_align.cli`) and the benchmarks set it once at their start; the
library itself never does (a process-wide setting is its owner's choice).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

#: glibc's ``mallopt`` parameters
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: blocks below this come from the heap, not from fresh pages (glibc's upper limit on 64-bit)
MMAP_THRESHOLD = 32 * 1024 * 1024
#: freed memory the heap keeps before it gives the top back to the system
TRIM_THRESHOLD = 512 * 1024 * 1024

_kept = False


def keep_freed_memory() -> bool:
    """Set the heap as the module doc says, once per process. Returns whether it is set
    (``False`` where the C library is not glibc: nothing is changed there)."""
    global _kept
    if _kept:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):  # another C library (musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    _kept = (mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
             and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1)
    return _kept


__all__ = ["keep_freed_memory"]
