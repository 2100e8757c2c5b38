"""Mutation fuzzer for the differential test: Airlock's scanner against the real loaders.

Seeds are benign containers built here (``torch.save`` zip and legacy, torch's pre-1.0 tar,
``joblib.dump`` with every compressor, joblib's ``ZF`` compatibility format, ``np.save`` /
``np.savez`` with object arrays, plain pickles) and malicious pickles (``os.system("true")``,
``posix.system("true")``, ``builtins.exec("pass")``, and a harmless global that is simply not on
the allowlist). Mutators are structured: they know the containers' records and rewrite them
the way the classes in issue 10 do - pickle opcodes (injected calls in every calling style,
memo games, GLOBAL vs STACK_GLOBAL, frames, protocol switches, deleted/swapped opcodes), zip
records (zip64 records that disagree with the classic one, duplicate and shifted members,
local vs central headers, extra fields, comments), tar headers (magic, checksum, sizes, types),
joblib array wrappers (dtype state and flags, duplicate state keys, shapes, alignment) and npy
headers - plus plain byte flips. Everything is driven by ``random.Random(seed)``: a seed and a
count reproduce the same mutants.

For each mutant, ``run_campaign`` scans it in-process with ``scan_model`` at each tier and
runs the oracle (``tests/scan_oracle.py``) on it; a *disagreement* is a loader reaching a global
outside the allowlist while the scanner's verdict is allow. Mutants the scanner blocks that no
loader can open are counted as over-blocks (a statistic, not a failure).

Nothing here executes a payload: the scanner never unpickles, and the oracle's recorder
replaces every non-allowlisted global with an inert stand-in.
"""

from __future__ import annotations

import bz2
import dataclasses
import gzip
import hashlib
import io
import json
import lzma
import pickle
import pickletools
import random
import re
import shutil
import struct
import tarfile
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import scan_oracle

# --------------------------------------------------------------------------- pickle assembly

Payload = tuple[str, str, str]  # module, name, argument (a harmless one)

PAYLOADS: tuple[Payload, ...] = (
    ("os", "system", "true"),
    ("posix", "system", "true"),
    ("builtins", "exec", "pass"),
    ("datetime", "date", "2000"),  # not dangerous, just not allowlisted: the allowlist must decide
)


def sbu(text: str) -> bytes:
    """SHORT_BINUNICODE / BINUNICODE of ``text``."""
    raw = text.encode("utf-8")
    if len(raw) < 256:
        return b"\x8c" + bytes([len(raw)]) + raw
    return b"X" + struct.pack("<I", len(raw)) + raw


def _short_binstring(text: str) -> bytes:
    raw = text.encode("ascii")
    return b"U" + bytes([len(raw)]) + raw


def _unicode8(text: str) -> bytes:
    raw = text.encode("utf-8")
    return b"\x8d" + struct.pack("<Q", len(raw)) + raw


def text_unicode(text: str) -> bytes:
    """Protocol-0 UNICODE (raw-unicode-escape, newline-terminated)."""
    return b"V" + text.encode("raw-unicode-escape") + b"\n"


