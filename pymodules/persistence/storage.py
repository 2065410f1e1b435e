"""Where files live: local paths and fsspec URLs, written atomically.

A path is a local path or an fsspec URL (``s3://bucket/key``, ``hdfs://host:port/path``,
``memory://``); fsspec is imported only for URLs. A local file is written to a temporary
file in the same folder, synced, then renamed (``overWrite=False`` links it in place,
which fails if the path exists, so two racing saves cannot both win); object stores
receive whole objects; other filesystems a temporary file that is then moved.

Two things keep a local save of a large model close to np.save: the writeback of each
32 MiB is started as it is written (Linux's sync_file_range, through ctypes), and a
replaced file is closed, which frees its blocks, on a thread. Measured with
bench/bench_io.py (float32, 400 MB, paired rounds, median of the minima): a save took
0.62 s without the first against 0.38 s (6 rounds), 0.45 s without the second against
0.30 s (4 rounds).
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
import threading

# fsspec protocols whose uploads appear whole when closed; other filesystems get a
# temporary file and a move.
_OBJECT_STORES = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "memory",
                  "oss", "r2"}


def is_url(path) -> bool:
    """Whether ``path`` is a URL (``scheme://...``, read through fsspec), not a local path."""
    return isinstance(path, str) and "://" in path


def join(folder: str, name: str) -> str:
    """``name`` inside ``folder``, a local folder or a URL."""
    return f"{folder.rstrip('/')}/{name}" if is_url(folder) else os.path.join(folder, name)


@contextlib.contextmanager
def open_write(path, overWrite, storage_options):
    """(binary file, seekable) to write ``path`` through; what it holds appears at ``path``
    only when the block ends without an exception, and whole."""
    if is_url(path):
        yield from _remote_write(path, overWrite, storage_options)
        return
    if storage_options:
        raise TypeError("storage_options apply to URLs only, not to local path "
                        f"{os.fspath(path)!r}")
    path = os.path.abspath(os.fspath(path))
    if not overWrite and os.path.lexists(path):
        raise _exists(path)
    folder, base = os.path.split(path)
    tmp = os.path.join(folder, _temp_name(base))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    # Locked while this save runs (the lock goes with the process when it dies): the
    # temporary file of a save still writing is never taken for a leftover.
    locked = _lock(fd, blocking=True)
    started = os.fstat(fd).st_mtime_ns
    try:
        with os.fdopen(fd, "wb") as f:
            yield _WritingBack(f), True
            f.flush()
            os.fsync(f.fileno())
            # Still locked: renamed or linked before the descriptor is closed.
            if overWrite:
                replaced = _hold(path)
                try:
                    os.replace(tmp, path)
                finally:
                    _release_later(replaced)
            else:
                _link_exclusive(tmp, path)
            _fsync_folder(folder)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    if locked:
        _remove_leftovers(folder, base, started)


_TOKEN = 12  # hex digits of a temporary file's random part
_NO_FOLLOW = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)


def _temp_name(base: str) -> str:
    """The temporary file of one save of ``base``: ``.<base>.<12 hex digits>.part``, so
    that those of one target path are recognised (``_leftover``) and no other file is."""
    return f".{base}.{secrets.token_hex(_TOKEN // 2)}.part"


def _leftover(name: str, base: str) -> bool:
    """Whether ``name`` is the temporary file of a save of ``base`` (``_temp_name``)."""
    head, tail = f".{base}.", ".part"
    middle = name[len(head):-len(tail)] if name.startswith(head) and name.endswith(tail) \
        else ""
    return len(middle) == _TOKEN and all(c in "0123456789abcdef" for c in middle)


def _lock(fd: int, blocking: bool) -> bool:
    """Take the exclusive advisory lock (flock) of ``fd``; False where it cannot be had (a
    filesystem or platform without flock, or, not blocking, another holder)."""
    try:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except (ImportError, OSError):
        return False
    return True


def _remove_leftovers(folder: str, base: str, started: int) -> None:
    """Remove the temporary files that saves of ``folder/base`` killed before this one
    started left behind: those named for ``base``, unlocked (their writer is gone), and
    last written before this save's own was created (a save that began since may not have
    locked its file yet). Anything else, and any failure, is left alone."""
    try:
        names = [n for n in os.listdir(folder) if _leftover(n, base)]
    except OSError:
        return
    for name in names:
        leftover = os.path.join(folder, name)
        with contextlib.suppress(OSError):
            fd = os.open(leftover, os.O_RDONLY | _NO_FOLLOW)
            try:
                st = os.fstat(fd)
                if stat.S_ISREG(st.st_mode) and st.st_mtime_ns < started and \
                        _lock(fd, blocking=False) and os.path.samestat(st, os.stat(leftover)):
                    os.unlink(leftover)
            finally:
                os.close(fd)


