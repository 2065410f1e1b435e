"""Recurrent layers: the cells LSTM, GRU, RnnCell and LSTMPeephole, run over a whole
sequence by Recurrent (one direction) or BiRecurrent (both).

Sequences are (batch, time, features); the initial states are zero. A cell holds its
parameters in BigDL's order and shapes (the input-to-hidden Linear first, applied to the
whole sequence at once, then the hidden-to-hidden arrays shared by every step) and runs the
sequence through ``pymodules.engine.recurrent``: one GEMM for the input projection, then per
step one GEMM and one fused pass for the gates; backward through time the same way.

A cell added to a container runs there; called directly, a cell runs over the sequence as
its container would.
"""

import numpy as np

from pymodules.engine.buffers import resized, resized_list
from pymodules.engine.dropout import dropout_update_output
from pymodules.engine.linear import OWN_KERNELS
from pymodules.engine.recurrent import (
    ACT_RELU,
    ACT_SIGMOID,
    ACT_TANH,
    add_reversed,
    gru_bptt,
    gru_steps,
    lstm_acc_grad_parameters,
    lstm_bptt,
    lstm_grad_input,
    lstm_project,
    lstm_step_kernel,
    lstm_steps,
    lstm_xh_acc,
    lstm_xh_backward,
    lstm_xh_forward,
    lstm_xh_panels,
    mask_over_time,
    masked_sum_over_time,
    peephole_acc,
    peephole_bptt,
    peephole_steps,
    recurrent_acc_hidden,
    recurrent_acc_input,
    recurrent_project,
    recurrent_update_grad_input,
    reverse_time,
    rnn_bptt,
    rnn_steps,
    stack_rows,
    swap_outer,
    swap_time_batch,
)
from pymodules.facade import shape_of
from pymodules.nn.activation import ReLU, Sigmoid, Tanh
from pymodules.nn.containers import Container
from pymodules.nn.init import RandomUniform
from pymodules.nn.initializable import parameter
from pymodules.nn.module import Module, attribute, whole
from pymodules.nn.table import CAddTable
from pymodules.random import Stream


def _grad_name(attr):
    return "grad" + attr[0].upper() + attr[1:]


