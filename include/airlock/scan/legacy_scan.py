"""What the loaders themselves would open: their dispatch, not "what the bytes look like".

A file is opened by whichever loader a user points at it, and each loader has its own dispatch:

* ``joblib.load`` (``numpy_pickle_utils._detect_compressor``): ``ZF`` first (the pre-0.10
  "zfile": ``ZF`` + a hex length padded to 19 bytes + a zlib stream holding a pickle), then the
  registered compressors by prefix - zlib ``x``, gzip, bz2 ``BZ``, lzma ``]\\0``, xz, lz4 - and
  otherwise its own unpickler on the raw bytes.
* ``torch.load``: a zip (``PK\\3\\4``), else whatever ``tarfile.open(mode="r:")`` accepts (its
  pre-1.0 format; tarfile needs a valid header checksum, not the ``ustar`` magic), else a
  sequence of pickles.
* ``np.load``: ``.npy`` magic, a zip, else ``pickle.load`` when ``allow_pickle=True``.
* ``pickle.load``: opcodes from the first byte.

:func:`sniff <airlock.scan.detect.sniff>` picks one format; :func:`scan_other_readings` then
scans every other reading one of those loaders would make of the same bytes, and a file two
loaders read as different formats is blocked (``format.ambiguous``) whatever each reading holds.
Decompression is bounded by the policy like any archive (a bomb is ``archive.too_large``).
"""

from __future__ import annotations

import bz2
import contextlib
import lzma
import tarfile
import zlib
from collections.abc import Callable
from typing import Any

from airlock.scan import archive_scan, pickle_scan
from airlock.scan.context import Blob, ScanContext, inflate, spool
from airlock.scan.pickle_vm import resolves_a_global

# joblib.compressor: _ZFILE_PREFIX and the prefixes of the compressors numpy_pickle registers, in order.
JOBLIB_PREFIXES: tuple[tuple[bytes, str], ...] = (
    (b"ZF", "joblib_zfile"),
    (b"\x78", "zlib"),
    (b"\x1f\x8b", "gzip"),
    (b"BZ", "bz2"),
    (b"\x5d\x00", "lzma"),
    (b"\xfd\x37\x7a\x58\x5a", "xz"),
    (b"\x04\x22\x4d\x18", "lz4"),
)
# numpy_pickle_compat: len("ZF") + len(hex(2**64)) bytes of header, then an optional space.
_ZF_HEADER = 2 + len(hex(2**64))
_PROBE_BYTES = 64 << 10
_JOBLIB_READ_BUFFER = 1 << 20  # numpy_pickle_utils._IO_BUFFER_SIZE
_DECODE_INPUT_CAP = 64 << 20  # input read while deciding; past it, treat the stream as a reading
_INT64_MAX = (1 << 63) - 1

PICKLE_FORMATS = frozenset({"pickle", "joblib", "pytorch_legacy"})
COMPRESSED_FORMATS = frozenset({"zlib", "gzip", "bz2", "lzma", "xz", "lz4"})
_ZIP_FORMATS = frozenset({"zip", "pytorch_zip", "numpy_npz", "torchscript", "keras"})
_TEXT_FORMATS = frozenset({"text", "json", "notebook", "script", "empty"})
# Formats a model loader reads: a second loader reading of such a file makes it ambiguous.
LOADER_FORMATS = PICKLE_FORMATS | COMPRESSED_FORMATS | _ZIP_FORMATS | {"tar", "numpy", "joblib_zfile"}


def reading_name(fmt: str) -> str:
    if fmt in PICKLE_FORMATS:
        return "pickle.load/joblib.load/np.load(allow_pickle=True) read a pickle"
    if fmt == "tar":
        return "torch.load reads a tar archive (its legacy format)"
    if fmt == "joblib_zfile":
        return "joblib.load reads its legacy ZF format"
    if fmt in COMPRESSED_FORMATS:
        return f"joblib.load decompresses it ({fmt})"
    if fmt in _ZIP_FORMATS:
        return "torch.load/np.load read a zip archive"
    if fmt == "numpy":
        return "np.load reads an .npy array"
    return f"it reads as {fmt}"


# --------------------------------------------------------------------------- the dispatch hook


