"""The Module contract: state, the forward/backward protocol and the books around it.

A module is state (``output``, ``gradInput``, its parameters) plus three steps:
``updateOutput``, ``updateGradInput`` and ``accGradParameters``. Layers declare their
parameters once, in ``_params`` (pairs of attribute names: value, gradient) and ``_extra``
(non-trainable state such as running statistics); everything else here works from those.
"""

from __future__ import annotations

import copy
import itertools
import os
import sys
from time import perf_counter_ns as _now

import numpy as np

from pymodules.facade import REFUSALS, Facade, fixed_arguments, has_gate, in_use
from pymodules.recorded import Recorded

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
_ndarray = np.ndarray  # a global read costs less than numpy's attribute (predict's test)

# Names are ClassName@postfix: a per-process counter offset by a random salt, so that the
# postfix stays short, never repeats within a process and rarely meets a name loaded from
# a file written by another process.
_salt = int.from_bytes(os.urandom(4), "little")
_counter = itertools.count()


def _postfix() -> str:
    return f"{(_salt + next(_counter)) & 0xFFFFFFFF:x}"


def float_dtype(dtype) -> np.dtype:
    """``dtype`` as np.float32 or np.float64; TypeError for anything else."""
    d = np.dtype(dtype)
    if d not in _FLOATS:
        raise TypeError(f"dtype must be float32 or float64, got {d}")
    return d


_INDEX_MAX = 2**63 - 1


def attribute(prefix: str, suffix) -> str:
    """The attribute name ``prefix + str(suffix)`` as one shared string object. A name built
    afresh at every call (``getattr(self, "weight" + k)``) is kept alive by CPython's type
    attribute cache until the entry is evicted, so a step that builds names grows memory;
    interned, every call reuses the same object."""
    return sys.intern(f"{prefix}{suffix}")


def whole(owner, what: str, value) -> int:
    """``value`` as an int: a Python or NumPy integer, or a float holding a whole number.

    Sizes, counts, kernels, strides, dims and indices go through here, so that
    ``Linear(4.5, 3)`` raises instead of truncating to ``Linear(4 -> 3)``. ``owner`` (the
    object being built, or its class name) names the error; bools are refused too.
    """
    n = None
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        n = int(value)
    elif isinstance(value, (float, np.floating)) and float(value).is_integer():
        n = int(value)
    name = owner if isinstance(owner, str) else type(owner).__name__
    if n is None:
        raise TypeError(f"{name}: {what} must be an integer, got {value!r}")
    if not -_INDEX_MAX <= n <= _INDEX_MAX:
        # A kernel takes it as a 64-bit size: refused here rather than as an OverflowError.
        raise ValueError(f"{name}: {what} = {n} is beyond the 64-bit range of sizes and "
                         f"indices (at most 2^63 - 1 in magnitude)")
    return n


class _Gradient:
    """The gradient attribute of a parameter until it is first read: then zeros shaped like
    the parameter, kept on the module (whose own attribute hides this from then on)."""

    def __init__(self, value: str, grad: str):
        self.value, self.grad = value, grad

    def __get__(self, module, owner=None):
        if module is None:
            return self
        w = getattr(module, self.value, None)
        if w is None:
            raise AttributeError(f"{type(module).__name__!r} object has no attribute "
                                 f"{self.grad!r}")
        g = np.zeros_like(w)
        setattr(module, self.grad, g)  # an instance attribute, which hides this one
        return g


class _Mode(int):
    """The value of ``module.train``: reads as the mode (True or False, ``== True``), and
    called like PyTorch's ``module.train()``, says what pymodules calls it."""

    def __new__(cls, mode: bool, owner: str):
        m = super().__new__(cls, bool(mode))
        m._owner = owner
        return m

    def __call__(self, *args, **kwargs):
        raise TypeError(f"{self._owner}: train is the mode ({bool(self)}), not a method; "
                        f"pymodules, as BigDL, switches to training mode with training() "
                        f"and to evaluation mode with evaluate()")

    def __repr__(self):
        return repr(bool(self))

    __str__ = __repr__


