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
Dicts are last-wins like CPython's (``{"a": 1, "a": 2}`` is ``{"a": 2}``).

Two readings of one stream exist, and a walk takes one of them (``joblib``):

* ``joblib.load`` (``NumpyUnpickler``, the pure-Python unpickler): after ``BUILD`` of a
  ``NumpyArrayWrapper`` it reads the array's bytes from the file itself - raw bytes, or a
  nested pickle when numpy says the dtype holds objects. The wrapper's attributes and its
  dtype are rebuilt here as the Python unpickler and numpy rebuild them (``__init__`` or
  ``__new__``, every ``BUILD`` state, numpy's own ``dtype.__setstate__`` with its flags); a
  layout that is not certain is a finding, never a guess.
* ``pickle.load`` / ``torch.load`` / ``np.load(allow_pickle=True)``: the same bytes are opcodes.

joblib reads with the pure-Python unpickler (``pickle._Unpickler``), which differs from the C one
in ways that matter (``python``): a line cut by the end of the file is still read
(``readline()[:-1]`` drops its last character instead of the newline), INST imports its class
before it looks for the MARK, a FRAME longer than the rest of the file is a short read, not an
error, and REDUCE calls with any iterable. Whether bytes are a pickle at all is decided by
either unpickler importing a global (:func:`probe_pickle`).
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
    """What a call (REDUCE, NEWOBJ, INST, OBJ) returns; ``factory`` is the allowlisted global called.

    ``opname`` says how it was made (REDUCE, INST and OBJ with arguments run ``__init__``; NEWOBJ,
    NEWOBJ_EX and argument-less INST/OBJ only ``__new__``); ``states`` are its BUILD states in order.
    """

    factory: GlobalRef
    args: Any
    offset: int
    opname: str = "REDUCE"
    states: list[Any] = field(default_factory=list)
    cache: Any = None  # (number of states, value) derived from it (a numpy dtype)

    @property
    def state(self) -> Any:
        return self.states[-1] if self.states else None


@dataclass(frozen=True, slots=True)
class Opaque:
    """A value whose content is irrelevant to safety (long bytes, arrays, persistent loads)."""

    kind: str
    size: int = 0
    value: Any = None


@dataclass(slots=True, eq=False)
class ListV:
    items: list[Any] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _GlobalKey:
    """A global used as a dict key: the unpickler's objects for one global are one object."""

    module: str
    name: str


_LITERAL_KEYS = (str, bytes, int, float, complex, bool, type(None))


def _dict_key(key: Any) -> Any:
    """``key`` as CPython's dict would compare it, or :data:`_UNKNOWN_KEY` when that cannot be known."""
    if isinstance(key, _LITERAL_KEYS):
        return key  # real Python values: 1 == 1.0 == True collide here exactly as in the loader's dict
    if isinstance(key, tuple):
        parts = tuple(_dict_key(k) for k in key)
        return _UNKNOWN_KEY if _UNKNOWN_KEY in parts else parts
    if isinstance(key, GlobalRef) and key.resolved:
        return _GlobalKey(key.module, key.name)
    # Long strings (kept as their length only), instances (a torch.Size equals a tuple), unhashables.
    return _UNKNOWN_KEY


_UNKNOWN_KEY = object()


@dataclass(slots=True, eq=False)
class DictV:
    """A dict the stream builds: last-wins like CPython's, in first-insertion order.

    ``uncertain`` is set when a key's equality with the others cannot be known (a long string, an
    object): then nobody may rely on which value a key ends up with.
    """

    entries: dict[Any, Any] = field(default_factory=dict)
    uncertain: bool = False

    @classmethod
    def of(cls, pairs: Any) -> DictV:
        d = cls()
        for key, value in pairs:
            d.set(key, value)
        return d

    def set(self, key: Any, value: Any) -> None:
        k = _dict_key(key)
        if k is _UNKNOWN_KEY:
            self.uncertain = True
        else:
            self.entries[k] = value

    def get(self, key: str) -> Any:
        return self.entries.get(key)

    def keys(self) -> list[Any]:
        return list(self.entries)


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
    fatal: bool = False  # the unpickler raises right here (before importing or calling anything)


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
    # Offsets where joblib.load reads array data (raw or a nested pickle) that other loaders read as opcodes.
    joblib_reads: list[int] = field(default_factory=list)

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
        joblib: bool = True,
        python: bool | None = None,
        persistent: bool = True,
        eof: bool = True,
    ) -> None:
        self.buf = buf
        self.pos = start
        self.end = end
        self.check_time = check_time
        self.depth = depth
        self.joblib = joblib  # read as joblib.load does (array data after NumpyArrayWrapper BUILDs)
        self.python = joblib if python is None else python  # pickle._Unpickler (joblib's) instead of C's
        self.eof = eof  # ``end`` is the end of the file (not of a probe window)
        self.persistent = persistent  # the loader has a persistent_load (torch); pickle.load has none
        self.frame_end = start  # end of the current FRAME: where a direct file read would start
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
            if self.python and self.eof and self.pos >= self.frame_end:
                # pickle._Unpickler: readline() at EOF returns the rest of the file, and the
                # "[:-1]" meant for the newline drops its last character instead.
                data = self.buf[self.pos : self.end]
                self.pos = self.end
                return data[:-1]
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

    def _hit(self, rule: str, detail: str, offset: int | None = None, *, fatal: bool = False) -> None:
        if len(self.walk.hits) >= MAX_HITS_PER_STREAM:
            self.walk.suppressed_hits += 1
            return
        self.walk.hits.append(VmHit(rule, detail, self._op_offset if offset is None else offset, fatal))

    def _global(self, module: str, name: str, opname: str) -> GlobalRef:
        offset = self._op_offset
        module, name = effective_global(module, name, self.walk.protocol)
        ref = GlobalRef(module, name, offset)
        self.walk.globals.append(ref)
        if ref.key not in ALLOWED_GLOBALS:
            why = "a known code-execution primitive" if is_known_dangerous(module, name) else "not in the allowlist"
            self._hit("pickle.global.disallowed", f"{opname} imports {module}.{name}: {why}")
        return ref

    def _unresolved(self, opname: str, why: str, *, fatal: bool = False) -> GlobalRef:
        self._hit("pickle.global.unresolved", f"{opname} target cannot be determined: {why}", fatal=fatal)
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
            return Instance(func, args, self._op_offset, opname)
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
        """After BUILD of a NumpyArrayWrapper, joblib reads the array's bytes from the file itself.

        ``NumpyArrayWrapper.read_array`` (joblib/numpy_pickle.py): when numpy says the dtype holds
        objects (``dtype.hasobject``), a complete pickle follows, read by a fresh pure-Python
        unpickler (no array handling, no persistent_load); otherwise one padding-length byte and
        that many padding bytes (when the wrapper has ``numpy_array_alignment_bytes``), then
        ``count * itemsize`` raw bytes. The file is read directly, so the data starts where the
        current FRAME ends. Any layout joblib would not read in exactly one way stops the walk
        with a ``joblib.uncertain_layout`` finding that names the readings.
        """
        at = self._op_offset
        layout = wrapper_layout(wrapper)
        self._close_segment(self.pos)
        if isinstance(layout, str):
            self._hit("joblib.uncertain_layout", f"NumpyArrayWrapper made @{wrapper.offset}: {layout}", at)
            raise PickleError("joblib array layout is not certain", at)
        if self.pos < self.frame_end:
            self._hit(
                "joblib.uncertain_layout",
                f"NumpyArrayWrapper BUILD inside a FRAME: joblib.load reads the array from @{self.frame_end} "
                f"(after the frame) while its unpickler keeps reading opcodes at @{self.pos}",
                at,
            )
            raise PickleError("joblib array read inside a pickle frame", at)
        self.walk.joblib_reads.append(self.pos)
        if layout.hasobject:
            if self.depth >= _MAX_NESTING:
                raise PickleError("joblib object arrays nested too deep", at)
            inner = PickleVM(
                self.buf, self.pos, self.end, check_time=self.check_time, depth=self.depth + 1,
                joblib=False, python=True, persistent=False,
            )  # fmt: skip
            walk = inner.run()
            self.walk.nested.append(walk)
            if not walk.complete:
                raise PickleError("joblib object array: nested pickle is malformed", self.pos)
            self.pos = walk.end
        else:
            if layout.padded:
                padding = self._byte()
                self._take(padding)
            self._take_raw(layout.nbytes)
        self._segment_start = self.pos
        self.frame_end = self.pos
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


