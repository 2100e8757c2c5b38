"""The local Vault keeps its signing key across a restart.

Regression: the stack used `bao server -dev`, which keeps keys in memory; after
`make stack-down && make stack-up` every version already in the local registry
was signed by a key that no longer existed, and `airlock pull` refused it.
"""

from __future__ import annotations


import hvac
import pytest

from tests.conftest import require_env


def _public_keys(addr: str, token: str) -> dict[str, str]:
    client = hvac.Client(url=addr, token=token)
    key = client.secrets.transit.read_key("airlock-model-signing", mount_point="transit")["data"]
    return {version: data["public_key"] for version, data in key["keys"].items()}


@pytest.mark.slow
def test_signing_key_and_signer_token_survive_a_vault_restart(stack) -> None:
    addr, token = require_env("AIRLOCK_VAULT_ADDR"), require_env("AIRLOCK_VAULT_TOKEN")
    before = _public_keys(addr, token)
    state = stack.State.from_env()
    assert stack.stop_process_tree(state, "vault")
    assert not stack.vault_healthy()
    stack.start_vault(state)
    assert stack.vault_healthy()
    assert _public_keys(addr, token) == before
