"""The pickle allowlist: the only globals a scanned pickle may import.

Derived empirically, not from documentation: ``bench/derive_pickle_allowlist.py`` torch.saves
real state dicts with torch 2.13.0 / numpy 2.4 (a transformers GPT-2 state dict; every tensor
dtype; nn.Parameters; an Adam optimizer state; a training checkpoint with numpy scalars and
arrays, RNG states, bytes, sets, torch.Size/device/dtype values; sparse and quantized tensors;
pickle protocols 2-5; zip and legacy ``_use_new_zipfile_serialization=False``) plus a
``joblib.dump`` of numpy arrays, lists every global those pickles import and checks it equals
this table (``tests/unit/test_scan_allowlist.py`` re-runs a fast version). The only entries the
derivation cannot produce are marked "older writers": the numpy 1.x spellings of the same
functions, which checkpoints saved before numpy 2 contain. The table is a subset of what
``torch.load(weights_only=True)`` accepts.

Each global has a role. ``CALL`` globals may be called (REDUCE, NEWOBJ, INST, OBJ) and may
have BUILD applied to what they return; ``REF`` globals are only ever passed as values (a
storage class in a persistent id, a dtype argument), so calling one blocks. Nothing outside
this table is allowed, whatever its module: a denylist can never be complete.
"""

from __future__ import annotations

from enum import Enum


class Role(Enum):
    CALL = "call"
    REF = "ref"


_STORAGE_CLASSES = (
    "BFloat16Storage", "BoolStorage", "ByteStorage", "CharStorage", "ComplexDoubleStorage", "ComplexFloatStorage",
    "DoubleStorage", "FloatStorage", "HalfStorage", "IntStorage", "LongStorage", "ShortStorage",
    "QInt32Storage", "QInt8Storage", "QUInt8Storage", "QUInt4x2Storage",
)  # fmt: skip

# torch dtypes that torch.save writes as globals (those without a legacy storage class, and dtype values).
_TORCH_DTYPES = (
    "float32", "float64", "float16", "bfloat16", "complex32", "complex64", "complex128", "bool",
    "uint8", "int8", "int16", "int32", "int64", "uint16", "uint32", "uint64",
    "float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz", "float8_e8m0fnu", "float4_e2m1fn_x2",
    "quint8", "qint8", "qint32",
)  # fmt: skip

_QSCHEMES = ("per_tensor_affine", "per_tensor_symmetric", "per_channel_affine", "per_channel_symmetric")

ALLOWED_GLOBALS: dict[tuple[str, str], Role] = {
    # The state-dict container.
    ("collections", "OrderedDict"): Role.CALL,
    # Tensor and parameter rebuilders (zip and legacy formats).
    ("torch._utils", "_rebuild_tensor_v2"): Role.CALL,
    ("torch._utils", "_rebuild_tensor_v3"): Role.CALL,  # dtypes without a legacy storage class (fp8, uint16 ...)
    ("torch._utils", "_rebuild_parameter"): Role.CALL,
    ("torch._utils", "_rebuild_parameter_with_state"): Role.CALL,  # a Parameter carrying extra attributes
    ("torch._utils", "_rebuild_sparse_tensor"): Role.CALL,
    ("torch._utils", "_rebuild_qtensor"): Role.CALL,
    ("torch.serialization", "_get_layout"): Role.CALL,  # layout of sparse tensors, looked up by name
    ("torch", "Size"): Role.CALL,
    ("torch", "device"): Role.CALL,
    ("torch.storage", "UntypedStorage"): Role.REF,
    # Python values at pickle protocol 2 (bytes, sets, complex numbers).
    ("_codecs", "encode"): Role.CALL,
    ("builtins", "set"): Role.CALL,
    ("builtins", "frozenset"): Role.CALL,
    ("builtins", "complex"): Role.CALL,
    ("builtins", "bytearray"): Role.CALL,
    # NumPy arrays and scalars stored inside checkpoints (RNG state, metrics).
    ("numpy", "ndarray"): Role.REF,
    ("numpy", "dtype"): Role.CALL,
    ("numpy._core.multiarray", "_reconstruct"): Role.CALL,
    ("numpy._core.multiarray", "scalar"): Role.CALL,
    ("numpy._core.numeric", "_frombuffer"): Role.CALL,  # protocol 5 arrays
    ("numpy.core.multiarray", "_reconstruct"): Role.CALL,  # older writers (numpy 1.x)
    ("numpy.core.multiarray", "scalar"): Role.CALL,  # older writers
    ("numpy.core.numeric", "_frombuffer"): Role.CALL,  # older writers
    # joblib.dump: arrays are written raw after this placeholder (see pickle_scan's BUILD handling).
    ("joblib.numpy_pickle", "NumpyArrayWrapper"): Role.CALL,
}
ALLOWED_GLOBALS.update({("torch", name): Role.REF for name in _STORAGE_CLASSES})
ALLOWED_GLOBALS.update({("torch", name): Role.REF for name in _TORCH_DTYPES})
ALLOWED_GLOBALS.update({("torch", name): Role.REF for name in _QSCHEMES})

