"""The back half of ``model_ingest`` as plain functions, and the gates that decide what may be signed.

Each function takes the run's id, reads what earlier stages recorded in the
run's quarantine area, does one stage, writes its artefact there and returns a
small JSON summary for XCom. The DAG only wires them together and maps
verdicts to task states, so the whole pipeline is testable without a scheduler.

**XCom is not evidence.** XCom, task states and run conf can be edited by
anyone allowed to operate a run, so no gate reads them. The quarantine area is
derived from the run id (never from a path in XCom) and only the pipeline
writes there; the source record is pinned there by the first task; the scan
report, the signature and the BOM are read from there; the human approval is
Airflow's HITL record (:mod:`airlock.approval`); a model's owner, minimum tier
and source repository are the registry's model record. ``sign_model`` and
``promote`` re-derive every verdict from those records (:func:`gather_facts`)
and refuse otherwise.

Artefacts of a run, under the quarantine root::

    <run dir>/source.json           the pinned source (resolve_source; written once per run, except that a
                                    file drop pinned by listing is re-pinned by content after its download,
                                    the listing pin kept as source-listing.json)
    <area>/manifest.json            (hash_manifest)
    <area>/reports/scan.json        ScanReport
    <area>/stages/<stage>.json      what each stage recorded for the BOM's formulation
    <area>/approval.json            the approval the signature was made under
    <area>/model.sig                OpenSSF model-signing bundle over the manifest
    <area>/aibom.cdx.json           CycloneDX 1.6 AI-BOM
    <area>/aibom.sig                DSSE bundle whose subject is the BOM digest
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airlock.approval import (
    Approval,
    ApprovalNeed,
    ApprovalRefused,
    FormFacts,
    RunRecords,
    approval_binding,
    assigned_users,
    check_approval,
    file_changes,
    refuse_if_rejected,
    render_form,
)
from airlock.errors import AirlockError, SourceError
from airlock.fsutil import atomic_write
from airlock.manifest import Manifest
from airlock.quarantine import QuarantineArea, run_directory

if TYPE_CHECKING:
    from airlock.aibom import DerivationRecord, ResolvedParent
    from airlock.config import Settings
    from airlock.scan.report import ScanReport
    from airlock.sources import ResolvedSource

DAG_ID = "model_ingest"
SOURCE_RECORD = "source.json"
SCAN_REPORT = "reports/scan.json"
SIGNATURE = "model.sig"
AIBOM = "aibom.cdx.json"
AIBOM_SIGNATURE = "aibom.sig"
APPROVAL_RECORD = "approval.json"
STAGES_DIR = "stages"


class ScanBlocked(AirlockError):
    """The scan's verdict is block (or it could not scan): nothing from this model goes further."""


class RegistryConflict(AirlockError):
    """The registry already holds this version with different content."""


class GateRefused(AirlockError):
    """A name, ownership or run-record rule refuses the ingestion: a verdict, never retried."""


def _now() -> str:
    return datetime.now(UTC).isoformat()


# --------------------------------------------------------------------------- run parameters


@dataclass(frozen=True)
class RunParams:
    """The run's parameters, checked by the library (whatever the DAG's Param schema let through)."""

    source: str
    revision: str | None
    owner: str
    tier: str
    registry_name: str | None = None
    derivation: DerivationRecord | None = None

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> RunParams:
        from airlock.aibom import DerivationRecord
        from airlock.policy import OWNER_PATTERN, REGISTRY_NAME_PATTERN, REVISION_PATTERN, SOURCE_PATTERN, policy_for

        def checked(name: str, pattern: str, rule: str, *, optional: bool = False) -> str | None:
            value = params.get(name)
            if value is None and optional:
                return None
            if not isinstance(value, str) or not re.search(pattern, value):
                raise GateRefused(f"parameter {name}={value!r} refused: {rule} (the whole value must match)")
            return value

        tier = str(params.get("risk_tier"))
        policy_for(tier)  # an unknown tier is a configuration error, never a default
        derivation = params.get("derivation")
        return cls(
            source=checked("source", SOURCE_PATTERN, "hf://org/name[@rev], s3://bucket/prefix or file:///path"),
            revision=checked("revision", REVISION_PATTERN, "a branch, tag, commit sha or sha256: digest",
                             optional=True),
            owner=checked("owner", OWNER_PATTERN,
                          "letters, digits, inner spaces, '.', '@', '-' (no newlines or Markdown/HTML control)"),
            tier=tier,
            registry_name=checked("registry_name", REGISTRY_NAME_PATTERN, "ORG/NAME", optional=True),
            derivation=DerivationRecord.load(derivation) if derivation is not None else None,
        )


# --------------------------------------------------------------------------- run records


def run_dir(root: Path, run_id: str) -> Path:
    return run_directory(root, DAG_ID, run_id)


def record_source(root: Path, run_id: str, resolve: Callable[[], ResolvedSource],
                  check: Callable[[ResolvedSource], None] = lambda _source: None) -> ResolvedSource:
    """The run's pinned source: resolved once and written into the run directory, where later tasks read it.

    A retry (or a cleared task) reads the record instead of resolving again, so
    every task of one run sees one revision whatever the branch does meanwhile.
    ``check`` refuses a source before anything is written (a refused run leaves
    nothing behind: its teardown never runs, as its setup never did).
    """
    path = run_dir(root, run_id) / SOURCE_RECORD
    if path.exists():
        recorded = run_source(root, run_id)
        check(recorded)
        return recorded
    resolved = resolve()
    check(resolved)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    atomic_write(path, (json.dumps(resolved.to_json_dict(), indent=2, sort_keys=True) + "\n").encode(), 0o444)
    return resolved


