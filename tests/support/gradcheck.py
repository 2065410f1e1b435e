"""The shared finite-difference Jacobian check (Torch7's nn.Jacobian).

Central differences with h = 1e-6 in float64, against the module's own backward, one
gradOutput basis vector at a time. Inputs and outputs may be arrays or (nested) lists of
arrays (tables). A layer's gradient test is then three lines:

    m = pm.Linear(4, 3, dtype=np.float64)
    x = np.random.default_rng(0).standard_normal((2, 4))
    assert_jacobian(m, x, wrt="input"); assert_jacobian(m, x, wrt="parameters")
"""

import numpy as np

import pymodules as pm

H = 1e-6
TOL = 1e-5


def flatten(t):
    """The arrays of a nested list, in order."""
    if isinstance(t, (list, tuple)):
        return [a for item in t for a in flatten(item)]
    return [t]


def _vector(t):
    return np.concatenate([np.asarray(a, np.float64).ravel() for a in flatten(t)])


def _basis_like(t, j):
    """A table shaped like ``t`` of zeros with a one at flat position ``j``."""
    if isinstance(t, (list, tuple)):
        out = []
        for item in t:
            size = _vector(item).size
            out.append(_basis_like(item, j if 0 <= j < size else -1))
            j -= size
        return out
    e = np.zeros_like(t)
    if j >= 0:
        e.flat[j] = 1.0
    return e


def _copy(t):
    if isinstance(t, (list, tuple)):
        return [_copy(a) for a in t]
    return np.array(t, copy=True)


def _forward(module, input, seed):
    if seed is not None:
        pm.setSeed(seed)
    return _copy(module.forward(input))


def _targets(module, input, wrt):
    """(arrays perturbed, arrays holding their analytic gradient) for ``wrt``."""
    if wrt == "input":
        return flatten(input), None
    if wrt == "parameters":
        return module.getParameters()
    for value, grad in module._params:
        if value == wrt:
            return [getattr(module, value)], [getattr(module, grad)]
    raise ValueError(f"{module} has no parameter {wrt!r}")


def jacobians(module, input, wrt="input", seed=None, h=H):
    """(analytic, numeric) Jacobians of flat(output) with respect to ``wrt``.

    ``wrt`` is "input", "parameters" (the getParameters() vector) or a parameter name
    ("weight", "bias", ...). ``seed`` reseeds pm before every forward, for stochastic modules.
    """
    values, grads = _targets(module, input, wrt)
    if isinstance(values, np.ndarray):
        values, grads = [values], [grads]
    out = _forward(module, input, seed)
    n_out = _vector(out).size
    n_in = sum(v.size for v in values)
    analytic = np.zeros((n_out, n_in))
    for j in range(n_out):
        e = _basis_like(out, j)
        module.zeroGradParameters()
        _forward(module, input, seed)
        gin = module.backward(input, e)
        got = flatten(gin) if grads is None else grads
        analytic[j] = np.concatenate([np.asarray(g, np.float64).ravel() for g in got])
    numeric = np.zeros((n_out, n_in))
    col = 0
    for v in values:
        flat = v.reshape(-1)
        for i in range(flat.size):
            orig = flat[i]
            flat[i] = orig + h
            plus = _vector(_forward(module, input, seed))
            flat[i] = orig - h
            minus = _vector(_forward(module, input, seed))
            flat[i] = orig
            numeric[:, col] = (plus - minus) / (2 * h)
            col += 1
    return analytic, numeric


def assert_jacobian(module, input, wrt="input", seed=None, tol=TOL):
    """Assert that backward agrees with central differences to ``tol``; return the error."""
    for a in flatten(input):
        if a.dtype != np.float64:
            raise TypeError("Jacobian checks run in float64")
    analytic, numeric = jacobians(module, input, wrt, seed)
    err = float(np.max(np.abs(analytic - numeric), initial=0.0))
    assert err <= tol, f"{module}: Jacobian w.r.t. {wrt} is off by {err:.3g} (tol {tol})"
    return err
