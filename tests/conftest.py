"""Shared fixtures. Opt in per module with `pytestmark = pytest.mark.usefixtures("one_thread")`."""

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """Tiny ops: a second torch thread only adds spin-waiting on a shared 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
