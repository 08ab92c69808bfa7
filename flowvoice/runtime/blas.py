"""One BLAS thread for numpy: the engines bring their own threads.

numpy's OpenBLAS computes a matrix product on a thread per core and leaves those threads
spinning for a while after it. The products flowvoice computes with numpy are small (the mel
filters of Smart Turn's and Whisper's audio features) and gained nothing from more threads,
while the spinning thread took a core from the engine computing next: on the 2-core development
machine the LLM's prompt took 90 ms right after a Smart Turn call instead of 45.
"""

from __future__ import annotations

import functools


@functools.cache
def one_blas_thread() -> None:
    """Limit the BLAS libraries loaded in this process (numpy's) to one thread, once."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")