def glob(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def put(index: int) -> bytes:
    return b"q" + bytes([index]) if index < 256 else b"r" + struct.pack("<I", index)


def get(index: int) -> bytes:
    return b"h" + bytes([index]) if index < 256 else b"j" + struct.pack("<I", index)


def binbytes(data: bytes) -> bytes:
    if len(data) < 256:
        return b"C" + bytes([len(data)]) + data
    return b"B" + struct.pack("<I", len(data)) + data


CALL_STYLES = (
    "global", "stack_global", "inst", "obj", "newobj", "memo", "text", "dotted",
    "sg_binstring", "sg_unicode8", "sg_text", "sg_memo_strings",
)  # fmt: skip


def call_snippet(payload: Payload, style: str, memo: int = 900) -> bytes:
    """Opcodes that import ``payload``'s global and call it, leaving the stack as they found it."""
    module, name, arg = payload
    a = sbu(arg)
    if style == "global":
        return glob(module, name) + a + b"\x85R0"
    if style == "stack_global":
        return sbu(module) + sbu(name) + b"\x93" + a + b"\x85R0"
    if style == "inst":
        return b"(" + a + b"i" + module.encode() + b"\n" + name.encode() + b"\n0"
    if style == "obj":
        return b"(" + glob(module, name) + a + b"o0"
    if style == "newobj":
        return glob(module, name) + a + b"\x85\x810"
    if style == "memo":  # the global goes into the memo; a later GET is what gets called
        return glob(module, name) + put(memo) + b"0" + get(memo) + a + b"\x85R0"
    if style == "text":  # protocol 0 only: printable
        return b"(" + glob(module, name) + text_unicode(arg) + b"tR0"
    if style == "sg_binstring":  # STACK_GLOBAL's strings as SHORT_BINSTRING (decoded to str by the loaders)
        return _short_binstring(module) + _short_binstring(name) + b"\x93" + a + b"\x85R0"
    if style == "sg_unicode8":
        return _unicode8(module) + _unicode8(name) + b"\x93" + a + b"\x85R0"
    if style == "sg_text":
        return text_unicode(module) + text_unicode(name) + b"\x93" + a + b"\x85R0"
    if style == "sg_memo_strings":  # the strings come back from the memo, as joblib writes them
        return sbu(module) + put(memo) + b"0" + sbu(name) + put(memo + 1) + b"0" + get(memo) + get(memo + 1) + b"\x93" + a + b"\x85R0"
    if style == "dotted":  # protocol 4 qualified name through an allowlisted module
        return sbu("collections") + sbu("OrderedDict.fromkeys") + b"\x93" + b")R0" + glob(module, name) + b"0"
    raise ValueError(style)


def evil_pickle(payload: Payload = PAYLOADS[0], style: str = "global", proto: int = 2) -> bytes:
    """A complete pickle whose value is the payload call's result."""
    body = call_snippet(payload, style)[:-1]  # keep the result on the stack
    head = b"\x80" + bytes([proto]) if proto >= 2 else b""
    return head + body + b"."


# --------------------------------------------------------------------------- opcode streams


@dataclass
class Op:
    pos: int
    code: str  # the opcode character
    raw: bytes  # opcode and argument bytes


def parse_ops(data: bytes) -> tuple[list[Op], bytes]:
    """Opcodes up to STOP (or the first byte pickletools cannot parse), and the bytes after."""
    ops = [Op(pos, code, data[pos:end]) for code, pos, end in _genops_tolerant(io.BytesIO(data))]
    end = ops[-1].pos + len(ops[-1].raw) if ops else 0
    return ops, data[end:]


def _genops_tolerant(stream: io.BytesIO) -> Iterator[tuple[str, int, int]]:
    """(opcode, start, end) of each opcode; stops at the first one pickletools cannot parse."""
    gen = pickletools.genops(stream)
    while True:
        try:
            opcode, _arg, pos = next(gen)
        except StopIteration:
            return
        except Exception:  # noqa: BLE001  (joblib's raw array bytes, a truncated argument: the walk ends there)
            return
        yield opcode.code, pos, stream.tell()


def join_ops(ops: Sequence[Op], tail: bytes = b"") -> bytes:
    return b"".join(op.raw for op in ops) + tail


def unframe(data: bytes) -> bytes:
    """Drop FRAME opcodes (optional for every unpickler) so inserted bytes cannot straddle a frame."""
    ops, tail = parse_ops(data)
    if not ops:
        return data
    return join_ops([op for op in ops if op.code != "\x95"], tail)


_SIMPLE_OPS: tuple[bytes, ...] = (
    b"(", b"0", b"1", b"2", b"}", b"]", b")", b"N", b"K\x01", b"K\xff", b"\x88", b"\x89", b"t", b"l", b"d",
    b"a", b"e", b"s", b"u", b"b", b"R", b"\x81", b"\x85", b"\x86", b"\x87", b"\x94", b"q\x00", b"q\x05",
    b"h\x00", b"h\x05", b"h\x08", b"j\xff\x00\x00\x00", b"\x80\x02", b"\x80\x04", b"\x80\x05", b".",
    b"\x95\x08\x00\x00\x00\x00\x00\x00\x00", b"I01\n", b"L1L\n", b"F1.0\n", b"S'x'\n", b"Vx\n",
    b"\x82\x01", b"\x8f", b"\x90", b"\x91",
)  # fmt: skip


def _boundary(rng: random.Random, ops: Sequence[Op]) -> int:
    """An index to insert at: after PROTO, before STOP."""
    lo = 1 if ops and ops[0].code == "\x80" else 0
    hi = max(lo, len(ops) - 1)
    return rng.randint(lo, hi)


def mutate_pickle(rng: random.Random, data: bytes, *, payload: Payload | None = None) -> tuple[bytes, str]:
    """One pickle-level mutation of ``data``; returns the new bytes and the mutation's name."""
    data = unframe(data)
    ops, tail = parse_ops(data)
    if not ops:
        return data + evil_pickle(payload or rng.choice(PAYLOADS)), "append_evil"
    op_name = rng.choice(PICKLE_MUTATIONS)
    payload = payload or rng.choice(PAYLOADS)
    carried = ""
    if op_name in _STRUCTURAL and rng.random() < 0.7:  # perturb a stream that carries a payload
        style = rng.choice([s for s in CALL_STYLES if s != "text"])
        ops.insert(_boundary(rng, ops), Op(-1, "?", call_snippet(payload, style)))
        ops, tail2 = parse_ops(join_ops(ops, tail))
        if not ops:
            return data + evil_pickle(payload), "append_evil"
        tail = tail2
        carried = "+payload"
    out = list(ops)
    if op_name == "inject_call":
        style = rng.choice([s for s in CALL_STYLES if s != "text"])
        out.insert(_boundary(rng, ops), Op(-1, "?", call_snippet(payload, style)))
        op_name = f"inject_call:{style}"
    elif op_name == "rename_global":
        targets = [i for i, op in enumerate(ops) if op.code in ("c", "i")]
        sg = [i for i, op in enumerate(ops) if op.code == "\x93" and i >= 2 and ops[i - 1].code in "\x8cX" and ops[i - 2].code in "\x8cX"]
        if targets and (not sg or rng.random() < 0.5):
            i = rng.choice(targets)
            out[i] = Op(-1, ops[i].code, ops[i].code.encode() + payload[0].encode() + b"\n" + payload[1].encode() + b"\n")
        elif sg:
            i = rng.choice(sg)
            out[i - 2] = Op(-1, "\x8c", sbu(payload[0]))
            out[i - 1] = Op(-1, "\x8c", sbu(payload[1]))
        else:
            out.insert(_boundary(rng, ops), Op(-1, "?", call_snippet(payload, "global")))
    elif op_name == "memo_overwrite":  # re-PUT the index a later GET reads, with the payload's global
        gets = [i for i, op in enumerate(ops) if op.code in ("h", "j", "g")]
        if gets:
            i = rng.choice(gets)
            index = _memo_index(ops[i])
            out.insert(i, Op(-1, "?", glob(payload[0], payload[1]) + put(index) + b"0"))
        else:
            out.insert(_boundary(rng, ops), Op(-1, "?", call_snippet(payload, "memo")))
    elif op_name == "global_form":  # GLOBAL <-> STACK_GLOBAL
        for i, op in enumerate(ops):
            if op.code == "c":
                module, name = op.raw[1:].split(b"\n")[:2]
                out[i] = Op(-1, "?", sbu(module.decode("latin-1")) + sbu(name.decode("latin-1")) + b"\x93")
    elif op_name == "delete_op" and len(ops) > 2:
        del out[rng.randrange(len(ops) - 1)]
    elif op_name == "duplicate_op":
        i = rng.randrange(len(ops))
        out.insert(i, ops[i])
    elif op_name == "swap_ops" and len(ops) > 2:
        i = rng.randrange(len(ops) - 2)
        out[i], out[i + 1] = out[i + 1], out[i]
    elif op_name == "insert_op":
        out.insert(_boundary(rng, ops), Op(-1, "?", rng.choice(_SIMPLE_OPS)))
    elif op_name == "proto_switch":
        out.insert(_boundary(rng, ops), Op(-1, "\x80", b"\x80" + bytes([rng.choice((0, 1, 2, 3, 4, 5, 6))])))
    elif op_name == "reframe":  # a FRAME whose length is right, short or long
        i = _boundary(rng, ops)
        rest = join_ops(out[i:])
        length = max(0, len(rest) + rng.choice((0, 0, -1, 1, -3, 7)))
        out.insert(i, Op(-1, "\x95", b"\x95" + struct.pack("<Q", length)))
    elif op_name == "early_stop":  # STOP before the payload: a second pickle follows
        i = _boundary(rng, ops)
        out.insert(i, Op(-1, ".", b"." + evil_pickle(payload)[:-1] + b"0"))
    elif op_name == "dup_dict_key":
        out = _dup_dict_key(rng, ops, payload)
    elif op_name == "noop_prefix":  # stack-neutral opcodes first: does the sniffer still see a pickle?
        prefix = rng.choice((b"N0", b"(1", b"(0", b"I1\n0", b"S'a'\n0", b"\x88" + b"0", b"(t0", b"(l0"))
        start = 1 if ops[0].code == "\x80" else 0
        out.insert(start, Op(-1, "?", prefix * rng.choice((1, 3, 200, 5000))))
        op_name = "noop_prefix"
    else:
        out.insert(_boundary(rng, ops), Op(-1, "?", call_snippet(payload, "global")))
        op_name = "inject_call:global"
    return join_ops(out, tail), op_name + carried


_STRUCTURAL = frozenset(
    ("global_form", "delete_op", "duplicate_op", "swap_ops", "insert_op", "proto_switch", "reframe", "noop_prefix")
)
PICKLE_MUTATIONS = (
    "inject_call", "inject_call", "rename_global", "memo_overwrite", "global_form", "delete_op", "duplicate_op",
    "swap_ops", "insert_op", "proto_switch", "reframe", "early_stop", "dup_dict_key", "noop_prefix",
)  # fmt: skip


def _memo_index(op: Op) -> int:
    if op.code == "h":
        return op.raw[1]
    if op.code == "j":
        return struct.unpack("<I", op.raw[1:5])[0]
    return int(op.raw[1:].strip() or b"0")


def _dup_dict_key(rng: random.Random, ops: list[Op], payload: Payload) -> list[Op]:
    """A SETITEMS whose mark group gets a key again (CPython: last wins) with the payload's call as value."""
    out = list(ops)
    setitems = [i for i, op in enumerate(ops) if op.code in ("u", "s")]
    if not setitems:
        out.insert(_boundary(rng, ops), Op(-1, "?", call_snippet(payload, "global")))
        return out
    i = rng.choice(setitems)
    key = sbu(rng.choice(("dtype", "shape", "order", "w", "a", "numpy_array_alignment_bytes")))
    value = glob(payload[0], payload[1]) + sbu(payload[2]) + b"\x85R"
    pair = key + value
    if ops[i].code == "s":
        out.insert(i + 1, Op(-1, "?", pair + b"s"))
    else:
        out.insert(i, Op(-1, "?", pair))
    return out


# --------------------------------------------------------------------------- zip records


@dataclass
class ZEntry:
    name: bytes
    payload: bytes  # the member's bytes as stored (compressed if method 8)
    usize: int
    crc: int
    method: int = 0
    flags: int = 0
    local_extra: bytes = b""
    central_extra: bytes = b""
    local_name: bytes | None = None  # None: same as the central name
    version: int = 20

    @classmethod
    def stored(cls, name: str | bytes, data: bytes, **kw: Any) -> ZEntry:
        raw = name.encode() if isinstance(name, str) else name
        return cls(raw, data, len(data), zlib.crc32(data), **kw)

    @classmethod
    def deflated(cls, name: str | bytes, data: bytes, **kw: Any) -> ZEntry:
        raw = name.encode() if isinstance(name, str) else name
        comp = zlib.compressobj(6, zlib.DEFLATED, -15)
        packed = comp.compress(data) + comp.flush()
        return cls(raw, packed, len(data), zlib.crc32(data), method=8, **kw)

    def data(self) -> bytes:
        if self.method == 8:
            return zlib.decompress(self.payload, -15)
        return self.payload


def local_header(e: ZEntry) -> bytes:
    name = e.name if e.local_name is None else e.local_name
    return (
        struct.pack("<4s5H3I2H", b"PK\x03\x04", e.version, e.flags, e.method, 0, 0x21, e.crc,
                    len(e.payload) & 0xFFFFFFFF, e.usize & 0xFFFFFFFF, len(name), len(e.local_extra))
        + name + e.local_extra
    )  # fmt: skip


def central_header(e: ZEntry, offset: int, csize: int | None = None, usize: int | None = None) -> bytes:
    c = len(e.payload) if csize is None else csize
    u = e.usize if usize is None else usize
    return (
        struct.pack("<4s6H3I5H2I", b"PK\x01\x02", 0x31E, e.version, e.flags, e.method, 0, 0x21, e.crc,
                    c & 0xFFFFFFFF, u & 0xFFFFFFFF, len(e.name), len(e.central_extra), 0, 0, 0, 0o644 << 16,
                    offset & 0xFFFFFFFF)
        + e.name + e.central_extra
    )  # fmt: skip


def eocd(count: int, cd_size: int, cd_offset: int, comment: bytes = b"") -> bytes:
    return struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, count, count, cd_size, cd_offset, len(comment)) + comment


