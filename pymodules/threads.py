"""Threads: how many the engine may use, and when training, evaluate and predict use them.

``setNumThreads(n)`` / ``getNumThreads()`` set and read the threads of this process; the
default is the cores available to it. ``setNumThreads`` sets every BLAS library loaded in the
process (scipy's OpenBLAS, which the engine calls, and numpy's, through threadpoolctl) and the
engine's own threads (pymodules.engine.pool), which then take only the kernels that call no
BLAS (Linear's packed forward): a forward or backward called by hand runs its products on
OpenBLAS's threads.

Inside a run of steps (the Optimizer, evaluate, predict, a Spark task) the rule below picks
one thread or ``getNumThreads()`` for each step (``use_threads``). Several threads there are
the engine's own: each large product (from 2^18 multiply-adds) is cut in as many parts, one
BLAS call on one thread each, and the calling thread takes parts itself, so a worker that
another process keeps off its core does not hold the product up unless it began a part. On
the 2-core AMD EPYC (OpenBLAS 0.3.30 Haswell kernels) the MLP 784-256-256-10's training step
went from 1.47-1.57 to 1.06 ms at batch 64 and from 5.35-5.60 to 4.08-4.36 ms at batch 256
(bench/bench_train.py), where OpenBLAS's own two threads gave 1.7-1.8 ms and 3.8-4.1 ms.

A batch of evaluate or predict runs on one thread unless it is long (``PARALLEL_STEP``).
When other processes keep the cores busy, a thread may wait a whole scheduler time slice
(milliseconds) before it runs: the MLP at batch 64 once took 117 ms a step on OpenBLAS's two
threads against two busy processes on two cores (1.6 ms quiet), and 1.1-1.4 ms on one thread
either way. A batch of 0.1 s or more on one thread hides such waits (measured: two threads
against two busy processes within 1.1x of one thread at 0.1 s, 2x faster at 0.34 s); the rule
then times both counts on the run's own batches and keeps the faster.

Once ``setNumThreads`` was called, a training step of 0.2 ms or more
(``PARALLEL_TRAIN_STEP``) is timed on both counts too (never called, training keeps the
0.1 s rule: a product cut in parts may round its last bits otherwise than whole, and the
timed choice would make two runs of one seed differ). A run of steps is long enough to
watch: one step on threads slower than twice one thread's median sends the run back to one
thread, and threads are timed again after 64 steps, then 128, ... (``StepThreads``), so a
busy machine costs one slow step now and then rather than every step.
"""

from __future__ import annotations

import os
import threading
import time

import numpy as np

#: A batch of evaluate or predict that takes at least this long (seconds) on one thread
#: is timed on getNumThreads() threads; shorter ones run on one (see the module's
#: documentation).
PARALLEL_STEP = 0.1
#: The same for a training step once ``setNumThreads`` was called: a run of steps is long,
#: so that timing threads costs a few steps once, and its steps are watched
#: (``StepThreads``). A time, not a size, so it depends on the core: the MLP
#: 784-256-256-10's step at batch 64 takes 1.3 ms on a Zen 3 core and 0.75 ms on a Zen 5
#: one, and two engine threads make it 1.3x and 1.7-1.8x faster (bench/bench_train.py).
PARALLEL_TRAIN_STEP = 0.0002

_lock = threading.Lock()
_state = {"threads": None, "libraries": None, "getters": None}


def available_cores() -> int:
    """The cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _libraries():
    """threadpoolctl's controllers of the BLAS libraries loaded in this process."""
    libs = _state["libraries"]
    if libs is None:
        import scipy.linalg.cython_blas  # noqa: F401 (the engine's BLAS, loaded first)
        from threadpoolctl import ThreadpoolController

        libs = _state["libraries"] = [
            lib for lib in ThreadpoolController().lib_controllers if lib.user_api == "blas"]
    return libs


def _set_blas(n: int) -> None:
    """Set every BLAS library of the process to ``n`` threads (those already there are left
    alone)."""
    with _lock:
        for lib in _libraries():
            if lib.get_num_threads() != n:
                lib.set_num_threads(n)


def use_threads(n: int) -> None:
    """Run the engine's products on ``n`` threads now: the engine's own threads
    (pymodules.engine.pool) share each large product, and the BLAS runs each call on one
    thread. The Optimizer's size rule and Spark's tasks call this around their work."""
    n = int(n)
    _set_blas(1)
    _pool().set_threads(n, 1)


def _pool():
    from pymodules.engine import pool

    return pool


def _getters():
    """A function per BLAS library returning the threads it is set to use: OpenBLAS's own
    C function where threadpoolctl finds it (0.1 us a call, against 0.5 us through the
    controller, which looks the symbol up at every call), else the controller's method."""
    getters = _state.get("getters")
    if getters is None:
        getters = []
        for lib in _libraries():
            find = getattr(lib, "_get_symbol", None)
            direct = None
            if callable(find) and getattr(lib, "internal_api", None) == "openblas" and \
                    getattr(lib, "threading_layer", None) != "openmp":
                direct = find("openblas_get_num_threads")
            getters.append(direct if direct is not None else lib.get_num_threads)
        _state["getters"] = getters
    return getters


def blas_threads() -> list[int]:
    """The threads each BLAS library of the process is set to use now."""
    with _lock:
        return [get() for get in _getters()]


