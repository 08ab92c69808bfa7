"""numpy's BLAS on one thread for Smart Turn's features, and only for them
(flowvoice.runtime.blas)."""

from __future__ import annotations

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from flowvoice.runtime.blas import one_blas_thread


def blas_threads() -> list[int]:
    return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]


def test_one_blas_thread_within_the_block_only():
    np.ones((64, 64)) @ np.ones((64, 64))  # numpy's BLAS is loaded
    before = blas_threads()
    if not before:
        pytest.skip("numpy has no BLAS library threadpoolctl can see")
    with one_blas_thread():
        assert blas_threads() == [1] * len(before)
    assert blas_threads() == before


def test_smart_turn_features_on_one_blas_thread(monkeypatch):
    from flowvoice.nodes import smart_turn_model

    model = smart_turn_model.SmartTurnModel()
    seen = []
    features = model._features
    monkeypatch.setattr(
        model, "_features", lambda *a, **k: seen.append(blas_threads()) or features(*a, **k)
    )
    before = blas_threads()
    assert 0 <= model.probability(np.zeros(16000, np.int16), 16000) <= 1
    assert seen == [[1] * len(before)] and blas_threads() == before
