"""The one-thread fixture the tiny-model test modules share (imported by name, which makes it autouse there)."""

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors run ~50x faster on one thread than with two threads contending for 2 busy cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
