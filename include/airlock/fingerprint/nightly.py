"""The scheduled behavioural check (DAG ``model_fingerprint_nightly``) as plain functions.

**Plan** (:func:`plan_checks`): every released, not revoked version of every model in the registry that
holds a fingerprint baseline (``reports/fingerprint-baseline[.<variant>].json``) becomes one check per
baseline, i.e. per runtime class, routed to the CPU or the GPU queue by the baseline's class; every
configured endpoint becomes one check. Versions without a baseline are listed as not covered.
Runs triggered by a registry-model Asset event plan only what was never checked (scope ``new``).

**Version check** (:func:`check_version`): a verified copy of the version is fetched exactly as
``airlock pull`` verifies one (signed index, plan, every object's sha256, ``model.sig`` with the host's
trust store, the signed AI-BOM binding every report) but *not recorded as a pull*: a nightly scratch
copy is not a deployment, and incident response reads pulls as deployments. The baseline and its
calibration are read from that verified copy. The copy is fingerprinted in the baseline's runtime
class, never in another (this worker's class must equal the baseline's, else the check is an
``error`` and is skipped), compared, validated with great-expectations (offline Data Docs kept), and
the verdict is recorded in the registry's check history (``record_check(check="fingerprint")``).

**Endpoint check** (:func:`check_endpoint`): the endpoint's sampled completions against the baseline
samples stored with the version it claims (``reports/fingerprint-samples.json``); none stored is an
``error``, never a pass.

Check reports live on the registry host, never inside a registry version (versions are immutable)::

    <checks root>/fingerprint/models/<org>/<name>/<version>/<run>/<target>/
        check.json          airlock.fingerprint-check/v1 (the record's report_key points here)
        comparison.json     per-prompt distances (airlock.fingerprint-comparison/v1)
        candidate.json      tonight's fingerprint
        docs/index.html     great-expectations Data Docs, rendering offline
    <checks root>/fingerprint/endpoints/<endpoint>/<run>/...

The checks root is AIRLOCK_CHECKS_DIR (default ``<AIRLOCK_STATE_DIR>/checks``); ``report_key`` in the
registry's check records is relative to it. Passing runs older than the newest AIRLOCK_FINGERPRINT_KEEP_RUNS
(default 14) per version are pruned; deviations and errors are kept.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from airlock import lineage
from airlock.errors import AirlockError, ConfigurationError

if TYPE_CHECKING:
    from airlock.fingerprint.check import CheckResult
    from airlock.fingerprint.endpoint import EndpointComparison
    from airlock.pull import VerifiedCopy
    from airlock.registry import HostState, Registry, ReleasedVersion
    from airlock.registry.base import ModelName
    from airlock.trust import TrustStore

_log = logging.getLogger(__name__)

DAG_ID = "model_fingerprint_nightly"
INCIDENT_DAG_ID = "model_incident"
CHECK = "fingerprint"
CHECK_SCHEMA = "airlock.fingerprint-check/v1"
# Lineage of checks: an event on the registry model's Asset through the checks' own alias, never through the
# release alias this DAG is scheduled on (an event there would schedule the next run of this DAG, and so on).
CHECK_ALIAS = lineage.CHECK_ALIAS
ENDPOINTS_ENV = "AIRLOCK_FINGERPRINT_ENDPOINTS"
ENDPOINTS_VARIABLE = "airlock_fingerprint_endpoints"
CHECKS_DIR_ENV = "AIRLOCK_CHECKS_DIR"
KEEP_RUNS_ENV = "AIRLOCK_FINGERPRINT_KEEP_RUNS"
WORK_DIR_ENV = "AIRLOCK_FINGERPRINT_WORK_DIR"
DEFAULT_KEEP_RUNS = 14
Verdict = Literal["pass", "fail", "error"]
Scope = Literal["all", "new"]
_SLUG_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class CheckRefused(AirlockError):
    """The check could not produce a verdict about the version (it is recorded as an ``error``)."""


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class NightlySettings:
    checks_root: Path
    keep_runs: int = DEFAULT_KEEP_RUNS
    work_dir: Path | None = None  # where verified scratch copies go (default: the system's temp directory)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> NightlySettings:
        from airlock.config import load_settings

        env = dict(os.environ if env is None else env)
        settings = load_settings(env)
        root = Path(env.get(CHECKS_DIR_ENV) or settings.state_dir / "checks").expanduser().resolve()
        raw_keep = env.get(KEEP_RUNS_ENV, str(DEFAULT_KEEP_RUNS))
        try:
            keep = int(raw_keep)
        except ValueError:
            keep = -1
        if keep < 1:
            raise ConfigurationError(f"{KEEP_RUNS_ENV}={raw_keep!r}: a whole number >= 1")
        registry = settings.registry
        if "://" not in registry or registry.startswith("file://"):
            registry_root = Path(registry.removeprefix("file://")).expanduser().resolve()
            if root == registry_root or root.is_relative_to(registry_root):
                raise ConfigurationError(f"{CHECKS_DIR_ENV}={root}: inside the registry {registry_root}; check reports "
                                         f"are host data, a registry holds only what promotion and its index write")
        work = env.get(WORK_DIR_ENV)
        return cls(checks_root=root, keep_runs=keep, work_dir=Path(work).expanduser().resolve() if work else None)

    def version_dir(self, model: str, version: str) -> Path:
        from airlock.registry.base import ModelName, check_version

        name = ModelName.parse(model)
        return self.checks_root / CHECK / "models" / name.org / name.name / check_version(version)

    def endpoint_dir(self, endpoint: str) -> Path:
        return self.checks_root / CHECK / "endpoints" / slug(endpoint)

    def key_of(self, path: Path) -> str:
        return path.relative_to(self.checks_root).as_posix()


def slug(text: str, limit: int = 64) -> str:
    """A readable, filesystem-safe and collision-free directory name for ``text``."""
    readable = _SLUG_UNSAFE.sub("_", text).strip("._-")[:limit] or "x"
    return f"{readable}-{hashlib.sha256(text.encode()).hexdigest()[:10]}"


# --------------------------------------------------------------------------- endpoint configuration


class EndpointConfig(BaseModel):
    """One deployed endpoint to check: where it is and which registry version it claims to serve."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    url: str = Field(min_length=1, max_length=2048, description="base URL; /v1/completions is appended")
    model: str = Field(description="ORG/NAME in the registry")
    version: str
    served_model: str | None = Field(default=None, description="the server's 'model' field (default: model); "
                                     "`transformers serve DIR` answers only to the DIR it was started with")
    token_env: str | None = Field(default=None, pattern=r"^[A-Z_][A-Z0-9_]{0,127}$")
    # A deviation raises an incident, and an exact test of an unmodified endpoint rejects at rate alpha: at 0.05
    # one false incident per endpoint every 20 nights. Measured (bench/detect_bench.py, 48 prompts x 30 samples):
    # a model swapped behind the endpoint (one AdamW step, a different init) gives the smallest p the
    # permutations allow, so 0.01 keeps full power there.
    alpha: float = Field(default=0.01, gt=0, le=0.1, description="the MMD test's significance level")

    @property
    def claims(self) -> str:
        return f"{self.model}@{self.version}"

    def redacted_url(self) -> str:
        from airlock.fingerprint.endpoint import redact

        return redact(self.url)


