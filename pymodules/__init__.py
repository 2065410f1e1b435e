"""pymodules: BigDL's module API (Torch7's nn) for NumPy, on typed Cython kernels over BLAS.

    import pymodules as pm
    model = pm.Sequential().add(pm.Linear(4, 3))
    y = model.forward(x)
"""

from pymodules.criterion import *  # noqa: F403
from pymodules.criterion import __all__ as _criterion_all
from pymodules.data import DataSet, MiniBatch, Sample
from pymodules.nn import *  # noqa: F403
from pymodules.nn import __all__ as _nn_all
from pymodules.optim import *  # noqa: F403
from pymodules.optim import __all__ as _optim_all
from pymodules.persistence import FileFormatError, load
from pymodules.random import setSeed
from pymodules.threads import getNumThreads, setNumThreads
from pymodules.validation import (
    MAE,
    Loss,
    Top1Accuracy,
    Top5Accuracy,
    TreeNNAccuracy,
    ValidationMethod,
    ValidationResult,
)

__version__ = "0.1.0"  # the one place of the version (pyproject.toml reads it)


def engine_type() -> str:
    """The execution engine and the BLAS it runs on."""
    import scipy

    try:
        blas = scipy.show_config(mode="dicts")["Build Dependencies"]["blas"]
        name = f"{blas['name']} {blas['version']}"
    except (KeyError, TypeError, ValueError):
        name = "unknown BLAS"
    return f"pymodules Cython engine on scipy.linalg.cython_blas ({name})"


__all__ = [*_nn_all, *_criterion_all, *_optim_all,
           "DataSet", "Loss", "MAE", "MiniBatch", "Sample", "Top1Accuracy", "Top5Accuracy",
           "TreeNNAccuracy", "ValidationMethod", "ValidationResult", "engine_type", "setSeed",
           "FileFormatError", "load", "getNumThreads", "setNumThreads"]

from pymodules.nn.overview import summary  # noqa: E402

__all__ += ["summary"]


def fromTorch(module, dtype=None):
    """The pymodules equivalent of a torch.nn.Module, with its weights (see
    pymodules.interop.torch); torch is imported only here."""
    from pymodules.interop.torch import fromTorch as convert

    return convert(module, dtype)


__all__ += ["fromTorch"]

from pymodules.interop.onnx_import import loadONNX  # noqa: E402 - imports onnx only when called

__all__ += ["loadONNX"]
