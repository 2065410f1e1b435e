"""The build says nothing but its progress: Cython translates every kernel without a warning
under the release directives of setup.py, and the project metadata raises no deprecation."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# setup.py's DIRECTIVES without PYMODULES_DEBUG
RELEASE = ["-3", "-X", "boundscheck=False", "-X", "wraparound=False", "-X",
           "initializedcheck=False", "-X", "cdivision=True", "-X", "embedsignature=True"]


def test_kernels_translate_without_warnings(tmp_path):
    pytest.importorskip("Cython")
    shutil.copytree(ROOT / "engine", tmp_path / "engine",
                    ignore=shutil.ignore_patterns("*.c", "*.so", "*.html", "__pycache__"))
    sources = sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "engine").glob("*.pyx"))
    assert len(sources) > 10
    run = subprocess.run(
        [sys.executable, "-m", "Cython.Build.Cythonize", "-j", "2", "-f", *RELEASE, *sources],
        cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    said = [line for line in (run.stdout + run.stderr).splitlines()
            if "warning" in line.lower()]
    assert said == []
    assert len(list((tmp_path / "engine").glob("*.c"))) == len(sources)


def test_project_metadata_raises_no_deprecation():
    code = ("import warnings; warnings.simplefilter('error')\n"
            "from setuptools.config.pyprojecttoml import apply_configuration\n"
            "from setuptools.dist import Distribution\n"
            "dist = apply_configuration(Distribution(), 'pyproject.toml')\n"
            "print(dist.metadata.license_expression or dist.metadata.license)\n")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "Apache-2.0"
