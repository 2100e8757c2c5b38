"""The trust store: every public key version Airlock accepts signatures from, usable offline.

Serving hosts and the registry verify with this file only, never with Vault.
It is a PEM bundle in which each key is preceded by RFC 7468 "explanatory
text" headers (OpenSSL and ``cryptography`` skip text outside the armor)::

    # Airlock trust store: public keys of model-signing key versions. ...
    Key-Id: airlock-model-signing:v1
    Key-Name: airlock-model-signing
    Key-Version: 1
    Fingerprint: sha256:5f0c...
    Created: 2026-11-26T05:06:04Z
    Status: revoked
    Revoked-At: 2026-11-27T10:00:00Z
    Revoked-Reason: laptop with the admin token was lost
    -----BEGIN PUBLIC KEY-----
    ...
    -----END PUBLIC KEY-----

The fingerprint is what a bundle's ``verificationMaterial.publicKey.hint``
carries (sha256 of the canonical SPKI PEM); ``Key-Id`` is what its DSSE
``keyid`` carries. Parsing is strict: an unknown header, a fingerprint that
does not match its PEM, or a duplicate key id makes the whole file unusable,
because a trust store we half understand must not be trusted at all.
Revocation only ever sticks: refreshing from Vault never clears it.

**Which trust store a host uses** (:func:`host_trust_store`): the one named
explicitly (``--trust-store FILE``), else AIRLOCK_TRUST_STORE, else
``/etc/airlock/trust.pem`` when it exists. Never the registry's own
``trust/trust.pem`` as an authority: whoever can write the registry could add
a version signed with their key and publish that key beside it. The registry
copy is used only when the host pins its sha256 (``--trust-store-sha256`` or
AIRLOCK_TRUST_STORE_SHA256), and a pin, when set, must match whichever store
is used. No trust store at all is a configuration error that says how to set one.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, replace
from functools import cached_property
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from airlock.bundle import public_key_fingerprint
from airlock.errors import AirlockError

if TYPE_CHECKING:
    from airlock.registry import Registry
    from airlock.vault import VaultSession

SUPPORTED_CURVES = ("secp256r1", "secp384r1", "secp521r1")  # the curves model_signing accepts
_BEGIN, _END = "-----BEGIN PUBLIC KEY-----", "-----END PUBLIC KEY-----"
_HEADER = re.compile(r"^([A-Za-z][A-Za-z-]*): ?(.*)$")
_KNOWN_HEADERS = {"Key-Id", "Key-Name", "Key-Version", "Fingerprint", "Created", "Status", "Revoked-At",
                  "Revoked-Reason"}
_KEY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_FILE_COMMENT = (
    "# Airlock trust store: public keys of model-signing key versions (offline verification).\n"
    "# Written by `airlock keys export`; revoke with `airlock keys revoke`. Keep it with the registry.\n"
)


class TrustStoreError(AirlockError):
    """The trust store file is unreadable or malformed, or an update would be unsafe; names file and line."""


class UnknownKeyError(AirlockError):
    """A bundle names a key the trust store does not hold."""


class RevokedKeyError(AirlockError):
    """A bundle was signed by a key version the trust store marks revoked."""


@dataclass(frozen=True)
class TrustedKey:
    """One public key version. ``pinned`` keys come from a bare ``--public-key`` file and carry no version."""

    name: str
    version: int
    public_key_pem: str
    created: str | None = None
    revoked_at: str | None = None
    revoked_reason: str | None = None
    pinned: bool = False

    def __post_init__(self) -> None:
        if not self.pinned and not _KEY_NAME.match(self.name):
            raise TrustStoreError(f"key name {self.name!r} may only use letters, digits, '.', '_' and '-'")
        if self.version < 0:
            raise TrustStoreError(f"key {self.name}: version {self.version} is negative")
        load_ec_public_key(self.public_key_pem.encode(), f"key {self.key_id}")

    @property
    def key_id(self) -> str:
        return self.name if self.pinned else f"{self.name}:v{self.version}"

    @cached_property
    def fingerprint(self) -> str:
        return public_key_fingerprint(self.public_key_pem.encode())

    @property
    def revoked(self) -> bool:
        return self.revoked_reason is not None

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return load_ec_public_key(self.public_key_pem.encode(), f"key {self.key_id}")


def load_ec_public_key(pem: bytes, what: str) -> ec.EllipticCurvePublicKey:
    """An EC public key on a curve model_signing supports, or :class:`TrustStoreError` naming ``what``."""
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError as exc:
        raise TrustStoreError(f"{what}: not a PEM public key ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name not in SUPPORTED_CURVES:
        raise TrustStoreError(f"{what}: not an EC public key on {', '.join(SUPPORTED_CURVES)}")
    return key


def canonical_pem(pem: str) -> str:
    key = serialization.load_pem_public_key(pem.encode())
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


@dataclass(frozen=True)
class TrustStore:
    keys: tuple[TrustedKey, ...]
    source: str = "trust store"

    def __post_init__(self) -> None:
        seen: dict[str, str] = {}
        for key in self.keys:
            for ident in (key.key_id, key.fingerprint):
                if ident in seen:
                    raise TrustStoreError(f"{self.source}: {ident} appears twice ({seen[ident]} and {key.key_id})")
                seen[ident] = key.key_id

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_public_key_pem(cls, pem: bytes, label: str) -> TrustStore:
        """A store that trusts exactly one key (``airlock verify --public-key``); it has no revocation list."""
        key = TrustedKey(name=label, version=0, public_key_pem=pem.decode("ascii", errors="replace"), pinned=True)
        return cls((key,), source=label)

    @classmethod
    def read(cls, path: Path) -> TrustStore:
        try:
            text = Path(path).read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as exc:
            raise TrustStoreError(f"cannot read trust store {path}: {exc}") from None
        return cls.parse(text, source=str(path))

    @classmethod
    def parse(cls, text: str, source: str = "trust store") -> TrustStore:
        keys: list[TrustedKey] = []
        headers: dict[str, str] = {}
        pem_lines: list[str] | None = None
        header_line = 0
        for number, line in enumerate(text.splitlines(), start=1):
            where = f"{source} line {number}"
            if pem_lines is not None:
                pem_lines.append(line)
                if line.strip() == _END:
                    keys.append(_key_from_block(headers, "\n".join(pem_lines) + "\n", f"{source} line {header_line}"))
                    headers, pem_lines = {}, None
                continue
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue
            if stripped == _BEGIN:
                if not headers:
                    raise TrustStoreError(f"{where}: public key without Key-Name/Key-Version headers")
                pem_lines = [stripped]
                continue
            match = _HEADER.match(stripped)
            if not match or match.group(1) not in _KNOWN_HEADERS:
                raise TrustStoreError(f"{where}: unexpected line {stripped[:60]!r}")
            if match.group(1) in headers:
                raise TrustStoreError(f"{where}: header {match.group(1)} repeated")
            if not headers:
                header_line = number
            headers[match.group(1)] = match.group(2).strip()
        if pem_lines is not None:
            raise TrustStoreError(f"{source}: truncated: no {_END} after line {header_line}")
        if headers:
            raise TrustStoreError(f"{source} line {header_line}: headers without a public key")
        if not keys:
            raise TrustStoreError(f"{source}: holds no keys")
        return cls(tuple(keys), source=source)

    # ------------------------------------------------------------------ output

    def dumps(self) -> str:
        blocks = [_FILE_COMMENT]
        for key in sorted(self.keys, key=lambda k: (k.name, k.version)):
            lines = [f"Key-Id: {key.key_id}", f"Key-Name: {key.name}", f"Key-Version: {key.version}",
                     f"Fingerprint: sha256:{key.fingerprint}"]
            if key.created:
                lines.append(f"Created: {key.created}")
            lines.append(f"Status: {'revoked' if key.revoked else 'active'}")
            if key.revoked:
                lines += [f"Revoked-At: {key.revoked_at or ''}", f"Revoked-Reason: {key.revoked_reason}"]
            blocks.append("\n".join(lines) + "\n" + canonical_pem(key.public_key_pem))
        return "\n".join(blocks)

    def write(self, path: Path) -> None:
        """Replace ``path`` atomically: a reader sees the old store or the new one, never half of one."""
        if any(k.pinned for k in self.keys):
            raise TrustStoreError("a pinned --public-key store is not written as a trust store")
        path = Path(path)
        text = self.dumps()
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        except OSError as exc:
            raise TrustStoreError(f"cannot write trust store {path}: {exc.strerror or exc}") from None
        try:
            with os.fdopen(fd, "w", encoding="ascii") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o644)  # public keys: world-readable on purpose
            os.replace(tmp, path)
        except OSError as exc:
            Path(tmp).unlink(missing_ok=True)
            raise TrustStoreError(f"cannot write trust store {path}: {exc.strerror or exc}") from None

    # ------------------------------------------------------------------ lookup

    def resolve(self, *, hint: str, keyid: str) -> TrustedKey:
        """The key a bundle names (by fingerprint hint, else by key id), refusing unknown and revoked ones.

        When both are present they must name the same entry: a bundle whose
        hint and key id disagree has been edited.
        """
        by_hint = next((k for k in self.keys if k.fingerprint == hint), None) if hint else None
        by_id = next((k for k in self.keys if not k.pinned and k.key_id == keyid), None) if keyid else None
        if hint and by_hint is None:
            raise UnknownKeyError(f"unknown key: hint sha256:{hint}{_named(keyid)} is not in {self.source}")
        if by_hint is not None and by_id is not None and by_hint is not by_id:
            raise UnknownKeyError(f"key mismatch: hint names {by_hint.key_id} but keyid names {by_id.key_id}")
        key = by_hint or by_id
        if key is None:
            if not hint and len(self.keys) == 1 and self.keys[0].pinned:
                key = self.keys[0]  # a bundle without a hint (older format), checked against the one key given
            else:
                raise UnknownKeyError(f"unknown key: {('keyid ' + repr(keyid)) if keyid else 'the bundle names no key'}"
                                      f" is not in {self.source}")
        if key.revoked:
            raise RevokedKeyError(f"key {key.key_id} (sha256:{key.fingerprint}) is revoked in {self.source} "
                                  f"since {key.revoked_at or 'an unknown time'}: {key.revoked_reason}")
        return key

    # ------------------------------------------------------------------ updates

    def merged(self, exported: Iterable[TrustedKey]) -> TrustStore:
        """This store plus key versions it lacks; existing entries (and their revocation) are kept.

        A version whose public key differs from the one already trusted is
        refused: Vault never changes a version's key, so that means the wrong
        Vault, a restored backup, or tampering.
        """
        keys = {k.key_id: k for k in self.keys}
        for new in exported:
            old = keys.get(new.key_id)
            if old is None:
                keys[new.key_id] = new
            elif old.fingerprint != new.fingerprint:
                raise TrustStoreError(
                    f"{self.source}: {new.key_id} has fingerprint sha256:{old.fingerprint} here but "
                    f"sha256:{new.fingerprint} in Vault; refusing to replace a trusted key"
                )
        return TrustStore(tuple(keys.values()), source=self.source)

    def revoked(self, name: str, version: int, reason: str, at: datetime | None = None) -> TrustStore:
        """A copy with ``name`` v``version`` marked revoked; revoking twice keeps the first reason."""
        if not reason.strip() or "\n" in reason:
            raise TrustStoreError("a revocation needs a one-line reason")
        target = next((k for k in self.keys if k.name == name and k.version == version), None)
        if target is None:
            known = ", ".join(k.key_id for k in self.keys)
            raise TrustStoreError(f"{self.source} has no key {name}:v{version} (it has {known})")
        if target.revoked:
            return self
        stamp = (at or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
        updated = replace(target, revoked_at=stamp, revoked_reason=reason.strip())
        return TrustStore(tuple(updated if k is target else k for k in self.keys), source=self.source)

    def latest(self, name: str) -> TrustedKey | None:
        versions = [k for k in self.keys if k.name == name]
        return max(versions, key=lambda k: k.version) if versions else None


def _named(keyid: str) -> str:
    return f" (keyid {keyid!r})" if keyid else ""


def _key_from_block(headers: dict[str, str], pem: str, where: str) -> TrustedKey:
    for required in ("Key-Name", "Key-Version", "Fingerprint", "Status"):
        if required not in headers:
            raise TrustStoreError(f"{where}: missing header {required}")
    try:
        version = int(headers["Key-Version"])
    except ValueError:
        raise TrustStoreError(f"{where}: Key-Version {headers['Key-Version']!r} is not an integer") from None
    status = headers["Status"]
    if status not in ("active", "revoked"):
        raise TrustStoreError(f"{where}: Status {status!r} is neither active nor revoked")
    reason = headers.get("Revoked-Reason")
    if (status == "revoked") != bool(reason):
        raise TrustStoreError(f"{where}: Status {status} needs a Revoked-Reason exactly when revoked")
    key = TrustedKey(
        name=headers["Key-Name"], version=version, public_key_pem=pem, created=headers.get("Created"),
        revoked_at=(headers.get("Revoked-At") or None) if reason else None, revoked_reason=reason or None,
    )
    if headers.get("Key-Id", key.key_id) != key.key_id:
        raise TrustStoreError(f"{where}: Key-Id {headers['Key-Id']!r} does not match {key.key_id}")
    if headers["Fingerprint"] != f"sha256:{key.fingerprint}":
        raise TrustStoreError(f"{where}: Fingerprint {headers['Fingerprint']} does not match the PEM below it "
                              f"(sha256:{key.fingerprint})")
    return key


# --------------------------------------------------------------------------- from Vault


def export_from_vault(session: VaultSession) -> TrustStore:
    """Every version of the session's transit key as a trust store (reads public keys only)."""
    from airlock.vault import transit_public_keys

    key_type, versions = transit_public_keys(session)
    name = session.target.key_name
    if key_type != "ecdsa-p256":
        raise TrustStoreError(f"transit key {name} is {key_type!r}, expected ecdsa-p256")
    if not versions:
        raise TrustStoreError(f"transit key {name} has no key versions")
    keys = tuple(
        TrustedKey(name=name, version=v.version, public_key_pem=canonical_pem(v.pem), created=v.created)
        for v in sorted(versions.values(), key=lambda v: v.version)
    )
    return TrustStore(keys, source=f"Vault {session.target.addr} {session.target.transit_mount}/{name}")