# --------------------------------------------------------------------------- joblib wrappers and numpy dtypes

# NumpyArrayWrapper.__init__(subclass, shape, order, dtype, allow_mmap=False, numpy_array_alignment_bytes=16)
_WRAPPER_INIT = ("subclass", "shape", "order", "dtype", "allow_mmap", "numpy_array_alignment_bytes")
_WRAPPER_DEFAULTS = {"allow_mmap": False, "numpy_array_alignment_bytes": 16}
_INT64_MAX = (1 << 63) - 1
_MAX_DTYPE_DEPTH = 16


@dataclass(frozen=True)
class WrapperLayout:
    """How joblib.load reads one array: a nested pickle, or ``nbytes`` raw bytes (after padding)."""

    hasobject: bool
    padded: bool
    nbytes: int


def wrapper_layout(wrapper: Instance) -> WrapperLayout | str:
    """The layout joblib reads for ``wrapper`` now, or why it is not certain (a blocking finding)."""
    attrs = _wrapper_attrs(wrapper)
    if isinstance(attrs, str):
        return attrs
    for name in ("dtype", "shape"):
        if name not in attrs:
            return f"no {name!r} attribute (joblib would fail; refusing to guess what it reads)"
    dtype = numpy_dtype(attrs["dtype"])
    if isinstance(dtype, str):
        return f"dtype {dtype}"
    shape = attrs["shape"]
    dims = shape if isinstance(shape, tuple) else shape.items if isinstance(shape, ListV) else None
    if dims is None or not all(type(d) is int and d >= 0 for d in dims):
        return f"shape is {_describe(shape)} {shape!r:.80}, not a sequence of sizes"
    count = 1
    for dim in dims:
        count *= dim
    if count > _INT64_MAX:
        return f"shape {tuple(dims)} overflows numpy's int64 element count (joblib would read a wrapped-around size)"
    where = f"dtype {dtype.str} (itemsize {dtype.itemsize}, flags {dtype.flags:#x}), shape {tuple(dims)}"
    if dtype.hasobject:
        allow_mmap = attrs.get("allow_mmap", False)  # a missing attribute fails in mmap mode: no second reading
        if _truth(allow_mmap) is not False:
            return (
                f"{where} holds objects and allow_mmap is {allow_mmap!r:.40}: joblib.load reads a nested pickle "
                f"here, joblib.load(mmap_mode=...) maps {count * dtype.itemsize} raw bytes instead"
            )
        return WrapperLayout(hasobject=True, padded=False, nbytes=0)
    if dtype.itemsize == 0:
        return f"{where}: itemsize 0 (joblib divides by it; refusing to guess what it reads)"
    padded = attrs.get("numpy_array_alignment_bytes") is not None
    return WrapperLayout(hasobject=False, padded=padded, nbytes=count * dtype.itemsize)


