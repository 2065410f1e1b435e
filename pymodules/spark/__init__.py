"""Spark: evaluate, predict and data-parallel training over pyspark RDDs of Sample.

``import pymodules`` never imports this module; ``Module.evaluate``/``predict``/
``predictClass`` and the ``Optimizer`` come here when handed an RDD (``pip install
'pymodules[spark]'``). Spark does all the scheduling, retrying and data movement.

The model travels as its persistence file (definition and weights, ``Module.save``): the
bytes are broadcast once per call and each Python worker rebuilds the module with
``pymodules.load`` once per broadcast, keeping it for the next tasks. Modules are never
pickled. Validation methods and criteria are plain objects and travel with the tasks.

Training (``DistributedGradient``, the gradient source of the Optimizer for an RDD) is
synchronous data parallelism: for every batch each of the P partitions computes the
gradient of its ``batchSize / P`` records at the driver's current weights, the driver sums
the partitions' gradients in partition order, and the optimisation method steps on the
driver. One Spark stage serves a whole ``optimize()`` run: a barrier stage over the cached
partitions whose P tasks keep the model and their partition's arrays, connect back to a
socket server on the driver (authenticated by a random token in the tasks' closure), and
receive each batch's weights as raw bytes over it, returning gradients the same way
(``pymodules.spark._loop``). Spark still schedules, caches and retries: a failed task or a
lost executor makes Spark rerun the stage, whose new tasks connect and get the batch under
way again. Where a barrier stage cannot run (more partitions than task slots, dynamic
allocation, an RDD that Spark refuses in a barrier stage) each batch is one Spark job
(``mapPartitions`` then ``treeReduce``), with the same results.

The stage holds its task slots while training runs. evaluate and predict stop it first
(it starts again at the next batch), and so does ``pause_training()``; a Spark job of the
user's own inside a trigger or a summary needs nothing: while the driver is between
batches, the training loop sees the other job active and stops the stage within a fraction
of a second. (A job started by another thread of the driver while a batch is under way
waits for that batch to end.)

Data order. Partition p (of ``n_p`` records) reads its records as an endless stream of
passes; pass e is the permutation ``order(seed, p, e, n_p)`` of its records (NumPy's
``default_rng([seed, p, e])``), and batch i takes the stream's records
``i * b .. (i + 1) * b - 1`` (``b = batchSize / P``). The global batch i is partition 0's
share, then partition 1's, and so on. ``seed`` is drawn from a stream of its own
(``pymodules.random.Stream``) when the Optimizer is built (``pm.setSeed`` makes a run
reproducible, whatever else runs). An epoch ends with the batch that brings the records
seen in it to the size of the dataset (BigDL's rule), so when every partition holds the
same multiple of ``b`` records, epoch e is exactly pass e of every partition. Every task is
a function of (weights, batch index, partition): a retried task recomputes the same
gradient, and the run ends with the same weights.
"""

from __future__ import annotations

import collections
import functools
import logging
import os
import secrets
import tempfile

import numpy as np

from pymodules import random as _random
from pymodules.data import each, rows, samples_arrays
from pymodules.spark import _loop
from pymodules.validation import validation_methods

log = logging.getLogger("pymodules.spark")

#: Stop the Spark stage of any training under way on this driver, freeing its task slots
#: for another job (the training starts a new stage at its next batch).
pause_training = _loop.pause_all

# -- the model on the executors --------------------------------------------------------
#: Modules rebuilt in this Python worker, by broadcast key (the most recent few).
_MODULES: collections.OrderedDict = collections.OrderedDict()
_KEEP = 4


def module_bytes(module) -> bytes:
    """The persistence file of ``module`` (definition, names, mode, weights) as bytes."""
    with tempfile.TemporaryDirectory(prefix="pymodules-") as folder:
        path = os.path.join(folder, "model")
        module.save(path)
        with open(path, "rb") as f:
            return f.read()


def module_from_bytes(data: bytes):
    """The module whose persistence file is ``data``."""
    from pymodules.persistence import load

    with tempfile.TemporaryDirectory(prefix="pymodules-") as folder:
        path = os.path.join(folder, "model")
        with open(path, "wb") as f:
            f.write(data)
        return load(path)


