"""The Optimizer: trains a model on a local dataset until its end trigger fires.

One iteration: take the next batch, get the loss and flat gradient of that batch at the
current weights from the gradient source, clip, and take the optimisation method's step on
the flat parameter vector. The source is the only thing that differs between local and
distributed training: ``LocalGradient`` runs forward/backward on this process's model over a
local DataSet (nothing is allocated beyond the batch itself), on one model, or with
``pymodules.optim.replicas.ENABLED`` on one model replica per thread that
``pm.setNumThreads`` allows when the model's layers allow it; ``pymodules.spark``'s
``DistributedGradient`` sums the gradients of the partitions of an RDD. Triggers count from
this Optimizer's first iteration; ``optimize()`` again continues where the last call
stopped, with the same method state.
"""

from __future__ import annotations

import importlib
import logging
import math
import os
import sys
import time

import numpy as np

from pymodules import random as _random
from pymodules import threads as _threads
from pymodules.data import to_dataset
from pymodules.engine import optim as K
from pymodules.nn.module import Module
from pymodules.optim import replicas as _replicas
from pymodules.optim.methods import SGD, OptimMethod
from pymodules.optim.triggers import MaxEpoch, Trigger
from pymodules.persistence import load_state, save_state
from pymodules.persistence.storage import is_url, join
from pymodules.validation import evaluate_dataset, is_rdd, validation_methods

log = logging.getLogger("pymodules.optim")

#: Checkpoint URL schemes whose filesystem comes from an extra of pymodules:
#: {scheme: (module to import, extra)}.
_FILESYSTEMS = {"s3": ("s3fs", "s3"), "s3a": ("s3fs", "s3"), "hdfs": ("pyarrow", "hdfs"),
                "viewfs": ("pyarrow", "hdfs")}


class _DefaultHandler(logging.StreamHandler):
    """The handler pymodules puts on its logger when nothing is configured."""


def _default_logging():
    """Make training visible when the user configured no logging: a handler on the
    ``pymodules`` logger (INFO, to stderr) only if neither it nor the root logger has one;
    ours is taken off again once the root logger has handlers of its own."""
    top = logging.getLogger("pymodules")
    ours = [h for h in top.handlers if isinstance(h, _DefaultHandler)]
    if ours and logging.getLogger().handlers:
        for h in ours:
            top.removeHandler(h)
        if top.level == logging.INFO:
            top.setLevel(logging.NOTSET)
        return
    if top.handlers or logging.getLogger().handlers:
        return
    handler = _DefaultHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    top.addHandler(handler)
    if top.level == logging.NOTSET:
        top.setLevel(logging.INFO)


def _is_console(handler):
    stream = getattr(handler, "stream", None)
    return isinstance(handler, logging.StreamHandler) and \
        (stream is sys.stderr or stream is sys.stdout)


class _BarHandler(logging.Handler):
    """Writes through ``tqdm.write``, which lifts the progress bar off its line first, so
    that a log line and the bar never share a line."""

    def __init__(self, handler, write):
        super().__init__(handler.level)
        self.setFormatter(handler.formatter)
        for f in handler.filters:
            self.addFilter(f)
        self.stream, self._write = handler.stream, write

    def emit(self, record):
        try:
            self._write(self.format(record), file=self.stream)
        except Exception:  # noqa: BLE001 (logging's contract: report, never raise)
            self.handleError(record)


class _RedirectToBar:
    """While a bar is shown: the console handlers of ``pymodules.optim``'s chain of loggers
    write through the bar's ``write``; on exit the handlers are put back."""

    def __init__(self, bar):
        self.bar, self.saved = bar, []

    def __enter__(self):
        if self.bar is None:
            return self
        logger = log
        while logger is not None:
            if any(_is_console(h) for h in logger.handlers):
                self.saved.append((logger, logger.handlers))
                logger.handlers = [_BarHandler(h, type(self.bar).write) if _is_console(h)
                                   else h for h in logger.handlers]
            logger = logger.parent if logger.propagate else None
        return self

    def __exit__(self, *exc):
        for logger, handlers in self.saved:
            logger.handlers = handlers
        self.saved = []
        return False


