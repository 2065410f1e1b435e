"""The file container: a zip of stored entries, written as a stream and read with checks.

A file holds ``definition.json`` (what it holds), ``arrays/<n>.npy`` (each array, in
NumPy's .npy format, never pickled) and ``checksum.json`` (the size and CRC-32 of every
other entry, written last). Reading checks the whole directory before reading any entry
(names, sizes against the file's, duplicates, compression, the checksum list), reads each
entry at most once, in bounded steps, and checks its CRC-32; every problem is a
``FileFormatError`` saying why.

``zipfile`` reads the central directory; the zip records are written, and entries read,
here. ``ZipFile.open`` computes the CRC-32 with zlib, serially, on the calling thread
(about 0.85 GB/s with this machine's zlib 1.2.13), against 10+ GB/s for the engine's
kernel, which runs on a worker thread while the data is written or read. Measured with
bench/bench_io.py (float32, 400 MB, the same rounds): save+load was 2.0-2.7x
np.save+np.load through ``zipfile`` and 2.1-2.8x with ``zlib.crc32`` in this writer,
against 1.2-1.9x as it is (the limit is 1.6x on a quiet machine).

Checked on top of ``zipfile``, which accepts them: duplicate names, names other than
pymodules' own, compressed or encrypted entries, sizes beyond the file's, definitions
over ``MAX_JSON`` and .npy headers over ``MAX_NPY_HEADER`` (refused before being read),
definitions of more than ``MAX_JSON_ELEMENTS`` values or nested more than
``MAX_JSON_DEPTH`` deep (refused before being parsed), array entries referenced twice,
and entries the checksum list does not match.
"""

from __future__ import annotations

import io
import json
import re
import struct
import zipfile
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from pymodules.engine.checksum import crc32

FORMAT = "pymodules"
#: Version of the file layout; a file from a newer version is refused.
FORMAT_VERSION = 1

DEFINITION = "definition.json"
CHECKSUM = "checksum.json"
MAX_JSON = 64 << 20  # bytes of definition.json or checksum.json
#: JSON values (keys included) in definition.json or checksum.json, counted before parsing
#: as an upper bound (``_values``): a definition of 10,000 Linear layers has 500,048.
MAX_JSON_ELEMENTS = 2 << 20
#: nesting of definition.json or checksum.json (values nest MAX_DEPTH deep in the codec,
#: up to 3 JSON levels each, inside 4 levels of definition)
MAX_JSON_DEPTH = 800
MAX_NPY_HEADER = 1 << 16
CHUNK = 4 << 20  # bytes per read or write call on array data (and per CRC step)
_LOCAL_HEADER = struct.Struct("<4s5H3L2H")
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))
_ENTRY_NAME = re.compile(r"definition\.json|checksum\.json|arrays/(0|[1-9][0-9]{0,8})\.npy")

#: dtypes an array entry may have: no objects, no structured or void types.
DTYPES = {np.dtype(t).str: np.dtype(t) for t in (
    np.float16, np.float32, np.float64, np.bool_, np.int8, np.int16, np.int32, np.int64,
    np.uint8, np.uint16, np.uint32, np.uint64)}


class FileFormatError(ValueError):
    """A file that pymodules cannot or will not load, with the reason."""


# -- writing ----------------------------------------------------------------------------
def write(f, seekable: bool, definition: dict, arrays: list[np.ndarray]) -> None:
    """Stream the file holding ``definition`` (with references ``arrays/<n>.npy`` to
    ``arrays[n]``, little-endian and C-contiguous) into the binary file ``f``."""
    from pymodules import __version__

    definition = {"format": FORMAT, "formatVersion": FORMAT_VERSION,
                  "libraryVersion": __version__, **definition}
    with _ZipWriter(f, seekable) as zw:
        zw.entry(DEFINITION, [json.dumps(definition, separators=(",", ":")).encode()])
        for i, a in enumerate(arrays):
            head = io.BytesIO()
            np.lib.format.write_array_header_1_0(
                head, np.lib.format.header_data_from_array_1_0(a))
            data = a.reshape(-1).view(np.uint8)
            zw.entry(f"arrays/{i}.npy", [head.getvalue()] + [
                memoryview(data[j:j + CHUNK]) for j in range(0, data.size, CHUNK)])
        sums = {name: {"size": size, "crc32": crc} for name, _, size, crc in zw.entries}
        checksum = {"algorithm": "crc32", "entries": sums}
        zw.entry(CHECKSUM, [json.dumps(checksum, separators=(",", ":")).encode()])


