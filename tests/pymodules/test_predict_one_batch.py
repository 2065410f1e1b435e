"""predict of a features array that fits in one batch (its short path) gives what the
general path over a DataSet gives: values, shapes, copies, modes, threads and errors."""

import numpy as np
import pytest
from threadpoolctl import threadpool_info

import pymodules as pm
from pymodules import threads


def _mlp(dtype=np.float32):
    return pm.Sequential().add(pm.Linear(5, 4, dtype=dtype)).add(pm.Tanh(dtype=dtype)) \
        .add(pm.Dropout(0.5, dtype=dtype)).add(pm.Linear(4, 3, dtype=dtype))


@pytest.mark.parametrize("x", [
    np.arange(10, dtype=np.float32).reshape(2, 5) / 10,
    np.arange(10, dtype=np.float64).reshape(2, 5) / 10,  # converted to the module's dtype
    np.arange(10, dtype=np.int64).reshape(2, 5),
    np.arange(20, dtype=np.float32).reshape(5, 4).T[:3, :].copy(order="F"),  # not C-ordered
    np.ones((1, 5), np.float32),
])
def test_same_as_the_general_path(x):
    m = _mlp()
    general = m.predict(pm.DataSet.array(x))
    short = m.predict(x)
    assert short.dtype == general.dtype == np.float32
    np.testing.assert_array_equal(short, general)
    assert short.shape == (len(x), 3)


def test_output_is_a_copy():
    m = _mlp()
    x = np.ones((2, 5), np.float32)
    out = m.predict(x)
    assert out.base is None and not np.shares_memory(out, m.output)
    kept = out.copy()
    m.predict(2 * x)
    np.testing.assert_array_equal(out, kept)


def test_ends_in_evaluation_even_when_only_a_child_trains():
    m = _mlp().evaluate()
    m.modules[2].training()  # the Dropout alone
    x = np.ones((64, 5), np.float32)
    a = m.predict(x)
    assert not any(mod.isTraining() for mod in m.modules_preorder())
    np.testing.assert_array_equal(a, m.predict(x))  # no dropout: deterministic


def test_a_module_dropping_the_batch_axis_of_one_sample():
    m = pm.Sequential().add(pm.Linear(3, 2)).add(pm.Squeeze())
    assert m.predict(np.ones((1, 3), np.float32)).shape == (1, 2)
    with pytest.raises(ValueError, match=r"returned shape \(\) for a batch of 1"):
        pm.Sequential().add(pm.Linear(3, 1)).add(pm.Squeeze()).predict(
            np.ones((1, 3), np.float32))


def test_several_outputs():
    m = pm.ConcatTable().add(pm.Linear(3, 2)).add(pm.Linear(3, 4))
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    short, general = m.predict(x), m.predict(pm.DataSet.array(x))
    assert [o.shape for o in short] == [(2, 2), (2, 4)]
    for a, b in zip(short, general, strict=True):
        np.testing.assert_array_equal(a, b)
        assert not np.shares_memory(a, m.output[0]) and not np.shares_memory(a, m.output[1])


@pytest.mark.parametrize("data, batchSize, err, match", [
    (np.zeros((0, 5), np.float32), None, ValueError, "empty"),
    (np.zeros(3, np.complex64), None, TypeError, "expected numbers"),
    (np.zeros((2, 5), np.float32), 0, ValueError, "batchSize must be a positive int"),
    (np.zeros((2, 5), np.float32), 1.5, ValueError, "batchSize must be a positive int"),
    (np.zeros((2, 6), np.float32), None, ValueError, "Linear"),
])
def test_errors_as_the_general_path(data, batchSize, err, match):
    with pytest.raises(err, match=match):
        _mlp().predict(data, batchSize)


def test_larger_than_one_batch_still_batches():
    m = _mlp()
    x = np.random.default_rng(0).standard_normal((10, 5)).astype(np.float32)
    # batches of 3 end with a batch of one (GEMV rather than GEMM: the last bit may differ)
    np.testing.assert_allclose(m.predict(x, batchSize=3), m.predict(x), rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(m.predictClass(x, batchSize=4), m.predict(x).argmax(1))


@pytest.fixture
def restore():
    saved = dict(threads._state)
    yield
    threads._state.update(saved)
    threads.use_threads(threads.getNumThreads())


def _blas_threads():
    return sorted({lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"})


def test_runs_on_one_thread_and_gives_the_threads_back(restore):
    pm.setNumThreads(2)
    seen = []

    class Spy(pm.Linear):
        def updateOutput(self, input):
            seen.append(_blas_threads())
            return super().updateOutput(input)

    m = pm.Sequential().add(Spy(5, 3))
    m.predict(np.ones((4, 5), np.float32))
    assert seen == [[1]]
    assert _blas_threads() == [2]