def _restore(counts, engine):
    """Give the BLAS libraries their thread counts back, and the engine's pool its
    ``(threads, cuts BLAS products)`` setting."""
    with _lock:
        for lib, n in zip(_libraries(), counts, strict=False):
            if lib.get_num_threads() != n:
                lib.set_num_threads(n)
    parts, split = engine  # as pool.get_threads() gave them
    _pool().set_threads(parts, 1 if split else 2)


def setNumThreads(n) -> None:
    """Use at most ``n`` threads in this process, the BLAS's and the engine's own
    (``pm.setNumThreads``)."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"setNumThreads: n must be a positive int, got {n!r}")
    _state["threads"] = int(n)
    _set_blas(int(n))
    # Calls outside a run (forward and backward by hand) keep the BLAS's own threads; the
    # engine's threads take only kernels that call no BLAS (Linear's packed forward).
    _pool().set_threads(int(n), int(n))


def getNumThreads() -> int:
    """The BLAS threads this process may use: what ``setNumThreads`` set, else the cores
    available to the process. (A BLAS limited further, by ``OPENBLAS_NUM_THREADS`` or
    threadpoolctl, keeps its limit: runs of steps never raise it.)"""
    n = _state["threads"]
    return available_cores() if n is None else n


def task_cpus() -> int:
    """The cores of the running Spark task (``spark.task.cpus``, 1 by default), or 1."""
    from pyspark import TaskContext

    ctx = TaskContext.get()
    if ctx is None:
        return 1
    try:
        return max(1, int(ctx.cpus()))
    except (AttributeError, TypeError, ValueError):
        return max(1, int(ctx.getLocalProperty("spark.task.cpus") or 1))


class StepThreads:
    """The size rule of one run of steps (training, evaluate, predict). Steps run on one
    thread; once ``TIMED`` of them are timed (after one to warm up), a run whose steps take
    at least ``least`` (``PARALLEL_TRAIN_STEP`` for training, ``PARALLEL_STEP`` otherwise)
    times ``TIMED`` steps on ``getNumThreads()`` threads (or fewer when the BLAS was limited
    further, e.g. by threadpoolctl) and keeps the faster.

    Threads are kept when they take at most ``WIN`` of one thread's time. The choice is
    watched: a step on threads that takes ``SLOW`` times one thread's median (other
    processes took the cores) sends the run back to one thread at once, and so does a
    timing of threads that loses; threads are timed again after ``RETRY`` steps, then after
    twice as many each time they lose (at most ``RETRY_MOST``), so that a busy machine costs
    one slow step now and then. ``before()`` before a step, ``after(seconds)`` with its time;
    ``close()`` gives the BLAS back the threads it had."""

    #: steps timed for each choice (the first of them warms up and is left out)
    TIMED = 3
    #: threads are kept when their median step is at most this part of one thread's (a
    #: smaller gain is within the noise of three steps)
    WIN = 0.9
    #: a step on threads this many times slower than one thread's median ends their use
    SLOW = 2.0
    #: steps on one thread before threads are timed again, and the most it grows to
    RETRY, RETRY_MOST = 64, 4096
    #: one thread's recent step times kept for its median
    KEPT = 9

    def __init__(self, training: bool = False):
        self.saved = blas_threads()
        self.saved_engine = _pool().get_threads()
        self.most = min(getNumThreads(), max(self.saved, default=1))
        # Training asks threads from 0.2 ms on when setNumThreads was called: OpenBLAS on
        # two threads may round a product's last bits otherwise than on one, so a timed
        # choice makes runs of one seed differ; by default they stay bit for bit the same.
        chosen = _state["threads"] is not None
        self.least = PARALLEL_TRAIN_STEP if training and chosen else PARALLEL_STEP
        self.now = 1
        self.times = {1: [], self.most: []}
        self.decided = self.most == 1
        self.steps = 0
        self.retry_at = None  # the step at which threads are timed again
        self.wait = self.RETRY

    def before(self):
        use_threads(self.now)

    def _one(self) -> float:
        return float(np.median(self.times[1][1:]))

    def _back_to_one(self):
        self.now, self.decided = 1, True
        self.retry_at = self.steps + self.wait
        self.wait = min(2 * self.wait, self.RETRY_MOST)

    def after(self, seconds):
        self.steps += 1
        if self.most == 1:
            return
        if self.now == 1:
            times = self.times[1]
            times.append(seconds)
            if len(times) > self.KEPT + 1:
                del times[1]  # the first (warm-up) step stays out of the median
            if self.decided:
                if self.retry_at is not None and self.steps >= self.retry_at:
                    self.now, self.decided, self.times[self.most] = self.most, False, []
                return
            if len(times) <= self.TIMED:
                return
            if self._one() < self.least:
                self.decided = True  # short steps: threads cannot pay (module documentation)
                return
            self.now, self.times[self.most] = self.most, []
            return
        if seconds > self.SLOW * self._one():
            self._back_to_one()  # the cores are busy elsewhere: one slow step is enough
            return
        if self.decided:
            return
        times = self.times[self.now]
        times.append(seconds)
        if len(times) == self.TIMED:
            # The first step on threads wakes them and fills their caches: it is left out,
            # as one thread's first step is.
            if float(np.median(times[1:])) >= self.WIN * self._one():
                self._back_to_one()
            else:
                self.decided, self.wait = True, self.RETRY

    def run(self, f, *args):
        """``f(*args)`` as one step under the rule."""
        self.before()
        start = time.perf_counter()
        result = f(*args)
        self.after(time.perf_counter() - start)
        return result

    def close(self):
        _restore(self.saved, self.saved_engine)
