"""Sign a model: an OpenSSF model-signing bundle (``model.sig``) whose signature comes from Vault Transit.

The input is a list of (relative POSIX path, sha256) pairs plus a model name,
so signing does not care how the files were hashed; :func:`sign_directory` is
the adapter that hashes a directory first (:mod:`airlock.digests`).

What gets signed is the DSSE pre-authentication encoding of the in-toto
statement. Vault never sees the statement: we send sha256(PAE) with
``prehashed=true, hash_algorithm=sha2-256, marshaling_algorithm=asn1``, which
yields exactly the ECDSA-P256-SHA256 DER signature ``model_signing verify key``
checks. Every signature is verified locally against the public key of the
version Vault says it used before a bundle is written, so a bundle that would
not verify is never produced.

Signers:

* :class:`VaultTransitSigner` — production; the key never leaves Vault.
* :class:`LocalKeySigner` — an in-process EC key, for tests and for simulating a
  vendor; it goes through the same bundle code.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils

from airlock.bundle import (
    DEFAULT_IGNORE_PATHS,
    IN_TOTO_PAYLOAD_TYPE,
    Bundle,
    FileDigest,
    assemble_bundle,
    build_statement,
    dump_bundle,
    ecdsa_hash_for,
    pae,
    public_key_fingerprint,
    root_digest,
    sorted_digests,
)
from airlock.errors import AirlockError
from airlock.fsutil import atomic_write

if TYPE_CHECKING:
    from airlock.manifest import Manifest
    from airlock.vault import RetryPolicy, VaultSession

DEFAULT_BUNDLE_NAME = "model.sig"


class SigningError(AirlockError):
    """A bundle could not be produced (no files, a signature that does not verify, an unwritable output)."""


@dataclass(frozen=True)
class RawSignature:
    """A DER ECDSA signature and the exact key version that made it."""

    der: bytes
    key_id: str  # "<key name>:v<version>"
    public_key_pem: str


class Signer(Protocol):
    def sign(self, message: bytes) -> RawSignature:
        """Sign ``message`` (the DSSE PAE bytes) with ECDSA and the curve's hash."""
        ...


class LocalKeySigner:
    """Signs with an EC private key held in this process (tests, vendor simulation)."""

    def __init__(self, private_key: ec.EllipticCurvePrivateKey, *, key_name: str = "local", version: int = 1):
        self._key = private_key
        self._hash = ecdsa_hash_for(private_key.curve)
        self.key_id = f"{key_name}:v{version}"
        self.public_key_pem = private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode("ascii")

    @classmethod
    def generate(cls, *, key_name: str = "local", version: int = 1) -> LocalKeySigner:
        return cls(ec.generate_private_key(ec.SECP256R1()), key_name=key_name, version=version)

    def sign(self, message: bytes) -> RawSignature:
        return RawSignature(self._key.sign(message, ec.ECDSA(self._hash)), self.key_id, self.public_key_pem)