def _wrapper_attrs(wrapper: Instance) -> dict[str, Any] | str:
    """The wrapper's ``__dict__`` as the pure-Python unpickler (joblib's) leaves it, or a problem.

    REDUCE, and INST/OBJ with arguments, run ``__init__`` (defaults included); NEWOBJ, NEWOBJ_EX
    and argument-less INST/OBJ only ``__new__``. Each BUILD then applies ``_Unpickler.load_build``:
    ``state`` into ``__dict__``, then a ``(state, slotstate)`` pair's slotstate with setattr;
    later keys win. Attributes joblib never writes (a ``read_array`` that shadows the method, a
    ``__class__``) make the layout uncertain.
    """
    args = wrapper.args
    if wrapper.opname == "REDUCE" or (wrapper.opname in ("INST", "OBJ") and args):
        if not (isinstance(args, tuple) and 4 <= len(args) <= len(_WRAPPER_INIT)):
            return f"NumpyArrayWrapper is called with {_describe(args)} {args!r:.60} (its __init__ raises)"
        attrs: dict[str, Any] = dict(_WRAPPER_DEFAULTS)
        attrs.update(zip(_WRAPPER_INIT, args, strict=False))
    else:
        attrs = {}
    for state in wrapper.states:
        slotstate = None
        if isinstance(state, tuple) and len(state) == 2:
            state, slotstate = state
        for part in (state, slotstate):
            if _truth(part) is False:
                continue  # load_build skips a falsy state
            if not isinstance(part, DictV) or part.uncertain:
                return f"BUILD state is {_describe(part)}, not a dict Airlock can read key by key"
            for key, value in part.entries.items():
                if key not in _WRAPPER_INIT:
                    return f"BUILD state sets {key!r}, an attribute joblib never writes"
                attrs[key] = value
    return attrs


