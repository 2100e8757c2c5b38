"""``airlock registry check``: what a registry holds that it should not, and what it lacks that it should.

Problems (the check fails):

* leftovers of dead promotions: partial files, unfinished multipart uploads
  (:mod:`airlock.registry.leftovers`); with ``clean=True`` they are removed and
  reported as removed instead;
* a released version whose ``RELEASED`` record or ``promotion.json`` is
  unreadable or does not match (``deep=True`` also re-hashes every stored
  object against the plan);
* an index whose history cannot be read.

Notes (the check passes): leftovers a live promotion still owns, and claimed
versions without ``RELEASED`` (a promotion in progress, or one that died; running
it again finishes it; a claim is never removed, so a version name is never reused).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from airlock.registry.base import Layout, ModelName, RegistryError
from airlock.registry.leftovers import Leftover, LeftoverStore, describe_age

if TYPE_CHECKING:
    from airlock.registry.core import Registry


@dataclass
class CheckReport:
    registry: str
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    removed: list[Leftover] = field(default_factory=list)
    leftovers: list[Leftover] = field(default_factory=list)
    versions_checked: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json_dict(self) -> dict[str, object]:
        return {
            "registry": self.registry, "ok": self.ok, "versions_checked": self.versions_checked,
            "problems": self.problems, "notes": self.notes,
            "leftovers": [item.to_json_dict() for item in self.leftovers],
            "removed": [item.to_json_dict() for item in self.removed],
        }


def check_registry(registry: Registry, model: ModelName | None = None, *, deep: bool = False,
                   clean: bool = False) -> CheckReport:
    """Check ``registry`` (or one model of it); see the module docstring for what counts as a problem."""
    store = registry.store
    report = CheckReport(registry=registry.url)
    _check_leftovers(store, model, clean, report)
    for name in _models(registry, model):
        _check_model(registry, name, deep, report)
    return report


def _check_leftovers(store: object, model: ModelName | None, clean: bool, report: CheckReport) -> None:
    if not isinstance(store, LeftoverStore):
        report.notes.append("this backend cannot list leftovers")
        return
    prefixes = [Layout.model_prefix(model), Layout.index_prefix(model).removesuffix("events/")] if model else [""]
    for prefix in prefixes:
        for item in store.leftovers(prefix):
            if item.live:
                report.notes.append(f"{item.key}: {item.kind} in progress ({item.why})")
            elif clean and store.remove_leftover(item):
                report.removed.append(item)
            else:
                report.leftovers.append(item)
                report.problems.append(f"{item.key}: leftover {item.kind}, {item.size} bytes, "
                                       f"{describe_age(item.age_s)} old ({item.why})")


def _models(registry: Registry, model: ModelName | None) -> list[ModelName]:
    if model is not None:
        return [model]
    names: set[ModelName] = set()
    store = registry.store
    # Storage and index both: a model whose versions were stored but never indexed is still checked.
    for org in store.list_children("models/"):
        for name in store.list_children(f"models/{org}/"):
            try:
                names.add(ModelName.parse(f"{org}/{name}"))
            except RegistryError:
                pass  # not a name Airlock writes; the leftover scan above already covers its partials
    names.update(registry.models())  # an unreadable index listing: the check could not run (exit 2)
    return sorted(names)


def _check_model(registry: Registry, model: ModelName, deep: bool, report: CheckReport) -> None:
    store = registry.store
    prefix = Layout.model_prefix(model)
    try:
        registry.model_state(model)
    except RegistryError as exc:
        report.problems.append(f"index of {model}: {exc}")
    for version in store.list_children(prefix):
        where = f"{model}@{version}"
        try:
            released = store.read(Layout.key(model, version, Layout.RELEASED)) is not None
            claimed = store.read(Layout.key(model, version, Layout.PLAN)) is not None
        except RegistryError as exc:
            report.problems.append(f"{where}: {exc}")
            continue
        if not released:
            if claimed:
                report.notes.append(f"{where}: claimed but not released (a promotion in progress, or one that "
                                    f"died: running it again finishes it)")
            continue
        report.versions_checked += 1
        try:
            if deep:
                registry.verify_version(model, version)
            else:
                registry.released(model, version)
        except RegistryError as exc:
            report.problems.append(f"{where}: {exc}")
