"""The AI-BOM: a CycloneDX 1.6 ML-BOM (``aibom.cdx.json``) with the model's whole provenance.

cyclonedx-python-lib builds everything it models: the ``machine-learning-model``
component (purl, root digest, supplier, licenses, one nested ``file`` component
per manifest file with its sha256), dataset components, external references,
``pedigree.ancestors``, tools. Two things it does not model, the component's
``modelCard`` and the BOM's ``formulation``, are added here as a thin typed
layer (pydantic models mirroring the 1.6 schema) on the serialized JSON. The
result is validated with ``JsonStrictValidator(SchemaVersion.V1_6)``; a BOM
that fails is never returned, let alone written (:class:`AibomError`).

Provenance:

* ``pedigree.ancestors``: the parent model (purl, root digest, registry version,
  a hash-pinned link to the parent's own AI-BOM in the registry), then one
  component per intermediate derivation step.
* ``formulation``: a workflow with one task per pipeline stage of this ingestion
  (download, scan, evaluate, sign, promote: tool and version, parameters,
  start/end, Airflow run id) and, for a derived model, a workflow with one task
  per derivation step (fine-tuning: dataset, hyperparameters, duration, who ran
  it; quantization/conversion: tool, exact version, parameters).

The BOM is deterministic for given inputs (bom-refs and the serial number are
derived, not random), so a retried task produces the same bytes and re-promotes
as "identical content". It is signed as a DSSE in-toto statement whose subject
is the BOM's sha256 (:func:`sign_aibom`), stored beside ``model.sig`` as ``aibom.sig``.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, model_validator

from airlock import __version__, strictjson
from airlock.errors import AirlockError, first_validation_problem
from airlock.fsutil import FileEntry, atomic_write

if TYPE_CHECKING:
    from cyclonedx.model.component import Component

    from airlock.registry import Registry
    from airlock.signing import Signer
    from airlock.trust import TrustStore

AIBOM_FILE = "aibom.cdx.json"
AIBOM_SIGNATURE_FILE = "aibom.sig"
DERIVATION_SCHEMA = "airlock.derivation/v1"
# in-toto's predicate type for a CycloneDX document (the predicate is the BOM itself).
BOM_PREDICATE_TYPE = "https://cyclonedx.org/bom"
_SERIAL_NAMESPACE = uuid.UUID("5b0f3c3e-8f0c-4b8e-9a51-6a6f2f1d7c11")  # fixed: serial numbers derive from inputs
_MAX_CARD_BYTES = 1024 * 1024
_SHA256 = r"^[0-9a-f]{64}$"
# 95% normal-approximation interval from lm-eval's standard error.
_Z95 = 1.959963984540054

Scalar = str | int | float | bool


class AibomError(AirlockError):
    """The AI-BOM cannot be built or is invalid; the message names the file, field or schema path."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


# --------------------------------------------------------------------------- derivation record (input contract)


# A derivation record is a claim made by whoever triggers the ingestion: bounded in size (steps, parameters, string
# lengths) so it cannot bloat the BOM or the approval form, and always rendered escaped.
MAX_DERIVATION_STEPS = 16
MAX_DERIVATION_PARAMETERS = 64
MAX_DERIVATION_BYTES = 64 * 1024
_Text = Annotated[str, Field(min_length=1, max_length=256)]
_LongText = Annotated[str, Field(max_length=2000)]
_ParamKey = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
BoundedScalar = Annotated[str, Field(max_length=256)] | int | float | bool


class ParentRef(_Frozen):
    """The model this one was derived from, as it is (or should be) in our registry."""

    model: str = Field(description="ORG/NAME in the registry", max_length=193,
                       pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
    version: str | None = Field(default=None, description="registry version; found by root_digest when omitted",
                                max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
    root_digest: str | None = Field(default=None, pattern=_SHA256, description="the parent's model_signing root digest")

    @model_validator(mode="after")
    def _identified(self) -> ParentRef:
        if self.version is None and self.root_digest is None:
            raise ValueError("parent needs a registry version, a root_digest, or both")
        return self


class _Step(_Frozen):
    tool: _Text
    tool_version: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9.+_-]*$", max_length=64,
                              description="the exact version (no ranges): what actually ran")
    run_by: _Text | None = Field(default=None, description="the person or pipeline that ran it")
    started_at: AwareDatetime | None = None
    ended_at: AwareDatetime | None = None
    output_root_digest: str | None = Field(default=None, pattern=_SHA256,
                                           description="root digest of this step's output, when recorded")
    description: _LongText | None = None


class FineTuneStep(_Step):
    kind: Literal["fine-tune"] = "fine-tune"
    dataset: _Text = Field(description="dataset identifier, e.g. a hub id or an internal URI")
    dataset_revision: _Text | None = None
    hyperparameters: dict[_ParamKey, BoundedScalar] = Field(max_length=MAX_DERIVATION_PARAMETERS)
    run_by: _Text
    duration_s: float | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _has_duration(self) -> FineTuneStep:
        if self.duration_s is None and (self.started_at is None or self.ended_at is None):
            raise ValueError("a fine-tuning run records duration_s or both started_at and ended_at")
        return self

    @property
    def duration(self) -> float:
        if self.duration_s is not None:
            return self.duration_s
        assert self.started_at and self.ended_at
        return (self.ended_at - self.started_at).total_seconds()


class ConversionStep(_Step):
    kind: Literal["quantization", "conversion"]
    method: _Text = Field(description="GPTQ, AWQ, GGUF, bitsandbytes, dtype-cast, onnx-export, ...")
    parameters: dict[_ParamKey, BoundedScalar] = Field(default_factory=dict, max_length=MAX_DERIVATION_PARAMETERS)


DerivationStep = Annotated[FineTuneStep | ConversionStep, Field(discriminator="kind")]