def _truth(value: Any) -> bool | None:
    """Python truthiness of a symbolic value, or None when it depends on an object Airlock did not build."""
    if isinstance(value, _LITERAL_KEYS + (tuple,)):
        return bool(value)
    if isinstance(value, (ListV, SetV)):
        return bool(value.items)
    if isinstance(value, DictV):
        return bool(value.entries) or value.uncertain  # an uncertain key is still a key
    if isinstance(value, GlobalRef):
        return True
    return None


def _build_snapshot(state: Any, *, deep: bool) -> Any:
    """``state`` as BUILD consumes it, immune to the stream mutating its containers afterwards.

    ``_Unpickler.load_build`` copies the state dict's items into ``__dict__`` (the values stay
    shared: ``deep=False``); numpy's ``dtype.__setstate__`` turns the whole state into the
    descriptor at once (``deep=True``).
    """
    if isinstance(state, DictV):
        values = state.entries.items()
        entries = {k: _build_snapshot(v, deep=True) if deep else v for k, v in values}
        return DictV(entries, state.uncertain)
    if isinstance(state, tuple):
        return tuple(_build_snapshot(v, deep=deep) for v in state)
    if deep and isinstance(state, ListV):
        return ListV([_build_snapshot(v, deep=True) for v in state.items])
    return state


_NUMPY_DTYPE = ("numpy", "dtype")


class _NotLiteral(Exception):
    """A dtype the model cannot rebuild exactly, or one numpy would refuse (the message says which)."""


@dataclass(frozen=True)
class DtypeModel:
    """What joblib asks of an array's dtype: ``itemsize`` and ``hasobject`` (``flags & NPY_ITEM_HASOBJECT``)."""

    str: str
    itemsize: int
    hasobject: bool
    flags: int


_NPY_ITEM_HASOBJECT = 0x01
_NPY_NEEDS_PYAPI = 0x10
_NPY_ALIGNED_STRUCT = 0x80
_NPY_FROM_FIELDS = 0x1B  # NEEDS_INIT | LIST_PICKLE | ITEM_REFCOUNT | NEEDS_PYAPI: what a struct inherits from fields
_C_INT = (-(1 << 31), (1 << 31) - 1)