class _Shipped:
    """A module broadcast as its file; ``get()`` on an executor rebuilds it once per
    Python worker. Only the broadcast handle and a key are pickled with the tasks."""

    def __init__(self, sc, module):
        self.key = secrets.token_hex(8)
        self.broadcast = sc.broadcast(module_bytes(module))

    def get(self, prepare=None):
        """The rebuilt module (``prepare(module)`` runs once, after loading: it returns
        what is cached, e.g. the module with its flat parameter views)."""
        item = _MODULES.get(self.key)
        if item is None:
            module = module_from_bytes(self.broadcast.value)
            item = _MODULES[self.key] = module if prepare is None else prepare(module)
            while len(_MODULES) > _KEEP:
                _MODULES.popitem(last=False)
        else:
            _MODULES.move_to_end(self.key)
        return item

    def release(self):
        self.broadcast.unpersist(blocking=False)


# -- batches of a partition ------------------------------------------------------------
def _per_partition(batchSize, partitions: int) -> int:
    """Records per partition in one batch of evaluate/predict (default total: 4 per
    partition)."""
    total = 4 * partitions if batchSize is None else batchSize
    if not isinstance(total, (int, np.integer)) or total <= 0:
        raise ValueError(f"batchSize must be a positive int, got {batchSize!r}")
    return max(1, -(-int(total) // partitions))


def _arrays(records, dtype, what, need_labels):
    """(features, labels) stacked from a list of records (Sample or (features, label)),
    each one array or a list of arrays (one per input or target)."""
    return samples_arrays(records, what, dtype, need_labels)


def _chunks(records, size):
    chunk = []
    for r in records:
        chunk.append(r)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


# -- evaluate and predict ----------------------------------------------------------------
def _eval_mode(module):
    return module.evaluate()


def _task_threads():
    """BLAS threads of this task: ``spark.task.cpus`` (1 by default), so that the tasks
    of an executor never oversubscribe its cores."""
    from pymodules import threads

    threads.use_threads(threads.task_cpus())


def _evaluate_partition(records, shipped, methods, per):
    _task_threads()
    model = shipped.get(_eval_mode)
    results = [None] * len(methods)
    for chunk in _chunks(records, per):
        x, y = _arrays(chunk, model.dtype, "evaluate", need_labels=True)
        out = model.forward(x)
        for i, m in enumerate(methods):
            r = m(out, y)
            results[i] = r if results[i] is None else results[i] + r
    yield results


def _sum_results(a, b):
    return [y if x is None else x if y is None else x + y for x, y in zip(a, b, strict=True)]


def evaluate(module, rdd, vMethods, batchSize=None):
    """Eval mode, then every method over an RDD of Sample: [(result, method), ...].
    Each partition evaluates its records in batches of ``batchSize / partitions``."""
    methods = validation_methods(vMethods)
    per = _per_partition(batchSize, rdd.getNumPartitions())
    _loop.pause_all()
    module.evaluate()
    shipped = _Shipped(rdd.context, module)
    try:
        job = functools.partial(_evaluate_partition, shipped=shipped, methods=methods, per=per)
        results = rdd.mapPartitions(job).treeReduce(_sum_results)
    finally:
        shipped.release()
    if any(r is None for r in results):
        raise ValueError("evaluate: the RDD is empty")
    return list(zip(results, methods, strict=True))


def _predict_partition(records, shipped, per):
    _task_threads()
    model = shipped.get(_eval_mode)
    for chunk in _chunks(records, per):
        x, _ = _arrays(chunk, model.dtype, "predict", need_labels=False)
        out = model.forward(x)
        if isinstance(out, list):
            for j in range(len(chunk)):
                yield [np.array(o[j]) for o in out]
            continue
        if out.ndim == 1 and len(chunk) == 1:  # a module that drops a batch of one's axis
            out = out.reshape(1, -1)
        if out.ndim == 0 or len(out) != len(chunk):
            raise ValueError(f"predict: {model} returned shape {out.shape} for a batch of "
                             f"{len(chunk)}")
        yield from np.array(out)  # a copy: the module reuses its output


def predict(module, rdd, batchSize=None):
    """Eval mode; an RDD of the output of every sample, in the order (and partitioning)
    of ``rdd``, so that ``rdd.zip(result)`` pairs each sample with its output. Lazy like
    every RDD: the model's weights are those at this call."""
    per = _per_partition(batchSize, rdd.getNumPartitions())
    _loop.pause_all()
    module.evaluate()
    # The broadcast stays for as long as the result may be recomputed; Spark frees it
    # once the result is garbage.
    shipped = _Shipped(rdd.context, module)
    job = functools.partial(_predict_partition, shipped=shipped, per=per)
    return rdd.mapPartitions(job, preservesPartitioning=True)


def _argmax(out):
    if isinstance(out, list):
        raise ValueError("predictClass: the module has several outputs")
    return int(np.argmax(out))


def predict_class(module, rdd, batchSize=None):
    """Eval mode; an RDD of the 0-based arg-max class (int) of every sample, in order."""
    return predict(module, rdd, batchSize).map(_argmax, preservesPartitioning=True)


# -- training ----------------------------------------------------------------------------
def order(seed: int, partition: int, epoch: int, n: int) -> np.ndarray:
    """Pass ``epoch`` of partition ``partition`` (``n`` records): the permutation in which
    distributed training reads them (see the module's documentation)."""
    return np.random.default_rng([seed, partition, epoch]).permutation(n)


def batch_indices(seed: int, partition: int, n: int, batch: int, size: int) -> np.ndarray:
    """Positions in partition ``partition`` (``n`` records) of its ``size`` records of
    batch number ``batch`` (0-based)."""
    k = np.arange(batch * size, (batch + 1) * size)
    passes = k // n
    out = np.empty(size, np.int64)
    for e in np.unique(passes):
        at = passes == e
        out[at] = order(seed, partition, int(e), n)[k[at] % n]
    return out


def _partition_arrays(index, records, dtype):
    records = list(records)
    if not records:
        yield index, None, None
        return
    x, y = _arrays(records, dtype, f"Optimizer training set, partition {index}",
                   need_labels=True)
    yield index, x, y


def _size(item):
    return 0 if item[1] is None else rows(item[1])


def _train_mode(module):
    from pymodules.optim.optimizer import data_reader

    module.training()
    weights, grads = module.getParameters()
    return module, weights, grads, data_reader(module)


def _take(value, idx):
    """Rows ``idx`` of one array or of each of several."""
    return each(lambda a: np.take(a, idx, axis=0), value)


def _gradient(trained, criterion, weights, extra, index, x, y, batch, size, seed):
    """(loss, gradient, extra parameters) of partition ``index``'s share of batch
    ``batch`` at ``weights``: a function of these arguments only (the gradient and the
    extra parameters are the module's own buffers)."""
    from pymodules.optim.optimizer import batch_gradient

    model, w, g, reader = trained
    w[...] = weights
    if extra:
        model.setExtraParameter(extra)
    idx = batch_indices(seed, index, rows(x), batch, size)
    xb, yb = _take(x, idx), _take(y, idx)
    # dropout and the like draw the same numbers when Spark retries this task
    _random.setSeed(int(np.random.SeedSequence([seed, index, batch]).generate_state(1)[0]))
    loss = batch_gradient(model, criterion, reader, xb, yb, g)
    return float(loss), g, model.getExtraParameter()


def _partition_gradient(items, shipped, criterion, weights, extra, batch, size, seed):
    """One batch, one Spark job (the path where a barrier stage cannot run)."""
    _task_threads()
    for index, x, y in items:
        loss, g, ext = _gradient(shipped.get(_train_mode), criterion, weights, extra, index,
                                 x, y, batch, size, seed)
        yield np.array(g), loss, [np.array(e) for e in ext]


def _training_task(items, address, token, shipped, criterion, size, seed, bound):
    """A task of the persistent training stage: serve the driver's batches over a
    socket until it says stop (``_loop.serve``)."""
    from pymodules.spark import _loop

    _task_threads()
    items = list(items)  # consume the input: PySpark reuses the Python worker only then
    for index, x, y in items:
        trained = shipped.get(_train_mode)

        def compute(batch, arrays, index=index, x=x, y=y, trained=trained):
            weights, *extra = arrays
            loss, g, ext = _gradient(trained, criterion, weights, extra, index, x, y, batch,
                                     size, seed)
            return loss, [g, *ext]

        _loop.serve(address, token, index, _loop.task_attempt(), compute, bound)
    yield len(items)


def _sum_gradients(a, b):
    return a[0] + b[0], a[1] + b[1], [p + q for p, q in zip(a[2], b[2], strict=True)]


class DistributedGradient:
    """The Optimizer's gradient source for an RDD of Sample: every batch, each partition
    computes the gradient of its ``batchSize / partitions`` records (the data order is in
    the module's documentation) and the driver sums them in partition order. Each
    ``optimize()`` run trains in one barrier stage whose tasks get the weights over a
    socket (``mode`` is then "one stage"), or, where Spark cannot run that stage or
    ``persistent`` is False, in a Spark job per batch ("job per iteration"); the results
    are the same. With a criterion that averages over
    the batch (``sizeAverage``, the default) the sum is divided by the partition count, so
    the result is the gradient of the whole batch, as the local Optimizer computes it.

    Non-trainable state (BatchNormalization's running statistics) goes to the tasks with
    the weights; each partition updates it from its share of the batch, and the driver's
    model takes the mean over the partitions. (A running mean is then what local training
    computes on the same batches; batch normalisation itself sees each partition's share
    only, as in BigDL.)"""

    #: Train in one barrier stage for the whole run when Spark can (False: a Spark job
    #: per iteration, always).
    persistent = True

    def __init__(self, rdd, batchSize):
        self.rdd = rdd
        self.partitions = p = rdd.getNumPartitions()
        if batchSize % p:
            raise ValueError(
                f"Optimizer: batchSize {batchSize} is not a positive multiple of the {p} "
                f"partitions of the training RDD: each partition computes batchSize / {p} "
                f"records of every batch; use a multiple of {p} or repartition the RDD")
        self.batchSize = batchSize
        self.perPartition = batchSize // p
        self.seed = int(_random.Stream().generator.integers(2**62))
        self.mode = None  # "one stage" or "job per iteration", once started
        self.stages = 0  # barrier stages of the last optimize() run
        self._loop = None
        self._data = None
        self._dtype = None
        self._sizes = None
        self._batch = 0  # batches taken by this source
        self._records = 0  # records seen in the current epoch

    def size(self):
        """Records in one epoch (None before the data is converted)."""
        return None if self._sizes is None else int(sum(self._sizes))

    def _convert(self, dtype):
        """The partitions as (index, features, labels), converted once and cached."""
        if self._data is not None and self._dtype == dtype:
            return
        if self._data is not None:
            self._data.unpersist()
        job = functools.partial(_partition_arrays, dtype=dtype)
        data = self.rdd.mapPartitionsWithIndex(job, preservesPartitioning=True).cache()
        sizes = data.map(_size).collect()
        empty = [i for i, n in enumerate(sizes) if n == 0]
        if empty:
            data.unpersist()
            raise ValueError(
                f"Optimizer: partition(s) {empty} of the training RDD are empty (records per "
                f"partition: {sizes}); every partition computes its share of each batch: "
                f"repartition the RDD or use fewer partitions")
        self._data, self._dtype, self._sizes = data, dtype, sizes

    def start(self, model, criterion):
        _loop.pause_all()
        self._convert(model.dtype)
        self.criterion = criterion
        self._shipped = _Shipped(self._data.context, model)
        self._model = model
        self._grad = model.getParameters()[1]
        self._average = bool(getattr(criterion, "sizeAverage", True))
        self._loop = None
        self.stages = 0
        why = self._no_barrier() if self.persistent else "persistent is False"
        if why is None:
            bound = _loop.frame_bound([self._grad, *model.getExtraParameter()])
            self._loop = _loop.GradientLoop(self._data.context, self.partitions,
                                            functools.partial(self._run_stage, bound=bound),
                                            bound)
        else:
            log.info("pymodules.spark: a Spark job per training iteration (%s)", why)
        self.mode = "job per iteration" if self._loop is None else "one stage"

    def _no_barrier(self):
        """Why one barrier stage cannot run the training here (None: it can)."""
        sc = self._data.context
        conf = sc.getConf()
        if conf.get("spark.dynamicAllocation.enabled", "false").lower() == "true":
            return "dynamic allocation is enabled"
        try:
            jsc = sc._jsc.sc()
            slots = int(jsc.maxNumConcurrentTasks(
                jsc.resourceProfileManager().defaultResourceProfile()))
        except Exception as e:  # noqa: BLE001 (a Spark without this call)
            return f"the task slots are unknown ({type(e).__name__})"
        if slots < self.partitions:
            return f"{self.partitions} partitions and {slots} task slots"
        return None

    def _run_stage(self, address, token, bound):
        """The persistent stage: a barrier stage over the cached partitions, then a
        shuffle, so that Spark retries it as a whole when a task fails."""
        job = functools.partial(_training_task, address=address, token=token,
                                shipped=self._shipped, criterion=self.criterion,
                                size=self.perPartition, seed=self.seed, bound=bound)
        self._data.barrier().mapPartitions(job).coalesce(1, shuffle=True).collect()

    def stop(self):
        try:
            if self._loop is not None:
                self._loop.close()
                self.stages += self._loop.jobs
        finally:
            self._shipped.release()

    def next_batch(self):
        """Move to the next batch: (its size, whether it ends the epoch)."""
        self._batch += 1
        self._records += self.batchSize
        last = self._records >= self.size()
        if last:
            self._records = 0
        return self.batchSize, last

    def position(self) -> dict:
        """Where the source is in the data, for a checkpoint."""
        return {"dataSeed": self.seed, "batches": self._batch, "epochRecords": self._records}

    def restore(self, progress: dict, model):
        """Go back to the position saved by ``position()``."""
        if "batches" not in progress:
            raise ValueError("Optimizer.loadCheckpoint: the checkpoint was written by local "
                             "training; its position in the data means nothing for an RDD")
        self.seed = int(progress["dataSeed"])
        self._batch, self._records = int(progress["batches"]), int(progress["epochRecords"])

    def gradient(self, x):
        """(loss, flat gradient) of the current batch at the weights x, summed in
        partition order into the model's flat gradient vector."""
        batch = self._batch - 1
        if self._loop is not None:
            try:
                results = self._loop.request(batch, [x, *self._model.getExtraParameter()])
            except _loop.BarrierRefused as e:
                log.info("pymodules.spark: Spark refused the barrier stage (%s); a Spark job "
                         "per training iteration from now on", e)
                self._loop.close()
                self.stages += self._loop.jobs
                self._loop, self.mode = None, "job per iteration"
            else:
                loss, (grad, *extra) = results[0]
                grad = grad.copy() if len(results) > 1 else grad
                extra = [e.copy() for e in extra]
                for lp, (g, *ep) in results[1:]:
                    loss += lp
                    grad += g
                    for e, f in zip(extra, ep, strict=True):
                        e += f
                return self._finish(grad, loss, extra)
        extra = [np.array(e) for e in self._model.getExtraParameter()]
        job = functools.partial(_partition_gradient, shipped=self._shipped,
                                criterion=self.criterion, weights=np.array(x), extra=extra,
                                batch=batch, size=self.perPartition, seed=self.seed)
        grad, loss, extra = self._data.mapPartitions(job).treeReduce(_sum_gradients)
        return self._finish(grad, loss, extra)

    def _finish(self, grad, loss, extra):
        if extra:
            self._model.setExtraParameter([e / self.partitions for e in extra])
        scale = 1.0 / self.partitions if self._average else 1.0
        np.multiply(grad, scale, out=self._grad, casting="same_kind")
        return loss * scale, self._grad
