"""Training and validation summaries: scalars by tag, readable back as arrays to plot.

Records are kept in memory and, with a ``logDir``, appended as CSV lines
(``tag,step,value,wallclock``) to ``logDir/appName/train.csv`` or ``validation.csv``.
"""

from __future__ import annotations

import os
import time

import numpy as np


class Summary:
    _kind = ""

    def __init__(self, logDir=None, appName="pymodules"):
        self.logDir, self.appName = logDir, appName
        self._scalars: dict[str, list[tuple[int, float, float]]] = {}
        self._file = None

    def addScalar(self, tag, value, step):
        row = (int(step), float(value), time.time())
        self._scalars.setdefault(tag, []).append(row)
        if self.logDir is not None:
            if self._file is None:
                folder = os.path.join(self.logDir, self.appName)
                os.makedirs(folder, exist_ok=True)
                self._file = open(os.path.join(folder, f"{self._kind}.csv"), "a")  # noqa: SIM115
            self._file.write(f"{tag},{row[0]},{row[1]!r},{row[2]!r}\n")
        return self

    def flush(self):
        if self._file is not None:
            self._file.flush()

    def close(self):
        if self._file is not None:
            self._file.close()
            self._file = None

    def readScalar(self, tag) -> np.ndarray:
        """(n, 3) array of [step, value, wallclock] rows for ``tag`` (empty if none)."""
        return np.array(self._scalars.get(tag, []), dtype=np.float64).reshape(-1, 3)

    def tags(self):
        return sorted(self._scalars)

    def __getstate__(self):
        state = dict(vars(self))
        state["_file"] = None
        return state


class TrainSummary(Summary):
    """Per-iteration "Loss", "LearningRate" and "Throughput" of an Optimizer."""

    _kind = "train"


class ValidationSummary(Summary):
    """One tag per validation method (its name, e.g. "Top1Accuracy", "Loss")."""

    _kind = "validation"
