import os
import sys

# Tests import the installed package. A source checkout on sys.path (``python -m pytest``
# puts the current folder first) would shadow it with a tree whose kernels are not built.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _ROOT]

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import pymodules as pm  # noqa: E402


def pytest_addoption(parser):
    parser.addoption("--poison-empty", action="store_true",
                     help="fill every float array from np.empty / np.empty_like with "
                          "signalling NaNs: a test that reads memory before writing it fails")


def pytest_configure(config):
    if config.getoption("--poison-empty"):
        from poison import poisoned

        np.empty, np.empty_like = poisoned(np.empty), poisoned(np.empty_like)


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
