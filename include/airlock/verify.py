"""Offline verification of a model directory against its ``model.sig``, with public keys only.

Order of checks (each failure has its own :class:`Failure` and a reason that
names the file, field or key):

1. the bundle parses (a truncated or reshaped file is ``malformed-bundle``),
   has the v0.3 media type and the in-toto payload type;
2. the key it names is in the trust store and not revoked;
3. the DSSE signature over the PAE verifies with that key;
4. the signed statement is an in-toto Statement v1 with the model-signing v1.0
   predicate, one subject, and a subject digest consistent with its resources;
5. the directory, re-hashed now, holds exactly the signed files with the signed
   digests: changed, missing, unexpected and renamed files are each reported.

Anything that goes wrong while checking (an unreadable file, a symlink) is a
failure, never a pass. There is deliberately no switch that skips any of this,
in production or otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TypeVar

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec

from airlock.bundle import (
    BUNDLE_MEDIA_TYPE,
    DEFAULT_IGNORE_PATHS,
    IN_TOTO_PAYLOAD_TYPE,
    BundleFormatError,
    FileDigest,
    PredicateTypeError,
    SignedManifest,
    StatementTypeError,
    ecdsa_hash_for,
    load_bundle,
    pae,
    parse_statement,
)
from airlock.errors import AirlockError
from airlock.trust import RevokedKeyError, TrustedKey, TrustStore, UnknownKeyError

_T = TypeVar("_T")
_MAX_NAMES = 10  # files named per category in a reason; the rest are counted


class Failure(StrEnum):
    MALFORMED_BUNDLE = "malformed-bundle"
    MEDIA_TYPE = "wrong-media-type"
    PAYLOAD_TYPE = "wrong-payload-type"
    UNKNOWN_KEY = "unknown-key"
    REVOKED_KEY = "revoked-key"
    BAD_SIGNATURE = "bad-signature"
    STATEMENT_TYPE = "wrong-statement-type"
    PREDICATE_TYPE = "wrong-predicate-type"
    OTHER_MODEL = "other-model"
    FILE_CHANGED = "file-changed"
    FILE_MISSING = "file-missing"
    FILE_UNEXPECTED = "file-unexpected"
    FILE_RENAMED = "file-renamed"
    UNREADABLE_MODEL = "unreadable-model"


class VerificationError(AirlockError):
    """Verification failed; ``failure`` says how. Raised by APIs that must not return on failure (load)."""

    def __init__(self, failure: Failure, reason: str):
        super().__init__(reason)
        self.failure = failure
        self.reason = reason


@dataclass(frozen=True)
class VerifiedStatement:
    """A bundle whose signature verified with a trusted, unrevoked key: what it vouches for, and by whom."""

    manifest: SignedManifest
    key: TrustedKey


@dataclass(frozen=True)
class VerificationResult:
    ok: bool
    reason: str
    failure: Failure | None = None
    model_name: str | None = None
    root_digest: str | None = None
    key_id: str | None = None
    file_count: int = 0
    findings: tuple[str, ...] = field(default=())  # every file-level problem, for reports

    def to_json_dict(self) -> dict[str, object]:
        """For XCom, lineage and reports: plain JSON types only."""
        data = asdict(self)
        data["failure"] = str(self.failure) if self.failure else None
        data["findings"] = list(self.findings)
        return data


# --------------------------------------------------------------------------- bundle + signature


def verify_bundle(data: bytes, trust: TrustStore, *, source: str = "bundle") -> VerifiedStatement:
    """Check steps 1–4 on bundle bytes; raises :class:`VerificationError` on any problem."""
    try:
        bundle = load_bundle(data, source)
        signature = bundle.signature  # exactly one
        signature_der = bundle.signature_bytes
        payload = bundle.payload_bytes
    except BundleFormatError as exc:
        raise VerificationError(Failure.MALFORMED_BUNDLE, f"malformed bundle: {exc}") from None
    if bundle.mediaType != BUNDLE_MEDIA_TYPE:
        raise VerificationError(Failure.MEDIA_TYPE, f"wrong mediaType in {source}: {bundle.mediaType!r}, "
                                                    f"expected {BUNDLE_MEDIA_TYPE!r}")
    payload_type = bundle.dsseEnvelope.payloadType
    if payload_type != IN_TOTO_PAYLOAD_TYPE:
        raise VerificationError(Failure.PAYLOAD_TYPE, f"wrong dsseEnvelope.payloadType in {source}: "
                                                      f"{payload_type!r}, expected {IN_TOTO_PAYLOAD_TYPE!r}")
    key = _resolve_key(trust, bundle.hint, signature.keyid)
    _check_signature(key, signature_der, pae(payload_type, payload), source)
    try:
        manifest = parse_statement(payload)
    except StatementTypeError as exc:
        raise VerificationError(Failure.STATEMENT_TYPE, f"wrong statement type in {source}: {exc}") from None
    except PredicateTypeError as exc:
        raise VerificationError(Failure.PREDICATE_TYPE, f"wrong predicateType in {source}: {exc}") from None
    except BundleFormatError as exc:
        raise VerificationError(Failure.MALFORMED_BUNDLE, f"malformed statement in {source}: {exc}") from None
    return VerifiedStatement(manifest, key)


def _resolve_key(trust: TrustStore, hint: str, keyid: str) -> TrustedKey:
    try:
        return trust.resolve(hint=hint, keyid=keyid)
    except UnknownKeyError as exc:
        raise VerificationError(Failure.UNKNOWN_KEY, str(exc)) from None
    except RevokedKeyError as exc:
        raise VerificationError(Failure.REVOKED_KEY, str(exc)) from None


def _check_signature(key: TrustedKey, signature_der: bytes, message: bytes, source: str) -> None:
    public_key = key.public_key()
    try:
        public_key.verify(signature_der, message, ec.ECDSA(ecdsa_hash_for(public_key.curve)))
    except InvalidSignature:
        raise VerificationError(
            Failure.BAD_SIGNATURE,
            f"bad signature: dsseEnvelope.signatures[0] in {source} does not verify with key {key.key_id} "
            f"(sha256:{key.fingerprint})",
        ) from None


def read_bundle(path: Path) -> bytes:
    """The bundle file's bytes; an unreadable file is a malformed bundle (verification fails closed)."""
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise VerificationError(Failure.MALFORMED_BUNDLE, f"cannot read signature {path}: "
                                                          f"{exc.strerror or exc}") from None


