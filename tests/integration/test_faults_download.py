"""Faults on the way into quarantine: a hub that answers 500 or stalls on some files, and a full quarantine disk.

Each drives the pipeline's own download/preflight (airlock.quarantine, what `download_to_quarantine` and
`prepare_quarantine` call) against the real demo hub through an injecting forwarder, and asserts: bounded
retries, a failure that names the file (or the path), nothing complete of the failed file in quarantine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import require_env
from tests.fault_fixtures import FaultyHub

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HUB_FAULT_PORT = 8317  # its own port: test_faults_celery.py throttles the hub on 8313
MODEL = "hf://demo/tiny-gpt2"


def _resolved_through(hub_url: str):
    from airlock.connections import HubAccess
    from airlock.sources import parse_source_uri, resolve_ref

    access = HubAccess(endpoint=hub_url, token=None, origin="argument")
    return access, resolve_ref(parse_source_uri(MODEL), hub=access)


def _area(root: Path, run_id: str, resolved):
    from airlock.quarantine import QuarantineArea

    return QuarantineArea.for_run(root, "model_ingest", run_id, resolved.uri)


def test_hub_500s_on_one_file_are_retried_a_bounded_number_of_times_then_fail_naming_it(tmp_path: Path) -> None:
    from airlock.errors import DownloadError
    from airlock.quarantine import download
    from airlock.sources import fetcher_for

    attempts = 3
    with FaultyHub(HUB_FAULT_PORT, require_env("AIRLOCK_HUB_ENDPOINT"), fail="model.safetensors") as hub:
        access, resolved = _resolved_through(hub.url)
        area = _area(tmp_path / "quarantine", "fault-hub-500", resolved)
        started = time.monotonic()
        with pytest.raises(DownloadError) as failure:
            download(resolved, area, fetcher_for(resolved, hub=access), workers=4, timeout_s=120, attempts=attempts)
        elapsed = time.monotonic() - started
    message = str(failure.value)
    assert "'model.safetensors'" in message, message
    assert message.count("(") >= 1 and "download failed for 1 file(s)" in message, message
    # Bounded: a few requests per attempt, `attempts` attempts (the task's own retries come on top, bounded too).
    assert 1 <= hub.requests["fail"] <= 2 * attempts, hub.requests
    assert elapsed < 60
    # A hub error is worth a task retry (Airflow's retries=2 bound it); a verdict would not be.
    assert failure.value.retryable is True
    assert not (area.files_dir / "model.safetensors").exists()
    # The files that did not fail arrived whole (and read-only); a retry finds them "present".
    arrived = {p.name for p in area.files_dir.iterdir()} if area.files_dir.exists() else set()
    assert arrived <= {f.path for f in resolved.files} - {"model.safetensors"}


def test_a_hub_that_stalls_on_a_file_fails_at_the_time_budget_naming_the_file(tmp_path: Path) -> None:
    from airlock.errors import DownloadError
    from airlock.quarantine import download
    from airlock.sources import fetcher_for

    with FaultyHub(HUB_FAULT_PORT, require_env("AIRLOCK_HUB_ENDPOINT"), stall="model.safetensors",
                   stall_s=40) as hub:
        access, resolved = _resolved_through(hub.url)
        area = _area(tmp_path / "quarantine", "fault-hub-stall", resolved)
        started = time.monotonic()
        with pytest.raises(DownloadError) as failure:
            download(resolved, area, fetcher_for(resolved, hub=access), workers=4, timeout_s=6, attempts=3)
        elapsed = time.monotonic() - started
    assert "'model.safetensors'" in str(failure.value), str(failure.value)
    assert elapsed < 40, "the download waited for the stalled hub instead of its own time budget"
    assert failure.value.retryable is True
    assert not (area.files_dir / "model.safetensors").exists()


# --------------------------------------------------------------------------- quarantine disk full


@pytest.fixture()
def small_disk(tmp_path: Path):
    """An 80 MiB tmpfs (the preflight keeps a 64 MiB margin) as the quarantine volume (root may mount; elsewhere this cannot be simulated honestly)."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=80m,mode=0700", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        # `make test` runs as root (it installs Debian packages); a fault test that silently skipped would prove nothing.
        pytest.fail(f"cannot mount a tmpfs for the full-disk fault ({done.stderr.strip()}): run the suite as root")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_preflight_refuses_a_model_larger_than_the_free_space_naming_the_path(small_disk: Path) -> None:
    from airlock.errors import QuarantineError
    from airlock.policy import policy_for
    from airlock.quarantine import preflight

    _, resolved = _resolved_through(require_env("AIRLOCK_HUB_ENDPOINT"))
    ballast = small_disk / "ballast"
    ballast.write_bytes(b"\0" * (shutil.disk_usage(small_disk).free - 64 * 1024))
    area = _area(small_disk / "quarantine", "fault-disk-preflight", resolved)
    with pytest.raises(QuarantineError) as refused:
        preflight(resolved, policy_for("low"), area)
    assert str(small_disk / "quarantine") in str(refused.value) and "free" in str(refused.value)
    assert not area.path.exists()


def test_a_disk_that_fills_during_the_download_fails_clearly_and_keeps_nothing_whole(small_disk: Path) -> None:
    """The space was there at preflight; another writer takes it while the files arrive."""
    from airlock.errors import DownloadError
    from airlock.policy import policy_for
    from airlock.quarantine import download, preflight
    from airlock.sources import fetcher_for

    access, resolved = _resolved_through(require_env("AIRLOCK_HUB_ENDPOINT"))
    assert max(f.size for f in resolved.files) > 256 * 1024, "the demo weights must exceed what is left below"
    root = small_disk / "quarantine"
    area = _area(root, "fault-disk-full", resolved)
    preflight(resolved, policy_for("low"), area)
    area.create()
    # Someone else fills the volume after the check: leave 128 KiB.
    (small_disk / "ballast").write_bytes(b"\0" * (shutil.disk_usage(small_disk).free - 128 * 1024))
    with pytest.raises(DownloadError) as failure:
        download(resolved, area, fetcher_for(resolved, hub=access), workers=2, timeout_s=60, attempts=2)
    message = str(failure.value)
    assert any(f"'{f.path}'" in message for f in resolved.files), message
    assert "no space left" in message.lower() and str(root) in message, message
    # A full disk is the operator's to fix: the task fails at once instead of retrying into the same wall.
    assert failure.value.retryable is False
    # Nothing whole of the file that did not fit: verification and signing never see a truncated file.
    complete = {p.name for p in area.files_dir.iterdir()} if area.files_dir.exists() else set()
    for file in resolved.files:
        if file.path in complete:
            assert (area.files_dir / file.path).stat().st_size == file.size
    os.remove(small_disk / "ballast")