def _check_filesystem(path: str):
    """Fail now, not at the first checkpoint, when the filesystem of a URL is missing."""
    if not is_url(path):
        return
    scheme = path.split("://", 1)[0].lower()
    module, extra = _FILESYSTEMS.get(scheme, ("fsspec", "s3"))
    try:
        import fsspec
        from fsspec.registry import known_implementations, registry

        # a filesystem the user registered for the scheme needs no package of ours
        known = known_implementations.get(scheme, {}).get("class", "").split(".")[0]
        if registry.get(scheme) is None or registry[scheme].__module__.split(".")[0] == known:
            importlib.import_module(module)
        fsspec.get_filesystem_class(scheme)
    except ImportError as err:
        hint = f'pip install "pymodules[{extra}]"' if scheme in _FILESYSTEMS else \
            f"install fsspec and the fsspec filesystem for {scheme}://"
        raise ImportError(f"Optimizer.setCheckpoint: {path} needs the {scheme}:// filesystem, "
                          f"which is not installed ({err}); {hint}") from err
    except ValueError as err:
        raise ValueError(f"Optimizer.setCheckpoint: {path}: unknown filesystem "
                         f"{scheme}:// ({err})") from err


def _trigger(t, what):
    if not isinstance(t, Trigger):
        raise TypeError(f"Optimizer: {what} must be a Trigger (MaxEpoch, MaxIteration, ...), "
                        f"got {type(t).__name__}")
    return t