# --------------------------------------------------------------------------- files


def hashing_ignores(manifest: SignedManifest, model_dir: Path, bundle_path: Path | None) -> list[str]:
    """What to leave out when re-hashing: the git paths the signer also left out, and the bundle itself.

    Other paths the signer chose to ignore are hashed anyway, so such a file,
    if present, is reported as unexpected: Airlock trusts no unsigned file in a
    model directory.
    """
    ignored = [p for p in DEFAULT_IGNORE_PATHS if p in manifest.ignore_paths]
    if bundle_path is not None:
        try:
            ignored.append(Path(bundle_path).resolve().relative_to(Path(model_dir).resolve()).as_posix())
        except ValueError:
            pass  # the bundle lives outside the model directory
    return ignored


def compare_files(manifest: SignedManifest, actual: Sequence[FileDigest], where: str) -> list[tuple[Failure, str]]:
    """Every difference between the signed files and ``actual``, worst kind first; empty when they match."""
    expected = {f.path: f.sha256 for f in manifest.files}
    present = {f.path: f.sha256 for f in actual}
    changed = sorted(p for p in expected.keys() & present.keys() if expected[p] != present[p])
    missing = set(expected.keys() - present.keys())
    unexpected = set(present.keys() - expected.keys())
    renamed = _renames(missing, unexpected, expected, present)
    missing -= {old for old, _ in renamed}
    unexpected -= {new for _, new in renamed}

    findings: list[tuple[Failure, str]] = []
    matching = sum(1 for p in expected.keys() & present.keys() if expected[p] == present[p])
    if len(expected) > 1 and matching * 2 < len(expected):
        # Most of the signed files are not here: more likely the wrong bundle than a tampered model.
        # The per-file findings follow, so nothing is hidden by this headline.
        findings.append((Failure.OTHER_MODEL,
                         f"signature appears to be for another model: only {matching} of the {len(expected)} files "
                         f"signed for {manifest.model_name!r} (root sha256:{manifest.root_digest}) match {where}"))
    if changed:
        findings.append((Failure.FILE_CHANGED, "file changed: " + _names(
            changed, lambda p: f"{p!r} (signed sha256:{expected[p][:16]}…, found sha256:{present[p][:16]}…)")))
    if missing:
        findings.append((Failure.FILE_MISSING, f"file missing from {where}: " + _names(sorted(missing), repr)))
    if unexpected:
        findings.append((Failure.FILE_UNEXPECTED, f"unexpected file in {where} (not in the signature): "
                         + _names(sorted(unexpected), repr)))
    if renamed:
        findings.append((Failure.FILE_RENAMED, "file renamed (names are signed): " + _names(
            renamed, lambda pair: f"{pair[0]!r} -> {pair[1]!r}")))
    return findings


