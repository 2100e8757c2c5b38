"""The tamper-evident index: a hash chain per model, signed checkpoints, and the host's memory against rollback."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from airlock.aibom import sign_aibom
from airlock.registry import (
    FilesystemStore,
    HostState,
    IndexIntegrityError,
    PulledEvent,
    Registry,
    RegistryError,
    StatusEvent,
)
from airlock.registry import index as index_module
from airlock.registry.base import Layout, ModelName
from airlock.registry.checkpoint import CHECKPOINT_PAYLOAD_TYPE, sign_checkpoint
from airlock.registry.index import EVENT_SCHEMA
from airlock.signing import LocalKeySigner
from tests.registry_contract import MODEL, SIGNER, TRUST, CrashingStore, SimulatedCrash, request

NAME = ModelName.parse(MODEL)


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    return tmp_path / "registry"


@pytest.fixture()
def registry(root: Path) -> Registry:
    return Registry(FilesystemStore(root), signer=SIGNER, trust=TRUST)


@pytest.fixture()
def reader(root: Path) -> Registry:
    """A verifying reader: no signer, the host's trust store."""
    return Registry(FilesystemStore(root), trust=TRUST)


@pytest.fixture(autouse=True)
def _short_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    # A writer waits this long for another writer's checkpoint before calling a head unsigned.
    monkeypatch.setattr(index_module, "_FOREIGN_HEAD_WAIT_S", 0.3)


def _history(registry: Registry, tmp_path: Path) -> None:
    """promoted 1, promoted 2, deprecated 1, revoked 1 (events 0..3, each checkpointed)."""
    registry.promote(request(tmp_path, version="1", flavour="a"))
    registry.promote(request(tmp_path, version="2", flavour="b"))
    registry.deprecate(MODEL, "1", reason="superseded by 2", actor="alice")
    registry.revoke(MODEL, "1", reason="CVE-2099-1 in the tokenizer", actor="security")


def _event_path(root: Path, seq: int) -> Path:
    return root / Layout.event_key(NAME, seq)


def _head_path(root: Path, seq: int) -> Path:
    return root / Layout.checkpoint_key(NAME, seq)


def _delete(path: Path) -> None:
    path.parent.chmod(0o755)
    path.unlink()


