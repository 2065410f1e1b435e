"""Initialisation methods (BigDL's InitializationMethod), applied in place.

Each is called as ``method(array, fanIn, fanOut)``; the layer says what fan-in and fan-out
mean for its weight (Linear: inputSize and outputSize). Biases get the weight's fans, as in
Torch7, so that the default ``RandomUniform()`` gives both +-1/sqrt(fanIn).
"""

import math
import threading

import numpy as np

from pymodules.random import generator

_skipping = threading.local()


class thread_setting:
    """In this block, in this thread, ``local.name`` is ``value``; the previous value (None
    when there was none) comes back after it. (A class, not a generator: loading enters
    one per module it rebuilds.)"""

    __slots__ = ("local", "name", "value", "before")

    def __init__(self, local: threading.local, name: str, value):
        self.local, self.name, self.value = local, name, value

    def __enter__(self):
        self.before = getattr(self.local, self.name, None)
        setattr(self.local, self.name, self.value)

    def __exit__(self, *exc):
        setattr(self.local, self.name, self.before)


def skipped():
    """In this block, in this thread, init methods leave arrays as they are: persistence
    rebuilds modules whose parameters it then overwrites from a file, and drawing them
    first would cost time, memory and numbers from the library's random stream."""
    return thread_setting(_skipping, "on", True)


class InitializationMethod:
    def __call__(self, array: np.ndarray, fanIn: int, fanOut: int) -> None:
        if getattr(_skipping, "on", False):
            return
        array[...] = self.sample(array.shape, fanIn, fanOut)

    def sample(self, shape, fanIn, fanOut):
        raise NotImplementedError

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class RandomUniform(InitializationMethod):
    """Uniform in [lower, upper]; with no bounds, in +-1/sqrt(fanIn)."""

    def __init__(self, lower=None, upper=None):
        if (lower is None) != (upper is None):
            raise ValueError(f"RandomUniform takes both bounds or neither, got {lower}, {upper}")
        if lower is not None and lower > upper:
            raise ValueError(f"RandomUniform: lower {lower} exceeds upper {upper}")
        self.lower, self.upper = lower, upper

    def sample(self, shape, fanIn, fanOut):
        if self.lower is None:
            stdv = 1.0 / math.sqrt(max(fanIn, 1))
            return generator().uniform(-stdv, stdv, shape)
        return generator().uniform(self.lower, self.upper, shape)


class RandomNormal(InitializationMethod):
    """Normal with the given mean and standard deviation."""

    def __init__(self, mean=0.0, stdv=1.0):
        if stdv < 0:
            raise ValueError(f"RandomNormal: stdv must be >= 0, got {stdv}")
        self.mean, self.stdv = mean, stdv

    def sample(self, shape, fanIn, fanOut):
        return generator().normal(self.mean, self.stdv, shape)


class Xavier(InitializationMethod):
    """Glorot: uniform in +-sqrt(6 / (fanIn + fanOut))."""

    def sample(self, shape, fanIn, fanOut):
        stdv = math.sqrt(6.0 / max(fanIn + fanOut, 1))
        return generator().uniform(-stdv, stdv, shape)


class MsraFiller(InitializationMethod):
    """He: normal with std sqrt(2 / n), n the fan-in (the fan-out when not
    varianceNormAlongFanIn)."""

    def __init__(self, varianceNormAlongFanIn=True):
        self.varianceNormAlongFanIn = bool(varianceNormAlongFanIn)

    def sample(self, shape, fanIn, fanOut):
        n = fanIn if self.varianceNormAlongFanIn else fanOut
        return generator().normal(0.0, math.sqrt(2.0 / max(n, 1)), shape)


class ConstInitMethod(InitializationMethod):
    """Every element set to ``value``."""

    def __init__(self, value):
        self.value = float(value)

    def sample(self, shape, fanIn, fanOut):
        return self.value


class Zeros(ConstInitMethod):
    def __init__(self):
        super().__init__(0.0)

    def __repr__(self):
        return "Zeros()"


class Ones(ConstInitMethod):
    def __init__(self):
        super().__init__(1.0)

    def __repr__(self):
        return "Ones()"
