"""Optimisation: methods, learning-rate schedules, triggers, summaries and the Optimizer."""

from pymodules.optim.methods import (
    LBFGS,
    SGD,
    Adadelta,
    Adagrad,
    Adam,
    Adamax,
    AdamW,
    OptimMethod,
    RMSprop,
)
from pymodules.optim.optimizer import Optimizer
from pymodules.optim.schedules import (
    Default,
    Exponential,
    LearningRateSchedule,
    MultiStep,
    Plateau,
    Poly,
    SequentialSchedule,
    Step,
    Warmup,
)
from pymodules.optim.summary import TrainSummary, ValidationSummary
from pymodules.optim.triggers import (
    EveryEpoch,
    MaxEpoch,
    MaxIteration,
    MaxScore,
    MinLoss,
    SeveralIteration,
    Trigger,
    TriggerAnd,
    TriggerOr,
)

__all__ = [
    "LBFGS", "SGD", "Adadelta", "Adagrad", "Adam", "Adamax", "AdamW", "Default", "EveryEpoch",
    "Exponential", "LearningRateSchedule", "MaxEpoch", "MaxIteration", "MaxScore", "MinLoss",
    "MultiStep", "OptimMethod", "Optimizer", "Plateau", "Poly", "RMSprop", "SequentialSchedule",
    "SeveralIteration", "Step", "TrainSummary", "Trigger", "TriggerAnd", "TriggerOr",
    "ValidationSummary", "Warmup",
]