def parse_endpoints(text: str | None, source: str) -> list[EndpointConfig]:
    """``{"endpoints": [...]}`` or a bare list; names unique, model and version valid registry names."""
    from airlock.registry.base import ModelName, RegistryError, check_version

    if text is None or not text.strip():
        return []
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ConfigurationError(f"{source}: not JSON ({exc})") from None
    items = data.get("endpoints") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise ConfigurationError(f"{source}: expected a list of endpoints or {{\"endpoints\": [...]}}")
    endpoints = []
    for index, item in enumerate(items):
        try:
            endpoint = EndpointConfig.model_validate(item)
            ModelName.parse(endpoint.model)
            check_version(endpoint.version)
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(p) for p in error["loc"]) or "entry"
            raise ConfigurationError(f"{source}: endpoint {index}: {where}: {error['msg']}") from None
        except RegistryError as exc:
            raise ConfigurationError(f"{source}: endpoint {index}: {exc}") from None
        endpoints.append(endpoint)
    names = [e.name for e in endpoints]
    if len(set(names)) != len(names):
        raise ConfigurationError(f"{source}: endpoint names are not unique")
    return endpoints


def load_endpoints(variable_text: str | None = None, env: Mapping[str, str] | None = None) -> list[EndpointConfig]:
    """The configured endpoints: the JSON file AIRLOCK_FINGERPRINT_ENDPOINTS names, else the Airflow Variable's
    text (``variable_text``, read by the DAG), else none."""
    env = os.environ if env is None else env
    path = env.get(ENDPOINTS_ENV, "").strip()
    if path:
        try:
            return parse_endpoints(Path(path).read_text(encoding="utf-8"), f"{ENDPOINTS_ENV}={path}")
        except OSError as exc:
            raise ConfigurationError(f"{ENDPOINTS_ENV}={path}: cannot read ({exc.strerror or exc})") from None
    return parse_endpoints(variable_text, f"Airflow Variable {ENDPOINTS_VARIABLE}")