def zip64_records(count: int, cd_size: int, cd_offset: int, at: int) -> bytes:
    """A zip64 end-of-central-directory record at offset ``at`` and its locator."""
    record = struct.pack("<4sQ2H2I4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, count, count, cd_size, cd_offset)
    locator = struct.pack("<4sIQI", b"PK\x06\x07", 0, at, 1)
    return record + locator


@dataclass
class ZipLayout:
    """Members written in order; the central directory lists ``central`` (indices into entries)."""

    entries: list[ZEntry]
    comment: bytes = b""
    zip64: bool = False

    def build(self) -> bytes:
        out = bytearray()
        offsets = []
        for e in self.entries:
            offsets.append(len(out))
            out += local_header(e) + e.payload
        cd_offset = len(out)
        cd = b"".join(central_header(e, off) for e, off in zip(self.entries, offsets))
        out += cd
        if self.zip64:
            out += zip64_records(len(self.entries), len(cd), cd_offset, len(out))
        out += eocd(len(self.entries), len(cd), cd_offset, self.comment)
        return bytes(out)


def parse_zip(data: bytes) -> list[ZEntry]:
    """Members of a well-formed zip written by torch or zipfile (classic directory only)."""
    end = data.rfind(b"PK\x05\x06")
    if end < 0:
        raise ValueError("no end of central directory")
    count, _cd_size, cd_offset = struct.unpack_from("<HII", data, end + 10)
    entries: list[ZEntry] = []
    pos = cd_offset
    for _ in range(count):
        (flags, method, crc, csize, usize, nlen, xlen, clen, offset) = struct.unpack_from("<8xHH4xIII3H8xI", data, pos)
        name = data[pos + 46 : pos + 46 + nlen]
        central_extra = data[pos + 46 + nlen : pos + 46 + nlen + xlen]
        lnlen, lxlen = struct.unpack_from("<HH", data, offset + 26)
        local_extra = data[offset + 30 + lnlen : offset + 30 + lnlen + lxlen]
        start = offset + 30 + lnlen + lxlen
        entries.append(
            ZEntry(name, data[start : start + csize], usize, crc, method, flags & ~0x0008, local_extra, central_extra)
        )
        pos += 46 + nlen + xlen + clen
    return entries


# --------------------------------------------------------------------------- tar headers


def tar_bytes(members: Sequence[tuple[str, bytes]], fmt: int = tarfile.USTAR_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def tar_headers(data: bytes) -> list[int]:
    """Offsets of the tar headers in ``data`` (walking sizes; stops at a zero block or bad size)."""
    offsets = []
    pos = 0
    while pos + 512 <= len(data) and data[pos : pos + 512].strip(b"\0"):
        offsets.append(pos)
        try:
            size = int(data[pos + 124 : pos + 136].strip(b"\0 ") or b"0", 8)
        except ValueError:
            break
        pos += 512 + (size + 511) // 512 * 512
    return offsets


def tar_fix_checksum(buf: bytearray, off: int) -> None:
    buf[off + 148 : off + 156] = b" " * 8
    buf[off + 148 : off + 156] = b"%06o\0 " % sum(buf[off : off + 512])


# --------------------------------------------------------------------------- joblib wrappers


@dataclass
class WrapperSpec:
    """One joblib ``NumpyArrayWrapper``'s BUILD state, written as the pickle VM and numpy will read it."""

    dtype: bytes  # opcodes pushing a numpy.dtype
    shape: tuple[int, ...]
    order: str = "C"
    alignment: int | None = 16
    extra_pairs: bytes = b""  # more key/value opcodes inside the state's SETITEMS (duplicates)
    include_alignment: bool = True


def dtype_ops(name: str, state: tuple[Any, ...] | None = None) -> bytes:
    """``numpy.dtype(name, False, True)`` with BUILD ``state`` (as numpy pickles dtypes)."""
    ops = sbu("numpy") + sbu("dtype") + b"\x93" + sbu(name) + b"\x89\x88\x87R"
    if state is not None:
        ops += value_ops(state) + b"b"
    return ops


def dtype_default_state(name: str) -> tuple[Any, ...]:
    import numpy as np

    reduced = np.dtype(name).__reduce__()
    return reduced[2]


def wrapper_ops(spec: WrapperSpec) -> bytes:
    """NumpyArrayWrapper() then its BUILD, as joblib.dump writes it (without memo opcodes)."""
    state = (
        sbu("subclass") + sbu("numpy") + sbu("ndarray") + b"\x93"
        + sbu("shape") + _tuple_ops(spec.shape)
        + sbu("order") + sbu(spec.order)
        + sbu("dtype") + spec.dtype
        + sbu("allow_mmap") + b"\x88"
    )  # fmt: skip
    if spec.include_alignment:
        state += sbu("numpy_array_alignment_bytes") + (b"N" if spec.alignment is None else _int_ops(spec.alignment))
    state += spec.extra_pairs
    return sbu("joblib.numpy_pickle") + sbu("NumpyArrayWrapper") + b"\x93)\x81}(" + state + b"ub"


def _int_ops(value: int) -> bytes:
    if 0 <= value < 256:
        return b"K" + bytes([value])
    if 0 <= value < 65536:
        return b"M" + struct.pack("<H", value)
    if -(2**31) <= value < 2**31:
        return b"J" + struct.pack("<i", value)
    raw = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw  # LONG1


def _tuple_ops(values: tuple[int, ...]) -> bytes:
    items = b"".join(_int_ops(v) for v in values)
    if len(values) == 0:
        return b")"
    if len(values) <= 3:
        return items + {1: b"\x85", 2: b"\x86", 3: b"\x87"}[len(values)]
    return b"(" + items + b"t"


def padded_pickle(body: bytes, length: int, filler_at: dict[int, bytes] | None = None) -> bytes | None:
    """A pickle of exactly ``length`` bytes: ``body`` (no STOP), a BINBYTES filler popped, STOP.

    ``filler_at`` places bytes at absolute offsets inside the filler (another reading's
    continuation point). None if ``length`` is too short.
    """
    fixed = len(body) + 5 + 2  # BINBYTES header, POP, STOP
    n = length - fixed
    if n < 0:
        return None
    filler = bytearray(b"\xee" * n)
    start = len(body) + 5
    for offset, chunk in (filler_at or {}).items():
        rel = offset - start
        if rel < 0 or rel + len(chunk) > n:
            return None
        filler[rel : rel + len(chunk)] = chunk
    return body + b"B" + struct.pack("<I", n) + bytes(filler) + b"0."


# --------------------------------------------------------------------------- seeds


@dataclass
class Seed:
    name: str
    kind: str  # torch_zip, torch_legacy, torch_tar, joblib, joblib_zf, npy, npz, pickle
    data: bytes
    meta: dict[str, Any] = field(default_factory=dict)


def build_seeds() -> list[Seed]:
    """Benign containers from the real writers, plus hand-built legacy formats."""
    import warnings

    import joblib
    import numpy as np
    import torch

    seeds: list[Seed] = []
    warnings.simplefilter("ignore")
    state = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.zeros(3), "step": 3}
    for proto in (2, 4):
        buf = io.BytesIO()
        torch.save(state, buf, pickle_protocol=proto)
        seeds.append(Seed(f"torch_zip_p{proto}", "torch_zip", buf.getvalue()))
        buf = io.BytesIO()
        torch.save(state, buf, pickle_protocol=proto, _use_new_zipfile_serialization=False)
        seeds.append(Seed(f"torch_legacy_p{proto}", "torch_legacy", buf.getvalue()))
    seeds.append(Seed("torch_tar", "torch_tar", torch_tar(pickle.dumps({"w": 1.0, "step": 3}, 2))))
    arrays = {"a": np.arange(5, dtype=np.float32), "o": np.array([1, "x", None], dtype=object), "v": np.zeros(2, "V8")}
    for compress in (0, "zlib", "gzip", "bz2", "lzma", "xz"):
        buf = io.BytesIO()
        joblib.dump(arrays, buf, compress=(compress, 3) if compress else 0)
        seeds.append(Seed(f"joblib_{compress or 'raw'}", "joblib", buf.getvalue(), {"compress": compress or "raw"}))
    raw = next(_joblib_decompress(s) for s in seeds if s.name == "joblib_lzma")
    seeds.append(Seed("joblib_lzma_dict", "joblib", _COMPRESSORS["lzma_dict"][0](raw), {"compress": "lzma_dict"}))
    seeds.append(Seed("joblib_zf", "joblib_zf", joblib_zf(pickle.dumps({"a": [1, 2, 3]}, 2))))
    for name, arr in (("npy_object", np.array([1, "x", None], dtype=object)), ("npy_f4", np.arange(4, dtype="<f4"))):
        buf = io.BytesIO()
        np.save(buf, arr, allow_pickle=True)
        seeds.append(Seed(name, "npy", buf.getvalue()))
    buf = io.BytesIO()
    np.savez(buf, a=np.arange(3), o=np.array([{"k": 1}], dtype=object))
    seeds.append(Seed("npz", "npz", buf.getvalue()))
    for name, saver in (("npz_plain", np.savez), ("npz_deflated", np.savez_compressed)):
        buf = io.BytesIO()
        saver(buf, a=np.arange(3, dtype=np.int64), b=np.ones((2, 2), dtype=np.float32))
        seeds.append(Seed(name, "npz", buf.getvalue()))
    for proto in range(6):
        value = {"a": [1, 2.5, "x"], "b": (b"raw", None), "c": {1, 2}, "d": complex(1, 2)}
        seeds.append(Seed(f"pickle_p{proto}", "pickle", pickle.dumps(value, proto)))
    return seeds


def torch_tar(main_pickle: bytes, *, storages: bytes | None = None) -> bytes:
    """torch's pre-1.0 tar checkpoint: sys_info, pickle, tensors, storages (no tensors here)."""
    members = [
        ("sys_info", pickle.dumps({"protocol_version": 1001, "little_endian": True}, 2)),
        ("pickle", main_pickle),
        ("tensors", pickle.dumps(0, 2)),
        ("storages", storages if storages is not None else pickle.dumps(0, 2) + pickle.dumps([], 2)),
    ]
    return tar_bytes(members)


ZF_MAX_LEN = len(f"{2**64:#x}")


def joblib_zf(inner: bytes, level: int = 6) -> bytes:
    """joblib's compatibility format (joblib <= 0.9): ``ZF`` + hex length padded to 19 + zlib stream."""
    return b"ZF" + f"{len(inner):#x}".encode().ljust(ZF_MAX_LEN) + zlib.compress(inner, level)


def joblib_zf_printable(inner: bytes) -> bytes | None:
    """The same format written only in printable UTF-8 (one stored deflate block; no control bytes).

    zlib header ``x^`` (0x78 0x5E passes the FCHECK), block header ``!`` (BFINAL=1, BTYPE=00, the
    other bits ignored), LEN/NLEN chosen so LEN's bytes are ASCII and NLEN's a two-byte UTF-8
    character, the pickle padded with spaces to LEN, and spaces varied until Adler-32 is printable.
    """
    if any(b < 0x20 and b not in (0x09, 0x0A, 0x0C, 0x0D) for b in inner) or inner.startswith(b"\x80"):
        return None
    for lo in range(0x20, 0x3E):
        for hi in range(0x40, 0x7F):
            length = hi << 8 | lo
            if length < len(inner):
                continue
            for variant in range(4096):
                pad_char = b" \t"[variant % 2 : variant % 2 + 1]
                body = inner + pad_char * (variant // 2 % 97) + b" " * (length - len(inner) - variant // 2 % 97)
                if len(body) != length:
                    continue
                adler = struct.pack(">I", zlib.adler32(body))
                if all(0x20 <= b < 0x7F for b in adler):
                    nlen = bytes([lo ^ 0xFF, hi ^ 0xFF])
                    stream = b"x^!" + bytes([lo, hi]) + nlen + body + adler
                    assert zlib.decompress(stream) == body
                    header = b"ZF" + f"{length:#x}".encode().ljust(ZF_MAX_LEN)
                    return header + stream
    return None


# --------------------------------------------------------------------------- container mutators

Mutator = Callable[[random.Random, Seed], tuple[bytes, str] | None]


def _payload(rng: random.Random) -> Payload:
    return rng.choice(PAYLOADS)


def _evil(rng: random.Random, proto: int | None = None) -> bytes:
    style = rng.choice(("global", "stack_global", "inst", "obj", "memo", "newobj"))
    return evil_pickle(_payload(rng), style, proto if proto is not None else rng.choice((2, 3, 4, 5)))


def mut_bytes(rng: random.Random, seed: Seed) -> tuple[bytes, str] | None:
    """Byte-level noise: flips, a truncation, or an evil pickle appended."""
    data = bytearray(seed.data)
    choice = rng.random()
    if choice < 0.6:
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(data))
            data[i] ^= 1 << rng.randrange(8)
        return bytes(data), "byte_flip"
    if choice < 0.8:
        return bytes(data[: rng.randrange(1, len(data))]), "truncate"
    return bytes(data) + _evil(rng), "append_evil_pickle"


# -- plain pickle, npy and joblib slots ---------------------------------------


def mut_pickle_slot(rng: random.Random, seed: Seed) -> tuple[bytes, str] | None:
    """A pickle-level mutation inside the seed's (first) pickle, wherever the container keeps it."""
    kind = seed.kind
    if kind == "pickle":
        data, name = mutate_pickle(rng, seed.data)
        return data, f"pickle:{name}"
    if kind == "npy":
        header_end = _npy_data_offset(seed.data)
        data, name = mutate_pickle(rng, seed.data[header_end:])
        return seed.data[:header_end] + data, f"npy_data:{name}"
    if kind == "joblib":
        raw = _joblib_decompress(seed)
        data, name = mutate_pickle(rng, raw)
        if rng.random() < 0.2 and seed.meta.get("compress", "raw") != "raw":
            return _joblib_compress(seed, data, rng.randrange(1, len(data))), f"joblib:{name}:split_stream"
        return _joblib_compress(seed, data), f"joblib:{name}"
    if kind == "joblib_zf":
        inner = zlib.decompress(seed.data[2 + ZF_MAX_LEN :])
        data, name = mutate_pickle(rng, inner)
        return joblib_zf(data), f"zf:{name}"
    if kind == "torch_zip":
        entries = parse_zip(seed.data)
        for e in entries:
            if e.name.endswith(b"/data.pkl"):
                new, name = mutate_pickle(rng, e.data())
                e.payload, e.usize, e.crc, e.method = new, len(new), zlib.crc32(new), 0
                return ZipLayout(entries).build(), f"torch_zip_data.pkl:{name}"
        return None
    if kind == "torch_legacy":
        pickles, rest = split_pickles(seed.data, 5)
        if len(pickles) < 5:
            return None
        i = rng.choice((0, 1, 2, 3, 3, 3, 4))
        pickles[i], name = mutate_pickle(rng, pickles[i])
        return b"".join(pickles) + rest, f"torch_legacy_pickle{i}:{name}"
    if kind == "torch_tar":
        main = _tar_member(seed.data, "pickle")
        if main is None:
            return None
        new, name = mutate_pickle(rng, main)
        return torch_tar(new), f"torch_tar_pickle:{name}"
    if kind == "npz":
        entries = parse_zip(seed.data)
        e = rng.choice(entries)
        payload = e.data()
        if b"'|O'" not in payload[:256]:  # a numeric member: make it an object array first
            payload = _npy_with_pickle(pickle.dumps([1, "x"], 2))
        offset = _npy_data_offset(payload) if payload.startswith(b"\x93NUMPY") else 0
        new, name = mutate_pickle(rng, payload[offset:])
        replaced = ZEntry.stored(e.name, payload[:offset] + new)
        entries[entries.index(e)] = replaced
        return ZipLayout(entries).build(), f"npz_member:{name}"
    return None


def split_pickles(data: bytes, count: int) -> tuple[list[bytes], bytes]:
    pickles = []
    pos = 0
    for _ in range(count):
        ops, _tail = parse_ops(data[pos:])
        if not ops or ops[-1].code != ".":
            break
        end = pos + ops[-1].pos + 1
        pickles.append(data[pos:end])
        pos = end
    return pickles, data[pos:]


def _npy_data_offset(data: bytes) -> int:
    major = data[6]
    if major == 1:
        return 10 + struct.unpack_from("<H", data, 8)[0]
    return 12 + struct.unpack_from("<I", data, 8)[0]


def _tar_member(data: bytes, name: str) -> bytes | None:
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            handle = tar.extractfile(name)
            return handle.read() if handle else None
    except (tarfile.TarError, KeyError, OSError):
        return None


_COMPRESSORS: dict[str, tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]]] = {
    "raw": (lambda b: b, lambda b: b),
    "zlib": (lambda b: zlib.compress(b, 3), zlib.decompress),
    "gzip": (lambda b: gzip.compress(b, 3, mtime=0), gzip.decompress),
    "bz2": (lambda b: bz2.compress(b, 3), bz2.decompress),
    "lzma": (lambda b: lzma.compress(b, lzma.FORMAT_ALONE), lzma.decompress),
    # joblib recognises LZMA-alone by "5d 00" only: other dictionary sizes change the bytes after it.
    "lzma_dict": (
        lambda b: lzma.compress(
            b, lzma.FORMAT_ALONE, filters=[{"id": lzma.FILTER_LZMA1, "dict_size": 0x8000 + (len(b) % 7) * 0x11000}]
        ),
        lzma.decompress,
    ),
    "xz": (lambda b: lzma.compress(b, lzma.FORMAT_XZ, check=lzma.CHECK_CRC32), lzma.decompress),
}


