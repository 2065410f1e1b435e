"""The Keras-style API (Keras 1.2 names and arguments, as BigDL exposes them).

A Keras model is a pymodules Module underneath: the same kernels, persistence and Spark paths.
"""
