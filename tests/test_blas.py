"""numpy's BLAS keeps to one thread once a session loads its engines (flowvoice.runtime.blas)."""

from __future__ import annotations

import anyio
import numpy as np
import pytest
from threadpoolctl import threadpool_info

from flowvoice.runtime.resources import ResourceCache


def blas_threads() -> list[int]:
    return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]


def test_loading_an_engine_leaves_numpy_one_blas_thread():
    np.ones((64, 64)) @ np.ones((64, 64))  # numpy's BLAS is loaded
    if not blas_threads():
        pytest.skip("numpy has no BLAS library threadpoolctl can see")
    loaded = anyio.run(ResourceCache().get, "engine", lambda: "model")
    assert loaded == "model" and blas_threads() == [1] * len(blas_threads())
