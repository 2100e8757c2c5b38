"""The Registry page in the running Airflow UI, driven with Debian's Chromium through Playwright.

A Vault-signed ``demo/tiny-gpt2`` version is promoted into the stack's registry (AIRLOCK_REGISTRY) through the
library, as model_ingest would; then, in the browser: log in as admin, open "Model Registry" from the
navigation, find the model, revoke one version from its page, and see it shown as revoked next to one that
is not. The revocation is then checked in the index with the host trust store (signed checkpoint, the admin as
actor), a non-admin's revoke is refused with 403 over REST, and a cookie POST without the form token is
refused too. A screenshot of the UI is saved under the test's tmp dir (path printed) and copied to
/tmp/registry-page.png.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from airlock.registry import open_registry
from airlock.signing import VaultTransitSigner
from airlock.trust import host_trust_store
from tests.conftest import REPO, require_env
from tests.registry_page_fixtures import promote_version

MODEL = "demo/tiny-gpt2"
CHROMIUM = "/usr/bin/chromium"
SCREENSHOT_COPY = Path("/tmp/registry-page.png")
# What `make demo` ingests demo/tiny-gpt2 as (scripts/demo.py): the model record is fixed at its first release,
# so a version promoted here must not define a different one.
DEMO_OWNER, DEMO_TIER, DEMO_SOURCE = "ml-platform", "high", "hf://demo/tiny-gpt2"


def _passwords() -> dict[str, str]:
    state = Path(os.environ.get("AIRLOCK_STATE_DIR", REPO / ".airlock"))
    return json.loads((state / "secrets" / "airflow-passwords.json").read_text())


def _user(passwords: dict[str, str], role_hint: str) -> str:
    user = {"admin": "admin", "non-admin": "operator"}[role_hint]
    if user not in passwords:
        pytest.fail(f"Airflow user {user!r} is not in the stack's passwords file: restart Airflow with the current "
                    f"scripts/stack.py (`scripts/stack.py up --only airflow`)")
    return user


@pytest.fixture(scope="module")
def versions(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """Two fresh Vault-signed versions of demo/tiny-gpt2 in the stack's registry, with check records."""
    require_env("AIRLOCK_VAULT_TOKEN")
    registry = open_registry(require_env("AIRLOCK_REGISTRY"), signer=VaultTransitSigner.from_env(),
                             trust=host_trust_store())
    state = registry.model_state(MODEL, verified=True)
    owner = state.owner if state and state.owner else DEMO_OWNER
    tier = state.risk_tier.value if state and state.risk_tier else DEMO_TIER
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    made = (f"e2e-{stamp}-a", f"e2e-{stamp}-b")
    base = tmp_path_factory.mktemp("registry-page")
    for version in made:
        promote_version(registry, base, registry.signer, model=MODEL, version=version, owner=owner,
                        risk_tier=tier, source=DEMO_SOURCE, run_id=f"e2e__{stamp}", approver="tests/e2e")
        for check, verdict, target in (("integrity", "pass", "registry"), ("integrity", "pass", "registry"),
                                       ("fingerprint", "pass", "cpu/float32")):
            registry.record_check(MODEL, version, check=check, verdict=verdict, target=target,
                                  summary="recorded by tests/e2e/test_registry_page.py",
                                  actor="tests/e2e/test_registry_page")
    return made