def refresh_trust_store(path: Path, session: VaultSession) -> TrustStore:
    """Merge Vault's current key versions into the store at ``path`` (created if absent) and write it."""
    exported = export_from_vault(session)
    path = Path(path)
    current = TrustStore.read(path) if path.exists() else TrustStore((), source=str(path))
    updated = current.merged(exported.keys)
    updated.write(path)
    return TrustStore.read(path)


# --------------------------------------------------------------------------- the host's trust store


def host_trust_store(
    path: Path | None = None,
    *,
    pinned_sha256: str | None = None,
    registry: Registry | None = None,
    env: dict[str, str] | None = None,
) -> TrustStore:
    """The trust store this host verifies with (see the module docstring for the order).

    ``path``/``pinned_sha256`` are the explicit choices (CLI options) and win
    over AIRLOCK_TRUST_STORE/AIRLOCK_TRUST_STORE_SHA256. ``registry`` is only
    consulted for its published ``trust/trust.pem`` when a pin is set and no
    host file is configured. Raises :class:`TrustStoreError` (exit 2 in the CLI):
    none configured, unreadable, malformed, or not the pinned one.
    """
    import hashlib

    from airlock.config import DEFAULT_TRUST_STORE, load_settings

    settings = load_settings(env)
    pin = _normalized_pin(pinned_sha256) if pinned_sha256 is not None else settings.trust_store_sha256
    chosen = Path(path) if path is not None else settings.trust_store
    if chosen is None and DEFAULT_TRUST_STORE.is_file():
        chosen = DEFAULT_TRUST_STORE
    if chosen is not None:
        try:
            data = chosen.read_bytes()
        except OSError as exc:
            raise TrustStoreError(f"cannot read trust store {chosen}: {exc.strerror or exc}") from None
        source = str(chosen)
    elif pin is not None and registry is not None:
        from airlock.registry.base import Layout

        published = registry.store.read(Layout.TRUST_STORE)
        source = registry.store.object_url(Layout.TRUST_STORE)
        if published is None:
            raise TrustStoreError(f"no trust store: AIRLOCK_TRUST_STORE_SHA256 pins one, but {source} does not exist")
        data = published
    else:
        raise TrustStoreError(
            "no trust store configured: pass --trust-store FILE, set AIRLOCK_TRUST_STORE=FILE, or install the "
            f"`airlock keys export` file at {DEFAULT_TRUST_STORE}; a registry's own trust/trust.pem is used only "
            "when its sha256 is pinned on this host (AIRLOCK_TRUST_STORE_SHA256 or --trust-store-sha256)"
        )
    if pin is not None:
        actual = hashlib.sha256(data).hexdigest()
        if actual != pin:
            raise TrustStoreError(f"trust store {source} is sha256:{actual}, but this host pins sha256:{pin}; "
                                  f"refusing to verify with it")
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError as exc:
        raise TrustStoreError(f"cannot read trust store {source}: {exc}") from None
    return TrustStore.parse(text, source=source)


def _normalized_pin(value: str) -> str:
    pin = value.strip().lower().removeprefix("sha256:")
    if len(pin) != 64 or any(c not in "0123456789abcdef" for c in pin):
        raise TrustStoreError(f"trust store pin {value!r} is not a sha256 (64 hex characters, optionally 'sha256:')")
    return pin
