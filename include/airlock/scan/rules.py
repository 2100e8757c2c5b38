"""Every rule a scanner can report, with its severity and category, in one table.

Scanners emit :class:`Hit` (rule id, detail, where); :func:`action_for` turns the rule's
category into an action using the tier policy. Keeping the table here means a reviewer can
read every way Airlock can block a model in one screen, and a typo in a rule id fails fast.
"""

from __future__ import annotations

from dataclasses import dataclass

from airlock.policy import TierPolicy
from airlock.scan.report import Action, Category, Finding, Severity

C = Category
S = Severity


@dataclass(frozen=True)
class Rule:
    severity: Severity
    category: Category
    summary: str


RULES: dict[str, Rule] = {
    # Pickle opcode walker (pickle_scan.py).
    "pickle.global.disallowed": Rule(S.CRITICAL, C.CODE_EXECUTION, "a global outside the pickle allowlist"),
    "pickle.global.unresolved": Rule(S.CRITICAL, C.CODE_EXECUTION, "a global whose name cannot be determined"),
    "pickle.global.not_callable": Rule(S.HIGH, C.CODE_EXECUTION, "an allowlisted reference-only global is called"),
    "pickle.call.non_global": Rule(
        S.CRITICAL, C.CODE_EXECUTION, "a call on something other than an allowlisted global"
    ),
    "pickle.build.target": Rule(S.HIGH, C.CODE_EXECUTION, "BUILD/SETITEM on an object no allowlisted class made"),
    "pickle.ext": Rule(S.CRITICAL, C.CODE_EXECUTION, "EXT opcode: a global from the copyreg extension registry"),
    "pickle.memo.missing": Rule(S.HIGH, C.MALFORMED, "memo GET of an index never PUT (scanner-evasion trick)"),
    "pickle.malformed": Rule(S.HIGH, C.MALFORMED, "truncated or malformed pickle stream"),
    "pickle.too_many_findings": Rule(S.HIGH, C.CODE_EXECUTION, "findings beyond the per-stream cap"),
    "pickle.trailing_data": Rule(S.MEDIUM, C.UNKNOWN, "bytes after the last pickle that are not a pickle"),
    "pickle.reading_differs": Rule(
        S.CRITICAL, C.CODE_EXECUTION, "bytes joblib.load reads as array data are opcodes to pickle.load/torch.load"
    ),
    "pickle.frame_overrun": Rule(S.HIGH, C.MALFORMED, "STOP inside a FRAME: loaders resume at different offsets"),
    "picklescan.dangerous_global": Rule(S.CRITICAL, C.CODE_EXECUTION, "picklescan (second opinion) flags a global"),
    "picklescan.error": Rule(S.HIGH, C.MALFORMED, "picklescan (second opinion) could not parse the stream"),
    # PyTorch containers.
    "torch.legacy_tail": Rule(S.HIGH, C.MALFORMED, "legacy torch storage records do not match the pickles"),
    "torch.legacy_tar": Rule(S.HIGH, C.UNSUPPORTED, "torch's pre-1.0 tar checkpoint format"),
    "torch.storage_mismatch": Rule(S.HIGH, C.MALFORMED, "a storage record missing or of the wrong size"),
    "torch.torchscript": Rule(S.HIGH, C.REMOTE_CODE, "TorchScript archive: code run by the TorchScript interpreter"),
    "torch.no_data_pkl": Rule(S.HIGH, C.MALFORMED, "torch zip without the data.pkl torch.load would read"),
    # Zip / archives.
    # Two loaders (torch/miniz, numpy/zipfile, streaming readers) can read these zips differently:
    # MALFORMED, so they block at every tier whatever the policy says about container anomalies.
    "zip.name_mismatch": Rule(S.HIGH, C.MALFORMED, "member name read differently by different readers"),
    "zip.flag_bits": Rule(S.HIGH, C.CONTAINER_ANOMALY, "general-purpose flag bits no torch/numpy writer sets"),
    "zip.bad_crc": Rule(S.HIGH, C.MALFORMED, "member CRC-32 does not match its data (zipfile refuses, torch reads)"),
    "zip.header_mismatch": Rule(S.HIGH, C.MALFORMED, "local and central headers disagree"),
    "zip.duplicate_name": Rule(S.HIGH, C.MALFORMED, "two members share a name (exactly, by case, or in zipfile)"),
    "zip.overlap": Rule(S.HIGH, C.MALFORMED, "members or directory share bytes"),
    "zip.eocd_mismatch": Rule(S.CRITICAL, C.MALFORMED, "classic and zip64 end records (or entry counts) disagree"),
    "zip.multiple_eocd": Rule(S.CRITICAL, C.MALFORMED, "more than one end-of-central-directory record"),
    "zip.unaccounted_bytes": Rule(S.HIGH, C.MALFORMED, "bytes outside every member and the directory"),
    "zip.descriptor_mismatch": Rule(S.HIGH, C.MALFORMED, "data descriptor missing or disagreeing with the header"),
    "zip.malformed": Rule(S.HIGH, C.MALFORMED, "zip structure cannot be parsed"),
    "zip.unsupported_method": Rule(S.HIGH, C.MALFORMED, "member compression Airlock cannot read"),
    "archive.path_traversal": Rule(S.HIGH, C.CONTAINER_ANOMALY, "member path is absolute or escapes the archive"),
    "archive.link": Rule(S.HIGH, C.CONTAINER_ANOMALY, "link or device member"),
    "archive.too_deep": Rule(S.HIGH, C.BUDGET, "archives nested deeper than the policy allows"),
    "archive.too_many_members": Rule(S.HIGH, C.BUDGET, "more archive members than the policy allows"),
    "archive.too_large": Rule(S.HIGH, C.BUDGET, "archive expands beyond the policy limit"),
    "archive.malformed": Rule(S.HIGH, C.MALFORMED, "archive or compressed stream cannot be read"),
    "archive.unscannable": Rule(S.MEDIUM, C.UNKNOWN, "archive format Airlock cannot look inside"),
    # NumPy.
    "numpy.object_dtype": Rule(S.HIGH, C.CODE_EXECUTION, "object-dtype array: np.load needs allow_pickle=True"),
    "numpy.malformed": Rule(S.HIGH, C.MALFORMED, "npy header or data length invalid"),
    "joblib.uncertain_layout": Rule(
        S.HIGH, C.MALFORMED, "joblib array whose dtype, shape, object-ness or byte count is not certain"
    ),
    "joblib.zfile_malformed": Rule(S.HIGH, C.MALFORMED, "joblib 'ZF' legacy file whose header or data is invalid"),
    # Loader dispatch (readings.py): what torch.load, np.load, joblib.load and pickle.load would open.
    "format.ambiguous": Rule(S.CRITICAL, C.MALFORMED, "loaders read the same bytes as different formats"),
    "archive.undecodable": Rule(S.HIGH, C.UNSUPPORTED, "a loader would decompress it with a codec Airlock lacks"),
    # safetensors.
    "safetensors.header": Rule(S.HIGH, C.MALFORMED, "safetensors header invalid"),
    "safetensors.tensor": Rule(S.HIGH, C.MALFORMED, "safetensors tensor entry invalid"),
    "safetensors.overlap": Rule(S.HIGH, C.MALFORMED, "safetensors tensors overlap or leave gaps"),
    "safetensors.trailing_data": Rule(S.HIGH, C.MALFORMED, "bytes after the last tensor beyond policy"),
    # GGUF and chat templates.
    "gguf.malformed": Rule(S.HIGH, C.MALFORMED, "GGUF header, metadata or tensor table invalid"),
    "template.python_internals": Rule(S.CRITICAL, C.CODE_EXECUTION, "Jinja template reaches Python internals"),
    "template.not_allowlisted": Rule(
        S.HIGH, C.REMOTE_CODE, "chat template uses Jinja outside the allowlist (e.g. a computed subscript key)"
    ),
    "template.unparsable": Rule(S.HIGH, C.MALFORMED, "chat template is not valid Jinja"),
    "json.duplicate_key": Rule(S.HIGH, C.MALFORMED, "a JSON object repeats a key with different values"),
    # Keras / HDF5 / TensorFlow / ONNX.
    "keras.lambda_layer": Rule(S.CRITICAL, C.CODE_EXECUTION, "Keras Lambda layer (serialized Python code)"),
    "keras.custom_object": Rule(S.MEDIUM, C.REMOTE_CODE, "Keras layer class outside Keras (needs user code)"),
    "keras.malformed": Rule(S.HIGH, C.MALFORMED, "Keras config cannot be parsed"),
    "hdf5.unscannable": Rule(S.MEDIUM, C.UNKNOWN, "HDF5 file not parsed (h5py is not installed)"),
    "tf.dangerous_op": Rule(S.CRITICAL, C.CODE_EXECUTION, "TensorFlow graph op with file/process/python access"),
    "tf.malformed": Rule(S.HIGH, C.MALFORMED, "SavedModel protobuf cannot be parsed"),
    "onnx.custom_domain": Rule(S.HIGH, C.REMOTE_CODE, "ONNX op from a custom domain (needs a custom-op library)"),
    "onnx.external_data": Rule(S.INFO, C.INFO, "ONNX tensor data stored in another file"),
    "onnx.external_path": Rule(S.HIGH, C.CODE_EXECUTION, "ONNX external data path escapes the model directory"),
    "onnx.malformed": Rule(S.HIGH, C.MALFORMED, "ONNX protobuf cannot be parsed"),
    # Remote code.
    "remote_code.auto_map": Rule(S.HIGH, C.REMOTE_CODE, "config maps Auto classes to code in the repo"),
    "remote_code.file": Rule(S.HIGH, C.REMOTE_CODE, "executable code shipped with the model"),
    # Formats and policy.
    "format.unknown": Rule(S.MEDIUM, C.UNKNOWN, "content matches no format Airlock knows"),
    "format.mismatch": Rule(S.HIGH, C.CONTAINER_ANOMALY, "the file name claims a format its content is not"),
    "policy.pickle_weights": Rule(S.HIGH, C.PICKLE_WEIGHTS, "pickle-based weights are not accepted at this tier"),
    "policy.format_not_allowed": Rule(S.HIGH, C.FORMAT_POLICY, "model format not accepted at this tier"),
    # The scan itself.
    "scan.time_budget": Rule(S.HIGH, C.BUDGET, "scan time budget exceeded"),
    "scan.byte_budget": Rule(S.HIGH, C.BUDGET, "scan byte budget exceeded"),
    "scan.not_scanned": Rule(S.HIGH, C.BUDGET, "file not scanned because the budget ran out"),
    "scan.special_file": Rule(S.HIGH, C.CONTAINER_ANOMALY, "symlink, device or other non-regular file"),
    "scan.error": Rule(S.HIGH, C.MALFORMED, "the scanner failed on this file"),
}

