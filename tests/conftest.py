import os
import sys

# Tests import the installed package. A source checkout on sys.path (``python -m pytest``
# puts the current folder first) would shadow it with a tree whose kernels are not built.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _ROOT]

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import pymodules as pm  # noqa: E402


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
