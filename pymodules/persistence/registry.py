"""The classes a file may name: pymodules' own Module and value classes, and registered ones.

Loading never imports a name found in a file; it looks the name up here.
"""

from __future__ import annotations

import contextlib

from pymodules.nn.module import Module

_registered: dict[str, type] = {}


def register(cls: type) -> type:
    """Allow files to rebuild ``cls`` (a Module subclass, or a small value class such as
    an init method whose state is its attributes); return it, so it works as a decorator.

    pymodules' own exported classes are registered already.
    """
    if not isinstance(cls, type):
        raise TypeError(f"register takes a class, got {type(cls).__name__}")
    known = registry().get(cls.__name__)
    if known is not None and known is not cls:
        raise ValueError(f"another class named {cls.__name__!r} is registered already")
    _registered[cls.__name__] = cls
    return cls


def registry() -> dict[str, type]:
    """{class name: class} of every class that files may name: the Module and value
    classes defined in the pymodules package (exported ones first, where two share a
    name), and those given to ``register``.

    Computed on each save or load, so classes added to the library later are covered
    without a list to maintain here.
    """
    import pymodules

    bases = (Module, *_value_bases())
    found = {}
    for name in pymodules.__all__:
        obj = getattr(pymodules, name, None)
        if isinstance(obj, type) and issubclass(obj, bases) and _ours(obj):
            found.setdefault(obj.__name__, obj)
    for base in bases:
        stack = [base]
        while stack:
            cls = stack.pop()
            stack.extend(cls.__subclasses__())
            if _ours(cls):
                found.setdefault(cls.__name__, cls)
    found.update(_registered)
    return found


def _ours(cls: type) -> bool:
    return cls.__module__ == "pymodules" or cls.__module__.startswith("pymodules.")


def _value_bases() -> tuple[type, ...]:
    """Base classes of the objects saved as their attributes: init methods, regularizers,
    criteria (where a module takes one), optim methods and their schedules, triggers."""
    from pymodules.nn.init import InitializationMethod
    from pymodules.nn.regularizers import L1L2Regularizer

    bases = [InitializationMethod, L1L2Regularizer]
    with contextlib.suppress(ImportError):
        from pymodules.criterion import Criterion

        bases.append(Criterion)
    with contextlib.suppress(ImportError):
        from pymodules.optim.methods import OptimMethod
        from pymodules.optim.schedules import LearningRateSchedule
        from pymodules.optim.triggers import Trigger

        bases.extend((OptimMethod, LearningRateSchedule, Trigger))
    return tuple(bases)


# The Keras-style classes (pymodules.keras, named Keras<Name> in files) are Modules of the
# library too: importing that package here registers them, so that a file naming one loads
# (on a Spark executor too) without the caller importing pymodules.keras first.
_registry_without_keras = registry


def registry() -> dict[str, type]:  # noqa: F811 - the definition above, with pymodules.keras
    import pymodules.keras  # noqa: F401

    return _registry_without_keras()
