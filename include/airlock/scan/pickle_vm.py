"""A symbolic pickle machine: walks every opcode like the unpickler does, but imports and calls nothing.

Why not ``pickletools.genops`` plus a list of globals (what picklescan does)? Because the
bypasses are about *what the unpickler would compute*: a STACK_GLOBAL whose operands come from
a memo slot, a BINSTRING or a REDUCE result; a BINGET of a slot never PUT; a call on a value
that is not a global. So this module simulates the stack, the mark stack and the memo with
symbolic values (literals, containers, :class:`GlobalRef`, :class:`Instance`), resolves every
global exactly as ``find_class`` would see it, and records a :class:`Hit` for anything outside
the allowlist. Whatever it cannot resolve is a hit, never a pass.

Semantics follow CPython's C unpickler (``Modules/_pickle.c``), including the protocol < 3
renaming of Python 2 module names (``__builtin__`` -> ``builtins``) that ``find_class`` applies.
"""

from __future__ import annotations

import _compat_pickle
import codecs
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from airlock.scan.allowlist import ALLOWED_GLOBALS, JOBLIB_ARRAY_WRAPPER, Role, is_known_dangerous

HIGHEST_PROTOCOL = 5
MAX_HITS_PER_STREAM = 50
_SMALL = 4096  # literals longer than this are kept as their length only (never needed to resolve names)
_TIME_CHECK_EVERY = 1 << 14  # opcodes between budget checks
_MAX_NESTING = 8  # joblib object arrays inside object arrays ...


class PickleError(Exception):
    """The stream is not a well-formed pickle at ``offset`` (the unpickler would fail there too)."""

    def __init__(self, message: str, offset: int, *, truncated: bool = False) -> None:
        super().__init__(message)
        self.offset = offset
        self.truncated = truncated  # ran out of bytes (as opposed to bytes that make no sense)


# --------------------------------------------------------------------------- symbolic values


@dataclass(frozen=True, slots=True)
class GlobalRef:
    module: str
    name: str
    offset: int
    resolved: bool = True  # False: STACK_GLOBAL/EXT whose target could not be determined

    @property
    def key(self) -> tuple[str, str]:
        return (self.module, self.name)

    @property
    def dotted(self) -> str:
        return f"{self.module}.{self.name}" if self.resolved else "<unresolved>"


@dataclass(slots=True, eq=False)
class Instance:
    """What a call (REDUCE, NEWOBJ, INST, OBJ) returns; ``factory`` is the allowlisted global called."""

    factory: GlobalRef
    args: Any
    offset: int
    state: Any = None


@dataclass(frozen=True, slots=True)
class Opaque:
    """A value whose content is irrelevant to safety (long bytes, arrays, persistent loads)."""

    kind: str
    size: int = 0
    value: Any = None


@dataclass(slots=True, eq=False)
class ListV:
    items: list[Any] = field(default_factory=list)


@dataclass(slots=True, eq=False)
class DictV:
    items: list[tuple[Any, Any]] = field(default_factory=list)

    def get(self, key: str) -> Any:
        for k, v in self.items:
            if k == key:
                return v
        return None

    def keys(self) -> list[Any]:
        return [k for k, _ in self.items]


@dataclass(slots=True, eq=False)
class SetV:
    items: list[Any] = field(default_factory=list)
    frozen: bool = False


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class VmHit:
    rule: str
    detail: str
    offset: int


@dataclass
class PickleWalk:
    """One pickle stream, from its first opcode to STOP (or to where it broke)."""

    start: int
    end: int  # offset after STOP, or where parsing failed
    complete: bool
    protocol: int = 0
    result: Any = None
    globals: list[GlobalRef] = field(default_factory=list)
    hits: list[VmHit] = field(default_factory=list)
    persistent_ids: list[Any] = field(default_factory=list)
    # Byte ranges that are opcodes (joblib interleaves raw array bytes, which are cut out here).
    segments: list[tuple[int, int]] = field(default_factory=list)
    nested: list[PickleWalk] = field(default_factory=list)  # joblib object arrays: a pickle inside the pickle
    error: PickleError | None = None
    suppressed_hits: int = 0

    @property
    def imports_globals(self) -> bool:
        """Did the stream name a global the unpickler would import (GLOBAL, INST, string STACK_GLOBAL)?

        EXT codes and STACK_GLOBALs on non-strings fail in the unpickler before any import
        (copyreg's extension registry is empty unless a program fills it), so they do not count
        when deciding whether unknown bytes are a pickle; in a pickle they still block.
        """
        return any(g.resolved for g in self.globals)

    @property
    def uses_joblib(self) -> bool:
        return any(g.key == JOBLIB_ARRAY_WRAPPER for g in self.globals)


