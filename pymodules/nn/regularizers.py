"""Weight regularizers: a penalty's gradient added inside accGradParameters."""

from pymodules.engine.regularizer import acc_regularization


class L1L2Regularizer:
    """Adds ``scale * (l1 * sign(w) + l2 * w)`` to the gradient of ``w``."""

    def __init__(self, l1=0.0, l2=0.0):
        if l1 < 0 or l2 < 0:
            raise ValueError(f"{type(self).__name__}: l1 and l2 must be >= 0, got {l1}, {l2}")
        self.l1, self.l2 = float(l1), float(l2)

    def _restored(self):
        """Persistence set the attributes from a file: check them as the constructor does."""
        if set(vars(self)) != {"l1", "l2"}:
            raise ValueError(f"{type(self).__name__}: the attributes are {sorted(vars(self))}, "
                             "expected ['l1', 'l2']")
        for value in (self.l1, self.l2):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or \
                    not 0 <= value < float("inf"):
                raise ValueError(f"{type(self).__name__}: l1 and l2 must be finite numbers "
                                 f">= 0, got {self.l1!r}, {self.l2!r}")
        self.l1, self.l2 = float(self.l1), float(self.l2)

    def accRegularization(self, parameter, gradParameter, scale):
        acc_regularization(parameter, gradParameter, self.l1, self.l2, scale)

    def __repr__(self):
        return f"{type(self).__name__}(l1={self.l1}, l2={self.l2})"


class L1Regularizer(L1L2Regularizer):
    def __init__(self, l1):
        super().__init__(l1, 0.0)

    def __repr__(self):
        return f"L1Regularizer({self.l1})"


class L2Regularizer(L1L2Regularizer):
    def __init__(self, l2):
        super().__init__(0.0, l2)

    def __repr__(self):
        return f"L2Regularizer({self.l2})"
