"""Rewriting Data Docs pages so that opening them fetches nothing from the network (synthetic pages)."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
from airlock.fingerprint.docs_offline import (
    ASSETS,
    DocsNotOffline,
    external_loads,
    make_offline,
)

JQUERY = "https://code.jquery.com/jquery-3.7.1.min.js"
POPPER = "https://cdnjs.cloudflare.com/ajax/libs/popper.js/1.12.9/umd/popper.min.js"
FA = "https://cdnjs.cloudflare.com/ajax/libs/font-awesome/6.6.0/css/all.min.css"
LOGO = "https://great-expectations-web-assets.s3.us-east-2.amazonaws.com/logo-long.png?d=20260101T000000Z"
DARK_LOGO = "https://great-expectations-web-assets.s3.us-east-2.amazonaws.com/full_logo_dark.png"


def _sri(data: bytes) -> str:
    return "sha384-" + base64.b64encode(hashlib.sha384(data).digest()).decode()


def _vendor(tmp_path, files: dict[str, bytes], record: dict[str, bytes] | None = None):
    root = tmp_path / "vendor"
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    recorded = files if record is None else record
    root.mkdir(exist_ok=True)
    (root / "MANIFEST.json").write_text(json.dumps(
        {"files": {rel: hashlib.sha256(data).hexdigest() for rel, data in recorded.items()}}))
    return root


def _site(tmp_path, body: str):
    site = tmp_path / "site"
    (site / "static" / "images").mkdir(parents=True)
    (site / "static" / "images" / "logo-long.png").write_bytes(b"png")
    page = site / "validations" / "run" / "page.html"
    page.parent.mkdir(parents=True)
    page.write_text(body)
    return site, page


JQ_BYTES, POPPER_BYTES = b"/* jquery */", b"/* popper */"


def _page(popper_integrity: str) -> str:
    return f"""<html><head>
<link rel="stylesheet" href="{FA}">
<link rel="canonical" href="https://example.org/not-fetched">
<script src="{JQUERY}"></script>
<script src="{POPPER}" integrity="{popper_integrity}" crossorigin="anonymous"></script>
<script src="https://cdn.example.com/unknown.js"></script>
<style>.navbar {{ background: url('{DARK_LOGO}') 0 0 no-repeat; }}</style>
</head><body><img src="{LOGO}"><a href="https://greatexpectations.io">docs</a>
<table><tr><td>p01</td><td>0.5</td></tr></table></body></html>"""


def test_vendored_assets_are_served_locally_and_the_rest_removed(tmp_path):
    fa = ASSETS[FA]
    vendor = _vendor(tmp_path, {
        f"jquery@3.7.1/{ASSETS[JQUERY].path}": JQ_BYTES,
        f"popper.js@1.12.9/{ASSETS[POPPER].path}": POPPER_BYTES,
        f"{fa.package}/{fa.path}": b"@font-face{src:url(../webfonts/fa.woff2)}",
        f"{fa.package}/webfonts/fa.woff2": b"font",
    })
    site, page = _site(tmp_path, _page(_sri(POPPER_BYTES)))
    report = make_offline(site, vendor=vendor)
    html = page.read_text()
    assert external_loads(html) == []
    assert '<script src="../../static/vendor/jquery@3.7.1/dist/jquery.min.js"></script>' in html
    assert 'src="../../static/vendor/popper.js@1.12.9/dist/umd/popper.min.js"' in html
    assert "integrity" not in html and "crossorigin" not in html
    assert (site / "static/vendor/@fortawesome/fontawesome-free@6.6.0/webfonts/fa.woff2").read_bytes() == b"font"
    assert 'src="../../static/images/logo-long.png"' in html
    assert "url('../../static/images/logo-long.png')" in html
    assert "unknown.js" not in html
    assert 'href="https://greatexpectations.io"' in html  # a link fetches nothing until clicked
    assert 'rel="canonical" href="https://example.org/not-fetched"' in html
    assert "<td>p01</td>" in html
    assert report.removed == ("https://cdn.example.com/unknown.js",)
    assert JQUERY in report.vendored and LOGO in report.vendored


def test_a_file_that_does_not_match_its_integrity_hash_is_not_served(tmp_path):
    vendor = _vendor(tmp_path, {f"popper.js@1.12.9/{ASSETS[POPPER].path}": POPPER_BYTES})
    site, page = _site(tmp_path, _page(_sri(b"something else")))
    report = make_offline(site, vendor=vendor)
    assert POPPER in report.removed and "popper" not in page.read_text()


def test_a_vendored_file_changed_since_it_was_recorded_is_not_served(tmp_path):
    vendor = _vendor(tmp_path, {f"jquery@3.7.1/{ASSETS[JQUERY].path}": b"/* tampered */"},
                     record={f"jquery@3.7.1/{ASSETS[JQUERY].path}": JQ_BYTES})
    site, page = _site(tmp_path, _page(_sri(POPPER_BYTES)))
    report = make_offline(site, vendor=vendor)
    assert JQUERY in report.removed and "jquery" not in page.read_text()
    assert not (site / "static" / "vendor" / "jquery@3.7.1").exists()


def test_without_a_vendor_directory_every_external_asset_is_dropped(tmp_path):
    site, page = _site(tmp_path, _page(_sri(POPPER_BYTES)))
    report = make_offline(site, vendor=tmp_path / "absent")
    html = page.read_text()
    assert external_loads(html) == []
    assert set(report.removed) >= {JQUERY, POPPER, FA}
    assert "<td>p01</td>" in html and 'src="../../static/images/logo-long.png"' in html


def test_an_external_loader_it_does_not_rewrite_fails_closed(tmp_path):
    site, _ = _site(tmp_path, '<iframe src="https://tracker.example.com/x"></iframe>')
    with pytest.raises(DocsNotOffline, match="still loads an external asset"):
        make_offline(site, vendor=tmp_path / "absent")


def test_css_files_of_the_site_are_rewritten_too(tmp_path):
    site, _ = _site(tmp_path, "<p>x</p>")
    css = site / "static" / "styles" / "default.css"
    css.parent.mkdir(parents=True)
    css.write_text(f".logo {{ background: url('{DARK_LOGO}'); }} .x {{ background: url(//cdn.example.com/a.png); }}")
    make_offline(site, vendor=tmp_path / "absent")
    text = css.read_text()
    assert "url('../images/logo-long.png')" in text and "cdn.example.com" not in text
