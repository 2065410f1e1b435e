"""Learning-rate schedules of SGD (BigDL's): the rate of the step about to be taken.

``rate(method, neval)`` reads the method's base ``learningRate`` (and ``learningRateDecay``,
``state``) and the count of steps taken so far. Schedules keep their own few numbers plain,
so that ``getState()``/``loadState()`` persist them with the method.
"""

from __future__ import annotations

import bisect
import math


class LearningRateSchedule:
    def rate(self, method, neval: int) -> float:
        raise NotImplementedError

    def getState(self) -> dict:
        return {}

    def loadState(self, state: dict) -> None:
        """Restore what getState returned."""

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


class Default(LearningRateSchedule):
    """learningRate / (1 + neval * learningRateDecay) (Torch7's SGD)."""

    def rate(self, method, neval):
        return method.learningRate / (1 + neval * method.learningRateDecay)


class Step(LearningRateSchedule):
    """learningRate * gamma ^ floor(neval / stepSize)."""

    def __init__(self, stepSize, gamma):
        if int(stepSize) <= 0:
            raise ValueError(f"Step: stepSize must be > 0, got {stepSize}")
        self.stepSize, self.gamma = int(stepSize), float(gamma)

    def rate(self, method, neval):
        return method.learningRate * self.gamma ** (neval // self.stepSize)


class MultiStep(LearningRateSchedule):
    """learningRate * gamma ^ (number of stepSizes <= neval); stepSizes increasing."""

    def __init__(self, stepSizes, gamma):
        self.stepSizes = [int(s) for s in stepSizes]
        if self.stepSizes != sorted(self.stepSizes):
            raise ValueError(f"MultiStep: stepSizes must increase, got {self.stepSizes}")
        self.gamma = float(gamma)

    def rate(self, method, neval):
        return method.learningRate * self.gamma ** bisect.bisect_right(self.stepSizes, neval)


class Exponential(LearningRateSchedule):
    """learningRate * decayRate ^ (neval / decayStep), the exponent floored if stairCase."""

    def __init__(self, decayStep, decayRate, stairCase=False):
        if int(decayStep) <= 0:
            raise ValueError(f"Exponential: decayStep must be > 0, got {decayStep}")
        self.decayStep, self.decayRate = int(decayStep), float(decayRate)
        self.stairCase = bool(stairCase)

    def rate(self, method, neval):
        p = neval / self.decayStep
        return method.learningRate * self.decayRate ** (math.floor(p) if self.stairCase else p)


class Poly(LearningRateSchedule):
    """learningRate * (1 - neval / maxIteration) ^ power; 0 past maxIteration."""

    def __init__(self, power, maxIteration):
        if int(maxIteration) <= 0:
            raise ValueError(f"Poly: maxIteration must be > 0, got {maxIteration}")
        self.power, self.maxIteration = float(power), int(maxIteration)

    def rate(self, method, neval):
        if neval > self.maxIteration:
            return 0.0
        return method.learningRate * (1 - neval / self.maxIteration) ** self.power


class Warmup(LearningRateSchedule):
    """learningRate + delta * neval: a linear ramp, usually first in a SequentialSchedule."""

    def __init__(self, delta):
        self.delta = float(delta)

    def rate(self, method, neval):
        return method.learningRate + self.delta * neval


class Plateau(LearningRateSchedule):
    """Multiply the rate by ``factor`` when ``monitor`` ("score": the first validation
    method, or "Loss": the training loss) has not improved for ``patience`` epochs.

    The Optimizer puts "epoch", "score" and "Loss" in the method's state; the monitored
    value is read once per epoch.
    """

    def __init__(self, monitor="score", factor=0.1, patience=10, mode="min", epsilon=1e-4,
                 cooldown=0, minLr=0.0):
        if mode not in ("min", "max"):
            raise ValueError(f"Plateau: mode must be 'min' or 'max', got {mode!r}")
        if not 0 < float(factor) < 1:
            raise ValueError(f"Plateau: factor must be in (0, 1), got {factor}")
        self.monitor, self.factor, self.patience = monitor, float(factor), int(patience)
        self.mode, self.epsilon, self.cooldown = mode, float(epsilon), int(cooldown)
        self.minLr = float(minLr)
        self._current = None
        self._best = None
        self._wait = 0
        self._cooling = 0
        self._epoch = 0

    def _improved(self, value):
        if self._best is None:
            return True
        if self.mode == "min":
            return value < self._best - self.epsilon
        return value > self._best + self.epsilon

    def rate(self, method, neval):
        if self._current is None:
            self._current = method.learningRate
        epoch = method.state.get("epoch", 0)
        value = method.state.get(self.monitor)
        if epoch != self._epoch and value is not None:
            self._epoch = epoch
            if self._cooling > 0:
                self._cooling -= 1
                self._wait = 0
            if self._improved(value):
                self._best, self._wait = value, 0
            elif self._cooling <= 0:
                self._wait += 1
                if self._wait >= self.patience:
                    self._current = max(self._current * self.factor, self.minLr)
                    self._cooling, self._wait = self.cooldown, 0
        return self._current

    def getState(self):
        return {"current": self._current, "best": self._best, "wait": self._wait,
                "cooling": self._cooling, "epoch": self._epoch}

    def loadState(self, state):
        self._current, self._best = state.get("current"), state.get("best")
        self._wait, self._cooling = int(state["wait"]), int(state["cooling"])
        self._epoch = int(state["epoch"])


class SequentialSchedule(LearningRateSchedule):
    """Schedules one after another: ``add(schedule, maxIteration)`` runs ``schedule`` for
    that many iterations, counting its own iterations from 0; the last one runs on."""

    def __init__(self, iterationPerEpoch):
        self.iterationPerEpoch = int(iterationPerEpoch)
        self.schedules = []

    def add(self, schedule, maxIteration):
        self.schedules.append((schedule, int(maxIteration)))
        return self

    def rate(self, method, neval):
        if not self.schedules:
            raise ValueError("SequentialSchedule has no schedule: call add(schedule, n)")
        start = 0
        for schedule, n in self.schedules[:-1]:
            if neval < start + n:
                return schedule.rate(method, neval - start)
            start += n
        return self.schedules[-1][0].rate(method, neval - start)

    def getState(self):
        return {f"{i}.{k}": v for i, (s, _) in enumerate(self.schedules)
                for k, v in s.getState().items()}

    def loadState(self, state):
        for i, (s, _) in enumerate(self.schedules):
            prefix = f"{i}."
            sub = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            if sub:
                s.loadState(sub)
