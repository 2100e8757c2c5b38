#!/usr/bin/env python3
"""Fetch the CSS/JS that great-expectations Data Docs load from CDNs, so fingerprint docs render offline.

Run at install/build time (it needs the npm registry; nothing at check time does):

    python scripts/vendor_docs_assets.py [--dest DIR]

For each pinned package in ``airlock.fingerprint.docs_offline.ASSETS`` this runs ``npm pack
name@version`` (the npm client verifies the tarball against the registry's integrity hash), extracts
only the files the pages use, and records their sha256 in ``DIR/MANIFEST.json``.
``docs_offline.make_offline`` copies a file into a docs site only when it still matches that record.
Default ``DIR``: ``include/airlock/fingerprint/vendor`` (or ``$AIRLOCK_DOCS_ASSETS``); about 3 MB.
Idempotent: packages whose files are already present and recorded are not fetched again.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "include"))

from airlock.fingerprint.docs_offline import ASSETS, MANIFEST_NAME, Asset, vendor_dir


def _wanted(asset: Asset, member: str) -> bool:
    """Whether a tarball member (``package/<path>``) is a file this asset serves."""
    rel = PurePosixPath(member).relative_to("package").as_posix()
    return rel == asset.path or any(rel.startswith(f"{d}/") for d in asset.also)


def _extract(tarball: Path, assets: list[Asset], dest: Path) -> list[str]:
    """Extract the wanted regular files of one package; refuses links and paths leaving the package."""
    written = []
    package = assets[0].package
    with tarfile.open(tarball, "r:gz") as archive:
        for member in archive.getmembers():
            parts = PurePosixPath(member.name).parts
            if not member.isfile() or len(parts) < 2 or parts[0] != "package" or ".." in parts:
                continue
            if not any(_wanted(a, member.name) for a in assets):
                continue
            rel = f"{package}/{PurePosixPath(*parts[1:]).as_posix()}"
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            source = archive.extractfile(member)
            assert source is not None
            target.write_bytes(source.read())
            written.append(rel)
    missing = [a.path for a in assets if f"{package}/{a.path}" not in written]
    if missing:
        raise SystemExit(f"{package}: tarball lacks {missing}")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--dest", type=Path, default=None)
    args = parser.parse_args(argv)
    dest = (args.dest or vendor_dir()).resolve()
    dest.mkdir(parents=True, exist_ok=True)
    # Fetched at install time, never committed: the folder ignores itself (no edit to the repo's .gitignore).
    (dest / ".gitignore").write_text("# written by scripts/vendor_docs_assets.py\n*\n")
    manifest_path = dest / MANIFEST_NAME
    manifest = json.loads(manifest_path.read_text()).get("files", {}) if manifest_path.is_file() else {}
    npm = shutil.which("npm")
    by_package: dict[str, list[Asset]] = {}
    for asset in ASSETS.values():
        by_package.setdefault(asset.package, []).append(asset)
    for package, assets in sorted(by_package.items()):
        present = [f"{package}/{a.path}" for a in assets]
        dirs_present = all(any(rel.startswith(f"{package}/{d}/") for rel in manifest) for a in assets for d in a.also)
        if all(rel in manifest and (dest / rel).is_file() for rel in present) and dirs_present:
            continue
        if npm is None:
            print(f"vendor_docs_assets: npm not found; cannot fetch {package}", file=sys.stderr)
            return 2
        with tempfile.TemporaryDirectory(prefix="airlock-npm-") as tmp:
            proc = subprocess.run([npm, "pack", package, "--silent", "--pack-destination", tmp],
                                  capture_output=True, text=True, check=False, timeout=300)
            tarballs = list(Path(tmp).glob("*.tgz"))
            if proc.returncode != 0 or len(tarballs) != 1:
                last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
                print(f"vendor_docs_assets: npm pack {package} failed: {last}", file=sys.stderr)
                return 2
            shutil.rmtree(dest / package, ignore_errors=True)
            for rel in _extract(tarballs[0], assets, dest):
                manifest[rel] = hashlib.sha256((dest / rel).read_bytes()).hexdigest()
    manifest = {rel: digest for rel, digest in manifest.items() if (dest / rel).is_file()}
    manifest_path.write_text(json.dumps({"files": dict(sorted(manifest.items()))}, indent=2) + "\n")
    size = sum((dest / rel).stat().st_size for rel in manifest)
    print(f"vendored {len(manifest)} files ({size / 1e6:.1f} MB) for {len(by_package)} packages into {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