def _joblib_decompress(seed: Seed) -> bytes:
    return _COMPRESSORS[seed.meta.get("compress", "raw")][1](seed.data)


def _joblib_compress(seed: Seed, raw: bytes, split: int | None = None) -> bytes:
    """Compress as the seed was; with ``split``, as two concatenated streams (joblib reads on across them)."""
    compress = _COMPRESSORS[seed.meta.get("compress", "raw")][0]
    if split is None or seed.meta.get("compress", "raw") == "raw":
        return compress(raw)
    return compress(raw[:split]) + compress(raw[split:])


# -- joblib wrappers: structured ----------------------------------------------


JOBLIB_TAIL = b"u."  # the outer dict's SETITEMS, then STOP


def value_ops(value: Any) -> bytes:
    """Opcodes pushing a small Python value (ints, str, None, bool, tuples) without memo opcodes."""
    if value is None:
        return b"N"
    if value is True:
        return b"\x88"
    if value is False:
        return b"\x89"
    if isinstance(value, int):
        return _int_ops(value)
    if isinstance(value, str):
        return sbu(value)
    if isinstance(value, tuple):
        return b"(" + b"".join(value_ops(v) for v in value) + b"t"
    raise TypeError(type(value))


def _cover(length: int) -> bytes:
    """A BINBYTES header swallowing the next ``length`` bytes (then the final STOP ends that pickle)."""
    return b"B" + struct.pack("<I", length)


def rest_nested_vs_raw(evil_body: bytes, raw_size: int) -> bytes | None:
    """The loader reads a nested pickle (payload) then the tail; the other reading skips an aligned raw array.

    The raw reading takes the region's first byte as the pad length, skips it, the pad and
    ``raw_size`` bytes, and lands inside the nested pickle's BINBYTES filler, where the tail
    and a BINBYTES header that swallows everything up to the last STOP are planted: both
    readings end in a complete pickle with nothing after it.
    """
    other_end = 1 + evil_body[0] + raw_size
    if other_end < len(evil_body) + 5:
        return None
    length = other_end + 7 + 16  # the nested pickle's length
    total = length + len(JOBLIB_TAIL)
    plant = JOBLIB_TAIL + _cover(total - 1 - (other_end + 7))
    nested = padded_pickle(evil_body, length, {other_end: plant})
    return None if nested is None else nested + JOBLIB_TAIL


def rest_raw_vs_nested(
    evil_snippet: bytes, raw_size: int, benign_nested: bytes = b"N.", filler: bytes = b"\xee"
) -> bytes | None:
    """The loader skips an aligned raw array then runs ``evil_snippet``; the other reading sees a nested pickle.

    The region's first byte is both the loader's pad length and the nested pickle's first opcode.
    """
    loader_end = 1 + benign_nested[0] + raw_size
    head = benign_nested + JOBLIB_TAIL
    cont = evil_snippet + JOBLIB_TAIL
    filler_start = len(head) + 5
    if loader_end < filler_start:
        return None
    total = loader_end + len(cont)
    return head + _cover(total - 1 - filler_start) + filler * (loader_end - filler_start) + cont


def rest_two_raw(loader_end: int, other_end: int, evil_snippet: bytes) -> bytes | None:
    """Two raw readings of different lengths (pad byte 7 at offset 0 for whichever reads one)."""
    cont = evil_snippet + JOBLIB_TAIL
    if other_end + len(JOBLIB_TAIL) + 5 <= loader_end:
        total = loader_end + len(cont)
        region = bytearray(b"\xee" * total)
        region[0] = 7
        region[loader_end:] = cont
        region[other_end : other_end + 7] = JOBLIB_TAIL + _cover(total - 1 - (other_end + 7))
        return bytes(region) if other_end >= 1 else None
    if other_end >= loader_end + len(cont):
        region = bytearray(b"\xee" * (other_end + len(JOBLIB_TAIL)))
        region[0] = 7
        region[loader_end : loader_end + len(cont)] = cont
        region[other_end:] = JOBLIB_TAIL
        return bytes(region)
    return None


def joblib_doc(wrapper: bytes, rest: bytes, key: str = "x") -> bytes:
    """A joblib pickle ``{key: <array>}``: PROTO 4, EMPTY_DICT, MARK, key, the wrapper, its region."""
    return b"\x80\x04}(" + sbu(key) + wrapper + rest


