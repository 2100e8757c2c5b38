"""The signature bundle ``model.sig``: OpenSSF model-signing v1.0 inside a Sigstore bundle v0.3.

This module is the wire format only, shared by :mod:`airlock.signing` (which
builds bundles) and :mod:`airlock.verify` (which parses them); it holds no key
material and talks to no service. The shape is the one ``model_signing`` 1.1.1
writes for ``sign key`` and accepts in ``verify key``::

    {"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
     "verificationMaterial": {"publicKey": {"hint": "<sha256 of the SPKI PEM>"}, "tlogEntries": []},
     "dsseEnvelope": {"payload": "<base64 in-toto Statement v1>",
                      "payloadType": "application/vnd.in-toto+json",
                      "signatures": [{"sig": "<base64 DER ECDSA>", "keyid": "<key name>:v<version>"}]}}

The statement has one subject (model name + root digest) and predicate
``{serialization: {method: files, hash_type: sha256, allow_symlinks: false,
ignore_paths: [...]}, resources: [{name, algorithm, digest}, ...]}``.

Why the hint is a fingerprint and the key version sits in ``keyid``: upstream
``verify key`` refuses a bundle whose non-empty hint differs from the sha256 of
the verifier's PEM, so the hint must stay that fingerprint for interoperability;
the DSSE signature's ``keyid`` is free-form and ignored upstream, so Airlock
records ``<transit key>:v<version>`` there. Neither field is covered by the
signature: they only select a key, and a wrong selection fails verification.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from airlock.errors import AirlockError, first_validation_problem
from airlock.manifest import SHA256_HEX, path_sort_key, root_digest_of_pairs

BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://model_signing/signature/v1.0"
SERIALIZATION_METHOD = "files"
HASH_TYPE = "sha256"
# model_signing's default ignore set (hashing.Config with ignore_git_paths=True).
DEFAULT_IGNORE_PATHS: tuple[str, ...] = (".git", ".gitattributes", ".github", ".gitignore")

_Model = TypeVar("_Model", bound=BaseModel)


class BundleFormatError(AirlockError):
    """A bundle or statement does not have the model-signing shape; the message names the field."""


class StatementTypeError(BundleFormatError):
    """The payload is not an in-toto Statement v1."""


class PredicateTypeError(BundleFormatError):
    """The statement is not a model-signing v1.0 signature."""


# --------------------------------------------------------------------------- file digests


def check_relative_posix_path(path: str, what: str = "path") -> str:
    """``path`` if it is a normalized relative POSIX path that stays inside the model directory.

    Resource names come from a bundle and are later opened relative to a model
    directory (``airlock.load``), so anything that could escape it is refused.
    """
    parts = path.split("/")
    if not path or path.startswith("/") or "\\" in path or "\0" in path:
        raise BundleFormatError(f"{what} {path!r} is not a relative POSIX path")
    if any(part in ("", ".", "..") for part in parts):
        raise BundleFormatError(f"{what} {path!r} has an empty, '.' or '..' component")
    return path


def check_sha256_hex(value: str, what: str = "sha256") -> str:
    if not SHA256_HEX.fullmatch(value):
        raise BundleFormatError(f"{what} {value!r} is not 64 lowercase hex characters")
    return value


@dataclass(frozen=True, order=True)
class FileDigest:
    """One file of a model: its relative POSIX path and the sha256 of its bytes (hex)."""

    path: str
    sha256: str

    def __post_init__(self) -> None:
        check_relative_posix_path(self.path, "file path")
        check_sha256_hex(self.sha256, f"sha256 of {self.path!r}")


def sorted_digests(files: Iterable[FileDigest]) -> list[FileDigest]:
    """``files`` in model_signing's order; duplicate paths are an error (they would make the manifest ambiguous).

    The order is the manifest stage's :func:`~airlock.manifest.path_sort_key`
    (path segments, as model_signing compares ``PurePosixPath``), so a signed
    subject digest equals the manifest's ``root_digest``.
    """
    ordered = sorted(files, key=lambda f: path_sort_key(f.path))
    for previous, current in zip(ordered, ordered[1:]):
        if previous.path == current.path:
            raise BundleFormatError(f"file path {current.path!r} appears twice")
    return ordered


def root_digest(files: Sequence[FileDigest]) -> str:
    """model_signing's subject digest of ``files`` (computed by the manifest stage's one implementation)."""
    return root_digest_of_pairs((f.path, f.sha256) for f in files)


# --------------------------------------------------------------------------- DSSE


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding: what is actually signed (lengths in bytes)."""
    encoded_type = payload_type.encode("utf-8")
    return b" ".join([
        b"DSSEv1", str(len(encoded_type)).encode(), encoded_type, str(len(payload)).encode(), payload,
    ])


