#!/usr/bin/env python3
"""Derive the pickle allowlist from what torch.save, numpy and joblib actually emit.

Builds real checkpoints in memory (a transformers GPT-2 state dict, every tensor dtype,
nn.Parameters, an Adam optimizer state, a training checkpoint with numpy values, RNG states,
bytes, sets and complex numbers, sparse and quantized tensors), saves each with torch.save at
pickle protocols 2-5 in the zip format and in the legacy format, adds joblib.dump output, and
lists every global their pickles import - independently of Airlock's scanner, with
``pickletools.genops`` and a minimal memo tracker (nothing is unpickled). It also records which
globals are called (REDUCE/NEWOBJ) and which are only passed as values.

Prints the derived table and its difference with ``airlock.scan.allowlist.ALLOWED_GLOBALS``;
exits 1 if torch/numpy/joblib emit a global the allowlist lacks or call one it marks
reference-only. ``--quick`` uses a smaller model (what the unit test runs).

Usage: .venv/bin/python bench/derive_pickle_allowlist.py [--quick]
"""

from __future__ import annotations

import argparse
import io
import pickletools
import sys
import tempfile
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

Global = tuple[str, str]
_STRING_OPS = {
    "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "STRING", "BINSTRING", "SHORT_BINSTRING",
}  # fmt: skip
_PY2_NAMES = {("__builtin__", n): ("builtins", n) for n in ("set", "frozenset", "complex", "bytearray")}


def ops_until_error(data: bytes) -> list[tuple[pickletools.OpcodeInfo, Any, int]]:
    """Opcodes up to the first one pickletools cannot parse (joblib's raw array bytes)."""
    ops = []
    try:
        for op in pickletools.genops(data):
            ops.append(op)
    except ValueError:
        pass
    return ops


def pickle_globals(data: bytes | list[tuple[pickletools.OpcodeInfo, Any, int]]) -> dict[Global, bool]:
    """``{(module, name): called}`` for one pickle stream (or its opcodes), from opcodes only.

    A tiny stack model: strings and globals are tracked; anything else is an opaque marker.
    Enough for what pickle's own writer emits (which is all this is run on).
    """
    found: dict[Global, bool] = {}
    stack: list[Any] = []
    marks: list[int] = []
    memo: dict[int, Any] = {}
    for op, arg, _pos in pickletools.genops(data) if isinstance(data, bytes) else data:
        name = op.name
        if name in _STRING_OPS:
            stack.append(arg)
        elif name in ("GLOBAL", "INST"):
            module, attr = arg.split(" ", 1)
            g = _PY2_NAMES.get((module, attr), (module, attr))
            found.setdefault(g, name == "INST")
            stack.append(g)
        elif name == "STACK_GLOBAL":
            attr, module = stack.pop(), stack.pop()
            found.setdefault((module, attr), False)
            stack.append((module, attr))
        elif name in ("MEMOIZE",):
            memo[len(memo)] = stack[-1] if stack else None
        elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[arg] = stack[-1] if stack else None
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            stack.append(memo.get(arg))
        elif name == "MARK":
            marks.append(len(stack))
        elif name in ("REDUCE", "NEWOBJ", "NEWOBJ_EX"):
            # The callable sits under its argument(s): find the nearest global below the top.
            args = {"REDUCE": 1, "NEWOBJ": 1, "NEWOBJ_EX": 2}[name]
            callee = stack[-1 - args] if len(stack) > args else None
            if isinstance(callee, tuple) and callee in found:
                found[callee] = True
            del stack[len(stack) - 1 - args :]
            stack.append(object())
        else:
            _apply_stack_effect(op, stack, marks)
    return found


def _apply_stack_effect(op: pickletools.OpcodeInfo, stack: list[Any], marks: list[int]) -> None:
    """Generic effect: pop what the opcode consumes (through its MARK if any), push opaque results."""
    before, after = op.stack_before, op.stack_after
    if pickletools.markobject in before:
        below_mark = before.index(pickletools.markobject)
        del stack[marks.pop() if marks else 0 :]  # the items after the MARK
        consumed = below_mark  # and the ones under it (the list of APPENDS, the dict of SETITEMS)
    else:
        consumed = len(before)
    if consumed:
        del stack[-consumed:]
    stack.extend(object() for _ in after)


def zip_pickles(raw: bytes) -> Iterator[bytes]:
    with zipfile.ZipFile(io.BytesIO(raw)) as archive:
        for name in archive.namelist():
            if name.endswith(".pkl"):
                yield archive.read(name)


def legacy_pickles(raw: bytes) -> Iterator[bytes]:
    """The five pickles at the head of a legacy torch file (the raw storage records follow)."""
    stream = io.BytesIO(raw)
    for _ in range(5):
        start = stream.tell()
        for _op in pickletools.genops(stream):
            pass
        yield raw[start : stream.tell()]


