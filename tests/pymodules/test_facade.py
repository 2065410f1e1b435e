"""The one way a module calls its kernels: what a refusal becomes, and what is not caught."""

import numpy as np
import pytest

import pymodules as pm
from pymodules.facade import contiguous


def test_a_refusal_names_the_module_keeps_its_type_and_cause(rng):
    m = pm.Linear(4, 3)
    with pytest.raises(ValueError) as info:
        m.forward(rng.standard_normal((2, 5)).astype(np.float32))
    err = info.value
    assert str(err).startswith(f"{m}: ")
    assert "input has 5 features, expected 4" in str(err)
    assert type(err.__cause__) is ValueError
    assert str(err.__cause__) == "input has 5 features, expected 4"


def test_direct_protocol_calls_go_through_the_same_gate(rng):
    m = pm.Linear(4, 3, dtype=np.float64)
    x = rng.standard_normal((2, 4))
    m.forward(x)
    with pytest.raises(ValueError, match=r"^Linear@\w+\(4 -> 3\): gradOutput"):
        m.updateGradInput(x, rng.standard_normal((2, 7)))
    with pytest.raises(ValueError, match=r"^Linear@\w+\(4 -> 3\): gradOutput"):
        m.accGradParameters(x, rng.standard_normal((2, 7)))
    # A strided argument is copied and the call runs again, as through forward/backward.
    g = rng.standard_normal((2, 6))[:, ::2]
    np.testing.assert_allclose(m.updateGradInput(x, g), g @ m.weight)


def test_a_nested_refusal_names_the_whole_path(rng):
    inner = pm.Linear(4, 3).setName("fc")
    model = pm.Sequential(pm.Sequential(inner).setName("block")).setName("net")
    with pytest.raises(ValueError) as info:
        model.forward(rng.standard_normal((2, 5)).astype(np.float32))
    assert str(info.value).startswith("net/block/fc(4 -> 3): input has 5 features")
    # The cause is the kernel's own error, not an intermediate retelling.
    assert str(info.value.__cause__) == "input has 5 features, expected 4"


def test_the_module_is_named_once_when_its_own_check_already_did(rng):
    m = pm.Concat(1)
    with pytest.raises(ValueError) as info:
        m.forward(rng.standard_normal((2, 3)))
    assert str(info.value).count(m.getName()) == 1


class _Buggy(pm.Module):
    """A layer with a bug: it reads an attribute that does not exist."""

    def updateOutput(self, input):
        return self.no_such_buffer


class _Refusing(pm.Module):
    """A layer whose kernel raises an error type that takes more than a message."""

    def updateOutput(self, input):
        raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")


def test_attribute_errors_are_bugs_and_pass_untouched(rng):
    m = _Buggy()
    with pytest.raises(AttributeError, match="no_such_buffer") as info:
        m.forward(rng.standard_normal(3))
    assert m.getName() not in str(info.value)
    with pytest.raises(AttributeError, match="no_such_buffer"):
        pm.Sequential(m).forward(rng.standard_normal(3))


def test_an_error_type_that_needs_more_arguments_is_still_named(rng):
    m = _Refusing()
    with pytest.raises(ValueError, match=f"^{m.getName()}: .*invalid start byte") as info:
        m.forward(rng.standard_normal(3))
    assert isinstance(info.value.__cause__, UnicodeDecodeError)


def test_further_arguments_of_the_error_are_kept():
    class Refusal(ValueError):
        pass

    class Layer(pm.Module):
        def updateOutput(self, input):
            raise Refusal("bad input", 42)

    m = Layer()
    with pytest.raises(Refusal) as info:
        m.forward(np.zeros(2))
    assert info.value.args == (f"{m.getName()}: bad input", 42)


def test_a_criterion_refusal_names_the_criterion(rng):
    c = pm.MSECriterion()
    with pytest.raises(ValueError, match=r"^MSECriterion: ") as info:
        c.forward(rng.standard_normal((2, 3)), rng.standard_normal((2, 4)))
    assert info.value.__cause__ is not None
    with pytest.raises(ValueError, match=r"^MSECriterion: "):
        c.updateGradInput(rng.standard_normal((2, 3)), rng.standard_normal((2, 4)))


def test_contiguous_copies_only_what_needs_it(rng):
    a = rng.standard_normal((3, 4))
    assert contiguous(a, "input") is a
    b = contiguous(a[:, ::2], "input")
    assert b.flags.c_contiguous and np.array_equal(b, a[:, ::2])
    t = [a, [a[:, ::2]]]
    fixed = contiguous(t, "input", tables=True)
    assert fixed[0] is a and fixed[1][0].flags.c_contiguous
    assert contiguous([a], "input", tables=True)[0] is a
    with pytest.raises(TypeError, match="input 1 0 must be a numpy.ndarray, got float"):
        contiguous([a, [1.0]], "input", tables=True)
    with pytest.raises(TypeError, match="input must be a numpy.ndarray, got list"):
        contiguous([a], "input")


def _examples():
    """Every module class of the library, built as the persistence tests build it."""
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).with_name("test_persistence.py")
    spec = importlib.util.spec_from_file_location("_persistence_examples", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for cls, makers in module.EXAMPLES.items():
        if cls is pm.Identity:  # passes any activity through, as BigDL's
            continue
        for i, (make, shape) in enumerate(makers):
            if shape is not None:
                yield pytest.param(make, id=f"{cls.__name__}{i}")


@pytest.mark.parametrize("make", list(_examples()))
@pytest.mark.parametrize("bad", [None, "text", 3.5])
def test_no_module_answers_a_non_array_with_an_attribute_error(make, bad):
    m = make()
    with pytest.raises((TypeError, ValueError)) as info:
        m.forward(bad)
    assert str(info.value).startswith(m.getName()), str(info.value)
