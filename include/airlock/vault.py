"""Talking to Vault/OpenBao Transit: who we are, retries with backoff, and errors that say what went wrong.

Two identities exist and never mix:

* the **signer** (the pipeline): ``AIRLOCK_VAULT_TOKEN``, or an AppRole
  (``AIRLOCK_VAULT_ROLE_ID`` + ``AIRLOCK_VAULT_SECRET_ID``), or the Airflow
  connection ``airlock_vault``. Its policy (include/vault/airlock-signer.hcl)
  allows signing and reading public keys only.
* the **key admin** (a human or a break-glass job): ``AIRLOCK_VAULT_ADMIN_TOKEN``
  with include/vault/airlock-key-admin.hcl; only it can rotate.

Every Vault call goes through :meth:`VaultSession.call`, which retries the
failures that can heal (unreachable, sealed, 5xx, rate limited) with capped,
jittered exponential backoff and then raises a distinct exception type, so an
operator reading a failed task log knows whether to fix the network, unseal, or
fix a policy. hvac and requests are imported here at module level: this module
is only used where Vault is (signing, key admin), never by verification.
"""

from __future__ import annotations

import base64
import logging
import os
import random
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

import hvac
import hvac.exceptions
import requests

from airlock.config import load_settings
from airlock.errors import AirlockError, ConfigurationError

VAULT_CONN_ID = "airlock_vault"
REQUEST_TIMEOUT_S = 10.0

log = logging.getLogger(__name__)
T = TypeVar("T")


class VaultError(AirlockError):
    """Vault refused or failed a request; subclasses say which way."""


class VaultUnreachableError(VaultError):
    """No answer from Vault (connection refused, DNS, timeout) after every retry."""


class VaultSealedError(VaultError):
    """Vault answered that it is sealed after every retry: an operator must unseal it."""


class VaultUnavailableError(VaultError):
    """Vault answered 5xx / 429 (standby, overloaded, internal error) after every retry."""


class VaultPermissionDeniedError(VaultError):
    """Vault denied the request: the identity's policy does not allow it (not retried beyond one re-login)."""


class VaultKeyNotFoundError(VaultError):
    """The transit mount or key does not exist."""


# --------------------------------------------------------------------------- retry policy


@dataclass(frozen=True)
class RetryPolicy:
    """Capped exponential backoff with jitter; ``attempts`` counts the first try."""

    attempts: int = 5
    initial_delay_s: float = 0.5
    max_delay_s: float = 8.0
    multiplier: float = 2.0

    def delays(self) -> Iterator[float]:
        """The sleep before each retry (``attempts - 1`` values), jittered so parallel tasks spread out."""
        delay = self.initial_delay_s
        for _ in range(self.attempts - 1):
            yield min(delay, self.max_delay_s) * random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not crypto
            delay *= self.multiplier


# --------------------------------------------------------------------------- identities


ClientFactory = Callable[[], hvac.Client]


@dataclass(frozen=True)
class VaultTarget:
    """Where the transit key lives and which identity talks to it (no secrets: safe to log)."""

    addr: str  # redacted on construction: it is for messages; clients get the real address separately
    transit_mount: str
    key_name: str
    identity: str  # e.g. "token from AIRLOCK_VAULT_TOKEN", "AppRole from connection airlock_vault"

    def __post_init__(self) -> None:
        from airlock.redact import redact_url

        object.__setattr__(self, "addr", redact_url(self.addr))


@dataclass(frozen=True)
class _Credentials:
    token: str | None = field(default=None, repr=False)
    role_id: str | None = field(default=None, repr=False)
    secret_id: str | None = field(default=None, repr=False)


def _client_factory(addr: str, credentials: _Credentials) -> ClientFactory:
    def make() -> hvac.Client:
        if credentials.token:
            return hvac.Client(url=addr, token=credentials.token, timeout=REQUEST_TIMEOUT_S)
        client = hvac.Client(url=addr, timeout=REQUEST_TIMEOUT_S)
        client.auth.approle.login(role_id=credentials.role_id, secret_id=credentials.secret_id)
        return client

    return make


