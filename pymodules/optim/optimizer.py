"""The Optimizer: trains a model on a local dataset until its end trigger fires.

One iteration: take the next batch, get the loss and flat gradient of that batch at the
current weights from the gradient source, clip, and take the optimisation method's step on
the flat parameter vector. The source is the only thing that differs between local and
distributed training: ``LocalGradient`` runs forward/backward on this process's model over a
local DataSet (nothing is allocated beyond the batch itself); ``pymodules.spark``'s
``DistributedGradient`` sums the gradients of the partitions of an RDD. Triggers count from
this Optimizer's first iteration; ``optimize()`` again continues where the last call
stopped, with the same method state.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time

import numpy as np

from pymodules.data import to_dataset
from pymodules.engine import optim as K
from pymodules.optim.methods import SGD, OptimMethod
from pymodules.optim.triggers import MaxEpoch, Trigger
from pymodules.validation import _methods, evaluate_dataset, is_rdd

log = logging.getLogger("pymodules.optim")


def _trigger(t, what):
    if not isinstance(t, Trigger):
        raise TypeError(f"Optimizer: {what} must be a Trigger (MaxEpoch, MaxIteration, ...), "
                        f"got {type(t).__name__}")
    return t


class Optimizer:
    """Optimizer(model, trainingSet, criterion, optimMethod=SGD(), endTrigger=MaxEpoch(1),
    batchSize=32).

    ``trainingSet``: a DataSet, an (features, labels) pair, a list of Sample, or a pyspark
    RDD of Sample (then training is data-parallel on Spark, see pymodules.spark).
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
        self.setTrainData(trainingSet, batchSize)
        self.state = {"iteration": 0, "epoch": 0, "epochEnd": False, "loss": None,
                      "score": None, "records": 0}
        self._validation = None
        self._checkpoint = None
        self._clip_constant = None
        self._clip_norm = None
        self._progress = True
        self._log_every = 50
        self._trainSummary = None
        self._validationSummary = None

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
            self._source = LocalGradient(self.dataset, self.batchSize)
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
                            _methods(vMethods), batchSize or self.batchSize)
        return self

    def setCheckpoint(self, path, trigger, overWrite=True):
        """Save the model (Module.save) and the method's state under ``path`` when
        ``trigger`` fires: ``model.<iteration>`` and ``optimMethod.<iteration>.npz``."""
        if not hasattr(self.model, "save"):
            raise NotImplementedError(
                "Optimizer.setCheckpoint needs Module.save (model persistence), which this "
                "build of pymodules does not have yet")
        self._checkpoint = (str(path), _trigger(trigger, "the checkpoint trigger"),
                            bool(overWrite))
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
        """Log a line (logger "pymodules.optim", INFO) every ``iterations`` iterations."""
        self._log_every = int(iterations)
        return self

    # -- the loop ----------------------------------------------------------------------
    def _feval(self, x):
        """Loss and flat gradient of the current batch at the parameters x, clipped."""
        loss, grad = self._source.gradient(x)
        if self._clip_constant is not None:
            K.clip_constant(grad, *self._clip_constant)
        if self._clip_norm is not None:
            K.clip_l2_norm(grad, self._clip_norm)
        return loss, grad

    def _bar(self):
        if not self._progress or not sys.stderr.isatty():
            return None
        try:
            from tqdm import tqdm
        except ImportError:
            return None
        n = self._source.size()
        return tqdm(total=n, unit="rec", leave=False, desc=f"epoch {self.state['epoch'] + 1}")

    def optimize(self):
        """Train until the end trigger fires; return the model."""
        model, method, state = self.model, self.optimMethod, self.state
        weights, _ = model.getParameters()
        model.training()
        source = self._source
        source.start(model, self.criterion)
        bar = self._bar()
        log_records, log_start = 0, time.perf_counter()
        try:
            while not self.endWhen(state):
                start = time.perf_counter()
                n, last = source.next_batch()
                method.state["epoch"] = state["epoch"]
                lr = method.getLearningRate()
                _, losses = method.optimize(self._feval, weights)
                loss = float(losses[-1])
                state["iteration"] += 1
                state["records"] += n
                state["loss"] = loss
                if not math.isfinite(loss):
                    raise FloatingPointError(
                        f"Optimizer: the loss is {loss} at iteration {state['iteration']} "
                        f"(epoch {state['epoch'] + 1}); training stopped. Lower the learning "
                        f"rate or clip the gradients (setGradientClippingByl2Norm)")
                elapsed = time.perf_counter() - start
                if self._trainSummary is not None:
                    it = state["iteration"]
                    self._trainSummary.addScalar("Loss", loss, it)
                    self._trainSummary.addScalar("LearningRate", lr, it)
                    self._trainSummary.addScalar("Throughput", n / max(elapsed, 1e-12), it)
                log_records += n
                if bar is not None:
                    bar.update(n)
                    bar.set_postfix(loss=f"{loss:.4g}", refresh=False)
                if self._log_every > 0 and state["iteration"] % self._log_every == 0:
                    now = time.perf_counter()
                    log.info("[Epoch %d %d/%s][Iteration %d] loss %.6g, %.1f records/s, "
                             "learning rate %.4g", state["epoch"] + 1, state["records"],
                             source.size() or "?", state["iteration"], loss,
                             log_records / max(now - log_start, 1e-12), lr)
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
                self._maybe_validate()
                self._maybe_checkpoint()
        finally:
            if bar is not None:
                bar.close()
            for s in (self._trainSummary, self._validationSummary):
                if s is not None:
                    s.flush()
            source.stop()
            model.training()
        return model

    def _maybe_validate(self):
        if self._validation is None:
            return
        trigger, data, methods, batch = self._validation
        if not trigger(self.state):
            return
        results = evaluate_dataset(self.model, data, methods, batch)
        self.model.training()
        it = self.state["iteration"]
        for i, (result, m) in enumerate(results):
            value = result.result()[0]
            log.info("[Validation][Iteration %d] %s is %s", it, m.name(), result)
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
        os.makedirs(path, exist_ok=True)
        self.model.save(os.path.join(path, f"model.{it}"), overWrite=overwrite)
        save_state(os.path.join(path, f"optimMethod.{it}.npz"), self.optimMethod.getState())
        log.info("[Checkpoint][Iteration %d] saved to %s", it, path)


