"""Optimisation methods: update the flat parameter vector in place, one fused kernel a step.

``optimize(feval, x)`` calls ``feval(x) -> (loss, grad)`` and updates ``x`` in place;
it returns ``(x, [loss])``. The state (step count, moment buffers) is a dict of NumPy
arrays, ints, floats and strings: ``getState()`` gives a copy, ``loadState(state)``
restores it.
"""

from __future__ import annotations

import inspect
import math

import numpy as np

from pymodules.engine import optim as K
from pymodules.facade import REFUSALS, Facade
from pymodules.optim.schedules import Default, LearningRateSchedule

_SCHEDULE = "schedule."

#: PyTorch's keyword names of the optimisers' arguments -> pymodules' (BigDL's) names.
_TORCH_NAMES = {
    "lr": ("learningRate",), "lr_decay": ("learningRateDecay",),
    "weight_decay": ("weightDecay",), "betas": ("beta1", "beta2"), "eps": ("epsilon",),
    "alpha": ("decayRate",), "rho": ("decayRate",), "max_iter": ("maxIter",),
    "max_eval": ("maxEval",), "tolerance_change": ("tolX",), "history_size": ("nCorrection",),
    "line_search_fn": ("lineSearch",),
}


class OptimMethod(Facade):
    """Base of the optimisation methods (BigDL's OptimMethod)."""

    learningRate = 0.0
    learningRateDecay = 0.0

    def __new__(cls, *args, **kwargs):
        # PyTorch's spellings (lr=, weight_decay=, betas=, ...) name pymodules' instead of
        # failing with Python's bare "unexpected keyword argument".
        params = inspect.signature(cls.__init__).parameters if kwargs else {}
        for key in kwargs:
            ours = _TORCH_NAMES.get(key)
            if key not in params and ours and all(o in params for o in ours):
                value = kwargs[key]
                spelled = (", ".join(f"{o}={v!r}" for o, v in zip(ours, value, strict=False))
                           if len(ours) > 1 and isinstance(value, (tuple, list))
                           and len(value) == len(ours) else f"{ours[0]}={value!r}")
                raise TypeError(f"{cls.__name__}: no argument {key!r} (PyTorch's name); "
                                f"pymodules takes BigDL's: {cls.__name__}({spelled})")
        return super().__new__(cls)

    def __init__(self):
        self.state = {"neval": 0}

    def optimize(self, feval, x):
        raise NotImplementedError(f"{type(self).__name__} does not define optimize")

    def _optimize(self, feval, x, clear, split=None):
        """``optimize`` as the Optimizer calls it: ``(x, losses, cleared)``. ``clear`` says
        that nothing reads the gradient ``feval`` returns after the update, so the update
        may set it to zero in its own pass; ``cleared`` whether it did. ``split``, when
        given, runs an element-wise kernel in parts on several threads."""
        x, losses = self.optimize(feval, x)
        return x, losses, False

    def getLearningRate(self) -> float:
        """The rate of the next step."""
        return self.learningRate / (1 + self.state["neval"] * self.learningRateDecay)

    def _buffer(self, name, x):
        """The state array ``name`` shaped like ``x`` (zeros when new or resized)."""
        buf = self.state.get(name)
        if not isinstance(buf, np.ndarray) or buf.shape != x.shape or buf.dtype != x.dtype:
            buf = self.state[name] = np.zeros_like(x)
        return buf

    def _checked(self, x):
        if not isinstance(x, np.ndarray) or x.ndim != 1:
            raise TypeError(f"{self}: x must be the flat 1-D parameter vector "
                            f"(module.getParameters()[0]), got "
                            f"{getattr(x, 'shape', type(x).__name__)}")
        return x

    def _run(self, kernel, *args, split=None):
        """``kernel(*args)``, or ``split(kernel, args)`` (the element-wise update run in
        parts on several threads); a refusal is retold with this method's name (the
        facade)."""
        try:
            if split is None:
                kernel(*args)
            else:
                split(kernel, args)
        except REFUSALS as err:
            self._refused(err, kernel, args)

    def _fixed(self, args):
        return None  # the flat parameter vectors are the method's own, nothing to fix

    # -- state -------------------------------------------------------------------------
    def _schedule(self):
        return None

    def getState(self) -> dict:
        """A copy of the state: arrays, ints, floats and strings only."""
        state = {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in self.state.items()}
        schedule = self._schedule()
        if schedule is not None:
            state.update({_SCHEDULE + k: v for k, v in schedule.getState().items()})
        return state

    #: state entries that are arrays (the buffers), and those that are counts or numbers
    _ARRAYS: tuple[str, ...] = ()
    _COUNTS = ("neval", "epoch", "nIter")
    _NUMBERS = ("t", "Hdiag", "Loss", "score")

    def _checkState(self, state) -> None:
        """Refuse a state whose entries are not what this method writes: a TypeError or
        ValueError naming the entry, at load time rather than at the next step."""
        if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
            raise TypeError(f"{type(self).__name__}: the state must be a dict by name, got "
                            f"{type(state).__name__}")
        for k, v in state.items():
            if k.startswith(_SCHEDULE):
                continue
            if k in self._ARRAYS:
                ok = v is None or (isinstance(v, np.ndarray) and v.dtype.kind == "f")
                what = "a float array"
            elif k in self._COUNTS:
                ok = isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 0
                what = "a count >= 0"
            elif k in self._NUMBERS:
                ok = v is None or (isinstance(v, (int, float, np.number))
                                   and not isinstance(v, bool) and not math.isnan(v))
                what = "a number"
            else:
                ok = v is None or isinstance(v, (bool, int, float, str, np.ndarray, np.number))
                what = "an array, number or string"
            if not ok:
                raise TypeError(f"{type(self).__name__}: state {k!r} must be {what}, got "
                                f"{type(v).__name__} {str(v)[:40]}")

    def _restored(self) -> None:
        """Persistence set the attributes from a file: check each against what the
        constructor makes (the same names, of the same kinds), then the state."""
        try:
            made = vars(type(self)())
        except Exception:  # noqa: BLE001 - a subclass that needs arguments: names unchecked
            made = None
        if made is not None and set(vars(self)) != set(made):
            raise ValueError(f"{type(self).__name__}: the file sets "
                             f"{sorted(vars(self))[:20]}, the method has {sorted(made)}")
        for k, default in (made or {}).items():
            v = getattr(self, k)
            if k == "state":
                continue
            if isinstance(default, bool) or isinstance(v, bool):
                ok = isinstance(v, bool) and isinstance(default, bool)
            elif isinstance(default, (int, float)):
                ok = isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v))
                if ok and isinstance(default, int):
                    ok = isinstance(v, int)
                elif ok:
                    setattr(self, k, float(v))
            elif isinstance(default, LearningRateSchedule):
                ok = isinstance(v, LearningRateSchedule)
            else:
                ok = default is None or isinstance(v, type(default))
            if not ok:
                raise TypeError(f"{type(self).__name__}: {k} is a {type(v).__name__} "
                                f"({str(v)[:40]}), expected a {type(default).__name__}")
        state = vars(self).get("state")
        self._checkState(state)
        state.setdefault("neval", 0)

    def loadState(self, state: dict):
        """Restore a state from getState (e.g. after loading a checkpoint); returns self."""
        self._checkState(state)
        own = {k: v for k, v in state.items() if not k.startswith(_SCHEDULE)}
        self.state = {k: np.array(v) if isinstance(v, np.ndarray) else v for k, v in own.items()}
        self.state.setdefault("neval", 0)
        schedule = self._schedule()
        if schedule is not None:
            schedule.loadState({k[len(_SCHEDULE):]: v for k, v in state.items()
                                if k.startswith(_SCHEDULE)})
        return self

    def save(self, path, overWrite=False, *, storage_options=None):
        """Write this method (hyperparameters, schedule and state) to ``path`` in
        pymodules' safe format (pymodules.persistence); return self."""
        from pymodules import persistence

        persistence.save_state(path, {"optimMethod": self}, overWrite,
                               storage_options=storage_options)
        return self

    @staticmethod
    def load(path, *, storage_options=None) -> OptimMethod:
        """The optim method saved at ``path``, ready to continue where it stopped."""
        from pymodules import persistence

        method = persistence.load_state(path, storage_options=storage_options).get(
            "optimMethod")
        if not isinstance(method, OptimMethod):
            raise persistence.FileFormatError(f"{path}: holds no optim method")
        return method

    def clearHistory(self):
        """Forget the state (step count and buffers)."""
        self.state = {"neval": 0}
        return self

    def __repr__(self):
        keys = [k for k in vars(self) if k != "state" and not k.startswith("_")]
        return f"{type(self).__name__}({', '.join(f'{k}={getattr(self, k)!r}' for k in keys)})"


