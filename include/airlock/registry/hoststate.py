"""What this host has already verified of each registry's index: the defence against rollback.

The hash chain and its signed checkpoints show any event that is missing,
reordered or altered *within* the history a registry presents. They cannot
show a history that was cut short: deleting the newest events together with
the newest checkpoint leaves an older, perfectly valid chain (a revocation
"undone" by rollback). Only a reader that remembers what it saw before can
notice. So every host keeps, per registry and model, the newest checkpoint it
verified (sequence number and head digest) in a small file under its own
state directory (AIRLOCK_HOST_STATE, default ``$XDG_STATE_HOME/airlock`` or
``~/.local/state/airlock``), and refuses a registry that shows it less
history than that, or a different event at that position.

A host that has never read a model cannot tell; Object Lock on the S3 bucket
(the registry's retention setting) is what keeps events and checkpoints from
being deleted at all. The file is host data, never registry data: it is
written with ``flock`` + atomic replace, and an unreadable one fails closed.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airlock.errors import ConfigurationError
from airlock.registry.checkpoint import IndexIntegrityError

STATE_SCHEMA = "airlock.host.index-heads/v1"
STATE_FILE = "index-heads.json"


@dataclass(frozen=True)
class SeenHead:
    seq: int
    head: str


class HostState:
    """The newest verified checkpoint per (registry URL, model), in ``<directory>/index-heads.json``."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory).expanduser()
        self.path = self.directory / STATE_FILE

    @classmethod
    def from_settings(cls) -> HostState:
        from airlock.config import load_settings

        return cls(load_settings().host_state_dir)

    def seen(self, registry_url: str, model: str) -> SeenHead | None:
        entry = self._read().get(registry_url, {}).get(model)
        return SeenHead(entry["seq"], entry["head"]) if entry else None

    def check(self, registry_url: str, model: str, digests: list[str], newest_checkpoint: int | None) -> None:
        """Refuse a chain shorter than, or different from, what this host verified before.

        ``digests`` are the sha256 of every stored event in order; ``newest_checkpoint``
        the sequence number of the newest valid checkpoint (None: there is none).
        """
        seen = self.seen(registry_url, model)
        if seen is None:
            return
        where = f"index of {model} in {registry_url}"
        if len(digests) <= seen.seq or newest_checkpoint is None or newest_checkpoint < seen.seq:
            shown = "no signed checkpoint" if newest_checkpoint is None else f"checkpoint #{newest_checkpoint}"
            raise IndexIntegrityError(
                f"{where} was rolled back: this host verified checkpoint #{seen.seq} before, the registry now shows "
                f"{len(digests)} events and {shown} (events or checkpoints were deleted; host state {self.path})")
        if digests[seen.seq] != seen.head:
            raise IndexIntegrityError(
                f"{where} was rewritten: event #{seen.seq} is sha256:{digests[seen.seq]}, this host verified "
                f"sha256:{seen.head} there before (host state {self.path})")

    def record(self, registry_url: str, model: str, seq: int, head: str) -> None:
        """Remember checkpoint ``seq``/``head`` as verified, unless a newer one already is."""
        with self._locked():
            data = self._read()
            models = data.setdefault(registry_url, {})
            current = models.get(model)
            if current is not None and current["seq"] >= seq:
                return
            models[model] = {"seq": seq, "head": head}
            self._write(data)

    # ------------------------------------------------------------------ file

    def _read(self) -> dict[str, dict[str, dict[str, Any]]]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise ConfigurationError(f"host state {self.path}: cannot read it ({exc.strerror or exc})") from None
        try:
            raw = json.loads(text)
            if raw.get("schema") != STATE_SCHEMA:
                raise ValueError(f"schema is {raw.get('schema')!r}, expected {STATE_SCHEMA!r}")
            registries = raw["registries"]
            for models in registries.values():
                for entry in models.values():
                    if not isinstance(entry["seq"], int) or not isinstance(entry["head"], str):
                        raise ValueError("an entry is not {seq: int, head: str}")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            # Fail closed: a damaged memory of what was verified must not silently become "nothing seen".
            raise ConfigurationError(f"host state {self.path} is damaged ({exc}); restore it or, knowingly, "
                                     f"remove it (rollback protection restarts from nothing)") from None
        return registries

    def _write(self, registries: dict[str, Any]) -> None:
        text = json.dumps({"schema": STATE_SCHEMA, "registries": registries}, indent=2, sort_keys=True) + "\n"
        fd, tmp = tempfile.mkstemp(prefix=f".{STATE_FILE}.", dir=self.directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:
            Path(tmp).unlink(missing_ok=True)
            raise ConfigurationError(f"host state {self.path}: cannot write it ({exc.strerror or exc})") from None

    @contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.directory / f"{STATE_FILE}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise ConfigurationError(f"host state {self.directory}: cannot use it ({exc.strerror or exc}); "
                                     f"set AIRLOCK_HOST_STATE to a writable directory") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)