class _ZipWriter:
    """Writes a zip of stored entries (zip64 records throughout, as Python's zipfile and
    unzip read them). The CRC-32 of an entry is computed on a worker thread while the
    entry is written (both release the GIL), then patched into the local header when the
    file is seekable, or written after the data (a data descriptor) when it is not.
    """

    _DATE = (1 << 5) | 1  # 1980-01-01, so that equal content gives equal files

    def __init__(self, f, seekable: bool):
        self.f, self.seekable = f, seekable
        self.offset = 0
        self.entries = []  # (name, header offset, size, crc)
        self._pool = None

    def __enter__(self):
        return self

    def __exit__(self, kind, *_):
        if self._pool is not None:
            self._pool.shutdown()
        if kind is None:
            self._central_directory()

    def _put(self, b) -> None:
        self.f.write(b)
        self.offset += len(b)

    @staticmethod
    def _crc(chunks) -> int:
        crc = 0
        for c in chunks:
            crc = crc32(c, crc)
        return crc

    def entry(self, name: str, chunks) -> None:
        size = sum(len(c) for c in chunks)
        raw = name.encode("ascii")
        start = self.offset
        flags = 0 if self.seekable else 0x08
        self._put(_LOCAL_HEADER.pack(b"PK\x03\x04", 45, flags, 0, 0, self._DATE, 0,
                                     0xFFFFFFFF, 0xFFFFFFFF, len(raw), 20))
        self._put(raw + struct.pack("<HHQQ", 1, 16, size, size))
        if size >= CHUNK:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(1, thread_name_prefix="pymodules-crc")
            crc_job = self._pool.submit(self._crc, chunks)
            try:
                for c in chunks:
                    self._put(c)
            finally:
                crc = crc_job.result()
        else:
            crc = self._crc(chunks)
            for c in chunks:
                self._put(c)
        if self.seekable:
            self.f.seek(start + 14)
            self.f.write(struct.pack("<L", crc))
            self.f.seek(self.offset)
        else:
            self._put(struct.pack("<4sLQQ", b"PK\x07\x08", crc, size, size))
        self.entries.append((name, start, size, crc))

    def _central_directory(self) -> None:
        cd_start = self.offset
        flags = 0 if self.seekable else 0x08
        for name, start, size, crc in self.entries:
            raw = name.encode("ascii")
            self._put(struct.pack("<4s6H3L5H2L", b"PK\x01\x02", (3 << 8) | 45, 45, flags, 0, 0,
                                  self._DATE, crc, 0xFFFFFFFF, 0xFFFFFFFF, len(raw), 28, 0,
                                  0, 0, 0o100644 << 16, 0xFFFFFFFF))
            self._put(raw + struct.pack("<HHQQQ", 1, 24, size, size, start))
        cd_size = self.offset - cd_start
        end64 = self.offset
        n = len(self.entries)
        self._put(struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, n, n, cd_size,
                              cd_start))
        self._put(struct.pack("<4sLQL", b"PK\x06\x07", 0, end64, 1))
        self._put(struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, min(n, 0xFFFF),
                              min(n, 0xFFFF), min(cd_size, 0xFFFFFFFF), 0xFFFFFFFF, 0))