# --------------------------------------------------------------------------- the machine

_DOTTED_IDENTIFIER = re.compile(r"[^\W\d]\w*(?:\.[^\W\d]\w*)*\Z")
_NUMPY_DTYPE_STR = re.compile(r"[?a-zA-Z]\d*(?:\[\w+\])?\Z")


def _identifier(text: str) -> bool:
    """True if ``text`` could name an importable module or attribute (only those can run code)."""
    return bool(_DOTTED_IDENTIFIER.match(text))


def effective_global(module: str, name: str, protocol: int) -> tuple[str, str]:
    """The (module, name) ``find_class`` looks up: Python 2 names are renamed below protocol 3."""
    if protocol < 3:
        if (module, name) in _compat_pickle.NAME_MAPPING:
            return _compat_pickle.NAME_MAPPING[(module, name)]
        if module in _compat_pickle.IMPORT_MAPPING:
            return _compat_pickle.IMPORT_MAPPING[module], name
    return module, name


class PickleVM:
    """Walk one pickle stream in ``buf[start:end]``; see :func:`walk_pickle`."""

    def __init__(
        self,
        buf: Any,
        start: int,
        end: int,
        *,
        check_time: Callable[[], None] | None = None,
        depth: int = 0,
    ) -> None:
        self.buf = buf
        self.pos = start
        self.end = end
        self.check_time = check_time
        self.depth = depth
        self.stack: list[Any] = []
        self.metastack: list[list[Any]] = []
        self.memo: dict[int, Any] = {}
        self.walk = PickleWalk(start=start, end=start, complete=False)
        self._segment_start = start
        self._op_offset = start

    # ------------------------------------------------------------------ reading

    def _take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > self.end:
            raise PickleError(
                f"truncated: needs {n} bytes, {self.end - self.pos} left", self._op_offset, truncated=n >= 0
            )
        data = self.buf[self.pos : self.pos + n]
        self.pos += n
        return data

    def _line(self) -> bytes:
        i = self.buf.find(b"\n", self.pos, self.end)
        if i < 0:
            raise PickleError("truncated: line without newline", self._op_offset, truncated=True)
        data = self.buf[self.pos : i]
        self.pos = i + 1
        return data

    def _unpack(self, fmt: str, n: int) -> int:
        pos = self.pos
        if pos + n > self.end:
            raise PickleError(f"truncated: needs {n} bytes, {self.end - pos} left", self._op_offset, truncated=True)
        self.pos = pos + n
        return struct.unpack_from(fmt, self.buf, pos)[0]

    def _byte(self) -> int:
        pos = self.pos
        if pos >= self.end:
            raise PickleError("truncated: needs 1 byte", self._op_offset, truncated=True)
        self.pos = pos + 1
        return self.buf[pos]

    # ------------------------------------------------------------------ stack

    def _push(self, value: Any) -> None:
        self.stack.append(value)

    def _pop(self) -> Any:
        if not self.stack:
            raise PickleError("stack underflow", self._op_offset)
        return self.stack.pop()

    def _top(self) -> Any:
        if not self.stack:
            raise PickleError("stack underflow", self._op_offset)
        return self.stack[-1]

    def _pop_mark(self) -> list[Any]:
        if not self.metastack:
            raise PickleError("no MARK on the stack", self._op_offset)
        items = self.stack
        self.stack = self.metastack.pop()
        return items

    # ------------------------------------------------------------------ findings

    def _hit(self, rule: str, detail: str, offset: int | None = None) -> None:
        if len(self.walk.hits) >= MAX_HITS_PER_STREAM:
            self.walk.suppressed_hits += 1
            return
        self.walk.hits.append(VmHit(rule, detail, self._op_offset if offset is None else offset))

    def _global(self, module: str, name: str, opname: str) -> GlobalRef:
        offset = self._op_offset
        module, name = effective_global(module, name, self.walk.protocol)
        ref = GlobalRef(module, name, offset)
        self.walk.globals.append(ref)
        if ref.key not in ALLOWED_GLOBALS:
            why = "a known code-execution primitive" if is_known_dangerous(module, name) else "not in the allowlist"
            self._hit("pickle.global.disallowed", f"{opname} imports {module}.{name}: {why}")
        return ref

    def _unresolved(self, opname: str, why: str) -> GlobalRef:
        self._hit("pickle.global.unresolved", f"{opname} target cannot be determined: {why}")
        ref = GlobalRef("?", "?", self._op_offset, resolved=False)
        self.walk.globals.append(ref)
        return ref

    def _call(self, func: Any, args: Any, opname: str) -> Instance | Opaque:
        """Record a call; the callee must be an allowlisted global whose role permits calling."""
        if isinstance(func, GlobalRef):
            role = ALLOWED_GLOBALS.get(func.key)
            if func.resolved and role is Role.REF:
                self._hit("pickle.global.not_callable", f"{opname} calls {func.dotted}, which is only ever a value")
            # Disallowed or unresolved globals were reported where they were imported.
            return Instance(func, args, self._op_offset)
        self._hit("pickle.call.non_global", f"{opname} calls a {_describe(func)}, not an allowlisted global")
        return Opaque("call-result")

    def _check_target(self, target: Any, opname: str, kinds: tuple[type, ...]) -> None:
        """SETITEM/APPEND/ADDITEMS mutate ``target``: only containers or allowlisted instances."""
        if isinstance(target, kinds):
            return
        if isinstance(target, Instance):
            return  # made by an allowlisted (or already-reported) global: OrderedDict, Counter ...
        self._hit("pickle.build.target", f"{opname} mutates a {_describe(target)}")

    # ------------------------------------------------------------------ the loop

    def run(self) -> PickleWalk:
        ops = _DISPATCH
        buf = self.buf
        end = self.end
        countdown = _TIME_CHECK_EVERY
        try:
            while True:
                pos = self.pos
                if pos >= end:
                    raise PickleError("truncated: no STOP opcode", pos, truncated=True)
                self._op_offset = pos
                code = buf[pos]  # an int for bytes and mmap alike
                self.pos = pos + 1
                handler = ops.get(code)
                if handler is None:
                    raise PickleError(f"unknown opcode 0x{code:02x}", pos)
                if handler(self):
                    break
                countdown -= 1
                if not countdown:
                    countdown = _TIME_CHECK_EVERY
                    if self.check_time is not None:
                        self.check_time()
        except PickleError as exc:
            self.walk.error = exc
            self.walk.end = self.pos
            self._close_segment(self.pos)
            return self.walk
        self.walk.complete = True
        self.walk.end = self.pos
        self._close_segment(self.pos)
        return self.walk

    def _close_segment(self, upto: int) -> None:
        if upto > self._segment_start:
            self.walk.segments.append((self._segment_start, upto))
        self._segment_start = upto

    # ------------------------------------------------------------------ joblib

    def _joblib_array(self, wrapper: Instance) -> None:
        """After BUILD of a NumpyArrayWrapper, joblib reads the array's bytes from the stream itself.

        The layout (joblib/numpy_pickle.py ``write_array``): one padding-length byte and that
        many padding bytes (when ``numpy_array_alignment_bytes`` is set), then ``count *
        itemsize`` raw bytes; an object array is instead a nested pickle. Skip the raw bytes
        (they are data, never opcodes) and walk a nested pickle like any other.
        """
        state = wrapper.state
        if not isinstance(state, DictV):
            raise PickleError("joblib NumpyArrayWrapper state is not a dict", self._op_offset)
        dtype = state.get("dtype")
        shape = state.get("shape")
        if not (isinstance(shape, tuple) and all(isinstance(d, int) and d >= 0 for d in shape)):
            raise PickleError("joblib NumpyArrayWrapper shape is not a tuple of sizes", self._op_offset)
        itemsize = _joblib_itemsize(dtype)
        self._close_segment(self.pos)
        if itemsize is None:
            self._hit("joblib.unsupported_dtype", "joblib array dtype cannot be sized (structured or unknown)")
            raise PickleError("joblib array of unsupported dtype", self._op_offset)
        if itemsize == 0:  # object dtype: a complete pickle follows
            if self.depth >= _MAX_NESTING:
                raise PickleError("joblib object arrays nested too deep", self._op_offset)
            inner = PickleVM(self.buf, self.pos, self.end, check_time=self.check_time, depth=self.depth + 1)
            walk = inner.run()
            self.walk.nested.append(walk)
            if not walk.complete:
                raise PickleError("joblib object array: nested pickle is malformed", self.pos)
            self.pos = walk.end
        else:
            if state.get("numpy_array_alignment_bytes") is not None:
                padding = self._byte()
                self._take(padding)
            count = 1
            for dim in shape:
                count *= dim
            self._take_raw(count * itemsize)
        self._segment_start = self.pos
        self.stack[-1] = Opaque("ndarray")

    def _take_raw(self, n: int) -> None:
        if self.pos + n > self.end:
            raise PickleError(f"joblib array data truncated: needs {n} bytes", self._op_offset, truncated=True)
        self.pos += n