JOBLIB_ARRAY_WRAPPER = ("joblib.numpy_pickle", "NumpyArrayWrapper")

# Element sizes of the legacy storage classes, to walk legacy checkpoints' raw storage records.
STORAGE_ELEMENT_SIZE: dict[str, int] = {
    "DoubleStorage": 8, "FloatStorage": 4, "HalfStorage": 2, "BFloat16Storage": 2,
    "LongStorage": 8, "IntStorage": 4, "ShortStorage": 2, "CharStorage": 1, "ByteStorage": 1,
    "BoolStorage": 1, "ComplexDoubleStorage": 16, "ComplexFloatStorage": 8,
    "QInt32Storage": 4, "QInt8Storage": 1, "QUInt8Storage": 1, "QUInt4x2Storage": 1, "QUInt2x4Storage": 1,
    "UntypedStorage": 1,
}  # fmt: skip

# Not an allowlist: only used to word findings ("known dangerous" vs "not allowlisted"). Both block.
# Modules listed here are dangerous together with all their submodules.
KNOWN_DANGEROUS_MODULES = frozenset((
    "os", "posix", "nt", "subprocess", "sys", "socket", "shutil", "pty", "runpy", "importlib", "pickle", "_pickle",
    "marshal", "ctypes", "_ctypes", "types", "functools", "operator", "_operator", "pip", "pkgutil", "pydoc",
    "cProfile", "profile", "trace", "code", "codeop", "timeit", "logging", "io", "_io", "pathlib", "tempfile",
    "webbrowser", "asyncio", "multiprocessing", "threading", "_thread", "signal", "urllib", "http", "requests",
    "ensurepip", "venv", "idlelib", "lib2to3", "doctest", "pdb", "bdb", "dill", "cloudpickle", "commands",
    "_posixsubprocess", "_winapi", "numpy.f2py", "numpy.testing", "torch.hub", "torch.jit",
    "torch.utils.cpp_extension", "torch._inductor", "torch._dynamo", "torch.fx",
))  # fmt: skip
KNOWN_DANGEROUS_BUILTINS = frozenset((
    "eval", "exec", "compile", "open", "__import__", "getattr", "setattr", "delattr", "globals", "locals", "vars",
    "input", "breakpoint", "apply", "execfile", "file", "reload",
))  # fmt: skip


def is_known_dangerous(module: str, name: str) -> bool:
    if module in ("builtins", "__builtin__"):
        return name.split(".")[0] in KNOWN_DANGEROUS_BUILTINS
    parts = module.split(".")
    return any(".".join(parts[:i]) in KNOWN_DANGEROUS_MODULES for i in range(1, len(parts) + 1))
