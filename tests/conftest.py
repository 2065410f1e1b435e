import numpy as np
import pytest

import pymodules as pm


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from the same library generator."""
    pm.setSeed(1234)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def torch():
    """The PyTorch oracle; tests that use it skip when torch is not installed."""
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    return torch
