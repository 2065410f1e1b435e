"""ruff and cython-lint, with the project's settings (pyproject.toml), over the whole tree."""

import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
BIN = pathlib.Path(sys.executable).parent


def _run(tool, *args):
    exe = BIN / tool
    if not exe.exists():
        pytest.fail(f"{tool} is not installed: pip install -e \".[test]\"")
    # cython-lint runs pycodestyle by name: the environment's bin comes first on PATH.
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run([str(exe), *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, f"{tool} {' '.join(args)}:\n{done.stdout}{done.stderr}"


def test_ruff_is_clean():
    _run("ruff", "check", ".")


def test_cython_lint_is_clean():
    _run("cython-lint", "engine")
