"""What the integrity watch checks: every released version, and every deployed copy it can reach.

**Registry copies.** Every version that reached ``RELEASED`` and is in the index
and not revoked (a revoked version is final: pulls and verified loads already
refuse it). A version released but not yet indexed (a promotion that has not
finished) has no history to record a check in; it is skipped with a note. A
model whose index cannot be read is still planned, from the storage listing,
so that its checks report the damage.

**Deployed copies.** Every ``pulled`` event of those versions names the host
and the absolute path (``dest``) the verified copy went to. Only the newest
pull per (host, path) counts, across all models: a path pulled again later (a
new version into the same directory) holds that newer copy, and checking it
against the old version would be a false alarm. A copy is checked here when
this process can read it:

* its host is this host (``socket.gethostname()``, as ``airlock pull`` records
  it): the path as recorded;
* or its host's storage is mounted here, as configured in
  ``AIRLOCK_WATCH_PATHS``: a JSON object, or the path of a file holding one,
  mapping a host name to where its storage appears on this machine::

      {"serving-1": "/mnt/serving-1",
       "serving-2": {"/srv/models": "/mnt/nfs/serving-2-models"}}

  A string maps the host's whole filesystem (``/srv/models/x`` on serving-1 is
  ``/mnt/serving-1/srv/models/x`` here); an object maps path prefixes (whole
  path components; the longest prefix wins), for shared storage exported from
  one directory.

Every other copy is checked on its own host by ``airlock watch``, which a
serving host's cron runs and which reports back into the same index
(:mod:`airlock.commands.watch`). Those copies are listed in the plan's notes.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from airlock.errors import ConfigurationError

if TYPE_CHECKING:
    from airlock.registry import PulledEvent, Registry

WATCH_PATHS_ENV = "AIRLOCK_WATCH_PATHS"
REGISTRY_TARGET = "registry"
_log = logging.getLogger("airlock.watch")


class WatchTarget(BaseModel):
    """One thing to re-hash: a registry version, or a deployed copy of one (JSON: it travels as XCom)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["registry", "deployed"]
    model: str
    version: str
    host: str | None = Field(default=None, description="deployed: the host the pull record names")
    dest: str | None = Field(default=None, description="deployed: the path the pull record names, on that host")
    path: str | None = Field(default=None, description="deployed: where this process reads the copy")

    @property
    def label(self) -> str:
        """The check's ``target`` in the index: 'registry', or the deployment as recorded, 'host:path'."""
        if self.kind == "registry":
            return REGISTRY_TARGET
        return f"{self.host}:{self.dest}"

    @property
    def reference(self) -> str:
        return f"{self.model}@{self.version}"

    def describe(self) -> str:
        if self.kind == "registry":
            return f"{self.reference} (registry copy)"
        where = "" if self.path == self.dest else f", read at {self.path}"
        return f"{self.reference} deployed at {self.label}{where}"


# --------------------------------------------------------------------------- where copies are reachable


@dataclass(frozen=True)
class PathMappings:
    """Host name -> [(path prefix on that host, where it is mounted here)], longest prefix first."""

    hosts: dict[str, tuple[tuple[PurePosixPath, Path], ...]] = field(default_factory=dict)
    source: str = WATCH_PATHS_ENV

    @classmethod
    def parse(cls, text: str, source: str = WATCH_PATHS_ENV) -> PathMappings:
        try:
            raw = json.loads(text)
        except ValueError as exc:
            raise ConfigurationError(f"{source}: not JSON ({exc})") from None
        if not isinstance(raw, dict):
            raise ConfigurationError(f"{source}: must be a JSON object mapping host names to mount points")
        hosts: dict[str, tuple[tuple[PurePosixPath, Path], ...]] = {}
        for host, value in raw.items():
            if not isinstance(host, str) or not host.strip() or host != host.strip():
                raise ConfigurationError(f"{source}: host name {host!r} is empty or padded")
            prefixes = {"/": value} if isinstance(value, str) else value
            if not isinstance(prefixes, dict) or not prefixes:
                raise ConfigurationError(f"{source}: host {host!r}: give a mount point (string) or an object "
                                         f"mapping path prefixes on that host to mount points")
            pairs = []
            for remote, local in prefixes.items():
                where = f"{source}: host {host!r}, prefix {remote!r}"
                if not isinstance(local, str):
                    raise ConfigurationError(f"{where}: the mount point must be a string")
                pairs.append((_absolute_posix(remote, where), _absolute_local(local, where)))
            pairs.sort(key=lambda pair: len(pair[0].parts), reverse=True)
            hosts[host] = tuple(pairs)
        return cls(hosts, source)

    def local_path(self, host: str, dest: str) -> Path | None:
        """Where ``dest`` on ``host`` is readable here, or None when no mapping covers it."""
        remote = _absolute_posix(dest, f"pull record {host}:{dest}")
        for prefix, mount in self.hosts.get(host, ()):
            if remote == prefix or prefix in remote.parents:
                return mount.joinpath(*remote.parts[len(prefix.parts):])
        return None


