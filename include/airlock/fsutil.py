"""Small filesystem and concurrency helpers shared by the stages.

``atomic_write``: a reader sees the old file or the new one, never a torn one.
``run_all``: parallel work where the first failure stops what has not started
and is re-raised, so a partial result is never mistaken for a whole one.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, wait
from pathlib import Path
from typing import Protocol, TypeVar

T = TypeVar("T")


class FileEntry(Protocol):
    """A manifest file as later stages need it; :class:`airlock.manifest.ManifestFile` is one."""

    @property
    def path(self) -> str: ...

    @property
    def size(self) -> int: ...

    @property
    def sha256(self) -> str: ...


def atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory, fsync, then rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def run_all(futures: Sequence[Future[T]]) -> list[T]:
    """Results of ``futures`` in order; on the first exception, cancel the rest and raise it."""
    done, pending = wait(futures, return_when=FIRST_EXCEPTION)
    for future in pending:
        future.cancel()
    for future in done:
        if (error := future.exception()) is not None:
            raise error
    return [future.result() for future in futures]
