"""A corpus of malicious and benign model files, built by the tests themselves.

Every malicious payload is harmless: at most it would ``touch`` :data:`MARKER` under /tmp if
something unpickled it. Payloads are assembled opcode by opcode or with ``pickle.dumps`` of a
``__reduce__`` (serialising a reduce tuple runs nothing); nothing here ever loads them, and the
tests assert the marker never appears.

``build_malicious(root)`` / ``build_benign(root)`` write one case per entry and return
``{case name: path}``; a path is a file or a directory (a model repo).
"""

from __future__ import annotations

import gzip
import io
import json
import pickle
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

MARKER = "/tmp/airlock-scan-test-marker-was-created"
CMD = f"touch {MARKER}"

# --------------------------------------------------------------------------- opcode assembly


def sbu(text: str) -> bytes:
    """SHORT_BINUNICODE."""
    data = text.encode()
    return b"\x8c" + bytes([len(data)]) + data


def bu(text: str) -> bytes:
    """BINUNICODE."""
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def glob(module: str, name: str) -> bytes:
    """GLOBAL (protocol 0 text form)."""
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def reduce_call(module: str, name: str, *args: bytes, proto: int = 2) -> bytes:
    """``{module}.{name}(*args)`` with GLOBAL + TUPLE + REDUCE, as a complete pickle."""
    return b"\x80" + bytes([proto]) + glob(module, name) + b"(" + b"".join(args) + b"tR."


def stack_global_call(module_op: bytes, name_op: bytes, *args: bytes) -> bytes:
    """STACK_GLOBAL fed by arbitrary operand opcodes, then called."""
    return b"\x80\x04" + module_op + name_op + b"\x93(" + b"".join(args) + b"tR."


class Reduce:
    """An object whose pickle is ``func(*args)``; pickling it only records the reduce tuple."""

    def __init__(self, func: Any, *args: Any) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.func, self.args


def dumps_reduce(func: Any, *args: Any, protocol: int = 2) -> bytes:
    return pickle.dumps({"weights": Reduce(func, *args)}, protocol=protocol)


# --------------------------------------------------------------------------- containers


