import numpy as np
import pytest
from gradcheck import assert_jacobian

import pymodules as pm


@pytest.mark.parametrize("shape", [(4,), (3, 4)])
@pytest.mark.parametrize("withBias", [True, False])
@pytest.mark.parametrize("wrt", ["input", "weight", "bias", "parameters"])
def test_jacobian(shape, withBias, wrt, rng):
    if wrt == "bias" and not withBias:
        pytest.skip("no bias to differentiate")
    m = pm.Linear(4, 5, withBias=withBias, dtype=np.float64)
    assert_jacobian(m, rng.standard_normal(shape), wrt=wrt)