def _sync_file_range():
    """Linux's sync_file_range(2), which starts the writeback of a byte range without
    waiting for it; None where the C library lacks it."""
    try:
        import ctypes

        call = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError, ImportError):
        return None
    call.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    call.restype = ctypes.c_int
    return call


_start_writeback = _sync_file_range()
_SYNC_FILE_RANGE_WRITE = 2
_WRITEBACK_STEP = 32 << 20


class _WritingBack:
    """A local file being written that hands each 32 MiB it receives to the disk at once,
    so that the fsync which ends a save waits for the last step only, not for the whole
    file: the disk writes while the next arrays are copied into the page cache. A step the
    kernel refuses only loses that overlap; the fsync still covers every byte."""

    def __init__(self, f):
        self.f, self.fd = f, f.fileno()
        self.done = self.pos = 0  # bytes handed to the disk; bytes written

    def write(self, b) -> int:
        n = self.f.write(b)
        self.pos += n
        if _start_writeback is not None and self.pos - self.done >= _WRITEBACK_STEP:
            self.f.flush()
            _start_writeback(self.fd, self.done, self.pos - self.done, _SYNC_FILE_RANGE_WRITE)
            self.done = self.pos
        return n

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = self.f.seek(offset, whence)
        return self.pos


def _hold(path: str) -> int | None:
    """An open descriptor on the file at ``path``, if any: while it is open, replacing the
    file does not free the old one's blocks."""
    try:
        return os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO: no wait
    except OSError:
        return None


def _release_later(fd: int | None) -> None:
    """Close ``fd`` on a thread: the last close of a replaced file frees its blocks, which
    for a large file takes as long as writing a good part of it, and the save need not
    wait for that. A process that exits first closes it all the same."""
    if fd is not None:
        threading.Thread(target=os.close, args=(fd,), name="pymodules-release").start()


def _link_exclusive(tmp: str, path: str) -> None:
    """Put ``tmp`` at ``path`` unless something is there; of two racing calls, one wins."""
    try:
        os.link(tmp, path)  # atomic, and fails when path exists
    except FileExistsError:
        raise _exists(path) from None
    except OSError as err:
        if err.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK,
                             errno.EXDEV, errno.ENOSYS):
            raise
        # No hard links on this filesystem: reserve the name exclusively, then replace
        # the (briefly empty) reservation with the complete file.
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            raise _exists(path) from None
        os.replace(tmp, path)


def _fsync_folder(folder: str) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _exists(path) -> FileExistsError:
    return FileExistsError(errno.EEXIST, "File exists (pass overWrite=True to replace it)",
                           str(path))


def filesystem(url, storage_options):
    try:
        import fsspec
    except ImportError:
        raise ImportError(f"{url}: URLs need fsspec (pip install 'pymodules[s3]' for S3, "
                          "'pymodules[hdfs]' for HDFS)") from None
    return fsspec.core.url_to_fs(url, **(storage_options or {}))


def _remote_write(url, overWrite, storage_options):
    fs, path = filesystem(url, storage_options)
    if not overWrite and fs.exists(path):
        raise _exists(url)
    protocols = {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)
    if protocols & _OBJECT_STORES:
        # An object appears whole when its upload completes; "xb" makes the store itself
        # refuse an existing key where it can (S3 conditional writes).
        f = fs.open(path, "wb" if overWrite else _exclusive_mode(fs), autocommit=True)
        try:
            yield f, False
        except BaseException:
            with contextlib.suppress(Exception):
                f.discard()
            f.closed = True  # a close() now would upload the partial object
            raise
        f.close()
        return
    # A filesystem whose files are visible while written: write aside, then move.
    folder, base = path.rsplit("/", 1) if "/" in path else ("", path)
    tmp = f"{folder}/.{base}.{secrets.token_hex(6)}.part" if folder else \
        f".{base}.{secrets.token_hex(6)}.part"
    try:
        with fs.open(tmp, "wb") as f:
            yield f, False
        if not overWrite and fs.exists(path):
            raise _exists(url)
        fs.mv(tmp, path)
    finally:
        with contextlib.suppress(Exception):
            if fs.exists(tmp):
                fs.rm(tmp)


def _exclusive_mode(fs) -> str:
    return "xb" if type(fs).__module__.startswith("s3fs") else "wb"



@contextlib.contextmanager
def open_read(path, storage_options):
    """(seekable binary file, its size, its name for messages) to read ``path`` from."""
    if is_url(path):
        fs, p = filesystem(path, storage_options)
        with fs.open(p, "rb") as f:
            yield f, fs.size(p), path
        return
    if storage_options:
        raise TypeError(f"storage_options apply to URLs only, not to local path {path!r}")
    with open(os.fspath(path), "rb") as f:
        yield f, os.fstat(f.fileno()).st_size, os.fspath(path)
