import pytest
import torch

# One thread: the tests' small tensors gain nothing from more, results do not depend on load, and
# OpenMP does not spin-wait on a shared 2-core machine.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    """Every test starts with one intra-op thread, whatever an earlier test set."""
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
