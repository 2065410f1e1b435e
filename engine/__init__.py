"""pymodules' compiled kernels: compute only.

Each Python-callable function validates its arguments (types, dtypes, shapes, contiguity,
aliasing, sizes) and raises ``TypeError``/``ValueError`` with the numbers before any C runs;
it then writes into arrays the caller owns and returns nothing. Names, state and modes live
in ``pymodules``; nothing here imports it.
"""
