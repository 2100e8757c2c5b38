"""Quarantine: name rules, preflight limits, the downloader's containment, retries and deadline, teardown."""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from pathlib import Path

import pytest

from airlock.errors import DownloadError, DownloadTimeout, QuarantineError
from airlock.policy import policy_for
from airlock.quarantine import (
    QuarantineArea,
    check_names,
    download,
    name_violations,
    preflight,
    remove_run,
    run_directory,
)
from airlock.sources import PublishedFile, ResolvedSource


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("/etc/passwd", "absolute path"),
        ("../outside.bin", "'..' segment"),
        ("weights/../../outside.bin", "'..' segment"),
        ("weights\\model.bin", "backslash"),
        ("C:model.bin", "drive-letter path"),
        ("model\x00.bin", "control character U+0000"),
        ("model\n.bin", "control character U+000A"),
        ("model\x7f.bin", "control character U+007F"),
        ("model\u202ecod.bin", "invisible formatting character U+202E"),
        ("weights//model.bin", "empty segment"),
        ("weights/", "empty segment"),
        ("./model.bin", "'.' segment"),
        ("", "empty name"),
        ("x" * 256, "longer than 255 bytes"),
    ],
)
def test_each_refused_pattern_is_named(name: str, rule: str) -> None:
    (violation,) = name_violations([name, "config.json"])
    assert violation.path == name
    assert rule in violation.rule


@pytest.mark.parametrize(
    ("names", "rule"),
    [
        (["Model.bin", "model.bin"], "after case folding"),
        (["straße.txt", "strasse.txt"], "after case folding"),
        (["caf\u00e9.txt", "cafe\u0301.txt"], "after Unicode normalization"),
        (["Weights/a.bin", "weights/b.bin"], "collides with 'Weights'"),
        (["weights", "weights/a.bin"], "is also listed as a file"),
        (["config.json", "config.json"], "listed twice"),
    ],
)
def test_names_that_collide_are_refused(names: list[str], rule: str) -> None:
    violations = name_violations(names)
    assert len(violations) == 1
    assert rule in violations[0].rule


def test_ordinary_names_pass() -> None:
    names = [
        "config.json", "weights/model-00001-of-00002.safetensors", "tokenizer/vocab.txt", "unicodé.md", ".gitattributes"
    ]
    assert name_violations(names) == []
    check_names(names, where="test")


def test_check_names_raises_naming_every_file() -> None:
    with pytest.raises(QuarantineError, match=r"hf://x: refused file names: '\.\./a': '\.\.' segment.*'/b': absolute"):
        check_names(["../a", "/b", "ok"], where="hf://x")


# --------------------------------------------------------------------------- preflight


def _resolved(files: dict[str, bytes], kind: str = "file", vendor: dict[str, bytes] | None = None) -> ResolvedSource:
    return ResolvedSource(
        uri=f"{kind}://test" if kind != "file" else "file:///drop",
        kind=kind,
        location="demo/x" if kind == "hf" else "/drop",
        requested_revision=None,
        revision="sha256:" + "0" * 64,
        files=tuple(PublishedFile(path=p, size=len(b)) for p, b in sorted(files.items())),
        vendor_manifests=tuple(PublishedFile(path=p, size=len(b)) for p, b in sorted((vendor or {}).items())),
    )


@pytest.fixture()
def area(tmp_path: Path) -> QuarantineArea:
    return QuarantineArea.for_run(tmp_path / "quarantine", "model_ingest", "manual__2026-01-01T00:00:00+00:00", "x")


def test_preflight_checks_tier_limits_naming_the_file(area: QuarantineArea) -> None:
    low = policy_for("low")
    resolved = _resolved({"a.bin": b"12345", "b.bin": b"1"})
    assert preflight(resolved, low, area).total_bytes == 6
    with pytest.raises(QuarantineError, match="2 files exceed tier low's max_files 1"):
        preflight(resolved, dataclasses.replace(low, max_files=1), area)
    with pytest.raises(QuarantineError, match=r"max_file_bytes 4: 'a\.bin' \(5 bytes\)"):
        preflight(resolved, dataclasses.replace(low, max_file_bytes=4), area)
    with pytest.raises(QuarantineError, match="6 bytes exceed tier low's max_total_bytes 5"):
        preflight(resolved, dataclasses.replace(low, max_total_bytes=5), area)