def signer_session_from_env(env: Mapping[str, str] | None = None, retry: RetryPolicy | None = None) -> VaultSession:
    """The pipeline's signer identity from the environment: a token, else an AppRole."""
    env = dict(os.environ if env is None else env)
    settings = load_settings(env)
    token = env.get("AIRLOCK_VAULT_TOKEN") or None
    role_id, secret_id = env.get("AIRLOCK_VAULT_ROLE_ID") or None, env.get("AIRLOCK_VAULT_SECRET_ID") or None
    if token:
        credentials, identity = _Credentials(token=token), "token from AIRLOCK_VAULT_TOKEN"
    elif role_id and secret_id:
        credentials = _Credentials(role_id=role_id, secret_id=secret_id)
        identity = "AppRole from AIRLOCK_VAULT_ROLE_ID/AIRLOCK_VAULT_SECRET_ID"
    elif role_id or secret_id:
        missing = "AIRLOCK_VAULT_SECRET_ID" if role_id else "AIRLOCK_VAULT_ROLE_ID"
        raise ConfigurationError(f"AppRole login needs both AIRLOCK_VAULT_ROLE_ID and AIRLOCK_VAULT_SECRET_ID; "
                                 f"{missing} is not set")
    else:
        raise ConfigurationError("no Vault identity: set AIRLOCK_VAULT_TOKEN, or AIRLOCK_VAULT_ROLE_ID and "
                                 "AIRLOCK_VAULT_SECRET_ID (`. .airlock/env` for the local stack)")
    target = VaultTarget(settings.vault_addr, settings.transit_mount, settings.signing_key, identity)
    # A static token cannot be renewed by logging in again; an AppRole can.
    return VaultSession(target, _client_factory(settings.vault_addr, credentials),
                        can_relogin=not token, retry=retry)


def admin_session_from_env(env: Mapping[str, str] | None = None, retry: RetryPolicy | None = None) -> VaultSession:
    """The key-admin identity (rotation): ``AIRLOCK_VAULT_ADMIN_TOKEN`` only, never the signer's token."""
    env = dict(os.environ if env is None else env)
    settings = load_settings(env)
    token = env.get("AIRLOCK_VAULT_ADMIN_TOKEN") or None
    if not token:
        raise ConfigurationError(
            "AIRLOCK_VAULT_ADMIN_TOKEN is not set: rotating the signing key needs a key-admin token "
            "(policy include/vault/airlock-key-admin.hcl); the pipeline's signer token cannot rotate"
        )
    target = VaultTarget(settings.vault_addr, settings.transit_mount, settings.signing_key,
                         "key-admin token from AIRLOCK_VAULT_ADMIN_TOKEN")
    return VaultSession(target, _client_factory(settings.vault_addr, _Credentials(token=token)),
                        can_relogin=False, retry=retry)


def signer_session_from_connection(conn_id: str = VAULT_CONN_ID, retry: RetryPolicy | None = None) -> VaultSession:
    """The signer identity from the Airflow connection ``conn_id`` (type ``vault``), via the hashicorp provider.

    The provider handles every auth type the connection may use (``approle``:
    login = role_id, password = secret_id). The extra may name
    ``transit_mount`` and ``signing_key``; otherwise the environment's settings
    apply. Airflow is imported here, lazily, so the library stays Airflow-free.
    """
    from airflow.providers.hashicorp.hooks.vault import VaultHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    settings = load_settings()
    try:
        conn = VaultHook(vault_conn_id=conn_id).connection
    except AirflowNotFoundException:
        raise ConfigurationError(
            f"Airflow connection {conn_id!r} is not defined (type vault: host/port/schema of Vault, "
            f"login = AppRole role_id, password = secret_id, extra {{\"auth_type\": \"approle\"}})"
        ) from None
    extra = conn.extra_dejson or {}
    scheme = conn.schema or "https"
    port = f":{conn.port}" if conn.port else ""
    target = VaultTarget(
        addr=f"{scheme}://{conn.host}{port}",
        transit_mount=extra.get("transit_mount") or settings.transit_mount,
        key_name=extra.get("signing_key") or settings.signing_key,
        identity=f"{extra.get('auth_type') or 'token'} from Airflow connection {conn_id}",
    )

    def make() -> hvac.Client:
        # A fresh hook per client: its login is cached on the hook, and a re-login must really log in again.
        return VaultHook(vault_conn_id=conn_id).get_conn()

    return VaultSession(target, make, can_relogin=True, retry=retry)


# --------------------------------------------------------------------------- the session


