"""The library's random generators.

Initialisation draws from the global generator, in program order. Everything that keeps
drawing after it is made (an Optimizer's shuffle, a DataSet's, a Dropout layer's masks)
owns a ``Stream``: a generator of its own, derived from the global seed when the object is
created (the n-th stream made after ``setSeed(s)`` is child n of ``SeedSequence(s)``;
see ``Stream``).
What such an object draws depends only on the seed and on the order in which the objects
were created, never on what else runs, in this thread or in another: two Optimizers in two
threads give the same weights as the same two run one after the other.
"""

from __future__ import annotations

import threading

import numpy as np

_lock = threading.Lock()
_root = np.random.SeedSequence()
_children = 0  # streams derived from _root so far
_seeding = 0  # setSeed calls so far
_generator = np.random.default_rng(_root)


def setSeed(seed: int) -> None:
    """Make every later random draw of the library reproducible: initialisation, and the
    streams of the Optimizers, DataSets and dropout layers (created before or after)."""
    global _generator, _root, _children, _seeding
    with _lock:
        _root = np.random.SeedSequence(seed)
        _children = 0
        _seeding += 1
        _generator = np.random.default_rng(_root)


def generator() -> np.random.Generator:
    """The global generator, for initialisation (replaced by setSeed: fetch it, don't keep
    it)."""
    return _generator


class Stream:
    """A generator of its own. Its seed is fixed when the Stream is made: child n of the
    global seed for the n-th Stream made since ``setSeed`` (or ``seed`` and ``spawn_key``
    when given). The generator itself is built at the first draw (building one costs tens
    of microseconds; making a Stream, one lock).

    ``setSeed`` called after a Stream was made restarts it at its next draw, as the next
    child of the new seed (as if made then), so that ``setSeed(s)`` then a run repeats
    that run, as with one global generator. (That order is the order of the draws: for
    objects that will draw in several threads at once, call setSeed before making them.)

    A deep copy (``cloneModule``, MapTable's clones) is a stream of its own, derived from
    this one's seed: copies never repeat each other's draws.
    """

    __slots__ = ("_key", "_path", "_seeding", "_gen", "_copies")

    def __init__(self, seed=None, spawn_key=()):
        if seed is None:
            global _children
            with _lock:
                self._path = (_children,)
                _children += 1
                self._key = (_root.entropy, _root.spawn_key + self._path)
                self._seeding = _seeding
        else:  # a fixed seed, which setSeed leaves alone
            self._key, self._path, self._seeding = (seed, tuple(spawn_key)), (), None
        self._gen = None
        self._copies = 0

    @property
    def generator(self) -> np.random.Generator:
        g = self._gen
        if g is None or (self._seeding is not None and self._seeding != _seeding):
            g = self._build()
        return g

    def _build(self):
        global _children
        with _lock:
            if self._seeding is not None and self._seeding != _seeding:
                # made before the last setSeed: restart as if made now
                self._path = (_children,)
                _children += 1
                self._key = (_root.entropy, _root.spawn_key + self._path)
                self._seeding = _seeding
                self._copies = 0
            entropy, spawn_key = self._key
        g = self._gen = np.random.default_rng(np.random.SeedSequence(entropy,
                                                                     spawn_key=spawn_key))
        return g

    @property
    def state(self) -> dict:
        """The generator's state (a checkpoint saves it)."""
        return self.generator.bit_generator.state

    @state.setter
    def state(self, value: dict) -> None:
        self.generator.bit_generator.state = value

    def __deepcopy__(self, memo):
        with _lock:
            n = self._copies
            self._copies += 1
            copy = Stream.__new__(Stream)
            copy._key = (self._key[0], self._key[1] + (n,))
            copy._path = self._path + (n,)
            copy._seeding = self._seeding
        copy._gen = None
        copy._copies = 0
        return copy

    def __repr__(self):
        return f"Stream{self._key[1]}"


def module_streams(module) -> list[Stream]:
    """The streams of the modules of ``module``'s tree that own one (``_rng``), in
    pre-order: what a checkpoint saves and ``reseed`` replaces."""
    return [m._rng for m in module.modules_preorder() if hasattr(m, "_rng")]


def reseed(module, seed) -> None:
    """Give every module of ``module``'s tree that owns a stream a new one derived from
    ``seed`` (an int or a list of ints), in pre-order: the same seed, the same draws."""
    entropy = np.random.SeedSequence(seed).entropy
    owners = [m for m in module.modules_preorder() if hasattr(m, "_rng")]
    for i, m in enumerate(owners):
        m._rng = Stream(entropy, (i,))
