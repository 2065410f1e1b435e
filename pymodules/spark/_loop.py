"""One Spark stage for a whole training run: the tasks and the driver talk over a socket.

A Spark job per iteration costs a scheduling round trip (about 100 ms on a local master)
against a fraction of a millisecond of computation for a small model. ``GradientLoop``
instead starts ONE barrier-mode stage over the cached partitions for as long as training
runs: every task connects back to a socket server on the driver (bound to the driver's
host, ``spark.driver.host``), authenticates with a random token that travels in the task's
closure, and then serves batches: the driver sends (batch number, weights, extra
parameters) to every task and receives (gradient, loss, extra parameters) from each.

Frames are length-prefixed (``struct``); arrays travel as their raw little-endian bytes
with dtype and shape, and are read back with ``np.frombuffer``. Nothing read from a socket
is ever unpickled, and a frame longer than the peer can expect is refused.

Failures. The stage is a barrier stage followed by a shuffle, so Spark retries it as a
whole (``spark.stage.maxConsecutiveAttempts``) when a task fails or an executor is lost:
the new attempt's tasks connect again and the driver resends the batch under way to the
partitions whose result it still misses. A task's result is a function of (weights, seed,
partition, batch) only, so a retried batch gives the same gradient. A task that raises
sends its traceback to the driver before failing; when Spark gives up on the stage, the
driver raises ``TaskError`` with that text. Every wait is bounded (``CONNECT_TIMEOUT``,
``IO_TIMEOUT``, ``STOP_TIMEOUT``, the tasks' ``TASK_IDLE_TIMEOUT``).

Other jobs. The stage holds its task slots for as long as it runs, so another Spark job
would wait for them. The loop therefore stops its stage (``pause``) before every other
pymodules job (``pause_all``, called by evaluate/predict), and the loop's server thread
stops it by itself when the driver is between batches while a job outside the loop is
active (a user's job inside a trigger or a summary), or when no batch came for
``IDLE_PAUSE`` seconds. The next batch starts a new stage.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
import select
import socket
import struct
import threading
import time
import traceback
import weakref

import numpy as np

log = logging.getLogger("pymodules.spark")

#: Seconds for every task of a stage to connect (Spark may be waiting for executors).
CONNECT_TIMEOUT = 300.0
#: Seconds for one frame (or a connection's greeting) once it has begun.
IO_TIMEOUT = 60.0
#: Seconds for the stage to end once told to stop (then its job group is cancelled).
STOP_TIMEOUT = 60.0
#: Seconds without a batch after which the driver stops the stage (it restarts later).
IDLE_PAUSE = 120.0
#: Seconds a task waits for the driver's next frame before failing.
TASK_IDLE_TIMEOUT = 900.0
#: Seconds between two looks at Spark's active jobs while the driver is between batches.
WATCH_EVERY = 0.2

_HELLO, _BATCH, _RESULT, _ERROR, _STOP = 1, 2, 3, 4, 5
_HEADER = struct.Struct("<BQ")  # kind, length of the body
_HELLO_BODY = struct.Struct("<qq")  # partition, Spark's task attempt id
_TOKEN_BYTES = 32
_DTYPES = {b"f": np.dtype("<f4"), b"d": np.dtype("<f8")}
_GREETING_TIMEOUT = 10.0
_ERROR_TEXT = 64 * 1024  # bytes of a task's traceback sent to the driver


class TaskError(RuntimeError):
    """A training task failed on Spark, and Spark gave up retrying its stage."""


class BarrierRefused(RuntimeError):
    """Spark refused to run the training as a barrier stage (before any task ran)."""


# -- frames --------------------------------------------------------------------------------
def frame_bound(arrays) -> int:
    """The longest body a frame carrying ``arrays`` (and the batch's numbers) may have."""
    return 64 + sum(16 + 8 * np.ndim(a) + np.asarray(a).nbytes for a in arrays) + _ERROR_TEXT


def pack_arrays(arrays) -> list:
    """The encoding of a list of float32/float64 arrays: their count, then for each its
    dtype code, rank, shape and raw little-endian bytes."""
    parts = [struct.pack("<I", len(arrays))]
    for a in arrays:
        a = np.ascontiguousarray(a)
        code = a.dtype.char.encode()
        if code not in _DTYPES:
            raise TypeError(f"pymodules.spark: cannot send an array of dtype {a.dtype}")
        a = a.astype(_DTYPES[code], copy=False)
        parts.append(struct.pack(f"<cB{a.ndim}Q", code, a.ndim, *a.shape))
        parts.append(memoryview(a).cast("B"))
    return parts


def unpack_arrays(buf, offset: int):
    """(arrays, offset after them) read from ``buf`` at ``offset``: views, no copies."""
    try:
        return _unpack_arrays(buf, offset)
    except struct.error as e:
        raise ValueError("pymodules.spark: a frame is shorter than the arrays it "
                         "declares") from e


def _unpack_arrays(buf, offset):
    (count,) = struct.unpack_from("<I", buf, offset)
    offset += 4
    out = []
    for _ in range(count):
        code, ndim = struct.unpack_from("<cB", buf, offset)
        offset += 2
        shape = struct.unpack_from(f"<{ndim}Q", buf, offset)
        offset += 8 * ndim
        dtype = _DTYPES.get(code)
        if dtype is None:
            raise ValueError(f"pymodules.spark: a frame holds an array of dtype code {code!r}")
        n = int(np.prod(shape, dtype=np.int64))
        if offset + n * dtype.itemsize > len(buf):
            raise ValueError("pymodules.spark: a frame is shorter than the arrays it declares")
        out.append(np.frombuffer(buf, dtype, count=n, offset=offset).reshape(shape))
        offset += n * dtype.itemsize
    return out, offset


def _send(sock, kind: int, parts):
    body = b"".join(parts)
    sock.sendall(_HEADER.pack(kind, len(body)) + body)


def _recv_exact(sock, n: int):
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:], n - got)
        if k == 0:
            raise ConnectionError("pymodules.spark: the connection was closed")
        got += k
    return buf


