"""Content sniffing: what a blob *is*, from its bytes alone (never from its name).

The order matters: formats with a fixed magic first; then joblib's legacy ``ZF`` file and
anything ``tarfile`` opens (both by the loaders' own rules: a parsable ZF header and zlib
stream, a valid tar header checksum - neither needs a byte outside printable text); then
pickles (a PROTO header, or a protocol 0/1 stream that would import a global or complete);
then safetensors (a length and a ``{``); then compressed streams without a magic (as joblib
recognises them); then text; then protobuf layouts; else unknown. Scanners refine the result
(a zip becomes ``pytorch_zip``, a pickle ``pytorch_legacy``), and
:func:`~airlock.scan.legacy_scan.scan_other_readings` scans the readings other loaders make.
"""

from __future__ import annotations

import codecs
import re

from airlock.scan.context import Blob
from airlock.scan.legacy_scan import joblib_would_decode, tarfile_would_open
from airlock.scan.onnx_scan import looks_like_onnx
from airlock.scan.pickle_scan import starts_like_pickle
from airlock.scan.pickle_vm import PICKLE_OPCODES, probe_pickle
from airlock.scan.safetensors_scan import looks_like_safetensors
from airlock.scan.tf_scan import looks_like_savedmodel, looks_like_sentencepiece

TEXT_SNIFF_BYTES = 64 << 10
_HDF5 = b"\x89HDF\r\n\x1a\n"

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"PK\x03\x04", "zip"),
    (b"PK\x05\x06", "zip"),  # empty zip
    (b"\x93NUMPY", "numpy"),
    (b"GGUF", "gguf"),
    (_HDF5, "hdf5"),
    (b"\x1f\x8b", "gzip"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"7z\xbc\xaf\x27\x1c", "7z"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"\x04\x22\x4d\x18", "lz4"),
    (b"\x7fELF", "native_code"),
    (b"\xcf\xfa\xed\xfe", "native_code"),  # Mach-O 64
    (b"\xce\xfa\xed\xfe", "native_code"),  # Mach-O 32
    (b"\xca\xfe\xba\xbe", "native_code"),  # Mach-O universal (also Java class files: code either way)
    (b"\x89PNG\r\n\x1a\n", "image"),
    (b"\xff\xd8\xff", "image"),
    (b"GIF87a", "image"),
    (b"GIF89a", "image"),
)
_TEXT_CONTROLS = re.compile(rb"[\x00-\x08\x0b\x0e-\x1f\x7f]")  # text has tabs, newlines, form feeds; no other controls


def sniff(blob: Blob) -> str:
    if blob.size == 0:
        return "empty"
    head = blob.head(4096)
    for magic, fmt in _MAGIC:
        if head.startswith(magic):
            return fmt
    if head.startswith(b"ZF") and joblib_would_decode(blob, "joblib_zfile"):
        return "joblib_zfile"  # joblib.load checks for ZF before anything else
    if head.startswith(b"BZh") and head[3:4].isdigit() and head[3:4] != b"0":
        return "bz2"
    if head[:2] == b"MZ" and _is_pe(blob):
        return "native_code"
    if (len(head) >= 262 and head[257:262] == b"ustar") or tarfile_would_open(blob):
        return "tar"
    if starts_like_pickle(head):
        return "pickle"
    if looks_like_safetensors(head):
        return "safetensors"
    if len(head) >= 16 and head[2:4] == b"\r\n" and head[:2] != b"\r\n" and _is_pyc(head):
        return "pyc"
    if head[0] in PICKLE_OPCODES and probe_pickle(blob.buf, blob.start, blob.end):
        return "pickle"
    compressed = _compressed_without_magic(blob, head)
    if compressed:
        return compressed
    if is_text(blob.head(TEXT_SNIFF_BYTES)):
        return "text"
    if looks_like_onnx(blob.buf, blob.start, blob.end):
        return "onnx"
    if looks_like_sentencepiece(blob.buf, blob.start, blob.end):
        return "sentencepiece"
    if looks_like_savedmodel(blob.buf, blob.start, blob.end):
        return "tf_savedmodel"
    if _is_hdf5_with_userblock(blob):
        return "hdf5"
    return "unknown"


def is_text(data: bytes) -> bool:
    """UTF-8 (a character may be cut at the end of the sample) without control characters."""
    try:
        codecs.getincrementaldecoder("utf-8")().decode(data, final=False)
    except UnicodeDecodeError:
        return False
    return _TEXT_CONTROLS.search(data) is None


def _is_hdf5_with_userblock(blob: Blob) -> bool:
    """HDF5 allows a user block: the signature may sit at 512, 1024, 2048 ... bytes."""
    offset = 512
    while offset + 8 <= min(blob.size, 1 << 20):
        if blob.read(offset, 8) == _HDF5:
            return True
        offset *= 2
    return False


def _is_pe(blob: Blob) -> bool:
    head = blob.head(0x400)
    if len(head) < 0x40:
        return False
    pe = int.from_bytes(head[0x3C:0x40], "little")
    return blob.read(pe, 4) == b"PE\x00\x00"


def _is_pyc(head: bytes) -> bool:
    """CPython bytecode: a 2-byte magic in CPython 3's range (3000-3999) or 2.7's (62211), then ``\\r\\n``."""
    magic = int.from_bytes(head[:2], "little")
    return 3000 <= magic < 4000 or magic == 62211


def _compressed_without_magic(blob: Blob, head: bytes) -> str | None:
    """zlib (joblib's default compressor) and legacy .lzma streams have no fixed magic: try them.

    Recognised as ``joblib.load`` recognises them (prefixes ``x`` and ``]\\0``), when its
    decoder (zlib, ``lzma.LZMAFile``'s automatic format) decodes what joblib's first read needs.
    """
    if head.startswith(b"\x78") and joblib_would_decode(blob, "zlib"):  # zlib checks its header's checksum
        return "zlib"
    if head.startswith(b"\x5d\x00") and joblib_would_decode(blob, "lzma"):
        return "lzma"
    return None
