"""Vault failures are retried with backoff and end in an error that says which failure it was."""

from __future__ import annotations

import hvac.exceptions
import pytest
import requests

from airlock.errors import ConfigurationError
from airlock.vault import (
    RetryPolicy,
    VaultError,
    VaultKeyNotFoundError,
    VaultPermissionDeniedError,
    VaultSealedError,
    VaultSession,
    VaultTarget,
    VaultUnavailableError,
    VaultUnreachableError,
    admin_session_from_env,
    signer_session_from_env,
)

TARGET = VaultTarget("http://vault.test:8200", "transit", "airlock-model-signing", "token from AIRLOCK_VAULT_TOKEN")


class Scripted:
    """A client factory whose operation raises the scripted exceptions, then succeeds."""

    def __init__(self, *failures: Exception):
        self.failures = list(failures)
        self.logins = 0
        self.calls = 0

    def factory(self):
        self.logins += 1
        return self

    def operation(self, client) -> str:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return "signed"


def _session(script: Scripted, *, can_relogin: bool = False, attempts: int = 4) -> tuple[VaultSession, list[float]]:
    slept: list[float] = []
    session = VaultSession(TARGET, script.factory, can_relogin=can_relogin,
                           retry=RetryPolicy(attempts=attempts, initial_delay_s=1, max_delay_s=3), sleep=slept.append)
    return session, slept


@pytest.mark.parametrize(
    ("failure", "error", "state"),
    [
        (requests.exceptions.ConnectionError("Connection refused"), VaultUnreachableError, "unreachable"),
        (requests.exceptions.ReadTimeout("read timed out"), VaultUnreachableError, "unreachable"),
        (hvac.exceptions.VaultDown("Vault is sealed, on post /v1/transit/sign/k"), VaultSealedError, "sealed"),
        (hvac.exceptions.VaultDown("standby"), VaultUnavailableError, "unavailable"),
        (hvac.exceptions.InternalServerError("boom"), VaultUnavailableError, "unavailable"),
        (hvac.exceptions.RateLimitExceeded("slow down"), VaultUnavailableError, "unavailable"),
    ],
)
def test_transient_failures_are_retried_then_named(failure, error, state: str) -> None:
    script = Scripted(*[failure] * 10)
    session, slept = _session(script)
    with pytest.raises(error, match=f"Vault at http://vault.test:8200 is {state}: signing failed after 4 attempts"):
        session.call("signing", script.operation)
    assert script.calls == 4 and len(slept) == 3
    assert all(0.5 <= d <= 3 for d in slept) and slept[2] <= 3  # capped, jittered exponential backoff


def test_a_transient_failure_then_success() -> None:
    script = Scripted(requests.exceptions.ConnectionError("refused"), hvac.exceptions.VaultDown("Vault is sealed"))
    session, slept = _session(script)
    assert session.call("signing", script.operation) == "signed"
    assert script.calls == 3 and len(slept) == 2
    assert script.logins == 3  # a fresh client after each failure


def test_permission_denied_with_a_static_token_is_not_retried() -> None:
    script = Scripted(hvac.exceptions.Forbidden("1 error occurred: permission denied"))
    session, slept = _session(script)
    with pytest.raises(VaultPermissionDeniedError, match="denied rotating .* token from AIRLOCK_VAULT_TOKEN"):
        session.call("rotating", script.operation)
    assert script.calls == 1 and slept == []


def test_permission_denied_with_approle_logs_in_once_more() -> None:
    script = Scripted(hvac.exceptions.Forbidden("permission denied"))
    session, _ = _session(script, can_relogin=True)
    assert session.call("signing", script.operation) == "signed"  # an expired token: the re-login fixed it
    script = Scripted(*[hvac.exceptions.Forbidden("permission denied")] * 3)
    session, _ = _session(script, can_relogin=True)
    with pytest.raises(VaultPermissionDeniedError):
        session.call("signing", script.operation)
    assert script.calls == 2 and script.logins == 2


def test_missing_key_and_other_refusals() -> None:
    script = Scripted(hvac.exceptions.InvalidPath("no handler"))
    with pytest.raises(VaultKeyNotFoundError, match="'airlock-model-signing'"):
        _session(script)[0].call("signing", script.operation)
    script = Scripted(hvac.exceptions.InvalidRequest("bad input"))
    with pytest.raises(VaultError, match="refused signing: bad input"):
        _session(script)[0].call("signing", script.operation)


def test_login_failures_are_classified_too() -> None:
    def factory():
        raise requests.exceptions.ConnectionError("refused")

    session = VaultSession(TARGET, factory, can_relogin=True, retry=RetryPolicy(attempts=2), sleep=lambda _: None)
    with pytest.raises(VaultUnreachableError):
        session.call("signing", lambda c: None)


def test_identity_from_the_environment() -> None:
    base = {"AIRLOCK_VAULT_ADDR": "http://v:8200"}
    assert "AIRLOCK_VAULT_TOKEN" in signer_session_from_env({**base, "AIRLOCK_VAULT_TOKEN": "t"}).target.identity
    approle = signer_session_from_env({**base, "AIRLOCK_VAULT_ROLE_ID": "r", "AIRLOCK_VAULT_SECRET_ID": "s"})
    assert "AppRole" in approle.target.identity and approle.target.addr == "http://v:8200"
    with pytest.raises(ConfigurationError, match="AIRLOCK_VAULT_SECRET_ID is not set"):
        signer_session_from_env({**base, "AIRLOCK_VAULT_ROLE_ID": "r"})
    with pytest.raises(ConfigurationError, match="no Vault identity"):
        signer_session_from_env(base)


def test_rotation_never_falls_back_to_the_signer_token() -> None:
    with pytest.raises(ConfigurationError, match="AIRLOCK_VAULT_ADMIN_TOKEN is not set"):
        admin_session_from_env({"AIRLOCK_VAULT_TOKEN": "signer-token"})


def test_secrets_stay_out_of_repr() -> None:
    session = signer_session_from_env({"AIRLOCK_VAULT_TOKEN": "s3cr3t-token"})
    assert "s3cr3t" not in repr(session)
