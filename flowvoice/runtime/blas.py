"""numpy's BLAS on one thread for a call whose matrix product would leave threads spinning.

numpy's OpenBLAS computes a matrix product on a thread per core and leaves those threads
spinning for a while after it. After Smart Turn's feature extraction (a small mel-filter
product, as fast on one thread) the spinning thread took a core from the LLM computing next:
on the 2-core development machine the LLM's prompt took 90 ms right after a Smart Turn call
instead of 45. Holding numpy to one thread for the whole process is no cure: Whisper tiny.en
then took ~115 ms a transcription instead of ~85 (measured, cause not found).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import Any


@functools.cache
def _controller() -> Any:
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()  # the libraries loaded now: numpy's BLAS comes with numpy


@contextlib.contextmanager
def one_blas_thread() -> Iterator[None]:
    """Within the block, the BLAS libraries loaded in this process (numpy's) use one thread.
    The limit is process-wide while it lasts."""
    with _controller().limit(limits=1, user_api="blas"):
        yield