def torch_zip(members: list[tuple[str, bytes]]) -> bytes:
    """A zip in torch's layout (stored, fixed timestamps)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            archive.writestr(info, data)
    return buffer.getvalue()


def torch_zip_with_pickle(data_pkl: bytes, extra: list[tuple[str, bytes]] = ()) -> bytes:  # type: ignore[assignment]
    return torch_zip(
        [("archive/data.pkl", data_pkl), ("archive/byteorder", b"little"), ("archive/version", b"3\n"), *extra]
    )


def patch_zip_entry(raw: bytes, name: str, patch: Callable[[bytearray, int, int], None]) -> bytes:
    """Apply ``patch(buf, local_header_offset, central_header_offset)`` to member ``name``."""
    buf = bytearray(raw)
    central = buf.rfind(b"PK\x05\x06")
    cd_offset = struct.unpack_from("<I", buf, central + 16)[0]
    pos = cd_offset
    while buf[pos : pos + 4] == b"PK\x01\x02":
        n, e, c = struct.unpack_from("<HHH", buf, pos + 28)
        entry_name = bytes(buf[pos + 46 : pos + 46 + n]).decode()
        local = struct.unpack_from("<I", buf, pos + 42)[0]
        if entry_name == name:
            patch(buf, local, pos)
            return bytes(buf)
        pos += 46 + n + e + c
    raise KeyError(name)


def rename_local(new_name: str) -> Callable[[bytearray, int, int], None]:
    def patch(buf: bytearray, local: int, _central: int) -> None:
        n = struct.unpack_from("<H", buf, local + 26)[0]
        encoded = new_name.encode()
        assert len(encoded) == n, "same length keeps every offset valid"
        buf[local + 30 : local + 30 + n] = encoded

    return patch


def set_flags(bits: int) -> Callable[[bytearray, int, int], None]:
    def patch(buf: bytearray, local: int, central: int) -> None:
        struct.pack_into("<H", buf, local + 6, struct.unpack_from("<H", buf, local + 6)[0] | bits)
        struct.pack_into("<H", buf, central + 8, struct.unpack_from("<H", buf, central + 8)[0] | bits)

    return patch


def break_crc(buf: bytearray, local: int, central: int) -> None:
    for field in (local + 14, central + 16):
        struct.pack_into("<I", buf, field, struct.unpack_from("<I", buf, field)[0] ^ 0xDEADBEEF)


def npy_object(pickle_bytes: bytes) -> bytes:
    """An .npy whose header declares an object array, followed by ``pickle_bytes``."""
    header = "{'descr': '|O', 'fortran_order': False, 'shape': (1,), }"
    header += " " * (63 - (10 + len(header)) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + pickle_bytes


def safetensors_bytes(header: dict[str, Any] | bytes, data: bytes = b"", length: int | None = None) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if length is None else length) + raw + data


def tar_bytes(members: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def gguf_bytes(metadata: dict[str, str], tensors: int = 1) -> bytes:
    """A minimal GGUF v3: string metadata and ``tensors`` F32 tensors of 8 elements."""

    def string(s: str) -> bytes:
        data = s.encode()
        return struct.pack("<Q", len(data)) + data

    out = b"GGUF" + struct.pack("<IQQ", 3, tensors, len(metadata))
    for key, value in metadata.items():
        out += string(key) + struct.pack("<I", 8) + string(value)
    for i in range(tensors):
        out += string(f"t{i}") + struct.pack("<I", 1) + struct.pack("<Q", 8) + struct.pack("<I", 0)
        out += struct.pack("<Q", i * 32)
    out += b"\x00" * (-len(out) % 32)
    return out + b"\x00" * (32 * tensors)


def _pb_varint(value: int) -> bytes:
    out = b""
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out += bytes([byte | 0x80])
        else:
            return out + bytes([byte])


def pb_field(number: int, value: bytes | int | str) -> bytes:
    if isinstance(value, int):
        return _pb_varint(number << 3) + _pb_varint(value)
    data = value.encode() if isinstance(value, str) else value
    return _pb_varint(number << 3 | 2) + _pb_varint(len(data)) + data


def onnx_model(op_type: str = "Relu", domain: str = "", external_location: str | None = None) -> bytes:
    """A hand-encoded ONNX ModelProto: one node and one initializer."""
    node = pb_field(1, "x") + pb_field(2, "y") + pb_field(4, op_type) + (pb_field(7, domain) if domain else b"")
    tensor = pb_field(1, 2) + pb_field(2, 1) + pb_field(8, "w")
    if external_location is not None:
        tensor += pb_field(13, pb_field(1, "location") + pb_field(2, external_location)) + pb_field(14, 1)
    else:
        tensor += pb_field(9, b"\x00" * 8)
    graph = pb_field(1, node) + pb_field(2, "g") + pb_field(5, tensor)
    return pb_field(1, 9) + pb_field(2, "airlock-test") + pb_field(7, graph) + pb_field(8, pb_field(2, 17))


def sentencepiece_model() -> bytes:
    pieces = b"".join(
        pb_field(1, pb_field(1, piece) + b"\x15" + struct.pack("<f", -1.0) + pb_field(3, 1))
        for piece in ("<unk>", "a", "b")
    )
    return pieces + pb_field(2, pb_field(1, "unigram"))


def write(root: Path, rel: str, data: bytes | str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


# --------------------------------------------------------------------------- malicious


def malicious_pickles() -> dict[str, bytes]:
    """Plain pickle payloads (each blocks wherever it appears)."""
    import builtins
    import functools
    import operator
    import os
    import subprocess

    arg = bu(CMD)
    return {
        "reduce_os_system": dumps_reduce(os.system, CMD),
        "reduce_subprocess_popen": dumps_reduce(subprocess.Popen, ["touch", MARKER], protocol=4),
        "reduce_builtins_exec": dumps_reduce(builtins.exec, f"open({MARKER!r}, 'w')", protocol=0),
        "reduce_builtins_eval": dumps_reduce(builtins.eval, f"open({MARKER!r}, 'w')", protocol=3),
        "protocol5_os_system": dumps_reduce(os.system, CMD, protocol=5),
        "posix_system_alias": reduce_call("posix", "system", arg),
        "py2_builtin_eval": reduce_call("__builtin__", "eval", bu(f"open({MARKER!r}, 'w')")),
        # Submodules of dangerous modules (denylists keyed on the top module miss these).
        "submodule_pip_internal": stack_global_call(sbu("pip._internal.cli.main"), sbu("main"), bu("install")),
        "submodule_posixsubprocess": reduce_call("_posixsubprocess", "fork_exec", arg),
        "submodule_os_path_dotted_name": stack_global_call(sbu("os"), sbu("path.os.system"), arg),
        # STACK_GLOBAL operands from every string opcode.
        "stack_global_binstring": stack_global_call(b"T\x02\x00\x00\x00os", b"T\x06\x00\x00\x00system", arg),
        "stack_global_short_binstring": stack_global_call(b"U\x02os", b"U\x06system", arg),
        "stack_global_string": stack_global_call(b"S'os'\n", b"S'system'\n", arg),
        "stack_global_unicode": stack_global_call(b"Vos\n", b"Vsystem\n", arg),
        "stack_global_binunicode8": stack_global_call(
            b"\x8d" + struct.pack("<Q", 2) + b"os", b"\x8d" + struct.pack("<Q", 6) + b"system", arg
        ),
        # Memo tricks.
        "memo_missing_slot": b"\x80\x04" + sbu("os") + b"h\x07" + b"\x93(" + arg + b"tR.",
        "memo_non_string": b"\x80\x04K\x05\x94" + sbu("system") + b"h\x00" + b"\x93(" + arg + b"tR.",
        "memo_indirection": (
            b"\x80\x04"
            + sbu("os")
            + b"q\x01"
            + sbu("system")
            + b"q\x02"
            + b"00"  # PUT both, POP both
            + sbu("collections")
            + sbu("OrderedDict")
            + b"00"  # decoys picklescan may pick up
            + b"h\x01h\x02\x93("
            + arg
            + b"tR."
        ),
        "memo_overwritten": (
            b"\x80\x04"
            + sbu("collections")
            + b"\x94"
            + b"0"
            + sbu("os")
            + b"q\x00"
            + b"0"
            + b"h\x00"
            + sbu("system")
            + b"\x93("
            + arg
            + b"tR."
        ),
        "memo_long_binget": (
            b"\x80\x04"
            + sbu("os")
            + b"r\x00\x01\x00\x00"
            + b"0"  # LONG_BINPUT 256, POP
            + b"j\x00\x01\x00\x00"
            + sbu("system")
            + b"\x93("
            + arg
            + b"tR."  # LONG_BINGET 256
        ),
        # Other call opcodes.
        "inst_opcode": b"(" + b"S'" + CMD.encode() + b"'\n" + b"ios\nsystem\n.",
        "obj_opcode": b"(" + glob("os", "system") + b"S'" + CMD.encode() + b"'\no.",
        "newobj_opcode": b"\x80\x02" + glob("subprocess", "Popen") + b"(" + arg + b"t\x81.",
        "ext_opcode": b"\x80\x02\x82\x01(" + arg + b"tR.",
        "build_on_class": b"\x80\x02" + glob("collections", "OrderedDict") + b"}" + sbu("__reduce__") + b"Ns" + b"b.",
        "reduce_result_called": (
            b"\x80\x02" + glob("collections", "OrderedDict") + b")R" + b"(" + arg + b"tR."  # calls an OrderedDict
        ),
        "truncated_after_global": b"\x80\x02" + glob("os", "system") + b"(" + arg,
        "malformed_unknown_opcode": b"\x80\x02" + glob("os", "system") + b"\xff",
        "second_pickle_evil": pickle.dumps({"a": 1}, protocol=2) + dumps_reduce(os.system, CMD),
        # Callables missing from denylists.
        "pip_main": reduce_call("pip", "main", b"(" + bu("install") + b"l"),
        "pkgutil_resolve_name": reduce_call("pkgutil", "resolve_name", bu("os:system")),
        "pydoc_locate_methodcaller": (
            b"\x80\x02"
            + glob("operator", "methodcaller")
            + b"("
            + bu("system")
            + arg
            + b"tR"
            + b"("
            + glob("pydoc", "locate")
            + b"("
            + bu("os")
            + b"tRtR."
        ),
        "functools_partial": dumps_reduce(functools.partial, os.system, CMD),
        "operator_attrgetter": dumps_reduce(operator.attrgetter, "system"),
        "cprofile_run": reduce_call("cProfile", "run", bu(f"open({MARKER!r}, 'w')")),
        "profile_run": reduce_call("profile", "run", bu(f"open({MARKER!r}, 'w')")),
        "trace_run": stack_global_call(sbu("trace"), sbu("Trace.run"), bu(f"open({MARKER!r}, 'w')")),
        "code_interactive_interpreter": (
            b"\x80\x04"
            + sbu("code")
            + sbu("InteractiveInterpreter.runsource")
            + b"\x93("
            + glob("code", "InteractiveInterpreter")
            + b")R"
            + bu(f"open({MARKER!r}, 'w')")
            + b"tR."
        ),
        "timeit_timeit": reduce_call("timeit", "timeit", bu(f"open({MARKER!r}, 'w')"), b"K\x01"),
        "ctypes_cdll": reduce_call("ctypes", "CDLL", bu("libc.so.6")),
        "marshal_loads": reduce_call("marshal", "loads", b"C\x01\x00"),
        "types_codetype": reduce_call("types", "CodeType", b"K\x00"),
        "types_functiontype": reduce_call("types", "FunctionType", b"N", b"}"),
        "logging_filehandler": reduce_call("logging", "FileHandler", bu(MARKER)),
        "io_fileio": reduce_call("_io", "FileIO", bu(MARKER), bu("w")),
        "runpy_run_path": reduce_call("runpy", "run_path", bu(MARKER)),
        "torch_load_nested": reduce_call("torch.serialization", "load", bu(MARKER)),
        "numpy_testing_runstring": reduce_call("numpy.testing._private.utils", "runstring", bu("x"), b"}"),
        "webbrowser_open": reduce_call("webbrowser", "open", bu("http://127.0.0.1:9/")),
    }


def build_malicious(root: Path) -> dict[str, Path]:
    """Every malicious case; each must block at every tier."""
    import os

    import numpy as np  # noqa: F401 - joblib needs it

    cases: dict[str, Path] = {}
    evil = malicious_pickles()
    for name, data in evil.items():
        cases[f"pickle/{name}"] = write(root, f"pickle/{name}.pkl", data)

    payload = dumps_reduce(os.system, CMD)
    proto0 = pickle.dumps({"w": Reduce(os.system, CMD)}, protocol=0)
    benign_pkl = pickle.dumps({"w": 1}, protocol=2)
    # Where pickles hide.
    cases["hidden/plain_pickle_named_bin"] = write(root, "hidden/bin/pytorch_model.bin", payload)
    cases["hidden/plain_pickle_named_pt"] = write(root, "hidden/pt/model.pt", payload)
    cases["hidden/extensionless"] = write(root, "hidden/noext/weights", payload)
    cases["hidden/named_safetensors"] = write(root, "hidden/st/model.safetensors", payload)
    cases["hidden/npy_object"] = write(root, "hidden/npy/arr.npy", npy_object(payload))
    cases["hidden/protocol0_in_json_name"] = write(root, "hidden/json/config.json", proto0)
    cases["hidden/gzip_pickle"] = write(root, "hidden/gz/model.pkl.gz", gzip.compress(payload))
    cases["hidden/zlib_pickle"] = write(root, "hidden/zlib/model.joblib", zlib.compress(payload))
    cases["hidden/tar_member"] = write(root, "hidden/tar/model.tar", tar_bytes([("weights/model.bin", payload)]))
    cases["hidden/zip_in_zip"] = write(
        root, "hidden/zipzip/bundle.zip", torch_zip([("inner.zip", torch_zip([("x/evil.pkl", payload)]))])
    )
    cases["hidden/joblib"] = _joblib_evil(root)
    # PyTorch zip bypasses.
    cases["torchzip/evil_data_pkl"] = write(root, "torchzip/a/pytorch_model.bin", torch_zip_with_pickle(payload))
    cases["torchzip/nonstandard_member_name"] = write(
        root, "torchzip/b/pytorch_model.bin", torch_zip_with_pickle(benign_pkl, [("archive/extra/notes.txt", payload)])
    )
    cases["torchzip/protocol0_pickle_member"] = write(
        root, "torchzip/c/pytorch_model.bin", torch_zip_with_pickle(benign_pkl, [("archive/readme", proto0)])
    )
    evil_zip = torch_zip_with_pickle(payload)
    cases["torchzip/name_mismatch"] = write(
        root,
        "torchzip/d/pytorch_model.bin",
        patch_zip_entry(evil_zip, "archive/data.pkl", rename_local("archive/data.txt")),
    )
    cases["torchzip/flag_bits"] = write(
        root, "torchzip/e/pytorch_model.bin", patch_zip_entry(evil_zip, "archive/data.pkl", set_flags(0x0001))
    )
    cases["torchzip/bad_crc"] = write(
        root, "torchzip/f/pytorch_model.bin", patch_zip_entry(evil_zip, "archive/data.pkl", break_crc)
    )
    cases["torchzip/evil_in_storage_member"] = write(
        root,
        "torchzip/g/pytorch_model.bin",
        torch_zip_with_pickle(_storage_pickle(), [("archive/data/0", payload)]),
    )
    cases["torch_legacy/evil_main_pickle"] = write(root, "legacy/a/pytorch_model.bin", _legacy_with(payload))
    cases["torch_legacy/magic_number_bypass"] = write(
        root, "legacy/b/pytorch_model.bin", reduce_call("builtins", "eval", bu(str(0x1950A86A20F9469CFC6C))) + payload
    )
    cases["torch_legacy/pickle_in_tail"] = write(root, "legacy/c/pytorch_model.bin", _legacy_benign() + payload)
    # Hostile safetensors headers.
    tensor = {"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}
    cases["safetensors/length_beyond_file"] = write(
        root, "st/a/model.safetensors", safetensors_bytes(tensor, b"\x00" * 8, length=10_000)
    )
    cases["safetensors/length_2_40"] = write(
        root, "st/b/model.safetensors", safetensors_bytes(tensor, b"\x00" * 8, 1 << 40)
    )
    overlapping = {
        "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
        "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},
    }
    cases["safetensors/overlapping_offsets"] = write(
        root, "st/c/model.safetensors", safetensors_bytes(overlapping, b"\0" * 12)
    )
    cases["safetensors/non_json_header"] = write(
        root, "st/d/model.safetensors", safetensors_bytes(b"not json!", b"\0" * 8)
    )
    cases["safetensors/header_is_pickle"] = write(root, "st/e/model.safetensors", safetensors_bytes(payload))
    cases["safetensors/shape_mismatch"] = write(
        root, "st/f/model.safetensors",
        safetensors_bytes({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}}, b"\0" * 8),
    )  # fmt: skip
    cases["safetensors/trailing_garbage"] = write(
        root, "st/g/model.safetensors", safetensors_bytes(tensor, b"\0" * 8 + payload)
    )
    cases["safetensors/duplicate_keys"] = write(
        root, "st/h/model.safetensors",
        safetensors_bytes(b'{"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "w": {"dtype": "F32", '
                          b'"shape": [2], "data_offsets": [0, 8]}}', b"\0" * 8),
    )  # fmt: skip
    # Other hostile formats.
    ssti = "{{ ''.__class__.__mro__[1].__subclasses__() }}"
    cases["gguf/ssti_chat_template"] = write(root, "gguf/a/model.gguf", gguf_bytes({"tokenizer.chat_template": ssti}))
    cases["gguf/attr_filter_template"] = write(
        root, "gguf/b/model.gguf", gguf_bytes({"tokenizer.chat_template": "{{ x|attr('\\x5f\\x5fclass\\x5f\\x5f') }}"})
    )
    cases["tokenizer_config/ssti"] = write(
        root,
        "tokcfg/tokenizer_config.json",
        json.dumps({"chat_template": "{{ lipsum.__globals__['os'].popen('id') }}"}),
    )
    cases["keras/lambda_layer"] = write(root, "keras/model.keras", _keras(lambda_layer=True))
    cases["hdf5/lambda_layer"] = write(
        root,
        "h5/model.h5",
        b"\x89HDF\r\n\x1a\n" + b"\0" * 64 + b'{"class_name": "Lambda", "config": {"function": "..."}}',
    )
    cases["onnx/external_path_escape"] = write(
        root, "onnx/model.onnx", onnx_model(external_location="../../etc/passwd")
    )
    cases["zip/path_traversal"] = write(root, "zipslip/bundle.zip", torch_zip([("../../tmp/x.txt", b"hi")]))
    cases["tar/symlink"] = write(root, "tarlink/bundle.tar", _tar_symlink())
    return cases


def _joblib_evil(root: Path) -> Path:
    import os

    import joblib

    path = root / "hidden/joblib/model.joblib"
    path.parent.mkdir(parents=True, exist_ok=True)
    joblib.dump({"model": Reduce(os.system, CMD)}, path)  # dump only records the reduce tuple
    return path


def _storage_pickle() -> bytes:
    """A benign data.pkl declaring one 2-float storage with key '0' (like torch.save)."""
    import torch

    buffer = io.BytesIO()
    torch.save({"w": torch.zeros(2)}, buffer)
    with zipfile.ZipFile(buffer) as archive:
        return archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))


def _legacy_benign() -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save({"w": torch.arange(4, dtype=torch.float32)}, buffer, _use_new_zipfile_serialization=False)
    return buffer.getvalue()


def _legacy_with(main_pickle: bytes) -> bytes:
    """Legacy layout with ``main_pickle`` as the object pickle and no storages."""
    magic = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)
    version = pickle.dumps(1001, protocol=2)
    sys_info = pickle.dumps({"protocol_version": 1001, "little_endian": True}, protocol=2)
    return magic + version + sys_info + main_pickle + pickle.dumps([], protocol=2)


def _keras(lambda_layer: bool) -> bytes:
    layers = [{"class_name": "Dense", "module": "keras.layers", "config": {"name": "dense", "units": 2}}]
    if lambda_layer:
        layers.append(
            {"class_name": "Lambda", "module": "keras.layers", "config": {"name": "evil", "function": {"code": "..."}}}
        )
    config = {"class_name": "Sequential", "module": "keras", "config": {"name": "seq", "layers": layers}}
    return torch_zip(
        [("metadata.json", json.dumps({"keras_version": "3.0"}).encode()), ("config.json", json.dumps(config).encode())]
    )


def _tar_symlink() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("weights.bin")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        tar.addfile(info)
    return buffer.getvalue()


# --------------------------------------------------------------------------- benign


def build_benign(root: Path) -> dict[str, Path]:
    """Ordinary checkpoints and files: each must be allowed at tiers low and medium."""
    import joblib
    import numpy as np
    import torch
    from safetensors.torch import save_file
    from transformers import GPT2Config, GPT2LMHeadModel

    cases: dict[str, Path] = {}
    config = GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=128, n_positions=64, bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(config)
    state = model.state_dict()
    repo = root / "gpt2-safetensors"
    model.save_pretrained(str(repo))
    cases["transformers_safetensors_repo"] = repo
    for protocol in (2, 4):
        path = root / f"torch/zip_p{protocol}/pytorch_model.bin"
        path.parent.mkdir(parents=True)
        torch.save(state, path, pickle_protocol=protocol)
        cases[f"torch_zip_gpt2_state_dict_p{protocol}"] = path
        path = root / f"torch/legacy_p{protocol}/pytorch_model.bin"
        path.parent.mkdir(parents=True)
        torch.save(state, path, pickle_protocol=protocol, _use_new_zipfile_serialization=False)
        cases[f"torch_legacy_gpt2_state_dict_p{protocol}"] = path
    linear = torch.nn.Linear(4, 3)
    optimizer = torch.optim.Adam(linear.parameters())
    linear(torch.randn(2, 4)).sum().backward()
    optimizer.step()
    checkpoint = {
        "model": linear.state_dict(),
        "optimizer": optimizer.state_dict(),
        "epoch": 2,
        "metrics": {"loss": np.float64(0.5), "history": np.arange(3, dtype=np.float32)},
        "rng": torch.get_rng_state(),
        "dtypes": {"half": torch.float16, "device": torch.device("cpu"), "size": torch.Size([3])},
        "tensors": {
            str(d): torch.ones(3, dtype=d)
            for d in (torch.float16, torch.bfloat16, torch.int64, torch.bool, torch.uint16)
        },
    }
    for fmt, kwargs in (("zip", {}), ("legacy", {"_use_new_zipfile_serialization": False})):
        path = root / f"torch/checkpoint_{fmt}/checkpoint.pt"
        path.parent.mkdir(parents=True)
        if fmt == "legacy":
            checkpoint = {k: v for k, v in checkpoint.items() if k != "tensors"}  # uint16 has no legacy storage
        torch.save(checkpoint, path, **kwargs)
        cases[f"torch_training_checkpoint_{fmt}"] = path
    cases["numpy_npy_float"] = _save(
        root / "np/weights.npy", lambda p: np.save(p, np.linspace(0, 1, 100, dtype=np.float32))
    )
    cases["numpy_npz"] = _save(root / "np/weights.npz", lambda p: np.savez(p, a=np.ones((3, 3)), b=np.arange(4)))
    cases["numpy_npz_compressed"] = _save(
        root / "np/compressed.npz", lambda p: np.savez_compressed(p, a=np.ones((64, 64), dtype=np.float16))
    )
    cases["joblib_arrays"] = _save(
        root / "jl/model.joblib", lambda p: joblib.dump({"coef": np.ones((4, 2)), "bias": np.zeros(2), "n": 3}, p)
    )
    cases["joblib_compressed"] = _save(
        root / "jl/model.z.joblib", lambda p: joblib.dump({"coef": np.ones((40, 20))}, p, compress=3)
    )
    cases["safetensors_plain"] = _save(
        root / "st/plain.safetensors", lambda p: save_file({"w": torch.ones(2, 2), "b": torch.zeros(2)}, str(p))
    )
    cases["tokenizer_files"] = _tokenizer_repo(root / "tokenizer")
    cases["gguf_plain"] = write(
        root,
        "gguf/model.gguf",
        gguf_bytes({"general.name": "tiny", "tokenizer.chat_template": _LLAMA_STYLE_TEMPLATE}, tensors=2),
    )
    cases["onnx_plain"] = write(root, "onnx/model.onnx", onnx_model())
    onnx_dir = root / "onnx-external"
    write(onnx_dir, "model.onnx", onnx_model(external_location="model.onnx.data"))
    write(onnx_dir, "model.onnx.data", bytes(range(256)) * 4)
    cases["onnx_external_data"] = onnx_dir
    cases["sentencepiece"] = write(root, "spm/tokenizer.model", sentencepiece_model())
    cases["keras_v3"] = write(root, "keras/model.keras", _keras(lambda_layer=False))
    cases["tar_of_safetensors"] = write(
        root, "tar/bundle.tar", tar_bytes([("model.safetensors", (root / "st/plain.safetensors").read_bytes())])
    )
    cases["gzip_of_npy"] = write(root, "gz/w.npy.gz", gzip.compress((root / "np/weights.npy").read_bytes()))
    cases["readme_and_license"] = _docs(root / "docs")
    return cases


_LLAMA_STYLE_TEMPLATE = (
    "{% set ns = namespace(system='') %}{% for message in messages %}"
    "{% if message['role'] == 'system' %}{% set ns.system = message['content'] %}{% endif %}"
    "{{ '<|start|>' + message['role'] + '\\n' + message['content'] | trim + '<|end|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start|>assistant\\n' }}{% endif %}"
)


def _save(path: Path, saver: Callable[[Path], None]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    saver(path)
    return path


def _tokenizer_repo(target: Path) -> Path:
    target.mkdir(parents=True)
    write(target, "vocab.json", json.dumps({"a": 0, "b": 1, "ab": 2}))
    write(target, "merges.txt", "#version: 0.2\na b\n")
    write(target, "special_tokens_map.json", json.dumps({"eos_token": "<|endoftext|>"}))
    write(target, "tokenizer_config.json", json.dumps({"model_max_length": 64, "chat_template": _LLAMA_STYLE_TEMPLATE}))
    write(target, "tokenizer.json", json.dumps({"version": "1.0", "model": {"type": "BPE", "vocab": {"a": 0}}}))
    write(target, "chat_template.jinja", _LLAMA_STYLE_TEMPLATE)
    write(target, "vocab.txt", "[PAD]\n[UNK]\nlittle\ncat\ncos\nsystem\n")
    return target


def _docs(target: Path) -> Path:
    target.mkdir(parents=True)
    write(target, "README.md", "---\nlicense: apache-2.0\n---\n# Model\n\nLittle cats (c) 2024.\n")
    write(target, "LICENSE", "Apache License\nVersion 2.0, January 2004\n")
    write(target, "NOTICE", "c\nos\nsystem\n")  # text that spells a GLOBAL, but without the call: see tests
    return target


# --------------------------------------------------------------------------- loader oracle (differential tests)

# Run in a child process: load a file with a real loader whose every find_class records the
# global and refuses anything off Airlock's allowlist (so no payload ever runs), and print the
# refused globals as JSON. An audit hook aborts process creation as a second safety net.
_ORACLE_CHILD = r"""
import json, pickle, sys, types
from airlock.scan.allowlist import ALLOWED_GLOBALS