class _Cell(Module):
    """Shared books of the cells: sizes, parameters, regularizers and the three methods.

    A subclass lists its parameters in ``_layout`` as (attribute, role, shape) in BigDL's
    order, role one of "w" (input weight), "b" (bias), "u" (hidden weight), "c" (bias of a
    hidden Linear), "p" (peephole), shapes a function of (inputSize, hiddenSize); an
    attribute that ``_present`` denies (a bias switched off, the arrays of the other
    dropout layout) is None and not a parameter. It defines ``_steps`` (the forward after
    the input projection) and ``_bptt`` (the gate gradients into ``self._dgates``) and
    ``_acc_hidden``; with ``p > 0`` the input side is one Linear per gate, named by the
    gate letters of ``_gateNames`` (``weightR``, ``biasR``, ...).
    """

    _gateNames = ""

    _blocks = 1  # gate blocks of the input projection
    _dropout = False  # whether p > 0 is implemented
    _layout = ()
    _scratch = ("_input", "_gates", "_hprev", "_dgates", "_dh", "_dc", "_gradInput", "_bpttOf")

    def __init__(self, inputSize, hiddenSize, p, wRegularizer, uRegularizer, bRegularizer,
                 dtype):
        super().__init__(dtype)
        name = type(self).__name__
        self.inputSize = whole(self, "inputSize", inputSize)
        self.hiddenSize = whole(self, "hiddenSize", hiddenSize)
        if self.inputSize < 1 or self.hiddenSize < 1:
            raise ValueError(f"{name}: sizes must be >= 1, got {self.inputSize} -> "
                             f"{self.hiddenSize}")
        self.p = float(p)
        if not 0 <= self.p < 1:
            raise ValueError(f"{name}: the drop probability p must lie in [0, 1), got {self.p}")
        if self.p != 0 and not self._dropout:
            raise ValueError(f"{name}: dropout p={self.p} is not supported; p must be 0")
        if self.p != 0:
            self._rng = Stream()  # the masks' own generator (see pymodules.random)
        for what, reg in (("wRegularizer", wRegularizer), ("uRegularizer", uRegularizer),
                          ("bRegularizer", bRegularizer)):
            if reg is not None and not callable(getattr(reg, "accRegularization", None)):
                raise TypeError(f"{name}: {what} must be a regularizer (L1L2Regularizer, "
                                f"...), got {type(reg).__name__}")
        self.wRegularizer, self.uRegularizer = wRegularizer, uRegularizer
        self.bRegularizer = bRegularizer
        for attr, _, shape in self._layout:
            present = self._present(attr)
            setattr(self, attr, parameter(self, attr, shape(self.inputSize, self.hiddenSize))
                    if present else None)
            if not present:
                setattr(self, _grad_name(attr), None)
        self._input = self._gates = self._hprev = self._dgates = self._dh = self._dc = None
        self._gradInput = None
        self._bpttOf = None
        self.reset()

    def __init_subclass__(cls, **kwargs):
        # _params first: Module's hook makes the gradient attributes of the class's _params
        cls._params = tuple((attr, _grad_name(attr)) for attr, _, _ in cls._layout)
        super().__init_subclass__(**kwargs)
        cls._roles = {role: tuple((a, _grad_name(a)) for a, r, _ in cls._layout if r == role)
                      for role in ("w", "b", "u", "c", "p")}

    def _present(self, attr):
        return True

    @staticmethod
    def _carry(b, h):
        """The shape of the carries of the backward through time."""
        return (b, h)

    def _fan(self, role):
        return self.inputSize if role in ("w", "b") else self.hiddenSize

    def _of(self, prefix, k):
        """The array ``prefix + k`` of gate ``k`` (e.g. ``weightI``)."""
        return getattr(self, attribute(prefix, k))

    def _draw(self, mask, scratch):
        """Fill ``mask`` with a new scaled dropout mask (0, or 1 / (1 - p) with probability
        1 - p) from the cell's stream; ``scratch`` (the mask's shape) is overwritten."""
        dropout_update_output(scratch, scratch, mask, self.p, True, True,
                              self._rng.generator.bit_generator.random_raw())

    def reset(self):
        """BigDL's initialisation: each array uniform in +-1/sqrt(fan-in) of its Linear
        (input size for the input projection, hidden size for the hidden weights), the
        peepholes in +-1/sqrt(H)."""
        init = RandomUniform()
        for attr, role, _ in self._layout:
            if getattr(self, attr) is not None:
                init(getattr(self, attr), self._fan(role), self.hiddenSize)
        self.zeroGradParameters()
        return self

    def _arrays(self, role):
        return [(getattr(self, a), getattr(self, g)) for a, g in self._roles[role]
                if getattr(self, a) is not None]

    # -- the protocol ---------------------------------------------------------------------
    def updateOutput(self, input):
        shape = shape_of(input)
        b, t = (shape[0], shape[1]) if len(shape) == 3 else (0, 0)
        h = self.hiddenSize
        xt = self._input = resized(self._input, (t, b, self.inputSize), -1, self.dtype)
        swap_time_batch(input, xt, self.inputSize)
        self._gates = resized(self._gates, (t, b, self._blocks * h), -1, self.dtype)
        self._hprev = resized(self._hprev, (t, b, h), -1, self.dtype)
        out = self.output = resized(self.output, (b, t, h), -1, self.dtype)
        self._project(xt)
        self._steps(out)
        self._bpttOf = None
        return out

    def _project(self, xt):
        if self.p == 0:
            recurrent_project(xt, self._gates, self.weight, self.bias)
            return
        # p > 0 (GRU, LSTMPeephole): each gate's own input Linear, as BigDL's graph, on the
        # input that training drops with one mask per gate, held over time; the hidden
        # masks are drawn alongside
        n, (t, b, i) = len(self._gateNames), shape_of(xt)
        h, dt = self.hiddenSize, self.dtype
        self._masked = masked = self._train
        xs = xt
        if masked:
            mx = self._inputMask = resized(self._inputMask, (n, b, i), -1, dt)
            mh = self._hiddenMask = resized(self._hiddenMask, (b, n * h), -1, dt)
            self._inputMaskOut = resized(self._inputMaskOut, mx)
            self._draw(mx, self._inputMaskOut)
            self._hiddenMaskOut = resized(self._hiddenMaskOut, mh)
            self._draw(mh, self._hiddenMaskOut)
            xs = self._maskedInput = resized(self._maskedInput, (n, t, b, i), -1, dt)
            mask_over_time(xt.reshape(1, t, b * i), mx.reshape(n, 1, b * i),
                           xs.reshape(n, 1, t, b * i))
        for q, k in enumerate(self._gateNames):
            recurrent_project(xs[q] if masked else xt, self._gates, self._of("weight", k),
                              self._of("bias", k), None, q * h)

    def updateGradInput(self, input, gradOutput):
        self._backThroughTime(input, gradOutput)
        if not self.propagateBack:
            return self.gradInput
        t, b = shape_of(self._dgates)[:2]
        git = self._gradInput = resized(self._gradInput, (t, b, self.inputSize), -1,
                                        self.dtype)
        self._inputGrad(git)
        gi = self.gradInput = resized(self.gradInput, (b, t, self.inputSize), -1, self.dtype)
        swap_time_batch(git, gi)
        return gi

    def _inputGrad(self, git):
        """The gradient of the time-major input into ``git``."""
        if self.p == 0:
            recurrent_update_grad_input(self._dgates, git, self.weight)
            return
        n, (t, b, i), h = len(self._gateNames), shape_of(git), self.hiddenSize
        parts = self._gradParts = resized(self._gradParts, (n, t, b, i), -1, self.dtype)
        for q, k in enumerate(self._gateNames):
            recurrent_update_grad_input(self._dgates, parts[q], self._of("weight", k),
                                        q * h)
        mask = self._inputMask.reshape(n, 1, b * i) if self._masked else None
        masked_sum_over_time(parts.reshape(n, 1, t, b * i), mask, git.reshape(1, t, b * i))

    def _backThroughTime(self, input, gradOutput):
        shape, h = shape_of(self._gates), self.hiddenSize
        if len(shape) != 3:
            raise ValueError("backward needs a forward first")
        t, b = shape[0], shape[1]
        self._dgates = resized(self._dgates, (t, b, self._blocks * h), -1, self.dtype)
        self._dh = resized(self._dh, self._carry(b, h), -1, self.dtype)
        self._dc = resized(self._dc, self._carry(b, h), -1, self.dtype)
        self._bptt(gradOutput)
        self._bpttOf = (input, gradOutput)

    def accGradParameters(self, input, gradOutput):
        done = self._bpttOf
        if done is None or done[0] is not input or done[1] is not gradOutput:
            self._backThroughTime(input, gradOutput)
        self._bpttOf = None
        self._accumulate()
        self._regularize()

    def _accumulate(self):
        if self.p == 0:
            biases = self._arrays("b")
            recurrent_acc_input(self._input, self._dgates, self.gradWeight,
                                biases[0][1] if biases else None,
                                biases[1][1] if len(biases) > 1 else None, self.scaleW,
                                self.scaleB)
        else:
            h = self.hiddenSize
            for q, k in enumerate(self._gateNames):
                recurrent_acc_input(self._maskedInput[q] if self._masked else self._input,
                                    self._dgates, self._of("gradWeight", k),
                                    self._of("gradBias", k), None, self.scaleW, self.scaleB,
                                    q * h)
        self._acc_hidden()

    def _regularize(self):
        for role, reg, scale in (("w", self.wRegularizer, self.scaleW),
                                 ("u", self.uRegularizer, self.scaleW),
                                 ("b", self.bRegularizer, self.scaleB),
                                 ("c", self.bRegularizer, self.scaleB)):
            if reg is not None:
                for w, g in self._arrays(role):
                    reg.accRegularization(w, g, scale)

    def extraRepr(self):
        return f"{self.inputSize} -> {self.hiddenSize}" + (f", p={self.p}" if self.p else "")


