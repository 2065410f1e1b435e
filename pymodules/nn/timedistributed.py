"""TimeDistributed: one layer on every time step, the time axis folded into the batch."""

import numpy as np

from pymodules.facade import require_array
from pymodules.nn.containers import Container


class TimeDistributed(Container):
    """Runs ``layer`` on every time step of a (batch, time, ...) input.

    The layer sees the input viewed as (batch * time, ...) — one call for the whole
    sequence (one GEMM for a Linear), not one per step — and its output, which must keep
    that leading axis, is viewed back as (batch, time, ...). Parameters, gradients and
    running state are the layer's own; backward and accGradParameters run through it on
    the same folded views. A strided input is copied once to fold it.
    """

    _tables = False  # the input and gradOutput are arrays of rank >= 3

    def __init__(self, layer):
        super().__init__()
        self.add(layer)

    def add(self, module):
        if self.modules:
            raise ValueError(f"{self.getName()}: already wraps {self.modules[0].getName()}; a "
                             f"TimeDistributed holds one layer")
        return super().add(module)

    @property
    def layer(self):
        return self.modules[0]

    def _fold(self, x, what):
        """``x`` (batch, time, ...) viewed as (batch * time, ...)."""
        if not isinstance(x, np.ndarray) or x.ndim < 3:
            x = require_array(x, what)
            raise ValueError(f"{self.getName()}: {what} has {x.ndim} dimensions {x.shape}, "
                             f"expected at least 3 (batch, time, ...)")
        shape = x.shape
        return x.reshape((shape[0] * shape[1],) + shape[2:])

    def updateOutput(self, input):
        x = self._fold(input, "input")
        layer = self.modules[0]
        y = layer.forward(x)
        if not isinstance(y, np.ndarray) or y.ndim == 0 or y.shape[0] != x.shape[0]:
            y = require_array(y, "the layer's output")
            batch, time = input.shape[:2]
            raise ValueError(f"{self.getName()}: {layer.getName()} turned {x.shape} into "
                             f"{y.shape}; it must keep the leading axis of {batch * time} "
                             f"(batch {batch} x time {time})")
        self.output = y.reshape(input.shape[:2] + y.shape[1:])
        return self.output

    def _walk_back(self, input, gradOutput, step):
        x = self._fold(input, "input")
        g = self._fold(gradOutput, "gradOutput")
        if gradOutput.shape[:2] != input.shape[:2]:
            raise ValueError(f"{self.getName()}: gradOutput has shape {gradOutput.shape}, "
                             f"expected (batch, time) = {input.shape[:2]} in front like the "
                             f"input {input.shape}")
        gi = step(self.modules[0], x, g)
        # A layer that does not propagate back (propagateBack False) leaves its gradInput
        # as it is: passed on unfolded.
        return gi.reshape(input.shape) if gi.size == input.size else gi