path, loader, options = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
refused = []

def _audit(event, args):
    if event in ("os.system", "subprocess.Popen", "os.exec", "os.posix_spawn", "os.spawn"):
        raise RuntimeError("oracle: process creation refused")
sys.addaudithook(_audit)

def guard(find_class):
    def find(self, module, name):
        if (module, name) not in ALLOWED_GLOBALS and not (loader == "torch" and "Storage" in name):
            refused.append(f"{module}.{name}")
            raise pickle.UnpicklingError(f"oracle refused {module}.{name}")
        return find_class(self, module, name)
    return find

class Recording(pickle.Unpickler):
    find_class = guard(pickle.Unpickler.find_class)

def load(file, **kwargs):
    return Recording(file, **kwargs).load()

error = None
try:
    if loader == "joblib":
        import joblib
        from joblib import numpy_pickle, numpy_pickle_compat
        numpy_pickle.NumpyUnpickler.find_class = guard(pickle._Unpickler.find_class)
        numpy_pickle_compat.ZipNumpyUnpickler.find_class = guard(pickle._Unpickler.find_class)
        joblib.load(path, **options)
    elif loader == "torch":
        import torch
        module = types.ModuleType("oracle_pickle")
        module.Unpickler, module.load, module.__name__ = Recording, load, "oracle_pickle"
        torch.load(path, weights_only=False, pickle_module=module)
    elif loader == "numpy":
        import numpy as np
        pickle.load = load  # np.load calls pickle.load for object arrays and non-npy files
        np.load(path, allow_pickle=True)
    else:
        with open(path, "rb") as handle:
            load(handle)