def _read_frame(sock, bound: int, first_timeout=None):
    """(kind, body) of the next frame; the header may take ``first_timeout`` seconds, the
    body ``IO_TIMEOUT``; a body longer than ``bound`` bytes is refused."""
    sock.settimeout(first_timeout if first_timeout is not None else IO_TIMEOUT)
    head = _recv_exact(sock, _HEADER.size)
    sock.settimeout(IO_TIMEOUT)
    kind, n = _HEADER.unpack(head)
    if n > bound:
        raise ValueError(f"pymodules.spark: a frame of {n} bytes (at most {bound} expected)")
    return kind, _recv_exact(sock, n)


# -- the task side ---------------------------------------------------------------------------
def serve(address, token: bytes, partition: int, attempt: int, compute, bound: int):
    """Connect to the driver and serve batches until it says stop. ``compute(batch,
    arrays)`` returns (loss, arrays) for the arrays the driver sent. A failure of
    ``compute`` is sent to the driver, then raised (Spark then retries the stage)."""
    sock = socket.create_connection(address, timeout=IO_TIMEOUT)
    with sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        _send(sock, _HELLO, [token, _HELLO_BODY.pack(partition, attempt)])
        while True:
            try:
                kind, body = _read_frame(sock, bound, TASK_IDLE_TIMEOUT)
            except TimeoutError as e:
                raise TimeoutError(f"pymodules.spark: training task of partition {partition} "
                                   f"had no word from the driver for {TASK_IDLE_TIMEOUT} "
                                   f"seconds") from e
            if kind == _STOP:
                return
            if kind != _BATCH:
                raise ValueError(f"pymodules.spark: unexpected frame {kind} from the driver")
            seq, batch = struct.unpack_from("<qq", body, 0)
            arrays, _ = unpack_arrays(body, 16)
            try:
                loss, out = compute(batch, arrays)
            except BaseException:
                text = traceback.format_exc().encode("utf-8", "replace")[-_ERROR_TEXT:]
                try:
                    _send(sock, _ERROR, [struct.pack("<qq", seq, partition), text])
                except OSError:
                    pass
                raise
            _send(sock, _RESULT, [struct.pack("<qd", seq, float(loss)), *pack_arrays(out)])


# -- the driver side --------------------------------------------------------------------------
_LOOPS: weakref.WeakSet = weakref.WeakSet()


def pause_all():
    """Stop the stage of every running training loop of this driver (before another
    Spark job, which would otherwise wait for the task slots the stage holds)."""
    for loop in list(_LOOPS):
        loop.pause()


