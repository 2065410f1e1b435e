"""Build of pymodules: the Cython kernels in engine/ become the package pymodules.engine.

Cython directives live here and only here. PYMODULES_DEBUG=1 turns bounds, wraparound and
initialisation checks on for debugging a kernel.
"""

import os
from pathlib import Path

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("PYMODULES_DEBUG", "") not in ("", "0")

DIRECTIVES = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": True,
    "embedsignature": True,
}

# Shared headers and declarations: a change to one rebuilds every kernel.
HEADERS = sorted(str(p) for pattern in ("*.h", "*.pxd") for p in Path("engine").glob(pattern))

extensions = [
    Extension(
        f"pymodules.engine.{pyx.stem}",
        [str(pyx)],
        depends=HEADERS,
        include_dirs=[numpy.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_9_API_VERSION")],
        extra_compile_args=["-O3"] if not DEBUG else ["-O0", "-g"],
    )
    for pyx in sorted(Path("engine").glob("*.pyx"))
]

setup(
    package_dir={"pymodules.engine": "engine"},
    ext_modules=cythonize(
        extensions,
        include_path=["."],
        compiler_directives=DIRECTIVES,
        nthreads=os.cpu_count() or 1,
    ),
)
