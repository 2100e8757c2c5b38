"""GGUF (llama.cpp): parse the header, every metadata value and the tensor table; check the chat template.

Layout (gguf v2/v3, little-endian): ``"GGUF"``, u32 version, u64 tensor count, u64 metadata
count, metadata ``(string key, u32 type, value)``, tensor infos ``(string name, u32 n_dims,
u64 dims[n], u32 ggml type, u64 offset)``, padding to ``general.alignment`` (default 32), data.
Strings are ``u64 length + UTF-8``. Every length is checked against the file before it is used,
counts are capped, and each tensor's byte size (from the ggml block sizes) must fit the file.
"""

from __future__ import annotations

import itertools
import math
import struct
from typing import Any

from airlock.scan.context import Blob, ScanContext
from airlock.scan.template_scan import check_template

MAX_TENSORS = 1 << 20
MAX_KV = 1 << 20
MAX_ARRAY = 1 << 28
MAX_DIMS = 8
DEFAULT_ALIGNMENT = 32

# Metadata value types: id -> struct format ("" for string, "array" for arrays).
_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9

# ggml tensor types: id -> (block size in elements, bytes per block); ggml's GGML_QUANT_SIZES.
GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22), 7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 9: ("Q8_1", 32, 40),
    10: ("Q2_K", 256, 84), 11: ("Q3_K", 256, 110), 12: ("Q4_K", 256, 144), 13: ("Q5_K", 256, 176),
    14: ("Q6_K", 256, 210), 15: ("Q8_K", 256, 292), 16: ("IQ2_XXS", 256, 66), 17: ("IQ2_XS", 256, 74),
    18: ("IQ3_XXS", 256, 98), 19: ("IQ1_S", 256, 50), 20: ("IQ4_NL", 32, 18), 21: ("IQ3_S", 256, 110),
    22: ("IQ2_S", 256, 82), 23: ("IQ4_XS", 256, 136), 24: ("I8", 1, 1), 25: ("I16", 1, 2),
    26: ("I32", 1, 4), 27: ("I64", 1, 8), 28: ("F64", 1, 8), 29: ("IQ1_M", 256, 56),
    30: ("BF16", 1, 2), 34: ("TQ1_0", 256, 54), 35: ("TQ2_0", 256, 66), 39: ("MXFP4", 32, 17),
}  # fmt: skip


class GGUFError(ValueError):
    pass


class _Reader:
    def __init__(self, blob: Blob) -> None:
        self.blob = blob
        self.pos = 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > self.blob.size:
            raise GGUFError(f"truncated at offset {self.pos} (needs {n} bytes)")
        data = self.blob.read(self.pos, n)
        self.pos += n
        return data

    def unpack(self, fmt: str) -> Any:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        n = self.unpack("<Q")
        if n > self.blob.size - self.pos:
            raise GGUFError(f"string of {n} bytes at offset {self.pos} runs past the end")
        try:
            return self.take(n).decode("utf-8")
        except UnicodeDecodeError:
            raise GGUFError(f"string at offset {self.pos - n} is not UTF-8") from None

    def value(self, vtype: int, depth: int = 0) -> Any:
        if vtype in _SCALAR:
            return self.unpack(_SCALAR[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY and depth == 0:
            item_type, count = self.unpack("<I"), self.unpack("<Q")
            if count > MAX_ARRAY:
                raise GGUFError(f"array of {count} items exceeds {MAX_ARRAY}")
            if item_type in _SCALAR:  # skip numeric arrays (token scores ...) without decoding them
                self.take(count * struct.calcsize(_SCALAR[item_type]))
                return None
            return [self.value(item_type, depth + 1) for _ in range(count)]
        raise GGUFError(f"unknown metadata value type {vtype}")


def scan_gguf(ctx: ScanContext, blob: Blob) -> str:
    where = ctx.where(blob)
    try:
        templates = _parse(ctx, blob)
    except (GGUFError, struct.error) as exc:
        ctx.hit("gguf.malformed", f"{where}: {exc}", blob)
        return "gguf"
    for key, template in templates:
        check_template(ctx, blob, template, f"metadata {key}")
    return "gguf"


def _parse(ctx: ScanContext, blob: Blob) -> list[tuple[str, str]]:
    """Validate the whole header; returns the chat templates ``(key, template)`` found in the metadata."""
    blob.prefetch(0, 64 << 20)  # metadata (vocabularies) and the tensor table come first
    r = _Reader(blob)
    if r.take(4) != b"GGUF":
        raise GGUFError("missing GGUF magic")
    version = r.unpack("<I")
    if version not in (2, 3):
        raise GGUFError(f"unsupported GGUF version {version}")
    n_tensors, n_kv = r.unpack("<Q"), r.unpack("<Q")
    if n_tensors > MAX_TENSORS or n_kv > MAX_KV:
        raise GGUFError(f"{n_tensors} tensors / {n_kv} metadata entries exceed the limits")
    templates: list[tuple[str, str]] = []
    alignment = DEFAULT_ALIGNMENT
    keys: set[str] = set()
    for i in range(n_kv):
        if i % 1024 == 0:
            ctx.check_time()
        key = r.string()
        if key in keys:  # llama.cpp refuses the file, gguf-py keeps the first value, dict readers the last
            raise GGUFError(f"metadata key {key!r} appears twice")
        keys.add(key)
        value = r.value(r.unpack("<I"))
        if key.startswith("tokenizer.chat_template"):
            if not isinstance(value, str):
                raise GGUFError(f"{key} is not a string")
            templates.append((key, value))
        elif key == "general.alignment":
            if not isinstance(value, int) or value <= 0 or value & (value - 1):
                raise GGUFError(f"general.alignment {value!r} is not a power of two")
            alignment = value
    spans = [_tensor_info(r) for _ in range(n_tensors)]
    data_start = -(-r.pos // alignment) * alignment
    for name, offset, nbytes in spans:
        if offset % alignment:
            raise GGUFError(f"tensor {name!r} offset {offset} is not aligned to {alignment}")
        if data_start + offset + nbytes > blob.size:
            raise GGUFError(f"tensor {name!r} ({nbytes} bytes at data offset {offset}) runs past the end of the file")
    ordered = sorted((o, o + n, name) for name, o, n in spans)
    for (_a0, a1, a), (b0, _b1, b) in itertools.pairwise(ordered):
        if b0 < a1:
            raise GGUFError(f"tensors {a!r} and {b!r} overlap")
    return templates


def _tensor_info(r: _Reader) -> tuple[str, int, int]:
    name = r.string()
    n_dims = r.unpack("<I")
    if not 0 < n_dims <= MAX_DIMS:
        raise GGUFError(f"tensor {name!r} has {n_dims} dimensions")
    dims = [r.unpack("<Q") for _ in range(n_dims)]
    ggml_type, offset = r.unpack("<I"), r.unpack("<Q")
    if ggml_type not in GGML_TYPES:
        raise GGUFError(f"tensor {name!r} has unknown ggml type {ggml_type}")
    type_name, block, block_bytes = GGML_TYPES[ggml_type]
    count = math.prod(dims)
    if count % block:
        raise GGUFError(f"tensor {name!r}: {count} elements is not a multiple of the {type_name} block ({block})")
    return name, offset, count // block * block_bytes