def _renames(missing: set[str], unexpected: set[str], expected: dict[str, str],
             present: dict[str, str]) -> list[tuple[str, str]]:
    """(signed name, found name) pairs whose content is identical: a rename, reported as such."""
    by_digest: dict[str, list[str]] = {}
    for path in sorted(unexpected):
        by_digest.setdefault(present[path], []).append(path)
    pairs = []
    for old in sorted(missing):
        candidates = by_digest.get(expected[old])
        if candidates:
            pairs.append((old, candidates.pop(0)))
    return pairs


def _names(items: Sequence[_T], show: Callable[[_T], str]) -> str:
    shown = ", ".join(show(item) for item in items[:_MAX_NAMES])
    more = len(items) - _MAX_NAMES
    return shown + (f" and {more} more" if more > 0 else "")


# --------------------------------------------------------------------------- the whole check


def verify_model(
    model_dir: Path,
    bundle_path: Path,
    trust: TrustStore,
    *,
    expected_model_name: str | None = None,
) -> VerificationResult:
    """Verify ``model_dir`` against the bundle at ``bundle_path`` with ``trust``; never raises for a bad model."""
    from airlock.digests import HashingError, hash_model_dir

    model_dir = Path(model_dir)
    try:
        statement = verify_bundle(read_bundle(bundle_path), trust, source=str(bundle_path))
        manifest = statement.manifest
        _check_model_name(manifest, expected_model_name)
        try:
            actual = hash_model_dir(model_dir, ignore_paths=hashing_ignores(manifest, model_dir, bundle_path))
        except (HashingError, BundleFormatError) as exc:
            raise VerificationError(Failure.UNREADABLE_MODEL, f"cannot hash {model_dir}: {exc}") from None
    except VerificationError as exc:
        return VerificationResult(False, exc.reason, exc.failure)
    return result_for(statement, compare_files(manifest, actual, str(model_dir)))


def _check_model_name(manifest: SignedManifest, expected: str | None) -> None:
    if expected is not None and manifest.model_name != expected:
        raise VerificationError(Failure.OTHER_MODEL, f"signature is for another model: subject "
                                                     f"{manifest.model_name!r}, expected {expected!r}")


def result_for(statement: VerifiedStatement, findings: Iterable[tuple[Failure, str]]) -> VerificationResult:
    findings = list(findings)
    manifest, key = statement.manifest, statement.key
    common = dict(model_name=manifest.model_name, root_digest=manifest.root_digest, key_id=key.key_id,
                  file_count=len(manifest.files))
    if findings:
        return VerificationResult(False, "; ".join(text for _, text in findings), findings[0][0],
                                  findings=tuple(text for _, text in findings), **common)
    return VerificationResult(
        True,
        f"valid: {len(manifest.files)} files of {manifest.model_name!r} (root sha256:{manifest.root_digest}) "
        f"signed by {key.key_id}",
        **common,
    )