class VaultTransitSigner:
    """Signs with the Vault Transit key of a :class:`~airlock.vault.VaultSession` (signer identity)."""

    def __init__(self, session: VaultSession):
        self.session = session
        self._public_keys: dict[int, str] = {}

    @classmethod
    def from_env(cls, retry: RetryPolicy | None = None) -> VaultTransitSigner:
        """AIRLOCK_VAULT_ADDR + AIRLOCK_VAULT_TOKEN, or an AppRole from AIRLOCK_VAULT_ROLE_ID/SECRET_ID."""
        from airlock.vault import signer_session_from_env

        return cls(signer_session_from_env(retry=retry))

    @classmethod
    def from_airflow_connection(cls, conn_id: str = "airlock_vault",
                                retry: RetryPolicy | None = None) -> VaultTransitSigner:
        """The Airflow connection ``conn_id`` (type vault; AppRole: login=role_id, password=secret_id)."""
        from airlock.vault import signer_session_from_connection

        return cls(signer_session_from_connection(conn_id, retry=retry))

    def sign(self, message: bytes) -> RawSignature:
        from airlock.vault import transit_sign_prehashed

        digest = hashlib.sha256(message).digest()
        signature = transit_sign_prehashed(self.session, digest)
        pem = self._public_key_pem(signature.key_version)
        public_key = serialization.load_pem_public_key(pem.encode())
        if not isinstance(public_key, ec.EllipticCurvePublicKey) or public_key.curve.name != "secp256r1":
            raise SigningError(f"transit key {self.session.target.key_name} v{signature.key_version} "
                               f"is not an ECDSA P-256 key")
        try:
            public_key.verify(signature.der, digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
        except InvalidSignature:
            raise SigningError(
                f"Vault's signature does not verify with {self.session.target.key_name} v{signature.key_version}'s "
                f"public key; refusing to write a bundle"
            ) from None
        return RawSignature(signature.der, f"{self.session.target.key_name}:v{signature.key_version}", pem)

    def _public_key_pem(self, version: int) -> str:
        # Looked up by the version Vault reports for this signature, so a rotation in between cannot mismatch.
        if version not in self._public_keys:
            from airlock.vault import transit_public_keys

            _, versions = transit_public_keys(self.session)
            self._public_keys.update({v: k.pem for v, k in versions.items()})
        if version not in self._public_keys:
            raise SigningError(f"Vault signed with {self.session.target.key_name} v{version} "
                               f"but does not list that version's public key")
        return self._public_keys[version]


@dataclass(frozen=True)
class SignedModel:
    """A bundle and what lineage records about it."""

    bundle: Bundle
    bundle_bytes: bytes
    model_name: str
    root_digest: str
    key_id: str
    key_fingerprint: str
    file_count: int

    @property
    def bundle_sha256(self) -> str:
        return hashlib.sha256(self.bundle_bytes).hexdigest()


def sign_files(
    files: Iterable[FileDigest] | Iterable[tuple[str, str]],
    model_name: str,
    signer: Signer,
    *,
    ignore_paths: Iterable[str] = DEFAULT_IGNORE_PATHS,
) -> SignedModel:
    """A model-signing bundle for ``files`` ((path, sha256 hex) pairs), signed by ``signer``."""
    digests = sorted_digests(f if isinstance(f, FileDigest) else FileDigest(*f) for f in files)
    payload = build_statement(model_name, digests, ignore_paths)
    raw = signer.sign(pae(IN_TOTO_PAYLOAD_TYPE, payload))
    fingerprint = public_key_fingerprint(raw.public_key_pem.encode())
    bundle = assemble_bundle(payload, raw.der, hint=fingerprint, keyid=raw.key_id)
    return SignedModel(bundle, dump_bundle(bundle), model_name, root_digest(digests), raw.key_id, fingerprint,
                       len(digests))


def sign_manifest(manifest: Manifest, signer: Signer, *, model_name: str | None = None) -> SignedModel:
    """Sign what the manifest stage hashed (its files and its ignore set), without reading the files again.

    The signed root digest must equal the manifest's; anything else means the
    two stages disagree on the format, and nothing is signed.
    """
    signed = sign_files(((f.path, f.sha256) for f in manifest.files), model_name or manifest.model.name, signer,
                        ignore_paths=manifest.serialization.ignore_paths)
    if signed.root_digest != manifest.root_digest:
        raise SigningError(f"signed root sha256:{signed.root_digest} differs from the manifest's "
                           f"sha256:{manifest.root_digest} for {manifest.model.name!r}; refusing to sign")
    return signed


def sign_directory(
    model_dir: Path,
    signer: Signer,
    *,
    output: Path | None = None,
    model_name: str | None = None,
    ignore_paths: Iterable[str] = DEFAULT_IGNORE_PATHS,
) -> tuple[SignedModel, Path]:
    """Hash ``model_dir``, sign it and write the bundle (default ``<model_dir>/model.sig``).

    As with ``model_signing sign``, a bundle written inside the model directory
    is added to the signed ``ignore_paths`` so it does not sign itself.
    """
    from airlock.digests import hash_model_dir

    model_dir = Path(model_dir)
    output = Path(output) if output is not None else model_dir / DEFAULT_BUNDLE_NAME
    ignored = list(ignore_paths)
    inside = _relative_inside(output, model_dir)
    if inside is not None:
        ignored.append(inside)
    files = hash_model_dir(model_dir, ignore_paths=ignored)
    signed = sign_files(files, model_name or model_dir.resolve().name, signer, ignore_paths=ignored)
    write_bundle(signed.bundle_bytes, output)
    return signed, output


def _relative_inside(path: Path, directory: Path) -> str | None:
    try:
        return path.resolve().relative_to(directory.resolve()).as_posix()
    except ValueError:
        return None


def write_bundle(data: bytes, path: Path) -> None:
    """Write ``data`` to ``path`` atomically (temporary file + rename in the same directory)."""
    try:
        atomic_write(Path(path), data)
    except OSError as exc:
        raise SigningError(f"cannot write bundle {path}: {exc.strerror or exc}") from None
