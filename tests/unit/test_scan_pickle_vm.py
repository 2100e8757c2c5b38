"""The symbolic pickle machine: resolution of globals, memo and STACK_GLOBAL tricks, roles, probing."""

from __future__ import annotations

import io
import os
import pickle
import sys
from collections import OrderedDict
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from airlock.scan.pickle_vm import probe_pickle, resolves_a_global, walk_pickle
from scan_corpus import bu, glob, sbu


def rules(data: bytes) -> set[str]:
    return {h.rule for h in walk_pickle(data).hits}


def test_plain_data_pickles_have_no_findings() -> None:
    # bytes, sets and frozensets use allowlisted globals below protocol 3/4; nothing else does
    value = {"a": [1, 2.5, "x", b"y" * 10_000, None, True], "b": (1, (2, 3)), "c": {1, 2}, "d": frozenset({3})}
    for protocol in range(6):
        walk = walk_pickle(pickle.dumps(value, protocol=protocol))
        assert walk.complete and not walk.hits, protocol
        assert {g.key for g in walk.globals} <= {("_codecs", "encode"), ("builtins", "set"), ("builtins", "frozenset")}


def test_python2_names_are_mapped_like_find_class_does() -> None:
    # protocol 2 writes builtins.set as __builtin__.set; the unpickler maps it back below protocol 3
    walk = walk_pickle(pickle.dumps({1, 2}, protocol=2))
    assert [g.key for g in walk.globals] == [("builtins", "set")] and not walk.hits
    walk = walk_pickle(b"\x80\x02" + glob("__builtin__", "eval") + b".")
    assert [g.key for g in walk.globals] == [("builtins", "eval")]
    assert rules(b"\x80\x02" + glob("__builtin__", "eval") + b".") == {"pickle.global.disallowed"}


def test_ordered_dict_state_dict_is_clean() -> None:
    walk = walk_pickle(pickle.dumps(OrderedDict(a=1), protocol=2))
    assert walk.complete and not walk.hits


def test_stack_global_resolves_through_the_memo() -> None:
    data = b"\x80\x04" + sbu("os") + b"\x94" + sbu("system") + b"\x94" + b"00" + b"h\x00h\x01\x93."
    walk = walk_pickle(data)
    assert [g.dotted for g in walk.globals] == ["os.system"]
    (hit,) = walk.hits
    assert hit.rule == "pickle.global.disallowed" and "os.system" in hit.detail and hit.offset == data.index(b"\x93")


def test_memo_missing_and_non_string_operands_block() -> None:
    assert "pickle.memo.missing" in rules(b"\x80\x04" + sbu("os") + b"h\x09\x93.")
    assert rules(b"\x80\x04K\x01" + sbu("system") + b"\x93.") == {"pickle.global.unresolved"}


def test_calls_must_target_allowlisted_callables() -> None:
    # torch.FloatStorage is only ever a value in checkpoints: calling it blocks
    assert rules(b"\x80\x02" + glob("torch", "FloatStorage") + b"(K\x10tR.") == {"pickle.global.not_callable"}
    # calling the result of a call
    assert rules(b"\x80\x02" + glob("collections", "OrderedDict") + b")R)R.") == {"pickle.call.non_global"}
    # BUILD on a class sets class attributes
    assert rules(b"\x80\x02" + glob("collections", "OrderedDict") + b"}b.") == {"pickle.build.target"}
    # SETITEM into a class
    assert "pickle.build.target" in rules(b"\x80\x02" + glob("torch", "Size") + sbu("k") + b"Ns.")


def test_malformed_streams_report_where() -> None:
    for data, offset in (
        (b"\x80\x02]\xff.", 3),
        (b"\x80\x02]", 3),
        (b"\x80\x09.", 0),
        (b"\x80\x02X\xff\x00\x00\x00ab.", 2),
    ):
        walk = walk_pickle(data)
        assert not walk.complete and walk.error is not None and walk.error.offset == offset, data