def mut_joblib_wrapper(rng: random.Random, seed: Seed) -> tuple[bytes, str] | None:
    """A joblib array wrapper that can be read two ways, with the payload where the loader looks.

    Variants: a void dtype whose BUILD state sets numpy's object flags; a state dict with a
    repeated ``dtype`` / ``shape`` / ``numpy_array_alignment_bytes`` key (CPython keeps the last
    one, either order tried); an object dtype spelled several ways; random field values. Where
    two readings exist, both are made to end in complete pickles (see the ``rest_*`` helpers).
    """
    if seed.kind != "joblib":
        return None
    payload = _payload(rng)
    snippet = call_snippet(payload, rng.choice(("global", "stack_global", "memo")))
    evil_body = rng.choice((b"\x80\x02", b"")) + snippet[:-1]  # nested pickle without STOP (value = call result)
    n = rng.choice((1, 2, 3, 8, 17, 40))
    # numpy's own spellings (np.dtype(...).__reduce__()): "f4" + state byte order, "O8", "V8".
    f4 = dtype_ops(rng.choice(("f4", "f4", "<f4")), (3, "<", None, None, None, -1, -1, 0))
    obj = dtype_ops(rng.choice(("O8", "O8", "|O")), (3, "|", None, None, None, -1, -1, 63))
    # object_flags_cleared is rare: joblib always segfaults on it (numpy takes raw bytes for object
    # pointers), which costs the oracle a restart, and the loader never gets to a global after it.
    variants = ("void_flags", "object_flags_cleared", "dup_dtype", "dup_shape", "dup_alignment", "object_spellings", "random")
    variant = rng.choices(variants, (6, 1, 6, 6, 6, 4, 5))[0]
    rest: bytes | None
    if variant == "void_flags":
        flags = rng.choice((1, 63, 0x3F | 0x40, 0x08 | 0x01, 0x10 | 0x01))
        itemsize = rng.choice((8, 16))
        spec = WrapperSpec(dtype_ops(f"V{itemsize}", (3, "|", None, None, None, itemsize, 1, flags)), (n,))
        rest = rest_nested_vs_raw(evil_body, n * itemsize)
        variant += f":flags={flags}"
    elif variant == "object_flags_cleared":  # an object dtype whose state clears the flags: numpy reads raw bytes
        spec = WrapperSpec(dtype_ops("O8", (3, "|", None, None, None, -1, -1, rng.choice((0, 0x10, 0x20)))), (n,))
        # The raw bytes become PyObject pointers: joblib crashes on them (the oracle counts a crash
        # the scanner allows); with a payload after them, the scanner must also read on as raw data.
        rest = rest_raw_vs_nested(rng.choice((snippet, b"")), 8 * n, filler=rng.choice((b"\0", b"\xee")))
    elif variant == "dup_dtype":
        evil_last = rng.random() < 0.5
        first, last = (f4, obj) if evil_last else (obj, f4)
        spec = WrapperSpec(first, (n,), extra_pairs=sbu("dtype") + last)
        if evil_last:
            rest = rest_nested_vs_raw(evil_body, 4 * n)
        else:
            rest = rest_raw_vs_nested(snippet, 4 * n)
        variant += ":evil_last" if evil_last else ":evil_first"
    elif variant == "dup_shape":
        m = n + rng.choice((3, 9, 40))
        first, last = ((n,), (m,)) if rng.random() < 0.5 else ((m,), (n,))
        spec = WrapperSpec(f4, first, extra_pairs=sbu("shape") + _tuple_ops(last))
        rest = rest_two_raw(8 + 4 * last[0], 8 + 4 * first[0], snippet)
        variant += ":longer_last" if last[0] > first[0] else ":shorter_last"
    elif variant == "dup_alignment":
        first_a, last_a = (None, 16) if rng.random() < 0.5 else (16, None)
        pair = sbu("numpy_array_alignment_bytes") + value_ops(last_a)
        spec = WrapperSpec(f4, (n,), alignment=first_a, extra_pairs=pair)
        rest = rest_two_raw((8 if last_a else 0) + 4 * n, (8 if first_a else 0) + 4 * n, snippet)
        variant += ":aligned_last" if last_a else ":aligned_first"
    elif variant == "object_spellings":
        name = rng.choice(("O", "O8", "|O", "object"))
        state = dtype_default_state("O") if rng.random() < 0.5 else None
        spec = WrapperSpec(dtype_ops(name, state), (n,))
        rest = evil_body + b"." + JOBLIB_TAIL
        variant += f":{name}"
    else:
        dtype_name = rng.choice(("f4", "V8", "O8", "i8", "S3", "U2", "b1", "<f4", "|V8"))
        flags = rng.choice((0, 0, 1, 63))
        state = (3, "|" if dtype_name[-2] in "VSOb" else "<", None, None, None, 8 if "V" in dtype_name or "S" in dtype_name else -1, 1, flags)
        spec = WrapperSpec(
            dtype_ops(dtype_name, state if rng.random() < 0.6 else None),
            rng.choice(((n,), (), (0,), (n, 2), (2**40,))),
            rng.choice(("C", "F", "K", "")),
            rng.choice((16, None, 0, 255)),
            include_alignment=rng.random() < 0.8,
        )
        rest = rng.choice((evil_body + b"." + JOBLIB_TAIL, bytes([7]) + b"\0" * (7 + 4 * n) + snippet + JOBLIB_TAIL))
    if rest is None:
        return None
    return _joblib_compress(seed, joblib_doc(wrapper_ops(spec), rest)), f"joblib_wrapper:{variant}"


# -- zip structure ------------------------------------------------------------


def _evil_member_for(seed: Seed, entries: list[ZEntry], rng: random.Random) -> tuple[int, bytes]:
    """(index of the member a loader reads, a malicious replacement for its bytes)."""
    if seed.kind == "torch_zip":
        index = next(i for i, e in enumerate(entries) if e.name.endswith(b"/data.pkl"))
        return index, _evil(rng)
    index = rng.randrange(len(entries))  # npz: an object-dtype .npy whose pickle is the payload
    return index, _npy_with_pickle(_evil(rng))