class DerivationRecord(_Frozen):
    """How a model was made from a registry model: ``{schema, parent, steps}``; steps in the order they ran."""

    schema_: Literal["airlock.derivation/v1"] = Field(default=DERIVATION_SCHEMA, alias="schema")
    parent: ParentRef
    steps: tuple[DerivationStep, ...] = Field(min_length=1, max_length=MAX_DERIVATION_STEPS)

    @classmethod
    def load(cls, source: Path | Mapping[str, Any]) -> DerivationRecord:
        """From a JSON file or a dict (DAG params); errors name the file and field."""
        where = str(source) if isinstance(source, Path) else "derivation record"
        if isinstance(source, Path):
            try:
                source = json.loads(source.read_bytes())
            except (OSError, ValueError) as exc:
                raise AibomError(f"{where}: not readable JSON ({exc})") from None
        try:
            size = len(json.dumps(source, allow_nan=False))
        except (TypeError, ValueError) as exc:
            raise AibomError(f"{where}: not plain JSON ({exc})") from None
        if size > MAX_DERIVATION_BYTES:
            raise AibomError(f"{where}: {size} bytes of JSON, more than the {MAX_DERIVATION_BYTES} a record may have")
        try:
            return cls.model_validate(source)
        except ValidationError as exc:
            raise AibomError(f"{where}: {first_validation_problem(exc)}") from None

    def to_json_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


# --------------------------------------------------------------------------- pipeline stages (input contract)

StageName = Literal["download", "verify", "hash", "scan", "evaluate", "review", "sign", "aibom", "promote"]
_TASK_TYPES: dict[str, str] = {
    "download": "clone", "verify": "test", "hash": "other", "scan": "scan", "evaluate": "test",
    "review": "other", "sign": "other", "aibom": "other", "promote": "deliver",
}


class StageRecord(_Frozen):
    """One pipeline stage of this ingestion, as the task that ran it recorded it."""

    stage: StageName
    tool: str = Field(min_length=1)
    tool_version: str = Field(min_length=1)
    parameters: dict[str, Scalar] = Field(default_factory=dict)
    started_at: AwareDatetime
    ended_at: AwareDatetime | None = None  # None for promote: the BOM is built before it finishes
    run_id: str | None = None


ArtifactKind = Literal["signature", "scan-report", "eval-report", "fingerprint", "report"]


@dataclass(frozen=True)
class ArtifactRef:
    """A file stored beside the model in its registry version (signature, reports), by key and digest."""

    kind: ArtifactKind
    key: str  # key inside the registry version: model.sig, reports/scan.json (the registry's layout)
    sha256: str

    @classmethod
    def from_file(cls, kind: ArtifactKind, path: Path, key: str | None = None) -> ArtifactRef:
        default = "model.sig" if kind == "signature" else f"reports/{Path(path).name}"
        return cls(kind, key or default, hashlib.sha256(Path(path).read_bytes()).hexdigest())


class Considerations(_Frozen):
    users: tuple[str, ...] = ()
    use_cases: tuple[str, ...] = ()
    technical_limitations: tuple[str, ...] = ()
    ethical_considerations: tuple[tuple[str, str], ...] = ()  # (risk, mitigation)


@dataclass(frozen=True)
class ResolvedParent:
    """The parent as the registry knows it (or as recorded, for a parent outside the registry)."""

    model: str
    root_digest: str
    purl: str
    version: str | None = None  # registry version; None when the parent is not in our registry
    bom_url: str | None = None
    bom_sha256: str | None = None
    registry_url: str | None = None


@dataclass(frozen=True)
class AibomInputs:
    """Everything the AI-BOM says. ``files``/``root_digest`` are the manifest's; ``model_dir`` has the card."""

    model: str  # ORG/NAME in the registry
    version: str  # registry version
    source: str  # hf://org/name, s3://bucket/prefix, file:///path
    revision: str | None
    files: Sequence[FileEntry]
    root_digest: str
    timestamp: datetime
    model_dir: Path | None = None
    supplier: str | None = None  # default: the source's org
    version_url: str | None = None  # registry URL of the version (artifact references are under it)
    artifacts: Sequence[ArtifactRef] = ()
    stages: Sequence[StageRecord] = ()
    run_id: str | None = None
    dag_id: str = "model_ingest"
    eval_results: Mapping[str, Any] | None = None  # lm-eval output (or an EvalReport holding its "results")
    considerations: Considerations | None = None
    derivation: DerivationRecord | None = None
    parent: ResolvedParent | None = None
    extra_datasets: Sequence[str] = field(default=())

    @classmethod
    def from_manifest(cls, manifest: Any, **kwargs: Any) -> AibomInputs:  # manifest: airlock.manifest.Manifest
        kwargs.setdefault("source", manifest.model.source)
        kwargs.setdefault("revision", manifest.model.revision)
        return cls(files=tuple(manifest.files), root_digest=manifest.root_digest, **kwargs)


# --------------------------------------------------------------------------- CycloneDX pieces the library lacks


