"""Constructor recording: how persistence rebuilds an object without per-class code."""

import functools
import inspect


class Recorded:
    """Keeps the arguments of the outermost constructor call in ``self._ctor``.

    Subclasses need do nothing: every ``__init__`` they define is wrapped once, at class
    creation, and only the outermost call (the subclass's own) is recorded.
    """

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None:
            return

        @functools.wraps(init)
        def recording_init(self, *args, **kw):
            # getattr, not self.__dict__: touching __dict__ turns the object's inline
            # attribute values into a dict, which CPython 3.11 no longer specialises.
            if getattr(self, "_ctor", None) is None:
                self._ctor = (args, kw)
            init(self, *args, **kw)

        cls.__init__ = recording_init

    def _unrecord(self, *names):
        """Drop the arguments ``names`` from the record, as if the caller had left them out.

        For arguments used once, while constructing (initial arrays): the record would
        otherwise keep the caller's objects alive for the life of the object, and files
        would store them next to the state that replaced them.
        """
        record = getattr(self, "_ctor", None)
        if record is None:
            return
        args, kw = record
        bound = inspect.signature(type(self).__init__).bind(None, *args, **kw)
        if not any(bound.arguments.get(n) is not None for n in names):
            return
        for n in names:
            bound.arguments.pop(n, None)
        self._ctor = (tuple(bound.args[1:]), dict(bound.kwargs))