def _npy_with_pickle(data: bytes) -> bytes:
    header = b"{'descr': '|O', 'fortran_order': False, 'shape': (1,), }"
    header += b" " * ((64 - (10 + len(header) + 1) % 64) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + data


def mut_zip(rng: random.Random, seed: Seed) -> tuple[bytes, str] | None:
    """Two readings of one zip: the classic directory vs a zip64 one, duplicates, shifted offsets ..."""
    if seed.kind not in ("torch_zip", "npz"):
        return None
    entries = parse_zip(seed.data)
    index, evil = _evil_member_for(seed, entries, rng)
    evil_entry = dataclasses.replace(ZEntry.stored(entries[index].name, evil), flags=entries[index].flags)
    variant = rng.choice(ZIP_VARIANTS)
    if variant == "zip64_shadow":
        return _zip64_shadow(rng, entries, index, evil_entry), variant
    if variant == "duplicate_name":
        order = rng.random() < 0.5
        extra = [dataclasses.replace(evil_entry)]
        new = entries + extra if order else extra + entries
        return ZipLayout(new).build(), f"{variant}:{'evil_last' if order else 'evil_first'}"
    if variant == "local_name":  # the local header names another member; the central one names data
        victim = dataclasses.replace(evil_entry, local_name=entries[index].name[:-1] + b"_")
        new = list(entries)
        new[index] = victim
        return ZipLayout(new).build(), variant
    if variant == "concat_shift":  # zipfile adds (EOCD position - size - offset) to every offset; miniz does not
        return _concat_shift(rng, seed, entries, index), variant
    if variant == "rename_prefix":  # torch takes the archive prefix from the first member's directory
        prefix = rng.choice((b"evil", b"a/b", b"archive/archive", b".", b"", b"archive "))
        old = entries[0].name.split(b"/")[0]
        renamed = [dataclasses.replace(e, name=(prefix + e.name[len(old) :]).lstrip(b"/")) for e in entries]
        renamed[index] = dataclasses.replace(evil_entry, name=renamed[index].name)
        return ZipLayout(renamed).build(), f"{variant}:{prefix.decode()!r}"
    if variant == "count_vs_size":  # miniz reads the EOCD's entry count; zipfile reads until the size is used up
        extra_name = entries[index].name.rpartition(b"/")[0] + (b"/" if b"/" in entries[index].name else b"")
        extra = dataclasses.replace(evil_entry, name=extra_name + rng.choice((b"extra.npy", b"data.pkl", b"zz.npy")))
        new = entries + [extra]
        data = bytearray(ZipLayout(new).build())
        end = data.rfind(b"PK\x05\x06")
        struct.pack_into("<HH", data, end + 8, len(entries), len(entries))
        return bytes(data), variant
    if variant == "eocd_rewrite":
        data = bytearray(ZipLayout(entries + [evil_entry]).build())
        end = data.rfind(b"PK\x05\x06")
        field_off = rng.choice((4, 6, 8, 10, 12, 16))
        width = 2 if field_off < 12 else 4  # disk numbers and counts are 16-bit; size and offset 32-bit
        value = int.from_bytes(data[end + field_off : end + field_off + width], "little")
        value = max(0, value + rng.choice((-1, 1, -len(entries), 46, -46, 1 << 16)))
        data[end + field_off : end + field_off + width] = (value & ((1 << (8 * width)) - 1)).to_bytes(width, "little")
        return bytes(data), f"{variant}@{field_off}"
    if variant == "zip64_extra":  # the central offset saturated; the zip64 extra field points at the payload
        new = list(entries)
        base = ZipLayout(new).build()
        cd = base.index(b"PK\x01\x02")
        evil_local = local_header(evil_entry) + evil_entry.payload
        evil_offset = cd
        extra = struct.pack("<HHQ", 1, 8, evil_offset)
        new[index] = dataclasses.replace(entries[index], central_extra=extra)
        out = bytearray(base[:cd]) + evil_local
        offsets = _local_offsets(new)
        cd_bytes = b""
        for i, e in enumerate(new):
            off = 0xFFFFFFFF if i == index else offsets[i]
            cd_bytes += central_header(e, off)
        cd_at = len(out)
        out += cd_bytes + eocd(len(new), len(cd_bytes), cd_at)
        return bytes(out), variant
    if variant == "constants_pkl" and seed.kind == "torch_zip":  # torch.load hands such a zip to torch.jit.load
        prefix = entries[0].name.split(b"/")[0]
        name = rng.choice((b"constants.pkl", b"CONSTANTS.PKL", b"code/constants.pkl"))
        content = rng.choice((pickle.dumps((), 2), evil))
        return ZipLayout(entries + [ZEntry.stored(prefix + b"/" + name, content)]).build(), variant
    if variant == "case_fold":  # miniz (torch) finds names case-insensitively; zipfile (numpy) does not
        head, _, tail = evil_entry.name.rpartition(b"/")
        tail = tail.upper() if rng.random() < 0.5 else tail.swapcase()
        renamed = dataclasses.replace(evil_entry, name=(head + b"/" if head else b"") + tail)
        new = list(entries)
        choice = rng.random()
        if choice < 0.4:
            new[index] = renamed
        elif choice < 0.7:
            new.append(renamed)
        else:
            new.insert(0, renamed)
        return ZipLayout(new).build(), variant
    if variant == "comment_fake_eocd":  # a second EOCD inside the comment, pointing at a shadow directory
        return _comment_shadow(entries, index, evil_entry), variant
    if variant == "method_flip":
        new = list(entries)
        new[index] = ZEntry.deflated(evil_entry.name, evil)
        if rng.random() < 0.5:
            new[index].flags |= rng.choice((0x1, 0x8, 0x40, 0x2000))
        return ZipLayout(new).build(), variant
    if variant == "overlap":  # two central entries share one local record
        new = list(entries)
        base = ZipLayout(new).build()
        offsets = _local_offsets(new)
        cd_start = base.index(b"PK\x01\x02")
        target = rng.randrange(len(new))
        cd_bytes = b"".join(
            central_header(e, offsets[target] if i == index else offsets[i]) for i, e in enumerate(new)
        )
        return base[:cd_start] + cd_bytes + eocd(len(new), len(cd_bytes), cd_start), variant
    return None


ZIP_VARIANTS = (
    "zip64_shadow", "zip64_shadow", "duplicate_name", "local_name", "concat_shift", "concat_shift", "rename_prefix",
    "eocd_rewrite", "zip64_extra", "comment_fake_eocd", "method_flip", "overlap", "constants_pkl", "case_fold",
    "count_vs_size",
)  # fmt: skip


def _local_offsets(entries: Sequence[ZEntry]) -> list[int]:
    offsets, pos = [], 0
    for e in entries:
        offsets.append(pos)
        pos += len(local_header(e)) + len(e.payload)
    return offsets


def _zip64_shadow(rng: random.Random, entries: list[ZEntry], index: int, evil_entry: ZEntry) -> bytes:
    """Classic EOCD -> benign directory; a zip64 EOCD (not needed: nothing saturated) -> the evil one."""
    out = bytearray()
    offsets = []
    for e in entries:
        offsets.append(len(out))
        out += local_header(e) + e.payload
    evil_off = len(out)
    out += local_header(evil_entry) + evil_entry.payload
    benign_cd = b"".join(central_header(e, o) for e, o in zip(entries, offsets))
    shadow_cd = b"".join(
        central_header(evil_entry if i == index else e, evil_off if i == index else o)
        for i, (e, o) in enumerate(zip(entries, offsets))
    )
    order = rng.random() < 0.5
    first, second = (benign_cd, shadow_cd) if order else (shadow_cd, benign_cd)
    first_at = len(out)
    out += first
    second_at = len(out)
    out += second
    benign_at, shadow_at = (first_at, second_at) if order else (second_at, first_at)
    z64_at = len(out)
    out += zip64_records(len(entries), len(shadow_cd), shadow_at, z64_at)
    out += eocd(len(entries), len(benign_cd), benign_at)
    return bytes(out)


def _concat_shift(rng: random.Random, seed: Seed, entries: list[ZEntry], index: int) -> bytes:
    """Two complete zips in one file, told apart only by how a reader places offsets.

    Layout: [benign locals][benign directory][evil locals][evil directory][EOCD]; the EOCD's
    directory offset is relative (that of the benign directory). A reader taking offsets as
    written (miniz) reads the benign zip; zipfile (``np.load``) computes ``concat`` = EOCD
    position - size - offset = the length of the benign half and reads the evil one. Members
    have the same lengths in both halves, so both readings are consistent.
    """
    original = entries[index].data()
    if seed.kind == "torch_zip":
        body = _evil(rng)[:-1]
        evil_data = padded_pickle(body, max(len(original), len(body) + 16)) or body + b"."
        benign_data = padded_pickle(unframe(original)[:-1], len(evil_data)) or original
    else:
        evil_data = _npy_with_pickle(_evil(rng))
        benign_data = _npy_u1_of_length(len(evil_data))
    if len(benign_data) != len(evil_data):
        benign_data = evil_data  # cannot match lengths: degrade to a plain (consistent) zip
    benign = list(entries)
    benign[index] = ZEntry.stored(entries[index].name, benign_data)
    evil = list(entries)
    evil[index] = ZEntry.stored(entries[index].name, evil_data)
    offsets = _local_offsets(benign)
    locals_b = b"".join(local_header(e) + e.payload for e in benign)
    locals_e = b"".join(local_header(e) + e.payload for e in evil)
    cd_b = b"".join(central_header(e, o) for e, o in zip(benign, offsets))
    cd_e = b"".join(central_header(e, o) for e, o in zip(evil, offsets))
    return locals_b + cd_b + locals_e + cd_e + eocd(len(evil), len(cd_e), len(locals_e))


def _npy_u1_of_length(total: int) -> bytes:
    """A plain uint8 .npy of exactly ``total`` bytes (header padded to 64 as numpy writes it)."""
    for header_len in range(54, 4096, 64):
        count = total - 10 - header_len
        if count < 0:
            break
        header = f"{{'descr': '|u1', 'fortran_order': False, 'shape': ({count},), }}".encode()
        if len(header) + 1 > header_len:
            continue
        header = header + b" " * (header_len - len(header) - 1) + b"\n"
        return b"\x93NUMPY\x01\x00" + struct.pack("<H", header_len) + header + b"\0" * count
    return b""


def _comment_shadow(entries: list[ZEntry], index: int, evil_entry: ZEntry) -> bytes:
    out = bytearray()
    offsets = []
    for e in entries:
        offsets.append(len(out))
        out += local_header(e) + e.payload
    evil_off = len(out)
    out += local_header(evil_entry) + evil_entry.payload
    benign_at = len(out)
    benign_cd = b"".join(central_header(e, o) for e, o in zip(entries, offsets))
    out += benign_cd
    shadow_at = len(out)
    shadow_cd = b"".join(
        central_header(evil_entry if i == index else e, evil_off if i == index else o)
        for i, (e, o) in enumerate(zip(entries, offsets))
    )
    out += shadow_cd
    inner = eocd(len(entries), len(shadow_cd), shadow_at)
    out += eocd(len(entries), len(benign_cd), benign_at, comment=inner)
    return bytes(out)


# -- tar structure ------------------------------------------------------------


def mut_tar(rng: random.Random, seed: Seed) -> tuple[bytes, str] | None:
    """torch's legacy tar with the payload in ``pickle`` (or ``storages``) and its headers rewritten."""
    if seed.kind != "torch_tar":
        return None
    target = rng.choice(("pickle", "pickle", "storages", "sys_info_dup"))
    evil = _evil(rng, proto=2)
    if target == "pickle":
        data = torch_tar(evil)
    elif target == "storages":
        data = torch_tar(pickle.dumps({"w": 1.0}, 2), storages=evil)
    else:  # a second "pickle" member: tarfile (and torch) take the last one
        base = tar_bytes([("pickle", pickle.dumps({}, 2))])
        data = base[: tar_headers(base)[-1] + 512 + 512] + torch_tar(evil)
    buf = bytearray(data)
    headers = tar_headers(data)
    variant = rng.choice(("no_magic", "no_magic", "gnu_magic", "bad_checksum", "typeflag", "size", "none", "pax"))
    if variant == "no_magic":  # v7 tar: tarfile reads it, a sniffer looking for "ustar" does not
        for off in headers:
            buf[off + 257 : off + 265] = b"\0" * 8
            tar_fix_checksum(buf, off)
    elif variant == "gnu_magic":
        for off in headers:
            buf[off + 257 : off + 265] = b"ustar  \0"
            tar_fix_checksum(buf, off)
    elif variant == "bad_checksum":
        off = rng.choice(headers)
        buf[off + 148 : off + 154] = b"000001"
    elif variant == "typeflag":
        off = rng.choice(headers)
        buf[off + 156] = rng.choice(b"\x0007gxLK")
        tar_fix_checksum(buf, off)
    elif variant == "size":
        off = rng.choice(headers)
        size = int(buf[off + 124 : off + 136].strip(b"\0 ") or b"0", 8) + rng.choice((-1, 1, 512, -8))
        buf[off + 124 : off + 136] = b"%011o\0" % max(0, size)
        tar_fix_checksum(buf, off)
    elif variant == "pax":
        members = [("sys_info", pickle.dumps({}, 2)), ("pickle", evil), ("tensors", pickle.dumps(0, 2)),
                   ("storages", pickle.dumps(0, 2) + pickle.dumps([], 2))]  # fmt: skip
        buf = bytearray(tar_bytes(members, tarfile.PAX_FORMAT if rng.random() < 0.5 else tarfile.GNU_FORMAT))
    return bytes(buf), f"tar:{target}:{variant}"


# -- npy headers, ZF, torch legacy ------------------------------------------------


def mut_npy(rng: random.Random, seed: Seed) -> tuple[bytes, str] | None:
    """Rewrite the npy header dict (dtype, shape, order), its version or its length field."""
    if seed.kind != "npy":
        return None
    descr = rng.choice(("'|O'", "'<f4'", "'|V8'", "[('a', '|O')]", "[('a', '<f4'), ('b', '|O')]", "'O'", "'|S8'"))
    shape = rng.choice(("(1,)", "(3,)", "()", "(0,)", "(2, 2)", "(1, )"))
    order = rng.choice(("False", "True"))
    dup = rng.random() < 0.3
    header = f"{{'descr': {descr}, 'fortran_order': {order}, 'shape': {shape}, "
    if dup:
        header += "'descr': '|O', "
    header += "}"
    version = rng.choice(((1, 0), (1, 0), (2, 0), (3, 0)))
    lenfmt = "<H" if version[0] == 1 else "<I"
    prefix_len = 6 + 2 + struct.calcsize(lenfmt)
    raw = header.encode("latin-1")
    raw += b" " * ((64 - (prefix_len + len(raw) + 1) % 64) % 64) + b"\n"
    length = len(raw) + rng.choice((0, 0, 0, -1, 1, 64))
    data = _evil(rng) if rng.random() < 0.8 else b"\0" * 32
    out = b"\x93NUMPY" + bytes(version) + struct.pack(lenfmt, max(0, length)) + raw + data
    return out, f"npy_header:{'dup_descr' if dup else 'descr'}={descr}:v{version[0]}"


def mut_zf(rng: random.Random, seed: Seed) -> tuple[bytes, str] | None:
    """joblib's ZF compatibility format carrying the payload; printable, padded or plain."""
    if seed.kind != "joblib_zf":
        return None
    variant = rng.choice(("plain", "printable", "printable", "space_after_len", "bad_len"))
    if variant == "printable":
        inner = evil_pickle(_payload(rng), "text", 0)
        out = joblib_zf_printable(inner)
        return (out, "zf:printable") if out else None
    inner = _evil(rng)
    if variant == "plain":
        return joblib_zf(inner, rng.choice((0, 1, 9))), "zf:plain"
    if variant == "space_after_len":
        body = zlib.compress(inner)
        return b"ZF" + f"{len(inner):#x}".encode().ljust(ZF_MAX_LEN) + b" " + body, "zf:space_after_len"
    body = zlib.compress(inner)
    return b"ZF" + f"{rng.choice((0, 1, 1 << 40)):#x}".encode().ljust(ZF_MAX_LEN) + body, "zf:bad_len"


def mut_text_pickle(rng: random.Random, seed: Seed) -> tuple[bytes, str] | None:
    """Protocol-0 payloads that are printable text, with text-like padding before and after."""
    if seed.kind != "pickle":
        return None
    payload = _payload(rng)
    body = call_snippet(payload, "text")
    prefix = rng.choice((b"", b"(dp0\n0", b"N0" * 40, b"(S'# README'\np1\n0", b"I0\n0" * 10))
    suffix = rng.choice((b".", b"N.", b"N.\n# trailing notes\n", b"N." + b"hello world\n" * 200))
    return prefix + body + suffix, "text_pickle"


def mut_unpickler_edges(rng: random.Random, seed: Seed) -> tuple[bytes, str] | None:
    """Where pickle's two unpicklers disagree: the pure-Python one (joblib) and the C one (torch, numpy, pickle).

    * ``truncated_inst`` / ``truncated_global``: a text opcode's last line cut by EOF. The
      Python unpickler's ``readline()[:-1]`` then drops a real character instead of the
      newline, so ``ios\\nsystemX`` ends an INST that calls ``os.system`` (no STOP needed);
      C raises "truncated".
    * ``frame_overrun``: a FRAME longer than what is left. Python reads what there is; C raises.
    * ``nested_frame`` / ``frame_straddle``: a FRAME inside a frame, or one ending inside an
      opcode. C only prefetches frames and goes on; Python raises.
    """
    if seed.kind not in ("pickle", "joblib", "joblib_zf", "torch_zip", "npy"):
        return None
    payload = _payload(rng)
    module, name, arg = payload
    variant = rng.choice(("truncated_inst", "truncated_global", "frame_overrun", "nested_frame", "frame_straddle"))
    snippet = call_snippet(payload, rng.choice(("global", "stack_global", "memo")))
    if variant == "truncated_inst":
        junk = bytes([rng.choice(b"X. \t")])
        stream = rng.choice((b"", b"(dp0\n0", b"N0", b"\x80\x02N0"))
        stream += b"(" + text_unicode(arg) + b"i" + module.encode() + b"\n" + name.encode() + junk
    elif variant == "truncated_global":
        junk = bytes([rng.choice(b"X. \t")])
        stream = rng.choice((b"", b"N0", b"\x80\x02N0")) + b"c" + module.encode() + b"\n" + name.encode() + junk
    elif variant == "frame_overrun":
        body = snippet + b"N."
        stream = b"\x80\x04\x95" + struct.pack("<Q", len(body) + rng.choice((1, 2, 100, 1 << 20))) + body
    elif variant == "nested_frame":
        inner = snippet + b"N."
        outer = b"N0\x95" + struct.pack("<Q", len(inner)) + inner
        stream = b"\x80\x04\x95" + struct.pack("<Q", len(outer)) + outer
    else:
        body = snippet + b"N."
        cut = rng.randrange(1, len(body))
        stream = b"\x80\x04\x95" + struct.pack("<Q", cut) + body
    label = f"unpickler_edge:{variant}"
    if seed.kind == "joblib_zf":
        return joblib_zf(stream), label + ":zf"
    if seed.kind == "joblib":
        return _joblib_compress(seed, stream), f"{label}:joblib_{seed.meta.get('compress')}"
    if seed.kind == "torch_zip":
        entries = parse_zip(seed.data)
        for e in entries:
            if e.name.endswith(b"/data.pkl"):
                e.payload, e.usize, e.crc, e.method = stream, len(stream), zlib.crc32(stream), 0
        return ZipLayout(entries).build(), label + ":torch_zip"
    if seed.kind == "npy":
        return _npy_with_pickle(stream), label + ":npy"
    return stream, label


def mut_legacy_layout(rng: random.Random, seed: Seed) -> tuple[bytes, str] | None:
    """torch legacy: the payload in another of the five pickles, or after the storage records."""
    if seed.kind != "torch_legacy":
        return None
    pickles, rest = split_pickles(seed.data, 5)
    if len(pickles) < 5:
        return None
    variant = rng.choice(("magic_pickle", "sysinfo_pickle", "keys_pickle", "after_records", "replace_main"))
    evil = _evil(rng)
    if variant == "magic_pickle":  # the magic number computed by the payload pickle
        pickles[0] = unframe(pickles[0])[:-1] + call_snippet(_payload(rng), "global") + b"."
    elif variant == "sysinfo_pickle":
        pickles[2] = unframe(pickles[2])[:-1] + call_snippet(_payload(rng), "global") + b"."
    elif variant == "keys_pickle":
        pickles[4] = unframe(pickles[4])[:-1] + call_snippet(_payload(rng), "global") + b"."
    elif variant == "after_records":
        rest += evil
    else:
        pickles[3] = evil
    return b"".join(pickles) + rest, f"torch_legacy:{variant}"


MUTATORS: dict[str, Mutator] = {
    "pickle_slot": mut_pickle_slot,
    "joblib_wrapper": mut_joblib_wrapper,
    "zip": mut_zip,
    "tar": mut_tar,
    "npy": mut_npy,
    "zf": mut_zf,
    "text_pickle": mut_text_pickle,
    "legacy_layout": mut_legacy_layout,
    "unpickler_edges": mut_unpickler_edges,
    "bytes": mut_bytes,
}
# How often each mutator is drawn (when it applies to the seed).
MUTATOR_WEIGHTS = {
    "pickle_slot": 6, "joblib_wrapper": 5, "zip": 5, "tar": 4, "npy": 2, "zf": 4, "text_pickle": 2,
    "legacy_layout": 3, "unpickler_edges": 2, "bytes": 2,
}  # fmt: skip


@dataclass
class Mutant:
    index: int
    seed: str
    kind: str
    ops: list[str]
    data: bytes
    path: Path | None = None


def generate(rng: random.Random, seeds: Sequence[Seed], index: int) -> Mutant:
    """One mutant: a seed, one structured mutation, sometimes a second one on top (chains find combos)."""
    for _ in range(50):
        seed = rng.choice(seeds)
        names = [n for n in MUTATORS if n != "bytes" or rng.random() < 0.5]
        weights = [MUTATOR_WEIGHTS[n] for n in names]
        name = rng.choices(names, weights)[0]
        try:
            result = MUTATORS[name](rng, seed)
        except (ValueError, IndexError, StopIteration, struct.error, zlib.error, lzma.LZMAError, OSError, EOFError):
            result = None
        if result is None:
            continue
        data, label = result
        ops = [label]
        if rng.random() < 0.25 and name != "bytes":  # a second mutation on the result
            second = rng.choice(("bytes", "pickle_slot"))
            try:
                extra = MUTATORS[second](rng, Seed(seed.name, seed.kind, data, seed.meta))
            except (ValueError, IndexError, StopIteration, struct.error, zlib.error, lzma.LZMAError, OSError, EOFError):
                extra = None
            if extra is not None:
                data, label2 = extra
                ops.append(label2)
        return Mutant(index, seed.name, seed.kind, ops, data)
    raise RuntimeError("no mutator applied in 50 tries")


# --------------------------------------------------------------------------- the differential


TIERS = ("low", "critical")


@dataclass
class Verdicts:
    verdict: dict[str, str]  # tier -> allow|block
    flagged: dict[str, bool]  # tier -> allowed but a finding asks a human (requires_approval)
    rules: dict[str, list[str]]  # tier -> finding rules
    detected: str = ""
    raised: str | None = None  # scan_model raised (a scanner bug: counted, and treated as a block)


def scan_verdicts(path: Path, tiers: Sequence[str] = TIERS) -> Verdicts:
    from airlock.scan import scan_model

    verdict, flagged, rules = {}, {}, {}
    detected = ""
    raised = None
    for tier in tiers:
        try:
            report = scan_model(path, tier)
        except Exception as exc:  # noqa: BLE001  (the scanner must not raise on content: recorded as a block)
            verdict[tier], flagged[tier], rules[tier] = "block", False, [f"<scanner raised {type(exc).__name__}>"]
            raised = f"{type(exc).__name__}: {exc}"
            continue
        verdict[tier] = report.verdict
        flagged[tier] = bool(report.requires_approval)
        rules[tier] = sorted({f.rule for fr in report.files for f in fr.findings})
        detected = report.files[0].detected_format if report.files else ""
    return Verdicts(verdict, flagged, rules, detected, raised)


@dataclass
class Disagreement:
    mutant: Mutant
    tier: str
    loader: str
    globals: list[str]
    verdicts: Verdicts
    klass: str

    def summary(self) -> str:
        g = ", ".join(x.replace(":", ".") for x in self.globals[:3])
        flag = " (allowed, flagged for approval)" if self.verdicts.flagged.get(self.tier) else ""
        return (
            f"[{self.klass}] tier={self.tier} seed={self.mutant.seed} ops={'+'.join(self.mutant.ops)} "
            f"loader={self.loader} reached={g} scanner: {self.verdicts.detected} "
            f"{self.verdicts.verdict[self.tier]}{flag} rules={self.verdicts.rules[self.tier]}"
        )


@dataclass
class CampaignStats:
    tried: int = 0
    opened: int = 0  # some loader opened it (loaded, or reached a global)
    reached_outside: int = 0  # some loader reached a non-allowlisted global
    disagreements: int = 0  # (mutant, tier) pairs
    disagreeing_mutants: int = 0
    over_blocks: dict[str, int] = field(default_factory=dict)  # tier -> blocked, no loader opened
    crashed: int = 0
    crash_allowed: int = 0  # a loader crashed or hung on a file the scanner allows (DoS, or worse: reported)
    scanner_raised: int = 0
    classes: Counter[str] = field(default_factory=Counter)
    by_tier: Counter[str] = field(default_factory=Counter)
    crash_reasons: Counter[str] = field(default_factory=Counter)
    ops: Counter[str] = field(default_factory=Counter)
    elapsed_s: float = 0.0

    def lines(self) -> list[str]:
        out = [
            f"mutants tried: {self.tried}",
            f"opened by a loader: {self.opened}",
            f"reached a global outside the allowlist: {self.reached_outside}",
            f"disagreements (mutant x tier): {self.disagreements} in {self.disagreeing_mutants} mutants"
            + (" (" + ", ".join(f"{t}={n}" for t, n in sorted(self.by_tier.items())) + ")" if self.by_tier else ""),
            "over-blocks (scanner blocks, no loader opens): "
            + ", ".join(f"{t}={n}" for t, n in sorted(self.over_blocks.items())),
            f"oracle crashes/hangs: {self.crashed} (of which the scanner allows {self.crash_allowed})",
            f"scanner exceptions: {self.scanner_raised}",
            f"elapsed: {self.elapsed_s:.1f}s",
        ]
        for reason, n in self.crash_reasons.most_common(5):
            out.append(f"  oracle crash: {reason}: {n}")
        for klass, n in self.classes.most_common():
            out.append(f"  class {klass}: {n}")
        return out


def classify(mutant: Mutant, loader: str, globals_: Sequence[str], verdicts: Verdicts, tier: str) -> str:
    """A stable name for a disagreement's class: container, mutation (without the random details), loader."""
    op = mutant.ops[0]
    op = re.sub(r"@\d+", "", op)
    op = re.sub(r"inject_call:\w+", "inject_call", op)
    op = re.sub(r"(npy_header:[a-z_]+)=.*", r"\1", op)
    op = re.sub(r"(joblib_wrapper:void_flags):flags=\d+", r"\1", op)
    return f"{mutant.kind}/{op}/{loader}/{verdicts.detected}"


def run_campaign(
    *,
    seed: int,
    count: int,
    time_budget_s: float,
    workdir: Path,
    repro_dir: Path | None = None,
    batch: int = 1000,
    tiers: Sequence[str] = TIERS,
    scanner: Callable[[Path, Sequence[str]], Verdicts] = scan_verdicts,
    loader_timeout_s: float = 2.0,
) -> tuple[CampaignStats, list[Disagreement]]:
    """Generate, scan and oracle up to ``count`` mutants (or until ``time_budget_s``); compare."""
    started = time.monotonic()
    rng = random.Random(seed)
    seeds = build_seeds()
    allowed = scan_oracle.airlock_allowlist()
    stats = CampaignStats(over_blocks={t: 0 for t in tiers})
    found: list[Disagreement] = []
    workdir.mkdir(parents=True, exist_ok=True)
    deadline = started + time_budget_s
    index = 0
    while index < count and time.monotonic() < deadline:
        mutants = []
        for _ in range(min(batch, count - index)):
            m = generate(rng, seeds, index)
            m.path = workdir / f"m{index:06d}.bin"
            m.path.write_bytes(m.data)
            mutants.append(m)
            index += 1
        run = _OracleRun([m.path for m in mutants], allowed, deadline, loader_timeout_s)  # type: ignore[misc]
        verdicts: dict[int, Verdicts] = {}
        for m in mutants:
            if time.monotonic() >= deadline:
                break
            verdicts[m.index] = scanner(m.path, tiers)  # type: ignore[arg-type]
        oracle = run.wait()
        for m in mutants:
            result = oracle.get(str(m.path))
            if result is not None and m.index in verdicts:  # both sides finished before the deadline
                _compare(m, result, verdicts[m.index], allowed, tiers, stats, found, repro_dir)
                stats.tried += 1
            m.path.unlink()  # type: ignore[union-attr]
    stats.elapsed_s = time.monotonic() - started
    return stats, found


class _OracleRun:
    """The loaders run in a child process while this process scans (both cores busy)."""

    def __init__(self, paths: list[Path], allowed: set[tuple[str, str]], deadline: float, timeout_s: float) -> None:
        self.results: dict[str, scan_oracle.OracleResult] = {}
        self.error: BaseException | None = None
        args = (paths, allowed, deadline, timeout_s)
        self.thread = threading.Thread(target=self._work, args=args, daemon=True)
        self.thread.start()

    def _work(self, paths: list[Path], allowed: set[tuple[str, str]], deadline: float, timeout_s: float) -> None:
        try:
            found = scan_oracle.run_oracle(paths, allowed=allowed, deadline=deadline, loader_timeout_s=timeout_s)
            self.results.update(found)
        except BaseException as exc:  # noqa: BLE001  (re-raised in the caller's thread by wait())
            self.error = exc

    def wait(self) -> dict[str, scan_oracle.OracleResult]:
        self.thread.join()
        if self.error is not None:
            raise self.error
        return self.results


def _compare(
    m: Mutant,
    result: scan_oracle.OracleResult,
    verdicts: Verdicts,
    allowed: set[tuple[str, str]],
    tiers: Sequence[str],
    stats: CampaignStats,
    found: list[Disagreement],
    repro_dir: Path | None,
) -> None:
    stats.ops[m.ops[0].split(":")[0]] += 1
    if verdicts.raised:
        stats.scanner_raised += 1
    if result.crashed:
        stats.crashed += 1
        stats.crash_reasons[result.crashed[:80]] += 1
        allowed_at = [t for t in tiers if verdicts.verdict[t] == "allow"]
        if allowed_at:
            stats.crash_allowed += 1
        if repro_dir is not None:  # a file that kills or hangs a loader: kept for a look, not a failure
            repro_dir.mkdir(parents=True, exist_ok=True)
            label = "allowed" if allowed_at else "blocked"
            name = f"oracle-crash-{label}-{m.kind}-{hashlib.sha256(m.data).hexdigest()[:12]}.bin"
            (repro_dir / name).write_bytes(m.data)
    if result.opened:
        stats.opened += 1
    outside = result.outside(allowed)
    for loader in list(outside):
        # torch.load handing a zip to torch.jit.load is policy's business (TorchScript is remote code,
        # flagged for approval at low tiers) when the scanner names it; unnamed, it is a disagreement.
        if scan_oracle.TORCHSCRIPT_DISPATCH in outside[loader] and all(
            "torch.torchscript" in verdicts.rules.get(t, []) for t in tiers
        ):
            outside[loader] = [g for g in outside[loader] if g != scan_oracle.TORCHSCRIPT_DISPATCH]
            if not outside[loader]:
                del outside[loader]
    if outside:
        stats.reached_outside += 1
    hit = False
    for tier in tiers:
        if verdicts.verdict[tier] == "block":
            if not result.opened and not result.crashed:
                stats.over_blocks[tier] = stats.over_blocks.get(tier, 0) + 1
            continue
        for loader, globals_ in outside.items():
            klass = classify(m, loader, globals_, verdicts, tier)
            found.append(Disagreement(m, tier, loader, globals_, verdicts, klass))
            stats.classes[klass] += 1
            stats.by_tier[tier] += 1
            stats.disagreements += 1
            hit = True
            if repro_dir is not None:
                save_repro(repro_dir, klass, m, found[-1])
            break  # one per tier is enough to count; the class names the first loader
    if hit:
        stats.disagreeing_mutants += 1


def save_repro(repro_dir: Path, klass: str, m: Mutant, d: Disagreement) -> Path:
    """Keep the smallest reproducer per class: ``<class>.bin`` and a ``.json`` saying what happened."""
    repro_dir.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", klass).strip("_")[:120]
    target = repro_dir / f"{slug}.bin"
    if target.exists() and target.stat().st_size <= len(m.data):
        return target
    target.write_bytes(m.data)
    (repro_dir / f"{slug}.json").write_text(
        json.dumps(
            {
                "class": klass,
                "seed": m.seed,
                "kind": m.kind,
                "ops": m.ops,
                "tier": d.tier,
                "loader": d.loader,
                "reached": [g.replace(":", ".", 1) for g in d.globals],
                "scanner": dataclasses.asdict(d.verdicts),
                "sha256": hashlib.sha256(m.data).hexdigest(),
            },
            indent=2,
        )
    )
    return target


def clean(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
