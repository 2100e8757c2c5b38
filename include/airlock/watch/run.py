"""What one ``model_integrity_watch`` run decides, from the index (never from XCom).

The checks of a run record their outcomes as ``checked`` events carrying the
run id. Which incidents to open is derived from those records and from the
index chains themselves (a chain that no longer verifies cannot hold a record
of its own failure): task states, XCom and run conf are operator-editable, the
signed, hash-chained index is not.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airlock.registry import Registry
    from airlock.trust import TrustStore

INCIDENT_SOURCE = "integrity_watch"
_MAX_REASON = 1000
_MAX_EVIDENCE_CHECKS = 20  # the incident report reads the full history from the index anyway


@dataclass(frozen=True)
class RunOutcome:
    """The verdicts a run recorded (the newest per target), and the incidents they call for (``model_incident``
    confs)."""

    verdicts: dict[str, int]
    incidents: list[dict[str, Any]]


def run_outcome(registry: Registry, run_id: str, trust: TrustStore | None = None) -> RunOutcome:
    """Every integrity check ``run_id`` recorded, and one incident per deviating version (or damaged index)."""
    from airlock.registry import RegistryError, RegistryIndexError, Status

    trust = trust if trust is not None else registry.trust()
    verdicts: Counter[str] = Counter()
    incidents: list[dict[str, Any]] = []
    for model in registry.models():
        try:
            state = registry.index.verified(model, trust, registry.host_state).state
        except RegistryIndexError as exc:
            # Every released version of the model hangs on this chain: each gets an incident (which cannot
            # revoke through a damaged chain, but reports and notifies; restoring the index is a person's job).
            for version in registry.released_versions(model):
                incidents.append(_conf(str(model), version, f"the index of {model} does not verify: {exc}",
                                       {"watch_run_id": run_id, "index": str(exc)}))
            continue
        except RegistryError:
            raise  # storage unreachable: the run could not decide anything
        if state is None:
            continue
        # A retried check records again: each target's newest record of this run is its verdict.
        latest = {(c.version, c.target): c for c in state.checks(check="integrity") if c.run_id == run_id}
        verdicts.update(c.verdict for c in latest.values())
        failed: dict[str, list] = {}
        for check in sorted(latest.values(), key=lambda c: c.seq):
            if check.verdict == "fail":
                failed.setdefault(check.version, []).append(check)
        for version, checks in sorted(failed.items()):
            current = state.version(version)
            if current is not None and current.status is Status.REVOKED:
                continue  # revoked meanwhile: its incident exists, or a person acted
            first = checks[0].summary
            reason = f"integrity watch: {len(checks)} deviation(s) in {model}@{version}: {first}"
            evidence = {"watch_run_id": run_id, "deviations": len(checks), "checks": [
                {"seq": c.seq, "at": c.at.isoformat(), "target": c.target, "summary": c.summary}
                for c in checks[:_MAX_EVIDENCE_CHECKS]]}
            incidents.append(_conf(str(model), version, reason, evidence))
    return RunOutcome(dict(verdicts), incidents)


def _conf(model: str, version: str, reason: str, evidence: dict[str, Any]) -> dict[str, Any]:
    if len(reason) > _MAX_REASON:
        reason = reason[:_MAX_REASON - 3] + "..."
    return {"model": model, "version": version, "reason": reason, "source": INCIDENT_SOURCE, "evidence": evidence}
