"""BigDL's flat parameters: the vector of ``getParameters()`` copied into a model."""

from __future__ import annotations

import numpy as np


def set_flat_parameters(model, array):
    """Copy the 1-D ``array`` (float32 or float64, exactly as many values as the model has
    parameters, in ``parameters()`` order, row-major: BigDL's ``getParameters()`` layout)
    into the model's parameters."""
    a = np.asarray(array)
    weights = model.parameters()[0]
    total = sum(w.size for w in weights)
    if a.dtype not in (np.float32, np.float64):
        raise TypeError(f"{model}: setFlatParameters takes a float32 or float64 array, got "
                        f"{a.dtype}")
    if a.ndim != 1:
        raise ValueError(f"{model}: setFlatParameters takes a 1-D array, got shape {a.shape}")
    if a.size != total:
        raise ValueError(f"{model}: setFlatParameters got {a.size} values, the model has "
                         f"{total} parameters")
    offset = 0
    for w in weights:
        w[...] = a[offset:offset + w.size].reshape(w.shape)
        offset += w.size
    return model
