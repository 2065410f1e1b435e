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

``ProcessReplicas`` (the Optimizer's kind, ``KIND``) runs the other replicas in forked
worker processes instead, each with an interpreter of its own: the two sides meet twice a
step (outputs, gradients) on semaphores they spin on briefly before sleeping, and no GIL
is handed over between kernels. What was measured here (AMD EPYC, 2 vCPUs, OpenBLAS 0.3.30
Haswell kernels; a shared machine, so minima and CPU times): two threads looping SciPy's
OpenBLAS sgemm on the step's 128-row shapes, GIL released, each keep the CPU time of one
thread alone and block 6-8 times in 800 calls (no lock serializes them); every kernel of
the MLP step releases the GIL; a worker thread's part takes as long on the clock as on
its CPU (913 us forward at batch 256), and a stage wakes it in 26-36 us (42-74 us median).
What the parts cost whatever runs them: two half-batch replicas, one after the other, take
1.24x (batch 256) and 1.30x (batch 64) the CPU time of one model on the whole batch (the
GEMMs at half the rows run 12% slower), so two cores can give at most about 1.6x.
"""

from __future__ import annotations

import itertools
import mmap
import multiprocessing
import os
import signal
import threading
import time
import weakref

import numpy as np

from pymodules.engine import optim as K
from pymodules.engine.buffers import resized

#: Rows of the batch each replica takes at least.
MIN_ROWS = 16

#: Whether the Optimizer trains on replicas by itself (``LocalGradient.start`` without an
#: explicit replica count). Off: on this project's 2-core machine (bench/bench_train.py, a
#: quiet machine) two thread replicas took the MLP step at batch 64 from 1.49 to 1.75 ms and
#: left batch 256 unchanged (5.38 -> 5.27 ms), and the Optimizer at the default threads went
#: from 1.73 to 2.17 ms a step (4.3 ms beside two busy processes, against 1.9 ms without).
#: The process replicas have not yet been timed on a quiet machine (bench_train's "both
#: cores" rows); on a busy one every two-core contender, torch's too, loses to one thread.
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


#: Which replicas the Optimizer makes: "processes" (a forked worker process per extra
#: replica, data in shared memory) or "threads" (``Replicas``, threads of this process).
KIND = "processes"

#: How long (seconds) a side spins on a semaphore before it sleeps on it: a sleeping
#: core of a virtual machine takes tens of microseconds or more to wake, and the worker
#: waits out the update between two steps. Measured (minimum of 160 steps at batch 256,
#: a busy machine): 5.2 ms a step with 0.3 ms of spinning, 3.3 ms with 2 ms (one model:
#: 4.4-5.1 ms).
SPIN = 2e-3

_FORWARD, _BACKWARD, _EXIT = 1, 2, 3


def make(model, criterion, count):
    """``count`` replicas of ``model`` of the kind ``KIND`` says (processes only where
    ``os.fork`` exists)."""
    if KIND == "processes" and hasattr(os, "fork"):
        return ProcessReplicas(model, criterion, count)
    return Replicas(model, criterion, count)


def _acquire(sem, spin=SPIN):
    """Take ``sem``: spin on it for ``spin`` seconds, then sleep on it."""
    if sem.acquire(False):
        return
    end = time.perf_counter() + spin
    while time.perf_counter() < end:
        if sem.acquire(False):
            return
    sem.acquire()


class _Worker:
    """One forked process running replica ``index`` on the parts given to it.

    Shared memory (an anonymous mapping made before the fork, so nothing is left behind
    in the file system): a control block, the weights, the replica's flat gradient, its
    rows of the input, its output rows and their gradient, and an error text. ``go``
    carries a command to the worker (the caller may take a forward back with a
    non-blocking acquire when the worker has not started it); ``done`` its answer.
    """

    CTRL = 16
    ERROR = 4096

    def __init__(self, replica, weights, grad, rows, sample, out_sample, dtype):
        self.rows, self.sample, self.out_sample = rows, tuple(sample), tuple(out_sample)
        self.dtype = np.dtype(dtype)
        n = grad.shape[0]
        item = self.dtype.itemsize
        sizes = [self.CTRL * 8, self.ERROR, n * item, n * item,
                 rows * int(np.prod(sample, dtype=np.int64)) * item,
                 rows * int(np.prod(out_sample, dtype=np.int64)) * item,
                 rows * int(np.prod(out_sample, dtype=np.int64)) * item]
        offsets = np.concatenate(([0], np.cumsum([(s + 63) & ~63 for s in sizes])))
        self._mem = mem = mmap.mmap(-1, int(offsets[-1]))
        buf = memoryview(mem)
        self.ctrl = np.frombuffer(buf, np.int64, self.CTRL, int(offsets[0]))
        self.error = np.frombuffer(buf, np.uint8, self.ERROR, int(offsets[1]))
        self.weights = np.frombuffer(buf, self.dtype, n, int(offsets[2]))
        self.grad = np.frombuffer(buf, self.dtype, n, int(offsets[3]))
        self.x = np.frombuffer(buf, self.dtype, sizes[4] // item, int(offsets[4]))
        self.y = np.frombuffer(buf, self.dtype, sizes[5] // item, int(offsets[5]))
        self.gy = np.frombuffer(buf, self.dtype, sizes[6] // item, int(offsets[6]))
        self.weights[:] = weights
        offset = 0
        for m, v, g in list(replica._slots()):
            w = getattr(m, v)
            setattr(m, v, self.weights[offset:offset + w.size].reshape(w.shape))
            setattr(m, g, self.grad[offset:offset + w.size].reshape(w.shape))
            offset += w.size
        for m in replica.modules_preorder():
            m._flat = None
        replica.training()
        self.replica = replica
        self.reader = _reader(replica)
        self.reader.propagateBack = False
        ctx = multiprocessing.get_context("fork")
        self.go, self.done = ctx.Semaphore(0), ctx.Semaphore(0)
        self.pid = os.fork()
        if self.pid == 0:  # the worker
            code = 1
            try:
                self._serve()
                code = 0
            finally:
                os._exit(code)
        self._closer = weakref.finalize(self, _stop, self.pid, self.ctrl, self.go)

    # -- the worker's side ------------------------------------------------------------
    def _serve(self):
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the caller stops the worker
        _die_with_parent()
        from pymodules import threads

        threads.use_threads(1)
        parent = os.getppid()
        while True:
            if not self.go.acquire(False):
                end = time.perf_counter() + SPIN
                while not self.go.acquire(False):
                    if time.perf_counter() > end:
                        while not self.go.acquire(timeout=0.1):
                            if os.getppid() != parent:
                                return
                        break
            command = int(self.ctrl[0])
            if command == _EXIT:
                return
            try:
                if command == _FORWARD:
                    self.forward()
                else:
                    self.backward()
                self.ctrl[1] = 0
            except BaseException as err:  # noqa: BLE001 - told to the caller
                text = f"{type(err).__name__}: {err}".encode("utf-8", "replace")[:self.ERROR]
                self.error[:len(text)] = np.frombuffer(text, np.uint8)
                self.ctrl[2] = len(text)
                self.ctrl[1] = 1
            self.done.release()

    def _views(self):
        rows = int(self.ctrl[3])
        x = self.x[:rows * int(np.prod(self.sample, dtype=np.int64))].reshape(
            (rows,) + self.sample)
        size = rows * int(np.prod(self.out_sample, dtype=np.int64))
        return (x, self.y[:size].reshape((rows,) + self.out_sample),
                self.gy[:size].reshape((rows,) + self.out_sample))

    def forward(self):
        """The replica's forward on the rows in shared memory; its output into ``y``."""
        x, y, _ = self._views()
        out = self.replica.forward(x)
        if out.shape != y.shape:
            raise ValueError(f"a part's output has shape {out.shape}, expected {y.shape}")
        y[...] = out

    def backward(self):
        """The replica's backward; its gradient is added into the shared flat one."""
        x, _, gy = self._views()
        self.replica.backward(x, gy)

    # -- the caller's side ------------------------------------------------------------
    def fits(self, rows, sample, dtype):
        return rows <= self.rows and tuple(sample) == self.sample and dtype == self.dtype

    def post(self, command, rows):
        self.ctrl[0], self.ctrl[3] = command, rows
        self.go.release()

    def take_back(self) -> bool:
        """Take back a posted command the worker has not started."""
        return self.go.acquire(False)

    def wait(self):
        """Wait for the worker's answer; raise its error (RuntimeError with its text)."""
        if not self.done.acquire(False):
            end = time.perf_counter() + SPIN
            while not self.done.acquire(False):
                if time.perf_counter() > end:
                    while not self.done.acquire(timeout=0.1):
                        pid, status = os.waitpid(self.pid, os.WNOHANG)
                        if pid:
                            self.pid = 0
                            self._closer.detach()
                            raise RuntimeError(f"a replica's worker process ended "
                                               f"(wait status {status})")
                    break
        if self.ctrl[1]:
            text = bytes(self.error[:int(self.ctrl[2])]).decode("utf-8", "replace")
            raise RuntimeError(f"a replica's worker process failed: {text}")

    def close(self):
        if self._closer.alive:
            self._closer()


def _die_with_parent():
    """Ask Linux to kill this process when its parent ends (nothing elsewhere)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _stop(pid, ctrl, go):
    """End a worker: ask it to exit, then reap it (killed if it does not exit)."""
    if pid <= 0:
        return
    ctrl[0] = _EXIT
    go.release()
    end = time.monotonic() + 2.0
    while True:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return
        if done:
            return
        if time.monotonic() > end:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return
        time.sleep(0.001)


class ProcessReplicas:
    """``count`` replicas of ``model``: the model itself here, the others each in a forked
    worker process, with the weights, the batch's parts, the outputs and the gradients in
    shared memory (raw floats). The same interface and the same results as ``Replicas``.

    Each step this process copies the weights into the shared memory, hands every other
    part of the batch to a worker, runs the first part, runs the criterion on the whole
    batch's output, hands the parts' output gradients back, runs its backward, and adds
    the workers' gradients into the model's. A part no worker has started when this
    process is ready for it runs here instead, on a local copy of the worker's replica
    reading the same shared memory (so the same numbers), forward and backward both;
    workers late ``LATE`` stages in a row are left out for ``SOLO`` steps. The workers
    start at the first batch (its shapes size the shared memory), end with ``close()``,
    when this object is collected, or at the interpreter's exit.
    """

    LATE = 3
    SOLO = 64

    def __init__(self, model, criterion, count):
        self.model, self.criterion = model, criterion
        self.weights, self.grad = model.getParameters()
        self.models = [model] + [None] * (count - 1)  # len() is the replica count
        self.reader = _reader(model)
        self.workers = []
        self._output = None
        self._late = self._solo = 0

    def _ready(self, xs):
        """Workers fit for these parts (started, or started anew)."""
        rows = max(len(x) for x in xs[1:])
        sample, dtype = xs[0].shape[1:], self.grad.dtype
        if len(self.workers) == len(xs) - 1 and all(
                w.fits(rows, sample, dtype) for w in self.workers):
            return self.workers
        self.close()
        rows = max(rows, -(-self.batch_rows // len(xs)))
        for i in range(1, len(xs)):
            replica = self.model.cloneModule()
            out_sample = replica.forward(np.ascontiguousarray(xs[i][:1])).shape[1:]
            self.workers.append(_Worker(replica, self.weights, self.grad, rows, sample,
                                        out_sample, dtype))
        return self.workers

    batch_rows = 0

    def gradient(self, input, target, parts):
        """The loss of the batch; its gradient is added into the model's flat gradient
        (which holds zeros or what is to be accumulated). ``parts`` >= 2."""
        n = input.shape[0]
        self.batch_rows = max(self.batch_rows, n)
        bounds = [n * i // parts for i in range(parts + 1)]
        xs = [input[bounds[i]:bounds[i + 1]] for i in range(parts)]
        workers = self._ready(xs)
        solo = self._solo > 0
        if solo:
            self._solo -= 1
        here = []  # the parts that run on this process's copy of their replica
        for i, w in enumerate(workers):
            rows = len(xs[i + 1])
            w.weights[:] = self.weights
            w.x[:xs[i + 1].size].reshape(xs[i + 1].shape)[...] = xs[i + 1]
            w.ctrl[3] = rows
            if solo:
                here.append(w)
            else:
                w.post(_FORWARD, rows)
        saved = self.reader.propagateBack
        self.reader.propagateBack = False
        try:
            start = time.perf_counter()
            first = self.model.forward(xs[0])
            own = time.perf_counter() - start
            waited = 0.0
            for w in workers:
                if w in here:
                    w.forward()
                elif w.take_back():
                    here.append(w)
                    w.forward()
                else:
                    start = time.perf_counter()
                    w.wait()
                    waited += time.perf_counter() - start
            if not solo:
                self._late = self._late + 1 if waited > own else 0
                if self._late >= self.LATE:
                    self._late, self._solo = 0, self.SOLO
            out = self._output = resized(self._output, (n,) + first.shape[1:], -1,
                                         first.dtype)
            out[:bounds[1]] = first
            for i, w in enumerate(workers):
                out[bounds[i + 1]:bounds[i + 2]] = w.y[:out[bounds[i + 1]:bounds[i + 2]].size]\
                    .reshape(out[bounds[i + 1]:bounds[i + 2]].shape)
            loss = self.criterion.forward(out, target)
            go = self.criterion.backward(out, target)
            for i, w in enumerate(workers):
                part = go[bounds[i + 1]:bounds[i + 2]]
                w.gy[:part.size].reshape(part.shape)[...] = part
                if w not in here:
                    w.post(_BACKWARD, len(part))
            self.model.backward(xs[0], go[:bounds[1]])
            for w in workers:
                if w in here:
                    w.backward()
                else:
                    w.wait()
        except BaseException:
            self.close()
            raise
        finally:
            self.reader.propagateBack = saved
        for w in workers:
            K.add_and_clear(self.grad, w.grad)
        return loss

    def split(self, kernel, args):
        """``kernel(*args)`` in one call (the flat vectors are this process's own)."""
        kernel(*args)

    def close(self):
        """End the workers (they start again at the next batch)."""
        workers, self.workers = self.workers, []
        for w in workers:
            w.close()