class VaultSession:
    """One identity's access to one transit key, with retries and classified errors."""

    def __init__(
        self,
        target: VaultTarget,
        client_factory: ClientFactory,
        *,
        can_relogin: bool,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.target = target
        self._factory = client_factory
        self._can_relogin = can_relogin
        self._retry = retry or RetryPolicy()
        self._sleep = sleep
        self._client: hvac.Client | None = None

    def __repr__(self) -> str:
        return f"VaultSession({self.target!r})"

    def call(self, what: str, operation: Callable[[hvac.Client], T]) -> T:
        """Run ``operation`` with a logged-in client; ``what`` names the request in errors ("sign with ...")."""
        delays = self._retry.delays()
        relogged = False
        attempt = 0
        while True:
            attempt += 1
            try:
                if self._client is None:
                    self._client = self._factory()
                return operation(self._client)
            except (hvac.exceptions.Forbidden, hvac.exceptions.Unauthorized) as exc:
                self._client = None
                if self._can_relogin and not relogged:
                    # An expired AppRole token reads as 403; one fresh login tells expiry from a real denial.
                    relogged = True
                    log.warning("Vault denied %s; logging in again once", what)
                    continue
                raise VaultPermissionDeniedError(
                    f"Vault at {self.target.addr} denied {what} for the {self.target.identity}: {_first_line(exc)} "
                    f"(check the identity's policy; the signer policy allows only signing and reading public keys)"
                ) from exc
            except hvac.exceptions.InvalidPath as exc:
                raise VaultKeyNotFoundError(
                    f"Vault at {self.target.addr}: {what}: transit key {self.target.key_name!r} "
                    f"or mount {self.target.transit_mount!r} not found ({_first_line(exc)})"
                ) from exc
            except _TRANSIENT as exc:
                self._client = None
                error_type, state = _classify_transient(exc)
                delay = next(delays, None)
                if delay is None:
                    raise error_type(
                        f"Vault at {self.target.addr} is {state}: {what} failed after {attempt} attempts "
                        f"({_first_line(exc)})"
                    ) from exc
                log.warning("Vault %s during %s (attempt %d); retrying in %.1fs", state, what, attempt, delay)
                self._sleep(delay)
            except hvac.exceptions.VaultError as exc:
                raise VaultError(f"Vault at {self.target.addr} refused {what}: {_first_line(exc)}") from exc


_TRANSIENT: tuple[type[Exception], ...] = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    hvac.exceptions.VaultDown,
    hvac.exceptions.InternalServerError,
    hvac.exceptions.BadGateway,
    hvac.exceptions.RateLimitExceeded,
    hvac.exceptions.UnexpectedError,
)


def _classify_transient(exc: Exception) -> tuple[type[VaultError], str]:
    if isinstance(exc, requests.exceptions.RequestException):
        return VaultUnreachableError, "unreachable"
    if isinstance(exc, hvac.exceptions.VaultDown) and "sealed" in str(exc).lower():
        return VaultSealedError, "sealed"
    return VaultUnavailableError, "unavailable"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# --------------------------------------------------------------------------- transit operations


@dataclass(frozen=True)
class TransitSignature:
    key_version: int
    der: bytes


@dataclass(frozen=True)
class TransitPublicKey:
    version: int
    pem: str
    created: str | None


def transit_sign_prehashed(session: VaultSession, sha256_digest: bytes) -> TransitSignature:
    """ECDSA over a sha256 digest we computed (prehashed sha2-256, ASN.1 DER), with the latest key version."""
    if len(sha256_digest) != 32:
        raise ValueError(f"expected a 32-byte sha256 digest, got {len(sha256_digest)} bytes")
    target = session.target

    def sign(client: hvac.Client) -> dict:
        return client.secrets.transit.sign_data(
            target.key_name,
            hash_input=base64.b64encode(sha256_digest).decode("ascii"),
            hash_algorithm="sha2-256",
            prehashed=True,
            marshaling_algorithm="asn1",
            mount_point=target.transit_mount,
        )

    response = session.call(f"signing with transit key {target.transit_mount}/{target.key_name}", sign)
    return _parse_transit_signature(response, target)


def _parse_transit_signature(response: dict, target: VaultTarget) -> TransitSignature:
    # Transit answers "vault:v<version>:<base64 DER>"; the version tells which public key verifies it.
    value = str((response.get("data") or {}).get("signature", ""))
    prefix, _, rest = value.partition(":")
    version, _, encoded = rest.partition(":")
    if prefix != "vault" or not version.startswith("v") or not version[1:].isdigit() or not encoded:
        raise VaultError(f"Vault returned an unexpected signature format for {target.key_name}: {value[:40]!r}")
    return TransitSignature(int(version[1:]), base64.b64decode(encoded))


def transit_public_keys(session: VaultSession) -> tuple[str, dict[int, TransitPublicKey]]:
    """The key type and the public key of every version of the transit key (``read`` on ``transit/keys/<name>``)."""
    target = session.target
    response = session.call(
        f"reading public keys of transit key {target.transit_mount}/{target.key_name}",
        lambda c: c.secrets.transit.read_key(target.key_name, mount_point=target.transit_mount),
    )
    data = response.get("data") or {}
    keys: dict[int, TransitPublicKey] = {}
    for version, entry in (data.get("keys") or {}).items():
        pem = entry.get("public_key") if isinstance(entry, dict) else None
        if not pem:
            raise VaultError(f"transit key {target.key_name} v{version} has no public key (is it an asymmetric key?)")
        keys[int(version)] = TransitPublicKey(int(version), pem, entry.get("creation_time"))
    return str(data.get("type", "")), keys


def transit_rotate(session: VaultSession) -> int:
    """Rotate the transit key (needs the key-admin policy); returns the new latest version."""
    target = session.target
    session.call(
        f"rotating transit key {target.transit_mount}/{target.key_name}",
        lambda c: c.secrets.transit.rotate_key(target.key_name, mount_point=target.transit_mount),
    )
    response = session.call(
        f"reading transit key {target.transit_mount}/{target.key_name} after rotation",
        lambda c: c.secrets.transit.read_key(target.key_name, mount_point=target.transit_mount),
    )
    return int((response.get("data") or {})["latest_version"])