def test_inst_without_a_mark_imports_only_in_the_pure_python_unpickler() -> None:
    walk = walk_pickle(b"ios\nsystem\n.", joblib=False, python=False)
    assert not walk.complete and not walk.globals  # the C unpickler fails before find_class
    walk = walk_pickle(b"ios\nsystem\n.")  # joblib's pickle._Unpickler imports, then misses the MARK
    assert not walk.complete and [g.dotted for g in walk.globals] == ["os.system"]


@pytest.mark.parametrize(
    "text",
    [b"Lorem ipsum dolor\n", b"import os\nos.system('x')\n", b"(c) 2024 Example\n", b"cats and dogs\n",
     b"little\n", b"c\nos\nsystem\n", b"N.B. see the model card\n", b"0123456789", b"Copyright 2024\n", b"MIT License\n", b"]\x00\x00\x80"],
)  # fmt: skip
def test_text_is_not_mistaken_for_a_pickle(text: bytes) -> None:
    assert not probe_pickle(text)


def test_protocol0_pickles_are_found_without_a_header() -> None:
    assert probe_pickle(b"cos\nsystem\n(S'x'\ntR.")
    assert probe_pickle(pickle.dumps({"a": 1}, protocol=0))
    assert probe_pickle(b"cos\nsystem\n")  # truncated, but the import already happened
    # Text that spells GLOBAL + two identifiers would make pickle.load import a module: a pickle.
    assert probe_pickle(b"cats\ndogs\n")
    # A data-only pickle is a pickle when pickles fill the file (a second one may import globals).
    assert probe_pickle(b"N." + b"cos\nsystem\n(S'x'\ntR.")
    assert probe_pickle(b"N.N.")


def test_random_tensor_bytes_are_not_pickles() -> None:
    rng = __import__("random").Random(7)
    for _ in range(2000):
        data = bytes([0x80, 0x02]) + rng.randbytes(64)
        assert not resolves_a_global(data, 0, len(data))


def test_joblib_arrays_are_skipped_and_object_arrays_walked(tmp_path: Path) -> None:
    import joblib
    import numpy as np

    path = tmp_path / "a.joblib"
    joblib.dump({"w": np.ones((50, 7), dtype=np.float32), "o": np.array([1, "x"], dtype=object), "n": 1}, path)
    raw = path.read_bytes()
    walk = walk_pickle(raw)
    assert walk.complete and walk.end == len(raw) and walk.uses_joblib
    assert not walk.hits and len(walk.nested) == 1 and walk.nested[0].complete
    opcode_bytes = sum(b - a for a, b in walk.segments)
    assert opcode_bytes < len(raw) - 50 * 7 * 4  # the raw float32 array is not treated as opcodes


def test_joblib_truncated_array_is_malformed(tmp_path: Path) -> None:
    import joblib
    import numpy as np

    path = tmp_path / "a.joblib"
    joblib.dump(np.ones(100), path)
    walk = walk_pickle(path.read_bytes()[:-300])
    assert not walk.complete and walk.error is not None and walk.error.truncated


def test_findings_are_capped_per_stream() -> None:
    data = b"\x80\x02(" + b"".join(glob("os", f"f{i}") for i in range(80)) + b"t."
    walk = walk_pickle(data)
    assert len(walk.hits) == 50 and walk.suppressed_hits == 30


def test_no_payload_ever_runs() -> None:
    marker = "/tmp/airlock-vm-marker"
    if os.path.exists(marker):
        os.remove(marker)
    walk_pickle(b"\x80\x02" + glob("os", "system") + b"(" + bu(f"touch {marker}") + b"tR.")
    walk_pickle(io.BytesIO(b"").getvalue() + b"cos\nsystem\n(S'touch " + marker.encode() + b"'\ntR.")
    assert not os.path.exists(marker)