# --------------------------------------------------------------------------- planning


class PlannedCheck(BaseModel):
    """One mapped check of a version (what travels in XCom; the check re-derives everything else)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str
    version: str
    baseline: str  # the baseline's key inside the version
    runtime_class: str  # for routing and the task label only
    device_type: str

    @property
    def label(self) -> str:
        return f"{self.model}@{self.version} {self.runtime_class}"


@dataclass
class Plan:
    cpu: list[PlannedCheck] = field(default_factory=list)
    gpu: list[PlannedCheck] = field(default_factory=list)
    endpoints: list[str] = field(default_factory=list)
    uncovered: list[str] = field(default_factory=list)  # "model@version: why" (no baseline, not released)
    revoked: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # models whose index or versions could not be read

    def to_json_dict(self) -> dict[str, Any]:
        return {"cpu": [c.model_dump() for c in self.cpu], "gpu": [c.model_dump() for c in self.gpu],
                "endpoints": self.endpoints, "uncovered": self.uncovered, "revoked": self.revoked,
                "problems": self.problems}


def target_of(runtime_class_id: str) -> str:
    return f"runtime:{runtime_class_id}"


def _baselines(registry: Registry, released: ReleasedVersion) -> list[tuple[str, str, str]]:
    """(key, runtime class id, device type) of each baseline of a version. Read unverified: only for routing
    (the check reads the baseline again from the verified copy)."""
    from airlock.fingerprint.schema import Fingerprint
    from airlock.fingerprint.stage import BASELINE_KEY
    from airlock.registry.base import Layout, ModelName

    found = []
    for obj in released.plan.objects:
        if obj.role != "report" or not BASELINE_KEY.fullmatch(obj.key):
            continue
        data = registry.store.read(Layout.key(ModelName.parse(released.model), released.version, obj.key))
        try:
            runtime = Fingerprint.model_validate_json(data or b"").runtime.runtime_class
            found.append((obj.key, runtime.id, runtime.device_type))
        except ValidationError:
            found.append((obj.key, "unknown", "cpu"))  # the check will fail closed on it
    return found


def plan_checks(registry: Registry, *, scope: Scope = "all", endpoints: Sequence[EndpointConfig] = ()) -> Plan:
    """What tonight's run checks (see the module docstring). Never raises for one model: a model whose index
    cannot be read is listed in ``problems``."""
    from airlock.registry.base import RegistryError, VersionNotFoundError
    from airlock.registry.index import Status

    plan = Plan()
    for name in registry.models():
        try:
            state = registry.index.state(name)
        except RegistryError as exc:
            plan.problems.append(f"{name}: index unreadable: {exc}")
            continue
        if state is None:
            continue
        for version in state.versions:
            ref = f"{name}@{version.version}"
            if version.status is Status.REVOKED:
                plan.revoked.append(ref)
                continue
            try:
                released = registry.released(name, version.version)
            except VersionNotFoundError:
                plan.uncovered.append(f"{ref}: not released")
                continue
            except RegistryError as exc:
                plan.problems.append(f"{ref}: {exc}")
                continue
            baselines = _baselines(registry, released)
            if not baselines:
                plan.uncovered.append(f"{ref}: no fingerprint baseline")
                continue
            checked = {c.target for c in state.checks(version.version, CHECK)}
            for key, class_id, device_type in baselines:
                if scope == "new" and target_of(class_id) in checked:
                    continue
                item = PlannedCheck(model=str(name), version=version.version, baseline=key, runtime_class=class_id,
                                    device_type=device_type)
                (plan.cpu if device_type == "cpu" else plan.gpu).append(item)
    if scope == "all":
        plan.endpoints = [e.name for e in endpoints]
    return plan


# --------------------------------------------------------------------------- verified copy


def fetch_verified_copy(registry: Registry, model: ModelName, version: str, dest: Path, trust: TrustStore,
                        host_state: HostState | None) -> VerifiedCopy:
    """A verified, read-only copy (see :func:`airlock.pull.verified_copy`); not recorded as a pull."""
    from airlock.pull import verified_copy

    return verified_copy(registry, model, version, dest, trust=trust, host_state=host_state)


def _remove(path: Path) -> None:
    from airlock.pull import remove_tree

    remove_tree(path)


# --------------------------------------------------------------------------- runtime class


def worker_runtime_mismatch(baseline_class) -> tuple[str | None, str]:
    """(why this worker cannot fingerprint in ``baseline_class``, or None; the device to use)."""
    import torch
    import transformers

    from airlock.fingerprint.schema import RuntimeClass

    device_type = baseline_class.device_type
    if device_type == "cpu":
        device, name = "cpu", "cpu"
    elif device_type == "cuda":
        if not torch.cuda.is_available():
            return (f"the baseline's runtime class is {baseline_class.id}; this worker has no CUDA device "
                    f"(route the check to the gpu queue)"), "cpu"
        device, name = "cuda:0", torch.cuda.get_device_name(0)
    else:
        return f"the baseline's device type {device_type!r} is not one this check can run on", "cpu"
    here = RuntimeClass(device_type=device_type, device_name=name, dtype=baseline_class.dtype,
                        torch=torch.__version__, transformers=transformers.__version__)
    if here != baseline_class:
        return (f"this worker's runtime class is {here.id}, the baseline's is {baseline_class.id}: behaviour is "
                f"compared only within a runtime class (calibrate a baseline for this class)"), device
    return None, device


# --------------------------------------------------------------------------- outcomes and reports


def _finite(value: float | None) -> float | str | None:
    if value is None:
        return None
    return value if math.isfinite(value) else ("Infinity" if value > 0 else "NaN" if math.isnan(value) else "-Infinity")


@dataclass
class CheckOutcome:
    """What one check concluded; ``skipped``: nothing was compared (another runtime class, revoked meanwhile)."""

    model: str
    version: str
    target: str
    verdict: Verdict
    reason: str
    skipped: bool = False
    report: Path | None = None
    report_key: str | None = None
    report_sha256: str | None = None
    docs: Path | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_json_dict(self) -> dict[str, Any]:
        """The XCom summary (small: no per-prompt table)."""
        return {"model": self.model, "version": self.version, "target": self.target, "verdict": self.verdict,
                "reason": self.reason[:1000], "skipped": self.skipped,
                "report": str(self.report) if self.report else None, "report_key": self.report_key,
                "report_sha256": self.report_sha256, "docs": str(self.docs) if self.docs else None,
                **{k: v for k, v in self.details.items() if k in _SUMMARY_DETAILS}}

    def lineage_extra(self, run_id: str) -> dict[str, Any]:
        return {"check": CHECK, "model": self.model, "version": self.version, "target": self.target,
                "verdict": self.verdict, "run_id": run_id, "report_key": self.report_key,
                "report_sha256": self.report_sha256,
                **{k: v for k, v in self.details.items() if k in _LINEAGE_DETAILS}}


_SUMMARY_DETAILS = ("max_distance", "threshold", "floor", "over_threshold", "token_mismatch", "gx_success",
                    "p_value", "root_digest", "seconds")
_LINEAGE_DETAILS = ("root_digest", "key_id", "baseline_sha256", "calibration_sha256", "candidate_digest",
                    "max_distance", "threshold", "p_value", "gx_success")


class CheckReport(BaseModel):
    """``airlock.fingerprint-check/v1``: one nightly check, kept on the registry host."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, ser_json_inf_nan="strings")

    schema_: Literal["airlock.fingerprint-check/v1"] = Field(CHECK_SCHEMA, alias="schema")
    check: Literal["fingerprint"] = CHECK
    model: str
    version: str
    target: str
    run_id: str
    verdict: Verdict
    reason: str
    checked_at: str
    seconds: float
    host: str
    details: dict[str, Any]
    files: dict[str, str]  # role -> file name beside this report (comparison, candidate, docs)


