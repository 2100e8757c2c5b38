"""Credentials in URLs never reach messages, reprs or XCom; untrusted names print as one safe line."""

from __future__ import annotations

import json

import pytest

from airlock.redact import one_line, redact_text, redact_url, safe_text

SECRET = "s3cr3t-T0KEN"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://127.0.0.1:8090", "http://127.0.0.1:8090"),
        ("s3://bucket/prefix/?version=sha256:" + "a" * 64, "s3://bucket/prefix/?version=sha256:" + "a" * 64),
        (f"http://user:{SECRET}@hub.local:8090/api", "http://***@hub.local:8090/api"),
        (f"https://{SECRET}@hub.local", "https://***@hub.local"),
        (f"https://hub.local/x?token={SECRET}&page=2", "https://hub.local/x?token=***&page=2"),
        (f"https://b.s3.amazonaws.com/k?X-Amz-Signature={SECRET}&X-Amz-Credential={SECRET}",
         "https://b.s3.amazonaws.com/k?X-Amz-Signature=***&X-Amz-Credential=***"),
        (f"https://app/cb#access_token={SECRET}", "https://app/cb#access_token=***"),
        (f"http://u:{SECRET}@[::1:80/", "http://***@[::1:80/"),  # unparseable: redacted by pattern
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected
    assert SECRET not in redact_url(url)


def test_redact_text_finds_urls_inside_messages() -> None:
    message = f'Could not connect to the endpoint URL: "http://ak:{SECRET}@127.0.0.1:1/bucket?list-type=2"'
    assert redact_text(message) == 'Could not connect to the endpoint URL: "http://***@127.0.0.1:1/bucket?list-type=2"'


def test_safe_text_escapes_what_could_drive_a_terminal() -> None:
    undecodable = b"\xff\x1b]0;pwned\x07.bin".decode("utf-8", "surrogateescape")  # what os.listdir yields
    assert safe_text(undecodable) == "\\xff\\x1b]0;pwned\\x07.bin"
    assert safe_text(b"\xfe-weights.bin") == "\\xfe-weights.bin"
    assert safe_text("a\u202egnp.exe") == "a\\u202egnp.exe"  # right-to-left override
    assert safe_text("line\nbreak\\n") == "line\\x0abreak\\\\n"  # a real backslash stays distinguishable
    assert safe_text("mötley-crüe/modèle 1") == "mötley-crüe/modèle 1"  # printable text is kept as is
    assert one_line(f"bad\nname at http://u:{SECRET}@h/x") == "bad\\x0aname at http://***@h/x"


# --------------------------------------------------------------------------- where URLs are stored and raised


class _FakeHfApi:
    COMMIT = "c" * 40

    def __init__(self, endpoint: str, token: object) -> None:
        self.endpoint = endpoint

    def model_info(self, repo_id: str, revision: str):
        class Info:
            sha = _FakeHfApi.COMMIT

        return Info()

    def list_repo_tree(self, repo_id: str, revision: str, recursive: bool):
        from huggingface_hub.hf_api import RepoFile

        return [RepoFile(path="config.json", size=2, oid="b" * 40)]


def test_resolved_source_never_stores_endpoint_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    from airlock.connections import HubAccess
    from airlock.sources import ResolvedSource, fetcher_for, resolve

    monkeypatch.setattr(huggingface_hub, "HfApi", _FakeHfApi)
    endpoint = f"http://bot:{SECRET}@hub.local:8090"
    resolved = resolve("hf://demo/x", None, endpoint=endpoint)
    assert resolved.endpoint == "http://***@hub.local:8090"
    stored = json.dumps(resolved.to_json_dict())
    assert SECRET not in stored and SECRET not in repr(resolved)
    # Read back from XCom, the fetcher takes the real URL from the connection, never from the record.
    again = ResolvedSource.model_validate(json.loads(stored))
    hub = HubAccess(endpoint=endpoint)
    fetcher = fetcher_for(again, hub=hub)
    assert fetcher.endpoint == endpoint
    assert SECRET not in repr(fetcher) and SECRET not in repr(hub)
    # A record someone built with the credential in it is redacted on construction, too.
    assert SECRET not in ResolvedSource.model_validate({**json.loads(stored), "endpoint": endpoint}).endpoint


def test_fetcher_refuses_a_redacted_endpoint_the_connection_does_not_match(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    from airlock.connections import HubAccess
    from airlock.errors import SourceError
    from airlock.sources import fetcher_for, resolve

    monkeypatch.setattr(huggingface_hub, "HfApi", _FakeHfApi)
    resolved = resolve("hf://demo/x", None, endpoint=f"http://bot:{SECRET}@hub.local:8090")
    with pytest.raises(SourceError, match="hub connection points to http://other") as info:
        fetcher_for(resolved, hub=HubAccess(endpoint="http://other:8090"))
    assert SECRET not in str(info.value)


def test_hub_errors_name_the_endpoint_redacted() -> None:
    from airlock.errors import SourceUnavailable
    from airlock.sources import resolve

    with pytest.raises(SourceUnavailable, match=r"on http://\*\*\*@127\.0\.0\.1:9") as info:
        resolve("hf://demo/x", None, endpoint=f"http://bot:{SECRET}@127.0.0.1:9")
    assert SECRET not in str(info.value)


def test_s3_access_and_vault_target_reprs_are_redacted() -> None:
    from airlock.connections import S3Access
    from airlock.vault import VaultTarget

    access = S3Access(endpoint=f"http://ak:{SECRET}@minio:9000", access_key_id="AK", secret_access_key=SECRET)
    assert SECRET not in repr(access) and SECRET not in access.where
    target = VaultTarget(f"https://ops:{SECRET}@vault:8200", "transit", "k", "token")
    assert target.addr == "https://***@vault:8200" and SECRET not in repr(target)


def test_registry_url_with_credentials_is_refused_without_echoing_them() -> None:
    from airlock.registry import RegistryError, open_registry

    with pytest.raises(RegistryError) as info:
        open_registry(f"s3://ak:{SECRET}@bucket/registry", s3_client=object())
    assert SECRET not in str(info.value)
    with pytest.raises(RegistryError) as info:
        open_registry(f"https://ak:{SECRET}@example.com/registry")
    assert SECRET not in str(info.value)