def run_source(root: Path, run_id: str) -> ResolvedSource:
    """The source ``resolve_source`` pinned for ``run_id``; refused when that task never recorded one."""
    from pydantic import ValidationError

    from airlock.sources import ResolvedSource

    path = run_dir(root, run_id) / SOURCE_RECORD
    try:
        return ResolvedSource.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        raise GateRefused(f"run {run_id} has no source record ({path}): resolve_source did not run for it") from None
    except (OSError, ValidationError) as exc:
        raise GateRefused(f"{path}: unreadable source record ({type(exc).__name__})") from None


def run_area(root: Path, run_id: str) -> QuarantineArea:
    """The run's quarantine area, derived from the run id and its source record (never from a path in XCom)."""
    return QuarantineArea.for_run(root, DAG_ID, run_id, run_source(root, run_id).uri)


def resolve_run(settings: Settings, run_id: str, params: Mapping[str, Any], resolve: Callable[[], ResolvedSource],
                registry) -> ResolvedSource:
    """``resolve_source``: check the parameters, pin the source once for the run, and refuse early what the
    registry's model record already refuses (so nothing is downloaded for it)."""
    run_params = RunParams.from_params(params)

    def check(source: ResolvedSource) -> None:
        target = registry_target(source.kind, source.model_name, source.revision, run_params.registry_name)
        check_model_record(model_record(registry, target.model, source_repository(source.uri), run_params.owner,
                                        run_params.tier))

    return record_source(settings.quarantine_root, run_id, resolve, check)


def pin_downloaded_source(root: Path, run_id: str, source: ResolvedSource, result) -> ResolvedSource:
    """A file drop pinned by listing gets its content revision from the download's pass, recorded as the run's
    source (the listing pin is kept beside it as ``source-listing.json``); any other source is returned as is.

    Every later task reads the content-pinned record, so what is signed and named (``rev-<digest>``) is the
    content, exactly as if resolution had hashed the drop. A requested revision the content is not refuses.
    """
    from airlock.errors import IntegrityError
    from airlock.sources import pin_content

    if source.pinned_by != "listing":
        return source
    try:
        pinned = pin_content(source, result.digests, result.vendor_digests)
    except SourceError as exc:
        raise IntegrityError(str(exc)) from None
    path = run_dir(root, run_id) / SOURCE_RECORD
    listing = path.with_name("source-listing.json")
    if not listing.exists():
        atomic_write(listing, path.read_bytes(), 0o444)
    atomic_write(path, (json.dumps(pinned.to_json_dict(), indent=2, sort_keys=True) + "\n").encode(), 0o444)
    return pinned


def record_download(area: QuarantineArea, source: ResolvedSource, result, started_at: str, ended_at: str) -> None:
    record_stage(area, "download", {"files": result.files, "bytes": result.bytes, "revision": source.revision,
                                    "started_at": started_at, "ended_at": ended_at})


def load_manifest(area: QuarantineArea) -> Manifest:
    try:
        return Manifest.model_validate_json(area.manifest_file.read_text())
    except FileNotFoundError:
        raise GateRefused(f"no manifest in quarantine ({area.manifest_file}): hash_manifest did not run") from None


def record_stage(area: QuarantineArea, stage: str, record: dict[str, Any]) -> None:
    """What a stage tells the BOM's formulation (tool, parameters, times), kept beside the model."""
    directory = area.path / STAGES_DIR
    directory.mkdir(mode=0o700, exist_ok=True)
    atomic_write(directory / f"{stage}.json", (json.dumps(record, sort_keys=True) + "\n").encode())


def _stage(area: QuarantineArea, stage: str) -> dict[str, Any]:
    path = area.path / STAGES_DIR / f"{stage}.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise GateRefused(f"no {stage} record in quarantine ({path}): that stage did not run for this run") from None


# --------------------------------------------------------------------------- names and the model record


@dataclass(frozen=True)
class RegistryTarget:
    """Where an ingested model lands: ``models/<model>/<version>``."""

    model: str  # ORG/NAME
    version: str

    def to_json_dict(self) -> dict[str, str]:
        return {"model": self.model, "version": self.version}


def registry_target(source_kind: str, model_name: str, revision: str, override: str | None) -> RegistryTarget:
    """Registry name and version of an ingested model.

    The version is derived from the immutable revision (HF commit sha, or the
    drop's ``sha256:`` listing digest), so re-ingesting the same revision names
    the same version and immutability does the rest. Drops have no ``org/name``
    of their own: they need ``override``.
    """
    from airlock.registry import ModelName

    name = override or (model_name if source_kind == "hf" else None)
    if not name:
        # Bad input, not a transient failure: resolve_source fails at once instead of retrying.
        raise SourceError(f"a {source_kind}:// drop needs a registry name (ORG/NAME) for {model_name!r}")
    short = revision.removeprefix("sha256:")[:12]
    if not re.fullmatch(r"[0-9a-f]{12}", short):
        raise SourceError(f"revision {revision!r} is not an immutable revision (commit sha or sha256: digest)")
    return RegistryTarget(model=str(ModelName.parse(name)), version=f"rev-{short}")