def test_admin_revokes_from_the_registry_page(versions: tuple[str, str], tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    url = require_env("AIRLOCK_AIRFLOW_URL").rstrip("/")
    passwords = _passwords()
    admin = _user(passwords, "admin")
    revoked, kept = versions
    reason = f"e2e: revoked from the Registry page ({revoked})"
    screenshot = tmp_path / "registry-page.png"

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            # Not signed in: the page sends the browser to Airflow's login.
            anonymous = browser.new_page()
            anonymous.goto(f"{url}/registry/")
            expect(anonymous).to_have_url(re.compile(r"/auth/login\?next="))
            anonymous.close()

            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.goto(f"{url}/")
            page.locator('input[name="username"]').fill(admin)
            page.locator('input[name="password"]').fill(passwords[admin])
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(re.compile(r"^(?!.*/auth/login)"))

            # The navigation entry opens the page inside the Airflow UI.
            page.get_by_role("link", name="Model Registry").first.click()
            expect(page).to_have_url(re.compile(r"/plugin/registry"))
            frame = page.frame_locator('iframe[title="Model Registry"]')
            model = frame.locator('section[data-model="demo/tiny-gpt2"]')
            expect(model).to_be_visible(timeout=30_000)
            row = model.locator(f'tr[data-version="{revoked}"]')
            expect(row.locator(".status")).to_have_text("approved")
            expect(row.locator("td.check svg").first).to_be_visible()  # the trend plot of its check records
            expect(row.get_by_role("link", name="AI-BOM")).to_be_visible()
            expect(row.get_by_role("link", name="ingest run")).to_be_visible()

            # The AI-BOM link serves the CycloneDX document the signed plan names.
            bom = page.request.get(url + row.get_by_role("link", name="AI-BOM").get_attribute("href"))
            assert bom.status == 200 and bom.json()["bomFormat"] == "CycloneDX"

            row.get_by_role("link", name=revoked, exact=True).click()
            frame.locator('input[name="reason"]').fill(reason)
            frame.get_by_role("button", name=re.compile(r"^Revoke ")).click()
            expect(frame.locator("#status")).to_have_text("revoked", timeout=60_000)
            expect(frame.locator("#status-reason")).to_contain_text(reason)
            expect(frame.locator("#status-reason")).to_contain_text("airflow-ui:admin")
            page.screenshot(path=str(tmp_path / "registry-version-revoked.png"))

            frame.get_by_role("link", name="all models").click()
            expect(model.locator(f'tr[data-version="{revoked}"] .status')).to_have_text("revoked")
            expect(model.locator(f'tr[data-version="{kept}"] .status')).to_have_text("approved")
            model.locator(f'tr[data-version="{revoked}"]').scroll_into_view_if_needed()
            page.screenshot(path=str(screenshot))

            # A cookie POST without the page's form token is refused (CSRF), even for the admin.
            forged = page.request.post(
                f"{url}/registry/models/demo/tiny-gpt2/versions/{kept}/revoke", form={"reason": "forged"})
            assert forged.status == 403, forged.text()
        finally:
            browser.close()

    shutil.copyfile(screenshot, SCREENSHOT_COPY)
    print(f"screenshots: {screenshot}, {tmp_path / 'registry-version-revoked.png'} (the first copied to "
          f"{SCREENSHOT_COPY})")

    # The index, read as a pull reads it: revoked by the admin, covered by a signed checkpoint.
    reader = open_registry(require_env("AIRLOCK_REGISTRY"), trust=host_trust_store())
    state = reader.verify_index(MODEL).state
    assert state is not None
    assert (state.version(revoked).status.value, state.version(revoked).reason,
            state.version(revoked).updated_by) == ("revoked", reason, "airflow-ui:admin")
    assert state.version(kept).status.value == "approved"


def test_non_admin_gets_403_on_revoke(versions: tuple[str, str]) -> None:
    url = require_env("AIRLOCK_AIRFLOW_URL").rstrip("/")
    passwords = _passwords()
    user = _user(passwords, "non-admin")
    _, kept = versions
    target = f"{url}/registry/models/demo/tiny-gpt2/versions/{kept}/revoke"
    with httpx.Client(timeout=60) as client:
        token = client.post(f"{url}/auth/token", json={"username": user, "password": passwords[user]})
        assert token.status_code == 201, token.text
        bearer = {"Authorization": f"Bearer {token.json()['access_token']}"}
        listing = client.get(f"{url}/registry/api/models", params={"q": MODEL}, headers=bearer)
        assert listing.status_code == 200  # a signed-in non-admin may look
        assert kept in {v["version"] for m in listing.json()["models"] for v in m["versions"]}
        refused = client.post(target, json={"reason": "not mine to revoke"}, headers=bearer)
        assert refused.status_code == 403, refused.text
        assert client.post(target, json={"reason": "anonymous"}).status_code == 401
    state = open_registry(require_env("AIRLOCK_REGISTRY"), trust=host_trust_store()).verify_index(MODEL).state
    assert state.version(kept).status.value == "approved"