class _Cdx(BaseModel):
    """CycloneDX JSON objects: camelCase aliases, ``None`` omitted, unknown fields refused."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class CdxProperty(_Cdx):
    name: str
    value: str


class IoFormat(_Cdx):
    format: str


class DatasetRef(_Cdx):
    ref: str


class ModelParameters(_Cdx):
    task: str | None = None
    architecture_family: str | None = Field(default=None, alias="architectureFamily")
    model_architecture: str | None = Field(default=None, alias="modelArchitecture")
    datasets: list[DatasetRef] | None = None
    inputs: list[IoFormat] | None = None
    outputs: list[IoFormat] | None = None


class ConfidenceInterval(_Cdx):
    lower_bound: str = Field(alias="lowerBound")
    upper_bound: str = Field(alias="upperBound")


class PerformanceMetric(_Cdx):
    type: str
    value: str
    slice: str | None = None
    confidence_interval: ConfidenceInterval | None = Field(default=None, alias="confidenceInterval")


class QuantitativeAnalysis(_Cdx):
    performance_metrics: list[PerformanceMetric] = Field(alias="performanceMetrics")


class Risk(_Cdx):
    name: str
    mitigation_strategy: str | None = Field(default=None, alias="mitigationStrategy")


class CdxConsiderations(_Cdx):
    users: list[str] | None = None
    use_cases: list[str] | None = Field(default=None, alias="useCases")
    technical_limitations: list[str] | None = Field(default=None, alias="technicalLimitations")
    ethical_considerations: list[Risk] | None = Field(default=None, alias="ethicalConsiderations")


class ModelCard(_Cdx):
    bom_ref: str = Field(alias="bom-ref")
    model_parameters: ModelParameters = Field(alias="modelParameters")
    quantitative_analysis: QuantitativeAnalysis | None = Field(default=None, alias="quantitativeAnalysis")
    considerations: CdxConsiderations | None = None
    properties: list[CdxProperty] | None = None


class ResourceRef(_Cdx):
    ref: str


class Parameter(_Cdx):
    name: str
    value: str
    data_type: str = Field(alias="dataType")


class TaskInput(_Cdx):
    resource: ResourceRef | None = None
    parameters: list[Parameter] | None = None


class TaskOutput(_Cdx):
    type: Literal["artifact", "attestation", "log", "evidence", "metrics", "other"]
    resource: ResourceRef | None = None


class Task(_Cdx):
    bom_ref: str = Field(alias="bom-ref")
    uid: str
    name: str
    description: str | None = None
    task_types: list[str] = Field(alias="taskTypes")
    resource_references: list[ResourceRef] | None = Field(default=None, alias="resourceReferences")
    inputs: list[TaskInput] | None = None
    outputs: list[TaskOutput] | None = None
    time_start: str | None = Field(default=None, alias="timeStart")
    time_end: str | None = Field(default=None, alias="timeEnd")
    properties: list[CdxProperty] | None = None


class Workflow(_Cdx):
    bom_ref: str = Field(alias="bom-ref")
    uid: str
    name: str
    description: str | None = None
    task_types: list[str] = Field(alias="taskTypes")
    tasks: list[Task]
    time_start: str | None = Field(default=None, alias="timeStart")
    time_end: str | None = Field(default=None, alias="timeEnd")
    properties: list[CdxProperty] | None = None


class ToolComponent(_Cdx):
    type: Literal["application"] = "application"
    bom_ref: str = Field(alias="bom-ref")
    name: str
    version: str


class Formula(_Cdx):
    bom_ref: str = Field(alias="bom-ref")
    components: list[ToolComponent] | None = None
    workflows: list[Workflow]
    properties: list[CdxProperty] | None = None


# --------------------------------------------------------------------------- model card (README, config.json)


class CardMetadata(BaseModel):
    """The Hugging Face model-card front matter fields the BOM uses (others are ignored)."""

    model_config = ConfigDict(extra="ignore")

    license: str | list[str] | None = None
    license_name: str | None = None
    license_link: str | None = None
    datasets: list[str] = Field(default_factory=list)
    pipeline_tag: str | None = None
    base_model: str | list[str] | None = None

    @model_validator(mode="before")
    @classmethod
    def _lists(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("datasets"), str):
            data = {**data, "datasets": [data["datasets"]]}
        return data


def read_card(model_dir: Path | None) -> CardMetadata:
    """The README.md front matter (``---`` YAML block) of ``model_dir``; none -> empty metadata."""
    if model_dir is None or not (Path(model_dir) / "README.md").is_file():
        return CardMetadata()
    path = Path(model_dir) / "README.md"
    text = _read_text(path)
    if not text.startswith("---"):
        return CardMetadata()
    match = re.match(r"^---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(\r?\n|$)", text, re.DOTALL)
    if match is None:
        raise AibomError(f"{path}: front matter starts with '---' but has no closing '---' line")
    import yaml

    try:
        raw = yaml.safe_load(match.group(1)) or {}
    except yaml.YAMLError as exc:
        raise AibomError(f"{path}: front matter is not valid YAML ({exc})") from None
    if not isinstance(raw, dict):
        raise AibomError(f"{path}: front matter is not a mapping")
    try:
        return CardMetadata.model_validate(raw)
    except ValidationError as exc:
        raise AibomError(f"{path}: front matter {first_validation_problem(exc)}") from None


def read_architecture(model_dir: Path | None) -> tuple[str | None, str | None]:
    """(architectureFamily, modelArchitecture) from config.json: ``model_type`` and ``architectures[0]``."""
    if model_dir is None or not (Path(model_dir) / "config.json").is_file():
        return None, None
    path = Path(model_dir) / "config.json"
    try:
        config = json.loads(_read_text(path))
    except ValueError as exc:
        raise AibomError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(config, dict):
        raise AibomError(f"{path}: not a JSON object")
    family = config.get("model_type")
    architectures = config.get("architectures") or []
    architecture = architectures[0] if isinstance(architectures, list) and architectures else None
    return (str(family) if family else None), (str(architecture) if architecture else None)


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    if len(data) > _MAX_CARD_BYTES:
        raise AibomError(f"{path}: larger than {_MAX_CARD_BYTES} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise AibomError(f"{path}: not UTF-8 ({exc})") from None


# What a pipeline task takes and gives, for modelParameters.inputs/outputs (Hugging Face pipeline tags).
_TASK_IO: dict[str, tuple[str, str]] = {
    "text-generation": ("text", "text"),
    "text2text-generation": ("text", "text"),
    "summarization": ("text", "text"),
    "translation": ("text", "text"),
    "fill-mask": ("text", "text"),
    "question-answering": ("text", "text"),
    "text-classification": ("text", "label"),
    "token-classification": ("text", "labels per token"),
    "zero-shot-classification": ("text", "label"),
    "feature-extraction": ("text", "embedding"),
    "sentence-similarity": ("text", "similarity score"),
    "image-classification": ("image", "label"),
    "object-detection": ("image", "bounding boxes"),
    "image-to-text": ("image", "text"),
    "text-to-image": ("text", "image"),
    "automatic-speech-recognition": ("audio", "text"),
    "text-to-speech": ("text", "audio"),
}


# --------------------------------------------------------------------------- evaluation results


def performance_metrics(eval_results: Mapping[str, Any] | None) -> list[PerformanceMetric]:
    """lm-eval ``results`` as performance metrics: value as a string, the task (and filter) as the slice,
    and a 95% confidence interval from the metric's ``<name>_stderr,<filter>`` when lm-eval reports one."""
    if not eval_results:
        return []
    results = eval_results.get("results", eval_results)
    if not isinstance(results, Mapping):
        raise AibomError("evaluation results: 'results' is not a mapping of task -> metrics")
    metrics: list[PerformanceMetric] = []
    for task in sorted(results):
        values = results[task]
        if not isinstance(values, Mapping):
            raise AibomError(f"evaluation results: task {task!r} is not a mapping of metric -> value")
        for key in sorted(values):
            name, _, filter_name = key.partition(",")
            value = values[key]
            if name == "alias" or name.endswith("_stderr") or not _is_number(value):
                continue
            stderr = values.get(f"{name}_stderr,{filter_name}" if filter_name else f"{name}_stderr")
            metrics.append(PerformanceMetric(
                type=name,
                value=_number(value),
                slice=task if filter_name in ("", "none") else f"{task} (filter {filter_name})",
                confidence_interval=_interval(value, stderr),
            ))
    return metrics


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _number(value: float) -> str:
    return repr(float(value)) if isinstance(value, float) else str(value)


