"""``one_torch_thread``: an autouse fixture for tests of tiny tensors, imported where it applies.

On tiny tensors OpenMP hand-offs cost more than the maths, and on a shared 2-core machine two spinning
threads make each op many times slower. The previous thread count is restored after each test.
"""
import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