class SGD(OptimMethod):
    """Stochastic gradient descent with Torch7/BigDL semantics.

    g = grad + weightDecay * x; with momentum, buf = g at the first step, then
    buf = momentum * buf + (1 - dampening) * g, and the step uses g + momentum * buf
    (nesterov) or buf; x -= clr * step, clr from ``learningRateSchedule`` (Default:
    learningRate / (1 + neval * learningRateDecay)). ``dampening`` defaults to momentum.
    """

    _ARRAYS = ("dfdx",)

    def __init__(self, learningRate=1e-3, learningRateDecay=0.0, weightDecay=0.0, momentum=0.0,
                 dampening=None, nesterov=False, learningRateSchedule=None):
        super().__init__()
        self.learningRate, self.learningRateDecay = float(learningRate), float(learningRateDecay)
        self.weightDecay, self.momentum = float(weightDecay), float(momentum)
        self.dampening = self.momentum if dampening is None else float(dampening)
        self.nesterov = bool(nesterov)
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError(f"SGD: nesterov needs momentum > 0 and dampening 0, got "
                             f"momentum={self.momentum}, dampening={self.dampening}")
        if learningRateSchedule is not None and \
                not isinstance(learningRateSchedule, LearningRateSchedule):
            raise TypeError(f"SGD: learningRateSchedule must be a LearningRateSchedule, got "
                            f"{type(learningRateSchedule).__name__}")
        self.learningRateSchedule = learningRateSchedule or Default()

    def _schedule(self):
        return self.learningRateSchedule

    def getLearningRate(self):
        return self.learningRateSchedule.rate(self, self.state["neval"])

    def optimize(self, feval, x):
        return self._step(feval, x, False)

    def _optimize(self, feval, x, clear, split=None):
        if type(self).optimize is not SGD.optimize:  # a subclass's own step
            return super()._optimize(feval, x, clear, split)
        x, losses = self._step(feval, x, clear, split)
        return x, losses, clear

    def _step(self, feval, x, clear, split=None):
        x = self._checked(x)
        loss, grad = feval(x)
        clr = self.getLearningRate()
        buf = None
        first = False
        if self.momentum != 0:
            first = not isinstance(self.state.get("dfdx"), np.ndarray) \
                or self.state["dfdx"].shape != x.shape
            buf = self._buffer("dfdx", x)
        self._run(K.sgd_update, x, grad, buf, clr, self.weightDecay, self.momentum,
                  self.dampening, self.nesterov, first, clear, split=split)
        self.state["neval"] += 1
        return x, [loss]