def _describe(value: Any) -> str:
    if isinstance(value, GlobalRef):
        return f"global {value.dotted}"
    if isinstance(value, Instance):
        return f"object made by {value.factory.dotted}"
    if isinstance(value, Opaque):
        return value.kind
    return type(value).__name__ if not isinstance(value, (ListV, DictV, SetV)) else type(value).__name__[:-1].lower()


def _joblib_itemsize(dtype: Any) -> int | None:
    """Item size of a pickled ``numpy.dtype(str, False, True)``; 0 for object; None if unknown."""
    if not (isinstance(dtype, Instance) and dtype.factory.key == ("numpy", "dtype")):
        return None
    args = dtype.args
    if not (isinstance(args, tuple) and args and isinstance(args[0], str)):
        return None
    spec = args[0]
    state = dtype.state
    # numpy.dtype.__reduce__ state: (version, byteorder, subarray, names, fields, elsize, alignment, flags)
    if isinstance(state, tuple) and len(state) >= 5 and (state[2] is not None or state[3] is not None):
        return None  # sub-array or structured dtype
    if not _NUMPY_DTYPE_STR.match(spec):
        return None
    if spec[0] == "O":
        return 0
    import numpy as np  # numpy parses the dtype string only: no code runs

    try:
        size = int(np.dtype(spec).itemsize)
    except (TypeError, ValueError):
        return None
    if size == 0 and isinstance(state, tuple) and len(state) >= 6 and isinstance(state[5], int) and state[5] > 0:
        size = state[5]  # flexible types (S, U, V) carry their size in the state
    return size if size > 0 else None


