import os

import pytest
import torch

# Two cores: keep torch from oversubscribing when tests run next to other work.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
