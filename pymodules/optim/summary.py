"""Training and validation summaries: scalars (and histograms) by tag, for TensorBoard and
for reading back as arrays to plot.

With a ``logDir``, ``TrainSummary(logDir, appName)`` writes TensorBoard event files to
``logDir/appName/train`` and ``ValidationSummary`` to ``logDir/appName/validation``, as
BigDL does (``tensorboard --logdir logDir`` then shows both runs). The files are written by
TensorBoard's own writer (the ``tensorboard`` package, ``pip install "pymodules[tensorboard]"``,
imported only when a summary with a ``logDir`` is made). ``readScalar`` reads the event files
of the folder back, those of earlier runs included, so a summary made on the folder of a
finished run reads that run. Scalars are stored as TensorBoard stores them: float32.

Without a ``logDir`` the records are kept in memory only (in float64).
"""

from __future__ import annotations

import os
import time
import weakref

import numpy as np

from pymodules.optim.triggers import SeveralIteration, Trigger

#: Buckets of a histogram written by addHistogram.
_BUCKETS = 30


_TB = {}


def _tensorboard(who):
    """The classes of the tensorboard package this file uses (imported on first use);
    ImportError saying what to install when it is missing."""
    if _TB:
        return _TB
    try:
        from tensorboard.backend.event_processing.event_file_loader import (
            LegacyEventFileLoader as EventFileLoader,  # the events as written, unmigrated
        )
        from tensorboard.compat import tf
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import HistogramProto, Summary
        from tensorboard.summary.writer.event_file_writer import EventFileWriter
    except ImportError as err:
        raise ImportError(f"{who}: writing TensorBoard event files (logDir given) needs the "
                          f"tensorboard package ({err}); pip install \"pymodules[tensorboard]\" "
                          f"or make the summary without a logDir to keep it in memory") from err
    _TB.update(Event=Event, Summary=Summary, HistogramProto=HistogramProto,
               EventFileWriter=EventFileWriter, EventFileLoader=EventFileLoader,
               gfile=tf.io.gfile)
    return _TB


def _histogram(values):
    """(min, max, count, sum, sum of squares, bucket upper limits, counts) of the finite
    entries of ``values`` (non-finite entries are left out, as TensorBoard cannot place
    them); None when no entry is finite."""
    x = np.asarray(values, dtype=np.float64).ravel()
    x = x[np.isfinite(x)]
    if x.size == 0:
        return None
    lo, hi = float(x.min()), float(x.max())
    if lo == hi:
        counts, limits = np.array([x.size]), np.array([hi])
    else:
        counts, edges = np.histogram(x, bins=_BUCKETS, range=(lo, hi))
        limits = edges[1:]
    return (lo, hi, int(x.size), float(x.sum()), float(np.dot(x, x)),
            limits.tolist(), counts.astype(np.float64).tolist())


