"""Make a great-expectations Data Docs site render without any network access.

GX 1.24's pages load CSS/JS from public CDNs (bootstrap, jquery, bootstrap-table, font-awesome,
popper, datepicker, vega) and the navbar logo from the vendor's bucket with a timestamp in the query
string -- a request to the internet every time a page is opened. This module rewrites every page:

- an asset listed in :data:`ASSETS` is served from the site's own ``static/vendor/`` folder, copied from
  a local vendor directory that ``scripts/vendor_docs_assets.py`` fills at install time with the
  same files from the npm registry (exact versions pinned here; files checked against the sha256
  recorded when vendored, and against the page's own SRI ``integrity`` hash where it has one);
- the logo points at the copy GX already writes into ``static/images/``;
- any other external asset, or a listed one whose vendored copy is missing or does not match, is
  removed from the page (the page then loses that styling or script, never its data tables).

Links a user must click (``<a href>``) are left alone: they fetch nothing by themselves. After the
rewrite the site is scanned again; any remaining external auto-loaded reference raises
:class:`DocsNotOffline` (fail closed).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from airlock.errors import AirlockError

DEFAULT_VENDOR_DIR = Path(__file__).resolve().parent / "vendor"
MANIFEST_NAME = "MANIFEST.json"
_LOGO_HOST = "https://great-expectations-web-assets.s3.us-east-2.amazonaws.com/"
_LOCAL_LOGO = "static/images/logo-long.png"


@dataclass(frozen=True)
class Asset:
    package: str  # npm "name@version", pinned
    path: str  # file inside the package
    also: tuple[str, ...] = ()  # directories the file refers to (font-awesome's ../webfonts)


# URL as GX 1.24's templates write it -> the npm file a CDN serves for it.
ASSETS: dict[str, Asset] = {
    "https://code.jquery.com/jquery-3.7.1.min.js": Asset("jquery@3.7.1", "dist/jquery.min.js"),
    "https://cdnjs.cloudflare.com/ajax/libs/popper.js/1.12.9/umd/popper.min.js":
        Asset("popper.js@1.12.9", "dist/umd/popper.min.js"),
    "https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css":
        Asset("bootstrap@4.3.1", "dist/css/bootstrap.min.css"),
    "https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js":
        Asset("bootstrap@4.3.1", "dist/js/bootstrap.min.js"),
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.css":
        Asset("bootstrap-table@1.19.1", "dist/bootstrap-table.min.css"),
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.js":
        Asset("bootstrap-table@1.19.1", "dist/bootstrap-table.min.js"),
    "https://unpkg.com/bootstrap-table@1.19.1/dist/extensions/filter-control/bootstrap-table-filter-control.min.js":
        Asset("bootstrap-table@1.19.1", "dist/extensions/filter-control/bootstrap-table-filter-control.min.js"),
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.css":
        Asset("bootstrap-table@1.19.0", "dist/extensions/filter-control/bootstrap-table-filter-control.css"),
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.min.css":
        Asset("bootstrap-table@1.19.0", "dist/extensions/filter-control/bootstrap-table-filter-control.min.css"),
    "https://cdnjs.cloudflare.com/ajax/libs/font-awesome/6.6.0/css/all.min.css":
        Asset("@fortawesome/fontawesome-free@6.6.0", "css/all.min.css", also=("webfonts",)),
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/css/bootstrap-datepicker.min.css":
        Asset("bootstrap-datepicker@1.9.0", "dist/css/bootstrap-datepicker.min.css"),
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/js/bootstrap-datepicker.min.js":
        Asset("bootstrap-datepicker@1.9.0", "dist/js/bootstrap-datepicker.min.js"),
    "https://cdn.jsdelivr.net/npm/@forevolve/bootstrap-dark@1.1.0/dist/css/bootstrap-prefers-dark.css":
        Asset("@forevolve/bootstrap-dark@1.1.0", "dist/css/bootstrap-prefers-dark.css"),
    # jsdelivr resolves a bare major to the newest release; pinned to the one current when vendored.
    "https://cdn.jsdelivr.net/npm/vega@5": Asset("vega@5.33.1", "build/vega.min.js"),
    "https://cdn.jsdelivr.net/npm/vega-lite@5": Asset("vega-lite@5.23.0", "build/vega-lite.min.js"),
    "https://cdn.jsdelivr.net/npm/vega-embed@6": Asset("vega-embed@6.29.0", "build/vega-embed.min.js"),
}


class DocsNotOffline(AirlockError):
    """A Data Docs page still references an external asset after the rewrite."""


@dataclass(frozen=True)
class OfflineReport:
    vendored: tuple[str, ...]  # URLs now served from static/vendor
    removed: tuple[str, ...]  # URLs dropped from the pages


def vendor_dir() -> Path:
    return Path(os.environ.get("AIRLOCK_DOCS_ASSETS") or DEFAULT_VENDOR_DIR)


def asset_files(asset: Asset, root: Path) -> list[str]:
    """Paths (relative to the vendor root) that serving ``asset`` needs."""
    files = [f"{asset.package}/{asset.path}"]
    for directory in asset.also:
        base = root / asset.package / directory
        if base.is_dir():
            files.extend(f"{asset.package}/{p.relative_to(root / asset.package).as_posix()}"
                         for p in sorted(base.rglob("*")) if p.is_file())
    return files


def _load_manifest(root: Path) -> dict[str, str]:
    try:
        data = json.loads((root / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return {}
    return data.get("files", {}) if isinstance(data, dict) else {}


# <script ... src="X" ...></script>, <link ... href="X" ...>, <img ... src="X" ...>
_TAG = re.compile(r"<(script|link|img)\b([^>]*)>(\s*</script>)?", re.IGNORECASE)
_URL_ATTR = re.compile(r"""\b(src|href)\s*=\s*(["'])(.*?)\2""", re.IGNORECASE | re.DOTALL)
_SRI_ATTRS = re.compile(r"""\s+(integrity|crossorigin)\s*=\s*(["']).*?\2""", re.IGNORECASE | re.DOTALL)
_CSS_URL = re.compile(r"""url\(\s*(["']?)((?:https?:)?//[^"')]+)\1\s*\)""", re.IGNORECASE)
_OTHER_LOADERS = re.compile(
    r"<(?:iframe|source|embed|object|video|audio|track|frame)\b[^>]*?\b(?:src|href|data|poster)\s*=\s*[\"']?"
    r"(?:https?:)?//", re.IGNORECASE)
_IMPORT = re.compile(r"@import\s+(?:url\()?\s*[\"']?(?:https?:)?//", re.IGNORECASE)


_FETCHED_RELS = frozenset({"stylesheet", "icon", "shortcut", "preload", "prefetch", "modulepreload", "manifest",
                           "apple-touch-icon"})


def _fetched_link(attrs: str) -> bool:
    """Whether a <link> makes the browser fetch its href (a missing rel counts as fetched: fail closed)."""
    match = re.search(r"""\brel\s*=\s*(["']?)([^"'>]*)\1""", attrs, re.IGNORECASE)
    return match is None or bool(_FETCHED_RELS & set(match.group(2).lower().split()))


def _external(url: str) -> bool:
    return url.startswith(("http://", "https://", "//"))


class _Rewriter:
    def __init__(self, site: Path, root: Path) -> None:
        self.site, self.root = site, root
        self.manifest = _load_manifest(root)
        self.vendored: set[str] = set()
        self.removed: set[str] = set()
        self._ok: dict[str, bool] = {}

    def _install(self, url: str) -> str | None:
        """Copy the asset's files into the site (once); its site-relative path, or None when unusable."""
        asset = ASSETS.get(url)
        if asset is None:
            return None
        if url not in self._ok:
            files = asset_files(asset, self.root)
            ok = bool(files)
            for rel in files:
                src = self.root / rel
                expected = self.manifest.get(rel)
                if not src.is_file() or expected is None or hashlib.sha256(src.read_bytes()).hexdigest() != expected:
                    ok = False
                    break
            if ok:
                for rel in files:
                    dst = self.site / "static" / "vendor" / rel
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(self.root / rel, dst)
            self._ok[url] = ok
        return f"static/vendor/{asset.package}/{asset.path}" if self._ok[url] else None

    def _relative(self, page: Path, site_path: str) -> str:
        return Path(os.path.relpath(self.site / site_path, page.parent)).as_posix()

    def _sri_ok(self, attrs: str, site_path: str) -> bool:
        match = re.search(r"""\bintegrity\s*=\s*(["'])(.*?)\1""", attrs, re.IGNORECASE | re.DOTALL)
        if not match:
            return True
        data = (self.site / site_path).read_bytes()
        for token in match.group(2).split():
            algo, _, value = token.partition("-")
            if algo in ("sha256", "sha384", "sha512") and \
                    base64.b64encode(hashlib.new(algo, data).digest()).decode() == value:
                return True
        return False

    def page(self, page: Path) -> None:
        text = page.read_text(encoding="utf-8")
        new = _TAG.sub(lambda m: self._tag(page, m), text)
        new = _CSS_URL.sub(lambda m: self._css_url(page, m), new)
        if new != text:
            page.write_text(new, encoding="utf-8")

    def _tag(self, page: Path, match: re.Match) -> str:
        attrs = match.group(2)
        url_match = _URL_ATTR.search(attrs)
        if not url_match or not _external(url_match.group(3).strip()):
            return match.group(0)
        tag, url = match.group(1).lower(), url_match.group(3).strip()
        if tag == "link" and not _fetched_link(attrs):
            return match.group(0)  # e.g. rel=canonical: not fetched
        if url.startswith(_LOGO_HOST) and (self.site / _LOCAL_LOGO).is_file():
            local = _LOCAL_LOGO
        else:
            local = self._install(url)
            if local is not None and not self._sri_ok(attrs, local):
                local = None
        if local is None:
            self.removed.add(url)
            return ""
        self.vendored.add(url)
        attrs = _SRI_ATTRS.sub("", attrs)  # file:// pages cannot satisfy crossorigin fetches; checked above
        relative = self._relative(page, local)
        attrs = _URL_ATTR.sub(lambda m: f'{m.group(1)}="{relative}"', attrs, count=1)
        return f"<{match.group(1)}{attrs}>{match.group(3) or ''}"

    def _css_url(self, page: Path, match: re.Match) -> str:
        url = match.group(2)
        if url.startswith(_LOGO_HOST) and (self.site / _LOCAL_LOGO).is_file():
            self.vendored.add(url)
            return f"url('{self._relative(page, _LOCAL_LOGO)}')"
        self.removed.add(url)
        return "none"


def external_loads(text: str) -> list[str]:
    """External URLs that an HTML or CSS text makes a browser fetch without a click."""
    found = []
    for match in _TAG.finditer(text):
        url_match = _URL_ATTR.search(match.group(2))
        if url_match and _external(url_match.group(3).strip()) and (
                match.group(1).lower() != "link" or _fetched_link(match.group(2))):
            found.append(url_match.group(3).strip())
    found.extend(m.group(0) for m in _OTHER_LOADERS.finditer(text))
    found.extend(m.group(0) for m in _IMPORT.finditer(text))
    found.extend(m.group(2) for m in _CSS_URL.finditer(text))
    return found


def make_offline(site: Path, *, vendor: Path | None = None) -> OfflineReport:
    """Rewrite every ``.html``/``.css`` file of the Data Docs ``site`` so nothing is fetched from the network."""
    site = Path(site)
    rewriter = _Rewriter(site, Path(vendor) if vendor else vendor_dir())
    pages = sorted(p for p in site.rglob("*") if p.suffix in (".html", ".css") and p.is_file()
                   and "vendor" not in p.relative_to(site).parts)
    for page in pages:
        rewriter.page(page)
    for page in pages:
        left = external_loads(page.read_text(encoding="utf-8"))
        if left:
            raise DocsNotOffline(f"Data Docs page {page} still loads an external asset after the rewrite: {left[0]}")
    return OfflineReport(vendored=tuple(sorted(rewriter.vendored)), removed=tuple(sorted(rewriter.removed)))
