"""Modules: the Module contract, layers and containers."""

from pymodules.nn.containers import Container, Sequential
from pymodules.nn.init import (
    ConstInitMethod,
    InitializationMethod,
    MsraFiller,
    Ones,
    RandomNormal,
    RandomUniform,
    Xavier,
    Zeros,
)
from pymodules.nn.linear import Linear
from pymodules.nn.module import Module
from pymodules.nn.regularizers import L1L2Regularizer, L1Regularizer, L2Regularizer

AbstractModule = Module

__all__ = [
    "AbstractModule", "ConstInitMethod", "Container", "InitializationMethod", "L1L2Regularizer",
    "L1Regularizer", "L2Regularizer", "Linear", "Module", "MsraFiller", "Ones", "RandomNormal",
    "RandomUniform", "Sequential", "Xavier", "Zeros",
]