except BaseException as exc:  # the load fails once a global is refused: that is the point
    error = f"{type(exc).__name__}: {exc}"[:300]
print(json.dumps({"refused": refused, "error": error}))
"""


def loader_reaches(path: Path, loader: str, **options: Any) -> list[str]:
    """Globals off the allowlist that ``loader`` (joblib, torch, numpy, pickle) would import from ``path``.

    The loader runs for real in a child process; each such global is refused when it is asked
    for, so the load stops there and nothing from the file runs.
    """
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, "-c", _ORACLE_CHILD, str(path), loader, json.dumps(options)],
        capture_output=True, text=True, timeout=120, env=env, check=False,
    )  # fmt: skip
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"oracle child failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return list(json.loads(lines[-1])["refused"])


# --------------------------------------------------------------------------- joblib wrappers and legacy formats


def posix_system_call() -> bytes:
    """Opcodes for ``posix.system(CMD)``, leaving its result on the stack (a mid-stream payload)."""
    return glob("posix", "system") + bu(CMD) + b"\x85R"


def pickle_literal(value: Any) -> bytes:
    """Opcodes pushing ``value`` (None, bool, int, str, tuple; ``bytes`` are spliced in as opcodes)."""
    if value is None:
        return b"N"
    if isinstance(value, bool):
        return b"\x88" if value else b"\x89"
    if isinstance(value, int):
        if -(1 << 31) <= value < 1 << 31:
            return b"J" + struct.pack("<i", value)
        raw = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
        return b"\x8a" + bytes([len(raw)]) + raw  # LONG1
    if isinstance(value, str):
        return sbu(value)
    if isinstance(value, bytes):
        return value
    if isinstance(value, tuple):
        return b"(" + b"".join(pickle_literal(v) for v in value) + b"t"
    raise TypeError(value)


def numpy_dtype_ops(spec: str, state: tuple[Any, ...] | None = None, *, copy: bool = True) -> bytes:
    """``numpy.dtype(spec, False, copy)`` and, if given, a BUILD with ``state`` (numpy's __setstate__ tuple)."""
    out = glob("numpy", "dtype") + sbu(spec) + b"\x89" + (b"\x88" if copy else b"\x89") + b"\x87R"
    return out + (pickle_literal(state) + b"b" if state is not None else b"")


def dict_ops(items: list[tuple[str, bytes]]) -> bytes:
    """An EMPTY_DICT filled by SETITEMS, in order (repeated keys included)."""
    return b"}(" + b"".join(sbu(k) + v for k, v in items) + b"u"


def wrapper_items(
    dtype: bytes, shape: tuple[int, ...], *, alignment: int | None = None, allow_mmap: bool = False
) -> list[tuple[str, bytes]]:
    """A NumpyArrayWrapper state as joblib writes it (``alignment=None``: joblib < 1.2, no padding)."""
    return [
        ("subclass", glob("numpy", "ndarray")),
        ("shape", pickle_literal(shape)),
        ("order", sbu("C")),
        ("dtype", dtype),
        ("allow_mmap", pickle_literal(allow_mmap)),
        ("numpy_array_alignment_bytes", pickle_literal(alignment)),
    ]


def wrapper_ops(state: bytes) -> bytes:
    """``NumpyArrayWrapper.__new__`` (NEWOBJ, as joblib writes it) and a BUILD with ``state`` opcodes."""
    return glob("joblib.numpy_pickle", "NumpyArrayWrapper") + b")\x81" + state + b"b"


def joblib_stream(wrapper: bytes, after_build: bytes, tail: bytes = b"s.") -> bytes:
    """``{"w": <array>}``: the wrapper, then what follows its BUILD, then ``tail``."""
    return b"\x80\x04}" + sbu("w") + wrapper + after_build + tail


def skip_to_multiple(core: bytes, multiple: int) -> bytes:
    """``core`` + SHORT_BINBYTES filler + POP: as long as a multiple of ``multiple``, same stack effect."""
    for k in range(256):
        out = core + b"C" + bytes([k]) + b"\0" * k + b"0"
        if len(out) % multiple == 0:
            return out
    raise ValueError(multiple)


def printable_tar(members: list[tuple[str, bytes]]) -> bytes:
    """A tar ``tarfile`` reads, made only of printable text: v7 headers (no ``ustar``), names set by PAX records."""

    def header(name: bytes, size: int, kind: bytes) -> bytes:
        block = bytearray(b" " * 512)
        block[0:100] = name.ljust(100, b"a")
        block[100:108] = b"0000644 "
        block[108:124] = b"0000000 0000000 "
        block[124:136] = oct(size)[2:].rjust(11, "0").encode() + b" "
        block[136:148] = b"00000000000 "
        block[156:157] = kind
        block[148:156] = oct(sum(block))[2:].rjust(6, "0").encode() + b"  "  # the checksum field sums as spaces
        return bytes(block)

    out = b""
    for name, data in members:
        record = f" path={name}\n"
        record = f"{len(record) + len(str(len(record) + 2))}{record}".encode()
        out += header(b"PaxHeader", len(record), b"x") + record + b" " * (-len(record) % 512)
        out += header(b"member", len(data), b"0") + data + b" " * (-len(data) % 512)
    return out


def printable_zlib(payload: bytes) -> bytes:
    """A zlib stream made of printable UTF-8 holding ``payload`` (a protocol 0 pickle) plus a padding string.

    Header ``x^``; one stored block whose type byte is ``!`` (only its low three bits count); a
    length whose one's complement is a valid two-byte UTF-8 sequence; the padding string is grown
    until the adler-32 trailer is printable too.
    """
    from airlock.scan.detect import is_text

    for pad in range(0x4020, 0x8000):
        body = payload[:-1] + b"V" + b"a" * pad + b"\n0."  # ... V<padding>\n POP STOP
        n = len(body)
        stream = b"x^!" + struct.pack("<HH", n, n ^ 0xFFFF) + body + struct.pack(">I", zlib.adler32(body))
        if is_text(stream):
            return stream
    raise ValueError("no printable zlib stream")


def joblib_zfile(stream: bytes, length: int) -> bytes:
    """joblib's pre-0.10 ``ZF`` file: ``ZF`` + hex length padded to 19 bytes + the zlib stream."""
    return b"ZF" + hex(length).encode().ljust(19) + stream
