import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from flowvoice.testing import register_nodes  # noqa: E402

# Test graphs (tests/data/bad_graphs too) use the test.* nodes, which `flowvoice nodes` and
# the registry leave out: register them for every test.
register_nodes()