class Optimizer:
    """Optimizer(model, trainingSet, criterion, optimMethod=SGD(), endTrigger=MaxEpoch(1),
    batchSize=32).

    ``trainingSet``: a DataSet, an (features, labels) pair, a list of Sample, or a pyspark
    RDD of Sample (then training is data-parallel on Spark, see pymodules.spark). Features
    and labels may be lists of arrays, one per input or target of the model.

    By default a line is logged (logger ``pymodules.optim``, INFO; shown on stderr when no
    logging is configured) every 50 iterations and at every validation, in BigDL's words.

    Local training with SGD clears the model's gradients in the update's own pass (no
    zeroing pass before the next batch), so they hold zeros after ``optimize()``; they are
    kept when a TrainSummary records parameter histograms. Outside the Optimizer, backward
    accumulates into the gradients and ``zeroGradParameters`` clears them, as in BigDL.
    """

    def __init__(self, model, trainingSet, criterion, optimMethod=None, endTrigger=None,
                 batchSize=32):
        self.model, self.criterion = model, criterion
        self.optimMethod = optimMethod if optimMethod is not None else SGD()
        if not isinstance(self.optimMethod, OptimMethod):
            raise TypeError(f"Optimizer: optimMethod must be an OptimMethod, got "
                            f"{type(self.optimMethod).__name__}")
        self.endWhen = _trigger(endTrigger if endTrigger is not None else MaxEpoch(1),
                                "endTrigger")
        # The shuffle's generator, this Optimizer's own (pymodules.random): the same seed
        # and order of creation give the same weights, whatever else runs meanwhile.
        self._rng = _random.Stream()
        self.setTrainData(trainingSet, batchSize)
        self.state = {"iteration": 0, "epoch": 0, "epochEnd": False, "loss": None,
                      "score": None, "records": 0}
        self._validation = None
        self._checkpoint = None
        self._clip_constant = None
        self._clip_norm = None
        self._progress = True
        self._log_every = 50
        self._wall = 0.0  # seconds spent in optimize(), over every call
        self._started = time.perf_counter()
        self._trainSummary = None
        self._validationSummary = None

    @classmethod
    def create(cls, model, trainingSet, criterion, endTrigger=None, batchSize=32,
               optimMethod=None):
        """BigDL's Python order: ``Optimizer.create(model, training_set, criterion,
        end_trigger, batch_size, optim_method)`` (SGD() and MaxEpoch(1) when omitted)."""
        return cls(model, trainingSet, criterion, optimMethod, endTrigger, batchSize)

    # -- configuration -------------------------------------------------------------------
    def setTrainData(self, trainingSet, batchSize):
        if not isinstance(batchSize, (int, np.integer)) or batchSize <= 0:
            raise ValueError(f"Optimizer: batchSize must be a positive int, got {batchSize!r}")
        self.batchSize = int(batchSize)
        if is_rdd(trainingSet):
            from pymodules.spark import DistributedGradient

            self.dataset = trainingSet
            self._source = DistributedGradient(trainingSet, self.batchSize)
        else:
            self.dataset = to_dataset(trainingSet, "Optimizer training set", need_labels=True)
            self._source = LocalGradient(self.dataset, self.batchSize, self._rng)
        return self

    def setCriterion(self, criterion):
        self.criterion = criterion
        return self

    def setOptimMethod(self, optimMethod):
        self.optimMethod = optimMethod
        return self

    def setEndWhen(self, trigger):
        self.endWhen = _trigger(trigger, "the end trigger")
        return self

    def setValidation(self, trigger, dataset, vMethods, batchSize=None):
        """Evaluate ``vMethods`` on ``dataset`` whenever ``trigger`` fires."""
        if not is_rdd(dataset):
            dataset = to_dataset(dataset, "validation set", need_labels=True)
        self._validation = (_trigger(trigger, "the validation trigger"), dataset,
                            validation_methods(vMethods), batchSize or self.batchSize)
        return self

    def setCheckpoint(self, path, trigger, overWrite=True):
        """When ``trigger`` fires, save under the folder ``path`` (local or fsspec URL):
        ``model.<iteration>`` (Module.save), ``optimMethod.<iteration>`` (OptimMethod.save)
        and ``optimizer.<iteration>`` (this Optimizer's progress: counters, position in
        the epoch, random generators), written last. ``loadCheckpoint`` resumes from them."""
        path = str(path)
        _check_filesystem(path)
        self._checkpoint = (path, _trigger(trigger, "the checkpoint trigger"), bool(overWrite))
        return self

    def loadCheckpoint(self, path, iteration=None):
        """Continue from the checkpoint of ``iteration`` (the latest complete one when None)
        in the folder ``path``: the model's weights and running state, the optim method,
        the counters, the position in the epoch, this Optimizer's shuffle generator, the
        generators of the model's dropout layers and the library's global generator are
        restored, so that optimize() goes on exactly as the saved run would have."""
        if iteration is None:
            iteration = _latest_checkpoint(str(path))
        name = join(str(path), f"{{}}.{int(iteration)}")
        model = Module.load(name.format("model"))
        self.model.setWeightsBias(model.getWeightsBias())
        self.model.setExtraParameter(model.getExtraParameter())
        self.optimMethod = OptimMethod.load(name.format("optimMethod"))
        progress = load_state(name.format("optimizer"))
        self.state = dict(progress["state"])
        self._source.restore(progress, self.model)
        _random.generator().bit_generator.state = progress["rng"]
        if "shuffleRng" in progress:  # checkpoints of earlier versions have one generator
            self._rng.state = progress["shuffleRng"]
        for stream, state in zip(_random.module_streams(self.model),
                                 progress.get("moduleRng", ()), strict=False):
            stream.state = state
        return self

    def setConstantGradientClipping(self, min, max):  # noqa: A002 (BigDL's names)
        if min > max:
            raise ValueError(f"Optimizer: clipping range [{min}, {max}] is empty")
        self._clip_constant = (float(min), float(max))
        return self

    def setGradientClippingByl2Norm(self, clipNorm):
        if clipNorm <= 0:
            raise ValueError(f"Optimizer: the L2 norm bound must be > 0, got {clipNorm}")
        self._clip_norm = float(clipNorm)
        return self

    def disableGradientClipping(self):
        self._clip_constant = self._clip_norm = None
        return self

    def setTrainSummary(self, summary):
        self._trainSummary = summary
        return self

    def setValidationSummary(self, summary):
        self._validationSummary = summary
        return self

    def setProgressBar(self, enabled=True):
        """Show a tqdm progress bar (when tqdm is installed and stderr is a terminal)."""
        self._progress = bool(enabled)
        return self

    def setLogInterval(self, iterations):
        """Log a line (logger "pymodules.optim", INFO) every ``iterations`` iterations
        (default 50; 0: none). Validation results are logged whenever they are computed."""
        self._log_every = int(iterations)
        return self

    # -- the loop ----------------------------------------------------------------------
    def _feval(self, x):
        """Loss and flat gradient of the current batch at the parameters x, clipped.

        A loss that is not finite stops the training here, before the method's step, so
        that the model keeps the weights of the last iteration. The gradient is checked
        where that costs nothing: its L2 norm when clipping by norm computes it (a pass of
        its own over the gradient measured 2-7% of bench_train's step, so without clipping
        a gradient that is not finite shows as the next iteration's loss, and the error
        then says that the weights are no longer finite and which step made them so).
        """
        loss, grad = self._source.gradient(x)
        if not math.isfinite(loss):
            self._stop(f"the loss is {loss}", x)
        if self._clip_constant is not None:
            K.clip_constant(grad, *self._clip_constant)
        if self._clip_norm is not None:
            norm = K.clip_l2_norm(grad, self._clip_norm)
            if not math.isfinite(norm):
                self._stop(f"the gradient is not finite (its L2 norm is {norm})", None,
                           "Check the data of the batch and the layers whose gradient can "
                           "be infinite (Sqrt or Log at 0, ...)")
        return loss, grad

    def _stop(self, what, weights, advice=None):
        """Raise FloatingPointError: ``what`` went wrong in the iteration under way."""
        state = self.state
        it = state["iteration"] + 1
        if weights is not None and not np.isfinite(weights).all():  # off the normal path
            why = "The weights are not finite" + (
                f": the update of iteration {it - 1} (or an earlier one) made them so, its "
                f"gradient was not finite" if it > 1 else "") + "; lower"
        else:
            why = "Check the data of the batch, lower"
        advice = advice or f"{why} the learning rate or clip the gradients " \
            f"(setGradientClippingByl2Norm)"
        raise FloatingPointError(
            f"Optimizer: {what} at iteration {it} (epoch {state['epoch'] + 1}); training "
            f"stopped before its update. {advice}")

    def _bar(self):
        if not self._progress or not sys.stderr.isatty():
            return None
        try:
            from tqdm import tqdm
        except ImportError:
            return None
        try:
            size = os.get_terminal_size(sys.stderr.fileno())
        except (AttributeError, OSError, ValueError):
            size = os.terminal_size((0, 0))
        # A terminal that reports no size (a pty without one, some IDE consoles) would get
        # a bar of no width, hidden below a screen of no lines: tqdm then draws nothing.
        return tqdm(total=self._source.size(), unit="rec", leave=False, file=sys.stderr,
                    desc=f"epoch {self.state['epoch'] + 1}", mininterval=0.1,
                    ncols=None if size.columns > 0 else 80,
                    nrows=None if size.lines > 0 else 24)

    def _header(self):
        """BigDL's header of a training log line: [Epoch e r/n][Iteration i][Wall Clock s]."""
        state = self.state
        wall = self._wall + time.perf_counter() - self._started
        return (f"[Epoch {state['epoch'] + 1} {state['records']}/"
                f"{self._source.size() or '?'}][Iteration {state['iteration']}]"
                f"[Wall Clock {wall:.3f}s]")

    def optimize(self):
        """Train until the end trigger fires; return the model."""
        model, method, state = self.model, self.optimMethod, self.state
        _default_logging()
        if self.endWhen(state):
            log.warning("Optimizer: the end trigger %s has already fired (iteration %d, "
                        "epoch %d): nothing to train; set a later one with setEndWhen",
                        self.endWhen, state["iteration"], state["epoch"])
            return model
        weights, _ = model.getParameters()
        model.training()
        source = self._source
        source.start(model, self.criterion)
        self._started = time.perf_counter()
        bar = self._bar()
        log_records, log_start = 0, time.perf_counter()
        threads = _threads.StepThreads(training=True)
        if isinstance(source, LocalGradient) and source.replicated():
            threads.now, threads.decided = 1, True  # the replicas are the parallelism
        clear = self._may_clear()
        split = source.split if isinstance(source, LocalGradient) else None
        try:
            with _RedirectToBar(bar):
                while not self.endWhen(state):
                    start = time.perf_counter()
                    n, last = source.next_batch()
                    method.state["epoch"] = state["epoch"]
                    lr = method.getLearningRate()
                    threads.before()
                    step = time.perf_counter()
                    _, losses, cleared = method._optimize(self._feval, weights, clear, split)
                    threads.after(time.perf_counter() - step)
                    if clear:
                        source.cleared = cleared
                    loss = float(losses[-1])
                    state["iteration"] += 1
                    state["records"] += n
                    state["loss"] = loss
                    elapsed = time.perf_counter() - start
                    log_records += n
                    if bar is not None:
                        bar.update(n)
                        bar.set_postfix(loss=f"{loss:.4g}", refresh=False)
                    if self._log_every > 0 and state["iteration"] % self._log_every == 0:
                        now = time.perf_counter()
                        took = max(now - log_start, 1e-12)
                        log.info("%s Trained %d records in %.4g seconds. Throughput is %.1f "
                                 "records/second. Loss is %.6g. Current learning rate is %.4g.",
                                 self._header(), log_records, took, log_records / took, loss,
                                 lr)
                        log_records, log_start = 0, now
                    state["epochEnd"] = last
                    if last:
                        state["epoch"] += 1
                        state["records"] = 0
                        method.state["epoch"] = state["epoch"]
                        method.state["Loss"] = loss
                        if bar is not None:
                            bar.reset()
                            bar.set_description(f"epoch {state['epoch'] + 1}")
                    if self._trainSummary is not None:  # after the epoch's end is known
                        self._trainSummary._record(state, {
                            "Loss": loss, "LearningRate": lr,
                            "Throughput": n / max(elapsed, 1e-12)}, model)
                    self._maybe_validate()
                    self._maybe_checkpoint()
        finally:
            threads.close()
            self._wall += time.perf_counter() - self._started
            if bar is not None:
                bar.close()
            for s in (self._trainSummary, self._validationSummary):
                if s is not None:
                    s.flush()
            source.stop()
            model.training()
        return model

    def _may_clear(self) -> bool:
        """Whether the method's update may clear the gradient in its pass (so that the next
        batch's gradient needs no pass of its own to zero it): for local training, when no
        parameter histograms read the gradient after the update. The model's gradients then
        hold zeros after optimize() returns."""
        summary = self._trainSummary
        return isinstance(self._source, LocalGradient) and not (
            summary is not None and summary.getSummaryTrigger("Parameters") is not None)

    def _maybe_validate(self):
        if self._validation is None:
            return
        trigger, data, methods, batch = self._validation
        if not trigger(self.state):
            return
        results = evaluate_dataset(self.model, data, methods, batch)
        self.model.training()
        it = self.state["iteration"]
        header = self._header()
        for i, (result, m) in enumerate(results):
            value = result.result()[0]
            log.info("%s %s is %s", header, m.name(), result)
            if self._validationSummary is not None:
                self._validationSummary.addScalar(m.name(), value, it)
            if i == 0:
                self.state["score"] = value
                self.optimMethod.state["score"] = value

    def _maybe_checkpoint(self):
        if self._checkpoint is None:
            return
        path, trigger, overwrite = self._checkpoint
        if not trigger(self.state):
            return
        it = self.state["iteration"]
        if not is_url(path):
            os.makedirs(path, exist_ok=True)
        name = join(path, f"{{}}.{it}")
        self.model.save(name.format("model"), overWrite=overwrite)
        self.optimMethod.save(name.format("optimMethod"), overWrite=overwrite)
        save_state(name.format("optimizer"), {  # last: marks the checkpoint complete
            "state": dict(self.state), "rng": _random.generator().bit_generator.state,
            "shuffleRng": self._rng.state,
            "moduleRng": [s.state for s in _random.module_streams(self.model)],
            **self._source.position(),
        }, overWrite=overwrite)
        log.info("[Checkpoint][Iteration %d] saved to %s", it, path)


