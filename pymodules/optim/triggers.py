"""Triggers: when to stop, validate or checkpoint (BigDL's names).

A trigger is called with the Optimizer's state: "iteration" (iterations run by this
Optimizer), "epoch" (epochs it completed), "epochEnd" (an epoch completed with the last
iteration), "loss" (the last training loss) and "score" (the last validation score of the
first method, None before any).
"""


class Trigger:
    def __call__(self, state) -> bool:
        raise NotImplementedError

    def __repr__(self):
        args = ", ".join(repr(v) for v in vars(self).values())
        return f"{type(self).__name__}({args})"


def _positive(name, n):
    if int(n) < 0:
        raise ValueError(f"{name}: expected a count >= 0, got {n}")
    return int(n)


class MaxEpoch(Trigger):
    """True once ``maxEpoch`` epochs are complete."""

    def __init__(self, maxEpoch):
        self.maxEpoch = _positive("MaxEpoch", maxEpoch)

    def __call__(self, state):
        return state["epoch"] >= self.maxEpoch


class MaxIteration(Trigger):
    """True once ``maxIteration`` iterations have run."""

    def __init__(self, maxIteration):
        self.maxIteration = _positive("MaxIteration", maxIteration)

    def __call__(self, state):
        return state["iteration"] >= self.maxIteration


class EveryEpoch(Trigger):
    """True at the end of every epoch."""

    def __call__(self, state):
        return bool(state["epochEnd"])


class SeveralIteration(Trigger):
    """True every ``interval`` iterations."""

    def __init__(self, interval):
        self.interval = _positive("SeveralIteration", interval)
        if self.interval == 0:
            raise ValueError("SeveralIteration: interval must be > 0")

    def __call__(self, state):
        return state["iteration"] > 0 and state["iteration"] % self.interval == 0


class MinLoss(Trigger):
    """True once the training loss falls below ``minLoss``."""

    def __init__(self, minLoss):
        self.minLoss = float(minLoss)

    def __call__(self, state):
        return state.get("loss") is not None and state["loss"] < self.minLoss


class MaxScore(Trigger):
    """True once the validation score exceeds ``maxScore``."""

    def __init__(self, maxScore):
        self.maxScore = float(maxScore)

    def __call__(self, state):
        return state.get("score") is not None and state["score"] > self.maxScore


class TriggerAnd(Trigger):
    """True when every trigger is."""

    def __init__(self, first, *others):
        self.triggers = (first, *others)

    def __call__(self, state):
        return all(t(state) for t in self.triggers)

    def __repr__(self):
        return f"TriggerAnd({', '.join(map(repr, self.triggers))})"


class TriggerOr(Trigger):
    """True when any trigger is."""

    def __init__(self, first, *others):
        self.triggers = (first, *others)

    def __call__(self, state):
        # every trigger sees every state, as a stateful trigger may need it
        return any([t(state) for t in self.triggers])

    def __repr__(self):
        return f"TriggerOr({', '.join(map(repr, self.triggers))})"