class Adam(OptimMethod):
    """Adam (Torch7/BigDL form): x -= clr * sqrt(1 - beta2^t) / (1 - beta1^t) * m /
    (sqrt(v) + epsilon), clr = learningRate / (1 + (t - 1) * learningRateDecay)."""

    _ARRAYS = ("m", "v")

    def __init__(self, learningRate=1e-3, learningRateDecay=0.0, beta1=0.9, beta2=0.999,
                 epsilon=1e-8):
        super().__init__()
        self.learningRate, self.learningRateDecay = float(learningRate), float(learningRateDecay)
        self.beta1, self.beta2, self.epsilon = float(beta1), float(beta2), float(epsilon)

    _decay = 0.0

    def optimize(self, feval, x):
        x = self._checked(x)
        loss, grad = feval(x)
        clr = self.getLearningRate()
        t = self.state["neval"] + 1
        step = clr * math.sqrt(1 - self.beta2 ** t) / (1 - self.beta1 ** t)
        self._run(K.adam_update, x, grad, self._buffer("m", x), self._buffer("v", x), step,
                  self.beta1, self.beta2, self.epsilon, clr * self._decay)
        self.state["neval"] = t
        return x, [loss]


class AdamW(Adam):
    """Adam with decoupled weight decay: x *= 1 - clr * weightDecay before the Adam step."""

    def __init__(self, learningRate=1e-3, learningRateDecay=0.0, beta1=0.9, beta2=0.999,
                 epsilon=1e-8, weightDecay=0.01):
        super().__init__(learningRate, learningRateDecay, beta1, beta2, epsilon)
        self.weightDecay = float(weightDecay)

    @property
    def _decay(self):
        return self.weightDecay