def _interval(value: float, stderr: Any) -> ConfidenceInterval | None:
    if not _is_number(stderr):  # lm-eval writes "N/A" when it cannot bootstrap one
        return None
    half = _Z95 * float(stderr)
    return ConfidenceInterval(lower_bound=f"{value - half:.6g}", upper_bound=f"{value + half:.6g}")


# --------------------------------------------------------------------------- identifiers


def model_purl(source: str, model: str, version: str, revision: str | None, root_digest: str) -> str:
    """``pkg:huggingface/org/name@<commit>`` for hub models; else ``pkg:generic/org/name@<version>`` pinned by
    ``checksum=sha256:<root digest>`` (vendor drops and internal models have no purl type of their own)."""
    from packageurl import PackageURL

    org, name = model.split("/", 1)
    if source.startswith("hf://") and revision:
        repo = source[len("hf://"):].partition("@")[0]
        hub_org, _, hub_name = repo.partition("/")
        # The purl spec lower-cases the commit for the huggingface type.
        return PackageURL(type="huggingface", namespace=hub_org, name=hub_name, version=revision.lower()).to_string()
    return PackageURL(type="generic", namespace=org, name=name, version=version,
                      qualifiers={"checksum": f"sha256:{root_digest}"}).to_string()


def _ref(*parts: str) -> str:
    return ":".join(parts)


def _when(value: datetime | None) -> str | None:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if value is not None else None


def _data_type(value: Scalar) -> str:
    return {bool: "boolean", int: "integer", float: "number"}.get(type(value), "string")


def _parameters(values: Mapping[str, Scalar]) -> list[Parameter]:
    return [Parameter(name=k, value=str(v).lower() if isinstance(v, bool) else str(v), data_type=_data_type(v))
            for k, v in sorted(values.items())]


# --------------------------------------------------------------------------- building


def build_aibom(inputs: AibomInputs) -> dict[str, Any]:
    """The AI-BOM for ``inputs`` as a JSON dict, validated strictly against CycloneDX 1.6 (or :class:`AibomError`)."""
    card = read_card(inputs.model_dir)
    datasets = _dataset_ids(inputs, card)
    document = json.loads(_library_bom(inputs, card, datasets))
    model_ref = document["metadata"]["component"]["bom-ref"]
    document["metadata"]["component"]["modelCard"] = _model_card(inputs, card, datasets, model_ref).dump()
    formula = _formulation(inputs, datasets)
    if formula is not None:
        document["formulation"] = [formula.dump()]
    validate_aibom(document)
    return document


def serialize_aibom(document: Mapping[str, Any]) -> bytes:
    """The bytes stored as ``aibom.cdx.json`` (stable: the digest of the same BOM never changes)."""
    return (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def validate_aibom(document: Mapping[str, Any] | str | bytes) -> None:
    """Strict CycloneDX 1.6 JSON-schema validation; the first error, with its JSON path, is raised."""
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    text = document if isinstance(document, str) else (
        document.decode("utf-8") if isinstance(document, bytes) else json.dumps(document))
    error = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text)
    if error is not None:
        detail = getattr(error, "data", None)
        where = getattr(detail, "json_path", "$")
        message = getattr(detail, "message", str(error))
        raise AibomError(f"AI-BOM is not valid CycloneDX 1.6 (strict) at {where}: {message}")


@dataclass(frozen=True)
class WrittenAibom:
    path: Path
    sha256: str
    document: dict[str, Any]


def write_aibom(inputs: AibomInputs, path: Path) -> WrittenAibom:
    """Build, validate and write the AI-BOM atomically; returns its path and sha256."""
    document = build_aibom(inputs)
    data = serialize_aibom(document)
    path = Path(path)
    atomic_write(path, data)
    return WrittenAibom(path, hashlib.sha256(data).hexdigest(), document)


def _dataset_ids(inputs: AibomInputs, card: CardMetadata) -> list[str]:
    ids = list(card.datasets) + list(inputs.extra_datasets)
    if inputs.derivation is not None:
        ids += [s.dataset for s in inputs.derivation.steps if isinstance(s, FineTuneStep)]
    return sorted(set(ids))


def _library_bom(inputs: AibomInputs, card: CardMetadata, datasets: list[str]) -> str:
    """Everything cyclonedx-python-lib models, serialized by it."""
    from cyclonedx.model import Property
    from cyclonedx.model.bom import Bom
    from cyclonedx.model.component import Component, ComponentType
    from cyclonedx.output.json import JsonV1Dot6

    if not re.match(_SHA256, inputs.root_digest):
        raise AibomError(f"root_digest {inputs.root_digest!r} is not a sha256")
    model = _model_component(inputs, card)
    serial = uuid.uuid5(_SERIAL_NAMESPACE, f"{inputs.model}@{inputs.version}:{inputs.root_digest}:"
                                           f"{_when(inputs.timestamp)}")
    dataset_components = [_dataset_component(d) for d in datasets]
    bom = Bom(serial_number=serial, components=dataset_components)
    bom.metadata.component = model
    if dataset_components:  # the model was made from its datasets: the dependency graph says so
        bom.register_dependency(model, dataset_components)
    bom.metadata.timestamp = inputs.timestamp.astimezone(UTC).replace(microsecond=0)
    bom.metadata.tools.components.add(Component(
        type=ComponentType.APPLICATION, name="airlock", version=__version__, bom_ref=_ref("tool", "airlock"),
    ))
    if inputs.run_id:
        bom.metadata.properties.add(Property(name="airlock:airflow:run-id", value=inputs.run_id))
        bom.metadata.properties.add(Property(name="airlock:airflow:dag-id", value=inputs.dag_id))
    return JsonV1Dot6(bom).output_as_string()


def _sha256_hash(value: str):  # -> cyclonedx HashType
    from cyclonedx.model import HashAlgorithm, HashType

    return HashType(alg=HashAlgorithm.SHA_256, content=value)


