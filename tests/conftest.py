import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from flowvoice.testing import register_nodes  # noqa: E402

# Test graphs (tests/data/bad_graphs too) use the test.* nodes, which `flowvoice nodes` and
# the registry leave out: register them for every test.
register_nodes()


@pytest.fixture
def own_resources():
    """Models a test loads (fakes, made-up device settings) leave the process-wide cache
    when it ends, so later tests load the real ones."""
    from flowvoice.runtime.resources import shared_resources

    before = dict(shared_resources._items)
    yield shared_resources
    shared_resources._items.clear()
    shared_resources._items.update(before)