def own_name(source: ResolvedSource) -> str | None:
    """The source's own ORG/NAME: a hub repo id (the hub's accounts own that namespace).

    A drop (s3://, file://) has none: its path is chosen by whoever writes the
    drop, so a registry name for it is a claim that a human binds at the
    model's first release (later versions from the same drop follow the record).
    """
    from airlock.registry import ModelName, RegistryError

    if source.kind != "hf":
        return None
    try:
        return str(ModelName.parse(source.location))
    except RegistryError:
        return None


def source_repository(uri: str) -> str:
    """The repository a version comes from (the source URI without its revision)."""
    from airlock.registry.base import source_repository as repository

    return repository(uri)


@dataclass(frozen=True)
class ModelRecord:
    """The registry's record of a model (owner, minimum tier, source repository: fixed at its first release),
    compared with this ingestion; read from the index chain verified with the trust store."""

    model: str
    owner: str | None  # None: a new model (this release fixes the record)
    min_tier: str | None
    source: str | None
    other_source: bool  # this version comes from another repository: the owner's reviewers must approve
    refusal: str | None  # the index would refuse it (another owner, a tier below the minimum)
    latest_approved: str | None = None


def model_record(registry, model: str, repository: str, owner: str, tier: str) -> ModelRecord:
    """The model's record from the verified index, and how this ingestion compares with it."""
    from airlock.registry.index import promotion_claim

    state = registry.model_state(model, verified=True)
    claim = promotion_claim(state, model, repository, owner, tier)
    approved = [v.version for v in state.versions if v.status.value == "approved"] if state else []
    return ModelRecord(model=model, owner=claim.owner, min_tier=claim.min_risk_tier.value if claim.min_risk_tier
                       else None, source=claim.record_source, other_source=claim.needs_owner_approval,
                       refusal=claim.refusal, latest_approved=approved[-1] if approved else None)


def check_model_record(record: ModelRecord) -> None:
    """Refusals no approval can lift: another owner, or a tier below the model's minimum."""
    if record.refusal:
        raise GateRefused(record.refusal)


# --------------------------------------------------------------------------- the facts every gate reads


@dataclass(frozen=True)
class GateFacts:
    """What an ingestion is, from authoritative records only, and what it needs to be signed."""

    run_id: str
    params: RunParams
    source: ResolvedSource
    repository: str
    own_name: str | None
    target: RegistryTarget
    root_digest: str
    files: dict[str, str]  # path -> sha256
    total_bytes: int
    scan: ScanReport
    scan_report_sha256: str
    record: ModelRecord
    need: ApprovalNeed
    parent: ResolvedParent | None = None
    derivation_lines: tuple[str, ...] = ()
    previous: dict[str, str] | None = None  # latest approved version's files, for the form's diff
    binding_facts: dict[str, str] = field(default_factory=dict)
    evaluation_lines: tuple[str, ...] = ()  # metrics against the latest approved version, for the form

    @property
    def policy_label(self) -> str:
        return f"policy:{self.params.tier}:no-approval-required"

    def form(self, triggered_by: str | None) -> FormFacts:
        findings = tuple(
            (finding.action, finding.rule, path + (f"!{finding.member}" if finding.member else ""), finding.detail)
            for path, finding in self.scan.findings("flag", "block")
        )
        record = self.record if self.record.owner is not None else None
        return FormFacts(
            registry_name=self.target.model, version=self.target.version, own_name=self.own_name,
            source=self.repository, revision=self.source.revision, owner=self.params.owner, tier=self.params.tier,
            triggered_by=triggered_by, root_digest=self.root_digest, files=len(self.files),
            total_bytes=self.total_bytes, scan_verdict=self.scan.verdict,
            scan_report_sha256=self.scan_report_sha256, findings=findings, reasons=self.need.reasons,
            binding=self.need.binding,
            model_owner=record.owner if record else None, model_min_tier=record.min_tier if record else None,
            model_source=record.source if record else None, derivation=self.derivation_lines,
            previous_version=record.latest_approved if record and self.previous is not None else None,
            changes=file_changes(self.previous, self.files) if self.previous is not None else (),
            evaluation=self.evaluation_lines,
        )