def _write_json(path: Path, text: str) -> str:
    from airlock.fsutil import atomic_write

    data = text.encode("utf-8")
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    atomic_write(path, data)
    return hashlib.sha256(data).hexdigest()


def _finish(outcome: CheckOutcome, run_dir: Path, *, run_id: str, started: float, settings: NightlySettings,
            files: dict[str, str]) -> CheckOutcome:
    outcome.details["seconds"] = round(datetime.now(UTC).timestamp() - started, 3)
    report = CheckReport(model=outcome.model, version=outcome.version, target=outcome.target, run_id=run_id,
                         verdict=outcome.verdict, reason=outcome.reason,
                         checked_at=datetime.now(UTC).isoformat(timespec="seconds"),
                         seconds=outcome.details["seconds"], host=socket.gethostname() or "unknown-host",
                         details=outcome.details, files=files)
    path = run_dir / "check.json"
    outcome.report_sha256 = _write_json(path, report.model_dump_json(by_alias=True, indent=2))
    outcome.report = path
    outcome.report_key = settings.key_of(path)
    return outcome


def _record(registry: Registry, outcome: CheckOutcome, *, actor: str, run_id: str) -> None:
    registry.record_check(outcome.model, outcome.version, check=CHECK, verdict=outcome.verdict, target=outcome.target,
                          summary=outcome.reason, actor=actor, report_key=outcome.report_key,
                          report_sha256=outcome.report_sha256, run_id=run_id)


