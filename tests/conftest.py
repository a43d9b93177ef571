import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))  # tests/tiny.py
# Training runs in tests never go to a wandb account the developer happens to be logged in to.
os.environ["EAGLE_WANDB"] = "0"

# Two cores: one intra-op thread per test process keeps timings steady and avoids oversubscription.
THREADS = int(os.environ.get("EAGLE_TEST_THREADS", "1"))
torch.set_num_threads(THREADS)


@pytest.fixture(autouse=True)
def pinned_threads():
    """Restore the thread count after tests that change it (e.g. `eagle bench --threads`)."""
    yield
    torch.set_num_threads(THREADS)


def pytest_collection_modifyitems(config, items):
    if os.environ.get("EAGLE_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow; run with EAGLE_SLOW=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
