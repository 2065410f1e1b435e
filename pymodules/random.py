"""The library's one random generator: initialisation, dropout and shuffling draw from it."""

import numpy as np

_generator = np.random.default_rng()


def setSeed(seed: int) -> None:
    """Make every later random draw of the library reproducible."""
    global _generator
    _generator = np.random.default_rng(seed)


def generator() -> np.random.Generator:
    """The current generator (replaced by setSeed: fetch it, don't keep it)."""
    return _generator