_ALWAYS_BLOCK = {C.CODE_EXECUTION, C.MALFORMED, C.UNSUPPORTED, C.BUDGET}


@dataclass(frozen=True)
class Hit:
    """What a scanner saw: a rule id, a detail naming the offending global/member/offset, and where."""

    rule: str
    detail: str
    member: str | None = None
    offset: int | None = None

    def __post_init__(self) -> None:
        if self.rule not in RULES:  # a typo must not silently become an unknown, non-blocking rule
            raise KeyError(f"unknown scan rule {self.rule!r}")


def action_for(category: Category, policy: TierPolicy) -> Action:
    """The action ``policy`` takes for ``category``; categories not named in the policy fail closed."""
    if category in _ALWAYS_BLOCK:
        return "block"
    if category is C.PICKLE_WEIGHTS:
        return "allow" if policy.allow_pickle_weights else "block"
    if category is C.CONTAINER_ANOMALY:
        return policy.container_anomaly
    if category is C.REMOTE_CODE:
        return policy.remote_code
    if category is C.UNKNOWN:
        return policy.unknown_binary
    if category is C.FORMAT_POLICY:
        return "block"
    if category is C.INFO:
        return "allow"
    return "block"


def to_finding(hit: Hit, policy: TierPolicy) -> Finding:
    rule = RULES[hit.rule]
    return Finding(
        rule=hit.rule,
        severity=rule.severity,
        detail=hit.detail,
        category=rule.category,
        action=action_for(rule.category, policy),
        member=hit.member,
        offset=hit.offset,
    )
