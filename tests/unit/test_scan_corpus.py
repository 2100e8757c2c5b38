"""Every malicious case in the corpus blocks at every tier; every benign case is allowed.

The corpus (tests/unit/scan_corpus.py) is built into a temporary directory by the tests; no
payload is ever loaded, and the marker file a payload would create must never appear.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import scan_corpus
from airlock.scan import EXIT_ALLOWED, EXIT_BLOCKED, ScanReport, scan_model

TIERS = ("low", "medium", "high", "critical")
# What high/critical accept: non-executable weight formats, tokenizers, docs.
BENIGN_AT_HIGH = {
    "transformers_safetensors_repo", "safetensors_plain", "tokenizer_files", "gguf_plain", "onnx_plain",
    "onnx_external_data", "sentencepiece", "tar_of_safetensors", "readme_and_license",
}  # fmt: skip
POLICY_RULES = {"policy.pickle_weights", "policy.format_not_allowed"}


@pytest.fixture(scope="session")
def malicious(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return scan_corpus.build_malicious(tmp_path_factory.mktemp("malicious"))


@pytest.fixture(scope="session")
def benign(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return scan_corpus.build_benign(tmp_path_factory.mktemp("benign"))


@pytest.fixture(autouse=True, scope="module")
def no_marker() -> object:
    if os.path.exists(scan_corpus.MARKER):
        os.remove(scan_corpus.MARKER)
    yield
    assert not os.path.exists(scan_corpus.MARKER), "a payload ran: the scanner loaded something"


def test_corpus_covers_the_issue(malicious: dict[str, Path], benign: dict[str, Path]) -> None:
    required = {
        "pickle/reduce_os_system", "pickle/reduce_subprocess_popen", "pickle/reduce_builtins_exec",
        "pickle/reduce_builtins_eval", "torchzip/nonstandard_member_name", "torchzip/name_mismatch",
        "torchzip/flag_bits", "torchzip/bad_crc", "hidden/plain_pickle_named_bin", "hidden/plain_pickle_named_pt",
        "pickle/submodule_pip_internal", "pickle/stack_global_binstring", "pickle/memo_missing_slot",
        "pickle/memo_non_string", "pickle/pip_main", "pickle/pkgutil_resolve_name", "pickle/pydoc_locate_methodcaller",
        "pickle/functools_partial", "pickle/cprofile_run", "pickle/profile_run", "pickle/trace_run",
        "pickle/code_interactive_interpreter", "pickle/timeit_timeit", "pickle/ctypes_cdll", "pickle/marshal_loads",
        "pickle/types_codetype", "pickle/logging_filehandler", "pickle/io_fileio", "hidden/npy_object",
        "hidden/joblib", "hidden/extensionless", "hidden/named_safetensors", "safetensors/length_beyond_file",
        "safetensors/length_2_40", "safetensors/overlapping_offsets", "safetensors/non_json_header",
    }  # fmt: skip
    assert required <= set(malicious)
    assert {"torch_zip_gpt2_state_dict_p2", "torch_legacy_gpt2_state_dict_p2", "numpy_npy_float", "numpy_npz",
            "transformers_safetensors_repo", "tokenizer_files"} <= set(benign)  # fmt: skip


@pytest.mark.parametrize("tier", TIERS)
def test_every_malicious_case_blocks(malicious: dict[str, Path], tier: str) -> None:
    not_blocked = {}
    for name, path in malicious.items():
        report = scan_model(path, tier)
        # Blocked for what it is, not merely because the tier refuses pickles.
        reasons = {f.rule for _, f in report.findings("block")} - POLICY_RULES
        if report.exit_code != EXIT_BLOCKED or not reasons:
            not_blocked[name] = [(f.rule, f.action) for _, f in report.findings()] or report.errors
    assert not not_blocked, not_blocked


def test_every_blocking_finding_names_file_and_rule(malicious: dict[str, Path]) -> None:
    for path in malicious.values():
        report = scan_model(path, "low")
        for file_path, finding in report.findings("block"):
            assert file_path and finding.rule and finding.detail
            assert file_path.split("/")[-1] in finding.detail, (file_path, finding.detail)


@pytest.mark.parametrize("tier", ("low", "medium"))
def test_every_benign_case_is_allowed_without_approval(benign: dict[str, Path], tier: str) -> None:
    refused = {}
    for name, path in benign.items():
        report = scan_model(path, tier)
        if report.exit_code != EXIT_ALLOWED or report.requires_approval:
            refused[name] = [(f.rule, f.detail) for _, f in report.findings("block", "flag")] or report.errors
    assert not refused, refused


@pytest.mark.parametrize("tier", ("high", "critical"))
def test_high_tiers_accept_only_non_executable_formats(benign: dict[str, Path], tier: str) -> None:
    for name, path in benign.items():
        report = scan_model(path, tier)
        if name in BENIGN_AT_HIGH:
            assert report.verdict == "allow", (name, [f.detail for _, f in report.findings("block")])
        else:
            assert report.verdict == "block", name
            assert {f.rule for _, f in report.findings("block")} <= POLICY_RULES, name


def test_zip_anomalies_are_findings_and_the_pickle_is_still_scanned(malicious: dict[str, Path]) -> None:
    expected = {"torchzip/name_mismatch": "zip.name_mismatch", "torchzip/flag_bits": "zip.flag_bits",
                "torchzip/bad_crc": "zip.bad_crc"}  # fmt: skip
    for case, rule in expected.items():
        rules = {f.rule for _, f in scan_model(malicious[case], "low").findings()}
        assert rule in rules and "pickle.global.disallowed" in rules, (case, rules)


def test_picklescan_gives_an_independent_opinion(malicious: dict[str, Path]) -> None:
    report = scan_model(malicious["pickle/reduce_os_system"], "low")
    assert {"pickle.global.disallowed", "picklescan.dangerous_global"} <= {f.rule for _, f in report.findings()}
    assert report.scanners["picklescan"] == "1.0.5"


def test_report_lists_formats_members_and_policy(benign: dict[str, Path]) -> None:
    report = scan_model(benign["torch_zip_gpt2_state_dict_p2"], "medium")
    (file,) = report.files
    assert file.detected_format == "pytorch_zip"
    formats = {m.path.rsplit("/", 1)[-1]: m.detected_format for m in file.members}
    assert formats["data.pkl"] == "pickle" and formats["0"] == "tensor_data"
    data = report.to_json_dict()
    assert data["schema"] == "airlock.scan-report/v1" and data["verdict"] == "allow"
    assert data["policy"]["tier"] == "medium" and data["policy"]["allow_pickle_weights"] is True
    assert set(data["files"][0]) >= {"path", "detected_format", "findings"}
    assert ScanReport.model_validate(data).to_json_dict() == data  # the JSON round-trips
    legacy = scan_model(benign["torch_legacy_gpt2_state_dict_p2"], "medium")
    assert legacy.files[0].detected_format == "pytorch_legacy"
    assert scan_model(benign["joblib_arrays"], "medium").files[0].detected_format == "joblib"