def numpy_dtype(value: Any) -> DtypeModel | str:
    """The dtype the loader builds for ``value``, or why that is not certain (a string).

    ``numpy.dtype(spec, align, copy)`` is built by numpy itself from the pickled spec string.
    Its BUILD states are applied by a model of numpy's ``arraydescr_setstate`` (numpy/_core/src/
    multiarray/descriptor.c), not by calling it: numpy's own ``__setstate__`` crashes the process
    on some hostile states, and a scanner must not run memory-unsafe code on its input. The
    model covers the states numpy writes - version 3 (8 items) and 4 (9, with metadata) - and
    refuses the rest:

    * a built-in descriptor (``isbuiltin == 1``, what ``copy=False`` returns for ``f8``) ignores
      ``__setstate__`` entirely;
    * the flags are taken as given (a negative value down to -128 gets 128 added, numpy's old
      ``char`` flags): ``hasobject`` is their ``NPY_ITEM_HASOBJECT`` bit, whatever the type -
      a ``V8`` or even an ``f8`` can be made "object-holding", and an ``O8`` with cleared flags
      has its raw bytes read as object pointers; so flags other than those numpy itself writes
      for the type (derived from the fields for a structured type) are refused;
    * flexible types (``S``, ``U``, ``V``) take their item size from the state's ``elsize``,
      others keep numpy's.
    """
    if not (isinstance(value, Instance) and value.factory.key == _NUMPY_DTYPE):
        return f"is {_describe(value)}, not a numpy.dtype"
    try:
        return _dtype_model(value, 0)
    except _NotLiteral as exc:
        return str(exc)


def _dtype_model(inst: Instance, depth: int) -> DtypeModel:
    if depth > _MAX_DTYPE_DEPTH:
        raise _NotLiteral("nested too deep")
    if inst.cache is not None and inst.cache[0] == len(inst.states):
        return inst.cache[1]
    base = _base_dtype(inst)
    model = DtypeModel(base.str, int(base.itemsize), bool(base.hasobject), int(base.flags))
    if inst.states and base.isbuiltin != 1:  # numpy's __setstate__ returns at once on built-ins
        for state in inst.states:
            model = _setstate_model(base, model, state, depth)
    inst.cache = (len(inst.states), model)
    return model


def _base_dtype(inst: Instance) -> Any:
    """``numpy.dtype(spec[, align[, copy]])`` for a pickled spec string, as the loader calls it."""
    import numpy as np  # parsing a dtype string runs no Python code

    args = inst.args
    if inst.opname == "NEWOBJ_EX" and isinstance(args, tuple) and len(args) == 2:
        args, kwargs = args
        if not (isinstance(kwargs, DictV) and not kwargs.entries and not kwargs.uncertain):
            raise _NotLiteral("numpy.dtype is given keyword arguments")
    if not (isinstance(args, tuple) and 1 <= len(args) <= 3 and isinstance(args[0], str)):
        raise _NotLiteral(f"numpy.dtype is called with {_describe(args)} {args!r:.60}, not a spec string and flags")
    if not all(type(a) in (bool, int) for a in args[1:]):
        raise _NotLiteral("numpy.dtype's align/copy arguments are not booleans")
    spec, flags = args[0], [bool(a) for a in args[1:]]
    try:
        dtype = np.dtype(spec, *flags)
        if inst.states and dtype.isbuiltin != 1 and np.dtype(spec, *flags) is dtype:
            raise _NotLiteral(f"{dtype.str} is a descriptor numpy shares: its BUILD would change it everywhere")
    except (TypeError, ValueError, OverflowError, KeyError, SyntaxError, RecursionError) as exc:
        raise _NotLiteral(f"numpy rejects {spec!r:.40}: {type(exc).__name__}: {str(exc)[:100]}") from None
    return dtype


