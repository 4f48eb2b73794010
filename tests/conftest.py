import pytest
import torch


@pytest.fixture
def gen():
    """A fresh, seeded CPU generator: tests never touch the global RNG."""
    return torch.Generator().manual_seed(1234)


@pytest.fixture
def one_thread():
    """One torch thread for the test: on the shared 2-core dev machine intra-op threads only
    contend (steps ran 10x slower). Opt in with pytest.mark.usefixtures("one_thread")."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