def load_path_mappings(env: dict[str, str] | None = None) -> PathMappings:
    """The mappings AIRLOCK_WATCH_PATHS configures (inline JSON, or a file path); none when unset."""
    env = dict(os.environ if env is None else env)
    raw = env.get(WATCH_PATHS_ENV, "").strip()
    if not raw:
        return PathMappings()
    if raw.startswith("{"):
        return PathMappings.parse(raw)
    path = Path(raw).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"{WATCH_PATHS_ENV}={raw!r}: cannot read the mapping file ({exc})") from None
    return PathMappings.parse(text, source=f"{WATCH_PATHS_ENV} file {path}")


def _absolute_posix(value: Any, where: str) -> PurePosixPath:
    if not isinstance(value, str) or not value.startswith("/") or "\0" in value:
        raise ConfigurationError(f"{where}: {value!r} is not an absolute path")
    path = PurePosixPath(value)
    if ".." in path.parts:
        raise ConfigurationError(f"{where}: {value!r} contains '..'")
    return path


def _absolute_local(value: str, where: str) -> Path:
    path = Path(value).expanduser()
    if not path.is_absolute() or "\0" in value or ".." in path.parts:
        raise ConfigurationError(f"{where}: mount point {value!r} is not an absolute path without '..'")
    return path


# --------------------------------------------------------------------------- the plan


def this_host() -> str:
    """This host's name as ``airlock pull`` records it."""
    from airlock.pull import default_host

    return default_host()


def plan_watch(registry: Registry, *, host: str | None = None,
               mappings: PathMappings | None = None) -> list[WatchTarget]:
    """Every registry version and every reachable deployed copy to check (see the module docstring).

    ``host`` defaults to this host's name; ``mappings`` to :func:`load_path_mappings`.
    Copies nothing here can reach are logged (checked by ``airlock watch`` on their host).
    """
    from airlock.registry import RegistryError, Status

    host = host or this_host()
    mappings = mappings if mappings is not None else load_path_mappings()
    targets: list[WatchTarget] = []
    pulls: dict[tuple[str, str], PulledEvent] = {}
    skipped: list[str] = []
    for model in _models(registry):
        released = set(registry.released_versions(model))
        try:
            state = registry.model_state(model)
        except RegistryError as exc:
            # A damaged index: plan the stored versions anyway, so the checks report the damage.
            from airlock.redact import one_line

            _log.warning("index of %s cannot be read (%s); checking its stored versions", model, one_line(str(exc)))
            targets += [WatchTarget(kind="registry", model=str(model), version=v) for v in sorted(released)]
            continue
        if state is None:
            continue
        for version in sorted(released):
            current = state.version(version)
            if current is None:
                skipped.append(f"{model}@{version}: released but not indexed (promotion unfinished)")
            elif current.status is Status.REVOKED:
                skipped.append(f"{model}@{version}: revoked ({current.reason})")
            else:
                targets.append(WatchTarget(kind="registry", model=str(model), version=version))
        for pull in state.pulls():
            key = (pull.host, pull.dest)
            if key not in pulls or pull.at >= pulls[key].at:
                pulls[key] = pull
    watched = {(t.model, t.version) for t in targets}
    unreachable: list[str] = []
    for pull in sorted(pulls.values(), key=lambda p: (p.model, p.version, p.host, p.dest)):
        pull_host, dest = pull.host, pull.dest
        if (pull.model, pull.version) not in watched:
            continue  # revoked or gone: nothing vouches for the copy any more, so nothing to compare it with
        try:
            path = Path(dest) if pull_host == host else mappings.local_path(pull_host, dest)
        except ConfigurationError as exc:  # a pull record whose path is not absolute: not a copy pull wrote
            skipped.append(f"{pull.model}@{pull.version} at {pull_host}:{dest}: {exc}")
            continue
        if path is None:
            unreachable.append(f"{pull.model}@{pull.version} at {pull_host}:{dest}")
            continue
        targets.append(WatchTarget(kind="deployed", model=pull.model, version=pull.version, host=pull_host,
                                   dest=dest, path=str(path)))
    from airlock.redact import one_line  # notes quote reasons, hosts and paths from the index

    for note in skipped:
        _log.info("not watched: %s", one_line(note))
    if unreachable:
        _log.info("%d deployed cop%s not reachable from %s (checked by `airlock watch` on its host; or map its "
                  "storage in %s): %s", len(unreachable), "y" if len(unreachable) == 1 else "ies", host,
                  WATCH_PATHS_ENV, one_line("; ".join(unreachable)))
    return targets


def _models(registry: Registry) -> list:
    """Models in the index and in storage (a model stored but with an unreadable index listing still counts)."""
    from airlock.registry import ModelName, RegistryError

    names = set(registry.models())
    store = registry.store
    for org in store.list_children("models/"):
        for name in store.list_children(f"models/{org}/"):
            try:
                names.add(ModelName.parse(f"{org}/{name}"))
            except RegistryError:
                pass  # not a name Airlock writes (`airlock registry check` reports what it is)
    return sorted(names)
