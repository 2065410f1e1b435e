"""Build of pymodules: the Cython kernels in engine/ become the package pymodules.engine.

Cython directives live here and only here. PYMODULES_DEBUG=1 turns bounds, wraparound and
initialisation checks on for debugging a kernel.

What an install does, in order: Cython translates each engine/*.pyx to C (one process per
core; a .c newer than its .pyx and the shared .pxd/.h is kept), then the C compiler builds one
extension per kernel module, as many at once as there are cores. A module whose compiled file
in engine/ is newer than its sources, its shared headers, this file and the build settings
(build/settings.txt: flags, directives, Cython, NumPy and SciPy versions) is neither translated
nor compiled again: a second ``pip install -e`` in the same tree only copies it.
"""

import os
import shutil
import sys
import sysconfig
from pathlib import Path

import Cython
import numpy
import scipy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

DEBUG = os.environ.get("PYMODULES_DEBUG", "") not in ("", "0")

DIRECTIVES = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": True,
    "embedsignature": True,
}
# -O3 stays: the elementwise loops need its vectoriser (float32 SGD step on 2^20 numbers:
# 753 us at -O2, 213 us at -O3). -g0 drops the debug information Python's own flags ask
# for: about a third of the compile time (conv.c at -O3: 5.8 -> 4.1 s), no runtime effect.
# Cython emits helpers a module may not use: their warnings say nothing about our code.
# -ffp-contract=off: GCC would fuse a*b+c into one FMA in the AVX-512 clones of vecmath.h
# but not in the AVX2 or baseline ones, so results (and error bounds) would depend on the CPU.
COMPILE_ARGS = (["-O3", "-g0", "-ffp-contract=off", "-Wno-unused-function"] if not DEBUG
                else ["-O0", "-g", "-ffp-contract=off"])

# Anything that changes the compiled code without touching a source: a change rebuilds all.
SETTINGS = Path("build/settings.txt")
settings = (f"compile {COMPILE_ARGS}\ndirectives {sorted(DIRECTIVES.items())}\n"
            f"Cython {Cython.__version__}\nnumpy {numpy.__version__}\nscipy {scipy.__version__}\n"
            f"python {sys.implementation.cache_tag}\n")
SETTINGS_CHANGED = not SETTINGS.exists() or SETTINGS.read_text() != settings
if SETTINGS_CHANGED:
    SETTINGS.parent.mkdir(exist_ok=True)
    SETTINGS.write_text(settings)

# Shared headers and declarations: a change to one rebuilds every kernel.
HEADERS = sorted(str(p) for pattern in ("*.h", "*.pxd") for p in Path("engine").glob(pattern))
DEPENDS = HEADERS + ["setup.py", str(SETTINGS)]


class BuildExt(build_ext):
    """build_ext that compiles in parallel and reuses an up-to-date module from engine/.

    An editable install builds in a new temporary folder each time, so setuptools' own
    up-to-date check never holds there; the in-place copy that the previous install left in
    engine/ does, when it is newer than every source and dependency of its module."""

    def finalize_options(self):
        super().finalize_options()
        if self.parallel is None:
            self.parallel = os.cpu_count() or 1

    def build_extension(self, ext):
        inplace, regular = self._get_inplace_equivalent(
            self.get_finalized_command("build_py"), ext)
        if not self.force and os.path.exists(inplace) and not any(
                os.path.getmtime(src) > os.path.getmtime(inplace)
                for src in list(ext.sources) + list(ext.depends)):
            print(f"{ext.name}: up to date in {inplace}, not compiled", flush=True)
            if os.path.abspath(inplace) != os.path.abspath(regular):
                os.makedirs(os.path.dirname(regular), exist_ok=True)
                shutil.copy2(inplace, regular)
            return
        print(f"{ext.name}: compiling", flush=True)
        super().build_extension(ext)


def _built(pyx):
    """Whether engine/NAME.pyx has a C file and a compiled module in engine/ newer than it and
    every dependency of ours. Cython's own check would also count the .pxd files of Cython and
    SciPy, which pip installs anew (new times) into each isolated build environment; their
    versions are in the settings instead."""
    c, so = pyx.with_suffix(".c"), pyx.with_name(pyx.stem + sysconfig.get_config_var("EXT_SUFFIX"))
    if SETTINGS_CHANGED or not (c.exists() and so.exists()):
        return False
    newest = max(os.path.getmtime(p) for p in [pyx, c] + DEPENDS)
    return os.path.getmtime(so) >= newest


def _extension(pyx, source):
    return Extension(
        f"pymodules.engine.{pyx.stem}",
        [str(source)],
        depends=DEPENDS,
        include_dirs=[numpy.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_9_API_VERSION")],
        extra_compile_args=COMPILE_ARGS,
    )


PYX = sorted(Path("engine").glob("*.pyx"))
built = [_extension(pyx, pyx.with_suffix(".c")) for pyx in PYX if _built(pyx)]
to_build = [_extension(pyx, pyx) for pyx in PYX if not _built(pyx)]

setup(
    package_dir={"pymodules.engine": "engine"},
    cmdclass={"build_ext": BuildExt},
    ext_modules=built + (cythonize(
        to_build,
        include_path=["."],
        compiler_directives=DIRECTIVES,
        nthreads=os.cpu_count() or 1,
        force=SETTINGS_CHANGED,  # directives are not in Cython's own up-to-date check
    ) if to_build else []),
)
