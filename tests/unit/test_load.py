"""Load-time verification: the bytes that are hashed are the bytes that are deserialized, read once."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch

import airlock.load
from airlock.load import LoadError, verified_from_pretrained, verified_safetensors
from airlock.signing import LocalKeySigner, sign_directory
from airlock.trust import TrustStore
from airlock.verify import Failure, VerificationError, verify_model
from tests.signing_fixtures import make_model, trust_store_for, write_safetensors


@pytest.fixture(scope="module")
def signer() -> LocalKeySigner:
    return LocalKeySigner.generate(key_name="airlock-model-signing", version=1)


@pytest.fixture()
def trust(signer: LocalKeySigner) -> TrustStore:
    return trust_store_for(signer)


@pytest.fixture()
def model(tmp_path: Path, signer: LocalKeySigner) -> tuple[Path, Path, dict[str, torch.Tensor]]:
    """A sharded model: two safetensors shards, config.json and random files; bundle outside the directory."""
    root = make_model(tmp_path / "tiny", with_safetensors=False)
    tensors = write_safetensors(root / "model-00001-of-00002.safetensors", {"embed.weight": (8, 4)})
    tensors |= write_safetensors(root / "model-00002-of-00002.safetensors", {"head.weight": (4, 8), "head.bias": (4,)})
    sign_directory(root, signer, output=tmp_path / "model.sig")
    return root, tmp_path / "model.sig", tensors


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x80
    path.write_bytes(bytes(data))


# --------------------------------------------------------------------------- one safetensors file


def test_verified_safetensors_returns_the_signed_tensors(model, trust) -> None:
    root, bundle, tensors = model
    loaded = verified_safetensors(root / "model-00002-of-00002.safetensors", bundle, trust)
    assert set(loaded) == {"head.weight", "head.bias"}
    assert torch.equal(loaded["head.weight"], tensors["head.weight"])


def test_verified_safetensors_accepts_bundle_bytes(model, trust) -> None:
    root, bundle, _ = model
    assert verified_safetensors(root / "model-00001-of-00002.safetensors", bundle.read_bytes(), trust)


def test_a_changed_safetensors_file_returns_nothing(model, trust) -> None:
    root, bundle, _ = model
    _flip(root / "model-00001-of-00002.safetensors")
    with pytest.raises(VerificationError, match="file changed: 'model-00001-of-00002.safetensors'") as info:
        verified_safetensors(root / "model-00001-of-00002.safetensors", bundle, trust)
    assert info.value.failure is Failure.FILE_CHANGED


def test_an_unsigned_safetensors_file_returns_nothing(model, trust) -> None:
    root, bundle, _ = model
    write_safetensors(root / "extra.safetensors", {"x": (2,)})
    with pytest.raises(VerificationError, match="'extra.safetensors' is not in the signature"):
        verified_safetensors(root / "extra.safetensors", bundle, trust)


def test_an_untrusted_signature_returns_nothing(model) -> None:
    root, bundle, _ = model
    stranger = trust_store_for(LocalKeySigner.generate(key_name="someone", version=1))
    with pytest.raises(VerificationError, match="unknown key") as info:
        verified_safetensors(root / "model-00001-of-00002.safetensors", bundle, stranger)
    assert info.value.failure is Failure.UNKNOWN_KEY


def test_a_revoked_key_returns_nothing(model, signer) -> None:
    root, bundle, _ = model
    revoked = trust_store_for(signer, revoked={"airlock-model-signing:v1": "incident 42"})
    with pytest.raises(VerificationError, match="incident 42"):
        verified_safetensors(root / "model-00001-of-00002.safetensors", bundle, revoked)


def test_the_file_is_read_once_and_those_bytes_are_deserialized(model, trust, monkeypatch) -> None:
    """Swap the file right after it is read: the result must still be the signed tensors, from that one read."""
    root, bundle, tensors = model
    target = root / "model-00001-of-00002.safetensors"
    reads: list[Path] = []
    real_read_once = airlock.load.read_once

    def read_then_swap(path: Path) -> bytes:
        reads.append(path)
        data = real_read_once(path)
        write_safetensors(path, {"embed.weight": (8, 4)})  # attacker replaces the file after the check's read
        return data

    monkeypatch.setattr(airlock.load, "read_once", read_then_swap)
    loaded = verified_safetensors(target, bundle, trust)
    assert reads == [target]
    assert torch.equal(loaded["embed.weight"], tensors["embed.weight"])


def test_a_signed_file_that_is_not_safetensors_is_a_load_error(tmp_path: Path, signer, trust) -> None:
    root = tmp_path / "bogus"
    root.mkdir()
    (root / "weights.safetensors").write_bytes(b"\x00" * 32)
    sign_directory(root, signer, output=tmp_path / "bogus.sig")
    with pytest.raises(LoadError, match="not a valid safetensors file"):
        verified_safetensors(root / "weights.safetensors", tmp_path / "bogus.sig", trust)


def test_a_symlinked_weights_file_is_refused(model, trust, tmp_path: Path) -> None:
    root, bundle, _ = model
    target = root / "model-00001-of-00002.safetensors"
    target.rename(tmp_path / "elsewhere.safetensors")
    os.symlink(tmp_path / "elsewhere.safetensors", target)
    with pytest.raises(VerificationError):
        verified_safetensors(target, bundle, trust)


# --------------------------------------------------------------------------- the whole model


def test_verified_from_pretrained_gathers_shards_and_config(model, trust) -> None:
    root, bundle, tensors = model
    verified = verified_from_pretrained(root, bundle, trust)
    assert set(verified.state_dict) == set(tensors)
    assert all(torch.equal(verified.state_dict[k], tensors[k]) for k in tensors)
    assert verified.config == {"model_type": "tiny", "hidden_size": 4}
    assert verified.key_id == "airlock-model-signing:v1" and verified.model_name == "tiny"
    assert set(verified.files) == {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def test_every_file_is_read_exactly_once(model, trust, monkeypatch) -> None:
    root, bundle, _ = model
    reads: list[str] = []
    real_read_once = airlock.load.read_once
    monkeypatch.setattr(airlock.load, "read_once",
                        lambda path: reads.append(Path(path).relative_to(root).as_posix()) or real_read_once(path))
    verified = verified_from_pretrained(root, bundle, trust)
    assert sorted(reads) == sorted(verified.files)


@pytest.mark.parametrize(
    ("tamper", "failure", "message"),
    [
        (lambda r: _flip(r / "tokenizer.json"), Failure.FILE_CHANGED, "file changed: 'tokenizer.json'"),
        (lambda r: (r / "model-00002-of-00002.safetensors").unlink(), Failure.FILE_MISSING,
         "'model-00002-of-00002.safetensors'"),
        (lambda r: (r / "modeling_evil.py").write_text("import os"), Failure.FILE_UNEXPECTED, "'modeling_evil.py'"),
        (lambda r: (r / "config.json").rename(r / "config2.json"), Failure.FILE_RENAMED,
         "'config.json' -> 'config2.json'"),
    ],
    ids=["changed", "missing", "unexpected", "renamed"],
)
def test_verified_from_pretrained_refuses_any_difference(model, trust, tamper, failure: Failure, message: str) -> None:
    root, bundle, _ = model
    tamper(root)
    with pytest.raises(VerificationError, match=message) as info:
        verified_from_pretrained(root, bundle, trust)
    assert info.value.failure is failure


def test_expected_model_name(model, trust) -> None:
    root, bundle, _ = model
    with pytest.raises(VerificationError, match="expected 'org/other'"):
        verified_from_pretrained(root, bundle, trust, expected_model_name="org/other")


def test_materialize_writes_the_verified_bytes_read_only(model, trust, tmp_path: Path) -> None:
    root, bundle, _ = model
    verified = verified_from_pretrained(root, bundle, trust, load_tensors=False)
    assert verified.state_dict == {}
    copy = verified.materialize(tmp_path / "serving-copy")
    assert verify_model(copy, bundle, trust).ok
    for path in copy.rglob("*"):
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o555 if path.is_dir() else 0o444), path
    with pytest.raises(FileExistsError):
        verified.materialize(tmp_path / "serving-copy")
    for path in [copy, *copy.rglob("*")]:  # let pytest clean up
        if path.is_dir():
            path.chmod(0o755)
