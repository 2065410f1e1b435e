# Aliasing rule of kernels that may run in place (Torch's ``inplace`` flag): an output may be
# exactly its input (same memory, same size) or share no byte with it; a partial overlap would
# read values already overwritten.

cimport numpy as cnp

from engine._check cimport disjoint

cnp.import_array()


cdef inline bint same_or_disjoint(cnp.ndarray out, str out_what,
                                  cnp.ndarray other, str other_what) except -1:
    """True when ``out`` is ``other``'s memory (in place); raise on a partial overlap."""
    if cnp.PyArray_DATA(out) == cnp.PyArray_DATA(other) and \
            cnp.PyArray_NBYTES(out) == cnp.PyArray_NBYTES(other):
        return True
    disjoint(out, out_what, other, other_what)
    return False