def _bind_address(sc):
    conf = sc.getConf()
    host = conf.get("spark.driver.host", None) or socket.gethostname()
    bind = conf.get("spark.driver.bindAddress", None) or host
    return bind, host


class _Conn:
    __slots__ = ("sock", "partition", "attempt", "since")

    def __init__(self, sock):
        self.sock, self.partition, self.attempt, self.since = sock, None, None, time.monotonic()


class GradientLoop:
    """The driver's end of the persistent training stage over ``data`` (an RDD of one
    item per partition). ``run_job(address, token)`` submits the stage and blocks until
    it ends (it is called on a thread of the loop's own). ``request(batch, arrays)``
    returns, in partition order, every partition's (loss, arrays) for that batch."""

    def __init__(self, sc, partitions: int, run_job, result_bound: int):
        self.sc = sc
        self.partitions = partitions
        self._run_job = run_job
        self._bound = result_bound
        self.token = secrets.token_bytes(_TOKEN_BYTES)
        self.group = f"pymodules-training-{secrets.token_hex(6)}"
        self.jobs = 0  # stages started (one unless paused)
        self._seq = 0  # requests made
        bind, host = _bind_address(sc)
        try:
            self._listener = socket.create_server((bind, 0), backlog=max(16, 2 * partitions))
        except OSError as e:  # a driver host that names no interface here (a proxy, NAT)
            log.info("pymodules.spark: cannot bind the training server to %s (%s); binding "
                     "to every interface", bind, e)
            self._listener = socket.create_server(("", 0), backlog=max(16, 2 * partitions))
        self.address = (host, self._listener.getsockname()[1])
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._cond = threading.Condition()
        # state shared with the server thread, under _cond
        self._conns: dict[int, _Conn] = {}
        self._pending: list[_Conn] = []
        self._request = None  # (batch, encoded frame parts)
        self._results: dict[int, tuple] = {}
        self._errors: dict[int, str] = {}
        self._stopping = True  # no stage yet
        self._greeted = False  # a task of the current stage connected
        self._closed = False
        self._server_error = None
        self._idle_since = time.monotonic()
        self._job_thread = None
        self._job_error = None
        self._server = threading.Thread(target=self._serve_forever, daemon=True,
                                        name="pymodules-spark-loop")
        self._server.start()
        _LOOPS.add(self)

    # -- the stage --------------------------------------------------------------------------
    def _job_alive(self):
        return self._job_thread is not None and self._job_thread.is_alive()

    def _job(self):
        try:
            self.sc.setJobGroup(self.group, "pymodules distributed training",
                                interruptOnCancel=True)
            self._run_job(self.address, self.token)
        except BaseException as e:  # noqa: BLE001 (handed to the driver's thread)
            self._job_error = e

    def _start(self):
        self._join_job()
        with self._cond:
            self._stopping = False
            self._greeted = False
            self._errors.clear()
        self._job_error = None
        self.jobs += 1
        self._job_thread = threading.Thread(target=self._job, daemon=True,
                                            name="pymodules-spark-stage")
        self._job_thread.start()

    def _join_job(self):
        t = self._job_thread
        if t is None:
            return
        t.join(STOP_TIMEOUT)
        if t.is_alive():
            log.warning("pymodules.spark: the training stage did not end %.0f s after being "
                        "told to stop; cancelling its job group", STOP_TIMEOUT)
            self.sc.cancelJobGroup(self.group)
            t.join(STOP_TIMEOUT)
        self._job_thread = None

    def pause(self):
        """Stop the stage (its tasks end and free their slots); the next request starts
        a new one."""
        if self._job_thread is None:
            return
        with self._cond:
            self._stopping = True
            self._request = None
        self._wake()
        self._join_job()

    def close(self):
        """Stop the stage, then the server; idempotent."""
        if self._closed:
            return
        try:
            self.pause()
        finally:
            with self._cond:
                self._closed = True
            self._wake()
            self._server.join(STOP_TIMEOUT)
            _LOOPS.discard(self)
            for s in (self._listener, self._wake_r, self._wake_w):
                s.close()

    # -- one batch ----------------------------------------------------------------------------
    def request(self, batch: int, arrays):
        """Every partition's (loss, arrays) for ``batch`` at the weights and extra
        parameters ``arrays``, in partition order."""
        self._seq += 1
        seq = self._seq
        parts = [struct.pack("<qq", seq, batch), *pack_arrays(arrays)]
        if not self._job_alive():
            self._start()
        with self._cond:
            self._results = {}
            self._request = (seq, parts)
        self._wake()
        waiting = time.monotonic()
        while True:
            with self._cond:
                if len(self._results) == self.partitions:
                    self._request = None
                    self._idle_since = time.monotonic()
                    return [self._results[p] for p in range(self.partitions)]
                self._cond.wait(0.5)
                connected = len(self._conns) == self.partitions
                stopping = self._stopping
            if self._server_error is not None:
                raise RuntimeError("pymodules.spark: the training loop's server failed") \
                    from self._server_error
            if not self._job_alive():
                self._job_thread = None
                if self._job_error is not None:
                    self._fail(batch)
                if stopping or len(self._results) < self.partitions:
                    # the stage ended (paused by the server thread, or its tasks timed
                    # out): a new one takes the batch
                    self._start()
                    with self._cond:
                        self._request = (seq, parts)
                    self._wake()
                    waiting = time.monotonic()
            if connected:
                waiting = time.monotonic()
            elif time.monotonic() - waiting > CONNECT_TIMEOUT:
                self.sc.cancelJobGroup(self.group)
                raise TimeoutError(
                    f"pymodules.spark: the {self.partitions} training tasks did not all "
                    f"connect to the driver ({self.address[0]}:{self.address[1]}) within "
                    f"{CONNECT_TIMEOUT:.0f} s; check that the executors can reach the driver "
                    f"host (spark.driver.host)")

    def _fail(self, batch):
        error, self._job_error = self._job_error, None
        with self._cond:
            texts = dict(self._errors)
            greeted = self._greeted
        if not greeted and "barrier execution mode" in str(error).lower():
            raise BarrierRefused(str(error).strip().splitlines()[0][:500]) from error
        if texts:
            p = min(texts)
            raise TaskError(f"pymodules.spark: the training task of partition {p} failed on "
                            f"batch {batch} (Spark retried its stage and gave up):\n"
                            f"{texts[p].rstrip()}") from error
        raise error

    # -- the server thread ---------------------------------------------------------------------
    def _wake(self):
        try:
            self._wake_w.send(b"x")
        except (BlockingIOError, OSError):
            pass

    def _serve_forever(self):
        try:
            self._serve()
        except BaseException as e:  # noqa: BLE001 (reported to the driver's thread)
            self._server_error = e
        finally:
            with self._cond:
                for c in [*self._conns.values(), *self._pending]:
                    c.sock.close()
                self._conns.clear()
                self._pending.clear()
                self._cond.notify_all()

    def _serve(self):
        sent = {}  # partition -> batch sent to its current connection
        last_watch = 0.0
        while True:
            with self._cond:
                if self._closed:
                    return
                conns = list(self._conns.values())
                pending = list(self._pending)
            readable, _, _ = select.select(
                [self._listener, self._wake_r, *[c.sock for c in pending],
                 *[c.sock for c in conns]], [], [], 0.5)
            if self._wake_r in readable:
                try:
                    while self._wake_r.recv(4096):
                        pass
                except BlockingIOError:
                    pass
            if self._listener in readable:
                sock, _ = self._listener.accept()
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                with self._cond:
                    self._pending.append(_Conn(sock))
            for c in pending:
                if c.sock in readable:
                    self._greet(c, sent)
                elif time.monotonic() - c.since > IO_TIMEOUT:
                    self._drop_pending(c)
            for c in conns:
                if c.sock in readable:
                    self._receive(c, sent)
            with self._cond:
                stopping, request = self._stopping, self._request
                targets = list(self._conns.values())
            if stopping:
                for c in targets:
                    self._stop_conn(c)
                sent.clear()
            elif request is not None:
                seq, parts = request
                with self._cond:
                    missing = [c for c in targets if c.partition not in self._results]
                for c in missing:
                    if sent.get(c.partition) != seq:
                        sent[c.partition] = seq
                        self._send_or_drop(c, _BATCH, parts)
            else:
                now = time.monotonic()
                if now - last_watch > WATCH_EVERY:
                    last_watch = now
                    self._watch(now)

    def _watch(self, now):
        """Between batches: stop the stage when another job waits, or after IDLE_PAUSE."""
        with self._cond:
            idle = now - self._idle_since
        if idle < WATCH_EVERY:
            return
        why = None
        if idle > IDLE_PAUSE:
            why = f"no batch for {IDLE_PAUSE:.0f} s"
        else:
            try:
                tracker = self.sc.statusTracker()
                active = set(tracker.getActiveJobsIds())
                others = active - set(tracker.getJobIdsForGroup(self.group))
            except Exception as e:  # noqa: BLE001 (the context is stopping: look again later)
                log.debug("pymodules.spark: no look at Spark's jobs: %s", e)
                others = ()
            if others:
                why = "another Spark job is running"
        if why is not None:
            log.info("pymodules.spark: stopping the training stage (%s); the next batch "
                     "starts a new one", why)
            with self._cond:
                if self._request is None:
                    self._stopping = True

    def _greet(self, c, sent):
        with self._cond:
            self._pending.remove(c)
        try:
            c.sock.settimeout(_GREETING_TIMEOUT)
            hello = _recv_exact(c.sock, _HEADER.size + _TOKEN_BYTES + _HELLO_BODY.size)
            kind, n = _HEADER.unpack_from(hello, 0)
            token = bytes(hello[_HEADER.size:_HEADER.size + _TOKEN_BYTES])
            if (kind != _HELLO or n != _TOKEN_BYTES + _HELLO_BODY.size
                    or not hmac.compare_digest(token, self.token)):
                raise ConnectionError("pymodules.spark: a connection without the token")
            partition, attempt = _HELLO_BODY.unpack_from(hello, _HEADER.size + _TOKEN_BYTES)
            if not 0 <= partition < self.partitions:
                raise ConnectionError(f"pymodules.spark: partition {partition} out of range")
        except (OSError, ValueError, struct.error) as e:
            log.debug("pymodules.spark: refused a connection: %s", e)
            c.sock.close()
            return
        c.partition, c.attempt = partition, attempt
        with self._cond:
            old = self._conns.get(partition)
            stopping = self._stopping
            if old is not None and old.attempt > attempt:  # a late task of an older attempt
                stale = c
            else:
                stale = old
                self._conns[partition] = c
                self._greeted = True
                sent.pop(partition, None)
        if stale is not None:
            self._stop_conn(stale)
        if stopping and stale is not c:
            self._stop_conn(c)

    def _stop_conn(self, c):
        try:
            c.sock.settimeout(IO_TIMEOUT)
            _send(c.sock, _STOP, [])
        except OSError:
            pass
        self._close_conn(c)

    def _drop_pending(self, c):
        with self._cond:
            if c in self._pending:
                self._pending.remove(c)
        c.sock.close()

    def _close_conn(self, c):
        with self._cond:
            if self._conns.get(c.partition) is c:
                del self._conns[c.partition]
        c.sock.close()

    def _send_or_drop(self, c, kind, parts):
        try:
            c.sock.settimeout(IO_TIMEOUT)
            _send(c.sock, kind, parts)
        except OSError as e:
            log.debug("pymodules.spark: lost the task of partition %s: %s", c.partition, e)
            self._close_conn(c)

    def _receive(self, c, sent):
        try:
            kind, body = _read_frame(c.sock, self._bound)
            if kind == _RESULT:
                seq, loss = struct.unpack_from("<qd", body, 0)
                arrays, _ = unpack_arrays(body, 16)
            elif kind == _ERROR:
                text = bytes(body[16:]).decode("utf-8", "replace")
            else:
                raise ValueError(f"pymodules.spark: unexpected frame {kind} from a task")
        except (OSError, ValueError, struct.error) as e:
            # the task ended (Spark is retrying its stage, or the stage was stopped)
            log.debug("pymodules.spark: the task of partition %s is gone: %s", c.partition, e)
            sent.pop(c.partition, None)
            self._close_conn(c)
            return
        with self._cond:
            if kind == _ERROR:
                self._errors[c.partition] = text
                return
            if self._request is not None and self._request[0] == seq:
                self._results[c.partition] = (loss, arrays)
                if len(self._results) == self.partitions:
                    self._cond.notify_all()


def task_attempt():
    """Spark's id of the running task attempt (increasing across stage attempts)."""
    from pyspark import TaskContext

    ctx = TaskContext.get()
    return int(ctx.taskAttemptId()) if ctx is not None else os.getpid()