def _refuse_activation(owner, what, given, allowed):
    if given is not None and not isinstance(given, allowed):
        names = " or ".join(c.__name__ for c in (allowed if isinstance(allowed, tuple)
                                                   else (allowed,)))
        raise ValueError(f"{owner}: {what} must be {names} (the gates are fused kernels), "
                         f"got {type(given).__name__}")


_LSTM_GATES = "IGFO"  # the gate blocks of the kernels' packed arrays


def _per_gate(prefix, role, shape, gates):
    return tuple((prefix + k, role, shape) for k in gates)


#: Whether the LSTM runs the per-step products of batches 16 and 32 on _narrow.h (engine's
#: lstm_step_kernel, AVX2-wide) where it does not run the [x, h] panels (float64, dropout):
#: beside OpenBLAS's AVX2 kernels they beat its GEMMs; beside its AVX-512 ones OpenBLAS
#: is faster.
OWN_PRODUCTS = OWN_KERNELS

#: Whether the float32 LSTM without dropout runs on the engine's packed [x, h] panels
#: (lstm_xh_*): beside OpenBLAS's AVX2 kernels, and on any core with AVX-512, whose
#: panels are 48 columns of 64-byte vectors (lstm_xh_panels). Beside OpenBLAS's AVX2
#: kernels (batch 16, 64 -> 128, a forward and backward, bench/bench_recurrent.py) the
#: 24-column panels ran in 2.6 ms against its GEMMs' 3.0 on a Zen 3 core; on a Zen 5 core
#: the 48-column ones run in 1.4-1.6 ms, where the steps' GEMMs alone take 2.9-3.1 on
#: OpenBLAS's Haswell kernels and the module on its SkylakeX ones 2.0-2.3; at batch 128,
#: 256 -> 256, 59-61 ms against 108-110 and 66-68.
XH_PANELS = OWN_KERNELS or lstm_xh_panels(1, 1)[2] == 48