class Adagrad(OptimMethod):
    """var += g^2; x -= clr * g / (sqrt(var) + 1e-10), g = grad + weightDecay * x."""

    _ARRAYS = ("paramVariance",)

    def __init__(self, learningRate=1e-3, learningRateDecay=0.0, weightDecay=0.0):
        super().__init__()
        self.learningRate, self.learningRateDecay = float(learningRate), float(learningRateDecay)
        self.weightDecay = float(weightDecay)

    def optimize(self, feval, x):
        x = self._checked(x)
        loss, grad = feval(x)
        self._run(K.adagrad_update, x, grad, self._buffer("paramVariance", x),
                  self.getLearningRate(), self.weightDecay, 1e-10)
        self.state["neval"] += 1
        return x, [loss]


class RMSprop(OptimMethod):
    """ms = decayRate * ms + (1 - decayRate) g^2; x -= clr * g / (sqrt(ms) + epsilon)."""

    _ARRAYS = ("sumofsquare",)

    def __init__(self, learningRate=1e-2, learningRateDecay=0.0, decayRate=0.99, epsilon=1e-8):
        super().__init__()
        self.learningRate, self.learningRateDecay = float(learningRate), float(learningRateDecay)
        self.decayRate, self.epsilon = float(decayRate), float(epsilon)

    def optimize(self, feval, x):
        x = self._checked(x)
        loss, grad = feval(x)
        self._run(K.rmsprop_update, x, grad, self._buffer("sumofsquare", x),
                  self.getLearningRate(), self.decayRate, self.epsilon)
        self.state["neval"] += 1
        return x, [loss]


class Adadelta(OptimMethod):
    """Adadelta (no learning rate of its own: the step is the ratio of running RMS)."""

    _ARRAYS = ("paramVariance", "accDelta")

    learningRate = 1.0

    def __init__(self, decayRate=0.9, epsilon=1e-10):
        super().__init__()
        self.decayRate, self.epsilon = float(decayRate), float(epsilon)

    def optimize(self, feval, x):
        x = self._checked(x)
        loss, grad = feval(x)
        self._run(K.adadelta_update, x, grad, self._buffer("paramVariance", x),
                  self._buffer("accDelta", x), 1.0, self.decayRate, self.epsilon)
        self.state["neval"] += 1
        return x, [loss]


class Adamax(OptimMethod):
    """Adamax: m = beta1 m + (1 - beta1) g; u = max(beta2 u, |g| + epsilon);
    x -= learningRate / (1 - beta1^t) * m / u."""

    _ARRAYS = ("m", "u")

    def __init__(self, learningRate=0.002, beta1=0.9, beta2=0.999, epsilon=1e-38):
        super().__init__()
        self.learningRate = float(learningRate)
        self.beta1, self.beta2, self.epsilon = float(beta1), float(beta2), float(epsilon)

    def optimize(self, feval, x):
        x = self._checked(x)
        loss, grad = feval(x)
        t = self.state["neval"] + 1
        self._run(K.adamax_update, x, grad, self._buffer("m", x), self._buffer("u", x),
                  self.learningRate / (1 - self.beta1 ** t), self.beta1, self.beta2,
                  self.epsilon)
        self.state["neval"] = t
        return x, [loss]


