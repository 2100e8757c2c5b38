"""Format scanners and the scan's fail-closed behaviour: budgets, errors, unknown content, tiers."""

from __future__ import annotations

import gzip
import io
import json
import os
import struct
import sys
import time
import zipfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from airlock.scan import EXIT_BLOCKED, EXIT_COULD_NOT_SCAN, ScanTargetError, scan_model
from airlock.scan import scanner as scanner_module
from scan_corpus import gguf_bytes, onnx_model, safetensors_bytes, tar_bytes, torch_zip, write


def rules(report, *actions: str) -> set[str]:
    return {f.rule for _, f in report.findings(*actions)}


# --------------------------------------------------------------------------- safetensors


def test_safetensors_scan_is_o_header_not_o_file(tmp_path: Path) -> None:
    """A 64 GiB (sparse) file scans in milliseconds: only the header is read."""
    size = 64 << 30
    header = json.dumps({"w": {"dtype": "BF16", "shape": [size // 2], "data_offsets": [0, size]}}).encode()
    header += b" " * (-len(header) % 8)
    path = tmp_path / "model.safetensors"
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)) + header)
        f.truncate(8 + len(header) + size)
    start = time.perf_counter()
    report = scan_model(path, "critical")
    assert report.verdict == "allow", report.summary_lines()
    assert time.perf_counter() - start < 1.0


@pytest.mark.parametrize(
    ("header", "data", "rule"),
    [
        ({"w": {"dtype": "Q4", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8, "safetensors.tensor"),
        ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8], "x": 1}}, b"\0" * 8, "safetensors.tensor"),
        ({"w": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, b"\0" * 8, "safetensors.tensor"),
        ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 16]}}, b"\0" * 8, "safetensors.tensor"),
        ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}, b"\0" * 16, "safetensors.overlap"),
        ({"__metadata__": {"a": 1}, "w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8,
         "safetensors.header"),
        ([1, 2], b"", "format.mismatch"),  # not even shaped like safetensors: the name lies
    ],
)  # fmt: skip
def test_safetensors_header_rules(tmp_path: Path, header: object, data: bytes, rule: str) -> None:
    raw = json.dumps(header).encode()
    path = write(tmp_path, "m.safetensors", struct.pack("<Q", len(raw)) + raw + data)
    report = scan_model(path, "low")
    assert report.verdict == "block" and rule in rules(report, "block"), report.summary_lines()


def test_safetensors_sub_byte_and_empty_tensors(tmp_path: Path) -> None:
    header = {
        "a": {"dtype": "F4", "shape": [4], "data_offsets": [0, 2]},
        "e": {"dtype": "F32", "shape": [0], "data_offsets": [2, 2]},
        "b": {"dtype": "BF16", "shape": [1, 3], "data_offsets": [2, 8]},
    }
    assert scan_model(write(tmp_path, "m.safetensors", safetensors_bytes(header, b"\0" * 8)), "high").verdict == "allow"


# --------------------------------------------------------------------------- gguf / templates


@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: b[:40],  # truncated metadata
        lambda b: b[:4] + struct.pack("<I", 1) + b[8:],  # version 1
        lambda b: b[:16] + struct.pack("<Q", 1 << 40) + b[24:],  # absurd metadata count
        lambda b: b[:24] + struct.pack("<Q", 1 << 60) + b[32:],  # string length past the end
        lambda b: b[: len(b) - 40],  # tensor data missing
    ],
)
def test_gguf_malformed_blocks(tmp_path: Path, mutate) -> None:
    path = write(tmp_path, "m.gguf", mutate(gguf_bytes({"general.name": "x"}, tensors=2)))
    assert "gguf.malformed" in rules(scan_model(path, "low"), "block")


@pytest.mark.parametrize(
    "template",
    [
        "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
        "{{ ''['__cla' ~ 'ss__'] }}",
        "{% for c in [].__class__.__base__.__subclasses__() %}{% endfor %}",
        "{{ self._TemplateReference__context }}",
        "{{ x['\\x5f\\x5fglobals\\x5f\\x5f'] }}",
        "{% if %}",
    ],
)
def test_chat_templates_reaching_python_block(tmp_path: Path, template: str) -> None:
    path = write(tmp_path, "tokenizer_config.json", json.dumps({"chat_template": template}))
    assert rules(scan_model(path, "low"), "block") & {"template.python_internals", "template.unparsable"}