class LocalGradient:
    """Batches of a local DataSet, each epoch reshuffled; the gradient by forward and
    backward on the Optimizer's own model, into its flat gradient vector."""

    def __init__(self, dataset, batchSize, stream=None):
        self.dataset, self.batchSize = dataset, batchSize
        self._rng = stream if stream is not None else _random.Stream()  # the shuffle's
        self._epoch_iter = None
        self._epoch_rng = None  # the generator's state when the current epoch started
        self._epoch_batches = 0  # batches taken from the current epoch
        self._batch = None
        self._dtype = None

    def size(self):
        """Records in one epoch (None when the dataset does not know)."""
        return self.dataset.size()

    def start(self, model, criterion, cores=None):
        """Get ready to train ``model``: on up to ``cores`` replicas (default: one, or with
        ``replicas.ENABLED`` the threads the BLAS may use, ``pm.getNumThreads()`` or a
        tighter threadpoolctl limit)."""
        self.model, self.criterion = model, criterion
        self._dtype = model.dtype
        self._grad = model.getParameters()[1]
        self._reader = data_reader(model)
        #: True when the gradient holds zeros (the last update cleared it in its pass)
        self.cleared = False
        if cores is None:
            cores = min(_threads.getNumThreads(), max(_threads.blas_threads(), default=1)) \
                if _replicas.ENABLED else 1
        count = _replicas.parts_for(self.batchSize, cores)
        self._replicas = _replicas.make(model, criterion, count) \
            if count > 1 and _replicas.replicable(model) else None

    def split(self, kernel, args):
        """An element-wise kernel over the flat vectors: in parts on the replicas' threads
        when there are replicas, else in one call."""
        if self._replicas is None:
            kernel(*args)
        else:
            self._replicas.split(kernel, args)

    def replicated(self) -> bool:
        """Whether the batches run on several model replicas, one thread each."""
        return self._replicas is not None

    def stop(self):
        if self._replicas is not None:
            self._replicas.close()
            self._replicas = None

    def next_batch(self):
        """Move to the next batch: (its size, whether it ends the epoch)."""
        if self._epoch_iter is None:
            self._epoch_rng = self._rng.state
            self._epoch_batches = 0
            self._epoch_iter = self.dataset.epoch(self.batchSize, shuffle=True,
                                                  dtype=self._dtype,
                                                  generator=self._rng.generator)
        self._batch, last = next(self._epoch_iter)
        self._epoch_batches += 1
        if last:
            self._epoch_iter, self._epoch_rng, self._epoch_batches = None, None, 0
        return self._batch.size(), last

    def position(self) -> dict:
        """Where the source is in the data, for a checkpoint."""
        return {"epochRng": self._epoch_rng, "epochBatches": self._epoch_batches}

    def restore(self, progress: dict, model):
        """Go back to the position saved by ``position()``."""
        self._dtype = model.dtype
        self._epoch_iter, self._epoch_rng, self._epoch_batches = None, None, 0
        if progress["epochBatches"]:
            # replay the epoch's shuffle from its start, then skip the batches it took
            self._rng.state = progress["epochRng"]
            for _ in range(progress["epochBatches"]):
                self.next_batch()

    def gradient(self, x):
        """(loss, flat gradient) of the current batch; x is the model's own flat weights."""
        batch = self._batch
        return self.gradient_of(batch.input, batch.target, batch.size()), self._grad

    def gradient_of(self, input, target, size):
        """The loss of the batch (``input``, ``target``) of ``size`` records; its gradient
        goes into the model's flat gradient."""
        clear, self.cleared = not self.cleared, False
        replicas = self._replicas
        parts = _replicas.parts_for(size, len(replicas.models)) \
            if replicas is not None and isinstance(input, np.ndarray) else 1
        if parts > 1:
            if clear:
                self._grad.fill(0)
            return replicas.gradient(input, target, parts)
        return batch_gradient(self.model, self.criterion, self._reader, input, target,
                              self._grad, clear)