class LSTM(_Cell):
    """Long short-term memory: gates i, g, f, o (row blocks of the weights, in that order)
    ``z = W_ih x + b_ih + W_hh h``; ``i, f, o = sigmoid``, ``g = tanh``; ``c = f c + i g``;
    ``h = o tanh(c)``. Parameters ``[W_ih (4H, I), b_ih (4H), W_hh (4H, H)]`` (no hidden
    bias), as BigDL's.

    Dropout ``p > 0`` as BigDL builds it: each gate k has a Linear of its own on the input
    and one (with a bias) on h(t-1), ``z_k = W_k (x * mx_k) + b_k + U_k (h * mh_k) + c_k``,
    so the parameters are BigDL's ``[W_o, b_o, W_f, b_f, W_g, b_g, W_i, b_i, U_o, c_o, U_f,
    c_f, U_g, c_g, U_i, c_i]`` (W_k (H, I), U_k (H, H), b_k and c_k (H)), the order of
    its graph. In training each of the eight Dropouts draws one mask per forward, over
    (batch, features), that holds at every step of the sequence (BigDL's Recurrent shares
    the first step's noise with the other steps); a mask keeps an element with probability
    1 - p and scales it by 1 / (1 - p). In evaluation the masks are the identity. The masks
    come from the cell's own ``pymodules.random.Stream`` (``setSeed`` then a run repeats
    them).

    In float32 without dropout, beside OpenBLAS's AVX2 kernels or on a core with AVX-512
    (``XH_PANELS``), each step is one product over the rows [x(t), h(t-1)] (batch, I + H)
    with [W_ih W_hh] packed once per call (engine's lstm_xh_forward; the backward one
    product per step giving dx(t) and dh(t-1), lstm_xh_backward; the weight gradients in
    one pass over all steps, or two BLAS GEMMs for the largest on an AVX2 core,
    lstm_xh_acc), buffers time-major (time, batch, features). Otherwise its buffers are
    feature-major, (features, time, batch): each step's hidden GEMM is then W_hh @ h(t-1),
    faster than the batch-major h(t-1) @ W_hh.T for small batches, and the weight gradients
    read the gate gradients and states in place. For batches of 16 and 32 (and
    ``OWN_PRODUCTS``) the per-step products run on engine's own kernel
    (``lstm_step_kernel``) over the one-step buffers ``_hStep`` (H, B) and ``_dgStep``
    (4H, B).
    """

    _dropout = True
    _blocks = 4
    _layout = (("weight", "w", lambda i, h: (4 * h, i)), ("bias", "b", lambda i, h: (4 * h,)),
               ("hiddenWeight", "u", lambda i, h: (4 * h, h))) + \
        tuple(x for k in "OFGI" for x in (("weight" + k, "w", lambda i, h: (h, i)),
                                          ("bias" + k, "b", lambda i, h: (h,)))) + \
        tuple(x for k in "OFGI" for x in (("hiddenWeight" + k, "u", lambda i, h: (h, h)),
                                          ("hiddenBias" + k, "c", lambda i, h: (h,))))
    _scratch = _Cell._scratch + ("_gatesT", "_cell", "_tanhCell", "_states", "_gradStates",
                                 "_hiddenWeightT", "_packed", "_inputMask", "_hiddenMask",
                                 "_inputMaskOut", "_hiddenMaskOut", "_maskedInput",
                                 "_dropped", "_dhParts", "_gradParts", "_hStep", "_dgStep",
                                 "_xh", "_packedBias", "_packedBack", "_dxh")

    def __init__(self, inputSize, hiddenSize, p=0.0, activation=None, innerActivation=None,
                 wRegularizer=None, uRegularizer=None, bRegularizer=None, dtype=np.float32):
        _refuse_activation("LSTM", "activation", activation, Tanh)
        _refuse_activation("LSTM", "innerActivation", innerActivation, Sigmoid)
        self.activation, self.innerActivation = activation, innerActivation
        self._gatesT = self._cell = self._tanhCell = self._states = self._gradStates = None
        self._hiddenWeightT = self._packed = self._inputMask = self._hiddenMask = None
        self._inputMaskOut = self._hiddenMaskOut = self._maskedInput = self._dropped = None
        self._dhParts = self._gradParts = self._hStep = self._dgStep = None
        self._xh = self._packedBias = self._packedBack = self._dxh = None
        self._masked = False  # whether the last forward drew masks
        self._xhRan = False  # whether the last forward ran lstm_xh_forward
        super().__init__(inputSize, hiddenSize, p, wRegularizer, uRegularizer, bRegularizer,
                         dtype)

    def _present(self, attr):
        return (attr in ("weight", "bias", "hiddenWeight")) == (self.p == 0)

    def _gate(self, k):
        """(W_k, b_k, U_k, c_k) of gate k (p > 0)."""
        # a tuple display: tuple() of a generator would grow the tuple free list at
        # every call (it builds a longer tuple and shrinks it)
        return (self._of("weight", k), self._of("bias", k), self._of("hiddenWeight", k),
                self._of("hiddenBias", k))

    def updateOutput(self, input):
        shape = shape_of(input)
        b, t = (shape[0], shape[1]) if len(shape) == 3 else (0, 0)
        h, dt = self.hiddenSize, self.dtype
        self._xhRan = XH_PANELS and self.p == 0 and dt == np.float32
        if self._xhRan:
            return self._xhForward(input, b, t)
        x = self._input = resized(self._input, (self.inputSize, t, b), -1, dt)
        swap_outer(input, x, self.inputSize)
        proj = self._gates = resized(self._gates, (4 * h, t, b), -1, dt)
        self._gatesT = resized(self._gatesT, (t, 4 * h, b), -1, dt)
        self._cell = resized(self._cell, (t, h, b), -1, dt)
        self._tanhCell = resized(self._tanhCell, (t, h, b), -1, dt)
        hs = self._states = resized(self._states, (h, t, b), -1, dt)
        if self.p == 0:
            lstm_project(x, proj, self.weight, self.bias)
            lstm_steps(proj, self._gatesT, self._cell, self._tanhCell, hs, self.hiddenWeight,
                       h_step=self._stepBuffer("_hStep", h, b))
        else:
            self._gateForward(x, proj, hs, b, t)
        out = self.output = resized(self.output, (b, t, h), -1, dt)
        swap_outer(hs, out)
        self._bpttOf = None
        return out

    def _xhForward(self, input, b, t):
        """float32, p = 0: one product per step over [x(t), h(t-1)] on the packed weights
        (lstm_xh_forward), time-major buffers (T, B, ...)."""
        h, i, dt = self.hiddenSize, self.inputSize, self.dtype
        pf, _, w = lstm_xh_panels(i, h)
        self._packed = resized(self._packed, (pf, i + h, w), -1, dt)
        self._packedBias = resized(self._packedBias, (w * pf,), -1, dt)
        self._xh = resized(self._xh, (t, b, i + h), -1, dt)
        self._gatesT = resized(self._gatesT, (t, b, w * pf), -1, dt)
        self._cell = resized(self._cell, (t, b, h), -1, dt)
        self._tanhCell = resized(self._tanhCell, (t, b, h), -1, dt)
        out = self.output = resized(self.output, (b, t, h), -1, dt)
        lstm_xh_forward(input, self.weight, self.hiddenWeight, self.bias, self._packed,
                        self._packedBias, self._xh, self._gatesT, self._cell, self._tanhCell,
                        out)
        self._bpttOf = None
        return out

    def _xhBackward(self, input, gradOutput):
        t, b, h = shape_of(self._cell)
        i, dt = self.inputSize, self.dtype
        if shape_of(gradOutput) not in ((b, t, h), ()):
            raise ValueError(f"gradOutput has shape {shape_of(gradOutput)}, expected "
                             f"{(b, t, h)}")
        pf, pb, w = lstm_xh_panels(i, h)
        self._packedBack = resized(self._packedBack, (pb, 4 * h, w), -1, dt)
        self._dgates = resized(self._dgates, (t, b, w * pf), -1, dt)
        self._dxh = resized(self._dxh, (b, w * pb), -1, dt)
        self._dc = resized(self._dc, (b, h), -1, dt)
        gi = self.gradInput = resized(self.gradInput, (b, t, i), -1, dt)
        lstm_xh_backward(gradOutput, self.weight, self.hiddenWeight, self._packedBack,
                         self._gatesT, self._cell, self._tanhCell, self._dgates, self._dxh,
                         self._dc, gi)
        self._bpttOf = (input, gradOutput)

    def _stepBuffer(self, name, rows, b):
        """The contiguous (rows, batch) buffer of one step that lets the per-step products
        run on engine's own kernel where that is faster than BLAS (lstm_step_kernel), else
        None."""
        if not (OWN_PRODUCTS and lstm_step_kernel(b, self.hiddenSize)):
            return None
        buf = resized(getattr(self, name), (rows, b), -1, self.dtype)
        setattr(self, name, buf)
        return buf

    def _gateForward(self, x, proj, hs, b, t):
        """p > 0: each gate's projection of its (dropped) input, then the steps on the packed
        hidden weights, with the hidden masks in training."""
        h, i, dt = self.hiddenSize, self.inputSize, self.dtype
        self._masked = masked = self._train
        xs = x
        if masked:
            mx = self._inputMask = resized(self._inputMask, (4, i, b), -1, dt)
            mh = self._hiddenMask = resized(self._hiddenMask, (4 * h, b), -1, dt)
            self._inputMaskOut = resized(self._inputMaskOut, mx)
            self._draw(mx, self._inputMaskOut)
            self._hiddenMaskOut = resized(self._hiddenMaskOut, mh)
            self._draw(mh, self._hiddenMaskOut)
            xs = self._maskedInput = resized(self._maskedInput, (4, i, t, b), -1, dt)
            mask_over_time(x, mx, xs)
        for q, k in enumerate(_LSTM_GATES):
            w, bias, _, c = self._gate(k)
            lstm_project(xs[q] if masked else x, proj[q * h:(q + 1) * h], w, bias, c)
        packed = self._packed = resized(self._packed, (4 * h, h), -1, dt)
        stack_rows(packed, tuple([self._of("hiddenWeight", k) for k in _LSTM_GATES]))
        if masked:
            dropped = self._dropped = resized(self._dropped, (4 * h, t, b), -1, dt)
            lstm_steps(proj, self._gatesT, self._cell, self._tanhCell, hs, packed,
                       self._hiddenMask, dropped)
        else:
            lstm_steps(proj, self._gatesT, self._cell, self._tanhCell, hs, packed)

    def _backThroughTime(self, input, gradOutput):
        if self._xhRan:
            return self._xhBackward(input, gradOutput)
        shape, dt = shape_of(self._states), self.dtype
        if len(shape) != 3:
            raise ValueError("backward needs a forward first")
        h, t, b = shape
        if shape_of(gradOutput) not in ((b, t, h), ()):
            raise ValueError(f"gradOutput has shape {shape_of(gradOutput)}, expected "
                             f"{(b, t, h)}")
        gs = self._gradStates = resized(self._gradStates, shape, -1, dt)
        swap_outer(gradOutput, gs, h)
        self._dgates = resized(self._dgates, (4 * h, t, b), -1, dt)
        self._dh = resized(self._dh, (h, b), -1, dt)
        self._dc = resized(self._dc, (h, b), -1, dt)
        ut = self._hiddenWeightT = resized(self._hiddenWeightT, (h, 4 * h), -1, dt)
        u = self.hiddenWeight if self.p == 0 else self._packed
        if self.p != 0 and self._masked:
            parts = self._dhParts = resized(self._dhParts, (4 * h, b), -1, dt)
            lstm_bptt(gs, self._gatesT, self._cell, self._tanhCell, u, ut, self._dgates,
                      self._dh, self._dc, self._hiddenMask, parts,
                      dg_step=self._stepBuffer("_dgStep", 4 * h, b))
        else:
            lstm_bptt(gs, self._gatesT, self._cell, self._tanhCell, u, ut, self._dgates,
                      self._dh, self._dc, dg_step=self._stepBuffer("_dgStep", 4 * h, b))
        self._bpttOf = (input, gradOutput)

    def updateGradInput(self, input, gradOutput):
        self._backThroughTime(input, gradOutput)
        if not self.propagateBack or self._xhRan:
            return self.gradInput
        _, t, b = shape_of(self._dgates)
        i, h, dt = self.inputSize, self.hiddenSize, self.dtype
        git = self._gradInput = resized(self._gradInput, (i, t, b), -1, dt)
        if self.p == 0:
            lstm_grad_input(self._dgates, git, self.weight)
        else:  # each gate's part, through its input mask
            parts = self._gradParts = resized(self._gradParts, (4, i, t, b), -1, dt)
            for q, k in enumerate(_LSTM_GATES):
                lstm_grad_input(self._dgates[q * h:(q + 1) * h], parts[q], self._gate(k)[0])
            masked_sum_over_time(parts, self._inputMask if self._masked else None, git)
        gi = self.gradInput = resized(self.gradInput, (b, t, i), -1, dt)
        swap_outer(git, gi)
        return gi

    def _accumulate(self):
        if self._xhRan:
            lstm_xh_acc(self._xh, self._dgates, self.gradWeight, self.gradBias,
                        self.gradHiddenWeight, self.scaleW, self.scaleB)
            return
        if self.p == 0:
            lstm_acc_grad_parameters(self._input, self._states, self._dgates, self.gradWeight,
                                     self.gradBias, self.gradHiddenWeight, self.scaleW,
                                     self.scaleB)
            return
        h = self.hiddenSize
        for q, k in enumerate(_LSTM_GATES):
            rows = slice(q * h, (q + 1) * h)
            x = self._maskedInput[q] if self._masked else self._input
            hs = self._dropped[rows] if self._masked else self._states
            lstm_acc_grad_parameters(x, hs, self._dgates[rows], self._of("gradWeight", k),
                                     self._of("gradBias", k),
                                     self._of("gradHiddenWeight", k), self.scaleW,
                                     self.scaleB, self._of("gradHiddenBias", k))


