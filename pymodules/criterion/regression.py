"""Regression criteria: the L1 cost, the Keras-style losses (Poisson, mean absolute
percentage error, mean squared logarithmic error, KL divergence of probabilities), the
cosine distance and Dice coefficient of rows, and the Gaussian log-likelihood."""

from pymodules.criterion.base import Criterion
from pymodules.criterion.margin import _Elementwise
from pymodules.criterion.table import _pair, _TableCriterion
from pymodules.engine import loss_elementwise as E
from pymodules.engine import loss_rows as R


class L1Cost(_Elementwise):
    """The L1 norm sum |x| of the input (the target is not read; None will do); its
    gradient is sign(x), 0 at 0. Never averaged."""

    _op = E.L1_COST

    def __init__(self):
        super().__init__(False)

    def _convert_target(self, target, input):
        return target


class PoissonCriterion(_Elementwise):
    """Keras's Poisson loss mean(x - y log(x + 1e-7)) of predicted rates x and counts y."""

    _op = E.POISSON

    def __init__(self):
        super().__init__(True)


class MeanAbsolutePercentageCriterion(_Elementwise):
    """Keras's mean absolute percentage error 100 mean(|x - y| / clip(|y|, 1e-7, max)),
    relative to the target y, as Keras's ``mean_absolute_percentage_error(y, x)``."""

    _op = E.PERCENTAGE

    def __init__(self):
        super().__init__(True)


class MeanSquaredLogarithmicCriterion(_Elementwise):
    """Keras's mean squared logarithmic error mean((log(c(y) + 1) - log(c(x) + 1))^2),
    c clipping to [1e-7, max]; no gradient where x is clipped."""

    _op = E.SQUARED_LOG

    def __init__(self):
        super().__init__(True)


class KullbackLeiblerDivergenceCriterion(_Elementwise):
    """Keras's KL divergence sum y log(c(y) / c(x)) of predicted probabilities x from
    target probabilities y, c clipping to [1e-8, 1]; divided by the batch size (the first
    axis; 1 for a vector). No gradient where x is clipped."""

    _op = E.KL_DIVERGENCE

    def __init__(self):
        super().__init__(True)

    def _norm(self):
        return E.PER_ROW


class CosineDistanceCriterion(Criterion):
    """1 - cos(x, y) of each row of input and target ((batch, n) or (n,)), with 1e-12 added
    to each squared norm; summed over the rows, averaged when sizeAverage. The target gets
    no gradient."""

    def __init__(self, sizeAverage=True):
        super().__init__(sizeAverage)

    def updateOutput(self, input, target):
        return R.cosine_distance_update_output(input, target, self.sizeAverage)

    def updateGradInput(self, input, target):
        g = self.gradInput = self._grad_like(input)
        R.cosine_distance_update_grad_input(input, target, g, self.sizeAverage)
        return g


class DiceCoefficientCriterion(Criterion):
    """1 - (2 sum x y + epsilon) / (sum x + sum y + epsilon) of each row of input and target
    ((batch, n) or (n,); reshape larger inputs to (batch, -1)); summed over the rows,
    averaged when sizeAverage."""

    def __init__(self, sizeAverage=True, epsilon=1.0):
        super().__init__(sizeAverage)
        self.epsilon = float(epsilon)

    def updateOutput(self, input, target):
        return R.dice_update_output(input, target, self.epsilon, self.sizeAverage)

    def updateGradInput(self, input, target):
        g = self.gradInput = self._grad_like(input)
        R.dice_update_grad_input(input, target, g, self.epsilon, self.sizeAverage)
        return g

    def extraRepr(self):
        return f"epsilon={self.epsilon}"


class GaussianCriterion(_TableCriterion):
    """Negative log-likelihood of the target under N(mean, exp(logVar)): input
    [mean, logVar], target shaped like them; sum of 0.5 logVar + 0.5 log(2 pi)
    + 0.5 (target - mean)^2 / exp(logVar). Never averaged."""

    def __init__(self):
        super().__init__(False)

    def updateOutput(self, input, target):
        mean, log_var = _pair(self, input, "mean, logVar")
        return E.gaussian_update_output(mean, log_var, target)

    def updateGradInput(self, input, target):
        mean, log_var = _pair(self, input, "mean, logVar")
        g = self._grads(mean, log_var)
        E.gaussian_update_grad_input(mean, log_var, target, g[0], g[1])
        return g