def gather_facts(settings: Settings, run_id: str, params: RunParams, registry, *, rescan: bool) -> GateFacts:
    """Every fact a gate needs, re-derived from the run's records and the registry; refusals raise.

    ``rescan``: scan the quarantined files again and require the stored report to
    say the same (what ``sign_model`` does before anything is signed).
    """
    from airlock.evaluate.stage import EVAL_REPORT, checked_evaluation
    from airlock.policy import policy_for

    source = run_source(settings.quarantine_root, run_id)
    area = run_area(settings.quarantine_root, run_id)
    manifest = load_manifest(area)
    repository = source_repository(source.uri)
    name = own_name(source)
    target = registry_target(source.kind, source.model_name, source.revision, params.registry_name)
    record = model_record(registry, target.model, repository, params.owner, params.tier)
    check_model_record(record)
    scan, scan_sha256 = checked_scan(area, params.tier, rescan=rescan)
    previous_eval = previous_evaluation(registry, target)
    evaluation = checked_evaluation(area, params.tier, previous_eval)  # from the stored report; a block raises
    files = {f.path: f.sha256 for f in manifest.files}
    parent, derivation_lines = checked_derivation(params.derivation, manifest.root_digest, registry)

    reasons: list[str] = []
    if policy_for(params.tier).requires_approval:
        reasons.append(f"tier {params.tier} requires a human approval")
    if scan.requires_approval:
        reasons.append(f"the scan flagged {len(scan.findings('flag'))} finding(s)")
    if name is not None and target.model != name:
        reasons.append(f"registry name {target.model} differs from the source's own name {name}")
    elif name is None and record.owner is None:
        reasons.append(f"a {source.kind}:// drop has no name of its own: registry name {target.model} is a claim "
                       f"a human binds at the model's first release")
    if parent is not None:
        reasons.append(f"it claims to derive from {parent.model}@{parent.version}")
    if evaluation is not None and evaluation.decision == "requires_approval":
        reasons.append(f"evaluation: {evaluation.reason}")
    owner_review = record.other_source
    if owner_review:
        reasons.append(f"{target.model} comes from {record.source}; a version from {repository} needs the "
                       f"approval of owner {record.owner}'s reviewers")
    reviewers = settings.reviewers_for(record.owner or "") if owner_review else settings.reviewers
    binding_facts = {
        "model": target.model, "version": target.version, "source": repository, "revision": source.revision,
        "root_digest": manifest.root_digest, "scan_report_sha256": scan_sha256, "owner": params.owner,
        "tier": params.tier, "eval_report_sha256": _sha256_or_empty(area.path / EVAL_REPORT),
        "derivation_sha256": hashlib.sha256(json.dumps(params.derivation.to_json_dict(), sort_keys=True).encode())
        .hexdigest() if params.derivation else "",
    }
    need = ApprovalNeed(reasons=tuple(reasons), reviewers=tuple(reviewers), owner_review=owner_review,
                        binding=approval_binding(binding_facts))
    previous = None
    if record.latest_approved is not None:
        plan = registry.released(target.model, record.latest_approved).plan
        previous = {o.key.removeprefix("files/"): o.sha256 for o in plan.by_role("file")}
    return GateFacts(
        run_id=run_id, params=params, source=source, repository=repository, own_name=name, target=target,
        root_digest=manifest.root_digest, files=files, total_bytes=manifest.total_size, scan=scan,
        scan_report_sha256=scan_sha256, record=record, need=need, parent=parent, derivation_lines=derivation_lines,
        previous=previous, binding_facts=binding_facts,
        evaluation_lines=evaluation_lines(area, evaluation, previous_eval),
    )


def checked_scan(area: QuarantineArea, tier: str, *, rescan: bool) -> tuple[ScanReport, str]:
    """The run's stored scan report and its sha256, refused unless it allows (and, with ``rescan``, is reproduced)."""
    from pydantic import ValidationError

    from airlock.scan import scan_model
    from airlock.scan.report import ScanReport

    path = area.path / SCAN_REPORT
    try:
        data = path.read_bytes()
        stored = ScanReport.model_validate_json(data)
    except FileNotFoundError:
        raise ScanBlocked(f"no scan report in quarantine ({path}): scan_model did not complete for this run, and "
                          f"nothing is signed without one") from None
    except (OSError, ValidationError) as exc:
        raise ScanBlocked(f"{path}: unreadable scan report ({type(exc).__name__})") from None
    if stored.tier != tier:
        raise ScanBlocked(f"{path}: the report is for tier {stored.tier}, the run is tier {tier}")
    if rescan:
        fresh = scan_model(area.files_dir, tier)
        if _scan_substance(fresh) != _scan_substance(stored):
            raise ScanBlocked(f"{path} does not match a re-scan of the quarantined files (re-scan verdict "
                              f"{fresh.verdict}); refused")
    if not stored.allowed:
        blocking = [f"{finding.rule} in {p}: {finding.detail}" for p, finding in stored.findings("block")]
        blocking += [f"could not scan {e.path}: {e.detail}" for e in stored.errors]
        raise ScanBlocked(f"scan verdict {stored.verdict} at tier {tier} ({path}): " + "; ".join(blocking)[:2000])
    return stored, hashlib.sha256(data).hexdigest()


def _scan_substance(report: ScanReport) -> dict[str, Any]:
    data = report.to_json_dict()
    data.pop("elapsed_s", None)  # the only field a re-scan of the same bytes may change
    return data


