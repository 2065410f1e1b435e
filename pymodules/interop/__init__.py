"""Models in and out: ONNX files, PyTorch modules and BigDL's flat parameters.

onnx, onnxruntime and torch are optional extras (``pip install pymodules[onnx]``); they are
imported only when one of these functions runs, never by ``import pymodules``.
"""
