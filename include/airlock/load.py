"""Load model weights only from bytes that were verified, with no gap between check and use.

``verify`` followed by a separate ``load`` from the same path leaves a window
in which the file can be swapped (time of check vs time of use). The helpers
here close it: each file is read **once** into private memory, that buffer is
hashed, compared with the signed digest, and the same buffer is deserialized
(``safetensors.torch.load(bytes)``). Nothing is returned unless the bundle's
signature verifies with a trusted, unrevoked key and every digest matches;
failures raise :class:`~airlock.verify.VerificationError`.

The trust store is the caller's or, when none is passed, the host's
(:func:`airlock.trust.host_trust_store`: AIRLOCK_TRUST_STORE, else
/etc/airlock/trust.pem) -- never one that travels with the model or the registry.

Only safetensors weights and JSON files are deserialized; no pickle is ever
loaded. Memory: a model is held in memory once as bytes and once as tensors
while loading (``load_tensors=False`` keeps bytes only).

To hand a verified model to a server that insists on a path (vLLM,
``transformers.from_pretrained``), call :meth:`VerifiedModel.materialize` to
write the verified buffers into a fresh read-only directory, or follow
docs/serving.md (verify a copy on a read-only mount, then start the server).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from airlock.bundle import FileDigest
from airlock.errors import AirlockError
from airlock.trust import TrustStore, host_trust_store
from airlock.verify import (
    Failure,
    VerificationError,
    VerifiedStatement,
    compare_files,
    hashing_ignores,
    read_bundle,
    verify_bundle,
)

if TYPE_CHECKING:
    import torch

SAFETENSORS_SUFFIX = ".safetensors"


class LoadError(AirlockError):
    """A verified file could not be deserialized (it is signed, but not what its name says)."""


@dataclass(frozen=True)
class VerifiedModel:
    """A model whose every file was verified; ``files`` are the exact verified bytes."""

    model_dir: Path
    model_name: str
    root_digest: str
    key_id: str
    files: Mapping[str, bytes]
    state_dict: Mapping[str, torch.Tensor] = field(default_factory=dict)

    @property
    def config(self) -> dict[str, Any] | None:
        """``config.json`` parsed from its verified bytes, if the model has one."""
        return self.json("config.json") if "config.json" in self.files else None

    def json(self, name: str) -> Any:
        try:
            return json.loads(self.files[name])
        except KeyError:
            raise LoadError(f"{name!r} is not a file of {self.model_name!r}") from None
        except ValueError as exc:
            raise LoadError(f"{name!r} of {self.model_name!r} is not JSON: {exc}") from None

    def materialize(self, dest: Path) -> Path:
        """Write the verified bytes (not the source files) into the new directory ``dest``, read-only.

        For servers that need a path. ``dest`` must not exist; files are 0444
        and directories 0555 once written. Put ``dest`` on storage the serving
        user cannot write to for the guarantee to hold after this returns.
        """
        dest = Path(dest)
        dest.mkdir(mode=0o700, parents=False, exist_ok=False)
        directories = {dest}
        for name, data in self.files.items():
            target = dest / name
            target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            directories.update(p for p in target.parents if p.is_relative_to(dest))
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.chmod(target, 0o444)
        for directory in sorted(directories, key=lambda p: len(p.parts), reverse=True):
            os.chmod(directory, 0o555)
        return dest


def verified_safetensors(
    path: Path,
    bundle: Path | bytes,
    trust: TrustStore | None = None,
    *,
    model_root: Path | None = None,
) -> dict[str, torch.Tensor]:
    """The tensors of one safetensors file, deserialized from the very bytes that matched the signed digest.

    ``path`` is named in the bundle relative to ``model_root`` (default: its
    parent directory). Only this file is checked; use
    :func:`verified_from_pretrained` to require the whole model.
    """
    path = Path(path)
    statement = _verified_statement(bundle, trust)
    root = Path(model_root) if model_root is not None else path.parent
    name = _relative_name(path, root)
    signed = {f.path: f.sha256 for f in statement.manifest.files}
    if name not in signed:
        raise VerificationError(Failure.FILE_UNEXPECTED, f"{name!r} is not in the signature of "
                                                         f"{statement.manifest.model_name!r}")
    data = read_once(path)
    actual = hashlib.sha256(data).hexdigest()
    if actual != signed[name]:
        raise VerificationError(Failure.FILE_CHANGED, f"file changed: {name!r} (signed sha256:{signed[name][:16]}…, "
                                                      f"read sha256:{actual[:16]}…)")
    return _safetensors_from_bytes(name, data)


def verified_from_pretrained(
    model_dir: Path,
    bundle: Path | bytes,
    trust: TrustStore | None = None,
    *,
    expected_model_name: str | None = None,
    load_tensors: bool = True,
) -> VerifiedModel:
    """Read and verify every file of ``model_dir`` once, then deserialize the safetensors weights from memory.

    Like ``from_pretrained`` it gathers all ``*.safetensors`` shards into one
    state dict; unlike it, it refuses to return anything unless the whole
    directory is exactly what the bundle signs (no changed, missing, renamed
    or extra file).
    """
    from airlock.digests import HashingError, list_model_files

    model_dir = Path(model_dir)
    statement = _verified_statement(bundle, trust)
    manifest = statement.manifest
    if expected_model_name is not None and manifest.model_name != expected_model_name:
        raise VerificationError(Failure.OTHER_MODEL, f"signature is for another model: subject "
                                                     f"{manifest.model_name!r}, expected {expected_model_name!r}")
    bundle_path = bundle if isinstance(bundle, Path) else None
    try:
        present = list_model_files(model_dir, ignore_paths=hashing_ignores(manifest, model_dir, bundle_path))
    except HashingError as exc:
        raise VerificationError(Failure.UNREADABLE_MODEL, f"cannot read {model_dir}: {exc}") from None
    signed = {f.path for f in manifest.files}
    buffers: dict[str, bytes] = {}
    digests: list[FileDigest] = []
    for name in present:
        if name in signed:
            buffers[name] = read_once(model_dir / name)
            digests.append(FileDigest(name, hashlib.sha256(buffers[name]).hexdigest()))
        else:  # an extra file is hashed only to tell a rename from an addition; never kept
            digests.append(FileDigest(name, _stream_sha256(model_dir / name)))
    findings = compare_files(manifest, digests, str(model_dir))
    if findings:
        raise VerificationError(findings[0][0], "; ".join(text for _, text in findings))
    tensors = _merged_state_dict(buffers) if load_tensors else {}
    return VerifiedModel(model_dir, manifest.model_name, manifest.root_digest, statement.key.key_id,
                         MappingProxyType(buffers), MappingProxyType(tensors))


def _verified_statement(bundle: Path | bytes, trust: TrustStore | None) -> VerifiedStatement:
    trust = trust if trust is not None else host_trust_store()
    if isinstance(bundle, Path):
        return verify_bundle(read_bundle(bundle), trust, source=str(bundle))
    return verify_bundle(bundle, trust)


def _relative_name(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        raise VerificationError(Failure.FILE_UNEXPECTED, f"{path} is not inside the model directory {root}") from None


def read_once(path: Path) -> bytes:
    """The whole content of regular file ``path``, read into private memory (no mmap: a mapping can change)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise VerificationError(Failure.UNREADABLE_MODEL, f"cannot open {path}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb", buffering=0) as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise VerificationError(Failure.UNREADABLE_MODEL, f"{path} is not a regular file")
        return handle.readall()


def _stream_sha256(path: Path) -> str:
    try:
        with open(path, "rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError as exc:
        raise VerificationError(Failure.UNREADABLE_MODEL, f"cannot read {path}: {exc.strerror or exc}") from None


def _safetensors_from_bytes(name: str, data: bytes) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        return load(data)
    except (SafetensorError, ValueError) as exc:
        raise LoadError(f"{name!r} is signed but is not a valid safetensors file: {exc}") from None


def _merged_state_dict(buffers: Mapping[str, bytes]) -> dict[str, torch.Tensor]:
    merged: dict[str, torch.Tensor] = {}
    for name in sorted(n for n in buffers if n.endswith(SAFETENSORS_SUFFIX)):
        for tensor_name, tensor in _safetensors_from_bytes(name, buffers[name]).items():
            if tensor_name in merged:
                raise LoadError(f"tensor {tensor_name!r} appears in more than one shard (again in {name!r})")
            merged[tensor_name] = tensor
    return merged