def checked_derivation(
    record: DerivationRecord | None, root_digest: str, registry
) -> tuple[ResolvedParent | None, tuple[str, ...]]:
    """Verify a derivation claim against this model and the registry; the resolved parent and lines for the form."""
    from airlock.aibom import AibomError, FineTuneStep, resolve_parent

    if record is None:
        return None, ()
    final = record.steps[-1].output_root_digest
    if final is None:
        raise AibomError("derivation record: the last step records no output_root_digest, so the claim cannot be "
                         "checked against this model")
    if final != root_digest:
        raise AibomError(f"derivation record: the last step's output_root_digest sha256:{final} is not this model's "
                         f"root digest sha256:{root_digest}; the claim is not about this model")
    parent = resolve_parent(record, registry)  # released, same digest, not revoked
    assert parent.version is not None
    state = registry.released(parent.model, parent.version, verified=True).state
    if state is None or state.status.value == "revoked":
        raise AibomError(f"derivation record parent {parent.model}@{parent.version} is "
                         f"{'not in the index' if state is None else 'revoked'}; a model derived from it is refused")
    lines = [f"parent: {parent.model}@{parent.version} (sha256:{parent.root_digest}, {state.status.value})"]
    for number, step in enumerate(record.steps, start=1):
        what = (f"fine-tune on {step.dataset}" if isinstance(step, FineTuneStep)
                else f"{step.kind} ({step.method})")
        lines.append(f"step {number}: {what} with {step.tool} {step.tool_version}"
                     + (f", run by {step.run_by}" if step.run_by else ""))
    return parent, tuple(lines)


# --------------------------------------------------------------------------- evaluation and fingerprint


def previous_evaluation(registry, target: RegistryTarget):
    """The EvalReport of the model's latest approved version (another version than ``target``), or None."""
    from airlock.evaluate.stage import latest_approved_eval_report
    from airlock.registry.base import ModelName

    return latest_approved_eval_report(registry, str(ModelName.parse(target.model)), exclude_version=target.version)


def evaluation_lines(area: QuarantineArea, verdict, previous) -> tuple[str, ...]:
    """``task/metric: value`` per metric for the form, with the latest approved version's value beside it."""
    from airlock.evaluate.stage import EVAL_REPORT, read_eval_report

    path = area.path / EVAL_REPORT
    if verdict is None or not path.is_file():
        return ()
    metrics = read_eval_report(path.read_bytes(), str(path)).summary()
    before = previous.summary() if previous is not None else {}
    lines = [f"{verdict.decision}: {verdict.reason}"]
    for name, value in sorted(metrics.items()):
        lines.append(f"{name} = {value:.4g}" + (f" (latest approved: {before[name]:.4g})" if name in before else ""))
    return tuple(lines)