class Summary:
    """Records of (step, value, wallclock) by tag; see the module's documentation."""

    _kind = ""

    def __init__(self, logDir=None, appName="pymodules"):
        who = type(self).__name__
        if not isinstance(appName, str) or not appName:
            raise TypeError(f"{who}: appName must be a non-empty str, got {appName!r}")
        self.logDir = None if logDir is None else os.fspath(logDir)
        self.appName = appName
        self._scalars: dict[str, list[tuple[int, float, float]]] = {}
        self._histograms: dict[str, list[tuple]] = {}
        self._writer = None
        self._closer = None
        if self.logDir is not None:
            _tensorboard(who)  # fail here, not at the first record of a training

    @property
    def folder(self):
        """Where the event files go: ``logDir/appName/train`` (or ``validation``); None
        without a logDir."""
        if self.logDir is None:
            return None
        return os.path.join(self.logDir, self.appName, self._kind)

    # -- writing -------------------------------------------------------------------------
    def _events(self):
        """The open event writer (made on the first record, and again after close)."""
        if self._writer is None:
            tb = _tensorboard(type(self).__name__)
            writer = tb["EventFileWriter"](self.folder, max_queue_size=100, flush_secs=10)
            self._writer = writer
            # Closed (so flushed) when this summary is collected or the interpreter exits.
            self._closer = weakref.finalize(self, writer.close)
        return self._writer

    def _write(self, step, wall, value):
        tb = _tensorboard(type(self).__name__)
        event = tb["Event"](wall_time=wall, step=step, summary=tb["Summary"](value=[value]))
        self._events().add_event(event)

    def addScalar(self, tag, value, step):
        """Record ``value`` for ``tag`` at ``step``; return self."""
        row = (int(step), float(value), time.time())
        if self.logDir is None:
            self._scalars.setdefault(str(tag), []).append(row)
        else:
            tb = _tensorboard(type(self).__name__)
            self._write(row[0], row[2], tb["Summary"].Value(tag=str(tag), simple_value=row[1]))
        return self

    def addHistogram(self, tag, values, step):
        """Record the histogram of the array ``values`` for ``tag`` at ``step`` (TensorBoard's
        Histograms and Distributions tabs); return self. Non-finite entries are left out."""
        h = _histogram(values)
        if h is None:
            return self
        step, wall = int(step), time.time()
        if self.logDir is None:
            self._histograms.setdefault(str(tag), []).append((step, wall, *h))
        else:
            tb = _tensorboard(type(self).__name__)
            lo, hi, num, total, squares, limits, counts = h
            proto = tb["HistogramProto"](min=lo, max=hi, num=num, sum=total,
                                         sum_squares=squares, bucket_limit=limits,
                                         bucket=counts)
            self._write(step, wall, tb["Summary"].Value(tag=str(tag), histo=proto))
        return self

    def flush(self):
        """Write what is queued to the event file."""
        if self._writer is not None:
            self._writer.flush()
        return self

    def close(self):
        """Flush and close the event file (a later record opens a new one)."""
        if self._closer is not None:
            self._closer()
        self._writer = self._closer = None
        return self

    # -- reading -------------------------------------------------------------------------
    def _read(self):
        """Every (tag, step, wallclock, summary value) of the event files of the folder,
        file by file in the order they were made (the time of their first event)."""
        self.flush()
        tb = _tensorboard(type(self).__name__)
        gfile, folder = tb["gfile"], self.folder
        if not gfile.isdir(folder):
            return []
        files = []
        for name in sorted(gfile.listdir(folder)):
            if "tfevents" in name:
                events = list(tb["EventFileLoader"](os.path.join(folder, name)).Load())
                files.append((events[0].wall_time if events else 0.0, events))
        files.sort(key=lambda f: f[0])
        return [(value.tag, event.step, event.wall_time, value)
                for _, events in files for event in events if event.HasField("summary")
                for value in event.summary.value]

    def readScalar(self, tag) -> np.ndarray:
        """(n, 3) float64 array of [step, value, wallclock] rows for ``tag``, by step (in
        the order written for equal steps); empty (0, 3) when there are none. With a logDir,
        read from the event files of the folder, earlier runs included."""
        if self.logDir is None:
            rows = self._scalars.get(tag, [])
        else:
            rows = [(step, v.simple_value, wall) for t, step, wall, v in self._read()
                    if t == tag and v.HasField("simple_value")]
        array = np.array(rows, dtype=np.float64).reshape(-1, 3)
        return array[np.argsort(array[:, 0], kind="stable")]

    def readHistogram(self, tag) -> list[tuple]:
        """[(step, wallclock, min, max, count, sum, sumSquares, bucketLimits, bucketCounts)]
        for ``tag``, by step; empty when there are none."""
        if self.logDir is None:
            rows = list(self._histograms.get(tag, []))
        else:
            rows = [(step, wall, v.histo.min, v.histo.max, int(v.histo.num), v.histo.sum,
                     v.histo.sum_squares, list(v.histo.bucket_limit), list(v.histo.bucket))
                    for t, step, wall, v in self._read() if t == tag and v.HasField("histo")]
        return sorted(rows, key=lambda r: r[0])

    def tags(self):
        """The tags recorded (scalars and histograms), sorted."""
        if self.logDir is None:
            return sorted({*self._scalars, *self._histograms})
        return sorted({t for t, _, _, v in self._read()
                       if v.HasField("simple_value") or v.HasField("histo")})

    # -- copies --------------------------------------------------------------------------
    def __getstate__(self):
        # A copy (pickled, shipped, deep-copied) holds no open file: it opens its own.
        state = dict(vars(self))
        state["_writer"] = state["_closer"] = None
        return state

    def __repr__(self):
        where = "in memory" if self.logDir is None else self.folder
        return f"{type(self).__name__}({where})"


class TrainSummary(Summary):
    """Per-iteration "Loss", "Throughput" and "LearningRate" of an Optimizer (each recorded
    every iteration unless ``setSummaryTrigger`` says otherwise) and, with
    ``setSummaryTrigger("Parameters", trigger)``, histograms of every parameter, gradient
    and running statistic, tagged ``moduleName/weight``, ``moduleName/gradWeight``, ... as
    ``getParametersTable`` names them."""

    _kind = "train"
    _TAGS = ("LearningRate", "Loss", "Throughput", "Parameters")

    def __init__(self, logDir=None, appName="pymodules"):
        super().__init__(logDir, appName)
        self._triggers = {"Loss": SeveralIteration(1), "Throughput": SeveralIteration(1),
                          "LearningRate": SeveralIteration(1)}

    def setSummaryTrigger(self, name, trigger):
        """Record ``name`` ("LearningRate", "Loss", "Throughput" or "Parameters") when
        ``trigger`` fires (None: never); return self."""
        if name not in self._TAGS:
            raise ValueError(f"TrainSummary.setSummaryTrigger: {name!r} is not one of "
                             f"{', '.join(self._TAGS)}")
        if trigger is not None and not isinstance(trigger, Trigger):
            raise TypeError(f"TrainSummary.setSummaryTrigger: the trigger of {name} must be "
                            f"a Trigger (SeveralIteration, EveryEpoch, ...), got "
                            f"{type(trigger).__name__}")
        if trigger is None:
            self._triggers.pop(name, None)
        else:
            self._triggers[name] = trigger
        return self

    def getSummaryTrigger(self, name):
        """The trigger of ``name``, None when it is not recorded."""
        return self._triggers.get(name)

    def _record(self, state, scalars, model):
        """The Optimizer's records after an iteration: ``scalars`` {tag: value} whose
        trigger fires on ``state``, then the parameter histograms if "Parameters" fires."""
        step = state["iteration"]
        for tag, value in scalars.items():
            trigger = self._triggers.get(tag)
            if trigger is not None and trigger(state):
                self.addScalar(tag, value, step)
        trigger = self._triggers.get("Parameters")
        if trigger is not None and trigger(state):
            for module, table in model.getParametersTable().items():
                for name, array in table.items():
                    self.addHistogram(f"{module}/{name}", array, step)


class ValidationSummary(Summary):
    """One tag per validation method (its name, e.g. "Top1Accuracy", "Loss"), at the
    iterations where the Optimizer validates."""

    _kind = "validation"
