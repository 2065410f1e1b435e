"""Data-parallel training steps on the cores of one process: one model replica per core.

As BigDL's local optimizer does, a batch is cut into as many parts as there are replicas
and each replica runs forward and backward on its part, on a thread of its own; the
engine's kernels release the GIL, so the parts' products run at the same time, each on a
one-thread BLAS. The replicas share the model's weights (the same arrays) and each has a
flat gradient of its own, added into the model's after the backward.

The criterion runs once, on the whole batch (the parts' outputs copied into one array),
so the loss and its gradient are the whole batch's for every criterion, whatever it
divides by. The result differs from one replica's only in the order of the sums that
make the weight gradients: the same weights to float rounding, and the same from run to
run (each part always runs on the same replica, whichever thread runs it).

The threads take the parts: the caller's thread runs the first part, then any part no
other thread has started. On a machine whose other cores are busy, a worker that is not
scheduled in time costs nothing but its share of the parallelism; one that is late again
and again is left out for a while (``_Workers``). Training on two threads runs on
replicas rather than on a two-thread BLAS: OpenBLAS splits each product across its
threads and waits for all of them, at every product, where the replicas meet twice a
step; and the work around the products (activations, criterion, the update) runs on
both cores too.

Only models whose layers compute each sample alone, without randomness and without
regularizers, are replicated (``replicable``): a part of the batch then gets exactly the
rows of the whole batch's results. Anything else trains on one replica.
"""

from __future__ import annotations

import itertools
import threading
import time

import numpy as np

from pymodules.engine import optim as K
from pymodules.engine.buffers import resized

#: Rows of the batch each replica takes at least.
MIN_ROWS = 16

#: Whether the Optimizer trains on replicas by itself (``LocalGradient.start`` without an
#: explicit replica count). Off: on this project's 2-core machine (bench/bench_train.py, a
#: quiet machine) two replicas took the MLP step at batch 64 from 1.49 to 1.75 ms and left
#: batch 256 unchanged (5.38 -> 5.27 ms), and the Optimizer at the default threads went from
#: 1.73 to 2.17 ms a step (4.3 ms beside two busy processes, against 1.9 ms without).
ENABLED = False

#: The layer types whose results for a sample depend on that sample only (with their
#: parameters), with no randomness: the same rows from a part of a batch as from the whole.
_ROW_WISE = frozenset((
    "Sequential", "Linear", "Identity", "Threshold", "ReLU", "HardTanh", "ReLU6", "Clamp",
    "LeakyReLU", "ELU", "Tanh", "Sigmoid", "HardSigmoid", "SoftPlus", "SoftSign", "Abs",
    "Power", "Square", "Sqrt", "Exp", "Log", "SoftMax", "SoftMin", "LogSoftMax",
    "LogSigmoid", "TanhShrink", "SoftShrink", "HardShrink", "SpatialConvolution",
    "SpatialMaxPooling", "SpatialAveragePooling",
))


def replicable(model) -> bool:
    """Whether ``model``'s layers are all of the row-wise types, from pymodules itself,
    and add no regularizer to their gradients."""
    for m in model.modules_preorder():
        cls = type(m)
        if cls.__name__ not in _ROW_WISE or not cls.__module__.startswith("pymodules.nn."):
            return False
        if getattr(m, "wRegularizer", None) is not None or \
                getattr(m, "bRegularizer", None) is not None:
            return False
    return True