def prune(version_dir: Path, keep: int) -> list[Path]:
    """Remove run directories of ``version_dir`` beyond the newest ``keep`` whose every check passed."""
    if not version_dir.is_dir():
        return []
    runs = sorted((p for p in version_dir.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime, reverse=True)
    removed = []
    for run in runs[keep:]:
        verdicts = []
        for report in run.rglob("check.json"):
            try:
                verdicts.append(json.loads(report.read_text()).get("verdict"))
            except (OSError, ValueError):
                verdicts.append(None)
        if verdicts and all(v == "pass" for v in verdicts):
            shutil.rmtree(run, ignore_errors=True)
            removed.append(run)
    return removed


# --------------------------------------------------------------------------- the version check


def _comparison_details(result: CheckResult) -> dict[str, Any]:
    comparison = result.comparison
    over = [r.id for r in comparison.prompts if r.token_ids_equal and r.max_abs_dlogprob > comparison.threshold]
    mismatch = [r.id for r in comparison.prompts if not r.token_ids_equal]
    return {"max_distance": _finite(comparison.max_distance), "threshold": comparison.threshold,
            "floor": comparison.floor, "calibrated": comparison.calibrated, "over_threshold": over[:10],
            "token_mismatch": mismatch[:10], "greedy_agreement": comparison.greedy_agreement,
            "gx_success": result.gx_success, "candidate_digest": comparison.candidate_digest}


def check_version(
    registry: Registry,
    item: PlannedCheck | Mapping[str, Any],
    *,
    run_id: str,
    settings: NightlySettings,
    host_state: HostState | None = None,
    actor: str | None = None,
    run_gx: bool = True,
    log: Callable[[str], None] = _log.info,
) -> CheckOutcome:
    """Check one version against one of its baselines; the verdict is recorded in the registry unless skipped
    because the version was revoked since planning. See the module docstring for the steps."""
    from airlock.fingerprint.check import DocumentError, check, read_document
    from airlock.fingerprint.compare import ComparisonRefused
    from airlock.fingerprint.gx import ValidationFailed
    from airlock.fingerprint.model import FingerprintError, fingerprint_model
    from airlock.fingerprint.schema import Calibration, Fingerprint
    from airlock.fingerprint.stage import BASELINE_KEY, offline_env
    from airlock.pull import PullRefused
    from airlock.registry.base import ModelName
    from airlock.registry.index import Status

    item = item if isinstance(item, PlannedCheck) else PlannedCheck.model_validate(item)
    if not BASELINE_KEY.fullmatch(item.baseline):
        raise ConfigurationError(f"{item.baseline!r} is not a fingerprint baseline key")
    actor = actor or f"airflow:{DAG_ID}/{run_id}"
    name = ModelName.parse(item.model)
    started = datetime.now(UTC).timestamp()
    target = target_of(item.runtime_class)
    state = registry.index.state(name)
    current = state.version(item.version) if state else None
    if current is None or current.status is Status.REVOKED:
        return CheckOutcome(item.model, item.version, target, "error", f"{item.model}@{item.version} is "
                            f"{'revoked' if current else 'not in the index'} since planning; not checked",
                            skipped=True)
    run_dir = settings.version_dir(item.model, item.version) / slug(run_id) / slug(item.baseline.removeprefix(
        "reports/"))
    run_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    files: dict[str, str] = {}
    outcome = CheckOutcome(item.model, item.version, target, "error", "")
    scratch = Path(tempfile.mkdtemp(prefix="airlock-fingerprint-", dir=settings.work_dir))
    try:
        try:
            copy = fetch_verified_copy(registry, name, item.version, scratch / "copy", registry.trust(), host_state)
        except PullRefused as exc:
            raise CheckRefused(f"no verified copy: {exc.reason}") from None
        outcome.details.update(root_digest=copy.released.root_digest, key_id=copy.key_id)
        baseline_path = copy.path / item.baseline
        calibration_path = copy.path / item.baseline.replace("fingerprint-baseline", "fingerprint-calibration")
        baseline = read_document(baseline_path, Fingerprint)
        outcome.target = target_of(baseline.runtime.runtime_class.id)
        outcome.details.update(baseline_key=item.baseline,
                               baseline_sha256=hashlib.sha256(baseline_path.read_bytes()).hexdigest(),
                               baseline_digest=baseline.digest())
        calibration = None
        if calibration_path.is_file():
            calibration = read_document(calibration_path, Calibration)
            outcome.details["calibration_sha256"] = hashlib.sha256(calibration_path.read_bytes()).hexdigest()
        mismatch, device = worker_runtime_mismatch(baseline.runtime.runtime_class)
        if mismatch is not None:
            outcome.reason, outcome.skipped = f"not compared: {mismatch}", True
        else:
            log(f"{item.model}@{item.version}: verified copy root sha256:{copy.released.root_digest[:16]} "
                f"(key {copy.key_id}); fingerprinting in {baseline.runtime.runtime_class.id}")
            with offline_env():
                candidate = fingerprint_model(
                    copy.files, prompt_set=baseline.prompt_set.id, device=device,
                    dtype=baseline.runtime.runtime_class.dtype, top_k=baseline.settings.top_k,
                    positions=baseline.settings.positions, greedy_tokens=baseline.settings.greedy_tokens,
                    batch_size=baseline.runtime.batch_size, threads=baseline.runtime.threads,
                    model_ref={"name": item.model, "version": item.version, "root_digest": copy.released.root_digest},
                )
            files["candidate"] = "candidate.json"
            _write_json(run_dir / "candidate.json", candidate.to_json())
            docs = run_dir / "docs" if run_gx else None
            result = check(baseline, candidate, calibration, docs_dir=docs, run_gx=run_gx)
            files["comparison"] = "comparison.json"
            _write_json(run_dir / "comparison.json", result.comparison.to_json())
            if result.docs_index is not None:
                files["docs"] = result.docs_index.relative_to(run_dir).as_posix()
                outcome.docs = result.docs_index
            outcome.details.update(_comparison_details(result))
            outcome.verdict = "pass" if result.verdict == "match" else "fail"
            outcome.reason = result.reason
            recorded_root = baseline.model.get("root_digest")
            if recorded_root and recorded_root != copy.released.root_digest:
                # Compared all the same (behaviour is the question), but forensics needs to know.
                outcome.details["baseline_root_digest"] = recorded_root
                outcome.reason += (f"; the baseline was recorded for files sha256:{recorded_root[:16]}…, the "
                                   f"version's are sha256:{copy.released.root_digest[:16]}…")
    except (CheckRefused, DocumentError, ComparisonRefused, FingerprintError, ValidationFailed) as exc:
        outcome.verdict, outcome.reason = "error", str(exc)
    except AirlockError as exc:
        # Any other refusal on the way (a damaged index, an unreadable object) is no verdict either.
        outcome.verdict, outcome.reason = "error", f"{type(exc).__name__}: {exc}"
    finally:
        _remove(scratch)
    _finish(outcome, run_dir, run_id=run_id, started=started, settings=settings, files=files)
    _record(registry, outcome, actor=actor, run_id=run_id)
    for removed in prune(settings.version_dir(item.model, item.version), settings.keep_runs):
        log(f"pruned passing check run {removed}")
    return outcome


# --------------------------------------------------------------------------- the endpoint check


def _verified_report(registry: Registry, model: ModelName, version: str, key: str, trust: TrustStore,
                     host_state: HostState | None) -> bytes | None:
    """One report of a released, not revoked version, checked against the plan the signed index pins; None when
    the version has no such report."""
    from airlock.pull import PullRefused, released_for_use
    from airlock.registry import HostState
    from airlock.registry.base import Layout

    host_state = host_state or registry.host_state or HostState.from_settings()
    try:
        released = released_for_use(registry, model, version, trust, host_state)
    except PullRefused as exc:
        raise CheckRefused(exc.reason) from None
    expected = released.object_sha256(key)
    if expected is None:
        return None
    data = registry.store.read(Layout.key(model, version, key))
    if data is None or hashlib.sha256(data).hexdigest() != expected:
        raise CheckRefused(f"{model}@{version}: {key} does not match the released plan (sha256:{expected})")
    return data


def check_endpoint(
    registry: Registry,
    name: str,
    endpoints: Sequence[EndpointConfig],
    *,
    run_id: str,
    settings: NightlySettings,
    host_state: HostState | None = None,
    actor: str | None = None,
    permutations: int = 1000,
    alpha: float | None = None,
    log: Callable[[str], None] = _log.info,
) -> CheckOutcome:
    """Sample the endpoint ``name`` (from ``endpoints``, the configuration) and test it against the baseline
    samples of the version it claims at ``alpha`` (default: the endpoint's configured level); recorded on that
    version with target ``endpoint:<name>``."""
    from airlock.fingerprint.endpoint import (
        Endpoint,
        EndpointError,
        SampleSet,
        compare_samples,
        sample_endpoint,
    )
    from airlock.fingerprint.prompts import load_prompt_set
    from airlock.fingerprint.stage import SAMPLES_REPORT
    from airlock.registry.base import ModelName

    config = next((e for e in endpoints if e.name == name), None)
    if config is None:
        raise ConfigurationError(f"endpoint {name!r} is not configured (any more)")
    actor = actor or f"airflow:{DAG_ID}/{run_id}"
    model = ModelName.parse(config.model)
    started = datetime.now(UTC).timestamp()
    target = f"endpoint:{config.name} {config.redacted_url()}"[:512]
    run_dir = settings.endpoint_dir(config.name) / slug(run_id)
    run_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    outcome = CheckOutcome(config.model, config.version, target, "error", "")
    files: dict[str, str] = {}
    try:
        data = _verified_report(registry, model, config.version, SAMPLES_REPORT, registry.trust(), host_state)
        if data is None:
            raise CheckRefused(f"endpoint {config.name} claims {config.claims}, which has no baseline samples "
                               f"({SAMPLES_REPORT}): the sampled-text backend has nothing to compare with")
        try:
            baseline = SampleSet.model_validate_json(data)
        except ValidationError as exc:
            raise CheckRefused(f"{config.claims}: {SAMPLES_REPORT} is not a sample set ({exc.errors()[0]['msg']})"
                               ) from None
        prompt_set = load_prompt_set()
        if baseline.prompt_set_sha256 != prompt_set.sha256:
            raise CheckRefused(f"{config.claims}: baseline samples were drawn on another prompt set")
        prompts = [p for p in prompt_set.prompts if p.id in baseline.samples]
        if len(prompts) != len(baseline.samples):
            raise CheckRefused(f"{config.claims}: baseline samples name prompts the prompt set does not have")
        per_prompt = {len(v) for v in baseline.samples.values()}
        if len(per_prompt) != 1 or min(per_prompt) < 2:
            raise CheckRefused(f"{config.claims}: baseline samples need the same number (>= 2) per prompt")
        # Seeds of tonight's requests differ from the baseline's and from other nights'.
        seed_base = int(hashlib.sha256(run_id.encode()).hexdigest()[:8], 16)
        endpoint = Endpoint(name=config.name, base_url=config.url, model=config.served_model or config.model,
                            claims=config.claims, token_env=config.token_env)
        log(f"sampling endpoint {config.name} ({config.redacted_url()}): {len(prompts)} prompts x "
            f"{min(per_prompt)} samples")
        try:
            candidate = sample_endpoint(endpoint, prompts, prompt_set_sha256=prompt_set.sha256,
                                        samples_per_prompt=min(per_prompt), max_tokens=baseline.max_tokens,
                                        seed_base=seed_base)
        except EndpointError as exc:
            raise CheckRefused(str(exc)) from None
        files["samples"] = "samples.json"
        _write_json(run_dir / "samples.json", candidate.model_dump_json(by_alias=True))
        comparison: EndpointComparison = compare_samples(
            baseline, candidate, alpha=config.alpha if alpha is None else alpha, permutations=permutations)
        files["comparison"] = "comparison.json"
        _write_json(run_dir / "comparison.json", comparison.model_dump_json(by_alias=True))
        outcome.details.update(p_value=comparison.test.p_value, statistic=comparison.test.statistic,
                               samples_sha256=hashlib.sha256(data).hexdigest(), kernel=comparison.test.kernel)
        outcome.verdict = "pass" if comparison.verdict == "match" else "fail"
        outcome.reason = f"endpoint {config.name} serving {config.claims}: {comparison.reason}"
    except (CheckRefused, ValueError) as exc:
        outcome.verdict, outcome.reason = "error", str(exc)
    except AirlockError as exc:
        outcome.verdict, outcome.reason = "error", f"{type(exc).__name__}: {exc}"
    _finish(outcome, run_dir, run_id=run_id, started=started, settings=settings, files=files)
    _record(registry, outcome, actor=actor, run_id=run_id)
    return outcome


# --------------------------------------------------------------------------- incidents and lineage


INCIDENT_SOURCE = "fingerprint_nightly"  # model_incident's ``source`` (lower-case letters, digits, '_')
MAX_INCIDENT_REASON = 1000


def incident_confs(registry: Registry, settings: NightlySettings, run_id: str) -> list[dict[str, Any]]:
    """``model_incident`` confs for this run's deviations, read back from the registry's check history
    (never from XCom): one per version with a ``fail`` fingerprint record of ``run_id``.

    The evidence names the check report; its details (distances) are added when the report on this host
    has the sha256 the record names.
    """
    from airlock.registry.base import RegistryError

    confs = []
    for name in registry.models():
        try:
            state = registry.index.state(name)
        except RegistryError as exc:
            _log.error("cannot read the check history of %s: %s", name, exc)
            continue
        if state is None:
            continue
        failed: dict[str, list] = {}
        for event in state.checks(check=CHECK):
            if event.run_id == run_id and event.verdict == "fail":
                failed.setdefault(event.version, []).append(event)
        for version, events in failed.items():
            evidence = [_evidence(settings, event) for event in events]
            reason = "fingerprint deviation: " + " | ".join(f"{e.target}: {e.summary}" for e in events)
            confs.append({"model": str(name), "version": version, "source": INCIDENT_SOURCE,
                          "reason": reason[:MAX_INCIDENT_REASON],
                          "evidence": {"dag_id": DAG_ID, "run_id": run_id, "checks": evidence}})
    return confs


def _evidence(settings: NightlySettings, event) -> dict[str, Any]:
    found: dict[str, Any] = {"target": event.target, "report_key": event.report_key,
                             "report_sha256": event.report_sha256, "host": socket.gethostname() or "unknown-host"}
    if not event.report_key:
        return found
    path = (settings.checks_root / event.report_key).resolve()
    try:
        data = path.read_bytes() if path.is_relative_to(settings.checks_root) else b""
    except OSError:
        data = b""
    if data and hashlib.sha256(data).hexdigest() == event.report_sha256:
        details = json.loads(data).get("details", {})
        found.update({k: details[k] for k in ("max_distance", "threshold", "floor", "over_threshold",
                                               "token_mismatch", "p_value", "root_digest") if k in details})
    else:
        found["report_confirmed"] = False
    return found


def incident_run_id(conf: Mapping[str, Any], run_id: str) -> str:
    """A deterministic run id of the triggered incident (a retried trigger finds it instead of a second one)."""
    text = f"{conf['model']}@{conf['version']}/{run_id}"
    return "fingerprint__" + _SLUG_UNSAFE.sub("_", f"{conf['model']}@{conf['version']}")[:80] + "__" + \
        hashlib.sha256(text.encode()).hexdigest()[:16]


def check_asset(model: str):
    """The registry model's Asset: a check is an event of the model it checked (see airlock.lineage)."""
    return lineage.registry_model_asset(model)


def record_check_event(outlet_events, outcome: CheckOutcome, run_id: str,
                       digests: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """An event on the registry model's Asset through :data:`CHECK_ALIAS`: verdict, the version's digests
    (``digests``: :func:`airlock.lineage.version_digests`) and the check's own in ``extra``."""
    extra = {**lineage.registry_event_extra("checked", outcome.model, outcome.version, run_id, digests),
             **outcome.lineage_extra(run_id)}
    return lineage.record_registry_event(outlet_events, CHECK_ALIAS, extra)