def checkpoints(quick: bool) -> Iterator[tuple[str, Any]]:
    import numpy as np
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(n_layer=1, n_head=2, n_embd=32, vocab_size=128, n_positions=32) if quick else GPT2Config()
    gpt2 = GPT2LMHeadModel(config)
    yield "gpt2 state_dict", gpt2.state_dict()
    yield "gpt2 named_parameters", dict(gpt2.named_parameters())

    dtypes = [
        torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.complex64, torch.complex128,
        torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64, torch.bool, torch.uint16, torch.uint32,
        torch.uint64, torch.float8_e4m3fn, torch.float8_e5m2, torch.float8_e4m3fnuz, torch.float8_e5m2fnuz,
        torch.float8_e8m0fnu, torch.float4_e2m1fn_x2, torch.complex32,
    ]  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield "every dtype", {str(d): torch.zeros(4, dtype=d) for d in dtypes}
        yield "dtypes as values", {str(d): d for d in [*dtypes, torch.quint8, torch.qint8, torch.qint32]}
        x = torch.randn(2, 4)
        quantized = {
            str(qdtype): torch.quantize_per_tensor(x, 0.1, 0, qdtype)
            for qdtype in (torch.qint8, torch.quint8, torch.qint32)
        }
        quantized["per_channel"] = torch.quantize_per_channel(
            x, torch.tensor([0.1, 0.2]), torch.tensor([0, 0]), 0, torch.qint8
        )
        quantized["quint4x2"] = torch.quantize_per_tensor(x, 0.1, 0, torch.quint4x2)
        quantized["qschemes"] = [torch.per_tensor_affine, torch.per_tensor_symmetric, torch.per_channel_affine,
                                 torch.per_channel_symmetric]  # fmt: skip
    yield "sparse + quantized", {"sparse": torch.randn(3, 3).to_sparse(), **quantized}
    tagged = torch.nn.Parameter(torch.ones(2))
    tagged.note = "a Parameter with an extra attribute"
    yield "parameter with state", {"p": tagged}

    linear = torch.nn.Linear(4, 2)
    optimizer = torch.optim.Adam(linear.parameters())
    linear(torch.randn(1, 4)).sum().backward()
    optimizer.step()
    yield (
        "training checkpoint",
        {
            "model": linear.state_dict(),
            "optimizer": optimizer.state_dict(),
            "epoch": 3,
            "loss": np.float64(0.25),
            "numpy_rng": np.random.default_rng(0).bit_generator.state,
            "legacy_numpy_rng": np.random.RandomState(0).get_state(),
            "torch_rng": torch.get_rng_state(),
            "history": np.arange(5, dtype=np.float32),
            "args": {"lr": 1e-3, "betas": (0.9, 0.999), "name": "run", "tags": {"a", "b"}, "blob": b"\x00\x01"},
            "frozen": frozenset({1, 2}),
            "buffer": bytearray(b"ab"),
            "complex": complex(1, 2),
            "dtype": torch.float16,
            "device": torch.device("cpu"),
            "size": torch.Size([2, 3]),
        },
    )


def derive(quick: bool) -> dict[Global, bool]:
    import joblib
    import numpy as np
    import torch

    emitted: dict[Global, bool] = {}

    def merge(found: dict[Global, bool]) -> None:
        for g, called in found.items():
            emitted[g] = emitted.get(g, False) or called

    for label, obj in checkpoints(quick):
        for protocol in (2, 3, 4, 5):
            buffer = io.BytesIO()
            torch.save(obj, buffer, pickle_protocol=protocol)
            for data in zip_pickles(buffer.getvalue()):
                merge(pickle_globals(data))
            if label != "every dtype":  # the legacy format has no storage class for the newer dtypes
                buffer = io.BytesIO()
                torch.save(obj, buffer, pickle_protocol=protocol, _use_new_zipfile_serialization=False)
                for data in legacy_pickles(buffer.getvalue()):
                    merge(pickle_globals(data))
        print(f"  {label}: {len(emitted)} globals so far", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "arrays.joblib"
        joblib.dump({"w": np.ones((3, 4), dtype=np.float32), "b": np.arange(3)}, path)
        raw = path.read_bytes()
    # joblib's raw array bytes follow the first wrapper's BUILD; its opcodes up to there name its globals.
    merge(pickle_globals(ops_until_error(raw)))
    return emitted


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny GPT-2 (seconds) instead of the 124M one")
    args = parser.parse_args(argv)
    from airlock.scan.allowlist import ALLOWED_GLOBALS, Role

    emitted = derive(args.quick)
    missing = sorted(g for g in emitted if g not in ALLOWED_GLOBALS)
    wrongly_ref = sorted(g for g, called in emitted.items() if called and ALLOWED_GLOBALS.get(g) is Role.REF)
    unused = sorted(g for g in ALLOWED_GLOBALS if g not in emitted)
    print("derived globals (called = REDUCE/NEWOBJ/INST target):")
    for (module, name), called in sorted(emitted.items()):
        print(f"  {module}.{name}  {'call' if called else 'ref'}")
    print(f"allowlisted but not emitted by this run ({len(unused)}): {', '.join(f'{m}.{n}' for m, n in unused)}")
    if missing or wrongly_ref:
        print(f"MISSING from the allowlist: {missing}; called but marked ref: {wrongly_ref}")
        return 1
    print(f"OK: all {len(emitted)} emitted globals are allowlisted with the right role")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "include"))
    raise SystemExit(main())
