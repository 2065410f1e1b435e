"""The README is the first page a user reads: its commands are CI's, and its code runs."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from readme_blocks import blocks

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci in README.read_text().splitlines()


def test_every_block_is_labelled():
    """python and pycon blocks run; sh blocks are commands; nothing is left unlabelled."""
    langs = [lang for lang, _, _ in blocks(README.read_text())]
    assert set(langs) <= {"python", "pycon", "sh"}, langs
    assert "python" in langs and "pycon" in langs


def test_block_parser_finds_an_unclosed_block():
    with pytest.raises(ValueError, match="line 2"):
        blocks("text\n```python\nx = 1\n")


def test_every_readme_block_runs_in_order(tmp_path):
    """A fresh interpreter runs every python block and doctest in order, in an empty folder,
    against a local S3 server and a local hdfs:// stand-in."""
    pytest.importorskip("s3fs")
    pytest.importorskip("moto.server")
    pytest.importorskip("sklearn")
    env = dict(os.environ, PYTHONPATH=str(ROOT / "tests" / "support"),
               PYSPARK_PYTHON=sys.executable, PYSPARK_SUBMIT_ARGS="--master local[2] pyspark-shell")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "support" / "readme_blocks.py"), str(README),
         "--fixtures"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    ran = [line for line in proc.stdout.splitlines() if line.startswith("ran ")]
    runnable = sum(lang in ("python", "pycon") for lang, _, _ in blocks(README.read_text()))
    assert len(ran) == runnable - proc.stdout.count("skipped ")