def scan_other_readings(ctx: ScanContext, blob: Blob, fmt: str) -> str:
    """Scan the loader readings of ``blob`` that the scan of ``fmt`` did not cover; returns the format.

    A file that is not a loader format (text, unknown ...) but that one loader would open takes
    that loader's format; a file with two loader readings is blocked with both named.
    """
    if blob.size == 0:
        return fmt
    readings: list[tuple[str, Callable[[], object]]] = []
    joblib_fmt = joblib_dispatch(blob.head(8))
    if joblib_fmt == "lz4":  # lz4 is not in the pinned set: Airlock cannot read what joblib would
        ctx.hit(
            "archive.undecodable",
            f"{ctx.where(blob)}: joblib.load decompresses it with lz4 (when installed); Airlock has no lz4 decoder",
            blob,
        )
    if joblib_fmt is not None and joblib_fmt not in ("lz4", fmt) and joblib_would_decode(blob, joblib_fmt):
        if joblib_fmt == "joblib_zfile":
            readings.append((joblib_fmt, lambda: scan_joblib_zfile(ctx, blob)))
        else:
            readings.append((joblib_fmt, lambda: archive_scan.scan_compressed(ctx, blob, joblib_fmt)))
    if fmt != "tar" and tarfile_would_open(blob):
        readings.append(("tar", lambda: archive_scan.scan_tar(ctx, blob)))
    if fmt not in PICKLE_FORMATS and fmt not in _TEXT_FORMATS and _pickle_reading(blob):
        readings.append(("pickle", lambda: pickle_scan.scan_pickle(ctx, blob)))
    if not readings:
        return fmt
    found = ([fmt] if fmt in LOADER_FORMATS else []) + [name for name, _ in readings]
    if len(found) > 1:
        ctx.hit(
            "format.ambiguous",
            f"{ctx.where(blob)}: loaders read these bytes as different formats: " + "; ".join(map(reading_name, found)),
            blob,
        )
    for _, scan in readings:
        ctx.check_time()
        scan()
    return fmt if fmt in LOADER_FORMATS else readings[0][0]


def _pickle_reading(blob: Blob) -> bool:
    """Would pickle.load or joblib.load (no persistent_load) on these bytes import a global?"""
    return resolves_a_global(blob.buf, blob.start, blob.end, limit=None, persistent=False)


# --------------------------------------------------------------------------- joblib


def joblib_dispatch(head: bytes) -> str | None:
    """The format ``joblib.load`` picks for a file starting with ``head`` (None: its unpickler on the raw bytes)."""
    for prefix, fmt in JOBLIB_PREFIXES:
        if head.startswith(prefix):
            return fmt
    return None


def joblib_would_decode(blob: Blob, fmt: str) -> bool:
    """Would joblib's decompressor hand its unpickler any bytes (else joblib fails before unpickling)?

    joblib reads through ``io.BufferedReader(buffer_size=1 MiB)``: the unpickler's first read
    decompresses up to 1 MiB (or to the end of the input), and a decoder error there fails the
    load before a single opcode is read. A stream that decodes that far is a reading even if it
    breaks later (its scan reports the break: ``archive.malformed``).
    """
    if fmt == "joblib_zfile":
        layout = zfile_layout(blob)
        return layout is not None and _decodes(blob, layout[1], lambda: zlib.decompressobj(zlib.MAX_WBITS))
    factories: dict[str, Callable[[], object]] = {
        "zlib": lambda: zlib.decompressobj(zlib.MAX_WBITS),
        "gzip": lambda: zlib.decompressobj(16 + zlib.MAX_WBITS),  # joblib's BinaryGzipFile
        "bz2": bz2.BZ2Decompressor,
        "lzma": lambda: lzma.LZMADecompressor(lzma.FORMAT_AUTO),  # lzma.LZMAFile's default
        "xz": lambda: lzma.LZMADecompressor(lzma.FORMAT_AUTO),
    }
    return fmt in factories and _decodes(blob, 0, factories[fmt])


