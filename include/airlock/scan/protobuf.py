"""A minimal protobuf wire-format reader: enough to walk ONNX, TensorFlow and sentencepiece files
without their packages (none is installed here) and without copying large byte fields.

Messages are read lazily as ``(field number, wire type, value)`` where a length-delimited value
is a ``(start, end)`` span into the buffer. Groups (wire types 3/4, deprecated) and anything
that does not parse raise :class:`ProtobufError`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

VARINT, FIXED64, LEN, FIXED32 = 0, 1, 2, 5


class ProtobufError(ValueError):
    pass


def read_varint(buf: Any, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end:
            raise ProtobufError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise ProtobufError("varint too long")


def fields(buf: Any, start: int, end: int) -> Iterator[tuple[int, int, Any]]:
    """Yield ``(field, wire_type, value)``; LEN values are ``(start, end)`` spans."""
    pos = start
    while pos < end:
        key, pos = read_varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        value: Any
        if number == 0:
            raise ProtobufError("field number 0")
        if wire == VARINT:
            value, pos = read_varint(buf, pos, end)
        elif wire == FIXED64:
            if pos + 8 > end:
                raise ProtobufError("truncated fixed64")
            value, pos = buf[pos : pos + 8], pos + 8
        elif wire == LEN:
            size, pos = read_varint(buf, pos, end)
            if pos + size > end:
                raise ProtobufError(f"field {number}: {size} bytes run past the message end")
            value, pos = (pos, pos + size), pos + size
        elif wire == FIXED32:
            if pos + 4 > end:
                raise ProtobufError("truncated fixed32")
            value, pos = buf[pos : pos + 4], pos + 4
        else:
            raise ProtobufError(f"field {number}: unsupported wire type {wire}")
        yield number, wire, value


def text(buf: Any, span: tuple[int, int]) -> str:
    try:
        return bytes(buf[span[0] : span[1]]).decode("utf-8")
    except UnicodeDecodeError:
        raise ProtobufError("string field is not UTF-8") from None


def shape(buf: Any, start: int, end: int, limit: int = 1 << 16) -> dict[int, set[int]]:
    """``field -> wire types`` of a message's top level (at most ``limit`` fields; raises if unparsable)."""
    seen: dict[int, set[int]] = {}
    for i, (number, wire, _value) in enumerate(fields(buf, start, end)):
        seen.setdefault(number, set()).add(wire)
        if i >= limit:
            break
    return seen