# -- reading ----------------------------------------------------------------------------
class Archive:
    """A checked view of a pymodules file: nothing is read before its size is known.

    ``f`` is a seekable binary file of ``size`` bytes; ``where`` names it in errors.
    """

    def __init__(self, f, size: int, where: str):
        self.f, self.size, self.where = f, size, where
        self._pool = None
        self._read = set()  # array entries read
        try:
            infos = zipfile.ZipFile(f).infolist()
        except Exception as err:  # zipfile raises many kinds on a crafted directory
            if isinstance(err, FileNotFoundError):
                raise
            raise self.error(f"not a pymodules file (not a readable zip archive: {err})") \
                from None
        self.infos = {}
        total = 0
        for info in infos:
            if info.filename in self.infos:
                raise self.error(f"entry {info.filename} appears twice")
            if not _ENTRY_NAME.fullmatch(info.filename):
                raise self.error(f"unexpected entry {info.filename[:80]!r} (pymodules writes "
                                 "only definition.json, checksum.json and arrays/<n>.npy)")
            if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
                raise self.error(f"entry {info.filename} is compressed or encrypted")
            if info.compress_size != info.file_size or info.header_offset < 0 or \
                    info.header_offset + _LOCAL_HEADER.size + info.file_size > size:
                raise self.error(f"entry {info.filename} declares {info.file_size} bytes, "
                                 f"more than the file holds ({size} bytes)")
            total += info.file_size
            self.infos[info.filename] = info
        if total > size:
            raise self.error(f"entries declare {total} bytes, more than the file holds")
        for name in (DEFINITION, CHECKSUM):
            if name not in self.infos:
                raise self.error(f"no {name} (truncated, or not a pymodules file)")
            if self.infos[name].file_size > MAX_JSON:
                raise self.error(f"{name} is {self.infos[name].file_size} bytes, "
                                 f"more than the limit of {MAX_JSON}")
        checksum = self._json(CHECKSUM)
        if not isinstance(checksum, dict):
            raise self.error("checksum.json is garbled")
        entries = checksum.get("entries")
        if checksum.get("algorithm") != "crc32" or not isinstance(entries, dict):
            raise self.error("checksum.json is garbled")
        if set(entries) != set(self.infos) - {CHECKSUM}:
            extra = sorted(set(self.infos) - {CHECKSUM} - set(entries))
            missing = sorted(set(entries) - set(self.infos))
            raise self.error(f"entries do not match the checksum list (unlisted {extra[:5]}, "
                             f"missing {missing[:5]})")
        for name, s in entries.items():
            info = self.infos[name]
            if not isinstance(s, dict) or s.get("size") != info.file_size or \
                    s.get("crc32") != info.CRC:
                raise self.error(f"checksum mismatch: {name} differs from checksum.json")

    def __enter__(self):
        return self

    def __exit__(self, *_):
        if self._pool is not None:
            self._pool.shutdown()

    def error(self, reason: str) -> FileFormatError:
        return FileFormatError(f"{self.where}: {reason}")

    def pool(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="pymodules-crc")
        return self._pool

    def definition(self, kind: str) -> dict:
        """The definition of a file holding ``kind`` ("module", "weights" or "state")."""
        d = self._json(DEFINITION)
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise self.error("not a pymodules file (no pymodules definition)")
        version = d.get("formatVersion")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise self.error(f"garbled format version {version!r}")
        if version > FORMAT_VERSION:
            raise self.error(
                f"written in format version {version} by pymodules "
                f"{d.get('libraryVersion')}; this pymodules reads up to version "
                f"{FORMAT_VERSION}: upgrade pymodules")
        if d.get("kind") != kind:
            raise self.error(f"holds {d.get('kind')!r}, not {kind!r}")
        return d

    def _json(self, name):
        entry = _Entry(self, self.infos[name])
        data = entry.read(entry.left)
        entry.finish()
        # Bounded before parsing: a parsed value costs tens of bytes per byte of JSON.
        elements = _values(data)
        if elements > MAX_JSON_ELEMENTS:
            raise self.error(f"{name} holds up to {elements} values, more than the limit of "
                             f"{MAX_JSON_ELEMENTS}")
        depth = _bracket_depth(data)  # brackets in strings count too: checked below
        try:
            value = json.loads(data.decode("utf-8"))
        except RecursionError:
            raise self.error(f"{name} nests values too deep ({depth} levels, more than the "
                             f"limit of {MAX_JSON_DEPTH})") from None
        except (UnicodeDecodeError, ValueError) as err:
            raise self.error(f"{name} is garbled ({type(err).__name__}: {err})"[:300]) \
                from None
        if depth > MAX_JSON_DEPTH:
            depth = _json_depth(value)
            if depth > MAX_JSON_DEPTH:
                raise self.error(f"{name} nests values too deep ({depth} levels, more than "
                                 f"the limit of {MAX_JSON_DEPTH})")
        return value

    def array(self, name: str, out: np.ndarray | None = None) -> np.ndarray:
        """The array in entry ``name``, read into ``out`` when given (same shape).

        Each entry is read once: pymodules writes one entry per reference, so a second
        reference to an entry is refused (a file cannot make the loader hold more arrays
        than it holds).
        """
        info = self.infos.get(name) if isinstance(name, str) else None
        if info is None or not name.startswith("arrays/"):
            raise self.error(f"reference to a missing array entry {name!r}")
        if name in self._read:
            raise self.error(f"{name} is referenced twice (pymodules writes each array "
                             "once, for one place)")
        self._read.add(name)
        entry = _Entry(self, info)
        shape, dtype = entry.npy_header()
        count = 1
        for s in shape:
            count *= s
        if count * dtype.itemsize != entry.left:
            raise self.error(f"{name}: header says {shape} {dtype} ({count * dtype.itemsize} "
                             f"bytes), the entry holds {entry.left}")
        if out is not None and (out.shape != shape or not out.flags.c_contiguous
                                or not out.flags.writeable):
            raise self.error(f"{name} has shape {shape}, expected {out.shape}")
        if out is None or out.dtype != dtype:
            a = np.empty(shape, dtype)
        else:
            a = out
        entry.readinto(a.reshape(-1).view(np.uint8))
        entry.finish()
        if a is not out and out is not None:
            out[...] = a
            return out
        return a


def _values(data: bytes) -> int:
    """An upper bound of the number of values (keys included) in the JSON text ``data``,
    counted without parsing: one after each ``,`` and ``:``, one first in each non-empty
    list or object, and the whole. Bytes in strings count too, never below the truth (an
    ``[]`` in a string removes the ``[`` it adds)."""
    return sum(data.count(c) for c in (b",", b":", b"[", b"{")) - data.count(b"[]") \
        - data.count(b"{}") + 1


