"""The integrity watch: re-hash released versions and deployed copies against their signatures.

* :mod:`airlock.watch.targets`: what to check (``plan_watch``) and how deployed
  copies on other hosts are reached (``AIRLOCK_WATCH_PATHS``);
* :mod:`airlock.watch.check`: the checks (``check_version``,
  ``check_deployed_copy``, ``check_target``) and recording them in the index;
* :mod:`airlock.watch.run`: what the ``model_integrity_watch`` DAG asks of a run
  (the incidents its recorded deviations call for).

The DAG runs the first two for every target it can reach; a serving host's
cron runs ``airlock watch`` for its own copies; both report into the index.
"""

from airlock.watch.check import (
    SignedReference,
    WatchError,
    WatchResult,
    check_deployed_copy,
    check_target,
    check_version,
    load_reference,
    record_result,
)
from airlock.watch.targets import PathMappings, WatchTarget, load_path_mappings, plan_watch

__all__ = [
    "PathMappings",
    "SignedReference",
    "WatchError",
    "WatchResult",
    "WatchTarget",
    "check_deployed_copy",
    "check_target",
    "check_version",
    "load_path_mappings",
    "load_reference",
    "plan_watch",
    "record_result",
]