class GRU(_Cell):
    """Gated recurrent unit as BigDL's: gates r, z, n; ``r, z = sigmoid(W x + b + U_rz h)``,
    ``n = tanh(W_n x + b_n + U_n (r h))`` (the reset gate before the matrix, unlike
    PyTorch's), ``h = (1 - z) n + z h``. Parameters ``[W_ih (3H, I), b_ih (3H),
    U_rz (2H, H), U_n (H, H)]``.

    Dropout ``p > 0`` as BigDL builds it: r, z and n have Linears of their own on the input
    (with biases) and on the state (without), ``r = sigmoid(W_r (x * mx_r) + b_r + U_r (h *
    mh_r))``, z likewise, ``n = tanh(W_n (x * mx_n) + b_n + U_n (r h * mh_n))``, so the
    parameters are BigDL's ``[W_z, b_z, W_r, b_r, U_z, U_r, U_n, W_n, b_n]`` (W_k (H, I),
    b_k (H), U_k (H, H)), the order of its graph. In training each of the six Dropouts
    draws one mask per forward, over (batch, features), that holds at every step (BigDL's
    Recurrent shares the first step's noise with the other steps); a mask keeps an element
    with probability 1 - p and scales it by 1 / (1 - p). In evaluation the masks are the
    identity. The masks come from the cell's own ``pymodules.random.Stream``.
    """

    _gateNames = "RZN"  # the gate blocks of the kernels' (T, B, 3H) gates

    _dropout = True
    _blocks = 3
    _layout = (("weight", "w", lambda i, h: (3 * h, i)), ("bias", "b", lambda i, h: (3 * h,)),
               ("hiddenWeightRZ", "u", lambda i, h: (2 * h, h)),
               ("weightZ", "w", lambda i, h: (h, i)), ("biasZ", "b", lambda i, h: (h,)),
               ("weightR", "w", lambda i, h: (h, i)), ("biasR", "b", lambda i, h: (h,)),
               ("hiddenWeightZ", "u", lambda i, h: (h, h)),
               ("hiddenWeightR", "u", lambda i, h: (h, h)),
               ("hiddenWeightN", "u", lambda i, h: (h, h)),
               ("weightN", "w", lambda i, h: (h, i)), ("biasN", "b", lambda i, h: (h,)))
    _scratch = _Cell._scratch + ("_rh", "_packed", "_inputMask", "_hiddenMask",
                                 "_inputMaskOut", "_hiddenMaskOut", "_maskedInput",
                                 "_dropped", "_dhParts", "_gradParts")
    _plain = ("weight", "bias", "hiddenWeightRZ", "hiddenWeightN")

    def __init__(self, inputSize, outputSize, p=0.0, activation=None, innerActivation=None,
                 wRegularizer=None, uRegularizer=None, bRegularizer=None, dtype=np.float32):
        _refuse_activation("GRU", "activation", activation, Tanh)
        _refuse_activation("GRU", "innerActivation", innerActivation, Sigmoid)
        self.activation, self.innerActivation = activation, innerActivation
        self.outputSize = whole("GRU", "outputSize", outputSize)
        self._rh = self._packed = self._inputMask = self._hiddenMask = None
        self._inputMaskOut = self._hiddenMaskOut = self._maskedInput = self._dropped = None
        self._dhParts = self._gradParts = None
        self._masked = False
        super().__init__(inputSize, outputSize, p, wRegularizer, uRegularizer, bRegularizer,
                         dtype)

    def _present(self, attr):
        return attr == "hiddenWeightN" or (attr in self._plain) == (self.p == 0)

    def _project(self, xt):
        super()._project(xt)
        if self.p != 0:
            packed = self._packed = resized(self._packed, (2 * self.hiddenSize,
                                                           self.hiddenSize), -1, self.dtype)
            stack_rows(packed, (self.hiddenWeightR, self.hiddenWeightZ))

    def _steps(self, out):
        self._rh = resized(self._rh, self._hprev, -1, self.dtype)
        if self.p == 0:
            gru_steps(out, self._gates, self._rh, self._hprev, self.hiddenWeightRZ,
                      self.hiddenWeightN)
        elif self._masked:
            t, b, h = shape_of(self._hprev)
            dropped = self._dropped = resized(self._dropped, (t, b, 2 * h), -1, self.dtype)
            gru_steps(out, self._gates, self._rh, self._hprev, self._packed,
                      self.hiddenWeightN, self._hiddenMask, dropped)
        else:
            gru_steps(out, self._gates, self._rh, self._hprev, self._packed,
                      self.hiddenWeightN)

    def _bptt(self, gradOutput):
        urz = self.hiddenWeightRZ if self.p == 0 else self._packed
        if self.p != 0 and self._masked:
            b, h = shape_of(self._dh)
            parts = self._dhParts = resized(self._dhParts, (b, 2 * h), -1, self.dtype)
            gru_bptt(gradOutput, self._gates, self._hprev, urz, self.hiddenWeightN,
                     self._dgates, self._dh, self._dc, self._hiddenMask, parts)
        else:
            gru_bptt(gradOutput, self._gates, self._hprev, urz, self.hiddenWeightN,
                     self._dgates, self._dh, self._dc)

    def _acc_hidden(self):
        h = self.hiddenSize
        if self.p == 0:
            recurrent_acc_hidden(self._hprev, self._dgates, 0, self.gradHiddenWeightRZ,
                                 self.scaleW)
        elif self._masked:
            recurrent_acc_hidden(self._dropped, self._dgates, 0, self.gradHiddenWeightR,
                                 self.scaleW, 0)
            recurrent_acc_hidden(self._dropped, self._dgates, h, self.gradHiddenWeightZ,
                                 self.scaleW, h)
        else:
            recurrent_acc_hidden(self._hprev, self._dgates, 0, self.gradHiddenWeightR,
                                 self.scaleW)
            recurrent_acc_hidden(self._hprev, self._dgates, h, self.gradHiddenWeightZ,
                                 self.scaleW)
        recurrent_acc_hidden(self._rh, self._dgates, 2 * h, self.gradHiddenWeightN, self.scaleW)