# --------------------------------------------------------------------------- opcode handlers
# Each handler returns True only for STOP. They are plain functions in a table (faster than
# method lookup, and the table doubles as the list of opcodes Airlock understands).


def _op_mark(vm: PickleVM) -> bool:
    vm.metastack.append(vm.stack)
    vm.stack = []
    return False


def _op_stop(vm: PickleVM) -> bool:
    vm.walk.result = vm._pop()
    return True


def _op_pop(vm: PickleVM) -> bool:
    if vm.stack:
        vm.stack.pop()
    else:
        vm._pop_mark()
    return False


def _op_pop_mark(vm: PickleVM) -> bool:
    vm._pop_mark()
    return False


def _op_dup(vm: PickleVM) -> bool:
    vm._push(vm._top())
    return False


def _op_proto(vm: PickleVM) -> bool:
    proto = vm._byte()
    if proto > HIGHEST_PROTOCOL:
        raise PickleError(f"unsupported pickle protocol {proto}", vm._op_offset)
    vm.walk.protocol = proto
    return False


def _op_frame(vm: PickleVM) -> bool:
    size = vm._unpack("<Q", 8)
    if size > vm.end - vm.pos:
        raise PickleError(f"FRAME of {size} bytes runs past the end", vm._op_offset)
    return False


def _push_const(value: Any) -> Callable[[PickleVM], bool]:
    def handler(vm: PickleVM) -> bool:
        vm._push(value)
        return False

    return handler


def _op_empty_list(vm: PickleVM) -> bool:
    vm._push(ListV())
    return False


def _op_empty_dict(vm: PickleVM) -> bool:
    vm._push(DictV())
    return False


def _op_empty_set(vm: PickleVM) -> bool:
    vm._push(SetV())
    return False


def _op_int(vm: PickleVM) -> bool:
    line = vm._line()
    if line == b"00":
        vm._push(False)
    elif line == b"01":
        vm._push(True)
    else:
        vm._push(_parse_int(line, vm._op_offset))
    return False