def _setstate_model(base: Any, model: DtypeModel, state: Any, depth: int) -> DtypeModel:
    """One ``dtype.__setstate__(state)`` on a private descriptor, for the states numpy writes."""
    if not (isinstance(state, tuple) and len(state) in (8, 9)):
        raise _NotLiteral(f"BUILD state is {_describe(state)} {state!r:.60}, not numpy's 8- or 9-item tuple")
    version, endian, subarray, names, fields, elsize, alignment, flags = state[:8]
    if not all(type(v) in (int, bool) and _C_INT[0] <= v <= _C_INT[1] for v in (version, elsize, alignment, flags)):
        raise _NotLiteral(f"BUILD state has non-integer version/elsize/alignment/flags {state!r:.80}")
    if version not in (3, 4) or (version == 4) != (len(state) == 9):
        raise _NotLiteral(f"BUILD state version {version} with {len(state)} items is not one numpy writes")
    if not (isinstance(endian, str) and len(endian) == 1 and endian in "<>|="):
        raise _NotLiteral(f"BUILD state byte order {endian!r:.20} is not one numpy writes")
    if -128 <= flags < 0:
        flags += 128  # numpy: "NumPy used to use a char. So normalize if signed."
    elif flags < 0:
        raise _NotLiteral(f"BUILD state flags {flags} overflow (numpy refuses them)")
    hasobject = bool(flags & _NPY_ITEM_HASOBJECT)
    flexible = base.kind in "SUV"  # PyTypeNum_ISEXTENDED: elsize and alignment come from the state
    structured = subarray is not None or names is not None or fields is not None
    if structured:
        if base.kind != "V":
            raise _NotLiteral(f"BUILD state gives a {base.str} fields or a sub-array (numpy never writes that)")
        derived = _structure_flags(subarray, names, fields, depth)
        held = bool(derived & _NPY_ITEM_HASOBJECT)
        if held != hasobject:
            raise _NotLiteral(
                f"BUILD state flags {flags:#x} say hasobject={hasobject}, its fields/sub-array say {held}"
            )
        given = flags & ~_NPY_ALIGNED_STRUCT if names is not None else flags  # aligned or packed: both are numpy's
    else:
        derived, given = int(base.flags), flags
    if given != derived:
        # numpy applies the state's flags as given: an object dtype whose flags are cleared makes the loader read
        # raw file bytes as object pointers (memory-unsafe), a numeric one with object flags reads a nested pickle.
        raise _NotLiteral(f"BUILD state flags {flags:#x} are not the {derived:#x} numpy writes for this {base.str}")
    if base.kind in "mM":
        _check_datetime_metadata(state)
    itemsize = elsize if flexible else model.itemsize
    if flexible and elsize <= 0:
        raise _NotLiteral(f"BUILD state gives {base.str} an element size of {elsize}")
    return DtypeModel(model.str, itemsize, hasobject, flags)


def _structure_flags(subarray: Any, names: Any, fields: Any, depth: int) -> int:
    """The flags numpy derives for a void dtype from its sub-array or fields (aligned-struct bit aside)."""
    if subarray is not None:
        if names is not None or fields is not None:
            raise _NotLiteral("BUILD state gives both a sub-array and fields")
        if not (isinstance(subarray, tuple) and len(subarray) == 2 and isinstance(subarray[1], tuple)):
            raise _NotLiteral(f"BUILD state sub-array is {subarray!r:.60}, not (dtype, shape)")
        if not all(type(d) is int and d >= 0 for d in subarray[1]):
            raise _NotLiteral(f"BUILD state sub-array shape {subarray[1]!r:.40} is not a tuple of sizes")
        return _field_dtype(subarray[0], depth).flags  # a sub-array takes its base's flags
    if not (isinstance(names, tuple) and all(isinstance(n, str) for n in names)):
        raise _NotLiteral(f"BUILD state field names are {names!r:.60}, not a tuple of strings")
    if not (isinstance(fields, DictV) and not fields.uncertain and set(fields.entries) == set(names)):
        raise _NotLiteral("BUILD state fields do not match its names")
    derived = _NPY_NEEDS_PYAPI  # every structured dtype (numpy's _convert_from_dict / _from_list)
    for entry in fields.entries.values():
        if not (isinstance(entry, tuple) and len(entry) in (2, 3) and type(entry[1]) is int):
            raise _NotLiteral(f"BUILD state field {entry!r:.60} is not (dtype, offset[, title])")
        derived |= _field_dtype(entry[0], depth).flags & _NPY_FROM_FIELDS
    return derived


def _field_dtype(value: Any, depth: int) -> DtypeModel:
    if not (isinstance(value, Instance) and value.factory.key == _NUMPY_DTYPE):
        raise _NotLiteral(f"a field or sub-array dtype is {_describe(value)}")
    return _dtype_model(value, depth + 1)