def _decodes(blob: Blob, offset: int, factory: Callable[[], object]) -> bool:
    decoder: Any = factory()
    produced, pos = 0, offset
    while produced < _JOBLIB_READ_BUFFER and pos < blob.size and pos - offset < _DECODE_INPUT_CAP:
        chunk = blob.read(pos, _PROBE_BYTES)
        pos += len(chunk)
        try:
            produced += len(decoder.decompress(chunk, _JOBLIB_READ_BUFFER - produced))
        except (zlib.error, OSError, EOFError, lzma.LZMAError, ValueError):
            return False
        if decoder.eof:
            break
    return produced > 0


def zfile_layout(blob: Blob) -> tuple[int, int] | None:
    """``(declared length, offset of the zlib stream)`` as ``numpy_pickle_compat.read_zfile`` reads them.

    ``int(header[2:21], 16)`` - so whitespace, ``0x``, ``+`` and ``_`` are all accepted, as in
    joblib - then one space is skipped if present. None when joblib fails on the header.
    """
    head = blob.read(0, _ZF_HEADER + 1)
    if not head.startswith(b"ZF"):
        return None
    try:
        length = int(head[2:_ZF_HEADER], 16)
    except ValueError:
        return None
    if not 0 <= length <= _INT64_MAX:  # zlib.decompress refuses a negative or oversized bufsize
        return None
    start = _ZF_HEADER + 1 if head[_ZF_HEADER : _ZF_HEADER + 1] == b" " else _ZF_HEADER
    return length, start


def scan_joblib_zfile(ctx: ScanContext, blob: Blob) -> str:
    """joblib's legacy ZF file: inflate (bounded) and walk the pickle as ``ZipNumpyUnpickler`` reads it.

    ``ZipNumpyUnpickler`` is the plain pure-Python unpickler plus NDArrayWrapper (not on the
    allowlist: it loads another file with ``np.load(allow_pickle=True)``), so the pickle is
    walked without joblib's raw-array handling.
    """
    where = ctx.where(blob)
    layout = zfile_layout(blob)
    if layout is None:
        ctx.hit("joblib.zfile_malformed", f"{where}: ZF header has no hexadecimal length joblib can read", blob)
        return "joblib_zfile"
    length, start = layout
    if not ctx.count_member(blob):
        return "joblib_zfile"
    limit = ctx.policy.max_archive_expanded_bytes - ctx.expanded_bytes
    blob.prefetch(start)
    with contextlib.ExitStack() as stack:
        try:
            chunks = inflate(blob.buf, blob.start + start, blob.end, zlib.MAX_WBITS)
            inner = stack.enter_context(spool(blob, f"{blob.name}[zfile]", chunks, limit))
        except (zlib.error, ValueError) as exc:
            ctx.hit("joblib.zfile_malformed", f"{where}: ZF zlib stream at @{start} does not decompress: {exc}", blob)
            return "joblib_zfile"
        if not ctx.expand(blob, inner.size):
            return "joblib_zfile"
        if inner.size != length:  # joblib asserts this (an assert: gone under python -O)
            ctx.hit(
                "joblib.zfile_malformed",
                f"{where}: ZF header declares {length} bytes, the stream holds {inner.size}",
                blob,
            )
        scan = pickle_scan.scan_pickle(ctx, inner, reading="python")
        ctx.record_member(inner, scan.format)
    return "joblib_zfile"


# --------------------------------------------------------------------------- torch's legacy tar


def tarfile_would_open(blob: Blob) -> bool:
    """Does ``tarfile.open(fileobj, mode="r:")`` accept these bytes (what torch.load tries first)?

    tarfile checks the first header's checksum, not the ``ustar`` magic, so a tar can be
    made of printable text. An all-zero first block opens as an empty archive: torch then fails
    on its missing members, so that is no reading.
    """
    block = blob.head(tarfile.BLOCKSIZE)
    if len(block) < tarfile.BLOCKSIZE or block.count(0) == tarfile.BLOCKSIZE:
        return False
    try:
        if tarfile.nti(block[148:156]) not in tarfile.calc_chksums(block):
            return False
    except (tarfile.TarError, ValueError):
        return False
    try:
        with tarfile.open(fileobj=archive_scan.BlobReader(blob), mode="r:") as tar:  # type: ignore[arg-type]
            return tar.firstmember is not None
    except (tarfile.TarError, OSError, EOFError, ValueError, UnicodeError):
        return False