class LBFGS(OptimMethod):
    """Limited-memory BFGS with a fixed step (Torch7's lbfgs without a line search).

    One ``optimize`` call runs up to ``maxIter`` iterations (``maxEval`` evaluations of
    feval) and returns every loss seen. The correction pairs persist in the state.
    """

    _ARRAYS = ("d", "gPrev", "oldDirs", "oldSteps")

    def __init__(self, maxIter=20, maxEval=None, tolFun=1e-5, tolX=1e-9, nCorrection=100,
                 learningRate=1.0, verbose=False, lineSearch=None, lineSearchOptions=None):
        super().__init__()
        if lineSearch is not None:
            raise NotImplementedError("LBFGS: line search is not available; use lineSearch=None "
                                      "(a fixed step of learningRate)")
        self.maxIter = int(maxIter)
        self.maxEval = float(maxEval) if maxEval is not None else self.maxIter * 1.25
        self.tolFun, self.tolX = float(tolFun), float(tolX)
        self.nCorrection, self.learningRate = int(nCorrection), float(learningRate)
        self.verbose = bool(verbose)

    def getLearningRate(self):
        return self.learningRate

    def _pairs(self, name, x):
        """The stored correction vectors as a list of rows of a (k, n) array."""
        a = self.state.get(name)
        if not isinstance(a, np.ndarray) or a.ndim != 2 or a.shape[1] != x.size:
            return []
        return list(a)

    def optimize(self, feval, x):
        x = self._checked(x)
        st = self.state
        loss, g = feval(x)
        g = np.array(g, dtype=x.dtype)
        losses = [loss]
        evals = 1
        if np.abs(g).sum() <= self.tolFun:
            return x, losses
        dirs, stps = self._pairs("oldDirs", x), self._pairs("oldSteps", x)
        d = st.get("d")
        g_old = st.get("gPrev")
        t = st.get("t", self.learningRate)
        h_diag = st.get("Hdiag", 1.0)
        n_iter = 0
        while n_iter < self.maxIter:
            n_iter += 1
            st["nIter"] = st.get("nIter", 0) + 1
            if st["nIter"] == 1 or d is None or g_old is None:
                d = -g
                dirs, stps, h_diag = [], [], 1.0
            else:
                y = g - g_old
                s = d * t
                ys = float(y @ s)
                if ys > 1e-10:
                    if len(dirs) == self.nCorrection:
                        dirs.pop(0)
                        stps.pop(0)
                    dirs.append(s)
                    stps.append(y)
                    h_diag = ys / float(y @ y)
                ro = [1.0 / float(sp @ dr) for sp, dr in zip(stps, dirs, strict=True)]
                al = [0.0] * len(dirs)
                q = -g
                for i in range(len(dirs) - 1, -1, -1):
                    al[i] = float(dirs[i] @ q) * ro[i]
                    q = q - al[i] * stps[i]
                d = q * h_diag
                for i in range(len(dirs)):
                    be = float(stps[i] @ d) * ro[i]
                    d = d + (al[i] - be) * dirs[i]
            g_old = g.copy()
            f_old = loss
            gtd = float(g @ d)
            if gtd > -self.tolX:
                break
            t = min(1.0, 1.0 / np.abs(g).sum()) * self.learningRate if st["nIter"] == 1 \
                else self.learningRate
            x += (t * d).astype(x.dtype)
            if n_iter != self.maxIter:
                loss, g = feval(x)
                g = np.array(g, dtype=x.dtype)
                losses.append(loss)
                evals += 1
            if n_iter == self.maxIter or evals >= self.maxEval:
                break
            if np.abs(g).sum() <= self.tolFun or np.abs(d * t).sum() <= self.tolX \
                    or abs(loss - f_old) < self.tolX:
                break
        st.update(d=d, gPrev=g_old, t=float(t), Hdiag=float(h_diag))
        if dirs:
            st["oldDirs"], st["oldSteps"] = np.stack(dirs), np.stack(stps)
        st["neval"] += evals
        return x, losses