def _check_datetime_metadata(state: tuple[Any, ...]) -> None:
    """datetime64/timedelta64 states carry ``(metadata dict or None, (unit, num, den, events))``."""
    meta = state[8] if len(state) == 9 else None
    if not (isinstance(meta, tuple) and len(meta) == 2 and isinstance(meta[1], tuple) and len(meta[1]) == 4):
        raise _NotLiteral(f"datetime BUILD state metadata {meta!r:.60} is not numpy's (dict, (unit, num, den, events))")
    unit = meta[1][0]
    if not (isinstance(unit, (str, bytes)) or _is_latin1_bytes(unit)):
        raise _NotLiteral(f"datetime BUILD state unit {unit!r:.40} is not a string")


def _is_latin1_bytes(value: Any) -> bool:
    """Protocol < 3 writes bytes as ``_codecs.encode(text, "latin1")``."""
    return (
        isinstance(value, Instance)
        and value.factory.key == ("_codecs", "encode")
        and isinstance(value.args, tuple)
        and len(value.args) == 2
        and isinstance(value.args[0], str)
        and value.args[1] in ("latin1", "latin-1")
    )


# --------------------------------------------------------------------------- opcode handlers
# Each handler returns True only for STOP. They are plain functions in a table (faster than
# method lookup, and the table doubles as the list of opcodes Airlock understands).


def _op_mark(vm: PickleVM) -> bool:
    vm.metastack.append(vm.stack)
    vm.stack = []
    return False


def _op_stop(vm: PickleVM) -> bool:
    vm.walk.result = vm._pop()
    if vm.pos < vm.frame_end:
        # The pure-Python unpickler has read the whole frame from the file, the C one maybe not:
        # where the next read (a joblib array, the next pickle) starts depends on the loader.
        vm._hit("pickle.frame_overrun", f"STOP inside a FRAME that runs {vm.frame_end - vm.pos} bytes further")
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
    if vm.python and vm.pos < vm.frame_end:
        raise PickleError("a FRAME before the end of the current one", vm._op_offset)  # _Unframer refuses
    if size > vm.end - vm.pos:
        if not (vm.python and vm.eof):  # C: truncated; a probe window: look further
            raise PickleError(f"FRAME of {size} bytes runs past the end", vm._op_offset, truncated=True)
        size = vm.end - vm.pos  # _Unframer.load_frame reads what there is: a short frame
    vm.frame_end = vm.pos + size
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


def _parse_int(text: bytes, offset: int, base: int = 0) -> int:
    """INT/LONG literals parse with base 0 (``int(data, 0)`` in the pure-Python unpickler), GET/PUT with
    base 10. Forms only C's ``strtol`` accepts (``007``) stop the walk: fail closed, never a guess."""
    try:
        return int(text.decode("ascii"), base)
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
    vm._push(DictV.of(zip(items[::2], items[1::2], strict=True)))
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
        target.set(key, value)
    return False


def _op_setitems(vm: PickleVM) -> bool:
    items = vm._pop_mark()
    if len(items) % 2:
        raise PickleError("odd number of items for SETITEMS", vm._op_offset)
    target = vm._top()
    vm._check_target(target, "SETITEMS", (DictV,))
    if isinstance(target, DictV):
        for key, value in zip(items[::2], items[1::2], strict=True):
            target.set(key, value)
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
        vm._hit("pickle.memo.missing", f"memo slot {index} is read but was never written", fatal=True)
        raise PickleError(f"memo slot {index} was never written", vm._op_offset) from None


def _op_get(vm: PickleVM) -> bool:
    _memo_get(vm, _parse_int(vm._line(), vm._op_offset, 10))
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
    _memo_put(vm, _parse_int(vm._line(), vm._op_offset, 10))
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
        # Long strings are kept as their length only: those could still name something.
        maybe_str = all(isinstance(v, str) or (isinstance(v, Opaque) and v.kind == "str") for v in (module, name))
        vm._push(vm._unresolved("STACK_GLOBAL", why, fatal=not maybe_str))
    return False


