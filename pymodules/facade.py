"""How a module or a criterion reaches its kernels, and what a refusal becomes.

A layer method is its kernel call and its buffers, nothing else: no try, no checks. A kernel
checks its arguments before any C runs and refuses bad ones with a TypeError or ValueError
that names the argument and the numbers. The gate below is the one place that turns such a
refusal into an error naming the module:

- It sits inline in ``forward``/``backward`` (a try costs nothing until it raises) and around
  each protocol method a class defines, for callers that use those directly.
- A refused argument that is merely laid out differently (a strided view, a table holding
  one; for criteria also a target of another type) is made contiguous and the method runs
  again, off the fast path instead of a check on every call.
- Otherwise the error is raised again as ``"<module>: <reason>"``, of the same type, with the
  kernel's error as ``__cause__``. Each enclosing container, on the way out, puts its name in
  front of the path: ``"Sequential@1f/Linear@2a(4 -> 3): input has 5 features, expected 4"``.
- AttributeError, IndexError and every other exception pass untouched: they are bugs, not
  refusals.
"""

from __future__ import annotations

import numpy as np

REFUSALS = (TypeError, ValueError)

# The attribute on a retold error that says which module retold it.
_OWNER = "_pymodules_owner"


class Facade:
    """The gate shared by Module and Criterion (see the module docstring)."""

    #: protocol methods that get a gate when a subclass defines them; the raw definition
    #: stays reachable as ``_<name>`` for forward/backward, which carry their own gate.
    _GATED: tuple[str, ...] = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for name in cls._GATED:
            fn = cls.__dict__.get(name)
            if fn is not None and not getattr(fn, "_gate", False):
                setattr(cls, "_" + name, fn)
                setattr(cls, name, _gate(name, fn))

    def _refused(self, err: Exception, retry, args):
        """Handle ``err``, raised by a method of this object called with ``args``: run
        ``retry`` on fixed arguments, or raise ``err`` retold with this object's name."""
        owner = getattr(err, _OWNER, None)
        if owner is self:
            raise err
        if owner is not None:  # from a module inside this one: extend the path
            raise _retold(err, f"{self._label()}/", self) from err.__cause__
        try:
            fixed = self._fixed(args)
        except REFUSALS as bad:
            raise _retold(bad, f"{self._label()}: ", self) from err
        if fixed is not None:
            return retry(*fixed)
        # A check of this object's own may have named it already.
        named = str(err).startswith(self._name_of())
        raise _retold(err, "" if named else f"{self._label()}: ", self) from err

    def _fixed(self, args):
        """``args`` with their layout fixed, or None when nothing was there to fix; a
        TypeError when one cannot be an argument at all."""
        raise NotImplementedError

    def _label(self) -> str:
        """How errors name this object."""
        return str(self)

    def _name_of(self) -> str:
        """The start of this object's label (its name)."""
        return type(self).__name__


# np.ndarray as a name of this module: a global read costs less than an attribute of numpy's.
_ndarray = np.ndarray


def shape_of(arg) -> tuple:
    """``arg.shape`` for an array, () for anything else: a layer sizes its buffers from it
    and the kernel, given the non-array, refuses it and says why (no AttributeError)."""
    return arg.shape if isinstance(arg, _ndarray) else ()


def require_array(arg, what: str = "input") -> np.ndarray:
    """``arg`` itself if it is an array (any layout), else a TypeError naming ``what``: for
    the layers that work on it in NumPy before (or instead of) a kernel."""
    if not isinstance(arg, _ndarray):
        raise TypeError(f"{what} must be a numpy.ndarray, got {type(arg).__name__}")
    return arg


def in_use(owner, what: str) -> RuntimeError:
    """The error for ``owner.<what>()`` called while its forward or backward still runs."""
    return RuntimeError(
        f"{owner._label()}: {what} called while its forward or backward is still running; "
        f"it keeps its output and gradients between calls, so two threads cannot share it: "
        f"give each thread its own copy (cloneModule(), cloneCriterion())")


def has_gate(fn):
    """Marks a forward/backward that carries its gate inline (Module's, Criterion's)."""
    fn._gate = True
    return fn


def contiguous(arg, what: str, tables: bool = False):
    """``arg`` as a C-contiguous array (itself when it is one); with ``tables``, a (nested)
    list of such arrays. TypeError naming ``what`` for anything else."""
    if isinstance(arg, np.ndarray):
        return arg if arg.flags.c_contiguous else np.ascontiguousarray(arg)
    if tables and isinstance(arg, (list, tuple)):
        items = [contiguous(a, f"{what} {i}", True) for i, a in enumerate(arg)]
        return arg if all(f is a for f, a in zip(items, arg, strict=True)) else items
    raise TypeError(f"{what} must be a numpy.ndarray, got {type(arg).__name__}")


def fixed_arguments(args, names, tables: bool = False):
    """:func:`contiguous` over ``args`` (named ``names``); None when all were already fine."""
    # forward has one argument, backward two: ``names`` covers the longest.
    fixed = [contiguous(a, what, tables) for a, what in zip(args, names, strict=False)]
    return None if all(f is a for f, a in zip(fixed, args, strict=True)) else fixed


def _gate(name: str, fn):
    """``fn`` (a protocol method) with the gate around it; fixed arity where it can be, as
    ``*args`` costs a few hundred nanoseconds a call."""
    code = fn.__code__
    plain = fn.__defaults__ is None and not code.co_flags & 0x0C  # no defaults, *args, **kw
    arity = code.co_argcount - 1 if plain else -1
    if arity == 1:
        def gated(self, a):
            try:
                return fn(self, a)
            except REFUSALS as err:
                return self._refused(err, getattr(self, name), (a,))
    elif arity == 2:
        def gated(self, a, b):
            try:
                return fn(self, a, b)
            except REFUSALS as err:
                return self._refused(err, getattr(self, name), (a, b))
    else:
        def gated(self, *args):
            try:
                return fn(self, *args)
            except REFUSALS as err:
                return self._refused(err, getattr(self, name), args)
    gated.__name__ = name
    gated.__qualname__ = fn.__qualname__
    gated.__doc__ = fn.__doc__
    gated.__wrapped__ = fn
    gated._gate = True
    return gated


def _retold(err: Exception, prefix: str, owner) -> Exception:
    """``err`` retold with ``prefix`` in front of its message, marked as retold by ``owner``.

    The type and the further arguments are kept; a type whose message is not its first
    argument (a custom ``__str__``, such as UnicodeDecodeError's) is retold as its base
    TypeError or ValueError.
    """
    args = err.args
    new = None
    if type(err).__str__ is BaseException.__str__ and args and isinstance(args[0], str):
        try:
            new = type(err)(prefix + args[0], *args[1:])
        except Exception:
            new = None
    if new is None:
        new = (TypeError if isinstance(err, TypeError) else ValueError)(prefix + str(err))
    setattr(new, _OWNER, owner)
    return new