_ACTIVATIONS = ((Tanh, ACT_TANH), (Sigmoid, ACT_SIGMOID), (ReLU, ACT_RELU))


class RnnCell(_Cell):
    """``h = activation(W_ih x + b_ih + W_hh h + b_hh)``; parameters ``[W_ih (H, I),
    b_ih (H), W_hh (H, H), b_hh (H)]``, a bias absent when its flag is False. The activation
    is a module: Tanh (the default), Sigmoid or ReLU."""

    _layout = (("weight", "w", lambda i, h: (h, i)), ("bias", "b", lambda i, h: (h,)),
               ("hiddenWeight", "u", lambda i, h: (h, h)), ("hiddenBias", "b", lambda i, h: (h,)))

    def __init__(self, inputSize, hiddenSize, activation=None, isInputWithBias=True,
                 isHiddenWithBias=True, wRegularizer=None, uRegularizer=None, bRegularizer=None,
                 dtype=np.float32):
        activation = Tanh() if activation is None else activation
        if isinstance(activation, str):  # BigDL's names of activations
            named = {"tanh": Tanh, "sigmoid": Sigmoid, "relu": ReLU}.get(activation.lower())
            if named is None:
                raise ValueError(f"RnnCell: activation {activation!r} is not one of 'tanh', "
                                 "'sigmoid', 'relu'")
            activation = named()
        _refuse_activation("RnnCell", "activation", activation, (Tanh, Sigmoid, ReLU))
        self.activation = activation
        self._act = next(code for cls, code in _ACTIVATIONS if isinstance(activation, cls))
        self.isInputWithBias, self.isHiddenWithBias = bool(isInputWithBias), \
            bool(isHiddenWithBias)
        super().__init__(inputSize, hiddenSize, 0.0, wRegularizer, uRegularizer, bRegularizer,
                         dtype)

    def _present(self, attr):
        return {"bias": self.isInputWithBias, "hiddenBias": self.isHiddenWithBias}.get(attr, True)

    def reset(self):
        init = RandomUniform()
        for attr, fan in (("weight", self.inputSize), ("bias", self.inputSize),
                          ("hiddenWeight", self.hiddenSize), ("hiddenBias", self.hiddenSize)):
            if getattr(self, attr, None) is not None:
                init(getattr(self, attr), fan, self.hiddenSize)
        self.zeroGradParameters()
        return self

    def _project(self, xt):
        recurrent_project(xt, self._gates, self.weight, self.bias, self.hiddenBias)

    def _steps(self, out):
        rnn_steps(out, self._gates, self._hprev, self.hiddenWeight, self._act)

    def _bptt(self, gradOutput):
        rnn_bptt(gradOutput, self._gates, self.hiddenWeight, self._dgates, self._dh, self._act)

    def _acc_hidden(self):
        recurrent_acc_hidden(self._hprev, self._dgates, 0, self.gradHiddenWeight, self.scaleW)

    def extraRepr(self):
        return f"{self.inputSize} -> {self.hiddenSize}, {type(self.activation).__name__}"


