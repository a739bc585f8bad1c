import pytest
import torch

# One thread: the tests' small tensors gain nothing from more, and results do not depend on load.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
