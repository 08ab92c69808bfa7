import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from flowvoice.testing import register_nodes  # noqa: E402

# Test graphs (tests/data/bad_graphs too) use the test.* nodes, which `flowvoice nodes` and
# the registry leave out: register them for every test.
register_nodes()


@pytest.fixture
def own_resources():
    """A test loads its own models (fakes, made-up device settings): the process-wide cache
    starts empty and gets its earlier models back when the test ends."""
    from flowvoice.runtime.resources import shared_resources

    before = dict(shared_resources._items)
    shared_resources._items.clear()  # the test's own loads, not what earlier tests cached
    yield shared_resources
    shared_resources._items.clear()
    shared_resources._items.update(before)