class LSTMPeephole(_Cell):
    """LSTM with peepholes, as BigDL's: gate blocks i, f, g, o of W_ih;
    ``i = sigmoid(x_i + U_i h + p_i c)``, ``f = sigmoid(x_f + U_f h + p_f c)``,
    ``g = tanh(x_g + U_g h)``, ``c' = f c + i g``, ``o = sigmoid(x_o + U_o h + p_o c')``,
    ``h = o tanh(c')``. Parameters ``[W_ih (4H, I), b_ih (4H), p_f (H), U_f, p_i (H), U_i,
    U_g, p_o (H), U_o]``, each U (H, H).

    Dropout ``p > 0`` as BigDL builds it: each gate k has a Linear of its own on the input
    (with a bias) and one on h(t-1) (without), ``x_k = W_k (x * mx_k) + b_k`` and
    ``U_k (h(t-1) * mh_k)``, so the parameters are BigDL's ``[p_f, U_f, W_f, b_f, p_i, U_i,
    W_i, b_i, U_g, W_g, b_g, p_o, U_o, W_o, b_o]`` (W_k (H, I), b_k and p_k (H), U_k (H,
    H)), the order of its graph. In training each of the eight Dropouts draws one mask per
    forward, over (batch, features), that holds at every step (BigDL's Recurrent shares the
    first step's noise with the other steps); a mask keeps an element with probability
    1 - p and scales it by 1 / (1 - p). The peepholes read the cell undropped. In
    evaluation the masks are the identity. The masks come from the cell's own
    ``pymodules.random.Stream`` (``setSeed`` then a run repeats them).
    """

    _dropout = True

    _blocks = 4
    _layout = (("weight", "w", lambda i, h: (4 * h, i)), ("bias", "b", lambda i, h: (4 * h,)),
               ("peepholeF", "p", lambda i, h: (h,)), ("hiddenWeightF", "u", lambda i, h: (h, h)),
               ("weightF", "w", lambda i, h: (h, i)), ("biasF", "b", lambda i, h: (h,)),
               ("peepholeI", "p", lambda i, h: (h,)), ("hiddenWeightI", "u", lambda i, h: (h, h)),
               ("weightI", "w", lambda i, h: (h, i)), ("biasI", "b", lambda i, h: (h,)),
               ("hiddenWeightG", "u", lambda i, h: (h, h)),
               ("weightG", "w", lambda i, h: (h, i)), ("biasG", "b", lambda i, h: (h,)),
               ("peepholeO", "p", lambda i, h: (h,)), ("hiddenWeightO", "u", lambda i, h: (h, h)),
               ("weightO", "w", lambda i, h: (h, i)), ("biasO", "b", lambda i, h: (h,)))
    _scratch = _Cell._scratch + ("_cell", "_tanhCell", "_packed", "_inputMask", "_hiddenMask",
                                 "_inputMaskOut", "_hiddenMaskOut", "_maskedInput",
                                 "_hiddenNoise", "_dropped", "_dhParts", "_gradParts")
    _gateNames = "IFGO"  # the gate blocks of the kernels' (T, B, 4H) gates

    def __init__(self, inputSize=4, hiddenSize=3, p=0.0, wRegularizer=None, uRegularizer=None,
                 bRegularizer=None, dtype=np.float32):
        self._cell = self._tanhCell = self._packed = self._inputMask = None
        self._hiddenMask = self._inputMaskOut = self._hiddenMaskOut = None
        self._maskedInput = self._hiddenNoise = self._dropped = self._dhParts = None
        self._gradParts = None
        self._masked = False  # whether the last forward drew masks
        super().__init__(inputSize, hiddenSize, p, wRegularizer, uRegularizer, bRegularizer,
                         dtype)

    def _present(self, attr):
        if attr in ("weight", "bias"):
            return self.p == 0
        if attr[:-1] in ("weight", "bias"):
            return self.p != 0
        return True

    def _steps(self, out):
        h = self.hiddenSize
        self._cell = resized(self._cell, self._hprev, -1, self.dtype)
        self._tanhCell = resized(self._tanhCell, self._hprev, -1, self.dtype)
        self._packed = resized(self._packed, (4 * h, h), -1, self.dtype)
        noise = dropped = None
        if self.p != 0 and self._masked:
            # the kernel reads a mask per step: the forward's masks, the same at every step
            noise = self._hiddenNoise = resized(self._hiddenNoise, self._gates, -1, self.dtype)
            np.copyto(noise, self._hiddenMask)
            dropped = self._dropped = resized(self._dropped, self._gates, -1, self.dtype)
        peephole_steps(out, self._gates, self._cell, self._tanhCell, self._hprev, self._packed,
                       self.hiddenWeightI, self.hiddenWeightF, self.hiddenWeightG,
                       self.hiddenWeightO, self.peepholeI, self.peepholeF, self.peepholeO,
                       noise, dropped)

    def _bptt(self, gradOutput):
        noise = parts = None
        if self.p != 0 and self._masked:
            noise = self._hiddenNoise
            parts = self._dhParts = resized(self._dhParts, shape_of(noise)[1:], -1,
                                            self.dtype)
        peephole_bptt(gradOutput, self._gates, self._cell, self._tanhCell, self._packed,
                      self.peepholeI, self.peepholeF, self.peepholeO, self._dgates, self._dh,
                      self._dc, noise, parts)

    def _acc_hidden(self):
        h = self.hiddenSize
        for k, attr in enumerate(("gradHiddenWeightI", "gradHiddenWeightF",
                                  "gradHiddenWeightG", "gradHiddenWeightO")):
            if self.p != 0 and self._masked:
                recurrent_acc_hidden(self._dropped, self._dgates, k * h, getattr(self, attr),
                                     self.scaleW, k * h)
            else:
                recurrent_acc_hidden(self._hprev, self._dgates, k * h, getattr(self, attr),
                                     self.scaleW)
        peephole_acc(self._cell, self._dgates, self.gradPeepholeI, self.gradPeepholeF,
                     self.gradPeepholeO, self.scaleW)