def parts_for(rows: int, replicas: int) -> int:
    """Parts a batch of ``rows`` is cut into on ``replicas`` replicas (1: not cut)."""
    return max(1, min(replicas, rows // MIN_ROWS))


class _Part:
    """One part of a stage: ``fn(*args)`` run by whichever thread takes it first."""

    __slots__ = ("fn", "args", "taken", "done", "error")

    def __init__(self, fn, args):
        self.fn, self.args, self.error = fn, args, None
        self.taken = threading.Lock()
        self.done = threading.Lock()
        self.done.acquire()

    def take(self) -> bool:
        return self.taken.acquire(False)

    def run(self):
        try:
            self.fn(*self.args)
        except BaseException as err:  # noqa: BLE001 - raised again by the caller's thread
            self.error = err
        finally:
            self.done.release()


class _Workers:
    """Threads that run the parts of a stage the caller's thread has not taken.

    When, ``LATE`` stages in a row, the caller waited for the workers longer than its own
    part took (the workers' cores are busy with other processes: a worker took a part and
    was then not scheduled), the caller runs the next ``SOLO`` stages alone, all parts in
    turn, then tries the workers again. The parts, and so the results, are the same either
    way.
    """

    LATE = 3
    SOLO = 64

    def __init__(self, count):
        self._parts = ()
        self._closed = False
        self._late = 0
        self._solo = 0
        self._wake = [threading.Lock() for _ in range(count)]
        for w in self._wake:
            w.acquire()
        self._threads = [threading.Thread(target=self._loop, args=(w,), daemon=True,
                                          name=f"pymodules-replica-{i + 1}")
                         for i, w in enumerate(self._wake)]
        for t in self._threads:
            t.start()

    def _loop(self, wake):
        while True:
            wake.acquire()
            if self._closed:
                return
            for part in self._parts:
                if part.take():
                    part.run()

    def _signal(self):
        for w in self._wake:
            try:
                w.release()
            except RuntimeError:
                pass  # still signalled from before: the worker has not woken yet

    def stage(self, first, others):
        """Run ``first`` here and the ``others`` (fn, args) on any thread; return when all
        are done, raising the first error."""
        if self._solo > 0:
            self._solo -= 1
            first[0](*first[1])
            for fn, args in others:
                fn(*args)
            return
        parts = self._parts = [_Part(fn, args) for fn, args in others]
        self._signal()
        error = None
        start = time.perf_counter()
        try:
            first[0](*first[1])
        except BaseException as err:  # noqa: BLE001 - after the other parts are done
            error = err
        own = time.perf_counter() - start
        waited = 0.0
        for part in parts:
            if part.take():
                part.run()  # no worker started it: run it here
            else:
                start = time.perf_counter()
                part.done.acquire()
                waited += time.perf_counter() - start
            if error is None and part.error is not None:
                error = part.error
        self._parts = ()
        self._late = self._late + 1 if waited > own else 0
        if self._late >= self.LATE:
            self._late, self._solo = 0, self.SOLO
        if error is not None:
            raise error

    def close(self):
        self._closed = True
        self._signal()
        for t in self._threads:
            t.join()


class Replicas:
    """``count`` replicas of ``model`` (the first is the model itself), sharing its weights.

    ``gradient(input, target, parts)`` adds the batch's gradient into the model's flat
    gradient and returns the loss, as ``model.backward`` after ``criterion.forward`` would;
    ``split(kernel, args)`` runs an element-wise kernel over the flat vectors in parts on
    the replicas' threads. ``close()`` stops the threads.
    """

    def __init__(self, model, criterion, count):
        self.model, self.criterion = model, criterion
        _, self.grad = model.getParameters()
        self.models = [model]
        self.grads = []
        slots = list(model._slots())
        for _replica in range(count - 1):
            r = model.cloneModule()
            g = np.zeros_like(self.grad)
            offset = 0
            for (m, v, _), (rm, rv, rg) in zip(slots, list(r._slots()), strict=True):
                w = getattr(m, v)
                setattr(rm, rv, w)  # the same array: one set of weights
                setattr(rm, rg, g[offset:offset + w.size].reshape(w.shape))
                offset += w.size
            for rm in r.modules_preorder():
                rm._flat = None
            r.training()
            self.models.append(r)
            self.grads.append(g)
        self.readers = [_reader(m) for m in self.models]
        self._output = None
        self._workers = _Workers(count - 1)

    def gradient(self, input, target, parts):
        """The loss of the batch; its gradient is added into the model's flat gradient
        (which holds zeros or what is to be accumulated). ``parts`` >= 2 replicas run."""
        n = input.shape[0]
        bounds = [n * i // parts for i in range(parts + 1)]
        xs = [input[bounds[i]:bounds[i + 1]] for i in range(parts)]
        models = self.models
        saved = [r.propagateBack for r in self.readers[:parts]]
        for r in self.readers[:parts]:
            r.propagateBack = False
        try:
            self._workers.stage((models[0].forward, (xs[0],)),
                                [(models[i].forward, (xs[i],)) for i in range(1, parts)])
            first = models[0].output
            out = self._output = resized(self._output, (n,) + first.shape[1:], -1,
                                         first.dtype)
            for i in range(parts):
                out[bounds[i]:bounds[i + 1]] = models[i].output
            loss = self.criterion.forward(out, target)
            go = self.criterion.backward(out, target)
            gos = [go[bounds[i]:bounds[i + 1]] for i in range(parts)]
            self._workers.stage((models[0].backward, (xs[0], gos[0])),
                                [(models[i].backward, (xs[i], gos[i])) for i in range(1, parts)])
        finally:
            for r, p in zip(self.readers, saved, strict=False):
                r.propagateBack = p
        for g in self.grads[:parts - 1]:
            self.split(K.add_and_clear, (self.grad, g))
        return loss

    def split(self, kernel, args):
        """``kernel(*args)`` for an element-wise kernel over flat vectors: every 1-D array
        argument as long as the model's flat gradient is cut into one part per replica
        (at multiples of 16 elements, a cache line), and the parts run at once."""
        n = self.grad.shape[0]
        count = len(self.models)
        bounds = [min(n, (n * i // count + 15) & ~15) for i in range(count)] + [n]
        calls = [(kernel, tuple(a[lo:hi] if isinstance(a, np.ndarray) and a.ndim == 1
                                and a.shape[0] == n else a for a in args))
                 for lo, hi in itertools.pairwise(bounds)]
        self._workers.stage(calls[0], calls[1:])

    def close(self):
        self._workers.close()


def _reader(model):
    from pymodules.optim.optimizer import data_reader

    return data_reader(model)
