"""Behaviour every registry backend must have; each backend's test module subclasses :class:`RegistryContract`.

A subclass provides the ``registry_factory`` fixture: ``factory(store_wrapper=None, workers=8) -> Registry``
over one fresh, empty registry (the same one on every call within a test), built with
``signer=SIGNER, trust=TRUST`` (every status change is signed into the index), and
``registry_spec``: a string ``open_registry`` accepts for it (processes re-open it).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from airlock.registry import (
    RegistryIndexError,
    PromotionRequest,
    Registry,
    SourceChangedError,
    Status,
    VersionConflictError,
    VersionNotFoundError,
)
from airlock.registry.base import Layout, ModelName
from airlock.manifest import root_digest_of_pairs
from airlock.signing import LocalKeySigner
from tests.signing_fixtures import trust_store_for

MODEL = "demo/tiny"
SOURCE = "hf://demo/tiny"
# The index checkpoint signer of every contract registry, and the trust store that verifies it.
SIGNER = LocalKeySigner.generate(key_name="airlock-model-signing", version=1)
TRUST = trust_store_for(SIGNER)


def signer_pem(signer: LocalKeySigner = SIGNER) -> bytes:
    """The private key, for a child process to rebuild the signer (key objects do not pickle)."""
    from cryptography.hazmat.primitives import serialization

    return signer._key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption())


@dataclass(frozen=True)
class Row:
    path: str
    size: int
    sha256: str


def make_model(base: Path, flavour: str = "a", *, extra: dict[str, bytes] | None = None) -> dict[str, Any]:
    """A small model directory plus its signature, AI-BOM and a report; returns PromotionRequest kwargs."""
    model_dir = base / f"model-{flavour}"
    model_dir.mkdir(parents=True, exist_ok=True)
    contents = {
        "config.json": json.dumps({"model_type": "gpt2", "flavour": flavour}).encode(),
        "model.safetensors": hashlib.sha256(flavour.encode()).digest() * 64,
        "tokenizer/vocab.json": b'{"a": 1}',
        **(extra or {}),
    }
    rows = []
    for path, data in contents.items():
        (model_dir / path).parent.mkdir(parents=True, exist_ok=True)
        (model_dir / path).write_bytes(data)
        rows.append(Row(path, len(data), hashlib.sha256(data).hexdigest()))
    root = root_digest_of_pairs((r.path, r.sha256) for r in rows)
    artifacts = base / f"artifacts-{flavour}"
    artifacts.mkdir(exist_ok=True)
    (artifacts / "model.sig").write_text(json.dumps({"signed": root}))
    (artifacts / "aibom.cdx.json").write_text(json.dumps({"bomFormat": "CycloneDX", "root": root}))
    (artifacts / "scan.json").write_text(json.dumps({"verdict": "allow"}))
    return {
        "model_dir": model_dir, "files": tuple(rows), "root_digest": root,
        "signature": artifacts / "model.sig", "aibom": artifacts / "aibom.cdx.json",
        "reports": (artifacts / "scan.json",),
    }


def request(base: Path, version: str = "1", flavour: str = "a", model: str = MODEL,
            **overrides: Any) -> PromotionRequest:
    kwargs = {**make_model(base, flavour), **overrides}
    kwargs.setdefault("source", SOURCE)
    return PromotionRequest(model=model, version=version, owner="ml-platform", risk_tier="medium",
                            approver="policy:medium", actor="test", **kwargs)


class SimulatedCrash(RuntimeError):
    """Stands for the process dying: raised instead of a write, nothing after it runs."""


class CrashingStore:
    """Delegates to ``inner`` but dies on the write after ``survive`` successful ones."""

    def __init__(self, inner: Any, survive: int) -> None:
        self._inner = inner
        self._left = survive
        self._lock = threading.Lock()

    def put_if_absent(self, key: str, source: Any, size: int, sha256: str) -> bool:
        with self._lock:
            if self._left == 0:
                raise SimulatedCrash(f"crash before writing {key}")
            self._left -= 1
        return self._inner.put_if_absent(key, source, size, sha256)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def promote_in_process(spec: str, kwargs: dict[str, Any], key_pem: bytes) -> str:
    """Run in a separate process: promote and report 'created', 'noop' or the error class name."""
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    from airlock.registry import PromotionRequest, RegistryError, open_registry

    signer = LocalKeySigner(load_pem_private_key(key_pem, None), key_name="airlock-model-signing", version=1)
    try:
        result = open_registry(spec, workers=2, signer=signer, trust=trust_store_for(signer)).promote(
            PromotionRequest(**kwargs))
    except RegistryError as exc:
        return type(exc).__name__
    return "created" if result.created else "noop"


RegistryFactory = Callable[..., Registry]


class RegistryContract:
    """The behaviour ARCHITECTURE.md and issue 6 require of every backend."""

    # ------------------------------------------------------------------ basics

    def test_promote_then_read(self, registry_factory: RegistryFactory, tmp_path: Path) -> None:
        registry = registry_factory()
        req = request(tmp_path)
        result = registry.promote(req)
        assert result.created
        assert result.root_digest == req.root_digest
        released = registry.verify_version(MODEL, "1")  # every stored object re-confirmed against the plan
        assert released.status == "approved"
        stored = {o.key for o in released.plan.objects}
        assert stored == {"files/config.json", "files/model.safetensors", "files/tokenizer/vocab.json",
                          "model.sig", "aibom.cdx.json", "reports/scan.json"}
        assert released.object_sha256("model.sig") == result.signature_sha256
        [row] = registry.list()
        assert (row.model, row.version, row.status, row.owner, row.risk_tier, row.approver) == (
            MODEL, "1", Status.APPROVED, "ml-platform", "medium", "policy:medium")

    def test_identical_promotion_again_is_a_noop(self, registry_factory: RegistryFactory, tmp_path: Path) -> None:
        registry = registry_factory()
        first = registry.promote(request(tmp_path))
        again = registry.promote(request(tmp_path))
        assert first.created and not again.created
        assert again.released == first.released  # the same RELEASED record, not a new one
        assert [e.kind for e in registry.model_state(MODEL).history] == ["promoted"]

    def test_different_content_under_a_released_version_is_refused(
        self, registry_factory: RegistryFactory, tmp_path: Path
    ) -> None:
        registry = registry_factory()
        registry.promote(request(tmp_path, flavour="a"))
        before = registry.released(MODEL, "1")
        with pytest.raises(VersionConflictError) as refused:
            registry.promote(request(tmp_path, flavour="b"))
        message = str(refused.value)
        assert f"{MODEL}@1 is released with different content" in message
        assert "files/config.json" in message  # the first differing object, by key
        assert registry.verify_version(MODEL, "1").plan == before.plan  # nothing stored was changed

    def test_a_different_report_alone_is_different_content(
        self, registry_factory: RegistryFactory, tmp_path: Path
    ) -> None:
        registry = registry_factory()
        req = request(tmp_path)
        registry.promote(req)
        other = tmp_path / "other" / "scan.json"
        other.parent.mkdir()
        other.write_text(json.dumps({"verdict": "allow", "note": "re-run"}))
        with pytest.raises(VersionConflictError, match="reports/scan.json"):
            registry.promote(PromotionRequest(**{**req.__dict__, "reports": (other,)}))

    def test_another_version_of_the_same_model_is_fine(self, registry_factory: RegistryFactory,
                                                       tmp_path: Path) -> None:
        registry = registry_factory()
        registry.promote(request(tmp_path, version="1", flavour="a"))
        registry.promote(request(tmp_path, version="2", flavour="b"))
        assert [r.version for r in registry.list(MODEL)] == ["1", "2"]
        assert registry.model_state(MODEL).owner == "ml-platform"

    def test_unknown_version_is_not_found(self, registry_factory: RegistryFactory) -> None:
        with pytest.raises(VersionNotFoundError, match=f"{MODEL}@9"):
            registry_factory().released(MODEL, "9")

    # ------------------------------------------------------------------ crashes

    def test_crash_at_every_write_leaves_nothing_visible_and_a_rerun_completes(
        self, registry_factory: RegistryFactory, tmp_path: Path
    ) -> None:
        registry = registry_factory()
        req = request(tmp_path)
        objects = 6  # 3 files, model.sig, aibom.cdx.json, reports/scan.json
        # Writes: the claim, each object, RELEASED. Crash before each one in turn, re-running in between.
        for survive in range(1 + objects + 1):
            crashing = registry_factory(store_wrapper=lambda store, n=survive: CrashingStore(store, n), workers=1)
            with pytest.raises(SimulatedCrash):
                crashing.promote(req)
            with pytest.raises(VersionNotFoundError):
                registry.released(MODEL, "1")
            assert registry.list() == []
            assert registry.released_versions(MODEL) == []
        result = registry.promote(req)
        assert result.created
        assert registry.verify_version(MODEL, "1").status == "approved"

    def test_crash_after_release_before_indexing_is_completed_by_a_rerun(
        self, registry_factory: RegistryFactory, tmp_path: Path
    ) -> None:
        registry = registry_factory()
        req = request(tmp_path)
        crashing = registry_factory(store_wrapper=lambda store: CrashingStore(store, 1 + 6 + 1), workers=1)
        with pytest.raises(SimulatedCrash):
            crashing.promote(req)
        # RELEASED is the commit point: the version exists, but is reported as not yet indexed, never approved.
        assert registry.released(MODEL, "1").status == "unindexed"
        again = registry.promote(req)
        assert not again.created
        assert registry.released(MODEL, "1").status == "approved"

    def test_a_file_that_changed_since_its_manifest_is_never_stored(
        self, registry_factory: RegistryFactory, tmp_path: Path
    ) -> None:
        registry = registry_factory()
        req = request(tmp_path)
        weights = req.model_dir / "model.safetensors"
        original = weights.read_bytes()
        weights.write_bytes(bytes(len(original)))  # same size, different bytes
        with pytest.raises(SourceChangedError, match="model.safetensors"):
            registry.promote(req)
        key = Layout.key(ModelName.parse(MODEL), "1", "files/model.safetensors")
        assert registry.store.stored_sha256(key) is None
        weights.write_bytes(original)
        assert registry.promote(req).created

    # ------------------------------------------------------------------ concurrency

    def test_concurrent_promotions_of_different_content_exactly_one_wins(
        self, registry_factory: RegistryFactory, tmp_path: Path
    ) -> None:
        registry = registry_factory()
        requests = [request(tmp_path, flavour=f) for f in "abcdef"]

        def attempt(req: PromotionRequest) -> str:
            try:
                registry_factory().promote(req)
            except VersionConflictError:
                return "refused"
            return req.root_digest

        with ThreadPoolExecutor(max_workers=len(requests)) as pool:
            outcomes = list(pool.map(attempt, requests))
        winners = [o for o in outcomes if o != "refused"]
        assert len(winners) == 1
        assert registry.verify_version(MODEL, "1").root_digest == winners[0]
        assert len(registry.model_state(MODEL).history) == 1

    def test_concurrent_identical_promotions_create_once(self, registry_factory: RegistryFactory,
                                                          tmp_path: Path) -> None:
        registry = registry_factory()
        req = request(tmp_path)
        with ThreadPoolExecutor(max_workers=6) as pool:
            created = list(pool.map(lambda _: registry_factory().promote(req).created, range(6)))
        assert created.count(True) == 1
        assert [e.kind for e in registry.model_state(MODEL).history] == ["promoted"]

    @pytest.mark.slow
    def test_concurrent_promotions_in_processes_exactly_one_wins(self, registry_spec: str, tmp_path: Path,
                                                                 registry_factory: RegistryFactory) -> None:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        payloads = []
        for flavour in "abcd":
            req = request(tmp_path, flavour=flavour)
            payloads.append({**req.__dict__, "files": [Row(r.path, r.size, r.sha256) for r in req.files]})
        with ProcessPoolExecutor(max_workers=4, mp_context=multiprocessing.get_context("spawn")) as pool:
            outcomes = list(pool.map(promote_in_process, [registry_spec] * 4, payloads, [signer_pem()] * 4))
        assert sorted(outcomes) == ["VersionConflictError"] * 3 + ["created"]
        winner = payloads[outcomes.index("created")]["root_digest"]
        assert registry_factory().verify_version(MODEL, "1").root_digest == winner

    def test_concurrent_status_changes_lose_no_event(self, registry_factory: RegistryFactory,
                                                      tmp_path: Path) -> None:
        registry = registry_factory()
        versions = [str(n) for n in range(1, 7)]
        for version in versions:
            registry.promote(request(tmp_path, version=version, flavour=version))

        def change(version: str) -> None:
            registry_factory().deprecate(MODEL, version, reason=f"superseded {version}", actor="alice")

        with ThreadPoolExecutor(max_workers=len(versions)) as pool:
            list(pool.map(change, versions))
        state = registry.model_state(MODEL)
        assert [e.seq for e in state.history] == list(range(12))
        assert {v.version: v.status for v in state.versions} == {v: Status.DEPRECATED for v in versions}

    # ------------------------------------------------------------------ status

    def test_revoke_shows_in_list_with_its_reason(self, registry_factory: RegistryFactory, tmp_path: Path) -> None:
        registry = registry_factory()
        registry.promote(request(tmp_path, version="1", flavour="a"))
        registry.promote(request(tmp_path, version="2", flavour="b"))
        registry.deprecate(MODEL, "1", reason="superseded by 2", actor="alice")
        registry.revoke(MODEL, "1", reason="CVE-2099-0001 in tokenizer", actor="bob")
        rows = {r.version: r for r in registry.list()}
        assert rows["1"].status == Status.REVOKED
        assert rows["1"].reason == "CVE-2099-0001 in tokenizer"
        assert rows["1"].updated_by == "bob"
        assert rows["2"].status == Status.APPROVED
        kinds = [(e.kind, e.version) for e in registry.model_state(MODEL).history]
        assert kinds == [("promoted", "1"), ("promoted", "2"), ("deprecated", "1"), ("revoked", "1")]
        # The version's bytes are untouched: revocation is a status, never a deletion.
        assert registry.verify_version(MODEL, "1").status == "revoked"

    def test_status_rules(self, registry_factory: RegistryFactory, tmp_path: Path) -> None:
        registry = registry_factory()
        registry.promote(request(tmp_path))
        registry.revoke(MODEL, "1", reason="bad", actor="bob")
        with pytest.raises(RegistryIndexError, match="is revoked"):
            registry.revoke(MODEL, "1", reason="again", actor="bob")
        with pytest.raises(RegistryIndexError, match="cannot become deprecated"):
            registry.deprecate(MODEL, "1", reason="late", actor="bob")
        with pytest.raises(VersionNotFoundError):
            registry.revoke(MODEL, "7", reason="never released", actor="bob")
        assert len(registry.model_state(MODEL).history) == 2