class LocalGradient:
    """Batches of a local DataSet, each epoch reshuffled; the gradient by forward and
    backward on the Optimizer's own model, into its flat gradient vector."""

    def __init__(self, dataset, batchSize):
        self.dataset, self.batchSize = dataset, batchSize
        self._epoch_iter = None
        self._batch = None

    def size(self):
        """Records in one epoch (None when the dataset does not know)."""
        return self.dataset.size()

    def start(self, model, criterion):
        self.model, self.criterion = model, criterion
        self._grad = model.getParameters()[1]
        # Nothing reads the gradient with respect to the data: the layer that takes it skips
        # its gradInput, the largest product of an MLP's first layer (PyTorch skips it too).
        self._reader = _data_reader(model)
        self._propagate = self._reader.propagateBack
        self._reader.propagateBack = False

    def stop(self):
        self._reader.propagateBack = self._propagate

    def next_batch(self):
        """Move to the next batch: (its size, whether it ends the epoch)."""
        if self._epoch_iter is None:
            self._epoch_iter = self.dataset.epoch(self.batchSize, shuffle=True,
                                                  dtype=self.model.dtype)
        self._batch, last = next(self._epoch_iter)
        if last:
            self._epoch_iter = None
        return self._batch.size(), last

    def gradient(self, x):
        """(loss, flat gradient) of the current batch; x is the model's own flat weights."""
        model, crit = self.model, self.criterion
        inp, target = self._batch.input, self._batch.target
        self._grad.fill(0)
        output = model.forward(inp)
        loss = crit.forward(output, target)
        model.backward(inp, crit.backward(output, target))
        return loss, self._grad


def _data_reader(model):
    """The leaf that reads the model's input: the first child down a chain of Sequential."""
    from pymodules.nn import Sequential

    while isinstance(model, Sequential) and model.modules:
        model = model.modules[0]
    return model


def save_state(path, state: dict) -> None:
    """Write an optim state (arrays, numbers, strings, None) as .npz, without pickles."""
    arrays = {}
    for k, v in state.items():
        if v is None:
            continue
        arrays[k] = np.asarray(v)
        if arrays[k].dtype == object:
            raise TypeError(f"optim state {k!r} is not plain: {type(v).__name__}")
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, path)


def load_state(path) -> dict:
    """The state written by save_state: 0-d arrays come back as Python numbers."""
    with np.load(path, allow_pickle=False) as z:
        return {k: (z[k].item() if z[k].ndim == 0 else np.array(z[k])) for k in z.files}