class Module(Facade, Recorded):
    """Base of every layer and container (BigDL's AbstractModule).

    A layer defines ``updateOutput``, ``updateGradInput`` and (with parameters)
    ``accGradParameters`` as its kernel calls and their buffers; ``pymodules.facade`` turns a
    kernel's refusal into an error naming the module.
    """

    _GATED = ("updateOutput", "updateGradInput", "accGradParameters", "forward", "backward")
    #: whether an input or gradOutput may be a table (a list of arrays).
    _tables = False

    #: (value, gradient) attribute pairs of the trainable parameters, in order.
    _params: tuple[tuple[str, str], ...] = ()
    #: attribute names of non-trainable state (running statistics).
    _extra: tuple[str, ...] = ()
    #: attribute names of scratch buffers that clearState drops.
    _scratch: tuple[str, ...] = ()
    #: attribute names of further state that persistence saves and restores after
    #: rebuilding from the constructor arguments (numbers, strings, arrays, sets, lists).
    _persist: tuple[str, ...] = ()

    @classmethod
    def _lazy_gradients(cls):
        """Put a ``_Gradient`` on the class for each gradient of ``_params``: a gradient is
        made on first use, as zeros shaped like its parameter, so that a module that only
        predicts (a loaded model, say) never holds gradient memory. Run by the first
        constructor call of each class, when ``_params`` is final (a class hook may set it)."""
        for value, grad in cls._params:
            if not any(grad in k.__dict__ for k in cls.__mro__):
                setattr(cls, grad, _Gradient(value, grad))
        cls._lazyFor = cls._params

    def __init__(self, dtype=np.float32):
        cls = type(self)
        if cls.__dict__.get("_lazyFor") is not cls._params:
            cls._lazy_gradients()
        self.dtype = float_dtype(dtype)
        self.output = np.empty(0, self.dtype)
        self.gradInput = np.empty(0, self.dtype)
        self.train = True
        # False: backward skips gradInput (nothing upstream needs it, as for the layer that
        # reads the data); accGradParameters still runs. BigDL's propagateBack.
        self.propagateBack = True
        self.scaleW = 1.0
        self.scaleB = 1.0
        self._frozen = None  # the (scaleW, scaleB) to restore on unFreeze
        self._name = f"{type(self).__name__}@{_postfix()}"
        self._named = False  # hasName(): whether setName gave the name
        self.forwardTime = 0
        self.backwardTime = 0
        self._flat = None
        # True while forward or backward runs: a second call meanwhile (another thread
        # using the same module) is refused, as it would overwrite the buffers the first
        # one reads. (An instance attribute only: one shadowing a class attribute is not
        # specialised by the interpreter.)
        self._busy = False
        # Whether forward is Module's own: a container may then run its steps inline (see
        # Sequential.updateOutput); an instance attribute, as it is read for every child.
        self._inlineForward = type(self).forward is Module.forward

    # -- the protocol ------------------------------------------------------------------
    @has_gate
    def forward(self, input):
        """Run updateOutput, add its time to the forward time, return ``output``."""
        if self._busy:
            raise in_use(self, "forward")
        self._busy = True
        start = _now()
        try:
            output = self._updateOutput(input)
        except REFUSALS as err:
            output = self._refused(err, self.updateOutput, (input,))
        finally:
            self._busy = False
        self.forwardTime += _now() - start
        return output

    @has_gate
    def backward(self, input, gradOutput):
        """updateGradInput then accGradParameters; return ``gradInput``."""
        if self._busy:
            raise in_use(self, "backward")
        self._busy = True
        start = _now()
        try:
            gradInput = self._updateGradInput(input, gradOutput)
            self._accGradParameters(input, gradOutput)
        except REFUSALS as err:
            gradInput = self._refused(err, self._backward_again, (input, gradOutput))
        finally:
            self._busy = False
        self.backwardTime += _now() - start
        return gradInput

    def updateOutput(self, input):
        raise NotImplementedError(f"{type(self).__name__} does not define updateOutput")

    def updateGradInput(self, input, gradOutput):
        raise NotImplementedError(f"{type(self).__name__} does not define updateGradInput")

    def accGradParameters(self, input, gradOutput):
        """Accumulate parameter gradients; modules without parameters do nothing."""

    # The raw methods forward and backward run inside their own gate (a subclass's own
    # definitions are put here by Facade.__init_subclass__).
    _updateOutput = updateOutput
    _updateGradInput = updateGradInput
    _accGradParameters = accGradParameters

    def _backward_again(self, input, gradOutput):
        """backward's steps once more (on fixed arguments), inside backward's own run."""
        gradInput = self.updateGradInput(input, gradOutput)
        self.accGradParameters(input, gradOutput)
        return gradInput

    def _fixed(self, args):
        return fixed_arguments(args, ("input", "gradOutput"), self._tables)

    def _name_of(self):
        return self.getName()

    # -- parameters --------------------------------------------------------------------
    def _slots(self):
        """(module, value attribute, gradient attribute) of every parameter, in order."""
        for value, grad in self._params:
            if getattr(self, value, None) is not None:
                yield self, value, grad

    def children(self) -> list[Module]:
        """Direct sub-modules; empty for a layer."""
        return []

    def modules_preorder(self):
        """This module, then every descendant, depth first."""
        yield self
        for child in self.children():
            yield from child.modules_preorder()

    def parameters(self):
        """(weights, gradWeights): aligned lists of the live arrays."""
        slots = list(self._slots())
        return ([getattr(m, v) for m, v, _ in slots], [getattr(m, g) for m, _, g in slots])

    def zeroGradParameters(self):
        """Zero every gradient in place; one not made yet stays unmade (it starts at zero)."""
        for m, _, g in self._slots():
            grad = vars(m).get(g)
            if grad is not None:
                grad.fill(0)

    def getParameters(self):
        """(flatWeights, flatGrads): every parameter in one vector, the layers as views.

        A second call, with the views still in place, returns the same memory uncopied.
        """
        slots = list(self._slots())
        if self._flat is not None and self._views_intact(slots):
            return self._flat
        dtypes = {getattr(m, v).dtype for m, v, _ in slots}
        if len(dtypes) > 1:
            raise TypeError(f"{self}: parameters mix dtypes {sorted(map(str, dtypes))}")
        dtype = dtypes.pop() if dtypes else self.dtype
        total = sum(getattr(m, v).size for m, v, _ in slots)
        flat_w, flat_g = np.empty(total, dtype), np.empty(total, dtype)
        offset = 0
        for m, v, g in slots:
            w = getattr(m, v)
            end = offset + w.size
            flat_w[offset:end] = w.ravel()
            flat_g[offset:end] = getattr(m, g).ravel()
            setattr(m, v, flat_w[offset:end].reshape(w.shape))
            setattr(m, g, flat_g[offset:end].reshape(w.shape))
            offset = end
        self._flat = (flat_w, flat_g)
        return self._flat

    def _views_intact(self, slots) -> bool:
        flat_w, flat_g = self._flat
        offset = 0
        for m, v, g in slots:
            w, gw = getattr(m, v), getattr(m, g)
            if not (_is_view_at(w, flat_w, offset) and _is_view_at(gw, flat_g, offset)):
                return False
            offset += w.size
        return offset == flat_w.size

    def getParametersTable(self) -> dict:
        """{name: {"weight", "bias", "gradWeight", "gradBias", ...}} with the live arrays."""
        table = {}
        slots = [(v, g) for _, v, g in self._slots()]
        if len(slots) <= 2:
            for v, g in slots:
                table[v] = getattr(self, v)
                table[g] = getattr(self, g)
        else:
            for i, (v, g) in enumerate(slots):
                table[f"weight{i}"] = getattr(self, v)
                table[f"gradient{i}"] = getattr(self, g)
        for e in self._extra:
            table[e] = getattr(self, e)
        return {self.getName(): table} if table else {}

    def getWeightsBias(self) -> list[np.ndarray]:
        """The live weight arrays, in parameters() order."""
        return self.parameters()[0]

    def setWeightsBias(self, arrays) -> Module:
        """Copy ``arrays`` into the weights; count and shapes must agree."""
        _copy_into(self, "setWeightsBias", self.parameters()[0], arrays)
        return self

    # -- scales and freezing ------------------------------------------------------------
    def setScaleW(self, scale) -> Module:
        self.scaleW = float(scale)
        return self

    def setScaleB(self, scale) -> Module:
        self.scaleB = float(scale)
        return self

    def getScaleW(self) -> float:
        return self.scaleW

    def getScaleB(self) -> float:
        return self.scaleB

    def freeze(self, *names) -> Module:
        """Stop the parameter updates of the named descendants (all when none are named).

        gradInput still flows through a frozen module.
        """
        for m in self._targets(names):
            for leaf in m.modules_preorder():
                if leaf._frozen is None:
                    leaf._frozen = (leaf.scaleW, leaf.scaleB)
                    leaf.scaleW = leaf.scaleB = 0.0
        return self

    def unFreeze(self, *names) -> Module:
        """Undo freeze for the named descendants (all when none are named)."""
        for m in self._targets(names):
            for leaf in m.modules_preorder():
                if leaf._frozen is not None:
                    leaf.scaleW, leaf.scaleB = leaf._frozen
                    leaf._frozen = None
        return self

    def _targets(self, names):
        if not names:
            return [self]
        found = []
        for name in names:
            m = self.apply(name)
            if m is None:
                raise ValueError(f"{self}: no module named {name!r}")
            found.append(m)
        return found

    # -- names -------------------------------------------------------------------------
    def setName(self, name: str) -> Module:
        if not isinstance(name, str) or not name:
            raise TypeError(f"{self}: a name must be a non-empty str, got {name!r}")
        self._name = name
        self._named = True
        return self

    def getName(self) -> str:
        """The name given by setName, else the default ``ClassName@postfix``."""
        return self._name

    def hasName(self) -> bool:
        """Whether setName named this module (BigDL's rule: the default name does not count)."""
        return self._named

    def apply(self, name: str) -> Module | None:
        """The module called ``name`` in this tree (self included), None if absent."""
        found = [m for m in self.modules_preorder() if m._name == name]
        if len(found) > 1:
            raise ValueError(f"{self.getName()}: {len(found)} modules are named {name!r}")
        return found[0] if found else None

    # -- mode --------------------------------------------------------------------------
    @property
    def train(self) -> bool:
        """The mode: True in training (dropout drops, batch statistics update)."""
        return _Mode(self._train, self.getName())

    @train.setter
    def train(self, mode) -> None:
        self._train = bool(mode)

    def eval(self, *args, **kwargs):
        """PyTorch's spelling, refused with the pymodules one."""
        raise TypeError(f"{self.getName()}: eval() is PyTorch's spelling; pymodules, as BigDL, "
                        f"switches to evaluation mode with evaluate() (and back with "
                        f"training())")

    def training(self) -> Module:
        for m in self.modules_preorder():
            m.train = True
        return self

    def evaluate(self, dataset=None, vMethods=None, batchSize=None):
        """Switch to eval mode; given a dataset, also run the validation methods over it."""
        for m in self.modules_preorder():
            m.train = False
        if dataset is None:
            return self
        from pymodules.validation import evaluate_dataset

        return evaluate_dataset(self, dataset, vMethods, batchSize)

    def predict(self, dataset, batchSize=None):
        """Eval mode; the outputs over the dataset, batch-first."""
        v = _validation or _load_validation()
        if type(dataset) is _ndarray and v._one_batch(dataset, batchSize):
            return v._predict_array(self, dataset)  # one batch: no dataset to build
        return v.predict_dataset(self, dataset, batchSize)

    def predictClass(self, dataset, batchSize=None):
        """Eval mode; the 0-based arg-max class of every sample."""
        from pymodules.validation import predict_class_dataset

        return predict_class_dataset(self, dataset, batchSize)

    def isTraining(self) -> bool:
        return self._train

    # -- state -------------------------------------------------------------------------
    def clearState(self) -> Module:
        """Drop cached output, gradInput and scratch buffers in the whole tree; parameters
        stay."""
        for m in self.modules_preorder():
            for attr, value in m._cleared().items():
                setattr(m, attr, value)
        return self

    def _cleared(self) -> dict:
        """{attribute: value once cleared} of every cache of this module (not of its
        children): what clearState drops and cloneModule does not copy."""
        caches = {"output": np.empty(0, self.dtype), "gradInput": np.empty(0, self.dtype)}
        caches.update((attr, None) for attr in self._scratch)
        return caches

    def getExtraParameter(self) -> list[np.ndarray]:
        """The non-trainable state (running statistics), as live arrays."""
        return [getattr(m, e) for m in self.modules_preorder() for e in m._extra]

    def setExtraParameter(self, arrays) -> Module:
        _copy_into(self, "setExtraParameter", self.getExtraParameter(), arrays)
        return self

    def copyStatus(self, src: Module) -> Module:
        """Copy ``src``'s running status (not weights) into this module of the same shape."""
        return self.setExtraParameter(src.getExtraParameter())

    def getEngineType(self) -> str:
        from pymodules import engine_type

        return engine_type()

    def getTimes(self):
        """[(module, forwardNs, backwardNs)]: descendants first, then self, exclusive time."""
        rows = []
        for child in self.children():
            rows.extend(child.getTimes())
        fwd = self.forwardTime - sum(c.forwardTime for c in self.children())
        bwd = self.backwardTime - sum(c.backwardTime for c in self.children())
        rows.append((self, max(fwd, 0), max(bwd, 0)))
        return rows

    def resetTimes(self) -> Module:
        for m in self.modules_preorder():
            m.forwardTime = m.backwardTime = 0
        return self

    def reset(self) -> Module:
        """Re-initialise the parameters of this tree with each layer's init methods."""
        for child in self.children():
            child.reset()
        return self

    def cloneModule(self) -> Module:
        """A deep, independent copy with the same names; its caches start cleared (the
        copy of a model that ran holds no copy of the last input, outputs or gradients)."""
        memo = {}
        for m in self.modules_preorder():
            for attr, value in m._cleared().items():
                cached = getattr(m, attr, None)
                # Buffers only: a memo entry stands for every reference to that object, and
                # a shared immutable (False, 0, "") would be replaced everywhere in the copy.
                if isinstance(cached, (np.ndarray, list, dict)):
                    memo[id(cached)] = value
        clone = copy.deepcopy(self, memo)
        for m in clone.modules_preorder():
            m._busy = False  # a copy taken while this one runs is idle
        return clone

    def float(self) -> Module:
        return self._convert(np.float32)

    def double(self) -> Module:
        return self._convert(np.float64)

    def _convert(self, dtype) -> Module:
        """Convert every float array of this tree to ``dtype``, in place.

        Cached buffers (output, gradInput, scratch) are dropped instead: they may hold
        uninitialised memory, and the next call sizes them anew.
        """
        dtype = np.dtype(dtype)
        self.clearState()
        for m in self.modules_preorder():
            m.dtype = dtype
            m._flat = None
            for attr, value in list(vars(m).items()):
                if isinstance(value, np.ndarray) and value.dtype in _FLOATS:
                    # A signalling NaN widens to a quiet one, which IEEE flags as invalid:
                    # what a NaN was stays a NaN, no error.
                    with np.errstate(invalid="ignore"):
                        setattr(m, attr, value.astype(dtype))
        return self

    # -- persistence (pymodules.persistence: the file format and storage) --------------
    def save(self, path, overWrite=False, *, storage_options=None) -> Module:
        """Write definition, names, mode and weights to ``path`` (local or fsspec URL)."""
        from pymodules import persistence

        return persistence.save(self, path, overWrite, storage_options=storage_options)

    @classmethod
    def load(cls, path, *, storage_options=None) -> Module:
        """The module saved at ``path``, rebuilt; called on a subclass, it must be one."""
        from pymodules import persistence

        m = persistence.load(path, storage_options=storage_options)
        if not isinstance(m, cls):
            raise TypeError(f"{path} holds a {type(m).__name__}, not a {cls.__name__}")
        return m

    def saveWeights(self, path, overWrite=False, *, storage_options=None) -> Module:
        """Write the weights, biases and running statistics of this tree by module name."""
        from pymodules import persistence

        return persistence.saveWeights(self, path, overWrite, storage_options=storage_options)

    def loadWeights(self, path, matchAll=True, *, storage_options=None) -> Module:
        """Copy weights saved by saveWeights into the modules of the same names."""
        from pymodules import persistence

        return persistence.loadWeights(self, path, matchAll, storage_options=storage_options)

    def loadModelWeights(self, srcModel, matchAll=True) -> Module:
        """Copy ``srcModel``'s weights into the modules of the same names."""
        from pymodules import persistence

        return persistence.loadModelWeights(self, srcModel, matchAll)

    # -- graphs ------------------------------------------------------------------------
    def inputs(self, *nodes):
        """A new graph Node holding this module, fed by ``nodes`` (or one list of nodes)."""
        from pymodules.nn.graph import Node

        return Node(self, nodes)

    def __call__(self, *nodes):
        """Same as inputs(*nodes): ``pm.Linear(4, 3)(x)`` links a node, it computes nothing."""
        return self.inputs(*nodes)

    # -- printing ----------------------------------------------------------------------
    def extraRepr(self) -> str:
        """What goes between the parentheses of str(self); empty for none."""
        return ""

    def __str__(self) -> str:
        extra = self.extraRepr()
        return f"{self.getName()}({extra})" if extra else self.getName()

    __repr__ = __str__

    # -- overview ----------------------------------------------------------------------
    def summary(self, inputShape=None, printFn=print):
        """Print a table of this tree's modules (name, class, output shape, parameters) and
        the totals; see pymodules.nn.overview.summary."""
        from pymodules.nn.overview import summary

        return summary(self, inputShape, printFn)

    def numParameters(self) -> int:
        """The number of trainable values, without relaying them out (getParameters)."""
        from pymodules.nn.overview import numParameters

        return numParameters(self)

    def toTorchStateDict(self):
        """An OrderedDict of torch tensors with torch's key names for the equivalent torch
        model (positional, as torch.nn.Sequential; see pymodules.interop.torch)."""
        from pymodules.interop.torch import to_state_dict

        return to_state_dict(self)

    def setFlatParameters(self, array) -> Module:
        """Copy a 1-D array of every parameter in parameters() order (BigDL's
        getParameters() layout) into the parameters; returns self."""
        from pymodules.interop.bigdl import set_flat_parameters

        return set_flat_parameters(self, array)

    def saveONNX(self, path, inputShape, opset=17, overWrite=False, *,
                 storage_options=None) -> Module:
        """Write this model, as it computes in evaluation mode, to ``path`` as an ONNX file
        (float32). ``inputShape`` leaves out the batch axis, which the file keeps dynamic;
        several inputs: a list of shapes."""
        from pymodules.interop.onnx_export import save_onnx

        return save_onnx(self, path, inputShape, opset, overWrite,
                         storage_options=storage_options)


# pymodules.validation, imported on the first predict (it imports this module): an import
# statement run at every call costs about a microsecond, a model's predict of one sample 60.
_validation = None


def _load_validation():
    global _validation
    from pymodules import validation

    _validation = validation
    return validation


def _is_view_at(a: np.ndarray, base: np.ndarray, offset: int) -> bool:
    if a.base is not base and getattr(a.base, "base", None) is not base:
        return False
    start = a.__array_interface__["data"][0]
    return start == base.__array_interface__["data"][0] + offset * base.itemsize


def _copy_into(module: Module, what: str, targets, arrays) -> None:
    """Copy ``arrays`` into ``targets`` after checking that count and shapes agree."""
    arrays = list(arrays)
    if len(arrays) != len(targets):
        raise ValueError(f"{module}: {what} got {len(arrays)} arrays, expected {len(targets)}")
    for i, (dst, src) in enumerate(zip(targets, arrays, strict=True)):
        src = np.asarray(src)
        if src.shape != dst.shape:
            raise ValueError(
                f"{module}: {what} array {i} has shape {src.shape}, expected {dst.shape}")
    for dst, src in zip(targets, arrays, strict=True):
        dst[...] = src
