"""Constructor recording: how persistence rebuilds an object without per-class code."""

import functools


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
            if "_ctor" not in self.__dict__:
                self._ctor = (args, kw)
            init(self, *args, **kw)

        cls.__init__ = recording_init