def ecdsa_hash_for(curve: ec.EllipticCurve) -> hashes.HashAlgorithm:
    """The hash model_signing pairs with each curve: P-256 → SHA-256, P-384 → SHA-384, P-521 → SHA-512."""
    by_size: dict[int, type[hashes.HashAlgorithm]] = {
        256: hashes.SHA256, 384: hashes.SHA384, 521: hashes.SHA512,
    }
    if curve.key_size not in by_size:
        raise BundleFormatError(f"unsupported curve {curve.name}")
    return by_size[curve.key_size]()


def public_key_fingerprint(public_key_pem: bytes) -> str:
    """sha256 hex of the key's canonical SubjectPublicKeyInfo PEM: model_signing's ``publicKey.hint``.

    The PEM is re-serialized first so formatting differences (line endings,
    Vault's vs OpenSSL's output) cannot change the fingerprint.
    """
    key = serialization.load_pem_public_key(public_key_pem)
    canonical = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(canonical).hexdigest()


# --------------------------------------------------------------------------- statement (the signed payload)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Lenient(BaseModel):
    # Forward compatibility: the v1.0 predicate says verifiers ignore fields they do not know.
    model_config = ConfigDict(extra="ignore", frozen=True)


class Serialization(_Lenient):
    method: Literal["files"]
    hash_type: Literal["sha256"]
    allow_symlinks: bool
    ignore_paths: list[str] = Field(default_factory=list)

    @field_validator("ignore_paths")
    @classmethod
    def _relative(cls, value: list[str]) -> list[str]:
        return [check_relative_posix_path(p.rstrip("/"), "ignore path") for p in value]


class Resource(_Lenient):
    name: str
    algorithm: Literal["sha256"]
    digest: str

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_relative_posix_path(value, "resource name")

    @field_validator("digest")
    @classmethod
    def _digest(cls, value: str) -> str:
        return check_sha256_hex(value, "resource digest")


class Predicate(_Lenient):
    serialization: Serialization
    resources: list[Resource]


class Subject(_Lenient):
    name: str = Field(min_length=1)
    digest: dict[str, str]


class Statement(_Lenient):
    """An in-toto Statement v1; ``predicate`` stays raw until ``predicateType`` has been checked."""

    type: str = Field(alias="_type")
    subject: list[Subject]
    predicateType: str  # noqa: N815 - the in-toto field name
    predicate: dict[str, Any]


@dataclass(frozen=True)
class SignedManifest:
    """What a bundle's statement claims: the model, its root digest, every file and the signed ignore set."""

    model_name: str
    root_digest: str
    files: tuple[FileDigest, ...]
    ignore_paths: tuple[str, ...]


def build_statement(model_name: str, files: Iterable[FileDigest], ignore_paths: Iterable[str]) -> bytes:
    """The in-toto Statement v1 bytes for ``files`` (sorted here), as model_signing lays it out."""
    if not model_name:
        raise BundleFormatError("model name is empty")
    ordered = sorted_digests(files)
    if not ordered:
        raise BundleFormatError(f"model {model_name!r} has no files to sign")
    serialization: dict[str, Any] = {
        "method": SERIALIZATION_METHOD,
        "hash_type": HASH_TYPE,
        "allow_symlinks": False,  # Airlock's hashing refuses symlinks
    }
    ignored = sorted({check_relative_posix_path(p.rstrip("/"), "ignore path") for p in ignore_paths})
    if ignored:  # model_signing omits the key when the set is empty
        serialization["ignore_paths"] = ignored
    statement = {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": model_name, "digest": {"sha256": root_digest(ordered)}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "serialization": serialization,
            "resources": [{"name": f.path, "algorithm": HASH_TYPE, "digest": f.sha256} for f in ordered],
        },
    }
    return json.dumps(statement, indent=2).encode("utf-8")


