"""Signalling NaNs where memory is unset: the bits an uninitialised array may hold."""

import numpy as np


def poisoned(allocate):
    """``allocate`` (np.empty, np.empty_like) whose float arrays come filled with signalling
    NaNs, so that code reading them before writing them (or converting them) fails."""

    def allocate_poisoned(*args, **kwargs):
        a = allocate(*args, **kwargs)
        if a.dtype == np.float32:
            a.view(np.uint32)[...] = 0x7F800001
        elif a.dtype == np.float64:
            a.view(np.uint64)[...] = 0x7FF0000000000001
        return a

    return allocate_poisoned
