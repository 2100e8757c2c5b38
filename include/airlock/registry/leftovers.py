"""What a promotion killed mid-write leaves in a registry, and when it is safe to remove.

Every write is put-if-absent and becomes visible whole or not at all, so a
killed promotion never leaves a damaged *key*. It does leave storage behind
that no reader looks at and nothing would ever remove:

* filesystem: the hidden ``.airlock-partial.<uuid>.<name>`` file a key was being
  written to (see :mod:`airlock.registry.filesystem`);
* S3: an unfinished multipart upload (a single PUT is atomic and leaves
  nothing; a large object's parts stay stored, and billed, until the upload is
  completed or aborted).

Both backends list them with ``leftovers(prefix)`` and remove one with
``remove_leftover(item)``; :func:`airlock.registry.promotion.promote` cleans the
stale ones of the version it promotes, and ``airlock registry check`` lists
(and with ``--clean`` removes) them registry-wide.

Never remove what a live promotion is writing. How each backend knows:

* filesystem: the writer holds an exclusive ``flock`` on its partial file from
  the moment it creates it until it has unlinked it. A ``flock`` dies with its
  process, so a partial whose lock another process can take has no live writer.
  The instant between ``open(O_EXCL)`` and ``flock`` is covered by a short
  grace period on the file's age; where the filesystem cannot lock at all, only
  age decides, and then a day.
* S3 has no locks: a live upload sends a part (64 MiB by default) every few
  seconds, so an upload whose newest part (or start) is older than an hour
  has no live writer; one that slow would time out anyway.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

# A partial whose lock is free is removed once it is this old (covers create -> flock).
PARTIAL_GRACE_S = 60.0
# Where locks are unavailable, age alone decides.
PARTIAL_UNLOCKED_STALE_S = 24 * 3600.0
# An S3 multipart upload with no new part for this long has no live writer.
UPLOAD_STALE_S = 3600.0

LeftoverKind = Literal["partial file", "unfinished multipart upload"]


@dataclass(frozen=True)
class Leftover:
    """One piece of storage a promotion left behind; ``live`` when a running writer still owns it."""

    key: str  # registry key of the partial file / of the object the upload was for
    kind: LeftoverKind
    size: int
    age_s: float  # since the last write activity
    live: bool
    why: str  # the evidence for ``live`` (e.g. "locked by a running writer", "no lock, 3h old")
    handle: str = ""  # backend detail needed to remove it (the S3 upload id)

    def to_json_dict(self) -> dict[str, object]:
        return {"key": self.key, "kind": self.kind, "size": self.size, "age_s": round(self.age_s, 1),
                "live": self.live, "why": self.why}


@runtime_checkable
class LeftoverStore(Protocol):
    """What a backend offers beyond :class:`~airlock.registry.base.ObjectStore` to find and clean leftovers.

    Not part of the object protocol on purpose: removing storage is housekeeping
    of the backend's own hidden state, never a way to delete a key.
    """

    def leftovers(self, prefix: str, *, now: float | None = None) -> list[Leftover]:
        """Every leftover under ``prefix`` (a key prefix ending in '/', or "" for the whole registry)."""
        ...

    def remove_leftover(self, item: Leftover, *, now: float | None = None) -> bool:
        """Remove ``item`` if it is (still) stale; False when it is live again or already gone."""
        ...


def describe_age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"