def _model_component(inputs: AibomInputs, card: CardMetadata) -> Component:
    from cyclonedx.model import Property
    from cyclonedx.model.component import Component, ComponentType
    from cyclonedx.model.contact import OrganizationalEntity
    from packageurl import PackageURL

    org, name = inputs.model.split("/", 1)
    purl = model_purl(inputs.source, inputs.model, inputs.version, inputs.revision, inputs.root_digest)
    files = [
        Component(type=ComponentType.FILE, name=f.path, bom_ref=_ref("file", inputs.model, f.path),
                  hashes=[_sha256_hash(f.sha256)], properties=[Property(name="airlock:size", value=str(f.size))])
        for f in inputs.files
    ]
    properties = [
        Property(name="airlock:registry:model", value=inputs.model),
        Property(name="airlock:registry:version", value=inputs.version),
        Property(name="airlock:source", value=inputs.source),
        # The component hash is model_signing's root digest, not the hash of one file: say so.
        Property(name="airlock:root-digest",
                 value=f"sha256:{inputs.root_digest} (model_signing files serialization: sha256 over the "
                       f"per-file sha256 digests in path order)"),
    ]
    if inputs.revision:
        properties.append(Property(name="airlock:source:revision", value=inputs.revision))
    for base in [card.base_model] if isinstance(card.base_model, str) else list(card.base_model or []):
        # What the card claims, unverified; the verified chain is pedigree (from a derivation record).
        properties.append(Property(name="airlock:card:base-model", value=base))
    return Component(
        type=ComponentType.MACHINE_LEARNING_MODEL,
        bom_ref=_ref("model", f"{inputs.model}@{inputs.version}"),
        group=org,
        name=name,
        version=PackageURL.from_string(purl).version,
        purl=PackageURL.from_string(purl),
        supplier=OrganizationalEntity(name=inputs.supplier or _source_org(inputs.source) or org),
        hashes=[_sha256_hash(inputs.root_digest)],
        licenses=_licenses(card),
        external_references=_external_references(inputs),
        properties=properties,
        components=files,
        pedigree=_pedigree(inputs),
    )


def _source_org(source: str) -> str | None:
    if source.startswith("hf://"):
        return source[len("hf://"):].split("/", 1)[0]
    return None


def _licenses(card: CardMetadata) -> list[Any]:
    from cyclonedx.contrib.license.factories import LicenseFactory
    from cyclonedx.model import XsUri
    from cyclonedx.model.license import DisjunctiveLicense

    values = [card.license] if isinstance(card.license, str) else list(card.license or [])
    licenses: list[Any] = []
    for value in values:
        if value == "other" and card.license_name:  # the hub's convention for a custom license
            url = XsUri(card.license_link) if card.license_link and "://" in card.license_link else None
            licenses.append(DisjunctiveLicense(name=card.license_name, url=url))
        else:
            licenses.append(LicenseFactory().make_from_string(value))
    return licenses


def _external_references(inputs: AibomInputs) -> list[Any]:
    from cyclonedx.model import ExternalReference, ExternalReferenceType, XsUri

    kinds = {
        "signature": ExternalReferenceType.ATTESTATION,
        "scan-report": ExternalReferenceType.STATIC_ANALYSIS_REPORT,
        "eval-report": ExternalReferenceType.QUALITY_METRICS,
        "fingerprint": ExternalReferenceType.DYNAMIC_ANALYSIS_REPORT,
        "report": ExternalReferenceType.OTHER,
    }
    source = inputs.source
    if source.startswith("hf://") and inputs.revision and "@" not in source:
        source = f"{source}@{inputs.revision}"  # the reference names the exact commit ingested
    references = [ExternalReference(type=ExternalReferenceType.DISTRIBUTION, url=XsUri(source),
                                    comment="where Airlock took the model from")]
    if inputs.artifacts and not inputs.version_url:
        raise AibomError("artifacts are referenced by registry URL: version_url is required")
    for artifact in inputs.artifacts:
        references.append(ExternalReference(
            type=kinds[artifact.kind], url=XsUri(f"{inputs.version_url}/{artifact.key}"),
            hashes=[_sha256_hash(artifact.sha256)], comment=artifact.kind,
        ))
    return references


