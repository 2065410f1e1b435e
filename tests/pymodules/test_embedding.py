import numpy as np
import pytest
from gradcheck import assert_jacobian

import pymodules as pm


@pytest.mark.parametrize("shape", [(4,), (2, 3)])
def test_lookup_and_jacobian(shape, rng):
    m = pm.LookupTable(6, 3, dtype=np.float64)
    idx = rng.integers(0, 6, shape)
    np.testing.assert_array_equal(m.forward(idx), m.weight[idx])
    assert_jacobian(m, idx.astype(np.float64), wrt="weight")


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.float32, np.float64])
def test_index_dtypes(dtype, rng):
    m = pm.LookupTable(5, 2)
    idx = np.array([[0, 4], [2, 2]], dtype)
    np.testing.assert_array_equal(m.forward(idx), m.weight[idx.astype(int)])
    gi = m.backward(idx, np.ones((2, 2, 2), np.float32))
    assert gi.shape == idx.shape and not gi.any()


def test_gradient_accumulation_padding_and_frequency(rng):
    m = pm.LookupTable(5, 2, paddingValue=1, shouldScaleGradByFreq=True, dtype=np.float64)
    idx = np.array([0, 1, 0, 3])
    g = rng.standard_normal((4, 2))
    m.forward(idx)
    m.backward(idx, g)
    want = np.zeros((5, 2))
    want[0] = (g[0] + g[2]) / 2
    want[3] = g[3]
    np.testing.assert_allclose(m.gradWeight, want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matches_torch_embedding(dtype, torch, rng):
    m = pm.LookupTable(7, 4, paddingValue=2, maxNorm=1.5, dtype=dtype)
    t = torch.nn.Embedding(7, 4, padding_idx=2, max_norm=1.5)
    t = t.to(torch.float32 if dtype == np.float32 else torch.float64)
    with torch.no_grad():
        t.weight.copy_(torch.from_numpy(m.weight))
    idx = rng.integers(0, 7, (3, 5))
    g = rng.standard_normal((3, 5, 4)).astype(dtype)
    y = m.forward(idx)
    m.backward(idx, g)
    ty = t(torch.from_numpy(idx))
    ty.backward(torch.from_numpy(g))
    tol = 1e-6 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(m.weight, t.weight.detach().numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(m.gradWeight, t.weight.grad.numpy(), rtol=tol, atol=tol)


def test_bad_indices_name_the_index_and_the_range():
    m = pm.LookupTable(5, 2)
    with pytest.raises(ValueError, match=r"index 5 at position \(1, 0\) is out of range "
                                         r"\[0, 5\)"):
        m.forward(np.array([[0, 1], [5, 2]]))
    with pytest.raises(ValueError, match=r"index -1 at position \(0,\) is out of range"):
        m.forward(np.array([-1]))
    with pytest.raises(ValueError, match=r"index 1.5 at position \(1,\) is not a whole"):
        m.forward(np.array([0.0, 1.5]))
    with pytest.raises(TypeError, match="expected indices"):
        m.forward(np.array([True]))
    with pytest.raises(ValueError, match="paddingValue 9"):
        pm.LookupTable(5, 2, paddingValue=9)


def test_defaults():
    pm.setSeed(0)
    m = pm.LookupTable(2000, 50)
    assert abs(m.weight.std() - 1) < 0.02 and abs(m.weight.mean()) < 0.02
    assert m.paddingValue is None and m.normType == 2.0
    assert set(m.getParametersTable()[m.getName()]) == {"weight", "gradWeight"}
