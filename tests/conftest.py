import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread: the two shared vCPUs make multi-threaded tiny ops stall."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
