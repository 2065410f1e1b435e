"""Layers whose weight and bias come from init methods (BigDL's Initializable), and
``parameter``, through which a constructor allocates the arrays its arguments size."""

import math
import threading

import numpy as np

from pymodules.nn.init import RandomUniform, thread_setting
from pymodules.nn.module import Module

_INITIAL = ("weight", "bias", "gradWeight", "gradBias")
_held = threading.local()


def restoring(arrays: dict):
    """In this block, in this thread, ``parameter`` allocates only what ``arrays`` holds:
    ``{attribute: shape}`` of the arrays a file holds for the module being rebuilt. A
    constructor whose arguments declare a parameter the file lacks, or of another shape,
    is refused before anything of that size is allocated; values are left unset (the
    file's are read in next)."""
    return thread_setting(_held, "arrays", arrays)


def parameter(module, attr: str, shape, fill=None) -> np.ndarray:
    """A new array for ``module``'s parameter or running state ``attr``, of ``shape`` and
    the module's dtype, filled with ``fill`` (None: left unset). The one way a constructor
    allocates what its arguments size, so that loading checks those sizes against the
    file first (``restoring``)."""
    shape = (int(shape),) if isinstance(shape, (int, np.integer)) else tuple(map(int, shape))
    held = getattr(_held, "arrays", None)
    if held is not None:
        if held.get(attr) != shape:
            found = f"'s {attr} has shape {held[attr]}" if attr in held else f" has no {attr}"
            raise ValueError(f"{type(module).__name__}: the file{found}, expected {shape} "
                             "from the arguments")
        return _aligned_empty(shape, module.dtype)
    a = _aligned_empty(shape, module.dtype)
    if fill is not None:
        a.fill(fill)
    return a


def _aligned_empty(shape, dtype) -> np.ndarray:
    """An array whose data starts on a 64-byte cache line (NumPy's own start 16 bytes past
    one): 64-byte loads along a weight row then touch one line each, not two. Zen 5, the
    MLP 784-256-256-10's forward at batch 1 (Linear's dot products): 12.3 us aligned against
    13.6-14.0 with the weights 16 or 32 bytes past a line."""
    dtype = np.dtype(dtype)
    size = math.prod(shape) * dtype.itemsize
    raw = np.empty(size + 64, np.uint8)
    start = -raw.ctypes.data % 64
    return raw[start:start + size].view(dtype).reshape(shape)


class Initializable(Module):
    """A weight, an optional bias, their init methods, initial arrays and regularizers.

    A subclass sets ``self._fans`` (what fan-in and fan-out mean for its weight) and calls
    ``_build``. ``reset()`` redraws from the init methods what was not given as an initial
    array (BigDL's rule: an explicit initWeight or initBias stays); regularizers add their
    gradient in ``_regularize()``, called at the end of accGradParameters.

    Initial arrays are copied in and then forgotten: neither the layer nor its constructor
    record keeps the caller's arrays, and a saved file holds the weights once.
    """

    _params = (("weight", "gradWeight"), ("bias", "gradBias"))
    _persist = ("_initialized",)
    wRegularizer = None
    bRegularizer = None
    _initialized = frozenset()  # the parameters set from initial arrays, that reset keeps

    def _build(self, weightShape, biasShape, inits=(), weightInit=None, biasInit=None):
        """Allocate weight (None: no weight) and bias (None: no bias), initialise them, then
        copy in the initial arrays ``inits`` = (weight, bias, gradWeight, gradBias)."""
        for what in ("wRegularizer", "bRegularizer"):
            reg = getattr(self, what)
            if reg is not None and not callable(getattr(reg, "accRegularization", None)):
                raise TypeError(f"{type(self).__name__}: {what} must be a regularizer "
                                f"(L1L2Regularizer, ...), got {type(reg).__name__}")
        for what, init in (("weightInitMethod", weightInit), ("biasInitMethod", biasInit)):
            if init is not None and not callable(init):
                raise TypeError(f"{type(self).__name__}: {what} must be an init method, got "
                                f"{type(init).__name__}")
        self.weightInitMethod = weightInit if weightInit is not None else RandomUniform()
        self.biasInitMethod = biasInit if biasInit is not None else RandomUniform()
        for value, grad, shape in (("weight", "gradWeight", weightShape),
                                   ("bias", "gradBias", biasShape)):
            setattr(self, value, None if shape is None else parameter(self, value, shape))
            if shape is None:
                setattr(self, grad, None)
            # otherwise the gradient is made on first use (module._Gradient)
        self._draw()
        # ``inits`` may be shorter than _INITIAL (embedding passes none): missing ones are None.
        for name, value in zip(_INITIAL, inits, strict=False):
            if value is not None:
                self._initial(name, value)
        self._initialized = frozenset(
            name for name, value in zip(_INITIAL[:2], inits, strict=False) if value is not None)
        self._unrecord(*(f"init{n[0].upper()}{n[1:]}" for n in _INITIAL))

    def _accepts(self, target, value) -> bool:
        """Whether an initial array of ``value``'s shape fits ``target``."""
        return value.shape == target.shape

    def _initial(self, name, value):
        what = f"init{name[0].upper()}{name[1:]}"
        target = getattr(self, name)
        if target is None:
            raise ValueError(f"{self}: {what} given, but there is no {name}")
        value = np.asarray(value)
        if not self._accepts(target, value):
            raise ValueError(f"{self}: {what} has shape {value.shape}, expected {target.shape}")
        target[...] = value.reshape(target.shape)

    def setInitMethod(self, weightInitMethod=None, biasInitMethod=None):
        """Replace the init methods (None keeps one) and re-initialise."""
        if weightInitMethod is not None:
            self.weightInitMethod = weightInitMethod
        if biasInitMethod is not None:
            self.biasInitMethod = biasInitMethod
        return self.reset()

    def _draw(self):
        fanIn, fanOut = self._fans
        if self.weight is not None and "weight" not in self._initialized:
            self.weightInitMethod(self.weight, fanIn, fanOut)
        if self.bias is not None and "bias" not in self._initialized:
            self.biasInitMethod(self.bias, fanIn, fanOut)

    def reset(self):
        self._draw()
        self.zeroGradParameters()
        return self

    def _regularize(self):
        if self.wRegularizer is not None and self.weight is not None:
            self.wRegularizer.accRegularization(self.weight, self.gradWeight, self.scaleW)
        if self.bRegularizer is not None and self.bias is not None:
            self.bRegularizer.accRegularization(self.bias, self.gradBias, self.scaleB)
