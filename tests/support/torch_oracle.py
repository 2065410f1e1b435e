"""Shared check against the PyTorch oracle (used by tests that already required torch)."""

import numpy as np


def assert_matches_torch(module, f, x, g, **tol):
    """``module``'s forward at ``x`` and backward of ``g`` equal those of torch's ``f`` (a
    function or a torch module) within ``tol``."""
    import torch

    y, gi = module.forward(x).copy(), module.backward(x, g).copy()
    tx = torch.from_numpy(x.copy()).requires_grad_()
    ty = f(tx)
    ty.backward(torch.from_numpy(g))
    np.testing.assert_allclose(y, ty.detach().numpy(), **tol)
    np.testing.assert_allclose(gi, tx.grad.numpy(), **tol)
