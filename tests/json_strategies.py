"""Hypothesis strategies for arbitrary JSON values (the fuzz tests of both wire protocols)."""

from __future__ import annotations

from hypothesis import strategies as st

json_scalars = (
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=12)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)
