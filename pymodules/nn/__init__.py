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
from pymodules.nn.distance import (
    MM,
    MV,
    CosineDistance,
    DotProduct,
    Euclidean,
    PairwiseDistance,
)
from pymodules.nn.dropout import Dropout
from pymodules.nn.elementwise import (
    Add,
    Bilinear,
    CAdd,
    CMul,
    Cosine,
    Highway,
    Maxout,
    Mul,
    Scale,
)
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
from pymodules.nn.padding import (
    Cropping2D,
    Cropping3D,
    Padding,
    ResizeBilinear,
    SpatialZeroPadding,
    UpSampling1D,
    UpSampling2D,
    UpSampling3D,
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
from pymodules.nn.volumetric import (
    VolumetricAveragePooling,
    VolumetricConvolution,
    VolumetricFullConvolution,
    VolumetricMaxPooling,
)

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

from pymodules.nn.arithmetic import (  # noqa: E402
    AddConstant,
    CAveTable,
    CDivTable,
    CMinTable,
    MulConstant,
    Negative,
)
from pymodules.nn.layer_norm import LayerNormalization  # noqa: E402
from pymodules.nn.reduction import Max, Mean, Min, Sum  # noqa: E402

__all__ += [
    "AddConstant", "CAveTable", "CDivTable", "CMinTable", "LayerNormalization", "Max", "Mean",
    "Min", "MulConstant", "Negative", "Sum",
]
__all__ += ["Add", "CAdd", "CMul", "Mul", "Scale"]
__all__ += ["CosineDistance", "DotProduct", "Euclidean", "MM", "MV", "PairwiseDistance"]
__all__ += ["Bilinear", "Cosine", "Highway", "Maxout"]
__all__ += [
    "Cropping2D", "Cropping3D", "Padding", "ResizeBilinear", "SpatialZeroPadding", "UpSampling1D",
    "UpSampling2D", "UpSampling3D",
]
__all__ += [
    "VolumetricAveragePooling", "VolumetricConvolution", "VolumetricFullConvolution",
    "VolumetricMaxPooling",
]
# more activations, noise layers and copying shape modules
from pymodules.nn.activation import (  # noqa: E402
    BinaryThreshold,
    HardShrink,
    LogSigmoid,
    RReLU,
    SoftShrink,
    TanhShrink,
)
from pymodules.nn.noise import (  # noqa: E402
    GaussianDropout,
    GaussianNoise,
    Masking,
    SpatialDropout1D,
    SpatialDropout2D,
    SpatialDropout3D,
)
from pymodules.nn.shape_ops import ExpandSize, Index, Pack, Reverse, Tile  # noqa: E402

__all__ += [
    "BinaryThreshold", "HardShrink", "LogSigmoid", "RReLU", "SoftShrink", "TanhShrink",
    "GaussianDropout", "GaussianNoise", "Masking", "SpatialDropout1D", "SpatialDropout2D",
    "SpatialDropout3D", "ExpandSize", "Index", "Pack", "Reverse", "Tile",
]
from pymodules.nn.recurrent import (  # noqa: E402
    GRU,
    LSTM,
    BiRecurrent,
    LSTMPeephole,
    Recurrent,
    RnnCell,
)

__all__ += ["BiRecurrent", "GRU", "LSTM", "LSTMPeephole", "Recurrent", "RnnCell"]
from pymodules.nn.transformer import Attention, FeedForwardNetwork, Transformer  # noqa: E402

__all__ += ["Attention", "FeedForwardNetwork", "Transformer"]
from pymodules.nn.attention import MultiHeadAttention, TransformerEncoderLayer  # noqa: E402

__all__ += ["MultiHeadAttention", "TransformerEncoderLayer"]
