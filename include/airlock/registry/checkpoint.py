"""Signed checkpoints of a model's index chain: ``index/<org>/<name>/heads/<seq>.json``.

A checkpoint says "the event log of ``model`` whose event ``seq`` has these
exact bytes (sha256 ``head``) is authentic, as of ``at``". Because every event
carries the digest of the one before it (:mod:`airlock.registry.index`), one
checkpoint vouches for the whole history up to ``seq``.

Wire format: the same Sigstore v0.3 bundle and DSSE envelope as ``model.sig``
and ``aibom.sig`` (:mod:`airlock.bundle`), signed by the same signers (Vault
Transit in production) and verified with the same host trust store, but with
a payload type of its own, :data:`CHECKPOINT_PAYLOAD_TYPE`. DSSE signs the
payload type together with the payload, so a model or AI-BOM signature can
never be replayed as a checkpoint, nor the reverse.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from airlock.bundle import (
    BUNDLE_MEDIA_TYPE,
    Bundle,
    BundleFormatError,
    DsseEnvelope,
    DsseSignature,
    PublicKeyIdentifier,
    VerificationMaterial,
    dump_bundle,
    ecdsa_hash_for,
    load_bundle,
    pae,
    public_key_fingerprint,
)
from airlock import strictjson
from airlock.errors import first_validation_problem
from airlock.registry.base import RegistryIndexError

if TYPE_CHECKING:
    from datetime import datetime

    from airlock.signing import Signer
    from airlock.trust import TrustStore

CHECKPOINT_SCHEMA = "airlock.registry.checkpoint/v1"
CHECKPOINT_PAYLOAD_TYPE = "application/vnd.airlock.registry.checkpoint.v1+json"


class IndexIntegrityError(RegistryIndexError):
    """The index is not the authentic, complete history: an event is missing, reordered or altered, a
    checkpoint is forged or missing, or the registry shows less history than this host has already verified."""


class Checkpoint(BaseModel):
    """The signed statement (the DSSE payload)."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    schema_: Literal["airlock.registry.checkpoint/v1"] = Field(default=CHECKPOINT_SCHEMA, alias="schema")
    model: str
    seq: int = Field(ge=0, description="the newest event the checkpoint covers")
    head: str = Field(pattern=r"^[0-9a-f]{64}$", description="sha256 of event seq's stored bytes")
    at: AwareDatetime

    def payload(self) -> bytes:
        return json.dumps(self.model_dump(mode="json", by_alias=True), sort_keys=True).encode()


@dataclass(frozen=True)
class StoredCheckpoint:
    """A checkpoint as read from the store, before (``key_id`` None) or after its signature was verified."""

    key: str
    checkpoint: Checkpoint
    data: bytes
    key_id: str | None = None

    @property
    def seq(self) -> int:
        return self.checkpoint.seq


def sign_checkpoint(model: str, seq: int, head: str, at: datetime, signer: Signer) -> bytes:
    """The bytes of ``heads/<seq>.json``: a bundle whose DSSE envelope signs :class:`Checkpoint`."""
    payload = Checkpoint(model=model, seq=seq, head=head, at=at).payload()
    raw = signer.sign(pae(CHECKPOINT_PAYLOAD_TYPE, payload))
    bundle = Bundle(
        mediaType=BUNDLE_MEDIA_TYPE,
        verificationMaterial=VerificationMaterial(
            publicKey=PublicKeyIdentifier(hint=public_key_fingerprint(raw.public_key_pem.encode())), tlogEntries=[]),
        dsseEnvelope=DsseEnvelope(
            payload=base64.b64encode(payload).decode("ascii"),
            payloadType=CHECKPOINT_PAYLOAD_TYPE,
            signatures=[DsseSignature(sig=base64.b64encode(raw.der).decode("ascii"), keyid=raw.key_id)],
        ),
    )
    return dump_bundle(bundle)


def read_checkpoint(data: bytes, where: str) -> tuple[Bundle, Checkpoint]:
    """The bundle and the checkpoint it claims, signature *not* checked (structure and consistency only)."""
    try:
        bundle = load_bundle(data, where)
        payload = bundle.payload_bytes
    except BundleFormatError as exc:
        raise IndexIntegrityError(f"{where}: not a checkpoint bundle ({exc})") from None
    if bundle.dsseEnvelope.payloadType != CHECKPOINT_PAYLOAD_TYPE:
        raise IndexIntegrityError(f"{where}: payloadType {bundle.dsseEnvelope.payloadType!r} is not "
                                  f"{CHECKPOINT_PAYLOAD_TYPE!r}")
    try:
        raw = strictjson.loads(payload)
        checkpoint = Checkpoint.model_validate(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise IndexIntegrityError(f"{where}: the signed payload is not a checkpoint ({exc})") from None
    except ValidationError as exc:
        raise IndexIntegrityError(f"{where}: {first_validation_problem(exc)}") from None
    return bundle, checkpoint


def verify_checkpoint(stored: StoredCheckpoint, trust: TrustStore) -> StoredCheckpoint:
    """``stored`` with the key that signed it, if the signature verifies with a trusted, unrevoked key."""
    from airlock.trust import RevokedKeyError, UnknownKeyError

    bundle, checkpoint = read_checkpoint(stored.data, stored.key)
    if checkpoint != stored.checkpoint:  # the caller's reading and ours must be one reading
        raise IndexIntegrityError(f"{stored.key}: changed while it was being verified")
    try:
        signature = bundle.signature
        der = bundle.signature_bytes
        key = trust.resolve(hint=bundle.hint, keyid=signature.keyid)
    except BundleFormatError as exc:
        raise IndexIntegrityError(f"{stored.key}: {exc}") from None
    except (UnknownKeyError, RevokedKeyError) as exc:
        raise IndexIntegrityError(f"{stored.key}: checkpoint signature not trusted: {exc}") from None
    public_key = key.public_key()
    try:
        public_key.verify(der, pae(CHECKPOINT_PAYLOAD_TYPE, bundle.payload_bytes),
                          ec.ECDSA(ecdsa_hash_for(public_key.curve)))
    except InvalidSignature:
        raise IndexIntegrityError(f"{stored.key}: checkpoint signature does not verify with key {key.key_id} "
                                  f"(sha256:{key.fingerprint})") from None
    return StoredCheckpoint(stored.key, checkpoint, stored.data, key.key_id)