def _bracket_depth(data: bytes) -> int:
    """The deepest nesting of brackets in ``data``, strings included: the JSON depth when
    no string holds brackets. (Closing brackets in strings could hide some nesting from
    it; the parser's own recursion limit, about 1,000 levels, still refuses that.)"""
    brackets = np.frombuffer(data.translate(None, _NOT_BRACKETS), np.uint8)
    deepest = level = 0
    step = 1 << 20  # in bounded parts
    for j in range(0, brackets.size, step):
        part = brackets[j:j + step]
        levels = np.where((part == ord("[")) | (part == ord("{")), 1, -1).astype(np.int32)
        np.cumsum(levels, out=levels)
        levels += level
        deepest = max(deepest, int(levels.max()))
        level = int(levels[-1])
    return deepest


def _json_depth(value) -> int:
    """The nesting depth of a parsed JSON value, walked without recursion."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, (list, dict)):
            deepest = max(deepest, depth)
            stack.extend((x, depth + 1) for x in (v.values() if isinstance(v, dict) else v))
    return deepest


class _Entry:
    """Reads one stored entry in order, checking its size and CRC-32 on the way."""

    def __init__(self, archive: Archive, info: zipfile.ZipInfo):
        self.archive, self.info = archive, info
        f = archive.f
        f.seek(info.header_offset)
        head = f.read(_LOCAL_HEADER.size)
        if len(head) != _LOCAL_HEADER.size:
            raise archive.error(f"{info.filename}: truncated")
        fields = _LOCAL_HEADER.unpack(head)
        if fields[0] != b"PK\x03\x04" or fields[3] != zipfile.ZIP_STORED:
            raise archive.error(f"{info.filename}: garbled entry header")
        start = info.header_offset + _LOCAL_HEADER.size + fields[9] + fields[10]
        if start + info.file_size > archive.size:
            raise archive.error(f"{info.filename}: declares more bytes than the file holds")
        f.seek(start)
        self.left = info.file_size
        self.crc = 0

    def readinto(self, mv) -> None:
        mv = memoryview(mv).cast("B")
        n = len(mv)
        if n > self.left:
            raise self.archive.error(f"{self.info.filename}: shorter than its header says")
        # Large reads check the CRC of one chunk on a worker while the next one is read.
        pool = self.archive.pool() if n >= 2 * CHUNK else None
        last = None
        done = 0
        try:
            while done < n:
                part = mv[done:min(n, done + CHUNK)]
                got = self.archive.f.readinto(part)
                if not got:
                    raise self.archive.error(f"{self.info.filename}: truncated")
                if pool is None:
                    self._update(part[:got])
                else:
                    last = pool.submit(self._update, part[:got])  # one worker: in order
                done += got
        finally:
            if last is not None:
                last.result()
        self.left -= n

    def _update(self, part) -> None:
        self.crc = crc32(part, self.crc)

    def read(self, n: int) -> bytes:
        buf = bytearray(n)
        self.readinto(buf)
        return bytes(buf)

    def finish(self) -> None:
        if self.left or self.crc != self.info.CRC:
            raise self.archive.error(f"checksum mismatch in {self.info.filename} "
                                     "(the file is corrupted)")

    def npy_header(self):
        """(shape, dtype) from a .npy header; object and structured dtypes are refused."""
        name = self.info.filename
        if self.left < 10:
            raise self.archive.error(f"{name}: not a .npy array")
        magic = self.read(8)
        if magic[:6] != b"\x93NUMPY" or magic[6] not in (1, 2, 3):
            raise self.archive.error(f"{name}: not a .npy array")
        width = 2 if magic[6] == 1 else 4
        hlen = int.from_bytes(self.read(width), "little")
        if hlen > min(MAX_NPY_HEADER, self.left):
            raise self.archive.error(f"{name}: .npy header of {hlen} bytes is too long")
        raw = magic + (hlen.to_bytes(width, "little")) + self.read(hlen)
        try:
            bio = io.BytesIO(raw)
            major, _ = np.lib.format.read_magic(bio)
            read = np.lib.format.read_array_header_1_0 if major == 1 else \
                np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read(bio, max_header_size=MAX_NPY_HEADER)
        except Exception as err:  # numpy's parser raises many kinds (tokenize, ast, ...)
            raise self.archive.error(f"{name}: garbled .npy header ({err})"[:300]) from None
        if dtype.str not in DTYPES:
            raise self.archive.error(f"{name}: dtype {dtype} is not allowed in a pymodules "
                                     "file (objects are never unpickled)")
        if fortran:
            raise self.archive.error(f"{name}: Fortran-ordered arrays are not written by "
                                     "pymodules")
        return shape, DTYPES[dtype.str]