class Recurrent(Container):
    """Runs its cell (``add`` one LSTM, GRU, RnnCell or LSTMPeephole) over a sequence:
    input (batch, time, features), output (batch, time, hidden), zero initial states. Its
    parameters are its cell's."""

    def add(self, module):
        if not isinstance(module, _Cell):
            raise TypeError(f"{self.getName()}: add takes a cell (LSTM, GRU, RnnCell, "
                            f"LSTMPeephole), got {type(module).__name__}")
        if self.modules:
            raise ValueError(f"{self.getName()}: holds a cell already ({self.modules[0]})")
        return super().add(module)

    def _cell(self):
        if not self.modules:
            raise ValueError(f"{self.getName()}: no cell; add one first")
        return self.modules[0]

    def updateOutput(self, input):
        self.output = self._cell().forward(input)
        return self.output

    def _walk_back(self, input, gradOutput, step):
        return step(self._cell(), input, gradOutput)


class BiRecurrent(Container):
    """Runs its cell over the sequence forward and, as an independent copy, over the reversed
    sequence (its output reversed back), then merges the two: ``merge`` None sums them
    (CAddTable, (batch, time, H)); ``JoinTable(2)`` concatenates them, forward first
    ((batch, time, 2H)). Parameters: the forward direction's, then the backward's; both
    start equal, as in BigDL.

    ``add(cell)`` sets the forward cell and a copy of it for the reverse direction; a second
    ``add`` (of the same class and sizes) gives the reverse direction that cell instead,
    which is how a saved model comes back.
    """

    _scratch = ("_reversedInput", "_reversedOutput", "_reversedGrad", "_gradSum", "_pair")

    def __init__(self, merge=None):
        super().__init__()
        if merge is not None and not isinstance(merge, Module):
            raise TypeError(f"BiRecurrent: merge must be a module (CAddTable, JoinTable), "
                            f"got {type(merge).__name__}")
        self.merge = merge
        self._merge = CAddTable() if merge is None else merge
        self._reverseGiven = False
        self._reversedInput = self._reversedOutput = self._reversedGrad = None
        self._gradSum = self._pair = None

    def add(self, module):
        if not isinstance(module, _Cell):
            raise TypeError(f"{self.getName()}: add takes a cell (LSTM, GRU, RnnCell, "
                            f"LSTMPeephole), got {type(module).__name__}")
        if not self.modules:
            super().add(module)
            reverse = module.cloneModule()
            reverse._name, reverse._named = f"{module.getName()}_reverse", module.hasName()
            return super().add(reverse)
        first = self.modules[0]
        if self._reverseGiven or type(module) is not type(first) or \
                [w.shape for w in module.parameters()[0]] != \
                [w.shape for w in first.parameters()[0]]:
            raise ValueError(f"{self.getName()}: holds {first} and its reverse already; a "
                             f"second add takes a cell of the same class and sizes for the "
                             f"reverse direction, once, got {module}")
        self.modules.pop()
        self._flat = None
        self._reverseGiven = True
        return super().add(module)

    def _cells(self):
        if not self.modules:
            raise ValueError(f"{self.getName()}: no cell; add one first")
        return self.modules

    def updateOutput(self, input):
        fwd, rev = self._cells()
        yf = fwd.forward(input)
        xr = self._reversedInput = resized(self._reversedInput, input)
        reverse_time(input, xr)
        yr = rev.forward(xr)
        yrr = self._reversedOutput = resized(self._reversedOutput, yr)
        reverse_time(yr, yrr)
        pair = self._pair = resized_list(self._pair, 2)
        pair[0], pair[1] = yf, yrr
        self.output = self._merge.forward(pair)
        return self.output

    def _walk_back(self, input, gradOutput, step):
        fwd, rev = self._cells()
        gf, grr = step(self._merge, self._pair, gradOutput)
        gr = self._reversedGrad = resized(self._reversedGrad, grr)
        reverse_time(grr, gr)
        gif = step(fwd, input, gf)
        gir = step(rev, self._reversedInput, gr)
        if not (fwd.propagateBack and rev.propagateBack):
            return self.gradInput
        gi = self._gradSum = resized(self._gradSum, gif)
        add_reversed(gif, gir, gi)
        return gi

    def _convert(self, dtype):
        super()._convert(dtype)
        self._merge._convert(dtype)
        return self

    def clearState(self):
        super().clearState()
        self._merge.clearState()  # not a child: it holds no parameters
        return self
