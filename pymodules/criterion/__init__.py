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