def _sha256_or_empty(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        return ""


def evaluate_run(settings: Settings, run_id: str, params: Mapping[str, Any], registry,
                 log: Callable[[str], None]) -> dict[str, Any]:
    """``evaluate``: the tier's lm-eval suite on the quarantined copy (once the scan allowed it), judged against
    the latest approved version's report; writes ``reports/eval.json``. A block raises EvaluationBlocked."""
    from airlock.evaluate.stage import evaluate_quarantine

    run = RunParams.from_params(params)
    source = run_source(settings.quarantine_root, run_id)
    target = registry_target(source.kind, source.model_name, source.revision, run.registry_name)
    return evaluate_quarantine(run_area(settings.quarantine_root, run_id), run.tier,
                               previous_evaluation(registry, target), log=log)


def baseline_run(settings: Settings, run_id: str, params: Mapping[str, Any],
                 log: Callable[[str], None]) -> dict[str, Any]:
    """``fingerprint_baseline``: the behavioural baseline and its calibration in this worker's runtime class."""
    from airlock.fingerprint.stage import baseline_quarantine

    return baseline_quarantine(run_area(settings.quarantine_root, run_id), RunParams.from_params(params).tier,
                               log=log)


# --------------------------------------------------------------------------- approval


def verify_approval(facts: GateFacts, records: RunRecords | None) -> Approval:
    """The approval Airflow's records hold for this ingestion (or the policy that needs none); refusals raise."""
    if records is None:
        if facts.need.required:
            raise ApprovalRefused(f"a human approval is required ({'; '.join(facts.need.reasons)}) and no "
                                  f"airlock_airflow connection is configured to read it from Airflow")
        return Approval(approver=facts.policy_label)
    return check_approval(facts.need, records.approval_records(), triggered_by=records.triggering_user(),
                          policy_label=facts.policy_label)


def review_run(settings: Settings, run_id: str, params: Mapping[str, Any], registry) -> bool:
    """``review_gate``: whether a human must approve (tier, flagged scan, name, derivation, another source)."""
    return gather_facts(settings, run_id, RunParams.from_params(params), registry, rescan=False).need.required


def prepare_approval_form(task, run_id: str, params: Mapping[str, Any], triggered_by: str | None,
                          settings: Settings, registry) -> None:
    """Fill in the ``approve`` task's form from authoritative records, and assign it to the eligible reviewers."""
    facts = gather_facts(settings, run_id, RunParams.from_params(params), registry, rescan=False)
    task.subject, task.body = render_form(facts.form(triggered_by))
    task.assigned_users = assigned_users(facts.need, triggered_by)


# --------------------------------------------------------------------------- scan


def scan_quarantine(area: QuarantineArea, tier: str, log: Callable[[str], None]) -> dict[str, Any]:
    """Scan the quarantined files at ``tier``, write the ScanReport, log every finding; block unless allowed.

    Raises :class:`ScanBlocked` for a block and for "could not scan" alike (fail closed).
    """
    from airlock.scan import scan_model

    started = _now()
    report = scan_model(area.files_dir, tier)
    path = area.path / SCAN_REPORT
    path.parent.mkdir(parents=True, exist_ok=True)
    report_bytes = (json.dumps(report.to_json_dict(), indent=2) + "\n").encode()
    atomic_write(path, report_bytes)
    lines = report.summary_lines()
    for line in lines:
        log(line)
    if not report.allowed:
        blocking = [line.strip() for line in lines[1:] if line.strip().startswith(("[block]", "[error]"))]
        raise ScanBlocked(
            f"scan verdict {report.verdict} (exit {report.exit_code}) at tier {tier}, report {path}: "
            + "; ".join(blocking)[:2000]
        )
    summary = {
        "verdict": report.verdict,
        "tier": tier,
        "requires_approval": report.requires_approval,
        "files": len(report.files),
        "flagged": len(report.findings("flag")),
        "report": str(path),
        "report_sha256": hashlib.sha256(report_bytes).hexdigest(),
        "started_at": started,
        "ended_at": _now(),
    }
    record_stage(area, "scan", summary)
    return summary


def approval_required(tier: str, scan_summary: dict[str, Any]) -> bool:
    """The tier's and the scan's share of the rule (see :func:`gather_facts` for the whole of it)."""
    from airlock.policy import policy_for

    return policy_for(tier).requires_approval or bool(scan_summary.get("requires_approval"))


_DOWNLOAD_TOOLS = {"hf": "huggingface_hub", "s3": "boto3"}


def ingest_stage_records(area: QuarantineArea, source_kind: str, run_id: str) -> list[dict[str, Any]]:
    """Formulation tasks for the stages of this ingestion, from what each stage recorded in quarantine."""
    from importlib.metadata import version

    from airlock import __version__

    download, scanned, signed = _stage(area, "download"), _stage(area, "scan"), _stage(area, "sign")
    approval = load_approval(area)
    scan_sha256 = hashlib.sha256((area.path / SCAN_REPORT).read_bytes()).hexdigest()
    download_tool = _DOWNLOAD_TOOLS.get(source_kind)
    return [
        {"stage": "download", "tool": f"airlock-quarantine ({download_tool or 'local copy'})",
         "tool_version": f"{__version__}" + (f" / {download_tool} {version(download_tool)}" if download_tool else ""),
         "parameters": {"files": download["files"], "bytes": download["bytes"], "revision": download["revision"]},
         "started_at": download["started_at"], "ended_at": download["ended_at"], "run_id": run_id},
        {"stage": "scan", "tool": "airlock-scan", "tool_version": __version__,
         "parameters": {"tier": scanned["tier"], "picklescan": version("picklescan"), "report_sha256": scan_sha256},
         "started_at": scanned["started_at"], "ended_at": scanned["ended_at"], "run_id": run_id},
        {"stage": "review", "tool": "airflow-hitl" if approval.record_id else "airlock-policy",
         "tool_version": __version__, "parameters": approval.stage_parameters(),
         "started_at": approval.responded_at or signed["started_at"],
         "ended_at": approval.responded_at or signed["started_at"], "run_id": run_id},
        {"stage": "sign", "tool": "airlock-sign (Vault Transit)", "tool_version": __version__,
         "parameters": {"key_id": signed["key_id"], "bundle_sha256": signed["bundle_sha256"],
                        "format": "model_signing v1.0 / sigstore bundle v0.3"},
         "started_at": signed["started_at"], "ended_at": signed["ended_at"], "run_id": run_id},
        {"stage": "promote", "tool": "airlock-registry", "tool_version": __version__,
         "parameters": {"source_kind": source_kind}, "started_at": _now(), "ended_at": None, "run_id": run_id},
    ]


def load_approval(area: QuarantineArea) -> Approval:
    path = area.path / APPROVAL_RECORD
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise GateRefused(f"no approval record in quarantine ({path}): sign_model did not sign this run") from None
    return Approval(**{**data, "reasons": tuple(data.get("reasons") or ())})


# --------------------------------------------------------------------------- sign


def sign_run(settings: Settings, run_id: str, params: Mapping[str, Any], registry, records: RunRecords | None,
             signer_factory: Callable[[], Any], log: Callable[[str], None]) -> dict[str, Any]:
    """``sign_model``: every gate re-derived (scan re-run, approval from Airflow, names, derivation), then sign."""
    if records is not None:
        refuse_if_rejected(records.approval_records())  # first: final whatever state the run's records are in
    facts = gather_facts(settings, run_id, RunParams.from_params(params), registry, rescan=True)
    approval = verify_approval(facts, records)
    log(f"gates passed for {facts.target.model}@{facts.target.version}: approver {approval.approver}"
        + (f" ({approval.record_id}, run triggered by {approval.triggered_by})" if approval.record_id else ""))
    existing = already_released(registry, facts.target, facts.root_digest)
    if existing is not None:
        return {**facts.target.to_json_dict(), "already_released": existing}
    area = run_area(settings.quarantine_root, run_id)
    atomic_write(area.path / APPROVAL_RECORD, (json.dumps(approval.to_json_dict(), sort_keys=True) + "\n").encode())
    signed = sign_quarantine(area, facts.target, signer_factory())
    record_stage(area, "sign", signed)
    return {**facts.target.to_json_dict(), **signed, "approver": approval.approver, "approval": approval.record_id}


def sign_quarantine(area: QuarantineArea, target: RegistryTarget, signer) -> dict[str, Any]:
    """Sign the manifest (no re-read of the files) and write ``model.sig`` next to it.

    The subject names ``ORG/NAME@VERSION`` (what ``airlock pull`` expects), so a
    signature cannot be replayed under another version of the same model.
    """
    from airlock.registry import ModelName, signed_subject_name
    from airlock.signing import sign_manifest, write_bundle

    started = _now()
    manifest = load_manifest(area)
    subject = signed_subject_name(ModelName.parse(target.model), target.version)
    signed = sign_manifest(manifest, signer, model_name=subject)
    write_bundle(signed.bundle_bytes, area.path / SIGNATURE)
    return {
        "signature": str(area.path / SIGNATURE),
        "bundle_sha256": signed.bundle_sha256,
        "key_id": signed.key_id,
        "key_fingerprint": signed.key_fingerprint,
        "root_digest": signed.root_digest,
        "model_name": signed.model_name,
        "files": signed.file_count,
        "started_at": started,
        "ended_at": _now(),
    }


# --------------------------------------------------------------------------- AI-BOM


def build_aibom_run(settings: Settings, run_id: str, params: Mapping[str, Any], registry,
                    signer_factory: Callable[[], Any]) -> dict[str, Any]:
    """``build_aibom``: the BOM from the run's records (stages, approval, scan report, verified derivation)."""
    facts = gather_facts(settings, run_id, RunParams.from_params(params), registry, rescan=False)
    existing = already_released(registry, facts.target, facts.root_digest)
    if existing is not None:
        return {"skipped": "already released", **existing}
    area = run_area(settings.quarantine_root, run_id)
    return build_quarantine_aibom(
        area, facts.target, stages=ingest_stage_records(area, facts.source.kind, run_id), run_id=run_id,
        registry_url=registry.version_url(facts.target.model, facts.target.version), signer=signer_factory(),
        derivation=facts.params.derivation, parent=facts.parent,
    )


def build_quarantine_aibom(
    area: QuarantineArea,
    target: RegistryTarget,
    *,
    stages: list[dict[str, Any]],
    run_id: str,
    registry_url: str | None,
    signer,
    derivation: DerivationRecord | None = None,
    parent: ResolvedParent | None = None,
) -> dict[str, Any]:
    """Write and strictly validate ``aibom.cdx.json``, then sign it into ``aibom.sig``; the scan report is required."""
    from airlock.aibom import AibomError, AibomInputs, ArtifactRef, StageRecord, sign_aibom, write_aibom
    from airlock.evaluate import stage as evaluation
    from airlock.fingerprint import stage as fingerprint
    from airlock.signing import write_bundle

    if derivation is not None and parent is None:
        raise AibomError("a derived model's BOM needs its verified parent")
    manifest = load_manifest(area)
    if not (area.path / SCAN_REPORT).is_file():
        raise ScanBlocked(f"no scan report in quarantine ({area.path / SCAN_REPORT}): no BOM without one")
    artifacts = [ArtifactRef.from_file("signature", area.path / SIGNATURE),
                 ArtifactRef.from_file("scan-report", area.path / SCAN_REPORT, key=SCAN_REPORT),
                 *evaluation.artifacts(area), *fingerprint.artifacts(area)]
    evaluated = evaluation.evaluation_stage_record(area, run_id)
    if evaluated is not None:  # in the order the stages ran: right after the scan
        after_scan = next((i + 1 for i, stage in enumerate(stages) if stage.get("stage") == "scan"), len(stages))
        stages = [*stages[:after_scan], evaluated, *stages[after_scan:]]
    inputs = AibomInputs.from_manifest(
        manifest,
        model=target.model,
        version=target.version,
        timestamp=datetime.now(UTC),
        model_dir=area.files_dir,
        version_url=registry_url,
        artifacts=artifacts,
        stages=[StageRecord.model_validate(stage) for stage in stages],
        run_id=run_id,
        derivation=derivation,
        parent=parent,
        eval_results=evaluation.eval_results(area),
    )
    written = write_aibom(inputs, area.path / AIBOM)
    # Sign the bytes as stored, not a re-serialisation of the document.
    aibom_signature = sign_aibom(written.path.read_bytes(), signer)
    write_bundle(aibom_signature, area.path / AIBOM_SIGNATURE)
    return {
        "aibom": str(written.path),
        "aibom_sha256": written.sha256,
        "aibom_signature_sha256": hashlib.sha256(aibom_signature).hexdigest(),
        "parent": asdict(parent) if parent is not None else None,
    }


def check_bom_bindings(area: QuarantineArea, approval: Approval) -> None:
    """The BOM in quarantine must bind this run's scan report (by sha256) and the approval it was signed under."""
    path = area.path / AIBOM
    try:
        bom = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise GateRefused(f"no AI-BOM in quarantine ({path}): build_aibom did not run for this run") from None
    report_sha256 = hashlib.sha256((area.path / SCAN_REPORT).read_bytes()).hexdigest()
    references = bom.get("metadata", {}).get("component", {}).get("externalReferences", [])
    bound = [h.get("content") for r in references if r.get("comment") == "scan-report"
             and str(r.get("url", "")).endswith("/" + SCAN_REPORT) for h in r.get("hashes", [])]
    if report_sha256 not in bound:
        raise ScanBlocked(f"{path} does not bind this run's scan report (sha256:{report_sha256}); refused")
    review = [p.get("value") for w in bom.get("formulation", [{}])[0].get("workflows", [])
              for t in w.get("tasks", []) if t.get("name") == "review"
              for i in t.get("inputs", []) for p in i.get("parameters", []) if p.get("name") == "hitl_record"]
    if review != [approval.record_id or "none"]:
        raise ApprovalRefused(f"{path} records approval {review or 'none'}, Airflow's record is "
                              f"{approval.record_id or 'none'}; refused")


# --------------------------------------------------------------------------- promote


def promote_run(settings: Settings, run_id: str, params: Mapping[str, Any], registry, records: RunRecords | None,
                actor: str) -> dict[str, Any]:
    """``promote``: the gates again (approval from Airflow, names, ownership), the BOM's bindings, then promote."""
    if records is not None:
        refuse_if_rejected(records.approval_records())
    facts = gather_facts(settings, run_id, RunParams.from_params(params), registry, rescan=False)
    approval = verify_approval(facts, records)
    existing = already_released(registry, facts.target, facts.root_digest)
    if existing is not None:
        return existing
    area = run_area(settings.quarantine_root, run_id)
    signed_under = load_approval(area)
    if signed_under.record_id != approval.record_id:
        raise ApprovalRefused(f"signed under approval {signed_under.record_id or 'none'}, Airflow's record is now "
                              f"{approval.record_id or 'none'}; refused")
    check_bom_bindings(area, approval)
    approver = approval.approver + (f" [{approval.record_id}]" if approval.record_id else "")
    return promote_quarantine(area, facts.target, registry, owner=facts.record.owner or facts.params.owner,
                              tier=facts.params.tier, approver=approver, actor=actor, source=facts.source.uri)


def promote_quarantine(
    area: QuarantineArea,
    target: RegistryTarget,
    registry,
    *,
    owner: str,
    tier: str,
    approver: str,
    actor: str,
    source: str | None = None,
) -> dict[str, Any]:
    """Promote files, signature, BOM and reports atomically; RELEASED is written last by the registry."""
    from airlock.evaluate import stage as evaluation
    from airlock.fingerprint import stage as fingerprint
    from airlock.registry.promotion import PromotionRequest

    manifest = load_manifest(area)
    extra = {"source": source} if source else {}  # default: the manifest's source
    # The same reports build_quarantine_aibom binds: pull refuses any report the signed BOM does not pin.
    reports = [area.path / SCAN_REPORT, *evaluation.report_paths(area), *fingerprint.report_paths(area)]
    result = registry.promote(
        PromotionRequest.from_manifest(
            manifest,
            model=target.model,
            version=target.version,
            model_dir=area.files_dir,
            signature=area.path / SIGNATURE,
            aibom=area.path / AIBOM,
            aibom_signature=area.path / AIBOM_SIGNATURE,
            reports=reports,
            owner=owner,
            risk_tier=tier,
            approver=approver,
            actor=actor,
            pinned=recorded_pass(area),
            **extra,
        )
    )
    return {**result.to_json_dict(), **target.to_json_dict()}


def recorded_pass(area: QuarantineArea) -> dict[str, Any]:
    """The quarantine's one hashing pass (path -> digest with stat fingerprint); empty when none was recorded.

    The registry may then publish a file without copying it, after checking its fingerprint again.
    """
    from airlock.manifest import DigestSet

    if not area.digests_file.is_file():
        return {}
    return {digest.path: digest for digest in DigestSet.load(area.digests_file).files}


def open_configured_registry(s3_client_factory: Callable[[], Any], *, signer=None, trust=None):
    """The registry at AIRLOCK_REGISTRY; for ``s3://`` with the client the caller's credentials give.

    ``signer`` signs index checkpoints (promotion), ``trust`` verifies the index chain the gates read
    model records from (see :class:`airlock.registry.Registry`).
    """
    from airlock.config import load_settings
    from airlock.registry import open_registry

    spec = load_settings().registry
    return open_registry(spec, s3_client=s3_client_factory() if spec.startswith("s3://") else None,
                         signer=signer, trust=trust)


def pipeline_registry(s3_client_factory: Callable[[], Any], signer):
    """The registry as the pipeline uses it: index checkpoints signed with the pipeline's Vault key, and the
    index chain verified with the host's trust store (AIRLOCK_TRUST_STORE), never one read from the registry.

    Not Vault's own list of public keys: a key version revoked in the trust store (``airlock keys revoke``) is
    still a valid Transit key version to Vault, and checkpoints it signed must not be believed.
    """
    from airlock.trust import host_trust_store

    return open_configured_registry(s3_client_factory, signer=signer, trust=host_trust_store())


def already_released(registry, target: RegistryTarget, root_digest: str) -> dict[str, Any] | None:
    """The released version's record if ``target`` already holds this exact model; a conflict if it differs.

    Checked before signing so that re-ingesting a revision is a no-op instead of
    a second signature that immutability would then refuse.
    """
    from airlock.registry.base import VersionNotFoundError

    try:
        released = registry.released(target.model, target.version)
    except VersionNotFoundError:
        return None
    if released.root_digest != root_digest:
        raise RegistryConflict(
            f"{target.model}@{target.version} is already released with root digest sha256:{released.root_digest}, "
            f"this ingestion has sha256:{root_digest}; a version is never rewritten"
        )
    return {**released.to_json_dict(), **target.to_json_dict(), "created": False}
