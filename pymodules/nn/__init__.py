"""Modules: the Module contract, layers and containers."""

from pymodules.nn.activation import (
    ELU,
    Abs,
    Clamp,
    Exp,
    HardSigmoid,
    HardTanh,
    LeakyReLU,
    Log,
    LogSoftMax,
    Power,
    PReLU,
    ReLU,
    ReLU6,
    Sigmoid,
    SoftMax,
    SoftMin,
    SoftPlus,
    SoftSign,
    Sqrt,
    Square,
    Tanh,
    Threshold,
)
from pymodules.nn.containers import (
    Concat,
    ConcatTable,
    Container,
    MapTable,
    ParallelTable,
    Sequential,
)
from pymodules.nn.conv import (
    SpatialConvolution,
    SpatialDilatedConvolution,
    SpatialFullConvolution,
    TemporalConvolution,
)
from pymodules.nn.dropout import Dropout
from pymodules.nn.embedding import LookupTable
from pymodules.nn.graph import Graph, Input, Model, Node
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
from pymodules.nn.normalization import (
    BatchNormalization,
    Normalize,
    SpatialBatchNormalization,
    SpatialCrossMapLRN,
)
from pymodules.nn.pooling import SpatialAveragePooling, SpatialMaxPooling, TemporalMaxPooling
from pymodules.nn.regularizers import L1L2Regularizer, L1Regularizer, L2Regularizer
from pymodules.nn.shape import (
    Contiguous,
    Identity,
    InferReshape,
    Narrow,
    Replicate,
    Reshape,
    Select,
    Squeeze,
    Transpose,
    Unsqueeze,
    View,
)
from pymodules.nn.table import (
    CAddTable,
    CMaxTable,
    CMulTable,
    CSubTable,
    FlattenTable,
    JoinTable,
    NarrowTable,
    SelectTable,
    SplitTable,
)
from pymodules.nn.timedistributed import TimeDistributed

AbstractModule = Module

__all__ = [
    "AbstractModule", "ConstInitMethod", "Container", "InitializationMethod", "L1L2Regularizer",
    "L1Regularizer", "L2Regularizer", "Linear", "Module", "MsraFiller", "Ones", "RandomNormal",
    "RandomUniform", "Sequential", "Xavier", "Zeros",
    # containers, graphs, table and shape modules
    "CAddTable", "CMaxTable", "CMulTable", "CSubTable", "Concat", "ConcatTable", "Contiguous",
    "FlattenTable", "Graph", "Identity", "Input", "JoinTable", "MapTable", "Model", "Narrow",
    "NarrowTable", "Node", "ParallelTable", "Replicate", "Reshape", "Select", "SelectTable",
    "SplitTable", "Squeeze", "Transpose", "Unsqueeze", "View",
    "SpatialConvolution", "SpatialDilatedConvolution", "SpatialFullConvolution",
    "TemporalConvolution", "SpatialAveragePooling", "SpatialMaxPooling", "TemporalMaxPooling",
]
__all__ += [
    "Abs", "BatchNormalization", "Clamp", "Dropout", "ELU", "Exp", "HardSigmoid", "HardTanh",
    "LeakyReLU", "Log", "LogSoftMax", "LookupTable", "Normalize", "PReLU", "Power", "ReLU",
    "ReLU6", "Sigmoid", "SoftMax", "SoftMin", "SoftPlus", "SoftSign", "SpatialBatchNormalization",
    "SpatialCrossMapLRN", "Sqrt", "Square", "Tanh", "Threshold",
]
__all__ += ["InferReshape", "TimeDistributed"]

from pymodules.nn.recurrent import (  # noqa: E402
    GRU,
    LSTM,
    BiRecurrent,
    LSTMPeephole,
    Recurrent,
    RnnCell,
)

__all__ += ["BiRecurrent", "GRU", "LSTM", "LSTMPeephole", "Recurrent", "RnnCell"]