def test_preflight_refuses_a_listing_with_a_bad_name(area: QuarantineArea) -> None:
    with pytest.raises(QuarantineError, match=r"'\.\./evil': '\.\.' segment"):
        preflight(_resolved({"../evil": b"x"}), policy_for("low"), area)


def test_preflight_compares_with_free_space(area: QuarantineArea, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    monkeypatch.setattr(shutil, "disk_usage", lambda _path: shutil._ntuple_diskusage(100, 100, 10))
    with pytest.raises(QuarantineError, match=r"needs 5 bytes .* only 10 are free"):
        preflight(_resolved({"a.bin": b"12345"}), policy_for("low"), area)


MIB = 1024**2


def _volume_with_free_bytes(monkeypatch: pytest.MonkeyPatch, free: int) -> None:
    import shutil

    monkeypatch.setattr(shutil, "disk_usage", lambda _path: shutil._ntuple_diskusage(10 * free, 9 * free, free))


def _run_area(root: Path, run: int) -> QuarantineArea:
    return QuarantineArea.for_run(root, "model_ingest", f"manual__run-{run}", "file:///drop")


def _sized(total: int) -> ResolvedSource:
    resolved = _resolved({"w.bin": b""})
    return resolved.model_copy(update={"files": (PublishedFile(path="w.bin", size=total),)})


def test_concurrent_runs_reserve_space_instead_of_all_passing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Three 200 MiB runs on a volume with 420 MiB free: only what fits passes, the others are refused up front."""
    _volume_with_free_bytes(monkeypatch, 420 * MIB)
    root = tmp_path / "quarantine"
    outcomes = []
    for run in range(3):
        area = _run_area(root, run)
        try:
            preflight(_sized(200 * MIB), policy_for("low"), area)
            area.create()
            outcomes.append("reserved")
        except QuarantineError as exc:
            assert "reserved by concurrent runs" in str(exc)
            outcomes.append("refused")
    assert outcomes == ["reserved", "refused", "refused"]


def test_concurrent_preflights_cannot_overbook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _volume_with_free_bytes(monkeypatch, 500 * MIB)
    root = tmp_path / "quarantine"
    barrier = threading.Barrier(6)
    passed: list[int] = []

    def attempt(run: int) -> None:
        barrier.wait()
        try:
            preflight(_sized(100 * MIB), policy_for("low"), _run_area(root, run))
            passed.append(run)
        except QuarantineError:
            pass

    threads = [threading.Thread(target=attempt, args=(run,)) for run in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # 500 MiB free, 64 MiB margin: at most 4 runs of 100 MiB may hold reservations at once.
    assert len(passed) == 4


def test_a_run_rechecking_its_own_reservation_is_not_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _volume_with_free_bytes(monkeypatch, 300 * MIB)
    area = _run_area(tmp_path / "quarantine", 0)
    preflight(_sized(200 * MIB), policy_for("low"), area)
    area.create()
    preflight(_sized(200 * MIB), policy_for("low"), area)  # the download task checks again


def test_bytes_already_written_by_another_run_are_not_counted_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "quarantine"
    _volume_with_free_bytes(monkeypatch, 400 * MIB)
    first = _run_area(root, 0)
    preflight(_sized(4 * MIB), policy_for("low"), first)
    first.create()
    (first.files_dir / "w.bin").write_bytes(b"x" * (4 * MIB))  # the first run's download has finished
    # Free space already reflects those bytes; the reservation must not hold them a second time.
    _volume_with_free_bytes(monkeypatch, 68 * MIB + 1)
    preflight(_sized(4 * MIB), policy_for("low"), _run_area(root, 1))


def test_teardown_releases_the_runs_reservation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _volume_with_free_bytes(monkeypatch, 300 * MIB)
    root = tmp_path / "quarantine"
    first = _run_area(root, 0)
    preflight(_sized(200 * MIB), policy_for("low"), first)
    first.create()
    with pytest.raises(QuarantineError, match="reserved by concurrent runs"):
        preflight(_sized(200 * MIB), policy_for("low"), _run_area(root, 1))
    remove_run(root, "model_ingest", "manual__run-0")
    preflight(_sized(200 * MIB), policy_for("low"), _run_area(root, 1))


def test_a_reservation_left_by_a_lost_run_expires(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import airlock.quarantine as quarantine

    _volume_with_free_bytes(monkeypatch, 300 * MIB)
    root = tmp_path / "quarantine"
    preflight(_sized(200 * MIB), policy_for("low"), _run_area(root, 0))  # the run died before creating its area
    with pytest.raises(QuarantineError):
        preflight(_sized(200 * MIB), policy_for("low"), _run_area(root, 1))
    monkeypatch.setattr(quarantine, "STALE_RESERVATION_S", -1.0)
    preflight(_sized(200 * MIB), policy_for("low"), _run_area(root, 1))


@pytest.mark.parametrize("tier", ["high", "critical"])
def test_drops_without_a_vendor_manifest_never_proceed_for_high_tiers(area: QuarantineArea, tier: str) -> None:
    with pytest.raises(QuarantineError, match=f"tier {tier} requires a vendor manifest"):
        preflight(_resolved({"a.bin": b"1"}), policy_for(tier), area)
    preflight(_resolved({"a.bin": b"1"}, vendor={"SHA256SUMS": b"x"}), policy_for(tier), area)
    preflight(_resolved({"a.bin": b"1"}, kind="hf"), policy_for(tier), area)  # the hub publishes checksums


# --------------------------------------------------------------------------- download


class FakeFetcher:
    """Serves bytes from a dict; optional failures to exercise retries, oversize and deadlines."""

    def __init__(
        self, data: dict[str, bytes], *, cut_once: set[str] = frozenset(), extra: bytes = b"", delay: float = 0
    ) -> None:
        self.data = data
        self.cut_once = set(cut_once)
        self.extra = extra
        self.delay = delay
        self.offsets: dict[str, list[int]] = {}
        self.lock = threading.Lock()

    def fetch(self, file: PublishedFile, sink, offset: int) -> None:
        with self.lock:
            self.offsets.setdefault(file.path, []).append(offset)
            cut = file.path in self.cut_once
            self.cut_once.discard(file.path)
        body = self.data[file.path][offset:] + self.extra
        if cut:
            sink.write(body[: len(body) // 2])
            raise ConnectionResetError("connection reset by peer")
        for start in range(0, len(body), 4):
            if self.delay:
                time.sleep(self.delay)
            sink.write(body[start : start + 4])

    def is_transient(self, error: BaseException) -> bool:
        return isinstance(error, ConnectionError)


def _tree(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


def test_download_places_files_read_only_in_files_dir(area: QuarantineArea) -> None:
    data = {"config.json": b"{}", "weights/model.safetensors": b"0123456789", "empty": b""}
    result = download(_resolved(data), area, FakeFetcher(data))
    assert (result.files, result.fetched, result.bytes) == (3, 3, 12)
    assert {p: (area.files_dir / p).read_bytes() for p in data} == data
    assert not os.access(area.files_dir / "config.json", os.W_OK) or os.geteuid() == 0
    assert (area.files_dir / "config.json").stat().st_mode & 0o777 == 0o444
    assert not area.partial_dir.exists()
    again = download(_resolved(data), area, FakeFetcher(data))
    assert again.already_present == 3 and again.fetched == 0


def test_a_traversal_name_is_refused_without_writing_outside(area: QuarantineArea, tmp_path: Path) -> None:
    data = {"../../../escaped.txt": b"pwned", "ok.txt": b"fine"}
    before = _tree(tmp_path)
    with pytest.raises(QuarantineError, match=r"'\.\./\.\./\.\./escaped\.txt': '\.\.' segment"):
        download(_resolved(data), area, FakeFetcher(data))
    assert not list(tmp_path.rglob("escaped.txt"))
    assert _tree(tmp_path) == before  # refused before anything was created



def test_a_source_sending_more_than_listed_is_refused(area: QuarantineArea) -> None:
    data = {"model.bin": b"0123456789"}
    with pytest.raises(DownloadError, match="model.bin.*more than the 10 bytes it listed") as error:
        download(_resolved(data), area, FakeFetcher(data, extra=b"more"))
    assert error.value.retryable is False
    assert not (area.files_dir / "model.bin").exists()


def test_a_transient_failure_is_retried_and_resumes(area: QuarantineArea) -> None:
    data = {"model.bin": bytes(range(200))}
    fetcher = FakeFetcher(data, cut_once={"model.bin"})
    result = download(_resolved(data), area, fetcher)
    assert fetcher.offsets["model.bin"] == [0, 100]  # the second attempt resumed where the first stopped
    assert (area.files_dir / "model.bin").read_bytes() == data["model.bin"]
    assert result.fetched == 1


def test_a_partial_left_by_an_earlier_attempt_is_resumed(area: QuarantineArea) -> None:
    data = {"model.bin": bytes(range(100))}
    with pytest.raises(DownloadError) as error:
        download(_resolved(data), area, FakeFetcher(data, cut_once={"model.bin"}), attempts=1)
    assert error.value.retryable is True
    fetcher = FakeFetcher(data)
    result = download(_resolved(data), area, fetcher)
    assert fetcher.offsets["model.bin"] == [50]
    assert result.resumed == 1
    assert (area.files_dir / "model.bin").read_bytes() == data["model.bin"]


def test_the_download_is_bounded_in_time(area: QuarantineArea) -> None:
    data = {"slow.bin": b"x" * 400}
    started = time.monotonic()
    with pytest.raises(DownloadTimeout, match="slow.bin"):
        download(_resolved(data), area, FakeFetcher(data, delay=0.05), timeout_s=0.3)
    assert time.monotonic() - started < 5


# --------------------------------------------------------------------------- area and teardown


def test_area_paths_are_per_run_and_model(tmp_path: Path) -> None:
    a = QuarantineArea.for_run(tmp_path, "model_ingest", "run:1", "hf://demo/a")
    b = QuarantineArea.for_run(tmp_path, "model_ingest", "run:1", "hf://demo/b")
    c = QuarantineArea.for_run(tmp_path, "model_ingest", "run:2", "hf://demo/a")
    assert a.path.parent == b.path.parent != c.path.parent
    assert a.path.parent == run_directory(tmp_path, "model_ingest", "run:1")
    assert ":" not in a.path.relative_to(tmp_path).as_posix()


def test_reopening_an_area_refuses_paths_outside_the_root(tmp_path: Path) -> None:
    root = tmp_path / "quarantine"
    with pytest.raises(QuarantineError, match="not a quarantine directory"):
        QuarantineArea.at(root, tmp_path / "elsewhere")
    with pytest.raises(QuarantineError, match="not a quarantine directory"):
        QuarantineArea.at(root, root / ".." / "elsewhere")
    root.mkdir()
    (root / "link").symlink_to(tmp_path)
    with pytest.raises(QuarantineError, match="not a quarantine directory"):
        QuarantineArea.at(root, root / "link" / "x")


def test_remove_run_deletes_read_only_files_and_nothing_else(area: QuarantineArea, tmp_path: Path) -> None:
    data = {"a/b.bin": b"1"}
    download(_resolved(data), area, FakeFetcher(data))
    keep = tmp_path / "keep.txt"
    keep.write_text("x")
    removed = remove_run(area.root, "model_ingest", "manual__2026-01-01T00:00:00+00:00")
    assert removed == area.path.parent and not removed.exists()
    assert keep.exists()
    assert remove_run(area.root, "model_ingest", "manual__2026-01-01T00:00:00+00:00") is None


def test_remove_run_refuses_a_symlinked_run_directory(tmp_path: Path) -> None:
    root = tmp_path / "quarantine"
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "important").write_text("x")
    run_dir = run_directory(root, "model_ingest", "r")
    run_dir.parent.mkdir(parents=True)
    run_dir.symlink_to(victim)
    with pytest.raises(QuarantineError, match="not removing it"):
        remove_run(root, "model_ingest", "r")
    assert (victim / "important").exists()
