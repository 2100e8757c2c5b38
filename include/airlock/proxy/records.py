"""What the proxy writes into the registry index: pull records for every download, and tampered files it found.

**Pulls.** Every GET of a model file is recorded with the registry's own pull
record (:class:`~airlock.registry.PulledEvent`, as ``airlock pull`` appends
it) *before* its first byte is sent: ``actor`` is the consumer (from its token),
``host`` the client's address, ``dest`` ``hf-proxy://<proxy name>/<file>``, with
the version, root digest and signing key. ``ModelState.pulls()`` and
``model_incident`` therefore name every consumer of a version. The append is
checked against the index as it is then: a version revoked a moment ago is
refused here too. Recording before sending over-reports a download that then
fails, which is safe; the reverse would hide a consumer from incident response.
The same (consumer, host, version, file) is recorded once per window
(``pull_record_window_s``), so a resumed or retried transfer does not flood the index.

**Tampering.** A stored file whose bytes are not the signed ones is refused and
recorded once per stored object as a failed ``integrity`` check of the registry
copy (:meth:`Registry.record_check`, as the integrity watch records its
findings), and logged.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

from airlock.errors import AirlockError
from airlock.registry import ModelName, PulledEvent, Registry, RegistryError, Status

if TYPE_CHECKING:
    from airlock.proxy.verification import VerifiedVersion
    from airlock.registry.index import ModelState

_log = logging.getLogger("airlock.proxy")


class PullRecorder:
    def __init__(self, registry: Registry, proxy_name: str, window_s: float) -> None:
        self.registry = registry
        self.proxy_name = proxy_name
        self.window_s = window_s
        self._recent: dict[tuple[str, str, str, str, str], float] = {}
        self._key_locks: dict[tuple[str, str, str, str, str], threading.Lock] = {}
        self._lock = threading.Lock()

    def dest(self, path: str) -> str:
        return f"hf-proxy://{self.proxy_name}/{path}"

    def record(self, version: VerifiedVersion, path: str, consumer: str, host: str) -> PulledEvent | None:
        """Append the pull (None when this download was recorded within the window); refuses a revoked version."""
        key = (consumer, host, version.model, version.version, path)
        with self._lock:
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:  # parallel requests for the same download: one record, the others wait for it
            return self._record(key, version, path, consumer, host)

    def _record(self, key: tuple[str, str, str, str, str], version: VerifiedVersion, path: str, consumer: str,
                host: str) -> PulledEvent | None:
        from airlock.proxy.verification import refuse_version

        now = time.monotonic()
        with self._lock:
            seen = self._recent.get(key)
            if seen is not None and now - seen < self.window_s:
                return None
        model = ModelName.parse(version.model)

        def make(state: ModelState | None, seq: int, at: datetime) -> PulledEvent:
            current = state.version(version.version) if state else None
            if current is not None and current.status is Status.REVOKED:
                raise refuse_version(f"{version.model}@{version.version} was revoked: {current.reason} (by "
                                     f"{current.updated_by} at {current.updated_at.isoformat()})")
            return PulledEvent(seq=seq, model=version.model, version=version.version, at=at, actor=consumer,
                               root_digest=version.root_digest, key_id=version.key_id, host=host,
                               dest=self.dest(path))

        event = self.registry.index.append(model, make)
        assert isinstance(event, PulledEvent)
        with self._lock:
            self._recent[key] = now
            if len(self._recent) > 100_000:  # bounded: forget the oldest half
                for stale in sorted(self._recent, key=self._recent.__getitem__)[:50_000]:
                    del self._recent[stale]
                    self._key_locks.pop(stale, None)
        _log.info("pull recorded: %s@%s %s by %s from %s (index event #%d)", version.model, version.version, path,
                  consumer, host, event.seq)
        return event


class TamperReporter:
    def __init__(self, registry: Registry, actor: str) -> None:
        self.registry = registry
        self.actor = actor
        self._reported: set[tuple[Any, ...]] = set()
        self._lock = threading.Lock()

    def report(self, version: VerifiedVersion, path: str, identity: tuple[Any, ...], reason: str) -> None:
        from airlock.redact import one_line

        _log.error("refused a tampered registry object: %s", one_line(reason))
        key = (version.model, version.version, path, identity)
        with self._lock:
            if key in self._reported:
                return
            self._reported.add(key)
        try:
            self.registry.record_check(version.model, version.version, check="integrity", verdict="fail",
                                       target="registry", actor=self.actor,
                                       summary=one_line(f"DEVIATION found by the model proxy: {reason}"))
        except (AirlockError, RegistryError) as exc:  # refusing is what matters; the log line above stays
            _log.error("could not record the deviation in the index: %s", one_line(str(exc)))
            with self._lock:
                self._reported.discard(key)
