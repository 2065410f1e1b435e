"""Shared check: a layer's refusal names the layer, then the numbers."""

import pytest


def assert_refusal_names_the_module(make, x, match, error=ValueError):
    """``make()``'s forward of ``x`` raises ``error`` matching ``match``, led by the module."""
    m = make()
    with pytest.raises(error, match=match) as info:
        m.forward(x)
    assert str(info.value).startswith(str(m))