# --------------------------------------------------------------------------- containers


def test_deflated_members_are_read_and_depth_is_bounded(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("notes.txt", b"hello " * (2 << 20))  # 12 MiB: spooled to disk, not held in memory
    report = scan_model(write(tmp_path, "a/notes.zip", buffer.getvalue()), "low")
    assert report.verdict == "allow" and not report.requires_approval
    assert [m.detected_format for m in report.files[0].members] == ["text"]
    nested = b"payload"
    for i in range(8):
        nested = torch_zip([(f"level{i}.zip" if i else "x.txt", nested)])
    report = scan_model(write(tmp_path, "b/nested.zip", nested), "low")
    assert "archive.too_deep" in rules(report, "block")


def test_expanded_bytes_over_policy_block(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dataclasses import replace

    from airlock import policy as policy_module

    low = policy_module.POLICIES[policy_module.RiskTier.LOW]
    monkeypatch.setitem(
        policy_module.POLICIES, policy_module.RiskTier.LOW, replace(low, max_archive_expanded_bytes=1 << 20)
    )
    path = write(tmp_path, "big.gz", gzip.compress(b"\0" * (4 << 20)))
    assert "archive.too_large" in rules(scan_model(path, "low"), "block")


def test_tar_members_are_scanned_and_legacy_torch_tar_refused(tmp_path: Path) -> None:
    ok = write(tmp_path, "a/ok.tar", tar_bytes([("README.md", b"# hi\n")]))
    assert scan_model(ok, "low").verdict == "allow"
    legacy = write(tmp_path, "b/old.tar", tar_bytes([(n, b"x") for n in ("sys_info", "pickle", "tensors", "storages")]))
    assert "torch.legacy_tar" in rules(scan_model(legacy, "low"), "block")


def test_unscannable_archives_and_unknown_binaries_follow_the_tier(tmp_path: Path) -> None:
    seven = write(tmp_path, "a/weights.7z", b"7z\xbc\xaf\x27\x1c" + os.urandom(64))
    blob = write(tmp_path, "b/weights.dat", b"\x00\x01\x02\xfe" + bytes(range(256)))
    for path, rule in ((seven, "archive.unscannable"), (blob, "format.unknown")):
        medium = scan_model(path, "medium")
        assert medium.verdict == "allow" and medium.requires_approval and rule in rules(medium, "flag")
        assert rule in rules(scan_model(path, "high"), "block")


def test_hdf5_is_unscannable_and_follows_the_tier(tmp_path: Path) -> None:
    path = write(tmp_path, "tf_model.h5", b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    medium = scan_model(path, "medium")
    assert medium.requires_approval and "hdf5.unscannable" in rules(medium, "flag")
    assert scan_model(path, "high").verdict == "block"


# --------------------------------------------------------------------------- onnx / remote code


def test_onnx_custom_domain_is_external_code(tmp_path: Path) -> None:
    path = write(tmp_path, "model.onnx", onnx_model(op_type="MyOp", domain="com.example.ops"))
    medium = scan_model(path, "medium")
    assert medium.requires_approval and "onnx.custom_domain" in rules(medium, "flag")
    assert "onnx.custom_domain" in rules(scan_model(path, "high"), "block")


def test_native_code_and_scripts_are_remote_code(tmp_path: Path) -> None:
    write(tmp_path, "lib/ops.so", b"\x7fELF" + b"\0" * 60)
    write(tmp_path, "setup", "#!/bin/sh\necho hi\n")
    write(tmp_path, "demo.ipynb", json.dumps({"cells": [], "nbformat": 4}))
    write(tmp_path, "model.safetensors", safetensors_bytes({}))
    medium = scan_model(tmp_path, "medium")
    assert medium.verdict == "allow" and medium.requires_approval
    flagged = {path for path, f in medium.findings("flag") if f.rule == "remote_code.file"}
    assert flagged == {"lib/ops.so", "setup", "demo.ipynb"}
    assert scan_model(tmp_path, "critical").verdict == "block"


# --------------------------------------------------------------------------- fail closed


def test_time_budget_blocks_every_file(tmp_path: Path) -> None:
    for i in range(3):
        write(tmp_path, f"f{i}.json", "{}")
    report = scan_model(tmp_path, "low", time_budget_s=-1)
    assert report.exit_code == EXIT_BLOCKED
    assert [sorted({f.rule for f in file.findings}) for file in report.files] == [
        ["scan.time_budget"],
        ["scan.not_scanned"],
        ["scan.not_scanned"],
    ]


def test_byte_budget_blocks(tmp_path: Path) -> None:
    write(tmp_path, "a.json", "{}" * 100)
    report = scan_model(tmp_path, "low", byte_budget=10)
    assert report.verdict == "block" and rules(report) == {"scan.byte_budget"}


def test_a_scanner_crash_is_exit_2_and_blocks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(ctx, blob):
        raise RuntimeError("scanner bug")

    monkeypatch.setitem(scanner_module.SCANNERS, "text", boom)
    report = scan_model(write(tmp_path, "README.md", "hello\n"), "low")
    assert report.exit_code == EXIT_COULD_NOT_SCAN and report.verdict == "block"
    assert report.errors[0].path == "README.md" and "scanner bug" in report.errors[0].detail


def test_symlinks_are_not_followed(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    os.symlink("/etc/passwd", tmp_path / "model" / "config.json")
    report = scan_model(tmp_path / "model", "low")
    assert "scan.special_file" in rules(report, "block")


def test_missing_target_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ScanTargetError):
        scan_model(tmp_path / "nope", "low")


def test_extension_claims_must_match_content(tmp_path: Path) -> None:
    report = scan_model(write(tmp_path, "weights.npy", safetensors_bytes({})), "low")
    assert "format.mismatch" in rules(report, "block")


def test_savedmodel_ops_and_components(tmp_path: Path) -> None:
    from scan_corpus import pb_field

    def savedmodel(op: str) -> bytes:
        node = pb_field(1, "n") + pb_field(2, op)
        return pb_field(1, 1) + pb_field(2, pb_field(2, pb_field(1, node)))

    write(tmp_path, "ok/saved_model.pb", savedmodel("MatMul"))
    write(tmp_path, "ok/variables/variables.data-00000-of-00001", os.urandom(256))
    write(tmp_path, "ok/variables/variables.index", os.urandom(64))
    report = scan_model(tmp_path / "ok", "medium")
    assert report.verdict == "allow" and not report.requires_approval, report.summary_lines()
    assert {f.path: f.detected_format for f in report.files}["variables/variables.index"] == "tf_savedmodel_component"
    assert scan_model(tmp_path / "ok", "high").verdict == "block"  # not a high-tier format
    write(tmp_path, "bad/saved_model.pb", savedmodel("ReadFile"))
    assert "tf.dangerous_op" in rules(scan_model(tmp_path / "bad", "low"), "block")


def test_scanning_policy_only_gets_stricter() -> None:
    from airlock.policy import POLICIES, RiskTier

    order = [POLICIES[t] for t in (RiskTier.LOW, RiskTier.MEDIUM, RiskTier.HIGH, RiskTier.CRITICAL)]
    for looser, stricter in zip(order, order[1:], strict=False):
        assert set(stricter.allowed_model_formats) <= set(looser.allowed_model_formats)
        assert stricter.max_archive_depth <= looser.max_archive_depth
        assert stricter.max_archive_members <= looser.max_archive_members
        assert stricter.max_archive_expanded_bytes <= looser.max_archive_expanded_bytes
        assert stricter.safetensors_max_trailing_bytes <= looser.safetensors_max_trailing_bytes
    for policy in order[2:]:
        assert set(policy.allowed_model_formats) == {"safetensors", "gguf", "onnx"}  # non-executable only
        assert policy.container_anomaly == "block"