def _overwrite(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.chmod(0o644)
    path.write_bytes(data)


def _raw(root: Path, seq: int) -> dict[str, Any]:
    return json.loads(_event_path(root, seq).read_bytes())


def _append_forged(root: Path, seq: int, fields: dict[str, Any]) -> bytes:
    """What someone with write access to storage can append: a well-formed event that chains correctly."""
    prev = hashlib.sha256(_event_path(root, seq - 1).read_bytes()).hexdigest()
    event = {"schema": EVENT_SCHEMA, "seq": seq, "prev": prev, "model": MODEL, "at": "2099-01-01T00:00:00Z",
             **fields}
    data = (json.dumps(event, indent=2, sort_keys=True) + "\n").encode()
    _overwrite(_event_path(root, seq), data)
    return data


# --------------------------------------------------------------------------- the chain as written


def test_every_event_chains_the_previous_ones_bytes_and_every_change_is_checkpointed(
        registry: Registry, reader: Registry, root: Path, tmp_path: Path) -> None:
    _history(registry, tmp_path)
    raws = [_event_path(root, n).read_bytes() for n in range(4)]
    assert json.loads(raws[0])["prev"] is None
    for n in range(1, 4):
        assert json.loads(raws[n])["prev"] == hashlib.sha256(raws[n - 1]).hexdigest()
        assert json.loads(raws[n])["schema"] == "airlock.registry.event/v2"
    assert sorted(p.name for p in (root / Layout.heads_prefix(NAME)).iterdir()) == [
        f"{n:010d}.json" for n in range(4)]
    verified = reader.verify_index(MODEL)
    assert verified.checkpoint.seq == 3 and verified.key_id == SIGNER.key_id
    assert verified.checkpoint.checkpoint.head == hashlib.sha256(raws[3]).hexdigest()
    assert verified.state.version("1").status == "revoked"
    # The checkpoint is a DSSE envelope with a payload type of its own (no replay of model or BOM signatures).
    bundle = json.loads(_head_path(root, 3).read_bytes())
    assert bundle["dsseEnvelope"]["payloadType"] == CHECKPOINT_PAYLOAD_TYPE
    payload = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    assert (payload["model"], payload["seq"]) == (MODEL, 3)


def test_pulled_events_after_the_newest_checkpoint_need_no_signature_but_must_chain(
        registry: Registry, reader: Registry, root: Path, tmp_path: Path) -> None:
    registry.promote(request(tmp_path))
    digest = registry.released(MODEL, "1").root_digest

    def pulled(_state: Any, seq: int, at: datetime) -> PulledEvent:
        return PulledEvent(seq=seq, model=MODEL, version="1", at=at, actor="ops", root_digest=digest,
                           key_id=SIGNER.key_id, host="serving-1", dest="/srv/m")

    unsigned = Registry(FilesystemStore(root))  # a serving host: no signer, no Vault
    unsigned.index.append(NAME, pulled)
    unsigned.index.append(NAME, pulled)
    assert not _head_path(root, 1).exists()
    assert [e.kind for e in reader.verify_index(MODEL).state.history] == ["promoted", "pulled", "pulled"]
    # A pull record with a broken link is refused like any other.
    data = json.loads(_event_path(root, 2).read_bytes())
    data["prev"] = "0" * 64
    _overwrite(_event_path(root, 2), (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())
    with pytest.raises(IndexIntegrityError, match="prev is 0000"):
        reader.verify_index(MODEL)


def test_a_status_change_needs_a_signer(root: Path, registry: Registry, tmp_path: Path) -> None:
    registry.promote(request(tmp_path))
    unsigned = Registry(FilesystemStore(root), trust=TRUST)
    with pytest.raises(RegistryError, match="needs a signer"):
        unsigned.revoke(MODEL, "1", reason="bad", actor="x")
    with pytest.raises(RegistryError, match="needs a signer"):
        unsigned.promote(request(tmp_path, version="2", flavour="b"))
    assert len(registry.index.events(NAME)) == 1


# --------------------------------------------------------------------------- tampering is seen


def test_deleting_a_revocation_does_not_undo_it(registry: Registry, reader: Registry, root: Path,
                                                tmp_path: Path) -> None:
    _history(registry, tmp_path)
    _delete(_event_path(root, 3))  # the revocation
    for read in (lambda: reader.verify_index(MODEL), lambda: reader.model_state(MODEL), lambda: reader.list()):
        with pytest.raises(IndexIntegrityError, match="checkpoint #3 .* covers events that are not there"):
            read()
    # Nor can the next event reuse its number.
    with pytest.raises(IndexIntegrityError):
        registry.promote(request(tmp_path, version="3", flavour="c"))
    assert not _event_path(root, 3).exists()


def test_a_deleted_event_in_the_middle_is_a_gap(registry: Registry, reader: Registry, root: Path,
                                                tmp_path: Path) -> None:
    _history(registry, tmp_path)
    _delete(_event_path(root, 1))
    with pytest.raises(IndexIntegrityError, match="expected .*0000000001.json, found .*0000000002.json"):
        reader.verify_index(MODEL)


def test_reordered_events_are_refused(registry: Registry, reader: Registry, root: Path, tmp_path: Path) -> None:
    _history(registry, tmp_path)
    first, second = _event_path(root, 2).read_bytes(), _event_path(root, 3).read_bytes()
    _overwrite(_event_path(root, 2), second)
    _overwrite(_event_path(root, 3), first)
    with pytest.raises(IndexIntegrityError, match="records demo/tiny seq 3, expected demo/tiny seq 2"):
        reader.verify_index(MODEL)


@pytest.mark.parametrize("seq, message", [(1, "prev is"), (3, "its checkpoint .* says")])
def test_an_edited_event_is_refused(registry: Registry, reader: Registry, root: Path, tmp_path: Path, seq: int,
                                    message: str) -> None:
    _history(registry, tmp_path)
    raw = _raw(root, seq)
    raw["actor"] = "someone-else"
    _overwrite(_event_path(root, seq), (json.dumps(raw, indent=2, sort_keys=True) + "\n").encode())
    with pytest.raises(IndexIntegrityError, match=message):
        reader.verify_index(MODEL)


def test_a_rewritten_history_without_signatures_is_an_unsigned_head(registry: Registry, reader: Registry,
                                                                     root: Path, tmp_path: Path) -> None:
    # Everything an attacker can do without the key: rewrite the chain consistently, drop the checkpoints.
    _history(registry, tmp_path)
    for seq in range(4):
        _delete(_head_path(root, seq))
    _delete(_event_path(root, 3))
    with pytest.raises(IndexIntegrityError, match="unsigned head: event #0 \\(promoted 1\\).*no signed checkpoint"):
        reader.verify_index(MODEL)


def test_a_removed_newest_checkpoint_leaves_an_unsigned_head(registry: Registry, reader: Registry, root: Path,
                                                             tmp_path: Path) -> None:
    _history(registry, tmp_path)
    _delete(_head_path(root, 3))
    with pytest.raises(IndexIntegrityError, match="event #3 \\(revoked 1\\).*newest signed checkpoint is #2"):
        reader.verify_index(MODEL)


def test_an_appended_status_change_nobody_signed_is_refused(registry: Registry, reader: Registry, root: Path,
                                                            tmp_path: Path) -> None:
    registry.promote(request(tmp_path, version="1", flavour="a"))
    registry.revoke(MODEL, "1", reason="compromised", actor="security")
    # "Un-revoking" is impossible (revoked is final), so the attacker promotes their own version instead.
    registry_digest = registry.released(MODEL, "1").root_digest
    _append_forged(root, 2, {"kind": "promoted", "version": "9", "actor": "mallory", "root_digest": registry_digest,
                             "plan_sha256": "1" * 64, "owner": "ml-platform", "risk_tier": "medium",
                             "approver": "ciso", "source": "hf://demo/tiny"})
    assert registry.index.state(NAME).version("9") is not None  # structurally fine: only the signature says no
    with pytest.raises(IndexIntegrityError, match="unsigned head: event #2 \\(promoted 9\\)"):
        reader.verify_index(MODEL)
    # And no writer signs over it: the next promotion refuses instead of laundering the forged event.
    with pytest.raises(IndexIntegrityError, match="unsigned head: event #2"):
        registry.promote(request(tmp_path, version="2", flavour="b"))
    assert not _head_path(root, 2).exists() and not _event_path(root, 3).exists()


def test_a_checkpoint_signed_by_an_untrusted_key_is_refused(registry: Registry, reader: Registry, root: Path,
                                                            tmp_path: Path) -> None:
    registry.promote(request(tmp_path))
    data = _append_forged(root, 1, {"kind": "deprecated", "version": "1", "actor": "mallory", "reason": "forged"})
    rogue = LocalKeySigner.generate(key_name="airlock-model-signing", version=2)
    forged = sign_checkpoint(MODEL, 1, hashlib.sha256(data).hexdigest(), datetime.now(UTC), rogue)
    _overwrite(_head_path(root, 1), forged)
    with pytest.raises(IndexIntegrityError, match="checkpoint signature not trusted: unknown key"):
        reader.verify_index(MODEL)
    with pytest.raises(IndexIntegrityError, match="not trusted"):
        registry.revoke(MODEL, "1", reason="x", actor="y")


def test_a_model_or_bom_signature_cannot_stand_in_for_a_checkpoint(registry: Registry, reader: Registry,
                                                                   root: Path, tmp_path: Path) -> None:
    registry.promote(request(tmp_path))
    data = _append_forged(root, 1, {"kind": "deprecated", "version": "1", "actor": "mallory", "reason": "forged"})
    # A validly signed BOM bundle (by the trusted key!) stored as a checkpoint.
    _overwrite(_head_path(root, 1), sign_aibom(b'{"bomFormat": "CycloneDX"}', SIGNER))
    with pytest.raises(IndexIntegrityError, match="payloadType"):
        reader.verify_index(MODEL)
    # A checkpoint payload stored under the wrong number.
    _overwrite(_head_path(root, 1), sign_checkpoint(MODEL, 0, hashlib.sha256(data).hexdigest(), datetime.now(UTC),
                                                    SIGNER))
    with pytest.raises(IndexIntegrityError, match="stored under another name"):
        reader.verify_index(MODEL)


@pytest.mark.parametrize("mutate, message", [
    (lambda raw: {**raw, "schema": "airlock.registry.event/v1"}, "schema"),
    (lambda raw: raw | {"extra": 1}, "extra"),
])
def test_events_are_read_strictly(registry: Registry, reader: Registry, root: Path, tmp_path: Path, mutate,
                                  message: str) -> None:
    registry.promote(request(tmp_path))
    _overwrite(_event_path(root, 0), json.dumps(mutate(_raw(root, 0))).encode())
    with pytest.raises(IndexIntegrityError, match=message):
        reader.verify_index(MODEL)


def test_an_event_with_a_repeated_key_has_no_single_reading(registry: Registry, reader: Registry, root: Path,
                                                            tmp_path: Path) -> None:
    registry.promote(request(tmp_path))
    text = _event_path(root, 0).read_text()
    _overwrite(_event_path(root, 0), text.replace('"kind": "promoted",', '"kind": "promoted", "kind": "revoked",')
               .encode())
    with pytest.raises(IndexIntegrityError, match="'kind' appears twice"):
        reader.verify_index(MODEL)


# --------------------------------------------------------------------------- crashes between event and checkpoint


def test_a_crash_before_the_checkpoint_is_an_unsigned_head_until_the_rerun_signs_it(
        root: Path, registry: Registry, reader: Registry, tmp_path: Path) -> None:
    req = request(tmp_path)
    # Writes: the claim, 6 objects, RELEASED, the event; the checkpoint is the 10th.
    crashing = Registry(CrashingStore(FilesystemStore(root), 9), signer=SIGNER, trust=TRUST, workers=1)
    with pytest.raises(SimulatedCrash, match="heads/0000000000.json"):
        crashing.promote(req)
    with pytest.raises(IndexIntegrityError, match="unsigned head: event #0"):
        reader.verify_version(MODEL, "1")
    assert not registry.promote(req).created  # the re-run recognizes its own event and signs it
    assert reader.verify_version(MODEL, "1").status == "approved"
    assert len(registry.index.events(NAME)) == 1

    crashing = Registry(CrashingStore(FilesystemStore(root), 1), signer=SIGNER, trust=TRUST)
    with pytest.raises(SimulatedCrash):
        crashing.revoke(MODEL, "1", reason="bad weights", actor="security")
    with pytest.raises(IndexIntegrityError, match="unsigned head: event #1 \\(revoked 1\\)"):
        reader.verify_index(MODEL)
    # Another change does not sign over it (it is not its own)...
    with pytest.raises(IndexIntegrityError, match="unsigned head"):
        registry.promote(request(tmp_path, version="2", flavour="b"))
    # ...the same revocation again does.
    event = registry.revoke(MODEL, "1", reason="bad weights", actor="security")
    assert isinstance(event, StatusEvent) and event.seq == 1
    assert reader.verify_index(MODEL).state.version("1").status == "revoked"


# --------------------------------------------------------------------------- rollback


def test_rollback_is_refused_by_a_host_that_saw_the_newer_history(root: Path, registry: Registry,
                                                                  tmp_path: Path) -> None:
    _history(registry, tmp_path)
    host = HostState(tmp_path / "host")
    Registry(FilesystemStore(root), trust=TRUST, host_state=host).verify_index(MODEL)
    assert host.seen(registry.url, MODEL).seq == 3
    # The revocation and its checkpoint deleted together: the shorter chain is valid in itself...
    _delete(_head_path(root, 3))
    _delete(_event_path(root, 3))
    assert Registry(FilesystemStore(root), trust=TRUST).verify_index(MODEL).state.version("1").status == "deprecated"
    # ...but not to a host that has verified more.
    with pytest.raises(IndexIntegrityError, match="rolled back: this host verified checkpoint #3"):
        Registry(FilesystemStore(root), trust=TRUST, host_state=host).verify_index(MODEL)
    # Nor when the attacker pads the chain with new events (a fork at the seen position).
    registry.promote(request(tmp_path, version="3", flavour="c"))
    with pytest.raises(IndexIntegrityError, match="rewritten: event #3"):
        Registry(FilesystemStore(root), trust=TRUST, host_state=host).verify_index(MODEL)


def test_host_state_is_per_registry_and_model_and_fails_closed(tmp_path: Path) -> None:
    host = HostState(tmp_path / "host")
    host.record("file:///a", MODEL, 5, "a" * 64)
    host.record("file:///a", MODEL, 2, "b" * 64)  # older: ignored
    assert (host.seen("file:///a", MODEL).seq, host.seen("file:///a", MODEL).head) == (5, "a" * 64)
    assert host.seen("file:///b", MODEL) is None and host.seen("file:///a", "demo/other") is None
    os.chmod(host.path, 0o644)
    host.path.write_text("{not json")
    from airlock.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="damaged"):
        host.seen("file:///a", MODEL)