def batch_gradient(model, criterion, reader, input, target, grad, clear=True):
    """The loss of one batch; its gradient goes into ``grad`` (zeroed first when ``clear``;
    else added to what it holds).

    Nothing reads the gradient with respect to the data, so ``reader`` (the layer that takes
    the data, ``data_reader``) skips its gradInput, the largest product of an MLP's first
    layer (PyTorch skips it too). Its ``propagateBack`` is changed for this call only: a
    model saved, validated or handed back between batches keeps the user's setting."""
    propagate = reader.propagateBack
    reader.propagateBack = False
    try:
        if clear:
            grad.fill(0)
        output = model.forward(input)
        loss = criterion.forward(output, target)
        model.backward(input, criterion.backward(output, target))
    finally:
        reader.propagateBack = propagate
    return loss


def data_reader(model):
    """The leaf that reads the model's input: the first child down a chain of Sequential."""
    from pymodules.nn import Sequential

    while isinstance(model, Sequential) and model.modules:
        model = model.modules[0]
    return model


def _latest_checkpoint(path: str) -> int:
    """The highest iteration with a complete checkpoint (its optimizer.<n> file) in path."""
    if is_url(path):
        import fsspec

        fs, folder = fsspec.core.url_to_fs(path)
        names = [p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(folder, detail=False)]
    else:
        names = os.listdir(path)
    done = [int(n.split(".", 1)[1]) for n in names
            if n.startswith("optimizer.") and n.split(".", 1)[1].isdigit()]
    if not done:
        raise FileNotFoundError(f"no complete checkpoint (optimizer.<iteration>) in {path}")
    return max(done)
