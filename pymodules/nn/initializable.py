"""Layers whose weight and bias come from init methods (BigDL's Initializable)."""

import numpy as np

from pymodules.nn.init import RandomUniform
from pymodules.nn.module import Module

_INITIAL = ("weight", "bias", "gradWeight", "gradBias")


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
        self.weightInitMethod = weightInit if weightInit is not None else RandomUniform()
        self.biasInitMethod = biasInit if biasInit is not None else RandomUniform()
        for value, grad, shape in (("weight", "gradWeight", weightShape),
                                   ("bias", "gradBias", biasShape)):
            setattr(self, value, None if shape is None else np.empty(shape, self.dtype))
            if shape is None:
                setattr(self, grad, None)
            # otherwise the gradient is made on first use (Module.__getattr__)
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
