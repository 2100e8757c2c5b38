"""safetensors: validate the header without touching tensor data (cost O(header), not O(file)).

Layout: ``u64 little-endian N``, ``N`` bytes of JSON (``{name: {dtype, shape, data_offsets:
[begin, end]}, "__metadata__": {str: str}}``), then the data buffer. The checks mirror what
the safetensors library enforces when loading, so a file that passes here also loads there:
a sane header length inside the file, strict JSON (no duplicate keys, no NaN), known dtypes,
``prod(shape) * dtype size == end - begin``, and tensors tiling the buffer from 0 with no
overlap and no gap. Bytes after the last tensor are limited by policy.
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any

from airlock.scan.context import Blob, ScanContext

MAX_HEADER_BYTES = 100_000_000  # the safetensors library's own limit
# Bits per element; sub-byte types must fill whole bytes.
DTYPE_BITS: dict[str, int] = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8,
    "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
    "I32": 32, "U32": 32, "F32": 32, "C64": 64,
    "F64": 64, "I64": 64, "U64": 64,
    "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
}  # fmt: skip
_TENSOR_KEYS = {"dtype", "shape", "data_offsets"}


class _HeaderError(ValueError):
    pass


def looks_like_safetensors(head: bytes) -> bool:
    """8-byte length then ``{`` - and the length bytes are not text (a text file with 8 chars then ``{``)."""
    if len(head) < 9 or head[8:9] != b"{":
        return False
    return not all(32 <= b < 127 or b in b"\t\r\n" for b in head[:8])


def _strict_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        keys = [k for k, _ in pairs]
        dupes = sorted({k for k in keys if keys.count(k) > 1})
        raise _HeaderError(f"duplicate keys {dupes[:5]} (parsers disagree on which one wins)")
    return obj


def _reject_constant(name: str) -> Any:
    raise _HeaderError(f"non-JSON constant {name}")


def _parse_header(raw: bytes) -> dict[str, Any]:
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_strict_object, parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise _HeaderError("header is not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise _HeaderError(f"header is not JSON: {exc}") from None
    if not isinstance(header, dict):
        raise _HeaderError("header is not a JSON object")
    return header


def _sizes(values: Any) -> bool:
    """A list of non-negative ints (``type is int``: JSON true/false must not pass as 1/0)."""
    if type(values) is not list:
        return False
    for v in values:  # noqa: SIM110 - a plain loop: this runs for every dimension of every tensor
        if type(v) is not int or v < 0:
            return False
    return True


def _tensor_spans(header: dict[str, Any], data_len: int) -> list[tuple[int, int, str]]:
    """``(begin, end, name)`` of every tensor, each checked; raises _HeaderError on the first bad one.

    One tight loop rather than a call per tensor: a large model has hundreds of tensors per
    shard and this is the whole cost of the scan.
    """
    spans = []
    bits_of = DTYPE_BITS.get
    keys = _TENSOR_KEYS
    prod = math.prod
    for name, info in header.items():
        if type(info) is not dict or info.keys() != keys:
            raise _HeaderError(f"tensor {name!r}: entry must have exactly {sorted(keys)}")
        dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        bits_per = bits_of(dtype) if type(dtype) is str else None
        if bits_per is None:
            raise _HeaderError(f"tensor {name!r}: unknown dtype {dtype!r}")
        if not _sizes(shape):
            raise _HeaderError(f"tensor {name!r}: shape {shape!r} is not a list of sizes")
        if not (_sizes(offsets) and len(offsets) == 2):
            raise _HeaderError(f"tensor {name!r}: data_offsets {offsets!r} is not [begin, end]")
        begin, end = offsets
        if begin > end:
            raise _HeaderError(f"tensor {name!r}: data_offsets {offsets} are not ordered")
        bits = prod(shape) * bits_per
        if bits % 8 or bits // 8 != end - begin:
            raise _HeaderError(
                f"tensor {name!r}: {dtype}{shape} needs {bits / 8:g} bytes but data_offsets span {end - begin}"
            )
        if end > data_len:
            raise _HeaderError(f"tensor {name!r}: data_offsets end {end} is past the data buffer ({data_len} bytes)")
        spans.append((begin, end, name))
    return spans


def scan_safetensors(ctx: ScanContext, blob: Blob) -> str:
    where = ctx.where(blob)
    if blob.size < 8:
        ctx.hit("safetensors.header", f"{where}: {blob.size} bytes is too short for a header length", blob)
        return "safetensors"
    (n,) = struct.unpack("<Q", blob.read(0, 8))
    if n > MAX_HEADER_BYTES:
        ctx.hit("safetensors.header", f"{where}: header length {n} exceeds the {MAX_HEADER_BYTES}-byte limit", blob, 0)
        return "safetensors"
    if 8 + n > blob.size:
        ctx.hit(
            "safetensors.header",
            f"{where}: header length {n} runs past the end of the file ({blob.size} bytes)",
            blob,
            0,
        )
        return "safetensors"
    try:
        header = _parse_header(blob.read(8, n))
        metadata = header.pop("__metadata__", None)
        if metadata is not None and not (
            isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())
        ):
            raise _HeaderError("__metadata__ must map strings to strings")
    except _HeaderError as exc:
        ctx.hit("safetensors.header", f"{where}: {exc}", blob, 8)
        return "safetensors"
    data_len = blob.size - 8 - n
    try:
        spans = _tensor_spans(header, data_len)
    except _HeaderError as exc:
        ctx.hit("safetensors.tensor", f"{where}: {exc}", blob, 8)
        return "safetensors"
    _check_tiling(ctx, blob, spans, data_len, 8 + n)
    return "safetensors"


def _check_tiling(ctx: ScanContext, blob: Blob, spans: list[tuple[int, int, str]], data_len: int, base: int) -> None:
    """Tensors must tile the buffer from 0: an overlap aliases data, a gap hides bytes."""
    where = ctx.where(blob)
    position, previous = 0, None
    for begin, end, name in sorted(spans):
        if begin < position:
            ctx.hit(
                "safetensors.overlap",
                f"{where}: tensor {name!r} [{begin}, {end}) overlaps {previous!r}",
                blob,
                base + begin,
            )
            return
        if begin > position:
            ctx.hit(
                "safetensors.overlap",
                f"{where}: {begin - position} unaccounted bytes before tensor {name!r} at data offset {position}",
                blob,
                base + position,
            )
            return
        position, previous = end, name
    trailing = data_len - position
    if trailing > ctx.policy.safetensors_max_trailing_bytes:
        ctx.hit(
            "safetensors.trailing_data",
            f"{where}: {trailing} bytes after the last tensor (policy safetensors_max_trailing_bytes="
            f"{ctx.policy.safetensors_max_trailing_bytes})",
            blob,
            base + position,
        )
