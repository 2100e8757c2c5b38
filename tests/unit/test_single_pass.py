"""Issue #13: every byte read once on the way in.

The download hashes what it writes (sha256 and the git blob sha1 where a hub
vouches by blob id); verification and the manifest re-stat instead of re-reading;
a file drop is pinned by its listing and its content revision comes from the
download's pass; the filesystem registry publishes a pinned quarantine file by
reflink or hard link, and only while its fingerprint holds.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
from pathlib import Path

import airlock.manifest as manifest_module
import pytest
from airlock import checksums
from airlock.checksums import verify_quarantine
from airlock.config import load_settings
from airlock.errors import DownloadError, IntegrityError, SourceError
from airlock.hashing import HashingSink, PinnedFile, StreamDigest
from airlock.manifest import READ_CHUNK, DigestSet, ModelRef, hash_file, manifest_for_directory, manifest_from_pass
from airlock.policy import policy_for
from airlock.quarantine import QuarantineArea, download
from airlock.registry import FilesystemStore, Registry
from airlock.registry.base import SourceChangedError
from airlock.sources import FileFetcher, PublishedFile, ResolvedSource, parse_source_uri, pin_content, resolve_file

from tests.registry_contract import SIGNER, TRUST, request

SIZES = [0, 1, READ_CHUNK - 1, READ_CHUNK, READ_CHUNK + 1, 3 * READ_CHUNK + 7]


def git_blob_id(path: Path) -> str:
    return subprocess.run(["git", "hash-object", "--no-filters", str(path)], check=True, capture_output=True,
                          text=True).stdout.strip()


def content(size: int, seed: int = 0) -> bytes:
    return (hashlib.sha256(str(seed).encode()).digest() * (size // 32 + 1))[:size]


# --------------------------------------------------------------------------- the single-pass hasher


@pytest.mark.parametrize("size", SIZES)
def test_stream_digest_equals_hashlib_and_git(tmp_path: Path, size: int) -> None:
    data = content(size, size)
    path = tmp_path / "blob"
    path.write_bytes(data)
    digest = StreamDigest(git_blob_size=size)
    for start in range(0, size, 65_536 + 3):  # uneven pieces, as a network delivers them
        digest.update(data[start:start + 65_536 + 3])
    assert digest.sha256 == hashlib.sha256(data).hexdigest()
    assert digest.git_sha1 == git_blob_id(path)
    assert digest.size == size


@pytest.mark.parametrize("size", SIZES)
def test_hashing_sink_records_the_file_it_wrote(tmp_path: Path, size: int) -> None:
    data = content(size, size + 1)
    path = tmp_path / "out"
    with open(path, "w+b") as handle:
        sink = HashingSink(handle, git_blob_size=size)
        for start in range(0, size, READ_CHUNK):
            sink.write(data[start:start + READ_CHUNK])
    digest = sink.finish(path, "out")
    assert sink.in_order
    expected = hash_file(path, "out", git_sha1=True)
    assert (digest.sha256, digest.git_sha1, digest.size) == (expected.sha256, expected.git_sha1, expected.size)
    assert digest.sha256 == hashlib.sha256(data).hexdigest() and digest.git_sha1 == git_blob_id(path)
    info = os.lstat(path)
    assert (digest.inode, digest.mtime_ns, digest.ctime_ns, digest.device) == (
        info.st_ino, info.st_mtime_ns, info.st_ctime_ns, info.st_dev)


def test_hashing_sink_hashes_a_resumed_prefix_and_falls_back_when_rewound(tmp_path: Path) -> None:
    data = content(READ_CHUNK * 2 + 5)
    path = tmp_path / "resumed"
    path.write_bytes(data[:1000])
    with open(path, "r+b") as handle:
        handle.seek(0, io.SEEK_END)
        sink = HashingSink(handle)  # the partial's first 1000 bytes are hashed from the file
        sink.write(data[1000:])
    assert sink.in_order and sink.finish(path, "resumed").sha256 == hashlib.sha256(data).hexdigest()

    rewound = tmp_path / "rewound"
    with open(rewound, "w+b") as handle:
        sink = HashingSink(handle)
        sink.write(b"x" * 10)
        sink.seek(3)
        sink.write(b"yyy")  # a rewrite in the middle: the streamed digest no longer describes the file
        sink.seek(0, io.SEEK_END)
    assert not sink.in_order
    assert sink.finish(rewound, "rewound").sha256 == hashlib.sha256(b"xxxyyyxxxx").hexdigest()


# --------------------------------------------------------------------------- download, verify, manifest


def hf_source(files: dict[str, bytes]) -> ResolvedSource:
    listed = []
    for path, data in sorted(files.items()):
        blob = hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()
        if path.endswith(".safetensors"):
            listed.append(PublishedFile(path=path, size=len(data), lfs_sha256=hashlib.sha256(data).hexdigest(),
                                        git_sha1="0" * 40))
        else:
            listed.append(PublishedFile(path=path, size=len(data), git_sha1=blob))
    return ResolvedSource(uri="hf://demo/single-pass", kind="hf", location="demo/single-pass",
                          requested_revision="main", revision="a" * 40, endpoint="http://hub", files=tuple(listed))


class DictFetcher:
    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files

    def fetch(self, file: PublishedFile, sink, offset: int) -> None:
        data = self.files[file.path]
        for start in range(offset, len(data), 300_001):
            sink.write(data[start:start + 300_001])

    def is_transient(self, error: BaseException) -> bool:
        return False


HF_FILES = {"config.json": b'{"model_type": "gpt2"}', "model.safetensors": content(READ_CHUNK + 1, 7),
            "tokenizer/vocab.json": b"{}", "empty.txt": b""}


def downloaded(tmp_path: Path, files: dict[str, bytes] = HF_FILES) -> tuple[ResolvedSource, QuarantineArea]:
    resolved = hf_source(files)
    area = QuarantineArea.for_run(tmp_path / "q", "model_ingest", "run-1", resolved.uri)
    download(resolved, area, DictFetcher(files), workers=2)
    return resolved, area


def test_the_download_pass_is_what_verification_and_the_manifest_use_without_reading(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    resolved, area = downloaded(tmp_path)
    recorded = {d.path: d for d in DigestSet.load(area.digests_file).files}
    for path, data in HF_FILES.items():
        assert recorded[path].sha256 == hashlib.sha256(data).hexdigest()
    assert recorded["config.json"].git_sha1 == git_blob_id(area.files_dir / "config.json")
    assert recorded["model.safetensors"].git_sha1 is None  # vouched for by LFS sha256: no sha1 for the weights

    def no_reading(*_args, **_kwargs):
        raise AssertionError("a file was read again")

    monkeypatch.setattr(checksums, "hash_tree", no_reading)
    monkeypatch.setattr(checksums, "hash_files", no_reading)
    monkeypatch.setattr(manifest_module, "hash_file", no_reading)
    report = verify_quarantine(resolved, area, policy_for("low"))
    assert report.verdict == "allow" and report.verified == len(HF_FILES)
    manifest = manifest_from_pass(area.files_dir, area.digests_file, ModelRef(name="m", source=resolved.uri))
    monkeypatch.undo()
    # The root digest is model_signing's (the same function airlock hash uses on the directory).
    assert manifest.root_digest == manifest_for_directory(area.files_dir).root_digest


def test_a_quarantined_file_changed_after_the_download_blocks_verification(tmp_path: Path) -> None:
    resolved, area = downloaded(tmp_path)
    target = area.files_dir / "config.json"
    os.chmod(target, 0o644)
    target.write_bytes(b'{"model_type": "gpt3"}')  # same size, other bytes
    with pytest.raises(IntegrityError, match=r"changed: config\.json"):
        verify_quarantine(resolved, area, policy_for("low"))


def test_a_wrong_byte_from_the_hub_is_caught_by_the_streamed_digest(tmp_path: Path) -> None:
    resolved = hf_source(HF_FILES)
    served = {**HF_FILES, "model.safetensors": b"\x00" + HF_FILES["model.safetensors"][1:]}
    area = QuarantineArea.for_run(tmp_path / "q", "model_ingest", "run-1", resolved.uri)
    download(resolved, area, DictFetcher(served), workers=2)
    with pytest.raises(IntegrityError, match=r"'model\.safetensors' mismatch \(hub-lfs"):
        verify_quarantine(resolved, area, policy_for("low"))


# --------------------------------------------------------------------------- file drops pinned by listing


@pytest.fixture()
def drop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("AIRLOCK_QUARANTINE_ROOT", str(tmp_path / "q"))
    monkeypatch.delenv("AIRLOCK_FILE_DROP_ROOTS", raising=False)
    monkeypatch.setenv("AIRLOCK_ENV", "development")
    root = tmp_path / "drops" / "model-d"
    (root / "sub").mkdir(parents=True)
    (root / "config.json").write_bytes(b'{"model_type": "gpt2"}')
    (root / "sub" / "weights.bin").write_bytes(content(READ_CHUNK + 3, 1))
    return root


def test_a_listing_pin_reads_nothing_and_the_download_derives_the_content_revision(drop: Path, tmp_path: Path,
                                                                                    monkeypatch) -> None:
    settings = load_settings()
    by_content = resolve_file(parse_source_uri(drop.as_uri()), settings)
    monkeypatch.setattr(manifest_module, "hash_files", lambda *_a, **_k: pytest.fail("resolution read the drop"))
    listed = resolve_file(parse_source_uri(drop.as_uri()), settings, file_pin="listing")
    monkeypatch.undo()
    assert listed.pinned_by == "listing" and listed.revision != by_content.revision
    assert all(f.sha256 is None and f.inode and f.ctime_ns for f in listed.files)
    area = QuarantineArea.for_run(tmp_path / "q", "model_ingest", "run-1", listed.uri)
    result = download(listed, area, FileFetcher(root=drop), workers=2)
    pinned = pin_content(listed, result.digests, result.vendor_digests)
    assert pinned.pinned_by == "content" and pinned.revision == by_content.revision
    assert pinned.files == by_content.files
    report = verify_quarantine(pinned, area, policy_for("low"))
    assert report.verdict == "allow" and "drop-resolution" in report.checked_against


def test_a_drop_changed_between_resolve_and_download_is_refused(drop: Path, tmp_path: Path) -> None:
    listed = resolve_file(parse_source_uri(drop.as_uri()), load_settings(), file_pin="listing")
    (drop / "config.json").write_bytes(b'{"model_type": "gpt3"}')  # same size, other bytes: ctime moves
    area = QuarantineArea.for_run(tmp_path / "q", "model_ingest", "run-1", listed.uri)
    with pytest.raises(DownloadError, match=r"config\.json: changed since the drop was pinned"):
        download(listed, area, FileFetcher(root=drop), workers=2)


def test_a_drop_swapped_for_a_copy_with_the_same_times_is_refused(drop: Path, tmp_path: Path) -> None:
    listed = resolve_file(parse_source_uri(drop.as_uri()), load_settings(), file_pin="listing")
    original = os.stat(drop / "config.json")
    replacement = drop / "config.json.new"
    replacement.write_bytes(b'{"model_type": "gpt3"}')
    os.utime(replacement, ns=(original.st_atime_ns, original.st_mtime_ns))  # mtime restored; inode and ctime differ
    os.replace(replacement, drop / "config.json")
    area = QuarantineArea.for_run(tmp_path / "q", "model_ingest", "run-1", listed.uri)
    with pytest.raises(DownloadError, match="changed since the drop was pinned"):
        download(listed, area, FileFetcher(root=drop), workers=2)


def test_a_requested_revision_the_content_is_not_is_refused_after_the_download(drop: Path, tmp_path: Path) -> None:
    wrong = "sha256:" + "0" * 64
    listed = resolve_file(parse_source_uri(drop.as_uri(), wrong), load_settings(), file_pin="listing")
    area = QuarantineArea.for_run(tmp_path / "q", "model_ingest", "run-1", listed.uri)
    result = download(listed, area, FileFetcher(root=drop), workers=2)
    with pytest.raises(SourceError, match="the drop changed since it was pinned"):
        pin_content(listed, result.digests, result.vendor_digests)


# --------------------------------------------------------------------------- link-or-copy promotion


def _reflinks(directory: Path) -> bool:
    import fcntl

    (directory / "probe-src").write_bytes(b"x")
    with open(directory / "probe-src", "rb") as src, open(directory / "probe-dst", "wb") as dst:
        try:
            fcntl.ioctl(dst.fileno(), 0x40049409, src.fileno())
        except OSError:
            return False
    return True


def pinned_quarantine_file(tmp_path: Path, data: bytes = b"weights" * 1000) -> PinnedFile:
    quarantine = tmp_path / "quarantine"
    quarantine.mkdir(exist_ok=True)
    path = quarantine / "model.safetensors"
    path.write_bytes(data)
    os.chmod(path, 0o444)
    return PinnedFile(path, hash_file(path, "model.safetensors"))


def test_a_pinned_file_on_the_same_filesystem_is_published_without_a_copy(tmp_path: Path) -> None:
    pinned = pinned_quarantine_file(tmp_path)
    store = FilesystemStore(tmp_path / "registry")
    assert store.put_if_absent("models/a/b/1/files/model.safetensors", pinned, pinned.digest.size,
                               pinned.digest.sha256)
    stored = tmp_path / "registry" / "models/a/b/1/files/model.safetensors"
    # A hard link (same inode) or a reflink (own inode, shared extents): no bytes went through this process.
    assert stored.read_bytes() == pinned.path.read_bytes()
    assert stored.stat().st_ino == pinned.path.stat().st_ino or _reflinks(tmp_path)
    assert oct(stored.stat().st_mode & 0o777) == oct(0o444)
    assert not [p for p in stored.parent.iterdir() if p.name.startswith(".airlock-partial")]
    # Removing the quarantine (the run's teardown) leaves the registry's copy as it was.
    pinned.path.unlink()
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == pinned.digest.sha256


def test_a_file_changed_after_hashing_is_hashed_again_and_blocks(tmp_path: Path) -> None:
    pinned = pinned_quarantine_file(tmp_path)
    os.chmod(pinned.path, 0o644)
    pinned.path.write_bytes(b"WEIGHTS" * 1000)  # same size, other bytes, after the pass
    os.chmod(pinned.path, 0o444)
    store = FilesystemStore(tmp_path / "registry")
    with pytest.raises(SourceChangedError, match="changed since its manifest"):
        store.put_if_absent("k/model.safetensors", pinned, pinned.digest.size, pinned.digest.sha256)
    assert not (tmp_path / "registry" / "k").exists() or not list((tmp_path / "registry" / "k").iterdir())


def test_a_file_whose_fingerprint_moved_but_not_its_bytes_is_copied_not_linked(tmp_path: Path) -> None:
    pinned = pinned_quarantine_file(tmp_path)
    os.utime(pinned.path)  # mtime and ctime move; the content is as hashed
    store = FilesystemStore(tmp_path / "registry")
    assert store.put_if_absent("k/model.safetensors", pinned, pinned.digest.size, pinned.digest.sha256)
    stored = tmp_path / "registry" / "k" / "model.safetensors"
    assert stored.stat().st_ino != pinned.path.stat().st_ino  # re-hashed by a streaming copy
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == pinned.digest.sha256


def test_a_writable_quarantine_file_is_never_shared_with_the_registry(tmp_path: Path) -> None:
    pinned = pinned_quarantine_file(tmp_path)
    os.chmod(pinned.path, 0o644)
    writable = PinnedFile(pinned.path, hash_file(pinned.path, "model.safetensors"))  # fingerprint as it is now
    store = FilesystemStore(tmp_path / "registry")
    assert store.put_if_absent("k/model.safetensors", writable, writable.digest.size, writable.digest.sha256)
    stored = tmp_path / "registry" / "k" / "model.safetensors"
    assert stored.stat().st_ino != pinned.path.stat().st_ino
    with open(pinned.path, "r+b") as handle:  # a write through the quarantine path does not reach the registry
        handle.write(b"X")
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == writable.digest.sha256


def test_promotion_with_a_recorded_pass_links_and_does_not_read_back(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    req = request(tmp_path)
    model_dir = Path(req.model_dir)
    pinned = {}
    for entry in req.files:
        os.chmod(model_dir / entry.path, 0o444)
        pinned[entry.path] = hash_file(model_dir / entry.path, entry.path)
    store = FilesystemStore(tmp_path / "registry")
    monkeypatch.setattr(store, "stored_sha256", lambda key: pytest.fail(f"{key} was read back"))
    from dataclasses import replace

    result = Registry(store, signer=SIGNER, trust=TRUST).promote(replace(req, pinned=pinned))
    assert result.created
    version_dir = tmp_path / "registry" / "models" / "demo" / "tiny" / "1"
    for entry in req.files:
        stored = version_dir / "files" / entry.path
        assert hashlib.sha256(stored.read_bytes()).hexdigest() == entry.sha256
        assert stored.stat().st_ino == (model_dir / entry.path).stat().st_ino or _reflinks(tmp_path)
    assert (version_dir / "RELEASED").is_file() and (version_dir / "promotion.json").is_file()
    monkeypatch.undo()
    assert Registry(FilesystemStore(tmp_path / "registry"), trust=TRUST).verify_version(
        "demo/tiny", "1").status == "approved"


def test_a_server_that_ignores_the_resume_restarts_the_digest(tmp_path: Path) -> None:
    # huggingface_hub's http_get, answered 200 to a Range request: seek back, truncate, write from byte 0.
    data = content(5000, 3)
    path = tmp_path / "restarted"
    path.write_bytes(b"stale prefix")
    with open(path, "r+b") as handle:
        handle.seek(0, io.SEEK_END)
        sink = HashingSink(handle)
        sink.seek(0)
        sink.truncate()
        sink.write(data)
    assert sink.in_order and sink.finish(path, "restarted").sha256 == hashlib.sha256(data).hexdigest()


def test_the_run_records_the_content_pin_and_keeps_the_listing_pin(drop: Path, tmp_path: Path) -> None:
    import json

    from airlock.ingest import SOURCE_RECORD, pin_downloaded_source, record_source, run_dir, run_source

    root = tmp_path / "q"
    listed = record_source(root, "run-1", lambda: resolve_file(parse_source_uri(drop.as_uri()), load_settings(),
                                                               file_pin="listing"))
    area = QuarantineArea.for_run(root, "model_ingest", "run-1", listed.uri)
    result = download(listed, area, FileFetcher(root=drop), workers=2)
    pinned = pin_downloaded_source(root, "run-1", listed, result)
    assert run_source(root, "run-1") == pinned and pinned.pinned_by == "content"
    kept = json.loads((run_dir(root, "run-1") / "source-listing.json").read_text())
    assert kept["revision"] == listed.revision and kept["pinned_by"] == "listing"
    assert oct(os.stat(run_dir(root, "run-1") / SOURCE_RECORD).st_mode & 0o777) == oct(0o444)
    assert pin_downloaded_source(root, "run-1", pinned, result) is pinned  # content-pinned: nothing to do