def _parse_int(text: bytes, offset: int) -> int:
    try:
        return int(text.decode("ascii"), 0)
    except (UnicodeDecodeError, ValueError):
        try:
            return int(text.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            raise PickleError(f"invalid integer literal {text[:40]!r}", offset) from None


def _op_long(vm: PickleVM) -> bool:
    line = vm._line()
    if line.endswith(b"L"):
        line = line[:-1]
    vm._push(_parse_int(line, vm._op_offset))
    return False


def _op_float(vm: PickleVM) -> bool:
    line = vm._line()
    try:
        vm._push(float(line.decode("ascii")))
    except (UnicodeDecodeError, ValueError):
        raise PickleError(f"invalid float literal {line[:40]!r}", vm._op_offset) from None
    return False


def _op_binint(vm: PickleVM) -> bool:
    vm._push(vm._unpack("<i", 4))
    return False


def _op_binint1(vm: PickleVM) -> bool:
    vm.stack.append(vm._byte())
    return False


def _op_binint2(vm: PickleVM) -> bool:
    vm._push(vm._unpack("<H", 2))
    return False


def _op_binfloat(vm: PickleVM) -> bool:
    vm._push(struct.unpack(">d", vm._take(8))[0])
    return False


def _long_bytes(vm: PickleVM, n: int) -> None:
    if n < 0:
        raise PickleError("negative LONG length", vm._op_offset)
    data = vm._take(n)
    vm._push(int.from_bytes(data, "little", signed=True) if n <= _SMALL else Opaque("long", n))


def _op_long1(vm: PickleVM) -> bool:
    _long_bytes(vm, vm._byte())
    return False


def _op_long4(vm: PickleVM) -> bool:
    _long_bytes(vm, vm._unpack("<i", 4))
    return False


def _text(vm: PickleVM, n: int, encoding: str, errors: str = "strict") -> None:
    """A string opcode's payload; kept whole only when short (long strings never name globals)."""
    if n < 0:
        raise PickleError("negative string length", vm._op_offset)
    if n > _SMALL:
        if vm.pos + n > vm.end:
            raise PickleError(f"truncated: string of {n} bytes", vm._op_offset, truncated=True)
        vm.pos += n
        vm._push(Opaque("str", n))
        return
    data = vm._take(n)
    try:
        vm.stack.append(data.decode(encoding, errors))
    except UnicodeDecodeError:
        raise PickleError("string is not valid text", vm._op_offset) from None


def _op_binunicode(vm: PickleVM) -> bool:
    _text(vm, vm._unpack("<I", 4), "utf-8", "surrogatepass")
    return False


def _op_short_binunicode(vm: PickleVM) -> bool:
    _text(vm, vm._byte(), "utf-8", "surrogatepass")
    return False


def _op_binunicode8(vm: PickleVM) -> bool:
    _text(vm, vm._unpack("<Q", 8), "utf-8", "surrogatepass")
    return False


# Python 2 str opcodes: the loader's ``encoding`` decides str or bytes. Decode as latin-1 so a
# module name smuggled through them is resolved and checked (fail closed: assume str).
def _op_binstring(vm: PickleVM) -> bool:
    _text(vm, vm._unpack("<i", 4), "latin-1")
    return False


def _op_short_binstring(vm: PickleVM) -> bool:
    _text(vm, vm._byte(), "latin-1")
    return False


def _op_string(vm: PickleVM) -> bool:
    line = vm._line()
    if len(line) >= 2 and line[0] == line[-1] and line[:1] in (b"'", b'"'):
        try:
            vm._push(codecs.escape_decode(line[1:-1])[0].decode("latin-1"))
        except ValueError:
            raise PickleError("invalid STRING escape", vm._op_offset) from None
        return False
    raise PickleError("STRING argument is not quoted", vm._op_offset)


def _op_unicode(vm: PickleVM) -> bool:
    line = vm._line()
    try:
        vm._push(line.decode("raw-unicode-escape"))
    except UnicodeDecodeError:
        raise PickleError("invalid UNICODE literal", vm._op_offset) from None
    return False


def _bytes(vm: PickleVM, n: int) -> None:
    if n < 0:
        raise PickleError("negative bytes length", vm._op_offset)
    if n > _SMALL:
        if vm.pos + n > vm.end:
            raise PickleError(f"truncated: bytes of {n}", vm._op_offset, truncated=True)
        vm.pos += n
        vm._push(Opaque("bytes", n))
    else:
        vm._push(bytes(vm._take(n)))


def _op_binbytes(vm: PickleVM) -> bool:
    _bytes(vm, vm._unpack("<I", 4))
    return False


def _op_short_binbytes(vm: PickleVM) -> bool:
    _bytes(vm, vm._byte())
    return False


def _op_binbytes8(vm: PickleVM) -> bool:
    _bytes(vm, vm._unpack("<Q", 8))
    return False


def _op_bytearray8(vm: PickleVM) -> bool:
    _bytes(vm, vm._unpack("<Q", 8))
    return False


def _op_next_buffer(vm: PickleVM) -> bool:
    vm._push(Opaque("out-of-band-buffer"))
    return False


def _op_readonly_buffer(vm: PickleVM) -> bool:
    vm._top()
    return False


# Containers.


def _op_tuple(vm: PickleVM) -> bool:
    vm._push(tuple(vm._pop_mark()))
    return False


def _op_empty_tuple(vm: PickleVM) -> bool:
    vm._push(())
    return False


def _tuple_n(n: int) -> Callable[[PickleVM], bool]:
    def handler(vm: PickleVM) -> bool:
        if len(vm.stack) < n:
            raise PickleError("stack underflow", vm._op_offset)
        items = tuple(vm.stack[-n:])
        del vm.stack[-n:]
        vm._push(items)
        return False

    return handler


def _op_list(vm: PickleVM) -> bool:
    vm._push(ListV(vm._pop_mark()))
    return False


def _op_dict(vm: PickleVM) -> bool:
    items = vm._pop_mark()
    if len(items) % 2:
        raise PickleError("odd number of items for DICT", vm._op_offset)
    vm._push(DictV(list(zip(items[::2], items[1::2], strict=True))))
    return False


def _op_append(vm: PickleVM) -> bool:
    item = vm._pop()
    target = vm._top()
    vm._check_target(target, "APPEND", (ListV,))
    if isinstance(target, ListV):
        target.items.append(item)
    return False


def _op_appends(vm: PickleVM) -> bool:
    items = vm._pop_mark()
    target = vm._top()
    vm._check_target(target, "APPENDS", (ListV,))
    if isinstance(target, ListV):
        target.items.extend(items)
    return False


def _op_setitem(vm: PickleVM) -> bool:
    value = vm._pop()
    key = vm._pop()
    target = vm._top()
    vm._check_target(target, "SETITEM", (DictV,))
    if isinstance(target, DictV):
        target.items.append((key, value))
    return False


def _op_setitems(vm: PickleVM) -> bool:
    items = vm._pop_mark()
    if len(items) % 2:
        raise PickleError("odd number of items for SETITEMS", vm._op_offset)
    target = vm._top()
    vm._check_target(target, "SETITEMS", (DictV,))
    if isinstance(target, DictV):
        target.items.extend(zip(items[::2], items[1::2], strict=True))
    return False


def _op_additems(vm: PickleVM) -> bool:
    items = vm._pop_mark()
    target = vm._top()
    vm._check_target(target, "ADDITEMS", (SetV,))
    if isinstance(target, SetV):
        target.items.extend(items)
    return False


def _op_frozenset(vm: PickleVM) -> bool:
    vm._push(SetV(vm._pop_mark(), frozen=True))
    return False


# Memo.


def _memo_get(vm: PickleVM, index: int) -> None:
    try:
        vm.stack.append(vm.memo[index])
    except KeyError:
        vm._hit("pickle.memo.missing", f"memo slot {index} is read but was never written")
        raise PickleError(f"memo slot {index} was never written", vm._op_offset) from None


def _op_get(vm: PickleVM) -> bool:
    _memo_get(vm, _parse_int(vm._line(), vm._op_offset))
    return False


def _op_binget(vm: PickleVM) -> bool:
    _memo_get(vm, vm._byte())
    return False


def _op_long_binget(vm: PickleVM) -> bool:
    _memo_get(vm, vm._unpack("<I", 4))
    return False


def _memo_put(vm: PickleVM, index: int) -> None:
    if index < 0:
        raise PickleError("negative memo index", vm._op_offset)
    if not vm.stack:
        raise PickleError("stack underflow", vm._op_offset)
    vm.memo[index] = vm.stack[-1]


def _op_put(vm: PickleVM) -> bool:
    _memo_put(vm, _parse_int(vm._line(), vm._op_offset))
    return False


def _op_binput(vm: PickleVM) -> bool:
    _memo_put(vm, vm._byte())
    return False


def _op_long_binput(vm: PickleVM) -> bool:
    _memo_put(vm, vm._unpack("<I", 4))
    return False


def _op_memoize(vm: PickleVM) -> bool:
    vm.memo[len(vm.memo)] = vm._top()
    return False


# Globals and calls: everything that can reach code goes through here.


def _global_line(vm: PickleVM, what: str) -> str:
    raw = vm._line()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise PickleError(f"{what} name is not UTF-8", vm._op_offset) from None
    if not _identifier(text):
        # find_class cannot import a name that is not a dotted identifier, so the load would
        # stop here: a malformed stream (and not a pickle at all when probing text files).
        raise PickleError(f"{what} name {text[:60]!r} is not an identifier", vm._op_offset)
    return text


def _op_global(vm: PickleVM) -> bool:
    module = _global_line(vm, "GLOBAL module")
    name = _global_line(vm, "GLOBAL")
    vm._push(vm._global(module, name, "GLOBAL"))
    return False


def _op_stack_global(vm: PickleVM) -> bool:
    name = vm._pop()
    module = vm._pop()
    if isinstance(module, str) and isinstance(name, str):
        vm._push(vm._global(module, name, "STACK_GLOBAL"))
    else:
        why = f"operands are a {_describe(module)} and a {_describe(name)}, not two strings"
        vm._push(vm._unresolved("STACK_GLOBAL", why))
    return False


def _op_inst(vm: PickleVM) -> bool:
    args = tuple(vm._pop_mark())  # the C unpickler finds the MARK before reading the names
    module = _global_line(vm, "INST module")
    name = _global_line(vm, "INST")
    vm._push(vm._call(vm._global(module, name, "INST"), args, "INST"))
    return False


def _op_obj(vm: PickleVM) -> bool:
    items = vm._pop_mark()
    if not items:
        raise PickleError("OBJ without a class", vm._op_offset)
    vm._push(vm._call(items[0], tuple(items[1:]), "OBJ"))
    return False


def _op_ext(size: int) -> Callable[[PickleVM], bool]:
    def handler(vm: PickleVM) -> bool:
        code = int.from_bytes(vm._take(size), "little")
        vm._hit("pickle.ext", f"EXT{size} code {code} imports whatever copyreg's registry maps it to")
        vm._push(GlobalRef("?", f"<ext {code}>", vm._op_offset, resolved=False))
        vm.walk.globals.append(vm.stack[-1])
        return False

    return handler


def _op_reduce(vm: PickleVM) -> bool:
    args = vm._pop()
    func = vm._pop()
    if not isinstance(args, tuple):  # the unpickler raises TypeError before calling
        raise PickleError(f"REDUCE argument is a {_describe(args)}, not a tuple", vm._op_offset)
    vm._push(vm._call(func, args, "REDUCE"))
    return False


def _op_newobj(vm: PickleVM) -> bool:
    args = vm._pop()
    cls = vm._pop()
    vm._push(vm._call(cls, args, "NEWOBJ"))
    return False


def _op_newobj_ex(vm: PickleVM) -> bool:
    kwargs = vm._pop()
    args = vm._pop()
    cls = vm._pop()
    vm._push(vm._call(cls, (args, kwargs), "NEWOBJ_EX"))
    return False


def _op_build(vm: PickleVM) -> bool:
    state = vm._pop()
    inst = vm._top()
    if isinstance(inst, Instance):
        inst.state = state
        if inst.factory.key == JOBLIB_ARRAY_WRAPPER:
            vm._joblib_array(inst)
        return False
    # BUILD on a class sets class attributes; on anything else it calls a __setstate__ Airlock
    # cannot vouch for.
    vm._hit("pickle.build.target", f"BUILD sets state on a {_describe(inst)}")
    return False


def _op_persid(vm: PickleVM) -> bool:
    pid = vm._line()
    vm.walk.persistent_ids.append(pid.decode("ascii", "replace"))
    vm._push(Opaque("persistent", value=pid))
    return False


def _op_binpersid(vm: PickleVM) -> bool:
    pid = vm._pop()
    vm.walk.persistent_ids.append(pid)
    vm._push(Opaque("persistent", value=pid))
    return False


_DISPATCH: dict[int, Callable[[PickleVM], bool]] = {
    ord("("): _op_mark,
    ord("."): _op_stop,
    ord("0"): _op_pop,
    ord("1"): _op_pop_mark,
    ord("2"): _op_dup,
    ord("F"): _op_float,
    ord("I"): _op_int,
    ord("J"): _op_binint,
    ord("K"): _op_binint1,
    ord("L"): _op_long,
    ord("M"): _op_binint2,
    ord("N"): _push_const(None),
    ord("P"): _op_persid,
    ord("Q"): _op_binpersid,
    ord("R"): _op_reduce,
    ord("S"): _op_string,
    ord("T"): _op_binstring,
    ord("U"): _op_short_binstring,
    ord("V"): _op_unicode,
    ord("X"): _op_binunicode,
    ord("a"): _op_append,
    ord("b"): _op_build,
    ord("c"): _op_global,
    ord("d"): _op_dict,
    ord("}"): _op_empty_dict,
    ord("e"): _op_appends,
    ord("g"): _op_get,
    ord("h"): _op_binget,
    ord("i"): _op_inst,
    ord("j"): _op_long_binget,
    ord("l"): _op_list,
    ord("]"): _op_empty_list,
    ord("o"): _op_obj,
    ord("p"): _op_put,
    ord("q"): _op_binput,
    ord("r"): _op_long_binput,
    ord("s"): _op_setitem,
    ord("t"): _op_tuple,
    ord(")"): _op_empty_tuple,
    ord("u"): _op_setitems,
    ord("G"): _op_binfloat,
    # protocol 2
    0x80: _op_proto,
    0x81: _op_newobj,
    0x82: _op_ext(1),
    0x83: _op_ext(2),
    0x84: _op_ext(4),
    0x85: _tuple_n(1),
    0x86: _tuple_n(2),
    0x87: _tuple_n(3),
    0x88: _push_const(True),
    0x89: _push_const(False),
    0x8A: _op_long1,
    0x8B: _op_long4,
    # protocol 3
    ord("B"): _op_binbytes,
    ord("C"): _op_short_binbytes,
    # protocol 4
    0x8C: _op_short_binunicode,
    0x8D: _op_binunicode8,
    0x8E: _op_binbytes8,
    0x8F: _op_empty_set,
    0x90: _op_additems,
    0x91: _op_frozenset,
    0x92: _op_newobj_ex,
    0x93: _op_stack_global,
    0x94: _op_memoize,
    0x95: _op_frame,
    # protocol 5
    0x96: _op_bytearray8,
    0x97: _op_next_buffer,
    0x98: _op_readonly_buffer,
}

PICKLE_OPCODES = frozenset(_DISPATCH)


def walk_pickle(
    buf: Any, start: int = 0, end: int | None = None, *, check_time: Callable[[], None] | None = None
) -> PickleWalk:
    """Walk the pickle starting at ``buf[start]``; never imports, calls or allocates per the stream."""
    return PickleVM(buf, start, len(buf) if end is None else end, check_time=check_time).run()


def probe_pickle(buf: Any, start: int = 0, end: int | None = None, *, limit: int = 1 << 20) -> bool:
    """Would ``pickle.load`` on these bytes import a global? (Else it cannot run code.)

    Used on content that starts like a protocol 0/1 pickle (no PROTO header). An unpickler can
    only run code through a global it imports; a stream that breaks before importing one
    raises without side effects. A complete data-only pickle counts only if the file is made
    of pickles to its end (so a README that opens with "N." - NONE, STOP - stays text), and
    any pickle after it is probed the same way.
    """
    end = len(buf) if end is None else end
    while True:
        walk = PickleVM(buf, start, min(end, start + limit)).run()
        if walk.imports_globals:
            return True
        if walk.error is not None and walk.error.truncated and end > start + limit:
            limit = end - start  # cut off by the probe window: look at all of it
            continue
        if not walk.complete:
            return False
        if walk.end >= end:
            return True
        start = walk.end  # a data-only pickle followed by more bytes: is that a pickle?


def resolves_a_global(buf: Any, start: int, end: int, *, limit: int = 1 << 20) -> bool:
    """Does a pickle walk from ``start`` import a global before it stops or breaks?"""
    if end <= start or buf[start] not in PICKLE_OPCODES:
        return False
    return PickleVM(buf, start, min(end, start + limit)).run().imports_globals
