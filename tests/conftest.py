import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def _one_thread_session():
    """One intra-op thread for the whole suite: on the two shared vCPUs, multi-threaded small ops
    stall unpredictably (measured: a 10 s test took 233 s with 2 threads while the other core was busy)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def one_thread():
    """Kept for modules that ask for it explicitly; the session already runs on one thread."""
    yield
