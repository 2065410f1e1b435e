"""Criteria: losses of (input, target) and their gradients."""

from pymodules.criterion.base import Criterion
from pymodules.criterion.classification import ClassNLLCriterion, CrossEntropyCriterion
from pymodules.criterion.containers import (
    MultiCriterion,
    ParallelCriterion,
    TimeDistributedCriterion,
)
from pymodules.criterion.pointwise import (
    AbsCriterion,
    BCECriterion,
    DistKLDivCriterion,
    MarginCriterion,
    MSECriterion,
    MultiLabelSoftMarginCriterion,
    SmoothL1Criterion,
)
from pymodules.criterion.table import CosineEmbeddingCriterion, KLDCriterion

__all__ = [
    "AbsCriterion", "BCECriterion", "ClassNLLCriterion", "CosineEmbeddingCriterion",
    "Criterion", "CrossEntropyCriterion", "DistKLDivCriterion", "KLDCriterion",
    "MarginCriterion", "MSECriterion", "MultiCriterion", "MultiLabelSoftMarginCriterion",
    "ParallelCriterion", "SmoothL1Criterion", "TimeDistributedCriterion",
]

from pymodules.criterion.margin import (  # noqa: E402
    HingeEmbeddingCriterion,
    L1HingeEmbeddingCriterion,
    MarginRankingCriterion,
    MultiLabelMarginCriterion,
    MultiMarginCriterion,
    SoftMarginCriterion,
)
from pymodules.criterion.regression import (  # noqa: E402
    CosineDistanceCriterion,
    DiceCoefficientCriterion,
    GaussianCriterion,
    KullbackLeiblerDivergenceCriterion,
    L1Cost,
    MeanAbsolutePercentageCriterion,
    MeanSquaredLogarithmicCriterion,
    PoissonCriterion,
)
from pymodules.criterion.softmax import CategoricalCrossEntropy, SoftmaxWithCriterion  # noqa: E402

__all__ += [
    "CategoricalCrossEntropy", "CosineDistanceCriterion", "DiceCoefficientCriterion",
    "GaussianCriterion", "HingeEmbeddingCriterion", "KullbackLeiblerDivergenceCriterion",
    "L1Cost", "L1HingeEmbeddingCriterion", "MarginRankingCriterion",
    "MeanAbsolutePercentageCriterion", "MeanSquaredLogarithmicCriterion",
    "MultiLabelMarginCriterion", "MultiMarginCriterion", "PoissonCriterion",
    "SoftMarginCriterion", "SoftmaxWithCriterion",
]
