"""Keep glibc from growing the heap with every conversation turn.

glibc serves a large ``malloc`` (128 KiB at first) with its own ``mmap`` and unmaps it when
freed, but after such a free it raises that threshold up to the freed size, so later large
buffers (a turn's llama.cpp memory copy, Whisper's features, audio arrays) come from the heap,
where freeing them leaves holes: a 200-turn soak of the default graph grew RSS by ~0.6-3.6 MB
a turn. Fixing the threshold keeps them on ``mmap``: the same soak stayed flat
(docs/benchmarks.md, "Long conversations").
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger("flowvoice.memory")

#: mallopt's M_MMAP_THRESHOLD parameter (malloc.h).
_M_MMAP_THRESHOLD = -3
#: glibc's initial threshold: larger blocks get their own mapping, returned when freed.
MMAP_THRESHOLD = 128 * 1024


def keep_large_buffers_off_the_heap() -> bool:
    """Fix glibc's mmap threshold (no effect, False, where the C library is not glibc)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        if not hasattr(libc, "gnu_get_libc_version"):  # musl and others: leave them be
            return False
        done = bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    except (OSError, AttributeError, TypeError):
        return False
    if not done:
        log.debug("mallopt(M_MMAP_THRESHOLD) failed")
    return done
