"""Risk-tier policy: the one place that says how strict each tier is.

The policy is data. Every stage reads its part from here (quarantine limits,
what a drop must carry, what scanning accepts, who must approve) and reports
include the policy they applied, so a verdict can always be explained.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Literal

from airlock.errors import ConfigurationError

GiB = 1024**3


class RiskTier(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


FindingAction = Literal["allow", "flag", "block"]


@dataclass(frozen=True)
class TierPolicy:
    tier: RiskTier
    # Quarantine: checked against the source listing before a byte is downloaded.
    max_files: int
    max_total_bytes: int
    max_file_bytes: int
    # S3/file drops: must the drop carry a vendor manifest (SHA256SUMS or a model_signing bundle)?
    require_vendor_manifest: bool
    # Scanning.
    allow_pickle_weights: bool  # clean (allowlisted) pickle-based weights: PyTorch zip/legacy, joblib, npy
    remote_code: FindingAction  # auto_map / custom classes / .py, .so, shell, notebooks in the repo
    unknown_binary: FindingAction  # a file whose format Airlock cannot identify by content
    scan_time_budget_s: float
    scan_byte_budget: int
    # Model formats (by content) accepted besides pickle-based ones, which `allow_pickle_weights` governs.
    allowed_model_formats: tuple[str, ...]
    # Torch-loadable container oddities (zip name mismatch, flipped flags, bad CRC, a name that lies
    # about the content): never produced by real writers, used by scanner-bypass tricks.
    container_anomaly: FindingAction
    # Archives (zip, tar, gzip, ...): nesting depth, members and bytes expanded per top-level file.
    max_archive_depth: int
    max_archive_members: int
    max_archive_expanded_bytes: int
    # Bytes after the last tensor of a safetensors file (the safetensors library itself accepts none).
    safetensors_max_trailing_bytes: int
    # Review: must a human approve in the Airflow UI before signing?
    requires_approval: bool

    def to_json_dict(self) -> dict:
        return {**asdict(self), "tier": self.tier.value}


POLICIES: dict[RiskTier, TierPolicy] = {
    RiskTier.LOW: TierPolicy(
        tier=RiskTier.LOW,
        max_files=10_000,
        max_total_bytes=1024 * GiB,
        max_file_bytes=200 * GiB,
        require_vendor_manifest=False,
        allow_pickle_weights=True,
        remote_code="flag",
        unknown_binary="flag",
        scan_time_budget_s=3600,
        scan_byte_budget=1024 * GiB,
        allowed_model_formats=("safetensors", "gguf", "onnx", "numpy", "numpy_npz", "keras", "tf_savedmodel"),
        container_anomaly="block",
        max_archive_depth=4,
        max_archive_members=100_000,
        max_archive_expanded_bytes=256 * GiB,
        safetensors_max_trailing_bytes=0,
        requires_approval=False,
    ),
    RiskTier.MEDIUM: TierPolicy(
        tier=RiskTier.MEDIUM,
        max_files=5_000,
        max_total_bytes=512 * GiB,
        max_file_bytes=100 * GiB,
        require_vendor_manifest=False,
        allow_pickle_weights=True,
        remote_code="flag",
        unknown_binary="flag",
        scan_time_budget_s=3600,
        scan_byte_budget=512 * GiB,
        allowed_model_formats=("safetensors", "gguf", "onnx", "numpy", "numpy_npz", "keras", "tf_savedmodel"),
        container_anomaly="block",
        max_archive_depth=4,
        max_archive_members=50_000,
        max_archive_expanded_bytes=128 * GiB,
        safetensors_max_trailing_bytes=0,
        requires_approval=False,
    ),
    RiskTier.HIGH: TierPolicy(
        tier=RiskTier.HIGH,
        max_files=2_000,
        max_total_bytes=512 * GiB,
        max_file_bytes=100 * GiB,
        require_vendor_manifest=True,
        allow_pickle_weights=False,
        remote_code="block",
        unknown_binary="block",
        scan_time_budget_s=3600,
        scan_byte_budget=512 * GiB,
        allowed_model_formats=("safetensors", "gguf", "onnx"),
        container_anomaly="block",
        max_archive_depth=3,
        max_archive_members=20_000,
        max_archive_expanded_bytes=128 * GiB,
        safetensors_max_trailing_bytes=0,
        requires_approval=True,
    ),
    RiskTier.CRITICAL: TierPolicy(
        tier=RiskTier.CRITICAL,
        max_files=1_000,
        max_total_bytes=256 * GiB,
        max_file_bytes=100 * GiB,
        require_vendor_manifest=True,
        allow_pickle_weights=False,
        remote_code="block",
        unknown_binary="block",
        scan_time_budget_s=3600,
        scan_byte_budget=256 * GiB,
        allowed_model_formats=("safetensors", "gguf", "onnx"),
        container_anomaly="block",
        max_archive_depth=3,
        max_archive_members=10_000,
        max_archive_expanded_bytes=64 * GiB,
        safetensors_max_trailing_bytes=0,
        requires_approval=True,
    ),
}


def tier_rank(tier: str | RiskTier) -> int:
    """low < medium < high < critical."""
    return list(RiskTier).index(RiskTier(tier))


# --------------------------------------------------------------------------- run parameters
#
# One pattern per DAG parameter, used both as the Param's JSON-schema pattern (checked when a run is
# triggered) and by the library with re.search (checked again by the first task). The end anchor is a
# lookahead, not "$": in Python's re (which jsonschema uses) "$" also matches before a trailing newline,
# so "demo/tiny-gpt2\n" would pass; "(?![\s\S])" means "no character follows" in Python and ECMAScript.
END = r"(?![\s\S])"
_SEGMENT = r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}"
REGISTRY_NAME_PATTERN = rf"^{_SEGMENT}/{_SEGMENT}{END}"
REVISION_PATTERN = rf"^[A-Za-z0-9._/:-]{{1,255}}{END}"
# Printable and plain: letters, digits, inner spaces, '.', '@', '-' (no newline, no Markdown or HTML control).
OWNER_PATTERN = rf"^[A-Za-z0-9](?:[A-Za-z0-9 .@-]{{0,126}}[A-Za-z0-9])?{END}"
SOURCE_PATTERN = (
    r"^(hf://[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*(@[A-Za-z0-9._/-]+)?"
    r"|s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[^?#\x00-\x1f\x7f]*)?(\?version=sha256:[0-9a-f]{64})?"
    r"|file:///[^?#\x00-\x1f\x7f]*(\?version=sha256:[0-9a-f]{64})?)" + END
)


def policy_for(tier: str | RiskTier) -> TierPolicy:
    """The policy of ``tier``; an unknown tier is a configuration error, never a default."""
    try:
        return POLICIES[RiskTier(tier)]
    except ValueError:
        allowed = ", ".join(t.value for t in RiskTier)
        raise ConfigurationError(f"risk tier {tier!r} is not one of: {allowed}") from None