def parse_statement(payload: bytes) -> SignedManifest:
    """The manifest a (signature-checked) payload claims; raises :class:`BundleFormatError` naming the field.

    ``_type`` and ``predicateType`` are checked before the predicate is read so
    a statement of another kind is reported as such, not as a malformed one.
    """
    try:
        raw = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BundleFormatError(f"dsseEnvelope.payload is not JSON: {exc}") from None
    statement = _validate(Statement, raw, "dsseEnvelope.payload")
    if statement.type != STATEMENT_TYPE:
        raise StatementTypeError(f"payload _type is {statement.type!r}, expected {STATEMENT_TYPE!r}")
    if statement.predicateType != PREDICATE_TYPE:
        raise PredicateTypeError(f"predicateType is {statement.predicateType!r}, expected {PREDICATE_TYPE!r}")
    if len(statement.subject) != 1:
        raise BundleFormatError(f"statement has {len(statement.subject)} subjects, expected exactly 1")
    subject = statement.subject[0]
    claimed_root = subject.digest.get("sha256")
    if claimed_root is None:
        raise BundleFormatError(f"subject {subject.name!r} has no sha256 digest")
    check_sha256_hex(claimed_root, "subject.digest.sha256")
    predicate = _validate(Predicate, statement.predicate, "predicate")
    files = tuple(FileDigest(r.name, r.digest) for r in predicate.resources)
    if len({f.path for f in files}) != len(files):
        raise BundleFormatError("predicate.resources names a file twice")
    # model_signing recomputes the subject digest in payload order; an inconsistent one is a forged statement.
    computed = root_digest(files)
    if computed != claimed_root:
        raise BundleFormatError(
            f"subject digest sha256:{claimed_root} does not match its resources (sha256:{computed})"
        )
    return SignedManifest(subject.name, claimed_root, files, tuple(predicate.serialization.ignore_paths))


# --------------------------------------------------------------------------- bundle (the file)


class PublicKeyIdentifier(_Lenient):
    hint: str | None = None


class VerificationMaterial(_Lenient):
    publicKey: PublicKeyIdentifier  # noqa: N815 - Sigstore field name
    tlogEntries: list[dict[str, Any]] = Field(default_factory=list)  # noqa: N815


class DsseSignature(_Lenient):
    sig: str = Field(min_length=1)
    keyid: str = ""


class DsseEnvelope(_Lenient):
    payload: str = Field(min_length=1)
    payloadType: str  # noqa: N815 - DSSE field name
    signatures: list[DsseSignature]


class Bundle(_Lenient):
    mediaType: str  # noqa: N815 - Sigstore field name
    verificationMaterial: VerificationMaterial  # noqa: N815
    dsseEnvelope: DsseEnvelope  # noqa: N815

    @property
    def payload_bytes(self) -> bytes:
        return _b64decode(self.dsseEnvelope.payload, "dsseEnvelope.payload")

    @property
    def signature(self) -> DsseSignature:
        signatures = self.dsseEnvelope.signatures
        if len(signatures) != 1:
            # model_signing writes and checks exactly one; a second one would be ignored upstream.
            raise BundleFormatError(f"dsseEnvelope.signatures has {len(signatures)} entries, expected exactly 1")
        return signatures[0]

    @property
    def signature_bytes(self) -> bytes:
        return _b64decode(self.signature.sig, "dsseEnvelope.signatures[0].sig")

    @property
    def hint(self) -> str:
        return self.verificationMaterial.publicKey.hint or ""


def assemble_bundle(payload: bytes, signature_der: bytes, *, hint: str, keyid: str) -> Bundle:
    """A bundle around a signed statement, in model_signing's field layout."""
    return Bundle(
        mediaType=BUNDLE_MEDIA_TYPE,
        verificationMaterial=VerificationMaterial(publicKey=PublicKeyIdentifier(hint=hint), tlogEntries=[]),
        dsseEnvelope=DsseEnvelope(
            payload=base64.b64encode(payload).decode("ascii"),
            payloadType=IN_TOTO_PAYLOAD_TYPE,
            signatures=[DsseSignature(sig=base64.b64encode(signature_der).decode("ascii"), keyid=keyid)],
        ),
    )


def dump_bundle(bundle: Bundle) -> bytes:
    return (json.dumps(bundle.model_dump(mode="json"), indent=2) + "\n").encode("utf-8")


def load_bundle(data: bytes, source: str = "bundle") -> Bundle:
    """Parse bundle JSON; a truncated or reshaped file raises :class:`BundleFormatError` naming ``source``."""
    try:
        raw = json.loads(data)
    except UnicodeDecodeError as exc:
        raise BundleFormatError(f"{source} is not UTF-8 JSON: {exc}") from None
    except ValueError as exc:
        raise BundleFormatError(f"{source} is not valid JSON (truncated?): {exc}") from None
    return _validate(Bundle, raw, source)


def _validate(model: type[_Model], raw: Any, source: str) -> _Model:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise BundleFormatError(f"{source}: {first_validation_problem(exc)}") from None


def _b64decode(value: str, field: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BundleFormatError(f"{field} is not valid base64: {exc}") from None