def _op_inst(vm: PickleVM) -> bool:
    if vm.python:  # pickle._Unpickler imports the class first, then pops the MARK (which may be missing)
        module = _global_line(vm, "INST module")
        name = _global_line(vm, "INST")
        ref = vm._global(module, name, "INST")
        args = tuple(vm._pop_mark())
    else:  # the C unpickler finds the MARK before reading the names
        args = tuple(vm._pop_mark())
        module = _global_line(vm, "INST module")
        name = _global_line(vm, "INST")
        ref = vm._global(module, name, "INST")
    vm._push(vm._call(ref, args, "INST"))
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
    if not isinstance(args, tuple) and not vm.python:  # C raises TypeError; pickle._Unpickler calls func(*args)
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
        key = inst.factory.key
        if key == JOBLIB_ARRAY_WRAPPER:
            state = _build_snapshot(state, deep=False)
        elif key == _NUMPY_DTYPE:
            state = _build_snapshot(state, deep=True)
        inst.states.append(state)
        if vm.joblib and key == JOBLIB_ARRAY_WRAPPER:
            vm._joblib_array(inst)
        return False
    # BUILD on a class sets class attributes; on anything else it calls a __setstate__ Airlock
    # cannot vouch for.
    vm._hit("pickle.build.target", f"BUILD sets state on a {_describe(inst)}")
    return False


def _no_persistent_load(vm: PickleVM) -> None:
    if not vm.persistent:  # pickle.load / joblib.load have no persistent_load: UnpicklingError
        raise PickleError("persistent id, and this loader has no persistent_load", vm._op_offset)


def _op_persid(vm: PickleVM) -> bool:
    pid = vm._line()
    _no_persistent_load(vm)
    vm.walk.persistent_ids.append(pid.decode("ascii", "replace"))
    vm._push(Opaque("persistent", value=pid))
    return False


def _op_binpersid(vm: PickleVM) -> bool:
    pid = vm._pop()
    _no_persistent_load(vm)
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
    buf: Any,
    start: int = 0,
    end: int | None = None,
    *,
    check_time: Callable[[], None] | None = None,
    joblib: bool = True,
    python: bool | None = None,
    persistent: bool = True,
) -> PickleWalk:
    """Walk the pickle starting at ``buf[start]``; never imports, calls or allocates per the stream.

    ``joblib`` picks the reading and ``python`` the unpickler (by default the pure-Python one
    exactly when reading as joblib; see the module docstring); ``persistent`` says whether the
    loader has a persistent_load (torch's unpicklers do, ``pickle.load`` and joblib do not).
    """
    end = len(buf) if end is None else end
    vm = PickleVM(buf, start, end, check_time=check_time, joblib=joblib, python=python, persistent=persistent)
    return vm.run()


def _imports_a_global(buf: Any, start: int, stop: int, end: int, persistent: bool = True) -> PickleWalk:
    """Walk as the pure-Python and as the C unpickler; the first walk that imports a global, else the C one."""
    eof = stop >= end
    walk = PickleVM(buf, start, stop, python=True, joblib=False, persistent=persistent, eof=eof).run()
    if walk.imports_globals:
        return walk
    return PickleVM(buf, start, stop, python=False, joblib=False, persistent=persistent, eof=eof).run()


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
        walk = _imports_a_global(buf, start, min(end, start + limit), end)
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


def resolves_a_global(
    buf: Any, start: int, end: int, *, limit: int | None = 1 << 20, persistent: bool = True
) -> bool:
    """Does a pickle walk from ``start`` import a global before it stops or breaks?

    ``limit=None`` walks to ``end`` (a loader reads as far as the opcodes go).
    """
    if end <= start or buf[start] not in PICKLE_OPCODES:
        return False
    stop = end if limit is None else min(end, start + limit)
    return _imports_a_global(buf, start, stop, end, persistent).imports_globals