def _dataset_component(dataset: str) -> Component:
    from cyclonedx.model import ExternalReference, ExternalReferenceType, XsUri
    from cyclonedx.model.component import Component, ComponentType

    references = []
    if re.match(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$", dataset) and "://" not in dataset:
        references.append(ExternalReference(type=ExternalReferenceType.DISTRIBUTION,
                                            url=XsUri(f"https://huggingface.co/datasets/{dataset}")))
    return Component(type=ComponentType.DATA, name=dataset, bom_ref=_ref("dataset", dataset),
                     external_references=references)


def _pedigree(inputs: AibomInputs):  # -> cyclonedx Pedigree | None
    from cyclonedx.model import ExternalReference, ExternalReferenceType, Property, XsUri
    from cyclonedx.model.component import Component, ComponentType, Pedigree
    from packageurl import PackageURL

    if inputs.derivation is None:
        return None
    parent = inputs.parent
    if parent is None:
        raise AibomError("a derived model's BOM needs the resolved parent (airlock.aibom.resolve_parent)")
    org, name = parent.model.split("/", 1)
    properties = [Property(name="airlock:registry:model", value=parent.model)]
    if parent.version:
        properties.append(Property(name="airlock:registry:version", value=parent.version))
    if parent.registry_url:
        properties.append(Property(name="airlock:registry", value=parent.registry_url))
    references = []
    if parent.bom_url and parent.bom_sha256:
        # Hash-pinned: following the chain to the parent's BOM cannot silently land on a different document.
        references.append(ExternalReference(type=ExternalReferenceType.BOM, url=XsUri(parent.bom_url),
                                            hashes=[_sha256_hash(parent.bom_sha256)], comment="parent AI-BOM"))
    purl = PackageURL.from_string(parent.purl)
    ancestors = [Component(
        type=ComponentType.MACHINE_LEARNING_MODEL, bom_ref=_ref("ancestor", f"{parent.model}@{parent.version}"),
        group=org, name=name, version=purl.version, purl=purl, hashes=[_sha256_hash(parent.root_digest)],
        properties=properties, external_references=references,
    )]
    steps = inputs.derivation.steps
    for number, step in enumerate(steps[:-1], start=1):  # the last step's output is this model
        ancestors.append(Component(
            type=ComponentType.MACHINE_LEARNING_MODEL,
            bom_ref=_ref("ancestor", inputs.model, f"step-{number}"),
            name=f"{inputs.model} after step {number} ({step.kind})",
            hashes=[_sha256_hash(step.output_root_digest)] if step.output_root_digest else [],
            properties=[Property(name="airlock:derivation:step", value=str(number))],
        ))
    notes = "; ".join(f"step {n}: {_step_summary(s)}" for n, s in enumerate(steps, start=1))
    return Pedigree(ancestors=ancestors, notes=f"derived from {parent.model}@{parent.version or '?'}: {notes}")


def _step_summary(step: FineTuneStep | ConversionStep) -> str:
    if isinstance(step, FineTuneStep):
        return f"fine-tune on {step.dataset} with {step.tool} {step.tool_version}"
    return f"{step.kind} ({step.method}) with {step.tool} {step.tool_version}"


def _model_card(inputs: AibomInputs, card: CardMetadata, datasets: list[str], model_ref: str) -> ModelCard:
    family, architecture = read_architecture(inputs.model_dir)
    task = card.pipeline_tag
    io = _TASK_IO.get(task or "")
    metrics = performance_metrics(inputs.eval_results)
    considerations = None
    if inputs.considerations is not None:
        c = inputs.considerations
        considerations = CdxConsiderations(
            users=list(c.users) or None,
            use_cases=list(c.use_cases) or None,
            technical_limitations=list(c.technical_limitations) or None,
            ethical_considerations=[Risk(name=r, mitigation_strategy=m or None)
                                    for r, m in c.ethical_considerations] or None,
        )
    return ModelCard(
        bom_ref=f"{model_ref}:model-card",
        model_parameters=ModelParameters(
            task=task, architecture_family=family, model_architecture=architecture,
            datasets=[DatasetRef(ref=_ref("dataset", d)) for d in datasets] or None,
            inputs=[IoFormat(format=io[0])] if io else None,
            outputs=[IoFormat(format=io[1])] if io else None,
        ),
        quantitative_analysis=QuantitativeAnalysis(performance_metrics=metrics) if metrics else None,
        considerations=considerations,
    )


def _formulation(inputs: AibomInputs, datasets: list[str]) -> Formula | None:
    tools: dict[str, ToolComponent] = {}

    def tool_ref(name: str, version: str) -> ResourceRef:
        ref = _ref("tool", f"{name}@{version}")
        tools.setdefault(ref, ToolComponent(bom_ref=ref, name=name, version=version))
        return ResourceRef(ref=ref)

    workflows = []
    if inputs.stages:
        workflows.append(_ingest_workflow(inputs, tool_ref))
    if inputs.derivation is not None:
        workflows.append(_derivation_workflow(inputs, inputs.derivation, tool_ref))
    if not workflows:
        return None
    return Formula(bom_ref=_ref("formula", f"{inputs.model}@{inputs.version}"),
                   components=sorted(tools.values(), key=lambda t: t.bom_ref), workflows=workflows)


ToolRef = Callable[[str, str], "ResourceRef"]


def _ingest_workflow(inputs: AibomInputs, tool_ref: ToolRef) -> Workflow:
    run = inputs.run_id or "local"
    tasks = []
    for stage in inputs.stages:
        properties = [CdxProperty(name="airlock:tool", value=f"{stage.tool} {stage.tool_version}")]
        if stage.run_id or inputs.run_id:
            properties.append(CdxProperty(name="airlock:airflow:run-id", value=stage.run_id or run))
        tasks.append(Task(
            bom_ref=_ref("task", run, stage.stage), uid=f"{inputs.dag_id}/{stage.run_id or run}/{stage.stage}",
            name=stage.stage, task_types=[_TASK_TYPES[stage.stage]],
            resource_references=[tool_ref(stage.tool, stage.tool_version)],
            inputs=[TaskInput(parameters=_parameters(stage.parameters))] if stage.parameters else None,
            time_start=_when(stage.started_at), time_end=_when(stage.ended_at), properties=properties,
        ))
    starts = [s.started_at for s in inputs.stages]
    ends = [s.ended_at for s in inputs.stages if s.ended_at is not None]
    return Workflow(
        bom_ref=_ref("workflow", run, "ingest"), uid=f"{inputs.dag_id}/{run}", name=f"{inputs.dag_id} ingestion",
        description=f"Airlock ingestion of {inputs.model}@{inputs.version} from {inputs.source}",
        task_types=sorted({t.task_types[0] for t in tasks}), tasks=tasks,
        time_start=_when(min(starts)), time_end=_when(max(ends)) if len(ends) == len(starts) else None,
        properties=[CdxProperty(name="airlock:airflow:dag-id", value=inputs.dag_id),
                    CdxProperty(name="airlock:airflow:run-id", value=run)],
    )


def _derivation_workflow(inputs: AibomInputs, record: DerivationRecord, tool_ref: ToolRef) -> Workflow:
    parent = inputs.parent
    assert parent is not None
    tasks = []
    # Each step reads the previous step's output (the parent first) and writes the next ancestor (this model last);
    # the refs are the bom-refs of pedigree.ancestors and of the model component.
    produced = [_ref("ancestor", f"{parent.model}@{parent.version}")]
    produced += [_ref("ancestor", inputs.model, f"step-{n}") for n in range(1, len(record.steps))]
    produced.append(_ref("model", f"{inputs.model}@{inputs.version}"))
    for number, step in enumerate(record.steps, start=1):
        properties = [CdxProperty(name="airlock:tool", value=f"{step.tool} {step.tool_version}")]
        if step.run_by:
            properties.append(CdxProperty(name="airlock:run-by", value=step.run_by))
        task_inputs = [TaskInput(resource=ResourceRef(ref=produced[number - 1]))]
        if isinstance(step, FineTuneStep):
            task_inputs.append(TaskInput(resource=ResourceRef(ref=_ref("dataset", step.dataset))))
            task_inputs.append(TaskInput(parameters=_parameters(step.hyperparameters)))
            properties.append(CdxProperty(name="airlock:duration-s", value=f"{step.duration:g}"))
            if step.dataset_revision:
                properties.append(CdxProperty(name="airlock:dataset-revision", value=step.dataset_revision))
        else:
            properties.append(CdxProperty(name="airlock:method", value=step.method))
            if step.parameters:
                task_inputs.append(TaskInput(parameters=_parameters(step.parameters)))
        if step.output_root_digest:
            properties.append(CdxProperty(name="airlock:output-root-digest", value=f"sha256:{step.output_root_digest}"))
        tasks.append(Task(
            bom_ref=_ref("task", inputs.model, f"derivation-{number}"),
            uid=f"{inputs.model}@{inputs.version}/derivation/{number}",
            name=f"{step.kind}: {step.method}" if isinstance(step, ConversionStep) else f"fine-tune on {step.dataset}",
            description=step.description, task_types=["build"],
            resource_references=[tool_ref(step.tool, step.tool_version)],
            inputs=task_inputs, outputs=[TaskOutput(type="artifact", resource=ResourceRef(ref=produced[number]))],
            time_start=_when(step.started_at), time_end=_when(step.ended_at), properties=properties,
        ))
    return Workflow(
        bom_ref=_ref("workflow", inputs.model, "derivation"), uid=f"{inputs.model}@{inputs.version}/derivation",
        name=f"derivation from {parent.model}@{parent.version or '?'}", task_types=["build"], tasks=tasks,
        properties=[CdxProperty(name="airlock:parent", value=f"{parent.model}@{parent.version or '?'}"),
                    CdxProperty(name="airlock:parent:root-digest", value=f"sha256:{parent.root_digest}")],
    )


# --------------------------------------------------------------------------- the parent, from the registry


def resolve_parent(record: DerivationRecord, registry: Registry | None, *,
                   allow_external: bool = False) -> ResolvedParent:
    """The record's parent as our registry has it: released, not revoked, and with the recorded digest.

    Fails closed: an unknown, unreleased or revoked parent, or a digest that
    differs from the registry's, raises :class:`AibomError`. ``allow_external``
    accepts a parent outside the registry, identified by its recorded root
    digest only (no registry version in the pedigree then).
    """
    from airlock.registry import Layout, ModelName, RegistryError, VersionNotFoundError

    wanted = record.parent
    if registry is None:
        return _external_parent(wanted, allow_external, "no registry given")
    try:
        if wanted.version is not None:
            released = registry.released(wanted.model, wanted.version)
        else:
            found = registry.find_by_digest(wanted.model, wanted.root_digest or "")
            if not found:
                return _external_parent(wanted, allow_external, f"no released version has sha256:{wanted.root_digest}")
            released = found[0]
    except VersionNotFoundError as exc:
        return _external_parent(wanted, allow_external, str(exc))
    except RegistryError as exc:
        raise AibomError(f"derivation record parent {wanted.model}: {exc}") from None
    if wanted.root_digest is not None and wanted.root_digest != released.root_digest:
        raise AibomError(
            f"derivation record parent {wanted.model}@{released.version}: recorded root_digest "
            f"sha256:{wanted.root_digest}, the registry holds sha256:{released.root_digest}"
        )
    if released.status == "revoked":
        reason = released.state.reason if released.state else ""
        raise AibomError(f"derivation record parent {wanted.model}@{released.version} is revoked ({reason}); "
                         f"a model derived from it is not ingested")
    bom_key = Layout.key(ModelName.parse(wanted.model), released.version, AIBOM_FILE)
    bom_sha256 = released.object_sha256(AIBOM_FILE)
    return ResolvedParent(
        model=wanted.model, version=released.version, root_digest=released.root_digest,
        purl=_parent_purl(registry, bom_key, bom_sha256) or model_purl(
            "", wanted.model, released.version, None, released.root_digest),
        bom_url=registry.store.object_url(bom_key), bom_sha256=bom_sha256, registry_url=registry.url,
    )


def _external_parent(wanted: ParentRef, allow: bool, why: str) -> ResolvedParent:
    if not allow or wanted.root_digest is None:
        raise AibomError(f"derivation record parent {wanted.model}@{wanted.version or '?'} is not in the "
                         f"registry ({why})")
    return ResolvedParent(model=wanted.model, root_digest=wanted.root_digest,
                          purl=model_purl("", wanted.model, wanted.version or "unknown", None, wanted.root_digest))


def _parent_purl(registry: Registry, bom_key: str, bom_sha256: str | None) -> str | None:
    """The parent's purl from its own stored AI-BOM (checked against the released digest before use)."""
    data = registry.store.read(bom_key)
    if data is None or bom_sha256 is None or hashlib.sha256(data).hexdigest() != bom_sha256:
        return None
    try:
        return json.loads(data)["metadata"]["component"].get("purl")
    except (ValueError, KeyError, TypeError):
        return None


# --------------------------------------------------------------------------- signing the BOM


def aibom_statement(bom_bytes: bytes, name: str = AIBOM_FILE) -> bytes:
    """The in-toto Statement v1 over the BOM: subject = the BOM's sha256, predicate = the BOM itself."""
    document = json.loads(bom_bytes)
    statement = {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": name, "digest": {"sha256": hashlib.sha256(bom_bytes).hexdigest()}}],
        "predicateType": BOM_PREDICATE_TYPE,
        "predicate": document,
    }
    return json.dumps(statement, indent=2).encode("utf-8")


def sign_aibom(bom_bytes: bytes, signer: Signer) -> bytes:
    """A Sigstore v0.3 bundle (DSSE over :func:`aibom_statement`) signed by ``signer`` — ``aibom.sig``.

    Same envelope and key handling as ``model.sig`` (:mod:`airlock.signing`), so
    the Vault Transit signer and the trust store serve both.
    """
    from airlock.bundle import IN_TOTO_PAYLOAD_TYPE, assemble_bundle, dump_bundle, pae, public_key_fingerprint

    payload = aibom_statement(bom_bytes)
    raw = signer.sign(pae(IN_TOTO_PAYLOAD_TYPE, payload))
    bundle = assemble_bundle(payload, raw.der, hint=public_key_fingerprint(raw.public_key_pem.encode()),
                             keyid=raw.key_id)
    return dump_bundle(bundle)


def verify_aibom_signature(bom_bytes: bytes, bundle_bytes: bytes, public_key_pem: bytes) -> None:
    """Check ``aibom.sig`` against the BOM and a public key; any problem raises :class:`AibomError`."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from airlock.bundle import IN_TOTO_PAYLOAD_TYPE, BundleFormatError, ecdsa_hash_for, load_bundle, pae

    try:
        bundle = load_bundle(bundle_bytes, AIBOM_SIGNATURE_FILE)
        payload, signature = bundle.payload_bytes, bundle.signature_bytes
    except BundleFormatError as exc:
        raise AibomError(f"{AIBOM_SIGNATURE_FILE}: {exc}") from None
    if bundle.dsseEnvelope.payloadType != IN_TOTO_PAYLOAD_TYPE:
        raise AibomError(f"{AIBOM_SIGNATURE_FILE}: dsseEnvelope.payloadType is {bundle.dsseEnvelope.payloadType!r}")
    key = serialization.load_pem_public_key(public_key_pem)
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise AibomError("the public key is not an EC key")
    try:
        key.verify(signature, pae(IN_TOTO_PAYLOAD_TYPE, payload), ec.ECDSA(ecdsa_hash_for(key.curve)))
    except InvalidSignature:
        raise AibomError(f"{AIBOM_SIGNATURE_FILE}: dsseEnvelope.signatures[0] does not verify with the key") from None
    try:
        statement = json.loads(payload)
        predicate_type = statement.get("predicateType")
        subjects = statement.get("subject") or []
        subject_digests = [subject.get("digest", {}).get("sha256") for subject in subjects]
    except (ValueError, AttributeError):
        # Signed, yet not an in-toto statement: still refused, with a reason rather than a traceback.
        raise AibomError(f"{AIBOM_SIGNATURE_FILE}: the signed payload is not an in-toto statement") from None
    if predicate_type != BOM_PREDICATE_TYPE:
        raise AibomError(f"{AIBOM_SIGNATURE_FILE}: predicateType is {predicate_type!r}")
    digest = hashlib.sha256(bom_bytes).hexdigest()
    if subject_digests != [digest]:
        raise AibomError(f"{AIBOM_SIGNATURE_FILE}: subject digest is not the BOM's sha256:{digest}")


def verify_aibom_with_trust_store(bom_bytes: bytes, bundle_bytes: bytes, trust: TrustStore) -> str:
    """Check ``aibom.sig`` with the key it names in ``trust`` (unknown or revoked keys refused); returns its key id.

    The same key resolution as ``model.sig`` (:meth:`TrustStore.resolve`), so a
    revoked key version stops vouching for BOMs exactly where it stops vouching
    for models. Any problem raises :class:`AibomError`.
    """
    from airlock.bundle import BundleFormatError, load_bundle
    from airlock.trust import RevokedKeyError, UnknownKeyError

    try:
        bundle = load_bundle(bundle_bytes, AIBOM_SIGNATURE_FILE)
        keyid = bundle.signature.keyid
    except BundleFormatError as exc:
        raise AibomError(f"{AIBOM_SIGNATURE_FILE}: {exc}") from None
    try:
        key = trust.resolve(hint=bundle.hint, keyid=keyid)
    except (UnknownKeyError, RevokedKeyError) as exc:
        raise AibomError(f"{AIBOM_SIGNATURE_FILE}: {exc}") from None
    verify_aibom_signature(bom_bytes, bundle_bytes, key.public_key_pem.encode())
    return key.key_id



def verify_aibom_binding(bom_bytes: bytes, *, model: str, version: str, root_digest: str, version_path: str,
                         bound: Mapping[str, str]) -> None:
    """Check that a (signature-verified) AI-BOM is the BOM of ``model@version`` and pins every object in ``bound``.

    The subject is ``metadata.component``: a ``machine-learning-model`` named
    ``group/name`` = ``model``, with ``airlock:registry:model`` = ``model``,
    ``airlock:registry:version`` = ``version`` (each exactly once) and SHA-256
    hashes equal to ``root_digest`` only. ``bound`` maps keys inside the version
    (``model.sig``, ``reports/scan.json``) to their sha256: each must be an
    external reference of the component whose URL ends with
    ``/<version_path>/<key>`` and whose SHA-256 is that digest, with no other
    reference to the same key. The BOM is parsed with duplicate JSON keys refused,
    so no other reader can see another subject in the same signed bytes.
    Any problem raises :class:`AibomError` naming the field.
    """

    try:
        document = strictjson.loads(bom_bytes)
        component = document["metadata"]["component"]
        properties = component.get("properties") or []
        hashes = component.get("hashes") or []
        references = component.get("externalReferences") or []
        if not (isinstance(properties, list) and isinstance(hashes, list) and isinstance(references, list)):
            raise TypeError("properties, hashes and externalReferences must be lists")
    except (ValueError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise AibomError(f"{AIBOM_FILE}: metadata.component cannot be read ({exc})") from None

    def prop(name: str) -> str:
        values = [p.get("value") for p in properties if isinstance(p, dict) and p.get("name") == name]
        if len(values) != 1 or not isinstance(values[0], str):
            raise AibomError(f"{AIBOM_FILE}: metadata.component has {len(values)} {name!r} properties, expected 1")
        return values[0]

    org, _, name = model.partition("/")
    subject = (component.get("type"), component.get("group"), component.get("name"),
               prop("airlock:registry:model"), prop("airlock:registry:version"))
    if subject != ("machine-learning-model", org, name, model, version):
        raise AibomError(f"{AIBOM_FILE}: describes {subject[3]}@{subject[4]} (component {subject[1]}/{subject[2]}, "
                         f"type {subject[0]}), not {model}@{version}: another version's BOM is not delivered")
    roots = {h.get("content") for h in hashes if isinstance(h, dict) and h.get("alg") == "SHA-256"}
    if roots != {root_digest}:
        raise AibomError(f"{AIBOM_FILE}: metadata.component hashes {sorted(map(str, roots))} are not the root "
                         f"sha256:{root_digest} of {model}@{version}")
    for key, sha256 in sorted(bound.items()):
        suffix = f"/{version_path.strip('/')}/{key}"
        matching = [r for r in references if isinstance(r, dict) and isinstance(r.get("url"), str)
                    and r["url"].endswith(suffix)]
        digests = {h.get("content") for r in matching for h in (r.get("hashes") or [])
                   if isinstance(h, dict) and h.get("alg") == "SHA-256"}
        if not matching:
            raise AibomError(f"{key}: not referenced by the signed AI-BOM; an object the BOM does not pin is not "
                             f"delivered")
        if digests != {sha256}:
            raise AibomError(f"{key}: sha256:{sha256}, but the signed AI-BOM pins "
                             f"{', '.join('sha256:' + str(d) for d in sorted(map(str, digests))) or 'no sha256'}")
