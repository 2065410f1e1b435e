"""Run the README's code blocks in order, as a reader pasting them into one interpreter would.

``python readme_blocks.py README.md`` executes every ```python block and checks every ```pycon
block as a doctest, all in one namespace, in the current folder. Blocks that import pyspark
are skipped (and listed) when pyspark is not installed. ``--fixtures`` first starts what the
README's storage lines talk to: a moto S3 server on 127.0.0.1 with the bucket ``bucket``,
and ``hdfs://`` as an fsspec filesystem over a temporary folder (no HDFS server runs here).
Prints one line per block; exits 1 at the first block that fails.
"""

from __future__ import annotations

import argparse
import doctest
import importlib.util
import os
import re
import sys
import tempfile
import traceback

FENCE = re.compile(r"^```(\w*)\s*$")


def blocks(text: str) -> list[tuple[str, int, str]]:
    """(language, first line number, code) of every fenced block, in order."""
    found, lang, start, lines = [], None, 0, []
    for number, line in enumerate(text.splitlines(), 1):
        m = FENCE.match(line)
        if lang is None and m:
            lang, start, lines = m.group(1), number + 1, []
        elif lang is not None and line.rstrip() == "```":
            found.append((lang, start, "\n".join(lines) + "\n"))
            lang = None
        elif lang is not None:
            lines.append(line)
    if lang is not None:
        raise ValueError(f"README: the block opened at line {start - 1} is never closed")
    return found


def needs_spark(code: str) -> bool:
    return re.search(r"^\s*(from|import) pyspark", code, re.M) is not None


def temp_hdfs_class(root: str):
    """An fsspec filesystem serving ``hdfs://host:port/path`` as the local folder root/path.

    fsspec's own "hdfs" needs pyarrow and a running HDFS; pymodules relies on the fsspec
    interface (open, exists, mv), which this provides with a non-object store's semantics:
    files visible while written, parents made on write.
    """
    import fsspec
    from fsspec.implementations.local import LocalFileSystem

    class TempHDFS(LocalFileSystem):
        protocol = ("hdfs",)

        def __init__(self, *args, **kwargs):
            super().__init__(auto_mkdir=True)  # HDFS creates the parents of a new file

        @classmethod
        def _strip_protocol(cls, path):
            path = fsspec.utils.stringify_path(path)
            if path.startswith("hdfs://"):
                rest = path[len("hdfs://"):]
                path = root + "/" + (rest.split("/", 1)[1] if "/" in rest else "")
            elif not path.startswith(root):
                path = root + "/" + path.lstrip("/")
            return LocalFileSystem._strip_protocol(path)

    return TempHDFS


def temp_hdfs(root: str) -> None:
    """Register temp_hdfs_class(root) for hdfs://, process-wide."""
    import fsspec

    fsspec.register_implementation("hdfs", temp_hdfs_class(root), clobber=True)


def moto_s3(bucket: str):
    """A moto S3 server on 127.0.0.1 holding an empty ``bucket``; the environment points
    botocore at it. Returns the server (stop it when done)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    os.environ.update({"AWS_ENDPOINT_URL": f"http://{host}:{port}",
                       "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1"})
    import s3fs

    s3fs.S3FileSystem(client_kwargs={"endpoint_url": os.environ["AWS_ENDPOINT_URL"]}).mkdir(bucket)
    s3fs.S3FileSystem.clear_instance_cache()
    return server


def run(path: str) -> int:
    with open(path, encoding="utf-8") as f:
        text = f.read()
    namespace = {"__name__": "__main__"}
    have_spark = importlib.util.find_spec("pyspark") is not None
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    parser = doctest.DocTestParser()
    for lang, line, code in blocks(text):
        where = f"{os.path.basename(path)}:{line}"
        if lang == "python" and needs_spark(code) and not have_spark:
            print(f"skipped {where} (pyspark is not installed)", flush=True)
            continue
        if lang == "python":
            try:
                exec(compile(code, where, "exec"), namespace)
            except BaseException:
                traceback.print_exc()
                print(f"FAILED {where}", flush=True)
                return 1
        elif lang == "pycon":
            test = parser.get_doctest(code, namespace, where, path, line - 1)
            if runner.run(test, out=sys.stdout.write, clear_globs=False).failed:
                print(f"FAILED {where}", flush=True)
                return 1
        else:
            continue
        print(f"ran {lang} {where}", flush=True)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("readme")
    parser.add_argument("--fixtures", action="store_true")
    args = parser.parse_args(argv)
    readme = os.path.abspath(args.readme)
    if not args.fixtures:
        return run(readme)
    server = moto_s3("bucket")
    try:
        with tempfile.TemporaryDirectory() as root:
            temp_hdfs(root)
            return run(readme)
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
